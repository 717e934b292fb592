//! Shared pieces for integration tests: test issuers that mint tokens, a real HTTPS JWKS
//! server with its own test CA, and fedauthz itself running in-process on loopback.

#![allow(dead_code)]

pub mod chart;
pub mod image;
pub mod keyserver;
pub mod kubelet;
pub mod otlp;
pub mod pki;
pub mod process;
pub mod proxy;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fedauthz::proto::auth::attribute_context::{HttpRequest, Request as AttrRequest};
use fedauthz::proto::auth::authorization_client::AuthorizationClient;
use fedauthz::proto::auth::check_response::HttpResponse;
use fedauthz::proto::auth::{AttributeContext, CheckRequest, CheckResponse};
use fedauthz::server::{Reloader, ServeOptions, Server};
use josekit::jwk::KeyPair as _;
use josekit::jws::JwsSigner;
use serde_json::{Map, Value, json};
use tokio::sync::oneshot;

/// Seconds since the epoch.
pub fn now() -> i64 {
    fedauthz::service::unix_now()
}

/// A token issuer with its own key pair.
pub struct TestIssuer {
    pub iss: String,
    pub kid: String,
    pub alg: &'static str,
    signer: Box<dyn JwsSigner>,
    public_jwk: Value,
}

impl TestIssuer {
    /// An RS256 issuer (2048-bit key).
    pub fn rs256(iss: &str, kid: &str) -> Self {
        let pair = josekit::jws::RS256
            .generate_key_pair(2048)
            .expect("RSA key");
        let signer = josekit::jws::RS256
            .signer_from_jwk(&pair.to_jwk_private_key())
            .expect("RSA signer");
        Self::new(
            iss,
            kid,
            "RS256",
            Box::new(signer),
            pair.to_jwk_public_key(),
        )
    }

    /// An RS256 issuer with a given key pair.
    pub fn rs256_from(iss: &str, kid: &str, pair: &josekit::jwk::alg::rsa::RsaKeyPair) -> Self {
        let signer = josekit::jws::RS256
            .signer_from_jwk(&pair.to_jwk_private_key())
            .expect("RSA signer");
        Self::new(
            iss,
            kid,
            "RS256",
            Box::new(signer),
            pair.to_jwk_public_key(),
        )
    }

    /// An ES256 issuer.
    pub fn es256(iss: &str, kid: &str) -> Self {
        let pair = josekit::jws::ES256.generate_key_pair().expect("EC key");
        let signer = josekit::jws::ES256
            .signer_from_jwk(&pair.to_jwk_private_key())
            .expect("EC signer");
        Self::new(
            iss,
            kid,
            "ES256",
            Box::new(signer),
            pair.to_jwk_public_key(),
        )
    }

    fn new(
        iss: &str,
        kid: &str,
        alg: &'static str,
        signer: Box<dyn JwsSigner>,
        public: josekit::jwk::Jwk,
    ) -> Self {
        let mut public_jwk = public.as_ref().clone();
        public_jwk.insert("kid".into(), kid.into());
        public_jwk.insert("alg".into(), alg.into());
        public_jwk.insert("use".into(), "sig".into());
        Self {
            iss: iss.into(),
            kid: kid.into(),
            alg,
            signer,
            public_jwk: Value::Object(public_jwk),
        }
    }

    /// The public JWK Set.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.public_jwk.clone()] })
    }

    /// Standard claims for `sub` and `aud`, valid for five minutes from now.
    pub fn claims(&self, sub: &str, aud: &str) -> Map<String, Value> {
        let now = now();
        json!({ "iss": self.iss, "sub": sub, "aud": aud, "iat": now, "nbf": now, "exp": now + 300 })
            .as_object()
            .cloned()
            .unwrap_or_default()
    }

    /// Signs `claims` with header `{alg, kid, typ: JWT}` plus `extra_header` members.
    pub fn sign(&self, claims: &Map<String, Value>, extra_header: Value) -> String {
        let mut header = json!({ "alg": self.alg, "kid": self.kid, "typ": "JWT" });
        if let (Some(h), Some(extra)) = (header.as_object_mut(), extra_header.as_object()) {
            for (k, v) in extra {
                if v.is_null() {
                    h.remove(k);
                } else {
                    h.insert(k.clone(), v.clone());
                }
            }
        }
        self.sign_raw(
            &header.to_string(),
            &Value::Object(claims.clone()).to_string(),
        )
    }

    /// Signs exactly the given header and payload JSON text.
    pub fn sign_raw(&self, header: &str, payload: &str) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let signature = self.signer.sign(input.as_bytes()).expect("sign");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    /// Signs the given header and payload JSON text with `=`-padded base64url segments (as AWS
    /// ALB does); the signature covers the padded bytes.
    pub fn sign_raw_padded(&self, header: &str, payload: &str) -> String {
        use base64::engine::general_purpose::URL_SAFE;
        let input = format!("{}.{}", URL_SAFE.encode(header), URL_SAFE.encode(payload));
        let signature = self.signer.sign(input.as_bytes()).expect("sign");
        format!("{input}.{}", URL_SAFE.encode(signature))
    }

    /// A token for `sub`/`aud` with the standard claims.
    pub fn token(&self, sub: &str, aud: &str) -> String {
        self.sign(&self.claims(sub, aud), json!({}))
    }
}

/// What the JWKS server answers.
#[derive(Clone)]
pub enum Answer {
    Json(String),
    Status(u16),
}

/// A real HTTPS server (rustls, certificate from a test CA) serving a JWK Set.
pub struct JwksServer {
    pub url: String,
    pub ca_pem: String,
    answer: Arc<Mutex<Answer>>,
    hits: Arc<AtomicUsize>,
    _stop: oneshot::Sender<()>,
}

impl JwksServer {
    /// Starts on 127.0.0.1 with a fresh CA, answering `answer` at `/jwks.json`.
    pub async fn start(answer: Answer) -> Self {
        let (acceptor, ca_pem) = keyserver::test_tls();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind JWKS");
        let addr = listener.local_addr().expect("JWKS addr");
        let answer = Arc::new(Mutex::new(answer));
        let hits = Arc::new(AtomicUsize::new(0));
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let (served_answer, served_hits) = (Arc::clone(&answer), Arc::clone(&hits));
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = &mut stop_rx => return,
                };
                let Ok((tcp, _)) = accepted else { continue };
                let (acceptor, answer, hits) = (
                    acceptor.clone(),
                    Arc::clone(&served_answer),
                    Arc::clone(&served_hits),
                );
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |_req| {
                        hits.fetch_add(1, Ordering::SeqCst);
                        let answer = answer
                            .lock()
                            .map(|a| a.clone())
                            .unwrap_or(Answer::Status(500));
                        async move {
                            let (status, body) = match answer {
                                Answer::Json(body) => (200, body),
                                Answer::Status(code) => (code, String::from("error")),
                            };
                            hyper::Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(http_body_util::Full::new(hyper::body::Bytes::from(body)))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            url: format!("https://127.0.0.1:{}/jwks.json", addr.port()),
            ca_pem,
            answer,
            hits,
            _stop: stop_tx,
        }
    }

    /// Changes what the server answers.
    pub fn set(&self, answer: Answer) {
        if let Ok(mut current) = self.answer.lock() {
            *current = answer;
        }
    }

    /// How many requests it has answered.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// fedauthz running in-process on loopback.
pub struct RunningServer {
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    /// `mint.publish.listen`, when the configuration sets it.
    pub publish: Option<SocketAddr>,
    /// `server.http.listen`, when the configuration sets it.
    pub http: Option<SocketAddr>,
    pub reloader: Reloader,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), fedauthz::server::ServerError>>>,
}

impl RunningServer {
    /// Parses `yaml`, forces every listener onto a free loopback port and starts serving.
    pub async fn start(yaml: &str) -> Self {
        let mut config =
            fedauthz::config::parse_yaml(yaml, "test.yaml").expect("test config is valid");
        config.server.grpc_listen = "127.0.0.1:0".parse().expect("addr");
        config.server.admin_listen = "127.0.0.1:0".parse().expect("addr");
        if let Some(http) = config.server.http.as_mut() {
            http.listen = "127.0.0.1:0".parse().expect("addr");
        }
        let server = Server::bind(config, ServeOptions::default())
            .await
            .expect("server binds");
        let (grpc, admin, reloader) = (server.grpc_addr(), server.admin_addr(), server.reloader());
        let publish = server.publish_addr();
        let http = server.http_addr();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stop_rx.await;
        }));
        Self {
            grpc,
            admin,
            publish,
            http,
            reloader,
            stop: Some(stop_tx),
            task: Some(task),
        }
    }

    /// A gRPC client connected to the Check service.
    pub async fn client(&self) -> AuthorizationClient<tonic::transport::Channel> {
        AuthorizationClient::connect(format!("http://{}", self.grpc))
            .await
            .expect("connect to fedauthz")
    }

    /// Sends SIGTERM-equivalent shutdown and waits for the server to finish.
    pub async fn shutdown(mut self) -> Result<(), fedauthz::server::ServerError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.expect("server task"),
            None => Ok(()),
        }
    }

    /// GETs an admin path; returns status and body.
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path).await
    }

    /// Waits until /readyz answers `status`, or panics after `timeout`.
    pub async fn wait_ready(&self, status: u16, timeout: Duration) {
        let start = Instant::now();
        loop {
            let (got, body) = self.admin_get("/readyz").await;
            if got == status {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "/readyz stayed {got} ({body}), wanted {status}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// A minimal HTTP/1.1 GET over a plain TCP connection.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect admin");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A CheckRequest carrying `headers`.
pub fn check_request(headers: &[(&str, &str)]) -> CheckRequest {
    let headers: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(AttrRequest {
                time: None,
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: "/orders".into(),
                    host: "api.example.com".into(),
                    headers,
                    ..HttpRequest::default()
                }),
            }),
            ..AttributeContext::default()
        }),
    }
}

/// A CheckRequest with `Authorization: Bearer <token>`.
pub fn bearer(token: &str) -> CheckRequest {
    check_request(&[
        ("authorization", &format!("Bearer {token}")),
        ("x-request-id", "test"),
    ])
}

/// The string field `key` of the response's dynamic metadata.
pub fn metadata<'a>(response: &'a CheckResponse, key: &str) -> Option<&'a str> {
    use prost_types::value::Kind;
    match response
        .dynamic_metadata
        .as_ref()?
        .fields
        .get(key)?
        .kind
        .as_ref()?
    {
        Kind::StringValue(s) => Some(s),
        _ => None,
    }
}

/// The reason code of a response.
pub fn reason(response: &CheckResponse) -> &str {
    metadata(response, "reason").unwrap_or("<no reason>")
}

/// HTTP status of a denial (0 for an allow).
pub fn denied_status(response: &CheckResponse) -> i32 {
    match &response.http_response {
        Some(HttpResponse::DeniedResponse(denied)) => denied.status.map_or(403, |s| s.code),
        _ => 0,
    }
}

/// A header of a denial.
pub fn denied_header<'a>(response: &'a CheckResponse, name: &str) -> Option<&'a str> {
    match &response.http_response {
        Some(HttpResponse::DeniedResponse(denied)) => denied
            .headers
            .iter()
            .filter_map(|h| h.header.as_ref())
            .find(|h| h.key == name)
            .map(|h| h.value.as_str()),
        _ => None,
    }
}

/// A fresh signing key for `algorithm` (`ES256`: P-256, `EdDSA`: Ed25519, else RSA 2048)
/// written to `path` as PKCS#8 PEM; returns `path`.
pub fn write_signing_key(path: &std::path::Path, algorithm: &str) -> std::path::PathBuf {
    use openssl::pkey::PKey;
    let key = match algorithm {
        "ES256" => {
            let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)
                .expect("P-256");
            PKey::from_ec_key(openssl::ec::EcKey::generate(&group).expect("key")).expect("pkey")
        }
        "EdDSA" => PKey::generate_ed25519().expect("Ed25519"),
        _ => PKey::from_rsa(openssl::rsa::Rsa::generate(2048).expect("RSA")).expect("pkey"),
    };
    std::fs::write(path, key.private_key_to_pem_pkcs8().expect("pem")).expect("write key");
    path.to_path_buf()
}

/// jwcrypto's interpreter: `FEDAUTHZ_JWCRYPTO_PYTHON`, else `.tools/bin/python-jwcrypto` as
/// `scripts/install-jwcrypto` makes it. Panics (never skips) when it is missing.
pub fn jwcrypto_python() -> std::path::PathBuf {
    let path = std::env::var_os("FEDAUTHZ_JWCRYPTO_PYTHON").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/python-jwcrypto"),
        std::path::PathBuf::from,
    );
    assert!(
        path.exists(),
        "jwcrypto's python not found at {} (run scripts/install-jwcrypto; scripts/test does)",
        path.display()
    );
    path
}

/// The headers an allow sets upstream, by name (panics on a denial).
pub fn upstream_headers(response: &CheckResponse) -> HashMap<String, String> {
    match &response.http_response {
        Some(HttpResponse::OkResponse(ok)) => ok
            .headers
            .iter()
            .filter_map(|h| h.header.as_ref())
            .map(|h| (h.key.clone(), h.value.clone()))
            .collect(),
        other => panic!("expected an allow, got {other:?}"),
    }
}

/// A key as `fedauthz apikey ARGS` prints it, and its entry (the digest only) with `extra`
/// fields merged in.
pub fn api_key(args: &[&str], extra: Value) -> (String, Value) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_fedauthz"))
        .arg("apikey")
        .args(args)
        .output()
        .expect("run fedauthz apikey");
    assert!(
        output.status.success(),
        "fedauthz apikey: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("UTF-8");
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(lines.len(), 2, "a key and an entry: {text}");
    let mut entry: Value = lines[1]
        .strip_prefix("- ")
        .and_then(|l| serde_json::from_str(l).ok())
        .expect("the entry is a YAML list item of JSON");
    assert!(
        !lines[1].contains(lines[0]),
        "the entry never holds the key"
    );
    if let (Some(fields), Some(extra)) = (entry.as_object_mut(), extra.as_object()) {
        fields.extend(extra.clone());
    }
    (lines[0].to_owned(), entry)
}

/// The secret part of an API key `<prefix><key id>_<secret>` (the secret itself may hold `_`).
pub fn api_key_secret(key: &str) -> &str {
    key.split_once('_')
        .and_then(|(_, rest)| rest.split_once('_'))
        .map_or(key, |(_, secret)| secret)
}
