//! Test helpers: unique temporary folders, running the binary, reading a run's output.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// A fresh folder under the target directory, removed when dropped (kept on failure
/// for inspection when KEEP_TEST_DIRS is set).
pub struct Dir {
    pub path: PathBuf,
}

impl Dir {
    pub fn new(name: &str) -> Dir {
        let n = NEXT_DIR.fetch_add(1, Ordering::SeqCst);
        let root = std::env::temp_dir().join(format!("kalshi-ingest-tests-{}", std::process::id()));
        let path = root.join(format!("{name}-{n}"));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create test dir");
        Dir { path }
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        if std::env::var_os("KEEP_TEST_DIRS").is_none() && !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Runs kalshi-ingest with a cleared environment (no proxy, no RUST_LOG, no
/// KALSHI_BASE_URL leaks in from the developer's shell).
pub fn ingest(args: &[&str]) -> Output {
    ingest_with_env(args, &[])
}

/// Runs kalshi-ingest against `url` with the run folder created in `<dir>/out`,
/// followed by `extra` flags.
pub fn ingest_into(url: &str, dir: &Dir, extra: &[&str]) -> Output {
    let out_dir = dir.path.join("out");
    let mut args = vec![
        "--base-url",
        url,
        "--out",
        out_dir.to_str().expect("utf-8 path"),
    ];
    args.extend_from_slice(extra);
    ingest(&args)
}

pub fn ingest_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kalshi-ingest"));
    cmd.env_clear().args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run kalshi-ingest")
}

/// Starts kalshi-ingest with `args` (cleared environment, stdout and stderr piped).
pub fn spawn(args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_kalshi-ingest"))
        .env_clear()
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start kalshi-ingest")
}

/// Polls `condition` every 2 ms for up to 60 s.
pub fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// The run folder inside `out`, once there is one.
pub fn the_run_dir(out: &Path) -> Option<PathBuf> {
    fs::read_dir(out)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir())
}

/// Waits until the run folder in `out` holds `inside` (e.g. `markets/batch_0001`)
/// and returns the run folder.
pub fn wait_for_run_dir_holding(out: &Path, inside: &str) -> PathBuf {
    let mut found = None;
    wait_for(inside, || {
        found = the_run_dir(out).filter(|d| d.join(inside).exists());
        found.is_some()
    });
    found.expect("found")
}

/// Runs `kalshi-ingest verify DIR`.
pub fn verify(run_dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kalshi-ingest"))
        .env_clear()
        .arg("verify")
        .arg(run_dir)
        .output()
        .expect("run kalshi-ingest verify")
}

/// Describes a finished command for assertion messages.
pub fn show(out: &Output) -> String {
    format!(
        "status: {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The run folder the command printed on stdout.
pub fn run_dir_of(out: &Output) -> PathBuf {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no run folder printed\n{}", show(out)));
    PathBuf::from(line.trim())
}

/// One record file read back.
pub struct RecordFile {
    pub path: PathBuf,
    pub batch_dir: String,
    pub envelope: Value,
}

/// Everything a run wrote.
pub struct RunOutput {
    pub summary: Value,
    /// Record files per endpoint folder, sorted by path.
    pub records: BTreeMap<String, Vec<RecordFile>>,
}

impl RunOutput {
    pub fn read(dir: &Path) -> RunOutput {
        let name = dir
            .file_name()
            .expect("run dir has a name")
            .to_string_lossy()
            .to_string();
        let session = name
            .strip_prefix("kalshi_atomic_ingestion_")
            .unwrap_or_else(|| panic!("bad run folder name {name}"));
        let summary_path = dir.join(format!("atomic_session_summary_{session}.json"));
        let summary: Value = serde_json::from_slice(
            &fs::read(&summary_path).unwrap_or_else(|e| panic!("{}: {e}", summary_path.display())),
        )
        .expect("summary is JSON");
        let mut records = BTreeMap::new();
        for entry in fs::read_dir(dir).expect("read run dir") {
            let entry = entry.expect("entry");
            if !entry.file_type().expect("type").is_dir() {
                continue;
            }
            let endpoint = entry.file_name().to_string_lossy().to_string();
            if endpoint == "checkpoints" {
                continue;
            }
            let mut files = Vec::new();
            let mut batches: Vec<PathBuf> = fs::read_dir(entry.path())
                .expect("read endpoint dir")
                .map(|e| e.expect("entry").path())
                .collect();
            batches.sort();
            for batch in batches {
                let batch_name = batch
                    .file_name()
                    .expect("name")
                    .to_string_lossy()
                    .to_string();
                if batch.is_file() {
                    // --format jsonl: one envelope a line.
                    let text = fs::read_to_string(&batch).expect("read jsonl batch");
                    for line in text.lines() {
                        files.push(RecordFile {
                            path: batch.clone(),
                            batch_dir: batch_name.trim_end_matches(".jsonl").to_string(),
                            envelope: serde_json::from_str(line).expect("envelope line"),
                        });
                    }
                    continue;
                }
                let batch_dir = batch_name;
                let mut paths: Vec<PathBuf> = fs::read_dir(&batch)
                    .expect("read batch dir")
                    .map(|e| e.expect("entry").path())
                    .collect();
                paths.sort();
                for path in paths {
                    let bytes = fs::read(&path).expect("read record");
                    let envelope: Value = serde_json::from_slice(&bytes)
                        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    files.push(RecordFile {
                        path,
                        batch_dir: batch_dir.clone(),
                        envelope,
                    });
                }
            }
            records.insert(endpoint, files);
        }
        RunOutput { summary, records }
    }

    /// The summary entry of one endpoint.
    pub fn endpoint(&self, name: &str) -> &Value {
        self.summary["endpoints"]
            .as_array()
            .expect("endpoints array")
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no summary for {name}"))
    }

    /// The envelopes of one endpoint, in record_index order.
    pub fn records(&self, endpoint: &str) -> Vec<&Value> {
        self.records
            .get(endpoint)
            .map(|files| files.iter().map(|f| &f.envelope).collect())
            .unwrap_or_default()
    }

    /// The record ids of one endpoint, in record_index order.
    pub fn ids(&self, endpoint: &str) -> Vec<String> {
        self.records
            .get(endpoint)
            .map(|files| {
                files
                    .iter()
                    .map(|f| {
                        f.envelope["record_id"]
                            .as_str()
                            .expect("string id")
                            .to_string()
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Every file below `root`, recursively.
pub fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}
