//! The Check pipeline for one configuration generation, wired in protocol order:
//! credential extraction → verification → authorization → response.
//!
//! [`Generation::build`] compiles a validated [`Config`] (plus its running key sources) into
//! the phases; [`Pipeline::check`] runs one request through them, pure and synchronous: no
//! I/O on the request path. For an allowed request, [`Pipeline::mint`] then runs the response
//! phase's one asynchronous step, signing an internal token on a blocking thread. Each pipeline has its own verified-token cache
//! ([`crate::verify::cache`]), so a reload starts with an empty one; routes and the response
//! run for every request, cached or not.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::Notify;
use tracing::debug_span;
use tracing::field::Empty;

use crate::authz::{Authentication, Authorizer, Decision, RequestFacts, Verdict};
use crate::config::{Config, CredentialKind, FieldError, IssuerConfig, TokenLocation};
use crate::decision_log::DecisionLog;
use crate::extract::{Credential, Extractor, HeaderLookup, LocationSet, without_cookie};
use crate::identity::{Profile, ProfileName};
use crate::keys::KeyStore;
use crate::keys::source::{self, KeySources};
use crate::proto::auth::CheckResponse;
use crate::reason::{Reason, Rejection};
use crate::response::mint::{MintStats, Minted, Minter};
use crate::response::{CookieHeader, CredentialPlace, Responder};
use crate::verify::api_key::{ApiKeys, PresentedKey};
use crate::verify::cache::{self, CacheStats, TokenCache};
use crate::verify::jwe::{self, Decrypter};
use crate::verify::{
    AudienceRule, ClaimRules, Failure, Issuer, IssuerRegistry, KeyMiss, SubjectRule, Tenancy,
    TokenTypes, VerifiedToken,
};

/// The phases, compiled from one configuration.
#[derive(Debug)]
pub struct Pipeline {
    extractor: Extractor,
    issuers: IssuerRegistry,
    /// Verified tokens of this configuration (`None`: `token_cache.max_entries` is 0).
    cache: Option<TokenCache>,
    /// The cache counters (kept even when caching is off, and across reloads).
    cache_stats: Arc<CacheStats>,
    /// Top-level claims that routes and header templates read (every other claim is dropped
    /// once the identity is normalized).
    kept_claims: HashSet<String>,
    authorizer: Authorizer,
    responder: Responder,
    decision_log: DecisionLog,
    /// Opens encrypted tokens (`None`: `decryption` is not configured).
    decrypter: Option<Decrypter>,
    /// Mints internal tokens for upstreams (`None`: `mint` is not configured).
    minter: Option<Minter>,
    /// The minting counters (kept even when minting is off, and across reloads).
    mint_stats: MintStats,
    /// The API key sets (empty when `api_keys` is not configured).
    api_keys: ApiKeys,
}

/// The credential a request is judged by, and the other one it carried, if any.
enum Presented<'r> {
    Nothing,
    Token {
        token: Credential<'r>,
        key: Option<PresentedKey<'r>>,
    },
    Key {
        key: PresentedKey<'r>,
        jwt: Option<Credential<'r>>,
    },
}

/// The outcome of one check: the answer for Envoy and the decision behind it (for logs).
#[derive(Debug)]
pub struct Checked {
    /// What Envoy receives.
    pub response: CheckResponse,
    /// Why.
    pub decision: Decision,
    /// The route that decided (`None`: no route matched, or authentication failed first).
    pub route: Option<Arc<str>>,
    /// The token named a kid its issuer's keys lack: a key refresh may change the answer.
    pub key_miss: Option<KeyMiss>,
    /// The internal token minted for the upstream, when the route mints.
    pub minted: Option<Arc<Minted>>,
    /// The kind of credential the request was judged by (`None`: it carried none, or was
    /// refused before one was read).
    pub credential: Option<CredentialKind>,
}

impl Pipeline {
    /// Compiles `config` (already validated) against the running `keys`, with an empty token
    /// cache and fresh cache counters.
    pub fn new(config: &Config, keys: &KeySources) -> Self {
        Self::with_cache_stats(config, keys, Arc::default())
    }

    /// Like [`Pipeline::new`], counting cache hits and misses into `cache_stats` (a reload
    /// hands over the previous configuration's counters; its cache entries are never reused).
    pub fn with_cache_stats(
        config: &Config,
        keys: &KeySources,
        cache_stats: Arc<CacheStats>,
    ) -> Self {
        let mut locations: Vec<TokenLocation> = Vec::new();
        let mut issuers = Vec::with_capacity(config.issuers.len());
        for issuer in &config.issuers {
            let mut accepted = LocationSet::default();
            for location in &issuer.locations() {
                let index = match locations.iter().position(|known| known == location) {
                    Some(index) => index,
                    None => {
                        locations.push(location.clone());
                        locations.len() - 1
                    }
                };
                accepted.insert(index);
            }
            let store = keys
                .store(&issuer.id)
                .unwrap_or_else(|| Arc::new(KeyStore::new(Arc::new(Notify::new()))));
            issuers.push(Arc::new(Issuer {
                id: Arc::from(issuer.id.as_str()),
                issuer: issuer.issuer.clone(),
                keys: store,
                rules: claim_rules(issuer),
                locations: accepted,
                tenancy: Tenancy::new(&issuer.issuer, &issuer.tenants, issuer.any_tenant),
                accept_padded: issuer.accept_padded_tokens,
                profile: Profile::new(issuer.profile, &issuer.claim_mappings),
                aliases: issuer.aliases(),
                alb_signers: issuer.alb_signers.clone(),
                accept_encrypted: issuer.accept_encrypted,
            }));
        }
        let authorizer = Authorizer::new(config);
        let responder = Responder::new(config);
        let kept_claims = authorizer
            .claim_paths()
            .into_iter()
            .chain(responder.claim_paths())
            .flat_map(claim_roots)
            .map(str::to_owned)
            .collect();
        Self {
            extractor: Extractor::new(&locations),
            issuers: IssuerRegistry::new(issuers, config.max_token_bytes),
            cache: TokenCache::new(
                config.token_cache.max_entries,
                config.token_cache.max_ttl.get(),
                Arc::clone(&cache_stats),
            ),
            cache_stats,
            kept_claims,
            authorizer,
            responder,
            decision_log: DecisionLog::new(&config.decision_log),
            decrypter: None,
            minter: None,
            mint_stats: MintStats::default(),
            api_keys: ApiKeys::default(),
        }
    }

    /// The same pipeline, accepting the API keys of `api_keys` (built from the same
    /// configuration).
    pub fn with_api_keys(mut self, api_keys: ApiKeys) -> Self {
        self.api_keys = api_keys;
        self
    }

    /// The API key sets.
    pub fn api_keys(&self) -> &ApiKeys {
        &self.api_keys
    }

    /// The same pipeline, minting with `minter` (built from the same configuration) and
    /// counting into `stats` (the previous configuration's, so counters carry over).
    pub fn minting_with(mut self, minter: Option<Minter>, stats: MintStats) -> Self {
        if let Some(minter) = &minter {
            self.kept_claims.extend(
                minter
                    .claim_paths()
                    .flat_map(claim_roots)
                    .map(str::to_owned),
            );
        }
        self.minter = minter;
        self.mint_stats = stats;
        self
    }

    /// The minting step of the response phase, for an allowed check: puts the internal token
    /// into the response when the route mints. A token that cannot be minted denies the
    /// check (`mint_failed`, 503): an upstream that expects one must never be reached without.
    pub async fn mint(&self, checked: &mut Checked, now: i64) {
        let (Some(minter), Decision::Allow(Some(token))) = (&self.minter, &checked.decision) else {
            return;
        };
        let token = Arc::clone(token);
        let route = checked.route.clone();
        match minter.mint(&token, route.as_deref(), now).await {
            Ok(Some(minted)) => {
                self.responder
                    .attach_minted(&mut checked.response, &minted, minter.header());
                checked.minted = Some(minted);
            }
            Ok(None) => {}
            Err(err) => {
                let rejection = Rejection::new(Reason::MintFailed, err.to_string())
                    .for_issuer(&token.issuer.id)
                    .for_subject(token.subject());
                let decision = Decision::Deny(rejection);
                checked.response = self.responder.respond(
                    &decision,
                    &CredentialPlace::default(),
                    route.as_deref(),
                );
                checked.decision = decision;
            }
        }
    }

    /// The minter (`None`: `mint` is not configured).
    pub fn minter(&self) -> Option<&Minter> {
        self.minter.as_ref()
    }

    /// The minting counters.
    pub fn mint_stats(&self) -> &MintStats {
        &self.mint_stats
    }

    /// The same pipeline, opening encrypted tokens with `decrypter` (loaded from the same
    /// configuration's `decryption`).
    pub fn decrypting_with(mut self, decrypter: Option<Decrypter>) -> Self {
        self.decrypter = decrypter;
        self
    }

    /// Runs one request, given its headers and route facts, at `now` (seconds since the epoch).
    pub fn check(
        &self,
        headers: &impl HeaderLookup,
        facts: &RequestFacts<'_>,
        now: i64,
    ) -> Checked {
        let mut key_miss = None;
        let (authentication, place, judged_by) = match self.credential(headers, facts) {
            Err(rejection) => (
                Authentication::Failed(rejection),
                CredentialPlace::default(),
                None,
            ),
            Ok(Presented::Nothing) => (Authentication::Missing, CredentialPlace::default(), None),
            Ok(Presented::Key { key, jwt }) => {
                let place = jwt.map_or_else(CredentialPlace::default, |jwt| {
                    credential_place(&jwt, headers)
                });
                let place = with_key(place, Some(&key));
                (
                    self.verify_key(&key, now),
                    place,
                    Some(CredentialKind::ApiKey),
                )
            }
            Ok(Presented::Token { token, key }) => {
                let place = with_key(credential_place(&token, headers), key.as_ref());
                let (outcome, miss) = self.verify_token(&token, now);
                key_miss = miss;
                (outcome, place, Some(CredentialKind::Jwt))
            }
        };
        let Verdict { decision, route } = self.authorizer.decide(facts, authentication);
        let response = self.responder.respond(&decision, &place, route.as_deref());
        Checked {
            response,
            decision,
            route,
            key_miss,
            minted: None,
            credential: judged_by,
        }
    }

    /// The answer for a request refused before its credential is read (an HTTP caller that
    /// is not a trusted proxy, say): `rejection`, shaped as every denial is.
    pub fn refuse(&self, rejection: Rejection) -> Checked {
        let decision = Decision::Deny(rejection);
        let response = self
            .responder
            .respond(&decision, &CredentialPlace::default(), None);
        Checked {
            response,
            decision,
            route: None,
            key_miss: None,
            minted: None,
            credential: None,
        }
    }

    /// Verifies the API key `key` (a verify span of its own).
    fn verify_key(&self, key: &PresentedKey<'_>, now: i64) -> Authentication {
        let span = debug_span!("verify", fedauthz.issuer = Empty, fedauthz.reason = Empty);
        let _entered = span.enter();
        match self.api_keys.verify(key, now) {
            Ok(token) => {
                span.record("fedauthz.issuer", &*token.issuer.id);
                Authentication::Verified(token)
            }
            Err(rejection) => {
                span.record("fedauthz.reason", rejection.reason.code());
                Authentication::Failed(rejection)
            }
        }
    }

    /// Verifies the token `credential` (a verify span of its own), and says when a key
    /// refresh might change the answer.
    fn verify_token(
        &self,
        credential: &Credential<'_>,
        now: i64,
    ) -> (Authentication, Option<KeyMiss>) {
        let span = debug_span!("verify", fedauthz.issuer = Empty, fedauthz.reason = Empty);
        let _entered = span.enter();
        match self.verify(&credential.token, credential.locations, now) {
            Ok(token) => {
                span.record("fedauthz.issuer", &*token.issuer.id);
                (Authentication::Verified(token), None)
            }
            Err(failure) => {
                if let Some(issuer) = &failure.rejection.issuer {
                    span.record("fedauthz.issuer", &**issuer);
                }
                span.record("fedauthz.reason", failure.rejection.reason.code());
                (Authentication::Failed(failure.rejection), failure.key_miss)
            }
        }
    }

    /// The credential the request is judged by: its token or its API key, or — when it
    /// carries both — the one its route prefers (without a preference: `credential_ambiguous`).
    /// The other one is handed along so that it is removed before the request goes upstream.
    fn credential<'r>(
        &'r self,
        headers: &'r impl HeaderLookup,
        facts: &RequestFacts<'r>,
    ) -> Result<Presented<'r>, Rejection> {
        let token = self.extractor.extract(headers)?;
        let key = if self.api_keys.is_empty() {
            None
        } else {
            self.api_keys.extract(headers, facts.path)?
        };
        Ok(match (token, key) {
            (None, None) => Presented::Nothing,
            (Some(token), None) => Presented::Token { token, key: None },
            (None, Some(key)) => Presented::Key { key, jwt: None },
            (Some(token), Some(key)) => match self.authorizer.preferred_credential(facts) {
                Some(CredentialKind::Jwt) => Presented::Token {
                    token,
                    key: Some(key),
                },
                Some(CredentialKind::ApiKey) => Presented::Key {
                    key,
                    jwt: Some(token),
                },
                None => {
                    return Err(Rejection::new(
                        Reason::CredentialAmbiguous,
                        "a token and an API key, and the route does not say which one wins \
                         (prefer_credential)",
                    ));
                }
            },
        })
    }

    /// Verifies `token`, or takes its earlier verification from the cache.
    fn verify(
        &self,
        token: &str,
        locations: LocationSet,
        now: i64,
    ) -> Result<Arc<VerifiedToken>, Failure> {
        // Oversized tokens are refused before anything else; not worth hashing.
        let cache = self
            .cache
            .as_ref()
            .filter(|_| token.len() <= self.issuers.max_token_bytes());
        let Some(cache) = cache else {
            return self.verify_uncached(token, locations, now).map(Arc::new);
        };
        let digest = cache::digest(token);
        if let Some(hit) = cache.get(&digest, locations, now) {
            return Ok(hit);
        }
        let verified = Arc::new(self.verify_uncached(token, locations, now)?);
        cache.insert(digest, Arc::clone(&verified), now);
        Ok(verified)
    }

    /// Verifies `token`, keeping only the claims a later phase reads (the identity is already
    /// normalized from all of them): cached tokens stay small, and a rule sees the same claims
    /// whether its token came from the cache or not.
    fn verify_uncached(
        &self,
        token: &str,
        locations: LocationSet,
        now: i64,
    ) -> Result<VerifiedToken, Failure> {
        let mut verified = match &self.decrypter {
            Some(decrypter) if jwe::is_encrypted(token) => {
                let opened = decrypter.open(token, self.issuers.max_token_bytes())?;
                let mut inner =
                    self.issuers
                        .verify(&opened.jws, locations, now)
                        .map_err(|mut failure| {
                            failure
                                .rejection
                                .detail
                                .push_str(" (inside an encrypted token)");
                            failure
                        })?;
                if !inner.issuer.accept_encrypted {
                    return Err(Rejection::new(
                        Reason::EncryptionNotAllowed,
                        format!(
                            "issuer {} does not accept encrypted tokens (accept_encrypted)",
                            inner.issuer.id
                        ),
                    )
                    .for_issuer(&inner.issuer.id)
                    .into());
                }
                inner.encryption = Some(opened.encryption);
                inner
            }
            _ => self.issuers.verify(token, locations, now)?,
        };
        // A fresh map, not `retain`: a cached token lives for minutes, and the map's capacity
        // for every claim would live with it.
        let claims = std::mem::take(&mut verified.claims);
        verified.claims = claims
            .into_iter()
            .filter(|(name, _)| self.kept_claims.contains(name.as_str()))
            .collect();
        Ok(verified)
    }

    /// The compiled issuers.
    pub fn issuers(&self) -> &IssuerRegistry {
        &self.issuers
    }

    /// How this configuration logs decisions.
    pub fn decision_log(&self) -> &DecisionLog {
        &self.decision_log
    }

    /// The verified-token cache (`None` when disabled).
    pub fn token_cache(&self) -> Option<&TokenCache> {
        self.cache.as_ref()
    }

    /// The cache hit and miss counters.
    pub fn cache_stats(&self) -> &Arc<CacheStats> {
        &self.cache_stats
    }
}

/// Where `credential` sits in the request: its header, or its cookie within `cookie`.
fn credential_place<'r>(
    credential: &Credential<'r>,
    headers: &impl HeaderLookup,
) -> CredentialPlace<'r> {
    CredentialPlace {
        header: credential.header,
        api_key_header: None,
        api_key_parameter: None,
        cookie_header: credential.cookie.map(|name| {
            match headers
                .header("cookie")
                .and_then(|all| without_cookie(&all, name))
            {
                Some(rest) => CookieHeader::Replace(rest),
                None => CookieHeader::Remove,
            }
        }),
    }
}

/// `place`, plus where the API key `key` (if any) came: a key never goes upstream, whichever
/// credential was judged.
fn with_key<'r>(
    mut place: CredentialPlace<'r>,
    key: Option<&PresentedKey<'r>>,
) -> CredentialPlace<'r> {
    if let Some(key) = key {
        place.api_key_header = key.header;
        place.api_key_parameter = key.query;
    }
    place
}

/// The top-level claim names a claim path may start at: the whole path and each prefix ending
/// before a `.` (`a.b.c` → `a.b.c`, `a.b`, `a`), as [`crate::identity::claim`] resolves it.
fn claim_roots(path: &str) -> impl Iterator<Item = &str> {
    std::iter::once(path).chain(path.match_indices('.').filter_map(|(at, _)| path.get(..at)))
}

fn claim_rules(issuer: &IssuerConfig) -> ClaimRules {
    let seconds = |d: std::time::Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    ClaimRules {
        audience: match &issuer.skip_audience_check {
            Some(reason) => AudienceRule::Skip {
                reason: reason.clone(),
            },
            None => AudienceRule::AnyOf {
                claim: issuer.audience_claim.clone(),
                values: issuer.audiences.clone(),
            },
        },
        clock_skew: seconds(issuer.clock_skew.get()),
        max_lifetime: seconds(issuer.max_lifetime.get()),
        required: issuer
            .required_claims
            .iter()
            .map(|(name, values)| (name.clone(), values.values().to_vec()))
            .collect(),
        token_types: token_types(issuer),
        subject: match issuer.profile {
            // Cloudflare Access service tokens have an empty `sub`; `common_name` names the
            // service token (developers.cloudflare.com, Access "application token").
            ProfileName::CloudflareAccess => SubjectRule::SubOrCommonName,
            _ => SubjectRule::Sub,
        },
    }
}

/// The `typ` values an issuer accepts: its `token_types` exactly, else those of an access
/// token, widened only by what the profile's provider documents for its own tokens.
fn token_types(issuer: &IssuerConfig) -> TokenTypes {
    if !issuer.token_types.is_empty() {
        return TokenTypes::exactly(&issuer.token_types);
    }
    match issuer.profile {
        // SPIFFE JWT-SVID standard, "JOSE Header": `typ`, if set, is `JWT` or `JOSE`.
        ProfileName::Spiffe => TokenTypes::access_token_or(&["JOSE"]),
        _ => TokenTypes::access_token(),
    }
}

/// One configuration, running: the config itself, its key sources and its pipeline.
#[derive(Debug)]
pub struct Generation {
    /// The configuration.
    pub config: Config,
    /// Its running key sources (fetch tasks stop when the generation is dropped, unless a
    /// newer generation took them over).
    pub keys: KeySources,
    /// The compiled pipeline.
    pub pipeline: Pipeline,
}

impl Generation {
    /// Prepares key sources (reporting problems with field paths), starts them (keeping the
    /// running remote sources of `previous` whose configuration did not change) and compiles
    /// the pipeline. Must run inside a tokio runtime when an issuer uses `jwks_uri`.
    pub fn build(
        config: Config,
        previous: Option<&Generation>,
        keys_changed: &Arc<Notify>,
    ) -> Result<Self, Vec<FieldError>> {
        let prepared = source::prepare(&config)?;
        // Decryption and signing keys load before key sources start, so a bad one refuses
        // the whole configuration without side effects.
        let decrypter = config
            .decryption
            .as_ref()
            .map(Decrypter::load)
            .transpose()?;
        let mint_stats =
            previous.map_or_else(MintStats::default, |g| g.pipeline.mint_stats().clone());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let minter = Minter::build(
            &config,
            previous.and_then(|g| g.pipeline.minter()),
            mint_stats.clone(),
            now,
        )?
        .map(|built| {
            for warning in &built.warnings {
                tracing::warn!(field = %warning.path, problem = %warning.message,
                    "minting key warning");
            }
            built.minter
        });
        let api_key_stats =
            previous.map_or_else(Default::default, |g| g.pipeline.api_keys().stats());
        let api_keys = ApiKeys::load(&config, api_key_stats)?;
        let keys = KeySources::start(prepared, previous.map(|g| &g.keys), keys_changed);
        let cache_stats =
            previous.map_or_else(Arc::default, |g| Arc::clone(g.pipeline.cache_stats()));
        let pipeline = Pipeline::with_cache_stats(&config, &keys, cache_stats)
            .decrypting_with(decrypter)
            .minting_with(minter, mint_stats)
            .with_api_keys(api_keys);
        Ok(Self {
            config,
            keys,
            pipeline,
        })
    }

    /// Ready when every issuer has keys.
    pub fn is_ready(&self) -> bool {
        self.keys.missing().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_token_that_cannot_be_minted_denies_the_check_with_a_503() {
        use base64::Engine as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let pair = josekit::jws::ES256.generate_key_pair().unwrap();
        let signer = josekit::jws::ES256
            .signer_from_jwk(&josekit::jwk::KeyPair::to_jwk_private_key(&pair))
            .unwrap();
        let mut jwk = josekit::jwk::KeyPair::to_jwk_public_key(&pair);
        jwk.set_key_id("k1");
        let dir = tempfile::tempdir().unwrap();
        let group =
            openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap();
        let key = openssl::pkey::PKey::from_ec_key(openssl::ec::EcKey::generate(&group).unwrap())
            .unwrap();
        std::fs::write(
            dir.path().join("m.pem"),
            key.private_key_to_pem_pkcs8().unwrap(),
        )
        .unwrap();
        let yaml = format!(
            "issuers:\n  - {{id: idp, issuer: 'https://idp.example.com/', audiences: [api], keys: {{jwks: {{keys: [{}]}}}}}}\nmint:\n  issuer: https://fedauthz.internal\n  audience: orders\n  keys: [{{file: '{}', state: current, initial: true}}]\n",
            serde_json::Value::Object(jwk.as_ref().clone()),
            dir.path().join("m.pem").display()
        );
        let config = crate::config::parse_yaml(&yaml, "t.yaml").unwrap();
        let mut generation = Generation::build(config, None, &Arc::new(Notify::new())).unwrap();
        /// A key whose module has gone away.
        #[derive(Debug)]
        struct Gone(serde_json::Map<String, serde_json::Value>);
        impl crate::response::mint::Signer for Gone {
            fn algorithm(&self) -> crate::response::mint::SigningAlgorithm {
                crate::response::mint::SigningAlgorithm::Es256
            }
            fn public_jwk(&self) -> &serde_json::Map<String, serde_json::Value> {
                &self.0
            }
            fn kid(&self) -> &str {
                "gone"
            }
            fn backend(&self) -> &'static str {
                "pkcs11"
            }
            fn sign(&self, _: &[u8]) -> Result<Vec<u8>, crate::response::mint::SignError> {
                Err(crate::response::mint::SignError::Sign(
                    "token removed".into(),
                ))
            }
        }
        generation
            .pipeline
            .minter
            .as_mut()
            .unwrap()
            .sign_with(Arc::new(Gone(serde_json::Map::new())));
        let now = crate::service::unix_now();
        let claims = serde_json::json!({"iss": "https://idp.example.com/", "sub": "alice",
            "aud": "api", "iat": now, "exp": now + 300});
        let input = format!(
            "{}.{}",
            b64(br#"{"alg":"ES256","kid":"k1","typ":"JWT"}"#),
            b64(claims.to_string().as_bytes())
        );
        let signature = josekit::jws::JwsSigner::sign(&signer, input.as_bytes()).unwrap();
        let token = format!("{input}.{}", b64(&signature));
        let mut headers = std::collections::HashMap::new();
        headers.insert("authorization".to_owned(), format!("Bearer {token}"));
        struct Map(std::collections::HashMap<String, String>);
        impl HeaderLookup for Map {
            fn header(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
                self.0
                    .get(name)
                    .map(|v| std::borrow::Cow::Borrowed(v.as_str()))
            }
        }
        let mut checked = generation
            .pipeline
            .check(&Map(headers), &RequestFacts::default(), now);
        assert!(matches!(checked.decision, Decision::Allow(Some(_))));
        generation.pipeline.mint(&mut checked, now).await;
        let Decision::Deny(rejection) = &checked.decision else {
            panic!("an allow without its minted token: {:?}", checked.decision)
        };
        assert_eq!(rejection.reason, Reason::MintFailed);
        assert!(rejection.detail.contains("token removed"));
        let Some(crate::proto::auth::check_response::HttpResponse::DeniedResponse(denied)) =
            &checked.response.http_response
        else {
            panic!("not a denial")
        };
        assert_eq!(denied.status.map(|s| s.code), Some(503));
        assert!(checked.minted.is_none());
    }

    #[test]
    fn a_claim_path_may_start_at_any_dot() {
        assert_eq!(claim_roots("a").collect::<Vec<_>>(), ["a"]);
        assert_eq!(
            claim_roots("a.b.c").collect::<Vec<_>>(),
            ["a.b.c", "a", "a.b"]
        );
        assert_eq!(
            claim_roots("https://example.com/roles").collect::<Vec<_>>(),
            ["https://example.com/roles", "https://example"]
        );
    }
}
