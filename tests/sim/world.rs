//! One simulation run: instances with their room followers (the real
//! `roomcast::stream::Follower`, driven by a small shell that mirrors `room::follow`),
//! the simulated Redis, a lossy Pub/Sub, publishers that retry under the same key, and
//! clients that check what they receive against what Redis sequenced.

use crate::redis::{Data, Redis, RedisLimits, SimPub};
use crate::sched::{Rng, Scheduler};
use roomcast::stream::{
    Action, Answer, Epoch, Follower, FollowerSettings, LossReason, Position, Read,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// How a run is shaped; every field is drawn from the seed.
#[derive(Debug, Clone)]
pub struct Shape {
    pub rooms: usize,
    pub instances: usize,
    pub clients: usize,
    pub publishers: usize,
    pub messages: u64,
    pub loss_percent: u64,
    pub max_delay_ms: u64,
    pub fault_horizon_ms: u64,
    pub redis_restarts: u64,
    pub instance_crashes: u64,
    pub room_crashes: u64,
    pub toggles: u64,
    pub lost_acks_percent: u64,
    pub settings: FollowerSettings,
    pub limits: RedisLimits,
}

impl Shape {
    pub fn draw(rng: &mut Rng) -> Shape {
        Shape {
            rooms: rng.range(1, 2) as usize,
            instances: rng.range(2, 3) as usize,
            clients: rng.range(2, 6) as usize,
            publishers: rng.range(1, 3) as usize,
            messages: rng.range(10, 40),
            loss_percent: rng.range(0, 20),
            max_delay_ms: rng.range(1, 40),
            fault_horizon_ms: 1_500,
            redis_restarts: rng.range(0, 2),
            instance_crashes: rng.range(0, 2),
            room_crashes: rng.range(0, 2),
            toggles: rng.range(0, 4),
            lost_acks_percent: rng.range(0, 15),
            settings: FollowerSettings {
                cache_size: rng.range(0, 16) as usize,
                cache_ttl_ms: u64::MAX,
                max_pending: rng.range(1, 8) as usize,
            },
            limits: RedisLimits {
                buffer: rng.range(4, 40) as usize,
                window_ms: 60_000,
            },
        }
    }
}

/// What a run did, for the summary.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub events: u64,
    pub published: u64,
    pub delivered: u64,
    pub resets: u64,
    pub epochs: u64,
    pub reads: u64,
}

impl Stats {
    /// Adds another run's counts.
    pub fn add(&mut self, other: &Stats) {
        let Stats {
            events,
            published,
            delivered,
            resets,
            epochs,
            reads,
        } = *other;
        self.events += events;
        self.published += published;
        self.delivered += delivered;
        self.resets += resets;
        self.epochs += epochs;
        self.reads += reads;
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct SimError;

type Core = Follower<SimPub, usize, SimError>;
type CoreAction = Action<SimPub, usize, SimError>;

enum Ev {
    Publish(usize),
    PubSub {
        instance: usize,
        publication: SimPub,
    },
    Read {
        instance: usize,
        room: usize,
        generation: u64,
        read: Option<Read>,
    },
    Retry {
        instance: usize,
        room: usize,
        generation: u64,
    },
    RedisDown,
    RedisUp,
    Snapshot,
    Resync {
        instance: usize,
    },
    CrashInstance,
    StartInstance,
    CrashRoom,
    Connect(usize),
    Subscribe {
        client: usize,
        room: usize,
    },
    Toggle(usize),
    FinalCheck,
}

enum Msg {
    Publication(SimPub),
    Subscribe {
        client: usize,
        since: Option<Position>,
    },
    Unsubscribe {
        client: usize,
    },
    Resync,
}

struct Member {
    client: usize,
    last_seq: u64,
    /// Where an inherited member stood while a restarted room has not caught it up
    /// (mirrors `Members::catching_up`).
    catching_up: Option<Position>,
}

/// One room's actor on one instance.
struct RoomActor {
    generation: u64,
    /// `None` while starting (the history read is outstanding).
    core: Option<Core>,
    members: Vec<Member>,
    members_epoch: Option<Epoch>,
    mailbox: VecDeque<Msg>,
    busy: bool,
}

struct Instance {
    alive: bool,
    rooms: BTreeMap<usize, RoomActor>,
}

/// A client's subscription to one room.
#[derive(Debug, Clone, PartialEq)]
enum Sub {
    Idle,
    /// A subscribe is outstanding (at most one).
    Subscribing,
    Subscribed,
}

struct Client {
    instance: Option<usize>,
    rooms: Vec<(Sub, Option<Position>)>,
}

struct Publisher {
    room: usize,
    next: u64,
    acked: bool,
}

/// What a client receives.
enum Frame {
    Subscribed {
        since: Option<Position>,
        position: Position,
        loss: Option<LossReason>,
        replay: Vec<SimPub>,
    },
    Message(SimPub),
    Reset {
        position: Position,
        reason: LossReason,
        /// Sent to live subscribers (not to those a restarted room catches up).
        live: bool,
    },
}

pub struct World {
    shape: Shape,
    rng: Rng,
    sched: Scheduler<Ev>,
    redis: Redis,
    snapshots: Vec<Data>,
    pubsub: BTreeSet<(usize, usize)>,
    instances: Vec<Instance>,
    clients: Vec<Client>,
    publishers: Vec<Publisher>,
    /// Every (epoch, seq) Redis assigned, with the publication's id and key.
    assigned: BTreeMap<(String, u64), (u64, String)>,
    /// Every assignment of each idempotency key.
    by_key: BTreeMap<String, Vec<(Epoch, u64)>>,
    next_id: u64,
    pub stats: Stats,
    trace: VecDeque<String>,
    done: bool,
}

/// A broken guarantee, with the recent history that led to it.
pub type Violation = String;

const FILL_RETRY_MS: u64 = 50;

impl World {
    pub fn new(seed: u64) -> World {
        let mut rng = Rng::new(seed);
        let shape = Shape::draw(&mut rng);
        let mut world = World {
            redis: Redis::new(shape.limits),
            rng,
            sched: Scheduler::new(),
            snapshots: Vec::new(),
            pubsub: BTreeSet::new(),
            instances: Vec::new(),
            clients: Vec::new(),
            publishers: Vec::new(),
            assigned: BTreeMap::new(),
            by_key: BTreeMap::new(),
            next_id: 0,
            stats: Stats::default(),
            trace: VecDeque::new(),
            done: false,
            shape,
        };
        world.plan();
        world
    }

    fn plan(&mut self) {
        let shape = self.shape.clone();
        for _ in 0..shape.instances {
            self.instances.push(Instance {
                alive: true,
                rooms: BTreeMap::new(),
            });
        }
        for client in 0..shape.clients {
            self.clients.push(Client {
                instance: None,
                rooms: vec![(Sub::Idle, None); shape.rooms],
            });
            let at = self.rng.range(0, 300);
            self.sched.after(at, Ev::Connect(client));
        }
        for publisher in 0..shape.publishers {
            let room = self.rng.pick(shape.rooms);
            self.publishers.push(Publisher {
                room,
                next: 0,
                acked: true,
            });
            let at = self.rng.range(0, 100);
            self.sched.after(at, Ev::Publish(publisher));
        }
        let horizon = shape.fault_horizon_ms;
        for _ in 0..shape.redis_restarts {
            let at = self.rng.range(100, horizon);
            self.sched.after(at, Ev::RedisDown);
        }
        for _ in 0..shape.instance_crashes {
            let at = self.rng.range(100, horizon);
            self.sched.after(at, Ev::CrashInstance);
        }
        for _ in 0..shape.room_crashes {
            let at = self.rng.range(100, horizon);
            self.sched.after(at, Ev::CrashRoom);
        }
        for _ in 0..shape.toggles {
            let at = self.rng.range(100, horizon);
            let client = self.rng.pick(shape.clients);
            self.sched.after(at, Ev::Toggle(client));
        }
        for at in (0..horizon).step_by(200) {
            self.sched.after(at, Ev::Snapshot);
        }
        self.sched.after(horizon + 10_000, Ev::FinalCheck);
    }

    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// Runs to the end, checking the guarantees after every event.
    pub fn run(&mut self) -> Result<Stats, Violation> {
        while let Some(event) = self.sched.next() {
            self.stats.events += 1;
            if self.stats.events > 2_000_000 {
                return Err(self.violation("the run does not end (livelock?)"));
            }
            self.handle(event)?;
        }
        if !self.done {
            return Err(self.violation("the final check never ran"));
        }
        Ok(self.stats)
    }

    fn note(&mut self, line: String) {
        if self.trace.len() == 60 {
            self.trace.pop_front();
        }
        self.trace
            .push_back(format!("{:>6} ms  {line}", self.sched.now));
    }

    fn violation(&self, what: &str) -> Violation {
        let mut text = format!("{what}\nrecent events (oldest first):\n");
        for line in &self.trace {
            text.push_str(line);
            text.push('\n');
        }
        text
    }

    fn delay(&mut self) -> u64 {
        let max = self.shape.max_delay_ms;
        self.rng.range(0, max)
    }

    fn alive(&self) -> Vec<usize> {
        (0..self.instances.len())
            .filter(|&i| self.instances[i].alive)
            .collect()
    }

    fn handle(&mut self, event: Ev) -> Result<(), Violation> {
        match event {
            Ev::Publish(publisher) => self.publish(publisher)?,
            Ev::PubSub {
                instance,
                publication,
            } => {
                let room = publication.room;
                if self.instances[instance].alive
                    && self.instances[instance].rooms.contains_key(&room)
                {
                    self.enqueue(instance, room, Msg::Publication(publication))?;
                }
            }
            Ev::Read {
                instance,
                room,
                generation,
                read,
            } => self.read_done(instance, room, generation, read)?,
            Ev::Retry {
                instance,
                room,
                generation,
            } => {
                if self.actor(instance, room, generation).is_some() {
                    self.enqueue(instance, room, Msg::Resync)?;
                }
            }
            Ev::RedisDown => self.redis_down(),
            Ev::RedisUp => self.redis_up(),
            Ev::Snapshot => {
                if self.redis.up {
                    self.snapshots.push(self.redis.snapshot());
                }
            }
            Ev::Resync { instance } => {
                let rooms: Vec<usize> = self.instances[instance].rooms.keys().copied().collect();
                for room in rooms {
                    self.enqueue(instance, room, Msg::Resync)?;
                }
            }
            Ev::CrashInstance => self.crash_instance(),
            Ev::StartInstance => self.instances.push(Instance {
                alive: true,
                rooms: BTreeMap::new(),
            }),
            Ev::CrashRoom => self.crash_room(),
            Ev::Connect(client) => self.connect(client)?,
            Ev::Subscribe { client, room } => self.subscribe(client, room)?,
            Ev::Toggle(client) => self.toggle(client)?,
            Ev::FinalCheck => self.final_check()?,
        }
        Ok(())
    }

    // Publishers and Redis.

    fn publish(&mut self, publisher: usize) -> Result<(), Violation> {
        let p = &mut self.publishers[publisher];
        if p.acked {
            if p.next == self.shape.messages {
                return Ok(());
            }
            p.next += 1;
            p.acked = false;
        }
        let (room, key) = (p.room, format!("p{publisher}-{}", p.next));
        if !self.redis.up {
            let retry = self.rng.range(20, 200);
            self.sched.after(retry, Ev::Publish(publisher));
            return Ok(());
        }
        self.next_id += 1;
        let ack = self.redis.publish(room, &key, self.next_id, self.sched.now);
        if let Some(publication) = &ack.publication {
            self.record(publication, &key)?;
            self.fan_out(publication.clone());
        } else {
            let known = self
                .by_key
                .get(&key)
                .is_some_and(|all| all.contains(&(ack.epoch.clone(), ack.seq)));
            if !known {
                return Err(self.violation(&format!(
                    "a retry of {key} was acked with {}/{}, which it never had",
                    ack.epoch, ack.seq
                )));
            }
        }
        let lost = self.rng.chance(self.shape.lost_acks_percent);
        self.note(format!(
            "publish {key} -> {}/{}{}{}",
            ack.epoch,
            ack.seq,
            if ack.duplicate { " (repeat)" } else { "" },
            if lost { " ack lost" } else { "" }
        ));
        // A lost ack: the instance died before answering; the publisher retries the same
        // key, possibly elsewhere.
        self.publishers[publisher].acked = !lost;
        let next = if lost {
            self.rng.range(20, 200)
        } else {
            self.rng.range(5, 40)
        };
        self.sched.after(next, Ev::Publish(publisher));
        Ok(())
    }

    fn record(&mut self, publication: &SimPub, key: &str) -> Result<(), Violation> {
        self.stats.published += 1;
        let slot = (publication.epoch.to_string(), publication.seq);
        if let Some((_, other)) = self.assigned.get(&slot) {
            return Err(self.violation(&format!(
                "seq {}/{} reused (by {key}, first by {other})",
                publication.epoch, publication.seq
            )));
        }
        self.assigned.insert(slot, (publication.id, key.to_owned()));
        let all = self.by_key.entry(key.to_owned()).or_default();
        if all.iter().any(|(epoch, _)| *epoch == publication.epoch) {
            return Err(self.violation(&format!(
                "{key} sequenced twice in epoch {}",
                publication.epoch
            )));
        }
        all.push((publication.epoch.clone(), publication.seq));
        Ok(())
    }

    /// Pub/Sub: at most once, each copy delayed on its own (so copies overtake each
    /// other).
    fn fan_out(&mut self, publication: SimPub) {
        let subscribed: Vec<usize> = self
            .pubsub
            .iter()
            .filter(|(_, room)| *room == publication.room)
            .map(|(instance, _)| *instance)
            .collect();
        for instance in subscribed {
            if self.rng.chance(self.shape.loss_percent) {
                continue;
            }
            let delay = self.delay();
            self.sched.after(
                delay,
                Ev::PubSub {
                    instance,
                    publication: publication.clone(),
                },
            );
        }
    }

    fn redis_down(&mut self) {
        if !self.redis.up {
            return;
        }
        self.note("redis down".into());
        self.redis.up = false;
        let outage = self.rng.range(10, 300);
        self.sched.after(outage, Ev::RedisUp);
    }

    fn redis_up(&mut self) {
        let from = if !self.snapshots.is_empty() && self.rng.chance(50) {
            let index = self.rng.pick(self.snapshots.len());
            Some(self.snapshots[index].clone())
        } else {
            None
        };
        self.note(format!(
            "redis up, {}",
            if from.is_some() {
                "from an older snapshot"
            } else {
                "empty"
            }
        ));
        self.redis.restart(from);
        self.redis.up = true;
        // Every instance's Pub/Sub connection reconnects and asks its rooms to resync.
        for instance in self.alive() {
            let delay = self.rng.range(1, 100);
            self.sched.after(delay, Ev::Resync { instance });
        }
    }

    // Instances and their room actors.

    fn actor(&mut self, instance: usize, room: usize, generation: u64) -> Option<&mut RoomActor> {
        let inst = &mut self.instances[instance];
        if !inst.alive {
            return None;
        }
        inst.rooms
            .get_mut(&room)
            .filter(|actor| actor.generation == generation)
    }

    fn enqueue(&mut self, instance: usize, room: usize, msg: Msg) -> Result<(), Violation> {
        if !self.instances[instance].rooms.contains_key(&room) {
            self.start_room(instance, room, Vec::new(), None, 0);
        }
        let actor = self.instances[instance]
            .rooms
            .get_mut(&room)
            .expect("started");
        actor.mailbox.push_back(msg);
        self.pump(instance, room)
    }

    /// Starts a room actor: subscribe to Pub/Sub first, then read the top (and warm the
    /// cache); messages wait in the mailbox meanwhile.
    fn start_room(
        &mut self,
        instance: usize,
        room: usize,
        members: Vec<Member>,
        members_epoch: Option<Epoch>,
        generation: u64,
    ) {
        self.pubsub.insert((instance, room));
        self.instances[instance].rooms.insert(
            room,
            RoomActor {
                generation,
                core: None,
                members,
                members_epoch,
                mailbox: VecDeque::new(),
                busy: true,
            },
        );
        let delay = self.delay();
        self.sched.after(
            delay,
            Ev::Read {
                instance,
                room,
                generation,
                read: None,
            },
        );
    }

    /// Hands the actor its next messages while no read is outstanding.
    fn pump(&mut self, instance: usize, room: usize) -> Result<(), Violation> {
        loop {
            let actor = self.instances[instance]
                .rooms
                .get_mut(&room)
                .expect("actor");
            if actor.busy {
                return Ok(());
            }
            let Some(msg) = actor.mailbox.pop_front() else {
                return Ok(());
            };
            let core = actor.core.as_mut().expect("started");
            let actions = match msg {
                Msg::Publication(p) => core.publication(p),
                Msg::Subscribe { client, since } => core.subscribe(client, since),
                Msg::Resync => core.resync(),
                Msg::Unsubscribe { client } => {
                    actor.members.retain(|m| m.client != client);
                    Vec::new()
                }
            };
            self.execute(instance, room, actions)?;
        }
    }

    fn read_done(
        &mut self,
        instance: usize,
        room: usize,
        generation: u64,
        read: Option<Read>,
    ) -> Result<(), Violation> {
        if self.actor(instance, room, generation).is_none() {
            return Ok(());
        }
        self.stats.reads += 1;
        let limit = self.shape.settings.cache_size;
        let answer = self.redis.up.then(|| match &read {
            None => Answer::Page(self.redis.history(room, None, limit)),
            Some(Read::Top) => Answer::Page(self.redis.history(room, None, 0)),
            Some(Read::After { after, up_to }) => Answer::Page(self.redis.history(
                room,
                Some(*after),
                up_to.saturating_sub(*after) as usize,
            )),
            Some(Read::ResetEpoch { stale }) => Answer::Top(self.redis.reset_epoch(room, stale)),
        });
        if read.is_none() && answer.is_none() {
            // A failed start is retried after a while, messages kept.
            let delay = self.rng.range(20, 100);
            self.sched.after(
                delay,
                Ev::Read {
                    instance,
                    room,
                    generation,
                    read: None,
                },
            );
            return Ok(());
        }
        let settings = self.shape.settings;
        let actor = self.actor(instance, room, generation).expect("checked");
        let actions = match (read, answer) {
            (None, Some(Answer::Page(page))) => {
                let mut core = Core::new(settings, page);
                let epoch = core.position().epoch;
                let previous = actor.members_epoch.replace(epoch);
                let inherited: Vec<_> = actor
                    .members
                    .iter_mut()
                    .map(|m| {
                        let since = (m.catching_up.take())
                            .or_else(|| previous.clone().map(|e| Position::new(e, m.last_seq)));
                        m.catching_up = since.clone();
                        (m.client, since)
                    })
                    .collect();
                let actions = core.catch_up(inherited);
                actor.core = Some(core);
                actions
            }
            (Some(_), Some(answer)) => actor.core.as_mut().expect("started").answer(answer),
            (Some(_), None) => actor.core.as_mut().expect("started").failed(SimError),
            (None, _) => unreachable!("a start reads a page"),
        };
        let actor = self.actor(instance, room, generation).expect("checked");
        actor.busy = false;
        self.execute(instance, room, actions)?;
        self.pump(instance, room)
    }

    /// The shell: what `room::follow::Shell` does with real subscribers.
    fn execute(
        &mut self,
        instance: usize,
        room: usize,
        actions: Vec<CoreAction>,
    ) -> Result<(), Violation> {
        for action in actions {
            match action {
                Action::Read(read) => self.start_read(instance, room, read),
                Action::Deliver(p, _) => {
                    let seq = p.seq;
                    for client in self.members_before(instance, room, seq, Some(seq)) {
                        self.receive(client, room, Frame::Message(p.clone()))?;
                    }
                }
                Action::Reset { position, reason } => {
                    self.stats.resets += 1;
                    let to = Some(position.seq);
                    for client in self.members_before(instance, room, u64::MAX, to) {
                        let frame = Frame::Reset {
                            position: position.clone(),
                            reason,
                            live: true,
                        };
                        self.receive(client, room, frame)?;
                    }
                }
                Action::EpochChanged { new, .. } => {
                    self.stats.epochs += 1;
                    self.room_actor(instance, room).members_epoch = Some(new);
                }
                Action::Subscribed {
                    subscriber,
                    position,
                    loss,
                    replay,
                    ..
                } => self.subscribed(instance, room, subscriber, position, loss, replay)?,
                Action::SubscribeFailed { subscriber, .. } => {
                    self.clients[subscriber].rooms[room].0 = Sub::Idle;
                    let delay = self.rng.range(20, 100);
                    let client = subscriber;
                    self.sched.after(delay, Ev::Subscribe { client, room });
                }
                Action::CaughtUp {
                    subscriber,
                    position,
                    loss,
                    replay,
                } => self.caught_up(instance, room, subscriber, position, loss, replay)?,
                Action::StartFailed(_) => {
                    // Retried like a failed start read; nothing follows this action.
                    let actor = self.room_actor(instance, room);
                    actor.core = None;
                    actor.busy = true;
                    let generation = actor.generation;
                    let read = None;
                    let event = Ev::Read {
                        instance,
                        room,
                        generation,
                        read,
                    };
                    self.sched.after(50, event);
                }
                Action::ScheduleRetry => {
                    let generation = self.room_actor(instance, room).generation;
                    let event = Ev::Retry {
                        instance,
                        room,
                        generation,
                    };
                    self.sched.after(FILL_RETRY_MS, event);
                }
                Action::ReadFailed { .. }
                | Action::Rewound { .. }
                | Action::GapFound
                | Action::BrokerReplay => {}
            }
        }
        Ok(())
    }

    fn room_actor(&mut self, instance: usize, room: usize) -> &mut RoomActor {
        self.instances[instance]
            .rooms
            .get_mut(&room)
            .expect("actor")
    }

    /// The read reaches Redis after a network delay; the actor waits for it.
    fn start_read(&mut self, instance: usize, room: usize, read: Read) {
        let actor = self.room_actor(instance, room);
        actor.busy = true;
        let generation = actor.generation;
        let delay = self.delay();
        let read = Some(read);
        let event = Ev::Read {
            instance,
            room,
            generation,
            read,
        };
        self.sched.after(delay, event);
    }

    fn subscribed(
        &mut self,
        instance: usize,
        room: usize,
        client: usize,
        position: Position,
        loss: Option<LossReason>,
        replay: Vec<SimPub>,
    ) -> Result<(), Violation> {
        let actor = self.room_actor(instance, room);
        actor.members.retain(|m| m.client != client);
        let last_seq = position.seq;
        actor.members.push(Member {
            client,
            last_seq,
            catching_up: None,
        });
        let since = self.clients[client].rooms[room].1.clone();
        let frame = Frame::Subscribed {
            since,
            position,
            loss,
            replay,
        };
        self.receive(client, room, frame)
    }

    fn caught_up(
        &mut self,
        instance: usize,
        room: usize,
        client: usize,
        position: Position,
        loss: Option<LossReason>,
        replay: Vec<SimPub>,
    ) -> Result<(), Violation> {
        let last = replay.last().map_or(position.seq, |p| p.seq);
        let actor = self.room_actor(instance, room);
        if let Some(m) = actor.members.iter_mut().find(|m| m.client == client) {
            m.last_seq = last;
            m.catching_up = None;
        }
        if let Some(reason) = loss {
            // The subscriber was live when its epoch ended: it must get the new epoch from
            // seq 1 (a reset to seq 0), unless Redis no longer holds that epoch's start.
            let live = self.redis.holds_from_start(room, &position.epoch);
            let frame = Frame::Reset {
                position,
                reason,
                live,
            };
            self.receive(client, room, frame)?;
        }
        for p in replay {
            self.receive(client, room, Frame::Message(p))?;
        }
        Ok(())
    }

    /// Members that have not had `seq` (all for a reset), moved to `to`.
    fn members_before(
        &mut self,
        instance: usize,
        room: usize,
        seq: u64,
        to: Option<u64>,
    ) -> Vec<usize> {
        let actor = self.instances[instance]
            .rooms
            .get_mut(&room)
            .expect("actor");
        let mut targets = Vec::new();
        for member in &mut actor.members {
            if seq == u64::MAX || member.last_seq < seq {
                targets.push(member.client);
                if let Some(to) = to {
                    member.last_seq = to;
                }
            }
        }
        targets
    }

    fn crash_instance(&mut self) {
        let alive = self.alive();
        if alive.len() < 2 {
            return;
        }
        let instance = alive[self.rng.pick(alive.len())];
        self.note(format!("instance {instance} killed"));
        let inst = &mut self.instances[instance];
        inst.alive = false;
        inst.rooms.clear();
        self.pubsub.retain(|(i, _)| *i != instance);
        for client in 0..self.clients.len() {
            if self.clients[client].instance == Some(instance) {
                self.clients[client].instance = None;
                for state in &mut self.clients[client].rooms {
                    state.0 = Sub::Idle;
                }
                let delay = self.rng.range(10, 200);
                self.sched.after(delay, Ev::Connect(client));
            }
        }
        let delay = self.rng.range(100, 500);
        self.sched.after(delay, Ev::StartInstance);
    }

    /// A room actor panics: its supervisor starts a new one with the same subscribers;
    /// what was in its mailbox is lost, and subscribes waiting for it (queued or in
    /// progress) fail, so their callers retry.
    fn crash_room(&mut self) {
        let candidates: Vec<(usize, usize)> = self
            .alive()
            .into_iter()
            .flat_map(|i| {
                self.instances[i]
                    .rooms
                    .iter()
                    .filter(|(_, a)| a.core.is_some())
                    .map(move |(room, _)| (i, *room))
            })
            .collect();
        if candidates.is_empty() {
            return;
        }
        let (instance, room) = candidates[self.rng.pick(candidates.len())];
        self.note(format!("room {room} on instance {instance} panics"));
        let old = self.instances[instance].rooms.remove(&room).expect("actor");
        self.start_room(
            instance,
            room,
            old.members,
            old.members_epoch,
            old.generation + 1,
        );
        for client in 0..self.clients.len() {
            let c = &mut self.clients[client];
            if c.instance == Some(instance) && c.rooms[room].0 == Sub::Subscribing {
                c.rooms[room].0 = Sub::Idle;
                let delay = self.rng.range(5, 50);
                self.sched.after(delay, Ev::Subscribe { client, room });
            }
        }
    }

    // Clients.

    fn connect(&mut self, client: usize) -> Result<(), Violation> {
        let alive = self.alive();
        let instance = alive[self.rng.pick(alive.len())];
        self.clients[client].instance = Some(instance);
        self.note(format!("client {client} connects to instance {instance}"));
        for room in 0..self.shape.rooms {
            self.subscribe(client, room)?;
        }
        Ok(())
    }

    fn subscribe(&mut self, client: usize, room: usize) -> Result<(), Violation> {
        let Some(instance) = self.clients[client].instance else {
            return Ok(());
        };
        if !self.instances[instance].alive {
            return Ok(());
        }
        let state = &mut self.clients[client].rooms[room];
        if state.0 != Sub::Idle {
            // One subscribe at a time per room, as a real client (request ids) does.
            return Ok(());
        }
        state.0 = Sub::Subscribing;
        let since = state.1.clone();
        self.enqueue(instance, room, Msg::Subscribe { client, since })
    }

    /// Unsubscribe from a room and come back later with the last position.
    fn toggle(&mut self, client: usize) -> Result<(), Violation> {
        let Some(instance) = self.clients[client].instance else {
            return Ok(());
        };
        let room = self.rng.pick(self.shape.rooms);
        if self.clients[client].rooms[room].0 != Sub::Subscribed {
            return Ok(());
        }
        self.note(format!("client {client} leaves room {room} for a while"));
        self.clients[client].rooms[room].0 = Sub::Idle;
        self.enqueue(instance, room, Msg::Unsubscribe { client })?;
        let delay = self.rng.range(0, 50);
        self.sched.after(delay, Ev::Subscribe { client, room });
        Ok(())
    }

    /// The per-subscriber guarantees, checked on every frame.
    fn receive(&mut self, client: usize, room: usize, frame: Frame) -> Result<(), Violation> {
        let (sub, position) = self.clients[client].rooms[room].clone();
        let new_position = match frame {
            Frame::Subscribed {
                since,
                position: at,
                loss,
                replay,
            } => {
                if sub != Sub::Subscribing {
                    return Err(self.violation(&format!("client {client}: subscribed twice")));
                }
                let cursor = self.check_resume(client, room, since, at, loss, &replay)?;
                self.clients[client].rooms[room].0 = Sub::Subscribed;
                cursor
            }
            // Frames of a subscription the client has left (still queued) are ignored.
            _ if sub != Sub::Subscribed => return Ok(()),
            Frame::Message(p) => {
                let cursor = position.expect("subscribed");
                self.check_next(client, room, &cursor, &p)?
            }
            Frame::Reset {
                position: at,
                reason,
                live,
            } => {
                let cursor = position.expect("subscribed");
                self.note(format!(
                    "client {client} room {room}: reset to {at} ({})",
                    reason.name()
                ));
                // A live subscriber gets the new epoch from its first message, also when
                // a restarted room catches it up; only when Redis no longer holds the new
                // epoch's start may it be placed further on.
                let ok = match reason {
                    LossReason::EpochChanged => (at.seq == 0 || !live) && at.epoch != cursor.epoch,
                    _ => at.epoch == cursor.epoch && at.seq >= cursor.seq,
                };
                if !ok {
                    return Err(self.violation(&format!(
                        "client {client} room {room}: reset from {cursor} to {at} ({})",
                        reason.name()
                    )));
                }
                at
            }
        };
        self.clients[client].rooms[room].1 = Some(new_position);
        Ok(())
    }

    /// A `subscribed` answer: a recovered resume replays exactly `(since, at]`; anything
    /// else places the client at `at` with nothing replayed.
    fn check_resume(
        &mut self,
        client: usize,
        room: usize,
        since: Option<Position>,
        at: Position,
        loss: Option<LossReason>,
        replay: &[SimPub],
    ) -> Result<Position, Violation> {
        self.note(format!(
            "client {client} room {room}: subscribed at {at}, since {since:?}, loss {loss:?}, replay {}",
            replay.len()
        ));
        let mut cursor = match (&since, loss) {
            (Some(since), None) => since.clone(),
            _ => {
                if !replay.is_empty() {
                    return Err(self.violation("a replay without recovery"));
                }
                if let Some(since) = &since
                    && since.epoch == at.epoch
                    && loss == Some(LossReason::EpochChanged)
                {
                    return Err(self.violation("epoch_changed within one epoch"));
                }
                at.clone()
            }
        };
        for p in replay {
            cursor = self.check_next(client, room, &cursor, p)?;
        }
        if cursor != at {
            return Err(self.violation(&format!(
                "client {client} room {room}: resumed to {cursor}, told {at}"
            )));
        }
        Ok(cursor)
    }

    /// A delivered publication must be the next one of the client's epoch, as Redis
    /// sequenced it.
    fn check_next(
        &mut self,
        client: usize,
        room: usize,
        cursor: &Position,
        p: &SimPub,
    ) -> Result<Position, Violation> {
        self.stats.delivered += 1;
        if p.epoch != cursor.epoch || p.seq != cursor.seq + 1 || p.room != room {
            return Err(self.violation(&format!(
                "client {client} room {room}: at {cursor}, received {}/{} (gap, duplicate or reorder without a reset)",
                p.epoch, p.seq
            )));
        }
        let truth = self
            .assigned
            .get(&(p.epoch.to_string(), p.seq))
            .map(|t| t.0);
        if truth != Some(p.id) {
            return Err(self.violation(&format!(
                "client {client}: {}/{} is not what Redis sequenced",
                p.epoch, p.seq
            )));
        }
        Ok(p.position())
    }

    /// After the faults: every instance resyncs (as after a probe), and every client must
    /// reach the top of every room it is subscribed to.
    fn final_check(&mut self) -> Result<(), Violation> {
        if !self.redis.up
            || self
                .publishers
                .iter()
                .any(|p| !p.acked || p.next < self.shape.messages)
        {
            self.sched.after(500, Ev::FinalCheck);
            return Ok(());
        }
        if !self.done {
            self.done = true;
            for instance in self.alive() {
                self.sched.after(1, Ev::Resync { instance });
            }
            self.sched.after(5_000, Ev::FinalCheck);
            return Ok(());
        }
        for client in 0..self.clients.len() {
            for room in 0..self.shape.rooms {
                let (sub, position) = self.clients[client].rooms[room].clone();
                let top = self.redis.top(room);
                if sub != Sub::Subscribed || position.as_ref() != Some(&top) {
                    return Err(self.violation(&format!(
                        "client {client} room {room}: ends {sub:?} at {position:?}, Redis top {top}"
                    )));
                }
            }
        }
        Ok(())
    }
}

trait Positioned {
    fn position(&self) -> Position;
}

impl Positioned for SimPub {
    fn position(&self) -> Position {
        Position::new(self.epoch.clone(), self.seq)
    }
}
