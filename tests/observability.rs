//! Traces and logs of the real `fedauthz` binary: spans reach a real OTLP receiver (gRPC and
//! HTTP/protobuf) and continue the caller's trace; decision log lines carry the documented
//! fields; no log output, text or JSON, at any level, contains a token or a piece of one.

mod common;

use std::process::{Command, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::otlp::{Received, attribute, grpc_receiver, hex, http_receiver};
use common::process::Process;
use common::{TestIssuer, check_request, reason};
use fedauthz::proto::auth::authorization_client::AuthorizationClient;
use serde_json::json;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "00f067aa0ba902b7";

fn fedauthz() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fedauthz"))
}

fn config_file(dir: &tempfile::TempDir, issuer: &TestIssuer, extra: &str) -> std::path::PathBuf {
    let file = dir.path().join("fedauthz.yaml");
    std::fs::write(
        &file,
        format!(
            "server: {{ grpc_listen: 127.0.0.1:0, admin_listen: 127.0.0.1:0 }}\n\
             issuers:\n  - id: idp\n    issuer: {}\n    keys: {{ jwks: {} }}\n    audiences: [orders]\n\
             routes:\n  - name: orders-read\n    match: {{ paths: [\"/orders*\"] }}\n    require: {{ scopes: [orders:read] }}\n{extra}",
            issuer.iss,
            issuer.jwks()
        ),
    )
    .expect("write");
    file
}

/// Starts `fedauthz serve` with `env`, waiting until it listens; returns it and its gRPC address.
fn serve(file: &std::path::Path, format: &str, env: &[(&str, &str)]) -> (Process, String) {
    let mut command = fedauthz();
    command
        .stdout(Stdio::null())
        .args(["serve", "--log-format", format, "--config"])
        .arg(file);
    for (name, _) in std::env::vars() {
        if name.starts_with("OTEL_") || name == "RUST_LOG" {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied());
    let mut process = Process::spawn(&mut command);
    let line = process.wait_for("fedauthz listening");
    let addr = match format {
        "json" => {
            let log: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
            log["fields"]["grpc"]
                .as_str()
                .expect("grpc field")
                .to_owned()
        }
        _ => line
            .split("grpc=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .expect("grpc= in the listening line")
            .to_owned(),
    };
    (process, addr)
}

async fn client(addr: &str) -> AuthorizationClient<tonic::transport::Channel> {
    AuthorizationClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
}

async fn check_span_arrives(protocol: &str, endpoint: String, received: Received) {
    let issuer = TestIssuer::es256("https://idp.example.com", "k1");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = config_file(&dir, &issuer, "");
    let (mut process, addr) = serve(
        &file,
        "json",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
            ("OTEL_SERVICE_NAME", "fedauthz-under-test"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    assert!(process.stderr().contains("exporting traces over OTLP"));
    let mut claims = issuer.claims("alice", "orders");
    claims.insert("scope".into(), "orders:read".into());
    let token = issuer.sign(&claims, json!({}));
    let traceparent = format!("00-{TRACE_ID}-{PARENT_SPAN}-01");

    // The caller's trace context in the headers of the request being authorized.
    let mut client = client(&addr).await;
    let response = client
        .check(check_request(&[
            ("authorization", &format!("Bearer {token}")),
            ("traceparent", &traceparent),
        ]))
        .await
        .expect("rpc")
        .into_inner();
    assert_eq!(reason(&response), "token_valid");

    let (service, check) = received.wait_for("ext_authz.check", TRACE_ID).await;
    assert_eq!(service, "fedauthz-under-test");
    assert_eq!(hex(&check.parent_span_id), PARENT_SPAN);
    assert_eq!(
        attribute(&check, "fedauthz.decision").as_deref(),
        Some("allow")
    );
    assert_eq!(
        attribute(&check, "fedauthz.reason").as_deref(),
        Some("token_valid")
    );
    assert_eq!(attribute(&check, "fedauthz.issuer").as_deref(), Some("idp"));
    assert_eq!(
        attribute(&check, "fedauthz.route").as_deref(),
        Some("orders-read")
    );
    let (_, verify) = received.wait_for("verify", TRACE_ID).await;
    assert_eq!(
        verify.parent_span_id, check.span_id,
        "verify is a child of the check"
    );
    assert_eq!(
        attribute(&verify, "fedauthz.issuer").as_deref(),
        Some("idp")
    );

    // Envoy's own ext_authz client span, in the gRPC metadata, is the closer parent; a denial
    // carries its reason.
    let other_trace = "0af7651916cd43dd8448eb211c80319c";
    let mut request = tonic::Request::new(check_request(&[("authorization", "Bearer x.y.z")]));
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{other_trace}-b7ad6b7169203331-01")
            .parse()
            .expect("metadata value"),
    );
    let response = client.check(request).await.expect("rpc").into_inner();
    assert_eq!(reason(&response), "token_malformed");
    let (_, denied) = received.wait_for("ext_authz.check", other_trace).await;
    assert_eq!(hex(&denied.parent_span_id), "b7ad6b7169203331");
    assert_eq!(
        attribute(&denied, "fedauthz.decision").as_deref(),
        Some("deny")
    );
    assert_eq!(
        attribute(&denied, "fedauthz.reason").as_deref(),
        Some("token_malformed")
    );

    // No span or attribute carries the token.
    let everything = format!("{:?}", received.0.lock().expect("lock"));
    for segment in token.split('.') {
        assert!(
            !everything.contains(segment),
            "a span carries a token segment"
        );
    }
    drop(process);
}

#[tokio::test(flavor = "multi_thread")]
async fn otlp_grpc_receiver_gets_the_check_span_in_the_callers_trace() {
    let (addr, received) = grpc_receiver().await;
    check_span_arrives("grpc", format!("http://{addr}"), received).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn otlp_http_receiver_gets_the_check_span_in_the_callers_trace() {
    let (addr, received) = http_receiver().await;
    check_span_arrives("http/protobuf", format!("http://{addr}"), received).await;
}

#[test]
fn unknown_trace_exporter_settings_are_refused_at_start() {
    let issuer = TestIssuer::es256("https://idp.example.com", "k1");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = config_file(&dir, &issuer, "");
    for (name, value, expected) in [
        (
            "OTEL_TRACES_EXPORTER",
            "jaeger",
            "OTEL_TRACES_EXPORTER=\"jaeger\"",
        ),
        (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "http/json",
            "must be grpc or http/protobuf",
        ),
    ] {
        let output = fedauthz()
            .args(["serve", "--config"])
            .arg(&file)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
            .env(name, value)
            .output()
            .expect("run");
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{stderr}");
    }
}

/// Allowed and denied checks with distinctive tokens: well-formed, tampered, expired, with
/// unknown kid, unknown issuer, wrong audience, insufficient scope, garbage, and an oversized
/// one.
fn distinctive_tokens(issuer: &TestIssuer) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut claims = issuer.claims("alice", "orders");
    claims.insert("scope".into(), "orders:read".into());
    claims.insert("marker".into(), "ZEBRA-CANARY-1".into());
    let valid = issuer.sign(&claims, json!({}));
    tokens.push(valid.clone());
    // Tampered payload, same signature.
    let mut parts: Vec<&str> = valid.split('.').collect();
    let tampered_payload = URL_SAFE_NO_PAD.encode(
        serde_json::to_vec(&json!({"iss": issuer.iss, "sub": "mallory", "aud": "orders", "exp": common::now() + 60}))
            .expect("json"),
    );
    parts[1] = &tampered_payload;
    tokens.push(parts.join("."));
    // Expired.
    let mut expired = issuer.claims("bob", "orders");
    expired.insert("exp".into(), json!(common::now() - 3600));
    expired.insert("iat".into(), json!(common::now() - 7200));
    tokens.push(issuer.sign(&expired, json!({})));
    // Unknown kid, unknown issuer, wrong audience, no scope.
    tokens.push(issuer.sign(&claims, json!({"kid": "kid-nobody-has"})));
    let stranger = TestIssuer::es256("https://stranger.example.com", "k1");
    tokens.push(stranger.token("carol", "orders"));
    tokens.push(issuer.token("dave", "billing"));
    tokens.push(issuer.token("erin", "orders"));
    // Not a JWT at all, and one far too large.
    tokens.push("Zm9vYmFyYmF6cXV4.c2VjcmV0LXNlZ21lbnQ.QUJDREVGR0hJSktM".into());
    tokens.push(format!(
        "{}.{}.{}",
        "A".repeat(9000),
        "B".repeat(9000),
        "C".repeat(9000)
    ));
    tokens
}

/// Checks each token (as a bearer token and in a cookie-like place) and returns the reasons.
async fn drive(addr: &str, tokens: &[String]) -> Vec<String> {
    let mut client = client(addr).await;
    let mut reasons = Vec::new();
    for (index, token) in tokens.iter().enumerate() {
        let request_id = format!("req-{index}");
        let response = client
            .check(check_request(&[
                ("authorization", &format!("Bearer {token}")),
                ("x-request-id", &request_id),
            ]))
            .await
            .expect("rpc")
            .into_inner();
        reasons.push(reason(&response).to_owned());
    }
    reasons
}

#[tokio::test(flavor = "multi_thread")]
async fn no_log_output_contains_a_token_or_a_signature() {
    let issuer = TestIssuer::es256("https://idp.example.com", "k1");
    let tokens = distinctive_tokens(&issuer);
    let dir = tempfile::tempdir().expect("tempdir");
    // Every allowed check logged too, with the subject in the clear: the most a config can ask.
    let file = config_file(
        &dir,
        &issuer,
        "decision_log: { subject: plain, sample_allowed: 1.0 }\n",
    );
    for format in ["text", "json"] {
        let (mut process, addr) = serve(&file, format, &[("RUST_LOG", "trace")]);
        let reasons = drive(&addr, &tokens).await;
        assert_eq!(
            reasons,
            [
                "token_valid",
                "signature_invalid",
                "token_expired",
                "key_unknown",
                "issuer_unknown",
                "audience_mismatch",
                "requirement_not_met",
                "token_malformed",
                "token_too_large",
            ],
            "{format}"
        );
        let last = format!("req-{}", tokens.len() - 1);
        process.wait_for(&last);
        process.signal("TERM");
        process.wait_exit();
        let logs = process.stderr();
        assert!(
            logs.contains("check denied"),
            "{format}: decision lines are there"
        );
        assert!(logs.contains("check allowed"), "{format}");
        for token in &tokens {
            for segment in token.split('.').filter(|s| s.len() >= 8) {
                assert!(
                    !logs.contains(segment),
                    "{format} logs contain a token segment ({} bytes)",
                    segment.len()
                );
            }
        }
        assert!(
            !logs.contains("ZEBRA-CANARY"),
            "{format}: no claim values beyond sub"
        );
    }
}

/// A key as `fedauthz apikey` prints it, and its entry (as text).
fn api_key(id: &str) -> (String, String) {
    let (key, entry) = common::api_key(
        &[
            "--id",
            id,
            "--subject",
            "partner-svc",
            "--scope",
            "orders:read",
        ],
        json!({}),
    );
    (key, entry.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn no_log_output_contains_an_api_key_its_digest_or_its_id() {
    let issuer = TestIssuer::es256("https://idp.example.com", "k1");
    let (good, good_entry) = api_key("zebra-canary-good");
    let (expired, expired_entry) = api_key("zebra-canary-old");
    let expired_entry = expired_entry.replacen('{', r#"{"expires":"2020-01-01T00:00:00Z","#, 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = config_file(
        &dir,
        &issuer,
        &format!(
            "decision_log: {{ subject: plain, sample_allowed: 1.0 }}\n\
             api_keys:\n  - id: partners\n    keys: [{good_entry}, {expired_entry}]\n"
        ),
    );
    let digests: Vec<String> = [&good_entry, &expired_entry]
        .iter()
        .filter_map(|entry| serde_json::from_str::<serde_json::Value>(entry).ok())
        .filter_map(|entry| {
            entry["hash"]
                .as_str()
                .map(|h| h.trim_start_matches("sha256:").to_owned())
        })
        .collect();
    assert_eq!(digests.len(), 2);
    let mut wrong = good.clone();
    wrong.truncate(wrong.len() - 4);
    wrong.push_str("AAAA");
    for format in ["text", "json"] {
        let (mut process, addr) = serve(&file, format, &[("RUST_LOG", "trace")]);
        let mut client = client(&addr).await;
        let mut reasons = Vec::new();
        for (index, key) in [&good, &wrong, &expired].into_iter().enumerate() {
            let response = client
                .check(check_request(&[
                    ("x-api-key", key),
                    ("x-request-id", &format!("key-{index}")),
                ]))
                .await
                .expect("rpc")
                .into_inner();
            reasons.push(reason(&response).to_owned());
        }
        assert_eq!(
            reasons,
            ["token_valid", "api_key_unknown", "api_key_expired"],
            "{format}"
        );
        process.wait_for("key-2");
        process.signal("TERM");
        process.wait_exit();
        let logs = process.stderr();
        assert!(
            logs.contains("check allowed") && logs.contains("check denied"),
            "{format}"
        );
        for key in [&good, &wrong, &expired] {
            let secret = common::api_key_secret(key);
            assert!(
                secret.len() >= 8 && !logs.contains(secret),
                "{format}: a key secret is in the logs"
            );
        }
        for digest in &digests {
            assert!(
                !logs.contains(&digest[..16]),
                "{format}: a key digest is in the logs"
            );
        }
        // Key ids appear only as their short hash.
        assert!(
            !logs.contains("zebra-canary"),
            "{format}: a key id is in the logs"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn decision_lines_carry_request_id_reason_issuer_route_and_the_configured_subject() {
    let issuer = TestIssuer::es256("https://idp.example.com", "k1");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = config_file(&dir, &issuer, "decision_log: { subject: hashed }\n");
    let (mut process, addr) = serve(&file, "json", &[]);
    let mut client = client(&addr).await;
    let check = |token: String, id: &'static str| {
        check_request(&[
            ("authorization", &format!("Bearer {token}")),
            ("x-request-id", id),
        ])
    };
    let mut allowed = issuer.claims("alice", "orders");
    allowed.insert("scope".into(), "orders:read".into());
    for (token, id) in [
        (issuer.sign(&allowed, json!({})), "req-allowed"),
        (issuer.token("bob", "orders"), "req-forbidden"),
        (issuer.token("carol", "billing"), "req-unauthenticated"),
    ] {
        client.check(check(token, id)).await.expect("rpc");
    }
    let mut line = |id: &str| -> serde_json::Value {
        serde_json::from_str(&process.wait_for(id)).expect("JSON line")
    };
    let forbidden = line("req-forbidden");
    let fields = &forbidden["fields"];
    assert_eq!(forbidden["target"], "fedauthz::decision");
    assert_eq!(fields["message"], "check denied");
    assert_eq!(fields["decision"], "deny");
    assert_eq!(fields["reason"], "requirement_not_met");
    assert_eq!(fields["status"], 403);
    assert_eq!(fields["issuer"], "idp");
    assert_eq!(fields["route"], "orders-read");
    assert_eq!(
        fields["subject"],
        fedauthz::decision_log::hash_subject("idp", "bob")
    );
    let unauthenticated = line("req-unauthenticated");
    let fields = &unauthenticated["fields"];
    assert_eq!(fields["reason"], "audience_mismatch");
    assert_eq!(fields["status"], 401);
    assert_eq!(fields["issuer"], "idp");
    assert!(
        fields.get("subject").is_none(),
        "an unverified token's subject is never logged: {fields}"
    );
    let logs = process.stderr();
    assert!(
        !logs.contains("req-allowed"),
        "allowed checks are not logged unless sampled"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_allow_line_names_the_minted_tokens_jti_and_no_log_holds_the_minted_token() {
    let issuer = TestIssuer::es256("https://idp.example.com", "k1");
    let dir = tempfile::tempdir().expect("tempdir");
    let pem = common::write_signing_key(&dir.path().join("mint.pem"), "ES256");
    let file = config_file(
        &dir,
        &issuer,
        &format!(
            "decision_log: {{ sample_allowed: 1.0 }}\nmint:\n  issuer: http://fedauthz.internal\n  audience: orders-api\n  keys: [{{file: '{}', state: current, initial: true}}]\n",
            pem.display()
        ),
    );
    let (mut process, addr) = serve(&file, "json", &[("RUST_LOG", "trace")]);
    let mut client = client(&addr).await;
    let mut claims = issuer.claims("alice", "orders");
    claims.insert("scope".into(), "orders:read".into());
    let response = client
        .check(check_request(&[
            (
                "authorization",
                &format!("Bearer {}", issuer.sign(&claims, json!({}))),
            ),
            ("x-request-id", "req-minted"),
        ]))
        .await
        .expect("rpc")
        .into_inner();
    let jti = common::metadata(&response, "mint_jti")
        .expect("a minted token")
        .to_owned();
    let minted = match &response.http_response {
        Some(fedauthz::proto::auth::check_response::HttpResponse::OkResponse(ok)) => ok
            .headers
            .iter()
            .filter_map(|h| h.header.as_ref())
            .find(|h| h.key == "authorization")
            .map(|h| h.value.trim_start_matches("Bearer ").to_owned())
            .expect("authorization"),
        other => panic!("not allowed: {other:?}"),
    };
    let line: serde_json::Value =
        serde_json::from_str(&process.wait_for("req-minted")).expect("JSON line");
    assert_eq!(line["fields"]["message"], "check allowed");
    assert_eq!(line["fields"]["minted"], true);
    assert_eq!(line["fields"]["mint_jti"], jti.as_str());
    process.signal("TERM");
    process.wait_exit();
    let logs = process.stderr();
    for segment in minted.split('.').filter(|s| s.len() >= 8) {
        assert!(
            !logs.contains(segment),
            "the logs hold a minted token segment"
        );
    }
}
