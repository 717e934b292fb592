//! One check, whatever transport brought it: the transport adapters ([`crate::service`] for
//! ext_authz gRPC, [`crate::http_authz`] for HTTP callers) turn their request into headers
//! and [`RequestFacts`], and this runs them through the pipeline (waiting once for a key
//! refresh when the token names an unknown kid, then minting), and records the outcome the
//! same way for every transport: trace fields, metrics and the decision log line.
//!
//! Depends on [`crate::pipeline`], [`crate::metrics`] and [`crate::decision_log`].

use std::time::Duration;

use tracing::{Instrument, Span, debug_span};

use crate::authz::{Decision, RequestFacts};
use crate::caller::CallerIdentity;
use crate::decision_log::Entry;
use crate::extract::HeaderLookup;
use crate::metrics::Metrics;
use crate::pipeline::{Checked, Pipeline};
use crate::proto::auth::check_response::HttpResponse;
use crate::service::unix_now;

/// Which listener a check arrived on: a label of metrics, traces and decision lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// ext_authz gRPC (`envoy.service.auth.v3.Authorization/Check`).
    Grpc,
    /// The HTTP authorization listener (`server.http`).
    Http,
}

impl Transport {
    /// The label value.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::Http => "http",
        }
    }
}

/// Runs one request through `pipeline`: verification, authorization and the response, a key
/// refresh and one more try when the token named a kid its issuer's keys lack (single-flight,
/// rate-limited, bounded wait), then minting for an allowed request.
pub async fn run(
    pipeline: &Pipeline,
    headers: &impl HeaderLookup,
    facts: &RequestFacts<'_>,
) -> Checked {
    let mut checked = pipeline.check(headers, facts, unix_now());
    if let Some(miss) = checked.key_miss.take()
        && miss
            .store
            .refresh_for_kid(&miss.kid)
            .instrument(debug_span!("key_refresh_wait"))
            .await
    {
        checked = pipeline.check(headers, facts, unix_now());
    }
    pipeline.mint(&mut checked, unix_now()).await;
    checked
}

/// The labels of an outcome: decision, reason code and issuer id.
pub fn labels(decision: &Decision) -> (&'static str, &'static str, Option<&std::sync::Arc<str>>) {
    match decision {
        Decision::Allow(Some(token)) => ("allow", "token_valid", Some(&token.issuer.id)),
        Decision::Allow(None) => ("allow", "anonymous", None),
        Decision::Deny(rejection) => ("deny", rejection.reason.code(), rejection.issuer.as_ref()),
    }
}

/// Records `checked` on `span` (whose fields the transport declared: `fedauthz.decision`,
/// `.reason`, `.issuer`, `.route`) and in `metrics`.
pub fn record(
    metrics: &Metrics,
    transport: Transport,
    span: &Span,
    checked: &Checked,
    took: Duration,
) {
    let (decision, reason, issuer) = labels(&checked.decision);
    span.record("fedauthz.decision", decision);
    span.record("fedauthz.reason", reason);
    if let Some(issuer) = issuer {
        span.record("fedauthz.issuer", &**issuer);
    }
    if let Some(route) = checked.route.as_deref() {
        span.record("fedauthz.route", route);
    }
    metrics.record_check(transport, decision, reason, issuer, took);
}

/// Writes the decision line of `checked` (denials always, allows as sampled); never the
/// token. `request_id` is the request's `x-request-id`, `caller` the proxy's verified client
/// certificate.
pub fn log(
    pipeline: &Pipeline,
    transport: Transport,
    checked: &Checked,
    request_id: Option<&str>,
    caller: Option<&CallerIdentity>,
) {
    pipeline.decision_log().record(&Entry {
        transport,
        request_id,
        decision: &checked.decision,
        route: checked.route.as_deref(),
        status: denied_status(checked),
        caller,
        mint_jti: checked.minted.as_deref().map(|minted| minted.jti.as_str()),
    });
}

/// The HTTP status of a denial (`None` for an allow).
pub fn denied_status(checked: &Checked) -> Option<u16> {
    checked
        .response
        .http_response
        .as_ref()
        .and_then(|r| match r {
            HttpResponse::DeniedResponse(denied) | HttpResponse::ErrorResponse(denied) => {
                denied.status.as_ref()
            }
            HttpResponse::OkResponse(_) => None,
        })
        .and_then(|s| u16::try_from(s.code).ok())
}
