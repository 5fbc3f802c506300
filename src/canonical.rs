//! Canonical JSON, written straight from a record's raw text: the bytes `record_hash`
//! covers (see `record`'s module docs for the definition).
//!
//! This is the hot path of ingestion, so it builds no document tree: strings without
//! escapes are copied as they are (their canonical form is their raw form), numbers go
//! through `record::write_canonical_number`, and only objects allocate, to sort their
//! members. Measured on 20,000 markets (perf): building a `serde_json::Value` and
//! serializing it took about 35 % of the run's CPU; see the commit for before/after.
//!
//! The input is JSON already validated by serde_json (a `RawValue`); anything
//! unexpected is still an error, never a panic.

use crate::record::{write_canonical_number, write_json_string};

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
    value: std::ops::Range<usize>,
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
pub(crate) fn canonicalize(json: &str, id_field: &str, out: &mut Vec<u8>) -> Result<Found, String> {
    Canonicalizer::default().canonicalize(json, id_field, out)
}

impl Canonicalizer {
    /// Writes the canonical JSON of `json` to `out`.
    pub(crate) fn canonicalize(
        &mut self,
        json: &str,
        id_field: &str,
        out: &mut Vec<u8>,
    ) -> Result<Found, String> {
        let mut parser = Parser {
            s: json.as_bytes(),
            text: json,
            pos: 0,
            had_whitespace: false,
            levels: &mut self.levels,
            depth: 0,
        };
        let mut id = None;
        parser.value(out, Some((id_field, &mut id)))?;
        parser.skip_ws();
        if parser.pos != parser.s.len() {
            return Err("trailing characters after the record".into());
        }
        Ok(Found {
            id,
            had_whitespace: parser.had_whitespace,
        })
    }
}

struct Parser<'a, 'l> {
    s: &'a [u8],
    text: &'a str,
    pos: usize,
    had_whitespace: bool,
    levels: &'l mut Vec<Level>,
    depth: usize,
}

impl Parser<'_, '_> {
    fn skip_ws(&mut self) {
        let start = self.pos;
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.s.get(self.pos) {
            self.pos += 1;
        }
        if self.pos != start {
            self.had_whitespace = true;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn expect(&mut self, byte: u8) -> Result<(), String> {
        self.skip_ws();
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(format!("expected '{}' at byte {}", byte as char, self.pos))
        }
    }

    /// One value into `out`. `id` asks an object to report its `id_field` member.
    fn value(
        &mut self,
        out: &mut Vec<u8>,
        id: Option<(&str, &mut Option<String>)>,
    ) -> Result<(), String> {
        self.skip_ws();
        match self.peek() {
            Some(b'{') => self.object(out, id),
            Some(b'[') => self.array(out),
            Some(b'"') => {
                let (span, has_escape) = self.string_span()?;
                let raw = &self.text[span];
                if has_escape {
                    write_json_string(&decode(raw)?, out);
                } else {
                    out.extend_from_slice(raw.as_bytes());
                }
                Ok(())
            }
            Some(b't') => self.literal(b"true", out),
            Some(b'f') => self.literal(b"false", out),
            Some(b'n') => self.literal(b"null", out),
            Some(b'-' | b'0'..=b'9') => {
                let start = self.pos;
                while let Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') = self.peek() {
                    self.pos += 1;
                }
                write_canonical_number(&self.text[start..self.pos], out);
                Ok(())
            }
            _ => Err(format!("unexpected byte at {}", self.pos)),
        }
    }

    fn literal(&mut self, word: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        if self.s[self.pos..].starts_with(word) {
            self.pos += word.len();
            out.extend_from_slice(word);
            Ok(())
        } else {
            Err(format!("bad literal at byte {}", self.pos))
        }
    }

    /// The span of a string token, quotes included, and whether it has escapes.
    fn string_span(&mut self) -> Result<(std::ops::Range<usize>, bool), String> {
        let start = self.pos;
        self.pos += 1;
        let mut has_escape = false;
        loop {
            let rest = self.s.get(self.pos..).unwrap_or_default();
            match memchr::memchr2(b'"', b'\\', rest) {
                Some(at) if rest[at] == b'"' => {
                    self.pos += at + 1;
                    if self.text.get(start..self.pos).is_none() {
                        return Err("a string ends inside a character".into());
                    }
                    return Ok((start..self.pos, has_escape));
                }
                Some(at) => {
                    has_escape = true;
                    self.pos += at + 2;
                }
                None => return Err("unterminated string".into()),
            }
        }
    }

    fn array(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
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
                _ => return Err(format!("expected ',' or ']' at byte {}", self.pos)),
            }
        }
    }

    fn object(
        &mut self,
        out: &mut Vec<u8>,
        id: Option<(&str, &mut Option<String>)>,
    ) -> Result<(), String> {
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
    ) -> Result<(), String> {
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
                return Err(format!("expected a key at byte {}", self.pos));
            }
            let (key, has_escape) = self.string_span()?;
            let decoded = if has_escape {
                Some(decode(&self.text[key.clone()])?)
            } else {
                None
            };
            self.expect(b':')?;
            self.skip_ws();
            let value_start = self.pos;
            let start = level.values.len();
            self.value(&mut level.values, None)?;
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
                value: start..level.values.len(),
            });
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(format!("expected ',' or '}}' at byte {}", self.pos)),
            }
        }
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
        out.extend_from_slice(&level.values[member.value.clone()]);
    }
    out.push(b'}');
}

/// Decodes a JSON string token (quotes included).
fn decode(raw: &str) -> Result<String, String> {
    serde_json::from_str::<String>(raw).map_err(|e| format!("bad string: {e}"))
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
