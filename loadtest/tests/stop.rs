//! A load tester stopped by a signal (a cancelled CI job, `timeout`, `kill`, Ctrl-C)
//! stops the servers and the redis-server it started: nothing it spawned outlives it.
//!
//! The processes are found and checked by PID, as children of the load tester in
//! `/proc`; any that a failing run left behind are killed by PID before the test fails.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(60);

/// The processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| parent_and_state(child).is_some_and(|(parent, _)| parent == pid))
        .collect()
}

/// A process's parent and its state letter, from `/proc/PID/stat`.
fn parent_and_state(pid: u32) -> Option<(u32, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces; the fields after it are
    // the state and the parent's pid.
    let mut fields = stat.get(stat.rfind(')')? + 2..)?.split(' ');
    let state = fields.next()?.chars().next()?;
    let parent = fields.next()?.parse().ok()?;
    Some((parent, state))
}

/// Still running: present and not a zombie (a zombie runs nothing; it only waits for
/// its new parent to collect its status).
fn running(pid: u32) -> bool {
    parent_and_state(pid).is_some_and(|(_, state)| state != 'Z')
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid}");
}

fn wait_for(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("roomcast-load did not exit after the signal");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until none of `pids` runs; kills the survivors (by PID) and fails if some do
/// not stop on their own.
fn assert_all_stop(pids: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|&pid| running(pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let survivors: Vec<u32> = pids.iter().copied().filter(|&pid| running(pid)).collect();
    for &pid in &survivors {
        signal(pid, "KILL");
    }
    assert!(survivors.is_empty(), "left running: {survivors:?}");
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("roomcast-load-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_run_stopped_by_sigterm_stops_the_servers_it_started() {
    let dir = scratch("sigterm");
    let scenario = dir.join("long.toml");
    std::fs::write(
        &scenario,
        "name = \"long\"\nusers = 20\nramp_up_secs = 1\nduration_secs = 600\n\
         [rooms]\ncount = 2\nper_user = 1\n[publish]\nrate_per_room = 1\npublishers = 1\n\
         [spawn]\ninstances = 1\nredis = true\n",
    )
    .unwrap();
    let mut tester = Command::new(env!("CARGO_BIN_EXE_roomcast-load"))
        .arg("run")
        .arg(&scenario)
        .arg("--report-dir")
        .arg(&dir)
        .arg("--quiet")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("roomcast-load starts");
    // redis-server, then the instance.
    let deadline = Instant::now() + PATIENCE;
    let mut spawned = children(tester.id());
    while spawned.len() < 2 {
        assert!(Instant::now() < deadline, "the topology did not start");
        if let Some(status) = tester.try_wait().unwrap() {
            panic!("roomcast-load ended early: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
        spawned = children(tester.id());
    }

    signal(tester.id(), "TERM");
    let status = wait_for(&mut tester);
    assert_all_stop(&spawned);
    assert_eq!(status.code(), Some(143), "the shell's status for SIGTERM");
    let mut stderr = String::new();
    let _ = std::io::Read::read_to_string(&mut tester.stderr.take().unwrap(), &mut stderr);
    assert!(stderr.contains("stopped by SIGTERM"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn up_stopped_by_sigterm_stops_its_instances() {
    let dir = scratch("up");
    let mut tester = Command::new(env!("CARGO_BIN_EXE_roomcast-load"))
        .args(["up", "--instances", "1", "--no-redis", "--dir"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("roomcast-load starts");
    let stdout = BufReader::new(tester.stdout.take().unwrap());
    let mut instance = None;
    for line in stdout.lines() {
        let line = line.expect("stdout");
        if let Some(pid) = line.strip_prefix("ROOMCAST_PID_0=") {
            instance = Some(pid.parse::<u32>().expect("a pid"));
        }
        if line.starts_with("# logs in") {
            break;
        }
    }
    let instance = instance.expect("up prints the instance's pid");
    assert!(running(instance));

    signal(tester.id(), "TERM");
    let status = wait_for(&mut tester);
    assert_all_stop(&[instance]);
    assert!(status.success(), "up ends normally on SIGTERM: {status}");
    let _ = std::fs::remove_dir_all(&dir);
}
