//! Key documents that are not plain JWK Sets: PEM keys and X.509 certificates (alone, or in a
//! kid→PEM map as Google and IAP publish them) and SPIFFE trust bundles.
//!
//! Every key is turned into a JWK first and then goes through [`TrustedKey::from_jwk`], so the
//! same hygiene rules apply whatever the format. Certificates are only key containers here:
//! their chain and validity dates are not checked, because the map itself is fetched over
//! HTTPS from the issuer's configured URL, which is what makes its keys trusted (the way
//! Google's own libraries treat `oauth2/v1/certs`).

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openssl::bn::{BigNum, BigNumContext};
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Public};
use openssl::rsa::Rsa;
use openssl::x509::X509;
use serde_json::{Map, Value, json};

use super::{AlgorithmPolicy, KeyRefusal, KeySet, KeySetError, TrustedKey};
use crate::jose::parse_object;

/// Why a PEM key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PemError {
    /// Not a PEM public key, RSA public key or certificate.
    #[error("not a PEM public key or certificate: {0}")]
    NotPem(String),
    /// A key type or curve fedauthz does not verify with.
    #[error("unsupported key in PEM: {0}")]
    Unsupported(String),
    /// The key was read but refused by the key hygiene rules.
    #[error(transparent)]
    Refused(#[from] KeyRefusal),
}

/// Reads a PEM public key (SPKI `PUBLIC KEY`, PKCS#1 `RSA PUBLIC KEY`) or an X.509
/// `CERTIFICATE` and returns its public key as a JWK (without `kid`).
pub fn jwk_from_pem(pem: &[u8]) -> Result<Value, PemError> {
    let not_pem = |err: openssl::error::ErrorStack| PemError::NotPem(err.to_string());
    let text = String::from_utf8_lossy(pem);
    let key: PKey<Public> = if text.contains("BEGIN CERTIFICATE") {
        X509::from_pem(pem)
            .and_then(|cert| cert.public_key())
            .map_err(not_pem)?
    } else if text.contains("BEGIN RSA PUBLIC KEY") {
        Rsa::public_key_from_pem_pkcs1(pem)
            .and_then(PKey::from_rsa)
            .map_err(not_pem)?
    } else {
        PKey::public_key_from_pem(pem).map_err(not_pem)?
    };
    key_to_jwk(&key)
}

fn key_to_jwk(key: &PKey<Public>) -> Result<Value, PemError> {
    let unsupported = |err: openssl::error::ErrorStack| PemError::Unsupported(err.to_string());
    match key.id() {
        Id::RSA => {
            let rsa = key.rsa().map_err(unsupported)?;
            Ok(json!({
                "kty": "RSA",
                "n": URL_SAFE_NO_PAD.encode(rsa.n().to_vec()),
                "e": URL_SAFE_NO_PAD.encode(rsa.e().to_vec()),
            }))
        }
        Id::EC => {
            let ec = key.ec_key().map_err(unsupported)?;
            let group = ec.group();
            let (crv, size) = match group.curve_name() {
                Some(Nid::X9_62_PRIME256V1) => ("P-256", 32),
                Some(Nid::SECP384R1) => ("P-384", 48),
                Some(Nid::SECP521R1) => ("P-521", 66),
                other => return Err(PemError::Unsupported(format!("EC curve {other:?}"))),
            };
            let mut ctx = BigNumContext::new().map_err(unsupported)?;
            let mut x = BigNum::new().map_err(unsupported)?;
            let mut y = BigNum::new().map_err(unsupported)?;
            ec.public_key()
                .affine_coordinates(group, &mut x, &mut y, &mut ctx)
                .map_err(unsupported)?;
            let coordinate = |n: &BigNum| n.to_vec_padded(size).map_err(unsupported);
            Ok(json!({
                "kty": "EC",
                "crv": crv,
                "x": URL_SAFE_NO_PAD.encode(coordinate(&x)?),
                "y": URL_SAFE_NO_PAD.encode(coordinate(&y)?),
            }))
        }
        Id::ED25519 => {
            let raw = key.raw_public_key().map_err(unsupported)?;
            Ok(json!({ "kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(raw) }))
        }
        other => Err(PemError::Unsupported(format!("key type {other:?}"))),
    }
}

/// One PEM key for `kid` (AWS ALB serves one per kid).
pub fn trusted_key_from_pem(
    kid: &str,
    pem: &[u8],
    policy: &AlgorithmPolicy,
) -> Result<TrustedKey, PemError> {
    let mut jwk = jwk_from_pem(pem)?;
    if let Some(map) = jwk.as_object_mut() {
        map.insert("kid".into(), kid.into());
    }
    Ok(TrustedKey::from_jwk(&jwk, policy)?)
}

/// A JSON object mapping kid → PEM public key or certificate (Google `oauth2/v1/certs`, IAP
/// `verify/public_key`). Entries that fail are left out with their reason, as in a JWK Set.
pub fn key_set_from_pem_map(
    bytes: &[u8],
    policy: &AlgorithmPolicy,
    extra: impl IntoIterator<Item = Arc<TrustedKey>>,
) -> Result<KeySet, KeySetError> {
    let document = parse_object(bytes).map_err(KeySetError::NotAJwkSet)?;
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    for (kid, entry) in &document {
        let key = match entry {
            Value::String(pem) => trusted_key_from_pem(kid, pem.as_bytes(), policy),
            _ => Err(PemError::NotPem("the value is not a string".into())),
        };
        match key {
            Ok(key) => keys.push(Arc::new(key)),
            Err(err) => skipped.push(format!("kid {kid:?}: {err}")),
        }
    }
    keys.extend(extra);
    KeySet::from_keys(keys, skipped)
}

/// A SPIFFE trust bundle: a JWK Set whose `use: jwt-svid` keys are JWT authorities (`x509-svid`
/// keys are X.509 CAs and are left out). Returns the set and `spiffe_refresh_hint` (seconds).
pub fn key_set_from_spiffe_bundle(
    bytes: &[u8],
    policy: &AlgorithmPolicy,
) -> Result<(KeySet, Option<u64>), KeySetError> {
    let document = parse_object(bytes).map_err(KeySetError::NotAJwkSet)?;
    let hint = match document.get("spiffe_refresh_hint") {
        None => None,
        Some(Value::Number(n)) => n.as_u64(),
        Some(_) => {
            return Err(KeySetError::NotAJwkSet(
                "spiffe_refresh_hint is not a number".into(),
            ));
        }
    };
    let entries = match document.get("keys") {
        Some(Value::Array(entries)) => entries,
        _ => return Err(KeySetError::NotAJwkSet("no \"keys\" array".into())),
    };
    let authorities: Vec<Value> = entries
        .iter()
        .filter_map(Value::as_object)
        .filter(|key| key.get("use").and_then(Value::as_str) == Some("jwt-svid"))
        .map(|key| {
            // A JWT authority is a signature key; the hygiene rules know it as `use: sig`.
            let mut key: Map<String, Value> = key.clone();
            key.insert("use".into(), "sig".into());
            Value::Object(key)
        })
        .collect();
    let set = KeySet::from_jwks(&json!({ "keys": authorities }), policy, [])?;
    Ok((set, hint))
}

/// True for a canonical UUID (8-4-4-4-12 hex digits). AWS ALB kids must look like this before
/// they become part of a key URL.
pub fn is_uuid(kid: &str) -> bool {
    let groups: Vec<&str> = kid.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::Algorithm;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::ecdsa::EcdsaSig;
    use openssl::hash::MessageDigest;
    use openssl::pkey::Private;
    use openssl::sign::Signer;

    fn es256_key() -> PKey<Private> {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
    }

    /// A JWS ES256 signature (r || s) over `input`.
    fn es256_sign(key: &PKey<Private>, input: &[u8]) -> Vec<u8> {
        let mut signer = Signer::new(MessageDigest::sha256(), key).unwrap();
        let der = signer.sign_oneshot_to_vec(input).unwrap();
        let sig = EcdsaSig::from_der(&der).unwrap();
        [
            sig.r().to_vec_padded(32).unwrap(),
            sig.s().to_vec_padded(32).unwrap(),
        ]
        .concat()
    }

    fn rsa_key(bits: u32) -> PKey<Private> {
        PKey::from_rsa(Rsa::generate(bits).unwrap()).unwrap()
    }

    fn self_signed(key: &PKey<Private>) -> Vec<u8> {
        let mut name = openssl::x509::X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "test").unwrap();
        let name = name.build();
        let mut cert = X509::builder().unwrap();
        cert.set_version(2).unwrap();
        cert.set_subject_name(&name).unwrap();
        cert.set_issuer_name(&name).unwrap();
        cert.set_pubkey(key).unwrap();
        cert.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        cert.set_not_after(&openssl::asn1::Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        cert.sign(key, MessageDigest::sha256()).unwrap();
        cert.build().to_pem().unwrap()
    }

    #[test]
    fn an_alb_pem_key_verifies_its_signatures() {
        let key = es256_key();
        let pem = key.public_key_to_pem().unwrap();
        let trusted = trusted_key_from_pem("kid-1", &pem, &AlgorithmPolicy::default()).unwrap();
        assert_eq!(trusted.kid(), Some("kid-1"));
        let signature = es256_sign(&key, b"header.payload");
        let verifier = trusted.verifier_for("ES256").unwrap();
        assert!(verifier.verify(b"header.payload", &signature));
        assert!(!verifier.verify(b"header.payload2", &signature));
    }

    #[test]
    fn certificates_rsa_pkcs1_and_ed25519_convert() {
        let rsa = rsa_key(2048);
        let from_cert = jwk_from_pem(&self_signed(&rsa)).unwrap();
        assert_eq!(from_cert["kty"], "RSA");
        assert_eq!(from_cert["e"], "AQAB");
        let pkcs1 = rsa.rsa().unwrap().public_key_to_pem_pkcs1().unwrap();
        assert_eq!(jwk_from_pem(&pkcs1).unwrap(), from_cert);
        let ed = PKey::generate_ed25519().unwrap();
        let jwk = jwk_from_pem(&ed.public_key_to_pem().unwrap()).unwrap();
        assert_eq!(jwk["crv"], "Ed25519");
        assert!(matches!(jwk_from_pem(b"garbage"), Err(PemError::NotPem(_))));
    }

    #[test]
    fn a_pem_map_keeps_good_keys_and_skips_weak_or_broken_ones() {
        let good = rsa_key(2048);
        let weak = rsa_key(1024);
        let map = json!({
            "good": String::from_utf8(self_signed(&good)).unwrap(),
            "weak": String::from_utf8(weak.public_key_to_pem().unwrap()).unwrap(),
            "broken": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
            "number": 7,
        });
        let set = key_set_from_pem_map(
            map.to_string().as_bytes(),
            &AlgorithmPolicy {
                allowed: vec![Algorithm::RS256],
            },
            [],
        )
        .unwrap();
        assert_eq!(set.kids().collect::<Vec<_>>(), ["good"]);
        assert_eq!(set.skipped().len(), 3, "{:?}", set.skipped());
        assert!(key_set_from_pem_map(b"[]", &AlgorithmPolicy::default(), []).is_err());
    }

    #[test]
    fn a_spiffe_bundle_yields_its_jwt_authorities_and_hint() {
        let key = es256_key();
        let mut jwt = jwk_from_pem(&key.public_key_to_pem().unwrap()).unwrap();
        jwt["use"] = json!("jwt-svid");
        jwt["kid"] = json!("authority-1");
        let mut x509 = jwk_from_pem(&es256_key().public_key_to_pem().unwrap()).unwrap();
        x509["use"] = json!("x509-svid");
        let bundle =
            json!({ "keys": [jwt, x509], "spiffe_refresh_hint": 300, "spiffe_sequence": 4 });
        let (set, hint) =
            key_set_from_spiffe_bundle(bundle.to_string().as_bytes(), &AlgorithmPolicy::default())
                .unwrap();
        assert_eq!(set.kids().collect::<Vec<_>>(), ["authority-1"]);
        assert_eq!(hint, Some(300));
    }

    #[test]
    fn only_canonical_uuids_are_uuids() {
        assert!(is_uuid("6a0d6ef4-3c4e-4bb1-9c9d-2d5f1f0c8a11"));
        assert!(is_uuid("6A0D6EF4-3C4E-4BB1-9C9D-2D5F1F0C8A11"));
        for bad in [
            "../etc/passwd",
            "6a0d6ef43c4e4bb19c9d2d5f1f0c8a11",
            "6a0d6ef4-3c4e-4bb1-9c9d-2d5f1f0c8a11-",
            "6a0d6ef4-3c4e-4bb1-9c9d-2d5f1f0c8a1g",
            "6a0d6ef4-3c4e-4bb1-9c9d-2d5f1f0c8a1",
            "",
        ] {
            assert!(!is_uuid(bad), "{bad}");
        }
    }
}
