//! Issue 6: JSON Lines, stdout streaming, progress.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::fake::{FakeApi, event_ids, market_ids, series_ids};
use crate::util::{Dir, RunOutput, ingest, ingest_into, run_dir_of, show, verify, walk};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_kalshi-ingest")
}

fn ids_and_hashes(lines: &[serde_json::Value]) -> BTreeSet<(String, String, String)> {
    lines
        .iter()
        .map(|e| {
            (
                e["endpoint"].as_str().expect("endpoint").to_string(),
                e["record_id"].as_str().expect("id").to_string(),
                e["record_hash"].as_str().expect("hash").to_string(),
            )
        })
        .collect()
}

fn envelopes_of_run(dir: &std::path::Path) -> Vec<serde_json::Value> {
    RunOutput::read(dir)
        .records
        .into_values()
        .flatten()
        .map(|f| f.envelope)
        .collect()
}

#[test]
fn jsonl_batches_hold_the_same_envelopes_and_verify() {
    let dir = Dir::new("jsonl");
    let fake = FakeApi::start(
        &dir.path,
        &[
            "--markets",
            "2500",
            "--events",
            "300",
            "--series",
            "7",
            "--overlap",
            "5",
        ],
    );
    let files_out = dir.path.join("files");
    let files = ingest(&[
        "--base-url",
        &fake.url,
        "--out",
        files_out.to_str().expect("utf-8"),
        "--rate=0",
    ]);
    assert_eq!(files.status.code(), Some(0), "{}", show(&files));
    let jsonl_out = dir.path.join("jsonl");
    let jsonl = ingest(&[
        "--base-url",
        &fake.url,
        "--out",
        jsonl_out.to_str().expect("utf-8"),
        "--rate=0",
        "--format",
        "jsonl",
    ]);
    assert_eq!(jsonl.status.code(), Some(0), "{}", show(&jsonl));
    let run_dir = run_dir_of(&jsonl);
    let mut batches: Vec<String> = std::fs::read_dir(run_dir.join("markets"))
        .expect("markets")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    batches.sort();
    assert_eq!(
        batches,
        ["batch_0000.jsonl", "batch_0001.jsonl", "batch_0002.jsonl"]
    );
    let mut lines = Vec::new();
    for endpoint in ["series", "events", "markets"] {
        let mut files: Vec<_> = std::fs::read_dir(run_dir.join(endpoint))
            .expect("dir")
            .map(|e| e.expect("entry").path())
            .collect();
        files.sort();
        let mut index = 0;
        for file in files {
            let text = std::fs::read_to_string(&file).expect("read");
            assert!(text.ends_with('\n'));
            let in_batch = text.lines().count() as u64;
            assert!(in_batch <= 1000);
            for line in text.lines() {
                let env: serde_json::Value =
                    serde_json::from_str(line).expect("one envelope a line");
                assert_eq!(env["batch_info"]["record_index"], index);
                assert_eq!(env["batch_info"]["total_records"], in_batch);
                index += 1;
                lines.push(env);
            }
        }
    }
    assert_eq!(
        ids_and_hashes(&lines),
        ids_and_hashes(&envelopes_of_run(&run_dir_of(&files)))
    );
    let summary = RunOutput::read(&run_dir).summary;
    assert_eq!(summary["format"], "jsonl");
    assert_eq!(summary["totals"]["records_saved"], 2500 + 300 + 7);
    let report = verify(&run_dir);
    assert_eq!(report.status.code(), Some(0), "{}", show(&report));
    // A damaged line is named with its line number.
    let batch = run_dir.join("markets/batch_0001.jsonl");
    let text = std::fs::read_to_string(&batch).expect("read");
    std::fs::write(
        &batch,
        text.replacen(
            "\"yes_ask_size_fp\":\"144.00\"",
            "\"yes_ask_size_fp\":\"145.00\"",
            1,
        ),
    )
    .expect("write");
    let report = verify(&run_dir);
    assert_eq!(report.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&report.stdout);
    assert!(
        stdout.contains(&format!("{}:1: record_hash", batch.display())),
        "{stdout}"
    );
}

#[test]
fn stdout_streams_every_envelope_and_writes_no_files() {
    let dir = Dir::new("stdout");
    let fake = FakeApi::start(
        &dir.path,
        &["--markets", "1200", "--events", "210", "--series", "4"],
    );
    let cwd = dir.path.join("cwd");
    std::fs::create_dir(&cwd).expect("mkdir");
    let out = Command::new(bin())
        .env_clear()
        .current_dir(&cwd)
        .args(["--base-url", &fake.url, "--stdout", "--rate=0"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = String::from_utf8(out.stdout.clone()).expect("utf-8");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("every stdout line is an envelope"))
        .collect();
    assert_eq!(lines.len(), 1200 + 210 + 4);
    let ids = |endpoint: &str| -> Vec<String> {
        lines
            .iter()
            .filter(|e| e["endpoint"] == endpoint)
            .map(|e| e["record_id"].as_str().expect("id").to_string())
            .collect()
    };
    assert_eq!(ids("/series"), series_ids(4));
    assert_eq!(ids("/events"), event_ids(210, 4));
    assert_eq!(ids("/markets"), market_ids(1200, 210, 4));
    assert!(walk(&cwd).is_empty(), "--stdout writes no files");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains('{'),
        "no records on stderr"
    );
}

#[test]
fn a_closed_pipe_ends_the_run_quietly_with_0() {
    let dir = Dir::new("head");
    let fake = FakeApi::start(
        &dir.path,
        &["--markets", "200000", "--events", "10", "--series", "2"],
    );
    let started = Instant::now();
    let script = format!(
        "set -o pipefail; '{}' --base-url '{}' --stdout --endpoints markets --rate=0 | head -5",
        bin(),
        fake.url
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .expect("bash");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 5);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("error"),
        "{stderr}"
    );
    // Far fewer than 200 pages were requested: the run stopped at once.
    assert!(
        fake.requests().len() < 20,
        "{} requests",
        fake.requests().len()
    );
}

#[test]
fn progress_is_periodic_off_a_terminal_and_silenced_by_quiet() {
    let dir = Dir::new("progress");
    let fake = FakeApi::start(
        &dir.path,
        &["--markets", "3000", "--events", "10", "--series", "2"],
    );
    let args = [
        "--endpoints",
        "markets",
        "--rate=0",
        "--progress-interval=1ms",
    ];
    let out = ingest_into(&fake.url, &dir, &args);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("kalshi-ingest: progress: markets: 3 pages, 3000 records"),
        "{stderr}"
    );
    let mut quiet_args = args.to_vec();
    quiet_args.push("-q");
    let quiet = ingest_into(&fake.url, &dir, &quiet_args);
    assert_eq!(quiet.status.code(), Some(0));
    assert!(quiet.stderr.is_empty(), "{}", show(&quiet));
}

#[test]
fn progress_is_a_live_line_on_a_terminal() {
    let dir = Dir::new("tty");
    let fake = FakeApi::start(
        &dir.path,
        &["--markets", "3000", "--events", "10", "--series", "2"],
    );
    let out_dir = dir.path.join("out");
    // `script` gives the command a pseudo-terminal and copies what it shows.
    let command = format!(
        "'{}' --base-url '{}' --out '{}' --endpoints markets --rate=0",
        bin(),
        fake.url,
        out_dir.display()
    );
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script (util-linux) runs");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(screen.contains("\r\x1b[2Kmarkets: "), "{screen:?}");
    assert!(screen.contains("records/s"), "{screen:?}");
}

/// Runs with `extra` flags against a small fake; returns the run and the fake's log.
fn filtered_run(name: &str, extra: &[&str]) -> (RunOutput, Vec<String>, std::process::Output, Dir) {
    let dir = Dir::new(name);
    let fake = FakeApi::start(
        &dir.path,
        &["--markets", "2600", "--events", "60", "--series", "7"],
    );
    let mut args = vec!["--rate=0"];
    args.extend_from_slice(extra);
    let out = ingest_into(&fake.url, &dir, &args);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    (
        RunOutput::read(&run_dir_of(&out)),
        fake.requests(),
        out,
        dir,
    )
}

#[test]
fn status_and_ticker_filters_narrow_what_is_fetched() {
    let (run, requests, _, _dir) =
        filtered_run("status", &["--endpoints", "markets", "--status", "open"]);
    let want: Vec<String> = market_ids(2600, 60, 7)
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % 5 == 1)
        .map(|(_, id)| id)
        .collect();
    assert_eq!(run.ids("markets"), want);
    assert!(
        requests.iter().all(|r| r.contains("status=open")),
        "{requests:?}"
    );
    assert_eq!(run.summary["filters"]["status"], "open");

    let (run, requests, _, _dir) = filtered_run(
        "series",
        &[
            "--endpoints",
            "events,markets",
            "--series-ticker",
            "KXS00003",
        ],
    );
    let events: Vec<String> = event_ids(60, 7)
        .into_iter()
        .filter(|id| id.starts_with("KXS00003-"))
        .collect();
    let markets: Vec<String> = market_ids(2600, 60, 7)
        .into_iter()
        .filter(|id| id.starts_with("KXS00003-"))
        .collect();
    assert!(!events.is_empty() && !markets.is_empty());
    assert_eq!(run.ids("events"), events);
    assert_eq!(run.ids("markets"), markets);
    assert!(
        requests
            .iter()
            .all(|r| r.contains("series_ticker=KXS00003")),
        "{requests:?}"
    );

    let (run, _, _, _dir) = filtered_run(
        "event",
        &[
            "--endpoints",
            "markets",
            "--event-ticker",
            "KXS00001-E000001",
        ],
    );
    let want: Vec<String> = market_ids(2600, 60, 7)
        .into_iter()
        .filter(|id| id.starts_with("KXS00001-E000001-"))
        .collect();
    assert_eq!(run.ids("markets"), want);
}

#[test]
fn since_fetches_only_recently_updated_records() {
    // The fake's market i was updated at 2024-11-01T00:00:00Z + i minutes.
    let (run, requests, _, _dir) = filtered_run(
        "since",
        &["--endpoints", "markets", "--since", "2024-11-02T00:00:00Z"],
    );
    let want: Vec<String> = market_ids(2600, 60, 7).into_iter().skip(24 * 60).collect();
    assert_eq!(run.ids("markets"), want);
    assert!(
        requests
            .iter()
            .all(|r| r.contains("min_updated_ts=1730505600")),
        "{requests:?}"
    );
}

#[test]
fn max_records_samples_each_endpoint_and_says_so() {
    let (run, requests, out, _dir) = filtered_run("sample", &["--max-records", "150"]);
    for (name, all) in [
        ("series", series_ids(7)),
        ("events", event_ids(60, 7)),
        ("markets", market_ids(2600, 60, 7)),
    ] {
        let want: Vec<String> = all.into_iter().take(150).collect();
        assert_eq!(run.ids(name), want, "{name}");
        let status = if want.len() == 150 {
            "sampled"
        } else {
            "complete"
        };
        assert_eq!(run.endpoint(name)["status"], status, "{name}");
    }
    assert_eq!(
        requests
            .iter()
            .filter(|r| r.contains("/v2/markets"))
            .count(),
        1
    );
    let report = verify(&run_dir_of(&out));
    assert_eq!(report.status.code(), Some(0), "{}", show(&report));
}

#[test]
fn filter_combinations_the_api_rejects_are_refused_before_any_request() {
    let dir = Dir::new("refused");
    let fake = FakeApi::start(&dir.path, &["--markets", "10"]);
    let out_dir = dir.path.join("out");
    for extra in [
        &["--since", "24h", "--status", "open"][..],
        &["--status", "active"][..],
        &["--endpoints", "events", "--status", "paused"][..],
    ] {
        let out = ingest_into(&fake.url, &dir, extra);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {}", show(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).lines().count(),
            1,
            "{}",
            show(&out)
        );
    }
    assert!(fake.requests().is_empty());
    assert!(
        !out_dir.exists(),
        "nothing is created for a refused command"
    );
}

/// TLS certificates are always verified: a server with a self-signed certificate is
/// refused at once (no retries), with a message that says verification is on.
#[test]
fn tls_certificates_are_always_verified() {
    let dir = Dir::new("tls");
    let key = dir.path.join("key.pem");
    let cert = dir.path.join("cert.pem");
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is installed (.ci/run installs it)");
    assert!(made.status.success(), "{}", show(&made));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut server = Command::new("openssl")
        .args([
            "s_server",
            "-quiet",
            "-www",
            "-accept",
            &port.to_string(),
            "-cert",
        ])
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start openssl s_server");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "s_server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out_dir = dir.path.join("out");
    let base = format!("https://127.0.0.1:{port}/trade-api/v2");
    let out = crate::util::ingest_with_env(
        &[
            "--base-url",
            &base,
            "--out",
            out_dir.to_str().expect("utf-8"),
            "--endpoints",
            "series",
        ],
        // A CA store that trusts the certificate must not matter: roots are built in.
        &[("SSL_CERT_FILE", cert.to_str().expect("utf-8"))],
    );
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let run = RunOutput::read(&run_dir_of(&out));
    let series = run.endpoint("series");
    assert_eq!(
        series["requests"], 1,
        "a certificate failure is not retried: {series}"
    );
    let error = series["failure"]["error"].as_str().expect("error");
    assert!(
        error.contains("certificate") && error.contains("[fatal]"),
        "{error}"
    );
    assert!(error.contains("always verified"), "{error}");
}
