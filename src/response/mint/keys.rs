//! The signing key ring: every configured key with its rotation state, the one that signs,
//! and the JWK Set verifiers fetch.
//!
//! A key is published while it is `next` (verifiers learn it before it signs), `current`
//! (it signs), and `retired` until every token it signed has expired plus the clock skew.
//! Loading enforces the rotation rules that need the clock: a `current` key must have been
//! published for at least `key_lead_time` (or be the issuer's `initial` key), and no key may
//! claim to be published in the future. On a reload, the current key must also be one the
//! running configuration published.

use std::sync::Arc;

use serde_json::{Value, json};

use super::file::FileSigner;
use super::pkcs11::{Pkcs11Key, Pkcs11Signer, TokenSelector};
use super::read_key_file;
use super::signer::{Signer, SigningAlgorithm};
use crate::config::{
    FieldError, KeyState, MintConfig, MintKeyConfig, Pkcs11KeyConfig, SigningAlgorithmName,
};

/// One key of the ring.
#[derive(Debug, Clone)]
pub struct RingKey {
    /// The key.
    pub signer: Arc<dyn Signer>,
    /// Its rotation state.
    pub state: KeyState,
    /// The end of its publication (retired keys), seconds since the epoch.
    pub published_until: Option<i64>,
    /// The PKCS#11 key it was opened from, so a reload with the same settings keeps the open
    /// sessions.
    source: Option<(Pkcs11KeyConfig, SigningAlgorithmName)>,
}

/// The keys of one configuration.
#[derive(Debug, Clone)]
pub struct KeyRing {
    keys: Vec<RingKey>,
    current: Arc<dyn Signer>,
}

/// A loaded ring and what an operator should know about it.
#[derive(Debug)]
pub struct LoadedRing {
    /// The ring.
    pub ring: KeyRing,
    /// Problems that do not stop it (a retired key past its publication, …).
    pub warnings: Vec<FieldError>,
}

impl KeyRing {
    /// Loads every key of `mint` at `now`, reusing the open PKCS#11 keys of `previous` whose
    /// settings did not change; every problem is reported with its field path.
    pub fn load(
        mint: &MintConfig,
        previous: Option<&KeyRing>,
        now: i64,
    ) -> Result<LoadedRing, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let mut keys = Vec::new();
        let lead = seconds(mint.key_lead_time.get());
        let window = seconds(mint.lifetime.get()).saturating_add(seconds(mint.clock_skew.get()));
        for (i, config) in mint.keys.iter().enumerate() {
            let at = format!("mint.keys[{i}]");
            if let Some(published) = config.published_at
                && published.unix() > now.saturating_add(seconds(mint.clock_skew.get()))
            {
                errors.push(FieldError::new(
                    format!("{at}.published_at"),
                    format!("{published} is in the future"),
                ));
            }
            if config.state == KeyState::Current && !config.initial {
                match config.published_at {
                    None => errors.push(FieldError::new(
                        format!("{at}.published_at"),
                        format!(
                            "is needed for a current key: it must have been published as next for at least mint.key_lead_time ({}) so that verifiers' cached JWKS know it (for the issuer's very first key, set initial: true)",
                            mint.key_lead_time
                        ),
                    )),
                    Some(published) if now.saturating_sub(published.unix()) < lead => {
                        errors.push(FieldError::new(
                            format!("{at}.state"),
                            format!(
                                "current is refused: the key was published at {published}, {}s ago, less than mint.key_lead_time ({}); verifiers with a cached JWKS would not know it. Keep it next until then",
                                now.saturating_sub(published.unix()).max(0),
                                mint.key_lead_time
                            ),
                        ));
                    }
                    Some(_) => {}
                }
            }
            let published_until = match (config.state, config.retired_at) {
                (KeyState::Retired, Some(retired)) => {
                    let until = retired.unix().saturating_add(window);
                    if until <= now {
                        warnings.push(FieldError::new(
                            at.clone(),
                            format!(
                                "retired at {retired}: every token it signed has expired, so it is no longer published and can be removed"
                            ),
                        ));
                    }
                    Some(until)
                }
                _ => None,
            };
            let reused = previous.and_then(|ring| {
                ring.keys.iter().find(|key| {
                    key.source.as_ref().is_some_and(|(p, alg)| {
                        Some(p) == config.pkcs11.as_ref() && *alg == config.algorithm
                    })
                })
            });
            let signer = match reused {
                Some(key) => Ok(Arc::clone(&key.signer)),
                None => open(config, &at),
            };
            match signer {
                Ok(signer) => keys.push(RingKey {
                    signer,
                    state: config.state,
                    published_until,
                    source: config.pkcs11.clone().map(|p| (p, config.algorithm)),
                }),
                Err(error) => errors.push(error),
            }
        }
        for (i, key) in keys.iter().enumerate() {
            if let Some(j) = keys
                .iter()
                .take(i)
                .position(|other| other.signer.kid() == key.signer.kid())
            {
                errors.push(FieldError::new(
                    format!("mint.keys[{i}]"),
                    format!(
                        "is the same key as mint.keys[{j}] (kid {}): a key has one state",
                        key.signer.kid()
                    ),
                ));
            }
        }
        // A running server knows what it has published: a current key it never published is
        // refused whatever `published_at` says (a key file replaced in place is a new key).
        if let Some(previous) = previous {
            let published: Vec<&str> = previous.published(now).map(|k| k.signer.kid()).collect();
            for (i, key) in keys.iter().enumerate() {
                if key.state == KeyState::Current && !published.contains(&key.signer.kid()) {
                    errors.push(FieldError::new(
                        format!("mint.keys[{i}]"),
                        format!(
                            "current is refused: key {} was never published by the running configuration, so verifiers' cached JWKS do not know it (a key file replaced in place is a new key); add it as next first",
                            key.signer.kid()
                        ),
                    ));
                }
            }
        }
        let current = keys
            .iter()
            .find(|key| key.state == KeyState::Current)
            .map(|key| Arc::clone(&key.signer));
        match current {
            Some(current) if errors.is_empty() => Ok(LoadedRing {
                ring: KeyRing { keys, current },
                warnings,
            }),
            _ => {
                if errors.is_empty() {
                    errors.push(FieldError::new("mint.keys", "no current key"));
                }
                Err(errors)
            }
        }
    }

    /// Makes `signer` the signing key (tests: a failing signer).
    #[cfg(test)]
    pub(crate) fn sign_with(&mut self, signer: Arc<dyn Signer>) {
        self.current = signer;
    }

    /// The key that signs.
    pub fn current(&self) -> &Arc<dyn Signer> {
        &self.current
    }

    /// Every key and its state.
    pub fn keys(&self) -> &[RingKey] {
        &self.keys
    }

    /// The keys published at `now`.
    pub fn published(&self, now: i64) -> impl Iterator<Item = &RingKey> {
        self.keys
            .iter()
            .filter(move |key| key.published_until.is_none_or(|until| now < until))
    }

    /// The JWK Set verifiers fetch at `now`: public keys only, each with `kid`, `alg`, `use`.
    pub fn jwks(&self, now: i64) -> Value {
        let keys: Vec<Value> = self
            .published(now)
            .map(|key| Value::Object(key.signer.public_jwk().clone()))
            .collect();
        json!({ "keys": keys })
    }

    /// The algorithms of the published keys, for discovery.
    pub fn algorithms(&self, now: i64) -> Vec<&'static str> {
        let mut algorithms: Vec<&'static str> = Vec::new();
        for key in self.published(now) {
            let name = key.signer.algorithm().name();
            if !algorithms.contains(&name) {
                algorithms.push(name);
            }
        }
        algorithms
    }
}

fn seconds(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

/// The signing algorithm a configuration names.
pub fn algorithm(name: SigningAlgorithmName) -> SigningAlgorithm {
    match name {
        SigningAlgorithmName::Es256 => SigningAlgorithm::Es256,
        SigningAlgorithmName::EdDsa => SigningAlgorithm::EdDsa,
        SigningAlgorithmName::Rs256 => SigningAlgorithm::Rs256,
        SigningAlgorithmName::Ps256 => SigningAlgorithm::Ps256,
    }
}

/// Opens the key `config` describes (at field path `at`).
fn open(config: &MintKeyConfig, at: &str) -> Result<Arc<dyn Signer>, FieldError> {
    let algorithm = algorithm(config.algorithm);
    if let Some(path) = &config.file {
        let pem = read_key_file(path).map_err(|why| FieldError::new(format!("{at}.file"), why))?;
        let signer = FileSigner::from_pem(&path.display().to_string(), &pem, algorithm)
            .map_err(|err| FieldError::new(format!("{at}.file"), err.to_string()))?;
        return Ok(Arc::new(signer));
    }
    let Some(pkcs11) = &config.pkcs11 else {
        return Err(FieldError::new(at, "needs exactly one of file and pkcs11"));
    };
    let at = format!("{at}.pkcs11");
    let pin = read_pin(pkcs11).map_err(|why| FieldError::new(format!("{at}.pin"), why))?;
    let key_id = match &pkcs11.key_id {
        Some(hex) => Some(from_hex(hex).ok_or_else(|| {
            FieldError::new(format!("{at}.key_id"), format!("{hex:?} is not hex"))
        })?),
        None => None,
    };
    let token = match (&pkcs11.token_label, pkcs11.slot) {
        (Some(label), _) => TokenSelector::Label(label.clone()),
        (None, Some(slot)) => TokenSelector::Slot(slot),
        (None, None) => {
            return Err(FieldError::new(
                at,
                "needs exactly one of token_label and slot",
            ));
        }
    };
    let key = Pkcs11Key {
        module: pkcs11.module.clone(),
        token,
        key_label: pkcs11.key_label.clone(),
        key_id,
        pin,
        sessions: pkcs11.sessions,
    };
    let signer =
        Pkcs11Signer::open(&key, algorithm).map_err(|err| FieldError::new(at, err.to_string()))?;
    Ok(Arc::new(signer))
}

/// The PIN, from its environment variable or file (surrounding whitespace dropped).
fn read_pin(config: &Pkcs11KeyConfig) -> Result<String, String> {
    let pin = match (&config.pin.env, &config.pin.file) {
        (Some(name), None) => std::env::var(name)
            .map_err(|_| format!("environment variable {name} is not set (or not UTF-8)"))?,
        (None, Some(path)) => String::from_utf8(read_key_file(path)?)
            .map_err(|_| format!("{}: the PIN is not UTF-8", path.display()))?,
        _ => return Err("needs exactly one of env and file".into()),
    };
    let pin = pin.trim();
    if pin.is_empty() {
        return Err("the PIN is empty".into());
    }
    Ok(pin.to_owned())
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok())
        .collect()
}
