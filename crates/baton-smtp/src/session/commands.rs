//! One handler per SMTP command, plus the end of a message body.

use baton_domain::{BodyType, Domain, Envelope, NotifyOn, Path, Recipient, Ret};
use smtp_proto::{Error as ProtoError, Request};

use super::params;
use super::path::split_path;
use super::{BodyState, Event, ListenerKind, Phase, SaslStep, Session, Transaction};
use crate::body::{BodyDecoder, BodyInspector, ContentError, FramingError};
use crate::reply::Reply;
use crate::sasl::{self, SaslError};

/// Stands in for the real path when smtp-proto parses the parameters.
const PLACEHOLDER: &str = "<p@placeholder.invalid>";

impl Session {
    pub(super) fn command(&mut self, line: &[u8]) -> Option<Event> {
        let Ok(text) = std::str::from_utf8(line) else {
            return self.reply_error(Reply::new(500, "5.5.2", "Command is not valid UTF-8"));
        };
        let verb = text.get(..4).map(str::to_ascii_uppercase);
        match verb.as_deref() {
            Some("MAIL") => return self.mail(text),
            Some("RCPT") => return self.rcpt(text),
            Some("BDAT") if text.as_bytes().get(4) == Some(&b' ') => {
                return self.bdat_command(text);
            }
            _ => {}
        }
        match Request::parse(&mut line.iter()) {
            Ok(Request::Ehlo { host }) => self.hello(&host, true),
            Ok(Request::Helo { host }) => self.hello(&host, false),
            Ok(Request::Data) => self.data(),
            // Lines starting "BDAT " are parsed by `bdat_command`.
            Ok(Request::Bdat { .. }) => {
                self.reply_error(Reply::new(501, "5.5.4", "Syntax: BDAT size [LAST]"))
            }
            Ok(Request::Auth {
                mechanism,
                initial_response,
            }) => self.auth(mechanism, &initial_response),
            Ok(Request::StartTls) => self.starttls(text),
            Ok(Request::Rset) => {
                let aborted = self.message_open();
                self.txn = None;
                self.reply(Reply::new(250, "2.0.0", "Ok"));
                aborted.then_some(Event::MessageAborted)
            }
            Ok(Request::Noop { .. }) => {
                self.reply(Reply::new(250, "2.0.0", "Ok"));
                None
            }
            Ok(Request::Quit) => {
                self.terminate(Reply::new(221, "2.0.0", "Bye"));
                Some(Event::Close)
            }
            Ok(Request::Vrfy { .. }) => {
                self.reply(Reply::new(
                    252,
                    "2.5.0",
                    "Cannot VRFY user, but will accept message",
                ));
                None
            }
            Ok(Request::Help { .. }) => {
                self.reply(Reply::new(214, "2.0.0", "See RFC 5321"));
                None
            }
            Ok(Request::Expn { .. })
            | Ok(Request::Lhlo { .. })
            | Ok(Request::Etrn { .. })
            | Ok(Request::Atrn { .. })
            | Ok(Request::Burl { .. })
            | Ok(Request::Mail { .. })
            | Ok(Request::Rcpt { .. }) => {
                // Known commands we do not offer are not the client's mistake: not counted.
                self.reply(Reply::new(502, "5.5.1", "Command not implemented"));
                None
            }
            Err(e) => self.reply_error(parse_error_reply(&e, "5.5.4")),
        }
    }

    fn hello(&mut self, host: &str, esmtp: bool) -> Option<Event> {
        let host = host.trim();
        if host.is_empty() {
            return self.reply_error(Reply::new(501, "5.5.4", "Syntax: EHLO hostname"));
        }
        // The name travels with the message (envelope, timeline, admin output): a control
        // character (NUL, ESC, C1) is refused, never stored. Found by fuzz/smtp_session.
        if host.chars().any(char::is_control) {
            return self.reply_error(Reply::new(501, "5.5.4", "Control character in hostname"));
        }
        let aborted = self.message_open();
        self.txn = None;
        self.helo = Some(host.to_string());
        self.esmtp = esmtp;
        let hostname = self.config.hostname.clone();
        if !esmtp {
            self.reply(Reply::bare(250, hostname));
            return aborted.then_some(Event::MessageAborted);
        }
        let mut lines = vec![
            format!("{hostname} Hello {host} [{}]", self.peer.ip),
            "PIPELINING".into(),
            format!("SIZE {}", self.config.limits.max_message_size),
            "8BITMIME".into(),
            "SMTPUTF8".into(),
            "ENHANCEDSTATUSCODES".into(),
            "CHUNKING".into(),
            "DSN".into(),
        ];
        if self.tls.is_none() {
            lines.push("STARTTLS".into());
        } else if self.identity.is_none() {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        self.reply(Reply {
            code: 250,
            enhanced: None,
            lines,
        });
        aborted.then_some(Event::MessageAborted)
    }

    fn starttls(&mut self, text: &str) -> Option<Event> {
        if text.trim_end().len() > "STARTTLS".len() {
            return self.reply_error(Reply::new(501, "5.5.4", "STARTTLS takes no parameters"));
        }
        if self.tls.is_some() {
            return self.reply_error(Reply::new(503, "5.5.1", "TLS already active"));
        }
        self.reply(Reply::new(220, "2.0.0", "Ready to start TLS"));
        self.phase = Phase::TlsPending;
        Some(Event::StartTls)
    }

    fn mail(&mut self, text: &str) -> Option<Event> {
        if !text
            .get(..10)
            .is_some_and(|p| p.eq_ignore_ascii_case("MAIL FROM:"))
        {
            return self.reply_error(Reply::new(501, "5.5.4", "Syntax: MAIL FROM:<address>"));
        }
        if self.helo.is_none() {
            return self.reply_error(Reply::new(503, "5.5.1", "Send EHLO/HELO first"));
        }
        if self.txn.is_some() {
            return self.reply_error(Reply::new(503, "5.5.1", "Nested MAIL command"));
        }
        if self.config.listener.requires_auth()
            && self.identity.is_none()
            && !self.peer.trusted_network
        {
            return self.reply_error(Reply::new(530, "5.7.0", "Authentication required"));
        }
        let Some((raw_path, params)) = split_path(text, 10) else {
            return self.reply_error(Reply::new(501, "5.5.4", "Syntax: MAIL FROM:<address>"));
        };
        let checked = match params::mail_params(params) {
            Ok(p) => p,
            Err(r) => return self.reply_error(r),
        };
        let synthetic = format!("MAIL FROM:{PLACEHOLDER}{params}");
        let from = match Request::parse(&mut synthetic.as_bytes().iter()) {
            Ok(Request::Mail { from }) => from,
            Ok(_) => return self.reply_error(Reply::new(501, "5.5.4", "Syntax error")),
            Err(e) => return self.reply_error(parse_error_reply(&e, "5.5.4")),
        };
        let smtputf8 = from.flags & smtp_proto::MAIL_SMTPUTF8 != 0;
        let path = match Path::parse(raw_path, smtputf8) {
            Ok(p) => p,
            Err(e) => {
                return self.reply_error(Reply::new(
                    501,
                    "5.1.7",
                    format!("Bad sender address: {e}"),
                ));
            }
        };
        if checked.size.unwrap_or(0) > self.config.limits.max_message_size {
            self.reply(Reply::new(
                552,
                "5.3.4",
                "Message size exceeds fixed maximum message size",
            ));
            return None;
        }
        if let (Some((tenant, domains)), Some(mailbox)) = (self.sender_owner(), &path.mailbox)
            && !domains.contains(mailbox.domain())
        {
            let r = Reply::new(
                553,
                "5.7.1",
                format!(
                    "Sender address <{mailbox}> is not in a domain of tenant {}",
                    tenant.0
                ),
            );
            return self.reply_error(r);
        }
        let ret = if from.flags & smtp_proto::MAIL_RET_FULL != 0 {
            Some(Ret::Full)
        } else if from.flags & smtp_proto::MAIL_RET_HDRS != 0 {
            Some(Ret::Hdrs)
        } else {
            None
        };
        let body_type = if from.flags & smtp_proto::MAIL_BODY_8BITMIME != 0 {
            BodyType::EightBitMime
        } else {
            BodyType::SevenBit
        };
        if from.flags & smtp_proto::MAIL_BODY_BINARYMIME != 0 {
            return self.reply_error(Reply::new(555, "5.5.4", "BODY=BINARYMIME is not supported"));
        }
        self.txn = Some(Transaction {
            mail_from: path.mailbox,
            recipients: Vec::new(),
            ret,
            envid: checked.envid,
            body_type,
            smtputf8,
            body: None,
            chunking: false,
            to_return_paths: None,
        });
        self.reply(Reply::new(250, "2.1.0", "Ok"));
        None
    }

    fn rcpt(&mut self, text: &str) -> Option<Event> {
        if !text
            .get(..8)
            .is_some_and(|p| p.eq_ignore_ascii_case("RCPT TO:"))
        {
            return self.reply_error(Reply::new(501, "5.5.4", "Syntax: RCPT TO:<address>"));
        }
        let Some(txn) = &self.txn else {
            return self.reply_error(Reply::new(503, "5.5.1", "Send MAIL first"));
        };
        if txn.body.is_some() {
            return self.reply_error(Reply::new(503, "5.5.1", "Message body already in progress"));
        }
        let smtputf8 = txn.smtputf8;
        let count = txn.recipients.len();
        let Some((raw_path, params)) = split_path(text, 8) else {
            return self.reply_error(Reply::new(501, "5.5.4", "Syntax: RCPT TO:<address>"));
        };
        let checked = match params::rcpt_params(params) {
            Ok(p) => p,
            Err(r) => return self.reply_error(r),
        };
        let synthetic = format!("RCPT TO:{PLACEHOLDER}{params}");
        let to = match Request::parse(&mut synthetic.as_bytes().iter()) {
            Ok(Request::Rcpt { to }) => to,
            Ok(_) => return self.reply_error(Reply::new(501, "5.5.4", "Syntax error")),
            Err(e) => return self.reply_error(parse_error_reply(&e, "5.5.4")),
        };
        let path = match Path::parse(raw_path, smtputf8) {
            Ok(p) => p,
            Err(e) => {
                return self.reply_error(Reply::new(
                    501,
                    "5.1.3",
                    format!("Bad recipient address: {e}"),
                ));
            }
        };
        let Some(mailbox) = path.mailbox else {
            return self.reply_error(Reply::new(501, "5.1.3", "Null recipient is not allowed"));
        };
        if count >= self.config.limits.max_recipients {
            self.reply(Reply::new(452, "4.5.3", "Too many recipients"));
            return None;
        }
        let return_path = match self.recipient_kind(path.had_source_route, &mailbox) {
            Ok(kind) => kind == RcptKind::ReturnPath,
            Err(denial) => return self.reply_error(denial),
        };
        let earlier = self.txn.as_ref().and_then(|t| t.to_return_paths);
        if return_path && earlier == Some(true) {
            // A real bounce names one return path; more would multiply what one message does.
            return self.reply_error(Reply::new(
                550,
                "5.5.3",
                "One return path per message: send each bounce on its own",
            ));
        }
        if earlier.is_some_and(|earlier| earlier != return_path) {
            return self.reply_error(Reply::new(
                550,
                "5.5.3",
                "A bounce to a return path goes alone: send it in its own transaction",
            ));
        }
        let notify = (to.flags
            & (smtp_proto::RCPT_NOTIFY_SUCCESS
                | smtp_proto::RCPT_NOTIFY_FAILURE
                | smtp_proto::RCPT_NOTIFY_DELAY
                | smtp_proto::RCPT_NOTIFY_NEVER)
            != 0)
            .then_some(NotifyOn {
                success: to.flags & smtp_proto::RCPT_NOTIFY_SUCCESS != 0,
                failure: to.flags & smtp_proto::RCPT_NOTIFY_FAILURE != 0,
                delay: to.flags & smtp_proto::RCPT_NOTIFY_DELAY != 0,
                never: to.flags & smtp_proto::RCPT_NOTIFY_NEVER != 0,
            });
        if let Some(txn) = self.txn.as_mut() {
            txn.to_return_paths = Some(return_path);
            txn.recipients.push(Recipient {
                address: mailbox,
                notify,
                orcpt: checked.orcpt,
            });
        }
        self.reply(Reply::new(250, "2.1.5", "Ok"));
        None
    }

    /// Relay control. Authenticated tenants and allow-listed networks may send anywhere;
    /// everyone else only to the domains we accept mail for, and never with routing tricks.
    fn recipient_kind(
        &self,
        source_route: bool,
        mailbox: &baton_domain::Mailbox,
    ) -> Result<RcptKind, Reply> {
        let domain = mailbox.domain();
        let bounce_domain = self
            .config
            .return_paths
            .as_ref()
            .filter(|paths| paths.is_bounce_domain(&domain.to_string()));
        // One of our return paths (its MAC proves it), whoever sends to it.
        if let Some(paths) = bounce_domain
            && paths
                .key
                .verify(mailbox.local(), &domain.to_string())
                .is_ok()
        {
            return Ok(RcptKind::ReturnPath);
        }
        if self.identity.is_some() || self.peer.trusted_network {
            return Ok(RcptKind::Relayed);
        }
        if source_route || mailbox.has_routing_local_part() {
            return Err(Reply::new(
                550,
                "5.7.1",
                "Sender-specified routing is not permitted",
            ));
        }
        if !matches!(domain, Domain::Literal(_)) && self.config.accept_domains.contains(domain) {
            return Ok(RcptKind::Inbound);
        }
        // At a bounce domain but not a return path we made: nobody is there.
        if bounce_domain.is_some() && self.config.listener == ListenerKind::Relay {
            return Err(Reply::new(
                550,
                "5.1.1",
                format!("<{mailbox}>: not a return path of this relay"),
            ));
        }
        Err(match self.config.listener {
            ListenerKind::Relay => {
                Reply::new(554, "5.7.1", format!("<{mailbox}>: Relay access denied"))
            }
            _ => Reply::new(530, "5.7.0", "Authentication required"),
        })
    }

    fn data(&mut self) -> Option<Event> {
        if let Some(r) = self.body_precondition(false) {
            return self.reply_error(r);
        }
        self.start_body(BodyDecoder::data().normalizing_bare_lf(self.config.normalize_bare_lf));
        self.reply(Reply::bare(354, "End data with <CR><LF>.<CR><LF>"));
        self.phase = Phase::Data;
        Some(Event::MessageStart)
    }

    /// `BDAT size [LAST]`, parsed here so that a size that does not fit is refused rather
    /// than wrapped.
    fn bdat_command(&mut self, text: &str) -> Option<Event> {
        let mut words = text
            .trim_end_matches(['\r', '\n'])
            .split(' ')
            .filter(|w| !w.is_empty())
            .skip(1);
        let size = words.next();
        let last = match words.next() {
            None => false,
            Some(w) if w.eq_ignore_ascii_case("LAST") => true,
            Some(_) => {
                return self.reply_error(Reply::new(501, "5.5.4", "Syntax: BDAT size [LAST]"));
            }
        };
        if words.next().is_some() {
            return self.reply_error(Reply::new(501, "5.5.4", "Syntax: BDAT size [LAST]"));
        }
        let size = match params::number(size, "BDAT chunk size") {
            Ok(n) => n,
            Err(r) => return self.reply_error(r),
        };
        if size > self.config.limits.max_message_size {
            // The chunk cannot be skipped without reading it all: end the session instead.
            return Some(self.abort_and_close(Reply::new(
                552,
                "5.3.4",
                "Chunk exceeds fixed maximum message size, closing connection",
            )));
        }
        self.bdat(size as usize, last)
    }

    fn bdat(&mut self, size: usize, last: bool) -> Option<Event> {
        self.phase = Phase::Bdat {
            remaining: size,
            size,
            last,
        };
        let body_started = self.txn.as_ref().is_some_and(|t| t.body.is_some());
        if body_started {
            return None;
        }
        if let Some(r) = self.body_precondition(true) {
            if matches!(r.code, 503) && self.txn.is_some() {
                // DATA was used: refuse after reading the chunk, without a transaction.
                self.txn = None;
            }
            return None;
        }
        self.start_body(BodyDecoder::bdat().normalizing_bare_lf(self.config.normalize_bare_lf));
        if let Some(t) = self.txn.as_mut() {
            t.chunking = true;
        }
        Some(Event::MessageStart)
    }

    fn body_precondition(&self, bdat: bool) -> Option<Reply> {
        let Some(txn) = &self.txn else {
            return Some(Reply::new(503, "5.5.1", "Send MAIL first"));
        };
        if txn.recipients.is_empty() {
            return Some(Reply::new(554, "5.5.1", "No valid recipients"));
        }
        if !bdat && txn.chunking {
            return Some(Reply::new(503, "5.5.1", "DATA not allowed after BDAT"));
        }
        None
    }

    fn start_body(&mut self, decoder: BodyDecoder) {
        let limits = &self.config.limits;
        let inspector = BodyInspector::new(
            limits.max_message_size,
            limits.max_text_line,
            limits.max_header_size,
        );
        if let Some(t) = self.txn.as_mut() {
            t.body = Some(BodyState {
                decoder,
                inspector,
                queue_id: None,
                prefix_len: 0,
                received_at: 0,
            });
        }
    }

    pub(super) fn end_of_body(&mut self) -> Event {
        let Some(mut txn) = self.txn.take() else {
            return Event::NeedInput;
        };
        let Some(mut state) = txn.body.take() else {
            return Event::NeedInput;
        };
        if state.decoder.pending_cr() {
            // The transaction is already taken: the message is open, so it is aborted.
            self.terminate(framing_refusal(FramingError::BareCr));
            return Event::MessageAborted;
        }
        state.inspector.finish();
        let refusal = match state.inspector.error() {
            Some(ContentError::TooBig) => Some(Reply::new(
                552,
                "5.3.4",
                "Message size exceeds fixed maximum message size",
            )),
            Some(ContentError::HeaderTooBig) => {
                Some(Reply::new(552, "5.3.4", "Message header section too large"))
            }
            Some(ContentError::LineTooLong) => Some(Reply::new(
                550,
                "5.6.0",
                format!(
                    "Message contains a line longer than {} octets",
                    self.config.limits.max_text_line
                ),
            )),
            None => {
                let header = state.inspector.header().unwrap_or_default();
                let facts = baton_domain::HeaderFacts::parse(header);
                if facts.received >= MAX_HOPS {
                    // A mail loop (RFC 5321 6.3): refused, never passed on again.
                    Some(Reply::new(554, "5.4.6", "Too many hops: mail loop?"))
                } else if txn.to_return_paths == Some(true) {
                    // A bounce coming back is only parsed, never relayed, signed or answered:
                    // an old MTA's "From: MAILER-DAEMON" without a domain must not lose it.
                    None
                } else {
                    self.header_from_refusal(header)
                }
            }
        };
        if let Some(r) = refusal {
            self.reply(r);
            return Event::MessageAborted;
        }
        let Some(queue_id) = state.queue_id else {
            self.reply(crate::reply::canned::storage_failure());
            return Event::MessageAborted;
        };
        let envelope = Envelope {
            queue_id,
            mail_from: txn.mail_from,
            recipients: std::mem::take(&mut txn.recipients),
            tenant: self.sender_owner().map(|(t, _)| t.clone()),
            auth_user: self.identity.as_ref().map(|i| i.user.clone()),
            ret: txn.ret,
            envid: txn.envid,
            body: txn.body_type,
            smtputf8: txn.smtputf8,
            client_ip: self.peer.ip,
            helo: self.helo.clone().unwrap_or_default(),
            tls: self.tls.is_some(),
            size: state.prefix_len + state.inspector.size(),
            received_at: state.received_at,
        };
        self.phase = Phase::CommitPending;
        Event::MessageComplete(Box::new(envelope))
    }

    /// Every message needs exactly one From field with valid addresses (refused here, before
    /// 250, rather than bounced later); an authenticated tenant may only put its own domains
    /// there (the envelope sender is checked at MAIL).
    fn header_from_refusal(&self, header: &[u8]) -> Option<Reply> {
        let facts = baton_domain::HeaderFacts::parse(header);
        if let Err(e) = facts.author_check() {
            return Some(Reply::new(550, "5.6.0", e.to_string()));
        }
        let (tenant, domains) = self.sender_owner()?;
        let all_owned = facts
            .from_domains
            .iter()
            .all(|d| d.as_ref().is_some_and(|d| domains.contains(d)));
        (!all_owned).then(|| {
            Reply::new(
                553,
                "5.7.1",
                format!(
                    "From: header address is not in a domain of tenant {}",
                    tenant.0
                ),
            )
        })
    }

    pub(super) fn framing_error(&mut self, e: FramingError) -> Event {
        self.abort_and_close(framing_refusal(e))
    }

    /// Ends the session with `r`, dropping the message being received, if any.
    fn abort_and_close(&mut self, r: Reply) -> Event {
        let open = self.message_open();
        self.txn = None;
        self.terminate(r);
        if open {
            Event::MessageAborted
        } else {
            Event::Close
        }
    }

    fn auth(&mut self, mechanism: u64, initial: &str) -> Option<Event> {
        if self.tls.is_none() {
            return self.reply_error(Reply::new(
                538,
                "5.7.11",
                "Encryption required for requested authentication mechanism",
            ));
        }
        if self.helo.is_none() || !self.esmtp {
            return self.reply_error(Reply::new(503, "5.5.1", "Send EHLO first"));
        }
        if self.identity.is_some() {
            return self.reply_error(Reply::new(503, "5.5.1", "Already authenticated"));
        }
        if self.txn.is_some() {
            return self.reply_error(Reply::new(
                503,
                "5.5.1",
                "AUTH not allowed during a mail transaction",
            ));
        }
        let initial = initial.trim();
        match mechanism {
            smtp_proto::AUTH_PLAIN if initial.is_empty() => {
                self.reply(Reply::bare(334, ""));
                self.phase = Phase::Sasl(SaslStep::Plain);
                None
            }
            smtp_proto::AUTH_PLAIN => {
                let ir = if initial == "=" { "" } else { initial };
                self.finish_plain(ir)
            }
            smtp_proto::AUTH_LOGIN if initial.is_empty() => {
                self.reply(Reply::bare(334, "VXNlcm5hbWU6"));
                self.phase = Phase::Sasl(SaslStep::LoginUser);
                None
            }
            smtp_proto::AUTH_LOGIN => self.login_user(initial),
            _ => self.reply_error(Reply::new(
                504,
                "5.5.4",
                "Unrecognized authentication mechanism",
            )),
        }
    }

    pub(super) fn sasl_response(&mut self, step: SaslStep, line: &[u8]) -> Option<Event> {
        let text = String::from_utf8_lossy(&line[..line.len() - 2]).into_owned();
        if text.trim() == "*" {
            return self.reply_error(Reply::new(501, "5.0.0", "Authentication cancelled"));
        }
        match step {
            SaslStep::Plain => self.finish_plain(&text),
            SaslStep::LoginUser => self.login_user(&text),
            SaslStep::LoginPassword(username) => match sasl::decode_login_field(&text) {
                Ok(password) => {
                    self.phase = Phase::AuthPending;
                    Some(Event::Authenticate(sasl::Credentials {
                        username,
                        password,
                    }))
                }
                Err(_) => self.sasl_malformed(),
            },
        }
    }

    fn finish_plain(&mut self, b64: &str) -> Option<Event> {
        match sasl::decode_plain(b64) {
            Ok(c) => {
                self.phase = Phase::AuthPending;
                Some(Event::Authenticate(c))
            }
            // A mismatched authorization identity is a failed login, not a syntax error.
            Err(SaslError::AuthzidMismatch) => {
                self.reply(Reply::new(
                    535,
                    "5.7.8",
                    "Authentication credentials invalid",
                ));
                None
            }
            Err(SaslError::Malformed) => self.sasl_malformed(),
        }
    }

    fn login_user(&mut self, b64: &str) -> Option<Event> {
        match sasl::decode_login_field(b64) {
            Ok(user) if !user.is_empty() => {
                self.reply(Reply::bare(334, "UGFzc3dvcmQ6"));
                self.phase = Phase::Sasl(SaslStep::LoginPassword(user));
                None
            }
            _ => self.sasl_malformed(),
        }
    }

    fn sasl_malformed(&mut self) -> Option<Event> {
        self.phase = Phase::Command;
        self.reply_error(Reply::new(
            501,
            "5.5.2",
            "Malformed authentication response",
        ))
    }

    pub(super) fn received_header(&self, id: &baton_domain::QueueId, date: &str) -> String {
        let helo: String = self
            .helo
            .as_deref()
            .unwrap_or("unknown")
            .chars()
            .take(64)
            .map(|c| {
                if c.is_ascii_graphic() && c != '(' && c != ')' {
                    c
                } else {
                    '?'
                }
            })
            .collect();
        let proto = match (self.esmtp, self.tls.is_some(), self.identity.is_some()) {
            (false, _, _) => "SMTP",
            (true, false, false) => "ESMTP",
            (true, true, false) => "ESMTPS",
            (true, false, true) => "ESMTPA",
            (true, true, true) => "ESMTPSA",
        };
        let show_ip = self.identity.is_none() || self.config.received.submission_client_ip;
        let from = if show_ip {
            format!("{helo} ([{}])", self.peer.ip)
        } else {
            helo
        };
        let mut h = format!(
            "Received: from {from}\r\n\tby {} (Baton) with {proto} id {id}",
            self.config.hostname
        );
        if let Some(tls) = &self.tls {
            h.push_str(&format!(
                "\r\n\t(using {} with cipher {})",
                tls.version, tls.cipher
            ));
        }
        if let Some(i) = self
            .identity
            .as_ref()
            .filter(|_| self.config.received.auth_user)
        {
            h.push_str(&format!(
                "\r\n\t(Authenticated sender: {} tenant {})",
                sanitize_comment(&i.user),
                sanitize_comment(&i.tenant.0)
            ));
        }
        h.push_str(&format!(";\r\n\t{date}\r\n"));
        h
    }
}

fn sanitize_comment(s: &str) -> String {
    s.chars()
        .take(128)
        .map(|c| {
            if c.is_ascii_graphic() && c != '(' && c != ')' && c != '\\' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// The reply that ends a session whose message data broke the framing.
fn framing_refusal(e: FramingError) -> Reply {
    match e {
        FramingError::BareCr | FramingError::BareLf => Reply::new(
            550,
            "5.5.2",
            "Bare CR or LF in message data is not allowed, closing connection",
        ),
        FramingError::Nul => Reply::new(
            550,
            "5.6.0",
            "NUL octet in message data is not allowed, closing connection",
        ),
    }
}

fn parse_error_reply(e: &ProtoError, syntax_code: &'static str) -> Reply {
    match e {
        ProtoError::UnknownCommand => Reply::new(500, "5.5.1", "Command unrecognized"),
        ProtoError::InvalidSenderAddress => Reply::new(501, "5.1.7", "Bad sender address syntax"),
        ProtoError::InvalidRecipientAddress => {
            Reply::new(501, "5.1.3", "Bad recipient address syntax")
        }
        ProtoError::SyntaxError { syntax } => {
            Reply::new(501, syntax_code, format!("Syntax: {syntax}"))
        }
        ProtoError::InvalidParameter { param } => {
            Reply::new(501, syntax_code, format!("Invalid parameter {param}"))
        }
        ProtoError::UnsupportedParameter { param } => {
            Reply::new(555, "5.5.4", format!("Unsupported parameter {param}"))
        }
        ProtoError::ResponseTooLong => Reply::new(500, "5.5.2", "Line too long"),
        ProtoError::NeedsMoreData { .. } | ProtoError::InvalidResponse { .. } => {
            Reply::new(500, "5.5.2", "Syntax error")
        }
    }
}

/// Who a recipient is for: someone we relay for (authenticated or allow-listed clients),
/// a domain we accept mail for, or one of our return paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RcptKind {
    Relayed,
    Inbound,
    ReturnPath,
}

/// Received: fields a message may carry before it is taken for a loop (Postfix's
/// hopcount_limit).
const MAX_HOPS: usize = 50;
