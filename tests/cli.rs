//! The `fedauthz` binary as an operator runs it: check-config, config-schema, dev mode with
//! dev-token, SIGHUP reload and SIGTERM shutdown.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::process::Process;
use common::{TestIssuer, bearer, reason};

fn fedauthz() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fedauthz"))
}

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn check_config_reports_every_error_with_file_and_field_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "issuers:\n  - id: a\n    issuer: https://a.example.com\n    keys: { jwks_uri: https://a.example.com/keys }\n    audiences: []\n  - id: a\n    issuer: https://b.example.com\n    audiences: [x]\n",
    )
    .expect("write");
    let output = fedauthz()
        .arg("check-config")
        .arg(&file)
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let name = file.display();
    for expected in [
        format!("{name}: issuers[0].audiences: must not be empty"),
        format!("{name}: issuers[1].id: duplicates issuers[0].id"),
        format!("{name}: issuers[1].keys: is required"),
    ] {
        assert!(
            stderr.contains(&expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }

    std::fs::write(&file, "issuers:\n  - id: a\n    isuer: typo\n").expect("write");
    let output = fedauthz()
        .arg("check-config")
        .arg(&file)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("issuers[0]") && stderr.contains("isuer"),
        "{stderr}"
    );
}

#[test]
fn check_config_reads_local_key_material() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("keys.yaml");
    std::fs::write(
        &file,
        "issuers:\n  - id: a\n    issuer: https://a.example.com\n    keys: { jwks_file: /nonexistent/jwks.json }\n    audiences: [x]\n",
    )
    .expect("write");
    let output = fedauthz()
        .arg("check-config")
        .arg(&file)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("issuers[0].keys.jwks_file: cannot read /nonexistent/jwks.json"),
        "{stderr}"
    );
}

#[test]
fn check_config_checks_tls_files_and_warns_about_exposed_plaintext() {
    use common::pki::Ca;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("server CA");
    let jwks = TestIssuer::es256("https://a.example.com/", "k1").jwks();
    let issuers = format!(
        "issuers:\n  - {{id: a, issuer: 'https://a.example.com/', audiences: [x], keys: {{jwks: {jwks}}}}}\n"
    );
    let file = dir.path().join("fedauthz.yaml");
    let run = |server: &str| {
        std::fs::write(&file, format!("server:\n{server}{issuers}")).expect("write");
        let output = fedauthz()
            .arg("check-config")
            .arg(&file)
            .output()
            .expect("run");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let tls = |cert: &Path, key: &Path| {
        format!(
            "  grpc_listen: 0.0.0.0:50051\n  tls:\n    certificate_file: {}\n    private_key_file: {}\n",
            cert.display(),
            key.display()
        )
    };
    let name = file.display();

    // Every unusable file is an error at its field; all are reported in one run.
    let missing = dir.path().join("missing.crt");
    let other_key = dir.path().join("other.key");
    std::fs::write(&other_key, ca.leaf(&["localhost"]).key_pem).expect("write");
    let admin_dir = dir.path().join("admin");
    std::fs::create_dir(&admin_dir).expect("dir");
    let (admin_cert, _) = ca.leaf(&["localhost"]).write(&admin_dir);
    let (ok, stderr) = run(&format!(
        "{}  admin_tls:\n    certificate_file: {}\n    private_key_file: {}\n",
        tls(&missing, &other_key),
        admin_cert.display(),
        other_key.display()
    ));
    assert!(!ok);
    for expected in [
        format!(
            "{name}: server.tls.certificate_file: {}: cannot read",
            missing.display()
        ),
        format!(
            "{name}: server.admin_tls.private_key_file: {}: the private key does not match the certificate in {}",
            other_key.display(),
            admin_cert.display()
        ),
    ] {
        assert!(
            stderr.contains(&expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }

    // An expired certificate is refused.
    let expired = ca.leaf_valid(&["localhost"], common::now() - 7200, common::now() - 60);
    let (cert, key) = expired.write(dir.path());
    let (ok, stderr) = run(&tls(&cert, &key));
    assert!(!ok);
    assert!(
        stderr.contains(&format!(
            "{name}: server.tls.certificate_file: {}: the certificate expired at",
            cert.display()
        )),
        "{stderr}"
    );

    // One that expires within 7 days passes, with a warning.
    let soon = ca.leaf_valid(
        &["localhost"],
        common::now() - 7200,
        common::now() + 2 * 86_400,
    );
    let (cert, key) = soon.write(dir.path());
    let (ok, stderr) = run(&tls(&cert, &key));
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains(&format!("fedauthz: warning: {name}: server.tls.certificate_file: {}: the certificate expires in ", cert.display())),
        "{stderr}"
    );

    // Plaintext on a non-loopback address: a warning, unless a mesh carries mTLS.
    let (ok, stderr) = run("  grpc_listen: 0.0.0.0:50051\n");
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains(&format!("fedauthz: warning: {name}: server.grpc_listen: 0.0.0.0:50051 is not a loopback address and the listener is plaintext")),
        "{stderr}"
    );
    let (ok, stderr) = run("  grpc_listen: 0.0.0.0:50051\n  mesh_mtls: true\n");
    assert!(ok && !stderr.contains("warning"), "{stderr}");
    let (ok, stderr) = run("  grpc_listen: 127.0.0.1:50051\n");
    assert!(ok && !stderr.contains("warning"), "{stderr}");
}

#[test]
fn the_shipped_example_config_is_valid() {
    let output = fedauthz()
        .arg("check-config")
        .arg(repo_file("deploy/examples/two-issuers.yaml"))
        .output()
        .expect("run");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("OK (2 issuers)"));
}

#[test]
fn one_iss_on_two_issuers_needs_disjoint_token_locations() {
    let example = repo_file("deploy/examples/cognito-behind-alb.yaml");
    let output = fedauthz()
        .arg("check-config")
        .arg(&example)
        .output()
        .expect("run");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("OK (2 issuers)"));

    // The ALB issuer also reading Authorization overlaps the Cognito issuer's location.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("overlap.yaml");
    let yaml = std::fs::read_to_string(&example).expect("read example").replace(
        "    # token_locations left out: x-amzn-oidc-data",
        "    token_locations: [{header: x-amzn-oidc-data}, {header: authorization, prefix: \"Bearer \"}]",
    );
    std::fs::write(&file, yaml).expect("write");
    let output = fedauthz()
        .arg("check-config")
        .arg(&file)
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!(
        "{}: issuers[1].token_locations: issuers[0] has the same issuer \"https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbCdEfGhI\" and also accepts tokens from header authorization (issuers[0].token_locations)",
        file.display()
    );
    assert!(
        stderr.contains(&expected),
        "missing {expected:?} in:\n{stderr}"
    );
}

#[test]
fn config_schema_is_a_json_schema_that_refuses_unknown_fields() {
    let output = fedauthz().arg("config-schema").output().expect("run");
    assert!(output.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(schema["additionalProperties"], false);
    assert_eq!(schema["required"], serde_json::json!(["issuers"]));
    let issuer = &schema["$defs"]["IssuerConfig"];
    assert_eq!(issuer["additionalProperties"], false);
    for field in [
        "id",
        "issuer",
        "keys",
        "audiences",
        "algorithms",
        "clock_skew",
        "token_locations",
    ] {
        assert!(
            issuer["properties"].get(field).is_some(),
            "schema lacks issuers[].{field}"
        );
    }
}

#[test]
fn serve_refuses_to_guess_a_configuration() {
    let output = fedauthz()
        .arg("serve")
        .env_remove("FEDAUTHZ_CONFIG")
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--config FILE, or --dev"), "{stderr}");
}

/// The gRPC address from the JSON "fedauthz listening" log line.
fn grpc_addr(line: &str) -> String {
    let log: serde_json::Value = serde_json::from_str(line).expect("JSON log line");
    log["fields"]["grpc"]
        .as_str()
        .expect("grpc field")
        .to_owned()
}

async fn check(addr: &str, token: &str) -> String {
    let mut client = fedauthz::proto::auth::authorization_client::AuthorizationClient::connect(
        format!("http://{addr}"),
    )
    .await
    .expect("connect");
    let response = client.check(bearer(token)).await.expect("rpc").into_inner();
    reason(&response).to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_mode_accepts_dev_tokens_and_stops_cleanly_on_sigterm() {
    let state = tempfile::tempdir().expect("tempdir");
    let mut server = Process::spawn(
        fedauthz()
            .stdout(Stdio::null())
            .args(["serve", "--dev", "--log-format", "json"])
            .arg("--state-dir")
            .arg(state.path())
            .args([
                "--grpc-listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ]),
    );
    server.wait_for("DEV MODE");
    let addr = grpc_addr(&server.wait_for("fedauthz listening"));

    let output = fedauthz()
        .args([
            "dev-token",
            "--sub",
            "alice",
            "--scope",
            "orders:read",
            "--ttl",
            "5m",
        ])
        .arg("--state-dir")
        .arg(state.path())
        .output()
        .expect("dev-token");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8(output.stdout)
        .expect("utf8")
        .trim()
        .to_owned();
    assert_eq!(check(&addr, &token).await, "token_valid");
    let (signed, signature) = token.rsplit_once('.').expect("three segments");
    let flipped = if signature.starts_with('A') { 'B' } else { 'A' };
    let forged = format!("{signed}.{flipped}{}", &signature[1..]);
    assert_eq!(check(&addr, &forged).await, "signature_invalid");

    server.signal("TERM");
    server.wait_for("SIGTERM received");
    server.wait_for("all in-flight checks finished");
    assert!(server.wait_exit().success());
}

#[test]
fn dev_mode_refuses_non_loopback_addresses() {
    let state = tempfile::tempdir().expect("tempdir");
    let output = fedauthz()
        .args(["serve", "--dev", "--grpc-listen", "0.0.0.0:0"])
        .arg("--state-dir")
        .arg(state.path())
        .output()
        .expect("run");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("only listens on loopback"));
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_and_a_bad_file_keeps_the_running_config() {
    let issuer = TestIssuer::es256("https://idp.example.com", "k1");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("fedauthz.yaml");
    let config = |audience: &str| {
        format!(
            "server: {{ grpc_listen: 127.0.0.1:0, admin_listen: 127.0.0.1:0 }}\nissuers:\n  - id: idp\n    issuer: {}\n    keys: {{ jwks: {} }}\n    audiences: [{audience}]\n",
            issuer.iss,
            issuer.jwks()
        )
    };
    std::fs::write(&file, config("orders")).expect("write");
    let mut server = Process::spawn(
        fedauthz()
            .stdout(Stdio::null())
            .args(["serve", "--log-format", "json", "--config"])
            .arg(&file),
    );
    let addr = grpc_addr(&server.wait_for("fedauthz listening"));
    let token = issuer.token("alice", "orders");
    assert_eq!(check(&addr, &token).await, "token_valid");

    std::fs::write(&file, "issuers: [ {id: broken").expect("write");
    server.signal("HUP");
    let refused = server.wait_for("configuration refused");
    assert!(refused.contains(&file.display().to_string()), "{refused}");
    assert_eq!(
        check(&addr, &token).await,
        "token_valid",
        "the last good config keeps running"
    );

    std::fs::write(&file, config("billing")).expect("write");
    server.signal("HUP");
    server.wait_for("configuration reloaded");
    assert_eq!(check(&addr, &token).await, "audience_mismatch");

    server.signal("INT");
    server.wait_for("SIGINT received");
    assert!(server.wait_exit().success());
}

#[test]
fn explain_takes_the_calling_proxys_identity_for_caller_routes() {
    let issuer = TestIssuer::es256("https://idp.example.com", "k1");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("config.yaml");
    // The TLS files are read by the server and check-config, not by explain.
    std::fs::write(
        &file,
        format!(
            "server:\n  tls: {{certificate_file: /tls/tls.crt, private_key_file: /tls/tls.key, client_certificates: {{ca_file: /tls/ca.crt}}}}\nissuers:\n  - {{id: idp, issuer: 'https://idp.example.com', audiences: [orders], keys: {{jwks: {}}}}}\nroutes:\n  - {{name: gateway, match: {{callers: ['spiffe://cluster.local/ns/gateways/*']}}}}\n",
            issuer.jwks()
        ),
    )
    .expect("write");
    let token = issuer.token("alice", "orders");
    let explain = |callers: &[&str]| {
        let mut command = fedauthz();
        command
            .args(["explain", "--config"])
            .arg(&file)
            .args(["--token", &token]);
        for caller in callers {
            command.args(["--caller", caller]);
        }
        let output = command.output().expect("run");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("UTF-8")
    };
    let trace = explain(&["spiffe://cluster.local/ns/gateways/sa/envoy"]);
    assert!(
        trace.contains("route:   gateway") && trace.contains("answer:  ALLOW"),
        "{trace}"
    );
    let trace = explain(&["envoy.example.com", "spiffe://cluster.local/ns/apps/sa/web"]);
    assert!(trace.contains("answer:  DENY 403"), "{trace}");
    assert!(explain(&[]).contains("answer:  DENY 403"));
}

#[test]
fn explain_prints_the_trace_without_the_token() {
    let issuer = TestIssuer::es256("https://idp.example.com", "k1");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("config.yaml");
    std::fs::write(
        &file,
        format!(
            "issuers:\n  - id: idp\n    issuer: https://idp.example.com\n    audiences: [orders]\n    keys: {{ jwks: {} }}\nroutes:\n  - name: orders\n    match: {{ paths: [\"/orders*\"] }}\n    require: {{ scopes: [orders:read] }}\n",
            issuer.jwks()
        ),
    )
    .expect("write");
    let explain = |token: &str| {
        let output = fedauthz()
            .args(["explain", "--config"])
            .arg(&file)
            .args([
                "--token",
                token,
                "--host",
                "api.example.com",
                "--path",
                "/orders/7",
            ])
            .output()
            .expect("run");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("UTF-8")
    };
    let mut claims = issuer.claims("alice", "orders");
    claims.insert("scope".into(), "orders:read".into());
    let token = issuer.sign(&claims, serde_json::json!({}));
    let trace = explain(&token);
    assert!(trace.contains("  signature    ok"), "{trace}");
    assert!(trace.contains("  requirements ok"), "{trace}");
    assert!(trace.contains("route:   orders"), "{trace}");
    assert!(trace.contains("\"subject\": \"alice\""), "{trace}");
    assert!(trace.contains("answer:  ALLOW"), "{trace}");
    let signature = token.rsplit('.').next().expect("signature");
    assert!(
        !trace.contains(signature) && !trace.contains(&token),
        "the token leaked"
    );

    let without_scope = issuer.token("alice", "orders");
    let trace = explain(&without_scope);
    assert!(
        trace.contains("  requirements FAILED  requirement_not_met"),
        "{trace}"
    );
    assert!(trace.contains("answer:  DENY 403"), "{trace}");
    assert!(trace.contains("scope=\"orders:read\""), "{trace}");

    let (input, _) = token.rsplit_once('.').expect("3 parts");
    let trace = explain(&format!("{input}.AAAA"));
    assert!(
        trace.contains("  signature    FAILED  signature_invalid"),
        "{trace}"
    );
    assert!(trace.contains("  claims       not reached"), "{trace}");
}

#[test]
fn check_config_opens_minting_keys_and_enforces_the_lead_time_of_a_current_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pem = common::write_signing_key(&dir.path().join("mint.pem"), "ES256");
    let rsa = common::write_signing_key(&dir.path().join("rsa.pem"), "RS256");
    let jwks = TestIssuer::es256("https://a.example.com/", "k1").jwks();
    let file = dir.path().join("fedauthz.yaml");
    let stamp = |ago: i64| fedauthz::config::Timestamp::from_unix(common::now() - ago).to_string();
    let run = |keys: &str| {
        std::fs::write(
            &file,
            format!(
                "issuers:\n  - {{id: a, issuer: 'https://a.example.com/', audiences: [x], keys: {{jwks: {jwks}}}}}\nmint:\n  issuer: https://fedauthz.internal\n  audience: api\n  keys:\n{keys}"
            ),
        )
        .expect("write");
        let output = fedauthz()
            .arg("check-config")
            .arg(&file)
            .output()
            .expect("run");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let name = file.display();

    // Published ten minutes ago, lead time one hour: refused, with the rule and the way out.
    let (ok, stderr) = run(&format!(
        "    - {{file: '{}', state: current, published_at: '{}'}}\n",
        pem.display(),
        stamp(600)
    ));
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{name}: mint.keys[0].state: current is refused: the key was published at"
        )) && stderr.contains("less than mint.key_lead_time (1h)"),
        "{stderr}"
    );

    // A key that does not fit its algorithm, and a missing file: each at its field.
    let (ok, stderr) = run(&format!(
        "    - {{file: '{}', state: current, published_at: '{}'}}\n    - {{file: '{}', state: next, algorithm: ES256}}\n    - {{file: '{}/missing.pem', state: next}}\n",
        pem.display(),
        stamp(7200),
        rsa.display(),
        dir.path().display()
    ));
    assert!(!ok);
    assert!(
        stderr.contains(&format!("{name}: mint.keys[1].file: "))
            && stderr.contains("does not fit ES256"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{name}: mint.keys[2].file: ")) && stderr.contains("cannot read")
    );

    // Published long enough, with a retired key whose tokens have all expired: valid, with a
    // warning that the retired key can go.
    let (ok, stderr) = run(&format!(
        "    - {{file: '{}', state: current, published_at: '{}'}}\n    - {{file: '{}', state: retired, algorithm: RS256, retired_at: '{}'}}\n",
        pem.display(),
        stamp(7200),
        rsa.display(),
        stamp(3600)
    ));
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "fedauthz: warning: {name}: mint.keys[1]: retired at"
        )) && stderr.contains("can be removed"),
        "{stderr}"
    );
}
