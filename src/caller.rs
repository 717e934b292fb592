//! The verified identity of the proxy that calls fedauthz: the subject alternative names of
//! the client certificate its TLS listener verified (mTLS). This is Envoy itself, not the
//! downstream client Envoy describes in `source.principal`.
//!
//! Filled in by the server runtime's TLS listener, read by routes (`match.callers`) and the
//! decision log. Depends on nothing else in the crate.

use std::fmt;

/// The names of a verified client certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallerIdentity {
    /// URI SANs (SPIFFE IDs), as written in the certificate.
    pub uris: Vec<String>,
    /// DNS SANs, lower-cased.
    pub dns_names: Vec<String>,
}

impl CallerIdentity {
    /// Every name: URIs first, then DNS names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.uris.iter().chain(&self.dns_names).map(String::as_str)
    }

    /// The name logs use: the first URI SAN, else the first DNS SAN.
    pub fn primary(&self) -> Option<&str> {
        self.names().next()
    }
}

impl fmt::Display for CallerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.primary().unwrap_or("<certificate without SANs>"))
    }
}

/// What a TLS listener knows about one accepted connection; tonic hands it to every request
/// on that connection as a request extension.
#[derive(Debug, Clone)]
pub struct CallerConnection {
    /// The caller's address.
    pub remote_addr: std::net::SocketAddr,
    /// The verified client certificate's names (`None`: no client certificate).
    pub identity: Option<std::sync::Arc<CallerIdentity>>,
}
