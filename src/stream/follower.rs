//! A room's delivery order on one instance, as a pure state machine: what to deliver,
//! when to read the broker's replay buffer, when to tell subscribers that continuity
//! broke. It does no I/O and keeps no clock; the room actor (`room::actor`) is its shell
//! and the deterministic simulation (`tests/sim`) drives the same code.
//!
//! Inputs are events: a publication arrived ([`Follower::publication`]), a subscriber
//! joins with its last position ([`Follower::subscribe`]), the broker asks for a
//! comparison ([`Follower::resync`]), and the answer to a read the follower asked for
//! ([`Follower::answer`], [`Follower::failed`]). Outputs are [`Action`]s. At most one
//! [`Action::Read`] is outstanding, always the last action of a batch: the shell performs
//! it and feeds the answer back before it hands the follower anything else, exactly as
//! the actor handled one message at a time while it awaited the broker.
//!
//! Continuity: `cursor` is the last sequence number delivered. A publication beyond
//! `cursor + 1` waits in `pending` while the gap is filled from the replay buffer; when
//! the buffer cannot fill it, or the epoch changed, subscribers get an explicit reset —
//! never a silent skip. A client that joins while messages flow gets its replay
//! `(since, cursor]` and then live messages `(cursor, …]`: the seam is exact because both
//! come from this one state machine.

use super::{Epoch, LossReason, Position, Recovery, ReplayBuffer, SeqCheck, check_seq, recover};
use std::collections::{BTreeMap, VecDeque};

/// What the follower needs to know about a publication.
pub trait Sequenced: Clone {
    /// The epoch it was sequenced in.
    fn epoch(&self) -> &Epoch;
    /// Its sequence number.
    fn seq(&self) -> u64;
    /// When it was sequenced (ms since the Unix epoch).
    fn time_ms(&self) -> u64;
    /// Random id given at publish: a different id under a delivered sequence number means
    /// the broker's stream went backwards.
    fn id(&self) -> u64;
}

/// Bounds of a follower.
#[derive(Debug, Clone, Copy)]
pub struct FollowerSettings {
    /// Publications kept in the local cache.
    pub cache_size: usize,
    /// Age bound of the local cache (ms).
    pub cache_ttl_ms: u64,
    /// Most out-of-order publications held while a gap is filled; beyond it the gap is
    /// declared lost.
    pub max_pending: usize,
}

/// A read of the broker the follower asks its shell to perform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// The room's current top (a history read of no publications).
    Top,
    /// The replay buffer's publications in `(after, up_to]` (at most `up_to - after`).
    After {
        /// Exclusive lower bound.
        after: u64,
        /// Inclusive upper bound.
        up_to: u64,
    },
    /// Start a new epoch if the room's epoch is still `stale` (the stream went
    /// backwards); answered with the top afterwards.
    ResetEpoch {
        /// The epoch seen to go backwards.
        stale: Epoch,
    },
}

/// A read of the replay buffer, as the follower needs it.
#[derive(Debug, Clone)]
pub struct Page<P> {
    /// The room's current top.
    pub top: Position,
    /// Oldest buffered sequence number (`None`: empty).
    pub first_seq: Option<u64>,
    /// The publications read, oldest first.
    pub publications: Vec<P>,
}

/// The answer to a [`Read`].
#[derive(Debug, Clone)]
pub enum Answer<P> {
    /// Answer to [`Read::Top`] and [`Read::After`].
    Page(Page<P>),
    /// Answer to [`Read::ResetEpoch`].
    Top(Position),
}

/// Which operation a failed read belonged to (for the shell's log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryCause {
    /// A publication of another epoch arrived and the top could not be read.
    ForeignEpoch,
    /// A comparison with the broker (after a broker reconnect) failed.
    Resync,
    /// A gap starting at `missing_from` could not be filled.
    Gap {
        /// First missing sequence number.
        missing_from: u64,
    },
}

/// What the shell must do, in order.
#[derive(Debug)]
pub enum Action<P, S, E> {
    /// Deliver this publication to every subscriber that has not had it yet; the second
    /// field is the publication before it when the cache still has it (a delta base).
    Deliver(P, Option<P>),
    /// Tell every subscriber that continuity broke; each is now at `position`.
    Reset {
        /// Where subscribers continue from (epoch and the seq before the next delivery).
        position: Position,
        /// Why.
        reason: LossReason,
    },
    /// The room's stream is a new incarnation (history was lost); a
    /// [`Action::Reset`] to `(new, 0)` follows.
    EpochChanged {
        /// The epoch delivered so far.
        old: Epoch,
        /// The broker's epoch.
        new: Epoch,
    },
    /// The broker's top fell below what was delivered in the same epoch; the follower
    /// asks for a new epoch.
    Rewound {
        /// The broker's top.
        top: u64,
        /// The last delivered sequence number.
        delivered: u64,
    },
    /// A gap was found (counted; a fill or a reset follows).
    GapFound,
    /// A resume was served from the broker's replay buffer rather than the local cache.
    BrokerReplay,
    /// Answer a subscribe: queue `subscribed` and the replay, then the subscriber is at
    /// `position` and takes live messages.
    Subscribed {
        /// The subscriber, as handed to [`Follower::subscribe`].
        subscriber: S,
        /// The room's position: the subscriber's position once the replay is queued.
        position: Position,
        /// Whether the client asked to resume (`since` given).
        resumed: bool,
        /// Why the resume could not be exact (`None`: fresh or recovered).
        loss: Option<LossReason>,
        /// What the client missed, oldest first.
        replay: Vec<P>,
    },
    /// A subscribe could not be served (a read failed).
    SubscribeFailed {
        /// The subscriber.
        subscriber: S,
        /// The read's error.
        error: E,
    },
    /// An inherited subscriber (a restarted room) is brought up to date: a reset to
    /// `position` first when `loss` is set, then the replay, which continues from
    /// `position` (after an epoch change: the new epoch from seq 1).
    CaughtUp {
        /// The subscriber.
        subscriber: S,
        /// Where the subscriber stands before the replay (the room's position when
        /// nothing is replayed).
        position: Position,
        /// Why it missed something, if it did.
        loss: Option<LossReason>,
        /// What it missed, oldest first.
        replay: Vec<P>,
    },
    /// Catching up inherited subscribers failed: the room cannot start.
    StartFailed(E),
    /// A read failed outside a subscribe; a [`Action::ScheduleRetry`] may follow.
    ReadFailed {
        /// What was being done.
        cause: RetryCause,
        /// The read's error.
        error: E,
    },
    /// Call [`Follower::resync`] after the retry delay (never asked twice before it).
    ScheduleRetry,
    /// Perform this read and hand the answer to [`Follower::answer`] or
    /// [`Follower::failed`]. Always the last action of a batch.
    Read(Read),
}

/// The operation in progress, from the event that started it.
enum Job<S> {
    Subscribe {
        subscriber: S,
        since: Option<Position>,
    },
    CatchUp {
        subscriber: S,
        rest: VecDeque<(S, Option<Position>)>,
        /// The subscriber was live in an epoch that has ended: it is replayed the new
        /// epoch from its first message.
        from_start: bool,
    },
    ForeignEpoch,
    Resync,
    Drain,
}

/// Which read the follower waits for, and what it was for.
enum Step<P> {
    Idle,
    /// Catching up with the top: the pending new epoch after a rewind.
    TopRewind,
    /// Catching up with the top: reading it.
    TopRead,
    /// Catching up with the top: a new epoch after the top went backwards.
    TopReconcile {
        page_top: Position,
    },
    /// Filling `(after, up_to]`; `in_top`: as part of catching up with the top.
    FillRead {
        up_to: u64,
        after: u64,
        in_top: bool,
    },
    /// Filling, after the page showed the stream went backwards.
    FillReconcile {
        up_to: u64,
        after: u64,
        page: Page<P>,
        in_top: bool,
    },
    /// Reading what a resuming subscriber missed.
    Replay {
        since: Position,
    },
}

/// One room's delivery order on one instance. `P` is a publication, `S` identifies a
/// subscriber being served, `E` is the broker's error.
pub struct Follower<P, S, E> {
    settings: FollowerSettings,
    epoch: Epoch,
    cursor: u64,
    cache: ReplayBuffer<P>,
    /// Publications that arrived ahead of a gap, by sequence number.
    pending: BTreeMap<u64, P>,
    retry_scheduled: bool,
    /// A publication reused a delivered sequence number and the broker could not be told
    /// yet: retried with the next comparison.
    rewind_pending: bool,
    /// The broker said this room may have missed messages and no comparison has
    /// succeeded since: until one does, a subscribe checks with the broker first.
    stale: bool,
    job: Option<Job<S>>,
    step: Step<P>,
    out: Vec<Action<P, S, E>>,
}

impl<P: Sequenced, S, E> Follower<P, S, E> {
    /// A follower starting at the broker's top, its cache warmed with `page` (a read of
    /// the newest publications made after the shell subscribed to the room).
    pub fn new(settings: FollowerSettings, page: Page<P>) -> Self {
        let mut cache = ReplayBuffer::new(settings.cache_size, settings.cache_ttl_ms);
        for publication in page.publications {
            if cache
                .push(publication.seq(), publication.time_ms(), publication)
                .is_err()
            {
                cache.clear();
            }
        }
        Follower {
            settings,
            epoch: page.top.epoch,
            cursor: page.top.seq,
            cache,
            pending: BTreeMap::new(),
            retry_scheduled: false,
            rewind_pending: false,
            stale: false,
            job: None,
            step: Step::Idle,
            out: Vec::new(),
        }
    }

    /// The last delivered position.
    pub fn position(&self) -> Position {
        Position::new(self.epoch.clone(), self.cursor)
    }

    /// True while a read is outstanding.
    pub fn busy(&self) -> bool {
        self.job.is_some()
    }

    /// Evicts cached publications older than the age bound at `now_ms`.
    pub fn prune(&mut self, now_ms: u64) {
        self.cache.prune(now_ms);
    }

    /// Brings subscribers inherited from a previous incarnation of the room (each with
    /// the position it had reached, `None` when the previous epoch is unknown) to the
    /// current position.
    pub fn catch_up(&mut self, inherited: Vec<(S, Option<Position>)>) -> Vec<Action<P, S, E>> {
        self.idle_check();
        self.catch_up_next(inherited.into());
        self.take()
    }

    /// Plans the catch-up of the first of `rest`. A subscriber whose epoch ended was
    /// live when it did, so it is treated as every live subscriber is on an epoch
    /// change (see `adopt_epoch`): told the old epoch ended, then given the new epoch
    /// from its first message, so nothing acknowledged in the new epoch is skipped.
    fn catch_up_next(&mut self, mut rest: VecDeque<(S, Option<Position>)>) {
        let Some((subscriber, since)) = rest.pop_front() else {
            return;
        };
        let from_start = since
            .as_ref()
            .is_some_and(|since| since.epoch != self.epoch);
        self.job = Some(Job::CatchUp {
            subscriber,
            rest,
            from_start,
        });
        let since = match since {
            Some(_) if from_start => Some(Position::new(self.epoch.clone(), 0)),
            since => since,
        };
        self.plan_replay(since, Some(LossReason::EpochChanged));
    }

    /// A subscriber joins, resuming from `since` when given.
    pub fn subscribe(&mut self, subscriber: S, since: Option<Position>) -> Vec<Action<P, S, E>> {
        self.idle_check();
        // A client coming from an instance that is further along (or already in a newer
        // epoch) than this room, or a room that may have missed messages: catch up from
        // the broker first, so the client neither waits for messages it has, nor gets
        // them twice, nor is told a position the broker has moved past.
        let ahead = since
            .as_ref()
            .is_some_and(|since| since.epoch != self.epoch || since.seq > self.cursor);
        let check = ahead || self.stale;
        self.job = Some(Job::Subscribe { subscriber, since });
        if check {
            self.top_begin();
        } else {
            self.after_top();
        }
        self.take()
    }

    /// A publication arrived from the broker's fan-out.
    pub fn publication(&mut self, publication: P) -> Vec<Action<P, S, E>> {
        self.idle_check();
        if *publication.epoch() != self.epoch {
            // Either a stale message of an old epoch, or the first sign that the broker
            // lost the room's history: the broker's top decides which.
            self.job = Some(Job::ForeignEpoch);
            self.top_begin();
        } else if publication.seq() <= self.cursor {
            // Normally a repeated delivery. A different publication under a delivered
            // sequence number means the broker's stream went backwards.
            let reused = self
                .cache
                .get(publication.seq())
                .is_some_and(|cached| cached.id() != publication.id());
            if reused {
                self.rewind_pending = true;
                self.job = Some(Job::Resync);
                self.top_begin();
            }
        } else {
            self.pending.insert(publication.seq(), publication);
            self.job = Some(Job::Drain);
            self.drain();
        }
        self.take()
    }

    /// The broker may have lost messages of this room (or a retry is due): compare with
    /// its top, fill what was missed, then deliver what waits.
    pub fn resync(&mut self) -> Vec<Action<P, S, E>> {
        self.idle_check();
        self.retry_scheduled = false;
        self.stale = true;
        self.job = Some(Job::Resync);
        self.top_begin();
        self.take()
    }

    /// The answer to the outstanding [`Read`].
    pub fn answer(&mut self, answer: Answer<P>) -> Vec<Action<P, S, E>> {
        match (std::mem::replace(&mut self.step, Step::Idle), answer) {
            (Step::TopRewind, Answer::Top(fresh)) => {
                self.rewind_pending = false;
                if fresh.epoch != self.epoch {
                    self.adopt_epoch(fresh.epoch);
                }
                self.wait(Step::TopRead, Read::Top);
            }
            (Step::TopRead, Answer::Page(page)) => self.top_reconcile(page.top),
            (Step::TopReconcile { page_top }, Answer::Top(fresh)) => {
                if fresh.epoch != self.epoch {
                    self.adopt_epoch(fresh.epoch.clone());
                    self.top_tail(fresh);
                } else {
                    self.top_tail(page_top);
                }
            }
            (
                Step::FillRead {
                    up_to,
                    after,
                    in_top,
                },
                Answer::Page(page),
            ) => self.fill_reconcile(up_to, after, page, in_top),
            (
                Step::FillReconcile {
                    up_to,
                    after,
                    page,
                    in_top,
                },
                Answer::Top(fresh),
            ) => {
                if fresh.epoch != self.epoch {
                    self.adopt_epoch(fresh.epoch);
                    self.fill_in_new_epoch(fresh.seq, in_top);
                } else {
                    self.fill_apply(after, page, up_to, in_top);
                }
            }
            (Step::Replay { since }, Answer::Page(page)) => self.replay_read(&since, page),
            (step, _) => {
                // A shell bug: an answer that does not fit the question. Put the
                // question back rather than act on the wrong data.
                debug_assert!(false, "answer does not match the outstanding read");
                self.step = step;
            }
        }
        self.take()
    }

    /// The outstanding [`Read`] failed: the operation ends (a subscribe is refused, other
    /// work is retried later).
    pub fn failed(&mut self, error: E) -> Vec<Action<P, S, E>> {
        self.step = Step::Idle;
        match self.job.take() {
            Some(Job::Subscribe { subscriber, .. }) => {
                self.out.push(Action::SubscribeFailed { subscriber, error })
            }
            Some(Job::CatchUp { .. }) => self.out.push(Action::StartFailed(error)),
            Some(job) => {
                let cause = match job {
                    Job::ForeignEpoch => RetryCause::ForeignEpoch,
                    Job::Resync => RetryCause::Resync,
                    _ => RetryCause::Gap {
                        missing_from: self.cursor + 1,
                    },
                };
                self.out.push(Action::ReadFailed { cause, error });
                if !self.retry_scheduled {
                    self.retry_scheduled = true;
                    self.out.push(Action::ScheduleRetry);
                }
            }
            None => debug_assert!(false, "a failure without an outstanding read"),
        }
        self.take()
    }

    fn take(&mut self) -> Vec<Action<P, S, E>> {
        std::mem::take(&mut self.out)
    }

    fn idle_check(&self) {
        debug_assert!(self.job.is_none(), "an event while a read is outstanding");
    }

    fn wait(&mut self, step: Step<P>, read: Read) {
        self.step = step;
        self.out.push(Action::Read(read));
    }

    // Catching up with the broker's top (and its epoch).

    fn top_begin(&mut self) {
        if self.rewind_pending {
            let stale = self.epoch.clone();
            self.wait(Step::TopRewind, Read::ResetEpoch { stale });
        } else {
            self.wait(Step::TopRead, Read::Top);
        }
    }

    /// Compares the broker's top with what was delivered. A new epoch is adopted; a top
    /// below the cursor in the same epoch means the stream was rewound (the broker came
    /// back from older data), so the room is moved to a new epoch before any reused
    /// sequence number can be mistaken for a delivered one.
    fn top_reconcile(&mut self, top: Position) {
        if top.epoch != self.epoch {
            self.adopt_epoch(top.epoch.clone());
            self.top_tail(top);
        } else if top.seq < self.cursor {
            self.rewound(top.seq);
            let stale = self.epoch.clone();
            self.wait(
                Step::TopReconcile { page_top: top },
                Read::ResetEpoch { stale },
            );
        } else {
            self.top_tail(top);
        }
    }

    fn top_tail(&mut self, top: Position) {
        if top.seq > self.cursor {
            self.fill_begin(top.seq, true);
        } else {
            self.after_top();
        }
    }

    /// Caught up with the top: the job goes on.
    fn after_top(&mut self) {
        match self.job.take() {
            Some(Job::Subscribe { subscriber, since }) => {
                self.stale = false;
                self.job = Some(Job::Subscribe {
                    subscriber,
                    since: since.clone(),
                });
                self.plan_replay(since, None);
            }
            Some(Job::Resync) => {
                self.stale = false;
                self.job = Some(Job::Drain);
                self.drain();
            }
            // A foreign epoch is handled once the top is known; what waits is delivered
            // with the next publication.
            Some(Job::ForeignEpoch) | None => {}
            Some(job @ (Job::CatchUp { .. } | Job::Drain)) => {
                debug_assert!(false, "catch-up and drain never read the top");
                self.job = Some(job);
            }
        }
    }

    fn rewound(&mut self, top: u64) {
        self.out.push(Action::Rewound {
            top,
            delivered: self.cursor,
        });
    }

    // Filling `(cursor, up_to]` from the replay buffer.

    fn fill_begin(&mut self, up_to: u64, in_top: bool) {
        let after = self.cursor;
        self.wait(
            Step::FillRead {
                up_to,
                after,
                in_top,
            },
            Read::After { after, up_to },
        );
    }

    fn fill_reconcile(&mut self, up_to: u64, after: u64, page: Page<P>, in_top: bool) {
        if page.top.epoch != self.epoch {
            // A new epoch: its stream is read again from its first message.
            self.adopt_epoch(page.top.epoch.clone());
            self.fill_in_new_epoch(page.top.seq, in_top);
        } else if page.top.seq < self.cursor {
            self.rewound(page.top.seq);
            let stale = self.epoch.clone();
            let step = Step::FillReconcile {
                up_to,
                after,
                page,
                in_top,
            };
            self.wait(step, Read::ResetEpoch { stale });
        } else {
            self.fill_apply(after, page, up_to, in_top);
        }
    }

    fn fill_in_new_epoch(&mut self, up_to: u64, in_top: bool) {
        if up_to <= self.cursor {
            self.after_fill(in_top);
        } else {
            self.fill_begin(up_to, in_top);
        }
    }

    fn fill_apply(&mut self, after: u64, page: Page<P>, up_to: u64, in_top: bool) {
        let first = page.publications.first().map(Sequenced::seq);
        if first != Some(after + 1) {
            // The replay buffer no longer holds the next message: continue from what it
            // has, after telling subscribers they missed something.
            let resume_after = first.map(|seq| seq - 1).unwrap_or(up_to).min(up_to);
            self.reset_subscribers(LossReason::TooFarBehind, resume_after);
        }
        for publication in page.publications {
            if publication.seq() > up_to {
                break;
            }
            if publication.seq() == self.cursor + 1 {
                self.advance(publication);
            }
        }
        self.after_fill(in_top);
    }

    fn after_fill(&mut self, in_top: bool) {
        if in_top {
            self.after_top();
        } else {
            self.drain();
        }
    }

    /// Delivers pending publications in order, filling gaps from the broker.
    fn drain(&mut self) {
        loop {
            while let Some(entry) = self.pending.first_entry() {
                match check_seq(self.cursor, *entry.key()) {
                    SeqCheck::Duplicate => {
                        entry.remove();
                    }
                    SeqCheck::Next => {
                        let publication = entry.remove();
                        self.advance(publication);
                    }
                    SeqCheck::Gap { .. } => break,
                }
            }
            let Some(&next) = self.pending.keys().next() else {
                self.job = None;
                return;
            };
            self.out.push(Action::GapFound);
            if self.pending.len() > self.settings.max_pending {
                self.reset_subscribers(LossReason::TooFarBehind, next - 1);
                continue;
            }
            self.fill_begin(next - 1, false);
            return;
        }
    }

    // Replays for subscribers who resume.

    /// Plans what a subscriber at `since` needs to reach the cursor; `unknown` is the
    /// loss reported when `since` is `None`.
    fn plan_replay(&mut self, since: Option<Position>, unknown: Option<LossReason>) {
        let Some(since) = since else {
            return self.replayed(Vec::new(), unknown);
        };
        match recover(&since, &self.position(), self.cache.first_seq()) {
            Recovery::UpToDate => return self.replayed(Vec::new(), None),
            Recovery::Replay { after } => {
                if let Some(replay) = self.cache.range(after, self.cursor) {
                    return self.replayed(replay, None);
                }
            }
            Recovery::Lost(LossReason::TooFarBehind) => {}
            Recovery::Lost(reason) => return self.replayed(Vec::new(), Some(reason)),
        }
        // The cache does not reach back: ask the broker.
        let (after, up_to) = (since.seq, self.cursor);
        self.wait(Step::Replay { since }, Read::After { after, up_to });
    }

    fn replay_read(&mut self, since: &Position, page: Page<P>) {
        self.out.push(Action::BrokerReplay);
        let after = since.seq;
        let covered = page.top.epoch == self.epoch
            && matches!(
                recover(since, &page.top, page.first_seq),
                Recovery::Replay { .. }
            )
            && page.publications.first().map(Sequenced::seq) == Some(after + 1)
            && page.publications.iter().any(|p| p.seq() == self.cursor);
        if !covered {
            return self.replayed(Vec::new(), Some(LossReason::TooFarBehind));
        }
        let cursor = self.cursor;
        let replay = page
            .publications
            .into_iter()
            .filter(|p| p.seq() <= cursor)
            .collect();
        self.replayed(replay, None);
    }

    fn replayed(&mut self, replay: Vec<P>, loss: Option<LossReason>) {
        let position = self.position();
        match self.job.take() {
            Some(Job::Subscribe { subscriber, since }) => {
                self.out.push(Action::Subscribed {
                    subscriber,
                    position,
                    resumed: since.is_some(),
                    loss,
                    replay,
                });
            }
            Some(Job::CatchUp {
                subscriber,
                rest,
                from_start,
            }) => {
                let action = match (from_start, loss) {
                    // The whole new epoch is replayed after the epoch's end is told.
                    (true, None) => Action::CaughtUp {
                        subscriber,
                        position: Position::new(self.epoch.clone(), 0),
                        loss: Some(LossReason::EpochChanged),
                        replay,
                    },
                    // Its first messages are gone too: placed at the top, told so.
                    (true, Some(_)) => Action::CaughtUp {
                        subscriber,
                        position,
                        loss: Some(LossReason::EpochChanged),
                        replay: Vec::new(),
                    },
                    (false, loss) => Action::CaughtUp {
                        subscriber,
                        position,
                        loss,
                        replay,
                    },
                };
                self.out.push(action);
                self.catch_up_next(rest);
            }
            job => {
                debug_assert!(false, "only subscribes and catch-ups replay");
                self.job = job;
            }
        }
    }

    // Changing what was delivered.

    /// The broker's stream is a new incarnation: every subscriber is told the old epoch
    /// ended, and the new epoch is delivered from its first message (the caller fills
    /// it), so nothing acknowledged in the new epoch is skipped.
    fn adopt_epoch(&mut self, epoch: Epoch) {
        let old = std::mem::replace(&mut self.epoch, epoch.clone());
        self.out.push(Action::EpochChanged { old, new: epoch });
        self.cache.clear();
        let current = &self.epoch;
        self.pending.retain(|_, p| p.epoch() == current);
        self.reset_subscribers(LossReason::EpochChanged, 0);
    }

    /// Tells every subscriber that continuity was lost and moves the cursor to `seq`.
    fn reset_subscribers(&mut self, reason: LossReason, seq: u64) {
        self.cursor = seq;
        self.cache.clear();
        self.pending.retain(|s, _| *s > seq);
        self.out.push(Action::Reset {
            position: self.position(),
            reason,
        });
    }

    /// Delivers the next publication and caches it.
    fn advance(&mut self, publication: P) {
        let (seq, time) = (publication.seq(), publication.time_ms());
        let previous = seq.checked_sub(1).and_then(|s| self.cache.get(s)).cloned();
        self.cursor = seq;
        self.cache.prune(time);
        if self.cache.push(seq, time, publication.clone()).is_err() {
            self.cache.clear();
            let _ = self.cache.push(seq, time, publication.clone());
        }
        self.out.push(Action::Deliver(publication, previous));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct Msg {
        epoch: Epoch,
        seq: u64,
        id: u64,
    }

    impl Sequenced for Msg {
        fn epoch(&self) -> &Epoch {
            &self.epoch
        }
        fn seq(&self) -> u64 {
            self.seq
        }
        fn time_ms(&self) -> u64 {
            0
        }
        fn id(&self) -> u64 {
            self.id
        }
    }

    type F = Follower<Msg, u32, &'static str>;
    type A = Action<Msg, u32, &'static str>;

    fn e(name: &str) -> Epoch {
        Epoch::new(name)
    }

    fn msg(epoch: &str, seq: u64) -> Msg {
        Msg {
            epoch: e(epoch),
            seq,
            id: seq,
        }
    }

    fn page(epoch: &str, top: u64, from: u64, to: u64) -> Page<Msg> {
        Page {
            top: Position::new(e(epoch), top),
            first_seq: (from <= to).then_some(from),
            publications: (from..=to).map(|s| msg(epoch, s)).collect(),
        }
    }

    fn follower(top: u64) -> F {
        let settings = FollowerSettings {
            cache_size: 100,
            cache_ttl_ms: u64::MAX,
            max_pending: 4,
        };
        Follower::new(settings, page("a", top, 1, top))
    }

    fn delivered(actions: &[A]) -> Vec<u64> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Deliver(m, _) => Some(m.seq),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn next_publication_is_delivered_at_once() {
        let mut f = follower(3);
        let actions = f.publication(msg("a", 4));
        assert_eq!(delivered(&actions), vec![4]);
        assert!(!f.busy());
        assert!(f.publication(msg("a", 4)).is_empty(), "a repeat is dropped");
    }

    #[test]
    fn a_gap_is_filled_before_anything_later() {
        let mut f = follower(3);
        let actions = f.publication(msg("a", 6));
        assert!(matches!(
            actions.last(),
            Some(Action::Read(Read::After { after: 3, up_to: 5 }))
        ));
        assert!(delivered(&actions).is_empty());
        let actions = f.answer(Answer::Page(page("a", 6, 4, 5)));
        assert_eq!(delivered(&actions), vec![4, 5, 6]);
        assert_eq!(f.position().seq, 6);
        assert!(!f.busy());
    }

    #[test]
    fn a_gap_the_buffer_lost_is_reset_explicitly() {
        let mut f = follower(3);
        f.publication(msg("a", 9));
        let actions = f.answer(Answer::Page(page("a", 9, 7, 8)));
        assert!(matches!(
            actions[0],
            Action::Reset {
                reason: LossReason::TooFarBehind,
                ref position
            } if position.seq == 6
        ));
        assert_eq!(delivered(&actions), vec![7, 8, 9]);
    }

    #[test]
    fn an_inherited_subscriber_of_an_ended_epoch_gets_the_new_one_from_seq_1() {
        // The restarted room starts in epoch "a" at 3, holding 1..=3 in its cache; the
        // subscriber had reached 7 of the old epoch "z".
        let mut f = follower(3);
        let actions = f.catch_up(vec![(1, Some(Position::new(e("z"), 7)))]);
        match &actions[..] {
            [
                Action::CaughtUp {
                    subscriber: 1,
                    position,
                    loss: Some(LossReason::EpochChanged),
                    replay,
                },
            ] => {
                assert_eq!(*position, Position::new(e("a"), 0));
                assert_eq!(replay.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 2, 3]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn an_inherited_subscriber_is_placed_at_the_top_when_the_new_epoch_start_is_gone() {
        let settings = FollowerSettings {
            cache_size: 100,
            cache_ttl_ms: u64::MAX,
            max_pending: 4,
        };
        let mut f: F = Follower::new(settings, page("a", 9, 8, 9));
        let actions = f.catch_up(vec![(1, Some(Position::new(e("z"), 7)))]);
        assert!(matches!(
            actions.last(),
            Some(Action::Read(Read::After { after: 0, up_to: 9 }))
        ));
        let actions = f.answer(Answer::Page(page("a", 9, 8, 9)));
        assert!(matches!(
            &actions[..],
            [Action::BrokerReplay, Action::CaughtUp { position, loss: Some(LossReason::EpochChanged), replay, .. }]
                if position.seq == 9 && replay.is_empty()
        ));
    }

    #[test]
    fn a_failed_fill_schedules_one_retry() {
        let mut f = follower(3);
        f.publication(msg("a", 6));
        let actions = f.failed("down");
        assert!(matches!(actions[1], Action::ScheduleRetry));
        assert!(!f.busy());
        f.publication(msg("a", 7));
        let actions = f.failed("down");
        assert_eq!(actions.len(), 1, "the retry is already scheduled");
        let actions = f.resync();
        assert_eq!(actions.last().map(is_top_read), Some(true));
        let actions = f.answer(Answer::Page(page("a", 7, 1, 0)));
        assert!(matches!(
            actions.last(),
            Some(Action::Read(Read::After { after: 3, up_to: 7 }))
        ));
        let actions = f.answer(Answer::Page(page("a", 7, 4, 7)));
        assert_eq!(delivered(&actions), vec![4, 5, 6, 7]);
        assert!(!f.busy());
    }

    fn is_top_read(action: &A) -> bool {
        matches!(action, Action::Read(Read::Top))
    }

    #[test]
    fn a_new_epoch_is_delivered_from_its_first_message() {
        let mut f = follower(5);
        let actions = f.publication(msg("b", 3));
        assert!(is_top_read(actions.last().unwrap()));
        let actions = f.answer(Answer::Page(page("b", 3, 1, 0)));
        assert!(matches!(actions[0], Action::EpochChanged { .. }));
        assert!(matches!(
            actions[1],
            Action::Reset { reason: LossReason::EpochChanged, ref position } if position.seq == 0
        ));
        let actions = f.answer(Answer::Page(page("b", 3, 1, 3)));
        assert_eq!(delivered(&actions), vec![1, 2, 3]);
        assert_eq!(f.position(), Position::new(e("b"), 3));
    }

    #[test]
    fn a_resume_is_served_from_the_cache_or_the_broker() {
        let mut f = follower(5);
        let actions = f.subscribe(1, Some(Position::new(e("a"), 2)));
        match &actions[..] {
            [Action::Subscribed { replay, loss, .. }] => {
                assert_eq!(replay.iter().map(|m| m.seq).collect::<Vec<_>>(), [3, 4, 5]);
                assert_eq!(*loss, None);
            }
            other => panic!("{other:?}"),
        }
        let actions = f.subscribe(2, Some(Position::new(e("a"), 8)));
        assert!(is_top_read(actions.last().unwrap()), "ahead: top first");
        let actions = f.answer(Answer::Page(page("a", 8, 1, 0)));
        let actions2 = f.answer(Answer::Page(page("a", 8, 6, 8)));
        assert!(actions.iter().all(|a| matches!(a, Action::Read(_))));
        assert_eq!(delivered(&actions2), vec![6, 7, 8]);
        assert!(matches!(
            actions2.last(),
            Some(Action::Subscribed { subscriber: 2, loss: None, position, .. }) if position.seq == 8
        ));
    }

    #[test]
    fn a_rewound_stream_moves_to_a_new_epoch() {
        let mut f = follower(5);
        f.resync();
        let actions = f.answer(Answer::Page(page("a", 2, 1, 0)));
        assert!(matches!(
            actions[0],
            Action::Rewound {
                top: 2,
                delivered: 5
            }
        ));
        assert_eq!(
            actions.last().and_then(|a| match a {
                Action::Read(r) => Some(r.clone()),
                _ => None,
            }),
            Some(Read::ResetEpoch { stale: e("a") })
        );
        let actions = f.answer(Answer::Top(Position::new(e("c"), 0)));
        assert!(matches!(actions[0], Action::EpochChanged { .. }));
        assert!(!f.busy());
        assert_eq!(f.position(), Position::new(e("c"), 0));
    }
}
