//! Where tenants' events go on AWS: their own SQS queues and EventBridge buses. Plain
//! strings in and out, so the SDK types stay in this crate.

use aws_sdk_sqs::types::MessageAttributeValue;
use baton_store::StoreError;

use crate::error::backend;

/// Senders to tenants' queues and buses, with the backend's credentials and endpoints.
#[derive(Clone)]
pub struct EventTargets {
    pub(crate) sqs: aws_sdk_sqs::Client,
    pub(crate) eventbridge: aws_sdk_eventbridge::Client,
}

impl EventTargets {
    /// One SQS message: the event as its body, its id and type as message attributes.
    pub async fn send_to_queue(
        &self,
        queue_url: &str,
        body: &str,
        event_id: &str,
        event_type: &str,
    ) -> Result<(), StoreError> {
        let attribute = |value: &str| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .map_err(|e| StoreError::Backend(format!("SQS message attribute: {e}")))
        };
        self.sqs
            .send_message()
            .queue_url(queue_url)
            .message_body(body)
            .message_attributes("eventId", attribute(event_id)?)
            .message_attributes("eventType", attribute(event_type)?)
            .send()
            .await
            .map_err(|e| backend(&format!("SendMessage to {queue_url}"), e))?;
        Ok(())
    }

    /// One EventBridge entry on `bus` (a name or an ARN).
    pub async fn put_event(
        &self,
        bus: &str,
        source: &str,
        detail_type: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
            .event_bus_name(bus)
            .source(source)
            .detail_type(detail_type)
            .detail(detail)
            .build();
        let out = self
            .eventbridge
            .put_events()
            .entries(entry)
            .send()
            .await
            .map_err(|e| backend(&format!("PutEvents on {bus}"), e))?;
        // PutEvents answers 200 with per-entry failures (throttling, a bus that is gone).
        if out.failed_entry_count() > 0 {
            let why = out
                .entries()
                .iter()
                .filter_map(|e| e.error_code().map(|c| (c, e.error_message().unwrap_or(""))))
                .map(|(c, m)| format!("{c}: {m}"))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(StoreError::Backend(format!("PutEvents on {bus}: {why}")));
        }
        Ok(())
    }
}
