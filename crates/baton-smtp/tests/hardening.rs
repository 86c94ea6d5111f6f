//! Regression tests for what an attacker can send the session: DSN values that decode to
//! control characters, numbers that overflow, messages without a usable author, and what
//! the Received: field of a submission gives away.

mod common;

use baton_smtp::{ListenerKind, SessionLimits};
use common::{Harness, codes};

const AUTH: &[u8] = b"EHLO c\r\nAUTH PLAIN AGFsaWNlAGdvb2Q=\r\n";

#[test]
fn dsn_values_that_decode_to_controls_are_refused_at_input() {
    let mut h = Harness::new(ListenerKind::Relay, false, false);
    let out = h
        .send(b"EHLO c\r\nMAIL FROM:<a@x.test> ENVID=x+0D+0ARCPT+20TO:<victim@elsewhere.test>\r\n");
    assert_eq!(codes(&out)[1], "501 5.5.4", "{out}");
    let out = h.send(b"MAIL FROM:<a@x.test> ENVID=ok+00\r\n");
    assert_eq!(codes(&out), ["501 5.5.4"], "{out}");
    let out = h.send(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@inbound.test> ORCPT=rfc822;b+0D+0ARSET\r\nRCPT TO:<b@inbound.test> ORCPT=rfc822;b+0Ax\r\n");
    assert_eq!(
        codes(&out),
        ["250 2.1.0", "501 5.5.4", "501 5.5.4"],
        "{out}"
    );
    // Nothing the client sent comes back with a raw control character in a reply.
    assert!(!out.replace("\r\n", "").contains(['\r', '\n', '\0']));
}

#[test]
fn numbers_that_do_not_fit_are_refused_not_wrapped() {
    let mut h = Harness::new(ListenerKind::Relay, false, false);
    // 2^64 + 10 would wrap to 10 (or saturate) inside the command parser.
    let out = h.send(b"EHLO c\r\nMAIL FROM:<a@x.test> SIZE=18446744073709551626\r\n");
    assert_eq!(codes(&out)[1], "501 5.5.4", "{out}");
    let out = h.send(b"MAIL FROM:<a@x.test> SIZE=99999999999999999999999999999999\r\n");
    assert_eq!(codes(&out), ["501 5.5.4"], "{out}");
    let out = h.send(
        b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@inbound.test>\r\nBDAT 18446744073709551626 LAST\r\n",
    );
    assert_eq!(
        codes(&out),
        ["250 2.1.0", "250 2.1.5", "501 5.5.4"],
        "{out}"
    );
    assert!(h.stored.is_empty() && !h.closed);
}

#[test]
fn a_chunk_larger_than_the_message_limit_ends_the_session() {
    let limits = SessionLimits {
        max_message_size: 1000,
        ..SessionLimits::default()
    };
    let mut h = Harness::with_limits(ListenerKind::Relay, false, false, limits);
    let out =
        h.send(b"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@inbound.test>\r\nBDAT 1001 LAST\r\n");
    assert_eq!(codes(&out)[3], "552 5.3.4", "{out}");
    assert!(h.closed && h.stored.is_empty());
}

#[test]
fn every_client_needs_exactly_one_from_before_250() {
    for header in [
        "Subject: no author\r\n",
        "From: a@x.test\r\nFrom: b@x.test\r\n",
        "From: undisclosed\r\n",
    ] {
        let mut h = Harness::new(ListenerKind::Relay, false, false);
        let msg = format!(
            "EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@inbound.test>\r\nDATA\r\n{header}\r\nbody\r\n.\r\n"
        );
        let out = h.send(msg.as_bytes());
        assert_eq!(codes(&out).last(), Some(&"550 5.6.0"), "{header}: {out}");
        assert!(h.stored.is_empty(), "{header}");
    }
    let mut h = Harness::new(ListenerKind::Relay, false, false);
    let out = h.send(b"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@inbound.test>\r\nDATA\r\nFrom: Someone <a@x.test>\r\n\r\nbody\r\n.\r\n");
    assert!(out.contains("queued as"), "{out}");
}

#[test]
fn received_of_a_submission_names_neither_user_nor_client_address() {
    let mut h = Harness::new(ListenerKind::Submission, false, true);
    let mut script = AUTH.to_vec();
    script.extend_from_slice(b"MAIL FROM:<alice@acme.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\nFrom: alice@acme.test\r\n\r\nhi\r\n.\r\n");
    let out = h.send(&script);
    assert!(out.contains("queued as"), "{out}");
    let body = String::from_utf8_lossy(&h.stored[0].1).into_owned();
    let received = &body[..body.find(";").expect("received")];
    assert!(received.starts_with("Received: from c\r\n"), "{body}");
    assert!(
        !received.contains("alice") && !received.contains("acme"),
        "{body}"
    );
    assert!(!received.contains("192.0.2.1"), "{body}");
    assert!(received.contains("ESMTPSA"), "{body}");
}

#[test]
fn a_bare_cr_at_the_end_of_a_bdat_body_is_refused_not_dropped() {
    let mut h = Harness::new(ListenerKind::Relay, false, false);
    let out = h.send(
        b"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@inbound.test>\r\nBDAT 21 LAST\r\nFrom: a@x.test\r\n\r\nab\r",
    );
    assert_eq!(codes(&out).last(), Some(&"550 5.5.2"), "{out}");
    assert!(h.stored.is_empty() && h.closed);
    assert_eq!(h.aborted, 1);
}

#[test]
fn only_a_configured_binding_makes_a_network_clients_mail_a_tenants() {
    let msg = b"EHLO c\r\nMAIL FROM:<a@acme.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\nFrom: a@acme.test\r\n\r\nhi\r\n.\r\n";
    let mut anonymous = Harness::new(ListenerKind::Relay, true, false);
    anonymous.send(msg);
    assert_eq!(anonymous.stored[0].0.tenant, None);
    let mut bound = Harness::new(ListenerKind::Relay, true, false);
    bind_acme(&mut bound);
    bound.send(msg);
    let env = &bound.stored[0].0;
    assert_eq!(env.tenant.as_ref().map(|t| t.0.as_str()), Some("acme"));
    assert_eq!(env.auth_user, None);
}

fn bind_acme(h: &mut Harness) {
    let domains = vec![baton_domain::Domain::parse("acme.test").expect("domain")];
    h.session
        .bind_network_tenant(baton_domain::TenantId("acme".into()), domains);
}

#[test]
fn a_network_bound_to_a_tenant_may_only_send_as_that_tenant() {
    // Its DSNs and signatures are the tenant's: a forged sender would reflect them.
    let mut h = Harness::new(ListenerKind::Relay, true, false);
    bind_acme(&mut h);
    let out = h.send(b"EHLO c\r\nMAIL FROM:<victim@elsewhere.test>\r\n");
    assert_eq!(codes(&out)[1], "553 5.7.1", "{out}");
    let out = h.send(b"MAIL FROM:<app@acme.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\nFrom: victim@elsewhere.test\r\n\r\nhi\r\n.\r\n");
    assert_eq!(codes(&out).last(), Some(&"553 5.7.1"), "{out}");
    assert!(h.stored.is_empty());
}

#[test]
fn a_message_that_went_round_fifty_hops_is_refused_as_a_loop() {
    let mut h = Harness::new(ListenerKind::Relay, false, false);
    h.send(b"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@inbound.test>\r\nDATA\r\n");
    let hops = "Received: from a by b; Wed, 2 Dec 2026 07:00:00 +0000\r\n".repeat(50);
    let out = h.send(format!("{hops}From: a@x.test\r\n\r\nhi\r\n.\r\n").as_bytes());
    assert!(out.starts_with("554 5.4.6 "), "{out}");
    assert!(h.stored.is_empty());
    // 49 hops still go through.
    let hops = "Received: from a by b; Wed, 2 Dec 2026 07:00:00 +0000\r\n".repeat(49);
    let out = h.send(
        format!("MAIL FROM:<a@x.test>\r\nRCPT TO:<b@inbound.test>\r\nDATA\r\n{hops}From: a@x.test\r\n\r\nhi\r\n.\r\n")
            .as_bytes(),
    );
    assert!(out.contains("250 2.0.0"), "{out}");
}
