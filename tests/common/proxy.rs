//! The proxies of the end-to-end suites and what they front: the Envoy binary and its
//! start-up, an echo upstream that records what reached it, free ports and readiness waits.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;

use super::process::Process;

/// The Envoy binary: `FEDAUTHZ_ENVOY`, else `.tools/bin/envoy` as `scripts/test` installs it.
pub fn envoy_binary() -> PathBuf {
    let path = std::env::var_os("FEDAUTHZ_ENVOY")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/envoy"));
    assert!(
        path.is_file(),
        "Envoy not found at {}: run scripts/install-envoy (scripts/test does) or set FEDAUTHZ_ENVOY",
        path.display()
    );
    path
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Envoy (one worker) on `config`, its stdout (the access log) to `stdout`, once its admin
/// listener at `admin` says it is ready.
pub async fn start_envoy(config: &Path, admin: SocketAddr, stdout: Stdio) -> Process {
    let envoy = Process::spawn(
        Command::new(envoy_binary())
            .arg("-c")
            .arg(config)
            .args([
                "--concurrency",
                "1",
                "--disable-hot-restart",
                "-l",
                "warning",
            ])
            // Access log lines reach the file within 50 ms (default: 10 s).
            .args(["--file-flush-interval-msec", "50"])
            .stdout(stdout),
    );
    wait_http(admin, "/ready", "Envoy").await;
    envoy
}

/// Waits (up to 20 s) until `GET path` on `addr` answers 200.
pub async fn wait_http(addr: SocketAddr, path: &str, what: &str) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = client
            .get(format!("http://{addr}{path}"))
            .send()
            .await
            .map(|r| r.status().as_u16());
        if matches!(status, Ok(200)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not ready at {addr}{path}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the upstream received for one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub headers: Vec<(String, String)>,
}

impl Seen {
    pub fn values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// An HTTP/1.1 upstream that answers 200 and records each request's headers by x-request-id.
pub struct Echo {
    pub addr: SocketAddr,
    seen: Arc<Mutex<HashMap<String, Seen>>>,
}

impl Echo {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind echo");
        let addr = listener.local_addr().expect("echo addr");
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let record = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let record = Arc::clone(&record);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                        let headers: Vec<(String, String)> = req
                            .headers()
                            .iter()
                            .map(|(k, v)| {
                                (k.as_str().to_owned(), v.to_str().unwrap_or("?").to_owned())
                            })
                            .collect();
                        let id = req
                            .headers()
                            .get("x-request-id")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        if let Ok(mut seen) = record.lock() {
                            seen.insert(id, Seen { headers });
                        }
                        async {
                            hyper::Response::builder()
                                .status(200)
                                .body(Full::new(Bytes::from_static(b"upstream ok")))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Self { addr, seen }
    }

    pub fn seen(&self, request_id: &str) -> Option<Seen> {
        self.seen.lock().ok()?.get(request_id).cloned()
    }
}

/// On a failing test, keeps `files` of `dir` and the named process `outputs` in
/// `target/e2e-logs/<name>/`, and says where.
pub fn keep_logs(name: &str, dir: &Path, files: &[&str], outputs: &[(&str, String)]) {
    let keep = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/e2e-logs")
        .join(name);
    let _ = std::fs::create_dir_all(&keep);
    for file in files {
        let _ = std::fs::copy(dir.join(file), keep.join(file));
    }
    for (file, text) in outputs {
        let _ = std::fs::write(keep.join(file), text);
    }
    eprintln!("e2e logs of {name} kept in {}", keep.display());
}
