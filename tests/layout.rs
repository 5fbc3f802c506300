//! Issue 2: series, events and markets end to end into batch folders.

use std::collections::{BTreeSet, HashSet};
use std::process::Command;

use crate::fake::{FakeApi, event_ids, market_ids, series_ids};
use crate::util::{Dir, RunOutput, ingest, ingest_into, run_dir_of, show, walk};

fn as_u64(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// Runs the default job against a fake and returns its output.
fn run_default(dir: &Dir, fake_args: &[&str]) -> (FakeApi, std::process::Output) {
    let fake = FakeApi::start(&dir.path, fake_args);
    let out = ingest_into(&fake.url, dir, &[]);
    (fake, out)
}

#[test]
fn default_run_fetches_every_record_exactly_once() {
    let dir = Dir::new("default-run");
    let (fake, out) = run_default(
        &dir,
        &["--markets", "2345", "--events", "450", "--series", "120"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let run = RunOutput::read(&run_dir_of(&out));

    let expected = [
        ("series", series_ids(120)),
        ("events", event_ids(450, 120)),
        ("markets", market_ids(2345, 450, 120)),
    ];
    for (endpoint, want) in &expected {
        let got = run.ids(endpoint);
        assert_eq!(&got, want, "{endpoint}: ids in record_index order");
        let summary = run.endpoint(endpoint);
        assert_eq!(summary["status"], "complete");
        assert_eq!(as_u64(&summary["records_saved"]), want.len() as u64);
        assert_eq!(as_u64(&summary["duplicates_skipped"]), 0);
    }
    // Maximum page sizes: markets 1000 a page (3 requests), events 200 (3), series 1,
    // and the (empty) archive: its cutoff and one page.
    let targets = fake.requests();
    assert_eq!(targets.len(), 1 + 3 + 3 + 2, "{targets:#?}");
    assert!(
        targets
            .iter()
            .filter(|t| t.contains("/markets?"))
            .all(|t| t.contains("limit=1000"))
    );
    assert!(
        targets
            .iter()
            .filter(|t| t.contains("/events?"))
            .all(|t| t.contains("limit=200"))
    );
    assert_eq!(run.endpoint("markets")["pages"], 3);
    assert_eq!(run.endpoint("markets")["requests"], 3);

    let totals = &run.summary["totals"];
    assert_eq!(as_u64(&totals["records_saved"]), 120 + 450 + 2345);
    assert_eq!(run.summary["status"], "complete");
    assert_eq!(run.summary["exit_code"], 0);
    assert_eq!(
        run.summary["endpoints_planned"],
        serde_json::json!(["series", "events", "markets", "historical_markets"])
    );
    assert_eq!(run.summary["base_url"], fake.url.as_str());
}

#[test]
fn layout_batches_envelopes_and_summary_agree() {
    let dir = Dir::new("layout");
    let (_fake, out) = run_default(
        &dir,
        &["--markets", "2500", "--events", "201", "--series", "3"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let run_dir = run_dir_of(&out);
    let name = run_dir
        .file_name()
        .expect("name")
        .to_string_lossy()
        .to_string();
    let session = name
        .strip_prefix("kalshi_atomic_ingestion_")
        .expect("prefix");
    assert!(
        session.len() == 15
            && session.as_bytes()[8] == b'_'
            && session.replace('_', "").bytes().all(|b| b.is_ascii_digit()),
        "{name}"
    );
    assert!(run_dir.join("atomic_ingestion.log").is_file());
    let log = std::fs::read_to_string(run_dir.join("atomic_ingestion.log")).expect("log");
    assert!(log.lines().count() >= 7, "{log}");
    for line in log.lines() {
        // Every line starts with an RFC 3339 UTC timestamp.
        assert!(
            line.len() > 24 && &line[4..5] == "-" && &line[10..11] == "T" && &line[23..24] == "Z",
            "{line}"
        );
    }

    let run = RunOutput::read(&run_dir);
    for (endpoint, files) in &run.records {
        let summary = run.endpoint(endpoint);
        assert_eq!(
            files.len() as u64,
            as_u64(&summary["records_saved"]),
            "{endpoint}"
        );
        let mut per_batch: std::collections::BTreeMap<&str, u64> = Default::default();
        for (index, file) in files.iter().enumerate() {
            let env = &file.envelope;
            let info = &env["batch_info"];
            assert_eq!(
                as_u64(&info["record_index"]),
                index as u64,
                "{}",
                file.path.display()
            );
            let batch = as_u64(&info["batch_number"]);
            assert_eq!(batch, index as u64 / 1000);
            assert_eq!(file.batch_dir, format!("batch_{batch:04}"));
            *per_batch.entry(&file.batch_dir).or_default() += 1;
            assert_eq!(env["schema_version"], 1);
            assert_eq!(env["endpoint"], format!("/{endpoint}"));
            let time = env["ingestion_time"].as_str().expect("time");
            assert_eq!(time.len(), 15);
            assert_eq!(&time[8..9], "_");
            let id_field = if endpoint == "events" {
                "event_ticker"
            } else {
                "ticker"
            };
            assert_eq!(env["record_id"], env["data"][id_field]);
            let file_name = file
                .path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .to_string();
            assert!(
                file_name.starts_with(&format!("{index:07}_")),
                "{file_name}"
            );
            let hash = env["record_hash"].as_str().expect("hash");
            assert!(
                hash.len() == 64
                    && hash
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
            let bytes = std::fs::read(&file.path).expect("read");
            assert_eq!(bytes.last(), Some(&b'\n'));
            assert_eq!(
                bytes.iter().filter(|b| **b == b'\n').count(),
                1,
                "one line per record"
            );
        }
        for file in files {
            let total = as_u64(&file.envelope["batch_info"]["total_records"]);
            assert_eq!(
                total,
                per_batch[file.batch_dir.as_str()],
                "total_records = records in the batch"
            );
        }
        assert!(per_batch.values().all(|n| *n <= 1000));
        assert_eq!(per_batch.len() as u64, as_u64(&summary["batches"]));
    }
    assert_eq!(run.records["markets"].len(), 2500);
    assert_eq!(
        run.records["markets"]
            .iter()
            .filter(|f| f.batch_dir == "batch_0002")
            .count(),
        500
    );
    // Nothing half-written is left behind.
    assert!(
        walk(&run_dir)
            .iter()
            .all(|p| !p.to_string_lossy().contains(".partial"))
    );
    let bytes_on_disk: u64 = run.records["markets"]
        .iter()
        .map(|f| std::fs::metadata(&f.path).expect("meta").len())
        .sum();
    assert_eq!(
        bytes_on_disk,
        as_u64(&run.endpoint("markets")["bytes_written"])
    );
}

/// The command README.md documents for recomputing `record_hash` agrees with the tool.
#[test]
fn readme_hash_command_recomputes_record_hash() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let command = readme
        .lines()
        .find(|l| l.starts_with("python3 -c 'import sys,json,hashlib"))
        .expect("README documents the python3 hash command");
    assert!(command.ends_with(" RECORD.json"), "{command}");
    let dir = Dir::new("hash");
    let (_fake, out) = run_default(
        &dir,
        &[
            "--markets",
            "40",
            "--events",
            "5",
            "--series",
            "4",
            "--hostile-ids",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let run = RunOutput::read(&run_dir_of(&out));
    let mut checked = 0;
    for files in run.records.values() {
        for file in files.iter().take(20) {
            let line = command.replace("RECORD.json", &format!("'{}'", file.path.display()));
            let result = Command::new("sh")
                .arg("-c")
                .arg(&line)
                .output()
                .expect("run sh");
            assert!(
                result.status.success(),
                "{}",
                String::from_utf8_lossy(&result.stderr)
            );
            let recomputed = String::from_utf8(result.stdout).expect("utf-8");
            assert_eq!(
                recomputed.trim(),
                file.envelope["record_hash"],
                "{}",
                file.path.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 29, "checked {checked}");
}

#[test]
fn overlapping_pages_are_stored_once_and_counted_as_duplicates() {
    let dir = Dir::new("overlap");
    let (_fake, out) = run_default(
        &dir,
        &[
            "--markets",
            "3500",
            "--events",
            "610",
            "--series",
            "7",
            "--overlap",
            "25",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let run = RunOutput::read(&run_dir_of(&out));
    assert_eq!(run.ids("markets"), market_ids(3500, 610, 7));
    assert_eq!(run.ids("events"), event_ids(610, 7));
    // 4 market pages and 4 event pages, each after the first repeating 25 records.
    assert_eq!(run.endpoint("markets")["duplicates_skipped"], 75);
    assert_eq!(run.endpoint("events")["duplicates_skipped"], 75);
    assert_eq!(run.summary["totals"]["duplicates_skipped"], 150);
    let hashes: HashSet<&str> = run.records["markets"]
        .iter()
        .map(|f| f.envelope["record_hash"].as_str().expect("hash"))
        .collect();
    assert_eq!(hashes.len(), 3500);
}

#[test]
fn repeated_cursor_stops_the_endpoint_instead_of_looping() {
    let dir = Dir::new("cursor-loop");
    let fake = FakeApi::start(
        &dir.path,
        &[
            "--markets",
            "10000",
            "--events",
            "10",
            "--series",
            "2",
            "--cursor-loop-at",
            "3",
        ],
    );
    let out = ingest_into(&fake.url, &dir, &["--endpoints", "markets,series"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("a second time"), "{stderr}");
    let run = RunOutput::read(&run_dir_of(&out));
    let markets = run.endpoint("markets");
    assert_eq!(markets["status"], "incomplete");
    // Pages 1-3 are saved; page 4 answers with page 3's cursor again.
    assert_eq!(markets["records_saved"], 4000);
    assert_eq!(run.ids("markets"), market_ids(4000, 10, 2));
    let failure = &markets["failure"];
    assert_eq!(failure["page"], 5);
    assert_eq!(failure["records_saved"], 4000);
    assert!(
        failure["error"].as_str().expect("error").contains("cursor"),
        "{failure}"
    );
    assert!(failure["last_good_cursor"].is_string());
    assert_eq!(
        fake.requests()
            .iter()
            .filter(|t| t.contains("/markets"))
            .count(),
        4
    );
    // The run goes on with the next endpoint and says so in the summary.
    assert_eq!(run.endpoint("series")["status"], "complete");
    assert_eq!(run.summary["status"], "incomplete");
    assert_eq!(run.summary["exit_code"], 1);
}

#[test]
fn hostile_ids_never_escape_their_batch_folder() {
    let dir = Dir::new("hostile");
    let (_fake, out) = run_default(
        &dir,
        &[
            "--markets",
            "30",
            "--events",
            "3",
            "--series",
            "2",
            "--hostile-ids",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let run_dir = run_dir_of(&out);
    // Every file the run wrote sits inside the run folder, at the expected depth.
    for path in walk(&dir.path.join("out")) {
        let rel = path
            .strip_prefix(&run_dir)
            .unwrap_or_else(|_| panic!("outside: {}", path.display()));
        let depth = rel.components().count();
        let in_checkpoints = rel.starts_with("checkpoints") && depth == 2;
        assert!(
            depth == 1 || depth == 3 || in_checkpoints,
            "unexpected location {}",
            rel.display()
        );
        if depth == 3 {
            let name = rel.file_name().expect("name").to_string_lossy();
            assert!(!name.starts_with('.'), "{name}");
            assert!(name.len() <= 100, "{name}");
        }
    }
    assert!(!std::path::Path::new("/tmp/kalshi-escape.json").exists());
    let run = RunOutput::read(&run_dir);
    let ids: BTreeSet<String> = run.ids("markets").into_iter().collect();
    for hostile in [
        "../../../../tmp/kalshi-escape",
        "a/b",
        "a_b",
        "..",
        ".hidden",
        "ctl\u{1}\u{1b}[31m\u{7f}x\n",
        "市场-ü-😀",
        "",
    ] {
        assert!(
            ids.contains(hostile),
            "id {hostile:?} kept intact in the envelope"
        );
    }
    assert_eq!(ids.len(), 30);
}

/// A /series response near production size (14,000 objects, about 19 MB) is above
/// ureq's default 10 MB body limit and must still be taken whole.
#[test]
fn nineteen_megabyte_series_response_is_ingested() {
    let dir = Dir::new("big-series");
    let fake = FakeApi::start(&dir.path, &["--series", "14000"]);
    let out = ingest_into(&fake.url, &dir, &["--endpoints", "series"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let run = RunOutput::read(&run_dir_of(&out));
    let series = run.endpoint("series");
    assert_eq!(series["records_saved"], 14000);
    assert!(as_u64(&series["bytes_received"]) > 18_000_000, "{series}");
    assert_eq!(run.ids("series"), series_ids(14000));
    assert_eq!(
        run.records["series"]
            .iter()
            .map(|f| f.batch_dir.clone())
            .collect::<BTreeSet<_>>()
            .len(),
        14
    );
}

#[test]
fn runs_never_reuse_a_run_folder() {
    let dir = Dir::new("two-runs");
    let fake = FakeApi::start(&dir.path, &["--series", "2"]);
    let out_dir = dir.path.join("out");
    let args = [
        "--base-url",
        &fake.url,
        "--out",
        out_dir.to_str().expect("utf-8"),
        "--endpoints",
        "series",
    ];
    let first = ingest(&args);
    let second = ingest(&args);
    assert_eq!(first.status.code(), Some(0), "{}", show(&first));
    assert_eq!(second.status.code(), Some(0), "{}", show(&second));
    assert_ne!(run_dir_of(&first), run_dir_of(&second));
    assert_eq!(RunOutput::read(&run_dir_of(&first)).ids("series").len(), 2);
    assert_eq!(RunOutput::read(&run_dir_of(&second)).ids("series").len(), 2);
}
