//! Issue 8 (first part): hostile or odd server input ends in a clear, documented
//! outcome with intact output.

use crate::fake::FakeApi;
use crate::util::{Dir, RunOutput, ingest, ingest_into, run_dir_of, show, verify};

#[test]
fn records_without_a_usable_id_are_kept_and_counted() {
    let dir = Dir::new("odd-ids");
    let fake = FakeApi::start(
        &dir.path,
        &[
            "--markets",
            "10",
            "--events",
            "2",
            "--series",
            "1",
            "--odd-ids",
        ],
    );
    let out = ingest_into(&fake.url, &dir, &["--endpoints", "markets"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let run = RunOutput::read(&run_dir_of(&out));
    let files = &run.records["markets"];
    assert_eq!(files.len(), 10, "nothing is dropped");
    assert_eq!(files[0].envelope["record_id"], serde_json::Value::Null);
    assert!(
        files[0].path.ends_with("0000000_noid.json"),
        "{}",
        files[0].path.display()
    );
    assert_eq!(files[1].envelope["record_id"], "12345");
    assert_eq!(files[2].envelope["record_id"], serde_json::Value::Null);
    assert_eq!(
        files[1].envelope["data"]["ticker"], 12345,
        "data is kept as received"
    );
    assert_eq!(run.endpoint("markets")["records_without_id"], 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no usable \"ticker\" field"), "{stderr}");
    let report = verify(&run_dir_of(&out));
    assert_eq!(report.status.code(), Some(0), "{}", show(&report));
}

#[test]
fn a_body_over_the_cap_is_a_clear_permanent_error() {
    let dir = Dir::new("body-cap");
    // About 19 MB of /series against a 1 MiB cap.
    let fake = FakeApi::start(
        &dir.path,
        &["--series", "14000", "--markets", "5", "--events", "2"],
    );
    let out = ingest_into(
        &fake.url,
        &dir,
        &["--endpoints", "series,markets", "--max-body-mb", "1"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let run = RunOutput::read(&run_dir_of(&out));
    let series = run.endpoint("series");
    assert_eq!(series["status"], "incomplete");
    assert_eq!(series["requests"], 1, "not retried: {series}");
    let error = series["failure"]["error"].as_str().expect("error");
    assert!(
        error.contains("exceeds the cap of 1048576 bytes") && error.contains("--max-body-mb"),
        "{error}"
    );
    assert!(error.ends_with("[too_large]"), "{error}");
    // The run goes on with the next endpoint.
    assert_eq!(run.endpoint("markets")["status"], "complete");
}

/// Mounts a tmpfs of `size` at `dir` (needs root, as CI runs); `None` elsewhere.
fn mount_tmpfs(dir: &std::path::Path, options: &str) -> Option<()> {
    std::fs::create_dir_all(dir).expect("mkdir");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: this test needs a tmpfs mount and checks nothing here");
        return None;
    }
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", options, "tmpfs"])
        .arg(dir)
        .status()
        .expect("run mount");
    assert!(
        status.success(),
        "mount -t tmpfs failed although running as root"
    );
    Some(())
}

fn unmount(dir: &std::path::Path) {
    let _ = std::process::Command::new("umount").arg(dir).status();
}

#[test]
fn a_full_disk_stops_with_a_clear_error_and_resume_completes() {
    let dir = Dir::new("disk-full");
    let small = dir.path.join("small");
    if mount_tmpfs(&small, "size=3m").is_none() {
        return;
    }
    let fake = FakeApi::start(
        &dir.path,
        &["--markets", "6000", "--events", "2", "--series", "1"],
    );
    let out = ingest(&[
        "--base-url",
        &fake.url,
        "--out",
        small.to_str().expect("utf-8"),
        "--endpoints",
        "markets",
        "--rate=0",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let run_dir = std::fs::read_dir(&small)
        .expect("read")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir());
    // Make room, then finish the run.
    let grown = std::process::Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(&small)
        .status()
        .expect("remount");
    let resumed = run_dir
        .as_ref()
        .map(|d| ingest(&["run", "--resume", d.to_str().expect("utf-8"), "--rate=0"]));
    let ids = run_dir.as_ref().map(|d| RunOutput::read(d).ids("markets"));
    let verified = run_dir.as_ref().map(|d| verify(d));
    unmount(&small);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(stderr.contains("no space left on device"), "{stderr}");
    assert!(
        stderr.contains(small.to_str().expect("utf-8")),
        "the error names the path: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(grown.success());
    let resumed = resumed.expect("the run folder exists");
    assert_eq!(resumed.status.code(), Some(0), "{}", show(&resumed));
    assert_eq!(ids.expect("ids"), crate::fake::market_ids(6000, 2, 1));
    let report = verified.expect("verify ran");
    assert_eq!(report.status.code(), Some(0), "{}", show(&report));
}

#[test]
fn a_read_only_output_folder_is_a_one_line_error() {
    let dir = Dir::new("read-only");
    let ro = dir.path.join("ro");
    if mount_tmpfs(&ro, "ro,size=1m").is_none() {
        return;
    }
    let out = ingest(&[
        "--base-url",
        "http://127.0.0.1:9/v2",
        "--out",
        ro.to_str().expect("utf-8"),
    ]);
    unmount(&ro);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("read-only file system") && stderr.contains("--out"),
        "{stderr}"
    );
}

#[test]
fn hostile_ids_reach_detail_endpoints_as_one_path_segment() {
    let dir = Dir::new("hostile-details");
    let fake = FakeApi::start(
        &dir.path,
        &[
            "--markets",
            "40",
            "--events",
            "4",
            "--series",
            "2",
            "--hostile-ids",
            "--no-batch-orderbooks",
        ],
    );
    let out = ingest_into(
        &fake.url,
        &dir,
        &[
            "--endpoints",
            "markets,market_details,orderbooks",
            "--rate=0",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let run = RunOutput::read(&run_dir_of(&out));
    // Every market but the one with an empty ticker (which has no path) was found by
    // its own id: `..`, `a/b`, control characters and all.
    let mut want = run.ids("markets");
    want.retain(|id| !id.is_empty());
    assert_eq!(run.ids("market_details"), want);
    assert_eq!(run.ids("orderbooks"), want);
    for endpoint in ["market_details", "orderbooks"] {
        let e = run.endpoint(endpoint);
        assert_eq!(e["status"], "complete", "{e}");
        assert_eq!(e["ids_skipped"], 1, "the empty id: {e}");
        assert_eq!(e["not_found"], serde_json::json!([]), "{e}");
    }
    // The ids went out percent-encoded, never as extra path steps.
    let requests = fake.requests();
    assert!(
        requests.iter().any(|r| r.contains("/markets/a%2Fb ")),
        "{requests:#?}"
    );
    assert!(requests.iter().any(|r| r.contains("/markets/%2E%2E ")));
    assert!(!requests.iter().any(|r| r.contains("/../")));
    for path in crate::util::walk(&dir.path.join("out")) {
        assert!(path.starts_with(run_dir_of(&out)), "{}", path.display());
    }
    let report = verify(&run_dir_of(&out));
    assert_eq!(report.status.code(), Some(0), "{}", show(&report));
}

#[test]
fn a_run_folder_moved_away_mid_run_is_one_clear_error_and_resumes_from_its_new_place() {
    let dir = Dir::new("folder-gone");
    let fake = FakeApi::start(
        &dir.path,
        &[
            "--markets",
            "5000",
            "--events",
            "10",
            "--series",
            "2",
            "--latency-ms",
            "20",
        ],
    );
    let out_dir = dir.path.join("out");
    let child = crate::util::spawn(&[
        "--base-url",
        &fake.url,
        "--out",
        out_dir.to_str().expect("utf-8"),
        "--endpoints",
        "markets",
        "--rate=0",
        "--progress-interval=0",
    ]);
    let run_dir = crate::util::wait_for_run_dir_holding(&out_dir, "markets/batch_0001");
    // Moved away in one step (as `rm -rf` would make it vanish, but keeping it).
    let moved = dir.path.join(run_dir.file_name().expect("name"));
    std::fs::rename(&run_dir, &moved).expect("move the run folder");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    let gone: Vec<&str> = err.lines().filter(|l| l.contains("is gone")).collect();
    assert_eq!(gone.len(), 1, "{err}");
    assert!(gone[0].contains(run_dir.to_str().expect("utf-8")), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!run_dir.exists(), "nothing is re-created at the old path");
    // Its checkpoint is consistent: resuming from the new place completes the run.
    let resumed = crate::util::ingest(&[
        "run",
        "--resume",
        moved.to_str().expect("utf-8"),
        "--rate=0",
    ]);
    assert_eq!(resumed.status.code(), Some(0), "{}", show(&resumed));
    let run = RunOutput::read(&moved);
    assert_eq!(run.ids("markets"), crate::fake::market_ids(5000, 10, 2));
    let report = verify(&moved);
    assert_eq!(report.status.code(), Some(0), "{}", show(&report));
}

#[test]
fn a_body_that_is_not_utf8_stops_the_endpoint_at_once_and_resume_completes() {
    let dir = Dir::new("bad-utf8");
    let bad = FakeApi::start(
        &dir.path,
        &[
            "--events",
            "500",
            "--series",
            "2",
            "--markets",
            "5",
            "--faults",
            "badutf8",
            "--fault-rate",
            "1",
            "--faults-after",
            "1",
        ],
    );
    let out = ingest_into(
        &bad.url,
        &dir,
        &["--endpoints", "events,series", "--rate=0"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let run_dir = run_dir_of(&out);
    let run = RunOutput::read(&run_dir);
    let events = run.endpoint("events");
    assert_eq!(events["status"], "incomplete");
    assert_eq!(events["records_saved"], 200, "page 1 is kept");
    assert_eq!(events["requests"], 2, "not retried: {events}");
    let error = events["failure"]["error"].as_str().expect("error");
    assert!(
        error.contains("not UTF-8") && error.ends_with("[bad_record]"),
        "{error}"
    );
    // The run went on: series failed the same way, on its only page.
    assert_eq!(run.endpoint("series")["status"], "incomplete");
    drop(bad);
    let good = FakeApi::start(
        &dir.path,
        &["--events", "500", "--series", "2", "--markets", "5"],
    );
    let resumed = ingest(&[
        "run",
        "--resume",
        run_dir.to_str().expect("utf-8"),
        "--base-url",
        &good.url,
        "--rate=0",
    ]);
    assert_eq!(resumed.status.code(), Some(0), "{}", show(&resumed));
    let run = RunOutput::read(&run_dir);
    assert_eq!(run.ids("events"), crate::fake::event_ids(500, 2));
    let report = verify(&run_dir);
    assert_eq!(report.status.code(), Some(0), "{}", show(&report));
}
