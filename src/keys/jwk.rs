//! One JWK in, one trusted key (or a reason it was refused) out.
//!
//! Hygiene rules (jwt-attacks.md rows 8, 20–22; RFC 8725 §3.1):
//! - only signing keys (`use` absent or `sig`; `key_ops`, if present, must allow `verify`);
//! - RSA: public exponent exactly 65537, modulus 2048–8192 bits;
//! - EC: the curve must match the algorithm; OKP: Ed25519 only;
//! - shared-secret (`oct`) keys are never taken from a key set, only from `hmac_secret`;
//! - each key is bound to its algorithms here: its own `alg` if it has one (which must then be
//!   allowed), else the allowed algorithms its type supports. The token header never widens that.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use josekit::jwk::Jwk;
use josekit::jws::{self, JwsSigner as _, JwsVerifier};
use serde_json::{Map, Value};

use crate::jose::{Algorithm, KeyFamily};

const RSA_MIN_BITS: usize = 2048;
const RSA_MAX_BITS: usize = 8192;
/// base64url of 65537, the only public exponent accepted.
const RSA_EXPONENT_F4: &str = "AQAB";

/// Which algorithms an issuer's keys may be used with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlgorithmPolicy {
    /// Explicit allowlist; empty means "the key's own `alg`, or the one algorithm its type
    /// implies", asymmetric algorithms only.
    pub allowed: Vec<Algorithm>,
}

impl AlgorithmPolicy {
    /// The algorithms a key of this family, with this JWK `alg` (if any), may verify.
    fn bind(&self, family: KeyFamily, jwk_alg: Option<&str>) -> Result<Vec<Algorithm>, KeyRefusal> {
        if let Some(name) = jwk_alg {
            let alg = name
                .parse::<Algorithm>()
                .map_err(|()| KeyRefusal::UnknownAlgorithm(name.to_owned()))?;
            if alg.family() != family {
                return Err(KeyRefusal::AlgorithmMismatch(alg));
            }
            let allowed = if self.allowed.is_empty() {
                !alg.is_symmetric()
            } else {
                self.allowed.contains(&alg)
            };
            return if allowed {
                Ok(vec![alg])
            } else {
                Err(KeyRefusal::AlgorithmNotAllowed(alg))
            };
        }
        let algs: Vec<Algorithm> = if self.allowed.is_empty() {
            default_algorithm(family).into_iter().collect()
        } else {
            self.allowed
                .iter()
                .copied()
                .filter(|alg| alg.family() == family)
                .collect()
        };
        if algs.is_empty() {
            Err(KeyRefusal::NoAllowedAlgorithm)
        } else {
            Ok(algs)
        }
    }
}

fn default_algorithm(family: KeyFamily) -> Option<Algorithm> {
    match family {
        KeyFamily::Rsa => Some(Algorithm::RS256),
        KeyFamily::Ec("P-256") => Some(Algorithm::ES256),
        KeyFamily::Ec("P-384") => Some(Algorithm::ES384),
        KeyFamily::Ec("P-521") => Some(Algorithm::ES512),
        KeyFamily::Ed25519 => Some(Algorithm::EdDSA),
        KeyFamily::Ec(_) | KeyFamily::Oct => None,
    }
}

/// Why a JWK was not taken into a key set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyRefusal {
    /// Not a JSON object, or its members have the wrong JSON types.
    #[error("not a valid JWK: {0}")]
    Malformed(String),
    /// `use` says the key is not for signatures (for example `enc`).
    #[error("use is {0:?}, not \"sig\"")]
    NotForSignatures(String),
    /// `key_ops` does not allow `verify`.
    #[error("key_ops does not include \"verify\"")]
    NotForVerification,
    /// A key type fedauthz does not verify with.
    #[error("unsupported key type {0:?}")]
    UnsupportedKeyType(String),
    /// An EC or OKP curve fedauthz does not verify with.
    #[error("unsupported curve {0:?}")]
    UnsupportedCurve(String),
    /// A shared secret inside a key set.
    #[error("shared-secret (oct) keys are only accepted from hmac_secret, never from a key set")]
    SymmetricInKeySet,
    /// `alg` names no algorithm fedauthz knows.
    #[error("alg {0:?} is not a supported signature algorithm")]
    UnknownAlgorithm(String),
    /// `alg` does not fit the key type or curve.
    #[error("alg {0} does not match the key type or curve")]
    AlgorithmMismatch(Algorithm),
    /// `alg` is not in the issuer's allowlist.
    #[error("alg {0} is not allowed for this issuer")]
    AlgorithmNotAllowed(Algorithm),
    /// None of the issuer's allowed algorithms fits this key type.
    #[error("none of the issuer's allowed algorithms fits this key type")]
    NoAllowedAlgorithm,
    /// RSA exponent other than 65537.
    #[error("RSA public exponent must be 65537 (\"AQAB\")")]
    WeakExponent,
    /// RSA modulus outside the accepted range.
    #[error("RSA modulus is {0} bits; {RSA_MIN_BITS} to {RSA_MAX_BITS} are accepted")]
    ModulusSize(usize),
    /// RSA modulus with the ROCA fingerprint (CVE-2017-15361): the private key can be
    /// recovered from the public key.
    #[error(
        "RSA modulus has the ROCA fingerprint (CVE-2017-15361); its private key is recoverable"
    )]
    RocaVulnerable,
    /// The key material itself is invalid (for example an EC point off its curve).
    #[error("invalid key material: {0}")]
    Invalid(String),
}

/// Checks a signature with one key and one algorithm.
pub enum SignatureVerifier {
    /// An asymmetric verifier built once from the JWK.
    Public(Box<dyn JwsVerifier>),
    /// HMAC: recompute the MAC and compare in constant time (josekit's own HMAC verifier
    /// compares with `!=`, which is not constant-time).
    Hmac(jws::alg::hmac::HmacJwsSigner),
}

impl SignatureVerifier {
    /// True when `signature` is valid over `signing_input`.
    pub fn verify(&self, signing_input: &[u8], signature: &[u8]) -> bool {
        match self {
            Self::Public(verifier) => verifier.verify(signing_input, signature).is_ok(),
            Self::Hmac(signer) => match signer.sign(signing_input) {
                Ok(mac) => mac.len() == signature.len() && openssl::memcmp::eq(&mac, signature),
                Err(_) => false,
            },
        }
    }
}

impl fmt::Debug for SignatureVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Public(v) => write!(f, "Public({})", v.algorithm().name()),
            Self::Hmac(_) => f.write_str("Hmac"),
        }
    }
}

/// The placeholder Entra ID writes into a key's `issuer` member (matched case-insensitively).
const TENANT_PLACEHOLDER: &str = "{tenantid}";

/// A key fedauthz trusts, bound to the algorithms it may verify.
#[derive(Debug)]
pub struct TrustedKey {
    kid: Option<String>,
    /// The key's own `issuer` member (Entra ID publishes one, possibly with `{tenantid}`).
    issuer: Option<String>,
    /// Where `{tenantid}` sits in `issuer`, found once at load so a check never allocates.
    issuer_tenant_at: Option<usize>,
    verifiers: Vec<(Algorithm, SignatureVerifier)>,
    /// SHA-256 over everything that decides what this key verifies: kid, key material,
    /// bound algorithms and `issuer`. Two loads of the same JWK give the same fingerprint.
    fingerprint: [u8; 32],
}

/// SHA-256 over length-prefixed `parts` (so no two different part lists collide by framing).
fn fingerprint<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> [u8; 32] {
    let mut hasher = openssl::sha::Sha256::new();
    for part in parts {
        hasher.update(&(part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher.finish()
}

/// The members of a public JWK that carry its key material (RFC 7638 §3.2), by key type.
fn material_members(family: KeyFamily) -> &'static [&'static str] {
    match family {
        KeyFamily::Rsa => &["kty", "e", "n"],
        KeyFamily::Ec(_) => &["kty", "crv", "x", "y"],
        KeyFamily::Ed25519 => &["kty", "crv", "x"],
        KeyFamily::Oct => &["kty", "k"],
    }
}

impl TrustedKey {
    /// Turns one JWK from a key set into a trusted key, or says why not.
    pub fn from_jwk(value: &Value, policy: &AlgorithmPolicy) -> Result<Self, KeyRefusal> {
        let map = match value {
            Value::Object(map) => map.clone(),
            _ => return Err(KeyRefusal::Malformed("expected a JSON object".into())),
        };
        let jwk =
            Jwk::from_map(map.clone()).map_err(|err| KeyRefusal::Malformed(err.to_string()))?;
        if let Some(key_use) = jwk.key_use()
            && key_use != "sig"
        {
            return Err(KeyRefusal::NotForSignatures(key_use.to_owned()));
        }
        if !jwk.is_for_key_operation("verify") {
            return Err(KeyRefusal::NotForVerification);
        }
        let family = key_family(&jwk, &map)?;
        if family == KeyFamily::Rsa {
            check_rsa(&map)?;
        }
        let algorithms = policy.bind(family, jwk.algorithm())?;
        let verifiers = algorithms
            .into_iter()
            .map(|alg| Ok((alg, SignatureVerifier::Public(public_verifier(alg, &jwk)?))))
            .collect::<Result<Vec<_>, KeyRefusal>>()?;
        let issuer = match map.get("issuer") {
            None => None,
            Some(Value::String(issuer)) => Some(issuer.clone()),
            Some(_) => return Err(KeyRefusal::Malformed("issuer is not a string".into())),
        };
        let kid = jwk.key_id().map(str::to_owned);
        let material = material_members(family)
            .iter()
            .map(|name| map.get(*name).and_then(Value::as_str).unwrap_or_default());
        let fingerprint = fingerprint(
            [
                kid.as_deref().unwrap_or_default(),
                issuer.as_deref().unwrap_or_default(),
            ]
            .into_iter()
            .chain(material)
            .chain(verifiers.iter().map(|(alg, _)| alg.name()))
            .map(str::as_bytes),
        );
        Ok(Self {
            issuer_tenant_at: issuer.as_deref().and_then(tenant_placeholder_at),
            kid,
            issuer,
            verifiers,
            fingerprint,
        })
    }

    /// A shared-secret key from configuration, for the HS algorithms in `algorithms` whose
    /// minimum secret length the secret meets.
    pub fn hmac(
        secret: &[u8],
        kid: Option<String>,
        algorithms: &[Algorithm],
    ) -> Result<Self, KeyRefusal> {
        let verifiers = algorithms
            .iter()
            .filter(|alg| alg.is_symmetric())
            .map(|&alg| {
                if secret.len() < alg.min_secret_len() {
                    return Err(KeyRefusal::Invalid(format!(
                        "{alg} needs a secret of at least {} bytes ({} bits); this one has {}",
                        alg.min_secret_len(),
                        alg.min_secret_len() * 8,
                        secret.len()
                    )));
                }
                let hmac = match alg {
                    Algorithm::HS384 => jws::HS384,
                    Algorithm::HS512 => jws::HS512,
                    _ => jws::HS256,
                };
                let signer = hmac
                    .signer_from_bytes(secret)
                    .map_err(|err| KeyRefusal::Invalid(err.to_string()))?;
                Ok((alg, SignatureVerifier::Hmac(signer)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if verifiers.is_empty() {
            return Err(KeyRefusal::NoAllowedAlgorithm);
        }
        let fingerprint = fingerprint(
            [
                b"oct".as_slice(),
                kid.as_deref().unwrap_or_default().as_bytes(),
                secret,
            ]
            .into_iter()
            .chain(verifiers.iter().map(|(alg, _)| alg.name().as_bytes())),
        );
        Ok(Self {
            kid,
            issuer: None,
            issuer_tenant_at: None,
            verifiers,
            fingerprint,
        })
    }

    /// The key's `kid`, if it has one.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The key's own `issuer` member, if the key set gave it one.
    pub fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }

    /// The key's `issuer` split around its `{tenantid}` placeholder (text before, text after),
    /// when it has one.
    pub fn issuer_template(&self) -> Option<(&str, &str)> {
        let issuer = self.issuer.as_deref()?;
        let at = self.issuer_tenant_at?;
        Some((
            issuer.get(..at)?,
            issuer.get(at + TENANT_PLACEHOLDER.len()..)?,
        ))
    }

    /// A digest of everything that decides what this key verifies (kid, key material, bound
    /// algorithms, `issuer`): equal for two loads of the same key, different otherwise.
    pub fn fingerprint(&self) -> &[u8; 32] {
        &self.fingerprint
    }

    /// The algorithms this key may verify.
    pub fn algorithms(&self) -> impl Iterator<Item = Algorithm> + '_ {
        self.verifiers.iter().map(|(alg, _)| *alg)
    }

    /// The verifier for the token's `alg`, if this key is bound to it. The comparison is exact
    /// and case-sensitive; `none` never matches.
    pub fn verifier_for(&self, alg: &str) -> Option<&SignatureVerifier> {
        let alg = alg.parse::<Algorithm>().ok()?;
        self.verifiers
            .iter()
            .find(|(bound, _)| *bound == alg)
            .map(|(_, verifier)| verifier)
    }
}

/// Byte offset of `{tenantid}` in `issuer`, compared case-insensitively.
fn tenant_placeholder_at(issuer: &str) -> Option<usize> {
    issuer
        .as_bytes()
        .windows(TENANT_PLACEHOLDER.len())
        .position(|window| window.eq_ignore_ascii_case(TENANT_PLACEHOLDER.as_bytes()))
}

fn key_family(jwk: &Jwk, map: &Map<String, Value>) -> Result<KeyFamily, KeyRefusal> {
    let curve = || match map.get("crv") {
        Some(Value::String(crv)) => Ok(crv.as_str()),
        _ => Err(KeyRefusal::Malformed(
            "crv is missing or not a string".into(),
        )),
    };
    match jwk.key_type() {
        "RSA" => Ok(KeyFamily::Rsa),
        "EC" => match curve()? {
            "P-256" => Ok(KeyFamily::Ec("P-256")),
            "P-384" => Ok(KeyFamily::Ec("P-384")),
            "P-521" => Ok(KeyFamily::Ec("P-521")),
            other => Err(KeyRefusal::UnsupportedCurve(other.to_owned())),
        },
        "OKP" => match curve()? {
            "Ed25519" => Ok(KeyFamily::Ed25519),
            other => Err(KeyRefusal::UnsupportedCurve(other.to_owned())),
        },
        "oct" => Err(KeyRefusal::SymmetricInKeySet),
        other => Err(KeyRefusal::UnsupportedKeyType(other.to_owned())),
    }
}

fn check_rsa(map: &Map<String, Value>) -> Result<(), KeyRefusal> {
    match map.get("e") {
        Some(Value::String(e)) if e == RSA_EXPONENT_F4 => {}
        Some(Value::String(_)) => return Err(KeyRefusal::WeakExponent),
        _ => return Err(KeyRefusal::Malformed("e is missing or not a string".into())),
    }
    let n = match map.get("n") {
        Some(Value::String(n)) => URL_SAFE_NO_PAD
            .decode(n)
            .map_err(|err| KeyRefusal::Malformed(format!("n is not base64url: {err}")))?,
        _ => return Err(KeyRefusal::Malformed("n is missing or not a string".into())),
    };
    let bits = modulus_bits(&n);
    if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) {
        return Err(KeyRefusal::ModulusSize(bits));
    }
    if has_roca_fingerprint(&n) {
        return Err(KeyRefusal::RocaVulnerable);
    }
    Ok(())
}

/// Small primes of the ROCA fingerprint test (Nemec et al., CCS 2017, as in the authors'
/// `roca-detect`).
const ROCA_PRIMES: [u32; 38] = [
    3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97,
    101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167,
];

/// True when `n` (big-endian) has the ROCA fingerprint (CVE-2017-15361): for every prime `p`
/// of [`ROCA_PRIMES`], `n mod p` lies in the subgroup of (Z/pZ)* generated by 65537. Keys from
/// the affected Infineon library always do; a random modulus does with probability ~2^-30.
fn has_roca_fingerprint(n: &[u8]) -> bool {
    ROCA_PRIMES.iter().all(|&p| {
        let residue = n.iter().fold(0_u32, |r, &b| (r * 256 + u32::from(b)) % p);
        let generator = 65537 % p;
        let mut power = 1;
        loop {
            if power == residue {
                return true;
            }
            power = power * generator % p;
            if power == 1 {
                return false;
            }
        }
    })
}

fn modulus_bits(n: &[u8]) -> usize {
    let significant = n.iter().position(|&b| b != 0).map_or(&[][..], |i| &n[i..]);
    match significant.first() {
        Some(&first) => (significant.len() - 1) * 8 + (8 - first.leading_zeros() as usize),
        None => 0,
    }
}

fn public_verifier(alg: Algorithm, jwk: &Jwk) -> Result<Box<dyn JwsVerifier>, KeyRefusal> {
    fn boxed<V: JwsVerifier + 'static>(
        built: Result<V, josekit::JoseError>,
    ) -> Result<Box<dyn JwsVerifier>, KeyRefusal> {
        built
            .map(|v| Box::new(v) as Box<dyn JwsVerifier>)
            .map_err(|err| KeyRefusal::Invalid(err.to_string()))
    }
    match alg {
        Algorithm::RS256 => boxed(jws::RS256.verifier_from_jwk(jwk)),
        Algorithm::RS384 => boxed(jws::RS384.verifier_from_jwk(jwk)),
        Algorithm::RS512 => boxed(jws::RS512.verifier_from_jwk(jwk)),
        Algorithm::PS256 => boxed(jws::PS256.verifier_from_jwk(jwk)),
        Algorithm::PS384 => boxed(jws::PS384.verifier_from_jwk(jwk)),
        Algorithm::PS512 => boxed(jws::PS512.verifier_from_jwk(jwk)),
        Algorithm::ES256 => boxed(jws::ES256.verifier_from_jwk(jwk)),
        Algorithm::ES384 => boxed(jws::ES384.verifier_from_jwk(jwk)),
        Algorithm::ES512 => boxed(jws::ES512.verifier_from_jwk(jwk)),
        Algorithm::EdDSA => boxed(jws::EdDSA.verifier_from_jwk(jwk)),
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            Err(KeyRefusal::SymmetricInKeySet)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rsa_public(alg: Option<&str>) -> Value {
        let pair = jws::RS256.generate_key_pair(2048).unwrap();
        let mut jwk = pair.to_jwk_public_key();
        jwk.set_key_id("r1");
        let mut map = jwk.as_ref().clone();
        map.remove("alg");
        if let Some(a) = alg {
            map.insert("alg".into(), a.into());
        }
        Value::Object(map)
    }

    fn ec_public(alg: Option<&str>) -> Value {
        let pair = jws::ES256.generate_key_pair().unwrap();
        let mut jwk = pair.to_jwk_public_key();
        jwk.set_key_id("e1");
        let mut map = jwk.as_ref().clone();
        map.remove("alg");
        if let Some(a) = alg {
            map.insert("alg".into(), a.into());
        }
        Value::Object(map)
    }

    fn with(mut jwk: Value, name: &str, value: Value) -> Value {
        jwk.as_object_mut().unwrap().insert(name.into(), value);
        jwk
    }

    #[test]
    fn default_policy_binds_one_algorithm_per_key() {
        let key = TrustedKey::from_jwk(&rsa_public(None), &AlgorithmPolicy::default()).unwrap();
        assert_eq!(key.algorithms().collect::<Vec<_>>(), [Algorithm::RS256]);
        assert!(key.verifier_for("PS256").is_none());
        assert!(key.verifier_for("HS256").is_none());
        assert!(key.verifier_for("none").is_none());
        let key = TrustedKey::from_jwk(&ec_public(None), &AlgorithmPolicy::default()).unwrap();
        assert_eq!(key.algorithms().collect::<Vec<_>>(), [Algorithm::ES256]);
    }

    #[test]
    fn jwk_alg_binds_and_must_be_allowed() {
        let policy = AlgorithmPolicy {
            allowed: vec![Algorithm::RS256, Algorithm::PS256],
        };
        let key = TrustedKey::from_jwk(&rsa_public(Some("PS256")), &policy).unwrap();
        assert_eq!(key.algorithms().collect::<Vec<_>>(), [Algorithm::PS256]);
        let key = TrustedKey::from_jwk(&rsa_public(None), &policy).unwrap();
        assert_eq!(
            key.algorithms().collect::<Vec<_>>(),
            [Algorithm::RS256, Algorithm::PS256]
        );
        let only_es = AlgorithmPolicy {
            allowed: vec![Algorithm::ES256],
        };
        assert_eq!(
            TrustedKey::from_jwk(&rsa_public(Some("RS256")), &only_es).unwrap_err(),
            KeyRefusal::AlgorithmNotAllowed(Algorithm::RS256)
        );
        assert_eq!(
            TrustedKey::from_jwk(&rsa_public(None), &only_es).unwrap_err(),
            KeyRefusal::NoAllowedAlgorithm
        );
    }

    #[test]
    fn mismatched_or_unknown_alg_is_refused() {
        let p = AlgorithmPolicy::default();
        assert_eq!(
            TrustedKey::from_jwk(&ec_public(Some("ES384")), &p).unwrap_err(),
            KeyRefusal::AlgorithmMismatch(Algorithm::ES384)
        );
        assert_eq!(
            TrustedKey::from_jwk(&rsa_public(Some("ES256")), &p).unwrap_err(),
            KeyRefusal::AlgorithmMismatch(Algorithm::ES256)
        );
        assert!(matches!(
            TrustedKey::from_jwk(&rsa_public(Some("none")), &p).unwrap_err(),
            KeyRefusal::UnknownAlgorithm(_)
        ));
    }

    #[test]
    fn hygiene_rules() {
        let p = AlgorithmPolicy::default();
        let rsa = rsa_public(None);
        assert_eq!(
            TrustedKey::from_jwk(&with(rsa.clone(), "use", json!("enc")), &p).unwrap_err(),
            KeyRefusal::NotForSignatures("enc".into())
        );
        assert_eq!(
            TrustedKey::from_jwk(&with(rsa.clone(), "key_ops", json!(["encrypt"])), &p)
                .unwrap_err(),
            KeyRefusal::NotForVerification
        );
        assert_eq!(
            TrustedKey::from_jwk(&with(rsa.clone(), "e", json!("AQ")), &p).unwrap_err(),
            KeyRefusal::WeakExponent
        );
        assert_eq!(
            TrustedKey::from_jwk(&with(rsa, "e", json!("Aw")), &p).unwrap_err(),
            KeyRefusal::WeakExponent
        );
        let small = jws::RS256.generate_key_pair(1024);
        if let Ok(pair) = small {
            let jwk = Value::Object(pair.to_jwk_public_key().as_ref().clone());
            assert_eq!(
                TrustedKey::from_jwk(&jwk, &p).unwrap_err(),
                KeyRefusal::ModulusSize(1024)
            );
        }
        let big_n = URL_SAFE_NO_PAD.encode(vec![0xff_u8; 1025]);
        let huge = json!({"kty": "RSA", "e": "AQAB", "n": big_n});
        assert_eq!(
            TrustedKey::from_jwk(&huge, &p).unwrap_err(),
            KeyRefusal::ModulusSize(8200)
        );
        let oct = json!({"kty": "oct", "k": URL_SAFE_NO_PAD.encode([0u8; 32])});
        assert_eq!(
            TrustedKey::from_jwk(&oct, &p).unwrap_err(),
            KeyRefusal::SymmetricInKeySet
        );
        let x448 = json!({"kty": "OKP", "crv": "X25519", "x": "AAAA"});
        assert!(matches!(
            TrustedKey::from_jwk(&x448, &p).unwrap_err(),
            KeyRefusal::UnsupportedCurve(_)
        ));
        assert!(matches!(
            TrustedKey::from_jwk(&json!({"kty": "DSA"}), &p).unwrap_err(),
            KeyRefusal::UnsupportedKeyType(_)
        ));
        assert!(matches!(
            TrustedKey::from_jwk(&json!("x"), &p).unwrap_err(),
            KeyRefusal::Malformed(_)
        ));
    }

    #[test]
    fn modulus_bits_ignores_leading_zero_bytes() {
        assert_eq!(modulus_bits(&[0, 0, 0x80, 0]), 16);
        assert_eq!(modulus_bits(&[0x01]), 1);
        assert_eq!(modulus_bits(&[]), 0);
        assert_eq!(modulus_bits(&[0, 0]), 0);
    }

    #[test]
    fn hmac_keys_need_long_secrets_and_compare_exactly() {
        assert!(TrustedKey::hmac(&[7; 31], None, &[Algorithm::HS256]).is_err());
        assert!(TrustedKey::hmac(&[7; 32], None, &[Algorithm::HS384]).is_err());
        assert!(TrustedKey::hmac(&[7; 32], None, &[Algorithm::RS256]).is_err());
        let key = TrustedKey::hmac(&[7; 32], None, &[Algorithm::HS256]).unwrap();
        let signer = jws::HS256.signer_from_bytes([7; 32]).unwrap();
        let mac = signer.sign(b"a.b").unwrap();
        let verifier = key.verifier_for("HS256").unwrap();
        assert!(verifier.verify(b"a.b", &mac));
        assert!(!verifier.verify(b"a.c", &mac));
        assert!(!verifier.verify(b"a.b", &mac[..31]));
        assert!(!verifier.verify(b"a.b", b""));
    }

    #[test]
    fn key_issuer_templates_are_split_once_at_load() {
        let policy = AlgorithmPolicy::default();
        let jwk = ec_public(None);
        let template = "https://login.example.com/{TenantId}/v2.0";
        let key =
            TrustedKey::from_jwk(&with(jwk.clone(), "issuer", template.into()), &policy).unwrap();
        assert_eq!(
            key.issuer_template(),
            Some(("https://login.example.com/", "/v2.0"))
        );
        let pinned = "https://login.example.com/t1/v2.0";
        let key =
            TrustedKey::from_jwk(&with(jwk.clone(), "issuer", pinned.into()), &policy).unwrap();
        assert_eq!(key.issuer(), Some(pinned));
        assert_eq!(key.issuer_template(), None);
    }

    #[test]
    fn fingerprints_cover_material_kid_binding_and_issuer() {
        let policy = AlgorithmPolicy::default();
        let jwk = ec_public(None);
        let fingerprint = |jwk: &Value| *TrustedKey::from_jwk(jwk, &policy).unwrap().fingerprint();
        let base = fingerprint(&jwk);
        assert_eq!(base, fingerprint(&jwk), "stable across loads");
        assert_eq!(
            base,
            fingerprint(&with(jwk.clone(), "use", "sig".into())),
            "members that do not change verification do not count"
        );
        for changed in [
            with(jwk.clone(), "kid", "e2".into()),
            with(jwk.clone(), "issuer", "https://idp".into()),
            ec_public(None),
        ] {
            assert_ne!(base, fingerprint(&changed), "{changed}");
        }
        let two_algs = AlgorithmPolicy {
            allowed: vec![Algorithm::RS256, Algorithm::PS256],
        };
        let rsa = rsa_public(None);
        assert_ne!(
            TrustedKey::from_jwk(&rsa, &two_algs).unwrap().fingerprint(),
            TrustedKey::from_jwk(&rsa, &policy).unwrap().fingerprint(),
            "the bound algorithms count"
        );
        let a = TrustedKey::hmac(&[1; 32], Some("h".into()), &[Algorithm::HS256]).unwrap();
        let b = TrustedKey::hmac(&[2; 32], Some("h".into()), &[Algorithm::HS256]).unwrap();
        assert_ne!(a.fingerprint(), b.fingerprint());
    }
}
