//! Return paths that map a bounce back to its message and recipient (VERP, with a MAC).
//!
//! Outgoing mail to recipient `i` of message `ID` uses `b1-<id>-<i>-<mac>@<bounce domain>`
//! as its envelope sender, where `mac` is HMAC-SHA256 (truncated to 80 bits) under the
//! relay's secret over the version, bounce domain, id and index. A bounce is only taken
//! for a return path whose MAC verifies for the domain it was sent to, and only while the
//! message is younger than [`MAX_AGE_MS`]: forged return paths and tokens replayed long after
//! are refused at RCPT.

use std::fmt;

use ring::hmac;
use subtle::ConstantTimeEq;

use crate::QueueId;

/// Bounces for older messages are refused: no DSN arrives this late, but a token seen in
/// an old message could be replayed.
pub const MAX_AGE_MS: i64 = 30 * 24 * 3600 * 1000;

const VERSION: &str = "b1";
/// Crockford base32, lower case (local parts are often lower-cased on the way back).
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
const MAC_LEN: usize = 10;
const MAC_CHARS: usize = 16;

/// The relay's secret for return-path MACs. Never printed.
#[derive(Clone)]
pub struct VerpKey(hmac::Key);

impl VerpKey {
    /// `secret` is at least 32 random bytes, kept sealed with the relay's other keys.
    pub fn new(secret: &[u8]) -> Result<Self, VerpError> {
        if secret.len() < 32 {
            return Err(VerpError::WeakKey);
        }
        Ok(VerpKey(hmac::Key::new(hmac::HMAC_SHA256, secret)))
    }

    fn mac(&self, domain: &str, id: &QueueId, index: u16) -> [u8; MAC_LEN] {
        let message = format!(
            "{VERSION}\0{}\0{id}\0{index}",
            domain.trim_end_matches('.').to_ascii_lowercase()
        );
        let tag = hmac::sign(&self.0, message.as_bytes());
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&tag.as_ref()[..MAC_LEN]);
        out
    }

    /// The local part of the return path for recipient `index` of message `id`, for mail
    /// whose bounces go to `domain`.
    pub fn local_part(&self, domain: &str, id: &QueueId, index: u16) -> String {
        let mac = base32(&self.mac(domain, id, index));
        let id = id.to_string().to_ascii_lowercase();
        format!("{VERSION}-{id}-{index}-{mac}")
    }

    /// The message and recipient a return path at `domain` stands for, if this relay made
    /// it (MAC checked in constant time) and the message is not older than [`MAX_AGE_MS`].
    pub fn open(&self, local: &str, domain: &str, now_ms: i64) -> Result<Bounced, VerpError> {
        let bounced = self.verify(local, domain)?;
        if now_ms.saturating_sub(bounced.queue_id.unix_ms()) > MAX_AGE_MS {
            return Err(VerpError::Expired);
        }
        Ok(bounced)
    }

    /// [`VerpKey::open`] without the age check, for callers without a clock (the SMTP
    /// session); whoever acts on the bounce checks the age.
    pub fn verify(&self, local: &str, domain: &str) -> Result<Bounced, VerpError> {
        let mut parts = local.split('-');
        let (Some(version), Some(id), Some(index), Some(mac), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(VerpError::Malformed);
        };
        if !version.eq_ignore_ascii_case(VERSION) || mac.len() != MAC_CHARS {
            return Err(VerpError::Malformed);
        }
        let id: QueueId = id.parse().map_err(|_| VerpError::Malformed)?;
        // Canonical decimal only, so one token has one spelling.
        let index: u16 = index
            .parse()
            .ok()
            .filter(|i: &u16| i.to_string() == index)
            .ok_or(VerpError::Malformed)?;
        let expected = base32(&self.mac(domain, &id, index));
        let given = mac.to_ascii_lowercase();
        if !bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
            return Err(VerpError::BadMac);
        }
        Ok(Bounced {
            queue_id: id,
            index,
        })
    }
}

/// The sending domain under a bounce domain `<label>.<sending domain>`, if `domain` is one
/// (the label matched case-insensitively; the rest must have a dot of its own).
pub fn bounce_domain_parent<'a>(label: &str, domain: &'a str) -> Option<&'a str> {
    let (first, rest) = domain.split_once('.')?;
    (first.eq_ignore_ascii_case(label) && rest.contains('.')).then_some(rest)
}

impl fmt::Debug for VerpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VerpKey(..)")
    }
}

/// What a valid return path stands for: recipient `index` of message `queue_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounced {
    pub queue_id: QueueId,
    pub index: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerpError {
    #[error("the return-path secret must be at least 32 bytes")]
    WeakKey,
    #[error("not a return path of this relay")]
    Malformed,
    #[error("return path with a wrong MAC")]
    BadMac,
    #[error("return path of a message too old to bounce")]
    Expired,
}

fn base32(bytes: &[u8; MAC_LEN]) -> String {
    // 80 bits, 16 characters of 5 bits.
    let mut value: u128 = 0;
    for b in bytes {
        value = (value << 8) | u128::from(*b);
    }
    (0..MAC_CHARS)
        .rev()
        .map(|i| char::from(ALPHABET[((value >> (5 * i)) & 0x1F) as usize]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> VerpKey {
        VerpKey::new(&[7u8; 32]).expect("key")
    }

    #[test]
    fn a_return_path_opens_to_its_message_and_recipient_only_at_its_domain() {
        let id = QueueId::generate();
        let now = id.unix_ms() + 1000;
        let local = key().local_part("bounce.acme.test", &id, 3);
        assert!(local.len() <= 64, "{local}");
        assert_eq!(
            key().open(&local, "bounce.acme.test", now),
            Ok(Bounced {
                queue_id: id,
                index: 3
            })
        );
        // Case and a trailing dot do not matter; another domain, index or key does.
        assert!(
            key()
                .open(&local.to_uppercase(), "Bounce.Acme.Test.", now)
                .is_ok()
        );
        assert_eq!(
            key().open(&local, "bounce.other.test", now),
            Err(VerpError::BadMac)
        );
        let other_index = local.replacen("-3-", "-4-", 1);
        assert_eq!(
            key().open(&other_index, "bounce.acme.test", now),
            Err(VerpError::BadMac)
        );
        let other_key = VerpKey::new(&[8u8; 32]).expect("key");
        assert_eq!(
            other_key.open(&local, "bounce.acme.test", now),
            Err(VerpError::BadMac)
        );
        assert_eq!(
            key().open(&local, "bounce.acme.test", now + MAX_AGE_MS),
            Err(VerpError::Expired)
        );
    }

    #[test]
    fn anything_else_is_not_a_return_path() {
        let id = QueueId::generate();
        let now = id.unix_ms();
        let local = key().local_part("b.test", &id, 0);
        for bad in [
            "",
            "postmaster",
            "b1",
            &format!("{local}-x"),
            &local.replacen("-0-", "-00-", 1),
            &local.replacen("-0-", "-+0-", 1),
            &local.replacen("b1-", "b2-", 1),
            &local[..local.len() - 1],
        ] {
            assert_eq!(
                key().open(bad, "b.test", now),
                Err(VerpError::Malformed),
                "{bad}"
            );
        }
        assert_eq!(VerpKey::new(&[1u8; 16]).err(), Some(VerpError::WeakKey));
        assert_eq!(format!("{:?}", key()), "VerpKey(..)");
    }
}
