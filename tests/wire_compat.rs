//! Wire compatibility of our Check API protos with Envoy's own.
//!
//! fedauthz compiles its own subset of Envoy's ext_authz v3 protos (`proto/`, built by
//! `build.rs`) instead of depending on the full Envoy API. Nothing in the compiler checks that
//! the subset still agrees with Envoy on field numbers, types and wrapper semantics, so this
//! test does, against the independently generated `envoy-types` crate:
//!
//! * A `CheckRequest` with every field of our subset populated travels Envoy → us and us →
//!   Envoy; a request carrying fields a newer Envoy might add (tags we don't define, every
//!   wire type, at every nesting level) still decodes, with those fields skipped.
//! * A `CheckResponse` of each kind (OK, denied, error) travels us → Envoy and Envoy → us;
//!   `append: Some(false)` must arrive as a present `BoolValue { value: false }` (absent means a
//!   context-dependent default to Envoy, not "false"), and an unset `append` must stay absent.
//! * The enums agree on every name ↔ number, and every `Address` variant round-trips.
//! * The gRPC method path is `/envoy.service.auth.v3.Authorization/Check`: Envoy's generated
//!   client calls our server over loopback, and our client calls Envoy's generated server.
//!
//! The builders below construct the same message twice, once per type family, from shared
//! fixture data and with exhaustive struct literals (no `..Default::default()`), so a field
//! added to either side stops this file compiling until it is covered here. Values are
//! non-default wherever the type allows, so a field that failed to decode cannot pass as its
//! default. Comparisons are whole-message `assert_eq!`, i.e. every field, recursively.

// Envoy marks `HeaderValueOption.append` and `OkHttpResponse.dynamic_metadata` deprecated;
// they are still on the wire, and fedauthz still relies on `append`.
#![allow(deprecated)]

use std::collections::HashMap;
use std::net::SocketAddr;

use prost::Message;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use ours::core::header_value_option::HeaderAppendAction as Action;

/// Our generated types: what fedauthz serves.
mod ours {
    pub use fedauthz::proto::envoy::r#type::v3 as http;
    pub use fedauthz::proto::google::rpc;
    pub use fedauthz::proto::{auth, core};
    pub use prost_types as pb;
}

/// Envoy's own types, from the `envoy-types` crate.
mod envoy {
    pub use envoy_types::pb::envoy::config::core::v3 as core;
    pub use envoy_types::pb::envoy::service::auth::v3 as auth;
    pub use envoy_types::pb::envoy::r#type::v3 as http;
    pub use envoy_types::pb::google::protobuf as pb;
    pub use envoy_types::pb::google::rpc;
}

// ---------------------------------------------------------------------------------------------
// Fixture data, shared by both builders
// ---------------------------------------------------------------------------------------------

/// One `AttributeContext.Peer`.
struct PeerData {
    ip: &'static str,
    port: u32,
    service: &'static str,
    labels: &'static [(&'static str, &'static str)],
    principal: &'static str,
    certificate: &'static str,
}

const SOURCE: PeerData = PeerData {
    ip: "10.1.2.3",
    port: 54_321,
    service: "frontend",
    labels: &[("app", "frontend"), ("version", "v2")],
    principal: "spiffe://cluster.local/ns/web/sa/frontend",
    certificate: "-----BEGIN%20CERTIFICATE-----%0AMIIBsource%0A-----END%20CERTIFICATE-----%0A",
};

const DESTINATION: PeerData = PeerData {
    ip: "10.4.5.6",
    port: 8443,
    service: "orders",
    labels: &[("app", "orders")],
    principal: "spiffe://cluster.local/ns/shop/sa/orders",
    certificate: "-----BEGIN%20CERTIFICATE-----%0AMIIBdest%0A-----END%20CERTIFICATE-----%0A",
};

/// `SocketAddress` fields that are the same for both peers (all non-default).
const SOCKET_PROTOCOL: i32 = ours::core::socket_address::Protocol::Udp as i32;
const RESOLVER_NAME: &str = "envoy.resolvers.custom";
const NETNS_PATH: &str = "/var/run/netns/edge";

const TIME_SECONDS: i64 = 1_767_225_600;
const TIME_NANOS: i32 = 123_456_789;

const HTTP_ID: &str = "8c1f0a4e-5d7b-4b6a-9f2e-0a1b2c3d4e5f";
const HTTP_METHOD: &str = "POST";
const HTTP_HEADERS: &[(&str, &str)] = &[
    (":authority", "api.example.com"),
    (":method", "POST"),
    (":path", "/orders/42?expand=items"),
    ("authorization", "Bearer eyJhbGciOiJSUzI1NiJ9.e30.sig"),
    ("x-forwarded-for", "203.0.113.7, 10.1.2.3"),
];
/// `(key, value, raw_value)`; newer Envoys send only `raw_value`, older ones only `value`.
const HEADER_MAP: &[(&str, &str, &[u8])] = &[
    ("authorization", "", b"Bearer eyJhbGciOiJSUzI1NiJ9.e30.sig"),
    ("x-legacy", "text-only", b""),
    ("x-binary", "", b"\x00\x80\xfe\xff"),
];
const HTTP_PATH: &str = "/orders/42?expand=items";
const HTTP_HOST: &str = "api.example.com";
const HTTP_SCHEME: &str = "https";
const HTTP_QUERY: &str = "expand=items";
const HTTP_FRAGMENT: &str = "summary";
/// Above `u32::MAX`, so a 32-bit field number mix-up would show.
const HTTP_SIZE: i64 = 5_000_000_000;
const HTTP_PROTOCOL: &str = "HTTP/2";
const HTTP_BODY: &str = "{\"qty\":3}";
const HTTP_RAW_BODY: &[u8] = b"\x00\x01binary\xfe\xff";

const CONTEXT_EXTENSIONS: &[(&str, &str)] = &[("virtual_host", "orders"), ("tier", "gold")];
const SNI: &str = "api.example.com";

const ANY_TYPE_URL: &str = "type.googleapis.com/fedauthz.test.Opaque";
const ANY_VALUE: &[u8] = b"\x0a\x03abc";

/// One `HeaderValueOption`.
struct HeaderOption {
    key: &'static str,
    value: &'static str,
    raw_value: &'static [u8],
    append: Option<bool>,
    action: i32,
    keep_empty_value: bool,
}

const OK_HEADERS: &[HeaderOption] = &[
    HeaderOption {
        key: "x-jwt-sub",
        value: "alice",
        raw_value: b"",
        append: Some(false),
        action: Action::OverwriteIfExistsOrAdd as i32,
        keep_empty_value: false,
    },
    HeaderOption {
        key: "x-jwt-groups",
        value: "admins",
        raw_value: b"",
        append: Some(true),
        action: Action::AddIfAbsent as i32,
        keep_empty_value: true,
    },
    HeaderOption {
        key: "x-jwt-raw",
        value: "",
        raw_value: b"\x00raw\xff",
        append: None,
        action: Action::OverwriteIfExists as i32,
        keep_empty_value: true,
    },
];
const RESPONSE_HEADERS_TO_ADD: &[HeaderOption] = &[HeaderOption {
    key: "x-authz-decision",
    value: "allow",
    raw_value: b"",
    append: Some(false),
    action: Action::OverwriteIfExistsOrAdd as i32,
    keep_empty_value: false,
}];
const HEADERS_TO_REMOVE: &[&str] = &["x-internal-token", "x-jwt-unverified"];
const QUERY_TO_SET: &[(&str, &str)] = &[("tenant", "acme"), ("region", "eu")];
const QUERY_TO_REMOVE: &[&str] = &["access_token"];

const DENIED_HEADERS: &[HeaderOption] = &[
    HeaderOption {
        key: "www-authenticate",
        value: "Bearer error=\"invalid_token\"",
        raw_value: b"",
        append: None,
        action: Action::AppendIfExistsOrAdd as i32,
        keep_empty_value: false,
    },
    HeaderOption {
        key: "content-type",
        value: "application/json",
        raw_value: b"",
        append: Some(false),
        action: Action::OverwriteIfExistsOrAdd as i32,
        keep_empty_value: true,
    },
];
const DENIED_BODY: &str = "{\"error\":\"invalid_token\"}";

/// The three shapes of `CheckResponse.http_response`.
#[derive(Clone, Copy, Debug)]
enum Verdict {
    Ok,
    Denied,
    Error,
}

impl Verdict {
    const ALL: [Verdict; 3] = [Verdict::Ok, Verdict::Denied, Verdict::Error];

    /// `(google.rpc.Status code, message, HTTP status of the local reply)`.
    fn status(self) -> (i32, &'static str, i32) {
        use ours::http::StatusCode;
        match self {
            Verdict::Ok => (0, "allowed", StatusCode::Empty as i32),
            Verdict::Denied => (16, "invalid token", StatusCode::Unauthorized as i32),
            Verdict::Error => (
                14,
                "keys unavailable",
                StatusCode::ServiceUnavailable as i32,
            ),
        }
    }
}

fn string_map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|&(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|&s| s.to_owned()).collect()
}

/// A `google.protobuf.Struct` with every `Value` kind, nested lists and structs included.
fn our_struct() -> ours::pb::Struct {
    use ours::pb::value::Kind;
    fn value(kind: Kind) -> ours::pb::Value {
        ours::pb::Value { kind: Some(kind) }
    }
    fn fields(entries: Vec<(&str, Kind)>) -> ours::pb::Struct {
        ours::pb::Struct {
            fields: entries
                .into_iter()
                .map(|(k, kind)| (k.to_owned(), value(kind)))
                .collect(),
        }
    }
    let nested = fields(vec![
        ("tenant", Kind::StringValue("acme".into())),
        ("tier", Kind::NumberValue(3.0)),
        (
            "deeper",
            Kind::StructValue(fields(vec![("ok", Kind::BoolValue(false))])),
        ),
    ]);
    let list = ours::pb::ListValue {
        values: vec![
            value(Kind::StringValue("admins".into())),
            value(Kind::NumberValue(-0.25)),
            value(Kind::BoolValue(true)),
            value(Kind::NullValue(0)),
            value(Kind::StructValue(nested.clone())),
            value(Kind::ListValue(ours::pb::ListValue { values: vec![] })),
        ],
    };
    fields(vec![
        ("sub", Kind::StringValue("alice".into())),
        ("exp", Kind::NumberValue(1_767_229_200.0)),
        ("admin", Kind::BoolValue(true)),
        ("none", Kind::NullValue(0)),
        ("groups", Kind::ListValue(list)),
        ("claims", Kind::StructValue(nested)),
    ])
}

/// [`our_struct`] in Envoy's types: a plain structural mapping (no encoding involved).
fn envoy_struct(from: &ours::pb::Struct) -> envoy::pb::Struct {
    fn value(from: &ours::pb::Value) -> envoy::pb::Value {
        use envoy::pb::value::Kind as E;
        use ours::pb::value::Kind as O;
        let kind = from.kind.as_ref().map(|kind| match kind {
            O::NullValue(n) => E::NullValue(*n),
            O::NumberValue(n) => E::NumberValue(*n),
            O::StringValue(s) => E::StringValue(s.clone()),
            O::BoolValue(b) => E::BoolValue(*b),
            O::StructValue(s) => E::StructValue(envoy_struct(s)),
            O::ListValue(l) => E::ListValue(envoy::pb::ListValue {
                values: l.values.iter().map(value).collect(),
            }),
        });
        envoy::pb::Value { kind }
    }
    envoy::pb::Struct {
        fields: from
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), value(v)))
            .collect(),
    }
}

// ---------------------------------------------------------------------------------------------
// CheckRequest builders
// ---------------------------------------------------------------------------------------------

fn our_check_request() -> ours::auth::CheckRequest {
    use ours::auth::attribute_context::{HttpRequest, Request, TlsSession};
    ours::auth::CheckRequest {
        attributes: Some(ours::auth::AttributeContext {
            source: Some(our_peer(&SOURCE)),
            destination: Some(our_peer(&DESTINATION)),
            request: Some(Request {
                time: Some(ours::pb::Timestamp {
                    seconds: TIME_SECONDS,
                    nanos: TIME_NANOS,
                }),
                http: Some(HttpRequest {
                    id: HTTP_ID.into(),
                    method: HTTP_METHOD.into(),
                    headers: string_map(HTTP_HEADERS),
                    header_map: Some(ours::core::HeaderMap {
                        headers: HEADER_MAP
                            .iter()
                            .map(|&(key, value, raw)| our_header_value(key, value, raw))
                            .collect(),
                    }),
                    path: HTTP_PATH.into(),
                    host: HTTP_HOST.into(),
                    scheme: HTTP_SCHEME.into(),
                    query: HTTP_QUERY.into(),
                    fragment: HTTP_FRAGMENT.into(),
                    size: HTTP_SIZE,
                    protocol: HTTP_PROTOCOL.into(),
                    body: HTTP_BODY.into(),
                    raw_body: HTTP_RAW_BODY.to_vec(),
                }),
            }),
            context_extensions: string_map(CONTEXT_EXTENSIONS),
            metadata_context: Some(our_metadata("envoy.filters.http.jwt_authn")),
            tls_session: Some(TlsSession { sni: SNI.into() }),
            route_metadata_context: Some(our_metadata("com.example.route")),
        }),
    }
}

fn envoy_check_request() -> envoy::auth::CheckRequest {
    use envoy::auth::attribute_context::{HttpRequest, Request, TlsSession};
    envoy::auth::CheckRequest {
        attributes: Some(envoy::auth::AttributeContext {
            source: Some(envoy_peer(&SOURCE)),
            destination: Some(envoy_peer(&DESTINATION)),
            request: Some(Request {
                time: Some(envoy::pb::Timestamp {
                    seconds: TIME_SECONDS,
                    nanos: TIME_NANOS,
                }),
                http: Some(HttpRequest {
                    id: HTTP_ID.into(),
                    method: HTTP_METHOD.into(),
                    headers: string_map(HTTP_HEADERS),
                    header_map: Some(envoy::core::HeaderMap {
                        headers: HEADER_MAP
                            .iter()
                            .map(|&(key, value, raw)| envoy_header_value(key, value, raw))
                            .collect(),
                    }),
                    path: HTTP_PATH.into(),
                    host: HTTP_HOST.into(),
                    scheme: HTTP_SCHEME.into(),
                    query: HTTP_QUERY.into(),
                    fragment: HTTP_FRAGMENT.into(),
                    size: HTTP_SIZE,
                    protocol: HTTP_PROTOCOL.into(),
                    body: HTTP_BODY.into(),
                    raw_body: HTTP_RAW_BODY.to_vec(),
                }),
            }),
            context_extensions: string_map(CONTEXT_EXTENSIONS),
            metadata_context: Some(envoy_metadata("envoy.filters.http.jwt_authn")),
            tls_session: Some(TlsSession { sni: SNI.into() }),
            route_metadata_context: Some(envoy_metadata("com.example.route")),
        }),
    }
}

fn our_peer(data: &PeerData) -> ours::auth::attribute_context::Peer {
    use ours::core::{address, socket_address};
    ours::auth::attribute_context::Peer {
        address: Some(ours::core::Address {
            address: Some(address::Address::SocketAddress(ours::core::SocketAddress {
                protocol: SOCKET_PROTOCOL,
                address: data.ip.into(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(data.port)),
                resolver_name: RESOLVER_NAME.into(),
                ipv4_compat: true,
                network_namespace_filepath: NETNS_PATH.into(),
            })),
        }),
        service: data.service.into(),
        labels: string_map(data.labels),
        principal: data.principal.into(),
        certificate: data.certificate.into(),
    }
}

fn envoy_peer(data: &PeerData) -> envoy::auth::attribute_context::Peer {
    use envoy::core::{address, socket_address};
    envoy::auth::attribute_context::Peer {
        address: Some(envoy::core::Address {
            address: Some(address::Address::SocketAddress(
                envoy::core::SocketAddress {
                    protocol: SOCKET_PROTOCOL,
                    address: data.ip.into(),
                    port_specifier: Some(socket_address::PortSpecifier::PortValue(data.port)),
                    resolver_name: RESOLVER_NAME.into(),
                    ipv4_compat: true,
                    network_namespace_filepath: NETNS_PATH.into(),
                },
            )),
        }),
        service: data.service.into(),
        labels: string_map(data.labels),
        principal: data.principal.into(),
        certificate: data.certificate.into(),
    }
}

fn our_metadata(namespace: &str) -> ours::core::Metadata {
    ours::core::Metadata {
        filter_metadata: HashMap::from([(namespace.to_owned(), our_struct())]),
        typed_filter_metadata: HashMap::from([(
            namespace.to_owned(),
            ours::pb::Any {
                type_url: ANY_TYPE_URL.into(),
                value: ANY_VALUE.to_vec(),
            },
        )]),
    }
}

fn envoy_metadata(namespace: &str) -> envoy::core::Metadata {
    envoy::core::Metadata {
        filter_metadata: HashMap::from([(namespace.to_owned(), envoy_struct(&our_struct()))]),
        typed_filter_metadata: HashMap::from([(
            namespace.to_owned(),
            envoy::pb::Any {
                type_url: ANY_TYPE_URL.into(),
                value: ANY_VALUE.to_vec(),
            },
        )]),
    }
}

fn our_header_value(key: &str, value: &str, raw_value: &[u8]) -> ours::core::HeaderValue {
    ours::core::HeaderValue {
        key: key.into(),
        value: value.into(),
        raw_value: raw_value.to_vec(),
    }
}

fn envoy_header_value(key: &str, value: &str, raw_value: &[u8]) -> envoy::core::HeaderValue {
    envoy::core::HeaderValue {
        key: key.into(),
        value: value.into(),
        raw_value: raw_value.to_vec(),
    }
}

// ---------------------------------------------------------------------------------------------
// CheckResponse builders
// ---------------------------------------------------------------------------------------------

fn our_check_response(verdict: Verdict) -> ours::auth::CheckResponse {
    use ours::auth::check_response::HttpResponse;
    let (code, message, http_code) = verdict.status();
    let denied = || ours::auth::DeniedHttpResponse {
        status: Some(ours::http::HttpStatus { code: http_code }),
        headers: our_header_options(DENIED_HEADERS),
        body: DENIED_BODY.into(),
    };
    ours::auth::CheckResponse {
        status: Some(ours::rpc::Status {
            code,
            message: message.into(),
            details: vec![ours::pb::Any {
                type_url: ANY_TYPE_URL.into(),
                value: ANY_VALUE.to_vec(),
            }],
        }),
        http_response: Some(match verdict {
            Verdict::Ok => HttpResponse::OkResponse(ours::auth::OkHttpResponse {
                headers: our_header_options(OK_HEADERS),
                dynamic_metadata: Some(our_struct()),
                headers_to_remove: strings(HEADERS_TO_REMOVE),
                response_headers_to_add: our_header_options(RESPONSE_HEADERS_TO_ADD),
                query_parameters_to_set: QUERY_TO_SET
                    .iter()
                    .map(|&(key, value)| ours::core::QueryParameter {
                        key: key.into(),
                        value: value.into(),
                    })
                    .collect(),
                query_parameters_to_remove: strings(QUERY_TO_REMOVE),
            }),
            Verdict::Denied => HttpResponse::DeniedResponse(denied()),
            Verdict::Error => HttpResponse::ErrorResponse(denied()),
        }),
        dynamic_metadata: Some(our_struct()),
    }
}

fn envoy_check_response(verdict: Verdict) -> envoy::auth::CheckResponse {
    use envoy::auth::check_response::HttpResponse;
    let (code, message, http_code) = verdict.status();
    let denied = || envoy::auth::DeniedHttpResponse {
        status: Some(envoy::http::HttpStatus { code: http_code }),
        headers: envoy_header_options(DENIED_HEADERS),
        body: DENIED_BODY.into(),
    };
    envoy::auth::CheckResponse {
        status: Some(envoy::rpc::Status {
            code,
            message: message.into(),
            details: vec![envoy::pb::Any {
                type_url: ANY_TYPE_URL.into(),
                value: ANY_VALUE.to_vec(),
            }],
        }),
        http_response: Some(match verdict {
            Verdict::Ok => HttpResponse::OkResponse(envoy::auth::OkHttpResponse {
                headers: envoy_header_options(OK_HEADERS),
                dynamic_metadata: Some(envoy_struct(&our_struct())),
                headers_to_remove: strings(HEADERS_TO_REMOVE),
                response_headers_to_add: envoy_header_options(RESPONSE_HEADERS_TO_ADD),
                query_parameters_to_set: QUERY_TO_SET
                    .iter()
                    .map(|&(key, value)| envoy::core::QueryParameter {
                        key: key.into(),
                        value: value.into(),
                    })
                    .collect(),
                query_parameters_to_remove: strings(QUERY_TO_REMOVE),
            }),
            Verdict::Denied => HttpResponse::DeniedResponse(denied()),
            Verdict::Error => HttpResponse::ErrorResponse(denied()),
        }),
        dynamic_metadata: Some(envoy_struct(&our_struct())),
    }
}

fn our_header_options(options: &[HeaderOption]) -> Vec<ours::core::HeaderValueOption> {
    options
        .iter()
        .map(|o| ours::core::HeaderValueOption {
            header: Some(our_header_value(o.key, o.value, o.raw_value)),
            append: o.append,
            append_action: o.action,
            keep_empty_value: o.keep_empty_value,
        })
        .collect()
}

fn envoy_header_options(options: &[HeaderOption]) -> Vec<envoy::core::HeaderValueOption> {
    options
        .iter()
        .map(|o| envoy::core::HeaderValueOption {
            header: Some(envoy_header_value(o.key, o.value, o.raw_value)),
            append: o.append.map(|value| envoy::pb::BoolValue { value }),
            append_action: o.action,
            keep_empty_value: o.keep_empty_value,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Wire helpers
// ---------------------------------------------------------------------------------------------

/// Encodes `message` and decodes the bytes as a `T` (the other side's type). Also checks that
/// `T` re-encodes to the same length: a field that decoded under a tag `T` doesn't know would
/// be dropped (prost keeps no unknown fields) and shorten it.
fn transcode<T: Message + Default>(message: &impl Message) -> T {
    let bytes = message.encode_to_vec();
    let decoded = T::decode(bytes.as_slice()).expect("the other side decodes the message");
    assert_eq!(
        decoded.encoded_len(),
        bytes.len(),
        "re-encoding changed the size: a field was lost or changed type in transit"
    );
    decoded
}

/// Fields at tag numbers neither side defines, one of each wire type, standing in for
/// whatever a newer Envoy adds.
#[derive(Clone, PartialEq, Message)]
struct NewerEnvoyFields {
    #[prost(uint64, tag = "9001")]
    varint: u64,
    #[prost(fixed64, tag = "9002")]
    fixed64: u64,
    #[prost(string, tag = "9003")]
    text: String,
    #[prost(fixed32, tag = "9004")]
    fixed32: u32,
    #[prost(message, optional, tag = "9005")]
    nested: Option<NewerEnvoyMessage>,
    #[prost(sint64, repeated, tag = "9006")]
    packed: Vec<i64>,
}

/// A message-typed unknown field's payload.
#[derive(Clone, PartialEq, Message)]
struct NewerEnvoyMessage {
    #[prost(string, tag = "1")]
    note: String,
    #[prost(bool, tag = "2")]
    flag: bool,
}

fn newer_envoy_fields() -> Vec<u8> {
    NewerEnvoyFields {
        varint: u64::MAX,
        fixed64: 0x0123_4567_89ab_cdef,
        text: "from the future".into(),
        fixed32: 0xdead_beef,
        nested: Some(NewerEnvoyMessage {
            note: "nested".into(),
            flag: true,
        }),
        packed: vec![-1, 0, 1, i64::MIN],
    }
    .encode_to_vec()
}

/// `payload` placed inside the singular message field reached by following `path` (field
/// numbers from the outermost message). Appended to an encoded message, protobuf's merge rule
/// for repeated occurrences of a singular message field folds it into the existing value.
fn nested_in(path: &[u32], payload: Vec<u8>) -> Vec<u8> {
    path.iter().rev().fold(payload, |inner, &tag| {
        // Key = field number << 3 | wire type 2 (length-delimited), then length, then bytes.
        let mut out = varint((u64::from(tag) << 3) | 2);
        out.extend(varint(inner.len() as u64));
        out.extend(inner);
        out
    })
}

fn varint(mut value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
    out
}

// ---------------------------------------------------------------------------------------------
// CheckRequest: Envoy → us is the production direction
// ---------------------------------------------------------------------------------------------

#[test]
fn check_request_from_envoy_decodes_with_every_field() {
    let decoded: ours::auth::CheckRequest = transcode(&envoy_check_request());
    assert_eq!(decoded, our_check_request());
}

#[test]
fn check_request_from_us_decodes_in_envoy() {
    let decoded: envoy::auth::CheckRequest = transcode(&our_check_request());
    assert_eq!(decoded, envoy_check_request());
}

#[test]
fn check_request_fields_from_a_newer_envoy_are_skipped() {
    // (where, path of field numbers from CheckRequest)
    let places: &[(&str, &[u32])] = &[
        ("CheckRequest", &[]),
        ("AttributeContext", &[1]),
        ("source Peer", &[1, 1]),
        ("source Address", &[1, 1, 1]),
        ("source SocketAddress", &[1, 1, 1, 1]),
        ("destination Peer", &[1, 2]),
        ("Request", &[1, 4]),
        ("Request.time", &[1, 4, 1]),
        ("HttpRequest", &[1, 4, 2]),
        ("HeaderMap", &[1, 4, 2, 13]),
        ("metadata_context", &[1, 11]),
        ("tls_session", &[1, 12]),
        ("route_metadata_context", &[1, 13]),
    ];
    let mut wire = envoy_check_request().encode_to_vec();
    let plain_len = wire.len();
    for &(place, path) in places {
        wire.extend(nested_in(path, newer_envoy_fields()));

        // Each step on its own, so a failure names the place.
        let decoded = ours::auth::CheckRequest::decode(wire.as_slice())
            .unwrap_or_else(|e| panic!("unknown fields in {place}: {e}"));
        assert_eq!(decoded, our_check_request(), "unknown fields in {place}");
    }
    // Sanity: the injected bytes are there, and are valid to Envoy's own types too.
    assert!(wire.len() > plain_len + places.len() * 40);
    let envoy_view = envoy::auth::CheckRequest::decode(wire.as_slice()).expect("valid protobuf");
    assert_eq!(envoy_view, envoy_check_request());
}

// ---------------------------------------------------------------------------------------------
// CheckResponse: us → Envoy is the production direction
// ---------------------------------------------------------------------------------------------

#[test]
fn check_responses_from_us_decode_in_envoy() {
    for verdict in Verdict::ALL {
        let decoded: envoy::auth::CheckResponse = transcode(&our_check_response(verdict));
        assert_eq!(decoded, envoy_check_response(verdict), "{verdict:?}");
    }
}

#[test]
fn check_responses_from_envoy_types_decode_with_us() {
    for verdict in Verdict::ALL {
        let decoded: ours::auth::CheckResponse = transcode(&envoy_check_response(verdict));
        assert_eq!(decoded, our_check_response(verdict), "{verdict:?}");
    }
}

#[test]
fn ok_response_append_false_stays_explicit() {
    use envoy::auth::check_response::HttpResponse;
    let decoded: envoy::auth::CheckResponse = transcode(&our_check_response(Verdict::Ok));
    let Some(HttpResponse::OkResponse(ok)) = decoded.http_response else {
        panic!("expected an OK response, got {:?}", decoded.http_response);
    };

    let header = |options: &[envoy::core::HeaderValueOption], key: &str| {
        options
            .iter()
            .find(|o| o.header.as_ref().is_some_and(|h| h.key == key))
            .cloned()
            .unwrap_or_else(|| panic!("header {key} missing"))
    };
    let sub = header(&ok.headers, "x-jwt-sub");
    assert_eq!(sub.append, Some(envoy::pb::BoolValue { value: false }));
    assert_eq!(
        sub.append_action,
        envoy::core::header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd as i32
    );
    assert_eq!(sub.header.map(|h| h.value).as_deref(), Some("alice"));
    assert_eq!(
        header(&ok.headers, "x-jwt-groups").append,
        Some(envoy::pb::BoolValue { value: true })
    );
    assert_eq!(header(&ok.headers, "x-jwt-raw").append, None);
    assert_eq!(
        header(&ok.response_headers_to_add, "x-authz-decision").append,
        Some(envoy::pb::BoolValue { value: false })
    );
    assert_eq!(ok.headers_to_remove, strings(HEADERS_TO_REMOVE));
    assert_eq!(ok.dynamic_metadata, Some(envoy_struct(&our_struct())));
    assert_eq!(decoded.dynamic_metadata, Some(envoy_struct(&our_struct())));
}

#[test]
fn denied_response_keeps_status_headers_and_body() {
    use envoy::auth::check_response::HttpResponse;
    let decoded: envoy::auth::CheckResponse = transcode(&our_check_response(Verdict::Denied));
    assert_eq!(decoded.status.as_ref().map(|s| s.code), Some(16));
    let Some(HttpResponse::DeniedResponse(denied)) = decoded.http_response else {
        panic!(
            "expected a denied response, got {:?}",
            decoded.http_response
        );
    };
    assert_eq!(
        denied.status,
        Some(envoy::http::HttpStatus {
            code: envoy::http::StatusCode::Unauthorized as i32
        })
    );
    assert_eq!(denied.status.map(|s| s.code), Some(401));
    assert_eq!(denied.headers, envoy_header_options(DENIED_HEADERS));
    assert_eq!(
        denied.headers[0].append, None,
        "local-reply header left unset"
    );
    assert_eq!(
        denied.headers[1].append,
        Some(envoy::pb::BoolValue { value: false })
    );
    assert_eq!(denied.body, DENIED_BODY);
}

// ---------------------------------------------------------------------------------------------
// Enums and oneof variants the fixtures above don't reach
// ---------------------------------------------------------------------------------------------

#[test]
fn enums_agree_on_every_name_and_number() {
    fn agree(
        what: &str,
        range: std::ops::RangeInclusive<i32>,
        ours: impl Fn(i32) -> Option<&'static str>,
        envoy: impl Fn(i32) -> Option<&'static str>,
    ) {
        let mut known = 0;
        for n in range {
            assert_eq!(ours(n), envoy(n), "{what} value {n}");
            known += usize::from(ours(n).is_some());
        }
        assert!(known > 1, "{what}: no values compared");
    }
    agree(
        "StatusCode",
        -1..=1000,
        |n| {
            ours::http::StatusCode::try_from(n)
                .ok()
                .map(|c| c.as_str_name())
        },
        |n| {
            envoy::http::StatusCode::try_from(n)
                .ok()
                .map(|c| c.as_str_name())
        },
    );
    agree(
        "HeaderAppendAction",
        -1..=16,
        |n| Action::try_from(n).ok().map(|a| a.as_str_name()),
        |n| {
            envoy::core::header_value_option::HeaderAppendAction::try_from(n)
                .ok()
                .map(|a| a.as_str_name())
        },
    );
    agree(
        "SocketAddress.Protocol",
        -1..=16,
        |n| {
            ours::core::socket_address::Protocol::try_from(n)
                .ok()
                .map(|p| p.as_str_name())
        },
        |n| {
            envoy::core::socket_address::Protocol::try_from(n)
                .ok()
                .map(|p| p.as_str_name())
        },
    );
}

#[test]
fn every_address_variant_round_trips() {
    use envoy::core::{address as ea, envoy_internal_address as eia, socket_address as esa};
    use ours::core::{address as oa, envoy_internal_address as oia, socket_address as osa};
    let pairs = [
        (
            oa::Address::SocketAddress(ours::core::SocketAddress {
                protocol: SOCKET_PROTOCOL,
                address: "::1".into(),
                port_specifier: Some(osa::PortSpecifier::NamedPort("https".into())),
                resolver_name: RESOLVER_NAME.into(),
                ipv4_compat: true,
                network_namespace_filepath: NETNS_PATH.into(),
            }),
            ea::Address::SocketAddress(envoy::core::SocketAddress {
                protocol: SOCKET_PROTOCOL,
                address: "::1".into(),
                port_specifier: Some(esa::PortSpecifier::NamedPort("https".into())),
                resolver_name: RESOLVER_NAME.into(),
                ipv4_compat: true,
                network_namespace_filepath: NETNS_PATH.into(),
            }),
        ),
        (
            oa::Address::Pipe(ours::core::Pipe {
                path: "/run/envoy.sock".into(),
                mode: 0o660,
            }),
            ea::Address::Pipe(envoy::core::Pipe {
                path: "/run/envoy.sock".into(),
                mode: 0o660,
            }),
        ),
        (
            oa::Address::EnvoyInternalAddress(ours::core::EnvoyInternalAddress {
                address_name_specifier: Some(oia::AddressNameSpecifier::ServerListenerName(
                    "internal_listener".into(),
                )),
                endpoint_id: "endpoint-7".into(),
            }),
            ea::Address::EnvoyInternalAddress(envoy::core::EnvoyInternalAddress {
                address_name_specifier: Some(eia::AddressNameSpecifier::ServerListenerName(
                    "internal_listener".into(),
                )),
                endpoint_id: "endpoint-7".into(),
            }),
        ),
    ];
    for (our_variant, envoy_variant) in pairs {
        let our_address = ours::core::Address {
            address: Some(our_variant),
        };
        let envoy_address = envoy::core::Address {
            address: Some(envoy_variant),
        };
        assert_eq!(
            transcode::<ours::core::Address>(&envoy_address),
            our_address
        );
        assert_eq!(
            transcode::<envoy::core::Address>(&our_address),
            envoy_address
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The gRPC method path, over real gRPC on loopback
// ---------------------------------------------------------------------------------------------

const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

#[test]
fn service_name_is_envoys() {
    use ours::auth::authorization_server::SERVICE_NAME;
    assert_eq!(format!("/{SERVICE_NAME}/Check"), CHECK_PATH);
    assert_eq!(
        SERVICE_NAME,
        envoy::auth::authorization_server::SERVICE_NAME
    );
}

/// Our generated server, answering the fixture request with the fixture OK response.
struct OurServer;

#[tonic::async_trait]
impl ours::auth::authorization_server::Authorization for OurServer {
    async fn check(
        &self,
        request: tonic::Request<ours::auth::CheckRequest>,
    ) -> Result<tonic::Response<ours::auth::CheckResponse>, tonic::Status> {
        if *request.get_ref() != our_check_request() {
            return Err(tonic::Status::invalid_argument(format!(
                "unexpected request: {:?}",
                request.get_ref()
            )));
        }
        Ok(tonic::Response::new(our_check_response(Verdict::Ok)))
    }
}

/// Envoy's generated server (envoy-types), answering the same way in its own types.
struct EnvoyServer;

#[tonic::async_trait]
impl envoy::auth::authorization_server::Authorization for EnvoyServer {
    async fn check(
        &self,
        request: tonic::Request<envoy::auth::CheckRequest>,
    ) -> Result<tonic::Response<envoy::auth::CheckResponse>, tonic::Status> {
        if *request.get_ref() != envoy_check_request() {
            return Err(tonic::Status::invalid_argument(format!(
                "unexpected request: {:?}",
                request.get_ref()
            )));
        }
        Ok(tonic::Response::new(envoy_check_response(Verdict::Ok)))
    }
}

async fn loopback() -> (TcpListenerStream, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    (TcpListenerStream::new(listener), addr)
}

/// Envoy's client hard-codes `/envoy.service.auth.v3.Authorization/Check`; our server must
/// route it, decode the request and answer in a form Envoy's types decode.
#[tokio::test]
async fn envoy_client_calls_our_server() {
    let (incoming, addr) = loopback().await;
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ours::auth::authorization_server::AuthorizationServer::new(
                OurServer,
            ))
            .serve_with_incoming(incoming),
    );
    let mut client =
        envoy::auth::authorization_client::AuthorizationClient::connect(format!("http://{addr}"))
            .await
            .expect("connect");
    let response = client
        .check(envoy_check_request())
        .await
        .expect("Check through our server");
    assert_eq!(response.into_inner(), envoy_check_response(Verdict::Ok));
    server.abort();
}

/// Our client (used by the other tests) must call the path Envoy's server routes.
#[tokio::test]
async fn our_client_calls_envoy_server() {
    let (incoming, addr) = loopback().await;
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(envoy::auth::authorization_server::AuthorizationServer::new(
                EnvoyServer,
            ))
            .serve_with_incoming(incoming),
    );
    let mut client =
        ours::auth::authorization_client::AuthorizationClient::connect(format!("http://{addr}"))
            .await
            .expect("connect");
    let response = client
        .check(our_check_request())
        .await
        .expect("Check through Envoy's generated server");
    assert_eq!(response.into_inner(), our_check_response(Verdict::Ok));
    server.abort();
}
