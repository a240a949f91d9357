//! The difference between two presence sets: what a subscriber that saw `before` needs
//! to see `after`. Pure; the hub applies it once per room and window, so that however
//! many clients join and leave within a window, each subscriber gets one frame.

use super::PresenceEntry;
use std::collections::HashMap;

/// Entries by connection.
pub type Set = HashMap<String, PresenceEntry>;

/// Joins and leaves between two sets.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Diff {
    /// Entries in `after` that `before` lacked (or held with other contents).
    pub joins: Vec<PresenceEntry>,
    /// Entries of `before` that `after` lacks (or holds with other contents).
    pub leaves: Vec<PresenceEntry>,
}

impl Diff {
    /// The difference from `before` to `after`, each list sorted by connection so the
    /// frames are deterministic.
    pub fn between(before: &Set, after: &Set) -> Diff {
        let mut diff = Diff::default();
        for (conn, entry) in after {
            match before.get(conn) {
                Some(old) if old == entry => {}
                Some(old) => {
                    diff.leaves.push(old.clone());
                    diff.joins.push(entry.clone());
                }
                None => diff.joins.push(entry.clone()),
            }
        }
        for (conn, entry) in before {
            if !after.contains_key(conn) {
                diff.leaves.push(entry.clone());
            }
        }
        diff.joins.sort_by(|a, b| a.conn.cmp(&b.conn));
        diff.leaves.sort_by(|a, b| a.conn.cmp(&b.conn));
        diff
    }

    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.joins.is_empty() && self.leaves.is_empty()
    }
}

/// A set from a list of entries.
pub fn set_of(entries: Vec<PresenceEntry>) -> Set {
    entries.into_iter().map(|e| (e.conn.clone(), e)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(conn: &str, user: &str) -> PresenceEntry {
        PresenceEntry {
            user: user.into(),
            conn: conn.into(),
            node: "n".into(),
            joined: 1,
            info: None,
        }
    }

    #[test]
    fn joins_and_leaves_are_what_changed() {
        let before = set_of(vec![entry("a", "u1"), entry("b", "u2")]);
        let after = set_of(vec![entry("b", "u2"), entry("c", "u3")]);
        let diff = Diff::between(&before, &after);
        assert_eq!(diff.joins, vec![entry("c", "u3")]);
        assert_eq!(diff.leaves, vec![entry("a", "u1")]);
        assert!(Diff::between(&after, &after).is_empty());
    }

    #[test]
    fn a_mass_move_is_one_diff() {
        // 1,000 clients leave one instance and come back through another within one
        // window: one diff with 1,000 leaves and 1,000 joins, not 2,000 events.
        let before = set_of((0..1000).map(|i| entry(&format!("old{i}"), "u")).collect());
        let after = set_of((0..1000).map(|i| entry(&format!("new{i}"), "u")).collect());
        let diff = Diff::between(&before, &after);
        assert_eq!((diff.joins.len(), diff.leaves.len()), (1000, 1000));
    }

    #[test]
    fn a_changed_entry_is_a_leave_and_a_join() {
        let before = set_of(vec![entry("a", "u1")]);
        let mut changed = entry("a", "u1");
        changed.node = "m".into();
        let diff = Diff::between(&before, &set_of(vec![changed.clone()]));
        assert_eq!(diff.joins, vec![changed]);
        assert_eq!(diff.leaves, vec![entry("a", "u1")]);
    }
}
