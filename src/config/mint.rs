//! The `mint` section: the internal token fedauthz issues to upstreams, its signing keys and
//! their rotation states, and where verifiers find them (OIDC discovery and a JWKS).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ContentEncryption, HumanDuration, KeyManagement, Timestamp};

/// Internal tokens: on allow, fedauthz signs a short-lived JWT access token (RFC 9068,
/// `typ: at+jwt`) of its own for the upstream, so that services trust one issuer and one key
/// set instead of every external identity provider. Absent: nothing is minted.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MintConfig {
    /// The `iss` of minted tokens: an `https://` (or, inside a cluster, `http://`) URL without
    /// query, fragment or trailing slash. Discovery is served at
    /// `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    /// The default `aud`. Set: every route that allows a verified token mints for it (a
    /// route's `mint` may change the audience or turn minting off). Absent: only routes with
    /// a `mint` section mint.
    #[serde(default)]
    pub audience: Option<String>,
    /// How long a minted token lives (10s–1h); never past the incoming token's `exp`.
    #[serde(default = "default_lifetime")]
    pub lifetime: HumanDuration,
    /// The upstream header that carries the minted token. `authorization` (the default) is set
    /// to `Bearer <token>`; any other header carries the token alone. The incoming credential
    /// is removed either way.
    #[serde(default = "default_header")]
    pub header: String,
    /// The claim that holds the normalized identity (source issuer, original `iss`, subject,
    /// tenant, client, roles, groups, email, provider attributes) as one object, so identity
    /// names from different identity providers never collide with each other or with
    /// registered claims.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// More top-level claims, name → template (as `response.headers`). Registered claims (`iss`,
    /// `sub`, `aud`, `exp`, `nbf`, `iat`, `jti`, `client_id`, `scope`, …) and the namespace
    /// claim cannot be named; a template without a value for a token leaves its claim out.
    #[serde(default)]
    pub claims: BTreeMap<String, String>,
    /// Tolerated clock difference with verifiers: a retired key stays published for the
    /// lifetime plus this after it stopped signing.
    #[serde(default = "default_clock_skew")]
    pub clock_skew: HumanDuration,
    /// The signing keys, each with its rotation state: exactly one `current`.
    pub keys: Vec<MintKeyConfig>,
    /// How long a key must have been published as `next` before it may become `current`, so
    /// that every verifier's cached JWKS knows it; at least `publish.max_age`.
    #[serde(default = "default_lead_time")]
    pub key_lead_time: HumanDuration,
    /// Where discovery and the JWKS are served.
    #[serde(default)]
    pub publish: PublishConfig,
    /// Minted tokens reused per identity and audience.
    #[serde(default)]
    pub cache: MintCacheConfig,
}

/// One signing key: in a PEM file or in a PKCS#11 module (exactly one of `file` and `pkcs11`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MintKeyConfig {
    /// The signing algorithm; it must fit the key (P-256 for ES256, Ed25519 for EdDSA, RSA of
    /// at least 2048 bits for RS256 and PS256).
    #[serde(default)]
    pub algorithm: SigningAlgorithmName,
    /// A PEM private key (PKCS#8, SEC1 or PKCS#1), e.g. from a mounted Secret. Re-read when it
    /// changes.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// A key inside a PKCS#11 module (HSM); it never leaves the module.
    #[serde(default)]
    pub pkcs11: Option<Pkcs11KeyConfig>,
    /// `next`: published, not signing yet. `current`: signing (exactly one). `retired`: no
    /// longer signing, published until every token it signed has expired.
    pub state: KeyState,
    /// When the key was first published (RFC 3339, e.g. `2026-12-01T09:00:00Z`). A `current`
    /// key needs it at least `key_lead_time` in the past, unless `initial`.
    #[serde(default)]
    pub published_at: Option<Timestamp>,
    /// When a `retired` key stopped signing (RFC 3339); it is published until then plus the
    /// lifetime and clock skew. Required for `retired`.
    #[serde(default)]
    pub retired_at: Option<Timestamp>,
    /// The issuer's very first key, current without a lead time: no verifier has a cached JWKS
    /// yet. Refused once any key is `retired` (verifiers exist by then).
    #[serde(default)]
    pub initial: bool,
}

/// A key's rotation state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    /// Published, not signing yet.
    Next,
    /// Signing.
    Current,
    /// Published until its tokens have expired, not signing.
    Retired,
}

/// The signing algorithms fedauthz mints with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
pub enum SigningAlgorithmName {
    /// ECDSA P-256 with SHA-256.
    #[default]
    #[serde(rename = "ES256")]
    Es256,
    /// Ed25519.
    #[serde(rename = "EdDSA")]
    EdDsa,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    #[serde(rename = "RS256")]
    Rs256,
    /// RSASSA-PSS with SHA-256.
    #[serde(rename = "PS256")]
    Ps256,
}

/// A private key in a PKCS#11 module. The token by `token_label` or `slot` (one of them), the
/// key by `key_label` and/or `key_id`; the key must be sensitive and not extractable.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11KeyConfig {
    /// The module (e.g. `/usr/lib/softhsm/libsofthsm2.so`).
    pub module: PathBuf,
    /// The token's label.
    #[serde(default)]
    pub token_label: Option<String>,
    /// The slot id.
    #[serde(default)]
    pub slot: Option<u64>,
    /// The key's `CKA_LABEL` (the private and the public object share it).
    #[serde(default)]
    pub key_label: Option<String>,
    /// The key's `CKA_ID`, in hex.
    #[serde(default)]
    pub key_id: Option<String>,
    /// The user PIN: from an environment variable or a file (exactly one).
    pub pin: PinSource,
    /// Sessions kept open for signing (1–64): signatures in flight at once.
    #[serde(default = "default_sessions")]
    pub sessions: usize,
}

/// Where a PIN is read from. Exactly one of `env` and `file`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PinSource {
    /// An environment variable.
    #[serde(default)]
    pub env: Option<String>,
    /// A file (surrounding whitespace ignored).
    #[serde(default)]
    pub file: Option<PathBuf>,
}

/// Where verifiers fetch discovery and keys.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishConfig {
    /// A listener of its own for discovery and the JWKS (plain HTTP; nothing else is served
    /// there). Absent: they are served on the admin listener.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// `Cache-Control: max-age` of both documents: how long verifiers may keep them.
    #[serde(default = "default_max_age")]
    pub max_age: HumanDuration,
    /// The `jwks_uri` discovery announces. Default `{issuer}/.well-known/jwks.json`.
    #[serde(default)]
    pub jwks_uri: Option<String>,
}

impl Default for PublishConfig {
    fn default() -> Self {
        Self {
            listen: None,
            max_age: default_max_age(),
            jwks_uri: None,
        }
    }
}

/// The minted-token cache: a token is reused for the same identity and audience until
/// `renew_before` its end.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MintCacheConfig {
    /// Most tokens held (0 turns the cache off: every allow signs).
    #[serde(default = "default_cache_entries")]
    pub max_entries: u64,
    /// A cached token is replaced this long before it expires, so the upstream never gets one
    /// about to end. Less than the lifetime.
    #[serde(default = "default_renew_before")]
    pub renew_before: HumanDuration,
}

impl Default for MintCacheConfig {
    fn default() -> Self {
        Self {
            max_entries: default_cache_entries(),
            renew_before: default_renew_before(),
        }
    }
}

/// A route's minting: for whom, or not at all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteMintConfig {
    /// `false`: this route mints nothing (even with a default `mint.audience`).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The `aud` for this route (default `mint.audience`).
    #[serde(default)]
    pub audience: Option<String>,
    /// Encrypt the minted token to the upstream's public key (a nested JWT, JWE `cty: JWT`).
    #[serde(default)]
    pub encrypt: Option<MintEncryptionConfig>,
}

/// Encryption of a minted token to one upstream.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MintEncryptionConfig {
    /// The upstream's public key: PEM (SPKI) or a public JWK. Re-read when it changes.
    pub key_file: PathBuf,
    /// Key management: `RSA-OAEP-256` (RSA key) or `ECDH-ES`, `ECDH-ES+A128KW`,
    /// `ECDH-ES+A256KW` (P-256, P-384 or X25519 key).
    pub algorithm: KeyManagement,
    /// Content encryption.
    #[serde(default = "default_content")]
    pub content_encryption: ContentEncryption,
    /// The `kid` put in the JWE header (default: the key's RFC 7638 thumbprint).
    #[serde(default)]
    pub kid: Option<String>,
}

fn default_lifetime() -> HumanDuration {
    HumanDuration::from_secs(300)
}

fn default_header() -> String {
    "authorization".into()
}

fn default_namespace() -> String {
    "fedauthz".into()
}

fn default_clock_skew() -> HumanDuration {
    HumanDuration::from_secs(60)
}

fn default_lead_time() -> HumanDuration {
    HumanDuration::from_secs(3600)
}

fn default_max_age() -> HumanDuration {
    HumanDuration::from_secs(300)
}

fn default_cache_entries() -> u64 {
    10_000
}

fn default_renew_before() -> HumanDuration {
    HumanDuration::from_secs(60)
}

fn default_sessions() -> usize {
    4
}

fn default_true() -> bool {
    true
}

fn default_content() -> ContentEncryption {
    ContentEncryption::A256Gcm
}

impl MintConfig {
    /// Files read when the configuration is built (key files, upstream encryption keys, PIN
    /// files): a change reloads the configuration.
    pub fn files(&self) -> impl Iterator<Item = &PathBuf> {
        self.keys.iter().filter_map(|key| {
            key.file
                .as_ref()
                .or_else(|| key.pkcs11.as_ref().and_then(|p| p.pin.file.as_ref()))
        })
    }
}

/// Claims fedauthz alone writes into a minted token: RFC 7519's registered claims, those of
/// RFC 9068 and RFC 8693, and OpenID Connect's authentication claims. A configured template
/// can never name one.
pub const REGISTERED_CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "client_id",
    "scope",
    "auth_time",
    "acr",
    "amr",
    "azp",
    "nonce",
    "cnf",
    "act",
    "may_act",
    "typ",
    "cty",
];

/// The `mint` rules the schema cannot express (time-dependent rules, such as a `current`
/// key's lead time, are checked when the keys load).
pub(super) fn validate(config: &super::Config) -> Vec<super::FieldError> {
    use super::FieldError;
    let mut errors = Vec::new();
    let mut push = |path: String, message: String| errors.push(FieldError::new(path, message));
    let routes = config.routes.as_deref().unwrap_or_default();
    let Some(mint) = &config.mint else {
        for (i, route) in routes.iter().enumerate() {
            if route.mint.is_some() {
                push(
                    format!("routes[{i}].mint"),
                    "needs the top-level mint section (issuer and keys)".into(),
                );
            }
        }
        return errors;
    };
    if let Err(why) = check_url(&mint.issuer) {
        push("mint.issuer".into(), why);
    }
    if let Some(audience) = &mint.audience
        && let Err(why) = check_audience(audience)
    {
        push("mint.audience".into(), why);
    }
    let lifetime = mint.lifetime.get();
    if !(MIN_LIFETIME..=MAX_LIFETIME).contains(&lifetime) {
        push(
            "mint.lifetime".into(),
            format!("must be between 10s and 1h (got {})", mint.lifetime),
        );
    }
    let header = mint.header.to_ascii_lowercase();
    if let Err(why) = super::validate::check_header_name(&mint.header) {
        push("mint.header".into(), why);
    } else if matches!(header.as_str(), "host" | "cookie")
        || header
            == config
                .response
                .identity_headers
                .subject
                .to_ascii_lowercase()
        || header == config.response.identity_headers.issuer.to_ascii_lowercase()
        || config.response.identity_header.as_deref() == Some(header.as_str())
        || config
            .response
            .headers
            .keys()
            .chain(routes.iter().flat_map(|r| r.headers.keys()))
            .any(|name| name.eq_ignore_ascii_case(&header))
    {
        push(
            "mint.header".into(),
            format!("{:?} is already set by another setting", mint.header),
        );
    }
    if mint.namespace.is_empty()
        || mint.namespace.len() > 256
        || REGISTERED_CLAIMS.contains(&mint.namespace.as_str())
    {
        push(
            "mint.namespace".into(),
            format!(
                "must be a 1-256 character claim name that is not a registered claim (got {:?})",
                mint.namespace
            ),
        );
    }
    for (name, template) in &mint.claims {
        let at = format!("mint.claims.{name}");
        if REGISTERED_CLAIMS.contains(&name.as_str()) || *name == mint.namespace {
            push(
                at,
                format!("{name:?} is written by fedauthz and cannot be set by a template"),
            );
        } else if name.is_empty() || name.len() > 256 {
            push(at, "claim names are 1-256 characters".into());
        } else if let Err(why) = crate::response::Template::parse(template) {
            push(at, format!("template {template:?} {why}"));
        }
    }
    if mint.clock_skew.get() > MAX_CLOCK_SKEW {
        push(
            "mint.clock_skew".into(),
            format!("must be at most 5m (got {})", mint.clock_skew),
        );
    }
    check_keys(mint, &mut push);
    if mint.key_lead_time.get() < mint.publish.max_age.get() {
        push(
            "mint.key_lead_time".into(),
            format!(
                "must be at least mint.publish.max_age ({}): verifiers may keep the JWKS that long, so a key published for less could sign before they know it (got {})",
                mint.publish.max_age, mint.key_lead_time
            ),
        );
    }
    if mint.publish.max_age.get() > MAX_PUBLISH_AGE {
        push(
            "mint.publish.max_age".into(),
            format!("must be at most 24h (got {})", mint.publish.max_age),
        );
    }
    if let Some(listen) = mint.publish.listen
        && listen.port() != 0
        && (listen == config.server.grpc_listen || listen == config.server.admin_listen)
    {
        push(
            "mint.publish.listen".into(),
            "must differ from server.grpc_listen and server.admin_listen".into(),
        );
    }
    if let Some(uri) = &mint.publish.jwks_uri
        && let Err(why) = check_url(uri)
    {
        push("mint.publish.jwks_uri".into(), why);
    }
    if mint.cache.renew_before.get() >= lifetime {
        push(
            "mint.cache.renew_before".into(),
            format!(
                "must be shorter than mint.lifetime ({}), or no cached token could ever be served (got {})",
                mint.lifetime, mint.cache.renew_before
            ),
        );
    }
    if mint.cache.max_entries > MAX_CACHE_ENTRIES {
        push(
            "mint.cache.max_entries".into(),
            format!(
                "must be at most {MAX_CACHE_ENTRIES} (got {})",
                mint.cache.max_entries
            ),
        );
    }
    for (i, route) in routes.iter().enumerate() {
        let Some(route_mint) = &route.mint else {
            continue;
        };
        let at = format!("routes[{i}].mint");
        if let Some(audience) = &route_mint.audience
            && let Err(why) = check_audience(audience)
        {
            push(format!("{at}.audience"), why);
        }
        if route_mint.enabled && route_mint.audience.is_none() && mint.audience.is_none() {
            push(
                format!("{at}.audience"),
                "is needed: mint.audience sets no default".into(),
            );
        }
        if let Some(encrypt) = &route_mint.encrypt {
            if !route_mint.enabled {
                push(
                    format!("{at}.encrypt"),
                    "has nothing to encrypt: minting is off on this route".into(),
                );
            }
            if encrypt.algorithm == KeyManagement::Dir {
                push(
                    format!("{at}.encrypt.algorithm"),
                    "dir would share a content key with the upstream; use RSA-OAEP-256 or ECDH-ES*"
                        .into(),
                );
            }
        }
    }
    errors
}

const MIN_LIFETIME: std::time::Duration = std::time::Duration::from_secs(10);
const MAX_LIFETIME: std::time::Duration = std::time::Duration::from_secs(3600);
const MAX_CLOCK_SKEW: std::time::Duration = std::time::Duration::from_secs(300);
const MAX_PUBLISH_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
const MAX_CACHE_ENTRIES: u64 = 10_000_000;
const MAX_SESSIONS: usize = 64;

fn check_keys(mint: &MintConfig, push: &mut impl FnMut(String, String)) {
    if mint.keys.is_empty() {
        push("mint.keys".into(), "must list at least one key".into());
        return;
    }
    let current = mint
        .keys
        .iter()
        .filter(|k| k.state == KeyState::Current)
        .count();
    if current != 1 {
        push(
            "mint.keys".into(),
            format!("must have exactly one key with state: current (got {current})"),
        );
    }
    let any_retired = mint.keys.iter().any(|k| k.state == KeyState::Retired);
    let mut files = std::collections::HashMap::new();
    for (i, key) in mint.keys.iter().enumerate() {
        let at = format!("mint.keys[{i}]");
        match (&key.file, &key.pkcs11) {
            (Some(file), None) => {
                if let Some(first) = files.insert(file, i) {
                    push(
                        format!("{at}.file"),
                        format!("is mint.keys[{first}].file again: a key has one state"),
                    );
                }
            }
            (None, Some(pkcs11)) => check_pkcs11(pkcs11, &format!("{at}.pkcs11"), push),
            _ => push(at.clone(), "needs exactly one of file and pkcs11".into()),
        }
        if key.state == KeyState::Retired && key.retired_at.is_none() {
            push(
                format!("{at}.retired_at"),
                "is needed for a retired key: it says until when the key stays published".into(),
            );
        }
        if key.state != KeyState::Retired && key.retired_at.is_some() {
            push(
                format!("{at}.retired_at"),
                "is only for state: retired".into(),
            );
        }
        if key.initial && key.state != KeyState::Current {
            push(format!("{at}.initial"), "is only for state: current".into());
        }
        if key.initial && any_retired {
            push(
                format!("{at}.initial"),
                "is refused once a key is retired: verifiers hold the JWKS by then, so publish the key as next first"
                    .into(),
            );
        }
    }
}

fn check_pkcs11(pkcs11: &Pkcs11KeyConfig, at: &str, push: &mut impl FnMut(String, String)) {
    if pkcs11.token_label.is_some() == pkcs11.slot.is_some() {
        push(
            at.to_owned(),
            "needs exactly one of token_label and slot".into(),
        );
    }
    if pkcs11.key_label.is_none() && pkcs11.key_id.is_none() {
        push(
            at.to_owned(),
            "needs key_label, key_id or both to find the key".into(),
        );
    }
    if let Some(id) = &pkcs11.key_id
        && (id.is_empty()
            || !id.len().is_multiple_of(2)
            || !id.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        push(
            format!("{at}.key_id"),
            format!("must be the CKA_ID in hex, an even number of digits (got {id:?})"),
        );
    }
    if pkcs11.pin.env.is_some() == pkcs11.pin.file.is_some() {
        push(
            format!("{at}.pin"),
            "needs exactly one of env and file".into(),
        );
    }
    if !(1..=MAX_SESSIONS).contains(&pkcs11.sessions) {
        push(
            format!("{at}.sessions"),
            format!(
                "must be between 1 and {MAX_SESSIONS} (got {})",
                pkcs11.sessions
            ),
        );
    }
}

/// An issuer or JWKS URL: absolute `https://` or `http://`, with a host, without query,
/// fragment, user info or trailing slash.
fn check_url(text: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(text).map_err(|err| format!("{text:?} is not a URL ({err})"))?;
    let ok = matches!(url.scheme(), "https" | "http")
        && url.host().is_some()
        && url.query().is_none()
        && url.fragment().is_none()
        && url.username().is_empty()
        && url.password().is_none()
        && !text.ends_with('/')
        && text.trim() == text;
    if ok {
        Ok(())
    } else {
        Err(format!(
            "must be an https:// or http:// URL with a host and no query, fragment, credentials or trailing slash (got {text:?})"
        ))
    }
}

fn check_audience(audience: &str) -> Result<(), String> {
    if audience.is_empty() || audience.len() > 1024 || audience.chars().any(char::is_control) {
        Err(format!(
            "must be 1-1024 printable characters (got {audience:?})"
        ))
    } else {
        Ok(())
    }
}
