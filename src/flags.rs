//! Feature flags with percentage rollout.
//!
//! A flag is on for a percentage of users. Whether it is on for one user depends only on
//! the flag's name and the user's id, through a stable hash (SHA-256), so a user's answer
//! does not flip-flop between connections or instances, and raising the percentage
//! (10 → 50 → 100) only ever adds users. Percentages come from `[flags]` in the
//! configuration and, when `flags.file` is set, from that file, re-read on SIGHUP and
//! whenever it changes.

use crate::config::FlagsConfig;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// The flags roomcast knows, with what each one changes.
pub const KNOWN: &[(&str, &str)] = &[(
    COALESCE_WRITES,
    "wait up to 2 ms after a frame is queued to a client so that frames arriving meanwhile \
     share one socket write: less CPU per delivery under load, up to 2 ms more latency",
)];

/// Batch socket writes more aggressively for the connection.
pub const COALESCE_WRITES: &str = "coalesce_writes";

/// Current rollout percentages.
#[derive(Clone)]
pub struct Flags {
    inner: Arc<Inner>,
}

struct Inner {
    base: BTreeMap<String, u8>,
    file: Option<PathBuf>,
    current: RwLock<BTreeMap<String, u8>>,
}

/// A flags file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FlagsError {
    /// Unreadable.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not `name = percent` lines of known flags.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The bucket (0..100) of `key` for `flag`.
pub fn bucket(flag: &str, key: &str) -> u8 {
    let digest = Sha256::digest(format!("{flag}\u{0}{key}").as_bytes());
    (u16::from_be_bytes([digest[0], digest[1]]) % 100) as u8
}

impl Flags {
    /// Flags from `[flags]`, then the file if any (which must be valid at start).
    pub fn from_config(config: &FlagsConfig) -> Result<Flags, FlagsError> {
        let base = BTreeMap::from([(COALESCE_WRITES.to_owned(), config.coalesce_writes)]);
        let file = (!config.file.is_empty()).then(|| PathBuf::from(&config.file));
        let flags = Flags {
            inner: Arc::new(Inner {
                current: RwLock::new(base.clone()),
                base,
                file,
            }),
        };
        flags.reload()?;
        Ok(flags)
    }

    /// Whether `flag` is on for `key` (a user id, a service name).
    pub fn enabled(&self, flag: &str, key: &str) -> bool {
        let percent = self.percent(flag);
        let on = bucket(flag, key) < percent;
        metrics::counter!("roomcast_feature_flag_evaluations_total", "flag" => flag.to_owned(), "enabled" => if on { "true" } else { "false" })
            .increment(1);
        on
    }

    /// The rollout percentage of `flag` (0 for unknown flags).
    pub fn percent(&self, flag: &str) -> u8 {
        self.inner
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(flag)
            .copied()
            .unwrap_or(0)
    }

    /// Every flag that is on for `key`.
    pub fn enabled_for(&self, key: &str) -> Vec<String> {
        KNOWN
            .iter()
            .filter(|(flag, _)| self.enabled(flag, key))
            .map(|(flag, _)| flag.to_string())
            .collect()
    }

    /// Re-reads the file (if any) over the configured values. On an error the current
    /// percentages stay as they are.
    pub fn reload(&self) -> Result<(), FlagsError> {
        let mut next = self.inner.base.clone();
        if let Some(path) = &self.inner.file {
            next.extend(read_file(path)?);
        }
        for (flag, percent) in &next {
            metrics::gauge!("roomcast_feature_flag_rollout_percent", "flag" => flag.clone())
                .set(f64::from(*percent));
        }
        *self
            .inner
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner()) = next;
        Ok(())
    }

    /// Reloads on SIGHUP and whenever the file's modification time changes (checked every
    /// `poll`). Must be called inside a tokio runtime.
    pub fn watch(&self, poll: Duration) {
        let flags = self.clone();
        tokio::spawn(async move {
            let mut hangup = hangup_signals();
            let mut seen = flags.inner.file.as_deref().and_then(modified);
            let mut tick = tokio::time::interval(poll);
            loop {
                let changed = tokio::select! {
                    _ = tick.tick() => {
                        let now = flags.inner.file.as_deref().and_then(modified);
                        let changed = now != seen;
                        seen = now;
                        changed
                    }
                    _ = next_hangup(&mut hangup) => true,
                };
                if changed {
                    match flags.reload() {
                        Ok(()) => {
                            tracing::info!(flags = ?flags.snapshot(), "feature flags reloaded")
                        }
                        Err(err) => tracing::warn!(error = %err, "feature flags not reloaded"),
                    }
                }
            }
        });
    }

    /// The current percentages.
    pub fn snapshot(&self) -> BTreeMap<String, u8> {
        self.inner
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// `name = percent` lines (TOML) of known flags.
fn read_file(path: &Path) -> Result<BTreeMap<String, u8>, FlagsError> {
    let invalid = |message: String| FlagsError::Invalid {
        path: path.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|source| FlagsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| invalid(format!("not TOML: {e}")))?;
    let mut percentages = BTreeMap::new();
    for (name, value) in table {
        if !KNOWN.iter().any(|(known, _)| *known == name) {
            return Err(invalid(format!("unknown flag {name:?}")));
        }
        let percent = value
            .as_integer()
            .filter(|p| (0..=100).contains(p))
            .ok_or_else(|| invalid(format!("{name}: expected a percentage from 0 to 100")))?;
        percentages.insert(name, percent as u8);
    }
    Ok(percentages)
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = ();

#[cfg(unix)]
fn hangup_signals() -> Hangup {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}
#[cfg(not(unix))]
fn hangup_signals() -> Hangup {}

#[cfg(unix)]
async fn next_hangup(hangup: &mut Hangup) {
    match hangup {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending().await,
    }
}
#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangup) {
    std::future::pending().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(percent: u8) -> Flags {
        Flags::from_config(&FlagsConfig {
            file: String::new(),
            coalesce_writes: percent,
        })
        .unwrap()
    }

    fn share(flags: &Flags) -> f64 {
        let on = (0..10_000)
            .filter(|i| flags.enabled(COALESCE_WRITES, &format!("user-{i}")))
            .count();
        on as f64 / 10_000.0
    }

    #[test]
    fn rollout_percentages_are_met() {
        assert_eq!(share(&flags(0)), 0.0);
        assert!(
            (share(&flags(10)) - 0.10).abs() < 0.015,
            "{}",
            share(&flags(10))
        );
        assert!(
            (share(&flags(50)) - 0.50).abs() < 0.02,
            "{}",
            share(&flags(50))
        );
        assert_eq!(share(&flags(100)), 1.0);
    }

    #[test]
    fn a_user_keeps_the_answer_and_raising_only_adds_users() {
        let (ten, fifty) = (flags(10), flags(50));
        for i in 0..2_000 {
            let user = format!("user-{i}");
            assert_eq!(
                ten.enabled(COALESCE_WRITES, &user),
                ten.enabled(COALESCE_WRITES, &user)
            );
            if ten.enabled(COALESCE_WRITES, &user) {
                assert!(
                    fifty.enabled(COALESCE_WRITES, &user),
                    "{user} lost the flag at 50%"
                );
            }
        }
    }

    #[test]
    fn the_file_overrides_and_reloads() {
        let path =
            std::env::temp_dir().join(format!("roomcast-flags-{}.toml", uuid::Uuid::new_v4()));
        std::fs::write(&path, "coalesce_writes = 30\n").unwrap();
        let flags = Flags::from_config(&FlagsConfig {
            file: path.display().to_string(),
            coalesce_writes: 5,
        })
        .unwrap();
        assert_eq!(flags.percent(COALESCE_WRITES), 30);
        std::fs::write(&path, "coalesce_writes = 70\n").unwrap();
        flags.reload().unwrap();
        assert_eq!(flags.percent(COALESCE_WRITES), 70);
        std::fs::write(&path, "coalesce_writes = 170\n").unwrap();
        assert!(flags.reload().is_err());
        assert_eq!(
            flags.percent(COALESCE_WRITES),
            70,
            "a bad file changes nothing"
        );
        std::fs::write(&path, "teleport = 1\n").unwrap();
        assert!(flags.reload().is_err());
        let _ = std::fs::remove_file(path);
    }
}
