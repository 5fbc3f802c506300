//! `discover`: what the server really serves, written to `discovered_endpoints.json`,
//! and how `run` uses that file.
//!
//! Probing asks each public market-data endpoint of ../shared/kalshi-api.md once (with
//! the normal-mode retries, never the recovery ladder): the list endpoints at their
//! largest page size (falling back to the API's default size on an HTTP 400), then the
//! detail endpoints with a sample id taken from the lists. Each entry records the path,
//! whether it answered with usable JSON, the HTTP status, whether it pages, its array
//! key and id field as seen, the page size to use, the latency and a sample id.
//!
//! `run` reads the file (when present) for a new run: an endpoint of the default plan
//! that the server answered with a 4xx is left out (named in the summary), the batch
//! order-book endpoint is skipped when it is missing, and the page sizes are taken
//! from it. The choices are stored in `run.json`, so a resume keeps them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use log::{info, warn};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::client::FailureClass;
use crate::error::Error;
use crate::fetch::{Fetcher, PageError, Shape, describe_failure};
use crate::plan::{self, EndpointSpec, PerIdRecord};
use crate::retry::GiveUp;
use crate::summary::EndpointSummary;

/// The version of the discovery file layout.
pub(crate) const DISCOVERY_SCHEMA_VERSION: u32 = 1;

/// The entry of the per-market order book (`orderbooks` is the batch endpoint's).
const PER_MARKET_ORDERBOOK: &str = "orderbook_per_market";

/// Documents probed on their own (no ids, not fetched as endpoints by `run`).
const DOCUMENT_PROBES: &[(&str, &str)] = &[
    ("historical_cutoff", "/historical/cutoff"),
    ("exchange_status", "/exchange/status"),
];

/// Whether `name` is an entry the discovery file may hold.
fn known_entry(name: &str) -> bool {
    plan::spec_named(name).is_some()
        || name == PER_MARKET_ORDERBOOK
        || DOCUMENT_PROBES.iter().any(|(n, _)| *n == name)
}

/// The discovery file.
#[derive(Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct Discovery {
    pub(crate) schema_version: u32,
    pub(crate) tool_version: String,
    pub(crate) discovered_at: String,
    pub(crate) base_url: String,
    pub(crate) endpoints: Vec<Entry>,
}

/// What one probe found.
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub(crate) struct Entry {
    /// The endpoint's name in `--endpoints` (or one of `orderbook_per_market`,
    /// `historical_cutoff`, `exchange_status`).
    pub(crate) name: String,
    /// The path probed, below the base URL (ids shown as `{ticker}`).
    pub(crate) path: String,
    /// HTTP 200 with the expected JSON shape.
    pub(crate) reachable: bool,
    /// The HTTP status of the last answer (`null`: no HTTP answer at all).
    pub(crate) status: Option<u16>,
    /// Whether the answer carries a `cursor` (`null` for detail endpoints/documents).
    pub(crate) paginated: Option<bool>,
    /// The records array's key as seen (`null` if none was found).
    pub(crate) array_key: Option<String>,
    /// The id field as seen in the first record (`null` if it was missing).
    pub(crate) id_field: Option<String>,
    /// The page size `run` uses (`null`: one response, or not a list).
    pub(crate) page_size: Option<u32>,
    /// Time from the request to the parsed answer, milliseconds.
    pub(crate) latency_ms: Option<f64>,
    /// An id from the answer (list endpoints) or the id probed (detail endpoints).
    pub(crate) sample_id: Option<String>,
    /// What went wrong or differs from the built-in knowledge.
    pub(crate) note: Option<String>,
}

/// What a discovery file changes in a new run's plan.
#[derive(Debug, Default)]
pub(crate) struct PlanChanges {
    /// Page sizes by endpoint (only those that differ from the built-in ones).
    pub(crate) page_sizes: BTreeMap<String, u32>,
    /// Endpoints whose batch request is not served (per-id requests are used).
    pub(crate) batch_unavailable: Vec<String>,
    /// Default-plan endpoints left out, with the reason.
    pub(crate) left_out: BTreeMap<String, String>,
}

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::BadFile {
        path: path.to_path_buf(),
        reason: format!(
            "{}; run `kalshi-ingest discover` again, or delete the file to use the built-in \
             endpoint table",
            reason.into()
        ),
    }
}

/// Reads and checks a discovery file.
pub(crate) fn load(path: &Path) -> Result<Discovery, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("read discovery file", path, e))?;
    let value: Value =
        serde_json::from_slice(&bytes).map_err(|e| bad(path, format!("not valid JSON ({e})")))?;
    match value.get("schema_version").and_then(Value::as_u64) {
        Some(v) if v == u64::from(DISCOVERY_SCHEMA_VERSION) => {}
        Some(v) => {
            return Err(bad(
                path,
                format!("schema_version {v} is not {DISCOVERY_SCHEMA_VERSION}"),
            ));
        }
        None => return Err(bad(path, "no schema_version number")),
    }
    let discovery: Discovery =
        serde_json::from_value(value).map_err(|e| bad(path, format!("unexpected content: {e}")))?;
    let mut seen: Vec<&str> = Vec::new();
    for entry in &discovery.endpoints {
        let name = entry.name.as_str();
        if seen.contains(&name) {
            return Err(bad(path, format!("endpoint {name:?} is listed twice")));
        }
        seen.push(name);
        let spec = plan::spec_named(name);
        if !known_entry(name) {
            return Err(bad(path, format!("unknown endpoint name {name:?}")));
        }
        if let (Some(size), Some(spec)) = (entry.page_size, spec) {
            match spec.page_size {
                Some(max) if (1..=max).contains(&size) => {}
                Some(max) => {
                    return Err(bad(
                        path,
                        format!(
                            "{name}: page_size {size} is outside 1..{max} (the API refuses \
                             larger pages)"
                        ),
                    ));
                }
                None => {
                    return Err(bad(
                        path,
                        format!("{name}: page_size {size} given, but {name} does not page"),
                    ));
                }
            }
        }
    }
    Ok(discovery)
}

/// Applies a discovery file to a new run's endpoints. `explicit`: the endpoints were
/// named with `--endpoints`, so none is left out (a missing one fails visibly).
pub(crate) fn apply(
    discovery: &Discovery,
    path: &Path,
    endpoints: &mut Vec<EndpointSpec>,
    explicit: bool,
) -> PlanChanges {
    let mut changes = PlanChanges::default();
    let find = |name: &str| discovery.endpoints.iter().find(|e| e.name == name);
    let refused = |e: &Entry| !e.reachable && e.status.is_some_and(|s| (400..500).contains(&s));
    let mut kept = Vec::new();
    for mut spec in endpoints.drain(..) {
        let entry = find(spec.name);
        if spec.detail.and_then(|d| d.batch).is_some() && entry.is_some_and(refused) {
            let per_id = find(PER_MARKET_ORDERBOOK);
            if per_id.is_some_and(refused) && !explicit {
                changes.left_out.insert(
                    spec.name.to_string(),
                    format!("{}: neither order-book endpoint is served", path.display()),
                );
                continue;
            }
            changes.batch_unavailable.push(spec.name.to_string());
            kept.push(spec);
            continue;
        }
        if let Some(entry) = entry {
            if refused(entry) {
                let why = format!(
                    "{}: {} answered HTTP {}",
                    path.display(),
                    entry.path,
                    entry.status.unwrap_or(0)
                );
                if explicit {
                    warn!(
                        "{}: {why}; fetching it anyway (named in --endpoints)",
                        spec.name
                    );
                } else {
                    changes.left_out.insert(spec.name.to_string(), why);
                    continue;
                }
            }
            if let Some(size) = entry.page_size
                && spec.page_size.is_some()
                && spec.page_size != Some(size)
            {
                spec.page_size = Some(size);
                changes.page_sizes.insert(spec.name.to_string(), size);
            }
        }
        kept.push(spec);
    }
    for (name, why) in &changes.left_out {
        warn!("{name}: left out of the run: {why}");
    }
    *endpoints = kept;
    changes
}

/// Applies page sizes stored in a run's manifest to its endpoints.
pub(crate) fn apply_page_sizes(endpoints: &mut [EndpointSpec], sizes: &BTreeMap<String, u32>) {
    for spec in endpoints {
        if let Some(size) = sizes.get(spec.name)
            && spec.page_size.is_some()
        {
            spec.page_size = Some(*size);
        }
    }
}

/// The answer to one probe.
struct Probe {
    entry: Entry,
    body: Option<Value>,
}

/// Probes every endpoint and returns the discovery document. `Err` only when the
/// host cannot be reached at all.
pub(crate) fn discover(fetcher: &mut Fetcher) -> Result<Discovery, Error> {
    let mut entries = Vec::new();
    let mut samples: BTreeMap<&str, String> = BTreeMap::new();
    for spec in plan::CATALOGUE.iter().filter(|s| s.detail.is_none()) {
        let probe = probe_list(fetcher, spec)?;
        if let Some(id) = &probe.entry.sample_id {
            samples.insert(spec.name, id.clone());
        }
        entries.push(probe.entry);
    }
    for (spec, detail) in plan::CATALOGUE
        .iter()
        .filter_map(|s| s.detail.map(|d| (s, d)))
    {
        let Some(sample) = samples.get(detail.ids_from).cloned() else {
            entries.push(Entry {
                note: Some(format!("not probed: {} gave no sample id", detail.ids_from)),
                ..blank(spec.name, spec.path)
            });
            continue;
        };
        if detail.batch.is_some() {
            let query = [("tickers", sample.clone())];
            let url = fetcher.client.url_for(spec.path, &query);
            let mut probe = probe_url(fetcher, spec.name, spec.path, &url, Some(&sample))?;
            check_array(&mut probe, spec.array_key, spec.id_field);
            probe.entry.paginated = Some(false);
            entries.push(probe.entry);
        }
        let per_id = spec.per_id_path(&sample).unwrap_or_default();
        let shown = format!("{}{{id}}{}", detail.per_id_prefix, detail.per_id_suffix);
        let name = if detail.batch.is_some() {
            PER_MARKET_ORDERBOOK
        } else {
            spec.name
        };
        let url = fetcher.client.url_for(&per_id, &[]);
        let mut probe = probe_url(fetcher, name, &shown, &url, Some(&sample))?;
        probe.entry.paginated = Some(false);
        if let Some(body) = &probe.body {
            let record = match detail.per_id_record {
                PerIdRecord::Member(key) => body.get(key),
                PerIdRecord::Body => body
                    .as_object()
                    .and_then(|m| m.values().find(|v| v.is_object())),
                PerIdRecord::BodyWithId => None,
            };
            match (detail.per_id_record, record) {
                (PerIdRecord::Member(key), None) => {
                    probe.entry.reachable = false;
                    probe.entry.note = Some(format!("the answer has no \"{key}\" object"));
                }
                (_, Some(record)) if record.get(spec.id_field).is_some() => {
                    probe.entry.id_field = Some(spec.id_field.to_string());
                }
                _ => {}
            }
        }
        entries.push(probe.entry);
    }
    for (name, path) in DOCUMENT_PROBES {
        let url = fetcher.client.url_for(path, &[]);
        entries.push(probe_url(fetcher, name, path, &url, None)?.entry);
    }
    Ok(Discovery {
        schema_version: DISCOVERY_SCHEMA_VERSION,
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        discovered_at: crate::timestamp::rfc3339(crate::timestamp::now()),
        base_url: fetcher.client.base_url().to_string(),
        endpoints: entries,
    })
}

fn blank(name: &str, path: &str) -> Entry {
    Entry {
        name: name.to_string(),
        path: path.to_string(),
        reachable: false,
        status: None,
        paginated: None,
        array_key: None,
        id_field: None,
        page_size: None,
        latency_ms: None,
        sample_id: None,
        note: None,
    }
}

/// Probes a list endpoint at its largest page size, then at the API's default size
/// (100) if the largest is refused with HTTP 400.
fn probe_list(fetcher: &mut Fetcher, spec: &EndpointSpec) -> Result<Probe, Error> {
    let mut sizes: Vec<Option<u32>> = vec![spec.page_size];
    if spec.page_size.is_some_and(|max| max > 100) {
        sizes.push(Some(100));
    }
    let mut last = None;
    for size in sizes {
        let query: Vec<(&str, String)> =
            size.map(|n| ("limit", n.to_string())).into_iter().collect();
        let url = fetcher.client.url_for(spec.path, &query);
        let mut probe = probe_url(fetcher, spec.name, spec.path, &url, None)?;
        if probe.entry.status == Some(400) {
            last = Some(probe);
            continue;
        }
        check_array(&mut probe, spec.array_key, spec.id_field);
        if probe.entry.reachable {
            probe.entry.page_size = size;
            probe.entry.paginated = Some(
                probe
                    .body
                    .as_ref()
                    .is_some_and(|b| b.get("cursor").is_some()),
            );
            if size != spec.page_size {
                probe.entry.note = Some(format!(
                    "limit={} was refused; {} works",
                    spec.page_size.unwrap_or(0),
                    size.unwrap_or(0)
                ));
            }
        }
        return Ok(probe);
    }
    Ok(last.unwrap_or_else(|| Probe {
        entry: blank(spec.name, spec.path),
        body: None,
    }))
}

/// Checks the array key and id field of a list answer and takes a sample id.
fn check_array(probe: &mut Probe, array_key: &str, id_field: &str) {
    let Some(body) = &probe.body else {
        return;
    };
    let (key, items) = match body.get(array_key) {
        Some(Value::Array(items)) => (Some(array_key.to_string()), Some(items)),
        Some(Value::Null) => (Some(array_key.to_string()), None),
        _ => match body
            .as_object()
            .and_then(|m| m.iter().find(|(_, v)| v.is_array()))
        {
            Some((other, Value::Array(items))) => (Some(other.clone()), Some(items)),
            _ => (None, None),
        },
    };
    if key.as_deref() != Some(array_key) {
        probe.entry.reachable = false;
        probe.entry.note = Some(format!(
            "no \"{array_key}\" array in the answer{}",
            key.as_deref()
                .map_or(String::new(), |k| format!(" (found \"{k}\")"))
        ));
    }
    probe.entry.array_key = key;
    let first = items.and_then(|items| items.first());
    if let Some(first) = first {
        match first.get(id_field) {
            Some(Value::String(id)) => {
                probe.entry.id_field = Some(id_field.to_string());
                probe.entry.sample_id = Some(id.clone());
            }
            _ => {
                probe.entry.note = Some(format!("the first record has no \"{id_field}\" string"));
            }
        }
    } else {
        probe.entry.id_field = Some(id_field.to_string());
        if probe.entry.note.is_none() {
            probe.entry.note = Some("empty: no sample id".to_string());
        }
    }
}

/// One probe request, with the normal-mode retries.
fn probe_url(
    fetcher: &mut Fetcher,
    name: &str,
    shown_path: &str,
    url: &str,
    sample: Option<&str>,
) -> Result<Probe, Error> {
    let mut entry = blank(name, shown_path);
    entry.sample_id = sample.map(str::to_string);
    let shape = Shape::Single {
        record: PerIdRecord::Body,
        id_field: "",
        id: "",
    };
    let mut scratch = EndpointSummary::default();
    let started = Instant::now();
    match fetcher.fetch_page(name, &shape, 1, url, &mut scratch) {
        Ok(page) => {
            entry.latency_ms = Some((started.elapsed().as_secs_f64() * 1e4).round() / 10.0);
            entry.status = Some(200);
            entry.reachable = true;
            let body = page
                .records
                .first()
                .and_then(|r| serde_json::from_slice::<Value>(r.data.as_bytes()).ok());
            info!("{name}: {url}: HTTP 200");
            Ok(Probe { entry, body })
        }
        Err(PageError::Interrupted) => Err(Error::Usage("discover: interrupted".into())),
        Err(PageError::GaveUp {
            failure,
            give_up: GiveUp::Unreachable,
        }) => Err(Error::Usage(format!(
            "cannot reach {}: {}; check --base-url, DNS and the network",
            fetcher.client.host(),
            describe_failure(&failure)
        ))),
        Err(PageError::GaveUp { failure, .. }) => {
            entry.status = failure.status;
            if failure.class != FailureClass::NotFound {
                entry.note = Some(describe_failure(&failure));
            }
            info!("{name}: {url}: {}", describe_failure(&failure));
            Ok(Probe { entry, body: None })
        }
    }
}

/// Writes the discovery file atomically and returns its path.
pub(crate) fn write(discovery: &Discovery, path: &Path) -> Result<PathBuf, Error> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io("create folder", parent, e))?;
    }
    let mut json = serde_json::to_vec_pretty(discovery)
        .map_err(|e| Error::Usage(format!("internal error: discovery JSON: {e}")))?;
    json.push(b'\n');
    crate::store::write_atomic(path, &json)?;
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kalshi-disc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    fn file_with(entries: &str) -> String {
        format!(
            r#"{{"schema_version":1,"tool_version":"x","discovered_at":"t","base_url":"u","endpoints":[{entries}]}}"#
        )
    }

    fn entry(name: &str, reachable: bool, status: u16, page_size: &str) -> String {
        format!(
            r#"{{"name":"{name}","path":"/p","reachable":{reachable},"status":{status},"paginated":null,"array_key":null,"id_field":null,"page_size":{page_size},"latency_ms":null,"sample_id":null,"note":null}}"#
        )
    }

    #[test]
    fn broken_files_are_refused_with_the_reason() {
        let cases = [
            ("{", "not valid JSON"),
            (r#"{"endpoints":[]}"#, "no schema_version"),
            (
                &file_with(&entry("trade", true, 200, "null")),
                "unknown endpoint name",
            ),
            (
                &file_with(&entry("markets", true, 200, "5000")),
                "outside 1..1000",
            ),
            (
                &file_with(&entry("series", true, 200, "10")),
                "does not page",
            ),
            (
                &file_with(&format!(
                    "{},{}",
                    entry("markets", true, 200, "null"),
                    entry("markets", true, 200, "null")
                )),
                "listed twice",
            ),
            (
                &file_with(r#"{"name":"markets","reachable":"yes"}"#),
                "unexpected content",
            ),
        ];
        for (i, (text, want)) in cases.iter().enumerate() {
            let path = temp_file(&format!("d{i}.json"), text);
            let err = load(&path).expect_err("refused").to_string();
            assert!(err.contains(want), "{text}: {err}");
            assert!(err.contains("kalshi-ingest discover"), "{err}");
            assert!(err.contains(&path.display().to_string()), "{err}");
        }
    }

    #[test]
    fn refused_endpoints_leave_the_default_plan_and_sizes_apply() {
        let text = file_with(
            &[
                entry("historical_markets", false, 404, "null"),
                entry("markets", true, 200, "500"),
                entry("orderbooks", false, 404, "null"),
                entry("orderbook_per_market", true, 200, "null"),
                entry("events", false, 503, "null"),
            ]
            .join(","),
        );
        let path = temp_file("apply.json", &text);
        let discovery = load(&path).expect("valid");
        let mut plan =
            plan::parse_endpoint_list("series,events,markets,historical_markets,orderbooks")
                .expect("plan");
        let changes = apply(&discovery, &path, &mut plan, false);
        let names: Vec<_> = plan.iter().map(|s| s.name).collect();
        assert_eq!(names, ["series", "events", "markets", "orderbooks"]);
        assert!(changes.left_out.contains_key("historical_markets"));
        assert_eq!(changes.batch_unavailable, ["orderbooks"]);
        assert_eq!(changes.page_sizes.get("markets"), Some(&500));
        assert_eq!(plan[2].page_size, Some(500));
        let mut explicit = plan::parse_endpoint_list("historical_markets").expect("plan");
        let kept = apply(&discovery, &path, &mut explicit, true);
        assert_eq!(explicit.len(), 1, "named endpoints are kept");
        assert!(kept.left_out.is_empty());
    }
}
