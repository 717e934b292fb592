//! Signing keys in a PKCS#11 module (an HSM, SoftHSM): the private key is found by label on
//! the token named by its label, must be sensitive and not extractable, and signs inside the
//! module through a small pool of logged-in sessions (a session is not shared between
//! threads). ES256 only in this step: the digest is made here and the module's `CKM_ECDSA`
//! returns `r ‖ s`, which is the JWS signature as is.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use serde_json::{Map, Value};

use super::signer::{SignError, Signer, SigningAlgorithm, published};

/// The DER of the P-256 curve OID (1.2.840.10045.3.1.7), as `CKA_EC_PARAMS` holds it.
const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// Where the key is.
#[derive(Debug, Clone)]
pub struct Pkcs11Key {
    /// The module (`/usr/lib/softhsm/libsofthsm2.so`).
    pub module: std::path::PathBuf,
    /// The token's label.
    pub token_label: String,
    /// The key's `CKA_LABEL` (the private and the public object share it).
    pub key_label: String,
    /// The user PIN.
    pub pin: String,
    /// Sessions opened for signing.
    pub sessions: usize,
}

/// An ES256 key in a PKCS#11 module.
pub struct Pkcs11Signer {
    // Kept alive for the sessions; finalized when dropped.
    _context: Pkcs11,
    sessions: Vec<Mutex<Session>>,
    next: AtomicUsize,
    key: ObjectHandle,
    public: Map<String, Value>,
    kid: String,
}

impl std::fmt::Debug for Pkcs11Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Signer")
            .field("kid", &self.kid)
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

fn step(step: &'static str) -> impl Fn(cryptoki::error::Error) -> SignError {
    move |err| SignError::Pkcs11 {
        step,
        detail: err.to_string(),
    }
}

/// The process's context for the PKCS#11 module at `path`, loaded and initialized once: a
/// module is initialized once per process, and finalizing it would end every session of
/// every key in it.
pub fn module(path: &std::path::Path) -> Result<Pkcs11, SignError> {
    static MODULES: std::sync::OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> =
        std::sync::OnceLock::new();
    let mut modules =
        MODULES
            .get_or_init(Mutex::default)
            .lock()
            .map_err(|_| SignError::Pkcs11 {
                step: "load module",
                detail: "the module registry lock was poisoned".into(),
            })?;
    if let Some(context) = modules.get(path) {
        return Ok(context.clone());
    }
    let context = Pkcs11::new(path).map_err(|err| SignError::Pkcs11 {
        step: "load module",
        detail: format!("{}: {err}", path.display()),
    })?;
    context
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(step("initialize"))?;
    modules.insert(path.to_path_buf(), context.clone());
    Ok(context)
}

impl Pkcs11Signer {
    /// Loads the module, logs in to the token and finds the key; every failure (no module, no
    /// such token, wrong PIN, no such key, an extractable key, not P-256) is a clear error.
    pub fn open(config: &Pkcs11Key) -> Result<Self, SignError> {
        let context = module(&config.module)?;
        let slot = context
            .get_slots_with_token()
            .map_err(step("list slots"))?
            .into_iter()
            .find(|slot| {
                context
                    .get_token_info(*slot)
                    .is_ok_and(|info| info.label().trim_end() == config.token_label)
            })
            .ok_or_else(|| SignError::Pkcs11 {
                step: "find token",
                detail: format!("no token labelled {:?}", config.token_label),
            })?;
        let mut sessions = Vec::new();
        for index in 0..config.sessions.max(1) {
            let session = context
                .open_ro_session(slot)
                .map_err(step("open session"))?;
            if index == 0 {
                // Login is per application and token: every session of it is logged in. A
                // second key on the same token finds it logged in already.
                match session.login(UserType::User, Some(&AuthPin::from(config.pin.clone()))) {
                    Ok(())
                    | Err(cryptoki::error::Error::Pkcs11(
                        cryptoki::error::RvError::UserAlreadyLoggedIn,
                        _,
                    )) => {}
                    Err(err) => return Err(step("login")(err)),
                }
            }
            sessions.push(session);
        }
        let first = sessions.first().ok_or_else(|| SignError::Pkcs11 {
            step: "open session",
            detail: "no session".into(),
        })?;
        let find = |class: ObjectClass| {
            first
                .find_objects(&[
                    Attribute::Class(class),
                    Attribute::Label(config.key_label.as_bytes().to_vec()),
                ])
                .map_err(step("find key"))
        };
        let missing = |what: &str| SignError::Pkcs11 {
            step: "find key",
            detail: format!(
                "no {what} labelled {:?} on token {:?}",
                config.key_label, config.token_label
            ),
        };
        let key = *find(ObjectClass::PRIVATE_KEY)?
            .first()
            .ok_or_else(|| missing("private key"))?;
        let public_key = *find(ObjectClass::PUBLIC_KEY)?
            .first()
            .ok_or_else(|| missing("public key"))?;
        let attributes = first
            .get_attributes(
                key,
                &[
                    AttributeType::KeyType,
                    AttributeType::Extractable,
                    AttributeType::Sensitive,
                ],
            )
            .map_err(step("read key attributes"))?;
        for attribute in &attributes {
            let refused = match attribute {
                Attribute::KeyType(kind) if *kind != KeyType::EC => {
                    Some("is not an EC key (ES256 needs P-256)")
                }
                Attribute::Extractable(true) => Some("is extractable (CKA_EXTRACTABLE)"),
                Attribute::Sensitive(false) => Some("is not sensitive (CKA_SENSITIVE)"),
                _ => None,
            };
            if let Some(refused) = refused {
                return Err(SignError::Key {
                    what: format!("PKCS#11 key {:?}", config.key_label),
                    detail: format!("the private key {refused}"),
                });
            }
        }
        let public = first
            .get_attributes(
                public_key,
                &[AttributeType::EcParams, AttributeType::EcPoint],
            )
            .map_err(step("read public key"))?;
        let (mut params, mut point) = (None, None);
        for attribute in public {
            match attribute {
                Attribute::EcParams(value) => params = Some(value),
                Attribute::EcPoint(value) => point = Some(value),
                _ => {}
            }
        }
        let not_p256 = || SignError::Key {
            what: format!("PKCS#11 key {:?}", config.key_label),
            detail: "the public key is not a P-256 point".into(),
        };
        if params.as_deref() != Some(&P256_PARAMS[..]) {
            return Err(not_p256());
        }
        // CKA_EC_POINT is a DER OCTET STRING around the uncompressed point 04 ‖ X ‖ Y.
        let point = point.ok_or_else(not_p256)?;
        let xy = match point.as_slice() {
            [0x04, 0x41, 0x04, xy @ ..] if xy.len() == 64 => xy,
            [0x04, xy @ ..] if xy.len() == 64 => xy,
            _ => return Err(not_p256()),
        };
        let (x, y) = xy.split_at(32);
        let mut jwk = Map::new();
        jwk.insert("kty".into(), "EC".into());
        jwk.insert("crv".into(), "P-256".into());
        jwk.insert("x".into(), URL_SAFE_NO_PAD.encode(x).into());
        jwk.insert("y".into(), URL_SAFE_NO_PAD.encode(y).into());
        let (public, kid) =
            published(jwk, SigningAlgorithm::Es256).map_err(|detail| SignError::Key {
                what: format!("PKCS#11 key {:?}", config.key_label),
                detail,
            })?;
        Ok(Self {
            _context: context,
            sessions: sessions.into_iter().map(Mutex::new).collect(),
            next: AtomicUsize::new(0),
            key,
            public,
            kid,
        })
    }
}

impl Signer for Pkcs11Signer {
    fn algorithm(&self) -> SigningAlgorithm {
        SigningAlgorithm::Es256
    }

    fn public_jwk(&self) -> &Map<String, Value> {
        &self.public
    }

    fn kid(&self) -> &str {
        &self.kid
    }

    fn backend(&self) -> &'static str {
        "pkcs11"
    }

    fn sign(&self, input: &[u8]) -> Result<Vec<u8>, SignError> {
        let digest = openssl::sha::sha256(input);
        let count = self.sessions.len().max(1);
        let start = self.next.fetch_add(1, Ordering::Relaxed) % count;
        // A free session if there is one, else wait for the one in turn.
        let free = (0..count)
            .filter_map(|offset| self.sessions.get((start + offset) % count))
            .find_map(|session| session.try_lock().ok());
        let session = match free {
            Some(session) => session,
            None => self
                .sessions
                .get(start)
                .ok_or_else(|| SignError::Sign("no PKCS#11 session".into()))?
                .lock()
                .map_err(|_| SignError::Sign("a PKCS#11 session lock was poisoned".into()))?,
        };
        let signature = session
            .sign(&Mechanism::Ecdsa, self.key, &digest)
            .map_err(|err| SignError::Pkcs11 {
                step: "sign",
                detail: err.to_string(),
            })?;
        if signature.len() != 64 {
            return Err(SignError::Sign(format!(
                "the module returned a {}-byte ECDSA signature, not 64",
                signature.len()
            )));
        }
        Ok(signature)
    }
}
