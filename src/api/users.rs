//! `/api/v1/admin/users/{id}/export` and `/api/v1/admin/users/{id}/erase`: GDPR access
//! and erasure, for global administrators (see [`crate::store::Erasure`] for what an
//! erasure keeps and why).

use super::access::require_admin;
use super::members::user_id;
use super::{Api, Context, Reply};
use hyper::StatusCode;

pub async fn export(api: &Api, context: &Context, user: &str) -> Reply {
    require_admin(context)?;
    let user = user_id(user)?;
    let export = api.store.export_user(&user).await?;
    Ok(crate::response::json_response(StatusCode::OK, &export))
}

pub async fn erase(api: &Api, context: &Context, user: &str) -> Reply {
    require_admin(context)?;
    let user = user_id(user)?;
    let erasure = api.store.erase_user(&context.mutation(None), &user).await?;
    for project in &erasure.memberships {
        api.membership_removed(&user, *project).await;
    }
    Ok(crate::response::json_response(StatusCode::OK, &erasure))
}
