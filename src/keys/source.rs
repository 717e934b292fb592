//! Where keys come from and how they stay fresh.
//!
//! [`prepare`] does everything that can fail on configuration (reading files and secrets,
//! parsing inline keys, building HTTP clients) and reports it with field paths. [`KeySources`]
//! then runs the prepared sources, one [`KeyStore`] per issuer:
//!
//! - inline key sets load once;
//! - key files load at once and are re-read when they change;
//! - URL sources (JWKS, OIDC discovery → JWKS, kid→PEM maps, SPIFFE bundles) are fetched in the
//!   background and refreshed before the announced cache lifetime ends (clamped to
//!   `[min_refresh, max_refresh]`, with jitter), and at most once per `unknown_kid_interval`
//!   when a check names an unknown kid. A failed refresh keeps the last good keys until they are
//!   older than `max_staleness`;
//! - per-kid PEM templates (AWS ALB) fetch a kid's key the first time a check names it, and
//!   only when the kid looks like a UUID. Each fetched kid is then revalidated in the
//!   background on the same schedule: an answer that the key is gone (HTTP 403, 404, 410)
//!   removes the kid at once; other failures, and a different key under the same kid (which
//!   is refused), keep the kid's last good key until it is older than `max_staleness`.
//!
//! Nothing here ever fetches a URL a token names.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use serde_json::Value;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::watch::FileWatch;

use super::formats;
use super::http::{FetchError, FetchPolicy, Fetcher};
use super::store::OnDemandPolicy;
use super::{AlgorithmPolicy, KeySet, KeySetError, KeyStore, TrustedKey};
use crate::config::{Config, FieldError, IssuerConfig, KeySource, SecretEncoding, SecretSource};
use crate::jose::{Algorithm, parse_object};

/// First retry delay after a failed fetch; doubles up to the cap below.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(60);
/// Per-kid (ALB) keys kept per issuer; the oldest go first.
const MAX_PER_KID_KEYS: usize = 64;
/// Per-kid revalidations in flight at once per issuer, so kids falling due together do not
/// burst the key server.
const MAX_REVALIDATIONS: usize = 4;

/// The format of a key document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Jwks,
    PemMap,
    Spiffe,
}

impl Format {
    fn accept(self) -> &'static str {
        match self {
            Self::Jwks | Self::Spiffe => "application/jwk-set+json, application/json",
            Self::PemMap => "application/json",
        }
    }
}

/// What a remote source fetches.
#[derive(Debug, Clone)]
enum Target {
    /// One key document.
    Document { url: reqwest::Url, format: Format },
    /// A discovery document, then the JWK Set it names.
    Discovery { url: reqwest::Url, issuer: String },
    /// One PEM per kid, from a `{kid}` template.
    PerKid { template: String },
}

/// Refresh timing of one issuer.
#[derive(Debug, Clone, Copy)]
struct Timing {
    default: Duration,
    min: Duration,
    max: Duration,
    max_staleness: Duration,
}

impl Timing {
    /// When to refresh a document announced to live `max_age`: clamped, then jittered to
    /// 80–95 % so many replicas do not refresh in step, but never below `min`.
    fn next_refresh(&self, max_age: Option<Duration>) -> Duration {
        let lifetime = max_age.unwrap_or(self.default).clamp(self.min, self.max);
        lifetime
            .mul_f64(fastrand::f64().mul_add(0.15, 0.80))
            .max(self.min)
    }

    fn retry_cap(&self) -> Duration {
        self.min.min(MAX_RETRY).max(FIRST_RETRY)
    }
}

#[derive(Debug)]
enum PreparedSource {
    Inline(KeySet),
    File {
        path: PathBuf,
        format: Format,
        initial: KeySet,
        check_every: Duration,
    },
    Remote {
        fetcher: Fetcher,
        target: Target,
    },
}

/// One issuer's key source, checked and ready to run.
#[derive(Debug)]
pub struct PreparedKeys {
    issuer_id: String,
    policy: AlgorithmPolicy,
    hmac: Option<Arc<TrustedKey>>,
    source: PreparedSource,
    timing: Timing,
    on_demand: OnDemandPolicy,
    required: bool,
    /// Identifies the configuration this came from, so a reload can keep a running fetcher.
    fingerprint: String,
}

/// Checks every issuer's key configuration and loads what is local. All problems are
/// reported, each with its field path.
pub fn prepare(config: &Config) -> Result<Vec<PreparedKeys>, Vec<FieldError>> {
    let mut prepared = Vec::new();
    let mut errors = Vec::new();
    for (index, issuer) in config.issuers.iter().enumerate() {
        match prepare_issuer(issuer, &format!("issuers[{index}]")) {
            Ok(keys) => prepared.push(keys),
            Err(err) => errors.push(err),
        }
    }
    if errors.is_empty() {
        Ok(prepared)
    } else {
        Err(errors)
    }
}

fn prepare_issuer(issuer: &IssuerConfig, at: &str) -> Result<PreparedKeys, FieldError> {
    let spiffe = issuer
        .keys
        .as_ref()
        .is_some_and(KeySource::is_spiffe_bundle);
    let policy = AlgorithmPolicy {
        allowed: if spiffe && issuer.algorithms.is_empty() {
            // JWT-SVID §3 allows RS*, ES* and PS* only: the usual one algorithm per key type,
            // without EdDSA.
            vec![
                Algorithm::RS256,
                Algorithm::ES256,
                Algorithm::ES384,
                Algorithm::ES512,
            ]
        } else {
            issuer.algorithms.clone()
        },
    };
    // What the files read here hold is part of the fingerprint: a running source is reused
    // across reloads only while its secret and CA bundle are byte for byte the same.
    let mut file_digests = Vec::new();
    let hmac = match &issuer.hmac_secret {
        Some(secret) => {
            let bytes = read_secret(secret)
                .map_err(|why| FieldError::new(format!("{at}.hmac_secret"), why))?;
            file_digests.push(hex(&openssl::sha::sha256(&bytes)));
            let key = TrustedKey::hmac(&bytes, secret.kid.clone(), &issuer.algorithms)
                .map_err(|why| FieldError::new(format!("{at}.hmac_secret"), why.to_string()))?;
            Some(Arc::new(key))
        }
        None => None,
    };
    let defaults = KeySource::default();
    let keys = issuer.keys.as_ref().unwrap_or(&defaults);
    if let Some(path) = &keys.ca_file {
        let bytes = std::fs::read(path).map_err(|err| {
            FieldError::new(
                format!("{at}.keys.ca_file"),
                format!("cannot read {}: {err}", path.display()),
            )
        })?;
        file_digests.push(hex(&openssl::sha::sha256(&bytes)));
    }
    let fingerprint = serde_json::json!([
        issuer.issuer,
        issuer.keys,
        issuer.hmac_secret,
        issuer.algorithms,
        file_digests
    ])
    .to_string();
    let source = match &issuer.keys {
        None => PreparedSource::Inline(
            KeySet::from_keys(hmac.iter().cloned().collect(), Vec::new())
                .map_err(|err| FieldError::new(format!("{at}.hmac_secret"), err.to_string()))?,
        ),
        Some(keys) => prepare_source(keys, issuer, &policy, hmac.as_ref(), &format!("{at}.keys"))?,
    };
    Ok(PreparedKeys {
        issuer_id: issuer.id.clone(),
        policy,
        hmac,
        source,
        timing: Timing {
            default: keys.refresh_interval.get(),
            min: keys.min_refresh.get(),
            max: keys.max_refresh.get(),
            max_staleness: keys.max_staleness.get(),
        },
        on_demand: OnDemandPolicy {
            interval: keys.unknown_kid_interval.get(),
            wait: keys.unknown_kid_wait.get(),
        },
        required: keys.required,
        fingerprint,
    })
}

fn prepare_source(
    keys: &KeySource,
    issuer: &IssuerConfig,
    policy: &AlgorithmPolicy,
    hmac: Option<&Arc<TrustedKey>>,
    at: &str,
) -> Result<PreparedSource, FieldError> {
    if let Some(jwks) = &keys.jwks {
        let text = jwks.to_string();
        let (set, _) = parse(Format::Jwks, text.as_bytes(), policy, hmac)
            .map_err(|why| FieldError::new(format!("{at}.jwks"), why))?;
        return Ok(PreparedSource::Inline(set));
    }
    let files = [
        ("jwks_file", &keys.jwks_file, Format::Jwks),
        (
            "spiffe_bundle_file",
            &keys.spiffe_bundle_file,
            Format::Spiffe,
        ),
    ];
    for (field, path, format) in files {
        if let Some(path) = path {
            let field = format!("{at}.{field}");
            let bytes = std::fs::read(path).map_err(|err| {
                FieldError::new(&field, format!("cannot read {}: {err}", path.display()))
            })?;
            let (initial, _) = parse(format, &bytes, policy, hmac)
                .map_err(|why| FieldError::new(&field, format!("{}: {why}", path.display())))?;
            return Ok(PreparedSource::File {
                path: path.clone(),
                format,
                initial,
                check_every: keys.file_check_interval.get(),
            });
        }
    }
    let fetcher = Fetcher::new(&FetchPolicy {
        ca_file: keys.ca_file.as_deref(),
        insecure_http: keys.insecure_http,
        connect_timeout: keys.connect_timeout.get(),
        timeout: keys.timeout.get(),
        max_bytes: keys.max_bytes,
    })
    .map_err(|why| FieldError::new(format!("{at}.ca_file"), why))?;
    let url = |field: &str, text: &str| {
        reqwest::Url::parse(text)
            .map_err(|err| FieldError::new(format!("{at}.{field}"), err.to_string()))
    };
    let target = if keys.discovery {
        let text = format!(
            "{}/.well-known/openid-configuration",
            issuer.issuer.trim_end_matches('/')
        );
        Target::Discovery {
            url: url("discovery", &text)?,
            issuer: issuer.issuer.clone(),
        }
    } else if let Some(text) = &keys.discovery_url {
        Target::Discovery {
            url: url("discovery_url", text)?,
            issuer: issuer.issuer.clone(),
        }
    } else if let Some(text) = &keys.jwks_uri {
        Target::Document {
            url: url("jwks_uri", text)?,
            format: Format::Jwks,
        }
    } else if let Some(text) = &keys.pem_map_uri {
        Target::Document {
            url: url("pem_map_uri", text)?,
            format: Format::PemMap,
        }
    } else if let Some(text) = &keys.spiffe_bundle_uri {
        Target::Document {
            url: url("spiffe_bundle_uri", text)?,
            format: Format::Spiffe,
        }
    } else if let Some(template) = &keys.pem_uri_template {
        Target::PerKid {
            template: template.clone(),
        }
    } else {
        return Err(FieldError::new(at, "names no key source"));
    };
    Ok(PreparedSource::Remote { fetcher, target })
}

/// Parses a key document; also returns the refresh hint a SPIFFE bundle carries.
fn parse(
    format: Format,
    bytes: &[u8],
    policy: &AlgorithmPolicy,
    hmac: Option<&Arc<TrustedKey>>,
) -> Result<(KeySet, Option<Duration>), String> {
    let extra = hmac.cloned();
    match format {
        Format::Jwks => KeySet::from_jwks_bytes(bytes, policy, extra)
            .map(|set| (set, None))
            .map_err(|err| err.to_string()),
        Format::PemMap => formats::key_set_from_pem_map(bytes, policy, extra)
            .map(|set| (set, None))
            .map_err(|err| err.to_string()),
        Format::Spiffe => formats::key_set_from_spiffe_bundle(bytes, policy)
            .map(|(set, hint)| (set, hint.map(Duration::from_secs)))
            .map_err(|err| err.to_string()),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn read_secret(secret: &SecretSource) -> Result<Vec<u8>, String> {
    let text = match (&secret.env, &secret.file) {
        (Some(name), None) => std::env::var(name)
            .map_err(|_| format!("environment variable {name} is not set (or not UTF-8)"))?,
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|err| format!("cannot read {}: {err}", path.display()))?,
        _ => return Err("set exactly one of env or file".into()),
    };
    let text = text.trim();
    match secret.encoding {
        SecretEncoding::Utf8 => Ok(text.as_bytes().to_vec()),
        SecretEncoding::Base64 => {
            let padded = format!("{text}{}", "=".repeat((4 - text.len() % 4) % 4));
            URL_SAFE
                .decode(&padded)
                .or_else(|_| STANDARD.decode(&padded))
                .map_err(|_| {
                    "the secret is not valid base64 (set encoding: utf8 for plain text)".to_owned()
                })
        }
    }
}

/// Aborts a background task when dropped.
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One issuer's running key source.
#[derive(Debug)]
struct IssuerKeys {
    store: Arc<KeyStore>,
    fingerprint: String,
    remote: bool,
    _task: Option<AbortOnDrop>,
}

/// The running key sources of every issuer of one configuration.
#[derive(Debug, Default)]
pub struct KeySources {
    by_id: HashMap<String, Arc<IssuerKeys>>,
}

/// What a running source task needs.
struct Context {
    issuer: String,
    store: Arc<KeyStore>,
    policy: AlgorithmPolicy,
    hmac: Option<Arc<TrustedKey>>,
    timing: Timing,
}

impl KeySources {
    /// Starts `prepared` sources. Remote sources that `previous` already runs with the same
    /// configuration are kept as they are (with their keys); others start fresh. Must be called
    /// inside a tokio runtime when any source is remote or a file.
    pub fn start(
        prepared: Vec<PreparedKeys>,
        previous: Option<&KeySources>,
        changed: &Arc<Notify>,
    ) -> Self {
        let mut by_id = HashMap::new();
        for keys in prepared {
            let reusable = previous
                .and_then(|prev| prev.by_id.get(&keys.issuer_id))
                .filter(|old| old.remote && old.fingerprint == keys.fingerprint);
            let id = keys.issuer_id.clone();
            let running = match reusable {
                Some(old) => Arc::clone(old),
                None => Arc::new(start_source(keys, changed)),
            };
            by_id.insert(id, running);
        }
        Self { by_id }
    }

    /// The key store of issuer `id`.
    pub fn store(&self, id: &str) -> Option<Arc<KeyStore>> {
        self.by_id.get(id).map(|keys| Arc::clone(&keys.store))
    }

    /// Every issuer id with its store (for metrics), sorted by id.
    pub fn stores(&self) -> Vec<(&str, &Arc<KeyStore>)> {
        let mut stores: Vec<_> = self
            .by_id
            .iter()
            .map(|(id, keys)| (id.as_str(), &keys.store))
            .collect();
        stores.sort_by_key(|(id, _)| *id);
        stores
    }

    /// Ids of the required issuers whose keys are not loaded, sorted. Readiness waits for them.
    pub fn missing(&self) -> Vec<String> {
        self.stores()
            .into_iter()
            .filter(|(_, store)| store.is_required() && !store.has_keys())
            .map(|(id, _)| id.to_owned())
            .collect()
    }
}

fn start_source(keys: PreparedKeys, changed: &Arc<Notify>) -> IssuerKeys {
    let store = KeyStore::new(Arc::clone(changed)).required(keys.required);
    let (store, remote, task) = match keys.source {
        PreparedSource::Inline(set) => {
            store.replace(set);
            (Arc::new(store), false, None)
        }
        PreparedSource::File {
            path,
            format,
            initial,
            check_every,
        } => {
            store.replace(initial);
            let store = Arc::new(store);
            let context = Context {
                issuer: keys.issuer_id.clone(),
                store: Arc::clone(&store),
                policy: keys.policy,
                hmac: keys.hmac,
                timing: keys.timing,
            };
            let task = tokio::spawn(watch_file(context, path, format, check_every));
            (store, false, Some(task))
        }
        PreparedSource::Remote { fetcher, target } => {
            let store = store.refreshed_on_demand(keys.on_demand);
            if matches!(target, Target::PerKid { .. }) {
                // Keys arrive per kid, on demand: the issuer is usable from the start.
                store.replace(KeySet::default());
            }
            let store = Arc::new(store);
            let context = Context {
                issuer: keys.issuer_id.clone(),
                store: Arc::clone(&store),
                policy: keys.policy,
                hmac: keys.hmac,
                timing: keys.timing,
            };
            let task = match target {
                Target::PerKid { template } => {
                    tokio::spawn(fetch_per_kid(context, fetcher, template))
                }
                target => tokio::spawn(keep_fresh(context, fetcher, target)),
            };
            (store, true, Some(task))
        }
    };
    IssuerKeys {
        store,
        fingerprint: keys.fingerprint,
        remote,
        _task: task.map(AbortOnDrop),
    }
}

/// Fetches a document source until it succeeds, then refreshes it on schedule and on demand.
async fn keep_fresh(context: Context, fetcher: Fetcher, target: Target) {
    let mut retry = FIRST_RETRY;
    let mut last_success: Option<Instant> = None;
    let mut discovered: Option<(reqwest::Url, Instant)> = None;
    loop {
        let outcome = match &target {
            Target::Document { url, format } => fetch_keys(&context, &fetcher, url, *format).await,
            Target::Discovery { url, issuer } => {
                match discover(&context, &fetcher, url, issuer, &mut discovered).await {
                    Ok(jwks) => fetch_keys(&context, &fetcher, &jwks, Format::Jwks).await,
                    Err(err) => Err(err),
                }
            }
            Target::PerKid { .. } => return,
        };
        let wait = match outcome {
            Ok(max_age) => {
                context.store.record_fetch(Ok(()));
                last_success = Some(Instant::now());
                retry = FIRST_RETRY;
                context.timing.next_refresh(max_age)
            }
            Err(err) => {
                context.store.record_fetch(Err(err.kind()));
                note_failure(&context, &err, last_success);
                let wait = retry;
                retry = (retry * 2).min(context.timing.retry_cap());
                wait
            }
        };
        context.store.refresh_finished();
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = context.store.demanded() => {}
        }
    }
}

/// Logs a failed refresh; drops the keys once they are older than `max_staleness`.
fn note_failure(context: &Context, err: &FetchError, last_success: Option<Instant>) {
    let issuer = &context.issuer;
    if !context.store.has_keys() {
        warn!(issuer = %issuer, error = %err, "key fetch failed; the issuer has no keys yet");
        return;
    }
    let age = last_success.map(|at| at.elapsed());
    if age.is_some_and(|age| age > context.timing.max_staleness) {
        error!(issuer = %issuer, error = %err, max_staleness = ?context.timing.max_staleness,
            "key refresh failed and the last good keys are too old; dropping them");
        context.store.clear();
    } else {
        warn!(issuer = %issuer, error = %err, "key refresh failed; keeping the last good keys");
    }
}

/// Fetches and installs a key document; returns its announced lifetime.
#[tracing::instrument(level = "debug", name = "key_fetch", skip_all,
    fields(fedauthz.issuer = %context.issuer, url.full = %url))]
async fn fetch_keys(
    context: &Context,
    fetcher: &Fetcher,
    url: &reqwest::Url,
    format: Format,
) -> Result<Option<Duration>, FetchError> {
    let fetched = fetcher.get(url, format.accept()).await?;
    let (set, hint) = parse(
        format,
        &fetched.body,
        &context.policy,
        context.hmac.as_ref(),
    )
    .map_err(|detail| FetchError::Invalid {
        url: url.to_string(),
        detail,
    })?;
    for skipped in set.skipped() {
        warn!(issuer = %context.issuer, key = %skipped, "key left out of the key set");
    }
    info!(issuer = %context.issuer, keys = set.len(), url = %url, "keys loaded");
    context.store.replace(set);
    Ok(hint.or(fetched.max_age))
}

/// The JWK Set URL of a discovery source: the cached one while it is fresh, else a fresh
/// discovery document, whose `issuer` must be the configured one. When rediscovery fails, the
/// last known URL keeps serving.
async fn discover(
    context: &Context,
    fetcher: &Fetcher,
    url: &reqwest::Url,
    issuer: &str,
    discovered: &mut Option<(reqwest::Url, Instant)>,
) -> Result<reqwest::Url, FetchError> {
    if let Some((jwks, due)) = discovered.as_ref()
        && Instant::now() < *due
    {
        return Ok(jwks.clone());
    }
    match fetch_discovery(fetcher, url, issuer).await {
        Ok((jwks, max_age)) => {
            let due = Instant::now() + context.timing.next_refresh(max_age);
            *discovered = Some((jwks.clone(), due));
            Ok(jwks)
        }
        Err(err) => match discovered.as_ref() {
            Some((jwks, _)) => {
                context.store.record_fetch(Err(err.kind()));
                warn!(issuer = %context.issuer, error = %err,
                    "discovery refresh failed; keeping the last jwks_uri");
                Ok(jwks.clone())
            }
            None => Err(err),
        },
    }
}

#[tracing::instrument(level = "debug", name = "discovery_fetch", skip_all, fields(url.full = %url))]
async fn fetch_discovery(
    fetcher: &Fetcher,
    url: &reqwest::Url,
    issuer: &str,
) -> Result<(reqwest::Url, Option<Duration>), FetchError> {
    let fetched = fetcher.get(url, "application/json").await?;
    let invalid = |detail: String| FetchError::Invalid {
        url: url.to_string(),
        detail,
    };
    let document = parse_object(&fetched.body)
        .map_err(|err| invalid(format!("not a discovery document: {err}")))?;
    let found = match document.get("issuer") {
        Some(Value::String(found)) => found,
        _ => return Err(invalid("the discovery document has no issuer".into())),
    };
    if found != issuer {
        return Err(FetchError::IssuerMismatch {
            url: url.to_string(),
            expected: issuer.to_owned(),
            found: found.clone(),
        });
    }
    let jwks = match document.get("jwks_uri") {
        Some(Value::String(jwks)) => jwks,
        _ => return Err(invalid("the discovery document has no jwks_uri".into())),
    };
    let jwks = reqwest::Url::parse(jwks).map_err(|err| invalid(format!("jwks_uri: {err}")))?;
    if !fetcher.allows(&jwks) {
        return Err(invalid(format!("jwks_uri {jwks} is not an https:// URL")));
    }
    Ok((jwks, fetched.max_age))
}

/// Why a per-kid fetch runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// A check named a kid the set lacks.
    OnDemand,
    /// A held kid is due for revalidation.
    Revalidation,
}

/// One held kid: its key and where it stands in its revalidation schedule.
#[derive(Debug)]
struct KidKey {
    key: Arc<TrustedKey>,
    /// When the kid was first fetched; the oldest kids are evicted first.
    fetched_at: Instant,
    /// When the server last served this key; `max_staleness` counts from here.
    last_success: Instant,
    /// When the next revalidation is due.
    next_due: Instant,
    /// Delay before the next attempt after a failed revalidation (doubles up to the cap).
    retry: Duration,
    /// A revalidation is running, so the kid is not handed out again until it ends.
    revalidating: bool,
}

/// What a revalidation did to a kid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Revalidation {
    /// The server served the same key; the kid's lifetime starts again.
    Confirmed,
    /// The revalidation failed; the last good key stays and is retried.
    Kept,
    /// The server answered that the key is gone (HTTP 403, 404, 410): the kid was removed.
    Gone,
    /// Revalidations kept failing beyond `max_staleness`: the kid was removed.
    Stale,
    /// The kid was not held (evicted meanwhile); nothing changed.
    Untracked,
}

/// The per-kid keys of one issuer and their revalidation schedule, owned by the issuer's
/// per-kid task. Times are passed in, so the schedule is testable without waiting.
#[derive(Debug)]
struct KidKeys {
    timing: Timing,
    capacity: usize,
    kids: HashMap<String, KidKey>,
}

impl KidKeys {
    fn new(timing: Timing, capacity: usize) -> Self {
        Self {
            timing,
            capacity,
            kids: HashMap::new(),
        }
    }

    fn contains(&self, kid: &str) -> bool {
        self.kids.contains_key(kid)
    }

    /// Whether `kid` is held with exactly `key` (same material and algorithms).
    fn holds(&self, kid: &str, key: &TrustedKey) -> bool {
        self.kids
            .get(kid)
            .is_some_and(|held| held.key.fingerprint() == key.fingerprint())
    }

    /// Adds a kid fetched on demand, due for revalidation when its announced lifetime
    /// (`max_age`) ends. When full, the oldest kid makes room; it is returned.
    fn insert(
        &mut self,
        kid: String,
        key: Arc<TrustedKey>,
        max_age: Option<Duration>,
        now: Instant,
    ) -> Option<String> {
        let mut evicted = None;
        if !self.kids.contains_key(&kid) && self.kids.len() >= self.capacity {
            evicted = self
                .kids
                .iter()
                .min_by_key(|(kid, held)| (held.fetched_at, *kid))
                .map(|(oldest, _)| oldest.clone());
            if let Some(oldest) = &evicted {
                self.kids.remove(oldest);
            }
        }
        let held = KidKey {
            key,
            fetched_at: now,
            last_success: now,
            next_due: due_after(now, self.timing.next_refresh(max_age)),
            retry: FIRST_RETRY,
            revalidating: false,
        };
        self.kids.insert(kid, held);
        evicted
    }

    /// When the earliest revalidation that is not already running falls due.
    fn next_due(&self) -> Option<Instant> {
        self.kids
            .values()
            .filter(|held| !held.revalidating)
            .map(|held| held.next_due)
            .min()
    }

    /// Up to `limit` kids due at `now`, the most overdue first, marked as revalidating.
    fn take_due(&mut self, now: Instant, limit: usize) -> Vec<String> {
        let mut due: Vec<(Instant, &String)> = self
            .kids
            .iter()
            .filter(|(_, held)| !held.revalidating && held.next_due <= now)
            .map(|(kid, held)| (held.next_due, kid))
            .collect();
        due.sort();
        let due: Vec<String> = due
            .into_iter()
            .take(limit)
            .map(|(_, kid)| kid.clone())
            .collect();
        for kid in &due {
            if let Some(held) = self.kids.get_mut(kid) {
                held.revalidating = true;
            }
        }
        due
    }

    /// Applies the end of `kid`'s revalidation: `Ok(max_age)` when the server served the same
    /// key again, else why not. A definite "gone" removes the kid at once; any other failure
    /// keeps its key until `max_staleness` after the last success, retrying with back-off.
    fn revalidated(
        &mut self,
        kid: &str,
        result: Result<Option<Duration>, &FetchError>,
        now: Instant,
    ) -> Revalidation {
        let timing = self.timing;
        let Some(held) = self.kids.get_mut(kid) else {
            return Revalidation::Untracked;
        };
        held.revalidating = false;
        let verdict = match result {
            Ok(max_age) => {
                held.last_success = now;
                held.next_due = due_after(now, timing.next_refresh(max_age));
                held.retry = FIRST_RETRY;
                Revalidation::Confirmed
            }
            Err(err) if err.is_gone() => Revalidation::Gone,
            Err(_) if now.duration_since(held.last_success) > timing.max_staleness => {
                Revalidation::Stale
            }
            Err(_) => {
                held.next_due = due_after(now, held.retry);
                held.retry = (held.retry * 2).min(timing.retry_cap());
                Revalidation::Kept
            }
        };
        if matches!(verdict, Revalidation::Gone | Revalidation::Stale) {
            self.kids.remove(kid);
        }
        verdict
    }

    /// The key set of the held kids, oldest first: the only place it is built.
    fn key_set(&self) -> Result<KeySet, KeySetError> {
        if self.kids.is_empty() {
            // An empty set, not none: the issuer stays usable and unknown kids are fetched.
            return Ok(KeySet::default());
        }
        let mut held: Vec<(&String, &KidKey)> = self.kids.iter().collect();
        held.sort_by_key(|(kid, held)| (held.fetched_at, *kid));
        let keys = held
            .into_iter()
            .map(|(_, held)| Arc::clone(&held.key))
            .collect();
        KeySet::from_keys(keys, Vec::new())
    }
}

/// `now + wait`, saturating, so that a configured `max_refresh` of centuries cannot overflow.
fn due_after(now: Instant, wait: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(wait.min(CENTURY)).unwrap_or(now)
}

/// A finished per-kid fetch.
struct KidFetched {
    kid: String,
    url: String,
    purpose: Purpose,
    result: Result<(TrustedKey, Option<Duration>), FetchError>,
}

/// Keeps an issuer's per-kid PEM keys: fetches a kid's key the first time a check names a kid
/// that looks like a UUID, and revalidates each held kid on the issuer's refresh schedule (see
/// [`KidKeys::revalidated`] for what an answer does). This task alone owns the per-kid state;
/// fetches run beside it (one on demand, up to [`MAX_REVALIDATIONS`] revalidations), so a slow
/// revalidation never holds up a check waiting for a new kid.
async fn fetch_per_kid(context: Context, fetcher: Fetcher, template: String) {
    let (context, fetcher, template) = (&context, &fetcher, template.as_str());
    let mut kids = KidKeys::new(context.timing, MAX_PER_KID_KEYS);
    let mut fetches = FuturesUnordered::new();
    let mut revalidating = 0;
    let start = |kid: String, purpose: Purpose| async move {
        let url = template.replace("{kid}", &kid.to_ascii_lowercase());
        let result = fetch_one(context, fetcher, &url, &kid).await;
        KidFetched {
            kid,
            url,
            purpose,
            result,
        }
    };
    loop {
        let due = if revalidating < MAX_REVALIDATIONS {
            kids.next_due()
        } else {
            None
        };
        tokio::select! {
            wanted = context.store.demanded() => {
                match wanted.filter(|kid| formats::is_uuid(kid) && !kids.contains(kid)) {
                    Some(kid) => fetches.push(start(kid, Purpose::OnDemand)),
                    None => context.store.refresh_finished(),
                }
            }
            () = sleep_until(due) => {
                let room = MAX_REVALIDATIONS.saturating_sub(revalidating);
                for kid in kids.take_due(Instant::now(), room) {
                    fetches.push(start(kid, Purpose::Revalidation));
                    revalidating += 1;
                }
            }
            Some(done) = fetches.next(), if !fetches.is_empty() => match done.purpose {
                Purpose::OnDemand => {
                    add_kid(context, &mut kids, done);
                    context.store.refresh_finished();
                }
                Purpose::Revalidation => {
                    revalidating = revalidating.saturating_sub(1);
                    finish_revalidation(context, &mut kids, done);
                }
            },
        }
    }
}

/// Installs a kid fetched on demand, or logs why it could not be fetched.
fn add_kid(context: &Context, kids: &mut KidKeys, done: KidFetched) {
    let (issuer, kid) = (&context.issuer, done.kid);
    match done.result {
        Ok((key, max_age)) => {
            context.store.record_fetch(Ok(()));
            info!(issuer = %issuer, kid = %kid, "key loaded");
            if let Some(evicted) = kids.insert(kid, Arc::new(key), max_age, Instant::now()) {
                info!(issuer = %issuer, kid = %evicted, max = MAX_PER_KID_KEYS,
                    "key evicted to make room for a newer kid");
            }
            publish(context, kids);
        }
        Err(err) => {
            context.store.record_fetch(Err(err.kind()));
            warn!(issuer = %issuer, kid = %kid, error = %err, "key fetch failed");
        }
    }
}

/// Applies and logs the end of a revalidation; republishes the key set when a kid left it.
fn finish_revalidation(context: &Context, kids: &mut KidKeys, done: KidFetched) {
    let (issuer, kid) = (&context.issuer, done.kid.as_str());
    if !kids.contains(kid) {
        // Evicted while revalidating: only the fetch itself is worth counting.
        let result = done.result.as_ref().map(|_| ()).map_err(FetchError::kind);
        context.store.record_fetch(result);
        return;
    }
    let result = match done.result {
        Ok((key, max_age)) if kids.holds(kid, &key) => Ok(max_age),
        // A kid's key never changes at ALB: another key under a known kid is a wrong or
        // forged answer, so it is refused like a failed fetch (see docs/operations.md).
        Ok(_) => Err(FetchError::KeyChanged {
            url: done.url,
            kid: kid.to_owned(),
        }),
        Err(err) => Err(err),
    };
    context
        .store
        .record_fetch(result.as_ref().map(|_| ()).map_err(FetchError::kind));
    let verdict = kids.revalidated(kid, result.as_ref().copied(), Instant::now());
    let max_staleness = context.timing.max_staleness;
    match (&result, verdict) {
        (_, Revalidation::Untracked) => {}
        (Ok(_), _) => debug!(issuer = %issuer, kid = %kid, "key revalidated"),
        (Err(err), Revalidation::Gone) => {
            warn!(issuer = %issuer, kid = %kid, error = %err,
                "the key server no longer has this kid's key; removed it, tokens naming it are denied");
        }
        (Err(err), Revalidation::Stale) => {
            error!(issuer = %issuer, kid = %kid, error = %err, max_staleness = ?max_staleness,
                "key revalidation failed and the kid's last good key is too old; dropping it");
        }
        (Err(err @ FetchError::KeyChanged { .. }), _) => {
            error!(issuer = %issuer, kid = %kid, error = %err,
                "the key server sent a different key for a known kid; refusing it and keeping the key fetched before");
        }
        (Err(err), _) => {
            warn!(issuer = %issuer, kid = %kid, error = %err,
                "key revalidation failed; keeping the kid's last good key");
        }
    }
    if matches!(verdict, Revalidation::Gone | Revalidation::Stale) {
        publish(context, kids);
    }
}

/// Replaces the store's keys with the set the held kids make up.
fn publish(context: &Context, kids: &KidKeys) {
    match kids.key_set() {
        Ok(set) => context.store.replace(set),
        Err(err) => {
            // Cannot happen (kids are distinct, the empty case is handled); fail closed rather
            // than keep serving a kid that should have left.
            error!(issuer = %context.issuer, error = %err,
                "cannot build the per-kid key set; trusting none of its keys");
            context.store.replace(KeySet::default());
        }
    }
}

/// Sleeps until `due`; forever when nothing is due.
async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Fetches one kid's PEM key; also returns its announced lifetime.
#[tracing::instrument(level = "debug", name = "key_fetch", skip_all,
    fields(fedauthz.issuer = %context.issuer, url.full = %url))]
async fn fetch_one(
    context: &Context,
    fetcher: &Fetcher,
    url: &str,
    kid: &str,
) -> Result<(TrustedKey, Option<Duration>), FetchError> {
    let invalid = |detail: String| FetchError::Invalid {
        url: url.to_owned(),
        detail,
    };
    let parsed = reqwest::Url::parse(url).map_err(|err| invalid(err.to_string()))?;
    let fetched = fetcher
        .get(&parsed, "application/x-pem-file, text/plain")
        .await?;
    let key = formats::trusted_key_from_pem(kid, &fetched.body, &context.policy)
        .map_err(|err| invalid(err.to_string()))?;
    Ok((key, fetched.max_age))
}

/// Re-reads a key file when its content changes (its directory is watched, so a Kubernetes
/// `..data` swap is seen at once; `check_every` polls as a fallback); a file that no longer
/// parses is logged and the last good keys stay.
async fn watch_file(context: Context, path: PathBuf, format: Format, check_every: Duration) {
    let mut watch = FileWatch::new([path.clone()], check_every).await;
    loop {
        watch.changed().await;
        let result = tokio::fs::read(&path)
            .await
            .map_err(|err| err.to_string())
            .and_then(|bytes| parse(format, &bytes, &context.policy, context.hmac.as_ref()));
        match result {
            Ok((set, _)) => {
                context.store.record_fetch(Ok(()));
                info!(issuer = %context.issuer, keys = set.len(), file = %path.display(), "keys reloaded");
                context.store.replace(set);
            }
            Err(why) => {
                context.store.record_fetch(Err("invalid"));
                warn!(issuer = %context.issuer, file = %path.display(), error = %why,
                    "key file changed but is unusable; keeping the last good keys");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_yaml;
    use openssl::pkey::PKey;

    fn bundle_entry(pem: &[u8]) -> Value {
        let mut jwk = formats::jwk_from_pem(pem).expect("jwk");
        jwk["use"] = "jwt-svid".into();
        jwk["kid"] = "k".into();
        jwk
    }

    #[test]
    fn a_spiffe_bundle_never_yields_an_eddsa_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = |bundle: &Value| {
            let file = dir.path().join("bundle.json");
            std::fs::write(&file, bundle.to_string()).expect("write");
            parse_yaml(
                &format!(
                    "issuers:\n  - id: mesh\n    issuer: spiffe://example.org\n    profile: spiffe\n    audiences: [a]\n    keys: {{ spiffe_bundle_file: {} }}\n",
                    file.display()
                ),
                "test.yaml",
            )
            .expect("config")
        };
        let ed = PKey::generate_ed25519().expect("key");
        let ed =
            serde_json::json!({ "keys": [bundle_entry(&ed.public_key_to_pem().expect("pem"))] });
        let errors = prepare(&config(&ed)).expect_err("an Ed25519 JWT authority is refused");
        assert!(
            errors
                .iter()
                .any(|e| e.to_string().contains("no usable signing key")),
            "{errors:?}"
        );
        let ec = openssl::ec::EcKey::generate(
            &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)
                .expect("group"),
        )
        .and_then(PKey::from_ec_key)
        .expect("key");
        let ec =
            serde_json::json!({ "keys": [bundle_entry(&ec.public_key_to_pem().expect("pem"))] });
        assert!(prepare(&config(&ec)).is_ok());
    }

    const SECOND: Duration = Duration::from_secs(1);

    fn timing() -> Timing {
        Timing {
            default: Duration::from_secs(3600),
            min: Duration::from_secs(300),
            max: Duration::from_secs(24 * 3600),
            max_staleness: Duration::from_secs(72 * 3600),
        }
    }

    /// A key under `kid`; `secret` tells keys apart (an HMAC key keeps these tests cheap).
    fn key(kid: &str, secret: u8) -> Arc<TrustedKey> {
        let key = TrustedKey::hmac(&[secret; 32], Some(kid.to_owned()), &[Algorithm::HS256])
            .expect("key");
        Arc::new(key)
    }

    fn held(kids: &KidKeys) -> Vec<String> {
        let set = kids.key_set().expect("key set");
        set.keys()
            .iter()
            .filter_map(|key| key.kid().map(str::to_owned))
            .collect()
    }

    fn status(status: u16) -> FetchError {
        FetchError::Status {
            url: "https://keys.example/k".into(),
            status,
        }
    }

    #[test]
    fn a_fetched_kid_is_due_when_its_clamped_jittered_lifetime_ends() {
        let now = Instant::now();
        let mut kids = KidKeys::new(timing(), 8);
        // No caching headers: refresh_interval (1 h), jittered to 80–95 %.
        kids.insert("a".into(), key("a", 1), None, now);
        let due = kids.next_due().expect("due");
        assert!(due >= now + 48 * 60 * SECOND && due <= now + 57 * 60 * SECOND);
        // A server lifetime below min_refresh is raised to it.
        let mut kids = KidKeys::new(timing(), 8);
        kids.insert("b".into(), key("b", 1), Some(10 * SECOND), now);
        assert_eq!(kids.next_due(), Some(now + 300 * SECOND));
        // Nothing is due before its time; at its time it is handed out once.
        assert!(kids.take_due(now + 299 * SECOND, 4).is_empty());
        assert_eq!(kids.take_due(now + 300 * SECOND, 4), ["b"]);
        assert_eq!(
            kids.next_due(),
            None,
            "a running revalidation is not due again"
        );
        assert!(kids.take_due(now + 900 * SECOND, 4).is_empty());
    }

    #[test]
    fn due_kids_are_handed_out_most_overdue_first_up_to_the_limit() {
        let now = Instant::now();
        let mut kids = KidKeys::new(timing(), 8);
        for (at, kid) in ["c", "a", "b"].into_iter().enumerate() {
            let at = now + u32::try_from(at).expect("small") * SECOND;
            kids.insert(kid.into(), key(kid, 1), Some(Duration::ZERO), at);
        }
        let later = now + 3600 * SECOND;
        assert_eq!(kids.take_due(later, 2), ["c", "a"]);
        assert_eq!(kids.take_due(later, 2), ["b"]);
    }

    #[test]
    fn a_confirmation_starts_the_kids_lifetime_again() {
        let now = Instant::now();
        let mut kids = KidKeys::new(timing(), 8);
        kids.insert("a".into(), key("a", 1), Some(Duration::ZERO), now);
        assert!(kids.holds("a", &key("a", 1)));
        assert!(
            !kids.holds("a", &key("a", 2)),
            "another key under the same kid"
        );
        let at = now + 70 * 3600 * SECOND;
        assert_eq!(kids.take_due(at, 4), ["a"]);
        let verdict = kids.revalidated("a", Ok(Some(600 * SECOND)), at);
        assert_eq!(verdict, Revalidation::Confirmed);
        let due = kids.next_due().expect("due");
        assert!(due >= at + 480 * SECOND && due <= at + 570 * SECOND);
        // max_staleness now counts from the confirmation, not from the first fetch.
        let later = at + 71 * 3600 * SECOND;
        kids.take_due(later, 4);
        assert_eq!(
            kids.revalidated("a", Err(&status(503)), later),
            Revalidation::Kept
        );
        assert_eq!(held(&kids), ["a"]);
    }

    #[test]
    fn transient_failures_keep_the_key_until_max_staleness_then_drop_it() {
        let now = Instant::now();
        let mut kids = KidKeys::new(timing(), 8);
        kids.insert("a".into(), key("a", 1), Some(Duration::ZERO), now);
        kids.insert("b".into(), key("b", 1), None, now);
        let timeout = FetchError::Timeout {
            url: "https://keys.example/a".into(),
        };
        let changed = FetchError::KeyChanged {
            url: "https://keys.example/a".into(),
            kid: "a".into(),
        };
        let failures = [status(500), timeout, status(429), changed];
        let mut at = now + 300 * SECOND;
        let mut retries = Vec::new();
        for failure in &failures {
            assert_eq!(kids.take_due(at, 4), ["a"]);
            assert_eq!(kids.revalidated("a", Err(failure), at), Revalidation::Kept);
            let due = kids.next_due().expect("due");
            retries.push(due.duration_since(at));
            at = due;
        }
        // Back-off as for document sources: 1 s doubling, capped at min(min_refresh, 60 s).
        assert_eq!(retries, [SECOND, 2 * SECOND, 4 * SECOND, 8 * SECOND]);
        assert_eq!(held(&kids), ["a", "b"]);

        let stale = now + 72 * 3600 * SECOND + SECOND;
        kids.take_due(stale, 4);
        assert_eq!(
            kids.revalidated("a", Err(&status(502)), stale),
            Revalidation::Stale
        );
        assert_eq!(held(&kids), ["b"], "only the stale kid leaves");
    }

    #[test]
    fn retries_are_capped() {
        let now = Instant::now();
        let mut kids = KidKeys::new(timing(), 8);
        kids.insert("a".into(), key("a", 1), Some(Duration::ZERO), now);
        let mut at = now + 300 * SECOND;
        for _ in 0..10 {
            kids.take_due(at, 4);
            kids.revalidated("a", Err(&status(500)), at);
            at = kids.next_due().expect("due");
        }
        kids.take_due(at, 4);
        kids.revalidated("a", Err(&status(500)), at);
        assert_eq!(kids.next_due(), Some(at + 60 * SECOND));
    }

    #[test]
    fn a_gone_answer_removes_the_kid_at_once() {
        for gone in [403, 404, 410] {
            let now = Instant::now();
            let mut kids = KidKeys::new(timing(), 8);
            kids.insert("a".into(), key("a", 1), Some(Duration::ZERO), now);
            kids.insert("b".into(), key("b", 1), Some(Duration::ZERO), now);
            let at = now + 300 * SECOND;
            assert_eq!(kids.take_due(at, 4).len(), 2);
            assert_eq!(
                kids.revalidated("a", Err(&status(gone)), at),
                Revalidation::Gone,
                "{gone}"
            );
            assert!(!kids.contains("a"));
            assert_eq!(held(&kids), ["b"], "{gone}");
            // The last kid going leaves an empty set, not none: the issuer stays usable.
            assert_eq!(
                kids.revalidated("b", Err(&status(gone)), at),
                Revalidation::Gone
            );
            assert_eq!(kids.key_set().expect("key set").len(), 0);
            assert_eq!(kids.next_due(), None);
        }
    }

    #[test]
    fn the_oldest_kid_makes_room_and_its_late_revalidation_is_ignored() {
        let now = Instant::now();
        let mut kids = KidKeys::new(timing(), MAX_PER_KID_KEYS);
        let name = |n: usize| format!("kid-{n}");
        for n in 0..MAX_PER_KID_KEYS {
            let at = now + u32::try_from(n).expect("small") * SECOND;
            let key = key(&name(n), 1);
            assert_eq!(kids.insert(name(n), key, Some(Duration::ZERO), at), None);
        }
        let later = now + 3600 * SECOND;
        let revalidating = kids.take_due(later, 1);
        assert_eq!(revalidating, [name(0)]);
        let evicted = kids.insert("new".into(), key("new", 1), None, later);
        assert_eq!(evicted, Some(name(0)));
        let set = held(&kids);
        assert_eq!(set.len(), MAX_PER_KID_KEYS);
        assert_eq!(set.first(), Some(&name(1)));
        assert_eq!(set.last().map(String::as_str), Some("new"));
        assert_eq!(
            kids.revalidated(&name(0), Ok(None), later),
            Revalidation::Untracked
        );
        assert!(
            !kids.contains(&name(0)),
            "an evicted kid does not come back"
        );
    }

    #[test]
    fn due_times_saturate() {
        let now = Instant::now();
        assert_eq!(due_after(now, SECOND), now + SECOND);
        assert!(due_after(now, Duration::MAX) > now + 365 * 24 * 3600 * SECOND);
    }
}
