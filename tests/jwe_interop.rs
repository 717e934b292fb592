//! Interoperability: nested JWTs made by jwcrypto (Python), an implementation independent of
//! josekit, signed and encrypted there, are accepted by the real server with every key
//! management and content encryption fedauthz accepts.
//!
//! Needs the `python-interop` feature and jwcrypto (`scripts/install-jwcrypto`, which
//! `scripts/test` runs; `FEDAUTHZ_JWCRYPTO_PYTHON` overrides the interpreter). Without it this
//! test fails: it never skips.

mod common;

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{RunningServer, bearer, metadata, reason};
use josekit::jwk::KeyPair as _;
use serde_json::{Value, json};

/// A nested JWT from tests/interop/nested_jwt.py.
fn jwcrypto_token(request: &Value) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/nested_jwt.py");
    let mut child = Command::new(common::jwcrypto_python())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run jwcrypto");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(request.to_string().as_bytes())
        .expect("write request");
    let output = child.wait_with_output().expect("jwcrypto output");
    assert!(
        output.status.success(),
        "jwcrypto failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("UTF-8")
        .trim()
        .to_owned()
}

fn jwk_value(jwk: &josekit::jwk::Jwk) -> Value {
    serde_json::from_str(&jwk.to_string()).expect("JWK JSON")
}

#[tokio::test]
async fn nested_jwts_made_by_jwcrypto_are_accepted() {
    use josekit::jwk::alg::ec::{EcCurve, EcKeyPair};
    use josekit::jwk::alg::ecx::{EcxCurve, EcxKeyPair};

    let dir = tempfile::tempdir().expect("tempdir");
    let iss = "https://partners.example.com/";
    // The sender's signing keys: ES256 and RS256, published to fedauthz as the issuer's JWKS.
    let mut es = EcKeyPair::generate(EcCurve::P256)
        .expect("key")
        .to_jwk_key_pair();
    es.set_key_id("sig-es");
    es.set_algorithm("ES256");
    let mut rs = josekit::jws::RS256
        .generate_key_pair(2048)
        .expect("key")
        .to_jwk_key_pair();
    rs.set_key_id("sig-rs");
    rs.set_algorithm("RS256");
    let public = |jwk: &josekit::jwk::Jwk| {
        let mut value = jwk_value(jwk);
        if let Some(map) = value.as_object_mut() {
            for private in ["d", "p", "q", "dp", "dq", "qi"] {
                map.remove(private);
            }
        }
        value
    };
    let jwks = json!({ "keys": [public(&es), public(&rs)] });

    // fedauthz's decryption keys, one per key management algorithm, in PEM and JWK files.
    let rsa = josekit::jwe::RSA_OAEP_256
        .generate_key_pair(2048)
        .expect("key");
    std::fs::write(dir.path().join("rsa.pem"), rsa.to_pem_private_key()).expect("write");
    let p256 = EcKeyPair::generate(EcCurve::P256).expect("key");
    std::fs::write(
        dir.path().join("p256.json"),
        p256.to_jwk_key_pair().to_string(),
    )
    .expect("write");
    let p384 = EcKeyPair::generate(EcCurve::P384).expect("key");
    std::fs::write(dir.path().join("p384.pem"), p384.to_pem_private_key()).expect("write");
    let x25519 = EcxKeyPair::generate(EcxCurve::X25519).expect("key");
    std::fs::write(
        dir.path().join("x25519.json"),
        x25519.to_jwk_key_pair().to_string(),
    )
    .expect("write");
    let file = |name: &str| dir.path().join(name).display().to_string();
    let yaml = format!(
        "decryption:\n  content_encryption: [A128GCM, A256GCM, A128CBC-HS256]\n  keys:\n    - {{kid: rsa, algorithm: RSA-OAEP-256, file: {}}}\n    - {{kid: p256, algorithm: ECDH-ES+A128KW, file: {}}}\n    - {{kid: p384, algorithm: ECDH-ES+A256KW, file: {}}}\n    - {{kid: x25519, algorithm: ECDH-ES, file: {}}}\nissuers:\n  - {{id: partners, issuer: '{iss}', audiences: [orders], accept_encrypted: true, algorithms: [ES256, RS256], keys: {{jwks: {jwks}}}}}\n",
        file("rsa.pem"),
        file("p256.json"),
        file("p384.pem"),
        file("x25519.json"),
    );
    let server = RunningServer::start(&yaml).await;
    let mut client = server.client().await;

    let now = common::now();
    let cases = [
        (
            "rsa",
            "RSA-OAEP-256",
            "A256GCM",
            jwk_value(&rsa.to_jwk_public_key()),
            &es,
            "ES256",
        ),
        (
            "rsa",
            "RSA-OAEP-256",
            "A128CBC-HS256",
            jwk_value(&rsa.to_jwk_public_key()),
            &rs,
            "RS256",
        ),
        (
            "p256",
            "ECDH-ES+A128KW",
            "A128GCM",
            jwk_value(&p256.to_jwk_public_key()),
            &es,
            "ES256",
        ),
        (
            "p384",
            "ECDH-ES+A256KW",
            "A256GCM",
            jwk_value(&p384.to_jwk_public_key()),
            &rs,
            "RS256",
        ),
        (
            "x25519",
            "ECDH-ES",
            "A128GCM",
            jwk_value(&x25519.to_jwk_public_key()),
            &es,
            "ES256",
        ),
        (
            "x25519",
            "ECDH-ES",
            "A128CBC-HS256",
            jwk_value(&x25519.to_jwk_public_key()),
            &es,
            "ES256",
        ),
    ];
    for (kid, alg, enc, enc_key, sign_key, sign_alg) in cases {
        let subject = format!("{kid}-{alg}-{enc}");
        let token = jwcrypto_token(&json!({
            "claims": { "iss": iss, "sub": subject, "aud": "orders", "iat": now, "nbf": now, "exp": now + 300 },
            "sign_key": jwk_value(sign_key),
            "sign_alg": sign_alg,
            "enc_key": enc_key,
            "alg": alg,
            "enc": enc,
            "kid": kid,
        }));
        assert_eq!(token.split('.').count(), 5, "{subject}: a compact JWE");
        let response = client
            .check(bearer(&token))
            .await
            .expect("check")
            .into_inner();
        assert_eq!(reason(&response), "token_valid", "{subject}");
        assert_eq!(metadata(&response, "subject"), Some(subject.as_str()));
        assert_eq!(
            metadata(&response, "encryption"),
            Some(format!("{alg}+{enc}").as_str())
        );
    }
}
