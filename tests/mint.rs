//! Minting through the real server: an allowed check carries an internal token for the
//! upstream that a verifier checks against the discovery document and JWKS fedauthz publishes
//! over HTTP (signature checked with OpenSSL directly, not josekit); claims are namespaced,
//! registered claims cannot be templated, `exp` never passes the incoming token's, audiences
//! are per route; tokens are reused from the cache; keys rotate next → current → retired
//! without a verifier that caches the JWKS ever meeting an unknown `kid`.

mod common;

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{
    RunningServer, TestIssuer, bearer, check_request, http_get, metadata, now, reason,
    upstream_headers,
};
use fedauthz::proto::auth::CheckResponse;
use fedauthz::proto::auth::check_response::HttpResponse;
use serde_json::{Map, Value, json};

/// An ES256 (P-256) PKCS#8 key written to `dir/name.pem`.
fn p256_key(dir: &Path, name: &str) -> PathBuf {
    common::write_signing_key(&dir.join(format!("{name}.pem")), "ES256")
}

fn removed(response: &CheckResponse) -> Vec<String> {
    match &response.http_response {
        Some(HttpResponse::OkResponse(ok)) => ok.headers_to_remove.clone(),
        _ => Vec::new(),
    }
}

/// The minted token of an allow, from `Authorization: Bearer`.
fn minted(response: &CheckResponse) -> String {
    let headers = upstream_headers(response);
    let value = headers
        .get("authorization")
        .unwrap_or_else(|| panic!("no minted token in {headers:?}"));
    value
        .strip_prefix("Bearer ")
        .expect("Bearer scheme")
        .to_owned()
}

/// A verifier that knows nothing but fedauthz's issuer URL and the address serving it: it
/// fetches discovery, checks `issuer`, fetches `jwks_uri`, and verifies ES256 tokens with
/// OpenSSL against the key named by `kid`. Like real verifiers, it keeps the JWKS it fetched.
struct Verifier {
    issuer: String,
    jwks: Value,
    fetches: usize,
}

impl Verifier {
    async fn discover(addr: std::net::SocketAddr, issuer: &str) -> Self {
        let mut verifier = Self {
            issuer: issuer.to_owned(),
            jwks: Value::Null,
            fetches: 0,
        };
        verifier.refresh(addr).await;
        verifier
    }

    async fn refresh(&mut self, addr: std::net::SocketAddr) {
        let (status, body) = http_get(addr, "/.well-known/openid-configuration").await;
        assert_eq!(status, 200, "discovery: {body}");
        let discovery: Value = serde_json::from_str(&body).expect("discovery JSON");
        assert_eq!(discovery["issuer"], self.issuer.as_str());
        let jwks_uri = discovery["jwks_uri"].as_str().expect("jwks_uri").to_owned();
        let path = jwks_uri
            .strip_prefix(&self.issuer)
            .expect("jwks_uri under the issuer");
        let (status, body) = http_get(addr, path).await;
        assert_eq!(status, 200, "jwks: {body}");
        self.jwks = serde_json::from_str(&body).expect("JWKS JSON");
        self.fetches += 1;
    }

    fn kids(&self) -> Vec<String> {
        self.jwks["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| k["kid"].as_str().expect("kid").to_owned())
            .collect()
    }

    /// The header and claims of `token` once its signature verifies; panics otherwise.
    fn verify(&self, token: &str) -> (Map<String, Value>, Map<String, Value>) {
        let mut parts = token.split('.');
        let (h, p, s) = (
            parts.next().expect("header"),
            parts.next().expect("payload"),
            parts.next().expect("signature"),
        );
        assert!(parts.next().is_none(), "a compact JWS");
        let header: Map<String, Value> =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).expect("b64")).expect("header");
        let kid = header["kid"].as_str().expect("kid");
        let jwk = self.jwks["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .find(|k| k["kid"] == kid)
            .unwrap_or_else(|| panic!("kid {kid} unknown to the cached JWKS {:?}", self.kids()));
        assert_eq!(header["alg"], "ES256");
        assert_eq!(jwk["alg"], "ES256");
        assert_eq!(jwk["use"], "sig");
        let coordinate = |name: &str| {
            openssl::bn::BigNum::from_slice(
                &URL_SAFE_NO_PAD
                    .decode(jwk[name].as_str().expect("coordinate"))
                    .expect("b64"),
            )
            .expect("bn")
        };
        let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)
            .expect("P-256");
        let public = openssl::ec::EcKey::from_public_key_affine_coordinates(
            &group,
            &coordinate("x"),
            &coordinate("y"),
        )
        .expect("public key");
        let signature = URL_SAFE_NO_PAD.decode(s).expect("b64");
        assert_eq!(signature.len(), 64);
        let sig = openssl::ecdsa::EcdsaSig::from_private_components(
            openssl::bn::BigNum::from_slice(&signature[..32]).expect("r"),
            openssl::bn::BigNum::from_slice(&signature[32..]).expect("s"),
        )
        .expect("sig");
        let digest = openssl::sha::sha256(format!("{h}.{p}").as_bytes());
        assert!(
            sig.verify(&digest, &public).expect("verify"),
            "signature of a minted token does not verify"
        );
        let claims: Map<String, Value> =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).expect("b64")).expect("claims");
        assert_eq!(claims["iss"], self.issuer.as_str());
        (header, claims)
    }
}

const ISSUER: &str = "http://fedauthz.internal";

struct Setup {
    dir: tempfile::TempDir,
    corp: TestIssuer,
    partners: TestIssuer,
    server: RunningServer,
}

/// Two issuers whose users share subject names; routes `orders` (default audience),
/// `admin` (its own audience), `public` (no minting).
fn config(dir: &Path, corp: &TestIssuer, partners: &TestIssuer, keys: &str, extra: &str) -> String {
    format!(
        r#"issuers:
  - {{id: corp, issuer: '{}', audiences: [api], profile: keycloak, keys: {{jwks: {}}}}}
  - {{id: partners, issuer: '{}', audiences: [api], keys: {{jwks: {}}}}}
routes:
  - {{name: admin, match: {{paths: ['/admin']}}, mint: {{audience: admin-api}}}}
  - {{name: public, match: {{paths: ['/public']}}, mint: {{enabled: false}}}}
  - {{name: orders}}
mint:
  issuer: {ISSUER}
  audience: orders-api
  lifetime: 2m
  clock_skew: 0s
  key_lead_time: 1s
  publish: {{max_age: 1s}}
  claims: {{department: '{{claims.department}}'}}
  keys:
{keys}
{extra}"#,
        corp.iss,
        corp.jwks(),
        partners.iss,
        partners.jwks(),
    )
    .replace("{dir}", &dir.display().to_string())
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    p256_key(dir.path(), "a");
    let corp = TestIssuer::es256("https://corp.example.com/realms/main", "c1");
    let partners = TestIssuer::es256("https://partners.example.com/", "p1");
    let keys = "    - {file: '{dir}/a.pem', state: current, initial: true}";
    let server = RunningServer::start(&config(dir.path(), &corp, &partners, keys, "")).await;
    Setup {
        dir,
        corp,
        partners,
        server,
    }
}

fn request(token: &str, path: &str) -> fedauthz::proto::auth::CheckRequest {
    let mut request = bearer(token);
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

#[tokio::test]
async fn an_allowed_check_carries_a_minted_token_that_verifies_against_the_published_keys() {
    let s = setup().await;
    let mut client = s.server.client().await;
    let mut claims = s.corp.claims("alice", "api");
    claims.insert("realm_access".into(), json!({"roles": ["buyer"]}));
    claims.insert("email".into(), json!("alice@corp.example.com"));
    claims.insert("department".into(), json!("sales"));
    let incoming = s.corp.sign(&claims, json!({}));
    let response = client
        .check(request(&incoming, "/orders"))
        .await
        .expect("check")
        .into_inner();
    assert_eq!(reason(&response), "token_valid");
    let token = minted(&response);
    assert_ne!(
        token, incoming,
        "the incoming credential never goes upstream"
    );
    assert!(!removed(&response).contains(&"authorization".to_owned()));

    let verifier = Verifier::discover(s.server.admin, ISSUER).await;
    let (header, minted_claims) = verifier.verify(&token);
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(minted_claims["sub"], "corp:alice");
    assert_eq!(minted_claims["aud"], "orders-api");
    assert_eq!(minted_claims["client_id"], "corp:alice");
    assert_eq!(minted_claims["department"], "sales");
    let identity = &minted_claims["fedauthz"];
    assert_eq!(identity["issuer"], "corp");
    assert_eq!(identity["iss"], s.corp.iss.as_str());
    assert_eq!(identity["subject"], "alice");
    assert_eq!(identity["roles"], json!(["buyer"]));
    assert_eq!(identity["email"], "alice@corp.example.com");
    let iat = minted_claims["iat"].as_i64().expect("iat");
    assert!((now() - iat).abs() <= 2);
    assert_eq!(minted_claims["nbf"].as_i64(), Some(iat));
    assert_eq!(
        minted_claims["exp"].as_i64(),
        Some(iat + 120),
        "the configured lifetime"
    );
    let jti = minted_claims["jti"].as_str().expect("jti");
    assert_eq!(URL_SAFE_NO_PAD.decode(jti).expect("b64").len(), 16);
    assert_eq!(metadata(&response, "mint_jti"), Some(jti));
    assert_eq!(
        metadata(&response, "mint_kid"),
        header["kid"].as_str(),
        "the metadata names the signing key"
    );
    assert_eq!(verifier.kids(), [header["kid"].as_str().expect("kid")]);
    let kid = header["kid"].as_str().expect("kid");
    let thumbprint =
        fedauthz::response::mint::thumbprint(verifier.jwks["keys"][0].as_object().expect("jwk"));
    assert_eq!(
        thumbprint.as_deref(),
        Some(kid),
        "kid is the RFC 7638 thumbprint"
    );

    // The same subject text from another issuer is another subject.
    let response = client
        .check(request(&s.partners.token("alice", "api"), "/orders"))
        .await
        .expect("check")
        .into_inner();
    let (_, partner_claims) = verifier.verify(&minted(&response));
    assert_eq!(partner_claims["sub"], "partners:alice");
    assert_eq!(partner_claims["fedauthz"]["issuer"], "partners");
    assert!(
        partner_claims.get("department").is_none(),
        "no value, no claim"
    );

    // Audience per route; a route without minting sends no token and keeps none a client sent.
    let response = client
        .check(request(&incoming, "/admin"))
        .await
        .expect("check")
        .into_inner();
    assert_eq!(verifier.verify(&minted(&response)).1["aud"], "admin-api");
    let response = client
        .check(request(&incoming, "/public"))
        .await
        .expect("check")
        .into_inner();
    assert!(!upstream_headers(&response).contains_key("authorization"));
    assert!(removed(&response).contains(&"authorization".to_owned()));
    assert_eq!(metadata(&response, "mint_jti"), None);
    drop(s.dir);
}

#[tokio::test]
async fn a_minted_token_never_outlives_the_incoming_one_and_is_reused_until_renewal() {
    let s = setup().await;
    let mut client = s.server.client().await;
    let mut claims = s.corp.claims("bob", "api");
    let short_exp = now() + 45;
    claims.insert("exp".into(), json!(short_exp));
    let short = s.corp.sign(&claims, json!({}));
    let response = client
        .check(request(&short, "/orders"))
        .await
        .expect("check")
        .into_inner();
    let verifier = Verifier::discover(s.server.admin, ISSUER).await;
    let (_, first) = verifier.verify(&minted(&response));
    assert_eq!(
        first["exp"].as_i64(),
        Some(short_exp),
        "capped at the incoming exp"
    );

    // A longer-lived token of the same identity: the cached token (renew_before 60s: due for
    // renewal already) is not reused; a fresh one lives the full lifetime.
    let long = s.corp.token("bob", "api");
    let response = client
        .check(request(&long, "/orders"))
        .await
        .expect("check")
        .into_inner();
    let (_, second) = verifier.verify(&minted(&response));
    assert_ne!(second["jti"], first["jti"]);
    assert!(second["exp"].as_i64().expect("exp") > short_exp);

    // The same identity and audience again: the cached token, counted as a hit.
    let response = client
        .check(request(&long, "/orders"))
        .await
        .expect("check")
        .into_inner();
    let (_, third) = verifier.verify(&minted(&response));
    assert_eq!(third["jti"], second["jti"], "reused from the cache");
    // The short token again: the cached token ends after it, so a new one is minted.
    let response = client
        .check(request(&short, "/orders"))
        .await
        .expect("check")
        .into_inner();
    let (_, fourth) = verifier.verify(&minted(&response));
    assert_ne!(fourth["jti"], second["jti"]);
    assert!(fourth["exp"].as_i64().expect("exp") <= short_exp);

    let (_, metrics) = s.server.admin_get("/metrics").await;
    assert!(
        metrics.contains("fedauthz_mint_cache_hits_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("fedauthz_mint_tokens_total{backend=\"file\",algorithm=\"ES256\"} 3\n"),
        "{metrics}"
    );
    assert!(metrics.contains("fedauthz_mint_signing_duration_seconds_count{backend=\"file\"} 3\n"));
    assert!(metrics.contains("fedauthz_mint_cache_entries "));
}

#[tokio::test]
async fn discovery_and_jwks_are_cacheable_and_served_on_their_own_listener_when_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    p256_key(dir.path(), "a");
    let corp = TestIssuer::es256("https://corp.example.com/", "c1");
    let partners = TestIssuer::es256("https://partners.example.com/", "p1");
    let keys = "    - {file: '{dir}/a.pem', state: current, initial: true}";
    let yaml = config(dir.path(), &corp, &partners, keys, "")
        .replace(
            "  publish: {max_age: 1s}",
            "  publish: {max_age: 1s, listen: '127.0.0.1:0'}",
        )
        .replace(ISSUER, "http://fedauthz.internal/tenant-a");
    let server = RunningServer::start(&yaml).await;
    let publish = server.publish.expect("a publication listener");
    let raw = |addr, path: &'static str| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut text = String::new();
        stream.read_to_string(&mut text).await.expect("read");
        text.to_ascii_lowercase()
    };
    let discovery = raw(publish, "/tenant-a/.well-known/openid-configuration").await;
    assert!(discovery.starts_with("http/1.1 200"), "{discovery}");
    assert!(discovery.contains("cache-control: public, max-age=1\r\n"));
    assert!(discovery.contains("content-type: application/json\r\n"));
    assert!(
        discovery
            .contains(r#""jwks_uri":"http://fedauthz.internal/tenant-a/.well-known/jwks.json""#)
    );
    assert!(discovery.contains(r#""id_token_signing_alg_values_supported":["es256"]"#));
    let jwks = raw(publish, "/tenant-a/.well-known/jwks.json").await;
    assert!(
        jwks.contains("content-type: application/jwk-set+json\r\n"),
        "{jwks}"
    );
    assert!(jwks.contains("cache-control: public, max-age=1\r\n"));
    assert!(!jwks.contains(r#""d":"#), "public keys only");
    // Nothing else is served there, and the admin listener no longer serves them.
    assert!(raw(publish, "/metrics").await.starts_with("http/1.1 404"));
    let (status, _) = server.admin_get("/tenant-a/.well-known/jwks.json").await;
    assert_eq!(status, 404);
    drop(dir);
}

#[tokio::test]
async fn keys_rotate_next_current_retired_without_a_caching_verifier_meeting_an_unknown_kid() {
    let s = setup().await;
    let mut client = s.server.client().await;
    let incoming = s.corp.token("carol", "api");
    let mint = |client: &mut fedauthz::proto::auth::authorization_client::AuthorizationClient<
        tonic::transport::Channel,
    >| {
        let request = request(&incoming, "/admin");
        let mut client = client.clone();
        async move { minted(&client.check(request).await.expect("check").into_inner()) }
    };
    let signed_by_a = mint(&mut client).await;

    // Step 1: b is published as next; a still signs.
    p256_key(s.dir.path(), "b");
    let published = now();
    let stamp = |t: i64| fedauthz::config::Timestamp::from_unix(t).to_string();
    let keys = format!(
        "    - {{file: '{{dir}}/a.pem', state: current, initial: true}}\n    - {{file: '{{dir}}/b.pem', state: next, published_at: '{}'}}",
        stamp(published)
    );
    let yaml = config(s.dir.path(), &s.corp, &s.partners, &keys, "");
    s.server
        .reloader
        .apply(fedauthz::config::parse_yaml(&yaml, "next.yaml").expect("valid"))
        .expect("next applied");
    let verifier = Verifier::discover(s.server.admin, ISSUER).await;
    assert_eq!(verifier.kids().len(), 2, "a and b are published");
    let still_a = mint(&mut client).await;
    let kid = |token: &str| verifier.verify(token).0["kid"].clone();
    assert_eq!(kid(&still_a), kid(&signed_by_a), "next does not sign");

    // Promoting b before its lead time is refused; the running keys stay.
    let early = format!(
        "    - {{file: '{{dir}}/a.pem', state: retired, retired_at: '{}'}}\n    - {{file: '{{dir}}/b.pem', state: current, published_at: '{}'}}",
        stamp(now()),
        stamp(now())
    );
    let yaml = config(s.dir.path(), &s.corp, &s.partners, &early, "");
    let errors = s
        .server
        .reloader
        .apply(fedauthz::config::parse_yaml(&yaml, "early.yaml").expect("parses"))
        .expect_err("refused");
    assert!(
        errors
            .iter()
            .any(|e| e.path == "mint.keys[1].state" && e.message.contains("key_lead_time")),
        "{errors:?}"
    );
    assert_eq!(kid(&mint(&mut client).await), kid(&signed_by_a));

    // Step 2: after the lead time b signs and a is retired; the verifier still uses the JWKS
    // it fetched in step 1 and knows both.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let rotated = format!(
        "    - {{file: '{{dir}}/a.pem', state: retired, retired_at: '{}'}}\n    - {{file: '{{dir}}/b.pem', state: current, published_at: '{}'}}",
        stamp(now()),
        stamp(published)
    );
    let yaml = config(s.dir.path(), &s.corp, &s.partners, &rotated, "");
    s.server
        .reloader
        .apply(fedauthz::config::parse_yaml(&yaml, "rotated.yaml").expect("valid"))
        .expect("rotation applied");
    let signed_by_b = mint(&mut client).await;
    assert_ne!(kid(&signed_by_b), kid(&signed_by_a), "b signs now");
    verifier.verify(&signed_by_a);
    verifier.verify(&signed_by_b);
    assert_eq!(verifier.fetches, 1, "never refetched");
    let mut fresh = Verifier::discover(s.server.admin, ISSUER).await;
    assert_eq!(
        fresh.kids().len(),
        2,
        "a stays published while its tokens live"
    );

    // Step 3: once every token a signed has expired, a is no longer published.
    let expired = format!(
        "    - {{file: '{{dir}}/a.pem', state: retired, retired_at: '{}'}}\n    - {{file: '{{dir}}/b.pem', state: current, published_at: '{}'}}",
        stamp(now() - 121),
        stamp(published)
    );
    let yaml = config(s.dir.path(), &s.corp, &s.partners, &expired, "");
    s.server
        .reloader
        .apply(fedauthz::config::parse_yaml(&yaml, "expired.yaml").expect("valid"))
        .expect("applied");
    fresh.refresh(s.server.admin).await;
    assert_eq!(fresh.kids(), [kid(&signed_by_b).as_str().expect("kid")]);
}

#[test]
fn templates_can_never_write_registered_claims() {
    let dir = tempfile::tempdir().expect("tempdir");
    let corp = TestIssuer::es256("https://corp.example.com/", "c1");
    let partners = TestIssuer::es256("https://partners.example.com/", "p1");
    let keys = "    - {file: '{dir}/a.pem', state: current, initial: true}";
    for claim in [
        "iss",
        "sub",
        "aud",
        "exp",
        "jti",
        "client_id",
        "scope",
        "fedauthz",
    ] {
        let yaml = config(dir.path(), &corp, &partners, keys, "").replace(
            "claims: {department: '{claims.department}'}",
            &format!("claims: {{{claim}: '{{subject}}'}}"),
        );
        let err = fedauthz::config::parse_yaml(&yaml, "t.yaml").expect_err("refused");
        let text = err.to_string();
        assert!(
            text.contains(&format!("mint.claims.{claim}: ")) && text.contains("cannot be set"),
            "{claim}: {text}"
        );
    }
}

#[tokio::test]
async fn a_client_sent_copy_of_the_minted_token_header_never_reaches_the_upstream() {
    let dir = tempfile::tempdir().expect("tempdir");
    p256_key(dir.path(), "a");
    let corp = TestIssuer::es256("https://corp.example.com/", "c1");
    let partners = TestIssuer::es256("https://partners.example.com/", "p1");
    let keys = "    - {file: '{dir}/a.pem', state: current, initial: true}";
    let yaml = config(dir.path(), &corp, &partners, keys, "").replace(
        "  lifetime: 2m",
        "  lifetime: 2m\n  header: x-internal-token",
    );
    let server = RunningServer::start(&yaml).await;
    let mut client = server.client().await;
    let token = corp.token("dave", "api");
    let forged = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.";
    let mut with_forgery = check_request(&[
        ("authorization", &format!("Bearer {token}")),
        ("x-internal-token", forged),
    ]);
    let response = client
        .check(with_forgery.clone())
        .await
        .expect("check")
        .into_inner();
    let headers = upstream_headers(&response);
    let minted = headers.get("x-internal-token").expect("minted token");
    assert_ne!(minted, forged);
    assert!(
        !minted.starts_with("Bearer "),
        "other headers carry the bare token"
    );
    assert!(removed(&response).contains(&"authorization".to_owned()));
    // A route that mints nothing still removes the forged copy.
    if let Some(http) = with_forgery
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
    {
        http.path = "/public".into();
    }
    let response = client
        .check(with_forgery)
        .await
        .expect("check")
        .into_inner();
    assert!(removed(&response).contains(&"x-internal-token".to_owned()));
    assert!(!upstream_headers(&response).contains_key("x-internal-token"));
    drop(dir);
}

#[test]
fn a_changed_key_file_reloads_the_keys_and_a_current_key_swapped_in_place_is_refused() {
    use common::process::Process;
    let dir = tempfile::tempdir().expect("tempdir");
    p256_key(dir.path(), "a");
    p256_key(dir.path(), "b");
    let corp = TestIssuer::es256("https://corp.example.com/", "c1");
    let config = dir.path().join("fedauthz.yaml");
    std::fs::write(
        &config,
        format!(
            "server: {{grpc_listen: '127.0.0.1:0', admin_listen: '127.0.0.1:0', config_poll_interval: 1s}}\nissuers:\n  - {{id: corp, issuer: '{}', audiences: [api], keys: {{jwks: {}}}}}\nmint:\n  issuer: {ISSUER}\n  audience: orders\n  keys:\n    - {{file: '{}', state: current, initial: true}}\n    - {{file: '{}', state: next, published_at: '{}'}}\n",
            corp.iss,
            corp.jwks(),
            dir.path().join("a.pem").display(),
            dir.path().join("b.pem").display(),
            fedauthz::config::Timestamp::from_unix(now()),
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
    let log: Value = serde_json::from_str(&line).expect("JSON");
    let admin: std::net::SocketAddr = log["fields"]["admin"]
        .as_str()
        .expect("admin address")
        .parse()
        .expect("addr");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let kids = || runtime.block_on(async { Verifier::discover(admin, ISSUER).await.kids() });
    let before = kids();
    assert_eq!(before.len(), 2);

    // The next key's file is replaced (a Secret update): the JWKS publishes the new key.
    p256_key(dir.path(), "b");
    server.wait_for("configuration reloaded");
    let after = kids();
    assert_eq!(after.first(), before.first(), "the current key stays");
    assert_ne!(
        after.get(1),
        before.get(1),
        "the next key is the new file's"
    );

    // The current key's file is replaced in place: a key no verifier has seen would sign, so
    // the reload is refused and the running keys stay.
    p256_key(dir.path(), "a");
    let refused = server.wait_for("configuration refused");
    assert!(
        refused.contains("mint.keys[0]") && refused.contains("never published"),
        "{refused}"
    );
    assert_eq!(kids(), after);
    server.signal("TERM");
    assert!(server.wait_exit().success());
}

#[test]
fn explain_shows_the_mint_step_and_never_the_minted_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    p256_key(dir.path(), "a");
    let corp = TestIssuer::es256("https://corp.example.com/", "c1");
    let partners = TestIssuer::es256("https://partners.example.com/", "p1");
    let keys = "    - {file: '{dir}/a.pem', state: current, initial: true}";
    let file = dir.path().join("fedauthz.yaml");
    std::fs::write(&file, config(dir.path(), &corp, &partners, keys, "")).expect("write");
    let explain = |path: &str| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_fedauthz"))
            .args(["explain", "--config"])
            .arg(&file)
            .args(["--path", path, "--token", &corp.token("erin", "api")])
            .output()
            .expect("run explain");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let out = explain("/orders");
    let step = out
        .lines()
        .find(|line| line.trim_start().starts_with("mint "))
        .unwrap_or_else(|| panic!("no mint step in\n{out}"));
    assert!(step.contains("ok (jti "), "{step}");
    assert!(
        out.contains("  set     authorization: (the minted token)"),
        "{out}"
    );
    assert!(!out.contains("eyJ"), "no token text in\n{out}");
    let out = explain("/public");
    assert!(out.contains("none (this route mints no token)"), "{out}");
}
