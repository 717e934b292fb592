//! TLS listeners of the server runtime. The accept loop hands each new connection to a
//! handshake task of its own (bounded in time and in number, so a slow or silent client holds
//! up nobody), and passes finished connections, with the caller's verified identity, to tonic
//! or axum. Each handshake takes the listener's TLS configuration as it is at that moment: a
//! reload ([`TlsReloader`]) changes what new handshakes use and never touches open
//! connections.
//!
//! Depends on [`super::tls`], [`crate::watch`], [`crate::caller`] and [`crate::metrics`].

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::{debug, error, info, warn};

use super::tls::{self, Alpn, HandshakeFailure};
use crate::caller::CallerConnection;
use crate::config::TlsConfig;
use crate::metrics::Metrics;
use crate::service::unix_now;
use crate::watch::FileWatch;

/// Longest a handshake may take, from accept to the finished handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once per listener; connections beyond are dropped.
const MAX_PENDING_HANDSHAKES: usize = 1024;
/// Finished connections waiting for the server to take them.
const ACCEPTED_QUEUE: usize = 128;

/// The listener names of metrics and logs.
pub const GRPC: &str = "grpc";
/// See [`GRPC`].
pub const ADMIN: &str = "admin";
/// See [`GRPC`]: the HTTP authorization listener (`server.http`).
pub const HTTP: &str = "http";

/// One listener's TLS configuration as it is now, shared by its accept loop and its reloader.
#[derive(Debug, Clone)]
pub struct TlsState {
    name: &'static str,
    current: Arc<ArcSwap<rustls::ServerConfig>>,
    metrics: Arc<Metrics>,
}

impl TlsState {
    /// The state of listener `name`, starting with `loaded`.
    pub fn new(name: &'static str, loaded: &tls::LoadedTls, metrics: Arc<Metrics>) -> Self {
        metrics.set_tls_certificate_expiry(name, loaded.not_after);
        Self {
            name,
            current: Arc::new(ArcSwap::new(Arc::clone(&loaded.server_config))),
            metrics,
        }
    }

    /// Serves `tcp` through TLS: connections come out of the returned [`Accepted`] once their
    /// handshake finished. The accept loop ends when `Accepted` is dropped.
    pub fn serve(&self, tcp: TcpListener) -> Accepted {
        let local = tcp
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, rx) = mpsc::channel(ACCEPTED_QUEUE);
        tokio::spawn(accept_loop(tcp, self.clone(), tx));
        Accepted { rx, local }
    }
}

/// Finished TLS connections of one listener (a tonic incoming stream, an axum listener).
#[derive(Debug)]
pub struct Accepted {
    rx: mpsc::Receiver<TlsConnection>,
    local: SocketAddr,
}

impl futures_util::Stream for Accepted {
    type Item = Result<TlsConnection, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|next| next.map(Ok))
    }
}

/// For axum, a TLS connection's address is what the handshake established about the caller
/// (`ConnectInfo<CallerConnection>`).
impl axum::serve::Listener for Accepted {
    type Io = TlsConnection;
    type Addr = CallerConnection;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(connection) => {
                let caller = connection.info.clone();
                (connection, caller)
            }
            // The accept loop only ends when this is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(CallerConnection {
            remote_addr: self.local,
            identity: None,
        })
    }
}

/// A plaintext listener for axum whose connections have `TCP_NODELAY` (an answer is one
/// small response; with Nagle it can wait for the caller's delayed ACK) and report their
/// caller as a [`CallerConnection`] without a certificate.
#[derive(Debug)]
pub struct Plain(pub TcpListener);

impl axum::serve::Listener for Plain {
    type Io = TcpStream;
    type Addr = CallerConnection;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, remote_addr)) => {
                    let _ = stream.set_nodelay(true);
                    let caller = CallerConnection {
                        remote_addr,
                        identity: None,
                    };
                    return (stream, caller);
                }
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(CallerConnection {
            remote_addr: self.0.local_addr()?,
            identity: None,
        })
    }
}

/// A connection whose TLS handshake finished, with what it established about the caller.
#[derive(Debug)]
pub struct TlsConnection {
    stream: TlsStream<TcpStream>,
    info: CallerConnection,
}

impl TlsConnection {
    /// The caller's address and verified identity.
    pub fn info(&self) -> &CallerConnection {
        &self.info
    }
}

impl tonic::transport::server::Connected for TlsConnection {
    type ConnectInfo = CallerConnection;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

async fn accept_loop(tcp: TcpListener, state: TlsState, tx: mpsc::Sender<TlsConnection>) {
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    let log = Arc::new(FailureLog::default());
    loop {
        let accepted = tokio::select! {
            accepted = tcp.accept() => accepted,
            () = tx.closed() => return,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors and the like: back off instead of spinning.
                warn!(listener = state.name, error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // A Check answer is a few small HTTP/2 frames; with Nagle they can wait for the
        // caller's delayed ACK.
        let _ = stream.set_nodelay(true);
        let Ok(permit) = Arc::clone(&pending).try_acquire_owned() else {
            state
                .metrics
                .record_tls_handshake_failure(state.name, HandshakeFailure::Overloaded.code());
            log.failed(state.name, remote, HandshakeFailure::Overloaded, None);
            continue;
        };
        let acceptor = TlsAcceptor::from(state.current.load_full());
        let (state, tx, log) = (state.clone(), tx.clone(), Arc::clone(&log));
        tokio::spawn(async move {
            let _permit = permit;
            let outcome = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
            let failure = match outcome {
                Ok(Ok(stream)) => {
                    let identity = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .and_then(|leaf| tls::caller_identity(leaf))
                        .map(Arc::new);
                    match &identity {
                        Some(identity) => info!(listener = state.name, %remote,
                            caller = %identity, "TLS connection from a verified client"),
                        None => debug!(listener = state.name, %remote, "TLS connection"),
                    }
                    let info = CallerConnection {
                        remote_addr: remote,
                        identity,
                    };
                    let _ = tx.send(TlsConnection { stream, info }).await;
                    return;
                }
                Ok(Err(err)) => {
                    let failure = HandshakeFailure::of(&err);
                    log.failed(state.name, remote, failure, Some(&err));
                    failure
                }
                Err(_) => {
                    log.failed(state.name, remote, HandshakeFailure::Timeout, None);
                    HandshakeFailure::Timeout
                }
            };
            state
                .metrics
                .record_tls_handshake_failure(state.name, failure.code());
        });
    }
}

/// Logs handshake failures, at most one line per second per listener (all are counted in
/// the metrics): anyone who reaches the port can fail handshakes.
#[derive(Debug, Default)]
struct FailureLog {
    last: AtomicI64,
    suppressed: AtomicI64,
}

impl FailureLog {
    fn failed(
        &self,
        listener: &'static str,
        remote: SocketAddr,
        failure: HandshakeFailure,
        err: Option<&io::Error>,
    ) {
        let now = unix_now();
        let last = self.last.load(Ordering::Relaxed);
        if last == now
            || self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
        let refused = err.and_then(HandshakeFailure::refused_identity);
        let error = err.map(ToString::to_string);
        warn!(
            listener,
            %remote,
            reason = failure.code(),
            refused_identity = refused.map(tracing::field::display),
            error = error.as_deref(),
            similar_failures_not_logged = suppressed,
            "TLS handshake failed"
        );
    }
}

/// Re-reads one listener's certificate, key and CA files when they change (or on SIGHUP) and
/// swaps the result in for new handshakes. A file that does not load is refused with its path,
/// and the running material stays.
pub struct TlsReloader {
    state: TlsState,
    files: WatchedTls,
}

impl TlsReloader {
    /// Runs until aborted.
    pub async fn run(mut self, sighup: Arc<Notify>) {
        loop {
            let changed: Vec<PathBuf> = tokio::select! {
                changed = self.files.watch.changed() => changed,
                () = sighup.notified() => Vec::new(),
            };
            for file in &changed {
                info!(listener = self.state.name, file = %file.display(),
                    "TLS file changed; reloading the listener's certificate");
            }
            self.reload().await;
        }
    }

    async fn reload(&mut self) {
        let (config, alpn) = (self.files.config.clone(), self.files.alpn);
        let loaded =
            tokio::task::spawn_blocking(move || tls::load(&config, alpn, unix_now())).await;
        let name = self.state.name;
        match loaded {
            Ok(Ok(loaded)) => {
                self.state.current.store(Arc::clone(&loaded.server_config));
                self.state
                    .metrics
                    .set_tls_certificate_expiry(name, loaded.not_after);
                self.state.metrics.record_tls_reload(name, true);
                info!(
                    listener = name,
                    expires = loaded.not_after,
                    "TLS certificate reloaded; new handshakes use it"
                );
                for (file, warning) in &loaded.warnings {
                    warn!(listener = name, field = %format!("{}.{}", self.files.prefix, file.field()),
                        problem = %warning, "TLS warning");
                }
            }
            Ok(Err(err)) => {
                self.state.metrics.record_tls_reload(name, false);
                error!(listener = name, field = %err.at(self.files.prefix).path, problem = %err,
                    "TLS files refused; keeping the running certificate");
            }
            Err(join) => {
                self.state.metrics.record_tls_reload(name, false);
                error!(listener = name, error = %join,
                    "TLS reload task failed; keeping the running certificate");
            }
        }
    }
}

/// A listener's TLS files, watched from before their first load.
pub struct WatchedTls {
    config: TlsConfig,
    alpn: Alpn,
    prefix: &'static str,
    watch: FileWatch,
}

impl WatchedTls {
    /// Starts watching `config`'s files (field paths under `prefix`). Call before the first
    /// load, so that no change between the two is missed.
    pub async fn new(config: TlsConfig, alpn: Alpn, prefix: &'static str, poll: Duration) -> Self {
        let watch = FileWatch::new(config.files(), poll).await;
        Self {
            config,
            alpn,
            prefix,
            watch,
        }
    }

    /// Attaches the watch to the listener's running `state`.
    pub fn reloader(self, state: TlsState) -> TlsReloader {
        TlsReloader { state, files: self }
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Accepted>>
    for CallerConnection
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, Accepted>) -> Self {
        stream.remote_addr().clone()
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Plain>>
    for CallerConnection
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, Plain>) -> Self {
        stream.remote_addr().clone()
    }
}
