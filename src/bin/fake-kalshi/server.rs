//! The HTTP side of the fake: a thread per connection, HTTP/1.1 keep-alive, routing,
//! paging and fault injection.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::data::{DataSet, EVENT_STATUS_FILTER, MARKET_STATUS_FILTER, UPDATED_BASE};

const PREFIX: &str = "/trade-api/v2";

/// A kind of injected fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    Status500,
    Status502,
    Status503,
    TooMany,
    Stall,
    Reset,
    Truncate,
    Html,
    /// A 200 whose JSON holds a byte that is not UTF-8.
    BadUtf8,
}

impl FaultKind {
    /// The kinds drawn by default (`badutf8` only when asked for: it is not a
    /// transient fault, so a random mix would make runs fail for good).
    pub const ALL: [FaultKind; 8] = [
        FaultKind::Status500,
        FaultKind::Status502,
        FaultKind::Status503,
        FaultKind::TooMany,
        FaultKind::Stall,
        FaultKind::Reset,
        FaultKind::Truncate,
        FaultKind::Html,
    ];

    pub fn parse(s: &str) -> Option<FaultKind> {
        Some(match s.trim() {
            "500" => FaultKind::Status500,
            "502" => FaultKind::Status502,
            "503" => FaultKind::Status503,
            "429" => FaultKind::TooMany,
            "stall" => FaultKind::Stall,
            "reset" => FaultKind::Reset,
            "truncate" => FaultKind::Truncate,
            "html" => FaultKind::Html,
            "badutf8" => FaultKind::BadUtf8,
            _ => return None,
        })
    }
}

/// Everything the fake can be told.
#[derive(Clone, Debug)]
pub struct Options {
    pub port: u16,
    pub data: DataSet,
    /// Whether `/markets/orderbooks` is served (else 404).
    pub batch_orderbooks: bool,
    pub overlap: u64,
    pub cursor_loop_at: Option<u64>,
    pub fault_rate: f64,
    pub faults: Vec<FaultKind>,
    pub seed: u64,
    pub faults_after: u64,
    pub stall: Duration,
    pub outage_after: Option<u64>,
    pub outage: Option<Duration>,
    pub rate_limit: Option<f64>,
    pub retry_after: Option<String>,
    pub request_log: Option<PathBuf>,
    pub latency: Duration,
}

struct State {
    options: Options,
    requests: AtomicU64,
    outage_started: Mutex<Option<Instant>>,
    bucket: Mutex<(f64, Instant)>,
    log: Option<Mutex<File>>,
}

/// What to send back for one request.
enum Reply {
    Json(u16, String),
    Raw {
        status: u16,
        content_type: &'static str,
        body: String,
        extra_headers: Vec<(String, String)>,
        /// Send only this many bytes of the body, then close (a truncated transfer).
        cut_at: Option<usize>,
    },
    /// A 200 JSON answer given as raw bytes (possibly not UTF-8).
    Bytes(Vec<u8>),
    /// Close the connection without answering.
    Reset,
    /// Hold the connection open, then close it without answering.
    Stall(Duration),
}

pub fn serve(options: Options) -> std::io::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", options.port))?;
    let port = listener.local_addr()?.port();
    let log = match &options.request_log {
        Some(path) => Some(Mutex::new(
            File::options().create(true).append(true).open(path)?,
        )),
        None => None,
    };
    let state = Arc::new(State {
        bucket: Mutex::new((options.rate_limit.unwrap_or(0.0), Instant::now())),
        options,
        requests: AtomicU64::new(0),
        outage_started: Mutex::new(None),
        log,
    });
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "http://127.0.0.1:{port}{PREFIX}")?;
        out.flush()?;
    }
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let state = Arc::clone(&state);
        std::thread::spawn(move || {
            let _ = handle_connection(stream, &state);
        });
    }
    Ok(())
}

fn handle_connection(stream: TcpStream, state: &State) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 {
                return Ok(());
            }
            if header == "\r\n" || header == "\n" {
                break;
            }
        }
        let target = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("/")
            .to_string();
        let n = state.requests.fetch_add(1, Ordering::SeqCst) + 1;
        if !state.options.latency.is_zero() {
            std::thread::sleep(state.options.latency);
        }
        let reply = respond(state, n, &target);
        log_request(state, n, &target, &reply);
        match reply {
            Reply::Json(status, body) => write_response(
                &mut writer,
                status,
                "application/json",
                body.as_bytes(),
                &[],
                None,
            )?,
            Reply::Raw {
                status,
                content_type,
                body,
                extra_headers,
                cut_at,
            } => {
                write_response(
                    &mut writer,
                    status,
                    content_type,
                    body.as_bytes(),
                    &extra_headers,
                    cut_at,
                )?;
                if cut_at.is_some() {
                    return Ok(());
                }
            }
            Reply::Bytes(body) => {
                write_response(&mut writer, 200, "application/json", &body, &[], None)?
            }
            Reply::Reset => return Ok(()),
            Reply::Stall(d) => {
                std::thread::sleep(d);
                return Ok(());
            }
        }
    }
}

fn write_response(
    w: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &[u8],
    extra: &[(String, String)],
    cut_at: Option<usize>,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: keep-alive\r\n",
        body.len()
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes())?;
    let bytes = &body[..cut_at.unwrap_or(body.len()).min(body.len())];
    w.write_all(bytes)?;
    w.flush()
}

fn log_request(state: &State, n: u64, target: &str, reply: &Reply) {
    let Some(log) = &state.log else { return };
    let outcome = match reply {
        Reply::Json(status, _) => status.to_string(),
        Reply::Raw {
            status,
            cut_at: Some(_),
            ..
        } => format!("{status}-truncated"),
        Reply::Raw {
            status,
            content_type,
            ..
        } if content_type.starts_with("text/html") => {
            format!("{status}-html")
        }
        Reply::Raw { status, .. } => status.to_string(),
        Reply::Bytes(_) => "200-badutf8".to_string(),
        Reply::Reset => "reset".to_string(),
        Reply::Stall(_) => "stall".to_string(),
    };
    let mut file = log.lock().unwrap_or_else(|p| p.into_inner());
    let _ = writeln!(file, "{n} {target} {outcome}");
}

/// A deterministic pseudo-random number in [0, 1) for request `n`.
fn draw(seed: u64, n: u64, salt: u64) -> f64 {
    let mut x = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(n.wrapping_mul(0xBF58_476D_1CE4_E5B9))
        .wrapping_add(salt);
    x ^= x >> 30;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

fn respond(state: &State, n: u64, target: &str) -> Reply {
    let o = &state.options;
    if let Some(after) = o.outage_after
        && n > after
    {
        let mut started = state
            .outage_started
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let since = *started.get_or_insert_with(Instant::now);
        if o.outage.is_none_or(|len| since.elapsed() < len) {
            return Reply::Reset;
        }
    }
    if let Some(rps) = o.rate_limit {
        let mut bucket = state.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = *bucket;
        let now = Instant::now();
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * rps).min(rps.max(1.0));
        if tokens < 1.0 {
            *bucket = (tokens, now);
            return too_many(o);
        }
        *bucket = (tokens - 1.0, now);
    }
    if n > o.faults_after && !o.faults.is_empty() && draw(o.seed, n, 1) < o.fault_rate {
        let pick = (draw(o.seed, n, 2) * o.faults.len() as f64) as usize;
        let kind = o.faults[pick.min(o.faults.len() - 1)];
        return inject(state, kind, target);
    }
    route(state, target)
}

fn too_many(o: &Options) -> Reply {
    Reply::Raw {
        status: 429,
        content_type: "application/json",
        body: r#"{"error":"too many requests"}"#.to_string(),
        extra_headers: o
            .retry_after
            .iter()
            .map(|v| ("Retry-After".to_string(), v.clone()))
            .collect(),
        cut_at: None,
    }
}

fn inject(state: &State, kind: FaultKind, target: &str) -> Reply {
    let error = |status: u16| {
        Reply::Json(
            status,
            format!(
                r#"{{"error":{{"code":"internal","message":"injected {status}","service":"fake"}}}}"#
            ),
        )
    };
    match kind {
        FaultKind::Status500 => error(500),
        FaultKind::Status502 => error(502),
        FaultKind::Status503 => error(503),
        FaultKind::TooMany => too_many(&state.options),
        FaultKind::Stall => Reply::Stall(state.options.stall),
        FaultKind::Reset => Reply::Reset,
        FaultKind::Html => Reply::Raw {
            status: 200,
            content_type: "text/html",
            body: "<html><body><h1>502 Bad Gateway</h1></body></html>".to_string(),
            extra_headers: vec![],
            cut_at: None,
        },
        FaultKind::BadUtf8 => match route(state, target) {
            Reply::Json(200, body) => {
                let mut bytes = body.into_bytes();
                let at = bytes
                    .windows(9)
                    .position(|w| w == br#""title":""#)
                    .map_or(bytes.len() / 2, |p| p + 9);
                if let Some(b) = bytes.get_mut(at) {
                    *b = 0xff;
                }
                Reply::Bytes(bytes)
            }
            other => other,
        },
        FaultKind::Truncate => match route(state, target) {
            Reply::Json(200, body) => {
                let cut = body.len() / 2;
                Reply::Raw {
                    status: 200,
                    content_type: "application/json",
                    body,
                    extra_headers: vec![],
                    cut_at: Some(cut),
                }
            }
            other => other,
        },
    }
}

fn error_reply(status: u16, code: &str, message: &str) -> Reply {
    Reply::Json(
        status,
        format!(
            r#"{{"error":{{"code":"{code}","message":{},"service":"fake"}}}}"#,
            serde_json::to_string(message).unwrap_or_default()
        ),
    )
}

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

fn route(state: &State, target: &str) -> Reply {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let Some(path) = path.strip_prefix(PREFIX) else {
        return error_reply(404, "not_found", "unknown path");
    };
    let data = &state.options.data;
    match path {
        "/series" => {
            let mut body = String::with_capacity(data.series as usize * 1400 + 32);
            body.push_str(r#"{"series":["#);
            for j in 0..data.series {
                if j > 0 {
                    body.push(',');
                }
                data.series_obj(j, &mut body);
            }
            body.push_str("]}");
            Reply::Json(200, body)
        }
        "/events" => {
            let status = query_param(query, "status").map(str::to_string);
            if let Some(s) = &status
                && !EVENT_STATUS_FILTER.contains(&s.as_str())
            {
                return error_reply(400, "invalid_parameters", "invalid status");
            }
            let series = query_param(query, "series_ticker").map(str::to_string);
            let since = query_param(query, "min_updated_ts").and_then(|v| v.parse::<i64>().ok());
            let keep = |k: u64| {
                status
                    .as_deref()
                    .is_none_or(|s| EVENT_STATUS_FILTER[(k % 3) as usize] == s)
                    && series
                        .as_deref()
                        .is_none_or(|s| data.series_ticker(data.series_of_event(k)) == s)
                    && since.is_none_or(|t| UPDATED_BASE + k as i64 * 60 >= t)
            };
            page(state, query, "events", data.events, 200, keep, |k, out| {
                data.event(k, out)
            })
        }
        "/markets" => {
            let status = query_param(query, "status").map(str::to_string);
            if let Some(s) = &status
                && !MARKET_STATUS_FILTER.contains(&s.as_str())
            {
                return error_reply(400, "invalid_parameters", "invalid status");
            }
            let series = query_param(query, "series_ticker").map(str::to_string);
            let event = query_param(query, "event_ticker").map(str::to_string);
            let since = query_param(query, "min_updated_ts").and_then(|v| v.parse::<i64>().ok());
            if since.is_some() && (status.is_some() || series.is_some() || event.is_some()) {
                return error_reply(
                    400,
                    "invalid_parameters",
                    "min_updated_ts cannot be combined with other filters",
                );
            }
            let keep = |i: u64| {
                let k = data.event_of_market(i);
                status
                    .as_deref()
                    .is_none_or(|s| MARKET_STATUS_FILTER[(i % 5) as usize] == s)
                    && event.as_deref().is_none_or(|e| data.event_ticker(k) == e)
                    && series
                        .as_deref()
                        .is_none_or(|s| data.series_ticker(data.series_of_event(k)) == s)
                    && since.is_none_or(|t| UPDATED_BASE + i as i64 * 60 >= t)
            };
            page(
                state,
                query,
                "markets",
                data.markets,
                1000,
                keep,
                |i, out| data.market(i, out),
            )
        }
        "/historical/markets" => page(
            state,
            query,
            "markets",
            data.historical,
            1000,
            |_| true,
            |h, out| data.historical_market(h, out),
        ),
        "/markets/trades" | "/historical/trades" => page(
            state,
            query,
            "trades",
            data.trades,
            1000,
            |_| true,
            |t, out| data.trade(t, out),
        ),
        "/historical/cutoff" => Reply::Json(
            200,
            concat!(
                r#"{"market_settled_ts":"2024-08-01T00:00:00Z","#,
                r#""trades_created_ts":"2024-08-01T00:00:00Z","#,
                r#""orders_updated_ts":"2024-08-01T00:00:00Z"}"#
            )
            .to_string(),
        ),
        "/exchange/status" => Reply::Json(
            200,
            r#"{"exchange_active":true,"trading_active":true}"#.to_string(),
        ),
        "/markets/orderbooks" => batch_orderbooks(state, query),
        _ => detail(state, path),
    }
}

/// Decodes `%XX` escapes (`None` for a bad escape or bytes that are not UTF-8).
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `GET /markets/orderbooks?tickers=A&tickers=B` (or `tickers=A,B`): the books of the
/// known tickers, in the order asked; unknown ones are left out.
fn batch_orderbooks(state: &State, query: &str) -> Reply {
    let data = &state.options.data;
    if !state.options.batch_orderbooks {
        return error_reply(404, "not_found", "unknown path");
    }
    let mut tickers = Vec::new();
    for (key, value) in query.split('&').filter_map(|kv| kv.split_once('=')) {
        if key != "tickers" {
            continue;
        }
        let Some(value) = percent_decode(value) else {
            return error_reply(400, "invalid_parameters", "bad escape in tickers");
        };
        tickers.extend(value.split(',').map(str::to_string));
    }
    if tickers.is_empty() || tickers.len() > 100 {
        return error_reply(400, "invalid_parameters", "tickers: 1 to 100 required");
    }
    let mut body = String::from(r#"{"orderbooks":["#);
    let mut first = true;
    for ticker in &tickers {
        let Some(i) = data
            .market_index(ticker)
            .filter(|&i| !data.detail_missing(i))
        else {
            continue;
        };
        if !first {
            body.push(',');
        }
        first = false;
        body.push_str(r#"{"ticker":"#);
        body.push_str(&serde_json::to_string(ticker).unwrap_or_default());
        body.push_str(r#","orderbook_fp":"#);
        data.orderbook(i, &mut body);
        body.push('}');
    }
    body.push_str("]}");
    Reply::Json(200, body)
}

/// The per-record endpoints: `/markets/{t}`, `/markets/{t}/orderbook`,
/// `/events/{e}`, `/series/{s}`.
fn detail(state: &State, path: &str) -> Reply {
    let data = &state.options.data;
    let not_found = || error_reply(404, "not_found", "not found");
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let Some(id) = segments.get(1).and_then(|s| percent_decode(s)) else {
        return not_found();
    };
    let mut body = String::with_capacity(4096);
    match segments.as_slice() {
        ["markets", _] | ["markets", _, "orderbook"] => {
            let Some(i) = data.market_index(&id).filter(|&i| !data.detail_missing(i)) else {
                return not_found();
            };
            if segments.len() == 3 {
                body.push_str(r#"{"orderbook_fp":"#);
                data.orderbook(i, &mut body);
            } else {
                body.push_str(r#"{"market":"#);
                data.market(i, &mut body);
            }
            body.push('}');
        }
        ["events", _] => {
            let Some(k) = data.event_index(&id).filter(|&k| !data.detail_missing(k)) else {
                return not_found();
            };
            body.push_str(r#"{"event":"#);
            data.event(k, &mut body);
            body.push_str(r#","markets":["#);
            let mut i = k;
            while i < data.markets {
                if i != k {
                    body.push(',');
                }
                data.market(i, &mut body);
                i += data.events.max(1);
            }
            body.push_str("]}");
        }
        ["series", _] => {
            let Some(j) = data.series_index(&id).filter(|&j| !data.detail_missing(j)) else {
                return not_found();
            };
            body.push_str(r#"{"series":"#);
            data.series_obj(j, &mut body);
            body.push('}');
        }
        _ => return not_found(),
    }
    Reply::Json(200, body)
}

fn cursor_for(offset: u64) -> String {
    format!("c{:x}", offset.wrapping_mul(2654435761) ^ 0x5eed)
}

fn offset_of(cursor: &str, total: u64) -> Option<u64> {
    let hex = cursor.strip_prefix('c')?;
    let mixed = u64::from_str_radix(hex, 16).ok()? ^ 0x5eed;
    // Invert the multiplication by scanning is too slow; keep an inverse instead.
    let offset = mixed.wrapping_mul(MULT_INVERSE);
    (offset <= total).then_some(offset)
}

/// The multiplicative inverse of 2654435761 modulo 2^64.
const MULT_INVERSE: u64 = {
    let a: u64 = 2654435761;
    let mut x: u64 = 1;
    let mut i = 0;
    while i < 6 {
        x = x.wrapping_mul(2u64.wrapping_sub(a.wrapping_mul(x)));
        i += 1;
    }
    x
};

fn page(
    state: &State,
    query: &str,
    key: &str,
    total: u64,
    max: u64,
    keep: impl Fn(u64) -> bool,
    item: impl Fn(u64, &mut String),
) -> Reply {
    let limit = match query_param(query, "limit") {
        None => 100,
        Some(v) => match v.parse::<u64>() {
            Ok(l) if (1..=max).contains(&l) => l,
            _ => {
                return error_reply(
                    400,
                    "invalid_parameters",
                    &format!("limit must be 1..{max}"),
                );
            }
        },
    };
    let offset = match query_param(query, "cursor").filter(|c| !c.is_empty()) {
        None => 0,
        Some(c) => match offset_of(c, total) {
            Some(o) => o,
            None => return error_reply(400, "invalid_cursor", "bad cursor"),
        },
    };
    let o = &state.options;
    let start = if offset > 0 {
        offset.saturating_sub(o.overlap)
    } else {
        0
    };
    let mut body = String::with_capacity((limit as usize) * 2200 + 64);
    body.push_str(&format!(r#"{{"{key}":["#));
    // Scan from `start`, keeping records that pass the filters, until `limit` new
    // ones (at or past `offset`) are in the page; the cursor is where the scan stopped.
    let mut end = start;
    let mut taken = 0u64;
    let mut first = true;
    while end < total && taken < limit {
        let i = end;
        end += 1;
        if !keep(i) {
            continue;
        }
        if !first {
            body.push(',');
        }
        first = false;
        item(i, &mut body);
        if i >= offset {
            taken += 1;
        }
    }
    body.push(']');
    if key == "events" {
        body.push_str(r#","milestones":[]"#);
    }
    let page_number = offset / limit + 1;
    let next = match o.cursor_loop_at {
        Some(p) if page_number >= p => cursor_for((p - 1) * limit + limit),
        _ if end < total => cursor_for(end),
        _ => String::new(),
    };
    body.push_str(&format!(r#","cursor":"{next}"}}"#));
    Reply::Json(200, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_escapes_decode() {
        assert_eq!(percent_decode("a%2Fb%20c").as_deref(), Some("a/b c"));
        assert_eq!(percent_decode("%E5%B8%82").as_deref(), Some("市"));
        assert_eq!(percent_decode("%zz"), None);
    }

    #[test]
    fn cursors_round_trip() {
        for offset in [0, 1, 1000, 999_000, 7_700_000] {
            assert_eq!(offset_of(&cursor_for(offset), 10_000_000), Some(offset));
        }
        assert_eq!(offset_of("zzz", 10), None);
    }
}
