//! The time the backend stamps rows with and sweeps by: the system's, or one a test sets.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Unix milliseconds from the system clock, or from a manual clock shared by its clones.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    manual: Option<Arc<AtomicI64>>,
}

impl Clock {
    pub fn system() -> Self {
        Clock::default()
    }

    /// A clock that stands at `unix_ms` until [`set`](Self::set) or
    /// [`advance`](Self::advance) moves it.
    pub fn manual(unix_ms: i64) -> Self {
        Clock {
            manual: Some(Arc::new(AtomicI64::new(unix_ms))),
        }
    }

    pub fn now_ms(&self) -> i64 {
        match &self.manual {
            Some(t) => t.load(Ordering::SeqCst),
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
        }
    }

    /// Moves a manual clock (a no-op on the system clock).
    pub fn set(&self, unix_ms: i64) {
        if let Some(t) = &self.manual {
            t.store(unix_ms, Ordering::SeqCst);
        }
    }

    /// Moves a manual clock forward (a no-op on the system clock).
    pub fn advance(&self, by: Duration) {
        if let Some(t) = &self.manual {
            t.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
        }
    }
}
