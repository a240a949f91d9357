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
/// unknown and missing fields, lone surrogate escapes and numbers out of range are 422
/// naming the field; a larger body is 413; a body that says it is not JSON is 415.
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
    let value = parse_json(&bytes)?;
    Ok((value, bytes))
}

/// Parses a request body: a JSON object of the shape `T`. Errors as [`json_body`] says.
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Request bodies are JSON objects; serde would also take a positional array.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(ApiError::invalid(vec![FieldError {
            field: String::new(),
            message: "the body must be a JSON object".into(),
        }]));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(field_error)?;
    // Trailing garbage after the value is malformed too.
    deserializer.end().map_err(|e| malformed(&e))?;
    Ok(value)
}

/// A body that did not parse as `T`: 400 when it is not JSON, else 422 naming the field.
fn field_error(err: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let inner = err.inner();
    let mut message = strip_position(&inner.to_string());
    if inner.is_syntax() || inner.is_eof() {
        match unrepresentable(&message) {
            Some(explained) => message = explained.to_owned(),
            None => return malformed(inner),
        }
    }
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
    ApiError::invalid(vec![FieldError { field, message }])
}

/// JSON that follows the grammar but holds a value no field can take: a UTF-16
/// surrogate escape without its pair (`"\ud800"` is not Unicode text) or a number too
/// large for any numeric type (`1e400`). serde_json files these under syntax errors; they
/// are the value's fault, so the field is named (422) instead of the body being called
/// malformed (400). Returns the message for the field.
fn unrepresentable(message: &str) -> Option<&'static str> {
    match message {
        "lone leading surrogate in hex escape" | "unexpected end of hex escape" => {
            Some("must be Unicode text (an escaped UTF-16 surrogate needs its pair)")
        }
        "number out of range" => Some("number out of range"),
        _ => None,
    }
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

/// A request's query parameters, percent-decoded; the last of a repeated name wins.
pub type Params = HashMap<String, String>;

/// The query parameters of `uri`, checked against the `names` its route takes. An
/// unknown name, a value that does not decode to UTF-8 text (a `%` without two hex
/// digits, invalid UTF-8) and a value holding U+0000 are each a 422 naming the
/// parameter: a filter is never dropped, nor applied to something else than was meant.
pub fn query(uri: &hyper::Uri, names: &[&str]) -> Result<Params, ApiError> {
    let mut checks = Checks::default();
    let mut params = Params::new();
    let pairs = uri.query().unwrap_or("").split('&');
    for pair in pairs.filter(|pair| !pair.is_empty()) {
        let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded = percent_decode(raw_name);
        let Some(name) = decoded
            .clone()
            .filter(|name| names.contains(&name.as_str()))
        else {
            let takes = match names {
                [] => "this route takes no query parameters".to_owned(),
                _ => format!("this route takes {}", names.join(", ")),
            };
            let field = decoded.as_deref().unwrap_or(raw_name);
            checks.check(false, field, format!("unknown query parameter; {takes}"));
            continue;
        };
        match percent_decode(raw_value) {
            Some(value) => {
                checks.no_nul(&name, &value);
                params.insert(name, value);
            }
            None => checks.check(
                false,
                &name,
                "must be percent-encoded UTF-8 (each % followed by two hex digits)",
            ),
        }
    }
    checks.finish()?;
    Ok(params)
}

/// Decodes `%XX` escapes and `+` (as a space in query strings); `None` if malformed.
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                // Two hex digits exactly: from_str_radix alone would take `%+1`.
                let hex = bytes.get(i + 1..i + 3)?;
                out.push((hex_value(hex[0])? << 4) | hex_value(hex[1])?);
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

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit).to_digit(16).map(|d| d as u8)
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

    /// Checks a text to be stored: no U+0000 (PostgreSQL refuses it in text, and
    /// SQLite's `length()` stops at it, so the database's checks would disagree with
    /// this one), and a length in characters within `min..=max`.
    pub fn text(&mut self, field: &str, value: &str, min: usize, max: usize) {
        if !self.no_nul(field, value) {
            return;
        }
        let len = value.chars().count();
        self.check(
            (min..=max).contains(&len),
            field,
            format!("must be {min} to {max} characters long"),
        );
    }

    /// Records an error unless `value` is free of U+0000; returns whether it is.
    pub fn no_nul(&mut self, field: &str, value: &str) -> bool {
        let clean = !value.contains('\0');
        self.check(clean, field, "must not contain U+0000 (NUL)");
        clean
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
pub fn int_param(params: &Params, name: &str) -> Result<Option<i64>, ApiError> {
    match params.get(name) {
        None => Ok(None),
        Some(value) => value
            .parse()
            .map(Some)
            .map_err(|_| FieldErrors::one(name, "must be an integer")),
    }
}

/// `limit` within `1..=max`, default `default`.
pub fn page_limit(params: &Params, default: i64, max: i64) -> Result<i64, ApiError> {
    let limit = int_param(params, "limit")?.unwrap_or(default);
    if !(1..=max).contains(&limit) {
        return Err(FieldErrors::one(
            "limit",
            &format!("must be between 1 and {max}"),
        ));
    }
    Ok(limit)
}

/// The version named by `If-Match`: `"3"`, `W/"3"` or a bare `3`, the number written
/// as the server writes it (no sign, no leading zero), so that one tag names one
/// version. `*` or absent means any. Anything else is 412: it names no version of the
/// resource.
pub fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get("if-match") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim();
    if text == "*" {
        return Ok(None);
    }
    let tag = text.strip_prefix("W/").unwrap_or(text);
    let quoted = tag.strip_prefix('"').and_then(|t| t.strip_suffix('"'));
    let number = match quoted {
        Some(inner) => inner,
        None if tag.len() == text.len() => tag,
        // `W/3`: a weak tag must be quoted.
        None => "",
    };
    canonical_version(number).map(Some).ok_or_else(|| {
        ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "version_mismatch",
            format!("If-Match {text:?} is not a version of this resource"),
        )
    })
}

/// A version in its one written form: 1 to 19 decimal digits, the first not 0.
fn canonical_version(text: &str) -> Option<i64> {
    let digits = text.bytes().all(|b| b.is_ascii_digit());
    (digits && !text.starts_with('0')).then(|| text.parse().ok())?
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
        assert_eq!(percent_decode("%+1"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%e2%82%AC").as_deref(), Some("\u{20ac}"));
        assert_eq!(percent_decode("%FF"), None, "not UTF-8");
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
        headers.insert("if-match", "5".parse().unwrap());
        assert_eq!(if_match(&headers).unwrap(), Some(5));
        for not_a_version in [
            "\"abc\"",
            "\"+1\"",
            "\"01\"",
            "\"0\"",
            "\"-1\"",
            "\"\"",
            "\"1",
            "W/1",
            "\"1\", \"2\"",
            "\"99999999999999999999\"",
        ] {
            headers.insert("if-match", not_a_version.parse().unwrap());
            assert_eq!(
                if_match(&headers).unwrap_err().status,
                StatusCode::PRECONDITION_FAILED,
                "{not_a_version}"
            );
        }
    }

    fn fields(error: ApiError) -> Vec<String> {
        assert_eq!(error.status, StatusCode::UNPROCESSABLE_ENTITY);
        error.details.into_iter().map(|d| d.field).collect()
    }

    #[test]
    fn query_values_decode_or_are_refused_by_name() {
        let uri = |text: &str| text.parse::<hyper::Uri>().unwrap();
        let params = query(&uri("/x?a=project%3A1&b=x+y&a=2&&c"), &["a", "b", "c"]).unwrap();
        assert_eq!(params["a"], "2", "the last one wins");
        assert_eq!(params["b"], "x y");
        assert_eq!(params["c"], "");
        let refused = query(&uri("/x?a=%ZZ&b=%FF&c=%00&d=1"), &["a", "b", "c"]).unwrap_err();
        assert_eq!(fields(refused), ["a", "b", "c", "d"]);
        let none = query(&uri("/x?a=1"), &[]).unwrap_err();
        assert!(
            none.details[0]
                .message
                .contains("takes no query parameters")
        );
    }

    #[test]
    fn text_refuses_nul_anywhere() {
        let mut checks = Checks::default();
        checks.text("a", "\0x", 1, 10);
        checks.text("b", "x\0", 1, 10);
        checks.text("c", "fine", 1, 10);
        checks.text("d", "", 1, 10);
        assert_eq!(fields(checks.finish().unwrap_err()), ["a", "b", "d"]);
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        name: String,
        count: i64,
        data: Option<serde_json::Value>,
    }

    /// The status and the field named when `body` is refused as a [`Sample`].
    fn refused(body: &str) -> (StatusCode, Option<String>) {
        let error = parse_json::<Sample>(body.as_bytes()).unwrap_err();
        (error.status, error.details.first().map(|d| d.field.clone()))
    }

    #[test]
    fn grammatical_but_unrepresentable_values_name_their_field() {
        let invalid = |field: &str| (StatusCode::UNPROCESSABLE_ENTITY, Some(field.to_owned()));
        assert_eq!(
            refused(r#"{"name": "\ud800", "count": 1}"#),
            invalid("name")
        );
        assert_eq!(
            refused(r#"{"name": "a\udc00b", "count": 1}"#),
            invalid("name")
        );
        assert_eq!(
            refused(r#"{"name": "\ud800\u0041", "count": 1}"#),
            invalid("name")
        );
        assert_eq!(
            refused(r#"{"name": "x", "count": 1e400}"#),
            invalid("count")
        );
        assert_eq!(
            refused(r#"{"name": "x", "count": 99999999999999999999}"#),
            invalid("count")
        );
        assert_eq!(
            refused(r#"{"name": "x", "count": 1, "data": {"k": [-1e999]}}"#),
            invalid("data.k[0]")
        );
        assert_eq!(
            refused(r#"{"name": "x", "count": 1,"#),
            (StatusCode::BAD_REQUEST, None)
        );
        assert_eq!(
            refused(r#"{"name": "\u12"}"#),
            (StatusCode::BAD_REQUEST, None)
        );
        assert_eq!(
            refused(r#"{"name": "x", "count": 1} x"#),
            (StatusCode::BAD_REQUEST, None)
        );
        let ok: Sample = parse_json(br#"{"name": "\ud83d\ude00", "count": 1}"#).unwrap();
        assert_eq!(ok.name, "\u{1F600}", "a surrogate pair is one character");
    }
}
