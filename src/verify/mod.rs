//! Verification: token text in, verified token or a reasoned rejection out.
//!
//! The steps follow the protocol: frame the compact JWS → pick the issuer by the exact
//! (unverified) `iss` and, where issuers share one `iss`, by where the token arrived → pick a
//! key *of that issuer only* by exact `kid` → check the header `alg` is one that key is bound
//! to → verify the signature → validate the claims (an AWS ALB token's signed header first,
//! [`alb`]). The token never chooses a key, an algorithm or a URL on its own. Nothing here does I/O: keys are read from
//! each issuer's [`KeyStore`], which [`crate::keys::source`] keeps filled.
//!
//! Depends on [`crate::jose`], [`crate::keys`], [`crate::extract`] (location sets),
//! [`crate::identity`] (normalizing what verified) and [`crate::reason`].

mod alb;
pub mod api_key;
pub mod cache;
mod claims;
pub mod jwe;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::{Map, Value};

pub use claims::{AudienceRule, ClaimRules, SubjectRule, TokenTypes, ValidClaims, normalize_type};

use crate::extract::LocationSet;
use crate::identity::{Identity, Profile, ProfileName};
use crate::jose::{CompactJws, FormatError, JoseHeader};
use crate::keys::{KeySet, KeyStore, TrustedKey};
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
    /// Tenants of a `{tenantid}` issuer.
    pub tenancy: Tenancy,
    /// Accept `=`-padded base64url segments (AWS ALB).
    pub accept_padded: bool,
    /// How its claims normalize.
    pub profile: Profile,
    /// Other `iss` spellings of this issuer.
    pub aliases: Vec<String>,
    /// AWS ALB: accepted `signer` ARNs (empty for other issuers).
    pub alb_signers: Vec<String>,
    /// Its tokens may arrive signed-then-encrypted.
    pub accept_encrypted: bool,
}

/// Which tenants a `{tenantid}` issuer accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tenancy {
    /// A plain issuer: `iss` is compared exactly.
    Single,
    /// `iss` is `prefix` + tenant + `suffix`.
    Template {
        /// Text before `{tenantid}`.
        prefix: String,
        /// Text after `{tenantid}`.
        suffix: String,
        /// Accepted tenants; `None` accepts any.
        tenants: Option<HashSet<String>>,
    },
}

impl Tenancy {
    /// From a configured issuer string with at most one `{tenantid}`.
    pub fn new(issuer: &str, tenants: &[String], any_tenant: bool) -> Self {
        match issuer.split_once(TENANT_PLACEHOLDER) {
            None => Self::Single,
            Some((prefix, suffix)) => Self::Template {
                prefix: prefix.to_owned(),
                suffix: suffix.to_owned(),
                tenants: (!any_tenant).then(|| tenants.iter().cloned().collect()),
            },
        }
    }

    /// The tenant of `iss` under this template, if it fits.
    fn tenant_of<'a>(&self, iss: &'a str) -> Option<&'a str> {
        let Self::Template { prefix, suffix, .. } = self else {
            return None;
        };
        let tenant = iss
            .strip_prefix(prefix.as_str())?
            .strip_suffix(suffix.as_str())?;
        let plausible = !tenant.is_empty()
            && tenant.len() <= 64
            && tenant
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
        plausible.then_some(tenant)
    }

    fn accepts(&self, tenant: &str) -> bool {
        match self {
            Self::Single => false,
            Self::Template { tenants: None, .. } => true,
            Self::Template {
                tenants: Some(tenants),
                ..
            } => tenants.contains(tenant),
        }
    }
}

/// The placeholder of multi-tenant issuers (Entra ID writes it this way in its metadata).
const TENANT_PLACEHOLDER: &str = "{tenantid}";

/// A token whose `kid` the issuer's current keys lack: the caller may ask the issuer's store
/// for a refresh and check again.
#[derive(Debug, Clone)]
pub struct KeyMiss {
    /// The issuer's key store.
    pub store: Arc<KeyStore>,
    /// The unknown kid.
    pub kid: String,
}

/// Why verification failed, and whether a key refresh could change that.
#[derive(Debug)]
pub struct Failure {
    /// The rejection.
    pub rejection: Rejection,
    /// Set when the token named a kid the issuer's keys lack.
    pub key_miss: Option<KeyMiss>,
}

impl From<Rejection> for Failure {
    fn from(rejection: Rejection) -> Self {
        Self {
            rejection,
            key_miss: None,
        }
    }
}

/// The key that verified a token, as the key set held it then. A verified-token cache uses it
/// to tell whether the key is still trusted.
#[derive(Debug, Clone)]
pub struct VerifyingKey {
    /// Whether the token header named the key by `kid` (its own kid); otherwise the token had
    /// none and the set had one key.
    pub by_kid: bool,
    /// [`KeySet::id`] of the set the key was taken from.
    pub key_set: u64,
    /// The key.
    pub key: Arc<TrustedKey>,
}

impl VerifyingKey {
    /// True while `keys` would still verify the token with this same key: the very set it came
    /// from, or a newer one that holds an identical key under the same selection. False once
    /// the key is rotated out or changed, or the issuer has no keys.
    pub fn still_trusted(&self, keys: Option<&KeySet>) -> bool {
        let Some(keys) = keys else {
            return false;
        };
        keys.id() == self.key_set
            || keys
                .select_shared(self.key.kid().filter(|_| self.by_kid))
                .is_some_and(|key| {
                    Arc::ptr_eq(key, &self.key) || key.fingerprint() == self.key.fingerprint()
                })
    }
}

/// A credential that passed every check: a token (signed, perhaps encrypted), or an API key.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    /// The issuer that verified it (for an API key, its key set).
    pub issuer: Arc<Issuer>,
    /// `exp`, seconds since the epoch.
    pub expires_at: i64,
    /// The normalized identity (its `subject` is the token's `sub`).
    pub identity: Identity,
    /// The claims, for later phases (authorization, headers). All of them as verification
    /// returns it; the pipeline keeps only those its routes and header templates read.
    pub claims: Map<String, Value>,
    /// What vouched for it: a signature and the key that verified it, or an API key.
    pub proof: Proof,
    /// How the token was encrypted, when it arrived as a JWE around the signed token.
    pub encryption: Option<jwe::Encryption>,
}

/// What vouched for a verified credential.
#[derive(Debug, Clone)]
pub enum Proof {
    /// A signature, verified by this key.
    Signature(VerifyingKey),
    /// An API key of the issuer's key set whose digest matched (`issuer` is the key set).
    ApiKey(api_key::ApiKeyGrant),
}

impl VerifiedToken {
    /// The API key grant, when the credential was an API key.
    pub fn api_key(&self) -> Option<&api_key::ApiKeyGrant> {
        match &self.proof {
            Proof::ApiKey(grant) => Some(grant),
            Proof::Signature(_) => None,
        }
    }

    /// `sub`.
    pub fn subject(&self) -> &str {
        &self.identity.subject
    }
}

/// Every trusted issuer, looked up by exact `iss` (or an alias), then by tenant template, and
/// among issuers that share one `iss`, by where the token arrived.
#[derive(Debug, Default)]
pub struct IssuerRegistry {
    /// Issuers by each exact spelling of their `iss`. One string names several issuers only when
    /// their token locations are disjoint (config validation guarantees it): AWS ALB signs its
    /// `x-amzn-oidc-data` tokens with the Cognito user pool's `iss`, so an ALB issuer and a
    /// Cognito bearer-token issuer share it.
    by_iss: HashMap<String, Vec<Arc<Issuer>>>,
    templates: Vec<Arc<Issuer>>,
    ordered: Vec<Arc<Issuer>>,
    max_token_bytes: usize,
}

/// The `iss` a token states: in its payload (every JWT), and in its protected header (AWS ALB
/// puts it there; RFC 7519 §5.3 lets any JWT replicate it there).
#[derive(Debug, Clone, Copy)]
struct StatedIss<'t> {
    payload: Option<&'t str>,
    header: Option<&'t str>,
}

impl<'t> StatedIss<'t> {
    fn read(header: &'t JoseHeader, claims: &'t Map<String, Value>) -> Result<Self, Rejection> {
        let text = |value: Option<&'t Value>, place: &str| match value {
            None => Ok(None),
            Some(Value::String(iss)) => Ok(Some(iss.as_str())),
            Some(_) => Err(Rejection::new(
                Reason::ClaimInvalid,
                format!("iss in the {place} is not a string"),
            )),
        };
        Ok(Self {
            payload: text(claims.get("iss"), "payload")?,
            header: text(header.params.get("iss"), "header")?,
        })
    }

    /// The string to find the issuer by. The header's comes first: only an AWS ALB issuer reads
    /// it ([`StatedIss::authority`]), and where the payload also has one, the two must agree
    /// ([`StatedIss::agree`]).
    fn lookup(self) -> Result<&'t str, Rejection> {
        self.header
            .or(self.payload)
            .ok_or_else(|| Rejection::new(Reason::IssuerUnknown, "the token has no iss claim"))
    }

    /// The `iss` this issuer's tokens are read by: the signed header's for AWS ALB, the
    /// payload's for everyone else. Where `iss` sits is framing, so this is checked before any
    /// key is tried.
    fn authority(self, alb: bool) -> Result<&'t str, Rejection> {
        let (authority, missing) = if alb {
            (
                self.header,
                "an aws-alb issuer's tokens carry iss in the signed header, and this one does not",
            )
        } else {
            (
                self.payload,
                "the token has no iss claim (iss in the header is only read for aws-alb issuers)",
            )
        };
        authority.ok_or_else(|| Rejection::new(Reason::IssuerUnknown, missing))
    }

    /// Where both places state an `iss`, they must agree. Checked once the signature verified.
    fn agree(self) -> Result<(), Rejection> {
        match (self.header, self.payload) {
            (Some(header), Some(payload)) if header != payload => Err(Rejection::new(
                Reason::ClaimMismatch,
                "iss in the payload differs from iss in the signed header",
            )),
            _ => Ok(()),
        }
    }
}

impl IssuerRegistry {
    /// A registry of `issuers` accepting tokens up to `max_token_bytes`. An `iss` (or alias)
    /// shared by several issuers must come with disjoint token locations; config validation
    /// guarantees it.
    pub fn new(issuers: Vec<Arc<Issuer>>, max_token_bytes: usize) -> Self {
        let mut by_iss: HashMap<String, Vec<Arc<Issuer>>> = HashMap::new();
        let mut templates = Vec::new();
        for issuer in &issuers {
            if issuer.tenancy != Tenancy::Single {
                templates.push(Arc::clone(issuer));
                continue;
            }
            for iss in std::iter::once(&issuer.issuer).chain(&issuer.aliases) {
                by_iss
                    .entry(iss.clone())
                    .or_default()
                    .push(Arc::clone(issuer));
            }
        }
        Self {
            by_iss,
            templates,
            ordered: issuers,
            max_token_bytes,
        }
    }

    /// The issuers, in configuration order.
    pub fn issuers(&self) -> &[Arc<Issuer>] {
        &self.ordered
    }

    /// The largest accepted token, in bytes.
    pub fn max_token_bytes(&self) -> usize {
        self.max_token_bytes
    }

    /// Verifies `token`, found in `locations`, at time `now` (seconds since the epoch).
    pub fn verify(
        &self,
        token: &str,
        locations: LocationSet,
        now: i64,
    ) -> Result<VerifiedToken, Failure> {
        let jws = CompactJws::parse(token, self.max_token_bytes).map_err(format_rejection)?;
        // The issuer has to be known before a key can be chosen, so `iss` is read from the
        // still-unverified token; nothing else in it is used until the signature checks out.
        let mut claims = jws.claims().map_err(format_rejection)?;
        let stated = StatedIss::read(&jws.header, &claims)?;
        let (issuer, tenant) = self.issuer_for(stated.lookup()?, locations)?;
        let checked = self
            .verify_with(issuer, tenant, &jws, stated, &claims, locations)
            .and_then(|key| {
                if issuer.profile.name == ProfileName::AwsAlb {
                    alb::apply_signed_header(&jws.header, &issuer.alb_signers, &mut claims)?;
                }
                let valid = issuer.rules.check(&jws.header, &claims, now)?;
                Ok((valid, key))
            });
        match checked {
            Ok((valid, verified_by)) => Ok(VerifiedToken {
                identity: Identity::from_claims(
                    &issuer.id,
                    valid.subject,
                    &issuer.profile,
                    &claims,
                ),
                issuer: Arc::clone(issuer),
                expires_at: valid.expires_at,
                claims,
                proof: Proof::Signature(verified_by),
                encryption: None,
            }),
            Err(mut failure) => {
                failure.rejection = failure.rejection.for_issuer(&issuer.id);
                Err(failure)
            }
        }
    }

    /// The issuer of `iss` for a token found in `locations`: an exact match (among issuers
    /// sharing the string, the one that accepts this location), else a template whose tenant
    /// is accepted.
    fn issuer_for<'a>(
        &self,
        iss: &'a str,
        locations: LocationSet,
    ) -> Result<(&Arc<Issuer>, Option<&'a str>), Rejection> {
        let exact = self.by_iss.get(iss).into_iter().flatten();
        if let Some((issuer, ())) = by_location(exact.map(|issuer| (issuer, ())), locations) {
            return Ok((issuer, None));
        }
        let fitting = self
            .templates
            .iter()
            .filter_map(|issuer| Some((issuer, issuer.tenancy.tenant_of(iss)?)));
        let Some((issuer, tenant)) = by_location(fitting, locations) else {
            return Err(Rejection::new(
                Reason::IssuerUnknown,
                format!("no issuer is configured for iss {iss:?}"),
            ));
        };
        if issuer.tenancy.accepts(tenant) {
            Ok((issuer, Some(tenant)))
        } else {
            Err(Rejection::new(
                Reason::IssuerUnknown,
                format!("tenant {tenant:?} of iss {iss:?} is not accepted"),
            )
            .for_issuer(&issuer.id))
        }
    }

    /// The signature layer for one chosen issuer: where `iss` sits, token location, padding,
    /// that issuer's keys only, the key's algorithm binding; then what binds the key to the
    /// token (one `iss`, a multi-tenant `tid`, a key's own issuer).
    fn verify_with(
        &self,
        issuer: &Arc<Issuer>,
        tenant: Option<&str>,
        jws: &CompactJws<'_>,
        stated: StatedIss<'_>,
        claims: &Map<String, Value>,
        locations: LocationSet,
    ) -> Result<VerifyingKey, Failure> {
        let iss = stated.authority(issuer.profile.name == ProfileName::AwsAlb)?;
        if jws.padded && !issuer.accept_padded {
            return Err(Rejection::new(
                Reason::TokenMalformed,
                format!("issuer {} does not accept base64url padding", issuer.id),
            )
            .into());
        }
        if !issuer.locations.intersects(locations) {
            return Err(Rejection::new(
                Reason::TokenLocationNotAllowed,
                format!(
                    "issuer {} does not accept tokens from where this one was sent",
                    issuer.id
                ),
            )
            .into());
        }
        let keys = issuer.keys.load();
        let keys = keys.as_deref().ok_or_else(|| {
            Rejection::new(
                Reason::KeysUnavailable,
                format!("keys of issuer {} have not loaded", issuer.id),
            )
        })?;
        let key = verify_signature(keys, jws).map_err(|rejection| {
            let key_miss = match (&jws.header.kid, rejection.reason) {
                (Some(kid), Reason::KeyUnknown) => Some(KeyMiss {
                    store: Arc::clone(&issuer.keys),
                    kid: kid.clone(),
                }),
                _ => None,
            };
            Failure {
                rejection,
                key_miss,
            }
        })?;
        if let Some(tenant) = tenant {
            match claims.get("tid") {
                Some(Value::String(tid)) if tid == tenant => {}
                Some(Value::String(_)) => {
                    return Err(Rejection::new(
                        Reason::ClaimMismatch,
                        "tid differs from the tenant in iss",
                    )
                    .into());
                }
                Some(_) => {
                    return Err(Rejection::new(Reason::ClaimInvalid, "tid is not a string").into());
                }
                None => {
                    return Err(Rejection::new(
                        Reason::ClaimMissing,
                        "a multi-tenant issuer needs tid",
                    )
                    .into());
                }
            }
        }
        stated.agree()?;
        check_key_issuer(key, iss, claims)?;
        Ok(VerifyingKey {
            by_kid: jws.header.kid.is_some(),
            key_set: keys.id(),
            key: Arc::clone(key),
        })
    }
}

/// Among `candidates` (issuers that fit a token's `iss`), the one that accepts tokens from
/// `locations`; when none does, the first, whose location check then refuses the token and
/// names it.
fn by_location<'r, T>(
    mut candidates: impl Iterator<Item = (&'r Arc<Issuer>, T)>,
    locations: LocationSet,
) -> Option<(&'r Arc<Issuer>, T)> {
    let first = candidates.next()?;
    if first.0.locations.intersects(locations) {
        return Some(first);
    }
    Some(
        candidates
            .find(|(issuer, _)| issuer.locations.intersects(locations))
            .unwrap_or(first),
    )
}

/// A key that names its own issuer (Entra ID does, possibly as a `{tenantid}` template) may
/// only verify tokens of that issuer.
fn check_key_issuer(
    key: &TrustedKey,
    iss: &str,
    claims: &Map<String, Value>,
) -> Result<(), Rejection> {
    let Some(key_issuer) = key.issuer() else {
        return Ok(());
    };
    // `iss` must equal the key's issuer with `{tenantid}` replaced by the token's `tid`;
    // compared piecewise, without building the expected string.
    let matches = match key.issuer_template() {
        None => key_issuer == iss,
        Some((before, after)) => {
            let tid = claims
                .get("tid")
                .and_then(Value::as_str)
                .unwrap_or_default();
            iss.strip_prefix(before)
                .and_then(|rest| rest.strip_suffix(after))
                == Some(tid)
        }
    };
    if matches {
        Ok(())
    } else {
        Err(Rejection::new(
            Reason::KeyUnknown,
            format!("the key is bound to issuer {key_issuer:?}, not {iss:?}"),
        ))
    }
}

/// Checks the signature of `jws` with the key its `kid` names in `keys`, under the algorithm
/// that key is bound to. The JWS layer of verification, usable on its own (the Wycheproof
/// vectors drive it directly).
pub fn verify_signature<'k>(
    keys: &'k KeySet,
    jws: &CompactJws<'_>,
) -> Result<&'k Arc<TrustedKey>, Rejection> {
    let kid = jws.header.kid.as_deref();
    let key = keys.select_shared(kid).ok_or_else(|| match kid {
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
        Ok(key)
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
