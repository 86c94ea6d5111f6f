//! Tracing set-up, shared by every binary. Logs go to stderr; `RUST_LOG` overrides the
//! configured filter. Spans opened by the gateway (`session`, `message`) carry the session
//! id and queue id into every line logged inside them.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// rustls warns about every client that sends an IP address as SNI (Python's `SMTP_SSL`
/// does): noise for a mail server. Its errors still show, and a filter that names rustls
/// itself is left alone.
fn quiet_noisy_crates(filter: &str) -> String {
    if filter.contains("rustls") {
        filter.to_string()
    } else {
        format!("{filter},rustls=error")
    }
}

/// Installs the global subscriber. Safe to call more than once (later calls do nothing).
pub fn init(format: Format, filter: &str) {
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let filter = from_env.unwrap_or_else(|| quiet_noisy_crates(filter));
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(true);
    let _ = match format {
        Format::Text => builder.try_init(),
        Format::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rustls_warnings_are_quiet_unless_asked_for() {
        assert_eq!(quiet_noisy_crates("info"), "info,rustls=error");
        assert_eq!(
            quiet_noisy_crates("debug,rustls=trace"),
            "debug,rustls=trace"
        );
    }
}
