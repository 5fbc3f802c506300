//! bench-floor: the floor `scripts/bench.sh` compares kalshi-ingest against. It
//! recreates the record output of a run (the same number of files of the same sizes in
//! the same batch folders, or the same JSON Lines files) with plain create+write and no
//! HTTP or JSON work.
//!
//! ```text
//! bench-floor plan ENDPOINT_DIR > PLAN     list "batch_name size" of every output file
//! bench-floor files PLAN DST               create each file (size bytes) in DST/batch/
//! bench-floor jsonl PLAN DST               write each batch's bytes as one file in DST
//! ```

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["plan", dir] => plan(Path::new(dir)),
        ["files", plan, dst] => replay(Path::new(plan), Path::new(dst), false),
        ["jsonl", plan, dst] => replay(Path::new(plan), Path::new(dst), true),
        _ => Err("usage: bench-floor plan DIR | files PLAN DST | jsonl PLAN DST".to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-floor: {e}");
            ExitCode::from(2)
        }
    }
}

fn plan(dir: &Path) -> Result<(), String> {
    let mut batches: Vec<_> = fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .collect();
    batches.sort();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for batch in batches {
        let name = batch
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if batch.is_dir() {
            let mut files: Vec<_> = fs::read_dir(&batch)
                .map_err(|e| e.to_string())?
                .flatten()
                .map(|e| e.path())
                .collect();
            files.sort();
            for file in files {
                let size = fs::metadata(&file).map_err(|e| e.to_string())?.len();
                writeln!(out, "{name} {size}").map_err(|e| e.to_string())?;
            }
        } else {
            let size = fs::metadata(&batch).map_err(|e| e.to_string())?.len();
            writeln!(out, "{name} {size}").map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

fn replay(plan: &Path, dst: &Path, jsonl: bool) -> Result<(), String> {
    let text = fs::read_to_string(plan).map_err(|e| format!("{}: {e}", plan.display()))?;
    let entries: Vec<(&str, usize)> = text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter_map(|(b, s)| Some((b, s.parse().ok()?)))
        .collect();
    let largest = entries.iter().map(|e| e.1).max().unwrap_or(0);
    let buf = vec![b'x'; largest];
    fs::create_dir_all(dst).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut current = "";
    for (index, (batch, size)) in entries.iter().enumerate() {
        if jsonl {
            fs::write(dst.join(batch), &buf[..*size]).map_err(|e| e.to_string())?;
            continue;
        }
        if *batch != current {
            fs::create_dir(dst.join(batch)).map_err(|e| e.to_string())?;
            current = batch;
        }
        let path = dst.join(batch).join(format!("{index:07}.json"));
        fs::write(path, &buf[..*size]).map_err(|e| e.to_string())?;
    }
    eprintln!(
        "bench-floor: {} {} in {:.3} s",
        entries.len(),
        if jsonl { "files (jsonl)" } else { "files" },
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
