//! Where an endpoint's next page comes from.
//!
//! A *page* is what one step of the run loop stores and checkpoints:
//! * list endpoints: one response, followed by its cursor ([`ListPager`]);
//! * detail endpoints: one *chunk* of ids from the id log ([`DetailPager`]): 100
//!   market tickers for the batch order-book endpoint (one request, or up to 100
//!   per-market requests when the batch endpoint is unavailable), one id for the
//!   per-record endpoints. Its records come in the order the ids were asked, so a
//!   resume that fetches the chunk again skips exactly the records already stored.
//!
//! A detail id the server answers with 404 is recorded in the summary's `not_found`
//! and the endpoint goes on; any other failure stops the endpoint like a list page's.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use log::{info, warn};

use crate::client::{Failure, FailureClass};
use crate::error::Error;
use crate::fetch::{Fetcher, PageData, PageError, Shape};
use crate::ids::IdReader;
use crate::plan::{DetailSpec, EndpointSpec};
use crate::record::Record;
use crate::retry::GiveUp;
use crate::summary::EndpointSummary;

/// The outcome of asking for a page.
pub(crate) enum Next {
    /// A page to store; `url` names it in messages.
    Page { page: PageData, url: String },
    /// No pages are left.
    End,
    /// Ctrl-C or SIGTERM.
    Interrupted,
    /// A request failed for good.
    GaveUp {
        url: String,
        failure: Failure,
        give_up: GiveUp,
    },
}

/// The outcome of moving past a stored page.
pub(crate) enum Advance {
    Next,
    End,
    /// The server repeated a cursor: stop instead of looping.
    CursorLoop {
        repeated: String,
    },
}

/// The page source of one endpoint.
pub(crate) enum Pager {
    List(ListPager),
    Detail(Box<DetailPager>),
}

impl Pager {
    pub(crate) fn fetch(
        &mut self,
        fetcher: &mut Fetcher,
        spec: &EndpointSpec,
        query: &[(&'static str, String)],
        page_number: u64,
        summary: &mut EndpointSummary,
    ) -> Result<Next, Error> {
        match self {
            Pager::List(list) => Ok(list.fetch(fetcher, spec, query, page_number, summary)),
            Pager::Detail(detail) => detail.fetch(fetcher, spec, page_number, summary),
        }
    }

    /// The cursor that fetches the current page again (`None` for detail endpoints,
    /// whose pages are found by number).
    pub(crate) fn cursor(&self) -> Option<String> {
        match self {
            Pager::List(list) => list.cursor.clone(),
            Pager::Detail(_) => None,
        }
    }

    /// Moves past the page just stored.
    pub(crate) fn advance(&mut self, spec: &EndpointSpec, next_cursor: Option<String>) -> Advance {
        match self {
            Pager::List(list) => {
                if spec.page_size.is_none() {
                    return Advance::End;
                }
                match next_cursor {
                    None => Advance::End,
                    Some(next) if !list.seen.insert(next.clone()) => {
                        Advance::CursorLoop { repeated: next }
                    }
                    Some(next) => {
                        list.cursor = Some(next);
                        Advance::Next
                    }
                }
            }
            Pager::Detail(detail) if detail.exhausted => Advance::End,
            Pager::Detail(_) => Advance::Next,
        }
    }
}

/// Follows cursors from a starting cursor (`None`: the first page).
pub(crate) struct ListPager {
    cursor: Option<String>,
    seen: HashSet<String>,
}

impl ListPager {
    pub(crate) fn new(cursor: Option<String>) -> ListPager {
        ListPager {
            seen: cursor.iter().cloned().collect(),
            cursor,
        }
    }

    fn fetch(
        &mut self,
        fetcher: &mut Fetcher,
        spec: &EndpointSpec,
        filter_query: &[(&'static str, String)],
        page_number: u64,
        summary: &mut EndpointSummary,
    ) -> Next {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(limit) = spec.page_size {
            query.push(("limit", limit.to_string()));
        }
        query.extend(filter_query.iter().cloned());
        let client = fetcher.client.clone();
        let url_with = |cursor: Option<&str>| {
            let mut query = query.clone();
            if let Some(c) = cursor {
                query.push(("cursor", c.to_string()));
            }
            client.url_for(spec.path, &query)
        };
        let url = url_with(self.cursor.as_deref());
        let next_url = |cursor: &str| url_with(Some(cursor));
        let shape = Shape::List {
            array_key: spec.array_key,
            id_field: spec.id_field,
            // Only endpoints that page by cursor have a next page to read ahead.
            next_url: spec.page_size.map(|_| &next_url as &dyn Fn(&str) -> String),
        };
        match fetcher.fetch_page(spec.name, &shape, page_number, &url, summary) {
            Ok(page) => Next::Page { page, url },
            Err(PageError::Interrupted) => Next::Interrupted,
            Err(PageError::GaveUp { failure, give_up }) => Next::GaveUp {
                url,
                failure,
                give_up,
            },
        }
    }
}

/// Walks an id log chunk by chunk.
pub(crate) struct DetailPager {
    detail: DetailSpec,
    ids: IdReader,
    chunk_size: usize,
    /// The batch endpoint is used (`false` once it proved unavailable, or for
    /// endpoints without one).
    batch: bool,
    /// The last chunk read was short: no pages follow it.
    exhausted: bool,
}

impl DetailPager {
    /// Opens `ids_path` positioned at page `page_number` (1-based). `batch_usable`
    /// is `false` when discovery found the batch endpoint missing or an earlier
    /// session fell back.
    pub(crate) fn open(
        detail: DetailSpec,
        ids_path: &Path,
        page_number: u64,
        batch_usable: bool,
    ) -> Result<DetailPager, Error> {
        let ids = IdReader::open(ids_path)?.ok_or_else(|| Error::BadFile {
            path: ids_path.to_path_buf(),
            reason: format!(
                "is missing: the ids of {} were never stored (run {} first, or pass --tickers)",
                detail.ids_from, detail.ids_from
            ),
        })?;
        let chunk_size = detail.batch.map_or(1, |n| n as usize);
        let mut pager = DetailPager {
            detail,
            ids,
            chunk_size,
            batch: detail.batch.is_some() && batch_usable,
            exhausted: false,
        };
        pager
            .ids
            .skip_chunks(page_number.saturating_sub(1), chunk_size)?;
        Ok(pager)
    }

    /// Copies the id counters into the summary.
    pub(crate) fn report(&self, summary: &mut EndpointSummary) {
        summary.ids_requested = Some(self.ids.handed_out);
        summary.ids_skipped = self.ids.unusable + self.ids.repeated;
        summary.requests_minimum = if self.batch {
            self.ids.handed_out.div_ceil(self.chunk_size as u64)
        } else {
            self.ids.handed_out
        };
    }

    fn fetch(
        &mut self,
        fetcher: &mut Fetcher,
        spec: &EndpointSpec,
        page_number: u64,
        summary: &mut EndpointSummary,
    ) -> Result<Next, Error> {
        let ids = self.ids.next_chunk(self.chunk_size)?;
        self.exhausted = ids.len() < self.chunk_size;
        if ids.is_empty() {
            return Ok(Next::End);
        }
        let mut records: Vec<Record> = Vec::with_capacity(ids.len());
        let mut bytes = 0u64;
        let single_ids: Vec<&String>;
        let mut url = String::new();
        if self.batch {
            let query: Vec<(&str, String)> = ids.iter().map(|id| ("tickers", id.clone())).collect();
            url = fetcher.client.url_for(spec.path, &query);
            match fetcher.fetch_page(spec.name, &Shape::list_of(spec), page_number, &url, summary) {
                Ok(page) => {
                    bytes += page.bytes;
                    records = page.records;
                    let missing = unanswered(&ids, &records);
                    if !missing.is_empty() {
                        info!(
                            "{}: page {page_number}: the batch answer leaves out {} of {} \
                             tickers; asking for each on its own",
                            spec.name,
                            missing.len(),
                            ids.len()
                        );
                    }
                    single_ids = missing;
                }
                Err(PageError::Interrupted) => return Ok(Next::Interrupted),
                Err(PageError::GaveUp {
                    failure,
                    give_up: GiveUp::Permanent,
                }) => {
                    let why = format!(
                        "the batch endpoint {} answered {}",
                        spec.path,
                        crate::fetch::describe_failure(&failure)
                    );
                    warn!(
                        "{}: {why}; using the per-market endpoint {}{{ticker}}{} instead",
                        spec.name, self.detail.per_id_prefix, self.detail.per_id_suffix
                    );
                    summary.fallback = Some(why);
                    self.batch = false;
                    single_ids = ids.iter().collect();
                }
                Err(PageError::GaveUp { failure, give_up }) => {
                    return Ok(Next::GaveUp {
                        url,
                        failure,
                        give_up,
                    });
                }
            }
        } else {
            single_ids = ids.iter().collect();
        }
        // Per-id requests, in the order asked; their records follow the batch's.
        let mut singles: Vec<Record> = Vec::new();
        for id in single_ids {
            let Some(path) = spec.per_id_path(id) else {
                continue;
            };
            url = fetcher.client.url_for(&path, &[]);
            let shape = Shape::Single {
                record: self.detail.per_id_record,
                id_field: spec.id_field,
                id,
            };
            match fetcher.fetch_page(spec.name, &shape, page_number, &url, summary) {
                Ok(page) => {
                    bytes += page.bytes;
                    singles.extend(page.records);
                }
                Err(PageError::Interrupted) => return Ok(Next::Interrupted),
                Err(PageError::GaveUp { failure, .. })
                    if failure.class == FailureClass::NotFound =>
                {
                    warn!("{}: {id:?} not found (HTTP 404 from {url})", spec.name);
                    summary.not_found.insert(id.clone());
                }
                Err(PageError::GaveUp { failure, give_up }) => {
                    return Ok(Next::GaveUp {
                        url,
                        failure,
                        give_up,
                    });
                }
            }
        }
        records.extend(singles);
        Ok(Next::Page {
            page: PageData {
                records: in_request_order(&ids, records),
                cursor: None,
                bytes,
            },
            url,
        })
    }
}

/// Orders `records` by their id's position in `ids`; records for ids not asked for
/// go last, in the order received.
fn in_request_order(ids: &[String], records: Vec<Record>) -> Vec<Record> {
    let position: HashMap<&str, usize> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let mut keyed: Vec<(usize, usize, Record)> = records
        .into_iter()
        .enumerate()
        .map(|(arrival, record)| {
            let at = record
                .id
                .as_deref()
                .and_then(|id| position.get(id).copied())
                .unwrap_or(usize::MAX);
            (at, arrival, record)
        })
        .collect();
    keyed.sort_by_key(|(at, arrival, _)| (*at, *arrival));
    keyed.into_iter().map(|(_, _, r)| r).collect()
}

/// The ids of `ids` no record in `records` answers, in order.
fn unanswered<'a>(ids: &'a [String], records: &[Record]) -> Vec<&'a String> {
    let answered: HashSet<&str> = records.iter().filter_map(|r| r.id.as_deref()).collect();
    ids.iter()
        .filter(|id| !answered.contains(id.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RecordHash;

    fn record(id: &str) -> Record {
        Record {
            id: Some(id.to_string()),
            hash: RecordHash([0; 32]),
            data: crate::record::RecordData::Own(id.as_bytes().to_vec()),
            ingestion_time: "".into(),
        }
    }

    #[test]
    fn batch_answers_are_put_in_request_order_and_gaps_found() {
        let ids: Vec<String> = ["A", "B", "C", "D"].iter().map(|s| s.to_string()).collect();
        let answer = vec![record("C"), record("X"), record("A"), record("D")];
        let missing = unanswered(&ids, &answer);
        let ordered = in_request_order(&ids, answer);
        let order: Vec<_> = ordered
            .iter()
            .map(|r| r.id.clone().unwrap_or_default())
            .collect();
        assert_eq!(order, ["A", "C", "D", "X"]);
        assert_eq!(missing, [&ids[1]]);
    }
}
