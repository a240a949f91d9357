//! The simulated Redis: per room an epoch bound to the process that holds it (its
//! `run_id`), a sequence counter, a replay buffer bounded by count and an idempotency
//! window — the model of `publish.lua`, `history.lua` and `reset_epoch.lua`. A restart
//! comes back empty or from an older snapshot, under a new `run_id` either way, so every
//! room it holds starts a new epoch on first use.

use roomcast::stream::{DedupeWindow, Epoch, Page, Position, ReplayBuffer};
use std::collections::BTreeMap;

/// One sequenced publication.
#[derive(Debug, Clone, PartialEq)]
pub struct SimPub {
    pub room: usize,
    pub epoch: Epoch,
    pub seq: u64,
    pub time_ms: u64,
    pub id: u64,
}

impl roomcast::stream::Sequenced for SimPub {
    fn epoch(&self) -> &Epoch {
        &self.epoch
    }
    fn seq(&self) -> u64 {
        self.seq
    }
    fn time_ms(&self) -> u64 {
        self.time_ms
    }
    fn id(&self) -> u64 {
        self.id
    }
}

/// Bounds of the simulated Redis.
#[derive(Debug, Clone, Copy)]
pub struct RedisLimits {
    pub buffer: usize,
    pub window_ms: u64,
}

#[derive(Clone)]
struct Meta {
    epoch: Epoch,
    seq: u64,
    run_id: u64,
}

/// One room's keys.
#[derive(Clone)]
struct RoomKeys {
    meta: Option<Meta>,
    log: ReplayBuffer<SimPub>,
    idem: DedupeWindow<(Epoch, u64)>,
}

/// The data set of the simulated Redis (what a snapshot holds).
#[derive(Clone)]
pub struct Data {
    rooms: BTreeMap<usize, RoomKeys>,
}

/// The simulated Redis.
pub struct Redis {
    pub limits: RedisLimits,
    data: Data,
    run_id: u64,
    pub up: bool,
    epochs: u64,
}

/// The answer to a publish.
pub struct Ack {
    pub epoch: Epoch,
    pub seq: u64,
    pub duplicate: bool,
    /// The publication to fan out (`None` for a repeat).
    pub publication: Option<SimPub>,
}

impl Redis {
    pub fn new(limits: RedisLimits) -> Self {
        Redis {
            limits,
            data: Data {
                rooms: BTreeMap::new(),
            },
            run_id: 1,
            up: true,
            epochs: 0,
        }
    }

    pub fn snapshot(&self) -> Data {
        self.data.clone()
    }

    /// The process is replaced: empty (`None`) or loaded from an older snapshot.
    pub fn restart(&mut self, from: Option<Data>) {
        self.run_id += 1;
        self.data = from.unwrap_or(Data {
            rooms: BTreeMap::new(),
        });
    }

    fn keys(&mut self, room: usize) -> &mut RoomKeys {
        let limits = self.limits;
        self.data.rooms.entry(room).or_insert_with(|| RoomKeys {
            meta: None,
            log: ReplayBuffer::new(limits.buffer, u64::MAX),
            idem: DedupeWindow::new(limits.window_ms, 10_000),
        })
    }

    fn new_epoch(&mut self, room: usize) -> Epoch {
        self.epochs += 1;
        Epoch::new(format!("r{room}e{}", self.epochs))
    }

    /// The room's meta, starting a new epoch when the room has none or it belongs to
    /// another Redis process.
    fn meta(&mut self, room: usize) -> Meta {
        let run_id = self.run_id;
        let current = self.keys(room).meta.clone();
        match current {
            Some(meta) if meta.run_id == run_id => meta,
            _ => {
                let epoch = self.new_epoch(room);
                let keys = self.keys(room);
                keys.log.clear();
                let meta = Meta {
                    epoch,
                    seq: 0,
                    run_id,
                };
                keys.meta = Some(meta.clone());
                meta
            }
        }
    }

    pub fn publish(&mut self, room: usize, key: &str, id: u64, now: u64) -> Ack {
        if let Some((epoch, seq)) = self.keys(room).idem.get(key, now) {
            return Ack {
                epoch,
                seq,
                duplicate: true,
                publication: None,
            };
        }
        let mut meta = self.meta(room);
        meta.seq += 1;
        let publication = SimPub {
            room,
            epoch: meta.epoch.clone(),
            seq: meta.seq,
            time_ms: now,
            id,
        };
        let keys = self.keys(room);
        keys.log
            .push(meta.seq, now, publication.clone())
            .expect("the log is consecutive");
        keys.idem
            .insert(key.to_owned(), (meta.epoch.clone(), meta.seq), now);
        let ack = Ack {
            epoch: meta.epoch.clone(),
            seq: meta.seq,
            duplicate: false,
            publication: Some(publication),
        };
        keys.meta = Some(meta);
        ack
    }

    /// `history`: the top and the newest `limit` (`after: None`) or up to `limit` after
    /// `after`.
    pub fn history(&mut self, room: usize, after: Option<u64>, limit: usize) -> Page<SimPub> {
        let meta = self.meta(room);
        let log = &self.keys(room).log;
        let publications = match after {
            None => log.latest(limit),
            Some(after) => log.after(after, limit),
        };
        Page {
            top: Position::new(meta.epoch, meta.seq),
            first_seq: log.first_seq(),
            publications,
        }
    }

    /// `reset_epoch`: a new epoch if the room is still in `stale`.
    pub fn reset_epoch(&mut self, room: usize, stale: &Epoch) -> Position {
        let current = self.keys(room).meta.clone();
        match current {
            Some(meta) if meta.epoch != *stale => Position::new(meta.epoch, meta.seq),
            _ => {
                let epoch = self.new_epoch(room);
                let run_id = self.run_id;
                let keys = self.keys(room);
                keys.log.clear();
                keys.meta = Some(Meta {
                    epoch: epoch.clone(),
                    seq: 0,
                    run_id,
                });
                Position::new(epoch, 0)
            }
        }
    }

    /// Whether Redis still holds `epoch` of the room from its first message (or has
    /// sequenced nothing in it); read without side effects, for the checker.
    pub fn holds_from_start(&self, room: usize, epoch: &Epoch) -> bool {
        let Some(keys) = self.data.rooms.get(&room) else {
            return false;
        };
        match &keys.meta {
            Some(meta) if meta.run_id == self.run_id && meta.epoch == *epoch => {
                meta.seq == 0 || keys.log.first_seq() == Some(1)
            }
            _ => false,
        }
    }

    /// The room's top, creating its epoch like any read does.
    pub fn top(&mut self, room: usize) -> Position {
        let meta = self.meta(room);
        Position::new(meta.epoch, meta.seq)
    }
}
