//! Sends one message through Baton's SES v2 API with the AWS SDK for Rust, exactly as an
//! application would use Amazon SES: only the endpoint and the keys differ.
//!
//! ```text
//! BATON_API=http://127.0.0.1:8587 AWS_ACCESS_KEY_ID=BTN... AWS_SECRET_ACCESS_KEY=... \
//!   cargo run --example ses_send -- news@acme.test bob@example.org
//! ```
//! Prints the MessageId (Baton's queue id).

use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent, Message};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(from), Some(to)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: ses_send FROM TO (endpoint in BATON_API, keys in AWS_*)");
    };
    let endpoint = std::env::var("BATON_API")?;
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        // The workspace builds the SDK without its default transport (aws-lc, h2): this is
        // the one baton-aws uses.
        .http_client(baton_aws::sdk_http_client())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .load()
        .await;
    let ses = aws_sdk_sesv2::Client::new(&config);
    let text = |data: &str| Content::builder().data(data).charset("UTF-8").build();
    let sent = ses
        .send_email()
        .from_email_address(from)
        .destination(Destination::builder().to_addresses(to).build())
        .content(
            EmailContent::builder()
                .simple(
                    Message::builder()
                        .subject(text("from the Rust SDK")?)
                        .body(
                            Body::builder()
                                .text(text("sent with aws-sdk-sesv2")?)
                                .html(text("<p>sent with <b>aws-sdk-sesv2</b></p>")?)
                                .build(),
                        )
                        .build(),
                )
                .build(),
        )
        .send()
        .await?;
    println!("{}", sent.message_id().unwrap_or_default());
    Ok(())
}
