//! Interoperability: tokens minted by the real server are verified by jwcrypto (Python), an
//! implementation independent of josekit, for every signing algorithm, knowing only the issuer
//! URL: it fetches discovery and the JWKS over HTTP, picks the key by `kid` and checks the
//! signature and claims, and refuses a tampered signature or another audience. Routes that
//! encrypt to their upstream (RSA-OAEP-256; ECDH-ES+A256KW on P-256, ECDH-ES on X25519,
//! ECDH-ES+A128KW on P-384) are opened by jwcrypto with the upstream's private key.
//!
//! Needs the `python-interop` feature and jwcrypto (`scripts/install-jwcrypto`, which
//! `scripts/test` runs; `FEDAUTHZ_JWCRYPTO_PYTHON` overrides the interpreter). Without it this
//! test fails: it never skips.

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{RunningServer, TestIssuer, bearer, metadata};
use fedauthz::proto::auth::check_response::HttpResponse;
use josekit::jwk::KeyPair as _;
use serde_json::{Value, json};

const ISSUER: &str = "http://fedauthz.internal/platform";

/// Runs tests/interop/verify_minted.py on `request`.
fn run_script(request: &Value) -> std::process::Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/verify_minted.py");
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
    child.wait_with_output().expect("jwcrypto output")
}

/// What tests/interop/verify_minted.py makes of `request`.
fn jwcrypto_verifies(request: &Value) -> Value {
    let output = run_script(request);
    assert!(
        output.status.success(),
        "jwcrypto refused the minted token: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON from the script")
}

/// An upstream encryption key pair made with OpenSSL: (public SPKI PEM, private PKCS#8 PEM).
fn upstream_key(kind: &str) -> (Vec<u8>, String) {
    use openssl::pkey::PKey;
    let key = match kind {
        "X25519" => PKey::generate_x25519().expect("X25519"),
        _ => {
            let group =
                openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::SECP384R1).expect("P-384");
            PKey::from_ec_key(openssl::ec::EcKey::generate(&group).expect("key")).expect("pkey")
        }
    };
    (
        key.public_key_to_pem().expect("public PEM"),
        String::from_utf8(key.private_key_to_pem_pkcs8().expect("private PEM")).expect("PEM"),
    )
}

/// A signing key for `algorithm`, as a PKCS#8 PEM file in `dir`.
fn signing_key(dir: &Path, algorithm: &str) -> PathBuf {
    common::write_signing_key(&dir.join(format!("{algorithm}.pem")), algorithm)
}

/// The minted token of an allow.
fn minted(response: &fedauthz::proto::auth::CheckResponse) -> String {
    match &response.http_response {
        Some(HttpResponse::OkResponse(ok)) => ok
            .headers
            .iter()
            .filter_map(|h| h.header.as_ref())
            .find(|h| h.key == "authorization")
            .and_then(|h| h.value.strip_prefix("Bearer "))
            .expect("a minted token")
            .to_owned(),
        other => panic!("not allowed: {other:?}"),
    }
}

fn with_path(
    mut request: fedauthz::proto::auth::CheckRequest,
    path: &str,
) -> fedauthz::proto::auth::CheckRequest {
    if let Some(http) = request
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
    {
        http.path = path.to_owned();
    }
    request
}

// Multi-threaded: the script runs synchronously while the in-process server answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwcrypto_verifies_minted_tokens_of_every_algorithm_and_opens_encrypted_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let corp = TestIssuer::es256("https://corp.example.com/", "c1");
    // The upstreams' encryption keys: fedauthz gets the public halves, jwcrypto the private.
    let rsa_upstream = josekit::jwe::RSA_OAEP_256
        .generate_key_pair(2048)
        .expect("RSA key");
    std::fs::write(
        dir.path().join("rsa-up.pem"),
        rsa_upstream.to_pem_public_key(),
    )
    .expect("write");
    let ec_upstream = josekit::jwe::ECDH_ES_A256KW
        .generate_ec_key_pair(josekit::jwk::alg::ec::EcCurve::P256)
        .expect("EC key");
    std::fs::write(
        dir.path().join("ec-up.pem"),
        ec_upstream.to_pem_public_key(),
    )
    .expect("write");
    let (x25519_public, x25519_private) = upstream_key("X25519");
    std::fs::write(dir.path().join("x25519-up.pem"), x25519_public).expect("write");
    let (p384_public, p384_private) = upstream_key("P-384");
    std::fs::write(dir.path().join("p384-up.pem"), p384_public).expect("write");
    let private =
        |pem: Vec<u8>| -> Value { Value::String(String::from_utf8(pem).expect("PEM text")) };

    for algorithm in ["ES256", "EdDSA", "RS256", "PS256"] {
        let key = signing_key(dir.path(), algorithm);
        let yaml = format!(
            "issuers:\n  - {{id: corp, issuer: '{}', audiences: [api], keys: {{jwks: {}}}}}\nroutes:\n  - {{name: sealed-rsa, match: {{paths: [/rsa]}}, mint: {{audience: vault, encrypt: {{key_file: '{}', algorithm: RSA-OAEP-256}}}}}}\n  - {{name: sealed-ec, match: {{paths: [/ec]}}, mint: {{audience: vault, encrypt: {{key_file: '{}', algorithm: ECDH-ES+A256KW, content_encryption: A128GCM}}}}}}\n  - {{name: sealed-x25519, match: {{paths: [/x25519]}}, mint: {{audience: vault, encrypt: {{key_file: '{}', algorithm: ECDH-ES, content_encryption: A128GCM}}}}}}\n  - {{name: sealed-p384, match: {{paths: [/p384]}}, mint: {{audience: vault, encrypt: {{key_file: '{}', algorithm: ECDH-ES+A128KW, content_encryption: A128CBC-HS256}}}}}}\n  - {{name: orders}}\nmint:\n  issuer: {ISSUER}\n  audience: orders-api\n  keys: [{{file: '{}', algorithm: {algorithm}, state: current, initial: true}}]\n",
            corp.iss,
            corp.jwks(),
            dir.path().join("rsa-up.pem").display(),
            dir.path().join("ec-up.pem").display(),
            dir.path().join("x25519-up.pem").display(),
            dir.path().join("p384-up.pem").display(),
            key.display(),
        );
        let server = RunningServer::start(&yaml).await;
        let mut client = server.client().await;
        let base = format!("http://{}", server.admin);
        let token = corp.token("alice", "api");

        let response = client
            .check(bearer(&token))
            .await
            .expect("check")
            .into_inner();
        let plain = minted(&response);
        let verified = jwcrypto_verifies(&json!({
            "issuer": ISSUER, "base": base, "token": plain, "audience": "orders-api",
        }));
        // The verifier is no rubber stamp: a changed signature, or another audience, fails.
        let (input, signature) = plain.rsplit_once('.').expect("compact JWS");
        let flipped = if signature.starts_with('A') { "B" } else { "A" };
        let tampered = format!("{input}.{flipped}{}", &signature[1..]);
        for (token, audience, why) in [
            (tampered.as_str(), "orders-api", "InvalidJWSSignature"),
            (
                plain.as_str(),
                "other",
                "claims[\"aud\"] == request[\"audience\"]",
            ),
        ] {
            let output = run_script(&json!({
                "issuer": ISSUER, "base": base, "token": token, "audience": audience,
            }));
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                !output.status.success() && stderr.contains(why),
                "{algorithm}: jwcrypto did not refuse a bad token for {why}: {stderr}"
            );
        }
        assert_eq!(verified["header"]["alg"], algorithm);
        assert_eq!(verified["claims"]["sub"], "corp:alice");
        assert_eq!(verified["claims"]["fedauthz"]["issuer"], "corp");
        assert_eq!(
            verified["claims"]["jti"].as_str(),
            metadata(&response, "mint_jti")
        );

        for (path, upstream, alg, enc) in [
            (
                "/rsa",
                private(rsa_upstream.to_pem_private_key()),
                "RSA-OAEP-256",
                "A256GCM",
            ),
            (
                "/ec",
                private(ec_upstream.to_pem_private_key()),
                "ECDH-ES+A256KW",
                "A128GCM",
            ),
            (
                "/x25519",
                Value::String(x25519_private.clone()),
                "ECDH-ES",
                "A128GCM",
            ),
            (
                "/p384",
                Value::String(p384_private.clone()),
                "ECDH-ES+A128KW",
                "A128CBC-HS256",
            ),
        ] {
            let response = client
                .check(with_path(bearer(&token), path))
                .await
                .expect("check")
                .into_inner();
            let verified = jwcrypto_verifies(&json!({
                "issuer": ISSUER, "base": base, "token": minted(&response), "audience": "vault",
                "decrypt": upstream,
            }));
            assert_eq!(verified["jwe_header"]["alg"], alg, "{algorithm} {path}");
            assert_eq!(verified["jwe_header"]["enc"], enc);
            assert_eq!(verified["header"]["alg"], algorithm);
            assert_eq!(verified["claims"]["aud"], "vault");
        }
        server.shutdown().await.expect("clean shutdown");
    }
}
