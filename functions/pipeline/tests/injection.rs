//! Command injection through DSN parameters, from the client that sends them to the next hop
//! that would obey: arbitrary ENVID and ORCPT octets go through the real SMTP session (as a
//! client would send them), and whatever envelope it accepts goes through the outbound
//! client to a next hop that logs every line. The hop must see exactly the commands the
//! client meant to send: one MAIL, one RCPT per recipient, never a line more.

#[path = "../../../crates/baton-smtp/tests/common/mod.rs"]
mod harness;
mod nexthop;

use std::time::Duration;

use baton_domain::{EnvId, OriginalRecipient};
use baton_pipeline::outbound::LiteralResolver;
use baton_pipeline::outbound::{Message, Outcome, RcptSpec, deliver};
use baton_smtp::ListenerKind;
use harness::Harness;
use nexthop::{Hop, Script, client};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Octets that matter to xtext and to SMTP lines, the encoded forms of CR, LF and NUL, and
/// now and then any octet at all; or (`clean`) only pieces a session accepts, so that many
/// cases reach the next hop.
fn arbitrary(rng: &mut StdRng, raw_controls: bool, clean: bool) -> Vec<u8> {
    const CLEAN: &[&[u8]] = &[
        b"+2B", b"+3D", b"+20", b"+2b", b"x", b"@", b"<", b">", b";", b"RCPT", b"RSET", b"~",
    ];
    if clean {
        return (0..rng.gen_range(1..8))
            .flat_map(|_| CLEAN[rng.gen_range(0..CLEAN.len())].to_vec())
            .collect();
    }
    const PIECES: &[&[u8]] = &[
        b"+0D",
        b"+0A",
        b"+0d+0a",
        b"+00",
        b"+2B",
        b"+3D",
        b"+20",
        b"+",
        b"=",
        b";",
        b" ",
        b"RCPT TO:<victim@elsewhere.test>",
        b"RSET",
        b"rfc822;",
        b"x",
        b"@",
        b"<",
        b">",
        b"+7F",
        b"+FF",
        b"+C3+A9",
        b"DATA",
        b"+0",
    ];
    let mut out = Vec::new();
    for _ in 0..rng.gen_range(1..8) {
        if rng.gen_bool(0.15) {
            let b: u8 = rng.r#gen();
            if raw_controls || !matches!(b, b'\r' | b'\n') {
                out.push(b);
            }
        } else {
            out.extend_from_slice(PIECES[rng.gen_range(0..PIECES.len())]);
        }
    }
    if raw_controls && rng.gen_bool(0.3) {
        out.extend_from_slice(b"\r\nRSET");
    }
    out
}

#[tokio::test]
async fn arbitrary_dsn_parameters_never_add_a_command_at_the_next_hop() {
    let mut rng = StdRng::seed_from_u64(0xdead_beef_0d0a);
    let (mut accepted, mut delivered) = (0, 0);
    for case in 0..300 {
        let envid = arbitrary(&mut rng, case % 4 == 3, case % 4 == 1);
        let orcpt = arbitrary(&mut rng, case % 4 == 3, case % 4 == 1);
        let mut h = Harness::new(ListenerKind::Relay, false, false);
        h.send(b"EHLO client.test\r\n");
        let mut mail = b"MAIL FROM:<a@sender.test> ENVID=".to_vec();
        mail.extend_from_slice(&envid);
        mail.extend_from_slice(b"\r\n");
        h.send(&mail);
        let mut rcpt = b"RCPT TO:<bob@inbound.test> NOTIFY=FAILURE ORCPT=rfc822;".to_vec();
        rcpt.extend_from_slice(&orcpt);
        rcpt.extend_from_slice(b"\r\n");
        h.send(&rcpt);
        h.send(b"RCPT TO:<carol@inbound.test>\r\n");
        h.send(b"DATA\r\n");
        h.send(b"From: a@sender.test\r\nSubject: x\r\n\r\nhi\r\n.\r\n");
        let Some((envelope, body)) = h.stored.pop() else {
            continue;
        };
        accepted += 1;

        let hop = Hop::start(Script::default()).await;
        let recipients: Vec<RcptSpec> = envelope
            .recipients
            .iter()
            .map(|r| RcptSpec {
                address: r.address.to_string(),
                notify: r.notify.map(|_| "FAILURE".into()),
                orcpt: r.orcpt.clone(),
            })
            .collect();
        let sender = envelope.mail_from.as_ref().map(ToString::to_string);
        let msg = Message {
            mail_from: sender.as_deref(),
            recipients,
            prefix: b"",
            body: &body,
            smtputf8: envelope.smtputf8,
            eight_bit: false,
            envid: envelope.envid.as_ref(),
            ret_hdrs: None,
        };
        let results = deliver(
            "inbound.test",
            &msg,
            &LiteralResolver,
            &[hop.route(None)],
            &client(Duration::from_secs(5)),
        )
        .await;
        let context = format!("case {case}: ENVID {envid:?} ORCPT {orcpt:?}");
        if results.iter().all(|r| r.outcome == Outcome::Delivered) {
            delivered += 1;
        }

        // Exactly the commands the client sends, in order, and nothing else.
        let commands = hop.commands();
        let verbs: Vec<&str> = commands
            .iter()
            .map(|c| c.split([' ', ':']).next().unwrap_or(""))
            .collect();
        let mut expected = vec!["EHLO", "MAIL"];
        expected.extend(std::iter::repeat_n("RCPT", envelope.recipients.len()));
        expected.extend(["DATA", "QUIT"]);
        assert_eq!(verbs, expected, "{context}: the hop saw {commands:?}");
        for line in &commands {
            assert!(
                line.bytes().all(|b| b >= 0x20 && b != 0x7f),
                "{context}: control octet in {line:?}"
            );
        }
        // What arrived is what was accepted, encoded.
        let mail_line = &commands[1];
        let sent_envid = mail_line
            .split(' ')
            .find_map(|p| p.strip_prefix("ENVID="))
            .map(|v| EnvId::from_xtext(v).expect("ENVID as sent is valid xtext"));
        assert_eq!(sent_envid.as_ref(), envelope.envid.as_ref(), "{context}");
        for (line, r) in commands[2..].iter().zip(&envelope.recipients) {
            let sent_orcpt = line
                .split(' ')
                .find_map(|p| p.strip_prefix("ORCPT="))
                .map(|v| OriginalRecipient::from_param(v).expect("ORCPT as sent parses"));
            assert_eq!(sent_orcpt.as_ref(), r.orcpt.as_ref(), "{context}");
        }
    }
    // The property is only worth something if many random parameters made it through.
    assert!(accepted >= 80, "only {accepted} of 300 cases were accepted");
    assert_eq!(delivered, accepted);
}
