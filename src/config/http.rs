//! The `server.http` section: the HTTP authorization listener for proxies that do not speak
//! ext_authz gRPC (Envoy `http_service`, nginx `auth_request`, Traefik `forwardAuth`), which
//! caller conventions it answers at which path, and which callers it believes.

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{FieldError, TlsConfig};

/// The HTTP authorization listener (HTTP/1.1 and h2c, or HTTPS with `tls`). Absent: off.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpListenerConfig {
    /// Address of the listener.
    pub listen: SocketAddr,
    /// TLS on the listener (absent: plaintext HTTP/1.1 and h2c). With
    /// `client_certificates`, a caller whose certificate verified is trusted as a proxy from
    /// any address.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// The networks proxies call from, as CIDRs (`10.0.0.0/8`, `127.0.0.1/32`, `::1/128`) or
    /// single addresses. A request from any other address without a verified client
    /// certificate is denied (`proxy_untrusted`) before its headers are read: the headers
    /// that describe the original request (`X-Original-URI`, `X-Forwarded-Uri`, …) are only
    /// as true as the proxy that set them.
    #[serde(default)]
    pub trusted_proxies: Vec<ProxyNetwork>,
    /// Which caller convention answers at which path. Default: `/envoy` (Envoy
    /// `http_service` with `path_prefix: /envoy`), `/nginx` (nginx `auth_request`) and
    /// `/traefik` (Traefik `forwardAuth`).
    #[serde(default = "default_endpoints")]
    pub endpoints: Vec<HttpEndpoint>,
}

/// One path of the HTTP listener and the convention of the proxy that calls it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpEndpoint {
    /// The path: `/` then segments, no trailing `/`, no query. For `envoy` it is the
    /// `path_prefix` Envoy puts before the original path; for `nginx` and `traefik` the exact
    /// path the proxy calls.
    pub path: String,
    /// How the proxy describes the request it asks about.
    pub convention: Convention,
}

/// How a proxy describes the request it asks about, and what it does with the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Convention {
    /// Envoy `http_service`: the request is the original one (its method, its path after the
    /// prefix, its headers). Allow: 200 with the identity headers and
    /// `x-envoy-auth-headers-to-remove`.
    Envoy,
    /// nginx `auth_request`: method, URI and host in `X-Original-Method`, `X-Original-URI`
    /// and `X-Original-Host`. Allow: 200 with the identity headers (`auth_request_set`).
    Nginx,
    /// Traefik `forwardAuth`: `X-Forwarded-Method`, `X-Forwarded-Uri` and
    /// `X-Forwarded-Host`. Allow: 200 with the identity headers (`authResponseHeaders`).
    Traefik,
}

impl Convention {
    /// The name used in configuration, logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Envoy => "envoy",
            Self::Nginx => "nginx",
            Self::Traefik => "traefik",
        }
    }
}

fn default_endpoints() -> Vec<HttpEndpoint> {
    [
        ("/envoy", Convention::Envoy),
        ("/nginx", Convention::Nginx),
        ("/traefik", Convention::Traefik),
    ]
    .into_iter()
    .map(|(path, convention)| HttpEndpoint {
        path: path.to_owned(),
        convention,
    })
    .collect()
}

/// A network of trusted proxies: a CIDR, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyNetwork(ipnet::IpNet);

impl fmt::Display for ProxyNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> Deserialize<'de> for ProxyNetwork {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Serialize for ProxyNetwork {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl JsonSchema for ProxyNetwork {
    fn schema_name() -> Cow<'static, str> {
        "ProxyNetwork".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A CIDR such as \"10.0.0.0/8\" or \"::1/128\", or one IP address."
        })
    }
}

impl ProxyNetwork {
    /// Parses a CIDR (`10.0.0.0/8`) or a single address (`10.1.2.3`, `::1`).
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Ok(net) = text.parse::<ipnet::IpNet>() {
            if net.trunc() != net {
                return Err(format!(
                    "{text:?} has host bits set; the network is {}",
                    net.trunc()
                ));
            }
            return Ok(Self(net));
        }
        text.parse::<IpAddr>()
            .map(|addr| Self(ipnet::IpNet::from(addr)))
            .map_err(|_| {
                format!("must be a CIDR such as 10.0.0.0/8 or an IP address (got {text:?})")
            })
    }

    /// Whether `addr` is in the network (an IPv4-mapped IPv6 address counts as its IPv4
    /// address, as a dual-stack listener reports IPv4 callers).
    pub fn contains(&self, addr: IpAddr) -> bool {
        self.0.contains(&addr.to_canonical())
    }
}

/// Rule violations of `server.http`.
pub(super) fn validate(config: &super::Config) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let Some(http) = &config.server.http else {
        return errors;
    };
    let server = &config.server;
    for (other, addr) in [
        ("server.grpc_listen", server.grpc_listen),
        ("server.admin_listen", server.admin_listen),
    ] {
        if http.listen == addr && addr.port() != 0 {
            errors.push(FieldError::new(
                "server.http.listen",
                format!("must differ from {other}"),
            ));
        }
    }
    let mtls = http
        .tls
        .as_ref()
        .is_some_and(|tls| tls.client_certificates.is_some());
    if http.trusted_proxies.is_empty() && !mtls {
        errors.push(FieldError::new(
            "server.http.trusted_proxies",
            "is empty and server.http.tls.client_certificates is not set: no proxy could be \
             trusted, so every request would be denied. List the proxies' networks, or require \
             client certificates",
        ));
    }
    if http.endpoints.is_empty() {
        errors.push(FieldError::new(
            "server.http.endpoints",
            "must list at least one endpoint",
        ));
    }
    for (i, endpoint) in http.endpoints.iter().enumerate() {
        let at = format!("server.http.endpoints[{i}].path");
        let path = endpoint.path.as_str();
        let well_formed = path.len() > 1
            && path.starts_with('/')
            && !path.ends_with('/')
            && path.split('/').skip(1).all(|segment| {
                !segment.is_empty()
                    && segment != "."
                    && segment != ".."
                    && segment
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
            });
        if !well_formed {
            errors.push(FieldError::new(
                at,
                format!(
                    "must be `/` then segments of letters, digits and -._~, with no trailing \
                     `/` (got {path:?})"
                ),
            ));
            continue;
        }
        for (j, earlier) in http.endpoints.iter().enumerate().take(i) {
            let overlaps = |outer: &HttpEndpoint, inner: &str| {
                outer.convention == Convention::Envoy
                    && inner
                        .strip_prefix(outer.path.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            };
            if earlier.path == endpoint.path {
                errors.push(FieldError::new(
                    at.clone(),
                    format!("duplicates server.http.endpoints[{j}].path"),
                ));
            } else if overlaps(earlier, path) || overlaps(endpoint, &earlier.path) {
                errors.push(FieldError::new(
                    at.clone(),
                    format!(
                        "overlaps server.http.endpoints[{j}].path {:?}: an Envoy endpoint \
                         answers every path under its prefix",
                        earlier.path
                    ),
                ));
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_parse_as_cidrs_or_addresses() {
        let net = ProxyNetwork::parse("10.0.0.0/8").unwrap();
        assert!(net.contains("10.1.2.3".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        // A dual-stack listener sees IPv4 callers as IPv4-mapped IPv6 addresses.
        assert!(net.contains("::ffff:10.9.9.9".parse().unwrap()));
        let host = ProxyNetwork::parse("::1").unwrap();
        assert!(host.contains("::1".parse().unwrap()));
        assert!(!host.contains("::2".parse().unwrap()));
        assert!(
            ProxyNetwork::parse("10.0.0.1/8")
                .unwrap_err()
                .contains("10.0.0.0/8")
        );
        assert!(ProxyNetwork::parse("nginx").unwrap_err().contains("CIDR"));
    }
}
