//! Issue 3: the 5-try normal mode, the extended recovery ladder and rate limits, with
//! every timing scaled down to milliseconds so the real state machine runs fast.

use std::time::Instant;

use crate::fake::{FakeApi, event_ids, market_ids, series_ids};
use crate::util::{Dir, RunOutput, ingest_into, run_dir_of, show};

/// Millisecond versions of every timing; recovery ladder = 20·(1+...+10) = 1.1 s.
const FAST: &[&str] = &[
    "--timeout=300ms",
    "--backoff-base=5ms",
    "--backoff-cap=20ms",
    "--recovery-step=20ms",
    "--retry-after-cap=30ms",
    "--first-contact-budget=2s",
    "--rate=0",
];

fn ingest_fast(fake: &FakeApi, dir: &Dir, extra: &[&str]) -> std::process::Output {
    let mut args = FAST.to_vec();
    args.extend_from_slice(extra);
    ingest_into(&fake.url, dir, &args)
}

fn count(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

#[test]
fn random_faults_of_every_kind_still_give_the_complete_set() {
    let dir = Dir::new("random-faults");
    let fake = FakeApi::start(
        &dir.path,
        &[
            "--markets",
            "3000",
            "--events",
            "4000",
            "--series",
            "30",
            "--fault-rate",
            "0.35",
            "--seed",
            "11",
            "--stall-ms",
            "1500",
            "--faults",
            "500,502,503,429,stall,reset,truncate,html",
        ],
    );
    let out = ingest_fast(&fake, &dir, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let run = RunOutput::read(&run_dir_of(&out));
    assert_eq!(run.ids("series"), series_ids(30));
    assert_eq!(run.ids("events"), event_ids(4000, 30));
    assert_eq!(run.ids("markets"), market_ids(3000, 4000, 30));
    // The summary agrees with what the server saw.
    let seen = fake.requests();
    assert_eq!(count(&run.summary["totals"]["requests"]), seen.len() as u64);
    let faults = seen.iter().filter(|l| !l.ends_with(" 200")).count() as u64;
    let retried: u64 = run.summary["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .flat_map(|e| {
            e["retries_by_class"]
                .as_object()
                .expect("map")
                .values()
                .map(count)
        })
        .sum();
    assert!(faults >= 4, "the seed must inject faults: {seen:#?}");
    assert_eq!(retried, faults, "every injected fault is counted once");
    let classes: std::collections::BTreeSet<String> = run.summary["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .flat_map(|e| {
            e["retries_by_class"]
                .as_object()
                .expect("map")
                .keys()
                .cloned()
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        classes.len() >= 3,
        "several failure classes seen: {classes:?}"
    );
}

#[test]
fn each_fault_kind_alone_is_retried_to_completion() {
    for (kind, class) in [
        ("500", "server_error"),
        ("stall", "timeout"),
        ("reset", "reset"),
        ("truncate", "truncated"),
        ("html", "bad_body"),
    ] {
        let dir = Dir::new(&format!("fault-{kind}"));
        let fake = FakeApi::start(
            &dir.path,
            &[
                "--events",
                "3000",
                "--series",
                "3",
                "--fault-rate",
                "0.4",
                "--seed",
                "3",
                "--faults",
                kind,
                "--stall-ms",
                "1000",
            ],
        );
        let out = ingest_fast(&fake, &dir, &["--endpoints", "events"]);
        assert_eq!(out.status.code(), Some(0), "{kind}: {}", show(&out));
        let run = RunOutput::read(&run_dir_of(&out));
        assert_eq!(run.ids("events"), event_ids(3000, 3), "{kind}");
        let markets = run.endpoint("events");
        assert!(
            count(&markets["retries_by_class"][class]) >= 1,
            "{kind}: {markets}"
        );
        assert_eq!(
            markets["retries_by_class"].as_object().expect("map").len(),
            1,
            "{kind}: {markets}"
        );
    }
}

#[test]
fn a_temporary_outage_is_ridden_out_by_recovery_mode() {
    let dir = Dir::new("outage-temporary");
    // Requests 1-2 succeed, then 700 ms of resets: longer than the normal-mode tries
    // (about 50 ms), shorter than the recovery ladder (1.1 s).
    let fake = FakeApi::start(
        &dir.path,
        &[
            "--markets",
            "5000",
            "--events",
            "10",
            "--series",
            "3",
            "--outage-after",
            "2",
            "--outage-ms",
            "700",
        ],
    );
    let out = ingest_fast(&fake, &dir, &["--endpoints", "markets"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("TIMEOUT RECOVERY MODE"), "{stderr}");
    assert!(stderr.contains("Network recovered after"), "{stderr}");
    let run_dir = run_dir_of(&out);
    let log = std::fs::read_to_string(run_dir.join("atomic_ingestion.log")).expect("log");
    assert!(
        log.contains("TIMEOUT RECOVERY MODE") && log.contains("Network recovered"),
        "{log}"
    );
    let run = RunOutput::read(&run_dir);
    assert_eq!(run.ids("markets"), market_ids(5000, 10, 3));
    let markets = run.endpoint("markets");
    let episodes = markets["recovery_episodes"].as_array().expect("episodes");
    assert_eq!(episodes.len(), 1, "{markets}");
    assert_eq!(episodes[0]["recovered"], true);
    assert_eq!(episodes[0]["page"], 3);
    assert!(
        episodes[0]["duration_seconds"].as_f64().expect("secs") > 0.3,
        "{markets}"
    );
    assert!(
        count(&markets["retries_by_class"]["reset"]) >= 5,
        "{markets}"
    );
    assert!(markets["wait_seconds"].as_f64().expect("wait") > 0.3);
}

#[test]
fn a_permanent_outage_runs_the_ladder_and_keeps_what_was_saved() {
    let dir = Dir::new("outage-permanent");
    let fake = FakeApi::start(
        &dir.path,
        &[
            "--markets",
            "9000",
            "--events",
            "10",
            "--series",
            "3",
            "--outage-after",
            "3",
            "--outage-ms",
            "0",
        ],
    );
    let out = ingest_fast(&fake, &dir, &["--endpoints", "markets,events"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("TIMEOUT RECOVERY MODE"), "{stderr}");
    assert!(stderr.contains("TIMEOUT RECOVERY FAILED"), "{stderr}");
    let run = RunOutput::read(&run_dir_of(&out));
    // Pages 1-3 are on disk; page 4 is the failure point.
    assert_eq!(run.ids("markets"), market_ids(3000, 10, 3));
    let markets = run.endpoint("markets");
    assert_eq!(markets["status"], "incomplete");
    let failure = &markets["failure"];
    assert_eq!(failure["page"], 4);
    assert_eq!(failure["records_saved"], 3000);
    assert!(failure["last_good_cursor"].is_string(), "{failure}");
    assert!(
        failure["url"].as_str().expect("url").contains("cursor="),
        "{failure}"
    );
    assert!(
        failure["error"]
            .as_str()
            .expect("error")
            .contains("[reset]"),
        "{failure}"
    );
    let episodes = markets["recovery_episodes"].as_array().expect("episodes");
    assert_eq!(episodes.len(), 1);
    assert_eq!(episodes[0]["recovered"], false);
    assert_eq!(episodes[0]["steps"], 10);
    // 5 normal tries + 10 recovery tries for page 4, after 3 good pages.
    assert_eq!(markets["requests"], 3 + 15);
    assert_eq!(fake.requests().len(), 18);
    // The host is plainly down: the next endpoint is not started.
    assert_eq!(run.endpoint("events")["status"], "not_started");
    assert!(run.summary["stopped_early"].is_string());
    assert_eq!(run.summary["exit_code"], 1);
}

#[test]
fn an_unreachable_host_fails_fast_with_its_name() {
    let dir = Dir::new("unreachable");
    // Port 1 on loopback refuses connections.
    let started = Instant::now();
    let out = ingest_into(
        "http://127.0.0.1:1/trade-api/v2",
        &dir,
        &["--backoff-base=10ms", "--backoff-cap=40ms"],
    );
    assert!(
        started.elapsed().as_secs() < 20,
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot reach 127.0.0.1:1"), "{stderr}");
    assert!(stderr.contains("--base-url"), "{stderr}");
    assert!(!stderr.contains("TIMEOUT RECOVERY MODE"), "{stderr}");
    let run = RunOutput::read(&run_dir_of(&out));
    assert_eq!(run.endpoint("series")["requests"], 5);
    assert_eq!(run.endpoint("events")["status"], "not_started");
    assert_eq!(run.summary["exit_code"], 2);
}

#[test]
fn a_429_storm_slows_down_without_burning_tries() {
    let dir = Dir::new("429-storm");
    let fake = FakeApi::start(
        &dir.path,
        &[
            "--markets",
            "6000",
            "--events",
            "10",
            "--series",
            "3",
            "--fault-rate",
            "0.6",
            "--faults",
            "429",
            "--seed",
            "5",
            "--retry-after",
            "3600",
        ],
    );
    let out = ingest_fast(&fake, &dir, &["--endpoints", "markets", "--tries", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let run = RunOutput::read(&run_dir_of(&out));
    assert_eq!(run.ids("markets"), market_ids(6000, 10, 3));
    let markets = run.endpoint("markets");
    let limited = count(&markets["rate_limited"]);
    assert!(limited >= 3, "{markets}");
    assert_eq!(count(&markets["retries_by_class"]["rate_limited"]), limited);
    assert!(
        markets["recovery_episodes"]
            .as_array()
            .expect("episodes")
            .is_empty(),
        "{markets}"
    );
    // Retry-After: 3600 is honoured but capped at --retry-after-cap=30ms for each 429.
    let waited = markets["wait_seconds"].as_f64().expect("wait");
    assert!(
        (waited - limited as f64 * 0.030).abs() < 1e-6,
        "{waited} for {limited} 429s"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("rate limited (HTTP 429)"), "{stderr}");
}

#[test]
fn a_permanent_client_error_fails_one_endpoint_and_the_run_goes_on() {
    let dir = Dir::new("client-error");
    let fake = FakeApi::start(
        &dir.path,
        &["--markets", "10", "--events", "5", "--series", "2"],
    );
    // The fake answers 404 for unknown paths; point one endpoint's base at one.
    let base = format!("{}/nope", fake.url);
    let out = ingest_into(&base, &dir, &["--rate=0"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let run = RunOutput::read(&run_dir_of(&out));
    for name in ["series", "events", "markets"] {
        let e = run.endpoint(name);
        assert_eq!(e["status"], "incomplete", "{e}");
        assert_eq!(e["requests"], 1, "a 404 is not retried: {e}");
        let error = e["failure"]["error"].as_str().expect("error");
        assert!(
            error.contains("HTTP 404") && error.contains("[not_found]"),
            "{error}"
        );
    }
}
