//! `docs/openapi.yaml`, read as the contract a response must keep: its status listed for
//! the operation, its content type one of the listed ones (or no body when none is), its
//! body valid against the listed schema, its required headers present and the declared
//! ones well-formed.
//!
//! The schema check knows the JSON Schema keywords the document uses and panics on any
//! other, so a keyword it does not understand can never pass unchecked. It is stricter
//! than JSON Schema in one way: an object schema that lists `properties` and says nothing
//! about `additionalProperties` accepts no other property, so a field the server sends
//! but the document does not declare is found.

use super::http::Reply;
use serde_json::{Map, Value};
use yaml_rust2::{Yaml, YamlLoader};

/// Keywords that only annotate a schema.
const ANNOTATIONS: &[&str] = &["description", "example", "default", "title", "summary"];

/// The parsed document.
pub struct Document {
    root: Value,
}

impl Document {
    /// Reads `docs/openapi.yaml` of this checkout.
    pub fn load() -> Document {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.yaml");
        let text = std::fs::read_to_string(path).expect("docs/openapi.yaml is readable");
        let mut documents = YamlLoader::load_from_str(&text).expect("docs/openapi.yaml parses");
        assert_eq!(documents.len(), 1, "one YAML document");
        Document {
            root: to_json(documents.remove(0)),
        }
    }

    /// Every operation as (path template, upper-case method).
    pub fn operations(&self) -> Vec<(String, String)> {
        let mut operations = Vec::new();
        for (template, item) in self.paths() {
            for method in methods(item) {
                operations.push((template.clone(), method));
            }
        }
        operations
    }

    /// The upper-case methods the document lists for a path template.
    pub fn methods_of(&self, template: &str) -> Vec<String> {
        methods(&self.paths()[template])
    }

    fn paths(&self) -> &Map<String, Value> {
        self.root["paths"].as_object().expect("paths")
    }

    /// Checks a response of `method template` against the document; returns what is wrong.
    pub fn check(&self, template: &str, method: &str, reply: &Reply) -> Vec<String> {
        let Some(operation) = self
            .paths()
            .get(template)
            .and_then(|item| item.get(method.to_ascii_lowercase()))
        else {
            return vec![format!("{method} {template} is not in the document")];
        };
        let status = reply.status.to_string();
        let responses = &operation["responses"];
        let Some(response) = responses.get(&status).or_else(|| responses.get("default")) else {
            return vec![format!("status {status} is not listed ({})", reply.text())];
        };
        let response = self.resolve(response);
        let mut errors = self.check_headers(response, reply);
        errors.extend(self.check_content(response, method, reply));
        errors
    }

    fn check_headers(&self, response: &Value, reply: &Reply) -> Vec<String> {
        let mut errors = Vec::new();
        let declared = response.get("headers").and_then(Value::as_object);
        for (name, header) in declared.into_iter().flatten() {
            let header = self.resolve(header);
            match reply.header(name) {
                None if header.get("required") == Some(&Value::Bool(true)) => {
                    errors.push(format!("header {name} is required but absent"));
                }
                None => {}
                Some(text) => {
                    let schema = &header["schema"];
                    let value = match schema.get("type").and_then(Value::as_str) {
                        Some("integer") => match text.parse::<i64>() {
                            Ok(n) => Value::from(n),
                            Err(_) => Value::String(text.to_owned()),
                        },
                        _ => Value::String(text.to_owned()),
                    };
                    self.validate(schema, &value, &format!("header {name}"), &mut errors);
                }
            }
        }
        errors
    }

    fn check_content(&self, response: &Value, method: &str, reply: &Reply) -> Vec<String> {
        let mut errors = Vec::new();
        let content = response.get("content").and_then(Value::as_object);
        let Some(content) = content.filter(|_| method != "HEAD") else {
            if !reply.body.is_empty() {
                errors.push(format!("a body where none is listed: {}", reply.text()));
            }
            return errors;
        };
        let media_type = reply
            .header("content-type")
            .and_then(|kind| kind.split(';').next())
            .map(|kind| kind.trim().to_ascii_lowercase())
            .unwrap_or_default();
        let Some(listed) = content.get(&media_type) else {
            let listed: Vec<&String> = content.keys().collect();
            errors.push(format!(
                "content type {media_type:?} is not one of {listed:?}"
            ));
            return errors;
        };
        let body = if media_type == "application/json" {
            match serde_json::from_slice(&reply.body) {
                Ok(body) => body,
                Err(err) => {
                    errors.push(format!("the body is not JSON ({err}): {}", reply.text()));
                    return errors;
                }
            }
        } else {
            match String::from_utf8(reply.body.to_vec()) {
                Ok(text) => Value::String(text),
                Err(_) => {
                    errors.push("the body is not UTF-8 text".into());
                    return errors;
                }
            }
        };
        self.validate(&listed["schema"], &body, "body", &mut errors);
        errors
    }

    /// Follows `$ref`s to the object they name.
    fn resolve<'a>(&'a self, mut value: &'a Value) -> &'a Value {
        while let Some(reference) = value.get("$ref").and_then(Value::as_str) {
            let pointer = reference
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("only local references: {reference}"));
            value = self
                .root
                .pointer(pointer)
                .unwrap_or_else(|| panic!("dangling reference {reference}"));
        }
        value
    }

    /// Validates `value` against `schema`, recording errors with `at` as the location.
    pub fn validate(&self, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
        let schema = self.resolve(schema);
        let Some(keywords) = schema.as_object() else {
            panic!("{at}: a schema must be an object: {schema}");
        };
        for (keyword, rule) in keywords {
            if let Err(error) = self.keyword(schema, keyword, rule, value, at, errors) {
                errors.push(format!("{at}: {error} (value {value})"));
            }
        }
    }

    /// Applies one keyword; nested errors go to `errors`, this keyword's own to `Err`.
    fn keyword(
        &self,
        schema: &Value,
        keyword: &str,
        rule: &Value,
        value: &Value,
        at: &str,
        errors: &mut Vec<String>,
    ) -> Result<(), String> {
        let text = value.as_str();
        let length = text.map(|t| t.chars().count());
        let number = value.as_f64();
        let ensure = |ok: bool, what: String| if ok { Ok(()) } else { Err(what) };
        match keyword {
            "type" => {
                let types: Vec<&str> = match rule {
                    Value::String(one) => vec![one.as_str()],
                    Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
                    other => panic!("{at}: bad type {other}"),
                };
                ensure(
                    types.iter().any(|t| has_type(value, t)),
                    format!("is not of type {types:?}"),
                )
            }
            "enum" => ensure(
                rule.as_array().expect("enum is a list").contains(value),
                format!("is not one of {rule}"),
            ),
            "required" => {
                let Some(object) = value.as_object() else {
                    return Ok(());
                };
                let names = rule.as_array().expect("required is a list");
                let missing: Vec<&Value> = names
                    .iter()
                    .filter(|name| !object.contains_key(name.as_str().expect("a name")))
                    .collect();
                ensure(missing.is_empty(), format!("lacks {missing:?}"))
            }
            "properties" => {
                let Some(object) = value.as_object() else {
                    return Ok(());
                };
                let declared = rule.as_object().expect("properties is a map");
                for (name, property) in object {
                    match declared.get(name) {
                        Some(schema) => {
                            self.validate(schema, property, &format!("{at}.{name}"), errors)
                        }
                        None if schema.get("additionalProperties").is_none() => {
                            errors.push(format!("{at}: property {name:?} is not declared"));
                        }
                        None => {}
                    }
                }
                Ok(())
            }
            "additionalProperties" => {
                let Some(object) = value.as_object() else {
                    return Ok(());
                };
                let declared = schema.get("properties").and_then(Value::as_object);
                let extra = object
                    .iter()
                    .filter(|(name, _)| !declared.is_some_and(|d| d.contains_key(*name)));
                for (name, property) in extra {
                    match rule {
                        Value::Bool(true) => {}
                        Value::Bool(false) => {
                            errors.push(format!("{at}: property {name:?} is not allowed"))
                        }
                        schema => self.validate(schema, property, &format!("{at}.{name}"), errors),
                    }
                }
                Ok(())
            }
            "items" => {
                for (i, item) in value.as_array().into_iter().flatten().enumerate() {
                    self.validate(rule, item, &format!("{at}[{i}]"), errors);
                }
                Ok(())
            }
            "not" => {
                let mut inner = Vec::new();
                self.validate(rule, value, at, &mut inner);
                ensure(
                    !inner.is_empty(),
                    format!("matches the excluded schema {rule}"),
                )
            }
            "minLength" => ensure(
                length.is_none_or(|n| n as u64 >= rule.as_u64().expect("a count")),
                format!("is shorter than {rule}"),
            ),
            "maxLength" => ensure(
                length.is_none_or(|n| n as u64 <= rule.as_u64().expect("a count")),
                format!("is longer than {rule}"),
            ),
            "minimum" => ensure(
                number.is_none_or(|n| n >= rule.as_f64().expect("a number")),
                format!("is below {rule}"),
            ),
            "maximum" => ensure(
                number.is_none_or(|n| n <= rule.as_f64().expect("a number")),
                format!("is above {rule}"),
            ),
            "pattern" => {
                let pattern = regex::Regex::new(rule.as_str().expect("a pattern"))
                    .unwrap_or_else(|e| panic!("{at}: bad pattern {rule}: {e}"));
                ensure(
                    text.is_none_or(|t| pattern.is_match(t)),
                    format!("does not match {rule}"),
                )
            }
            "format" => match rule.as_str() {
                Some("int64") => ensure(
                    value.is_i64() || !value.is_number(),
                    "is not a 64-bit integer".into(),
                ),
                Some("date-time") => ensure(
                    text.is_none_or(is_date_time),
                    "is not an RFC 3339 date-time".into(),
                ),
                other => panic!("{at}: unknown format {other:?}"),
            },
            "$ref" => unreachable!("resolved"),
            annotation if ANNOTATIONS.contains(&annotation) => Ok(()),
            unknown => panic!("{at}: the check does not know the keyword {unknown:?}"),
        }
    }
}

fn methods(item: &Value) -> Vec<String> {
    const METHODS: &[&str] = &["get", "put", "post", "delete", "options", "head", "patch"];
    item.as_object()
        .expect("a path item")
        .keys()
        .filter(|key| METHODS.contains(&key.as_str()))
        .map(|key| key.to_ascii_uppercase())
        .collect()
}

fn has_type(value: &Value, name: &str) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => value.is_i64() || value.is_u64(),
        other => panic!("unknown type {other}"),
    }
}

/// `2026-12-02T05:32:56.022Z`: RFC 3339 with a `Z` or an offset.
fn is_date_time(text: &str) -> bool {
    let pattern = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$";
    regex::Regex::new(pattern).unwrap().is_match(text)
}

fn to_json(yaml: Yaml) -> Value {
    match yaml {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(b),
        Yaml::Integer(n) => Value::from(n),
        Yaml::Real(text) => Value::from(text.parse::<f64>().expect("a YAML real")),
        Yaml::String(text) => Value::String(text),
        Yaml::Array(items) => Value::Array(items.into_iter().map(to_json).collect()),
        Yaml::Hash(map) => Value::Object(
            map.into_iter()
                .map(|(key, value)| (key_text(key), to_json(value)))
                .collect(),
        ),
        other => panic!("unsupported YAML node {other:?}"),
    }
}

/// Keys as text: an unquoted `200:` is an integer to YAML, a status code to OpenAPI.
fn key_text(key: Yaml) -> String {
    match key {
        Yaml::String(text) | Yaml::Real(text) => text,
        Yaml::Integer(n) => n.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        other => panic!("unsupported YAML key {other:?}"),
    }
}
