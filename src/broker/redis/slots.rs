//! Which master of a Redis Cluster owns which hash slot: the slot of a key, the slot map
//! read from `CLUSTER SLOTS`, and the per-master probe channels derived from it.
//!
//! Pure functions over values, so the rules are unit-tested without a cluster.

use redis::Value;
use std::collections::BTreeMap;

/// Number of hash slots of a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// The hash slot of a key or channel name: CRC16 (XMODEM) of its hash tag — the part
/// between the first `{` and the next `}`, when that part is not empty — else of the
/// whole name, modulo 16384 (the Redis Cluster specification's rule).
pub fn slot_of(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(key)) % SLOTS
}

/// The masters of a cluster and their slot ranges, as one node answered `CLUSTER SLOTS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotMap {
    /// First slot of each range → (last slot, master address `host:port`).
    ranges: BTreeMap<u16, (u16, String)>,
}

impl SlotMap {
    /// Builds a map from `(first, last, master)` ranges.
    pub fn from_ranges(ranges: impl IntoIterator<Item = (u16, u16, String)>) -> SlotMap {
        SlotMap {
            ranges: ranges
                .into_iter()
                .map(|(first, last, master)| (first, (last, master)))
                .collect(),
        }
    }

    /// Parses a `CLUSTER SLOTS` reply: `[[first, last, [host, port, id, …], replicas…], …]`.
    pub fn parse(reply: &Value) -> Result<SlotMap, String> {
        let Value::Array(entries) = reply else {
            return Err("CLUSTER SLOTS: not an array".into());
        };
        let mut ranges = Vec::with_capacity(entries.len());
        for entry in entries {
            let Value::Array(fields) = entry else {
                return Err("CLUSTER SLOTS: an entry is not an array".into());
            };
            let (Some(first), Some(last), Some(Value::Array(master))) =
                (fields.first(), fields.get(1), fields.get(2))
            else {
                return Err("CLUSTER SLOTS: short entry".into());
            };
            let (first, last) = (slot_value(first)?, slot_value(last)?);
            let host = match master.first() {
                Some(Value::BulkString(host)) => String::from_utf8_lossy(host).into_owned(),
                Some(Value::SimpleString(host)) => host.clone(),
                _ => return Err("CLUSTER SLOTS: master without a host".into()),
            };
            let port = match master.get(1) {
                Some(Value::Int(port)) => *port,
                _ => return Err("CLUSTER SLOTS: master without a port".into()),
            };
            if host.is_empty() || host == "?" {
                // A node whose address is not known yet (just joined): no owner to use.
                continue;
            }
            ranges.push((first, last, format!("{host}:{port}")));
        }
        Ok(SlotMap::from_ranges(ranges))
    }

    /// The master that owns `slot`, if any.
    pub fn owner(&self, slot: u16) -> Option<&str> {
        let (_, (last, master)) = self.ranges.range(..=slot).next_back()?;
        (slot <= *last).then_some(master.as_str())
    }

    /// Whether every slot has an owner (else part of the cluster cannot be served).
    pub fn covers_all(&self) -> bool {
        let mut next = 0u32;
        for (&first, (last, _)) in &self.ranges {
            if u32::from(first) > next {
                return false;
            }
            next = next.max(u32::from(*last) + 1);
        }
        next >= u32::from(SLOTS)
    }

    /// The masters, each once, in slot order.
    pub fn masters(&self) -> Vec<String> {
        let mut masters: Vec<String> = Vec::new();
        for (_, master) in self.ranges.values() {
            if !masters.contains(master) {
                masters.push(master.clone());
            }
        }
        masters
    }

    /// The probe channel of instance `node_id` on `master`: the first name of the form
    /// `{prefix}:{probe-NODE-K}:ch` (K = 0, 1, …) whose slot `master` owns, so that a
    /// probe published there travels through that master alone. `None` when the master
    /// owns no slot.
    pub fn probe_channel(&self, prefix: &str, node_id: &str, master: &str) -> Option<String> {
        if !self.ranges.values().any(|(_, m)| m == master) {
            return None;
        }
        // A master owns at least one slot, so a name hashing into it exists; the CRC
        // spreads names evenly, so with one slot of 16,384 about 16,384 tries suffice.
        (0u32..1 << 20).find_map(|k| {
            let tag = format!("probe-{node_id}-{k}");
            (self.owner(slot_of(tag.as_bytes())) == Some(master))
                .then(|| format!("{prefix}:{{{tag}}}:ch"))
        })
    }
}

fn slot_value(value: &Value) -> Result<u16, String> {
    match value {
        Value::Int(n) if (0..i64::from(SLOTS)).contains(n) => Ok(*n as u16),
        _ => Err("CLUSTER SLOTS: bad slot number".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_cluster_specification() {
        // Values that `CLUSTER KEYSLOT` answers.
        assert_eq!(slot_of(b"123456789"), 12739);
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(slot_of(b"{user1000}.following"), slot_of(b"user1000"));
        assert_eq!(slot_of(b"rc:{project:42}:ch"), slot_of(b"project:42"));
        // An empty tag does not count: the whole name is hashed.
        assert_eq!(slot_of(b"foo{}{bar}"), 8363);
        // Only the first tag counts.
        assert_eq!(slot_of(b"foo{{bar}}zap"), 4015);
        assert_eq!(slot_of(b"{bar"), 4015);
    }

    fn three_masters() -> SlotMap {
        SlotMap::from_ranges([
            (0, 5460, "127.0.0.1:7000".to_owned()),
            (5461, 10922, "127.0.0.1:7001".to_owned()),
            (10923, 16383, "127.0.0.1:7002".to_owned()),
        ])
    }

    #[test]
    fn owners_and_coverage() {
        let map = three_masters();
        assert_eq!(map.owner(0), Some("127.0.0.1:7000"));
        assert_eq!(map.owner(5461), Some("127.0.0.1:7001"));
        assert_eq!(map.owner(16383), Some("127.0.0.1:7002"));
        assert!(map.covers_all());
        assert_eq!(map.masters().len(), 3);
        let holed =
            SlotMap::from_ranges([(0, 5460, "a:1".to_owned()), (5462, 16383, "b:1".to_owned())]);
        assert_eq!(holed.owner(5461), None);
        assert!(!holed.covers_all());
        assert!(!SlotMap::default().covers_all());
    }

    #[test]
    fn probe_channels_land_on_their_master() {
        let map = three_masters();
        for master in map.masters() {
            let channel = map.probe_channel("rc", "node-1", &master).unwrap();
            assert!(channel.starts_with("rc:{probe-node-1-"), "{channel}");
            assert_eq!(
                map.owner(slot_of(channel.as_bytes())),
                Some(master.as_str())
            );
        }
        assert_eq!(map.probe_channel("rc", "n", "nobody:1"), None);
        // A master with a single slot still gets one.
        let tiny = SlotMap::from_ranges([
            (0, 99, "a:1".to_owned()),
            (100, 100, "b:1".to_owned()),
            (101, 16383, "a:1".to_owned()),
        ]);
        let channel = tiny.probe_channel("rc", "n", "b:1").unwrap();
        assert_eq!(slot_of(channel.as_bytes()), 100);
    }

    #[test]
    fn parses_cluster_slots() {
        let node = |host: &str, port: i64| {
            Value::Array(vec![
                Value::BulkString(host.as_bytes().to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
                Value::Map(vec![]),
            ])
        };
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(8000),
                node("127.0.0.1", 7000),
                node("127.0.0.1", 7003),
            ]),
            Value::Array(vec![
                Value::Int(8001),
                Value::Int(16383),
                node("127.0.0.1", 7001),
            ]),
        ]);
        let map = SlotMap::parse(&reply).unwrap();
        assert_eq!(map.owner(8000), Some("127.0.0.1:7000"));
        assert_eq!(map.owner(8001), Some("127.0.0.1:7001"));
        assert!(map.covers_all());
        assert!(SlotMap::parse(&Value::Int(1)).is_err());
        assert!(SlotMap::parse(&Value::Array(vec![Value::Array(vec![Value::Int(0)])])).is_err());
    }
}
