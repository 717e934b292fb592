//! Key lifecycle against a controllable local key server: rotation, outages, unknown-kid floods,
//! OIDC discovery, tenant templates, per-kid PEM keys (AWS ALB), key files that change, and
//! weak keys. fedauthz runs in-process; the key server is real HTTP(S) on loopback.

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use common::keyserver::{KeyServer, Reply, closed_port_url};
use common::{RunningServer, TestIssuer, bearer, check_request, reason};
use josekit::jwk::KeyPair as _;
use serde_json::{Value, json};

const AUD: &str = "orders";

/// The public JWK of `issuer`'s key.
fn jwk(issuer: &TestIssuer) -> Value {
    issuer.jwks()["keys"][0].clone()
}

fn jwks(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

/// Writes the CA of `server` next to the test and returns the config line for it.
fn ca_file(server: &KeyServer, dir: &tempfile::TempDir) -> String {
    let path = dir.path().join("ca.pem");
    std::fs::write(&path, server.ca_pem().expect("HTTPS server")).expect("write CA");
    format!("ca_file: \"{}\"", path.display())
}

async fn check(server: &RunningServer, token: &str) -> String {
    let mut client = server.client().await;
    let response = client.check(bearer(token)).await.expect("rpc").into_inner();
    reason(&response).to_owned()
}

/// Waits until `condition` holds, polling, or panics after `timeout`.
async fn eventually(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn failures(server: &RunningServer, issuer: &str, kind: &str) -> u64 {
    server
        .reloader
        .key_stats()
        .into_iter()
        .find(|(id, _)| id == issuer)
        .and_then(|(_, stats)| stats.fetch_failures.get(kind).copied())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_rotation_denies_no_valid_token() {
    let old = TestIssuer::rs256("https://idp.example", "k-old");
    let new = TestIssuer::rs256("https://idp.example", "k-new");
    let keys = KeyServer::https().await;
    // Long cache lifetime: only unknown kids trigger refreshes during this test.
    keys.set(
        "/jwks",
        Reply::json_with(jwks(&[jwk(&old)]), &[("cache-control", "max-age=3600")]),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = format!(
        "issuers:\n  - id: idp\n    issuer: https://idp.example\n    audiences: [{AUD}]\n    keys: {{ jwks_uri: \"{}\", {}, unknown_kid_interval: 1s, unknown_kid_wait: 3s }}\n",
        keys.url("/jwks"),
        ca_file(&keys, &dir)
    );
    let server = RunningServer::start(&yaml).await;
    server.wait_ready(200, Duration::from_secs(10)).await;
    assert_eq!(
        check(&server, &old.token("alice", AUD)).await,
        "token_valid"
    );

    // The IdP publishes the new key and signs with it at once: the first token naming it
    // triggers a refresh and is allowed.
    keys.set(
        "/jwks",
        Reply::json_with(
            jwks(&[jwk(&old), jwk(&new)]),
            &[("cache-control", "max-age=3600")],
        ),
    );
    for _ in 0..5 {
        assert_eq!(check(&server, &new.token("bob", AUD)).await, "token_valid");
        assert_eq!(
            check(&server, &old.token("alice", AUD)).await,
            "token_valid"
        );
    }
    assert_eq!(keys.hits("/jwks"), 2, "one initial fetch, one refresh");
}

#[tokio::test]
async fn outages_keep_the_last_good_keys() {
    let issuer = TestIssuer::es256("https://idp.example", "k1");
    let keys = KeyServer::https().await;
    let good = Reply::json_with(jwks(&[jwk(&issuer)]), &[("cache-control", "max-age=1")]);
    keys.set("/jwks", good);
    keys.set("/a", Reply::Redirect("/b".into()));
    keys.set("/b", Reply::Redirect("/a".into()));
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = format!(
        "issuers:\n  - id: idp\n    issuer: https://idp.example\n    audiences: [{AUD}]\n    keys: {{ jwks_uri: \"{}\", {}, min_refresh: 1s, timeout: 1s, max_bytes: 65536 }}\n",
        keys.url("/jwks"),
        ca_file(&keys, &dir)
    );
    let server = RunningServer::start(&yaml).await;
    server.wait_ready(200, Duration::from_secs(10)).await;
    let token = issuer.token("alice", AUD);

    let outages = [
        ("500", Reply::Status(500), "status"),
        ("garbage", Reply::Garbage, "invalid"),
        ("empty key set", Reply::json("{\"keys\": []}"), "invalid"),
        ("huge", Reply::Huge(1024 * 1024), "too_large"),
        (
            "slow",
            Reply::Slow(
                Duration::from_secs(3),
                Box::new(Reply::json(jwks(&[jwk(&issuer)]))),
            ),
            "timeout",
        ),
        ("redirect loop", Reply::Redirect("/a".into()), "request"),
        (
            "redirect to plain HTTP",
            Reply::Redirect(format!(
                "http://{}/jwks",
                keys.base_url().trim_start_matches("https://")
            )),
            "request",
        ),
        ("hang-up", Reply::Hangup, "request"),
    ];
    for (name, reply, kind) in outages {
        let before = failures(&server, "idp", kind);
        keys.set("/jwks", reply);
        eventually(Duration::from_secs(15), name, || {
            failures(&server, "idp", kind) > before
        })
        .await;
        assert_eq!(
            check(&server, &token).await,
            "token_valid",
            "{name}: the last good keys still serve"
        );
        let (status, _) = server.admin_get("/readyz").await;
        assert_eq!(status, 200, "{name}: still ready");
    }

    // The server goes away entirely.
    drop(keys);
    let before = failures(&server, "idp", "request");
    eventually(Duration::from_secs(15), "connection refused", || {
        failures(&server, "idp", "request") > before
    })
    .await;
    assert_eq!(check(&server, &token).await, "token_valid");
}

#[tokio::test]
async fn a_random_kid_flood_costs_at_most_one_fetch_per_interval() {
    let issuer = TestIssuer::rs256("https://idp.example", "k1");
    let attacker = TestIssuer::rs256("https://idp.example", "unused");
    let keys = KeyServer::https().await;
    keys.set(
        "/jwks",
        Reply::json_with(jwks(&[jwk(&issuer)]), &[("cache-control", "max-age=3600")]),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = format!(
        "issuers:\n  - id: idp\n    issuer: https://idp.example\n    audiences: [{AUD}]\n    keys: {{ jwks_uri: \"{}\", {}, unknown_kid_wait: 2s }}\n",
        keys.url("/jwks"),
        ca_file(&keys, &dir)
    );
    let server = RunningServer::start(&yaml).await;
    server.wait_ready(200, Duration::from_secs(10)).await;
    assert_eq!(keys.hits("/jwks"), 1);

    let client = server.client().await;
    for _round in 0..2 {
        let mut checks = Vec::new();
        for n in 0..200 {
            let claims = attacker.claims("mallory", AUD);
            let token = attacker.sign(
                &claims,
                json!({ "kid": format!("random-{n}-{}", unique()) }),
            );
            let mut client = client.clone();
            checks.push(tokio::spawn(async move {
                let response = client
                    .check(bearer(&token))
                    .await
                    .expect("rpc")
                    .into_inner();
                reason(&response).to_owned()
            }));
        }
        for check in checks {
            assert_eq!(check.await.expect("task"), "key_unknown");
        }
    }
    assert_eq!(
        keys.hits("/jwks"),
        2,
        "400 random kids within the default 30 s interval: exactly one refresh"
    );
    assert_eq!(
        check(&server, &issuer.token("alice", AUD)).await,
        "token_valid"
    );
}

/// A distinct number per call, so no two flood tokens share a kid.
fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[tokio::test]
async fn discovery_finds_the_keys_and_refuses_another_issuer() {
    let keys = KeyServer::https().await;
    let iss = keys.base_url().to_owned();
    let issuer = TestIssuer::rs256(&iss, "k1");
    keys.set(
        "/.well-known/openid-configuration",
        Reply::json(json!({ "issuer": iss, "jwks_uri": keys.url("/keys") }).to_string()),
    );
    keys.set("/keys", Reply::json(jwks(&[jwk(&issuer)])));
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = format!(
        "issuers:\n  - id: idp\n    issuer: {iss}\n    audiences: [{AUD}]\n    keys: {{ discovery: true, {} }}\n",
        ca_file(&keys, &dir)
    );
    let server = RunningServer::start(&yaml).await;
    server.wait_ready(200, Duration::from_secs(10)).await;
    assert_eq!(
        check(&server, &issuer.token("alice", AUD)).await,
        "token_valid"
    );

    // A discovery document that names another issuer is refused: no keys, not ready.
    let other = KeyServer::https().await;
    other.set(
        "/.well-known/openid-configuration",
        Reply::json(
            json!({ "issuer": "https://evil.example", "jwks_uri": other.url("/keys") }).to_string(),
        ),
    );
    other.set("/keys", Reply::json(jwks(&[jwk(&issuer)])));
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = format!(
        "issuers:\n  - id: idp\n    issuer: {}\n    audiences: [{AUD}]\n    keys: {{ discovery: true, {} }}\n",
        other.base_url(),
        ca_file(&other, &dir)
    );
    let server = RunningServer::start(&yaml).await;
    eventually(Duration::from_secs(10), "issuer_mismatch", || {
        failures(&server, "idp", "issuer_mismatch") > 0
    })
    .await;
    server.wait_ready(503, Duration::from_secs(1)).await;
    assert_eq!(
        other.hits("/keys"),
        0,
        "the mismatched document's jwks_uri is never fetched"
    );
}

#[tokio::test]
async fn tenant_templates_bind_iss_tid_and_key_issuer() {
    const TEMPLATE: &str = "https://login.example.com/{tenantid}/v2.0";
    let tenant = |t: &str| format!("https://login.example.com/{t}/v2.0");
    let signer = TestIssuer::rs256(&tenant("t1"), "common-key");
    let mut common_key = jwk(&signer);
    common_key["issuer"] = json!(TEMPLATE);
    let pinned = TestIssuer::rs256(&tenant("t3"), "t3-key");
    let mut pinned_key = jwk(&pinned);
    pinned_key["issuer"] = json!(tenant("t3"));
    let yaml = |tenants: &str| {
        format!(
            "issuers:\n  - id: entra\n    issuer: \"{TEMPLATE}\"\n    {tenants}\n    audiences: [{AUD}]\n    keys: {{ jwks: {} }}\n",
            jwks(&[common_key.clone(), pinned_key.clone()])
        )
    };
    let token = |signer: &TestIssuer, iss: &str, tid: Option<&str>| {
        let mut claims = signer.claims("alice", AUD);
        claims.insert("iss".into(), iss.into());
        if let Some(tid) = tid {
            claims.insert("tid".into(), tid.into());
        }
        signer.sign(&claims, json!({}))
    };

    let server = RunningServer::start(&yaml("tenants: [t1, t3]")).await;
    assert_eq!(
        check(&server, &token(&signer, &tenant("t1"), Some("t1"))).await,
        "token_valid"
    );
    assert_eq!(
        check(&server, &token(&signer, &tenant("t2"), Some("t2"))).await,
        "issuer_unknown"
    );
    assert_eq!(
        check(&server, &token(&signer, &tenant("t1"), Some("t3"))).await,
        "claim_mismatch"
    );
    assert_eq!(
        check(&server, &token(&signer, &tenant("t1"), None)).await,
        "claim_missing"
    );
    // A key pinned to tenant t3 cannot sign for t1.
    assert_eq!(
        check(&server, &token(&pinned, &tenant("t3"), Some("t3"))).await,
        "token_valid"
    );
    assert_eq!(
        check(&server, &token(&pinned, &tenant("t1"), Some("t1"))).await,
        "key_unknown"
    );

    let any = RunningServer::start(&yaml("any_tenant: true")).await;
    assert_eq!(
        check(&any, &token(&signer, &tenant("t2"), Some("t2"))).await,
        "token_valid"
    );
}

const ALB_ARN: &str =
    "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/web/abc";

/// An AWS ALB-shaped token: ES256, a UUID kid, `iss`/`exp`/`signer`/`client` in the header, the
/// IdP's userinfo as payload, `=`-padded segments, signed over the padded bytes.
fn alb_token(signer: &dyn josekit::jws::JwsSigner, kid: &str, iss: &str) -> String {
    alb_token_from(signer, kid, iss, ALB_ARN)
}

fn alb_token_from(signer: &dyn josekit::jws::JwsSigner, kid: &str, iss: &str, arn: &str) -> String {
    let now = common::now();
    let header = json!({ "alg": "ES256", "kid": kid, "typ": "JWT", "iss": iss,
        "client": "client-1", "signer": arn, "exp": now + 120 });
    let payload = json!({ "sub": "alice", "email": "alice@example.com" });
    let input = format!(
        "{}.{}",
        URL_SAFE.encode(header.to_string()),
        URL_SAFE.encode(payload.to_string())
    );
    assert!(
        input.contains('='),
        "the test token must carry padding: {input}"
    );
    let signature = signer.sign(input.as_bytes()).expect("sign");
    format!("{input}.{}", URL_SAFE.encode(signature))
}

#[tokio::test]
async fn alb_tokens_verify_with_per_kid_pem_keys() {
    let pair = josekit::jws::ES256.generate_key_pair().expect("EC key");
    let signer = josekit::jws::ES256
        .signer_from_jwk(&pair.to_jwk_private_key())
        .expect("signer");
    let kid = "6a0d6ef4-3c4e-4bb1-9c9d-2d5f1f0c8a11";
    let keys = KeyServer::http().await;
    keys.set(
        &format!("/{kid}"),
        Reply::json(String::from_utf8(pair.to_pem_public_key()).expect("PEM")),
    );
    let iss = "https://idp.example";
    let yaml = format!(
        "issuers:\n  - id: alb\n    issuer: {iss}\n    profile: aws-alb\n    alb_signers: [\"{ALB_ARN}\"]\n    algorithms: [ES256]\n    accept_padded_tokens: true\n    audience_claim: client\n    audiences: [client-1]\n    keys: {{ pem_uri_template: \"{}\", insecure_http: true, unknown_kid_interval: 1s, unknown_kid_wait: 3s }}\n",
        keys.url("/{kid}")
    );
    let server = RunningServer::start(&yaml).await;
    server.wait_ready(200, Duration::from_secs(10)).await;
    let mut client = server.client().await;
    let alb = |token: &str| check_request(&[("x-amzn-oidc-data", token)]);

    let token = alb_token(&signer, kid, iss);
    for _ in 0..3 {
        let response = client.check(alb(&token)).await.expect("rpc").into_inner();
        assert_eq!(reason(&response), "token_valid");
    }
    assert_eq!(
        keys.hits(&format!("/{kid}")),
        1,
        "a kid's key is fetched once"
    );

    // Another load balancer's token (same key service) is refused.
    let other = alb_token_from(
        &signer,
        kid,
        iss,
        "arn:aws:elasticloadbalancing:eu-west-1:999999999999:loadbalancer/app/evil/1",
    );
    let response = client.check(alb(&other)).await.expect("rpc").into_inner();
    assert_eq!(reason(&response), "claim_mismatch");
    // The token is only read from the ALB's header (the profile's default location):
    // in Authorization it is not looked for at all.
    let response = client
        .check(bearer(&token))
        .await
        .expect("rpc")
        .into_inner();
    assert_eq!(reason(&response), "token_missing");

    // Stripping the padding changes the signed bytes: the signature no longer verifies.
    let stripped: String = token
        .split('.')
        .map(|s| s.trim_end_matches('='))
        .collect::<Vec<_>>()
        .join(".");
    let response = client
        .check(alb(&stripped))
        .await
        .expect("rpc")
        .into_inner();
    assert_eq!(reason(&response), "signature_invalid");

    // A kid that is not a UUID never becomes part of a URL.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = keys.total_hits();
    let response = client
        .check(alb(&alb_token(&signer, "../../etc/passwd", iss)))
        .await
        .expect("rpc")
        .into_inner();
    assert_eq!(reason(&response), "key_unknown");
    assert_eq!(keys.total_hits(), before);
}

/// An ALB signing key: the PEM public key its key server serves, and a signer.
struct AlbKey {
    pem: String,
    signer: josekit::jws::alg::ecdsa::EcdsaJwsSigner,
}

fn alb_key() -> AlbKey {
    let pair = josekit::jws::ES256.generate_key_pair().expect("EC key");
    AlbKey {
        pem: String::from_utf8(pair.to_pem_public_key()).expect("PEM"),
        signer: josekit::jws::ES256
            .signer_from_jwk(&pair.to_jwk_private_key())
            .expect("signer"),
    }
}

const ALB_ISS: &str = "https://idp.example";

/// An ALB issuer whose per-kid keys come from `keys`, with `extra` key settings.
fn alb_config(keys: &KeyServer, extra: &str) -> String {
    format!(
        "issuers:\n  - id: alb\n    issuer: {ALB_ISS}\n    profile: aws-alb\n    alb_signers: [\"{ALB_ARN}\"]\n    algorithms: [ES256]\n    accept_padded_tokens: true\n    audience_claim: client\n    audiences: [client-1]\n    keys: {{ pem_uri_template: \"{}\", insecure_http: true, {extra} }}\n",
        keys.url("/{kid}")
    )
}

async fn check_alb(server: &RunningServer, token: &str) -> String {
    let mut client = server.client().await;
    let request = check_request(&[("x-amzn-oidc-data", token)]);
    let response = client.check(request).await.expect("rpc").into_inner();
    reason(&response).to_owned()
}

/// Checks the ALB `token` until the answer is `want`, or panics after `timeout`.
async fn until_alb_reason(server: &RunningServer, token: &str, want: &str, timeout: Duration) {
    let start = Instant::now();
    loop {
        let got = check_alb(server, token).await;
        if got == want {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "still {got} instead of {want} after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn alb_kids_the_key_server_no_longer_has_are_removed() {
    // S3-backed key endpoints answer 403 for a missing object; 404 and 410 say the same.
    let kids = [
        ("1b7e2a54-0c1d-4e8f-9a3b-5c6d7e8f9a01", 403),
        ("2b7e2a54-0c1d-4e8f-9a3b-5c6d7e8f9a02", 404),
        ("3b7e2a54-0c1d-4e8f-9a3b-5c6d7e8f9a03", 410),
    ];
    let keys = KeyServer::http().await;
    let mut tokens = Vec::new();
    for (kid, _) in kids {
        let key = alb_key();
        keys.set(&format!("/{kid}"), Reply::json(key.pem));
        tokens.push(alb_token(&key.signer, kid, ALB_ISS));
    }
    let yaml = alb_config(
        &keys,
        "refresh_interval: 1s, min_refresh: 1s, unknown_kid_interval: 1s, unknown_kid_wait: 3s",
    );
    let server = RunningServer::start(&yaml).await;
    server.wait_ready(200, Duration::from_secs(10)).await;
    // One on-demand fetch per unknown_kid_interval: the kids load a second apart.
    for token in &tokens {
        until_alb_reason(&server, token, "token_valid", Duration::from_secs(5)).await;
    }
    let hits = || kids.map(|(kid, _)| keys.hits(&format!("/{kid}")));

    for (kid, status) in kids {
        keys.set(&format!("/{kid}"), Reply::Status(status));
    }
    // No check names the kids now: only background revalidation asks again, and every
    // request counted from here on got the new answer.
    let switched = hits();
    eventually(Duration::from_secs(10), "revalidation requests", || {
        hits().iter().zip(switched).all(|(&now, then)| now > then)
    })
    .await;
    for token in &tokens {
        until_alb_reason(&server, token, "key_unknown", Duration::from_secs(5)).await;
    }
    assert!(failures(&server, "alb", "status") >= 3);

    // A removed kid is not revalidated any more, and tokens naming it cost at most one
    // fetch per unknown_kid_interval (1 s), like any unknown kid.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let before = keys.total_hits();
    let start = Instant::now();
    for _ in 0..10 {
        for token in &tokens {
            assert_eq!(check_alb(&server, token).await, "key_unknown");
        }
    }
    let allowed = usize::try_from(start.elapsed().as_secs()).expect("seconds") + 1;
    let fetched = keys.total_hits() - before;
    assert!(fetched <= allowed, "{fetched} fetches for 30 denied checks");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        keys.total_hits() - before,
        fetched,
        "removed kids are not revalidated"
    );
}

#[tokio::test]
async fn alb_kids_keep_their_key_through_failures_until_max_staleness() {
    let failing = "4b7e2a54-0c1d-4e8f-9a3b-5c6d7e8f9a04";
    let changing = "5b7e2a54-0c1d-4e8f-9a3b-5c6d7e8f9a05";
    let (failing_key, changing_key, other_key) = (alb_key(), alb_key(), alb_key());
    let keys = KeyServer::http().await;
    keys.set(&format!("/{failing}"), Reply::json(failing_key.pem.clone()));
    keys.set(
        &format!("/{changing}"),
        Reply::json(changing_key.pem.clone()),
    );
    let yaml = alb_config(
        &keys,
        "refresh_interval: 1s, min_refresh: 1s, max_staleness: 4s, unknown_kid_interval: 1s, unknown_kid_wait: 3s",
    );
    let server = RunningServer::start(&yaml).await;
    server.wait_ready(200, Duration::from_secs(10)).await;
    let failing_token = alb_token(&failing_key.signer, failing, ALB_ISS);
    let changing_token = alb_token(&changing_key.signer, changing, ALB_ISS);
    for token in [&failing_token, &changing_token] {
        until_alb_reason(&server, token, "token_valid", Duration::from_secs(5)).await;
    }

    // A 500, and a different key under a known kid (refused: a kid's key never changes).
    let (status, invalid) = (
        failures(&server, "alb", "status"),
        failures(&server, "alb", "invalid"),
    );
    keys.set(&format!("/{failing}"), Reply::Status(500));
    keys.set(&format!("/{changing}"), Reply::json(other_key.pem.clone()));
    eventually(
        Duration::from_secs(10),
        "two failed revalidations each",
        || {
            failures(&server, "alb", "status") >= status + 2
                && failures(&server, "alb", "invalid") >= invalid + 2
        },
    )
    .await;
    assert_eq!(
        check_alb(&server, &failing_token).await,
        "token_valid",
        "a 500 keeps the last good key"
    );
    assert_eq!(
        check_alb(&server, &changing_token).await,
        "token_valid",
        "the key fetched first still serves"
    );
    assert_eq!(
        check_alb(&server, &alb_token(&other_key.signer, changing, ALB_ISS)).await,
        "signature_invalid",
        "the changed key is not trusted"
    );

    // Past max_staleness (4 s) after the last success, the failing kid is dropped.
    until_alb_reason(
        &server,
        &failing_token,
        "key_unknown",
        Duration::from_secs(10),
    )
    .await;
    assert!(keys.hits(&format!("/{failing}")) >= 4);
}

#[tokio::test]
async fn padded_tokens_are_refused_unless_the_issuer_accepts_them() {
    let issuer = TestIssuer::es256("https://idp.example", "k1");
    let yaml = format!(
        "issuers:\n  - id: idp\n    issuer: https://idp.example\n    audiences: [{AUD}]\n    keys: {{ jwks: {} }}\n",
        jwks(&[jwk(&issuer)])
    );
    let server = RunningServer::start(&yaml).await;
    let header = json!({"alg": "ES256", "kid": "k1"}).to_string();
    let payload = Value::Object(issuer.claims("alice", AUD)).to_string();
    // Pick padding-bearing lengths by adding spaces until both segments need padding.
    let pad = |mut text: String| {
        while URL_SAFE_NO_PAD.encode(&text).len().is_multiple_of(4) {
            text.push(' ');
        }
        text
    };
    let token = issuer.sign_raw_padded(&pad(header), &pad(payload));
    assert_eq!(check(&server, &token).await, "token_malformed");
}

#[tokio::test]
async fn key_files_are_reread_when_they_change() {
    let first = TestIssuer::rs256("https://idp.example", "k1");
    let second = TestIssuer::rs256("https://idp.example", "k2");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("jwks.json");
    std::fs::write(&file, jwks(&[jwk(&first)])).expect("write");
    let yaml = format!(
        "issuers:\n  - id: idp\n    issuer: https://idp.example\n    audiences: [{AUD}]\n    keys: {{ jwks_file: \"{}\", file_check_interval: 1s }}\n",
        file.display()
    );
    let server = RunningServer::start(&yaml).await;
    assert_eq!(
        check(&server, &second.token("bob", AUD)).await,
        "key_unknown"
    );

    // A broken file is ignored; the last good keys stay.
    std::fs::write(&file, "{ not json").expect("write");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        check(&server, &first.token("alice", AUD)).await,
        "token_valid"
    );

    std::fs::write(&file, jwks(&[jwk(&first), jwk(&second)])).expect("write");
    let start = Instant::now();
    loop {
        if check(&server, &second.token("bob", AUD)).await == "token_valid" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "file change not picked up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn weak_and_hostile_keys_are_refused() {
    use openssl::bn::BigNum;
    use openssl::rsa::Rsa;
    let good = TestIssuer::rs256("https://idp.example", "good");
    let rsa = |bits: u32, e: u32, kid: &str| {
        let key = Rsa::generate_with_e(bits, &BigNum::from_u32(e).expect("e")).expect("RSA");
        json!({ "kty": "RSA", "kid": kid, "n": URL_SAFE_NO_PAD.encode(key.n().to_vec()),
            "e": URL_SAFE_NO_PAD.encode(key.e().to_vec()) })
    };
    let mut encryption = jwk(&TestIssuer::rs256("https://idp.example", "enc"));
    encryption["use"] = json!("enc");
    let set = jwks(&[
        rsa(1024, 65537, "short"),
        rsa(2048, 3, "e3"),
        encryption,
        json!({"kty": "EC", "crv": "P-256", "kid": "off-curve", "x": URL_SAFE_NO_PAD.encode([1_u8; 32]), "y": URL_SAFE_NO_PAD.encode([2_u8; 32])}),
        json!({"kty": "oct", "kid": "secret", "k": URL_SAFE_NO_PAD.encode([7_u8; 32])}),
        json!({"kty": "unknown", "kid": "odd"}),
        jwk(&good),
    ]);
    let yaml = format!(
        "issuers:\n  - id: idp\n    issuer: https://idp.example\n    audiences: [{AUD}]\n    keys: {{ jwks: {set} }}\n"
    );
    let server = RunningServer::start(&yaml).await;
    assert_eq!(
        check(&server, &good.token("alice", AUD)).await,
        "token_valid"
    );
    let forged = good.sign(&good.claims("mallory", AUD), json!({"kid": "short"}));
    assert_eq!(check(&server, &forged).await, "key_unknown");

    // A set with nothing usable is refused with its field path.
    let only_weak = format!(
        "issuers:\n  - id: idp\n    issuer: https://idp.example\n    audiences: [{AUD}]\n    keys: {{ jwks: {} }}\n",
        jwks(&[rsa(1024, 65537, "short")])
    );
    let config = fedauthz::config::parse_yaml(&only_weak, "weak.yaml").expect("parses");
    let errors = fedauthz::keys::source::prepare(&config).expect_err("refused");
    assert!(
        errors[0]
            .to_string()
            .starts_with("issuers[0].keys.jwks: no usable signing key"),
        "{errors:?}"
    );
}

#[tokio::test]
async fn optional_issuers_load_in_the_background() {
    let issuer = TestIssuer::rs256("https://idp.example", "k1");
    let local = TestIssuer::rs256("https://local.example", "l1");
    let yaml = format!(
        "issuers:\n  - id: local\n    issuer: https://local.example\n    audiences: [{AUD}]\n    keys: {{ jwks: {} }}\n  - id: remote\n    issuer: https://idp.example\n    audiences: [{AUD}]\n    keys: {{ jwks_uri: \"{}\", insecure_http: true, required: false }}\n",
        jwks(&[jwk(&local)]),
        closed_port_url()
    );
    let server = RunningServer::start(&yaml).await;
    server.wait_ready(200, Duration::from_secs(5)).await;
    assert_eq!(
        check(&server, &local.token("alice", AUD)).await,
        "token_valid"
    );
    assert_eq!(
        check(&server, &issuer.token("alice", AUD)).await,
        "keys_unavailable"
    );
}

#[tokio::test]
async fn pem_maps_and_spiffe_bundles_are_key_sources() {
    let iap = josekit::jws::ES256.generate_key_pair().expect("EC key");
    let iap_signer = josekit::jws::ES256
        .signer_from_jwk(&iap.to_jwk_private_key())
        .expect("signer");
    let spiffe = TestIssuer::es256("spiffe://example.org", "authority-1");
    let keys = KeyServer::https().await;
    keys.set(
        "/iap/public_key",
        Reply::json(
            json!({ "iap-kid": String::from_utf8(iap.to_pem_public_key()).expect("PEM") })
                .to_string(),
        ),
    );
    let mut authority = jwk(&spiffe);
    authority["use"] = json!("jwt-svid");
    keys.set(
        "/bundle",
        Reply::json(json!({ "keys": [authority], "spiffe_refresh_hint": 600 }).to_string()),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = ca_file(&keys, &dir);
    let yaml = format!(
        "issuers:\n  - id: iap\n    issuer: https://cloud.google.com/iap\n    audiences: [/projects/1/apps/demo]\n    algorithms: [ES256]\n    keys: {{ pem_map_uri: \"{}\", {ca} }}\n  - id: spiffe\n    issuer: spiffe://example.org\n    audiences: [{AUD}]\n    keys: {{ spiffe_bundle_uri: \"{}\", {ca} }}\n",
        keys.url("/iap/public_key"),
        keys.url("/bundle"),
    );
    let server = RunningServer::start(&yaml).await;
    server.wait_ready(200, Duration::from_secs(10)).await;

    let now = common::now();
    let claims = json!({ "iss": "https://cloud.google.com/iap", "sub": "accounts.google.com:1",
        "aud": "/projects/1/apps/demo", "iat": now, "exp": now + 300 });
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(json!({"alg": "ES256", "kid": "iap-kid"}).to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = iap_signer.sign(input.as_bytes()).expect("sign");
    let iap_token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature));
    assert_eq!(check(&server, &iap_token).await, "token_valid");
    assert_eq!(
        check(
            &server,
            &spiffe.token("spiffe://example.org/ns/a/sa/b", AUD)
        )
        .await,
        "token_valid"
    );
}
