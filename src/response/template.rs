//! Header value templates: literal text with `{field}` placeholders filled from the normalized
//! identity — `subject`, `issuer`, `tenant`, `client`, `email`, `scopes`, `roles`, `groups`
//! (lists joined with spaces), `attributes.NAME`, or `claims.PATH` (a verified claim by path).

use serde_json::Value;

use crate::identity::{Identity, claim};
use crate::verify::VerifiedToken;

/// A compiled template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(Field),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    Subject,
    Issuer,
    Tenant,
    Client,
    Email,
    Scopes,
    Roles,
    Groups,
    Encryption,
    Attribute(String),
    Claim(String),
}

impl Template {
    /// The `claims.PATH` paths the template reads.
    pub fn claim_paths(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|part| match part {
            Part::Field(Field::Claim(path)) => Some(path.as_str()),
            _ => None,
        })
    }

    /// Parses `text`; the error says which placeholder is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let (literal, after) = rest.split_at(open);
            if literal.contains('}') {
                return Err("has a '}' without '{'".into());
            }
            if !literal.is_empty() {
                parts.push(Part::Text(literal.to_owned()));
            }
            let after = after.get(1..).unwrap_or_default();
            let close = after.find('}').ok_or("has a '{' without '}'")?;
            let name = after.get(..close).unwrap_or_default();
            parts.push(Part::Field(Field::parse(name)?));
            rest = after.get(close + 1..).unwrap_or_default();
        }
        if rest.contains('}') {
            return Err("has a '}' without '{'".into());
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    /// The value for `token`, or `None` when a placeholder has no value or the result is not a
    /// safe header value (control characters, non-ASCII): then the header is left out.
    pub fn render(&self, token: &VerifiedToken) -> Option<String> {
        let identity: &Identity = &token.identity;
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Field(field) => out.push_str(&field.value(identity, token)?),
            }
        }
        let safe = !out.is_empty() && out.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b));
        safe.then_some(out)
    }
}

impl Field {
    fn parse(name: &str) -> Result<Self, String> {
        Ok(match name {
            "subject" => Self::Subject,
            "issuer" => Self::Issuer,
            "tenant" => Self::Tenant,
            "client" => Self::Client,
            "email" => Self::Email,
            "scopes" => Self::Scopes,
            "roles" => Self::Roles,
            "groups" => Self::Groups,
            "encryption" => Self::Encryption,
            other => match (
                other.strip_prefix("attributes."),
                other.strip_prefix("claims."),
            ) {
                (Some(attribute), _) if !attribute.is_empty() => {
                    Self::Attribute(attribute.to_owned())
                }
                (_, Some(path)) if !path.is_empty() => Self::Claim(path.to_owned()),
                _ => {
                    return Err(format!(
                        "has an unknown placeholder {{{other}}} (expected subject, issuer, tenant, \
                         client, email, scopes, roles, groups, encryption, attributes.NAME or claims.PATH)"
                    ));
                }
            },
        })
    }

    fn value(&self, identity: &Identity, token: &VerifiedToken) -> Option<String> {
        let joined = |list: &[String]| (!list.is_empty()).then(|| list.join(" "));
        match self {
            Self::Subject => Some(identity.subject.clone()),
            Self::Issuer => Some(identity.issuer.to_string()),
            Self::Tenant => identity.tenant.clone(),
            Self::Client => identity.client.clone(),
            Self::Email => identity.email.clone(),
            Self::Scopes => joined(&identity.scopes),
            Self::Roles => joined(&identity.roles),
            Self::Groups => joined(identity.groups.known()),
            Self::Encryption => token
                .encryption
                .as_ref()
                .map(crate::verify::jwe::Encryption::label),
            Self::Attribute(name) => identity.attributes.get(name).cloned(),
            Self::Claim(path) => match claim(&token.claims, path)? {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                Value::Bool(b) => Some(b.to_string()),
                Value::Array(items) => {
                    let words: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
                    (!words.is_empty()).then(|| words.join(" "))
                }
                _ => None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_or_say_what_is_wrong() {
        assert!(Template::parse("{email}").is_ok());
        assert!(Template::parse("tenant={tenant}; app={client}").is_ok());
        assert!(Template::parse("{claims.realm_access.roles}").is_ok());
        assert!(Template::parse("plain").is_ok());
        assert!(
            Template::parse("{nope}")
                .unwrap_err()
                .contains("unknown placeholder {nope}")
        );
        assert!(
            Template::parse("{email")
                .unwrap_err()
                .contains("without '}'")
        );
        assert!(
            Template::parse("email}")
                .unwrap_err()
                .contains("without '{'")
        );
        assert!(Template::parse("{attributes.}").is_err());
    }
}
