//! Message body framing for DATA (dot-stuffed, ends at CRLF.CRLF) and BDAT (counted), and
//! the checks applied to every body octet whatever the framing.
//!
//! The only end of data is CRLF "." CRLF. A CR that is not followed by LF and NUL are
//! refused outright. A bare LF is refused too, except where the listener normalises it
//! (authenticated submission, as Postfix's `smtpd_forbid_bare_newline = normalize`): then it
//! ends a line as CRLF would, but never helps to end the data. A "." line after a bare LF,
//! or one ended by a bare LF, is refused: those are the smuggling patterns, and no client
//! that merely sends LF line endings produces them (it dot-stuffs).

use memchr::memchr3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingError {
    BareCr,
    BareLf,
    Nul,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line (after CRLF, or at the very start of the body).
    LineStart,
    /// A line started with "." (DATA only): the dot is transparency padding or the end mark.
    Dot,
    /// Saw "." CR at line start.
    DotCr,
    /// Inside a line.
    Text,
    /// Saw CR inside a line.
    Cr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// All input was consumed; the body continues.
    More,
    /// The end-of-data mark was read; `usize` octets of input were consumed.
    Done(usize),
}

/// Decodes body octets, strips dot-stuffing in DATA mode, and refuses bare CR/LF and NUL.
#[derive(Debug)]
pub struct BodyDecoder {
    state: State,
    dot_stuffed: bool,
    /// Take a bare LF as a line end (stored as CRLF) instead of refusing it.
    normalize_lf: bool,
    /// The current line began after a normalised bare LF: it can never end the data.
    after_bare_lf: bool,
}

impl BodyDecoder {
    /// A decoder for DATA: dot-stuffed, terminated by CRLF.CRLF.
    pub fn data() -> Self {
        BodyDecoder {
            state: State::LineStart,
            dot_stuffed: true,
            normalize_lf: false,
            after_bare_lf: false,
        }
    }

    /// A checker for BDAT chunks: no stuffing, the length frames the data. State carries over
    /// between chunks so a CR at the end of one chunk pairs with an LF at the start of the next.
    pub fn bdat() -> Self {
        BodyDecoder {
            state: State::LineStart,
            dot_stuffed: false,
            normalize_lf: false,
            after_bare_lf: false,
        }
    }

    /// Takes bare LF line endings (stored as CRLF) instead of refusing them.
    pub fn normalizing_bare_lf(mut self, normalize: bool) -> Self {
        self.normalize_lf = normalize;
        self
    }

    /// True if the last octet was a CR still waiting for its LF: at the end of a BDAT body
    /// that CR is bare, and refused like any other.
    pub fn pending_cr(&self) -> bool {
        self.state == State::Cr
    }

    /// Decodes `input`, appending body octets to `out`.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Progress, FramingError> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::LineStart if self.dot_stuffed && input[i] == b'.' => {
                    self.state = State::Dot;
                    i += 1;
                }
                State::LineStart => self.state = State::Text,
                State::Dot => match input[i] {
                    b'\r' => {
                        self.state = State::DotCr;
                        i += 1;
                    }
                    // "." LF: an end of data with a bare LF, never a line of text.
                    b'\n' => return Err(FramingError::BareLf),
                    // A stuffed dot: drop it and keep the rest of the line.
                    _ => self.state = State::Text,
                },
                State::DotCr => {
                    return match input[i] {
                        // LF "." CRLF: only a real CRLF before the dot ends the data.
                        b'\n' if self.after_bare_lf => Err(FramingError::BareLf),
                        b'\n' => Ok(Progress::Done(i + 1)),
                        _ => Err(FramingError::BareCr),
                    };
                }
                State::Text => {
                    let rest = &input[i..];
                    match memchr3(b'\r', b'\n', 0, rest) {
                        None => {
                            out.extend_from_slice(rest);
                            i = input.len();
                        }
                        Some(pos) => {
                            out.extend_from_slice(&rest[..pos]);
                            i += pos;
                            match input[i] {
                                b'\r' => {
                                    self.state = State::Cr;
                                    i += 1;
                                }
                                b'\n' if self.normalize_lf => {
                                    out.extend_from_slice(b"\r\n");
                                    self.state = State::LineStart;
                                    self.after_bare_lf = true;
                                    i += 1;
                                }
                                b'\n' => return Err(FramingError::BareLf),
                                _ => return Err(FramingError::Nul),
                            }
                        }
                    }
                }
                State::Cr => {
                    if input[i] != b'\n' {
                        return Err(FramingError::BareCr);
                    }
                    out.extend_from_slice(b"\r\n");
                    self.state = State::LineStart;
                    self.after_bare_lf = false;
                    i += 1;
                }
            }
        }
        Ok(Progress::More)
    }
}

/// Why a body that framed correctly is still refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentError {
    TooBig,
    HeaderTooBig,
    LineTooLong,
}

/// Watches decoded body octets: size, line length, and the header section (kept, bounded,
/// for the From check).
#[derive(Debug)]
pub struct BodyInspector {
    max_size: u64,
    max_line: usize,
    max_header: usize,
    size: u64,
    /// Octets since the last LF, CR included.
    line_len: usize,
    header: Option<Vec<u8>>,
    header_done: bool,
    error: Option<ContentError>,
}

impl BodyInspector {
    pub fn new(max_size: u64, max_line: usize, max_header: usize) -> Self {
        BodyInspector {
            max_size,
            max_line,
            max_header,
            size: 0,
            line_len: 0,
            header: Some(Vec::new()),
            header_done: false,
            error: None,
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The first problem seen, if any. Once set, the body should be discarded.
    pub fn error(&self) -> Option<ContentError> {
        self.error
    }

    /// The header section (without the blank line), once it has been read completely.
    pub fn header(&self) -> Option<&[u8]> {
        if self.header_done {
            self.header.as_deref()
        } else {
            None
        }
    }

    /// Inspects decoded octets. Line endings are already known to be CRLF.
    pub fn inspect(&mut self, chunk: &[u8]) {
        self.size += chunk.len() as u64;
        if self.size > self.max_size {
            self.fail(ContentError::TooBig);
        }
        let mut rest = chunk;
        while !rest.is_empty() {
            let (line, ended) = match memchr::memchr(b'\n', rest) {
                Some(pos) => (&rest[..=pos], true),
                None => (rest, false),
            };
            rest = &rest[line.len()..];
            self.line_len += line.len();
            // CR LF are not part of the text line limit.
            if self.line_len > self.max_line + 2 {
                self.fail(ContentError::LineTooLong);
            }
            if !self.header_done {
                let blank_line = ended && self.line_len == 2;
                if blank_line {
                    self.header_done = true;
                } else if let Some(h) = self.header.as_mut() {
                    if h.len() + line.len() > self.max_header {
                        self.header = None;
                        self.fail(ContentError::HeaderTooBig);
                    } else {
                        h.extend_from_slice(line);
                    }
                }
            }
            if ended {
                self.line_len = 0;
            }
        }
    }

    /// Call at the end of the body: a body with no blank line is all header.
    pub fn finish(&mut self) {
        self.header_done = true;
    }

    fn fail(&mut self, e: ContentError) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalized(input: &[u8]) -> (Result<Progress, FramingError>, Vec<u8>) {
        let mut out = Vec::new();
        let mut d = BodyDecoder::data().normalizing_bare_lf(true);
        // One octet at a time: the result must not depend on how input is split.
        let mut last = Ok(Progress::More);
        for (i, b) in input.iter().enumerate() {
            last = d.decode(std::slice::from_ref(b), &mut out);
            match last {
                Ok(Progress::Done(_)) => return (Ok(Progress::Done(i + 1)), out),
                Err(_) => return (last, out),
                Ok(Progress::More) => {}
            }
        }
        (last, out)
    }

    #[test]
    fn normalising_stores_bare_lf_lines_as_crlf_and_ends_only_at_crlf_dot_crlf() {
        // What smtplib sends for an LF-only message: dot-stuffed, then CRLF "." CRLF.
        let input = b"Subject: x\n\nline\n..dot\n\r\n.\r\n";
        let (r, out) = normalized(input);
        assert_eq!(r, Ok(Progress::Done(input.len())));
        assert_eq!(out, b"Subject: x\r\n\r\nline\r\n.dot\r\n\r\n");
    }

    #[test]
    fn normalising_still_refuses_every_smuggling_end_of_data() {
        for tail in [
            &b"\n.\n"[..],
            b"\n.\r\n",
            b"\r.\n",
            b"\r.\r",
            b"\r\n.\n",
            b"\r\n.\r",
            b"\r\n.\r\r\n",
            b"\r\r\n.\r\r\n",
        ] {
            let mut input = b"body".to_vec();
            input.extend_from_slice(tail);
            input.extend_from_slice(b"MAIL FROM:<e@x>\r\n.\r\n");
            let (r, _) = normalized(&input);
            assert!(
                matches!(r, Err(FramingError::BareLf | FramingError::BareCr)),
                "{tail:?}: {r:?}"
            );
        }
    }

    fn decode_all(input: &[u8]) -> (Result<Progress, FramingError>, Vec<u8>) {
        let mut out = Vec::new();
        let r = BodyDecoder::data().decode(input, &mut out);
        (r, out)
    }

    #[test]
    fn data_unstuffs_and_stops_at_crlf_dot_crlf() {
        let input = b"a\r\n..b\r\n.\r\nMAIL";
        let (r, out) = decode_all(input);
        assert_eq!(r, Ok(Progress::Done(input.len() - 4)));
        assert_eq!(out, b"a\r\n.b\r\n");
    }

    #[test]
    fn end_mark_split_across_reads() {
        let mut d = BodyDecoder::data();
        let mut out = Vec::new();
        let mut done = None;
        for piece in [&b"x\r"[..], b"\n", b".", b"\r", b"\n"] {
            if let Progress::Done(n) = d.decode(piece, &mut out).expect("valid") {
                done = Some(n);
            }
        }
        assert_eq!(done, Some(1));
        assert_eq!(out, b"x\r\n");
    }

    #[test]
    fn every_smuggling_variant_is_refused() {
        let variants: [&[u8]; 9] = [
            b"\n.\n",
            b"\n.\r\n",
            b"\r.\n",
            b"\r.\r",
            b"\r\n.\n",
            b"\r\n.\r",
            b"\r\n.\r\r\n",
            b"\r\r\n.\r\r\n",
            b"\r\n\x00.\r\n",
        ];
        for v in variants {
            let mut input = b"Subject: x\r\n\r\nbody".to_vec();
            input.extend_from_slice(v);
            input.extend_from_slice(b"MAIL FROM:<e@x>\r\n");
            let (r, _) = decode_all(&input);
            assert!(r.is_err(), "variant {v:?} was not refused: {r:?}");
        }
    }

    #[test]
    fn bdat_checks_crlf_across_chunks() {
        let mut d = BodyDecoder::bdat();
        let mut out = Vec::new();
        assert_eq!(d.decode(b"a\r", &mut out), Ok(Progress::More));
        assert_eq!(d.decode(b"\n.\r\n", &mut out), Ok(Progress::More));
        assert_eq!(out, b"a\r\n.\r\n");
        assert_eq!(d.decode(b"b\nc", &mut out), Err(FramingError::BareLf));
    }

    #[test]
    fn inspector_enforces_limits() {
        let mut i = BodyInspector::new(100, 998, 50);
        i.inspect(b"From: a@b\r\nSubject: x\r\n\r\nhello\r\n");
        assert_eq!(i.header(), Some(&b"From: a@b\r\nSubject: x\r\n"[..]));
        assert_eq!(i.error(), None);
        i.inspect(&[b'x'; 100]);
        assert_eq!(i.error(), Some(ContentError::TooBig));

        let mut long = BodyInspector::new(10_000, 998, 100);
        long.inspect(b"\r\n");
        long.inspect(&[b'y'; 998]);
        long.inspect(b"\r\n");
        assert_eq!(long.error(), None);
        long.inspect(&[b'y'; 999]);
        long.inspect(b"\r\n");
        assert_eq!(long.error(), Some(ContentError::LineTooLong));

        let mut big_header = BodyInspector::new(10_000, 998, 10);
        big_header.inspect(b"X-Long: 0123456789\r\n\r\n");
        assert_eq!(big_header.error(), Some(ContentError::HeaderTooBig));
    }
}
