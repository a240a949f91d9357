//! Live progress: an indicatif status line on a terminal, a plain line every few seconds
//! otherwise (CI logs), nothing when quiet.

use crate::report::Point;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How often a plain progress line is printed when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// The progress display.
pub struct Progress {
    bar: Option<ProgressBar>,
    plain: bool,
    last_plain: Instant,
    users: usize,
}

impl Progress {
    /// A display for `users` users.
    pub fn new(quiet: bool, users: usize) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        let bar = (!quiet && terminal).then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {elapsed:>4} {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar
        });
        Progress {
            bar,
            plain: !quiet && !terminal,
            last_plain: Instant::now(),
            users,
        }
    }

    /// Shows the latest second.
    pub fn update(&mut self, phase: &str, point: &Point, gave_up: u64) {
        let text = format!(
            "{phase:<10} users {}/{} | {:>9.0} msg/s delivered | {:>7.0} publishes/s | p99 {:>7.2} ms | disconnects {}{}",
            point.connected,
            self.users,
            point.delivered_per_sec,
            point.acked_per_sec,
            point.p99_ms,
            point.disconnects,
            if gave_up > 0 {
                format!(" | gave up {gave_up}")
            } else {
                String::new()
            },
        );
        if let Some(bar) = &self.bar {
            bar.set_message(text);
            bar.tick();
        } else if self.plain && self.last_plain.elapsed() >= PLAIN_EVERY {
            self.last_plain = Instant::now();
            eprintln!("[{:>6.1}s] {text}", point.t);
        }
    }

    /// Removes the status line.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
