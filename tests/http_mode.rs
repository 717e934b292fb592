//! The HTTP authorization listener (`server.http`) through the real server: each caller
//! convention (Envoy `http_service`, nginx `auth_request`, Traefik `forwardAuth`) over
//! HTTP/1.1 and h2c, the same decisions and reasons as gRPC, trusted proxies by address and by
//! client certificate, and the `transport` label of the metrics.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::pki::{Ca, client_config};
use common::{RunningServer, TestIssuer, now};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

const AUD: &str = "orders-api";

/// How a proxy asks about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Convention {
    Envoy,
    Nginx,
    Traefik,
}

const CONVENTIONS: [Convention; 3] = [Convention::Envoy, Convention::Nginx, Convention::Traefik];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    H2c,
}

/// The request being authorized.
struct Original<'a> {
    method: &'a str,
    uri: &'a str,
    host: &'a str,
    headers: Vec<(&'a str, String)>,
}

impl<'a> Original<'a> {
    fn get(uri: &'a str) -> Self {
        Self {
            method: "GET",
            uri,
            host: "api.example.com",
            headers: Vec::new(),
        }
    }

    fn method(mut self, method: &'a str) -> Self {
        self.method = method;
        self
    }

    fn header(mut self, name: &'a str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn bearer(self, token: &str) -> Self {
        self.header("authorization", format!("Bearer {token}"))
    }
}

/// An answer of the HTTP listener.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn reason(&self) -> &str {
        self.header("x-fedauthz-reason").unwrap_or("<none>")
    }
}

fn client(protocol: Protocol) -> reqwest::Client {
    let builder = reqwest::Client::builder();
    match protocol {
        Protocol::Http1 => builder.http1_only(),
        Protocol::H2c => builder.http2_prior_knowledge(),
    }
    .build()
    .expect("client")
}

/// Asks `addr` about `original` the way `convention`'s proxy would.
async fn ask(
    client: &reqwest::Client,
    base: &str,
    convention: Convention,
    original: &Original<'_>,
) -> Answer {
    let request = match convention {
        // The original request itself, its path after path_prefix.
        Convention::Envoy => client
            .request(
                original.method.parse().expect("method"),
                format!("{base}/envoy{}", original.uri),
            )
            .header("host", original.host),
        Convention::Nginx => client
            .get(format!("{base}/nginx"))
            .header("x-original-method", original.method)
            .header("x-original-uri", original.uri)
            .header("x-original-host", original.host),
        Convention::Traefik => client
            .get(format!("{base}/traefik"))
            .header("x-forwarded-method", original.method)
            .header("x-forwarded-uri", original.uri)
            .header("x-forwarded-host", original.host)
            .header("x-forwarded-proto", "https"),
    };
    let request = original
        .headers
        .iter()
        .fold(request, |request, (name, value)| {
            request.header(*name, value)
        });
    let response = request.send().await.expect("HTTP authorization request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.text().await.expect("body");
    Answer {
        status,
        headers,
        body,
    }
}

/// One issuer; routes: anonymous `/public*`, writes to `/orders*` need scope `orders.write`,
/// reads of `/orders*` any token of the issuer; anything else matches no route.
fn config(issuer: &TestIssuer, http: &str) -> String {
    format!(
        r#"
server:
  http:
{http}
response:
  realm: orders
  headers: {{ x-auth-scopes: "{{scopes}}" }}
issuers:
  - id: corp
    issuer: {iss}
    keys: {{ jwks: {jwks} }}
    audiences: [{AUD}]
routes:
  - name: public
    match: {{ paths: ["/public*"] }}
    allow_anonymous: true
  - name: orders-write
    match: {{ paths: ["/orders*"], methods: [POST, PUT, DELETE] }}
    require: {{ scopes: [orders.write] }}
  - name: orders-read
    match: {{ paths: ["/orders*"] }}
"#,
        iss = issuer.iss,
        jwks = issuer.jwks(),
    )
}

const LOOPBACK_TRUSTED: &str = "    listen: 127.0.0.1:0\n    trusted_proxies: [127.0.0.1/32]\n";

fn token(issuer: &TestIssuer, scope: &str) -> String {
    let mut claims = issuer.claims("alice", AUD);
    claims.insert("scope".into(), json!(scope));
    issuer.sign(&claims, json!({}))
}

async fn start(http: &str) -> (TestIssuer, RunningServer, String) {
    let issuer = TestIssuer::es256("https://login.example.com/", "k1");
    let server = RunningServer::start(&config(&issuer, http)).await;
    let base = format!("http://{}", server.http.expect("HTTP listener bound"));
    (issuer, server, base)
}

#[tokio::test]
async fn every_convention_allows_with_the_identity_headers_over_http1_and_h2c() {
    let (issuer, _server, base) = start(LOOPBACK_TRUSTED).await;
    let token = token(&issuer, "orders.read");
    for protocol in [Protocol::Http1, Protocol::H2c] {
        let client = client(protocol);
        for convention in CONVENTIONS {
            let at = format!("{convention:?} over {protocol:?}");
            let answer = ask(
                &client,
                &base,
                convention,
                &Original::get("/orders/7?x=1")
                    .bearer(&token)
                    // A client's copies of identity headers: fedauthz answers with its own.
                    .header("x-auth-subject", "mallory")
                    .header("x-auth-scopes", "admin"),
            )
            .await;
            assert_eq!(answer.status, 200, "{at}: {answer:?}");
            assert_eq!(answer.header("x-auth-subject"), Some("alice"), "{at}");
            assert_eq!(answer.header("x-auth-issuer"), Some("corp"), "{at}");
            assert_eq!(answer.header("x-auth-scopes"), Some("orders.read"), "{at}");
            assert_eq!(answer.header("x-fedauthz-decision"), Some("allow"), "{at}");
            assert_eq!(answer.reason(), "token_valid", "{at}");
            assert!(answer.body.is_empty(), "{at}: {:?}", answer.body);
            // Envoy removes what fedauthz names; the other proxies are configured to.
            let removed = answer.header("x-envoy-auth-headers-to-remove");
            if convention == Convention::Envoy {
                let removed: Vec<&str> = removed.expect("headers to remove").split(',').collect();
                assert!(removed.contains(&"authorization"), "{at}: {removed:?}");
            } else {
                assert_eq!(removed, None, "{at}");
            }
        }
    }
}

#[tokio::test]
async fn the_original_method_path_and_host_decide_not_the_authorization_request() {
    let (issuer, _server, base) = start(LOOPBACK_TRUSTED).await;
    let reader = token(&issuer, "orders.read");
    let writer = token(&issuer, "orders.read orders.write");
    let client = client(Protocol::Http1);
    for convention in CONVENTIONS {
        // nginx and Traefik ask with GET; the original DELETE is what the route sees.
        let delete = Original::get("/orders/7").method("DELETE");
        let answer = ask(&client, &base, convention, &delete.bearer(&reader)).await;
        assert_eq!(answer.status, 403, "{convention:?}: {answer:?}");
        assert_eq!(answer.reason(), "requirement_not_met", "{convention:?}");
        let challenge = answer.header("www-authenticate").expect("challenge");
        assert!(
            challenge.contains(r#"error="insufficient_scope""#)
                && challenge.contains(r#"scope="orders.write""#),
            "{convention:?}: {challenge}"
        );
        let body: Value = serde_json::from_str(&answer.body).expect("JSON body");
        assert_eq!(body["error"], "insufficient_scope");

        let delete = Original::get("/orders/7").method("DELETE");
        let answer = ask(&client, &base, convention, &delete.bearer(&writer)).await;
        assert_eq!(answer.status, 200, "{convention:?}: {answer:?}");

        let answer = ask(&client, &base, convention, &Original::get("/public/x")).await;
        assert_eq!(answer.status, 200, "{convention:?}: {answer:?}");
        assert_eq!(answer.reason(), "anonymous", "{convention:?}");
        let answer = ask(
            &client,
            &base,
            convention,
            &Original::get("/other").bearer(&reader),
        )
        .await;
        assert_eq!(answer.status, 403, "{convention:?}: {answer:?}");
        assert_eq!(answer.reason(), "no_route_matched", "{convention:?}");
    }
}

#[tokio::test]
async fn denials_carry_the_same_status_challenge_and_reason_as_grpc() {
    let (issuer, server, base) = start(LOOPBACK_TRUSTED).await;
    let other = TestIssuer::es256("https://login.example.com/", "k1");
    let mut expired = issuer.claims("alice", AUD);
    expired.insert("exp".into(), json!(now() - 3600));
    expired.insert("iat".into(), json!(now() - 7200));
    let cases = [
        ("no credential", None, 401, "token_missing"),
        (
            "garbage",
            Some("not-a-jwt".to_owned()),
            401,
            "token_malformed",
        ),
        (
            "expired",
            Some(issuer.sign(&expired, json!({}))),
            401,
            "token_expired",
        ),
        (
            "signed by another key",
            Some(other.token("alice", AUD)),
            401,
            "signature_invalid",
        ),
        (
            "another audience",
            Some(issuer.token("alice", "billing")),
            401,
            "audience_mismatch",
        ),
    ];
    let client = client(Protocol::H2c);
    let mut grpc = server.client().await;
    for convention in CONVENTIONS {
        for (what, credential, status, reason) in &cases {
            let mut original = Original::get("/orders/1");
            if let Some(token) = credential {
                original = original.bearer(token);
            }
            let answer = ask(&client, &base, convention, &original).await;
            let at = format!("{convention:?}, {what}");
            assert_eq!(answer.status, *status, "{at}: {answer:?}");
            assert_eq!(answer.reason(), *reason, "{at}");
            assert_eq!(answer.header("x-fedauthz-decision"), Some("deny"), "{at}");
            assert!(answer.header("x-auth-subject").is_none(), "{at}");
            let challenge = answer.header("www-authenticate").expect("challenge");
            assert!(
                challenge.starts_with(r#"Bearer realm="orders""#),
                "{at}: {challenge}"
            );
            assert_eq!(
                challenge.contains("invalid_token"),
                *reason != "token_missing",
                "{at}: {challenge}"
            );
            assert_eq!(answer.header("content-type"), Some("application/json"));
            // The very answer gRPC gives for the same request.
            let request = match credential {
                Some(token) => common::bearer(token),
                None => common::check_request(&[]),
            };
            let via_grpc = grpc.check(request).await.expect("check").into_inner();
            assert_eq!(common::reason(&via_grpc), *reason, "{at} over gRPC");
            assert_eq!(
                i64::from(common::denied_status(&via_grpc)),
                i64::from(*status),
                "{at}"
            );
            assert_eq!(
                common::denied_header(&via_grpc, "www-authenticate"),
                Some(challenge),
                "{at}"
            );
        }
    }
}

#[tokio::test]
async fn a_proxy_that_garbles_the_original_request_is_refused_as_misconfigured() {
    let (issuer, _server, base) = start(LOOPBACK_TRUSTED).await;
    let token = format!("Bearer {}", token(&issuer, "orders.read"));
    let client = client(Protocol::Http1);
    let send = |path: &str, headers: &[(&str, &str)]| {
        let request = headers.iter().fold(
            client
                .get(format!("{base}{path}"))
                .header("authorization", &token),
            |request, (name, value)| request.header(*name, *value),
        );
        async move {
            let response = request.send().await.expect("request");
            let status = response.status().as_u16();
            let reason = response
                .headers()
                .get("x-fedauthz-reason")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("<none>")
                .to_owned();
            (status, reason)
        }
    };
    // Another convention's headers mean nothing at an endpoint: the path chose nginx.
    assert_eq!(
        send(
            "/nginx",
            &[
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/orders/1")
            ]
        )
        .await,
        (400, "proxy_request_invalid".to_owned())
    );
    assert_eq!(
        send(
            "/traefik",
            &[
                ("x-original-method", "GET"),
                ("x-original-uri", "/orders/1")
            ]
        )
        .await,
        (400, "proxy_request_invalid".to_owned())
    );
    for headers in [
        vec![("x-original-uri", "/orders/1")],
        vec![("x-original-method", "GET"), ("x-original-uri", "orders/1")],
        vec![
            ("x-original-method", "G(T"),
            ("x-original-uri", "/orders/1"),
        ],
        vec![
            ("x-original-method", "GET"),
            ("x-original-uri", "/orders/1"),
            ("x-original-uri", "/public/1"),
        ],
    ] {
        assert_eq!(
            send("/nginx", &headers).await,
            (400, "proxy_request_invalid".to_owned()),
            "{headers:?}"
        );
    }
    // A path no endpoint answers is not a check.
    assert_eq!(send("/ext_authz", &[]).await, (404, "<none>".to_owned()));
    assert_eq!(send("/nginx/x", &[]).await, (404, "<none>".to_owned()));
}

#[tokio::test]
async fn a_caller_outside_the_trusted_proxies_is_refused_even_with_a_valid_token() {
    let (issuer, server, base) =
        start("    listen: 127.0.0.1:0\n    trusted_proxies: [10.0.0.0/8]\n").await;
    let token = token(&issuer, "orders.read");
    let client = client(Protocol::Http1);
    for convention in CONVENTIONS {
        let answer = ask(
            &client,
            &base,
            convention,
            &Original::get("/public/x").bearer(&token),
        )
        .await;
        assert_eq!(answer.status, 403, "{convention:?}: {answer:?}");
        assert_eq!(answer.reason(), "proxy_untrusted", "{convention:?}");
        assert!(answer.header("x-auth-subject").is_none());
        // Not a challenge: the client's credential is not the problem.
        assert_eq!(answer.header("www-authenticate"), None, "{convention:?}");
    }
    // Trusting loopback is a reload away, no restart.
    let trusted = config(&issuer, LOOPBACK_TRUSTED);
    let mut reloaded = fedauthz::config::parse_yaml(&trusted, "test.yaml").expect("config");
    reloaded.server.http.as_mut().expect("http").listen = "127.0.0.1:0".parse().expect("addr");
    server.reloader.apply(reloaded).expect("reload applies");
    let answer = ask(
        &client,
        &base,
        Convention::Nginx,
        &Original::get("/orders/1").bearer(&token),
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");

    let (_, metrics) = server.admin_get("/metrics").await;
    let series = |labels: &str| {
        metrics
            .lines()
            .find(|line| line.starts_with("fedauthz_checks_total{") && line.contains(labels))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert_eq!(
        series(r#"transport="http",decision="deny",reason="proxy_untrusted""#),
        3,
        "{metrics}"
    );
    assert_eq!(
        series(r#"transport="http",decision="allow",reason="token_valid""#),
        1,
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"fedauthz_check_duration_seconds_count{transport="http"} 4"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_verified_client_certificate_makes_a_proxy_trusted_from_any_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("proxies");
    let server_leaf = ca.leaf(&["localhost"]);
    let (cert, key) = server_leaf.write(dir.path());
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, &ca.pem).expect("write CA");
    let http = format!(
        "    listen: 127.0.0.1:0\n    trusted_proxies: [10.0.0.0/8]\n    tls:\n      certificate_file: {}\n      private_key_file: {}\n      client_certificates:\n        ca_file: {}\n        mode: optional\n",
        cert.display(),
        key.display(),
        ca_file.display()
    );
    let (issuer, server, _) = start(&http).await;
    let addr = server.http.expect("HTTP listener");
    let token = token(&issuer, "orders.read");
    let nginx_leaf = ca.leaf(&["nginx.edge.svc"]);
    for (client_leaf, status, reason) in [
        (Some(&nginx_leaf), 200, "token_valid"),
        // Without a certificate, loopback is not among the trusted networks.
        (None, 403, "proxy_untrusted"),
    ] {
        for alpn in [&b"http/1.1"[..], &b"h2"[..]] {
            let (got, headers) = tls_ask(addr, &ca.pem, client_leaf, alpn, &token).await;
            assert_eq!(got, status, "{:?}", String::from_utf8_lossy(alpn));
            assert_eq!(
                headers.get("x-fedauthz-reason").map(String::as_str),
                Some(reason)
            );
        }
    }
}

/// One nginx-convention request over TLS (ALPN `alpn`), presenting `client` if given: the
/// status and the answer's headers.
async fn tls_ask(
    addr: SocketAddr,
    ca_pem: &str,
    client: Option<&common::pki::Leaf>,
    alpn: &[u8],
    token: &str,
) -> (u16, std::collections::HashMap<String, String>) {
    use http_body_util::Empty;
    use hyper::body::Bytes;
    use tokio_rustls::rustls::pki_types::ServerName;
    let config = Arc::new(client_config(ca_pem, client, &[alpn]));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("handshake");
    let io = hyper_util::rt::TokioIo::new(tls);
    let request = hyper::Request::get("https://localhost/nginx")
        .header("x-original-method", "GET")
        .header("x-original-uri", "/orders/1")
        .header("x-original-host", "api.example.com")
        .header("authorization", format!("Bearer {token}"))
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = if alpn == b"h2" {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .expect("h2 handshake");
        tokio::spawn(connection);
        sender.send_request(request).await.expect("h2 request")
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .expect("http1 handshake");
        tokio::spawn(connection);
        sender.send_request(request).await.expect("http1 request")
    };
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("?").to_owned()))
        .collect();
    (response.status().as_u16(), headers)
}
