//! Authorization: turn the outcome of authentication into a decision, deny by default.
//!
//! For now the policy is "a token verified by any configured issuer is allowed; a request
//! without a credential gets the configured default decision; a bad credential is always
//! denied". Route rules and requirements slot in here (issue 5). Depends on [`crate::verify`]
//! (the verified token), [`crate::config`] and [`crate::reason`].

use crate::config::DefaultDecision;
use crate::reason::{Reason, Rejection};
use crate::verify::VerifiedToken;

/// What authentication established about a request.
#[derive(Debug)]
pub enum Authentication {
    /// No credential in any configured location.
    Missing,
    /// A credential was present but is not acceptable.
    Failed(Rejection),
    /// A credential was present and verified.
    Verified(VerifiedToken),
}

/// The decision for one request.
#[derive(Debug)]
pub enum Decision {
    /// Let the request through; `None` is an anonymous request.
    Allow(Option<VerifiedToken>),
    /// Stop it.
    Deny(Rejection),
}

/// Decides on authentication outcomes.
#[derive(Debug, Clone)]
pub struct Authorizer {
    without_credential: DefaultDecision,
}

impl Authorizer {
    /// An authorizer that applies `without_credential` to requests carrying no credential.
    pub fn new(without_credential: DefaultDecision) -> Self {
        Self { without_credential }
    }

    /// The decision for `authentication`.
    pub fn decide(&self, authentication: Authentication) -> Decision {
        match authentication {
            Authentication::Verified(token) => Decision::Allow(Some(token)),
            Authentication::Failed(rejection) => Decision::Deny(rejection),
            Authentication::Missing => match self.without_credential {
                DefaultDecision::Allow => Decision::Allow(None),
                DefaultDecision::Deny => Decision::Deny(Rejection::new(
                    Reason::TokenMissing,
                    "no credential in any configured location",
                )),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_credentials_follow_the_default_and_failures_always_deny() {
        let deny = Authorizer::new(DefaultDecision::Deny);
        assert!(matches!(
            deny.decide(Authentication::Missing),
            Decision::Deny(r) if r.reason == Reason::TokenMissing
        ));
        let allow = Authorizer::new(DefaultDecision::Allow);
        assert!(matches!(allow.decide(Authentication::Missing), Decision::Allow(None)));
        let failed = Authentication::Failed(Rejection::new(Reason::TokenExpired, "x"));
        assert!(matches!(
            allow.decide(failed),
            Decision::Deny(r) if r.reason == Reason::TokenExpired
        ));
    }
}
