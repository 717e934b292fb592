//! Verified-token cache: skips signature verification and claim validation for a token this
//! configuration has already verified, while every answer stays what a fresh verification
//! would give.
//!
//! The key is the SHA-256 of the token bytes; the value is the [`VerifiedToken`] (shared, so a
//! hit copies a pointer). One cache belongs to one compiled configuration
//! ([`crate::pipeline::Pipeline`]), so a reload starts empty. An entry is served only while
//! - `now` is before the token's `exp` and within `max_ttl` of when it was cached;
//! - its issuer's current key set still holds the key that verified it (the same set, or an
//!   identical key under the same `kid`): a key rotated out, changed, or dropped as stale
//!   makes the entry a miss, and the fresh verification decides;
//! - the token arrived in a location its issuer accepts (checked per request, as verification
//!   does).
//!
//! Only successes are stored; a failed verification is never cached. Authorization is not
//! cached: routes run for every request. The cache is bounded by entry count: when a shard is
//! full, entries past their end go first (swept at most once a second per shard), then one
//! entry from a small sample, the one ending soonest.
//!
//! Depends on [`crate::verify`] (what it stores), [`crate::keys`] (the key check on a hit) and
//! [`crate::extract`] (location sets).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use super::VerifiedToken;
use crate::extract::LocationSet;

/// SHA-256 of a token's bytes: the cache key.
pub type TokenDigest = [u8; 32];

/// The cache key of `token`.
pub fn digest(token: &str) -> TokenDigest {
    // The streaming hasher runs SHA-256 directly; OpenSSL 3's one-shot `SHA256()` looks the
    // digest up in its provider registry on every call, which costs a third of the hash.
    let mut hasher = openssl::sha::Sha256::new();
    hasher.update(token.as_bytes());
    hasher.finish()
}

/// At most this many shards (each a lock and a map).
const MAX_SHARDS: usize = 16;
/// Shards are only split off once each can hold at least this many entries.
const MIN_SHARD_ENTRIES: usize = 1024;
/// How many entries a full shard looks at to pick one to evict.
const EVICTION_SAMPLE: usize = 8;

/// Hit and miss counters, shared by the caches of successive configurations so that the
/// exported counters never go backwards on a reload.
#[derive(Debug, Default)]
pub struct CacheStats {
    hits: AtomicU64,
    misses: AtomicU64,
}

impl CacheStats {
    /// Lookups answered from the cache.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Lookups that had to verify.
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
struct Entry {
    token: Arc<VerifiedToken>,
    /// When it was cached (a clock that went backwards past this makes it a miss).
    cached_at: i64,
    /// First second it is no longer served: min(exp, cached_at + max_ttl).
    ends_at: i64,
}

#[derive(Debug, Default)]
struct Shard {
    map: RwLock<HashMap<TokenDigest, Entry>>,
    /// Second of the last sweep for ended entries.
    last_sweep: AtomicI64,
}

impl Shard {
    fn read(&self) -> RwLockReadGuard<'_, HashMap<TokenDigest, Entry>> {
        self.map.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<TokenDigest, Entry>> {
        self.map.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The verified tokens of one configuration.
#[derive(Debug)]
pub struct TokenCache {
    shards: Box<[Shard]>,
    per_shard: usize,
    max_ttl: i64,
    stats: Arc<CacheStats>,
}

impl TokenCache {
    /// A cache of at most `max_entries` tokens, each kept at most `max_ttl`, counting into
    /// `stats`. `None` when `max_entries` is 0 (caching disabled).
    pub fn new(max_entries: usize, max_ttl: Duration, stats: Arc<CacheStats>) -> Option<Self> {
        if max_entries == 0 {
            return None;
        }
        // A power of two, each shard holding ≥ MIN_SHARD_ENTRIES; shards × per_shard never
        // exceeds max_entries.
        let shards = (max_entries / MIN_SHARD_ENTRIES)
            .clamp(1, MAX_SHARDS)
            .next_power_of_two()
            .min(MAX_SHARDS);
        Some(Self {
            shards: (0..shards).map(|_| Shard::default()).collect(),
            per_shard: max_entries / shards,
            max_ttl: i64::try_from(max_ttl.as_secs()).unwrap_or(i64::MAX),
            stats,
        })
    }

    fn shard(&self, digest: &TokenDigest) -> &Shard {
        // The digest is uniform: its first byte spreads tokens over the shards. `shards.len()`
        // is a power of two ≤ 16, so the modulo keeps every index in range.
        let index = usize::from(digest[0]) % self.shards.len();
        &self.shards[index]
    }

    /// The cached verification of the token with `digest`, if it may be served at `now` for a
    /// token found in `locations`. Counts a hit or a miss.
    pub fn get(
        &self,
        digest: &TokenDigest,
        locations: LocationSet,
        now: i64,
    ) -> Option<Arc<VerifiedToken>> {
        let found = self.lookup(digest, locations, now);
        let counter = if found.is_some() {
            &self.stats.hits
        } else {
            &self.stats.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    fn lookup(
        &self,
        digest: &TokenDigest,
        locations: LocationSet,
        now: i64,
    ) -> Option<Arc<VerifiedToken>> {
        let shard = self.shard(digest);
        let (token, in_time) = {
            let map = shard.read();
            let entry = map.get(digest)?;
            let in_time = entry.cached_at <= now && now < entry.ends_at;
            (Arc::clone(&entry.token), in_time)
        };
        // Only signed tokens are cached; anything else would not be trusted from here.
        let still_trusted = match &token.proof {
            super::Proof::Signature(key) => key.still_trusted(token.issuer.keys.load().as_deref()),
            super::Proof::ApiKey(_) => false,
        };
        if !in_time || !still_trusted {
            // Gone for good: drop it (unless a fresh verification replaced it meanwhile).
            let mut map = shard.write();
            if map
                .get(digest)
                .is_some_and(|entry| Arc::ptr_eq(&entry.token, &token))
            {
                map.remove(digest);
            }
            return None;
        }
        // Verification refuses a token sent where its issuer does not accept it; so does the
        // cache, by leaving it to verification.
        token
            .issuer
            .locations
            .intersects(locations)
            .then_some(token)
    }

    /// Remembers `token` (just verified at `now`) under `digest`, until its `exp` or `max_ttl`
    /// from now, whichever comes first.
    pub fn insert(&self, digest: TokenDigest, token: Arc<VerifiedToken>, now: i64) {
        let ends_at = token.expires_at.min(now.saturating_add(self.max_ttl));
        if ends_at <= now {
            return;
        }
        let shard = self.shard(&digest);
        let mut map = shard.write();
        if map.len() >= self.per_shard && !map.contains_key(&digest) {
            self.make_room(shard, &mut map, now);
        }
        map.insert(
            digest,
            Entry {
                token,
                cached_at: now,
                ends_at,
            },
        );
    }

    fn make_room(&self, shard: &Shard, map: &mut HashMap<TokenDigest, Entry>, now: i64) {
        // A sweep walks the whole shard: at most once a second.
        if shard.last_sweep.swap(now, Ordering::Relaxed) != now {
            map.retain(|_, entry| now < entry.ends_at);
        }
        while map.len() >= self.per_shard {
            // Map order follows the (random) hash of the digest: a random sample.
            let victim = map
                .iter()
                .take(EVICTION_SAMPLE)
                .min_by_key(|(_, entry)| entry.ends_at)
                .map(|(digest, _)| *digest);
            match victim {
                Some(victim) => map.remove(&victim),
                None => break,
            };
        }
    }

    /// Entries held now (including ended ones not yet dropped).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.read().len()).sum()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The hit and miss counters.
    pub fn stats(&self) -> &Arc<CacheStats> {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use josekit::jwk::KeyPair as _;
    use josekit::jws::JwsSigner as _;
    use serde_json::{Value, json};
    use tokio::sync::Notify;

    use super::*;
    use crate::authz::{Decision, RequestFacts};
    use crate::extract::HeaderLookup;
    use crate::keys::{AlgorithmPolicy, KeySet};
    use crate::pipeline::{Checked, Generation, Pipeline};
    use crate::reason::Reason;

    const ISS: &str = "https://idp.example";
    const NOW: i64 = 1_800_000_000;

    /// An ES256 key pair with its public JWK (kid `kid`).
    struct Signer {
        signer: josekit::jws::alg::ecdsa::EcdsaJwsSigner,
        jwk: Value,
        kid: String,
    }

    impl Signer {
        fn new(kid: &str) -> Self {
            let pair = josekit::jws::ES256.generate_key_pair().unwrap();
            let signer = josekit::jws::ES256
                .signer_from_jwk(&pair.to_jwk_private_key())
                .unwrap();
            let mut jwk = Value::Object(pair.to_jwk_public_key().as_ref().clone());
            jwk["kid"] = json!(kid);
            jwk["alg"] = json!("ES256");
            Self {
                signer,
                jwk,
                kid: kid.into(),
            }
        }

        fn jwks(&self) -> Value {
            json!({ "keys": [self.jwk] })
        }

        /// A token for `sub` with `scope`, issued at NOW, expiring at `exp`.
        fn token(&self, sub: &str, scope: &str, exp: i64) -> String {
            let header = json!({"alg": "ES256", "kid": self.kid, "typ": "JWT"});
            let claims = json!({
                "iss": ISS, "sub": sub, "aud": "api", "scope": scope,
                "iat": NOW, "nbf": NOW, "exp": exp,
            });
            let input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            );
            let signature = self.signer.sign(input.as_bytes()).unwrap();
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
        }
    }

    struct Bearer(String);

    impl HeaderLookup for Bearer {
        fn header(&self, name: &str) -> Option<Cow<'_, str>> {
            (name == "authorization").then(|| Cow::Owned(format!("Bearer {}", self.0)))
        }
    }

    const ROUTES: &str = "
routes:
  - name: read
    match: { paths: [/read] }
    require: { scopes: [read] }
  - name: write
    match: { paths: [/write] }
    require: { scopes: [write] }
";

    fn generation(signer: &Signer, extra: &str, previous: Option<&Generation>) -> Generation {
        let yaml = format!(
            "issuers:\n  - {{id: idp, issuer: '{ISS}', audiences: [api], max_lifetime: 24h, keys: {{jwks: {}}}}}\n{extra}",
            signer.jwks()
        );
        let config = crate::config::parse_yaml(&yaml, "test.yaml").unwrap();
        Generation::build(config, previous, &Arc::new(Notify::new())).unwrap()
    }

    fn check(pipeline: &Pipeline, token: &str, path: &str, now: i64) -> Checked {
        let facts = RequestFacts {
            path,
            ..RequestFacts::default()
        };
        pipeline.check(&Bearer(token.to_owned()), &facts, now)
    }

    fn reason(checked: &Checked) -> Option<Reason> {
        match &checked.decision {
            Decision::Allow(_) => None,
            Decision::Deny(rejection) => Some(rejection.reason),
        }
    }

    fn counts(pipeline: &Pipeline) -> (u64, u64, usize) {
        let stats = pipeline.cache_stats();
        let len = pipeline.token_cache().map_or(0, TokenCache::len);
        (stats.hits(), stats.misses(), len)
    }

    fn allowed(checked: &Checked) -> Arc<VerifiedToken> {
        match &checked.decision {
            Decision::Allow(Some(token)) => Arc::clone(token),
            other => panic!("expected an allowed token, got {other:?}"),
        }
    }

    #[test]
    fn a_repeated_token_is_a_hit_sharing_the_first_verification() {
        let signer = Signer::new("k1");
        let generation = generation(&signer, "", None);
        let pipeline = &generation.pipeline;
        let token = signer.token("alice", "read", NOW + 600);
        let first = check(pipeline, &token, "/", NOW);
        assert_eq!(counts(pipeline), (0, 1, 1));
        let second = check(pipeline, &token, "/", NOW + 1);
        assert_eq!(counts(pipeline), (1, 1, 1));
        assert!(Arc::ptr_eq(&allowed(&first), &allowed(&second)));
        // Another token is a miss of its own.
        check(pipeline, &signer.token("bob", "read", NOW + 600), "/", NOW);
        assert_eq!(counts(pipeline), (1, 2, 2));
    }

    #[test]
    fn only_the_claims_rules_and_templates_read_are_kept() {
        let signer = Signer::new("k1");
        let extra = "
response:
  headers: { x-tier: '{claims.org.tier}' }
routes:
  - name: read
    match: { paths: [/read] }
    require: { scopes: [read], claims: [{ path: 'https://example.com/team', equals: blue }] }
  - name: audience
    match: { paths: [/aud] }
    require: { audiences: [api] }
";
        let generation = generation(&signer, extra, None);
        let header = json!({"alg": "ES256", "kid": "k1"});
        let claims = json!({
            "iss": ISS, "sub": "alice", "aud": "api", "scope": "read", "iat": NOW, "exp": NOW + 600,
            "https://example.com/team": "blue", "org": {"tier": "gold"}, "unrelated": "x".repeat(500),
        });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let token = format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(signer.signer.sign(input.as_bytes()).unwrap())
        );
        for _ in 0..2 {
            let checked = check(&generation.pipeline, &token, "/read", NOW);
            let kept = allowed(&checked);
            let mut names: Vec<&str> = kept.claims.keys().map(String::as_str).collect();
            names.sort_unstable();
            assert_eq!(names, ["aud", "https://example.com/team", "org"]);
            assert_eq!(
                kept.identity.scopes,
                ["read"],
                "the identity saw every claim"
            );
        }
        assert_eq!(counts(&generation.pipeline), (1, 1, 1));
    }

    #[test]
    fn an_entry_is_never_served_at_or_after_exp() {
        let signer = Signer::new("k1");
        let generation = generation(&signer, "", None);
        let pipeline = &generation.pipeline;
        let exp = NOW + 100;
        let token = signer.token("alice", "read", exp);
        check(pipeline, &token, "/", NOW);
        check(pipeline, &token, "/", exp - 1);
        assert_eq!(counts(pipeline), (1, 1, 1));
        // At exp: not from the cache (verification, with its clock skew, decides).
        check(pipeline, &token, "/", exp);
        assert_eq!(counts(pipeline).0, 1, "no hit at exp");
        check(pipeline, &token, "/", exp + 30);
        assert_eq!(counts(pipeline).0, 1, "no hit after exp");
        // Past exp + skew the fresh verification denies, and nothing is cached.
        let late = check(pipeline, &token, "/", exp + 61);
        assert_eq!(reason(&late), Some(Reason::TokenExpired));
        assert_eq!(counts(pipeline).0, 1);
    }

    #[test]
    fn max_ttl_bounds_an_entry_before_exp() {
        let signer = Signer::new("k1");
        let generation = generation(&signer, "token_cache: {max_ttl: 10s}", None);
        let pipeline = &generation.pipeline;
        let token = signer.token("alice", "read", NOW + 3600);
        check(pipeline, &token, "/", NOW);
        check(pipeline, &token, "/", NOW + 9);
        assert_eq!(counts(pipeline), (1, 1, 1));
        // Re-verified at NOW + 10, and cached again from then on.
        check(pipeline, &token, "/", NOW + 10);
        assert_eq!(counts(pipeline), (1, 2, 1));
        check(pipeline, &token, "/", NOW + 11);
        assert_eq!(counts(pipeline), (2, 2, 1));
    }

    #[test]
    fn a_clock_that_went_back_is_a_miss() {
        let signer = Signer::new("k1");
        let generation = generation(&signer, "", None);
        let pipeline = &generation.pipeline;
        let token = signer.token("alice", "read", NOW + 600);
        check(pipeline, &token, "/", NOW + 5);
        check(pipeline, &token, "/", NOW + 4);
        assert_eq!(counts(pipeline).0, 0);
    }

    #[test]
    fn the_cache_is_bounded_by_entry_count() {
        let signer = Signer::new("k1");
        let generation = generation(&signer, "token_cache: {max_entries: 3}", None);
        let pipeline = &generation.pipeline;
        let tokens: Vec<String> = (0..10)
            .map(|i| signer.token(&format!("user{i}"), "read", NOW + 600 + i))
            .collect();
        for token in &tokens {
            assert_eq!(reason(&check(pipeline, token, "/", NOW)), None);
            assert!(counts(pipeline).2 <= 3);
        }
        assert_eq!(counts(pipeline).2, 3);
        // The newest token was kept.
        let hits = counts(pipeline).0;
        check(pipeline, &tokens[9], "/", NOW);
        assert_eq!(counts(pipeline).0, hits + 1);
    }

    #[test]
    fn ended_entries_are_evicted_first() {
        let stats = Arc::new(CacheStats::default());
        let cache = TokenCache::new(2, Duration::from_secs(300), stats).unwrap();
        let signer = Signer::new("k1");
        let generation = generation(&signer, "", None);
        let verify = |sub: &str, exp: i64| {
            let token = signer.token(sub, "read", exp);
            let verified = generation
                .pipeline
                .issuers()
                .verify(&token, LocationSet::single(0), NOW)
                .unwrap();
            (digest(&token), Arc::new(verified))
        };
        let (short, short_token) = verify("short", NOW + 5);
        let (long, long_token) = verify("long", NOW + 500);
        let (new, new_token) = verify("new", NOW + 500);
        cache.insert(short, short_token, NOW);
        cache.insert(long, long_token, NOW);
        cache.insert(new, new_token, NOW + 10);
        let at = LocationSet::single(0);
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&long, at, NOW + 10).is_some());
        assert!(cache.get(&new, at, NOW + 10).is_some());
        assert!(cache.get(&short, at, NOW + 1).is_none());
    }

    #[test]
    fn a_key_rotated_out_denies_the_cached_token() {
        let signer = Signer::new("k1");
        let generation = generation(&signer, "", None);
        let pipeline = &generation.pipeline;
        let token = signer.token("alice", "read", NOW + 600);
        assert_eq!(reason(&check(pipeline, &token, "/", NOW)), None);
        assert_eq!(reason(&check(pipeline, &token, "/", NOW)), None);
        assert_eq!(counts(pipeline), (1, 1, 1));

        let store = &pipeline.issuers().issuers()[0].keys;
        let policy = AlgorithmPolicy::default();
        // The same key, loaded again (a routine refresh): still a hit.
        store.replace(KeySet::from_jwks(&signer.jwks(), &policy, []).unwrap());
        assert_eq!(reason(&check(pipeline, &token, "/", NOW)), None);
        assert_eq!(counts(pipeline), (2, 1, 1));

        // k1 rotated out: the cached token is denied, and its entry dropped.
        let next = Signer::new("k2");
        store.replace(KeySet::from_jwks(&next.jwks(), &policy, []).unwrap());
        let denied = check(pipeline, &token, "/", NOW);
        assert_eq!(reason(&denied), Some(Reason::KeyUnknown));
        assert_eq!(counts(pipeline), (2, 2, 0));

        // A different key under the old kid does not stand in for it either.
        let impostor = Signer::new("k1");
        store.replace(KeySet::from_jwks(&impostor.jwks(), &policy, []).unwrap());
        assert_eq!(
            reason(&check(pipeline, &token, "/", NOW)),
            Some(Reason::SignatureInvalid)
        );
    }

    #[test]
    fn dropped_keys_deny_the_cached_token() {
        let signer = Signer::new("k1");
        let generation = generation(&signer, "", None);
        let pipeline = &generation.pipeline;
        let token = signer.token("alice", "read", NOW + 600);
        check(pipeline, &token, "/", NOW);
        pipeline.issuers().issuers()[0].keys.clear();
        assert_eq!(
            reason(&check(pipeline, &token, "/", NOW)),
            Some(Reason::KeysUnavailable)
        );
    }

    #[test]
    fn a_reload_starts_with_an_empty_cache_and_keeps_the_counters() {
        let signer = Signer::new("k1");
        let old = generation(&signer, "", None);
        let token = signer.token("alice", "read", NOW + 600);
        check(&old.pipeline, &token, "/", NOW);
        check(&old.pipeline, &token, "/", NOW);
        assert_eq!(counts(&old.pipeline), (1, 1, 1));
        let new = generation(&signer, "", Some(&old));
        assert_eq!(counts(&new.pipeline), (1, 1, 0));
        check(&new.pipeline, &token, "/", NOW);
        assert_eq!(counts(&new.pipeline), (1, 2, 1), "a miss after the reload");
        // A reload that changes the issuer's rules decides afresh.
        let strict = {
            let yaml = format!(
                "issuers:\n  - {{id: idp, issuer: '{ISS}', audiences: [other], keys: {{jwks: {}}}}}\n",
                signer.jwks()
            );
            let config = crate::config::parse_yaml(&yaml, "test.yaml").unwrap();
            Generation::build(config, Some(&new), &Arc::new(Notify::new())).unwrap()
        };
        assert_eq!(
            reason(&check(&strict.pipeline, &token, "/", NOW)),
            Some(Reason::AudienceMismatch)
        );
    }

    #[test]
    fn failed_verifications_are_not_cached() {
        let signer = Signer::new("k1");
        let generation = generation(&signer, "", None);
        let pipeline = &generation.pipeline;
        let token = signer.token("alice", "read", NOW + 600);
        let (body, _) = token.rsplit_once('.').unwrap();
        let forged = format!("{body}.{}", URL_SAFE_NO_PAD.encode([0_u8; 64]));
        for _ in 0..2 {
            assert_eq!(
                reason(&check(pipeline, &forged, "/", NOW)),
                Some(Reason::SignatureInvalid)
            );
        }
        assert_eq!(counts(pipeline), (0, 2, 0));
        // Not yet valid: refused, and not remembered for later either.
        let early = signer.token("bob", "read", NOW + 600);
        assert_eq!(
            reason(&check(pipeline, &early, "/", NOW - 3600)),
            Some(Reason::TokenNotYetValid)
        );
        assert_eq!(counts(pipeline).2, 0);
    }

    #[test]
    fn the_same_token_on_two_routes_still_runs_each_routes_rules() {
        let signer = Signer::new("k1");
        let generation = generation(&signer, ROUTES, None);
        let pipeline = &generation.pipeline;
        let token = signer.token("alice", "read", NOW + 600);
        let read = check(pipeline, &token, "/read", NOW);
        assert_eq!(reason(&read), None);
        assert_eq!(read.route.as_deref(), Some("read"));
        let write = check(pipeline, &token, "/write", NOW);
        assert_eq!(reason(&write), Some(Reason::RequirementNotMet));
        assert_eq!(write.route.as_deref(), Some("write"));
        let other = check(pipeline, &token, "/elsewhere", NOW);
        assert_eq!(reason(&other), Some(Reason::NoRouteMatched));
        assert_eq!(
            counts(pipeline),
            (2, 1, 1),
            "verified once, decided three times"
        );
    }

    #[test]
    fn a_token_sent_where_its_issuer_does_not_accept_it_is_left_to_verification() {
        let signer = Signer::new("k1");
        let generation = generation(&signer, "", None);
        let token = signer.token("alice", "read", NOW + 600);
        check(&generation.pipeline, &token, "/", NOW);
        let cache = generation.pipeline.token_cache().unwrap();
        let elsewhere = LocationSet::single(5);
        assert!(cache.get(&digest(&token), elsewhere, NOW).is_none());
        assert!(
            cache
                .get(&digest(&token), LocationSet::single(0), NOW)
                .is_some()
        );
    }

    #[test]
    fn max_entries_zero_disables_the_cache() {
        let signer = Signer::new("k1");
        let generation = generation(&signer, "token_cache: {max_entries: 0}", None);
        let pipeline = &generation.pipeline;
        assert!(pipeline.token_cache().is_none());
        let token = signer.token("alice", "read", NOW + 600);
        assert_eq!(reason(&check(pipeline, &token, "/", NOW)), None);
        assert_eq!(reason(&check(pipeline, &token, "/", NOW)), None);
        assert_eq!(counts(pipeline), (0, 0, 0));
    }

    #[test]
    fn the_digest_is_sha256_of_the_token_bytes() {
        assert_eq!(digest("abc"), openssl::sha::sha256(b"abc"));
        assert_ne!(digest("abc"), digest("abd"));
    }

    #[test]
    fn shards_never_hold_more_than_max_entries() {
        for max in [1, 2, 1023, 1024, 3000, 5000, 100_000, 10_000_000] {
            let cache = TokenCache::new(max, Duration::from_secs(1), Arc::default()).unwrap();
            assert!(cache.shards.len().is_power_of_two());
            assert!(cache.shards.len() <= MAX_SHARDS);
            assert!(cache.shards.len() * cache.per_shard <= max, "{max}");
            assert!(cache.per_shard >= 1);
        }
        assert!(TokenCache::new(0, Duration::from_secs(1), Arc::default()).is_none());
    }
}
