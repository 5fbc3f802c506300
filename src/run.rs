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

use std::path::{Path, PathBuf};
use std::time::Instant;

use log::{error, info, warn};

use crate::checkpoint::{
    self, Checkpoint, CheckpointState, Manifest, ResumePoint, Session, Syncer,
};
use crate::cli::RunConfig;
use crate::client::Failure;
use crate::client::{Client, ClientConfig};
use crate::discover;
use crate::error::{EXIT_FATAL, EXIT_INCOMPLETE, EXIT_OK, Error};
use crate::fetch::{Fetcher, PageError, ReadAhead, Shape, describe_failure};
use crate::ids;
use crate::pace::{RateLimiter, SystemClock};
use crate::pager::{Advance, DetailPager, ListPager, Next, Pager};
use crate::plan::{self, EndpointSpec, Filters, PerIdRecord};
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
    /// Where checkpoints, hash logs and id logs live: `<run>/checkpoints`, or a
    /// temporary folder for `--stdout` runs with detail endpoints.
    state_dir: Option<PathBuf>,
    /// The state folder is temporary (removed when the run ends).
    temp_state: bool,
    manifest: Manifest,
    endpoints: Vec<EndpointSpec>,
    base_url: String,
    format: Format,
    filters: Filters,
}

fn set_up(config: &RunConfig) -> Result<Setup, Error> {
    match &config.resume {
        None => {
            let mut endpoints = config.endpoints.clone();
            let discovery_path = config.discovery_path();
            let discovery = if config.discovery.is_some() || discovery_path.is_file() {
                let discovery = discover::load(&discovery_path)?;
                if discovery.base_url == config.base_url {
                    Some(discovery)
                } else if config.discovery.is_some() {
                    warn!(
                        "{} describes {}, not {}; using it as asked (--discovery)",
                        discovery_path.display(),
                        discovery.base_url,
                        config.base_url
                    );
                    Some(discovery)
                } else {
                    warn!(
                        "{} describes {}, not {}; ignored (pass --discovery to use it anyway)",
                        discovery_path.display(),
                        discovery.base_url,
                        config.base_url
                    );
                    None
                }
            } else {
                None
            };
            let discovery_used = discovery.is_some();
            let changes = match &discovery {
                Some(discovery) => {
                    info!("plan adjusted with {}", discovery_path.display());
                    discover::apply(
                        discovery,
                        &discovery_path,
                        &mut endpoints,
                        config.endpoints_explicit,
                    )
                }
                None => discover::PlanChanges::default(),
            };
            if endpoints.is_empty() {
                return Err(Error::Usage(format!(
                    "{}: the server serves none of the planned endpoints",
                    discovery_path.display()
                )));
            }
            // With --stdout there is no run folder; otherwise a new one, never reused.
            let (run_dir, started) = if config.format == Format::Stdout {
                (None, timestamp::now())
            } else {
                store::prepare_out_dir(&config.out)?;
                let (dir, started) = store::create_run_dir(&config.out)?;
                (Some(dir), started)
            };
            let needs_ids = endpoints.iter().any(|e| e.detail.is_some());
            let (state_dir, temp_state) = match &run_dir {
                Some(dir) => (Some(dir.join(checkpoint::CHECKPOINT_DIR)), false),
                None if needs_ids => {
                    let temp = std::env::temp_dir().join(format!(
                        "kalshi-ingest-{}-{}",
                        std::process::id(),
                        timestamp::compact(started)
                    ));
                    std::fs::create_dir_all(&temp)
                        .map_err(|e| Error::io("create temporary folder", &temp, e))?;
                    (Some(temp), true)
                }
                None => (None, false),
            };
            if let (Some(tickers), Some(state)) = (&config.tickers, &state_dir) {
                let count = ids::import_tickers(tickers, &state.join(ids::TICKERS_LOG))?;
                info!("--tickers {}: {count} ids", tickers.display());
                if count == 0 {
                    warn!("--tickers {}: no ids in it", tickers.display());
                }
            }
            Ok(Setup {
                run_dir,
                state_dir,
                temp_state,
                manifest: Manifest {
                    schema_version: checkpoint::STATE_SCHEMA_VERSION,
                    tool_version: env!("CARGO_PKG_VERSION").to_string(),
                    session_id: timestamp::compact(started),
                    base_url: config.base_url.clone(),
                    endpoints: endpoints.iter().map(|e| e.name.to_string()).collect(),
                    format: config.format,
                    filters: config.filters.clone(),
                    sessions: Vec::new(),
                    tickers_from: config.tickers.as_ref().map(|t| t.display().to_string()),
                    discovery_file: discovery_used.then(|| discovery_path.display().to_string()),
                    page_sizes: changes.page_sizes,
                    batch_unavailable: changes.batch_unavailable,
                    left_out: changes.left_out,
                },
                endpoints,
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
            let mut endpoints = if config.endpoints_explicit {
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
            discover::apply_page_sizes(&mut endpoints, &manifest.page_sizes);
            Ok(Setup {
                run_dir: Some(dir.clone()),
                state_dir: Some(dir.join(checkpoint::CHECKPOINT_DIR)),
                temp_state: false,
                manifest,
                endpoints,
                base_url,
                format,
                filters,
            })
        }
    }
}

/// `discover`: probes every endpoint once (normal-mode retries only, no recovery
/// ladder) and writes the discovery file; returns its path.
pub(crate) fn discover(config: &RunConfig) -> Result<PathBuf, Error> {
    let clock = SystemClock::new();
    let mut fetcher = Fetcher {
        client: Client::new(ClientConfig {
            base_url: config.base_url.clone(),
            timeout: config.timeout,
            max_body_bytes: config.max_body_bytes,
        }),
        policy: crate::retry::RetryPolicy {
            recovery_steps: 0,
            ..config.retry
        },
        clock: &clock,
        limiter: RateLimiter::new(config.rate),
        contacted: false,
        requests: 0,
        hasher: Default::default(),
        read_ahead: Default::default(),
    };
    let discovery = discover::discover(&mut fetcher)?;
    let path = discover::write(&discovery, &config.discovery_path())?;
    let reachable = discovery.endpoints.iter().filter(|e| e.reachable).count();
    info!(
        "discover: {reachable} of {} endpoints answered; {} requests; wrote {}",
        discovery.endpoints.len(),
        fetcher.requests,
        path.display()
    );
    Ok(path)
}

/// Runs the main job. `Err` only when nothing useful could be started (the run folder
/// cannot be created or resumed); later fatal errors are logged, recorded in the
/// summary and reported through the exit code.
pub(crate) fn run(config: &RunConfig) -> Result<RunOutcome, Error> {
    let Setup {
        run_dir,
        state_dir,
        temp_state,
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
        hasher: Default::default(),
        read_ahead: ReadAhead::new(filters.max_records.is_none()),
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
    let planned: Vec<&str> = specs.iter().map(|s| s.name).collect();
    for (index, (spec, saved)) in specs.iter().zip(checkpoints).enumerate() {
        if let Some(cp) = saved
            .as_ref()
            .filter(|cp| cp.state == CheckpointState::Complete)
        {
            info!("{}: complete in an earlier session, skipped", spec.name);
            summaries[index] = cp.summary.clone();
            continue;
        }
        let inputs = match endpoint_inputs(spec, &manifest, state_dir.as_deref(), format, &planned)
        {
            Ok(inputs) => inputs,
            Err(e) => {
                error!("{}: {e}", spec.name);
                stopped_early = Some(e.to_string());
                fatal = true;
                break;
            }
        };
        // A detail endpoint waits for its list endpoint to be whole in this run.
        if let Some(source) = spec
            .detail
            .filter(|_| manifest.tickers_from.is_none())
            .and_then(|d| summaries.iter().find(|s| s.name == d.ids_from))
            && !matches!(
                source.status,
                EndpointStatus::Complete | EndpointStatus::Sampled
            )
        {
            warn!(
                "{}: not started: its ids come from {}, which is {:?}; resume the run to \
                 finish both",
                spec.name, source.name, source.status
            );
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
            &filters,
            spec,
            &inputs,
            &mut summaries[index],
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
                match dir.filter(|d| !d.is_dir()) {
                    Some(gone) => error!("{}", folder_gone_message(gone)),
                    None => error!("{}: stopping the run: {e}", spec.name),
                }
                stopped_early = Some(e.to_string());
                fatal = true;
                break;
            }
        }
    }
    // The run folder deleted or moved away while the run wrote into it: nothing more
    // can be saved there, and nothing is re-created in its place.
    let folder_gone = dir.is_some_and(|d| !d.is_dir());
    match syncer.map(Syncer::finish) {
        Some(Err(_)) if folder_gone => fatal = true,
        Some(Err(e)) => {
            error!("stopping the run: {e}");
            stopped_early.get_or_insert(e.to_string());
            fatal = true;
        }
        _ => {}
    }
    if folder_gone {
        if !fatal && let Some(gone) = dir {
            error!("{}", folder_gone_message(gone));
        }
        // (A temporary state folder exists only for --stdout runs, which have no run
        // folder to lose.)
        return Ok(RunOutcome {
            run_dir,
            exit_code: EXIT_FATAL,
        });
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
        endpoints_left_out: manifest.left_out.clone(),
        discovery_file: manifest.discovery_file.clone(),
        tickers_from: manifest.tickers_from.clone(),
        format: format.name().to_string(),
        filters: filters.clone(),
        status: status.to_string(),
        stopped_early,
        exit_code,
        sessions: manifest.sessions.clone(),
        endpoints: summaries,
        totals,
    };
    if temp_state && let Some(temp) = &state_dir {
        let _ = std::fs::remove_dir_all(temp);
    }
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

/// The id logs an endpoint writes or reads.
fn endpoint_inputs(
    spec: &EndpointSpec,
    manifest: &Manifest,
    state_dir: Option<&Path>,
    format: Format,
    planned: &[&str],
) -> Result<EndpointSetup, Error> {
    let Some(state_dir) = state_dir else {
        return Ok(EndpointSetup {
            format,
            ..EndpointSetup::default()
        });
    };
    let feeds = plan::CATALOGUE
        .iter()
        .filter_map(|s| s.detail)
        .any(|d| d.ids_from == spec.name);
    // Stdout runs keep id logs only when a detail endpoint will read them.
    let wanted = format != Format::Stdout
        || plan::CATALOGUE.iter().any(|s| {
            planned.contains(&s.name) && s.detail.is_some_and(|d| d.ids_from == spec.name)
        });
    let id_log = (feeds && wanted).then(|| ids::id_log_path(state_dir, spec.name));
    let Some(detail) = spec.detail else {
        return Ok(EndpointSetup {
            format,
            id_log,
            ..EndpointSetup::default()
        });
    };
    let ids = match &manifest.tickers_from {
        Some(from) => IdSource {
            path: state_dir.join(ids::TICKERS_LOG),
            label: format!("--tickers {from}"),
        },
        None => IdSource {
            path: ids::id_log_path(state_dir, detail.ids_from),
            label: detail.ids_from.to_string(),
        },
    };
    if !ids.path.is_file() && !planned.contains(&detail.ids_from) {
        return Err(Error::Usage(format!(
            "{} needs {}, and this run has none stored: add {} to --endpoints",
            spec.name, detail.id_kind, detail.ids_from
        )));
    }
    Ok(EndpointSetup {
        format,
        id_log,
        ids: Some(ids),
        batch_usable: !manifest.batch_unavailable.iter().any(|n| n == spec.name),
    })
}

/// The one line said when the run folder disappears during a run.
fn folder_gone_message(dir: &Path) -> String {
    format!(
        "the run folder {} is gone (deleted or moved while the run was writing); \
         nothing more can be saved there and nothing is re-created. If it was moved, \
         continue it from its new place with --resume; else start a new run",
        dir.display()
    )
}

/// How an endpoint stops when a request of page `page` (fetched with
/// `resume_cursor`) was given up: the effect on the run, and the failure point.
fn give_up_at(
    give_up: GiveUp,
    fetcher: &Fetcher,
    failure: &Failure,
    url: String,
    page: u64,
    resume_cursor: Option<String>,
) -> (EndpointEnd, Stopped) {
    let reason = describe_failure(failure);
    let end = end_for(give_up, fetcher, &reason);
    let stopped = Stopped {
        url,
        reason,
        page,
        resume_cursor,
    };
    (end, stopped)
}

/// How an endpoint's give-up affects the rest of the run.
fn end_for(give_up: GiveUp, fetcher: &Fetcher, reason: &str) -> EndpointEnd {
    match give_up {
        GiveUp::Permanent => EndpointEnd::Continue,
        GiveUp::RecoveryFailed => EndpointEnd::HostDown,
        GiveUp::Unreachable => EndpointEnd::Unreachable(format!(
            "cannot reach {}: {reason}; check --base-url, DNS and the network",
            fetcher.client.host()
        )),
    }
}

/// Fetches the document recorded with an archive endpoint (`/historical/cutoff`)
/// into its summary. A permanent failure is logged and the endpoint goes on without
/// it; `Err((None, _))` is an interruption, `Err((Some(give_up), failure))` a
/// failure that stops the endpoint like a page's.
fn fetch_context(
    fetcher: &mut Fetcher,
    spec: &EndpointSpec,
    url: &str,
    summary: &mut EndpointSummary,
) -> Result<(), (Option<GiveUp>, Failure)> {
    let shape = Shape::Single {
        record: PerIdRecord::Body,
        id_field: "",
        id: "",
    };
    match fetcher.fetch_page(spec.name, &shape, 0, url, summary) {
        Ok(page) => {
            summary.bytes_received += page.bytes;
            let cutoff = page
                .records
                .first()
                .and_then(|r| serde_json::from_slice(r.data.as_bytes()).ok());
            info!(
                "{}: historical cutoff {}",
                spec.name,
                cutoff.as_ref().map_or_else(
                    || "unreadable".to_string(),
                    |v: &serde_json::Value| v.to_string()
                )
            );
            summary.historical_cutoff = cutoff;
            Ok(())
        }
        Err(PageError::Interrupted) => Err((
            None,
            Failure::new(crate::client::FailureClass::Fatal, "interrupted"),
        )),
        Err(PageError::GaveUp {
            failure,
            give_up: GiveUp::Permanent,
        }) => {
            warn!(
                "{}: GET {url}: {}; going on without the cutoff (the summary's \
                 historical_cutoff stays empty)",
                spec.name,
                describe_failure(&failure)
            );
            Ok(())
        }
        Err(PageError::GaveUp { failure, give_up }) => Err((Some(give_up), failure)),
    }
}

/// How an endpoint's output is written and where its ids come from and go to.
#[derive(Default)]
struct EndpointSetup {
    format: Format,
    /// List endpoints that feed detail endpoints: the id log to append to.
    id_log: Option<PathBuf>,
    /// Detail endpoints: the id log (or `--tickers` copy) to read.
    ids: Option<IdSource>,
    /// Detail endpoints with a batch endpoint: whether to try it (discovery may have
    /// found it missing).
    batch_usable: bool,
}

/// An id log a detail endpoint reads, and how the summary names it.
struct IdSource {
    path: PathBuf,
    label: String,
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
    filters: &Filters,
    spec: &EndpointSpec,
    inputs: &EndpointSetup,
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
    let format = inputs.format;
    let mut writer = BatchWriter::open(
        format,
        run_dir,
        spec.name,
        spec.path,
        hash_log.as_deref(),
        inputs.id_log.as_deref(),
        already,
    )?;
    let mut last_checkpoint = snapshot(summary, already, base_duration, started);
    let sync_handle = persist.as_ref().map(|p| p.syncer.handle());
    let mut pager = match (&spec.detail, &inputs.ids) {
        (None, _) => Pager::List(ListPager::new(resume.cursor.clone())),
        (Some(detail), Some(ids)) => {
            summary.ids_from = Some(ids.label.clone());
            let batch_usable = inputs.batch_usable && summary.fallback.is_none();
            Pager::Detail(Box::new(DetailPager::open(
                *detail,
                &ids.path,
                resume.page_number,
                batch_usable,
            )?))
        }
        (Some(_), None) => {
            return Err(Error::Usage(format!(
                "internal error: {} has no id source",
                spec.name
            )));
        }
    };
    let mut page_number = resume.page_number;
    let mut skip = resume.skip;
    let mut failure: Option<Stopped> = None;
    let mut end = EndpointEnd::Continue;
    let cap = filters.max_records.unwrap_or(u64::MAX);
    let mut sampled = writer.counts_after_commit().records >= cap;
    let filter_query = filters.query_for(spec);

    let mut skip_pages = false;
    if let Some(context_path) = spec.context_path.filter(|_| !sampled)
        && summary.historical_cutoff.is_none()
    {
        let url = fetcher.client.url_for(context_path, &[]);
        if let Err((give_up, f)) = fetch_context(fetcher, spec, &url, summary) {
            match give_up {
                None => {
                    end = EndpointEnd::Interrupted;
                    skip_pages = true;
                }
                Some(give_up) => {
                    let (stop_end, stopped) = give_up_at(
                        give_up,
                        fetcher,
                        &f,
                        url,
                        page_number,
                        resume.cursor.clone(),
                    );
                    end = stop_end;
                    failure = Some(stopped);
                    skip_pages = true;
                }
            }
        }
    }

    while !sampled && !skip_pages {
        let cursor = pager.cursor();
        let (page, url) = match pager.fetch(fetcher, spec, &filter_query, page_number, summary)? {
            Next::Page { page, url } => (page, url),
            Next::End => break,
            Next::Interrupted => {
                end = EndpointEnd::Interrupted;
                break;
            }
            Next::GaveUp {
                url,
                failure: f,
                give_up,
            } => {
                let (stop_end, stopped) =
                    give_up_at(give_up, fetcher, &f, url, page_number, cursor);
                end = stop_end;
                failure = Some(stopped);
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
            if let Pager::Detail(detail) = &pager {
                detail.report(summary);
            }
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
        if sampled {
            break;
        }
        match pager.advance(spec, page.cursor) {
            Advance::End => break,
            Advance::Next => page_number += 1,
            Advance::CursorLoop { repeated } => {
                let shown: String = repeated.chars().take(80).collect();
                failure = Some(Stopped {
                    url,
                    reason: format!(
                        "the server returned cursor {shown:?} a second time; stopping \
                         instead of looping (page {} would repeat an earlier page)",
                        page_number + 1
                    ),
                    page: page_number + 1,
                    resume_cursor: Some(repeated),
                });
                break;
            }
        }
    }
    if let Pager::Detail(detail) = &pager {
        detail.report(summary);
    }
    fetcher.drop_read_ahead(summary);
    let cursor = pager.cursor();

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
    if spec.detail.is_none() {
        let received = written.records + summary.duplicates_skipped;
        let pages = spec
            .page_size
            .map_or(1, |n| received.div_ceil(u64::from(n)).max(1));
        summary.requests_minimum = pages + u64::from(spec.context_path.is_some());
    }
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
