//! Dot-stuffing as the body streams out (RFC 5321 §4.5.2): a line that starts with "." gets
//! one more, and the body ends with CRLF.CRLF. The state carried between chunks is whether
//! the next octet starts a line and the last two octets, so chunk boundaries never matter.

#[derive(Debug, Clone)]
pub(super) struct DotStuffer {
    at_line_start: bool,
    last_two: [u8; 2],
}

impl Default for DotStuffer {
    fn default() -> Self {
        DotStuffer {
            at_line_start: true,
            last_two: [0, 0],
        }
    }
}

impl DotStuffer {
    /// Appends `input`, stuffed, to `out`.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for line in input.split_inclusive(|&b| b == b'\n') {
            if self.at_line_start && line.first() == Some(&b'.') {
                out.push(b'.');
            }
            out.extend_from_slice(line);
            self.at_line_start = line.last() == Some(&b'\n');
            // The stuffed dot is always followed by the input's own, so the last two octets
            // of the input and of the output end alike where it matters (in CRLF or not).
            for &b in &line[line.len().saturating_sub(2)..] {
                self.last_two = [self.last_two[1], b];
            }
        }
    }

    /// Appends the end of the message: a CRLF if the body did not end with one, then ".\r\n".
    pub fn finish(self, out: &mut Vec<u8>) {
        if self.last_two != *b"\r\n" {
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

    /// The obvious whole-body version, as the reference.
    fn dot_stuff(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
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
