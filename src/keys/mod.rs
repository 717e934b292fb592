//! Trusted key material: JWK ingest with key hygiene, key sets, and where they come from.
//!
//! A [`KeySet`] is an immutable snapshot of one issuer's usable keys, each already turned into
//! the signature verifiers its algorithms need (building a verifier costs several times a
//! verification, so it happens once, here, never per request). A [`KeyStore`] holds the current
//! snapshot of one issuer and is swapped atomically when keys load. [`source`] keeps stores
//! filled from their configured sources over [`http`]; [`formats`] reads the non-JWKS formats.
//!
//! Depends on [`crate::jose`] (algorithm names, JSON) and [`crate::config`] (key source schema).

pub mod formats;
pub mod http;
mod jwk;
mod set;
pub mod source;
mod store;

pub use jwk::{AlgorithmPolicy, KeyRefusal, SignatureVerifier, TrustedKey};
pub use set::{KeySet, KeySetError};
pub use store::{KeyStats, KeyStatsSnapshot, KeyStore, OnDemandPolicy};
