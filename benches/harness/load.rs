//! `fedauthz-load`: the load generator of the harness (issue 7; driven by `scripts/bench`).
//!
//! No standard tool sends gRPC `Check` requests with a rotating pool of tokens at fixed rates,
//! so this one does. Bench-only (feature `bench-harness`); never shipped.
//!
//! Subcommands:
//! - `mint`: key pairs, fedauthz configs (a committed base file + generated issuers with inline
//!   keys), Envoy's JWKS, token files (one token per line) and a gRPC-framed CheckRequest body
//!   for h2load.
//! - `run`: one measurement. Target `grpc` (Check over h2 with tonic, N connections) or `http`
//!   (GET through Envoy, HTTP/1.1 keep-alive, N connections). Load `--rate 0`: closed loop at
//!   saturation; `--rate R`: open loop, request i is due at `start + i/R` and its latency is
//!   measured from that intended time, so a stalled server is charged for the requests it delayed
//!   (no coordinated omission); requests leave within microseconds of their due time. Latencies go into an HDR histogram. Every answer is checked:
//!   anything but OK (gRPC) or the expected status (HTTP) is counted and reported by kind.
//!   Prints one JSON line and one human line (starting with `#`).
//!
//! Tokens are never printed.

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fedauthz::proto::auth::attribute_context::{HttpRequest, Request as AttrRequest};
use fedauthz::proto::auth::authorization_client::AuthorizationClient;
use fedauthz::proto::auth::check_response::HttpResponse;
use fedauthz::proto::auth::{AttributeContext, CheckRequest, CheckResponse};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use josekit::jwk::KeyPair as _;
use josekit::jws::{ES256, JwsSigner as _};
use prost::Message as _;
use serde_json::{Value, json};
use tonic::transport::{Channel, Endpoint};

const USAGE: &str = "\
fedauthz-load mint --out DIR [--base FILE] [--pool N] [--unique N]
                   [--multi-base FILE] [--multi-issuers N] [--multi-tokens N]
fedauthz-load run --target grpc|http --addr HOST:PORT --tokens FILE
                  [--connections N] [--concurrency N] [--rate RPS] [--duration SECS]
                  [--warmup SECS] [--requests N] [--threads N] [--path P] [--host H]
                  [--expect-status CODE] [--offset N] [--label TEXT]
                  [--ca FILE [--server-name NAME]]   (gRPC over TLS, trusting FILE)
                  [--credential-header NAME]   (each token alone in NAME, e.g. x-api-key)";

/// The audience every bench token carries and every bench config accepts.
const AUDIENCE: &str = "bench-api";

fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return Ok(());
    }
    let command = args.remove(0);
    let flags = Flags::parse(args)?;
    match command.as_str() {
        "mint" => mint(&flags),
        "run" => run(&flags),
        other => bail!("unknown subcommand {other:?}\n{USAGE}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Flags: `--name value` pairs.

struct Flags(HashMap<String, String>);

impl Flags {
    fn parse(args: Vec<String>) -> anyhow::Result<Self> {
        let mut map = HashMap::new();
        let mut it = args.into_iter();
        while let Some(name) = it.next() {
            let Some(name) = name.strip_prefix("--") else {
                bail!("expected --flag, got {name:?}\n{USAGE}");
            };
            let value = it
                .next()
                .with_context(|| format!("--{name} needs a value"))?;
            map.insert(name.to_owned(), value);
        }
        Ok(Self(map))
    }

    fn str(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    fn required(&self, name: &str) -> anyhow::Result<&str> {
        self.str(name)
            .with_context(|| format!("--{name} is required\n{USAGE}"))
    }

    fn num<T: std::str::FromStr>(&self, name: &str, default: T) -> anyhow::Result<T>
    where
        T::Err: std::fmt::Display,
    {
        match self.str(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|e| anyhow::anyhow!("--{name} {v:?}: {e}")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// mint

/// One ES256 issuer: its key and the strings that name it.
struct BenchIssuer {
    id: String,
    iss: String,
    kid: String,
    signer: josekit::jws::alg::ecdsa::EcdsaJwsSigner,
    public_jwks: Value,
}

impl BenchIssuer {
    fn new(index: usize) -> anyhow::Result<Self> {
        let pair = ES256.generate_key_pair()?;
        let kid = format!("bench-key-{index}");
        let signer = ES256.signer_from_jwk(&pair.to_jwk_private_key())?;
        let mut public = pair.to_jwk_public_key().as_ref().clone();
        public.insert("kid".into(), kid.clone().into());
        public.insert("alg".into(), "ES256".into());
        public.insert("use".into(), "sig".into());
        Ok(Self {
            id: format!("bench-{index}"),
            iss: format!("https://bench-{index}.issuer.test"),
            kid,
            signer,
            public_jwks: json!({ "keys": [Value::Object(public)] }),
        })
    }

    /// A token for subject number `n`, valid for two hours from `now`. ~500 bytes, close to the
    /// ES256 tokens of the stack microbenchmarks.
    fn token(&self, n: usize, now: i64) -> anyhow::Result<String> {
        let header = json!({ "alg": "ES256", "kid": self.kid, "typ": "JWT" });
        let claims = json!({
            "iss": self.iss,
            "sub": format!("user-{n:08}"),
            "aud": AUDIENCE,
            "iat": now,
            "nbf": now,
            "exp": now + 7200,
            "jti": format!("{}-{n}", self.id),
            "scope": "orders:read orders:write",
            "email": format!("user-{n:08}@bench.test"),
        });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self.signer.sign(input.as_bytes())?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }

    fn config_yaml(&self) -> String {
        format!(
            "  - id: {}\n    issuer: {}\n    audiences: [{AUDIENCE}]\n    algorithms: [ES256]\n    \
             max_lifetime: 3h\n    keys:\n      jwks: {}\n",
            self.id, self.iss, self.public_jwks
        )
    }
}

/// Signs `count` tokens, issuer `i % issuers.len()` for token i, on every core.
fn mint_tokens(issuers: &[BenchIssuer], count: usize, now: i64) -> anyhow::Result<Vec<String>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = count.div_ceil(threads).max(1);
    let mut tokens = Vec::with_capacity(count);
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let handles: Vec<_> = (0..count)
            .step_by(chunk)
            .map(|start| {
                scope.spawn(move || -> anyhow::Result<Vec<String>> {
                    (start..(start + chunk).min(count))
                        .map(|n| issuers[n % issuers.len()].token(n, now))
                        .collect()
                })
            })
            .collect();
        for handle in handles {
            let part = handle
                .join()
                .map_err(|_| anyhow::anyhow!("a minting thread panicked"))??;
            tokens.extend(part);
        }
        Ok(())
    })?;
    Ok(tokens)
}

fn write_lines(path: &Path, lines: &[String]) -> anyhow::Result<()> {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

/// Base file (top-level settings) + generated `issuers:` section.
fn write_config(base: &Path, issuers: &[BenchIssuer], out: &Path) -> anyhow::Result<()> {
    let mut text = std::fs::read_to_string(base)
        .with_context(|| format!("read base config {}", base.display()))?;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str("# generated by fedauthz-load mint: issuers with inline ES256 keys\nissuers:\n");
    for issuer in issuers {
        text.push_str(&issuer.config_yaml());
    }
    std::fs::write(out, text).with_context(|| format!("write {}", out.display()))
}

fn mint(flags: &Flags) -> anyhow::Result<()> {
    let out = PathBuf::from(flags.required("out")?);
    std::fs::create_dir_all(&out)?;
    let base = PathBuf::from(
        flags
            .str("base")
            .unwrap_or("benches/harness/fedauthz-bench.yaml"),
    );
    let pool: usize = flags.num("pool", 64)?;
    let unique: usize = flags.num("unique", 100_000)?;
    let multi_base = PathBuf::from(
        flags
            .str("multi-base")
            .unwrap_or("benches/harness/fedauthz-50-issuers.yaml"),
    );
    let multi_issuers: usize = flags.num("multi-issuers", 50)?;
    let multi_tokens: usize = flags.num("multi-tokens", 100_000)?;
    let now = fedauthz::service::unix_now();
    let started = Instant::now();

    // One issuer for (a) and (b): fedauthz and Envoy's jwt_authn trust the same public key.
    let main = [BenchIssuer::new(0)?];
    write_config(&base, &main, &out.join("fedauthz-bench.yaml"))?;
    std::fs::write(out.join("bench.jwks.json"), main[0].public_jwks.to_string())?;
    std::fs::write(out.join("bench.iss"), &main[0].iss)?;
    let pool_tokens = mint_tokens(&main, pool, now)?;
    write_lines(&out.join("tokens-pool.txt"), &pool_tokens)?;
    // The unique set continues the subject numbering so no unique token equals a pool token.
    let unique_tokens: Vec<String> = mint_tokens(&main, pool + unique, now)?
        .into_iter()
        .skip(pool)
        .collect();
    write_lines(&out.join("tokens-unique.txt"), &unique_tokens)?;

    // h2load body: one gRPC-framed CheckRequest carrying the first pool token.
    let first = pool_tokens.first().context("--pool must be at least 1")?;
    std::fs::write(
        out.join("check.grpc"),
        grpc_frame(&check_request(first, None)),
    )?;

    // (c): many issuers, tokens spread round-robin over them.
    let multi: Vec<BenchIssuer> = (1..=multi_issuers)
        .map(BenchIssuer::new)
        .collect::<anyhow::Result<_>>()?;
    write_config(&multi_base, &multi, &out.join("fedauthz-50-issuers.yaml"))?;
    let multi_tokens = mint_tokens(&multi, multi_tokens, now)?;
    write_lines(&out.join("tokens-50-issuers.txt"), &multi_tokens)?;

    let bytes = unique_tokens.first().map_or(0, String::len);
    println!(
        "# minted ES256 tokens in {:.1}s: pool {pool}, unique {unique} (1 issuer, {bytes} bytes each), \
         {} over {multi_issuers} issuers -> {}",
        started.elapsed().as_secs_f64(),
        multi_tokens.len(),
        out.display()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Requests

/// The CheckRequest Envoy would send for `GET /bench` with this bearer token: the pseudo-headers
/// and the usual request headers, as Envoy forwards every header by default.
fn check_request(token: &str, header: Option<&str>) -> CheckRequest {
    let headers: HashMap<String, String> = [
        (":authority", "bench.local"),
        (":method", "GET"),
        (":path", "/bench"),
        (":scheme", "http"),
        ("user-agent", "fedauthz-load"),
        ("accept", "*/*"),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "5e0c2b4a-3a43-4c2e-9d1b-6f8f3c1d2e7a"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .chain([match header {
        // An API key, say: the credential alone in its header.
        Some(name) => (name.to_owned(), token.to_owned()),
        None => ("authorization".to_owned(), format!("Bearer {token}")),
    }])
    .collect();
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(AttrRequest {
                time: None,
                http: Some(HttpRequest {
                    id: "1".into(),
                    method: "GET".into(),
                    path: "/bench".into(),
                    host: "bench.local".into(),
                    scheme: "http".into(),
                    protocol: "HTTP/1.1".into(),
                    headers,
                    ..HttpRequest::default()
                }),
            }),
            ..AttributeContext::default()
        }),
    }
}

/// A message in gRPC length-prefixed framing (uncompressed).
fn grpc_frame(message: &CheckRequest) -> Vec<u8> {
    let body = message.encode_to_vec();
    let mut framed = Vec::with_capacity(body.len() + 5);
    framed.push(0);
    framed.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
    framed.extend_from_slice(&body);
    framed
}

/// Is this CheckResponse an allow? Otherwise, what it was (for the non-OK tally).
fn classify(response: &CheckResponse) -> Result<(), String> {
    let code = response.status.as_ref().map_or(0, |s| s.code);
    match (&response.http_response, code) {
        (Some(HttpResponse::OkResponse(_)) | None, 0) => Ok(()),
        (http, code) => {
            let status = match http {
                Some(HttpResponse::DeniedResponse(d) | HttpResponse::ErrorResponse(d)) => {
                    d.status.as_ref().map_or(0, |s| s.code)
                }
                _ => 0,
            };
            let reason = response
                .dynamic_metadata
                .as_ref()
                .and_then(|m| m.fields.get("reason"))
                .and_then(|v| match &v.kind {
                    Some(prost_types::value::Kind::StringValue(s)) => Some(s.as_str()),
                    _ => None,
                })
                .unwrap_or("-");
            Err(format!("check_code_{code}_http_{status}_{reason}"))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// run

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Grpc,
    Http,
}

/// Settings of one run.
struct RunSpec {
    target: Target,
    addr: String,
    connections: usize,
    concurrency: usize,
    rate: u64,
    duration: Duration,
    warmup: Duration,
    requests: u64,
    path: String,
    host: String,
    expect_status: u16,
    label: String,
    tokens_file: String,
    offset: usize,
    /// gRPC over TLS: the rustls client configuration and the server name to send.
    tls: Option<(Arc<tokio_rustls::rustls::ClientConfig>, String)>,
}

/// What every sender adds to.
struct Tally {
    histogram: Mutex<Histogram<u64>>,
    ok: AtomicU64,
    non_ok: Mutex<BTreeMap<String, u64>>,
    next_token: AtomicUsize,
    sent: AtomicU64,
}

impl Tally {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            // 1 µs .. 60 s in nanoseconds, 3 significant digits.
            histogram: Mutex::new(Histogram::new_with_bounds(1_000, 60_000_000_000, 3)?),
            ok: AtomicU64::new(0),
            non_ok: Mutex::new(BTreeMap::new()),
            next_token: AtomicUsize::new(0),
            sent: AtomicU64::new(0),
        })
    }

    fn record(&self, latency: Duration, outcome: Result<(), String>) {
        let nanos = u64::try_from(latency.as_nanos())
            .unwrap_or(u64::MAX)
            .clamp(1_000, 60_000_000_000);
        if let Ok(mut h) = self.histogram.lock() {
            let _ = h.record(nanos);
        }
        match outcome {
            Ok(()) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(kind) => {
                if let Ok(mut map) = self.non_ok.lock() {
                    *map.entry(kind).or_default() += 1;
                }
            }
        }
    }
}

/// A connection of either kind.
#[derive(Clone)]
enum Conn {
    Grpc(AuthorizationClient<Channel>),
    Http(Arc<tokio::sync::Mutex<Option<hyper::client::conn::http1::SendRequest<Empty<Bytes>>>>>),
}

struct Shared {
    spec: RunSpec,
    tokens: Vec<Arc<str>>,
    /// Pre-built CheckRequests, one per token (gRPC only), so the generator does not pay for
    /// building them on the hot path.
    requests: Vec<CheckRequest>,
    authorizations: Vec<hyper::header::HeaderValue>,
    /// The header the credential goes in (`Authorization: Bearer`, or `--credential-header`).
    credential_name: hyper::header::HeaderName,
}

impl Shared {
    fn next_index(&self, tally: &Tally) -> usize {
        tally.next_token.fetch_add(1, Ordering::Relaxed) % self.tokens.len()
    }
}

async fn http_connect(
    addr: &str,
) -> anyhow::Result<hyper::client::conn::http1::SendRequest<Empty<Bytes>>> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    tcp.set_nodelay(true)?;
    let (send, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(send)
}

/// Opens TLS connections for tonic (ALPN h2, the server name given).
#[derive(Clone)]
struct TlsConnect {
    addr: String,
    config: Arc<tokio_rustls::rustls::ClientConfig>,
    name: String,
}

type TlsIo = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

impl tonic::codegen::Service<tonic::codegen::http::Uri> for TlsConnect {
    type Response = TlsIo;
    type Error = std::io::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<TlsIo, std::io::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: tonic::codegen::http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tcp = tokio::net::TcpStream::connect(&this.addr).await?;
            tcp.set_nodelay(true)?;
            let name = tokio_rustls::rustls::pki_types::ServerName::try_from(this.name)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            let tls = tokio_rustls::TlsConnector::from(this.config)
                .connect(name, tcp)
                .await?;
            Ok(hyper_util::rt::TokioIo::new(tls))
        })
    }
}

/// A TLS client configuration trusting the PEM CA bundle at `path`.
fn tls_client(path: &str) -> anyhow::Result<Arc<tokio_rustls::rustls::ClientConfig>> {
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject as _;
    let pem = std::fs::read(path).with_context(|| format!("read CA {path}"))?;
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.with_context(|| format!("{path}: PEM"))?)?;
    }
    let mut config = tokio_rustls::rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

async fn connect(spec: &RunSpec) -> anyhow::Result<Vec<Conn>> {
    let mut conns = Vec::with_capacity(spec.connections);
    for _ in 0..spec.connections {
        conns.push(match spec.target {
            Target::Grpc => {
                // One Endpoint::connect per connection: each is its own h2 connection.
                let endpoint =
                    Endpoint::from_shared(format!("http://{}", spec.addr))?.tcp_nodelay(true);
                let channel = match &spec.tls {
                    None => endpoint.connect().await,
                    Some((config, name)) => {
                        endpoint
                            .connect_with_connector(TlsConnect {
                                addr: spec.addr.clone(),
                                config: Arc::clone(config),
                                name: name.clone(),
                            })
                            .await
                    }
                }
                .with_context(|| format!("connect grpc {}", spec.addr))?;
                Conn::Grpc(AuthorizationClient::new(channel))
            }
            Target::Http => Conn::Http(Arc::new(tokio::sync::Mutex::new(Some(
                http_connect(&spec.addr).await?,
            )))),
        });
    }
    Ok(conns)
}

/// Sends one request on `conn` and classifies the answer.
async fn send_one(shared: &Shared, conn: &Conn, index: usize) -> Result<(), String> {
    match conn {
        Conn::Grpc(client) => {
            let mut client = client.clone();
            let request = shared.requests[index].clone();
            match client.check(request).await {
                Ok(response) => classify(response.get_ref()),
                Err(status) => Err(format!("rpc_error_{:?}", status.code())),
            }
        }
        Conn::Http(slot) => {
            let mut guard = slot.lock().await;
            if guard.as_ref().is_none_or(|s| s.is_closed()) {
                *guard = Some(
                    http_connect(&shared.spec.addr)
                        .await
                        .map_err(|_| "connect_error".to_owned())?,
                );
            }
            let Some(send) = guard.as_mut() else {
                return Err("connect_error".into());
            };
            if send.ready().await.is_err() {
                *guard = None;
                return Err("connection_closed".into());
            }
            let request = hyper::Request::get(shared.spec.path.as_str())
                .header(hyper::header::HOST, shared.spec.host.as_str())
                .header(
                    shared.credential_name.clone(),
                    shared.authorizations[index].clone(),
                )
                .body(Empty::<Bytes>::new())
                .map_err(|e| format!("request_build_{e}"))?;
            match send.send_request(request).await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let _ = response.into_body().collect().await;
                    if status == shared.spec.expect_status {
                        Ok(())
                    } else {
                        Err(format!("http_{status}"))
                    }
                }
                Err(_) => {
                    *guard = None;
                    Err("http_error".into())
                }
            }
        }
    }
}

/// Closed loop: `connections × concurrency` senders, each sending the next request as soon as
/// the previous one is answered, until `until` or the request budget is spent.
async fn closed_loop(
    shared: Arc<Shared>,
    conns: &[Conn],
    tally: Arc<Tally>,
    until: Instant,
    budget: u64,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for conn in conns {
        for _ in 0..shared.spec.concurrency {
            let (shared, conn, tally) = (Arc::clone(&shared), conn.clone(), Arc::clone(&tally));
            tasks.spawn(async move {
                while Instant::now() < until {
                    if budget > 0 && tally.sent.fetch_add(1, Ordering::Relaxed) >= budget {
                        break;
                    }
                    let index = shared.next_index(&tally);
                    let sent = Instant::now();
                    let outcome = send_one(&shared, &conn, index).await;
                    tally.record(sent.elapsed(), outcome);
                }
            });
        }
    }
    while tasks.join_next().await.is_some() {}
}

/// Open loop at `rate`: request i is due at `start + i/rate` and its latency counts from then.
/// The dispatcher sleeps until shortly before the next due time and then yields in a loop (the
/// load CPU is dedicated to it), so requests leave within microseconds of their due time
/// instead of at the timer's 1 ms ticks; a request that cannot leave on time (the generator or
/// a connection is busy) is still charged from its due time.
async fn open_loop(shared: Arc<Shared>, conns: &[Conn], tally: Arc<Tally>, duration: Duration) {
    let rate = shared.spec.rate;
    let start = Instant::now();
    let total = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX) * rate / 1000;
    let mut tasks = tokio::task::JoinSet::new();
    let mut i: u64 = 0;
    while i < total {
        let due = start + Duration::from_nanos(i.saturating_mul(1_000_000_000) / rate);
        let now = Instant::now();
        if due > now {
            let wait = due - now;
            if wait > Duration::from_micros(2500) {
                tokio::time::sleep(wait - Duration::from_micros(1500)).await;
            } else {
                tokio::task::yield_now().await;
            }
            continue;
        }
        let index = shared.next_index(&tally);
        let conn = conns[usize::try_from(i).unwrap_or(0) % conns.len()].clone();
        let (task_shared, task_tally) = (Arc::clone(&shared), Arc::clone(&tally));
        tasks.spawn(async move {
            let outcome = send_one(&task_shared, &conn, index).await;
            task_tally.record(due.elapsed(), outcome);
        });
        i += 1;
        // Reap finished tasks so the set does not grow without bound.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

fn read_tokens(path: &str) -> anyhow::Result<Vec<Arc<str>>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read tokens {path}"))?;
    let tokens: Vec<Arc<str>> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(Arc::from)
        .collect();
    if tokens.is_empty() {
        bail!("{path} holds no tokens");
    }
    Ok(tokens)
}

fn run(flags: &Flags) -> anyhow::Result<()> {
    let target = match flags.required("target")? {
        "grpc" => Target::Grpc,
        "http" => Target::Http,
        other => bail!("--target must be grpc or http, got {other:?}"),
    };
    let spec = RunSpec {
        target,
        addr: flags.required("addr")?.to_owned(),
        connections: flags.num("connections", 4)?,
        concurrency: flags.num("concurrency", if target == Target::Grpc { 16 } else { 1 })?,
        rate: flags.num("rate", 0)?,
        duration: Duration::from_secs_f64(flags.num("duration", 5.0)?),
        warmup: Duration::from_secs_f64(flags.num("warmup", 1.0)?),
        requests: flags.num("requests", 0)?,
        path: flags.str("path").unwrap_or("/bench").to_owned(),
        host: flags.str("host").unwrap_or("bench.local").to_owned(),
        expect_status: flags.num("expect-status", 200)?,
        label: flags.str("label").unwrap_or("").to_owned(),
        tokens_file: flags.required("tokens")?.to_owned(),
        offset: flags.num("offset", 0)?,
        tls: match flags.str("ca") {
            Some(ca) => Some((
                tls_client(ca)?,
                flags.str("server-name").unwrap_or("localhost").to_owned(),
            )),
            None => None,
        },
    };
    if spec.connections == 0 || spec.concurrency == 0 {
        bail!("--connections and --concurrency must be at least 1");
    }
    if target == Target::Http && spec.concurrency != 1 {
        bail!("HTTP/1.1 has one request in flight per connection: use --connections");
    }
    let threads: usize = flags.num("threads", 1)?;
    let credential_header = flags.str("credential-header").map(str::to_ascii_lowercase);
    let credential_name = match &credential_header {
        Some(name) => hyper::header::HeaderName::from_bytes(name.as_bytes())
            .context("--credential-header is not a header name")?,
        None => hyper::header::AUTHORIZATION,
    };
    let tokens = read_tokens(&spec.tokens_file)?;
    let requests = match target {
        Target::Grpc => tokens
            .iter()
            .map(|t| check_request(t, credential_header.as_deref()))
            .collect(),
        Target::Http => Vec::new(),
    };
    let authorizations = match target {
        Target::Http => tokens
            .iter()
            .map(|t| match credential_header {
                Some(_) => hyper::header::HeaderValue::from_str(t),
                None => hyper::header::HeaderValue::from_str(&format!("Bearer {t}")),
            })
            .collect::<Result<_, _>>()
            .context("a token is not a valid header value")?,
        Target::Grpc => Vec::new(),
    };
    let shared = Arc::new(Shared {
        spec,
        tokens,
        requests,
        authorizations,
        credential_name,
    });
    // One thread (the default, pinned to one CPU by scripts/bench): a current-thread runtime,
    // the cheapest way to drive many connections from one core.
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(measure(shared))
}

async fn measure(shared: Arc<Shared>) -> anyhow::Result<()> {
    let spec = &shared.spec;
    let conns = connect(spec).await?;
    // Warm-up: same load shape, not recorded. It also takes tokens from the rotation, so a
    // unique-token run never repeats a warm-up token (within the file's length).
    let warm = Arc::new(Tally::new()?);
    warm.next_token.store(spec.offset, Ordering::Relaxed);
    if !spec.warmup.is_zero() {
        if spec.rate == 0 {
            closed_loop(
                Arc::clone(&shared),
                &conns,
                Arc::clone(&warm),
                Instant::now() + spec.warmup,
                0,
            )
            .await;
        } else {
            open_loop(Arc::clone(&shared), &conns, Arc::clone(&warm), spec.warmup).await;
        }
    }
    let tally = Arc::new(Tally::new()?);
    tally
        .next_token
        .store(warm.next_token.load(Ordering::Relaxed), Ordering::Relaxed);
    let started = Instant::now();
    if spec.rate == 0 {
        let until = if spec.requests > 0 {
            started + Duration::from_secs(3600)
        } else {
            started + spec.duration
        };
        closed_loop(
            Arc::clone(&shared),
            &conns,
            Arc::clone(&tally),
            until,
            spec.requests,
        )
        .await;
    } else {
        open_loop(
            Arc::clone(&shared),
            &conns,
            Arc::clone(&tally),
            spec.duration,
        )
        .await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    report(&shared, &tally, elapsed)
}

fn report(shared: &Shared, tally: &Tally, elapsed: f64) -> anyhow::Result<()> {
    let spec = &shared.spec;
    let histogram = tally
        .histogram
        .lock()
        .map_err(|_| anyhow::anyhow!("histogram lock poisoned"))?;
    let non_ok = tally
        .non_ok
        .lock()
        .map_err(|_| anyhow::anyhow!("tally lock poisoned"))?
        .clone();
    let ok = tally.ok.load(Ordering::Relaxed);
    let bad: u64 = non_ok.values().sum();
    let done = ok + bad;
    let us = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    // Tokens taken from the rotation, warm-up included, counted from --offset.
    let end = tally.next_token.load(Ordering::Relaxed);
    let line = json!({
        "label": spec.label,
        "target": match spec.target { Target::Grpc => "grpc", Target::Http => "http" },
        "addr": spec.addr,
        "mode": if spec.rate == 0 { "closed" } else { "open" },
        "rate": spec.rate,
        "connections": spec.connections,
        "concurrency": spec.concurrency,
        "duration_s": (elapsed * 1000.0).round() / 1000.0,
        "tokens_file": spec.tokens_file,
        "tokens_in_file": shared.tokens.len(),
        "token_offset": spec.offset,
        "token_next_offset": end,
        "tokens_repeated": end > shared.tokens.len(),
        "requests": done,
        "ok": ok,
        "non_ok": bad,
        "non_ok_kinds": non_ok,
        "rps": (done as f64 / elapsed).round(),
        "p50_us": us(0.5),
        "p99_us": us(0.99),
        "p999_us": us(0.999),
        "max_us": histogram.max() as f64 / 1000.0,
    });
    println!("{line}");
    println!(
        "# {label}: {mode} {target} {addr} conns={c}x{k}: {done} requests in {elapsed:.2}s = {rps:.0} rps; \
         p50 {p50:.0}us p99 {p99:.0}us p99.9 {p999:.0}us max {max:.0}us; ok {ok}, NON-OK {bad}{kinds}",
        label = spec.label,
        mode = if spec.rate == 0 {
            "closed-loop".to_owned()
        } else {
            format!("open-loop {} rps", spec.rate)
        },
        target = if spec.target == Target::Grpc {
            "grpc"
        } else {
            "http"
        },
        addr = spec.addr,
        c = spec.connections,
        k = spec.concurrency,
        rps = done as f64 / elapsed,
        p50 = us(0.5),
        p99 = us(0.99),
        p999 = us(0.999),
        max = histogram.max() as f64 / 1000.0,
        kinds = if non_ok.is_empty() {
            String::new()
        } else {
            format!(" {non_ok:?}")
        },
    );
    Ok(())
}
