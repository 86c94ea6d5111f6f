//! Prints one JSON report per file, as `baton bounce parse FILE...` will.
//!
//! Usage: bounce_json FILE...

fn main() {
    let parser = baton_bounce::Parser::default();
    for path in std::env::args().skip(1) {
        let line = match std::fs::read(&path) {
            Ok(raw) => match parser.parse(&raw) {
                Ok(mut report) => {
                    report.file = Some(path);
                    serde_json::to_string(&report).unwrap_or_default()
                }
                Err(err) => serde_json::json!({"file": path, "error": err.to_string()}).to_string(),
            },
            Err(err) => serde_json::json!({"file": path, "error": err.to_string()}).to_string(),
        };
        println!("{line}");
    }
}
