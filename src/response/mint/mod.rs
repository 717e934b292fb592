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

    /// Signs with `signer` from now on (tests: a failing signer).
    #[cfg(test)]
    pub(crate) fn sign_with(&mut self, signer: Arc<dyn Signer>) {
        self.ring.sign_with(signer);
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
    hasher.update(&serde_json::to_vec(body).unwrap_or_default());
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

/// Reads a key, PIN or public key file of at most 64 KiB; the error names the file.
fn read_key_file(path: &std::path::Path) -> Result<Vec<u8>, String> {
    crate::files::read_bounded(path, MAX_KEY_FILE_BYTES)
        .map_err(|err| format!("{}: {err}", path.display()))
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

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::{ContentEncryption, KeyManagement, MintEncryptionConfig};
    use crate::verify::jwe::Decrypter;

    /// An incoming token's verification, through a real pipeline.
    fn verified(
        sub: &str,
        extra_claims: Value,
    ) -> (Arc<VerifiedToken>, crate::pipeline::Generation) {
        let pair = josekit::jws::ES256.generate_key_pair().unwrap();
        let signer = josekit::jws::ES256
            .signer_from_jwk(&josekit::jwk::KeyPair::to_jwk_private_key(&pair))
            .unwrap();
        let mut jwk = josekit::jwk::KeyPair::to_jwk_public_key(&pair);
        jwk.set_key_id("k1");
        let yaml = format!(
            "issuers:\n  - {{id: idp, issuer: 'https://idp.example.com/', audiences: [api], keys: {{jwks: {{keys: [{}]}}}}}}\n",
            Value::Object(jwk.as_ref().clone())
        );
        let config = crate::config::parse_yaml(&yaml, "t.yaml").unwrap();
        let generation =
            crate::pipeline::Generation::build(config, None, &Arc::new(tokio::sync::Notify::new()))
                .unwrap();
        let now = crate::service::unix_now();
        let mut claims = json!({"iss": "https://idp.example.com/", "sub": sub, "aud": "api",
            "iat": now, "exp": now + 300, "scope": "read write"});
        if let (Some(claims), Some(extra)) = (claims.as_object_mut(), extra_claims.as_object()) {
            claims.extend(extra.clone());
        }
        let header = json!({"alg": "ES256", "kid": "k1", "typ": "JWT"});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = josekit::jws::JwsSigner::sign(&signer, input.as_bytes()).unwrap();
        let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature));
        struct Bearer(String);
        impl crate::extract::HeaderLookup for Bearer {
            fn header(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
                (name == "authorization")
                    .then(|| std::borrow::Cow::Owned(format!("Bearer {}", self.0)))
            }
        }
        let checked =
            generation
                .pipeline
                .check(&Bearer(token), &crate::authz::RequestFacts::default(), now);
        match checked.decision {
            crate::authz::Decision::Allow(Some(token)) => (token, generation),
            other => panic!("not allowed: {other:?}"),
        }
    }

    fn mint_config(dir: &std::path::Path, claims: &[(&str, &str)]) -> MintConfig {
        let group =
            openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap();
        let key = openssl::pkey::PKey::from_ec_key(openssl::ec::EcKey::generate(&group).unwrap())
            .unwrap();
        let path = dir.join("mint.pem");
        std::fs::write(&path, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
        let yaml = format!(
            "issuer: https://fedauthz.internal\naudience: orders\nkeys: [{{file: '{}', state: current, initial: true}}]\n",
            path.display()
        );
        let mut mint: MintConfig = serde_saphyr::from_str(&yaml).unwrap();
        // Set directly: validation would refuse registered names before this point.
        mint.claims = claims
            .iter()
            .map(|(name, template)| ((*name).to_owned(), (*template).to_owned()))
            .collect();
        mint
    }

    #[tokio::test]
    async fn registered_claims_are_written_last_whatever_a_template_says() {
        let (token, _generation) = verified("alice", json!({}));
        let dir = tempfile::tempdir().unwrap();
        let mint = mint_config(
            dir.path(),
            &[
                ("iss", "https://evil.example.com"),
                ("aud", "everything"),
                ("exp", "9999999999"),
                ("sub", "admin"),
                ("fedauthz", "{subject}"),
                ("team", "{subject}-team"),
            ],
        );
        let plan = ClaimPlan::new(&mint);
        let body = plan.body(&token, "orders");
        assert_eq!(body["iss"], "https://fedauthz.internal");
        assert_eq!(body["aud"], "orders");
        assert_eq!(body["sub"], "idp:alice");
        assert_eq!(body["scope"], "read write");
        assert!(
            body["fedauthz"].is_object(),
            "the namespace stays the identity"
        );
        assert_eq!(body["team"], "alice-team");
        assert!(
            body.get("exp").is_none(),
            "times are stamped at signing only"
        );
    }

    #[derive(Debug)]
    struct Broken(Map<String, Value>);

    impl Signer for Broken {
        fn algorithm(&self) -> SigningAlgorithm {
            SigningAlgorithm::Es256
        }
        fn public_jwk(&self) -> &Map<String, Value> {
            &self.0
        }
        fn kid(&self) -> &str {
            "broken"
        }
        fn backend(&self) -> &'static str {
            "pkcs11"
        }
        fn sign(&self, _input: &[u8]) -> Result<Vec<u8>, SignError> {
            Err(SignError::Pkcs11 {
                step: "sign",
                detail: "CKR_DEVICE_REMOVED".into(),
            })
        }
    }

    #[tokio::test]
    async fn a_signer_failure_is_an_error_counted_for_its_backend_and_never_cached() {
        let (token, generation) = verified("bob", json!({}));
        let dir = tempfile::tempdir().unwrap();
        let mut config = generation.config.clone();
        config.mint = Some(mint_config(dir.path(), &[]));
        let mut minter = Minter::build(&config, None, MintStats::default(), 0)
            .unwrap()
            .unwrap()
            .minter;
        minter.sign_with(Arc::new(Broken(Map::new())));
        let now = crate::service::unix_now();
        let err = minter.mint(&token, None, now).await.unwrap_err();
        assert!(err.to_string().contains("CKR_DEVICE_REMOVED"), "{err}");
        assert_eq!(minter.cached(), 0);
        let mut registry = prometheus_client::registry::Registry::default();
        minter.stats().register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("mint_signing_errors_total{backend=\"pkcs11\"} 1"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_route_can_encrypt_its_token_to_the_upstream_as_a_nested_jwt() {
        let (token, generation) = verified("carol", json!({}));
        let dir = tempfile::tempdir().unwrap();
        let rsa =
            openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        std::fs::write(dir.path().join("up.pem"), rsa.public_key_to_pem().unwrap()).unwrap();
        std::fs::write(
            dir.path().join("up-private.pem"),
            rsa.private_key_to_pem_pkcs8().unwrap(),
        )
        .unwrap();
        let mut config = generation.config.clone();
        config.mint = Some(mint_config(dir.path(), &[]));
        config.routes = Some(vec![crate::config::RouteConfig {
            name: "sealed".into(),
            matches: Default::default(),
            allow_anonymous: false,
            prefer_credential: None,
            require: Default::default(),
            headers: Default::default(),
            mint: Some(crate::config::RouteMintConfig {
                enabled: true,
                audience: Some("vault".into()),
                encrypt: Some(MintEncryptionConfig {
                    key_file: dir.path().join("up.pem"),
                    algorithm: KeyManagement::RsaOaep256,
                    content_encryption: ContentEncryption::A256Gcm,
                    kid: Some("upstream-1".into()),
                }),
            }),
        }]);
        let minter = Minter::build(&config, None, MintStats::default(), 0)
            .unwrap()
            .unwrap()
            .minter;
        let now = crate::service::unix_now();
        let minted = minter
            .mint(&token, Some("sealed"), now)
            .await
            .unwrap()
            .unwrap();
        assert!(minted.encrypted);
        assert_eq!(minted.token.split('.').count(), 5, "a compact JWE");
        // The upstream opens it with its private key (fedauthz's own decryption layer plays
        // the upstream here; tests/mint_interop.rs uses jwcrypto) and finds the signed token.
        let decryption: crate::config::DecryptionConfig = serde_saphyr::from_str(&format!(
            "keys: [{{kid: upstream-1, algorithm: RSA-OAEP-256, file: '{}'}}]\n",
            dir.path().join("up-private.pem").display()
        ))
        .unwrap();
        let opened = Decrypter::load(&decryption)
            .unwrap()
            .open(&minted.token, 65536)
            .unwrap();
        let payload = opened.jws.split('.').nth(1).unwrap();
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(claims["aud"], "vault");
        assert_eq!(claims["jti"], minted.jti.as_str());
        // The catch-all default plan stays unencrypted.
        let plain = minter.mint(&token, None, now).await.unwrap().unwrap();
        assert!(!plain.encrypted);
        assert_eq!(plain.token.split('.').count(), 3);
    }
}
