//! The events stage: sends one stored event to one of its tenant's destinations (an SQS
//! queue, an EventBridge bus, a webhook). One queue message per (event, destination), so a
//! destination that is down is retried with the driver's backoff and dead-lettered after
//! the queue's limit without holding up the others, and never inside delivery.

use std::sync::Arc;

use baton_store::{Queue, QueueMessage};
use serde::{Deserialize, Serialize};

use crate::event_destinations::{self, Target};
use crate::webhook::WebhookClient;
use crate::{Disposition, Ports, StageError, ses_events};

/// Per (event, destination): sent, and when. Written after the send succeeded, so a job
/// that comes again (a redelivered stage queued it twice) does not send twice.
pub const SENT_TABLE: &str = "event_sent";

/// EventBridge `source` of our entries (SES uses `aws.ses`, which only AWS may send).
pub const EVENTBRIDGE_SOURCE: &str = "baton";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyJob {
    pub tenant: String,
    pub event_id: String,
    pub destination: String,
}

/// Queues `job` on the events queue.
pub async fn enqueue(
    events: &dyn Queue,
    job: &NotifyJob,
    queue_id: &str,
) -> Result<(), StageError> {
    let body = serde_json::to_vec(job).map_err(|e| StageError::Permanent(format!("job: {e}")))?;
    // Not `queue_id`: that names a body the embedded sweeper must keep while the job
    // waits, and an event needs none (a dead-lettered one would keep it forever).
    let attributes = [
        ("tenant".to_string(), job.tenant.clone()),
        ("event_of".to_string(), queue_id.to_string()),
    ]
    .into();
    events
        .send(&body, attributes, std::time::Duration::ZERO)
        .await?;
    Ok(())
}

/// Queues and buses in the cloud, behind a port: the AWS backend implements it.
#[async_trait::async_trait]
pub trait CloudTargets: Send + Sync {
    async fn send_to_queue(
        &self,
        queue_url: &str,
        body: &str,
        event_id: &str,
        event_type: &str,
    ) -> Result<(), StageError>;

    async fn put_event(
        &self,
        bus: &str,
        source: &str,
        detail_type: &str,
        detail: &str,
    ) -> Result<(), StageError>;
}

/// What the events stage needs besides the ports.
#[derive(Clone)]
pub struct NotifyStage {
    pub cloud: Arc<dyn CloudTargets>,
    pub webhooks: WebhookClient,
    /// Queues named `<own_prefix>-...` are the relay's own: never a destination.
    pub own_prefix: String,
}

pub async fn handle(
    ports: &Ports,
    stage: &NotifyStage,
    message: &QueueMessage,
) -> Result<Disposition, StageError> {
    let job: NotifyJob = serde_json::from_slice(&message.body)
        .map_err(|e| StageError::Permanent(format!("undecodable events job: {e}")))?;
    let ledger = ports.ledger.as_ref();
    let sent_key = format!("{}/{}/{}", job.event_id, job.tenant, job.destination);
    if ledger.get(SENT_TABLE, &sent_key).await?.is_some() {
        tracing::debug!(event = %job.event_id, "already sent to this destination");
        return Ok(Disposition::Done);
    }
    let Some(destination) = event_destinations::get(ledger, &job.tenant, &job.destination).await?
    else {
        tracing::info!(destination = %job.destination, "destination removed: event dropped");
        return Ok(Disposition::Done);
    };
    let body = ses_events::get(ledger, &job.tenant, &job.event_id)
        .await?
        .ok_or_else(|| {
            StageError::Permanent(format!("no event {}/{}", job.tenant, job.event_id))
        })?;
    let body = String::from_utf8(body)
        .map_err(|_| StageError::Permanent(format!("event {} is not UTF-8", job.event_id)))?;
    let event_type = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("eventType")?.as_str().map(str::to_string))
        .ok_or_else(|| StageError::Permanent(format!("event {} has no eventType", job.event_id)))?;
    // Checked again at each send: a destination stored before a rule tightened.
    destination
        .target
        .check(&stage.own_prefix)
        .map_err(StageError::Permanent)?;
    let now_ms = ports.clock.unix_ms();
    match &destination.target {
        Target::Sqs { queue_url } => {
            stage
                .cloud
                .send_to_queue(queue_url, &body, &job.event_id, &event_type)
                .await?
        }
        Target::Eventbridge { bus } => {
            let detail_type = ses_events::detail_type(&event_type);
            stage
                .cloud
                .put_event(bus, EVENTBRIDGE_SOURCE, &detail_type, &body)
                .await?
        }
        Target::Webhook { url } => {
            let secret = event_destinations::secret(ledger, &destination).await?;
            stage
                .webhooks
                .post(url, &secret, &job.event_id, body.as_bytes(), now_ms / 1000)
                .await?
        }
    }
    ledger
        .put(SENT_TABLE, &sent_key, now_ms.to_string().as_bytes())
        .await?;
    tracing::info!(
        event = %job.event_id,
        event_type,
        destination = %job.destination,
        "event sent"
    );
    Ok(Disposition::Done)
}
