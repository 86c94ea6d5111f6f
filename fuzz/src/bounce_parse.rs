//! Target 5: the bounce parser (`baton_bounce::parse`) over arbitrary bytes as an inbound
//! message, plus the classifier with the default rules over the same bytes as a diagnostic.
//! Seeds: the files of `crates/baton-bounce/tests/corpora` that `afl-cmin -e` kept (88 of 231).
//! Checked, besides "no panic":
//! - the only error is "not a message";
//! - at most `MAX_RECIPIENTS` recipients, each with an address and a diagnostic of at most
//!   `MAX_DIAGNOSTIC` characters; a `delayed` recipient is soft;
//! - complaints and auto-replies are never bounces (and carry their own reason); a report
//!   of kind `unknown` names no recipient and is no bounce;
//! - the report serialises to the documented JSON shape, `class` is `hard` or `soft`, and
//!   `kind` one of the four kinds;
//! - bytes past `MAX_INPUT` change nothing; heap use stays bounded by the input size.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use baton_bounce::{Action, BounceError, Class, Kind, MAX_DIAGNOSTIC, MAX_INPUT, MAX_RECIPIENTS};
use baton_bounce::{Reason, Report, Rules};

use crate::meter;

/// Heap a parse may use: mail-parser's tree and the decoded parts are a few times the input.
const HEAP_PER_INPUT_BYTE: usize = 64;
const HEAP_BASE: usize = 32 << 20;

/// The default rules, compiled once (outside any heap measurement).
static RULES: LazyLock<Rules> = LazyLock::new(Rules::default);

const REPORT_KEYS: [&str; 4] = ["file", "is_bounce", "kind", "recipients"];
const RECIPIENT_KEYS: [&str; 8] = [
    "action",
    "address",
    "class",
    "diagnostic",
    "reason",
    "remote_mta",
    "reply_code",
    "status",
];

fn check_report(report: &Report) {
    assert!(
        report.recipients.len() <= MAX_RECIPIENTS,
        "{} recipients",
        report.recipients.len()
    );
    assert!(report.file.is_none(), "the parser filled in file");
    match report.kind {
        Kind::Arf | Kind::Autoreply => assert!(!report.is_bounce, "{:?} as bounce", report.kind),
        Kind::Unknown => {
            assert!(!report.is_bounce, "unknown kind as bounce");
            assert!(report.recipients.is_empty(), "unknown kind with recipients");
        }
        Kind::Dsn => {}
    }
    for r in &report.recipients {
        assert!(!r.address.is_empty(), "empty address: {r:?}");
        if let Some(d) = &r.diagnostic {
            assert!(
                d.chars().count() <= MAX_DIAGNOSTIC,
                "diagnostic of {} chars",
                d.chars().count()
            );
        }
        if r.action == Some(Action::Delayed) {
            assert_eq!(r.class, Class::Soft, "delayed but hard: {r:?}");
        }
        match report.kind {
            Kind::Arf => assert_eq!(r.reason, Reason::Complaint, "{r:?}"),
            Kind::Autoreply => assert_eq!(r.reason, Reason::AutoReply, "{r:?}"),
            _ => {}
        }
    }
    check_json(report);
}

fn check_json(report: &Report) {
    let text = serde_json::to_string(report).expect("report serialises");
    let json: serde_json::Value = serde_json::from_str(&text).expect("report JSON parses back");
    let object = json.as_object().expect("report is an object");
    let keys: BTreeSet<&str> = object.keys().map(String::as_str).collect();
    assert_eq!(keys, BTreeSet::from(REPORT_KEYS), "{text}");
    let kind = json["kind"].as_str().expect("kind is a string");
    assert!(
        ["dsn", "arf", "autoreply", "unknown"].contains(&kind),
        "kind {kind:?}"
    );
    let recipients = json["recipients"].as_array().expect("recipients array");
    assert_eq!(recipients.len(), report.recipients.len());
    for (r, value) in report.recipients.iter().zip(recipients) {
        let keys: BTreeSet<&str> = value
            .as_object()
            .expect("recipient is an object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, BTreeSet::from(RECIPIENT_KEYS), "{value}");
        let class = value["class"].as_str().expect("class is a string");
        assert!(class == "hard" || class == "soft", "class {class:?}");
        assert_eq!(value["address"].as_str(), Some(r.address.as_str()));
        assert!(value["reason"].is_string(), "{value}");
    }
}

/// The classifier alone: the input's first line as the enhanced status code, the next
/// `MAX_DIAGNOSTIC` bytes as the diagnostic text (UTF-8, lossily).
fn check_classify(rules: &Rules, data: &[u8]) {
    let text = String::from_utf8_lossy(&data[..data.len().min(MAX_DIAGNOSTIC + 16)]);
    let (status, diagnostic) = text.split_once('\n').unwrap_or((&text, ""));
    let reply = data.first().map(|&b| 400 + u16::from(b) % 200);
    let (_, failed) = baton_bounce::classify(
        rules,
        Some(Action::Failed),
        Some(status),
        reply,
        Some(diagnostic),
    );
    let (class, delayed) = baton_bounce::classify(
        rules,
        Some(Action::Delayed),
        Some(status),
        reply,
        Some(diagnostic),
    );
    assert_eq!(class, Class::Soft, "delayed but hard: {status:?}");
    assert_eq!(failed, delayed, "the action changed the reason: {status:?}");
}

/// Compiles the rules and runs every message of the bounce corpora once, before AFL++ forks
/// its first child: the regexes' lazily built automata are then mostly in place (each child
/// inherits them), so an input takes the same path in every child (stability) and no child
/// pays for compiling the rules.
pub fn warm_up() {
    let corpora = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/baton-bounce/tests/corpora");
    for dir in ["flufl-bounce", "mail-deliverystatus-bounceparser"] {
        for entry in std::fs::read_dir(corpora.join(dir))
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(data) = std::fs::read(entry.path()) {
                run(&data);
            }
        }
    }
}

pub fn run(data: &[u8]) {
    let rules = &*RULES;
    let base = meter::live();
    meter::reset_peak();
    let result = baton_bounce::parse(data);
    let used = meter::peak().saturating_sub(base);
    let bound = HEAP_BASE + HEAP_PER_INPUT_BYTE * data.len().min(MAX_INPUT);
    assert!(
        used <= bound,
        "parse used {used} heap bytes for {} input bytes",
        data.len()
    );
    match &result {
        Ok(report) => check_report(report),
        Err(BounceError::NotAMessage) => {}
        Err(other) => panic!("parse error other than NotAMessage: {other}"),
    }
    if data.len() > MAX_INPUT {
        let cut = baton_bounce::parse(&data[..MAX_INPUT]);
        assert_eq!(
            result.as_ref().ok(),
            cut.as_ref().ok(),
            "bytes past MAX_INPUT changed the report"
        );
    }
    check_classify(rules, data);
}
