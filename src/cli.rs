//! The command line: the help text, parsing into raw [`Args`] (no I/O), and validation
//! into a [`Command`] with its configuration.
//!
//! Kept apart from `main.rs` (the house style puts these in main) because the flag set
//! is large enough that main would no longer read at a glance.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::Error;
use crate::plan::{self, EndpointSpec, Filters};
use crate::retry::RetryPolicy;
use crate::store::Format;

/// The production API, used when neither `--base-url` nor `KALSHI_BASE_URL` is set.
pub(crate) const DEFAULT_BASE_URL: &str = "https://api.elections.kalshi.com/trade-api/v2";

pub(crate) const HELP: &str = "\
kalshi-ingest: download Kalshi's public market data into plain files

USAGE:
    kalshi-ingest [run] [OPTIONS]
    kalshi-ingest run --resume DIR [OPTIONS]
    kalshi-ingest discover [OPTIONS]
    kalshi-ingest verify DIR

    run      Runs each planned endpoint to completion, one at a time, and writes every
             record as one JSON file inside a new run folder
             kalshi_atomic_ingestion_YYYYMMDD_HHMMSS/ (the default command).
    discover Probes every public market-data endpoint once (a sample id from each
             list feeds the detail probes) and writes discovered_endpoints.json
             (into --out, or to --discovery FILE): reachable or not, HTTP status,
             paginated or not, array key, id field, page size, latency. `run` reads
             it when present to leave out endpoints the server does not serve and
             to use the batch order-book endpoint only where it exists.
    verify   Re-hashes every record of a run folder and checks the envelopes, batch
             folders, record numbering and the summary; prints each problem as
             `path: reason` on stdout.

OPTIONS:
    --base-url URL        API base URL (http:// or https://; a trailing slash is
                          ignored) [default: https://api.elections.kalshi.com/trade-api/v2]
    --out DIR             Folder in which the run folder is created; created if
                          missing [default: .]
    --endpoints LIST      Comma-separated endpoints to fetch. Lists: series, events,
                          markets, historical_markets, trades, historical_trades.
                          Details (one or 100 ids a request; their ids come from
                          the lists of the same run, or from a file): orderbooks,
                          market_details, event_details, series_details.
                          `all` = every one
                          [default: series,events,markets,historical_markets]
    --tickers FILE        Ids for the detail endpoints, one a line (- = stdin)
                          instead of the ids the list endpoints store; blank lines
                          and # comments are skipped. Copied into the run folder,
                          so a resume reads the same ids
    --discovery FILE      The discovery file to read (run) or write (discover)
                          [default: <out>/discovered_endpoints.json, read if it
                          exists]
    --status STATUS       Only markets/events with this API status filter: unopened,
                          open, paused, closed or settled (events: open, closed,
                          settled)
    --series-ticker T     Only markets and events of this series
    --event-ticker T      Only markets of this event
    --since TIME          Only records updated since TIME (min_updated_ts): Unix
                          seconds, RFC 3339 (2026-11-01T00:00:00Z) or an age (24h).
                          The API refuses it on markets together with --status,
                          --series-ticker or --event-ticker, and so does this tool
    --max-records N       Sample: stop each endpoint after N records (its status
                          is then `sampled`, not `complete`)
    --format FORMAT       files: one JSON file per record; jsonl: one JSON Lines file
                          per batch (batch_NNNN.jsonl), same envelopes [default: files]
    --stdout              Stream the envelopes as JSON Lines on stdout instead of
                          writing files (no run folder; logs stay on stderr). A
                          reader that closes the pipe ends the run quietly, exit 0
    --resume DIR          Continue the interrupted or incomplete run in DIR: complete
                          endpoints are skipped, the others continue from their
                          checkpoint. Its base URL and endpoints are reused unless
                          --base-url or --endpoints is given
    --timeout DURATION    Longest wait to connect or for any read before a request
                          counts as stalled, e.g. 60s, 500ms, 2m [default: 60s]
    --max-body-mb N       Largest response body accepted, in MiB [default: 256]
    --rate R              Most requests per second (0 = no pacing); halved on each
                          HTTP 429, restored after successes [default: 10]

RETRY (DURATION: 500ms, 60s, 2m, 1h):
    --tries N             Tries per request in normal mode [default: 5]
    --backoff-base DURATION
                          First wait between normal-mode tries; doubles each
                          try, with jitter [default: 1s]
    --backoff-cap DURATION
                          Longest normal-mode wait [default: 30s]
    --recovery-step DURATION
                          Extended recovery mode waits 1, 2, ... times this before
                          each recovery try [default: 60s]
    --recovery-steps N    Recovery tries before an endpoint is given up; the
                          defaults make a 55-minute ladder [default: 10]
    --retry-after-cap DURATION
                          Longest Retry-After honoured on a 429 [default: 120s]
    --first-contact-budget DURATION
                          Until the first successful response of a run, a host
                          that does not resolve or refuses connections is retried
                          this long (at most --tries times), then the run stops
                          with status 2 [default: 60s]
    --progress-interval DURATION
                          When stderr is not a terminal, print a progress line this
                          often (0 = never); on a terminal a live status line is
                          shown instead [default: 10s]
    -v, --verbose         More log detail on stderr: -v info, -vv debug, -vvv trace
    -q, --quiet           Only errors on stderr
    -h, --help            Print this help
    -V, --version         Print the version; with --verbose also the git commit,
                          target triple and TLS backend

ENVIRONMENT:
    KALSHI_BASE_URL       Base URL when --base-url is not given
    RUST_LOG              Overrides the stderr log filter (e.g. RUST_LOG=debug)

OUTPUT:
    <out>/kalshi_atomic_ingestion_YYYYMMDD_HHMMSS/
        atomic_ingestion.log                        every log line, timestamped
        atomic_session_summary_YYYYMMDD_HHMMSS.json counts and status per endpoint
        <endpoint>/batch_NNNN/NNNNNNN_<id>.json     one record per file, 1,000 a folder
    Folders ending in .partial are being written: readers must ignore them.
    stdout carries nothing but the run folder's path, printed at the end.
    Logs and errors go to stderr.

EXIT STATUS:
    0    every planned endpoint is complete (verify: no problem found)
    1    the run finished and wrote its summary, but an endpoint is incomplete
         (verify: a problem was found)
    2    usage or configuration error, or a fatal error (the run folder cannot be
         created, a disk write failed, the host is unreachable from the start, a
         damaged checkpoint)
    130  interrupted by Ctrl-C or SIGTERM; the summary says `interrupted` and
         `kalshi-ingest run --resume DIR` continues the run (a second Ctrl-C exits
         at once, equally safely)
";

/// Flags exactly as given, before validation.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Args {
    pub(crate) help: bool,
    pub(crate) version: bool,
    pub(crate) command: Option<String>,
    /// Positional arguments after the command.
    pub(crate) operands: Vec<PathBuf>,
    pub(crate) resume: Option<PathBuf>,
    pub(crate) format: Option<String>,
    pub(crate) stdout: bool,
    pub(crate) progress_interval: Option<String>,
    pub(crate) status: Option<String>,
    pub(crate) series_ticker: Option<String>,
    pub(crate) event_ticker: Option<String>,
    pub(crate) since: Option<String>,
    pub(crate) max_records: Option<String>,
    pub(crate) base_url: Option<String>,
    pub(crate) out: Option<PathBuf>,
    pub(crate) endpoints: Option<String>,
    pub(crate) tickers: Option<PathBuf>,
    pub(crate) discovery: Option<PathBuf>,
    pub(crate) timeout: Option<String>,
    pub(crate) max_body_mb: Option<String>,
    pub(crate) rate: Option<String>,
    pub(crate) tries: Option<String>,
    pub(crate) backoff_base: Option<String>,
    pub(crate) backoff_cap: Option<String>,
    pub(crate) recovery_step: Option<String>,
    pub(crate) recovery_steps: Option<String>,
    pub(crate) retry_after_cap: Option<String>,
    pub(crate) first_contact_budget: Option<String>,
    pub(crate) verbose: u8,
    pub(crate) quiet: bool,
}

/// What to do, fully validated.
#[derive(Debug)]
pub(crate) enum Command {
    Help,
    /// `--version`; with `--verbose` also the commit, target and TLS backend.
    Version {
        verbose: bool,
    },
    Run(Box<RunConfig>),
    /// `discover`: probe the endpoints and write the discovery file.
    Discover(Box<RunConfig>),
    Verify(PathBuf),
}

/// Everything a run needs to know.
#[derive(Debug, Clone)]
pub(crate) struct RunConfig {
    pub(crate) base_url: String,
    pub(crate) out: PathBuf,
    pub(crate) endpoints: Vec<EndpointSpec>,
    /// Whether `--base-url`/`KALSHI_BASE_URL` and `--endpoints` were given (a resumed
    /// run otherwise keeps its own).
    pub(crate) base_url_explicit: bool,
    pub(crate) endpoints_explicit: bool,
    /// The run folder to continue.
    pub(crate) resume: Option<PathBuf>,
    /// Files, JSON Lines batches, or stdout.
    pub(crate) format: Format,
    /// Whether `--format` was given (a resumed run otherwise keeps its own).
    pub(crate) format_explicit: bool,
    pub(crate) timeout: Duration,
    pub(crate) max_body_bytes: u64,
    /// Requests per second; 0 = no pacing.
    pub(crate) rate: f64,
    pub(crate) retry: RetryPolicy,
    /// API filters and the sampling cap.
    pub(crate) filters: Filters,
    /// How often a progress line is printed when stderr is not a terminal.
    pub(crate) progress_interval: Duration,
    /// -1 quiet, 0 default, 1.. more verbose.
    pub(crate) verbosity: i8,
    /// `--tickers`: ids for the detail endpoints (`-` = stdin).
    pub(crate) tickers: Option<PathBuf>,
    /// `--discovery`: the discovery file (read by run, written by discover). `None`:
    /// the default location in `out`.
    pub(crate) discovery: Option<PathBuf>,
}

/// The discovery file's name in `--out` when `--discovery` is not given.
pub(crate) const DISCOVERY_FILE_NAME: &str = "discovered_endpoints.json";

impl RunConfig {
    /// Where the discovery file is read from or written to.
    pub(crate) fn discovery_path(&self) -> PathBuf {
        self.discovery
            .clone()
            .unwrap_or_else(|| self.out.join(DISCOVERY_FILE_NAME))
    }
}

/// Parses the arguments (without the program name). No I/O.
pub(crate) fn parse_args(raw: Vec<OsString>) -> Result<Args, Error> {
    let mut p = pico_args::Arguments::from_vec(raw);
    let mut args = Args {
        help: p.contains(["-h", "--help"]),
        version: p.contains(["-V", "--version"]),
        ..Args::default()
    };
    if args.help {
        return Ok(args);
    }
    if args.version {
        args.verbose = u8::from(p.contains(["-v", "--verbose"]));
        return Ok(args);
    }
    let bad = |e: pico_args::Error| Error::Usage(describe_pico_error(e));
    args.base_url = p.opt_value_from_str("--base-url").map_err(bad)?;
    args.out = p
        .opt_value_from_os_str("--out", |s| Ok::<_, String>(PathBuf::from(s)))
        .map_err(bad)?;
    args.endpoints = p.opt_value_from_str("--endpoints").map_err(bad)?;
    args.tickers = p
        .opt_value_from_os_str("--tickers", |s| Ok::<_, String>(PathBuf::from(s)))
        .map_err(bad)?;
    args.discovery = p
        .opt_value_from_os_str("--discovery", |s| Ok::<_, String>(PathBuf::from(s)))
        .map_err(bad)?;
    args.format = p.opt_value_from_str("--format").map_err(bad)?;
    args.stdout = p.contains("--stdout");
    args.progress_interval = p.opt_value_from_str("--progress-interval").map_err(bad)?;
    args.status = p.opt_value_from_str("--status").map_err(bad)?;
    args.series_ticker = p.opt_value_from_str("--series-ticker").map_err(bad)?;
    args.event_ticker = p.opt_value_from_str("--event-ticker").map_err(bad)?;
    args.since = p.opt_value_from_str("--since").map_err(bad)?;
    args.max_records = p.opt_value_from_str("--max-records").map_err(bad)?;
    args.resume = p
        .opt_value_from_os_str("--resume", |s| Ok::<_, String>(PathBuf::from(s)))
        .map_err(bad)?;
    args.timeout = p.opt_value_from_str("--timeout").map_err(bad)?;
    args.max_body_mb = p.opt_value_from_str("--max-body-mb").map_err(bad)?;
    args.rate = p.opt_value_from_str("--rate").map_err(bad)?;
    args.tries = p.opt_value_from_str("--tries").map_err(bad)?;
    args.backoff_base = p.opt_value_from_str("--backoff-base").map_err(bad)?;
    args.backoff_cap = p.opt_value_from_str("--backoff-cap").map_err(bad)?;
    args.recovery_step = p.opt_value_from_str("--recovery-step").map_err(bad)?;
    args.recovery_steps = p.opt_value_from_str("--recovery-steps").map_err(bad)?;
    args.retry_after_cap = p.opt_value_from_str("--retry-after-cap").map_err(bad)?;
    args.first_contact_budget = p
        .opt_value_from_str("--first-contact-budget")
        .map_err(bad)?;
    for (flag, count) in [("-vvv", 3), ("-vv", 2), ("-v", 1), ("--verbose", 1)] {
        while p.contains(flag) {
            args.verbose = args.verbose.saturating_add(count);
        }
    }
    args.quiet = p.contains(["-q", "--quiet"]);
    let rest = p.finish();
    let mut rest = rest.into_iter();
    if let Some(first) = rest.next() {
        let first = first.to_string_lossy().into_owned();
        if first.starts_with('-') {
            return Err(Error::Usage(format!(
                "unknown flag {first} (see kalshi-ingest --help)"
            )));
        }
        args.command = Some(first);
    }
    for operand in rest {
        if operand.to_string_lossy().starts_with('-') {
            return Err(Error::Usage(format!(
                "unknown flag {} (see kalshi-ingest --help)",
                operand.to_string_lossy()
            )));
        }
        args.operands.push(PathBuf::from(operand));
    }
    Ok(args)
}

fn describe_pico_error(e: pico_args::Error) -> String {
    match e {
        pico_args::Error::OptionWithoutAValue(flag) => {
            format!("{flag} needs a value (see kalshi-ingest --help)")
        }
        pico_args::Error::Utf8ArgumentParsingFailed { value, .. } => {
            format!("argument {value:?} is not valid UTF-8")
        }
        other => format!("{other} (see kalshi-ingest --help)"),
    }
}

impl Command {
    /// Validates raw arguments. `env_base_url` is `KALSHI_BASE_URL`, passed in so this
    /// stays free of I/O.
    pub(crate) fn from_args(args: Args, env_base_url: Option<String>) -> Result<Command, Error> {
        if args.help {
            return Ok(Command::Help);
        }
        if args.version {
            return Ok(Command::Version {
                verbose: args.verbose > 0,
            });
        }
        let discover = args.command.as_deref() == Some("discover");
        match args.command.as_deref() {
            None | Some("run") | Some("discover") => {
                if let Some(extra) = args.operands.first() {
                    return Err(Error::Usage(format!(
                        "unexpected argument {} (see kalshi-ingest --help)",
                        extra.display()
                    )));
                }
            }
            Some("verify") => {
                return match args.operands.as_slice() {
                    [dir] => Ok(Command::Verify(dir.clone())),
                    [] => Err(Error::Usage(
                        "verify needs the run folder to check: kalshi-ingest verify DIR".into(),
                    )),
                    [_, extra, ..] => Err(Error::Usage(format!(
                        "unexpected argument {} (verify takes one run folder)",
                        extra.display()
                    ))),
                };
            }
            Some(other) => {
                return Err(Error::Usage(format!(
                    "unknown command {other:?} (commands: run, discover, verify; see kalshi-ingest --help)"
                )));
            }
        }
        let format = match (args.format.as_deref(), args.stdout) {
            (None, true) => Format::Stdout,
            (Some(_), true) => {
                return Err(Error::Usage(
                    "--stdout and --format conflict: --stdout always streams JSON Lines".into(),
                ));
            }
            (None | Some("files"), false) => Format::Files,
            (Some("jsonl"), false) => Format::Jsonl,
            (Some(other), false) => {
                return Err(Error::Usage(format!(
                    "--format {other:?}: expected files or jsonl (or use --stdout)"
                )));
            }
        };
        if args.stdout && (args.out.is_some() || args.resume.is_some()) {
            return Err(Error::Usage(
                "--stdout writes no files: it cannot be combined with --out or --resume".into(),
            ));
        }
        if args.resume.is_some() && args.out.is_some() {
            return Err(Error::Usage(
                "--resume and --out conflict: a resumed run stays in its own folder".into(),
            ));
        }
        if args.quiet && args.verbose > 0 {
            return Err(Error::Usage(
                "-q/--quiet and -v/--verbose contradict each other: give one".into(),
            ));
        }
        let base_url_explicit =
            args.base_url.is_some() || env_base_url.as_deref().is_some_and(|v| !v.is_empty());
        let endpoints_explicit = args.endpoints.is_some();
        let base_url = match args.base_url {
            Some(url) => validate_base_url("--base-url", &url)?,
            None => match env_base_url.filter(|v| !v.is_empty()) {
                Some(url) => validate_base_url("KALSHI_BASE_URL", &url)?,
                None => DEFAULT_BASE_URL.to_string(),
            },
        };
        let endpoints = plan::parse_endpoint_list(
            args.endpoints.as_deref().unwrap_or(plan::DEFAULT_ENDPOINTS),
        )?;
        let timeout = match &args.timeout {
            Some(text) => parse_duration("--timeout", text)?,
            None => Duration::from_secs(60),
        };
        if timeout.is_zero() {
            return Err(Error::Usage(
                "--timeout must be above zero, e.g. 60s".into(),
            ));
        }
        let max_body_bytes = match &args.max_body_mb {
            Some(text) => {
                let mb: u64 = text
                    .parse()
                    .ok()
                    .filter(|mb| (1..=65_536).contains(mb))
                    .ok_or_else(|| {
                        Error::Usage(format!(
                            "--max-body-mb {text:?}: expected a whole number of MiB from 1 to 65536"
                        ))
                    })?;
                mb * 1024 * 1024
            }
            None => 256 * 1024 * 1024,
        };
        let rate = match &args.rate {
            Some(text) => text
                .parse::<f64>()
                .ok()
                .filter(|r| r.is_finite() && (0.0..=100_000.0).contains(r))
                .ok_or_else(|| {
                    Error::Usage(format!(
                        "--rate {text:?}: expected requests per second, e.g. 10 or 0.5 (0 = no pacing)"
                    ))
                })?,
            None => 10.0,
        };
        let defaults = RetryPolicy::default();
        let duration_or = |flag: &str, value: &Option<String>, default: Duration| match value {
            Some(text) => parse_duration(flag, text),
            None => Ok(default),
        };
        let count_or = |flag: &str, value: &Option<String>, min: u32, default: u32| match value {
            Some(text) => text
                .parse::<u32>()
                .ok()
                .filter(|n| (min..=1000).contains(n))
                .ok_or_else(|| {
                    Error::Usage(format!(
                        "{flag} {text:?}: expected a whole number from {min} to 1000"
                    ))
                }),
            None => Ok(default),
        };
        let retry = RetryPolicy {
            tries: count_or("--tries", &args.tries, 1, defaults.tries)?,
            backoff_base: duration_or("--backoff-base", &args.backoff_base, defaults.backoff_base)?,
            backoff_cap: duration_or("--backoff-cap", &args.backoff_cap, defaults.backoff_cap)?,
            recovery_step: duration_or(
                "--recovery-step",
                &args.recovery_step,
                defaults.recovery_step,
            )?,
            recovery_steps: count_or(
                "--recovery-steps",
                &args.recovery_steps,
                0,
                defaults.recovery_steps,
            )?,
            retry_after_cap: duration_or(
                "--retry-after-cap",
                &args.retry_after_cap,
                defaults.retry_after_cap,
            )?,
            first_contact_budget: duration_or(
                "--first-contact-budget",
                &args.first_contact_budget,
                defaults.first_contact_budget,
            )?,
            ..defaults
        };
        if retry.backoff_cap < retry.backoff_base {
            return Err(Error::Usage(
                "--backoff-cap must not be below --backoff-base".into(),
            ));
        }
        let filters = Filters {
            status: args.status.clone(),
            series_ticker: args.series_ticker.clone(),
            event_ticker: args.event_ticker.clone(),
            since: match &args.since {
                Some(text) => Some(parse_since(text, time::OffsetDateTime::now_utc())?),
                None => None,
            },
            max_records: match &args.max_records {
                Some(text) => {
                    Some(text.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                        Error::Usage(format!(
                            "--max-records {text:?}: expected a whole number above 0"
                        ))
                    })?)
                }
                None => None,
            },
        };
        if args.resume.is_some() && !filters.is_empty() {
            return Err(Error::Usage(
                "filters (--status, --series-ticker, --event-ticker, --since, --max-records) are \
                 fixed when a run starts: resume without them, or start a new run"
                    .into(),
            ));
        }
        filters.check(&endpoints)?;
        if discover
            && (args.resume.is_some()
                || args.stdout
                || args.format.is_some()
                || args.tickers.is_some()
                || args.endpoints.is_some()
                || !filters.is_empty())
        {
            return Err(Error::Usage(
                "discover probes every endpoint and takes only --base-url, --out, --discovery                  and the network flags"
                    .into(),
            ));
        }
        if !discover {
            check_id_sources(&endpoints, args.tickers.as_deref(), args.resume.is_some())?;
        }
        let verbosity = if args.quiet {
            -1
        } else {
            i8::try_from(args.verbose).unwrap_or(i8::MAX)
        };
        let config = Box::new(RunConfig {
            base_url,
            out: args.out.unwrap_or_else(|| PathBuf::from(".")),
            endpoints,
            base_url_explicit,
            endpoints_explicit,
            resume: args.resume,
            format,
            format_explicit: args.format.is_some(),
            filters,
            progress_interval: match &args.progress_interval {
                Some(text) => parse_duration("--progress-interval", text)?,
                None => Duration::from_secs(10),
            },
            timeout,
            max_body_bytes,
            rate,
            retry,
            verbosity,
            tickers: args.tickers,
            discovery: args.discovery,
        });
        Ok(if discover {
            Command::Discover(config)
        } else {
            Command::Run(config)
        })
    }
}

/// Checks that every planned detail endpoint has ids: from `--tickers` (one kind of
/// id for all of them) or from its list endpoint in the same plan. A resumed run may
/// also read the id log an earlier session stored; `run` checks that.
fn check_id_sources(
    endpoints: &[EndpointSpec],
    tickers: Option<&Path>,
    resume: bool,
) -> Result<(), Error> {
    let details: Vec<_> = endpoints
        .iter()
        .filter_map(|e| e.detail.map(|d| (e.name, d)))
        .collect();
    if let Some(file) = tickers {
        if resume {
            return Err(Error::Usage(
                "--tickers is fixed when a run starts (its ids are copied into the run                  folder): resume without it"
                    .into(),
            ));
        }
        let Some((first, first_detail)) = details.first() else {
            return Err(Error::Usage(format!(
                "--tickers {}: only detail endpoints read ids; add e.g. --endpoints orderbooks",
                file.display()
            )));
        };
        if let Some((other, other_detail)) = details
            .iter()
            .find(|(_, d)| d.id_kind != first_detail.id_kind)
        {
            return Err(Error::Usage(format!(
                "--tickers gives one kind of id, but {first} needs {} and {other} needs {};                  run them separately",
                first_detail.id_kind, other_detail.id_kind
            )));
        }
        return Ok(());
    }
    if resume {
        return Ok(());
    }
    for (name, detail) in details {
        if !endpoints.iter().any(|e| e.name == detail.ids_from) {
            return Err(Error::Usage(format!(
                "{name} needs {}: add {} to --endpoints, or pass --tickers FILE",
                detail.id_kind, detail.ids_from
            )));
        }
    }
    Ok(())
}

/// Checks the scheme and host of a base URL and drops trailing slashes.
fn validate_base_url(source: &str, url: &str) -> Result<String, Error> {
    let trimmed = url.trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"));
    let host = rest.map(|r| r.split('/').next().unwrap_or(""));
    match host {
        Some(host) if !host.is_empty() && !trimmed.contains(['?', '#', ' ']) => {
            Ok(trimmed.to_string())
        }
        _ => Err(Error::Usage(format!(
            "{source} {url:?}: expected an http:// or https:// URL with a host and no query, \
             e.g. {DEFAULT_BASE_URL}"
        ))),
    }
}

/// Parses `--since`: Unix seconds, an RFC 3339 time, or an age (`24h`) before `now`.
pub(crate) fn parse_since(text: &str, now: time::OffsetDateTime) -> Result<i64, Error> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<i64>() {
        return Ok(seconds);
    }
    if let Ok(t) = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
    {
        return Ok(t.unix_timestamp());
    }
    match parse_duration("--since", text) {
        Ok(age) => Ok(now.unix_timestamp() - i64::try_from(age.as_secs()).unwrap_or(i64::MAX)),
        Err(_) => Err(Error::Usage(format!(
            "--since {text:?}: expected Unix seconds, an RFC 3339 time like \
             2026-11-01T00:00:00Z, or an age like 24h"
        ))),
    }
}

/// Parses `250ms`, `60s`, `60` (seconds), `2m` or `1h`.
pub(crate) fn parse_duration(flag: &str, text: &str) -> Result<Duration, Error> {
    let bad = || {
        Error::Usage(format!(
            "{flag} {text:?}: expected a duration like 500ms, 60s, 2m or 1h"
        ))
    };
    let text_trim = text.trim();
    let split = text_trim
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text_trim.len());
    let (number, unit) = text_trim.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let scale = match unit {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad()),
    };
    let seconds = number * scale;
    if !seconds.is_finite() || !(0.0..=7.0 * 86_400.0).contains(&seconds) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, Error> {
        let raw = args.iter().map(OsString::from).collect();
        Command::from_args(parse_args(raw)?, None)
    }

    fn run_config(args: &[&str]) -> RunConfig {
        match parse(args).expect("valid") {
            Command::Run(c) => *c,
            other => panic!("expected run, got {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let c = run_config(&[]);
        assert_eq!(c.base_url, DEFAULT_BASE_URL);
        assert_eq!(c.out, PathBuf::from("."));
        assert_eq!(c.endpoints.len(), 4);
        assert_eq!(c.timeout, Duration::from_secs(60));
        assert_eq!(c.verbosity, 0);
        assert_eq!(c.rate, 10.0);
        assert_eq!(c.retry, RetryPolicy::default());
    }

    #[test]
    fn every_retry_timing_is_configurable() {
        let c = run_config(&[
            "--tries=3",
            "--backoff-base=5ms",
            "--backoff-cap=20ms",
            "--recovery-step=10ms",
            "--recovery-steps=4",
            "--retry-after-cap=50ms",
            "--first-contact-budget=100ms",
            "--rate=0",
        ]);
        let ms = Duration::from_millis;
        assert_eq!(c.retry.tries, 3);
        assert_eq!((c.retry.backoff_base, c.retry.backoff_cap), (ms(5), ms(20)));
        assert_eq!((c.retry.recovery_step, c.retry.recovery_steps), (ms(10), 4));
        assert_eq!(c.retry.retry_after_cap, ms(50));
        assert_eq!(c.retry.first_contact_budget, ms(100));
        assert_eq!(c.rate, 0.0);
    }

    #[test]
    fn flags_parse_with_space_or_equals() {
        let c = run_config(&[
            "run",
            "--base-url=http://127.0.0.1:9/v2/",
            "--out",
            "/tmp/x",
            "--endpoints",
            "markets",
            "--timeout=250ms",
            "-vv",
        ]);
        assert_eq!(c.base_url, "http://127.0.0.1:9/v2");
        assert_eq!(c.out, PathBuf::from("/tmp/x"));
        assert_eq!(c.endpoints[0].name, "markets");
        assert_eq!(c.timeout, Duration::from_millis(250));
        assert_eq!(c.verbosity, 2);
    }

    #[test]
    fn env_base_url_is_used_and_checked() {
        let raw = vec![];
        let cmd = Command::from_args(parse_args(raw).expect("ok"), Some("http://h:1/".into()));
        assert!(matches!(cmd, Ok(Command::Run(c)) if c.base_url == "http://h:1"));
        let bad = Command::from_args(Args::default(), Some("h:1".into()));
        assert!(
            bad.expect_err("no scheme")
                .to_string()
                .contains("KALSHI_BASE_URL")
        );
    }

    #[test]
    fn bad_input_is_one_clear_line() {
        let cases: &[(&[&str], &str)] = &[
            (&["--bogus"], "unknown flag --bogus"),
            (&["--out"], "--out needs a value"),
            (
                &["--base-url", "api.kalshi.com"],
                "expected an http:// or https:// URL",
            ),
            (&["--base-url", "https://"], "expected an http"),
            (
                &["--endpoints", "markets,nope"],
                "unknown endpoint \"nope\"",
            ),
            (&["--timeout", "soon"], "expected a duration"),
            (&["--timeout", "0s"], "above zero"),
            (&["--max-body-mb", "0"], "whole number of MiB"),
            (&["fetch"], "unknown command \"fetch\""),
            (&["verify"], "verify needs the run folder"),
            (&["verify", "a", "b"], "unexpected argument b"),
            (&["--resume", "x", "--out", "y"], "conflict"),
            (&["--format", "csv"], "expected files or jsonl"),
            (&["--stdout", "--format", "jsonl"], "conflict"),
            (&["--stdout", "--out", "x"], "cannot be combined"),
            (&["--status", "active"], "expected one of"),
            (&["--since", "yesterday"], "--since"),
            (&["--max-records", "0"], "--max-records"),
            (
                &[
                    "--resume",
                    "x",
                    "--status",
                    "open",
                    "--endpoints",
                    "markets",
                ],
                "fixed when a run starts",
            ),
            (
                &["--endpoints", "series", "--event-ticker", "E"],
                "markets only",
            ),
            (&["run", "extra"], "unexpected argument extra"),
            (&["-q", "-v"], "contradict"),
            (&["--rate", "fast"], "--rate"),
            (&["--tries", "0"], "--tries"),
            (&["--recovery-steps", "x"], "--recovery-steps"),
            (
                &["--backoff-base", "2s", "--backoff-cap", "1s"],
                "--backoff-cap",
            ),
        ];
        for (args, want) in cases {
            let err = parse(args).expect_err("must fail");
            assert_eq!(err.exit_code(), crate::error::EXIT_FATAL);
            let text = err.to_string();
            assert!(text.contains(want), "{args:?}: {text:?} lacks {want:?}");
            assert!(!text.contains('\n'), "{text:?}");
        }
    }

    #[test]
    fn since_takes_seconds_rfc3339_or_an_age() {
        let now = time::macros::datetime!(2026-11-25 12:00:00 UTC);
        assert_eq!(parse_since("1700000000", now).expect("ok"), 1_700_000_000);
        assert_eq!(
            parse_since("2026-11-25T11:00:00Z", now).expect("ok"),
            now.unix_timestamp() - 3600
        );
        assert_eq!(
            parse_since("2h", now).expect("ok"),
            now.unix_timestamp() - 7200
        );
    }

    #[test]
    fn help_and_version_win() {
        assert!(matches!(parse(&["--bogus", "-h"]), Ok(Command::Help)));
        assert!(matches!(
            parse(&["-V"]),
            Ok(Command::Version { verbose: false })
        ));
        assert!(matches!(
            parse(&["--version", "--verbose"]),
            Ok(Command::Version { verbose: true })
        ));
    }

    /// Every long flag in HELP parses, and every flag the parser knows is in HELP.
    #[test]
    fn help_lists_exactly_the_parsed_flags() {
        let src = include_str!("cli.rs");
        let parser = &src[src.find("pub(crate) fn parse_args").expect("has parser")
            ..src.find("fn describe_pico_error").expect("has helper")];
        let mut parsed: Vec<&str> = parser
            .split('"')
            .filter(|s| s.starts_with("--") && s.len() > 2)
            .collect();
        parsed.sort_unstable();
        parsed.dedup();
        let mut documented: Vec<&str> = HELP
            .split_whitespace()
            .filter(|w| w.starts_with("--") && w.len() > 2)
            .map(|w| w.trim_end_matches([',', '.']))
            .filter(|w| !w.contains('='))
            .collect();
        documented.sort_unstable();
        documented.dedup();
        assert_eq!(parsed, documented);
    }
}
