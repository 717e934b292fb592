//! Decision log: one structured line per denied check, and a configured sample of allowed ones,
//! under the tracing target `fedauthz::decision`. The fields are the ones an operator searches
//! by (request id, decision, reason, issuer, route, status, the calling proxy's mTLS identity,
//! the `jti` of a token minted for the upstream) and never a token or any part of one: the
//! subject appears only when configured, and only once the token that names it verified.
//!
//! Depends on [`crate::authz`] (the decision), [`crate::caller`], [`crate::config`] and
//! [`crate::reason`].

use std::fmt::Write as _;

use tracing::info;

use crate::authz::Decision;
use crate::caller::CallerIdentity;
use crate::config::{DecisionLogConfig, SubjectLogging};

/// The tracing target of decision lines (`RUST_LOG=fedauthz::decision=off` silences them).
pub const TARGET: &str = "fedauthz::decision";

/// Decision logging, compiled from [`DecisionLogConfig`].
#[derive(Debug, Clone)]
pub struct DecisionLog {
    subject: SubjectLogging,
    sample_allowed: f64,
}

/// One check, as the decision log sees it.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// The listener the check arrived on.
    pub transport: crate::check::Transport,
    /// Envoy's `x-request-id`, when the request carried one.
    pub request_id: Option<&'a str>,
    /// What was decided.
    pub decision: &'a Decision,
    /// The route that decided.
    pub route: Option<&'a str>,
    /// HTTP status of a denial.
    pub status: Option<u16>,
    /// The calling proxy's verified client certificate (mTLS), if it presented one.
    pub caller: Option<&'a CallerIdentity>,
    /// The `jti` of the internal token minted for the upstream, if one was.
    pub mint_jti: Option<&'a str>,
}

impl DecisionLog {
    /// Decision logging as `config` asks.
    pub fn new(config: &DecisionLogConfig) -> Self {
        Self {
            subject: config.subject,
            sample_allowed: config.sample_allowed,
        }
    }

    /// Writes the line for `entry`: always for a denial, for an allow when it falls in the
    /// sample.
    pub fn record(&self, entry: &Entry<'_>) {
        let request_id = entry.request_id.unwrap_or("-");
        let route = entry.route.unwrap_or("-");
        let caller = entry.caller.and_then(CallerIdentity::primary);
        match entry.decision {
            Decision::Deny(rejection) => {
                let subject =
                    self.subject(rejection.issuer.as_deref(), rejection.subject.as_deref());
                info!(
                    target: TARGET,
                    decision = "deny",
                    transport = entry.transport.name(),
                    request_id,
                    reason = rejection.reason.code(),
                    status = entry.status.unwrap_or(0),
                    issuer = rejection.issuer.as_deref().unwrap_or("-"),
                    route,
                    subject = subject.as_deref(),
                    caller,
                    detail = %rejection.detail,
                    "check denied"
                );
            }
            Decision::Allow(token) if self.sampled() => {
                let issuer = token.as_ref().map(|t| &*t.issuer.id);
                let encrypted = token.as_ref().is_some_and(|t| t.encryption.is_some());
                let api_key = token
                    .as_ref()
                    .and_then(|t| t.api_key())
                    .map(|grant| &*grant.id_hash);
                let subject = self.subject(issuer, token.as_ref().map(|t| t.subject()));
                info!(
                    target: TARGET,
                    decision = "allow",
                    transport = entry.transport.name(),
                    request_id,
                    reason = if token.is_some() { "token_valid" } else { "anonymous" },
                    issuer = issuer.unwrap_or("-"),
                    route,
                    subject = subject.as_deref(),
                    caller,
                    encrypted,
                    api_key,
                    minted = entry.mint_jti.is_some(),
                    mint_jti = entry.mint_jti,
                    "check allowed"
                );
            }
            Decision::Allow(_) => {}
        }
    }

    fn sampled(&self) -> bool {
        self.sample_allowed >= 1.0
            || (self.sample_allowed > 0.0 && fastrand::f64() < self.sample_allowed)
    }

    /// The subject as configured to appear; `None` when omitted or unknown.
    fn subject(&self, issuer: Option<&str>, subject: Option<&str>) -> Option<String> {
        let subject = subject?;
        match self.subject {
            SubjectLogging::Omit => None,
            SubjectLogging::Plain => Some(subject.to_owned()),
            SubjectLogging::Hashed => Some(hash_subject(issuer.unwrap_or(""), subject)),
        }
    }
}

/// 16 hex digits of SHA-256 over a domain tag, the issuer id and the subject.
pub fn hash_subject(issuer: &str, subject: &str) -> String {
    let mut hasher = openssl::sha::Sha256::new();
    hasher.update(b"fedauthz decision-log subject\0");
    hasher.update(issuer.as_bytes());
    hasher.update(b"\0");
    hasher.update(subject.as_bytes());
    let digest = hasher.finish();
    digest
        .iter()
        .take(8)
        .fold(String::with_capacity(16), |mut hex, byte| {
            // Writing to a String cannot fail.
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_subjects_are_stable_short_and_issuer_scoped() {
        let a = hash_subject("entra", "alice");
        assert_eq!(a.len(), 16);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(a, hash_subject("entra", "alice"));
        assert_ne!(a, hash_subject("okta", "alice"));
        assert_ne!(a, hash_subject("entra", "bob"));
        assert!(!a.contains("alice"));
    }

    #[test]
    fn subject_appears_only_as_configured() {
        let log = |subject| {
            DecisionLog::new(&DecisionLogConfig {
                subject,
                sample_allowed: 0.0,
            })
        };
        assert_eq!(
            log(SubjectLogging::Omit).subject(Some("i"), Some("alice")),
            None
        );
        assert_eq!(
            log(SubjectLogging::Plain).subject(Some("i"), Some("alice")),
            Some("alice".into())
        );
        assert_eq!(
            log(SubjectLogging::Hashed).subject(Some("i"), Some("alice")),
            Some(hash_subject("i", "alice"))
        );
        assert_eq!(log(SubjectLogging::Plain).subject(Some("i"), None), None);
    }

    #[test]
    fn sampling_bounds() {
        let log = |sample_allowed| {
            DecisionLog::new(&DecisionLogConfig {
                subject: SubjectLogging::Omit,
                sample_allowed,
            })
        };
        assert!((0..100).all(|_| log(1.0).sampled()));
        assert!((0..100).all(|_| !log(0.0).sampled()));
    }
}
