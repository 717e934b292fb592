//! Requirements on a verified token, compiled from configuration: all listed conditions must
//! hold; lists are any-of, except scopes (all must be granted); `any_of` / `all_of` nest.

use serde_json::Value;

use super::pattern::Glob;
use crate::config::{ClaimCondition, Requirement as RequirementConfig};
use crate::identity::claim;
use crate::verify::VerifiedToken;

/// A compiled requirement.
#[derive(Debug, Clone, Default)]
pub struct Requirement {
    issuers: Vec<String>,
    audiences: Vec<String>,
    scopes: Vec<String>,
    roles: Vec<String>,
    groups: Vec<String>,
    tenants: Vec<String>,
    subjects: Vec<Glob>,
    claims: Vec<Condition>,
    any_of: Vec<Requirement>,
    all_of: Vec<Requirement>,
}

/// Why a requirement failed: which condition, and the scopes that would have satisfied it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmet {
    /// The condition that failed (for logs).
    pub condition: String,
    /// Scopes the request needs, when a scope condition failed.
    pub scopes: Vec<String>,
}

impl Unmet {
    fn new(condition: impl Into<String>) -> Self {
        Self {
            condition: condition.into(),
            scopes: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
struct Condition {
    issuer: Option<String>,
    path: String,
    test: Test,
}

#[derive(Debug, Clone)]
enum Test {
    OneOf(Vec<String>),
    Prefix(String),
    Glob(Glob),
    Present(bool),
}

impl Requirement {
    /// Compiles `config` (already validated).
    pub fn compile(config: &RequirementConfig) -> Self {
        Self {
            issuers: config.issuers.clone(),
            audiences: config.audiences.clone(),
            scopes: config.scopes.clone(),
            roles: config.roles.clone(),
            groups: config.groups.clone(),
            tenants: config.tenants.clone(),
            subjects: config.subjects.iter().map(|s| Glob::new(s)).collect(),
            claims: config.claims.iter().map(Condition::compile).collect(),
            any_of: config.any_of.iter().map(Self::compile).collect(),
            all_of: config.all_of.iter().map(Self::compile).collect(),
        }
    }

    /// The claim paths the requirement (and its nested ones) reads.
    pub fn claim_paths<'a>(&'a self, into: &mut Vec<&'a str>) {
        into.extend(self.claims.iter().map(|c| c.path.as_str()));
        if !self.audiences.is_empty() {
            into.push("aud");
        }
        for nested in self.any_of.iter().chain(&self.all_of) {
            nested.claim_paths(into);
        }
    }

    /// Whether `token` satisfies the requirement.
    pub fn check(&self, token: &VerifiedToken) -> Result<(), Unmet> {
        let identity = &token.identity;
        if !self.issuers.is_empty() && !self.issuers.iter().any(|i| **i == *identity.issuer) {
            return Err(Unmet::new(format!(
                "issuer {} is not one of {:?}",
                identity.issuer, self.issuers
            )));
        }
        if !self.audiences.is_empty() && !self.audiences.iter().any(|a| has_audience(token, a)) {
            return Err(Unmet::new(format!("no audience of {:?}", self.audiences)));
        }
        let missing: Vec<&String> = self
            .scopes
            .iter()
            .filter(|scope| !identity.scopes.contains(scope))
            .collect();
        if !missing.is_empty() {
            return Err(Unmet {
                condition: format!("scopes {missing:?} not granted"),
                scopes: self.scopes.clone(),
            });
        }
        if !self.roles.is_empty() && !self.roles.iter().any(|r| identity.roles.contains(r)) {
            return Err(Unmet::new(format!("none of the roles {:?}", self.roles)));
        }
        if !self.groups.is_empty()
            && !self
                .groups
                .iter()
                .any(|g| identity.groups.known().contains(g))
        {
            return Err(Unmet::new(format!(
                "none of the groups {:?} (or groups unknown)",
                self.groups
            )));
        }
        if !self.tenants.is_empty()
            && !identity
                .tenant
                .as_ref()
                .is_some_and(|t| self.tenants.contains(t))
        {
            return Err(Unmet::new(format!(
                "tenant is not one of {:?}",
                self.tenants
            )));
        }
        if !self.subjects.is_empty() && !self.subjects.iter().any(|g| g.matches(&identity.subject))
        {
            return Err(Unmet::new("subject matches no pattern"));
        }
        for condition in &self.claims {
            condition.check(token)?;
        }
        for requirement in &self.all_of {
            requirement.check(token)?;
        }
        if !self.any_of.is_empty() {
            let mut failures = Vec::new();
            for requirement in &self.any_of {
                match requirement.check(token) {
                    Ok(()) => return Ok(()),
                    Err(unmet) => failures.push(unmet),
                }
            }
            let mut scopes: Vec<String> = Vec::new();
            for failure in &failures {
                for scope in &failure.scopes {
                    if !scopes.contains(scope) {
                        scopes.push(scope.clone());
                    }
                }
            }
            let conditions: Vec<&str> = failures.iter().map(|f| f.condition.as_str()).collect();
            return Err(Unmet {
                condition: format!("none of any_of holds ({})", conditions.join("; ")),
                scopes,
            });
        }
        Ok(())
    }
}

fn has_audience(token: &VerifiedToken, audience: &str) -> bool {
    match token.claims.get("aud") {
        Some(Value::String(aud)) => aud == audience,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(audience)),
        _ => false,
    }
}

impl Condition {
    fn compile(config: &ClaimCondition) -> Self {
        let test = if let Some(present) = config.present {
            Test::Present(present)
        } else if let Some(prefix) = &config.prefix {
            Test::Prefix(prefix.clone())
        } else if let Some(glob) = &config.glob {
            Test::Glob(Glob::new(glob))
        } else if let Some(value) = &config.equals {
            Test::OneOf(vec![value.clone()])
        } else {
            Test::OneOf(config.one_of.clone())
        };
        Self {
            issuer: config.issuer.clone(),
            path: config.path.clone(),
            test,
        }
    }

    fn check(&self, token: &VerifiedToken) -> Result<(), Unmet> {
        if let Some(issuer) = &self.issuer
            && **issuer != *token.issuer.id
        {
            return Err(Unmet::new(format!(
                "claim {} is only read from issuer {issuer}",
                self.path
            )));
        }
        let value = claim(&token.claims, &self.path);
        let texts: Vec<String> = match value {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items.iter().filter_map(scalar).collect(),
            Some(other) => scalar(other).into_iter().collect(),
        };
        let ok = match &self.test {
            Test::Present(present) => value.is_some() == *present,
            Test::OneOf(values) => texts.iter().any(|t| values.contains(t)),
            Test::Prefix(prefix) => texts.iter().any(|t| t.starts_with(prefix.as_str())),
            Test::Glob(glob) => texts.iter().any(|t| glob.matches(t)),
        };
        if ok {
            Ok(())
        } else {
            Err(Unmet::new(format!(
                "claim {} fails its condition",
                self.path
            )))
        }
    }
}

/// Strings, numbers and booleans compare as text.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}
