//! fedauthz: an Envoy ext_authz v3 service that verifies JWTs from many issuers.
//!
//! One Check request flows forward through one module per phase:
//!
//! | phase | module |
//! |---|---|
//! | transport adapter | [`service`] (ext_authz gRPC), [`http_authz`] (Envoy `http_service`, nginx `auth_request`, Traefik `forwardAuth`); both run [`check`] |
//! | credential extraction | [`extract`] |
//! | verification (issuer → keys → signature → claims), or an API key's digest | [`verify`], over [`jose`] and [`keys`]; API keys in [`verify::api_key`] |
//! | claim normalization | [`identity`] |
//! | authorization | [`authz`] |
//! | response (headers, metadata, minted token, denial) | [`response`], minting in [`response::mint`] |
//!
//! [`pipeline`] wires the phases for one configuration ([`config`]); [`server`] runs them
//! (gRPC, HTTP authorization and admin listeners, plaintext or TLS, health, shutdown, reload of configuration and
//! certificates; [`caller`] is the verified mTLS identity of the calling proxy); [`decision_log`], [`metrics`] and [`telemetry`]
//! observe them; [`publish`] serves the minting keys' discovery and JWKS; [`dev`] is the local development mode; [`explain`] prints the decision trace of
//! one request.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod authz;
pub mod caller;
pub mod check;
pub mod config;
pub mod decision_log;
pub mod dev;
pub mod explain;
pub mod extract;
pub mod files;
pub mod http_authz;
pub mod identity;
pub mod jose;
pub mod keys;
pub mod metrics;
pub mod pipeline;
pub mod proto;
pub mod publish;
pub mod reason;
pub mod response;
pub mod server;
pub mod service;
pub mod telemetry;
pub mod verify;
pub mod watch;
