//! `POST /api/v1/publish` (services publish to a room) and
//! `GET /api/v1/rooms/{room}/history` (read a room's replay buffer).

use super::input::{FieldErrors, Params, idempotency_key, int_param, json_body, percent_decode};
use super::{Api, ApiError, Context, FieldError, Reply};
use crate::access::{Access, RoomAction};
use crate::auth::Principal;
use crate::broker::{BrokerError, PublishRequest, read_history};
use crate::protocol::RoomName;
use crate::stream::{Epoch, Position};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

/// Body of `POST /api/v1/publish`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    room: String,
    data: Value,
}

fn room_name(api: &Api, field: &str, room: &str) -> Result<RoomName, ApiError> {
    api.rooms.parse(room).map_err(|e| {
        ApiError::invalid(vec![FieldError {
            field: field.to_owned(),
            message: e.to_string(),
        }])
    })
}

/// A broker failure: 504 when it timed out (the outcome is unknown: retry with the same
/// key), 503 when it is unreachable, 500 otherwise.
pub(super) fn broker_error(err: BrokerError) -> ApiError {
    match err {
        BrokerError::Timeout(_) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "broker_timeout",
            err.to_string(),
        )
        .with_header("retry-after", "1"),
        BrokerError::Unavailable(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "broker_unavailable",
            err.to_string(),
        )
        .with_header("retry-after", "1"),
        BrokerError::Internal(_) => {
            tracing::error!(error = %err, "broker error");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
        }
    }
}

fn forbidden(message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

/// 403 unless the caller may do `action` with `room` (see [`crate::access`]).
async fn check_room(
    api: &Api,
    context: &Context,
    room: &RoomName,
    action: RoomAction,
) -> Result<(), ApiError> {
    match api
        .access
        .room_access(&context.principal, room.as_str(), action)
        .await?
    {
        Access::Allowed => Ok(()),
        Access::Denied(reason) => Err(forbidden(reason)),
    }
}

pub async fn publish(api: &Api, request: Request<Incoming>, context: &Context) -> Reply {
    if matches!(context.principal, Principal::User { .. }) {
        return Err(forbidden(
            "publishing over HTTP needs a service token".into(),
        ));
    }
    let key = idempotency_key(request.headers())?;
    let (body, _): (PublishBody, _) = json_body(request, api.config.max_body_bytes).await?;
    let room = room_name(api, "room", &body.room)?;
    check_room(api, context, &room, RoomAction::Publish).await?;
    if body.data.is_null() {
        return Err(ApiError::invalid(vec![FieldError {
            field: "data".into(),
            message: "must not be null".into(),
        }]));
    }
    let publish = PublishRequest {
        data: body.data,
        idempotency_key: key.map(|key| context.principal.publish_key(&key)),
        trace: crate::telemetry::traces::current_traceparent(),
        key_retention: Default::default(),
    };
    let ack = api
        .context
        .publisher
        .publish(&room, publish)
        .await
        .map_err(broker_error)?;
    Ok(crate::response::json_response(
        StatusCode::OK,
        &json!({
            "room": room.as_str(),
            "epoch": ack.position.epoch,
            "seq": ack.position.seq,
            "time": ack.time_ms,
            "duplicate": ack.duplicate,
        }),
    ))
}

/// The query parameters of `GET /api/v1/rooms/{room}/history`.
pub const HISTORY_PARAMS: &[&str] = &["since", "limit"];

pub async fn history(api: &Api, params: &Params, context: &Context, room: &str) -> Reply {
    let room = percent_decode(room).ok_or_else(|| ApiError::not_found("room"))?;
    let room = room_name(api, "room", &room)?;
    check_room(api, context, &room, RoomAction::Read).await?;
    let since = match params.get("since") {
        None => None,
        Some(since) => {
            let parsed = since
                .rsplit_once(':')
                .and_then(|(epoch, seq)| Some(Position::new(Epoch::new(epoch), seq.parse().ok()?)));
            Some(parsed.ok_or_else(|| {
                FieldErrors::one("since", "must be EPOCH:SEQ, e.g. 9f2c4e1a7b3d5e60:17")
            })?)
        }
    };
    let max = api.context.limits.max_history as i64;
    let limit = int_param(params, "limit")?.unwrap_or(max);
    if !(1..=max).contains(&limit) {
        return Err(FieldErrors::one(
            "limit",
            &format!("must be between 1 and {max}"),
        ));
    }
    let reply = read_history(&**api.broker(), &room, since.as_ref(), limit as usize)
        .await
        .map_err(|err| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "broker_unavailable",
                err.to_string(),
            )
        })?;
    let messages: Vec<Value> = reply
        .publications
        .iter()
        .map(|p| json!({"seq": p.seq, "time": p.time_ms, "data": p.data}))
        .collect();
    let mut body = json!({
        "room": room.as_str(),
        "epoch": reply.top.epoch,
        "seq": reply.top.seq,
        "messages": messages,
    });
    if let Some(recovered) = reply.recovered {
        body["recovered"] = json!(recovered);
    }
    Ok(crate::response::json_response(StatusCode::OK, &body))
}
