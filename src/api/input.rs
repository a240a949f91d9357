//! Reading requests: JSON bodies (bounded, strictly typed), query parameters, If-Match,
//! Idempotency-Key, and field validation that reports every bad field at once.

use super::error::{ApiError, FieldError};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderMap};
use hyper::{Request, StatusCode};
use serde::de::DeserializeOwned;
use std::collections::HashMap;

/// Reads a JSON body of at most `limit` bytes. Malformed JSON is 400; wrong types,
/// unknown and missing fields are 422 naming the field; a larger body is 413; a body
/// that says it is not JSON is 415.
pub async fn json_body<T: DeserializeOwned>(
    request: Request<Incoming>,
    limit: usize,
) -> Result<(T, Bytes), ApiError> {
    if let Some(kind) = request.headers().get(CONTENT_TYPE) {
        let kind = kind.to_str().unwrap_or("").to_ascii_lowercase();
        if !kind.starts_with("application/json") {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as application/json",
            ));
        }
    }
    let bytes = match Limited::new(request.into_body(), limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err)
            if err
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body is larger than {limit} bytes"),
            ));
        }
        Err(err) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_body",
                err.to_string(),
            ));
        }
    };
    // Request bodies are JSON objects; serde would also take a positional array.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(ApiError::invalid(vec![FieldError {
            field: String::new(),
            message: "the body must be a JSON object".into(),
        }]));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
    let parsed = serde_path_to_error::deserialize(&mut deserializer);
    let value: T = match parsed {
        Ok(value) => value,
        Err(err) => {
            let inner = err.inner();
            if inner.is_syntax() || inner.is_eof() {
                return Err(malformed(inner));
            }
            let message = strip_position(&inner.to_string());
            let path = err.path().to_string();
            // A missing field is reported at its parent: name the field itself.
            let missing = message
                .strip_prefix("missing field `")
                .and_then(|m| m.strip_suffix('`'));
            let field = match missing {
                Some(missing) if path == "." => missing.to_owned(),
                Some(missing) => format!("{path}.{missing}"),
                None if path == "." => String::new(),
                None => path,
            };
            return Err(ApiError::invalid(vec![FieldError { field, message }]));
        }
    };
    // Trailing garbage after the value is malformed too.
    deserializer.end().map_err(|e| malformed(&e))?;
    Ok((value, bytes))
}

fn malformed(err: &serde_json::Error) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "malformed_json",
        format!("the body is not valid JSON: {err}"),
    )
}

fn strip_position(message: &str) -> String {
    match message.find(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

/// Query parameters (percent-decoded).
pub fn query(request: &Request<Incoming>) -> HashMap<String, String> {
    request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            Some((percent_decode(key)?, percent_decode(value)?))
        })
        .collect()
}

/// Decodes `%XX` escapes and `+` (as a space in query strings); `None` if malformed.
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Collects field errors, then fails with all of them at once.
#[derive(Default)]
pub struct Checks(Vec<FieldError>);

impl Checks {
    /// Records an error for `field` unless `ok`.
    pub fn check(&mut self, ok: bool, field: &str, message: impl Into<String>) {
        if !ok {
            self.0.push(FieldError {
                field: field.to_owned(),
                message: message.into(),
            });
        }
    }

    /// Parses one of a closed set of values, recording an error naming the allowed ones.
    pub fn one_of<T>(
        &mut self,
        field: &str,
        value: &str,
        parse: fn(&str) -> Option<T>,
        allowed: &[&str],
    ) -> Option<T> {
        let parsed = parse(value);
        self.check(
            parsed.is_some(),
            field,
            format!("must be one of {}", allowed.join(", ")),
        );
        parsed
    }

    /// Checks a text length in characters.
    pub fn length(&mut self, field: &str, value: &str, min: usize, max: usize) {
        let len = value.chars().count();
        self.check(
            (min..=max).contains(&len),
            field,
            format!("must be {min} to {max} characters long"),
        );
    }

    /// Fails when anything was recorded.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(self.0))
        }
    }
}

/// A single field error, as a 422.
pub struct FieldErrors;

impl FieldErrors {
    /// 422 for one field.
    pub fn one(field: &str, message: &str) -> ApiError {
        ApiError::invalid(vec![FieldError {
            field: field.to_owned(),
            message: message.to_owned(),
        }])
    }
}

/// Parses a numeric query parameter.
pub fn int_param(params: &HashMap<String, String>, name: &str) -> Result<Option<i64>, ApiError> {
    match params.get(name) {
        None => Ok(None),
        Some(value) => value
            .parse()
            .map(Some)
            .map_err(|_| FieldErrors::one(name, "must be an integer")),
    }
}

/// `limit` within `1..=max`, default `default`.
pub fn page_limit(
    params: &HashMap<String, String>,
    default: i64,
    max: i64,
) -> Result<i64, ApiError> {
    let limit = int_param(params, "limit")?.unwrap_or(default);
    if !(1..=max).contains(&limit) {
        return Err(FieldErrors::one(
            "limit",
            &format!("must be between 1 and {max}"),
        ));
    }
    Ok(limit)
}

/// The version named by `If-Match` (`"3"`, `W/"3"`, `3`); `*` or absent means any.
pub fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get("if-match") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim();
    if text == "*" {
        return Ok(None);
    }
    let bare = text.trim_start_matches("W/").trim_matches('"');
    bare.parse().map(Some).map_err(|_| {
        ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "version_mismatch",
            format!("If-Match {text:?} is not a version of this resource"),
        )
    })
}

/// The `Idempotency-Key` header: 1 to 255 visible ASCII characters.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key) if (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(key.to_owned()))
        }
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_idempotency_key",
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        )),
    }
}

/// Deserializes `null` as `Some(None)` and a value as `Some(Some(v))`, so that a PATCH
/// can tell "set to null" from "leave alone" (absent).
pub fn nullable<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    Ok(Some(Option::deserialize(deserializer)?))
}

use serde::Deserialize;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("project%3A42").as_deref(),
            Some("project:42")
        );
        assert_eq!(percent_decode("a+b").as_deref(), Some("a b"));
        assert_eq!(percent_decode("%zz"), None);
    }

    #[test]
    fn if_match_forms() {
        let mut headers = HeaderMap::new();
        assert_eq!(if_match(&headers).unwrap(), None);
        headers.insert("if-match", "\"3\"".parse().unwrap());
        assert_eq!(if_match(&headers).unwrap(), Some(3));
        headers.insert("if-match", "W/\"4\"".parse().unwrap());
        assert_eq!(if_match(&headers).unwrap(), Some(4));
        headers.insert("if-match", "*".parse().unwrap());
        assert_eq!(if_match(&headers).unwrap(), None);
        headers.insert("if-match", "\"abc\"".parse().unwrap());
        assert_eq!(
            if_match(&headers).unwrap_err().status,
            StatusCode::PRECONDITION_FAILED
        );
    }
}
