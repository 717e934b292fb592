//! Encryption of a minted token to one upstream's public key: a nested JWT (JWE `cty: JWT`
//! around the signed token), so only that upstream can read the identity it carries.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use josekit::jwe::{JweEncrypter, JweHeader};
use josekit::jwk::Jwk;
use serde_json::{Map, Value};

use super::read_key_file;
use super::signer::thumbprint;
use crate::config::{KeyManagement, MintEncryptionConfig};

/// One upstream's encryption key.
pub struct UpstreamEncryption {
    encrypter: Box<dyn JweEncrypter>,
    content: &'static str,
    kid: String,
}

impl std::fmt::Debug for UpstreamEncryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamEncryption")
            .field("kid", &self.kid)
            .field("content", &self.content)
            .finish_non_exhaustive()
    }
}

impl UpstreamEncryption {
    /// Loads `config`'s public key; the error says what is wrong with it.
    pub fn load(config: &MintEncryptionConfig) -> Result<Self, String> {
        let path = config.key_file.display();
        let bytes = read_key_file(&config.key_file)?;
        let jwk = public_jwk(&bytes).map_err(|why| format!("{path}: {why}"))?;
        let kid = match &config.kid {
            Some(kid) => kid.clone(),
            None => thumbprint(&jwk).ok_or_else(|| format!("{path}: no thumbprint"))?,
        };
        let kty = jwk.get("kty").and_then(Value::as_str).unwrap_or_default();
        let crv = jwk.get("crv").and_then(Value::as_str).unwrap_or_default();
        let fits = match config.algorithm {
            KeyManagement::RsaOaep256 => kty == "RSA",
            KeyManagement::EcdhEs | KeyManagement::EcdhEsA128Kw | KeyManagement::EcdhEsA256Kw => {
                matches!((kty, crv), ("EC", "P-256" | "P-384") | ("OKP", "X25519"))
            }
            KeyManagement::Dir => false,
        };
        if !fits {
            return Err(format!(
                "{path}: a {kty} {crv} key does not fit {} (RSA for RSA-OAEP-256; P-256, P-384 or X25519 for ECDH-ES*)",
                config.algorithm.name()
            ));
        }
        let jwk = Jwk::from_map(jwk).map_err(|err| format!("{path}: {err}"))?;
        let failed = |err: josekit::JoseError| format!("{path}: {err}");
        let encrypter: Box<dyn JweEncrypter> = match config.algorithm {
            KeyManagement::RsaOaep256 => Box::new(
                josekit::jwe::RSA_OAEP_256
                    .encrypter_from_jwk(&jwk)
                    .map_err(failed)?,
            ),
            KeyManagement::EcdhEs => Box::new(
                josekit::jwe::ECDH_ES
                    .encrypter_from_jwk(&jwk)
                    .map_err(failed)?,
            ),
            KeyManagement::EcdhEsA128Kw => Box::new(
                josekit::jwe::ECDH_ES_A128KW
                    .encrypter_from_jwk(&jwk)
                    .map_err(failed)?,
            ),
            KeyManagement::EcdhEsA256Kw => Box::new(
                josekit::jwe::ECDH_ES_A256KW
                    .encrypter_from_jwk(&jwk)
                    .map_err(failed)?,
            ),
            KeyManagement::Dir => return Err("dir is not used to encrypt minted tokens".into()),
        };
        Ok(Self {
            encrypter,
            content: config.content_encryption.name(),
            kid,
        })
    }

    /// The `kid` of the upstream key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// `jws` encrypted to the upstream.
    pub fn encrypt(&self, jws: &str) -> Result<String, String> {
        let mut header = JweHeader::new();
        header.set_content_encryption(self.content);
        header.set_content_type("JWT");
        header.set_key_id(&self.kid);
        josekit::jwe::serialize_compact(jws.as_bytes(), &header, &*self.encrypter)
            .map_err(|err| format!("encrypting the minted token failed: {err}"))
    }
}

/// The public JWK in `bytes`: a JWK (private members are dropped) or an SPKI PEM.
fn public_jwk(bytes: &[u8]) -> Result<Map<String, Value>, String> {
    if bytes.trim_ascii_start().starts_with(b"{") {
        let mut jwk: Map<String, Value> =
            serde_json::from_slice(bytes).map_err(|err| format!("not a JWK ({err})"))?;
        for private in ["d", "p", "q", "dp", "dq", "qi", "oth", "k"] {
            jwk.remove(private);
        }
        return Ok(jwk);
    }
    let key = openssl::pkey::PKey::public_key_from_pem(bytes)
        .map_err(|_| "not a public key (SPKI PEM) or a JWK".to_owned())?;
    let b64 = |bytes: &[u8]| Value::String(URL_SAFE_NO_PAD.encode(bytes));
    let mut jwk = Map::new();
    if let Ok(rsa) = key.rsa() {
        jwk.insert("kty".into(), "RSA".into());
        jwk.insert("n".into(), b64(&rsa.n().to_vec()));
        jwk.insert("e".into(), b64(&rsa.e().to_vec()));
    } else if let Ok(ec) = key.ec_key() {
        let (crv, size) = match ec.group().curve_name() {
            Some(openssl::nid::Nid::X9_62_PRIME256V1) => ("P-256", 32),
            Some(openssl::nid::Nid::SECP384R1) => ("P-384", 48),
            _ => return Err("an EC key on a curve other than P-256 or P-384".into()),
        };
        let mut ctx = openssl::bn::BigNumContext::new().map_err(|err| err.to_string())?;
        let (mut x, mut y) = (
            openssl::bn::BigNum::new().map_err(|err| err.to_string())?,
            openssl::bn::BigNum::new().map_err(|err| err.to_string())?,
        );
        ec.public_key()
            .affine_coordinates(ec.group(), &mut x, &mut y, &mut ctx)
            .map_err(|err| err.to_string())?;
        let pad = |n: &openssl::bn::BigNum| n.to_vec_padded(size).map_err(|err| err.to_string());
        jwk.insert("kty".into(), "EC".into());
        jwk.insert("crv".into(), crv.into());
        jwk.insert("x".into(), b64(&pad(&x)?));
        jwk.insert("y".into(), b64(&pad(&y)?));
    } else if key.id() == openssl::pkey::Id::X25519 {
        let raw = key.raw_public_key().map_err(|err| err.to_string())?;
        jwk.insert("kty".into(), "OKP".into());
        jwk.insert("crv".into(), "X25519".into());
        jwk.insert("x".into(), b64(&raw));
    } else {
        return Err("not an RSA, EC or X25519 public key".into());
    }
    Ok(jwk)
}
