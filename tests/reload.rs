//! Reloads from mounted ConfigMaps and Secrets: the real binary serves from a directory laid out
//! the way the kubelet mounts one, and the tests publish new versions the way the kubelet does
//! (a new timestamped directory, `..data` renamed over) with no signal sent.

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fedauthz::proto::auth::CheckRequest;
use fedauthz::proto::auth::authorization_client::AuthorizationClient;
use serde_json::json;
use tonic::transport::Channel;

use common::kubelet::KubeletDir;
use common::process::Process;
use common::{TestIssuer, bearer, denied_status, now, reason};

const ISS: &str = "https://idp.reload.example";

fn serve(config: &std::path::Path) -> (Process, String, String) {
    let mut server = Process::spawn(
        Command::new(env!("CARGO_BIN_EXE_fedauthz"))
            .stdout(Stdio::null())
            .args(["serve", "--log-format", "json", "--config"])
            .arg(config),
    );
    let line = server.wait_for("fedauthz listening");
    let log: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
    let field = |name: &str| log["fields"][name].as_str().expect("address").to_owned();
    (server, field("grpc"), field("admin"))
}

async fn client(addr: &str) -> AuthorizationClient<Channel> {
    AuthorizationClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
}

fn at_path(mut request: CheckRequest, path: &str) -> CheckRequest {
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

/// A configuration with the orders route, and the admin route when `admin` is set.
fn config(issuer: &TestIssuer, admin: bool) -> String {
    let admin_route = if admin {
        "  - name: admin\n    match: { paths: [\"/admin*\"] }\n    require: { scopes: [admin] }\n"
    } else {
        ""
    };
    format!(
        "server: {{ grpc_listen: 127.0.0.1:0, admin_listen: 127.0.0.1:0, config_poll_interval: 1h }}\nissuers:\n  - id: idp\n    issuer: {ISS}\n    audiences: [orders]\n    keys: {{ jwks: {} }}\nroutes:\n  - name: orders\n    match: {{ paths: [\"/orders*\"] }}\n    require: {{ scopes: [orders:read] }}\n{admin_route}",
        issuer.jwks()
    )
}

fn metric(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn metrics(admin: &str) -> String {
    common::http_get(admin.parse().expect("admin addr"), "/metrics")
        .await
        .1
}

/// Waits up to 10 s for `condition`.
async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition().await {
        assert!(Instant::now() < deadline, "not within 10 s: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_configmap_swap_changes_the_routes_while_no_check_fails() {
    let issuer = TestIssuer::es256(ISS, "k1");
    let root = tempfile::tempdir().expect("tempdir");
    // The event watch alone must see the swap: the poll is an hour.
    let mut mount = KubeletDir::create(
        &root.path().join("config"),
        &[("config.yaml", config(&issuer, false).as_bytes())],
    );
    let (mut server, grpc, admin) = serve(&mount.path("config.yaml"));
    let mut claims = issuer.claims("alice", "orders");
    claims.insert("scope".into(), json!("orders:read admin"));
    claims.insert("exp".into(), json!(now() + 600));
    let token = issuer.sign(&claims, json!({}));
    let mut client = client(&grpc).await;
    let admin_request = || at_path(bearer(&token), "/admin/users");
    let first = client
        .check(admin_request())
        .await
        .expect("check")
        .into_inner();
    assert_eq!(reason(&first), "no_route_matched");

    // Checks on the route both configurations share run throughout; every one must be allowed.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (stop, sent, failed) = (Arc::clone(&stop), Arc::clone(&sent), Arc::clone(&failed));
        let (mut client, token) = (client.clone(), token.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let answer = client.check(bearer(&token)).await;
                sent.fetch_add(1, Ordering::Relaxed);
                if !matches!(&answer, Ok(r) if denied_status(r.get_ref()) == 0) {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };

    mount.swap(&[("config.yaml", config(&issuer, true).as_bytes())]);
    server.wait_for("configuration reloaded");
    let answer = client
        .check(admin_request())
        .await
        .expect("check")
        .into_inner();
    assert_eq!(
        denied_status(&answer),
        0,
        "the new route decides: {}",
        reason(&answer)
    );

    // A swap to an invalid configuration is refused and counted; the running one stays.
    mount.swap(&[("config.yaml", b"issuers: [ {id: broken")]);
    server.wait_for("configuration refused");
    eventually("a refused reload in /metrics", || async {
        metric(
            &metrics(&admin).await,
            "fedauthz_config_reloads_total{result=\"refused\"}",
        ) == 1.0
    })
    .await;
    let answer = client
        .check(admin_request())
        .await
        .expect("check")
        .into_inner();
    assert_eq!(
        denied_status(&answer),
        0,
        "still the last good configuration"
    );

    // And back to a good one without the admin route.
    mount.swap(&[("config.yaml", config(&issuer, false).as_bytes())]);
    eventually("the admin route gone", || {
        let mut client = client.clone();
        let request = admin_request();
        async move {
            let answer = client.check(request).await.expect("check").into_inner();
            reason(&answer) == "no_route_matched"
        }
    })
    .await;

    stop.store(true, Ordering::Relaxed);
    load.await.expect("load task");
    let text = metrics(&admin).await;
    assert_eq!(
        metric(&text, "fedauthz_config_reloads_total{result=\"applied\"}"),
        2.0
    );
    assert!(
        metric(
            &text,
            "fedauthz_config_last_reload_success_timestamp_seconds"
        ) >= (now() - 60) as f64
    );
    assert!(sent.load(Ordering::Relaxed) > 10, "the load ran");
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "checks failed during reloads"
    );
}

fn hs256(secret: &[u8], claims: &serde_json::Map<String, serde_json::Value>) -> String {
    let signer = josekit::jws::HS256
        .signer_from_bytes(secret)
        .expect("HS256 signer");
    let header =
        URL_SAFE_NO_PAD.encode(json!({"alg": "HS256", "typ": "JWT", "kid": "hs-1"}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(serde_json::Value::Object(claims.clone()).to_string());
    let input = format!("{header}.{payload}");
    let mac = josekit::jws::JwsSigner::sign(&signer, input.as_bytes()).expect("sign");
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_swap_replaces_the_hmac_key_and_a_key_file_swap_the_key_set() {
    let root = tempfile::tempdir().expect("tempdir");
    let (old_secret, new_secret) = (
        b"an-old-secret-of-32-bytes-or-more!!",
        b"the-new-secret-of-32-bytes-or-more!",
    );
    let mut secrets = KubeletDir::create(
        &root.path().join("secrets"),
        &[("hmac.key", old_secret.as_slice())],
    );
    let (first, second) = (
        TestIssuer::es256("https://k8s.reload.example", "k1"),
        TestIssuer::es256("https://k8s.reload.example", "k2"),
    );
    let mut keys = KubeletDir::create(
        &root.path().join("keys"),
        &[("jwks.json", first.jwks().to_string().as_bytes())],
    );
    let config = format!(
        "server: {{ grpc_listen: 127.0.0.1:0, admin_listen: 127.0.0.1:0, config_poll_interval: 1h }}\nissuers:\n  - id: ci\n    issuer: https://ci.reload.example\n    audiences: [orders]\n    algorithms: [HS256]\n    hmac_secret: {{ file: \"{}\", kid: hs-1, encoding: utf8 }}\n  - id: k8s\n    issuer: https://k8s.reload.example\n    audiences: [orders]\n    keys: {{ jwks_file: \"{}\", file_check_interval: 1h }}\n",
        secrets.path("hmac.key").display(),
        keys.path("jwks.json").display()
    );
    let mount = KubeletDir::create(
        &root.path().join("config"),
        &[("config.yaml", config.as_bytes())],
    );
    let (mut server, grpc, _admin) = serve(&mount.path("config.yaml"));
    let client = client(&grpc).await;
    let mut claims = first.claims("ci-job", "orders");
    claims.insert("iss".into(), json!("https://ci.reload.example"));
    let reason_of = |token: String| {
        let mut client = client.clone();
        async move {
            reason(
                &client
                    .check(bearer(&token))
                    .await
                    .expect("check")
                    .into_inner(),
            )
            .to_owned()
        }
    };
    assert_eq!(reason_of(hs256(old_secret, &claims)).await, "token_valid");
    assert_eq!(reason_of(first.token("pod", "orders")).await, "token_valid");

    secrets.swap(&[("hmac.key", new_secret.as_slice())]);
    server.wait_for("configuration reloaded");
    assert_eq!(reason_of(hs256(new_secret, &claims)).await, "token_valid");
    assert_eq!(
        reason_of(hs256(old_secret, &claims)).await,
        "signature_invalid"
    );

    keys.swap(&[("jwks.json", second.jwks().to_string().as_bytes())]);
    server.wait_for("keys reloaded");
    assert_eq!(
        reason_of(second.token("pod", "orders")).await,
        "token_valid"
    );
    assert_eq!(reason_of(first.token("pod", "orders")).await, "key_unknown");
}

/// The kubelet updates a ConfigMap and a Secret volume independently: a configuration naming a
/// secret file that has not arrived yet is refused, and applied once the file is there.
#[tokio::test(flavor = "multi_thread")]
async fn a_config_that_waits_for_its_secret_is_applied_when_the_secret_arrives() {
    let issuer = TestIssuer::es256(ISS, "k1");
    let root = tempfile::tempdir().expect("tempdir");
    let mut secrets = KubeletDir::create(&root.path().join("secrets"), &[("other", b"x")]);
    let mut mount = KubeletDir::create(
        &root.path().join("config"),
        &[("config.yaml", config(&issuer, false).as_bytes())],
    );
    let (mut server, grpc, admin) = serve(&mount.path("config.yaml"));
    let next = format!(
        "server: {{ grpc_listen: 127.0.0.1:0, admin_listen: 127.0.0.1:0, config_poll_interval: 1h }}\nissuers:\n  - id: idp\n    issuer: {ISS}\n    audiences: [orders]\n    keys: {{ jwks: {} }}\n  - id: ci\n    issuer: https://ci.reload.example\n    audiences: [orders]\n    algorithms: [HS256]\n    hmac_secret: {{ file: \"{}\", kid: hs-1, encoding: utf8 }}\n",
        issuer.jwks(),
        secrets.path("hmac.key").display()
    );
    mount.swap(&[("config.yaml", next.as_bytes())]);
    let refused = server.wait_for("configuration refused");
    assert!(refused.contains("hmac_secret"), "{refused}");

    let secret = b"a-secret-that-arrives-later-32-bytes!";
    secrets.swap(&[("other", b"x"), ("hmac.key", secret.as_slice())]);
    std::os::unix::fs::symlink("..data/hmac.key", secrets.path("hmac.key")).expect("link");
    server.wait_for("configuration reloaded");
    let mut claims = issuer.claims("ci-job", "orders");
    claims.insert("iss".into(), json!("https://ci.reload.example"));
    let mut client = client(&grpc).await;
    let answer = client
        .check(bearer(&hs256(secret, &claims)))
        .await
        .expect("check")
        .into_inner();
    assert_eq!(reason(&answer), "token_valid");
    let text = metrics(&admin).await;
    assert_eq!(
        metric(&text, "fedauthz_config_reloads_total{result=\"refused\"}"),
        1.0
    );
    assert_eq!(
        metric(&text, "fedauthz_config_reloads_total{result=\"applied\"}"),
        1.0
    );
}
