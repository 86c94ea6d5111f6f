//! Where tenants' events go on AWS: their own SQS queues and EventBridge buses. Plain
//! strings in and out.

use baton_store::StoreError;
use serde_json::json;

use crate::error::backend;
use crate::sqs::string_attribute;
use crate::wire::{AwsClient, Service};

/// Senders to tenants' SQS queues and EventBridge buses (by URL and name: tenants' own
/// resources, not the stage queues), signed with the backend's credentials.
#[derive(Clone)]
pub struct EventTargets {
    pub(crate) client: AwsClient,
}

impl EventTargets {
    /// Sends `body` to the queue at `queue_url`, with the event's id and type as message
    /// attributes (so subscribers can filter without parsing).
    pub async fn send_to_queue(
        &self,
        queue_url: &str,
        body: &str,
        event_id: &str,
        event_type: &str,
    ) -> Result<(), StoreError> {
        let input = json!({
            "QueueUrl": queue_url,
            "MessageBody": body,
            "MessageAttributes": {
                "eventId": string_attribute(event_id),
                "eventType": string_attribute(event_type),
            },
        });
        self.client
            .json(Service::Sqs, "SendMessage", &input)
            .await
            .map_err(|e| backend(&format!("SendMessage to {queue_url}"), e))?;
        Ok(())
    }

    /// Puts one event on `bus`; an entry EventBridge refuses is an error.
    pub async fn put_event(
        &self,
        bus: &str,
        source: &str,
        detail_type: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        let input = json!({
            "Entries": [{
                "EventBusName": bus,
                "Source": source,
                "DetailType": detail_type,
                "Detail": detail,
            }],
        });
        let out = self
            .client
            .json(Service::EventBridge, "PutEvents", &input)
            .await
            .map_err(|e| backend(&format!("PutEvents on {bus}"), e))?;
        if out["FailedEntryCount"].as_u64().unwrap_or(0) > 0 {
            let why = out["Entries"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| {
                    let code = e["ErrorCode"].as_str()?;
                    Some(format!(
                        "{code}: {}",
                        e["ErrorMessage"].as_str().unwrap_or("")
                    ))
                })
                .collect::<Vec<_>>()
                .join("; ");
            return Err(StoreError::Backend(format!("PutEvents on {bus}: {why}")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::credentials::CredentialSource;
    use crate::wire::{scripted_server, test_client};

    /// A tenant names its queue by URL and its bus by name: neither can send our signed
    /// request anywhere but the configured SQS or EventBridge endpoint (the JSON protocols
    /// carry them in the body). Were the URL followed, this would fail to resolve.
    #[tokio::test]
    async fn a_tenant_queue_url_or_bus_cannot_steer_the_signed_request() {
        let (url, server) = scripted_server(vec![
            (200, r#"{"MessageId":"m"}"#),
            (200, r#"{"FailedEntryCount":0,"Entries":[{"EventId":"e"}]}"#),
        ])
        .await;
        let creds = aws_credential_types::Credentials::new("AKID", "secret", None, None, "t");
        let config = baton_config::Aws {
            endpoint_url: url.clone(),
            ..Default::default()
        };
        let targets = EventTargets {
            client: test_client(config, CredentialSource::Fixed(creds)),
        };
        targets
            .send_to_queue("https://attacker.invalid/123/q", "{}", "id", "Send")
            .await
            .expect("sent to the configured endpoint");
        targets
            .put_event(
                "arn:aws:events:eu-west-1:1:event-bus/x",
                "baton",
                "Send",
                "{}",
            )
            .await
            .expect("put on the configured endpoint");
        let host = url.trim_start_matches("http://").to_ascii_lowercase();
        for request in server.await.expect("server") {
            let lower = request.to_ascii_lowercase();
            assert!(lower.starts_with("post / http/1.1"), "{request}");
            assert!(lower.contains(&format!("host: {host}")), "{request}");
        }
    }
}
