//! The outbound client against a scripted next hop: hostile replies, the streamed body,
//! AUTH to a smarthost only over TLS.

mod nexthop;

use std::time::{Duration, Instant};

use baton_pipeline::outbound::LiteralResolver;
use baton_pipeline::outbound::{Credentials, Message, Outcome, RcptResult, RcptSpec, deliver};
use nexthop::{Hop, Script, client};

fn message<'a>(prefix: &'a [u8], body: &'a [u8]) -> Message<'a> {
    Message {
        mail_from: Some("news@acme.test"),
        recipients: vec![RcptSpec {
            address: "bob@example.org".into(),
            notify: None,
            orcpt: None,
        }],
        prefix,
        body,
        smtputf8: false,
        eight_bit: false,
        envid: None,
        ret_hdrs: None,
    }
}

async fn send_to(hop: &Hop, auth: Option<Credentials>, body: &[u8]) -> (RcptResult, Duration) {
    let started = Instant::now();
    let msg = message(b"X-Added: yes\r\n", body);
    let mut results = deliver(
        "example.org",
        &msg,
        &LiteralResolver,
        &[hop.route(auth)],
        &client(Duration::from_secs(10)),
    )
    .await;
    assert_eq!(results.len(), 1);
    (results.remove(0), started.elapsed())
}

/// A next hop that requires AUTH as relay-user with `password`, offering STARTTLS or not.
async fn auth_hop(starttls: bool, password: &str) -> Hop {
    Hop::start(Script {
        starttls,
        auth: Some(("relay-user".into(), password.into())),
        ..Script::default()
    })
    .await
}

const BODY: &[u8] = b"From: news@acme.test\r\nSubject: hi\r\n\r\nhello\r\n";

#[tokio::test]
async fn a_megabyte_greeting_line_without_lf_is_a_prompt_protocol_error() {
    let mut greeting = b"220 ".to_vec();
    greeting.resize(1 << 20, b'a');
    let hop = Hop::start(Script {
        greeting,
        ..Script::default()
    })
    .await;
    let (r, took) = send_to(&hop, None, BODY).await;
    assert_eq!(r.outcome, Outcome::Deferred, "{r:?}");
    assert_eq!(
        (r.code, r.enhanced.as_deref()),
        (451, Some("4.5.0")),
        "{r:?}"
    );
    assert!(r.text.contains("longer than 4096 octets"), "{r:?}");
    // Not the 10 s command timeout: the line limit decided.
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[tokio::test]
async fn a_greeting_of_ten_thousand_lines_is_a_prompt_protocol_error() {
    let mut greeting = b"220-x\r\n".repeat(10_000);
    greeting.extend_from_slice(b"220 ok\r\n");
    let hop = Hop::start(Script {
        greeting,
        ..Script::default()
    })
    .await;
    let (r, took) = send_to(&hop, None, BODY).await;
    assert_eq!(r.outcome, Outcome::Deferred, "{r:?}");
    assert_eq!(r.enhanced.as_deref(), Some("4.5.0"), "{r:?}");
    assert!(r.text.contains("longer than 100 lines"), "{r:?}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(hop.commands().is_empty(), "{:?}", hop.commands());
}

#[tokio::test]
async fn a_greeting_that_is_not_utf8_is_read_and_the_message_delivered() {
    let hop = Hop::start(Script {
        greeting: b"220 hop.test \xff\xfe\xc3 ESMTP \x80\r\n".to_vec(),
        ..Script::default()
    })
    .await;
    let (r, _) = send_to(&hop, None, BODY).await;
    assert_eq!(r.outcome, Outcome::Delivered, "{r:?}");
    assert_eq!(hop.messages().len(), 1);
}

/// A body larger than several chunks, with dots at line starts everywhere (chunk starts
/// included), arrives exactly: prefix first, every leading dot doubled on the wire.
#[tokio::test]
async fn a_large_body_streams_dot_stuffed_after_the_prefix() {
    let mut body = b"From: news@acme.test\r\nSubject: dots\r\n\r\n".to_vec();
    let mut i = 0u64;
    while body.len() < 300 * 1024 {
        body.extend_from_slice(format!(".line {i} .\r\n..{i}\r\nplain\r\n").as_bytes());
        i += 1;
    }
    body.extend_from_slice(b".");
    let hop = Hop::start(Script::default()).await;
    let (r, _) = send_to(&hop, None, &body).await;
    assert_eq!(r.outcome, Outcome::Delivered, "{r:?}");
    let [got] = hop.messages().try_into().expect("one message");
    let mut expected = b"X-Added: yes\r\n".to_vec();
    for line in body.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b".") {
            expected.push(b'.');
        }
        expected.extend_from_slice(line);
    }
    expected.extend_from_slice(b"\r\n");
    assert!(
        got == expected,
        "body differs ({} vs {} octets)",
        got.len(),
        expected.len()
    );
}

#[tokio::test]
async fn route_credentials_authenticate_over_starttls_and_deliver() {
    let hop = auth_hop(true, "s3cret pass").await;
    let creds = Credentials::new("relay-user", "s3cret pass");
    let (r, _) = send_to(&hop, Some(creds), BODY).await;
    assert_eq!(r.outcome, Outcome::Delivered, "{r:?}");
    let commands = hop.commands();
    let starttls = commands
        .iter()
        .position(|c| c == "STARTTLS")
        .expect("STARTTLS");
    let auth = commands
        .iter()
        .position(|c| c.starts_with("AUTH PLAIN "))
        .expect("AUTH PLAIN");
    let mail = commands
        .iter()
        .position(|c| c.starts_with("MAIL"))
        .expect("MAIL");
    assert!(starttls < auth && auth < mail, "{commands:?}");
    assert_eq!(hop.messages().len(), 1);
}

#[tokio::test]
async fn credentials_are_never_sent_to_a_target_with_an_untrusted_certificate() {
    // An active attacker answers STARTTLS with a certificate of its own: the handshake fails
    // and the password never leaves.
    let hop = auth_hop(true, "s3cret pass").await;
    let other = Hop::start(Script::default()).await;
    let route = hop.route_verified(
        Some(Credentials::new("relay-user", "s3cret pass")),
        Some(hop.trusting(&other.cert)),
    );
    let msg = message(b"", BODY);
    let results = deliver(
        "example.org",
        &msg,
        &LiteralResolver,
        &[route],
        &client(Duration::from_secs(10)),
    )
    .await;
    assert_eq!(results[0].outcome, Outcome::Deferred, "{results:?}");
    let commands = hop.commands();
    assert!(commands.iter().any(|c| c == "STARTTLS"), "{commands:?}");
    assert!(
        !commands.iter().any(|c| c.starts_with("AUTH")),
        "credentials sent to an unverified server: {commands:?}"
    );
    assert!(hop.messages().is_empty());
}

#[tokio::test]
async fn wrong_credentials_defer_and_never_bounce() {
    let hop = auth_hop(true, "right").await;
    let (r, _) = send_to(&hop, Some(Credentials::new("relay-user", "wrong")), BODY).await;
    assert_eq!(r.outcome, Outcome::Deferred, "{r:?}");
    assert!(r.text.contains("535"), "{r:?}");
    assert!(
        !r.text.contains("wrong"),
        "the password leaked into the reply: {r:?}"
    );
    assert!(hop.commands().iter().all(|c| !c.starts_with("MAIL")));
}

#[tokio::test]
async fn credentials_are_never_sent_to_a_target_without_starttls() {
    // It offers AUTH, but only in plaintext.
    let hop = auth_hop(false, "s3cret").await;
    let (r, _) = send_to(&hop, Some(Credentials::new("relay-user", "s3cret")), BODY).await;
    assert_eq!(r.outcome, Outcome::Deferred, "{r:?}");
    assert_eq!(
        (r.code, r.enhanced.as_deref()),
        (451, Some("4.7.11")),
        "{r:?}"
    );
    let lines = hop.lines();
    assert!(
        lines
            .iter()
            .all(|l| !l.to_ascii_uppercase().starts_with(b"AUTH")),
        "{:?}",
        hop.commands()
    );
    assert!(hop.commands().iter().all(|c| !c.starts_with("MAIL")));
}
