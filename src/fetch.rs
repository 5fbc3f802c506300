//! Fetching one page: pacing, the HTTP attempt, parsing into records, and the retry
//! loop driven by the `retry` state machine, with its logging (`TIMEOUT RECOVERY
//! MODE`, `Network recovered`, `TIMEOUT RECOVERY FAILED`) and counters.

use std::sync::{Arc, mpsc};
use std::time::Duration;

use log::{debug, error, warn};
use serde_json::value::RawValue;

use crate::body::PageText;
use crate::canonical::{JsonError, JsonErrorKind};
use crate::client::{Client, Failure, FailureClass, Fetched};
use crate::hasher::PageHasher;
use crate::pace::{Clock, RateLimiter};
use crate::page::{describe_page_error, parse_single};
use crate::plan::{EndpointSpec, PerIdRecord};
use crate::record::{Record, make_record, write_json_string};
use crate::retry::{GiveUp, Outcome, Retry, RetryPolicy, Step, WaitKind, parse_retry_after};
use crate::summary::{EndpointSummary, RecoveryEpisode};
use crate::timestamp;

/// Shared state of the run's request loop.
pub(crate) struct Fetcher<'c> {
    pub(crate) client: Client,
    pub(crate) policy: RetryPolicy,
    pub(crate) clock: &'c dyn Clock,
    pub(crate) limiter: RateLimiter,
    /// Whether any request of the run has succeeded yet.
    pub(crate) contacted: bool,
    pub(crate) requests: u64,
    /// Hashes list pages (with a helper thread that lives as long as the fetcher).
    pub(crate) hasher: PageHasher,
    /// Requests the next list page while the current one is parsed.
    pub(crate) read_ahead: ReadAhead,
}

/// Reads ahead: while a list page is parsed, its successor is requested on another
/// thread, with the cursor found at the very end of the body
/// (`page::cursor_at_end`). The answer is used only if the next request the run makes
/// is for exactly that URL (the page parsed, and its cursor was the one guessed);
/// then it counts as that request's first try, and the retry policy treats it like
/// any other. An answer not used (the page failed to parse, the run stopped) is
/// dropped and still counted in `requests`.
///
/// Only while pacing is off (`--rate 0`, and no 429 has slowed the limiter) and not
/// when sampling (`--max-records`): with pacing on, the limiter's interval is far
/// longer than parsing a page, so reading ahead could only break the pacing.
/// Measured, see the commit: a million markets as JSON Lines.
#[derive(Default)]
pub(crate) struct ReadAhead {
    enabled: bool,
    thread: Option<mpsc::Sender<(String, mpsc::Sender<Attempt>)>>,
    pending: Option<(String, mpsc::Receiver<Attempt>)>,
}

/// One HTTP attempt's result.
type Attempt = Result<Fetched, Failure>;

impl ReadAhead {
    pub(crate) fn new(enabled: bool) -> ReadAhead {
        ReadAhead {
            enabled,
            ..ReadAhead::default()
        }
    }

    /// Sends the request for `url` on the read-ahead thread (started on first use
    /// with a clone of `client`). Nothing is pending then: the attempt that calls
    /// this has just taken any pending answer with [`ReadAhead::answer_for`].
    fn request(&mut self, client: &Client, url: String) {
        if !self.enabled {
            return;
        }
        if self.thread.is_none() {
            let (jobs, inbox) = mpsc::channel::<(String, mpsc::Sender<Attempt>)>();
            let client = client.clone();
            let started = std::thread::Builder::new()
                .name("read-ahead".into())
                .spawn(move || {
                    while let Ok((url, reply)) = inbox.recv() {
                        let _ = reply.send(client.get(&url));
                    }
                });
            match started {
                Ok(_) => self.thread = Some(jobs),
                Err(_) => {
                    self.enabled = false;
                    return;
                }
            }
        }
        let (reply, answer) = mpsc::channel();
        if let Some(jobs) = &self.thread
            && jobs.send((url.clone(), reply)).is_ok()
        {
            self.pending = Some((url, answer));
        }
    }

    /// The read-ahead answer for `url` if one was asked for (waiting for it), and the
    /// number of read-ahead requests dropped unused (0 or 1).
    fn answer_for(&mut self, url: &str) -> (Option<Attempt>, u64) {
        match &self.pending {
            Some((asked, _)) if asked == url => {
                let answer = self
                    .pending
                    .take()
                    .and_then(|(_, answer)| answer.recv().ok());
                (answer, 0)
            }
            _ => (None, self.discard()),
        }
    }

    /// Drops a pending read-ahead; returns how many were dropped (0 or 1).
    fn discard(&mut self) -> u64 {
        u64::from(self.pending.take().is_some())
    }
}

/// Why a page could not be had.
pub(crate) enum PageError {
    /// The retry policy gave up; `failure` is the last attempt's.
    GaveUp { failure: Failure, give_up: GiveUp },
    /// Ctrl-C or SIGTERM arrived.
    Interrupted,
}

/// One page, parsed and turned into owned records.
pub(crate) struct PageData {
    pub(crate) records: Vec<Record>,
    pub(crate) cursor: Option<String>,
    pub(crate) bytes: u64,
}

/// What a response must look like and how it becomes records.
pub(crate) enum Shape<'a> {
    /// A list page: the records are the elements of `array_key`.
    List {
        array_key: &'a str,
        id_field: &'a str,
        /// The URL of the page a cursor names, for reading ahead (cursor pages only).
        next_url: Option<&'a dyn Fn(&str) -> String>,
    },
    /// One record asked for by its id (a detail endpoint's per-id request).
    Single {
        record: PerIdRecord,
        id_field: &'a str,
        id: &'a str,
    },
}

impl<'a> Shape<'a> {
    /// The list shape of an endpoint.
    pub(crate) fn list_of(spec: &'a EndpointSpec) -> Shape<'a> {
        Shape::List {
            array_key: spec.array_key,
            id_field: spec.id_field,
            next_url: None,
        }
    }
}

fn unexpected(reason: String) -> Failure {
    let class = if reason.contains("truncated") {
        FailureClass::Truncated
    } else {
        FailureClass::BadBody
    };
    Failure::new(class, format!("unexpected response: {reason}"))
}

/// The failure for a body that is not UTF-8, checked once per response before any
/// parsing: a body cut inside a character is a short transfer; other bad bytes are
/// what the server sends, and it sends the same bytes again, so they are permanent.
fn not_utf8(err: &std::string::FromUtf8Error) -> Failure {
    let body = err.as_bytes();
    let at = err.utf8_error().valid_up_to();
    if err.utf8_error().error_len().is_none() {
        return Failure::new(
            FailureClass::Truncated,
            format!(
                "unexpected response: body ends early, inside a character ({} bytes)",
                body.len()
            ),
        );
    }
    Failure::new(
        FailureClass::BadRecord,
        format!(
            "unexpected response: body is not UTF-8 (byte 0x{:02x} at offset {at} of {}); \
             the server sends the same bytes again, so the page is not retried",
            body.get(at).copied().unwrap_or(0),
            body.len()
        ),
    )
}

/// Parses a body (already checked to be UTF-8) into records. Any problem is a
/// [`Failure`] the retry policy classifies: cut-off JSON is a truncated transfer, an
/// HTML page or wrong shape a bad body (both transient), valid JSON that cannot be a
/// record permanent.
fn parse_records(
    body: &Arc<PageText>,
    shape: &Shape,
    hasher: &mut PageHasher,
) -> Result<PageData, Failure> {
    let ingestion_time: Arc<str> = timestamp::compact(timestamp::now()).into();
    let mut scratch = crate::record::RecordScratch::default();
    let bad_record = |e: &JsonError| {
        Failure::new(
            FailureClass::BadRecord,
            format!("a record cannot be read: {e}"),
        )
    };
    let (records, cursor) = match shape {
        Shape::List {
            array_key,
            id_field,
            ..
        } => {
            hasher
                .read_page(body, array_key, id_field, &ingestion_time)
                .map_err(|e| match e.kind {
                    // Valid JSON the server will send again: retrying cannot help.
                    JsonErrorKind::Unrepresentable => bad_record(&e),
                    JsonErrorKind::Syntax | JsonErrorKind::Eof => {
                        unexpected(describe_page_error(&e, body.as_bytes()))
                    }
                })?
        }
        Shape::Single {
            record,
            id_field,
            id,
        } => {
            let member = match record {
                PerIdRecord::Member(key) => Some(*key),
                PerIdRecord::Body | PerIdRecord::BodyWithId => None,
            };
            let raw = parse_single(body.as_bytes(), member).map_err(unexpected)?;
            let with_id;
            let raw = if *record == PerIdRecord::BodyWithId {
                with_id = prepend_member(raw, id_field, id).map_err(unexpected)?;
                &*with_id
            } else {
                raw
            };
            let mut made = make_record(raw.get(), id_field, &ingestion_time, &mut scratch)
                .map_err(|e| bad_record(&e))?;
            made.id = Some((*id).to_string());
            (vec![made], None)
        }
    };
    Ok(PageData {
        records,
        cursor,
        bytes: body.len() as u64,
    })
}

/// `{"<key>":"<id>",` followed by the members of `object`.
fn prepend_member(object: &RawValue, key: &str, id: &str) -> Result<Box<RawValue>, String> {
    let inner = object.get().trim_start()[1..].trim_start();
    let mut text = Vec::with_capacity(object.get().len() + key.len() + id.len() + 8);
    text.push(b'{');
    write_json_string(key, &mut text);
    text.push(b':');
    write_json_string(id, &mut text);
    if !inner.starts_with('}') {
        text.push(b',');
    }
    text.extend_from_slice(inner.as_bytes());
    let text = String::from_utf8(text).map_err(|e| e.to_string())?;
    RawValue::from_string(text).map_err(|e| e.to_string())
}

pub(crate) fn describe_failure(f: &Failure) -> String {
    format!("{} [{}]", f.reason, f.class.name())
}

/// `1m05s`, `3.2s` or `250ms`.
fn human(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 1.0 {
        format!("{}ms", d.as_millis())
    } else if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

impl Fetcher<'_> {
    /// Drops a read-ahead request nobody will use (the endpoint is done), counting it
    /// in `summary.requests`.
    pub(crate) fn drop_read_ahead(&mut self, summary: &mut EndpointSummary) {
        let dropped = self.read_ahead.discard();
        self.requests += dropped;
        summary.requests += dropped;
    }

    /// Fetches and parses one page, retrying per the policy. Updates the endpoint's
    /// request, retry, wait and recovery counters.
    pub(crate) fn fetch_page(
        &mut self,
        name: &str,
        shape: &Shape,
        page_number: u64,
        url: &str,
        summary: &mut EndpointSummary,
    ) -> Result<PageData, PageError> {
        let policy = self.policy;
        let mut retry = Retry::new(&policy, !self.contacted, self.clock.now(), self.requests);
        let mut episode: Option<(String, Duration, u32)> = None;
        loop {
            if crate::signal::interrupted() {
                return Err(PageError::Interrupted);
            }
            let pace = self.limiter.delay(self.clock.now());
            if !pace.is_zero() {
                summary.pacing_seconds += pace.as_secs_f64();
                self.clock.sleep(pace);
            }
            self.requests += 1;
            summary.requests += 1;
            let (answer, unused) = self.read_ahead.answer_for(url);
            self.requests += unused;
            summary.requests += unused;
            let result = answer
                .unwrap_or_else(|| self.client.get(url))
                .and_then(|fetched| {
                    debug!(
                        "GET {url} -> 200, {} bytes, {} ms",
                        fetched.body.len(),
                        fetched.elapsed.as_millis()
                    );
                    let text = String::from_utf8(fetched.body).map_err(|e| not_utf8(&e))?;
                    if let Shape::List {
                        next_url: Some(next_url),
                        ..
                    } = shape
                        && self.limiter.current_rate().is_infinite()
                        && let Some(cursor) = crate::page::cursor_at_end(text.as_bytes())
                    {
                        self.read_ahead.request(&self.client, next_url(cursor));
                    }
                    let text = PageText::pooled(text, self.client.pool());
                    parse_records(&text, shape, &mut self.hasher)
                });
            let outcome = match &result {
                Ok(_) => Outcome::Success,
                Err(f) => {
                    debug!("GET {url} -> {}", describe_failure(f));
                    *summary
                        .retries_by_class
                        .entry(f.class.name().to_string())
                        .or_default() += 1;
                    if f.class == FailureClass::RateLimited {
                        summary.rate_limited += 1;
                        self.limiter.on_rate_limited();
                    }
                    Outcome::Failed {
                        class: f.class,
                        retry_after: f
                            .retry_after
                            .as_deref()
                            .and_then(|v| parse_retry_after(v, timestamp::now())),
                    }
                }
            };
            let step = retry.on_outcome(outcome, self.clock.now());
            let failure = match result {
                Ok(page) => {
                    self.contacted = true;
                    self.limiter.on_success();
                    if let Step::Done {
                        recovered_after: Some(took),
                    } = step
                    {
                        let (started_at, _, steps) = episode.take().unwrap_or_default();
                        warn!(
                            "Network recovered after {} in recovery mode: {} page {page_number} \
                             (recovery step {steps})",
                            human(took),
                            name
                        );
                        summary.recovery_episodes.push(RecoveryEpisode {
                            page: page_number,
                            started_at,
                            duration_seconds: took.as_secs_f64(),
                            steps,
                            recovered: true,
                        });
                    }
                    return Ok(page);
                }
                Err(failure) => failure,
            };
            match step {
                Step::Done { .. } => unreachable!("a failed attempt never finishes the request"),
                Step::Wait { wait, kind } => {
                    let reason = describe_failure(&failure);
                    crate::progress::status(&match kind {
                        WaitKind::Backoff { next_try } => {
                            format!(
                                "retrying ({}), try {next_try}/{}",
                                failure.class.name(),
                                policy.tries
                            )
                        }
                        WaitKind::RateLimited => "rate limited, waiting".to_string(),
                        WaitKind::EnterRecovery => {
                            format!("TIMEOUT RECOVERY MODE, step 1/{}", policy.recovery_steps)
                        }
                        WaitKind::RecoveryStep { step } => {
                            format!(
                                "TIMEOUT RECOVERY MODE, step {step}/{}",
                                policy.recovery_steps
                            )
                        }
                    });
                    match kind {
                        WaitKind::Backoff { next_try } => warn!(
                            "{}: page {page_number}: {reason}; try {next_try}/{} in {}",
                            name,
                            policy.tries,
                            human(wait)
                        ),
                        WaitKind::RateLimited => warn!(
                            "{}: page {page_number}: rate limited (HTTP 429); waiting {}, \
                             pacing now {:.1} requests/s",
                            name,
                            human(wait),
                            self.limiter.current_rate()
                        ),
                        WaitKind::EnterRecovery => {
                            warn!(
                                "TIMEOUT RECOVERY MODE: {}: page {page_number}: {} tries failed \
                                 (last: {reason}); recovery step 1/{} in {}",
                                name,
                                policy.tries,
                                policy.recovery_steps,
                                human(wait)
                            );
                            episode =
                                Some((timestamp::rfc3339(timestamp::now()), self.clock.now(), 1));
                        }
                        WaitKind::RecoveryStep { step } => {
                            warn!(
                                "{}: page {page_number}: recovery step {}/{} failed: {reason}; \
                                 step {step}/{} in {}",
                                name,
                                step - 1,
                                policy.recovery_steps,
                                policy.recovery_steps,
                                human(wait)
                            );
                            if let Some(e) = episode.as_mut() {
                                e.2 = step;
                            }
                        }
                    }
                    summary.wait_seconds += wait.as_secs_f64();
                    self.clock.sleep(wait);
                }
                Step::GiveUp(give_up) => {
                    if let Some((started_at, since, steps)) = episode.take() {
                        let took = self.clock.now().saturating_sub(since);
                        error!(
                            "TIMEOUT RECOVERY FAILED: {}: page {page_number}: no good answer for {} \
                             over {steps} recovery steps; last error: {}",
                            name,
                            human(took),
                            describe_failure(&failure)
                        );
                        summary.recovery_episodes.push(RecoveryEpisode {
                            page: page_number,
                            started_at,
                            duration_seconds: took.as_secs_f64(),
                            steps,
                            recovered: false,
                        });
                    }
                    return Err(PageError::GaveUp { failure, give_up });
                }
            }
        }
    }
}
