//! SMTP replies with RFC 3463 enhanced status codes.

use std::fmt::Write as _;

/// One SMTP reply. `lines` holds the text of each line; the code and enhanced code are
/// repeated on every line as RFC 2034 requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub enhanced: Option<&'static str>,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn new(code: u16, enhanced: &'static str, text: impl Into<String>) -> Self {
        Reply {
            code,
            enhanced: Some(enhanced),
            lines: vec![text.into()],
        }
    }

    /// A reply without an enhanced code: only the greeting, EHLO, and SASL challenges.
    pub fn bare(code: u16, text: impl Into<String>) -> Self {
        Reply {
            code,
            enhanced: None,
            lines: vec![text.into()],
        }
    }

    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// Appends the wire form of this reply to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let mut s = String::new();
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            // Texts may quote what the client sent: no control character reaches the wire.
            let line: std::borrow::Cow<'_, str> = if line.chars().any(char::is_control) {
                line.chars()
                    .map(|c| if c.is_control() { '?' } else { c })
                    .collect::<String>()
                    .into()
            } else {
                line.into()
            };
            match self.enhanced {
                Some(e) => {
                    let _ = write!(s, "{}{}{} {}\r\n", self.code, sep, e, line);
                }
                None => {
                    let _ = write!(s, "{}{}{}\r\n", self.code, sep, line);
                }
            }
        }
        out.extend_from_slice(s.as_bytes());
    }

    pub fn to_wire(&self) -> String {
        let mut out = Vec::new();
        self.write_to(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.to_wire().trim_end())
    }
}

/// Replies the gateway itself sends, outside the command flow.
pub mod canned {
    use super::Reply;

    pub fn storage_failure() -> Reply {
        Reply::new(451, "4.3.0", "Temporary storage failure, try again later")
    }
    pub fn timeout() -> Reply {
        Reply::new(421, "4.4.2", "Timeout exceeded, closing connection")
    }
    pub fn too_slow() -> Reply {
        Reply::new(421, "4.4.2", "Data rate too low, closing connection")
    }
    pub fn too_many_connections_from_ip() -> Reply {
        Reply::new(421, "4.7.0", "Too many connections from your address")
    }
    /// A load balancer's connection without a valid PROXY protocol header: the balancer and
    /// the gateway are configured differently.
    pub fn proxy_header_required() -> Reply {
        Reply::new(
            421,
            "4.3.5",
            "PROXY protocol header required from this address",
        )
    }
    pub fn too_many_connections() -> Reply {
        Reply::new(421, "4.3.2", "Too many connections, try again later")
    }
    pub fn shutting_down() -> Reply {
        Reply::new(421, "4.3.2", "Service shutting down, closing connection")
    }
    pub fn tls_failed() -> Reply {
        Reply::new(454, "4.7.0", "TLS not available due to temporary reason")
    }
}
