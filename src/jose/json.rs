//! JSON parsing that refuses duplicate member names at any depth.
//!
//! serde_json keeps the last of duplicate members silently; for token headers and claims that
//! lets two parsers disagree about `alg` or `sub` (RFC 7515 §4, RFC 7519 §4). We refuse instead.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// A JSON value whose objects, at every depth, have distinct member names.
#[derive(Debug, Clone, PartialEq)]
pub struct DuplicateFree(pub Value);

impl<'de> Deserialize<'de> for DuplicateFree {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(StrictVisitor)
            .map(DuplicateFree)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number is not finite"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(DuplicateFree(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            let DuplicateFree(value) = map.next_value()?;
            if members.contains_key(&name) {
                return Err(de::Error::custom(format_args!(
                    "duplicate member name {name:?}"
                )));
            }
            members.insert(name, value);
        }
        Ok(Value::Object(members))
    }
}

/// Parses UTF-8 JSON text that must be a single object with no duplicate member names at any
/// depth and nothing after it. The error says what was wrong.
pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice::<DuplicateFree>(bytes) {
        Ok(DuplicateFree(Value::Object(map))) => Ok(map),
        Ok(DuplicateFree(other)) => Err(format!("expected an object, found {}", kind(&other))),
        Err(err) => Err(err.to_string()),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_objects() {
        let map = parse_object(br#"{"sub":"a","n":[1,2.5,{"x":null}],"b":true}"#).unwrap();
        assert_eq!(map["sub"], "a");
    }

    #[test]
    fn refuses_duplicates_at_any_depth() {
        assert!(
            parse_object(br#"{"sub":"user","sub":"admin"}"#)
                .unwrap_err()
                .contains("duplicate")
        );
        assert!(
            parse_object(br#"{"a":{"b":1,"b":2}}"#)
                .unwrap_err()
                .contains("duplicate")
        );
        assert!(
            parse_object(br#"{"a":[{"b":1,"b":2}]}"#)
                .unwrap_err()
                .contains("duplicate")
        );
    }

    #[test]
    fn refuses_non_objects_trailing_data_and_bad_text() {
        for bad in [
            &b"[]"[..],
            b"null",
            b"\"x\"",
            b"{\"sub\":\"a\"}xyz",
            b"",
            b"\xEF\xBB\xBF{}",
            br#"{"a":"\ud800"}"#,
            br#"{"exp":1e400}"#,
            b"\xff\xfe{\x00}\x00",
        ] {
            assert!(
                parse_object(bad).is_err(),
                "{:?} must be refused",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn big_numbers_parse_without_panicking() {
        let map = parse_object(br#"{"a":1e300,"b":18446744073709551616,"c":-1}"#).unwrap();
        assert!(map["a"].is_f64());
        assert!(map["b"].is_f64());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse_object(deep.as_bytes()).is_err());
    }
}
