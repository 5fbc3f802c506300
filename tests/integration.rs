//! Integration tests: the real `kalshi-ingest` binary against the project's own fake
//! Kalshi API (`fake-kalshi`) on 127.0.0.1. No test ever reaches a real host.

mod fake;
mod util;

mod cli;
mod details;
mod hostile;
mod layout;
mod pipeline;
mod resilience;
mod resume;
