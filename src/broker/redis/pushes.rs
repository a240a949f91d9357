//! Pub/Sub connections whose messages arrive as RESP3 pushes, in a bounded queue: the one
//! Pub/Sub connection of a single Redis (or of the master the sentinels name) and each
//! master's sharded connection of a Redis Cluster.
//!
//! The client library reads the socket and hands every push to a sender of ours. Were
//! its queue unbounded, an instance that falls behind would hold whatever Redis sends in
//! memory without limit, and Redis's own bound on a Pub/Sub client's output
//! (`client-output-buffer-limit pubsub`) would never apply, since the library reads
//! eagerly. So the queue holds [`PUSH_QUEUE`] pushes; past that a push is dropped and
//! counted, and the session, told so by [`Pushes::take_dropped`], has its rooms fill
//! what they missed from the replay buffers, as after any Pub/Sub gap.

use super::RedisSettings;
use redis::aio::MultiplexedConnection;
use redis::{PushInfo, PushKind, Value};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

/// Pushes of one connection that may wait between the client library's reader and the
/// session's task. The task hands each on at once (to the bounded event channel, never
/// waiting), so the queue fills only while the task is busy elsewhere (subscribing) or
/// not scheduled.
pub const PUSH_QUEUE: usize = 4096;

/// Opens a RESP3 connection to `client`'s server whose pushes go to a queue of
/// [`PUSH_QUEUE`]; drops at its bound are counted as
/// `roomcast_fanin_dropped_total{queue=label}`.
pub async fn connect(
    client: &redis::Client,
    settings: &RedisSettings,
    label: &'static str,
) -> Result<(MultiplexedConnection, Pushes), String> {
    let client = resp3(client).map_err(|e| e.to_string())?;
    let (pushes_tx, mut pushes) = push_queue(PUSH_QUEUE, label);
    pushes.address = client.get_connection_info().addr().to_string();
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(settings.connect_timeout))
        .set_response_timeout(Some(settings.command_timeout))
        .set_push_sender(pushes_tx);
    let connecting = client.get_multiplexed_async_connection_with_config(&config);
    match tokio::time::timeout(settings.connect_timeout, connecting).await {
        Ok(Ok(connection)) => Ok((connection, pushes)),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err("connect timed out".into()),
    }
}

/// `client` speaking RESP3, whatever its URL asked for (the command connection keeps
/// the protocol of the URL); address, credentials and TLS settings unchanged.
fn resp3(client: &redis::Client) -> redis::RedisResult<redis::Client> {
    let info = client.get_connection_info().clone();
    let settings = (info.redis_settings().clone()).set_protocol(redis::ProtocolVersion::RESP3);
    redis::Client::open(info.set_redis_settings(settings))
}

/// The sending half of a connection's push queue, as the client library calls it: it
/// never waits, and records a drop at the bound. The library also copies the reply of
/// each subscribe and unsubscribe here; the session has no use for those (it awaits the
/// reply itself), so they are not queued: a reconnect that subscribes thousands of
/// channels would otherwise fill the queue with them. (`sunsubscribe` is queued: a
/// Redis Cluster master sends it unasked when a slot moves away.)
fn push_queue(capacity: usize, label: &'static str) -> (impl redis::aio::AsyncPushSender, Pushes) {
    let (sender, receiver) = mpsc::channel(capacity);
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = dropped.clone();
    let push = move |push: PushInfo| match push.kind {
        PushKind::Subscribe
        | PushKind::PSubscribe
        | PushKind::SSubscribe
        | PushKind::Unsubscribe
        | PushKind::PUnsubscribe => Ok(()),
        _ => queue(&sender, &flag, label, push),
    };
    let pushes = Pushes {
        receiver,
        dropped,
        label,
        address: String::new(),
        warned: None,
    };
    (push, pushes)
}

fn queue(
    sender: &mpsc::Sender<PushInfo>,
    dropped: &AtomicBool,
    label: &'static str,
    push: PushInfo,
) -> Result<(), ()> {
    match sender.try_send(push) {
        Ok(()) => Ok(()),
        Err(TrySendError::Full(push)) => {
            dropped.store(true, Ordering::Release);
            // The metric counts publications; the session's resync covers any push.
            if matches!(push.kind, PushKind::Message | PushKind::SMessage) {
                metrics::counter!("roomcast_fanin_dropped_total", "queue" => label).increment(1);
            }
            Err(())
        }
        Err(TrySendError::Closed(_)) => Err(()),
    }
}

/// The receiving half of a connection's push queue. Ends when the client library drops
/// its sender (after the connection's end, whose push may itself have been dropped).
pub struct Pushes {
    receiver: mpsc::Receiver<PushInfo>,
    dropped: Arc<AtomicBool>,
    label: &'static str,
    /// The server's address, for the log.
    address: String,
    /// When a drop was last logged.
    warned: Option<Instant>,
}

/// Least time between two warnings of drops: while the queue stays full, pushes are
/// dropped one after another, and one line says so.
const WARN_EVERY: Duration = Duration::from_secs(10);

impl Pushes {
    /// The next push; `None` once the connection is gone.
    pub async fn recv(&mut self) -> Option<PushInfo> {
        self.receiver.recv().await
    }

    /// Whether a push was dropped since the last call; logged (at most once every
    /// [`WARN_EVERY`]) when one was.
    pub fn take_dropped(&mut self) -> bool {
        let dropped = self.dropped.swap(false, Ordering::AcqRel);
        if dropped && self.warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            self.warned = Some(Instant::now());
            tracing::warn!(queue = self.label, address = %self.address, "Pub/Sub messages arrived faster than this instance took them; the rooms they were for fill what was dropped from the replay buffers");
        }
        dropped
    }
}

/// A published message's channel and payload, when `push` is one (`message` on a
/// connection with `SUBSCRIBE`, `smessage` with `SSUBSCRIBE`).
pub fn message(push: &PushInfo) -> Option<(&[u8], &[u8])> {
    if !matches!(push.kind, PushKind::Message | PushKind::SMessage) {
        return None;
    }
    match push.data.as_slice() {
        [Value::BulkString(channel), Value::BulkString(payload), ..] => Some((channel, payload)),
        _ => None,
    }
}

/// Whether `value` is the server's confirmation of `kind` for `channel`.
pub fn confirms(value: &Value, kind: PushKind, channel: &str) -> bool {
    match value {
        Value::Push { kind: k, data } => {
            *k == kind
                && matches!(data.first(), Some(Value::BulkString(c)) if c.as_slice() == channel.as_bytes())
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::aio::AsyncPushSender;

    fn message_push(n: i64) -> PushInfo {
        PushInfo {
            kind: PushKind::SMessage,
            data: vec![Value::Int(n)],
        }
    }

    #[tokio::test]
    async fn a_full_push_queue_drops_records_it_once_and_keeps_the_order() {
        let (sender, mut pushes) = push_queue(2, "test");
        assert!(sender.send(message_push(1)).is_ok());
        assert!(sender.send(message_push(2)).is_ok());
        assert!(!pushes.take_dropped());
        assert!(sender.send(message_push(3)).is_err(), "the bound holds");
        assert!(pushes.take_dropped());
        assert!(!pushes.take_dropped(), "reported once");
        for n in [1, 2] {
            assert_eq!(pushes.recv().await.unwrap().data, vec![Value::Int(n)]);
        }
        assert!(
            sender.send(message_push(4)).is_ok(),
            "room again once taken"
        );
        drop(sender);
        assert_eq!(pushes.recv().await.unwrap().data, vec![Value::Int(4)]);
        assert!(pushes.recv().await.is_none(), "ends with the sender");
    }

    #[tokio::test]
    async fn subscribe_and_unsubscribe_replies_take_no_room_in_the_queue() {
        let (sender, mut pushes) = push_queue(1, "test");
        for kind in [
            PushKind::SSubscribe,
            PushKind::Subscribe,
            PushKind::Unsubscribe,
        ] {
            for _ in 0..10 {
                let reply = PushInfo {
                    kind: kind.clone(),
                    data: vec![Value::BulkString(b"room".to_vec()), Value::Int(1)],
                };
                assert!(sender.send(reply).is_ok());
            }
        }
        assert!(!pushes.take_dropped());
        assert!(
            sender.send(message_push(1)).is_ok(),
            "the one place is still free"
        );
        drop(sender);
        assert_eq!(pushes.recv().await.unwrap().kind, PushKind::SMessage);
        assert!(pushes.recv().await.is_none());
    }

    #[test]
    fn messages_of_either_kind_give_their_channel_and_payload() {
        for kind in [PushKind::Message, PushKind::SMessage] {
            let push = PushInfo {
                kind,
                data: vec![
                    Value::BulkString(b"rc:{a}:ch".to_vec()),
                    Value::BulkString(b"body".to_vec()),
                ],
            };
            assert_eq!(message(&push), Some((&b"rc:{a}:ch"[..], &b"body"[..])));
        }
        let confirmation = PushInfo {
            kind: PushKind::Subscribe,
            data: vec![Value::BulkString(b"rc:{a}:ch".to_vec()), Value::Int(1)],
        };
        assert_eq!(message(&confirmation), None);
    }

    #[test]
    fn a_client_asked_for_resp2_connects_pub_sub_in_resp3() {
        let client = redis::Client::open("redis://:pw@127.0.0.1:6379/2").unwrap();
        let converted = resp3(&client).unwrap();
        let info = converted.get_connection_info();
        assert_eq!(
            info.redis_settings().protocol(),
            redis::ProtocolVersion::RESP3
        );
        assert_eq!(info.redis_settings().password(), Some("pw"));
        assert_eq!(info.redis_settings().db(), 2);
        assert_eq!(info.addr().to_string(), "127.0.0.1:6379");
    }
}
