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
            if !planned.iter().any(|p| p.name == spec.name) {
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

    #[test]
    fn page_sizes_are_the_api_maxima() {
        let by_name = |n: &str| CATALOGUE.iter().find(|s| s.name == n).expect("known");
        assert_eq!(by_name("markets").page_size, Some(1000));
        assert_eq!(by_name("events").page_size, Some(200));
        assert_eq!(by_name("series").page_size, None);
    }
}
