//! `kalshi-ingest verify DIR`: checks a run folder against the output contract.
//!
//! For every record file: the envelope's fields and types, `record_hash` recomputed from
//! `data`, `record_id` against the data's id field, `record_index` continuity across
//! batches, the file name, `batch_number` and `total_records` against the folder. For
//! every endpoint: batch folders contiguous and at most 1,000 files, no leftover
//! `.partial` folder, no duplicate content, and the summary's counts equal to the files.
//!
//! Problems are printed one per line as `path: reason` on stdout; the process exits 1
//! if there is any, else 0 after a one-line all-clear.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::Error;
use crate::plan;
use crate::record::{SCHEMA_VERSION, hash_value};
use crate::store::{BATCH_SIZE, PARTIAL_SUFFIX, RUN_DIR_PREFIX, record_file_name};
use crate::summary::{Summary, summary_file_name};

/// What `verify` found.
#[derive(Debug, Default)]
pub(crate) struct Report {
    /// `(path, reason)` for each problem, in the order found.
    pub(crate) problems: Vec<(PathBuf, String)>,
    pub(crate) records: u64,
    pub(crate) batches: u64,
    pub(crate) endpoints: u64,
}

impl Report {
    fn problem(&mut self, path: &Path, reason: impl Into<String>) {
        self.problems.push((path.to_path_buf(), reason.into()));
    }
}

/// Verifies the run folder `dir`. `Err` only when `dir` is not a run folder at all.
pub(crate) fn verify(dir: &Path) -> Result<Report, Error> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Some(session) = name.strip_prefix(RUN_DIR_PREFIX) else {
        return Err(Error::Usage(format!(
            "verify {}: not a run folder (its name must start with {RUN_DIR_PREFIX})",
            dir.display()
        )));
    };
    if !dir.is_dir() {
        return Err(Error::Usage(format!(
            "verify {}: no such folder",
            dir.display()
        )));
    }
    let mut report = Report::default();
    let summary_path = dir.join(summary_file_name(session));
    let summary: Option<Summary> = match fs::read(&summary_path) {
        Err(_) => {
            report.problem(
                &summary_path,
                "missing: the run did not finish (resume it with kalshi-ingest run --resume)",
            );
            None
        }
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(summary) => Some(summary),
            Err(e) => {
                report.problem(&summary_path, format!("not a valid session summary: {e}"));
                None
            }
        },
    };
    let mut names: Vec<String> = match &summary {
        Some(s) => s.endpoints.iter().map(|e| e.name.clone()).collect(),
        None => Vec::new(),
    };
    // Endpoint folders the summary does not list are checked too.
    for spec in plan::CATALOGUE {
        if dir.join(spec.name).is_dir() && !names.iter().any(|n| n == spec.name) {
            names.push(spec.name.to_string());
        }
    }
    for name in names {
        let expected = summary
            .as_ref()
            .and_then(|s| s.endpoints.iter().find(|e| e.name == name));
        let counts = verify_endpoint(dir, &name, &mut report);
        report.endpoints += 1;
        let endpoint_dir = dir.join(&name);
        match expected {
            Some(e) => {
                if e.records_saved != counts.records {
                    report.problem(
                        &endpoint_dir,
                        format!(
                            "the summary says {} records, the batch folders hold {}",
                            e.records_saved, counts.records
                        ),
                    );
                }
                if e.batches != counts.batches {
                    report.problem(
                        &endpoint_dir,
                        format!(
                            "the summary says {} batches, there are {}",
                            e.batches, counts.batches
                        ),
                    );
                }
                if e.bytes_written != counts.bytes {
                    report.problem(
                        &endpoint_dir,
                        format!(
                            "the summary says {} bytes written, the record files hold {}",
                            e.bytes_written, counts.bytes
                        ),
                    );
                }
            }
            None if summary.is_some() => report.problem(
                &endpoint_dir,
                "an endpoint folder the summary does not list",
            ),
            None => {}
        }
    }
    if let Some(s) = &summary {
        let total: u64 = s.endpoints.iter().map(|e| e.records_saved).sum();
        if s.totals.records_saved != total {
            report.problem(
                &summary_path,
                format!(
                    "totals.records_saved is {} but the endpoints add up to {total}",
                    s.totals.records_saved
                ),
            );
        }
    }
    Ok(report)
}

#[derive(Default)]
struct Counts {
    records: u64,
    batches: u64,
    bytes: u64,
}

fn verify_endpoint(run_dir: &Path, name: &str, report: &mut Report) -> Counts {
    let mut counts = Counts::default();
    let endpoint_dir = run_dir.join(name);
    let spec = plan::CATALOGUE.iter().find(|s| s.name == name);
    let entries = match fs::read_dir(&endpoint_dir) {
        Ok(entries) => entries,
        // An endpoint that never started (or stored nothing yet) has no folder; the
        // summary's counts are compared with zero below.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return counts,
        Err(e) => {
            report.problem(&endpoint_dir, format!("cannot read: {e}"));
            return counts;
        }
    };
    let mut batches: Vec<(u64, PathBuf)> = Vec::new();
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let number = file_name
            .strip_prefix("batch_")
            .map(|n| n.strip_suffix(".jsonl").unwrap_or(n))
            .filter(|n| n.len() >= 4 && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u64>().ok());
        match number {
            Some(n) => batches.push((n, entry.path())),
            None if file_name.ends_with(PARTIAL_SUFFIX) => report.problem(
                &entry.path(),
                "a batch still being written (resume the run to finish it)",
            ),
            None => report.problem(&entry.path(), "unexpected entry in an endpoint folder"),
        }
    }
    batches.sort();
    let mut seen: HashMap<String, PathBuf> = HashMap::new();
    let mut next_index = 0u64;
    for (position, (number, batch_path)) in batches.iter().enumerate() {
        if *number != position as u64 {
            report.problem(
                batch_path,
                format!("expected batch_{position:04} here: a batch is missing"),
            );
        }
        counts.batches += 1;
        // (where, whether it is a per-record file, envelope bytes) of each record.
        let mut records: Vec<(PathBuf, bool, Vec<u8>)> = Vec::new();
        if batch_path.is_dir() {
            let mut files: Vec<PathBuf> = match fs::read_dir(batch_path) {
                Ok(entries) => entries.flatten().map(|e| e.path()).collect(),
                Err(e) => {
                    report.problem(batch_path, format!("cannot read: {e}"));
                    continue;
                }
            };
            files.sort();
            for path in files {
                match fs::read(&path) {
                    Ok(bytes) => records.push((path, true, bytes)),
                    Err(e) => report.problem(&path, format!("cannot read: {e}")),
                }
            }
        } else {
            match fs::read(batch_path) {
                Ok(bytes) => {
                    for (line, text) in bytes.split_inclusive(|b| *b == b'\n').enumerate() {
                        let location =
                            PathBuf::from(format!("{}:{}", batch_path.display(), line + 1));
                        records.push((location, false, text.to_vec()));
                    }
                }
                Err(e) => report.problem(batch_path, format!("cannot read: {e}")),
            }
        }
        if records.len() > BATCH_SIZE {
            report.problem(
                batch_path,
                format!("{} records, more than {BATCH_SIZE}", records.len()),
            );
        }
        let batch_len = records.len() as u64;
        for (location, is_file, bytes) in records {
            let ctx = RecordContext {
                endpoint_path: spec.map(|s| s.path),
                // A whole-response detail record (event_details) holds its id one
                // level down; its record_id is the id that was asked for.
                id_field: spec
                    .filter(|s| {
                        s.detail
                            .is_none_or(|d| d.per_id_record != crate::plan::PerIdRecord::Body)
                    })
                    .map(|s| s.id_field),
                index: next_index,
                batch_number: *number,
                batch_len,
                check_name: is_file,
            };
            if let Some(hash) = check_record(&location, &bytes, &ctx, report) {
                if let Some(first) = seen.get(&hash) {
                    report.problem(
                        &location,
                        format!("duplicate content: same record_hash as {}", first.display()),
                    );
                } else {
                    seen.insert(hash, location.clone());
                }
            }
            counts.bytes += bytes.len() as u64;
            next_index += 1;
            counts.records += 1;
            report.records += 1;
        }
    }
    report.batches += counts.batches;
    counts
}

struct RecordContext<'a> {
    endpoint_path: Option<&'a str>,
    id_field: Option<&'a str>,
    index: u64,
    batch_number: u64,
    batch_len: u64,
    /// Per-record files carry a name derived from the index and id.
    check_name: bool,
}

/// Checks one envelope (a record file, or a line of a JSON Lines batch at `path`);
/// returns its hash when it could be parsed.
fn check_record(
    path: &Path,
    bytes: &[u8],
    ctx: &RecordContext,
    report: &mut Report,
) -> Option<String> {
    let envelope: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => {
            report.problem(path, format!("not valid JSON: {e}"));
            return None;
        }
    };
    let mut bad = |reason: String| report.problem(path, reason);
    if bytes.last() != Some(&b'\n') || bytes.iter().filter(|b| **b == b'\n').count() != 1 {
        bad("not exactly one line ending in a newline".into());
    }
    if envelope["schema_version"].as_u64() != Some(u64::from(SCHEMA_VERSION)) {
        bad(format!("schema_version is not {SCHEMA_VERSION}"));
    }
    if let Some(endpoint) = ctx.endpoint_path
        && envelope["endpoint"] != endpoint
    {
        bad(format!(
            "endpoint is {}, expected {endpoint:?}",
            envelope["endpoint"]
        ));
    }
    let time = envelope["ingestion_time"].as_str().unwrap_or("");
    if time.len() != 15 || time.as_bytes().get(8) != Some(&b'_') {
        bad("ingestion_time is not YYYYMMDD_HHMMSS".into());
    }
    let id = match &envelope["record_id"] {
        Value::String(s) => Some(s.as_str()),
        Value::Null => None,
        _ => {
            bad("record_id is neither a string nor null".into());
            None
        }
    };
    let data = &envelope["data"];
    if data.is_null() {
        bad("no data".into());
    }
    if let (Some(field), Some(id)) = (ctx.id_field, id) {
        let from_data = match &data[field] {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        if from_data.as_deref() != Some(id) {
            bad(format!("record_id does not match data.{field}"));
        }
    }
    let info = &envelope["batch_info"];
    if info["record_index"].as_u64() != Some(ctx.index) {
        bad(format!(
            "record_index is {}, expected {} (records must be numbered without gaps)",
            info["record_index"], ctx.index
        ));
    }
    if info["batch_number"].as_u64() != Some(ctx.batch_number) {
        bad(format!(
            "batch_number is {}, the folder is {}",
            info["batch_number"], ctx.batch_number
        ));
    }
    if info["total_records"].as_u64() != Some(ctx.batch_len) {
        bad(format!(
            "total_records is {}, the batch holds {}",
            info["total_records"], ctx.batch_len
        ));
    }
    let expected_name = record_file_name(ctx.index, id);
    if ctx.check_name
        && path.file_name().map(|n| n.to_string_lossy().into_owned()) != Some(expected_name.clone())
    {
        bad(format!("file name should be {expected_name}"));
    }
    let stored = envelope["record_hash"].as_str().unwrap_or("").to_string();
    let recomputed = hash_value(data).to_hex();
    if stored != recomputed {
        bad(format!(
            "record_hash {stored:.16}… does not match data (recomputed {recomputed:.16}…)"
        ));
    }
    Some(stored)
}
