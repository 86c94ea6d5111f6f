//! The message as it goes out in DATA (RFC 5321 §4.5.2): every line ends in CRLF, a line
//! that starts with "." gets one more, and the body ends with CRLF.CRLF. A bare CR or bare LF
//! is written as CRLF: a next hop that ends lines at either would otherwise read what follows
//! a "\r.\r" as new commands (SMTP smuggling). Intake refuses such bodies already; this is the
//! one writer of the wire form, so nothing stored can reach the wire otherwise. The state
//! carried between chunks is whether the next octet starts a line, whether a CR is pending,
//! and whether the output ends in CRLF, so chunk boundaries never matter.

#[derive(Debug, Clone)]
pub(super) struct DotStuffer {
    at_line_start: bool,
    /// The last input octet was a CR whose line end is not written yet.
    pending_cr: bool,
    ends_in_crlf: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        DotStuffer {
            at_line_start: true,
            pending_cr: false,
            ends_in_crlf: false,
        }
    }
}

impl DotStuffer {
    /// Appends `input`, stuffed and with CRLF line ends, to `out`.
    pub fn push(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        while !input.is_empty() {
            if self.pending_cr {
                // A CR ends a line whatever follows; with an LF, it is that line end.
                self.pending_cr = false;
                self.end_line(out);
                if input[0] == b'\n' {
                    input = &input[1..];
                    continue;
                }
            }
            let text = input
                .iter()
                .position(|&b| b == b'\r' || b == b'\n')
                .unwrap_or(input.len());
            if text > 0 {
                if self.at_line_start && input[0] == b'.' {
                    out.push(b'.');
                }
                out.extend_from_slice(&input[..text]);
                self.at_line_start = false;
                self.ends_in_crlf = false;
            }
            match input.get(text) {
                Some(b'\r') => self.pending_cr = true,
                Some(_) => self.end_line(out),
                None => {}
            }
            input = &input[(text + 1).min(input.len())..];
        }
    }

    fn end_line(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"\r\n");
        self.at_line_start = true;
        self.ends_in_crlf = true;
    }

    /// Appends the end of the message: a CRLF if the body did not end with one, then ".\r\n".
    pub fn finish(mut self, out: &mut Vec<u8>) {
        if self.pending_cr {
            self.end_line(out);
        }
        if !self.ends_in_crlf {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// The obvious whole-body version, as the reference: line ends made CRLF first (a CR
    /// with or without its LF, a lone LF), then the dots.
    fn dot_stuff(body: &[u8]) -> Vec<u8> {
        let mut lines = Vec::new();
        let mut i = 0;
        while i < body.len() {
            match body[i] {
                b'\r' if body.get(i + 1) == Some(&b'\n') => {
                    lines.extend_from_slice(b"\r\n");
                    i += 1;
                }
                b'\r' | b'\n' => lines.extend_from_slice(b"\r\n"),
                b => lines.push(b),
            }
            i += 1;
        }
        let mut out = Vec::new();
        let mut at_line_start = true;
        for &b in &lines {
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

    fn streamed(parts: &[&[u8]]) -> Vec<u8> {
        let mut s = DotStuffer::default();
        let mut out = Vec::new();
        for p in parts {
            s.push(p, &mut out);
        }
        s.finish(&mut out);
        out
    }

    #[test]
    fn leading_dots_are_doubled_and_the_body_terminated() {
        assert_eq!(
            streamed(&[b"a\r\n.b\r\n..c\r\n"]),
            b"a\r\n..b\r\n...c\r\n.\r\n"
        );
        assert_eq!(streamed(&[b"no newline"]), b"no newline\r\n.\r\n");
        assert_eq!(streamed(&[]), b"\r\n.\r\n");
    }

    #[test]
    fn a_bare_cr_or_lf_ends_a_line_so_a_smuggled_dot_is_stuffed() {
        assert_eq!(
            streamed(&[b"hello\r.\rMAIL FROM:<x@evil.test>\r\n"]),
            b"hello\r\n..\r\nMAIL FROM:<x@evil.test>\r\n.\r\n"
        );
        assert_eq!(streamed(&[b"a\n.\nb"]), b"a\r\n..\r\nb\r\n.\r\n");
        // A CR at the end of one chunk and an LF at the start of the next are one line end.
        assert_eq!(
            streamed(&[b"a\r", b"\nb\r", b".\r"]),
            b"a\r\nb\r\n..\r\n.\r\n"
        );
    }

    #[test]
    fn chunk_boundaries_inside_crlf_and_before_a_dot_change_nothing() {
        // CRLF split across chunks, then a chunk that starts with the dot.
        assert_eq!(
            streamed(&[b"a\r", b"\n", b".b\r\n"]),
            dot_stuff(b"a\r\n.b\r\n")
        );
        // The body's own CRLF split at the very end.
        assert_eq!(streamed(&[b"a\r", b"\n"]), b"a\r\n.\r\n");
        // A chunk that is a lone dot at a line start, and empty chunks.
        assert_eq!(
            streamed(&[b"x\r\n", b"", b".", b"", b"\r\n"]),
            dot_stuff(b"x\r\n.\r\n")
        );
    }

    /// Random bodies over the octets that matter, cut at random places, against the
    /// reference: the same bytes on the wire however the body is chunked.
    #[test]
    fn streaming_matches_the_whole_body_version_for_random_input_and_chunking() {
        let mut rng = StdRng::seed_from_u64(0x05ee_dd07);
        let alphabet = [b'.', b'\r', b'\n', b'a', b'.', b'\r', b'\n'];
        for case in 0..5_000 {
            let len = rng.gen_range(0..64);
            let body: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                .collect();
            let mut cuts: Vec<usize> = (0..rng.gen_range(0..6))
                .map(|_| rng.gen_range(0..=len))
                .collect();
            cuts.sort_unstable();
            let mut parts = Vec::new();
            let mut at = 0;
            for c in cuts {
                parts.push(&body[at..c]);
                at = c;
            }
            parts.push(&body[at..]);
            assert_eq!(
                streamed(&parts),
                dot_stuff(&body),
                "case {case}: {body:?} cut as {parts:?}"
            );
        }
    }
}
