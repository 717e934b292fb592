//! Authorization through the real pipeline: routes matched on host, path, method and
//! context_extensions; requirements over normalized identities of several providers at once;
//! 401 for authentication failures versus 403 (with the needed `scope`) for valid tokens that
//! lack access.

mod common;

use std::sync::Arc;

use common::{TestIssuer, check_request, denied_header, denied_status, reason};
use fedauthz::pipeline::Generation;
use fedauthz::proto::auth::CheckRequest;
use serde_json::{Value, json};

const ENTRA: &str = "https://login.microsoftonline.com/t1/v2.0";
const COGNITO: &str = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Pool";
const K8S: &str = "https://kubernetes.default.svc.cluster.local";

struct Setup {
    entra: TestIssuer,
    cognito: TestIssuer,
    k8s: TestIssuer,
    generation: Generation,
}

impl Setup {
    fn new() -> Self {
        let entra = TestIssuer::rs256(ENTRA, "e1");
        let cognito = TestIssuer::rs256(COGNITO, "c1");
        let k8s = TestIssuer::es256(K8S, "k1");
        let yaml = format!(
            r#"
response:
  identity_header: x-auth-identity
  headers:
    x-auth-email: "{{email}}"
    x-auth-tenant: "{{tenant}}"
    x-auth-scopes: "{{scopes}}"
    x-auth-service-account: "{{attributes.service_account}}"
issuers:
  - {{ id: entra, issuer: "{ENTRA}", profile: entra, audiences: [api-orders], keys: {{ jwks: {entra_jwks} }} }}
  - {{ id: cognito, issuer: "{COGNITO}", profile: cognito, audience_claim: client_id, audiences: [app-client],
       required_claims: {{ token_use: access }}, keys: {{ jwks: {cognito_jwks} }} }}
  - {{ id: k8s, issuer: "{K8S}", profile: kubernetes, audiences: [orders], keys: {{ jwks: {k8s_jwks} }} }}
routes:
  - name: health
    match: {{ paths: [/healthz] }}
    allow_anonymous: true
  - name: orders-write
    match: {{ paths: ["/orders*"], methods: [POST, PUT, DELETE] }}
    require:
      any_of:
        - {{ issuers: [entra], scopes: [Orders.Write] }}
        - {{ issuers: [cognito], scopes: [orders/write] }}
  - name: orders-read
    match: {{ hosts: [api.example.com, "*.internal.example.com"], paths: ["/orders*"] }}
    require:
      any_of:
        - {{ issuers: [entra], scopes: [Orders.Read] }}
        - {{ issuers: [cognito], scopes: [orders/read] }}
        - {{ issuers: [k8s], subjects: ["system:serviceaccount:payments:*"] }}
    headers: {{ x-auth-route: "orders-read via {{client}}" }}
  - name: admin
    match: {{ paths: ["/admin/*"] }}
    require: {{ groups: [ops-admins], claims: [{{ issuer: entra, path: tid, equals: t1 }}] }}
"#,
            entra_jwks = entra.jwks(),
            cognito_jwks = cognito.jwks(),
            k8s_jwks = k8s.jwks(),
        );
        let config = fedauthz::config::parse_yaml(&yaml, "policy.yaml").expect("config");
        let generation = Generation::build(config, None, &Arc::new(tokio::sync::Notify::new()))
            .expect("generation");
        Self {
            entra,
            cognito,
            k8s,
            generation,
        }
    }

    fn entra(&self, extra: Value) -> String {
        let mut claims = self.entra.claims("alice", "api-orders");
        claims.insert("tid".into(), "t1".into());
        merge(&mut claims, extra);
        self.entra.sign(&claims, json!({}))
    }

    fn cognito(&self, scope: &str) -> String {
        let mut claims = self.cognito.claims("machine-1", "unused");
        claims.remove("aud");
        merge(
            &mut claims,
            json!({"client_id": "app-client", "token_use": "access", "scope": scope}),
        );
        self.cognito.sign(&claims, json!({}))
    }

    fn k8s(&self, namespace: &str) -> String {
        let mut claims = self
            .k8s
            .claims(&format!("system:serviceaccount:{namespace}:api"), "orders");
        merge(
            &mut claims,
            json!({"kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": "api", "uid": "u"}}}),
        );
        self.k8s.sign(&claims, json!({}))
    }

    fn check(
        &self,
        method: &str,
        host: &str,
        path: &str,
        token: Option<&str>,
    ) -> fedauthz::proto::auth::CheckResponse {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = bearer
            .iter()
            .map(|b| ("authorization", b.as_str()))
            .collect();
        let mut request: CheckRequest = check_request(&headers);
        if let Some(http) = request
            .attributes
            .as_mut()
            .and_then(|a| a.request.as_mut())
            .and_then(|r| r.http.as_mut())
        {
            http.method = method.into();
            http.host = host.into();
            http.path = path.into();
        }
        fedauthz::service::check(&self.generation.pipeline, &request, common::now())
    }
}

fn merge(claims: &mut serde_json::Map<String, Value>, extra: Value) {
    if let Value::Object(extra) = extra {
        claims.extend(extra);
    }
}

#[test]
fn three_providers_on_one_route() {
    let s = Setup::new();
    let get = |token: &str| s.check("GET", "api.example.com", "/orders/7", Some(token));
    assert_eq!(
        reason(&get(&s.entra(json!({"scp": "Orders.Read"})))),
        "token_valid"
    );
    assert_eq!(
        reason(&get(&s.cognito("orders/read openid"))),
        "token_valid"
    );
    assert_eq!(reason(&get(&s.k8s("payments"))), "token_valid");

    // Valid tokens without access: 403 insufficient_scope, naming the scopes that would do
    // for this token's issuer (none for a service account: scopes would not help it).
    for (token, scope) in [
        (s.entra(json!({"scp": "Profile.Read"})), Some("Orders.Read")),
        (s.cognito("openid"), Some("orders/read")),
        (s.k8s("marketing"), None),
    ] {
        let response = get(&token);
        assert_eq!(reason(&response), "requirement_not_met");
        assert_eq!(denied_status(&response), 403);
        let challenge = denied_header(&response, "www-authenticate").expect("challenge");
        assert!(
            challenge.contains("error=\"insufficient_scope\""),
            "{challenge}"
        );
        match scope {
            Some(scope) => assert!(
                challenge.ends_with(&format!(", scope=\"{scope}\"")),
                "{challenge}"
            ),
            None => assert!(!challenge.contains("scope=\""), "{challenge}"),
        }
    }
    // A cross-issuer scope does not count: Cognito's scope name in an Entra token.
    assert_eq!(
        reason(&get(&s.entra(json!({"scp": "orders/read"})))),
        "requirement_not_met"
    );
}

#[test]
fn host_path_and_method_pick_the_route() {
    let s = Setup::new();
    let reader = s.entra(json!({"scp": "Orders.Read"}));
    let writer = s.entra(json!({"scp": "Orders.Write"}));
    assert_eq!(
        reason(&s.check("POST", "api.example.com", "/orders", Some(&writer))),
        "token_valid"
    );
    assert_eq!(
        reason(&s.check("POST", "api.example.com", "/orders", Some(&reader))),
        "requirement_not_met"
    );
    assert_eq!(
        reason(&s.check(
            "GET",
            "a.internal.example.com:8443",
            "/orders?page=2",
            Some(&reader)
        )),
        "token_valid"
    );
    // No route for this host: denied by default, 403.
    let response = s.check("GET", "evil.example.net", "/orders", Some(&reader));
    assert_eq!(reason(&response), "no_route_matched");
    assert_eq!(denied_status(&response), 403);
}

#[test]
fn authentication_failures_stay_401_and_anonymous_routes_need_no_token() {
    let s = Setup::new();
    let response = s.check("GET", "api.example.com", "/orders", None);
    assert_eq!(reason(&response), "token_missing");
    assert_eq!(denied_status(&response), 401);
    let mut expired = s.entra.claims("alice", "api-orders");
    expired.insert("exp".into(), json!(common::now() - 3600));
    expired.insert("iat".into(), json!(common::now() - 7200));
    let response = s.check(
        "GET",
        "api.example.com",
        "/orders",
        Some(&s.entra.sign(&expired, json!({}))),
    );
    assert_eq!(reason(&response), "token_expired");
    assert_eq!(denied_status(&response), 401);
    assert_eq!(
        reason(&s.check("GET", "any", "/healthz", None)),
        "anonymous"
    );
}

#[test]
fn group_requirements_treat_overage_as_unknown() {
    let s = Setup::new();
    let admin = s.entra(json!({"groups": ["ops-admins"]}));
    assert_eq!(
        reason(&s.check("GET", "x", "/admin/users", Some(&admin))),
        "token_valid"
    );
    let overage = s.entra(json!({"_claim_names": {"groups": "src1"}, "_claim_sources": {"src1": {"endpoint": "https://graph"}}}));
    assert_eq!(
        reason(&s.check("GET", "x", "/admin/users", Some(&overage))),
        "requirement_not_met"
    );
    let other = s.entra(json!({"groups": ["ops-admins"], "tid": "t2"}));
    // The tid condition reads Entra tokens only: a Cognito token in ops-admins that carries a
    // `tid` claim of its own does not pass for an Entra one.
    let mut claims = s.cognito.claims("machine", "unused");
    claims.remove("aud");
    merge(
        &mut claims,
        json!({"client_id": "app-client", "token_use": "access", "cognito:groups": ["ops-admins"], "tid": "t1"}),
    );
    let cognito_admin = s.cognito.sign(&claims, json!({}));
    assert_eq!(
        reason(&s.check("GET", "x", "/admin/users", Some(&cognito_admin))),
        "requirement_not_met"
    );
    // tid is checked by the claim condition (and this issuer is single-tenant: t1).
    assert_eq!(
        reason(&s.check("GET", "x", "/admin/users", Some(&other))),
        "requirement_not_met"
    );
}

/// The upstream headers an allow response sets, and the ones it removes.
fn mutations(
    response: &fedauthz::proto::auth::CheckResponse,
) -> (Vec<(String, String)>, Vec<String>) {
    use fedauthz::proto::auth::check_response::HttpResponse;
    let Some(HttpResponse::OkResponse(ok)) = &response.http_response else {
        panic!("not an allow: {response:?}")
    };
    let set = ok
        .headers
        .iter()
        .filter_map(|h| h.header.as_ref())
        .map(|h| (h.key.clone(), h.value.clone()))
        .collect();
    (set, ok.headers_to_remove.clone())
}

#[test]
fn identity_headers_come_from_templates_and_every_settable_header_is_scrubbed() {
    use base64::Engine as _;
    let s = Setup::new();
    let token = s.entra(
        json!({"scp": "Orders.Read Orders.Write", "email": "alice@contoso.com", "azp": "web"}),
    );
    let response = s.check("GET", "api.example.com", "/orders", Some(&token));
    let (set, removed) = mutations(&response);
    let get = |name: &str| set.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    assert_eq!(get("x-auth-subject"), Some("alice"));
    assert_eq!(get("x-auth-issuer"), Some("entra"));
    assert_eq!(get("x-auth-email"), Some("alice@contoso.com"));
    assert_eq!(get("x-auth-tenant"), Some("t1"));
    assert_eq!(get("x-auth-scopes"), Some("Orders.Read Orders.Write"));
    assert_eq!(get("x-auth-route"), Some("orders-read via web"));
    let identity = get("x-auth-identity").expect("identity header");
    let identity: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(identity)
            .expect("base64url"),
    )
    .expect("JSON");
    assert_eq!(identity["issuer"], "entra");
    assert_eq!(identity["scopes"], json!(["Orders.Read", "Orders.Write"]));
    // No service account in an Entra token: that header is removed, not left to the client.
    assert!(get("x-auth-service-account").is_none());
    assert!(
        removed.contains(&"x-auth-service-account".to_owned()),
        "{removed:?}"
    );

    // A Kubernetes token on the same route: its own attributes.
    let response = s.check(
        "GET",
        "api.example.com",
        "/orders",
        Some(&s.k8s("payments")),
    );
    let (set, _) = mutations(&response);
    assert!(set.contains(&("x-auth-service-account".to_owned(), "api".to_owned())));

    // Anonymous route: every header fedauthz could set is removed.
    let response = s.check("GET", "any", "/healthz", None);
    let (set, removed) = mutations(&response);
    assert!(set.is_empty());
    for name in [
        "x-auth-subject",
        "x-auth-issuer",
        "x-auth-email",
        "x-auth-tenant",
        "x-auth-scopes",
        "x-auth-service-account",
        "x-auth-identity",
        "x-auth-route",
    ] {
        assert!(
            removed.contains(&name.to_owned()),
            "{name} not removed: {removed:?}"
        );
    }
}

#[test]
fn profiles_bring_their_provider_locations_and_issuer_spellings() {
    let google = TestIssuer::rs256("https://accounts.google.com", "g1");
    let iap = TestIssuer::es256("https://cloud.google.com/iap", "i1");
    let cloudflare = TestIssuer::rs256("https://team.cloudflareaccess.com", "c1");
    let yaml = format!(
        r#"
issuers:
  - {{ id: google, issuer: "https://accounts.google.com", profile: google, audiences: [web-client], keys: {{ jwks: {} }} }}
  - {{ id: iap, issuer: "https://cloud.google.com/iap", profile: gcp-iap, audiences: [/projects/1/apps/demo], keys: {{ jwks: {} }} }}
  - {{ id: cloudflare, issuer: "https://team.cloudflareaccess.com", profile: cloudflare-access, audiences: [aud-tag], keys: {{ jwks: {} }} }}
"#,
        google.jwks(),
        iap.jwks(),
        cloudflare.jwks()
    );
    let config = fedauthz::config::parse_yaml(&yaml, "profiles.yaml").expect("config");
    let generation =
        Generation::build(config, None, &Arc::new(tokio::sync::Notify::new())).expect("generation");
    let check = |headers: &[(&str, &str)]| {
        let response =
            fedauthz::service::check(&generation.pipeline, &check_request(headers), common::now());
        reason(&response).to_owned()
    };

    // Google signs with and without the scheme; both mean the same issuer.
    let mut claims = google.claims("1234", "web-client");
    claims.insert("iss".into(), "accounts.google.com".into());
    let bare = format!("Bearer {}", google.sign(&claims, json!({})));
    assert_eq!(check(&[("authorization", &bare)]), "token_valid");

    // IAP tokens come in IAP's header, and only there.
    let iap_token = iap.token("accounts.google.com:1234", "/projects/1/apps/demo");
    assert_eq!(
        check(&[("x-goog-iap-jwt-assertion", &iap_token)]),
        "token_valid"
    );
    assert_eq!(
        check(&[("authorization", &format!("Bearer {iap_token}"))]),
        "token_location_not_allowed"
    );

    // Cloudflare Access: its header or its cookie.
    let cf = cloudflare.token("user-1", "aud-tag");
    assert_eq!(check(&[("cf-access-jwt-assertion", &cf)]), "token_valid");
    assert_eq!(
        check(&[("cookie", &format!("theme=dark; CF_Authorization={cf}"))]),
        "token_valid"
    );
}
