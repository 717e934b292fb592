//! The signer interface every backend implements, and the RFC 7638 key thumbprint that names
//! a signing key (`kid`).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

/// The algorithms fedauthz signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SigningAlgorithm {
    /// ECDSA P-256 SHA-256 (the default).
    Es256,
    /// Ed25519.
    EdDsa,
    /// RSASSA-PKCS1-v1_5 SHA-256.
    Rs256,
    /// RSASSA-PSS SHA-256.
    Ps256,
}

impl SigningAlgorithm {
    /// The JWS `alg` name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
            Self::Rs256 => "RS256",
            Self::Ps256 => "PS256",
        }
    }
}

/// Why a key could not be loaded or a signature made.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The key material is unusable for the algorithm.
    #[error("{what}: {detail}")]
    Key {
        /// Which key (a path, a token and label).
        what: String,
        /// What is wrong.
        detail: String,
    },
    /// The PKCS#11 module refused or failed.
    #[error("PKCS#11 {step}: {detail}")]
    Pkcs11 {
        /// The step that failed (load, initialize, login, find key, sign …).
        step: &'static str,
        /// The module's error.
        detail: String,
    },
    /// Signing failed.
    #[error("signing failed: {0}")]
    Sign(String),
}

/// A signing key: its algorithm, its published public JWK and a way to sign. Signing may
/// block (an HSM round trip): call it off the async threads.
pub trait Signer: Send + Sync + std::fmt::Debug {
    /// The algorithm.
    fn algorithm(&self) -> SigningAlgorithm;
    /// The public JWK as published (`kty`, key members, `kid`, `alg`, `use: sig`).
    fn public_jwk(&self) -> &Map<String, Value>;
    /// The key's `kid`: its RFC 7638 thumbprint.
    fn kid(&self) -> &str;
    /// The backend's name for metrics (`file`, `pkcs11`).
    fn backend(&self) -> &'static str;
    /// The JWS signature over `input` (for ES256, `r ‖ s`).
    fn sign(&self, input: &[u8]) -> Result<Vec<u8>, SignError>;
}

/// The RFC 7638 thumbprint of a public JWK: SHA-256 over its required members in
/// lexicographic order, base64url. `None` for a key type without a defined member set.
pub fn thumbprint(jwk: &Map<String, Value>) -> Option<String> {
    let kty = jwk.get("kty")?.as_str()?;
    let members: &[&str] = match kty {
        "EC" => &["crv", "kty", "x", "y"],
        "RSA" => &["e", "kty", "n"],
        "OKP" => &["crv", "kty", "x"],
        _ => return None,
    };
    let mut canonical = Map::new();
    for name in members {
        canonical.insert(
            (*name).to_owned(),
            Value::String(jwk.get(*name)?.as_str()?.to_owned()),
        );
    }
    // serde_json's Map is ordered by key and writes no whitespace: the RFC's canonical form.
    let text = serde_json::to_string(&canonical).ok()?;
    Some(URL_SAFE_NO_PAD.encode(openssl::sha::sha256(text.as_bytes())))
}

/// `public` (key members only) completed with `kid` (its thumbprint), `alg` and `use`.
pub(super) fn published(
    mut public: Map<String, Value>,
    algorithm: SigningAlgorithm,
) -> Result<(Map<String, Value>, String), String> {
    for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
        public.remove(private);
    }
    let kid = thumbprint(&public).ok_or("no RFC 7638 thumbprint for this key type")?;
    public.insert("kid".into(), Value::String(kid.clone()));
    public.insert("alg".into(), Value::String(algorithm.name().into()));
    public.insert("use".into(), Value::String("sig".into()));
    Ok((public, kid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thumbprint_of_rfc_7638_section_3_1() {
        // The RSA key of RFC 7638 §3.1 and its thumbprint.
        let jwk: Map<String, Value> = serde_json::from_str(r#"{
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        }"#).unwrap();
        assert_eq!(
            thumbprint(&jwk).as_deref(),
            Some("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
        );
        let mut oct = Map::new();
        oct.insert("kty".into(), "oct".into());
        assert_eq!(thumbprint(&oct), None);
    }
}
