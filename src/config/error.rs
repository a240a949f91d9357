//! What a configuration that cannot be used fails with, and the one-line check every
//! section's `validate` is written with.

use std::path::PathBuf;

/// A configuration that cannot be used, naming where the problem is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {source}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A key that does not exist (in a file or an environment variable).
    #[error("unknown configuration key `{key}` (from {origin})")]
    UnknownKey {
        /// Dotted key path.
        key: String,
        /// The file path or environment variable name.
        origin: String,
    },
    /// A value of the wrong type or shape.
    #[error("configuration key `{key}`: {message}")]
    Type {
        /// Dotted key path.
        key: String,
        /// What was wrong.
        message: String,
    },
    /// A value outside its allowed range.
    #[error("configuration key `{key}`: {message}")]
    Invalid {
        /// Dotted key path.
        key: &'static str,
        /// What was wrong.
        message: String,
    },
}

impl ConfigError {
    /// A value of `key` outside its allowed range.
    pub(super) fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key,
            message: message.into(),
        }
    }
}

/// `Ok` when `ok`, else the key and what it must be.
pub(super) fn check(ok: bool, key: &'static str, message: &str) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::invalid(key, message))
    }
}
