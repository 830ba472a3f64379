//! JSON values in a history: compared as JSON values, printed as written.
//!
//! Histories come from many tools, and the same value is spelt in many ways:
//! `1`, `1.0` and `1e0` are one number; `{"a":1,"b":2}` and `{"b":2,"a":1}`
//! are one object. A checker that compared the text, or compared what a JSON
//! library happened to parse (an integer here, a float there), would call a
//! read of `1.0` after a write of `1` stale, and prove a violation that never
//! happened. And a counterexample must show what the file said, not a
//! rewrite of it, or the user cannot find the operation it talks about.
//!
//! So a [`Json`] keeps two things: the parsed [`Value`], which the checkers
//! read (a cas's `[from, to]`, a set's elements), and the text exactly as it
//! was written, which is what it prints. Equality is decided on a third
//! form, the *canonical text* ([`Json::canonical`]), which every spelling
//! of one value shares.
//!
//! # When two values are equal
//!
//! * **Numbers** are equal when their mathematical values are: `1`, `1.0`,
//!   `1e0`, `10e-1` and `0.1e1` are one number, and so are `0` and `-0`. The
//!   decision is made on the decimal text, exactly, not through a 64-bit
//!   float: `9007199254740993` and `9007199254740992` stay two numbers, and
//!   so do `0.1` and `0.1000000000000000055511151231257827`.
//! * **Strings** are equal when their characters are, after escapes are
//!   undone (`"\u0041"` is `"A"`).
//! * **Arrays** are equal when they have the same length and equal elements
//!   in the same order.
//! * **Objects** are equal when they have the same member names and each
//!   name has equal values, in whatever order the members were written. A
//!   name written twice in one object counts once, with its last value (as
//!   the JSON reader keeps it).
//! * `true`, `false` and `null` equal only themselves. Values of different
//!   kinds are never equal: `1`, `"1"` and `[1]` are three values, and so are
//!   `null` and `false`.
//!
//! # The canonical text
//!
//! Whitespace dropped, object members sorted by name (byte order) with
//! duplicates removed, strings with the fewest escapes (`"` and `\`, and
//! control characters as `\u00XX`), and numbers as `[-]D[eE]`: the
//! significant digits `D` without leading or trailing zeros and the power of
//! ten `E` that scales them (omitted when zero). `1.50` is `15e-1`, `100` is
//! `1e2`, zero is `0`. A power of ten beyond ±9.2 × 10^18 saturates; no value
//! anyone writes comes near it.
//!
//! Canonical texts are compared and hashed, never parsed back or shown: the
//! checkers intern them to small integers once, and the search compares the
//! integers (see [`crate::checker::linear`]).

use std::cmp::Ordering;
use std::fmt::{self, Write as _};
use std::hash::{Hash, Hasher};
use std::ops::Deref;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::Value;

/// A JSON value as written in a history; see the [module docs](self).
///
/// It dereferences to its parsed [`Value`], so `json.is_null()` or
/// `json.as_array()` read it as usual. Equality (`==`, also against a plain
/// `Value`) compares JSON values; `Display` and `Serialize` write the
/// original text. Values built in code (`Json::from(json!(1))`) have no
/// original text and print as serde_json prints them.
///
/// Serialization keeps the text only through serde_json's own serializers
/// (to text or to a `Value`), the only ones this crate uses.
#[derive(Clone, Default)]
pub struct Json {
    /// The value, parsed.
    value: Value,
    /// The text as written, when it differs from the compact form of
    /// `value` (the usual case, `1` or `"x"`, stores nothing more).
    written: Option<Box<RawValue>>,
}

impl Json {
    /// `null`.
    pub fn null() -> Json {
        Json::default()
    }

    /// Reads the value from its text, keeping the text.
    ///
    /// # Errors
    /// If the text is not one JSON value (a `RawValue` always is).
    pub fn from_written(raw: &RawValue) -> Result<Json, serde_json::Error> {
        let text = raw.get();
        // Most values in a history are short strings and integers, which
        // serde_json writes back exactly as read: no need to parse them in
        // full, or to keep their text.
        if let Some(value) = plain_scalar(text) {
            return Ok(Json { value, written: None });
        }
        let value: Value = serde_json::from_str(text)?;
        let compact = serde_json::to_string(&value)?;
        let written = (compact != text).then(|| raw.to_owned());
        Ok(Json { value, written })
    }

    /// The parsed value.
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// The parsed value, by value.
    pub fn into_value(self) -> Value {
        self.value
    }

    /// The text as written (or, for a value built in code, as serde_json
    /// writes it).
    pub fn written(&self) -> String {
        match &self.written {
            Some(raw) => raw.get().to_owned(),
            None => self.value.to_string(),
        }
    }

    /// The canonical text: equal for two values exactly when they are equal
    /// JSON values.
    pub fn canonical(&self) -> String {
        let mut out = String::new();
        self.write_canonical(&mut out);
        out
    }

    /// Appends the canonical text to `out` (to reuse one buffer when
    /// interning many values).
    pub fn write_canonical(&self, out: &mut String) {
        match &self.written {
            Some(raw) => Scanner { text: raw.get().as_bytes(), pos: 0 }.canonical(out),
            None => canonical_value(&self.value, out),
        }
    }

    /// The elements of an array, each with its own written text; `None` if
    /// this is not an array.
    pub fn elements(&self) -> Option<Vec<Json>> {
        let items = self.value.as_array()?;
        let Some(raw) = &self.written else {
            return Some(items.iter().cloned().map(Json::from).collect());
        };
        let spans = Scanner { text: raw.get().as_bytes(), pos: 0 }.array_spans();
        if spans.len() != items.len() {
            // The text and the value disagree, which cannot happen for a
            // value read from its text; fall back on the parsed elements.
            return Some(items.iter().cloned().map(Json::from).collect());
        }
        let elements = spans
            .into_iter()
            .zip(items)
            .map(|((start, end), item)| {
                let element =
                    raw.get().get(start..end).and_then(|text| serde_json::from_str::<&RawValue>(text).ok());
                element
                    .and_then(|element| Json::from_written(element).ok())
                    .unwrap_or_else(|| Json::from(item.clone()))
            })
            .collect();
        Some(elements)
    }
}

impl From<Value> for Json {
    fn from(value: Value) -> Self {
        Json { value, written: None }
    }
}

impl Deref for Json {
    type Target = Value;

    fn deref(&self) -> &Value {
        &self.value
    }
}

impl PartialEq for Json {
    fn eq(&self, other: &Json) -> bool {
        // Equal parsed values are equal JSON values whenever neither has a
        // text of its own (one with a text may hold digits a float lost).
        if self.written.is_none() && other.written.is_none() && self.value == other.value {
            return true;
        }
        self.canonical() == other.canonical()
    }
}

impl Eq for Json {}

impl PartialEq<Value> for Json {
    fn eq(&self, other: &Value) -> bool {
        if self.written.is_none() && self.value == *other {
            return true;
        }
        let mut theirs = String::new();
        canonical_value(other, &mut theirs);
        self.canonical() == theirs
    }
}

impl Hash for Json {
    /// Hashes the canonical text, so equal values hash alike. This builds
    /// the text each time; hot paths intern it once instead.
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.canonical().hash(state);
    }
}

impl fmt::Display for Json {
    /// The text as written.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.written {
            Some(raw) => f.write_str(raw.get()),
            None => write!(f, "{}", self.value),
        }
    }
}

impl fmt::Debug for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Json({self})")
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.written {
            Some(raw) => raw.serialize(serializer),
            None => self.value.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        Json::from_written(&raw).map_err(serde::de::Error::custom)
    }
}

/// The value of a JSON text that serde_json would write back unchanged, if it
/// is one of the common simple kinds: `null`, `true`, `false`, a string with
/// no escapes, or an integer of at most 18 digits (which fits in an `i64`)
/// with no leading zero and not `-0` (which serde_json reads as a float).
fn plain_scalar(text: &str) -> Option<Value> {
    match text {
        "null" => return Some(Value::Null),
        "true" => return Some(Value::Bool(true)),
        "false" => return Some(Value::Bool(false)),
        _ => {}
    }
    if let Some(inner) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        // A JSON string without a backslash holds no quote and no control
        // character, and serde_json writes it back as it is.
        return (!inner.contains('\\')).then(|| Value::String(inner.to_owned()));
    }
    let digits = text.strip_prefix('-').unwrap_or(text);
    let plain = (1..=18).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" && digits.len() == text.len() || !digits.starts_with('0'));
    if !plain {
        return None;
    }
    text.parse::<i64>().ok().map(|n| if n >= 0 { Value::from(n as u64) } else { Value::from(n) })
}

/// The canonical text of a parsed value, for values that have no written
/// text (a field of [`crate::history::Event::extra`], a value built in
/// code). A float in a `Value` is taken at the decimal serde_json writes for
/// it, the shortest that reads back as the same float.
pub fn canonical(value: &Value) -> String {
    let mut out = String::new();
    canonical_value(value, &mut out);
    out
}

fn canonical_value(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => canonical_integer(false, u, out),
            (None, Some(i)) => canonical_integer(true, i.unsigned_abs(), out),
            _ => canonical_number(&n.to_string(), out),
        },
        Value::String(s) => canonical_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_value(item, out);
            }
            out.push(']');
        }
        Value::Object(members) => {
            // serde_json's map is sorted by name (byte order), with no
            // duplicates: already canonical order.
            out.push('{');
            for (i, (name, item)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_string(name, out);
                out.push(':');
                canonical_value(item, out);
            }
            out.push('}');
        }
    }
}

/// A string with the fewest escapes: `"` and `\`, and control characters.
fn canonical_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Writes an integer in canonical form: trailing zeros become a power of
/// ten (`100` is `1e2`). Digit by digit, without allocating or going
/// through `fmt`: the integers of a parsed value are most of what the
/// linearizability checker interns.
fn canonical_integer(negative: bool, magnitude: u64, out: &mut String) {
    if magnitude == 0 {
        out.push('0');
        return;
    }
    let (mut n, mut zeros) = (magnitude, 0u32);
    while n % 10 == 0 {
        n /= 10;
        zeros += 1;
    }
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    while n > 0 {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    if negative {
        out.push('-');
    }
    out.extend(digits[at..].iter().map(|&d| char::from(d)));
    if zeros > 0 {
        let _ = write!(out, "e{zeros}");
    }
}

/// A JSON number's text in canonical form: `[-]D[eE]`, exact.
fn canonical_number(text: &str, out: &mut String) {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (&unsigned[..at], &unsigned[at + 1..]),
        None => (unsigned, ""),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let mut power = parse_exponent(exponent);
    power = power.saturating_sub(i64::try_from(fraction.len()).unwrap_or(i64::MAX));
    let start = out.len();
    if negative {
        out.push('-');
    }
    let digits_start = out.len();
    // The significant digits: leading zeros skipped, then trailing zeros
    // moved into the power of ten.
    let digits = whole.chars().chain(fraction.chars()).filter(char::is_ascii_digit);
    out.extend(digits.skip_while(|&c| c == '0'));
    let significant = out[digits_start..].trim_end_matches('0').len();
    if significant == 0 {
        out.truncate(start);
        out.push('0');
        return;
    }
    let dropped = out.len() - digits_start - significant;
    out.truncate(digits_start + significant);
    power = power.saturating_add(i64::try_from(dropped).unwrap_or(i64::MAX));
    if power != 0 {
        let _ = write!(out, "e{power}");
    }
}

/// An exponent's text (`"7"`, `"+7"`, `"-7"`, `""`), saturating.
fn parse_exponent(text: &str) -> i64 {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let mut value: i64 = 0;
    for d in digits.bytes().filter(u8::is_ascii_digit) {
        value = value.saturating_mul(10).saturating_add(i64::from(d - b'0'));
    }
    if negative {
        -value
    } else {
        value
    }
}

/// Walks the text of one JSON value. The text was accepted by serde_json
/// (it comes from a `RawValue`), so the walk can be simple; still, on any
/// text it ends without panicking, writing something for what it cannot
/// read.
struct Scanner<'a> {
    text: &'a [u8],
    pos: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    /// Writes the canonical text of the value at the cursor and moves past
    /// it.
    fn canonical(&mut self, out: &mut String) {
        self.skip_whitespace();
        match self.peek() {
            Some(b'"') => {
                let s = self.string();
                canonical_string(&s, out);
            }
            Some(b'[') => {
                self.pos += 1;
                out.push('[');
                let mut first = true;
                while self.next_item(b']') {
                    if !first {
                        out.push(',');
                    }
                    first = false;
                    self.canonical(out);
                }
                out.push(']');
            }
            Some(b'{') => {
                self.pos += 1;
                let mut members: Vec<(String, String)> = Vec::new();
                while self.next_item(b'}') {
                    let name = self.string();
                    self.skip_whitespace();
                    if self.peek() == Some(b':') {
                        self.pos += 1;
                    }
                    let mut value = String::new();
                    self.canonical(&mut value);
                    members.push((name, value));
                }
                // Stable, so of two members with one name the later stays
                // later; keep it, as the JSON reader does.
                members.sort_by(|a, b| a.0.cmp(&b.0));
                let mut kept: Vec<(String, String)> = Vec::with_capacity(members.len());
                for member in members {
                    match kept.last_mut() {
                        Some(last) if last.0.cmp(&member.0) == Ordering::Equal => *last = member,
                        _ => kept.push(member),
                    }
                }
                out.push('{');
                for (i, (name, value)) in kept.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    canonical_string(name, out);
                    out.push(':');
                    out.push_str(value);
                }
                out.push('}');
            }
            Some(b't') => self.literal("true", out),
            Some(b'f') => self.literal("false", out),
            Some(b'n') => self.literal("null", out),
            Some(_) => {
                let start = self.pos;
                while matches!(self.peek(), Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')) {
                    self.pos += 1;
                }
                if self.pos == start {
                    // Not JSON: take the byte as it is and go on.
                    self.pos += 1;
                    out.push('?');
                } else {
                    let number = String::from_utf8_lossy(&self.text[start..self.pos]);
                    canonical_number(&number, out);
                }
            }
            None => out.push_str("null"),
        }
    }

    /// Inside an array or object: skips a separating comma and says whether
    /// another item follows (false at `close`, which it consumes, or at the
    /// end of the text).
    fn next_item(&mut self, close: u8) -> bool {
        self.skip_whitespace();
        if self.peek() == Some(b',') {
            self.pos += 1;
            self.skip_whitespace();
        }
        match self.peek() {
            Some(c) if c == close => {
                self.pos += 1;
                false
            }
            Some(_) => true,
            None => false,
        }
    }

    fn literal(&mut self, name: &str, out: &mut String) {
        self.pos += name.len();
        out.push_str(name);
    }

    /// Reads the string at the cursor, escapes undone.
    fn string(&mut self) -> String {
        let start = self.pos;
        self.skip_string();
        let token = &self.text[start..self.pos.min(self.text.len())];
        let token = String::from_utf8_lossy(token);
        if !token.contains('\\') {
            return token.trim_matches('"').to_owned();
        }
        serde_json::from_str::<String>(&token).unwrap_or_else(|_| token.into_owned())
    }

    /// Moves past the string at the cursor (which is at its opening quote).
    fn skip_string(&mut self) {
        self.pos += 1;
        while let Some(c) = self.peek() {
            self.pos += 1;
            match c {
                b'\\' => self.pos += 1,
                b'"' => return,
                _ => {}
            }
        }
    }

    /// Moves past the value at the cursor.
    fn skip_value(&mut self) {
        self.skip_whitespace();
        match self.peek() {
            Some(b'"') => self.skip_string(),
            Some(b'[' | b'{') => {
                let mut depth = 0usize;
                while let Some(c) = self.peek() {
                    match c {
                        b'"' => {
                            self.skip_string();
                            continue;
                        }
                        b'[' | b'{' => depth += 1,
                        b']' | b'}' => {
                            depth -= 1;
                            if depth == 0 {
                                self.pos += 1;
                                return;
                            }
                        }
                        _ => {}
                    }
                    self.pos += 1;
                }
            }
            Some(_) => {
                let start = self.pos;
                while !matches!(self.peek(), None | Some(b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r')) {
                    self.pos += 1;
                }
                if self.pos == start {
                    // A stray delimiter where a value should be (not JSON):
                    // step over it, so that every call makes progress.
                    self.pos += 1;
                }
            }
            None => {}
        }
    }

    /// The byte ranges of an array's elements, if the text is an array.
    fn array_spans(&mut self) -> Vec<(usize, usize)> {
        let mut spans = Vec::new();
        self.skip_whitespace();
        if self.peek() != Some(b'[') {
            return spans;
        }
        self.pos += 1;
        while self.next_item(b']') {
            let start = self.pos;
            self.skip_value();
            spans.push((start, self.pos.min(self.text.len())));
        }
        spans
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A value read from its text, as the history reader reads it.
    fn written(text: &str) -> Json {
        let raw: &RawValue = serde_json::from_str(text).expect("test text is JSON");
        Json::from_written(raw).unwrap()
    }

    #[test]
    fn numbers_are_equal_by_value_whatever_the_spelling() {
        for (a, b) in
            [("1", "1.0"), ("1", "1e0"), ("1", "10E-1"), ("100", "1e2"), ("0", "-0.0"), ("-2.5", "-25e-1")]
        {
            assert_eq!(written(a), written(b), "{a} vs {b}");
            assert_eq!(written(a).canonical(), written(b).canonical());
        }
        for (a, b) in [("1", "2"), ("1", "-1"), ("1.5", "15"), ("0.1", "0.01")] {
            assert_ne!(written(a), written(b), "{a} vs {b}");
        }
    }

    #[test]
    fn numbers_are_compared_exactly_not_through_a_float() {
        // Both pairs are one float apart or the same float, but different
        // numbers.
        assert_ne!(written("9007199254740993"), written("9007199254740992"));
        assert_ne!(written("9007199254740993"), written("9007199254740993.5"));
        assert_ne!(written("0.1"), written("0.1000000000000000055511151231257827"));
        // And the same number past a float's precision is still itself.
        assert_eq!(written("9007199254740993"), written("9007199254740993.000"));
        assert_eq!(written("123456789012345678901234567890"), written("1.2345678901234567890123456789e29"));
    }

    #[test]
    fn objects_are_equal_regardless_of_member_order_and_arrays_by_position() {
        assert_eq!(
            written(r#"{"a":1,"b":[2,{"c":3.0,"d":4}]}"#),
            written(r#"{ "b": [2.0, {"d":4, "c":3}], "a": 1 }"#)
        );
        assert_ne!(written("[1,2]"), written("[2,1]"));
        assert_ne!(written("[1,2]"), written("[1,2,2]"));
        assert_ne!(written(r#"{"a":1}"#), written(r#"{"a":1,"b":null}"#));
        // A name written twice counts with its last value.
        assert_eq!(written(r#"{"a":1,"a":2}"#), written(r#"{"a":2}"#));
    }

    #[test]
    fn strings_compare_after_escapes_and_kinds_never_mix() {
        assert_eq!(written(r#""\u0041\n""#), written("\"A\\n\""));
        assert_ne!(written("1"), written(r#""1""#));
        assert_ne!(written("null"), written("false"));
        assert_ne!(written("[1]"), written("1"));
        assert_ne!(written(r#""a\"b""#), written(r#""a\\b""#));
    }

    #[test]
    fn integers_in_parsed_values_and_in_text_have_one_canonical_form() {
        for (n, text) in [(json!(0), "0"), (json!(100), "1e2"), (json!(-120), "-12e1"), (json!(7), "7")] {
            assert_eq!(Json::from(n.clone()).canonical(), text, "{n}");
            assert_eq!(written(&n.to_string()).canonical(), text, "{n}");
        }
        assert_eq!(Json::from(json!(u64::MAX)).canonical(), "18446744073709551615");
        assert_eq!(Json::from(json!(i64::MIN)).canonical(), "-9223372036854775808");
        assert_eq!(Json::from(json!(2.5e-3)).canonical(), "25e-4");
    }

    #[test]
    fn only_text_that_reads_back_unchanged_is_not_kept() {
        for plain in ["0", "-7", "123456789012345678", "\"x y\"", "\"é\"", "null", "true", "false"] {
            let value = written(plain);
            assert!(value.written.is_none(), "{plain}");
            assert_eq!(value.value(), &serde_json::from_str::<Value>(plain).unwrap(), "{plain}");
        }
        // Each of these would print differently from the parsed value.
        for kept in ["-0", "1.50", "18446744073709551616", "\"\\u0041\"", "1e2", "[1, 2]"] {
            assert!(written(kept).written.is_some(), "{kept}");
            assert_eq!(written(kept).to_string(), kept);
        }
        assert_eq!(written("18446744073709551616"), written("1.8446744073709551616e19"));
        assert_eq!(written("-0"), written("0"));
    }

    #[test]
    fn written_values_equal_the_same_values_built_in_code() {
        assert_eq!(written("1.0"), Json::from(json!(1)));
        assert_eq!(written("1.0"), json!(1));
        assert_eq!(written(r#"{"b":1e0,"a":"x"}"#), json!({"a": "x", "b": 1}));
        assert_eq!(Json::from(json!(2.5)), Json::from(json!(2.5)));
        assert_ne!(written("1.5"), json!(1));
    }

    #[test]
    fn printing_shows_the_text_as_written() {
        let value = written(r#"{"b": 1.50, "a": 1e0}"#);
        assert_eq!(value.to_string(), r#"{"b": 1.50, "a": 1e0}"#);
        assert_eq!(serde_json::to_string(&value).unwrap(), r#"{"b": 1.50, "a": 1e0}"#);
        // Inside a larger document, too.
        let doc = serde_json::to_string(&json!({"v": serde_json::to_value(&value).unwrap()})).unwrap();
        assert!(doc.contains("\"b\":1.5"), "through a Value the text is parsed again: {doc}");
        // The common spellings store no text of their own.
        assert!(written("1").written.is_none());
        assert!(written(r#""x""#).written.is_none());
    }

    #[test]
    fn elements_keep_their_own_text() {
        let cas = written(r#"[ 1.0, {"b":2,"a":1} ]"#);
        let elements = cas.elements().unwrap();
        assert_eq!(elements.len(), 2);
        assert_eq!(elements[0].to_string(), "1.0");
        assert_eq!(elements[1].to_string(), r#"{"b":2,"a":1}"#);
        assert_eq!(elements[0], json!(1));
        assert_eq!(written(r#"["a,b", "]"]"#).elements().unwrap(), vec![json!("a,b"), json!("]")]);
        assert!(written("1").elements().is_none());
        assert_eq!(written("[]").elements().unwrap().len(), 0);
    }

    #[test]
    fn deserialize_and_serialize_round_trip_the_text() {
        let value: Json = serde_json::from_str("1.000").unwrap();
        assert_eq!(value.to_string(), "1.000");
        assert_eq!(value, json!(1));
        let from_value: Json = serde_json::from_value(json!({"a": [1, 2]})).unwrap();
        assert_eq!(from_value, json!({"a": [1, 2]}));
    }

    #[test]
    fn scanner_survives_text_that_is_not_json() {
        // Never reached from the history reader (its text is checked JSON);
        // the scanner must still end, without a panic.
        for text in ["", "[", "{\"a\"", "[1,", "\"abc", "@", "{\"a\":}", "]]]", "[}", "{]", "[\"\\", "[é,ü]"]
        {
            let mut out = String::new();
            Scanner { text: text.as_bytes(), pos: 0 }.canonical(&mut out);
            let _ = Scanner { text: text.as_bytes(), pos: 0 }.array_spans();
        }
    }
}
