//! The AWS SDK's types stay inside this crate: callers see ports, operations and the
//! Lambda event types, never an SDK client or an SDK message. A public item that names one
//! would tie every caller to the SDK's versions and let it bypass the ports.

use std::path::Path;

/// What public signatures and fields must not mention.
const SDK_NAMES: [&str; 5] = ["aws_sdk_", "Client", ": Message", "&Message", "<Message>"];
/// The one exception: the transport, for SDK applications that build their own clients
/// (crates/baton's examples) and so must use the SDK's types anyway.
const ALLOWED: [&str; 1] = ["pub fn sdk_http_client() -> SharedHttpClient"];

#[test]
fn no_public_item_exposes_an_sdk_type() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut leaks = Vec::new();
    for entry in std::fs::read_dir(&src).expect("src") {
        let path = entry.expect("entry").path();
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
