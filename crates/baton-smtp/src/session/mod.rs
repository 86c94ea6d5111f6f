//! Session state and the input loop.

mod commands;
mod params;
mod path;

use std::net::IpAddr;
use std::sync::Arc;

use baton_domain::{Domain, Envelope, Identity, Mailbox, QueueId, Recipient};

use crate::body::{BodyDecoder, BodyInspector, Progress};
use crate::reply::Reply;
use crate::sasl::Credentials;

/// The three kinds of listener. They differ in whether TLS starts at connect and whether
/// MAIL needs AUTH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// Port 587 style: STARTTLS, AUTH required (RFC 6409).
    Submission,
    /// Port 465 style: implicit TLS, AUTH required (RFC 8314).
    Submissions,
    /// Port 25 style: inbound mail for accepted domains, or relay for allow-listed networks.
    Relay,
}

impl ListenerKind {
    pub fn requires_auth(self) -> bool {
        !matches!(self, ListenerKind::Relay)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ListenerKind::Submission => "submission",
            ListenerKind::Submissions => "submissions",
            ListenerKind::Relay => "relay",
        }
    }
}

#[derive(Debug, Clone)]
pub struct SessionLimits {
    pub max_message_size: u64,
    pub max_recipients: usize,
    /// Octets including CRLF.
    pub max_command_line: usize,
    /// Octets excluding CRLF.
    pub max_text_line: usize,
    pub max_header_size: usize,
    pub max_bad_commands: u32,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            max_message_size: 50 * 1024 * 1024,
            max_recipients: 100,
            max_command_line: 512,
            max_text_line: 998,
            max_header_size: 100 * 1024,
            max_bad_commands: 10,
        }
    }
}

/// What every session of one listener shares.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub hostname: String,
    pub listener: ListenerKind,
    pub limits: SessionLimits,
    /// Domains anyone may send to without authenticating (inbound).
    pub accept_domains: Vec<Domain>,
    pub received: ReceivedFields,
    /// Take bare LF line endings in message data (stored as CRLF) instead of refusing them:
    /// for authenticated submission, where common clients (Python's smtplib with bytes)
    /// send them. CRLF "." CRLF stays the only end of data.
    pub normalize_bare_lf: bool,
    /// Bounces coming back to our return paths: accepted from anyone, only at addresses
    /// this relay made (see [`ReturnPaths`]).
    pub return_paths: Option<ReturnPaths>,
}

/// Where bounces come back: `<token>@<label>.<sending domain>`, the token made and checked by
/// `key` ([`baton_domain::VerpKey`]).
#[derive(Debug, Clone)]
pub struct ReturnPaths {
    pub key: baton_domain::VerpKey,
    /// The first label of every bounce domain, e.g. "bounce".
    pub label: String,
}

impl ReturnPaths {
    /// Whether `domain` is a bounce domain (`<label>.<something>`).
    pub fn is_bounce_domain(&self, domain: &str) -> bool {
        baton_domain::bounce_domain_parent(&self.label, domain).is_some()
    }
}

/// What the `Received:` field of an authenticated submission tells every recipient. Both
/// are off by default, as in Postfix: the user name is a valid login, the address is
/// the submitter's private network location.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReceivedFields {
    pub auth_user: bool,
    pub submission_client_ip: bool,
}

#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub ip: IpAddr,
    /// The peer is in an allow-listed network and may relay without AUTH.
    pub trusted_network: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    pub version: String,
    pub cipher: String,
}

/// The gateway's verdict on an [`Event::Authenticate`].
#[derive(Debug, Clone)]
pub enum AuthOutcome {
    Success(Identity),
    Failure,
    /// Too many failures for this address or user: the session ends.
    Locked,
    /// The user's checks are queued (many failures from many addresses): try later.
    TryLater,
}

/// What the gateway must do next. Before acting on any event it writes
/// [`Session::take_output`] to the client.
#[derive(Debug)]
pub enum Event {
    /// All input was used; read more.
    NeedInput,
    /// Do the TLS handshake now, then call [`Session::tls_established`]. Any input already
    /// buffered after the STARTTLS line must be discarded (CVE-2011-0411).
    StartTls,
    /// Check these credentials, then call [`Session::auth_outcome`].
    Authenticate(Credentials),
    /// A message body begins: create a blob and call [`Session::begin_message`]. Body octets
    /// follow in the `body` buffer of later `advance` calls.
    MessageStart,
    /// The body is complete and acceptable: make body and envelope durable, then call
    /// [`Session::message_outcome`].
    MessageComplete(Box<Envelope>),
    /// Drop the blob being written; the reply is already queued.
    MessageAborted,
    /// Close the connection once the output is written.
    Close,
}

#[derive(Debug)]
enum Phase {
    Command,
    /// Waiting for a SASL response line.
    Sasl(SaslStep),
    /// Waiting for [`Session::auth_outcome`].
    AuthPending,
    Data,
    Bdat {
        remaining: usize,
        size: usize,
        last: bool,
    },
    /// Waiting for [`Session::message_outcome`].
    CommitPending,
    TlsPending,
    Closed,
}

#[derive(Debug)]
enum SaslStep {
    Plain,
    LoginUser,
    LoginPassword(String),
}

/// One mail transaction, from MAIL to the end of the body.
#[derive(Debug)]
struct Transaction {
    mail_from: Option<Mailbox>,
    recipients: Vec<Recipient>,
    ret: Option<baton_domain::Ret>,
    envid: Option<baton_domain::EnvId>,
    body_type: baton_domain::BodyType,
    smtputf8: bool,
    /// Set once the body has begun (DATA or the first BDAT).
    body: Option<BodyState>,
    /// The client switched to BDAT; DATA is no longer allowed.
    chunking: bool,
    /// The recipients are our return paths (a bounce coming back), which go alone.
    to_return_paths: Option<bool>,
}

#[derive(Debug)]
struct BodyState {
    decoder: BodyDecoder,
    inspector: BodyInspector,
    queue_id: Option<QueueId>,
    prefix_len: u64,
    received_at: i64,
}

pub struct Session {
    config: Arc<SessionConfig>,
    peer: PeerInfo,
    phase: Phase,
    tls: Option<TlsInfo>,
    helo: Option<String>,
    esmtp: bool,
    identity: Option<Identity>,
    /// The tenant a configured network binds this client to (relay without AUTH), with
    /// its domains.
    network_tenant: Option<(baton_domain::TenantId, Vec<Domain>)>,
    txn: Option<Transaction>,
    line: Vec<u8>,
    line_overflow: bool,
    bad_commands: u32,
    out: Vec<u8>,
}

impl Session {
    /// A new session. `tls` is set for implicit-TLS listeners, whose handshake is done
    /// before the first byte of SMTP.
    pub fn new(config: Arc<SessionConfig>, peer: PeerInfo, tls: Option<TlsInfo>) -> Self {
        Session {
            config,
            peer,
            phase: Phase::Command,
            tls,
            helo: None,
            esmtp: false,
            identity: None,
            network_tenant: None,
            txn: None,
            line: Vec::new(),
            line_overflow: false,
            bad_commands: 0,
            out: Vec::new(),
        }
    }

    /// The client's network is bound to `tenant` in the configuration: its mail is that
    /// tenant's (signed with its keys, counted against its quotas) without AUTH, and its
    /// senders must be in `domains` as an authenticated user's are. Only the gateway's
    /// configuration decides this, never anything the client sends.
    pub fn bind_network_tenant(&mut self, tenant: baton_domain::TenantId, domains: Vec<Domain>) {
        self.network_tenant = Some((tenant, domains));
    }

    /// Whose domains the senders of this session must be in: the authenticated identity's,
    /// else the network binding's.
    fn sender_owner(&self) -> Option<(&baton_domain::TenantId, &[Domain])> {
        match (&self.identity, &self.network_tenant) {
            (Some(i), _) => Some((&i.tenant, &i.domains)),
            (None, Some((t, d))) => Some((t, d)),
            (None, None) => None,
        }
    }

    /// Queues the greeting. Call once, first.
    pub fn greet(&mut self) {
        let r = Reply::bare(220, format!("{} ESMTP Baton", self.config.hostname));
        self.reply(r);
    }

    /// Replies produced so far, ready for the wire.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// True while a message body is being received (DATA or between BDAT chunks): the
    /// gateway applies the data timeout and the minimum rate then.
    pub fn in_body(&self) -> bool {
        matches!(self.phase, Phase::Data | Phase::Bdat { .. })
    }

    /// True between MAIL and the end of the transaction.
    pub fn has_transaction(&self) -> bool {
        self.txn.is_some()
    }

    /// True while a message is open (started but not yet committed or aborted).
    pub fn message_open(&self) -> bool {
        self.txn
            .as_ref()
            .and_then(|t| t.body.as_ref())
            .is_some_and(|b| b.queue_id.is_some())
    }

    /// Feeds received bytes. Returns how many were consumed and what to do next. Body octets
    /// of an open message are appended to `body`; the caller writes them to the blob before
    /// the next call.
    pub fn advance(&mut self, input: &[u8], body: &mut Vec<u8>) -> (usize, Event) {
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            let step = match self.phase {
                Phase::Command | Phase::Sasl(_) => self.read_line(rest),
                Phase::Data => self.read_data(rest, body),
                Phase::Bdat { .. } => self.read_bdat(rest, body),
                Phase::AuthPending | Phase::CommitPending | Phase::TlsPending => {
                    // The gateway must answer the previous event first.
                    return (pos, Event::NeedInput);
                }
                Phase::Closed => return (pos, Event::Close),
            };
            pos += step.consumed;
            match step.event {
                Some(event) => return (pos, event),
                None if pos >= input.len() && step.consumed == 0 => {
                    return (pos, Event::NeedInput);
                }
                None if pos >= input.len() => {
                    // A command phase can end exactly at the input's end with work left
                    // (e.g. a completed BDAT chunk): let the loop run once more.
                    if matches!(self.phase, Phase::Command | Phase::Sasl(_)) {
                        return (pos, Event::NeedInput);
                    }
                }
                None => {}
            }
        }
    }

    /// Called after the TLS handshake: everything learnt before it is forgotten (RFC 3207 §4.2).
    pub fn tls_established(&mut self, info: TlsInfo) {
        self.tls = Some(info);
        self.helo = None;
        self.esmtp = false;
        self.identity = None;
        self.txn = None;
        self.line.clear();
        self.line_overflow = false;
        self.phase = Phase::Command;
    }

    pub fn auth_outcome(&mut self, outcome: AuthOutcome) {
        self.phase = Phase::Command;
        match outcome {
            AuthOutcome::Success(identity) => {
                self.identity = Some(identity);
                self.reply(Reply::new(235, "2.7.0", "Authentication successful"));
            }
            AuthOutcome::Failure => {
                self.reply(Reply::new(
                    535,
                    "5.7.8",
                    "Authentication credentials invalid",
                ));
            }
            AuthOutcome::TryLater => {
                self.reply(Reply::new(
                    454,
                    "4.7.0",
                    "Temporary authentication failure, try again later",
                ));
            }
            AuthOutcome::Locked => {
                self.reply(Reply::new(
                    421,
                    "4.7.0",
                    "Too many authentication failures, closing connection",
                ));
                self.phase = Phase::Closed;
            }
        }
    }

    /// Called on [`Event::MessageStart`]: records the queue id and returns the Received:
    /// header to write before the body. `date` is an RFC 5322 date, `now` Unix seconds.
    pub fn begin_message(&mut self, queue_id: QueueId, date: &str, now: i64) -> String {
        let header = self.received_header(&queue_id, date);
        if let Some(b) = self.txn.as_mut().and_then(|t| t.body.as_mut()) {
            b.queue_id = Some(queue_id);
            b.prefix_len = header.len() as u64;
            b.received_at = now;
        }
        header
    }

    /// Called after [`Event::MessageComplete`] with the result of making it durable.
    pub fn message_outcome(&mut self, result: Result<QueueId, Reply>) {
        self.txn = None;
        self.phase = Phase::Command;
        match result {
            Ok(id) => self.reply(Reply::new(250, "2.0.0", format!("Ok: queued as {id}"))),
            Err(reply) => self.reply(reply),
        }
    }

    /// Queues a reply and ends the session (timeouts, shutdown, limits enforced outside).
    pub fn terminate(&mut self, reply: Reply) {
        self.reply(reply);
        self.phase = Phase::Closed;
    }

    fn reply(&mut self, r: Reply) {
        r.write_to(&mut self.out);
    }

    /// Counts a protocol error; past the limit the session ends.
    fn reply_error(&mut self, r: Reply) -> Option<Event> {
        self.reply(r);
        self.bad_commands += 1;
        if self.bad_commands >= self.config.limits.max_bad_commands {
            self.terminate(Reply::new(
                421,
                "4.7.0",
                "Too many errors, closing connection",
            ));
            return Some(Event::Close);
        }
        None
    }

    fn read_line(&mut self, input: &[u8]) -> Step {
        let limit = match self.phase {
            // RFC 4954 §4: SASL responses may be longer than a command line.
            Phase::Sasl(_) => 12_288,
            _ => self.config.limits.max_command_line,
        };
        let Some(lf) = memchr::memchr(b'\n', input) else {
            self.buffer_partial(input, limit);
            return Step::consumed(input.len());
        };
        self.buffer_partial(&input[..=lf], limit);
        let consumed = lf + 1;
        let line = std::mem::take(&mut self.line);
        let overflow = std::mem::replace(&mut self.line_overflow, false);
        let event = if overflow {
            self.phase = Phase::Command;
            self.reply_error(Reply::new(500, "5.5.2", "Line too long"))
        } else if line.len() < 2
            || line[line.len() - 2] != b'\r'
            || line[..line.len() - 2].contains(&b'\r')
        {
            self.phase = Phase::Command;
            self.reply_error(Reply::new(
                500,
                "5.5.2",
                "Bare CR or LF in command line; lines end with CRLF",
            ))
        } else {
            match std::mem::replace(&mut self.phase, Phase::Command) {
                Phase::Sasl(step) => self.sasl_response(step, &line),
                _ => self.command(&line),
            }
        };
        Step { consumed, event }
    }

    fn buffer_partial(&mut self, bytes: &[u8], limit: usize) {
        if self.line_overflow {
            return;
        }
        if self.line.len() + bytes.len() > limit {
            self.line.clear();
            self.line_overflow = true;
        } else {
            self.line.extend_from_slice(bytes);
        }
    }

    fn read_data(&mut self, input: &[u8], body: &mut Vec<u8>) -> Step {
        let Some(state) = self.txn.as_mut().and_then(|t| t.body.as_mut()) else {
            self.phase = Phase::Command;
            return Step::consumed(0);
        };
        let start = body.len();
        let progress = state.decoder.decode(input, body);
        state.inspector.inspect(&body[start..]);
        if state.inspector.error().is_some() {
            // Refused at the end anyway: keep reading to stay in sync, store nothing more.
            body.truncate(start);
        }
        match progress {
            Ok(Progress::More) => Step::consumed(input.len()),
            Ok(Progress::Done(n)) => Step {
                consumed: n,
                event: Some(self.end_of_body()),
            },
            Err(e) => {
                body.truncate(start);
                Step {
                    consumed: input.len(),
                    event: Some(self.framing_error(e)),
                }
            }
        }
    }

    fn read_bdat(&mut self, input: &[u8], body: &mut Vec<u8>) -> Step {
        let Phase::Bdat {
            remaining,
            size,
            last,
        } = self.phase
        else {
            return Step::consumed(0);
        };
        let take = remaining.min(input.len());
        let left = remaining - take;
        self.phase = Phase::Bdat {
            remaining: left,
            size,
            last,
        };
        match self.txn.as_mut().and_then(|t| t.body.as_mut()) {
            Some(state) => {
                let start = body.len();
                if let Err(e) = state.decoder.decode(&input[..take], body) {
                    body.truncate(start);
                    return Step {
                        consumed: take,
                        event: Some(self.framing_error(e)),
                    };
                }
                state.inspector.inspect(&body[start..]);
                if state.inspector.error().is_some() {
                    body.truncate(start);
                }
            }
            // No usable transaction: the chunk is read and dropped; the error comes at its end.
            None if left == 0 => {
                self.phase = Phase::Command;
                let r = match self.txn {
                    None => Reply::new(503, "5.5.1", "No mail transaction, send MAIL first"),
                    Some(_) => Reply::new(554, "5.5.1", "No valid recipients"),
                };
                return Step {
                    consumed: take,
                    event: self.reply_error(r),
                };
            }
            None => return Step::consumed(take),
        }
        if left > 0 {
            return Step::consumed(take);
        }
        self.phase = Phase::Command;
        if last {
            return Step {
                consumed: take,
                event: Some(self.end_of_body()),
            };
        }
        self.reply(Reply::new(250, "2.0.0", format!("{size} octets received")));
        Step::consumed(take)
    }
}

struct Step {
    consumed: usize,
    event: Option<Event>,
}

impl Step {
    fn consumed(n: usize) -> Self {
        Step {
            consumed: n,
            event: None,
        }
    }
}
