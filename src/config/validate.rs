//! Rules the schema types cannot express by themselves. Every problem is reported, each with
//! the path of the field it concerns, so one run of `check-config` shows them all.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::{
    Config, FieldError, IssuerConfig, KeySource, SecretSource, ServerConfig, TokenLocation,
};
use crate::extract::MAX_LOCATIONS;

const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);
/// Floor of every key refresh and timeout period.
const MIN_KEY_PERIOD: Duration = Duration::from_secs(1);
const MAX_UNKNOWN_KID_WAIT: Duration = Duration::from_secs(5);
const KEY_DOCUMENT_BYTES: std::ops::RangeInclusive<usize> = 1024..=16 * 1024 * 1024;
const TOKEN_BYTES_RANGE: std::ops::RangeInclusive<usize> = 512..=65536;
const MAX_CACHE_ENTRIES: usize = 10_000_000;
const CACHE_TTL_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(24 * 3600);

/// All rule violations in `config`; empty when it is valid.
pub fn validate(config: &Config) -> Vec<FieldError> {
    let mut errors = Errors::default();
    // Port 0 asks the OS for a free port, so two port-0 listeners never collide.
    if config.server.grpc_listen == config.server.admin_listen
        && config.server.grpc_listen.port() != 0
    {
        errors.push("server.admin_listen", "must differ from server.grpc_listen");
    }
    if !TOKEN_BYTES_RANGE.contains(&config.max_token_bytes) {
        errors.push(
            "max_token_bytes",
            format!(
                "must be between {} and {} (got {})",
                TOKEN_BYTES_RANGE.start(),
                TOKEN_BYTES_RANGE.end(),
                config.max_token_bytes
            ),
        );
    }
    check_transport(&config.server, &mut errors);
    check_decryption(config, &mut errors);
    check_token_cache(config, &mut errors);
    check_response(config, &mut errors);
    let sample = config.decision_log.sample_allowed;
    if !(0.0..=1.0).contains(&sample) {
        errors.push(
            "decision_log.sample_allowed",
            format!("must be a fraction between 0 and 1 (got {sample})"),
        );
    }
    if config.server.config_poll_interval.get() < MIN_KEY_PERIOD {
        errors.push(
            "server.config_poll_interval",
            format!(
                "must be at least 1s (got {})",
                config.server.config_poll_interval
            ),
        );
    }
    if config.issuers.is_empty() && config.api_keys.is_empty() {
        errors.push("issuers", "must list at least one issuer (or set api_keys)");
    }
    let mut ids = HashMap::new();
    for (index, issuer) in config.issuers.iter().enumerate() {
        let at = format!("issuers[{index}]");
        if let Some(first) = ids.insert(issuer.id.as_str(), index) {
            errors.push(
                format!("{at}.id"),
                format!("duplicates issuers[{first}].id {:?}", issuer.id),
            );
        }
        check_issuer(issuer, &at, &mut errors);
    }
    check_issuer_names(&config.issuers, &mut errors);
    let distinct: HashSet<_> = config
        .issuers
        .iter()
        .flat_map(|issuer| issuer.locations())
        .collect();
    if distinct.len() > MAX_LOCATIONS {
        errors.push(
            "issuers",
            format!(
                "use at most {MAX_LOCATIONS} distinct token locations in all (got {})",
                distinct.len()
            ),
        );
    }
    check_routes(config, &mut errors);
    errors.0.extend(super::mint::validate(config));
    errors.0.extend(super::http::validate(config));
    errors.0.extend(super::api_keys::validate(config));
    errors.0
}

fn check_decryption(config: &Config, errors: &mut Errors) {
    let accepting: Vec<usize> = config
        .issuers
        .iter()
        .enumerate()
        .filter_map(|(i, issuer)| issuer.accept_encrypted.then_some(i))
        .collect();
    let Some(decryption) = &config.decryption else {
        for i in accepting {
            errors.push(
                format!("issuers[{i}].accept_encrypted"),
                "needs decryption.keys: there is no key to decrypt with",
            );
        }
        return;
    };
    if decryption.keys.is_empty() {
        errors.push("decryption.keys", "must list at least one key");
    }
    let mut kids = HashMap::new();
    for (i, key) in decryption.keys.iter().enumerate() {
        if key.kid.is_empty() || key.kid.len() > 256 {
            errors.push(
                format!("decryption.keys[{i}].kid"),
                "must be 1-256 characters",
            );
        } else if let Some(first) = kids.insert(key.kid.as_str(), i) {
            errors.push(
                format!("decryption.keys[{i}].kid"),
                format!("duplicates decryption.keys[{first}].kid {:?}", key.kid),
            );
        }
    }
    let mut seen = HashSet::new();
    if decryption.content_encryption.is_empty() {
        errors.push(
            "decryption.content_encryption",
            "must list at least one algorithm",
        );
    }
    for (i, enc) in decryption.content_encryption.iter().enumerate() {
        if !seen.insert(enc) {
            errors.push(
                format!("decryption.content_encryption[{i}]"),
                format!("{} is listed twice", enc.name()),
            );
        }
    }
    if accepting.is_empty() {
        errors.push(
            "decryption",
            "no issuer accepts encrypted tokens: set accept_encrypted on the issuers that send them",
        );
    }
}

fn check_transport(server: &ServerConfig, errors: &mut Errors) {
    if server.mesh_mtls && server.tls.is_some() {
        errors.push(
            "server.mesh_mtls",
            "states that the gRPC listener is plaintext behind mesh mTLS, but server.tls is \
             set; keep one",
        );
    }
    let http_tls = server.http.as_ref().and_then(|http| http.tls.clone());
    for (at, tls) in [
        ("server.tls", &server.tls),
        ("server.admin_tls", &server.admin_tls),
        ("server.http.tls", &http_tls),
    ] {
        let Some(client) = tls.as_ref().and_then(|t| t.client_certificates.as_ref()) else {
            continue;
        };
        let allowed = &client.allowed_identities;
        for (i, uri) in allowed.uris.iter().enumerate() {
            let scheme = uri.split_once(':').map(|(scheme, _)| scheme);
            if !scheme.is_some_and(|s| {
                !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
            }) {
                errors.push(
                    format!("{at}.client_certificates.allowed_identities.uris[{i}]"),
                    format!("must be a URI such as spiffe://trust.domain/ns/x/sa/y (got {uri:?})"),
                );
            }
        }
        for (i, name) in allowed.dns_names.iter().enumerate() {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.*".contains(&b))
            {
                errors.push(
                    format!("{at}.client_certificates.allowed_identities.dns_names[{i}]"),
                    format!("must be a DNS name, `*` allowed (got {name:?})"),
                );
            }
        }
    }
}

fn check_token_cache(config: &Config, errors: &mut Errors) {
    let cache = &config.token_cache;
    if cache.max_entries > MAX_CACHE_ENTRIES {
        errors.push(
            "token_cache.max_entries",
            format!(
                "must be at most {MAX_CACHE_ENTRIES} (got {}); 0 disables the cache",
                cache.max_entries
            ),
        );
    }
    if !CACHE_TTL_RANGE.contains(&cache.max_ttl.get()) {
        errors.push(
            "token_cache.max_ttl",
            format!(
                "must be between 1s and 24h (got {}); set max_entries: 0 to disable the cache",
                cache.max_ttl
            ),
        );
    }
}

#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(path, message));
    }
}

fn check_routes(config: &Config, errors: &mut Errors) {
    let Some(routes) = &config.routes else {
        return;
    };
    if routes.is_empty() {
        errors.push(
            "routes",
            "must list at least one route (or be left out for one catch-all route)",
        );
    }
    // Routes name token issuers and API key sets alike: both are an identity's issuer.
    let known: HashSet<&str> = config
        .issuers
        .iter()
        .map(|i| i.id.as_str())
        .chain(config.api_keys.iter().map(|set| set.id.as_str()))
        .collect();
    let mut names = HashMap::new();
    for (index, route) in routes.iter().enumerate() {
        let at = format!("routes[{index}]");
        if !is_identifier(&route.name) {
            errors.push(
                format!("{at}.name"),
                format!(
                    "must be 1-64 characters of [a-z0-9_-] (got {:?})",
                    route.name
                ),
            );
        } else if let Some(first) = names.insert(route.name.as_str(), index) {
            errors.push(
                format!("{at}.name"),
                format!("duplicates routes[{first}].name {:?}", route.name),
            );
        }
        for (key, value) in &route.matches.context_extensions {
            if key.is_empty() {
                errors.push(
                    format!("{at}.match.context_extensions"),
                    "keys must not be empty",
                );
            } else if value.is_empty() {
                errors.push(
                    format!("{at}.match.context_extensions.{key}"),
                    "must not be empty",
                );
            }
        }
        check_requirement(&route.require, &known, &format!("{at}.require"), errors);
        if route.allow_anonymous && route.require != super::Requirement::default() {
            errors.push(
                format!("{at}.allow_anonymous"),
                "cannot be combined with require: an anonymous request has no token to check",
            );
        }
        for (i, path) in route.matches.paths.iter().enumerate() {
            if !path.starts_with('/') && !path.starts_with('*') {
                errors.push(format!("{at}.match.paths[{i}]"), "must start with / or *");
            }
        }
        let verifies = |tls: Option<&super::TlsConfig>| {
            tls.is_some_and(|tls| tls.client_certificates.is_some())
        };
        let mtls = verifies(config.server.tls.as_ref())
            || verifies(config.server.http.as_ref().and_then(|h| h.tls.as_ref()));
        for (i, caller) in route.matches.callers.iter().enumerate() {
            if caller.is_empty() {
                errors.push(format!("{at}.match.callers[{i}]"), "must not be empty");
            } else if !mtls {
                errors.push(
                    format!("{at}.match.callers[{i}]"),
                    "needs server.tls.client_certificates or server.http.tls.client_certificates: \
                     without a verified client certificate no caller matches",
                );
            }
        }
        for (i, method) in route.matches.methods.iter().enumerate() {
            if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
                errors.push(
                    format!("{at}.match.methods[{i}]"),
                    format!("must be an upper-case HTTP method (got {method:?})"),
                );
            }
        }
    }
}

fn check_requirement(
    requirement: &super::Requirement,
    known: &HashSet<&str>,
    at: &str,
    errors: &mut Errors,
) {
    for (i, id) in requirement.issuers.iter().enumerate() {
        if !known.contains(id.as_str()) {
            errors.push(
                format!("{at}.issuers[{i}]"),
                format!("{id:?} is not the id of a configured issuer or API key set"),
            );
        }
    }
    // RFC 6749 §3.3 scope-token: printable ASCII except space, `"` and `\`.
    for (i, scope) in requirement.scopes.iter().enumerate() {
        let valid = !scope.is_empty()
            && scope
                .bytes()
                .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\');
        if !valid {
            errors.push(
                format!("{at}.scopes[{i}]"),
                "must be a scope token: printable ASCII without spaces, '\"' or '\\'",
            );
        }
    }
    for (i, condition) in requirement.claims.iter().enumerate() {
        let path = format!("{at}.claims[{i}]");
        if condition.path.is_empty() {
            errors.push(format!("{path}.path"), "must not be empty");
        }
        if let Some(id) = &condition.issuer
            && !known.contains(id.as_str())
        {
            errors.push(
                format!("{path}.issuer"),
                format!("{id:?} is not the id of a configured issuer or API key set"),
            );
        }
        let tests = usize::from(condition.equals.is_some())
            + usize::from(!condition.one_of.is_empty())
            + usize::from(condition.prefix.is_some())
            + usize::from(condition.glob.is_some())
            + usize::from(condition.present.is_some());
        if tests != 1 {
            errors.push(
                path,
                "set exactly one of equals, one_of, prefix, glob or present",
            );
        }
    }
    for (i, nested) in requirement.any_of.iter().enumerate() {
        check_requirement(nested, known, &format!("{at}.any_of[{i}]"), errors);
    }
    for (i, nested) in requirement.all_of.iter().enumerate() {
        check_requirement(nested, known, &format!("{at}.all_of[{i}]"), errors);
    }
}

fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn check_response(config: &Config, errors: &mut Errors) {
    let response = &config.response;
    if response.realm.is_empty()
        || response
            .realm
            .chars()
            .any(|c| c == '"' || c == '\\' || c.is_control())
    {
        errors.push(
            "response.realm",
            "must be non-empty printable text without '\"' or '\\'",
        );
    }
    let headers = &response.identity_headers;
    for (field, name) in [("subject", &headers.subject), ("issuer", &headers.issuer)] {
        if let Err(why) = check_header_name(name) {
            errors.push(format!("response.identity_headers.{field}"), why);
        } else if matches!(
            name.to_ascii_lowercase().as_str(),
            "authorization" | "host" | "cookie"
        ) {
            errors.push(
                format!("response.identity_headers.{field}"),
                format!("{name:?} cannot carry identity"),
            );
        }
    }
    if headers.subject.eq_ignore_ascii_case(&headers.issuer) {
        errors.push(
            "response.identity_headers.issuer",
            "must differ from response.identity_headers.subject",
        );
    }
    let reserved = [
        headers.subject.to_ascii_lowercase(),
        headers.issuer.to_ascii_lowercase(),
    ];
    check_templates(&response.headers, &reserved, "response.headers", errors);
    if let Some(name) = &response.identity_header {
        if let Err(why) = check_header_name(name) {
            errors.push("response.identity_header", why);
        } else if reserved.contains(&name.to_ascii_lowercase())
            || response
                .headers
                .keys()
                .any(|h| h.eq_ignore_ascii_case(name))
        {
            errors.push(
                "response.identity_header",
                format!("{name:?} is already set by another setting"),
            );
        }
    }
    if let Some(routes) = &config.routes {
        for (i, route) in routes.iter().enumerate() {
            check_templates(
                &route.headers,
                &reserved,
                &format!("routes[{i}].headers"),
                errors,
            );
        }
    }
}

/// Header templates: valid names that no other setting owns, and templates that parse.
fn check_templates(
    templates: &std::collections::BTreeMap<String, String>,
    reserved: &[String],
    at: &str,
    errors: &mut Errors,
) {
    for (name, template) in templates {
        let path = format!("{at}.{name}");
        if let Err(why) = check_header_name(name) {
            errors.push(path, why);
        } else if reserved.contains(&name.to_ascii_lowercase())
            || matches!(
                name.to_ascii_lowercase().as_str(),
                "authorization" | "host" | "cookie"
            )
        {
            errors.push(path, format!("{name:?} cannot be set here"));
        } else if let Err(why) = crate::response::Template::parse(template) {
            errors.push(path, format!("template {template:?} {why}"));
        }
    }
}

fn check_issuer(issuer: &IssuerConfig, at: &str, errors: &mut Errors) {
    if !is_identifier(&issuer.id) {
        errors.push(
            format!("{at}.id"),
            format!(
                "must be 1-64 characters of [a-z0-9_-] (got {:?})",
                issuer.id
            ),
        );
    }
    if issuer.issuer.is_empty() || issuer.issuer.trim() != issuer.issuer {
        errors.push(
            format!("{at}.issuer"),
            "must be the exact non-empty iss value, without surrounding whitespace",
        );
    }
    check_keys(issuer, at, errors);
    check_audience(issuer, at, errors);

    let mut seen = HashSet::new();
    for (i, alg) in issuer.algorithms.iter().enumerate() {
        if !seen.insert(alg) {
            errors.push(
                format!("{at}.algorithms[{i}]"),
                format!("{alg} is listed twice"),
            );
        }
    }
    if issuer.clock_skew.get() > MAX_CLOCK_SKEW {
        errors.push(
            format!("{at}.clock_skew"),
            format!("must be at most 5m (got {})", issuer.clock_skew),
        );
    }
    if issuer.max_lifetime.get() < Duration::from_secs(1) {
        errors.push(format!("{at}.max_lifetime"), "must be at least 1s");
    }
    for (name, values) in &issuer.required_claims {
        let path = format!("{at}.required_claims.{name}");
        if name.is_empty() {
            errors.push(path.clone(), "claim name must not be empty");
        }
        if values.values().is_empty() {
            errors.push(path.clone(), "must list at least one accepted value");
        }
        if values
            .values()
            .iter()
            .any(|v| !(v.is_string() || v.is_number() || v.is_boolean()))
        {
            errors.push(path, "accepted values must be strings, numbers or booleans");
        }
    }
    for (i, typ) in issuer.token_types.iter().enumerate() {
        let path = format!("{at}.token_types[{i}]");
        if typ.is_empty() || typ.trim() != typ {
            errors.push(path, "must be a media type, without surrounding whitespace");
        } else if let Some(kind) = other_jwt_kind(typ) {
            errors.push(path, format!("{typ:?} marks {kind}, never an access token"));
        }
    }
    check_tenants(issuer, at, errors);
    match (
        issuer.profile == super::ProfileName::AwsAlb,
        issuer.alb_signers.is_empty(),
    ) {
        (true, true) => errors.push(
            format!("{at}.alb_signers"),
            "must list the ARNs of your load balancers (the token header's signer)",
        ),
        (false, false) => errors.push(
            format!("{at}.alb_signers"),
            "only applies to profile: aws-alb",
        ),
        _ => {}
    }
    if issuer.profile != super::ProfileName::Generic
        && issuer.claim_mappings != super::ClaimMappings::default()
    {
        errors.push(
            format!("{at}.claim_mappings"),
            "only applies to profile: generic (the other profiles know their claims)",
        );
    }
    check_locations(
        &issuer.token_locations,
        &format!("{at}.token_locations"),
        errors,
    );
}

/// Media types (normalized) of JOSE objects that are never access tokens, with what they are.
const OTHER_JWT_KINDS: [(&str, &str); 5] = [
    ("secevent+jwt", "a security event token (RFC 8417)"),
    ("dpop+jwt", "a DPoP proof (RFC 9449)"),
    ("logout+jwt", "an OIDC back-channel logout token"),
    ("jose+json", "a JWS or JWE in JSON serialization"),
    (
        "token-introspection+jwt",
        "a token introspection response (RFC 9701)",
    ),
];

fn other_jwt_kind(typ: &str) -> Option<&'static str> {
    let typ = crate::verify::normalize_type(typ);
    OTHER_JWT_KINDS
        .iter()
        .find(|(name, _)| *name == typ)
        .map(|(_, kind)| *kind)
}

/// Every `iss` spelling must lead to one issuer. A configured `issuer` string may be shared by
/// issuers whose token locations are disjoint (the token's location then picks one); an alias
/// may not be shared at all.
fn check_issuer_names(issuers: &[IssuerConfig], errors: &mut Errors) {
    struct Name<'c> {
        index: usize,
        /// Field path of this spelling.
        path: String,
        alias: bool,
        issuer: &'c IssuerConfig,
    }
    let mut names: HashMap<String, Vec<Name<'_>>> = HashMap::new();
    for (index, issuer) in issuers.iter().enumerate() {
        let at = format!("issuers[{index}]");
        let aliases = issuer.aliases();
        check_aliases(issuer, &aliases, &at, errors);
        let spellings = std::iter::once((format!("{at}.issuer"), issuer.issuer.clone(), false))
            .chain(
                aliases
                    .into_iter()
                    .enumerate()
                    .map(|(i, alias)| (format!("{at}.issuer_aliases[{i}]"), alias, true)),
            );
        for (path, iss, alias) in spellings {
            let named = names.entry(iss.clone()).or_default();
            for earlier in named.iter().filter(|earlier| earlier.index != index) {
                if alias || earlier.alias {
                    errors.push(
                        path.clone(),
                        format!(
                            "duplicates {} {iss:?}; an issuer alias must be unique across issuers",
                            earlier.path
                        ),
                    );
                } else if let Some(shared) = shared_location(earlier.issuer, issuer) {
                    errors.push(
                        format!("{at}.token_locations"),
                        format!(
                            "issuers[{}] has the same issuer {iss:?} and also accepts tokens \
                             from {shared} (issuers[{}].token_locations); issuers that share an \
                             iss need disjoint token_locations",
                            earlier.index, earlier.index
                        ),
                    );
                }
            }
            named.push(Name {
                index,
                path,
                alias,
                issuer,
            });
        }
    }
}

fn check_aliases(issuer: &IssuerConfig, aliases: &[String], at: &str, errors: &mut Errors) {
    if issuer
        .issuer_aliases
        .as_ref()
        .is_some_and(|a| !a.is_empty())
        && issuer.issuer.contains("{tenantid}")
    {
        errors.push(
            format!("{at}.issuer_aliases"),
            "only applies to an issuer without {tenantid}",
        );
    }
    let mut seen = HashSet::new();
    for (i, alias) in aliases.iter().enumerate() {
        let path = format!("{at}.issuer_aliases[{i}]");
        if alias.is_empty() || alias.trim() != alias || alias.contains("{tenantid}") {
            errors.push(
                path,
                "must be an exact non-empty iss value, without surrounding whitespace or {tenantid}",
            );
        } else if *alias == issuer.issuer {
            errors.push(path, "repeats the issuer itself");
        } else if !seen.insert(alias) {
            errors.push(path, "is listed twice");
        }
    }
}

/// A token location both issuers accept, described for an error message. Locations naming
/// the same header (whatever their prefixes) or the same cookie count as shared: a request
/// could carry a token for either.
fn shared_location(a: &IssuerConfig, b: &IssuerConfig) -> Option<String> {
    let theirs = b.locations();
    a.locations().into_iter().find_map(|mine| {
        theirs.iter().find_map(|other| {
            if let (Some(x), Some(y)) = (&mine.header, &other.header)
                && x.eq_ignore_ascii_case(y)
            {
                return Some(format!("header {x}"));
            }
            if let (Some(x), Some(y)) = (&mine.cookie, &other.cookie)
                && x == y
            {
                return Some(format!("cookie {x}"));
            }
            None
        })
    })
}

fn check_keys(issuer: &IssuerConfig, at: &str, errors: &mut Errors) {
    let wants_hmac = issuer.algorithms.iter().any(|alg| alg.is_symmetric());
    match (&issuer.keys, &issuer.hmac_secret) {
        (None, None) => errors.push(
            format!("{at}.keys"),
            "is required (discovery, jwks_uri, jwks_file, jwks, …), unless hmac_secret is set",
        ),
        (Some(keys), _) => check_key_source(keys, &issuer.issuer, &format!("{at}.keys"), errors),
        (None, Some(_)) => {}
    }
    if issuer
        .keys
        .as_ref()
        .is_some_and(KeySource::is_spiffe_bundle)
    {
        for (i, alg) in issuer.algorithms.iter().enumerate() {
            if !alg.is_jwt_svid() {
                errors.push(
                    format!("{at}.algorithms[{i}]"),
                    format!("JWT-SVIDs are signed with RS*, ES* or PS* algorithms, not {alg}"),
                );
            }
        }
    }
    match &issuer.hmac_secret {
        Some(secret) => {
            if !wants_hmac {
                errors.push(
                    format!("{at}.hmac_secret"),
                    "is only used with an HS algorithm: list HS256, HS384 or HS512 in algorithms",
                );
            }
            check_secret(secret, &format!("{at}.hmac_secret"), errors);
        }
        None if wants_hmac => errors.push(
            format!("{at}.algorithms"),
            "lists an HS algorithm, which needs hmac_secret (at least 256 bits)",
        ),
        None => {}
    }
}

/// The URL-valued key source fields, with their names.
fn key_urls(keys: &KeySource) -> [(&'static str, Option<&str>); 5] {
    [
        ("discovery_url", keys.discovery_url.as_deref()),
        ("jwks_uri", keys.jwks_uri.as_deref()),
        ("pem_map_uri", keys.pem_map_uri.as_deref()),
        ("pem_uri_template", keys.pem_uri_template.as_deref()),
        ("spiffe_bundle_uri", keys.spiffe_bundle_uri.as_deref()),
    ]
}

fn check_key_source(keys: &KeySource, issuer: &str, at: &str, errors: &mut Errors) {
    let urls = key_urls(keys);
    let sources = urls.iter().filter(|(_, url)| url.is_some()).count()
        + usize::from(keys.discovery)
        + usize::from(keys.jwks_file.is_some())
        + usize::from(keys.jwks.is_some())
        + usize::from(keys.spiffe_bundle_file.is_some());
    if sources != 1 {
        errors.push(
            at.to_owned(),
            "set exactly one of discovery, discovery_url, jwks_uri, jwks_file, jwks, pem_map_uri, \
             pem_uri_template, spiffe_bundle_uri or spiffe_bundle_file",
        );
    }
    let scheme_ok = |url: &reqwest::Url| {
        url.scheme() == "https" || (keys.insecure_http && url.scheme() == "http")
    };
    for (field, url) in urls {
        let Some(text) = url else { continue };
        // The template's `{kid}` is not valid in a URL as written; check it with a stand-in.
        let parsed = reqwest::Url::parse(&text.replace("{kid}", "kid"));
        match parsed {
            Ok(url) if scheme_ok(&url) && url.host().is_some() => {}
            Ok(_) => errors.push(
                format!("{at}.{field}"),
                format!("must be an https:// URL (http:// only with insecure_http) (got {text:?})"),
            ),
            Err(err) => errors.push(format!("{at}.{field}"), format!("is not a URL: {err}")),
        }
    }
    if keys.discovery {
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        match reqwest::Url::parse(&url) {
            Ok(url) if scheme_ok(&url) && !issuer.contains("{tenantid}") => {}
            _ => errors.push(
                format!("{at}.discovery"),
                "needs an https:// issuer without {tenantid}; use discovery_url instead",
            ),
        }
    }
    if let Some(template) = &keys.pem_uri_template
        && template.matches("{kid}").count() != 1
    {
        errors.push(
            format!("{at}.pem_uri_template"),
            "must contain {kid} exactly once",
        );
    }
    let remote = urls.iter().any(|(_, url)| url.is_some()) || keys.discovery;
    if keys.ca_file.is_some() && !remote {
        errors.push(format!("{at}.ca_file"), "is only used with URL key sources");
    }
    let durations = [
        ("refresh_interval", keys.refresh_interval),
        ("min_refresh", keys.min_refresh),
        ("max_refresh", keys.max_refresh),
        ("unknown_kid_interval", keys.unknown_kid_interval),
        ("max_staleness", keys.max_staleness),
        ("connect_timeout", keys.connect_timeout),
        ("timeout", keys.timeout),
        ("file_check_interval", keys.file_check_interval),
    ];
    for (field, value) in durations {
        if value.get() < MIN_KEY_PERIOD {
            errors.push(
                format!("{at}.{field}"),
                format!("must be at least 1s (got {value})"),
            );
        }
    }
    if keys.min_refresh > keys.max_refresh {
        errors.push(
            format!("{at}.min_refresh"),
            format!("must not exceed max_refresh ({})", keys.max_refresh),
        );
    }
    if keys.unknown_kid_wait.get() > MAX_UNKNOWN_KID_WAIT {
        errors.push(
            format!("{at}.unknown_kid_wait"),
            format!(
                "must be at most 5s: a check holds its request while it waits (got {})",
                keys.unknown_kid_wait
            ),
        );
    }
    if !KEY_DOCUMENT_BYTES.contains(&keys.max_bytes) {
        errors.push(
            format!("{at}.max_bytes"),
            format!(
                "must be between {} and {} (got {})",
                KEY_DOCUMENT_BYTES.start(),
                KEY_DOCUMENT_BYTES.end(),
                keys.max_bytes
            ),
        );
    }
    if let Some(jwks) = &keys.jwks
        && !jwks.is_object()
    {
        errors.push(
            format!("{at}.jwks"),
            "must be a JWK Set object ({\"keys\": [...]})",
        );
    }
}

fn check_tenants(issuer: &IssuerConfig, at: &str, errors: &mut Errors) {
    let placeholders = issuer.issuer.matches("{tenantid}").count();
    if placeholders > 1 {
        errors.push(
            format!("{at}.issuer"),
            "may contain {tenantid} at most once",
        );
    }
    if placeholders == 1 {
        match (issuer.tenants.is_empty(), issuer.any_tenant) {
            (true, false) => errors.push(
                format!("{at}.tenants"),
                "must list the accepted tenants of a {tenantid} issuer (or set any_tenant: true)",
            ),
            (false, true) => errors.push(
                format!("{at}.any_tenant"),
                "cannot be combined with tenants",
            ),
            _ => {}
        }
        for (i, tenant) in issuer.tenants.iter().enumerate() {
            if tenant.is_empty() || tenant.contains(['/', '{', '}']) {
                errors.push(
                    format!("{at}.tenants[{i}]"),
                    "must be a tenant id (no '/', '{' or '}')",
                );
            }
        }
    } else if !issuer.tenants.is_empty() || issuer.any_tenant {
        errors.push(
            format!("{at}.tenants"),
            "only applies to an issuer containing {tenantid}",
        );
    }
}

fn check_secret(secret: &SecretSource, at: &str, errors: &mut Errors) {
    match (&secret.env, &secret.file) {
        (Some(env), None) if env.is_empty() => {
            errors.push(format!("{at}.env"), "must not be empty")
        }
        (Some(_), None) | (None, Some(_)) => {}
        _ => errors.push(at.to_owned(), "set exactly one of env or file"),
    }
}

fn check_audience(issuer: &IssuerConfig, at: &str, errors: &mut Errors) {
    match &issuer.skip_audience_check {
        Some(reason) if reason.trim().is_empty() => errors.push(
            format!("{at}.skip_audience_check"),
            "must state why the audience is not checked",
        ),
        Some(_) if !issuer.audiences.is_empty() => errors.push(
            format!("{at}.skip_audience_check"),
            "cannot be combined with audiences",
        ),
        Some(_) => {}
        None if issuer.audiences.is_empty() => errors.push(
            format!("{at}.audiences"),
            "must not be empty (list the accepted audiences, or set skip_audience_check with the reason)",
        ),
        None => {}
    }
    for (i, aud) in issuer.audiences.iter().enumerate() {
        if aud.is_empty() {
            errors.push(format!("{at}.audiences[{i}]"), "must not be empty");
        }
    }
    if issuer.audience_claim.is_empty() {
        errors.push(format!("{at}.audience_claim"), "must not be empty");
    }
}

fn check_locations(locations: &[TokenLocation], at: &str, errors: &mut Errors) {
    let mut seen = HashSet::new();
    for (i, location) in locations.iter().enumerate() {
        let path = format!("{at}[{i}]");
        match (&location.header, &location.cookie) {
            (Some(header), None) => {
                if let Err(why) = check_header_name(header) {
                    errors.push(format!("{path}.header"), why);
                } else if header.eq_ignore_ascii_case("cookie") {
                    errors.push(format!("{path}.header"), "use cookie: NAME for cookies");
                }
                if let Some(prefix) = &location.prefix
                    && (prefix.is_empty() || prefix.chars().any(char::is_control))
                {
                    errors.push(format!("{path}.prefix"), "must be non-empty printable text");
                }
            }
            (None, Some(cookie)) => {
                let valid = !cookie.is_empty()
                    && cookie
                        .bytes()
                        .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
                if !valid {
                    errors.push(
                        format!("{path}.cookie"),
                        format!("{cookie:?} is not a valid cookie name"),
                    );
                }
                if location.prefix.is_some() {
                    errors.push(format!("{path}.prefix"), "only applies to header locations");
                }
            }
            _ => errors.push(path.clone(), "set exactly one of header or cookie"),
        }
        if !seen.insert(location) {
            errors.push(path, "is listed twice");
        }
    }
}

/// A lower-case HTTP field name (RFC 9110 token), not a pseudo-header.
pub(super) fn check_header_name(name: &str) -> Result<(), String> {
    let token =
        |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        Err(format!("{name:?} is not a lower-case HTTP header name"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse_yaml;

    fn errors(yaml: &str) -> Vec<String> {
        match parse_yaml(yaml, "test.yaml") {
            Ok(_) => vec![],
            Err(err) => err.field_errors().iter().map(ToString::to_string).collect(),
        }
    }

    const GOOD: &str = r#"
issuers:
  - id: entra
    issuer: https://login.microsoftonline.com/tid/v2.0
    keys: { jwks_uri: "https://login.microsoftonline.com/tid/discovery/v2.0/keys" }
    audiences: ["api://orders"]
"#;

    #[test]
    fn a_minimal_config_is_valid_and_defaults_apply() {
        let config = parse_yaml(GOOD, "test.yaml").unwrap();
        assert_eq!(config.max_token_bytes, 8192);
        assert_eq!(config.issuers[0].clock_skew.get().as_secs(), 60);
        assert_eq!(
            config.issuers[0].locations(),
            [super::TokenLocation::bearer()]
        );
        assert_eq!(config.default_decision, super::super::DefaultDecision::Deny);
    }

    #[test]
    fn api_key_rules() {
        let set = |body: &str| errors(&format!("{GOOD}api_keys:\n  - id: partners\n{body}"));
        let hash = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            set(&format!(
                "    keys: [{{id: k1, hash: '{hash}', subject: s}}]\n"
            )),
            Vec::<String>::new()
        );
        assert_eq!(
            set(
                "    locations: [{header: x-auth-subject}, {header: authorization, scheme: Bearer}, {query: key}]\n    keys: [{id: k_1, hash: 'md5:1', subject: s, routes: [nope]}]\n"
            ),
            [
                "api_keys[0].locations[0].header: x-auth-subject is a header fedauthz sets upstream",
                "api_keys[0].locations[1].scheme: must be an authentication scheme other than Bearer (got \"Bearer\")",
                "api_keys[0].locations[1].header: authorization is also a token location of an issuer",
                "api_keys[0].locations[2].query: needs allow_query_parameter: true (keys in URLs end up in logs)",
                "api_keys[0].keys[0].id: must be 1-64 characters of [A-Za-z0-9-] (got \"k_1\")",
                "api_keys[0].keys[0].hash: must be sha256:<64 hex digits>, as `fedauthz apikey` prints it (the set hashes with sha256)",
                "api_keys[0].keys[0].routes[0]: names no configured route (\"nope\")",
            ]
        );
        assert_eq!(
            errors(&format!(
                "{GOOD}api_keys:\n  - {{id: entra, keys: [{{id: a, hash: '{hash}', subject: s}}]}}\n  - {{id: b, prefix: fak_x, hash: hmac_sha256, file: /k.yaml}}\n"
            )),
            [
                "api_keys[0].id: \"entra\" is also an issuer id: the identity's issuer would be ambiguous",
                "api_keys[1].prefix: \"fak_x\" overlaps api_keys[0].prefix \"fak_\": a key must name one set",
                "api_keys[1].hmac_secret_file: is required with hash: hmac_sha256",
            ]
        );
    }

    #[test]
    fn http_listener_rules() {
        let http = |body: &str| {
            errors(&format!(
                "server:\n  http:\n    listen: 127.0.0.1:9192\n{body}{GOOD}"
            ))
        };
        assert_eq!(
            http(""),
            [
                "server.http.trusted_proxies: is empty and server.http.tls.client_certificates is not set: no proxy could be trusted, so every request would be denied. List the proxies' networks, or require client certificates"
            ]
        );
        assert_eq!(
            http("    trusted_proxies: [127.0.0.1/32, '::1']\n"),
            Vec::<String>::new()
        );
        let bad = errors(&format!(
            "server:\n  http:\n    listen: 127.0.0.1:9192\n    trusted_proxies: [10.0.0.1/8]\n{GOOD}"
        ));
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(
            bad[0].contains("server.http.trusted_proxies[0]") && bad[0].contains("10.0.0.0/8"),
            "{bad:?}"
        );
        let endpoints = "    trusted_proxies: [127.0.0.1]\n    endpoints:\n      - {path: /envoy, convention: envoy}\n      - {path: /envoy/nginx, convention: nginx}\n      - {path: /nginx/, convention: nginx}\n      - {path: /t, convention: traefik}\n      - {path: /t, convention: nginx}\n";
        assert_eq!(
            http(endpoints),
            [
                "server.http.endpoints[1].path: overlaps server.http.endpoints[0].path \"/envoy\": an Envoy endpoint answers every path under its prefix",
                "server.http.endpoints[2].path: must be `/` then segments of letters, digits and -._~, with no trailing `/` (got \"/nginx/\")",
                "server.http.endpoints[4].path: duplicates server.http.endpoints[3].path",
            ]
        );
        assert_eq!(
            errors(&format!(
                "server:\n  grpc_listen: 127.0.0.1:9192\n  http:\n    listen: 127.0.0.1:9192\n    trusted_proxies: [127.0.0.1]\n{GOOD}"
            )),
            ["server.http.listen: must differ from server.grpc_listen"]
        );
    }

    #[test]
    fn transport_rules() {
        let tls = "server:\n  tls:\n    certificate_file: /tls/tls.crt\n    private_key_file: /tls/tls.key\n";
        let mtls = format!(
            "{tls}    client_certificates:\n      ca_file: /ca/ca.crt\n      allowed_identities:\n        uris: ['spiffe://cluster.local/ns/gw/sa/*', 'no-scheme']\n        dns_names: [envoy.gw.svc, 'bad name']\n"
        );
        let errs = errors(&format!("{mtls}  mesh_mtls: true\n{GOOD}"));
        assert_eq!(
            errs,
            [
                "server.mesh_mtls: states that the gRPC listener is plaintext behind mesh mTLS, but server.tls is set; keep one",
                "server.tls.client_certificates.allowed_identities.uris[1]: must be a URI such as spiffe://trust.domain/ns/x/sa/y (got \"no-scheme\")",
                "server.tls.client_certificates.allowed_identities.dns_names[1]: must be a DNS name, `*` allowed (got \"bad name\")",
            ]
        );
        // Routes on the caller need a verified client certificate to match against.
        let route = "routes:\n  - {name: gw, match: {callers: ['spiffe://cluster.local/ns/gw/sa/envoy', '']}}\n";
        assert_eq!(
            errors(&format!("{tls}{GOOD}{route}")),
            [
                "routes[0].match.callers[0]: needs server.tls.client_certificates or server.http.tls.client_certificates: without a verified client certificate no caller matches",
                "routes[0].match.callers[1]: must not be empty",
            ]
        );
        let good = mtls
            .replace(", 'no-scheme'", "")
            .replace(", 'bad name'", "");
        assert_eq!(
            errors(&format!("{good}{GOOD}{}", route.replace(", ''", ""))),
            Vec::<String>::new()
        );
    }

    #[test]
    fn routes_name_issuers_that_exist_and_are_named_once() {
        let good = format!(
            "{GOOD}routes:\n  - {{name: api, match: {{context_extensions: {{api: orders}}}}, require: {{issuers: [entra]}}}}\n  - {{name: health, allow_anonymous: true}}\n"
        );
        assert_eq!(errors(&good), Vec::<String>::new());
        let bad = format!(
            "{GOOD}routes:\n  - {{name: api, require: {{issuers: [cognito]}}}}\n  - {{name: api, allow_anonymous: true, require: {{issuers: [entra]}}, match: {{context_extensions: {{api: ''}}}}}}\n  - {{name: Bad Name}}\n"
        );
        assert_eq!(
            errors(&bad),
            [
                "routes[0].require.issuers[0]: \"cognito\" is not the id of a configured issuer or API key set",
                "routes[1].name: duplicates routes[0].name \"api\"",
                "routes[1].match.context_extensions.api: must not be empty",
                "routes[1].allow_anonymous: cannot be combined with require: an anonymous request has no token to check",
                "routes[2].name: must be 1-64 characters of [a-z0-9_-] (got \"Bad Name\")",
            ]
        );
        let errs = errors(&format!("{GOOD}routes: []\n"));
        assert!(
            errs[0].starts_with("routes: must list at least one route"),
            "{errs:?}"
        );
    }

    #[test]
    fn key_sources_and_tenants_are_checked_with_their_paths() {
        let issuer = |keys: &str, extra: &str| {
            format!(
                "issuers:\n  - id: x\n    issuer: https://login.example.com/{{tenantid}}/v2.0\n    audiences: [a]\n    keys: {{ {keys} }}\n{extra}"
            )
        };
        assert_eq!(
            errors(&issuer(
                "discovery_url: 'https://login.example.com/common/v2.0/.well-known/openid-configuration'",
                "    tenants: [t1]\n"
            )),
            Vec::<String>::new()
        );
        assert_eq!(
            errors(&issuer(
                "discovery: true, jwks_uri: 'http://idp/keys', unknown_kid_wait: 10s",
                ""
            )),
            [
                "issuers[0].keys: set exactly one of discovery, discovery_url, jwks_uri, jwks_file, jwks, pem_map_uri, pem_uri_template, spiffe_bundle_uri or spiffe_bundle_file",
                "issuers[0].keys.jwks_uri: must be an https:// URL (http:// only with insecure_http) (got \"http://idp/keys\")",
                "issuers[0].keys.discovery: needs an https:// issuer without {tenantid}; use discovery_url instead",
                "issuers[0].keys.unknown_kid_wait: must be at most 5s: a check holds its request while it waits (got 10s)",
                "issuers[0].tenants: must list the accepted tenants of a {tenantid} issuer (or set any_tenant: true)",
            ]
        );
        assert_eq!(
            errors(&issuer(
                "pem_uri_template: 'http://keys.example/pem', insecure_http: true, min_refresh: 2h, max_refresh: 1h",
                "    any_tenant: true\n"
            )),
            [
                "issuers[0].keys.pem_uri_template: must contain {kid} exactly once",
                "issuers[0].keys.min_refresh: must not exceed max_refresh (1h)",
            ]
        );
    }

    #[test]
    fn token_cache_defaults_and_limits() {
        let config = parse_yaml(GOOD, "test.yaml").unwrap();
        assert_eq!(config.token_cache.max_entries, 100_000);
        assert_eq!(config.token_cache.max_ttl.get().as_secs(), 300);
        let config = parse_yaml(
            &format!("{GOOD}token_cache:\n  max_entries: 0\n  max_ttl: 30s\n"),
            "test.yaml",
        )
        .unwrap();
        assert_eq!(config.token_cache.max_entries, 0);
        assert_eq!(config.token_cache.max_ttl.get().as_secs(), 30);
        assert_eq!(
            errors(&format!(
                "{GOOD}token_cache: {{max_entries: 20000000, max_ttl: 0s}}\n"
            )),
            [
                "token_cache.max_entries: must be at most 10000000 (got 20000000); 0 disables the cache",
                "token_cache.max_ttl: must be between 1s and 24h (got 0s); set max_entries: 0 to disable the cache",
            ]
        );
        assert!(
            errors(&format!("{GOOD}token_cache: {{max_ttl: 25h}}\n"))[0]
                .starts_with("token_cache.max_ttl: must be between 1s and 24h")
        );
        let errs = errors(&format!("{GOOD}token_cache: {{size: 5}}\n"));
        assert!(errs[0].starts_with("token_cache"), "{errs:?}");
        assert!(errs[0].contains("size"), "{errs:?}");
    }

    #[test]
    fn unknown_fields_are_errors_with_a_path() {
        let errs = errors(&GOOD.replace("audiences:", "audience_list: [x]\n    audiences:"));
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("issuers[0]"), "{errs:?}");
        assert!(errs[0].contains("audience_list"), "{errs:?}");
    }

    #[test]
    fn wrong_types_are_errors_with_a_path() {
        let errs = errors(&format!("{GOOD}    clock_skew: soon\n"));
        assert!(errs[0].starts_with("issuers[0].clock_skew"), "{errs:?}");
        let errs = errors(&format!("{GOOD}max_token_bytes: lots\n"));
        assert!(errs[0].starts_with("max_token_bytes"), "{errs:?}");
    }

    #[test]
    fn empty_audiences_name_the_field() {
        let errs = errors(&GOOD.replace(r#"["api://orders"]"#, "[]"));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("issuers[0].audiences: must not be empty"),
            "{errs:?}"
        );
        assert!(
            errors(&GOOD.replace(
                r#"audiences: ["api://orders"]"#,
                "skip_audience_check: \"SPIFFE bundle checks it\""
            ))
            .is_empty()
        );
        assert!(
            !errors(&GOOD.replace(
                r#"audiences: ["api://orders"]"#,
                "skip_audience_check: \" \""
            ))
            .is_empty()
        );
    }

    #[test]
    fn spiffe_issuers_take_only_jwt_svid_algorithms() {
        let yaml = |algs: &str| {
            format!(
                "issuers:\n  - id: mesh\n    issuer: spiffe://example.org\n    profile: spiffe\n    audiences: [a]\n    keys: {{ spiffe_bundle_file: /b.json }}\n    algorithms: [{algs}]\n    hmac_secret: {{ env: X }}\n"
            )
        };
        let errs = errors(&yaml("ES256, EdDSA, HS256"));
        for expected in [
            "issuers[0].algorithms[1]: JWT-SVIDs are signed with RS*, ES* or PS* algorithms, not EdDSA",
            "issuers[0].algorithms[2]: JWT-SVIDs are signed with RS*, ES* or PS* algorithms, not HS256",
        ] {
            assert!(
                errs.iter().any(|e| e == expected),
                "{expected:?} in {errs:#?}"
            );
        }
        let errs = errors(&yaml("ES256, PS256, RS256"));
        assert!(!errs.iter().any(|e| e.contains("JWT-SVID")), "{errs:#?}");
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let yaml = r#"
max_token_bytes: 10
issuers:
  - id: "Bad Id"
    issuer: " https://a/"
    keys: { jwks_uri: "http://plain/keys", jwks_file: "/x" }
    audiences: []
    algorithms: [HS256, RS256, RS256]
    clock_skew: 10m
    token_locations: [{ header: "X Bad" }, { cookie: "a;b" }, {}]
  - id: "Bad Id"
    issuer: " https://a/"
    hmac_secret: { env: X }
    audiences: [a]
"#;
        let errs = errors(yaml);
        for expected in [
            "max_token_bytes:",
            "issuers[0].id:",
            "issuers[0].issuer:",
            "issuers[0].keys: set exactly one",
            "issuers[0].keys.jwks_uri: must be an https:// URL",
            "issuers[0].audiences: must not be empty",
            "issuers[0].algorithms: lists an HS algorithm",
            "issuers[0].algorithms[2]: RS256 is listed twice",
            "issuers[0].clock_skew:",
            "issuers[0].token_locations[0].header:",
            "issuers[0].token_locations[1].cookie:",
            "issuers[0].token_locations[2]: set exactly one",
            "issuers[1].id: duplicates issuers[0].id",
            "issuers[1].hmac_secret: is only used with an HS algorithm",
        ] {
            assert!(
                errs.iter().any(|e| e.starts_with(expected)),
                "missing {expected:?} in {errs:#?}"
            );
        }
    }

    #[test]
    fn issuers_share_an_iss_only_with_disjoint_locations() {
        const POOL: &str = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Pool";
        let cognito = format!(
            "  - id: cognito\n    issuer: {POOL}\n    profile: cognito\n    keys: {{ jwks_uri: \"{POOL}/.well-known/jwks.json\" }}\n    audience_claim: client_id\n    audiences: [app]\n"
        );
        let alb = |extra: &str| {
            format!(
                "  - id: alb\n    issuer: {POOL}\n    profile: aws-alb\n    alb_signers: [arn]\n    keys: {{ pem_uri_template: \"https://public-keys.auth.elb.eu-west-1.amazonaws.com/{{kid}}\" }}\n    audience_claim: client\n    audiences: [app]\n{extra}"
            )
        };
        let config = |issuers: String| format!("issuers:\n{issuers}");
        assert_eq!(
            errors(&config(format!("{cognito}{}", alb("")))),
            Vec::<String>::new(),
            "ALB's x-amzn-oidc-data and Cognito's bearer tokens share the pool's iss"
        );
        assert_eq!(
            errors(&config(format!(
                "{cognito}{}",
                alb(
                    "    token_locations: [{header: x-amzn-oidc-data}, {header: authorization, prefix: \"DPoP \"}]\n"
                )
            ))),
            [format!(
                "issuers[1].token_locations: issuers[0] has the same issuer {POOL:?} and also accepts tokens from header authorization (issuers[0].token_locations); issuers that share an iss need disjoint token_locations"
            )],
        );
        let twice = cognito.replace("id: cognito", "id: again");
        assert_eq!(
            errors(&config(format!("{cognito}{twice}"))),
            [format!(
                "issuers[1].token_locations: issuers[0] has the same issuer {POOL:?} and also accepts tokens from header authorization (issuers[0].token_locations); issuers that share an iss need disjoint token_locations"
            )],
        );
    }

    #[test]
    fn issuer_aliases_are_exact_and_unique() {
        let google = "  - id: google\n    issuer: https://accounts.google.com\n    profile: google\n    keys: { jwks_uri: \"https://www.googleapis.com/oauth2/v3/certs\" }\n    audiences: [client]\n";
        let config = parse_yaml(&format!("issuers:\n{google}"), "test.yaml").unwrap();
        assert_eq!(config.issuers[0].aliases(), ["accounts.google.com"]);
        let opted_out = parse_yaml(
            &format!("issuers:\n{google}    issuer_aliases: []\n"),
            "test.yaml",
        )
        .unwrap();
        assert!(opted_out.issuers[0].aliases().is_empty());

        let other = |aliases: &str| {
            format!(
                "  - id: other\n    issuer: https://idp.example\n    keys: {{ jwks_uri: \"https://idp.example/keys\" }}\n    audiences: [a]\n    issuer_aliases: {aliases}\n"
            )
        };
        assert_eq!(
            errors(&format!(
                "issuers:\n{google}{}",
                other("[accounts.google.com, https://idp.example, \" idp.example\", x, x]")
            )),
            [
                "issuers[1].issuer_aliases[1]: repeats the issuer itself",
                "issuers[1].issuer_aliases[2]: must be an exact non-empty iss value, without surrounding whitespace or {tenantid}",
                "issuers[1].issuer_aliases[4]: is listed twice",
                "issuers[1].issuer_aliases[0]: duplicates issuers[0].issuer_aliases[0] \"accounts.google.com\"; an issuer alias must be unique across issuers",
            ]
        );
        // Unique even where the token locations would tell the issuers apart.
        let cookie = other("[accounts.google.com]") + "    token_locations: [{cookie: session}]\n";
        assert_eq!(
            errors(&format!("issuers:\n{google}{cookie}")),
            [
                "issuers[1].issuer_aliases[0]: duplicates issuers[0].issuer_aliases[0] \"accounts.google.com\"; an issuer alias must be unique across issuers"
            ]
        );
        let template = "issuers:\n  - id: entra\n    issuer: https://login.microsoftonline.com/{tenantid}/v2.0\n    any_tenant: true\n    keys: { jwks_uri: \"https://login.microsoftonline.com/common/discovery/v2.0/keys\" }\n    audiences: [a]\n    issuer_aliases: [https://sts.windows.net/x/]\n";
        assert_eq!(
            errors(template),
            ["issuers[0].issuer_aliases: only applies to an issuer without {tenantid}"]
        );
    }

    #[test]
    fn token_types_name_access_tokens_only() {
        let errs = errors(&format!(
            "{GOOD}    token_types: [at+jwt, \"application/secevent+jwt\", DPoP+JWT, logout+jwt, JOSE+JSON, \" JWT\"]\n"
        ));
        assert_eq!(
            errs,
            [
                "issuers[0].token_types[1]: \"application/secevent+jwt\" marks a security event token (RFC 8417), never an access token",
                "issuers[0].token_types[2]: \"DPoP+JWT\" marks a DPoP proof (RFC 9449), never an access token",
                "issuers[0].token_types[3]: \"logout+jwt\" marks an OIDC back-channel logout token, never an access token",
                "issuers[0].token_types[4]: \"JOSE+JSON\" marks a JWS or JWE in JSON serialization, never an access token",
                "issuers[0].token_types[5]: must be a media type, without surrounding whitespace",
            ]
        );
    }

    #[test]
    fn required_claims_take_one_value_or_a_list() {
        let yaml = format!(
            "{GOOD}    required_claims: {{ token_use: access, client_id: [a, b], n: 3 }}\n"
        );
        let config = parse_yaml(&yaml, "test.yaml").unwrap();
        let required = &config.issuers[0].required_claims;
        assert_eq!(
            required["token_use"].values(),
            [serde_json::json!("access")]
        );
        assert_eq!(
            required["client_id"].values(),
            [serde_json::json!("a"), serde_json::json!("b")]
        );
        assert_eq!(required["n"].values(), [serde_json::json!(3)]);
        let nested = format!("{GOOD}    required_claims: {{ x: [[a]] }}\n");
        assert!(errors(&nested)[0].starts_with("issuers[0].required_claims.x:"));
    }

    #[test]
    fn rendered_errors_name_the_file() {
        let err = super::super::parse_yaml("issuers: []", "conf/fedauthz.yaml").unwrap_err();
        assert_eq!(
            err.to_string(),
            "conf/fedauthz.yaml: issuers: must list at least one issuer (or set api_keys)"
        );
    }
}
