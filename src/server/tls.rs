//! TLS material of one listener: the certificate chain, its private key and the client CA,
//! read from PEM files, checked (the key matches the certificate, the certificate is in date)
//! and compiled into a rustls `ServerConfig` on aws-lc-rs, the one crypto provider in the
//! binary (reqwest's rustls uses it too). TLS 1.3 and 1.2 only.
//!
//! Client certificates are verified by webpki against the configured CA, then their subject
//! alternative names against the allow-list, inside the handshake: a refused caller never
//! gets a connection. [`HandshakeFailure`] names why a handshake failed.
//!
//! Depends on [`crate::config`], [`crate::caller`] and [`crate::authz`] (its globs).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::x509::X509;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, InconsistentKeys, OtherError,
    RootCertStore, SignatureScheme,
};

use crate::authz::Glob;
use crate::caller::CallerIdentity;
use crate::config::{
    AllowedIdentities, ClientCertificateMode, FieldError, ServerConfig, TlsConfig,
};

/// A certificate expiring sooner than this is warned about.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(7 * 24 * 3600);

/// Largest PEM file read (a chain or CA bundle is a few KiB; this only stops a wrong path
/// pointing at something huge).
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// The application protocols a listener offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// gRPC: HTTP/2 only.
    Grpc,
    /// The admin listener: HTTP/2 or HTTP/1.1 (Prometheus, curl).
    Admin,
    /// The HTTP authorization listener: HTTP/2 or HTTP/1.1 (nginx speaks only HTTP/1.1 to
    /// upstreams).
    Http,
}

impl Alpn {
    fn protocols(self) -> Vec<Vec<u8>> {
        match self {
            Self::Grpc => vec![b"h2".to_vec()],
            Self::Admin | Self::Http => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        }
    }
}

/// Which file of a [`TlsConfig`] a problem concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFile {
    /// `certificate_file`.
    Certificate,
    /// `private_key_file`.
    PrivateKey,
    /// `client_certificates.ca_file`.
    ClientCa,
}

impl TlsFile {
    /// The field path below the listener's TLS settings.
    pub fn field(self) -> &'static str {
        match self {
            Self::Certificate => "certificate_file",
            Self::PrivateKey => "private_key_file",
            Self::ClientCa => "client_certificates.ca_file",
        }
    }
}

/// Why TLS material was refused.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// Which file.
        file: TlsFile,
        /// Its path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file holds no usable PEM block of the kind expected.
    #[error("{}: {detail}", path.display())]
    Pem {
        /// Which file.
        file: TlsFile,
        /// Its path.
        path: PathBuf,
        /// What was expected and what was found.
        detail: String,
    },
    /// A certificate could not be parsed or used.
    #[error("{}: {detail}", path.display())]
    Certificate {
        /// Which file.
        file: TlsFile,
        /// Its path.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The private key is not one rustls can sign with.
    #[error("{}: unsupported private key: {detail}", path.display())]
    UnsupportedKey {
        /// Its path.
        path: PathBuf,
        /// rustls' reason.
        detail: String,
    },
    /// The private key belongs to another certificate.
    #[error("{}: the private key does not match the certificate in {}", key.display(), certificate.display())]
    KeyMismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        certificate: PathBuf,
    },
    /// The leaf certificate is past its `notAfter`.
    #[error("{}: the certificate expired at {not_after}", path.display())]
    Expired {
        /// The certificate file.
        path: PathBuf,
        /// Its `notAfter`, RFC 3339.
        not_after: String,
    },
}

impl TlsError {
    /// The file the problem is in.
    pub fn file(&self) -> TlsFile {
        match self {
            Self::Read { file, .. } | Self::Pem { file, .. } | Self::Certificate { file, .. } => {
                *file
            }
            Self::UnsupportedKey { .. } | Self::KeyMismatch { .. } => TlsFile::PrivateKey,
            Self::Expired { .. } => TlsFile::Certificate,
        }
    }

    /// This error as a field error under `prefix` (`server.tls`).
    pub fn at(&self, prefix: &str) -> FieldError {
        FieldError::new(
            format!("{prefix}.{}", self.file().field()),
            self.to_string(),
        )
    }
}

/// A listener's TLS material, loaded and checked.
#[derive(Debug, Clone)]
pub struct LoadedTls {
    /// What new handshakes use.
    pub server_config: Arc<rustls::ServerConfig>,
    /// The leaf certificate's `notAfter`, Unix seconds.
    pub not_after: i64,
    /// Things that work but deserve attention (a certificate about to expire, a client CA
    /// with no identity allow-list); each with its field below the listener's settings.
    pub warnings: Vec<(TlsFile, String)>,
}

/// Reads and checks the files of `config` at `now` (Unix seconds) and builds the rustls
/// configuration for a listener speaking `alpn`.
pub fn load(config: &TlsConfig, alpn: Alpn, now: i64) -> Result<LoadedTls, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain = read_certificates(TlsFile::Certificate, &config.certificate_file)?;
    let leaf = Leaf::parse(&chain, &config.certificate_file)?;
    let mut warnings = Vec::new();
    if leaf.not_after <= now {
        return Err(TlsError::Expired {
            path: config.certificate_file.clone(),
            not_after: rfc3339(leaf.not_after),
        });
    }
    let left = Duration::from_secs(u64::try_from(leaf.not_after - now).unwrap_or(0));
    if left < EXPIRY_WARNING {
        warnings.push((
            TlsFile::Certificate,
            format!(
                "{}: the certificate expires in {} (at {})",
                config.certificate_file.display(),
                humantime::format_duration(Duration::from_secs(left.as_secs() / 60 * 60)),
                rfc3339(leaf.not_after)
            ),
        ));
    }
    if leaf.not_before > now {
        warnings.push((
            TlsFile::Certificate,
            format!(
                "{}: the certificate is not valid before {}; clients refuse it until then",
                config.certificate_file.display(),
                rfc3339(leaf.not_before)
            ),
        ));
    }
    let key = read_private_key(&config.private_key_file)?;
    let certified = certified_key(chain, key, &provider, config)?;

    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|err| TlsError::Certificate {
            file: TlsFile::Certificate,
            path: config.certificate_file.clone(),
            detail: format!("cannot set up TLS 1.2/1.3: {err}"),
        })?;
    let builder = match &config.client_certificates {
        None => builder.with_no_client_auth(),
        Some(client) => {
            if client.allowed_identities.is_empty() {
                warnings.push((
                    TlsFile::ClientCa,
                    format!(
                        "{}: no allowed_identities: any certificate this CA signed is accepted",
                        client.ca_file.display()
                    ),
                ));
            }
            let roots = read_roots(&client.ca_file)?;
            let webpki =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider));
            let webpki = match client.mode {
                ClientCertificateMode::Required => webpki,
                ClientCertificateMode::Optional => webpki.allow_unauthenticated(),
            };
            let inner = webpki.build().map_err(|err| TlsError::Certificate {
                file: TlsFile::ClientCa,
                path: client.ca_file.clone(),
                detail: format!("cannot verify client certificates with this CA: {err}"),
            })?;
            builder.with_client_cert_verifier(Arc::new(AllowListVerifier {
                inner,
                allowed: IdentityAllowList::new(&client.allowed_identities),
            }))
        }
    };
    let resolver: Arc<dyn ResolvesServerCert> = Arc::new(SingleCertAndKey::from(certified));
    let mut server_config = builder.with_cert_resolver(resolver);
    server_config.alpn_protocols = alpn.protocols();
    Ok(LoadedTls {
        server_config: Arc::new(server_config),
        not_after: leaf.not_after,
        warnings,
    })
}

/// The TLS material of both listeners, as the server starts with it.
#[derive(Debug, Default)]
pub struct Prepared {
    /// The gRPC listener's (`None`: plaintext).
    pub grpc: Option<LoadedTls>,
    /// The admin listener's (`None`: plaintext).
    pub admin: Option<LoadedTls>,
    /// The HTTP authorization listener's (`None`: plaintext, or no such listener).
    pub http: Option<LoadedTls>,
    /// Every warning, with its field path.
    pub warnings: Vec<FieldError>,
}

/// Loads the TLS material `server` names and gathers the transport warnings; every problem is
/// reported, each at its field.
pub fn prepare(server: &ServerConfig, now: i64) -> Result<Prepared, Vec<FieldError>> {
    let mut prepared = Prepared::default();
    let mut errors = Vec::new();
    let http_tls = server.http.as_ref().and_then(|http| http.tls.clone());
    for (prefix, config, alpn, slot) in [
        ("server.tls", &server.tls, Alpn::Grpc, &mut prepared.grpc),
        (
            "server.admin_tls",
            &server.admin_tls,
            Alpn::Admin,
            &mut prepared.admin,
        ),
        ("server.http.tls", &http_tls, Alpn::Http, &mut prepared.http),
    ] {
        let Some(config) = config else { continue };
        match load(config, alpn, now) {
            Ok(loaded) => {
                prepared
                    .warnings
                    .extend(loaded.warnings.iter().map(|(file, text)| {
                        FieldError::new(format!("{prefix}.{}", file.field()), text)
                    }));
                *slot = Some(loaded);
            }
            Err(err) => errors.push(err.at(prefix)),
        }
    }
    if server.tls.is_none() && !server.mesh_mtls && !server.grpc_listen.ip().is_loopback() {
        prepared.warnings.push(FieldError::new(
            "server.grpc_listen",
            format!(
                "{} is not a loopback address and the listener is plaintext: anyone who reaches \
                 it can ask for decisions and read identities. Set server.tls, or \
                 server.mesh_mtls: true where a service mesh (Istio) carries mTLS to it",
                server.grpc_listen
            ),
        ));
    }
    if let Some(http) = &server.http
        && http.tls.is_none()
        && !server.mesh_mtls
        && !http.listen.ip().is_loopback()
    {
        prepared.warnings.push(FieldError::new(
            "server.http.listen",
            format!(
                "{} is not a loopback address and the listener is plaintext: credentials and \
                 identities cross the network in the clear. Set server.http.tls, or \
                 server.mesh_mtls: true where a service mesh carries mTLS to it",
                http.listen
            ),
        ));
    }
    if errors.is_empty() {
        Ok(prepared)
    } else {
        Err(errors)
    }
}

fn read_pem(file: TlsFile, path: &Path) -> Result<Vec<u8>, TlsError> {
    crate::files::read_bounded(path, MAX_PEM_BYTES).map_err(|err| match err {
        crate::files::ReadError::Io(source) => TlsError::Read {
            file,
            path: path.to_path_buf(),
            source,
        },
        crate::files::ReadError::TooLarge(_) => TlsError::Pem {
            file,
            path: path.to_path_buf(),
            detail: format!("{err}; not a PEM certificate or key"),
        },
    })
}

fn read_certificates(file: TlsFile, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_pem(file, path)?;
    let pem = |detail: String| TlsError::Pem {
        file,
        path: path.to_path_buf(),
        detail,
    };
    let certificates = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| pem(format!("not valid PEM: {err}")))?;
    if certificates.is_empty() {
        return Err(pem("no PEM CERTIFICATE block".into()));
    }
    Ok(certificates)
}

fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_pem(TlsFile::PrivateKey, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|err| TlsError::Pem {
        file: TlsFile::PrivateKey,
        path: path.to_path_buf(),
        detail: match err {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "no PEM private key block (PRIVATE KEY, \
                EC PRIVATE KEY or RSA PRIVATE KEY)"
                    .into()
            }
            other => format!("not a valid PEM private key: {other}"),
        },
    })
}

fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    provider: &CryptoProvider,
    config: &TlsConfig,
) -> Result<CertifiedKey, TlsError> {
    let signing_key =
        provider
            .key_provider
            .load_private_key(key)
            .map_err(|err| TlsError::UnsupportedKey {
                path: config.private_key_file.clone(),
                detail: err.to_string(),
            })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch {
                key: config.private_key_file.clone(),
                certificate: config.certificate_file.clone(),
            })
        }
        Err(err) => Err(TlsError::Certificate {
            file: TlsFile::Certificate,
            path: config.certificate_file.clone(),
            detail: format!("cannot check that the private key matches the certificate: {err}"),
        }),
    }
}

fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let certificates = read_certificates(TlsFile::ClientCa, path)?;
    let mut roots = RootCertStore::empty();
    for (index, certificate) in certificates.into_iter().enumerate() {
        roots
            .add(certificate)
            .map_err(|err| TlsError::Certificate {
                file: TlsFile::ClientCa,
                path: path.to_path_buf(),
                detail: format!("CA certificate #{} cannot be used: {err}", index + 1),
            })?;
    }
    Ok(roots)
}

/// What start-up and reload read from the leaf certificate.
struct Leaf {
    not_before: i64,
    not_after: i64,
}

impl Leaf {
    fn parse(chain: &[CertificateDer<'_>], path: &Path) -> Result<Self, TlsError> {
        let bad = |detail: String| TlsError::Certificate {
            file: TlsFile::Certificate,
            path: path.to_path_buf(),
            detail,
        };
        let first = chain.first().ok_or_else(|| bad("no certificate".into()))?;
        let x509 =
            X509::from_der(first).map_err(|err| bad(format!("not an X.509 certificate: {err}")))?;
        let time = |t: &Asn1TimeRef| {
            unix_seconds(t).ok_or_else(|| bad("unreadable validity dates".into()))
        };
        Ok(Self {
            not_before: time(x509.not_before())?,
            not_after: time(x509.not_after())?,
        })
    }
}

/// The validity `notAfter` of a DER certificate, Unix seconds.
pub fn not_after(certificate: &[u8]) -> Option<i64> {
    let x509 = X509::from_der(certificate).ok()?;
    unix_seconds(x509.not_after())
}

fn unix_seconds(time: &Asn1TimeRef) -> Option<i64> {
    let epoch = Asn1Time::from_unix(0).ok()?;
    let diff = epoch.diff(time).ok()?;
    Some(i64::from(diff.days) * 86_400 + i64::from(diff.secs))
}

fn rfc3339(unix: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap_or(0));
    humantime::format_rfc3339_seconds(at).to_string()
}

/// The subject alternative names of a DER certificate (`None`: it does not parse).
pub fn caller_identity(certificate: &[u8]) -> Option<CallerIdentity> {
    let x509 = X509::from_der(certificate).ok()?;
    let mut identity = CallerIdentity::default();
    for name in x509.subject_alt_names().iter().flatten() {
        if let Some(uri) = name.uri() {
            identity.uris.push(uri.to_owned());
        } else if let Some(dns) = name.dnsname() {
            identity.dns_names.push(dns.to_ascii_lowercase());
        }
    }
    Some(identity)
}

/// The client identities a listener accepts.
#[derive(Debug, Clone)]
pub struct IdentityAllowList {
    uris: Vec<Glob>,
    dns_names: Vec<Glob>,
}

impl IdentityAllowList {
    /// Compiles `config`; DNS entries compare case-insensitively.
    pub fn new(config: &AllowedIdentities) -> Self {
        Self {
            uris: config.uris.iter().map(|u| Glob::new(u)).collect(),
            dns_names: config
                .dns_names
                .iter()
                .map(|d| Glob::new(&d.to_ascii_lowercase()))
                .collect(),
        }
    }

    /// Whether `identity` may connect: an empty list admits every identity.
    pub fn allows(&self, identity: &CallerIdentity) -> bool {
        (self.uris.is_empty() && self.dns_names.is_empty())
            || identity
                .uris
                .iter()
                .any(|uri| self.uris.iter().any(|g| g.matches(uri)))
            || identity
                .dns_names
                .iter()
                .any(|dns| self.dns_names.iter().any(|g| g.matches(dns)))
    }
}

/// A client certificate that chains to the CA but names no allowed identity.
#[derive(Debug, thiserror::Error)]
#[error("client certificate identity {identity} is not allowed")]
pub struct IdentityNotAllowed {
    /// The certificate's names.
    pub identity: CallerIdentity,
}

/// webpki's chain verification, then the identity allow-list.
#[derive(Debug)]
struct AllowListVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: IdentityAllowList,
}

impl ClientCertVerifier for AllowListVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let identity = caller_identity(end_entity).ok_or(rustls::Error::InvalidCertificate(
            CertificateError::BadEncoding,
        ))?;
        if self.allowed.allows(&identity) {
            Ok(verified)
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(IdentityNotAllowed { identity })),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Why a TLS handshake failed: the label of `fedauthz_tls_handshake_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandshakeFailure {
    /// mTLS required and the caller sent no certificate.
    NoClientCertificate,
    /// The client certificate does not chain to the configured CA (or is malformed).
    ClientCertificateUntrusted,
    /// The client certificate is expired or not yet valid.
    ClientCertificateExpired,
    /// The client certificate is valid but names no allowed identity.
    ClientIdentityNotAllowed,
    /// The caller refused our certificate or the handshake (it sent an alert), e.g. it does
    /// not trust the server certificate.
    RejectedByClient,
    /// No TLS version, cipher suite, group or application protocol in common.
    Incompatible,
    /// Not TLS, or TLS the peer got wrong.
    ProtocolError,
    /// The handshake did not finish in time.
    Timeout,
    /// The connection closed or failed during the handshake.
    ConnectionClosed,
    /// Too many handshakes were in progress; the connection was dropped.
    Overloaded,
}

impl HandshakeFailure {
    /// The metric label.
    pub fn code(self) -> &'static str {
        match self {
            Self::NoClientCertificate => "no_client_certificate",
            Self::ClientCertificateUntrusted => "client_certificate_untrusted",
            Self::ClientCertificateExpired => "client_certificate_expired",
            Self::ClientIdentityNotAllowed => "client_identity_not_allowed",
            Self::RejectedByClient => "rejected_by_client",
            Self::Incompatible => "incompatible",
            Self::ProtocolError => "protocol_error",
            Self::Timeout => "timeout",
            Self::ConnectionClosed => "connection_closed",
            Self::Overloaded => "overloaded",
        }
    }

    /// Classifies the error tokio-rustls' accept returned.
    pub fn of(err: &std::io::Error) -> Self {
        let Some(tls) = err
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        else {
            return Self::ConnectionClosed;
        };
        match tls {
            rustls::Error::NoCertificatesPresented => Self::NoClientCertificate,
            rustls::Error::InvalidCertificate(CertificateError::Other(other))
                if other.0.downcast_ref::<IdentityNotAllowed>().is_some() =>
            {
                Self::ClientIdentityNotAllowed
            }
            rustls::Error::InvalidCertificate(
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. },
            ) => Self::ClientCertificateExpired,
            rustls::Error::InvalidCertificate(_) => Self::ClientCertificateUntrusted,
            rustls::Error::AlertReceived(_) => Self::RejectedByClient,
            rustls::Error::PeerIncompatible(_) | rustls::Error::NoApplicationProtocol => {
                Self::Incompatible
            }
            _ => Self::ProtocolError,
        }
    }

    /// The identity a refused client certificate named, when that was the reason.
    pub fn refused_identity(err: &std::io::Error) -> Option<&CallerIdentity> {
        match err.get_ref()?.downcast_ref::<rustls::Error>()? {
            rustls::Error::InvalidCertificate(CertificateError::Other(other)) => other
                .0
                .downcast_ref::<IdentityNotAllowed>()
                .map(|refused| &refused.identity),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};

    const NOW: i64 = 1_800_000_000;
    const DAY: i64 = 86_400;

    fn at(unix: i64) -> time::OffsetDateTime {
        time::OffsetDateTime::from_unix_timestamp(unix).unwrap()
    }

    /// A certificate for `names` valid from `from` to `until`, signed by a fresh CA; returns the
    /// certificate PEM, its key PEM and the CA PEM.
    fn certificate(names: &[&str], from: i64, until: i64, key: &KeyPair) -> (String, String) {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.contains("://") {
                true => SanType::URI((*n).try_into().unwrap()),
                false => SanType::DnsName((*n).try_into().unwrap()),
            })
            .collect();
        params.not_before = at(from);
        params.not_after = at(until);
        let cert = params.signed_by(key, &issuer).unwrap();
        (cert.pem(), ca_cert.pem())
    }

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Self {
            Self {
                dir: tempfile::tempdir().unwrap(),
            }
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        }

        fn config(&self, cert: &str, key: &str) -> TlsConfig {
            TlsConfig {
                certificate_file: self.write("tls.crt", cert),
                private_key_file: self.write("tls.key", key),
                client_certificates: None,
            }
        }
    }

    #[test]
    fn keys_in_pkcs8_sec1_and_pkcs1_load_and_the_expiry_is_read() {
        let files = Files::new();
        let ec = KeyPair::generate().unwrap();
        let (cert, _) = certificate(&["fedauthz.svc"], NOW - DAY, NOW + 90 * DAY, &ec);
        let pkcs8 = ec.serialize_pem();
        let loaded = load(&files.config(&cert, &pkcs8), Alpn::Grpc, NOW).unwrap();
        assert_eq!(loaded.not_after, NOW + 90 * DAY);
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        assert_eq!(loaded.server_config.alpn_protocols, [b"h2".to_vec()]);

        // The same P-256 key as SEC1, through OpenSSL.
        let sec1 = openssl::ec::EcKey::private_key_from_der(
            &openssl::pkey::PKey::private_key_from_pkcs8(&ec.serialize_der())
                .unwrap()
                .ec_key()
                .unwrap()
                .private_key_to_der()
                .unwrap(),
        )
        .unwrap()
        .private_key_to_pem()
        .unwrap();
        let sec1 = String::from_utf8(sec1).unwrap();
        assert!(sec1.starts_with("-----BEGIN EC PRIVATE KEY-----"));
        load(&files.config(&cert, &sec1), Alpn::Admin, NOW).unwrap();

        let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
        let pkcs1 = String::from_utf8(rsa.private_key_to_pem().unwrap()).unwrap();
        assert!(pkcs1.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        let rsa_pair = KeyPair::try_from(
            openssl::pkey::PKey::from_rsa(rsa)
                .unwrap()
                .private_key_to_pkcs8()
                .unwrap()
                .as_slice(),
        )
        .unwrap();
        let (rsa_cert, _) = certificate(&["fedauthz.svc"], NOW - DAY, NOW + DAY * 30, &rsa_pair);
        let loaded = load(&files.config(&rsa_cert, &pkcs1), Alpn::Admin, NOW).unwrap();
        assert_eq!(
            loaded.server_config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }

    #[test]
    fn file_problems_name_the_file_and_the_field() {
        let files = Files::new();
        let key = KeyPair::generate().unwrap();
        let (cert, _) = certificate(&["a.svc"], NOW - DAY, NOW + 90 * DAY, &key);
        let good = files.config(&cert, &key.serialize_pem());
        let problem = |config: &TlsConfig| {
            let err = load(config, Alpn::Grpc, NOW).unwrap_err();
            err.at("server.tls").to_string()
        };

        let mut missing = good.clone();
        missing.certificate_file = files.dir.path().join("nope.crt");
        let text = problem(&missing);
        assert!(text.starts_with("server.tls.certificate_file: "), "{text}");
        assert!(text.contains("nope.crt: cannot read"), "{text}");

        let not_pem = TlsConfig {
            certificate_file: files.write("garbage.crt", "not a certificate"),
            ..good.clone()
        };
        assert!(problem(&not_pem).ends_with("garbage.crt: no PEM CERTIFICATE block"));

        let key_as_cert = TlsConfig {
            private_key_file: files.write("cert-as-key.pem", &cert),
            ..good.clone()
        };
        let text = problem(&key_as_cert);
        assert!(text.starts_with("server.tls.private_key_file: "), "{text}");
        assert!(text.contains("no PEM private key block"), "{text}");

        let other = KeyPair::generate().unwrap();
        let mismatch = TlsConfig {
            private_key_file: files.write("other.key", &other.serialize_pem()),
            ..good.clone()
        };
        let text = problem(&mismatch);
        assert!(
            text.starts_with("server.tls.private_key_file: ")
                && text.contains("other.key: the private key does not match the certificate in")
                && text.ends_with("tls.crt"),
            "{text}"
        );

        let mut bad_ca = good.clone();
        bad_ca.client_certificates = Some(crate::config::ClientCertificates {
            ca_file: files.write(
                "ca.crt",
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            ),
            mode: ClientCertificateMode::Required,
            allowed_identities: AllowedIdentities::default(),
        });
        let text = problem(&bad_ca);
        assert!(
            text.starts_with("server.tls.client_certificates.ca_file: ")
                && text.contains("ca.crt: CA certificate #1 cannot be used"),
            "{text}"
        );
    }

    #[test]
    fn expired_certificates_are_refused_and_ones_about_to_expire_warned_about() {
        let files = Files::new();
        let key = KeyPair::generate().unwrap();
        let pem = key.serialize_pem();

        let (expired, _) = certificate(&["a.svc"], NOW - 90 * DAY, NOW - 1, &key);
        let err = load(&files.config(&expired, &pem), Alpn::Grpc, NOW).unwrap_err();
        assert!(matches!(err, TlsError::Expired { .. }));
        assert_eq!(err.at("server.tls").path, "server.tls.certificate_file");
        assert!(
            err.to_string().contains("expired at 2027-01-15T07:59:59Z"),
            "{err}"
        );

        let (soon, _) = certificate(&["a.svc"], NOW - 90 * DAY, NOW + 3 * DAY, &key);
        let loaded = load(&files.config(&soon, &pem), Alpn::Grpc, NOW).unwrap();
        assert_eq!(loaded.warnings.len(), 1);
        assert_eq!(loaded.warnings[0].0, TlsFile::Certificate);
        assert!(
            loaded.warnings[0].1.contains("expires in 3days"),
            "{:?}",
            loaded.warnings
        );

        let (later, _) = certificate(&["a.svc"], NOW + DAY, NOW + 90 * DAY, &key);
        let loaded = load(&files.config(&later, &pem), Alpn::Grpc, NOW).unwrap();
        assert!(
            loaded.warnings[0].1.contains("not valid before"),
            "{:?}",
            loaded.warnings
        );
    }

    #[test]
    fn a_client_ca_without_an_identity_allow_list_is_warned_about() {
        let files = Files::new();
        let key = KeyPair::generate().unwrap();
        let (cert, ca) = certificate(&["a.svc"], NOW - DAY, NOW + 90 * DAY, &key);
        let mut config = files.config(&cert, &key.serialize_pem());
        config.client_certificates = Some(crate::config::ClientCertificates {
            ca_file: files.write("ca.crt", &ca),
            mode: ClientCertificateMode::Required,
            allowed_identities: AllowedIdentities::default(),
        });
        let loaded = load(&config, Alpn::Grpc, NOW).unwrap();
        assert_eq!(loaded.warnings.len(), 1);
        assert_eq!(loaded.warnings[0].0, TlsFile::ClientCa);
        assert!(
            loaded.warnings[0]
                .1
                .contains("any certificate this CA signed")
        );
    }

    #[test]
    fn the_identity_allow_list_matches_uri_and_dns_sans() {
        let list = IdentityAllowList::new(&AllowedIdentities {
            uris: vec![
                "spiffe://cluster.local/ns/gateways/sa/envoy".into(),
                "spiffe://cluster.local/ns/edge/sa/*".into(),
            ],
            dns_names: vec!["Envoy.Example.COM".into(), "*.mesh.internal".into()],
        });
        let id = |uris: &[&str], dns: &[&str]| CallerIdentity {
            uris: uris.iter().map(|s| (*s).to_owned()).collect(),
            dns_names: dns.iter().map(|s| (*s).to_owned()).collect(),
        };
        assert!(list.allows(&id(&["spiffe://cluster.local/ns/gateways/sa/envoy"], &[])));
        assert!(list.allows(&id(&["spiffe://cluster.local/ns/edge/sa/proxy"], &[])));
        assert!(list.allows(&id(&[], &["envoy.example.com"])));
        assert!(list.allows(&id(&[], &["a.mesh.internal"])));
        assert!(!list.allows(&id(&["spiffe://cluster.local/ns/gateways/sa/other"], &[])));
        // A URI entry never matches a DNS name with the same text, and the other way round.
        assert!(!list.allows(&id(&[], &["spiffe://cluster.local/ns/gateways/sa/envoy"])));
        assert!(!list.allows(&id(&["envoy.example.com"], &[])));
        assert!(!list.allows(&id(&[], &[])));
        assert!(IdentityAllowList::new(&AllowedIdentities::default()).allows(&id(&[], &[])));
    }

    #[test]
    fn caller_identity_reads_uri_and_dns_sans() {
        let key = KeyPair::generate().unwrap();
        let (pem, _) = certificate(
            &["spiffe://td/ns/gw/sa/envoy", "Envoy.GW.svc"],
            NOW - DAY,
            NOW + DAY,
            &key,
        );
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let identity = caller_identity(&der).unwrap();
        assert_eq!(identity.uris, ["spiffe://td/ns/gw/sa/envoy"]);
        assert_eq!(identity.dns_names, ["envoy.gw.svc"]);
        assert_eq!(identity.to_string(), "spiffe://td/ns/gw/sa/envoy");
        assert_eq!(not_after(&der), Some(NOW + DAY));
        assert!(caller_identity(b"not a certificate").is_none());
    }

    #[test]
    fn a_plaintext_listener_off_loopback_is_warned_about_unless_a_mesh_carries_mtls() {
        let warnings = |yaml: &str| {
            let server: ServerConfig = serde_json::from_value(
                serde_json::to_value(serde_saphyr::from_str::<serde_json::Value>(yaml).unwrap())
                    .unwrap(),
            )
            .unwrap();
            prepare(&server, NOW)
                .unwrap()
                .warnings
                .into_iter()
                .map(|w| w.path)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            warnings("grpc_listen: 0.0.0.0:50051"),
            ["server.grpc_listen"]
        );
        assert!(warnings("grpc_listen: 127.0.0.1:50051").is_empty());
        assert!(warnings("grpc_listen: '[::1]:50051'").is_empty());
        assert!(warnings("grpc_listen: 0.0.0.0:50051\nmesh_mtls: true").is_empty());
    }
}
