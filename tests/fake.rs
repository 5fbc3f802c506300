//! Starts the project's fake Kalshi API (`fake-kalshi`) on an ephemeral loopback port
//! and stops it when dropped.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub struct FakeApi {
    child: Child,
    pub url: String,
    log: PathBuf,
}

impl FakeApi {
    /// Starts the fake with `args` (see `fake-kalshi --help`), logging requests into
    /// `log_dir`. The historical archive is empty unless `--historical` is given, so
    /// the tests written for the three current lists keep their record counts (the
    /// default plan still asks for the cutoff and the archive's one empty page).
    pub fn start(log_dir: &std::path::Path, args: &[&str]) -> FakeApi {
        let log = log_dir.join("fake-requests.log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_fake-kalshi"));
        if !args.contains(&"--historical") {
            command.args(["--historical", "0"]);
        }
        let mut child = command
            .args(args)
            .arg("--request-log")
            .arg(&log)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start fake-kalshi");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read fake URL");
        let url = line.trim().to_string();
        assert!(url.starts_with("http://127.0.0.1:"), "fake printed {url:?}");
        FakeApi { child, url, log }
    }

    /// The request log: one line per request, "N TARGET OUTCOME".
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The ids the fake serves (mirrors `src/bin/fake-kalshi/data.rs`).
pub fn series_ids(series: u64) -> Vec<String> {
    (0..series).map(|j| format!("KXS{j:05}")).collect()
}

pub fn event_ids(events: u64, series: u64) -> Vec<String> {
    (0..events)
        .map(|k| format!("KXS{:05}-E{k:06}", k % series))
        .collect()
}

pub fn market_ids(markets: u64, events: u64, series: u64) -> Vec<String> {
    (0..markets)
        .map(|i| {
            let k = i % events;
            format!("KXS{:05}-E{k:06}-M{i:07}", k % series)
        })
        .collect()
}
