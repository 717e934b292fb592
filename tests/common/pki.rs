//! A throwaway PKI for TLS tests: CAs that sign server and client certificates with chosen
//! names and validity, and a TLS gRPC client that records the certificate the server showed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fedauthz::proto::auth::authorization_client::AuthorizationClient;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A certificate authority.
pub struct Ca {
    issuer: rcgen::Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub pem: String,
}

/// A certificate and its key.
#[derive(Clone)]
pub struct Leaf {
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Private key, PKCS#8 PEM.
    pub key_pem: String,
    /// Certificate, DER.
    pub der: Vec<u8>,
}

fn at(unix: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(unix).expect("timestamp")
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(0))
        .unwrap_or(0)
}

impl Ca {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.not_before = at(now() - 3600);
        params.not_after = at(now() + 365 * 86_400);
        let cert = params.self_signed(&key).expect("CA cert");
        Self {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A certificate for `names` (entries with `://` become URI SANs, IP addresses IP SANs,
    /// the rest DNS SANs), valid for 90 days.
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        self.leaf_valid(names, now() - 3600, now() + 90 * 86_400)
    }

    /// A certificate for `names` valid from `not_before` to `not_after` (Unix seconds).
    pub fn leaf_valid(&self, names: &[&str], not_before: i64, not_after: i64) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("leaf params");
        params.subject_alt_names = names
            .iter()
            .map(|name| {
                if name.contains("://") {
                    SanType::URI((*name).try_into().expect("URI SAN"))
                } else if let Ok(ip) = name.parse() {
                    SanType::IpAddress(ip)
                } else {
                    SanType::DnsName((*name).try_into().expect("DNS SAN"))
                }
            })
            .collect();
        params.not_before = at(not_before);
        params.not_after = at(not_after);
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

impl Leaf {
    /// Writes `tls.crt` and `tls.key` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let cert = dir.join("tls.crt");
        let key = dir.join("tls.key");
        std::fs::write(&cert, &self.cert_pem).expect("write cert");
        std::fs::write(&key, &self.key_pem).expect("write key");
        (cert, key)
    }

    /// The `notAfter` of the certificate, Unix seconds.
    pub fn not_after(&self) -> i64 {
        fedauthz::server::tls::not_after(&self.der).expect("certificate parses")
    }
}

/// A rustls client configuration trusting `ca_pem`, presenting `client` if given, offering
/// ALPN `alpn`.
pub fn client_config(ca_pem: &str, client: Option<&Leaf>, alpn: &[&[u8]]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA cert");
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let mut config = match client {
        Some(leaf) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from(leaf.der.clone())],
                PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key PEM"),
            )
            .expect("client cert"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// A gRPC client over TLS to `addr` (server name `localhost`), and a record of every
/// connection it opened: the leaf certificate the server presented on each.
pub struct TlsClient {
    /// The Check client.
    pub client: AuthorizationClient<tonic::transport::Channel>,
    /// One entry per TLS connection made, the server's leaf certificate (DER).
    pub connections: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl TlsClient {
    /// Connects (lazily: the first call makes the connection).
    pub fn new(addr: SocketAddr, ca_pem: &str, client: Option<&Leaf>) -> Self {
        let config = Arc::new(client_config(ca_pem, client, &[b"h2"]));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&connections);
        let connector = tower::service_fn(move |_: http::Uri| {
            let (config, seen) = (Arc::clone(&config), Arc::clone(&seen));
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                let name = ServerName::try_from("localhost").expect("server name");
                let tls = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await?;
                if let Some(leaf) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
                    seen.lock().expect("lock").push(leaf.to_vec());
                }
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        });
        let channel = tonic::transport::Endpoint::from_static("http://localhost")
            .connect_timeout(Duration::from_secs(5))
            .connect_with_connector_lazy(connector);
        Self {
            client: AuthorizationClient::new(channel),
            connections,
        }
    }

    /// How many connections were made.
    pub fn connection_count(&self) -> usize {
        self.connections.lock().expect("lock").len()
    }

    /// The server certificate of the latest connection.
    pub fn last_server_certificate(&self) -> Option<Vec<u8>> {
        self.connections.lock().expect("lock").last().cloned()
    }
}
