//! The JSON Schema subset HTTP tools describe their arguments with, checked by asterai itself.
//!
//! A model's arguments are checked against the tool's schema before the tool is called, so a
//! tool never receives what its schema forbids. A full JSON Schema crate would cost more to build
//! than the whole daemon's parsing; tools' argument schemas are small objects, so asterai
//! supports the keywords they use and **refuses every other keyword when the agent is saved**
//! (a schema asterai cannot enforce is an error then, never a check silently skipped):
//!
//! `type` (a name or a list of names), `properties`, `required`, `additionalProperties` (a
//! boolean), `enum`, `const`, `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`,
//! `minLength`, `maxLength`, `items` (one schema), `minItems`, `maxItems`; and the annotations
//! `description`, `title`, `default`, `examples`, `format` (not enforced, as JSON Schema
//! 2020-12 says by default).

use serde_json::{Map, Value};

/// Keywords that constrain, and are enforced.
const ENFORCED: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "enum",
    "const",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "items",
    "minItems",
    "maxItems",
];
/// Keywords that only describe.
const ANNOTATIONS: &[&str] = &["description", "title", "default", "examples", "format", "$schema"];
const TYPES: &[&str] = &["object", "array", "string", "number", "integer", "boolean", "null"];
/// How deep a schema may nest.
const MAX_DEPTH: usize = 16;

/// Checks that `schema` uses only the supported keywords, well formed, and describes an object
/// (a function's arguments). The error names the keyword's path (`properties.when.format`).
pub fn check_arguments_schema(schema: &Value) -> Result<(), String> {
    check(schema, "", 0)?;
    match schema.get("type") {
        Some(Value::String(t)) if t == "object" => Ok(()),
        _ => Err("type: the schema must have \"type\": \"object\"".into()),
    }
}

fn at(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") }
}

fn check(schema: &Value, path: &str, depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("{}: nested deeper than {MAX_DEPTH} levels", if path.is_empty() { "(top)" } else { path }));
    }
    let Value::Object(map) = schema else {
        return Err(format!(
            "{}: expected a schema (a JSON object), got {schema}",
            if path.is_empty() { "(top)" } else { path }
        ));
    };
    for (key, value) in map {
        let here = at(path, key);
        if ANNOTATIONS.contains(&key.as_str()) {
            continue;
        }
        if !ENFORCED.contains(&key.as_str()) {
            return Err(format!(
                "{here}: the JSON Schema keyword {key:?} is not supported (asterai enforces {}; annotations {})",
                ENFORCED.join(", "),
                ANNOTATIONS.join(", ")
            ));
        }
        match key.as_str() {
            "type" => {
                let names: Vec<&Value> = match value {
                    Value::Array(list) if !list.is_empty() => list.iter().collect(),
                    other => vec![other],
                };
                for name in names {
                    if !name.as_str().is_some_and(|n| TYPES.contains(&n)) {
                        return Err(format!("{here}: expected one of {}, got {name}", TYPES.join(", ")));
                    }
                }
            }
            "properties" => {
                let Value::Object(properties) = value else {
                    return Err(format!("{here}: expected an object of schemas"));
                };
                for (name, property) in properties {
                    check(property, &at(&here, name), depth + 1)?;
                }
            }
            "items" => check(value, &here, depth + 1)?,
            "required" => {
                if !value.as_array().is_some_and(|list| list.iter().all(Value::is_string)) {
                    return Err(format!("{here}: expected a list of property names"));
                }
            }
            "additionalProperties" => {
                if !value.is_boolean() {
                    return Err(format!("{here}: only true or false is supported, not a schema"));
                }
            }
            "enum" => {
                if value.as_array().is_none_or(|list| list.is_empty()) {
                    return Err(format!("{here}: expected a non-empty list of values"));
                }
            }
            "const" => {}
            "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" => {
                if !value.is_number() {
                    return Err(format!("{here}: expected a number, got {value}"));
                }
            }
            _ => {
                if !value.is_u64() {
                    return Err(format!("{here}: expected a non-negative integer, got {value}"));
                }
            }
        }
    }
    Ok(())
}

/// Checks `value` against a schema [`check_arguments_schema`] accepted. The error names where
/// the value is wrong (`/when: expected string, got 42`), for the model to read and fix.
pub fn validate(schema: &Value, value: &Value) -> Result<(), String> {
    validate_at(schema, value, "")
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_type(value: &Value, name: &str) -> bool {
    match name {
        "integer" => match value {
            Value::Number(n) => n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0),
            _ => false,
        },
        "number" => value.is_number(),
        other => type_name(value) == other,
    }
}

fn validate_at(schema: &Value, value: &Value, path: &str) -> Result<(), String> {
    let Some(schema) = schema.as_object() else { return Ok(()) };
    let place = if path.is_empty() { "/" } else { path };
    let shown = || {
        let mut text = value.to_string();
        if text.len() > 60 {
            text.truncate(text.floor_char_boundary(57));
            text.push_str("...");
        }
        text
    };
    if let Some(types) = schema.get("type") {
        let names: Vec<&str> = match types {
            Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
            other => other.as_str().into_iter().collect(),
        };
        if !names.iter().any(|name| is_type(value, name)) {
            return Err(format!("{place}: expected {}, got {}", names.join(" or "), type_name(value)));
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
        return Err(format!("{place}: expected one of {}, got {}", list.join(", "), shown()));
    }
    if let Some(constant) = schema.get("const")
        && constant != value
    {
        return Err(format!("{place}: expected {constant}, got {}", shown()));
    }
    if let Some(n) = value.as_f64() {
        let bound = |key: &str| schema.get(key).and_then(Value::as_f64);
        if let Some(min) = bound("minimum").filter(|min| n < *min) {
            return Err(format!("{place}: expected at least {min}, got {n}"));
        }
        if let Some(max) = bound("maximum").filter(|max| n > *max) {
            return Err(format!("{place}: expected at most {max}, got {n}"));
        }
        if let Some(min) = bound("exclusiveMinimum").filter(|min| n <= *min) {
            return Err(format!("{place}: expected more than {min}, got {n}"));
        }
        if let Some(max) = bound("exclusiveMaximum").filter(|max| n >= *max) {
            return Err(format!("{place}: expected less than {max}, got {n}"));
        }
    }
    let count = |key: &str| schema.get(key).and_then(Value::as_u64);
    if let Some(text) = value.as_str() {
        let length = text.chars().count() as u64;
        if let Some(min) = count("minLength").filter(|min| length < *min) {
            return Err(format!("{place}: expected at least {min} characters, got {length}"));
        }
        if let Some(max) = count("maxLength").filter(|max| length > *max) {
            return Err(format!("{place}: expected at most {max} characters, got {length}"));
        }
    }
    if let Some(items) = value.as_array() {
        let length = items.len() as u64;
        if let Some(min) = count("minItems").filter(|min| length < *min) {
            return Err(format!("{place}: expected at least {min} items, got {length}"));
        }
        if let Some(max) = count("maxItems").filter(|max| length > *max) {
            return Err(format!("{place}: expected at most {max} items, got {length}"));
        }
        if let Some(item_schema) = schema.get("items") {
            for (i, item) in items.iter().enumerate() {
                validate_at(item_schema, item, &format!("{path}/{i}"))?;
            }
        }
    }
    if let Some(object) = value.as_object() {
        validate_object(schema, object, path)?;
    }
    Ok(())
}

fn validate_object(schema: &Map<String, Value>, object: &Map<String, Value>, path: &str) -> Result<(), String> {
    let place = if path.is_empty() { "/" } else { path };
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for name in required.iter().filter_map(Value::as_str) {
            if !object.contains_key(name) {
                return Err(format!("{place}: the property {name:?} is required"));
            }
        }
    }
    let properties = schema.get("properties").and_then(Value::as_object);
    for (name, property) in object {
        match properties.and_then(|p| p.get(name)) {
            Some(property_schema) => validate_at(property_schema, property, &format!("{path}/{name}"))?,
            None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                let name: String = name.chars().filter(|c| !c.is_control()).take(64).collect();
                return Err(format!("{place}: no property {name:?} is allowed"));
            }
            None => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn order_schema() -> Value {
        json!({"type": "object", "properties": {
            "order_id": {"type": "string", "minLength": 3, "maxLength": 12, "description": "the order"},
            "quantity": {"type": "integer", "minimum": 1, "maximum": 10},
            "size": {"enum": ["s", "m", "l"]},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
            "note": {"type": ["string", "null"]}},
          "required": ["order_id"], "additionalProperties": false})
    }

    #[test]
    fn arguments_are_checked_and_the_error_says_where() {
        let schema = order_schema();
        check_arguments_schema(&schema).unwrap();
        validate(&schema, &json!({"order_id": "A-123", "quantity": 2, "size": "m", "tags": ["x"], "note": null}))
            .unwrap();
        for (bad, expected) in [
            (json!({}), "/: the property \"order_id\" is required"),
            (json!({"order_id": 42}), "/order_id: expected string, got integer"),
            (json!({"order_id": "A1"}), "/order_id: expected at least 3 characters, got 2"),
            (json!({"order_id": "A-1", "quantity": 0}), "/quantity: expected at least 1, got 0"),
            (json!({"order_id": "A-1", "quantity": 1.5}), "/quantity: expected integer, got number"),
            (json!({"order_id": "A-1", "size": "xl"}), "/size: expected one of \"s\", \"m\", \"l\", got \"xl\""),
            (json!({"order_id": "A-1", "tags": ["a", 1]}), "/tags/1: expected string, got integer"),
            (json!({"order_id": "A-1", "tags": ["a", "b", "c"]}), "/tags: expected at most 2 items, got 3"),
            (json!({"order_id": "A-1", "admin": true}), "/: no property \"admin\" is allowed"),
            (json!("A-1"), "/: expected object, got string"),
        ] {
            assert_eq!(validate(&schema, &bad).unwrap_err(), expected, "{bad}");
        }
    }

    #[test]
    fn unsupported_keywords_are_refused_when_saved() {
        let e = check_arguments_schema(
            &json!({"type": "object", "properties": {"when": {"type": "string", "pattern": "^2"}}}),
        )
        .unwrap_err();
        assert!(e.starts_with("properties.when.pattern: the JSON Schema keyword \"pattern\" is not supported"), "{e}");
        let e = check_arguments_schema(&json!({"type": "object", "oneOf": []})).unwrap_err();
        assert!(e.starts_with("oneOf: "), "{e}");
        let e = check_arguments_schema(&json!({"type": "string"})).unwrap_err();
        assert!(e.contains("must have \"type\": \"object\""), "{e}");
        let e =
            check_arguments_schema(&json!({"type": "object", "additionalProperties": {"type": "string"}})).unwrap_err();
        assert!(e.starts_with("additionalProperties: only true or false"), "{e}");
        let e = check_arguments_schema(&json!({"type": "object", "properties": {"a": {"type": "text"}}})).unwrap_err();
        assert!(e.starts_with("properties.a.type: expected one of object"), "{e}");
        let mut deep = json!({"type": "string"});
        for _ in 0..20 {
            deep = json!({"type": "array", "items": deep});
        }
        assert!(check_arguments_schema(&json!({"type": "object", "properties": {"a": deep}})).is_err());
        check_arguments_schema(&json!({"type": "object", "properties": {"when": {"type": "string", "format": "date-time", "title": "When"}}}))
            .unwrap();
    }
}
