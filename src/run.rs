//! The main job: create (or resume) the run folder, walk the planned endpoints one at a
//! time, each from its first page to its last, checkpoint as batches become durable,
//! and write the session summary.
//!
//! What happens when a page cannot be had:
//! * a permanent failure (a 4xx, a body over the cap, a repeated cursor): the endpoint
//!   is incomplete, what it saved stays, and the run goes on with the next endpoint;
//! * the recovery ladder is exhausted: the host is plainly down, so the remaining
//!   endpoints are not started (they would each wait out the ladder again) and the run
//!   ends with exit status 1;
//! * before the run's first successful response the host does not resolve or accept
//!   connections: the run stops at once with exit status 2 naming the host;
//! * a disk error: the run stops, writes its summary if it can, exit status 2;
//! * Ctrl-C or SIGTERM: the run stops at the next safe point (before a request or
//!   during a wait), keeps every committed batch, writes the summary as `interrupted`
//!   and exits with 130. `--resume DIR` continues it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use log::{error, info, warn};

use crate::checkpoint::{
    self, Checkpoint, CheckpointState, Manifest, ResumePoint, Session, Syncer,
};
use crate::cli::RunConfig;
use crate::client::{Client, ClientConfig};
use crate::error::{EXIT_FATAL, EXIT_INCOMPLETE, EXIT_OK, Error};
use crate::fetch::{Fetcher, PageError, describe_failure};
use crate::pace::{RateLimiter, SystemClock};
use crate::plan::{self, EndpointSpec, Filters};
use crate::record::DedupIndex;
use crate::retry::GiveUp;
use crate::signal::EXIT_INTERRUPTED;
use crate::store::{self, AfterCommit, BatchWriter, Format, WrittenCounts};
use crate::summary::{
    EndpointStatus, EndpointSummary, FailurePoint, SUMMARY_SCHEMA_VERSION, Summary, Totals,
    summary_file_name,
};
use crate::timestamp;

/// The run log's file name inside the run folder.
pub(crate) const LOG_FILE_NAME: &str = "atomic_ingestion.log";

/// What a finished run reports back to `main`.
pub(crate) struct RunOutcome {
    /// The run folder (`None` with `--stdout`).
    pub(crate) run_dir: Option<PathBuf>,
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
    /// Ctrl-C or SIGTERM.
    Interrupted,
}

/// Where and why an endpoint stopped early.
struct Stopped {
    url: String,
    reason: String,
    /// The 1-based page that could not be had.
    page: u64,
    /// The cursor a resume starts that page with.
    resume_cursor: Option<String>,
}

/// The run folder and plan of this session: new, or taken from `--resume`. With
/// `--stdout` there is no run folder at all.
struct Setup {
    run_dir: Option<PathBuf>,
    manifest: Manifest,
    endpoints: Vec<EndpointSpec>,
    base_url: String,
    format: Format,
    filters: Filters,
}

fn set_up(config: &RunConfig) -> Result<Setup, Error> {
    match &config.resume {
        None => {
            // With --stdout there is no run folder; otherwise a new one, never reused.
            let (run_dir, started) = if config.format == Format::Stdout {
                (None, timestamp::now())
            } else {
                store::prepare_out_dir(&config.out)?;
                let (dir, started) = store::create_run_dir(&config.out)?;
                (Some(dir), started)
            };
            Ok(Setup {
                run_dir,
                manifest: Manifest {
                    schema_version: checkpoint::STATE_SCHEMA_VERSION,
                    tool_version: env!("CARGO_PKG_VERSION").to_string(),
                    session_id: timestamp::compact(started),
                    base_url: config.base_url.clone(),
                    endpoints: config
                        .endpoints
                        .iter()
                        .map(|e| e.name.to_string())
                        .collect(),
                    format: config.format,
                    filters: config.filters.clone(),
                    sessions: Vec::new(),
                },
                endpoints: config.endpoints.clone(),
                base_url: config.base_url.clone(),
                format: config.format,
                filters: config.filters.clone(),
            })
        }
        Some(dir) => {
            let mut manifest = Manifest::load(dir)?;
            for session in manifest.sessions.iter_mut().filter(|s| s.ended.is_none()) {
                session.ended = Some("killed".to_string());
            }
            let endpoints = if config.endpoints_explicit {
                config.endpoints.clone()
            } else {
                plan::parse_endpoint_list(&manifest.endpoints.join(",")).map_err(|e| {
                    Error::BadFile {
                        path: dir.join(checkpoint::MANIFEST_NAME),
                        reason: format!("lists endpoints this version does not know: {e}"),
                    }
                })?
            };
            manifest.endpoints = endpoints.iter().map(|e| e.name.to_string()).collect();
            let base_url = if config.base_url_explicit {
                config.base_url.clone()
            } else {
                manifest.base_url.clone()
            };
            manifest.base_url = base_url.clone();
            if config.format_explicit && config.format != manifest.format {
                return Err(Error::Usage(format!(
                    "--format {}: the run in {} is written as {}; resume it without --format",
                    config.format.name(),
                    dir.display(),
                    manifest.format.name()
                )));
            }
            let format = manifest.format;
            let filters = manifest.filters.clone();
            filters.check(&endpoints)?;
            Ok(Setup {
                run_dir: Some(dir.clone()),
                manifest,
                endpoints,
                base_url,
                format,
                filters,
            })
        }
    }
}

/// Runs the main job. `Err` only when nothing useful could be started (the run folder
/// cannot be created or resumed); later fatal errors are logged, recorded in the
/// summary and reported through the exit code.
pub(crate) fn run(config: &RunConfig) -> Result<RunOutcome, Error> {
    let Setup {
        run_dir,
        mut manifest,
        endpoints: specs,
        base_url,
        format,
        filters,
    } = set_up(config)?;
    let dir = run_dir.as_deref();
    if let Some(dir) = dir {
        crate::logger::attach_file(&dir.join(LOG_FILE_NAME))?;
    }
    // Read every checkpoint before doing anything: a damaged one stops the run here.
    let checkpoints = match dir {
        Some(dir) => specs
            .iter()
            .map(|spec| checkpoint::load(dir, spec.name))
            .collect::<Result<Vec<_>, Error>>()?,
        None => specs.iter().map(|_| None).collect(),
    };
    let session_started = timestamp::now();
    manifest.sessions.push(Session {
        started_at: timestamp::rfc3339(session_started),
        finished_at: None,
        duration_seconds: None,
        ended: None,
    });
    if let Some(dir) = dir {
        manifest.save(dir)?;
    }
    let session_id = manifest.session_id.clone();
    let wall = Instant::now();
    info!(
        "run {session_id} session {}: {}, base URL {base_url}, endpoints {}",
        manifest.sessions.len(),
        dir.map_or_else(
            || "records to stdout".to_string(),
            |d| format!("folder {}", d.display())
        ),
        manifest.endpoints.join(",")
    );

    let clock = SystemClock::new();
    let mut fetcher = Fetcher {
        client: Client::new(ClientConfig {
            base_url: base_url.clone(),
            timeout: config.timeout,
            max_body_bytes: config.max_body_bytes,
        }),
        policy: config.retry,
        clock: &clock,
        limiter: RateLimiter::new(config.rate),
        contacted: false,
        requests: 0,
    };
    let mut syncer = dir.map(Syncer::start);
    let mut summaries: Vec<EndpointSummary> = specs
        .iter()
        .map(|spec| EndpointSummary {
            name: spec.name.to_string(),
            path: spec.path.to_string(),
            ..EndpointSummary::default()
        })
        .collect();
    let mut fatal = false;
    let mut interrupted = false;
    let mut pipe_closed = false;
    let mut stopped_early = None;
    for ((spec, summary), saved) in specs.iter().zip(summaries.iter_mut()).zip(checkpoints) {
        if let Some(cp) = saved
            .as_ref()
            .filter(|cp| cp.state == CheckpointState::Complete)
        {
            info!("{}: complete in an earlier session, skipped", spec.name);
            *summary = cp.summary.clone();
            continue;
        }
        let persist = match (dir, syncer.as_mut()) {
            (Some(dir), Some(syncer)) => Some(Persist {
                run_dir: dir,
                syncer,
            }),
            _ => None,
        };
        let end = ingest_endpoint(
            &mut fetcher,
            persist,
            format,
            &filters,
            spec,
            summary,
            saved,
        );
        match end {
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
            Ok(EndpointEnd::Interrupted) => {
                stopped_early = Some("interrupted by a signal (Ctrl-C or SIGTERM)".to_string());
                interrupted = true;
                break;
            }
            Err(e) if format == Format::Stdout && e.is_broken_pipe() => {
                // `| head`: the reader has what it wanted. End quietly.
                stopped_early = Some("standard output was closed by its reader".to_string());
                pipe_closed = true;
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
    if let Some(Err(e)) = syncer.map(Syncer::finish) {
        error!("stopping the run: {e}");
        stopped_early.get_or_insert(e.to_string());
        fatal = true;
    }

    let totals = Totals::of(&summaries);
    let (status, exit_code) = if pipe_closed {
        ("incomplete", EXIT_OK)
    } else if fatal {
        ("incomplete", EXIT_FATAL)
    } else if interrupted {
        ("interrupted", EXIT_INTERRUPTED)
    } else if totals.endpoints_complete < summaries.len() as u64 {
        ("incomplete", EXIT_INCOMPLETE)
    } else {
        ("complete", EXIT_OK)
    };
    let finished = timestamp::now();
    if let Some(session) = manifest.sessions.last_mut() {
        session.finished_at = Some(timestamp::rfc3339(finished));
        session.duration_seconds = Some(wall.elapsed().as_secs_f64());
        session.ended = Some(if fatal { "failed" } else { status }.to_string());
    }
    if let Some(Err(e)) = dir.map(|d| manifest.save(d)) {
        error!("{e}");
    }
    let first_start = manifest.sessions.first().map_or_else(
        || timestamp::rfc3339(session_started),
        |s| s.started_at.clone(),
    );
    let summary = Summary {
        schema_version: SUMMARY_SCHEMA_VERSION,
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        session_id: session_id.clone(),
        started_at: first_start,
        finished_at: timestamp::rfc3339(finished),
        duration_seconds: manifest
            .sessions
            .iter()
            .filter_map(|s| s.duration_seconds)
            .sum(),
        base_url,
        endpoints_planned: manifest.endpoints.clone(),
        format: format.name().to_string(),
        filters: filters.clone(),
        status: status.to_string(),
        stopped_early,
        exit_code,
        sessions: manifest.sessions.clone(),
        endpoints: summaries,
        totals,
    };
    let summary_json =
        serde_json::to_vec_pretty(&summary).expect("the summary has only serializable fields");
    let t = &summary.totals;
    let Some(run_dir) = run_dir else {
        info!(
            "run {status}: {} records streamed, {} duplicates skipped, {} requests",
            t.records_saved, t.duplicates_skipped, t.requests
        );
        return Ok(RunOutcome {
            run_dir: None,
            exit_code,
        });
    };
    let summary_path = run_dir.join(summary_file_name(&session_id));
    if let Err(e) = store::write_atomic(&summary_path, &summary_json) {
        error!("{e}");
        return Ok(RunOutcome {
            run_dir: Some(run_dir),
            exit_code: EXIT_FATAL,
        });
    }
    info!(
        "run {session_id} {status}: {} records saved, {} duplicates skipped, {} requests; summary {}",
        t.records_saved,
        t.duplicates_skipped,
        t.requests,
        summary_path.display()
    );
    if interrupted || exit_code == EXIT_INCOMPLETE {
        warn!(
            "{}: resume with: kalshi-ingest run --resume {}",
            if interrupted {
                "interrupted"
            } else {
                "incomplete"
            },
            run_dir.display()
        );
    }
    Ok(RunOutcome {
        run_dir: Some(run_dir),
        exit_code,
    })
}

/// Where an endpoint keeps its resume state (absent with `--stdout`).
struct Persist<'a> {
    run_dir: &'a Path,
    syncer: &'a mut Syncer,
}

/// The counters to store in a checkpoint: the live summary with the writer's counts.
fn snapshot(
    summary: &EndpointSummary,
    written: WrittenCounts,
    base: f64,
    started: Instant,
) -> EndpointSummary {
    let mut snap = summary.clone();
    snap.records_saved = written.records;
    snap.batches = written.batches;
    snap.bytes_written = written.bytes;
    snap.duration_seconds = base + started.elapsed().as_secs_f64();
    snap.status = EndpointStatus::Interrupted;
    snap.failure = None;
    snap
}

/// Fetches one endpoint from its checkpoint (or first page) to its last page, filling
/// `summary`. `Err` only for errors that must stop the whole run (the disk, a closed
/// stdout).
fn ingest_endpoint(
    fetcher: &mut Fetcher,
    mut persist: Option<Persist>,
    format: Format,
    filters: &Filters,
    spec: &EndpointSpec,
    summary: &mut EndpointSummary,
    saved: Option<Checkpoint>,
) -> Result<EndpointEnd, Error> {
    let started = Instant::now();
    let run_dir = persist.as_ref().map(|p| p.run_dir);
    let checkpoint_path = run_dir.map(|d| checkpoint::checkpoint_path(d, spec.name));
    let hash_log = run_dir.map(|d| checkpoint::hash_log_path(d, spec.name));
    let (already, mut dedup, resume) = match (saved, run_dir) {
        (Some(cp), Some(dir)) => {
            info!(
                "{}: resuming after {} records at page {} (skipping {} of its records)",
                spec.name, cp.records, cp.resume.page_number, cp.resume.skip
            );
            let prefixes = checkpoint::load_hash_log(dir, spec.name, cp.records)?;
            *summary = cp.summary;
            let already = WrittenCounts {
                records: cp.records,
                batches: cp.batches,
                bytes: summary.bytes_written,
            };
            (already, DedupIndex::from_prefixes(prefixes), cp.resume)
        }
        _ => {
            info!(
                "{}: starting ({}{})",
                spec.name,
                fetcher.client.base_url(),
                spec.path
            );
            let fresh = ResumePoint {
                cursor: None,
                page_number: 1,
                skip: 0,
            };
            (WrittenCounts::default(), DedupIndex::default(), fresh)
        }
    };
    summary.status = EndpointStatus::Incomplete;
    summary.failure = None;
    crate::progress::endpoint(spec.name, already.records);
    let base_duration = summary.duration_seconds;
    let mut writer = BatchWriter::open(
        format,
        run_dir,
        spec.name,
        spec.path,
        hash_log.as_deref(),
        already,
    )?;
    let mut last_checkpoint = snapshot(summary, already, base_duration, started);
    let sync_handle = persist.as_ref().map(|p| p.syncer.handle());
    let mut seen_cursors: HashSet<String> = resume.cursor.iter().cloned().collect();
    let mut cursor = resume.cursor;
    let mut page_number = resume.page_number;
    let mut skip = resume.skip;
    let mut failure: Option<Stopped> = None;
    let mut end = EndpointEnd::Continue;
    let cap = filters.max_records.unwrap_or(u64::MAX);
    let mut sampled = writer.counts_after_commit().records >= cap;

    while !sampled {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(limit) = spec.page_size {
            query.push(("limit", limit.to_string()));
        }
        query.extend(filters.query_for(spec));
        if let Some(c) = &cursor {
            query.push(("cursor", c.clone()));
        }
        let url = fetcher.client.url_for(spec.path, &query);
        let page = match fetcher.fetch_page(spec, page_number, &url, summary) {
            Ok(page) => page,
            Err(PageError::Interrupted) => {
                end = EndpointEnd::Interrupted;
                break;
            }
            Err(PageError::GaveUp {
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
                failure = Some(Stopped {
                    url,
                    reason,
                    page: page_number,
                    resume_cursor: cursor.clone(),
                });
                break;
            }
        };
        summary.bytes_received += page.bytes;
        for (index, record) in page.records.into_iter().enumerate() {
            if (index as u64) < skip {
                continue;
            }
            if writer.counts_after_commit().records >= cap {
                sampled = true;
                break;
            }
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
            if !writer.push(record) {
                continue;
            }
            // A full batch: commit it, and checkpoint just after this record once the
            // batch is committed (the syncer makes it durable first).
            let counts = writer.counts_after_commit();
            last_checkpoint = snapshot(summary, counts, base_duration, started);
            let after_commit = match (&sync_handle, &checkpoint_path) {
                (Some(handle), Some(path)) => {
                    let handle = handle.clone();
                    let path = path.clone();
                    let mut checkpoint = Checkpoint {
                        schema_version: checkpoint::STATE_SCHEMA_VERSION,
                        endpoint: spec.name.to_string(),
                        state: CheckpointState::InProgress,
                        batches: counts.batches,
                        records: counts.records,
                        resume: ResumePoint {
                            cursor: cursor.clone(),
                            page_number,
                            skip: index as u64 + 1,
                        },
                        summary: last_checkpoint.clone(),
                    };
                    let after: AfterCommit = Box::new(move |committed: WrittenCounts| {
                        checkpoint.summary.bytes_written = committed.bytes;
                        handle.submit(path, checkpoint);
                    });
                    Some(after)
                }
                _ => None,
            };
            writer.commit(after_commit)?;
        }
        skip = 0;
        summary.pages += 1;
        if writer.counts_after_commit().records >= cap {
            sampled = true;
        }
        crate::progress::page(
            summary.pages,
            writer.counts_after_commit().records,
            summary.duplicates_skipped,
        );
        if spec.page_size.is_none() || sampled {
            break;
        }
        match page.cursor {
            None => break,
            Some(next) => {
                if !seen_cursors.insert(next.clone()) {
                    let shown: String = next.chars().take(80).collect();
                    failure = Some(Stopped {
                        url,
                        reason: format!(
                            "the server returned cursor {shown:?} a second time; stopping \
                             instead of looping (page {} would repeat an earlier page)",
                            page_number + 1
                        ),
                        page: page_number + 1,
                        resume_cursor: Some(next),
                    });
                    break;
                }
                cursor = Some(next);
                page_number += 1;
            }
        }
    }

    if let EndpointEnd::Interrupted = end {
        // Keep the batch layout of an uninterrupted run: records not yet in a
        // committed batch are fetched again on resume.
        writer.discard_pending();
        let committed = writer.drain()?;
        if let Some(p) = persist.as_mut() {
            p.syncer.barrier()?;
        }
        *summary = last_checkpoint;
        summary.records_saved = committed.records;
        summary.batches = committed.batches;
        summary.bytes_written = committed.bytes;
        summary.duration_seconds = base_duration + started.elapsed().as_secs_f64();
        warn!(
            "{}: interrupted after {} records; the checkpoint is on disk",
            spec.name, summary.records_saved
        );
        return Ok(end);
    }

    let written = writer.finish()?;
    summary.records_saved = written.records;
    summary.batches = written.batches;
    summary.bytes_written = written.bytes;
    summary.duration_seconds = base_duration + started.elapsed().as_secs_f64();
    summary.records_per_second = if summary.duration_seconds > 0.0 {
        written.records as f64 / summary.duration_seconds
    } else {
        0.0
    };
    let (state, resume) = match failure {
        None if sampled => {
            summary.status = EndpointStatus::Sampled;
            info!(
                "{}: sampled: stopped after {} records (--max-records)",
                spec.name, written.records
            );
            (CheckpointState::Complete, ResumePoint::default())
        }
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
            (CheckpointState::Complete, ResumePoint::default())
        }
        Some(stopped) => {
            summary.status = EndpointStatus::Incomplete;
            error!(
                "{}: incomplete after {} records: GET {}: {}",
                spec.name, written.records, stopped.url, stopped.reason
            );
            summary.failure = Some(FailurePoint {
                page: stopped.page,
                records_saved: written.records,
                last_good_cursor: cursor,
                url: stopped.url,
                error: stopped.reason,
            });
            let resume = ResumePoint {
                cursor: stopped.resume_cursor,
                page_number: stopped.page,
                skip: 0,
            };
            (CheckpointState::Incomplete, resume)
        }
    };
    if let (Some(p), Some(path)) = (persist.as_mut(), checkpoint_path) {
        p.syncer.submit(
            path,
            Checkpoint {
                schema_version: checkpoint::STATE_SCHEMA_VERSION,
                endpoint: spec.name.to_string(),
                state,
                batches: written.batches,
                records: written.records,
                resume,
                summary: summary.clone(),
            },
        )?;
        p.syncer.barrier()?;
    }
    debug_assert_eq!(dedup.len() as u64, written.records);
    Ok(end)
}
