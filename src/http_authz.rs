//! HTTP adapter: the HTTP face of fedauthz, beside the gRPC one ([`crate::service`]), for
//! proxies that call an HTTP authorization service: Envoy `http_service`, nginx
//! `auth_request` and Traefik `forwardAuth`.
//!
//! Each request is answered in four steps:
//! 1. the endpoint: the request path names one configured endpoint (`server.http.endpoints`),
//!    and so the caller's convention — never guessed from headers a client could send;
//! 2. trust: the caller must be a trusted proxy (an address in `server.http.trusted_proxies`,
//!    or a verified client certificate), else `proxy_untrusted`, because everything the
//!    request says about the original request is only as true as whoever sent it;
//! 3. the original request (method, path, host) as the convention describes it, and the
//!    request's own headers for the credential, through the same check as gRPC
//!    ([`crate::check`]);
//! 4. the answer: allow is `200` with the headers to set upstream (and, for Envoy,
//!    `x-envoy-auth-headers-to-remove` naming the credential and spoofable identity headers);
//!    deny is the status, `WWW-Authenticate` and body a gRPC denial carries.
//!
//! Depends on [`crate::check`], [`crate::pipeline`], [`crate::config`] (`server.http`),
//! [`crate::metrics`] and [`crate::telemetry`].

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{HeaderMap, HeaderName, HeaderValue};
use axum::http::{StatusCode, request::Parts};
use axum::response::{IntoResponse, Response};
use tracing::field::Empty;
use tracing::{Instrument, debug, debug_span, error};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::authz::RequestFacts;
use crate::caller::CallerConnection;
use crate::check::{self, Transport};
use crate::config::{Convention, HttpEndpoint, HttpListenerConfig};
use crate::extract::HeaderLookup;
use crate::metrics::Metrics;
use crate::pipeline::{Checked, Generation};
use crate::proto::auth::check_response::HttpResponse;
use crate::proto::core::HeaderValueOption;
use crate::reason::{Reason, Rejection};
use crate::telemetry;

/// The answer's decision (`allow`, `deny`) and reason code, for the proxy's logs (Envoy
/// `dynamic_metadata_from_headers`, nginx `auth_request_set`). No proxy passes them upstream
/// unless configured to.
pub const DECISION_HEADER: &str = "x-fedauthz-decision";
/// See [`DECISION_HEADER`].
pub const REASON_HEADER: &str = "x-fedauthz-reason";

/// The response header Envoy's HTTP authorization client reads the names of the headers to
/// remove from the upstream request from (comma-separated).
pub const ENVOY_HEADERS_TO_REMOVE: &str = "x-envoy-auth-headers-to-remove";

/// What the handler needs: the running configuration and the metrics.
#[derive(Debug, Clone)]
struct HttpState {
    current: Arc<ArcSwap<Generation>>,
    metrics: Arc<Metrics>,
}

/// The router of the HTTP authorization listener: every path goes to one handler, which
/// finds the endpoint in the configuration running at that moment (so a reload changes
/// endpoints and trusted proxies without a restart).
pub fn router(current: Arc<ArcSwap<Generation>>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .fallback(authorize)
        .with_state(HttpState { current, metrics })
}

async fn authorize(
    State(state): State<HttpState>,
    ConnectInfo(connection): ConnectInfo<CallerConnection>,
    request: Request,
) -> Response {
    let started = Instant::now();
    // A full Arc: the check may wait for a key refresh or a signer, and a reload meanwhile
    // must not pull the configuration from under it.
    let generation = state.current.load_full();
    let (parts, _body) = request.into_parts();
    let Some(listener) = generation.config.server.http.as_ref() else {
        return plain(
            StatusCode::NOT_FOUND,
            "the HTTP authorization listener is off",
        );
    };
    let Some(endpoint) = endpoint_for(listener, parts.uri.path()) else {
        debug!(
            path = parts.uri.path(),
            "no HTTP authorization endpoint at this path"
        );
        return plain(
            StatusCode::NOT_FOUND,
            "no authorization endpoint at this path",
        );
    };
    let convention = endpoint.convention;
    let headers = Headers(&parts.headers);
    let span = debug_span!(
        "http_authz.check",
        otel.kind = "server",
        http.request.method = parts.method.as_str(),
        fedauthz.transport = Transport::Http.name(),
        fedauthz.convention = convention.name(),
        fedauthz.decision = Empty,
        fedauthz.reason = Empty,
        fedauthz.issuer = Empty,
        fedauthz.route = Empty,
    );
    if let Some(parent) = telemetry::request_context(&headers) {
        // Only fails when the span is disabled, which leaves nothing to parent.
        let _ = span.set_parent(parent);
    }
    let pipeline = &generation.pipeline;
    let caller = connection.identity.as_deref();
    let checked =
        match trust(listener, &connection).and_then(|()| original_request(endpoint, &parts)) {
            Err(rejection) => pipeline.refuse(rejection),
            Ok(original) => {
                let facts = RequestFacts {
                    host: &original.host,
                    path: &original.path,
                    method: &original.method,
                    context_extensions: None,
                    principal: "",
                    caller,
                };
                check::run(pipeline, &headers, &facts)
                    .instrument(span.clone())
                    .await
            }
        };
    check::record(
        &state.metrics,
        Transport::Http,
        &span,
        &checked,
        started.elapsed(),
    );
    let _entered = span.enter();
    let request_id = headers.header("x-request-id");
    check::log(
        pipeline,
        Transport::Http,
        &checked,
        request_id.as_deref(),
        caller,
    );
    respond(convention, checked)
}

/// The HTTP answer for `checked`, labelled with its decision and reason.
fn respond(convention: Convention, checked: Checked) -> Response {
    let (decision, reason, _) = check::labels(&checked.decision);
    match answer(convention, checked) {
        Ok(mut response) => {
            let headers = response.headers_mut();
            headers.insert(DECISION_HEADER, HeaderValue::from_static(decision));
            headers.insert(REASON_HEADER, HeaderValue::from_static(reason));
            response
        }
        // Fail closed: an allow whose headers HTTP cannot carry would let a client's copy of
        // them through to the upstream. Templates only render visible ASCII, so this takes a
        // header fedauthz should never have produced.
        Err(header) => {
            error!(
                header,
                "a response header cannot be sent over HTTP; denying"
            );
            let mut response = plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the authorization answer could not be encoded",
            );
            response
                .headers_mut()
                .insert(DECISION_HEADER, HeaderValue::from_static("deny"));
            response
        }
    }
}

/// The endpoint that answers `path`: an Envoy endpoint answers its prefix and every path
/// under it, the others their exact path.
fn endpoint_for<'a>(listener: &'a HttpListenerConfig, path: &str) -> Option<&'a HttpEndpoint> {
    listener.endpoints.iter().find(|endpoint| {
        let Some(rest) = path.strip_prefix(endpoint.path.as_str()) else {
            return false;
        };
        rest.is_empty() || (endpoint.convention == Convention::Envoy && rest.starts_with('/'))
    })
}

/// Whether the caller may describe requests: a verified client certificate, or an address in
/// `trusted_proxies`.
fn trust(listener: &HttpListenerConfig, connection: &CallerConnection) -> Result<(), Rejection> {
    let addr = connection.remote_addr.ip();
    if connection.identity.is_some()
        || listener
            .trusted_proxies
            .iter()
            .any(|network| network.contains(addr))
    {
        return Ok(());
    }
    Err(Rejection::new(
        Reason::ProxyUntrusted,
        format!(
            "{} is not in server.http.trusted_proxies and presented no verified client \
             certificate",
            connection.remote_addr
        ),
    ))
}

/// The request being authorized, as the proxy describes it.
#[derive(Debug, PartialEq, Eq)]
struct Original<'a> {
    method: Cow<'a, str>,
    path: Cow<'a, str>,
    host: Cow<'a, str>,
}

/// The original request of `parts` under `endpoint`'s convention.
fn original_request<'a>(
    endpoint: &HttpEndpoint,
    parts: &'a Parts,
) -> Result<Original<'a>, Rejection> {
    let headers = &parts.headers;
    match endpoint.convention {
        Convention::Envoy => {
            // Envoy sends the original path after `path_prefix`, query included.
            let full = parts
                .uri
                .path_and_query()
                .map_or_else(|| parts.uri.path(), |pq| pq.as_str());
            let rest = full.strip_prefix(endpoint.path.as_str()).unwrap_or(full);
            let path = match rest.as_bytes().first() {
                None => Cow::Borrowed("/"),
                Some(b'?') => Cow::Owned(format!("/{rest}")),
                Some(_) => Cow::Borrowed(rest),
            };
            let host = parts
                .uri
                .authority()
                .map(|authority| authority.as_str())
                .or_else(|| headers.get("host").and_then(|v| v.to_str().ok()))
                .unwrap_or("");
            Ok(Original {
                method: Cow::Borrowed(parts.method.as_str()),
                path,
                host: Cow::Borrowed(host),
            })
        }
        Convention::Nginx => described(
            headers,
            endpoint,
            "x-original-method",
            "x-original-uri",
            "x-original-host",
        ),
        Convention::Traefik => described(
            headers,
            endpoint,
            "x-forwarded-method",
            "x-forwarded-uri",
            "x-forwarded-host",
        ),
    }
}

/// The original request from the headers a proxy describes it in: the method and URI are
/// required, the host optional (a route that matches hosts then matches none).
fn described<'a>(
    headers: &'a HeaderMap,
    endpoint: &HttpEndpoint,
    method_header: &str,
    uri_header: &str,
    host_header: &str,
) -> Result<Original<'a>, Rejection> {
    let invalid = |what: String| {
        Rejection::new(
            Reason::ProxyRequestInvalid,
            format!(
                "{what}: the {} endpoint {} expects the proxy to set it",
                endpoint.convention.name(),
                endpoint.path
            ),
        )
    };
    let single = |name: &str| -> Result<Option<&'a str>, Rejection> {
        let mut values = headers.get_all(name).iter();
        let Some(first) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(invalid(format!("{name} appears more than once")));
        }
        first
            .to_str()
            .map(Some)
            .map_err(|_| invalid(format!("{name} is not visible ASCII")))
    };
    let method =
        single(method_header)?.ok_or_else(|| invalid(format!("{method_header} is missing")))?;
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(invalid(format!("{method_header} is not an HTTP method")));
    }
    let uri = single(uri_header)?.ok_or_else(|| invalid(format!("{uri_header} is missing")))?;
    if !uri.starts_with('/') {
        return Err(invalid(format!(
            "{uri_header} is not an origin-form URI (it must start with /)"
        )));
    }
    let host = single(host_header)?.unwrap_or("");
    Ok(Original {
        method: if method.bytes().all(|b| b.is_ascii_uppercase()) {
            Cow::Borrowed(method)
        } else {
            Cow::Owned(method.to_ascii_uppercase())
        },
        path: Cow::Borrowed(uri),
        host: Cow::Borrowed(host),
    })
}

/// Request headers for credential extraction, read as Envoy presents them to a gRPC check:
/// a repeated header is one value joined with `,` (cookies with `; `, as HTTP/2 splits them).
struct Headers<'a>(&'a HeaderMap);

impl HeaderLookup for Headers<'_> {
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        let mut values = self.0.get_all(name).iter();
        let first = String::from_utf8_lossy(values.next()?.as_bytes());
        let Some(second) = values.next() else {
            return Some(first);
        };
        let separator = if name == "cookie" { "; " } else { "," };
        let mut joined = first.into_owned();
        for value in std::iter::once(second).chain(values) {
            joined.push_str(separator);
            joined.push_str(&String::from_utf8_lossy(value.as_bytes()));
        }
        Some(Cow::Owned(joined))
    }
}

/// The HTTP answer for `checked`, or the name of a header HTTP cannot carry.
fn answer(convention: Convention, checked: Checked) -> Result<Response, String> {
    Ok(match checked.response.http_response {
        Some(HttpResponse::OkResponse(ok)) => {
            // No proxy rewrites the URL on an HTTP authorization answer: an API key in the
            // query would reach the upstream.
            if !ok.query_parameters_to_remove.is_empty() {
                return Err("a query parameter to remove (an API key in the URL)".to_owned());
            }
            let mut headers = HeaderMap::new();
            put_all(&mut headers, &ok.headers)?;
            if convention == Convention::Envoy && !ok.headers_to_remove.is_empty() {
                let value = HeaderValue::from_str(&ok.headers_to_remove.join(","))
                    .map_err(|_| ENVOY_HEADERS_TO_REMOVE.to_owned())?;
                headers.insert(HeaderName::from_static(ENVOY_HEADERS_TO_REMOVE), value);
            }
            (StatusCode::OK, headers).into_response()
        }
        Some(HttpResponse::DeniedResponse(denied) | HttpResponse::ErrorResponse(denied)) => {
            let status = denied
                .status
                .as_ref()
                .and_then(|s| u16::try_from(s.code).ok())
                .and_then(|code| StatusCode::from_u16(code).ok())
                .unwrap_or(StatusCode::FORBIDDEN);
            let mut headers = HeaderMap::new();
            put_all(&mut headers, &denied.headers)?;
            (status, headers, Body::from(denied.body)).into_response()
        }
        // The pipeline always answers one way or the other; fail closed if it did not.
        None => plain(StatusCode::FORBIDDEN, "denied"),
    })
}

/// Copies header options into `headers` (each overwrites: fedauthz never appends). Fails with
/// the name of a header HTTP cannot carry.
fn put_all(headers: &mut HeaderMap, options: &[HeaderValueOption]) -> Result<(), String> {
    for option in options {
        let Some(header) = &option.header else {
            continue;
        };
        let name = HeaderName::from_bytes(header.key.as_bytes()).map_err(|_| header.key.clone())?;
        let value = if header.raw_value.is_empty() {
            HeaderValue::from_str(&header.value)
        } else {
            HeaderValue::from_bytes(&header.raw_value)
        }
        .map_err(|_| header.key.clone())?;
        headers.insert(name, value);
    }
    Ok(())
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (
        status,
        [("content-type", "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request as HttpRequest;

    fn endpoint(path: &str, convention: Convention) -> HttpEndpoint {
        HttpEndpoint {
            path: path.into(),
            convention,
        }
    }

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = HttpRequest::builder().method("POST").uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn envoy_paths_come_after_the_prefix() {
        let envoy = endpoint("/envoy", Convention::Envoy);
        let original = |uri| {
            let parts = parts(uri, &[("host", "api.example.com")]);
            let o = original_request(&envoy, &parts).unwrap();
            (
                o.method.into_owned(),
                o.path.into_owned(),
                o.host.into_owned(),
            )
        };
        assert_eq!(
            original("/envoy/orders/7?x=1"),
            (
                "POST".into(),
                "/orders/7?x=1".into(),
                "api.example.com".into()
            )
        );
        assert_eq!(original("/envoy").1, "/");
        assert_eq!(original("/envoy?x=1").1, "/?x=1");
    }

    #[test]
    fn nginx_and_traefik_read_their_headers_and_refuse_what_is_missing_or_garbled() {
        let nginx = endpoint("/nginx", Convention::Nginx);
        let p = parts(
            "/nginx",
            &[
                ("x-original-method", "delete"),
                ("x-original-uri", "/orders/7?x=1"),
                ("x-original-host", "api.example.com"),
                // Another convention's headers change nothing.
                ("x-forwarded-uri", "/admin"),
            ],
        );
        let o = original_request(&nginx, &p).unwrap();
        assert_eq!(
            (&*o.method, &*o.path, &*o.host),
            ("DELETE", "/orders/7?x=1", "api.example.com")
        );
        let traefik = endpoint("/traefik", Convention::Traefik);
        let p = parts(
            "/traefik",
            &[("x-forwarded-method", "GET"), ("x-forwarded-uri", "/a")],
        );
        let o = original_request(&traefik, &p).unwrap();
        assert_eq!((&*o.method, &*o.path, &*o.host), ("GET", "/a", ""));
        for headers in [
            vec![("x-forwarded-uri", "/a")],
            vec![("x-forwarded-method", "GET")],
            vec![("x-forwarded-method", "GET"), ("x-forwarded-uri", "a")],
            vec![("x-forwarded-method", "G T"), ("x-forwarded-uri", "/a")],
            vec![
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/a"),
                ("x-forwarded-uri", "/b"),
            ],
        ] {
            let p = parts("/traefik", &headers);
            let rejection = original_request(&traefik, &p).unwrap_err();
            assert_eq!(rejection.reason, Reason::ProxyRequestInvalid, "{headers:?}");
        }
    }

    #[test]
    fn endpoints_match_exactly_except_envoy_prefixes() {
        let listener: HttpListenerConfig = serde_json::from_value(serde_json::json!({
            "listen": "127.0.0.1:0",
            "trusted_proxies": ["127.0.0.1", "10.0.0.0/8"],
        }))
        .unwrap();
        let at = |path| endpoint_for(&listener, path).map(|e| e.convention);
        assert_eq!(at("/envoy/x/y"), Some(Convention::Envoy));
        assert_eq!(at("/envoy"), Some(Convention::Envoy));
        assert_eq!(at("/envoyx"), None);
        assert_eq!(at("/nginx"), Some(Convention::Nginx));
        assert_eq!(at("/nginx/x"), None);
        assert_eq!(at("/traefik"), Some(Convention::Traefik));
        assert_eq!(at("/"), None);
        let trusted = |addr: &str| {
            let connection = CallerConnection {
                remote_addr: addr.parse().unwrap(),
                identity: None,
            };
            trust(&listener, &connection).is_ok()
        };
        assert!(trusted("127.0.0.1:5000"));
        assert!(trusted("10.2.3.4:5000"));
        assert!(!trusted("127.0.0.2:5000"));
        let verified = CallerConnection {
            remote_addr: "192.0.2.1:5000".parse().unwrap(),
            identity: Some(Arc::new(crate::caller::CallerIdentity {
                uris: vec!["spiffe://example.org/ns/edge/sa/nginx".into()],
                dns_names: Vec::new(),
            })),
        };
        assert!(trust(&listener, &verified).is_ok());
    }

    #[test]
    fn repeated_headers_join_as_envoy_joins_them() {
        let mut map = HeaderMap::new();
        map.append("cookie", HeaderValue::from_static("a=1"));
        map.append("cookie", HeaderValue::from_static("b=2"));
        map.append("x-api", HeaderValue::from_static("1"));
        map.append("x-api", HeaderValue::from_static("2"));
        let headers = Headers(&map);
        assert_eq!(headers.header("cookie").as_deref(), Some("a=1; b=2"));
        assert_eq!(headers.header("x-api").as_deref(), Some("1,2"));
        assert_eq!(headers.header("authorization"), None);
    }
}
