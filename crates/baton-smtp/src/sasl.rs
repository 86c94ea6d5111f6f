//! SASL PLAIN (RFC 4616) and LOGIN decoding. Verification happens outside the session.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// A username and password from the client. The password never appears in Debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslError {
    /// Not base64, not UTF-8, or not the mechanism's shape.
    Malformed,
    /// PLAIN with an authorization identity different from the authentication identity.
    AuthzidMismatch,
}

pub fn decode_base64(line: &str) -> Result<Vec<u8>, SaslError> {
    STANDARD
        .decode(line.trim().as_bytes())
        .map_err(|_| SaslError::Malformed)
}

#[cfg(test)]
pub fn encode_base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Decodes a PLAIN message: `[authzid] NUL authcid NUL passwd`.
pub fn decode_plain(b64: &str) -> Result<Credentials, SaslError> {
    let raw = decode_base64(b64)?;
    let mut parts = raw.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(passwd), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed);
    };
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| SaslError::Malformed);
    let (authzid, username, password) = (text(authzid)?, text(authcid)?, text(passwd)?);
    if username.is_empty() {
        return Err(SaslError::Malformed);
    }
    if !authzid.is_empty() && authzid != username {
        return Err(SaslError::AuthzidMismatch);
    }
    Ok(Credentials { username, password })
}

/// Decodes one base64 LOGIN response (username or password).
pub fn decode_login_field(b64: &str) -> Result<String, SaslError> {
    String::from_utf8(decode_base64(b64)?).map_err(|_| SaslError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_with_and_without_authzid() {
        let c = decode_plain(&encode_base64(b"\0alice\0s3cret")).expect("plain");
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("alice", "s3cret")
        );
        assert!(decode_plain(&encode_base64(b"alice\0alice\0pw")).is_ok());
        assert_eq!(
            decode_plain(&encode_base64(b"bob\0alice\0pw")),
            Err(SaslError::AuthzidMismatch)
        );
        assert_eq!(decode_plain("not base64!"), Err(SaslError::Malformed));
        assert_eq!(
            decode_plain(&encode_base64(b"alice")),
            Err(SaslError::Malformed)
        );
    }

    #[test]
    fn debug_hides_password() {
        let c = Credentials {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
