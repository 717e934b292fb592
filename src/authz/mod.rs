//! Authorization: pick the route that covers a request, then decide on the outcome of
//! authentication against that route's requirements. Deny by default.
//!
//! Order of precedence: a credential that is present but invalid is always a 401; then the
//! first route whose match fits decides (no route: `default_decision`); a route that does not
//! allow anonymous requests answers a missing credential with 401 and a verified token that
//! misses its requirements with 403. Without configured routes there is one catch-all route
//! that accepts any issuer and treats a missing credential as `default_decision` says.
//!
//! Depends on [`crate::verify`] (the verified token), [`crate::identity`], [`crate::config`] and
//! [`crate::reason`].

mod pattern;
mod requirement;

use std::collections::HashMap;
use std::sync::Arc;

pub use pattern::{Glob, HostPattern};
pub use requirement::{Requirement, Unmet};

use crate::caller::CallerIdentity;
use crate::config::{Config, CredentialKind, DefaultDecision, RouteConfig};
use crate::reason::{Reason, Rejection};
use crate::verify::VerifiedToken;

/// What authentication established about a request.
#[derive(Debug)]
pub enum Authentication {
    /// No credential in any configured location.
    Missing,
    /// A credential was present but is not acceptable.
    Failed(Rejection),
    /// A credential was present and verified (shared with the token cache).
    Verified(Arc<VerifiedToken>),
}

/// The decision for one request.
#[derive(Debug)]
pub enum Decision {
    /// Let the request through; `None` is an anonymous request.
    Allow(Option<Arc<VerifiedToken>>),
    /// Stop it.
    Deny(Rejection),
}

/// The request attributes routes match on (borrowed from the CheckRequest).
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestFacts<'a> {
    /// `:authority`, possibly with a port.
    pub host: &'a str,
    /// `:path`, possibly with a query.
    pub path: &'a str,
    /// `:method`.
    pub method: &'a str,
    /// Envoy's per-route `context_extensions`.
    pub context_extensions: Option<&'a HashMap<String, String>>,
    /// The mTLS peer principal (`source.principal`): the downstream client as Envoy saw it.
    pub principal: &'a str,
    /// The proxy calling fedauthz, when its client certificate was verified (mTLS).
    pub caller: Option<&'a CallerIdentity>,
}

impl RequestFacts<'_> {
    fn context_extension(&self, key: &str) -> Option<&str> {
        self.context_extensions?.get(key).map(String::as_str)
    }
}

/// One compiled route.
#[derive(Debug)]
struct Route {
    name: Arc<str>,
    hosts: Vec<HostPattern>,
    paths: Vec<Glob>,
    methods: Vec<String>,
    context_extensions: Vec<(String, String)>,
    principals: Vec<Glob>,
    callers: Vec<Glob>,
    allow_anonymous: bool,
    requirement: Requirement,
    prefer_credential: Option<CredentialKind>,
}

/// `host` without its port (`[::1]:8080` → `[::1]`).
fn without_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(at) if !host.get(at..).unwrap_or_default().contains(']') => {
            host.get(..at).unwrap_or(host)
        }
        _ => host,
    }
}

/// `path` without query or fragment.
fn without_query(path: &str) -> &str {
    path.split(['?', '#']).next().unwrap_or(path)
}

impl Route {
    fn compile(config: &RouteConfig) -> Self {
        let m = &config.matches;
        Self {
            name: Arc::from(config.name.as_str()),
            hosts: m.hosts.iter().map(|h| HostPattern::new(h)).collect(),
            paths: m.paths.iter().map(|p| Glob::new(p)).collect(),
            methods: m.methods.iter().map(|v| v.to_ascii_uppercase()).collect(),
            context_extensions: m
                .context_extensions
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            principals: m.principals.iter().map(|p| Glob::new(p)).collect(),
            callers: m.callers.iter().map(|c| Glob::new(c)).collect(),
            allow_anonymous: config.allow_anonymous,
            requirement: Requirement::compile(&config.require),
            prefer_credential: config.prefer_credential,
        }
    }

    /// Whether the route covers a request with these `facts`, whose host without port is
    /// `host` and path without query is `path` (computed once per request, not per route).
    fn matches(&self, facts: &RequestFacts<'_>, host: &str, path: &str) -> bool {
        (self.hosts.is_empty() || self.hosts.iter().any(|h| h.matches(host)))
            && (self.paths.is_empty() || self.paths.iter().any(|p| p.matches(path)))
            && (self.methods.is_empty() || self.methods.iter().any(|m| m == facts.method))
            && (self.principals.is_empty()
                || self.principals.iter().any(|p| p.matches(facts.principal)))
            && (self.callers.is_empty()
                || facts.caller.is_some_and(|caller| {
                    caller
                        .names()
                        .any(|name| self.callers.iter().any(|c| c.matches(name)))
                }))
            && self
                .context_extensions
                .iter()
                .all(|(key, value)| facts.context_extension(key) == Some(value.as_str()))
    }

    fn decide(&self, authentication: Authentication) -> Decision {
        match authentication {
            Authentication::Failed(rejection) => Decision::Deny(rejection),
            Authentication::Missing if self.allow_anonymous => Decision::Allow(None),
            Authentication::Missing => Decision::Deny(Rejection::new(
                Reason::TokenMissing,
                format!(
                    "no credential in any configured location (route {})",
                    self.name
                ),
            )),
            Authentication::Verified(token) => match self.requirement.check(&token) {
                Ok(()) => Decision::Allow(Some(token)),
                Err(unmet) => {
                    let mut rejection = Rejection::new(
                        Reason::RequirementNotMet,
                        format!("route {}: {}", self.name, unmet.condition),
                    )
                    .for_issuer(&token.issuer.id)
                    .for_subject(token.subject());
                    if !unmet.scopes.is_empty() {
                        rejection = rejection.needing_scope(unmet.scopes.join(" "));
                    }
                    Decision::Deny(rejection)
                }
            },
        }
    }
}

/// The decision and the route that made it (`None`: no route matched).
#[derive(Debug)]
pub struct Verdict {
    /// The decision.
    pub decision: Decision,
    /// Name of the route that decided.
    pub route: Option<Arc<str>>,
}

/// The compiled routes of one configuration.
#[derive(Debug)]
pub struct Authorizer {
    routes: Vec<Route>,
    no_route: DefaultDecision,
}

/// Name of the implicit route used when the configuration lists none.
const CATCH_ALL: &str = "default";

impl Authorizer {
    /// Compiles the routes of `config` (already validated).
    pub fn new(config: &Config) -> Self {
        let routes = match &config.routes {
            Some(routes) => routes.iter().map(Route::compile).collect(),
            None => vec![Route {
                name: Arc::from(CATCH_ALL),
                hosts: Vec::new(),
                paths: Vec::new(),
                methods: Vec::new(),
                context_extensions: Vec::new(),
                principals: Vec::new(),
                callers: Vec::new(),
                allow_anonymous: config.default_decision == DefaultDecision::Allow,
                requirement: Requirement::default(),
                prefer_credential: None,
            }],
        };
        Self {
            routes,
            no_route: config.default_decision,
        }
    }

    /// The claim paths some route's requirements read.
    pub fn claim_paths(&self) -> Vec<&str> {
        let mut paths = Vec::new();
        for route in &self.routes {
            route.requirement.claim_paths(&mut paths);
        }
        paths
    }

    /// Which credential the route covering `facts` prefers when a request carries both a
    /// token and an API key (`None`: it says nothing, or no route covers the request).
    pub fn preferred_credential(&self, facts: &RequestFacts<'_>) -> Option<CredentialKind> {
        let (host, path) = (without_port(facts.host), without_query(facts.path));
        self.routes
            .iter()
            .find(|route| route.matches(facts, host, path))
            .and_then(|route| route.prefer_credential)
    }

    /// The decision for a request with these `facts` and this `authentication`.
    pub fn decide(&self, facts: &RequestFacts<'_>, authentication: Authentication) -> Verdict {
        if let Authentication::Failed(rejection) = authentication {
            return Verdict {
                decision: Decision::Deny(rejection),
                route: None,
            };
        }
        let (host, path) = (without_port(facts.host), without_query(facts.path));
        match self
            .routes
            .iter()
            .find(|route| route.matches(facts, host, path))
        {
            Some(route) => Verdict {
                decision: restricted_keys(route.decide(authentication), Some(&route.name)),
                route: Some(Arc::clone(&route.name)),
            },
            None => Verdict {
                decision: match (self.no_route, authentication) {
                    (DefaultDecision::Allow, Authentication::Verified(token)) => {
                        restricted_keys(Decision::Allow(Some(token)), None)
                    }
                    (DefaultDecision::Allow, _) => Decision::Allow(None),
                    (DefaultDecision::Deny, _) => Decision::Deny(Rejection::new(
                        Reason::NoRouteMatched,
                        "no route matches the request",
                    )),
                },
                route: None,
            },
        }
    }
}

/// `decision`, unless it allows an API key restricted to other routes than `route`.
fn restricted_keys(decision: Decision, route: Option<&str>) -> Decision {
    match decision {
        Decision::Allow(Some(token))
            if token.api_key().is_some_and(|grant| !grant.allows(route)) =>
        {
            let grant_hash = token.api_key().map_or("", |grant| &grant.id_hash);
            Decision::Deny(
                Rejection::new(
                    Reason::RequirementNotMet,
                    format!(
                        "API key {grant_hash} is not allowed on route {}",
                        route.unwrap_or("-")
                    ),
                )
                .for_issuer(&token.issuer.id)
                .for_subject(token.subject()),
            )
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_yaml;

    fn authorizer(extra: &str) -> Authorizer {
        let yaml = format!(
            "issuers:\n  - {{id: a, issuer: 'https://a', audiences: [x], keys: {{jwks: {{keys: []}}}}}}\n{extra}"
        );
        Authorizer::new(&parse_yaml(&yaml, "test.yaml").unwrap())
    }

    fn reason(verdict: &Verdict) -> Option<Reason> {
        match &verdict.decision {
            Decision::Deny(r) => Some(r.reason),
            Decision::Allow(_) => None,
        }
    }

    fn ext(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn without_routes_missing_credentials_follow_the_default_and_failures_always_deny() {
        let facts = RequestFacts::default();
        let deny = authorizer("");
        let verdict = deny.decide(&facts, Authentication::Missing);
        assert_eq!(reason(&verdict), Some(Reason::TokenMissing));
        assert_eq!(verdict.route.as_deref(), Some("default"));

        let allow = authorizer("default_decision: allow\n");
        let verdict = allow.decide(&facts, Authentication::Missing);
        assert!(matches!(verdict.decision, Decision::Allow(None)));
        let failed = Authentication::Failed(Rejection::new(Reason::TokenExpired, "x"));
        assert_eq!(
            reason(&allow.decide(&facts, failed)),
            Some(Reason::TokenExpired)
        );
    }

    #[test]
    fn first_matching_route_decides_and_unmatched_requests_are_denied() {
        let authz = authorizer(
            "routes:\n  - {name: health, match: {context_extensions: {api: health}}, allow_anonymous: true}\n  - {name: admin, match: {context_extensions: {api: admin, tier: gold}}}\n",
        );
        let health = ext(&[("api", "health")]);
        let verdict = authz.decide(
            &RequestFacts {
                context_extensions: Some(&health),
                ..RequestFacts::default()
            },
            Authentication::Missing,
        );
        assert!(matches!(verdict.decision, Decision::Allow(None)));
        assert_eq!(verdict.route.as_deref(), Some("health"));

        // Every listed extension must match.
        let partial = ext(&[("api", "admin")]);
        let verdict = authz.decide(
            &RequestFacts {
                context_extensions: Some(&partial),
                ..RequestFacts::default()
            },
            Authentication::Missing,
        );
        assert_eq!(reason(&verdict), Some(Reason::NoRouteMatched));
        assert_eq!(verdict.route, None);

        let full = ext(&[("api", "admin"), ("tier", "gold"), ("other", "x")]);
        let verdict = authz.decide(
            &RequestFacts {
                context_extensions: Some(&full),
                ..RequestFacts::default()
            },
            Authentication::Missing,
        );
        assert_eq!(reason(&verdict), Some(Reason::TokenMissing));
        assert_eq!(verdict.route.as_deref(), Some("admin"));

        // A present but invalid credential is a 401 even where anonymous access is allowed.
        let failed = Authentication::Failed(Rejection::new(Reason::SignatureInvalid, "x"));
        let verdict = authz.decide(
            &RequestFacts {
                context_extensions: Some(&health),
                ..RequestFacts::default()
            },
            failed,
        );
        assert_eq!(reason(&verdict), Some(Reason::SignatureInvalid));
    }

    #[test]
    fn routes_match_host_path_method_and_principal() {
        let authz = authorizer(
            "routes:\n  - {name: admin, match: {hosts: ['*.example.com'], paths: ['/admin/*'], methods: [POST], principals: ['spiffe://td/ns/ops/*']}, allow_anonymous: true}\n  - {name: health, match: {paths: [/healthz]}, allow_anonymous: true}\n",
        );
        let route = |host, path, method, principal| {
            let facts = RequestFacts {
                host,
                path,
                method,
                principal,
                ..RequestFacts::default()
            };
            authz
                .decide(&facts, Authentication::Missing)
                .route
                .map(|r| r.to_string())
        };
        let ops = "spiffe://td/ns/ops/sa/deployer";
        assert_eq!(
            route("api.example.com:8443", "/admin/users?x=1", "POST", ops).as_deref(),
            Some("admin")
        );
        assert_eq!(route("example.com", "/admin/users", "POST", ops), None);
        assert_eq!(route("api.example.com", "/admin/users", "GET", ops), None);
        assert_eq!(
            route(
                "api.example.com",
                "/admin/users",
                "POST",
                "spiffe://td/ns/dev/sa/x"
            ),
            None
        );
        assert_eq!(
            route("any", "/healthz?probe=1", "GET", "").as_deref(),
            Some("health")
        );
        assert_eq!(route("any", "/healthz/x", "GET", ""), None);
    }

    #[test]
    fn routes_match_the_verified_caller_and_never_an_unverified_connection() {
        let authz = authorizer(
            "server: {tls: {certificate_file: /t/tls.crt, private_key_file: /t/tls.key, client_certificates: {ca_file: /t/ca.crt}}}\nroutes:\n  - {name: gateway, match: {callers: ['spiffe://td/ns/gateways/sa/*', 'edge.example.com']}, allow_anonymous: true}\n",
        );
        let route = |caller: Option<&CallerIdentity>| {
            let facts = RequestFacts {
                caller,
                // Envoy's view of the downstream client never stands in for the caller.
                principal: "spiffe://td/ns/gateways/sa/envoy",
                ..RequestFacts::default()
            };
            authz
                .decide(&facts, Authentication::Missing)
                .route
                .map(|r| r.to_string())
        };
        let spiffe = CallerIdentity {
            uris: vec!["spiffe://td/ns/gateways/sa/envoy".into()],
            dns_names: Vec::new(),
        };
        let dns = CallerIdentity {
            uris: vec!["spiffe://td/ns/other/sa/x".into()],
            dns_names: vec!["edge.example.com".into()],
        };
        let other = CallerIdentity {
            uris: vec!["spiffe://td/ns/apps/sa/web".into()],
            dns_names: vec!["web.example.com".into()],
        };
        assert_eq!(route(Some(&spiffe)).as_deref(), Some("gateway"));
        assert_eq!(route(Some(&dns)).as_deref(), Some("gateway"));
        assert_eq!(route(Some(&other)), None);
        assert_eq!(route(None), None);
    }

    #[test]
    fn routes_with_default_allow_let_unmatched_requests_through() {
        let authz = authorizer(
            "default_decision: allow\nroutes:\n  - {name: admin, match: {context_extensions: {api: admin}}}\n",
        );
        let verdict = authz.decide(&RequestFacts::default(), Authentication::Missing);
        assert!(matches!(verdict.decision, Decision::Allow(None)));
        assert_eq!(verdict.route, None);
    }
}
