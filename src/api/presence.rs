//! `GET /api/v1/rooms/{room}/presence` (who is in a room) and
//! `GET /api/v1/rooms/{room}/presence/stats` (how many), for services. Same access rule
//! as the room's history.

use super::input::percent_decode;
use super::rooms::broker_error;
use super::{Api, ApiError, Context, FieldError, Reply};
use crate::access::{Access, RoomAction};
use crate::protocol::RoomName;
use hyper::StatusCode;
use serde_json::json;

/// The room of the path, checked: a valid name, readable by the caller, with presence.
async fn room(api: &Api, context: &Context, room: &str) -> Result<RoomName, ApiError> {
    let room = percent_decode(room).ok_or_else(|| ApiError::not_found("room"))?;
    let room = api.rooms.parse(&room).map_err(|e| {
        ApiError::invalid(vec![FieldError {
            field: "room".into(),
            message: e.to_string(),
        }])
    })?;
    if let Access::Denied(reason) = api
        .access
        .room_access(&context.principal, room.as_str(), RoomAction::Read)
        .await?
    {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", reason));
    }
    if !api.context.presence.enabled_for(room.as_str()) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "presence_disabled",
            format!("presence is not enabled for {room} (see presence.rooms)"),
        ));
    }
    Ok(room)
}

pub async fn entries(api: &Api, context: &Context, name: &str) -> Reply {
    let room = room(api, context, name).await?;
    let clients = api
        .context
        .presence
        .entries(&room)
        .await
        .map_err(broker_error)?;
    Ok(crate::response::json_response(
        StatusCode::OK,
        &json!({"room": room.as_str(), "clients": clients}),
    ))
}

pub async fn stats(api: &Api, context: &Context, name: &str) -> Reply {
    let room = room(api, context, name).await?;
    let stats = api
        .context
        .presence
        .stats(&room)
        .await
        .map_err(broker_error)?;
    Ok(crate::response::json_response(
        StatusCode::OK,
        &json!({"room": room.as_str(), "clients": stats.clients, "users": stats.users}),
    ))
}
