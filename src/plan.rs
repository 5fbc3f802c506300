//! The endpoint catalogue: what each endpoint is called, where it lives, how its
//! records are found and identified, and how it pages.
//!
//! This module knows nothing about HTTP or files; `run` walks the planned endpoints in
//! order, one at a time.

use crate::error::Error;

/// How one list endpoint is fetched and how its records are recognised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EndpointSpec {
    /// The name used in `--endpoints`, as the output folder and in the summary.
    pub(crate) name: &'static str,
    /// The API path below the base URL, e.g. `/markets`.
    pub(crate) path: &'static str,
    /// The key of the records array in the response object.
    pub(crate) array_key: &'static str,
    /// The field of each record that identifies it.
    pub(crate) id_field: &'static str,
    /// `Some(limit)` for cursor-paginated endpoints (the API's maximum page size);
    /// `None` for endpoints answered in one response.
    pub(crate) page_size: Option<u32>,
}

/// Every endpoint the tool knows, in the order `all` runs them.
pub(crate) const CATALOGUE: &[EndpointSpec] = &[
    EndpointSpec {
        name: "series",
        path: "/series",
        array_key: "series",
        id_field: "ticker",
        page_size: None,
    },
    EndpointSpec {
        name: "events",
        path: "/events",
        array_key: "events",
        id_field: "event_ticker",
        page_size: Some(200),
    },
    EndpointSpec {
        name: "markets",
        path: "/markets",
        array_key: "markets",
        id_field: "ticker",
        page_size: Some(1000),
    },
];

/// Filters that map to the API's query parameters (`--status`, `--series-ticker`,
/// `--event-ticker`, `--since`) and the sampling cap (`--max-records`). Fixed for a
/// run: a resume uses the run's own.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Filters {
    pub(crate) status: Option<String>,
    pub(crate) series_ticker: Option<String>,
    pub(crate) event_ticker: Option<String>,
    /// Unix seconds: only records updated since then (`min_updated_ts`).
    pub(crate) since: Option<i64>,
    /// Stop each endpoint after this many stored records.
    pub(crate) max_records: Option<u64>,
}

/// `--status` values `/markets` accepts (anything else is an HTTP 400 there).
pub(crate) const MARKET_STATUSES: &[&str] = &["unopened", "open", "paused", "closed", "settled"];
/// `--status` values `/events` accepts.
pub(crate) const EVENT_STATUSES: &[&str] = &["open", "closed", "settled"];

impl Filters {
    /// Whether any filter narrows what is fetched.
    pub(crate) fn is_empty(&self) -> bool {
        *self == Filters::default()
    }

    /// Checks the filters against the planned endpoints: every filter must apply to
    /// at least one of them, and no combination the API rejects may be sent.
    pub(crate) fn check(&self, endpoints: &[EndpointSpec]) -> Result<(), Error> {
        let has = |name: &str| endpoints.iter().any(|e| e.name == name);
        let usage = |msg: String| Err(Error::Usage(msg));
        if let Some(status) = &self.status {
            if !MARKET_STATUSES.contains(&status.as_str()) {
                return usage(format!(
                    "--status {status:?}: expected one of {} (the API's filter values, not a market's own status field)",
                    MARKET_STATUSES.join(", ")
                ));
            }
            if !has("markets") && !has("events") {
                return usage(
                    "--status applies to markets and events; add one to --endpoints".into(),
                );
            }
            if has("events") && !EVENT_STATUSES.contains(&status.as_str()) {
                return usage(format!(
                    "--status {status}: /events accepts only {}; use --endpoints markets",
                    EVENT_STATUSES.join(", ")
                ));
            }
        }
        if self.series_ticker.is_some() && !has("markets") && !has("events") {
            return usage(
                "--series-ticker applies to markets and events; add one to --endpoints".into(),
            );
        }
        if self.event_ticker.is_some() && !has("markets") {
            return usage(
                "--event-ticker applies to markets only; add markets to --endpoints".into(),
            );
        }
        if self.since.is_some()
            && has("markets")
            && (self.status.is_some()
                || self.series_ticker.is_some()
                || self.event_ticker.is_some())
        {
            return usage(
                "--since cannot be combined with --status, --series-ticker or --event-ticker on \
                 markets: the API accepts min_updated_ts there only on its own"
                    .into(),
            );
        }
        Ok(())
    }

    /// The query parameters these filters add to a request of `spec`.
    pub(crate) fn query_for(&self, spec: &EndpointSpec) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        let markets = spec.name == "markets";
        let events = spec.name == "events";
        if markets || events {
            if let Some(status) = &self.status {
                query.push(("status", status.clone()));
            }
            if let Some(series) = &self.series_ticker {
                query.push(("series_ticker", series.clone()));
            }
        }
        if markets && let Some(event) = &self.event_ticker {
            query.push(("event_ticker", event.clone()));
        }
        if let Some(since) = self.since {
            query.push(("min_updated_ts", since.to_string()));
        }
        query
    }
}

/// The endpoints a run does when `--endpoints` is not given.
pub(crate) const DEFAULT_ENDPOINTS: &str = "series,events,markets";

/// Resolves a comma-separated `--endpoints` value into catalogue entries, in the order
/// given, each at most once. `all` stands for the whole catalogue.
pub(crate) fn parse_endpoint_list(list: &str) -> Result<Vec<EndpointSpec>, Error> {
    let mut planned: Vec<EndpointSpec> = Vec::new();
    for name in list.split(',').map(str::trim) {
        if name.is_empty() {
            return Err(Error::Usage(format!(
                "--endpoints {list:?}: empty name in the list (use e.g. --endpoints series,markets)"
            )));
        }
        let specs: Vec<&EndpointSpec> = if name == "all" {
            CATALOGUE.iter().collect()
        } else {
            match CATALOGUE.iter().find(|spec| spec.name == name) {
                Some(spec) => vec![spec],
                None => {
                    return Err(Error::Usage(format!(
                        "--endpoints: unknown endpoint {name:?} (known: {}, all)",
                        known_names()
                    )));
                }
            }
        };
        for spec in specs {
            if !planned.iter().any(|p: &EndpointSpec| p.name == spec.name) {
                planned.push(spec.clone());
            }
        }
    }
    Ok(planned)
}

/// The catalogue's names, comma-separated, for help and error texts.
pub(crate) fn known_names() -> String {
    CATALOGUE
        .iter()
        .map(|spec| spec.name)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &str) -> Vec<&'static str> {
        parse_endpoint_list(list)
            .expect("valid list")
            .iter()
            .map(|s| s.name)
            .collect()
    }

    #[test]
    fn keeps_order_and_drops_repeats() {
        assert_eq!(names("markets, series,markets"), ["markets", "series"]);
        assert_eq!(names(DEFAULT_ENDPOINTS), ["series", "events", "markets"]);
        assert_eq!(names("all"), ["series", "events", "markets"]);
    }

    #[test]
    fn rejects_unknown_and_empty_names() {
        let err = parse_endpoint_list("markets,trades").expect_err("unknown");
        assert!(err.to_string().contains("unknown endpoint \"trades\""));
        assert!(parse_endpoint_list("markets,").is_err());
    }

    fn spec(name: &str) -> EndpointSpec {
        CATALOGUE
            .iter()
            .find(|s| s.name == name)
            .expect("known")
            .clone()
    }

    #[test]
    fn filters_map_to_each_endpoints_parameters() {
        let f = Filters {
            status: Some("open".into()),
            series_ticker: Some("KXS1".into()),
            event_ticker: Some("KXS1-E1".into()),
            ..Filters::default()
        };
        let names =
            |q: Vec<(&'static str, String)>| q.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(
            names(f.query_for(&spec("markets"))),
            ["status", "series_ticker", "event_ticker"]
        );
        assert_eq!(
            names(f.query_for(&spec("events"))),
            ["status", "series_ticker"]
        );
        assert!(f.query_for(&spec("series")).is_empty());
        let since = Filters {
            since: Some(1_700_000_000),
            ..Filters::default()
        };
        assert_eq!(
            since.query_for(&spec("series")),
            [("min_updated_ts", "1700000000".to_string())]
        );
    }

    #[test]
    fn combinations_the_api_rejects_are_refused() {
        let all = parse_endpoint_list("all").expect("valid");
        let markets = parse_endpoint_list("markets").expect("valid");
        let series = parse_endpoint_list("series").expect("valid");
        let bad = |f: Filters, endpoints: &[EndpointSpec], want: &str| {
            let err = f.check(endpoints).expect_err("refused").to_string();
            assert!(err.contains(want), "{err}");
        };
        bad(
            Filters {
                status: Some("active".into()),
                ..Filters::default()
            },
            &all,
            "expected one of",
        );
        bad(
            Filters {
                status: Some("paused".into()),
                ..Filters::default()
            },
            &all,
            "/events accepts only",
        );
        bad(
            Filters {
                event_ticker: Some("E".into()),
                ..Filters::default()
            },
            &series,
            "markets only",
        );
        bad(
            Filters {
                since: Some(1),
                status: Some("open".into()),
                ..Filters::default()
            },
            &markets,
            "min_updated_ts",
        );
        let ok = Filters {
            status: Some("paused".into()),
            ..Filters::default()
        };
        assert!(ok.check(&markets).is_ok());
    }

    #[test]
    fn page_sizes_are_the_api_maxima() {
        let by_name = |n: &str| CATALOGUE.iter().find(|s| s.name == n).expect("known");
        assert_eq!(by_name("markets").page_size, Some(1000));
        assert_eq!(by_name("events").page_size, Some(200));
        assert_eq!(by_name("series").page_size, None);
    }
}
