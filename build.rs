//! Records what `kalshi-ingest --version --verbose` reports: the git commit the binary
//! was built from (from `KALSHI_INGEST_COMMIT`, else `git`, else the `COMMIT` file a
//! vendored source archive carries, else "unknown") and the target triple.
//! Nothing time- or host-dependent is recorded, so builds stay reproducible.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=KALSHI_INGEST_COMMIT");
    for path in [".git/HEAD", "COMMIT"] {
        if Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    let from_git = || {
        let out = Command::new("git")
            .args(["rev-parse", "HEAD"])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let commit = std::env::var("KALSHI_INGEST_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| Path::new(".git").exists().then(from_git).flatten())
        .or_else(|| {
            std::fs::read_to_string("COMMIT")
                .ok()
                .map(|c| c.trim().to_string())
        })
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=KALSHI_INGEST_COMMIT={commit}");
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".to_string());
    println!("cargo:rustc-env=KALSHI_INGEST_TARGET={target}");
}
