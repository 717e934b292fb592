//! Configuration: the documented YAML schema, its loading and its validation.
//!
//! The types in this module *are* the schema: `fedauthz config-schema` derives the JSON Schema
//! from them and every field's doc comment is its documentation. Loading ([`load_file`], [`parse_yaml`]) turns YAML
//! into these types with field-path error messages; [`validate`] checks the rules serde cannot
//! express. Nothing here touches the network or key material: turning a valid config into a
//! running verifier is the job of [`crate::verify`] and [`crate::keys`].

mod api_keys;
mod duration;
mod http;
mod load;
mod mint;
mod timestamp;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use api_keys::{
    ApiKeyEntry, ApiKeyFile, ApiKeyLocation, ApiKeySetConfig, KeyHash, MAX_KEY_BYTES,
    check_entry as check_api_key_entry, is_key_id,
};
pub use duration::HumanDuration;
pub use http::{Convention, HttpEndpoint, HttpListenerConfig, ProxyNetwork};
pub use load::{ConfigError, FieldError, load_file, parse_yaml};
pub use mint::{
    KeyState, MintCacheConfig, MintConfig, MintEncryptionConfig, MintKeyConfig, PinSource,
    Pkcs11KeyConfig, PublishConfig, REGISTERED_CLAIMS, RouteMintConfig, SigningAlgorithmName,
};
pub use timestamp::Timestamp;
pub use validate::validate;

use crate::jose::Algorithm;

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "fedauthz configuration")]
pub struct Config {
    /// Listen addresses and process behaviour.
    #[serde(default)]
    pub server: ServerConfig,
    /// Decision when no route decides: for a request that matches no entry of `routes`, or,
    /// when `routes` is absent, for a request that carries no credential. A credential that is
    /// present but invalid is always denied, whatever this says.
    #[serde(default)]
    pub default_decision: DefaultDecision,
    /// Largest accepted token, in bytes, checked before any decoding.
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
    /// How allow and deny answers are shaped.
    #[serde(default)]
    pub response: ResponseConfig,
    /// What the per-check decision log lines carry.
    #[serde(default)]
    pub decision_log: DecisionLogConfig,
    /// Trusted token issuers. A token is verified only with the keys of the issuer whose
    /// `issuer` string equals the token's `iss` exactly. May be empty when `api_keys` is set.
    pub issuers: Vec<IssuerConfig>,
    /// API key sets: keys stored only as digests, each granting an identity that goes
    /// through the same routes as a token's (the set's id is its issuer).
    #[serde(default)]
    pub api_keys: Vec<ApiKeySetConfig>,
    /// Route rules, in order: the first whose `match` fits the request decides. Absent means
    /// one catch-all route that accepts a token from any issuer (and a request without a
    /// credential as `default_decision` says).
    #[serde(default)]
    pub routes: Option<Vec<RouteConfig>>,
    /// Cache of verified tokens: a token seen again skips signature and claim checks (routes
    /// still run for every request).
    #[serde(default)]
    pub token_cache: TokenCacheConfig,
    /// Decryption of encrypted tokens (JWE). Absent: a 5-segment token is denied
    /// `token_encrypted`.
    #[serde(default)]
    pub decryption: Option<DecryptionConfig>,
    /// Internal tokens minted for upstreams on allow, and their publication. Absent: nothing
    /// is minted.
    #[serde(default)]
    pub mint: Option<MintConfig>,
}

/// Encrypted tokens: signed-then-encrypted JWTs (RFC 7519 §5.2, JWE header `cty: JWT`) only.
/// The keys are fedauthz's own private keys, configured here, never taken from a fetched JWKS
/// (a JWKS `use: enc` key is a sender's copy of the public half). The decrypted token is
/// verified like any other, by its own `iss`, and only issuers with `accept_encrypted: true`
/// may send one.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecryptionConfig {
    /// The private keys, selected by the `kid` of the JWE header. List two during a rotation.
    pub keys: Vec<DecryptionKeyConfig>,
    /// Content encryption accepted.
    #[serde(default = "default_content_encryption")]
    pub content_encryption: Vec<ContentEncryption>,
}

/// One decryption key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecryptionKeyConfig {
    /// The `kid` senders put in the JWE header for this key (unique).
    pub kid: String,
    /// The one key management algorithm this key decrypts; it must fit the key (RSA for
    /// `RSA-OAEP-256`; EC P-256, P-384 or X25519 for `ECDH-ES*`; a shared `oct` key for `dir`).
    pub algorithm: KeyManagement,
    /// The private key: PEM (PKCS#8, SEC1 or PKCS#1) or a JWK; for `dir`, a JWK of `kty: oct`.
    /// Re-read when it changes (the configuration reloads).
    pub file: PathBuf,
}

/// JWE key management algorithms fedauthz accepts. Never `RSA1_5` (padding oracle), never
/// `PBES2-*` (password-based, a CPU sink per token), no AES key wrap with a shared key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
pub enum KeyManagement {
    /// RSAES OAEP with SHA-256.
    #[serde(rename = "RSA-OAEP-256")]
    RsaOaep256,
    /// ECDH-ES, the agreed key is the content key.
    #[serde(rename = "ECDH-ES")]
    EcdhEs,
    /// ECDH-ES with AES-128 key wrap.
    #[serde(rename = "ECDH-ES+A128KW")]
    EcdhEsA128Kw,
    /// ECDH-ES with AES-256 key wrap.
    #[serde(rename = "ECDH-ES+A256KW")]
    EcdhEsA256Kw,
    /// A shared content key, configured explicitly.
    #[serde(rename = "dir")]
    Dir,
}

/// JWE content encryption algorithms fedauthz accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
pub enum ContentEncryption {
    /// AES-128 GCM.
    #[serde(rename = "A128GCM")]
    A128Gcm,
    /// AES-256 GCM.
    #[serde(rename = "A256GCM")]
    A256Gcm,
    /// AES-128 CBC with HMAC SHA-256 (only when listed).
    #[serde(rename = "A128CBC-HS256")]
    A128CbcHs256,
}

impl KeyManagement {
    /// The JWE `alg` name.
    pub fn name(self) -> &'static str {
        match self {
            Self::RsaOaep256 => "RSA-OAEP-256",
            Self::EcdhEs => "ECDH-ES",
            Self::EcdhEsA128Kw => "ECDH-ES+A128KW",
            Self::EcdhEsA256Kw => "ECDH-ES+A256KW",
            Self::Dir => "dir",
        }
    }

    /// The algorithm named `name`, if fedauthz accepts it.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Self::RsaOaep256,
            Self::EcdhEs,
            Self::EcdhEsA128Kw,
            Self::EcdhEsA256Kw,
            Self::Dir,
        ]
        .into_iter()
        .find(|alg| alg.name() == name)
    }
}

impl ContentEncryption {
    /// The JWE `enc` name.
    pub fn name(self) -> &'static str {
        match self {
            Self::A128Gcm => "A128GCM",
            Self::A256Gcm => "A256GCM",
            Self::A128CbcHs256 => "A128CBC-HS256",
        }
    }

    /// The algorithm named `name`, if fedauthz accepts it.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::A128Gcm, Self::A256Gcm, Self::A128CbcHs256]
            .into_iter()
            .find(|enc| enc.name() == name)
    }

    /// Bytes of the content encryption key.
    pub fn key_len(self) -> usize {
        match self {
            Self::A128Gcm => 16,
            Self::A256Gcm | Self::A128CbcHs256 => 32,
        }
    }

    /// Bytes of the initialization vector.
    pub fn iv_len(self) -> usize {
        match self {
            Self::A128Gcm | Self::A256Gcm => 12,
            Self::A128CbcHs256 => 16,
        }
    }

    /// Bytes of the authentication tag (never truncated).
    pub fn tag_len(self) -> usize {
        16
    }
}

fn default_content_encryption() -> Vec<ContentEncryption> {
    vec![ContentEncryption::A128Gcm, ContentEncryption::A256Gcm]
}

/// The verified-token cache. An entry is keyed by the SHA-256 of the token, lives until the
/// token's `exp` or `max_ttl` (whichever comes first), is never served once its signing key
/// left the issuer's key set, and starts over on every configuration reload. Failed
/// verifications are never cached.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenCacheConfig {
    /// Most tokens held at once; when full, tokens past their end go first, then tokens
    /// close to it. `0` disables the cache. At most 10 000 000.
    #[serde(default = "default_cache_max_entries")]
    pub max_entries: usize,
    /// Longest time one verification is reused (1s to 24h); a token is never served from
    /// the cache at or after its `exp`.
    #[serde(default = "default_cache_max_ttl")]
    pub max_ttl: HumanDuration,
}

impl Default for TokenCacheConfig {
    fn default() -> Self {
        Self {
            max_entries: default_cache_max_entries(),
            max_ttl: default_cache_max_ttl(),
        }
    }
}

/// Listen addresses and process behaviour.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address of the gRPC listener (ext_authz Check and grpc.health.v1).
    #[serde(default = "default_grpc_listen")]
    pub grpc_listen: SocketAddr,
    /// Address of the HTTP admin listener (/healthz, /readyz).
    #[serde(default = "default_admin_listen")]
    pub admin_listen: SocketAddr,
    /// How long a shutdown waits for in-flight checks to finish.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace: HumanDuration,
    /// Reload the configuration when its file, or a file it names (`hmac_secret.file`,
    /// `keys.ca_file`), changes. The parent directories are watched, so a Kubernetes
    /// ConfigMap/Secret update (the kubelet's `..data` swap) is seen; SIGHUP reloads either way.
    #[serde(default = "default_true")]
    pub watch_config: bool,
    /// How often the watched files are also read and compared, in case change events are
    /// missed (inotify limits, filesystems without events).
    #[serde(default = "default_config_poll_interval")]
    pub config_poll_interval: HumanDuration,
    /// TLS on the gRPC listener (absent: plaintext h2c). Use it wherever Envoy reaches
    /// fedauthz over a network that no mesh protects.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// TLS on the admin listener (absent: plaintext HTTP), e.g. for Prometheus scraping over
    /// HTTPS. Kubelet probes present no client certificate: with `client_certificates`, use
    /// `mode: optional` or probe the gRPC health service instead.
    #[serde(default)]
    pub admin_tls: Option<TlsConfig>,
    /// States that the gRPC listener is plaintext on purpose because a service mesh (Istio
    /// sidecars) authenticates and encrypts the connections to it. Without it (or `tls`),
    /// `check-config` and start-up warn about a plaintext listener on a non-loopback address.
    #[serde(default)]
    pub mesh_mtls: bool,
    /// The HTTP authorization listener, for proxies that call an HTTP service instead of
    /// ext_authz gRPC: Envoy `http_service`, nginx `auth_request`, Traefik `forwardAuth`.
    /// Absent: off.
    #[serde(default)]
    pub http: Option<HttpListenerConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            grpc_listen: default_grpc_listen(),
            admin_listen: default_admin_listen(),
            shutdown_grace: default_shutdown_grace(),
            watch_config: true,
            config_poll_interval: default_config_poll_interval(),
            tls: None,
            admin_tls: None,
            mesh_mtls: false,
            http: None,
        }
    }
}

/// TLS for one listener: TLS 1.3 and 1.2 only, certificates read from PEM files and re-read
/// when they change (a mounted Secret's `..data` swap); new handshakes use the new files, open
/// connections keep theirs. A changed file that does not load is refused with its path and
/// the running certificate stays.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first (`tls.crt` of a `kubernetes.io/tls` Secret).
    pub certificate_file: PathBuf,
    /// PEM private key of the leaf certificate: PKCS#8 (`PRIVATE KEY`), SEC1 (`EC PRIVATE
    /// KEY`) or PKCS#1 (`RSA PRIVATE KEY`).
    pub private_key_file: PathBuf,
    /// Ask callers for a client certificate (mTLS). Absent: none is asked for.
    #[serde(default)]
    pub client_certificates: Option<ClientCertificates>,
}

/// Client certificates (mTLS): which CA signs them, whether one is required and whose are
/// accepted. A refused certificate fails the handshake (Envoy then fails closed).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientCertificates {
    /// PEM bundle of the CA certificates that client certificates must chain to.
    pub ca_file: PathBuf,
    /// `required`: a handshake without a client certificate fails. `optional`: a client
    /// without one connects unauthenticated (routes can still require `match.callers`); one
    /// that presents a certificate must pass every check.
    #[serde(default)]
    pub mode: ClientCertificateMode,
    /// Client identities accepted, from the certificate's subject alternative names. Empty:
    /// any certificate the CA signed (warned about: a mesh or cluster CA signs every
    /// workload).
    #[serde(default)]
    pub allowed_identities: AllowedIdentities,
}

/// Whether a client certificate is required.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientCertificateMode {
    /// Every connection presents a valid, allowed client certificate.
    #[default]
    Required,
    /// A connection may present none; one that is presented must be valid and allowed.
    Optional,
}

/// Client identities by subject alternative name; a certificate is allowed when one of its
/// names matches one entry. Entries are exact or globs where `*` matches any run of
/// characters (`spiffe://cluster.local/ns/gateways/sa/*`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AllowedIdentities {
    /// URI SANs, e.g. Envoy's SPIFFE ID `spiffe://cluster.local/ns/gateways/sa/envoy`.
    #[serde(default)]
    pub uris: Vec<String>,
    /// DNS SANs, compared case-insensitively, e.g. `envoy.gateways.svc.cluster.local`.
    #[serde(default)]
    pub dns_names: Vec<String>,
}

impl AllowedIdentities {
    /// Whether no entry is listed (any certificate of the CA is accepted).
    pub fn is_empty(&self) -> bool {
        self.uris.is_empty() && self.dns_names.is_empty()
    }
}

impl TlsConfig {
    /// The files this TLS configuration reads.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.certificate_file.clone(), self.private_key_file.clone()];
        if let Some(client) = &self.client_certificates {
            files.push(client.ca_file.clone());
        }
        files
    }
}

/// What happens to a request that presents no credential.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DefaultDecision {
    /// Answer 401 with a `WWW-Authenticate: Bearer` challenge.
    #[default]
    Deny,
    /// Let the request through anonymously; identity headers are still stripped.
    Allow,
}

/// How allow and deny answers are shaped.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResponseConfig {
    /// `realm` of the `WWW-Authenticate` challenge on denials.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// Upstream request headers that carry the verified identity. Client-sent copies of these
    /// headers are always removed or overwritten, so the upstream can trust them.
    #[serde(default)]
    pub identity_headers: IdentityHeaders,
    /// Remove the header that carried the credential before the request goes upstream.
    #[serde(default = "default_true")]
    pub remove_credential: bool,
    /// More upstream headers, name → template (`{email}`, `{tenant}`, `{scopes}`,
    /// `{attributes.repository}`, `{claims.some.path}`, …). A header whose template has no
    /// value for a token is removed instead.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Header carrying the whole normalized identity as base64url JSON.
    #[serde(default)]
    pub identity_header: Option<String>,
}

impl Default for ResponseConfig {
    fn default() -> Self {
        Self {
            realm: default_realm(),
            identity_headers: IdentityHeaders::default(),
            remove_credential: true,
            headers: BTreeMap::new(),
            identity_header: None,
        }
    }
}

/// The decision log: one line per denied check (target `fedauthz::decision`), and optionally a
/// sample of allowed checks. Lines never carry a token or any part of one.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionLogConfig {
    /// How the verified subject (`sub`) appears: `omit` (default), `plain`, or `hashed`.
    #[serde(default)]
    pub subject: SubjectLogging,
    /// Fraction of allowed checks that also get a line, from 0 (none, the default) to 1 (all).
    /// Denials are always logged.
    #[serde(default)]
    pub sample_allowed: f64,
}

impl Default for DecisionLogConfig {
    fn default() -> Self {
        Self {
            subject: SubjectLogging::Omit,
            sample_allowed: 0.0,
        }
    }
}

/// How a decision log line shows the verified subject.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SubjectLogging {
    /// No subject in the log.
    #[default]
    Omit,
    /// The subject as the token states it.
    Plain,
    /// 16 hex digits of SHA-256 over the issuer id and the subject: the same user gives the same
    /// value on every replica, but the log does not show who it is. Guessable subjects (e-mail
    /// addresses) can still be confirmed by someone who hashes a guess.
    Hashed,
}

/// Names of the upstream headers that carry identity (lower-case header names).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityHeaders {
    /// Header set to the token's `sub`.
    #[serde(default = "default_subject_header")]
    pub subject: String,
    /// Header set to the `id` of the issuer that verified the token.
    #[serde(default = "default_issuer_header")]
    pub issuer: String,
}

impl Default for IdentityHeaders {
    fn default() -> Self {
        Self {
            subject: default_subject_header(),
            issuer: default_issuer_header(),
        }
    }
}

/// One trusted issuer: its exact `iss`, its keys and the rules its tokens must meet.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// Short stable name used in headers, metadata, logs and metrics (`[a-z0-9_-]`, ≤ 64).
    pub id: String,
    /// The exact `iss` value, compared byte for byte (trailing slashes matter). May contain
    /// `{tenantid}` once (multi-tenant Entra ID): then `tenants` or `any_tenant` says which
    /// tenants are accepted, and a token's `tid` must equal the tenant in its `iss`. Two
    /// issuers may share one `iss` only when their token locations are disjoint (AWS ALB signs
    /// with the Cognito user pool's `iss`): a token is then verified by the one whose location
    /// it arrived in.
    pub issuer: String,
    /// Other exact spellings of `iss` that this issuer's tokens may carry: same keys, same
    /// rules. Each must be unique across all issuers' `issuer` and `issuer_aliases`. Left out,
    /// the `google` profile accepts Google's documented pair (`https://accounts.google.com` and
    /// `accounts.google.com`); `[]` turns that off.
    #[serde(default)]
    pub issuer_aliases: Option<Vec<String>>,
    /// Accepted tenants of a `{tenantid}` issuer.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// Accept every tenant of a `{tenantid}` issuer (instead of listing `tenants`).
    #[serde(default)]
    pub any_tenant: bool,
    /// Accept base64url segments with `=` padding (AWS ALB signs its tokens that way). The
    /// signature still covers the token bytes exactly as received.
    #[serde(default)]
    pub accept_padded_tokens: bool,
    /// Where the issuer's public keys come from.
    #[serde(default)]
    pub keys: Option<KeySource>,
    /// Shared secret for HS256/HS384/HS512. Only used when `algorithms` lists an HS algorithm.
    #[serde(default)]
    pub hmac_secret: Option<SecretSource>,
    /// Accept this issuer's tokens signed-then-encrypted (JWE around the JWS, with the keys of
    /// `decryption`). Off: an encrypted token whose inner `iss` is this issuer is denied
    /// `encryption_not_allowed`.
    #[serde(default)]
    pub accept_encrypted: bool,
    /// Accepted audiences; a token must carry at least one of them in `audience_claim`.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Claim holding the audience: `aud` unless the issuer uses another one (Cognito access
    /// tokens carry the app client in `client_id` and no `aud`).
    #[serde(default = "default_audience_claim")]
    pub audience_claim: String,
    /// Opt out of the audience check. The value is the documented reason and must not be empty.
    #[serde(default)]
    pub skip_audience_check: Option<String>,
    /// Allowed signature algorithms. Empty means: each key's own `alg`, or for a key without
    /// `alg` the one asymmetric algorithm its type implies (RSA: RS256, EC: by curve, OKP: EdDSA).
    #[serde(default)]
    pub algorithms: Vec<Algorithm>,
    /// Tolerance for `exp`, `nbf` and `iat` (at most 5 minutes).
    #[serde(default = "default_clock_skew")]
    pub clock_skew: HumanDuration,
    /// Longest accepted token lifetime (`exp` − `iat`, and `exp` − now).
    #[serde(default = "default_max_lifetime")]
    pub max_lifetime: HumanDuration,
    /// Claims that must be present with one of the given values, e.g. `token_use: access`.
    #[serde(default)]
    pub required_claims: BTreeMap<String, ClaimValues>,
    /// Accepted JOSE `typ` header values, exactly (e.g. `[at+jwt]` for RFC 9068 access
    /// tokens); a token must then carry one of them. Empty (the default): no `typ`, `JWT` or
    /// `at+jwt`, plus what the profile's provider documents (`spiffe`: `JOSE`); any other
    /// type — a security event token, a DPoP proof, a logout token, an explicitly typed ID
    /// token — is refused. Compared as media types: case-insensitively, `application/`
    /// optional.
    #[serde(default)]
    pub token_types: Vec<String>,
    /// How this issuer's claims map to the normalized identity (subject, tenant, client,
    /// scopes, roles, groups, email).
    #[serde(default)]
    pub profile: ProfileName,
    /// AWS ALB (`profile: aws-alb`): the load balancer ARNs accepted in the token header's
    /// `signer`. Required for that profile: only your own load balancers may vouch for users.
    #[serde(default)]
    pub alb_signers: Vec<String>,
    /// Claim paths for the `generic` profile (dot-separated, e.g. `realm_access.roles`).
    #[serde(default)]
    pub claim_mappings: ClaimMappings,
    /// Where this issuer's tokens may arrive. Empty (the default): where its profile's
    /// provider sends them — `x-goog-iap-jwt-assertion` (gcp-iap), `x-amzn-oidc-data`
    /// (aws-alb), `cf-access-jwt-assertion` or the `CF_Authorization` cookie
    /// (cloudflare-access), else `Authorization: Bearer`.
    #[serde(default)]
    pub token_locations: Vec<TokenLocation>,
}

impl IssuerConfig {
    /// The token locations in effect: the configured ones, or the profile's default.
    pub fn locations(&self) -> Vec<TokenLocation> {
        if !self.token_locations.is_empty() {
            return self.token_locations.clone();
        }
        let header = |name: &str| TokenLocation {
            header: Some(name.into()),
            prefix: None,
            cookie: None,
        };
        match self.profile {
            ProfileName::GcpIap => vec![header("x-goog-iap-jwt-assertion")],
            ProfileName::AwsAlb => vec![header("x-amzn-oidc-data")],
            ProfileName::CloudflareAccess => vec![
                header("cf-access-jwt-assertion"),
                TokenLocation {
                    header: None,
                    prefix: None,
                    cookie: Some("CF_Authorization".into()),
                },
            ],
            _ => vec![TokenLocation::bearer()],
        }
    }

    /// The other `iss` spellings in effect: the configured `issuer_aliases`, or the profile's
    /// documented ones (Google signs ID tokens with and without `https://`).
    pub fn aliases(&self) -> Vec<String> {
        if let Some(aliases) = &self.issuer_aliases {
            return aliases.clone();
        }
        let google = ["https://accounts.google.com", "accounts.google.com"];
        match self.profile {
            ProfileName::Google if google.contains(&self.issuer.as_str()) => google
                .into_iter()
                .filter(|iss| *iss != self.issuer)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// One route rule: which requests it covers and what they need.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Stable name for logs and metadata (`[a-z0-9_-]`, ≤ 64).
    pub name: String,
    /// Which requests this route covers; an empty match covers every request.
    #[serde(default, rename = "match")]
    pub matches: RouteMatch,
    /// Let requests without a credential through (identity headers are still stripped). A
    /// credential that is present must still verify.
    #[serde(default)]
    pub allow_anonymous: bool,
    /// What a verified token must satisfy on this route.
    #[serde(default)]
    pub require: Requirement,
    /// Extra upstream headers for requests this route allows, name → template (as
    /// `response.headers`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The internal token minted for requests this route allows with a verified token
    /// (default: as `mint.audience` says).
    #[serde(default)]
    pub mint: Option<RouteMintConfig>,
    /// Which credential decides when a request carries both a token and an API key (the other
    /// is still removed before the request goes upstream). Absent: such a request is
    /// `credential_ambiguous`.
    #[serde(default)]
    pub prefer_credential: Option<CredentialKind>,
}

/// A kind of credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// A signed (or encrypted) token.
    Jwt,
    /// An API key (`api_keys`).
    ApiKey,
}

/// Request attributes a route matches on; every listed condition must hold, and a list matches
/// when any of its entries does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// Hosts (`:authority` without port): exact, or `*.example.com` for any subdomain.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Paths (query excluded): exact (`/healthz`), or a glob where `*` matches any run of
    /// characters (`/api/*`, `/v*/orders`).
    #[serde(default)]
    pub paths: Vec<String>,
    /// HTTP methods (upper case).
    #[serde(default)]
    pub methods: Vec<String>,
    /// Envoy `context_extensions` (set per route in `ExtAuthzPerRoute.check_settings`) that
    /// must be present with exactly these values.
    #[serde(default)]
    pub context_extensions: BTreeMap<String, String>,
    /// mTLS peer principals (`source.principal`, e.g. a SPIFFE ID); globs allowed. This is
    /// the downstream client as Envoy saw it, not Envoy.
    #[serde(default)]
    pub principals: Vec<String>,
    /// Identities of the proxy calling fedauthz, from the client certificate verified on the
    /// gRPC listener (`server.tls.client_certificates`): URI or DNS SANs, globs allowed. A
    /// connection without a verified client certificate matches no entry.
    #[serde(default)]
    pub callers: Vec<String>,
}

/// What a verified token must satisfy. Every condition listed must hold (all-of); within a list,
/// one entry is enough (any-of), except `scopes`, which must all be granted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Requirement {
    /// Issuer ids accepted.
    #[serde(default)]
    pub issuers: Vec<String>,
    /// Audiences, one of which the token must carry (on top of its issuer's audience check).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Scopes that must all be granted.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Roles, one of which is needed.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Groups, one of which is needed (unknown groups, as in an Entra overage, never match).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Tenants accepted.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// Subjects accepted: exact, or globs (`system:serviceaccount:payments:*`).
    #[serde(default)]
    pub subjects: Vec<String>,
    /// Conditions on claims by path.
    #[serde(default)]
    pub claims: Vec<ClaimCondition>,
    /// At least one of these requirements must hold.
    #[serde(default)]
    pub any_of: Vec<Requirement>,
    /// All of these requirements must hold.
    #[serde(default)]
    pub all_of: Vec<Requirement>,
}

/// A condition on one claim. Exactly one of `equals`, `one_of`, `prefix`, `glob`, `present`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimCondition {
    /// Read the claim only from tokens of this issuer id; tokens of other issuers fail the
    /// condition, so two issuers' claims that share a name never stand in for each other.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Dot-separated claim path (`realm_access.roles`, `kubernetes.io.namespace`).
    pub path: String,
    /// The claim equals this string (or, for a list claim, contains it).
    #[serde(default)]
    pub equals: Option<String>,
    /// The claim equals (or contains) one of these.
    #[serde(default)]
    pub one_of: Vec<String>,
    /// The claim starts with this.
    #[serde(default)]
    pub prefix: Option<String>,
    /// The claim matches this glob (`*` any run of characters).
    #[serde(default)]
    pub glob: Option<String>,
    /// The claim is present (`true`) or absent (`false`).
    #[serde(default)]
    pub present: Option<bool>,
}

/// Where an issuer's public keys come from, and how they are kept fresh. Exactly one source:
/// `discovery`/`discovery_url`, `jwks_uri`, `jwks_file`, `jwks`, `pem_map_uri`,
/// `pem_uri_template`, `spiffe_bundle_uri` or `spiffe_bundle_file`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeySource {
    /// OIDC discovery at `{issuer}/.well-known/openid-configuration`: the document's `issuer`
    /// must equal this issuer's, and its `jwks_uri` is used.
    #[serde(default)]
    pub discovery: bool,
    /// OIDC discovery at an explicit URL (same checks as `discovery`).
    #[serde(default)]
    pub discovery_url: Option<String>,
    /// URL of a JWK Set.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// Path of a local JWK Set file, re-read when it changes (mounted Secrets, ConfigMaps).
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// An inline JWK Set (`{"keys": [...]}`).
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")]
    pub jwks: Option<serde_json::Value>,
    /// URL of a JSON object mapping kid to a PEM public key or X.509 certificate (Google
    /// `oauth2/v1/certs`, IAP `verify/public_key`).
    #[serde(default)]
    pub pem_map_uri: Option<String>,
    /// URL template with `{kid}` serving one PEM public key per kid, fetched when a kid is first
    /// seen (AWS ALB: `https://public-keys.auth.elb.REGION.amazonaws.com/{kid}`). Only kids
    /// that look like a UUID are ever put into the URL.
    #[serde(default)]
    pub pem_uri_template: Option<String>,
    /// URL of a SPIFFE trust bundle (JWT authorities are its `use: jwt-svid` keys).
    #[serde(default)]
    pub spiffe_bundle_uri: Option<String>,
    /// Path of a SPIFFE trust bundle file, re-read when it changes.
    #[serde(default)]
    pub spiffe_bundle_file: Option<PathBuf>,
    /// PEM bundle of CA certificates trusted for this issuer's URLs instead of the system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Allow plain `http://` URLs. For tests and loopback only: keys fetched without TLS can be
    /// replaced by anyone on the path.
    #[serde(default)]
    pub insecure_http: bool,
    /// Refresh period of a fetched key set when the server sends no `Cache-Control: max-age`
    /// or `Expires`.
    #[serde(default = "default_refresh_interval")]
    pub refresh_interval: HumanDuration,
    /// Shortest refresh period, whatever the server's caching headers say (`no-cache` included).
    #[serde(default = "default_min_refresh")]
    pub min_refresh: HumanDuration,
    /// Longest refresh period, whatever the server's caching headers say.
    #[serde(default = "default_max_refresh")]
    pub max_refresh: HumanDuration,
    /// At most one refresh per this interval is triggered by tokens naming an unknown `kid`.
    #[serde(default = "default_unknown_kid_interval")]
    pub unknown_kid_interval: HumanDuration,
    /// How long a check naming an unknown `kid` waits for the refresh it triggered.
    #[serde(default = "default_unknown_kid_wait")]
    pub unknown_kid_wait: HumanDuration,
    /// How long the last good keys keep serving while refreshes fail; after that the issuer's
    /// tokens are denied (`keys_unavailable`) until a fetch succeeds.
    #[serde(default = "default_max_staleness")]
    pub max_staleness: HumanDuration,
    /// TCP/TLS connect timeout of a fetch.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// Total timeout of a fetch.
    #[serde(default = "default_fetch_timeout")]
    pub timeout: HumanDuration,
    /// Largest accepted response body, in bytes.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// How often key files are read and compared, besides the change events of their
    /// directory (a Kubernetes `..data` swap is seen at once).
    #[serde(default = "default_file_check_interval")]
    pub file_check_interval: HumanDuration,
    /// Readiness waits for this issuer's keys. Set false for issuers that may load later: until
    /// they do, their tokens are denied with `keys_unavailable`.
    #[serde(default = "default_true")]
    pub required: bool,
}

impl Config {
    /// The names of the configured routes.
    pub fn route_names(&self) -> std::collections::HashSet<&str> {
        self.routes
            .iter()
            .flatten()
            .map(|route| route.name.as_str())
            .collect()
    }

    /// Files read when this configuration is built (besides the configuration file itself):
    /// HMAC secret files, CA bundles, decryption and minting keys, API key files. A change to
    /// one of them means a reload. Key files
    /// (`jwks_file`, `spiffe_bundle_file`) are not listed: their key sources re-read them.
    pub fn files_read_at_build(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for issuer in &self.issuers {
            if let Some(path) = issuer.hmac_secret.as_ref().and_then(|s| s.file.as_ref()) {
                files.push(path.clone());
            }
            if let Some(path) = issuer.keys.as_ref().and_then(|k| k.ca_file.as_ref()) {
                files.push(path.clone());
            }
        }
        if let Some(decryption) = &self.decryption {
            files.extend(decryption.keys.iter().map(|key| key.file.clone()));
        }
        if let Some(mint) = &self.mint {
            files.extend(mint.files().cloned());
        }
        for set in &self.api_keys {
            files.extend(set.file.iter().chain(&set.hmac_secret_file).cloned());
        }
        for route in self.routes.iter().flatten() {
            if let Some(encrypt) = route.mint.as_ref().and_then(|m| m.encrypt.as_ref()) {
                files.push(encrypt.key_file.clone());
            }
        }
        files
    }
}

impl KeySource {
    /// Whether the keys come from a SPIFFE trust bundle.
    pub fn is_spiffe_bundle(&self) -> bool {
        self.spiffe_bundle_uri.is_some() || self.spiffe_bundle_file.is_some()
    }
}

impl Default for KeySource {
    fn default() -> Self {
        Self {
            discovery: false,
            discovery_url: None,
            jwks_uri: None,
            jwks_file: None,
            jwks: None,
            pem_map_uri: None,
            pem_uri_template: None,
            spiffe_bundle_uri: None,
            spiffe_bundle_file: None,
            ca_file: None,
            insecure_http: false,
            refresh_interval: default_refresh_interval(),
            min_refresh: default_min_refresh(),
            max_refresh: default_max_refresh(),
            unknown_kid_interval: default_unknown_kid_interval(),
            unknown_kid_wait: default_unknown_kid_wait(),
            max_staleness: default_max_staleness(),
            connect_timeout: default_connect_timeout(),
            timeout: default_fetch_timeout(),
            max_bytes: default_max_bytes(),
            file_check_interval: default_file_check_interval(),
            required: true,
        }
    }
}

/// A secret read from the environment or a file. Exactly one of `env` and `file`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// Name of an environment variable holding the secret.
    #[serde(default)]
    pub env: Option<String>,
    /// Path of a file holding the secret (surrounding whitespace is ignored).
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// How the text encodes the secret bytes.
    #[serde(default)]
    pub encoding: SecretEncoding,
    /// The `kid` tokens signed with this secret carry. Without it, only tokens without `kid`
    /// are verified with the secret (and only when it is the issuer's one key).
    #[serde(default)]
    pub kid: Option<String>,
}

/// Encoding of a secret's text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SecretEncoding {
    /// Base64 or base64url, padded or not.
    #[default]
    Base64,
    /// The UTF-8 bytes of the text itself (as Auth0 uses client secrets).
    Utf8,
}

/// The claim layout of an identity provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ProfileName {
    /// Claim paths from `claim_mappings`.
    #[default]
    Generic,
    /// Microsoft Entra ID (v1 and v2): `tid`, `azp`/`appid`, `scp`, `roles`, `groups` (overage
    /// means unknown).
    Entra,
    /// Amazon Cognito: `client_id`, `scope`, `cognito:groups`, `token_use`.
    Cognito,
    /// Google ID tokens: `email`, `hd`, `azp`.
    Google,
    /// Google Cloud IAP: `email`, `hd`.
    GcpIap,
    /// AWS ALB (`x-amzn-oidc-data`): the IdP's userinfo claims; `iss`, `exp` and `client` come
    /// from the load balancer's signed header.
    AwsAlb,
    /// Kubernetes service accounts: namespace and service account from `kubernetes.io`.
    Kubernetes,
    /// GitHub Actions: repository, ref, environment, workflow.
    GithubActions,
    /// Okta: `cid`, `scp` (array), `groups`.
    Okta,
    /// Auth0: `scope` plus `permissions`, `azp`.
    Auth0,
    /// Keycloak: `realm_access.roles`, `resource_access.<client>.roles`, `scope`.
    Keycloak,
    /// Cloudflare Access: `email`, `custom.groups`; a service token (empty `sub`) takes its
    /// subject from `common_name` and has attribute `identity_type: service` (`user` otherwise).
    CloudflareAccess,
    /// SPIFFE JWT-SVID: the trust domain of `sub` as tenant.
    Spiffe,
}

/// Claim paths the `generic` profile reads. A claim may be a string (space-separated for lists)
/// or an array of strings. Unset fields read the usual claims: client `azp` or `client_id`,
/// scopes `scope` or `scp`, roles `roles`, groups `groups`, email `email`; no tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimMappings {
    /// Tenant claim.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Client (application) claim.
    #[serde(default)]
    pub client: Option<String>,
    /// Scopes claim.
    #[serde(default)]
    pub scopes: Option<String>,
    /// Roles claim.
    #[serde(default)]
    pub roles: Option<String>,
    /// Groups claim.
    #[serde(default)]
    pub groups: Option<String>,
    /// E-mail claim (default `email`).
    #[serde(default)]
    pub email: Option<String>,
}

/// One accepted value, or a list of accepted values.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum ClaimValues {
    /// Any of these values is accepted. (Listed first: untagged variants are tried in order,
    /// and `One` would swallow a list.)
    Many(Vec<serde_json::Value>),
    /// A single accepted value.
    One(serde_json::Value),
}

impl ClaimValues {
    /// The accepted values as a slice.
    pub fn values(&self) -> &[serde_json::Value] {
        match self {
            Self::One(v) => std::slice::from_ref(v),
            Self::Many(v) => v,
        }
    }
}

/// A place a token may arrive. Exactly one of `header` and `cookie`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenLocation {
    /// Request header name (lower-case), e.g. `authorization` or `x-goog-iap-jwt-assertion`.
    #[serde(default)]
    pub header: Option<String>,
    /// Prefix before the token in `header`, matched case-insensitively, e.g. `"Bearer "`.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Cookie name, e.g. `CF_Authorization`.
    #[serde(default)]
    pub cookie: Option<String>,
}

impl TokenLocation {
    /// `Authorization: Bearer <token>`.
    pub fn bearer() -> Self {
        Self {
            header: Some("authorization".into()),
            prefix: Some("Bearer ".into()),
            cookie: None,
        }
    }
}

fn default_grpc_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 50051))
}
fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9191))
}
fn default_shutdown_grace() -> HumanDuration {
    HumanDuration::from_secs(10)
}
/// Default token size cap.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8 * 1024;
fn default_max_token_bytes() -> usize {
    DEFAULT_MAX_TOKEN_BYTES
}
/// Default bound of the verified-token cache.
pub const DEFAULT_CACHE_MAX_ENTRIES: usize = 100_000;
fn default_config_poll_interval() -> HumanDuration {
    HumanDuration::from_secs(10)
}

fn default_cache_max_entries() -> usize {
    DEFAULT_CACHE_MAX_ENTRIES
}
fn default_cache_max_ttl() -> HumanDuration {
    HumanDuration::from_secs(300)
}
fn default_realm() -> String {
    "fedauthz".into()
}
fn default_true() -> bool {
    true
}
fn default_subject_header() -> String {
    "x-auth-subject".into()
}
fn default_issuer_header() -> String {
    "x-auth-issuer".into()
}
fn default_audience_claim() -> String {
    "aud".into()
}
fn default_clock_skew() -> HumanDuration {
    HumanDuration::from_secs(60)
}
fn default_max_lifetime() -> HumanDuration {
    HumanDuration::from_secs(24 * 3600)
}
fn default_refresh_interval() -> HumanDuration {
    HumanDuration::from_secs(3600)
}
fn default_min_refresh() -> HumanDuration {
    HumanDuration::from_secs(300)
}
fn default_max_refresh() -> HumanDuration {
    HumanDuration::from_secs(24 * 3600)
}
fn default_unknown_kid_interval() -> HumanDuration {
    HumanDuration::from_secs(30)
}
fn default_unknown_kid_wait() -> HumanDuration {
    HumanDuration::from_millis(200)
}
fn default_max_staleness() -> HumanDuration {
    HumanDuration::from_secs(72 * 3600)
}
fn default_connect_timeout() -> HumanDuration {
    HumanDuration::from_secs(5)
}
fn default_fetch_timeout() -> HumanDuration {
    HumanDuration::from_secs(10)
}
/// Default cap on a fetched key document.
pub const DEFAULT_MAX_KEY_DOCUMENT_BYTES: usize = 1024 * 1024;
fn default_max_bytes() -> usize {
    DEFAULT_MAX_KEY_DOCUMENT_BYTES
}
fn default_file_check_interval() -> HumanDuration {
    HumanDuration::from_secs(5)
}

/// The JSON Schema of the configuration file, as pretty-printed JSON.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(Config);
    serde_json::to_string_pretty(&schema).unwrap_or_default()
}
