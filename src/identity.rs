//! Claim normalization: one [`Identity`] from the verified claims of any provider, so that rules
//! and headers are written once whether the token came from Entra ID, Cognito, Google,
//! Kubernetes, GitHub Actions or elsewhere.
//!
//! Each issuer has a [`Profile`] that knows where its provider keeps the subject, tenant,
//! client, scopes, roles, groups and email (each provider's documented token format), plus
//! provider attributes (a Kubernetes namespace, a GitHub repository…). The `generic` profile
//! reads claim paths written in configuration. Raw claims stay reachable by path, under the
//! issuer id, so two issuers' claims never collide.
//!
//! Depends on [`crate::config`] (the profile schema) only; runs after verification, so every
//! claim it reads is signed.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};

pub use crate::config::{ClaimMappings, ProfileName};

/// How an issuer's claims map to an [`Identity`]: its provider's layout, and for `generic` the
/// configured claim paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// The provider layout.
    pub name: ProfileName,
    /// Claim paths (read by `generic` only).
    pub mappings: ClaimMappings,
}

impl Profile {
    /// The profile an issuer's configuration names.
    pub fn new(name: ProfileName, mappings: &ClaimMappings) -> Self {
        Self {
            name,
            mappings: mappings.clone(),
        }
    }
}

/// Group membership as far as the token tells. Entra ID leaves `groups` out when a user is in
/// too many ("overage"): that means *unknown*, never *none*.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum Groups {
    /// The groups the token lists (possibly none).
    Known(Vec<String>),
    /// The token says there are groups but does not list them.
    Unknown,
}

impl Groups {
    /// The listed groups; empty when unknown.
    pub fn known(&self) -> &[String] {
        match self {
            Self::Known(groups) => groups,
            Self::Unknown => &[],
        }
    }
}

/// Who the token speaks for, in provider-neutral terms.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Identity {
    /// Id of the issuer that verified the token (shared with the issuer: not copied per token).
    #[serde(serialize_with = "serialize_str")]
    pub issuer: Arc<str>,
    /// The subject (`sub`).
    pub subject: String,
    /// Tenant: Entra `tid`, Google Workspace `hd`, Kubernetes namespace, SPIFFE trust domain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The client (application) the token was issued to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// OAuth scopes (and Auth0 permissions).
    pub scopes: Vec<String>,
    /// Roles.
    pub roles: Vec<String>,
    /// Groups.
    pub groups: Groups,
    /// E-mail address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Provider attributes (`namespace`, `service_account`, `repository`, `ref`, …).
    pub attributes: BTreeMap<String, String>,
}

fn serialize_str<S: serde::Serializer>(value: &Arc<str>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(value)
}

impl Identity {
    /// Normalizes `claims` (already verified) of issuer `issuer` under `profile`.
    pub fn from_claims(
        issuer: &Arc<str>,
        subject: String,
        profile: &Profile,
        claims: &Map<String, Value>,
    ) -> Self {
        let mut identity = Self {
            issuer: Arc::clone(issuer),
            subject,
            tenant: None,
            client: None,
            scopes: Vec::new(),
            roles: Vec::new(),
            groups: Groups::Known(Vec::new()),
            email: string(claims, "email"),
            attributes: BTreeMap::new(),
        };
        let get = |path: &str| claim(claims, path);
        match profile.name {
            ProfileName::Generic => {
                let mappings = &profile.mappings;
                // Unmapped fields fall back to the registered and common claim names.
                let read = |path: &Option<String>, defaults: &[&str]| match path {
                    Some(path) => get(path),
                    None => defaults.iter().find_map(|name| get(name)),
                };
                identity.tenant = read(&mappings.tenant, &[]).and_then(text);
                identity.client = read(&mappings.client, &["azp", "client_id"]).and_then(text);
                identity.scopes = read(&mappings.scopes, &["scope", "scp"])
                    .map(words)
                    .unwrap_or_default();
                identity.roles = read(&mappings.roles, &["roles"])
                    .map(words)
                    .unwrap_or_default();
                identity.groups = Groups::Known(
                    read(&mappings.groups, &["groups"])
                        .map(words)
                        .unwrap_or_default(),
                );
                if mappings.email.is_some() {
                    identity.email = read(&mappings.email, &[]).and_then(text);
                }
            }
            ProfileName::Entra => {
                identity.tenant = string(claims, "tid");
                identity.client = string(claims, "azp").or_else(|| string(claims, "appid"));
                identity.scopes = get("scp").map(words).unwrap_or_default();
                identity.roles = get("roles").map(words).unwrap_or_default();
                identity.groups = match get("groups") {
                    Some(groups) => Groups::Known(words(groups)),
                    None if claim(claims, "_claim_names.groups").is_some()
                        || get("hasgroups") == Some(&Value::Bool(true)) =>
                    {
                        Groups::Unknown
                    }
                    None => Groups::Known(Vec::new()),
                };
                identity.email = identity
                    .email
                    .or_else(|| string(claims, "preferred_username"))
                    .or_else(|| string(claims, "upn"));
                copy(claims, &mut identity, &[("oid", "oid"), ("ver", "version")]);
            }
            ProfileName::Cognito => {
                identity.client = string(claims, "client_id").or_else(|| aud(claims));
                identity.scopes = get("scope").map(words).unwrap_or_default();
                identity.groups =
                    Groups::Known(get("cognito:groups").map(words).unwrap_or_default());
                copy(
                    claims,
                    &mut identity,
                    &[
                        ("token_use", "token_use"),
                        ("username", "username"),
                        ("cognito:username", "username"),
                    ],
                );
            }
            ProfileName::Google => {
                identity.tenant = string(claims, "hd");
                identity.client = string(claims, "azp");
            }
            ProfileName::GcpIap => {
                identity.tenant = string(claims, "hd");
            }
            // The load balancer's `client` (from its signed header) is the OIDC client.
            ProfileName::AwsAlb => identity.client = string(claims, "client"),
            ProfileName::Kubernetes => {
                identity.tenant = string_at(claims, "kubernetes.io.namespace");
                identity.client = string_at(claims, "kubernetes.io.serviceaccount.name");
                let attributes = [
                    ("kubernetes.io.namespace", "namespace"),
                    ("kubernetes.io.serviceaccount.name", "service_account"),
                    ("kubernetes.io.pod.name", "pod"),
                    ("kubernetes.io.node.name", "node"),
                ];
                for (path, name) in attributes {
                    if let Some(value) = string_at(claims, path) {
                        identity.attributes.insert(name.to_owned(), value);
                    }
                }
            }
            ProfileName::GithubActions => {
                copy(
                    claims,
                    &mut identity,
                    &[
                        ("repository", "repository"),
                        ("repository_id", "repository_id"),
                        ("repository_owner", "repository_owner"),
                        ("ref", "ref"),
                        ("ref_type", "ref_type"),
                        ("environment", "environment"),
                        ("workflow", "workflow"),
                        ("job_workflow_ref", "job_workflow_ref"),
                        ("event_name", "event_name"),
                        ("actor", "actor"),
                    ],
                );
                identity.tenant = string(claims, "repository_owner");
            }
            ProfileName::Okta => {
                identity.client = string(claims, "cid");
                identity.scopes = get("scp").map(words).unwrap_or_default();
                identity.groups = Groups::Known(get("groups").map(words).unwrap_or_default());
                identity.email = identity
                    .email
                    .or_else(|| string(claims, "sub").filter(|s| s.contains('@')));
            }
            ProfileName::Auth0 => {
                identity.client = string(claims, "azp");
                let mut scopes = get("scope").map(words).unwrap_or_default();
                for permission in get("permissions").map(words).unwrap_or_default() {
                    if !scopes.contains(&permission) {
                        scopes.push(permission);
                    }
                }
                identity.scopes = scopes;
            }
            ProfileName::Keycloak => {
                identity.client = string(claims, "azp");
                identity.scopes = get("scope").map(words).unwrap_or_default();
                let mut roles = claim(claims, "realm_access.roles")
                    .map(words)
                    .unwrap_or_default();
                if let Some(Value::Object(resources)) = get("resource_access") {
                    for (client, access) in resources {
                        for role in access.get("roles").map(words).unwrap_or_default() {
                            roles.push(format!("{client}:{role}"));
                        }
                    }
                }
                identity.roles = roles;
                identity.groups = Groups::Known(get("groups").map(words).unwrap_or_default());
            }
            ProfileName::CloudflareAccess => {
                // A service token has an empty `sub`; verification took the subject from
                // `common_name`, and the identity says it is a service, not a user.
                let service = claims.get("sub").and_then(Value::as_str) == Some("");
                identity.attributes.insert(
                    "identity_type".to_owned(),
                    if service { "service" } else { "user" }.to_owned(),
                );
                identity.client = string(claims, "common_name");
                identity.groups = Groups::Known(
                    claim(claims, "custom.groups")
                        .map(words)
                        .unwrap_or_default(),
                );
            }
            ProfileName::Spiffe => {
                identity.tenant = identity
                    .subject
                    .strip_prefix("spiffe://")
                    .and_then(|rest| rest.split('/').next())
                    .map(str::to_owned);
            }
        }
        identity
    }
}

/// A claim by dot-separated path (`realm_access.roles`), trying the longest literal key first
/// so keys that contain dots (`kubernetes.io`) resolve too.
pub fn claim<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(path) {
        return Some(value);
    }
    let mut split = path.len();
    while let Some(at) = path.get(..split).and_then(|p| p.rfind('.')) {
        let (head, tail) = (path.get(..at)?, path.get(at + 1..)?);
        if let Some(Value::Object(inner)) = claims.get(head)
            && let Some(found) = claim(inner, tail)
        {
            return Some(found);
        }
        split = at;
    }
    None
}

fn string(claims: &Map<String, Value>, name: &str) -> Option<String> {
    claims.get(name).and_then(text)
}

fn string_at(claims: &Map<String, Value>, path: &str) -> Option<String> {
    claim(claims, path).and_then(text)
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

fn aud(claims: &Map<String, Value>) -> Option<String> {
    match claims.get("aud")? {
        Value::String(aud) => Some(aud.clone()),
        Value::Array(list) => list.first().and_then(text),
        _ => None,
    }
}

/// A space-separated string or an array of strings, as a list (other JSON: nothing).
fn words(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        Value::Array(items) => items.iter().filter_map(text).collect(),
        _ => Vec::new(),
    }
}

fn copy(claims: &Map<String, Value>, identity: &mut Identity, names: &[(&str, &str)]) {
    for (claim_name, attribute) in names {
        if let Some(value) = claims.get(*claim_name) {
            let value = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => continue,
            };
            identity.attributes.insert((*attribute).to_owned(), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn normalize(profile: Profile, claims: Value) -> Identity {
        let claims = claims.as_object().cloned().unwrap();
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or("s")
            .to_owned();
        Identity::from_claims(&Arc::from("idp"), sub, &profile, &claims)
    }

    #[test]
    fn entra_v2_access_tokens() {
        let id = normalize(
            Profile::new(ProfileName::Entra, &ClaimMappings::default()),
            json!({"sub": "pairwise", "tid": "t1", "oid": "o1", "azp": "client-app", "ver": "2.0",
                   "scp": "Orders.Read Orders.Write", "roles": ["Admin"], "groups": ["g1", "g2"],
                   "preferred_username": "alice@contoso.com"}),
        );
        assert_eq!(id.tenant.as_deref(), Some("t1"));
        assert_eq!(id.client.as_deref(), Some("client-app"));
        assert_eq!(id.scopes, ["Orders.Read", "Orders.Write"]);
        assert_eq!(id.roles, ["Admin"]);
        assert_eq!(id.groups, Groups::Known(vec!["g1".into(), "g2".into()]));
        assert_eq!(id.email.as_deref(), Some("alice@contoso.com"));
        assert_eq!(id.attributes["oid"], "o1");
    }

    #[test]
    fn entra_v1_app_tokens_and_group_overage() {
        let id = normalize(
            Profile::new(ProfileName::Entra, &ClaimMappings::default()),
            json!({"sub": "s", "tid": "t1", "appid": "daemon", "roles": ["Orders.ReadAll"],
                   "_claim_names": {"groups": "src1"}, "_claim_sources": {"src1": {}}}),
        );
        assert_eq!(id.client.as_deref(), Some("daemon"));
        assert_eq!(id.groups, Groups::Unknown, "overage is unknown, never none");
        assert!(id.scopes.is_empty());
        let implicit = normalize(
            Profile::new(ProfileName::Entra, &ClaimMappings::default()),
            json!({"sub": "s", "hasgroups": true}),
        );
        assert_eq!(implicit.groups, Groups::Unknown);
        let none = normalize(
            Profile::new(ProfileName::Entra, &ClaimMappings::default()),
            json!({"sub": "s"}),
        );
        assert_eq!(none.groups, Groups::Known(vec![]));
    }

    #[test]
    fn cognito_access_tokens() {
        let id = normalize(
            Profile::new(ProfileName::Cognito, &ClaimMappings::default()),
            json!({"sub": "u1", "client_id": "app", "token_use": "access", "username": "alice",
                   "scope": "orders/read openid", "cognito:groups": ["admins"]}),
        );
        assert_eq!(id.client.as_deref(), Some("app"));
        assert_eq!(id.scopes, ["orders/read", "openid"]);
        assert_eq!(id.groups.known(), ["admins"]);
        assert_eq!(id.attributes["token_use"], "access");
        assert_eq!(id.attributes["username"], "alice");
    }

    #[test]
    fn kubernetes_service_accounts() {
        let id = normalize(
            Profile::new(ProfileName::Kubernetes, &ClaimMappings::default()),
            json!({"sub": "system:serviceaccount:payments:api",
                   "kubernetes.io": {"namespace": "payments", "serviceaccount": {"name": "api", "uid": "u"},
                                     "pod": {"name": "api-7d9", "uid": "p"}}}),
        );
        assert_eq!(id.tenant.as_deref(), Some("payments"));
        assert_eq!(id.client.as_deref(), Some("api"));
        assert_eq!(id.attributes["namespace"], "payments");
        assert_eq!(id.attributes["service_account"], "api");
        assert_eq!(id.attributes["pod"], "api-7d9");
    }

    #[test]
    fn github_actions_workflows() {
        let id = normalize(
            Profile::new(ProfileName::GithubActions, &ClaimMappings::default()),
            json!({"sub": "repo:acme/app:environment:prod", "repository": "acme/app",
                   "repository_id": "42", "repository_owner": "acme", "ref": "refs/heads/main",
                   "environment": "prod", "workflow": "deploy", "run_id": "9"}),
        );
        assert_eq!(id.tenant.as_deref(), Some("acme"));
        assert_eq!(id.attributes["repository"], "acme/app");
        assert_eq!(id.attributes["ref"], "refs/heads/main");
        assert_eq!(id.attributes["environment"], "prod");
        assert!(!id.attributes.contains_key("run_id"));
    }

    #[test]
    fn okta_auth0_keycloak_scopes_and_roles() {
        let okta = normalize(
            Profile::new(ProfileName::Okta, &ClaimMappings::default()),
            json!({"sub": "alice@example.com", "cid": "c1", "scp": ["orders.read"], "groups": ["Everyone"]}),
        );
        assert_eq!(okta.scopes, ["orders.read"]);
        assert_eq!(okta.email.as_deref(), Some("alice@example.com"));
        let auth0 = normalize(
            Profile::new(ProfileName::Auth0, &ClaimMappings::default()),
            json!({"sub": "auth0|1", "azp": "spa", "scope": "openid read:orders",
                   "permissions": ["read:orders", "write:orders"]}),
        );
        assert_eq!(auth0.scopes, ["openid", "read:orders", "write:orders"]);
        let keycloak = normalize(
            Profile::new(ProfileName::Keycloak, &ClaimMappings::default()),
            json!({"sub": "k", "azp": "web", "realm_access": {"roles": ["user"]},
                   "resource_access": {"orders": {"roles": ["reader"]}}, "scope": "profile"}),
        );
        assert_eq!(keycloak.roles, ["user", "orders:reader"]);
        assert_eq!(keycloak.client.as_deref(), Some("web"));
    }

    #[test]
    fn spiffe_google_and_generic() {
        let spiffe = normalize(
            Profile::new(ProfileName::Spiffe, &ClaimMappings::default()),
            json!({"sub": "spiffe://prod.example/ns/a/sa/b"}),
        );
        assert_eq!(spiffe.tenant.as_deref(), Some("prod.example"));
        let google = normalize(
            Profile::new(ProfileName::Google, &ClaimMappings::default()),
            json!({"sub": "1", "email": "a@corp.example", "hd": "corp.example", "azp": "web"}),
        );
        assert_eq!(google.tenant.as_deref(), Some("corp.example"));
        assert_eq!(google.email.as_deref(), Some("a@corp.example"));
        let generic = normalize(
            Profile::new(
                ProfileName::Generic,
                &ClaimMappings {
                    tenant: Some("org.id".into()),
                    client: Some("app".into()),
                    scopes: Some("perms".into()),
                    roles: Some("auth.roles".into()),
                    groups: None,
                    email: Some("mail".into()),
                },
            ),
            json!({"sub": "s", "org": {"id": "o1"}, "app": "a", "perms": "x y",
                   "auth": {"roles": ["r"]}, "mail": "m@example.com", "email": "other@example.com"}),
        );
        assert_eq!(generic.tenant.as_deref(), Some("o1"));
        assert_eq!(generic.scopes, ["x", "y"]);
        assert_eq!(generic.roles, ["r"]);
        assert_eq!(generic.email.as_deref(), Some("m@example.com"));
        let defaults = normalize(
            Profile::new(ProfileName::Generic, &ClaimMappings::default()),
            json!({"sub": "s", "scope": "a b", "roles": ["r"], "client_id": "c", "groups": "g"}),
        );
        assert_eq!(defaults.scopes, ["a", "b"]);
        assert_eq!(defaults.roles, ["r"]);
        assert_eq!(defaults.client.as_deref(), Some("c"));
        assert_eq!(defaults.groups.known(), ["g"]);
    }

    #[test]
    fn claim_paths_resolve_dotted_keys_and_nesting() {
        let claims = json!({"kubernetes.io": {"namespace": "n"}, "a": {"b": {"c": 1}}, "x.y": 2});
        let claims = claims.as_object().unwrap();
        assert_eq!(claim(claims, "kubernetes.io.namespace"), Some(&json!("n")));
        assert_eq!(claim(claims, "a.b.c"), Some(&json!(1)));
        assert_eq!(claim(claims, "x.y"), Some(&json!(2)));
        assert_eq!(claim(claims, "a.b.d"), None);
        assert_eq!(claim(claims, ""), None);
    }
}
