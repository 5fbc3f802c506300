//! Progress on stderr: one live status line while stderr is a terminal, a periodic
//! `progress:` line otherwise, nothing with `-q` (or at debug verbosity, where the
//! request log says more). Progress never touches stdout and never mixes with log
//! lines: the logger clears the live line before it writes.
//!
//! This module only reports; it never influences control flow.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Mode {
    Off,
    /// A live line, redrawn at most every [`REDRAW`].
    Terminal,
    /// One line every this long.
    Periodic(Duration),
}

const REDRAW: Duration = Duration::from_millis(200);

struct State {
    mode: Mode,
    run_started: Instant,
    endpoint: String,
    endpoint_started: Instant,
    pages: u64,
    records: u64,
    duplicates: u64,
    /// Retry or recovery state, empty when requests are going well.
    status: String,
    last_shown: Option<Instant>,
    line_visible: bool,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fn with_state(f: impl FnOnce(&mut State)) {
    let mut guard = STATE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(state) = guard.as_mut() {
        f(state);
    }
}

/// Chooses the mode from the verbosity and whether stderr is a terminal.
pub(crate) fn mode_for(verbosity: i8, interval: Duration) -> Mode {
    if !(0..2).contains(&verbosity) {
        Mode::Off
    } else if std::io::stderr().is_terminal() {
        Mode::Terminal
    } else if interval.is_zero() {
        Mode::Off
    } else {
        Mode::Periodic(interval)
    }
}

/// Starts reporting.
pub(crate) fn start(mode: Mode) {
    if mode == Mode::Off {
        return;
    }
    let now = Instant::now();
    *STATE.lock().unwrap_or_else(|p| p.into_inner()) = Some(State {
        mode,
        run_started: now,
        endpoint: String::new(),
        endpoint_started: now,
        pages: 0,
        records: 0,
        duplicates: 0,
        status: String::new(),
        last_shown: None,
        line_visible: false,
    });
}

/// A new endpoint begins, with the counts it resumes from.
pub(crate) fn endpoint(name: &str, records: u64) {
    with_state(|s| {
        s.endpoint = name.to_string();
        s.endpoint_started = Instant::now();
        s.pages = 0;
        s.records = records;
        s.duplicates = 0;
        s.status.clear();
    });
}

/// A page was stored: the endpoint's running totals.
pub(crate) fn page(pages: u64, records: u64, duplicates: u64) {
    with_state(|s| {
        s.pages = pages;
        s.records = records;
        s.duplicates = duplicates;
        s.status.clear();
        show(s, false);
    });
}

/// The retry state changed (`""` when a request succeeded again).
pub(crate) fn status(text: &str) {
    with_state(|s| {
        s.status = text.to_string();
        show(s, true);
    });
}

/// Removes the live line (before a log line is written, and at the end).
pub(crate) fn clear() {
    with_state(|s| {
        if s.line_visible {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(b"\r\x1b[2K");
            let _ = err.flush();
            s.line_visible = false;
        }
    });
}

/// Stops reporting.
pub(crate) fn finish() {
    clear();
    *STATE.lock().unwrap_or_else(|p| p.into_inner()) = None;
}

fn show(s: &mut State, force: bool) {
    let now = Instant::now();
    let due = match (s.mode, s.last_shown) {
        (Mode::Off, _) => false,
        (_, None) => true,
        (Mode::Terminal, Some(last)) => force || now - last >= REDRAW,
        (Mode::Periodic(every), Some(last)) => now - last >= every,
    };
    if !due {
        return;
    }
    s.last_shown = Some(now);
    let line = render(s, now);
    let mut err = std::io::stderr().lock();
    if s.mode == Mode::Terminal {
        let _ = write!(err, "\r\x1b[2K{line}");
        s.line_visible = true;
    } else {
        let _ = writeln!(err, "kalshi-ingest: progress: {line}");
    }
    let _ = err.flush();
}

fn render(s: &State, now: Instant) -> String {
    let in_endpoint = (now - s.endpoint_started).as_secs_f64();
    let rate = if in_endpoint > 0.0 {
        s.records as f64 / in_endpoint
    } else {
        0.0
    };
    let elapsed = (now - s.run_started).as_secs();
    let mut line = format!(
        "{}: {} pages, {} records, {} duplicates, {:.0} records/s, {:02}:{:02}:{:02} elapsed",
        s.endpoint,
        s.pages,
        s.records,
        s.duplicates,
        rate,
        elapsed / 3600,
        elapsed / 60 % 60,
        elapsed % 60
    );
    if !s.status.is_empty() {
        line.push_str(", ");
        line.push_str(&s.status);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_endpoint_counts_rate_and_retry_state() {
        let now = Instant::now();
        let s = State {
            mode: Mode::Terminal,
            run_started: now - Duration::from_secs(3725),
            endpoint: "markets".into(),
            endpoint_started: now - Duration::from_secs(2),
            pages: 3,
            records: 3000,
            duplicates: 5,
            status: "RECOVERY step 2/10".into(),
            last_shown: None,
            line_visible: false,
        };
        let line = render(&s, now);
        assert!(
            line.starts_with("markets: 3 pages, 3000 records, 5 duplicates, "),
            "{line}"
        );
        assert!(
            line.contains("1500 records/s") || line.contains("1499 records/s"),
            "{line}"
        );
        assert!(
            line.contains("01:02:05 elapsed, RECOVERY step 2/10"),
            "{line}"
        );
    }

    #[test]
    fn quiet_and_debug_turn_it_off() {
        assert_eq!(mode_for(-1, Duration::from_secs(10)), Mode::Off);
        assert_eq!(mode_for(2, Duration::from_secs(10)), Mode::Off);
    }
}
