//! The kernel's part of a delivery, measured beside a scenario: the same frames written
//! to the same number of loopback sockets at the scenario's rate, by a plain thread with
//! one non-blocking `send` per frame and nothing else, while readers wait on the other
//! ends as the simulated users do. Its CPU per send (read from `/proc` as the servers'
//! is, so both are accounted alike) is what any server pays for one delivery on this
//! machine at this moment: the system call and the loopback TCP path of both ends,
//! which on loopback runs in the sender's context. A server's CPU per delivery over
//! this floor is what its own code costs.
//!
//! One instance is reproduced: the users a scenario sends to its first target, with
//! their rooms, each room's publications spread over time as the publishers spread
//! theirs (rooms in turn, every [`TICK`]).

use crate::procstat::{self, CpuTimes};
use crate::report::SendFloor;
use crate::scenario::Scenario;
use roomcast::protocol::{Encoding, ServerFrame};
use roomcast::stream::Epoch;
use serde_json::json;
use std::io::{self, Write};
use std::net::TcpStream as StdTcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// How often the sender wakes up to write what is due (as the publishers do).
const TICK: Duration = Duration::from_millis(5);
/// Least CPU the sender must have used for its figure to count: `/proc` gives thread
/// times in ticks of 10 ms, so this keeps the rounding within 2 %.
const MIN_CPU: Duration = Duration::from_millis(500);

/// What the floor reproduces of a scenario.
#[derive(Debug, Clone)]
pub struct Plan {
    /// For each room, the sockets (indexes) of its subscribers on the instance.
    pub members: Vec<Vec<usize>>,
    /// Sockets in all (the instance's users).
    pub sockets: usize,
    /// Publications per second per room.
    pub rate_per_room: f64,
    /// One delivery as it goes on the wire: a WebSocket frame carrying a `message`.
    pub frame: Vec<u8>,
    /// How long to measure.
    pub secs: f64,
    /// Least CPU the sender must use for the figure to count ([`MIN_CPU`]).
    pub min_cpu: Duration,
}

impl Plan {
    /// The plan for `scenario`'s first of `targets` instances, measured for `secs`.
    pub fn of(scenario: &Scenario, targets: usize, secs: f64) -> Plan {
        let mut members = vec![Vec::new(); scenario.rooms.count];
        let users: Vec<usize> = (0..scenario.users).step_by(targets.max(1)).collect();
        for (socket, user) in users.iter().enumerate() {
            for room in scenario.room_indexes_of(*user) {
                members[room].push(socket);
            }
        }
        Plan {
            members,
            sockets: users.len(),
            rate_per_room: scenario.publish.rate_per_room,
            frame: delivery_frame(scenario),
            secs,
            min_cpu: MIN_CPU,
        }
    }
}

/// A `message` frame of the scenario's encoding and size, framed as a server's
/// WebSocket frame (unmasked, final), as a subscriber receives one.
fn delivery_frame(scenario: &Scenario) -> Vec<u8> {
    let message = ServerFrame::Message {
        room: scenario.room_name(0),
        epoch: Epoch::new("18c2f0a9b3d4e5f6"),
        seq: 123_456,
        time: 1_765_000_000_000,
        data: json!({ "t": crate::stats::now_micros(), "p": "x".repeat(scenario.publish.message_bytes) }),
        delta: None,
        compressed: false,
    };
    let (encoding, opcode) = if scenario.encoding == "json" {
        (Encoding::Json, 0x81)
    } else {
        (Encoding::MsgPack, 0x82)
    };
    let payload = encoding.encode(&message);
    let payload = payload.as_bytes();
    let mut frame = vec![opcode];
    match payload.len() {
        len @ 0..=125 => frame.push(len as u8),
        len @ 126..=65_535 => {
            frame.push(126);
            frame.extend((len as u16).to_be_bytes());
        }
        len => {
            frame.push(127);
            frame.extend((len as u64).to_be_bytes());
        }
    }
    frame.extend(payload);
    frame
}

/// Connects the plan's sockets, writes its deliveries for its duration and measures the
/// writing thread.
pub async fn measure(plan: Plan) -> Result<SendFloor, String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("listen: {e}"))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let received = Arc::new(AtomicU64::new(0));
    let mut readers = JoinSet::new();
    let mut sockets = Vec::with_capacity(plan.sockets);
    for _ in 0..plan.sockets {
        let (client, accepted) = tokio::join!(TcpStream::connect(address), listener.accept());
        let client = client.map_err(|e| format!("connect: {e}"))?;
        let (server, _) = accepted.map_err(|e| format!("accept: {e}"))?;
        // As the server sets up its client sockets.
        server.set_nodelay(true).map_err(|e| e.to_string())?;
        sockets.push(server.into_std().map_err(|e| e.to_string())?);
        readers.spawn(read_all(client, received.clone()));
    }
    let sender = std::thread::Builder::new()
        .name("send-floor".into())
        .spawn(move || send(&plan, sockets))
        .map_err(|e| e.to_string())?;
    let sent = tokio::task::spawn_blocking(move || sender.join())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|_| "the sending thread panicked".to_owned())??;
    while readers.join_next().await.is_some() {}
    if sent.would_block > 0 {
        return Err(format!(
            "{} of {} writes found a full socket: the readers fell behind, so this is not a floor",
            sent.would_block,
            sent.sends + sent.would_block
        ));
    }
    // /proc counts in ticks of 10 ms: below a second of CPU the figure is too coarse.
    if sent.cpu.total() < sent.min_cpu {
        return Err(format!(
            "{:?} of CPU in {} sends is too little to measure (needs {:?}): raise publish.send_floor_secs",
            sent.cpu.total(),
            sent.sends,
            sent.min_cpu
        ));
    }
    let received = received.load(Ordering::Relaxed);
    if received != sent.bytes {
        return Err(format!(
            "{} bytes written, {received} read: the readers lost some",
            sent.bytes
        ));
    }
    Ok(SendFloor {
        secs: sent.secs,
        sockets: sent.sockets,
        sends: sent.sends,
        frame_bytes: sent.frame_bytes,
        cpu_us_per_send: sent.cpu.total().as_secs_f64() * 1e6 / sent.sends.max(1) as f64,
        ratio: None,
    })
}

/// Reads until the other end closes, counting the bytes.
async fn read_all(mut socket: TcpStream, received: Arc<AtomicU64>) {
    let mut buffer = vec![0u8; 16 * 1024];
    while let Ok(n @ 1..) = socket.read(&mut buffer).await {
        received.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// What the sending thread did.
struct Sent {
    secs: f64,
    sockets: usize,
    sends: u64,
    would_block: u64,
    bytes: u64,
    frame_bytes: usize,
    min_cpu: Duration,
    cpu: CpuTimes,
}

/// The sending thread: the plan's deliveries, one `send` each, for its duration. The
/// sockets close when it returns, which ends the readers.
fn send(plan: &Plan, sockets: Vec<StdTcpStream>) -> Result<Sent, String> {
    let total_rate = plan.rate_per_room * plan.members.len() as f64;
    let (mut sends, mut would_block, mut bytes) = (0u64, 0u64, 0u64);
    let cpu_before = thread_cpu()?;
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(plan.secs);
    let (mut credit, mut last, mut next_room) = (0.0, start, 0usize);
    while Instant::now() < end {
        std::thread::sleep(TICK);
        let now = Instant::now();
        credit += total_rate * now.duration_since(last).as_secs_f64();
        last = now;
        while credit >= 1.0 {
            credit -= 1.0;
            // A publication to a room with no subscriber here costs this instance nothing.
            let room = next_room % plan.members.len();
            next_room += 1;
            let Some(members) = plan.members.get(room).filter(|m| !m.is_empty()) else {
                continue;
            };
            for &socket in members {
                // Non-blocking (tokio made them so): one `send` each, as a server's
                // delivery to a parked socket is.
                match (&sockets[socket]).write(&plan.frame) {
                    Ok(n) if n == plan.frame.len() => {
                        sends += 1;
                        bytes += n as u64;
                    }
                    // A full socket: its reader fell behind, and what such a write costs
                    // is not a delivery's cost (refused below).
                    Ok(n) => {
                        would_block += 1;
                        bytes += n as u64;
                    }
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => would_block += 1,
                    Err(err) => return Err(format!("send: {err}")),
                }
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = thread_cpu()?.since(&cpu_before);
    Ok(Sent {
        secs,
        sockets: sockets.len(),
        sends,
        would_block,
        bytes,
        frame_bytes: plan.frame.len(),
        min_cpu: plan.min_cpu,
        cpu,
    })
}

/// CPU time of the calling thread, from `/proc/thread-self/stat`.
fn thread_cpu() -> Result<CpuTimes, String> {
    procstat::cpu_times_at("/proc/thread-self/stat")
        .ok_or_else(|| "cannot read /proc/thread-self/stat".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(encoding: &str, message_bytes: usize) -> Scenario {
        Scenario::parse(&format!(
            r#"
            name = "floor"
            targets = ["ws://127.0.0.1:1/ws"]
            users = 10
            duration_secs = 1
            encoding = "{encoding}"
            [rooms]
            count = 4
            per_user = 2
            [publish]
            rate_per_room = 40.0
            message_bytes = {message_bytes}
            send_floor_secs = 0.5
            "#
        ))
        .unwrap()
    }

    #[test]
    fn the_plan_is_the_first_instances_users_with_their_rooms() {
        let scenario = scenario("msgpack", 100);
        let plan = Plan::of(&scenario, 2, 0.5);
        // Users 0, 2, 4, 6, 8 go to the first of two instances.
        assert_eq!(plan.sockets, 5);
        for (socket, user) in [0, 2, 4, 6, 8].into_iter().enumerate() {
            for room in scenario.room_indexes_of(user) {
                assert!(plan.members[room].contains(&socket));
            }
        }
        let memberships: usize = plan.members.iter().map(Vec::len).sum();
        assert_eq!(memberships, 5 * 2);
        assert_eq!(Plan::of(&scenario, 1, 0.5).sockets, 10);
    }

    #[test]
    fn the_frame_is_a_server_websocket_frame_of_a_message() {
        let small = delivery_frame(&scenario("msgpack", 20));
        assert_eq!(small[0], 0x82, "final, binary");
        assert_eq!(small[1] as usize, small.len() - 2, "unmasked, 7-bit length");
        let frame: serde_json::Value = rmp_serde::from_slice(&small[2..]).unwrap();
        assert_eq!(frame["type"], "message");
        assert_eq!(frame["data"]["p"].as_str().unwrap().len(), 20);

        let large = delivery_frame(&scenario("json", 1000));
        assert_eq!(
            (large[0], large[1]),
            (0x81, 126),
            "final, text, 16-bit length"
        );
        let len = u16::from_be_bytes([large[2], large[3]]) as usize;
        assert_eq!(len, large.len() - 4);
        let frame: serde_json::Value = serde_json::from_slice(&large[4..]).unwrap();
        assert_eq!(frame["room"], "load-0");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_byte_written_is_read_and_the_sends_follow_the_rate() {
        let scenario = scenario("msgpack", 100);
        let mut plan = Plan::of(&scenario, 1, 0.5);
        // Far less CPU than a figure needs (see the next test): the accounting is checked.
        plan.min_cpu = Duration::ZERO;
        let frame_bytes = plan.frame.len();
        let floor = measure(plan).await.unwrap();
        // 4 rooms × 40/s × 0.5 s = 80 publications of 5 subscribers each (2 rooms a user,
        // 10 users, 4 rooms), give or take the last tick.
        assert!((300..=440).contains(&floor.sends), "{} sends", floor.sends);
        assert_eq!((floor.sockets, floor.frame_bytes), (10, frame_bytes));
        assert!(floor.cpu_us_per_send.is_finite() && floor.cpu_us_per_send >= 0.0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_measurement_too_short_to_read_is_refused() {
        let plan = Plan::of(&scenario("json", 100), 1, 0.2);
        let error = measure(plan).await.unwrap_err();
        assert!(error.contains("too little to measure"), "{error}");
    }
}
