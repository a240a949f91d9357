//! Memberships and issue projects as room checks last saw them, for [`TTL`].
//!
//! Entries are dropped when they expire, when a membership change on this instance
//! names them ([`AccessCache::forget`]), and all at once when the cache grows past
//! [`MAX_ENTRIES`] (a burst of distinct users must not grow memory without bound).

use crate::tracker::Role;
use dashmap::DashMap;
use std::time::{Duration, Instant};

/// How long a cached membership or issue project is trusted.
pub const TTL: Duration = Duration::from_secs(5);

/// Entries kept at most per map before expired ones are swept.
pub const MAX_ENTRIES: usize = 100_000;

/// The cache.
#[derive(Default)]
pub struct AccessCache {
    roles: DashMap<(String, i64), (Option<Role>, Instant)>,
    projects: DashMap<i64, (Option<i64>, Instant)>,
}

impl AccessCache {
    /// The cached role of `user` in `project` (`Some(None)`: cached as no member).
    pub fn role(&self, user: &str, project: i64) -> Option<Option<Role>> {
        let key = (user.to_owned(), project);
        let entry = self.roles.get(&key)?;
        (entry.1.elapsed() < TTL).then_some(entry.0)
    }

    /// Remembers the role of `user` in `project`.
    pub fn remember_role(&self, user: &str, project: i64, role: Option<Role>) {
        bound(&self.roles);
        self.roles
            .insert((user.to_owned(), project), (role, Instant::now()));
    }

    /// The cached project of an issue (`Some(None)`: cached as missing).
    pub fn project_of(&self, issue: i64) -> Option<Option<i64>> {
        let entry = self.projects.get(&issue)?;
        (entry.1.elapsed() < TTL).then_some(entry.0)
    }

    /// Remembers the project of an issue.
    pub fn remember_project(&self, issue: i64, project: Option<i64>) {
        bound(&self.projects);
        self.projects.insert(issue, (project, Instant::now()));
    }

    /// Drops what is cached about `user` in `project`.
    pub fn forget(&self, user: &str, project: i64) {
        self.roles.remove(&(user.to_owned(), project));
    }
}

fn bound<K: Eq + std::hash::Hash, V>(map: &DashMap<K, (V, Instant)>) {
    if map.len() >= MAX_ENTRIES {
        map.retain(|_, (_, at)| at.elapsed() < TTL);
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_forgets_and_tells_no_member_from_unknown() {
        let cache = AccessCache::default();
        assert_eq!(cache.role("ann", 1), None);
        cache.remember_role("ann", 1, None);
        assert_eq!(cache.role("ann", 1), Some(None));
        cache.remember_role("ann", 1, Some(Role::Viewer));
        assert_eq!(cache.role("ann", 1), Some(Some(Role::Viewer)));
        assert_eq!(cache.role("ann", 2), None);
        cache.forget("ann", 1);
        assert_eq!(cache.role("ann", 1), None);
        cache.remember_project(9, Some(1));
        assert_eq!(cache.project_of(9), Some(Some(1)));
    }
}
