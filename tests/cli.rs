//! The command line as a user meets it: help, version, bad input, exit codes.

use crate::util::{Dir, ingest, ingest_with_env, show};

#[test]
fn help_and_version_go_to_stdout_with_exit_0() {
    let help = ingest(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    let text = String::from_utf8_lossy(&help.stdout);
    for needle in [
        "USAGE",
        "--base-url",
        "--endpoints",
        "EXIT STATUS",
        "KALSHI_BASE_URL",
    ] {
        assert!(text.contains(needle), "help lacks {needle}");
    }
    let version = ingest(&["--version"]);
    assert_eq!(version.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("kalshi-ingest 0."));
}

#[test]
fn bad_flags_get_one_line_and_exit_2() {
    let dir = Dir::new("bad-flags");
    let file = dir.path.join("a-file");
    std::fs::write(&file, "x").expect("write");
    let file = file.to_str().expect("utf-8").to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--nope"], "unknown flag --nope"),
        (vec!["--endpoints", "markets,bogus"], "unknown endpoint"),
        (vec!["--base-url", "ftp://x"], "--base-url"),
        (vec!["--timeout", "-5s"], "--timeout"),
        (
            vec!["--base-url", "http://127.0.0.1:9/v2", "--out", &file],
            "is a file, not a folder",
        ),
    ];
    for (args, want) in cases {
        let out = ingest(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}\n{}", show(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn bad_kalshi_base_url_env_is_reported_by_name() {
    let out = ingest_with_env(&[], &[("KALSHI_BASE_URL", "api.example")]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("KALSHI_BASE_URL"));
}
