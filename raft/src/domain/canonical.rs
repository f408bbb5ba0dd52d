//! RFC 8785 JSON Canonicalization Scheme (JCS): the byte form that event hashes and idempotency
//! fingerprints are computed over, so anyone can recompute them with an off-the-shelf JCS library.
//!
//! Numbers follow ECMAScript's `Number.prototype.toString` (via `ryu-js`). JCS treats every number
//! as an IEEE-754 double. An integer beyond ±2^53 is accepted only when its digits are already
//! the canonical text of the double it denotes (5000000000000000000, which is also what 5e18
//! renders as); any other (9007199254740993, which would print as ...992) is refused rather than
//! silently rounded. That keeps the canonical text a fixed point: parsed and rendered again, it
//! is the same bytes (the fuzz target `canonical_json` checks this).

use serde_json::{Map, Number, Value};

use crate::error::Error;

/// Largest integer magnitude a double holds exactly (2^53).
pub const SAFE_INTEGER_MAX: u64 = 1 << 53;

/// Returns the canonical text of `value`.
pub fn to_canonical_string(value: &Value) -> Result<String, Error> {
    let mut out = String::with_capacity(128);
    write_value(&mut out, value)?;
    Ok(out)
}

/// Appends the canonical text of `value` to `out`.
pub fn write_value(out: &mut String, value: &Value) -> Result<(), Error> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(number) => write_number(out, number)?,
        Value::String(text) => write_string(out, text),
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_value(out, item)?;
            }
            out.push(']');
        }
        Value::Object(map) => write_object(out, map)?,
    }
    Ok(())
}

fn write_object(out: &mut String, map: &Map<String, Value>) -> Result<(), Error> {
    // JCS orders members by the UTF-16 code units of their names, not by UTF-8 bytes.
    let mut members: Vec<(&String, &Value)> = map.iter().collect();
    members.sort_by(|left, right| left.0.encode_utf16().cmp(right.0.encode_utf16()));
    out.push('{');
    for (index, (name, member)) in members.into_iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        write_string(out, name);
        out.push(':');
        write_value(out, member)?;
    }
    out.push('}');
    Ok(())
}

/// Appends a JSON string literal escaped as JCS requires: only `"`, `\` and control characters
/// are escaped, with the short forms where JSON has them.
pub fn write_string(out: &mut String, text: &str) {
    out.push('"');
    let mut plain_start = 0;
    for (index, character) in text.char_indices() {
        let escape: Option<&str> = match character {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '\u{8}' => Some("\\b"),
            '\t' => Some("\\t"),
            '\n' => Some("\\n"),
            '\u{c}' => Some("\\f"),
            '\r' => Some("\\r"),
            control if (control as u32) < 0x20 => None,
            _ => continue,
        };
        out.push_str(&text[plain_start..index]);
        match escape {
            Some(short) => out.push_str(short),
            None => out.push_str(&format!("\\u{:04x}", character as u32)),
        }
        plain_start = index + character.len_utf8();
    }
    out.push_str(&text[plain_start..]);
    out.push('"');
}

fn write_number(out: &mut String, number: &Number) -> Result<(), Error> {
    let integer = match (number.as_u64(), number.as_i64()) {
        (Some(unsigned), _) => Some((unsigned, unsigned.to_string(), unsigned as f64)),
        (None, Some(signed)) => Some((signed.unsigned_abs(), signed.to_string(), signed as f64)),
        (None, None) => None,
    };
    if let Some((magnitude, digits, double)) = integer {
        if magnitude > SAFE_INTEGER_MAX && ryu_js::Buffer::new().format_finite(double) != digits {
            return Err(Error::UnsafeInteger(digits));
        }
        out.push_str(&digits);
        return Ok(());
    }
    let double = number.as_f64().ok_or_else(|| Error::UnsafeInteger(number.to_string()))?;
    if !double.is_finite() {
        return Err(Error::NotFinite);
    }
    if double == 0.0 {
        // ECMAScript prints negative zero as "0".
        out.push('0');
        return Ok(());
    }
    let mut buffer = ryu_js::Buffer::new();
    out.push_str(buffer.format_finite(double));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canonical(text: &str) -> String {
        to_canonical_string(&serde_json::from_str(text).unwrap()).unwrap()
    }

    #[test]
    fn sorts_members_and_drops_whitespace() {
        assert_eq!(canonical(r#"{ "b": 1, "a": [true, null, "x"] }"#), r#"{"a":[true,null,"x"],"b":1}"#);
    }

    #[test]
    fn orders_names_by_utf16_code_units() {
        // U+1F600 (surrogates 0xD83D 0xDE00) sorts before U+E000 in UTF-16, after it in UTF-8.
        let value = json!({"\u{E000}": 2, "\u{1F600}": 1, "a": 3});
        assert_eq!(to_canonical_string(&value).unwrap(), "{\"a\":3,\"\u{1F600}\":1,\"\u{E000}\":2}");
    }

    #[test]
    fn escapes_only_what_jcs_escapes() {
        let value = json!("q\"b\\\u{8}\t\n\u{c}\r\u{1}\u{7f}é/");
        assert_eq!(to_canonical_string(&value).unwrap(), "\"q\\\"b\\\\\\b\\t\\n\\f\\r\\u0001\u{7f}é/\"");
    }

    #[test]
    fn formats_numbers_like_ecmascript() {
        // Cases from RFC 8785 appendix B and ECMAScript Number::toString.
        let cases = [
            ("0", "0"),
            ("-0.0", "0"),
            ("1.0", "1"),
            ("-1", "-1"),
            ("1e21", "1e+21"),
            ("1e20", "100000000000000000000"),
            ("0.000001", "0.000001"),
            ("1e-7", "1e-7"),
            ("9007199254740992", "9007199254740992"),
            ("4.50", "4.5"),
            ("2e-3", "0.002"),
            ("333333333.33333329", "333333333.3333333"),
            ("1E30", "1e+30"),
        ];
        for (input, expected) in cases {
            assert_eq!(canonical(input), expected, "input {input}");
        }
    }

    #[test]
    fn refuses_integers_a_double_cannot_hold() {
        // Beyond 2^53, integers that are exactly their double's canonical text pass unchanged;
        // 2^60 would print as 1152921504606847000, so it is refused like 2^53 + 1.
        assert_eq!(canonical("5000000000000000000"), "5000000000000000000");
        // Found by the `canonical_json` fuzz target: 5e18 rendered as these digits, which were
        // then refused when the canonical text was read back (an auditor re-hashing an event).
        assert_eq!(canonical(&canonical("5e18")), "5000000000000000000");
        assert_eq!(canonical("-9007199254740994"), "-9007199254740994");
        let two_to_the_60: Value = serde_json::from_str("1152921504606846976").unwrap();
        assert!(matches!(to_canonical_string(&two_to_the_60), Err(Error::UnsafeInteger(_))));
        let too_big: Value = serde_json::from_str("9007199254740993").unwrap();
        assert!(matches!(to_canonical_string(&too_big), Err(Error::UnsafeInteger(_))));
        let too_small: Value = serde_json::from_str("-9007199254740993").unwrap();
        assert!(to_canonical_string(&too_small).is_err());
    }
}
