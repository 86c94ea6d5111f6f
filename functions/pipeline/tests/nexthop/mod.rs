//! A scripted next-hop SMTP server for client tests: it logs every line it receives (the
//! witness of what we sent), offers PIPELINING, DSN and 8BITMIME, optionally STARTTLS (a
//! certificate made with rcgen) and AUTH PLAIN/LOGIN, and can open with any greeting bytes.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use baton_pipeline::outbound::{
    ClientConfig, Credentials, Route, VerifiedTls, opportunistic_tls, verified_tls,
};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[derive(Clone)]
pub struct Script {
    /// Sent on connect, as is (may be hostile: no LF, invalid UTF-8, endless).
    pub greeting: Vec<u8>,
    pub starttls: bool,
    /// Username and password AUTH must carry; MAIL without it gets 530.
    pub auth: Option<(String, String)>,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            greeting: b"220 hop.test ESMTP\r\n".to_vec(),
            starttls: false,
            auth: None,
        }
    }
}

pub struct Hop {
    pub addr: SocketAddr,
    /// The hop's self-signed certificate (names its IP address and hop.test).
    pub cert: rustls::pki_types::CertificateDer<'static>,
    lines: Arc<Mutex<Vec<Vec<u8>>>>,
    messages: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Hop {
    fn drop(&mut self) {
        self.task.abort();
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl Hop {
    pub async fn start(script: Script) -> Hop {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let lines: Arc<Mutex<Vec<Vec<u8>>>> = Default::default();
        let messages: Arc<Mutex<Vec<Vec<u8>>>> = Default::default();
        let (cert, acceptor) = tls_acceptor(addr);
        let acceptor = script.starttls.then_some(acceptor);
        let script = Arc::new(script);
        let (l, m) = (lines.clone(), messages.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (l, m, s, a) = (l.clone(), m.clone(), script.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let _ = session(Box::new(tcp), s, a, l, m).await;
                });
            }
        });
        Hop {
            addr,
            cert,
            lines,
            messages,
            task,
        }
    }

    /// Every line received, commands and message lines alike, CRLF stripped.
    pub fn lines(&self) -> Vec<Vec<u8>> {
        self.lines.lock().expect("lines").clone()
    }

    /// The command lines received (outside DATA), as text.
    pub fn commands(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut in_data = false;
        for line in self.lines() {
            if in_data {
                in_data = line != b".";
                continue;
            }
            in_data = line.eq_ignore_ascii_case(b"DATA");
            out.push(String::from_utf8_lossy(&line).into_owned());
        }
        out
    }

    /// Messages received, as the client sent them (still dot-stuffed, without the final dot).
    pub fn messages(&self) -> Vec<Vec<u8>> {
        self.messages.lock().expect("messages").clone()
    }

    /// A route sending everything to this hop; with credentials it verifies the hop's
    /// certificate against the hop's own, as setup does against a route's CA file.
    pub fn route(&self, auth: Option<Credentials>) -> Route {
        let trusted = auth.is_some().then(|| self.trusting(&self.cert));
        self.route_verified(auth, trusted)
    }

    /// A route whose TLS trusts only `verify` (when given).
    pub fn route_verified(&self, auth: Option<Credentials>, verify: Option<VerifiedTls>) -> Route {
        Route {
            pattern: "*".into(),
            capture: false,
            target: Some((self.addr.ip().to_string(), self.addr.port())),
            require_tls: false,
            auth,
            verify,
        }
    }

    /// A verifying TLS config whose only root is `cert`.
    pub fn trusting(&self, cert: &rustls::pki_types::CertificateDer<'static>) -> VerifiedTls {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ca.pem");
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            STANDARD.encode(cert.as_ref())
        );
        std::fs::write(&path, pem).expect("write CA");
        VerifiedTls(verified_tls(Some(&path)).expect("verified tls"))
    }
}

async fn session(
    io: Box<dyn Io>,
    script: Arc<Script>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    lines: Arc<Mutex<Vec<Vec<u8>>>>,
    messages: Arc<Mutex<Vec<Vec<u8>>>>,
) -> std::io::Result<()> {
    let mut r = BufReader::new(io);
    r.get_mut().write_all(&script.greeting).await?;
    let (mut tls, mut authed) = (false, false);
    let mut line = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        let text = line.strip_suffix(b"\r\n").unwrap_or(&line).to_vec();
        lines.lock().expect("lines").push(text.clone());
        let upper = String::from_utf8_lossy(&text).to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            let mut r = String::from("250-hop.test\r\n250-PIPELINING\r\n250-DSN\r\n");
            if script.starttls && !tls {
                r.push_str("250-STARTTLS\r\n");
            }
            if script.auth.is_some() {
                r.push_str("250-AUTH PLAIN LOGIN\r\n");
            }
            r + "250 8BITMIME"
        } else if upper == "STARTTLS" && acceptor.is_some() && !tls {
            r.get_mut().write_all(b"220 2.0.0 go ahead\r\n").await?;
            let plain = r.into_inner();
            let stream = acceptor.as_ref().expect("acceptor").accept(plain).await?;
            r = BufReader::new(Box::new(stream));
            tls = true;
            continue;
        } else if let Some(token) = upper.strip_prefix("AUTH PLAIN ") {
            let token = &String::from_utf8_lossy(&text)[text.len() - token.len()..];
            let expected = script
                .auth
                .as_ref()
                .map(|(u, p)| format!("\0{u}\0{p}").into_bytes());
            if STANDARD.decode(token).ok() == expected {
                authed = true;
                "235 2.7.0 Authentication successful".into()
            } else {
                "535 5.7.8 Authentication credentials invalid".into()
            }
        } else if upper.starts_with("MAIL") {
            if script.auth.is_some() && !authed {
                "530 5.7.0 Authentication required".into()
            } else {
                "250 2.1.0 Ok".into()
            }
        } else if upper.starts_with("RCPT") {
            "250 2.1.5 Ok".into()
        } else if upper == "DATA" {
            r.get_mut().write_all(b"354 go ahead\r\n").await?;
            let mut message = Vec::new();
            loop {
                line.clear();
                if r.read_until(b'\n', &mut line).await? == 0 {
                    return Ok(());
                }
                lines
                    .lock()
                    .expect("lines")
                    .push(line.strip_suffix(b"\r\n").unwrap_or(&line).to_vec());
                if line == b".\r\n" {
                    break;
                }
                message.extend_from_slice(&line);
            }
            messages.lock().expect("messages").push(message);
            "250 2.0.0 Ok: queued".into()
        } else if upper == "RSET" || upper == "NOOP" {
            "250 2.0.0 Ok".into()
        } else if upper == "QUIT" {
            r.get_mut().write_all(b"221 2.0.0 Bye\r\n").await?;
            return Ok(());
        } else {
            "502 5.5.1 Not implemented".into()
        };
        r.get_mut()
            .write_all(format!("{reply}\r\n").as_bytes())
            .await?;
    }
}

/// A self-signed certificate for the hop's address, and an acceptor serving it.
pub fn tls_acceptor(
    addr: SocketAddr,
) -> (
    rustls::pki_types::CertificateDer<'static>,
    tokio_rustls::TlsAcceptor,
) {
    let names = vec![addr.ip().to_string(), "hop.test".into()];
    let cert = rcgen::generate_simple_self_signed(names).expect("cert");
    let der = cert.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![der.clone()], key)
    .expect("server config");
    (der, tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

pub fn client(command_timeout: Duration) -> ClientConfig {
    ClientConfig {
        helo_name: "relay.test".into(),
        port: 25,
        connect_timeout: Duration::from_secs(5),
        command_timeout,
        data_timeout: command_timeout,
        tls: opportunistic_tls().expect("tls"),
        pool: None,
    }
}
