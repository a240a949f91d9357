//! The one error shape of the HTTP API: `{"error": {"code", "message", "details"?}}`.

use crate::response::Body;
use crate::store::StoreError;
use hyper::{Response, StatusCode};
use serde::Serialize;
use serde_json::json;

/// A field that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Path of the field (`title`, `assignee`, `project_id`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// A request that cannot be served, with its status and stable code.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Explanation.
    pub message: String,
    /// Field errors (422).
    pub details: Vec<FieldError>,
    /// Extra headers (`WWW-Authenticate`, `Allow`, `Retry-After`…).
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    /// An error without details.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// 422 with field errors.
    pub fn invalid(details: Vec<FieldError>) -> Self {
        let message = match details.as_slice() {
            [one] => format!("{}: {}", one.field, one.message),
            _ => format!("{} fields are invalid", details.len()),
        };
        ApiError {
            details,
            ..ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                message,
            )
        }
    }

    /// 404.
    pub fn not_found(what: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// Adds a header to the error response.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// The response.
    pub fn into_response(self) -> Response<Body> {
        let mut error = json!({ "code": self.code, "message": self.message });
        if !self.details.is_empty() {
            error["details"] = json!(self.details);
        }
        let mut response = crate::response::json_response(self.status, &json!({ "error": error }));
        for (name, value) in self.headers {
            if let Ok(value) = value.parse() {
                response.headers_mut().insert(name, value);
            }
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => ApiError::not_found("resource"),
            StoreError::VersionMismatch { current } => ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "version_mismatch",
                format!("If-Match does not name the current version (\"{current}\")"),
            )
            .with_header("etag", format!("\"{current}\"")),
            StoreError::Constraint(message) => ApiError {
                details: vec![],
                ..ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "constraint_violation",
                    message,
                )
            },
            StoreError::Unavailable(message) => {
                tracing::warn!(%message, "database unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the database is unavailable",
                )
                .with_header("retry-after", "1")
            }
            StoreError::Internal(message) => {
                tracing::error!(%message, "database error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                )
            }
        }
    }
}
