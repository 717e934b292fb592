//! Dev mode: a built-in issuer for local use, so fedauthz can be tried without an IdP.
//!
//! On first start a P-256 signing key is generated and kept (mode 0600) in a local state
//! directory; `fedauthz dev-token` signs tokens with it, and `fedauthz serve --dev` trusts its
//! public half through an embedded configuration. Never for production: dev mode only listens on
//! loopback and must be asked for explicitly. Depends on [`crate::config`].

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use josekit::jwk::Jwk;
use josekit::jwk::KeyPair as _;
use josekit::jws::{ES256, JwsSigner as _};
use serde_json::{Map, Value, json};

use crate::config::{Config, ConfigError, parse_yaml};

/// `iss` of dev tokens.
pub const DEV_ISSUER: &str = "urn:fedauthz:dev";
/// Default audience of dev tokens, and the one the dev configuration accepts.
pub const DEV_AUDIENCE: &str = "fedauthz-dev";
const KEY_FILE: &str = "dev-signing-key.jwk.json";

/// The embedded dev configuration (its key set is filled in at start).
pub const DEV_CONFIG_YAML: &str = r#"# fedauthz dev mode: local use only.
server:
  grpc_listen: 127.0.0.1:50051
  admin_listen: 127.0.0.1:9191
issuers:
  - id: dev
    issuer: urn:fedauthz:dev
    audiences: [fedauthz-dev]
    algorithms: [ES256]
    max_lifetime: 24h
    keys:
      jwks: { keys: [] }
"#;

/// Problems with the dev state.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// The state directory or key file could not be read or written.
    #[error("dev state {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file exists but does not hold a usable key.
    #[error("dev key {path} is unusable ({why}); delete it to generate a new one")]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The embedded configuration did not load (a bug).
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// The default state directory: `$XDG_STATE_HOME/fedauthz`, else `~/.local/state/fedauthz`,
/// else `./.fedauthz`.
pub fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("fedauthz");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".local/state/fedauthz");
    }
    PathBuf::from(".fedauthz")
}

/// The dev issuer's signing key.
#[derive(Debug, Clone)]
pub struct DevKey {
    private: Jwk,
    path: PathBuf,
}

impl DevKey {
    /// Loads the key from `state_dir`, generating and saving one on first use.
    pub fn load_or_create(state_dir: &Path) -> Result<Self, DevError> {
        let path = state_dir.join(KEY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let private = Jwk::from_bytes(&bytes).map_err(|err| DevError::BadKey {
                    path: path.clone(),
                    why: err.to_string(),
                })?;
                let key = Self { private, path };
                key.signer()?;
                Ok(key)
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Self::create(state_dir, path),
            Err(source) => Err(DevError::Io { path, source }),
        }
    }

    fn create(state_dir: &Path, path: PathBuf) -> Result<Self, DevError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| DevError::Io { path, source }
        };
        std::fs::create_dir_all(state_dir).map_err(io(state_dir))?;
        let bad = |why: String| DevError::BadKey {
            path: path.clone(),
            why,
        };
        let pair = ES256.generate_key_pair().map_err(|e| bad(e.to_string()))?;
        let mut private = pair.to_jwk_key_pair();
        let mut kid = [0u8; 8];
        openssl::rand::rand_bytes(&mut kid).map_err(|e| bad(e.to_string()))?;
        private.set_key_id(format!("dev-{}", URL_SAFE_NO_PAD.encode(kid)));
        private.set_algorithm("ES256");
        private.set_key_use("sig");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&path).map_err(io(&path))?;
        file.write_all(private.to_string().as_bytes())
            .map_err(io(&path))?;
        Ok(Self { private, path })
    }

    /// Where the key is kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The public JWK Set that verifies dev tokens.
    pub fn public_jwks(&self) -> Result<Value, DevError> {
        // josekit's to_public_key() drops kid and alg; keep them by removing only `d`.
        let mut public = self.private.as_ref().clone();
        if public.remove("d").is_none() {
            return Err(DevError::BadKey {
                path: self.path.clone(),
                why: "it is not a private key".into(),
            });
        }
        Ok(json!({ "keys": [Value::Object(public)] }))
    }

    fn signer(&self) -> Result<josekit::jws::alg::ecdsa::EcdsaJwsSigner, DevError> {
        ES256
            .signer_from_jwk(&self.private)
            .map_err(|err| DevError::BadKey {
                path: self.path.clone(),
                why: err.to_string(),
            })
    }

    /// Signs a dev token for `claims` (already including the time claims).
    pub fn sign(&self, claims: &Map<String, Value>) -> Result<String, DevError> {
        let header = json!({ "alg": "ES256", "typ": "JWT", "kid": self.private.key_id() });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(Value::Object(claims.clone()).to_string())
        );
        let signature = self
            .signer()?
            .sign(input.as_bytes())
            .map_err(|err| DevError::BadKey {
                path: self.path.clone(),
                why: err.to_string(),
            })?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

/// What a dev token says.
#[derive(Debug, Clone)]
pub struct DevTokenRequest {
    /// `sub`.
    pub subject: String,
    /// `aud` values (one becomes a string, several an array).
    pub audiences: Vec<String>,
    /// `scope`, space-separated, if any.
    pub scope: Option<String>,
    /// Lifetime.
    pub ttl: Duration,
    /// Extra string claims.
    pub extra: Vec<(String, String)>,
}

/// Mints a dev token valid from `now` (seconds since the epoch).
pub fn mint(key: &DevKey, request: &DevTokenRequest, now: i64) -> Result<String, DevError> {
    let ttl = i64::try_from(request.ttl.as_secs()).unwrap_or(i64::MAX);
    let mut claims = Map::new();
    for (name, value) in &request.extra {
        claims.insert(name.clone(), Value::String(value.clone()));
    }
    claims.insert("iss".into(), DEV_ISSUER.into());
    claims.insert("sub".into(), request.subject.clone().into());
    claims.insert(
        "aud".into(),
        match request.audiences.as_slice() {
            [one] => Value::String(one.clone()),
            many => Value::Array(many.iter().cloned().map(Value::String).collect()),
        },
    );
    if let Some(scope) = &request.scope {
        claims.insert("scope".into(), scope.clone().into());
    }
    claims.insert("iat".into(), now.into());
    claims.insert("nbf".into(), now.into());
    claims.insert("exp".into(), now.saturating_add(ttl).into());
    key.sign(&claims)
}

/// The embedded dev configuration, trusting `key`.
pub fn dev_config(key: &DevKey) -> Result<Config, DevError> {
    let mut config = parse_yaml(DEV_CONFIG_YAML, "<embedded dev config>")?;
    let jwks = key.public_jwks()?;
    for issuer in &mut config.issuers {
        if let Some(keys) = &mut issuer.keys {
            keys.jwks = Some(jwks.clone());
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Generation;
    use std::sync::Arc;

    #[test]
    fn the_key_persists_and_minted_tokens_verify_against_the_dev_config() {
        let dir = tempfile::tempdir().unwrap();
        let key = DevKey::load_or_create(dir.path()).unwrap();
        let again = DevKey::load_or_create(dir.path()).unwrap();
        assert_eq!(key.public_jwks().unwrap(), again.public_jwks().unwrap());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(key.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        let config = dev_config(&key).unwrap();
        let generation =
            Generation::build(config, None, &Arc::new(tokio::sync::Notify::new())).unwrap();
        let now = 1_800_000_000;
        let token = mint(
            &key,
            &DevTokenRequest {
                subject: "alice".into(),
                audiences: vec![DEV_AUDIENCE.into()],
                scope: Some("orders:read".into()),
                ttl: Duration::from_secs(900),
                extra: vec![],
            },
            now,
        )
        .unwrap();
        let verified = generation.pipeline.issuers().verify(
            &token,
            crate::extract::LocationSet::single(0),
            now + 1,
        );
        let verified = verified.unwrap();
        assert_eq!(verified.subject(), "alice");
        assert_eq!(verified.claims["scope"], "orders:read");
    }

    #[test]
    fn a_corrupt_key_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(KEY_FILE), b"{not json").unwrap();
        let err = DevKey::load_or_create(dir.path()).unwrap_err();
        assert!(err.to_string().contains("delete it"), "{err}");
    }
}
