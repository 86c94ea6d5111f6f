//! Reading a stored body into memory, within a budget: however many large messages are in
//! the pipeline at once, the bodies held by the process above [`LARGE`] add up to at most
//! [`BUDGET`] (a body bigger than the budget takes all of it, so it goes alone). Small
//! bodies, the usual case, never wait.
//!
//! Large bodies have their own lane of [`LANES`] places: a job whose large body finds the
//! lane full is postponed through its queue ([`LANE_FULL_RETRY`]) rather than holding a
//! worker while it waits, so a sender of many large messages (port 25 takes them from
//! anyone) cannot stall the workers that carry everyone else's small mail.

use std::ops::Deref;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use baton_domain::Envelope;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{Ports, StageError};

/// Bodies above this size count against the budget.
pub const LARGE: u64 = 1024 * 1024;
/// What large bodies may take together, in bytes.
pub const BUDGET: u64 = 24 * 1024 * 1024;
/// Jobs with a large body that may be in the lane at once (reading, or waiting for budget).
pub const LANES: usize = 2;
/// How long a job whose large body found the lane full waits in its queue.
pub const LANE_FULL_RETRY: Duration = Duration::from_secs(2);
/// The budget is counted in units of this many bytes (a semaphore counts in `u32`).
const UNIT: u64 = 64 * 1024;

/// The lane and byte budget for large bodies; the process has one ([`Budget::global`]).
pub struct Budget {
    lanes: Arc<Semaphore>,
    units: Arc<Semaphore>,
    bytes: u64,
}

impl Budget {
    pub fn new(lanes: usize, bytes: u64) -> Budget {
        Budget {
            lanes: Arc::new(Semaphore::new(lanes)),
            units: Arc::new(Semaphore::new(bytes.div_ceil(UNIT) as usize)),
            bytes,
        }
    }

    pub fn global() -> &'static Budget {
        static GLOBAL: OnceLock<Budget> = OnceLock::new();
        GLOBAL.get_or_init(|| Budget::new(LANES, BUDGET))
    }

    /// A share for a body of `size` bytes: at once for a small body; for a large one, a
    /// place in the lane (or `None` when the lane is full: postpone the job) and then, in
    /// turn, its bytes of the budget.
    pub async fn reserve(&self, size: u64) -> Result<Option<Share>, StageError> {
        if size <= LARGE {
            return Ok(Some(Share { _permits: None }));
        }
        let Ok(lane) = self.lanes.clone().try_acquire_owned() else {
            return Ok(None);
        };
        let units = size.min(self.bytes).div_ceil(UNIT) as u32;
        let bytes = self
            .units
            .clone()
            .acquire_many_owned(units)
            .await
            .map_err(|e| StageError::Transient(format!("body budget: {e}")))?;
        Ok(Some(Share {
            _permits: Some((lane, bytes)),
        }))
    }
}

/// A body's place in the lane and its bytes of the budget, held until the body is dropped.
pub struct Share {
    _permits: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
}

/// A stored body in memory, holding its share of the budget until dropped.
pub struct Body {
    bytes: Vec<u8>,
    _share: Share,
}

impl Deref for Body {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Reserves the share of `envelope`'s body (`envelope.size` says how large before it is
/// read): `None` when it is large and the lane is full.
pub async fn reserve(envelope: &Envelope) -> Result<Option<Share>, StageError> {
    Budget::global().reserve(envelope.size).await
}

/// Reads the body of `envelope`'s message into memory with the share reserved for it.
pub async fn read(ports: &Ports, envelope: &Envelope, share: Share) -> Result<Body, StageError> {
    let bytes = ports.blobs.read(&envelope.queue_id.to_string()).await?;
    Ok(Body {
        bytes,
        _share: share,
    })
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    /// What a reservation gives when it has not to wait.
    fn ready(reserve: impl Future<Output = Result<Option<Share>, StageError>>) -> Option<Share> {
        reserve
            .now_or_never()
            .expect("ready without waiting")
            .expect("reserved")
    }

    #[test]
    fn a_full_lane_postpones_a_large_body_at_once_and_small_bodies_pass() {
        let budget = Budget::new(2, BUDGET);
        let first = ready(budget.reserve(25 << 20));
        assert!(
            first.is_some(),
            "the first large body takes the whole budget"
        );
        // The second is in the lane, waiting for budget: it does not finish.
        let mut second = Box::pin(budget.reserve(2 << 20));
        assert!((&mut second).now_or_never().is_none());
        // The lane is full: a third large body is postponed without waiting.
        let third = ready(budget.reserve(2 << 20));
        assert!(third.is_none());
        // Small bodies never wait, whatever the lane holds.
        assert!(ready(budget.reserve(LARGE)).is_some());
        // The first one done: the waiting one gets its budget.
        drop(first);
        assert!(ready(second).is_some());
    }

    #[test]
    fn a_body_larger_than_the_budget_takes_all_of_it_and_no_more() {
        let budget = Budget::new(1, BUDGET);
        let share = ready(budget.reserve(100 << 20));
        assert!(share.is_some());
        assert_eq!(budget.units.available_permits(), 0);
        drop(share);
        assert_eq!(budget.units.available_permits() as u64, BUDGET / UNIT);
    }
}
