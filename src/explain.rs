//! `fedauthz explain`: runs one request through the real pipeline ([`crate::service`], the
//! same code path as the server) and prints the decision trace: each verification step in the
//! order the verifier takes them, the normalized identity, the route and the answer Envoy
//! would get. Tokens are never printed, only a short hash of them.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::authz::Decision;
use crate::jose::CompactJws;
use crate::pipeline::Checked;
use crate::proto::auth::attribute_context::{HttpRequest, Peer, Request};
use crate::proto::auth::check_response::HttpResponse;
use crate::proto::auth::{AttributeContext, CheckRequest};
use crate::reason::Reason;

/// The request to explain.
#[derive(Debug, Clone, Default)]
pub struct ExplainRequest {
    /// HTTP method.
    pub method: String,
    /// Host.
    pub host: String,
    /// Path (with query, if any).
    pub path: String,
    /// Request headers, lower-case names (a token goes in its location, e.g. authorization).
    pub headers: Vec<(String, String)>,
    /// Envoy context_extensions.
    pub context_extensions: HashMap<String, String>,
    /// mTLS peer principal (`source.principal`, the downstream client).
    pub principal: String,
    /// The calling proxy's client certificate names (`match.callers`), as if verified.
    pub caller: Option<crate::caller::CallerIdentity>,
}

impl ExplainRequest {
    /// The CheckRequest Envoy would send for this request.
    pub fn to_check_request(&self) -> CheckRequest {
        let mut headers: HashMap<String, String> = HashMap::new();
        for (name, value) in &self.headers {
            headers
                .entry(name.to_ascii_lowercase())
                .and_modify(|v| {
                    v.push(',');
                    v.push_str(value);
                })
                .or_insert_with(|| value.clone());
        }
        CheckRequest {
            attributes: Some(AttributeContext {
                source: Some(Peer {
                    principal: self.principal.clone(),
                    ..Peer::default()
                }),
                request: Some(Request {
                    time: None,
                    http: Some(HttpRequest {
                        method: self.method.clone(),
                        host: self.host.clone(),
                        path: self.path.clone(),
                        headers,
                        ..HttpRequest::default()
                    }),
                }),
                context_extensions: self.context_extensions.clone(),
                ..AttributeContext::default()
            }),
        }
    }
}

/// The verification steps, in the order the pipeline takes them.
const STEPS: [&str; 13] = [
    "credential",
    "decryption",
    "framing",
    "issuer",
    "location",
    "keys",
    "key",
    "algorithm",
    "signature",
    "claims",
    "route",
    "requirements",
    "mint",
];

/// Index in [`STEPS`] of the step that fails with `reason`.
fn failing_step(reason: Reason) -> usize {
    match reason {
        Reason::TokenMissing | Reason::CredentialAmbiguous => 0,
        Reason::EncryptionNotAllowed | Reason::DecryptionFailed => 1,
        Reason::TokenTooLarge
        | Reason::TokenMalformed
        | Reason::TokenEncrypted
        | Reason::HeaderNotAllowed
        | Reason::CritUnsupported => 2,
        Reason::IssuerUnknown => 3,
        Reason::TokenLocationNotAllowed => 4,
        Reason::KeysUnavailable => 5,
        Reason::KeyUnknown => 6,
        Reason::AlgorithmNotAllowed => 7,
        // The digest compare of an API key stands where a signature check stands.
        Reason::SignatureInvalid
        | Reason::ApiKeyUnknown
        | Reason::ApiKeyRevoked
        | Reason::ApiKeyExpired
        | Reason::ApiKeyNotYetValid => 8,
        Reason::TokenExpired
        | Reason::TokenNotYetValid
        | Reason::TokenIssuedInFuture
        | Reason::TokenLifetimeExceeded
        | Reason::AudienceMismatch
        | Reason::TokenTypeNotAllowed
        | Reason::ClaimMissing
        | Reason::ClaimInvalid
        | Reason::ClaimMismatch => 9,
        Reason::NoRouteMatched => 10,
        Reason::RequirementNotMet => 11,
        Reason::MintFailed => 12,
        // Only the HTTP listener refuses a proxy; explain reads a CheckRequest.
        Reason::ProxyUntrusted | Reason::ProxyRequestInvalid => 0,
    }
}

/// The protected header of an encrypted token (readable without the key), for the trace.
fn jwe_header(token: &str) -> Option<String> {
    use base64::Engine as _;
    let first = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(first)
        .ok()?;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes).ok()?;
    let field = |name: &str| {
        header
            .get(name)
            .and_then(serde_json::Value::as_str)
            .map_or("(none)".to_owned(), |v| format!("{v:?}"))
    };
    Some(format!(
        "encrypted: alg {}, enc {}, kid {}, cty {}",
        field("alg"),
        field("enc"),
        field("kid"),
        field("cty")
    ))
}

/// Renders the trace of `checked`, the outcome of `request`; `token` is the credential that
/// was sent, if any (only its header and a hash are shown).
pub fn render(request: &ExplainRequest, token: Option<&str>, checked: &Checked) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "request: {} {}{}",
        request.method, request.host, request.path
    );
    if let Some(token) = token {
        let digest = openssl::sha::sha256(token.as_bytes());
        let short: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
        let header = CompactJws::parse(token, usize::MAX).ok().map(|jws| {
            let h = &jws.header;
            let or_none = |v: &Option<String>| {
                v.as_deref()
                    .map_or("(none)".to_owned(), |v| format!("{v:?}"))
            };
            format!(
                "alg {:?}, kid {}, typ {}",
                h.alg,
                or_none(&h.kid),
                or_none(&h.typ)
            )
        });
        let _ = writeln!(
            out,
            "token:   {} bytes, sha256 {short}…{}",
            token.len(),
            header
                .or_else(|| crate::verify::jwe::is_encrypted(token)
                    .then(|| jwe_header(token))
                    .flatten())
                .map(|h| format!(", {h}"))
                .unwrap_or_default()
        );
    }
    out.push_str("steps:\n");
    let (failed, detail) = match &checked.decision {
        Decision::Deny(rejection) => (
            Some(failing_step(rejection.reason)),
            format!("{}: {}", rejection.reason, rejection.detail),
        ),
        Decision::Allow(_) => (None, String::new()),
    };
    let anonymous = matches!(checked.decision, Decision::Allow(None));
    let encrypted = token.is_some_and(crate::verify::jwe::is_encrypted);
    let api_key = checked.credential == Some(crate::config::CredentialKind::ApiKey);
    for (index, step) in STEPS.iter().enumerate() {
        let status = match failed {
            Some(at) if index == at => format!("FAILED  {detail}"),
            Some(at) if index > at => "not reached".to_owned(),
            _ if anonymous && (1..=9).contains(&index) => "skipped (no credential)".to_owned(),
            // An API key has no framing, keys or algorithm: its digest compare stands where the
            // signature check stands.
            _ if api_key && [1, 2, 5, 6, 7].contains(&index) => "— (API key)".to_owned(),
            _ if api_key && index == 3 => "ok (API key set by prefix)".to_owned(),
            _ if api_key && index == 4 && failed == Some(8) => {
                "not reached (checked once the digest matches)".to_owned()
            }
            _ if api_key && index == 8 => "ok (API key digest matched)".to_owned(),
            _ if api_key && index == 9 => "— (API key: validity times checked)".to_owned(),
            // The plaintext is never printed: the steps after this one name what was inside.
            _ if index == 1 && encrypted => "ok (decrypted; the content is not shown)".to_owned(),
            _ if index == 1 => "not encrypted".to_owned(),
            _ if index == 12 => match &checked.minted {
                Some(minted) => format!(
                    "ok (jti {}, kid {}, exp {}{})",
                    minted.jti,
                    minted.kid,
                    minted.expires_at,
                    if minted.encrypted {
                        ", encrypted to the upstream"
                    } else {
                        ""
                    }
                ),
                None => "none (this route mints no token)".to_owned(),
            },
            _ => "ok".to_owned(),
        };
        let _ = writeln!(out, "  {step:<13}{status}");
    }
    if let Decision::Allow(Some(token)) = &checked.decision {
        let _ = writeln!(
            out,
            "issuer:  {} ({})",
            token.issuer.id, token.issuer.issuer
        );
        if let Ok(identity) = serde_json::to_string_pretty(&token.identity) {
            let _ = writeln!(out, "identity:\n{identity}");
        }
    }
    let _ = writeln!(
        out,
        "route:   {}",
        checked.route.as_deref().unwrap_or("(none)")
    );
    render_answer(&mut out, checked);
    out
}

fn render_answer(out: &mut String, checked: &Checked) {
    match &checked.response.http_response {
        Some(HttpResponse::OkResponse(ok)) => {
            let _ = writeln!(out, "answer:  ALLOW (the request goes upstream)");
            let minted = checked.minted.as_deref().map(|m| m.token.as_str());
            for header in ok.headers.iter().filter_map(|h| h.header.as_ref()) {
                // The minted token is a credential: shown by its jti (the mint step), not its text.
                let value = header
                    .value
                    .strip_prefix("Bearer ")
                    .unwrap_or(&header.value);
                if Some(value) == minted {
                    let _ = writeln!(out, "  set     {}: (the minted token)", header.key);
                } else {
                    let _ = writeln!(out, "  set     {}: {}", header.key, header.value);
                }
            }
            for name in &ok.headers_to_remove {
                let _ = writeln!(out, "  remove  {name}");
            }
        }
        Some(HttpResponse::DeniedResponse(denied)) => {
            let status = denied.status.as_ref().map_or(0, |s| s.code);
            let _ = writeln!(out, "answer:  DENY {status}");
            for header in denied.headers.iter().filter_map(|h| h.header.as_ref()) {
                let _ = writeln!(out, "  {}: {}", header.key, header.value);
            }
            let _ = writeln!(out, "  body: {}", denied.body);
        }
        _ => {
            let _ = writeln!(out, "answer:  (none)");
        }
    }
}
