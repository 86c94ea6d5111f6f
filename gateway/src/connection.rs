//! One client connection: moves bytes between the socket and the session, enforces the
//! deadlines, does the TLS handshake, and carries messages to durable storage.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use baton_domain::QueueId;
use baton_smtp::{Event, ListenerKind, PeerInfo, Reply, Session, SessionConfig, TlsInfo, canned};
use baton_store::BlobWriter;
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

use crate::server::Shared;
use crate::stream::Stream;

/// Largest single read; also bounds the body bytes handed to storage at once.
const READ_CHUNK: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub(crate) struct Deadlines {
    /// From our last reply to the end of the client's next command line, however the
    /// line trickles in.
    pub(crate) command: Duration,
    pub(crate) data: Duration,
    pub(crate) min_data_rate: u64,
    pub(crate) data_rate_window: Duration,
    pub(crate) tls_handshake: Duration,
    /// A whole session, however active.
    pub(crate) session: Duration,
}

/// `soft`: stop taking new transactions. `hard`: the grace period is over.
#[derive(Clone)]
pub(crate) struct Shutdown {
    pub(crate) soft: watch::Receiver<bool>,
    pub(crate) hard: watch::Receiver<bool>,
}

static SESSION_COUNTER: AtomicU64 = AtomicU64::new(1);

pub(crate) async fn serve_connection(
    shared: Arc<Shared>,
    config: Arc<SessionConfig>,
    peer: SocketAddr,
    socket: TcpStream,
    signals: Shutdown,
) {
    let id = SESSION_COUNTER.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!("session", session = id, peer = %peer, listener = config.listener.as_str());
    async move {
        tracing::debug!("connected");
        let session_ends = Instant::now() + shared.deadlines.session;
        let mut conn = Connection {
            shared,
            stream: None,
            buf: BytesMut::new(),
            body: Vec::new(),
            blob: None,
            blob_failed: false,
            signals,
            rate: RateMeter::default(),
            session_ends,
            line_deadline: None,
        };
        let outcome = conn.run(config, peer, socket).await;
        match outcome {
            Ok(()) => tracing::debug!("closed"),
            Err(e) => tracing::info!(reason = %e, "connection ended"),
        }
        if let Some(blob) = conn.blob.take() {
            blob.abort().await;
        }
    }
    .instrument(span)
    .await;
}

#[derive(Debug, thiserror::Error)]
enum EndReason {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("client closed the connection")]
    Eof,
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
    #[error("{0}")]
    Terminated(&'static str),
}

struct Connection {
    shared: Arc<Shared>,
    stream: Option<Stream>,
    buf: BytesMut,
    body: Vec<u8>,
    blob: Option<Box<dyn BlobWriter>>,
    /// Storage failed while the body streamed: the body is still read, then refused with 451.
    blob_failed: bool,
    signals: Shutdown,
    rate: RateMeter,
    /// `max_session_time` after the connection was accepted.
    session_ends: Instant,
    /// When the command line being waited for must be complete; set by the first read
    /// after a reply, cleared when the next reply is sent.
    line_deadline: Option<Instant>,
}

impl Connection {
    async fn run(
        &mut self,
        config: Arc<SessionConfig>,
        peer: SocketAddr,
        socket: TcpStream,
    ) -> Result<(), EndReason> {
        let mut tls_info = None;
        let mut stream = Stream::Plain(socket);
        if config.listener == ListenerKind::Submissions {
            let (s, info) = Box::pin(self.handshake(stream)).await?;
            stream = s;
            tls_info = Some(info);
        }
        self.stream = Some(stream);
        let (trusted_network, network_tenant) = self.shared.networks.classify(peer.ip());
        let peer_info = PeerInfo {
            ip: peer.ip(),
            trusted_network,
        };
        let mut session = Session::new(config, peer_info, tls_info);
        if let Some(tenant) = network_tenant {
            // Its senders must be the tenant's, as an authenticated user's are.
            match self.shared.auth.tenant_domains(&tenant).await {
                Ok(domains) => session.bind_network_tenant(tenant, domains),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot load the bound tenant's domains");
                    session.terminate(baton_smtp::Reply::new(
                        421,
                        "4.3.0",
                        "Service temporarily unavailable, try again later",
                    ));
                }
            }
        }
        // Refused before the greeting (a 421 is queued): no 220 after it.
        if !session.has_output() {
            session.greet();
        }
        loop {
            let (consumed, event) = session.advance(&self.buf, &mut self.body);
            self.buf.advance(consumed);
            self.store_body().await;
            match event {
                Event::NeedInput => {
                    self.flush(&mut session).await?;
                    if self.buf.is_empty() {
                        // Release buffers while idle: thousands of idle sessions stay cheap.
                        self.buf = BytesMut::new();
                        if !session.in_body() {
                            self.body = Vec::new();
                        }
                    }
                    if let Some(reply) = self.read(&session).await? {
                        session.terminate(reply);
                    }
                }
                Event::StartTls => {
                    self.flush(&mut session).await?;
                    // Anything the client pipelined after STARTTLS arrived in plaintext and
                    // must not be processed as if it came over TLS (CVE-2011-0411).
                    if !self.buf.is_empty() {
                        tracing::warn!(
                            bytes = self.buf.len(),
                            "discarding plaintext sent after STARTTLS"
                        );
                        self.buf.clear();
                    }
                    let stream = self
                        .stream
                        .take()
                        .ok_or(EndReason::Terminated("stream lost"))?;
                    let (stream, info) = Box::pin(self.handshake(stream)).await?;
                    self.stream = Some(stream);
                    session.tls_established(info);
                }
                Event::Authenticate(credentials) => {
                    self.flush(&mut session).await?;
                    let outcome = Box::pin(self.shared.auth.verify(peer.ip(), credentials)).await;
                    session.auth_outcome(outcome);
                }
                Event::MessageStart => {
                    let id = QueueId::generate();
                    let now = time::OffsetDateTime::now_utc();
                    let date = now
                        .format(&time::format_description::well_known::Rfc2822)
                        .unwrap_or_default();
                    let header = session.begin_message(id, &date, now.unix_timestamp());
                    self.blob_failed = false;
                    self.rate = RateMeter::default();
                    match Box::pin(self.shared.intake.create(&id)).await {
                        Ok(mut w) => match Box::pin(w.write(header.as_bytes())).await {
                            Ok(()) => self.blob = Some(w),
                            Err(e) => self.storage_failed(&e),
                        },
                        Err(e) => self.storage_failed(&e),
                    }
                    tracing::debug!(queue_id = %id, "message started");
                }
                Event::MessageComplete(envelope) => {
                    let span = tracing::info_span!("message", queue_id = %envelope.queue_id);
                    let result = match (self.blob.take(), self.blob_failed) {
                        (Some(blob), false) => {
                            // Boxed, like every rare await here: an idle session's task then
                            // only holds the small read future.
                            Box::pin(
                                self.shared
                                    .intake
                                    .commit(blob, &envelope)
                                    .instrument(span.clone()),
                            )
                            .await
                        }
                        (blob, _) => {
                            if let Some(b) = blob {
                                b.abort().await;
                            }
                            Err(canned::storage_failure())
                        }
                    };
                    span.in_scope(|| match &result {
                        Ok(_) => tracing::info!(
                            from = %envelope.mail_from.as_ref().map(ToString::to_string).unwrap_or_default(),
                            recipients = envelope.recipients.len(),
                            size = envelope.size,
                            tenant = envelope.tenant.as_ref().map(|t| t.0.as_str()).unwrap_or(""),
                            "accepted"
                        ),
                        Err(r) => tracing::warn!(reply = %r, "not accepted"),
                    });
                    session.message_outcome(result);
                }
                Event::MessageAborted => {
                    if let Some(blob) = self.blob.take() {
                        blob.abort().await;
                    }
                }
                Event::Close => {
                    self.flush(&mut session).await?;
                    if let Some(stream) = self.stream.as_mut() {
                        Box::pin(linger_close(stream)).await;
                    }
                    return Ok(());
                }
            }
        }
    }

    fn storage_failed(&mut self, e: &baton_store::StoreError) {
        tracing::error!(error = %e, "cannot store message body");
        self.blob_failed = true;
        self.blob = None;
    }

    async fn store_body(&mut self) {
        if self.body.is_empty() {
            return;
        }
        if let Some(blob) = self.blob.as_mut()
            && let Err(e) = Box::pin(blob.write(&self.body)).await
        {
            let e = e.to_string();
            if let Some(b) = self.blob.take() {
                b.abort().await;
            }
            tracing::error!(error = %e, "cannot store message body");
            self.blob_failed = true;
        }
        self.body.clear();
    }

    async fn flush(&mut self, session: &mut Session) -> Result<(), EndReason> {
        if !session.has_output() {
            return Ok(());
        }
        let out = session.take_output();
        let stream = self
            .stream
            .as_mut()
            .ok_or(EndReason::Terminated("stream lost"))?;
        let write = async {
            stream.write_all(&out).await?;
            stream.flush().await
        };
        tokio::time::timeout(self.shared.deadlines.command, write)
            .await
            .map_err(|_| EndReason::Terminated("write timed out"))??;
        self.line_deadline = None;
        Ok(())
    }

    /// Reads more input. Returns a reply to end the session with when a deadline, the data
    /// rate or shutdown says so.
    async fn read(&mut self, session: &Session) -> Result<Option<Reply>, EndReason> {
        let in_body = session.in_body();
        let between_transactions =
            !in_body && !session.message_open() && !session.has_transaction();
        if *self.signals.hard.borrow() || (*self.signals.soft.borrow() && between_transactions) {
            return Ok(Some(canned::shutting_down()));
        }
        let deadlines = &self.shared.deadlines;
        let now = Instant::now();
        if now >= self.session_ends {
            tracing::info!(limit = ?deadlines.session, "session lasted too long");
            return Ok(Some(session_too_long()));
        }
        // Inside a body every read must come within data_timeout (and the rate holds);
        // a command line must be complete by its deadline, however many reads it takes.
        let deadline = if in_body {
            now + deadlines.data
        } else {
            *self.line_deadline.get_or_insert(now + deadlines.command)
        };
        let stream = self
            .stream
            .as_mut()
            .ok_or(EndReason::Terminated("stream lost"))?;
        let mut soft = self.signals.soft.clone();
        let mut hard = self.signals.hard.clone();
        let buf = &mut self.buf;
        let read = async {
            stream.readable().await?;
            buf.reserve(READ_CHUNK);
            stream.read_buf(buf).await
        };
        let n = tokio::select! {
            r = tokio::time::timeout_at(deadline.min(self.session_ends), read) => match r {
                Ok(r) => r?,
                Err(_) if deadline < self.session_ends => {
                    tracing::info!(in_body, "client timed out");
                    return Ok(Some(canned::timeout()));
                }
                Err(_) => {
                    tracing::info!(limit = ?deadlines.session, "session lasted too long");
                    return Ok(Some(session_too_long()));
                }
            },
            _ = hard.wait_for(|v| *v) => return Ok(Some(canned::shutting_down())),
            _ = soft.wait_for(|v| *v), if between_transactions => return Ok(Some(canned::shutting_down())),
        };
        if n == 0 {
            return Err(EndReason::Eof);
        }
        if in_body
            && !self.rate.record(
                n as u64,
                deadlines.min_data_rate,
                deadlines.data_rate_window,
            )
        {
            tracing::info!(min_rate = deadlines.min_data_rate, "client too slow");
            return Ok(Some(canned::too_slow()));
        }
        Ok(None)
    }

    async fn handshake(&self, stream: Stream) -> Result<(Stream, TlsInfo), EndReason> {
        let Stream::Plain(tcp) = stream else {
            return Err(EndReason::Terminated("TLS already active"));
        };
        let accept = self.shared.tls.accept(tcp);
        let tls = tokio::time::timeout(self.shared.deadlines.tls_handshake, accept)
            .await
            .map_err(|_| EndReason::Handshake("timed out".into()))?
            .map_err(|e| EndReason::Handshake(e.to_string()))?;
        let (_, conn) = tls.get_ref();
        let info = TlsInfo {
            version: conn
                .protocol_version()
                .and_then(|v| v.as_str())
                .unwrap_or("TLS")
                .replace('_', "."),
            cipher: conn
                .negotiated_cipher_suite()
                .and_then(|s| s.suite().as_str())
                .unwrap_or("unknown")
                .to_string(),
        };
        tracing::debug!(version = %info.version, cipher = %info.cipher, "TLS established");
        Ok((Stream::Tls(Box::new(tls)), info))
    }
}

fn session_too_long() -> Reply {
    Reply::new(
        421,
        "4.4.2",
        "Session time limit exceeded, closing connection",
    )
}

/// Sends FIN, then reads and drops whatever the client still sends for a moment. Closing
/// with unread input makes the kernel send RST, which can destroy the final reply before
/// the client reads it (a client that pipelined past a bare LF would never see why).
async fn linger_close(stream: &mut Stream) {
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.shutdown()).await;
    let mut sink = [0u8; 4096];
    let mut budget: usize = 1024 * 1024;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while budget > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => budget = budget.saturating_sub(n),
            }
        }
    })
    .await;
}

/// Average receive rate over a sliding window while a body is being received.
#[derive(Debug)]
struct RateMeter {
    window_start: Instant,
    bytes: u64,
}

impl Default for RateMeter {
    fn default() -> Self {
        RateMeter {
            window_start: Instant::now(),
            bytes: 0,
        }
    }
}

impl RateMeter {
    /// Records `n` bytes; false when a full window passed below `min_rate`.
    fn record(&mut self, n: u64, min_rate: u64, window: Duration) -> bool {
        self.bytes += n;
        let elapsed = self.window_start.elapsed();
        if elapsed < window {
            return true;
        }
        let ok = self.bytes as f64 >= min_rate as f64 * elapsed.as_secs_f64();
        self.window_start = Instant::now();
        self.bytes = 0;
        ok
    }
}
