//! Runs the parser over both bounce corpora (copied from flufl.bounce and
//! Mail::DeliveryStatus::BounceParser; see tests/corpora/README.md) and compares with what
//! each project's own tests expect. Labels are not ground truth, so this measures agreement
//! and fails only when agreement falls below the floors reached when it was written.
//!
//! `BOUNCE_CORPUS_VERBOSE=1 cargo test -p baton-bounce --test corpus -- --nocapture` lists
//! every disagreement.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use baton_bounce::{Class, Report};

const CORPORA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpora");

/// What the labels expect of one file; `None` means not labelled.
#[derive(Debug, Default)]
struct Expect {
    is_bounce: Option<bool>,
    recipients: Option<BTreeSet<String>>,
    class: Option<Class>,
    status: Option<String>,
    reply_code: Option<u16>,
    /// Reasons of ours that match the label's std_reason.
    reasons: Option<&'static [&'static str]>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    agree: usize,
    labelled: usize,
}

impl Tally {
    fn add(&mut self, agrees: bool) {
        self.labelled += 1;
        self.agree += usize::from(agrees);
    }

    fn share(&self) -> f64 {
        if self.labelled == 0 {
            1.0
        } else {
            self.agree as f64 / self.labelled as f64
        }
    }

    fn cell(&self) -> String {
        format!(
            "{:>3}/{:<3} {:>5.1}%",
            self.agree,
            self.labelled,
            self.share() * 100.0
        )
    }
}

#[derive(Debug, Default)]
struct Score {
    files: usize,
    is_bounce: Tally,
    recipients: Tally,
    class: Tally,
    status: Tally,
    reply_code: Tally,
    reason: Tally,
}

/// Splits one CSV line (double quotes may wrap a field; no quotes inside quotes here).
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    fields.push(current);
    fields
}

fn rows(path: &Path) -> Vec<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).expect("label file");
    let mut lines = text.lines();
    let header = csv_fields(lines.next().expect("header"));
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|line| header.iter().cloned().zip(csv_fields(line)).collect())
        .collect()
}

fn address_set(cell: &str) -> BTreeSet<String> {
    cell.split_whitespace()
        .map(str::to_ascii_lowercase)
        .collect()
}

fn flufl_labels() -> BTreeMap<String, Expect> {
    let mut out: BTreeMap<String, Expect> = BTreeMap::new();
    for row in rows(&Path::new(CORPORA).join("flufl-bounce.labels.csv")) {
        let expect = out.entry(row["file"].clone()).or_default();
        let set = address_set(&row["recipients"]);
        if set.is_empty() {
            // Negative checks of one detector (smtp32 on postfix_01, groupwise on
            // groupwise_02); another row of the same file names the addresses.
            continue;
        }
        expect.is_bounce = Some(true);
        expect
            .recipients
            .get_or_insert_with(BTreeSet::new)
            .extend(set);
        expect.class = Some(if row["temporary"] == "yes" {
            Class::Soft
        } else {
            Class::Hard
        });
    }
    out
}

fn perl_labels() -> BTreeMap<String, Expect> {
    let mut out = BTreeMap::new();
    for row in rows(&Path::new(CORPORA).join("mail-deliverystatus-bounceparser.labels.csv")) {
        let notes = row["notes"].as_str();
        let mut expect = Expect {
            is_bounce: match row["is_bounce"].as_str() {
                "1" => Some(true),
                "0" => Some(false),
                _ => None,
            },
            ..Expect::default()
        };
        let set = address_set(&row["recipients"]);
        if !set.is_empty() {
            expect.recipients = Some(set);
        } else if notes.contains("reports=0") {
            expect.recipients = Some(BTreeSet::new());
        }
        expect.reply_code = row["smtp_code"].parse().ok();
        expect.status = notes
            .split(';')
            .find_map(|n| n.trim().strip_prefix("status=").map(str::to_string));
        let std_reason = if notes.contains("todo:std_reason") {
            ""
        } else {
            row["std_reason"].as_str()
        };
        // Hard/soft: the SMTP code's class, else the status note's, else a reason that is
        // permanent by nature (unknown or disabled user, domain error).
        let class_digit = expect.reply_code.map(|c| c / 100).or_else(|| {
            expect
                .status
                .as_deref()
                .and_then(|s| s.get(..1)?.parse().ok())
        });
        expect.class = match class_digit {
            Some(5) => Some(Class::Hard),
            Some(4) => Some(Class::Soft),
            _ => match std_reason {
                "user_unknown" | "user_disabled" | "domain_error" => Some(Class::Hard),
                _ => None,
            },
        };
        expect.reasons = match std_reason {
            "user_unknown" | "user_disabled" => Some(&["user_unknown", "mailbox_disabled"]),
            "over_quota" => Some(&["mailbox_full"]),
            "domain_error" => Some(&["dns_failure", "routing_error"]),
            "spam" => Some(&[
                "spam_block",
                "reputation_blocklisted",
                "content_rejected",
                "policy_block",
            ]),
            _ => None,
        };
        out.insert(row["file"].clone(), expect);
    }
    out
}

fn reason_name(reason: baton_bounce::Reason) -> String {
    serde_json::to_value(reason)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn score(dir: &str, labels: &BTreeMap<String, Expect>, verbose: bool) -> Score {
    let mut files: Vec<PathBuf> = std::fs::read_dir(Path::new(CORPORA).join(dir))
        .expect("corpus dir")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    let mut score = Score::default();
    for path in files {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let raw = std::fs::read(&path).expect("read");
        score.files += 1;
        let report = baton_bounce::parse(&raw).unwrap_or(Report {
            file: None,
            is_bounce: false,
            kind: baton_bounce::Kind::Unknown,
            recipients: Vec::new(),
        });
        let Some(expect) = labels.get(&name) else {
            continue;
        };
        let mut wrong = Vec::new();
        if let Some(want) = expect.is_bounce {
            score.is_bounce.add(report.is_bounce == want);
            if report.is_bounce != want {
                wrong.push(format!(
                    "is_bounce {} want {want} ({:?})",
                    report.is_bounce, report.kind
                ));
            }
        }
        let got: BTreeSet<String> = report
            .recipients
            .iter()
            .map(|r| r.address.to_ascii_lowercase())
            .collect();
        if let Some(want) = &expect.recipients {
            score.recipients.add(&got == want);
            if &got != want {
                wrong.push(format!("recipients {got:?} want {want:?}"));
            }
        }
        // The recipient the label is about: an expected one we found, else our first.
        let subject = report
            .recipients
            .iter()
            .find(|r| {
                expect
                    .recipients
                    .as_ref()
                    .is_some_and(|w| w.contains(&r.address.to_ascii_lowercase()))
            })
            .or(report.recipients.first());
        if let Some(want) = expect.class {
            let ours: Vec<Class> = match &expect.recipients {
                Some(set) if !set.is_empty() => report
                    .recipients
                    .iter()
                    .filter(|r| set.contains(&r.address.to_ascii_lowercase()))
                    .map(|r| r.class)
                    .collect(),
                _ => subject.map(|r| r.class).into_iter().collect(),
            };
            let agrees = !ours.is_empty() && ours.iter().all(|c| *c == want);
            score.class.add(agrees);
            if !agrees {
                wrong.push(format!("class {ours:?} want {want:?}"));
            }
        }
        if let Some(want) = &expect.status {
            let ours = subject.and_then(|r| r.status.clone());
            score.status.add(ours.as_ref() == Some(want));
            if ours.as_ref() != Some(want) {
                wrong.push(format!("status {ours:?} want {want}"));
            }
        }
        if let Some(want) = expect.reply_code {
            let ours = subject.and_then(|r| r.reply_code);
            score.reply_code.add(ours == Some(want));
            if ours != Some(want) {
                wrong.push(format!("reply_code {ours:?} want {want}"));
            }
        }
        if let Some(want) = expect.reasons {
            let ours = subject.map(|r| reason_name(r.reason));
            let agrees = ours.as_deref().is_some_and(|o| want.contains(&o));
            score.reason.add(agrees);
            if !agrees {
                wrong.push(format!("reason {ours:?} want {want:?}"));
            }
        }
        if verbose && !wrong.is_empty() {
            println!("{dir}/{name}: {}", wrong.join("; "));
        }
    }
    score
}

#[test]
fn corpora_agree_with_their_labels() {
    let verbose = std::env::var_os("BOUNCE_CORPUS_VERBOSE").is_some();
    let flufl = score("flufl-bounce", &flufl_labels(), verbose);
    let perl = score("mail-deliverystatus-bounceparser", &perl_labels(), verbose);
    println!();
    println!(
        "{:<34} {:>5}  {:<16} {:<16} {:<16} {:<16} {:<16} {:<16}",
        "corpus", "files", "is_bounce", "recipients", "hard/soft", "status", "reply_code", "reason"
    );
    for (name, s) in [
        ("flufl-bounce", &flufl),
        ("mail-deliverystatus-bounceparser", &perl),
    ] {
        println!(
            "{:<34} {:>5}  {:<16} {:<16} {:<16} {:<16} {:<16} {:<16}",
            name,
            s.files,
            s.is_bounce.cell(),
            s.recipients.cell(),
            s.class.cell(),
            s.status.cell(),
            s.reply_code.cell(),
            s.reason.cell()
        );
    }
    // Floors: the agreement reached (rounded down), so that a regression fails.
    let floors = [
        ("flufl is_bounce", flufl.is_bounce, 1.0),
        ("flufl recipients", flufl.recipients, 0.99),
        ("flufl hard/soft", flufl.class, 0.97),
        ("perl is_bounce", perl.is_bounce, 0.93),
        ("perl recipients", perl.recipients, 1.0),
        ("perl hard/soft", perl.class, 1.0),
        ("perl status", perl.status, 1.0),
        ("perl reply_code", perl.reply_code, 0.93),
        ("perl reason", perl.reason, 0.97),
    ];
    for (what, tally, floor) in floors {
        assert!(
            tally.share() >= floor,
            "{what}: {} below the floor {floor}",
            tally.cell()
        );
    }
    assert_eq!(flufl.files, 103);
    assert_eq!(perl.files, 128);
}

#[test]
fn every_corpus_file_serialises_in_the_documented_shape() {
    for dir in ["flufl-bounce", "mail-deliverystatus-bounceparser"] {
        for entry in std::fs::read_dir(Path::new(CORPORA).join(dir)).expect("dir") {
            let raw = std::fs::read(entry.expect("entry").path()).expect("read");
            let Ok(report) = baton_bounce::parse(&raw) else {
                continue;
            };
            let json = serde_json::to_value(&report).expect("json");
            let keys: Vec<_> = json.as_object().expect("object").keys().cloned().collect();
            assert_eq!(keys, ["file", "is_bounce", "kind", "recipients"]);
            for r in json["recipients"].as_array().expect("array") {
                let keys: BTreeSet<_> = r.as_object().expect("object").keys().cloned().collect();
                let want: BTreeSet<String> = [
                    "address",
                    "action",
                    "status",
                    "reply_code",
                    "diagnostic",
                    "remote_mta",
                    "class",
                    "reason",
                ]
                .into_iter()
                .map(String::from)
                .collect();
                assert_eq!(keys, want);
            }
        }
    }
}

/// No input panics: every prefix (at a stride) of every corpus file, and each file with
/// bytes flipped, parses or errors. (The fuzz target covers far more; this runs in CI.)
#[test]
fn truncated_and_damaged_corpus_files_never_panic() {
    for dir in ["flufl-bounce", "mail-deliverystatus-bounceparser"] {
        for entry in std::fs::read_dir(Path::new(CORPORA).join(dir)).expect("dir") {
            let raw = std::fs::read(entry.expect("entry").path()).expect("read");
            for end in (0..raw.len()).step_by(97) {
                let _ = baton_bounce::parse(&raw[..end]);
            }
            let mut damaged = raw.clone();
            for (i, byte) in damaged.iter_mut().enumerate() {
                if i % 13 == 0 {
                    *byte ^= 0xA5;
                }
            }
            let _ = baton_bounce::parse(&damaged);
        }
    }
}

#[test]
fn work_is_bounded() {
    let mut raw = String::from(
        "From: MAILER-DAEMON@mx.example.org\r\nSubject: Undelivered Mail\r\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=B\r\n\r\n\
--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n",
    );
    for i in 0..5000 {
        raw.push_str(&format!(
            "Final-Recipient: rfc822; u{i}@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
        ));
    }
    raw.push_str(&format!(
        "Final-Recipient: rfc822; x@y.z\r\nDiagnostic-Code: smtp; {}\r\n",
        "a".repeat(2_000_000)
    ));
    let report = baton_bounce::parse(raw.as_bytes()).expect("parses");
    assert_eq!(report.recipients.len(), baton_bounce::MAX_RECIPIENTS);
    assert!(baton_bounce::parse(b"").is_err());
    let _ = baton_bounce::parse(&[0u8; 100]);
}
