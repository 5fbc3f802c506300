//! The session summary: what a run planned, did and ended with, per endpoint and in
//! total. Written as `atomic_session_summary_<session_id>.json` at the end of a run.
//!
//! Every count here is of what is on disk: `records_saved` equals the record files in
//! the endpoint's committed batch folders.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// The version of the summary layout.
pub(crate) const SUMMARY_SCHEMA_VERSION: u32 = 1;

/// How an endpoint ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub(crate) enum EndpointStatus {
    /// Every page was fetched and every record is on disk.
    Complete,
    /// The endpoint stopped early; `failure` says where and why.
    Incomplete,
    /// The run ended before this endpoint started.
    #[default]
    NotStarted,
    /// Ctrl-C or SIGTERM stopped the endpoint; `--resume` continues it.
    Interrupted,
    /// Stopped on purpose after `--max-records` records.
    Sampled,
}

/// Where and why an endpoint stopped early.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub(crate) struct FailurePoint {
    /// The 1-based number of the page that could not be fetched or used.
    pub(crate) page: u64,
    /// Records on disk for this endpoint when it stopped.
    pub(crate) records_saved: u64,
    /// The cursor of the last page fully saved (`null`: none, or the first page failed).
    pub(crate) last_good_cursor: Option<String>,
    /// The URL of the failed request.
    pub(crate) url: String,
    /// The last error, one line.
    pub(crate) error: String,
}

/// One endpoint's result.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub(crate) struct EndpointSummary {
    pub(crate) name: String,
    pub(crate) path: String,
    pub(crate) status: EndpointStatus,
    /// Unique records written (equals the record files on disk).
    pub(crate) records_saved: u64,
    /// Records received again with identical content, not written twice.
    pub(crate) duplicates_skipped: u64,
    /// Records stored whose id field was missing or not a string/number.
    pub(crate) records_without_id: u64,
    /// Pages received and parsed.
    pub(crate) pages: u64,
    /// HTTP requests sent (all attempts).
    pub(crate) requests: u64,
    /// The fewest requests the records saved could have taken: pages at the largest
    /// page size (at least one), plus the cutoff document for the archive endpoints;
    /// for detail endpoints ceil(ids / 100) with the batch order-book endpoint, else
    /// one per id. `requests` above it shows retries, overlap or fallbacks.
    #[serde(default)]
    pub(crate) requests_minimum: u64,
    /// Response body bytes received in parsed pages.
    pub(crate) bytes_received: u64,
    /// Committed batch folders.
    pub(crate) batches: u64,
    /// Bytes of record files written.
    pub(crate) bytes_written: u64,
    pub(crate) duration_seconds: f64,
    pub(crate) records_per_second: f64,
    /// Failed attempts by class (`timeout`, `reset`, `server_error`, `rate_limited`, ...).
    pub(crate) retries_by_class: BTreeMap<String, u64>,
    /// HTTP 429 answers received.
    pub(crate) rate_limited: u64,
    /// Time spent waiting between tries (backoff, 429 waits, recovery steps).
    pub(crate) wait_seconds: f64,
    /// Time spent pacing requests under `--rate`.
    pub(crate) pacing_seconds: f64,
    /// Every stretch in extended recovery mode.
    pub(crate) recovery_episodes: Vec<RecoveryEpisode>,
    pub(crate) failure: Option<FailurePoint>,
    /// Detail endpoints: where the ids came from (`markets`, ... or `--tickers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ids_from: Option<String>,
    /// Detail endpoints: distinct ids asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ids_requested: Option<u64>,
    /// Detail endpoints: id-log lines not asked for (records without an id, empty
    /// ids, repeats of an id already asked for).
    #[serde(default)]
    pub(crate) ids_skipped: u64,
    /// Detail endpoints: ids the server answered with HTTP 404 (sorted). Not an error:
    /// a market can disappear, or be too new, between the list and the detail request.
    #[serde(default)]
    pub(crate) not_found: BTreeSet<String>,
    /// `orderbooks`: why the per-market endpoint was used instead of the batch one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) fallback: Option<String>,
    /// Archive endpoints: `/historical/cutoff` as received when the endpoint started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) historical_cutoff: Option<serde_json::Value>,
}

/// One stretch of extended recovery mode.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub(crate) struct RecoveryEpisode {
    /// The 1-based page being fetched.
    pub(crate) page: u64,
    /// RFC 3339 UTC time recovery mode was entered.
    pub(crate) started_at: String,
    /// From entering recovery mode to the success or the give-up.
    pub(crate) duration_seconds: f64,
    /// Recovery tries made.
    pub(crate) steps: u32,
    /// Whether the network came back.
    pub(crate) recovered: bool,
}

/// Sums over all endpoints.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) records_saved: u64,
    pub(crate) duplicates_skipped: u64,
    pub(crate) requests: u64,
    pub(crate) bytes_received: u64,
    pub(crate) bytes_written: u64,
    pub(crate) endpoints_complete: u64,
    pub(crate) endpoints_incomplete: u64,
}

/// The whole run.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct Summary {
    pub(crate) schema_version: u32,
    pub(crate) tool_version: String,
    /// `YYYYMMDD_HHMMSS` (UTC start), as in the run folder's name.
    pub(crate) session_id: String,
    /// RFC 3339 UTC.
    pub(crate) started_at: String,
    /// RFC 3339 UTC.
    pub(crate) finished_at: String,
    pub(crate) duration_seconds: f64,
    pub(crate) base_url: String,
    pub(crate) endpoints_planned: Vec<String>,
    /// Endpoints of the default plan the discovery file left out, with the reason.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) endpoints_left_out: BTreeMap<String, String>,
    /// The discovery file the plan was adjusted with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) discovery_file: Option<String>,
    /// `--tickers` as given, when the detail endpoints read their ids from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tickers_from: Option<String>,
    /// `files`, `jsonl` or `stdout`.
    pub(crate) format: String,
    /// The filters the run was started with.
    pub(crate) filters: crate::plan::Filters,
    /// `complete` (every endpoint complete), `incomplete` or `interrupted`.
    pub(crate) status: String,
    /// Why the run stopped before its last endpoint, if it did.
    pub(crate) stopped_early: Option<String>,
    /// Every session that worked on the run, interruptions included.
    pub(crate) sessions: Vec<crate::checkpoint::Session>,
    /// The process exit status of the run.
    pub(crate) exit_code: u8,
    pub(crate) endpoints: Vec<EndpointSummary>,
    pub(crate) totals: Totals,
}

impl Totals {
    /// Adds up the endpoints' counts.
    pub(crate) fn of(endpoints: &[EndpointSummary]) -> Totals {
        let mut t = Totals::default();
        for e in endpoints {
            t.records_saved += e.records_saved;
            t.duplicates_skipped += e.duplicates_skipped;
            t.requests += e.requests;
            t.bytes_received += e.bytes_received;
            t.bytes_written += e.bytes_written;
            match e.status {
                EndpointStatus::Complete | EndpointStatus::Sampled => t.endpoints_complete += 1,
                EndpointStatus::Incomplete | EndpointStatus::Interrupted => {
                    t.endpoints_incomplete += 1
                }
                EndpointStatus::NotStarted => {}
            }
        }
        t
    }
}

/// The summary file's name for a session.
pub(crate) fn summary_file_name(session_id: &str) -> String {
    format!("atomic_session_summary_{session_id}.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_up_and_status_is_snake_case() {
        let a = EndpointSummary {
            status: EndpointStatus::Complete,
            records_saved: 3,
            requests: 2,
            ..Default::default()
        };
        let b = EndpointSummary {
            status: EndpointStatus::Incomplete,
            records_saved: 4,
            duplicates_skipped: 1,
            requests: 5,
            ..Default::default()
        };
        let t = Totals::of(&[a, b.clone()]);
        assert_eq!(
            (t.records_saved, t.duplicates_skipped, t.requests),
            (7, 1, 7)
        );
        assert_eq!((t.endpoints_complete, t.endpoints_incomplete), (1, 1));
        let json = serde_json::to_string(&b).expect("serializes");
        assert!(json.contains(r#""status":"incomplete""#), "{json}");
    }
}
