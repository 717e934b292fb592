//! Key documents that are not plain JWK Sets: PEM keys and X.509 certificates (alone, or in a
//! kid→PEM map as Google and IAP publish them) and SPIFFE trust bundles.
//!
//! Every key is turned into a JWK first and then goes through [`TrustedKey::from_jwk`], so the
//! same hygiene rules (RSA size, exponent and ROCA checks, EC curves, algorithm binding) apply
//! whatever the format.
//!
//! Certificates are only key containers here: their chain, validity dates and extensions are
//! not checked. What makes their keys trusted is where they come from: the map is fetched over
//! HTTPS (with the issuer's configured CA bundle, if any) from the issuer's configured URL, the
//! way Google's own libraries read `oauth2/v1/certs`. Google rotates those certificates by
//! publishing new ones, not by letting them expire, and their signatures are self-issued, so a
//! chain or date check would add failure modes without adding trust.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openssl::bn::{BigNum, BigNumContext};
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Public};
use openssl::rsa::Rsa;
use openssl::x509::X509;
use serde_json::{Value, json};

use super::{AlgorithmPolicy, KeyRefusal, KeySet, KeySetError, TrustedKey};
use crate::jose::parse_object;

/// Why a PEM key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PemError {
    /// Not a PEM public key, RSA public key or certificate, or its contents do not parse.
    #[error("not a PEM public key or certificate: {0}")]
    NotPem(String),
    /// A key type or curve fedauthz does not verify with.
    #[error("unsupported key in PEM: {0}")]
    Unsupported(String),
    /// The key was read but refused by the key hygiene rules.
    #[error(transparent)]
    Refused(#[from] KeyRefusal),
}

/// Reads the first PEM block of `pem` and returns its public key as a JWK (without `kid`):
/// `{kty: RSA, n, e}`, `{kty: EC, crv, x, y}` (P-256, P-384, P-521; coordinates at the curve's
/// full length) or `{kty: OKP, crv: Ed25519, x}`.
///
/// The block may be an SPKI `PUBLIC KEY`, a PKCS#1 `RSA PUBLIC KEY` or an X.509 `CERTIFICATE`
/// (only its public key is used; see the module documentation for why the certificate itself is
/// not validated). Private keys and any other block are refused.
pub fn jwk_from_pem(pem: &[u8]) -> Result<Value, PemError> {
    let label = first_pem_label(pem).ok_or_else(|| {
        PemError::NotPem("no \"-----BEGIN <label>-----\" line with a valid label".into())
    })?;
    let unreadable = |err: openssl::error::ErrorStack| {
        PemError::NotPem(format!("the {label} block does not parse: {err}"))
    };
    let key: PKey<Public> = match label {
        "CERTIFICATE" => X509::from_pem(pem)
            .and_then(|cert| cert.public_key())
            .map_err(unreadable)?,
        "RSA PUBLIC KEY" => Rsa::public_key_from_pem_pkcs1(pem)
            .and_then(PKey::from_rsa)
            .map_err(unreadable)?,
        "PUBLIC KEY" => PKey::public_key_from_pem(pem).map_err(unreadable)?,
        other if other.contains("PRIVATE KEY") => {
            return Err(PemError::NotPem(format!(
                "the block is a private key ({other}); only public keys and certificates are read"
            )));
        }
        other => {
            return Err(PemError::NotPem(format!(
                "the block is labelled {other:?}; expected PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE"
            )));
        }
    };
    key_to_jwk(&key)
}

/// The label of the first `-----BEGIN <label>-----` line, when it is a plausible PEM label
/// (upper-case letters, digits and spaces; RFC 7468 §2).
fn first_pem_label(pem: &[u8]) -> Option<&str> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    const DASHES: &[u8] = b"-----";
    let start = pem.windows(BEGIN.len()).position(|w| w == BEGIN)? + BEGIN.len();
    let rest = pem.get(start..)?;
    let end = rest.windows(DASHES.len()).position(|w| w == DASHES)?;
    let label = std::str::from_utf8(rest.get(..end)?).ok()?;
    let plausible = !label.is_empty()
        && label.len() <= 64
        && label
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b' ');
    plausible.then_some(label)
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
                Some(other) => {
                    return Err(PemError::Unsupported(format!(
                        "EC curve {}",
                        nid_name(other.as_raw())
                    )));
                }
                None => {
                    return Err(PemError::Unsupported(
                        "EC key with explicit curve parameters (not a named curve)".into(),
                    ));
                }
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
        other => Err(PemError::Unsupported(format!(
            "key type {}",
            nid_name(other.as_raw())
        ))),
    }
}

/// OpenSSL's short name for a key type or curve (`secp256k1`, `ED448`), for error messages.
fn nid_name(raw: std::os::raw::c_int) -> String {
    Nid::from_raw(raw)
        .short_name()
        .map_or_else(|_| format!("with OpenSSL NID {raw}"), str::to_owned)
}

/// One PEM key (see [`jwk_from_pem`]) trusted under `kid`: AWS ALB serves one SPKI ES256 key per
/// kid. Check the kid with [`is_uuid`] before building the key's URL from it.
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

/// A JSON object mapping kid → PEM public key or certificate: Google `oauth2/v1/certs`
/// (X.509 certificates, RS256) or IAP `iap/verify/public_key` (SPKI keys, ES256). Entries that
/// fail are left out with their reason, as in a JWK Set; a repeated kid makes the whole document
/// invalid (the parser refuses duplicate members). `extra` keys (a configured HMAC secret) are
/// added as they are.
pub fn key_set_from_pem_map(
    bytes: &[u8],
    policy: &AlgorithmPolicy,
    extra: impl IntoIterator<Item = Arc<TrustedKey>>,
) -> Result<KeySet, KeySetError> {
    let document = parse_object(bytes).map_err(KeySetError::NotAPemMap)?;
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

/// A SPIFFE trust bundle (SPIFFE Trust Domain and Bundle §4): a JWK Set whose `use: jwt-svid`
/// keys are the trust domain's JWT authorities. Returns the set and `spiffe_refresh_hint`
/// (seconds), if the bundle has one.
///
/// `x509-svid` keys (X.509 CAs) and keys with any other `use` are ignored, as the bundle
/// specification requires (§4.2.2); a key without `use`, or an entry that is not an object, is
/// left out with a reason. JWT authorities carry no `alg`: each is bound by the issuer's
/// [`AlgorithmPolicy`] like any JWK without one. Other top-level members (`spiffe_sequence`)
/// are allowed and not read.
pub fn key_set_from_spiffe_bundle(
    bytes: &[u8],
    policy: &AlgorithmPolicy,
) -> Result<(KeySet, Option<u64>), KeySetError> {
    let document = parse_object(bytes).map_err(KeySetError::NotASpiffeBundle)?;
    let hint = match document.get("spiffe_refresh_hint") {
        None => None,
        Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64(),
        Some(_) => {
            return Err(KeySetError::NotASpiffeBundle(
                "spiffe_refresh_hint is not a non-negative whole number of seconds".into(),
            ));
        }
    };
    let entries = match document.get("keys") {
        Some(Value::Array(entries)) => entries,
        Some(_) => {
            return Err(KeySetError::NotASpiffeBundle(
                "\"keys\" is not an array".into(),
            ));
        }
        None => return Err(KeySetError::NotASpiffeBundle("no \"keys\" member".into())),
    };
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    let mut ignored = 0_usize;
    for (index, entry) in entries.iter().enumerate() {
        let Value::Object(jwk) = entry else {
            skipped.push(format!("key {index}: not a JSON object"));
            continue;
        };
        let name = match jwk.get("kid").and_then(Value::as_str) {
            Some(kid) => format!("key {index} (kid {kid:?})"),
            None => format!("key {index}"),
        };
        match jwk.get("use") {
            Some(Value::String(key_use)) if key_use == "jwt-svid" => {}
            Some(Value::String(_)) => {
                ignored += 1;
                continue;
            }
            Some(_) => {
                skipped.push(format!("{name}: use is not a string"));
                continue;
            }
            None => {
                skipped.push(format!(
                    "{name}: no use member (bundle keys say \"jwt-svid\" or \"x509-svid\")"
                ));
                continue;
            }
        }
        // A JWT authority is a signature key; the hygiene rules know that as `use: sig`.
        let mut jwk = jwk.clone();
        jwk.insert("use".into(), "sig".into());
        match TrustedKey::from_jwk(&Value::Object(jwk), policy) {
            Ok(key) => keys.push(Arc::new(key)),
            Err(refusal) => skipped.push(format!("{name}: {refusal}")),
        }
    }
    if keys.is_empty() && ignored > 0 {
        skipped.push(format!(
            "{ignored} key(s) with use other than \"jwt-svid\" (X.509 authorities) ignored"
        ));
    }
    let set = KeySet::from_keys(keys, skipped)?;
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

    const INPUT: &[u8] = b"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0";

    fn ec_key(curve: Nid) -> PKey<Private> {
        let group = EcGroup::from_curve_name(curve).unwrap();
        PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
    }

    fn rsa_key(bits: u32) -> PKey<Private> {
        PKey::from_rsa(Rsa::generate(bits).unwrap()).unwrap()
    }

    /// A JWS signature over `input`: PKCS#1 v1.5 for RS*, raw `r || s` for ES*, plain Ed25519.
    fn jws_sign(key: &PKey<Private>, alg: Algorithm, input: &[u8]) -> Vec<u8> {
        let (digest, half) = match alg {
            Algorithm::RS256 | Algorithm::ES256 => (MessageDigest::sha256(), 32),
            Algorithm::ES384 => (MessageDigest::sha384(), 48),
            Algorithm::ES512 => (MessageDigest::sha512(), 66),
            Algorithm::EdDSA => {
                let mut signer = Signer::new_without_digest(key).unwrap();
                return signer.sign_oneshot_to_vec(input).unwrap();
            }
            other => panic!("no test signer for {other}"),
        };
        let mut signer = Signer::new(digest, key).unwrap();
        let signature = signer.sign_oneshot_to_vec(input).unwrap();
        if alg == Algorithm::RS256 {
            return signature;
        }
        let sig = EcdsaSig::from_der(&signature).unwrap();
        [
            sig.r().to_vec_padded(half).unwrap(),
            sig.s().to_vec_padded(half).unwrap(),
        ]
        .concat()
    }

    /// Signs with `key` and checks the trusted key verifies it, and only over the same input.
    fn assert_verifies(trusted: &TrustedKey, key: &PKey<Private>, alg: Algorithm) {
        let signature = jws_sign(key, alg, INPUT);
        let verifier = trusted.verifier_for(&alg.to_string()).unwrap();
        assert!(verifier.verify(INPUT, &signature), "{alg}");
        assert!(!verifier.verify(b"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJiIn0", &signature));
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
        // Already expired: validity dates are deliberately not checked.
        cert.set_not_before(&openssl::asn1::Asn1Time::from_unix(0).unwrap())
            .unwrap();
        cert.set_not_after(&openssl::asn1::Asn1Time::from_unix(86_400).unwrap())
            .unwrap();
        let digest = if key.id() == Id::ED25519 {
            MessageDigest::null()
        } else {
            MessageDigest::sha256()
        };
        cert.sign(key, digest).unwrap();
        cert.build().to_pem().unwrap()
    }

    fn pem_string(pem: Vec<u8>) -> String {
        String::from_utf8(pem).unwrap()
    }

    #[test]
    fn an_alb_pem_key_verifies_its_signatures() {
        let key = ec_key(Nid::X9_62_PRIME256V1);
        let pem = key.public_key_to_pem().unwrap();
        let trusted = trusted_key_from_pem(
            "6a0d6ef4-3c4e-4bb1-9c9d-2d5f1f0c8a11",
            &pem,
            &AlgorithmPolicy::default(),
        )
        .unwrap();
        assert_eq!(trusted.kid(), Some("6a0d6ef4-3c4e-4bb1-9c9d-2d5f1f0c8a11"));
        assert_eq!(trusted.algorithms().collect::<Vec<_>>(), [Algorithm::ES256]);
        assert_verifies(&trusted, &key, Algorithm::ES256);
    }

    #[test]
    fn rsa_from_spki_pkcs1_and_certificate_verifies() {
        let rsa = rsa_key(2048);
        let spki = rsa.public_key_to_pem().unwrap();
        let pkcs1 = rsa.rsa().unwrap().public_key_to_pem_pkcs1().unwrap();
        let cert = self_signed(&rsa);
        let from_spki = jwk_from_pem(&spki).unwrap();
        assert_eq!(from_spki["kty"], "RSA");
        assert_eq!(from_spki["e"], "AQAB");
        assert!(from_spki.get("kid").is_none());
        assert_eq!(jwk_from_pem(&pkcs1).unwrap(), from_spki);
        assert_eq!(jwk_from_pem(&cert).unwrap(), from_spki);
        for pem in [spki, pkcs1, cert] {
            let trusted = trusted_key_from_pem("k", &pem, &AlgorithmPolicy::default()).unwrap();
            assert_eq!(trusted.algorithms().collect::<Vec<_>>(), [Algorithm::RS256]);
            assert_verifies(&trusted, &rsa, Algorithm::RS256);
        }
    }

    #[test]
    fn ec_keys_of_every_curve_verify_from_spki_and_certificate() {
        for (curve, crv, len, alg) in [
            (Nid::X9_62_PRIME256V1, "P-256", 32, Algorithm::ES256),
            (Nid::SECP384R1, "P-384", 48, Algorithm::ES384),
            (Nid::SECP521R1, "P-521", 66, Algorithm::ES512),
        ] {
            let key = ec_key(curve);
            for pem in [key.public_key_to_pem().unwrap(), self_signed(&key)] {
                let jwk = jwk_from_pem(&pem).unwrap();
                assert_eq!(jwk["kty"], "EC");
                assert_eq!(jwk["crv"], crv);
                for coordinate in ["x", "y"] {
                    let bytes = URL_SAFE_NO_PAD
                        .decode(jwk[coordinate].as_str().unwrap())
                        .unwrap();
                    assert_eq!(bytes.len(), len, "{crv} {coordinate}");
                }
                let trusted = trusted_key_from_pem("k", &pem, &AlgorithmPolicy::default()).unwrap();
                assert_verifies(&trusted, &key, alg);
            }
        }
    }

    #[test]
    fn short_ec_coordinates_are_left_padded() {
        // About one P-256 key in 256 has an x coordinate whose top byte is zero.
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let mut ctx = BigNumContext::new().unwrap();
        let key = (0..20_000)
            .map(|_| EcKey::generate(&group).unwrap())
            .find(|ec| {
                let (mut x, mut y) = (BigNum::new().unwrap(), BigNum::new().unwrap());
                ec.public_key()
                    .affine_coordinates(&group, &mut x, &mut y, &mut ctx)
                    .unwrap();
                x.num_bytes() < 32
            })
            .expect("a key with a short x coordinate");
        let key = PKey::from_ec_key(key).unwrap();
        let jwk = jwk_from_pem(&key.public_key_to_pem().unwrap()).unwrap();
        let x = URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap();
        assert_eq!((x.len(), x.first()), (32, Some(&0)));
        let trusted = TrustedKey::from_jwk(&jwk, &AlgorithmPolicy::default()).unwrap();
        assert_verifies(&trusted, &key, Algorithm::ES256);
    }

    #[test]
    fn ed25519_from_spki_and_certificate_verifies() {
        let key = PKey::generate_ed25519().unwrap();
        let policy = AlgorithmPolicy {
            allowed: vec![Algorithm::EdDSA],
        };
        for pem in [key.public_key_to_pem().unwrap(), self_signed(&key)] {
            let jwk = jwk_from_pem(&pem).unwrap();
            assert_eq!(
                (&jwk["kty"], &jwk["crv"]),
                (&json!("OKP"), &json!("Ed25519"))
            );
            let trusted = trusted_key_from_pem("k", &pem, &policy).unwrap();
            assert_verifies(&trusted, &key, Algorithm::EdDSA);
        }
    }

    #[test]
    fn other_keys_private_keys_and_garbage_are_refused() {
        let not_pem = |pem: &[u8]| matches!(jwk_from_pem(pem), Err(PemError::NotPem(_)));
        assert!(not_pem(b"garbage"));
        assert!(not_pem(b""));
        assert!(not_pem(
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        ));
        assert!(not_pem(b"-----BEGIN PUBLIC KEY-----\n"));
        assert!(not_pem(b"-----BEGIN \xff-----\n"));
        let rsa = rsa_key(2048);
        let private = rsa.private_key_to_pem_pkcs8().unwrap();
        let err = jwk_from_pem(&private).unwrap_err();
        assert!(err.to_string().contains("private key"), "{err}");
        assert!(!err.to_string().contains("MII"), "{err}");
        assert!(not_pem(&rsa.rsa().unwrap().private_key_to_pem().unwrap()));
        // A PKCS#1 body under an SPKI label (and the reverse) does not parse.
        let pkcs1 = pem_string(rsa.rsa().unwrap().public_key_to_pem_pkcs1().unwrap());
        assert!(not_pem(
            pkcs1.replace("RSA PUBLIC KEY", "PUBLIC KEY").as_bytes()
        ));

        let k1 = ec_key(Nid::SECP256K1).public_key_to_pem().unwrap();
        let err = jwk_from_pem(&k1).unwrap_err();
        assert_eq!(err, PemError::Unsupported("EC curve secp256k1".into()));
        let ed448 = PKey::generate_ed448().unwrap().public_key_to_pem().unwrap();
        assert!(matches!(
            jwk_from_pem(&ed448),
            Err(PemError::Unsupported(_))
        ));

        let p = AlgorithmPolicy::default();
        let e3 = Rsa::generate_with_e(2048, &BigNum::from_u32(3).unwrap()).unwrap();
        let e3 = PKey::from_rsa(e3).unwrap().public_key_to_pem().unwrap();
        assert_eq!(
            trusted_key_from_pem("k", &e3, &p).unwrap_err(),
            PemError::Refused(KeyRefusal::WeakExponent)
        );
        let weak = rsa_key(1024).public_key_to_pem().unwrap();
        assert_eq!(
            trusted_key_from_pem("k", &weak, &p).unwrap_err(),
            PemError::Refused(KeyRefusal::ModulusSize(1024))
        );
        let es_only = AlgorithmPolicy {
            allowed: vec![Algorithm::ES256],
        };
        assert_eq!(
            trusted_key_from_pem("k", &rsa.public_key_to_pem().unwrap(), &es_only).unwrap_err(),
            PemError::Refused(KeyRefusal::NoAllowedAlgorithm)
        );
    }

    #[test]
    fn a_pem_map_keeps_good_keys_and_skips_weak_or_broken_ones() {
        let good = rsa_key(2048);
        let weak = rsa_key(1024);
        let map = json!({
            "good": pem_string(self_signed(&good)),
            "weak": pem_string(weak.public_key_to_pem().unwrap()),
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
        assert!(
            set.skipped()
                .iter()
                .any(|s| s.starts_with("kid \"weak\"") && s.contains("1024 bits")),
            "{:?}",
            set.skipped()
        );
        assert_verifies(set.select(Some("good")).unwrap(), &good, Algorithm::RS256);
    }

    #[test]
    fn an_iap_style_map_of_ec_keys_verifies() {
        let (a, b) = (ec_key(Nid::X9_62_PRIME256V1), ec_key(Nid::X9_62_PRIME256V1));
        let map = json!({
            "0oeLcQ": pem_string(a.public_key_to_pem().unwrap()),
            "TxrIbQ": pem_string(b.public_key_to_pem().unwrap()),
        });
        let policy = AlgorithmPolicy {
            allowed: vec![Algorithm::ES256],
        };
        let set = key_set_from_pem_map(map.to_string().as_bytes(), &policy, []).unwrap();
        assert_eq!(set.len(), 2);
        assert!(set.skipped().is_empty());
        assert_verifies(set.select(Some("0oeLcQ")).unwrap(), &a, Algorithm::ES256);
        assert_verifies(set.select(Some("TxrIbQ")).unwrap(), &b, Algorithm::ES256);
        let wrong = jws_sign(&b, Algorithm::ES256, INPUT);
        let verifier = set.select(Some("0oeLcQ")).unwrap().verifier_for("ES256");
        assert!(!verifier.unwrap().verify(INPUT, &wrong));
    }

    #[test]
    fn a_pem_map_that_is_not_a_map_or_has_nothing_usable_is_refused() {
        let p = AlgorithmPolicy::default();
        for bad in [&b"[]"[..], b"not json", br#"{"a":"x","a":"y"}"#] {
            assert!(
                matches!(
                    key_set_from_pem_map(bad, &p, []),
                    Err(KeySetError::NotAPemMap(_))
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            key_set_from_pem_map(b"{}", &p, []),
            Err(KeySetError::NoUsableKeys(s)) if s.is_empty()
        ));
        assert!(matches!(
            key_set_from_pem_map(br#"{"a":"garbage"}"#, &p, []),
            Err(KeySetError::NoUsableKeys(s)) if s.len() == 1
        ));
    }

    fn bundle_key(key_use: Option<&str>, kid: Option<&str>) -> (PKey<Private>, Value) {
        let key = ec_key(Nid::X9_62_PRIME256V1);
        let mut jwk = jwk_from_pem(&key.public_key_to_pem().unwrap()).unwrap();
        if let Some(key_use) = key_use {
            jwk["use"] = json!(key_use);
        }
        if let Some(kid) = kid {
            jwk["kid"] = json!(kid);
        }
        (key, jwk)
    }

    #[test]
    fn a_spiffe_bundle_yields_its_jwt_authorities_and_hint() {
        let (key, jwt) = bundle_key(Some("jwt-svid"), Some("authority-1"));
        let (_, mut x509) = bundle_key(Some("x509-svid"), None);
        x509["x5c"] = json!(["MIIB"]);
        let bundle =
            json!({ "keys": [x509, jwt], "spiffe_refresh_hint": 300, "spiffe_sequence": 4 });
        let (set, hint) =
            key_set_from_spiffe_bundle(bundle.to_string().as_bytes(), &AlgorithmPolicy::default())
                .unwrap();
        assert_eq!(set.kids().collect::<Vec<_>>(), ["authority-1"]);
        assert!(set.skipped().is_empty(), "{:?}", set.skipped());
        assert_eq!(hint, Some(300));
        assert_verifies(
            set.select(Some("authority-1")).unwrap(),
            &key,
            Algorithm::ES256,
        );
    }

    #[test]
    fn a_spiffe_bundle_reports_bad_keys_by_their_place_in_the_bundle() {
        let (_, x509) = bundle_key(Some("x509-svid"), None);
        let (_, future) = bundle_key(Some("some-future-svid"), None);
        let (_, no_use) = bundle_key(None, Some("no-use"));
        let (_, sig) = bundle_key(Some("sig"), Some("sig"));
        let (_, good) = bundle_key(Some("jwt-svid"), Some("good"));
        let weak =
            json!({"kty": "RSA", "use": "jwt-svid", "kid": "weak", "n": "AQAB", "e": "AQAB"});
        let bundle = json!({ "keys": [x509, future, no_use, 7, sig, weak, good] });
        let (set, hint) =
            key_set_from_spiffe_bundle(bundle.to_string().as_bytes(), &AlgorithmPolicy::default())
                .unwrap();
        assert_eq!(hint, None);
        assert_eq!(set.kids().collect::<Vec<_>>(), ["good"]);
        let skipped = set.skipped();
        assert_eq!(skipped.len(), 3, "{skipped:?}");
        assert!(
            skipped[0].starts_with("key 2 (kid \"no-use\"): no use"),
            "{skipped:?}"
        );
        assert!(
            skipped[1].starts_with("key 3: not a JSON object"),
            "{skipped:?}"
        );
        assert!(
            skipped[2].starts_with("key 5 (kid \"weak\"): RSA modulus"),
            "{skipped:?}"
        );
    }

    #[test]
    fn a_spiffe_bundle_without_jwt_authorities_or_with_a_bad_hint_is_refused() {
        let p = AlgorithmPolicy::default();
        let (_, x509) = bundle_key(Some("x509-svid"), None);
        let only_x509 = json!({ "keys": [x509] }).to_string();
        match key_set_from_spiffe_bundle(only_x509.as_bytes(), &p) {
            Err(KeySetError::NoUsableKeys(notes)) => {
                assert!(notes.iter().any(|n| n.contains("1 key(s)")), "{notes:?}");
            }
            other => panic!("{other:?}"),
        }
        let (_, jwt) = bundle_key(Some("jwt-svid"), Some("a"));
        for hint in [json!(-1), json!(1.5), json!("300"), json!(null)] {
            let bundle = json!({ "keys": [jwt.clone()], "spiffe_refresh_hint": hint });
            assert!(
                matches!(
                    key_set_from_spiffe_bundle(bundle.to_string().as_bytes(), &p),
                    Err(KeySetError::NotASpiffeBundle(_))
                ),
                "{hint}"
            );
        }
        for bad in [
            &b"[]"[..],
            b"{}",
            br#"{"keys":{}}"#,
            br#"{"keys":[],"keys":[]}"#,
        ] {
            assert!(matches!(
                key_set_from_spiffe_bundle(bad, &p),
                Err(KeySetError::NotASpiffeBundle(_))
            ));
        }
    }

    #[test]
    fn only_canonical_uuids_are_uuids() {
        assert!(is_uuid("6a0d6ef4-3c4e-4bb1-9c9d-2d5f1f0c8a11"));
        assert!(is_uuid("6A0D6EF4-3C4E-4BB1-9C9D-2D5F1F0C8A11"));
        assert!(is_uuid("00000000-0000-0000-0000-000000000000"));
        for bad in [
            "../etc/passwd",
            "6a0d6ef43c4e4bb19c9d2d5f1f0c8a11",
            "6a0d6ef4-3c4e4bb1-9c9d-2d5f1f0c8a11",
            "6a0d6ef4-3c4e-4bb1-9c9d-2d5f1f0c8a11-",
            "6a0d6ef4-3c4e-4bb1-9c9d-2d5f1f0c8a111",
            "6a0d6ef4-3c4e-4bb1-9c9d-2d5f1f0c8a11/../x",
            "6a0d6ef4-3c4e-4bb1-9c9d-2d5f1f0c8a1g",
            "6a0d6ef4-3c4e-4bb1-9c9d-2d5f1f0c8a1",
            "{6a0d6ef4-3c4e-4bb1-9c9d-2d5f1f0c8a11}",
            "urn:uuid:6a0d6ef4-3c4e-4bb1-9c9d-2d5f1f0c8a11",
            " 6a0d6ef4-3c4e-4bb1-9c9d-2d5f1f0c8a1",
            "6a0d6ef4-3c4e-4bb1-9c9d-2d5f1f0c8a%31",
            "6a0d6ef4-3c4e-4bb1-9c9d-２d5f1f0c8a1",
            "----",
            "",
        ] {
            assert!(!is_uuid(bad), "{bad}");
        }
    }
}
