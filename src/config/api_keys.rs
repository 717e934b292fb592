//! The `api_keys` section: key sets whose keys are stored only as digests, each key granting
//! an identity that goes through the same routes as a token's.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{FieldError, Timestamp};

/// One set of API keys: its id is the `issuer` of the identities its keys grant.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySetConfig {
    /// Stable id (`[a-z0-9_-]`, ≤ 64), distinct from every issuer id: routes name it in
    /// `require.issuers`, headers and logs show it as the issuer.
    pub id: String,
    /// What every key of the set starts with (`fak_` by default); distinct between sets, so
    /// that a key names its set before anything is looked up. A key is
    /// `<prefix><key id>_<secret>`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Where keys of this set may arrive. Default: the `x-api-key` header.
    #[serde(default = "default_locations")]
    pub locations: Vec<ApiKeyLocation>,
    /// Allow a `query` location. A key in a URL ends up in access logs, browser history and
    /// `Referer` headers: only for clients that cannot send a header.
    #[serde(default)]
    pub allow_query_parameter: bool,
    /// How the stored digests are made: `sha256` (default; entries `sha256:<hex>`) or
    /// `hmac_sha256` with `hmac_secret_file` (entries `hmac-sha256:<hex>`), so a leaked key
    /// file cannot even be checked against guesses without the secret.
    #[serde(default)]
    pub hash: KeyHash,
    /// The HMAC secret of `hash: hmac_sha256` (at least 32 bytes), e.g. a mounted Secret.
    #[serde(default)]
    pub hmac_secret_file: Option<PathBuf>,
    /// A YAML file holding `keys:` (a mounted Secret), read at load and whenever it changes.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Keys written inline (besides those of `file`).
    #[serde(default)]
    pub keys: Vec<ApiKeyEntry>,
}

/// How a set's digests are computed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyHash {
    /// SHA-256 of the whole key.
    #[default]
    Sha256,
    /// HMAC-SHA-256 of the whole key under `hmac_secret_file`.
    HmacSha256,
}

impl KeyHash {
    /// The label before `:` in an entry's `hash`.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::HmacSha256 => "hmac-sha256",
        }
    }
}

/// Where a key may arrive: exactly one of `header` and `query`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyLocation {
    /// Request header (lower-case), e.g. `x-api-key` or `authorization`.
    #[serde(default)]
    pub header: Option<String>,
    /// An authentication scheme before the key in `header` (`ApiKey` for
    /// `Authorization: ApiKey <key>`), matched case-insensitively.
    #[serde(default)]
    pub scheme: Option<String>,
    /// Query parameter name; needs `allow_query_parameter`. Removed before the request goes
    /// upstream (ext_authz gRPC only: the HTTP listener cannot rewrite the URL, and refuses).
    #[serde(default)]
    pub query: Option<String>,
}

/// One key: its id, its digest only, and the identity it grants.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntry {
    /// The key's id, part of the key itself and not secret (`[A-Za-z0-9-]`, ≤ 64; unique in
    /// the set).
    pub id: String,
    /// `sha256:<64 hex>` (or `hmac-sha256:<64 hex>`) of the whole key, as `fedauthz apikey`
    /// prints it. The key itself is never stored.
    pub hash: String,
    /// The identity's subject.
    pub subject: String,
    /// Its tenant.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Its client (application).
    #[serde(default)]
    pub client: Option<String>,
    /// Scopes granted.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Roles granted.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// More attributes (`{attributes.NAME}` in header templates).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Not accepted before this time (RFC 3339).
    #[serde(default)]
    pub not_before: Option<Timestamp>,
    /// Not accepted from this time on (RFC 3339).
    #[serde(default)]
    pub expires: Option<Timestamp>,
    /// Route names the key may be used on; absent: any route.
    #[serde(default)]
    pub routes: Option<Vec<String>>,
    /// Refused from now on (`api_key_revoked`), kept so the refusal says why.
    #[serde(default)]
    pub revoked: bool,
}

/// The contents of a key set's `file`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyFile {
    /// The keys.
    pub keys: Vec<ApiKeyEntry>,
}

fn default_prefix() -> String {
    "fak_".into()
}

fn default_locations() -> Vec<ApiKeyLocation> {
    vec![ApiKeyLocation {
        header: Some("x-api-key".into()),
        scheme: None,
        query: None,
    }]
}

/// The longest key fedauthz reads (a generated one is about 60 bytes).
pub const MAX_KEY_BYTES: usize = 512;

fn is_set_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Whether `id` may name a key (it is embedded in the key, before `_`).
pub fn is_key_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Rule violations of one key entry at `at` of a set hashing with `hash`; `routes` are the
/// configured route names.
pub fn check_entry(
    entry: &ApiKeyEntry,
    at: &str,
    hash: KeyHash,
    routes: &HashSet<&str>,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if !is_key_id(&entry.id) {
        errors.push(FieldError::new(
            format!("{at}.id"),
            format!(
                "must be 1-64 characters of [A-Za-z0-9-] (got {:?})",
                entry.id
            ),
        ));
    }
    let label = hash.label();
    let digest = entry
        .hash
        .strip_prefix(label)
        .and_then(|rest| rest.strip_prefix(':'));
    if !digest.is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())) {
        errors.push(FieldError::new(
            format!("{at}.hash"),
            format!(
                "must be {label}:<64 hex digits>, as `fedauthz apikey` prints it (the set hashes \
                 with {label})"
            ),
        ));
    }
    if entry.subject.is_empty() {
        errors.push(FieldError::new(
            format!("{at}.subject"),
            "must not be empty",
        ));
    }
    if let (Some(from), Some(until)) = (entry.not_before, entry.expires)
        && until <= from
    {
        errors.push(FieldError::new(
            format!("{at}.expires"),
            format!("must be after not_before ({from})"),
        ));
    }
    for (i, route) in entry.routes.iter().flatten().enumerate() {
        if !routes.contains(route.as_str()) {
            errors.push(FieldError::new(
                format!("{at}.routes[{i}]"),
                format!("names no configured route ({route:?})"),
            ));
        }
    }
    errors
}

/// Rule violations of `api_keys` (the entries of key files are checked when they are read).
pub(super) fn validate(config: &super::Config) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let issuers: HashSet<&str> = config.issuers.iter().map(|i| i.id.as_str()).collect();
    let routes = config.route_names();
    let response = &config.response;
    let settable: HashSet<String> = [
        &response.identity_headers.subject,
        &response.identity_headers.issuer,
    ]
    .into_iter()
    .chain(response.identity_header.iter())
    .chain(response.headers.keys())
    .chain(
        config
            .routes
            .iter()
            .flatten()
            .flat_map(|r| r.headers.keys()),
    )
    .chain(config.mint.iter().map(|m| &m.header))
    .map(|name| name.to_ascii_lowercase())
    .collect();
    let settable: HashSet<&str> = settable.iter().map(String::as_str).collect();
    let mut ids = HashMap::new();
    let mut prefixes: Vec<(usize, &str)> = Vec::new();
    for (s, set) in config.api_keys.iter().enumerate() {
        let at = format!("api_keys[{s}]");
        if !is_set_id(&set.id) {
            errors.push(FieldError::new(
                format!("{at}.id"),
                format!("must be 1-64 characters of [a-z0-9_-] (got {:?})", set.id),
            ));
        }
        if issuers.contains(set.id.as_str()) {
            errors.push(FieldError::new(
                format!("{at}.id"),
                format!(
                    "{:?} is also an issuer id: the identity's issuer would be ambiguous",
                    set.id
                ),
            ));
        }
        if let Some(first) = ids.insert(set.id.as_str(), s) {
            errors.push(FieldError::new(
                format!("{at}.id"),
                format!("duplicates api_keys[{first}].id"),
            ));
        }
        let prefix_ok = (2..=32).contains(&set.prefix.len())
            && set
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !prefix_ok {
            errors.push(FieldError::new(
                format!("{at}.prefix"),
                format!(
                    "must be 2-32 characters of [A-Za-z0-9_-] (got {:?})",
                    set.prefix
                ),
            ));
        }
        for (other, prefix) in &prefixes {
            if prefix.starts_with(set.prefix.as_str()) || set.prefix.starts_with(prefix) {
                errors.push(FieldError::new(
                    format!("{at}.prefix"),
                    format!(
                        "{:?} overlaps api_keys[{other}].prefix {prefix:?}: a key must name one set",
                        set.prefix
                    ),
                ));
            }
        }
        prefixes.push((s, set.prefix.as_str()));
        if set.locations.is_empty() {
            errors.push(FieldError::new(
                format!("{at}.locations"),
                "must list at least one location",
            ));
        }
        for (i, location) in set.locations.iter().enumerate() {
            let at = format!("{at}.locations[{i}]");
            errors.extend(check_location(location, &at, set, config, &settable));
        }
        match (set.hash, &set.hmac_secret_file) {
            (KeyHash::HmacSha256, None) => errors.push(FieldError::new(
                format!("{at}.hmac_secret_file"),
                "is required with hash: hmac_sha256",
            )),
            (KeyHash::Sha256, Some(_)) => errors.push(FieldError::new(
                format!("{at}.hmac_secret_file"),
                "only applies to hash: hmac_sha256",
            )),
            _ => {}
        }
        if set.file.is_none() && set.keys.is_empty() {
            errors.push(FieldError::new(
                format!("{at}.keys"),
                "is empty and no file is set: the set could grant nothing",
            ));
        }
        let mut key_ids = HashMap::new();
        for (k, entry) in set.keys.iter().enumerate() {
            let entry_at = format!("{at}.keys[{k}]");
            errors.extend(check_entry(entry, &entry_at, set.hash, &routes));
            if let Some(first) = key_ids.insert(entry.id.as_str(), k) {
                errors.push(FieldError::new(
                    format!("{entry_at}.id"),
                    format!("duplicates {at}.keys[{first}].id"),
                ));
            }
        }
    }
    errors
}

/// Rule violations of one key location at `at` of `set`; `settable` are the headers
/// fedauthz sets upstream.
fn check_location(
    location: &ApiKeyLocation,
    at: &str,
    set: &ApiKeySetConfig,
    config: &super::Config,
    settable: &HashSet<&str>,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    match (&location.header, &location.query) {
        (Some(header), None) => {
            let token = |s: &str| {
                !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            };
            if !token(header) || header.bytes().any(|b| b.is_ascii_uppercase()) {
                errors.push(FieldError::new(
                    format!("{at}.header"),
                    format!("must be a lower-case header name (got {header:?})"),
                ));
            }
            if ["cookie", "host"].contains(&header.as_str()) {
                errors.push(FieldError::new(
                    format!("{at}.header"),
                    format!("{header} cannot carry an API key"),
                ));
            }
            if header == "authorization" && location.scheme.is_none() {
                errors.push(FieldError::new(
                    format!("{at}.scheme"),
                    "is required with the authorization header (e.g. ApiKey), so keys \
                     and bearer tokens never share a location",
                ));
            }
            if let Some(scheme) = &location.scheme
                && (!token(scheme) || scheme.eq_ignore_ascii_case("bearer"))
            {
                errors.push(FieldError::new(
                    format!("{at}.scheme"),
                    format!("must be an authentication scheme other than Bearer (got {scheme:?})"),
                ));
            }
        }
        (None, Some(query)) => {
            if !set.allow_query_parameter {
                errors.push(FieldError::new(
                    format!("{at}.query"),
                    "needs allow_query_parameter: true (keys in URLs end up in logs)",
                ));
            }
            if location.scheme.is_some() {
                errors.push(FieldError::new(
                    format!("{at}.scheme"),
                    "only applies to a header",
                ));
            }
            if query.is_empty()
                || !query
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                errors.push(FieldError::new(
                    format!("{at}.query"),
                    format!("must be a plain parameter name (got {query:?})"),
                ));
            }
        }
        _ => errors.push(FieldError::new(at, "needs exactly one of header and query")),
    }
    // A header fedauthz sets upstream cannot also be one it removes as a key.
    if let Some(header) = &location.header
        && settable.contains(header.as_str())
    {
        errors.push(FieldError::new(
            format!("{at}.header"),
            format!("{header} is a header fedauthz sets upstream"),
        ));
    }
    // A location a token issuer also reads would make every credential there both.
    if let Some(header) = &location.header
        && config
            .issuers
            .iter()
            .flat_map(|i| i.locations())
            .any(|token| {
                token.header.as_deref() == Some(header.as_str())
                    && token
                        .prefix
                        .as_deref()
                        .map(str::trim_end)
                        .map(str::to_ascii_lowercase)
                        == location.scheme.as_deref().map(str::to_ascii_lowercase)
            })
    {
        errors.push(FieldError::new(
            format!("{at}.header"),
            format!("{header} is also a token location of an issuer"),
        ));
    }
    errors
}
