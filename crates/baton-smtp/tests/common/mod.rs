//! The scripted-conversation harness shared by the session tests.
#![allow(dead_code)]

use std::sync::Arc;

use baton_domain::{Domain, Envelope, Identity, QueueId, TenantId};
use baton_smtp::{
    AuthOutcome, Event, ListenerKind, PeerInfo, ReturnPaths, Session, SessionConfig, SessionLimits,
    TlsInfo,
};

pub struct Harness {
    pub session: Session,
    pub output: String,
    pub body: Vec<u8>,
    pub stored: Vec<(Envelope, Vec<u8>)>,
    pub aborted: usize,
    pub closed: bool,
    pub starttls_requested: bool,
}

impl Harness {
    pub fn new(listener: ListenerKind, trusted: bool, tls: bool) -> Self {
        Self::with_limits(listener, trusted, tls, SessionLimits::default())
    }

    pub fn with_limits(
        listener: ListenerKind,
        trusted: bool,
        tls: bool,
        limits: SessionLimits,
    ) -> Self {
        Self::with_config(listener, trusted, tls, limits, None)
    }

    /// An untrusted client without TLS, where bounces come back to `paths`.
    pub fn with_return_paths(listener: ListenerKind, paths: ReturnPaths) -> Self {
        Self::with_config(
            listener,
            false,
            false,
            SessionLimits::default(),
            Some(paths),
        )
    }

    /// An allow-listed client without TLS, where bounces come back to `paths`.
    pub fn with_return_paths_trusted(listener: ListenerKind, paths: ReturnPaths) -> Self {
        Self::with_config(listener, true, false, SessionLimits::default(), Some(paths))
    }

    fn with_config(
        listener: ListenerKind,
        trusted: bool,
        tls: bool,
        limits: SessionLimits,
        return_paths: Option<ReturnPaths>,
    ) -> Self {
        let config = Arc::new(SessionConfig {
            hostname: "mx.test".into(),
            listener,
            limits,
            accept_domains: vec![Domain::parse("inbound.test").expect("domain")],
            received: Default::default(),
            // As the gateway's defaults: submission normalises bare LF, the relay refuses it.
            normalize_bare_lf: listener != ListenerKind::Relay,
            return_paths,
        });
        let peer = PeerInfo {
            ip: "192.0.2.1".parse().expect("ip"),
            trusted_network: trusted,
        };
        let mut session = Session::new(config, peer, tls.then(tls_info));
        session.greet();
        let mut h = Harness {
            session,
            output: String::new(),
            body: Vec::new(),
            stored: Vec::new(),
            aborted: 0,
            closed: false,
            starttls_requested: false,
        };
        h.flush();
        h
    }

    fn flush(&mut self) {
        let out = self.session.take_output();
        self.output
            .push_str(&String::from_utf8(out).expect("utf8 replies"));
    }

    /// Feeds input, answering events the way a well-behaved gateway would.
    pub fn send(&mut self, input: &[u8]) -> String {
        self.output.clear();
        let mut pos = 0;
        let mut chunk = Vec::new();
        loop {
            let (n, event) = self.session.advance(&input[pos..], &mut chunk);
            pos += n;
            self.body.append(&mut chunk);
            self.flush();
            match event {
                Event::NeedInput => {
                    if pos >= input.len() {
                        break;
                    }
                }
                Event::MessageStart => {
                    let header = self.session.begin_message(
                        QueueId::generate(),
                        "Thu, 1 Jan 2026 00:00:00 +0000",
                        0,
                    );
                    self.body = header.into_bytes();
                }
                Event::MessageComplete(env) => {
                    let id = env.queue_id;
                    self.stored.push((*env, std::mem::take(&mut self.body)));
                    self.session.message_outcome(Ok(id));
                }
                Event::MessageAborted => {
                    self.aborted += 1;
                    self.body.clear();
                }
                Event::Authenticate(c) => {
                    let outcome = if c.password == "good" {
                        AuthOutcome::Success(Identity {
                            user: c.username,
                            tenant: TenantId("acme".into()),
                            domains: vec![Domain::parse("acme.test").expect("domain")],
                        })
                    } else {
                        AuthOutcome::Failure
                    };
                    self.session.auth_outcome(outcome);
                }
                Event::StartTls => {
                    // The gateway discards whatever followed STARTTLS in the same read.
                    self.starttls_requested = true;
                    self.session.tls_established(tls_info());
                    break;
                }
                Event::Close => {
                    self.closed = true;
                    break;
                }
            }
            self.flush();
        }
        self.flush();
        self.output.clone()
    }
}

pub fn tls_info() -> TlsInfo {
    TlsInfo {
        version: "TLSv1.3".into(),
        cipher: "TLS13_AES_256_GCM_SHA384".into(),
    }
}

pub fn codes(out: &str) -> Vec<&str> {
    out.lines()
        .filter(|l| l.len() >= 4 && l.as_bytes()[3] == b' ')
        .map(|l| match l.match_indices(' ').nth(1) {
            Some((i, _)) => &l[..i],
            None => l,
        })
        .collect()
}
