//! Fail fast while a Redis node is known not to answer: one circuit per node (the one
//! Redis, or each master of a cluster, found through the slot map).
//!
//! A command that times out or finds the node unreachable opens the node's circuit: for
//! the next `cooldown`, every command for that node fails at once with `Unavailable`
//! (nothing was sent, so nothing happened: never a false ack). After the cooldown, one
//! command is let through as a trial while the others keep failing fast; its success
//! closes the circuit, its failure opens it again. So publishes queued behind a stalled
//! node are answered within a command timeout, not one timeout each.

use super::slots::{SlotMap, slot_of};
use crate::broker::BrokerError;
use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

/// The scope of a one-node Redis.
const SINGLE: &str = "redis";

#[derive(Debug, Clone)]
enum Circuit {
    /// Failing since `opened`: refuse until `until`.
    Open { until: Instant, reason: String },
    /// One trial command is in flight; refuse the others.
    Trial { reason: String },
}

/// Circuits per Redis node.
#[derive(Debug)]
pub struct Breaker {
    cooldown: Duration,
    circuits: Mutex<HashMap<String, Circuit>>,
    /// The cluster's slot map (`None` for one Redis, or while unknown).
    topology: RwLock<Option<SlotMap>>,
}

/// Permission to send one command to a node; report its outcome with
/// [`Breaker::record`].
#[derive(Debug)]
pub struct Pass {
    scope: String,
}

impl Breaker {
    /// Circuits that stay open for `cooldown` after a failure.
    pub fn new(cooldown: Duration) -> Breaker {
        Breaker {
            cooldown,
            circuits: Mutex::new(HashMap::new()),
            topology: RwLock::new(None),
        }
    }

    /// Tells the breaker which master owns which slot (cluster mode).
    pub fn set_topology(&self, map: SlotMap) {
        *self.topology.write().unwrap_or_else(|e| e.into_inner()) = Some(map);
    }

    /// The node a command on `key` goes to.
    fn scope(&self, key: &str) -> String {
        let topology = self.topology.read().unwrap_or_else(|e| e.into_inner());
        match topology.as_ref() {
            None => SINGLE.to_owned(),
            Some(map) => {
                let slot = slot_of(key.as_bytes());
                map.owner(slot)
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("slot {slot}"))
            }
        }
    }

    /// A pass for a command on `key`, or `Unavailable` at once while the node's circuit
    /// is open.
    pub fn admit(&self, key: &str) -> Result<Pass, BrokerError> {
        self.admit_at(key, Instant::now())
    }

    fn admit_at(&self, key: &str, now: Instant) -> Result<Pass, BrokerError> {
        let scope = self.scope(key);
        let mut circuits = self.circuits.lock().unwrap_or_else(|e| e.into_inner());
        match circuits.get(&scope) {
            None => Ok(Pass { scope }),
            Some(Circuit::Open { until, reason }) if now >= *until => {
                let reason = reason.clone();
                circuits.insert(scope.clone(), Circuit::Trial { reason });
                Ok(Pass { scope })
            }
            Some(Circuit::Open { reason, .. } | Circuit::Trial { reason }) => {
                Err(BrokerError::Unavailable(format!(
                    "Redis at {scope} is not answering ({reason}); nothing was sent, retry shortly"
                )))
            }
        }
    }

    /// A command on `key` got an answer outside a pass (the liveness probe): the node's
    /// circuit closes, so commands stop failing fast as soon as the node is seen well.
    pub fn answered(&self, key: &str) {
        let scope = self.scope(key);
        let mut circuits = self.circuits.lock().unwrap_or_else(|e| e.into_inner());
        if circuits.remove(&scope).is_some() {
            tracing::info!(node = %scope, "Redis node answers again (probe)");
        }
        metrics::gauge!("roomcast_broker_circuits_open").set(circuits.len() as f64);
    }

    /// Reports how the command of `pass` went: a timeout or an unreachable node opens
    /// the circuit; an answer (even an error reply) closes it.
    pub fn record(&self, pass: Pass, outcome: Result<(), &BrokerError>) {
        self.record_at(pass, outcome, Instant::now())
    }

    fn record_at(&self, pass: Pass, outcome: Result<(), &BrokerError>, now: Instant) {
        let mut circuits = self.circuits.lock().unwrap_or_else(|e| e.into_inner());
        match outcome {
            Err(err @ (BrokerError::Timeout(_) | BrokerError::Unavailable(_))) => {
                if !matches!(circuits.get(&pass.scope), Some(Circuit::Open { .. })) {
                    tracing::warn!(node = %pass.scope, error = %err, "Redis node failing; failing its commands fast");
                    metrics::counter!("roomcast_broker_circuit_opened_total").increment(1);
                }
                circuits.insert(
                    pass.scope,
                    Circuit::Open {
                        until: now + self.cooldown,
                        reason: err.to_string(),
                    },
                );
            }
            _ => {
                if circuits.remove(&pass.scope).is_some() {
                    tracing::info!(node = %pass.scope, "Redis node answers again");
                }
            }
        }
        crate::telemetry::metrics::per_publication()
            .circuits_open
            .set(circuits.len() as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeout() -> BrokerError {
        BrokerError::Timeout("no answer".into())
    }

    #[test]
    fn a_failure_opens_the_circuit_and_a_trial_closes_it() {
        let breaker = Breaker::new(Duration::from_secs(1));
        let start = Instant::now();
        let pass = breaker.admit_at("k", start).unwrap();
        breaker.record_at(pass, Err(&timeout()), start);
        let refused = breaker.admit_at("k", start + Duration::from_millis(10));
        assert!(matches!(refused, Err(BrokerError::Unavailable(_))));

        // After the cooldown one trial goes through, the others still fail fast.
        let later = start + Duration::from_secs(1);
        let trial = breaker.admit_at("k", later).unwrap();
        assert!(breaker.admit_at("k", later).is_err());
        breaker.record_at(trial, Ok(()), later);
        assert!(breaker.admit_at("k", later).is_ok());
    }

    #[test]
    fn a_failed_trial_opens_it_again_and_error_replies_do_not_open_it() {
        let breaker = Breaker::new(Duration::from_secs(1));
        let start = Instant::now();
        let pass = breaker.admit_at("k", start).unwrap();
        breaker.record_at(
            pass,
            Err(&BrokerError::Internal("ERR script".into())),
            start,
        );
        assert!(
            breaker.admit_at("k", start).is_ok(),
            "an answer is not an outage"
        );
        let pass = breaker.admit_at("k", start).unwrap();
        breaker.record_at(pass, Err(&timeout()), start);
        let later = start + Duration::from_secs(1);
        let trial = breaker.admit_at("k", later).unwrap();
        breaker.record_at(trial, Err(&timeout()), later);
        assert!(
            breaker
                .admit_at("k", later + Duration::from_millis(500))
                .is_err()
        );
    }

    #[test]
    fn a_probe_that_gets_through_closes_the_circuit() {
        let breaker = Breaker::new(Duration::from_secs(60));
        let now = Instant::now();
        let pass = breaker.admit_at("k", now).unwrap();
        breaker.record_at(pass, Err(&timeout()), now);
        assert!(breaker.admit_at("k", now).is_err());
        breaker.answered("probe-channel");
        assert!(
            breaker.admit_at("k", now).is_ok(),
            "no wait for the cooldown"
        );
    }

    #[test]
    fn circuits_are_per_master_in_a_cluster() {
        let breaker = Breaker::new(Duration::from_secs(1));
        breaker.set_topology(SlotMap::from_ranges(vec![
            (0, 8191, "10.0.0.1:7000".into()),
            (8192, 16383, "10.0.0.2:7000".into()),
        ]));
        // Keys in slots of different masters ({a} → 15495, {b} → 3300).
        let (on_second, on_first) = ("{a}:meta", "{b}:meta");
        let now = Instant::now();
        let pass = breaker.admit_at(on_second, now).unwrap();
        breaker.record_at(pass, Err(&timeout()), now);
        assert!(breaker.admit_at(on_second, now).is_err());
        assert!(
            breaker.admit_at(on_first, now).is_ok(),
            "the other master is fine"
        );
    }
}
