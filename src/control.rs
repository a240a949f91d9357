//! Actions that reach every instance: disconnect a user, take a user out of a room,
//! re-check a user's subscriptions after their project membership shrank, wherever
//! their connections are, or drain one named instance.
//!
//! A command is published to an internal room, [`CONTROL_ROOM`], that every instance
//! follows the way a client follows a room. Commands are therefore sequenced, kept in
//! the replay buffer and gap-filled like any message: an instance whose Pub/Sub link
//! dropped one still gets it, in order. Clients cannot reach the room: its name starts
//! with `$`, which room-name rules never allow.

use crate::access::AccessControl;
use crate::broker::{BrokerError, PublishAck, PublishRequest};
use crate::cluster::Cluster;
use crate::connection::Connections;
use crate::outbound::{self, Item, Items, OutboundReceiver, Received};
use crate::protocol::{Encoding, RoomName, ServerFrame};
use crate::publish::Publisher;
use crate::room::{Rooms, Subscriber};
use crate::stream::Position;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The internal room that carries commands.
pub const CONTROL_ROOM: &str = "$control";

/// Stands for the control listener among a room's subscribers: connection ids count up
/// from 1, so this one is never a client's.
const LISTENER_ID: u64 = u64::MAX;
/// Pause before following the room again after the subscription ended.
const RESUBSCRIBE_DELAY: Duration = Duration::from_secs(1);

/// What an operator asked every instance to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Command {
    /// Close every connection of `user` (a principal key, e.g. `user:alice`).
    Disconnect {
        /// Whose connections.
        user: String,
        /// Whether the clients are told to reconnect (1012), or closed for good (4102).
        reconnect: bool,
    },
    /// Unsubscribe every connection of `user` from `room`.
    Unsubscribe {
        /// Whose connections.
        user: String,
        /// Which room.
        room: String,
    },
    /// The user (a JWT `sub`) lost or was lowered in their membership of `project`:
    /// forget what the instance cached about it, and unsubscribe their connections from
    /// every room they may no longer read.
    MembershipRemoved {
        /// The user's id (`sub`).
        user: String,
        /// The project.
        project: i64,
    },
    /// The instance `instance` drains (as on SIGTERM); the others do nothing.
    Drain {
        /// The instance's id.
        instance: String,
    },
}

fn control_room() -> RoomName {
    RoomName::new_unchecked(CONTROL_ROOM)
}

/// Sends `command` to every instance (this one included).
pub async fn send(publisher: &Publisher, command: &Command) -> Result<PublishAck, BrokerError> {
    let data = serde_json::to_value(command).expect("commands serialize");
    let request = PublishRequest {
        data,
        idempotency_key: None,
        trace: None,
        key_retention: Default::default(),
    };
    publisher.publish(&control_room(), request).await
}

/// Follows the control room until `stop` is cancelled, carrying out each command on
/// this instance's connections. Commands sent before the instance started are not
/// carried out.
pub fn spawn_listener(
    rooms: Rooms,
    connections: Connections,
    access: Arc<AccessControl>,
    cluster: Arc<Cluster>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut position: Option<Position> = None;
        while !stop.is_cancelled() {
            let (outbound, mut receiver) = outbound::channel(1024);
            let subscriber = Subscriber::new(LISTENER_ID, Encoding::Json, outbound.clone());
            let room = control_room();
            match rooms
                .subscribe(&room, subscriber, position.clone(), None)
                .await
            {
                Ok(()) => {
                    tokio::select! {
                        () = follow(&mut receiver, &connections, &access, &cluster, &mut position) => {}
                        () = stop.cancelled() => {}
                    }
                    rooms.unsubscribe(&room, LISTENER_ID);
                }
                Err(err) => tracing::warn!(?err, "cannot follow the control room; retrying"),
            }
            outbound.close(crate::protocol::CloseCode::Normal);
            tokio::select! {
                () = tokio::time::sleep(RESUBSCRIBE_DELAY) => {}
                () = stop.cancelled() => {}
            }
        }
    })
}

/// Carries out commands as they arrive; returns when the subscription ends.
async fn follow(
    receiver: &mut OutboundReceiver,
    connections: &Connections,
    access: &AccessControl,
    cluster: &Cluster,
    position: &mut Option<Position>,
) {
    let mut batch = Items::default();
    loop {
        if let Received::Close(_) = receiver.recv(&mut batch).await {
            return;
        }
        for item in batch.by_ref() {
            let frames = match item {
                Item::Frame(frame) => vec![frame],
                Item::Batch(frames) => frames,
                Item::Close(_) => return,
            };
            for frame in frames {
                match Encoding::Json.decode_server(&frame) {
                    Ok(ServerFrame::Subscribed { epoch, seq, .. })
                    | Ok(ServerFrame::Reset { epoch, seq, .. }) => {
                        *position = Some(Position::new(epoch, seq));
                    }
                    Ok(ServerFrame::Message {
                        epoch, seq, data, ..
                    }) => {
                        *position = Some(Position::new(epoch, seq));
                        apply(connections, access, cluster, data);
                    }
                    Ok(_) => {}
                    Err(err) => tracing::warn!(?err, "undecodable control frame"),
                }
            }
        }
    }
}

fn apply(
    connections: &Connections,
    access: &AccessControl,
    cluster: &Cluster,
    data: serde_json::Value,
) {
    let command: Command = match serde_json::from_value(data) {
        Ok(command) => command,
        Err(err) => return tracing::warn!(%err, "unknown control command"),
    };
    match &command {
        Command::Disconnect { user, reconnect } => {
            let closed = connections.disconnect_user(user, *reconnect);
            tracing::info!(user, reconnect, closed, "operator disconnected a user");
        }
        Command::Unsubscribe { user, room } => {
            let room = RoomName::new_unchecked(room.as_str());
            let told = connections.revoke(user, &room);
            tracing::info!(user, room = %room, connections = told, "operator unsubscribed a user");
        }
        Command::MembershipRemoved { user, project } => {
            access.membership_removed(user, *project);
            let told = connections.recheck(&format!("user:{user}"));
            tracing::info!(
                user,
                project,
                connections = told,
                "membership shrank; subscriptions re-checked"
            );
        }
        Command::Drain { instance } => {
            if instance == cluster.id() {
                tracing::info!("an operator asked this instance to drain");
                cluster.request_drain();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_have_a_stable_wire_form() {
        let command = Command::Disconnect {
            user: "user:alice".into(),
            reconnect: false,
        };
        assert_eq!(
            serde_json::to_value(&command).unwrap(),
            serde_json::json!({"action": "disconnect", "user": "user:alice", "reconnect": false})
        );
        assert_eq!(
            serde_json::to_value(Command::Drain {
                instance: "node-1".into()
            })
            .unwrap(),
            serde_json::json!({"action": "drain", "instance": "node-1"})
        );
    }
}
