//! UTC timestamps in the two textual forms the tool writes.
//!
//! * the compact "session id" form `YYYYMMDD_HHMMSS`, used in folder and file names and
//!   in the envelope's `ingestion_time` (fixed by the output contract), and
//! * RFC 3339 with milliseconds (`2026-11-25T15:02:37.123Z`) for the summary and log lines.

use time::OffsetDateTime;
use time::format_description::FormatItem;
use time::macros::format_description;

const COMPACT: &[FormatItem<'static>] =
    format_description!("[year][month][day]_[hour][minute][second]");
const RFC3339_MILLIS: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// The current UTC time.
pub(crate) fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// `YYYYMMDD_HHMMSS` in UTC.
pub(crate) fn compact(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(COMPACT)
        .expect("the compact format has only numeric components that always format")
}

/// RFC 3339 in UTC with milliseconds and a `Z` suffix.
pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(RFC3339_MILLIS)
        .expect("the RFC 3339 format has only numeric components that always format")
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn formats_both_forms_in_utc() {
        let t = datetime!(2026-01-02 03:04:05.678 +01:00);
        assert_eq!(compact(t), "20260102_020405");
        assert_eq!(rfc3339(t), "2026-01-02T02:04:05.678Z");
    }
}
