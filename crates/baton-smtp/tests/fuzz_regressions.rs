//! Inputs found by the fuzz targets (fuzz/, scripts/fuzz.sh), kept as regression tests.

mod common;

use baton_smtp::ListenerKind;
use common::{Harness, codes};

/// fuzz/smtp_session: `EHLO client\0example` was accepted and the name, NUL included, was
/// stored in the envelope and from there in the message timeline and admin output.
#[test]
fn ehlo_names_with_control_characters_are_refused_not_stored() {
    for name in [
        "client\0example",
        "mta\x10internal",
        "evil\x1b[2Jterm",
        "nel\u{85}x",
    ] {
        let mut h = Harness::new(ListenerKind::Relay, false, false);
        let out = h.send(format!("EHLO {name}\r\nHELO {name}\r\n").as_bytes());
        assert_eq!(codes(&out), ["501 5.5.4", "501 5.5.4"], "{name:?}: {out}");
        let out = h.send(
            b"EHLO client.example\r\nMAIL FROM:<a@client.example>\r\nRCPT TO:<b@inbound.test>\r\n\
              DATA\r\nFrom: a@client.example\r\n\r\nhi\r\n.\r\n",
        );
        assert_eq!(codes(&out).last(), Some(&"250 2.0.0"), "{out}");
        assert_eq!(h.stored.len(), 1);
        assert_eq!(h.stored[0].0.helo, "client.example");
    }
}

/// fuzz/smtp_session: the full crash input, on the relay listener, read line by line.
#[test]
fn the_stored_envelope_of_the_crash_input_has_a_clean_helo() {
    let mut h = Harness::new(ListenerKind::Relay, false, false);
    h.send(
        b"EHLO client\0example\r\nMAIL FROM:<sender@client.example> SIZE=300 ENVID=QQ+2B314159 \
          RET=HDRS BODY=8BITMIME\r\nRCPT TO:<bob@inbound.test>\r\nDATA\r\n\
          From: Sender <sender@client.example>\r\n\r\nbody\r\n.\r\nQUIT\r\n",
    );
    assert!(h.stored.iter().all(|(env, _)| !env.helo.contains('\0')));
}
