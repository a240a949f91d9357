//! The publish function library (`publish.lua`): called with `FCALL`, loaded with
//! `FUNCTION LOAD` on first use on each node (and again after a node lost it: a restart
//! without persistence, a new cluster node).
//!
//! A function rather than an `EVALSHA` script because a function library keeps locals
//! between calls for the life of the Redis process, which is what lets the publish path
//! read the run id once per process instead of once per publish (see `publish.lua`).
//! The library's name is derived from its code, so instances of two versions (during a
//! rolling deploy) each call their own code and never replace the other's.

use super::envelope::Body;
use super::keys::Keys;
use crate::broker::{BrokerError, HistorySettings, KeyRetention, PublishAck, PublishRequest};
use crate::protocol::RoomName;
use crate::stream::{Epoch, Position};
use redis::aio::ConnectionLike;
use redis::{Cmd, FromRedisValue, RedisResult, Script, Value};
use std::sync::{Arc, LazyLock};

/// The publish library: its name (also its one function's) and its text.
pub(super) struct Library {
    name: String,
    text: String,
}

pub(super) static PUBLISH: LazyLock<Library> =
    LazyLock::new(|| Library::new("roomcast_publish", include_str!("publish.lua")));

impl Library {
    fn new(prefix: &str, code: &str) -> Library {
        let script = Script::new(code);
        let name = format!("{prefix}_{}", &script.get_hash()[..16]);
        let text = format!("#!lua name={name}\nlocal LIBRARY = '{name}'\n{code}");
        Library { name, text }
    }

    /// `FUNCTION LOAD REPLACE` of the library (the same text: loading it twice, or from
    /// two instances at once, is harmless).
    pub(super) fn load(&self) -> Cmd {
        let mut cmd = redis::cmd("FUNCTION");
        cmd.arg("LOAD").arg("REPLACE").arg(&self.text);
        cmd
    }

    /// Runs `call` (an `FCALL` of this library), loading the library first if the node
    /// does not have it.
    pub(super) async fn call<C: ConnectionLike>(
        &self,
        connection: &mut C,
        call: &Cmd,
    ) -> RedisResult<Value> {
        match call.query_async(connection).await {
            Err(err) if is_missing(&err) => {
                self.load().query_async::<Value>(connection).await?;
                call.query_async(connection).await
            }
            result => result,
        }
    }
}

fn is_missing(err: &redis::RedisError) -> bool {
    err.detail()
        .is_some_and(|detail| detail.starts_with("Function not found"))
}

/// How the publish functions are called: `publish` for one publication, `publish_many`
/// for several (see `publish.lua`). Cheap to clone.
#[derive(Clone)]
pub(super) struct PublishCall {
    pub keys: Keys,
    /// Bodies of at least this many bytes are compressed (0: never).
    compress_above: usize,
    /// The settings argument (see `publish.lua`) for a key kept for the dedupe window,
    /// and for one kept for the room's epoch: made once, not per publish.
    settings_window: Arc<str>,
    settings_epoch: Arc<str>,
}

/// The keys and arguments of one publication, as both functions take them.
struct Parts {
    /// 2, or 4 with an idempotency key.
    keys: Vec<String>,
    /// Channel, epoch for a new one, body, settings, idempotency key (or '').
    args: [Vec<u8>; 5],
}

impl Parts {
    fn bytes(&self) -> usize {
        let keys: usize = self.keys.iter().map(String::len).sum();
        keys + self.args.iter().map(Vec::len).sum::<usize>()
    }
}

impl PublishCall {
    /// Calls for rooms under `keys` with `history`; `sharded`: `SPUBLISH` (a Redis
    /// Cluster) rather than `PUBLISH`.
    pub fn new(
        keys: Keys,
        history: &HistorySettings,
        sharded: bool,
        compress_above: usize,
    ) -> PublishCall {
        let settings = |keep_ms: u64| -> Arc<str> {
            let command = if sharded { "SPUBLISH" } else { "PUBLISH" };
            let (size, ttl, idle) = (history.size, history.ttl_ms, history.meta_ttl_ms);
            format!("{command} {size} {ttl} {idle} {keep_ms}").into()
        };
        PublishCall {
            keys,
            compress_above,
            settings_window: settings(history.idempotency_window_ms),
            settings_epoch: settings(history.meta_ttl_ms),
        }
    }

    fn parts(&self, room: &RoomName, request: PublishRequest) -> Parts {
        let PublishRequest {
            data,
            idempotency_key,
            trace,
            key_retention,
        } = request;
        // An empty key is no key: `publish_many` tells the two layouts apart by it.
        let idempotency_key = idempotency_key.filter(|key| !key.is_empty());
        let keys = &self.keys;
        let body = Body {
            id: rand::random(),
            data,
            trace,
        }
        .encode(self.compress_above);
        let mut names = vec![keys.meta(room), keys.log(room)];
        if let Some(key) = &idempotency_key {
            names.push(keys.idempotency_record(room, key));
            names.push(keys.legacy_idempotency(room));
        }
        let settings = match key_retention {
            KeyRetention::Window => &self.settings_window,
            KeyRetention::Epoch => &self.settings_epoch,
        };
        Parts {
            keys: names,
            args: [
                keys.channel(room).into_bytes(),
                Epoch::generate().as_str().as_bytes().to_vec(),
                body,
                settings.as_bytes().to_vec(),
                idempotency_key.unwrap_or_default().into_bytes(),
            ],
        }
    }

    /// The `FCALL` that publishes `request` to `room`.
    pub(super) fn command(&self, room: &RoomName, request: PublishRequest) -> Cmd {
        let parts = self.parts(room, request);
        fcall(&PUBLISH.name, std::slice::from_ref(&parts))
    }

    /// The `FCALL` that publishes each request to its room, in order.
    pub(super) fn batch_command(
        &self,
        publications: impl IntoIterator<Item = (RoomName, PublishRequest)>,
    ) -> Cmd {
        let parts: Vec<Parts> = publications
            .into_iter()
            .map(|(room, request)| self.parts(&room, request))
            .collect();
        fcall(&PUBLISH_MANY, &parts)
    }
}

/// The name of the function that publishes several publications.
static PUBLISH_MANY: LazyLock<String> = LazyLock::new(|| format!("{}_many", PUBLISH.name));

/// `FCALL function numkeys keys… args…` of the publications' parts, sized once.
fn fcall(function: &str, publications: &[Parts]) -> Cmd {
    let keys: usize = publications.iter().map(|p| p.keys.len()).sum();
    let args = 3 + keys + 5 * publications.len();
    let bytes: usize = publications.iter().map(Parts::bytes).sum();
    let mut cmd = Cmd::with_capacity(args, bytes + function.len() + 16);
    cmd.arg("FCALL").arg(function).arg(keys);
    for key in publications.iter().flat_map(|p| &p.keys) {
        cmd.arg(key);
    }
    for arg in publications.iter().flat_map(|p| &p.args) {
        cmd.arg(arg.as_slice());
    }
    cmd
}

/// The ack in one publication's reply: `{0|1, epoch, seq, time}`, or `{2, message}` when
/// that publication failed within a call of several.
pub(super) fn parse_ack(reply: Value) -> Result<PublishAck, BrokerError> {
    let bad = |e: String| BrokerError::Internal(format!("unexpected publish reply: {e}"));
    if let Value::Array(items) = &reply
        && let [Value::Int(2), message] = items.as_slice()
    {
        let message: String =
            FromRedisValue::from_redis_value_ref(message).map_err(|e| bad(e.to_string()))?;
        return Err(BrokerError::Internal(format!("publish failed: {message}")));
    }
    let (repeat, epoch, seq, time_ms): (i64, String, u64, u64) =
        FromRedisValue::from_redis_value(reply).map_err(|e| bad(e.to_string()))?;
    Ok(PublishAck {
        position: Position::new(Epoch::new(epoch), seq),
        time_ms,
        duplicate: repeat == 1,
    })
}
