//! Issue 4: resume, interruption and verification. Nothing lost, ever.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use crate::fake::{FakeApi, event_ids, market_ids, series_ids};
use crate::util::{Dir, RunOutput, ingest, run_dir_of, show, spawn, the_run_dir, verify, wait_for};

const MARKETS: u64 = 5200;
const EVENTS: u64 = 1300;
const SERIES: u64 = 40;

/// (endpoint, id, hash, record_index) of every record: what "the same result" means.
fn record_set(run_dir: &Path) -> BTreeSet<(String, String, String, u64)> {
    let run = RunOutput::read(run_dir);
    run.records
        .iter()
        .flat_map(|(endpoint, files)| {
            files.iter().map(move |f| {
                let e = &f.envelope;
                (
                    endpoint.clone(),
                    e["record_id"].as_str().expect("id").to_string(),
                    e["record_hash"].as_str().expect("hash").to_string(),
                    e["batch_info"]["record_index"].as_u64().expect("index"),
                )
            })
        })
        .collect()
}

fn requests(fake: &FakeApi) -> usize {
    fake.requests().len()
}

fn exists(run_dir: &Option<PathBuf>, rel: &str) -> bool {
    run_dir.as_ref().is_some_and(|d| d.join(rel).exists())
}

#[test]
fn sigkill_at_many_points_then_resume_equals_a_clean_run() {
    let dir = Dir::new("sigkill");
    let fake = FakeApi::start(
        &dir.path,
        &[
            "--markets",
            &MARKETS.to_string(),
            "--events",
            &EVENTS.to_string(),
            "--series",
            &SERIES.to_string(),
            "--latency-ms",
            "15",
            "--overlap",
            "7",
        ],
    );
    let clean_out = dir.path.join("clean");
    let clean = ingest(&[
        "--base-url",
        &fake.url,
        "--out",
        clean_out.to_str().expect("utf-8"),
        "--rate=0",
    ]);
    assert_eq!(clean.status.code(), Some(0), "{}", show(&clean));
    let clean_set = record_set(&run_dir_of(&clean));
    assert_eq!(clean_set.len() as u64, MARKETS + EVENTS + SERIES);

    let out = dir.path.join("killed");
    let out_str = out.to_str().expect("utf-8").to_string();
    // Kill points: during the first request, between endpoints, during a page,
    // right after a batch commit, mid-endpoint, repeatedly during resumed sessions.
    type Point = Box<dyn Fn(&FakeApi, &Option<PathBuf>, usize) -> bool>;
    let points: Vec<(&str, Point)> = vec![
        (
            "first request in flight",
            Box::new(|f, _, base| requests(f) > base),
        ),
        (
            "series done",
            Box::new(|_, d, _| exists(d, "checkpoints/series.json")),
        ),
        (
            "events page 3 in flight",
            Box::new(|f, _, base| requests(f) >= base + 3),
        ),
        (
            "events batch 1 committed",
            Box::new(|_, d, _| exists(d, "events/batch_0001")),
        ),
        (
            "between events and markets",
            Box::new(|_, d, _| exists(d, "markets")),
        ),
        (
            "markets page 2 in flight",
            Box::new(|f, _, base| requests(f) >= base + 2),
        ),
        (
            "markets batch 2 committed",
            Box::new(|_, d, _| exists(d, "markets/batch_0002")),
        ),
        (
            "markets batch 3 partial",
            Box::new(|_, d, _| exists(d, "markets/batch_0003.partial")),
        ),
        (
            "markets page 2 of a resumed session",
            Box::new(|f, _, base| requests(f) >= base + 2),
        ),
        (
            "markets batch 5 committed",
            Box::new(|_, d, _| exists(d, "markets/batch_0005")),
        ),
    ];
    let mut run_dir: Option<PathBuf> = None;
    let mut kills = 0;
    for (what, point) in &points {
        let base = requests(&fake);
        let mut child = match &run_dir {
            None => spawn(&["--base-url", &fake.url, "--out", &out_str, "--rate=0"]),
            Some(d) => spawn(&["run", "--resume", d.to_str().expect("utf-8"), "--rate=0"]),
        };
        let mut finished = false;
        wait_for(what, || {
            if run_dir.is_none() {
                run_dir = the_run_dir(&out);
            }
            if matches!(child.try_wait(), Ok(Some(_))) {
                finished = true;
                return true;
            }
            point(&fake, &run_dir, base)
        });
        if finished {
            break;
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        kills += 1;
        // A killed folder is never half-written for a reader: no .partial is counted
        // by verify as a record, and every committed record re-hashes.
        let d = run_dir
            .clone()
            .expect("the run folder exists once a kill point is reached");
        let report = verify(&d);
        let text = String::from_utf8_lossy(&report.stdout);
        for line in text.lines() {
            assert!(
                line.contains("missing: the run did not finish")
                    || line.contains(".partial: a batch still being written")
                    || line.contains("the summary"),
                "after kill at {what}: {line}"
            );
        }
    }
    assert!(kills >= 8, "only {kills} kill points were reached");
    let d = run_dir.expect("run folder");
    let done = ingest(&["run", "--resume", d.to_str().expect("utf-8"), "--rate=0"]);
    assert_eq!(done.status.code(), Some(0), "{}", show(&done));
    assert_eq!(
        record_set(&d),
        clean_set,
        "the resumed run equals the clean run"
    );
    let report = verify(&d);
    assert_eq!(report.status.code(), Some(0), "{}", show(&report));
    let run = RunOutput::read(&d);
    assert_eq!(run.ids("markets"), market_ids(MARKETS, EVENTS, SERIES));
    assert_eq!(run.ids("events"), event_ids(EVENTS, SERIES));
    assert_eq!(run.ids("series"), series_ids(SERIES));
    assert_eq!(run.summary["status"], "complete");
    // Every session that got as far as registering itself is listed; a kill during
    // a resumed session's start-up can land before it registers.
    let sessions = run.summary["sessions"].as_array().expect("sessions");
    let last = sessions.len() - 1;
    assert!(
        sessions.len() >= 2 && sessions.len() <= kills + 1,
        "{sessions:?}"
    );
    assert!(
        sessions[..last].iter().all(|s| s["ended"] == "killed"),
        "{sessions:?}"
    );
    assert_eq!(sessions[last]["ended"], "complete");
    // Duplicates from overlapping pages are counted exactly as in the clean run.
    let clean_run = RunOutput::read(&run_dir_of(&clean));
    for name in ["events", "markets"] {
        assert_eq!(
            run.endpoint(name)["duplicates_skipped"],
            clean_run.endpoint(name)["duplicates_skipped"],
            "{name}"
        );
    }
}

fn signal(child: &Child, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits");
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
}

#[test]
fn ctrl_c_stops_safely_with_130_and_the_run_resumes() {
    let dir = Dir::new("ctrl-c");
    let fake = FakeApi::start(
        &dir.path,
        &[
            "--markets",
            "12000",
            "--events",
            "100",
            "--series",
            "5",
            "--latency-ms",
            "30",
        ],
    );
    let out = dir.path.join("out");
    let child = spawn(&[
        "--base-url",
        &fake.url,
        "--out",
        out.to_str().expect("utf-8"),
        "--rate=0",
    ]);
    let mut run_dir = None;
    wait_for("markets batch 1", || {
        run_dir = the_run_dir(&out);
        exists(&run_dir, "markets/batch_0001")
    });
    signal(&child, libc::SIGINT);
    let started = Instant::now();
    let output = child.wait_with_output().expect("wait");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(output.status.code(), Some(130), "{}", show(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("run --resume"), "{stderr}");
    let d = run_dir.expect("run folder");
    let run = RunOutput::read(&d);
    assert_eq!(run.summary["status"], "interrupted");
    assert_eq!(run.summary["exit_code"], 130);
    assert_eq!(run.endpoint("markets")["status"], "interrupted");
    assert_eq!(run.summary["sessions"][0]["ended"], "interrupted");
    let report = verify(&d);
    assert_eq!(
        report.status.code(),
        Some(0),
        "interrupted output verifies: {}",
        show(&report)
    );

    let resumed = ingest(&["run", "--resume", d.to_str().expect("utf-8"), "--rate=0"]);
    assert_eq!(resumed.status.code(), Some(0), "{}", show(&resumed));
    let run = RunOutput::read(&d);
    assert_eq!(run.ids("markets"), market_ids(12000, 100, 5));
    assert_eq!(run.endpoint("series")["status"], "complete");
    assert_eq!(verify(&d).status.code(), Some(0));
}

#[test]
fn a_second_ctrl_c_exits_at_once_and_the_folder_still_resumes() {
    let dir = Dir::new("ctrl-c-twice");
    // Every request stalls for 20 s: the first Ctrl-C has to wait for it.
    let stalling = FakeApi::start(
        &dir.path,
        &[
            "--series",
            "5",
            "--fault-rate",
            "1",
            "--faults",
            "stall",
            "--stall-ms",
            "20000",
        ],
    );
    let out = dir.path.join("out");
    let mut child = spawn(&[
        "--base-url",
        &stalling.url,
        "--out",
        out.to_str().expect("utf-8"),
        "--endpoints",
        "series",
    ]);
    wait_for("the first request", || requests(&stalling) >= 1);
    signal(&child, libc::SIGINT);
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        matches!(child.try_wait(), Ok(None)),
        "the first Ctrl-C waits for a safe point"
    );
    let started = Instant::now();
    signal(&child, libc::SIGINT);
    let output = child.wait_with_output().expect("wait");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(output.status.code(), Some(130), "{}", show(&output));
    let d = the_run_dir(&out).expect("run folder");
    let good = FakeApi::start(&dir.path, &["--series", "5"]);
    let resumed = ingest(&[
        "run",
        "--resume",
        d.to_str().expect("utf-8"),
        "--base-url",
        &good.url,
    ]);
    assert_eq!(resumed.status.code(), Some(0), "{}", show(&resumed));
    assert_eq!(RunOutput::read(&d).ids("series"), series_ids(5));
}

#[test]
fn verify_names_a_corrupted_record_and_a_missing_one() {
    let dir = Dir::new("verify");
    let fake = FakeApi::start(
        &dir.path,
        &["--markets", "1500", "--events", "10", "--series", "3"],
    );
    let out = dir.path.join("out");
    let done = ingest(&[
        "--base-url",
        &fake.url,
        "--out",
        out.to_str().expect("utf-8"),
        "--rate=0",
    ]);
    assert_eq!(done.status.code(), Some(0), "{}", show(&done));
    let d = run_dir_of(&done);
    let ok = verify(&d);
    assert_eq!(ok.status.code(), Some(0), "{}", show(&ok));
    assert!(
        String::from_utf8_lossy(&ok.stdout).starts_with("ok: 1513 records"),
        "{}",
        show(&ok)
    );

    let run = RunOutput::read(&d);
    let victim = &run.records["markets"][1200].path;
    let text = std::fs::read_to_string(victim).expect("read");
    std::fs::write(
        victim,
        text.replacen("Will the high temp", "Will the HIGH temp", 1),
    )
    .expect("write");
    let gone = &run.records["events"][4].path;
    std::fs::remove_file(gone).expect("remove");

    let bad = verify(&d);
    assert_eq!(bad.status.code(), Some(1), "{}", show(&bad));
    let stdout = String::from_utf8_lossy(&bad.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with(&format!("{}: record_hash", victim.display()))),
        "{stdout}"
    );
    assert!(stdout.contains("record_index is 5, expected 4"), "{stdout}");
    assert!(
        stdout.contains("the summary says 10 records, the batch folders hold 9"),
        "{stdout}"
    );
}

#[test]
fn damaged_state_files_get_a_clear_error_naming_them() {
    let dir = Dir::new("damaged");
    let fake = FakeApi::start(
        &dir.path,
        &["--markets", "2500", "--events", "10", "--series", "3"],
    );
    let out = dir.path.join("out");
    let done = ingest(&[
        "--base-url",
        &fake.url,
        "--out",
        out.to_str().expect("utf-8"),
        "--rate=0",
    ]);
    let d = run_dir_of(&done);
    let d_str = d.to_str().expect("utf-8").to_string();
    let checkpoint = d.join("checkpoints/markets.json");
    let original = std::fs::read_to_string(&checkpoint).expect("read");

    let cases: Vec<(&str, String, &str)> = vec![
        (
            "truncated",
            original[..original.len() / 2].to_string(),
            "not valid JSON",
        ),
        (
            "other version",
            original.replacen("\"schema_version\": 1", "\"schema_version\": 99", 1),
            "another version",
        ),
        (
            "hand-edited",
            original.replacen("\"records\": 2500", "\"records\": 2499", 1),
            "disagree",
        ),
        (
            "wrong endpoint",
            original.replacen("\"endpoint\": \"markets\"", "\"endpoint\": \"events\"", 1),
            "belongs to endpoint",
        ),
    ];
    for (what, content, want) in cases {
        std::fs::write(&checkpoint, content).expect("write");
        let out = ingest(&["run", "--resume", &d_str]);
        assert_eq!(out.status.code(), Some(2), "{what}: {}", show(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("checkpoints/markets.json"),
            "{what}: {stderr}"
        );
        assert!(stderr.contains(want), "{what}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    std::fs::write(&checkpoint, &original).expect("restore");
    std::fs::write(d.join("run.json"), "{").expect("break manifest");
    let out = ingest(&["run", "--resume", &d_str]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("run.json"),
        "{}",
        show(&out)
    );
    let not_a_run = ingest(&["run", "--resume", dir.path.to_str().expect("utf-8")]);
    assert_eq!(not_a_run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&not_a_run.stderr).contains("not a kalshi-ingest run folder"));
}
