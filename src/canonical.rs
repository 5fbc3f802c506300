//! Canonical JSON, written straight from a record's raw text: the bytes `record_hash`
//! covers (see `record`'s module docs for the definition).
//!
//! This is the hot path of ingestion, so it builds no document tree: strings without
//! escapes are copied as they are (their canonical form is their raw form), numbers go
//! through `record::write_canonical_number`, and only objects allocate, to sort their
//! members. Measured on 20,000 markets (perf): building a `serde_json::Value` and
//! serializing it took about 35 % of the run's CPU; see the commit for before/after.
//!
//! It is also the validator: list pages are parsed by this code alone (see `page`), so
//! it accepts exactly the JSON grammar of RFC 8259 (strict numbers, escapes and
//! literals, no control characters inside strings, at most [`MAX_DEPTH`] nested
//! arrays and objects), as serde_json does; the input is already known to be UTF-8.
//! Anything else is a [`JsonError`], never a panic.

use std::fmt;
use std::ops::Range;

use crate::record::{write_canonical_number, write_json_string};

/// The deepest nesting of arrays and objects accepted (serde_json's limit too), so a
/// hostile `[[[[…` cannot exhaust the stack.
pub(crate) const MAX_DEPTH: usize = 128;

/// Why JSON text was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JsonError {
    pub(crate) kind: JsonErrorKind,
    pub(crate) message: String,
}

/// The kinds of [`JsonError`]: they decide how a failed page is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JsonErrorKind {
    /// The text is not JSON, or not the expected shape.
    Syntax,
    /// The text ends before the JSON does (a cut-off transfer).
    Eof,
    /// Valid JSON that holds no Unicode text: a string escape naming a lone UTF-16
    /// surrogate (`"\ud800"`), which no canonical form can write.
    Unrepresentable,
}

impl JsonError {
    pub(crate) fn syntax(message: impl Into<String>) -> JsonError {
        JsonError {
            kind: JsonErrorKind::Syntax,
            message: message.into(),
        }
    }

    pub(crate) fn eof(at: usize) -> JsonError {
        JsonError {
            kind: JsonErrorKind::Eof,
            message: format!("the text ends early, at byte {at}"),
        }
    }

    /// `expected` (a description) was not found at byte `at` of `s`.
    pub(crate) fn expected(expected: &str, s: &[u8], at: usize) -> JsonError {
        if at >= s.len() {
            JsonError::eof(at)
        } else {
            JsonError::syntax(format!("expected {expected} at byte {at}"))
        }
    }
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The position of the first byte at or after `pos` that is not JSON whitespace.
pub(crate) fn skip_ws(s: &[u8], mut pos: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\r' | b'\t') = s.get(pos) {
        pos += 1;
    }
    pos
}

/// The span of the string token starting at `start` (a `"`), quotes included, and
/// whether it has escapes. Escapes are checked (`\u` needs four hex digits), and so
/// is the absence of raw control characters.
pub(crate) fn string_span(s: &[u8], start: usize) -> Result<(Range<usize>, bool), JsonError> {
    let mut pos = start + 1;
    let mut has_escape = false;
    loop {
        let Some(at) = next_special(s, pos) else {
            return Err(JsonError::eof(s.len()));
        };
        match s[at] {
            b'"' => return Ok((start..at + 1, has_escape)),
            b'\\' => {}
            _ => {
                return Err(JsonError::syntax(format!(
                    "a control character inside the string at byte {start}"
                )));
            }
        }
        has_escape = true;
        pos = at + 2;
        match s.get(at + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {}
            Some(b'u') => {
                for i in 0..4 {
                    match s.get(at + 2 + i) {
                        Some(b) if b.is_ascii_hexdigit() => {}
                        None => return Err(JsonError::eof(s.len())),
                        Some(_) => {
                            return Err(JsonError::syntax(format!(
                                "a \\u escape without four hex digits at byte {at}"
                            )));
                        }
                    }
                }
                pos += 4;
            }
            None => return Err(JsonError::eof(s.len())),
            Some(_) => {
                return Err(JsonError::syntax(format!("an unknown escape at byte {at}")));
            }
        }
    }
}

/// The position of the first byte at or after `from` that ends a run of plain string
/// contents: `"`, `\` or a control character (below 0x20).
///
/// Eight bytes at a time (SWAR): a byte is zero in `x ^ c` where `x` has `c`, and
/// `(v - 0x01…01) & !v & 0x80…80` sets the high bit of the lowest zero byte of `v`
/// exactly (only bytes above it can be false positives); `(x - 0x20…20) & !x & 0x80…80`
/// does the same for the lowest byte below 0x20. The lowest set bit of the three
/// masks together is the first special byte. Profiled: strings are most of a
/// record's bytes, and this one pass replaced a `memchr2` call plus a separate
/// control-character pass per string (short strings paid memchr's set-up cost).
fn next_special(s: &[u8], from: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    const QUOTES: u64 = ONES * b'"' as u64;
    const BACKSLASHES: u64 = ONES * b'\\' as u64;
    const SPACES: u64 = ONES * 0x20;
    let rest = s.get(from..)?;
    let mut words = rest.chunks_exact(8);
    let mut offset = from;
    for word in words.by_ref() {
        let x = u64::from_le_bytes([
            word[0], word[1], word[2], word[3], word[4], word[5], word[6], word[7],
        ]);
        let q = x ^ QUOTES;
        let b = x ^ BACKSLASHES;
        let found = ((q.wrapping_sub(ONES) & !q)
            | (b.wrapping_sub(ONES) & !b)
            | (x.wrapping_sub(SPACES) & !x))
            & HIGHS;
        if found != 0 {
            return Some(offset + (found.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        .map(|i| offset + i)
}

/// The end of the number token starting at `start`, checked against JSON's grammar:
/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn number_end(s: &[u8], start: usize) -> Result<usize, JsonError> {
    let digits = |mut i: usize| -> Result<usize, JsonError> {
        let first = i;
        while let Some(b'0'..=b'9') = s.get(i) {
            i += 1;
        }
        if i == first {
            return Err(JsonError::expected("a digit", s, i));
        }
        Ok(i)
    };
    let mut i = start;
    if s.get(i) == Some(&b'-') {
        i += 1;
    }
    i = match s.get(i) {
        Some(b'0') => i + 1,
        _ => digits(i)?,
    };
    if s.get(i) == Some(&b'.') {
        i = digits(i + 1)?;
    }
    if let Some(b'e' | b'E') = s.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = s.get(i) {
            i += 1;
        }
        i = digits(i)?;
    }
    Ok(i)
}

/// Decodes a JSON string token (quotes included) whose escapes [`string_span`] has
/// checked: the only failure left is a lone surrogate.
pub(crate) fn decode(raw: &str) -> Result<String, JsonError> {
    serde_json::from_str::<String>(raw).map_err(|e| JsonError {
        kind: JsonErrorKind::Unrepresentable,
        message: format!("bad string: {e}"),
    })
}

/// What canonicalizing one record found besides its canonical bytes.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Found {
    /// The text of the top-level `id_field` when it is a string or a number.
    pub(crate) id: Option<String>,
    /// Whether there was whitespace between tokens (the raw text is not compact).
    pub(crate) had_whitespace: bool,
}

/// Reusable state for canonicalizing many records: per nesting level, the buffers an
/// object collects its members in, and the sort order of the last key sequence seen
/// there. Records of one endpoint repeat their key sequence, so the order is looked
/// up (one pass of short comparisons) instead of sorted again (profiled: sorting and
/// its comparisons were ~16 % of a JSON Lines run's CPU, allocations ~7 %).
#[derive(Default)]
pub(crate) struct Canonicalizer {
    levels: Vec<Level>,
}

/// The buffers and key-order cache of one nesting level.
#[derive(Default)]
struct Level {
    members: Vec<Member>,
    values: Vec<u8>,
    /// The cached key sequence: each key's bytes followed by 0xFF (never in UTF-8).
    cached_keys: Vec<u8>,
    /// For the cached sequence: member indexes in canonical order, repeats of a key
    /// left out (the last one wins).
    cached_order: Vec<u32>,
    /// Scratch for sorting on a cache miss.
    sort_scratch: Vec<u32>,
}

/// One object member: spans into the record text and into the level's `values`.
struct Member {
    /// The key token, quotes included.
    key: std::ops::Range<usize>,
    /// The decoded key when the token has escapes.
    decoded: Option<String>,
    value: ValueAt,
}

/// Where a member's canonical value is.
enum ValueAt {
    /// In the record text, as it is: a string without escapes, an integer, a literal.
    /// Not copying these to `values` first saves one copy of most of a record's bytes
    /// (profiled: with musl's `memcpy`, small copies were ~17 % of the parse threads).
    Text(Range<usize>),
    /// In the level's `values`: objects, arrays, escaped strings, other numbers.
    Values(Range<usize>),
}

impl Member {
    fn key_bytes<'t>(&'t self, text: &'t [u8]) -> &'t [u8] {
        match &self.decoded {
            Some(key) => key.as_bytes(),
            None => &text[self.key.start + 1..self.key.end - 1],
        }
    }
}

/// Writes the canonical JSON of `json` to `out` (a one-off; see [`Canonicalizer`]).
#[cfg(test)]
pub(crate) fn canonicalize(
    json: &str,
    id_field: &str,
    out: &mut Vec<u8>,
) -> Result<Found, JsonError> {
    Canonicalizer::default().canonicalize(json, id_field, out)
}

impl Canonicalizer {
    /// Writes the canonical JSON of `json`, one whole JSON text, to `out`.
    pub(crate) fn canonicalize(
        &mut self,
        json: &str,
        id_field: &str,
        out: &mut Vec<u8>,
    ) -> Result<Found, JsonError> {
        let s = json.as_bytes();
        let start = skip_ws(s, 0);
        let (mut found, end) = self.canonicalize_at(json, start, id_field, out)?;
        let after = skip_ws(s, end);
        if after != s.len() {
            return Err(JsonError::syntax(format!(
                "trailing characters after the record at byte {after}"
            )));
        }
        found.had_whitespace |= start != 0 || after != end;
        Ok(found)
    }

    /// Writes the canonical JSON of the value starting at byte `at` of `text` to
    /// `out`; returns what it found and where the value ends. Whitespace inside the
    /// value sets `had_whitespace`; the text around it is not looked at.
    pub(crate) fn canonicalize_at(
        &mut self,
        text: &str,
        at: usize,
        id_field: &str,
        out: &mut Vec<u8>,
    ) -> Result<(Found, usize), JsonError> {
        let mut parser = Parser {
            s: text.as_bytes(),
            text,
            pos: at,
            had_whitespace: false,
            levels: &mut self.levels,
            depth: 0,
            nesting: 0,
        };
        let mut id = None;
        parser.value(out, Some((id_field, &mut id)))?;
        let found = Found {
            id,
            had_whitespace: parser.had_whitespace,
        };
        Ok((found, parser.pos))
    }
}

struct Parser<'a, 'l> {
    s: &'a [u8],
    text: &'a str,
    pos: usize,
    had_whitespace: bool,
    levels: &'l mut Vec<Level>,
    /// Nested objects (indexes `levels`).
    depth: usize,
    /// Nested arrays and objects (bounded by [`MAX_DEPTH`]).
    nesting: usize,
}

impl Parser<'_, '_> {
    fn skip_ws(&mut self) {
        let start = self.pos;
        self.pos = skip_ws(self.s, self.pos);
        if self.pos != start {
            self.had_whitespace = true;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn expect(&mut self, byte: u8) -> Result<(), JsonError> {
        self.skip_ws();
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(JsonError::expected(
                &format!("'{}'", byte as char),
                self.s,
                self.pos,
            ))
        }
    }

    /// One value into `out`. `id` asks an object to report its `id_field` member.
    fn value(
        &mut self,
        out: &mut Vec<u8>,
        id: Option<(&str, &mut Option<String>)>,
    ) -> Result<(), JsonError> {
        self.skip_ws();
        match self.peek() {
            Some(b'{') => self.nested(|p| p.object(out, id)),
            Some(b'[') => self.nested(|p| p.array(out)),
            Some(b'"') => {
                let (span, has_escape) = string_span(self.s, self.pos)?;
                self.pos = span.end;
                let raw = &self.text[span];
                if has_escape {
                    write_json_string(&decode(raw)?, out);
                } else {
                    out.extend_from_slice(raw.as_bytes());
                }
                Ok(())
            }
            Some(c @ (b't' | b'f' | b'n')) => {
                let word = literal_word(c);
                self.pos = self.literal_end(word)?;
                out.extend_from_slice(word);
                Ok(())
            }
            Some(b'-' | b'0'..=b'9') => {
                let start = self.pos;
                self.pos = number_end(self.s, start)?;
                write_canonical_number(&self.text[start..self.pos], out);
                Ok(())
            }
            _ => Err(JsonError::expected("a value", self.s, self.pos)),
        }
    }

    /// An object member's value (at `pos`, after any whitespace): left where it is
    /// in the text when that is already its canonical form, else written to `values`.
    fn member_value(&mut self, values: &mut Vec<u8>) -> Result<ValueAt, JsonError> {
        let start = self.pos;
        let from = values.len();
        match self.peek() {
            Some(b'"') => {
                let (span, has_escape) = string_span(self.s, start)?;
                self.pos = span.end;
                if !has_escape {
                    return Ok(ValueAt::Text(span));
                }
                write_json_string(&decode(&self.text[span])?, values);
            }
            Some(c @ (b't' | b'f' | b'n')) => {
                self.pos = self.literal_end(literal_word(c))?;
                return Ok(ValueAt::Text(start..self.pos));
            }
            Some(b'-' | b'0'..=b'9') => {
                self.pos = number_end(self.s, start)?;
                let literal = &self.text[start..self.pos];
                if !literal.contains(['.', 'e', 'E']) && literal != "-0" {
                    return Ok(ValueAt::Text(start..self.pos));
                }
                write_canonical_number(literal, values);
            }
            _ => self.value(values, None)?,
        }
        Ok(ValueAt::Values(from..values.len()))
    }

    /// Runs `inner` one array or object deeper, refusing to go past [`MAX_DEPTH`].
    fn nested(
        &mut self,
        inner: impl FnOnce(&mut Self) -> Result<(), JsonError>,
    ) -> Result<(), JsonError> {
        if self.nesting >= MAX_DEPTH {
            return Err(JsonError {
                kind: JsonErrorKind::Unrepresentable,
                message: format!(
                    "more than {MAX_DEPTH} nested arrays and objects at byte {}",
                    self.pos
                ),
            });
        }
        self.nesting += 1;
        let result = inner(self);
        self.nesting -= 1;
        result
    }

    /// Where the literal `word` starting at `pos` ends.
    fn literal_end(&self, word: &[u8]) -> Result<usize, JsonError> {
        let rest = &self.s[self.pos..];
        if rest.starts_with(word) {
            Ok(self.pos + word.len())
        } else if word.starts_with(rest) {
            Err(JsonError::eof(self.s.len()))
        } else {
            Err(JsonError::syntax(format!(
                "bad literal at byte {}",
                self.pos
            )))
        }
    }

    fn array(&mut self, out: &mut Vec<u8>) -> Result<(), JsonError> {
        self.pos += 1;
        out.push(b'[');
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            out.push(b']');
            return Ok(());
        }
        loop {
            self.value(out, None)?;
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    out.push(b',');
                }
                Some(b']') => {
                    self.pos += 1;
                    out.push(b']');
                    return Ok(());
                }
                _ => return Err(JsonError::expected("',' or ']'", self.s, self.pos)),
            }
        }
    }

    fn object(
        &mut self,
        out: &mut Vec<u8>,
        id: Option<(&str, &mut Option<String>)>,
    ) -> Result<(), JsonError> {
        if self.levels.len() <= self.depth {
            self.levels.resize_with(self.depth + 1, Level::default);
        }
        // This level's buffers, taken out while nested values use the deeper ones.
        let mut level = std::mem::take(&mut self.levels[self.depth]);
        self.depth += 1;
        let result = self.object_members(&mut level, id);
        self.depth -= 1;
        if result.is_ok() {
            write_sorted(&mut level, self.s, out);
        }
        self.levels[self.depth] = level;
        result
    }

    /// Reads an object's members into `level` (keys as spans, canonical values into
    /// `level.values`).
    fn object_members(
        &mut self,
        level: &mut Level,
        mut id: Option<(&str, &mut Option<String>)>,
    ) -> Result<(), JsonError> {
        self.pos += 1;
        level.members.clear();
        level.values.clear();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(JsonError::expected("a key", self.s, self.pos));
            }
            let (key, has_escape) = string_span(self.s, self.pos)?;
            self.pos = key.end;
            let decoded = if has_escape {
                Some(decode(&self.text[key.clone()])?)
            } else {
                None
            };
            self.expect(b':')?;
            self.skip_ws();
            let value_start = self.pos;
            let value = self.member_value(&mut level.values)?;
            if let Some((field, slot)) = id.as_mut() {
                let name = decoded
                    .as_deref()
                    .unwrap_or(&self.text[key.start + 1..key.end - 1]);
                if name == *field {
                    let raw = &self.text[value_start..self.pos];
                    **slot = match raw.as_bytes().first() {
                        Some(b'"') => Some(decode(raw)?),
                        Some(b'-' | b'0'..=b'9') => Some(raw.to_string()),
                        _ => None,
                    };
                }
            }
            level.members.push(Member {
                key,
                decoded,
                value,
            });
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(JsonError::expected("',' or '}'", self.s, self.pos)),
            }
        }
    }
}

/// The literal a value starting with `first` (`t`, `f` or `n`) must be.
fn literal_word(first: u8) -> &'static [u8] {
    match first {
        b't' => b"true",
        b'f' => b"false",
        _ => b"null",
    }
}

/// Whether `members` have exactly the cached key sequence.
fn same_keys(members: &[Member], text: &[u8], cached: &[u8]) -> bool {
    let mut at = 0;
    for member in members {
        let key = member.key_bytes(text);
        let end = at + key.len();
        if cached.get(at..end) != Some(key) || cached.get(end) != Some(&0xff) {
            return false;
        }
        at = end + 1;
    }
    at == cached.len()
}

/// Writes a collected object with its members in canonical order: keys by code point
/// (UTF-8 byte order), a repeated key once with its last value (as every JSON parser
/// that keeps one value does). The order comes from the level's cache when the key
/// sequence repeats, else from a stable sort that then becomes the cache.
fn write_sorted(level: &mut Level, text: &[u8], out: &mut Vec<u8>) {
    let members = &level.members;
    if !same_keys(members, text, &level.cached_keys) {
        let order = &mut level.sort_scratch;
        order.clear();
        order.extend(0..members.len() as u32);
        order.sort_by(|&a, &b| {
            members[a as usize]
                .key_bytes(text)
                .cmp(members[b as usize].key_bytes(text))
        });
        level.cached_order.clear();
        for (i, &m) in order.iter().enumerate() {
            let key = members[m as usize].key_bytes(text);
            let repeated_later = order
                .get(i + 1)
                .is_some_and(|&next| members[next as usize].key_bytes(text) == key);
            if !repeated_later {
                level.cached_order.push(m);
            }
        }
        level.cached_keys.clear();
        for member in members {
            level.cached_keys.extend_from_slice(member.key_bytes(text));
            level.cached_keys.push(0xff);
        }
    }
    out.push(b'{');
    for (i, &m) in level.cached_order.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let member = &members[m as usize];
        // A key without escapes is already in canonical form.
        match &member.decoded {
            Some(key) => write_json_string(key, out),
            None => out.extend_from_slice(&text[member.key.clone()]),
        }
        out.push(b':');
        out.extend_from_slice(match &member.value {
            ValueAt::Text(span) => &text[span.clone()],
            ValueAt::Values(span) => &level.values[span.clone()],
        });
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::write_canonical;
    use serde_json::Value;

    /// The tree-based writer is the reference: both must agree byte for byte.
    fn reference(json: &str) -> Vec<u8> {
        let value: Value = serde_json::from_str(json).expect("valid test JSON");
        let mut out = Vec::new();
        write_canonical(&value, &mut out);
        out
    }

    fn fast(json: &str) -> (Vec<u8>, Found) {
        let mut out = Vec::new();
        let found = canonicalize(json, "ticker", &mut out).expect("canonicalizes");
        (out, found)
    }

    #[test]
    fn agrees_with_the_reference_on_tricky_input() {
        let cases = [
            r#"{"b":1,"a":{"d":[1,2,{"z":null,"y":true}],"c":"x"}}"#,
            r#" { "a" : [ ] , "b" : { } , "c" : "" } "#,
            r#"{"esc":"a\"b\\c\/d\n\t\u0001\u007f \u00e9 \ud83d\ude00","k\u00e9y":1,"key":2}"#,
            r#"{"n":[0,-0,1.50,1e5,1E16,-2.5e-7,123456789012345678901234567890,0.1]}"#,
            r#"{"dup":1,"a":0,"dup":2}"#,
            r#"{"é":1,"z":2,"Z":3,"😀":4,"ａ":5,"\u0000":6}"#,
            r#"[1,"two",{"three":3},[],{}]"#,
            r#""just a string""#,
            r#"{"ticker":"T-1","title":"“quoted” ✓ 40°"}"#,
            r#"{"z":-0,"y":-12,"a":1.0,"t":true,"n":null,"f":false,"e":"a\u0041","o":{"-":-0}}"#,
        ];
        for case in cases {
            assert_eq!(
                String::from_utf8(fast(case).0).expect("utf-8"),
                String::from_utf8(reference(case)).expect("utf-8"),
                "input {case}"
            );
        }
    }

    #[test]
    fn finds_the_id_and_notices_whitespace() {
        let (_, found) = fast(r#"{"ticker":"A\/B","x":{"ticker":"inner"}}"#);
        assert_eq!(
            found,
            Found {
                id: Some("A/B".into()),
                had_whitespace: false
            }
        );
        let (_, found) = fast(r#"{ "ticker": 42 }"#);
        assert_eq!(
            found,
            Found {
                id: Some("42".into()),
                had_whitespace: true
            }
        );
        let (_, found) = fast(r#"{"ticker":null}"#);
        assert_eq!(found.id, None);
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for bad in [
            r#"{"a":"#,
            r#"{"a" 1}"#,
            r#"[1,"#,
            r#""open"#,
            "tru",
            r#"{"a":1}x"#,
            "",
            r#"{"s":"\ud800"}"#,
        ] {
            assert!(
                canonicalize(bad, "ticker", &mut Vec::new()).is_err(),
                "{bad}"
            );
        }
    }

    /// `next_special` against the obvious byte loop, at every offset of texts that
    /// put special bytes at every position of an 8-byte word (and bytes with the
    /// high bit set, where the SWAR masks could go wrong).
    #[test]
    fn next_special_finds_the_first_special_byte() {
        let mut rng = crate::testgen::Rng::new(0x9FB2_1C65_1E98_DF25);
        let alphabet = [
            b'a',
            b'"',
            b'\\',
            0x00,
            0x1f,
            0x20,
            0x21,
            0x7f,
            0x80,
            0xe9,
            0xff,
            0x5b,
            0x5d,
            0x22 ^ 0x80,
        ];
        for _ in 0..20_000 {
            let len = rng.below(40) as usize;
            let text: Vec<u8> = (0..len)
                .map(|_| {
                    if rng.below(4) == 0 {
                        rng.pick(&alphabet)
                    } else {
                        b'x'
                    }
                })
                .collect();
            for from in 0..=len {
                let want = text[from..]
                    .iter()
                    .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                    .map(|i| from + i);
                assert_eq!(next_special(&text, from), want, "{text:?} from {from}");
            }
        }
        assert_eq!(next_special(b"abc", 5), None);
    }

    /// The parser is the page validator, so it must refuse what serde_json refuses.
    #[test]
    fn refuses_what_json_refuses() {
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        for bad in [
            "01",
            "1.",
            ".5",
            "-",
            "1e",
            "1e+",
            "+1",
            "--1",
            "0x10",
            "NaN",
            "\"tab\tinside\"",
            "\"nul\u{0}\"",
            r#""\x""#,
            r#""\u12g4""#,
            r#""\u12""#,
            "nul",
            "nulL",
            "[1,]",
            r#"{"a":1,}"#,
            r#"{"a"}"#,
            r#"{1:2}"#,
        ] {
            let err = canonicalize(bad, "ticker", &mut Vec::new()).expect_err(bad);
            assert!(
                serde_json::from_str::<serde::de::IgnoredAny>(bad).is_err(),
                "serde_json accepts {bad:?}, the parser refused it: {err}"
            );
        }
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(canonicalize(&ok, "ticker", &mut Vec::new()).is_ok());
        // A cut-off text is reported as such (a truncated transfer is retried).
        for cut in [
            r#"{"a":"#,
            r#"{"a":"xy"#,
            "[1,",
            "tr",
            r#""\u00"#,
            "-",
            "1.",
            "{",
        ] {
            let err = canonicalize(cut, "ticker", &mut Vec::new()).expect_err(cut);
            assert_eq!(err.kind, JsonErrorKind::Eof, "{cut:?}: {err}");
        }
        for unrepresentable in [r#"{"s":"\ud800"}"#, deep.as_str()] {
            let err = canonicalize(unrepresentable, "ticker", &mut Vec::new()).expect_err("bad");
            assert_eq!(err.kind, JsonErrorKind::Unrepresentable, "{err}");
        }
    }

    /// Property: on random damage to random documents (cut, flipped, inserted and
    /// deleted bytes), the parser accepts exactly the texts serde_json accepts, except
    /// lone surrogates, which serde_json only checks when it decodes a string.
    #[test]
    fn accepts_exactly_what_serde_json_accepts() {
        let mut rng = crate::testgen::Rng::new(0x1405_7B7E_F767_814F);
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..20_000 {
            let mut doc = String::new();
            crate::testgen::json_value(&mut rng, 0, &mut doc);
            let mut bytes = doc.into_bytes();
            for _ in 0..rng.below(3) {
                let inserts = b"{}[]\",:\\0e-.+ \tu\n\x01";
                crate::testgen::damage_once(&mut rng, &mut bytes, 128, inserts, 4);
            }
            let Ok(text) = std::str::from_utf8(&bytes) else {
                continue;
            };
            let ours = canonicalize(text, "ticker", &mut Vec::new());
            let theirs = serde_json::from_str::<serde::de::IgnoredAny>(text);
            match &ours {
                Ok(_) => accepted += 1,
                Err(_) => refused += 1,
            }
            match ours {
                Err(e) if e.kind == JsonErrorKind::Unrepresentable => {}
                ours => assert_eq!(
                    ours.is_ok(),
                    theirs.is_ok(),
                    "{text:?}: ours {ours:?}, serde_json {theirs:?}"
                ),
            }
        }
        assert!(accepted > 1000 && refused > 1000, "{accepted} / {refused}");
    }

    /// A property test: random JSON documents (seeded, so failures reproduce) give
    /// the same canonical bytes both ways.
    #[test]
    fn agrees_with_the_reference_on_generated_documents() {
        let mut rng = crate::testgen::Rng::new(0x2545_F491_4F6C_DD1D);
        for _ in 0..3000 {
            let mut doc = String::new();
            crate::testgen::json_value(&mut rng, 0, &mut doc);
            let mut out = Vec::new();
            canonicalize(&doc, "ticker", &mut out).unwrap_or_else(|e| panic!("{doc}: {e}"));
            assert_eq!(out, reference(&doc), "input {doc}");
        }
    }
    /// Property: one canonicalizer reused across records (so its key-order cache
    /// hits and misses at every level) gives the reference bytes every time: for
    /// random documents, and for runs of documents sharing one key sequence (with
    /// repeats) but not their values.
    #[test]
    fn a_reused_canonicalizer_agrees_with_the_reference() {
        use crate::testgen::{Rng, json_object, json_value};
        let mut rng = Rng::new(0x5851_F42D_4C95_7F2D);
        let mut reused = Canonicalizer::default();
        let keys = [
            "a", "b", "é", "A", "\\u00e9", "ticker", "a b", "😀", "zz", "aa",
        ];
        let mut check = |doc: &str| {
            let mut out = Vec::new();
            reused
                .canonicalize(doc, "ticker", &mut out)
                .unwrap_or_else(|e| panic!("{doc}: {e}"));
            assert_eq!(out, reference(doc), "input {doc}");
        };
        for _ in 0..1000 {
            let mut doc = String::new();
            json_object(&mut rng, 0, &mut doc);
            check(&doc);
            let sequence: Vec<&str> = (0..rng.below(8)).map(|_| rng.pick(&keys)).collect();
            for _ in 0..3 {
                let mut doc = String::from("{");
                for (i, key) in sequence.iter().enumerate() {
                    if i > 0 {
                        doc.push(',');
                    }
                    doc.push_str(&format!("\"{key}\":"));
                    json_value(&mut rng, 1, &mut doc);
                }
                doc.push('}');
                check(&doc);
            }
        }
    }
}
