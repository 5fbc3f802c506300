//! Hashing a list page on two threads: this one and one long-lived helper.
//!
//! Canonicalizing and hashing records is the run's main CPU cost (profiled: ~75 % of
//! a JSON Lines run on one thread). A page of [`PARALLEL_MIN_RECORDS`] or more is cut
//! in two: the helper hashes the second half while the calling thread hashes the
//! first, and the call returns both, in order, before the page is stored, so the run
//! stays a sequential walk of pages and the records are the same either way.
//!
//! The helper lives as long as the run (a thread per page cost an mmap'd stack per
//! page, and with musl's allocator much more), and both sides keep their
//! canonicalizer, so its key-order cache carries from page to page.

use std::ops::Range;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use serde_json::value::RawValue;

use crate::record::{Record, RecordScratch, make_record_in};

/// Pages with fewer records than this are hashed on the calling thread only.
pub(crate) const PARALLEL_MIN_RECORDS: usize = 64;

/// One half page for the helper.
struct Job {
    body: Arc<String>,
    items: Vec<Range<usize>>,
    id_field: String,
    ingestion_time: Arc<str>,
}

type Hashed = Result<Vec<Record>, String>;

/// The calling thread's scratch and the helper thread.
#[derive(Default)]
pub(crate) struct PageHasher {
    scratch: RecordScratch,
    helper: Option<Helper>,
}

struct Helper {
    jobs: mpsc::Sender<Job>,
    results: mpsc::Receiver<Hashed>,
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
    let (outbox, results) = mpsc::channel::<Hashed>();
    let thread = std::thread::Builder::new()
        .name("hash".into())
        .spawn(move || {
            let mut scratch = RecordScratch::default();
            while let Ok(job) = inbox.recv() {
                let hashed = job
                    .items
                    .iter()
                    .map(|range| {
                        let text = job
                            .body
                            .get(range.clone())
                            .ok_or("a record's span is not inside its page")?;
                        make_record_in(
                            &job.body,
                            range.clone(),
                            text,
                            &job.id_field,
                            &job.ingestion_time,
                            &mut scratch,
                        )
                    })
                    .collect();
                if outbox.send(hashed).is_err() {
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

/// Where `raw` (a slice of the page body starting at address `base`) sits in it.
fn span(raw: &RawValue, base: usize) -> Range<usize> {
    let start = raw.get().as_ptr() as usize - base;
    start..start + raw.get().len()
}

impl PageHasher {
    /// Hashes `raws` (slices of `body`) into records, in order.
    pub(crate) fn hash_page(
        &mut self,
        body: &Arc<String>,
        raws: &[&RawValue],
        id_field: &str,
        ingestion_time: &Arc<str>,
    ) -> Result<Vec<Record>, String> {
        let (first, second) = if raws.len() < PARALLEL_MIN_RECORDS {
            (raws, &raws[raws.len()..])
        } else {
            raws.split_at(raws.len() / 2)
        };
        if self.helper.is_none() && !second.is_empty() {
            self.helper = start_helper();
        }
        let base = body.as_ptr() as usize;
        let sent = match (&self.helper, second.is_empty()) {
            (Some(helper), false) => {
                let items = second.iter().map(|raw| span(raw, base)).collect();
                let job = Job {
                    body: Arc::clone(body),
                    items,
                    id_field: id_field.to_string(),
                    ingestion_time: Arc::clone(ingestion_time),
                };
                helper.jobs.send(job).is_ok()
            }
            _ => false,
        };
        let mut records = Vec::with_capacity(raws.len());
        let scratch = &mut self.scratch;
        let mine = if sent { first } else { raws };
        for raw in mine {
            records.push(make_record_in(
                body,
                span(raw, base),
                raw.get(),
                id_field,
                ingestion_time,
                scratch,
            )?);
        }
        if sent {
            let rest = self
                .helper
                .as_ref()
                .and_then(|h| h.results.recv().ok())
                .unwrap_or_else(|| Err("the hashing thread stopped".to_string()));
            if rest.is_err() {
                // A stopped helper is not restarted within a page; the next page
                // starts a new one.
                self.helper = None;
            }
            records.extend(rest?);
        }
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_threads_give_the_records_one_thread_gives() {
        let mut body = String::from("[");
        for i in 0..301 {
            if i > 0 {
                body.push(',');
            }
            body.push_str(&format!(r#"{{"ticker":"T{i}","n":{i},"s":"é\u00e9"}}"#));
        }
        body.push(']');
        let raws: Vec<&RawValue> = serde_json::from_str(&body).expect("array");
        let body = Arc::new(body.clone());
        // The RawValues must point into `body`: parse it again from the Arc.
        let raws_in_body: Vec<&RawValue> = serde_json::from_str(&body).expect("array");
        assert_eq!(raws.len(), raws_in_body.len());
        let mut hasher = PageHasher::default();
        let both = hasher
            .hash_page(&body, &raws_in_body, "ticker", &"t".into())
            .expect("hashed");
        let mut scratch = RecordScratch::default();
        for (record, raw) in both.iter().zip(&raws_in_body) {
            let alone = crate::record::make_record(raw.get(), "ticker", &"t".into(), &mut scratch)
                .expect("hashed");
            assert_eq!(record.id, alone.id);
            assert_eq!(record.hash, alone.hash);
            assert_eq!(record.data.as_bytes(), alone.data.as_bytes());
            assert!(matches!(
                record.data,
                crate::record::RecordData::Page { .. }
            ));
        }
        assert_eq!(both.len(), 301);
        // Small pages stay on the calling thread.
        let small = hasher
            .hash_page(&body, &raws_in_body[..10], "ticker", &"t".into())
            .expect("hashed");
        assert_eq!(small.len(), 10);
    }
}
