//! One driver for every queue-triggered stage: it runs the handler on each message of a
//! batch and settles the message according to the outcome. The embedded workers and the
//! Lambda functions both use it, so retry and dead-letter behaviour is the same everywhere.

use std::future::Future;
use std::time::Duration;

use baton_store::{Queue, QueueMessage};
use tracing::Instrument;

use crate::{Disposition, StageError};

/// How a message of the batch ended, for partial batch failure reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    Done,
    Retry,
    DeadLettered,
}

/// Backoff for a transient failure, by how often the message was received.
pub fn transient_backoff(receive_count: u32) -> Duration {
    let secs = 5u64.saturating_mul(1 << receive_count.min(10));
    Duration::from_secs(secs.min(15 * 60))
}

/// Message attribute: unix milliseconds before which a message is not due. Queues whose
/// delay is capped (SQS: 15 minutes) set it for longer backoffs; whoever receives such a
/// message early sends it on again with the remaining delay instead of handling it.
pub const NOT_BEFORE: &str = "not_before";

/// How long `message` still has to wait, if it came early.
pub fn not_yet_due(message: &QueueMessage, now_ms: i64) -> Option<Duration> {
    let due: i64 = message.attributes.get(NOT_BEFORE)?.parse().ok()?;
    (due > now_ms).then(|| Duration::from_millis((due - now_ms) as u64))
}

/// Runs `handler` on every message and settles each one: done → deleted; retry → made
/// visible again later; transient error → backoff; permanent error → dead-letter queue with
/// the reason, never retried in a loop.
pub async fn process_batch<F, Fut>(
    queue: &dyn Queue,
    dead_letter: &dyn Queue,
    messages: Vec<QueueMessage>,
    handler: F,
) -> Vec<(String, Settled)>
where
    F: Fn(QueueMessage) -> Fut,
    Fut: Future<Output = Result<Disposition, StageError>>,
{
    let mut out = Vec::with_capacity(messages.len());
    for message in messages {
        let span = tracing::info_span!(
            "stage",
            stage = queue.name(),
            queue_id = message.attributes.get("queue_id").map(String::as_str).unwrap_or(""),
            tenant = message.attributes.get("tenant").map(String::as_str).unwrap_or(""),
            message = %message.id,
        );
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let settled = match not_yet_due(&message, now_ms) {
            Some(wait) => {
                let early = std::future::ready(Ok(Disposition::RetryAfter(wait)));
                settle(queue, dead_letter, message, early)
                    .instrument(span)
                    .await
            }
            None => {
                settle(queue, dead_letter, message.clone(), handler(message))
                    .instrument(span)
                    .await
            }
        };
        out.push(settled);
    }
    out
}

async fn settle(
    queue: &dyn Queue,
    dead_letter: &dyn Queue,
    message: QueueMessage,
    work: impl Future<Output = Result<Disposition, StageError>>,
) -> (String, Settled) {
    let result = work.await;
    let settled = match result {
        Ok(Disposition::Done) => match queue.delete(&message.receipt).await {
            Ok(()) => Settled::Done,
            Err(e) => {
                // Deleting failed: the message comes back and is handled again; handlers are
                // idempotent per recipient.
                tracing::warn!(error = %e, "cannot delete finished message");
                Settled::Retry
            }
        },
        Ok(Disposition::Deleted) => Settled::Done,
        Ok(Disposition::RetryAfter(after)) => {
            // Postponing is not failing: a fresh copy with a delay keeps the receive count
            // (and so the dead-letter threshold) for real failures.
            match queue
                .send(&message.body, message.attributes.clone(), after)
                .await
            {
                Ok(_) => {
                    let _ = queue.delete(&message.receipt).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot postpone message; it comes back after its visibility timeout");
                }
            }
            Settled::Retry
        }
        Err(StageError::Transient(reason)) => {
            let after = transient_backoff(message.receive_count);
            tracing::warn!(%reason, retry_in = ?after, "transient failure");
            let _ = queue.change_visibility(&message.receipt, after).await;
            Settled::Retry
        }
        Err(StageError::Permanent(reason)) => {
            tracing::error!(%reason, "permanent failure: moving to the dead-letter queue");
            let mut attributes = message.attributes.clone();
            attributes.insert("dead_letter_reason".into(), reason);
            attributes.insert("source_queue".into(), queue.name().to_string());
            match dead_letter
                .send(&message.body, attributes, Duration::ZERO)
                .await
            {
                Ok(_) => {
                    let _ = queue.delete(&message.receipt).await;
                    Settled::DeadLettered
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot dead-letter message; it will be retried");
                    Settled::Retry
                }
            }
        }
    };
    // One line per message and stage: the trail an operator follows in the logs.
    tracing::info!(outcome = ?settled, receive_count = message.receive_count, "handled");
    (message.id, settled)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use baton_store::memory::MemoryQueue;

    use super::*;

    #[tokio::test]
    async fn a_message_received_before_not_before_is_passed_on_not_handled() {
        let dlq = MemoryQueue::new("q-dlq", 0, None);
        let q = MemoryQueue::new("q", 100, None);
        let far = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis()
            + 3_600_000;
        let attrs = [(NOT_BEFORE.to_string(), far.to_string())].into();
        q.send(b"later", attrs, Duration::ZERO).await.expect("send");
        let batch = q
            .receive(10, Duration::from_secs(60))
            .await
            .expect("receive");
        let handled = std::sync::atomic::AtomicBool::new(false);
        process_batch(&q, &dlq, batch, |_| {
            handled.store(true, std::sync::atomic::Ordering::SeqCst);
            async { Ok(Disposition::Done) }
        })
        .await;
        assert!(
            !handled.load(std::sync::atomic::Ordering::SeqCst),
            "handled before due"
        );
        assert_eq!(q.len(), 1, "the early message must be sent on, not dropped");
        assert!(
            q.receive(10, Duration::from_secs(1))
                .await
                .expect("again")
                .is_empty(),
            "sent on without the remaining delay"
        );
    }

    #[tokio::test]
    async fn outcomes_settle_messages() {
        let dlq = Arc::new(MemoryQueue::new("q-dlq", 0, None));
        let q = MemoryQueue::new("q", 100, None);
        for body in ["ok", "later", "flaky", "poison"] {
            q.send(body.as_bytes(), Default::default(), Duration::ZERO)
                .await
                .expect("send");
        }
        let batch = q
            .receive(10, Duration::from_secs(60))
            .await
            .expect("receive");
        let settled = process_batch(&q, dlq.as_ref(), batch, |m| async move {
            match m.body.as_slice() {
                b"ok" => Ok(Disposition::Done),
                b"later" => Ok(Disposition::RetryAfter(Duration::from_secs(600))),
                b"flaky" => Err(StageError::Transient("down".into())),
                _ => Err(StageError::Permanent("undecodable".into())),
            }
        })
        .await;
        let kinds: Vec<Settled> = settled.into_iter().map(|(_, s)| s).collect();
        assert_eq!(
            kinds,
            [
                Settled::Done,
                Settled::Retry,
                Settled::Retry,
                Settled::DeadLettered
            ]
        );
        assert_eq!(q.len(), 2, "done and poison messages must leave the queue");
        let dead = dlq.receive(10, Duration::from_secs(1)).await.expect("dlq");
        assert_eq!(dead[0].body, b"poison");
        assert_eq!(dead[0].attributes["dead_letter_reason"], "undecodable");
        assert!(
            q.receive(10, Duration::from_secs(1))
                .await
                .expect("again")
                .is_empty(),
            "retries came back early"
        );
    }
}
