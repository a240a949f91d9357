//! Scenario files (TOML): who connects where, what they subscribe to and publish, for how
//! long, what happens on the way (timed actions), and what counts as a failure.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

/// A load scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name, used in reports.
    pub name: String,
    /// What the scenario shows, for the report.
    #[serde(default)]
    pub description: String,
    /// Server WebSocket URLs; users are spread over them (and fail over along the list).
    /// Empty when `[spawn]` starts the servers.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Simulated users (each one connection).
    pub users: usize,
    /// Users connect evenly over this many seconds.
    #[serde(default)]
    pub ramp_up_secs: f64,
    /// How long publishing lasts after the ramp-up, in seconds.
    pub duration_secs: f64,
    /// `msgpack` or `json`.
    #[serde(default = "default_encoding")]
    pub encoding: String,
    /// Loopback addresses to connect from, round-robin per user (needed past ~28K
    /// sockets to one server address). Empty: the system's choice.
    #[serde(default)]
    pub source_addresses: Vec<IpAddr>,
    /// Rooms and subscriptions.
    pub rooms: Rooms,
    /// Publishing.
    #[serde(default)]
    pub publish: Publish,
    /// Optional JWT for every user (`Authorization: Bearer …`).
    #[serde(default)]
    pub auth: Auth,
    /// Servers to start for the scenario (and stop after it).
    #[serde(default)]
    pub spawn: Option<Spawn>,
    /// Things to do at given times (kill an instance, drain it…).
    #[serde(default)]
    pub actions: Vec<Action>,
    /// A rolling deploy of the spawned instances during publishing.
    #[serde(default)]
    pub roll: Option<Roll>,
    /// Limits that fail the run.
    #[serde(default)]
    pub thresholds: Thresholds,
}

fn default_encoding() -> String {
    "msgpack".into()
}

/// `[rooms]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rooms {
    /// Number of rooms, named `{prefix}{n}`.
    pub count: usize,
    /// Room name prefix.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Rooms each user subscribes to.
    #[serde(default = "one")]
    pub per_user: usize,
    /// `uniform` (users spread evenly over rooms) or `hot` (the first room gets
    /// `hot_share` of all subscriptions, the rest are spread evenly).
    #[serde(default = "default_distribution")]
    pub distribution: String,
    /// With `hot`: share of subscriptions in the first room.
    #[serde(default)]
    pub hot_share: f64,
}

fn default_prefix() -> String {
    "load-".into()
}
fn one() -> usize {
    1
}
fn default_distribution() -> String {
    "uniform".into()
}

/// `[publish]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Publish {
    /// Messages per second to each room.
    #[serde(default)]
    pub rate_per_room: f64,
    /// Rising rates instead (messages per second per room, one step each
    /// `step_secs`): the report finds the step where latency degrades.
    #[serde(default)]
    pub rate_steps: Vec<f64>,
    /// Duration of each rate step, seconds.
    #[serde(default = "default_step")]
    pub step_secs: f64,
    /// With `rate_steps`: stop at the first step where latency degraded (the knee)
    /// instead of overloading the servers with the rest.
    #[serde(default = "yes")]
    pub stop_at_knee: bool,
    /// Publisher connections (spread over the targets); the rooms are divided among them.
    #[serde(default = "one")]
    pub publishers: usize,
    /// Size of each message's padding, bytes.
    #[serde(default = "default_message_bytes")]
    pub message_bytes: usize,
    /// A closed loop instead of a rate: each publisher keeps this many publishes
    /// unacknowledged for `duration_secs` (the next one leaves as soon as one is
    /// acknowledged), to the publisher's rooms in turn. 0: publish at `rate_per_room`.
    #[serde(default)]
    pub in_flight: usize,
    /// After the run, drive the publish function straight at the spawned Redis (no
    /// roomcast in between, pipelined) for this many seconds: what Redis alone can
    /// sequence, beside what the servers reached. 0: not measured.
    #[serde(default)]
    pub redis_limit_secs: f64,
    /// After the run, write the same deliveries as one instance (its users' rooms, the
    /// scenario's rate and frame) to bare loopback sockets for this many seconds, one
    /// `send` per frame: the kernel's part of a delivery on this machine now, beside
    /// what the servers spent. 0: not measured.
    #[serde(default)]
    pub send_floor_secs: f64,
}

impl Default for Publish {
    fn default() -> Self {
        Publish {
            rate_per_room: 0.0,
            rate_steps: Vec::new(),
            step_secs: default_step(),
            stop_at_knee: true,
            publishers: 1,
            message_bytes: default_message_bytes(),
            in_flight: 0,
            redis_limit_secs: 0.0,
            send_floor_secs: 0.0,
        }
    }
}

fn default_step() -> f64 {
    10.0
}
fn default_message_bytes() -> usize {
    100
}

/// `[auth]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// A JWT every user sends.
    #[serde(default)]
    pub token: String,
}

/// `[spawn]`: a local topology for the scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spawn {
    /// roomcast instances.
    pub instances: usize,
    /// Start a redis-server and point the instances at it (needed for more than one).
    #[serde(default = "yes")]
    pub redis: bool,
    /// The roomcast binary (default: next to this one, i.e. target/release/roomcast).
    #[serde(default)]
    pub binary: String,
    /// Extra environment for every instance (`ROOMCAST_…` settings).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

fn yes() -> bool {
    true
}

/// `[[actions]]`: a shell command run at a given time. With `[spawn]`, the command sees
/// `ROOMCAST_PID_0`, `ROOMCAST_PID_1`, … (instance pids) and `REDIS_PID`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    /// Seconds after the start of the run.
    pub at_secs: f64,
    /// Shell command (`sh -c`).
    pub run: String,
    /// Label in the report (default: the command).
    #[serde(default)]
    pub label: String,
}

/// `[roll]`: a rolling deploy of the spawned instances. At `at_secs` after publishing
/// starts, each instance in turn gets SIGTERM, drains and exits, and a new process takes
/// its port; the next one goes once the replacement answers `/readyz` and every
/// instance lists every other as ready (`GET /api/v1/admin/cluster`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Roll {
    /// Seconds after publishing starts.
    pub at_secs: f64,
    /// Longest wait for an instance to drain and exit after SIGTERM, seconds.
    #[serde(default = "default_exit_timeout")]
    pub exit_timeout_secs: f64,
    /// Longest wait for a replacement to be ready and listed by every instance, seconds.
    #[serde(default = "default_ready_timeout")]
    pub ready_timeout_secs: f64,
}

fn default_exit_timeout() -> f64 {
    60.0
}
fn default_ready_timeout() -> f64 {
    30.0
}

/// `[thresholds]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Fail when the overall p99 publish-to-delivery latency exceeds this (ms).
    #[serde(default)]
    pub p99_ms: Option<f64>,
    /// Fail when more than this share of publishes failed for good.
    #[serde(default = "default_error_rate")]
    pub max_error_rate: f64,
    /// Fail when the p99 time to reconnect and resume exceeds this (ms).
    #[serde(default)]
    pub resume_p99_ms: Option<f64>,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            p99_ms: None,
            max_error_rate: default_error_rate(),
            resume_p99_ms: None,
        }
    }
}

fn default_error_rate() -> f64 {
    0.0
}

/// A scenario that cannot be run.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ScenarioError(pub String);

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ScenarioError(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| ScenarioError(format!("{}: {}", path.display(), e.0)))
    }

    /// Parses and checks scenario text.
    pub fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        let scenario: Scenario = toml::from_str(text).map_err(|e| ScenarioError(e.to_string()))?;
        scenario.check()?;
        Ok(scenario)
    }

    fn check(&self) -> Result<(), ScenarioError> {
        let fail = |m: &str| Err(ScenarioError(m.to_owned()));
        if self.targets.is_empty() && self.spawn.is_none() {
            return fail("give `targets` or a `[spawn]` section");
        }
        if self.users == 0 || self.rooms.count == 0 || self.rooms.per_user == 0 {
            return fail("`users`, `rooms.count` and `rooms.per_user` must be positive");
        }
        if self.rooms.per_user > self.rooms.count {
            return fail("`rooms.per_user` cannot exceed `rooms.count`");
        }
        if !["uniform", "hot"].contains(&self.rooms.distribution.as_str()) {
            return fail("`rooms.distribution` is `uniform` or `hot`");
        }
        if !["msgpack", "json"].contains(&self.encoding.as_str()) {
            return fail("`encoding` is `msgpack` or `json`");
        }
        if let Some(spawn) = &self.spawn
            && spawn.instances > 1
            && !spawn.redis
        {
            return fail("more than one instance needs `spawn.redis = true`");
        }
        let publish = &self.publish;
        if publish.in_flight > 0 && (publish.rate_per_room > 0.0 || !publish.rate_steps.is_empty())
        {
            return fail("`publish.in_flight` (a closed loop) excludes a publish rate");
        }
        if publish.redis_limit_secs > 0.0 && !self.spawn.as_ref().is_some_and(|spawn| spawn.redis) {
            return fail("`publish.redis_limit_secs` drives the spawned Redis: it needs `[spawn]`");
        }
        if publish.send_floor_secs > 0.0
            && !(publish.rate_per_room > 0.0 && publish.rate_steps.is_empty())
        {
            return fail(
                "`publish.send_floor_secs` replays a constant rate: it needs `publish.rate_per_room` and no `rate_steps`",
            );
        }
        if self.roll.is_some() && !self.spawn.as_ref().is_some_and(|spawn| spawn.redis) {
            return fail("`[roll]` restarts spawned instances: it needs `[spawn]` with Redis");
        }
        Ok(())
    }

    /// The name of room number `room`.
    pub fn room_name(&self, room: usize) -> String {
        format!("{}{room}", self.rooms.prefix)
    }

    /// The numbers of the rooms user `user` subscribes to, ascending.
    pub fn room_indexes_of(&self, user: usize) -> Vec<usize> {
        let rooms = &self.rooms;
        let mut chosen = Vec::with_capacity(rooms.per_user);
        if rooms.distribution == "hot" && rooms.count > 1 {
            // A stable share of users (by a low-discrepancy sequence) gets the hot room.
            if (user as f64 * 0.618_033_988_75).fract() < rooms.hot_share {
                chosen.push(0);
            }
            let others = rooms.count - 1;
            let mut room = user % others;
            while chosen.len() < rooms.per_user.min(rooms.count) {
                chosen.push(1 + room);
                room = (room + 1) % others;
            }
        } else {
            let stride = (rooms.count / rooms.per_user).max(1);
            for k in 0..rooms.per_user {
                chosen.push((user + k * stride) % rooms.count);
            }
        }
        chosen.sort_unstable();
        chosen.dedup();
        chosen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        name = "t"
        targets = ["ws://127.0.0.1:1/ws"]
        users = 10
        duration_secs = 1
        [rooms]
        count = 4
        per_user = 2
    "#;

    #[test]
    fn a_minimal_scenario_parses_with_defaults() {
        let scenario = Scenario::parse(MINIMAL).unwrap();
        assert_eq!(scenario.encoding, "msgpack");
        assert_eq!(scenario.publish.publishers, 1);
        assert_eq!(scenario.room_indexes_of(0).len(), 2);
        assert_eq!(scenario.room_name(3), "load-3");
        let all: std::collections::BTreeSet<usize> =
            (0..10).flat_map(|u| scenario.room_indexes_of(u)).collect();
        assert_eq!(all.len(), 4, "every room has subscribers");
    }

    #[test]
    fn hot_rooms_get_their_share() {
        let text = MINIMAL.replace(
            "per_user = 2",
            "per_user = 1\ndistribution = \"hot\"\nhot_share = 0.5",
        );
        let scenario = Scenario::parse(&text).unwrap();
        let hot = (0..1000)
            .filter(|u| scenario.room_indexes_of(*u).contains(&0))
            .count();
        assert!((400..600).contains(&hot), "{hot}");
        let mixed = Scenario::parse(&MINIMAL.replace(
            "per_user = 2",
            "per_user = 3\ndistribution = \"hot\"\nhot_share = 0.2",
        ))
        .unwrap();
        for user in 0..100 {
            let rooms = mixed.room_indexes_of(user);
            assert!((2..=3).contains(&rooms.len()), "{rooms:?}");
            assert!(rooms.iter().all(|room| *room < 4));
        }
    }

    #[test]
    fn every_shipped_scenario_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut loaded = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|ext| ext == "toml") {
                Scenario::load(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
                loaded += 1;
            }
        }
        assert!(loaded >= 8, "found {loaded} scenarios in {}", dir.display());
    }

    #[test]
    fn bad_scenarios_are_refused() {
        assert!(
            Scenario::parse(&MINIMAL.replace("targets = [\"ws://127.0.0.1:1/ws\"]", "")).is_err()
        );
        assert!(Scenario::parse(&MINIMAL.replace("per_user = 2", "per_user = 9")).is_err());
        assert!(Scenario::parse(&format!("{MINIMAL}\nunknown = 1")).is_err());
        assert!(
            Scenario::parse(&format!("{MINIMAL}\n[roll]\nat_secs = 5")).is_err(),
            "a roll without spawned instances"
        );
        let floor = |publish: &str| Scenario::parse(&format!("{MINIMAL}\n[publish]\n{publish}"));
        assert!(
            floor("send_floor_secs = 5").is_err(),
            "a floor needs a rate to replay"
        );
        assert!(floor("send_floor_secs = 5\nin_flight = 4").is_err());
        assert!(floor("send_floor_secs = 5\nrate_steps = [1.0, 2.0]").is_err());
        assert!(floor("send_floor_secs = 5\nrate_per_room = 2.0").is_ok());
    }
}
