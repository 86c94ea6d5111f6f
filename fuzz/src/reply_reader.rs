//! Target 4: the outbound client's reply reader, over an in-memory `AsyncRead` that hands
//! out the server's bytes in arbitrary pieces.
//!
//! The reader (`functions/pipeline/src/outbound/wire.rs`: `Wire::read_reply`) is private to
//! `baton-pipeline`, and depending on that crate would also build aws-lc, hickory and rustls
//! with instrumentation. So this is a faithful copy of its read loop (`read_line`,
//! `read_reply_unbounded_in_time`, `Reply::remote`, same constants, same smtp-proto
//! `ResponseReceiver`) minus the timeout, which an always-ready reader never hits. Keep it
//! in step with wire.rs.
//!
//! Input: byte 0 seeds the read sizes (0: reads of up to 8 KiB), the rest is what the
//! server sends. Replies are read until an error. Checked, besides "no panic":
//! - a reply has a code in 200..=599 (its first line's), an enhanced code only with class
//!   2, 4 or 5, text on one line with no control character and no runs of white space, and
//!   `raw` is what was read for it, lines ending in LF;
//! - no reply takes more than `MAX_LINES` lines of at most `MAX_LINE` octets, so at most
//!   that much is read off the socket per reply, and heap use stays bounded;
//! - errors are only "malformed" (InvalidData) or "closed" (UnexpectedEof).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use smtp_proto::response::parser::ResponseReceiver;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use crate::meter;

const MAX_LINE: usize = 4096;
const MAX_LINES: usize = 100;
const READ_CHUNK: usize = 8 * 1024;

#[derive(Debug)]
struct Reply {
    code: u16,
    enhanced: Option<String>,
    text: String,
    raw: Vec<u8>,
}

fn protocol(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

impl Reply {
    fn remote(response: smtp_proto::Response<String>, raw: Vec<u8>) -> io::Result<Self> {
        if !(200..600).contains(&response.code) {
            return Err(protocol(format!(
                "reply code {} out of range",
                response.code
            )));
        }
        let [class, subject, detail] = response.esc;
        let enhanced = matches!(class, 2 | 4 | 5).then(|| format!("{class}.{subject}.{detail}"));
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

/// The server's bytes, handed out in pieces whose sizes come from a seed.
struct Server<'a> {
    rest: &'a [u8],
    state: u32,
    read: usize,
}

impl AsyncRead for Server<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut n = buf.remaining().min(self.rest.len());
        if self.state != 0 {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 17;
            self.state ^= self.state << 5;
            n = n.min(1 + self.state as usize % 600);
        }
        let (piece, rest) = self.rest.split_at(n);
        buf.put_slice(piece);
        self.rest = rest;
        self.read += n;
        Poll::Ready(Ok(()))
    }
}

struct Wire<'a> {
    io: Server<'a>,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Wire<'_> {
    async fn read_reply(&mut self) -> io::Result<Reply> {
        let mut receiver = ResponseReceiver::default();
        let mut raw = Vec::new();
        let mut line = Vec::new();
        let mut code: Option<[u8; 3]> = None;
        for _ in 0..MAX_LINES {
            self.read_line(&mut line).await?;
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

/// Runs a future whose every poll is ready (the in-memory server never blocks).
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the in-memory reader never blocks"),
    }
}

fn check_reply(r: &Reply) {
    assert!((200..=599).contains(&r.code), "code {}", r.code);
    if let Some(e) = &r.enhanced {
        assert!(
            matches!(e.as_bytes()[0], b'2' | b'4' | b'5') && e.as_bytes()[1] == b'.',
            "{e}"
        );
    }
    assert!(
        !r.text.chars().any(char::is_control),
        "control in reply text {:?}",
        r.text
    );
    assert_eq!(r.text.trim(), r.text, "untrimmed reply text");
    assert!(!r.text.contains("  "), "white space run in {:?}", r.text);
    assert!(
        !r.raw.is_empty() && r.raw.ends_with(b"\n"),
        "raw {:?}",
        r.raw
    );
    let lines = r.raw.split_inclusive(|&b| b == b'\n').count();
    assert!(lines <= MAX_LINES, "{lines} lines");
    let mut lines = r.raw.split_inclusive(|&b| b == b'\n');
    let first = lines.next().expect("a line");
    assert!(first.len() <= MAX_LINE && lines.all(|l| l.len() <= MAX_LINE));
    // Every line carries the reply's code (smtp-proto alone would take the first line's
    // and ignore the rest, so "250-x" then "550 y" would read as 250).
    let code = r.code.to_string();
    for l in r.raw.split_inclusive(|&b| b == b'\n') {
        assert_eq!(&l[..3], code.as_bytes(), "line {l:?} of a {code} reply");
    }
}

pub fn run(data: &[u8]) {
    let [seed, input @ ..] = data else {
        return;
    };
    let base = meter::live();
    meter::reset_peak();
    let mut wire = Wire {
        io: Server {
            rest: input,
            state: if *seed == 0 {
                0
            } else {
                u32::from(*seed).wrapping_mul(0x9E37_79B9) | 1
            },
            read: 0,
        },
        buf: vec![0; READ_CHUNK].into_boxed_slice(),
        start: 0,
        end: 0,
    };
    let mut replies = 0;
    loop {
        let before = wire.io.read - (wire.end - wire.start);
        let result = ready(wire.read_reply());
        let after = wire.io.read - (wire.end - wire.start);
        assert!(
            after - before <= MAX_LINES * MAX_LINE,
            "one reply took {} octets",
            after - before
        );
        let used = meter::peak().saturating_sub(base);
        assert!(
            used <= 2 * MAX_LINES * MAX_LINE + 64 * 1024,
            "reader used {used} bytes"
        );
        match result {
            Ok(r) => {
                check_reply(&r);
                replies += 1;
                assert!(replies <= input.len() / 4, "more replies than lines");
            }
            Err(e) => {
                assert!(
                    matches!(
                        e.kind(),
                        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
                    ),
                    "{e:?}"
                );
                break;
            }
        }
    }
}
