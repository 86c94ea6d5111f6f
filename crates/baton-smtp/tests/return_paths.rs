//! Bounces coming back to our return paths: taken from anyone on port 25, but only at
//! addresses this relay made, and alone in their transaction.

mod common;

use baton_domain::{QueueId, VerpKey};
use baton_smtp::{ListenerKind, ReturnPaths};
use common::{Harness, codes};

fn paths() -> ReturnPaths {
    ReturnPaths {
        key: VerpKey::new(&[9u8; 32]).expect("key"),
        label: "bounce".into(),
    }
}

fn return_path(domain: &str) -> String {
    let local = paths().key.local_part(domain, &QueueId::generate(), 0);
    format!("{local}@{domain}")
}

#[test]
fn anyone_may_bounce_to_a_return_path_we_made_and_to_nothing_else_there() {
    let mut h = Harness::with_return_paths(ListenerKind::Relay, paths());
    h.send(b"EHLO mx.elsewhere.test\r\n");
    let good = return_path("bounce.acme.test");
    let out = h.send(format!("MAIL FROM:<>\r\nRCPT TO:<{good}>\r\n").as_bytes());
    assert_eq!(codes(&out), ["250 2.1.0", "250 2.1.5"], "{out}");
    // A mangled token, the right token at another bounce domain, or a guess: 550 5.1.1.
    let mangled = good.replacen("-0-", "-1-", 1);
    let moved = good.replace("bounce.acme.test", "bounce.other.test");
    for forged in [
        mangled.as_str(),
        moved.as_str(),
        "postmaster@bounce.acme.test",
    ] {
        let out = h.send(format!("RCPT TO:<{forged}>\r\n").as_bytes());
        assert!(out.starts_with("550 5.1.1 "), "{forged}: {out}");
    }
    // One return path per message.
    let second = return_path("bounce.acme.test");
    let out = h.send(format!("RCPT TO:<{second}>\r\n").as_bytes());
    assert!(out.starts_with("550 5.5.3 One return path"), "{out}");
    // A bounce domain is not a way to relay: "bounce.test" has no sending domain under it.
    let out = h.send(b"RCPT TO:<x@bounce.test>\r\n");
    assert!(out.starts_with("554 5.7.1 "), "{out}");
    // Old MTAs write "From: MAILER-DAEMON" without a domain: the bounce is still taken.
    let out = h.send(
        b"DATA\r\nFrom: MAILER-DAEMON\r\nSubject: Undelivered Mail\r\n\r\nno such user\r\n.\r\n",
    );
    assert_eq!(codes(&out), ["354 End", "250 2.0.0"], "{out}");
    let [(envelope, _)] = &h.stored[..] else {
        panic!("one message stored: {:?}", h.stored.len())
    };
    assert_eq!(envelope.recipients.len(), 1);
    assert_eq!(envelope.tenant, None);
}

#[test]
fn a_return_path_goes_alone_and_only_through_port_25() {
    let mut h = Harness::with_return_paths(ListenerKind::Relay, paths());
    h.send(b"EHLO c\r\n");
    let good = return_path("bounce.acme.test");
    let out = h.send(
        format!("MAIL FROM:<>\r\nRCPT TO:<b@inbound.test>\r\nRCPT TO:<{good}>\r\n").as_bytes(),
    );
    assert_eq!(
        codes(&out),
        ["250 2.1.0", "250 2.1.5", "550 5.5.3"],
        "{out}"
    );
    // The other way round, too; and the usual From rule holds for the inbound message.
    let out = h.send(
        format!("RSET\r\nMAIL FROM:<>\r\nRCPT TO:<{good}>\r\nRCPT TO:<b@inbound.test>\r\n")
            .as_bytes(),
    );
    assert_eq!(
        codes(&out),
        ["250 2.0.0", "250 2.1.0", "250 2.1.5", "550 5.5.3"],
        "{out}"
    );

    let mut sub = Harness::with_return_paths(ListenerKind::Submission, paths());
    sub.send(b"EHLO c\r\n");
    let out = sub.send(format!("MAIL FROM:<>\r\nRCPT TO:<{good}>\r\n").as_bytes());
    assert_eq!(codes(&out), ["530 5.7.0", "503 5.5.1"], "{out}");
}

#[test]
fn without_return_paths_a_bounce_domain_is_relaying() {
    let mut h = Harness::new(ListenerKind::Relay, false, false);
    h.send(b"EHLO c\r\n");
    let out = h.send(
        format!(
            "MAIL FROM:<>\r\nRCPT TO:<{}>\r\n",
            return_path("bounce.acme.test")
        )
        .as_bytes(),
    );
    assert_eq!(codes(&out), ["250 2.1.0", "554 5.7.1"], "{out}");
}

#[test]
fn a_client_allowed_to_relay_reaches_our_return_paths_and_other_bounce_domains() {
    let mut h = Harness::with_return_paths_trusted(ListenerKind::Relay, paths());
    h.send(b"EHLO c\r\n");
    // Someone else's bounce.* address is ordinary relaying for an allow-listed client...
    let out = h.send(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<x@bounce.github.test>\r\n");
    assert_eq!(codes(&out), ["250 2.1.0", "250 2.1.5"], "{out}");
    // ...while one of ours is a bounce coming back, which goes alone.
    let good = return_path("bounce.acme.test");
    let out = h.send(format!("RCPT TO:<{good}>\r\n").as_bytes());
    assert_eq!(codes(&out), ["550 5.5.3"], "{out}");
}
