//! The gateway's API over real sockets and the embedded backend: `spawn_app()` binds port 0
//! listeners on a fresh data directory and returns their addresses. One test binary; the
//! modules group tests by concern.

mod auth;
mod deadlines;
mod proxy;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use baton_config::{Config, Settings};
use baton_embedded::{EmbeddedBackend, EmbeddedOptions};
use baton_gateway::{Gateway, GatewayDeps};
use baton_smtp::ListenerKind;
use baton_store::{BlobStore, BlobWriter, StoreError};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadHalf, WriteHalf,
};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;

struct App {
    relay: SocketAddr,
    submission: SocketAddr,
    backend: EmbeddedBackend,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
    dir: tempfile::TempDir,
}

impl App {
    /// A client config that trusts the self-signed certificate the gateway generated.
    fn tls_client(&self) -> tokio_rustls::TlsConnector {
        let cert = CertificateDer::from_pem_file(self.dir.path().join("tls/cert.pem"))
            .expect("generated certificate");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).expect("trust anchor");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }

    /// Adds user `name` of tenant acme with `password`.
    async fn add_user(&self, name: &str, password: &str) {
        let record = baton_store::UserRecord {
            tenant: baton_domain::TenantId("acme".into()),
            password_hash: baton_gateway::hash_password(password).expect("hash"),
        };
        baton_store::put_user(&self.backend.ledger(), name, &record)
            .await
            .expect("put user");
    }
}

fn settings(dir: &std::path::Path, extra: &[(&str, &str)]) -> Settings {
    let mut env = vec![
        (
            "BATON_LISTEN__SUBMISSION".to_string(),
            "127.0.0.1:0".to_string(),
        ),
        ("BATON_LISTEN__SUBMISSIONS".to_string(), "".to_string()),
        ("BATON_LISTEN__RELAY".to_string(), "127.0.0.1:0".to_string()),
        (
            "BATON_RELAY__ALLOW_NETWORKS".to_string(),
            "[\"127.0.0.0/8\"]".to_string(),
        ),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let mut s = Config::load(None, env).expect("valid test config");
    s.raw.data_dir = dir.to_path_buf();
    s
}

async fn spawn_app_with(extra: &[(&str, &str)], blobs: Option<Arc<dyn BlobStore>>) -> App {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = settings(dir.path(), extra);
    let backend = EmbeddedBackend::open(dir.path(), EmbeddedOptions::default()).expect("backend");
    let deps = GatewayDeps {
        blobs: blobs.unwrap_or_else(|| Arc::new(backend.blob_store())),
        queue: Arc::new(backend.queue("intake", 10, None)),
        ledger: Arc::new(backend.ledger()),
    };
    let gateway = Gateway::bind(&settings, deps).await.expect("bind");
    let addr = |kind| {
        gateway
            .local_addrs()
            .into_iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, a)| a)
            .expect("listener")
    };
    let (relay, submission) = (addr(ListenerKind::Relay), addr(ListenerKind::Submission));
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(async move {
        gateway
            .run(async {
                let _ = stopped.await;
            })
            .await
            .expect("run");
    });
    App {
        relay,
        submission,
        backend,
        stop: Some(stop),
        done,
        dir,
    }
}

async fn spawn_app() -> App {
    spawn_app_with(&[], None).await
}

/// Reads one (possibly multi-line) reply, each line within `limit`; "" on EOF or reset.
async fn read_reply(reader: &mut BufReader<ReadHalf<Box<dyn Io>>>, limit: Duration) -> String {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(limit, reader.read_line(&mut line))
            .await
            .expect("reply in time")
            .unwrap_or(0);
        if n == 0 {
            return all;
        }
        all.push_str(&line);
        if line.as_bytes().get(3) != Some(&b'-') {
            return all;
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct Client {
    reader: BufReader<ReadHalf<Box<dyn Io>>>,
    writer: WriteHalf<Box<dyn Io>>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let c = Client::connect_raw(addr, None).await;
        c.greeted().await
    }

    /// Connects from `local` (any 127.0.0.0/8 address works on loopback).
    async fn connect_from(local: IpAddr, addr: SocketAddr) -> Client {
        let c = Client::connect_raw(addr, Some(local)).await;
        c.greeted().await
    }

    async fn connect_raw(addr: SocketAddr, local: Option<IpAddr>) -> Client {
        let socket = TcpSocket::new_v4().expect("socket");
        if let Some(ip) = local {
            socket
                .bind(SocketAddr::new(ip, 0))
                .expect("bind local address");
        }
        let stream: Box<dyn Io> = Box::new(socket.connect(addr).await.expect("connect"));
        Client::over(stream)
    }

    fn over(stream: Box<dyn Io>) -> Client {
        let (r, w) = tokio::io::split(stream);
        Client {
            reader: BufReader::new(r),
            writer: w,
        }
    }

    async fn greeted(mut self) -> Client {
        let greeting = self.reply().await;
        assert!(greeting.starts_with("220 "), "{greeting}");
        self
    }

    /// EHLO, STARTTLS, the handshake and EHLO again: ready for AUTH.
    async fn secured(mut self, app: &App) -> Client {
        self.command("EHLO test").await;
        let reply = self.command("STARTTLS").await;
        assert!(reply.starts_with("220 "), "{reply}");
        assert!(self.reader.buffer().is_empty(), "no input after STARTTLS");
        let stream = self.reader.into_inner().unsplit(self.writer);
        let name = ServerName::try_from("localhost").expect("name");
        let tls = app
            .tls_client()
            .connect(name, stream)
            .await
            .expect("TLS handshake");
        let mut c = Client::over(Box::new(tls));
        assert!(c.command("EHLO test").await.contains("AUTH PLAIN"));
        c
    }

    /// Reads one (possibly multi-line) reply; "" on EOF.
    async fn reply(&mut self) -> String {
        self.reply_within(Duration::from_secs(10)).await
    }

    async fn reply_within(&mut self, limit: Duration) -> String {
        read_reply(&mut self.reader, limit).await
    }

    async fn send(&mut self, data: &str) {
        self.writer.write_all(data.as_bytes()).await.expect("write");
    }

    async fn command(&mut self, line: &str) -> String {
        self.send(&format!("{line}\r\n")).await;
        self.reply().await
    }

    /// DATA with a small message (From a@x.test, Subject t, body "hello"); its queue id.
    async fn data_queued(&mut self) -> String {
        assert!(self.command("DATA").await.starts_with("354"));
        let reply = self
            .command("From: a@x.test\r\nSubject: t\r\n\r\nhello\r\n.")
            .await;
        reply
            .strip_prefix("250 2.0.0 Ok: queued as ")
            .expect("queued")
            .trim()
            .to_string()
    }
}

#[tokio::test]
async fn accepted_message_is_durable_before_250() {
    let app = spawn_app().await;
    let mut c = Client::connect(app.relay).await;
    assert!(c.command("EHLO test").await.contains("250 STARTTLS"));
    assert!(
        c.command("MAIL FROM:<a@x.test>")
            .await
            .starts_with("250 2.1.0")
    );
    assert!(
        c.command("RCPT TO:<b@y.test>")
            .await
            .starts_with("250 2.1.5")
    );
    let id = c.data_queued().await;
    // The 250 came back: both the queue entry and the body must already be readable.
    let queued = app.backend.list_queue("intake").await.expect("list");
    assert_eq!(queued.len(), 1);
    let envelope: baton_domain::Envelope =
        serde_json::from_slice(&queued[0].body).expect("envelope");
    assert_eq!(envelope.queue_id.to_string(), id);
    let body = app.backend.blob_store().read(&id).await.expect("body");
    assert!(body.starts_with(b"Received: from test ([127.0.0.1])"));
    assert!(body.ends_with(b"Subject: t\r\n\r\nhello\r\n"));
    assert_eq!(envelope.size as usize, body.len());
}

/// A blob store whose commits always fail, like a full or broken disk.
struct FailingBlobs;
struct FailingWriter;

#[async_trait]
impl BlobStore for FailingBlobs {
    async fn create(&self, _: &str) -> Result<Box<dyn BlobWriter>, StoreError> {
        Ok(Box::new(FailingWriter))
    }
    async fn read(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        Err(StoreError::NotFound(key.into()))
    }
    async fn delete(&self, _: &str) -> Result<(), StoreError> {
        Ok(())
    }
}

#[async_trait]
impl BlobWriter for FailingWriter {
    async fn write(&mut self, _: &[u8]) -> Result<(), StoreError> {
        Ok(())
    }
    async fn commit(self: Box<Self>) -> Result<u64, StoreError> {
        Err(StoreError::Io(std::io::Error::other("disk on fire")))
    }
    async fn abort(self: Box<Self>) {}
}

#[tokio::test]
async fn storage_failure_gives_451_and_queues_nothing() {
    let app = spawn_app_with(&[], Some(Arc::new(FailingBlobs))).await;
    let mut c = Client::connect(app.relay).await;
    c.command("EHLO test").await;
    c.command("MAIL FROM:<a@x.test>").await;
    c.command("RCPT TO:<b@y.test>").await;
    c.command("DATA").await;
    let reply = c
        .command("From: a@x.test\r\nSubject: t\r\n\r\nhello\r\n.")
        .await;
    assert!(reply.starts_with("451 4.3.0"), "{reply}");
    assert!(
        app.backend
            .list_queue("intake")
            .await
            .expect("list")
            .is_empty()
    );
    // The session goes on: the client may retry at once.
    assert!(c.command("NOOP").await.starts_with("250"));
}

#[tokio::test]
async fn idle_client_times_out_with_421() {
    let app = spawn_app_with(&[("BATON_LIMITS__COMMAND_TIMEOUT", "300ms")], None).await;
    let mut c = Client::connect(app.relay).await;
    let reply = c.reply().await;
    assert!(reply.starts_with("421 4.4.2"), "{reply}");
    assert_eq!(c.reply().await, "", "connection must be closed");
}

#[tokio::test]
async fn shutdown_finishes_open_transaction_then_closes() {
    let mut app = spawn_app_with(&[("BATON_LIMITS__SHUTDOWN_GRACE", "5s")], None).await;
    let mut idle = Client::connect(app.relay).await;
    let mut busy = Client::connect(app.relay).await;
    busy.command("EHLO test").await;
    busy.command("MAIL FROM:<a@x.test>").await;
    busy.command("RCPT TO:<b@y.test>").await;
    let _ = app.stop.take().map(|s| s.send(()));
    // The idle session is told at once; new connections are refused.
    assert!(idle.reply().await.starts_with("421 4.3.2"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        TcpStream::connect(app.relay).await.is_err(),
        "still accepting"
    );
    // The session inside a transaction may finish it, and only then is closed.
    assert!(busy.command("DATA").await.starts_with("354"));
    assert!(
        busy.command("From: a@x.test\r\nSubject: t\r\n\r\nbye\r\n.")
            .await
            .starts_with("250 2.0.0")
    );
    assert!(busy.reply().await.starts_with("421 4.3.2"));
    tokio::time::timeout(Duration::from_secs(5), &mut app.done)
        .await
        .expect("gateway stopped")
        .expect("join");
    assert_eq!(
        app.backend.list_queue("intake").await.expect("list").len(),
        1
    );
}

#[tokio::test]
async fn connections_per_ip_are_capped() {
    let app = spawn_app_with(&[("BATON_LIMITS__MAX_CONNECTIONS_PER_IP", "2")], None).await;
    let _a = Client::connect(app.relay).await;
    let _b = Client::connect(app.relay).await;
    let mut c = Client::connect_raw(app.relay, None).await;
    let line = c.reply().await;
    assert!(line.starts_with("421 4.7.0"), "{line}");
}
