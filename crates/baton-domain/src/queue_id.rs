//! Queue ids: 26 characters of Crockford base32 over 48 bits of milliseconds and 80 random
//! bits, so ids sort by arrival time and are safe as file names.

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::RngCore;
use serde::{Deserialize, Serialize};

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const LEN: usize = 26;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct QueueId(u128);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid queue id")]
pub struct QueueIdError;

impl QueueId {
    pub fn generate() -> Self {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut random = [0u8; 10];
        rand::thread_rng().fill_bytes(&mut random);
        let mut value = u128::from(millis & 0xFFFF_FFFF_FFFF) << 80;
        for (i, b) in random.iter().enumerate() {
            value |= u128::from(*b) << (8 * (9 - i));
        }
        QueueId(value)
    }
}

impl QueueId {
    /// When the id was made (Unix milliseconds).
    pub fn unix_ms(&self) -> i64 {
        (self.0 >> 80) as i64
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = [0u8; LEN];
        for (i, slot) in out.iter_mut().enumerate() {
            let shift = 5 * (LEN - 1 - i);
            *slot = ALPHABET[((self.0 >> shift) & 0x1F) as usize];
        }
        f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

impl FromStr for QueueId {
    type Err = QueueIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != LEN {
            return Err(QueueIdError);
        }
        let mut value: u128 = 0;
        for (i, c) in s.bytes().enumerate() {
            let digit = ALPHABET
                .iter()
                .position(|&a| a == c.to_ascii_uppercase())
                .ok_or(QueueIdError)? as u128;
            // The first character carries only 3 bits (26 * 5 = 130 > 128).
            if i == 0 && digit > 7 {
                return Err(QueueIdError);
            }
            value = (value << 5) | digit;
        }
        Ok(QueueId(value))
    }
}

impl TryFrom<String> for QueueId {
    type Error = QueueIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<QueueId> for String {
    fn from(id: QueueId) -> String {
        id.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_sorts_by_time() {
        let a = QueueId::generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = QueueId::generate();
        assert!(a < b);
        assert!(a.to_string() < b.to_string());
        assert_eq!(a.to_string().parse::<QueueId>(), Ok(a));
        assert_eq!(a.to_string().len(), 26);
    }

    #[test]
    fn rejects_garbage() {
        assert!("../../etc/passwd".parse::<QueueId>().is_err());
        assert!("ZZZZZZZZZZZZZZZZZZZZZZZZZZ".parse::<QueueId>().is_err());
    }
}
