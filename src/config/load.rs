//! Reading the YAML file into [`Config`] with errors that name the file and the field path.

use std::fmt;
use std::path::Path;

use super::Config;

/// One problem with one field, e.g. `issuers[2].audiences: must not be empty`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the field in the document (`issuers[2].audiences`); empty for the whole file.
    pub path: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl FieldError {
    /// An error at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file was read but is not a valid configuration.
    #[error("{}", render_invalid(file, errors))]
    Invalid {
        /// The file.
        file: String,
        /// Every problem found, each with its field path.
        errors: Vec<FieldError>,
    },
}

impl ConfigError {
    /// The field errors, if the file was readable.
    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            Self::Read { .. } => &[],
            Self::Invalid { errors, .. } => errors,
        }
    }
}

fn render_invalid(file: &str, errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|err| format!("{file}: {err}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads, parses and validates a configuration file.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: file.clone(),
        source,
    })?;
    parse_yaml(&text, &file)
}

/// Parses and validates configuration text; `file` names it in error messages.
pub fn parse_yaml(text: &str, file: &str) -> Result<Config, ConfigError> {
    let invalid = |errors| ConfigError::Invalid {
        file: file.to_owned(),
        errors,
    };
    let mut failed_at: Option<String> = None;
    let parsed = serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize::<_, Config>(de).map_err(|err| {
            failed_at = Some(err.path().to_string());
            err.into_inner()
        })
    });
    let config = match parsed {
        Ok(config) => config,
        Err(err) => {
            let path = failed_at.filter(|p| p != ".").unwrap_or_default();
            return Err(invalid(vec![FieldError::new(
                path,
                one_line(&err.to_string()),
            )]));
        }
    };
    let errors = super::validate(&config);
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(invalid(errors))
    }
}

/// YAML errors may carry a multi-line source snippet; keep messages to one line each.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}
