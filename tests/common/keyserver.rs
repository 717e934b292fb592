//! A controllable local key server for key-lifecycle integration tests: OIDC discovery
//! documents, JWK Sets, PEM keys, and every way an upstream can misbehave (error statuses,
//! garbage, oversized or slow bodies, redirect loops, downgrades, hang-ups, outages).
//!
//! The server listens on `127.0.0.1:0` (plain HTTP or HTTPS with a fresh test CA), runs on
//! the current tokio runtime and serves each connection with hyper's HTTP/1.1 server. What a
//! path answers is set with [`KeyServer::set`] and can be changed at any time; requests are
//! counted per path. Dropping the [`KeyServer`] stops the listener and closes every open
//! connection, so kept-alive client connections cannot keep reaching it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Bytes, Frame};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

/// What a path answers.
#[derive(Clone, Debug)]
pub enum Reply {
    /// 200 with this body, `content-type: application/json`, plus extra headers (e.g.
    /// `Cache-Control: max-age=60`, `Expires`, `ETag`).
    Json {
        body: String,
        headers: Vec<(String, String)>,
    },
    /// A status code with a short plain-text body.
    Status(u16),
    /// 200 with a body that is not JSON (labelled `application/json`, so only parsing
    /// catches it).
    Garbage,
    /// 200 streaming `n` bytes of valid-looking JSON prefix (`{"keys":[` then spaces),
    /// chunked and without a Content-Length header, so a client must cap by counting.
    Huge(usize),
    /// Waits the duration, then answers the inner reply. The request is counted before the
    /// wait.
    Slow(Duration, Box<Reply>),
    /// 302 to this location (absolute or relative).
    Redirect(String),
    /// Reads the request, then closes the connection without answering.
    Hangup,
}

impl Reply {
    /// 200 with this JSON body and no extra headers.
    pub fn json(body: impl Into<String>) -> Self {
        Reply::Json {
            body: body.into(),
            headers: Vec::new(),
        }
    }

    /// 200 with this JSON body and these extra headers.
    pub fn json_with(body: impl Into<String>, headers: &[(&str, &str)]) -> Self {
        Reply::Json {
            body: body.into(),
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }
}

/// State shared between the handle and the serving tasks.
#[derive(Default)]
struct Shared {
    replies: Mutex<HashMap<String, Reply>>,
    hits: Mutex<HashMap<String, usize>>,
    total: AtomicUsize,
}

/// A local HTTP or HTTPS server whose answers the test controls.
pub struct KeyServer {
    base_url: String,
    ca_pem: Option<String>,
    shared: Arc<Shared>,
    /// Dropping it stops the accept loop and every connection task.
    _stop: watch::Sender<()>,
}

impl KeyServer {
    /// Plain HTTP on 127.0.0.1 (a free port).
    pub async fn http() -> Self {
        Self::start(None).await
    }

    /// HTTPS on 127.0.0.1 (a free port) with a fresh test CA; the certificate names
    /// `127.0.0.1` and `localhost`.
    pub async fn https() -> Self {
        Self::start(Some(test_tls())).await
    }

    async fn start(tls: Option<(tokio_rustls::TlsAcceptor, String)>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind key server");
        let port = listener.local_addr().expect("key server addr").port();
        let shared = Arc::new(Shared::default());
        let (stop_tx, stop_rx) = watch::channel(());
        let (acceptor, ca_pem) = match tls {
            Some((acceptor, pem)) => (Some(acceptor), Some(pem)),
            None => (None, None),
        };
        let scheme = if acceptor.is_some() { "https" } else { "http" };
        tokio::spawn(accept_loop(
            listener,
            acceptor,
            Arc::clone(&shared),
            stop_rx,
        ));
        Self {
            base_url: format!("{scheme}://127.0.0.1:{port}"),
            ca_pem,
            shared,
            _stop: stop_tx,
        }
    }

    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT` (no trailing slash).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The base URL followed by `path` (a leading `/` is added if missing; nothing is
    /// escaped, so templates such as `/{kid}` stay as written).
    pub fn url(&self, path: &str) -> String {
        if path.starts_with('/') {
            format!("{}{path}", self.base_url)
        } else {
            format!("{}/{path}", self.base_url)
        }
    }

    /// PEM of the test CA (HTTPS only).
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// Sets what `path` answers from now on (exact path match, query ignored). Paths never
    /// set answer 404.
    pub fn set(&self, path: &str, reply: Reply) {
        lock(&self.shared.replies).insert(path.to_owned(), reply);
    }

    /// Requests received for `path` so far (counted when the request head arrives, before
    /// any delay), including requests for paths never set.
    pub fn hits(&self, path: &str) -> usize {
        lock(&self.shared.hits).get(path).copied().unwrap_or(0)
    }

    /// Requests received for all paths so far.
    pub fn total_hits(&self) -> usize {
        self.shared.total.load(Ordering::SeqCst)
    }
}

/// A TLS acceptor whose certificate (for 127.0.0.1 and localhost) comes from a fresh test CA,
/// and that CA's PEM.
pub fn test_tls() -> (tokio_rustls::TlsAcceptor, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
    let ca = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf_params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("leaf params");
    let leaf_cert = leaf_params.signed_by(&leaf_key, &ca).expect("leaf cert");
    let tls = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf_cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .expect("server TLS config");
    (
        tokio_rustls::TlsAcceptor::from(Arc::new(tls)),
        ca_cert.pem(),
    )
}

/// An `http://127.0.0.1:PORT` URL where nothing listens (the port was free a moment ago).
pub fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind probe");
    let port = listener.local_addr().expect("probe addr").port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

type Body = BoxBody<Bytes, Infallible>;

async fn accept_loop(
    listener: tokio::net::TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<()>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => return,
        };
        let Ok((tcp, _)) = accepted else { continue };
        let (acceptor, shared, stop) = (acceptor.clone(), Arc::clone(&shared), stop.clone());
        tokio::spawn(async move {
            match acceptor {
                Some(acceptor) => {
                    let handshake = tokio::select! {
                        handshake = acceptor.accept(tcp) => handshake,
                        _ = stopped(stop.clone()) => return,
                    };
                    if let Ok(stream) = handshake {
                        serve(stream, shared, stop).await;
                    }
                }
                None => serve(tcp, shared, stop).await,
            }
        });
    }
}

/// Resolves when the [`KeyServer`] is dropped.
async fn stopped(mut stop: watch::Receiver<()>) {
    while stop.changed().await.is_ok() {}
}

/// Serves one connection until the client closes it, a [`Reply::Hangup`] drops it, or the
/// server stops.
async fn serve<S>(stream: S, shared: Arc<Shared>, stop: watch::Receiver<()>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (hangup_tx, mut hangup_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let path = req.uri().path().to_owned();
        shared.total.fetch_add(1, Ordering::SeqCst);
        *lock(&shared.hits).entry(path.clone()).or_insert(0) += 1;
        let reply = lock(&shared.replies).get(&path).cloned();
        let hangup = hangup_tx.clone();
        async move {
            // Read the whole request before answering (or hanging up).
            let _ = req.into_body().collect().await;
            let response = match reply {
                Some(reply) => respond(reply).await,
                None => Some(status(404)),
            };
            match response {
                Some(response) => Ok::<_, Infallible>(response),
                None => {
                    let _ = hangup.send(());
                    std::future::pending().await
                }
            }
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    // Dropping the connection future closes the socket without writing anything.
    tokio::select! {
        _ = connection => {}
        _ = hangup_rx.recv() => {}
        _ = stopped(stop) => {}
    }
}

/// The response for `reply`, or `None` to hang up.
async fn respond(mut reply: Reply) -> Option<hyper::Response<Body>> {
    while let Reply::Slow(delay, then) = reply {
        tokio::time::sleep(delay).await;
        reply = *then;
    }
    Some(match reply {
        Reply::Slow(..) => unreachable!("delays were resolved above"),
        Reply::Hangup => return None,
        Reply::Json { body, headers } => {
            let mut builder = hyper::Response::builder()
                .status(200)
                .header("content-type", "application/json");
            for (name, value) in headers {
                builder = builder.header(name, value);
            }
            builder.body(full(body)).expect("JSON response")
        }
        Reply::Status(code) => status(code),
        Reply::Garbage => hyper::Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(full("<html><body>this is not JSON {{{</body></html>"))
            .expect("garbage response"),
        Reply::Huge(n) => hyper::Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(huge(n))
            .expect("huge response"),
        Reply::Redirect(location) => hyper::Response::builder()
            .status(302)
            .header("location", location)
            .body(full(""))
            .expect("redirect response"),
    })
}

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).boxed()
}

fn status(code: u16) -> hyper::Response<Body> {
    let status =
        hyper::StatusCode::from_u16(code).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    hyper::Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(full(format!("status {}", status.as_u16())))
        .expect("status response")
}

/// Exactly `n` bytes, `{"keys":[` then spaces, produced lazily in 64 KiB chunks with no
/// length hint (so hyper sends it chunked, without Content-Length).
fn huge(n: usize) -> Body {
    const CHUNK: usize = 64 * 1024;
    let prefix = Bytes::from_static(b"{\"keys\":[");
    let spaces = Bytes::from(vec![b' '; CHUNK]);
    let head = prefix.slice(..n.min(prefix.len()));
    let mut remaining = n - head.len();
    let rest = std::iter::from_fn(move || {
        if remaining == 0 {
            return None;
        }
        let take = remaining.min(CHUNK);
        remaining -= take;
        Some(spaces.slice(..take))
    });
    let chunks = std::iter::once(head)
        .filter(|chunk| !chunk.is_empty())
        .chain(rest)
        .map(|chunk| Ok::<_, Infallible>(Frame::data(chunk)));
    StreamBody::new(tokio_stream::iter(chunks)).boxed()
}
