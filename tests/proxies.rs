//! HTTP mode end to end through real proxies: the client talks to Debian's nginx
//! (`auth_request`) or to Envoy 1.40 (`ext_authz` with `http_service`), the proxy asks the
//! real `fedauthz` binary's HTTP listener, and allowed requests reach an echo upstream that
//! records every header it received.
//!
//! Each proxy runs the shipped configuration (`deploy/nginx/fedauthz.conf`,
//! `deploy/envoy/envoy-http.yaml`) with its ports rewritten, so what they show is what is
//! tested. The shipped Traefik configuration is validated against Traefik's schema (no Traefik
//! binary is installed). Needs the `envoy-e2e` and `nginx-e2e` features, Envoy (`FEDAUTHZ_ENVOY`
//! or `.tools/bin/envoy`) and nginx (`FEDAUTHZ_NGINX` or `/usr/sbin/nginx`); `scripts/test`
//! installs both. Without them these tests fail: they never skip.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::process::Process;
use common::proxy::{Echo, Seen, free_port, keep_logs, start_envoy};
use common::{TestIssuer, now};
use serde_json::{Value, json};

const NGINX_CONF: &str = include_str!("../deploy/nginx/fedauthz.conf");
const ENVOY_HTTP: &str = include_str!("../deploy/envoy/envoy-http.yaml");
const TRAEFIK: &str = include_str!("../deploy/traefik/fedauthz.yaml");
const AUD: &str = "orders-api";

/// Replaces each shipped `from` (which must occur exactly `count` times) with `to`.
fn rewrite(text: &str, file: &str, replacements: &[(&str, String, usize)]) -> String {
    let mut text = text.to_owned();
    for (from, to, count) in replacements {
        assert_eq!(
            text.matches(from).count(),
            *count,
            "{file} must use `{from}` {count} time(s)"
        );
        text = text.replace(from, to);
    }
    text
}

fn nginx_binary() -> PathBuf {
    let path =
        std::env::var_os("FEDAUTHZ_NGINX").map_or_else(|| "/usr/sbin/nginx".into(), PathBuf::from);
    assert!(
        path.is_file(),
        "nginx not found at {}: install Debian's nginx-light (scripts/test does) or set FEDAUTHZ_NGINX",
        path.display()
    );
    path
}

/// fedauthz's configuration: one issuer; anonymous `/public*`, writes to `/orders*` need
/// scope `orders.write`, reads any token of the issuer; every decision logged.
fn fedauthz_config(issuer: &TestIssuer, http: SocketAddr, key_entry: &str) -> String {
    format!(
        r#"
server:
  http:
    listen: {http}
    trusted_proxies: [127.0.0.1/32]
response:
  realm: orders
decision_log:
  sample_allowed: 1.0
issuers:
  - id: corp
    issuer: {iss}
    keys: {{ jwks: {jwks} }}
    audiences: [{AUD}]
  # Its keys never load: its tokens are keys_unavailable (503).
  - id: down
    issuer: https://down.example.com/
    keys: {{ jwks_uri: "{down}/keys", insecure_http: true }}
    audiences: [{AUD}]
api_keys:
  - id: partners
    keys: [{key_entry}]
routes:
  - name: shop
    match: {{ hosts: [shop.example.com], paths: ["/shop*"] }}
    allow_anonymous: true
  - name: public
    match: {{ paths: ["/public*"] }}
    allow_anonymous: true
  - name: orders-write
    match: {{ paths: ["/orders*"], methods: [POST, PUT, DELETE] }}
    require: {{ scopes: [orders.write] }}
  - name: orders-read
    match: {{ paths: ["/orders*"] }}
"#,
        iss = issuer.iss,
        jwks = issuer.jwks(),
        down = common::keyserver::closed_port_url(),
    )
}

/// The proxy under test, fedauthz behind it and the echo upstream.
struct Stack {
    name: &'static str,
    dir: tempfile::TempDir,
    issuer: TestIssuer,
    /// A key of the `partners` API key set.
    api_key: String,
    echo: Echo,
    fedauthz: Process,
    proxy: Process,
    listener: SocketAddr,
    client: reqwest::Client,
    next_id: usize,
}

/// What the client got, what reached the upstream, and fedauthz's decision line.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
    upstream: Option<Seen>,
    decision: Value,
    request_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proxy {
    Nginx,
    Envoy,
}

impl Stack {
    async fn start(name: &'static str, proxy: Proxy) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let issuer = TestIssuer::es256("https://login.example.com/", "k1");
        let echo = Echo::start().await;
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = dir.path().join("fedauthz.yaml");
        let (api_key, entry) = common::api_key(
            &[
                "--id",
                "edge",
                "--subject",
                "partner-svc",
                "--scope",
                "orders.read",
            ],
            json!({}),
        );
        std::fs::write(&config, fedauthz_config(&issuer, http, &entry.to_string()))
            .expect("write config");
        let mut fedauthz = Process::spawn(
            Command::new(env!("CARGO_BIN_EXE_fedauthz"))
                .arg("serve")
                .arg("--config")
                .arg(&config)
                .args([
                    "--grpc-listen",
                    "127.0.0.1:0",
                    "--admin-listen",
                    "127.0.0.1:0",
                ])
                .args(["--log-format", "json"])
                .env("RUST_LOG", "info")
                .stdout(Stdio::null()),
        );
        let line = fedauthz.wait_for("fedauthz listening");
        let log: Value = serde_json::from_str(&line).expect("JSON log line");
        assert_eq!(log["fields"]["http"], http.to_string(), "{line}");
        let listener = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let proxy = match proxy {
            Proxy::Nginx => start_nginx(dir.path(), listener, http, echo.addr).await,
            Proxy::Envoy => {
                let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
                let yaml = rewrite(
                    ENVOY_HTTP,
                    "deploy/envoy/envoy-http.yaml",
                    &[
                        (
                            "port_value: 10000 ",
                            format!("port_value: {} ", listener.port()),
                            1,
                        ),
                        (
                            "port_value: 9901 ",
                            format!("port_value: {} ", admin.port()),
                            1,
                        ),
                        (
                            "port_value: 9192 ",
                            format!("port_value: {} ", http.port()),
                            1,
                        ),
                        (
                            "uri: http://127.0.0.1:9192",
                            format!("uri: http://{http}"),
                            1,
                        ),
                        (
                            "port_value: 8080 ",
                            format!("port_value: {} ", echo.addr.port()),
                            1,
                        ),
                    ],
                );
                let path = dir.path().join("envoy.yaml");
                std::fs::write(&path, yaml).expect("write envoy config");
                let log = std::fs::File::create(dir.path().join("access.log")).expect("log");
                start_envoy(&path, admin, Stdio::from(log)).await
            }
        };
        Self {
            name,
            dir,
            issuer,
            api_key,
            echo,
            fedauthz,
            proxy,
            listener,
            client: reqwest::Client::builder()
                .http1_only()
                .build()
                .expect("client"),
            next_id: 0,
        }
    }

    async fn send(&mut self, method: &str, path: &str, headers: &[(&str, String)]) -> Reply {
        self.next_id += 1;
        let request_id = format!("{}-{}", self.name, self.next_id);
        let request = headers.iter().fold(
            self.client
                .request(
                    method.parse().expect("method"),
                    format!("http://{}{path}", self.listener),
                )
                .header("x-request-id", &request_id),
            |request, (name, value)| request.header(*name, value),
        );
        let response = request.send().await.expect("request through the proxy");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await.unwrap_or_default();
        let decision = self.decision(&request_id);
        Reply {
            status,
            headers,
            body,
            upstream: self.echo.seen(&request_id),
            decision,
            request_id,
        }
    }

    /// fedauthz's decision line for `request_id` (waits for it).
    fn decision(&mut self, request_id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self
                .fedauthz
                .stderr()
                .lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .find(|line| {
                    line["target"] == "fedauthz::decision"
                        && line["fields"]["request_id"] == request_id
                });
            if let Some(line) = found {
                return line["fields"].clone();
            }
            assert!(
                Instant::now() < deadline,
                "no decision line for {request_id}:\n{}",
                self.fedauthz.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Envoy's access log line for `request_id` (waits for Envoy to flush it).
    fn envoy_log(&self, request_id: &str) -> Value {
        let path = self.dir.path().join("access.log");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let line = text
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|l| l["request_id"] == request_id);
            if let Some(line) = line {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no access log line for {request_id}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn token(&self, scope: &str) -> String {
        let mut claims = self.issuer.claims("alice", AUD);
        claims.insert("scope".into(), json!(scope));
        self.issuer.sign(&claims, json!({}))
    }
}

impl Drop for Stack {
    /// On failure, keeps the logs where a developer can read them.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let outputs = [
            ("proxy.stderr", self.proxy.stderr()),
            ("fedauthz.stderr", self.fedauthz.stderr()),
        ];
        keep_logs(
            self.name,
            self.dir.path(),
            &[
                "fedauthz.yaml",
                "envoy.yaml",
                "nginx.conf",
                "fedauthz.conf",
                "access.log",
                "error.log",
            ],
            &outputs,
        );
    }
}

/// nginx on the shipped `fedauthz.conf` (ports and log path rewritten), inside a minimal main
/// configuration whose files all live in `dir`, in the foreground as one process.
async fn start_nginx(
    dir: &Path,
    listen: SocketAddr,
    fedauthz: SocketAddr,
    upstream: SocketAddr,
) -> Process {
    write_nginx_config(dir, listen, fedauthz, upstream);
    let nginx = Process::spawn(
        Command::new(nginx_binary())
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdout(Stdio::null()),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(listen).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "nginx does not listen on {listen}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    nginx
}

fn write_nginx_config(dir: &Path, listen: SocketAddr, fedauthz: SocketAddr, upstream: SocketAddr) {
    let snippet = rewrite(
        NGINX_CONF,
        "deploy/nginx/fedauthz.conf",
        &[
            ("listen 127.0.0.1:8000;", format!("listen {listen};"), 1),
            ("server 127.0.0.1:9192;", format!("server {fedauthz};"), 1),
            ("server 127.0.0.1:8080;", format!("server {upstream};"), 1),
            (
                "/var/log/nginx/fedauthz-access.log",
                dir.join("access.log").display().to_string(),
                1,
            ),
        ],
    );
    std::fs::write(dir.join("fedauthz.conf"), snippet).expect("write snippet");
    let d = dir.display();
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
             access_log off;\n  include {d}/fedauthz.conf;\n}}\n"
        ),
    )
    .expect("write nginx.conf");
}

/// A denial the client must see the same way through either proxy.
struct Denial {
    what: &'static str,
    method: &'static str,
    path: &'static str,
    credential: Option<String>,
    status: u16,
    reason: &'static str,
    /// What the `WWW-Authenticate` the client gets contains (`None`: no challenge).
    challenge: Option<&'static str>,
    /// What nginx answers instead of `status` (it turns anything but 401 and 403 into 500).
    nginx_status: Option<u16>,
    /// Envoy counts a 5xx from the service as an error: it answers `status_on_error` (503 in
    /// the shipped file) itself, without fedauthz's headers or body.
    envoy_error: bool,
}

fn denials(stack: &Stack) -> Vec<Denial> {
    let other = TestIssuer::es256("https://login.example.com/", "k1");
    let mut expired = stack.issuer.claims("alice", AUD);
    expired.insert("exp".into(), json!(now() - 3600));
    expired.insert("iat".into(), json!(now() - 7200));
    let reader = stack.token("orders.read");
    let get = |what, credential: Option<String>, status, reason, challenge| Denial {
        what,
        method: "GET",
        path: "/orders/1",
        credential,
        status,
        reason,
        challenge: Some(challenge),
        nginx_status: None,
        envoy_error: false,
    };
    let mut down = TestIssuer::es256("https://down.example.com/", "d1").claims("alice", AUD);
    down.insert("scope".into(), json!("orders.read"));
    let down = TestIssuer::es256("https://down.example.com/", "d1").sign(&down, json!({}));
    vec![
        get(
            "no credential",
            None,
            401,
            "token_missing",
            r#"Bearer realm="orders""#,
        ),
        get(
            "garbage",
            Some("not-a-jwt".into()),
            401,
            "token_malformed",
            r#"error="invalid_token""#,
        ),
        get(
            "expired",
            Some(stack.issuer.sign(&expired, json!({}))),
            401,
            "token_expired",
            r#"error="invalid_token""#,
        ),
        get(
            "signed by another key",
            Some(other.token("alice", AUD)),
            401,
            "signature_invalid",
            r#"error="invalid_token""#,
        ),
        get(
            "another audience",
            Some(stack.issuer.token("alice", "billing")),
            401,
            "audience_mismatch",
            r#"error="invalid_token""#,
        ),
        Denial {
            what: "a write without the scope",
            method: "DELETE",
            path: "/orders/1",
            credential: Some(reader.clone()),
            status: 403,
            reason: "requirement_not_met",
            challenge: Some(
                r#"error="insufficient_scope", error_description="the token does not grant access to this resource", scope="orders.write""#,
            ),
            nginx_status: None,
            envoy_error: false,
        },
        Denial {
            what: "no route",
            method: "GET",
            path: "/other",
            credential: Some(reader),
            status: 403,
            reason: "no_route_matched",
            challenge: Some(r#"error="insufficient_scope""#),
            nginx_status: None,
            envoy_error: false,
        },
        // Not the client's fault: no challenge; nginx can only say 500.
        Denial {
            what: "an issuer whose keys never loaded",
            method: "GET",
            path: "/orders/1",
            credential: Some(down),
            status: 503,
            reason: "keys_unavailable",
            challenge: None,
            nginx_status: Some(500),
            envoy_error: true,
        },
    ]
}

/// The cases every proxy must pass: allow with identity headers, spoofed copies and the
/// credential gone upstream, anonymous without identity, and each denial with its status,
/// challenge and reason.
async fn the_same_cases(stack: &mut Stack, proxy: Proxy) {
    let spoofed = |token: Option<&str>| {
        let mut headers = vec![
            ("x-auth-subject", "mallory".to_owned()),
            ("x-auth-issuer", "evil".to_owned()),
        ];
        if let Some(token) = token {
            headers.push(("authorization", format!("Bearer {token}")));
        }
        headers
    };
    let token = stack.token("orders.read orders.write");
    for method in ["GET", "POST"] {
        let reply = stack
            .send(method, "/orders/7?x=1", &spoofed(Some(&token)))
            .await;
        assert_eq!(reply.status, 200, "{proxy:?} {method}: {reply:?}");
        let upstream = reply.upstream.as_ref().expect("reached the upstream");
        assert_eq!(
            upstream.values("x-auth-subject"),
            ["alice"],
            "{proxy:?}: {upstream:?}"
        );
        assert_eq!(upstream.values("x-auth-issuer"), ["corp"], "{proxy:?}");
        assert!(
            upstream.values("authorization").is_empty(),
            "{proxy:?}: the credential reached the upstream: {upstream:?}"
        );
        assert_eq!(reply.decision["transport"], "http");
        assert_eq!(reply.decision["reason"], "token_valid");
        let route = if method == "GET" {
            "orders-read"
        } else {
            "orders-write"
        };
        assert_eq!(reply.decision["route"], route, "{proxy:?} {method}");
        if proxy == Proxy::Envoy {
            let log = stack.envoy_log(&reply.request_id);
            assert_eq!(log["authz_reason"], "token_valid", "{log}");
        }
    }
    // The original host decides too: a route for another host does not match.
    let reply = stack
        .send(
            "GET",
            "/shop/cart",
            &[("host", "shop.example.com".to_owned())],
        )
        .await;
    assert_eq!(reply.status, 200, "{proxy:?}: {reply:?}");
    assert_eq!(reply.decision["route"], "shop", "{proxy:?}");
    let reply = stack.send("GET", "/shop/cart", &[]).await;
    assert_eq!(reply.status, 403, "{proxy:?}: {reply:?}");
    assert_eq!(reply.decision["reason"], "no_route_matched", "{proxy:?}");

    // An API key: its identity upstream, the key itself not.
    let mut headers = spoofed(None);
    headers.push(("x-api-key", stack.api_key.clone()));
    let reply = stack.send("GET", "/orders/8", &headers).await;
    assert_eq!(reply.status, 200, "{proxy:?}: {reply:?}");
    let upstream = reply.upstream.as_ref().expect("reached the upstream");
    assert_eq!(
        upstream.values("x-auth-subject"),
        ["partner-svc"],
        "{proxy:?}"
    );
    assert_eq!(upstream.values("x-auth-issuer"), ["partners"], "{proxy:?}");
    assert!(
        upstream.values("x-api-key").is_empty(),
        "{proxy:?}: the API key reached the upstream: {upstream:?}"
    );
    // Anonymous: no identity, so no identity header survives either.
    let reply = stack.send("GET", "/public/page", &spoofed(None)).await;
    assert_eq!(reply.status, 200, "{proxy:?}: {reply:?}");
    let upstream = reply.upstream.as_ref().expect("reached the upstream");
    assert!(
        upstream.values("x-auth-subject").is_empty(),
        "{proxy:?}: {upstream:?}"
    );
    assert!(
        upstream.values("x-auth-issuer").is_empty(),
        "{proxy:?}: {upstream:?}"
    );
    assert_eq!(reply.decision["reason"], "anonymous");

    for denial in denials(stack) {
        let at = format!("{proxy:?}, {}", denial.what);
        let mut headers = spoofed(None);
        if let Some(token) = &denial.credential {
            headers.push(("authorization", format!("Bearer {token}")));
        }
        let reply = stack.send(denial.method, denial.path, &headers).await;
        let status = match proxy {
            Proxy::Nginx => denial.nginx_status.unwrap_or(denial.status),
            Proxy::Envoy => denial.status,
        };
        assert_eq!(reply.status, status, "{at}: {reply:?}");
        assert!(
            reply.upstream.is_none(),
            "{at}: a denied request reached the upstream"
        );
        assert_eq!(reply.decision["reason"], denial.reason, "{at}");
        assert_eq!(reply.decision["transport"], "http", "{at}");
        let challenges: Vec<&str> = reply
            .headers
            .get_all("www-authenticate")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        match denial.challenge {
            Some(challenge) => {
                assert_eq!(challenges.len(), 1, "{at}: one challenge: {challenges:?}");
                assert!(
                    challenges[0].starts_with(r#"Bearer realm="orders""#)
                        && challenges[0].contains(challenge),
                    "{at}: {challenges:?}"
                );
            }
            None => assert!(challenges.is_empty(), "{at}: {challenges:?}"),
        }
        if proxy == Proxy::Envoy && !denial.envoy_error {
            // The decision and reason reach Envoy's access log as dynamic metadata.
            let log = stack.envoy_log(&reply.request_id);
            assert_eq!(log["authz_reason"], denial.reason, "{at}: {log}");
            assert_eq!(log["authz_decision"], "deny", "{at}");
            // Envoy passes fedauthz's body; nginx answers with its own error page.
            let body: Value = serde_json::from_str(&reply.body).expect("JSON body");
            assert_eq!(body["status"], status, "{at}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_auth_request_allows_denies_and_strips_spoofed_identity() {
    let mut stack = Stack::start("nginx-http", Proxy::Nginx).await;
    the_same_cases(&mut stack, Proxy::Nginx).await;
    // The shipped log format says what fedauthz decided and why.
    let log = std::fs::read_to_string(stack.dir.path().join("access.log")).unwrap_or_default();
    assert!(
        log.lines()
            .any(|line| line.contains("nginx-http-1 ")
                && line.ends_with("fedauthz=allow:token_valid")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|line| line.contains(" 401 ") && line.ends_with("fedauthz=deny:token_expired")),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn envoy_http_service_allows_denies_and_strips_spoofed_identity() {
    let mut stack = Stack::start("envoy-http", Proxy::Envoy).await;
    the_same_cases(&mut stack, Proxy::Envoy).await;
}

#[test]
fn the_shipped_nginx_config_passes_nginx_t() {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = |port| SocketAddr::from(([127, 0, 0, 1], port));
    write_nginx_config(dir.path(), addr(8000), addr(9192), addr(8080));
    let output = Command::new(nginx_binary())
        .arg("-t")
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(dir.path().join("nginx.conf"))
        .output()
        .expect("run nginx -t");
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "nginx -t: {text}");
    assert!(text.contains("test is successful"), "{text}");
}

/// The Python that kubernetes-validate runs in: its `jsonschema` package validates the Traefik
/// file (`FEDAUTHZ_KUBERNETES_VALIDATE`, else `.tools/bin/kubernetes-validate`).
fn jsonschema_python() -> PathBuf {
    let validate = std::env::var_os("FEDAUTHZ_KUBERNETES_VALIDATE").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/kubernetes-validate"),
        PathBuf::from,
    );
    let python = std::fs::canonicalize(&validate)
        .ok()
        .and_then(|real| real.parent().map(|bin| bin.join("python")))
        .filter(|python| python.exists());
    python.unwrap_or_else(|| {
        panic!(
            "no Python beside {} (run scripts/install-kubernetes-validate; scripts/test does)",
            validate.display()
        )
    })
}

#[test]
fn the_shipped_traefik_config_matches_traefiks_schema_and_what_fedauthz_needs() {
    let schema = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors/traefik/traefik-v3-file-provider.json");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/traefik/fedauthz.yaml");
    let check = r#"
import json, sys, yaml, jsonschema
schema = json.load(open(sys.argv[1]))
config = yaml.safe_load(open(sys.argv[2]))
errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(config), key=str)
for error in errors:
    print("/".join(map(str, error.absolute_path)) + ": " + error.message)
# A file with a typo must fail the same check.
broken = json.loads(json.dumps(config))
broken["http"]["middlewares"]["fedauthz"]["forwardAuth"]["authResponseHeader"] = []
broken["http"]["routers"]["application"].pop("service")
print("broken:", len(list(jsonschema.Draft7Validator(schema).iter_errors(broken))))
sys.exit(1 if errors else 0)
"#;
    let output = Command::new(jsonschema_python())
        .args(["-c", check])
        .arg(&schema)
        .arg(&config)
        .output()
        .expect("run the schema check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let broken: usize = stdout
        .trim()
        .strip_prefix("broken: ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(broken >= 1, "the schema check must catch a typo: {stdout}");

    // What the schema cannot say: the settings fedauthz's Traefik convention depends on.
    let config: Value = serde_saphyr::from_str(TRAEFIK).expect("YAML");
    let auth = &config["http"]["middlewares"]["fedauthz"]["forwardAuth"];
    assert_eq!(auth["address"], "http://127.0.0.1:9192/traefik");
    assert_eq!(auth["trustForwardHeader"], false);
    let headers: Vec<&str> = auth["authResponseHeaders"]
        .as_array()
        .expect("authResponseHeaders")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for needed in [
        "X-Auth-Subject",
        "X-Auth-Issuer",
        "Authorization",
        "X-Api-Key",
    ] {
        assert!(
            headers.contains(&needed),
            "{needed} missing from {headers:?}"
        );
    }
    assert_eq!(
        config["http"]["routers"]["application"]["middlewares"],
        json!(["fedauthz"])
    );
}
