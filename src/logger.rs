//! Logging: human-readable lines on stderr (filtered by `-v`/`-q` and `RUST_LOG`) and
//! every line, timestamped, in the run folder's `atomic_ingestion.log`.
//!
//! Level policy: error = gave up on an endpoint or the run; warn = a retry, a skipped
//! or odd record; info = run and endpoint milestones; debug = each request (URL,
//! status, bytes, elapsed); trace = more detail. Bodies are never logged above trace.

use std::fs::File;
use std::io::{LineWriter, Write};
use std::path::Path;
use std::sync::Mutex;

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::error::Error;

/// The run log, once the run folder exists.
static RUN_LOG: Mutex<Option<LineWriter<File>>> = Mutex::new(None);

struct Tee {
    stderr: env_logger::Logger,
    file_level: LevelFilter,
}

impl Log for Tee {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.stderr.enabled(metadata) || metadata.level() <= self.file_level
    }

    fn log(&self, record: &Record) {
        if self.stderr.matches(record) {
            crate::progress::clear();
            self.stderr.log(record);
        }
        // Dependencies' own chatter (ureq, rustls) reaches the file only at warn and up.
        let ours = record.target().starts_with(env!("CARGO_CRATE_NAME"));
        if record.level() <= self.file_level && (ours || record.level() <= Level::Warn) {
            let mut guard = RUN_LOG.lock().unwrap_or_else(|poison| poison.into_inner());
            if let Some(file) = guard.as_mut() {
                // A failing log write must not stop the run; the data path reports
                // disk errors itself.
                let _ = writeln!(
                    file,
                    "{} {:<5} {}",
                    crate::timestamp::rfc3339(crate::timestamp::now()),
                    record.level(),
                    record.args()
                );
            }
        }
    }

    fn flush(&self) {
        self.stderr.flush();
        let mut guard = RUN_LOG.lock().unwrap_or_else(|poison| poison.into_inner());
        if let Some(file) = guard.as_mut() {
            let _ = file.flush();
        }
    }
}

/// Installs the logger. `verbosity`: -1 quiet (errors only), 0 default (warn),
/// 1 info, 2 debug, 3+ trace. `RUST_LOG` overrides the stderr filter.
pub(crate) fn init(verbosity: i8) {
    let stderr_level = match verbosity {
        i8::MIN..=-1 => LevelFilter::Error,
        0 => LevelFilter::Warn,
        1 => LevelFilter::Info,
        2 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    };
    let file_level = stderr_level.max(LevelFilter::Info);
    let mut builder = env_logger::Builder::new();
    builder
        .filter_level(stderr_level)
        .format(|buf, record| {
            writeln!(
                buf,
                "kalshi-ingest: {}: {}",
                record.level().as_str().to_lowercase(),
                record.args()
            )
        })
        .parse_env(env_logger::Env::new().filter("RUST_LOG"));
    let stderr = builder.build();
    let max = stderr.filter().max(file_level);
    if log::set_boxed_logger(Box::new(Tee { stderr, file_level })).is_ok() {
        log::set_max_level(max);
    }
}

/// Starts copying log lines into `path` (created or appended to).
pub(crate) fn attach_file(path: &Path) -> Result<(), Error> {
    let file = File::options()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io("open log", path, e))?;
    let mut guard = RUN_LOG.lock().unwrap_or_else(|poison| poison.into_inner());
    *guard = Some(LineWriter::new(file));
    Ok(())
}
