//! One cell's value, converted for its target and checked: identifiers, emails, typed traits,
//! timestamps. Every refusal carries the reason and a message that quotes the value.

use crate::limits::{EMAIL_BYTES_MAX, EMAIL_LOCAL_BYTES_MAX, IDENTIFIER_BYTES_MAX};
use crate::mapping::{TimeFormat, ValueKind};
use crate::reject::{Reason, Rejection};
use serde_json::Value;
use tandem_core::time_util::parse_iso8601_ms;

/// Characters of a refused value quoted in a rejection message.
const QUOTED_CHARS_MAX: usize = 60;
/// Earliest and latest instants a timestamp may name (years 0000 and 9999), so every one written
/// reads back as ISO-8601.
const TIME_MS_MIN: i64 = -62_167_219_200_000;
const TIME_MS_MAX: i64 = 253_402_300_799_999;

/// A cell as the file gives it: CSV text, or a JSON line's member.
#[derive(Debug, Clone, Copy)]
pub enum Cell<'a> {
    Text(&'a str),
    Json(&'a Value),
}

impl Cell<'_> {
    /// Empty text and JSON `null` set nothing. Text is compared trimmed.
    pub fn is_empty(&self) -> bool {
        match self {
            Cell::Text(text) => text.trim().is_empty(),
            Cell::Json(Value::Null) => true,
            Cell::Json(Value::String(text)) => text.trim().is_empty(),
            Cell::Json(_) => false,
        }
    }

    /// The cell's text: CSV text or a JSON string.
    fn text(&self) -> Option<&str> {
        match self {
            Cell::Text(text) => Some(text),
            Cell::Json(Value::String(text)) => Some(text),
            Cell::Json(_) => None,
        }
    }

    /// The cell as one line of text, for messages.
    fn shown(&self) -> String {
        let text = match self {
            Cell::Text(text) => text.trim().to_string(),
            Cell::Json(Value::String(text)) => text.trim().to_string(),
            Cell::Json(value) => value.to_string(),
        };
        quote(&text)
    }
}

/// `text` in quotes, cut to a readable length.
pub fn quote(text: &str) -> String {
    let mut shown: String = text.chars().take(QUOTED_CHARS_MAX).collect();
    if shown.len() < text.len() {
        shown.push('…');
    }
    format!("{shown:?}")
}

/// A `userId`, `anonymousId` or external id: text or a JSON string (trimmed) or number.
pub fn identifier(column: &str, cell: Cell) -> Result<String, Rejection> {
    let text = match cell {
        Cell::Text(text) => text.trim().to_string(),
        Cell::Json(Value::String(text)) => text.trim().to_string(),
        Cell::Json(Value::Number(number)) => number.to_string(),
        Cell::Json(other) => {
            return Err(Rejection::new(
                Reason::InvalidValue,
                format!(
                    "column {column:?}: an identifier must be text or a number, not {}",
                    json_kind(other)
                ),
            ))
        }
    };
    if text.len() > IDENTIFIER_BYTES_MAX {
        return Err(Rejection::new(
            Reason::IdentifierTooLong,
            format!(
                "column {column:?}: the identifier is {} bytes; at most {IDENTIFIER_BYTES_MAX} are allowed ({})",
                text.len(),
                quote(&text)
            ),
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(Rejection::new(
            Reason::InvalidValue,
            format!(
                "column {column:?}: an identifier cannot hold control characters or line breaks ({})",
                quote(&text)
            ),
        ));
    }
    Ok(text)
}

/// A trait value converted as the mapping asks. `email` is true for the trait `traits.email`,
/// whose value must be an email address.
pub fn trait_value(
    column: &str,
    cell: Cell,
    kind: ValueKind,
    email: bool,
) -> Result<Value, Rejection> {
    let value = convert(column, cell, kind)?;
    if email {
        match &value {
            Value::String(text) if is_valid_email(text) => {}
            _ => {
                return Err(Rejection::new(
                    Reason::MalformedEmail,
                    format!(
                        "column {column:?}: {} is not an email address",
                        cell.shown()
                    ),
                ))
            }
        }
    }
    Ok(value)
}

fn convert(column: &str, cell: Cell, kind: ValueKind) -> Result<Value, Rejection> {
    let invalid = |expected: &str| {
        Rejection::new(
            Reason::InvalidValue,
            format!("column {column:?}: {} is not {expected}", cell.shown()),
        )
    };
    match (kind, cell) {
        (ValueKind::AsIs | ValueKind::String, Cell::Text(text)) => {
            Ok(Value::String(text.trim().to_string()))
        }
        (ValueKind::AsIs, Cell::Json(Value::String(text))) => {
            Ok(Value::String(text.trim().to_string()))
        }
        (ValueKind::AsIs, Cell::Json(value)) => Ok(value.clone()),
        (ValueKind::String, Cell::Json(Value::String(text))) => {
            Ok(Value::String(text.trim().to_string()))
        }
        (ValueKind::String, Cell::Json(value @ (Value::Number(_) | Value::Bool(_)))) => {
            Ok(Value::String(value.to_string()))
        }
        (ValueKind::String, Cell::Json(_)) => Err(invalid("text")),
        (ValueKind::Number, Cell::Json(Value::Number(number))) => Ok(Value::Number(number.clone())),
        (ValueKind::Number, _) => cell
            .text()
            .and_then(|text| parse_number(text.trim()))
            .ok_or_else(|| invalid("a number")),
        (ValueKind::Boolean, Cell::Json(Value::Bool(flag))) => Ok(Value::Bool(*flag)),
        (ValueKind::Boolean, Cell::Json(Value::Number(number))) => match number.as_u64() {
            Some(0) => Ok(Value::Bool(false)),
            Some(1) => Ok(Value::Bool(true)),
            _ => Err(invalid("a boolean (true/false, yes/no, 1/0)")),
        },
        (ValueKind::Boolean, _) => cell
            .text()
            .and_then(|text| parse_boolean(text.trim()))
            .map(Value::Bool)
            .ok_or_else(|| invalid("a boolean (true/false, yes/no, 1/0)")),
    }
}

/// An integer stays exact; anything else must be a finite decimal.
fn parse_number(text: &str) -> Option<Value> {
    if let Ok(integer) = text.parse::<i64>() {
        return Some(Value::from(integer));
    }
    if let Ok(integer) = text.parse::<u64>() {
        return Some(Value::from(integer));
    }
    // Rust also parses "inf", "NaN" and "infinity"; none is a JSON number.
    let decimal: f64 = text.parse().ok()?;
    serde_json::Number::from_f64(decimal)
        .filter(|_| decimal.is_finite())
        .map(Value::Number)
}

fn parse_boolean(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "yes" | "y" | "1" => Some(true),
        "false" | "no" | "n" | "0" => Some(false),
        _ => None,
    }
}

/// An email address as CRMs hold them: one `@`; a local part of 1-64 bytes without spaces,
/// control characters or `"(),:;<>[\]`, not starting, ending or doubling `.`; a domain of at
/// least two labels of letters (any script), digits and inner hyphens. Quoted local parts and
/// address literals (`user@[10.0.0.1]`) are legal by RFC 5322 but never seen in customer data,
/// and refused.
pub fn is_valid_email(text: &str) -> bool {
    if text.len() > EMAIL_BYTES_MAX {
        return false;
    }
    let Some((local, domain)) = text.split_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local.len() <= EMAIL_LOCAL_BYTES_MAX
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && !"\"(),:;<>@[\\]".contains(c));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
        // The top-level domain is never all digits (that is an IP address without brackets).
        && !labels[labels.len() - 1].chars().all(|c| c.is_ascii_digit());
    local_ok && domain_ok
}

/// A timestamp cell in ms since the epoch.
pub fn timestamp_ms(column: &str, cell: Cell, format: TimeFormat) -> Result<i64, Rejection> {
    let text = cell.text().map(str::trim);
    let number = match cell {
        Cell::Json(Value::Number(number)) => number.as_i64(),
        _ => None,
    };
    let parsed = match format {
        TimeFormat::Iso8601 => text.and_then(parse_iso8601_loose),
        TimeFormat::UnixSeconds => text
            .and_then(|text| text.parse::<i64>().ok())
            .or(number)
            .and_then(|seconds| seconds.checked_mul(1000)),
        TimeFormat::UnixMilliseconds => text.and_then(|text| text.parse::<i64>().ok()).or(number),
    };
    parsed
        .filter(|ms| (TIME_MS_MIN..=TIME_MS_MAX).contains(ms))
        .ok_or_else(|| {
            let expected = match format {
                TimeFormat::Iso8601 => {
                    "an ISO-8601 date-time (e.g. 2024-05-01T12:00:00Z, 2024-05-01 12:00:00 or 2024-05-01)"
                }
                TimeFormat::UnixSeconds => "whole seconds since 1970-01-01 (unix_seconds)",
                TimeFormat::UnixMilliseconds => "whole milliseconds since 1970-01-01 (unix_ms)",
            };
            Rejection::new(
                Reason::InvalidTimestamp,
                format!("column {column:?}: {} is not {expected}", cell.shown()),
            )
        })
}

/// ISO-8601 as `tandem_core` parses it, plus what spreadsheets write: a space for the `T`, and a
/// date alone (midnight UTC).
fn parse_iso8601_loose(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    let is_date = |bytes: &[u8]| {
        bytes.len() == 10
            && bytes[4] == b'-'
            && bytes[7] == b'-'
            && bytes
                .iter()
                .enumerate()
                .all(|(i, b)| i == 4 || i == 7 || b.is_ascii_digit())
    };
    if is_date(bytes) {
        return parse_iso8601_ms(&format!("{text}T00:00:00Z"));
    }
    if bytes.len() > 10 && is_date(&bytes[..10]) && bytes[10] == b' ' {
        return parse_iso8601_ms(&format!("{}T{}", &text[..10], &text[11..]));
    }
    parse_iso8601_ms(text)
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn emails() {
        for good in [
            "a@example.com",
            "first.last+tag@sub.example.co.uk",
            "o'brien@example.ie",
            "josé@exämple.de",
            "x@xn--bcher-kva.example",
            "a_b-c@example-shop.com",
        ] {
            assert!(is_valid_email(good), "{good}");
        }
        for bad in [
            "",
            "plainaddress",
            "@example.com",
            "a@",
            "a@example",
            "a@@example.com",
            "a b@example.com",
            "a@exa mple.com",
            ".a@example.com",
            "a.@example.com",
            "a..b@example.com",
            "a@-example.com",
            "a@example-.com",
            "a@example..com",
            "a@10.0.0.1",
            "a@[10.0.0.1]",
            "\"a\"@example.com",
            "a@example.com,b@example.com",
            "a\n@example.com",
        ] {
            assert!(!is_valid_email(bad), "{bad:?}");
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert!(!is_valid_email(&long_local));
        let long = format!("a@{}.com", "b".repeat(250));
        assert!(!is_valid_email(&long));
    }

    #[test]
    fn email_traits_are_checked_and_trimmed() {
        assert_eq!(
            trait_value(
                "email",
                Cell::Text(" a@example.com "),
                ValueKind::AsIs,
                true
            )
            .unwrap(),
            json!("a@example.com")
        );
        let rejection = trait_value("email", Cell::Text("a@b"), ValueKind::AsIs, true).unwrap_err();
        assert_eq!(rejection.reason, Reason::MalformedEmail);
        assert_eq!(
            rejection.message,
            "column \"email\": \"a@b\" is not an email address"
        );
        let rejection =
            trait_value("email", Cell::Json(&json!(42)), ValueKind::AsIs, true).unwrap_err();
        assert_eq!(rejection.reason, Reason::MalformedEmail);
    }

    #[test]
    fn typed_traits() {
        let text = |t: &'static str, kind| trait_value("c", Cell::Text(t), kind, false);
        assert_eq!(text("42", ValueKind::Number).unwrap(), json!(42));
        assert_eq!(text(" -3.5 ", ValueKind::Number).unwrap(), json!(-3.5));
        assert_eq!(
            text("18446744073709551615", ValueKind::Number).unwrap(),
            json!(u64::MAX)
        );
        for bad in ["NaN", "inf", "1e999", "12abc", "1,5"] {
            assert_eq!(
                text(bad, ValueKind::Number).unwrap_err().reason,
                Reason::InvalidValue,
                "{bad}"
            );
        }
        assert_eq!(text("Yes", ValueKind::Boolean).unwrap(), json!(true));
        assert_eq!(text("0", ValueKind::Boolean).unwrap(), json!(false));
        assert!(text("maybe", ValueKind::Boolean).is_err());
        assert_eq!(text("00123", ValueKind::String).unwrap(), json!("00123"));
        assert_eq!(text("00123", ValueKind::AsIs).unwrap(), json!("00123"));
        let json = |v: Value, kind| trait_value("c", Cell::Json(&v), kind, false);
        assert_eq!(
            json(json!({"a": [1]}), ValueKind::AsIs).unwrap(),
            json!({"a": [1]})
        );
        assert_eq!(json(json!(7), ValueKind::String).unwrap(), json!("7"));
        assert_eq!(json(json!("7"), ValueKind::Number).unwrap(), json!(7));
        assert_eq!(json(json!(1), ValueKind::Boolean).unwrap(), json!(true));
        assert!(json(json!([1]), ValueKind::String).is_err());
        assert!(json(json!(2), ValueKind::Boolean).is_err());
    }

    #[test]
    fn identifiers() {
        assert_eq!(identifier("id", Cell::Text("  u1 ")).unwrap(), "u1");
        assert_eq!(
            identifier("id", Cell::Json(&json!(12345))).unwrap(),
            "12345"
        );
        assert_eq!(
            identifier("id", Cell::Json(&json!({"a": 1})))
                .unwrap_err()
                .reason,
            Reason::InvalidValue
        );
        let long = "x".repeat(IDENTIFIER_BYTES_MAX + 1);
        assert_eq!(
            identifier("id", Cell::Text(&long)).unwrap_err().reason,
            Reason::IdentifierTooLong
        );
        assert!(identifier("id", Cell::Text(&"x".repeat(IDENTIFIER_BYTES_MAX))).is_ok());
        assert_eq!(
            identifier("id", Cell::Text("a\nb")).unwrap_err().reason,
            Reason::InvalidValue
        );
    }

    #[test]
    fn timestamps_in_every_accepted_form() {
        let iso = |t: &'static str| timestamp_ms("t", Cell::Text(t), TimeFormat::Iso8601);
        let expected = parse_iso8601_ms("2024-05-01T12:30:00Z").unwrap();
        assert_eq!(iso("2024-05-01T12:30:00Z").unwrap(), expected);
        assert_eq!(iso("2024-05-01 12:30:00").unwrap(), expected);
        assert_eq!(iso("2024-05-01T14:30:00+02:00").unwrap(), expected);
        assert_eq!(
            iso("2024-05-01").unwrap(),
            parse_iso8601_ms("2024-05-01T00:00:00Z").unwrap()
        );
        for bad in [
            "yesterday",
            "2024-13-01",
            "01/05/2024",
            "2024-05-01T12:30",
            "",
        ] {
            let rejection = iso(bad).unwrap_err();
            assert_eq!(rejection.reason, Reason::InvalidTimestamp, "{bad}");
            assert!(rejection.message.contains("ISO-8601"), "{bad}");
        }
        let seconds = |v: Value| timestamp_ms("t", Cell::Json(&v), TimeFormat::UnixSeconds);
        assert_eq!(seconds(json!(1714566600)).unwrap(), expected);
        assert_eq!(seconds(json!("1714566600")).unwrap(), expected);
        assert!(seconds(json!(1.5)).is_err());
        assert!(seconds(json!(i64::MAX)).is_err(), "overflow is refused");
        let millis =
            |t: &'static str| timestamp_ms("t", Cell::Text(t), TimeFormat::UnixMilliseconds);
        assert_eq!(millis("1714566600000").unwrap(), expected);
        assert!(millis("99999999999999999").is_err(), "past year 9999");
    }
}
