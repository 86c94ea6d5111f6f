//! The SMTP client: one transaction per destination domain.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::mx::{MxResolver, ResolveError};
use super::{Route, route_for};

#[derive(Clone)]
pub struct ClientConfig {
    pub helo_name: String,
    /// Port of MX hosts (25 in production).
    pub port: u16,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    pub tls: Arc<rustls::ClientConfig>,
    /// Keeps sessions open between messages to the same address; `None` closes each.
    pub pool: Option<Arc<ConnectionPool>>,
}

#[derive(Debug, Clone)]
pub struct RcptSpec {
    pub address: String,
    /// DSN NOTIFY value, e.g. "SUCCESS,FAILURE".
    pub notify: Option<String>,
    /// DSN ORCPT as received, sent on xtext-encoded with its address type.
    pub orcpt: Option<baton_domain::OriginalRecipient>,
}

pub struct Message<'a> {
    /// `None` is the null sender.
    pub mail_from: Option<&'a str>,
    pub recipients: Vec<RcptSpec>,
    /// The complete message, CRLF line endings, not dot-stuffed.
    pub body: &'a [u8],
    pub smtputf8: bool,
    pub eight_bit: bool,
    pub envid: Option<&'a baton_domain::EnvId>,
    pub ret_hdrs: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    Deferred,
    Failed,
}

#[derive(Debug, Clone)]
pub struct RcptResult {
    pub address: String,
    pub outcome: Outcome,
    pub code: u16,
    pub enhanced: Option<String>,
    pub text: String,
    pub remote_host: Option<String>,
}

/// A reply from the server.
#[derive(Debug, Clone)]
struct Reply {
    code: u16,
    enhanced: Option<String>,
    text: String,
    lines: Vec<String>,
}

impl Reply {
    fn local(code: u16, enhanced: &str, text: impl Into<String>) -> Self {
        Reply {
            code,
            enhanced: Some(enhanced.into()),
            text: text.into(),
            lines: Vec::new(),
        }
    }

    fn outcome(&self) -> Outcome {
        match self.code {
            200..=399 => Outcome::Delivered,
            500..=599 => Outcome::Failed,
            _ => Outcome::Deferred,
        }
    }
}

fn parse_reply(lines: Vec<String>) -> io::Result<Reply> {
    let last = lines
        .last()
        .ok_or_else(|| io::Error::other("empty reply"))?;
    let code: u16 = last
        .get(..3)
        .and_then(|c| c.parse().ok())
        .filter(|c| (200..600).contains(c))
        .ok_or_else(|| io::Error::other(format!("malformed reply {last:?}")))?;
    let rest = last.get(4..).unwrap_or("").trim();
    let (enhanced, text) = match rest.split_once(' ') {
        Some((e, t)) if is_enhanced(e) => (Some(e.to_string()), t.to_string()),
        _ if is_enhanced(rest) => (Some(rest.to_string()), String::new()),
        _ => (None, rest.to_string()),
    };
    Ok(Reply {
        code,
        enhanced,
        text,
        lines,
    })
}

fn is_enhanced(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3
        && matches!(parts[0], "2" | "4" | "5")
        && parts[1..]
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct Conn {
    io: BufReader<Box<dyn Io>>,
    command_timeout: Duration,
    tls: bool,
}

impl Conn {
    async fn read_reply(&mut self, timeout: Duration) -> io::Result<Reply> {
        let read = async {
            let mut lines = Vec::new();
            loop {
                let mut line = String::new();
                let n = self.io.read_line(&mut line).await?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed",
                    ));
                }
                if line.len() > 2048 {
                    return Err(io::Error::other("reply line too long"));
                }
                let line = line.trim_end_matches(['\r', '\n']).to_string();
                let more = line.as_bytes().get(3) == Some(&b'-');
                lines.push(line);
                if !more || lines.len() > 100 {
                    return parse_reply(lines);
                }
            }
        };
        tokio::time::timeout(timeout, read).await.map_err(|_| {
            io::Error::new(io::ErrorKind::TimedOut, "timed out waiting for the server")
        })?
    }

    async fn send(&mut self, data: &[u8]) -> io::Result<()> {
        let timeout = self.command_timeout;
        let write = async {
            self.io.get_mut().write_all(data).await?;
            self.io.get_mut().flush().await
        };
        tokio::time::timeout(timeout, write).await.map_err(|_| {
            io::Error::new(io::ErrorKind::TimedOut, "timed out writing to the server")
        })?
    }

    async fn command(&mut self, line: &str) -> io::Result<Reply> {
        self.send(&command_line(line)?).await?;
        self.read_reply(self.command_timeout).await
    }
}

/// Every command line we send is built here: one line, CRLF-terminated, and refused if it
/// holds CR, LF or NUL, so no value can ever add a command to the session.
fn command_line(line: &str) -> io::Result<Vec<u8>> {
    if line.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing to send a command line with CR, LF or NUL",
        ));
    }
    let mut out = Vec::with_capacity(line.len() + 2);
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(b"\r\n");
    Ok(out)
}

#[derive(Clone)]
struct Extensions {
    pipelining: bool,
    starttls: bool,
    size: bool,
    eight_bit: bool,
    smtputf8: bool,
    dsn: bool,
}

fn extensions(reply: &Reply) -> Extensions {
    let has = |name: &str| {
        reply.lines.iter().skip(1).any(|l| {
            l.get(4..)
                .and_then(|e| e.split_whitespace().next())
                .is_some_and(|k| k.eq_ignore_ascii_case(name))
        })
    };
    Extensions {
        pipelining: has("PIPELINING"),
        starttls: has("STARTTLS"),
        size: has("SIZE"),
        eight_bit: has("8BITMIME"),
        smtputf8: has("SMTPUTF8"),
        dsn: has("DSN"),
    }
}

fn results(rcpts: &[RcptSpec], reply: &Reply, host: Option<&str>) -> Vec<RcptResult> {
    rcpts
        .iter()
        .map(|r| RcptResult {
            address: r.address.clone(),
            outcome: reply.outcome(),
            code: reply.code,
            enhanced: reply.enhanced.clone(),
            text: reply.text.clone(),
            remote_host: host.map(str::to_string),
        })
        .collect()
}

/// Delivers `msg` to every recipient at `domain`; never fails as a whole: every recipient
/// gets an outcome with the reply that decided it.
pub async fn deliver(
    domain: &str,
    msg: &Message<'_>,
    resolver: &dyn MxResolver,
    routes: &[Route],
    cfg: &ClientConfig,
) -> Vec<RcptResult> {
    let route = route_for(routes, domain);
    let require_tls = route.is_some_and(|r| r.require_tls);
    let targets: Vec<(String, Vec<SocketAddr>)> = match route.and_then(|r| r.target.clone()) {
        Some((host, port)) => match resolver.addresses(&host).await {
            Ok(addrs) => vec![(
                host,
                addrs
                    .into_iter()
                    .map(|a| SocketAddr::new(a, port))
                    .collect(),
            )],
            Err(e) => return results(&msg.recipients, &resolve_reply(&e), None),
        },
        None => match resolver.resolve(domain).await {
            Ok(hosts) => hosts
                .into_iter()
                .map(|h| {
                    (
                        h.name,
                        h.addrs
                            .into_iter()
                            .map(|a: IpAddr| SocketAddr::new(a, cfg.port))
                            .collect(),
                    )
                })
                .collect(),
            Err(e) => return results(&msg.recipients, &resolve_reply(&e), None),
        },
    };
    let mut last = Reply::local(
        451,
        "4.4.1",
        format!("No MX host of {domain} could be reached"),
    );
    for (host, addrs) in &targets {
        for addr in addrs {
            match attempt(host, *addr, msg, cfg, require_tls).await {
                Attempt::Done(results) => return results,
                Attempt::NextHost(reply) => {
                    tracing::info!(%host, %addr, reply = %format!("{} {}", reply.code, reply.text), "trying next host");
                    last = reply;
                }
            }
        }
    }
    results(&msg.recipients, &last, None)
}

fn resolve_reply(e: &ResolveError) -> Reply {
    match e {
        ResolveError::NullMx => Reply::local(
            556,
            "5.1.10",
            "Recipient domain publishes a null MX and accepts no mail",
        ),
        ResolveError::NoSuchDomain => Reply::local(550, "5.1.2", "Recipient domain does not exist"),
        ResolveError::NoAddress => {
            Reply::local(550, "5.1.2", "Recipient domain has no mail server")
        }
        ResolveError::Temporary(t) => Reply::local(451, "4.4.3", format!("DNS lookup failed: {t}")),
    }
}

enum Attempt {
    /// The transaction ran: these are the outcomes.
    Done(Vec<RcptResult>),
    /// This host could not take it; try the next one.
    NextHost(Reply),
}

async fn attempt(
    host: &str,
    addr: SocketAddr,
    msg: &Message<'_>,
    cfg: &ClientConfig,
    require_tls: bool,
) -> Attempt {
    let label = format!("{host}[{}]", addr.ip());
    // A cached session to this address first: RSET proves it is still alive.
    while let Some((mut conn, ext)) = cfg.pool.as_ref().and_then(|p| p.take(addr, require_tls)) {
        if !matches!(conn.command("RSET").await, Ok(r) if r.code == 250) {
            continue;
        }
        if let Ok((attempt, reusable)) =
            mail_transaction(&mut conn, host, msg, &ext, cfg, &label).await
        {
            finish(cfg, addr, conn, ext, reusable).await;
            return attempt;
        }
    }
    let tcp = match tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Attempt::NextHost(Reply::local(
                451,
                "4.4.1",
                format!("connect to {label} failed: {e}"),
            ));
        }
        Err(_) => {
            return Attempt::NextHost(Reply::local(
                451,
                "4.4.1",
                format!("connect to {label} timed out"),
            ));
        }
    };
    let _ = tcp.set_nodelay(true);
    let mut conn = Conn {
        io: BufReader::new(Box::new(tcp) as Box<dyn Io>),
        command_timeout: cfg.command_timeout,
        tls: false,
    };
    let lost = |e: io::Error| {
        if e.kind() == io::ErrorKind::InvalidInput {
            // Our own refusal to write a line: no other host would fare better.
            let reply = Reply::local(554, "5.6.0", e.to_string());
            return Attempt::Done(results(&msg.recipients, &reply, None));
        }
        Attempt::NextHost(Reply::local(
            451,
            "4.4.2",
            format!("lost connection with {label}: {e}"),
        ))
    };
    let ext = match open_session(&mut conn, host, cfg, require_tls, &label).await {
        Ok(Ok(ext)) => ext,
        Ok(Err(reply)) => return Attempt::NextHost(reply),
        Err(e) => return lost(e),
    };
    match mail_transaction(&mut conn, host, msg, &ext, cfg, &label).await {
        Ok((attempt, reusable)) => {
            finish(cfg, addr, conn, ext, reusable).await;
            attempt
        }
        Err(e) => lost(e),
    }
}

/// Parks a clean session for the next message to the same address, or says goodbye.
async fn finish(
    cfg: &ClientConfig,
    addr: SocketAddr,
    mut conn: Conn,
    ext: Extensions,
    reusable: bool,
) {
    match &cfg.pool {
        Some(pool) if reusable => pool.put(addr, conn, ext),
        _ => {
            let _ = conn.command("QUIT").await;
        }
    }
}

/// A parked session: the connection, what its server offers, since when it idles.
type IdleSession = (Conn, Extensions, std::time::Instant);

/// Idle SMTP sessions kept for reuse by address, like Postfix's connection cache.
pub struct ConnectionPool {
    idle: std::sync::Mutex<std::collections::HashMap<SocketAddr, Vec<IdleSession>>>,
    max_idle: Duration,
    max_per_address: usize,
}

impl ConnectionPool {
    pub fn new(max_idle: Duration, max_per_address: usize) -> Self {
        ConnectionPool {
            idle: Default::default(),
            max_idle,
            max_per_address,
        }
    }

    /// A session idle for less than `max_idle`; only TLS ones when TLS is required.
    fn take(&self, addr: SocketAddr, require_tls: bool) -> Option<(Conn, Extensions)> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.get_mut(&addr)?;
        while let Some((conn, ext, since)) = list.pop() {
            if since.elapsed() < self.max_idle && (conn.tls || !require_tls) {
                return Some((conn, ext));
            }
        }
        None
    }

    fn put(&self, addr: SocketAddr, conn: Conn, ext: Extensions) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.entry(addr).or_default();
        list.retain(|(_, _, since)| since.elapsed() < self.max_idle);
        // Dropping a surplus session closes it without QUIT; the peer copes.
        if list.len() < self.max_per_address {
            list.push((conn, ext, std::time::Instant::now()));
        }
    }
}

/// Greeting, EHLO, STARTTLS: a session ready for MAIL, or why this host will not do.
async fn open_session(
    conn: &mut Conn,
    host: &str,
    cfg: &ClientConfig,
    require_tls: bool,
    label: &str,
) -> io::Result<Result<Extensions, Reply>> {
    let greeting = conn.read_reply(cfg.command_timeout).await?;
    if greeting.code != 220 {
        return Ok(Err(greeting));
    }
    let mut ehlo = conn.command(&format!("EHLO {}", cfg.helo_name)).await?;
    if ehlo.code != 250 {
        ehlo = conn.command(&format!("HELO {}", cfg.helo_name)).await?;
        if ehlo.code != 250 {
            return Ok(Err(ehlo));
        }
    }
    let mut ext = extensions(&ehlo);
    if ext.starttls {
        let reply = conn.command("STARTTLS").await?;
        if reply.code == 220 {
            let old = std::mem::replace(
                &mut conn.io,
                BufReader::new(Box::new(tokio::io::duplex(1).0) as Box<dyn Io>),
            );
            let tcp = old.into_inner();
            let name =
                rustls::pki_types::ServerName::try_from(host.to_string()).unwrap_or_else(|_| {
                    rustls::pki_types::ServerName::try_from("localhost").expect("static name")
                });
            let tls: TlsStream<Box<dyn Io>> = tokio::time::timeout(
                cfg.command_timeout,
                TlsConnector::from(cfg.tls.clone()).connect(name, tcp),
            )
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
            conn.io = BufReader::new(Box::new(tls));
            conn.tls = true;
            ehlo = conn.command(&format!("EHLO {}", cfg.helo_name)).await?;
            if ehlo.code != 250 {
                return Ok(Err(ehlo));
            }
            ext = extensions(&ehlo);
        } else if require_tls {
            return Ok(Err(Reply::local(
                451,
                "4.7.5",
                format!("TLS required but {label} refused STARTTLS"),
            )));
        }
    } else if require_tls {
        let _ = conn.command("QUIT").await;
        return Ok(Err(Reply::local(
            451,
            "4.7.4",
            format!("TLS required but not offered by {label}"),
        )));
    }

    Ok(Ok(ext))
}

/// One mail transaction on an open session. Also says whether the session is clean enough
/// to be reused for the next message.
async fn mail_transaction(
    conn: &mut Conn,
    host: &str,
    msg: &Message<'_>,
    ext: &Extensions,
    cfg: &ClientConfig,
    label: &str,
) -> io::Result<(Attempt, bool)> {
    let needs_utf8 = msg.smtputf8
        || !msg.mail_from.unwrap_or("").is_ascii()
        || msg.recipients.iter().any(|r| !r.address.is_ascii());
    if needs_utf8 && !ext.smtputf8 {
        let _ = conn.command("QUIT").await;
        let reply = Reply::local(
            553,
            "5.6.7",
            format!("{label} does not support SMTPUTF8, needed for this message"),
        );
        return Ok((
            Attempt::Done(results(&msg.recipients, &reply, Some(host))),
            false,
        ));
    }

    let mut mail = format!("MAIL FROM:<{}>", msg.mail_from.unwrap_or(""));
    if ext.size {
        mail.push_str(&format!(" SIZE={}", msg.body.len()));
    }
    if msg.eight_bit && ext.eight_bit {
        mail.push_str(" BODY=8BITMIME");
    }
    if needs_utf8 {
        mail.push_str(" SMTPUTF8");
    }
    if ext.dsn {
        if let Some(hdrs) = msg.ret_hdrs {
            mail.push_str(if hdrs { " RET=HDRS" } else { " RET=FULL" });
        }
        if let Some(envid) = msg.envid {
            mail.push_str(&format!(" ENVID={}", envid.to_xtext()));
        }
    }
    let rcpt_lines: Vec<String> = msg
        .recipients
        .iter()
        .map(|r| {
            let mut line = format!("RCPT TO:<{}>", r.address);
            if ext.dsn {
                if let Some(n) = &r.notify {
                    line.push_str(&format!(" NOTIFY={n}"));
                }
                if let Some(o) = &r.orcpt {
                    line.push_str(&format!(" ORCPT={}", o.to_param()));
                }
            }
            line
        })
        .collect();

    // With PIPELINING, MAIL and every RCPT go out in one write (RFC 2920).
    let (mail_reply, rcpt_replies) = if ext.pipelining {
        let mut batch = command_line(&mail)?;
        for l in &rcpt_lines {
            batch.extend_from_slice(&command_line(l)?);
        }
        conn.send(&batch).await?;
        let mail_reply = conn.read_reply(cfg.command_timeout).await?;
        let mut replies = Vec::new();
        for _ in &rcpt_lines {
            replies.push(conn.read_reply(cfg.command_timeout).await?);
        }
        (mail_reply, replies)
    } else {
        let mail_reply = conn.command(&mail).await?;
        let mut replies = Vec::new();
        if mail_reply.code == 250 {
            for l in &rcpt_lines {
                replies.push(conn.command(l).await?);
            }
        }
        (mail_reply, replies)
    };
    if mail_reply.code != 250 {
        let _ = conn.command("QUIT").await;
        let attempt = match mail_reply.outcome() {
            Outcome::Failed => Attempt::Done(results(&msg.recipients, &mail_reply, Some(host))),
            _ => Attempt::NextHost(mail_reply),
        };
        return Ok((attempt, false));
    }

    let mut out = Vec::new();
    let mut accepted = Vec::new();
    for (spec, reply) in msg.recipients.iter().zip(&rcpt_replies) {
        if (200..300).contains(&reply.code) {
            accepted.push(spec.clone());
        } else {
            out.extend(results(std::slice::from_ref(spec), reply, Some(host)));
        }
    }
    if accepted.is_empty() {
        let _ = conn.command("QUIT").await;
        return Ok((Attempt::Done(out), false));
    }
    let data = conn.command("DATA").await?;
    if data.code != 354 {
        let _ = conn.command("QUIT").await;
        out.extend(results(&accepted, &data, Some(host)));
        return Ok((Attempt::Done(out), false));
    }
    conn.send(&dot_stuff(msg.body)).await?;
    let final_reply = match conn.read_reply(cfg.data_timeout).await {
        Ok(r) => r,
        // The body went out but the verdict did not come back: it may or may not have been
        // taken. Retrying risks a duplicate, giving up risks a loss; mail prefers duplicates.
        Err(e) => Reply::local(
            451,
            "4.4.2",
            format!("no reply from {label} after the message body: {e}"),
        ),
    };
    // A session that answered the body is clean: it can carry the next message.
    let reusable = final_reply.lines.iter().any(|l| !l.is_empty());
    out.extend(results(&accepted, &final_reply, Some(host)));
    Ok((Attempt::Done(out), reusable))
}

/// RFC 5321 §4.5.2: a line starting with "." gets one more; the body ends with CRLF.CRLF.
fn dot_stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / 64 + 5);
    let mut at_line_start = true;
    for &b in body {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse_with_and_without_enhanced_codes() {
        let r = parse_reply(vec![
            "250-mx.test".into(),
            "250 2.0.0 Ok: queued as X".into(),
        ])
        .expect("reply");
        assert_eq!(
            (r.code, r.enhanced.as_deref(), r.text.as_str()),
            (250, Some("2.0.0"), "Ok: queued as X")
        );
        let r = parse_reply(vec!["450 Error: command failed".into()]).expect("reply");
        assert_eq!(
            (r.code, r.enhanced.clone(), r.outcome()),
            (450, None, Outcome::Deferred)
        );
        assert!(parse_reply(vec!["hello".into()]).is_err());
    }

    #[test]
    fn dot_stuffing_doubles_leading_dots_and_terminates() {
        assert_eq!(
            dot_stuff(b"a\r\n.b\r\n..c\r\n"),
            b"a\r\n..b\r\n...c\r\n.\r\n"
        );
        assert_eq!(dot_stuff(b"no newline"), b"no newline\r\n.\r\n");
    }
}
