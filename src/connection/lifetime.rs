//! A connection lives no longer than its token: when the token stops being accepted
//! (`exp` plus the tolerated clock skew, `auth.clock_skew_secs`) the connection is closed
//! with 4101, unless a `refresh` frame brought a newer token first.

use crate::auth::Principal;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::task::JoinHandle;

/// The expiry timer of one connection's current token.
#[derive(Default)]
pub struct TokenLifetime {
    /// Counts tokens; a timer of an earlier one is ignored when it fires.
    generation: u64,
    timer: Option<JoinHandle<()>>,
}

impl TokenLifetime {
    /// Starts watching `principal`'s token (cancelling the watch of the previous one),
    /// which ends at `valid_until(exp)`; then `expired` is called with the watch's
    /// generation (see [`TokenLifetime::is_current`]). Returns the token's `exp`, for
    /// tokens that expire.
    pub fn watch(
        &mut self,
        principal: &Principal,
        valid_until: impl Fn(u64) -> u64,
        expired: impl FnOnce(u64) + Send + 'static,
    ) -> Option<u64> {
        self.cancel();
        self.generation += 1;
        let Principal::User { expires_at, .. } = principal else {
            return None;
        };
        let expires_at = *expires_at;
        let generation = self.generation;
        let delay = Duration::from_secs(valid_until(expires_at)).saturating_sub(since_epoch());
        self.timer = Some(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            expired(generation);
        }));
        Some(expires_at)
    }

    /// Whether a timer of `generation` belongs to the token in force.
    pub fn is_current(&self, generation: u64) -> bool {
        generation == self.generation
    }

    fn cancel(&mut self) {
        if let Some(timer) = self.timer.take() {
            timer.abort();
        }
    }
}

impl Drop for TokenLifetime {
    fn drop(&mut self) {
        self.cancel();
    }
}

fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}
