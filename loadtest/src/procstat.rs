//! What a process costs, read from `/proc` (Linux): CPU time and resident memory of the
//! load generator itself and of the servers it started, and the open-file limit that
//! bounds how many sockets one process may hold.

use std::time::Duration;

/// Kernel clock ticks per second for `/proc/*/stat` times (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU time of a process, split the way the kernel accounts it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// In user space.
    pub user: Duration,
    /// In the kernel on the process's behalf (system calls, and on loopback much of the
    /// peer's TCP receive path).
    pub system: Duration,
}

impl CpuTimes {
    /// User plus system.
    pub fn total(&self) -> Duration {
        self.user + self.system
    }

    /// The time spent since `earlier`.
    pub fn since(&self, earlier: &CpuTimes) -> CpuTimes {
        CpuTimes {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

/// CPU time of process `pid` (`None`: this process), if readable.
pub fn cpu_times(pid: Option<u32>) -> Option<CpuTimes> {
    match pid {
        Some(pid) => cpu_times_at(&format!("/proc/{pid}/stat")),
        None => cpu_times_at("/proc/self/stat"),
    }
}

/// CPU time from a `stat` file of `/proc` (a process's, or a thread's:
/// `/proc/thread-self/stat`), if readable.
pub fn cpu_times_at(path: &str) -> Option<CpuTimes> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) may contain spaces; the fields after it are fixed.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |index: usize| -> Option<Duration> {
        let value: f64 = fields.get(index)?.parse().ok()?;
        Some(Duration::from_secs_f64(value / TICKS_PER_SECOND))
    };
    Some(CpuTimes {
        user: ticks(11)?,
        system: ticks(12)?,
    })
}

/// User plus system CPU time of process `pid` (`None`: this process), if readable.
pub fn cpu_time(pid: Option<u32>) -> Option<Duration> {
    cpu_times(pid).map(|times| times.total())
}

/// Resident set size of process `pid` in bytes, if readable.
pub fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Threads of process `pid` named like a tokio runtime's workers (`tokio-rt-worker`):
/// how many threads a roomcast instance runs its tasks on.
pub fn runtime_threads(pid: u32) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim_end() == "tokio-rt-worker")
        .count()
}

/// The soft limit on open files of this process, if readable.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// CPU use between two readings, as a share of one core (1.0 = one core busy).
pub fn cpu_share(before: Duration, after: Duration, wall: Duration) -> f64 {
    if wall.is_zero() {
        return 0.0;
    }
    after.saturating_sub(before).as_secs_f64() / wall.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_readable() {
        // This thread's time, read first, is part of the process's, read after.
        let thread = cpu_times_at("/proc/thread-self/stat").unwrap();
        let times = cpu_times(None).unwrap();
        assert!(thread.total() <= times.total());
        assert!(cpu_time(None).unwrap() >= times.total());
        assert!(resident_bytes(std::process::id()).unwrap() > 0);
        assert!(open_files_limit().unwrap() > 0);
    }

    #[test]
    fn cpu_share_is_relative_to_wall_time() {
        let share = cpu_share(
            Duration::from_secs(1),
            Duration::from_secs(2),
            Duration::from_secs(4),
        );
        assert!((share - 0.25).abs() < 1e-9);
        assert_eq!(
            cpu_share(Duration::ZERO, Duration::ZERO, Duration::ZERO),
            0.0
        );
    }
}
