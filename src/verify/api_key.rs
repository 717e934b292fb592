//! API keys, the second credential kind beside signed (and encrypted) tokens.
//!
//! A key is `<prefix><key id>_<secret>`. The prefix names its set and the key id its entry,
//! neither of them secret, so a lookup finds at most one candidate without touching the secret;
//! then the whole key is hashed (SHA-256, or HMAC-SHA-256 under the set's secret) and the
//! fixed-size digest is compared with the one stored digest in constant time
//! ([`digests_match`]). Only digests are ever held: a key is never stored, cached or logged.
//! A matching key's identity is built once, at load, as a [`VerifiedToken`] of the set (the
//! set is its issuer), so routes, header templates, metadata, minting and the decision log
//! treat it as they treat a token's.
//!
//! Depends on [`crate::config`] (the schema), [`crate::extract`] (header lookup),
//! [`crate::identity`], [`super`] (the verified-credential types) and [`crate::reason`].

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::sync::Notify;

use super::{
    AudienceRule, ClaimRules, Issuer, Proof, SubjectRule, Tenancy, TokenTypes, VerifiedToken,
};
use crate::config::{
    ApiKeyEntry, ApiKeyFile, ApiKeyLocation, ApiKeySetConfig, Config, FieldError, KeyHash,
    MAX_KEY_BYTES, check_api_key_entry, is_key_id,
};
use crate::extract::{HeaderLookup, LocationSet, starts_with_ignore_case};
use crate::identity::{Groups, Identity, Profile};
use crate::keys::KeyStore;
use crate::reason::{Reason, Rejection};

/// A SHA-256 or HMAC-SHA-256 digest.
pub type Digest = [u8; 32];

/// Largest key file read.
const MAX_KEY_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Shortest HMAC secret accepted.
const MIN_HMAC_SECRET_BYTES: usize = 32;

/// Whether two digests are equal, in time that does not depend on where they differ
/// (OpenSSL's `CRYPTO_memcmp` over the full, fixed length).
pub fn digests_match(presented: &Digest, stored: &Digest) -> bool {
    openssl::memcmp::eq(presented, stored)
}

/// How one set turns a key into its digest.
#[derive(Debug, Clone)]
enum Hasher {
    Sha256,
    Hmac(openssl::pkey::PKey<openssl::pkey::Private>),
}

impl Hasher {
    fn digest(&self, key: &str) -> Option<Digest> {
        match self {
            Self::Sha256 => Some(openssl::sha::sha256(key.as_bytes())),
            Self::Hmac(secret) => {
                let mut signer =
                    openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), secret)
                        .ok()?;
                signer.update(key.as_bytes()).ok()?;
                signer.sign_to_vec().ok()?.try_into().ok()
            }
        }
    }
}

/// What a matching key grants, and when.
#[derive(Debug)]
struct Entry {
    digest: Digest,
    not_before: Option<i64>,
    expires: Option<i64>,
    revoked: bool,
    /// 16 hex digits naming the key in logs (its grant's `id_hash`).
    id_hash: Arc<str>,
    /// The identity, built at load (shared by every check with this key).
    token: Arc<VerifiedToken>,
}

/// One configured set.
#[derive(Debug)]
struct KeySet {
    id: Arc<str>,
    prefix: String,
    hasher: Hasher,
    /// Which of [`ApiKeys::locations`] this set reads.
    locations: LocationSet,
    entries: HashMap<String, Entry>,
    /// The set's check counters, resolved at load.
    counters: SetCounters,
}

/// Where a key may arrive.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Location {
    Header {
        name: String,
        /// `ApiKey ` (with the space), matched case-insensitively.
        scheme: Option<String>,
    },
    Query {
        name: String,
    },
}

/// A key found in a request: its text and where it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentedKey<'r> {
    /// The key, exactly as sent (after the scheme).
    pub text: Cow<'r, str>,
    /// Index of the location it came from.
    location: usize,
    /// The header it came in (removed before the request goes upstream).
    pub header: Option<&'r str>,
    /// The query parameter it came in (likewise).
    pub query: Option<&'r str>,
}

/// What a key that matched grants on top of its identity: the route restriction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyGrant {
    /// The key's id (not secret; logs show [`ApiKeyGrant::id_hash`] instead).
    pub key_id: Arc<str>,
    /// 16 hex digits of SHA-256 over the set id and key id, for logs and metadata.
    pub id_hash: Arc<str>,
    /// Route names the key may be used on (`None`: any).
    pub routes: Option<Arc<[Arc<str>]>>,
}

impl ApiKeyGrant {
    /// Whether the key may be used on `route` (`None`: no route matched).
    pub fn allows(&self, route: Option<&str>) -> bool {
        match (&self.routes, route) {
            (None, _) => true,
            (Some(routes), Some(route)) => routes.iter().any(|r| &**r == route),
            (Some(_), None) => false,
        }
    }
}

/// The API key sets of one configuration.
#[derive(Debug, Default)]
pub struct ApiKeys {
    sets: Vec<KeySet>,
    locations: Vec<Location>,
    stats: ApiKeyStats,
    /// Counts keys no set's prefix names (`key_set=""`).
    unmatched: Counter,
}

impl ApiKeys {
    /// Compiles `config.api_keys` (already validated), reading every key file and HMAC secret;
    /// a file that does not read or parse, or an entry in it that breaks a rule, is reported
    /// with its path and the configuration is refused.
    pub fn load(config: &Config, stats: ApiKeyStats) -> Result<Self, Vec<FieldError>> {
        let routes = config.route_names();
        let mut errors = Vec::new();
        let unmatched = if config.api_keys.is_empty() {
            Counter::default()
        } else {
            stats.counters(None).unknown
        };
        let mut keys = Self {
            stats,
            unmatched,
            ..Self::default()
        };
        for (s, set) in config.api_keys.iter().enumerate() {
            let at = format!("api_keys[{s}]");
            match keys.compile_set(set, &at, &routes) {
                Ok(compiled) => keys.sets.push(compiled),
                Err(mut problems) => errors.append(&mut problems),
            }
        }
        if errors.is_empty() {
            Ok(keys)
        } else {
            Err(errors)
        }
    }

    fn compile_set(
        &mut self,
        set: &ApiKeySetConfig,
        at: &str,
        routes: &HashSet<&str>,
    ) -> Result<KeySet, Vec<FieldError>> {
        let mut errors = Vec::new();
        let hasher = load_hasher(set, at)
            .map_err(|problem| errors.push(problem))
            .ok();
        let mut entries: Vec<(String, ApiKeyEntry)> = set
            .keys
            .iter()
            .enumerate()
            .map(|(k, entry)| (format!("{at}.keys[{k}]"), entry.clone()))
            .collect();
        if let Some(path) = &set.file {
            match read_key_file(path) {
                Ok(file) => {
                    for (k, entry) in file.keys.into_iter().enumerate() {
                        let entry_at = format!("{at}.file ({}) keys[{k}]", path.display());
                        errors.extend(check_api_key_entry(&entry, &entry_at, set.hash, routes));
                        entries.push((entry_at, entry));
                    }
                }
                Err(problem) => errors.push(FieldError::new(
                    format!("{at}.file"),
                    format!("{}: {problem}", path.display()),
                )),
            }
        }
        let id: Arc<str> = Arc::from(set.id.as_str());
        let issuer = Arc::new(key_set_issuer(&id));
        let mut compiled = HashMap::new();
        for (entry_at, entry) in entries {
            let Some(digest) = parse_digest(&entry.hash, set.hash) else {
                // Reported by the entry checks.
                continue;
            };
            if compiled.contains_key(&entry.id) {
                errors.push(FieldError::new(
                    format!("{entry_at}.id"),
                    format!("key id {:?} appears twice in the set", entry.id),
                ));
                continue;
            }
            let id_hash: Arc<str> = Arc::from(crate::decision_log::hash_subject(&id, &entry.id));
            let token = Arc::new(identity_of(&issuer, &entry, Arc::clone(&id_hash)));
            compiled.insert(
                entry.id.clone(),
                Entry {
                    digest,
                    not_before: entry.not_before.map(|t| t.unix()),
                    expires: entry.expires.map(|t| t.unix()),
                    revoked: entry.revoked,
                    id_hash,
                    token,
                },
            );
        }
        let mut locations = LocationSet::default();
        for location in &set.locations {
            let location = compile_location(location);
            let index = match self.locations.iter().position(|known| *known == location) {
                Some(index) => index,
                None => {
                    self.locations.push(location);
                    self.locations.len() - 1
                }
            };
            locations.insert(index);
        }
        match hasher {
            Some(hasher) if errors.is_empty() => Ok(KeySet {
                counters: self.stats.counters(Some(&id)),
                id,
                prefix: set.prefix.clone(),
                hasher,
                locations,
                entries: compiled,
            }),
            _ => Err(errors),
        }
    }

    /// Whether any set is configured.
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// The counters (handed to the next configuration's sets).
    pub fn stats(&self) -> ApiKeyStats {
        self.stats.clone()
    }

    /// The one API key in the request, `Ok(None)` when there is none, or a rejection when
    /// keys arrive in more than one location. `path` is the request path with its query.
    pub fn extract<'r>(
        &'r self,
        headers: &'r impl HeaderLookup,
        path: &'r str,
    ) -> Result<Option<PresentedKey<'r>>, Rejection> {
        let mut found: Option<PresentedKey<'r>> = None;
        for (index, location) in self.locations.iter().enumerate() {
            let (text, header, query) = match location {
                Location::Header { name, scheme } => {
                    match header_key(headers, name, scheme.as_deref())? {
                        Some(text) => (text, Some(name.as_str()), None),
                        None => continue,
                    }
                }
                Location::Query { name } => match query_key(path, name)? {
                    Some(text) => (text, None, Some(name.as_str())),
                    None => continue,
                },
            };
            match &found {
                None => {
                    found = Some(PresentedKey {
                        text,
                        location: index,
                        header,
                        query,
                    });
                }
                // Even the same key twice: each copy would have to be removed upstream, and a
                // client that sends a key in two places is better told than guessed at.
                Some(_) => return Err(ambiguous("API keys in two locations")),
            }
        }
        Ok(found)
    }

    /// The identity `key` grants at `now`, or why it grants none: `api_key_unknown` (no set
    /// or entry by its prefix and id, a malformed key, or a digest that does not match),
    /// then — only for the holder of the real key — `token_location_not_allowed`,
    /// `api_key_revoked`, `api_key_not_yet_valid` and `api_key_expired`.
    pub fn verify(
        &self,
        key: &PresentedKey<'_>,
        now: i64,
    ) -> Result<Arc<VerifiedToken>, Rejection> {
        let text = key.text.as_ref();
        let Some(set) = self
            .sets
            .iter()
            .find(|set| text.starts_with(set.prefix.as_str()))
        else {
            self.unmatched.inc();
            return Err(Rejection::new(
                Reason::ApiKeyUnknown,
                "the key starts with no configured key set's prefix",
            ));
        };
        let unknown = |detail: &str| {
            set.counters.unknown.inc();
            Rejection::new(
                Reason::ApiKeyUnknown,
                format!("key set {}: {detail}", set.id),
            )
            .for_issuer(&set.id)
        };
        if text.len() > MAX_KEY_BYTES {
            return Err(unknown("the key is longer than any key"));
        }
        let Some((key_id, secret)) = text
            .get(set.prefix.len()..)
            .and_then(|rest| rest.split_once('_'))
        else {
            return Err(unknown("the key has no `_` between key id and secret"));
        };
        if !is_key_id(key_id) || secret.is_empty() {
            return Err(unknown("the key is not <prefix><key id>_<secret>"));
        }
        let Some(entry) = set.entries.get(key_id) else {
            return Err(unknown("no key has this id"));
        };
        let Some(digest) = set.hasher.digest(text) else {
            return Err(unknown("the key could not be hashed"));
        };
        if !digests_match(&digest, &entry.digest) {
            return Err(unknown("the key's digest does not match the stored one"));
        }
        // From here on the caller holds the real key: the refusals may say why.
        let refuse = |reason, detail: String| {
            set.counters.refused.inc();
            Rejection::new(reason, format!("key set {}: {detail}", set.id)).for_issuer(&set.id)
        };
        let id_hash = &entry.id_hash;
        if !set.locations.intersects(LocationSet::single(key.location)) {
            return Err(refuse(
                Reason::TokenLocationNotAllowed,
                format!("key {id_hash} arrived in a location the set does not accept"),
            ));
        }
        if entry.revoked {
            return Err(refuse(
                Reason::ApiKeyRevoked,
                format!("key {id_hash} is revoked"),
            ));
        }
        if let Some(not_before) = entry.not_before
            && now < not_before
        {
            return Err(refuse(
                Reason::ApiKeyNotYetValid,
                format!("key {id_hash} is valid from {not_before}"),
            ));
        }
        if let Some(expires) = entry.expires
            && now >= expires
        {
            return Err(refuse(
                Reason::ApiKeyExpired,
                format!("key {id_hash} expired at {expires}"),
            ));
        }
        set.counters.valid.inc();
        Ok(Arc::clone(&entry.token))
    }
}

/// The set's hasher: SHA-256, or HMAC-SHA-256 under the secret its `hmac_secret_file` holds.
fn load_hasher(set: &ApiKeySetConfig, at: &str) -> Result<Hasher, FieldError> {
    let (KeyHash::HmacSha256, Some(path)) = (set.hash, &set.hmac_secret_file) else {
        return Ok(Hasher::Sha256);
    };
    let problem = |text: String| {
        FieldError::new(
            format!("{at}.hmac_secret_file"),
            format!("{}: {text}", path.display()),
        )
    };
    let secret =
        crate::files::read_bounded(path, 64 * 1024).map_err(|err| problem(err.to_string()))?;
    if secret.len() < MIN_HMAC_SECRET_BYTES {
        return Err(problem(format!(
            "{} bytes; an HMAC secret needs at least {MIN_HMAC_SECRET_BYTES}",
            secret.len()
        )));
    }
    openssl::pkey::PKey::hmac(&secret)
        .map(Hasher::Hmac)
        .map_err(|err| problem(format!("not usable as an HMAC key: {err}")))
}

fn ambiguous(detail: &str) -> Rejection {
    Rejection::new(Reason::CredentialAmbiguous, detail)
}

fn compile_location(location: &ApiKeyLocation) -> Location {
    match (&location.header, &location.query) {
        (Some(name), _) => Location::Header {
            name: name.to_ascii_lowercase(),
            scheme: location.scheme.as_ref().map(|scheme| format!("{scheme} ")),
        },
        (None, Some(name)) => Location::Query { name: name.clone() },
        // Refused by validation.
        (None, None) => Location::Query {
            name: String::new(),
        },
    }
}

/// The key in header `name` after `scheme`. A header without the scheme is not ours; several
/// values (Envoy joins repeated headers with `,`) are ambiguous, since a key never holds one.
pub fn header_key<'r>(
    headers: &'r impl HeaderLookup,
    name: &str,
    scheme: Option<&str>,
) -> Result<Option<Cow<'r, str>>, Rejection> {
    let Some(value) = headers.header(name) else {
        return Ok(None);
    };
    let start = match scheme {
        None => 0,
        Some(scheme) if starts_with_ignore_case(&value, scheme) => scheme.len(),
        Some(_) => return Ok(None),
    };
    let key = match value {
        Cow::Borrowed(v) => Cow::Borrowed(v.get(start..).unwrap_or("").trim()),
        Cow::Owned(v) => Cow::Owned(v.get(start..).unwrap_or("").trim().to_owned()),
    };
    if key.contains(',') {
        return Err(ambiguous("an API key header holds several values"));
    }
    if key.is_empty() {
        return Ok(None);
    }
    Ok(Some(key))
}

/// The key in query parameter `name` of `path`. Keys are URL-safe; a parameter that is
/// encoded in any way, repeated or empty is refused rather than decoded.
pub fn query_key<'r>(path: &'r str, name: &str) -> Result<Option<Cow<'r, str>>, Rejection> {
    let Some((_, query)) = path.split_once('?') else {
        return Ok(None);
    };
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    let mut found = None;
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key != name {
            continue;
        }
        if found.is_some() {
            return Err(ambiguous("the API key parameter appears more than once"));
        }
        // Keys are made of URL-safe characters only: anything else (percent-encoding, `+`,
        // spaces) is refused rather than decoded.
        let url_safe = |b: u8| b.is_ascii_alphanumeric() || b"-_.~".contains(&b);
        if value.is_empty() || !value.bytes().all(url_safe) {
            return Err(Rejection::new(
                Reason::ApiKeyUnknown,
                "the API key parameter is empty or not made of URL-safe characters",
            ));
        }
        found = Some(Cow::Borrowed(value));
    }
    Ok(found)
}

fn read_key_file(path: &std::path::Path) -> Result<ApiKeyFile, String> {
    let bytes = crate::files::read_bounded(path, MAX_KEY_FILE_BYTES).map_err(|e| e.to_string())?;
    let text = String::from_utf8(bytes).map_err(|_| "not UTF-8".to_owned())?;
    let mut failed_at = None;
    serde_saphyr::with_deserializer_from_str(&text, |de| {
        serde_path_to_error::deserialize::<_, ApiKeyFile>(de).map_err(|err| {
            failed_at = Some(err.path().to_string());
            err.into_inner()
        })
    })
    .map_err(|err| {
        let message: Vec<String> = err
            .to_string()
            .lines()
            .map(|l| l.trim().to_owned())
            .collect();
        match failed_at.filter(|p| p != ".") {
            Some(at) => format!("at {at}: {}", message.join(" ")),
            None => message.join(" "),
        }
    })
}

fn parse_digest(text: &str, hash: KeyHash) -> Option<Digest> {
    let hex = text.strip_prefix(hash.label())?.strip_prefix(':')?;
    let mut digest = [0u8; 32];
    if hex.len() != 64 {
        return None;
    }
    for (byte, pair) in digest.iter_mut().zip(hex.as_bytes().chunks(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(digest)
}

/// The issuer identities of a key set carry: the set's id, and `urn:fedauthz:api-keys:<id>`
/// where an original `iss` is shown (a minted token's namespace claim). It verifies nothing:
/// it is not among the token issuers.
fn key_set_issuer(id: &Arc<str>) -> Issuer {
    Issuer {
        id: Arc::clone(id),
        issuer: format!("urn:fedauthz:api-keys:{id}"),
        keys: Arc::new(KeyStore::new(Arc::new(Notify::new()))),
        rules: ClaimRules {
            audience: AudienceRule::Skip {
                reason: "an API key has no audience".into(),
            },
            clock_skew: 0,
            max_lifetime: 0,
            required: Vec::new(),
            token_types: TokenTypes::access_token(),
            subject: SubjectRule::Sub,
        },
        locations: LocationSet::default(),
        tenancy: Tenancy::Single,
        accept_padded: false,
        profile: Profile::new(Default::default(), &Default::default()),
        aliases: Vec::new(),
        alb_signers: Vec::new(),
        accept_encrypted: false,
    }
}

fn identity_of(issuer: &Arc<Issuer>, entry: &ApiKeyEntry, id_hash: Arc<str>) -> VerifiedToken {
    let key_id: Arc<str> = Arc::from(entry.id.as_str());
    VerifiedToken {
        issuer: Arc::clone(issuer),
        expires_at: entry.expires.map_or(i64::MAX, |t| t.unix()),
        identity: Identity {
            issuer: Arc::clone(&issuer.id),
            subject: entry.subject.clone(),
            tenant: entry.tenant.clone(),
            client: entry.client.clone(),
            scopes: entry.scopes.clone(),
            roles: entry.roles.clone(),
            groups: Groups::Known(entry.groups.clone()),
            email: None,
            attributes: entry.attributes.clone(),
        },
        claims: serde_json::Map::new(),
        proof: Proof::ApiKey(ApiKeyGrant {
            key_id,
            id_hash,
            routes: entry
                .routes
                .as_ref()
                .map(|routes| routes.iter().map(|r| Arc::from(r.as_str())).collect()),
        }),
        encryption: None,
    }
}

/// A key set id label value (empty when no set's prefix matched).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct SetId(Option<Arc<str>>);

impl EncodeLabelValue for SetId {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        use std::fmt::Write as _;
        encoder.write_str(self.0.as_deref().unwrap_or(""))
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    key_set: SetId,
    result: &'static str,
}

/// API key counters per key set: checks by result. One set per process, handed from each
/// configuration to the next.
#[derive(Debug, Clone, Default)]
pub struct ApiKeyStats {
    checks: Family<CheckLabels, Counter>,
}

impl ApiKeyStats {
    /// Registers the series in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "api_key_checks",
            "API keys checked, by key set and result (valid, unknown, refused: revoked, \
             expired, not yet valid or in a location the set does not accept)",
            self.checks.clone(),
        );
    }

    /// The counters of `set` (`None`: keys no set names), each looked up once so that a
    /// check counts without a family lookup.
    fn counters(&self, set: Option<&Arc<str>>) -> SetCounters {
        let counter = |result| {
            self.checks
                .get_or_create(&CheckLabels {
                    key_set: SetId(set.cloned()),
                    result,
                })
                .clone()
        };
        SetCounters {
            valid: counter("valid"),
            unknown: counter("unknown"),
            refused: counter("refused"),
        }
    }
}

/// One key set's counters, by result.
#[derive(Debug, Clone, Default)]
struct SetCounters {
    valid: Counter,
    unknown: Counter,
    refused: Counter,
}

/// `fedauthz apikey`: a new key for set `set` with id `key_id`, and the entry that stores its
/// digest. The key has 256 bits of randomness.
pub fn generate(
    prefix: &str,
    key_id: &str,
    hmac_secret: Option<&[u8]>,
) -> Result<(String, String), String> {
    if !is_key_id(key_id) {
        return Err(format!(
            "key id {key_id:?}: must be 1-64 characters of [A-Za-z0-9-]"
        ));
    }
    let mut secret = [0u8; 32];
    openssl::rand::rand_bytes(&mut secret).map_err(|err| format!("no randomness: {err}"))?;
    use base64::Engine as _;
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    let key = format!("{prefix}{key_id}_{secret}");
    let (hasher, label) = match hmac_secret {
        None => (Hasher::Sha256, KeyHash::Sha256.label()),
        Some(secret) => (
            Hasher::Hmac(
                openssl::pkey::PKey::hmac(secret).map_err(|err| format!("HMAC secret: {err}"))?,
            ),
            KeyHash::HmacSha256.label(),
        ),
    };
    let digest = hasher
        .digest(&key)
        .ok_or_else(|| "the key could not be hashed".to_owned())?;
    Ok((key, hash_text(label, &digest)))
}

/// The `hash` of an entry for `key` in a set that hashes with SHA-256.
pub fn sha256_entry_hash(key: &str) -> String {
    hash_text(
        KeyHash::Sha256.label(),
        &openssl::sha::sha256(key.as_bytes()),
    )
}

fn hash_text(label: &str, digest: &Digest) -> String {
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{label}:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Map(Vec<(&'static str, &'static str)>);

    impl HeaderLookup for Map {
        fn header(&self, name: &str) -> Option<Cow<'_, str>> {
            self.0
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| Cow::Borrowed(*v))
        }
    }

    #[test]
    fn digests_compare_whole_and_fixed_size() {
        let stored = openssl::sha::sha256(b"fak_a_secret");
        assert!(digests_match(&stored, &stored.clone()));
        let mut first = stored;
        first[0] ^= 1;
        let mut last = stored;
        last[31] ^= 1;
        // Wherever they differ, the answer is the same: the comparison runs over all 32
        // bytes (CRYPTO_memcmp), never stopping at the first difference.
        assert!(!digests_match(&first, &stored));
        assert!(!digests_match(&last, &stored));
    }

    fn keys(entry_key: &str) -> ApiKeys {
        let yaml = format!(
            "issuers: []\napi_keys:\n  - id: p\n    keys: [{{ id: a, hash: '{}', subject: s }}]\n",
            sha256_entry_hash(entry_key)
        );
        let config = crate::config::parse_yaml(&yaml, "t.yaml").unwrap();
        ApiKeys::load(&config, ApiKeyStats::default()).unwrap()
    }

    #[test]
    fn a_secret_is_only_ever_compared_as_a_fixed_size_digest() {
        let real = "fak_a_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG";
        let keys = keys(real);
        let headers = |key: &str| {
            Map(vec![(
                "x-api-key",
                Box::leak(key.to_owned().into_boxed_str()),
            )])
        };
        let verdict = |key: &str| {
            let headers = headers(key);
            let presented = keys.extract(&headers, "/").unwrap().unwrap();
            keys.verify(&presented, 0).map(|t| t.subject().to_owned())
        };
        assert_eq!(verdict(real).unwrap(), "s");
        // Whatever the presented secret looks like — one character, a prefix of the real one,
        // the real one with its last character changed, or far longer — it becomes a 32-byte
        // digest before anything is compared, so each is refused the same way, by the same
        // fixed-length comparison.
        let mut last_changed = real.to_owned();
        last_changed.pop();
        last_changed.push('H');
        for wrong in [
            "fak_a_x".to_owned(),
            real[..real.len() - 1].to_owned(),
            last_changed,
            format!("{real}{}", "y".repeat(400)),
        ] {
            let rejection = verdict(&wrong).unwrap_err();
            assert_eq!(rejection.reason, Reason::ApiKeyUnknown, "{wrong}");
            assert!(
                rejection.detail.contains("digest") || rejection.detail.contains("longer"),
                "{}",
                rejection.detail
            );
            assert!(
                !rejection.detail.contains(&wrong),
                "the key never reaches a detail"
            );
        }
        let digest: Digest = openssl::sha::sha256(real.as_bytes());
        assert_eq!(std::mem::size_of_val(&digest), 32);
    }

    #[test]
    fn keys_are_read_from_their_header_scheme_or_parameter_only() {
        let headers = Map(vec![
            ("x-api-key", " fak_a_s "),
            ("authorization", "ApiKey fak_b_s"),
            ("x-two", "fak_a_s,fak_b_s"),
        ]);
        assert_eq!(
            header_key(&headers, "x-api-key", None).unwrap().as_deref(),
            Some("fak_a_s")
        );
        assert_eq!(
            header_key(&headers, "authorization", Some("apikey "))
                .unwrap()
                .as_deref(),
            Some("fak_b_s")
        );
        assert_eq!(
            header_key(&headers, "authorization", Some("Bearer ")).unwrap(),
            None
        );
        assert_eq!(
            header_key(&headers, "x-two", None).unwrap_err().reason,
            Reason::CredentialAmbiguous
        );
        assert_eq!(
            query_key("/a?x=1&api_key=fak_a_s", "api_key")
                .unwrap()
                .as_deref(),
            Some("fak_a_s")
        );
        assert_eq!(query_key("/a?x=1", "api_key").unwrap(), None);
        assert_eq!(query_key("/a", "api_key").unwrap(), None);
        assert!(query_key("/a?api_key=a&api_key=b", "api_key").is_err());
        assert!(query_key("/a?api_key=fak%5Fa", "api_key").is_err());
    }

    #[test]
    fn generated_keys_are_prefixed_random_and_hash_as_printed() {
        let (key, hash) = generate("fak_", "acme-1", None).unwrap();
        let (again, _) = generate("fak_", "acme-1", None).unwrap();
        assert_ne!(key, again);
        let secret = key.strip_prefix("fak_acme-1_").unwrap();
        assert_eq!(secret.len(), 43, "32 random bytes, base64url");
        assert_eq!(
            parse_digest(&hash, KeyHash::Sha256),
            Some(openssl::sha::sha256(key.as_bytes()))
        );
        let (_, keyed) = generate("fak_", "acme-1", Some(&[7u8; 32])).unwrap();
        assert!(keyed.starts_with("hmac-sha256:"));
        assert!(generate("fak_", "bad_id", None).is_err());
    }
}
