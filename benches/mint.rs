//! In-process benchmarks of minting (issue 16): one mint through `Minter::mint` (claims, JWS
//! signing on the blocking pool) per algorithm with PEM file keys, with the minted-token cache
//! off (every call signs) and on (a hit), and the same through the PKCS#11 backend on SoftHSM2
//! for ES256 and RS256.
//!
//! Run: `cargo bench --bench mint`. The PKCS#11 group needs SoftHSM2 (Debian `softhsm2`) and
//! `SOFTHSM2_CONF` naming a configuration whose token directory is writable, as `scripts/test`
//! makes one:
//!
//! ```sh
//! mkdir -p target/softhsm/tokens
//! printf 'directories.tokendir = %s/target/softhsm/tokens\nobjectstore.backend = file\n' "$PWD" \
//!   > target/softhsm/softhsm2.conf
//! SOFTHSM2_CONF=$PWD/target/softhsm/softhsm2.conf cargo bench --bench mint
//! ```
//!
//! Without it the group says so and is left out (BENCHMARKS.md has the numbers).

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::Criterion;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::Attribute;
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use fedauthz::authz::Decision;
use fedauthz::pipeline::Generation;
use fedauthz::proto::auth::attribute_context::{HttpRequest, Request as AttrRequest};
use fedauthz::proto::auth::{AttributeContext, CheckRequest};
use fedauthz::response::mint::{MintStats, Minter};
use fedauthz::service::{RequestHeaders, request_facts, unix_now};
use fedauthz::verify::VerifiedToken;
use josekit::jwk::KeyPair as _;
use serde_json::{Value, json};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "5678";
const P256: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// The issuer section and a verified token of it (through the real pipeline).
struct Incoming {
    issuers: String,
    token: Arc<VerifiedToken>,
}

fn incoming() -> Incoming {
    let pair = josekit::jws::ES256.generate_key_pair().expect("key");
    let signer = josekit::jws::ES256
        .signer_from_jwk(&pair.to_jwk_private_key())
        .expect("signer");
    let mut jwk = pair.to_jwk_public_key();
    jwk.set_key_id("k1");
    let issuers = format!(
        "issuers:\n  - {{id: corp, issuer: 'https://corp.example.com/', audiences: [api], keys: {{jwks: {{keys: [{}]}}}}}}\n",
        Value::Object(jwk.as_ref().clone())
    );
    let now = unix_now();
    let claims = json!({"iss": "https://corp.example.com/", "sub": "alice", "aud": "api",
        "iat": now, "exp": now + 3600, "scope": "orders:read orders:write", "email": "alice@corp.example.com"});
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","kid":"k1","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = josekit::jws::JwsSigner::sign(&signer, input.as_bytes()).expect("sign");
    let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature));
    let config = fedauthz::config::parse_yaml(&issuers, "bench.yaml").expect("config");
    let generation =
        Generation::build(config, None, &Arc::new(tokio::sync::Notify::new())).expect("build");
    let mut headers = std::collections::HashMap::new();
    headers.insert("authorization".to_owned(), format!("Bearer {token}"));
    let request = CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(AttrRequest {
                time: None,
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: "/orders".into(),
                    headers,
                    ..HttpRequest::default()
                }),
            }),
            ..AttributeContext::default()
        }),
    };
    let checked =
        generation
            .pipeline
            .check(&RequestHeaders::of(&request), &request_facts(&request), now);
    match checked.decision {
        Decision::Allow(Some(token)) => Incoming { issuers, token },
        other => panic!("the bench token is not allowed: {other:?}"),
    }
}

/// A minter for `key` (a `mint.keys` entry), its cache holding `entries`.
fn minter(incoming: &Incoming, key: &str, entries: u64) -> Minter {
    let yaml = format!(
        "{}mint:\n  issuer: http://fedauthz.bench\n  audience: orders-api\n  cache: {{max_entries: {entries}}}\n  keys:\n    - {key}\n",
        incoming.issuers
    );
    let config = fedauthz::config::parse_yaml(&yaml, "bench.yaml").expect("mint config");
    Minter::build(&config, None, MintStats::default(), unix_now())
        .expect("minter")
        .expect("mint configured")
        .minter
}

fn file_key(dir: &Path, algorithm: &str) -> String {
    use openssl::pkey::PKey;
    let key = match algorithm {
        "ES256" => {
            let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)
                .expect("P-256");
            PKey::from_ec_key(openssl::ec::EcKey::generate(&group).expect("key")).expect("pkey")
        }
        "EdDSA" => PKey::generate_ed25519().expect("Ed25519"),
        _ => PKey::from_rsa(openssl::rsa::Rsa::generate(2048).expect("RSA")).expect("pkey"),
    };
    let path = dir.join(format!("{algorithm}.pem"));
    std::fs::write(&path, key.private_key_to_pem_pkcs8().expect("pem")).expect("write");
    format!(
        "{{file: '{}', algorithm: {algorithm}, state: current, initial: true}}",
        path.display()
    )
}

fn bench_pair(
    c: &mut Criterion,
    runtime: &tokio::runtime::Runtime,
    incoming: &Incoming,
    name: &str,
    key: &str,
) {
    let signing = minter(incoming, key, 0);
    c.bench_function(&format!("mint/{name}/sign"), |b| {
        b.iter(|| {
            runtime
                .block_on(signing.mint(&incoming.token, None, unix_now()))
                .expect("mint")
        });
    });
    let cached = minter(incoming, key, 10_000);
    runtime
        .block_on(cached.mint(&incoming.token, None, unix_now()))
        .expect("warm the cache");
    c.bench_function(&format!("mint/{name}/cache-hit"), |b| {
        b.iter(|| {
            black_box(
                runtime
                    .block_on(cached.mint(&incoming.token, None, unix_now()))
                    .expect("mint"),
            )
        });
    });
}

/// A fresh SoftHSM token with a P-256 and an RSA-2048 key generated inside it (sensitive, not
/// extractable); `None` when SoftHSM is not set up.
fn softhsm_token() -> Option<String> {
    let conf = std::env::var_os("SOFTHSM2_CONF")?;
    if !Path::new(&conf).is_file() || !Path::new(MODULE).is_file() {
        return None;
    }
    let label = format!("bench-{}", std::process::id());
    let status = std::process::Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", &label])
        .args(["--so-pin", "1234", "--pin", PIN])
        .stdout(std::process::Stdio::null())
        .status()
        .ok()?;
    if !status.success() {
        return None;
    }
    let context = fedauthz::response::mint::pkcs11::module(Path::new(MODULE)).ok()?;
    let slot = context
        .get_slots_with_token()
        .ok()?
        .into_iter()
        .find(|slot| {
            context
                .get_token_info(*slot)
                .is_ok_and(|info| info.label().trim_end() == label)
        })?;
    let session = context.open_rw_session(slot).ok()?;
    session
        .login(UserType::User, Some(&AuthPin::from(PIN.to_owned())))
        .ok()?;
    for (name, mechanism, params) in [
        (
            "es256",
            Mechanism::EccKeyPairGen,
            vec![Attribute::EcParams(P256.to_vec())],
        ),
        (
            "rs256",
            Mechanism::RsaPkcsKeyPairGen,
            vec![
                Attribute::ModulusBits(2048.into()),
                Attribute::PublicExponent(vec![1, 0, 1]),
            ],
        ),
    ] {
        let mut public = params;
        public.extend([
            Attribute::Token(true),
            Attribute::Verify(true),
            Attribute::Label(name.as_bytes().to_vec()),
        ]);
        session
            .generate_key_pair(
                &mechanism,
                &public,
                &[
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Sign(true),
                    Attribute::Label(name.as_bytes().to_vec()),
                ],
            )
            .ok()?;
    }
    Some(label)
}

fn main() {
    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let incoming = incoming();
    let dir = tempfile::tempdir().expect("tempdir");
    for algorithm in ["ES256", "EdDSA", "RS256", "PS256"] {
        let key = file_key(dir.path(), algorithm);
        bench_pair(
            &mut c,
            &runtime,
            &incoming,
            &format!("{algorithm}/file"),
            &key,
        );
    }
    match softhsm_token() {
        Some(token) => {
            let pin = dir.path().join("pin");
            std::fs::write(&pin, PIN).expect("write pin");
            for (algorithm, label) in [("ES256", "es256"), ("RS256", "rs256")] {
                let key = format!(
                    "{{algorithm: {algorithm}, state: current, initial: true, pkcs11: {{module: {MODULE}, token_label: {token}, key_label: {label}, pin: {{file: '{}'}}}}}}",
                    pin.display()
                );
                bench_pair(
                    &mut c,
                    &runtime,
                    &incoming,
                    &format!("{algorithm}/pkcs11"),
                    &key,
                );
            }
        }
        None => eprintln!(
            "mint/*/pkcs11: left out: SoftHSM2 is not set up (install softhsm2 and set SOFTHSM2_CONF; see the doc comment of benches/mint.rs)"
        ),
    }
    c.final_summary();
}
