//! Minting, a step of the response phase: on allow, the internal token fedauthz issues for the
//! upstream — one issuer, one key set, namespaced identity claims, a short life — so services
//! trust fedauthz instead of every external identity provider.
//!
//! - [`claims`]: what a minted token says (RFC 9068 access token, `typ: at+jwt`).
//! - [`keys`]: the signing keys and their rotation states (`next`, `current`, `retired`), and
//!   the JWK Set and discovery document verifiers fetch.
//! - [`Signer`]: one interface, with a PEM-file backend ([`file`]) and a PKCS#11 backend
//!   ([`pkcs11`], the key never leaves the module). A cloud KMS backend would be a third
//!   implementation of the same trait (docs/minting.md says how).
//! - [`Minter::mint`]: reuses a cached token for the same identity and audience until shortly
//!   before its end, else signs on a blocking thread (an HSM round trip must not hold up the
//!   threads answering checks) and, for routes that ask, encrypts it to the upstream
//!   ([`encrypt`]).
//!
//! Depends on [`crate::config`], [`crate::verify`] (the verified token it speaks for) and
//! [`crate::response`] (templates).

pub mod claims;
pub mod encrypt;
pub mod file;
pub mod keys;
pub mod pkcs11;
mod signer;
mod stats;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};

use crate::config::{Config, FieldError, MintConfig};
use crate::verify::VerifiedToken;
use claims::ClaimPlan;
use encrypt::UpstreamEncryption;
use keys::KeyRing;
pub use signer::{SignError, Signer, SigningAlgorithm, thumbprint};
pub use stats::MintStats;

/// Largest key, PIN or public key file read.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

/// A minted token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Minted {
    /// The compact JWS (or JWE around it).
    pub token: String,
    /// Its `jti`.
    pub jti: String,
    /// The `kid` of the key that signed it.
    pub kid: String,
    /// Its `exp`.
    pub expires_at: i64,
    /// Whether it is encrypted to the upstream.
    pub encrypted: bool,
}

/// Why no token could be minted (the check is then denied: fail closed).
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// The signer failed.
    #[error("minting failed: {0}")]
    Sign(#[from] SignError),
    /// Encrypting to the upstream failed.
    #[error("minting failed: {0}")]
    Encrypt(String),
    /// The signing task did not finish.
    #[error("minting failed: the signing task ended unexpectedly")]
    Task,
}

/// What one route mints.
#[derive(Debug, Clone)]
struct RoutePlan {
    audience: String,
    encryption: Option<Arc<UpstreamEncryption>>,
}

/// Minting for one configuration.
#[derive(Debug)]
pub struct Minter {
    claims: ClaimPlan,
    ring: KeyRing,
    header: String,
    lifetime: i64,
    renew_before: i64,
    /// The plan of routes without a `mint` section (and of the catch-all route).
    default: Option<RoutePlan>,
    /// Routes with a `mint` section (`None`: minting off on that route).
    routes: HashMap<String, Option<RoutePlan>>,
    cache: Option<moka::sync::Cache<[u8; 32], Arc<Minted>>>,
    stats: MintStats,
    jwks_uri: String,
    max_age: Duration,
}

/// A built minter and the warnings its keys gave.
#[derive(Debug)]
pub struct BuiltMinter {
    /// The minter.
    pub minter: Minter,
    /// What an operator should know (a retired key past its publication, …).
    pub warnings: Vec<FieldError>,
}

impl Minter {
    /// Builds the minter of `config` (already validated) at `now`, or `None` when it has no
    /// `mint` section. Open PKCS#11 keys of `previous` are reused when their settings did not
    /// change; `stats` carry over from the previous configuration.
    pub fn build(
        config: &Config,
        previous: Option<&Minter>,
        stats: MintStats,
        now: i64,
    ) -> Result<Option<BuiltMinter>, Vec<FieldError>> {
        let Some(mint) = &config.mint else {
            return Ok(None);
        };
        let loaded = KeyRing::load(mint, previous.map(|m| &m.ring), now);
        let mut errors = Vec::new();
        let mut plan = |audience: Option<&String>,
                        encrypt: Option<&crate::config::MintEncryptionConfig>,
                        at: &str| {
            let audience = audience.or(mint.audience.as_ref())?.clone();
            let encryption = match encrypt.map(UpstreamEncryption::load) {
                Some(Ok(encryption)) => Some(Arc::new(encryption)),
                Some(Err(why)) => {
                    errors.push(FieldError::new(format!("{at}.encrypt.key_file"), why));
                    None
                }
                None => None,
            };
            Some(RoutePlan {
                audience,
                encryption,
            })
        };
        let default = plan(None, None, "mint");
        let mut routes = HashMap::new();
        for (i, route) in config.routes.iter().flatten().enumerate() {
            if let Some(route_mint) = &route.mint {
                let plan = route_mint
                    .enabled
                    .then(|| {
                        plan(
                            route_mint.audience.as_ref(),
                            route_mint.encrypt.as_ref(),
                            &format!("routes[{i}].mint"),
                        )
                    })
                    .flatten();
                routes.insert(route.name.clone(), plan);
            }
        }
        let loaded = match loaded {
            Ok(loaded) if errors.is_empty() => loaded,
            Ok(_) => return Err(errors),
            Err(mut key_errors) => {
                key_errors.extend(errors);
                return Err(key_errors);
            }
        };
        let seconds = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        let cache = (mint.cache.max_entries > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(mint.cache.max_entries)
                .expire_after(UntilRenewal {
                    renew_before: seconds(mint.cache.renew_before.get()),
                })
                .build()
        });
        Ok(Some(BuiltMinter {
            minter: Self {
                claims: ClaimPlan::new(mint),
                ring: loaded.ring,
                header: mint.header.to_ascii_lowercase(),
                lifetime: seconds(mint.lifetime.get()),
                renew_before: seconds(mint.cache.renew_before.get()),
                default,
                routes,
                cache,
                stats,
                jwks_uri: jwks_uri(mint),
                max_age: mint.publish.max_age.get(),
            },
            warnings: loaded.warnings,
        }))
    }

    /// Whether requests allowed on `route` get a minted token.
    pub fn mints_on(&self, route: Option<&str>) -> bool {
        self.plan(route).is_some()
    }

    fn plan(&self, route: Option<&str>) -> Option<&RoutePlan> {
        match route.and_then(|name| self.routes.get(name)) {
            Some(plan) => plan.as_ref(),
            None => self.default.as_ref(),
        }
    }

    /// The upstream header the token goes in (lower case).
    pub fn header(&self) -> &str {
        &self.header
    }

    /// The verified claims minting reads.
    pub fn claim_paths(&self) -> impl Iterator<Item = &str> {
        self.claims.claim_paths()
    }

    /// The token for `token`'s identity on `route` at `now`: a cached one while it has more
    /// than `renew_before` left and ends no later than `token`, else a new one. `None` when
    /// the route does not mint.
    pub async fn mint(
        &self,
        token: &VerifiedToken,
        route: Option<&str>,
        now: i64,
    ) -> Result<Option<Arc<Minted>>, MintError> {
        let Some(plan) = self.plan(route) else {
            return Ok(None);
        };
        let body = self.claims.body(token, &plan.audience);
        let key = cache_key(&body, plan);
        if let Some(cache) = &self.cache
            && let Some(hit) = cache.get(&key)
        {
            if now.saturating_add(self.renew_before) < hit.expires_at
                && hit.expires_at <= token.expires_at
            {
                self.stats.hit();
                return Ok(Some(hit));
            }
            cache.invalidate(&key);
        }
        let minted = Arc::new(self.sign(body, token.expires_at, plan, now).await?);
        if let Some(cache) = &self.cache {
            cache.insert(key, Arc::clone(&minted));
        }
        Ok(Some(minted))
    }

    /// Signs `body` with the current key (and encrypts it when `plan` says) off the async
    /// threads.
    async fn sign(
        &self,
        mut body: Map<String, Value>,
        token_expires_at: i64,
        plan: &RoutePlan,
        now: i64,
    ) -> Result<Minted, MintError> {
        let signer = Arc::clone(self.ring.current());
        let expires_at = now.saturating_add(self.lifetime).min(token_expires_at);
        let jti = new_jti()?;
        claims::stamp(&mut body, now, expires_at, &jti);
        let header = json!({
            "alg": signer.algorithm().name(),
            "typ": "at+jwt",
            "kid": signer.kid(),
        });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(Value::Object(body).to_string())
        );
        let backend = signer.backend();
        let labels = stats::SignerLabels {
            backend,
            algorithm: signer.algorithm().name(),
        };
        let encryption = plan.encryption.clone();
        let stats = self.stats.clone();
        let kid = signer.kid().to_owned();
        let outcome = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let signature = signer.sign(input.as_bytes())?;
            stats.signed(labels, started.elapsed().as_secs_f64());
            let jws = format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature));
            match &encryption {
                Some(encryption) => encryption.encrypt(&jws).map_err(MintError::Encrypt),
                None => Ok(jws),
            }
        })
        .await
        .unwrap_or(Err(MintError::Task));
        match outcome {
            Ok(token) => Ok(Minted {
                token,
                jti,
                kid,
                expires_at,
                encrypted: plan.encryption.is_some(),
            }),
            Err(err) => {
                self.stats.failed(backend);
                Err(err)
            }
        }
    }

    /// The OpenID Connect discovery document.
    pub fn discovery(&self, now: i64) -> Value {
        json!({
            "issuer": self.claims.issuer(),
            "jwks_uri": self.jwks_uri,
            "id_token_signing_alg_values_supported": self.ring.algorithms(now),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
        })
    }

    /// The JWK Set verifiers fetch at `now`.
    pub fn jwks(&self, now: i64) -> Value {
        self.ring.jwks(now)
    }

    /// How long verifiers may cache both documents.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// The key ring.
    pub fn ring(&self) -> &KeyRing {
        &self.ring
    }

    /// Minted tokens held in the cache.
    pub fn cached(&self) -> u64 {
        self.cache.as_ref().map_or(0, |cache| {
            cache.run_pending_tasks();
            cache.entry_count()
        })
    }

    /// The counters.
    pub fn stats(&self) -> &MintStats {
        &self.stats
    }
}

/// The `jwks_uri` discovery announces: `mint.publish.jwks_uri`, else beside discovery.
pub fn jwks_uri(mint: &MintConfig) -> String {
    mint.publish
        .jwks_uri
        .clone()
        .unwrap_or_else(|| format!("{}/.well-known/jwks.json", mint.issuer))
}

/// The path discovery is served at for `issuer` (OIDC Discovery §4: the issuer's path, then
/// `/.well-known/openid-configuration`).
pub fn discovery_path(issuer: &str) -> String {
    let path = reqwest::Url::parse(issuer)
        .map(|url| url.path().trim_end_matches('/').to_owned())
        .unwrap_or_default();
    format!("{path}/.well-known/openid-configuration")
}

/// The cache key: SHA-256 over the claims that vary per identity and audience, and the
/// upstream key a route encrypts to.
fn cache_key(body: &Map<String, Value>, plan: &RoutePlan) -> [u8; 32] {
    let mut hasher = openssl::sha::Sha256::new();
    hasher.update(Value::Object(body.clone()).to_string().as_bytes());
    hasher.update(b"\0");
    if let Some(encryption) = &plan.encryption {
        hasher.update(encryption.kid().as_bytes());
    }
    hasher.finish()
}

/// 128 random bits, base64url.
fn new_jti() -> Result<String, MintError> {
    let mut bytes = [0_u8; 16];
    openssl::rand::rand_bytes(&mut bytes)
        .map_err(|err| MintError::Sign(SignError::Sign(format!("no randomness: {err}"))))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// Reads a key, PIN or public key file of at most 64 KiB.
fn read_key_file(path: &std::path::Path) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)
        .map_err(|err| format!("{}: cannot read: {err}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_KEY_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| format!("{}: cannot read: {err}", path.display()))?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > MAX_KEY_FILE_BYTES {
        return Err(format!(
            "{}: larger than {MAX_KEY_FILE_BYTES} bytes",
            path.display()
        ));
    }
    Ok(bytes)
}

/// Cached tokens leave the cache when they are due for renewal (the lookup checks again
/// against the request's clock).
struct UntilRenewal {
    renew_before: i64,
}

impl moka::Expiry<[u8; 32], Arc<Minted>> for UntilRenewal {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &Arc<Minted>,
        _created_at: Instant,
    ) -> Option<Duration> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let left = value
            .expires_at
            .saturating_sub(self.renew_before)
            .saturating_sub(now)
            .max(0);
        Some(Duration::from_secs(u64::try_from(left).unwrap_or(0)))
    }
}
