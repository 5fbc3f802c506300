//! Issue 5: detail endpoints (order books, market/event/series details), the
//! historical archive, `--tickers`, `discover` and the discovery file.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::fake::{FakeApi, event_ids, market_ids, series_ids};
use crate::util::{
    Dir, RunOutput, ingest, ingest_into, run_dir_of, show, spawn, verify, wait_for_run_dir_holding,
};

fn as_u64(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn count(requests: &[String], needle: &str) -> usize {
    requests.iter().filter(|r| r.contains(needle)).count()
}

fn not_found(run: &RunOutput, endpoint: &str) -> Vec<String> {
    run.endpoint(endpoint)["not_found"]
        .as_array()
        .expect("not_found array")
        .iter()
        .map(|v| v.as_str().expect("string").to_string())
        .collect()
}

#[test]
fn an_order_book_for_every_market_in_ceil_markets_over_100_requests() {
    let dir = Dir::new("orderbooks");
    let fake = FakeApi::start(
        &dir.path,
        &["--markets", "2345", "--events", "40", "--series", "6"],
    );
    let out = ingest_into(
        &fake.url,
        &dir,
        &["--endpoints", "orderbooks,markets", "--rate=0"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let run = RunOutput::read(&run_dir_of(&out));
    let markets = market_ids(2345, 40, 6);
    assert_eq!(run.ids("markets"), markets);
    assert_eq!(
        run.ids("orderbooks"),
        markets,
        "one book per market, in order"
    );
    let books = run.endpoint("orderbooks");
    assert_eq!(books["status"], "complete");
    assert_eq!(as_u64(&books["requests"]), 24, "ceil(2345 / 100)");
    assert_eq!(as_u64(&books["requests_minimum"]), 24);
    assert_eq!(as_u64(&books["ids_requested"]), 2345);
    assert_eq!(books["ids_from"], "markets");
    let requests = fake.requests();
    assert_eq!(count(&requests, "/markets/orderbooks?tickers="), 24);
    assert_eq!(count(&requests, "/orderbook "), 0, "no per-market requests");
    // The stored record is the batch element: ticker plus orderbook_fp.
    let first = &run.records("orderbooks")[0];
    assert_eq!(first["data"]["ticker"], markets[0].as_str());
    assert!(first["data"]["orderbook_fp"].is_object(), "{first}");
    assert_eq!(first["endpoint"], "/markets/orderbooks");
    let report = verify(&run_dir_of(&out));
    assert_eq!(report.status.code(), Some(0), "{}", show(&report));
}

#[test]
fn a_missing_batch_endpoint_falls_back_to_the_per_market_one() {
    let dir = Dir::new("orderbooks-fallback");
    let fake = FakeApi::start(
        &dir.path,
        &[
            "--markets",
            "150",
            "--events",
            "10",
            "--series",
            "3",
            "--no-batch-orderbooks",
        ],
    );
    let out = ingest_into(
        &fake.url,
        &dir,
        &["--endpoints", "markets,orderbooks", "--rate=0"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let run = RunOutput::read(&run_dir_of(&out));
    assert_eq!(run.ids("orderbooks"), market_ids(150, 10, 3));
    let books = run.endpoint("orderbooks");
    assert_eq!(books["status"], "complete");
    let fallback = books["fallback"].as_str().expect("fallback reason");
    assert!(fallback.contains("HTTP 404"), "{fallback}");
    let requests = fake.requests();
    assert_eq!(count(&requests, "/markets/orderbooks?"), 1, "tried once");
    assert_eq!(count(&requests, "/orderbook "), 150);
    assert_eq!(as_u64(&books["requests"]), 151);
    // A per-market book is stored exactly like a batch element.
    let record = &run.records("orderbooks")[3];
    assert_eq!(record["data"]["ticker"], record["record_id"]);
    assert!(record["data"]["orderbook_fp"].is_object());
    let report = verify(&run_dir_of(&out));
    assert_eq!(report.status.code(), Some(0), "{}", show(&report));
}

#[test]
fn ids_that_404_on_detail_endpoints_are_recorded_not_fatal() {
    let dir = Dir::new("details-404");
    let (m, e, s) = (230u64, 30u64, 9u64);
    let fake = FakeApi::start(
        &dir.path,
        &[
            "--markets",
            "230",
            "--events",
            "30",
            "--series",
            "9",
            "--missing-details",
            "7",
        ],
    );
    let out = ingest_into(
        &fake.url,
        &dir,
        &[
            "--endpoints",
            "series,events,markets,orderbooks,market_details,event_details,series_details",
            "--rate=0",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let run = RunOutput::read(&run_dir_of(&out));
    let split = |ids: Vec<String>| -> (Vec<String>, Vec<String>) {
        let mut missing: Vec<String> = ids
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 7 == 6)
            .map(|(_, id)| id.clone())
            .collect();
        let present = ids
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 7 != 6)
            .map(|(_, id)| id.clone())
            .collect();
        missing.sort();
        (present, missing)
    };
    for (endpoint, ids) in [
        ("market_details", market_ids(m, e, s)),
        ("orderbooks", market_ids(m, e, s)),
        ("event_details", event_ids(e, s)),
        ("series_details", series_ids(s)),
    ] {
        let (present, missing) = split(ids);
        assert_eq!(run.ids(endpoint), present, "{endpoint}");
        assert_eq!(not_found(&run, endpoint), missing, "{endpoint}");
        assert_eq!(run.endpoint(endpoint)["status"], "complete", "{endpoint}");
    }
    // A market detail is the market object; an event detail is the whole answer.
    let market = &run.records("market_details")[0];
    assert_eq!(market["data"]["ticker"], market["record_id"]);
    let event = &run.records("event_details")[0];
    assert_eq!(event["data"]["event"]["event_ticker"], event["record_id"]);
    assert!(
        event["data"]["markets"]
            .as_array()
            .is_some_and(|m| !m.is_empty())
    );
    let report = verify(&run_dir_of(&out));
    assert_eq!(report.status.code(), Some(0), "{}", show(&report));
}

#[test]
fn every_historical_market_once_with_the_cutoff_in_the_summary() {
    let dir = Dir::new("historical");
    let fake = FakeApi::start(
        &dir.path,
        &[
            "--markets",
            "10",
            "--events",
            "5",
            "--series",
            "2",
            "--historical",
            "2500",
            "--overlap",
            "3",
        ],
    );
    // The default plan includes the archive.
    let out = ingest_into(&fake.url, &dir, &["--rate=0"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let run = RunOutput::read(&run_dir_of(&out));
    let want: Vec<String> = (0..2500)
        .map(|h| format!("KXOLD-21JUL01-H{h:07}"))
        .collect();
    assert_eq!(
        run.ids("historical_markets"),
        want,
        "each exactly once, in order"
    );
    let archive = run.endpoint("historical_markets");
    assert_eq!(archive["status"], "complete");
    assert_eq!(as_u64(&archive["duplicates_skipped"]), 6, "overlap skipped");
    assert_eq!(
        archive["historical_cutoff"]["market_settled_ts"],
        "2024-08-01T00:00:00Z"
    );
    assert_eq!(
        as_u64(&archive["requests"]),
        1 + 3,
        "cutoff + 3 pages of 1000"
    );
    assert_eq!(as_u64(&archive["requests_minimum"]), 1 + 3);
    let requests = fake.requests();
    assert_eq!(count(&requests, "/historical/cutoff"), 1);
    assert!(
        requests
            .iter()
            .filter(|r| r.contains("/historical/markets"))
            .all(|r| r.contains("limit=1000"))
    );
}

#[test]
fn tickers_from_a_file_or_stdin_feed_the_detail_endpoints() {
    let dir = Dir::new("tickers");
    let fake = FakeApi::start(
        &dir.path,
        &["--markets", "50", "--events", "5", "--series", "2"],
    );
    let markets = market_ids(50, 5, 2);
    let list = dir.path.join("tickers.txt");
    let text = format!(
        "# wanted\n{}\n\n  {}  \nNOPE-404\n{}\n",
        markets[7], markets[3], markets[7]
    );
    std::fs::write(&list, text).expect("write tickers");
    let out = ingest_into(
        &fake.url,
        &dir,
        &[
            "--endpoints",
            "market_details",
            "--tickers",
            list.to_str().expect("utf-8"),
            "--rate=0",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let run = RunOutput::read(&run_dir_of(&out));
    assert_eq!(
        run.ids("market_details"),
        [markets[7].clone(), markets[3].clone()],
        "file order, repeats asked once"
    );
    assert_eq!(not_found(&run, "market_details"), ["NOPE-404"]);
    let details = run.endpoint("market_details");
    assert_eq!(as_u64(&details["ids_skipped"]), 1, "the repeat");
    assert!(
        details["ids_from"]
            .as_str()
            .is_some_and(|s| s.starts_with("--tickers"))
    );
    assert_eq!(
        count(&fake.requests(), "/v2/markets?"),
        0,
        "no list requests"
    );

    // Standard input, streamed to stdout.
    let mut child = Command::new(env!("CARGO_BIN_EXE_kalshi-ingest"))
        .env_clear()
        .args([
            "--base-url",
            &fake.url,
            "--stdout",
            "--endpoints",
            "orderbooks",
            "--tickers",
            "-",
            "--rate=0",
            "-q",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(format!("{}\n{}\n", markets[1], markets[2]).as_bytes())
        .expect("write stdin");
    drop(stdin);
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("envelope");
            v["record_id"].as_str().expect("id").to_string()
        })
        .collect();
    assert_eq!(ids, [markets[1].clone(), markets[2].clone()]);
}

#[test]
fn detail_endpoints_without_ids_and_mixed_tickers_are_refused() {
    let dir = Dir::new("details-usage");
    for (args, want) in [
        (
            vec!["--endpoints", "orderbooks"],
            "orderbooks needs market tickers: add markets to --endpoints, or pass --tickers",
        ),
        (
            vec![
                "--endpoints",
                "market_details,event_details",
                "--tickers",
                "x",
            ],
            "--tickers gives one kind of id",
        ),
        (vec!["--tickers", "x"], "only detail endpoints read ids"),
    ] {
        let out = ingest_into("http://127.0.0.1:1", &dir, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    let out = ingest_into(
        "http://127.0.0.1:1",
        &dir,
        &[
            "--endpoints",
            "market_details",
            "--tickers",
            "/no/such/file",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/file"));
}

#[test]
fn discover_reports_what_the_server_serves_and_run_follows_it() {
    let dir = Dir::new("discover");
    let fake = FakeApi::start(
        &dir.path,
        &[
            "--markets",
            "1200",
            "--events",
            "30",
            "--series",
            "4",
            "--no-batch-orderbooks",
            "--historical",
            "5",
        ],
    );
    let out_dir = dir.path.join("out");
    let out = ingest(&[
        "discover",
        "--base-url",
        &fake.url,
        "--out",
        out_dir.to_str().expect("utf-8"),
        "--rate=0",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let file = out_dir.join("discovered_endpoints.json");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        file.to_str().expect("utf-8")
    );
    let doc: Value = serde_json::from_slice(&std::fs::read(&file).expect("file")).expect("json");
    let entry = |name: &str| -> Value {
        doc["endpoints"]
            .as_array()
            .expect("endpoints")
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no entry {name}: {doc}"))
            .clone()
    };
    let markets = entry("markets");
    assert_eq!(markets["reachable"], true);
    assert_eq!(markets["status"], 200);
    assert_eq!(markets["paginated"], true);
    assert_eq!(markets["array_key"], "markets");
    assert_eq!(markets["id_field"], "ticker");
    assert_eq!(markets["page_size"], 1000);
    assert!(markets["latency_ms"].as_f64().is_some());
    let first_market = market_ids(1200, 30, 4)[0].clone();
    assert_eq!(markets["sample_id"], first_market.as_str());
    let series = entry("series");
    assert_eq!(series["paginated"], false);
    assert_eq!(series["page_size"], Value::Null);
    assert_eq!(entry("events")["page_size"], 200);
    let batch = entry("orderbooks");
    assert_eq!(batch["reachable"], false);
    assert_eq!(batch["status"], 404);
    assert_eq!(entry("orderbook_per_market")["reachable"], true);
    assert_eq!(entry("market_details")["id_field"], "ticker");
    assert_eq!(entry("event_details")["id_field"], "event_ticker");
    for name in [
        "historical_markets",
        "market_details",
        "event_details",
        "series_details",
        "historical_cutoff",
        "exchange_status",
        "trades",
        "historical_trades",
    ] {
        assert_eq!(entry(name)["reachable"], true, "{name}");
    }
    // Every probe went to the server the file describes.
    let probes = fake.requests().len();
    assert!((13..=16).contains(&probes), "{probes} probe requests");

    // `run` reads the file from --out: no batch order-book request is tried.
    let out = ingest_into(
        &fake.url,
        &dir,
        &["--endpoints", "markets,orderbooks", "--rate=0"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let run = RunOutput::read(&run_dir_of(&out));
    assert_eq!(run.ids("orderbooks").len(), 1200);
    let after: Vec<String> = fake.requests().into_iter().skip(probes).collect();
    assert_eq!(count(&after, "/markets/orderbooks?"), 0, "{after:#?}");
    assert_eq!(count(&after, "/orderbook "), 1200);
    assert!(
        run.summary["discovery_file"]
            .as_str()
            .is_some_and(|f| f.ends_with("discovered_endpoints.json"))
    );
}

#[test]
fn endpoints_the_server_refuses_leave_the_default_plan() {
    let dir = Dir::new("discover-left-out");
    let fake = FakeApi::start(
        &dir.path,
        &["--markets", "20", "--events", "4", "--series", "2"],
    );
    let file = dir.path.join("d.json");
    let entry = |name: &str, reachable: bool, status: u16| {
        format!(
            r#"{{"name":"{name}","path":"/x","reachable":{reachable},"status":{status},"paginated":null,"array_key":null,"id_field":null,"page_size":null,"latency_ms":null,"sample_id":null,"note":null}}"#
        )
    };
    std::fs::write(
        &file,
        format!(
            r#"{{"schema_version":1,"tool_version":"t","discovered_at":"t","base_url":"u","endpoints":[{},{}]}}"#,
            entry("historical_markets", false, 404),
            entry("series", true, 200)
        ),
    )
    .expect("write");
    let out = ingest_into(
        &fake.url,
        &dir,
        &["--discovery", file.to_str().expect("utf-8"), "--rate=0"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let run = RunOutput::read(&run_dir_of(&out));
    assert_eq!(
        run.summary["endpoints_planned"],
        serde_json::json!(["series", "events", "markets"])
    );
    assert!(
        run.summary["endpoints_left_out"]["historical_markets"]
            .as_str()
            .is_some_and(|why| why.contains("404"))
    );
    assert_eq!(count(&fake.requests(), "/historical/"), 0);

    // In the default location, a file describing another server is ignored.
    let out_dir = dir.path.join("out");
    std::fs::copy(&file, out_dir.join("discovered_endpoints.json")).expect("copy");
    let out = ingest_into(&fake.url, &dir, &["--rate=0"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("describes u, not") && err.contains("ignored"),
        "{err}"
    );
    let run = RunOutput::read(&run_dir_of(&out));
    assert_eq!(run.summary["endpoints_planned"][3], "historical_markets");
}

#[test]
fn a_broken_discovery_file_is_refused_with_a_clear_message() {
    let dir = Dir::new("discover-broken");
    let out_dir = dir.path.join("out");
    std::fs::create_dir_all(&out_dir).expect("mkdir");
    let file = out_dir.join("discovered_endpoints.json");
    for (text, want) in [
        ("{\"schema_version\":1,\"endpoints\":[", "not valid JSON"),
        (
            r#"{"schema_version":1,"tool_version":"t","discovered_at":"t","base_url":"u","endpoints":[{"name":"markets","path":"/markets","reachable":true,"status":200,"paginated":true,"array_key":"markets","id_field":"ticker","page_size":50000,"latency_ms":1.0,"sample_id":null,"note":null}]}"#,
            "outside 1..1000",
        ),
    ] {
        std::fs::write(&file, text).expect("write");
        // The default location is read when present; nothing is requested.
        let out = ingest_into("http://127.0.0.1:1", &dir, &[]);
        assert_eq!(out.status.code(), Some(2), "{}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{err}");
        assert!(err.contains("discovered_endpoints.json"), "{err}");
        assert!(err.contains("kalshi-ingest discover"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    }
}

#[test]
fn a_killed_detail_endpoint_resumes_to_exactly_the_clean_set() {
    let dir = Dir::new("details-kill");
    let fake = FakeApi::start(
        &dir.path,
        &[
            "--markets",
            "2600",
            "--events",
            "20",
            "--series",
            "3",
            "--latency-ms",
            "1",
            "--missing-details",
            "50",
        ],
    );
    let out_dir = dir.path.join("out");
    let mut child = spawn(&[
        "--base-url",
        &fake.url,
        "--out",
        out_dir.to_str().expect("utf-8"),
        "--endpoints",
        "markets,market_details",
        "--rate=0",
        "-q",
    ]);
    let run_dir = wait_for_run_dir_holding(&out_dir, "market_details/batch_0000");
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    let resumed = ingest(&[
        "run",
        "--resume",
        run_dir.to_str().expect("utf-8"),
        "--rate=0",
    ]);
    assert_eq!(resumed.status.code(), Some(0), "{}", show(&resumed));
    let run = RunOutput::read(&run_dir);
    let want: Vec<String> = market_ids(2600, 20, 3)
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % 50 != 49)
        .map(|(_, id)| id)
        .collect();
    assert_eq!(run.ids("market_details"), want);
    assert_eq!(not_found(&run, "market_details").len(), 52);
    let report = verify(&run_dir);
    assert_eq!(report.status.code(), Some(0), "{}", show(&report));
}
