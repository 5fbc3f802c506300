//! The endpoint catalogue: what each endpoint is called, where it lives, how its
//! records are found and identified, and how it pages.
//!
//! This module knows nothing about HTTP or files; `run` walks the planned endpoints in
//! order, one at a time.

use crate::error::Error;

/// How one endpoint is fetched and how its records are recognised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EndpointSpec {
    /// The name used in `--endpoints`, as the output folder and in the summary.
    pub(crate) name: &'static str,
    /// The API path below the base URL, e.g. `/markets` (for a detail endpoint, its
    /// batch path or its per-record path with `{id}`).
    pub(crate) path: &'static str,
    /// The key of the records array in the response object.
    pub(crate) array_key: &'static str,
    /// The field of each record that identifies it.
    pub(crate) id_field: &'static str,
    /// `Some(limit)` for cursor-paginated endpoints (the API's maximum page size);
    /// `None` for endpoints answered in one response.
    pub(crate) page_size: Option<u32>,
    /// A small document fetched once before the first page and recorded in the
    /// summary (the historical cutoff for the archive endpoints).
    pub(crate) context_path: Option<&'static str>,
    /// For endpoints fetched one id (or one batch of ids) at a time.
    pub(crate) detail: Option<DetailSpec>,
}

/// How a detail endpoint turns ids into requests and responses into records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DetailSpec {
    /// The list endpoint of the same run whose record ids feed this one.
    pub(crate) ids_from: &'static str,
    /// What the ids are, for messages ("market tickers").
    pub(crate) id_kind: &'static str,
    /// The per-id request: `prefix` + the percent-encoded id + `suffix`.
    pub(crate) per_id_prefix: &'static str,
    pub(crate) per_id_suffix: &'static str,
    /// How a per-id response becomes the record.
    pub(crate) per_id_record: PerIdRecord,
    /// `Some(n)`: `path` is a batch endpoint taking up to `n` ids per request (as
    /// repeated `tickers=` parameters) and answering an `array_key` array.
    pub(crate) batch: Option<u32>,
}

/// How the body of a per-id response becomes the stored record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PerIdRecord {
    /// The object under this key (`{"market": {...}}` stores the market).
    Member(&'static str),
    /// The whole response object (`/events/{id}` answers the event and its markets).
    Body,
    /// The response object with the id added under `id_field` as its first member, so
    /// a per-market order book is stored exactly like an element of the batch answer.
    BodyWithId,
}

impl EndpointSpec {
    const fn list(
        name: &'static str,
        path: &'static str,
        array_key: &'static str,
        id_field: &'static str,
        page_size: Option<u32>,
    ) -> EndpointSpec {
        EndpointSpec {
            name,
            path,
            array_key,
            id_field,
            page_size,
            context_path: None,
            detail: None,
        }
    }

    /// The per-id request path for `id`, which becomes one percent-encoded segment.
    pub(crate) fn per_id_path(&self, id: &str) -> Option<String> {
        self.detail.map(|d| {
            format!(
                "{}{}{}",
                d.per_id_prefix,
                crate::client::encode_path_segment(id),
                d.per_id_suffix
            )
        })
    }
}

/// The document holding the historical cutoffs, recorded with the archive endpoints.
const HISTORICAL_CUTOFF: &str = "/historical/cutoff";

/// Every endpoint the tool knows, in the order `all` runs them: list endpoints first,
/// then the detail endpoints they feed.
pub(crate) const CATALOGUE: &[EndpointSpec] = &[
    EndpointSpec::list("series", "/series", "series", "ticker", None),
    EndpointSpec::list("events", "/events", "events", "event_ticker", Some(200)),
    EndpointSpec::list("markets", "/markets", "markets", "ticker", Some(1000)),
    EndpointSpec {
        context_path: Some(HISTORICAL_CUTOFF),
        ..EndpointSpec::list(
            "historical_markets",
            "/historical/markets",
            "markets",
            "ticker",
            Some(1000),
        )
    },
    EndpointSpec::list(
        "trades",
        "/markets/trades",
        "trades",
        "trade_id",
        Some(1000),
    ),
    EndpointSpec {
        context_path: Some(HISTORICAL_CUTOFF),
        ..EndpointSpec::list(
            "historical_trades",
            "/historical/trades",
            "trades",
            "trade_id",
            Some(1000),
        )
    },
    EndpointSpec {
        detail: Some(DetailSpec {
            ids_from: "markets",
            id_kind: "market tickers",
            per_id_prefix: "/markets/",
            per_id_suffix: "/orderbook",
            per_id_record: PerIdRecord::BodyWithId,
            batch: Some(100),
        }),
        ..EndpointSpec::list(
            "orderbooks",
            "/markets/orderbooks",
            "orderbooks",
            "ticker",
            None,
        )
    },
    EndpointSpec {
        detail: Some(DetailSpec {
            ids_from: "markets",
            id_kind: "market tickers",
            per_id_prefix: "/markets/",
            per_id_suffix: "",
            per_id_record: PerIdRecord::Member("market"),
            batch: None,
        }),
        ..EndpointSpec::list(
            "market_details",
            "/markets/{ticker}",
            "market",
            "ticker",
            None,
        )
    },
    EndpointSpec {
        detail: Some(DetailSpec {
            ids_from: "events",
            id_kind: "event tickers",
            per_id_prefix: "/events/",
            per_id_suffix: "",
            per_id_record: PerIdRecord::Body,
            batch: None,
        }),
        ..EndpointSpec::list(
            "event_details",
            "/events/{event_ticker}",
            "event",
            "event_ticker",
            None,
        )
    },
    EndpointSpec {
        detail: Some(DetailSpec {
            ids_from: "series",
            id_kind: "series tickers",
            per_id_prefix: "/series/",
            per_id_suffix: "",
            per_id_record: PerIdRecord::Member("series"),
            batch: None,
        }),
        ..EndpointSpec::list(
            "series_details",
            "/series/{ticker}",
            "series",
            "ticker",
            None,
        )
    },
];

/// Looks an endpoint up by name.
pub(crate) fn spec_named(name: &str) -> Option<&'static EndpointSpec> {
    CATALOGUE.iter().find(|spec| spec.name == name)
}

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
            match spec.name {
                "series" | "events" | "markets" => {
                    query.push(("min_updated_ts", since.to_string()));
                }
                "trades" | "historical_trades" => query.push(("min_ts", since.to_string())),
                _ => {}
            }
        }
        query
    }
}

/// The endpoints a run does when `--endpoints` is not given: every list of markets,
/// events and series, including the archive of markets settled before the historical
/// cutoff (without it, those markets are silently missing; see README).
pub(crate) const DEFAULT_ENDPOINTS: &str = "series,events,markets,historical_markets";

/// Resolves a comma-separated `--endpoints` value into catalogue entries, each at most
/// once, list endpoints in the order given and then the detail endpoints (which read
/// the ids the list endpoints stored). `all` stands for the whole catalogue.
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
    planned.sort_by_key(|spec| spec.detail.is_some());
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
        assert_eq!(
            names(DEFAULT_ENDPOINTS),
            ["series", "events", "markets", "historical_markets"]
        );
        assert_eq!(names("all").len(), CATALOGUE.len());
        assert_eq!(
            names("orderbooks,markets,series_details,series"),
            ["markets", "series", "orderbooks", "series_details"]
        );
    }

    #[test]
    fn rejects_unknown_and_empty_names() {
        let err = parse_endpoint_list("markets,trade").expect_err("unknown");
        assert!(err.to_string().contains("unknown endpoint \"trade\""));
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
