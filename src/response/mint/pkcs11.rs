//! Signing keys in a PKCS#11 module (an HSM, SoftHSM): the private key never leaves the
//! module. The token is chosen by its label or by its slot id, the key by its `CKA_LABEL`,
//! its `CKA_ID` or both (both must then match); the private and the public object share them.
//! The private key must be sensitive and not extractable, and its type must fit the
//! algorithm. Signing goes through a small pool of logged-in sessions (a session is not
//! shared between threads); the module is loaded and initialized once per process.
//!
//! Mechanisms, per algorithm:
//!
//! - ES256: a P-256 `CKK_EC` key. The SHA-256 digest is made here and the module's
//!   `CKM_ECDSA` returns `r ‖ s`, which is the JWS signature as is.
//! - RS256: a `CKK_RSA` key of at least 2048 bits, `CKM_SHA256_RSA_PKCS` (the module hashes).
//! - PS256: a `CKK_RSA` key of at least 2048 bits, `CKM_SHA256_RSA_PKCS_PSS` with SHA-256,
//!   MGF1-SHA-256 and a 32-byte salt, as RFC 7518 §3.5 requires.
//! - EdDSA: an Ed25519 `CKK_EC_EDWARDS` key, `CKM_EDDSA` (pure Ed25519, no parameters).
//!   `CKA_EC_PARAMS` may name the curve by OID (1.3.101.112) or as the PrintableString
//!   `edwards25519`; `CKA_EC_POINT` may be the 32-byte key wrapped in an OCTET STRING or raw.
//!   Debian's SoftHSM 2.6.1 supports it (tested in `tests/pkcs11.rs`).
//!
//! A module whose token does not offer the algorithm's mechanism (older HSMs often lack
//! `CKM_EDDSA`, some `CKM_SHA256_RSA_PKCS_PSS`) is refused at start-up, not at the first
//! signature.
//!
//! The public JWK is read from the public object (`CKA_EC_POINT`, or `CKA_MODULUS` and
//! `CKA_PUBLIC_EXPONENT` as big-endian unsigned integers published without leading zero
//! bytes); its RFC 7638 thumbprint is the `kid`.
//!
//! Caveats: exactly one private and one public object must match the label and id (several
//! are refused as ambiguous); login is per application and token, so every key on a token
//! shares one login, made with the PIN of the first key opened on it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use serde_json::{Map, Value};

use super::signer::{SignError, Signer, SigningAlgorithm, published};

/// The DER of the P-256 curve OID (1.2.840.10045.3.1.7), as `CKA_EC_PARAMS` holds it.
const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// The DER of the Ed25519 OID (1.3.101.112).
const ED25519_OID: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];
/// The DER PrintableString `edwards25519`, the other `CKA_EC_PARAMS` form of Ed25519.
const ED25519_NAME: [u8; 14] = [
    0x13, 0x0c, b'e', b'd', b'w', b'a', b'r', b'd', b's', b'2', b'5', b'5', b'1', b'9',
];
/// Smallest RSA signing key, in bits.
const MIN_RSA_BITS: usize = 2048;
/// The PSS salt length for PS256: the SHA-256 output length.
const PSS_SALT: u64 = 32;

/// Which token holds the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSelector {
    /// The token's label (`CKA_LABEL` of the token, trailing blanks ignored).
    Label(String),
    /// The slot id the module gives the token's slot.
    Slot(u64),
}

impl std::fmt::Display for TokenSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Label(label) => write!(f, "token {label:?}"),
            Self::Slot(id) => write!(f, "the token in slot {id}"),
        }
    }
}

/// Where the key is.
#[derive(Debug, Clone)]
pub struct Pkcs11Key {
    /// The module (`/usr/lib/softhsm/libsofthsm2.so`).
    pub module: PathBuf,
    /// The token.
    pub token: TokenSelector,
    /// The key's `CKA_LABEL` (the private and the public object share it).
    pub key_label: Option<String>,
    /// The key's `CKA_ID` (the private and the public object share it). At least one of
    /// label and id is set; with both, both must match.
    pub key_id: Option<Vec<u8>>,
    /// The user PIN.
    pub pin: String,
    /// Sessions opened for signing.
    pub sessions: usize,
}

impl Pkcs11Key {
    /// The key as errors name it: `label "sig-1"`, `id 0a0b` or both.
    fn describe(&self) -> String {
        let id = self.key_id.as_ref().map(|id| {
            let hex: String = id.iter().map(|byte| format!("{byte:02x}")).collect();
            format!("id {hex}")
        });
        match (&self.key_label, id) {
            (Some(label), Some(id)) => format!("label {label:?} and {id}"),
            (Some(label), None) => format!("label {label:?}"),
            (None, Some(id)) => id,
            (None, None) => "no label or id".into(),
        }
    }
}

/// A key in a PKCS#11 module.
pub struct Pkcs11Signer {
    // Kept alive for the sessions; finalized when dropped.
    _context: Pkcs11,
    algorithm: SigningAlgorithm,
    sessions: Vec<Mutex<Session>>,
    next: AtomicUsize,
    key: ObjectHandle,
    /// The signature's length in bytes (64 for ES256 and EdDSA, the modulus length for RSA).
    signature_len: usize,
    public: Map<String, Value>,
    kid: String,
}

impl std::fmt::Debug for Pkcs11Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Signer")
            .field("algorithm", &self.algorithm)
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

/// The slot holding the selected token.
fn find_slot(context: &Pkcs11, token: &TokenSelector) -> Result<Slot, SignError> {
    let slots = context.get_slots_with_token().map_err(step("list slots"))?;
    let found = match token {
        TokenSelector::Label(label) => slots.into_iter().find(|slot| {
            context
                .get_token_info(*slot)
                .is_ok_and(|info| info.label().trim_end() == label)
        }),
        TokenSelector::Slot(id) => slots.into_iter().find(|slot| slot.id() == *id),
    };
    found.ok_or_else(|| SignError::Pkcs11 {
        step: "find token",
        detail: match token {
            TokenSelector::Label(label) => format!("no token labelled {label:?}"),
            TokenSelector::Slot(id) => format!("no slot {id} with a token"),
        },
    })
}

/// The key type `algorithm` needs, and how errors name it.
fn key_type_for(algorithm: SigningAlgorithm) -> (KeyType, &'static str) {
    match algorithm {
        SigningAlgorithm::Es256 => (KeyType::EC, "a P-256 EC key (CKK_EC)"),
        SigningAlgorithm::EdDsa => (KeyType::EC_EDWARDS, "an Ed25519 key (CKK_EC_EDWARDS)"),
        SigningAlgorithm::Rs256 | SigningAlgorithm::Ps256 => {
            (KeyType::RSA, "an RSA key (CKK_RSA) of at least 2048 bits")
        }
    }
}

/// The signing mechanism `algorithm` uses.
fn mechanism_for(algorithm: SigningAlgorithm) -> MechanismType {
    match algorithm {
        SigningAlgorithm::Es256 => MechanismType::ECDSA,
        SigningAlgorithm::EdDsa => MechanismType::EDDSA,
        SigningAlgorithm::Rs256 => MechanismType::SHA256_RSA_PKCS,
        SigningAlgorithm::Ps256 => MechanismType::SHA256_RSA_PKCS_PSS,
    }
}

/// `bytes` without its leading zero bytes (a big-endian unsigned integer, minimal).
fn unsigned(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|byte| *byte != 0)
        .unwrap_or(bytes.len());
    bytes.get(start..).unwrap_or_default()
}

/// The number of significant bits of a big-endian unsigned integer.
fn bit_length(bytes: &[u8]) -> usize {
    let bytes = unsigned(bytes);
    match bytes.first() {
        Some(first) => (bytes.len() - 1) * 8 + (8 - first.leading_zeros() as usize),
        None => 0,
    }
}

impl Pkcs11Signer {
    /// Loads the module, logs in to the token and finds the key for `algorithm`; every
    /// failure (no module, no such token or slot, wrong PIN, no such key, an extractable key,
    /// a key that does not fit the algorithm, an RSA key under 2048 bits) is a clear error.
    pub fn open(config: &Pkcs11Key, algorithm: SigningAlgorithm) -> Result<Self, SignError> {
        let what = format!("PKCS#11 key {} on {}", config.describe(), config.token);
        let bad = |detail: String| SignError::Key {
            what: what.clone(),
            detail,
        };
        if config.key_label.is_none() && config.key_id.is_none() {
            return Err(bad("set the key's label, its id or both".into()));
        }
        let context = module(&config.module)?;
        let slot = find_slot(&context, &config.token)?;
        let mechanism = mechanism_for(algorithm);
        if !context
            .get_mechanism_list(slot)
            .map_err(step("list mechanisms"))?
            .contains(&mechanism)
        {
            return Err(SignError::Pkcs11 {
                step: "check mechanism",
                detail: format!(
                    "{} does not offer {mechanism}, which {} needs",
                    config.token,
                    algorithm.name()
                ),
            });
        }
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
            let mut template = vec![Attribute::Class(class)];
            if let Some(label) = &config.key_label {
                template.push(Attribute::Label(label.as_bytes().to_vec()));
            }
            if let Some(id) = &config.key_id {
                template.push(Attribute::Id(id.clone()));
            }
            first.find_objects(&template).map_err(step("find key"))
        };
        let missing = |kind: &str| SignError::Pkcs11 {
            step: "find key",
            detail: format!("no {kind} with {} on {}", config.describe(), config.token),
        };
        let only = |kind: &str, found: Vec<ObjectHandle>| match found.as_slice() {
            [one] => Ok(*one),
            [] => Err(missing(kind)),
            many => Err(SignError::Pkcs11 {
                step: "find key",
                detail: format!(
                    "{} {kind}s with {} on {}: set the id (or label) that tells them apart",
                    many.len(),
                    config.describe(),
                    config.token
                ),
            }),
        };
        let key = only("private key", find(ObjectClass::PRIVATE_KEY)?)?;
        let public_key = only("public key", find(ObjectClass::PUBLIC_KEY)?)?;
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
        let (wanted, needs) = key_type_for(algorithm);
        let mut key_type = None;
        for attribute in &attributes {
            let refused = match attribute {
                Attribute::KeyType(kind) => {
                    key_type = Some(*kind);
                    None
                }
                Attribute::Extractable(true) => Some("is extractable (CKA_EXTRACTABLE)"),
                Attribute::Sensitive(false) => Some("is not sensitive (CKA_SENSITIVE)"),
                _ => None,
            };
            if let Some(refused) = refused {
                return Err(bad(format!("the private key {refused}")));
            }
        }
        match key_type {
            Some(kind) if kind == wanted => {}
            Some(kind) => {
                return Err(bad(format!(
                    "the private key is a {kind} key; {} needs {needs}",
                    algorithm.name()
                )));
            }
            None => return Err(bad("the module did not report the key's type".into())),
        }
        let (jwk, signature_len) = match algorithm {
            SigningAlgorithm::Es256 => (ec_jwk(first, public_key, &bad)?, 64),
            SigningAlgorithm::EdDsa => (ed25519_jwk(first, public_key, &bad)?, 64),
            SigningAlgorithm::Rs256 | SigningAlgorithm::Ps256 => {
                rsa_jwk(first, public_key, algorithm, &bad)?
            }
        };
        let (public, kid) = published(jwk, algorithm).map_err(&bad)?;
        Ok(Self {
            _context: context,
            algorithm,
            sessions: sessions.into_iter().map(Mutex::new).collect(),
            next: AtomicUsize::new(0),
            key,
            signature_len,
            public,
            kid,
        })
    }
}

/// The public object's attributes `types` (those it has).
fn public_attributes(
    session: &Session,
    public_key: ObjectHandle,
    types: &[AttributeType],
) -> Result<Vec<Attribute>, SignError> {
    session
        .get_attributes(public_key, types)
        .map_err(step("read public key"))
}

/// `CKA_EC_PARAMS` and `CKA_EC_POINT`, each when the object has it.
type EcAttributes = (Option<Vec<u8>>, Option<Vec<u8>>);

/// The public object's `CKA_EC_PARAMS` and `CKA_EC_POINT` (EC and Edwards keys alike).
fn ec_params_and_point(
    session: &Session,
    public_key: ObjectHandle,
) -> Result<EcAttributes, SignError> {
    let (mut params, mut point) = (None, None);
    for attribute in public_attributes(
        session,
        public_key,
        &[AttributeType::EcParams, AttributeType::EcPoint],
    )? {
        match attribute {
            Attribute::EcParams(value) => params = Some(value),
            Attribute::EcPoint(value) => point = Some(value),
            _ => {}
        }
    }
    Ok((params, point))
}

/// The JWK of a P-256 public key.
fn ec_jwk(
    session: &Session,
    public_key: ObjectHandle,
    bad: &dyn Fn(String) -> SignError,
) -> Result<Map<String, Value>, SignError> {
    let (params, point) = ec_params_and_point(session, public_key)?;
    let not_p256 = || bad("the public key is not a P-256 point".into());
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
    Ok(jwk)
}

/// The JWK of an Ed25519 public key.
fn ed25519_jwk(
    session: &Session,
    public_key: ObjectHandle,
    bad: &dyn Fn(String) -> SignError,
) -> Result<Map<String, Value>, SignError> {
    let (params, point) = ec_params_and_point(session, public_key)?;
    let x = ed25519_public(params.as_deref(), point.as_deref())
        .ok_or_else(|| bad("the public key is not an Ed25519 key".into()))?;
    let mut jwk = Map::new();
    jwk.insert("kty".into(), "OKP".into());
    jwk.insert("crv".into(), "Ed25519".into());
    jwk.insert("x".into(), URL_SAFE_NO_PAD.encode(x).into());
    Ok(jwk)
}

/// The 32-byte Ed25519 public key in `CKA_EC_PARAMS` and `CKA_EC_POINT`, if they are one.
fn ed25519_public<'a>(params: Option<&[u8]>, point: Option<&'a [u8]>) -> Option<&'a [u8]> {
    match params {
        Some(params) if params == ED25519_OID || params == ED25519_NAME => {}
        _ => return None,
    }
    // CKA_EC_POINT: a DER OCTET STRING around the 32-byte key, or (some modules) the raw key.
    match point? {
        [0x04, 0x20, x @ ..] if x.len() == 32 => Some(x),
        x if x.len() == 32 => Some(x),
        _ => None,
    }
}

/// The JWK of an RSA public key of at least 2048 bits, and its signature length in bytes.
fn rsa_jwk(
    session: &Session,
    public_key: ObjectHandle,
    algorithm: SigningAlgorithm,
    bad: &dyn Fn(String) -> SignError,
) -> Result<(Map<String, Value>, usize), SignError> {
    let (mut modulus, mut exponent) = (None, None);
    for attribute in public_attributes(
        session,
        public_key,
        &[AttributeType::Modulus, AttributeType::PublicExponent],
    )? {
        match attribute {
            Attribute::Modulus(value) => modulus = Some(value),
            Attribute::PublicExponent(value) => exponent = Some(value),
            _ => {}
        }
    }
    let (Some(modulus), Some(exponent)) = (modulus, exponent) else {
        return Err(bad(
            "the public key has no CKA_MODULUS or CKA_PUBLIC_EXPONENT".into(),
        ));
    };
    let bits = bit_length(&modulus);
    if bits < MIN_RSA_BITS {
        return Err(bad(format!(
            "the RSA key has {bits} bits; {} needs at least {MIN_RSA_BITS}",
            algorithm.name()
        )));
    }
    let (n, e) = (unsigned(&modulus), unsigned(&exponent));
    if e.is_empty() {
        return Err(bad("the RSA public exponent is zero".into()));
    }
    let mut jwk = Map::new();
    jwk.insert("kty".into(), "RSA".into());
    jwk.insert("n".into(), URL_SAFE_NO_PAD.encode(n).into());
    jwk.insert("e".into(), URL_SAFE_NO_PAD.encode(e).into());
    Ok((jwk, bits.div_ceil(8)))
}

impl Signer for Pkcs11Signer {
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
        "pkcs11"
    }

    fn sign(&self, input: &[u8]) -> Result<Vec<u8>, SignError> {
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
        let signed = match self.algorithm {
            // The module's CKM_ECDSA signs a digest: it is made here.
            SigningAlgorithm::Es256 => {
                session.sign(&Mechanism::Ecdsa, self.key, &openssl::sha::sha256(input))
            }
            SigningAlgorithm::EdDsa => session.sign(
                &Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                self.key,
                input,
            ),
            SigningAlgorithm::Rs256 => session.sign(&Mechanism::Sha256RsaPkcs, self.key, input),
            SigningAlgorithm::Ps256 => session.sign(
                &Mechanism::Sha256RsaPkcsPss(PkcsPssParams {
                    hash_alg: MechanismType::SHA256,
                    mgf: PkcsMgfType::MGF1_SHA256,
                    s_len: PSS_SALT.into(),
                }),
                self.key,
                input,
            ),
        };
        let signature = signed.map_err(|err| SignError::Pkcs11 {
            step: "sign",
            detail: err.to_string(),
        })?;
        if signature.len() != self.signature_len {
            return Err(SignError::Sign(format!(
                "the module returned a {}-byte {} signature, not {}",
                signature.len(),
                self.algorithm.name(),
                self.signature_len
            )));
        }
        Ok(signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_endian_integers_lose_their_leading_zero_bytes_and_count_their_bits() {
        assert_eq!(unsigned(&[0, 0, 1, 0, 1]), &[1, 0, 1]);
        assert_eq!(unsigned(&[0, 0]), &[] as &[u8]);
        assert_eq!(bit_length(&[0, 0x01, 0, 1]), 17);
        assert_eq!(bit_length(&[0x80; 256]), 2048);
        assert_eq!(bit_length(&[0x7f; 256]), 2047);
        assert_eq!(bit_length(&[]), 0);
    }

    #[test]
    fn an_ed25519_public_key_is_read_in_either_curve_form_wrapped_or_raw() {
        let key = [7u8; 32];
        let mut wrapped = vec![0x04, 0x20];
        wrapped.extend_from_slice(&key);
        for params in [&ED25519_OID[..], &ED25519_NAME[..]] {
            assert_eq!(ed25519_public(Some(params), Some(&wrapped)), Some(&key[..]));
            assert_eq!(ed25519_public(Some(params), Some(&key)), Some(&key[..]));
            assert_eq!(ed25519_public(Some(params), Some(&key[..31])), None);
            assert_eq!(ed25519_public(Some(params), None), None);
        }
        assert_eq!(&ED25519_NAME[2..], b"edwards25519");
        assert_eq!(ed25519_public(Some(&P256_PARAMS), Some(&key)), None);
        assert_eq!(ed25519_public(None, Some(&key)), None);
    }

    #[test]
    fn a_key_is_named_by_its_label_its_id_or_both() {
        let mut key = Pkcs11Key {
            module: "/m.so".into(),
            token: TokenSelector::Slot(7),
            key_label: Some("sig-1".into()),
            key_id: None,
            pin: String::new(),
            sessions: 1,
        };
        assert_eq!(key.describe(), "label \"sig-1\"");
        key.key_id = Some(vec![0x0a, 0xff]);
        assert_eq!(key.describe(), "label \"sig-1\" and id 0aff");
        key.key_label = None;
        assert_eq!(key.describe(), "id 0aff");
        assert_eq!(key.token.to_string(), "the token in slot 7");
    }
}
