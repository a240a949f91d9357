//! The actor mailboxes of the patched ractor (`vendor/ractor`: a queue under a mutex that
//! allocates nothing until its first message, in place of tokio's unbounded channels),
//! checked through ractor's public API, since the vendored crate's own tests do not run
//! in this workspace: every message arrives once and in each sender's order under
//! concurrent senders, and a stopped actor's queued requests are answered with an error
//! (their reply ports dropped) instead of being left waiting.

use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::time::Duration;
use tokio::sync::oneshot;

enum Msg {
    Item {
        sender: u32,
        n: u64,
    },
    Received(RpcReplyPort<Vec<(u32, u64)>>),
    /// Holds the actor until the sender is dropped or sends.
    Block(oneshot::Receiver<()>),
    Echo(u64, RpcReplyPort<u64>),
}

struct Collector;

impl Actor for Collector {
    type Msg = Msg;
    type State = Vec<(u32, u64)>;
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<Msg>, _: ()) -> Result<Self::State, ActorProcessingErr> {
        Ok(Vec::new())
    }

    async fn handle(
        &self,
        _: ActorRef<Msg>,
        message: Msg,
        received: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            Msg::Item { sender, n } => received.push((sender, n)),
            Msg::Received(reply) => {
                let _ = reply.send(std::mem::take(received));
            }
            Msg::Block(until) => {
                let _ = until.await;
            }
            Msg::Echo(n, reply) => {
                let _ = reply.send(n);
            }
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_senders_each_arrive_once_and_in_order() {
    const SENDERS: u32 = 4;
    const EACH: u64 = 20_000;
    let (actor, handle) = Actor::spawn(None, Collector, ()).await.unwrap();
    let senders: Vec<_> = (0..SENDERS)
        .map(|sender| {
            let actor = actor.clone();
            tokio::spawn(async move {
                for n in 0..EACH {
                    actor.cast(Msg::Item { sender, n }).unwrap();
                    if n % 1_000 == 0 {
                        // Let the actor drain now and then, so the queue empties and
                        // grows again (its buffer is given back when it drains).
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.unwrap();
    }
    let received = match actor
        .call(Msg::Received, Some(Duration::from_secs(30)))
        .await
    {
        Ok(CallResult::Success(received)) => received,
        other => panic!("the actor did not answer: {:?}", other.map(|_| ()).is_ok()),
    };
    assert_eq!(received.len() as u64, SENDERS as u64 * EACH);
    for sender in 0..SENDERS {
        let seen: Vec<u64> = (received.iter())
            .filter(|(s, _)| *s == sender)
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(seen, (0..EACH).collect::<Vec<_>>(), "sender {sender}");
    }
    actor.stop(None);
    handle.await.unwrap();
    assert!(
        actor.cast(Msg::Echo(1, oneshot_port())).is_err(),
        "a stopped actor takes nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_queued_at_a_stopped_actor_are_answered_with_an_error() {
    let (actor, handle) = Actor::spawn(None, Collector, ()).await.unwrap();
    let (_hold, until) = oneshot::channel();
    actor.cast(Msg::Block(until)).unwrap();
    let busy = actor
        .call(|reply| Msg::Echo(7, reply), Some(Duration::from_millis(50)))
        .await;
    assert!(
        matches!(busy, Ok(CallResult::Timeout)),
        "the actor is busy: the call times out"
    );
    let waiting: Vec<_> = (0..10u64)
        .map(|n| {
            let actor = actor.clone();
            tokio::spawn(async move { actor.call(|reply| Msg::Echo(n, reply), None).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    actor.kill();
    handle.await.unwrap();
    for call in waiting {
        let answer = tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .expect("a queued request is answered when its actor stops")
            .unwrap();
        assert!(
            !matches!(answer, Ok(CallResult::Success(_))),
            "nothing answers a request of a killed actor"
        );
    }
}

/// A reply port whose receiver is gone (for a message that must be refused).
fn oneshot_port() -> RpcReplyPort<u64> {
    let (sender, _) = oneshot::channel();
    sender.into()
}
