//! Output layout on disk: the run folder, endpoint folders, batch folders of record
//! files, file naming, and atomic writes.
//!
//! # Atomicity
//! A batch is the unit of atomicity: its record files are written into
//! `batch_NNNN.partial/` and the folder is then renamed to `batch_NNNN/` (with
//! `--format jsonl`: `batch_NNNN.jsonl.partial` renamed to `batch_NNNN.jsonl`). Readers
//! ignore `*.partial`, and so never see a half-written record. Batches are written on
//! a writer thread while the next one is being fetched.
//! Small metadata files (summary) are written to a temporary name and renamed.
//!
//! # File names
//! `<record_index, 7+ digits>_<sanitized id>.json`. The index prefix makes every name
//! unique and never hidden, `.`/`..` or a reserved device name; the sanitized id
//! keeps only `A-Z a-z 0-9 - _ .`, at most [`MAX_ID_IN_NAME`] bytes. The original id
//! is kept intact in the envelope.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use crate::error::Error;
use crate::record::{Position, Record, write_envelope};

/// The most record files in one batch folder.
pub(crate) const BATCH_SIZE: usize = 1000;
/// The most bytes of a sanitized id kept in a file name.
pub(crate) const MAX_ID_IN_NAME: usize = 80;
/// The prefix of every run folder; the UTC start time follows.
pub(crate) const RUN_DIR_PREFIX: &str = "kalshi_atomic_ingestion_";
/// The suffix of a batch folder still being written.
pub(crate) const PARTIAL_SUFFIX: &str = ".partial";

/// Creates `out` if needed and checks that it is a writable folder.
pub(crate) fn prepare_out_dir(out: &Path) -> Result<(), Error> {
    if out.exists() && !out.is_dir() {
        return Err(Error::Usage(format!(
            "--out {}: is a file, not a folder (give a folder to create the run folder in)",
            out.display()
        )));
    }
    fs::create_dir_all(out).map_err(|e| Error::io("create output folder", out, e))
}

/// Creates `<out>/kalshi_atomic_ingestion_<session_id>/`, never reusing an existing
/// folder: if the name is taken (two runs in the same second), waits for the next
/// second and tries again.
pub(crate) fn create_run_dir(out: &Path) -> Result<(PathBuf, time::OffsetDateTime), Error> {
    let mut attempts = 0;
    loop {
        let started = crate::timestamp::now();
        let dir = out.join(format!(
            "{RUN_DIR_PREFIX}{}",
            crate::timestamp::compact(started)
        ));
        match fs::create_dir(&dir) {
            Ok(()) => return Ok((dir, started)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 3 => {
                attempts += 1;
                let into_second = u64::from(started.nanosecond()) / 1_000_000;
                std::thread::sleep(std::time::Duration::from_millis(1001 - into_second));
            }
            Err(e) => return Err(Error::io("create run folder", &dir, e)),
        }
    }
}

/// The file-name-safe form of a record id (see the module docs).
pub(crate) fn sanitize_id(id: Option<&str>) -> String {
    let Some(id) = id else {
        return "noid".to_string();
    };
    let mut out = String::with_capacity(id.len().min(MAX_ID_IN_NAME));
    for c in id.chars() {
        if out.len() >= MAX_ID_IN_NAME {
            break;
        }
        let safe = c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        out.push(if safe { c } else { '_' });
    }
    if out.starts_with('.') {
        out.replace_range(..1, "_");
    }
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// The record file name for a record at `record_index` with `id`.
pub(crate) fn record_file_name(record_index: u64, id: Option<&str>) -> String {
    format!("{record_index:07}_{}.json", sanitize_id(id))
}

/// The final name of batch `n`.
pub(crate) fn batch_dir_name(n: u64) -> String {
    format!("batch_{n:04}")
}

/// Removes `*.partial` folders and batch folders numbered `first_stale` or above.
fn remove_leftovers(endpoint_dir: &Path, first_stale: u64) -> Result<(), Error> {
    let entries = fs::read_dir(endpoint_dir).map_err(|e| Error::io("read", endpoint_dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read", endpoint_dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let stale = name.ends_with(PARTIAL_SUFFIX)
            || name
                .strip_prefix("batch_")
                .map(|n| n.trim_end_matches(".jsonl"))
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|n| n >= first_stale);
        if stale {
            let path = entry.path();
            log::info!("removing {} left by an interrupted write", path.display());
            let removed = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            removed.map_err(|e| Error::io("remove", &path, e))?;
        }
    }
    Ok(())
}

/// Creates one folder inside an existing one (never its parents: a run folder that
/// was deleted during a run must not be re-created piecemeal).
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), Error> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(Error::io("create folder", dir, e)),
    }
}

/// Writes `bytes` to `path` atomically: a temporary sibling, synced, then renamed.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io("write", path, e)
    })
}

/// How records are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Format {
    /// One JSON file per record in `batch_NNNN/` folders.
    #[default]
    Files,
    /// One JSON Lines file per batch: `batch_NNNN.jsonl`.
    Jsonl,
    /// JSON Lines on stdout; nothing on disk.
    Stdout,
}

impl Format {
    /// The `--format` value, or `stdout`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Format::Files => "files",
            Format::Jsonl => "jsonl",
            Format::Stdout => "stdout",
        }
    }
}

/// What a [`BatchWriter`] has committed so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct WrittenCounts {
    /// Records in committed batches.
    pub(crate) records: u64,
    /// Committed batches.
    pub(crate) batches: u64,
    /// Bytes of committed envelopes.
    pub(crate) bytes: u64,
}

/// A checkpoint to send on once its batch is committed.
pub(crate) type AfterCommit = Box<dyn FnOnce(WrittenCounts) + Send>;

/// A full batch on its way to the writer thread.
struct Batch {
    number: u64,
    first_index: u64,
    records: Vec<Record>,
    after_commit: Option<AfterCommit>,
}

/// Where committed batches go.
enum Target {
    Dir {
        endpoint_dir: PathBuf,
        hash_log: File,
        hash_log_path: PathBuf,
        jsonl: bool,
    },
    Stdout(io::BufWriter<io::Stdout>),
}

/// Collects one endpoint's records into batches of [`BATCH_SIZE`] and commits each
/// batch atomically on a writer thread, so fetching, parsing and hashing go on while
/// the previous batch is written (at most one batch waits in between).
///
/// A commit writes the batch (`batch_NNNN.partial/` renamed to `batch_NNNN/`, or
/// `batch_NNNN.jsonl.partial` renamed to `batch_NNNN.jsonl`, or lines on stdout),
/// appends its 16-byte hash prefixes to the hash log before the rename, and then runs
/// the batch's [`AfterCommit`] (which hands the checkpoint to the syncer).
pub(crate) struct BatchWriter {
    pending: Vec<Record>,
    /// Records and batches handed to the writer thread.
    handed: WrittenCounts,
    jobs: Option<mpsc::SyncSender<Batch>>,
    done: mpsc::Receiver<Result<WrittenCounts, Error>>,
    in_flight: usize,
    committed: WrittenCounts,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BatchWriter {
    /// Opens an endpoint's output after `already` (the counts a checkpoint covers; zero
    /// for a fresh endpoint). For the on-disk formats, leftovers of an interrupted
    /// write are removed first: `*.partial` entries and batches past the checkpoint,
    /// and the hash log is cut to `already.records` entries.
    pub(crate) fn open(
        format: Format,
        run_dir: Option<&Path>,
        name: &str,
        endpoint_path: &str,
        hash_log_path: Option<&Path>,
        id_log_path: Option<&Path>,
        already: WrittenCounts,
    ) -> Result<Self, Error> {
        let id_log = match id_log_path {
            Some(path) => Some((
                crate::ids::open_for_append(path, already.records)?,
                path.to_path_buf(),
            )),
            None => None,
        };
        let target = match (format, run_dir, hash_log_path) {
            (Format::Files | Format::Jsonl, Some(run_dir), Some(hash_log_path)) => {
                let endpoint_dir = run_dir.join(name);
                ensure_dir(&endpoint_dir)?;
                remove_leftovers(&endpoint_dir, already.batches)?;
                if let Some(parent) = hash_log_path.parent() {
                    ensure_dir(parent)?;
                }
                let hash_log = File::options()
                    .create(true)
                    .append(true)
                    .open(hash_log_path)
                    .map_err(|e| Error::io("open", hash_log_path, e))?;
                // Entries past what the checkpoint covers belong to batches just removed.
                hash_log
                    .set_len(already.records * 16)
                    .map_err(|e| Error::io("truncate", hash_log_path, e))?;
                Target::Dir {
                    endpoint_dir,
                    hash_log,
                    hash_log_path: hash_log_path.to_path_buf(),
                    jsonl: format == Format::Jsonl,
                }
            }
            _ => Target::Stdout(io::BufWriter::with_capacity(1 << 16, io::stdout())),
        };
        // One batch may wait while the writer writes another (a rendezvous channel
        // measured the same time and peak RSS at a million records).
        let (jobs, inbox) = mpsc::sync_channel::<Batch>(1);
        let (outbox, done) = mpsc::channel();
        let endpoint = endpoint_path.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("write-{name}"))
            .spawn(move || write_batches(target, id_log, &endpoint, already, &inbox, &outbox))
            .map_err(|e| Error::io("start writer thread for", Path::new(name), e))?;
        Ok(BatchWriter {
            pending: Vec::with_capacity(BATCH_SIZE),
            handed: already,
            jobs: Some(jobs),
            done,
            in_flight: 0,
            committed: already,
            thread: Some(thread),
        })
    }

    /// Adds a record; returns `true` when the batch is full and must be committed.
    pub(crate) fn push(&mut self, record: Record) -> bool {
        self.pending.push(record);
        self.pending.len() >= BATCH_SIZE
    }

    /// Records and batches there will be once the collected records are committed.
    pub(crate) fn counts_after_commit(&self) -> WrittenCounts {
        WrittenCounts {
            records: self.handed.records + self.pending.len() as u64,
            batches: self.handed.batches + u64::from(!self.pending.is_empty()),
            bytes: 0,
        }
    }

    /// Hands the collected records to the writer thread as one batch; `after_commit`
    /// runs there once the batch is committed, with the counts including it.
    /// Returns an error the writer met with an earlier batch.
    pub(crate) fn commit(&mut self, after_commit: Option<AfterCommit>) -> Result<(), Error> {
        self.collect(false)?;
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = Batch {
            number: self.handed.batches,
            first_index: self.handed.records,
            records: std::mem::replace(&mut self.pending, Vec::with_capacity(BATCH_SIZE)),
            after_commit,
        };
        self.handed.records += batch.records.len() as u64;
        self.handed.batches += 1;
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(batch).is_ok());
        if !sent {
            return Err(self.writer_failure());
        }
        self.in_flight += 1;
        Ok(())
    }

    /// Drops records collected but not committed (an interrupted run fetches them
    /// again when resumed, so batch boundaries match an uninterrupted run's).
    pub(crate) fn discard_pending(&mut self) {
        self.pending.clear();
    }

    /// Waits until every handed batch is committed; returns the committed counts.
    pub(crate) fn drain(&mut self) -> Result<WrittenCounts, Error> {
        self.collect(true)?;
        Ok(self.committed)
    }

    /// Commits what is collected (a final, possibly short batch), waits for the
    /// writer and returns the final counts.
    pub(crate) fn finish(&mut self) -> Result<WrittenCounts, Error> {
        self.commit(None)?;
        self.drain()
    }

    /// Takes the writer's reports: all outstanding ones if `wait`, else those ready.
    fn collect(&mut self, wait: bool) -> Result<(), Error> {
        while self.in_flight > 0 {
            let report = if wait {
                self.done.recv().ok()
            } else {
                match self.done.try_recv() {
                    Ok(report) => Some(report),
                    Err(mpsc::TryRecvError::Empty) => return Ok(()),
                    Err(mpsc::TryRecvError::Disconnected) => None,
                }
            };
            match report {
                Some(Ok(counts)) => {
                    self.in_flight -= 1;
                    self.committed = counts;
                }
                Some(Err(e)) => {
                    self.in_flight = 0;
                    self.jobs = None;
                    return Err(e);
                }
                None => return Err(self.writer_failure()),
            }
        }
        Ok(())
    }

    fn writer_failure(&mut self) -> Error {
        self.jobs = None;
        while let Ok(report) = self.done.try_recv() {
            if let Err(e) = report {
                return e;
            }
        }
        Error::Usage("internal error: the batch writer thread stopped".into())
    }
}

impl Drop for BatchWriter {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The writer thread: commits batches in order until the channel closes or a write
/// fails (the error is reported and the thread stops).
fn write_batches(
    mut target: Target,
    mut id_log: Option<(File, PathBuf)>,
    endpoint_path: &str,
    mut committed: WrittenCounts,
    inbox: &mpsc::Receiver<Batch>,
    outbox: &mpsc::Sender<Result<WrittenCounts, Error>>,
) {
    let mut buf = Vec::with_capacity(1 << 20);
    while let Ok(batch) = inbox.recv() {
        match commit_batch(
            &mut target,
            id_log.as_mut(),
            endpoint_path,
            &batch,
            &mut buf,
        ) {
            Ok(bytes) => {
                committed.records += batch.records.len() as u64;
                committed.batches += 1;
                committed.bytes += bytes;
                if let Some(after) = batch.after_commit {
                    after(committed);
                }
                if outbox.send(Ok(committed)).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = outbox.send(Err(e));
                return;
            }
        }
    }
}

/// Writes one batch to its target; returns the envelope bytes written.
fn commit_batch(
    target: &mut Target,
    id_log: Option<&mut (File, PathBuf)>,
    endpoint_path: &str,
    batch: &Batch,
    buf: &mut Vec<u8>,
) -> Result<u64, Error> {
    let total_records = batch.records.len() as u64;
    let position = |offset: usize| Position {
        record_index: batch.first_index + offset as u64,
        batch_number: batch.number,
        total_records,
    };
    match target {
        Target::Stdout(out) => {
            buf.clear();
            for (offset, record) in batch.records.iter().enumerate() {
                write_envelope(endpoint_path, record, position(offset), buf);
            }
            out.write_all(buf)
                .and_then(|()| out.flush())
                .map_err(|e| Error::io("write", Path::new("standard output"), e))?;
            let bytes = buf.len() as u64;
            append_ids(id_log, &batch.records, buf)?;
            Ok(bytes)
        }
        Target::Dir {
            endpoint_dir,
            hash_log,
            hash_log_path,
            jsonl,
        } => {
            let name = batch_dir_name(batch.number);
            let bytes = if *jsonl {
                let final_path = endpoint_dir.join(format!("{name}.jsonl"));
                let partial = endpoint_dir.join(format!("{name}.jsonl{PARTIAL_SUFFIX}"));
                buf.clear();
                for (offset, record) in batch.records.iter().enumerate() {
                    write_envelope(endpoint_path, record, position(offset), buf);
                }
                fs::write(&partial, &buf[..]).map_err(|e| Error::io("write", &partial, e))?;
                let bytes = buf.len() as u64;
                append_hashes(hash_log, hash_log_path, &batch.records)?;
                append_ids(id_log, &batch.records, buf)?;
                fs::rename(&partial, &final_path)
                    .map_err(|e| Error::io("commit batch", &final_path, e))?;
                bytes
            } else {
                let final_dir = endpoint_dir.join(&name);
                let partial_dir = endpoint_dir.join(format!("{name}{PARTIAL_SUFFIX}"));
                if partial_dir.exists() {
                    fs::remove_dir_all(&partial_dir)
                        .map_err(|e| Error::io("remove stale batch", &partial_dir, e))?;
                }
                fs::create_dir(&partial_dir)
                    .map_err(|e| Error::io("create batch", &partial_dir, e))?;
                let mut bytes = 0u64;
                for (offset, record) in batch.records.iter().enumerate() {
                    let pos = position(offset);
                    buf.clear();
                    write_envelope(endpoint_path, record, pos, buf);
                    let path =
                        partial_dir.join(record_file_name(pos.record_index, record.id.as_deref()));
                    // No per-file fsync: measured 2,581 files/s with one against 17,080
                    // without (issue 2). The rename makes the batch appear whole to
                    // readers; the syncer makes it durable before a checkpoint covers it.
                    fs::write(&path, &buf[..]).map_err(|e| Error::io("write", &path, e))?;
                    bytes += buf.len() as u64;
                }
                append_hashes(hash_log, hash_log_path, &batch.records)?;
                append_ids(id_log, &batch.records, buf)?;
                fs::rename(&partial_dir, &final_dir)
                    .map_err(|e| Error::io("commit batch", &final_dir, e))?;
                bytes
            };
            Ok(bytes)
        }
    }
}

/// Appends the batch's id lines to the id log, if the endpoint keeps one.
fn append_ids(
    id_log: Option<&mut (File, PathBuf)>,
    records: &[Record],
    buf: &mut Vec<u8>,
) -> Result<(), Error> {
    let Some((log, path)) = id_log else {
        return Ok(());
    };
    buf.clear();
    crate::ids::append_id_lines(records, buf);
    log.write_all(buf).map_err(|e| Error::io("write", path, e))
}

fn append_hashes(log: &mut File, path: &Path, records: &[Record]) -> Result<(), Error> {
    let mut prefixes = Vec::with_capacity(records.len() * 16);
    for record in records {
        prefixes.extend_from_slice(&record.hash.prefix().to_le_bytes());
    }
    log.write_all(&prefixes)
        .map_err(|e| Error::io("write", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitized_names_stay_inside_the_folder() {
        let hostile = [
            "../../etc/passwd",
            "..",
            ".",
            ".hidden",
            "a/b\\c",
            "CON",
            "x\u{0}y\u{1b}z\n",
            "市场-ü",
            "",
        ];
        for id in hostile {
            let name = record_file_name(3, Some(id));
            assert!(name.starts_with("0000003_"), "{name}");
            assert!(name.ends_with(".json"));
            assert!(!name.contains('/') && !name.contains('\\'), "{name}");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            );
            assert_ne!(Path::new(&name).file_name(), None);
        }
        assert_eq!(
            record_file_name(0, Some("..")),
            "0000000_-..json".replace('-', "_")
        );
    }

    #[test]
    fn long_ids_are_cut_and_ids_that_sanitize_alike_stay_distinct() {
        let long = "A".repeat(400);
        assert_eq!(sanitize_id(Some(&long)).len(), MAX_ID_IN_NAME);
        assert_eq!(sanitize_id(Some("a/b")), sanitize_id(Some("a_b")));
        assert_ne!(
            record_file_name(1, Some("a/b")),
            record_file_name(2, Some("a_b"))
        );
        assert_eq!(sanitize_id(None), "noid");
        assert_eq!(record_file_name(12_345_678, Some("T")), "12345678_T.json");
    }
    /// Property: for any id (control characters, separators, dots, non-ASCII, very
    /// long), the record file name is one plain component inside the batch folder,
    /// made of safe characters, bounded in length, and unique per record index.
    #[test]
    fn generated_ids_always_make_safe_unique_names() {
        let mut rng = crate::testgen::Rng::new(0xA076_1D64_78BD_642F);
        let pieces = [
            "a", "Z", "9", "-", "_", ".", "..", "/", "\\", "\0", "\n", "\u{1b}", "\u{7f}", " ",
            ":", "*", "?", "<", "CON", "nul", "é", "市场", "😀", "\u{202e}", "%2F", "~",
        ];
        let mut names = std::collections::HashSet::new();
        for index in 0..20_000u64 {
            let id: String = (0..rng.below(120))
                .map(|_| rng.pick(&pieces))
                .collect::<Vec<_>>()
                .concat();
            let name = record_file_name(index, Some(&id));
            assert!(name.starts_with(&format!("{index:07}_")), "{name}");
            assert!(name.ends_with(".json"), "{name}");
            assert!(name.len() <= 8 + MAX_ID_IN_NAME + 5 + 1, "{name}");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
                "{id:?} -> {name}"
            );
            let mut parts = Path::new(&name).components();
            assert!(
                matches!(parts.next(), Some(std::path::Component::Normal(_)))
                    && parts.next().is_none(),
                "{name}"
            );
            let sanitized = sanitize_id(Some(&id));
            assert!(
                !sanitized.starts_with('.') && !sanitized.is_empty(),
                "{id:?}"
            );
            assert_eq!(
                sanitize_id(Some(&sanitized)),
                sanitized,
                "idempotent for {id:?}"
            );
            assert!(names.insert(name), "unique per index");
        }
    }
}
