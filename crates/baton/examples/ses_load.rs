//! Load for the API benchmark (bench/api.sh): COUNT SendEmail calls through one AWS SDK
//! client (its keep-alive connection pool, SigV4 on every request), CONCURRENCY at a time,
//! as an application with the SDK would send. Prints one line: `sent OK of COUNT in SECS s`.
//!
//! ```text
//! BATON_API=http://127.0.0.1:8587 AWS_ACCESS_KEY_ID=BTN... AWS_SECRET_ACCESS_KEY=... \
//!   ses_load FROM TO COUNT CONCURRENCY SIZE
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent, Message};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [from, to, count, concurrency, size] = args.as_slice() else {
        anyhow::bail!("usage: ses_load FROM TO COUNT CONCURRENCY SIZE");
    };
    let (count, concurrency, size): (usize, usize, usize) =
        (count.parse()?, concurrency.parse()?, size.parse()?);
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        // The workspace builds the SDK without its default transport (aws-lc, h2): this is
        // the one baton-aws uses.
        .http_client(baton_aws::sdk_http_client())
        .endpoint_url(std::env::var("BATON_API")?)
        .region(aws_config::Region::new("us-east-1"))
        .load()
        .await;
    let ses = aws_sdk_sesv2::Client::new(&config);
    // SIZE bytes of text body in 76-character lines, like smtp-source's.
    let line = format!("{}\n", "x".repeat(75));
    let body = line.repeat(size.div_ceil(line.len()).max(1));
    let content = EmailContent::builder()
        .simple(
            Message::builder()
                .subject(Content::builder().data("bench").build()?)
                .body(
                    Body::builder()
                        .text(Content::builder().data(body).build()?)
                        .build(),
                )
                .build(),
        )
        .build();
    let next = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (ses, next, ok) = (ses.clone(), next.clone(), ok.clone());
        let (from, to, content) = (from.clone(), to.clone(), content.clone());
        tasks.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let sent = ses
                    .send_email()
                    .from_email_address(&from)
                    .destination(Destination::builder().to_addresses(&to).build())
                    .content(content.clone())
                    .send()
                    .await;
                match sent {
                    Ok(_) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => eprintln!("send failed: {e:?}"),
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let secs = started.elapsed().as_secs_f64();
    println!(
        "sent {} of {count} in {secs:.3} s",
        ok.load(Ordering::Relaxed)
    );
    Ok(())
}
