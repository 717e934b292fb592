//! A real OpenTelemetry collector endpoint for tests: OTLP/gRPC (a tonic TraceService built
//! from the OpenTelemetry protos) or OTLP/HTTP with protobuf bodies, recording every span.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
pub use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;

/// Every span a receiver got, with its resource's `service.name`.
#[derive(Clone, Default)]
pub struct Received(pub Arc<Mutex<Vec<(String, Span)>>>);

impl Received {
    fn add(&self, request: ExportTraceServiceRequest) {
        let mut spans = self.0.lock().expect("lock");
        for resource_spans in request.resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .and_then(|v| match &v.value {
                    Some(AnyValue::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push((service.clone(), span));
                }
            }
        }
    }

    /// Waits (up to 15 s) for a span named `name` in trace `trace_id`.
    pub async fn wait_for(&self, name: &str, trace_id: &str) -> (String, Span) {
        self.wait_until(&format!("span {name} in trace {trace_id}"), |s| {
            s.name == name && hex(&s.trace_id) == trace_id
        })
        .await
    }

    /// Waits (up to 15 s) for the span with id `span_id`.
    pub async fn wait_for_id(&self, span_id: &str) -> (String, Span) {
        self.wait_until(&format!("span {span_id}"), |s| hex(&s.span_id) == span_id)
            .await
    }

    /// Waits (up to 15 s) for a span that `wanted` accepts; returns it with its service name.
    async fn wait_until(&self, what: &str, wanted: impl Fn(&Span) -> bool) -> (String, Span) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let spans = self.0.lock().expect("lock").clone();
            if let Some(found) = spans.iter().find(|(_, s)| wanted(s)) {
                return found.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no {what}; got {:?}",
                spans
                    .iter()
                    .map(|(_, s)| (s.name.clone(), hex(&s.trace_id)))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.add(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// An OTLP/gRPC TraceService on loopback.
pub async fn grpc_receiver() -> (SocketAddr, Received) {
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let service = TraceServiceServer::new(received.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (addr, received)
}

/// An OTLP/HTTP receiver (`POST /v1/traces`, protobuf body) on loopback.
pub async fn http_receiver() -> (SocketAddr, Received) {
    use http_body_util::BodyExt as _;
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let sink = received.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let sink = sink.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: hyper::Request<hyper::body::Incoming>| {
                        let sink = sink.clone();
                        async move {
                            let path_ok = request.uri().path() == "/v1/traces";
                            let body = request.into_body().collect().await?.to_bytes();
                            let status = match ExportTraceServiceRequest::decode(body) {
                                Ok(export) if path_ok => {
                                    sink.add(export);
                                    200
                                }
                                _ => 400,
                            };
                            let mut response = hyper::Response::new(http_body_util::Full::new(
                                hyper::body::Bytes::from(
                                    ExportTraceServiceResponse::default().encode_to_vec(),
                                ),
                            ));
                            *response.status_mut() =
                                hyper::StatusCode::from_u16(status).expect("status");
                            Ok::<_, hyper::Error>(response)
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, received)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(AnyValue::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
}
