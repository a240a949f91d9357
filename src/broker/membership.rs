//! Where instances announce themselves: one record per instance, dropped `ttl` after its
//! last announcement. The embedded broker's store is in process (it knows only its own
//! instance); the Redis broker's is one hash shared by every instance.

use crate::broker::BrokerError;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One instance's record as read back, with how long ago it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    /// Milliseconds since the record was written (by the store's clock).
    pub age_ms: u64,
    /// The record (JSON of a [`super::Member`]).
    pub record: Vec<u8>,
}

/// Where membership records live. Every read leaves out (and drops) records older than
/// `ttl`.
#[async_trait]
pub trait MembershipStore: Send + Sync + 'static {
    /// Writes `id`'s record, then reads every live one (this one included).
    async fn announce(
        &self,
        id: &str,
        record: &[u8],
        ttl: Duration,
    ) -> Result<Vec<Announcement>, BrokerError>;

    /// Reads every live record.
    async fn read(&self, ttl: Duration) -> Result<Vec<Announcement>, BrokerError>;

    /// Removes `id`'s record (an instance that stops).
    async fn leave(&self, id: &str) -> Result<(), BrokerError>;
}

/// The in-process store of the embedded broker.
#[derive(Default)]
pub struct MemoryMembership {
    records: Mutex<HashMap<String, (Instant, Vec<u8>)>>,
}

impl MemoryMembership {
    fn live(&self, ttl: Duration) -> Vec<Announcement> {
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records.retain(|_, (written, _)| written.elapsed() <= ttl);
        records
            .values()
            .map(|(written, record)| Announcement {
                age_ms: written.elapsed().as_millis() as u64,
                record: record.clone(),
            })
            .collect()
    }
}

#[async_trait]
impl MembershipStore for MemoryMembership {
    async fn announce(
        &self,
        id: &str,
        record: &[u8],
        ttl: Duration,
    ) -> Result<Vec<Announcement>, BrokerError> {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_owned(), (Instant::now(), record.to_vec()));
        Ok(self.live(ttl))
    }

    async fn read(&self, ttl: Duration) -> Result<Vec<Announcement>, BrokerError> {
        Ok(self.live(ttl))
    }

    async fn leave(&self, id: &str) -> Result<(), BrokerError> {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_expire_and_leave() {
        let store = MemoryMembership::default();
        let ttl = Duration::from_millis(50);
        store.announce("a", b"{}", ttl).await.unwrap();
        let live = store.announce("b", b"[]", ttl).await.unwrap();
        assert_eq!(live.len(), 2);
        store.leave("a").await.unwrap();
        assert_eq!(store.read(ttl).await.unwrap().len(), 1);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(store.read(ttl).await.unwrap().is_empty());
    }
}
