//! Process runtime: binds the gRPC, admin and (when configured) HTTP authorization listeners
//! (plaintext, or TLS through [`listener`] with material from [`tls`]), keeps gRPC health in
//! step with key readiness, reloads the configuration and the TLS certificates on SIGHUP and
//! when their files change (keeping the last good ones when new ones are refused), and shuts
//! down gracefully, draining in-flight checks.
//!
//! Depends on [`crate::pipeline`], [`crate::service`] and [`crate::http_authz`] (the transport
//! adapters), [`crate::admin`] and [`crate::watch`].

pub mod listener;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tracing::{error, info, warn};

use crate::admin::{self, AdminState};
use crate::config::{Config, ConfigError, FieldError, load_file};
use crate::metrics::Metrics;
use crate::pipeline::Generation;
use crate::proto::auth::authorization_server::AuthorizationServer;
use crate::service::CheckService;
use crate::service::unix_now;
use crate::watch::FileWatch;
use listener::{ADMIN, GRPC, HTTP, TlsState, WatchedTls};
use tls::Alpn;

/// The gRPC service name health is reported for (besides the server-wide "").
const CHECK_SERVICE_NAME: &str = "envoy.service.auth.v3.Authorization";

/// Why the server could not start (or reload).
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
}

/// Options beyond the configuration itself.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// The file the configuration came from; SIGHUP reloads it. `None`: no reload.
    pub config_path: Option<PathBuf>,
    /// The dev issuer's JWK Set, served on the admin listener (dev mode only).
    pub dev_jwks: Option<String>,
}

/// A server with its listeners bound, ready to [`run`](Server::run).
pub struct Server {
    current: Arc<ArcSwap<Generation>>,
    metrics: Arc<Metrics>,
    keys_changed: Arc<Notify>,
    grpc: TcpListener,
    admin: TcpListener,
    /// `mint.publish.listen`: discovery and the JWKS on a listener of their own.
    publish: Option<TcpListener>,
    /// `server.http.listen`: the HTTP authorization listener.
    http: Option<TcpListener>,
    grpc_tls: Option<(TlsState, WatchedTls)>,
    admin_tls: Option<(TlsState, WatchedTls)>,
    http_tls: Option<(TlsState, WatchedTls)>,
    options: ServeOptions,
}

impl Server {
    /// Compiles `config`, starts its key sources and binds both listeners.
    pub async fn bind(config: Config, options: ServeOptions) -> Result<Self, ServerError> {
        let file = options
            .config_path
            .as_ref()
            .map_or_else(|| "<config>".to_owned(), |p| p.display().to_string());
        let keys_changed = Arc::new(Notify::new());
        let server = config.server.clone();
        // Watched before the first load: a certificate rotated in between is still seen.
        let poll = server.config_poll_interval.get();
        let watch = |tls: &Option<crate::config::TlsConfig>, alpn, prefix| {
            let tls = tls.clone();
            async move {
                match tls {
                    Some(tls) => Some(WatchedTls::new(tls, alpn, prefix, poll).await),
                    None => None,
                }
            }
        };
        let grpc_watch = watch(&server.tls, Alpn::Grpc, "server.tls").await;
        let admin_watch = watch(&server.admin_tls, Alpn::Admin, "server.admin_tls").await;
        let http_tls = server.http.as_ref().and_then(|http| http.tls.clone());
        let http_watch = watch(&http_tls, Alpn::Http, "server.http.tls").await;
        let prepared =
            tls::prepare(&server, unix_now()).map_err(|errors| ConfigError::Invalid {
                file: file.clone(),
                errors,
            })?;
        for warning in &prepared.warnings {
            warn!(field = %warning.path, problem = %warning.message, "transport security warning");
        }
        let generation = Generation::build(config, None, &keys_changed)
            .map_err(|errors| ConfigError::Invalid { file, errors })?;
        let publish_listen = generation
            .config
            .mint
            .as_ref()
            .and_then(|mint| mint.publish.listen);
        let grpc = bind("gRPC", server.grpc_listen).await?;
        let admin = bind("admin", server.admin_listen).await?;
        let publish = match publish_listen {
            Some(addr) => Some(bind("key publication", addr).await?),
            None => None,
        };
        let http = match &server.http {
            Some(http) => Some(bind("HTTP authorization", http.listen).await?),
            None => None,
        };
        let current = Arc::new(ArcSwap::from_pointee(generation));
        let metrics = Arc::new(Metrics::new(Arc::clone(&current)));
        let attach = |name, loaded: Option<tls::LoadedTls>, watch: Option<WatchedTls>| {
            loaded
                .zip(watch)
                .map(|(loaded, watch)| (TlsState::new(name, &loaded, Arc::clone(&metrics)), watch))
        };
        Ok(Self {
            grpc_tls: attach(GRPC, prepared.grpc, grpc_watch),
            admin_tls: attach(ADMIN, prepared.admin, admin_watch),
            http_tls: attach(HTTP, prepared.http, http_watch),
            metrics,
            current,
            keys_changed,
            grpc,
            admin,
            publish,
            http,
            options,
        })
    }

    /// The bound gRPC address (useful with port 0).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The bound HTTP authorization address (`server.http.listen`), if any.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The bound key publication address (`mint.publish.listen`), if any.
    pub fn publish_addr(&self) -> Option<SocketAddr> {
        self.publish.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// A handle that swaps in new configurations while the server runs.
    pub fn reloader(&self) -> Reloader {
        Reloader {
            current: Arc::clone(&self.current),
            keys_changed: Arc::clone(&self.keys_changed),
            metrics: Arc::clone(&self.metrics),
        }
    }

    /// Serves until `shutdown` completes, then stops accepting, reports NOT_SERVING and waits up
    /// to the configured grace period for in-flight checks to finish.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServerError> {
        let Self {
            current,
            metrics,
            keys_changed,
            grpc,
            admin,
            publish,
            http,
            grpc_tls,
            admin_tls,
            http_tls,
            options,
        } = self;
        let grace = current.load().config.server.shutdown_grace.get();
        let (health, health_service) = tonic_health::server::health_reporter();
        set_health(&health, ServingStatus::NotServing).await;

        let readiness = tokio::spawn(track_readiness(
            Arc::clone(&current),
            Arc::clone(&keys_changed),
            health.clone(),
        ));
        let reloader = Reloader {
            current: Arc::clone(&current),
            keys_changed: Arc::clone(&keys_changed),
            metrics: Arc::clone(&metrics),
        };
        let mut reloads = Vec::new();
        // SIGHUP re-reads the TLS files too.
        let tls_hangup = Arc::new(Notify::new());
        let mut start_reloader = |listener: Option<(TlsState, WatchedTls)>| {
            listener.map(|(state, watch)| {
                let reloader = watch.reloader(state.clone());
                reloads.push(tokio::spawn(reloader.run(Arc::clone(&tls_hangup))));
                state
            })
        };
        let grpc_tls = start_reloader(grpc_tls);
        let admin_tls = start_reloader(admin_tls);
        let http_tls = start_reloader(http_tls);
        if options.config_path.is_some()
            || grpc_tls.is_some()
            || admin_tls.is_some()
            || http_tls.is_some()
        {
            reloads.push(tokio::spawn(reload_on_sighup(
                reloader.clone(),
                options.config_path.clone(),
                Arc::clone(&tls_hangup),
            )));
        }
        if let Some(path) = options.config_path.clone() {
            let server = &current.load().config.server;
            if server.watch_config {
                // Fingerprinted before the server says it listens: a change from then on is
                // seen.
                let files = watched_files(&current.load().config, &path);
                let watch = FileWatch::new(files, server.config_poll_interval.get()).await;
                info!(files = watch.paths().count(), file = %path.display(),
                    "watching the configuration for changes");
                reloads.push(tokio::spawn(reload_on_change(reloader, path, watch)));
            }
        }

        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let grpc_addr = display_addr(&grpc);
        let router = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(AuthorizationServer::new(CheckService::new(
                Arc::clone(&current),
                Arc::clone(&metrics),
            )));
        let grpc_server: Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>> =
            match &grpc_tls {
                Some(tls) => Box::pin(
                    router.serve_with_incoming_shutdown(tls.serve(grpc), stopped(stop_rx.clone())),
                ),
                // TCP_NODELAY: a Check answer is a few small HTTP/2 frames; with Nagle they can
                // wait for the caller's delayed ACK (up to 40 ms on Linux).
                None => Box::pin(router.serve_with_incoming_shutdown(
                    TcpIncoming::from(grpc).with_nodelay(Some(true)),
                    stopped(stop_rx.clone()),
                )),
            };
        let mut grpc_task = tokio::spawn(grpc_server);

        let admin_state = AdminState {
            current: Arc::clone(&current),
            metrics: Arc::clone(&metrics),
            dev_jwks: options.dev_jwks.map(Arc::new),
        };
        let admin_addr = display_addr(&admin);
        let admin_router = admin::router(admin_state);
        let admin_task = match &admin_tls {
            Some(tls) => {
                let server = axum::serve(tls.serve(admin), admin_router)
                    .with_graceful_shutdown(stopped(stop_rx));
                tokio::spawn(async move { server.await })
            }
            None => {
                let server =
                    axum::serve(admin, admin_router).with_graceful_shutdown(stopped(stop_rx));
                tokio::spawn(async move { server.await })
            }
        };
        let publish_task = publish.map(|listener| {
            info!(addr = %display_addr(&listener), "serving minting key discovery and JWKS");
            let router =
                crate::publish::router(Arc::clone(&current), crate::publish::Place::OwnListener);
            let server =
                axum::serve(listener, router).with_graceful_shutdown(stopped(stop_tx.subscribe()));
            tokio::spawn(async move { server.await })
        });
        let http_addr = http.as_ref().map(display_addr);
        let mut http_task = http.map(|listener| {
            let router = crate::http_authz::router(Arc::clone(&current), Arc::clone(&metrics));
            let stop = stopped(stop_tx.subscribe());
            match &http_tls {
                Some(tls) => {
                    let service = router
                        .into_make_service_with_connect_info::<crate::caller::CallerConnection>();
                    let server =
                        axum::serve(tls.serve(listener), service).with_graceful_shutdown(stop);
                    tokio::spawn(async move { server.await })
                }
                None => {
                    let service = router
                        .into_make_service_with_connect_info::<crate::caller::CallerConnection>();
                    let server = axum::serve(listener::Plain(listener), service)
                        .with_graceful_shutdown(stop);
                    tokio::spawn(async move { server.await })
                }
            }
        });
        info!(grpc = %grpc_addr, admin = %admin_addr, http = http_addr.as_deref(),
            grpc_tls = grpc_tls.is_some(), admin_tls = admin_tls.is_some(),
            http_tls = http_tls.is_some(), "fedauthz listening");

        let mut grpc_ended = false;
        let result = tokio::select! {
            () = shutdown => Ok(()),
            finished = &mut grpc_task => {
                grpc_ended = true;
                match finished {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(err)) => Err(ServerError::Grpc(err)),
                    Err(join) => {
                        error!(error = %join, "gRPC server task ended unexpectedly");
                        Ok(())
                    }
                }
            }
        };
        info!("shutting down: draining in-flight checks");
        readiness.abort();
        for task in reloads {
            task.abort();
        }
        set_health(&health, ServingStatus::NotServing).await;
        let _ = stop_tx.send(true);
        // Both check listeners drain at once, within one grace period.
        let drained_by = tokio::time::Instant::now() + grace;
        // The gRPC server may already have drained by now; either way say how it ended (a
        // task that ended inside the select above must not be awaited again).
        if grpc_ended {
            info!("all in-flight checks finished");
        } else {
            match tokio::time::timeout_at(drained_by, &mut grpc_task).await {
                Ok(_) => info!("all in-flight checks finished"),
                Err(_) => {
                    warn!(grace = ?grace, "in-flight checks did not finish in time; stopping anyway");
                    grpc_task.abort();
                }
            }
        }
        if let Some(task) = &mut http_task
            && tokio::time::timeout_at(drained_by, &mut *task)
                .await
                .is_err()
        {
            warn!(grace = ?grace, "in-flight HTTP checks did not finish in time; stopping anyway");
            task.abort();
        }
        if tokio::time::timeout(Duration::from_secs(1), admin_task)
            .await
            .is_err()
        {
            warn!("admin listener did not stop in time");
        }
        if let Some(task) = publish_task
            && tokio::time::timeout(Duration::from_secs(1), task)
                .await
                .is_err()
        {
            warn!("key publication listener did not stop in time");
        }
        result
    }
}

fn display_addr(listener: &TcpListener) -> String {
    listener
        .local_addr()
        .map_or_else(|err| format!("<unknown: {err}>"), |addr| addr.to_string())
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { what, addr, source })
}

async fn set_health(health: &tonic_health::server::HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    health.set_service_status(CHECK_SERVICE_NAME, status).await;
}

/// Keeps gRPC health SERVING exactly while every issuer of the current generation has keys.
async fn track_readiness(
    current: Arc<ArcSwap<Generation>>,
    keys_changed: Arc<Notify>,
    health: tonic_health::server::HealthReporter,
) {
    let mut last = None;
    loop {
        let missing = current.load().keys.missing();
        let ready = missing.is_empty();
        if last != Some(ready) {
            if ready {
                info!("ready: every issuer has keys");
                set_health(&health, ServingStatus::Serving).await;
            } else {
                info!(issuers = ?missing, "not ready: waiting for issuer keys");
                set_health(&health, ServingStatus::NotServing).await;
            }
            last = Some(ready);
        }
        keys_changed.notified().await;
    }
}

/// Swaps configurations into a running server.
#[derive(Clone)]
pub struct Reloader {
    current: Arc<ArcSwap<Generation>>,
    keys_changed: Arc<Notify>,
    metrics: Arc<Metrics>,
}

impl Reloader {
    /// Validates and applies `config`. On error the running configuration stays in place.
    /// Listener addresses cannot change without a restart; a change is reported and ignored.
    pub fn apply(&self, config: Config) -> Result<(), Vec<FieldError>> {
        let previous = self.current.load_full();
        // Who the HTTP listener trusts and which endpoints it answers are read per request:
        // those apply at once.
        let listeners = |c: &Config| {
            let mut server = c.server.clone();
            if let Some(http) = server.http.as_mut() {
                http.trusted_proxies.clear();
                http.endpoints.clear();
            }
            server
        };
        if listeners(&config) != listeners(&previous.config) {
            warn!("server.* changed; listener settings take effect only after a restart");
        }
        let listen = |c: &Config| c.mint.as_ref().and_then(|m| m.publish.listen);
        if listen(&config) != listen(&previous.config) {
            warn!("mint.publish.listen changed; it takes effect only after a restart");
        }
        let generation = Generation::build(config, Some(&previous), &self.keys_changed)
            .inspect_err(|_| self.metrics.record_reload(false))?;
        self.current.store(Arc::new(generation));
        self.keys_changed.notify_one();
        self.metrics.record_reload(true);
        Ok(())
    }

    /// The key counters of every issuer of the running configuration, by issuer id (the hook
    /// metrics export).
    pub fn key_stats(&self) -> Vec<(String, crate::keys::KeyStatsSnapshot)> {
        self.current
            .load()
            .keys
            .stores()
            .into_iter()
            .map(|(id, store)| (id.to_owned(), store.stats().snapshot()))
            .collect()
    }

    /// [`reload_file`](Self::reload_file) on a blocking thread: building a configuration
    /// reads files and parses keys, which must not hold up the threads answering checks.
    pub async fn reload_off_the_check_threads(&self, path: &std::path::Path) -> Reload {
        let (reloader, path) = (self.clone(), path.to_path_buf());
        tokio::task::spawn_blocking(move || reloader.reload_file(&path))
            .await
            .unwrap_or_else(|join| {
                error!(error = %join, "configuration reload task failed; keeping the running one");
                Reload::Refused { named: Vec::new() }
            })
    }

    /// Reads `path` and applies it; logs the outcome.
    pub fn reload_file(&self, path: &std::path::Path) -> Reload {
        let file = path.display().to_string();
        let mut named = Vec::new();
        let outcome = load_file(path)
            .inspect_err(|_| self.metrics.record_reload(false))
            .and_then(|config| {
                named = config.files_read_at_build();
                self.apply(config).map_err(|errors| ConfigError::Invalid {
                    file: file.clone(),
                    errors,
                })
            });
        match outcome {
            Ok(()) => {
                info!(file = %file, "configuration reloaded");
                Reload::Applied
            }
            Err(err) => {
                for line in err.to_string().lines() {
                    error!(problem = %line, "configuration refused; keeping the running one");
                }
                Reload::Refused { named }
            }
        }
    }
}

/// How a reload ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// The new configuration runs.
    Applied,
    /// The running configuration stays.
    Refused {
        /// Files the refused configuration names (when it parsed): one may be missing yet.
        named: Vec<PathBuf>,
    },
}

/// What a reload watch follows: the configuration file and the files `config` reads when it is
/// built.
fn watched_files(config: &Config, path: &std::path::Path) -> Vec<PathBuf> {
    let mut files = config.files_read_at_build();
    files.push(path.to_path_buf());
    files
}

/// On SIGHUP, reloads the configuration at `path` (if any) and wakes the TLS reloaders.
#[cfg(unix)]
async fn reload_on_sighup(reloader: Reloader, path: Option<PathBuf>, tls: Arc<Notify>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(stream) => stream,
        Err(err) => {
            warn!(error = %err, "cannot listen for SIGHUP; configuration reload disabled");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        tls.notify_waiters();
        if let Some(path) = &path {
            reloader.reload_off_the_check_threads(path).await;
        }
    }
}

#[cfg(not(unix))]
async fn reload_on_sighup(_reloader: Reloader, _path: Option<PathBuf>, _tls: Arc<Notify>) {}

/// Reloads when the configuration file, or a file the running configuration reads when it is
/// built (secrets, CA bundles), changes content. After each attempt the watched set is the
/// running configuration's (the new one's when it was applied).
async fn reload_on_change(reloader: Reloader, path: PathBuf, mut watch: FileWatch) {
    loop {
        let changed = watch.changed().await;
        for file in &changed {
            info!(file = %file.display(), "file changed; reloading the configuration");
        }
        let outcome = reloader.reload_off_the_check_threads(&path).await;
        let mut files = watched_files(&reloader.current.load().config, &path);
        match outcome {
            Reload::Applied => watch.set_paths(files).await,
            // A refused configuration may name a file that is not there yet (the kubelet
            // updates a ConfigMap and a Secret volume independently): watch its files too, so
            // the reload is retried when they arrive.
            Reload::Refused { named } => {
                files.extend(named);
                watch.set_paths_new_as_missing(files).await;
            }
        }
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            warn!(error = %err, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(err) => {
                warn!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => info!("SIGINT received"),
        () = terminate => info!("SIGTERM received"),
    }
}
