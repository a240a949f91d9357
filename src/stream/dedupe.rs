//! The idempotency window of one room: which publish keys were sequenced recently, and
//! at which sequence number, so a retried publish gets its original ack.

use std::collections::{HashMap, VecDeque};

/// Remembers `key → value` for at most `window_ms` and at most `max_keys` keys (the
/// oldest key is forgotten first when the count bound is reached).
#[derive(Debug, Clone)]
pub struct DedupeWindow<V> {
    by_key: HashMap<String, (u64, V)>,
    order: VecDeque<(u64, String)>,
    window_ms: u64,
    max_keys: usize,
}

impl<V: Clone> DedupeWindow<V> {
    /// An empty window.
    pub fn new(window_ms: u64, max_keys: usize) -> Self {
        DedupeWindow {
            by_key: HashMap::new(),
            order: VecDeque::new(),
            window_ms,
            max_keys,
        }
    }

    /// The value recorded for `key`, if it is still inside the window at `now_ms`.
    pub fn get(&self, key: &str, now_ms: u64) -> Option<V> {
        self.by_key
            .get(key)
            .filter(|(at, _)| now_ms.saturating_sub(*at) <= self.window_ms)
            .map(|(_, v)| v.clone())
    }

    /// Records `key → value` at `now_ms`, evicting expired and surplus keys.
    pub fn insert(&mut self, key: String, value: V, now_ms: u64) {
        self.expire(now_ms);
        if self.max_keys == 0 {
            return;
        }
        while self.by_key.len() >= self.max_keys {
            match self.order.pop_front() {
                Some((_, oldest)) => {
                    self.by_key.remove(&oldest);
                }
                None => break,
            }
        }
        self.order.push_back((now_ms, key.clone()));
        self.by_key.insert(key, (now_ms, value));
    }

    /// Forgets keys recorded more than the window ago.
    pub fn expire(&mut self, now_ms: u64) {
        while let Some((at, _)) = self.order.front() {
            if now_ms.saturating_sub(*at) <= self.window_ms {
                break;
            }
            if let Some((_, key)) = self.order.pop_front() {
                self.by_key.remove(&key);
            }
        }
    }

    /// Number of remembered keys.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// True when no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Forgets every key (the stream's epoch changed).
    pub fn clear(&mut self) {
        self.by_key.clear();
        self.order.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_within_the_window() {
        let mut window = DedupeWindow::new(100, 10);
        window.insert("k".into(), 7u64, 1_000);
        assert_eq!(window.get("k", 1_050), Some(7));
        assert_eq!(window.get("k", 1_100), Some(7));
        assert_eq!(window.get("k", 1_101), None);
        assert_eq!(window.get("other", 1_000), None);
    }

    #[test]
    fn expires_old_keys_on_insert() {
        let mut window = DedupeWindow::new(100, 10);
        window.insert("a".into(), 1u64, 0);
        window.insert("b".into(), 2u64, 70);
        window.insert("c".into(), 3u64, 160);
        assert_eq!(window.len(), 2, "a expired at 160");
        assert_eq!(window.get("b", 160), Some(2));
    }

    #[test]
    fn count_bound_forgets_the_oldest() {
        let mut window = DedupeWindow::new(10_000, 2);
        window.insert("a".into(), 1u64, 0);
        window.insert("b".into(), 2u64, 1);
        window.insert("c".into(), 3u64, 2);
        assert_eq!(window.len(), 2);
        assert_eq!(window.get("a", 2), None);
        assert_eq!(window.get("c", 2), Some(3));
    }
}
