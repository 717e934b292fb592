//! Process telemetry: log output and OpenTelemetry traces.
//!
//! Logs go to stderr, human-readable or JSON, filtered by `RUST_LOG` (default `info`). Traces are
//! off unless the standard OpenTelemetry environment asks for them: `OTEL_TRACES_EXPORTER=otlp`,
//! or an `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`. The exporter, its
//! protocol (`grpc` or `http/protobuf`), the sampler (`OTEL_TRACES_SAMPLER`), the batching
//! (`OTEL_BSP_*`) and the resource (`OTEL_SERVICE_NAME`, default `fedauthz`;
//! `OTEL_RESOURCE_ATTRIBUTES`) follow those variables as the OpenTelemetry SDK reads them.
//!
//! Spans are `debug`-level `fedauthz` spans, so when traces are off they cost a disabled callsite
//! and nothing more; when on, only they (not log events) reach the exporter. [`caller_context`]
//! continues the caller's trace from W3C `traceparent`/`tracestate` or, failing that, B3 headers.
//!
//! Depends on [`crate::extract`] (header lookup) only.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::resource::{
    EnvResourceDetector, ResourceDetector, TelemetryResourceDetector,
};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use crate::extract::HeaderLookup;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per event.
    Json,
}

/// A telemetry environment variable that fedauthz cannot honour.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// An environment variable with a value outside its documented set.
    #[error("environment variable {name}={value:?}: {expected}")]
    Environment {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What it may be.
        expected: &'static str,
    },
    /// The OTLP exporter could not be built from the environment.
    #[error("OTLP trace exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    /// A global subscriber was already installed.
    #[error("cannot install the log subscriber: {0}")]
    Subscriber(#[from] tracing_subscriber::util::TryInitError),
}

/// Whether spans are being exported (the Check path skips trace-context work when not).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// True when a trace exporter is installed.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The installed telemetry; [`Telemetry::shutdown`] flushes spans still in the batch.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Installs the global log subscriber (and the trace exporter, when the environment asks
    /// for one). The OTLP gRPC exporter needs a tokio runtime: call this inside one.
    pub fn init(format: LogFormat) -> Result<Self, TelemetryError> {
        let logs_filter =
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        let logs = tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr);
        let logs = match format {
            LogFormat::Text => logs.with_filter(logs_filter).boxed(),
            LogFormat::Json => logs.json().with_filter(logs_filter).boxed(),
        };
        let provider = trace_provider()?;
        let traces = provider.as_ref().map(|provider| {
            // Only fedauthz's own spans: log events stay logs, and dependencies' spans stay out.
            let spans = Targets::new().with_target("fedauthz", tracing::Level::DEBUG);
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("fedauthz"))
                .with_filter(tracing_subscriber::filter::filter_fn(|meta| meta.is_span()))
                .with_filter(spans)
        });
        Registry::default().with(logs).with(traces).try_init()?;
        if provider.is_some() {
            EXPORTING.store(true, Ordering::Relaxed);
            tracing::info!("exporting traces over OTLP");
        }
        Ok(Self { provider })
    }

    /// Flushes and stops the trace exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(err) = provider.shutdown()
        {
            eprintln!("fedauthz: trace exporter shutdown: {err}");
        }
    }
}

/// The tracer provider the environment asks for, or `None` when traces are off.
fn trace_provider() -> Result<Option<SdkTracerProvider>, TelemetryError> {
    if !traces_requested()? {
        return Ok(None);
    }
    for name in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Some(value) = env(name)
            && value != "grpc"
            && value != "http/protobuf"
        {
            return Err(TelemetryError::Environment {
                name,
                value,
                expected: "must be grpc or http/protobuf",
            });
        }
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder().build()?;
    let detectors: [Box<dyn ResourceDetector>; 2] = [
        Box::new(TelemetryResourceDetector),
        Box::new(EnvResourceDetector::new()),
    ];
    let mut resource = Resource::builder_empty()
        .with_service_name("fedauthz")
        .with_detectors(&detectors);
    if let Some(name) = env("OTEL_SERVICE_NAME") {
        resource = resource.with_service_name(name);
    }
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build(),
    ))
}

/// The OpenTelemetry specification's switches: `OTEL_SDK_DISABLED`, `OTEL_TRACES_EXPORTER`,
/// and, as a convenience, an OTLP endpoint implies `otlp`.
fn traces_requested() -> Result<bool, TelemetryError> {
    if env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(false);
    }
    match env("OTEL_TRACES_EXPORTER").as_deref() {
        Some("otlp") => Ok(true),
        Some("none") => Ok(false),
        Some(other) => Err(TelemetryError::Environment {
            name: "OTEL_TRACES_EXPORTER",
            value: other.to_owned(),
            expected: "fedauthz exports traces with otlp (or none)",
        }),
        None => Ok(env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
            || env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()),
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A B3 context (Zipkin's headers, still common in older Istio meshes): the single `b3`
/// header, or the `x-b3-traceid`/`x-b3-spanid`/`x-b3-sampled` set. (The B3 propagator crate,
/// opentelemetry-zipkin, is deprecated; extraction is all fedauthz needs.)
fn b3_context(headers: &impl Extractor) -> Option<SpanContext> {
    let (trace, span, sampled) = match headers.get("b3") {
        Some(single) => {
            let mut parts = single.split('-');
            let trace = parts.next()?;
            let span = parts.next()?;
            (trace, span, parts.next())
        }
        None => (
            headers.get("x-b3-traceid")?,
            headers.get("x-b3-spanid")?,
            headers.get("x-b3-sampled"),
        ),
    };
    // 64-bit trace ids are the low half of a 128-bit one.
    let trace = match trace.len() {
        16 => TraceId::from_hex(&format!("{trace:0>32}")).ok()?,
        32 => TraceId::from_hex(trace).ok()?,
        _ => return None,
    };
    let span = (span.len() == 16)
        .then(|| SpanId::from_hex(span).ok())
        .flatten()?;
    let flags = match sampled {
        Some("1" | "d" | "true") => TraceFlags::SAMPLED,
        _ => TraceFlags::default(),
    };
    let context = SpanContext::new(trace, span, flags, true, TraceState::default());
    context.is_valid().then_some(context)
}

/// The trace context in `headers`: W3C when valid, else B3.
fn extract(headers: &impl Extractor) -> Option<opentelemetry::Context> {
    let w3c = TraceContextPropagator::new().extract(headers);
    if w3c.span().span_context().is_valid() {
        return Some(w3c);
    }
    b3_context(headers).map(|b3| opentelemetry::Context::new().with_remote_span_context(b3))
}

/// The trace a Check continues: the caller's gRPC metadata first (Envoy's ext_authz client
/// span, when Envoy traces), else the trace headers of the HTTP request being authorized.
/// `None` when traces are off or neither carries a valid context.
pub fn caller_context(
    metadata: &tonic::metadata::MetadataMap,
    request_headers: &impl HeaderLookup,
) -> Option<opentelemetry::Context> {
    if !exporting() {
        return None;
    }
    extract(&Metadata(metadata)).or_else(|| extract(&RequestHeaders(request_headers)))
}

/// The trace an HTTP authorization request continues: its own trace headers (Envoy's
/// authorization client span, or the original request's headers that nginx and Traefik pass
/// on). `None` when traces are off or none is valid.
pub fn request_context(request_headers: &impl HeaderLookup) -> Option<opentelemetry::Context> {
    if !exporting() {
        return None;
    }
    extract(&RequestHeaders(request_headers))
}

/// The trace context fields a propagator may ask for: the lookups below answer only these, so
/// no header map is copied.
const TRACE_HEADERS: [&str; 7] = [
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-sampled",
    "x-b3-flags",
];

struct Metadata<'a>(&'a tonic::metadata::MetadataMap);

impl Extractor for Metadata<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        TRACE_HEADERS.to_vec()
    }
}

struct RequestHeaders<'a, H>(&'a H);

impl<H: HeaderLookup> Extractor for RequestHeaders<'_, H> {
    fn get(&self, key: &str) -> Option<&str> {
        match self.0.header(key)? {
            std::borrow::Cow::Borrowed(value) => Some(value),
            // A joined repeated header is not a valid trace context anyway.
            std::borrow::Cow::Owned(_) => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        TRACE_HEADERS.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;
    use std::collections::HashMap;

    struct Map(HashMap<&'static str, &'static str>);

    impl HeaderLookup for Map {
        fn header(&self, name: &str) -> Option<Cow<'_, str>> {
            self.0.get(name).map(|v| Cow::Borrowed(*v))
        }
    }

    fn trace_id(headers: &[(&'static str, &'static str)]) -> Option<String> {
        let map = Map(headers.iter().copied().collect());
        let cx = extract(&RequestHeaders(&map))?;
        let span = cx.span();
        let context = span.span_context();
        context.is_valid().then(|| context.trace_id().to_string())
    }

    #[test]
    fn w3c_and_b3_contexts_are_read_and_w3c_wins() {
        let w3c = (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
        let b3 = ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1");
        assert_eq!(
            trace_id(&[w3c]).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(
            trace_id(&[b3]).as_deref(),
            Some("80f198ee56343ba864fe8b2a57d3eff7")
        );
        assert_eq!(
            trace_id(&[
                ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
                ("x-b3-spanid", "e457b5a2e4d86bd1"),
                ("x-b3-sampled", "1"),
            ])
            .as_deref(),
            Some("80f198ee56343ba864fe8b2a57d3eff7")
        );
        assert_eq!(
            trace_id(&[("b3", "64fe8b2a57d3eff7-e457b5a2e4d86bd1")]).as_deref(),
            Some("000000000000000064fe8b2a57d3eff7")
        );
        assert_eq!(
            trace_id(&[w3c, b3]).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
    }

    #[test]
    fn malformed_contexts_are_ignored() {
        assert_eq!(
            trace_id(&[("traceparent", "00-zz-00f067aa0ba902b7-01")]),
            None
        );
        assert_eq!(
            trace_id(&[(
                "traceparent",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
            )]),
            None
        );
        assert_eq!(trace_id(&[]), None);
        assert_eq!(trace_id(&[("b3", "0")]), None);
        assert_eq!(trace_id(&[("b3", "80f198ee56343ba8-xyz")]), None);
        assert_eq!(trace_id(&[("x-b3-traceid", "80f198ee56343ba8")]), None);
    }
}
