//! Signing keys in PEM files (a mounted Secret): PKCS#8, SEC1 or PKCS#1, signed with josekit
//! (OpenSSL). The key must fit the algorithm: P-256 for ES256, Ed25519 for EdDSA, RSA of at
//! least 2048 bits for RS256 and PS256.

use josekit::jwk::KeyPair as _;
use josekit::jws::JwsSigner;
use serde_json::{Map, Value};

use super::signer::{SignError, Signer, SigningAlgorithm, published};

/// Smallest RSA signing key, in bits.
const MIN_RSA_BITS: u32 = 2048;

/// A signing key read from a PEM file.
pub struct FileSigner {
    algorithm: SigningAlgorithm,
    signer: Box<dyn JwsSigner>,
    public: Map<String, Value>,
    kid: String,
}

impl std::fmt::Debug for FileSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSigner")
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl FileSigner {
    /// The key in `pem` (named `what` in errors) for `algorithm`.
    pub fn from_pem(
        what: &str,
        pem: &[u8],
        algorithm: SigningAlgorithm,
    ) -> Result<Self, SignError> {
        let bad = |detail: String| SignError::Key {
            what: what.to_owned(),
            detail,
        };
        let pkey = openssl::pkey::PKey::private_key_from_pem(pem)
            .map_err(|_| bad("not a PEM private key (PKCS#8, SEC1 or PKCS#1)".into()))?;
        let fits = match algorithm {
            SigningAlgorithm::Es256 => pkey.ec_key().ok().is_some_and(|ec| {
                ec.group().curve_name() == Some(openssl::nid::Nid::X9_62_PRIME256V1)
            }),
            SigningAlgorithm::EdDsa => pkey.id() == openssl::pkey::Id::ED25519,
            SigningAlgorithm::Rs256 | SigningAlgorithm::Ps256 => {
                pkey.rsa().is_ok() && pkey.bits() >= MIN_RSA_BITS
            }
        };
        if !fits {
            return Err(bad(format!(
                "the key does not fit {} (ES256: P-256, EdDSA: Ed25519, RS256/PS256: RSA ≥ {MIN_RSA_BITS} bits)",
                algorithm.name()
            )));
        }
        let failed = |err: josekit::JoseError| bad(err.to_string());
        let (signer, public): (Box<dyn JwsSigner>, josekit::jwk::Jwk) = match algorithm {
            SigningAlgorithm::Es256 => (
                Box::new(josekit::jws::ES256.signer_from_pem(pem).map_err(failed)?),
                josekit::jws::ES256
                    .key_pair_from_pem(pem)
                    .map_err(failed)?
                    .to_jwk_public_key(),
            ),
            SigningAlgorithm::EdDsa => (
                Box::new(josekit::jws::EdDSA.signer_from_pem(pem).map_err(failed)?),
                josekit::jws::EdDSA
                    .key_pair_from_pem(pem)
                    .map_err(failed)?
                    .to_jwk_public_key(),
            ),
            SigningAlgorithm::Rs256 => (
                Box::new(josekit::jws::RS256.signer_from_pem(pem).map_err(failed)?),
                josekit::jws::RS256
                    .key_pair_from_pem(pem)
                    .map_err(failed)?
                    .to_jwk_public_key(),
            ),
            SigningAlgorithm::Ps256 => {
                // josekit reads PS256 PEM keys only under the RSASSA-PSS OID; operators hold
                // plain RSA keys, so the key goes to the PS256 signer as a JWK.
                let pair = josekit::jws::RS256.key_pair_from_pem(pem).map_err(failed)?;
                let mut private = pair.to_jwk_private_key();
                private.set_algorithm("PS256");
                (
                    Box::new(
                        josekit::jws::PS256
                            .signer_from_jwk(&private)
                            .map_err(failed)?,
                    ),
                    pair.to_jwk_public_key(),
                )
            }
        };
        let public: Map<String, Value> = public.into();
        let (public, kid) = published(public, algorithm).map_err(bad)?;
        Ok(Self {
            algorithm,
            signer,
            public,
            kid,
        })
    }
}

impl Signer for FileSigner {
    fn algorithm(&self) -> SigningAlgorithm {
        self.algorithm
    }

    fn public_jwk(&self) -> &Map<String, Value> {
        &self.public
    }

    fn kid(&self) -> &str {
        &self.kid
    }

    fn backend(&self) -> &'static str {
        "file"
    }

    fn sign(&self, input: &[u8]) -> Result<Vec<u8>, SignError> {
        self.signer
            .sign(input)
            .map_err(|err| SignError::Sign(err.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use josekit::jwk::Jwk;

    fn pem(algorithm: SigningAlgorithm) -> Vec<u8> {
        match algorithm {
            SigningAlgorithm::Es256 => josekit::jws::ES256
                .generate_key_pair()
                .unwrap()
                .to_pem_private_key(),
            SigningAlgorithm::EdDsa => josekit::jws::EdDSA
                .generate_key_pair(josekit::jwk::alg::ed::EdCurve::Ed25519)
                .unwrap()
                .to_pem_private_key(),
            SigningAlgorithm::Rs256 | SigningAlgorithm::Ps256 => {
                // A plain RSA key (PKCS#1 or PKCS#8 rsaEncryption), as operators have them.
                openssl::rsa::Rsa::generate(2048)
                    .unwrap()
                    .private_key_to_pem()
                    .unwrap()
            }
        }
    }

    #[test]
    fn each_algorithm_signs_what_its_published_key_verifies() {
        for algorithm in [
            SigningAlgorithm::Es256,
            SigningAlgorithm::EdDsa,
            SigningAlgorithm::Rs256,
            SigningAlgorithm::Ps256,
        ] {
            let signer = FileSigner::from_pem("test.pem", &pem(algorithm), algorithm).unwrap();
            let jwk = Jwk::from_map(signer.public_jwk().clone()).unwrap();
            assert!(
                jwk.parameter("d").is_none(),
                "no private member is published"
            );
            assert_eq!(jwk.algorithm(), Some(algorithm.name()));
            assert_eq!(jwk.key_use(), Some("sig"));
            assert_eq!(
                super::super::thumbprint(signer.public_jwk()).as_deref(),
                Some(signer.kid())
            );
            let input = b"header.payload";
            let signature = signer.sign(input).unwrap();
            let verified = match algorithm {
                SigningAlgorithm::Es256 => josekit::jws::ES256
                    .verifier_from_jwk(&jwk)
                    .unwrap()
                    .verify(input, &signature),
                SigningAlgorithm::EdDsa => josekit::jws::EdDSA
                    .verifier_from_jwk(&jwk)
                    .unwrap()
                    .verify(input, &signature),
                SigningAlgorithm::Rs256 => josekit::jws::RS256
                    .verifier_from_jwk(&jwk)
                    .unwrap()
                    .verify(input, &signature),
                SigningAlgorithm::Ps256 => josekit::jws::PS256
                    .verifier_from_jwk(&jwk)
                    .unwrap()
                    .verify(input, &signature),
            };
            verified.unwrap_or_else(|err| panic!("{}: {err}", algorithm.name()));
        }
    }

    #[test]
    fn a_key_that_does_not_fit_its_algorithm_is_refused_with_its_name() {
        let ed = pem(SigningAlgorithm::EdDsa);
        let err = FileSigner::from_pem("keys/current.pem", &ed, SigningAlgorithm::Es256)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("keys/current.pem: the key does not fit ES256"),
            "{err}"
        );
        let small = openssl::rsa::Rsa::generate(1024)
            .unwrap()
            .private_key_to_pem()
            .unwrap();
        assert!(
            FileSigner::from_pem("k", &small, SigningAlgorithm::Rs256)
                .unwrap_err()
                .to_string()
                .contains("RSA ≥ 2048 bits")
        );
        let err = FileSigner::from_pem("k", b"not a key", SigningAlgorithm::Es256)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "k: not a PEM private key (PKCS#8, SEC1 or PKCS#1)");
    }
}
