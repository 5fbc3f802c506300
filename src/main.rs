//! kalshi-ingest: downloads Kalshi's public market data into plain files.
//!
//! `main` only parses the command line, sets up logging, calls the command and maps
//! its outcome to an exit status (see `cli::HELP`, EXIT STATUS). Logging levels:
//! error = gave up on an endpoint or the run; warn = a retry or an odd record;
//! info = run and endpoint milestones; debug = each request; trace = detail.

mod body;
mod canonical;
mod checkpoint;
mod cli;
mod client;
mod discover;
mod error;
mod fetch;
mod hasher;
mod ids;
mod logger;
mod pace;
mod page;
mod pager;
mod plan;
mod progress;
mod record;
mod retry;
mod run;
mod signal;
mod store;
mod summary;
#[cfg(test)]
mod testgen;
mod timestamp;
mod verify;

use std::io::Write;
use std::process::ExitCode;

use cli::Command;

fn main() -> ExitCode {
    let raw = std::env::args_os().skip(1).collect();
    let env_base_url = std::env::var("KALSHI_BASE_URL").ok();
    let command = match cli::parse_args(raw).and_then(|args| Command::from_args(args, env_base_url))
    {
        Ok(command) => command,
        Err(e) => {
            eprintln!("kalshi-ingest: error: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    match command {
        Command::Help => print_stdout(cli::HELP),
        Command::Version { verbose: false } => {
            print_stdout(&format!("kalshi-ingest {}\n", env!("CARGO_PKG_VERSION")))
        }
        Command::Version { verbose: true } => print_stdout(&format!(
            "kalshi-ingest {}\ncommit: {}\ntarget: {}\ntls: rustls with ring, Mozilla roots \
             compiled in (webpki-roots); certificate verification always on\n",
            env!("CARGO_PKG_VERSION"),
            env!("KALSHI_INGEST_COMMIT"),
            env!("KALSHI_INGEST_TARGET"),
        )),
        Command::Verify(dir) => verify_command(&dir),
        Command::Discover(config) => {
            logger::init(config.verbosity);
            signal::install();
            match run::discover(&config) {
                Ok(path) => {
                    log::logger().flush();
                    print_stdout(&format!("{}\n", path.display()))
                }
                Err(e) => {
                    log::error!("{e}");
                    log::logger().flush();
                    ExitCode::from(e.exit_code())
                }
            }
        }
        Command::Run(config) => {
            logger::init(config.verbosity);
            signal::install();
            progress::start(progress::mode_for(
                config.verbosity,
                config.progress_interval,
            ));
            let result = run::run(&config);
            progress::finish();
            match result {
                Ok(outcome) => {
                    log::logger().flush();
                    // With --stdout, stdout carries the records and nothing else.
                    if let Some(dir) = &outcome.run_dir {
                        print_stdout(&format!("{}\n", dir.display()));
                    }
                    ExitCode::from(outcome.exit_code)
                }
                Err(e) => {
                    log::error!("{e}");
                    log::logger().flush();
                    ExitCode::from(e.exit_code())
                }
            }
        }
    }
}

/// `verify DIR`: problems on stdout as `path: reason`, a count or all-clear after.
fn verify_command(dir: &std::path::Path) -> ExitCode {
    match verify::verify(dir) {
        Err(e) => {
            eprintln!("kalshi-ingest: error: {e}");
            ExitCode::from(e.exit_code())
        }
        Ok(report) if report.problems.is_empty() => print_stdout(&format!(
            "ok: {} records in {} batches across {} endpoints; every record_hash recomputes\n",
            report.records, report.batches, report.endpoints
        )),
        Ok(report) => {
            let mut text = String::new();
            for (path, reason) in &report.problems {
                text.push_str(&format!("{}: {reason}\n", path.display()));
            }
            print_stdout(&text);
            eprintln!(
                "kalshi-ingest: verify found {} problem(s) in {}",
                report.problems.len(),
                dir.display()
            );
            ExitCode::from(error::EXIT_INCOMPLETE)
        }
    }
}

/// Writes to stdout; a closed pipe is not an error worth reporting.
fn print_stdout(text: &str) -> ExitCode {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    ExitCode::SUCCESS
}
