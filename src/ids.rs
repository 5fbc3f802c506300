//! Id lists that feed the detail endpoints (`orderbooks`, `market_details`, ...).
//!
//! A list endpoint that feeds detail endpoints (markets, events, series) keeps an *id
//! log* beside its checkpoint: one line per stored record, in record order, holding the
//! record's id as a JSON string (or `null` when it has none). The batch writer appends
//! a batch's lines when it commits the batch, before the rename, exactly like the hash
//! log, so a resume cuts the log back to the records its checkpoint covers. `--tickers
//! FILE` is copied into the same format once, when a run starts, so a resume reads the
//! same ids even when they came from standard input.
//!
//! Reading streams the log; only a 64-bit hash of each id is kept, to skip repeats.

use std::collections::HashSet;
use std::fs::{self, File};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::record::{Record, write_json_string};

/// The file `--tickers` is copied to, in the state folder.
pub(crate) const TICKERS_LOG: &str = "tickers.ids";

/// An endpoint's id log in the state folder.
pub(crate) fn id_log_path(state_dir: &Path, endpoint: &str) -> PathBuf {
    state_dir.join(format!("{endpoint}.ids"))
}

/// Appends one id line per record to `out`.
pub(crate) fn append_id_lines(records: &[Record], out: &mut Vec<u8>) {
    for record in records {
        match &record.id {
            Some(id) => write_json_string(id, out),
            None => out.extend_from_slice(b"null"),
        }
        out.push(b'\n');
    }
}

/// Opens an endpoint's id log for appending after its first `records` lines (the
/// records a checkpoint covers); lines past them belong to batches a resume removed.
pub(crate) fn open_for_append(path: &Path, records: u64) -> Result<File, Error> {
    if let Some(parent) = path.parent() {
        crate::store::ensure_dir(parent)?;
    }
    let mut file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::io("open", path, e))?;
    let keep = byte_length_of_lines(&mut file, path, records)?;
    file.set_len(keep)
        .map_err(|e| Error::io("truncate", path, e))?;
    file.seek(SeekFrom::End(0))
        .map_err(|e| Error::io("seek", path, e))?;
    Ok(file)
}

/// The byte length of the first `lines` lines of `file`.
fn byte_length_of_lines(file: &mut File, path: &Path, lines: u64) -> Result<u64, Error> {
    if lines == 0 {
        return Ok(0);
    }
    let mut reader = BufReader::with_capacity(1 << 16, &mut *file);
    let mut length = 0u64;
    let mut found = 0u64;
    loop {
        let buf = reader.fill_buf().map_err(|e| Error::io("read", path, e))?;
        if buf.is_empty() {
            return Err(Error::BadFile {
                path: path.to_path_buf(),
                reason: format!(
                    "holds {found} ids but the checkpoint covers {lines} records; the run \
                     folder is damaged"
                ),
            });
        }
        for newline in memchr::memchr_iter(b'\n', buf) {
            found += 1;
            if found == lines {
                return Ok(length + newline as u64 + 1);
            }
        }
        let take = buf.len();
        length += take as u64;
        reader.consume(take);
    }
}

/// Copies `--tickers` (`-` for standard input) into `dest` in the id-log format: one
/// id a line, surrounding whitespace trimmed, blank lines and `#` comments skipped.
/// Returns how many ids were copied.
pub(crate) fn import_tickers(source: &Path, dest: &Path) -> Result<u64, Error> {
    let stdin = source == Path::new("-");
    let shown = if stdin {
        PathBuf::from("standard input")
    } else {
        source.to_path_buf()
    };
    let input: Box<dyn Read> = if stdin {
        Box::new(io::stdin().lock())
    } else {
        let file = File::open(source).map_err(|e| Error::io("read --tickers", source, e))?;
        if file.metadata().is_ok_and(|m| m.is_dir()) {
            return Err(Error::Usage(format!(
                "--tickers {}: is a folder; give a file with one ticker a line, or - for \
                 standard input",
                source.display()
            )));
        }
        Box::new(file)
    };
    if let Some(parent) = dest.parent() {
        crate::store::ensure_dir(parent)?;
    }
    let partial = dest.with_extension("ids.partial");
    let out = File::create(&partial).map_err(|e| Error::io("create", &partial, e))?;
    let mut out = io::BufWriter::new(out);
    let mut reader = BufReader::new(input);
    let mut line = Vec::new();
    let mut line_number = 0u64;
    let mut count = 0u64;
    let mut encoded = Vec::new();
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| Error::io("read --tickers", &shown, e))?;
        if n == 0 {
            break;
        }
        line_number += 1;
        let Ok(text) = std::str::from_utf8(&line) else {
            return Err(Error::BadFile {
                path: shown,
                reason: format!("line {line_number} is not UTF-8 text"),
            });
        };
        let id = text.trim();
        if id.is_empty() || id.starts_with('#') {
            continue;
        }
        encoded.clear();
        write_json_string(id, &mut encoded);
        encoded.push(b'\n');
        out.write_all(&encoded)
            .map_err(|e| Error::io("write", &partial, e))?;
        count += 1;
    }
    out.into_inner()
        .map_err(|e| Error::io("write", &partial, e.into_error()))?
        .sync_all()
        .map_err(|e| Error::io("write", &partial, e))?;
    fs::rename(&partial, dest).map_err(|e| Error::io("rename", dest, e))?;
    Ok(count)
}

/// Streams the usable ids of an id log: `null` and empty ids are skipped (they cannot
/// be asked for), and so are repeats of an id already read.
pub(crate) struct IdReader {
    reader: BufReader<File>,
    path: PathBuf,
    line_number: u64,
    seen: HashSet<u64>,
    /// Lines skipped because the record had no id, or an empty one.
    pub(crate) unusable: u64,
    /// Lines skipped because the id was read before.
    pub(crate) repeated: u64,
    /// Usable ids handed out so far.
    pub(crate) handed_out: u64,
}

impl IdReader {
    /// Opens an id log; `Ok(None)` when it does not exist.
    pub(crate) fn open(path: &Path) -> Result<Option<IdReader>, Error> {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("open", path, e)),
        };
        Ok(Some(IdReader {
            reader: BufReader::with_capacity(1 << 16, file),
            path: path.to_path_buf(),
            line_number: 0,
            seen: HashSet::new(),
            unusable: 0,
            repeated: 0,
            handed_out: 0,
        }))
    }

    /// The next up to `n` usable ids (fewer only at the end of the log).
    pub(crate) fn next_chunk(&mut self, n: usize) -> Result<Vec<String>, Error> {
        let mut chunk = Vec::with_capacity(n);
        let mut line = String::new();
        while chunk.len() < n {
            line.clear();
            let read = self
                .reader
                .read_line(&mut line)
                .map_err(|e| Error::io("read", &self.path, e))?;
            if read == 0 {
                break;
            }
            self.line_number += 1;
            let text = line.trim_end_matches('\n');
            let id: Option<String> = serde_json::from_str(text).map_err(|e| Error::BadFile {
                path: self.path.clone(),
                reason: format!(
                    "line {} is not a JSON string or null: {e}",
                    self.line_number
                ),
            })?;
            let Some(id) = id.filter(|id| !id.is_empty()) else {
                self.unusable += 1;
                continue;
            };
            let mut hasher = DefaultHasher::new();
            id.hash(&mut hasher);
            if !self.seen.insert(hasher.finish()) {
                self.repeated += 1;
                continue;
            }
            chunk.push(id);
        }
        self.handed_out += chunk.len() as u64;
        Ok(chunk)
    }

    /// Reads past the first `chunks` chunks of `n` ids (a resume's position).
    pub(crate) fn skip_chunks(&mut self, chunks: u64, n: usize) -> Result<(), Error> {
        for _ in 0..chunks {
            if self.next_chunk(n)?.len() < n {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kalshi-ids-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn logs_are_cut_back_to_the_checkpoint_and_read_without_repeats() {
        let dir = temp_dir("cut");
        let path = dir.join("markets.ids");
        fs::write(&path, "\"A\"\nnull\n\"\"\n\"B\"\n\"A\"\n\"C\"\n\"D\"\n").expect("write");
        let mut file = open_for_append(&path, 6).expect("open");
        file.write_all(b"\"E\"\n").expect("append");
        drop(file);
        let text = fs::read_to_string(&path).expect("read");
        assert_eq!(text, "\"A\"\nnull\n\"\"\n\"B\"\n\"A\"\n\"C\"\n\"E\"\n");
        let mut reader = IdReader::open(&path).expect("open").expect("exists");
        assert_eq!(reader.next_chunk(2).expect("chunk"), ["A", "B"]);
        assert_eq!(reader.next_chunk(5).expect("chunk"), ["C", "E"]);
        assert!(reader.next_chunk(5).expect("chunk").is_empty());
        assert_eq!((reader.unusable, reader.repeated), (2, 1));
        assert!(open_for_append(&path, 9).is_err(), "a short log is damage");
        assert_eq!(open_for_append(&path, 0).map(|_| ()).ok(), Some(()));
        assert_eq!(fs::metadata(&path).expect("meta").len(), 0);
    }

    #[test]
    fn skipping_chunks_lands_where_reading_them_would() {
        let dir = temp_dir("skip");
        let path = dir.join("x.ids");
        let body: String = (0..25).map(|i| format!("\"T{i}\"\n")).collect();
        fs::write(&path, body).expect("write");
        let mut reader = IdReader::open(&path).expect("open").expect("exists");
        reader.skip_chunks(2, 10).expect("skip");
        assert_eq!(reader.next_chunk(10).expect("chunk").len(), 5);
    }

    #[test]
    fn tickers_files_are_trimmed_and_checked() {
        let dir = temp_dir("tickers");
        let source = dir.join("t.txt");
        fs::write(&source, "A\r\n\n  # comment\n  B  \nä/../x\n").expect("write");
        let dest = dir.join(TICKERS_LOG);
        assert_eq!(import_tickers(&source, &dest).expect("import"), 3);
        assert_eq!(
            fs::read_to_string(&dest).expect("read"),
            "\"A\"\n\"B\"\n\"ä/../x\"\n"
        );
        fs::write(&source, b"A\n\xff\xfe\n").expect("write");
        let err = import_tickers(&source, &dest).expect_err("bad utf-8");
        assert!(err.to_string().contains("line 2 is not UTF-8"), "{err}");
        let missing = import_tickers(&dir.join("nope"), &dest).expect_err("missing");
        assert!(missing.to_string().contains("nope"), "{missing}");
    }
}
