//! An immutable snapshot of one issuer's usable keys, with exact `kid` lookup.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

use super::jwk::{AlgorithmPolicy, TrustedKey};
use crate::jose::parse_object;

/// Why a whole key set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeySetError {
    /// The document is not a JWK Set.
    #[error("not a JWK Set: {0}")]
    NotAJwkSet(String),
    /// The document is not a JSON object of kid → PEM key or certificate.
    #[error("not a JSON object of kid to PEM key: {0}")]
    NotAPemMap(String),
    /// The document is not a SPIFFE trust bundle.
    #[error("not a SPIFFE trust bundle: {0}")]
    NotASpiffeBundle(String),
    /// Two usable keys share a `kid`, so a token's `kid` would not name one key.
    #[error("two keys share kid {0:?}")]
    DuplicateKid(String),
    /// Nothing usable was left after the hygiene rules.
    #[error("no usable signing key{}", skipped_suffix(.0))]
    NoUsableKeys(Vec<String>),
}

fn skipped_suffix(skipped: &[String]) -> String {
    if skipped.is_empty() {
        " (the set is empty)".into()
    } else {
        format!(" ({})", skipped.join("; "))
    }
}

/// Source of [`KeySet::id`]s: every set built in this process gets its own.
static NEXT_SET_ID: AtomicU64 = AtomicU64::new(1);

/// The usable keys of one issuer.
#[derive(Debug, Default)]
pub struct KeySet {
    id: u64,
    keys: Vec<Arc<TrustedKey>>,
    by_kid: HashMap<String, Arc<TrustedKey>>,
    skipped: Vec<String>,
}

impl KeySet {
    /// Builds a set from JWK Set JSON text (`{"keys": [...]}`). Keys that fail the hygiene rules
    /// are left out and described in [`KeySet::skipped`]; `extra` keys (a configured HMAC secret)
    /// are added as they are.
    pub fn from_jwks_bytes(
        bytes: &[u8],
        policy: &AlgorithmPolicy,
        extra: impl IntoIterator<Item = Arc<TrustedKey>>,
    ) -> Result<Self, KeySetError> {
        let doc = parse_object(bytes).map_err(KeySetError::NotAJwkSet)?;
        Self::from_jwks(&Value::Object(doc), policy, extra)
    }

    /// Builds a set from a parsed JWK Set document. See [`KeySet::from_jwks_bytes`].
    pub fn from_jwks(
        doc: &Value,
        policy: &AlgorithmPolicy,
        extra: impl IntoIterator<Item = Arc<TrustedKey>>,
    ) -> Result<Self, KeySetError> {
        let entries = match doc.get("keys") {
            Some(Value::Array(entries)) => entries,
            Some(_) => return Err(KeySetError::NotAJwkSet("\"keys\" is not an array".into())),
            None => return Err(KeySetError::NotAJwkSet("no \"keys\" member".into())),
        };
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            match TrustedKey::from_jwk(entry, policy) {
                Ok(key) => keys.push(Arc::new(key)),
                Err(refusal) => {
                    let kid = entry.get("kid").and_then(Value::as_str);
                    skipped.push(match kid {
                        Some(kid) => format!("key {index} (kid {kid:?}): {refusal}"),
                        None => format!("key {index}: {refusal}"),
                    });
                }
            }
        }
        keys.extend(extra);
        Self::from_keys(keys, skipped)
    }

    /// Builds a set from already trusted keys.
    pub fn from_keys(
        keys: Vec<Arc<TrustedKey>>,
        skipped: Vec<String>,
    ) -> Result<Self, KeySetError> {
        if keys.is_empty() {
            return Err(KeySetError::NoUsableKeys(skipped));
        }
        let mut by_kid = HashMap::with_capacity(keys.len());
        for key in &keys {
            if let Some(kid) = key.kid()
                && by_kid.insert(kid.to_owned(), Arc::clone(key)).is_some()
            {
                return Err(KeySetError::DuplicateKid(kid.to_owned()));
            }
        }
        Ok(Self {
            id: NEXT_SET_ID.fetch_add(1, Ordering::Relaxed),
            keys,
            by_kid,
            skipped,
        })
    }

    /// Identifies this set among every set built in this process (a reload of the same keys
    /// is a new set with a new id; compare [`TrustedKey::fingerprint`]s to see whether a key
    /// is still the same).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The key a token names. With a `kid`: the key with exactly that `kid`. Without one: the
    /// only key, when the set has exactly one; otherwise nothing (never "try them all").
    pub fn select(&self, kid: Option<&str>) -> Option<&TrustedKey> {
        self.select_shared(kid).map(Arc::as_ref)
    }

    /// [`KeySet::select`], as the shared key (so a caller may keep it).
    pub fn select_shared(&self, kid: Option<&str>) -> Option<&Arc<TrustedKey>> {
        match kid {
            Some(kid) => self.by_kid.get(kid),
            None => match self.keys.as_slice() {
                [only] => Some(only),
                _ => None,
            },
        }
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when there are no usable keys (never, for a set built by this module).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys left out, each with its reason.
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    /// The usable keys.
    pub fn keys(&self) -> &[Arc<TrustedKey>] {
        &self.keys
    }

    /// The `kid`s of the usable keys.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().filter_map(|key| key.kid())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use josekit::jws;
    use serde_json::json;

    fn ec_jwk(kid: Option<&str>) -> Value {
        let mut jwk = jws::ES256.generate_key_pair().unwrap().to_jwk_public_key();
        if let Some(kid) = kid {
            jwk.set_key_id(kid);
        }
        Value::Object(jwk.as_ref().clone())
    }

    #[test]
    fn selects_by_exact_kid_only() {
        let doc = json!({"keys": [ec_jwk(Some("a")), ec_jwk(Some("b"))]});
        let set = KeySet::from_jwks(&doc, &AlgorithmPolicy::default(), []).unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(set.select(Some("a")).unwrap().kid(), Some("a"));
        assert!(set.select(Some("A")).is_none());
        assert!(set.select(Some("a ")).is_none());
        assert!(set.select(Some("../../dev/null")).is_none());
        assert!(set.select(None).is_none(), "no kid and two keys: nothing");
    }

    #[test]
    fn a_token_without_kid_uses_the_single_key() {
        let doc = json!({"keys": [ec_jwk(Some("a"))]});
        let set = KeySet::from_jwks(&doc, &AlgorithmPolicy::default(), []).unwrap();
        assert_eq!(set.select(None).unwrap().kid(), Some("a"));
    }

    #[test]
    fn every_set_has_its_own_id_and_a_reloaded_key_the_same_fingerprint() {
        let jwk = ec_jwk(Some("a"));
        let doc = json!({"keys": [jwk]});
        let p = AlgorithmPolicy::default();
        let first = KeySet::from_jwks(&doc, &p, []).unwrap();
        let again = KeySet::from_jwks(&doc, &p, []).unwrap();
        assert_ne!(first.id(), again.id());
        let (a, b) = (
            first.select(Some("a")).unwrap(),
            again.select(Some("a")).unwrap(),
        );
        assert_eq!(a.fingerprint(), b.fingerprint());
        let other = KeySet::from_jwks(&json!({"keys": [ec_jwk(Some("a"))]}), &p, []).unwrap();
        assert_ne!(
            other.select(Some("a")).unwrap().fingerprint(),
            a.fingerprint()
        );
        let mut renamed = doc["keys"][0].clone();
        renamed["kid"] = json!("b");
        let renamed = KeySet::from_jwks(&json!({"keys": [renamed]}), &p, []).unwrap();
        assert_ne!(
            renamed.select(Some("b")).unwrap().fingerprint(),
            a.fingerprint()
        );
    }

    #[test]
    fn duplicate_kids_refuse_the_set() {
        let doc = json!({"keys": [ec_jwk(Some("a")), ec_jwk(Some("a"))]});
        assert_eq!(
            KeySet::from_jwks(&doc, &AlgorithmPolicy::default(), []).unwrap_err(),
            KeySetError::DuplicateKid("a".into())
        );
    }

    #[test]
    fn unusable_keys_are_skipped_with_reasons() {
        let mut enc = ec_jwk(Some("enc"));
        enc["use"] = json!("enc");
        let doc = json!({"keys": [enc, {"kty": "XYZ"}, ec_jwk(Some("good"))]});
        let set = KeySet::from_jwks(&doc, &AlgorithmPolicy::default(), []).unwrap();
        assert_eq!(set.kids().collect::<Vec<_>>(), ["good"]);
        assert_eq!(set.skipped().len(), 2);
        assert!(
            set.skipped()[0].contains("kid \"enc\""),
            "{:?}",
            set.skipped()
        );
    }

    #[test]
    fn empty_or_unusable_sets_are_refused() {
        let p = AlgorithmPolicy::default();
        assert!(matches!(
            KeySet::from_jwks(&json!({"keys": []}), &p, []),
            Err(KeySetError::NoUsableKeys(_))
        ));
        assert!(matches!(
            KeySet::from_jwks(&json!({"keys": [{"kty": "oct", "k": "AAAA"}]}), &p, []),
            Err(KeySetError::NoUsableKeys(s)) if s.len() == 1
        ));
        for bad in [&b"[]"[..], b"{}", br#"{"keys":{}}"#, b"not json"] {
            assert!(matches!(
                KeySet::from_jwks_bytes(bad, &p, []),
                Err(KeySetError::NotAJwkSet(_))
            ));
        }
    }
}
