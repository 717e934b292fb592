//! The body of every fuzz target. Each takes the fuzzer's bytes, must not panic, and asserts
//! the invariants that are cheap to state for what it drives.

use std::collections::{HashMap, HashSet};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fedauthz::config::DEFAULT_MAX_TOKEN_BYTES;
use fedauthz::extract::{LocationSet, MAX_LOCATIONS};
use fedauthz::jose::{CompactJws, FormatError};
use fedauthz::keys::formats::{
    key_set_from_pem_map, key_set_from_spiffe_bundle, trusted_key_from_pem,
};
use fedauthz::keys::{AlgorithmPolicy, KeySet, TrustedKey};
use fedauthz::pipeline::Generation;
use fedauthz::proto::auth::attribute_context::{HttpRequest, Peer, Request as AttrRequest};
use fedauthz::proto::auth::{AttributeContext, CheckRequest, CheckResponse};
use fedauthz::proto::core::{HeaderMap, HeaderValue};
use fedauthz::service;
use fedauthz::verify::IssuerRegistry;
use prost::Message as _;
use serde_json::Value;

use super::fixture::{self, NOW};

/// Separates the header JSON from the payload JSON in a `verify_signed` input. 0xFF never
/// occurs in UTF-8, so no JSON text contains it.
pub const SIGNED_SEPARATOR: u8 = 0xFF;

/// Header of a `verify_signed` input that has no [`SIGNED_SEPARATOR`].
pub const DEFAULT_SIGNED_HEADER: &str = r#"{"alg":"EdDSA","kid":"ed-1","typ":"at+jwt"}"#;

/// Compact JWS framing: `CompactJws::parse` and `claims()` on arbitrary text.
///
/// Invariants of a token that parses: it is within the cap (one byte less is refused as too
/// large), its signing input is its first two segments exactly as sent, `padded` says whether
/// it holds `=`, the payload and signature segments are the canonical encodings of what was
/// decoded, and the header's `alg`/`kid`/`typ` are those of its JSON.
pub fn jws_compact(data: &[u8]) {
    let token = String::from_utf8_lossy(data);
    let token: &str = &token;
    let Ok(jws) = CompactJws::parse(token, DEFAULT_MAX_TOKEN_BYTES) else {
        return;
    };
    let _ = jws.claims();
    assert!(matches!(
        CompactJws::parse(token, token.len() - 1),
        Err(FormatError::TooLarge { .. })
    ));
    let segments: Vec<&str> = token.split('.').collect();
    assert_eq!(segments.len(), 3);
    assert_eq!(
        jws.signing_input,
        format!("{}.{}", segments[0], segments[1]).as_bytes()
    );
    assert_eq!(jws.padded, token.contains('='));
    assert_eq!(
        URL_SAFE_NO_PAD.encode(&jws.payload),
        segments[1].trim_end_matches('=')
    );
    assert_eq!(
        URL_SAFE_NO_PAD.encode(&jws.signature),
        segments[2].trim_end_matches('=')
    );
    let param = |name: &str| jws.header.params.get(name).and_then(Value::as_str);
    assert_eq!(param("alg"), Some(jws.header.alg.as_str()));
    assert_eq!(param("kid"), jws.header.kid.as_deref());
    assert_eq!(param("typ"), jws.header.typ.as_deref());
}

/// Every token location of the fixture.
fn all_locations() -> LocationSet {
    let mut all = LocationSet::default();
    for index in 0..MAX_LOCATIONS {
        all.insert(index);
    }
    all
}

/// `IssuerRegistry::verify` of the fixture's pipeline on `token`, asserting what a verified
/// token must satisfy: it verifies again to the same identity and expiry, it names the issuer
/// that verified it, and it has not expired.
fn verify_and_check(registry: &IssuerRegistry, token: &str) {
    let Ok(verified) = registry.verify(token, all_locations(), NOW) else {
        return;
    };
    assert_eq!(&*verified.identity.issuer, &*verified.issuer.id);
    assert_eq!(verified.subject(), verified.identity.subject);
    assert!(
        verified.expires_at > NOW - 300,
        "a verified token is not long expired"
    );
    let again = registry
        .verify(token, all_locations(), NOW)
        .expect("a token that verified verifies again");
    assert_eq!(again.identity, verified.identity);
    assert_eq!(again.expires_at, verified.expires_at);
    assert_eq!(again.claims, verified.claims);
    // A token only ever verifies where its issuer allows it: with no location it must fail.
    assert!(registry.verify(token, LocationSet::default(), NOW).is_err());
}

/// Arbitrary token text through the fixture's `IssuerRegistry::verify` (framing, issuer
/// choice, key choice, signature). Random text almost never gets past the signature; see
/// [`verify_signed`] for the claim checks.
pub fn verify_token(data: &[u8]) {
    let token = String::from_utf8_lossy(data);
    verify_and_check(fixture::generation().pipeline.issuers(), &token);
}

/// Arbitrary text through the JWE layer with the fixture's fixed decryption keys
/// (`Decrypter::open`): framing, key choice, decryption, the nested-JWT rules. Invariants: a
/// token that opens is within the cap, names a configured key by `kid`, holds one compact JWS,
/// and opens again to the same content; any refusal is one of the JWE reasons.
pub fn jwe_decrypt(data: &[u8]) {
    use fedauthz::reason::Reason;
    let token = String::from_utf8_lossy(data);
    let decrypter = fixture::decrypter();
    let _ = fedauthz::verify::jwe::Framing::parse_envelope(
        &token,
        &[
            fedauthz::config::ContentEncryption::A128Gcm,
            fedauthz::config::ContentEncryption::A128CbcHs256,
        ],
    );
    match decrypter.open(&token, DEFAULT_MAX_TOKEN_BYTES) {
        Ok(opened) => {
            assert!(token.len() <= DEFAULT_MAX_TOKEN_BYTES);
            assert!(["fz-x25519", "fz-dir"].contains(&opened.encryption.kid.as_str()));
            assert_eq!(opened.jws.split('.').count(), 3);
            let again = decrypter
                .open(&token, DEFAULT_MAX_TOKEN_BYTES)
                .expect("a token that opened opens again");
            assert_eq!(again.jws, opened.jws);
            assert_eq!(again.encryption, opened.encryption);
            // What is inside then goes through normal verification, which must not panic.
            let _ =
                fixture::generation()
                    .pipeline
                    .issuers()
                    .verify(&opened.jws, all_locations(), NOW);
        }
        Err(rejection) => assert!(
            matches!(
                rejection.reason,
                Reason::TokenMalformed
                    | Reason::TokenTooLarge
                    | Reason::EncryptionNotAllowed
                    | Reason::DecryptionFailed
            ),
            "unexpected reason {:?}",
            rejection.reason
        ),
    }
}

/// Splits a `verify_signed` input into header and payload bytes.
pub fn signed_parts(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == SIGNED_SEPARATOR) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (DEFAULT_SIGNED_HEADER.as_bytes(), data),
    }
}

/// The fuzzer's bytes as header and payload JSON (`HEADER 0xFF PAYLOAD`, or only a payload
/// under [`DEFAULT_SIGNED_HEADER`]), base64url-encoded and signed with the fixture key the
/// header's `alg` names, so the signature verifies and the fuzzer reaches claim validation,
/// identity normalization, authorization and the response.
pub fn verify_signed(data: &[u8]) {
    let (header, payload) = signed_parts(data);
    let token = fixture::sign_token(header, payload);
    let generation = fixture::generation();
    verify_and_check(generation.pipeline.issuers(), &token);
    let mut request = http_request("GET", "api.fuzz.example", "/orders/1");
    set_header(&mut request, "authorization", &format!("Bearer {token}"));
    check_twice(generation, &request);
}

/// Both policies a key document is read under: the default (each key's own `alg`, or its
/// type's one algorithm) and an explicit list.
fn policies() -> [AlgorithmPolicy; 2] {
    use fedauthz::jose::Algorithm;
    [
        AlgorithmPolicy::default(),
        AlgorithmPolicy {
            allowed: vec![
                Algorithm::RS256,
                Algorithm::PS256,
                Algorithm::ES256,
                Algorithm::ES384,
                Algorithm::EdDSA,
            ],
        },
    ]
}

/// What holds for any key set that builds: not empty, no two keys share a kid, each kid finds
/// its own key, each key is bound to at least one algorithm (all allowed by an explicit
/// policy), and checking a garbage signature is a plain `false`.
fn check_set(set: &KeySet, policy: &AlgorithmPolicy) {
    assert!(!set.is_empty());
    assert_eq!(set.len(), set.keys().len());
    let mut kids = HashSet::new();
    for key in set.keys() {
        if let Some(kid) = key.kid() {
            assert!(kids.insert(kid), "kid {kid:?} is unique");
            let found = set.select(Some(kid)).expect("a kid finds its key");
            assert_eq!(found.fingerprint(), key.fingerprint());
        }
        check_key(key, policy);
    }
}

fn check_key(key: &TrustedKey, policy: &AlgorithmPolicy) {
    let algorithms: Vec<_> = key.algorithms().collect();
    assert!(!algorithms.is_empty(), "a trusted key verifies something");
    for alg in &algorithms {
        assert!(policy.allowed.is_empty() || policy.allowed.contains(alg));
        let name = alg.to_string();
        let verifier = key
            .verifier_for(&name)
            .expect("a key has a verifier for each bound algorithm");
        assert!(!verifier.verify(b"e30.e30", &[0u8; 64]));
    }
    assert!(key.verifier_for("none").is_none());
}

/// Key documents: the same bytes as a JWK Set, a kid→PEM map, a SPIFFE bundle and a single
/// PEM key, each under both [`policies`].
pub fn key_documents(data: &[u8]) {
    for policy in &policies() {
        if let Ok(set) = KeySet::from_jwks_bytes(data, policy, None) {
            check_set(&set, policy);
        }
        if let Ok(set) = key_set_from_pem_map(data, policy, None) {
            check_set(&set, policy);
        }
        if let Ok((set, _hint)) = key_set_from_spiffe_bundle(data, policy) {
            check_set(&set, policy);
        }
        if let Ok(key) = trusted_key_from_pem("fuzz-kid", data, policy) {
            assert_eq!(key.kid(), Some("fuzz-kid"));
            check_key(&key, policy);
        }
    }
}

/// Runs `request` through the service's adapter and the pipeline twice: the answers must be
/// the same (the second may come from the token cache), and every answer has a status and an
/// HTTP response.
fn check_twice(generation: &Generation, request: &CheckRequest) -> CheckResponse {
    // The route facts and header lookups the adapter hands the pipeline.
    let _ = service::request_facts(request);
    let first = service::check(&generation.pipeline, request, NOW);
    assert!(first.status.is_some(), "every answer has a status");
    assert!(
        first.http_response.is_some(),
        "every answer has an HTTP response"
    );
    let second = service::check(&generation.pipeline, request, NOW);
    assert_eq!(first, second, "the same request gets the same answer");
    first
}

/// A CheckRequest for `method host path` with no headers yet.
pub fn http_request(method: &str, host: &str, path: &str) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(AttrRequest {
                http: Some(HttpRequest {
                    method: method.into(),
                    host: host.into(),
                    path: path.into(),
                    headers: [
                        (":method".to_owned(), method.to_owned()),
                        (":authority".to_owned(), host.to_owned()),
                        (":path".to_owned(), path.to_owned()),
                    ]
                    .into_iter()
                    .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

fn http_mut(request: &mut CheckRequest) -> &mut HttpRequest {
    request
        .attributes
        .get_or_insert_with(Default::default)
        .request
        .get_or_insert_with(Default::default)
        .http
        .get_or_insert_with(Default::default)
}

fn set_header(request: &mut CheckRequest, name: &str, value: &str) {
    http_mut(request)
        .headers
        .insert(name.to_owned(), value.to_owned());
}

/// Arbitrary bytes decoded as a protobuf `CheckRequest`, through `service::check`.
pub fn check_request(data: &[u8]) {
    let Ok(request) = CheckRequest::decode(data) else {
        return;
    };
    check_twice(fixture::generation(), &request);
}

/// A CheckRequest from a text request (see [`parse_headers`]), through `service::check`.
pub fn check_headers(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let request = parse_headers(&text);
    check_twice(fixture::generation(), &request);
}

/// Reads the `check_headers` input format: a first line `METHOD HOST PATH`, then one header
/// per line (`name: value`), and three directives: `@ctx key=value` (a context extension),
/// `@principal VALUE` (the mTLS peer) and `@raw` (from here on, headers go to `header_map`
/// as Envoy sends them with `encode_raw_headers`, repeats kept; the `headers` map is then
/// left empty, as Envoy leaves it).
pub fn parse_headers(text: &str) -> CheckRequest {
    let mut lines = text.split('\n');
    let first = lines.next().unwrap_or_default();
    let mut words = first.splitn(3, ' ');
    let method = words.next().unwrap_or_default();
    let host = words.next().unwrap_or_default();
    let path = words.next().unwrap_or_default();
    let mut request = http_request(method, host, path);
    let mut context = HashMap::new();
    let mut principal = None;
    let mut raw: Option<Vec<HeaderValue>> = None;
    for line in lines {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some(rest) = line.strip_prefix("@ctx ") {
            let (key, value) = rest.split_once('=').unwrap_or((rest, ""));
            context.insert(key.to_owned(), value.to_owned());
        } else if let Some(rest) = line.strip_prefix("@principal ") {
            principal = Some(rest.to_owned());
        } else if line == "@raw" {
            raw.get_or_insert_with(Vec::new);
        } else {
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match &mut raw {
                Some(raw) => raw.push(HeaderValue {
                    key: name.to_owned(),
                    value: String::new(),
                    raw_value: value.as_bytes().to_vec(),
                }),
                None => set_header(&mut request, name, value),
            }
        }
    }
    if let Some(raw) = raw {
        let http = http_mut(&mut request);
        http.headers.clear();
        http.header_map = Some(HeaderMap { headers: raw });
    }
    let attributes = request.attributes.get_or_insert_with(Default::default);
    attributes.context_extensions = context;
    if let Some(principal) = principal {
        attributes.source = Some(Peer {
            principal,
            ..Default::default()
        });
    }
    request
}

/// Whether building `config`'s key sources does any I/O besides reading environment
/// variables: only inline `jwks` (or no key source) and secrets from the environment qualify.
fn keys_are_inline(config: &fedauthz::config::Config) -> bool {
    config.issuers.iter().all(|issuer| {
        let keys_inline = issuer.keys.as_ref().is_none_or(|keys| {
            keys.jwks.is_some()
                && keys.jwks_file.is_none()
                && keys.spiffe_bundle_file.is_none()
                && keys.ca_file.is_none()
        });
        let secret_inline = issuer
            .hmac_secret
            .as_ref()
            .is_none_or(|secret| secret.file.is_none());
        keys_inline && secret_inline
    })
}

/// Configuration text through `config::parse_yaml` (which validates) and, for a configuration
/// that parses, `validate` once more (it must agree: no errors), then, when its keys are all
/// inline, `keys::source::prepare` and a compiled pipeline that answers one request.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(config) = fedauthz::config::parse_yaml(&text, "fuzz.yaml") else {
        return;
    };
    let errors = fedauthz::config::validate(&config);
    assert!(
        errors.is_empty(),
        "parse_yaml accepted what validate refuses: {errors:?}"
    );
    if !keys_are_inline(&config) {
        return;
    }
    if fedauthz::keys::source::prepare(&config).is_err() {
        return;
    }
    let Ok(generation) = Generation::build(
        config,
        None,
        &std::sync::Arc::new(tokio::sync::Notify::new()),
    ) else {
        return;
    };
    let mut request = http_request("GET", "api.fuzz.example", "/orders/1");
    set_header(&mut request, "authorization", "Bearer e30.e30.e30");
    check_twice(&generation, &request);
}

/// API key parsing: the input as the `x-api-key` header, as `Authorization: ApiKey …`, and as
/// the `api_key` query parameter, through extraction and verification.
///
/// Invariants: nothing panics; an extracted key is trimmed and holds no `,`; a key that
/// verifies is exactly the fixture's one valid key (so no other input is mistaken for it), and
/// verifies as `partners`' key `fuzz-1` only from a location of that set.
pub fn api_key(data: &[u8]) {
    use fedauthz::extract::HeaderLookup;
    use std::borrow::Cow;

    struct One<'a>(&'a str, &'a str);
    impl HeaderLookup for One<'_> {
        fn header(&self, name: &str) -> Option<Cow<'_, str>> {
            (name == self.0).then_some(Cow::Borrowed(self.1))
        }
    }

    let text = String::from_utf8_lossy(data);
    let keys = fixture::api_keys();
    let path = format!("/x?api_key={text}");
    let authorization = format!("ApiKey {text}");
    let places = [
        (One("x-api-key", &text), "/x"),
        (One("authorization", &authorization), "/x"),
        (One("none", ""), path.as_str()),
    ];
    for (headers, path) in &places {
        let Ok(Some(key)) = keys.extract(headers, path) else {
            continue;
        };
        assert!(!key.text.contains(','), "an extracted key holds a comma");
        assert_eq!(key.text.trim(), key.text, "an extracted key is trimmed");
        if let Ok(token) = keys.verify(&key, NOW) {
            assert_eq!(key.text, fixture::API_KEY, "only the fixture key verifies");
            assert_eq!(&*token.issuer.id, "partners");
            assert_eq!(token.subject(), "fuzzer");
            assert!(
                key.header != Some("authorization"),
                "partners keys never arrive there"
            );
        }
    }
}
