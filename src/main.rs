//! The `fedauthz` command: serve, check-config, config-schema, dev-token.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use fedauthz::config::{self, Config};
use fedauthz::dev::{self, DevKey, DevTokenRequest};
use fedauthz::keys::source;
use fedauthz::server::{ServeOptions, Server, shutdown_signal};
use fedauthz::service::unix_now;
use fedauthz::telemetry::{self, Telemetry};

/// Envoy ext_authz service that verifies JWTs from many issuers.
#[derive(Debug, Parser)]
#[command(name = "fedauthz", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the ext_authz gRPC service (and the admin listener).
    Serve {
        /// Configuration file (YAML). SIGHUP reloads it.
        #[arg(long, env = "FEDAUTHZ_CONFIG", conflicts_with = "dev")]
        config: Option<PathBuf>,
        /// Run on the embedded dev configuration with a local dev issuer. Local use only.
        #[arg(long)]
        dev: bool,
        /// Dev mode state directory (holds the dev signing key).
        #[arg(long, env = "FEDAUTHZ_STATE_DIR")]
        state_dir: Option<PathBuf>,
        /// Override server.grpc_listen.
        #[arg(long)]
        grpc_listen: Option<SocketAddr>,
        /// Override server.admin_listen.
        #[arg(long)]
        admin_listen: Option<SocketAddr>,
        /// Log format (level: RUST_LOG; traces: the OTEL_* environment, see docs/observability.md).
        #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "FEDAUTHZ_LOG_FORMAT")]
        log_format: LogFormat,
    },
    /// Validate a configuration file: schema, rules, local key material and secrets.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Print the JSON Schema of the configuration file.
    ConfigSchema,
    /// Run one request through the pipeline of a configuration and print the decision trace.
    Explain {
        /// Configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Bearer token, sent as `Authorization: Bearer <token>` (use --header for another
        /// location).
        #[arg(long)]
        token: Option<String>,
        /// HTTP method.
        #[arg(long, default_value = "GET")]
        method: String,
        /// Host.
        #[arg(long, default_value = "localhost")]
        host: String,
        /// Path.
        #[arg(long, default_value = "/")]
        path: String,
        /// Request header NAME=VALUE (repeatable).
        #[arg(long = "header", value_parser = parse_claim)]
        headers: Vec<(String, String)>,
        /// Envoy context extension KEY=VALUE (repeatable).
        #[arg(long = "context", value_parser = parse_claim)]
        context: Vec<(String, String)>,
        /// mTLS peer principal (Envoy's `source.principal`, the downstream client).
        #[arg(long, default_value = "")]
        principal: String,
        /// The calling proxy's verified client certificate name (a URI SAN such as
        /// spiffe://cluster.local/ns/gw/sa/envoy, or a DNS SAN; repeatable), for routes that
        /// match `callers`.
        #[arg(long = "caller")]
        callers: Vec<String>,
    },
    /// Generate an API key: prints the key (once: it is stored nowhere) and the entry that
    /// stores only its digest, for a key set's `keys` or its file.
    Apikey {
        /// The key's id: part of the key, not secret ([A-Za-z0-9-], e.g. acme-2026-12).
        #[arg(long)]
        id: String,
        /// The key set's `prefix`.
        #[arg(long, default_value = "fak_")]
        prefix: String,
        /// The identity's subject.
        #[arg(long)]
        subject: String,
        /// A scope granted (repeatable).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// A role granted (repeatable).
        #[arg(long = "role")]
        roles: Vec<String>,
        /// The identity's tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// The identity's client.
        #[arg(long)]
        client: Option<String>,
        /// When the key stops being accepted (RFC 3339, e.g. 2027-06-01T00:00:00Z).
        #[arg(long)]
        expires: Option<String>,
        /// The set's HMAC secret, for a set with `hash: hmac_sha256`.
        #[arg(long)]
        hmac_secret_file: Option<PathBuf>,
    },
    /// Print a token signed by the dev issuer (accepted by `serve --dev`).
    DevToken {
        /// `sub` claim.
        #[arg(long, default_value = "dev-user")]
        sub: String,
        /// `aud` claim (repeat for several).
        #[arg(long, default_value = dev::DEV_AUDIENCE)]
        aud: Vec<String>,
        /// `scope` claim, space-separated.
        #[arg(long)]
        scope: Option<String>,
        /// Lifetime, e.g. 15m or 1h.
        #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Extra string claim NAME=VALUE (repeatable).
        #[arg(long = "claim", value_parser = parse_claim)]
        claims: Vec<(String, String)>,
        /// Dev mode state directory (holds the dev signing key).
        #[arg(long, env = "FEDAUTHZ_STATE_DIR")]
        state_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// `fedauthz apikey`: the key on its own line, then the entry (JSON, which is YAML) to store.
fn api_key(
    prefix: &str,
    mut entry: config::ApiKeyEntry,
    expires: Option<&str>,
    hmac_secret_file: Option<&std::path::Path>,
) -> Result<(), String> {
    if let Some(expires) = expires {
        entry.expires =
            Some(config::Timestamp::parse(expires).map_err(|e| format!("--expires: {e}"))?);
    }
    let secret = hmac_secret_file
        .map(|path| {
            fedauthz::files::read_bounded(path, 64 * 1024)
                .map_err(|err| format!("--hmac-secret-file {}: {err}", path.display()))
        })
        .transpose()?;
    let (key, hash) = fedauthz::verify::api_key::generate(prefix, &entry.id, secret.as_deref())?;
    entry.hash = hash;
    let mut json = serde_json::to_value(&entry).map_err(|e| e.to_string())?;
    if let Some(fields) = json.as_object_mut() {
        // Leave out what the entry does not set.
        fields.retain(|_, value| {
            !(value.is_null()
                || value == &serde_json::Value::Bool(false)
                || value.as_array().is_some_and(Vec::is_empty)
                || value.as_object().is_some_and(serde_json::Map::is_empty))
        });
    }
    println!(
        "# The key, shown this once (give it to the client; fedauthz stores only its digest):"
    );
    println!("{key}");
    println!("# The entry for the key set's keys (or its file):");
    println!("- {json}");
    Ok(())
}

fn parse_claim(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("expected NAME=VALUE, got {text:?}")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve {
            config,
            dev,
            state_dir,
            grpc_listen,
            admin_listen,
            log_format,
        } => serve(
            config,
            dev,
            state_dir,
            grpc_listen,
            admin_listen,
            log_format,
        ),
        Command::CheckConfig { file } => check_config(&file),
        Command::Explain {
            config,
            token,
            method,
            host,
            path,
            headers,
            context,
            principal,
            callers,
        } => {
            let caller = (!callers.is_empty()).then(|| {
                let (uris, dns_names) = callers.into_iter().partition(|c| c.contains("://"));
                fedauthz::caller::CallerIdentity { uris, dns_names }
            });
            let mut request = fedauthz::explain::ExplainRequest {
                method,
                host,
                path,
                headers,
                context_extensions: context.into_iter().collect(),
                principal,
                caller,
            };
            if let Some(token) = &token {
                request
                    .headers
                    .push(("authorization".into(), format!("Bearer {token}")));
            }
            explain(&config, request, token.as_deref())
        }
        Command::ConfigSchema => {
            println!("{}", config::json_schema());
            Ok(())
        }
        Command::Apikey {
            id,
            prefix,
            subject,
            scopes,
            roles,
            tenant,
            client,
            expires,
            hmac_secret_file,
        } => api_key(
            &prefix,
            config::ApiKeyEntry {
                id,
                hash: String::new(),
                subject,
                tenant,
                client,
                scopes,
                roles,
                groups: Vec::new(),
                attributes: Default::default(),
                not_before: None,
                expires: None,
                routes: None,
                revoked: false,
            },
            expires.as_deref(),
            hmac_secret_file.as_deref(),
        ),
        Command::DevToken {
            sub,
            aud,
            scope,
            ttl,
            claims,
            state_dir,
        } => dev_token(
            state_dir,
            DevTokenRequest {
                subject: sub,
                audiences: aud,
                scope,
                ttl,
                extra: claims,
            },
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Multi-line errors (one line per config problem, `file: field.path: message`) get a
        // heading so each problem stays on a line of its own.
        Err(message) if message.contains('\n') => {
            eprintln!("fedauthz: error:\n{message}");
            ExitCode::FAILURE
        }
        Err(message) => {
            eprintln!("fedauthz: error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn serve(
    config_path: Option<PathBuf>,
    dev_mode: bool,
    state_dir: Option<PathBuf>,
    grpc_listen: Option<SocketAddr>,
    admin_listen: Option<SocketAddr>,
    log_format: LogFormat,
) -> Result<(), String> {
    let runtime =
        tokio::runtime::Runtime::new().map_err(|err| format!("cannot start runtime: {err}"))?;
    // The OTLP gRPC exporter connects through the runtime.
    let telemetry = {
        let _runtime = runtime.enter();
        Telemetry::init(match log_format {
            LogFormat::Text => telemetry::LogFormat::Text,
            LogFormat::Json => telemetry::LogFormat::Json,
        })
        .map_err(|err| err.to_string())?
    };
    let result = serve_on(
        &runtime,
        config_path,
        dev_mode,
        state_dir,
        grpc_listen,
        admin_listen,
    );
    telemetry.shutdown();
    result
}

fn serve_on(
    runtime: &tokio::runtime::Runtime,
    config_path: Option<PathBuf>,
    dev_mode: bool,
    state_dir: Option<PathBuf>,
    grpc_listen: Option<SocketAddr>,
    admin_listen: Option<SocketAddr>,
) -> Result<(), String> {
    let (mut config, options, dev_key) = match (config_path, dev_mode) {
        (Some(path), false) => {
            let config = config::load_file(&path).map_err(|err| err.to_string())?;
            let options = ServeOptions {
                config_path: Some(path),
                dev_jwks: None,
            };
            (config, options, None)
        }
        (None, true) => {
            let dir = state_dir.unwrap_or_else(dev::default_state_dir);
            let key = DevKey::load_or_create(&dir).map_err(|err| err.to_string())?;
            let config = dev::dev_config(&key).map_err(|err| err.to_string())?;
            let jwks = key.public_jwks().map_err(|err| err.to_string())?;
            let options = ServeOptions {
                config_path: None,
                dev_jwks: Some(jwks.to_string()),
            };
            (config, options, Some(key))
        }
        _ => {
            return Err("serve needs --config FILE, or --dev for local development \
                        (never in production)"
                .into());
        }
    };
    if let Some(addr) = grpc_listen {
        config.server.grpc_listen = addr;
    }
    if let Some(addr) = admin_listen {
        config.server.admin_listen = addr;
    }
    if dev_key.is_some() {
        for addr in [config.server.grpc_listen, config.server.admin_listen] {
            if !addr.ip().is_loopback() {
                return Err(format!("dev mode only listens on loopback; {addr} is not"));
            }
        }
    }
    runtime.block_on(async move {
        let server = Server::bind(config, options)
            .await
            .map_err(|err| err.to_string())?;
        if let Some(key) = &dev_key {
            print_dev_banner(&server, key);
        }
        server
            .run(shutdown_signal())
            .await
            .map_err(|err| err.to_string())
    })
}

fn print_dev_banner(server: &Server, key: &DevKey) {
    let grpc = server.grpc_addr();
    let admin = server.admin_addr();
    eprintln!(
        "
  ************************************************************************
  *  fedauthz DEV MODE: for local use only. It trusts a locally generated *
  *  key that anyone with this machine's files can sign tokens with.      *
  ************************************************************************
  gRPC ext_authz Check : {grpc}
  admin                : http://{admin}/healthz  /readyz  /dev/jwks.json
  dev issuer           : {issuer}   audience: {audience}
  dev signing key      : {key}

  Try it:
    TOKEN=$(fedauthz dev-token --sub alice --scope \"orders:read\")
    point Envoy's ext_authz filter at {grpc} (README: Envoy filter snippet)
    and send:  curl -H \"authorization: Bearer $TOKEN\" http://<envoy listener>/
",
        issuer = dev::DEV_ISSUER,
        audience = dev::DEV_AUDIENCE,
        key = key.path().display(),
    );
}

fn check_config(file: &Path) -> Result<(), String> {
    let config: Config = config::load_file(file).map_err(|err| err.to_string())?;
    let invalid = |errors| {
        config::ConfigError::Invalid {
            file: file.display().to_string(),
            errors,
        }
        .to_string()
    };
    let mut errors = source::prepare(&config).err().unwrap_or_default();
    if let Some(Err(keys)) = config
        .decryption
        .as_ref()
        .map(fedauthz::verify::jwe::Decrypter::load)
    {
        errors.extend(keys);
    }
    // Signing keys open as the server would open them (a PKCS#11 PIN or key label is checked
    // here), and the rotation rules that need the clock run now.
    match fedauthz::response::mint::Minter::build(
        &config,
        None,
        fedauthz::response::mint::MintStats::default(),
        unix_now(),
    ) {
        Ok(built) => {
            for warning in built.iter().flat_map(|b| &b.warnings) {
                eprintln!("fedauthz: warning: {}: {warning}", file.display());
            }
        }
        Err(keys) => errors.extend(keys),
    }
    match fedauthz::server::tls::prepare(&config.server, unix_now()) {
        Ok(prepared) => {
            for warning in prepared.warnings {
                eprintln!("fedauthz: warning: {}: {warning}", file.display());
            }
        }
        Err(tls) => errors.extend(tls),
    }
    if !errors.is_empty() {
        return Err(invalid(errors));
    }
    println!(
        "{}: OK ({} issuer{})",
        file.display(),
        config.issuers.len(),
        if config.issuers.len() == 1 { "" } else { "s" }
    );
    Ok(())
}

/// `explain`: loads the configuration (fetching keys when it must, up to 10 s), runs the
/// request through the same check the server runs, and prints the trace.
fn explain(
    path: &Path,
    request: fedauthz::explain::ExplainRequest,
    token: Option<&str>,
) -> Result<(), String> {
    let config = config::load_file(path).map_err(|err| err.to_string())?;
    let runtime =
        tokio::runtime::Runtime::new().map_err(|err| format!("cannot start runtime: {err}"))?;
    runtime.block_on(async move {
        let changed = std::sync::Arc::new(tokio::sync::Notify::new());
        let generation =
            fedauthz::pipeline::Generation::build(config, None, &changed).map_err(|errors| {
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            })?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !generation.is_ready() && tokio::time::Instant::now() < deadline {
            let _ = tokio::time::timeout_at(deadline, changed.notified()).await;
        }
        if !generation.is_ready() {
            eprintln!(
                "fedauthz: warning: no keys yet for {}",
                generation.keys.missing().join(", ")
            );
        }
        let checked = fedauthz::service::check_detailed(
            &generation.pipeline,
            &request.to_check_request(),
            request.caller.as_ref(),
        )
        .await;
        print!("{}", fedauthz::explain::render(&request, token, &checked));
        Ok(())
    })
}

fn dev_token(state_dir: Option<PathBuf>, request: DevTokenRequest) -> Result<(), String> {
    let dir = state_dir.unwrap_or_else(dev::default_state_dir);
    let key = DevKey::load_or_create(&dir).map_err(|err| err.to_string())?;
    let token = dev::mint(&key, &request, unix_now()).map_err(|err| err.to_string())?;
    println!("{token}");
    Ok(())
}
