//! `baton bounce parse FILE...`: one JSON report per file, from the same parser and rules
//! the bounce stage uses. Needs no configuration or data dir.

use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::bail;
use baton_bounce::MAX_INPUT;

/// Parses each file; a file that cannot be read or parsed gets `{"file","error"}` and the
/// command fails at the end, after every other file was reported.
pub fn run(files: &[PathBuf], rules: Option<&Path>) -> anyhow::Result<()> {
    // The same rules the pipeline uses with `bounces.rules_file`.
    let parser = baton_pipeline::inbound::parser(rules)
        .map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_start_matches("permanent: ")))?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut failed = 0usize;
    for path in files {
        let name = path.display().to_string();
        let line = match read_head(path)
            .map_err(anyhow::Error::from)
            .and_then(|raw| parser.parse(&raw).map_err(anyhow::Error::from))
        {
            Ok(mut report) => {
                report.file = Some(name);
                serde_json::to_string(&report)?
            }
            Err(e) => {
                failed += 1;
                serde_json::json!({ "file": name, "error": format!("{e:#}") }).to_string()
            }
        };
        let written = writeln!(out, "{line}");
        crate::output::quiet_on_closed_pipe(written)?;
    }
    crate::output::quiet_on_closed_pipe(out.flush())?;
    if failed > 0 {
        bail!("{failed} of {} files could not be parsed", files.len());
    }
    Ok(())
}

/// The part of the file the parser looks at, not more (a large file is not read whole).
fn read_head(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut raw = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_INPUT as u64)
        .read_to_end(&mut raw)?;
    Ok(raw)
}
