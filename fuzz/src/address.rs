//! Target 2: the address and DSN-parameter parsers of `baton_domain`. Every parser sees the
//! same text (the input, if it is UTF-8). Checked, besides "no panic":
//! - `Domain`, `Mailbox`: what Display prints parses back to the same value (this is also
//!   the stored form: an envelope that does not load again is a poison queue record), and
//!   holds no control character;
//! - `Path`: a parsed mailbox is ASCII unless SMTPUTF8, re-parses from `<mailbox>`, and a
//!   source route is only reported for `<@...`;
//! - ENVID / ORCPT / xtext: decoded values are printable US-ASCII within their limits,
//!   encode(decode(x)) decodes to the same value, and the stored forms load again.

use baton_domain::{Domain, EnvId, Mailbox, OriginalRecipient, Path, XText, split_path_argument};

use crate::smtp_session::{check_envid, check_orcpt};

fn no_controls(s: &str) -> bool {
    !s.chars().any(char::is_control)
}

fn check_domain(d: &Domain) {
    let shown = d.to_string();
    assert!(no_controls(&shown), "domain {shown:?}");
    assert_eq!(
        Domain::parse(&shown).as_ref(),
        Ok(d),
        "domain {shown:?} does not parse back to itself"
    );
    if let Some(name) = d.name() {
        assert!(!name.ends_with('.') && !name.is_empty(), "{name:?}");
        assert_eq!(name, name.to_lowercase(), "domain not lower-cased");
    }
}

fn check_mailbox(m: &Mailbox) {
    let shown = m.to_string();
    assert!(no_controls(&shown), "mailbox {shown:?}");
    assert!(
        !m.local().is_empty() && m.local().len() <= 64,
        "local part {:?}",
        m.local()
    );
    check_domain(m.domain());
    assert_eq!(
        Mailbox::parse(&shown).as_ref(),
        Ok(m),
        "mailbox {shown:?} does not parse back to itself"
    );
}

fn check_path(raw: &str, utf8: bool) {
    let Ok(p) = Path::parse(raw, utf8) else {
        return;
    };
    if p.had_source_route {
        assert!(raw.starts_with("<@"), "source route reported for {raw:?}");
    }
    match &p.mailbox {
        None => assert_eq!(raw, "<>"),
        Some(m) => {
            check_mailbox(m);
            assert!(
                utf8 || m.is_ascii(),
                "non-ASCII mailbox without SMTPUTF8: {raw:?}"
            );
            let again = Path::parse(&format!("<{m}>"), utf8).expect("<mailbox> parses again");
            assert_eq!(again.mailbox.as_ref(), Some(m));
            assert!(!again.had_source_route);
        }
    }
}

pub fn run(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = Domain::parse(s) {
        check_domain(&d);
    }
    if let Ok(m) = Mailbox::parse(s) {
        check_mailbox(&m);
    }
    check_path(s, false);
    check_path(s, true);
    if let Some((path, rest)) = split_path_argument(s) {
        assert!(path.starts_with('<') && path.ends_with('>'), "{path:?}");
        assert_eq!(path.len() + rest.len(), s.len());
    }
    if let Ok(id) = EnvId::from_xtext(s) {
        assert!(id.as_str().len() <= 100);
        check_envid(&id);
    }
    if let Ok(id) = EnvId::try_from(s.to_string()) {
        check_envid(&id);
        assert_eq!(String::from(id), s, "stored ENVID changed");
    }
    if let Ok(o) = OriginalRecipient::from_param(s) {
        assert!(o.address().len() <= 256);
        check_orcpt(&o);
    }
    if let Ok(o) = OriginalRecipient::try_from(s.to_string()) {
        check_orcpt(&o);
    }
    if let Ok(x) = XText::new(s, 1000) {
        let wire = x.encode();
        assert_eq!(
            XText::decode(&wire, 1000).as_ref(),
            Ok(&x),
            "xtext {wire:?}"
        );
        assert_eq!(x.as_str(), s);
    }
    if let Ok(x) = XText::decode(s, 1000) {
        assert!(
            x.as_str().bytes().all(|b| (0x20..=0x7e).contains(&b)),
            "{x:?}"
        );
        assert_eq!(XText::decode(&x.encode(), 1000).as_ref(), Ok(&x));
    }
}
