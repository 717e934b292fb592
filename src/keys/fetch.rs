//! Where keys come from: inline and file key sets load at once; `jwks_uri` key sets are
//! fetched over HTTPS in the background and refreshed, keeping the last good set when a
//! refresh fails. Discovery, Cache-Control and unknown-`kid` refreshes arrive with issue 4.
//!
//! [`prepare`] does everything that can fail on configuration (reading files and secrets,
//! parsing inline keys, building HTTP clients) and reports it with field paths; [`KeySources`]
//! then runs the prepared sources.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::{AlgorithmPolicy, KeySet, KeySetError, KeyStore, TrustedKey};
use crate::config::{Config, FieldError, IssuerConfig, SecretEncoding, SecretSource};

/// Largest accepted JWK Set document.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

/// Why a key set could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Connection, TLS, timeout or protocol failure.
    #[error("request to {url} failed: {source}")]
    Request {
        /// The URL.
        url: String,
        /// The client error.
        source: reqwest::Error,
    },
    /// A non-success HTTP status.
    #[error("{url} answered HTTP {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// Bigger than [`MAX_JWKS_BYTES`].
    #[error("{url} sent more than {MAX_JWKS_BYTES} bytes")]
    TooLarge {
        /// The URL.
        url: String,
    },
    /// The document is not a usable key set.
    #[error("{url} did not serve a usable key set: {source}")]
    KeySet {
        /// The URL.
        url: String,
        /// Why.
        source: KeySetError,
    },
}

/// A remote JWK Set, ready to fetch.
#[derive(Debug, Clone)]
struct RemoteJwks {
    url: reqwest::Url,
    client: reqwest::Client,
    refresh: Duration,
}

#[derive(Debug)]
enum PreparedSource {
    Loaded(KeySet),
    Remote(RemoteJwks),
}

/// One issuer's key source, checked and ready to run.
#[derive(Debug)]
pub struct PreparedKeys {
    issuer_id: String,
    policy: AlgorithmPolicy,
    hmac: Option<Arc<TrustedKey>>,
    source: PreparedSource,
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
    let policy = AlgorithmPolicy {
        allowed: issuer.algorithms.clone(),
    };
    let hmac = match &issuer.hmac_secret {
        Some(secret) => {
            let bytes = read_secret(secret)
                .map_err(|why| FieldError::new(format!("{at}.hmac_secret"), why))?;
            let key = TrustedKey::hmac(&bytes, secret.kid.clone(), &issuer.algorithms)
                .map_err(|why| FieldError::new(format!("{at}.hmac_secret"), why.to_string()))?;
            Some(Arc::new(key))
        }
        None => None,
    };
    let fingerprint =
        serde_json::json!([issuer.keys, issuer.hmac_secret, issuer.algorithms]).to_string();
    let keys_at = format!("{at}.keys");
    let source =
        match &issuer.keys {
            None => PreparedSource::Loaded(
                KeySet::from_keys(hmac.iter().cloned().collect(), Vec::new())
                    .map_err(|err| FieldError::new(format!("{at}.hmac_secret"), err.to_string()))?,
            ),
            Some(keys) => {
                if let Some(jwks) = &keys.jwks {
                    PreparedSource::Loaded(KeySet::from_jwks(jwks, &policy, hmac.clone()).map_err(
                        |err| FieldError::new(format!("{keys_at}.jwks"), err.to_string()),
                    )?)
                } else if let Some(path) = &keys.jwks_file {
                    let field = format!("{keys_at}.jwks_file");
                    let bytes = std::fs::read(path).map_err(|err| {
                        FieldError::new(&field, format!("cannot read {}: {err}", path.display()))
                    })?;
                    PreparedSource::Loaded(
                        KeySet::from_jwks_bytes(&bytes, &policy, hmac.clone()).map_err(|err| {
                            FieldError::new(&field, format!("{}: {err}", path.display()))
                        })?,
                    )
                } else if let Some(uri) = &keys.jwks_uri {
                    let url = reqwest::Url::parse(uri).map_err(|err| {
                        FieldError::new(format!("{keys_at}.jwks_uri"), err.to_string())
                    })?;
                    let client = http_client(keys.ca_file.as_deref())
                        .map_err(|why| FieldError::new(format!("{keys_at}.ca_file"), why))?;
                    PreparedSource::Remote(RemoteJwks {
                        url,
                        client,
                        refresh: keys.refresh_interval.get(),
                    })
                } else {
                    return Err(FieldError::new(
                        keys_at,
                        "set exactly one of jwks_uri, jwks_file or jwks",
                    ));
                }
            }
        };
    Ok(PreparedKeys {
        issuer_id: issuer.id.clone(),
        policy,
        hmac,
        source,
        fingerprint,
    })
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

fn http_client(ca_file: Option<&std::path::Path>) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .https_only(true)
        .redirect(reqwest::redirect::Policy::limited(3))
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .user_agent(concat!("fedauthz/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = ca_file {
        let pem =
            std::fs::read(path).map_err(|err| format!("cannot read {}: {err}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|err| format!("{} is not a PEM certificate bundle: {err}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("{} holds no certificate", path.display()));
        }
        builder = builder.tls_certs_only(certs);
    }
    builder
        .build()
        .map_err(|err| format!("cannot build the HTTPS client: {err}"))
}

/// Fetches a JWK Set document, refusing non-2xx answers and anything over [`MAX_JWKS_BYTES`].
async fn fetch_document(remote: &RemoteJwks) -> Result<Vec<u8>, FetchError> {
    let url = remote.url.to_string();
    let request_error = |source| FetchError::Request {
        url: url.clone(),
        source,
    };
    let mut response = remote
        .client
        .get(remote.url.clone())
        .header("accept", "application/jwk-set+json, application/json")
        .send()
        .await
        .map_err(request_error)?;
    if !response.status().is_success() {
        return Err(FetchError::Status {
            url,
            status: response.status().as_u16(),
        });
    }
    if response
        .content_length()
        .is_some_and(|len| len > MAX_JWKS_BYTES as u64)
    {
        return Err(FetchError::TooLarge { url });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(request_error)? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(FetchError::TooLarge { url });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
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
    _refresher: Option<AbortOnDrop>,
}

/// The running key sources of every issuer of one configuration.
#[derive(Debug, Default)]
pub struct KeySources {
    by_id: HashMap<String, Arc<IssuerKeys>>,
}

impl KeySources {
    /// Starts `prepared` sources. Remote sources that `previous` already runs with the same
    /// configuration are kept as they are (with their keys); others start fresh. Must be called
    /// inside a tokio runtime when any source is remote.
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
            let running = match (reusable, keys.source) {
                (Some(old), _) => Arc::clone(old),
                (None, PreparedSource::Loaded(set)) => Arc::new(IssuerKeys {
                    store: Arc::new(KeyStore::with_keys(set, Arc::clone(changed))),
                    fingerprint: keys.fingerprint,
                    remote: false,
                    _refresher: None,
                }),
                (None, PreparedSource::Remote(remote)) => {
                    let store = Arc::new(KeyStore::new(Arc::clone(changed)));
                    let task = tokio::spawn(keep_fresh(
                        keys.issuer_id.clone(),
                        Arc::clone(&store),
                        remote,
                        keys.policy,
                        keys.hmac,
                    ));
                    Arc::new(IssuerKeys {
                        store,
                        fingerprint: keys.fingerprint,
                        remote: true,
                        _refresher: Some(AbortOnDrop(task)),
                    })
                }
            };
            by_id.insert(keys.issuer_id, running);
        }
        Self { by_id }
    }

    /// The key store of issuer `id`.
    pub fn store(&self, id: &str) -> Option<Arc<KeyStore>> {
        self.by_id.get(id).map(|keys| Arc::clone(&keys.store))
    }

    /// Ids of the issuers whose keys have not loaded yet, sorted.
    pub fn missing(&self) -> Vec<String> {
        let mut missing: Vec<String> = self
            .by_id
            .iter()
            .filter(|(_, keys)| !keys.store.has_keys())
            .map(|(id, _)| id.clone())
            .collect();
        missing.sort();
        missing
    }
}

/// Fetches `remote` until it succeeds, then refreshes it every `remote.refresh`, keeping the
/// last good set whenever a fetch fails.
async fn keep_fresh(
    issuer: String,
    store: Arc<KeyStore>,
    remote: RemoteJwks,
    policy: AlgorithmPolicy,
    hmac: Option<Arc<TrustedKey>>,
) {
    let mut retry = Duration::from_secs(1);
    loop {
        let result = fetch_document(&remote).await.and_then(|bytes| {
            KeySet::from_jwks_bytes(&bytes, &policy, hmac.clone()).map_err(|source| {
                FetchError::KeySet {
                    url: remote.url.to_string(),
                    source,
                }
            })
        });
        match result {
            Ok(set) => {
                for skipped in set.skipped() {
                    warn!(issuer = %issuer, key = %skipped, "key left out of the key set");
                }
                info!(issuer = %issuer, keys = set.len(), url = %remote.url, "keys loaded");
                store.replace(set);
                retry = Duration::from_secs(1);
                tokio::time::sleep(remote.refresh).await;
            }
            Err(err) => {
                if store.has_keys() {
                    warn!(issuer = %issuer, error = %err, "key refresh failed; keeping the last good keys");
                } else {
                    warn!(issuer = %issuer, error = %err, "key fetch failed; the issuer has no keys yet");
                }
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(MAX_RETRY_DELAY).min(remote.refresh);
            }
        }
    }
}
