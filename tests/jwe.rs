//! Encrypted tokens through the real server: a nested JWT (a signed token inside a JWE) is
//! decrypted with fedauthz's own key and then verified like any token, by its own issuer; the
//! answer says it arrived encrypted. Every way around that is refused with its reason.

mod common;

use std::path::Path;

use common::{RunningServer, TestIssuer, bearer, metadata, reason};
use josekit::jwe::{self, JweContext, JweHeader};
use josekit::jwk::KeyPair as _;

const AUD: &str = "orders";

/// fedauthz's RSA decryption key, written to `dir`; returns the public JWK senders use.
fn rsa_key(dir: &Path, name: &str) -> josekit::jwk::Jwk {
    let pair = jwe::RSA_OAEP_256.generate_key_pair(2048).expect("RSA key");
    std::fs::write(dir.join(format!("{name}.pem")), pair.to_pem_private_key()).expect("write key");
    pair.to_jwk_public_key()
}

/// `jws` encrypted to `public` with RSA-OAEP-256 + A256GCM under `kid`, header `cty: JWT`.
fn encrypt(jws: &str, public: &josekit::jwk::Jwk, kid: &str) -> String {
    let mut header = JweHeader::new();
    header.set_content_encryption("A256GCM");
    header.set_key_id(kid);
    header.set_content_type("JWT");
    let encrypter = jwe::RSA_OAEP_256
        .encrypter_from_jwk(public)
        .expect("encrypter");
    JweContext::new()
        .serialize_compact(jws.as_bytes(), &header, &encrypter)
        .expect("encrypt")
}

struct Setup {
    _dir: tempfile::TempDir,
    partners: TestIssuer,
    internal: TestIssuer,
    public: josekit::jwk::Jwk,
    server: RunningServer,
}

/// Two issuers: `partners` accepts encrypted tokens, `internal` does not.
async fn setup(extra: &str) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let public = rsa_key(dir.path(), "enc-1");
    let partners = TestIssuer::es256("https://partners.example.com/", "p1");
    let internal = TestIssuer::es256("https://internal.example.com/", "i1");
    let yaml = format!(
        "decryption:\n  keys:\n    - {{kid: enc-1, algorithm: RSA-OAEP-256, file: {}}}\nissuers:\n  - {{id: partners, issuer: '{}', audiences: [{AUD}], accept_encrypted: true, keys: {{jwks: {}}}}}\n  - {{id: internal, issuer: '{}', audiences: [{AUD}], keys: {{jwks: {}}}}}\nresponse:\n  headers: {{x-auth-encryption: '{{encryption}}'}}\n{extra}",
        dir.path().join("enc-1.pem").display(),
        partners.iss,
        partners.jwks(),
        internal.iss,
        internal.jwks(),
    );
    let server = RunningServer::start(&yaml).await;
    Setup {
        _dir: dir,
        partners,
        internal,
        public,
        server,
    }
}

fn upstream_header<'a>(
    response: &'a fedauthz::proto::auth::CheckResponse,
    name: &str,
) -> Option<&'a str> {
    use fedauthz::proto::auth::check_response::HttpResponse;
    match &response.http_response {
        Some(HttpResponse::OkResponse(ok)) => ok
            .headers
            .iter()
            .filter_map(|h| h.header.as_ref())
            .find(|h| h.key == name)
            .map(|h| h.value.as_str()),
        _ => None,
    }
}

fn bool_metadata(response: &fedauthz::proto::auth::CheckResponse, key: &str) -> Option<bool> {
    use prost_types::value::Kind;
    match response
        .dynamic_metadata
        .as_ref()?
        .fields
        .get(key)?
        .kind
        .as_ref()?
    {
        Kind::BoolValue(b) => Some(*b),
        _ => None,
    }
}

#[tokio::test]
async fn a_nested_jwt_is_decrypted_verified_and_marked_encrypted() {
    let s = setup("").await;
    let mut client = s.server.client().await;
    let token = encrypt(&s.partners.token("alice", AUD), &s.public, "enc-1");
    assert_eq!(token.split('.').count(), 5);
    for _ in 0..2 {
        let response = client
            .check(bearer(&token))
            .await
            .expect("check")
            .into_inner();
        assert_eq!(reason(&response), "token_valid");
        assert_eq!(metadata(&response, "subject"), Some("alice"));
        assert_eq!(metadata(&response, "issuer"), Some("partners"));
        assert_eq!(bool_metadata(&response, "encrypted"), Some(true));
        assert_eq!(
            metadata(&response, "encryption"),
            Some("RSA-OAEP-256+A256GCM")
        );
        assert_eq!(
            upstream_header(&response, "x-auth-encryption"),
            Some("RSA-OAEP-256+A256GCM")
        );
    }
    // The second check was a cache hit on the outer token.
    let (_, metrics) = s.server.admin_get("/metrics").await;
    assert!(
        metrics.contains("fedauthz_token_cache_hits_total 1"),
        "{metrics}"
    );
    // A plain token of the same issuer is not marked.
    let plain = client
        .check(bearer(&s.partners.token("alice", AUD)))
        .await
        .expect("check")
        .into_inner();
    assert_eq!(reason(&plain), "token_valid");
    assert_eq!(bool_metadata(&plain, "encrypted"), None);
    assert_eq!(upstream_header(&plain, "x-auth-encryption"), None);
}

#[tokio::test]
async fn what_is_inside_must_verify_on_its_own() {
    let s = setup("").await;
    let mut client = s.server.client().await;
    let check = |token: String| {
        let mut client = client.clone();
        async move {
            let response = client
                .check(bearer(&token))
                .await
                .expect("check")
                .into_inner();
            reason(&response).to_owned()
        }
    };
    // A tampered inner signature.
    let good = s.partners.token("alice", AUD);
    let (signed, signature) = good.rsplit_once('.').expect("jws");
    let flipped = if signature.starts_with('A') { 'B' } else { 'A' };
    let tampered = format!("{signed}.{flipped}{}", &signature[1..]);
    assert_eq!(
        check(encrypt(&tampered, &s.public, "enc-1")).await,
        "signature_invalid"
    );
    // A signed token from an issuer nobody trusts.
    let stranger = TestIssuer::es256("https://stranger.example.com/", "s1");
    assert_eq!(
        check(encrypt(&stranger.token("alice", AUD), &s.public, "enc-1")).await,
        "issuer_unknown"
    );
    // An expired inner token.
    let mut claims = s.partners.claims("alice", AUD);
    claims.insert("exp".into(), (common::now() - 600).into());
    claims.insert("iat".into(), (common::now() - 900).into());
    claims.insert("nbf".into(), (common::now() - 900).into());
    let expired = s.partners.sign(&claims, serde_json::json!({}));
    assert_eq!(
        check(encrypt(&expired, &s.public, "enc-1")).await,
        "token_expired"
    );
    // A trusted issuer that does not accept encrypted tokens.
    assert_eq!(
        check(encrypt(&s.internal.token("alice", AUD), &s.public, "enc-1")).await,
        "encryption_not_allowed"
    );
    // Its plain tokens still pass.
    assert_eq!(check(s.internal.token("alice", AUD)).await, "token_valid");
    // Encrypted to a key fedauthz does not hold, or under an unknown kid.
    let other = rsa_key(tempfile::tempdir().expect("tempdir").path(), "other");
    assert_eq!(
        check(encrypt(&good, &other, "enc-1")).await,
        "decryption_failed"
    );
    assert_eq!(
        check(encrypt(&good, &s.public, "enc-2")).await,
        "decryption_failed"
    );
    // Encrypt-only claims (no signed token inside), and a JWE inside the JWE.
    let claims = serde_json::to_string(&s.partners.claims("alice", AUD)).expect("json");
    assert_eq!(
        check(encrypt(&claims, &s.public, "enc-1")).await,
        "encryption_not_allowed"
    );
    let nested = encrypt(&encrypt(&good, &s.public, "enc-1"), &s.public, "enc-1");
    assert_eq!(check(nested).await, "encryption_not_allowed");
    // The allowed token still passes after all that.
    assert_eq!(
        check(encrypt(&good, &s.public, "enc-1")).await,
        "token_valid"
    );
    let _ = &mut client;
}

#[tokio::test]
async fn without_decryption_an_encrypted_token_is_refused_as_before() {
    let issuer = TestIssuer::es256("https://partners.example.com/", "p1");
    let server = RunningServer::start(&format!(
        "issuers:\n  - {{id: partners, issuer: '{}', audiences: [{AUD}], keys: {{jwks: {}}}}}\n",
        issuer.iss,
        issuer.jwks()
    ))
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let public = rsa_key(dir.path(), "k");
    let mut client = server.client().await;
    let response = client
        .check(bearer(&encrypt(&issuer.token("alice", AUD), &public, "k")))
        .await
        .expect("check")
        .into_inner();
    assert_eq!(reason(&response), "token_encrypted");
}

#[test]
fn decryption_settings_are_checked_with_their_field_paths() {
    let dir = tempfile::tempdir().expect("tempdir");
    let issuers = "issuers:\n  - {id: a, issuer: 'https://a', audiences: [x], keys: {jwks: {keys: []}}}\n  - {id: b, issuer: 'https://b', audiences: [x], accept_encrypted: true, keys: {jwks: {keys: []}}}\n";
    let errors = |yaml: &str| match fedauthz::config::parse_yaml(yaml, "t.yaml") {
        Ok(_) => Vec::new(),
        Err(err) => err.field_errors().iter().map(ToString::to_string).collect(),
    };
    assert_eq!(
        errors(issuers),
        ["issuers[1].accept_encrypted: needs decryption.keys: there is no key to decrypt with"]
    );
    let key = dir.path().join("k.pem");
    let decryption = format!(
        "decryption:\n  keys:\n    - {{kid: k, algorithm: RSA-OAEP-256, file: {0}}}\n    - {{kid: k, algorithm: ECDH-ES, file: {0}}}\n  content_encryption: [A128GCM, A128GCM]\n",
        key.display()
    );
    assert_eq!(
        errors(&format!("{decryption}{issuers}")),
        [
            "decryption.keys[1].kid: duplicates decryption.keys[0].kid \"k\"",
            "decryption.content_encryption[1]: A128GCM is listed twice",
        ]
    );
    let unknown = errors(&format!(
        "decryption:\n  keys:\n    - {{kid: k, algorithm: RSA1_5, file: {}}}\n{issuers}",
        key.display()
    ));
    assert!(
        unknown.len() == 1 && unknown[0].starts_with("decryption.keys[0].algorithm: "),
        "{unknown:?}"
    );
    // A key file that is missing or does not fit its algorithm is refused by check-config.
    let file = dir.path().join("fedauthz.yaml");
    std::fs::write(
        &file,
        format!(
            "decryption:\n  keys:\n    - {{kid: k, algorithm: RSA-OAEP-256, file: {}}}\n{issuers}",
            key.display()
        ),
    )
    .expect("write");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_fedauthz"))
        .arg("check-config")
        .arg(&file)
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "{}: decryption.keys[0].file: {}: cannot read",
            file.display(),
            key.display()
        )),
        "{stderr}"
    );
    let p256 = josekit::jwk::alg::ec::EcKeyPair::generate(josekit::jwk::alg::ec::EcCurve::P256)
        .expect("key");
    std::fs::write(&key, p256.to_pem_private_key()).expect("write");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_fedauthz"))
        .arg("check-config")
        .arg(&file)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("RSA-OAEP-256 needs an RSA private key"),
        "{stderr}"
    );
}

#[test]
fn debug_nested() {
    let dir = tempfile::tempdir().expect("tempdir");
    let public = rsa_key(dir.path(), "enc-1");
    let partners = TestIssuer::es256("https://partners.example.com/", "p1");
    let good = partners.token("alice", AUD);
    let nested = encrypt(&encrypt(&good, &public, "enc-1"), &public, "enc-1");
    let d = fedauthz::verify::jwe::Decrypter::load(&fedauthz::config::DecryptionConfig {
        keys: vec![fedauthz::config::DecryptionKeyConfig {
            kid: "enc-1".into(),
            algorithm: fedauthz::config::KeyManagement::RsaOaep256,
            file: dir.path().join("enc-1.pem"),
        }],
        content_encryption: vec![fedauthz::config::ContentEncryption::A256Gcm],
    })
    .unwrap();
    println!(
        "len {} {:?}",
        nested.len(),
        d.open(&nested, 8192).map(|o| o.jws.len())
    );
}

#[test]
fn explain_shows_the_decryption_step_but_never_the_plaintext() {
    let dir = tempfile::tempdir().expect("tempdir");
    let public = rsa_key(dir.path(), "enc-1");
    let partners = TestIssuer::es256("https://partners.example.com/", "p1");
    let file = dir.path().join("fedauthz.yaml");
    std::fs::write(
        &file,
        format!(
            "decryption:\n  keys: [{{kid: enc-1, algorithm: RSA-OAEP-256, file: {}}}]\nissuers:\n  - {{id: partners, issuer: '{}', audiences: [{AUD}], accept_encrypted: true, keys: {{jwks: {}}}}}\n",
            dir.path().join("enc-1.pem").display(),
            partners.iss,
            partners.jwks()
        ),
    )
    .expect("write");
    let explain = |token: &str| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_fedauthz"))
            .args(["explain", "--config"])
            .arg(&file)
            .args(["--token", token])
            .output()
            .expect("run");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("UTF-8")
    };
    let inner = partners.token("alice", AUD);
    let trace = explain(&encrypt(&inner, &public, "enc-1"));
    assert!(
        trace.contains(
            "encrypted: alg \"RSA-OAEP-256\", enc \"A256GCM\", kid \"enc-1\", cty \"JWT\""
        ),
        "{trace}"
    );
    assert!(
        trace.contains("  decryption   ok (decrypted; the content is not shown)"),
        "{trace}"
    );
    assert!(trace.contains("  signature    ok"), "{trace}");
    assert!(trace.contains("answer:  ALLOW"), "{trace}");
    for segment in inner.split('.') {
        assert!(!trace.contains(segment), "the inner token leaked:\n{trace}");
    }
    let trace = explain(&encrypt(&inner, &public, "enc-9"));
    assert!(
        trace.contains("  decryption   FAILED  decryption_failed"),
        "{trace}"
    );
    assert!(trace.contains("  framing      not reached"), "{trace}");
    // A plain token says so.
    assert!(explain(&inner).contains("  decryption   not encrypted"));
}

#[test]
fn a_changed_decryption_key_file_takes_effect_without_a_restart() {
    use common::process::Process;
    let dir = tempfile::tempdir().expect("tempdir");
    let first = rsa_key(dir.path(), "enc-1");
    let partners = TestIssuer::es256("https://partners.example.com/", "p1");
    let config = dir.path().join("fedauthz.yaml");
    std::fs::write(
        &config,
        format!(
            "server: {{grpc_listen: '127.0.0.1:0', admin_listen: '127.0.0.1:0', config_poll_interval: 1s}}\ndecryption:\n  keys: [{{kid: enc-1, algorithm: RSA-OAEP-256, file: {}}}]\nissuers:\n  - {{id: partners, issuer: '{}', audiences: [{AUD}], accept_encrypted: true, keys: {{jwks: {}}}}}\n",
            dir.path().join("enc-1.pem").display(),
            partners.iss,
            partners.jwks()
        ),
    )
    .expect("write");
    let mut server = Process::spawn(
        std::process::Command::new(env!("CARGO_BIN_EXE_fedauthz"))
            .args(["serve", "--config"])
            .arg(&config)
            .args(["--log-format", "json"])
            .env("RUST_LOG", "info"),
    );
    let line = server.wait_for("fedauthz listening");
    let log: serde_json::Value = serde_json::from_str(&line).expect("JSON");
    let grpc = log["fields"]["grpc"]
        .as_str()
        .expect("grpc address")
        .to_owned();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let check = |token: String| {
        let grpc = grpc.clone();
        runtime.block_on(async move {
            let mut client =
                fedauthz::proto::auth::authorization_client::AuthorizationClient::connect(format!(
                    "http://{grpc}"
                ))
                .await
                .expect("connect");
            let response = client
                .check(bearer(&token))
                .await
                .expect("check")
                .into_inner();
            reason(&response).to_owned()
        })
    };
    let jws = partners.token("alice", AUD);
    assert_eq!(check(encrypt(&jws, &first, "enc-1")), "token_valid");

    // The key is rotated in place (same kid, new key): tokens for the new key work, tokens for
    // the old one no longer decrypt.
    let second = rsa_key(dir.path(), "enc-1");
    server.wait_for("configuration reloaded");
    assert_eq!(check(encrypt(&jws, &second, "enc-1")), "token_valid");
    assert_eq!(check(encrypt(&jws, &first, "enc-1")), "decryption_failed");

    // A key file that no longer loads is refused; the running key stays.
    std::fs::write(dir.path().join("enc-1.pem"), "not a key").expect("write");
    let refused = server.wait_for("configuration refused");
    assert!(refused.contains("decryption.keys[0].file"), "{refused}");
    assert_eq!(check(encrypt(&jws, &second, "enc-1")), "token_valid");
    server.signal("TERM");
    assert!(server.wait_exit().success());
}
