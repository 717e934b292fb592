//! Hardened HTTP fetches of key material: HTTPS only (unless an issuer opts into plain HTTP for
//! tests), an optional CA bundle, connect and total timeouts, a response size cap counted while
//! streaming, redirects limited and never to a weaker scheme, and the caching lifetime the
//! server announced. Only URLs from configuration or a verified discovery document get here;
//! nothing a token names is ever fetched.

use std::path::Path;
use std::time::{Duration, SystemTime};

use reqwest::header::{CACHE_CONTROL, DATE, EXPIRES, HeaderMap};

const MAX_REDIRECTS: usize = 3;

/// Why a fetch failed. [`FetchError::kind`] is a bounded label for metrics.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Connection, TLS or protocol failure.
    #[error("request to {url} failed: {detail}")]
    Request {
        /// The URL.
        url: String,
        /// The client error, with its causes.
        detail: String,
    },
    /// No answer within the timeout.
    #[error("request to {url} timed out")]
    Timeout {
        /// The URL.
        url: String,
    },
    /// A non-success HTTP status.
    #[error("{url} answered HTTP {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The body exceeded the configured cap.
    #[error("{url} sent more than {limit} bytes")]
    TooLarge {
        /// The URL.
        url: String,
        /// The cap.
        limit: usize,
    },
    /// The document is not what the source expects (not JSON, no usable keys, …).
    #[error("{url}: {detail}")]
    Invalid {
        /// The URL.
        url: String,
        /// What was wrong.
        detail: String,
    },
    /// A discovery document names another issuer.
    #[error("{url} describes issuer {found:?}, not {expected:?}")]
    IssuerMismatch {
        /// The URL.
        url: String,
        /// The configured issuer.
        expected: String,
        /// The document's `issuer`.
        found: String,
    },
    /// A per-kid key server now serves a different key for a kid it served before. A kid's
    /// key never changes (AWS ALB), so the new key is refused.
    #[error("{url} now serves a different key for kid {kid:?} than before")]
    KeyChanged {
        /// The URL.
        url: String,
        /// The kid.
        kid: String,
    },
}

impl FetchError {
    /// A stable, bounded label: `request`, `timeout`, `status`, `too_large`, `invalid`,
    /// `issuer_mismatch`. A changed key counts as `invalid`: the answer is not what the source
    /// expects.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Request { .. } => "request",
            Self::Timeout { .. } => "timeout",
            Self::Status { .. } => "status",
            Self::TooLarge { .. } => "too_large",
            Self::Invalid { .. } | Self::KeyChanged { .. } => "invalid",
            Self::IssuerMismatch { .. } => "issuer_mismatch",
        }
    }

    /// Whether the server answered definitely that the document does not exist: HTTP 404 or
    /// 410, or 403, which S3-backed key endpoints (AWS ALB) answer for a missing object. Any
    /// other failure may be transient.
    pub fn is_gone(&self) -> bool {
        matches!(
            self,
            Self::Status {
                status: 403 | 404 | 410,
                ..
            }
        )
    }
}

/// A fetched document and how long the server said it may be cached.
#[derive(Debug)]
pub struct Fetched {
    /// The body.
    pub body: Vec<u8>,
    /// From `Cache-Control: max-age` (or `no-cache`/`no-store` as zero), else `Expires`.
    pub max_age: Option<Duration>,
}

/// Fetch settings of one issuer.
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    max_bytes: usize,
    insecure_http: bool,
}

/// Fetch settings as configured.
#[derive(Debug, Clone)]
pub struct FetchPolicy<'a> {
    /// CA bundle trusted instead of the system roots.
    pub ca_file: Option<&'a Path>,
    /// Allow `http://`.
    pub insecure_http: bool,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Total timeout.
    pub timeout: Duration,
    /// Body cap.
    pub max_bytes: usize,
}

impl Fetcher {
    /// Builds the client. Errors say what was wrong with the CA file.
    pub fn new(policy: &FetchPolicy<'_>) -> Result<Self, String> {
        let insecure = policy.insecure_http;
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
            } else if attempt.url().scheme() != "https" && !insecure {
                attempt.error("redirect to a non-HTTPS URL")
            } else {
                attempt.follow()
            }
        });
        let mut builder = reqwest::Client::builder()
            .https_only(!insecure)
            .redirect(redirects)
            .connect_timeout(policy.connect_timeout)
            .timeout(policy.timeout)
            .user_agent(concat!("fedauthz/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = policy.ca_file {
            let pem = std::fs::read(path)
                .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|err| {
                format!("{} is not a PEM certificate bundle: {err}", path.display())
            })?;
            if certs.is_empty() {
                return Err(format!("{} holds no certificate", path.display()));
            }
            builder = builder.tls_certs_only(certs);
        }
        let client = builder
            .build()
            .map_err(|err| format!("cannot build the HTTPS client: {err}"))?;
        Ok(Self {
            client,
            max_bytes: policy.max_bytes,
            insecure_http: insecure,
        })
    }

    /// Whether `url` may be fetched at all under this policy.
    pub fn allows(&self, url: &reqwest::Url) -> bool {
        url.scheme() == "https" || (self.insecure_http && url.scheme() == "http")
    }

    /// GETs `url`, refusing non-2xx answers and bodies over the cap.
    pub async fn get(&self, url: &reqwest::Url, accept: &str) -> Result<Fetched, FetchError> {
        let name = url.to_string();
        if !self.allows(url) {
            return Err(FetchError::Invalid {
                url: name,
                detail: "refusing a non-HTTPS URL".into(),
            });
        }
        let failed = |err: reqwest::Error, url: &str| {
            if err.is_timeout() {
                FetchError::Timeout {
                    url: url.to_owned(),
                }
            } else {
                FetchError::Request {
                    url: url.to_owned(),
                    detail: error_chain(&err),
                }
            }
        };
        let mut response = self
            .client
            .get(url.clone())
            .header("accept", accept)
            .send()
            .await
            .map_err(|err| failed(err, &name))?;
        if !response.status().is_success() {
            return Err(FetchError::Status {
                url: name,
                status: response.status().as_u16(),
            });
        }
        let too_large = || FetchError::TooLarge {
            url: name.clone(),
            limit: self.max_bytes,
        };
        if response
            .content_length()
            .is_some_and(|len| len > self.max_bytes as u64)
        {
            return Err(too_large());
        }
        let max_age = max_age(response.headers(), SystemTime::now());
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|err| failed(err, &name))? {
            if body.len() + chunk.len() > self.max_bytes {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Fetched { body, max_age })
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The caching lifetime a response announces: `Cache-Control` `max-age` (with `no-cache` or
/// `no-store` meaning zero) wins over `Expires` (relative to `Date`, else to `now`).
fn max_age(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let cache_control = headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim);
    let mut age = None;
    for directive in cache_control {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-cache" || lower == "no-store" {
            return Some(Duration::ZERO);
        }
        if let Some(value) = lower.strip_prefix("max-age=") {
            age = value
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    if age.is_some() {
        return age;
    }
    let date = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
    };
    let expires = date(EXPIRES)?;
    let base = date(DATE).unwrap_or(now);
    Some(expires.duration_since(base).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn cache_lifetimes_follow_cache_control_then_expires() {
        let now = httpdate::parse_http_date("Sun, 22 Nov 2026 12:00:00 GMT").unwrap();
        let age = |pairs: &[(&'static str, &str)]| max_age(&headers(pairs), now);
        assert_eq!(
            age(&[("cache-control", "public, max-age=21600, must-revalidate")]),
            Some(Duration::from_secs(21600))
        );
        assert_eq!(age(&[("cache-control", "no-cache")]), Some(Duration::ZERO));
        assert_eq!(
            age(&[
                ("cache-control", "max-age=60"),
                ("expires", "Sun, 22 Nov 2026 13:00:00 GMT")
            ]),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            age(&[
                ("date", "Sun, 22 Nov 2026 12:30:00 GMT"),
                ("expires", "Sun, 22 Nov 2026 13:00:00 GMT")
            ]),
            Some(Duration::from_secs(1800))
        );
        assert_eq!(
            age(&[("expires", "Sun, 22 Nov 2026 11:00:00 GMT")]),
            Some(Duration::ZERO)
        );
        assert_eq!(age(&[("expires", "not a date")]), None);
        assert_eq!(age(&[("cache-control", "max-age=lots")]), None);
        assert_eq!(age(&[]), None);
    }

    #[test]
    fn only_403_404_and_410_mean_gone() {
        let status = |status| FetchError::Status {
            url: "https://keys.example/k".into(),
            status,
        };
        for gone in [403, 404, 410] {
            assert!(status(gone).is_gone(), "{gone}");
        }
        for transient in [400, 401, 408, 429, 500, 502, 503, 504] {
            assert!(!status(transient).is_gone(), "{transient}");
        }
        let url = || "https://keys.example/k".to_owned();
        assert!(!FetchError::Timeout { url: url() }.is_gone());
        assert!(
            !FetchError::Request {
                url: url(),
                detail: "connection refused".into()
            }
            .is_gone()
        );
        assert!(
            !FetchError::Invalid {
                url: url(),
                detail: "not PEM".into()
            }
            .is_gone()
        );
        let changed = FetchError::KeyChanged {
            url: url(),
            kid: "k".into(),
        };
        assert!(!changed.is_gone());
        assert_eq!(changed.kind(), "invalid");
    }
}
