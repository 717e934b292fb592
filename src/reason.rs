//! The vocabulary of decisions: stable machine reason codes and the rejection type that carries
//! one with a detail for logs.
//!
//! Reason codes are part of the public contract (dynamic metadata, logs, metrics): add new ones,
//! never rename. The `description` is what a client may see; the `detail` of a [`Rejection`]
//! is for operators only and never leaves the process. Depends on nothing.

use std::fmt;
use std::sync::Arc;

/// Why a request was denied, as a stable machine-readable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// No credential in any configured location.
    TokenMissing,
    /// More than one credential (repeated header, several locations, comma-joined values).
    CredentialAmbiguous,
    /// Longer than `max_token_bytes`.
    TokenTooLarge,
    /// Not a well-formed compact JWS / JWT.
    TokenMalformed,
    /// A JWE (5 segments) and no `decryption` is configured.
    TokenEncrypted,
    /// An encrypted token fedauthz will not open: an algorithm outside the allow-list, `zip`,
    /// `crit`, not a nested JWT (`cty: JWT` around a signed token), nested encryption, a key
    /// whose algorithm differs, or an issuer without `accept_encrypted`.
    EncryptionNotAllowed,
    /// An encrypted token that did not decrypt: unknown `kid`, framing, key unwrap, tag or
    /// padding; one reason for all, so no failure can be told apart from another.
    DecryptionFailed,
    /// The header carries `jku`, `x5u`, `jwk`, `x5c`, `b64` or a nested `cty`.
    HeaderNotAllowed,
    /// The header has `crit`; no extension is supported.
    CritUnsupported,
    /// No configured issuer has this `iss` (or `iss` is missing).
    IssuerUnknown,
    /// The token arrived in a location its issuer does not accept.
    TokenLocationNotAllowed,
    /// The issuer's keys have not loaded (yet).
    KeysUnavailable,
    /// No key of the issuer matches the token's `kid`.
    KeyUnknown,
    /// The token's `alg` is not one the selected key is bound to.
    AlgorithmNotAllowed,
    /// The signature does not verify.
    SignatureInvalid,
    /// `exp` has passed (beyond the clock skew).
    TokenExpired,
    /// `nbf` is in the future (beyond the clock skew).
    TokenNotYetValid,
    /// `iat` is in the future (beyond the clock skew).
    TokenIssuedInFuture,
    /// The token lives longer than the issuer's `max_lifetime`.
    TokenLifetimeExceeded,
    /// No accepted audience in the audience claim.
    AudienceMismatch,
    /// `typ` is not in the issuer's allowlist.
    TokenTypeNotAllowed,
    /// A required claim (`exp`, `sub`, …) is absent.
    ClaimMissing,
    /// A claim has the wrong JSON type or an out-of-range value.
    ClaimInvalid,
    /// A required claim does not have an accepted value.
    ClaimMismatch,
    /// Routes are configured and none covers the request (and `default_decision` is deny).
    NoRouteMatched,
    /// The token is valid but does not meet the matched route's requirements.
    RequirementNotMet,
    /// Access was granted but the internal token for the upstream could not be minted
    /// (signer or HSM failure): fail closed.
    MintFailed,
    /// The HTTP authorization request came from an address outside
    /// `server.http.trusted_proxies` without a verified client certificate: what it says
    /// about the original request is not believed.
    ProxyUntrusted,
    /// A trusted proxy's HTTP authorization request lacks, or garbles, a header its
    /// convention describes the original request with (`X-Original-URI`, `X-Forwarded-Method`,
    /// …): a proxy configuration error.
    ProxyRequestInvalid,
    /// An API key no key set holds: no set's prefix, no entry with its id, a malformed key, or
    /// a digest that does not match (one reason for all, so a guess learns nothing).
    ApiKeyUnknown,
    /// An API key that matched but is marked revoked.
    ApiKeyRevoked,
    /// An API key that matched but whose `expires` has passed.
    ApiKeyExpired,
    /// An API key that matched but whose `not_before` is still ahead.
    ApiKeyNotYetValid,
}

impl Reason {
    /// Every reason, in a stable order.
    pub const ALL: [Self; 33] = [
        Self::TokenMissing,
        Self::CredentialAmbiguous,
        Self::TokenTooLarge,
        Self::TokenMalformed,
        Self::TokenEncrypted,
        Self::EncryptionNotAllowed,
        Self::DecryptionFailed,
        Self::HeaderNotAllowed,
        Self::CritUnsupported,
        Self::IssuerUnknown,
        Self::TokenLocationNotAllowed,
        Self::KeysUnavailable,
        Self::KeyUnknown,
        Self::AlgorithmNotAllowed,
        Self::SignatureInvalid,
        Self::TokenExpired,
        Self::TokenNotYetValid,
        Self::TokenIssuedInFuture,
        Self::TokenLifetimeExceeded,
        Self::AudienceMismatch,
        Self::TokenTypeNotAllowed,
        Self::ClaimMissing,
        Self::ClaimInvalid,
        Self::ClaimMismatch,
        Self::NoRouteMatched,
        Self::RequirementNotMet,
        Self::MintFailed,
        Self::ProxyUntrusted,
        Self::ProxyRequestInvalid,
        Self::ApiKeyUnknown,
        Self::ApiKeyRevoked,
        Self::ApiKeyExpired,
        Self::ApiKeyNotYetValid,
    ];

    /// The stable code, e.g. `token_expired`.
    pub const fn code(self) -> &'static str {
        match self {
            Self::TokenMissing => "token_missing",
            Self::CredentialAmbiguous => "credential_ambiguous",
            Self::TokenTooLarge => "token_too_large",
            Self::TokenMalformed => "token_malformed",
            Self::TokenEncrypted => "token_encrypted",
            Self::EncryptionNotAllowed => "encryption_not_allowed",
            Self::DecryptionFailed => "decryption_failed",
            Self::HeaderNotAllowed => "header_not_allowed",
            Self::CritUnsupported => "crit_unsupported",
            Self::IssuerUnknown => "issuer_unknown",
            Self::TokenLocationNotAllowed => "token_location_not_allowed",
            Self::KeysUnavailable => "keys_unavailable",
            Self::KeyUnknown => "key_unknown",
            Self::AlgorithmNotAllowed => "algorithm_not_allowed",
            Self::SignatureInvalid => "signature_invalid",
            Self::TokenExpired => "token_expired",
            Self::TokenNotYetValid => "token_not_yet_valid",
            Self::TokenIssuedInFuture => "token_issued_in_future",
            Self::TokenLifetimeExceeded => "token_lifetime_exceeded",
            Self::AudienceMismatch => "audience_mismatch",
            Self::TokenTypeNotAllowed => "token_type_not_allowed",
            Self::ClaimMissing => "claim_missing",
            Self::ClaimInvalid => "claim_invalid",
            Self::ClaimMismatch => "claim_mismatch",
            Self::NoRouteMatched => "no_route_matched",
            Self::RequirementNotMet => "requirement_not_met",
            Self::MintFailed => "mint_failed",
            Self::ProxyUntrusted => "proxy_untrusted",
            Self::ProxyRequestInvalid => "proxy_request_invalid",
            Self::ApiKeyUnknown => "api_key_unknown",
            Self::ApiKeyRevoked => "api_key_revoked",
            Self::ApiKeyExpired => "api_key_expired",
            Self::ApiKeyNotYetValid => "api_key_not_yet_valid",
        }
    }

    /// A short client-facing description (safe for `error_description`: no quotes or
    /// backslashes, and it names no key or claim value).
    pub const fn description(self) -> &'static str {
        match self {
            Self::TokenMissing => "authentication required",
            Self::CredentialAmbiguous => "more than one credential was sent",
            Self::TokenTooLarge => "the token is too large",
            Self::TokenMalformed => "the token is not a well-formed signed JWT",
            Self::TokenEncrypted => "encrypted tokens are not accepted",
            Self::EncryptionNotAllowed => "the token encryption is not accepted",
            Self::DecryptionFailed => "the token could not be decrypted",
            Self::HeaderNotAllowed => "the token header carries a parameter that is not accepted",
            Self::CritUnsupported => "the token requires an unsupported extension",
            Self::IssuerUnknown => "the token issuer is not trusted",
            Self::TokenLocationNotAllowed => {
                "the token was sent where tokens of its issuer are not accepted"
            }
            Self::KeysUnavailable => "the token issuer keys are not available yet",
            Self::KeyUnknown => "the token signing key is not known",
            Self::AlgorithmNotAllowed => "the token algorithm is not allowed",
            Self::SignatureInvalid => "the token signature is invalid",
            Self::TokenExpired => "the token has expired",
            Self::TokenNotYetValid => "the token is not valid yet",
            Self::TokenIssuedInFuture => "the token issue time is in the future",
            Self::TokenLifetimeExceeded => "the token lifetime is longer than allowed",
            Self::AudienceMismatch => "the token audience is not accepted",
            Self::TokenTypeNotAllowed => "the token type is not accepted",
            Self::ClaimMissing => "the token lacks a required claim",
            Self::ClaimInvalid => "the token has a claim with an invalid value",
            Self::ClaimMismatch => "the token does not carry a required claim value",
            Self::NoRouteMatched => "no access rule covers this request",
            Self::RequirementNotMet => "the token does not grant access to this resource",
            Self::MintFailed => "the service is temporarily unable to authorize the request",
            Self::ProxyUntrusted => "the authorization request did not come from a trusted proxy",
            Self::ProxyRequestInvalid => {
                "the proxy did not describe the original request as configured"
            }
            Self::ApiKeyUnknown => "the API key is not valid",
            Self::ApiKeyRevoked => "the API key has been revoked",
            Self::ApiKeyExpired => "the API key has expired",
            Self::ApiKeyNotYetValid => "the API key is not valid yet",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A denial: its reason code plus an operator-facing detail (never sent to the client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The machine reason.
    pub reason: Reason,
    /// What exactly was wrong, for logs. Never contains the token.
    pub detail: String,
    /// The id of the issuer the token was attributed to, once known.
    pub issuer: Option<Arc<str>>,
    /// Scopes the request needs (RFC 6750 `scope` of an `insufficient_scope` challenge).
    pub scope: Option<String>,
    /// The verified subject, when the token was valid but did not meet the route's
    /// requirements (never set from an unverified token).
    pub subject: Option<Box<str>>,
}

impl Rejection {
    /// A rejection with a detail.
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
            issuer: None,
            scope: None,
            subject: None,
        }
    }

    /// The same rejection, naming the verified subject it concerns.
    pub fn for_subject(mut self, subject: &str) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// The same rejection, naming the scopes the request needs.
    pub fn needing_scope(mut self, scope: String) -> Self {
        self.scope = Some(scope);
        self
    }

    /// The same rejection, attributed to issuer `id`.
    pub fn for_issuer(mut self, id: &Arc<str>) -> Self {
        self.issuer = Some(Arc::clone(id));
        self
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique_snake_case_and_descriptions_are_header_safe() {
        let codes: HashSet<_> = Reason::ALL.iter().map(|r| r.code()).collect();
        assert_eq!(codes.len(), Reason::ALL.len());
        for reason in Reason::ALL {
            assert!(
                reason
                    .code()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_')
            );
            let d = reason.description();
            assert!(
                d.bytes()
                    .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
            );
        }
    }
}
