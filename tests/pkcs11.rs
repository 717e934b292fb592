//! The PKCS#11 signer against a real SoftHSM2 token: keys generated inside the token as
//! sensitive and non-extractable sign ES256, RS256, PS256 and EdDSA that an independent
//! verifier (OpenSSL) accepts, keys and tokens are found by label, id or slot, and every
//! misconfiguration is a clear error, not a panic.
//!
//! Needs the `hsm-e2e` feature, Debian's `softhsm2` and `SOFTHSM2_CONF` pointing at a
//! configuration whose token directory the test may write (`scripts/test` installs SoftHSM and
//! creates both in `target/softhsm/`). Without them this test fails: it never skips.

mod common;

use std::path::PathBuf;
use std::process::Command;

use base64::Engine as _;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::Attribute;
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use fedauthz::response::mint::pkcs11::{Pkcs11Key, Pkcs11Signer, TokenSelector, module};
use fedauthz::response::mint::{Signer as _, SigningAlgorithm};
use serde_json::{Map, Value};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "5678";
/// The DER of the P-256 OID.
const P256: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// The DER of the Ed25519 OID (1.3.101.112).
const ED25519: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];

fn softhsm() -> PathBuf {
    let conf = std::env::var_os("SOFTHSM2_CONF").map(PathBuf::from);
    assert!(
        conf.as_ref().is_some_and(|c| c.is_file()) && std::path::Path::new(MODULE).is_file(),
        "SoftHSM2 is not set up (module {MODULE}, SOFTHSM2_CONF {conf:?}): run scripts/test, which installs softhsm2 and writes target/softhsm/softhsm2.conf"
    );
    PathBuf::from(MODULE)
}

/// Initializes a fresh token labelled `label` (SO PIN 1234, user PIN 5678).
fn init_token(label: &str) {
    let output = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            label,
            "--so-pin",
            "1234",
            "--pin",
            PIN,
        ])
        .output()
        .expect("run softhsm2-util");
    assert!(
        output.status.success(),
        "softhsm2-util --init-token: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The tokens the tests use, one per test so that logins and keys do not interfere.
const TOKENS: [&str; 8] = [
    "es256",
    "rsa",
    "ed25519",
    "slot",
    "type",
    "pin",
    "server",
    "server-pin",
];

/// The label of this run's token `name`, a fresh token with SO PIN 1234 and user PIN 5678.
/// Every token is initialized once, one after the other, before the module is loaded in this
/// process: SoftHSM reads its token directory when initialized, and concurrent
/// `softhsm2-util --init-token --free` runs race for the same free slot.
fn token(name: &str) -> String {
    static INITIALIZED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    let label = |name: &str| format!("fedauthz-{name}-{}", std::process::id());
    INITIALIZED.get_or_init(|| {
        for name in TOKENS {
            init_token(&label(name));
        }
    });
    assert!(TOKENS.contains(&name), "token {name} is not in TOKENS");
    label(name)
}

/// The slot of the token labelled `token`.
fn slot_of(token: &str) -> Slot {
    let context = module(&softhsm()).expect("module");
    context
        .get_slots_with_token()
        .expect("slots")
        .into_iter()
        .find(|slot| {
            context
                .get_token_info(*slot)
                .is_ok_and(|info| info.label().trim_end() == token)
        })
        .expect("the token")
}

/// A read-write session on `token`, logged in.
fn rw_session(token: &str) -> Session {
    let context = module(&softhsm()).expect("module");
    let session = context.open_rw_session(slot_of(token)).expect("rw session");
    match session.login(UserType::User, Some(&AuthPin::from(PIN.to_owned()))) {
        Ok(())
        | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {
        }
        Err(err) => panic!("login: {err}"),
    }
    session
}

/// The kinds of key pair the tests generate in the token.
#[derive(Clone, Copy)]
enum Kind {
    P256,
    Ed25519,
    Rsa(u64),
}

/// Generates a key pair of `kind` labelled `label` with `CKA_ID` `id` inside token `token`;
/// the private key is sensitive and non-extractable unless `extractable`.
fn generate(token: &str, kind: Kind, label: &str, id: &[u8], extractable: bool) {
    let session = rw_session(token);
    let (mechanism, mut public) = match kind {
        Kind::P256 => (
            Mechanism::EccKeyPairGen,
            vec![Attribute::EcParams(P256.to_vec())],
        ),
        Kind::Ed25519 => (
            Mechanism::EccEdwardsKeyPairGen,
            vec![Attribute::EcParams(ED25519.to_vec())],
        ),
        Kind::Rsa(bits) => (
            Mechanism::RsaPkcsKeyPairGen,
            vec![
                Attribute::ModulusBits(bits.into()),
                Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
            ],
        ),
    };
    public.extend([
        Attribute::Token(true),
        Attribute::Verify(true),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
    ]);
    session
        .generate_key_pair(
            &mechanism,
            &public,
            &[
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(!extractable),
                Attribute::Extractable(extractable),
                Attribute::Sign(true),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Id(id.to_vec()),
            ],
        )
        .expect("generate a key pair in the token");
}

/// The key labelled `label` on the token labelled `token`.
fn key(token: &str, label: &str, pin: &str) -> Pkcs11Key {
    Pkcs11Key {
        module: softhsm(),
        token: TokenSelector::Label(token.into()),
        key_label: Some(label.into()),
        key_id: None,
        pin: pin.into(),
        sessions: 2,
    }
}

fn member(jwk: &Map<String, Value>, name: &str) -> Vec<u8> {
    let text = jwk.get(name).and_then(|v| v.as_str()).expect("JWK member");
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .expect("base64url")
}

/// Verifies a JWS signature of `algorithm` with OpenSSL from the published JWK alone.
fn openssl_verifies(
    algorithm: SigningAlgorithm,
    jwk: &Map<String, Value>,
    input: &[u8],
    signature: &[u8],
) -> bool {
    use openssl::bn::BigNum;
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::sign::{RsaPssSaltlen, Verifier};
    match algorithm {
        SigningAlgorithm::Es256 => {
            let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)
                .expect("P-256");
            let x = BigNum::from_slice(&member(jwk, "x")).expect("x");
            let y = BigNum::from_slice(&member(jwk, "y")).expect("y");
            let public = openssl::ec::EcKey::from_public_key_affine_coordinates(&group, &x, &y)
                .expect("point");
            assert_eq!(signature.len(), 64);
            let (r, s) = signature.split_at(32);
            let signature = openssl::ecdsa::EcdsaSig::from_private_components(
                BigNum::from_slice(r).expect("r"),
                BigNum::from_slice(s).expect("s"),
            )
            .expect("signature");
            signature
                .verify(&openssl::sha::sha256(input), &public)
                .expect("verify")
        }
        SigningAlgorithm::EdDsa => {
            let public =
                PKey::public_key_from_raw_bytes(&member(jwk, "x"), openssl::pkey::Id::ED25519)
                    .expect("Ed25519 key");
            Verifier::new_without_digest(&public)
                .expect("verifier")
                .verify_oneshot(signature, input)
                .expect("verify")
        }
        SigningAlgorithm::Rs256 | SigningAlgorithm::Ps256 => {
            let n = member(jwk, "n");
            assert_ne!(n.first(), Some(&0), "n has no leading zero byte");
            let rsa = openssl::rsa::Rsa::from_public_components(
                BigNum::from_slice(&n).expect("n"),
                BigNum::from_slice(&member(jwk, "e")).expect("e"),
            )
            .expect("RSA key");
            let public = PKey::from_rsa(rsa).expect("key");
            let mut verifier = Verifier::new(MessageDigest::sha256(), &public).expect("verifier");
            if algorithm == SigningAlgorithm::Ps256 {
                verifier
                    .set_rsa_padding(openssl::rsa::Padding::PKCS1_PSS)
                    .expect("PSS");
                verifier
                    .set_rsa_pss_saltlen(RsaPssSaltlen::custom(32))
                    .expect("salt length");
                verifier
                    .set_rsa_mgf1_md(MessageDigest::sha256())
                    .expect("MGF1");
            }
            verifier.verify_oneshot(signature, input).expect("verify")
        }
    }
}

/// Opens `config` for `algorithm` and checks its published JWK and a few signatures.
fn signs_what_openssl_verifies(config: &Pkcs11Key, algorithm: SigningAlgorithm, kty: &str) {
    let signer = Pkcs11Signer::open(config, algorithm).expect("the signer opens");
    assert_eq!(signer.backend(), "pkcs11");
    assert_eq!(signer.algorithm(), algorithm);
    let jwk = signer.public_jwk();
    assert_eq!(jwk.get("kty").and_then(|v| v.as_str()), Some(kty));
    assert_eq!(
        jwk.get("alg").and_then(|v| v.as_str()),
        Some(algorithm.name())
    );
    assert_eq!(jwk.get("use").and_then(|v| v.as_str()), Some("sig"));
    assert_eq!(
        fedauthz::response::mint::thumbprint(jwk).as_deref(),
        Some(signer.kid())
    );
    for i in 0..3 {
        let input = format!("header.payload-{i}");
        let signature = signer.sign(input.as_bytes()).expect("sign");
        assert!(
            openssl_verifies(algorithm, jwk, input.as_bytes(), &signature),
            "{}: OpenSSL rejects the signature",
            algorithm.name()
        );
    }
}

#[test]
fn a_key_that_never_leaves_the_token_signs_es256_and_every_misconfiguration_is_clear() {
    let token = token("es256");
    generate(&token, Kind::P256, "sig-1", b"\x01", false);

    let signer = Pkcs11Signer::open(&key(&token, "sig-1", PIN), SigningAlgorithm::Es256)
        .expect("the signer opens");
    assert_eq!(signer.backend(), "pkcs11");
    assert_eq!(signer.algorithm(), SigningAlgorithm::Es256);
    let jwk = signer.public_jwk();
    assert_eq!(jwk.get("kty").and_then(|v| v.as_str()), Some("EC"));
    assert_eq!(jwk.get("alg").and_then(|v| v.as_str()), Some("ES256"));
    assert_eq!(
        fedauthz::response::mint::thumbprint(jwk).as_deref(),
        Some(signer.kid())
    );
    // Concurrent signing through the session pool; OpenSSL and josekit both accept each one.
    let verifier = josekit::jws::ES256
        .verifier_from_jwk(&josekit::jwk::Jwk::from_map(jwk.clone()).expect("JWK"))
        .expect("verifier");
    std::thread::scope(|scope| {
        for n in 0..4 {
            let (signer, verifier) = (&signer, &verifier);
            scope.spawn(move || {
                for i in 0..10 {
                    let input = format!("header.payload-{n}-{i}");
                    let signature = signer.sign(input.as_bytes()).expect("sign");
                    assert_eq!(signature.len(), 64);
                    assert!(openssl_verifies(
                        SigningAlgorithm::Es256,
                        signer.public_jwk(),
                        input.as_bytes(),
                        &signature
                    ));
                    josekit::jws::JwsVerifier::verify(verifier, input.as_bytes(), &signature)
                        .expect("josekit verifies");
                }
            });
        }
    });

    // Misconfigurations: each a clear error naming the step.
    let error = |config: Pkcs11Key| {
        Pkcs11Signer::open(&config, SigningAlgorithm::Es256)
            .expect_err("refused")
            .to_string()
    };
    let missing = error(key(&token, "no-such-key", PIN));
    assert!(
        missing.starts_with("PKCS#11 find key: no private key with label \"no-such-key\""),
        "{missing}"
    );
    let no_token = error(key("no-such-token", "sig-1", PIN));
    assert!(
        no_token.starts_with("PKCS#11 find token: no token labelled \"no-such-token\""),
        "{no_token}"
    );
    let mut no_module = key(&token, "sig-1", PIN);
    no_module.module = "/nonexistent/libpkcs11.so".into();
    assert!(error(no_module).starts_with("PKCS#11 load module: /nonexistent/libpkcs11.so"));
    let mut unnamed = key(&token, "sig-1", PIN);
    unnamed.key_label = None;
    let unnamed = error(unnamed);
    assert!(
        unnamed.contains("set the key's label, its id or both"),
        "{unnamed}"
    );
    generate(&token, Kind::P256, "exportable", b"\x02", true);
    let extractable = error(key(&token, "exportable", PIN));
    assert!(extractable.contains("is extractable"), "{extractable}");
}

#[test]
fn rsa_2048_keys_in_the_token_sign_rs256_and_ps256_that_openssl_verifies() {
    let token = token("rsa");
    generate(&token, Kind::Rsa(2048), "rsa-1", b"\x10", false);
    for algorithm in [SigningAlgorithm::Rs256, SigningAlgorithm::Ps256] {
        signs_what_openssl_verifies(&key(&token, "rsa-1", PIN), algorithm, "RSA");
    }
    // The published modulus is the 2048-bit key, the exponent 65537 ("AQAB").
    let signer = Pkcs11Signer::open(&key(&token, "rsa-1", PIN), SigningAlgorithm::Ps256)
        .expect("the signer opens");
    assert_eq!(member(signer.public_jwk(), "n").len(), 256);
    assert_eq!(
        signer.public_jwk().get("e").and_then(|v| v.as_str()),
        Some("AQAB")
    );
    // PSS is randomized: two signatures of one input differ, both verify.
    let (one, two) = (
        signer.sign(b"same").expect("sign"),
        signer.sign(b"same").expect("sign"),
    );
    assert_ne!(one, two);
}

#[test]
fn an_ed25519_key_in_the_token_signs_eddsa_that_openssl_verifies() {
    let token = token("ed25519");
    generate(&token, Kind::Ed25519, "ed-1", b"\x20", false);
    signs_what_openssl_verifies(&key(&token, "ed-1", PIN), SigningAlgorithm::EdDsa, "OKP");
    let signer = Pkcs11Signer::open(&key(&token, "ed-1", PIN), SigningAlgorithm::EdDsa)
        .expect("the signer opens");
    assert_eq!(
        signer.public_jwk().get("crv").and_then(|v| v.as_str()),
        Some("Ed25519")
    );
    assert_eq!(member(signer.public_jwk(), "x").len(), 32);
}

#[test]
fn a_key_is_found_by_its_id_and_the_token_by_its_slot() {
    let token = token("slot");
    // Two keys share a label; their ids tell them apart.
    generate(&token, Kind::P256, "shared", b"\xa1\x01", false);
    generate(&token, Kind::Rsa(2048), "shared", b"\xa1\x02", false);
    let slot = slot_of(&token).id();
    let by_id = |id: &[u8], label: Option<&str>| Pkcs11Key {
        module: softhsm(),
        token: TokenSelector::Slot(slot),
        key_label: label.map(str::to_owned),
        key_id: Some(id.to_vec()),
        pin: PIN.into(),
        sessions: 1,
    };
    signs_what_openssl_verifies(&by_id(b"\xa1\x01", None), SigningAlgorithm::Es256, "EC");
    signs_what_openssl_verifies(
        &by_id(b"\xa1\x02", Some("shared")),
        SigningAlgorithm::Rs256,
        "RSA",
    );
    // The label alone is ambiguous here: refused, not a guess.
    let ambiguous = Pkcs11Signer::open(&key(&token, "shared", PIN), SigningAlgorithm::Es256)
        .expect_err("two keys share the label")
        .to_string();
    assert!(
        ambiguous.starts_with("PKCS#11 find key: 2 private keys with label \"shared\""),
        "{ambiguous}"
    );
    // With both set, both must match.
    let mismatch = Pkcs11Signer::open(&by_id(b"\xa1\x01", Some("other")), SigningAlgorithm::Es256)
        .expect_err("label and id must both match")
        .to_string();
    assert_eq!(
        mismatch,
        format!(
            "PKCS#11 find key: no private key with label \"other\" and id a101 on the token in slot {slot}"
        )
    );
    let no_id = Pkcs11Signer::open(&by_id(b"\xff", None), SigningAlgorithm::Es256)
        .expect_err("no such id")
        .to_string();
    assert!(
        no_id.starts_with("PKCS#11 find key: no private key with id ff"),
        "{no_id}"
    );
    // A slot without a token (or no such slot at all) is a clear error.
    let mut no_slot = by_id(b"\xa1\x01", None);
    no_slot.token = TokenSelector::Slot(u64::from(u32::MAX) - 7);
    let no_slot = Pkcs11Signer::open(&no_slot, SigningAlgorithm::Es256)
        .expect_err("no such slot")
        .to_string();
    assert_eq!(
        no_slot,
        format!(
            "PKCS#11 find token: no slot {} with a token",
            u64::from(u32::MAX) - 7
        )
    );
}

#[test]
fn a_key_of_the_wrong_type_or_an_rsa_key_under_2048_bits_is_refused_by_name() {
    let token = token("type");
    generate(&token, Kind::P256, "ec", b"\x30", false);
    generate(&token, Kind::Rsa(2048), "rsa", b"\x31", false);
    generate(&token, Kind::Rsa(1024), "rsa-1024", b"\x32", false);
    let error = |label: &str, algorithm: SigningAlgorithm| {
        Pkcs11Signer::open(&key(&token, label, PIN), algorithm)
            .expect_err("refused")
            .to_string()
    };
    let ec_as_rsa = error("ec", SigningAlgorithm::Rs256);
    assert_eq!(
        ec_as_rsa,
        format!(
            "PKCS#11 key label \"ec\" on token {token:?}: the private key is a CKK_EC key; RS256 needs an RSA key (CKK_RSA) of at least 2048 bits"
        )
    );
    let rsa_as_ec = error("rsa", SigningAlgorithm::Es256);
    assert!(
        rsa_as_ec.contains("label \"rsa\"")
            && rsa_as_ec.contains("is a CKK_RSA key; ES256 needs a P-256 EC key"),
        "{rsa_as_ec}"
    );
    let ec_as_ed = error("ec", SigningAlgorithm::EdDsa);
    assert!(
        ec_as_ed.contains("EdDSA needs an Ed25519 key (CKK_EC_EDWARDS)"),
        "{ec_as_ed}"
    );
    let small = error("rsa-1024", SigningAlgorithm::Ps256);
    assert_eq!(
        small,
        format!(
            "PKCS#11 key label \"rsa-1024\" on token {token:?}: the RSA key has 1024 bits; PS256 needs at least 2048"
        )
    );
}

#[test]
fn a_wrong_pin_is_a_clear_start_up_error() {
    let token = token("pin");
    // This token is never logged in by another test: the PIN is checked here.
    let err = Pkcs11Signer::open(&key(&token, "sig-1", "0000"), SigningAlgorithm::Es256)
        .expect_err("a wrong PIN is refused")
        .to_string();
    assert!(err.starts_with("PKCS#11 login:"), "{err}");
    assert!(err.contains("PinIncorrect") || err.contains("PIN"), "{err}");
}

/// The configuration of a server minting with key `label` of `token`, its PIN read as `pin`.
fn minting_config(issuer: &common::TestIssuer, token: &str, label: &str, pin: &str) -> String {
    format!(
        "issuers:\n  - {{id: corp, issuer: '{}', audiences: [api], keys: {{jwks: {}}}}}\nmint:\n  issuer: http://fedauthz.internal\n  audience: orders\n  keys:\n    - state: current\n      initial: true\n      pkcs11: {{module: {MODULE}, token_label: {token}, key_label: {label}, pin: {pin}, sessions: 2}}\n",
        issuer.iss,
        issuer.jwks()
    )
}

#[tokio::test]
async fn the_server_mints_with_a_token_key_and_its_pin_from_a_file() {
    let token = token("server");
    generate(&token, Kind::P256, "mint-1", &[7], false);
    let dir = tempfile::tempdir().expect("tempdir");
    let pin_file = dir.path().join("pin");
    std::fs::write(&pin_file, format!("{PIN}\n")).expect("write pin");
    let issuer = common::TestIssuer::es256("https://corp.example.com/", "c1");
    let yaml = minting_config(
        &issuer,
        &token,
        "mint-1",
        &format!("{{file: '{}'}}", pin_file.display()),
    );
    let server = common::RunningServer::start(&yaml).await;
    let mut client = server.client().await;
    let response = client
        .check(common::bearer(&issuer.token("alice", "api")))
        .await
        .expect("check")
        .into_inner();
    let Some(fedauthz::proto::auth::check_response::HttpResponse::OkResponse(ok)) =
        &response.http_response
    else {
        panic!("not allowed: {response:?}")
    };
    let minted = ok
        .headers
        .iter()
        .filter_map(|h| h.header.as_ref())
        .find(|h| h.key == "authorization")
        .and_then(|h| h.value.strip_prefix("Bearer "))
        .expect("a minted token")
        .to_owned();
    let (status, body) = server.admin_get("/.well-known/jwks.json").await;
    assert_eq!(status, 200);
    let jwks: Value = serde_json::from_str(&body).expect("jwks");
    let jwk = jwks["keys"][0].as_object().expect("one key");
    let (input, signature) = minted.rsplit_once('.').expect("compact JWS");
    assert!(
        openssl_verifies(
            SigningAlgorithm::Es256,
            jwk,
            input.as_bytes(),
            &member(
                &Map::from_iter([("s".to_owned(), Value::from(signature))]),
                "s"
            ),
        ),
        "the HSM-signed minted token verifies against the published key"
    );
    let (_, metrics) = server.admin_get("/metrics").await;
    assert!(
        metrics.contains("fedauthz_mint_tokens_total{backend=\"pkcs11\",algorithm=\"ES256\"} 1\n"),
        "{metrics}"
    );
}

#[test]
fn a_wrong_pin_or_a_missing_key_in_the_configuration_is_refused_at_its_field() {
    let token = token("server-pin");
    generate(&token, Kind::P256, "mint-1", &[8], false);
    let build = |yaml: &str| {
        let config = fedauthz::config::parse_yaml(yaml, "t.yaml").expect("parses");
        fedauthz::pipeline::Generation::build(
            config,
            None,
            &std::sync::Arc::new(tokio::sync::Notify::new()),
        )
        .map(|_| ())
        .expect_err("refused")
        .into_iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
    };
    let issuer = common::TestIssuer::es256("https://corp.example.com/", "c1");
    let errors = build(&minting_config(
        &issuer,
        &token,
        "mint-1",
        "{env: FEDAUTHZ_TEST_PIN_UNSET_7f3a}",
    ));
    assert!(
        errors.iter().any(|e| e
            == "mint.keys[0].pkcs11.pin: environment variable FEDAUTHZ_TEST_PIN_UNSET_7f3a is not set (or not UTF-8)"),
        "{errors:?}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "0000").expect("write");
    let errors = build(&minting_config(
        &issuer,
        &token,
        "mint-1",
        &format!("{{file: '{}'}}", wrong.display()),
    ));
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("mint.keys[0].pkcs11: PKCS#11 login:")),
        "{errors:?}"
    );
    let right = dir.path().join("right");
    std::fs::write(&right, PIN).expect("write");
    let errors = build(&minting_config(
        &issuer,
        &token,
        "no-such-key",
        &format!("{{file: '{}'}}", right.display()),
    ));
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("mint.keys[0].pkcs11: PKCS#11 find key:")
                && e.contains("no-such-key")),
        "{errors:?}"
    );
}
