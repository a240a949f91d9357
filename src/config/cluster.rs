//! `[cluster]`: how an instance announces itself to the others, and when it sheds
//! connections to even out the load.

use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;

/// `[cluster]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The WebSocket URL clients use to reach this instance; empty: derived from
    /// `listen` unless that is a wildcard address.
    pub advertise_url: String,
    /// How often the instance announces itself (ms).
    pub announce_interval_ms: u64,
    /// An instance not heard from for this long is dropped (ms).
    pub member_ttl_ms: u64,
    /// Whether an instance above the cluster's mean sheds connections.
    pub rebalance: bool,
    /// Above the mean by more than this percentage of the mean...
    pub rebalance_margin_percent: u64,
    /// ...and by more than this many connections...
    pub rebalance_margin_min: u64,
    /// ...for this long (ms), the instance sheds...
    pub rebalance_after_ms: u64,
    /// ...this percentage of its connections per second (at least one) until it is down
    /// to the mean.
    pub rebalance_rate_percent: f64,
}

impl ClusterConfig {
    /// Checks ranges; the error names the key.
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if !(100..=60_000).contains(&self.announce_interval_ms) {
            return Err((
                "cluster.announce_interval_ms",
                "must be between 100 and 60000",
            ));
        }
        if self.member_ttl_ms < 2 * self.announce_interval_ms {
            return Err((
                "cluster.member_ttl_ms",
                "must be at least twice cluster.announce_interval_ms",
            ));
        }
        if !(self.rebalance_rate_percent > 0.0 && self.rebalance_rate_percent <= 100.0) {
            return Err((
                "cluster.rebalance_rate_percent",
                "must be above 0 and at most 100",
            ));
        }
        let url = &self.advertise_url;
        if !url.is_empty()
            && !((url.starts_with("ws://") || url.starts_with("wss://")) && url.len() > 6)
        {
            return Err((
                "cluster.advertise_url",
                "must be empty or a WebSocket URL such as wss://node-1.example.com/ws",
            ));
        }
        Ok(())
    }

    /// The announcement interval.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.announce_interval_ms)
    }

    /// The membership TTL.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.member_ttl_ms)
    }

    /// The URL this instance announces: the configured one, else `ws://{bound}/ws`
    /// (`wss://` with `tls`) when the listener is bound to a specific address, else none.
    pub fn advertise_url(&self, bound: SocketAddr, tls: bool) -> Option<String> {
        let scheme = if tls { "wss" } else { "ws" };
        if !self.advertise_url.is_empty() {
            Some(self.advertise_url.clone())
        } else if bound.ip().is_unspecified() {
            None
        } else {
            Some(format!("{scheme}://{bound}/ws"))
        }
    }
}
