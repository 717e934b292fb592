//! End to end through a real Envoy: the client talks to Envoy 1.40, Envoy asks the real
//! `fedauthz` binary over gRPC (ext_authz V3, HTTP/2 cluster) and forwards allowed requests to
//! an echo upstream that records every header it received.
//!
//! Envoy runs `deploy/envoy/envoy.yaml` itself, ports rewritten, so the shipped example is what
//! is tested. Needs the `envoy-e2e` feature and an Envoy binary (`scripts/test` installs one
//! into `.tools/`; `FEDAUTHZ_ENVOY` overrides the path). Without Envoy these tests fail: they
//! never skip. When a test fails, its Envoy and fedauthz logs are kept under
//! `target/e2e-logs/` and the path is printed.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::process::Process;
use common::proxy::{Echo, Seen, envoy_binary, free_port, keep_logs, start_envoy, wait_http};
use common::{Answer, JwksServer, TestIssuer};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};

const ENVOY_EXAMPLE: &str = include_str!("../deploy/envoy/envoy.yaml");
const ENVOY_MTLS: &str = include_str!("../deploy/envoy/envoy-mtls.yaml");
const AUD: &str = "orders-api";

// ---------------------------------------------------------------------------------------------
// The stack: JWKS server, echo upstream, fedauthz, Envoy.

/// One client-visible answer, plus what reached the upstream and Envoy's access log line.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: HeaderMap,
    body: String,
    upstream: Option<Seen>,
    request_id: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

const BOTH: [Protocol; 2] = [Protocol::Http1, Protocol::Http2];

struct Stack {
    name: &'static str,
    dir: tempfile::TempDir,
    a: TestIssuer,
    b: TestIssuer,
    _jwks: JwksServer,
    echo: Echo,
    fedauthz: Option<Process>,
    fedauthz_grpc: SocketAddr,
    envoy: Process,
    listener: SocketAddr,
    next_id: std::sync::atomic::AtomicUsize,
    http1: reqwest::Client,
    http2: reqwest::Client,
}

impl Stack {
    /// The standard stack: issuer A (RS256, keys from the HTTPS JWKS server) and issuer B
    /// (ES256, inline keys), routes admin / public / orders as deploy/envoy/envoy.yaml names them.
    async fn start(name: &'static str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = TestIssuer::rs256("https://login.example.com/tenant/v2.0", "a-key-1");
        let b = TestIssuer::es256("https://partners.example.com/", "b-key-1");
        let jwks = JwksServer::start(Answer::Json(a.jwks().to_string())).await;

        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, &jwks.ca_pem).expect("write CA");
        let config = dir.path().join("fedauthz.yaml");
        std::fs::write(
            &config,
            format!(
                r#"
response:
  realm: orders
issuers:
  - id: issuer-a
    issuer: {a_iss}
    keys: {{ jwks_uri: "{url}", ca_file: "{ca}" }}
    audiences: [{AUD}]
  - id: issuer-b
    issuer: {b_iss}
    keys: {{ jwks: {b_jwks} }}
    audiences: [{AUD}]
routes:
  - name: admin
    match: {{ context_extensions: {{ api: admin }} }}
    require: {{ issuers: [issuer-a] }}
  - name: public
    match: {{ context_extensions: {{ api: public }} }}
    allow_anonymous: true
  - name: orders
    match: {{ context_extensions: {{ api: orders }} }}
"#,
                a_iss = a.iss,
                url = jwks.url,
                ca = ca.display(),
                b_iss = b.iss,
                b_jwks = b.jwks(),
            ),
        )
        .expect("write fedauthz config");
        Self::launch(name, dir, a, b, jwks).await
    }

    /// Starts the echo upstream, fedauthz on `dir/fedauthz.yaml` and Envoy.
    async fn launch(
        name: &'static str,
        dir: tempfile::TempDir,
        a: TestIssuer,
        b: TestIssuer,
        jwks: JwksServer,
    ) -> Self {
        let echo = Echo::start().await;
        let config = dir.path().join("fedauthz.yaml");
        let fedauthz_grpc = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let fedauthz = start_fedauthz(&config, fedauthz_grpc).await;

        let listener = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let envoy_config = dir.path().join("envoy.yaml");
        std::fs::write(
            &envoy_config,
            envoy_yaml(
                listener.port(),
                admin.port(),
                fedauthz_grpc.port(),
                echo.addr.port(),
            ),
        )
        .expect("write envoy config");
        let access_log = std::fs::File::create(dir.path().join("access.log")).expect("log");
        let envoy = start_envoy(&envoy_config, admin, Stdio::from(access_log)).await;

        Self {
            name,
            dir,
            a,
            b,
            _jwks: jwks,
            echo,
            fedauthz: Some(fedauthz),
            fedauthz_grpc,
            envoy,
            listener,
            next_id: std::sync::atomic::AtomicUsize::new(0),
            http1: reqwest::Client::builder()
                .http1_only()
                .build()
                .expect("client"),
            http2: reqwest::Client::builder()
                .http2_prior_knowledge()
                .build()
                .expect("client"),
        }
    }

    /// GET `path` through Envoy with `headers` (repeat a name to send it twice).
    async fn get(&self, protocol: Protocol, path: &str, headers: &[(&str, &str)]) -> Reply {
        let n = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let request_id = format!("{}-{n}", self.name);
        let mut map = HeaderMap::new();
        map.insert(
            "x-request-id",
            HeaderValue::from_str(&request_id).expect("id"),
        );
        for (name, value) in headers {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                HeaderValue::from_str(value).expect("header value"),
            );
        }
        let client = match protocol {
            Protocol::Http1 => &self.http1,
            Protocol::Http2 => &self.http2,
        };
        let response = client
            .get(format!("http://{}{path}", self.listener))
            .headers(map)
            .send()
            .await
            .unwrap_or_else(|err| panic!("GET {path} over {protocol:?}: {err}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await.unwrap_or_default();
        Reply {
            status,
            headers,
            body,
            upstream: self.echo.seen(&request_id),
            request_id,
        }
    }

    fn bearer(token: &str) -> String {
        format!("Bearer {token}")
    }

    /// Envoy's access log line for `reply` (waits for Envoy to flush it).
    async fn access_log(&self, reply: &Reply) -> Value {
        let path = self.dir.path().join("access.log");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let line = text
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|l| l["request_id"] == reply.request_id.as_str());
            if let Some(line) = line {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no access log line for {}; log:\n{text}",
                reply.request_id
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops fedauthz (SIGTERM) and waits for it to exit.
    fn stop_fedauthz(&mut self) {
        if let Some(mut process) = self.fedauthz.take() {
            process.signal("TERM");
            assert!(process.wait_exit().success(), "fedauthz exits cleanly");
        }
    }

    /// Starts fedauthz again on the same gRPC address.
    async fn restart_fedauthz(&mut self) {
        let config = self.dir.path().join("fedauthz.yaml");
        self.fedauthz = Some(start_fedauthz(&config, self.fedauthz_grpc).await);
    }
}

impl Drop for Stack {
    /// On failure, keeps the logs where a developer can read them.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let mut outputs = vec![("envoy.stderr", self.envoy.stderr())];
        if let Some(fedauthz) = self.fedauthz.as_mut() {
            outputs.push(("fedauthz.stderr", fedauthz.stderr()));
        }
        keep_logs(
            self.name,
            self.dir.path(),
            &["envoy.yaml", "fedauthz.yaml", "access.log"],
            &outputs,
        );
    }
}

/// The shipped Envoy example with its four loopback ports replaced.
fn envoy_yaml(listener: u16, admin: u16, fedauthz: u16, upstream: u16) -> String {
    let mut yaml = ENVOY_EXAMPLE.to_owned();
    for (from, to) in [
        (10000, listener),
        (9901, admin),
        (50051, fedauthz),
        (8080, upstream),
    ] {
        let from = format!("port_value: {from} ");
        assert_eq!(
            yaml.matches(&from).count(),
            1,
            "deploy/envoy/envoy.yaml must use `{from}` exactly once"
        );
        yaml = yaml.replace(&from, &format!("port_value: {to} "));
    }
    yaml
}

async fn start_fedauthz(config: &Path, grpc: SocketAddr) -> Process {
    start_fedauthz_with(config, grpc, &[]).await
}

/// [`start_fedauthz`] with more environment variables.
async fn start_fedauthz_with(config: &Path, grpc: SocketAddr, env: &[(&str, &str)]) -> Process {
    start_fedauthz_admin(config, grpc, env).await.0
}

/// [`start_fedauthz_with`], also handing back the admin address (plaintext).
async fn start_fedauthz_admin(
    config: &Path,
    grpc: SocketAddr,
    env: &[(&str, &str)],
) -> (Process, SocketAddr) {
    let mut process = Process::spawn(
        Command::new(env!("CARGO_BIN_EXE_fedauthz"))
            .arg("serve")
            .arg("--config")
            .arg(config)
            .args(["--grpc-listen", &grpc.to_string()])
            .args(["--admin-listen", "127.0.0.1:0", "--log-format", "json"])
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null()),
    );
    let line = process.wait_for("fedauthz listening");
    let log: Value = serde_json::from_str(&line).expect("JSON log line");
    let admin: SocketAddr = log["fields"]["admin"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .expect("admin address in the listening line");
    wait_http(admin, "/readyz", "fedauthz").await;
    (process, admin)
}

// ---------------------------------------------------------------------------------------------
// Cases.

#[tokio::test]
async fn an_allowed_request_reaches_upstream_with_identity_and_without_the_credential() {
    let stack = Stack::start("allowed").await;
    let token = stack.a.token("alice", AUD);
    for protocol in BOTH {
        let reply = stack
            .get(
                protocol,
                "/orders/7",
                &[("authorization", &Stack::bearer(&token))],
            )
            .await;
        assert_eq!(reply.status, 200, "{protocol:?}: {}", reply.body);
        assert_eq!(reply.body, "upstream ok");
        let upstream = reply.upstream.as_ref().expect("reached upstream");
        assert_eq!(upstream.values("x-auth-subject"), ["alice"]);
        assert_eq!(upstream.values("x-auth-issuer"), ["issuer-a"]);
        assert!(
            upstream.values("authorization").is_empty(),
            "the credential is removed: {upstream:?}"
        );
        let log = stack.access_log(&reply).await;
        assert_eq!(log["authz_decision"], "allow");
        assert_eq!(log["authz_reason"], "token_valid");
        assert_eq!(log["authz_issuer"], "issuer-a");
    }
}

#[tokio::test]
async fn spoofed_identity_headers_never_reach_upstream() {
    let stack = Stack::start("spoofing").await;
    let token = stack.b.token("bob", AUD);
    let spoofed = [("x-auth-subject", "admin"), ("x-auth-issuer", "issuer-a")];
    for protocol in BOTH {
        // With a valid token: overwritten by the verified identity.
        let mut headers = spoofed.to_vec();
        let bearer = Stack::bearer(&token);
        headers.push(("authorization", &bearer));
        let reply = stack.get(protocol, "/orders", &headers).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let upstream = reply.upstream.expect("reached upstream");
        assert_eq!(upstream.values("x-auth-subject"), ["bob"]);
        assert_eq!(upstream.values("x-auth-issuer"), ["issuer-b"]);

        // Anonymous on a public route: removed.
        let reply = stack.get(protocol, "/public/page", &spoofed).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let upstream = reply.upstream.expect("reached upstream");
        assert!(upstream.values("x-auth-subject").is_empty(), "{upstream:?}");
        assert!(upstream.values("x-auth-issuer").is_empty(), "{upstream:?}");

        // Without a token on a protected route: nothing reaches the upstream at all.
        let reply = stack.get(protocol, "/orders", &spoofed).await;
        assert_eq!(reply.status, 401);
        assert!(reply.upstream.is_none());
    }
}

#[tokio::test]
async fn a_missing_token_gets_401_with_a_challenge_without_error_code() {
    let stack = Stack::start("missing").await;
    for protocol in BOTH {
        let reply = stack.get(protocol, "/orders", &[]).await;
        assert_eq!(reply.status, 401);
        assert_eq!(
            reply.header("www-authenticate"),
            Some("Bearer realm=\"orders\"")
        );
        assert!(reply.upstream.is_none());
        let body: Value = serde_json::from_str(&reply.body).expect("JSON body");
        assert_eq!(body["status"], 401);
        assert_eq!(
            stack.access_log(&reply).await["authz_reason"],
            "token_missing"
        );
    }
}

#[tokio::test]
async fn invalid_tokens_get_401_invalid_token_and_the_reason_reaches_envoy() {
    let stack = Stack::start("invalid").await;
    let a = &stack.a;
    let mut expired = a.claims("alice", AUD);
    expired.insert("iat".into(), json!(common::now() - 3600));
    expired.insert("nbf".into(), json!(common::now() - 3600));
    expired.insert("exp".into(), json!(common::now() - 600));
    let valid = a.token("alice", AUD);
    let bad_signature = {
        let (signed, _) = valid.rsplit_once('.').expect("three parts");
        let other = a.token("mallory", AUD);
        let (_, signature) = other.rsplit_once('.').expect("three parts");
        format!("{signed}.{signature}")
    };
    let unknown_issuer =
        TestIssuer::rs256("https://evil.example.com/", "a-key-1").token("alice", AUD);
    let cases = [
        ("token_expired", a.sign(&expired, json!({}))),
        ("signature_invalid", bad_signature),
        ("audience_mismatch", a.token("alice", "another-api")),
        ("issuer_unknown", unknown_issuer),
    ];
    for protocol in BOTH {
        for (reason, token) in &cases {
            let reply = stack
                .get(
                    protocol,
                    "/orders",
                    &[("authorization", &Stack::bearer(token))],
                )
                .await;
            assert_eq!(reply.status, 401, "{reason} over {protocol:?}");
            let challenge = reply.header("www-authenticate").unwrap_or_default();
            assert!(
                challenge.starts_with(
                    "Bearer realm=\"orders\", error=\"invalid_token\", error_description=\""
                ),
                "{reason}: {challenge}"
            );
            assert!(reply.upstream.is_none(), "{reason} reached upstream");
            let log = stack.access_log(&reply).await;
            assert_eq!(log["authz_reason"], *reason);
            assert_eq!(log["authz_decision"], "deny");
            assert_eq!(log["status"], 401);
        }
    }
}

#[tokio::test]
async fn a_route_with_ext_authz_disabled_is_not_checked() {
    let stack = Stack::start("disabled").await;
    for protocol in BOTH {
        let reply = stack.get(protocol, "/healthz", &[]).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert!(reply.upstream.is_some());
        let log = stack.access_log(&reply).await;
        // No check ran, so fedauthz wrote no metadata.
        assert_eq!(log["authz_decision"], Value::Null, "{log}");
    }
}

#[tokio::test]
async fn context_extensions_select_the_route_rules() {
    let stack = Stack::start("routes").await;
    let a_token = Stack::bearer(&stack.a.token("alice", AUD));
    let b_token = Stack::bearer(&stack.b.token("bob", AUD));
    for protocol in BOTH {
        // /admin (api: admin) accepts issuer-a only.
        let reply = stack
            .get(protocol, "/admin/users", &[("authorization", &a_token)])
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let reply = stack
            .get(protocol, "/admin/users", &[("authorization", &b_token)])
            .await;
        assert_eq!(reply.status, 403);
        assert!(reply.upstream.is_none());
        assert!(
            reply
                .header("www-authenticate")
                .is_some_and(|c| c.contains("error=\"insufficient_scope\"")),
            "{:?}",
            reply.headers
        );
        assert_eq!(
            stack.access_log(&reply).await["authz_reason"],
            "requirement_not_met"
        );
        // /orders (api: orders) accepts both issuers.
        let reply = stack
            .get(protocol, "/orders", &[("authorization", &b_token)])
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
}

#[tokio::test]
async fn duplicate_and_very_large_headers() {
    let stack = Stack::start("headers").await;
    let token = Stack::bearer(&stack.a.token("alice", AUD));
    let other = Stack::bearer(&stack.b.token("bob", AUD));
    let large = "x".repeat(40 * 1024);
    for protocol in BOTH {
        // Two credentials: refused as ambiguous, never "the first one wins".
        let reply = stack
            .get(
                protocol,
                "/orders",
                &[("authorization", &token), ("authorization", &other)],
            )
            .await;
        assert_eq!(reply.status, 400, "{protocol:?}: {}", reply.body);
        assert!(
            reply
                .header("www-authenticate")
                .is_some_and(|c| c.contains("error=\"invalid_request\""))
        );
        assert_eq!(
            stack.access_log(&reply).await["authz_reason"],
            "credential_ambiguous"
        );

        // Another scheme's header beside the bearer one is two credentials as well.
        let reply = stack
            .get(
                protocol,
                "/orders",
                &[
                    ("authorization", "Basic YWxpY2U6c2VjcmV0"),
                    ("authorization", &token),
                ],
            )
            .await;
        assert_eq!(reply.status, 400, "{protocol:?}: {}", reply.body);
        // One credential that merely contains commas (a JWS in JSON serialization) is one
        // malformed token: 401, not "two credentials".
        let json_jws =
            r#"Bearer {"payload":"e30","signatures":[{"protected":"e30","signature":"c2ln"}]}"#;
        let reply = stack
            .get(protocol, "/orders", &[("authorization", json_jws)])
            .await;
        assert_eq!(reply.status, 401, "{protocol:?}: {}", reply.body);
        assert_eq!(
            stack.access_log(&reply).await["authz_reason"],
            "token_malformed"
        );

        // A repeated ordinary header passes through untouched.
        let reply = stack
            .get(
                protocol,
                "/orders",
                &[
                    ("authorization", &token),
                    ("x-tag", "one"),
                    ("x-tag", "two"),
                ],
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let upstream = reply.upstream.expect("reached upstream");
        let tags = upstream.values("x-tag").join(",");
        assert!(tags == "one,two" || tags == "one, two", "{tags}");

        // A 40 KiB unrelated header next to a valid token.
        let reply = stack
            .get(
                protocol,
                "/orders",
                &[("authorization", &token), ("x-large", &large)],
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(
            reply.upstream.expect("reached upstream").values("x-large"),
            [large.as_str()]
        );

        // A token over the 8 KiB cap.
        let mut claims = stack.a.claims("alice", AUD);
        claims.insert("padding".into(), json!("p".repeat(9 * 1024)));
        let huge = Stack::bearer(&stack.a.sign(&claims, json!({})));
        let reply = stack
            .get(protocol, "/orders", &[("authorization", &huge)])
            .await;
        assert_eq!(reply.status, 401);
        assert_eq!(
            stack.access_log(&reply).await["authz_reason"],
            "token_too_large"
        );
    }
}

#[tokio::test]
async fn envoy_fails_closed_while_fedauthz_is_down_and_recovers() {
    let mut stack = Stack::start("fail-closed").await;
    let token = Stack::bearer(&stack.a.token("alice", AUD));
    let reply = stack
        .get(Protocol::Http1, "/orders", &[("authorization", &token)])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);

    stack.stop_fedauthz();
    for protocol in BOTH {
        let reply = stack
            .get(protocol, "/orders", &[("authorization", &token)])
            .await;
        assert_eq!(
            reply.status, 403,
            "failure_mode_allow=false: {}",
            reply.body
        );
        assert!(
            reply.upstream.is_none(),
            "nothing passes while fedauthz is down"
        );
    }

    stack.restart_fedauthz().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = stack
            .get(Protocol::Http1, "/orders", &[("authorization", &token)])
            .await;
        if reply.status == 200 {
            assert!(reply.upstream.is_some());
            break;
        }
        assert_eq!(reply.status, 403, "{}", reply.body);
        assert!(Instant::now() < deadline, "Envoy did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reply = stack.get(Protocol::Http2, "/orders", &[]).await;
    assert_eq!(reply.status, 401, "checks run again after recovery");
}

#[tokio::test]
async fn the_orders_api_example_runs_through_envoy() {
    // deploy/examples/orders-api.yaml as shipped, except that each issuer's keys are test keys.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/orders-api.yaml");
    let mut config = fedauthz::config::load_file(&example).expect("the example loads");
    let issuer_of = |id: &str| {
        config
            .issuers
            .iter()
            .find(|i| i.id == id)
            .map(|i| i.issuer.clone())
            .expect("issuer in the example")
    };
    let entra = TestIssuer::rs256(&issuer_of("entra"), "entra-1");
    let cognito = TestIssuer::rs256(&issuer_of("cognito"), "cognito-1");
    let cluster = TestIssuer::rs256(&issuer_of("cluster"), "cluster-1");
    for issuer in &mut config.issuers {
        let jwks = match issuer.id.as_str() {
            "entra" => entra.jwks(),
            "cognito" => cognito.jwks(),
            _ => cluster.jwks(),
        };
        issuer.keys = Some(fedauthz::config::KeySource {
            jwks: Some(jwks),
            ..fedauthz::config::KeySource::default()
        });
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // JSON is YAML: the edited configuration is written back as JSON.
    std::fs::write(
        dir.path().join("fedauthz.yaml"),
        serde_json::to_string_pretty(&config).expect("serialize"),
    )
    .expect("write");
    let jwks = JwksServer::start(Answer::Json(entra.jwks().to_string())).await;
    let example_audience = |id: &str| {
        config
            .issuers
            .iter()
            .find(|i| i.id == id)
            .and_then(|i| i.audiences.first().cloned())
            .expect("audience")
    };
    let entra_token = |extra: Value| {
        let mut claims = entra.claims("alice", &example_audience("entra"));
        claims.insert("tid".into(), "11111111-2222-3333-4444-555555555555".into());
        if let Value::Object(extra) = extra {
            claims.extend(extra);
        }
        Stack::bearer(&entra.sign(&claims, json!({})))
    };
    let cognito_token = |scope: &str| {
        let mut claims = cognito.claims("machine", "unused");
        claims.remove("aud");
        claims.insert("client_id".into(), example_audience("cognito").into());
        claims.insert("token_use".into(), "access".into());
        claims.insert("scope".into(), scope.into());
        Stack::bearer(&cognito.sign(&claims, json!({})))
    };
    let cluster_token = |namespace: &str| {
        let mut claims = cluster.claims(
            &format!("system:serviceaccount:{namespace}:api"),
            "orders-api",
        );
        claims.insert(
            "kubernetes.io".into(),
            json!({"namespace": namespace, "serviceaccount": {"name": "api", "uid": "u"}}),
        );
        Stack::bearer(&cluster.sign(&claims, json!({})))
    };
    let stack = Stack::launch(
        "orders-example",
        dir,
        TestIssuer::rs256("https://unused.example", "x"),
        TestIssuer::es256("https://unused2.example", "y"),
        jwks,
    )
    .await;

    let reader = entra_token(json!({"scp": "Orders.Read", "azp": "web-app"}));
    let reply = stack
        .get(Protocol::Http2, "/orders/7", &[("authorization", &reader)])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let upstream = reply.upstream.clone().expect("reached upstream");
    assert_eq!(upstream.values("x-auth-issuer"), ["entra"]);
    assert_eq!(
        upstream.values("x-auth-tenant"),
        ["11111111-2222-3333-4444-555555555555"]
    );
    assert_eq!(upstream.values("x-auth-client"), ["web-app"]);
    assert_eq!(upstream.values("x-auth-identity").len(), 1);
    assert_eq!(
        stack.access_log(&reply).await["authz_reason"],
        "token_valid"
    );

    let reply = stack
        .get(
            Protocol::Http1,
            "/orders",
            &[("authorization", &cognito_token("orders-api/read"))],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.upstream.expect("upstream").values("x-auth-client"),
        [example_audience("cognito").as_str()]
    );

    let reply = stack
        .get(
            Protocol::Http1,
            "/orders",
            &[("authorization", &cluster_token("payments"))],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.upstream.expect("upstream").values("x-auth-tenant"),
        ["payments"]
    );

    // Valid tokens without access are 403 insufficient_scope, and never reach the upstream.
    for token in [
        cluster_token("marketing"),
        cognito_token("orders-api/write"),
    ] {
        let reply = stack
            .get(Protocol::Http1, "/orders", &[("authorization", &token)])
            .await;
        assert_eq!(reply.status, 403, "{}", reply.body);
        assert!(reply.upstream.is_none());
        assert!(
            reply
                .header("www-authenticate")
                .is_some_and(|c| c.contains("insufficient_scope"))
        );
    }
    // Health is anonymous; other paths have no route.
    assert_eq!(
        stack.get(Protocol::Http1, "/healthz", &[]).await.status,
        200
    );
    let reply = stack
        .get(Protocol::Http1, "/private", &[("authorization", &reader)])
        .await;
    assert_eq!(reply.status, 403);
    assert_eq!(
        stack.access_log(&reply).await["authz_reason"],
        "no_route_matched"
    );
}

#[test]
fn every_shipped_envoy_config_validates() {
    let envoy = envoy_binary();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/envoy");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("deploy/envoy") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        // Files the config names under /etc/envoy/ must exist for Envoy to validate it.
        let files = tempfile::tempdir().expect("tempdir");
        let yaml = std::fs::read_to_string(&path).expect("read config");
        let (yaml, _) = with_envoy_files(&yaml, files.path(), &EnvoyFiles::generated());
        let validated = files.path().join("envoy.yaml");
        std::fs::write(&validated, yaml).expect("write config");
        let output = Command::new(&envoy)
            .args(["--mode", "validate", "-l", "error", "-c"])
            .arg(&validated)
            .output()
            .expect("run envoy --mode validate");
        assert!(
            output.status.success(),
            "{} does not validate:\n{}{}",
            path.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 1, "no Envoy configs found in {}", dir.display());
}

/// The shipped Envoy example with tracing on: Envoy's OpenTelemetry tracer exports to the
/// `otel` cluster at `collector`.
fn traced_envoy_yaml(
    listener: u16,
    admin: u16,
    fedauthz: u16,
    upstream: u16,
    collector: u16,
) -> String {
    let yaml = envoy_yaml(listener, admin, fedauthz, upstream);
    let anchor = "          stat_prefix: ingress_http\n";
    assert_eq!(
        yaml.matches(anchor).count(),
        1,
        "one HCM stat_prefix to anchor tracing at"
    );
    let tracing = "          tracing:
            random_sampling: { value: 100 }
            provider:
              name: envoy.tracers.opentelemetry
              typed_config:
                \"@type\": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                grpc_service: { envoy_grpc: { cluster_name: otel }, timeout: 1s }
                service_name: envoy
";
    let cluster = format!(
        "
  - name: otel
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    load_assignment:
      cluster_name: otel
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: 127.0.0.1, port_value: {collector} }}
"
    );
    // Envoy's tracer flushes every 5 s by default; a test wants its spans sooner.
    let runtime = "
layered_runtime:
  layers:
  - name: static
    static_layer: { tracing.opentelemetry.flush_interval_ms: 100 }
";
    format!(
        "{}{cluster}{runtime}",
        yaml.replace(anchor, &format!("{anchor}{tracing}"))
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trace_runs_from_the_client_through_envoy_into_fedauthz() {
    let (collector, received) = common::otlp::grpc_receiver().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let issuer = TestIssuer::es256("https://partners.example.com/", "b-key-1");
    let config = dir.path().join("fedauthz.yaml");
    std::fs::write(
        &config,
        format!(
            "issuers:\n  - id: partners\n    issuer: {}\n    keys: {{ jwks: {} }}\n    audiences: [{AUD}]\n",
            issuer.iss,
            issuer.jwks()
        ),
    )
    .expect("write config");
    let echo = Echo::start().await;
    let grpc = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let endpoint = format!("http://{collector}");
    let _fedauthz = start_fedauthz_with(
        &config,
        grpc,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .await;
    let listener = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let envoy_config = dir.path().join("envoy.yaml");
    std::fs::write(
        &envoy_config,
        traced_envoy_yaml(
            listener.port(),
            admin.port(),
            grpc.port(),
            echo.addr.port(),
            collector.port(),
        ),
    )
    .expect("write envoy config");
    let mut envoy = start_envoy(&envoy_config, admin, Stdio::null()).await;

    // No x-request-id from the client: Envoy keeps its sampling decision in the UUID it
    // generates, and a foreign id would leave the request unsampled.
    let trace_id = "5b8efff798038103d269b633813fc60c";
    let client_span = "eee19b7ec3c1b174";
    let response = reqwest::Client::new()
        .get(format!("http://{listener}/orders"))
        .header(
            "authorization",
            format!("Bearer {}", issuer.token("alice", AUD)),
        )
        .header("traceparent", format!("00-{trace_id}-{client_span}-01"))
        .send()
        .await
        .expect("request through Envoy");
    assert_eq!(response.status(), 200, "{}", envoy.stderr());

    // fedauthz's Check span is in the client's trace, under a span of Envoy's.
    let (_, check) = received.wait_for("ext_authz.check", trace_id).await;
    assert_eq!(
        common::otlp::attribute(&check, "fedauthz.decision").as_deref(),
        Some("allow")
    );
    let parent = common::otlp::hex(&check.parent_span_id);
    assert_ne!(
        parent, client_span,
        "Envoy's span sits between the client and fedauthz"
    );
    let (service, envoy_span) = received.wait_for_id(&parent).await;
    assert_eq!(
        service, "envoy",
        "the parent of fedauthz's check is Envoy's span"
    );
    assert_eq!(common::otlp::hex(&envoy_span.trace_id), trace_id);
}

#[tokio::test]
async fn a_cookie_credential_is_taken_out_of_the_cookie_header_upstream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = TestIssuer::rs256("https://unused.example", "x");
    let b = TestIssuer::es256("https://access.example.com", "cf-1");
    let jwks = JwksServer::start(Answer::Json(a.jwks().to_string())).await;
    std::fs::write(
        dir.path().join("fedauthz.yaml"),
        format!(
            "issuers:\n  - id: access\n    issuer: {}\n    keys: {{ jwks: {} }}\n    audiences: [{AUD}]\n    token_locations: [{{ cookie: CF_Authorization }}]\n",
            b.iss,
            b.jwks()
        ),
    )
    .expect("write config");
    let stack = Stack::launch("cookie", dir, a, b, jwks).await;
    let token = stack.b.token("alice", AUD);
    for protocol in BOTH {
        // With other cookies: only the credential cookie goes.
        let reply = stack
            .get(
                protocol,
                "/orders/1",
                &[(
                    "cookie",
                    &format!("theme=dark; CF_Authorization={token}; lang=en"),
                )],
            )
            .await;
        assert_eq!(reply.status, 200, "{protocol:?}: {}", reply.body);
        let upstream = reply.upstream.as_ref().expect("reached upstream");
        assert_eq!(upstream.values("x-auth-subject"), ["alice"]);
        assert_eq!(
            upstream.values("cookie"),
            ["theme=dark; lang=en"],
            "{protocol:?}"
        );
        // Alone: the cookie header goes.
        let reply = stack
            .get(
                protocol,
                "/orders/2",
                &[("cookie", &format!("CF_Authorization={token}"))],
            )
            .await;
        assert_eq!(reply.status, 200, "{protocol:?}: {}", reply.body);
        let upstream = reply.upstream.as_ref().expect("reached upstream");
        assert!(
            upstream.values("cookie").is_empty(),
            "{protocol:?}: {upstream:?}"
        );
        let all = format!("{upstream:?}");
        assert!(
            !all.contains(&token),
            "{protocol:?}: the token reached upstream"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// mTLS between Envoy and fedauthz (deploy/envoy/envoy-mtls.yaml).

const ENVOY_ID: &str = "spiffe://cluster.local/ns/gateways/sa/envoy";

/// What Envoy's TLS files under `/etc/envoy/` hold.
struct EnvoyFiles {
    /// The client certificate (`None`: the config's `tls_certificates` entry is dropped).
    client: Option<common::pki::Leaf>,
    /// The CA Envoy trusts for fedauthz's certificate.
    trusted_ca: String,
}

impl EnvoyFiles {
    /// Throwaway files that satisfy `envoy --mode validate`.
    fn generated() -> Self {
        let ca = common::pki::Ca::new("validation");
        Self {
            client: Some(ca.leaf(&[ENVOY_ID])),
            trusted_ca: ca.pem,
        }
    }
}

/// `yaml` with every `/etc/envoy/` path moved under `dir`, where `files` are written; returns
/// the config and how many paths were moved.
fn with_envoy_files(yaml: &str, dir: &Path, files: &EnvoyFiles) -> (String, usize) {
    let mut yaml = yaml.to_owned();
    if files.client.is_none() {
        let start = yaml
            .find("          tls_certificates:\n")
            .expect("tls_certificates");
        let end = yaml[start..]
            .find("          validation_context:")
            .map(|at| start + at)
            .expect("validation_context follows");
        yaml.replace_range(start..end, "");
    }
    let moved = yaml.matches("filename: /etc/envoy/").count();
    let root = format!("{}/", dir.display());
    for (file, text) in [
        (
            "fedauthz-client/tls.crt",
            files.client.as_ref().map(|c| c.cert_pem.clone()),
        ),
        (
            "fedauthz-client/tls.key",
            files.client.as_ref().map(|c| c.key_pem.clone()),
        ),
        ("fedauthz-ca/ca.crt", Some(files.trusted_ca.clone())),
    ] {
        if let Some(text) = text {
            let path = dir.join(file);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
            std::fs::write(path, text).expect("write Envoy file");
        }
    }
    (yaml.replace("/etc/envoy/", &root), moved)
}

/// The shipped mTLS example with its ports replaced and its files under `dir`.
fn mtls_envoy_yaml(ports: [u16; 4], dir: &Path, files: &EnvoyFiles) -> String {
    let mut yaml = ENVOY_MTLS.to_owned();
    for (from, to) in [10000, 9901, 50051, 8080].into_iter().zip(ports) {
        let from = format!("port_value: {from} ");
        assert_eq!(
            yaml.matches(&from).count(),
            1,
            "envoy-mtls.yaml: `{from}` once"
        );
        yaml = yaml.replace(&from, &format!("port_value: {to} "));
    }
    let (yaml, moved) = with_envoy_files(&yaml, dir, files);
    // The CA, plus the client certificate and key when there is one.
    let expected = if files.client.is_some() { 3 } else { 1 };
    assert_eq!(
        moved, expected,
        "envoy-mtls.yaml names its files under /etc/envoy/"
    );
    yaml
}

async fn fedauthz_metric(admin: SocketAddr, series: &str) -> i64 {
    let text = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("metrics");
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn envoy_over_mtls_is_checked_and_every_refused_handshake_fails_closed() {
    use common::pki::Ca;
    let dir = tempfile::tempdir().expect("tempdir");
    let server_ca = Ca::new("fedauthz server CA");
    let client_ca = Ca::new("gateway client CA");
    let issuer = TestIssuer::es256("https://partners.example.com/", "b-key-1");

    let tls_dir = dir.path().join("fedauthz-tls");
    std::fs::create_dir(&tls_dir).expect("dir");
    let (cert, key) = server_ca.leaf(&["localhost", "127.0.0.1"]).write(&tls_dir);
    let client_ca_file = dir.path().join("client-ca.crt");
    std::fs::write(&client_ca_file, &client_ca.pem).expect("write CA");
    let config = dir.path().join("fedauthz.yaml");
    std::fs::write(
        &config,
        format!(
            "server:\n  tls:\n    certificate_file: {}\n    private_key_file: {}\n    client_certificates:\n      ca_file: {}\n      allowed_identities: {{uris: ['{ENVOY_ID}']}}\nissuers:\n  - {{id: partners, issuer: '{}', audiences: [{AUD}], keys: {{jwks: {}}}}}\nroutes:\n  - {{name: gateway, match: {{callers: ['{ENVOY_ID}']}}}}\n",
            cert.display(),
            key.display(),
            client_ca_file.display(),
            issuer.iss,
            issuer.jwks()
        ),
    )
    .expect("write config");
    let grpc = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (mut fedauthz, fedauthz_admin) = start_fedauthz_admin(&config, grpc, &[]).await;
    let echo = Echo::start().await;
    let token = issuer.token("alice", AUD);
    let client = reqwest::Client::new();

    // One Envoy per setup; each answers one request with a token and one without.
    let run = |name: &'static str, files: EnvoyFiles| {
        let (dir, echo_port, client) = (dir.path().to_path_buf(), echo.addr.port(), client.clone());
        let token = token.clone();
        async move {
            let envoy_dir = dir.join(name);
            std::fs::create_dir(&envoy_dir).expect("dir");
            let (listener, admin) = (free_port(), free_port());
            let yaml = mtls_envoy_yaml(
                [listener, admin, grpc.port(), echo_port],
                &envoy_dir,
                &files,
            );
            let envoy_config = envoy_dir.join("envoy.yaml");
            std::fs::write(&envoy_config, yaml).expect("write Envoy config");
            let mut envoy = start_envoy(
                &envoy_config,
                SocketAddr::from(([127, 0, 0, 1], admin)),
                Stdio::null(),
            )
            .await;
            let get = |request_id: &str, token: Option<&str>| {
                let mut request = client
                    .get(format!("http://127.0.0.1:{listener}/orders"))
                    .header("x-request-id", request_id);
                if let Some(token) = token {
                    request = request.header("authorization", format!("Bearer {token}"));
                }
                request.send()
            };
            let with_token = get(&format!("{name}-token"), Some(&token))
                .await
                .expect("GET");
            let with_token = (
                with_token.status().as_u16(),
                with_token.headers().get("www-authenticate").cloned(),
            );
            let without = get(&format!("{name}-none"), None).await.expect("GET");
            let without = (
                without.status().as_u16(),
                without.headers().get("www-authenticate").cloned(),
            );
            let stderr = envoy.stderr();
            drop(envoy);
            (with_token, without, stderr)
        }
    };

    // Envoy with its client certificate and fedauthz's CA: checked like any other call.
    let trusted = run(
        "trusted",
        EnvoyFiles {
            client: Some(client_ca.leaf(&[ENVOY_ID])),
            trusted_ca: server_ca.pem.clone(),
        },
    )
    .await;
    assert_eq!(trusted.0.0, 200, "allowed through mTLS: {}", trusted.2);
    let upstream = echo.seen("trusted-token").expect("reached upstream");
    assert_eq!(upstream.values("x-auth-subject"), ["alice"]);
    assert!(upstream.values("authorization").is_empty());
    assert_eq!(trusted.1.0, 401);
    assert!(trusted.1.1.is_some(), "a denial carries its challenge");
    assert!(echo.seen("trusted-none").is_none());

    // Refused setups: Envoy gets no decision, fails closed with 403, the upstream sees nothing,
    // and fedauthz counts why.
    let refused = [
        (
            "wrong-identity",
            EnvoyFiles {
                client: Some(client_ca.leaf(&["spiffe://cluster.local/ns/apps/sa/web"])),
                trusted_ca: server_ca.pem.clone(),
            },
            "client_identity_not_allowed",
        ),
        (
            "foreign-client-ca",
            EnvoyFiles {
                client: Some(Ca::new("rogue").leaf(&[ENVOY_ID])),
                trusted_ca: server_ca.pem.clone(),
            },
            "client_certificate_untrusted",
        ),
        (
            "no-client-certificate",
            EnvoyFiles {
                client: None,
                trusted_ca: server_ca.pem.clone(),
            },
            "no_client_certificate",
        ),
        (
            // fedauthz's certificate is not one Envoy trusts.
            "untrusted-server",
            EnvoyFiles {
                client: Some(client_ca.leaf(&[ENVOY_ID])),
                trusted_ca: Ca::new("another server CA").pem,
            },
            "rejected_by_client",
        ),
    ];
    for (name, files, reason) in refused {
        let (with_token, without, stderr) = run(name, files).await;
        assert_eq!(with_token.0, 403, "{name}: fails closed\n{stderr}");
        assert_eq!(without.0, 403, "{name}: fails closed\n{stderr}");
        assert!(echo.seen(&format!("{name}-token")).is_none(), "{name}");
        let series = format!(
            "fedauthz_tls_handshake_failures_total{{listener=\"grpc\",reason=\"{reason}\"}}"
        );
        assert!(
            fedauthz_metric(fedauthz_admin, &series).await >= 1,
            "{name}: {series}"
        );
    }
    fedauthz.signal("TERM");
    assert!(fedauthz.wait_exit().success());
}

/// A key as `fedauthz apikey` prints it, and its entry (as text) with `extra` fields.
fn api_key(args: &[&str], extra: serde_json::Value) -> (String, String) {
    let (key, entry) = common::api_key(args, extra);
    (key, entry.to_string())
}

#[tokio::test]
async fn api_keys_through_envoy_grant_identities_and_never_reach_the_upstream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = TestIssuer::rs256("https://unused.example", "x");
    let b = TestIssuer::es256("https://partners.example.com/", "b-key-1");
    let jwks = JwksServer::start(Answer::Json(a.jwks().to_string())).await;
    let (good, good_entry) = api_key(&["--id", "acme", "--subject", "acme-svc"], json!({}));
    let (old, old_entry) = api_key(
        &["--id", "old", "--subject", "old-svc"],
        json!({"expires": "2020-01-01T00:00:00Z"}),
    );
    let (early, early_entry) = api_key(
        &["--id", "early", "--subject", "early-svc"],
        json!({"not_before": "2999-01-01T00:00:00Z"}),
    );
    let (ops, ops_entry) = api_key(
        &["--prefix", "ops_", "--id", "oncall", "--subject", "ops"],
        json!({}),
    );
    std::fs::write(
        dir.path().join("fedauthz.yaml"),
        format!(
            r#"
response:
  realm: orders
issuers:
  - {{ id: issuer-b, issuer: '{b_iss}', audiences: [{AUD}], keys: {{ jwks: {b_jwks} }} }}
api_keys:
  - id: partners
    keys: [{good_entry}, {old_entry}, {early_entry}]
  - id: ops
    prefix: ops_
    locations: [{{ header: authorization, scheme: ApiKey }}]
    keys: [{ops_entry}]
routes:
  - name: admin
    match: {{ context_extensions: {{ api: admin }} }}
    require: {{ issuers: [ops] }}
  - name: public
    match: {{ context_extensions: {{ api: public }} }}
    allow_anonymous: true
    prefer_credential: jwt
  - name: orders
    match: {{ context_extensions: {{ api: orders }} }}
"#,
            b_iss = b.iss,
            b_jwks = b.jwks(),
        ),
    )
    .expect("write config");
    let stack = Stack::launch("api-keys", dir, a, b, jwks).await;
    for protocol in BOTH {
        let reply = stack
            .get(
                protocol,
                "/orders/1",
                &[("x-api-key", &good), ("x-auth-subject", "mallory")],
            )
            .await;
        assert_eq!(reply.status, 200, "{protocol:?}: {}", reply.body);
        let upstream = reply.upstream.as_ref().expect("reached upstream");
        assert_eq!(upstream.values("x-auth-subject"), ["acme-svc"]);
        assert_eq!(upstream.values("x-auth-issuer"), ["partners"]);
        assert!(
            upstream.values("x-api-key").is_empty(),
            "the key reached the upstream"
        );
        let log = stack.access_log(&reply).await;
        assert_eq!(log["authz_reason"], "token_valid");
        assert_eq!(log["authz_issuer"], "partners");
    }
    let mut wrong = good.clone();
    wrong.truncate(wrong.len() - 3);
    wrong.push_str("AAA");
    let ops_header = format!("ApiKey {ops}");
    let good_as_ops = format!("ApiKey {good}");
    let token = Stack::bearer(&stack.b.token("alice", AUD));
    /// What is sent (case, path, headers) and what must come of it (status, reason).
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: [Case<'_>; 8] = [
        (
            "wrong secret",
            "/orders/1",
            vec![("x-api-key", wrong.as_str())],
            401,
            "api_key_unknown",
        ),
        (
            "expired",
            "/orders/1",
            vec![("x-api-key", old.as_str())],
            401,
            "api_key_expired",
        ),
        (
            "not yet valid",
            "/orders/1",
            vec![("x-api-key", early.as_str())],
            401,
            "api_key_not_yet_valid",
        ),
        (
            "a location its set does not read",
            "/orders/1",
            vec![("authorization", good_as_ops.as_str())],
            401,
            "token_location_not_allowed",
        ),
        (
            "a route for another set",
            "/admin/x",
            vec![("x-api-key", good.as_str())],
            403,
            "requirement_not_met",
        ),
        (
            "the ops key on its route",
            "/admin/x",
            vec![("authorization", ops_header.as_str())],
            200,
            "token_valid",
        ),
        (
            "a token and a key, no preference",
            "/orders/1",
            vec![
                ("authorization", token.as_str()),
                ("x-api-key", good.as_str()),
            ],
            400,
            "credential_ambiguous",
        ),
        (
            "a token and a key, the token preferred",
            "/public/x",
            vec![
                ("authorization", token.as_str()),
                ("x-api-key", good.as_str()),
            ],
            200,
            "token_valid",
        ),
    ];
    for (what, path, headers, status, reason) in cases {
        let reply = stack.get(Protocol::Http1, path, &headers).await;
        assert_eq!(reply.status, status, "{what}: {}", reply.body);
        assert_eq!(
            stack.access_log(&reply).await["authz_reason"],
            reason,
            "{what}"
        );
        if let Some(upstream) = &reply.upstream {
            assert!(
                upstream.values("x-api-key").is_empty(),
                "{what}: the key reached the upstream"
            );
            assert!(
                upstream.values("authorization").is_empty(),
                "{what}: a credential reached the upstream"
            );
        }
        if what == "a token and a key, the token preferred" {
            let upstream = reply.upstream.as_ref().expect("reached upstream");
            assert_eq!(upstream.values("x-auth-issuer"), ["issuer-b"]);
        }
    }
}

#[tokio::test]
async fn a_nested_encrypted_token_through_envoy_reaches_the_upstream_as_an_identity() {
    use josekit::jwe::{JweContext, JweHeader, RSA_OAEP_256};
    use josekit::jwk::KeyPair as _;

    let dir = tempfile::tempdir().expect("tempdir");
    let a = TestIssuer::rs256("https://unused.example", "x");
    let b = TestIssuer::es256("https://partners.example.com/", "b-key-1");
    let jwks = JwksServer::start(Answer::Json(a.jwks().to_string())).await;
    let key = RSA_OAEP_256.generate_key_pair(2048).expect("RSA key");
    let key_file = dir.path().join("enc-1.pem");
    std::fs::write(&key_file, key.to_pem_private_key()).expect("write key");
    std::fs::write(
        dir.path().join("fedauthz.yaml"),
        format!(
            "decryption:\n  keys: [{{kid: enc-1, algorithm: RSA-OAEP-256, file: {}}}]\nresponse:\n  headers: {{x-auth-encryption: '{{encryption}}'}}\nissuers:\n  - {{id: partners, issuer: '{}', audiences: [{AUD}], accept_encrypted: true, keys: {{jwks: {}}}}}\n",
            key_file.display(),
            b.iss,
            b.jwks()
        ),
    )
    .expect("write config");
    let stack = Stack::launch("encrypted", dir, a, b, jwks).await;
    let mut header = JweHeader::new();
    header.set_content_encryption("A256GCM");
    header.set_key_id("enc-1");
    header.set_content_type("JWT");
    let encrypter = RSA_OAEP_256
        .encrypter_from_jwk(&key.to_jwk_public_key())
        .expect("encrypter");
    let encrypt = |jws: &str| {
        JweContext::new()
            .serialize_compact(jws.as_bytes(), &header, &encrypter)
            .expect("encrypt")
    };
    let token = encrypt(&stack.b.token("alice", AUD));
    for protocol in BOTH {
        let reply = stack
            .get(
                protocol,
                "/orders/9",
                &[("authorization", &Stack::bearer(&token))],
            )
            .await;
        assert_eq!(reply.status, 200, "{protocol:?}: {}", reply.body);
        let upstream = reply.upstream.as_ref().expect("reached upstream");
        assert_eq!(upstream.values("x-auth-subject"), ["alice"]);
        assert_eq!(upstream.values("x-auth-issuer"), ["partners"]);
        assert_eq!(
            upstream.values("x-auth-encryption"),
            ["RSA-OAEP-256+A256GCM"]
        );
        assert!(upstream.values("authorization").is_empty());
        assert_eq!(
            stack.access_log(&reply).await["authz_reason"],
            "token_valid"
        );
    }
    // A token that does not decrypt stops at Envoy with its reason.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[3] = "AAAA".into();
    let reply = stack
        .get(
            Protocol::Http1,
            "/orders/9",
            &[("authorization", &Stack::bearer(&parts.join(".")))],
        )
        .await;
    assert_eq!(reply.status, 401);
    assert!(reply.upstream.is_none());
    assert_eq!(
        stack.access_log(&reply).await["authz_reason"],
        "decryption_failed"
    );
}

// ---------------------------------------------------------------------------------------------
// Minted tokens verified by Envoy's jwt_authn on the upstream side.

const ENVOY_MINT: &str = include_str!("../deploy/envoy/envoy-mint.yaml");

/// deploy/envoy/envoy-mint.yaml with its ports replaced: `(shipped, chosen, occurrences)`.
fn mint_envoy_yaml(ports: &[(u16, u16, usize)]) -> String {
    let mut yaml = ENVOY_MINT.to_owned();
    for &(from, to, count) in ports {
        let from = format!("port_value: {from} ");
        assert_eq!(
            yaml.matches(&from).count(),
            count,
            "deploy/envoy/envoy-mint.yaml must use `{from}` {count} times"
        );
        yaml = yaml.replace(&from, &format!("port_value: {to} "));
    }
    yaml
}

#[tokio::test]
async fn envoy_jwt_authn_verifies_the_minted_token_against_the_published_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let partners = TestIssuer::es256("https://partners.example.com/", "b-key-1");
    let key_file = common::write_signing_key(&dir.path().join("mint.pem"), "ES256");
    let keys_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = dir.path().join("fedauthz.yaml");
    std::fs::write(
        &config,
        format!(
            "issuers:\n  - {{id: partners, issuer: '{}', audiences: [{AUD}], keys: {{jwks: {}}}}}\nmint:\n  issuer: http://fedauthz.internal\n  audience: orders-api\n  publish: {{listen: '{keys_addr}'}}\n  keys: [{{file: '{}', state: current, initial: true}}]\n",
            partners.iss,
            partners.jwks(),
            key_file.display()
        ),
    )
    .expect("write config");
    let echo = Echo::start().await;
    let grpc = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let _fedauthz = start_fedauthz(&config, grpc).await;
    let (edge, upstream_side, admin) = (free_port(), free_port(), free_port());
    let envoy_config = dir.path().join("envoy.yaml");
    std::fs::write(
        &envoy_config,
        mint_envoy_yaml(&[
            (10000, edge, 1),
            (10001, upstream_side, 2),
            (9901, admin, 1),
            (50051, grpc.port(), 1),
            (8081, keys_addr.port(), 1),
            (8080, echo.addr.port(), 1),
        ]),
    )
    .expect("write envoy config");
    let _envoy = start_envoy(
        &envoy_config,
        SocketAddr::from(([127, 0, 0, 1], admin)),
        Stdio::null(),
    )
    .await;
    let client = reqwest::Client::new();
    let get = |port: u16, id: &str, token: Option<String>| {
        let mut request = client
            .get(format!("http://127.0.0.1:{port}/orders/1"))
            .header("x-request-id", id);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        async move { request.send().await.expect("request").status().as_u16() }
    };

    // client → Envoy ext_authz → fedauthz mints → Envoy jwt_authn verifies → application.
    let external = partners.token("alice", AUD);
    assert_eq!(get(edge, "mint-allowed", Some(external.clone())).await, 200);
    let seen = echo.seen("mint-allowed").expect("reached the application");
    assert_eq!(seen.values("x-verified-subject"), ["partners:alice"]);
    assert_eq!(seen.values("x-verified-issuer"), ["partners"]);
    assert_eq!(seen.values("x-verified-client"), ["partners:alice"]);
    let forwarded = seen.values("authorization");
    let minted = forwarded
        .first()
        .and_then(|v| v.strip_prefix("Bearer "))
        .expect("the minted token, forwarded by jwt_authn")
        .to_owned();
    assert_ne!(
        minted, external,
        "the external token never reaches the application"
    );

    // jwt_authn really verifies: straight to the upstream side, the external token, a
    // tampered minted token and no token are all refused by Envoy.
    assert_eq!(
        get(upstream_side, "mint-external", Some(external)).await,
        401
    );
    let mut parts: Vec<&str> = minted.split('.').collect();
    let forged_claims = {
        use base64::Engine as _;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut claims: Value =
            serde_json::from_slice(&engine.decode(parts[1]).expect("b64")).expect("claims");
        claims["sub"] = json!("partners:admin");
        engine.encode(claims.to_string())
    };
    parts[1] = &forged_claims;
    assert_eq!(
        get(upstream_side, "mint-forged", Some(parts.join("."))).await,
        401
    );
    assert_eq!(get(upstream_side, "mint-none", None).await, 401);
    assert_eq!(
        get(upstream_side, "mint-direct", Some(minted)).await,
        200,
        "the untouched minted token verifies"
    );

    // A denied check never reaches the application.
    assert_eq!(get(edge, "mint-denied", None).await, 401);
    for id in ["mint-external", "mint-forged", "mint-none", "mint-denied"] {
        assert!(echo.seen(id).is_none(), "{id} reached the application");
    }
}
