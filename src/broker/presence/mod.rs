//! Where presence sets live: the [`PresenceStore`] contract, with an in-process
//! implementation ([`memory`]) for the embedded broker and a Redis one beside the Redis
//! broker. The presence hub ([`crate::presence`]) is written against the trait.

pub mod memory;

use super::BrokerError;
use crate::protocol::{PresenceEntry, RoomName};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Counts of a room's presence set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceStats {
    /// Entries (connections).
    pub clients: u64,
    /// Distinct users among them.
    pub users: u64,
}

/// A read of a room's set: its version, and the entries when the version differs from
/// the one the reader knew.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Changes with every change of the set; never repeats for a room, also across a
    /// Redis restart.
    pub version: u64,
    /// The live entries (expired ones are dropped by the read), unless unchanged.
    pub entries: Option<Vec<PresenceEntry>>,
}

/// Where presence sets live. Every implementation drops entries `ttl` after they were
/// last written, and every read drops expired entries before it answers.
#[async_trait]
pub trait PresenceStore: Send + Sync + 'static {
    /// Inserts or re-writes entries (keyed by `conn`); each lives `ttl` from now.
    async fn add(
        &self,
        room: &RoomName,
        entries: &[PresenceEntry],
        ttl: Duration,
    ) -> Result<(), BrokerError>;

    /// Removes the entries of these connections.
    async fn remove(&self, room: &RoomName, conns: &[String]) -> Result<(), BrokerError>;

    /// The room's version, with its entries unless `known` is that version.
    async fn read(&self, room: &RoomName, known: Option<u64>) -> Result<Snapshot, BrokerError>;

    /// Counts, without reading the entries.
    async fn stats(&self, room: &RoomName) -> Result<PresenceStats, BrokerError>;
}
