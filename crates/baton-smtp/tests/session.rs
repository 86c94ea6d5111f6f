//! Scripted conversations against the session state machine, no sockets involved.

mod common;

use baton_smtp::{ListenerKind, SessionLimits};
use common::{Harness, codes};

#[test]
fn pipelined_transaction_from_trusted_network_is_queued() {
    let mut h = Harness::new(ListenerKind::Relay, true, false);
    let out = h.send(
        b"EHLO client.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\nFrom: a@x.test\r\nSubject: hi\r\n\r\n..dot\r\n.\r\nQUIT\r\n",
    );
    assert!(out.contains("250 2.0.0 Ok: queued as "), "{out}");
    assert!(out.ends_with("221 2.0.0 Bye\r\n"), "{out}");
    assert_eq!(h.stored.len(), 1);
    let (env, body) = &h.stored[0];
    assert_eq!(env.recipients[0].address.to_string(), "b@y.test");
    let body = String::from_utf8_lossy(body);
    assert!(
        body.starts_with("Received: from client.test ([192.0.2.1])"),
        "{body}"
    );
    assert!(body.ends_with("Subject: hi\r\n\r\n.dot\r\n"), "{body}");
    assert_eq!(env.size as usize, body.len());
}

#[test]
fn ehlo_offers_starttls_before_tls_and_auth_after() {
    let mut h = Harness::new(ListenerKind::Submission, false, false);
    let out = h.send(b"EHLO c\r\n");
    assert!(
        out.contains("250 STARTTLS\r\n") && !out.contains("AUTH"),
        "{out}"
    );
    for ext in [
        "PIPELINING",
        "SIZE 52428800",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
        "DSN",
    ] {
        assert!(out.contains(ext), "missing {ext}: {out}");
    }
    // Plaintext pipelined after STARTTLS is never answered.
    let out = h.send(b"STARTTLS\r\nNOOP\r\n");
    assert_eq!(out, "220 2.0.0 Ready to start TLS\r\n");
    assert!(h.starttls_requested);
    let out = h.send(b"MAIL FROM:<a@acme.test>\r\n");
    assert!(
        out.starts_with("503 5.5.1"),
        "state must reset after TLS: {out}"
    );
    let out = h.send(b"EHLO c\r\n");
    assert!(
        out.contains("250 AUTH PLAIN LOGIN\r\n") && !out.contains("STARTTLS"),
        "{out}"
    );
}

#[test]
fn submission_requires_auth_and_tls_for_auth() {
    let mut h = Harness::new(ListenerKind::Submission, false, false);
    let out = h.send(b"EHLO c\r\nAUTH PLAIN AGFsaWNlAGdvb2Q=\r\nMAIL FROM:<a@acme.test>\r\n");
    assert_eq!(codes(&out)[1..], ["538 5.7.11", "530 5.7.0"]);
}

#[test]
fn auth_plain_and_login_and_sender_ownership() {
    let mut h = Harness::new(ListenerKind::Submissions, false, true);
    // "\0alice\0bad" then "\0alice\0good"
    let out = h.send(b"EHLO c\r\nAUTH PLAIN AGFsaWNlAGJhZA==\r\nAUTH PLAIN AGFsaWNlAGdvb2Q=\r\n");
    assert_eq!(codes(&out)[1..], ["535 5.7.8", "235 2.7.0"]);
    let out = h.send(
        b"MAIL FROM:<a@other.test>\r\nMAIL FROM:<a@acme.test>\r\nRCPT TO:<z@anywhere.test>\r\n",
    );
    assert_eq!(codes(&out), ["553 5.7.1", "250 2.1.0", "250 2.1.5"]);
    let out = h.send(b"DATA\r\nFrom: <boss@other.test>\r\n\r\nhi\r\n.\r\n");
    assert!(out.contains("553 5.7.1"), "{out}");
    assert_eq!((h.stored.len(), h.aborted), (0, 1));

    let mut login = Harness::new(ListenerKind::Submissions, false, true);
    let out = login.send(b"EHLO c\r\nAUTH LOGIN\r\nYWxpY2U=\r\nZ29vZA==\r\n");
    assert_eq!(
        codes(&out)[1..],
        ["334 VXNlcm5hbWU6", "334 UGFzc3dvcmQ6", "235 2.7.0"]
    );
}

#[test]
fn open_relay_tricks_are_refused() {
    let cases = [
        ("<x@elsewhere.test>", "554 5.7.1"),
        ("<x%elsewhere.test@inbound.test>", "550 5.7.1"),
        ("<elsewhere.test!x@inbound.test>", "550 5.7.1"),
        ("<@inbound.test:x@elsewhere.test>", "550 5.7.1"),
        ("<\"x@elsewhere.test\"@inbound.test>", "550 5.7.1"),
        ("<x@[127.0.0.1]>", "554 5.7.1"),
        ("<x@inbound.test>", "250 2.1.5"),
        ("<x@INBOUND.test>", "250 2.1.5"),
    ];
    for (rcpt, expected) in cases {
        let mut h = Harness::new(ListenerKind::Relay, false, false);
        let out =
            h.send(format!("EHLO c\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:{rcpt}\r\n").as_bytes());
        assert_eq!(codes(&out).last(), Some(&expected), "{rcpt}: {out}");
    }
}

#[test]
fn smuggling_variants_close_without_queueing() {
    let variants: [&[u8]; 9] = [
        b"\n.\n",
        b"\n.\r\n",
        b"\r.\n",
        b"\r.\r",
        b"\r\n.\n",
        b"\r\n.\r",
        b"\r\n.\r\r\n",
        b"\r\r\n.\r\r\n",
        b"\r\n\x00.\r\n",
    ];
    for v in variants {
        let mut h = Harness::new(ListenerKind::Relay, true, false);
        let mut input = b"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\nSubject: x\r\n\r\nbody".to_vec();
        input.extend_from_slice(v);
        input.extend_from_slice(
            b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<v@y.test>\r\nDATA\r\nsmuggled\r\n.\r\n",
        );
        let out = h.send(&input);
        let last = *codes(&out).last().expect("a reply");
        let expected = if v.contains(&0) {
            "550 5.6.0"
        } else {
            "550 5.5.2"
        };
        assert_eq!(last, expected, "variant {v:?}: {out}");
        assert!(h.closed, "variant {v:?} must close");
        assert!(h.stored.is_empty(), "variant {v:?} queued a message");
    }
}

#[test]
fn limits_produce_precise_replies() {
    let limits = SessionLimits {
        max_message_size: 200,
        max_recipients: 2,
        max_header_size: 60,
        ..SessionLimits::default()
    };
    let mut h = Harness::with_limits(ListenerKind::Relay, true, false, limits);
    let out = h.send(b"EHLO c\r\nMAIL FROM:<a@x.test> SIZE=201\r\nMAIL FROM:<a@x.test> SIZE=100\r\nRCPT TO:<1@y.test>\r\nRCPT TO:<2@y.test>\r\nRCPT TO:<3@y.test>\r\n");
    assert_eq!(
        codes(&out)[1..],
        [
            "552 5.3.4",
            "250 2.1.0",
            "250 2.1.5",
            "250 2.1.5",
            "452 4.5.3"
        ]
    );
    let mut big = b"DATA\r\nSubject: x\r\n\r\n".to_vec();
    big.extend_from_slice(&[b'a'; 150]);
    big.extend_from_slice(b"\r\n");
    big.extend_from_slice(&[b'a'; 150]);
    big.extend_from_slice(b"\r\n.\r\n");
    let out = h.send(&big);
    assert!(
        out.ends_with("552 5.3.4 Message size exceeds fixed maximum message size\r\n"),
        "{out}"
    );
    let out = h.send(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<1@y.test>\r\nDATA\r\nX-A: 0123456789012345678901234567890123456789\r\nX-B: 0123456789012345678901234567890123456789\r\n\r\nb\r\n.\r\n");
    assert!(
        out.ends_with("552 5.3.4 Message header section too large\r\n"),
        "{out}"
    );
    let mut long = b"MAIL FROM:<a@x.test>\r\nRCPT TO:<1@y.test>\r\nDATA\r\n\r\n".to_vec();
    long.extend_from_slice(&[b'b'; 999]);
    long.extend_from_slice(b"\r\n.\r\n");
    let mut h2 = Harness::new(ListenerKind::Relay, true, false);
    h2.send(b"EHLO c\r\n");
    let out = h2.send(&long);
    assert!(codes(&out).last() == Some(&"550 5.6.0"), "{out}");
    assert!(h.stored.is_empty() && h2.stored.is_empty());

    let mut h3 = Harness::new(ListenerKind::Relay, true, false);
    let mut line = b"NOOP ".to_vec();
    line.extend_from_slice(&[b'x'; 600]);
    line.extend_from_slice(b"\r\nNOOP\r\nNOOP\nNOOP\r\n");
    let out = h3.send(&line);
    assert_eq!(
        codes(&out),
        ["500 5.5.2", "250 2.0.0", "500 5.5.2", "250 2.0.0"]
    );
}

#[test]
fn too_many_bad_commands_disconnects() {
    let mut h = Harness::new(ListenerKind::Relay, false, false);
    let out = h.send(&b"FOO\r\n".repeat(12));
    assert_eq!(codes(&out).last(), Some(&"421 4.7.0"));
    assert!(h.closed);
}

#[test]
fn bdat_chunks_form_one_message() {
    let mut h = Harness::new(ListenerKind::Relay, true, false);
    let out = h.send(b"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nBDAT 28\r\nFrom: a@x.test\r\nSubject: x\r\nBDAT 9 LAST\r\n\r\nhello\r\n");
    assert_eq!(codes(&out)[1..4], ["250 2.1.0", "250 2.1.5", "250 2.0.0"]);
    assert!(out.contains("queued as"), "{out}");
    assert!(String::from_utf8_lossy(&h.stored[0].1).ends_with("Subject: x\r\n\r\nhello\r\n"));
    // BDAT without a transaction: the chunk is consumed, then refused, and the session stays in sync.
    let out = h.send(b"BDAT 6 LAST\r\nQUIT\r\nNOOP\r\n");
    assert_eq!(codes(&out), ["503 5.5.1", "250 2.0.0"]);
}

#[test]
fn dsn_parameters_are_recorded() {
    let mut h = Harness::new(ListenerKind::Relay, true, false);
    h.send(b"EHLO c\r\nMAIL FROM:<a@x.test> RET=HDRS ENVID=abc123\r\nRCPT TO:<b@y.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@y.test\r\nDATA\r\nFrom: a@x.test\r\n\r\nx\r\n.\r\n");
    let env = &h.stored[0].0;
    assert_eq!(env.ret, Some(baton_domain::Ret::Hdrs));
    assert_eq!(env.envid.as_ref().map(|e| e.as_str()), Some("abc123"));
    let notify = env.recipients[0].notify.expect("notify");
    assert!(notify.success && notify.failure && !notify.delay);
    assert!(
        env.recipients[0]
            .orcpt
            .as_ref()
            .is_some_and(|o| o.to_param() == "rfc822;b@y.test")
    );
}

/// Arbitrary bytes, in arbitrary pieces, must never panic the session or make its
/// buffers grow without bound.
#[test]
fn random_input_never_panics() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xBA70);
    let fragments: [&[u8]; 16] = [
        b"EHLO x\r\n",
        b"MAIL FROM:<a@x.test>\r\n",
        b"RCPT TO:<b@y.test>\r\n",
        b"DATA\r\n",
        b"\r\n.\r\n",
        b"BDAT 5\r\n",
        b"BDAT 3 LAST\r\n",
        b"AUTH PLAIN\r\n",
        b"AUTH LOGIN\r\n",
        b"RSET\r\n",
        b"\n",
        b"\r",
        b".",
        b"\x00",
        b"STARTTLS\r\n",
        b"QUIT\r\n",
    ];
    for _ in 0..300 {
        let tls = rng.gen_bool(0.5);
        let mut h = Harness::new(ListenerKind::Relay, rng.gen_bool(0.5), tls);
        let mut input = Vec::new();
        for _ in 0..rng.gen_range(1..40) {
            if rng.gen_bool(0.7) {
                input.extend_from_slice(fragments[rng.gen_range(0..fragments.len())]);
            } else {
                let n = rng.gen_range(0..700);
                input.extend((0..n).map(|_| rng.r#gen::<u8>()));
            }
        }
        for piece in input.chunks(rng.gen_range(1..64)) {
            if h.closed {
                break;
            }
            h.send(piece);
            assert!(
                h.body.len() <= input.len() + 200,
                "body buffer grew beyond its input"
            );
        }
    }
}
