//! The SMTP client: one transaction per destination domain.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use smtp_proto::EhloResponse;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::auth::{Credentials, Mechanisms, authenticate};
use super::mx::{MxResolver, ResolveError};
use super::wire::{Reply, Wire};
use super::{Route, VerifiedTls, deadline, route_for};

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
    /// Header fields added on the way (policy, DKIM), sent before `body`.
    pub prefix: &'a [u8],
    /// The message as stored, CRLF line endings, not dot-stuffed; streamed, never copied.
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

fn outcome(reply: &Reply) -> Outcome {
    match reply.code {
        200..=399 => Outcome::Delivered,
        500..=599 => Outcome::Failed,
        _ => Outcome::Deferred,
    }
}

struct Conn {
    wire: Wire,
    tls: bool,
}

impl Conn {
    async fn command(&mut self, line: &str) -> io::Result<Reply> {
        self.wire.command(line).await
    }
}

#[derive(Clone, Default)]
struct Extensions {
    pipelining: bool,
    starttls: bool,
    size: bool,
    eight_bit: bool,
    smtputf8: bool,
    dsn: bool,
    auth: Mechanisms,
}

/// The EHLO keywords, read by smtp-proto's `EhloResponse` from the reply as received. A
/// reply it cannot read is taken as offering nothing, as after HELO.
fn extensions(reply: &Reply) -> Extensions {
    let ehlo = match EhloResponse::parse(&mut reply.raw.iter()) {
        Ok(ehlo) => ehlo,
        Err(e) => {
            tracing::warn!(error = ?e, "unreadable EHLO reply: using no extensions");
            return Extensions::default();
        }
    };
    let has = |flag| ehlo.has_capability(flag);
    Extensions {
        pipelining: has(smtp_proto::EXT_PIPELINING),
        starttls: has(smtp_proto::EXT_START_TLS),
        size: has(smtp_proto::EXT_SIZE),
        eight_bit: has(smtp_proto::EXT_8BIT_MIME),
        smtputf8: has(smtp_proto::EXT_SMTP_UTF8),
        dsn: has(smtp_proto::EXT_DSN),
        auth: Mechanisms {
            plain: ehlo.auth() & smtp_proto::AUTH_PLAIN != 0,
            login: ehlo.auth() & smtp_proto::AUTH_LOGIN != 0,
        },
    }
}

fn results(rcpts: &[RcptSpec], reply: &Reply, host: Option<&str>) -> Vec<RcptResult> {
    rcpts
        .iter()
        .map(|r| RcptResult {
            address: r.address.clone(),
            outcome: outcome(reply),
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
    let policy = SessionPolicy {
        require_tls: route.is_some_and(|r| r.require_tls || r.auth.is_some()),
        auth: route.and_then(|r| r.auth.as_ref()),
        verify: route.and_then(|r| r.verify.as_ref()),
    };
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
            if deadline::passed() {
                // Out of time for this round: what we have is the answer; try again later.
                return results(&msg.recipients, &last, None);
            }
            match attempt(host, *addr, msg, cfg, &policy).await {
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

/// What the route asks of a session.
struct SessionPolicy<'a> {
    /// Never in plaintext (asked for, or implied by credentials).
    require_tls: bool,
    auth: Option<&'a Credentials>,
    /// Authenticate the server's certificate (routes with credentials) instead of
    /// opportunistic TLS.
    verify: Option<&'a VerifiedTls>,
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
    policy: &SessionPolicy<'_>,
) -> Attempt {
    let label = format!("{host}[{}]", addr.ip());
    let key = PoolKey {
        addr,
        user: policy.auth.map(|c| c.username.clone()),
    };
    // A cached session to this address first: RSET proves it is still alive.
    while let Some((mut conn, ext)) = cfg
        .pool
        .as_ref()
        .and_then(|p| p.take(&key, policy.require_tls))
    {
        if !matches!(conn.command("RSET").await, Ok(r) if r.code == 250) {
            continue;
        }
        if let Ok((attempt, reusable)) =
            mail_transaction(&mut conn, host, msg, &ext, cfg, &label).await
        {
            finish(cfg, key, conn, ext, reusable).await;
            return attempt;
        }
    }
    let connect = TcpStream::connect(addr);
    let tcp = match tokio::time::timeout(deadline::clamp(cfg.connect_timeout), connect).await {
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
        wire: Wire::new(Box::new(tcp), cfg.command_timeout),
        tls: false,
    };
    let lost = |e: io::Error| match e.kind() {
        // Our own refusal to write a line: no other host would fare better.
        io::ErrorKind::InvalidInput => {
            let reply = Reply::local(554, "5.6.0", e.to_string());
            Attempt::Done(results(&msg.recipients, &reply, None))
        }
        // The server broke the protocol (endless line, endless reply, bad syntax).
        io::ErrorKind::InvalidData => Attempt::NextHost(Reply::local(
            451,
            "4.5.0",
            format!("protocol error from {label}: {e}"),
        )),
        _ => Attempt::NextHost(Reply::local(
            451,
            "4.4.2",
            format!("lost connection with {label}: {e}"),
        )),
    };
    let ext = match open_session(&mut conn, host, cfg, policy, &label).await {
        Ok(Ok(ext)) => ext,
        Ok(Err(reply)) => return Attempt::NextHost(reply),
        Err(e) => return lost(e),
    };
    match mail_transaction(&mut conn, host, msg, &ext, cfg, &label).await {
        Ok((attempt, reusable)) => {
            finish(cfg, key, conn, ext, reusable).await;
            attempt
        }
        Err(e) => lost(e),
    }
}

/// Parks a clean session for the next message to the same address, or says goodbye.
async fn finish(cfg: &ClientConfig, key: PoolKey, mut conn: Conn, ext: Extensions, reusable: bool) {
    match &cfg.pool {
        Some(pool) if reusable => pool.put(key, conn, ext),
        _ => {
            let _ = conn.command("QUIT").await;
        }
    }
}

/// Sessions are reused per address and identity: a session authenticated as one user is
/// never handed to a route with other credentials, or to one without.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    addr: SocketAddr,
    user: Option<String>,
}

/// A parked session: the connection, what its server offers, since when it idles.
type IdleSession = (Conn, Extensions, std::time::Instant);

/// Idle SMTP sessions kept for reuse by address, like Postfix's connection cache.
pub struct ConnectionPool {
    idle: std::sync::Mutex<std::collections::HashMap<PoolKey, Vec<IdleSession>>>,
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
    fn take(&self, key: &PoolKey, require_tls: bool) -> Option<(Conn, Extensions)> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.get_mut(key)?;
        while let Some((conn, ext, since)) = list.pop() {
            if since.elapsed() < self.max_idle && (conn.tls || !require_tls) {
                return Some((conn, ext));
            }
        }
        None
    }

    fn put(&self, key: PoolKey, conn: Conn, ext: Extensions) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.entry(key).or_default();
        list.retain(|(_, _, since)| since.elapsed() < self.max_idle);
        // Dropping a surplus session closes it without QUIT; the peer copes.
        if list.len() < self.max_per_address {
            list.push((conn, ext, std::time::Instant::now()));
        }
    }
}

/// Greeting, EHLO, STARTTLS, AUTH: a session ready for MAIL, or why this host will not do.
async fn open_session(
    conn: &mut Conn,
    host: &str,
    cfg: &ClientConfig,
    policy: &SessionPolicy<'_>,
    label: &str,
) -> io::Result<Result<Extensions, Reply>> {
    let greeting = conn.wire.read_reply(cfg.command_timeout).await?;
    if greeting.code != 220 {
        return Ok(Err(greeting));
    }
    let mut ehlo = conn.command(&format!("EHLO {}", cfg.helo_name)).await?;
    let mut ext = if ehlo.code == 250 {
        extensions(&ehlo)
    } else {
        ehlo = conn.command(&format!("HELO {}", cfg.helo_name)).await?;
        if ehlo.code != 250 {
            return Ok(Err(ehlo));
        }
        Extensions::default()
    };
    if ext.starttls {
        let reply = conn.command("STARTTLS").await?;
        if reply.code == 220 {
            let plain = std::mem::replace(
                &mut conn.wire,
                Wire::new(Box::new(tokio::io::empty()), cfg.command_timeout),
            )
            .into_io()?;
            let name =
                rustls::pki_types::ServerName::try_from(host.to_string()).unwrap_or_else(|_| {
                    rustls::pki_types::ServerName::try_from("localhost").expect("static name")
                });
            let tls = tokio::time::timeout(
                deadline::clamp(cfg.command_timeout),
                TlsConnector::from(
                    policy
                        .verify
                        .map_or_else(|| cfg.tls.clone(), |v| v.0.clone()),
                )
                .connect(name, plain),
            )
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
            conn.wire = Wire::new(Box::new(tls), cfg.command_timeout);
            conn.tls = true;
            ehlo = conn.command(&format!("EHLO {}", cfg.helo_name)).await?;
            if ehlo.code != 250 {
                return Ok(Err(ehlo));
            }
            ext = extensions(&ehlo);
        } else if policy.require_tls {
            return Ok(Err(Reply::local(
                451,
                "4.7.5",
                format!("TLS required but {label} refused STARTTLS"),
            )));
        }
    }
    if let Some(creds) = policy.auth {
        // Checked before `require_tls` below so the reason names the credentials.
        if let Err(reply) = authenticate(&mut conn.wire, conn.tls, creds, ext.auth, label).await? {
            let _ = conn.command("QUIT").await;
            return Ok(Err(reply));
        }
    }
    if policy.require_tls && !conn.tls {
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
        mail.push_str(&format!(" SIZE={}", msg.prefix.len() + msg.body.len()));
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
        let mut batch = vec![mail.as_str()];
        batch.extend(rcpt_lines.iter().map(String::as_str));
        conn.wire.send_commands(&batch).await?;
        let mail_reply = conn.wire.read_reply(cfg.command_timeout).await?;
        let mut replies = Vec::new();
        for _ in &rcpt_lines {
            replies.push(conn.wire.read_reply(cfg.command_timeout).await?);
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
        let attempt = match outcome(&mail_reply) {
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
    conn.wire.send_body(&[msg.prefix, msg.body]).await?;
    let final_reply = match conn.wire.read_reply(cfg.data_timeout).await {
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
    let reusable = final_reply.is_remote();
    out.extend(results(&accepted, &final_reply, Some(host)));
    Ok((Attempt::Done(out), reusable))
}
