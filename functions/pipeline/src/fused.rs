//! The fused path: policy, signing and the first delivery attempt of a message in one job
//! taken from the intake queue, with the body read once and the ledger writes of the steps
//! sent together ([`Checkpoint`]): policy's and signing's with delivery's claim on the
//! recipients, delivery's results at the end. Retries, bounces and events still go through their
//! queues, and so does a job whose signing or delivery step fails after policy passed it
//! (to `sign` or `deliver`, where the per-stage path would have put it).
//!
//! Crash safety is the per-stage path's: the intake message is deleted only when the job
//! is over, so a crash redoes policy (recipients that moved on are skipped, the events it
//! publishes keep their ids) and delivery again claims each recipient before sending, so
//! nobody is sent to twice by a redone job.

use std::collections::BTreeMap;
use std::sync::Arc;

use baton_domain::Envelope;
use baton_store::{Queue, QueueMessage};

use crate::checkpoint::{Checkpoint, FlushFirst};
use crate::deliver::{self, DeliverStage};
use crate::driver::transient_backoff;
use crate::job::{Job, WithOrigin, decode, encode};
use crate::policy::{self, Decision, PolicyConfig};
use crate::sign;
use crate::{Disposition, Ports, StageError};

pub struct FusedStage {
    pub policy: PolicyConfig,
    pub deliver: DeliverStage,
}

/// The ports the steps use: the ledger holds writes back until a checkpoint, and each queue
/// sends them before its message.
fn checkpointed(ports: &Ports, checkpoint: &Arc<Checkpoint>) -> Ports {
    let flush_first = |queue: &Arc<dyn Queue>| -> Arc<dyn Queue> {
        Arc::new(FlushFirst {
            checkpoint: checkpoint.clone(),
            queue: queue.clone(),
        })
    };
    Ports {
        blobs: ports.blobs.clone(),
        ledger: checkpoint.clone(),
        intake: flush_first(&ports.intake),
        sign: flush_first(&ports.sign),
        deliver: flush_first(&ports.deliver),
        bounce: flush_first(&ports.bounce),
        events: flush_first(&ports.events),
        clock: ports.clock.clone(),
    }
}

pub async fn handle(
    ports: &Ports,
    stage: &FusedStage,
    message: &QueueMessage,
) -> Result<Disposition, StageError> {
    let record = decode::<WithOrigin<Envelope>>(&message.body)?;
    let checkpoint = Arc::new(Checkpoint::new(ports.ledger.clone()));
    let local = checkpointed(ports, &checkpoint);
    let Some(share) = crate::body::reserve(&record.record).await? else {
        return Ok(Disposition::RetryAfter(crate::body::LANE_FULL_RETRY));
    };
    let body = Arc::new(crate::body::read(ports, &record.record, share).await?);
    let attributes = &message.attributes;

    let record = match policy::decide(&local, &stage.policy, record, &body, attributes).await? {
        Decision::Pass(record) => *record,
        Decision::Finished => {
            checkpoint.flush().await?;
            return Ok(Disposition::Done);
        }
        Decision::RetryAfter(after) => {
            checkpoint.flush().await?;
            return Ok(Disposition::RetryAfter(after));
        }
    };

    // Policy's result is recorded: from here on a step that fails hands its job on rather
    // than failing the intake message, which would run policy again.
    let job = match sign::sign(&local, record.clone(), body.clone()).await {
        Ok(job) => job,
        Err(StageError::Transient(reason)) => {
            tracing::warn!(%reason, "signing failed: the job goes to the sign queue");
            ports
                .sign
                .send(&encode(&record)?, attributes.clone(), Default::default())
                .await?;
            return Ok(Disposition::Done);
        }
        Err(permanent) => return Err(permanent),
    };
    // Policy's and signing's records go out with delivery's first write (its claim on the
    // recipients), before anything is sent.

    let attempt = deliver::attempt(&local, &stage.deliver, &job, Some(&body[..]), attributes).await;
    let (attempt, flushed) = match attempt {
        // The usual end: the results and the intake message's delete in one commit.
        Ok(Disposition::Done) => (
            Ok(Disposition::Deleted),
            checkpoint
                .flush_and_delete(ports.intake.as_ref(), &message.receipt)
                .await,
        ),
        other => (other, checkpoint.flush().await),
    };
    match (attempt, flushed) {
        (Ok(done @ (Disposition::Done | Disposition::Deleted)), Ok(())) => Ok(done),
        (Ok(Disposition::RetryAfter(after)), Ok(())) => {
            hand_to_deliver(ports, &job, attributes, after).await
        }
        (Err(StageError::Permanent(reason)), _) => Err(StageError::Permanent(reason)),
        (Err(StageError::Transient(reason)), _) => {
            tracing::warn!(%reason, "delivery step failed: the job goes to the deliver queue");
            hand_to_deliver(ports, &job, attributes, transient_backoff(1)).await
        }
        (Ok(_), Err(e)) => {
            tracing::warn!(error = %e, "delivery results not recorded: the job goes to the deliver queue");
            hand_to_deliver(ports, &job, attributes, transient_backoff(1)).await
        }
    }
}

/// The deliver queue takes over: its worker claims each recipient again, so one that this
/// attempt finished is not sent to twice.
async fn hand_to_deliver(
    ports: &Ports,
    job: &Job,
    attributes: &BTreeMap<String, String>,
    after: std::time::Duration,
) -> Result<Disposition, StageError> {
    ports
        .deliver
        .send(&encode(job)?, attributes.clone(), after)
        .await?;
    Ok(Disposition::Done)
}
