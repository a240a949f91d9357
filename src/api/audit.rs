//! `/api/v1/audit` (search, paginated) and `/api/v1/audit/export` (all matches, streamed
//! as CSV or JSON: rows are read in batches and sent as they come, so a large export
//! never sits in memory).

use super::input::{Checks, int_param, page_limit, query};
use super::{Api, ApiError, FieldError, Reply, page};
use crate::server::{Body, BoxError};
use crate::store::{AuditEntry, AuditQuery, Store};
use crate::tracker::format_time;
use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use std::collections::HashMap;
use tokio::sync::mpsc;

/// Rows read per batch while exporting.
const EXPORT_BATCH: i64 = 500;

fn filters(params: &HashMap<String, String>) -> Result<AuditQuery, ApiError> {
    let mut checks = Checks::default();
    if let Some(entity) = params.get("entity") {
        checks.check(
            ["issue", "comment"].contains(&entity.as_str()),
            "entity",
            "must be one of issue, comment",
        );
    }
    if let Some(action) = params.get("action") {
        checks.check(
            ["create", "update", "delete"].contains(&action.as_str()),
            "action",
            "must be one of create, update, delete",
        );
    }
    checks.finish()?;
    Ok(AuditQuery {
        entity: params.get("entity").cloned(),
        entity_id: int_param(params, "entity_id")?,
        actor: params.get("actor").cloned(),
        action: params.get("action").cloned(),
        from_ms: time_param(params, "from")?,
        to_ms: time_param(params, "to")?,
        after_id: int_param(params, "cursor")?.unwrap_or(0),
        limit: 0,
    })
}

/// An RFC 3339 time (`2026-12-01T00:00:00Z`) as ms since the Unix epoch.
fn time_param(params: &HashMap<String, String>, name: &str) -> Result<Option<i64>, ApiError> {
    let Some(value) = params.get(name) else {
        return Ok(None);
    };
    humantime::parse_rfc3339_weak(value)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| Some(d.as_millis() as i64))
        .ok_or_else(|| {
            ApiError::invalid(vec![FieldError {
                field: name.to_owned(),
                message: "must be an RFC 3339 time, e.g. 2026-12-01T00:00:00Z".into(),
            }])
        })
}

pub async fn search(api: &Api, request: Request<Incoming>) -> Reply {
    let params = query(&request);
    let mut audit = filters(&params)?;
    audit.limit = page_limit(&params, api.config.page_default, api.config.page_max)?;
    let entries = api.store.search_audit(&audit).await?;
    Ok(page(&entries, audit.limit, |entry| entry.id))
}

/// Export formats.
#[derive(Clone, Copy)]
enum Format {
    Csv,
    Json,
}

pub async fn export(api: &Api, request: Request<Incoming>) -> Reply {
    let params = query(&request);
    let format = match params.get("format").map(String::as_str) {
        None | Some("json") => Format::Json,
        Some("csv") => Format::Csv,
        Some(_) => {
            return Err(ApiError::invalid(vec![FieldError {
                field: "format".into(),
                message: "must be csv or json".into(),
            }]));
        }
    };
    let mut audit = filters(&params)?;
    audit.limit = EXPORT_BATCH;
    // Fail before the 200 if the database cannot answer at all.
    api.store.ping().await?;
    let (tx, rx) = mpsc::channel::<Result<Bytes, BoxError>>(4);
    tokio::spawn(stream_rows(api.store.clone(), audit, format, tx));
    let body = StreamBody::new(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk.map(Frame::data), rx))
    }));
    let mut response = Response::new(Body::new(body.boxed()));
    let (kind, extension) = match format {
        Format::Csv => ("text/csv; charset=utf-8", "csv"),
        Format::Json => ("application/json", "json"),
    };
    let headers = response.headers_mut();
    headers.insert("content-type", kind.parse().expect("valid"));
    headers.insert(
        "content-disposition",
        format!("attachment; filename=\"audit.{extension}\"")
            .parse()
            .expect("valid"),
    );
    *response.status_mut() = StatusCode::OK;
    Ok(response)
}

/// Reads matching rows batch by batch and sends them encoded; stops when the client goes.
async fn stream_rows(
    store: Store,
    mut audit: AuditQuery,
    format: Format,
    tx: mpsc::Sender<Result<Bytes, BoxError>>,
) {
    let head = match format {
        Format::Csv => {
            "id,created_at,actor,actor_kind,entity,entity_id,action,request_id,changes\n"
        }
        Format::Json => "[",
    };
    if tx
        .send(Ok(Bytes::from_static(head.as_bytes())))
        .await
        .is_err()
    {
        return;
    }
    let mut first = true;
    loop {
        let rows = match store.search_audit(&audit).await {
            Ok(rows) => rows,
            Err(err) => {
                // The status line is gone already: end the body with an error, so the
                // client sees a broken transfer instead of a silently short file.
                let _ = tx.send(Err(Box::new(err))).await;
                return;
            }
        };
        let mut chunk = String::new();
        for entry in &rows {
            match format {
                Format::Csv => csv_line(&mut chunk, entry),
                Format::Json => {
                    if !first {
                        chunk.push(',');
                    }
                    chunk.push_str(&serde_json::to_string(entry).expect("entries serialize"));
                }
            }
            first = false;
        }
        if !chunk.is_empty() && tx.send(Ok(Bytes::from(chunk))).await.is_err() {
            return;
        }
        match rows.last() {
            Some(last) if rows.len() as i64 == audit.limit => audit.after_id = last.id,
            _ => break,
        }
    }
    if let Format::Json = format {
        let _ = tx.send(Ok(Bytes::from_static(b"]"))).await;
    }
}

fn csv_line(out: &mut String, entry: &AuditEntry) {
    let fields = [
        entry.id.to_string(),
        format_time(entry.created_at),
        entry.actor.clone(),
        entry.actor_kind.clone(),
        entry.entity.clone(),
        entry.entity_id.to_string(),
        entry.action.clone(),
        entry.request_id.clone(),
        entry.changes.to_string(),
    ];
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if field.contains([',', '"', '\n', '\r']) {
            out.push('"');
            out.push_str(&field.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(field);
        }
    }
    out.push('\n');
}
