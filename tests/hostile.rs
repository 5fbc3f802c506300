//! Issue 8 (first part): hostile or odd server input ends in a clear, documented
//! outcome with intact output.

use crate::fake::FakeApi;
use crate::util::{Dir, RunOutput, ingest, run_dir_of, show};

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
    let out_dir = dir.path.join("out");
    let out = ingest(&[
        "--base-url",
        &fake.url,
        "--out",
        out_dir.to_str().expect("utf-8"),
        "--endpoints",
        "markets",
    ]);
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
    let verify = std::process::Command::new(env!("CARGO_BIN_EXE_kalshi-ingest"))
        .arg("verify")
        .arg(run_dir_of(&out))
        .output()
        .expect("verify");
    assert_eq!(verify.status.code(), Some(0), "{}", show(&verify));
}

#[test]
fn a_body_over_the_cap_is_a_clear_permanent_error() {
    let dir = Dir::new("body-cap");
    // About 19 MB of /series against a 1 MiB cap.
    let fake = FakeApi::start(
        &dir.path,
        &["--series", "14000", "--markets", "5", "--events", "2"],
    );
    let out_dir = dir.path.join("out");
    let out = ingest(&[
        "--base-url",
        &fake.url,
        "--out",
        out_dir.to_str().expect("utf-8"),
        "--endpoints",
        "series,markets",
        "--max-body-mb",
        "1",
    ]);
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
