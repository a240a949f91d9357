//! The connection's side of presence: joining a room's set after a subscribe, leaving
//! it, and the `presence` / `presence_stats` queries (same access rule as `history`).

use super::{ConnectionActor, ConnectionState};
use crate::access::RoomAction;
use crate::presence::Watcher;
use crate::protocol::{ErrorCode, RoomName, ServerFrame};
use serde_json::Value;

impl ConnectionActor {
    /// After a successful subscribe: enters the room's presence set (rooms with
    /// presence only) and, with `events`, starts the client's presence frames.
    pub(super) async fn join_presence(
        &self,
        state: &mut ConnectionState,
        room: &RoomName,
        events: bool,
        info: Option<Value>,
    ) {
        if !self.context.presence.enabled_for(room.as_str()) {
            return;
        }
        let member = state.presence.get_or_insert_with(|| {
            crate::presence::Member::new(&state.session.to_string(), &state.principal)
        });
        let watcher = events.then(|| Watcher {
            conn_id: state.replies.conn_id,
            outbound: state.replies.outbound.clone(),
            encoding: state.replies.encoding,
        });
        self.context
            .presence
            .join(member, room, info, watcher)
            .await;
    }

    /// After an unsubscribe: leaves the room's presence set; no presence frame of the
    /// room follows.
    pub(super) async fn leave_presence(&self, state: &mut ConnectionState, room: &RoomName) {
        let conn_id = state.replies.conn_id;
        if let Some(member) = state.presence.as_mut() {
            self.context.presence.leave(member, room, conn_id).await;
        }
    }

    /// `presence` (`stats` false) or `presence_stats` (`stats` true).
    pub(super) async fn presence(
        &self,
        state: &mut ConnectionState,
        id: Option<u64>,
        room: &str,
        stats: bool,
    ) {
        let Some(room) = self.room_name(state, id, room) else {
            return;
        };
        if !self.allowed(state, id, &room, RoomAction::Read).await {
            return;
        }
        let presence = &self.context.presence;
        if !presence.enabled_for(room.as_str()) {
            return state.send_error(
                id,
                ErrorCode::InvalidFrame,
                format!("presence is not enabled for {room}"),
            );
        }
        let frame = if stats {
            presence
                .stats(&room)
                .await
                .map(|stats| ServerFrame::PresenceStats {
                    id,
                    room: room.to_string(),
                    clients: stats.clients,
                    users: stats.users,
                })
        } else {
            presence
                .entries(&room)
                .await
                .map(|clients| ServerFrame::Presence {
                    id,
                    room: room.to_string(),
                    clients,
                })
        };
        match frame {
            Ok(frame) => state.send(&frame),
            Err(err) => {
                state.send_error(id, err.code(), format!("presence of {room} failed: {err}"))
            }
        }
    }
}
