//! Checks of a configuration that need the parts it configures: the token keys load
//! (auth), the flags file reads (flags), the Redis URL is one the broker can use. They
//! run with [`Config::load`]'s own checks before anything binds, so a configuration
//! that cannot work is refused at start (exit 64) and by `--check-config`; they live
//! here, above the parts, so that the configuration imports none of them.

use crate::auth::Authenticator;
use crate::config::{Config, ConfigError};
use crate::flags::Flags;
use std::path::Path;

/// Loads the configuration from its layers (see [`Config::load`]) and runs every check.
pub fn load_config(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let config = Config::load(file, env)?;
    check_config(&config)?;
    Ok(config)
}

/// The checks of a loaded configuration that build the parts it configures.
pub fn check_config(config: &Config) -> Result<(), ConfigError> {
    if !config.redis_url.is_empty() {
        crate::broker::check_redis_url(&config.redis_url).map_err(|message| {
            ConfigError::Invalid {
                key: "redis_url",
                message,
            }
        })?;
    }
    Authenticator::from_config(&config.auth).map_err(|e| ConfigError::Invalid {
        key: match e.key {
            "service_tokens" => "auth.service_tokens",
            _ => "auth.jwt_rs256_public_key_file",
        },
        message: e.message,
    })?;
    Flags::from_config(&config.flags).map_err(|e| ConfigError::Invalid {
        key: "flags.file",
        message: e.to_string(),
    })?;
    Ok(())
}
