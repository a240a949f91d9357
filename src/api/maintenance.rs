//! Periodic housekeeping of the tracker's database: audit retention (the only deletion
//! the audit log allows), expired idempotency keys, and published outbox rows.

use crate::config::AuditConfig;
use crate::store::{Store, now_ms};
use std::time::Duration;

/// Idempotency keys are honoured for a day.
const IDEMPOTENCY_TTL_MS: i64 = 24 * 3600 * 1000;
/// Published outbox rows are kept a day for inspection.
const OUTBOX_KEEP_MS: i64 = 24 * 3600 * 1000;

/// Runs the jobs every `retention_interval_secs`, starting now.
pub fn spawn_maintenance(store: Store, config: AuditConfig) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(config.retention_interval_secs));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = now_ms();
            let cutoff = now - (config.retention_days as i64) * 24 * 3600 * 1000;
            match store.purge_audit(cutoff).await {
                Ok(deleted) => {
                    metrics::counter!("roomcast_audit_retention_deleted_total").increment(deleted);
                    if deleted > 0 {
                        tracing::info!(deleted, "audit retention removed expired entries");
                    }
                }
                Err(err) => tracing::warn!(error = %err, "audit retention failed"),
            }
            if let Err(err) = store.purge_idempotency_keys(now - IDEMPOTENCY_TTL_MS).await {
                tracing::warn!(error = %err, "idempotency key cleanup failed");
            }
            if let Err(err) = store.purge_outbox(now - OUTBOX_KEEP_MS).await {
                tracing::warn!(error = %err, "outbox cleanup failed");
            }
        }
    });
}
