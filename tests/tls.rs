//! TLS and mTLS on fedauthz's listeners, through the real server on loopback: who may connect,
//! what the routes see of the caller, how certificates rotate under open connections, and
//! what the metrics say about it.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::kubelet::KubeletDir;
use common::pki::{Ca, Leaf, TlsClient};
use common::process::Process;
use common::{RunningServer, TestIssuer, check_request, denied_status, metadata, reason};

const ENVOY_ID: &str = "spiffe://cluster.local/ns/gateways/sa/envoy";
const OTHER_ID: &str = "spiffe://cluster.local/ns/apps/sa/web";
const SERVER_NAMES: &[&str] = &["localhost", "127.0.0.1"];

/// The issuer section every configuration here ends with.
fn issuer_yaml(issuer: &TestIssuer) -> String {
    format!(
        "issuers:\n  - {{id: idp, issuer: '{}', audiences: [api], keys: {{jwks: {}}}}}\n",
        issuer.iss,
        issuer.jwks()
    )
}

/// `server.tls` for `cert`/`key`, asking for client certificates from `ca` when given.
fn tls_yaml(cert: &Path, key: &Path, client_ca: Option<(&Path, &str, &[&str])>) -> String {
    let mut yaml = format!(
        "server:\n  tls:\n    certificate_file: {}\n    private_key_file: {}\n",
        cert.display(),
        key.display()
    );
    if let Some((ca, mode, uris)) = client_ca {
        yaml.push_str(&format!(
            "    client_certificates:\n      ca_file: {}\n      mode: {mode}\n      allowed_identities: {{uris: {uris:?}}}\n",
            ca.display()
        ));
    }
    yaml
}

/// A counter or gauge from /metrics (0 when absent).
async fn metric(server: &RunningServer, series: &str) -> i64 {
    let (_, text) = server.admin_get("/metrics").await;
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

async fn wait_metric(server: &RunningServer, series: &str, at_least: i64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let value = metric(server, series).await;
        if value >= at_least {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} stayed {value}, wanted >= {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn failures(reason: &str) -> String {
    format!("fedauthz_tls_handshake_failures_total{{listener=\"grpc\",reason=\"{reason}\"}}")
}

/// A Check through `client`: the response, or the RPC error text.
async fn check(
    client: &TlsClient,
    token: &str,
) -> Result<fedauthz::proto::auth::CheckResponse, String> {
    let mut grpc = client.client.clone();
    let headers = [("authorization", format!("Bearer {token}"))];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    tokio::time::timeout(Duration::from_secs(10), grpc.check(check_request(&headers)))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map(tonic::Response::into_inner)
        .map_err(|status| status.to_string())
}

#[tokio::test]
async fn mtls_admits_the_allowed_identity_and_refuses_every_other_caller_at_the_handshake() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("client CA");
    let server_ca = Ca::new("server CA");
    let (cert, key) = server_ca.leaf(SERVER_NAMES).write(dir.path());
    let ca_file = dir.path().join("client-ca.crt");
    std::fs::write(&ca_file, &ca.pem).expect("write CA");
    let issuer = TestIssuer::es256("https://idp.example.com/", "k1");
    let server = RunningServer::start(&format!(
        "{}{}routes:\n  - {{name: gateway, match: {{callers: ['{ENVOY_ID}']}}}}\n",
        tls_yaml(&cert, &key, Some((&ca_file, "required", &[ENVOY_ID]))),
        issuer_yaml(&issuer)
    ))
    .await;
    let token = issuer.token("alice", "api");

    // The allowed caller: checks run, and its identity is a route fact.
    let envoy = ca.leaf(&[ENVOY_ID]);
    let allowed = TlsClient::new(server.grpc, &server_ca.pem, Some(&envoy));
    let response = check(&allowed, &token).await.expect("allowed caller");
    assert_eq!(denied_status(&response), 0, "{}", reason(&response));
    assert_eq!(metadata(&response, "route"), Some("gateway"));

    // A certificate of the same CA with another identity, one from another CA, an expired one,
    // none at all: each fails the handshake and is counted under its reason.
    let cases: [(&str, Option<Leaf>); 4] = [
        ("client_identity_not_allowed", Some(ca.leaf(&[OTHER_ID]))),
        (
            "client_certificate_untrusted",
            Some(Ca::new("rogue").leaf(&[ENVOY_ID])),
        ),
        (
            "client_certificate_expired",
            Some(ca.leaf_valid(&[ENVOY_ID], common::now() - 7200, common::now() - 3600)),
        ),
        ("no_client_certificate", None),
    ];
    for (expected, leaf) in cases {
        let refused = TlsClient::new(server.grpc, &server_ca.pem, leaf.as_ref());
        let err = check(&refused, &token).await.expect_err(expected);
        assert!(!err.is_empty());
        wait_metric(&server, &failures(expected), 1).await;
    }

    // Plaintext gRPC on the TLS port is refused too.
    let plain = AuthorizationClientPlain::connect(server.grpc).await;
    assert!(
        plain.is_err() || plain.is_ok_and(|ok| !ok),
        "plaintext h2c must not get an answer"
    );
    wait_metric(&server, &failures("protocol_error"), 1).await;
    // The allowed caller still works after all that.
    check(&allowed, &token).await.expect("allowed caller again");
    server.shutdown().await.expect("clean shutdown");
}

/// A plaintext h2c Check against a TLS port: `Ok(true)` would mean it got an answer.
struct AuthorizationClientPlain;

impl AuthorizationClientPlain {
    async fn connect(addr: std::net::SocketAddr) -> Result<bool, String> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        let mut client =
            fedauthz::proto::auth::authorization_client::AuthorizationClient::new(channel);
        let answer =
            tokio::time::timeout(Duration::from_secs(5), client.check(check_request(&[]))).await;
        Ok(matches!(answer, Ok(Ok(_))))
    }
}

#[tokio::test]
async fn optional_client_certificates_admit_anonymous_callers_that_routes_can_still_refuse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("client CA");
    let (cert, key) = ca.leaf(SERVER_NAMES).write(dir.path());
    let ca_file = dir.path().join("client-ca.crt");
    std::fs::write(&ca_file, &ca.pem).expect("write CA");
    let issuer = TestIssuer::es256("https://idp.example.com/", "k1");
    let server = RunningServer::start(&format!(
        "{}{}routes:\n  - {{name: gateway, match: {{callers: ['spiffe://cluster.local/ns/gateways/*']}}}}\n",
        tls_yaml(&cert, &key, Some((&ca_file, "optional", &[ENVOY_ID]))),
        issuer_yaml(&issuer)
    ))
    .await;
    let token = issuer.token("alice", "api");

    let with_cert = TlsClient::new(server.grpc, &ca.pem, Some(&ca.leaf(&[ENVOY_ID])));
    let response = check(&with_cert, &token).await.expect("verified caller");
    assert_eq!(metadata(&response, "route"), Some("gateway"));
    assert_eq!(denied_status(&response), 0);

    // No certificate: connected, but no route covers an unverified caller.
    let anonymous = TlsClient::new(server.grpc, &ca.pem, None);
    let response = check(&anonymous, &token)
        .await
        .expect("anonymous caller connects");
    assert_eq!(denied_status(&response), 403);
    assert_eq!(reason(&response), "no_route_matched");

    // A certificate that is presented must still be allowed.
    let other = TlsClient::new(server.grpc, &ca.pem, Some(&ca.leaf(&[OTHER_ID])));
    check(&other, &token)
        .await
        .expect_err("disallowed identity");
    wait_metric(&server, &failures("client_identity_not_allowed"), 1).await;
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_rotated_server_certificate_serves_new_connections_while_open_ones_keep_working() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("server CA");
    let first = ca.leaf(SERVER_NAMES);
    let mut mount = KubeletDir::create(
        &dir.path().join("tls"),
        &[
            ("tls.crt", first.cert_pem.as_bytes()),
            ("tls.key", first.key_pem.as_bytes()),
        ],
    );
    let issuer = TestIssuer::es256("https://idp.example.com/", "k1");
    let server = RunningServer::start(&format!(
        "{}  config_poll_interval: 1s\n{}",
        tls_yaml(&mount.path("tls.crt"), &mount.path("tls.key"), None),
        issuer_yaml(&issuer)
    ))
    .await;
    let token = issuer.token("alice", "api");
    let expiry = "fedauthz_tls_certificate_expiry_timestamp_seconds{listener=\"grpc\"}";
    assert_eq!(metric(&server, expiry).await, first.not_after());

    let held = TlsClient::new(server.grpc, &ca.pem, None);
    check(&held, &token).await.expect("first connection");
    assert_eq!(held.last_server_certificate(), Some(first.der.clone()));

    // A new certificate (a later expiry tells them apart in the metric too), swapped in as the
    // kubelet updates a Secret volume.
    let second = ca.leaf_valid(
        SERVER_NAMES,
        common::now() - 60,
        common::now() + 200 * 86_400,
    );
    mount.swap(&[
        ("tls.crt", second.cert_pem.as_bytes()),
        ("tls.key", second.key_pem.as_bytes()),
    ]);
    let applied = "fedauthz_tls_reloads_total{listener=\"grpc\",result=\"applied\"}";
    wait_metric(&server, applied, 1).await;
    assert_eq!(metric(&server, expiry).await, second.not_after());

    let fresh = TlsClient::new(server.grpc, &ca.pem, None);
    check(&fresh, &token).await.expect("new connection");
    assert_eq!(fresh.last_server_certificate(), Some(second.der.clone()));
    // The open connection kept its session: same connection, still answering.
    for _ in 0..3 {
        check(&held, &token)
            .await
            .expect("held connection after rotation");
    }
    assert_eq!(
        held.connection_count(),
        1,
        "the held connection was not replaced"
    );

    // A broken update (a key of another certificate) is refused; the running one stays.
    let third = ca.leaf(SERVER_NAMES);
    mount.swap(&[
        ("tls.crt", third.cert_pem.as_bytes()),
        ("tls.key", first.key_pem.as_bytes()),
    ]);
    let refused = "fedauthz_tls_reloads_total{listener=\"grpc\",result=\"refused\"}";
    wait_metric(&server, refused, 1).await;
    let after_refusal = TlsClient::new(server.grpc, &ca.pem, None);
    check(&after_refusal, &token).await.expect("still serving");
    assert_eq!(
        after_refusal.last_server_certificate(),
        Some(second.der.clone())
    );
    assert_eq!(metric(&server, expiry).await, second.not_after());

    // Fixing the files brings the next certificate in.
    mount.swap(&[
        ("tls.crt", third.cert_pem.as_bytes()),
        ("tls.key", third.key_pem.as_bytes()),
    ]);
    wait_metric(&server, applied, 2).await;
    let last = TlsClient::new(server.grpc, &ca.pem, None);
    check(&last, &token).await.expect("after the fix");
    assert_eq!(last.last_server_certificate(), Some(third.der.clone()));
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn the_admin_listener_serves_https_with_its_own_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("admin CA");
    let admin_dir = dir.path().join("admin");
    std::fs::create_dir(&admin_dir).expect("dir");
    let admin_leaf = ca.leaf(SERVER_NAMES);
    let (cert, key) = admin_leaf.write(&admin_dir);
    let issuer = TestIssuer::es256("https://idp.example.com/", "k1");
    let server = RunningServer::start(&format!(
        "server:\n  admin_tls:\n    certificate_file: {}\n    private_key_file: {}\n{}",
        cert.display(),
        key.display(),
        issuer_yaml(&issuer)
    ))
    .await;
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).expect("CA"))
        .build()
        .expect("client");
    let url = |path: &str| format!("https://localhost:{}{path}", server.admin.port());
    let response = client
        .get(url("/metrics"))
        .send()
        .await
        .expect("HTTPS scrape");
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("body");
    let expiry = format!(
        "fedauthz_tls_certificate_expiry_timestamp_seconds{{listener=\"admin\"}} {}",
        admin_leaf.not_after()
    );
    assert!(text.contains(&expiry), "{text}");
    // HTTP/2 is offered too.
    let h2 = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).expect("CA"))
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let response = h2.get(url("/healthz")).send().await.expect("h2");
    assert_eq!(
        (response.status().as_u16(), response.version()),
        (200, reqwest::Version::HTTP_2)
    );
    // Plain HTTP on the TLS port gets nothing.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/healthz", server.admin.port()))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.map_or(true, |r| r.status() != 200));
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_server_refuses_to_start_on_an_expired_or_mismatched_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("server CA");
    let issuer = TestIssuer::es256("https://idp.example.com/", "k1");
    let start = |yaml: String| async move {
        let config = fedauthz::config::parse_yaml(&yaml, "fedauthz.yaml").expect("valid schema");
        let options = fedauthz::server::ServeOptions {
            config_path: Some("fedauthz.yaml".into()),
            ..fedauthz::server::ServeOptions::default()
        };
        fedauthz::server::Server::bind(config, options)
            .await
            .err()
            .map(|err| err.to_string())
    };
    let expired = ca.leaf_valid(SERVER_NAMES, common::now() - 7200, common::now() - 60);
    let (cert, key) = expired.write(dir.path());
    let err = start(format!(
        "{}{}",
        tls_yaml(&cert, &key, None),
        issuer_yaml(&issuer)
    ))
    .await
    .expect("refused");
    assert!(
        err.starts_with("fedauthz.yaml: server.tls.certificate_file: ")
            && err.contains("the certificate expired at"),
        "{err}"
    );

    let good = ca.leaf(SERVER_NAMES);
    std::fs::write(&cert, &good.cert_pem).expect("write");
    std::fs::write(&key, ca.leaf(SERVER_NAMES).key_pem).expect("write");
    let err = start(format!(
        "{}{}",
        tls_yaml(&cert, &key, None),
        issuer_yaml(&issuer)
    ))
    .await
    .expect("refused");
    assert!(
        err.starts_with("fedauthz.yaml: server.tls.private_key_file: ")
            && err.contains("does not match the certificate"),
        "{err}"
    );
}

#[test]
fn the_binary_logs_a_refused_certificate_with_its_path_and_a_reload_with_the_new_expiry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("server CA");
    let first = ca.leaf(SERVER_NAMES);
    let mut mount = KubeletDir::create(
        &dir.path().join("tls"),
        &[
            ("tls.crt", first.cert_pem.as_bytes()),
            ("tls.key", first.key_pem.as_bytes()),
        ],
    );
    let issuer = TestIssuer::es256("https://idp.example.com/", "k1");
    let config = dir.path().join("fedauthz.yaml");
    std::fs::write(
        &config,
        format!(
            "{}  grpc_listen: 127.0.0.1:0\n  admin_listen: 127.0.0.1:0\n{}",
            tls_yaml(&mount.path("tls.crt"), &mount.path("tls.key"), None),
            issuer_yaml(&issuer)
        ),
    )
    .expect("write config");
    let mut server = Process::spawn(
        std::process::Command::new(env!("CARGO_BIN_EXE_fedauthz"))
            .args(["serve", "--config"])
            .arg(&config)
            .args(["--log-format", "json"])
            .env("RUST_LOG", "info"),
    );
    let listening = server.wait_for("fedauthz listening");
    assert!(listening.contains("\"grpc_tls\":true"), "{listening}");

    let other = ca.leaf(SERVER_NAMES);
    mount.swap(&[
        ("tls.crt", other.cert_pem.as_bytes()),
        ("tls.key", first.key_pem.as_bytes()),
    ]);
    let refused = server.wait_for("TLS files refused; keeping the running certificate");
    let line: serde_json::Value = serde_json::from_str(&refused).expect("JSON line");
    assert_eq!(line["level"], "ERROR");
    assert_eq!(line["fields"]["listener"], "grpc");
    assert_eq!(line["fields"]["field"], "server.tls.private_key_file");
    let problem = line["fields"]["problem"].as_str().expect("problem");
    assert!(
        problem.contains(&format!(
            "{}: the private key does not match",
            mount.path("tls.key").display()
        )),
        "{problem}"
    );
    // No key material in the log, only paths.
    assert!(!server.stderr().contains("PRIVATE KEY"));

    mount.swap(&[
        ("tls.crt", other.cert_pem.as_bytes()),
        ("tls.key", other.key_pem.as_bytes()),
    ]);
    let reloaded = server.wait_for("TLS certificate reloaded");
    assert!(
        reloaded.contains(&format!("\"expires\":{}", other.not_after())),
        "{reloaded}"
    );
    server.signal("TERM");
    assert!(server.wait_exit().success());
}
