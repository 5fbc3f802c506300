//! Records: identity, canonical hash, envelope bytes, and the deduplication index.
//!
//! A record is one element of an endpoint's array, kept exactly as the server sent it
//! (only whitespace between tokens is dropped, so every envelope fits on one line).
//!
//! # `record_hash`
//! `record_hash` is the lowercase hex SHA-256 of the *canonical JSON* of `data`:
//! object keys sorted by code point, no whitespace, `,` and `:` separators, strings in
//! UTF-8 with only `"`, `\` and control characters escaped (`\n`, `\t`, ... and `\u00XX`
//! with lowercase hex), integers as written (`-0` becomes `0`), other numbers in their
//! shortest round-trip form (`1.5`, `100000.0`, `1e+16`, `1.5e-05`). This is exactly what
//! Python's `json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`
//! prints, so anyone can recompute a hash with the one-liner in README.md.
//!
//! # Deduplication
//! [`DedupIndex`] keeps the first 128 bits of every stored record's hash (16 bytes per
//! record): the only memory that grows with the number of records.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Range;
use std::sync::Arc;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::body::PageText;
use crate::canonical::JsonError;

/// The version of the envelope layout written into every record (`schema_version`).
pub(crate) const SCHEMA_VERSION: u32 = 1;

/// A SHA-256 digest of a record's canonical JSON.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct RecordHash(pub(crate) [u8; 32]);

impl RecordHash {
    /// Lowercase hex, as written in `record_hash`.
    pub(crate) fn to_hex(self) -> String {
        let mut out = Vec::with_capacity(64);
        self.write_hex(&mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Appends the lowercase hex to `out`.
    fn write_hex(self, out: &mut Vec<u8>) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for byte in self.0 {
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0xf)]);
        }
    }

    /// The first 128 bits, the key of the deduplication index.
    pub(crate) fn prefix(self) -> u128 {
        let mut first = [0u8; 16];
        first.copy_from_slice(&self.0[..16]);
        u128::from_le_bytes(first)
    }
}

/// One record ready to be placed in a batch: identity, hash and the data bytes.
#[derive(Debug)]
pub(crate) struct Record {
    /// The record's identifier as the server sent it (`None` when the id field is
    /// missing or is neither a string nor a number).
    pub(crate) id: Option<String>,
    pub(crate) hash: RecordHash,
    /// The record's JSON exactly as received, minus whitespace between tokens.
    pub(crate) data: RecordData,
    /// `YYYYMMDD_HHMMSS` of the moment the page holding it was received (shared by
    /// the page's records).
    pub(crate) ingestion_time: Arc<str>,
}

/// A record's JSON text: a slice of the page body it arrived in, shared and not
/// copied (a page's records, and so the page, live until their batch is written:
/// a few pages at most), or bytes of its own (a record that had whitespace to drop,
/// or a detail answer). Profiled: a 2 KB copy per record was the static (musl)
/// build's main cost, its allocator mapping and unmapping memory for them.
#[derive(Debug)]
pub(crate) enum RecordData {
    Page {
        page: Arc<PageText>,
        range: Range<usize>,
    },
    Own(Vec<u8>),
}

impl RecordData {
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            RecordData::Page { page, range } => {
                page.as_bytes().get(range.clone()).unwrap_or_default()
            }
            RecordData::Own(bytes) => bytes,
        }
    }
}

/// What hashing records reuses from one record to the next: the canonical bytes'
/// buffer and the canonicalizer's buffers and key-order cache.
#[derive(Default)]
pub(crate) struct RecordScratch {
    canonical: crate::canonical::Canonicalizer,
    bytes: Vec<u8>,
}

/// Hashes one record's JSON text and extracts its id (its data is a copy). Reuse one
/// `scratch` for many records, so that hashing them allocates little.
pub(crate) fn make_record(
    json: &str,
    id_field: &str,
    ingestion_time: &Arc<str>,
    scratch: &mut RecordScratch,
) -> Result<Record, JsonError> {
    scratch.bytes.clear();
    let found = scratch
        .canonical
        .canonicalize(json, id_field, &mut scratch.bytes)?;
    let data = if found.had_whitespace {
        minified(json.as_bytes())
    } else {
        json.as_bytes().to_vec()
    };
    Ok(Record {
        id: found.id,
        hash: RecordHash(Sha256::digest(&scratch.bytes[..]).into()),
        data: RecordData::Own(data),
        ingestion_time: Arc::clone(ingestion_time),
    })
}

/// Reads, hashes and checks the record whose JSON starts at byte `at` of `page` (no
/// whitespace before it); returns it with the position just past its text. The
/// record's data stays a slice of the page unless it had whitespace to drop.
pub(crate) fn record_at(
    page: &Arc<PageText>,
    at: usize,
    id_field: &str,
    ingestion_time: &Arc<str>,
    scratch: &mut RecordScratch,
) -> Result<(Record, usize), JsonError> {
    scratch.bytes.clear();
    let (found, end) = scratch
        .canonical
        .canonicalize_at(page, at, id_field, &mut scratch.bytes)?;
    let data = if found.had_whitespace {
        RecordData::Own(minified(&page.as_bytes()[at..end]))
    } else {
        RecordData::Page {
            page: Arc::clone(page),
            range: at..end,
        }
    };
    let record = Record {
        id: found.id,
        hash: RecordHash(Sha256::digest(&scratch.bytes[..]).into()),
        data,
        ingestion_time: Arc::clone(ingestion_time),
    };
    Ok((record, end))
}

/// `json` with the whitespace between its tokens dropped.
fn minified(json: &[u8]) -> Vec<u8> {
    let mut data = Vec::with_capacity(json.len());
    write_minified(json, &mut data);
    data
}

/// Where a record sits in its endpoint's output.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Position {
    /// 0-based index among the endpoint's stored (non-duplicate) records.
    pub(crate) record_index: u64,
    pub(crate) batch_number: u64,
    /// The number of records in this record's batch.
    pub(crate) total_records: u64,
}

/// Appends the decimal digits of `n` to `out` (no allocation: the writer thread
/// builds a million envelopes, and musl's allocator made each small `String` count).
fn write_decimal(mut n: u64, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Appends the one-line envelope (with its trailing newline) for `record` to `out`.
pub(crate) fn write_envelope(endpoint: &str, record: &Record, pos: Position, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"schema_version\":");
    write_decimal(u64::from(SCHEMA_VERSION), out);
    out.extend_from_slice(b",\"endpoint\":");
    write_json_string(endpoint, out);
    out.extend_from_slice(b",\"ingestion_time\":");
    write_json_string(&record.ingestion_time, out);
    out.extend_from_slice(b",\"record_id\":");
    match &record.id {
        Some(id) => write_json_string(id, out),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"record_hash\":\"");
    record.hash.write_hex(out);
    out.extend_from_slice(b"\",\"batch_info\":{\"record_index\":");
    write_decimal(pos.record_index, out);
    out.extend_from_slice(b",\"batch_number\":");
    write_decimal(pos.batch_number, out);
    out.extend_from_slice(b",\"total_records\":");
    write_decimal(pos.total_records, out);
    out.extend_from_slice(b"},\"data\":");
    out.extend_from_slice(record.data.as_bytes());
    out.extend_from_slice(b"}\n");
}

/// Hashes the canonical form of an already parsed value. `verify` re-hashes with this
/// tree-based writer, ingestion with `canonical`'s direct one: every verify run
/// cross-checks the two implementations.
pub(crate) fn hash_value(value: &Value) -> RecordHash {
    let mut buf = Vec::new();
    write_canonical(value, &mut buf);
    RecordHash(Sha256::digest(&buf[..]).into())
}

/// Writes the canonical JSON of `value` (see the module docs) to `out`.
pub(crate) fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_canonical_number(&n.to_string(), out),
        Value::String(s) => write_json_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            // serde_json's map is a BTreeMap here (no `preserve_order`): iteration is
            // in byte order of the UTF-8 keys, which is code point order.
            out.push(b'{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json_string(key, out);
                out.push(b':');
                write_canonical(item, out);
            }
            out.push(b'}');
        }
    }
}

/// Writes a JSON number literal in canonical form: integers as written, everything else
/// as the shortest round-trip decimal in Python's `repr(float)` layout.
pub(crate) fn write_canonical_number(literal: &str, out: &mut Vec<u8>) {
    let is_integer = !literal.contains(['.', 'e', 'E']);
    if is_integer {
        if literal == "-0" {
            out.push(b'0');
        } else {
            out.extend_from_slice(literal.as_bytes());
        }
        return;
    }
    let x: f64 = match literal.parse() {
        Ok(x) => x,
        // The parser has already checked the literal; keep it as is if Rust disagrees.
        Err(_) => {
            out.extend_from_slice(literal.as_bytes());
            return;
        }
    };
    out.extend_from_slice(python_float_repr(x).as_bytes());
}

/// `repr(x)` as CPython prints a float: shortest round-trip digits, positional for
/// decimal exponents in -4..16, otherwise `d.ddde+XX`.
fn python_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "NaN".to_string();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.to_string();
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "-1.2345e-7", "1e16", "0e0".
    let sci = format!("{x:e}");
    let (negative, sci) = match sci.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, sci.as_str()),
    };
    let (mantissa, exponent) = sci
        .split_once('e')
        .expect("Rust's {:e} float formatting always contains an 'e'");
    let exponent: i32 = exponent
        .parse()
        .expect("Rust's {:e} float formatting always has an integer exponent");
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let mut out = String::with_capacity(digits.len() + 8);
    if negative {
        out.push('-');
    }
    if (-4..16).contains(&exponent) {
        if exponent >= 0 {
            let int_len = exponent as usize + 1;
            if digits.len() <= int_len {
                out.push_str(&digits);
                out.extend(std::iter::repeat_n('0', int_len - digits.len()));
                out.push_str(".0");
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        } else {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-exponent - 1) as usize));
            out.push_str(&digits);
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exponent < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", exponent.unsigned_abs()));
    }
    out
}

/// Writes `s` as a JSON string with the escapes described in the module docs.
pub(crate) fn write_json_string(s: &str, out: &mut Vec<u8>) {
    // Most strings (ids, times) need no escape: copy them between quotes.
    if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return;
    }
    if serde_json::to_writer(&mut *out, s).is_err() {
        // Unreachable: writing a str into a Vec cannot fail. Keep the output JSON.
        out.extend_from_slice(b"\"\"");
    }
}

/// Copies JSON text, dropping whitespace between tokens (never inside strings).
/// Copies whole runs rather than bytes: most of a record is string contents.
fn write_minified(json: &[u8], out: &mut Vec<u8>) {
    let n = json.len();
    let mut i = 0;
    while i < n {
        let start = i;
        while i < n && !matches!(json[i], b' ' | b'\n' | b'\r' | b'\t' | b'"') {
            i += 1;
        }
        out.extend_from_slice(&json[start..i]);
        if i >= n {
            break;
        }
        if json[i] != b'"' {
            i += 1; // whitespace between tokens
            continue;
        }
        let string_start = i;
        i += 1;
        while i < n {
            match json[i] {
                b'\\' => i += 2,
                b'"' => {
                    i += 1;
                    break;
                }
                _ => i += 1,
            }
        }
        out.extend_from_slice(&json[string_start..i.min(n)]);
    }
}

/// A hasher for keys that are already uniformly distributed (SHA-256 prefixes).
#[derive(Default)]
pub(crate) struct PrefixHasher(u64);

impl Hasher for PrefixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(word);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

type PrefixSet = HashSet<u128, BuildHasherDefault<PrefixHasher>>;

/// Shards of the index, chosen by a prefix's top byte.
const SHARDS: usize = 256;

/// The content hashes already stored for one endpoint.
///
/// Split into 256 sets that grow independently: a single set doubles its table when
/// full and briefly holds both, which at a million records measured a 65.7 MB peak
/// RSS for the whole run; with shards only 1/256 of the index is ever doubled at once.
pub(crate) struct DedupIndex {
    shards: Vec<PrefixSet>,
}

impl Default for DedupIndex {
    fn default() -> Self {
        DedupIndex {
            shards: (0..SHARDS).map(|_| PrefixSet::default()).collect(),
        }
    }
}

impl DedupIndex {
    fn shard(&mut self, prefix: u128) -> &mut PrefixSet {
        &mut self.shards[(prefix >> 120) as usize]
    }

    /// Records `hash`; returns `false` when it was already present (a duplicate).
    pub(crate) fn insert(&mut self, hash: RecordHash) -> bool {
        let prefix = hash.prefix();
        self.shard(prefix).insert(prefix)
    }

    /// An index holding the given prefixes (from the hash log on resume).
    pub(crate) fn from_prefixes(prefixes: Vec<u128>) -> DedupIndex {
        let mut index = DedupIndex::default();
        for prefix in prefixes {
            index.shard(prefix).insert(prefix);
        }
        index
    }

    /// The number of distinct hashes held.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(HashSet::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(text: &str) -> String {
        let value: Value = serde_json::from_str(text).expect("test JSON is valid");
        let mut out = Vec::new();
        write_canonical(&value, &mut out);
        String::from_utf8(out).expect("canonical JSON is UTF-8")
    }

    #[test]
    fn json_strings_escape_exactly_what_serde_json_escapes() {
        for s in [
            "plain",
            "",
            "a\"b",
            "back\\slash",
            "ctl\u{1}\u{1f}",
            "del\u{7f}",
            "é😀",
            "tab\t",
        ] {
            let mut fast = Vec::new();
            write_json_string(s, &mut fast);
            assert_eq!(fast, serde_json::to_vec(s).expect("serializes"), "{s:?}");
        }
    }

    #[test]
    fn canonical_sorts_keys_and_drops_whitespace() {
        assert_eq!(
            canonical(r#"{ "b": [1, {"z": null, "a": true}], "a": "x" }"#),
            r#"{"a":"x","b":[1,{"a":true,"z":null}]}"#
        );
    }

    #[test]
    fn canonical_keys_sort_by_code_point() {
        assert_eq!(
            canonical(r#"{"é":1,"z":2,"Z":3,"😀":4,"ａ":5}"#),
            r#"{"Z":3,"z":2,"é":1,"ａ":5,"😀":4}"#
        );
    }

    #[test]
    fn canonical_numbers_match_python_repr() {
        let cases = [
            ("0", "0"),
            ("-0", "0"),
            (
                "123456789012345678901234567890",
                "123456789012345678901234567890",
            ),
            ("1.0", "1.0"),
            ("1.50", "1.5"),
            ("-0.0", "-0.0"),
            ("40.5", "40.5"),
            ("1e5", "100000.0"),
            ("1E16", "1e+16"),
            ("123456789012345678.0", "1.2345678901234568e+17"),
            ("0.0001", "0.0001"),
            ("0.00001", "1e-05"),
            ("1.5e-7", "1.5e-07"),
            ("9999999999999998.0", "9999999999999998.0"),
            ("0.1", "0.1"),
            ("1e400", "Infinity"),
        ];
        for (input, want) in cases {
            assert_eq!(canonical(input), want, "input {input}");
        }
    }

    #[test]
    fn canonical_strings_escape_like_python() {
        assert_eq!(
            canonical(r#""a\"b\\c\/d\n\t\u0001\u007f é ✓""#),
            "\"a\\\"b\\\\c/d\\n\\t\\u0001\u{7f} é ✓\""
        );
    }

    #[test]
    fn minify_keeps_string_contents() {
        let mut out = Vec::new();
        write_minified(br#"{ "a" : "x y\" z" ,"b":[ 1 , 2 ] }"#, &mut out);
        assert_eq!(out, br#"{"a":"x y\" z","b":[1,2]}"#);
    }

    #[test]
    fn record_keeps_data_and_extracts_id() {
        let raw: Box<serde_json::value::RawValue> =
            serde_json::from_str(r#"{"ticker": "A/B", "x": 1.50, "new_field": {"k": []}}"#)
                .expect("valid");
        let rec = make_record(
            raw.get(),
            "ticker",
            &"20260101_000000".into(),
            &mut RecordScratch::default(),
        )
        .expect("ok");
        assert_eq!(rec.id.as_deref(), Some("A/B"));
        assert_eq!(
            rec.data.as_bytes(),
            br#"{"ticker":"A/B","x":1.50,"new_field":{"k":[]}}"#
        );
        let value: Value = serde_json::from_str(raw.get()).expect("valid");
        assert_eq!(rec.hash, hash_value(&value));
        let missing = make_record(
            raw.get(),
            "event_ticker",
            &"t".into(),
            &mut RecordScratch::default(),
        )
        .expect("ok");
        assert_eq!(missing.id, None);
    }

    #[test]
    fn envelope_is_one_line_of_valid_json() {
        let raw: Box<serde_json::value::RawValue> =
            serde_json::from_str(r#"{"ticker":"T\u0000"}"#).expect("valid");
        let rec = make_record(
            raw.get(),
            "ticker",
            &"20260101_000000".into(),
            &mut RecordScratch::default(),
        )
        .expect("ok");
        let mut out = Vec::new();
        let pos = Position {
            record_index: 7,
            batch_number: 0,
            total_records: 8,
        };
        write_envelope("/markets", &rec, pos, &mut out);
        assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1);
        assert_eq!(out.last(), Some(&b'\n'));
        let env: Value = serde_json::from_slice(&out).expect("envelope parses");
        assert_eq!(env["record_id"], "T\u{0}");
        assert_eq!(env["batch_info"]["record_index"].to_string(), "7");
        assert_eq!(
            env["record_hash"].as_str(),
            Some(rec.hash.to_hex().as_str())
        );
    }

    #[test]
    fn decimals_are_written_like_to_string() {
        for n in [
            0,
            7,
            9,
            10,
            99,
            100,
            1000,
            999_999,
            1_000_000,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = b"x".to_vec();
            write_decimal(n, &mut out);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
    }

    #[test]
    fn dedup_index_reports_repeats() {
        let mut index = DedupIndex::default();
        let a = RecordHash([1; 32]);
        let b = RecordHash([2; 32]);
        assert!(index.insert(a));
        assert!(index.insert(b));
        assert!(!index.insert(a));
        assert_eq!(index.len(), 2);
        let rebuilt = DedupIndex::from_prefixes(vec![a.prefix(), b.prefix()]);
        assert_eq!(rebuilt.len(), 2);
        let mut many = DedupIndex::default();
        for n in 0..10_000u32 {
            let mut bytes = [0u8; 32];
            bytes[..4].copy_from_slice(&n.to_le_bytes());
            bytes[15] = (n % 251) as u8; // spread over shards
            assert!(many.insert(RecordHash(bytes)));
        }
        assert_eq!(many.len(), 10_000);
    }
}
