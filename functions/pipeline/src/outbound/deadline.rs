//! The deadline of the delivery attempts made inside a scope: a Lambda invocation ends at a
//! fixed time, and an attempt still waiting on a tarpitting server then would be cut off
//! without a verdict. Inside [`within`], every connect, write and reply wait is limited to
//! the time left, so the attempt ends in time as a deferral the stage can still record.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

tokio::task_local! {
    static DEADLINE: Instant;
}

/// Runs `work` with every outbound network step limited to end by `deadline`.
pub async fn within<F: Future>(deadline: Instant, work: F) -> F::Output {
    DEADLINE.scope(deadline, work).await
}

/// `timeout`, or the time left before the deadline if that is shorter.
pub(super) fn clamp(timeout: Duration) -> Duration {
    DEADLINE
        .try_with(|d| d.saturating_duration_since(Instant::now()))
        .map_or(timeout, |left| timeout.min(left))
}

/// True once the deadline of the current scope has passed.
pub(super) fn passed() -> bool {
    clamp(Duration::MAX).is_zero()
}
