//! In-process benchmarks of the Check pipeline (issue 7): the full pipeline uncached (parse →
//! verify → rules → response) per algorithm, nested JWTs (decrypt + verify) per JWE algorithm
//! beside the plain token, a verified-token cache hit, and route evaluation with 100 routes. Keys are generated and inline JWK Sets written here; tokens carry integer
//! NumericDates. Run: `cargo bench --bench pipeline` (BENCHMARKS.md has the numbers).
//!
//! Wall-clock time by default; `FEDAUTHZ_BENCH_CLOCK=cpu` measures the benchmark thread's CPU
//! time instead, which other processes on a busy (shared) machine do not inflate.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::Criterion;
use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use fedauthz::authz::{Authentication, Authorizer};
use fedauthz::pipeline::{Generation, Pipeline};
use fedauthz::proto::auth::attribute_context::{HttpRequest, Request as AttrRequest};
use fedauthz::proto::auth::{AttributeContext, CheckRequest};
use fedauthz::service::{RequestHeaders, request_facts, unix_now};
use josekit::jwk::{Jwk, KeyPair as _};
use josekit::jws::JwsSigner;
use serde_json::{Value, json};

const AUD: &str = "orders-api";

/// One issuer with its own key: its id, `iss`, JWK Set and signer.
struct Issuer {
    id: &'static str,
    iss: String,
    alg: &'static str,
    jwks: Value,
    signer: Box<dyn JwsSigner>,
}

impl Issuer {
    fn new(id: &'static str, alg: &'static str) -> Self {
        let (private, public): (Jwk, Jwk) = match alg {
            "RS256" => {
                let pair = josekit::jws::RS256.generate_key_pair(2048).expect("RSA");
                (pair.to_jwk_private_key(), pair.to_jwk_public_key())
            }
            "PS256" => {
                let pair = josekit::jws::PS256
                    .generate_key_pair(2048)
                    .expect("RSA-PSS");
                (pair.to_jwk_private_key(), pair.to_jwk_public_key())
            }
            "ES256" => {
                let pair = josekit::jws::ES256.generate_key_pair().expect("EC");
                (pair.to_jwk_private_key(), pair.to_jwk_public_key())
            }
            _ => {
                let pair = josekit::jws::EdDSA
                    .generate_key_pair(josekit::jwk::alg::ed::EdCurve::Ed25519)
                    .expect("Ed25519");
                (pair.to_jwk_private_key(), pair.to_jwk_public_key())
            }
        };
        let signer: Box<dyn JwsSigner> = match alg {
            "RS256" => Box::new(
                josekit::jws::RS256
                    .signer_from_jwk(&private)
                    .expect("signer"),
            ),
            "PS256" => Box::new(
                josekit::jws::PS256
                    .signer_from_jwk(&private)
                    .expect("signer"),
            ),
            "ES256" => Box::new(
                josekit::jws::ES256
                    .signer_from_jwk(&private)
                    .expect("signer"),
            ),
            _ => Box::new(
                josekit::jws::EdDSA
                    .signer_from_jwk(&private)
                    .expect("signer"),
            ),
        };
        let mut jwk = Value::Object(public.as_ref().clone());
        jwk["kid"] = json!(format!("{id}-1"));
        jwk["alg"] = json!(alg);
        jwk["use"] = json!("sig");
        Self {
            id,
            iss: format!("https://{id}.idp.example"),
            alg,
            jwks: json!({ "keys": [jwk] }),
            signer,
        }
    }

    /// A token like a real access token (integer NumericDates), valid for an hour.
    fn token(&self, sub: &str, now: i64) -> String {
        let header = json!({ "alg": self.alg, "kid": format!("{}-1", self.id), "typ": "JWT" });
        let claims = json!({
            "iss": self.iss, "sub": sub, "aud": AUD, "iat": now, "nbf": now, "exp": now + 3600,
            "jti": "5f1c0e2a-8d4b-4c55-9d6e-0a1b2c3d4e5f", "scope": "orders:read orders:write",
            "email": format!("{sub}@example.com"), "groups": ["staff", "eu", "orders"],
        });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self.signer.sign(input.as_bytes()).expect("sign");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    fn yaml(&self) -> String {
        format!(
            "  - {{id: {}, issuer: '{}', audiences: [{AUD}], keys: {{jwks: {}}}}}\n",
            self.id, self.iss, self.jwks
        )
    }
}

fn generation(issuers: &[Issuer], rest: &str) -> Generation {
    let mut yaml = String::from("issuers:\n");
    for issuer in issuers {
        yaml.push_str(&issuer.yaml());
    }
    yaml.push_str(rest);
    let config = fedauthz::config::parse_yaml(&yaml, "bench.yaml").expect("config");
    Generation::build(config, None, &Arc::new(tokio::sync::Notify::new())).expect("generation")
}

/// A CheckRequest as Envoy sends it: a handful of headers besides the token.
fn request(token: &str, path: &str) -> CheckRequest {
    let headers: HashMap<String, String> = [
        (":authority", "api.example.com"),
        (":method", "GET"),
        (":path", path),
        ("accept", "application/json"),
        ("user-agent", "bench/1.0"),
        ("x-request-id", "7f0c2b2e-1111-2222-3333-444455556666"),
        ("x-forwarded-proto", "https"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .chain([("authorization".to_owned(), format!("Bearer {token}"))])
    .collect();
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(AttrRequest {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    host: "api.example.com".into(),
                    path: path.into(),
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// One check through `pipeline`, asserting (once, outside the timing) that it allows.
fn check_allows(pipeline: &Pipeline, request: &CheckRequest, now: i64) {
    let checked = pipeline.check(&RequestHeaders::of(request), &request_facts(request), now);
    assert!(
        matches!(checked.decision, fedauthz::authz::Decision::Allow(Some(_))),
        "the benchmark request must be allowed: {:?}",
        checked.decision
    );
}

const ROUTES: &str = "routes:
  - name: orders
    match: { paths: ['/orders*'], methods: [GET] }
    require: { scopes: ['orders:read'] }
";

fn uncached<M: Measurement>(c: &mut Criterion<M>) {
    let now = unix_now();
    let issuers: Vec<Issuer> = [
        ("rsa", "RS256"),
        ("pss", "PS256"),
        ("ec", "ES256"),
        ("ed", "EdDSA"),
    ]
    .into_iter()
    .map(|(id, alg)| Issuer::new(id, alg))
    .collect();
    let generation = generation(
        &issuers,
        &format!("token_cache: {{max_entries: 0}}\n{ROUTES}"),
    );
    let pipeline = &generation.pipeline;
    let mut group = c.benchmark_group("pipeline_uncached");
    for issuer in &issuers {
        let request = request(&issuer.token("alice", now), "/orders/7");
        check_allows(pipeline, &request, now);
        group.bench_function(issuer.alg, |b| {
            b.iter(|| {
                let headers = RequestHeaders::of(black_box(&request));
                black_box(pipeline.check(&headers, &request_facts(&request), now))
            });
        });
    }
    group.finish();
}

/// Nested JWTs (an ES256 token inside a JWE) through the uncached pipeline, per key
/// management and content encryption, beside the same ES256 token sent plain.
fn encrypted<M: Measurement>(c: &mut Criterion<M>) {
    use josekit::jwe::{self, JweContext, JweHeader};
    use josekit::jwk::alg::ec::{EcCurve, EcKeyPair};
    use josekit::jwk::alg::ecx::{EcxCurve, EcxKeyPair};

    let now = unix_now();
    let issuer = Issuer::new("ec", "ES256");
    let dir = tempfile::tempdir().expect("tempdir");
    let rsa = jwe::RSA_OAEP_256.generate_key_pair(2048).expect("RSA");
    let p256 = EcKeyPair::generate(EcCurve::P256).expect("P-256");
    let x25519 = EcxKeyPair::generate(EcxCurve::X25519).expect("X25519");
    let mut shared = Jwk::new("oct");
    shared
        .set_parameter("k", Some(Value::String(URL_SAFE_NO_PAD.encode([9u8; 32]))))
        .expect("k");
    let file = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).expect("write key");
        path.display().to_string()
    };
    let keys = format!(
        "decryption:\n  content_encryption: [A128GCM, A256GCM, A128CBC-HS256]\n  keys:\n    - {{kid: rsa, algorithm: RSA-OAEP-256, file: {}}}\n    - {{kid: p256, algorithm: ECDH-ES+A128KW, file: {}}}\n    - {{kid: x25519, algorithm: ECDH-ES, file: {}}}\n    - {{kid: dir, algorithm: dir, file: {}}}\n",
        file("rsa.pem", &rsa.to_pem_private_key()),
        file("p256.json", p256.to_jwk_key_pair().to_string().as_bytes()),
        file(
            "x25519.json",
            x25519.to_jwk_key_pair().to_string().as_bytes()
        ),
        file("dir.json", shared.to_string().as_bytes()),
    );
    let yaml = issuer
        .yaml()
        .replace("keys: {jwks:", "accept_encrypted: true, keys: {jwks:");
    let config = fedauthz::config::parse_yaml(
        &format!("{keys}issuers:\n{yaml}token_cache: {{max_entries: 0}}\n{ROUTES}"),
        "bench.yaml",
    )
    .expect("config");
    let generation =
        Generation::build(config, None, &Arc::new(tokio::sync::Notify::new())).expect("generation");
    let pipeline = &generation.pipeline;
    let jws = issuer.token("alice", now);
    let seal = |kid: &str, enc: &str, encrypter: &dyn josekit::jwe::JweEncrypter| {
        let mut header = JweHeader::new();
        header.set_content_encryption(enc);
        header.set_key_id(kid);
        header.set_content_type("JWT");
        JweContext::new()
            .serialize_compact(jws.as_bytes(), &header, encrypter)
            .expect("encrypt")
    };
    let cases: Vec<(&str, String)> = vec![
        ("ES256 plain", jws.clone()),
        (
            "RSA-OAEP-256+A256GCM",
            seal(
                "rsa",
                "A256GCM",
                &jwe::RSA_OAEP_256
                    .encrypter_from_jwk(&rsa.to_jwk_public_key())
                    .expect("enc"),
            ),
        ),
        (
            "ECDH-ES+A128KW+A128GCM (P-256)",
            seal(
                "p256",
                "A128GCM",
                &jwe::ECDH_ES_A128KW
                    .encrypter_from_jwk(&p256.to_jwk_public_key())
                    .expect("enc"),
            ),
        ),
        (
            "ECDH-ES+A128GCM (X25519)",
            seal(
                "x25519",
                "A128GCM",
                &jwe::ECDH_ES
                    .encrypter_from_jwk(&x25519.to_jwk_public_key())
                    .expect("enc"),
            ),
        ),
        (
            "ECDH-ES+A128CBC-HS256 (X25519)",
            seal(
                "x25519",
                "A128CBC-HS256",
                &jwe::ECDH_ES
                    .encrypter_from_jwk(&x25519.to_jwk_public_key())
                    .expect("enc"),
            ),
        ),
        (
            "dir+A256GCM",
            seal(
                "dir",
                "A256GCM",
                &jwe::Dir.encrypter_from_jwk(&shared).expect("enc"),
            ),
        ),
    ];
    let mut group = c.benchmark_group("pipeline_encrypted");
    for (name, token) in &cases {
        let request = request(token, "/orders/7");
        check_allows(pipeline, &request, now);
        group.bench_function(*name, |b| {
            b.iter(|| {
                let headers = RequestHeaders::of(black_box(&request));
                black_box(pipeline.check(&headers, &request_facts(&request), now))
            });
        });
    }
    group.finish();
}

fn cached<M: Measurement>(c: &mut Criterion<M>) {
    let now = unix_now();
    let issuers = vec![Issuer::new("rsa", "RS256")];
    let generation = generation(&issuers, ROUTES);
    let pipeline = &generation.pipeline;
    let request = request(&issuers[0].token("alice", now), "/orders/7");
    check_allows(pipeline, &request, now);
    // The second check is the path measured: a cache hit (checked here, so that a filtered
    // run that skips this group does not fail).
    check_allows(pipeline, &request, now);
    assert!(pipeline.cache_stats().hits() > 0);
    let mut group = c.benchmark_group("pipeline_cached");
    group.bench_function("hit_RS256", |b| {
        b.iter(|| {
            let headers = RequestHeaders::of(black_box(&request));
            black_box(pipeline.check(&headers, &request_facts(&request), now))
        });
    });
    group.finish();
}

/// `request` with `Authorization` replaced by `x-api-key: key`.
fn key_request(key: &str, path: &str) -> CheckRequest {
    let mut request = request("unused", path);
    if let Some(http) = request
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
    {
        http.headers.remove("authorization");
        http.headers.insert("x-api-key".into(), key.to_owned());
    }
    request
}

/// API keys beside the JWT path: one set of 1,000 keys (SHA-256 digests), the same route.
fn api_keys<M: Measurement>(c: &mut Criterion<M>) {
    let now = unix_now();
    let issuers = vec![Issuer::new("rsa", "RS256")];
    let mut keys = Vec::new();
    let mut entries = String::new();
    for n in 0..1000 {
        let (key, hash) =
            fedauthz::verify::api_key::generate("fak_", &format!("client-{n}"), None).expect("key");
        entries.push_str(&format!(
            "      - {{ id: client-{n}, hash: '{hash}', subject: client-{n}, scopes: ['orders:read'] }}\n"
        ));
        keys.push(key);
    }
    let generation = generation(
        &issuers,
        &format!("api_keys:\n  - id: partners\n    keys:\n{entries}{ROUTES}"),
    );
    let pipeline = &generation.pipeline;
    let valid = key_request(&keys[500], "/orders/7");
    check_allows(pipeline, &valid, now);
    let mut wrong = keys[500].clone();
    wrong.truncate(wrong.len() - 4);
    wrong.push_str("AAAA");
    let wrong = key_request(&wrong, "/orders/7");
    let mut group = c.benchmark_group("pipeline_api_key");
    group.bench_function("valid", |b| {
        b.iter(|| {
            let headers = RequestHeaders::of(black_box(&valid));
            black_box(pipeline.check(&headers, &request_facts(&valid), now))
        });
    });
    group.bench_function("wrong_secret", |b| {
        b.iter(|| {
            let headers = RequestHeaders::of(black_box(&wrong));
            black_box(pipeline.check(&headers, &request_facts(&wrong), now))
        });
    });
    group.finish();
}

fn hundred_routes<M: Measurement>(c: &mut Criterion<M>) {
    let now = unix_now();
    let issuers = vec![Issuer::new("rsa", "RS256")];
    let mut routes = String::from("routes:\n");
    for i in 0..100 {
        routes.push_str(&format!(
            "  - name: svc-{i}\n    match: {{ hosts: ['*.example.com'], paths: ['/svc-{i}/*'], methods: [GET, POST] }}\n    require: {{ issuers: [rsa], scopes: ['orders:read'] }}\n"
        ));
    }
    let generation = generation(&issuers, &routes);
    let pipeline = &generation.pipeline;
    let request = request(&issuers[0].token("alice", now), "/svc-99/items/1");
    check_allows(pipeline, &request, now);
    let config = &generation.config;
    let authorizer = Authorizer::new(config);
    let token = pipeline
        .issuers()
        .verify(
            &issuers[0].token("alice", now),
            fedauthz::extract::LocationSet::single(0),
            now,
        )
        .map(Arc::new)
        .expect("verifies");
    let mut group = c.benchmark_group("routes_100");
    group.bench_function("authorize_last_route", |b| {
        let facts = request_facts(&request);
        b.iter(|| {
            let verdict = authorizer.decide(
                black_box(&facts),
                Authentication::Verified(Arc::clone(&token)),
            );
            assert_eq!(verdict.route.as_deref(), Some("svc-99"));
            black_box(verdict)
        });
    });
    group.bench_function("pipeline_cache_hit_last_route", |b| {
        b.iter(|| {
            let headers = RequestHeaders::of(black_box(&request));
            black_box(pipeline.check(&headers, &request_facts(&request), now))
        });
    });
    group.finish();
}

/// The CPU time of the benchmark thread (CLOCK_THREAD_CPUTIME_ID), in nanoseconds.
struct ThreadCpuTime;

struct Nanoseconds;

impl ValueFormatter for Nanoseconds {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = if typical < 1e3 {
            (1.0, "ns")
        } else if typical < 1e6 {
            (1e-3, "µs")
        } else {
            (1e-6, "ms")
        };
        for value in values {
            *value *= factor;
        }
        unit
    }

    fn scale_throughputs(
        &self,
        _typical: f64,
        _throughput: &criterion::Throughput,
        _values: &mut [f64],
    ) -> &'static str {
        "ns"
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

impl Measurement for ThreadCpuTime {
    type Intermediate = cpu_time::ThreadTime;
    type Value = Duration;

    fn start(&self) -> Self::Intermediate {
        cpu_time::ThreadTime::now()
    }

    fn end(&self, started: Self::Intermediate) -> Self::Value {
        started.elapsed()
    }

    fn add(&self, v1: &Self::Value, v2: &Self::Value) -> Self::Value {
        *v1 + *v2
    }

    fn zero(&self) -> Self::Value {
        Duration::ZERO
    }

    fn to_f64(&self, value: &Self::Value) -> f64 {
        value.as_nanos() as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        &Nanoseconds
    }
}

fn run<M: Measurement>(mut c: Criterion<M>) {
    c = c
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(40)
        .configure_from_args();
    uncached(&mut c);
    encrypted(&mut c);
    cached(&mut c);
    api_keys(&mut c);
    hundred_routes(&mut c);
    c.final_summary();
}

fn main() {
    if std::env::var("FEDAUTHZ_BENCH_CLOCK").as_deref() == Ok("cpu") {
        run(Criterion::default().with_measurement(ThreadCpuTime));
    } else {
        run(Criterion::<WallTime>::default());
    }
}
