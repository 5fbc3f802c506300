//! The main job: create the run folder, walk the planned endpoints one at a time, each
//! from its first page to its last, and write the session summary.
//!
//! Each page request goes through the retry policy (`retry`): transient failures are
//! retried in normal mode, then in extended recovery mode. What happens when a page
//! cannot be had:
//! * a permanent failure (a 4xx, a body over the cap, a repeated cursor): the endpoint
//!   is incomplete, what it saved stays, and the run goes on with the next endpoint;
//! * the recovery ladder is exhausted: the host is plainly down, so the remaining
//!   endpoints are not started (they would each wait out the ladder again) and the run
//!   ends with exit status 1;
//! * before the run's first successful response the host does not resolve or accept
//!   connections: the run stops at once with exit status 2 naming the host;
//! * a disk error: the run stops, writes its summary if it can, exit status 2.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};

use crate::cli::RunConfig;
use crate::client::{Client, ClientConfig, Failure, FailureClass, Fetched};
use crate::error::{EXIT_FATAL, EXIT_INCOMPLETE, EXIT_OK, Error};
use crate::pace::{Clock, RateLimiter, SystemClock};
use crate::page::{describe_json_error, parse_page};
use crate::plan::EndpointSpec;
use crate::record::{DedupIndex, Record, make_record};
use crate::retry::{GiveUp, Outcome, Retry, RetryPolicy, Step, WaitKind, parse_retry_after};
use crate::store::{self, BatchWriter};
use crate::summary::{
    EndpointStatus, EndpointSummary, FailurePoint, RecoveryEpisode, SUMMARY_SCHEMA_VERSION,
    Summary, Totals, summary_file_name,
};
use crate::timestamp;

/// The run log's file name inside the run folder.
pub(crate) const LOG_FILE_NAME: &str = "atomic_ingestion.log";

/// What a finished run reports back to `main`.
pub(crate) struct RunOutcome {
    pub(crate) run_dir: PathBuf,
    pub(crate) exit_code: u8,
}

/// How an endpoint ended, as far as the rest of the run is concerned.
enum EndpointEnd {
    /// Complete, or incomplete for a reason that does not affect other endpoints.
    Continue,
    /// The recovery ladder ran out: skip the remaining endpoints.
    HostDown,
    /// The host was never reachable: stop the run as a fatal error.
    Unreachable(String),
}

/// Shared state of the run's request loop.
struct Fetcher<'c> {
    client: Client,
    policy: RetryPolicy,
    clock: &'c dyn Clock,
    limiter: RateLimiter,
    /// Whether any request of the run has succeeded yet.
    contacted: bool,
    requests: u64,
}

/// A page that could not be had: the last failure and why we stopped.
struct PageFailure {
    failure: Failure,
    give_up: GiveUp,
}

/// Runs the main job. `Err` only when nothing useful could be started (the run folder
/// cannot be created); later fatal errors are logged, recorded in the summary and
/// reported through the exit code.
pub(crate) fn run(config: &RunConfig) -> Result<RunOutcome, Error> {
    store::prepare_out_dir(&config.out)?;
    let (run_dir, started) = store::create_run_dir(&config.out)?;
    crate::logger::attach_file(&run_dir.join(LOG_FILE_NAME))?;
    let session_id = timestamp::compact(started);
    let wall = Instant::now();
    info!(
        "run {session_id}: folder {}, base URL {}, endpoints {}",
        run_dir.display(),
        config.base_url,
        config
            .endpoints
            .iter()
            .map(|e| e.name)
            .collect::<Vec<_>>()
            .join(",")
    );

    let clock = SystemClock::new();
    let mut fetcher = Fetcher {
        client: Client::new(ClientConfig {
            base_url: config.base_url.clone(),
            timeout: config.timeout,
            max_body_bytes: config.max_body_bytes,
        }),
        policy: config.retry.clone(),
        clock: &clock,
        limiter: RateLimiter::new(config.rate),
        contacted: false,
        requests: 0,
    };
    let mut endpoints: Vec<EndpointSummary> = config
        .endpoints
        .iter()
        .map(|spec| EndpointSummary {
            name: spec.name.to_string(),
            path: spec.path.to_string(),
            ..EndpointSummary::default()
        })
        .collect();
    let mut fatal = false;
    let mut stopped_early = None;
    for (spec, summary) in config.endpoints.iter().zip(endpoints.iter_mut()) {
        match ingest_endpoint(&mut fetcher, &run_dir, spec, summary) {
            Ok(EndpointEnd::Continue) => {}
            Ok(EndpointEnd::HostDown) => {
                let why = format!(
                    "{} could not be reached through the whole recovery ladder; \
                     the remaining endpoints were not started",
                    fetcher.client.host()
                );
                error!("{why}");
                stopped_early = Some(why);
                break;
            }
            Ok(EndpointEnd::Unreachable(why)) => {
                error!("{why}");
                stopped_early = Some(why);
                fatal = true;
                break;
            }
            Err(e) => {
                error!("{}: stopping the run: {e}", spec.name);
                stopped_early = Some(e.to_string());
                fatal = true;
                break;
            }
        }
    }

    let totals = Totals::of(&endpoints);
    let exit_code = if fatal {
        EXIT_FATAL
    } else if totals.endpoints_complete < endpoints.len() as u64 {
        EXIT_INCOMPLETE
    } else {
        EXIT_OK
    };
    let summary = Summary {
        schema_version: SUMMARY_SCHEMA_VERSION,
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        session_id: session_id.clone(),
        started_at: timestamp::rfc3339(started),
        finished_at: timestamp::rfc3339(timestamp::now()),
        duration_seconds: wall.elapsed().as_secs_f64(),
        base_url: config.base_url.clone(),
        endpoints_planned: config
            .endpoints
            .iter()
            .map(|e| e.name.to_string())
            .collect(),
        status: if exit_code == EXIT_OK {
            "complete"
        } else {
            "incomplete"
        }
        .to_string(),
        stopped_early,
        exit_code,
        endpoints,
        totals,
    };
    let summary_path = run_dir.join(summary_file_name(&session_id));
    let summary_json =
        serde_json::to_vec_pretty(&summary).expect("the summary has only serializable fields");
    if let Err(e) = store::write_atomic(&summary_path, &summary_json) {
        error!("{e}");
        return Ok(RunOutcome {
            run_dir,
            exit_code: EXIT_FATAL,
        });
    }
    let t = &summary.totals;
    info!(
        "run {session_id} {}: {} records saved, {} duplicates skipped, {} requests, {:.1} s; summary {}",
        summary.status,
        t.records_saved,
        t.duplicates_skipped,
        t.requests,
        summary.duration_seconds,
        summary_path.display()
    );
    Ok(RunOutcome { run_dir, exit_code })
}

/// One page, parsed and turned into owned records.
struct PageData {
    records: Vec<Record>,
    cursor: Option<String>,
    bytes: u64,
}

/// Parses a fetched body into records. Any problem is a [`Failure`] the retry policy
/// classifies: cut-off JSON is a truncated transfer, an HTML page or wrong shape a bad
/// body (both transient), an unparseable record inside a valid page permanent.
fn parse_fetched(fetched: &Fetched, spec: &EndpointSpec) -> Result<PageData, Failure> {
    let page = parse_page(&fetched.body, spec.array_key).map_err(|reason| {
        let class = if reason.contains("truncated") {
            FailureClass::Truncated
        } else {
            FailureClass::BadBody
        };
        Failure::new(class, format!("unexpected response: {reason}"))
    })?;
    let ingestion_time = timestamp::compact(timestamp::now());
    let mut scratch = Vec::with_capacity(16 * 1024);
    let mut records = Vec::with_capacity(page.records.len());
    for raw in &page.records {
        let record =
            make_record(raw, spec.id_field, &ingestion_time, &mut scratch).map_err(|e| {
                Failure::new(
                    FailureClass::BadRecord,
                    format!(
                        "a record is not valid JSON: {}",
                        describe_json_error(&e, raw.get().as_bytes())
                    ),
                )
            })?;
        records.push(record);
    }
    Ok(PageData {
        records,
        cursor: page.cursor,
        bytes: fetched.body.len() as u64,
    })
}

/// One line for the summary and log: the reason and its class.
fn describe_failure(f: &Failure) -> String {
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
    /// Fetches and parses one page, retrying per the policy. Updates the endpoint's
    /// request, retry, wait and recovery counters.
    fn fetch_page(
        &mut self,
        spec: &EndpointSpec,
        page_number: u64,
        query: &[(&str, String)],
        summary: &mut EndpointSummary,
    ) -> Result<PageData, PageFailure> {
        let url = self.client.url_for(spec.path, query);
        let policy = self.policy.clone();
        let mut retry = Retry::new(&policy, !self.contacted, self.clock.now(), self.requests);
        let mut episode: Option<(String, Duration, u32)> = None;
        loop {
            let pace = self.limiter.delay(self.clock.now());
            if !pace.is_zero() {
                summary.pacing_seconds += pace.as_secs_f64();
                self.clock.sleep(pace);
            }
            self.requests += 1;
            summary.requests += 1;
            let result = self.client.get(spec.path, query).and_then(|fetched| {
                debug!(
                    "GET {url} -> 200, {} bytes, {} ms",
                    fetched.body.len(),
                    fetched.elapsed.as_millis()
                );
                parse_fetched(&fetched, spec)
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
                            spec.name
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
                    match kind {
                        WaitKind::Backoff { next_try } => warn!(
                            "{}: page {page_number}: {reason}; try {next_try}/{} in {}",
                            spec.name,
                            policy.tries,
                            human(wait)
                        ),
                        WaitKind::RateLimited => warn!(
                            "{}: page {page_number}: rate limited (HTTP 429); waiting {}, \
                             pacing now {:.1} requests/s",
                            spec.name,
                            human(wait),
                            self.limiter.current_rate()
                        ),
                        WaitKind::EnterRecovery => {
                            warn!(
                                "TIMEOUT RECOVERY MODE: {}: page {page_number}: {} tries failed \
                                 (last: {reason}); recovery step 1/{} in {}",
                                spec.name,
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
                                spec.name,
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
                            spec.name,
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
                    return Err(PageFailure { failure, give_up });
                }
            }
        }
    }
}

/// Fetches one endpoint from its first page to its last, filling `summary`.
/// `Err` only for errors that must stop the whole run (the disk).
fn ingest_endpoint(
    fetcher: &mut Fetcher,
    run_dir: &Path,
    spec: &EndpointSpec,
    summary: &mut EndpointSummary,
) -> Result<EndpointEnd, Error> {
    let started = Instant::now();
    info!(
        "{}: starting ({}{})",
        spec.name,
        fetcher.client.base_url(),
        spec.path
    );
    let mut writer = BatchWriter::create(run_dir, spec.name, spec.path)?;
    let mut dedup = DedupIndex::default();
    let mut seen_cursors: HashSet<String> = HashSet::new();
    let mut cursor: Option<String> = None;
    let mut failure: Option<(String, String)> = None;
    let mut end = EndpointEnd::Continue;

    loop {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(limit) = spec.page_size {
            query.push(("limit", limit.to_string()));
        }
        if let Some(c) = &cursor {
            query.push(("cursor", c.clone()));
        }
        let url = fetcher.client.url_for(spec.path, &query);
        let page = match fetcher.fetch_page(spec, summary.pages + 1, &query, summary) {
            Ok(page) => page,
            Err(PageFailure {
                failure: f,
                give_up,
            }) => {
                let reason = describe_failure(&f);
                end = match give_up {
                    GiveUp::Permanent => EndpointEnd::Continue,
                    GiveUp::RecoveryFailed => EndpointEnd::HostDown,
                    GiveUp::Unreachable => EndpointEnd::Unreachable(format!(
                        "cannot reach {}: {reason}; check --base-url, DNS and the network",
                        fetcher.client.host()
                    )),
                };
                failure = Some((url, reason));
                break;
            }
        };
        summary.pages += 1;
        summary.bytes_received += page.bytes;
        for record in page.records {
            if !dedup.insert(record.hash) {
                summary.duplicates_skipped += 1;
                continue;
            }
            if record.id.is_none() {
                summary.records_without_id += 1;
                warn!(
                    "{}: a record has no usable \"{}\" field; stored with record_id null",
                    spec.name, spec.id_field
                );
            }
            writer.push(record)?;
        }
        if spec.page_size.is_none() {
            break;
        }
        match page.cursor {
            None => break,
            Some(next) => {
                if !seen_cursors.insert(next.clone()) {
                    let shown: String = next.chars().take(80).collect();
                    failure = Some((
                        url,
                        format!(
                            "the server returned cursor {shown:?} a second time; stopping \
                             instead of looping (page {} would repeat an earlier page)",
                            summary.pages + 1
                        ),
                    ));
                    break;
                }
                cursor = Some(next);
            }
        }
    }

    let written = writer.finish()?;
    summary.records_saved = written.records;
    summary.batches = written.batches;
    summary.bytes_written = written.bytes;
    summary.duration_seconds = started.elapsed().as_secs_f64();
    summary.records_per_second = if summary.duration_seconds > 0.0 {
        written.records as f64 / summary.duration_seconds
    } else {
        0.0
    };
    match failure {
        None => {
            summary.status = EndpointStatus::Complete;
            info!(
                "{}: complete: {} records, {} duplicates skipped, {} pages, {} requests, {:.1} s",
                spec.name,
                written.records,
                summary.duplicates_skipped,
                summary.pages,
                summary.requests,
                summary.duration_seconds
            );
        }
        Some((url, reason)) => {
            summary.status = EndpointStatus::Incomplete;
            error!(
                "{}: incomplete after {} records: GET {url}: {reason}",
                spec.name, written.records
            );
            summary.failure = Some(FailurePoint {
                page: summary.pages + 1,
                records_saved: written.records,
                last_good_cursor: cursor,
                url,
                error: reason,
            });
        }
    }
    debug_assert_eq!(writer.pending_len(), 0);
    debug_assert_eq!(dedup.len() as u64, written.records);
    Ok(end)
}
