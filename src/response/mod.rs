//! Response: turn a decision into Envoy's `CheckResponse`.
//!
//! Allow → `OkHttpResponse` that sets the identity headers and the configured header templates
//! with `append: false` (overwriting any client-sent copy), removes the credential (its header,
//! or its cookie from the `cookie` header) and every header fedauthz could set but does not set for this request, and reports
//! subject/issuer/reason/route in dynamic metadata. Deny → `DeniedHttpResponse` with
//! an RFC 6750 challenge, a small JSON body and the reason code in dynamic metadata; the gRPC
//! status is non-zero. Never an RPC error: under `failure_mode_allow` Envoy would let an errored
//! check through (envoy-ext-authz.md §6). Depends on [`crate::authz`], [`crate::identity`],
//! [`crate::proto`] and [`crate::reason`].

pub mod mint;
mod template;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

pub use template::Template;

use prost_types::{Struct, Value as PbValue, value::Kind};

use crate::authz::Decision;
use crate::config::{Config, ResponseConfig};
use crate::proto::auth::{
    CheckResponse, DeniedHttpResponse, OkHttpResponse, check_response::HttpResponse,
};
use crate::proto::core::{HeaderValue, HeaderValueOption};
use crate::proto::envoy::r#type::v3::HttpStatus;
use crate::proto::google::rpc::Status;
use crate::reason::{Reason, Rejection};
use crate::verify::VerifiedToken;

/// gRPC status codes used in `CheckResponse.status` (google.rpc.Code).
mod grpc_code {
    pub const OK: i32 = 0;
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const UNAVAILABLE: i32 = 14;
    pub const UNAUTHENTICATED: i32 = 16;
}

/// The RFC 6750 shape of a denial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Challenge {
    /// HTTP status of the local reply.
    pub http_status: u16,
    /// gRPC code for `CheckResponse.status`.
    pub grpc_code: i32,
    /// RFC 6750 `error` code; `None` when no credential was sent (§3.1).
    pub error: Option<&'static str>,
}

impl Challenge {
    /// How a rejection for `reason` is answered.
    pub fn for_reason(reason: Reason) -> Self {
        match reason {
            Reason::TokenMissing => Self {
                http_status: 401,
                grpc_code: grpc_code::UNAUTHENTICATED,
                error: None,
            },
            Reason::CredentialAmbiguous => Self {
                http_status: 400,
                grpc_code: grpc_code::INVALID_ARGUMENT,
                error: Some("invalid_request"),
            },
            // Authenticated but not allowed: RFC 6750 §3.1 insufficient_scope.
            Reason::NoRouteMatched | Reason::RequirementNotMet => Self {
                http_status: 403,
                grpc_code: grpc_code::PERMISSION_DENIED,
                error: Some("insufficient_scope"),
            },
            // Not about the client's credential: no challenge.
            Reason::ProxyUntrusted => Self {
                http_status: 403,
                grpc_code: grpc_code::PERMISSION_DENIED,
                error: None,
            },
            Reason::ProxyRequestInvalid => Self {
                http_status: 400,
                grpc_code: grpc_code::INVALID_ARGUMENT,
                error: None,
            },
            // Not the client's fault: say so, so it does not throw away a good token.
            Reason::KeysUnavailable | Reason::MintFailed => Self {
                http_status: 503,
                grpc_code: grpc_code::UNAVAILABLE,
                error: None,
            },
            _ => Self {
                http_status: 401,
                grpc_code: grpc_code::UNAUTHENTICATED,
                error: Some("invalid_token"),
            },
        }
    }
}

/// Headers set from templates.
type Templates = Vec<(String, Template)>;

/// Builds `CheckResponse`s.
#[derive(Debug, Clone)]
pub struct Responder {
    realm: String,
    subject_header: String,
    issuer_header: String,
    remove_credential: bool,
    headers: Templates,
    identity_header: Option<String>,
    route_headers: HashMap<String, Templates>,
    /// Every header fedauthz may set: each is removed from requests that do not get it set,
    /// so a client-sent copy never reaches the upstream.
    settable: BTreeSet<String>,
}

fn compile(templates: &BTreeMap<String, String>) -> Templates {
    templates
        .iter()
        .filter_map(|(name, text)| Some((name.to_ascii_lowercase(), Template::parse(text).ok()?)))
        .collect()
}

/// Where the request carried its credential, so that an allowed request goes upstream without
/// it (`response.remove_credential`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CredentialPlace<'a> {
    /// The header it came in.
    pub header: Option<&'a str>,
    /// It came in a cookie: what becomes of the request's `cookie` header.
    pub cookie_header: Option<CookieHeader>,
    /// The header an API key came in, whichever credential was used: a key never goes
    /// upstream, whatever `remove_credential` says.
    pub api_key_header: Option<&'a str>,
    /// The query parameter an API key came in (removed likewise).
    pub api_key_parameter: Option<&'a str>,
}

/// The `cookie` header once the credential cookie is taken out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CookieHeader {
    /// No other cookie was sent: remove the header.
    Remove,
    /// The other cookies.
    Replace(String),
}

impl Responder {
    /// A responder shaped by the response settings of `config` (already validated).
    pub fn new(config: &Config) -> Self {
        let mut responder = Self::with_routes(
            &config.response,
            config.routes.as_deref().unwrap_or_default(),
        );
        // A client-sent copy of the minted-token header never reaches the upstream. Not
        // `authorization`: that is the credential's own header, handled as such.
        if let Some(mint) = &config.mint {
            let header = mint.header.to_ascii_lowercase();
            if header != "authorization" {
                responder.settable.insert(header);
            }
        }
        responder
    }

    /// Puts `minted` into the allow `response`: in `header` (`authorization` as `Bearer`),
    /// overwriting any other value and never removed afterwards, and its `jti` and `kid` in
    /// the dynamic metadata.
    pub fn attach_minted(&self, response: &mut CheckResponse, minted: &mint::Minted, header: &str) {
        let Some(HttpResponse::OkResponse(ok)) = &mut response.http_response else {
            return;
        };
        let value = if header == "authorization" {
            format!("Bearer {}", minted.token)
        } else {
            minted.token.clone()
        };
        ok.headers
            .retain(|h| h.header.as_ref().is_none_or(|h| h.key != header));
        ok.headers.push(set_header(header, &value));
        ok.headers_to_remove.retain(|name| name != header);
        if let Some(metadata) = response.dynamic_metadata.as_mut() {
            metadata.fields.insert("minted".to_owned(), boolean(true));
            metadata
                .fields
                .insert("mint_jti".to_owned(), string(&minted.jti));
            metadata
                .fields
                .insert("mint_kid".to_owned(), string(&minted.kid));
        }
    }

    /// The claim paths some header template reads.
    pub fn claim_paths(&self) -> impl Iterator<Item = &str> {
        self.headers
            .iter()
            .chain(self.route_headers.values().flatten())
            .flat_map(|(_, template)| template.claim_paths())
    }

    /// A responder for `response` settings and per-route headers of `routes`.
    pub fn with_routes(response: &ResponseConfig, routes: &[crate::config::RouteConfig]) -> Self {
        let headers = compile(&response.headers);
        let route_headers: HashMap<String, Templates> = routes
            .iter()
            .filter(|route| !route.headers.is_empty())
            .map(|route| (route.name.clone(), compile(&route.headers)))
            .collect();
        let identity_header = response
            .identity_header
            .as_ref()
            .map(|h| h.to_ascii_lowercase());
        let subject_header = response.identity_headers.subject.to_ascii_lowercase();
        let issuer_header = response.identity_headers.issuer.to_ascii_lowercase();
        let mut settable: BTreeSet<String> = [subject_header.clone(), issuer_header.clone()].into();
        settable.extend(headers.iter().map(|(name, _)| name.clone()));
        settable.extend(identity_header.iter().cloned());
        settable.extend(
            route_headers
                .values()
                .flatten()
                .map(|(name, _)| name.clone()),
        );
        Self {
            realm: response.realm.clone(),
            subject_header,
            issuer_header,
            remove_credential: response.remove_credential,
            headers,
            identity_header,
            route_headers,
            settable,
        }
    }

    /// The response for `decision`; `credential` says where the request carried its token.
    pub fn respond(
        &self,
        decision: &Decision,
        credential: &CredentialPlace<'_>,
        route: Option<&str>,
    ) -> CheckResponse {
        let mut response = match decision {
            Decision::Allow(token) => self.allow(token.as_deref(), credential, route),
            Decision::Deny(rejection) => self.deny(rejection),
        };
        if let (Some(route), Some(metadata)) = (route, response.dynamic_metadata.as_mut()) {
            metadata.fields.insert("route".to_owned(), string(route));
        }
        response
    }

    fn allow(
        &self,
        token: Option<&VerifiedToken>,
        credential: &CredentialPlace<'_>,
        route: Option<&str>,
    ) -> CheckResponse {
        let mut headers = Vec::new();
        let mut metadata = BTreeMap::new();
        metadata.insert("decision".to_owned(), string("allow"));
        match token {
            Some(token) => {
                // Set with append=false: overwrites a client-sent copy (anti-spoofing).
                headers.push(set_header(&self.subject_header, token.subject()));
                headers.push(set_header(&self.issuer_header, &token.issuer.id));
                let route_headers = route.and_then(|r| self.route_headers.get(r));
                for (name, template) in self
                    .headers
                    .iter()
                    .chain(route_headers.into_iter().flatten())
                {
                    if let Some(value) = template.render(token) {
                        headers.push(set_header(name, &value));
                    }
                }
                if let Some(name) = &self.identity_header
                    && let Ok(json) = serde_json::to_vec(&token.identity)
                {
                    headers.push(set_header(name, &URL_SAFE_NO_PAD.encode(json)));
                }
                metadata.insert("reason".to_owned(), string("token_valid"));
                metadata.insert("issuer".to_owned(), string(&token.issuer.id));
                metadata.insert("subject".to_owned(), string(token.subject()));
                if let Some(encryption) = &token.encryption {
                    metadata.insert("encrypted".to_owned(), boolean(true));
                    metadata.insert("encryption".to_owned(), string(&encryption.label()));
                }
                if let Some(grant) = token.api_key() {
                    metadata.insert("credential".to_owned(), string("api_key"));
                    metadata.insert("api_key_id_hash".to_owned(), string(&grant.id_hash));
                }
            }
            None => {
                metadata.insert("reason".to_owned(), string("anonymous"));
            }
        }
        // Whatever fedauthz could set but did not set now must not arrive from the client.
        let mut headers_to_remove: Vec<String> = self
            .settable
            .iter()
            .filter(|name| {
                !headers
                    .iter()
                    .any(|h| h.header.as_ref().is_some_and(|h| &h.key == *name))
            })
            .cloned()
            .collect();
        if self.remove_credential {
            if let Some(name) = credential.header {
                headers_to_remove.push(name.to_owned());
            }
            match &credential.cookie_header {
                Some(CookieHeader::Remove) => headers_to_remove.push("cookie".to_owned()),
                Some(CookieHeader::Replace(rest)) => headers.push(set_header("cookie", rest)),
                None => {}
            }
        }
        if let Some(name) = credential.api_key_header
            && !headers_to_remove.iter().any(|h| h == name)
        {
            headers_to_remove.push(name.to_owned());
        }
        let query_parameters_to_remove: Vec<String> = credential
            .api_key_parameter
            .map(str::to_owned)
            .into_iter()
            .collect();
        CheckResponse {
            status: Some(Status {
                code: grpc_code::OK,
                message: String::new(),
                details: Vec::new(),
            }),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers,
                headers_to_remove,
                query_parameters_to_remove,
                ..OkHttpResponse::default()
            })),
            dynamic_metadata: Some(Struct { fields: metadata }),
        }
    }

    fn deny(&self, rejection: &Rejection) -> CheckResponse {
        let challenge = Challenge::for_reason(rejection.reason);
        let description = rejection.reason.description();
        let mut www_authenticate = format!("Bearer realm=\"{}\"", self.realm);
        let mut body = serde_json::Map::new();
        if let Some(error) = challenge.error {
            www_authenticate.push_str(&format!(
                ", error=\"{error}\", error_description=\"{description}\""
            ));
            // Scope tokens are printable ASCII without `"` or `\\` (RFC 6749 §3.3; checked
            // in configuration).
            if let Some(scope) = &rejection.scope {
                www_authenticate.push_str(&format!(", scope=\"{scope}\""));
            }
            body.insert("error".into(), error.into());
        }
        body.insert("error_description".into(), description.into());
        body.insert("status".into(), challenge.http_status.into());

        let mut headers = vec![
            denied_header("content-type", "application/json"),
            denied_header("cache-control", "no-store"),
        ];
        if challenge.http_status == 401 || challenge.error.is_some() {
            headers.push(denied_header("www-authenticate", &www_authenticate));
        }
        let mut metadata = BTreeMap::new();
        metadata.insert("decision".to_owned(), string("deny"));
        metadata.insert("reason".to_owned(), string(rejection.reason.code()));
        if let Some(issuer) = &rejection.issuer {
            metadata.insert("issuer".to_owned(), string(issuer));
        }
        CheckResponse {
            status: Some(Status {
                code: challenge.grpc_code,
                message: rejection.reason.code().to_owned(),
                details: Vec::new(),
            }),
            http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                status: Some(HttpStatus {
                    code: i32::from(challenge.http_status),
                }),
                headers,
                body: serde_json::Value::Object(body).to_string(),
            })),
            dynamic_metadata: Some(Struct { fields: metadata }),
        }
    }
}

fn string(value: &str) -> PbValue {
    PbValue {
        kind: Some(Kind::StringValue(value.to_owned())),
    }
}

fn boolean(value: bool) -> PbValue {
    PbValue {
        kind: Some(Kind::BoolValue(value)),
    }
}

/// An upstream header mutation that overwrites (append explicitly false; envoy-ext-authz.md §5).
fn set_header(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value: value.to_owned(),
            raw_value: Vec::new(),
        }),
        append: Some(false),
        ..HeaderValueOption::default()
    }
}

/// A local-reply header (append left unset: Envoy drops entries with append=true there).
fn denied_header(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value: value.to_owned(),
            raw_value: Vec::new(),
        }),
        ..HeaderValueOption::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn responder() -> Responder {
        Responder::with_routes(&ResponseConfig::default(), &[])
    }

    fn denied(response: &CheckResponse) -> &DeniedHttpResponse {
        match &response.http_response {
            Some(HttpResponse::DeniedResponse(d)) => d,
            other => panic!("expected a denial, got {other:?}"),
        }
    }

    fn header<'a>(headers: &'a [HeaderValueOption], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .filter_map(|h| h.header.as_ref())
            .find(|h| h.key == name)
            .map(|h| h.value.as_str())
    }

    fn meta<'a>(response: &'a CheckResponse, key: &str) -> Option<&'a str> {
        match response
            .dynamic_metadata
            .as_ref()?
            .fields
            .get(key)?
            .kind
            .as_ref()?
        {
            Kind::StringValue(s) => Some(s),
            _ => None,
        }
    }

    #[test]
    fn missing_credential_gets_a_challenge_without_error() {
        let r = responder().respond(
            &Decision::Deny(Rejection::new(Reason::TokenMissing, "none")),
            &CredentialPlace::default(),
            None,
        );
        assert_eq!(r.status.as_ref().unwrap().code, 16);
        let d = denied(&r);
        assert_eq!(d.status.unwrap().code, 401);
        assert_eq!(
            header(&d.headers, "www-authenticate"),
            Some("Bearer realm=\"fedauthz\"")
        );
        assert!(d.headers.iter().all(|h| h.append.is_none()));
        let body: serde_json::Value = serde_json::from_str(&d.body).unwrap();
        assert!(body.get("error").is_none());
        assert_eq!(meta(&r, "reason"), Some("token_missing"));
    }

    #[test]
    fn a_valid_token_without_access_gets_403_insufficient_scope_with_its_route() {
        let rejection = Rejection::new(Reason::RequirementNotMet, "route admin refuses cognito");
        let r = responder().respond(
            &Decision::Deny(rejection),
            &CredentialPlace::default(),
            Some("admin"),
        );
        assert_eq!(r.status.as_ref().unwrap().code, 7);
        let d = denied(&r);
        assert_eq!(d.status.unwrap().code, 403);
        assert_eq!(
            header(&d.headers, "www-authenticate"),
            Some(
                "Bearer realm=\"fedauthz\", error=\"insufficient_scope\", error_description=\"the token does not grant access to this resource\""
            )
        );
        assert!(!d.body.contains("cognito"), "details stay in logs");
        assert_eq!(meta(&r, "reason"), Some("requirement_not_met"));
        assert_eq!(meta(&r, "route"), Some("admin"));
    }

    #[test]
    fn invalid_token_challenge_carries_error_and_description() {
        let rejection = Rejection::new(Reason::TokenExpired, "exp 1 is not after now 2")
            .for_issuer(&"entra".into());
        let r = responder().respond(
            &Decision::Deny(rejection),
            &CredentialPlace::default(),
            None,
        );
        let d = denied(&r);
        assert_eq!(
            header(&d.headers, "www-authenticate"),
            Some(
                "Bearer realm=\"fedauthz\", error=\"invalid_token\", error_description=\"the token has expired\""
            )
        );
        assert!(!d.body.contains("exp 1"), "details stay in logs");
        assert_eq!(meta(&r, "reason"), Some("token_expired"));
        assert_eq!(meta(&r, "issuer"), Some("entra"));
        assert_eq!(meta(&r, "decision"), Some("deny"));
    }

    #[test]
    fn ambiguous_credentials_are_a_bad_request() {
        let r = responder().respond(
            &Decision::Deny(Rejection::new(Reason::CredentialAmbiguous, "two")),
            &CredentialPlace::default(),
            None,
        );
        assert_eq!(r.status.as_ref().unwrap().code, 3);
        let d = denied(&r);
        assert_eq!(d.status.unwrap().code, 400);
        assert!(
            header(&d.headers, "www-authenticate")
                .unwrap()
                .contains("error=\"invalid_request\"")
        );
    }

    #[test]
    fn anonymous_allow_strips_identity_headers() {
        let r = responder().respond(&Decision::Allow(None), &CredentialPlace::default(), None);
        assert_eq!(r.status.as_ref().unwrap().code, 0);
        let Some(HttpResponse::OkResponse(ok)) = &r.http_response else {
            panic!()
        };
        assert!(ok.headers.is_empty());
        assert_eq!(ok.headers_to_remove, ["x-auth-issuer", "x-auth-subject"]);
        assert_eq!(meta(&r, "reason"), Some("anonymous"));
    }
}
