//! This process's CPU use and resident memory, read from `/proc/self` (Linux). Elsewhere
//! both read as 0.

use std::time::Instant;

/// Clock ticks per second of `/proc/self/stat` times (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU time samples, for the percentage between two reads.
pub struct CpuSampler {
    last: Option<(Instant, u64)>,
}

impl CpuSampler {
    /// A sampler without a previous sample.
    pub fn new() -> Self {
        CpuSampler {
            last: cpu_ticks().map(|t| (Instant::now(), t)),
        }
    }

    /// Percent of one core used since the previous call (100 = one core busy).
    pub fn percent(&mut self) -> f64 {
        let Some(ticks) = cpu_ticks() else { return 0.0 };
        let now = Instant::now();
        let percent = match self.last {
            Some((at, before)) => {
                let elapsed = now.duration_since(at).as_secs_f64();
                if elapsed > 0.0 {
                    ticks.saturating_sub(before) as f64 / TICKS_PER_SECOND / elapsed * 100.0
                } else {
                    0.0
                }
            }
            None => 0.0,
        };
        self.last = Some((now, ticks));
        (percent * 10.0).round() / 10.0
    }
}

impl Default for CpuSampler {
    fn default() -> Self {
        Self::new()
    }
}

/// User + system CPU time of this process, in clock ticks.
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_ticks(&stat)
}

/// Fields 14 and 15 (utime, stime) of `/proc/self/stat`; the command name (field 2) may
/// contain spaces, so fields are counted after its closing parenthesis.
fn parse_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

/// Resident memory of this process in bytes (`VmRSS`).
pub fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| parse_rss(&status))
        .unwrap_or(0)
}

fn parse_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_fields_are_found() {
        let stat = "1234 (road (runner)) S 1 2 3 4 5 6 7 8 9 10 250 75 0 0 20 0 1";
        assert_eq!(parse_ticks(stat), Some(325));
        assert_eq!(
            parse_rss("Name:\tx\nVmRSS:\t  2048 kB\n"),
            Some(2 * 1024 * 1024)
        );
        if cfg!(target_os = "linux") {
            assert!(resident_bytes() > 0);
            assert!(cpu_ticks().is_some());
        }
    }
}
