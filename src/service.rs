//! Proto adapter: the gRPC face of fedauthz. Implements `envoy.service.auth.v3.Authorization`,
//! hands the request headers of each `CheckRequest` to the current [`Pipeline`] and returns its
//! `CheckResponse`. A check never fails as an RPC: every denial is an `Ok` response with a
//! non-zero status (an RPC error would let the request through under `failure_mode_allow`).
//!
//! Depends on [`crate::check`] (the transport-neutral run and record), [`crate::pipeline`] and
//! [`crate::proto`].

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use tonic::{Request, Response, Status};
use tracing::field::Empty;
use tracing::{Instrument, debug_span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::authz::RequestFacts;
use crate::caller::{CallerConnection, CallerIdentity};
use crate::check::{self, Transport};
use crate::extract::HeaderLookup;
use crate::metrics::Metrics;
use crate::pipeline::{Checked, Generation, Pipeline};
use crate::proto::auth::authorization_server::Authorization;
use crate::proto::auth::{CheckRequest, CheckResponse};
use crate::proto::core::HeaderMap;
use crate::telemetry;

/// The request headers of a `CheckRequest`: Envoy's `headers` map, or `header_map` when the
/// filter sets `encode_raw_headers` (then repeated headers are joined here as Envoy would).
pub struct RequestHeaders<'a> {
    map: Option<&'a HashMap<String, String>>,
    raw: Option<&'a HeaderMap>,
}

impl<'a> RequestHeaders<'a> {
    /// The headers of `request` (none if Envoy sent no HTTP attributes).
    pub fn of(request: &'a CheckRequest) -> Self {
        let http = request
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref());
        Self {
            map: http.map(|h| &h.headers).filter(|m| !m.is_empty()),
            raw: http.and_then(|h| h.header_map.as_ref()),
        }
    }
}

impl HeaderLookup for RequestHeaders<'_> {
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        if let Some(map) = self.map {
            return map.get(name).map(|v| Cow::Borrowed(v.as_str()));
        }
        let raw = self.raw?;
        let mut values = raw
            .headers
            .iter()
            .filter(|h| h.key.eq_ignore_ascii_case(name))
            .map(|h| {
                if h.raw_value.is_empty() {
                    Cow::Borrowed(h.value.as_str())
                } else {
                    String::from_utf8_lossy(&h.raw_value)
                }
            });
        let first = values.next()?;
        Some(match values.next() {
            None => first,
            Some(second) => {
                let mut joined = first.into_owned();
                for value in std::iter::once(second).chain(values) {
                    joined.push(',');
                    joined.push_str(&value);
                }
                Cow::Owned(joined)
            }
        })
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Runs `request` through `pipeline` at `now`, logging the decision (never the token). Does not
/// wait for key refreshes: a token naming an unknown kid is denied at once (see
/// [`check_refreshing`]).
pub fn check(pipeline: &Pipeline, request: &CheckRequest, now: i64) -> CheckResponse {
    let headers = RequestHeaders::of(request);
    let checked = pipeline.check(&headers, &request_facts(request), now);
    finish(pipeline, checked, &headers, None)
}

/// Like [`check`], but when the token names a kid its issuer's keys lack, asks the issuer's
/// key store for a refresh (single-flight, rate-limited, bounded wait) and checks once more.
pub async fn check_refreshing(pipeline: &Pipeline, request: &CheckRequest) -> CheckResponse {
    let checked = check_detailed(pipeline, request, None).await;
    finish(pipeline, checked, &RequestHeaders::of(request), None)
}

/// The check of [`check_refreshing`] (minting included), with the decision and route behind
/// its response and without logging (`fedauthz explain` prints them instead). `caller` is the
/// proxy's verified client certificate, if its connection had one.
pub async fn check_detailed(
    pipeline: &Pipeline,
    request: &CheckRequest,
    caller: Option<&CallerIdentity>,
) -> Checked {
    let facts = RequestFacts {
        caller,
        ..request_facts(request)
    };
    check::run(pipeline, &RequestHeaders::of(request), &facts).await
}

/// The route facts of `request` (host, path, method, context extensions, mTLS principal);
/// the caller is not part of a `CheckRequest` and is left unset.
pub fn request_facts(request: &CheckRequest) -> RequestFacts<'_> {
    let attributes = request.attributes.as_ref();
    let http = attributes
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref());
    RequestFacts {
        host: http.map_or("", |h| h.host.as_str()),
        path: http.map_or("", |h| h.path.as_str()),
        method: http.map_or("", |h| h.method.as_str()),
        context_extensions: attributes.map(|a| &a.context_extensions),
        principal: attributes
            .and_then(|a| a.source.as_ref())
            .map_or("", |peer| peer.principal.as_str()),
        caller: None,
    }
}

/// Logs the decision of a check whose caller presented `caller`, and hands back the response.
fn finish(
    pipeline: &Pipeline,
    checked: Checked,
    headers: &RequestHeaders<'_>,
    caller: Option<&CallerIdentity>,
) -> CheckResponse {
    let request_id = headers.header("x-request-id");
    check::log(
        pipeline,
        Transport::Grpc,
        &checked,
        request_id.as_deref(),
        caller,
    );
    checked.response
}

/// The tonic service.
#[derive(Clone)]
pub struct CheckService {
    current: Arc<ArcSwap<Generation>>,
    metrics: Arc<Metrics>,
}

impl CheckService {
    /// A service answering with whatever generation `current` holds at each check, counting
    /// each answer in `metrics`.
    pub fn new(current: Arc<ArcSwap<Generation>>, metrics: Arc<Metrics>) -> Self {
        Self { current, metrics }
    }
}

#[tonic::async_trait]
impl Authorization for CheckService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let started = Instant::now();
        let span = debug_span!(
            "ext_authz.check",
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = "envoy.service.auth.v3.Authorization",
            rpc.method = "Check",
            fedauthz.decision = Empty,
            fedauthz.reason = Empty,
            fedauthz.issuer = Empty,
            fedauthz.route = Empty,
        );
        if let Some(parent) =
            telemetry::caller_context(request.metadata(), &RequestHeaders::of(request.get_ref()))
        {
            // Only fails when the span is disabled, which leaves nothing to parent.
            let _ = span.set_parent(parent);
        }
        // A full Arc: the check may wait for a key refresh, and a reload meanwhile must not
        // pull the configuration from under it.
        let generation = self.current.load_full();
        let caller = request
            .extensions()
            .get::<CallerConnection>()
            .and_then(|connection| connection.identity.clone());
        let request = request.get_ref();
        let checked = check_detailed(&generation.pipeline, request, caller.as_deref())
            .instrument(span.clone())
            .await;
        check::record(
            &self.metrics,
            Transport::Grpc,
            &span,
            &checked,
            started.elapsed(),
        );
        let _entered = span.enter();
        Ok(Response::new(finish(
            &generation.pipeline,
            checked,
            &RequestHeaders::of(request),
            caller.as_deref(),
        )))
    }
}
