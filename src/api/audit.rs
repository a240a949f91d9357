//! `/api/v1/audit` (search, paginated) and `/api/v1/audit/export` (all matches, streamed
//! as CSV or JSON: rows are read in batches and sent as they come, so a large export
//! never sits in memory).

use super::input::{Checks, Params, int_param, page_limit};
use super::{Api, ApiError, Context, FieldError, Reply, page};
use crate::response::{Body, BoxError};
use crate::store::{AuditEntry, AuditQuery, Caller, Store};
use crate::tracker::format_time;
use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::{Response, StatusCode};
use tokio::sync::mpsc;

/// Rows read per batch while exporting.
const EXPORT_BATCH: i64 = 500;

/// The query parameters of `GET /api/v1/audit`.
pub const SEARCH_PARAMS: &[&str] = &[
    "entity",
    "entity_id",
    "actor",
    "action",
    "project_id",
    "from",
    "to",
    "cursor",
    "limit",
];

/// The query parameters of `GET /api/v1/audit/export`: the filters and the format, but
/// no `limit` (an export has no page size; a `limit` that was silently ignored would
/// hand over more than was asked for).
pub const EXPORT_PARAMS: &[&str] = &[
    "format",
    "entity",
    "entity_id",
    "actor",
    "action",
    "project_id",
    "from",
    "to",
    "cursor",
];

fn filters(params: &Params) -> Result<AuditQuery, ApiError> {
    let mut checks = Checks::default();
    if let Some(entity) = params.get("entity") {
        checks.check(
            ["issue", "comment", "membership", "user"].contains(&entity.as_str()),
            "entity",
            "must be one of issue, comment, membership, user",
        );
    }
    if let Some(action) = params.get("action") {
        checks.check(
            ["create", "update", "delete", "erase"].contains(&action.as_str()),
            "action",
            "must be one of create, update, delete, erase",
        );
    }
    checks.finish()?;
    Ok(AuditQuery {
        entity: params.get("entity").cloned(),
        entity_id: int_param(params, "entity_id")?,
        actor: params.get("actor").cloned(),
        action: params.get("action").cloned(),
        project_id: int_param(params, "project_id")?,
        from_ms: time_param(params, "from")?,
        to_ms: time_param(params, "to")?,
        after_id: int_param(params, "cursor")?.unwrap_or(0),
        limit: 0,
    })
}

/// A UTC time (`2026-12-01T00:00:00Z`) as ms since the Unix epoch.
fn time_param(params: &Params, name: &str) -> Result<Option<i64>, ApiError> {
    let Some(value) = params.get(name) else {
        return Ok(None);
    };
    utc_millis(value).map(Some).ok_or_else(|| {
        ApiError::invalid(vec![FieldError {
            field: name.to_owned(),
            message: "must be a UTC time such as 2026-12-01T00:00:00Z".into(),
        }])
    })
}

/// Parses `YYYY-MM-DD`, `T` or a space, `hh:mm:ss`, an optional fraction of 1 to 9
/// digits and an optional `Z`, from 1970 on. The shape is checked before humantime
/// parses: alone, it also takes text after the `Z`, `+00:00`, and an offset after a
/// fraction that it then ignores, reading such a time as UTC.
fn utc_millis(text: &str) -> Option<i64> {
    if !utc_shape(text) {
        return None;
    }
    let time = humantime::parse_rfc3339_weak(text).ok()?;
    let since_epoch = time.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(since_epoch.as_millis()).ok()
}

fn utc_shape(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |from: usize, to: usize| b[from..to].iter().all(u8::is_ascii_digit);
    let date_time = b.len() >= 19
        && digits(0, 4)
        && b[4] == b'-'
        && digits(5, 7)
        && b[7] == b'-'
        && digits(8, 10)
        && matches!(b[10], b'T' | b' ')
        && digits(11, 13)
        && b[13] == b':'
        && digits(14, 16)
        && b[16] == b':'
        && digits(17, 19);
    if !date_time {
        return false;
    }
    // The first 19 bytes are ASCII, so 19 is a character boundary.
    let rest = &text[19..];
    let rest = rest.strip_suffix('Z').unwrap_or(rest);
    match rest.strip_prefix('.') {
        None => rest.is_empty(),
        Some(fraction) => {
            (1..=9).contains(&fraction.len()) && fraction.bytes().all(|d| d.is_ascii_digit())
        }
    }
}

/// Global administrators read every entry; other callers the entries of the projects
/// they administer (none: an empty page, never an error that would tell them apart).
pub async fn search(api: &Api, params: &Params, context: &Context) -> Reply {
    let mut audit = filters(params)?;
    audit.limit = page_limit(params, api.config.page_default, api.config.page_max)?;
    let entries = api.store.search_audit(&context.caller(), &audit).await?;
    Ok(page(&entries, audit.limit, |entry| entry.id))
}

/// Export formats.
#[derive(Clone, Copy)]
enum Format {
    Csv,
    Json,
}

/// Every check of the request happens here, before the 200 and the first row: once
/// streaming started, a problem can only break the transfer.
pub async fn export(api: &Api, params: &Params, context: &Context) -> Reply {
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
    let mut audit = filters(params)?;
    audit.limit = EXPORT_BATCH;
    // Fail before the 200 if the database cannot answer at all.
    api.store.ping().await?;
    let (tx, rx) = mpsc::channel::<Result<Bytes, BoxError>>(4);
    let caller = context.caller();
    tokio::spawn(stream_rows(api.store.clone(), caller, audit, format, tx));
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
    caller: Caller,
    mut audit: AuditQuery,
    format: Format,
    tx: mpsc::Sender<Result<Bytes, BoxError>>,
) {
    let head = match format {
        Format::Csv => {
            "id,created_at,actor,actor_kind,entity,entity_id,action,request_id,changes,project_id\n"
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
        let rows = match store.search_audit(&caller, &audit).await {
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
        entry
            .project_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
    ];
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_cell(out, field);
    }
    out.push('\n');
}

/// One CSV cell. A value a spreadsheet would run as a formula (it starts with `=`, `+`,
/// `-`, `@`, a tab or a carriage return) gets a leading `'`, so opening an export never
/// runs what a user typed into an issue.
fn csv_cell(out: &mut String, field: &str) {
    let formula = field.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quoted = formula || field.contains([',', '"', '\n', '\r']);
    if quoted {
        out.push('"');
    }
    if formula {
        out.push('\'');
    }
    out.push_str(&field.replace('"', "\"\""));
    if quoted {
        out.push('"');
    }
}

#[cfg(test)]
mod tests {
    use super::{csv_cell, utc_millis};

    #[test]
    fn csv_cells_are_quoted_and_never_formulas() {
        let cell = |value: &str| {
            let mut out = String::new();
            csv_cell(&mut out, value);
            out
        };
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        for prefix in ["+", "-", "@", "\t"] {
            assert!(cell(&format!("{prefix}1")).starts_with("\"'"), "{prefix:?}");
        }
    }

    #[test]
    fn utc_times_in_one_shape_only() {
        let day = 20_423 * 86_400_000;
        assert_eq!(utc_millis("2025-12-01T00:00:00Z"), Some(day));
        assert_eq!(utc_millis("2025-12-01 00:00:00"), Some(day));
        assert_eq!(utc_millis("2025-12-01T00:00:00.5Z"), Some(day + 500));
        assert_eq!(utc_millis("2025-12-01T00:00:00.123456789"), Some(day + 123));
        for refused in [
            "2025-12-01",
            "2025-12-01T00:00:00+00:00",
            "2025-12-01T00:00:00.5+05:00",
            "2025-12-01T00:00:00Zjunk",
            "2025-12-01T00:00:00.",
            "2025-12-01T00:00:00.1234567890Z",
            "2025-12-01t00:00:00z",
            "2025-02-30T00:00:00Z",
            "1969-12-31T23:59:59Z",
            "2025-12-01T24:00:00Z",
            "\u{661}025-12-01T00:00:00Z",
        ] {
            assert_eq!(utc_millis(refused), None, "{refused}");
        }
    }
}
