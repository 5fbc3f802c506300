//! The main job: create the run folder, walk the planned endpoints one at a time, each
//! from its first page to its last, and write the session summary.
//!
//! An endpoint that fails (an HTTP error, a page that is not what we expect, a repeated
//! cursor) is marked incomplete with its failure point; everything it retrieved stays
//! on disk and the run goes on with the next endpoint. A disk error is fatal: the run
//! stops, writes its summary if it can, and exits with status 2.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use log::{debug, error, info, warn};

use crate::cli::RunConfig;
use crate::client::{Client, ClientConfig, Failure, FailureClass};
use crate::error::{EXIT_FATAL, EXIT_INCOMPLETE, EXIT_OK, Error};
use crate::page::{describe_json_error, parse_page};
use crate::plan::EndpointSpec;
use crate::record::{DedupIndex, make_record};
use crate::store::{self, BatchWriter};
use crate::summary::{
    EndpointStatus, EndpointSummary, FailurePoint, SUMMARY_SCHEMA_VERSION, Summary, Totals,
    summary_file_name,
};
use crate::timestamp;

/// The run log's file name inside the run folder.
pub(crate) const LOG_FILE_NAME: &str = "atomic_ingestion.log";

/// What a finished run reports back to `main`.
pub(crate) struct RunOutcome {
    pub(crate) run_dir: PathBuf,
    pub(crate) exit_code: u8,
}

/// Runs the main job. `Err` only when nothing useful could be started (the run folder
/// cannot be created); later fatal errors are logged, recorded in the summary and
/// reported through the exit code.
pub(crate) fn run(config: &RunConfig) -> Result<RunOutcome, Error> {
    store::prepare_out_dir(&config.out)?;
    let (run_dir, started) = store::create_run_dir(&config.out)?;
    crate::logger::attach_file(&run_dir.join(LOG_FILE_NAME))?;
    let session_id = timestamp::compact(started);
    let clock = Instant::now();
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

    let client = Client::new(ClientConfig {
        base_url: config.base_url.clone(),
        timeout: config.timeout,
        max_body_bytes: config.max_body_bytes,
    });
    let mut endpoints: Vec<EndpointSummary> = config
        .endpoints
        .iter()
        .map(|spec| EndpointSummary {
            name: spec.name.to_string(),
            path: spec.path.to_string(),
            ..EndpointSummary::default()
        })
        .collect();
    let mut fatal: Option<Error> = None;
    for (spec, summary) in config.endpoints.iter().zip(endpoints.iter_mut()) {
        if let Err(e) = ingest_endpoint(&client, &run_dir, spec, summary) {
            error!("{}: stopping the run: {e}", spec.name);
            fatal = Some(e);
            break;
        }
    }

    let totals = Totals::of(&endpoints);
    let exit_code = if fatal.is_some() {
        EXIT_FATAL
    } else if totals.endpoints_incomplete > 0 {
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
        duration_seconds: clock.elapsed().as_secs_f64(),
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

/// A page body that is not the JSON we expect: cut-off JSON counts as a truncated
/// transfer, anything else (an HTML error page, a wrong shape) as a bad body.
fn page_failure(reason: String) -> Failure {
    let class = if reason.contains("truncated") {
        FailureClass::Truncated
    } else {
        FailureClass::BadBody
    };
    Failure::new(class, format!("unexpected response: {reason}"))
}

/// One line for the summary and log: the reason, its class, and whether retrying
/// could help.
fn describe_failure(f: &Failure) -> String {
    let kind = if f.class.is_transient() {
        "transient"
    } else {
        "permanent"
    };
    format!("{} [{}, {kind}]", f.reason, f.class.name())
}

/// Fetches one endpoint from its first page to its last, filling `summary`.
/// `Err` only for errors that must stop the whole run (the disk).
fn ingest_endpoint(
    client: &Client,
    run_dir: &Path,
    spec: &EndpointSpec,
    summary: &mut EndpointSummary,
) -> Result<(), Error> {
    let started = Instant::now();
    info!(
        "{}: starting ({}{})",
        spec.name,
        client.base_url(),
        spec.path
    );
    let mut writer = BatchWriter::create(run_dir, spec.name, spec.path)?;
    let mut dedup = DedupIndex::default();
    let mut seen_cursors: HashSet<String> = HashSet::new();
    let mut cursor: Option<String> = None;
    let mut scratch = Vec::with_capacity(16 * 1024);
    let mut failure: Option<(String, String)> = None;

    loop {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(limit) = spec.page_size {
            query.push(("limit", limit.to_string()));
        }
        if let Some(c) = &cursor {
            query.push(("cursor", c.clone()));
        }
        let url = client.url_for(spec.path, &query);
        summary.requests += 1;
        let fetched = match client.get(spec.path, &query) {
            Ok(fetched) => fetched,
            Err(f) => {
                failure = Some((url, describe_failure(&f)));
                break;
            }
        };
        debug!(
            "GET {url} -> 200, {} bytes, {} ms",
            fetched.body.len(),
            fetched.elapsed.as_millis()
        );
        let page = match parse_page(&fetched.body, spec.array_key) {
            Ok(page) => page,
            Err(reason) => {
                failure = Some((url, describe_failure(&page_failure(reason))));
                break;
            }
        };
        let ingestion_time = timestamp::compact(timestamp::now());
        let mut records = Vec::with_capacity(page.records.len());
        for raw in &page.records {
            match make_record(raw, spec.id_field, &ingestion_time, &mut scratch) {
                Ok(record) => records.push(record),
                Err(e) => {
                    failure = Some((
                        url.clone(),
                        format!(
                            "unexpected response: a record is not valid JSON: {}",
                            describe_json_error(&e, raw.get().as_bytes())
                        ),
                    ));
                    break;
                }
            }
        }
        if failure.is_some() {
            break;
        }
        summary.pages += 1;
        summary.bytes_received += fetched.body.len() as u64;
        for record in records {
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
                        client.url_for(spec.path, &query),
                        format!(
                            "the server returned cursor {shown:?} a second time; stopping \
                             instead of looping (page {} repeats an earlier page)",
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
    Ok(())
}
