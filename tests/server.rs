//! The server on loopback, driven over gRPC: keys fetched from a real HTTPS JWKS server and
//! read from a local file, two issuers at once, every denial reason, health and readiness,
//! reload and graceful shutdown.

mod common;

use std::time::Duration;

use common::{
    Answer, JwksServer, RunningServer, TestIssuer, bearer, check_request, denied_header,
    denied_status, metadata, reason,
};
use fedauthz::proto::auth::check_response::HttpResponse;
use serde_json::json;

const AUD_A: &str = "api://orders";
const AUD_B: &str = "https://partners.example.com";

/// Issuer A: RS256 keys over HTTPS. Issuer B: ES256 keys from a file, RFC 9068 typing, a
/// required claim, and tokens also accepted from an IAP-style header.
struct TwoIssuers {
    a: TestIssuer,
    b: TestIssuer,
    jwks: JwksServer,
    _dir: tempfile::TempDir,
    yaml: String,
}

async fn two_issuers() -> TwoIssuers {
    let a = TestIssuer::rs256("https://login.example.com/tenant/v2.0", "a-key-1");
    let b = TestIssuer::es256("https://partners.example.com/", "b-key-1");
    let jwks = JwksServer::start(Answer::Json(a.jwks().to_string())).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &jwks.ca_pem).expect("write CA");
    let b_jwks = dir.path().join("b.jwks.json");
    std::fs::write(&b_jwks, b.jwks().to_string()).expect("write JWKS");
    let yaml = format!(
        r#"
issuers:
  - id: issuer-a
    issuer: {a_iss}
    keys: {{ jwks_uri: "{url}", ca_file: "{ca}" }}
    audiences: ["{AUD_A}"]
    max_lifetime: 1h
  - id: issuer-b
    issuer: {b_iss}
    keys: {{ jwks_file: "{b_file}" }}
    audiences: ["{AUD_B}"]
    token_types: [at+jwt]
    required_claims: {{ client_id: [partner-portal, partner-batch] }}
    token_locations:
      - {{ header: authorization, prefix: "Bearer " }}
      - {{ header: x-goog-iap-jwt-assertion }}
"#,
        a_iss = a.iss,
        url = jwks.url,
        ca = ca.display(),
        b_iss = b.iss,
        b_file = b_jwks.display(),
    );
    TwoIssuers {
        a,
        b,
        jwks,
        _dir: dir,
        yaml,
    }
}

fn b_token(b: &TestIssuer, client_id: &str) -> String {
    let mut claims = b.claims("partner-7", AUD_B);
    claims.insert("client_id".into(), client_id.into());
    b.sign(&claims, json!({"typ": "at+jwt"}))
}

#[tokio::test]
async fn allows_valid_tokens_from_both_issuers_with_identity_headers() {
    let t = two_issuers().await;
    let server = RunningServer::start(&t.yaml).await;
    server.wait_ready(200, Duration::from_secs(10)).await;
    let mut client = server.client().await;

    let response = client
        .check(bearer(&t.a.token("alice", AUD_A)))
        .await
        .expect("rpc")
        .into_inner();
    assert_eq!(response.status.as_ref().map(|s| s.code), Some(0));
    assert_eq!(metadata(&response, "decision"), Some("allow"));
    assert_eq!(metadata(&response, "reason"), Some("token_valid"));
    assert_eq!(metadata(&response, "issuer"), Some("issuer-a"));
    assert_eq!(metadata(&response, "subject"), Some("alice"));
    let Some(HttpResponse::OkResponse(ok)) = &response.http_response else {
        panic!("expected ok_response: {response:?}");
    };
    let set: Vec<_> = ok
        .headers
        .iter()
        .map(|h| {
            let header = h.header.as_ref().expect("header");
            (header.key.as_str(), header.value.as_str(), h.append)
        })
        .collect();
    assert_eq!(
        set,
        [
            ("x-auth-subject", "alice", Some(false)),
            ("x-auth-issuer", "issuer-a", Some(false))
        ]
    );
    assert_eq!(ok.headers_to_remove, ["authorization"]);

    // Issuer B, through its provider header: allowed, and that header is the one removed.
    let token = b_token(&t.b, "partner-portal");
    let request = check_request(&[("x-goog-iap-jwt-assertion", &token)]);
    let response = client.check(request).await.expect("rpc").into_inner();
    assert_eq!(reason(&response), "token_valid", "{response:?}");
    assert_eq!(metadata(&response, "issuer"), Some("issuer-b"));
    let Some(HttpResponse::OkResponse(ok)) = &response.http_response else {
        panic!()
    };
    assert_eq!(ok.headers_to_remove, ["x-goog-iap-jwt-assertion"]);
    assert!(
        t.jwks.hits() >= 1,
        "keys of issuer A came from the HTTPS server"
    );
}

#[tokio::test]
async fn a_spoofed_identity_header_is_overwritten() {
    let t = two_issuers().await;
    let server = RunningServer::start(&t.yaml).await;
    server.wait_ready(200, Duration::from_secs(10)).await;
    let mut client = server.client().await;
    let token = t.a.token("alice", AUD_A);
    let request = check_request(&[
        ("authorization", &format!("Bearer {token}")),
        ("x-auth-subject", "admin"),
        ("x-auth-issuer", "root"),
    ]);
    let response = client.check(request).await.expect("rpc").into_inner();
    let Some(HttpResponse::OkResponse(ok)) = &response.http_response else {
        panic!()
    };
    for header in &ok.headers {
        assert_eq!(
            header.append,
            Some(false),
            "identity headers must overwrite, never append"
        );
    }
    let subject = ok
        .headers
        .iter()
        .filter_map(|h| h.header.as_ref())
        .find(|h| h.key == "x-auth-subject");
    assert_eq!(subject.map(|h| h.value.as_str()), Some("alice"));
}

#[tokio::test]
async fn each_denial_reason_over_grpc() {
    let t = two_issuers().await;
    let server = RunningServer::start(&t.yaml).await;
    server.wait_ready(200, Duration::from_secs(10)).await;
    let mut client = server.client().await;
    let now = common::now();
    let (a, b) = (&t.a, &t.b);
    let stranger = TestIssuer::rs256("https://evil.example.com", "a-key-1");

    let with =
        |claims: &mut serde_json::Map<String, serde_json::Value>, k: &str, v: serde_json::Value| {
            if v.is_null() {
                claims.remove(k);
            } else {
                claims.insert(k.into(), v);
            }
        };
    let a_claims = |k: &str, v: serde_json::Value| {
        let mut c = a.claims("alice", AUD_A);
        with(&mut c, k, v);
        a.sign(&c, json!({}))
    };
    let b_claims = |k: &str, v: serde_json::Value| {
        let mut c = b.claims("partner-7", AUD_B);
        c.insert("client_id".into(), "partner-portal".into());
        with(&mut c, k, v);
        b.sign(&c, json!({"typ": "at+jwt"}))
    };
    let good = a.token("alice", AUD_A);
    let (head, rest) = good.split_once('.').expect("token");
    let tampered_sig = format!("{}AAAA", &good[..good.len() - 4]);

    let cases: Vec<(&str, fedauthz::proto::auth::CheckRequest, i32)> = vec![
        ("token_missing", check_request(&[]), 401),
        (
            "token_missing",
            check_request(&[("authorization", "Basic dXNlcjpwdw==")]),
            401,
        ),
        (
            "credential_ambiguous",
            check_request(&[("authorization", &format!("Bearer {good},Bearer {good}"))]),
            400,
        ),
        ("token_malformed", bearer("not-a-jwt"), 401),
        (
            "token_malformed",
            bearer(&format!("{head}.{rest}.extra")),
            401,
        ),
        (
            "token_encrypted",
            bearer("eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d"),
            401,
        ),
        ("token_too_large", bearer(&"a".repeat(9000)), 401),
        (
            "header_not_allowed",
            bearer(&a.sign(
                &a.claims("alice", AUD_A),
                json!({"jku": "https://evil/jwks"}),
            )),
            401,
        ),
        (
            "crit_unsupported",
            bearer(&a.sign(&a.claims("alice", AUD_A), json!({"crit": ["exp"]}))),
            401,
        ),
        (
            "issuer_unknown",
            bearer(&stranger.token("alice", AUD_A)),
            401,
        ),
        ("issuer_unknown", bearer(&a_claims("iss", json!(null))), 401),
        (
            "token_location_not_allowed",
            check_request(&[("x-goog-iap-jwt-assertion", &good)]),
            401,
        ),
        (
            "key_unknown",
            bearer(&a.sign(&a.claims("alice", AUD_A), json!({"kid": "rotated-away"}))),
            401,
        ),
        (
            "algorithm_not_allowed",
            bearer(&a.sign(&a.claims("alice", AUD_A), json!({"alg": "PS256"}))),
            401,
        ),
        ("signature_invalid", bearer(&tampered_sig), 401),
        (
            "token_expired",
            bearer(&a_claims("exp", json!(now - 120))),
            401,
        ),
        (
            "token_not_yet_valid",
            bearer(&a_claims("nbf", json!(now + 600))),
            401,
        ),
        (
            "token_issued_in_future",
            bearer(&a_claims("iat", json!(now + 600))),
            401,
        ),
        (
            "token_lifetime_exceeded",
            bearer(&a_claims("exp", json!(now + 7200))),
            401,
        ),
        (
            "audience_mismatch",
            bearer(&a_claims("aud", json!("api://billing"))),
            401,
        ),
        (
            "audience_mismatch",
            bearer(&a_claims("aud", json!(null))),
            401,
        ),
        ("claim_missing", bearer(&a_claims("exp", json!(null))), 401),
        ("claim_missing", bearer(&a_claims("sub", json!(null))), 401),
        (
            "claim_invalid",
            bearer(&a_claims("exp", json!("tomorrow"))),
            401,
        ),
        ("claim_invalid", bearer(&a_claims("exp", json!(1e300))), 401),
        (
            "token_type_not_allowed",
            bearer(&b.sign(&b.claims("partner-7", AUD_B), json!({"typ": "JWT"}))),
            401,
        ),
        (
            "claim_mismatch",
            bearer(&b_claims("client_id", json!("someone-else"))),
            401,
        ),
        (
            "claim_mismatch",
            bearer(&b_claims("client_id", json!(null))),
            401,
        ),
    ];
    for (expected, request, status) in cases {
        let response = client
            .check(request)
            .await
            .expect("a denial is still an OK rpc")
            .into_inner();
        assert_eq!(reason(&response), expected, "{response:?}");
        assert_eq!(metadata(&response, "decision"), Some("deny"));
        assert_ne!(
            response.status.as_ref().map_or(0, |s| s.code),
            0,
            "{expected}: status must be non-zero"
        );
        assert_eq!(denied_status(&response), status, "{expected}");
        let challenge = denied_header(&response, "www-authenticate").unwrap_or_default();
        match expected {
            "token_missing" => assert_eq!(challenge, "Bearer realm=\"fedauthz\""),
            "credential_ambiguous" => assert!(
                challenge.contains("error=\"invalid_request\""),
                "{challenge}"
            ),
            _ => assert!(
                challenge.contains("error=\"invalid_token\""),
                "{expected}: {challenge}"
            ),
        }
    }
}

#[tokio::test]
async fn context_extensions_select_the_route_and_its_issuers() {
    let t = two_issuers().await;
    let yaml = format!(
        "{}routes:
  - name: partners
    match: {{ context_extensions: {{ api: partners }} }}
    require: {{ issuers: [issuer-b] }}
  - name: health
    match: {{ context_extensions: {{ api: health }} }}
    allow_anonymous: true
  - name: internal
    match: {{ context_extensions: {{ api: internal }} }}
",
        t.yaml
    );
    let server = RunningServer::start(&yaml).await;
    server.wait_ready(200, Duration::from_secs(10)).await;
    let mut client = server.client().await;
    let on_route = |token: Option<&str>, api: &str| {
        let mut request = match token {
            Some(token) => bearer(token),
            None => check_request(&[]),
        };
        if let Some(attributes) = request.attributes.as_mut() {
            attributes
                .context_extensions
                .insert("api".to_owned(), api.to_owned());
        }
        request
    };
    let a_token = t.a.token("alice", AUD_A);
    let b_token = b_token(&t.b, "partner-portal");

    // The partners route accepts issuer-b only: issuer-a's valid token is forbidden (403).
    let response = client
        .check(on_route(Some(&b_token), "partners"))
        .await
        .expect("rpc")
        .into_inner();
    assert_eq!(reason(&response), "token_valid");
    assert_eq!(metadata(&response, "route"), Some("partners"));
    let response = client
        .check(on_route(Some(&a_token), "partners"))
        .await
        .expect("rpc")
        .into_inner();
    assert_eq!(reason(&response), "requirement_not_met");
    assert_eq!(denied_status(&response), 403);
    assert!(
        denied_header(&response, "www-authenticate")
            .is_some_and(|h| h.contains("error=\"insufficient_scope\"")),
    );

    // The internal route accepts every issuer; without a token it is a 401.
    let response = client
        .check(on_route(Some(&a_token), "internal"))
        .await
        .expect("rpc")
        .into_inner();
    assert_eq!(reason(&response), "token_valid");
    let response = client
        .check(on_route(None, "internal"))
        .await
        .expect("rpc")
        .into_inner();
    assert_eq!(reason(&response), "token_missing");
    assert_eq!(denied_status(&response), 401);

    // The health route lets anonymous requests through.
    let response = client
        .check(on_route(None, "health"))
        .await
        .expect("rpc")
        .into_inner();
    assert_eq!(reason(&response), "anonymous");
    assert_eq!(metadata(&response, "route"), Some("health"));

    // No route for this request: denied by default, whatever the token.
    let response = client
        .check(on_route(Some(&a_token), "unknown"))
        .await
        .expect("rpc")
        .into_inner();
    assert_eq!(reason(&response), "no_route_matched");
    assert_eq!(denied_status(&response), 403);
}

#[tokio::test]
async fn an_hmac_issuer_verifies_with_its_configured_secret_and_kid() {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

    let secret = [7_u8; 32];
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("secret");
    std::fs::write(&file, STANDARD.encode(secret)).expect("write secret");
    let yaml = format!(
        "issuers:\n  - id: auth0\n    issuer: https://tenant.auth0.example/\n    hmac_secret: {{ file: \"{}\", kid: hs-1 }}\n    algorithms: [HS256]\n    audiences: [orders]\n",
        file.display()
    );
    let server = RunningServer::start(&yaml).await;
    server.wait_ready(200, Duration::from_secs(10)).await;
    let mut client = server.client().await;

    let now = common::now();
    let sign = |header: serde_json::Value| {
        let claims = json!({"iss": "https://tenant.auth0.example/", "sub": "m2m", "aud": "orders",
            "iat": now, "exp": now + 60});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let key = openssl::pkey::PKey::hmac(&secret).expect("hmac key");
        let mut signer = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &key)
            .expect("signer");
        signer.update(input.as_bytes()).expect("update");
        format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(signer.sign_to_vec().expect("sign"))
        )
    };
    for (header, expected) in [
        (json!({"alg": "HS256", "kid": "hs-1"}), "token_valid"),
        // The issuer has exactly one key, so a token without kid may use it.
        (json!({"alg": "HS256"}), "token_valid"),
        (json!({"alg": "HS256", "kid": "hs-2"}), "key_unknown"),
        (
            json!({"alg": "HS384", "kid": "hs-1"}),
            "algorithm_not_allowed",
        ),
    ] {
        let response = client
            .check(bearer(&sign(header.clone())))
            .await
            .expect("rpc")
            .into_inner();
        assert_eq!(reason(&response), expected, "{header}");
    }
}

#[tokio::test]
async fn keys_of_two_issuers_never_cross() {
    let t = two_issuers().await;
    let server = RunningServer::start(&t.yaml).await;
    server.wait_ready(200, Duration::from_secs(10)).await;
    let mut client = server.client().await;

    // B signs a token claiming to be from A, naming B's key: A has no such key.
    let mut claims = t.b.claims("mallory", AUD_A);
    claims.insert("iss".into(), t.a.iss.clone().into());
    let forged = t.b.sign(&claims, json!({}));
    let response = client
        .check(bearer(&forged))
        .await
        .expect("rpc")
        .into_inner();
    assert_eq!(reason(&response), "key_unknown");
    assert_eq!(metadata(&response, "issuer"), Some("issuer-a"));

    // Same, but naming A's kid: A's key is RS256-only, so B's ES256 token cannot use it.
    let forged = t.b.sign(&claims, json!({"kid": t.a.kid}));
    let response = client
        .check(bearer(&forged))
        .await
        .expect("rpc")
        .into_inner();
    assert_eq!(reason(&response), "algorithm_not_allowed");

    // A's key signing a token that claims to be from B, with B's kid.
    let mut claims = t.a.claims("mallory", AUD_B);
    claims.insert("iss".into(), t.b.iss.clone().into());
    claims.insert("client_id".into(), "partner-portal".into());
    let forged = t.a.sign(
        &claims,
        json!({"kid": t.b.kid, "alg": "ES256", "typ": "at+jwt"}),
    );
    let response = client
        .check(bearer(&forged))
        .await
        .expect("rpc")
        .into_inner();
    assert_eq!(reason(&response), "signature_invalid");
    assert_eq!(metadata(&response, "issuer"), Some("issuer-b"));
}

#[tokio::test]
async fn not_ready_until_every_issuer_has_keys() {
    let t = two_issuers().await;
    t.jwks.set(Answer::Status(503));
    let server = RunningServer::start(&t.yaml).await;

    let (status, body) = server.admin_get("/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("issuer-a"), "{body}");
    assert_eq!(
        server.admin_get("/healthz").await.0,
        200,
        "live while not ready"
    );

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let serving = |status: i32| {
        status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    };
    let health_status = |mut health: tonic_health::pb::health_client::HealthClient<
        tonic::transport::Channel,
    >| async move {
        health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "envoy.service.auth.v3.Authorization".into(),
            })
            .await
            .expect("health rpc")
            .into_inner()
            .status
    };
    assert!(!serving(health_status(health.clone()).await));

    // A's tokens are answered 503 (not the client's fault) while its keys are missing.
    let mut client = server.client().await;
    let response = client
        .check(bearer(&t.a.token("alice", AUD_A)))
        .await
        .expect("rpc")
        .into_inner();
    assert_eq!(reason(&response), "keys_unavailable");
    assert_eq!(denied_status(&response), 503);
    // B's keys are local, so B works already.
    let response = client
        .check(bearer(&b_token(&t.b, "partner-batch")))
        .await
        .expect("rpc")
        .into_inner();
    assert_eq!(reason(&response), "token_valid");

    t.jwks.set(Answer::Json(t.a.jwks().to_string()));
    server.wait_ready(200, Duration::from_secs(15)).await;
    let mut serving_now = false;
    for _ in 0..50 {
        if serving(health_status(health.clone()).await) {
            serving_now = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(serving_now, "gRPC health turns SERVING once keys are in");
    let response = client
        .check(bearer(&t.a.token("alice", AUD_A)))
        .await
        .expect("rpc")
        .into_inner();
    assert_eq!(reason(&response), "token_valid");
    health = tonic_health::pb::health_client::HealthClient::new(
        tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect"),
    );
    assert!(serving(health_status(health).await));
}

#[tokio::test]
async fn a_failed_refresh_keeps_the_last_good_keys() {
    let t = two_issuers().await;
    let yaml = t
        .yaml
        .replace("ca_file:", "refresh_interval: 10s, ca_file:");
    let server = RunningServer::start(&yaml).await;
    server.wait_ready(200, Duration::from_secs(10)).await;
    t.jwks.set(Answer::Json("{\"keys\": \"garbage\"}".into()));
    let mut client = server.client().await;
    let response = client
        .check(bearer(&t.a.token("alice", AUD_A)))
        .await
        .expect("rpc")
        .into_inner();
    assert_eq!(reason(&response), "token_valid");
}

#[tokio::test]
async fn reload_applies_good_configs_and_keeps_the_last_good_one() {
    let t = two_issuers().await;
    let server = RunningServer::start(&t.yaml).await;
    server.wait_ready(200, Duration::from_secs(10)).await;
    let mut client = server.client().await;
    let token = t.a.token("alice", AUD_A);

    let bad = fedauthz::config::parse_yaml(&t.yaml, "x").map(|mut c| {
        c.issuers[1].keys = Some(fedauthz::config::KeySource {
            jwks_file: Some("/nonexistent/keys.json".into()),
            ..c.issuers[1].keys.clone().expect("keys")
        });
        c
    });
    let errors = server
        .reloader
        .apply(bad.expect("parses"))
        .expect_err("refused");
    assert!(
        errors[0]
            .to_string()
            .starts_with("issuers[1].keys.jwks_file: cannot read"),
        "{errors:?}"
    );
    let response = client
        .check(bearer(&token))
        .await
        .expect("rpc")
        .into_inner();
    assert_eq!(
        reason(&response),
        "token_valid",
        "the running config is kept"
    );

    let hits_before = t.jwks.hits();
    let stricter = fedauthz::config::parse_yaml(&t.yaml.replace(AUD_A, "api://orders-v2"), "x")
        .expect("valid");
    server.reloader.apply(stricter).expect("applied");
    let response = client
        .check(bearer(&token))
        .await
        .expect("rpc")
        .into_inner();
    assert_eq!(
        reason(&response),
        "audience_mismatch",
        "the new config is in force"
    );
    assert_eq!(
        t.jwks.hits(),
        hits_before,
        "unchanged remote keys are kept, not refetched"
    );
}

#[tokio::test]
async fn shutdown_finishes_in_flight_checks_then_stops() {
    let t = two_issuers().await;
    let server = RunningServer::start(&t.yaml).await;
    server.wait_ready(200, Duration::from_secs(10)).await;
    let client = server.client().await;
    let token = t.a.token("alice", AUD_A);
    let mut calls = Vec::new();
    for _ in 0..64 {
        let mut client = client.clone();
        let request = bearer(&token);
        calls.push(tokio::spawn(async move { client.check(request).await }));
    }
    // Let the calls reach the server before shutdown starts.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let grpc = server.grpc;
    tokio::time::timeout(Duration::from_secs(5), server.shutdown())
        .await
        .expect("shutdown within the grace period")
        .expect("clean shutdown");
    for call in calls {
        let response = call
            .await
            .expect("task")
            .expect("in-flight check completed")
            .into_inner();
        assert_eq!(reason(&response), "token_valid");
    }
    assert!(
        tokio::net::TcpStream::connect(grpc).await.is_err(),
        "listener closed"
    );
}

#[tokio::test]
async fn metrics_count_checks_keys_and_reloads() {
    let t = two_issuers().await;
    let server = RunningServer::start(&t.yaml).await;
    server.wait_ready(200, Duration::from_secs(10)).await;
    let mut client = server.client().await;
    let mut expired = t.a.claims("alice", AUD_A);
    expired.insert("iat".into(), json!(common::now() - 7200));
    expired.insert("exp".into(), json!(common::now() - 3600));
    let expired = t.a.sign(&expired, json!({}));
    for request in [
        bearer(&t.a.token("alice", AUD_A)),
        bearer(&t.a.token("bob", AUD_A)),
        bearer(&expired),
        check_request(&[]),
    ] {
        client.check(request).await.expect("rpc");
    }
    let config = fedauthz::config::parse_yaml(&t.yaml, "x").expect("parses");
    server.reloader.apply(config).expect("applied");

    let (status, body) = server.admin_get("/metrics").await;
    assert_eq!(status, 200);
    for line in [
        r#"fedauthz_checks_total{transport="grpc",decision="allow",reason="token_valid",issuer="issuer-a"} 2"#,
        r#"fedauthz_checks_total{transport="grpc",decision="deny",reason="token_expired",issuer="issuer-a"} 1"#,
        r#"fedauthz_checks_total{transport="grpc",decision="deny",reason="token_missing",issuer=""} 1"#,
        r#"fedauthz_check_duration_seconds_count{transport="grpc"} 4"#,
        r#"fedauthz_config_reloads_total{result="applied"} 1"#,
        r#"fedauthz_keys_loaded{issuer="issuer-a"} 1"#,
        r#"fedauthz_keys_loaded{issuer="issuer-b"} 1"#,
        r#"fedauthz_key_fetches_total{issuer="issuer-a",result="ok"} 1"#,
        r#"fedauthz_build_info{version="0.1.0"} 1"#,
    ] {
        assert!(
            body.lines().any(|l| l == line),
            "missing {line:?} in:\n{body}"
        );
    }
    assert!(
        body.contains("fedauthz_key_set_age_seconds{issuer=\"issuer-a\"}"),
        "{body}"
    );
    // No subject, token or path ever becomes a label.
    assert!(
        !body.contains("alice") && !body.contains("/orders"),
        "{body}"
    );
}

#[tokio::test]
async fn metrics_count_token_cache_hits_misses_and_entries() {
    let t = two_issuers().await;
    let server = RunningServer::start(&t.yaml).await;
    server.wait_ready(200, Duration::from_secs(10)).await;
    let mut client = server.client().await;
    let alice = t.a.token("alice", AUD_A);
    let mut expired = t.a.claims("carol", AUD_A);
    expired.insert("iat".into(), json!(common::now() - 7200));
    expired.insert("exp".into(), json!(common::now() - 3600));
    let expired = t.a.sign(&expired, json!({}));
    // alice: a miss, then two hits; bob: a miss; the expired token: a miss each time (never
    // cached); no credential: no lookup at all.
    for (request, expected) in [
        (bearer(&alice), "token_valid"),
        (bearer(&alice), "token_valid"),
        (bearer(&t.a.token("bob", AUD_A)), "token_valid"),
        (bearer(&alice), "token_valid"),
        (bearer(&expired), "token_expired"),
        (bearer(&expired), "token_expired"),
        (check_request(&[]), "token_missing"),
    ] {
        let response = client.check(request).await.expect("rpc").into_inner();
        assert_eq!(reason(&response), expected);
    }
    let metric = |body: &str, name: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{body}"))
    };
    let (status, body) = server.admin_get("/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(metric(&body, "fedauthz_token_cache_hits_total"), 2);
    assert_eq!(metric(&body, "fedauthz_token_cache_misses_total"), 4);
    assert_eq!(metric(&body, "fedauthz_token_cache_entries"), 2);

    // A reload empties the cache but keeps the counters.
    let config = fedauthz::config::parse_yaml(&t.yaml, "x").expect("parses");
    server.reloader.apply(config).expect("applied");
    let (_, body) = server.admin_get("/metrics").await;
    assert_eq!(metric(&body, "fedauthz_token_cache_entries"), 0);
    assert_eq!(metric(&body, "fedauthz_token_cache_hits_total"), 2);
    let response = client
        .check(bearer(&alice))
        .await
        .expect("rpc")
        .into_inner();
    assert_eq!(reason(&response), "token_valid");
    let (_, body) = server.admin_get("/metrics").await;
    assert_eq!(metric(&body, "fedauthz_token_cache_misses_total"), 5);
    assert_eq!(metric(&body, "fedauthz_token_cache_entries"), 1);
}
