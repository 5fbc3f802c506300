//! Reading a list page on two threads: this one and one long-lived helper.
//!
//! Parsing, canonicalizing and hashing records is the run's main CPU cost, and it is
//! one pass (`page::walk_page` with `record::record_at`). A page of
//! [`PARALLEL_MIN_BYTES`] or more is cut in two without scanning it first: the cut is
//! a guess, the first place after the middle of the array that looks like the start
//! of an element: `},{` and then the key the first element starts with
//! (`page::element_start_near`). The helper reads the elements from the guess to
//! the array's end while this thread reads from the start. The guess is confirmed
//! only if this thread's reading arrives exactly at it (an element really starts
//! there, so reading on from it is what one thread would have done); otherwise (the
//! guess sat inside a string) this thread reads on to the end and the helper's work
//! is dropped. The call returns the records in order, the same either way.
//!
//! The helper lives as long as the run (a thread per page cost an mmap'd stack per
//! page, and with musl's allocator much more), and both sides keep their scratch, so
//! the canonicalizer's key-order cache carries from page to page.

use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use crate::body::PageText;
use crate::canonical::JsonError;
use crate::page::{ElementsEnd, element_start_near, first_key, walk_elements, walk_page};
use crate::record::{Record, RecordScratch, record_at};

/// Arrays shorter than this (in bytes) are read on the calling thread only.
pub(crate) const PARALLEL_MIN_BYTES: usize = 32 * 1024;

/// The second half of a page, for the helper.
struct Job {
    body: Arc<PageText>,
    /// Where the guessed element starts.
    from: usize,
    id_field: String,
    ingestion_time: Arc<str>,
}

/// The helper's records and the position just after the array's `]`.
type Half = Result<(Vec<Record>, usize), JsonError>;

/// The calling thread's scratch and the helper thread.
#[derive(Default)]
pub(crate) struct PageHasher {
    scratch: RecordScratch,
    helper: Option<Helper>,
    /// Pages split at a confirmed guess, and guesses refused (read on one thread).
    splits: (u64, u64),
}

struct Helper {
    jobs: mpsc::Sender<Job>,
    results: mpsc::Receiver<Half>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Helper {
    fn drop(&mut self) {
        // Closing the channel ends the helper's loop.
        let (closed, _) = mpsc::channel();
        self.jobs = closed;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn start_helper() -> Option<Helper> {
    let (jobs, inbox) = mpsc::channel::<Job>();
    let (outbox, results) = mpsc::channel::<Half>();
    let thread = std::thread::Builder::new()
        .name("hash".into())
        .spawn(move || {
            let mut scratch = RecordScratch::default();
            while let Ok(job) = inbox.recv() {
                if outbox.send(read_second_half(&job, &mut scratch)).is_err() {
                    return;
                }
            }
        })
        .ok()?;
    Some(Helper {
        jobs,
        results,
        thread: Some(thread),
    })
}

/// The helper's part: the elements from the guessed start to the array's end.
fn read_second_half(job: &Job, scratch: &mut RecordScratch) -> Half {
    let mut records = Vec::new();
    let end = walk_elements(&job.body, job.from, false, None, &mut |at| {
        let (record, end) = record_at(&job.body, at, &job.id_field, &job.ingestion_time, scratch)?;
        records.push(record);
        Ok(end)
    })?;
    match end {
        ElementsEnd::Closed(end) => Ok((records, end)),
        ElementsEnd::AtSplit => Err(JsonError::syntax("internal error: the helper met a split")),
    }
}

impl PageHasher {
    /// Reads the list page `body`: its `array_key` elements as records, in order,
    /// and its cursor.
    pub(crate) fn read_page(
        &mut self,
        body: &Arc<PageText>,
        array_key: &str,
        id_field: &str,
        ingestion_time: &Arc<str>,
    ) -> Result<(Vec<Record>, Option<String>), JsonError> {
        let text: &str = body;
        let mut records = Vec::new();
        let PageHasher {
            scratch,
            helper,
            splits,
        } = self;
        let cursor = walk_page(text, array_key, &mut |start| {
            let left = text.len() - start;
            let guess = (left >= PARALLEL_MIN_BYTES)
                .then(|| first_key(text, start))
                .flatten()
                .and_then(|key| element_start_near(text, start + left / 2, key));
            let split = guess.filter(|&from| {
                if helper.is_none() {
                    *helper = start_helper();
                }
                let job = Job {
                    body: Arc::clone(body),
                    from,
                    id_field: id_field.to_string(),
                    ingestion_time: Arc::clone(ingestion_time),
                };
                helper.as_ref().is_some_and(|h| h.jobs.send(job).is_ok())
            });
            let mine = walk_elements(text, start, true, split, &mut |at| {
                let (record, end) = record_at(body, at, id_field, ingestion_time, scratch)?;
                records.push(record);
                Ok(end)
            });
            // Always take the helper's answer, so the next page's is not confused with it.
            let theirs = split.map(|_| {
                let half = helper.as_ref().and_then(|h| h.results.recv().ok());
                if half.is_none() {
                    // A stopped helper is not restarted within a page; the next page
                    // starts a new one.
                    *helper = None;
                }
                half.unwrap_or_else(|| {
                    Err(JsonError::syntax(
                        "internal error: the hashing thread stopped",
                    ))
                })
            });
            match (mine?, theirs) {
                (ElementsEnd::AtSplit, Some(half)) => {
                    let (rest, end) = half?;
                    records.extend(rest);
                    splits.0 += 1;
                    Ok(end)
                }
                // The guess was not an element start: this thread read all of it.
                (ElementsEnd::Closed(end), theirs) => {
                    splits.1 += u64::from(theirs.is_some());
                    Ok(end)
                }
                (ElementsEnd::AtSplit, None) => {
                    Err(JsonError::syntax("internal error: a split nobody read"))
                }
            }
        })?;
        Ok((records, cursor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::JsonErrorKind;
    use crate::record::make_record;

    /// A page of `n` market-like records; `filler` (a JSON value) goes into every
    /// record.
    fn page(n: usize, filler: &str) -> String {
        let records: Vec<String> = (0..n)
            .map(|i| format!(r#"{{"ticker":"T{i}","n":{i},"s":"é\u00e9","f":{filler}}}"#))
            .collect();
        format!(r#"{{"cursor":"next","markets":[{}]}}"#, records.join(","))
    }

    /// The records one thread makes, element by element, from serde_json's split.
    fn one_thread(body: &str) -> Vec<Record> {
        let value: serde_json::Value = serde_json::from_str(body).expect("valid page");
        let mut scratch = RecordScratch::default();
        value["markets"]
            .as_array()
            .expect("array")
            .iter()
            .map(|v| {
                make_record(&v.to_string(), "ticker", &"t".into(), &mut scratch).expect("record")
            })
            .collect()
    }

    fn read(
        hasher: &mut PageHasher,
        body: &str,
    ) -> Result<(Vec<Record>, Option<String>), JsonError> {
        hasher.read_page(
            &PageText::alone(body.to_string()),
            "markets",
            "ticker",
            &"t".into(),
        )
    }

    #[test]
    fn two_threads_give_the_records_one_thread_gives() {
        // Plain records; records whose strings look like element boundaries; records
        // whose nested objects start with the records' own first key, so the guessed
        // split lands inside a record and must be refused.
        for (filler, split) in [
            (r#""x""#, true),
            (r#""},{""#, true),
            (r#""} , {\"ticker\":1}],[{""#, true),
            (r#"[{"ticker":"in"},{"ticker":"in2"}]"#, false),
        ] {
            let body = page(3001, filler);
            assert!(body.len() > PARALLEL_MIN_BYTES);
            let mut hasher = PageHasher::default();
            let (records, cursor) = read(&mut hasher, &body).expect("valid page");
            assert!(hasher.helper.is_some(), "a large page uses the helper");
            let want = if split { (1, 0) } else { (0, 1) };
            assert_eq!(hasher.splits, want, "filler {filler}");
            assert_eq!(cursor.as_deref(), Some("next"));
            let alone = one_thread(&body);
            assert_eq!(records.len(), alone.len());
            for (i, (record, alone)) in records.iter().zip(&alone).enumerate() {
                assert_eq!(record.id.as_deref(), Some(format!("T{i}").as_str()));
                assert_eq!(record.id, alone.id);
                assert_eq!(record.hash, alone.hash);
                assert!(matches!(
                    record.data,
                    crate::record::RecordData::Page { .. }
                ));
                let json: serde_json::Value =
                    serde_json::from_slice(record.data.as_bytes()).expect("a record's JSON");
                assert_eq!(json["n"], i, "record {i} with filler {filler:?}");
            }
        }
    }

    #[test]
    fn small_pages_stay_on_the_calling_thread() {
        let body = page(10, r#""x""#);
        let mut hasher = PageHasher::default();
        let (records, _) = read(&mut hasher, &body).expect("valid page");
        assert_eq!(records.len(), 10);
        assert!(hasher.helper.is_none());
    }

    #[test]
    fn damage_in_either_half_rejects_the_page() {
        let body = page(3001, r#""x""#);
        let mut hasher = PageHasher::default();
        for (at, kind) in [
            (body.len() / 4, JsonErrorKind::Syntax),
            (body.len() * 3 / 4, JsonErrorKind::Syntax),
        ] {
            let mut bad = body.clone();
            // A record's number becomes a bare word.
            let n = bad[at..].find(r#""n":"#).expect("a record") + at + 4;
            bad.replace_range(n..n + 1, "x");
            let err = read(&mut hasher, &bad).expect_err("damaged page");
            assert_eq!(err.kind, kind, "{err}");
        }
        // A lone surrogate in the second half is valid JSON but no text.
        let mut bad = body.clone();
        let at = bad[body.len() * 3 / 4..]
            .find("\\u00e9")
            .expect("an escape")
            + body.len() * 3 / 4;
        bad.replace_range(at..at + 6, "\\ud800");
        let err = read(&mut hasher, &bad).expect_err("lone surrogate");
        assert_eq!(err.kind, JsonErrorKind::Unrepresentable, "{err}");
        // Cut short in the second half.
        let err = read(&mut hasher, &body[..body.len() * 3 / 4]).expect_err("cut");
        assert_eq!(err.kind, JsonErrorKind::Eof, "{err}");
        // The hasher still reads good pages afterwards.
        assert_eq!(read(&mut hasher, &body).expect("valid page").0.len(), 3001);
    }
}
