//! The SMTP wire of one outbound session: the single writer of command lines, the body
//! writer (dot-stuffed as it streams), and a bounded reply reader.
//!
//! Contracts: every byte of every command line goes through [`command_line`], which refuses
//! CR, LF and NUL, so no value can add a command to the session; a reply line is at most
//! [`MAX_LINE`] octets and a reply at most [`MAX_LINES`] lines, so a hostile server costs
//! us a few KiB and a precise error, never unbounded buffering; reply text that is not
//! UTF-8 is read lossily rather than refused.

use std::io;
use std::time::Duration;

use smtp_proto::response::parser::ResponseReceiver;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::deadline;
use super::dot::DotStuffer;

/// The longest reply line we read, CRLF included (RFC 5321 allows 512; servers exceed it).
pub(super) const MAX_LINE: usize = 4096;
/// The most lines one reply may have.
pub(super) const MAX_LINES: usize = 100;
/// Body octets dot-stuffed and written per write.
pub(super) const BODY_CHUNK: usize = 64 * 1024;
/// The slowest a next hop may take the body, in octets per second, on average.
const MIN_BODY_RATE: u64 = 32 * 1024;
const READ_CHUNK: usize = 8 * 1024;

pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A reply from the server, or one we made up to say why there was none.
#[derive(Debug, Clone)]
pub(super) struct Reply {
    pub code: u16,
    pub enhanced: Option<String>,
    /// One line: the reply's lines joined by spaces, control characters replaced.
    pub text: String,
    /// The reply as received (for the EHLO keywords); empty for a local reply.
    pub raw: Vec<u8>,
}

impl Reply {
    pub fn local(code: u16, enhanced: &str, text: impl Into<String>) -> Self {
        Reply {
            code,
            enhanced: Some(enhanced.into()),
            text: text.into(),
            raw: Vec::new(),
        }
    }

    /// True when the server said it (the session answered and is in step).
    pub fn is_remote(&self) -> bool {
        !self.raw.is_empty()
    }

    fn remote(response: smtp_proto::Response<String>, raw: Vec<u8>) -> io::Result<Self> {
        if !(200..600).contains(&response.code) {
            return Err(protocol(format!(
                "reply code {} out of range",
                response.code
            )));
        }
        let [class, subject, detail] = response.esc;
        let enhanced = matches!(class, 2 | 4 | 5).then(|| format!("{class}.{subject}.{detail}"));
        // Reply text ends up in logs, the ledger and DSN fields: one line, no controls.
        let text: String = response
            .message
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect::<String>()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        Ok(Reply {
            code: response.code,
            enhanced,
            text,
            raw,
        })
    }
}

/// An error that means the server broke the protocol (not the connection).
fn protocol(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("timed out {what}"))
}

/// Every command line we send is built here: one line, CRLF-terminated, and refused if it
/// holds CR, LF or NUL, so no value can ever add a command to the session.
pub(super) fn command_line(line: &str, out: &mut Vec<u8>) -> io::Result<()> {
    if line.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing to send a command line with CR, LF or NUL",
        ));
    }
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(b"\r\n");
    Ok(())
}

pub(super) struct Wire {
    io: Box<dyn Io>,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// Limit for every write and for each reply but the one after the body.
    pub command_timeout: Duration,
}

impl Wire {
    pub fn new(io: Box<dyn Io>, command_timeout: Duration) -> Self {
        Wire {
            io,
            buf: vec![0; READ_CHUNK].into_boxed_slice(),
            start: 0,
            end: 0,
            command_timeout,
        }
    }

    /// The stream, to be wrapped in TLS after STARTTLS. Anything the server sent after its
    /// 220 arrived in plaintext and would be read as if it came over TLS (the client side of
    /// CVE-2011-0411): that is an error, never input.
    pub fn into_io(self) -> io::Result<Box<dyn Io>> {
        if self.start != self.end {
            return Err(protocol("server sent data after its reply to STARTTLS"));
        }
        Ok(self.io)
    }

    /// Sends `lines` in one write (one line, or a PIPELINING batch).
    pub async fn send_commands(&mut self, lines: &[&str]) -> io::Result<()> {
        let mut out = Vec::with_capacity(lines.iter().map(|l| l.len() + 2).sum());
        for line in lines {
            command_line(line, &mut out)?;
        }
        self.write(&out).await
    }

    /// One command, one reply.
    pub async fn command(&mut self, line: &str) -> io::Result<Reply> {
        self.send_commands(&[line]).await?;
        self.read_reply(self.command_timeout).await
    }

    /// The message after DATA's 354: `parts` in order, dot-stuffed in chunks as they go
    /// out, then the terminating CRLF.CRLF. Never a second copy of the message. The whole
    /// body gets one deadline too (the command timeout plus time at `MIN_BODY_RATE`), so a
    /// next hop that reads one chunk just before each write would time out cannot hold a
    /// worker for hours.
    pub async fn send_body(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        let size: usize = parts.iter().map(|p| p.len()).sum();
        let budget = self.command_timeout + Duration::from_secs((size as u64) / MIN_BODY_RATE);
        tokio::time::timeout(
            deadline::clamp(budget),
            self.send_body_unbounded_in_time(parts),
        )
        .await
        .map_err(|_| timed_out("sending the message body (too slow)"))?
    }

    async fn send_body_unbounded_in_time(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        let mut stuffer = DotStuffer::default();
        let mut out = Vec::with_capacity(BODY_CHUNK + BODY_CHUNK / 2 + 8);
        for part in parts {
            for chunk in part.chunks(BODY_CHUNK) {
                out.clear();
                stuffer.push(chunk, &mut out);
                self.write(&out).await?;
            }
        }
        out.clear();
        stuffer.finish(&mut out);
        self.write(&out).await
    }

    async fn write(&mut self, data: &[u8]) -> io::Result<()> {
        let write = async {
            self.io.write_all(data).await?;
            self.io.flush().await
        };
        tokio::time::timeout(deadline::clamp(self.command_timeout), write)
            .await
            .map_err(|_| timed_out("writing to the server"))?
    }

    /// One reply, all its lines, within `timeout`.
    pub async fn read_reply(&mut self, timeout: Duration) -> io::Result<Reply> {
        tokio::time::timeout(
            deadline::clamp(timeout),
            self.read_reply_unbounded_in_time(),
        )
        .await
        .map_err(|_| timed_out("waiting for the server"))?
    }

    /// Lines are parsed by smtp-proto's `ResponseReceiver` (code, enhanced code, text,
    /// continuation; it reads non-UTF-8 text lossily and caps the text at 4096 octets);
    /// the line and line-count limits are ours.
    async fn read_reply_unbounded_in_time(&mut self) -> io::Result<Reply> {
        let mut receiver = ResponseReceiver::default();
        let mut raw = Vec::new();
        let mut line = Vec::new();
        let mut code: Option<[u8; 3]> = None;
        for _ in 0..MAX_LINES {
            self.read_line(&mut line).await?;
            // smtp-proto takes the code of the first line only: a reply whose lines disagree
            // ("250-ok" then "550 no") must not be read as the first line's verdict.
            let this: Option<[u8; 3]> = line.get(..3).and_then(|c| c.try_into().ok());
            match (code, this) {
                (None, Some(c)) => code = Some(c),
                (Some(first), Some(c)) if first == c => {}
                (Some(_), _) => return Err(protocol("reply lines with different codes")),
                (None, None) => {}
            }
            raw.extend_from_slice(&line);
            match receiver.parse(&mut line.iter()) {
                Ok(response) => return Reply::remote(response, raw),
                Err(smtp_proto::Error::NeedsMoreData { .. }) => {}
                Err(smtp_proto::Error::ResponseTooLong) => {
                    return Err(protocol("reply text longer than 4096 octets"));
                }
                Err(_) => {
                    let shown = String::from_utf8_lossy(&line[..line.len().min(64)]).into_owned();
                    return Err(protocol(format!("malformed reply line {shown:?}")));
                }
            }
        }
        Err(protocol(format!("reply longer than {MAX_LINES} lines")))
    }

    /// One line, LF included, of at most `MAX_LINE` octets.
    async fn read_line(&mut self, line: &mut Vec<u8>) -> io::Result<()> {
        line.clear();
        loop {
            let buffered = &self.buf[self.start..self.end];
            let (take, complete) = match buffered.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buffered.len(), false),
            };
            if line.len() + take > MAX_LINE {
                return Err(protocol(format!(
                    "reply line longer than {MAX_LINE} octets"
                )));
            }
            line.extend_from_slice(&buffered[..take]);
            self.start += take;
            if complete {
                return Ok(());
            }
            let n = self.io.read(&mut self.buf).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed",
                ));
            }
            (self.start, self.end) = (0, n);
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    fn wire(server: tokio::io::DuplexStream) -> Wire {
        Wire::new(Box::new(server), Duration::from_secs(5))
    }

    #[tokio::test]
    async fn replies_parse_with_and_without_enhanced_codes() {
        let (a, mut b) = tokio::io::duplex(4096);
        let mut w = wire(a);
        b.write_all(
            b"250-mx.test\r\n250 2.0.0 Ok: queued as X\r\n450 Error: command failed\r\nhello\r\n",
        )
        .await
        .expect("write");
        let r = w.read_reply(Duration::from_secs(1)).await.expect("reply");
        assert_eq!(
            (r.code, r.enhanced.as_deref(), r.text.as_str()),
            (250, Some("2.0.0"), "mx.test Ok: queued as X")
        );
        let r = w.read_reply(Duration::from_secs(1)).await.expect("reply");
        assert_eq!(
            (r.code, r.enhanced, r.text.as_str()),
            (450, None, "Error: command failed")
        );
        let e = w
            .read_reply(Duration::from_secs(1))
            .await
            .expect_err("garbage");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test(start_paused = true)]
    async fn a_next_hop_reading_each_chunk_just_in_time_still_meets_a_body_deadline() {
        let (a, mut b) = tokio::io::duplex(BODY_CHUNK);
        let mut w = Wire::new(Box::new(a), Duration::from_secs(10));
        // Reads a chunk, then waits just under the per-write timeout: no single write ever
        // times out, but the body would take 10 x 9.9 s.
        tokio::spawn(async move {
            let mut buf = vec![0u8; BODY_CHUNK];
            loop {
                match tokio::io::AsyncReadExt::read(&mut b, &mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => tokio::time::sleep(Duration::from_millis(9_900)).await,
                }
            }
        });
        let body = vec![b'x'; 10 * BODY_CHUNK];
        let started = tokio::time::Instant::now();
        let e = w.send_body(&[&body]).await.expect_err("too slow");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        // 10 s + 640 KiB at 32 KiB/s = 30 s, well before the 99 s it would take.
        assert!(
            started.elapsed() <= Duration::from_secs(31),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_reply_whose_lines_disagree_on_the_code_is_a_protocol_error() {
        let (a, mut b) = tokio::io::duplex(4096);
        let mut w = wire(a);
        b.write_all(b"250-looks fine\r\n550 5.1.1 no such user\r\n")
            .await
            .expect("write");
        let e = w
            .read_reply(Duration::from_secs(1))
            .await
            .expect_err("mixed codes");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    }

    #[tokio::test]
    async fn non_utf8_reply_text_is_read_lossily() {
        let (a, mut b) = tokio::io::duplex(4096);
        let mut w = wire(a);
        b.write_all(b"220 mx.test \xff\xfe ESMTP\r\n")
            .await
            .expect("write");
        let r = w.read_reply(Duration::from_secs(1)).await.expect("reply");
        assert_eq!(r.code, 220);
        assert!(
            r.text.starts_with("mx.test") && r.text.ends_with("ESMTP"),
            "{:?}",
            r.text
        );
    }

    /// A megabyte without LF: refused after one line's worth, and the server's writer shows
    /// how little we took off the socket (bounded memory, not a timeout).
    #[tokio::test]
    async fn an_endless_line_is_refused_after_max_line_octets() {
        let (a, mut b) = tokio::io::duplex(16 * 1024);
        let mut w = wire(a);
        let writer = tokio::spawn(async move {
            let mut sent = b"220 ".len();
            let _ = b.write_all(b"220 ").await;
            let chunk = [b'a'; 1024];
            while sent < 1 << 20 {
                if b.write_all(&chunk).await.is_err() {
                    break;
                }
                sent += chunk.len();
            }
            sent
        });
        let started = std::time::Instant::now();
        let e = w
            .read_reply(Duration::from_secs(10))
            .await
            .expect_err("too long");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("longer than 4096"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(w);
        let sent = writer.await.expect("writer");
        assert!(sent < 64 * 1024, "read {sent} octets of a line");
    }

    #[tokio::test]
    async fn a_reply_of_ten_thousand_lines_is_refused_at_the_line_limit() {
        let (a, mut b) = tokio::io::duplex(64 * 1024);
        let mut w = wire(a);
        tokio::spawn(async move {
            for _ in 0..10_000 {
                if b.write_all(b"250-x\r\n").await.is_err() {
                    return;
                }
            }
            let _ = b.write_all(b"250 done\r\n").await;
        });
        let e = w
            .read_reply(Duration::from_secs(10))
            .await
            .expect_err("too many");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("100 lines"), "{e}");
    }

    #[tokio::test]
    async fn command_lines_with_controls_are_refused_before_any_byte_is_sent() {
        let (a, mut b) = tokio::io::duplex(4096);
        let mut w = wire(a);
        for bad in ["MAIL FROM:<a@b>\r\nRSET", "RCPT TO:<a@b>\n", "NOOP\0"] {
            let e = w.send_commands(&["NOOP", bad]).await.expect_err(bad);
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        }
        drop(w);
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.expect("read");
        assert!(got.is_empty(), "sent {got:?}");
    }

    #[tokio::test]
    async fn data_after_the_starttls_reply_is_refused() {
        let (a, mut b) = tokio::io::duplex(4096);
        let mut w = wire(a);
        b.write_all(b"220 go ahead\r\n250 injected\r\n")
            .await
            .expect("write");
        assert_eq!(
            w.read_reply(Duration::from_secs(1))
                .await
                .expect("220")
                .code,
            220
        );
        assert!(w.into_io().is_err());
    }
}
