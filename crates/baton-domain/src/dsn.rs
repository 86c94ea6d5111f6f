//! DSN parameters (RFC 3461): ENVID on MAIL and ORCPT on RCPT. They arrive xtext-encoded,
//! are kept decoded, and go out encoded again. A decoded value can only hold printable
//! US-ASCII, so it can never carry CR, LF, NUL or another control onto a protocol line or
//! into a DSN header field.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("empty value")]
    Empty,
    #[error("value too long")]
    TooLong,
    #[error("malformed xtext")]
    Malformed,
    #[error("control or non-ASCII character in value")]
    Forbidden,
    #[error("missing or unknown address type")]
    AddressType,
}

/// The longest decoded ENVID (RFC 3461 §4.4).
const ENVID_MAX: usize = 100;
/// The longest decoded ORCPT address: a path's limit (RFC 5321 §4.5.3.1.3).
const ORCPT_MAX: usize = 256;

/// A decoded xtext value: printable US-ASCII (space included), nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct XText(String);

impl XText {
    /// Checks an already decoded value.
    pub fn new(decoded: &str, max: usize) -> Result<Self, ParamError> {
        if decoded.is_empty() {
            return Err(ParamError::Empty);
        }
        if decoded.len() > max {
            return Err(ParamError::TooLong);
        }
        if !decoded.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
            return Err(ParamError::Forbidden);
        }
        Ok(XText(decoded.to_string()))
    }

    /// Decodes xtext as sent on the wire: `xchar` is `!`..`~` except `+` and `=`;
    /// `+XX` is a byte in upper- or lower-case hex.
    pub fn decode(raw: &str, max: usize) -> Result<Self, ParamError> {
        let bytes = raw.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => {
                    let hex = bytes
                        .get(i + 1..i + 3)
                        .and_then(|h| std::str::from_utf8(h).ok())
                        .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                        .ok_or(ParamError::Malformed)?;
                    out.push(u8::from_str_radix(hex, 16).map_err(|_| ParamError::Malformed)?);
                    i += 3;
                }
                b'!'..=b'~' if bytes[i] != b'=' => {
                    out.push(bytes[i]);
                    i += 1;
                }
                _ => return Err(ParamError::Malformed),
            }
        }
        let text = String::from_utf8(out).map_err(|_| ParamError::Forbidden)?;
        XText::new(&text, max)
    }

    /// The wire form: every octet outside `!`..`~`, and `+` and `=`, as `+XX`.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(self.0.len());
        for b in self.0.bytes() {
            if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("+{b:02X}"));
            }
        }
        out
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for XText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// ENVID: the client's identifier for the whole transaction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EnvId(XText);

impl EnvId {
    /// From the wire (xtext).
    pub fn from_xtext(raw: &str) -> Result<Self, ParamError> {
        XText::decode(raw, ENVID_MAX).map(EnvId)
    }

    /// The value as the `ENVID=` parameter wants it.
    pub fn to_xtext(&self) -> String {
        self.0.encode()
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Display for EnvId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl TryFrom<String> for EnvId {
    type Error = ParamError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        XText::new(&s, ENVID_MAX).map(EnvId)
    }
}

impl From<EnvId> for String {
    fn from(e: EnvId) -> String {
        e.0.0
    }
}

/// ORCPT: the recipient as the client first knew it, with its address type
/// (`rfc822` is the only one we take).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OriginalRecipient {
    addr_type: AddrType,
    address: XText,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum AddrType {
    Rfc822,
}

impl AddrType {
    fn parse(s: &str) -> Result<Self, ParamError> {
        if s.eq_ignore_ascii_case("rfc822") {
            Ok(AddrType::Rfc822)
        } else {
            Err(ParamError::AddressType)
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            AddrType::Rfc822 => "rfc822",
        }
    }
}

impl OriginalRecipient {
    /// From the wire: `addr-type ";" xtext`.
    pub fn from_param(raw: &str) -> Result<Self, ParamError> {
        let (kind, value) = raw.split_once(';').ok_or(ParamError::AddressType)?;
        Ok(OriginalRecipient {
            addr_type: AddrType::parse(kind)?,
            address: XText::decode(value, ORCPT_MAX)?,
        })
    }

    /// The `ORCPT=` parameter value, address type kept and the address xtext-encoded.
    pub fn to_param(&self) -> String {
        format!("{};{}", self.addr_type.as_str(), self.address.encode())
    }

    pub fn address(&self) -> &str {
        self.address.as_str()
    }
}

/// The DSN field form (RFC 3464 §2.3.1): `rfc822;address`, decoded.
impl fmt::Display for OriginalRecipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{};{}", self.addr_type.as_str(), self.address)
    }
}

impl TryFrom<String> for OriginalRecipient {
    type Error = ParamError;
    /// The stored form, `type;decoded`. Records written before the type was kept hold
    /// the bare address, which was always rfc822.
    fn try_from(s: String) -> Result<Self, Self::Error> {
        let (kind, value) = match s.split_once(';') {
            Some((k, v)) if AddrType::parse(k).is_ok() => (k, v),
            _ => ("rfc822", s.as_str()),
        };
        Ok(OriginalRecipient {
            addr_type: AddrType::parse(kind)?,
            address: XText::new(value, ORCPT_MAX)?,
        })
    }
}

impl From<OriginalRecipient> for String {
    fn from(o: OriginalRecipient) -> String {
        o.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xtext_round_trips_and_refuses_controls() {
        let id = EnvId::from_xtext("QQ+2B314159+3D").expect("envid");
        assert_eq!(id.as_str(), "QQ+314159=");
        assert_eq!(id.to_xtext(), "QQ+2B314159+3D");
        for bad in ["a+0D+0Ab", "+00", "+7F", "a+0Ab", "+C3+A9"] {
            assert_eq!(
                EnvId::from_xtext(bad).map(|_| ()),
                Err(ParamError::Forbidden),
                "{bad}"
            );
        }
        for bad in ["", "a+0", "a+ZZ", "a=b", "a\u{7f}"] {
            assert!(EnvId::from_xtext(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            EnvId::from_xtext(&"a".repeat(101)).map(|_| ()),
            Err(ParamError::TooLong)
        );
    }

    #[test]
    fn orcpt_keeps_its_address_type() {
        let o = OriginalRecipient::from_param("rfc822;Bob+20Smith@Example.COM").expect("orcpt");
        assert_eq!(o.address(), "Bob Smith@Example.COM");
        assert_eq!(o.to_param(), "rfc822;Bob+20Smith@Example.COM");
        assert_eq!(o.to_string(), "rfc822;Bob Smith@Example.COM");
        assert_eq!(
            OriginalRecipient::from_param("x400;abc").map(|_| ()),
            Err(ParamError::AddressType)
        );
        assert!(OriginalRecipient::from_param("rfc822;a+0D+0ARCPT").is_err());
    }

    #[test]
    fn stored_forms_deserialize_old_and_new_and_refuse_controls() {
        let new: OriginalRecipient = serde_json::from_str("\"rfc822;b@example.org\"").expect("new");
        let old: OriginalRecipient = serde_json::from_str("\"b@example.org\"").expect("old");
        assert_eq!(new, old);
        assert!(serde_json::from_str::<OriginalRecipient>("\"a\\r\\nb\"").is_err());
        assert!(serde_json::from_str::<EnvId>("\"a\\u0000\"").is_err());
    }

    #[test]
    fn encode_decode_is_identity_for_every_printable_string() {
        let all: String = (0x20u8..=0x7e).map(char::from).collect();
        let x = XText::new(&all, 1000).expect("printable");
        assert_eq!(XText::decode(&x.encode(), 1000).expect("decode"), x);
        assert!(x.encode().bytes().all(|b| (b'!'..=b'~').contains(&b)));
    }
}
