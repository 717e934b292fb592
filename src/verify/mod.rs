//! Verification: token text in, verified token or a reasoned rejection out.
//!
//! The steps follow the protocol: frame the compact JWS → pick the issuer by the exact
//! (unverified) `iss` → pick a key *of that issuer only* by exact `kid` → check the header `alg`
//! is one that key is bound to → verify the signature → validate the claims. The token never
//! chooses a key, an algorithm or a URL on its own. Nothing here does I/O: keys are read from
//! each issuer's [`KeyStore`], which [`crate::keys::fetch`] keeps filled.
//!
//! Depends on [`crate::jose`], [`crate::keys`], [`crate::extract`] (location sets) and
//! [`crate::reason`].

mod claims;

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

pub use claims::{AudienceRule, ClaimRules, ValidClaims, normalize_type};

use crate::extract::LocationSet;
use crate::jose::{CompactJws, FormatError};
use crate::keys::{KeySet, KeyStore};
use crate::reason::{Reason, Rejection};

/// One trusted issuer, compiled from configuration.
#[derive(Debug)]
pub struct Issuer {
    /// Configured id (used in headers, metadata and logs).
    pub id: Arc<str>,
    /// The exact `iss`.
    pub issuer: String,
    /// Its keys.
    pub keys: Arc<KeyStore>,
    /// Its claim rules.
    pub rules: ClaimRules,
    /// Where its tokens may arrive.
    pub locations: LocationSet,
}

/// A token that passed every check.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    /// The issuer that verified it.
    pub issuer: Arc<Issuer>,
    /// `sub`.
    pub subject: String,
    /// `exp`, seconds since the epoch.
    pub expires_at: i64,
    /// All claims, for later phases (authorization, headers).
    pub claims: Map<String, Value>,
}

/// Every trusted issuer, looked up by exact `iss`.
#[derive(Debug, Default)]
pub struct IssuerRegistry {
    by_iss: HashMap<String, Arc<Issuer>>,
    ordered: Vec<Arc<Issuer>>,
    max_token_bytes: usize,
}

impl IssuerRegistry {
    /// A registry of `issuers` (their `iss` values must be distinct; config validation
    /// guarantees it) accepting tokens up to `max_token_bytes`.
    pub fn new(issuers: Vec<Arc<Issuer>>, max_token_bytes: usize) -> Self {
        let by_iss = issuers
            .iter()
            .map(|issuer| (issuer.issuer.clone(), Arc::clone(issuer)))
            .collect();
        Self {
            by_iss,
            ordered: issuers,
            max_token_bytes,
        }
    }

    /// The issuers, in configuration order.
    pub fn issuers(&self) -> &[Arc<Issuer>] {
        &self.ordered
    }

    /// Verifies `token`, found in `locations`, at time `now` (seconds since the epoch).
    pub fn verify(
        &self,
        token: &str,
        locations: LocationSet,
        now: i64,
    ) -> Result<VerifiedToken, Rejection> {
        let jws = CompactJws::parse(token, self.max_token_bytes).map_err(format_rejection)?;
        // The issuer has to be known before a key can be chosen, so `iss` is read from the
        // still-unverified payload; nothing else in it is used until the signature checks out.
        let claims = jws.claims().map_err(format_rejection)?;
        let issuer = match claims.get("iss") {
            Some(Value::String(iss)) => self.by_iss.get(iss).ok_or_else(|| {
                Rejection::new(
                    Reason::IssuerUnknown,
                    format!("no issuer is configured for iss {iss:?}"),
                )
            })?,
            Some(_) => return Err(Rejection::new(Reason::ClaimInvalid, "iss is not a string")),
            None => {
                return Err(Rejection::new(
                    Reason::IssuerUnknown,
                    "the token has no iss claim",
                ));
            }
        };
        self.verify_with(issuer, &jws, claims, locations, now)
            .map_err(|rejection| rejection.for_issuer(&issuer.id))
    }

    fn verify_with(
        &self,
        issuer: &Arc<Issuer>,
        jws: &CompactJws<'_>,
        claims: Map<String, Value>,
        locations: LocationSet,
        now: i64,
    ) -> Result<VerifiedToken, Rejection> {
        if !issuer.locations.intersects(locations) {
            return Err(Rejection::new(
                Reason::TokenLocationNotAllowed,
                format!(
                    "issuer {} does not accept tokens from where this one was sent",
                    issuer.id
                ),
            ));
        }
        let keys = issuer.keys.load();
        let keys = keys.as_deref().ok_or_else(|| {
            Rejection::new(
                Reason::KeysUnavailable,
                format!("keys of issuer {} have not loaded", issuer.id),
            )
        })?;
        verify_signature(keys, jws)?;
        let valid = issuer.rules.check(&jws.header, &claims, now)?;
        Ok(VerifiedToken {
            issuer: Arc::clone(issuer),
            subject: valid.subject,
            expires_at: valid.expires_at,
            claims,
        })
    }
}

/// Checks the signature of `jws` with the key its `kid` names in `keys`, under the algorithm
/// that key is bound to. The JWS layer of verification, usable on its own (the Wycheproof
/// vectors drive it directly).
pub fn verify_signature(keys: &KeySet, jws: &CompactJws<'_>) -> Result<(), Rejection> {
    let kid = jws.header.kid.as_deref();
    let key = keys.select(kid).ok_or_else(|| match kid {
        Some(kid) => Rejection::new(Reason::KeyUnknown, format!("no key has kid {kid:?}")),
        None => Rejection::new(
            Reason::KeyUnknown,
            format!(
                "the token has no kid and the issuer has {} keys",
                keys.len()
            ),
        ),
    })?;
    let verifier = key.verifier_for(&jws.header.alg).ok_or_else(|| {
        let bound: Vec<_> = key.algorithms().map(|alg| alg.name()).collect();
        Rejection::new(
            Reason::AlgorithmNotAllowed,
            format!(
                "alg {:?} is not allowed for this key (allowed: {})",
                jws.header.alg,
                bound.join(", ")
            ),
        )
    })?;
    if verifier.verify(jws.signing_input, &jws.signature) {
        Ok(())
    } else {
        Err(Rejection::new(
            Reason::SignatureInvalid,
            "the signature does not verify",
        ))
    }
}

/// Maps a framing error to its reason.
pub fn format_rejection(err: FormatError) -> Rejection {
    let reason = match err {
        FormatError::TooLarge { .. } => Reason::TokenTooLarge,
        FormatError::Encrypted => Reason::TokenEncrypted,
        FormatError::ForbiddenParam(_) => Reason::HeaderNotAllowed,
        FormatError::Critical(_) => Reason::CritUnsupported,
        FormatError::SegmentCount(_)
        | FormatError::EmptySegment(_)
        | FormatError::Alphabet(_)
        | FormatError::Base64 { .. }
        | FormatError::Json { .. }
        | FormatError::HeaderParam { .. } => Reason::TokenMalformed,
    };
    Rejection::new(reason, err.to_string())
}
