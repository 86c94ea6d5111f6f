//! Target 1: an SMTP conversation fed in arbitrary pieces to `baton_smtp::Session`, with the
//! events answered the way the gateway answers them.
//!
//! Input: byte 0 chooses the set-up (listener kind, trusted network, TLS at connect, small
//! limits, storage failure on commit), byte 1 seeds the piece sizes (0: one read per line), the rest
//! is what the client sends. Checked, besides "no panic":
//! - the output is only well-formed reply lines (`DDD[ -]text\r\n`, UTF-8, no control
//!   character in the text), each `take_output` ends on a final line, continuation lines
//!   carry the code of the line that ends them;
//! - the events follow the gateway contract (one message open at a time, body octets only
//!   inside one, `NeedInput` only once all input is used);
//! - a stored body has no NUL, bare CR or bare LF, and its size is the envelope's `size`;
//! - a stored envelope's ENVID and ORCPT (and HELO, addresses) hold no control character,
//!   and re-encode to values that decode to the same thing;
//! - relay control and sender ownership: without AUTH or a trusted network only accepted
//!   domains, without routing tricks; a submission listener never stores unauthenticated
//!   mail; an authenticated sender's MAIL FROM is in its tenant's domains;
//! - live heap memory stays within a bound set by the limits and the piece size, not by the
//!   length of the conversation.

use std::sync::Arc;

use baton_domain::{Domain, EnvId, Envelope, Identity, OriginalRecipient, QueueId, TenantId};
use baton_smtp::{
    AuthOutcome, Event, ListenerKind, PeerInfo, Session, SessionConfig, SessionLimits, TlsInfo,
};

use crate::meter;

#[derive(Debug, Clone, Copy)]
struct Setup {
    listener: ListenerKind,
    trusted: bool,
    tls: bool,
    small_limits: bool,
    storage_fails: bool,
}

impl Setup {
    fn from_byte(b: u8) -> Self {
        let listener = match b & 0b11 {
            1 => ListenerKind::Submission,
            2 => ListenerKind::Submissions,
            _ => ListenerKind::Relay,
        };
        Setup {
            listener,
            trusted: b & 0b100 != 0,
            // Port 465 style listeners have TLS from the first byte.
            tls: b & 0b1000 != 0 || listener == ListenerKind::Submissions,
            small_limits: b & 0b1_0000 != 0,
            storage_fails: b & 0b10_0000 != 0,
        }
    }

    fn limits(&self) -> SessionLimits {
        if self.small_limits {
            SessionLimits {
                max_message_size: 4096,
                max_recipients: 3,
                max_command_line: 512,
                max_text_line: 78,
                max_header_size: 1024,
                max_bad_commands: 3,
            }
        } else {
            SessionLimits::default()
        }
    }
}

fn tls_info() -> TlsInfo {
    TlsInfo {
        version: "TLSv1.3".into(),
        cipher: "TLS13_AES_256_GCM_SHA384".into(),
    }
}

/// How the client's bytes arrive: seed 0 is one read per line (an interactive client);
/// otherwise reads of 1..=seed octets from a small xorshift, so the same input always
/// splits the same way.
struct Pieces<'a> {
    rest: &'a [u8],
    state: u32,
    max: usize,
}

impl<'a> Pieces<'a> {
    fn new(input: &'a [u8], seed: u8) -> Self {
        Pieces {
            rest: input,
            state: u32::from(seed).wrapping_mul(0x9E37_79B9) | 1,
            max: usize::from(seed),
        }
    }
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let n = if self.max == 0 {
            memchr_lf(self.rest).map_or(self.rest.len(), |i| i + 1)
        } else {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 17;
            self.state ^= self.state << 5;
            1 + (self.state as usize) % self.max
        };
        let (piece, rest) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = rest;
        Some(piece)
    }
}

fn memchr_lf(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

/// What the harness knows about the message being received.
struct OpenMessage {
    /// Octets stored so far: the Received: header, then the body.
    size: u64,
    /// The previous body octet, to see CR/LF pairs across `advance` calls.
    prev: Option<u8>,
}

struct Harness {
    setup: Setup,
    limits: SessionLimits,
    session: Session,
    message: Option<OpenMessage>,
    /// Reused for body octets; emptied after every `advance`.
    chunk: Vec<u8>,
    closed: bool,
}

const HOSTNAME: &str = "mx.test";
const ACCEPTED: &str = "inbound.test";
const TENANT_DOMAIN: &str = "acme.test";

impl Harness {
    fn new(setup: Setup) -> Self {
        let limits = setup.limits();
        let config = Arc::new(SessionConfig {
            hostname: HOSTNAME.into(),
            listener: setup.listener,
            limits: limits.clone(),
            accept_domains: vec![Domain::parse(ACCEPTED).expect("domain")],
            received: Default::default(),
            // As the gateway's defaults: submission normalises bare LF, the relay refuses it.
            normalize_bare_lf: setup.listener != ListenerKind::Relay,
            return_paths: None,
        });
        let peer = PeerInfo {
            ip: "192.0.2.1".parse().expect("ip"),
            trusted_network: setup.trusted,
        };
        let mut session = Session::new(config, peer, setup.tls.then(tls_info));
        session.greet();
        let greeting = session.take_output();
        assert_eq!(greeting, b"220 mx.test ESMTP Baton\r\n");
        Harness {
            setup,
            limits,
            session,
            message: None,
            chunk: Vec::with_capacity(64),
            closed: false,
        }
    }

    /// Feeds one piece (one read of the gateway), answering events until it is used up.
    fn feed(&mut self, piece: &[u8]) {
        let mut pos = 0;
        loop {
            let (n, event) = self.session.advance(&piece[pos..], &mut self.chunk);
            pos += n;
            assert!(
                pos <= piece.len(),
                "advance consumed more than it was given"
            );
            self.take_body();
            let out = self.session.take_output();
            trace(|| {
                format!(
                    "C: {:?}\nS: {:?}\n   -> {event:?}",
                    &piece[pos - n..pos],
                    String::from_utf8_lossy(&out)
                )
            });
            check_output(&out);
            match event {
                Event::NeedInput => {
                    assert_eq!(pos, piece.len(), "NeedInput with input left over");
                    return;
                }
                Event::MessageStart => {
                    assert!(self.message.is_none(), "MessageStart with a message open");
                    let header = self.session.begin_message(
                        QueueId::generate(),
                        "Thu, 1 Jan 2026 00:00:00 +0000",
                        1_767_225_600,
                    );
                    check_received_header(&header);
                    self.message = Some(OpenMessage {
                        size: header.len() as u64,
                        prev: None,
                    });
                }
                Event::MessageComplete(env) => {
                    let open = self
                        .message
                        .take()
                        .expect("MessageComplete with no message");
                    assert_ne!(open.prev, Some(b'\r'), "stored body ends in a bare CR");
                    assert_eq!(env.size, open.size, "envelope size is not the stored size");
                    self.check_envelope(&env);
                    let outcome = if self.setup.storage_fails {
                        Err(baton_smtp::canned::storage_failure())
                    } else {
                        Ok(env.queue_id)
                    };
                    drop(env);
                    self.session.message_outcome(outcome);
                }
                Event::MessageAborted => {
                    assert!(
                        self.message.take().is_some(),
                        "MessageAborted with no message"
                    );
                }
                Event::Authenticate(c) => {
                    let outcome = match c.password.as_str() {
                        "good" => AuthOutcome::Success(Identity {
                            user: c.username,
                            tenant: TenantId("acme".into()),
                            domains: vec![Domain::parse(TENANT_DOMAIN).expect("domain")],
                        }),
                        "locked" => AuthOutcome::Locked,
                        _ => AuthOutcome::Failure,
                    };
                    self.session.auth_outcome(outcome);
                }
                Event::StartTls => {
                    // The gateway drops whatever followed STARTTLS in the same read.
                    assert!(!self.session.is_tls(), "STARTTLS offered twice");
                    self.session.tls_established(tls_info());
                    assert!(self.session.identity().is_none() && !self.session.has_transaction());
                    return;
                }
                Event::Close => {
                    self.closed = true;
                    return;
                }
            }
            check_output(&self.session.take_output());
        }
    }

    /// Checks the body octets of the last `advance` and forgets them (as a blob writer would).
    fn take_body(&mut self) {
        if self.chunk.is_empty() {
            return;
        }
        let open = self
            .message
            .as_mut()
            .expect("body octets with no message open");
        for &b in &self.chunk {
            assert_ne!(b, 0, "NUL stored in a body");
            match (open.prev, b) {
                (Some(b'\r'), b'\n') => {}
                (Some(b'\r'), _) => panic!("bare CR stored in a body"),
                (_, b'\n') => panic!("bare LF stored in a body"),
                _ => {}
            }
            open.prev = Some(b);
        }
        open.size += self.chunk.len() as u64;
        self.chunk.clear();
    }

    fn check_envelope(&self, env: &Envelope) {
        let n = env.recipients.len();
        assert!(n >= 1 && n <= self.limits.max_recipients, "{n} recipients");
        assert!(
            env.size <= self.limits.max_message_size + 1024,
            "size {}",
            env.size
        );
        assert!(
            no_controls(&env.helo),
            "HELO with a control: {:?}",
            env.helo
        );
        if let Some(id) = &env.envid {
            check_envid(id);
        }
        let authenticated = env.auth_user.is_some();
        assert_eq!(authenticated, env.tenant.is_some());
        if self.setup.listener.requires_auth() && !self.setup.trusted {
            assert!(authenticated, "submission stored mail without AUTH");
        }
        if let Some(from) = &env.mail_from {
            assert!(no_controls(&from.to_string()), "MAIL FROM {from:?}");
            assert!(
                env.smtputf8 || from.is_ascii(),
                "non-ASCII sender without SMTPUTF8"
            );
            if authenticated {
                assert_eq!(
                    from.domain().to_string(),
                    TENANT_DOMAIN,
                    "authenticated sender outside its tenant's domains"
                );
            }
        }
        for r in &env.recipients {
            let addr = &r.address;
            assert!(no_controls(&addr.to_string()), "RCPT TO {addr:?}");
            assert!(
                env.smtputf8 || addr.is_ascii(),
                "non-ASCII recipient without SMTPUTF8"
            );
            if let Some(o) = &r.orcpt {
                check_orcpt(o);
            }
            if !authenticated && !self.setup.trusted {
                assert_eq!(
                    addr.domain().to_string(),
                    ACCEPTED,
                    "relayed for an unauthenticated, untrusted client"
                );
                assert!(
                    !addr.has_routing_local_part(),
                    "routing local part relayed: {addr}"
                );
            }
        }
        // What the queue stores must load again (a poison record otherwise).
        let json = serde_json::to_string(env).expect("envelope serializes");
        let back: Envelope = serde_json::from_str(&json).expect("stored envelope loads again");
        assert_eq!(&back, env, "envelope changed through its stored form");
    }
}

/// With `BATON_FUZZ_TRACE` set, prints the conversation (for reading a crash input:
/// `BATON_FUZZ_TRACE=1 target/fuzz/release/smtp_session < input`).
fn trace(what: impl FnOnce() -> String) {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("BATON_FUZZ_TRACE").is_some()) {
        eprintln!("{}", what());
    }
}

fn no_controls(s: &str) -> bool {
    !s.chars().any(char::is_control)
}

pub(crate) fn check_envid(id: &EnvId) {
    let s = id.as_str();
    assert!(s.bytes().all(|b| (0x20..=0x7e).contains(&b)), "ENVID {s:?}");
    let wire = id.to_xtext();
    assert!(
        wire.bytes().all(|b| (b'!'..=b'~').contains(&b)),
        "ENVID xtext {wire:?}"
    );
    assert_eq!(&EnvId::from_xtext(&wire).expect("ENVID re-decodes"), id);
}

pub(crate) fn check_orcpt(o: &OriginalRecipient) {
    let a = o.address();
    assert!(a.bytes().all(|b| (0x20..=0x7e).contains(&b)), "ORCPT {a:?}");
    let wire = o.to_param();
    assert!(
        !wire.bytes().any(|b| b.is_ascii_control() || b == b' '),
        "ORCPT param {wire:?}"
    );
    assert_eq!(
        &OriginalRecipient::from_param(&wire).expect("ORCPT re-decodes"),
        o
    );
    let stored = String::from(o.clone());
    assert!(no_controls(&stored));
    assert_eq!(
        &OriginalRecipient::try_from(stored).expect("ORCPT stored form loads"),
        o
    );
}

/// Every line `DDD[ -]text\r\n`; the output ends on a final line; continuation lines share
/// the code of the line that ends their reply.
pub(crate) fn check_output(out: &[u8]) {
    if out.is_empty() {
        return;
    }
    let text = std::str::from_utf8(out).expect("replies are UTF-8");
    assert!(text.ends_with("\r\n"), "output ends mid-line: {text:?}");
    let mut reply_code: Option<&str> = None;
    let mut last_final = true;
    for line in text[..text.len() - 2].split("\r\n") {
        let b = line.as_bytes();
        assert!(
            b.len() >= 4 && b[..3].iter().all(u8::is_ascii_digit) && matches!(b[3], b' ' | b'-'),
            "malformed reply line {line:?}"
        );
        let code = &line[..3];
        assert!(("200"..="599").contains(&code), "reply code {code}");
        assert!(
            no_controls(&line[4..]),
            "control character in reply line {line:?}"
        );
        if let Some(c) = reply_code {
            assert_eq!(c, code, "continuation line with another code: {text:?}");
        }
        last_final = b[3] == b' ';
        reply_code = (!last_final).then_some(code);
    }
    assert!(
        last_final,
        "output ends inside a multi-line reply: {text:?}"
    );
}

/// The Received: header the gateway writes before the body: header lines with CRLF and
/// folding only, no control character a client could have slipped in (HELO, user).
fn check_received_header(h: &str) {
    assert!(h.starts_with("Received: ") && h.ends_with("\r\n"), "{h:?}");
    for (i, line) in h[..h.len() - 2].split("\r\n").enumerate() {
        assert!(
            i == 0 || line.starts_with('\t'),
            "unfolded header line {line:?}"
        );
        assert!(
            line.chars().all(|c| c == '\t' || !c.is_control()),
            "control character in Received: {line:?}"
        );
    }
}

/// Memory the session may hold at once beyond what it held at start: its line buffer (a
/// SASL line is the longest), the header section kept for the From check, the replies and
/// body octets of one piece, and some slack for the envelope and small allocations.
fn memory_bound(limits: &SessionLimits, largest_piece: usize) -> usize {
    64 * 1024
        + 2 * 12_288
        + 2 * limits.max_command_line
        + 2 * limits.max_header_size
        // EHLO's reply is ~170 octets for 8 octets of input: replies of one piece ≤ 32×.
        + 34 * largest_piece
}

pub fn run(data: &[u8]) {
    let [setup, seed, input @ ..] = data else {
        return;
    };
    let setup = Setup::from_byte(*setup);
    let base = meter::live();
    meter::reset_peak();
    let mut h = Harness::new(setup);
    let mut largest = 0;
    for piece in Pieces::new(input, *seed) {
        largest = largest.max(piece.len());
        h.feed(piece);
        let bound = memory_bound(&h.limits, largest);
        let used = meter::peak().saturating_sub(base);
        assert!(
            used <= bound,
            "session used {used} bytes of heap (bound {bound})"
        );
        if h.closed {
            // A closed session stays closed and says nothing more.
            let (n, event) = h.session.advance(b"NOOP\r\n", &mut h.chunk);
            assert!(
                n == 0 && matches!(event, Event::Close),
                "closed session read on"
            );
            assert!(!h.session.has_output());
            break;
        }
    }
}
