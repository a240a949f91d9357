//! Merging the three configuration layers into one TOML table. Every key of a later
//! layer must already exist in the defaults, so a typo is an error, not a silent no-op.

use super::{ConfigError, DEFAULT_TOML};
use std::path::Path;
use toml::{Table, Value};

/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "ROOMCAST_";
/// Separator between a section and a key in an environment variable name.
pub const ENV_SECTION_SEPARATOR: &str = "__";

/// Defaults, overlaid with `file`, overlaid with the `ROOMCAST_*` entries of `env`
/// (where `DATABASE_URL` stands for `ROOMCAST_DATABASE_URL` unless that is set).
pub fn merged(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Table, ConfigError> {
    let mut table: Table = DEFAULT_TOML
        .parse()
        .expect("config/default.toml is valid TOML");
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let overlay: Table = text.parse().map_err(|source| ConfigError::Syntax {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        overlay_table(&mut table, overlay, "", &path.display().to_string())?;
    }
    let mut env: Vec<(String, String)> = with_database_url_alias(env)
        .into_iter()
        .filter(|(name, _)| name.starts_with(ENV_PREFIX) && !is_service_link(name))
        .collect();
    env.sort();
    for (name, value) in env {
        apply_env(&mut table, &name, value)?;
    }
    Ok(table)
}

fn overlay_table(
    target: &mut Table,
    overlay: Table,
    prefix: &str,
    origin: &str,
) -> Result<(), ConfigError> {
    for (key, value) in overlay {
        let path = format!("{prefix}{key}");
        let Some(slot) = target.get_mut(&key) else {
            return Err(ConfigError::UnknownKey {
                key: path,
                origin: origin.to_owned(),
            });
        };
        match (slot, value) {
            (Value::Table(section), Value::Table(inner)) => {
                overlay_table(section, inner, &format!("{path}."), origin)?
            }
            (Value::Table(_), _) => {
                return Err(ConfigError::Type {
                    key: path,
                    message: format!("is a section, not a value (in {origin})"),
                });
            }
            (_, Value::Table(_)) => {
                return Err(ConfigError::Type {
                    key: path,
                    message: format!("is a value, not a section (in {origin})"),
                });
            }
            (slot, value) => *slot = value,
        }
    }
    Ok(())
}

/// Whether `name` is a variable Kubernetes injects for a Service named `roomcast`
/// (`ROOMCAST_SERVICE_HOST`, `ROOMCAST_PORT_8080_TCP`, …): none of them is a key of ours,
/// and failing on them would crash-loop every pod in a namespace with such a Service.
fn is_service_link(name: &str) -> bool {
    let rest = &name[ENV_PREFIX.len()..];
    rest == "PORT"
        || rest.starts_with("PORT_")
        || rest.starts_with("SERVICE_HOST")
        || rest.starts_with("SERVICE_PORT")
}

/// Applies `ROOMCAST_SECTION__KEY=value`. The value is read as the type the default has,
/// so `ROOMCAST_NODE_ID=42` stays a string and `ROOMCAST_CONNECTION__MAX_ROOMS=42` is a
/// number.
fn apply_env(table: &mut Table, name: &str, raw: String) -> Result<(), ConfigError> {
    let rest = &name[ENV_PREFIX.len()..];
    let path: Vec<String> = rest
        .split(ENV_SECTION_SEPARATOR)
        .map(str::to_ascii_lowercase)
        .collect();
    let dotted = path.join(".");
    let unknown = || ConfigError::UnknownKey {
        key: dotted.clone(),
        origin: name.to_owned(),
    };
    let (last, sections) = path.split_last().ok_or_else(unknown)?;
    let mut target = &mut *table;
    for section in sections {
        target = match target.get_mut(section) {
            Some(Value::Table(inner)) => inner,
            _ => return Err(unknown()),
        };
    }
    let slot = target.get_mut(last).ok_or_else(unknown)?;
    let type_error = |expected: &str| ConfigError::Type {
        key: dotted.clone(),
        message: format!("expected {expected}, got {raw:?} (from {name})"),
    };
    *slot = match slot {
        Value::String(_) => Value::String(raw.clone()),
        Value::Integer(_) => {
            Value::Integer(raw.trim().parse().map_err(|_| type_error("an integer"))?)
        }
        Value::Float(_) => Value::Float(raw.trim().parse().map_err(|_| type_error("a number"))?),
        Value::Boolean(_) => Value::Boolean(match raw.trim() {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => return Err(type_error("true or false")),
        }),
        Value::Table(_) => {
            return Err(ConfigError::Type {
                key: dotted.clone(),
                message: format!(
                    "is a section; set its keys as {name}{ENV_SECTION_SEPARATOR}<KEY>"
                ),
            });
        }
        // Lists (of strings: every list key is one) are written comma separated.
        Value::Array(_) => Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| Value::String(item.to_owned()))
                .collect(),
        ),
        Value::Datetime(_) => {
            return Err(ConfigError::Type {
                key: dotted.clone(),
                message: format!("cannot be set from the environment ({name})"),
            });
        }
    };
    Ok(())
}

/// `env` with the conventional DATABASE_URL standing for ROOMCAST_DATABASE_URL unless
/// that is set.
fn with_database_url_alias(
    env: impl IntoIterator<Item = (String, String)>,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = env.into_iter().collect();
    if !env.iter().any(|(k, _)| k == "ROOMCAST_DATABASE_URL")
        && let Some((_, url)) = env.iter().find(|(k, _)| k == "DATABASE_URL")
    {
        env.push(("ROOMCAST_DATABASE_URL".into(), url.clone()));
    }
    env
}
