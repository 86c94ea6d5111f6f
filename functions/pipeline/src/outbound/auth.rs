//! AUTH to a smarthost (RFC 4954): PLAIN, else LOGIN, and only over TLS. The exchange goes
//! through the session's one command-line writer like every other command.

use std::fmt;
use std::io;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::wire::{Reply, Wire};

/// A route's credentials. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    password: String,
}

impl Credentials {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            username: username.into(),
            password: password.into(),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// What the server's EHLO offers us to authenticate with.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Mechanisms {
    pub plain: bool,
    pub login: bool,
}

/// Authenticates on a TLS session. `Ok(Err(reply))` is a deferral that says why: a refusal
/// means our configuration is wrong, not the message, so it never bounces mail.
pub(super) async fn authenticate(
    wire: &mut Wire,
    tls: bool,
    creds: &Credentials,
    offered: Mechanisms,
    label: &str,
) -> io::Result<Result<(), Reply>> {
    if !tls {
        return Ok(Err(Reply::local(
            451,
            "4.7.11",
            format!("refusing to send credentials to {label} without TLS"),
        )));
    }
    let reply = if offered.plain {
        let token = STANDARD.encode(format!("\0{}\0{}", creds.username, creds.password));
        wire.command(&format!("AUTH PLAIN {token}")).await?
    } else if offered.login {
        let mut reply = wire.command("AUTH LOGIN").await?;
        for secret in [&creds.username, &creds.password] {
            if reply.code != 334 {
                break;
            }
            reply = wire.command(&STANDARD.encode(secret)).await?;
        }
        reply
    } else {
        return Ok(Err(Reply::local(
            451,
            "4.7.0",
            format!("{label} offers neither AUTH PLAIN nor AUTH LOGIN"),
        )));
    };
    if reply.code == 235 {
        return Ok(Ok(()));
    }
    Ok(Err(Reply::local(
        451,
        "4.7.0",
        format!(
            "authentication to {label} failed: {} {} {}",
            reply.code,
            reply.enhanced.as_deref().unwrap_or(""),
            reply.text
        )
        .replace("  ", " "),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_password() {
        let c = Credentials::new("relay", "hunter2");
        let shown = format!("{c:?}");
        assert!(
            shown.contains("relay") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
