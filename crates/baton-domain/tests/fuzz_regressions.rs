//! Inputs found by the fuzz targets (fuzz/, scripts/fuzz.sh), kept as regression tests.

use baton_domain::{Domain, Mailbox, Path};

/// fuzz/address: U+0085 (NEL) and the other C1 controls passed as "non-ASCII text" in
/// local parts and domains, quoted or not, and so reached envelopes, Received: and logs.
#[test]
fn c1_controls_are_refused_in_addresses() {
    for raw in [
        "<podtma\u{85}ster@[IPv6:2001:db8::1]>",
        "<@good.test,@b.test:\u{85}x@fvil.test>",
        "<x@evil.\u{85}st>",
        "<\"\u{85}\"@go.example>",
        "<a\u{9b}b@example.org>",
    ] {
        assert!(Path::parse(raw, true).is_err(), "{raw:?}");
    }
    assert!(Domain::parse("\u{85}").is_err());
    assert!(Mailbox::parse("j\u{fc}rgen@b\u{fc}cher.example").is_ok());
}

/// Lower-casing lengthens some characters (`Ⱥ` U+023A is 2 octets, `ⱥ` U+2C65 is 3): a
/// label of 31 `Ⱥ` passed the 63-octet check before lower-casing and was stored as 93
/// octets, which no longer parsed, so the envelope holding it could not be loaded again.
#[test]
fn a_domain_is_checked_as_stored_and_round_trips() {
    let label = "\u{23a}".repeat(31);
    // 93 octets once lower-cased: over the 63-octet label limit, so refused at input.
    assert!(Domain::parse(&label).is_err());
    assert!(Path::parse(&format!("<a@{label}>"), true).is_err());
    let long = format!("{}.example", "\u{23a}".repeat(20)).repeat(5);
    if let Ok(d) = Domain::parse(&long) {
        assert_eq!(Domain::parse(&d.to_string()), Ok(d));
    }
    let m = Mailbox::parse(&format!("a@{}", "\u{130}".repeat(30))).ok();
    if let Some(m) = m {
        let json = serde_json::to_string(&m).expect("serializes");
        assert_eq!(
            serde_json::from_str::<Mailbox>(&json).expect("loads again"),
            m
        );
    }
}
