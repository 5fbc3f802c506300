//! Parsing one list response: the array of records and the next cursor.
//!
//! A list page is parsed in one pass by `canonical`'s strict parser, which
//! canonicalizes each array element as it validates it (so there is no second scan
//! of the page, and no document tree: a 19 MB `/series` response costs its bytes plus
//! its records). [`walk_page`] reads the top-level object and hands the array's
//! contents to its caller, which reads the elements with [`walk_elements`], possibly
//! on two threads at once (see `hasher`). A page is accepted whole or rejected whole,
//! so a truncated or malformed body never yields a partial set of records.
//!
//! Detail responses (one record each) are small and go through serde_json
//! ([`parse_single`]).

use serde_json::value::RawValue;

use crate::canonical::{Canonicalizer, JsonError, JsonErrorKind, decode, skip_ws, string_span};

/// Parses `text` as an object holding `array_key` (an array, or `null` for none) and
/// an optional `cursor`; other top-level keys (`milestones`, anything new) are
/// checked and ignored. `array` is called with the position just after the array's
/// `[`, reads the elements, and returns the position just after its `]`. Returns the
/// next page's cursor: `None` when missing, `null` or `""` (the end).
///
/// The text is already checked to be UTF-8 (`fetch` does that once per response).
pub(crate) fn walk_page(
    text: &str,
    array_key: &str,
    array: &mut dyn FnMut(usize) -> Result<usize, JsonError>,
) -> Result<Option<String>, JsonError> {
    let s = text.as_bytes();
    let mut skipped = Canonicalizer::default();
    let mut scratch = Vec::new();
    let mut pos = skip_ws(s, 0);
    if s.get(pos) != Some(&b'{') {
        return Err(JsonError::expected(
            &format!("an object with a \"{array_key}\" array"),
            s,
            pos,
        ));
    }
    pos = skip_ws(s, pos + 1);
    let mut seen_array = false;
    let mut cursor = None;
    if s.get(pos) == Some(&b'}') {
        pos += 1;
    } else {
        loop {
            pos = skip_ws(s, pos);
            if s.get(pos) != Some(&b'"') {
                return Err(JsonError::expected("a key", s, pos));
            }
            let (key_span, has_escape) = string_span(s, pos)?;
            pos = key_span.end;
            let key = if has_escape {
                decode(&text[key_span])?
            } else {
                text[key_span.start + 1..key_span.end - 1].to_string()
            };
            pos = skip_ws(s, pos);
            if s.get(pos) != Some(&b':') {
                return Err(JsonError::expected("':'", s, pos));
            }
            pos = skip_ws(s, pos + 1);
            if key == array_key {
                if seen_array {
                    return Err(JsonError::syntax(format!(
                        "the \"{array_key}\" array appears twice"
                    )));
                }
                seen_array = true;
                pos = match s.get(pos) {
                    Some(b'[') => array(pos + 1)?,
                    Some(b'n') if s[pos..].starts_with(b"null") => pos + 4,
                    _ => {
                        let end = skipped.canonicalize_at(text, pos, "", &mut scratch)?.1;
                        return Err(JsonError::syntax(format!(
                            "expected \"{array_key}\" to be an array, found {:.80}",
                            &text[pos..end]
                        )));
                    }
                };
            } else {
                scratch.clear();
                let end = skipped.canonicalize_at(text, pos, "", &mut scratch)?.1;
                if key == "cursor" {
                    cursor = match s[pos] {
                        b'n' => None,
                        b'"' => Some(decode(&text[pos..end])?).filter(|c| !c.is_empty()),
                        _ => {
                            return Err(JsonError::syntax(format!(
                                "cursor is not a string: {:.80}",
                                &text[pos..end]
                            )));
                        }
                    };
                }
                pos = end;
            }
            pos = skip_ws(s, pos);
            match s.get(pos) {
                Some(b',') => pos += 1,
                Some(b'}') => {
                    pos += 1;
                    break;
                }
                _ => return Err(JsonError::expected("',' or '}'", s, pos)),
            }
        }
    }
    let after = skip_ws(s, pos);
    if after != s.len() {
        return Err(JsonError::syntax(format!(
            "trailing characters after the object at byte {after}"
        )));
    }
    if !seen_array {
        return Err(JsonError::syntax(format!(
            "missing the \"{array_key}\" array"
        )));
    }
    Ok(cursor)
}

/// How [`walk_elements`] stopped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ElementsEnd {
    /// At the array's `]`; the position just after it.
    Closed(usize),
    /// At the element that starts exactly at the `split` position asked for.
    AtSplit,
}

/// Reads array elements from `pos`: just after the `[` (`after_bracket`) or at the
/// start of an element that follows a `,`. `element` reads the element starting at
/// the position it is given and returns where it ends. Stops at the `]`, or before
/// an element starting exactly at `split`.
pub(crate) fn walk_elements(
    text: &str,
    mut pos: usize,
    after_bracket: bool,
    split: Option<usize>,
    element: &mut dyn FnMut(usize) -> Result<usize, JsonError>,
) -> Result<ElementsEnd, JsonError> {
    let s = text.as_bytes();
    pos = skip_ws(s, pos);
    if after_bracket && s.get(pos) == Some(&b']') {
        return Ok(ElementsEnd::Closed(pos + 1));
    }
    loop {
        pos = skip_ws(s, pos);
        if split == Some(pos) {
            return Ok(ElementsEnd::AtSplit);
        }
        pos = skip_ws(s, element(pos)?);
        match s.get(pos) {
            Some(b',') => pos += 1,
            Some(b']') => return Ok(ElementsEnd::Closed(pos + 1)),
            _ => return Err(JsonError::expected("',' or ']'", s, pos)),
        }
    }
}

/// A likely element start at or after `from`: the `{` of the first `}` `,` `{` `key`
/// sequence (whitespace allowed between the tokens), where `key` is the first
/// element's first key token, quotes included ([`first_key`]). Records of one
/// endpoint start with the same key, objects nested in them mostly do not (a series'
/// `settlement_sources` are `},{"name"`). Only a guess: the sequence may sit inside a
/// string or a nested object, which [`walk_elements`] detects (its reader never
/// stops at the guess).
pub(crate) fn element_start_near(text: &str, from: usize, key: &[u8]) -> Option<usize> {
    let s = text.as_bytes();
    memchr::memmem::find_iter(s.get(from..)?, key)
        .map(|at| from + at)
        .find_map(|at| {
            let open = before(&s[..at], b"{")?.len();
            before(before(&s[..open], b",")?, b"}")?;
            Some(open)
        })
}

/// `s` without its trailing whitespace and then without `last`, which must end it.
fn before<'b>(s: &'b [u8], last: &[u8]) -> Option<&'b [u8]> {
    let len = s
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\n' | b'\r' | b'\t'))
        .map_or(0, |i| i + 1);
    s[..len].strip_suffix(last)
}

/// The first key token (quotes included) of the object starting at `start`, if the
/// text there is an object with a key.
pub(crate) fn first_key(text: &str, start: usize) -> Option<&[u8]> {
    let s = text.as_bytes();
    let open = skip_ws(s, start);
    if s.get(open) != Some(&b'{') {
        return None;
    }
    let key = skip_ws(s, open + 1);
    if s.get(key) != Some(&b'"') {
        return None;
    }
    let (span, _) = string_span(s, key).ok()?;
    s.get(span)
}

/// The cursor a list page ends with, found without parsing the page: the body must
/// end with `"cursor":"…"}` (whitespace allowed between tokens), the cursor non-empty
/// and free of escapes. Only a guess for reading ahead: the page may still be invalid,
/// and the real cursor is the one `walk_page` returns.
pub(crate) fn cursor_at_end(body: &[u8]) -> Option<&str> {
    let rest = before(before(body, b"}")?, b"\"")?;
    let opening = memchr::memrchr(b'"', rest)?;
    let cursor = &rest[opening + 1..];
    let key = before(before(&rest[..opening], b":")?, b"\"cursor\"")?;
    before(key, b",").or_else(|| before(key, b"{"))?;
    if cursor.is_empty() || cursor.contains(&b'\\') {
        return None;
    }
    std::str::from_utf8(cursor).ok()
}

/// A one-line explanation of why a page was rejected, naming what the body looks
/// like when it is obviously something else (an HTML error page, an empty body).
pub(crate) fn describe_page_error(err: &JsonError, body: &[u8]) -> String {
    describe(body, err.kind == JsonErrorKind::Eof, &err.message)
}

fn describe(body: &[u8], eof: bool, message: &str) -> String {
    let start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .map(|i| &body[i..])
        .unwrap_or(&[]);
    if start.is_empty() {
        return "empty body".to_string();
    }
    if start.first() == Some(&b'<') {
        return format!("body is HTML or XML, not JSON ({} bytes)", body.len());
    }
    if eof {
        return format!("body ends early: truncated JSON ({} bytes)", body.len());
    }
    format!("{message} ({} bytes)", body.len())
}

/// [`describe_page_error`] for serde_json's errors (detail responses).
fn describe_json_error(err: &serde_json::Error, body: &[u8]) -> String {
    describe(body, err.is_eof(), &err.to_string())
}

/// Parses a detail response: the whole body (`member` = `None`) or the value of one
/// of its top-level members, which must be a JSON object. Other members are ignored.
pub(crate) fn parse_single<'a>(
    body: &'a [u8],
    member: Option<&str>,
) -> Result<&'a RawValue, String> {
    let value: &'a RawValue = match member {
        None => serde_json::from_slice(body).map_err(|e| describe_json_error(&e, body))?,
        Some(key) => {
            let map: std::collections::HashMap<std::borrow::Cow<'a, str>, &'a RawValue> =
                serde_json::from_slice(body).map_err(|e| describe_json_error(&e, body))?;
            map.get(key)
                .copied()
                .ok_or_else(|| format!("missing the \"{key}\" object"))?
        }
    };
    if !value.get().starts_with('{') {
        let what = member.map_or("the body".to_string(), |k| format!("\"{k}\""));
        return Err(format!("{what} is not a JSON object"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page's element texts and cursor, as the run reads them (one thread).
    fn parse_page(text: &str, array_key: &str) -> Result<(Vec<String>, Option<String>), String> {
        let mut elements = Vec::new();
        let mut canonical = Canonicalizer::default();
        let cursor = walk_page(text, array_key, &mut |start| {
            let end = walk_elements(text, start, true, None, &mut |at| {
                let end = canonical
                    .canonicalize_at(text, at, "ticker", &mut Vec::new())?
                    .1;
                elements.push(text[at..end].to_string());
                Ok(end)
            })?;
            match end {
                ElementsEnd::Closed(end) => Ok(end),
                ElementsEnd::AtSplit => unreachable!("no split was asked for"),
            }
        })
        .map_err(|e| describe_page_error(&e, text.as_bytes()))?;
        Ok((elements, cursor))
    }

    #[test]
    fn parses_records_cursor_and_ignores_other_keys() {
        let body = r#"{"markets":[{"ticker":"A"}, {"ticker":"B","x":[1,2]}],"milestones":[{"m":1}],"cursor":"abc"}"#;
        let (records, cursor) = parse_page(body, "markets").expect("valid page");
        assert_eq!(records.len(), 2);
        assert_eq!(records[1], r#"{"ticker":"B","x":[1,2]}"#);
        assert_eq!(cursor.as_deref(), Some("abc"));
    }

    #[test]
    fn end_of_pages_is_missing_null_or_empty_cursor() {
        for body in [
            r#"{"events":[]}"#,
            r#"{"events":[],"cursor":null}"#,
            r#"{"cursor":"","events":[]}"#,
        ] {
            let (_, cursor) = parse_page(body, "events").expect("valid page");
            assert_eq!(cursor, None);
        }
    }

    #[test]
    fn single_records_are_one_member_or_the_whole_object() {
        let body = br#"{"market":{"ticker":"A","n":1},"other":[1]}"#;
        let market = parse_single(body, Some("market")).expect("member");
        assert_eq!(market.get(), r#"{"ticker":"A","n":1}"#);
        assert_eq!(
            parse_single(body, None).expect("body").get().as_bytes(),
            &body[..]
        );
        let err = parse_single(br#"{"market":null}"#, Some("market")).expect_err("null");
        assert!(err.contains("not a JSON object"), "{err}");
        let err = parse_single(br#"{"x":{}}"#, Some("market")).expect_err("missing");
        assert!(err.contains("missing the \"market\""), "{err}");
        assert!(parse_single(b"[1]", None).is_err());
        assert!(
            parse_single(b"{\"a\":", None)
                .expect_err("cut")
                .contains("truncated")
        );
    }

    #[test]
    fn the_cursor_at_the_end_is_found_without_parsing() {
        for (body, want) in [
            (r#"{"markets":[],"cursor":"abc"}"#, Some("abc")),
            (
                "{\"markets\": [ ] ,\n  \"cursor\" : \"c0ffee\" \n}\n",
                Some("c0ffee"),
            ),
            (r#"{"cursor":"abc"}"#, Some("abc")),
            (r#"{"markets":[],"cursor":""}"#, None),
            (r#"{"markets":[],"cursor":null}"#, None),
            (r#"{"cursor":"abc","markets":[]}"#, None),
            (r#"{"markets":[],"cursor":"a\"b"}"#, None),
            (r#"{"markets":[],"cursor":"a\\"}"#, None),
            (r#"{"m":"\"cursor\":\"x"}"#, None),
            (r#"{"m":{"cursor":"x"}}"#, None),
            (r#"{"m":["cursor":"x"}"#, None),
            (r#"{"xcursor":"abc"}"#, None),
            (r#""cursor":"abc"}"#, None),
            ("", None),
            ("}", None),
        ] {
            assert_eq!(cursor_at_end(body.as_bytes()), want, "{body}");
        }
    }

    #[test]
    fn null_array_is_empty() {
        let (records, _) = parse_page(r#"{"series":null}"#, "series").expect("valid page");
        assert!(records.is_empty());
    }

    #[test]
    fn rejects_wrong_shapes_with_a_reason() {
        let cases: [(&str, &str); 7] = [
            (r#"{"cursor":""}"#, "missing the \"markets\" array"),
            (
                r#"{"markets":{"a":1}}"#,
                "expected \"markets\" to be an array",
            ),
            (r#"{"markets":[],"cursor":5}"#, "cursor is not a string"),
            (r#"{"markets":[{"ticker":"A"},"#, "truncated"),
            ("<html><body>502 Bad Gateway</body></html>", "HTML"),
            ("", "empty body"),
            (r#"[1,2]"#, "expected"),
        ];
        for (body, want) in cases {
            let err = parse_page(body, "markets").expect_err("must be rejected");
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
    }

    #[test]
    fn rejects_trailing_garbage() {
        assert!(parse_page(r#"{"markets":[]} x"#, "markets").is_err());
    }
    /// A generated page: `(body, element texts, cursor)`.
    fn generated_page(
        rng: &mut crate::testgen::Rng,
        key: &str,
    ) -> (String, Vec<String>, Option<String>) {
        use crate::testgen::{json_object, json_string, json_value};
        let mut members: Vec<String> = Vec::new();
        let elements: Vec<String> = (0..rng.below(12))
            .map(|_| {
                let mut e = String::new();
                json_object(rng, 0, &mut e);
                e
            })
            .collect();
        members.push(format!("\"{key}\": [ {} ]", elements.join(" ,\n")));
        let cursor = match rng.below(4) {
            0 => None,
            1 => {
                members.push("\"cursor\":null".into());
                None
            }
            2 => {
                members.push("\"cursor\":\"\"".into());
                None
            }
            _ => {
                let c = format!("c{}", rng.below(1_000_000));
                members.push(format!("\"cursor\":\"{c}\""));
                Some(c)
            }
        };
        for _ in 0..rng.below(3) {
            let mut other = String::from("\"milestones\":");
            if rng.below(2) == 0 {
                json_value(rng, 0, &mut other);
            } else {
                json_string(rng, &mut other);
            }
            members.push(other);
        }
        // Member order is free.
        for i in (1..members.len()).rev() {
            members.swap(i, rng.below(i as u64 + 1) as usize);
        }
        (format!("{{{}}}", members.join(",")), elements, cursor)
    }

    /// Property: every generated page parses to exactly its elements (byte for byte)
    /// and its cursor, whatever the member order, escapes and whitespace.
    #[test]
    fn generated_pages_parse_to_their_elements() {
        let mut rng = crate::testgen::Rng::new(0x9E37_79B9_7F4A_7C15);
        let mut guessed = 0;
        for _ in 0..2000 {
            let (body, elements, cursor) = generated_page(&mut rng, "markets");
            let (got, got_cursor) =
                parse_page(&body, "markets").unwrap_or_else(|e| panic!("{body}: {e}"));
            assert_eq!(got, elements, "{body}");
            assert_eq!(got_cursor, cursor, "{body}");
            // Reading ahead never guesses a cursor the page does not have.
            let guess = cursor_at_end(body.as_bytes());
            assert!(guess.is_none() || guess == cursor.as_deref(), "{body}");
            guessed += usize::from(guess.is_some());
        }
        assert!(
            guessed > 100,
            "too few pages ended with their cursor: {guessed}"
        );
    }

    /// Fuzz: random damage to valid pages (cut, flipped, inserted, deleted bytes) is
    /// an error or a page, never a panic; records the parser lets through are then
    /// hashed like real ones, also without panicking.
    #[test]
    fn damaged_pages_never_panic_the_parser_or_the_hasher() {
        let mut rng = crate::testgen::Rng::new(0xD1B5_4A32_D192_ED03);
        let mut scratch = crate::record::RecordScratch::default();
        let mut parsed = 0;
        for _ in 0..20_000 {
            let (body, _, _) = generated_page(&mut rng, "events");
            let mut bytes = body.into_bytes();
            for _ in 0..=rng.below(3) {
                let inserts = b"{}[]\",:\\0e-. \xff\xc3";
                crate::testgen::damage_once(&mut rng, &mut bytes, 256, inserts, 8);
            }
            let _ = parse_single(&bytes, Some("events"));
            let _ = parse_single(&bytes, None);
            // As `fetch` does: UTF-8 first, then the page.
            let guess = cursor_at_end(&bytes);
            if let Ok(text) = std::str::from_utf8(&bytes)
                && let Ok((records, cursor)) = parse_page(text, "events")
            {
                parsed += 1;
                assert!(guess.is_none() || guess == cursor.as_deref(), "{text}");
                for raw in records {
                    let _ = crate::record::make_record(&raw, "ticker", &"t".into(), &mut scratch);
                }
            }
        }
        assert!(
            parsed > 100,
            "the damage left too few parseable pages: {parsed}"
        );
    }
}
