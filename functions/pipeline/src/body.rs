//! Reading a stored body into memory, within a budget: however many large messages are in
//! the pipeline at once, the bodies held by the process above [`LARGE`] add up to at most
//! [`BUDGET`] (a body bigger than the budget takes all of it, so it goes alone). Small
//! bodies, the usual case, never wait.

use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use baton_domain::Envelope;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{Ports, StageError};

/// Bodies above this size count against the budget.
pub const LARGE: u64 = 1024 * 1024;
/// What large bodies may take together, in bytes.
pub const BUDGET: u64 = 24 * 1024 * 1024;
/// The budget is counted in units of this many bytes (a semaphore counts in `u32`).
const UNIT: u64 = 64 * 1024;

fn budget() -> Arc<Semaphore> {
    static BUDGET_UNITS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    BUDGET_UNITS
        .get_or_init(|| Arc::new(Semaphore::new((BUDGET / UNIT) as usize)))
        .clone()
}

/// A stored body in memory, holding its share of the budget until dropped.
pub struct Body {
    bytes: Vec<u8>,
    _share: Option<OwnedSemaphorePermit>,
}

impl Deref for Body {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Reads the body of `envelope`'s message, first waiting for its share of the budget when
/// it is large (`envelope.size` says how large before it is read).
pub async fn read(ports: &Ports, envelope: &Envelope) -> Result<Body, StageError> {
    let share = if envelope.size > LARGE {
        let units = envelope.size.min(BUDGET).div_ceil(UNIT) as u32;
        let permit = budget()
            .acquire_many_owned(units)
            .await
            .map_err(|e| StageError::Transient(format!("body budget: {e}")))?;
        Some(permit)
    } else {
        None
    };
    let bytes = ports.blobs.read(&envelope.queue_id.to_string()).await?;
    Ok(Body {
        bytes,
        _share: share,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_larger_than_the_budget_takes_all_of_it_and_no_more() {
        let units = |size: u64| size.min(BUDGET).div_ceil(UNIT);
        assert_eq!(units(25 * 1024 * 1024), BUDGET / UNIT);
        assert_eq!(units(2 * 1024 * 1024), 32);
        assert!(BUDGET / UNIT <= u64::from(u32::MAX));
    }
}
