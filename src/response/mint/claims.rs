//! The claims of a minted token: the RFC 9068 access-token claims, the normalized identity
//! under one namespace claim, and the configured extra claims — which can never replace a
//! registered claim, because those are written last.
//!
//! `sub` is `<issuer id>:<subject>`. Issuer ids are `[a-z0-9_-]`, so the first `:` always
//! separates the two, and the same subject text from two issuers gives two different `sub`s.

use serde_json::{Map, Value};

use crate::config::{MintConfig, REGISTERED_CLAIMS};
use crate::identity::Groups;
use crate::response::Template;
use crate::verify::VerifiedToken;

/// What every minted token of one configuration says, before the token it is minted for.
#[derive(Debug, Clone)]
pub struct ClaimPlan {
    issuer: String,
    namespace: String,
    templates: Vec<(String, Template)>,
}

/// The `sub` of a token minted for `subject` of issuer `issuer_id`.
pub fn subject(issuer_id: &str, subject: &str) -> String {
    format!("{issuer_id}:{subject}")
}

impl ClaimPlan {
    /// The plan `mint` describes (already validated).
    pub fn new(mint: &MintConfig) -> Self {
        Self {
            issuer: mint.issuer.clone(),
            namespace: mint.namespace.clone(),
            templates: mint
                .claims
                .iter()
                // Validation refuses registered names already; this keeps them out whatever
                // a configuration says.
                .filter(|(name, _)| {
                    !REGISTERED_CLAIMS.contains(&name.as_str()) && **name != mint.namespace
                })
                .filter_map(|(name, text)| Some((name.clone(), Template::parse(text).ok()?)))
                .collect(),
        }
    }

    /// The verified claims the extra claim templates read (`claims.PATH`), plus `iss`.
    pub fn claim_paths(&self) -> impl Iterator<Item = &str> {
        std::iter::once("iss").chain(
            self.templates
                .iter()
                .flat_map(|(_, template)| template.claim_paths()),
        )
    }

    /// The `iss` of minted tokens.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Every claim but the times and `jti`: what decides whether a cached token fits.
    pub fn body(&self, token: &VerifiedToken, audience: &str) -> Map<String, Value> {
        let identity = &token.identity;
        let mut claims = Map::new();
        for (name, template) in &self.templates {
            if let Some(value) = template.render(token) {
                claims.insert(name.clone(), Value::String(value));
            }
        }
        let mut source = Map::new();
        source.insert("issuer".into(), Value::from(&*token.issuer.id));
        let original_iss = token
            .claims
            .get("iss")
            .and_then(Value::as_str)
            .unwrap_or(&token.issuer.issuer);
        source.insert("iss".into(), Value::from(original_iss));
        source.insert("subject".into(), Value::from(identity.subject.as_str()));
        let optional = [
            ("tenant", &identity.tenant),
            ("client", &identity.client),
            ("email", &identity.email),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                source.insert(name.into(), Value::from(value.as_str()));
            }
        }
        source.insert("roles".into(), Value::from(identity.roles.clone()));
        match &identity.groups {
            Groups::Known(groups) => {
                source.insert("groups".into(), Value::from(groups.clone()));
            }
            // Unknown is not none: say so rather than list no groups.
            Groups::Unknown => {
                source.insert("groups_unknown".into(), Value::Bool(true));
            }
        }
        if !identity.attributes.is_empty() {
            let attributes: Map<String, Value> = identity
                .attributes
                .iter()
                .map(|(name, value)| (name.clone(), Value::from(value.as_str())))
                .collect();
            source.insert("attributes".into(), Value::Object(attributes));
        }
        claims.insert(self.namespace.clone(), Value::Object(source));

        // Registered claims last: nothing configured above can replace them.
        let sub = subject(&token.issuer.id, &identity.subject);
        claims.insert("iss".into(), Value::from(self.issuer.as_str()));
        claims.insert(
            "client_id".into(),
            Value::from(identity.client.clone().unwrap_or_else(|| sub.clone())),
        );
        claims.insert("sub".into(), Value::from(sub));
        claims.insert("aud".into(), Value::from(audience));
        if identity.scopes.is_empty() {
            claims.remove("scope");
        } else {
            claims.insert("scope".into(), Value::from(identity.scopes.join(" ")));
        }
        claims
    }
}

/// Completes `body` with the times and the token id.
pub fn stamp(body: &mut Map<String, Value>, issued_at: i64, expires_at: i64, jti: &str) {
    body.insert("iat".into(), Value::from(issued_at));
    body.insert("nbf".into(), Value::from(issued_at));
    body.insert("exp".into(), Value::from(expires_at));
    body.insert("jti".into(), Value::from(jti));
}
