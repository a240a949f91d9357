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
use crate::broker::{HistorySettings, KeyRetention, PublishRequest};
use crate::protocol::RoomName;
use crate::stream::Epoch;
use redis::aio::ConnectionLike;
use redis::{Cmd, RedisResult, Script, Value};
use std::sync::LazyLock;

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

/// How the publish function is called for one room.
pub(super) struct PublishCall<'a> {
    pub keys: &'a Keys,
    pub history: &'a HistorySettings,
    /// `SPUBLISH` (a Redis Cluster) rather than `PUBLISH`.
    pub sharded: bool,
    /// Bodies of at least this many bytes are compressed (0: never).
    pub compress_above: usize,
}

impl PublishCall<'_> {
    /// The `FCALL` that publishes `request` to `room`.
    pub(super) fn command(&self, room: &RoomName, request: PublishRequest) -> Cmd {
        let PublishRequest {
            data,
            idempotency_key,
            trace,
            key_retention,
        } = request;
        let keys = self.keys;
        let body = Body {
            id: rand::random(),
            data,
            trace,
        }
        .encode(self.compress_above);
        // Sized once: 11 arguments, the body and about 40 bytes for each other one.
        let mut cmd = Cmd::with_capacity(11, body.len() + 11 * 40);
        cmd.arg("FCALL").arg(&PUBLISH.name);
        match &idempotency_key {
            Some(key) => cmd
                .arg(4)
                .arg(keys.meta(room))
                .arg(keys.log(room))
                .arg(keys.idempotency_record(room, key))
                .arg(keys.legacy_idempotency(room)),
            None => cmd.arg(2).arg(keys.meta(room)).arg(keys.log(room)),
        };
        let history = self.history;
        let keep_ms = match key_retention {
            KeyRetention::Window => history.idempotency_window_ms,
            KeyRetention::Epoch => history.meta_ttl_ms,
        };
        let settings = format!(
            "{} {} {} {} {keep_ms}",
            if self.sharded { "SPUBLISH" } else { "PUBLISH" },
            history.size,
            history.ttl_ms,
            history.meta_ttl_ms,
        );
        cmd.arg(keys.channel(room))
            .arg(Epoch::generate().as_str())
            .arg(body)
            .arg(settings)
            .arg(idempotency_key.as_deref().unwrap_or(""));
        cmd
    }
}
