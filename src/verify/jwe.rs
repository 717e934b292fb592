//! Encrypted tokens (JWE compact serialization, RFC 7516) around a signed JWT: the framing is
//! checked here before any cryptography runs, then josekit decrypts with a key of fedauthz's
//! own, chosen by `kid` and bound to one algorithm. The plaintext must be one compact JWS,
//! which the caller then verifies like any other token.
//!
//! josekit's JWE layer has defects a token can reach (a panic on an empty CBC IV, truncated GCM
//! tags accepted, DEF inflation without a limit), so: every segment length is checked against
//! the algorithms before josekit sees the token, compression is never registered, `zip` and
//! `crit` are refused, and the decryption call is contained so that no input can take the
//! check path down. Every cryptographic failure is one reason, `decryption_failed`, with one
//! detail: no padding or MAC oracle.
//!
//! Depends on [`crate::config`] and [`crate::reason`].

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use josekit::jwe::{self, JweContext, JweDecrypter};
use josekit::jwk::Jwk;
use serde_json::{Map, Value};

use crate::config::{
    ContentEncryption, DecryptionConfig, DecryptionKeyConfig, FieldError, KeyManagement,
};
use crate::reason::{Reason, Rejection};

/// Largest key file read.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;
/// Smallest RSA modulus accepted, in bits.
const MIN_RSA_BITS: u32 = 2048;
/// Header parameters that are refused outright: compression, extensions nobody defined for
/// us, keys or URLs the token names, and the parameters of algorithms never accepted.
const REFUSED_PARAMETERS: [&str; 11] = [
    "zip", "crit", "jku", "jwk", "x5u", "x5c", "x5t", "x5t#S256", "p2s", "p2c", "tag",
];

/// The one detail every cryptographic failure gets.
const DECRYPTION_FAILED: &str = "the token did not decrypt with the key its kid names";

/// Whether `token` has the shape of a compact JWE (five segments).
pub fn is_encrypted(token: &str) -> bool {
    token.bytes().filter(|&b| b == b'.').count() == 4
}

/// How a token was encrypted (for headers, metadata, logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encryption {
    /// Key management algorithm.
    pub alg: KeyManagement,
    /// Content encryption.
    pub enc: ContentEncryption,
    /// The decryption key's kid.
    pub kid: String,
}

impl Encryption {
    /// `alg+enc`, e.g. `RSA-OAEP-256+A256GCM` (metadata, header templates).
    pub fn label(&self) -> String {
        format!("{}+{}", self.alg.name(), self.enc.name())
    }
}

/// A token that decrypted: the inner compact JWS and how it was encrypted.
#[derive(Debug)]
pub struct Opened {
    /// The inner token (a compact JWS, not yet verified).
    pub jws: String,
    /// How it was wrapped.
    pub encryption: Encryption,
}

/// One decryption key, loaded and bound to its algorithm.
pub struct DecryptionKey {
    algorithm: KeyManagement,
    decrypter: Box<dyn JweDecrypter>,
    /// RSA: the modulus in bytes (the exact length of an encrypted key).
    rsa_bytes: Option<usize>,
    /// `dir`: the shared key's length.
    dir_bytes: Option<usize>,
}

impl std::fmt::Debug for DecryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecryptionKey")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// The decryption keys of one configuration.
pub struct Decrypter {
    keys: HashMap<String, DecryptionKey>,
    content: Vec<ContentEncryption>,
    context: JweContext,
}

impl std::fmt::Debug for Decrypter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decrypter")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .field("content", &self.content)
            .finish_non_exhaustive()
    }
}

/// The checked framing of a compact JWE.
#[derive(Debug)]
pub struct Framing {
    /// The protected header.
    pub header: Map<String, Value>,
    /// `alg`.
    pub alg: KeyManagement,
    /// `enc`.
    pub enc: ContentEncryption,
    encrypted_key: Vec<u8>,
}

fn not_allowed(detail: impl Into<String>) -> Rejection {
    Rejection::new(Reason::EncryptionNotAllowed, detail)
}

fn malformed(detail: impl Into<String>) -> Rejection {
    Rejection::new(Reason::TokenMalformed, detail)
}

fn failed() -> Rejection {
    Rejection::new(Reason::DecryptionFailed, DECRYPTION_FAILED)
}

fn segment(part: &str, name: &str) -> Result<Vec<u8>, Rejection> {
    if part.ends_with('=') {
        return Err(malformed(format!("JWE {name} is padded base64url")));
    }
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| malformed(format!("JWE {name} is not base64url")))
}

/// Whether a media type names a JWT (`application/` may be left out, RFC 7515 §4.1.10).
fn is_jwt_type(value: &str) -> bool {
    super::claims::media_subtype(value).eq_ignore_ascii_case("JWT")
}

impl Framing {
    /// Checks everything about `token` that can be checked without a key: five base64url
    /// segments, a header naming accepted algorithms (`enc` among `content`), a `kid`,
    /// `cty: JWT`, no refused parameter, and segment lengths that fit the algorithms.
    pub fn parse(token: &str, content: &[ContentEncryption]) -> Result<Self, Rejection> {
        let framing = Self::parse_envelope(token, content)?;
        framing.require_nested_jwt()?;
        Ok(framing)
    }

    /// What a signed-then-encrypted JWT's header must say besides the envelope: `cty: JWT`,
    /// a `typ` (if any) of a JWT, and a `kid`.
    fn require_nested_jwt(&self) -> Result<(), Rejection> {
        let text = |name: &str| self.header.get(name).and_then(Value::as_str);
        match text("cty") {
            Some(cty) if is_jwt_type(cty) => {}
            Some(cty) => {
                return Err(not_allowed(format!(
                    "cty {cty:?}: only a signed JWT may be encrypted (cty JWT)"
                )));
            }
            None => {
                return Err(not_allowed(
                    "no cty: only signed-then-encrypted JWTs are accepted (cty JWT); an \
                     encrypt-only JWT can be made by anyone holding the public key",
                ));
            }
        }
        if let Some(typ) = text("typ")
            && !is_jwt_type(typ)
        {
            return Err(not_allowed(format!("typ {typ:?} is not a JWT's")));
        }
        if self.kid().is_empty() {
            return Err(not_allowed(
                "JWE header has no kid: the decryption key is chosen by kid",
            ));
        }
        Ok(())
    }

    /// The envelope checks of [`Framing::parse`]: segments, algorithms, refused parameters,
    /// `epk` and segment lengths; no `cty`, `typ` or `kid` rule.
    pub fn parse_envelope(token: &str, content: &[ContentEncryption]) -> Result<Self, Rejection> {
        let mut parts = token.split('.');
        let (Some(header_b64), Some(key_b64), Some(iv_b64), Some(ct_b64), Some(tag_b64), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(malformed("a JWE has exactly five segments"));
        };
        let header_bytes = segment(header_b64, "header")?;
        let header = crate::jose::parse_object(&header_bytes)
            .map_err(|err| malformed(format!("JWE header is not a JSON object: {err}")))?;
        for name in REFUSED_PARAMETERS {
            if header.contains_key(name) {
                return Err(not_allowed(format!(
                    "JWE header parameter {name} is refused"
                )));
            }
        }
        let text = |name: &str| match header.get(name) {
            None => Ok(None),
            Some(Value::String(value)) => Ok(Some(value.as_str())),
            Some(_) => Err(malformed(format!("JWE header {name} is not a string"))),
        };
        let alg_name = text("alg")?.ok_or_else(|| malformed("JWE header has no alg"))?;
        let alg = KeyManagement::from_name(alg_name)
            .ok_or_else(|| not_allowed(format!("key management {alg_name:?} is not accepted")))?;
        let enc_name = text("enc")?.ok_or_else(|| malformed("JWE header has no enc"))?;
        let enc = ContentEncryption::from_name(enc_name)
            .filter(|enc| content.contains(enc))
            .ok_or_else(|| {
                not_allowed(format!("content encryption {enc_name:?} is not accepted"))
            })?;
        // Wrong types are malformed whatever the rules on their values.
        for name in ["cty", "typ", "kid"] {
            text(name)?;
        }
        let epk = header.get("epk");
        let ecdh = matches!(
            alg,
            KeyManagement::EcdhEs | KeyManagement::EcdhEsA128Kw | KeyManagement::EcdhEsA256Kw
        );
        match (ecdh, epk) {
            (true, Some(Value::Object(_))) | (false, None) => {}
            (true, _) => return Err(malformed("ECDH-ES needs an epk object in the JWE header")),
            (false, Some(_)) => {
                return Err(malformed(format!(
                    "epk does not belong with {}",
                    alg.name()
                )));
            }
        }

        let encrypted_key = segment(key_b64, "encrypted key")?;
        let iv = segment(iv_b64, "initialization vector")?;
        let ciphertext = segment(ct_b64, "ciphertext")?;
        let tag = segment(tag_b64, "authentication tag")?;
        let expected_key = match alg {
            KeyManagement::Dir | KeyManagement::EcdhEs => Some(0),
            KeyManagement::EcdhEsA128Kw | KeyManagement::EcdhEsA256Kw => Some(enc.key_len() + 8),
            // Checked against the key's modulus once the key is known.
            KeyManagement::RsaOaep256 => None,
        };
        if let Some(expected) = expected_key
            && encrypted_key.len() != expected
        {
            return Err(failed());
        }
        if alg == KeyManagement::RsaOaep256 && encrypted_key.is_empty() {
            return Err(failed());
        }
        if iv.len() != enc.iv_len() || tag.len() != enc.tag_len() {
            return Err(failed());
        }
        if enc == ContentEncryption::A128CbcHs256
            && (ciphertext.is_empty() || ciphertext.len() % 16 != 0)
        {
            return Err(failed());
        }
        Ok(Self {
            header,
            alg,
            enc,
            encrypted_key,
        })
    }

    /// The header's `kid` (present: [`Framing::parse`] requires it).
    pub fn kid(&self) -> &str {
        self.header
            .get("kid")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}

impl Decrypter {
    /// Loads the keys of `config`; every problem is reported at its field path.
    pub fn load(config: &DecryptionConfig) -> Result<Self, Vec<FieldError>> {
        let mut keys = HashMap::new();
        let mut errors = Vec::new();
        for (index, key) in config.keys.iter().enumerate() {
            match load_key(key, &config.content_encryption) {
                Ok(loaded) => {
                    keys.insert(key.kid.clone(), loaded);
                }
                Err(message) => errors.push(FieldError::new(
                    format!("decryption.keys[{index}].file"),
                    format!("{}: {message}", key.file.display()),
                )),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            keys,
            content: config.content_encryption.clone(),
            context: jwe_context(),
        })
    }

    /// Opens `token` (a compact JWE): framing, key by `kid`, decryption, then the plaintext
    /// must be one compact JWS of at most `max_bytes`.
    pub fn open(&self, token: &str, max_bytes: usize) -> Result<Opened, Rejection> {
        if token.len() > max_bytes {
            return Err(Rejection::new(
                Reason::TokenTooLarge,
                format!(
                    "the token has {} bytes, more than max_token_bytes ({max_bytes})",
                    token.len()
                ),
            ));
        }
        let framing = Framing::parse(token, &self.content)?;
        let kid = framing.kid().to_owned();
        let key = self.keys.get(&kid).ok_or_else(|| {
            Rejection::new(
                Reason::DecryptionFailed,
                format!("no decryption key has kid {kid:?}"),
            )
        })?;
        let plaintext = key.decrypt(&self.context, token, &framing)?;
        if plaintext.len() > max_bytes {
            return Err(Rejection::new(
                Reason::TokenTooLarge,
                format!(
                    "the decrypted token has {} bytes, more than max_token_bytes ({max_bytes})",
                    plaintext.len()
                ),
            ));
        }
        let compact = plaintext
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        let segments = plaintext.iter().filter(|&&b| b == b'.').count() + 1;
        match (compact, segments) {
            (true, 3) => {}
            (true, 5) => {
                return Err(not_allowed(
                    "nested encryption (a JWE inside the JWE) is refused",
                ));
            }
            _ => {
                return Err(not_allowed(
                    "the decrypted content is not a compact signed JWT (encrypt-only tokens \
                     are refused)",
                ));
            }
        }
        let jws = String::from_utf8(plaintext)
            .map_err(|_| not_allowed("the decrypted content is not a signed JWT"))?;
        Ok(Opened {
            jws,
            encryption: Encryption {
                alg: framing.alg,
                enc: framing.enc,
                kid,
            },
        })
    }
}

/// josekit's JWE context without compression: it inflates `zip: DEF` without a size limit.
/// (`zip` is refused in the framing already; without the algorithm it is refused here too.)
fn jwe_context() -> JweContext {
    let mut context = JweContext::new();
    context.remove_compression("DEF");
    context
}

impl DecryptionKey {
    /// Decrypts `token` after the envelope checks only (none of the nested-JWT rules: this is
    /// the JWE layer on its own, as test vectors exercise it), returning the plaintext.
    pub fn decrypt_envelope(
        &self,
        token: &str,
        content: &[ContentEncryption],
    ) -> Result<Vec<u8>, Rejection> {
        let framing = Framing::parse_envelope(token, content)?;
        self.decrypt(&jwe_context(), token, &framing)
    }

    /// The algorithm and key-dependent length checks, then josekit, contained.
    fn decrypt(
        &self,
        context: &JweContext,
        token: &str,
        framing: &Framing,
    ) -> Result<Vec<u8>, Rejection> {
        if self.algorithm != framing.alg {
            return Err(not_allowed(format!(
                "decryption key {:?} is for {}, the token says {}",
                framing.kid(),
                self.algorithm.name(),
                framing.alg.name()
            )));
        }
        if let Some(modulus) = self.rsa_bytes
            && framing.encrypted_key.len() != modulus
        {
            return Err(failed());
        }
        if let Some(len) = self.dir_bytes
            && len != framing.enc.key_len()
        {
            return Err(failed());
        }
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            context.deserialize_compact(token, self.decrypter.as_ref())
        }));
        match outcome {
            Ok(Ok((plaintext, _header))) => Ok(plaintext),
            Ok(Err(_)) | Err(_) => Err(failed()),
        }
    }
}

fn load_key(
    config: &DecryptionKeyConfig,
    content: &[ContentEncryption],
) -> Result<DecryptionKey, String> {
    let bytes = read_key_file(&config.file)?;
    DecryptionKey::from_bytes(&bytes, Some(&config.kid), config.algorithm, content)
}

impl DecryptionKey {
    /// A key for `algorithm` from `bytes` (PEM, or a JWK; for `dir` a JWK of `kty: oct`). A JWK
    /// naming another `kid` or `alg` is refused, and so is a key that does not fit the
    /// algorithm or `content`.
    pub fn from_bytes(
        bytes: &[u8],
        kid: Option<&str>,
        algorithm: KeyManagement,
        content: &[ContentEncryption],
    ) -> Result<Self, String> {
        let is_jwk = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        let jwk = if is_jwk {
            Some(Jwk::from_bytes(bytes).map_err(|err| format!("not a JWK: {err}"))?)
        } else {
            None
        };
        if let Some(jwk) = &jwk {
            if let (Some(theirs), Some(ours)) = (jwk.key_id(), kid)
                && theirs != ours
            {
                return Err(format!(
                    "the JWK's kid {theirs:?} differs from the configured kid {ours:?}"
                ));
            }
            // A shared `dir` key may name the content encryption it is for instead.
            let fits = |alg: &str| {
                alg == algorithm.name()
                    || (algorithm == KeyManagement::Dir
                        && ContentEncryption::from_name(alg)
                            .is_some_and(|enc| content.contains(&enc)))
            };
            if let Some(alg) = jwk.algorithm()
                && !fits(alg)
            {
                return Err(format!(
                    "the JWK is for {alg}, the configuration says {}",
                    algorithm.name()
                ));
            }
        }
        let wrong =
            |err: josekit::JoseError| format!("not a private key for {}: {err}", algorithm.name());
        let mut rsa_bytes = None;
        let mut dir_bytes = None;
        let decrypter: Box<dyn JweDecrypter> = match algorithm {
            KeyManagement::RsaOaep256 => {
                let der = match &jwk {
                    Some(jwk) => jwk_private_der(jwk)?,
                    None => pem_private_der(bytes)?,
                };
                let pkey = openssl::pkey::PKey::private_key_from_der(&der)
                    .map_err(|err| format!("not a private key: {err}"))?;
                let rsa = pkey
                    .rsa()
                    .map_err(|_| "RSA-OAEP-256 needs an RSA private key".to_owned())?;
                if pkey.bits() < MIN_RSA_BITS {
                    return Err(format!(
                        "an RSA key of {} bits is too small (at least {MIN_RSA_BITS})",
                        pkey.bits()
                    ));
                }
                rsa_bytes = Some(usize::try_from(rsa.size()).unwrap_or(0));
                Box::new(match &jwk {
                    Some(jwk) => jwe::RSA_OAEP_256.decrypter_from_jwk(jwk).map_err(wrong)?,
                    None => jwe::RSA_OAEP_256.decrypter_from_pem(bytes).map_err(wrong)?,
                })
            }
            KeyManagement::EcdhEs | KeyManagement::EcdhEsA128Kw | KeyManagement::EcdhEsA256Kw => {
                check_curve(jwk.as_ref(), bytes)?;
                let algorithm = match algorithm {
                    KeyManagement::EcdhEs => &jwe::ECDH_ES,
                    KeyManagement::EcdhEsA128Kw => &jwe::ECDH_ES_A128KW,
                    _ => &jwe::ECDH_ES_A256KW,
                };
                Box::new(match &jwk {
                    Some(jwk) => algorithm.decrypter_from_jwk(jwk).map_err(wrong)?,
                    None => algorithm.decrypter_from_pem(bytes).map_err(wrong)?,
                })
            }
            KeyManagement::Dir => {
                let jwk = jwk.ok_or("dir needs a JWK of kty oct (the shared content key)")?;
                let secret = jwk
                    .parameter("k")
                    .and_then(Value::as_str)
                    .and_then(|k| URL_SAFE_NO_PAD.decode(k).ok())
                    .ok_or("dir needs a JWK of kty oct with its key in k")?;
                if !content.iter().any(|enc| enc.key_len() == secret.len()) {
                    return Err(format!(
                        "a {}-byte shared key fits none of the content encryption algorithms",
                        secret.len()
                    ));
                }
                dir_bytes = Some(secret.len());
                // josekit wants `alg: dir` or none; the check above already bound the key.
                let mut bare = jwk.clone();
                bare.set_algorithm("dir");
                Box::new(jwe::Dir.decrypter_from_jwk(&bare).map_err(wrong)?)
            }
        };
        Ok(DecryptionKey {
            algorithm,
            decrypter,
            rsa_bytes,
            dir_bytes,
        })
    }
}

fn read_key_file(path: &Path) -> Result<Vec<u8>, String> {
    crate::files::read_bounded(path, MAX_KEY_FILE_BYTES).map_err(|err| match err {
        crate::files::ReadError::TooLarge(_) => format!("{err}; not a key"),
        crate::files::ReadError::Io(_) => err.to_string(),
    })
}

fn pem_private_der(bytes: &[u8]) -> Result<Vec<u8>, String> {
    openssl::pkey::PKey::private_key_from_pem(bytes)
        .and_then(|pkey| pkey.private_key_to_der())
        .map_err(|_| "not a PEM private key (PKCS#8, SEC1 or PKCS#1)".to_owned())
}

fn jwk_private_der(jwk: &Jwk) -> Result<Vec<u8>, String> {
    let pair = josekit::jwk::alg::rsa::RsaKeyPair::from_jwk(jwk)
        .map_err(|err| format!("not an RSA private JWK: {err}"))?;
    Ok(pair.to_der_private_key())
}

/// ECDH-ES keys: P-256, P-384 or X25519 only.
fn check_curve(jwk: Option<&Jwk>, pem: &[u8]) -> Result<(), String> {
    const ACCEPTED: &str = "ECDH-ES keys must be P-256, P-384 or X25519";
    match jwk {
        Some(jwk) => match (jwk.key_type(), jwk.curve()) {
            ("EC", Some("P-256" | "P-384")) | ("OKP", Some("X25519")) => Ok(()),
            _ => Err(ACCEPTED.to_owned()),
        },
        None => {
            let pkey = openssl::pkey::PKey::private_key_from_pem(pem)
                .map_err(|_| "not a PEM private key (PKCS#8 or SEC1)".to_owned())?;
            let fits = match pkey.id() {
                openssl::pkey::Id::X25519 => true,
                openssl::pkey::Id::EC => pkey.ec_key().ok().is_some_and(|ec| {
                    matches!(
                        ec.group().curve_name(),
                        Some(openssl::nid::Nid::X9_62_PRIME256V1 | openssl::nid::Nid::SECP384R1)
                    )
                }),
                _ => false,
            };
            if fits {
                Ok(())
            } else {
                Err(ACCEPTED.to_owned())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DecryptionKeyConfig;
    use josekit::jwe::JweHeader;
    use josekit::jwk::KeyPair as _;

    const JWS: &str = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl";

    struct Keys {
        dir: tempfile::TempDir,
        keys: Vec<DecryptionKeyConfig>,
    }

    impl Keys {
        fn new() -> Self {
            Self {
                dir: tempfile::tempdir().unwrap(),
                keys: Vec::new(),
            }
        }

        fn add(&mut self, kid: &str, algorithm: KeyManagement, text: &str) -> &mut Self {
            let file = self.dir.path().join(format!("{kid}.key"));
            std::fs::write(&file, text).unwrap();
            self.keys.push(DecryptionKeyConfig {
                kid: kid.into(),
                algorithm,
                file,
            });
            self
        }

        fn decrypter(&self, content: &[ContentEncryption]) -> Decrypter {
            Decrypter::load(&DecryptionConfig {
                keys: self.keys.clone(),
                content_encryption: content.to_vec(),
            })
            .unwrap()
        }
    }

    const GCM: [ContentEncryption; 2] = [ContentEncryption::A128Gcm, ContentEncryption::A256Gcm];

    fn header(enc: &str, kid: &str, cty: Option<&str>) -> JweHeader {
        let mut header = JweHeader::new();
        header.set_content_encryption(enc);
        header.set_key_id(kid);
        if let Some(cty) = cty {
            header.set_content_type(cty);
        }
        header
    }

    fn seal(
        payload: &str,
        header: &JweHeader,
        encrypter: &dyn josekit::jwe::JweEncrypter,
    ) -> String {
        JweContext::new()
            .serialize_compact(payload.as_bytes(), header, encrypter)
            .unwrap()
    }

    fn rsa() -> (josekit::jwk::alg::rsa::RsaKeyPair, String) {
        let pair = jwe::RSA_OAEP_256.generate_key_pair(2048).unwrap();
        let pem = String::from_utf8(pair.to_pem_private_key()).unwrap();
        (pair, pem)
    }

    fn reason(result: Result<Opened, Rejection>) -> (Reason, String) {
        let rejection = result.unwrap_err();
        (rejection.reason, rejection.detail)
    }

    #[test]
    fn nested_jwts_open_with_each_accepted_algorithm() {
        let (pair, pem) = rsa();
        let p256 = josekit::jwk::alg::ec::EcKeyPair::generate(josekit::jwk::alg::ec::EcCurve::P256)
            .unwrap();
        let x25519 =
            josekit::jwk::alg::ecx::EcxKeyPair::generate(josekit::jwk::alg::ecx::EcxCurve::X25519)
                .unwrap();
        let p384 = josekit::jwk::alg::ec::EcKeyPair::generate(josekit::jwk::alg::ec::EcCurve::P384)
            .unwrap();
        let mut shared = Jwk::new("oct");
        shared
            .set_parameter("k", Some(Value::String(URL_SAFE_NO_PAD.encode([7u8; 16]))))
            .unwrap();
        let mut keys = Keys::new();
        keys.add("rsa", KeyManagement::RsaOaep256, &pem)
            .add(
                "p256",
                KeyManagement::EcdhEsA128Kw,
                &p256.to_jwk_key_pair().to_string(),
            )
            .add(
                "x25519",
                KeyManagement::EcdhEs,
                &x25519.to_jwk_key_pair().to_string(),
            )
            .add(
                "p384",
                KeyManagement::EcdhEsA256Kw,
                &String::from_utf8(p384.to_pem_private_key()).unwrap(),
            )
            .add("shared", KeyManagement::Dir, &shared.to_string());
        let decrypter = keys.decrypter(&[
            ContentEncryption::A128Gcm,
            ContentEncryption::A256Gcm,
            ContentEncryption::A128CbcHs256,
        ]);
        let cases: Vec<(String, KeyManagement, ContentEncryption)> = vec![
            (
                seal(
                    JWS,
                    &header("A256GCM", "rsa", Some("JWT")),
                    &jwe::RSA_OAEP_256
                        .encrypter_from_jwk(&pair.to_jwk_public_key())
                        .unwrap(),
                ),
                KeyManagement::RsaOaep256,
                ContentEncryption::A256Gcm,
            ),
            (
                seal(
                    JWS,
                    &header("A128GCM", "p256", Some("JWT")),
                    &jwe::ECDH_ES_A128KW
                        .encrypter_from_jwk(&p256.to_jwk_public_key())
                        .unwrap(),
                ),
                KeyManagement::EcdhEsA128Kw,
                ContentEncryption::A128Gcm,
            ),
            (
                seal(
                    JWS,
                    &header("A128CBC-HS256", "x25519", Some("jwt")),
                    &jwe::ECDH_ES
                        .encrypter_from_jwk(&x25519.to_jwk_public_key())
                        .unwrap(),
                ),
                KeyManagement::EcdhEs,
                ContentEncryption::A128CbcHs256,
            ),
            (
                seal(
                    JWS,
                    &header("A256GCM", "p384", Some("application/JWT")),
                    &jwe::ECDH_ES_A256KW
                        .encrypter_from_jwk(&p384.to_jwk_public_key())
                        .unwrap(),
                ),
                KeyManagement::EcdhEsA256Kw,
                ContentEncryption::A256Gcm,
            ),
            (
                seal(
                    JWS,
                    &header("A128GCM", "shared", Some("JWT")),
                    &jwe::Dir.encrypter_from_jwk(&shared).unwrap(),
                ),
                KeyManagement::Dir,
                ContentEncryption::A128Gcm,
            ),
        ];
        for (token, alg, enc) in cases {
            let opened = decrypter.open(&token, 8192).unwrap();
            assert_eq!(opened.jws, JWS);
            assert_eq!((opened.encryption.alg, opened.encryption.enc), (alg, enc));
        }
    }

    fn rsa_token_and_decrypter(payload: &str, header: &JweHeader) -> (String, Decrypter) {
        let (pair, pem) = rsa();
        let mut keys = Keys::new();
        keys.add("rsa", KeyManagement::RsaOaep256, &pem);
        let encrypter = jwe::RSA_OAEP_256
            .encrypter_from_jwk(&pair.to_jwk_public_key())
            .unwrap();
        (seal(payload, header, &encrypter), keys.decrypter(&GCM))
    }

    /// A compact JWE with the given header and raw segments.
    fn forge(header: &str, key: &[u8], iv: &[u8], ciphertext: &[u8], tag: &[u8]) -> String {
        [header.as_bytes(), key, iv, ciphertext, tag]
            .iter()
            .map(|part| URL_SAFE_NO_PAD.encode(part))
            .collect::<Vec<_>>()
            .join(".")
    }

    #[test]
    fn refused_algorithms_and_parameters_never_reach_the_cryptography() {
        let (_, decrypter) = rsa_token_and_decrypter(JWS, &header("A256GCM", "rsa", Some("JWT")));
        let key = [1u8; 256];
        let gcm = |header: &str| forge(header, &key, &[0; 12], b"x", &[0; 16]);
        for (header, expected) in [
            (
                r#"{"alg":"RSA1_5","enc":"A128GCM","kid":"rsa","cty":"JWT"}"#,
                "\"RSA1_5\" is not accepted",
            ),
            (
                r#"{"alg":"PBES2-HS256+A128KW","enc":"A128GCM","kid":"rsa","cty":"JWT","p2s":"AAAA","p2c":1000000000}"#,
                "parameter p2s is refused",
            ),
            (
                r#"{"alg":"RSA-OAEP-256","enc":"A128GCM","kid":"rsa","cty":"JWT","zip":"DEF"}"#,
                "zip is refused",
            ),
            (
                r#"{"alg":"RSA-OAEP-256","enc":"A128GCM","kid":"rsa","cty":"JWT","crit":["exp"]}"#,
                "crit is refused",
            ),
            (
                r#"{"alg":"RSA-OAEP-256","enc":"A192GCM","kid":"rsa","cty":"JWT"}"#,
                "\"A192GCM\" is not accepted",
            ),
            (
                r#"{"alg":"RSA-OAEP-256","enc":"A128CBC-HS256","kid":"rsa","cty":"JWT"}"#,
                "\"A128CBC-HS256\" is not accepted",
            ),
            (
                r#"{"alg":"A128KW","enc":"A128GCM","kid":"rsa","cty":"JWT"}"#,
                "\"A128KW\" is not accepted",
            ),
            (
                r#"{"alg":"RSA-OAEP-256","enc":"A128GCM","kid":"rsa"}"#,
                "only signed-then-encrypted",
            ),
            (
                r#"{"alg":"RSA-OAEP-256","enc":"A128GCM","kid":"rsa","cty":"json"}"#,
                "only a signed JWT",
            ),
            (
                r#"{"alg":"RSA-OAEP-256","enc":"A128GCM","cty":"JWT"}"#,
                "no kid",
            ),
            (
                r#"{"alg":"RSA-OAEP-256","enc":"A128GCM","kid":"rsa","cty":"JWT","jku":"https://x"}"#,
                "jku is refused",
            ),
        ] {
            let (reason, detail) = reason(decrypter.open(&gcm(header), 8192));
            assert_eq!(reason, Reason::EncryptionNotAllowed, "{header}: {detail}");
            assert!(detail.contains(expected), "{header}: {detail}");
        }
    }

    #[test]
    fn framing_that_does_not_fit_the_algorithms_is_one_decryption_failure() {
        let (token, decrypter) =
            rsa_token_and_decrypter(JWS, &header("A256GCM", "rsa", Some("JWT")));
        let parts: Vec<&str> = token.split('.').collect();
        let with = |index: usize, bytes: &[u8]| {
            let mut parts: Vec<String> = parts.iter().map(|p| (*p).to_owned()).collect();
            parts[index] = URL_SAFE_NO_PAD.encode(bytes);
            parts.join(".")
        };
        let tag = URL_SAFE_NO_PAD.decode(parts[4]).unwrap();
        let cases = [
            with(4, &tag[..15]), // truncated GCM tags (Wycheproof 25-27)
            with(4, &tag[..12]),
            with(4, &tag[..8]),
            with(2, &[]),       // empty IV
            with(2, &[0; 16]),  // a CBC-sized IV for GCM
            with(1, &[]),       // no encrypted key for RSA-OAEP
            with(1, &[0; 128]), // an encrypted key of the wrong size
            with(4, &[0; 16]),  // a wrong tag
            with(3, b"tampered ciphertext"),
        ];
        for token in cases {
            let (reason, detail) = reason(decrypter.open(&token, 8192));
            assert_eq!(
                (reason, detail.as_str()),
                (Reason::DecryptionFailed, DECRYPTION_FAILED)
            );
        }
        // Another key under the same kid: the same one failure.
        let (_, other) = rsa_token_and_decrypter(JWS, &header("A256GCM", "rsa", Some("JWT")));
        let (reason_code, detail) = reason(other.open(&token, 8192));
        assert_eq!(
            (reason_code, detail.as_str()),
            (Reason::DecryptionFailed, DECRYPTION_FAILED)
        );
        // An unknown kid is the same reason; its detail names the kid (the sender's choice).
        let (unknown, _) = rsa_token_and_decrypter(JWS, &header("A256GCM", "gone", Some("JWT")));
        let (reason_code, detail) = reason(decrypter.open(&unknown, 8192));
        assert_eq!(reason_code, Reason::DecryptionFailed);
        assert!(
            detail.contains("no decryption key has kid \"gone\""),
            "{detail}"
        );
        assert_eq!(
            reason(decrypter.open("a.b.c.d", 8192)).0,
            Reason::TokenMalformed
        );
        assert_eq!(
            reason(decrypter.open("a.b.c.d.e.f", 8192)).0,
            Reason::TokenMalformed
        );
    }

    #[test]
    fn an_empty_cbc_iv_is_refused_before_josekit_could_panic_on_it() {
        let x25519 =
            josekit::jwk::alg::ecx::EcxKeyPair::generate(josekit::jwk::alg::ecx::EcxCurve::X25519)
                .unwrap();
        let mut keys = Keys::new();
        keys.add(
            "x",
            KeyManagement::EcdhEs,
            &x25519.to_jwk_key_pair().to_string(),
        );
        let decrypter = keys.decrypter(&[ContentEncryption::A128CbcHs256]);
        let token = seal(
            JWS,
            &header("A128CBC-HS256", "x", Some("JWT")),
            &jwe::ECDH_ES
                .encrypter_from_jwk(&x25519.to_jwk_public_key())
                .unwrap(),
        );
        let parts: Vec<&str> = token.split('.').collect();
        let no_iv = [parts[0], parts[1], "", parts[3], parts[4]].join(".");
        assert_eq!(
            reason(decrypter.open(&no_iv, 8192)).0,
            Reason::DecryptionFailed
        );
        // A ciphertext that is not whole blocks never reaches the padding check.
        let ragged = [parts[0], parts[1], parts[2], "AAAA", parts[4]].join(".");
        assert_eq!(
            reason(decrypter.open(&ragged, 8192)).0,
            Reason::DecryptionFailed
        );
        assert_eq!(decrypter.open(&token, 8192).unwrap().jws, JWS);
    }

    #[test]
    fn the_plaintext_must_be_one_signed_jwt_within_the_size_cap() {
        let jwt = header("A256GCM", "rsa", Some("JWT"));
        // Claims carry dots too (in URLs): the content is judged by its shape, not its dots.
        let claims = r#"{"sub":"alice","iss":"https://idp.example.com/","aud":"a.b"}"#;
        let (token, decrypter) = rsa_token_and_decrypter(claims, &jwt);
        let (reason_code, detail) = reason(decrypter.open(&token, 8192));
        assert_eq!(reason_code, Reason::EncryptionNotAllowed);
        assert!(
            detail.contains("encrypt-only tokens are refused"),
            "{detail}"
        );

        let (inner, _) = rsa_token_and_decrypter(JWS, &jwt);
        let (nested, decrypter) = rsa_token_and_decrypter(&inner, &jwt);
        let (reason_code, detail) = reason(decrypter.open(&nested, 8192));
        assert_eq!(reason_code, Reason::EncryptionNotAllowed);
        assert!(detail.contains("nested encryption"), "{detail}");

        // The cap holds for the outer token. Without compression the plaintext is always
        // shorter than the base64url ciphertext carrying it; it is capped again all the same.
        let big = format!("{JWS}{}", "A".repeat(5000));
        let (token, decrypter) = rsa_token_and_decrypter(&big, &jwt);
        let (reason_code, detail) = reason(decrypter.open(&token, 5200));
        assert_eq!(reason_code, Reason::TokenTooLarge);
        assert!(detail.starts_with("the token has"), "{detail}");
        assert_eq!(decrypter.open(&token, token.len()).unwrap().jws, big);
    }

    #[test]
    fn a_key_serves_only_its_algorithm_and_bad_keys_are_refused_at_load() {
        let p256 = josekit::jwk::alg::ec::EcKeyPair::generate(josekit::jwk::alg::ec::EcCurve::P256)
            .unwrap();
        let mut keys = Keys::new();
        keys.add(
            "p256",
            KeyManagement::EcdhEsA256Kw,
            &p256.to_jwk_key_pair().to_string(),
        );
        let decrypter = keys.decrypter(&GCM);
        let token = seal(
            JWS,
            &header("A128GCM", "p256", Some("JWT")),
            &jwe::ECDH_ES_A128KW
                .encrypter_from_jwk(&p256.to_jwk_public_key())
                .unwrap(),
        );
        let (reason_code, detail) = reason(decrypter.open(&token, 8192));
        assert_eq!(reason_code, Reason::EncryptionNotAllowed);
        assert!(
            detail.contains("is for ECDH-ES+A256KW, the token says ECDH-ES+A128KW"),
            "{detail}"
        );

        let load = |algorithm, text: &str| {
            let mut keys = Keys::new();
            keys.add("k", algorithm, text);
            Decrypter::load(&DecryptionConfig {
                keys: keys.keys.clone(),
                content_encryption: GCM.to_vec(),
            })
            .unwrap_err()
            .remove(0)
            .to_string()
        };
        let p521 = josekit::jwk::alg::ec::EcKeyPair::generate(josekit::jwk::alg::ec::EcCurve::P521)
            .unwrap();
        assert!(
            load(KeyManagement::EcdhEs, &p521.to_jwk_key_pair().to_string())
                .contains("P-256, P-384 or X25519")
        );
        let small = openssl::rsa::Rsa::generate(1024).unwrap();
        let small = String::from_utf8(small.private_key_to_pem().unwrap()).unwrap();
        assert!(load(KeyManagement::RsaOaep256, &small).contains("1024 bits is too small"));
        let (_, pem) = rsa();
        assert!(load(KeyManagement::EcdhEs, &pem).contains("P-256, P-384 or X25519"));
        let error = load(KeyManagement::Dir, "not a key");
        assert!(
            error.starts_with("decryption.keys[0].file: ") && error.contains("dir needs a JWK"),
            "{error}"
        );
        let mut wrong_kid = p256.to_jwk_key_pair();
        wrong_kid.set_key_id("elsewhere");
        assert!(
            load(KeyManagement::EcdhEs, &wrong_kid.to_string())
                .contains("differs from the configured kid")
        );
    }
}
