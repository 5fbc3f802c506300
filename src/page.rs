//! Parsing one list response: the array of records and the next cursor.
//!
//! The body is parsed once, element by element, into borrowed [`RawValue`] slices of
//! the body (no document tree: a 19 MB `/series` response costs its bytes plus 16
//! bytes per element). A page is accepted whole or rejected whole, so a truncated or
//! malformed body never yields a partial set of records.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// One parsed list response.
#[derive(Debug)]
pub(crate) struct Page<'a> {
    /// The array elements, each exactly as the server sent it.
    pub(crate) records: Vec<&'a RawValue>,
    /// The next page's cursor; `None` when missing, `null` or `""` (the end).
    pub(crate) cursor: Option<String>,
}

/// Parses `body` as an object holding `array_key` (an array) and an optional `cursor`.
/// Other top-level keys (`milestones`, anything new) are ignored.
/// The body is text already checked to be UTF-8 (`fetch` does that once per
/// response), so strings are not checked again.
pub(crate) fn parse_page<'a>(text: &'a str, array_key: &str) -> Result<Page<'a>, String> {
    let body = text.as_bytes();
    let mut de = serde_json::Deserializer::from_str(text);
    let page = PageSeed { array_key }
        .deserialize(&mut de)
        .map_err(|e| describe_json_error(&e, body))?;
    de.end().map_err(|e| describe_json_error(&e, body))?;
    Ok(page)
}

/// A one-line explanation of why a body is not the JSON we expect, naming what it looks
/// like when it is obviously something else (an HTML error page, an empty body).
fn describe_json_error(err: &serde_json::Error, body: &[u8]) -> String {
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
    if err.is_eof() {
        return format!("body ends early: truncated JSON ({} bytes)", body.len());
    }
    format!("{err} ({} bytes)", body.len())
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

struct PageSeed<'k> {
    array_key: &'k str,
}

impl<'de> DeserializeSeed<'de> for PageSeed<'_> {
    type Value = Page<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Page<'de>, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for PageSeed<'_> {
    type Value = Page<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an object with a \"{}\" array", self.array_key)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Page<'de>, A::Error> {
        let mut records = None;
        let mut cursor = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == self.array_key {
                records = Some(map.next_value_seed(RecordsSeed {
                    array_key: self.array_key,
                })?);
            } else if key == "cursor" {
                let value: Option<&'de RawValue> = map.next_value()?;
                cursor = match value.map(RawValue::get) {
                    None | Some("null") => None,
                    Some(text) => {
                        let parsed: String = serde_json::from_str(text).map_err(|_| {
                            de::Error::custom(format!("cursor is not a string: {text:.80}"))
                        })?;
                        Some(parsed).filter(|c| !c.is_empty())
                    }
                };
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        let records = records.ok_or_else(|| {
            de::Error::custom(format!("missing the \"{}\" array", self.array_key))
        })?;
        Ok(Page { records, cursor })
    }
}

/// The records array: each element borrowed as raw JSON. `null` counts as empty (the
/// API sends it for empty lists); any other non-array is an error naming the key.
struct RecordsSeed<'k> {
    array_key: &'k str,
}

impl<'de> DeserializeSeed<'de> for RecordsSeed<'_> {
    type Value = Vec<&'de RawValue>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RecordsSeed<'_> {
    type Value = Vec<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "\"{}\" to be an array", self.array_key)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element::<&'de RawValue>()? {
            items.push(item);
        }
        Ok(items)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_records_cursor_and_ignores_other_keys() {
        let body = r#"{"markets":[{"ticker":"A"}, {"ticker":"B","x":[1,2]}],"milestones":[{"m":1}],"cursor":"abc"}"#;
        let page = parse_page(body, "markets").expect("valid page");
        assert_eq!(page.records.len(), 2);
        assert_eq!(page.records[1].get(), r#"{"ticker":"B","x":[1,2]}"#);
        assert_eq!(page.cursor.as_deref(), Some("abc"));
    }

    #[test]
    fn end_of_pages_is_missing_null_or_empty_cursor() {
        for body in [
            r#"{"events":[]}"#,
            r#"{"events":[],"cursor":null}"#,
            r#"{"cursor":"","events":[]}"#,
        ] {
            let page = parse_page(body, "events").expect("valid page");
            assert_eq!(page.cursor, None);
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
    fn null_array_is_empty() {
        let page = parse_page(r#"{"series":null}"#, "series").expect("valid page");
        assert!(page.records.is_empty());
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
        for _ in 0..2000 {
            let (body, elements, cursor) = generated_page(&mut rng, "markets");
            let page = parse_page(&body, "markets").unwrap_or_else(|e| panic!("{body}: {e}"));
            let got: Vec<&str> = page.records.iter().map(|r| r.get()).collect();
            assert_eq!(got, elements, "{body}");
            assert_eq!(page.cursor, cursor, "{body}");
        }
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
                let at = rng.below(bytes.len() as u64 + 1) as usize;
                match rng.below(4) {
                    0 => bytes.truncate(at),
                    1 if at < bytes.len() => bytes[at] = rng.below(256) as u8,
                    2 => bytes.insert(at, rng.pick(b"{}[]\",:\\0e-. \xff\xc3")),
                    _ if at < bytes.len() => {
                        let end = (at + rng.below(8) as usize).min(bytes.len());
                        bytes.drain(at..end);
                    }
                    _ => {}
                }
            }
            let _ = parse_single(&bytes, Some("events"));
            let _ = parse_single(&bytes, None);
            // As `fetch` does: UTF-8 first, then the page.
            if let Ok(text) = std::str::from_utf8(&bytes)
                && let Ok(page) = parse_page(text, "events")
            {
                parsed += 1;
                for raw in page.records {
                    let _ =
                        crate::record::make_record(raw.get(), "ticker", &"t".into(), &mut scratch);
                }
            }
        }
        assert!(
            parsed > 100,
            "the damage left too few parseable pages: {parsed}"
        );
    }
}
