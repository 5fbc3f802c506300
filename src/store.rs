//! Output layout on disk: the run folder, endpoint folders, batch folders of record
//! files, file naming, and atomic writes.
//!
//! # Atomicity
//! A batch is the unit of atomicity: its record files are written into
//! `batch_NNNN.partial/` and the folder is then renamed to `batch_NNNN/`. Readers ignore `*.partial`; a reader
//! listing `batch_*` folders without that suffix never sees a half-written record.
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
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|n| n >= first_stale);
        if stale {
            let path = entry.path();
            log::info!("removing {} left by an interrupted write", path.display());
            fs::remove_dir_all(&path).map_err(|e| Error::io("remove", &path, e))?;
        }
    }
    Ok(())
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

/// What a [`BatchWriter`] has put on disk so far.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct WrittenCounts {
    /// Records in committed batches.
    pub(crate) records: u64,
    /// Committed batch folders.
    pub(crate) batches: u64,
    /// Bytes of committed record files.
    pub(crate) bytes: u64,
}

/// Collects one endpoint's records into batches of [`BATCH_SIZE`] and commits each
/// batch atomically. Each commit also appends the batch's 16-byte hash prefixes to the
/// endpoint's hash log (before the rename, so the log never lags the batches).
pub(crate) struct BatchWriter {
    endpoint_dir: PathBuf,
    endpoint_path: String,
    pending: Vec<Record>,
    written: WrittenCounts,
    envelope: Vec<u8>,
    hash_log: File,
    hash_log_path: PathBuf,
}

impl BatchWriter {
    /// Opens `<run_dir>/<name>/` for writing after `already` (the counts a checkpoint
    /// covers; zero for a fresh endpoint). Leftovers of an interrupted write are
    /// removed first: `*.partial` folders and batch folders past the checkpoint.
    pub(crate) fn open(
        run_dir: &Path,
        name: &str,
        endpoint_path: &str,
        hash_log_path: &Path,
        already: WrittenCounts,
    ) -> Result<Self, Error> {
        let endpoint_dir = run_dir.join(name);
        fs::create_dir_all(&endpoint_dir)
            .map_err(|e| Error::io("create endpoint folder", &endpoint_dir, e))?;
        remove_leftovers(&endpoint_dir, already.batches)?;
        if let Some(parent) = hash_log_path.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io("create folder", parent, e))?;
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
        Ok(BatchWriter {
            endpoint_dir,
            endpoint_path: endpoint_path.to_string(),
            pending: Vec::with_capacity(BATCH_SIZE),
            written: already,
            envelope: Vec::with_capacity(8 * 1024),
            hash_log,
            hash_log_path: hash_log_path.to_path_buf(),
        })
    }

    /// What is on disk so far (committed batches only).
    pub(crate) fn written(&self) -> WrittenCounts {
        self.written
    }

    /// Drops records collected but not committed (an interrupted run fetches them
    /// again when resumed, so batch boundaries match an uninterrupted run's).
    pub(crate) fn discard_pending(&mut self) {
        self.pending.clear();
    }

    /// Adds a record; commits the batch when it is full (and then returns `true`).
    pub(crate) fn push(&mut self, record: Record) -> Result<bool, Error> {
        self.pending.push(record);
        if self.pending.len() >= BATCH_SIZE {
            self.commit()?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Commits the records collected so far (a final, possibly short batch).
    pub(crate) fn finish(&mut self) -> Result<WrittenCounts, Error> {
        self.commit()?;
        Ok(self.written)
    }

    fn commit(&mut self) -> Result<(), Error> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch_number = self.written.batches;
        let final_dir = self.endpoint_dir.join(batch_dir_name(batch_number));
        let partial_dir = self
            .endpoint_dir
            .join(format!("{}{PARTIAL_SUFFIX}", batch_dir_name(batch_number)));
        if partial_dir.exists() {
            fs::remove_dir_all(&partial_dir)
                .map_err(|e| Error::io("remove stale batch", &partial_dir, e))?;
        }
        fs::create_dir(&partial_dir).map_err(|e| Error::io("create batch", &partial_dir, e))?;

        let total_records = self.pending.len() as u64;
        let mut bytes = 0u64;
        for (offset, record) in self.pending.iter().enumerate() {
            let pos = Position {
                record_index: self.written.records + offset as u64,
                batch_number,
                total_records,
            };
            self.envelope.clear();
            write_envelope(&self.endpoint_path, record, pos, &mut self.envelope);
            let path = partial_dir.join(record_file_name(pos.record_index, record.id.as_deref()));
            let mut file = File::create(&path).map_err(|e| Error::io("create", &path, e))?;
            file.write_all(&self.envelope)
                .map_err(|e| Error::io("write", &path, e))?;
            bytes += self.envelope.len() as u64;
        }
        let mut prefixes = Vec::with_capacity(self.pending.len() * 16);
        for record in &self.pending {
            prefixes.extend_from_slice(&record.hash.prefix().to_le_bytes());
        }
        self.hash_log
            .write_all(&prefixes)
            .map_err(|e| Error::io("write", &self.hash_log_path, e))?;
        // No per-file fsync here: measured 2,581 files/s with one against 17,080 without
        // (issue 2). The rename alone makes the batch appear whole to readers and
        // survives the process being killed; flushing to stable storage before a
        // checkpoint advances is the checkpoint's job.
        fs::rename(&partial_dir, &final_dir)
            .map_err(|e| Error::io("commit batch", &final_dir, e))?;

        self.written.records += total_records;
        self.written.batches += 1;
        self.written.bytes += bytes;
        self.pending.clear();
        Ok(())
    }
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
}
