//! API keys through the real server: identities and route rules, every refusal with its own
//! reason, locations, a token and a key together, removal upstream, query keys, HMAC sets,
//! key files swapped while the server runs, the per-set metrics and `fedauthz apikey`.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::process::Process;
use common::{RunningServer, TestIssuer, metadata, now, reason, upstream_headers};
use fedauthz::proto::auth::attribute_context::{HttpRequest, Request as AttrRequest};
use fedauthz::proto::auth::check_response::HttpResponse;
use fedauthz::proto::auth::{AttributeContext, CheckRequest, CheckResponse};
use serde_json::Value;

/// A key as `fedauthz apikey` makes it, and its entry (the digest only).
struct Key {
    text: String,
    entry: Value,
}

/// Runs `fedauthz apikey` with `args`: the printed key and entry.
fn generate(args: &[&str]) -> Key {
    let (text, entry) = common::api_key(args, serde_json::json!({}));
    Key { text, entry }
}

/// The entry of `key` with `extra` fields merged in.
fn entry(key: &Key, extra: Value) -> String {
    let mut entry = key.entry.clone();
    if let (Some(fields), Some(extra)) = (entry.as_object_mut(), extra.as_object()) {
        fields.extend(extra.clone());
    }
    entry.to_string()
}

fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(AttrRequest {
                time: None,
                http: Some(HttpRequest {
                    method: method.into(),
                    path: path.into(),
                    host: "api.example.com".into(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                    ..HttpRequest::default()
                }),
            }),
            ..AttributeContext::default()
        }),
    }
}

fn removed(response: &CheckResponse) -> (Vec<String>, Vec<String>) {
    match &response.http_response {
        Some(HttpResponse::OkResponse(ok)) => (
            ok.headers_to_remove.clone(),
            ok.query_parameters_to_remove.clone(),
        ),
        _ => (Vec::new(), Vec::new()),
    }
}

struct Setup {
    server: RunningServer,
    partner: Key,
    partner_next: Key,
    narrow: Key,
    expired: Key,
    future: Key,
    revoked: Key,
    legacy: Key,
    issuer: TestIssuer,
}

async fn setup() -> Setup {
    let partner = generate(&[
        "--id",
        "acme-2026-12",
        "--subject",
        "acme",
        "--client",
        "acme-billing",
        "--scope",
        "orders.read",
        "--scope",
        "orders.write",
    ]);
    // Rotation: a second key for the same client, valid at the same time.
    let partner_next = generate(&[
        "--id",
        "acme-2027-01",
        "--subject",
        "acme",
        "--scope",
        "orders.read",
    ]);
    let narrow = generate(&[
        "--id",
        "reports",
        "--subject",
        "reporter",
        "--scope",
        "orders.read",
    ]);
    let expired = generate(&["--id", "old", "--subject", "old", "--scope", "orders.read"]);
    let future = generate(&[
        "--id",
        "soon",
        "--subject",
        "soon",
        "--scope",
        "orders.read",
    ]);
    let revoked = generate(&[
        "--id",
        "leaked",
        "--subject",
        "leaked",
        "--scope",
        "orders.read",
    ]);
    let legacy = generate(&[
        "--prefix",
        "lgc_",
        "--id",
        "batch",
        "--subject",
        "batch-job",
    ]);
    let issuer = TestIssuer::es256("https://login.example.com/", "k1");
    let past = |s: i64| {
        humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(now() + s).unwrap()),
        )
        .to_string()
    };
    let yaml = format!(
        r#"
response:
  realm: orders
  headers: {{ x-auth-client: "{{client}}", x-auth-scopes: "{{scopes}}" }}
issuers:
  - id: corp
    issuer: {iss}
    keys: {{ jwks: {jwks} }}
    audiences: [orders-api]
api_keys:
  - id: partners
    keys:
      - {partner}
      - {partner_next}
      - {narrow}
      - {expired}
      - {future}
      - {revoked}
  - id: legacy
    prefix: lgc_
    locations: [{{ header: authorization, scheme: ApiKey }}, {{ query: api_key }}]
    allow_query_parameter: true
    keys:
      - {legacy}
routes:
  - name: reports
    match: {{ paths: ["/reports*"] }}
    require: {{ scopes: [orders.read] }}
  - name: mixed-key-wins
    match: {{ paths: ["/mixed/key*"] }}
    prefer_credential: api_key
  - name: mixed-jwt-wins
    match: {{ paths: ["/mixed/jwt*"] }}
    prefer_credential: jwt
  - name: orders-write
    match: {{ paths: ["/orders*"], methods: [POST, DELETE] }}
    require: {{ issuers: [partners], scopes: [orders.write] }}
  - name: orders-read
    match: {{ paths: ["/orders*", "/mixed*"] }}
  - name: batch
    match: {{ paths: ["/batch*"] }}
    require: {{ issuers: [legacy] }}
"#,
        iss = issuer.iss,
        jwks = issuer.jwks(),
        partner = partner.entry,
        partner_next = partner_next.entry,
        narrow = entry(&narrow, serde_json::json!({"routes": ["reports"]})),
        expired = entry(&expired, serde_json::json!({"expires": past(-60)})),
        future = entry(&future, serde_json::json!({"not_before": past(3600)})),
        revoked = entry(&revoked, serde_json::json!({"revoked": true})),
        legacy = legacy.entry,
    );
    let server = RunningServer::start(&yaml).await;
    Setup {
        server,
        partner,
        partner_next,
        narrow,
        expired,
        future,
        revoked,
        legacy,
        issuer,
    }
}

#[tokio::test]
async fn a_key_grants_its_identity_through_the_same_routes_and_headers_as_a_token() {
    let s = setup().await;
    let mut client = s.server.client().await;
    let check = |method: &'static str, path: &'static str, key: &str| {
        let key = key.to_owned();
        let mut client = client.clone();
        async move {
            client
                .check(request(
                    method,
                    path,
                    &[("x-api-key", &key), ("x-auth-subject", "mallory")],
                ))
                .await
                .expect("rpc")
                .into_inner()
        }
    };
    let response = check("GET", "/orders/1", &s.partner.text).await;
    assert_eq!(reason(&response), "token_valid");
    let headers = upstream_headers(&response);
    assert_eq!(headers["x-auth-subject"], "acme");
    assert_eq!(headers["x-auth-issuer"], "partners");
    assert_eq!(headers["x-auth-client"], "acme-billing");
    assert_eq!(headers["x-auth-scopes"], "orders.read orders.write");
    assert_eq!(metadata(&response, "issuer"), Some("partners"));
    assert_eq!(metadata(&response, "credential"), Some("api_key"));
    let id_hash = metadata(&response, "api_key_id_hash").expect("id hash");
    assert_eq!(id_hash.len(), 16);
    assert!(!id_hash.contains("acme"));
    // The key never goes upstream.
    let (headers_removed, _) = removed(&response);
    assert!(
        headers_removed.contains(&"x-api-key".to_owned()),
        "{headers_removed:?}"
    );

    // The write route wants the partners set and orders.write: the rotated-in key lacks it.
    assert_eq!(
        reason(&check("DELETE", "/orders/1", &s.partner.text).await),
        "token_valid"
    );
    let response = check("DELETE", "/orders/1", &s.partner_next.text).await;
    assert_eq!(reason(&response), "requirement_not_met");
    // Both keys of the client are valid at once.
    assert_eq!(
        reason(&check("GET", "/orders/1", &s.partner_next.text).await),
        "token_valid"
    );

    // A key restricted to the reports route is refused elsewhere.
    assert_eq!(
        reason(&check("GET", "/reports/q3", &s.narrow.text).await),
        "token_valid"
    );
    assert_eq!(
        reason(&check("GET", "/orders/1", &s.narrow.text).await),
        "requirement_not_met"
    );

    // A token for the same routes still works beside keys.
    let mut claims = s.issuer.claims("alice", "orders-api");
    claims.insert("scope".into(), "orders.read".into());
    let token = s.issuer.sign(&claims, serde_json::json!({}));
    let response = client
        .check(request(
            "GET",
            "/orders/1",
            &[("authorization", &format!("Bearer {token}"))],
        ))
        .await
        .expect("rpc")
        .into_inner();
    assert_eq!(reason(&response), "token_valid");
    assert_eq!(upstream_headers(&response)["x-auth-issuer"], "corp");
}

#[tokio::test]
async fn unknown_revoked_expired_and_early_keys_each_have_their_reason() {
    let s = setup().await;
    let mut client = s.server.client().await;
    let real = &s.partner.text;
    // Same id, wrong secret; the secret one character off at its end.
    let mut wrong_end = real.clone();
    let last = wrong_end.pop().expect("non-empty");
    wrong_end.push(if last == 'A' { 'B' } else { 'A' });
    let cases = [
        (
            "wrong secret",
            "fak_acme-2026-12_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_owned(),
            "api_key_unknown",
        ),
        ("last character off", wrong_end, "api_key_unknown"),
        (
            "unknown id",
            "fak_nobody_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_owned(),
            "api_key_unknown",
        ),
        (
            "no set's prefix",
            "zzz_acme-2026-12_AAAA".to_owned(),
            "api_key_unknown",
        ),
        ("malformed", "fak_".to_owned(), "api_key_unknown"),
        ("expired", s.expired.text.clone(), "api_key_expired"),
        (
            "not yet valid",
            s.future.text.clone(),
            "api_key_not_yet_valid",
        ),
        ("revoked", s.revoked.text.clone(), "api_key_revoked"),
        (
            "another set's location",
            s.partner.text.clone(),
            "token_location_not_allowed",
        ),
    ];
    for (what, key, expected) in cases {
        let headers: Vec<(&str, String)> = if what == "another set's location" {
            // partners keys arrive in x-api-key only; Authorization: ApiKey is legacy's.
            vec![("authorization", format!("ApiKey {key}"))]
        } else {
            vec![("x-api-key", key.clone())]
        };
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let response = client
            .check(request("GET", "/orders/1", &headers))
            .await
            .expect("rpc")
            .into_inner();
        assert_eq!(reason(&response), expected, "{what}");
        assert_eq!(common::denied_status(&response), 401, "{what}");
        let challenge = common::denied_header(&response, "www-authenticate").expect("challenge");
        assert!(
            challenge.contains(r#"error="invalid_token""#),
            "{what}: {challenge}"
        );
    }
    // Two different keys in two locations are ambiguous.
    let response = client
        .check(request(
            "GET",
            "/orders/1",
            &[
                ("x-api-key", &s.partner.text),
                ("authorization", &format!("ApiKey {}", s.legacy.text)),
            ],
        ))
        .await
        .expect("rpc")
        .into_inner();
    assert_eq!(reason(&response), "credential_ambiguous");
    // The same key twice too: one copy would otherwise go upstream.
    let path = format!("/batch/run?api_key={}", s.legacy.text);
    let response = client
        .check(request(
            "GET",
            Box::leak(path.into_boxed_str()),
            &[("authorization", &format!("ApiKey {}", s.legacy.text))],
        ))
        .await
        .expect("rpc")
        .into_inner();
    assert_eq!(reason(&response), "credential_ambiguous");

    let (_, metrics) = s.server.admin_get("/metrics").await;
    let count = |labels: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with("fedauthz_api_key_checks_total{") && l.contains(labels))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert_eq!(
        count(r#"key_set="partners",result="unknown""#),
        4,
        "{metrics}"
    );
    assert_eq!(count(r#"key_set="",result="unknown""#), 1, "{metrics}");
    assert_eq!(
        count(r#"key_set="partners",result="refused""#),
        4,
        "{metrics}"
    );
}

#[tokio::test]
async fn a_token_and_a_key_together_need_the_route_to_choose() {
    let s = setup().await;
    let mut client = s.server.client().await;
    let token = s.issuer.token("alice", "orders-api");
    let both = |path: &'static str| {
        request(
            "GET",
            path,
            &[
                ("authorization", &format!("Bearer {token}")),
                ("x-api-key", &s.partner.text),
            ],
        )
    };
    let response = client
        .check(both("/orders/1"))
        .await
        .expect("rpc")
        .into_inner();
    assert_eq!(reason(&response), "credential_ambiguous");
    assert_eq!(common::denied_status(&response), 400);

    let response = client
        .check(both("/mixed/key"))
        .await
        .expect("rpc")
        .into_inner();
    assert_eq!(reason(&response), "token_valid");
    assert_eq!(upstream_headers(&response)["x-auth-issuer"], "partners");
    let (gone, _) = removed(&response);
    assert!(
        gone.contains(&"x-api-key".to_owned()) && gone.contains(&"authorization".to_owned()),
        "{gone:?}"
    );

    let response = client
        .check(both("/mixed/jwt"))
        .await
        .expect("rpc")
        .into_inner();
    assert_eq!(reason(&response), "token_valid");
    assert_eq!(upstream_headers(&response)["x-auth-issuer"], "corp");
    let (gone, _) = removed(&response);
    assert!(
        gone.contains(&"x-api-key".to_owned()) && gone.contains(&"authorization".to_owned()),
        "{gone:?}"
    );
}

#[tokio::test]
async fn a_query_key_is_removed_from_the_url_and_refused_where_no_proxy_can_remove_it() {
    let s = setup().await;
    let mut client = s.server.client().await;
    let path = format!("/batch/run?x=1&api_key={}", s.legacy.text);
    let response = client
        .check(request("GET", Box::leak(path.into_boxed_str()), &[]))
        .await
        .expect("rpc")
        .into_inner();
    assert_eq!(reason(&response), "token_valid");
    assert_eq!(upstream_headers(&response)["x-auth-issuer"], "legacy");
    let (_, parameters) = removed(&response);
    assert_eq!(parameters, ["api_key"]);
    // The same key in its header location.
    let response = client
        .check(request(
            "GET",
            "/batch/run",
            &[("authorization", &format!("apikey {}", s.legacy.text))],
        ))
        .await
        .expect("rpc")
        .into_inner();
    assert_eq!(reason(&response), "token_valid");
    assert!(removed(&response).0.contains(&"authorization".to_owned()));
}

#[tokio::test]
async fn the_http_listener_accepts_header_keys_and_fails_closed_on_query_keys() {
    let key = generate(&["--id", "edge", "--subject", "edge-client"]);
    let yaml = format!(
        "server:\n  http: {{ listen: 127.0.0.1:0, trusted_proxies: [127.0.0.1] }}\n\
         issuers: []\n\
         api_keys:\n  - id: edge\n    allow_query_parameter: true\n    locations: [{{ header: x-api-key }}, {{ query: api_key }}]\n    keys: [{}]\n",
        key.entry
    );
    let server = RunningServer::start(&yaml).await;
    let base = format!("http://{}", server.http.expect("HTTP listener"));
    let client = reqwest::Client::new();
    let ask = |uri: String, header: Option<String>| {
        let mut request = client
            .get(format!("{base}/nginx"))
            .header("x-original-method", "GET")
            .header("x-original-uri", uri);
        if let Some(key) = header {
            request = request.header("x-api-key", key);
        }
        async move {
            let response = request.send().await.expect("request");
            let decision = response
                .headers()
                .get("x-fedauthz-decision")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let subject = response
                .headers()
                .get("x-auth-subject")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            (response.status().as_u16(), decision, subject)
        }
    };
    assert_eq!(
        ask("/a".into(), Some(key.text.clone())).await,
        (200, "allow".to_owned(), Some("edge-client".to_owned()))
    );
    // nginx cannot take the key out of the URL: the allow is refused rather than leak it.
    assert_eq!(
        ask(format!("/a?api_key={}", key.text), None).await,
        (500, "deny".to_owned(), None)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_hmac_key_file_swapped_while_serving_takes_effect_and_a_broken_one_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("hmac.secret");
    std::fs::write(&secret, [42u8; 48]).expect("write secret");
    let secret_arg = secret.display().to_string();
    let old = generate(&[
        "--id",
        "k-old",
        "--subject",
        "svc",
        "--hmac-secret-file",
        &secret_arg,
    ]);
    let new = generate(&[
        "--id",
        "k-new",
        "--subject",
        "svc",
        "--hmac-secret-file",
        &secret_arg,
    ]);
    assert!(
        old.entry["hash"]
            .as_str()
            .unwrap_or("")
            .starts_with("hmac-sha256:")
    );
    let keys = dir.path().join("keys.yaml");
    std::fs::write(&keys, format!("keys:\n  - {}\n", old.entry)).expect("write keys");
    let config = dir.path().join("fedauthz.yaml");
    std::fs::write(
        &config,
        format!(
            "server: {{ grpc_listen: 127.0.0.1:0, admin_listen: 127.0.0.1:0, config_poll_interval: 1s }}\n\
             issuers: []\n\
             api_keys:\n  - id: services\n    hash: hmac_sha256\n    hmac_secret_file: {}\n    file: {}\n",
            secret.display(),
            keys.display()
        ),
    )
    .expect("write config");
    let mut process = Process::spawn(
        Command::new(env!("CARGO_BIN_EXE_fedauthz"))
            .args(["serve", "--log-format", "json", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null()),
    );
    let line = process.wait_for("fedauthz listening");
    let log: Value = serde_json::from_str(&line).expect("JSON");
    let addr = log["fields"]["grpc"].as_str().expect("grpc").to_owned();
    let client = fedauthz::proto::auth::authorization_client::AuthorizationClient::connect(
        format!("http://{addr}"),
    )
    .await
    .expect("connect");
    let reason_of = |key: String| {
        let mut client = client.clone();
        async move {
            let response = client
                .check(request("GET", "/x", &[("x-api-key", &key)]))
                .await
                .expect("rpc")
                .into_inner();
            reason(&response).to_owned()
        }
    };
    assert_eq!(reason_of(old.text.clone()).await, "token_valid");
    assert_eq!(reason_of(new.text.clone()).await, "api_key_unknown");

    // Rotate: the new key in, the old one out, as a Secret update would.
    std::fs::write(&keys, format!("keys:\n  - {}\n", new.entry)).expect("rewrite keys");
    let deadline = Instant::now() + Duration::from_secs(15);
    while reason_of(new.text.clone()).await != "token_valid" {
        assert!(
            Instant::now() < deadline,
            "the new key file never took effect"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(reason_of(old.text.clone()).await, "api_key_unknown");

    // A broken file is refused with its path; the running keys stay.
    std::fs::write(&keys, "keys:\n  - { id: bad, hash: 'sha256:00' }\n").expect("break keys");
    let refused = process.wait_for("configuration refused");
    assert!(refused.contains("keys.yaml"), "{refused}");
    assert_eq!(reason_of(new.text.clone()).await, "token_valid");
    process.signal("TERM");
    process.wait_exit();
    let logs = process.stderr();
    for key in [&old.text, &new.text] {
        let secret = common::api_key_secret(key);
        assert!(
            secret.len() >= 40 && !logs.contains(secret),
            "a key secret reached the logs"
        );
    }
}

#[test]
fn the_generator_refuses_bad_ids_and_check_config_refuses_bad_entries() {
    let output = Command::new(env!("CARGO_BIN_EXE_fedauthz"))
        .args(["apikey", "--id", "has_underscore", "--subject", "x"])
        .output()
        .expect("run");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("[A-Za-z0-9-]"));
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("fedauthz.yaml");
    std::fs::write(
        &config,
        "issuers: []\napi_keys:\n  - id: p\n    keys:\n      - { id: a, hash: 'md5:00', subject: s }\n      - { id: a, hash: 'sha256:0000000000000000000000000000000000000000000000000000000000000000', subject: '' }\n    locations: [{ header: authorization }]\n",
    )
    .expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_fedauthz"))
        .arg("check-config")
        .arg(&config)
        .output()
        .expect("run");
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stderr);
    for expected in [
        "api_keys[0].keys[0].hash: must be sha256:<64 hex digits>",
        "api_keys[0].keys[1].subject: must not be empty",
        "api_keys[0].keys[1].id: duplicates api_keys[0].keys[0].id",
        "api_keys[0].locations[0].scheme: is required with the authorization header",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
}
