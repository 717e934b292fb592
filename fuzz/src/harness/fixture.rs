//! The fixed world every fuzz target runs in: test keys, one configuration with several
//! issuers (inline keys only, so building it does no network I/O), its compiled pipeline, and
//! a signer that turns header and payload bytes into a token those issuers accept.
//!
//! Everything is deterministic: the keys are constants, the clock is [`NOW`], so a crash
//! input replays the same way in `cargo fuzz run` and in `tests/fuzz_regressions.rs`.

use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fedauthz::pipeline::Generation;
use josekit::jwk::KeyPair as _;
use josekit::jws::JwsSigner;
use serde_json::{Value, json};

/// The fixed clock of every target: 2026-01-01T00:00:00Z.
pub const NOW: i64 = 1_767_225_600;

/// Audience of the fixture's issuers.
pub const AUD: &str = "fuzz-api";

/// Ed25519 test key (PKCS#8). Test material only: it signs nothing but fuzz inputs.
pub const ED25519_PEM: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MC4CAQAwBQYDK2VwBCIEIGglMQtaOBJw5FBXixX1xv+DnrHN6cBcAruCfwj3XosF\n\
-----END PRIVATE KEY-----\n\
";

/// P-256 test key (PKCS#8).
pub const P256_PEM: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgZ4/+gRLS83K9vyUf\n\
YspgK8PGkuAvOCTNFOs0ENZdmhahRANCAAQN9mh0Zsw7w168T5yysDAuOcQQ89g6\n\
s2MxcVneTb83DV9AqehbTZHm0pIrdgummOzJ96RwcRVv31JsZMziG13Z\n\
-----END PRIVATE KEY-----\n\
";

/// RSA 2048 test key (PKCS#8).
pub const RSA_PEM: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC96vwfFcNgctcN\n\
dpQ/zznANZE2M9UsH1Ut4DW7dgxr/cQ4OmJyxOXNw2rdrn8dSlDdtvcaKogDHmWA\n\
AOAUosCyOvpxyWvojAVbgT4kVP9YZtdT0vWPCFdBNEXAgsKSVuAboKpxTvDHjTPa\n\
5vvr2dFO0Fgh8P+I9Z7U9yHHXUICT/0ngg69InuDdq+eCl1idTmWSb/uEBm9Lanz\n\
oefa2Fku1juVR4Xk2o5nNCEiqtR7J/5X6Nt9PRZW7PHvgHcH0MNIlMeNhk9g2Vnm\n\
/SLtlDRlzYbup82GVjhEiP7OQ7mUj3Mwjoryc40og6HwyrAJh0qr9fw2el9w0836\n\
yDeF/mTzAgMBAAECggEAFbtr+kqilB4lXv8GBn86Boqaq+8md5QQ9TJGM8YAXzh8\n\
rvUktX6zz+XgDASfEG+j7UW15Pf09Gu9WvZpWIh/MGXwqVCj2R/HWn826IVpar4/\n\
PvJRnc/Ahvo/o8B9b1gi8PEOT++j5ycl8JNPRIp6RGCG6pYJ8lbY7q8Q3cqyy6dq\n\
XIkhgrbU3ri89XljrBl1K1V5FHMiNT/389Bkp1xhxuhuXpbdZ9Go6phb0Te26I3m\n\
RchKROIcwbuU9a25sPOqMAD4IjFmOkHvp2Y/g+nZ/RGOjACY5aKwtt8vy3cdwzmd\n\
0H9x/Y9ZF8IXXY8KIbSOa+WNLL/QURUNfnuHvpAq8QKBgQDoedxHAY1scZiu+bp/\n\
v5d57mrdZk+V9KqIKu/6cKKNZggDu77AyuaNT3I52NaofajOQV2K57dYLgBvgTRV\n\
298lM7zv2/MYzEb6QrtSulkioKC94qv95ylFNAA1SMEEbhtYPKNEPczFvP3urP1b\n\
BoNLGMyQv4ZYvVZB/vGUUFN/jQKBgQDRIq8zRIDAI5YCKMtyH8RI/lPYPxo/iv4S\n\
qFg/H3wChJI7KQekwyRicOaewG882CtpZwqSypSAg85a1cxYMvmigfjEoO61AqrX\n\
TQfXXP1ggLaBK7D/uS3HkSndhqPed2C/pT+lBjbnOFh3IOagVjGfehV4Z0j3chtO\n\
MKWE2QwWfwKBgQC6VHHpt6TStnnaRO7mVXnjkOS2b7p6RpAoc8HEyWKAUrc5xtEt\n\
VXNU78ht9Q6YHZ+fMWT4YKDjXHuc48I+zuwbtUxKM9C0n4aEL9hUhmfLCVPM3lFc\n\
QFsjzHoeOyH5mwbvwipaF+54zvH4y06GFsJE/qt3mQrlNVxdqSmX5ooGQQKBgHFk\n\
ivYTOHP1V4qIL/cK/lRNgYyIemTlqejX2jEvkv+Sfe8RyhEttXainIiK8kVdN/yI\n\
YBVDPc2IqcRak9dmnC/epNGIKKWAcr0WCSBeTQub/lh/JhMhho7kSHzSWdtvgsem\n\
g6GogvBPfrfo4OMimPlNKoMEDW4NMnzsp3ImdQVlAoGAK0KPr9B6aDxBg4FztYpX\n\
BUfqi4YALywYFlTLWLLGmDioe6+f4ppOKTbv+UpMOSPpLteac5qbtm1lscFha/MF\n\
am7dk26xOMqp3fmZxoQYIgkqijPp3BNYkihBsEzOrotlGkdIj3OPnHLZNAmn01sw\n\
L6eQBcmT//W8vgxLeEgpDEI=\n\
-----END PRIVATE KEY-----\n\
";

/// The HS256/HS512 secret of issuer `hs` (64 bytes of text).
pub const HMAC_SECRET: &str = "fuzz-hmac-secret-0123456789abcdef-0123456789abcdef-0123456789abc";

/// The issuers of the fixture: id, `iss`, and the header a token of theirs carries.
pub const ISSUERS: [(&str, &str, &str); 7] = [
    (
        "ed",
        "https://ed.fuzz.example",
        r#"{"alg":"EdDSA","kid":"ed-1","typ":"at+jwt"}"#,
    ),
    (
        "entra",
        "https://login.microsoftonline.com/11111111-2222-3333-4444-555555555555/v2.0",
        r#"{"alg":"ES256","kid":"entra-1","typ":"JWT"}"#,
    ),
    (
        "rsa",
        "https://rsa.fuzz.example/realms/fuzz",
        r#"{"alg":"RS256","kid":"rsa-1","typ":"JWT"}"#,
    ),
    (
        "hs",
        "https://hs.fuzz.example",
        r#"{"alg":"HS256","kid":"hs-1"}"#,
    ),
    (
        "k8s",
        "https://k8s.fuzz.example",
        r#"{"alg":"ES256","kid":"k8s-1"}"#,
    ),
    (
        "cognito",
        "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Fuzz",
        r#"{"alg":"EdDSA","kid":"cognito-1"}"#,
    ),
    (
        "alb",
        "https://alb.fuzz.example",
        r#"{"alg":"ES256","kid":"alb-1","signer":"arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/fuzz/0123456789abcdef","iss":"https://alb.fuzz.example","client":"alb-client","exp":1767226200}"#,
    ),
];

/// The test keys as signers and public JWKs.
pub struct Keys {
    ed: Box<dyn JwsSigner>,
    es256: Box<dyn JwsSigner>,
    rs256: Box<dyn JwsSigner>,
    ps256: Box<dyn JwsSigner>,
    hs256: Box<dyn JwsSigner>,
    hs512: Box<dyn JwsSigner>,
    /// Public JWK of [`ED25519_PEM`].
    pub ed_public: Value,
    /// Public JWK of [`P256_PEM`].
    pub p256_public: Value,
    /// Public JWK of [`RSA_PEM`].
    pub rsa_public: Value,
    /// SPKI PEM of [`ED25519_PEM`].
    pub ed_public_pem: String,
    /// SPKI PEM of [`P256_PEM`].
    pub p256_public_pem: String,
    /// SPKI PEM of [`RSA_PEM`].
    pub rsa_public_pem: String,
}

impl Keys {
    fn load() -> Self {
        let ed = josekit::jws::EdDSA
            .key_pair_from_pem(ED25519_PEM)
            .expect("Ed25519 test key");
        let ec = josekit::jws::ES256
            .key_pair_from_pem(P256_PEM)
            .expect("P-256 test key");
        let rsa = josekit::jws::RS256
            .key_pair_from_pem(RSA_PEM)
            .expect("RSA test key");
        let pem = |bytes: Vec<u8>| String::from_utf8(bytes).expect("PEM is text");
        Self {
            ed: Box::new(
                josekit::jws::EdDSA
                    .signer_from_pem(ED25519_PEM)
                    .expect("signer"),
            ),
            es256: Box::new(
                josekit::jws::ES256
                    .signer_from_pem(P256_PEM)
                    .expect("signer"),
            ),
            rs256: Box::new(
                josekit::jws::RS256
                    .signer_from_pem(RSA_PEM)
                    .expect("signer"),
            ),
            ps256: Box::new({
                // A PS256 signer from PEM wants an RSA-PSS key; the JWK of the same key is
                // accepted once it names no other `alg`.
                let mut jwk = rsa.to_jwk_private_key();
                jwk.set_algorithm("PS256");
                josekit::jws::PS256.signer_from_jwk(&jwk).expect("signer")
            }),
            hs256: Box::new(
                josekit::jws::HS256
                    .signer_from_bytes(HMAC_SECRET)
                    .expect("signer"),
            ),
            hs512: Box::new(
                josekit::jws::HS512
                    .signer_from_bytes(HMAC_SECRET)
                    .expect("signer"),
            ),
            ed_public: Value::Object(ed.to_jwk_public_key().as_ref().clone()),
            p256_public: Value::Object(ec.to_jwk_public_key().as_ref().clone()),
            rsa_public: Value::Object(rsa.to_jwk_public_key().as_ref().clone()),
            ed_public_pem: pem(ed.to_pem_public_key()),
            p256_public_pem: pem(ec.to_pem_public_key()),
            rsa_public_pem: pem(rsa.to_pem_public_key()),
        }
    }

    /// Signs `input` with the test key the `alg` names (Ed25519 for anything unknown, so that
    /// such tokens still carry a real signature, just one no issuer accepts for that `alg`).
    pub fn sign(&self, alg: &str, input: &[u8]) -> Vec<u8> {
        let signer = match alg {
            "ES256" => &self.es256,
            "RS256" => &self.rs256,
            "PS256" => &self.ps256,
            "HS256" => &self.hs256,
            "HS512" => &self.hs512,
            _ => &self.ed,
        };
        signer.sign(input).expect("signing with a test key")
    }

    /// One public JWK with `kid` (and `alg`, `use: sig`).
    fn jwk(public: &Value, kid: &str, alg: &str) -> Value {
        let mut jwk = public.clone();
        jwk["kid"] = json!(kid);
        jwk["alg"] = json!(alg);
        jwk["use"] = json!("sig");
        jwk
    }
}

/// The test keys, loaded once.
pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(Keys::load)
}

/// `BASE64URL(header).BASE64URL(payload).BASE64URL(signature)`, signed with the test key the
/// header's `alg` names. The header need not be valid JSON: the bytes are encoded as they are.
pub fn sign_token(header: &[u8], payload: &[u8]) -> String {
    let alg = serde_json::from_slice::<Value>(header)
        .ok()
        .and_then(|h| h.get("alg").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default();
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let signature = keys().sign(&alg, input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// Claims a token of issuer `id` needs to verify at [`NOW`], plus a few its profile reads.
pub fn claims_for(id: &str) -> Value {
    let (_, iss, _) = ISSUERS
        .iter()
        .find(|(name, _, _)| *name == id)
        .expect("a fixture issuer");
    let mut claims = json!({
        "iss": iss, "sub": format!("{id}-user"), "aud": AUD,
        "iat": NOW - 60, "nbf": NOW - 60, "exp": NOW + 600, "jti": "f0f0f0f0",
    });
    let extra = match id {
        "ed" => json!({
            "perms": "orders:read orders:write", "cid": "fuzz-client",
            "realm_access": {"roles": ["admin", "user"]}, "member_of": ["admins", "staff"],
            "org": {"tenant": "t-42"}, "mail": "ed-user@fuzz.example", "amr": ["pwd"],
        }),
        "entra" => json!({
            "tid": "11111111-2222-3333-4444-555555555555", "azp": "entra-client", "ver": "2.0",
            "scp": "Orders.Read", "roles": ["Orders.Read"], "groups": ["admins"],
            "preferred_username": "user@contoso.example", "oid": "o-1",
        }),
        "rsa" => json!({
            "azp": "kc-client", "scope": "openid orders:read",
            "realm_access": {"roles": ["admin"]},
            "resource_access": {"kc-client": {"roles": ["writer"]}},
            "email": "kc@fuzz.example",
        }),
        "hs" => json!({"scope": "orders:read", "groups": ["admins"]}),
        "k8s" => json!({
            "sub": "system:serviceaccount:payments:worker",
            "kubernetes.io": {"namespace": "payments", "serviceaccount": {"name": "worker", "uid": "u-1"},
                              "pod": {"name": "worker-0", "uid": "p-1"}},
        }),
        "cognito" => json!({
            "aud": null, "client_id": "fuzzclient", "token_use": "access",
            "scope": "orders-api/read", "cognito:groups": ["admins"], "username": "cog",
        }),
        "alb" => json!({"iss": null, "aud": null, "email": "alb@fuzz.example", "name": "Alb User"}),
        _ => json!({}),
    };
    if let (Value::Object(claims), Value::Object(extra)) = (&mut claims, extra) {
        for (name, value) in extra {
            if value.is_null() {
                claims.remove(&name);
            } else {
                claims.insert(name, value);
            }
        }
    }
    claims
}

/// A token of fixture issuer `id` that verifies at [`NOW`].
pub fn token_for(id: &str) -> String {
    let (_, _, header) = ISSUERS
        .iter()
        .find(|(name, _, _)| *name == id)
        .expect("a fixture issuer");
    sign_token(header.as_bytes(), claims_for(id).to_string().as_bytes())
}

/// Writes the `hs` issuer's secret where the configuration reads it (`hmac_secret.file`).
fn write_hmac_secret() -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("fedauthz-fuzz-hmac-{}", std::process::id()));
    std::fs::write(&path, HMAC_SECRET).expect("write the HMAC test secret");
    path
}

/// The fixture's configuration (YAML). Every key is inline, so building it does no I/O beyond
/// reading the HMAC secret file.
///
/// `hmac_secret_file` is where the `hs` issuer's secret is; without one that issuer is left out
/// (the `config` seeds are written that way, so they build anywhere).
pub fn config_yaml(hmac_secret_file: Option<&std::path::Path>) -> String {
    let k = keys();
    let jwks = |public: &Value, kid: &str, alg: &str| {
        json!({ "keys": [Keys::jwk(public, kid, alg)] }).to_string()
    };
    let hs = hmac_secret_file.map_or_else(String::new, |path| {
        format!(
            "  - id: hs\n    issuer: https://hs.fuzz.example\n    hmac_secret: {{ file: \"{}\", encoding: utf8, kid: hs-1 }}\n    algorithms: [HS256, HS512]\n    audiences: [{AUD}]\n",
            path.display()
        )
    });
    format!(
        r#"token_cache: {{ max_entries: 256 }}
response:
  realm: fuzz
  headers:
    x-auth-tenant: "{{tenant}}"
    x-auth-client: "{{client}}"
    x-auth-scopes: "{{scopes}}"
    x-auth-email: "{{email}}"
    x-auth-namespace: "{{attributes.namespace}}"
    x-auth-org: "tenant={{claims.org.tenant}}"
  identity_header: x-auth-identity
issuers:
  - id: ed
    issuer: https://ed.fuzz.example
    keys: {{ jwks: {ed} }}
    algorithms: [EdDSA]
    audiences: [{AUD}]
    token_types: [at+jwt, JWT]
    claim_mappings:
      tenant: org.tenant
      client: cid
      scopes: perms
      roles: realm_access.roles
      groups: member_of
      email: mail
    token_locations:
      - {{ header: authorization, prefix: "Bearer " }}
      - {{ header: x-fuzz-token }}
      - {{ cookie: fuzz_session }}
  - id: entra
    issuer: "https://login.microsoftonline.com/{{tenantid}}/v2.0"
    tenants: [11111111-2222-3333-4444-555555555555, aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee]
    profile: entra
    keys: {{ jwks: {entra} }}
    algorithms: [ES256]
    audiences: [{AUD}]
  - id: rsa
    issuer: https://rsa.fuzz.example/realms/fuzz
    profile: keycloak
    keys: {{ jwks: {rsa} }}
    algorithms: [RS256, PS256]
    audiences: [{AUD}, account]
    max_lifetime: 1h
{hs}  - id: k8s
    issuer: https://k8s.fuzz.example
    profile: kubernetes
    keys: {{ jwks: {k8s} }}
    audiences: [{AUD}]
  - id: cognito
    issuer: https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Fuzz
    profile: cognito
    keys: {{ jwks: {cognito} }}
    audience_claim: client_id
    audiences: [fuzzclient]
    required_claims: {{ token_use: access }}
  - id: alb
    issuer: https://alb.fuzz.example
    profile: aws-alb
    alb_signers: ["arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/fuzz/0123456789abcdef"]
    keys: {{ jwks: {alb} }}
    algorithms: [ES256]
    accept_padded_tokens: true
    skip_audience_check: ALB tokens carry no audience
routes:
  - name: health
    match: {{ paths: [/healthz] }}
    allow_anonymous: true
  - name: orders-read
    match: {{ hosts: [api.fuzz.example, "*.fuzz.example"], paths: [/orders, "/orders/*"], methods: [GET, HEAD] }}
    require:
      any_of:
        - {{ issuers: [ed], scopes: ["orders:read"] }}
        - {{ issuers: [entra], roles: [Orders.Read], tenants: [11111111-2222-3333-4444-555555555555] }}
        - {{ issuers: [k8s], subjects: ["system:serviceaccount:payments:*"] }}
        - {{ issuers: [rsa, cognito, alb] }}
        - {{ scopes: ["orders:read"], groups: [admins] }}
  - name: admin
    match: {{ paths: ["/admin/*"], context_extensions: {{ zone: internal }}, principals: ["spiffe://fuzz.example/*"] }}
    require:
      all_of:
        - {{ groups: [admins] }}
        - claims:
            - {{ path: realm_access.roles, one_of: [admin] }}
            - {{ path: org.tenant, prefix: "t-" }}
            - {{ issuer: ed, path: mail, glob: "*@fuzz.example" }}
            - {{ path: amr, present: true }}
    headers: {{ x-admin-tenant: "{{claims.org.tenant}}" }}
  - name: writes
    match: {{ methods: [POST, PUT, DELETE] }}
    require: {{ audiences: [{AUD}], roles: [admin, writer] }}
"#,
        ed = jwks(&k.ed_public, "ed-1", "EdDSA"),
        entra = jwks(&k.p256_public, "entra-1", "ES256"),
        // No `alg` on the RSA key: it is bound to both of the issuer's algorithms.
        rsa = {
            let mut jwk = Keys::jwk(&k.rsa_public, "rsa-1", "RS256");
            if let Value::Object(map) = &mut jwk {
                map.remove("alg");
            }
            json!({ "keys": [jwk] }).to_string()
        },
        k8s = jwks(&k.p256_public, "k8s-1", "ES256"),
        cognito = jwks(&k.ed_public, "cognito-1", "EdDSA"),
        alb = jwks(&k.p256_public, "alb-1", "ES256"),
    )
}

/// The fixture's configuration, compiled: the pipeline every target checks against.
pub fn generation() -> &'static Generation {
    static GENERATION: OnceLock<Generation> = OnceLock::new();
    GENERATION.get_or_init(|| {
        let yaml = config_yaml(Some(&write_hmac_secret()));
        let config = fedauthz::config::parse_yaml(&yaml, "fuzz-fixture.yaml")
            .unwrap_or_else(|err| panic!("the fixture configuration is valid: {err}"));
        Generation::build(config, None, &Arc::new(tokio::sync::Notify::new()))
            .unwrap_or_else(|errors| panic!("the fixture's keys load: {errors:?}"))
    })
}

/// A self-signed X.509 certificate for [`RSA_PEM`] (Google serves its keys as certificates).
pub const RSA_CERT_PEM: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIIDEzCCAfugAwIBAgIUYs7oeThnbXzPvMfyxKl14tIRqYQwDQYJKoZIhvcNAQEL\n\
BQAwGDEWMBQGA1UEAwwNZmVkYXV0aHotZnV6ejAgFw0yNjEyMDIwNTI3NTlaGA8y\n\
MTI2MTEwODA1Mjc1OVowGDEWMBQGA1UEAwwNZmVkYXV0aHotZnV6ejCCASIwDQYJ\n\
KoZIhvcNAQEBBQADggEPADCCAQoCggEBAL3q/B8Vw2By1w12lD/POcA1kTYz1Swf\n\
VS3gNbt2DGv9xDg6YnLE5c3Dat2ufx1KUN229xoqiAMeZYAA4BSiwLI6+nHJa+iM\n\
BVuBPiRU/1hm11PS9Y8IV0E0RcCCwpJW4BugqnFO8MeNM9rm++vZ0U7QWCHw/4j1\n\
ntT3IcddQgJP/SeCDr0ie4N2r54KXWJ1OZZJv+4QGb0tqfOh59rYWS7WO5VHheTa\n\
jmc0ISKq1Hsn/lfo2309Flbs8e+AdwfQw0iUx42GT2DZWeb9Iu2UNGXNhu6nzYZW\n\
OESI/s5DuZSPczCOivJzjSiDofDKsAmHSqv1/DZ6X3DTzfrIN4X+ZPMCAwEAAaNT\n\
MFEwHQYDVR0OBBYEFPc6nyHnjSZgtp9rS081zraocmRoMB8GA1UdIwQYMBaAFPc6\n\
nyHnjSZgtp9rS081zraocmRoMA8GA1UdEwEB/wQFMAMBAf8wDQYJKoZIhvcNAQEL\n\
BQADggEBAFrm58TfXMGFMZBPfKrWFtFhHjg+YIAgllxghNt2jub0Z7vTUiwYPrzO\n\
/GBVCeHqHVE9PX8pA82OJ7hB0LYfFt3J9Ak8krwNjZDFoQO8kBt1w6Af+Fhac4/S\n\
jXcD4kQxDunTOwuu2VqpLkzupOUJz8NZchcb1fxGM4dRLwR4fntJtqq1KVmtmgK0\n\
dLshjwmP2dI09MFvAwwmPPTP9rLNV6Ag/i13t2yK4PQEre4rtBe0GHdmhiUNRzUN\n\
vH6QD7H9DQEd2mBikt6u+M4/Ga0yyWPhkywnn5L2XRiRWgjK/iZAFSxzOaSIX43s\n\
tQ8Ernd7kYg9YZvQZCsV+uHdtztO/9c=\n\
-----END CERTIFICATE-----\n\
";

/// X25519 decryption key of the `jwe_decrypt` target (kid `fz-x25519`, ECDH-ES). Test
/// material only.
pub const X25519_JWK: &str = r#"{"crv":"X25519","d":"wGzqCuHDCvK01cmBlsFbZBUHOwQ1qISogz9iK1v7aFc","kty":"OKP","x":"PILocqi5171yvA2sObvYs5gbL3XqGmAOGgIXrdMUtzY"}"#;

/// Shared content key of the `jwe_decrypt` target (kid `fz-dir`, `dir`, A128GCM).
pub const DIR_JWK: &str = r#"{"kty":"oct","k":"AAECAwQFBgcICQoLDA0ODw"}"#;

/// The decryption keys of the `jwe_decrypt` target: ECDH-ES with X25519 and a `dir` key,
/// A128GCM, A256GCM and A128CBC-HS256 accepted (so every framing rule is reachable).
pub fn decrypter() -> &'static fedauthz::verify::jwe::Decrypter {
    use fedauthz::config::{
        ContentEncryption, DecryptionConfig, DecryptionKeyConfig, KeyManagement,
    };
    static DECRYPTER: OnceLock<fedauthz::verify::jwe::Decrypter> = OnceLock::new();
    DECRYPTER.get_or_init(|| {
        let file = |name: &str, text: &str| {
            let path = std::env::temp_dir()
                .join(format!("fedauthz-fuzz-{name}-{}.json", std::process::id()));
            std::fs::write(&path, text).expect("write a fuzz decryption key");
            path
        };
        let config = DecryptionConfig {
            keys: vec![
                DecryptionKeyConfig {
                    kid: "fz-x25519".into(),
                    algorithm: KeyManagement::EcdhEs,
                    file: file("x25519", X25519_JWK),
                },
                DecryptionKeyConfig {
                    kid: "fz-dir".into(),
                    algorithm: KeyManagement::Dir,
                    file: file("dir", DIR_JWK),
                },
            ],
            content_encryption: vec![
                ContentEncryption::A128Gcm,
                ContentEncryption::A256Gcm,
                ContentEncryption::A128CbcHs256,
            ],
        };
        fedauthz::verify::jwe::Decrypter::load(&config)
            .unwrap_or_else(|errors| panic!("the fuzz decryption keys load: {errors:?}"))
    })
}

/// `jws` encrypted for the `jwe_decrypt` target: ECDH-ES to the X25519 key, or `dir` with
/// the shared key, under `enc`, header `cty: JWT` plus `extra` members.
pub fn encrypt_token(jws: &[u8], dir: bool, enc: &str, extra: &[(&str, Value)]) -> String {
    use josekit::jwe::{self, JweContext, JweHeader};
    let mut header = JweHeader::new();
    header.set_content_encryption(enc);
    header.set_content_type("JWT");
    header.set_key_id(if dir { "fz-dir" } else { "fz-x25519" });
    for (name, value) in extra {
        header
            .set_claim(name, Some(value.clone()))
            .expect("a header member");
    }
    let context = JweContext::new();
    if dir {
        let key = josekit::jwk::Jwk::from_bytes(DIR_JWK).expect("dir JWK");
        let encrypter = jwe::Dir.encrypter_from_jwk(&key).expect("dir encrypter");
        context.serialize_compact(jws, &header, &encrypter)
    } else {
        let private = josekit::jwk::Jwk::from_bytes(X25519_JWK).expect("X25519 JWK");
        let mut public = private.clone();
        public.set_parameter("d", None).expect("drop d");
        let encrypter = jwe::ECDH_ES
            .encrypter_from_jwk(&public)
            .expect("ECDH-ES encrypter");
        context.serialize_compact(jws, &header, &encrypter)
    }
    .expect("encrypt")
}

/// The one valid key of the `api_key` target's key set.
pub const API_KEY: &str = "fak_fuzz-1_Qm9yZWFsaXMtZnV6ei1rZXktc2VjcmV0LWZvci10ZXN0cw";

/// The `api_key` target's key sets: `partners` (header `x-api-key`, query `api_key`) holding
/// [`API_KEY`], and `ops` (prefix `ops_`, `Authorization: ApiKey`) holding none that matches.
pub fn api_keys() -> &'static fedauthz::verify::api_key::ApiKeys {
    static KEYS: OnceLock<fedauthz::verify::api_key::ApiKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let hash = fedauthz::verify::api_key::sha256_entry_hash(API_KEY);
        let yaml = format!(
            "issuers: []\n\
             api_keys:\n  - id: partners\n    allow_query_parameter: true\n    \
             locations: [{{ header: x-api-key }}, {{ query: api_key }}]\n    \
             keys: [{{ id: fuzz-1, hash: '{hash}', subject: fuzzer }}]\n  \
             - id: ops\n    prefix: ops_\n    locations: [{{ header: authorization, scheme: ApiKey }}]\n    \
             keys: [{{ id: x, hash: 'sha256:{zero}', subject: nobody }}]\n",
            zero = "0".repeat(64)
        );
        let config = fedauthz::config::parse_yaml(&yaml, "api-key-fixture.yaml")
            .unwrap_or_else(|err| panic!("fixture config: {err}"));
        fedauthz::verify::api_key::ApiKeys::load(&config, Default::default())
            .unwrap_or_else(|err| panic!("fixture keys: {err:?}"))
    })
}
