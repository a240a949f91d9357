//! Operator actions, carried out on every instance: `POST /api/v1/admin/disconnect` and
//! `POST /api/v1/admin/unsubscribe` (users), `POST /api/v1/admin/drain` (one instance);
//! and the cluster view, `GET /api/v1/admin/cluster`. Global administrators only (an
//! `admin` role in the token, or a service token).

use super::access::require_admin;
use super::input::json_body;
use super::{Api, ApiError, Context, FieldError, Reply};
use crate::control::{self, Command};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;
use serde_json::json;

/// Body of `POST /api/v1/admin/disconnect`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectBody {
    /// The user's id (the `sub` of their tokens).
    user: String,
    /// Whether their clients are told to reconnect (default: no).
    #[serde(default)]
    reconnect: bool,
}

/// Body of `POST /api/v1/admin/unsubscribe`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnsubscribeBody {
    user: String,
    room: String,
}

/// Body of `POST /api/v1/admin/drain`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DrainBody {
    /// The instance's id.
    instance: String,
}

/// The principal key of the user `user` (a token's `sub`).
fn user_key(user: &str) -> Result<String, ApiError> {
    super::members::check_user_id(user)?;
    Ok(format!("user:{user}"))
}

pub async fn disconnect(api: &Api, request: Request<Incoming>, context: &Context) -> Reply {
    require_admin(context)?;
    let (body, _): (DisconnectBody, _) = json_body(request, api.config.max_body_bytes).await?;
    let command = Command::Disconnect {
        user: user_key(&body.user)?,
        reconnect: body.reconnect,
    };
    send(
        api,
        &command,
        json!({"user": body.user, "reconnect": body.reconnect}),
    )
    .await
}

pub async fn unsubscribe(api: &Api, request: Request<Incoming>, context: &Context) -> Reply {
    require_admin(context)?;
    let (body, _): (UnsubscribeBody, _) = json_body(request, api.config.max_body_bytes).await?;
    let room = api.rooms.parse(&body.room).map_err(|e| {
        ApiError::invalid(vec![FieldError {
            field: "room".into(),
            message: e.to_string(),
        }])
    })?;
    let command = Command::Unsubscribe {
        user: user_key(&body.user)?,
        room: room.to_string(),
    };
    send(
        api,
        &command,
        json!({"user": body.user, "room": room.as_str()}),
    )
    .await
}

/// `GET /api/v1/admin/cluster`: every instance, the broker, the busiest rooms and the
/// latest events of the whole cluster.
pub async fn cluster(api: &Api, context: &Context) -> Reply {
    require_admin(context)?;
    Ok(crate::response::json_response(
        StatusCode::OK,
        &api.cluster.overview().await,
    ))
}

/// `POST /api/v1/admin/drain`: the named instance drains, as on SIGTERM. 404 for an
/// instance the membership does not list, 409 for one already draining.
pub async fn drain(api: &Api, request: Request<Incoming>, context: &Context) -> Reply {
    require_admin(context)?;
    let (body, _): (DrainBody, _) = json_body(request, api.config.max_body_bytes).await?;
    let (members, _) = api.cluster.current_members().await;
    let Some(target) = members.iter().find(|seen| seen.member.id == body.instance) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no instance {:?} in the cluster", body.instance),
        ));
    };
    let draining = target.member.state == crate::cluster::MemberState::Draining
        || (body.instance == api.cluster.id()
            && api.cluster.state() == crate::cluster::MemberState::Draining);
    if draining {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_draining",
            format!("instance {:?} is already draining", body.instance),
        ));
    }
    let command = Command::Drain {
        instance: body.instance.clone(),
    };
    send(
        api,
        &command,
        json!({"instance": body.instance, "draining": true}),
    )
    .await
}

/// Publishes the command to every instance; 202 once the broker has it.
async fn send(api: &Api, command: &Command, echo: serde_json::Value) -> Reply {
    control::send(&api.context.publisher, command)
        .await
        .map_err(super::rooms::broker_error)?;
    tracing::info!(?command, "operator command sent to every instance");
    Ok(crate::response::json_response(StatusCode::ACCEPTED, &echo))
}
