//! Checks the test key server itself (tests/common/keyserver.rs): every reply kind, hit
//! counting, HTTPS with its test CA, concurrency and shutdown.

mod common;

use std::time::{Duration, Instant};

use common::keyserver::{KeyServer, Reply, closed_port_url};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

fn client_no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

fn https_client(server: &KeyServer) -> reqwest::Client {
    let cert = reqwest::Certificate::from_pem(server.ca_pem().expect("CA").as_bytes())
        .expect("CA PEM parses");
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .tls_certs_only(vec![cert])
        .build()
        .expect("HTTPS client")
}

#[tokio::test]
async fn json_headers_hits_and_404() {
    let server = KeyServer::http().await;
    let base = server.base_url().to_owned();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    assert!(!base.ends_with('/'));
    assert_eq!(server.url("/jwks"), format!("{base}/jwks"));
    assert_eq!(server.url("jwks"), format!("{base}/jwks"));
    assert_eq!(server.url("/{kid}"), format!("{base}/{{kid}}"));
    assert!(server.ca_pem().is_none());

    server.set(
        "/jwks",
        Reply::json_with(
            r#"{"keys":[]}"#,
            &[("cache-control", "max-age=60"), ("etag", "\"v1\"")],
        ),
    );
    let client = client();
    let response = client
        .get(server.url("/jwks?x=1"))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["cache-control"], "max-age=60");
    assert_eq!(headers["etag"], "\"v1\"");
    assert_eq!(response.text().await.expect("body"), r#"{"keys":[]}"#);

    let missing = client.get(server.url("/nope")).send().await.expect("GET");
    assert_eq!(missing.status(), 404);

    // The reply can change at any time.
    server.set("/jwks", Reply::json("{\"keys\":[1]}"));
    let body = client
        .get(server.url("/jwks"))
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("body");
    assert_eq!(body, "{\"keys\":[1]}");

    assert_eq!(server.hits("/jwks"), 2, "query ignored");
    assert_eq!(server.hits("/nope"), 1);
    assert_eq!(server.hits("/other"), 0);
    assert_eq!(server.total_hits(), 3);
}

#[tokio::test]
async fn status_and_garbage() {
    let server = KeyServer::http().await;
    let client = client();
    for code in [204u16, 304, 401, 429, 500, 503] {
        server.set("/s", Reply::Status(code));
        let response = client.get(server.url("/s")).send().await.expect("GET");
        assert_eq!(response.status().as_u16(), code);
    }
    server.set("/g", Reply::Garbage);
    let response = client.get(server.url("/g")).send().await.expect("GET");
    assert_eq!(response.status(), 200);
    let body = response.text().await.expect("body");
    assert!(
        serde_json::from_str::<serde_json::Value>(&body).is_err(),
        "{body}"
    );
}

#[tokio::test]
async fn huge_is_chunked_without_length() {
    let server = KeyServer::http().await;
    let client = client();
    let n = 3 * 1024 * 1024 + 17;
    server.set("/huge", Reply::Huge(n));
    let response = client.get(server.url("/huge")).send().await.expect("GET");
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("content-length").is_none());
    assert_eq!(response.headers()["transfer-encoding"], "chunked");
    assert_eq!(response.content_length(), None);
    let body = response.bytes().await.expect("body");
    assert_eq!(body.len(), n);
    assert!(body.starts_with(b"{\"keys\":["));
    assert!(body[9..].iter().all(|b| *b == b' '));

    server.set("/tiny", Reply::Huge(3));
    let body = client
        .get(server.url("/tiny"))
        .send()
        .await
        .expect("GET")
        .bytes()
        .await
        .expect("body");
    assert_eq!(&body[..], b"{\"k");

    // A client that stops reading early does not hurt the server.
    server.set("/endless", Reply::Huge(1 << 40));
    let mut response = client
        .get(server.url("/endless"))
        .send()
        .await
        .expect("GET");
    let mut read = 0;
    while read < 256 * 1024 {
        read += response.chunk().await.expect("chunk").expect("more").len();
    }
    drop(response);
    let again = client.get(server.url("/tiny")).send().await.expect("GET");
    assert_eq!(again.status(), 200);
}

#[tokio::test]
async fn slow_counts_before_the_delay() {
    let server = KeyServer::http().await;
    server.set(
        "/slow",
        Reply::Slow(Duration::from_millis(300), Box::new(Reply::json("{}"))),
    );
    let url = server.url("/slow");
    let start = Instant::now();
    let request = tokio::spawn(async move { client().get(url).send().await });
    while server.hits("/slow") == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "request never arrived"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(start.elapsed() < Duration::from_millis(250), "counted late");
    assert!(!request.is_finished());
    let response = request.await.expect("task").expect("GET");
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("body"), "{}");

    // A client timeout shorter than the delay fails the request.
    let impatient = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(50))
        .build()
        .expect("client");
    let error = impatient
        .get(server.url("/slow"))
        .send()
        .await
        .expect_err("times out");
    assert!(error.is_timeout(), "{error}");
    assert_eq!(server.hits("/slow"), 2);
}

#[tokio::test]
async fn redirects() {
    let server = KeyServer::http().await;
    server.set("/old", Reply::Redirect("/new".into()));
    server.set("/new", Reply::json("{\"ok\":true}"));
    let response = client().get(server.url("/old")).send().await.expect("GET");
    assert_eq!(response.status(), 200);
    assert_eq!(response.url().path(), "/new");

    let response = client_no_redirects()
        .get(server.url("/old"))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 302);
    assert_eq!(response.headers()["location"], "/new");

    // A loop A -> B -> A.
    server.set("/a", Reply::Redirect("/b".into()));
    server.set("/b", Reply::Redirect(server.url("/a")));
    let error = client()
        .get(server.url("/a"))
        .send()
        .await
        .expect_err("loop");
    assert!(error.is_redirect(), "{error}");
    assert!(server.hits("/a") >= 2 && server.hits("/b") >= 1);

    // An HTTPS server redirecting to plain HTTP.
    let secure = KeyServer::https().await;
    secure.set("/jwks", Reply::Redirect(server.url("/new")));
    let cert =
        reqwest::Certificate::from_pem(secure.ca_pem().expect("CA").as_bytes()).expect("CA PEM");
    let response = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only(vec![cert])
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(secure.url("/jwks"))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 302);
    assert_eq!(
        response.headers()["location"],
        format!("{}/new", server.base_url()).as_str()
    );
}

#[tokio::test]
async fn hangup_and_closed_port() {
    let server = KeyServer::http().await;
    server.set("/bye", Reply::Hangup);
    server.set(
        "/later",
        Reply::Slow(Duration::from_millis(50), Box::new(Reply::Hangup)),
    );
    server.set("/ok", Reply::json("{}"));
    let client = client();
    for path in ["/bye", "/later"] {
        let error = client
            .get(server.url(path))
            .send()
            .await
            .expect_err("hang-up");
        assert!(!error.is_timeout(), "{error}");
        assert!(server.hits(path) >= 1);
    }
    // The server keeps working on other connections.
    let response = client.get(server.url("/ok")).send().await.expect("GET");
    assert_eq!(response.status(), 200);

    let url = closed_port_url();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let error = client
        .get(format!("{url}/jwks"))
        .send()
        .await
        .expect_err("refused");
    assert!(error.is_connect(), "{error}");
}

#[tokio::test]
async fn https_with_test_ca() {
    let server = KeyServer::https().await;
    assert!(server.base_url().starts_with("https://127.0.0.1:"));
    let pem = server.ca_pem().expect("CA");
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    server.set("/jwks", Reply::json("{\"keys\":[]}"));

    let client = https_client(&server);
    let response = client.get(server.url("/jwks")).send().await.expect("GET");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("body"), "{\"keys\":[]}");

    // The certificate also names localhost.
    let localhost = server.url("/jwks").replace("127.0.0.1", "localhost");
    let response = client.get(localhost).send().await.expect("GET localhost");
    assert_eq!(response.status(), 200);

    // Another server's CA is not trusted.
    let other = KeyServer::https().await;
    let error = https_client(&other)
        .get(server.url("/jwks"))
        .send()
        .await
        .expect_err("untrusted CA");
    assert!(error.is_connect(), "{error}");
    assert_eq!(server.hits("/jwks"), 2);
}

#[tokio::test]
async fn concurrent_flood() {
    let server = KeyServer::http().await;
    server.set("/jwks", Reply::json("{\"keys\":[]}"));
    server.set(
        "/slow",
        Reply::Slow(Duration::from_millis(100), Box::new(Reply::json("{}"))),
    );
    let client = client();
    let start = Instant::now();
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let client = client.clone();
            let url = server.url(if i % 3 == 0 { "/slow" } else { "/jwks" });
            tokio::spawn(async move { client.get(url).send().await.map(|r| r.status()) })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("task").expect("GET"), 200);
    }
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "requests ran serially"
    );
    assert_eq!(server.hits("/slow"), 100);
    assert_eq!(server.hits("/jwks"), 200);
    assert_eq!(server.total_hits(), 300);
}

#[tokio::test]
async fn drop_stops_serving_even_kept_alive_connections() {
    let server = KeyServer::http().await;
    server.set("/jwks", Reply::json("{}"));
    let url = server.url("/jwks");
    let client = client();
    let response = client.get(&url).send().await.expect("GET");
    assert_eq!(response.status(), 200);
    let _ = response.bytes().await;
    drop(server);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let error = client.get(&url).send().await.expect_err("server is gone");
    assert!(!error.is_timeout(), "{error}");
}
