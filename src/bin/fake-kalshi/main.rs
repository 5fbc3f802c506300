//! fake-kalshi: a loopback stand-in for Kalshi's public trade-api v2, for tests,
//! benchmarks and trying kalshi-ingest offline.
//!
//! Serves the public market-data endpoints of ../shared/kalshi-api.md under
//! `/trade-api/v2` (lists, details, order books single and batched, the historical
//! archive and cutoff, trades, exchange status) with deterministic generated data in
//! the real shapes (see `data.rs`), and can misbehave on purpose:
//! overlapping pages, a cursor that repeats, hostile ids, random faults (5xx, 429,
//! stalls, resets, truncated and HTML bodies), outages and rate limiting.
//!
//! It prints its base URL on the first line of stdout, then serves until killed.

mod data;
mod server;

use std::process::ExitCode;
use std::time::Duration;

use data::DataSet;
use server::{FaultKind, Options};

const HELP: &str = "\
fake-kalshi: a fake Kalshi trade-api v2 on 127.0.0.1 for tests and offline try-outs

USAGE:
    fake-kalshi [OPTIONS]

    Prints its base URL (http://127.0.0.1:PORT/trade-api/v2) on stdout, then serves
    until killed. Pass that URL to kalshi-ingest --base-url.

DATA:
    --markets N           Markets served by /markets [default: 2500]
    --events N            Events served by /events [default: 500]
    --series N            Series served by /series (one response) [default: 140]
    --hostile-ids         The first markets get ids like ../x, a/b, control
                          characters, non-ASCII and an empty id
    --odd-ids             Markets 0-2 have no ticker, a numeric one, a null one
    --historical N        Markets served by /historical/markets [default: 300]
    --trades N            Trades served by /markets/trades and /historical/trades
                          [default: 0]
    --missing-details K   Every K-th market, event and series answers 404 on its
                          detail endpoints and is left out of batch order books
    --no-batch-orderbooks /markets/orderbooks answers 404 (as if not deployed)

PAGING QUIRKS:
    --overlap K           Each page after the first repeats the previous page's last
                          K records
    --cursor-loop-at P    From page P on, always return page P's cursor again

FAULTS:
    --fault-rate F        Fraction of requests (0..1) that get a random fault
    --faults LIST         Kinds to draw from: 500,502,503,429,stall,reset,truncate,html,
                          badutf8 (a 200 with a byte that is not UTF-8)
                          [default: all but badutf8]
    --seed N              Seed for the fault draws [default: 1]
    --faults-after N      Exempt the first N requests from faults [default: 0]
    --stall-ms MS         How long a stall fault holds the response [default: 30000]
    --outage-after N      After N requests, start an outage (connections reset)
    --outage-ms MS        Outage length; 0 means it never ends [default: 0]
    --rate-limit RPS      Answer 429 beyond RPS requests per second
    --retry-after VALUE   Send this Retry-After header with every 429

OTHER:
    --latency-ms MS       Wait this long before answering each request [default: 0]
    --port N              Port to listen on [default: 0, any free port]
    --request-log FILE    Append one line per request: number, target, outcome
    -h, --help            Print this help
";

fn main() -> ExitCode {
    match parse(std::env::args().skip(1).collect()) {
        Ok(Some(options)) => match server::serve(options) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("fake-kalshi: error: {e}");
                ExitCode::from(2)
            }
        },
        Ok(None) => {
            print!("{HELP}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fake-kalshi: error: {e}");
            ExitCode::from(2)
        }
    }
}

fn parse(args: Vec<String>) -> Result<Option<Options>, String> {
    let mut o = Options {
        port: 0,
        data: DataSet {
            markets: 2500,
            events: 500,
            series: 140,
            hostile_ids: false,
            odd_ids: false,
            historical: 300,
            trades: 0,
            missing_details: None,
        },
        batch_orderbooks: true,
        overlap: 0,
        cursor_loop_at: None,
        fault_rate: 0.0,
        faults: FaultKind::ALL.to_vec(),
        seed: 1,
        faults_after: 0,
        stall: Duration::from_secs(30),
        outage_after: None,
        outage: None,
        rate_limit: None,
        retry_after: None,
        request_log: None,
        latency: Duration::ZERO,
    };
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        fn num<T: std::str::FromStr>(flag: &str, v: String) -> Result<T, String> {
            v.parse().map_err(|_| format!("{flag}: bad value {v:?}"))
        }
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--port" => o.port = num(&flag, value(&flag)?)?,
            "--markets" => o.data.markets = num(&flag, value(&flag)?)?,
            "--events" => o.data.events = num(&flag, value(&flag)?)?,
            "--series" => o.data.series = num(&flag, value(&flag)?)?,
            "--hostile-ids" => o.data.hostile_ids = true,
            "--odd-ids" => o.data.odd_ids = true,
            "--historical" => o.data.historical = num(&flag, value(&flag)?)?,
            "--trades" => o.data.trades = num(&flag, value(&flag)?)?,
            "--missing-details" => o.data.missing_details = Some(num(&flag, value(&flag)?)?),
            "--no-batch-orderbooks" => o.batch_orderbooks = false,
            "--overlap" => o.overlap = num(&flag, value(&flag)?)?,
            "--cursor-loop-at" => o.cursor_loop_at = Some(num(&flag, value(&flag)?)?),
            "--fault-rate" => o.fault_rate = num(&flag, value(&flag)?)?,
            "--faults" => {
                o.faults = value(&flag)?
                    .split(',')
                    .map(|k| {
                        FaultKind::parse(k).ok_or_else(|| format!("--faults: unknown kind {k:?}"))
                    })
                    .collect::<Result<_, _>>()?
            }
            "--seed" => o.seed = num(&flag, value(&flag)?)?,
            "--faults-after" => o.faults_after = num(&flag, value(&flag)?)?,
            "--stall-ms" => o.stall = Duration::from_millis(num(&flag, value(&flag)?)?),
            "--outage-after" => o.outage_after = Some(num(&flag, value(&flag)?)?),
            "--outage-ms" => {
                let ms: u64 = num(&flag, value(&flag)?)?;
                o.outage = (ms > 0).then(|| Duration::from_millis(ms));
            }
            "--rate-limit" => o.rate_limit = Some(num(&flag, value(&flag)?)?),
            "--retry-after" => o.retry_after = Some(value(&flag)?),
            "--request-log" => o.request_log = Some(value(&flag)?.into()),
            "--latency-ms" => o.latency = Duration::from_millis(num(&flag, value(&flag)?)?),
            other => return Err(format!("unknown flag {other} (see --help)")),
        }
    }
    if !(0.0..=1.0).contains(&o.fault_rate) {
        return Err("--fault-rate must be between 0 and 1".into());
    }
    Ok(Some(o))
}
