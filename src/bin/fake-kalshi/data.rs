//! Deterministic data in the shapes of Kalshi trade-api v2 (after the March 2026
//! fixed-point migration): series, events and markets generated from their index, so
//! any page of a million markets is produced on demand without storing anything.

use std::fmt::Write;

/// Ids that try to escape a folder or break a file system, used by `--hostile-ids`.
pub const HOSTILE_IDS: &[&str] = &[
    "../../../../tmp/kalshi-escape",
    "a/b",
    "a_b",
    "..",
    ".",
    ".hidden",
    "CON",
    "nul.txt",
    "ctl\u{1}\u{1b}[31m\u{7f}x\n",
    "back\\slash",
    "市场-ü-😀",
    "",
];

/// A market's own `status` field, by index (the API's filter values map to these).
pub const MARKET_STATUS: [&str; 5] = ["initialized", "active", "inactive", "closed", "finalized"];
/// The `status` filter value that selects each entry of [`MARKET_STATUS`].
pub const MARKET_STATUS_FILTER: [&str; 5] = ["unopened", "open", "paused", "closed", "settled"];
/// The `status` filter value that selects an event, by `index % 3`.
pub const EVENT_STATUS_FILTER: [&str; 3] = ["open", "closed", "settled"];
/// Unix time of the oldest record's `updated_time`; record i is i minutes newer.
pub const UPDATED_BASE: i64 = 1_730_419_200;

/// `updated_time` of record `i` (RFC 3339).
pub fn updated_time(i: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(UPDATED_BASE + i as i64 * 60)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// `(i % 120) + 0.5` as text, the strikes markets cycle through.
static STRIKES: std::sync::LazyLock<Vec<String>> =
    std::sync::LazyLock::new(|| (0..120).map(|k| format!("{}", k as f64 + 0.5)).collect());

/// Appends `n` in decimal.
fn push_int(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for d in digits[..len].iter().rev() {
        out.push(*d as char);
    }
}

/// Appends `n` in decimal, zero-padded to `width` digits.
fn push_padded(out: &mut String, n: u64, width: usize) {
    let mut text = String::with_capacity(20);
    push_int(&mut text, n);
    for _ in text.len()..width {
        out.push('0');
    }
    out.push_str(&text);
}

/// The size of the data set and its quirks.
#[derive(Clone, Debug)]
pub struct DataSet {
    pub markets: u64,
    pub events: u64,
    pub series: u64,
    pub hostile_ids: bool,
    /// Markets 0, 1, 2 get no ticker, a numeric ticker and a null ticker.
    pub odd_ids: bool,
    /// Markets served only by `/historical/markets`.
    pub historical: u64,
    /// Trades served by `/markets/trades` (and as many by `/historical/trades`).
    pub trades: u64,
    /// Every K-th id (index % K == K - 1) answers 404 on the detail endpoints and is
    /// left out of batch order books.
    pub missing_details: Option<u64>,
}

impl DataSet {
    /// Whether the detail endpoints pretend not to know record `index`.
    pub fn detail_missing(&self, index: u64) -> bool {
        self.missing_details
            .is_some_and(|k| k > 0 && index % k == k - 1)
    }
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("a str always serializes")
}

impl DataSet {
    pub fn series_ticker(&self, j: u64) -> String {
        format!("KXS{j:05}")
    }

    pub fn event_ticker(&self, k: u64) -> String {
        let series = if self.series == 0 { 0 } else { k % self.series };
        format!("{}-E{k:06}", self.series_ticker(series))
    }

    /// The event index of market `i`.
    pub fn event_of_market(&self, i: u64) -> u64 {
        if self.events == 0 { 0 } else { i % self.events }
    }

    /// The series index of event `k`.
    pub fn series_of_event(&self, k: u64) -> u64 {
        if self.series == 0 { 0 } else { k % self.series }
    }

    /// One market object (about 2 KB, like production). Written from static pieces
    /// and a small integer writer rather than `format!`: a benchmark of a million
    /// markets must not wait for the fake (this made page generation ~4x faster).
    pub fn market(&self, i: u64, out: &mut String) {
        let event_ticker = self.event_ticker(self.event_of_market(i));
        let bid = i * 37 % 98 + 1;
        let strike = STRIKES[(i % 120) as usize].as_str();
        let two = |out: &mut String, n: u64| {
            out.push((b'0' + (n / 10 % 10) as u8) as char);
            out.push((b'0' + (n % 10) as u8) as char);
        };
        out.push_str(r#"{"ticker":"#);
        if self.odd_ids && i < 3 {
            // Replace the ticker member: none, a number, null.
            out.truncate(out.len() - r#""ticker":"#.len());
            out.push_str(["", r#""ticker":12345,"#, r#""ticker":null,"#][i as usize]);
            out.push_str(r#""id_note":"odd""#);
        } else if self.hostile_ids && (i as usize) < HOSTILE_IDS.len() {
            out.push_str(&json_str(HOSTILE_IDS[i as usize]));
        } else {
            out.push('"');
            out.push_str(&event_ticker);
            out.push_str("-M");
            push_padded(out, i, 7);
            out.push('"');
        }
        out.push_str(r#","event_ticker":""#);
        out.push_str(&event_ticker);
        out.push_str(r#"","market_type":"binary","title":"Will the high temp in NYC be >"#);
        out.push_str(strike);
        out.push_str("° on day ");
        push_int(out, i);
        out.push_str(r#"? — “quoted” ✓","subtitle":"","yes_sub_title":""#);
        out.push_str(strike);
        out.push_str(r#"° or above","no_sub_title":"below "#);
        out.push_str(strike);
        out.push_str(r#"°","created_time":"2024-10-01T12:00:00.000003Z","updated_time":""#);
        out.push_str(&updated_time(i));
        out.push_str(concat!(
            r#"","open_time":"2024-11-01T15:00:00Z","close_time":"2024-11-01T04:59:00Z","#,
            r#""expected_expiration_time":"2024-11-01T14:00:00Z","expiration_time":"2024-11-01T14:00:00Z","#,
            r#""latest_expiration_time":"2024-12-01T14:00:00Z","settlement_timer_seconds":1800,"#,
            r#""status":""#
        ));
        out.push_str(MARKET_STATUS[(i % 5) as usize]);
        out.push_str(r#"","yes_bid_dollars":"0."#);
        two(out, bid);
        out.push_str(r#"00","yes_ask_dollars":"0."#);
        two(out, bid + 1);
        out.push_str(r#"00","no_bid_dollars":"0."#);
        two(out, 99 - bid - 1);
        out.push_str(r#"00","no_ask_dollars":"0."#);
        two(out, 99 - bid);
        out.push_str(r#"00","yes_bid_size_fp":""#);
        push_int(out, i % 1000);
        out.push_str(r#".00","yes_ask_size_fp":"144.00","last_price_dollars":"0."#);
        two(out, bid);
        out.push_str(concat!(
            r#"00","previous_yes_bid_dollars":"0.1400","previous_yes_ask_dollars":"0.1600","#,
            r#""previous_price_dollars":"0.1400","volume_fp":""#
        ));
        push_int(out, i * 13 % 1_000_000);
        out.push_str(concat!(
            r#".00","volume_24h_fp":"201.00","open_interest_fp":"98679.00","#,
            r#""notional_value_dollars":"1.0000","result":"","can_close_early":true,"#,
            r#""expiration_value":"","strike_type":"greater","floor_strike":"#
        ));
        out.push_str(strike);
        out.push_str(r#","rules_primary":"If the highest temperature recorded in Central Park, New York for "#);
        out.push_str(&event_ticker);
        out.push_str(" is greater than ");
        out.push_str(strike);
        out.push_str(concat!(
            r#"°, then the market resolves to Yes.","#,
            r#""rules_secondary":"The following market refers to the high temperature reported by the National Weather Service in its Daily Climate Report. Revisions after expiration are not counted. If no report is issued, the market resolves according to the settlement sources of the series.","#,
            r#""price_level_structure":"linear_cent","price_ranges":[{"start":"0.0000","end":"1.0000","step":"0.0100"}],"#,
            r#""custom_strike":null,"settlement_bounds_type":"default","exchange_index":0,"#,
            r#""mve_selected_legs":[],"primary_participant_key":"p"#
        ));
        push_int(out, i);
        out.push_str(r#""}"#);
    }

    /// One event object.
    pub fn event(&self, k: u64, out: &mut String) {
        let series = if self.series == 0 { 0 } else { k % self.series };
        let _ = write!(
            out,
            concat!(
                r#"{{"event_ticker":"{ev}","series_ticker":"{se}","title":"Highest temperature in NYC on day {k}?","#,
                r#""sub_title":"On day {k}","collateral_return_type":"","mutually_exclusive":{me},"#,
                r#""category":"Climate and Weather","strike_date":"2024-11-01T14:00:00Z","strike_period":"","#,
                r#""available_on_brokers":true,"price_level_structure":"linear_cent","last_updated_ts":"{updated}"}}"#
            ),
            ev = self.event_ticker(k),
            se = self.series_ticker(series),
            k = k,
            me = k.is_multiple_of(2),
            updated = updated_time(k),
        );
    }

    /// One series object (about 1.35 KB: 14,000 of them make a ~19 MB `/series`).
    pub fn series_obj(&self, j: u64, out: &mut String) {
        let _ = write!(
            out,
            concat!(
                r#"{{"ticker":"{t}","frequency":"daily","title":"Series {j}: highest temperature","#,
                r#""category":"Climate and Weather","tags":["weather","temperature","daily"],"#,
                r#""settlement_sources":[{{"name":"National Weather Service","url":"https://www.weather.gov/"}},"#,
                r#"{{"name":"NOAA Climate Data Online","url":"https://www.ncei.noaa.gov/cdo-web/"}}],"#,
                r#""contract_url":"https://kalshi-public-docs.s3.amazonaws.com/regulatory/product-certifications/{t}.pdf","#,
                r#""contract_terms_url":"https://kalshi-public-docs.s3.amazonaws.com/contract_terms/{t}.pdf","#,
                r#""fee_type":"quadratic","fee_multiplier":1,"additional_prohibitions":["#,
                r#""Employees of the source agency may not trade this contract.","#,
                r#""Members with material non-public information about the reading may not trade.","#,
                r#""Automated trading against the settlement feed during the reporting window is prohibited."],"#,
                r#""product_metadata":null,"categories":["Climate and Weather"],"#,
                r#""description":"Daily highest temperature series number {j}, settled on the official daily climate report; padding text keeps the object near the production average size of about thirteen hundred and fifty bytes, which is what fourteen thousand series in a nineteen megabyte response work out to; the real objects carry longer rules, tags and source lists than the small samples show.","#,
                r#""last_updated_ts":"2025-01-01T00:00:00Z","exchange_index":0}}"#
            ),
            t = self.series_ticker(j),
            j = j,
        );
    }
}

impl DataSet {
    /// Market `i`'s ticker as served (`None` for the odd ids, which have no string
    /// ticker).
    pub fn market_ticker(&self, i: u64) -> Option<String> {
        if self.odd_ids && i < 3 {
            return None;
        }
        if self.hostile_ids && (i as usize) < HOSTILE_IDS.len() {
            return Some(HOSTILE_IDS[i as usize].to_string());
        }
        let mut t = self.event_ticker(self.event_of_market(i));
        t.push_str("-M");
        push_padded(&mut t, i, 7);
        Some(t)
    }

    /// The index of the market whose ticker is `ticker`.
    pub fn market_index(&self, ticker: &str) -> Option<u64> {
        if self.hostile_ids
            && let Some(i) = HOSTILE_IDS.iter().position(|h| *h == ticker)
        {
            return Some(i as u64);
        }
        let i: u64 = ticker.rsplit_once("-M")?.1.parse().ok()?;
        (i < self.markets && self.market_ticker(i).as_deref() == Some(ticker)).then_some(i)
    }

    /// The index of the event whose ticker is `ticker`.
    pub fn event_index(&self, ticker: &str) -> Option<u64> {
        let k: u64 = ticker.rsplit_once("-E")?.1.parse().ok()?;
        (k < self.events && self.event_ticker(k) == ticker).then_some(k)
    }

    /// The index of the series whose ticker is `ticker`.
    pub fn series_index(&self, ticker: &str) -> Option<u64> {
        let j: u64 = ticker.strip_prefix("KXS")?.parse().ok()?;
        (j < self.series && self.series_ticker(j) == ticker).then_some(j)
    }

    /// Market `i`'s order book in the 2026 shape (`orderbook_fp`): bids only,
    /// ascending price; some books have an empty side as `[]` or `null`.
    pub fn orderbook(&self, i: u64, out: &mut String) {
        let side = |out: &mut String, seed: u64| {
            if seed.is_multiple_of(7) {
                out.push_str("[]");
                return;
            }
            if seed.is_multiple_of(11) {
                out.push_str("null");
                return;
            }
            out.push('[');
            let levels = seed % 4 + 1;
            for level in 0..levels {
                if level > 0 {
                    out.push(',');
                }
                let _ = write!(
                    out,
                    r#"["0.{:02}00","{}.00"]"#,
                    (seed + level * 13) % 20 + level * 20 + 1,
                    (seed * 31 + level) % 5000
                );
            }
            out.push(']');
        };
        out.push_str(r#"{"yes_dollars":"#);
        side(out, i);
        out.push_str(r#","no_dollars":"#);
        side(out, i / 3 + 5);
        out.push('}');
    }

    /// Historical market `h` (settled before the cutoff, served only by
    /// `/historical/markets`).
    pub fn historical_market(&self, h: u64, out: &mut String) {
        let _ = write!(
            out,
            concat!(
                r#"{{"ticker":"KXOLD-21JUL01-H{h:07}","event_ticker":"KXOLD-21JUL01","market_type":"binary","#,
                r#""title":"Archived market {h}","status":"finalized","result":"{result}","#,
                r#""created_time":"2021-06-01T12:00:00Z","updated_time":"2021-07-02T12:00:00Z","#,
                r#""close_time":"2021-07-01T04:59:00Z","settlement_value_dollars":"{value}","#,
                r#""volume_fp":"{volume}.00","last_price_dollars":"0.{price:02}00","floor_strike":{strike}}}"#
            ),
            h = h,
            result = if h.is_multiple_of(2) { "yes" } else { "no" },
            value = if h.is_multiple_of(2) {
                "1.0000"
            } else {
                "0.0000"
            },
            volume = h * 7 % 100_000,
            price = h % 98 + 1,
            strike = STRIKES[(h % 120) as usize],
        );
    }

    /// Trade `t` (of market `t % markets`).
    pub fn trade(&self, t: u64, out: &mut String) {
        let ticker = if self.markets == 0 {
            String::new()
        } else {
            self.market_ticker(t % self.markets).unwrap_or_default()
        };
        let _ = write!(
            out,
            concat!(
                r#"{{"trade_id":"tr-{t:08}","ticker":{ticker},"count_fp":"{count}.00","#,
                r#""yes_price_dollars":"0.{p:02}00","no_price_dollars":"0.{q:02}00","#,
                r#""taker_outcome_side":"{side}","created_time":"{time}","is_block_trade":false}}"#
            ),
            t = t,
            ticker = json_str(&ticker),
            count = t % 50 + 1,
            p = t % 98 + 1,
            q = 99 - (t % 98 + 1),
            side = if t.is_multiple_of(2) { "yes" } else { "no" },
            time = updated_time(t),
        );
    }
}
