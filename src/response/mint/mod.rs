//! Minting (issue 16, in progress): the internal token fedauthz issues for the upstream on
//! allow. This first step holds the signers: one interface, [`Signer`], with a backend for PEM
//! key files ([`file::FileSigner`]) and one for PKCS#11 modules ([`pkcs11::Pkcs11Signer`],
//! the private key never leaves the module). The claims, the token cache, key states and
//! publishing build on them; nothing on the Check path signs yet.
//!
//! Depends on [`crate::jose`] (algorithm names) only.

pub mod file;
pub mod pkcs11;
mod signer;

pub use signer::{SignError, Signer, SigningAlgorithm, thumbprint};
