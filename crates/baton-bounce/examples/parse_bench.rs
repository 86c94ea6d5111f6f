//! Parses every message of the bounce corpora ROUNDS times on one thread and prints
//! messages per second. `bench/bounce-parse.sh` runs it in release mode.
//!
//! Usage: parse_bench [ROUNDS] [DIR...]   (default: 200 rounds over tests/corpora)

use std::path::{Path, PathBuf};
use std::time::Instant;

fn messages(dirs: &[PathBuf]) -> std::io::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for dir in dirs {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        paths.sort();
        for path in paths {
            if path.is_dir() {
                out.extend(messages(&[path])?);
            } else if path
                .extension()
                .is_some_and(|ext| ext == "txt" || ext == "msg" || ext == "eml")
            {
                out.push(std::fs::read(&path)?);
            }
        }
    }
    Ok(out)
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let mut dirs: Vec<PathBuf> = args.map(PathBuf::from).collect();
    if dirs.is_empty() {
        dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpora"));
    }
    let corpus = messages(&dirs)?;
    let bytes: usize = corpus.iter().map(Vec::len).sum();
    let parser = baton_bounce::Parser::default();
    // Warm-up: compiles the lazily built patterns outside the timed loop.
    let mut bounces = 0usize;
    for raw in &corpus {
        bounces += usize::from(parser.parse(raw).is_ok_and(|r| r.is_bounce));
    }
    let start = Instant::now();
    let mut parsed = 0usize;
    for _ in 0..rounds {
        for raw in &corpus {
            let report = parser.parse(std::hint::black_box(raw));
            std::hint::black_box(&report);
            parsed += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{} messages ({} KiB, {} bounces) x {} rounds: {} parsed in {:.2} s = {:.0} messages/s, {:.1} MiB/s (one thread)",
        corpus.len(),
        bytes / 1024,
        bounces,
        rounds,
        parsed,
        secs,
        parsed as f64 / secs,
        (bytes * rounds) as f64 / secs / (1024.0 * 1024.0)
    );
    Ok(())
}
