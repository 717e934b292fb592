//! The PKCS#11 signer against a real SoftHSM2 token: keys generated inside the token as
//! sensitive and non-extractable sign ES256 that an independent verifier (OpenSSL) accepts,
//! and every misconfiguration is a clear error, not a panic.
//!
//! Needs the `hsm-e2e` feature, Debian's `softhsm2` and `SOFTHSM2_CONF` pointing at a
//! configuration whose token directory the test may write (`scripts/test` installs SoftHSM and
//! creates both in `target/softhsm/`). Without them this test fails: it never skips.

use std::path::PathBuf;
use std::process::Command;

use cryptoki::mechanism::Mechanism;
use cryptoki::object::Attribute;
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use fedauthz::response::mint::Signer as _;
use fedauthz::response::mint::pkcs11::{Pkcs11Key, Pkcs11Signer, module};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "5678";
/// The DER of the P-256 OID.
const P256: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

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

/// Generates a P-256 key pair labelled `key` inside token `token`.
fn generate(token: &str, key: &str, extractable: bool) {
    let context = module(&softhsm()).expect("module");
    let slot = context
        .get_slots_with_token()
        .expect("slots")
        .into_iter()
        .find(|slot| {
            context
                .get_token_info(*slot)
                .is_ok_and(|info| info.label().trim_end() == token)
        })
        .expect("the token");
    let session = context.open_rw_session(slot).expect("rw session");
    match session.login(UserType::User, Some(&AuthPin::from(PIN.to_owned()))) {
        Ok(())
        | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {
        }
        Err(err) => panic!("login: {err}"),
    }
    let label = key.as_bytes().to_vec();
    session
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::EcParams(P256.to_vec()),
                Attribute::Verify(true),
                Attribute::Label(label.clone()),
            ],
            &[
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(!extractable),
                Attribute::Extractable(extractable),
                Attribute::Sign(true),
                Attribute::Label(label),
            ],
        )
        .expect("generate a key pair in the token");
}

fn key(token: &str, label: &str, pin: &str) -> Pkcs11Key {
    Pkcs11Key {
        module: softhsm(),
        token_label: token.into(),
        key_label: label.into(),
        pin: pin.into(),
        sessions: 2,
    }
}

/// Verifies an ES256 JWS signature (r ‖ s) with OpenSSL from the published JWK alone.
fn openssl_verifies(
    jwk: &serde_json::Map<String, serde_json::Value>,
    input: &[u8],
    signature: &[u8],
) -> bool {
    use base64::Engine as _;
    let coordinate = |name: &str| {
        let text = jwk.get(name).and_then(|v| v.as_str()).expect("coordinate");
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .expect("base64url")
    };
    let group =
        openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).expect("P-256");
    let x = openssl::bn::BigNum::from_slice(&coordinate("x")).expect("x");
    let y = openssl::bn::BigNum::from_slice(&coordinate("y")).expect("y");
    let public =
        openssl::ec::EcKey::from_public_key_affine_coordinates(&group, &x, &y).expect("point");
    let (r, s) = signature.split_at(32);
    let signature = openssl::ecdsa::EcdsaSig::from_private_components(
        openssl::bn::BigNum::from_slice(r).expect("r"),
        openssl::bn::BigNum::from_slice(s).expect("s"),
    )
    .expect("signature");
    signature
        .verify(&openssl::sha::sha256(input), &public)
        .expect("verify")
}

#[test]
fn a_key_that_never_leaves_the_token_signs_es256_and_every_misconfiguration_is_clear() {
    let token = format!("fedauthz-{}", std::process::id());
    init_token(&token);
    generate(&token, "sig-1", false);

    let signer = Pkcs11Signer::open(&key(&token, "sig-1", PIN)).expect("the signer opens");
    assert_eq!(signer.backend(), "pkcs11");
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
        Pkcs11Signer::open(&config)
            .expect_err("refused")
            .to_string()
    };
    let missing = error(key(&token, "no-such-key", PIN));
    assert!(
        missing.starts_with("PKCS#11 find key: no private key labelled \"no-such-key\""),
        "{missing}"
    );
    let no_token = error(key("no-such-token", "sig-1", PIN));
    assert!(no_token.starts_with("PKCS#11 find token:"), "{no_token}");
    let mut no_module = key(&token, "sig-1", PIN);
    no_module.module = "/nonexistent/libpkcs11.so".into();
    assert!(error(no_module).starts_with("PKCS#11 load module: /nonexistent/libpkcs11.so"));
    generate(&token, "exportable", true);
    let extractable = error(key(&token, "exportable", PIN));
    assert!(extractable.contains("is extractable"), "{extractable}");
}

#[test]
fn a_wrong_pin_is_a_clear_start_up_error() {
    let token = format!("fedauthz-pin-{}", std::process::id());
    init_token(&token);
    // This token is never logged in by another test: the PIN is checked here.
    let err = Pkcs11Signer::open(&key(&token, "sig-1", "0000"))
        .expect_err("a wrong PIN is refused")
        .to_string();
    assert!(err.starts_with("PKCS#11 login:"), "{err}");
    assert!(err.contains("PinIncorrect") || err.contains("PIN"), "{err}");
}
