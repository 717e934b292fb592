//! JOSE primitives: algorithm names, strict compact-JWS framing and strict JSON.
//!
//! This layer knows nothing about issuers, keys or policy. It turns untrusted token text into
//! typed parts or a [`FormatError`], and never panics on any input. It depends on nothing else
//! in the crate.

mod algorithm;
mod compact;
mod json;

pub use algorithm::{Algorithm, KeyFamily};
pub use compact::{CompactJws, FormatError, JoseHeader};
pub use json::{DuplicateFree, parse_object};
