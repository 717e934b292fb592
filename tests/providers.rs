//! Provider rules through the real server (in-process, gRPC on loopback): an AWS ALB token's
//! signed header is the authority for its claims, one `iss` may name two issuers told apart by
//! where their tokens arrive (Cognito bearer tokens and ALB headers), Cloudflare Access service
//! tokens, issuer spellings (Google's pair, `issuer_aliases`), and which malformed credentials
//! are one bad token (401) rather than two credentials (400).

mod common;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE;
use common::keyserver::{KeyServer, Reply};
use common::{RunningServer, TestIssuer, bearer, check_request, denied_status, reason};
use fedauthz::proto::auth::CheckResponse;
use fedauthz::proto::auth::check_response::HttpResponse;
use josekit::jwk::KeyPair as _;
use josekit::jws::JwsSigner;
use serde_json::{Map, Value, json};

const POOL: &str = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbCdEfGhI";
const ALB_ARN: &str =
    "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/web/50dc6c495c0c9188";
const ALB_KID: &str = "6a0d6ef4-3c4e-4bb1-9c9d-2d5f1f0c8a11";
const APP_CLIENT: &str = "3n4b5urk1ft4fl3mg5e62d9ado";

/// A header the allow answer sets for the upstream.
fn upstream_header<'r>(response: &'r CheckResponse, name: &str) -> Option<&'r str> {
    let Some(HttpResponse::OkResponse(ok)) = &response.http_response else {
        panic!("not an allow: {response:?}");
    };
    ok.headers
        .iter()
        .filter_map(|h| h.header.as_ref())
        .find(|h| h.key == name)
        .map(|h| h.value.as_str())
}

/// `members` with `null` members removed and the others set.
fn with(base: Value, members: Value) -> Value {
    let mut base = base;
    if let (Some(base), Some(members)) = (base.as_object_mut(), members.as_object()) {
        for (name, value) in members {
            if value.is_null() {
                base.remove(name);
            } else {
                base.insert(name.clone(), value.clone());
            }
        }
    }
    base
}

/// The load balancer's signing key, served one PEM per kid as ALB's key endpoint does.
struct LoadBalancer {
    signer: Box<dyn JwsSigner>,
    keys: KeyServer,
}

impl LoadBalancer {
    async fn start() -> Self {
        let pair = josekit::jws::ES256.generate_key_pair().expect("EC key");
        let signer = josekit::jws::ES256
            .signer_from_jwk(&pair.to_jwk_private_key())
            .expect("signer");
        let keys = KeyServer::http().await;
        keys.set(
            &format!("/{ALB_KID}"),
            Reply::json(String::from_utf8(pair.to_pem_public_key()).expect("PEM")),
        );
        Self {
            signer: Box::new(signer),
            keys,
        }
    }

    /// The issuer entry for this load balancer, signing for the user pool `POOL`.
    fn issuer_yaml(&self, id: &str) -> String {
        format!(
            "  - id: {id}\n    issuer: {POOL}\n    profile: aws-alb\n    alb_signers: [\"{ALB_ARN}\"]\n    algorithms: [ES256]\n    accept_padded_tokens: true\n    audience_claim: client\n    audiences: [{APP_CLIENT}]\n    keys: {{ pem_uri_template: \"{}\", insecure_http: true, unknown_kid_wait: 3s }}\n",
            self.keys.url("/{kid}")
        )
    }

    /// An ALB token: `iss`, `exp`, `client` and `signer` in the signed header (changed by
    /// `header`), the IdP's userinfo as payload (changed by `payload`), padded segments.
    fn token(&self, header: Value, payload: Value) -> String {
        let now = common::now();
        let header = with(
            json!({"alg": "ES256", "kid": ALB_KID, "typ": "JWT", "iss": POOL,
                   "client": APP_CLIENT, "signer": ALB_ARN, "exp": now + 120}),
            header,
        );
        let payload = with(
            json!({"sub": "7f1c2e3a-user", "email": "alice@example.com", "username": "alice"}),
            payload,
        );
        let input = format!(
            "{}.{}",
            URL_SAFE.encode(header.to_string()),
            URL_SAFE.encode(payload.to_string())
        );
        let signature = self.signer.sign(input.as_bytes()).expect("sign");
        format!("{input}.{}", URL_SAFE.encode(signature))
    }
}

fn alb_request(token: &str) -> fedauthz::proto::auth::CheckRequest {
    check_request(&[("x-amzn-oidc-data", token)])
}

#[tokio::test]
async fn the_alb_signed_header_is_the_authority_for_iss_exp_and_client() {
    let alb = LoadBalancer::start().await;
    let server = RunningServer::start(&format!("issuers:\n{}", alb.issuer_yaml("alb"))).await;
    let mut client = server.client().await;
    let mut check = async |token: String| {
        let response = client
            .check(alb_request(&token))
            .await
            .expect("rpc")
            .into_inner();
        reason(&response).to_owned()
    };
    let now = common::now();

    assert_eq!(check(alb.token(json!({}), json!({}))).await, "token_valid");
    // The header's exp has passed: a later exp in the payload does not revive the token.
    assert_eq!(
        check(alb.token(json!({"exp": now - 600}), json!({"exp": now + 600}))).await,
        "token_expired"
    );
    // Both present: the earlier one governs.
    assert_eq!(
        check(alb.token(json!({"exp": now + 120}), json!({"exp": now - 600}))).await,
        "token_expired"
    );
    assert_eq!(
        check(alb.token(json!({"exp": now + 120}), json!({"exp": now + 60}))).await,
        "token_valid"
    );
    // A header without exp is not an ALB token, whatever the payload says.
    assert_eq!(
        check(alb.token(json!({"exp": null}), json!({"exp": now + 60}))).await,
        "claim_missing"
    );
    // The payload may repeat iss and client, but not contradict the header.
    assert_eq!(
        check(alb.token(json!({}), json!({"iss": POOL, "client": APP_CLIENT}))).await,
        "token_valid"
    );
    assert_eq!(
        check(alb.token(json!({}), json!({"iss": "https://evil.example"}))).await,
        "claim_mismatch"
    );
    assert_eq!(
        check(alb.token(json!({}), json!({"client": "another-client"}))).await,
        "claim_mismatch"
    );
    // The audience is the header's client: a payload client cannot stand in for it.
    assert_eq!(
        check(alb.token(
            json!({"client": "another-client"}),
            json!({"client": APP_CLIENT})
        ))
        .await,
        "claim_mismatch"
    );
    assert_eq!(
        check(alb.token(json!({"client": "another-client"}), json!({}))).await,
        "audience_mismatch"
    );
    // iss only in the payload: an ALB issuer reads iss from the signed header.
    assert_eq!(
        check(alb.token(json!({"iss": null}), json!({"iss": POOL}))).await,
        "issuer_unknown"
    );
}

#[tokio::test]
async fn cognito_bearer_tokens_and_alb_headers_share_the_user_pool_iss() {
    let alb = LoadBalancer::start().await;
    let cognito = TestIssuer::rs256(POOL, "cognito-key-1");
    let yaml = format!(
        "issuers:\n  - id: cognito\n    issuer: {POOL}\n    profile: cognito\n    audience_claim: client_id\n    audiences: [{APP_CLIENT}]\n    required_claims: {{ token_use: access }}\n    keys: {{ jwks: {} }}\n{}response:\n  headers: {{ x-auth-client: \"{{client}}\" }}\n",
        cognito.jwks(),
        alb.issuer_yaml("alb")
    );
    let check = fedauthz::config::parse_yaml(&yaml, "shared-iss.yaml");
    assert!(
        check.is_ok(),
        "check-config accepts one iss on disjoint locations: {check:?}"
    );
    let server = RunningServer::start(&yaml).await;
    server.wait_ready(200, Duration::from_secs(10)).await;
    let mut client = server.client().await;

    let mut access = cognito.claims("7f1c2e3a-user", "unused");
    access.remove("aud");
    access.insert("client_id".into(), json!(APP_CLIENT));
    access.insert("token_use".into(), json!("access"));
    let access = cognito.sign(&access, json!({}));
    let response = client
        .check(bearer(&access))
        .await
        .expect("rpc")
        .into_inner();
    assert_eq!(reason(&response), "token_valid");
    assert_eq!(upstream_header(&response, "x-auth-issuer"), Some("cognito"));
    assert_eq!(
        upstream_header(&response, "x-auth-client"),
        Some(APP_CLIENT)
    );

    let header = alb.token(json!({}), json!({}));
    let response = client
        .check(alb_request(&header))
        .await
        .expect("rpc")
        .into_inner();
    assert_eq!(reason(&response), "token_valid");
    assert_eq!(upstream_header(&response, "x-auth-issuer"), Some("alb"));
    assert_eq!(
        upstream_header(&response, "x-auth-client"),
        Some(APP_CLIENT)
    );

    // Each kind only where its issuer takes it, and then with that issuer's keys and rules.
    let swapped = client
        .check(bearer(&header))
        .await
        .expect("rpc")
        .into_inner();
    assert_eq!(reason(&swapped), "issuer_unknown");
    let swapped = client
        .check(alb_request(&access))
        .await
        .expect("rpc")
        .into_inner();
    assert_eq!(reason(&swapped), "issuer_unknown");
    // A bearer token with iss in its header too is still read (and keyed) as Cognito's.
    let mut replicated = cognito.claims("7f1c2e3a-user", "unused");
    replicated.remove("aud");
    replicated.insert("client_id".into(), json!(APP_CLIENT));
    replicated.insert("token_use".into(), json!("access"));
    let response = client
        .check(bearer(&cognito.sign(&replicated, json!({"iss": POOL}))))
        .await
        .expect("rpc")
        .into_inner();
    assert_eq!(reason(&response), "token_valid");
    let response = client
        .check(bearer(
            &cognito.sign(&replicated, json!({"iss": "https://other.example"})),
        ))
        .await
        .expect("rpc")
        .into_inner();
    assert_eq!(reason(&response), "issuer_unknown");
}

#[tokio::test]
async fn cloudflare_service_tokens_are_services_named_by_common_name() {
    let team = "https://acme.cloudflareaccess.com";
    let aud = "4714c1358e65fe4b408ad6d432a5f878f08194bdb4752441fd56faefa9b2b6f2";
    let cloudflare = TestIssuer::rs256(team, "a1b2c3");
    let generic = TestIssuer::rs256("https://idp.example", "g1");
    let yaml = format!(
        "issuers:\n  - id: cloudflare\n    issuer: {team}\n    profile: cloudflare-access\n    audiences: [{aud}]\n    keys: {{ jwks: {} }}\n  - id: generic\n    issuer: https://idp.example\n    audiences: [{aud}]\n    keys: {{ jwks: {} }}\n    token_locations: [{{header: authorization, prefix: \"Bearer \"}}]\nresponse:\n  headers: {{ x-auth-kind: \"{{attributes.identity_type}}\" }}\n",
        cloudflare.jwks(),
        generic.jwks()
    );
    let server = RunningServer::start(&yaml).await;
    let mut client = server.client().await;
    let service = |issuer: &TestIssuer, extra: Value| {
        let claims = with(Value::Object(issuer.claims("", aud)), extra);
        issuer.sign(claims.as_object().expect("object"), json!({}))
    };
    let cf = |token: &str| check_request(&[("cf-access-jwt-assertion", token)]);

    let token = service(
        &cloudflare,
        json!({"common_name": "8a7c1e.access", "type": "app"}),
    );
    let response = client.check(cf(&token)).await.expect("rpc").into_inner();
    assert_eq!(reason(&response), "token_valid");
    assert_eq!(
        upstream_header(&response, "x-auth-subject"),
        Some("8a7c1e.access")
    );
    assert_eq!(upstream_header(&response, "x-auth-kind"), Some("service"));

    let user = service(
        &cloudflare,
        json!({"sub": "0b4f1c2e-user", "email": "a@acme.example"}),
    );
    let response = client.check(cf(&user)).await.expect("rpc").into_inner();
    assert_eq!(
        upstream_header(&response, "x-auth-subject"),
        Some("0b4f1c2e-user")
    );
    assert_eq!(upstream_header(&response, "x-auth-kind"), Some("user"));

    let nameless = service(&cloudflare, json!({}));
    let response = client.check(cf(&nameless)).await.expect("rpc").into_inner();
    assert_eq!(reason(&response), "claim_invalid");
    // Every other profile keeps the non-empty sub rule.
    let other = service(&generic, json!({"common_name": "8a7c1e.access"}));
    let response = client
        .check(bearer(&other))
        .await
        .expect("rpc")
        .into_inner();
    assert_eq!(reason(&response), "claim_invalid");
}

#[tokio::test]
async fn issuers_accept_their_documented_and_configured_spellings_only() {
    let google = TestIssuer::rs256("https://accounts.google.com", "g-1");
    let idp = TestIssuer::rs256("https://idp.example", "i-1");
    let yaml = format!(
        "issuers:\n  - id: google\n    issuer: https://accounts.google.com\n    profile: google\n    audiences: [web-client]\n    keys: {{ jwks: {} }}\n  - id: idp\n    issuer: https://idp.example\n    issuer_aliases: [\"https://idp.example/\", \"https://login.idp.example\"]\n    audiences: [web-client]\n    keys: {{ jwks: {} }}\n",
        google.jwks(),
        idp.jwks()
    );
    let server = RunningServer::start(&yaml).await;
    let mut client = server.client().await;
    let signed = |issuer: &TestIssuer, iss: &str| {
        let mut claims: Map<String, Value> = issuer.claims("1170000000000000", "web-client");
        claims.insert("iss".into(), json!(iss));
        issuer.sign(&claims, json!({}))
    };
    for (issuer, iss, expected) in [
        (&google, "https://accounts.google.com", "token_valid"),
        (&google, "accounts.google.com", "token_valid"),
        (&google, "http://accounts.google.com", "issuer_unknown"),
        (&google, "https://accounts.google.com/", "issuer_unknown"),
        (&idp, "https://idp.example", "token_valid"),
        (&idp, "https://idp.example/", "token_valid"),
        (&idp, "https://login.idp.example", "token_valid"),
        (&idp, "https://IDP.example", "issuer_unknown"),
        // An alias shares the issuer's keys, never another issuer's.
        (&google, "https://idp.example/", "key_unknown"),
    ] {
        let response = client
            .check(bearer(&signed(issuer, iss)))
            .await
            .expect("rpc")
            .into_inner();
        assert_eq!(reason(&response), expected, "{iss}");
        if expected == "token_valid" {
            let id = if std::ptr::eq(issuer, &google) {
                "google"
            } else {
                "idp"
            };
            assert_eq!(upstream_header(&response, "x-auth-issuer"), Some(id));
        }
    }
}

#[tokio::test]
async fn one_malformed_token_is_401_and_two_credentials_are_400() {
    let idp = TestIssuer::rs256("https://idp.example", "i-1");
    let yaml = format!(
        "issuers:\n  - id: idp\n    issuer: https://idp.example\n    audiences: [api]\n    keys: {{ jwks: {} }}\n",
        idp.jwks()
    );
    let server = RunningServer::start(&yaml).await;
    let mut client = server.client().await;
    let token = idp.token("alice", "api");
    let parts: Vec<&str> = token.split('.').collect();
    let json_serialization = json!({"payload": parts[1],
        "signatures": [{"protected": parts[0], "signature": parts[2]}]})
    .to_string();
    let cases = [
        (
            format!("Bearer {json_serialization}"),
            401,
            "token_malformed",
        ),
        (
            format!("Bearer {}.{{\"sub\":\"a,b\"}}.{}", parts[0], parts[2]),
            401,
            "token_malformed",
        ),
        (
            format!("Bearer {token},Bearer {token}"),
            400,
            "credential_ambiguous",
        ),
        (
            format!("Bearer {token}, Basic YWxpY2U6c2VjcmV0"),
            400,
            "credential_ambiguous",
        ),
        (
            format!("Basic YWxpY2U6c2VjcmV0,Bearer {token}"),
            400,
            "credential_ambiguous",
        ),
    ];
    for (authorization, status, expected) in cases {
        let response = client
            .check(check_request(&[("authorization", &authorization)]))
            .await
            .expect("rpc")
            .into_inner();
        assert_eq!(reason(&response), expected, "{authorization}");
        assert_eq!(denied_status(&response), status, "{authorization}");
    }
}
