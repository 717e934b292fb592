//! The seed corpora of every target, generated from the fixture's test tokens, keys and
//! configuration. `tests/fuzz_regressions.rs` writes them to `fuzz/seeds/<target>/` when
//! `FEDAUTHZ_WRITE_FUZZ_SEEDS=1` is set (signatures by ES256 and PS256 are randomized, so a
//! rewrite changes those files; the committed ones are kept unless a seed has to change), and
//! replays the committed files through their targets in every test run.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fedauthz::proto::auth::CheckRequest;
use prost::Message as _;
use serde_json::{Value, json};

use super::fixture::{self, AUD, ISSUERS, NOW};
use super::targets::{SIGNED_SEPARATOR, http_request, parse_headers};

/// The fuzz targets, by name (each has `fuzz/fuzz_targets/<name>.rs`).
pub const TARGETS: [&str; 9] = [
    "jws_compact",
    "jwe_decrypt",
    "verify_token",
    "verify_signed",
    "key_documents",
    "check_request",
    "check_headers",
    "config",
    "api_key",
];

/// Runs target `name` on `data`.
pub fn run(name: &str, data: &[u8]) {
    use super::targets;
    match name {
        "jws_compact" => targets::jws_compact(data),
        "jwe_decrypt" => targets::jwe_decrypt(data),
        "verify_token" => targets::verify_token(data),
        "verify_signed" => targets::verify_signed(data),
        "key_documents" => targets::key_documents(data),
        "check_request" => targets::check_request(data),
        "check_headers" => targets::check_headers(data),
        "config" => targets::config(data),
        "api_key" => targets::api_key(data),
        other => panic!("no fuzz target {other:?}"),
    }
}

/// One seed: its file name and bytes.
pub type Seed = (String, Vec<u8>);

/// A change to a token's claims.
type Edit = fn(&mut Value);

fn seed(name: &str, bytes: impl Into<Vec<u8>>) -> Seed {
    (name.to_owned(), bytes.into())
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Header and claims of fixture issuer `id`, with `edit` applied to the claims.
fn parts(id: &str, edit: impl FnOnce(&mut Value)) -> (String, String) {
    let (_, _, header) = ISSUERS
        .iter()
        .find(|(name, _, _)| *name == id)
        .expect("a fixture issuer");
    let mut claims = fixture::claims_for(id);
    edit(&mut claims);
    ((*header).to_owned(), claims.to_string())
}

/// Seeds of `jwe_decrypt`: nested tokens that open (ECDH-ES and `dir`, each content
/// encryption), and framings next to them that must be refused.
fn jwe_decrypt() -> Vec<Seed> {
    let jws = fixture::token_for("ed");
    let jws = jws.as_bytes();
    let ecdh = fixture::encrypt_token(jws, false, "A128GCM", &[]);
    let mut seeds = vec![
        seed("ecdh-es-a128gcm", ecdh.clone()),
        seed(
            "ecdh-es-a256gcm",
            fixture::encrypt_token(jws, false, "A256GCM", &[]),
        ),
        seed(
            "ecdh-es-cbc",
            fixture::encrypt_token(jws, false, "A128CBC-HS256", &[]),
        ),
        seed(
            "dir-a128gcm",
            fixture::encrypt_token(jws, true, "A128GCM", &[]),
        ),
        seed(
            "zip",
            fixture::encrypt_token(jws, false, "A128GCM", &[("zip", json!("DEF"))]),
        ),
        seed(
            "crit",
            fixture::encrypt_token(jws, false, "A128GCM", &[("crit", json!(["exp"]))]),
        ),
        seed(
            "nested",
            fixture::encrypt_token(ecdh.as_bytes(), false, "A128GCM", &[]),
        ),
        seed(
            "encrypt-only",
            fixture::encrypt_token(
                br#"{"sub":"alice","iss":"https://ed.fuzz.example"}"#,
                true,
                "A128GCM",
                &[],
            ),
        ),
    ];
    let parts: Vec<&str> = ecdh.split('.').collect();
    let with = |index: usize, value: &str| {
        let mut parts: Vec<String> = parts.iter().map(|p| (*p).to_owned()).collect();
        if let Some(part) = parts.get_mut(index) {
            *part = value.to_owned();
        }
        parts.join(".")
    };
    let tag = parts.get(4).copied().unwrap_or_default();
    seeds.push(seed(
        "short-tag",
        with(4, tag.get(..tag.len().saturating_sub(4)).unwrap_or("")),
    ));
    seeds.push(seed("no-iv", with(2, "")));
    seeds.push(seed(
        "rsa1_5-header",
        with(
            0,
            &b64(r#"{"alg":"RSA1_5","enc":"A128GCM","kid":"fz-x25519","cty":"JWT"}"#),
        ),
    ));
    seeds.push(seed(
        "pbes2-header",
        with(0, &b64(r#"{"alg":"PBES2-HS256+A128KW","enc":"A128GCM","kid":"fz-x25519","cty":"JWT","p2s":"AAAA","p2c":2000000000}"#)),
    ));
    seeds
}

/// Tokens that verify, one per issuer, and signed tokens that fail one claim check each.
fn tokens() -> Vec<Seed> {
    let mut seeds: Vec<Seed> = ISSUERS
        .iter()
        .map(|(id, _, _)| seed(&format!("valid-{id}"), fixture::token_for(id)))
        .collect();
    let failing: [(&str, &str, Edit); 8] = [
        ("expired", "ed", |c| c["exp"] = json!(NOW - 3600)),
        ("not-yet-valid", "ed", |c| c["nbf"] = json!(NOW + 3600)),
        ("wrong-audience", "rsa", |c| c["aud"] = json!(["other"])),
        ("lifetime", "rsa", |c| c["exp"] = json!(NOW + 86_400)),
        ("wrong-tenant", "entra", |c| {
            c["iss"] = json!(
                "https://login.microsoftonline.com/99999999-2222-3333-4444-555555555555/v2.0"
            );
        }),
        ("id-token", "cognito", |c| c["token_use"] = json!("id")),
        ("float-dates", "k8s", |c| c["exp"] = json!(1.7672262e9)),
        ("no-sub", "hs", |c| {
            if let Value::Object(map) = c {
                map.remove("sub");
            }
        }),
    ];
    for (name, id, edit) in failing {
        let (header, claims) = parts(id, edit);
        seeds.push(seed(
            name,
            fixture::sign_token(header.as_bytes(), claims.as_bytes()),
        ));
    }
    seeds
}

/// Seeds of `jws_compact`: the tokens, and framing variants.
fn jws_compact() -> Vec<Seed> {
    let mut seeds = tokens();
    seeds.truncate(ISSUERS.len());
    let sig = b64([7u8; 64]);
    let framed = [
        (
            "padded",
            format!("{}=.{}.{sig}", b64(r#"{"alg":"ES256"}"#), b64("{}")),
        ),
        ("jwe", "eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d".to_owned()),
        (
            "empty-payload",
            format!("{}..{sig}", b64(r#"{"alg":"HS256"}"#)),
        ),
        (
            "crit",
            format!(
                "{}.{}.{sig}",
                b64(r#"{"alg":"ES256","crit":["exp"],"exp":1}"#),
                b64("{}")
            ),
        ),
        (
            "jku",
            format!(
                "{}.{}.{sig}",
                b64(r#"{"alg":"RS256","jku":"https://x"}"#),
                b64("{}")
            ),
        ),
        (
            "b64-false",
            format!(
                "{}.{}.{sig}",
                b64(r#"{"alg":"RS256","b64":false}"#),
                b64("{}")
            ),
        ),
        (
            "duplicate-alg",
            format!(
                "{}.{}.{sig}",
                b64(r#"{"alg":"RS256","alg":"none"}"#),
                b64("{}")
            ),
        ),
        (
            "kid-number",
            format!(
                "{}.{}.{sig}",
                b64(r#"{"alg":"RS256","kid":7}"#),
                b64(r#"{"a":[1,{"b":null}]}"#)
            ),
        ),
        (
            "two-segments",
            format!("{}.{}", b64(r#"{"alg":"none"}"#), b64("{}")),
        ),
    ];
    seeds.extend(framed.into_iter().map(|(n, t)| seed(n, t)));
    seeds
}

/// Seeds of `verify_signed`: header, separator, claims for each issuer, and failing variants.
fn verify_signed() -> Vec<Seed> {
    let joined = |header: &str, claims: &str| {
        let mut bytes = header.as_bytes().to_vec();
        bytes.push(SIGNED_SEPARATOR);
        bytes.extend_from_slice(claims.as_bytes());
        bytes
    };
    let mut seeds: Vec<Seed> = ISSUERS
        .iter()
        .map(|(id, _, _)| {
            let (header, claims) = parts(id, |_| {});
            seed(&format!("valid-{id}"), joined(&header, &claims))
        })
        .collect();
    seeds.push(seed("payload-only", fixture::claims_for("ed").to_string()));
    let variants: [(&str, &str, &str, Edit); 7] = [
        ("ps256", "rsa", r#"{"alg":"PS256","kid":"rsa-1"}"#, |_| {}),
        ("hs512", "hs", r#"{"alg":"HS512","kid":"hs-1"}"#, |_| {}),
        (
            "entra-overage",
            "entra",
            r#"{"alg":"ES256","kid":"entra-1"}"#,
            |c| {
                if let Value::Object(map) = c {
                    map.remove("groups");
                }
                c["_claim_names"] = json!({"groups": "src1"});
            },
        ),
        (
            "typ-mismatch",
            "ed",
            r#"{"alg":"EdDSA","kid":"ed-1","typ":"id+jwt"}"#,
            |_| {},
        ),
        ("huge-exp", "ed", r#"{"alg":"EdDSA","kid":"ed-1"}"#, |c| {
            c["exp"] = json!(1e300)
        }),
        ("aud-list", "ed", r#"{"alg":"EdDSA","kid":"ed-1"}"#, |c| {
            c["aud"] = json!(["x", AUD, 3])
        }),
        (
            "admin-claims",
            "ed",
            r#"{"alg":"EdDSA","kid":"ed-1"}"#,
            |c| {
                c["perms"] = json!(["orders:read", "admin"]);
                c["realm_access"] = json!({"roles": "admin"});
            },
        ),
    ];
    for (name, id, header, edit) in variants {
        let (_, claims) = parts(id, edit);
        seeds.push(seed(name, joined(header, &claims)));
    }
    seeds
}

/// Seeds of `key_documents`: the fixture's key sets, PEM maps, a SPIFFE bundle, single PEMs.
fn key_documents() -> Vec<Seed> {
    let k = fixture::keys();
    let with = |public: &Value, members: Value| {
        let mut jwk = public.clone();
        if let (Value::Object(jwk), Value::Object(members)) = (&mut jwk, members) {
            jwk.extend(members);
        }
        jwk
    };
    let set = |keys: Vec<Value>| json!({ "keys": keys }).to_string();
    vec![
        seed("jwks-ed", set(vec![with(&k.ed_public, json!({"kid": "ed-1", "alg": "EdDSA", "use": "sig"}))])),
        seed("jwks-ec", set(vec![with(&k.p256_public, json!({"kid": "ec-1", "alg": "ES256"}))])),
        seed("jwks-rsa", set(vec![with(&k.rsa_public, json!({"kid": "rsa-1", "use": "sig", "key_ops": ["verify"]}))])),
        seed("jwks-mixed", set(vec![
            with(&k.ed_public, json!({"kid": "a"})),
            with(&k.p256_public, json!({"kid": "b", "use": "enc"})),
            with(&k.rsa_public, json!({"kid": "c", "alg": "PS256", "issuer": "https://login.microsoftonline.com/{tenantid}/v2.0"})),
            json!({"kty": "oct", "k": "AAAA", "kid": "d"}),
            json!({"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA", "kid": "e"}),
        ])),
        seed("jwks-duplicate-kid", set(vec![
            with(&k.ed_public, json!({"kid": "same"})),
            with(&k.p256_public, json!({"kid": "same"})),
        ])),
        seed("pem-map", json!({
            "ec-1": k.p256_public_pem, "rsa-cert": fixture::RSA_CERT_PEM,
            "ed-1": k.ed_public_pem, "bad": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        }).to_string()),
        seed("spiffe-bundle", json!({
            "spiffe_sequence": 3, "spiffe_refresh_hint": 300,
            "keys": [
                with(&k.p256_public, json!({"kid": "svid-1", "use": "jwt-svid"})),
                with(&k.rsa_public, json!({"kid": "svid-2", "use": "jwt-svid"})),
                with(&k.rsa_public, json!({"use": "x509-svid", "x5c": ["AAAA"]})),
            ],
        }).to_string()),
        seed("pem-ec", k.p256_public_pem.clone()),
        seed("pem-rsa", k.rsa_public_pem.clone()),
        seed("pem-ed", k.ed_public_pem.clone()),
        seed("pem-cert", fixture::RSA_CERT_PEM),
    ]
}

/// The requests both check targets start from: each fixture token where its issuer expects
/// it, plus routes that need context extensions, a principal or raw headers.
fn requests() -> Vec<(String, String)> {
    let ed = fixture::token_for("ed");
    let mut requests: Vec<(String, String)> = ISSUERS
        .iter()
        .filter(|(id, _, _)| *id != "alb")
        .map(|(id, _, _)| {
            (
                format!("bearer-{id}"),
                format!(
                    "GET api.fuzz.example /orders/1\nauthorization: Bearer {}\nx-request-id: r-1",
                    fixture::token_for(id)
                ),
            )
        })
        .collect();
    let more = [
        (
            "alb-header",
            format!(
                "GET api.fuzz.example /orders\nx-amzn-oidc-data: {}",
                fixture::token_for("alb")
            ),
        ),
        (
            "named-header",
            format!("HEAD www.fuzz.example /orders\nx-fuzz-token: {ed}"),
        ),
        (
            "cookie",
            format!("GET api.fuzz.example /orders/2\ncookie: a=b; fuzz_session={ed}; c=d"),
        ),
        (
            "admin",
            format!(
                "GET api.fuzz.example /admin/users\nauthorization: Bearer {ed}\n@ctx zone=internal\n@principal spiffe://fuzz.example/ns/a/sa/b"
            ),
        ),
        (
            "raw-headers",
            format!(
                "POST api.fuzz.example /orders\n@raw\nAuthorization: Bearer {ed}\ncookie: a=1\ncookie: fuzz_session=x\nx-auth-subject: forged"
            ),
        ),
        (
            "two-credentials",
            format!("GET api.fuzz.example /orders\nauthorization: Bearer {ed}\nx-fuzz-token: {ed}"),
        ),
        (
            "anonymous",
            "GET api.fuzz.example /healthz\nx-auth-subject: forged".to_owned(),
        ),
        ("no-token", "DELETE api.fuzz.example /orders/3".to_owned()),
    ];
    requests.extend(more.into_iter().map(|(n, r)| (n.to_owned(), r)));
    requests
}

/// Seeds of `check_headers`: the requests in its text format.
fn check_headers() -> Vec<Seed> {
    requests().into_iter().map(|(n, r)| seed(&n, r)).collect()
}

/// Seeds of `check_request`: the same requests, protobuf-encoded.
fn check_request() -> Vec<Seed> {
    let mut seeds: Vec<Seed> = requests()
        .into_iter()
        .map(|(n, r)| seed(&n, parse_headers(&r).encode_to_vec()))
        .collect();
    seeds.push(seed("empty", Vec::new()));
    seeds.push(seed("no-http", CheckRequest::default().encode_to_vec()));
    seeds.push(seed("bare", http_request("GET", "h", "/").encode_to_vec()));
    seeds
}

/// Seeds of `config`: the fixture's configuration, the deploy examples, small variants.
fn config() -> Vec<Seed> {
    let examples = [
        (
            "example-two-issuers",
            include_str!("../../../deploy/examples/two-issuers.yaml"),
        ),
        (
            "example-orders-api",
            include_str!("../../../deploy/examples/orders-api.yaml"),
        ),
    ];
    let mut seeds = vec![seed("fixture", fixture::config_yaml(None))];
    seeds.extend(examples.into_iter().map(|(n, y)| seed(n, y)));
    let small = [
        (
            "minimal",
            "issuers:\n  - id: a\n    issuer: https://a.example\n    keys: { jwks_uri: https://a.example/jwks }\n    audiences: [api]\n",
        ),
        (
            "hmac-env",
            "issuers:\n  - id: h\n    issuer: https://h.example\n    hmac_secret: { env: FEDAUTHZ_FUZZ_UNSET, kid: k }\n    algorithms: [HS256]\n    skip_audience_check: internal tokens\n",
        ),
        (
            "anchors",
            "x: &a { id: a, issuer: 'https://a.example', audiences: [api], keys: { jwks: { keys: [] } } }\nissuers: [*a]\ndefault_decision: allow\n",
        ),
        (
            "routes",
            "default_decision: deny\nresponse: { realm: r, headers: { x-t: '{tenant}-{claims.a.b}' } }\nroutes:\n  - name: r1\n    match: { hosts: ['*.x'], paths: ['/a*b'], principals: ['spiffe://*'] }\n    require: { any_of: [ { scopes: [s] } ], claims: [ { path: a.b, glob: 'x*' } ] }\nissuers: []\n",
        ),
    ];
    seeds.extend(small.into_iter().map(|(n, y)| seed(n, y)));
    seeds
}

/// Seeds of `api_key`: the valid key, near misses of it, and shapes the parsers must refuse.
fn api_key() -> Vec<Seed> {
    let key = fixture::API_KEY;
    let mut last = key.to_owned();
    last.pop();
    last.push('x');
    [
        ("valid", key.to_owned()),
        ("padded", format!("  {key}  ")),
        ("wrong-last", last),
        ("unknown-id", key.replace("fuzz-1", "fuzz-2")),
        ("other-set", key.replace("fak_", "ops_")),
        ("no-secret", "fak_fuzz-1_".to_owned()),
        ("no-separator", "fak_fuzz-1".to_owned()),
        ("two-values", format!("{key},{key}")),
        ("percent", key.replace('_', "%5F")),
        ("long", format!("fak_fuzz-1_{}", "A".repeat(600))),
        ("prefix-only", "fak_".to_owned()),
    ]
    .into_iter()
    .map(|(name, text)| seed(name, text))
    .collect()
}

/// Every target's seeds.
pub fn all() -> Vec<(&'static str, Vec<Seed>)> {
    vec![
        ("jws_compact", jws_compact()),
        ("jwe_decrypt", jwe_decrypt()),
        ("verify_token", tokens()),
        ("verify_signed", verify_signed()),
        ("key_documents", key_documents()),
        ("check_request", check_request()),
        ("check_headers", check_headers()),
        ("config", config()),
        ("api_key", api_key()),
    ]
}
