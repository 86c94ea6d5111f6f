//! The wire client and what is left of the SDK stay inside this crate: callers see ports,
//! operations and the Lambda event types, never a client, a request or an SDK type. A
//! public item that names one would tie every caller to them and let it bypass the ports.

use std::path::{Path, PathBuf};

/// What public signatures and fields must not mention: SDK types, and the wire client's
/// own (callers get ports and plain values, never a request builder).
const SDK_NAMES: [&str; 8] = [
    "aws_sdk_",
    "aws_smithy_",
    "Client",
    "CallError",
    "Reply",
    ": Message",
    "&Message",
    "<Message>",
];
/// The one exception: the transport, for SDK applications that build their own clients
/// (crates/baton's examples) and so must use the SDK's types anyway.
const ALLOWED: [&str; 1] = ["pub fn sdk_http_client() -> SharedHttpClient"];

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

#[test]
fn no_public_item_exposes_an_sdk_type() {
    let files = sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(
        files.iter().any(|p| p.ends_with("wire/mod.rs")),
        "the walk missed src/wire: {files:?}"
    );
    let mut leaks = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("read");
        // Signatures can span lines: join each public item's first lines up to `{` or `;`.
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim_start();
            if !t.starts_with("pub ") {
                continue;
            }
            let mut item = String::new();
            for l in &lines[i..lines.len().min(i + 8)] {
                item.push_str(l.trim());
                item.push(' ');
                if l.contains('{') || l.trim_end().ends_with(';') || l.trim_end().ends_with(',') {
                    break;
                }
            }
            if SDK_NAMES.iter().any(|n| item.contains(n))
                && !ALLOWED.iter().any(|a| item.contains(a))
            {
                leaks.push(format!("{}:{}: {}", path.display(), i + 1, item.trim()));
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "public items name SDK types:\n{}",
        leaks.join("\n")
    );
}
