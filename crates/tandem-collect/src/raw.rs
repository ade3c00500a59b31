//! JSON objects as ordered lists of `(key, raw value)`: fields are inspected without building a
//! value tree, and untouched fields are copied to the stored event byte for byte.
//!
//! Raw values are skipped by serde_json without recursion and without range checks, so two
//! properties a value tree would guarantee are checked here, once per body, by [`scan_body`]:
//! nesting depth (downstream stages parse stored events with serde_json, whose recursion limit is
//! 128) and numbers that overflow an f64 (`1e999999`, which serde_json refuses to read back).

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// A JSON object's members in order, values left as raw JSON text. Keys borrow from the body
/// unless they contain escapes.
#[derive(Debug, Clone, Default)]
pub struct RawObject<'a>(pub Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> RawObject<'a> {
    /// The last value of `key` (JSON parsers commonly let the last duplicate win).
    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0
            .iter()
            .rev()
            .find(|(name, _)| name == key)
            .map(|(_, value)| *value)
    }

    /// The last value of `key` unless it is `null`: Segment treats `null` as absent.
    pub fn get_present(&self, key: &str) -> Option<&'a RawValue> {
        self.get(key).filter(|raw| kind(raw) != Kind::Null)
    }

    /// The members of a raw JSON object; `None` for any other kind of value.
    pub fn parse(raw: &'a RawValue) -> Option<RawObject<'a>> {
        if kind(raw) != Kind::Object {
            return None;
        }
        serde_json::from_str(raw.get()).ok()
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RawObject<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for ObjectVisitor<'a> {
            type Value = RawObject<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some(BorrowedStr(key)) = map.next_key::<BorrowedStr<'de>>()? {
                    let value: &'de RawValue = map.next_value()?;
                    members.push((key, value));
                }
                Ok(RawObject(members))
            }
        }
        deserializer.deserialize_map(ObjectVisitor(std::marker::PhantomData))
    }
}

/// A JSON string that borrows from the input when it has no escapes (serde's own `Cow<str>`
/// always allocates).
struct BorrowedStr<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for BorrowedStr<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for StrVisitor<'a> {
            type Value = BorrowedStr<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Self::Value, E> {
                Ok(BorrowedStr(Cow::Borrowed(text)))
            }
            fn visit_str<E>(self, text: &str) -> Result<Self::Value, E> {
                Ok(BorrowedStr(Cow::Owned(text.to_string())))
            }
            fn visit_string<E>(self, text: String) -> Result<Self::Value, E> {
                Ok(BorrowedStr(Cow::Owned(text)))
            }
        }
        deserializer.deserialize_str(StrVisitor(std::marker::PhantomData))
    }
}

/// What a raw JSON value is, from its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Object,
    Array,
    String,
    Number,
    Bool,
    Null,
}

pub fn kind(raw: &RawValue) -> Kind {
    match raw.get().as_bytes().first() {
        Some(b'{') => Kind::Object,
        Some(b'[') => Kind::Array,
        Some(b'"') => Kind::String,
        Some(b't') | Some(b'f') => Kind::Bool,
        Some(b'n') => Kind::Null,
        _ => Kind::Number,
    }
}

/// The text of a JSON string value (unescaped, borrowed when it has no escapes), `None` for any
/// other kind.
pub fn as_str<'a>(raw: &'a RawValue) -> Option<Cow<'a, str>> {
    if kind(raw) != Kind::String {
        return None;
    }
    serde_json::from_str::<BorrowedStr<'a>>(raw.get())
        .ok()
        .map(|text| text.0)
}

/// Writes `text` as a JSON string.
pub fn push_json_string(out: &mut Vec<u8>, text: &str) {
    let needs_escaping = text
        .bytes()
        .any(|byte| byte < 0x20 || byte == b'"' || byte == b'\\');
    if needs_escaping {
        serde_json::to_writer(&mut *out, text).expect("writing to a Vec cannot fail");
    } else {
        out.reserve(text.len() + 2);
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    }
}

/// Shortest number token that can overflow an f64 without an exponent (`f64::MAX` has 309 digits).
const NUMBER_DIGITS_SAFE: usize = 308;

/// Why [`scan_body`] refused a body, and where (byte offset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanProblem {
    pub offset: usize,
    pub message: String,
}

/// Checks, in one pass over the bytes, that objects and arrays nest at most `depth_max` deep and
/// that every number fits an f64. Syntax errors are left to the parser.
pub fn scan_body(text: &str, depth_max: usize) -> Result<(), ScanProblem> {
    let bytes = text.as_bytes();
    let (mut depth, mut at) = (0usize, 0usize);
    while at < bytes.len() {
        match bytes[at] {
            b'"' => at = string_end(bytes, at + 1),
            b'{' | b'[' => {
                depth += 1;
                if depth > depth_max {
                    return Err(ScanProblem {
                        offset: at,
                        message: format!("JSON nested deeper than {depth_max} levels"),
                    });
                }
                at += 1;
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                at += 1;
            }
            b'-' | b'0'..=b'9' => at = check_number(text, at)?,
            _ => at += 1,
        }
    }
    Ok(())
}

/// The offset just past the closing quote of a string whose content starts at `at`.
fn string_end(bytes: &[u8], mut at: usize) -> usize {
    while at < bytes.len() {
        match bytes[at] {
            b'"' => return at + 1,
            b'\\' => at += 2,
            _ => at += 1,
        }
    }
    at
}

/// Checks the number token starting at `start`; returns the offset just past it.
fn check_number(text: &str, start: usize) -> Result<usize, ScanProblem> {
    let bytes = text.as_bytes();
    let length = bytes[start..]
        .iter()
        .take_while(|byte| matches!(byte, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
        .count();
    let token = &text[start..start + length];
    let may_overflow =
        length > NUMBER_DIGITS_SAFE || token.bytes().any(|byte| byte == b'e' || byte == b'E');
    if may_overflow && token.parse::<f64>().is_ok_and(|value| value.is_infinite()) {
        let shown: String = token.chars().take(24).collect();
        return Err(ScanProblem {
            offset: start,
            message: format!("the number {shown} is out of range"),
        });
    }
    Ok(start + length)
}

/// 1-based line and column of a byte offset, as serde_json reports them.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|&&byte| byte == b'\n').count() + 1;
    let column = before
        .iter()
        .rev()
        .take_while(|&&byte| byte != b'\n')
        .count()
        + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> &RawValue {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn keys_and_strings_borrow_unless_escaped() {
        let object: RawObject = serde_json::from_str(r#"{"plain":1,"esc\u0061ped":"x"}"#).unwrap();
        assert!(matches!(object.0[0].0, Cow::Borrowed("plain")));
        assert!(matches!(object.0[1].0, Cow::Owned(ref key) if key == "escaped"));
        assert!(matches!(
            as_str(raw(r#""abc""#)),
            Some(Cow::Borrowed("abc"))
        ));
        assert_eq!(as_str(raw(r#""a\"b""#)).as_deref(), Some("a\"b"));
        assert_eq!(as_str(raw("12")), None);
    }

    #[test]
    fn the_last_duplicate_wins_and_null_is_absent() {
        let object: RawObject = serde_json::from_str(r#"{"a":1,"a":2,"n":null}"#).unwrap();
        assert_eq!(object.get("a").unwrap().get(), "2");
        assert!(object.get("n").is_some());
        assert!(object.get_present("n").is_none());
        assert!(RawObject::parse(raw("[1]")).is_none());
    }

    #[test]
    fn strings_are_escaped_only_when_needed() {
        let mut out = Vec::new();
        push_json_string(&mut out, "plain é");
        push_json_string(&mut out, "q\"\\\n");
        assert_eq!(String::from_utf8(out).unwrap(), r#""plain é""q\"\\\n""#);
    }

    #[test]
    fn depth_is_counted_outside_strings() {
        let text = r#"{"a":[1,{"b":"[[[{{"}],"c":"\"["}"#;
        assert!(scan_body(text, 3).is_ok());
        assert_eq!(scan_body(text, 2).unwrap_err().offset, 8);
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(scan_body(&deep, 128).is_err());
    }

    #[test]
    fn numbers_that_overflow_an_f64_are_found() {
        assert!(scan_body(
            r#"{"a":1e308,"b":-1.5E-999999,"c":123456789012345678901234567890}"#,
            8
        )
        .is_ok());
        for bad in ["1e999999", "-1E400", &"9".repeat(400)] {
            let problem = scan_body(&format!("{{\"a\":[{bad}]}}"), 8).unwrap_err();
            assert_eq!(problem.offset, 6, "{bad}");
        }
        assert!(
            scan_body(r#"{"a":"1e999999"}"#, 8).is_ok(),
            "inside a string it is text"
        );
    }

    #[test]
    fn line_and_column_are_one_based() {
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("ab", 0), (1, 1));
    }
}
