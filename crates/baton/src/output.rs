//! How the read-only commands print: aligned tables with a header for people, `--json` for
//! machines, every time as RFC 3339 with milliseconds in UTC.

use std::io::Write;

use serde::Serialize;

/// `2026-12-02T03:23:03.053Z`: one precision everywhere, so columns line up.
pub(crate) fn rfc3339_ms(ms: i64) -> String {
    // The same format SES events use, from the one formatter.
    let text = baton_pipeline::ses_events::iso8601(ms);
    if text.is_empty() {
        ms.to_string()
    } else {
        text
    }
}

/// Now, in Unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Text as a terminal should show it: every invisible character (controls, bidi and
/// zero-width format characters) written as `\u{..}`, so stored text from the Internet can
/// neither drive the terminal nor disguise itself.
pub(crate) fn terminal_safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if baton_pipeline::messages::is_invisible(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// Aligned columns under a header; the last column takes the rest of the line. Every cell
/// goes through [`terminal_safe`].
pub(crate) fn write_table(
    out: &mut impl Write,
    headers: &[&str],
    rows: &[Vec<String>],
) -> std::io::Result<()> {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| terminal_safe(c)).collect())
        .collect();
    let width = |s: &str| s.chars().count();
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| width(c)))
                .chain([width(h)])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| -> std::io::Result<()> {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            text.push_str(cell);
            if i + 1 < widths.len() {
                text.extend(std::iter::repeat_n(' ', widths[i] - width(cell)));
            }
        }
        writeln!(out, "{}", text.trim_end())
    };
    line(&mut headers.iter().copied())?;
    for r in &rows {
        line(&mut r.iter().map(String::as_str))?;
    }
    Ok(())
}

/// Prints a table or, with `json`, the records themselves.
pub(crate) fn print<T: Serialize>(
    json: bool,
    records: &T,
    headers: &[&str],
    rows: impl FnOnce() -> Vec<Vec<String>>,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let written = if json {
        serde_json::to_writer_pretty(&mut out, records)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        write_table(&mut out, headers, &rows())
    };
    quiet_on_closed_pipe(written)
}

/// `baton queue list | head` must not end with an error when `head` stops reading.
pub(crate) fn quiet_on_closed_pipe(result: std::io::Result<()>) -> anyhow::Result<()> {
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// "-" for an empty cell, so every column has a value to read.
pub(crate) fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_have_one_precision_and_tables_line_up() {
        assert_eq!(rfc3339_ms(1_700_000_000_000), "2023-11-14T22:13:20.000Z");
        assert_eq!(rfc3339_ms(1_700_000_000_005), "2023-11-14T22:13:20.005Z");
        let rows = vec![
            vec![
                "2023-11-14T22:13:20.000Z".into(),
                "a@x".into(),
                "hard".into(),
                "no such user".into(),
            ],
            vec![
                "2023-11-14T22:13:21.000Z".into(),
                "lönger@example.org".into(),
                "soft".into(),
                "full".into(),
            ],
        ];
        let mut out = Vec::new();
        write_table(&mut out, &["AT", "RECIPIENT", "KIND", "REPLY"], &rows).expect("write");
        let text = String::from_utf8(out).expect("utf8");
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("AT") && lines[0].contains("RECIPIENT"),
            "{text}"
        );
        // Columns line up in characters, not octets (a non-ASCII address must not shift them).
        let col = |l: &str| {
            let at = l
                .find("hard")
                .or_else(|| l.find("soft"))
                .or_else(|| l.find("KIND"));
            at.map(|i| l[..i].chars().count())
        };
        assert_eq!(col(lines[0]), col(lines[1]), "{text}");
        assert_eq!(col(lines[1]), col(lines[2]), "{text}");
        assert!(!text.lines().any(|l| l.ends_with(' ')), "{text}");
    }

    #[test]
    fn cells_cannot_drive_the_terminal_or_hide_characters() {
        let rows = vec![vec![
            "a\x1b]0;pwned\x07b".to_string(),
            "x\u{202E}y\r\nz".to_string(),
        ]];
        let mut out = Vec::new();
        write_table(&mut out, &["A", "B"], &rows).expect("write");
        let text = String::from_utf8(out).expect("utf8");
        assert_eq!(
            text.lines().nth(1),
            Some(r"a\u{1b}]0;pwned\u{7}b  x\u{202e}y\u{d}\u{a}z"),
            "{text}"
        );
    }
}
