//! PROXY protocol v2 from a load balancer: only `listen.proxy_protocol_from` peers send a
//! header, it is mandatory from them, and the client it names is the one every limit and
//! relay rule sees.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use baton_store::BlobStore;
use tokio::io::AsyncWriteExt;

use super::{App, Client, spawn_app_with};

/// The load balancer's address in these tests; every other loopback address is a client.
const LB: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// A PROXY v2 header for a TCP/IPv4 connection, built by hand from the specification
/// (haproxy's proxy-protocol.txt section 2.2), independently of the parser under test.
fn v2_header(client: SocketAddr, lb: SocketAddr) -> Vec<u8> {
    let (SocketAddr::V4(c), SocketAddr::V4(l)) = (client, lb) else {
        panic!("IPv4 only");
    };
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x21); // version 2, PROXY
    h.push(0x11); // AF_INET, STREAM
    h.extend_from_slice(&12u16.to_be_bytes());
    h.extend_from_slice(&c.ip().octets());
    h.extend_from_slice(&l.ip().octets());
    h.extend_from_slice(&c.port().to_be_bytes());
    h.extend_from_slice(&l.port().to_be_bytes());
    h
}

/// A health check: LOCAL, no addresses.
fn v2_local() -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x20, 0x00, 0, 0]);
    h
}

async fn app(extra: &[(&str, &str)]) -> App {
    let mut env = vec![
        ("BATON_LISTEN__PROXY_PROTOCOL_FROM", "[\"127.0.0.2/32\"]"),
        ("BATON_LIMITS__COMMAND_TIMEOUT", "2s"),
    ];
    env.extend_from_slice(extra);
    spawn_app_with(&env, None).await
}

/// A connection from the load balancer that first sends `header`.
async fn through_lb(app: &App, header: &[u8]) -> Client {
    let mut c = Client::connect_raw(app.relay, Some(LB)).await;
    c.writer.write_all(header).await.expect("write header");
    c
}

fn client(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

#[tokio::test]
async fn the_client_in_the_header_is_the_one_received_and_relay_rules_see() {
    let app = app(&[]).await;
    // 203.0.113.7 is outside relay.allow_networks (127.0.0.0/8), which holds the balancer:
    // relaying must be judged on the client, not on the balancer.
    let mut c = through_lb(&app, &v2_header(client("203.0.113.7:40000"), app.relay)).await;
    let greeting = c.reply().await;
    assert!(greeting.starts_with("220 "), "{greeting}");
    c.command("EHLO outside").await;
    c.command("MAIL FROM:<a@x.test>").await;
    let rcpt = c.command("RCPT TO:<b@y.test>").await;
    assert!(rcpt.starts_with("554 5.7.1"), "relay refused: {rcpt}");

    // A client the balancer names inside the allowed network relays, and its address is
    // the one in Received.
    let mut c = through_lb(&app, &v2_header(client("127.0.0.9:40001"), app.relay)).await;
    c = c.greeted().await;
    c.command("EHLO inside").await;
    assert!(c.command("MAIL FROM:<a@x.test>").await.starts_with("250"));
    assert!(c.command("RCPT TO:<b@y.test>").await.starts_with("250"));
    let id = c.data_queued().await;
    let body = app.backend.blob_store().read(&id).await.expect("body");
    assert!(
        body.starts_with(b"Received: from inside ([127.0.0.9])"),
        "{}",
        String::from_utf8_lossy(&body[..80.min(body.len())])
    );
}

#[tokio::test]
async fn from_the_balancer_a_header_is_mandatory() {
    let app = app(&[]).await;
    // Plain SMTP where the header should be: refused, nothing else said.
    let mut c = through_lb(&app, b"EHLO sneaky.example\r\nMAIL FROM:<a@x.test>\r\n").await;
    let reply = c.reply().await;
    assert!(reply.starts_with("421 4.3.5"), "{reply}");
    assert_eq!(c.reply().await, "", "closed after the refusal");
    // Silence: the header must come within the command timeout.
    let mut c = through_lb(&app, b"").await;
    let reply = c.reply().await;
    assert!(reply.starts_with("421 4.3.5"), "{reply}");
    // The balancer's health check (LOCAL) is served as the balancer itself.
    let c = through_lb(&app, &v2_local()).await;
    c.greeted().await;
}

#[tokio::test]
async fn from_anywhere_else_a_header_is_not_read() {
    let app = app(&[]).await;
    // 127.0.0.3 is not the balancer: the greeting comes at once, without a header...
    let mut c = Client::connect_from("127.0.0.3".parse().expect("ip"), app.relay).await;
    // ...and a forged header is refused as SMTP garbage, not read as an address.
    c.writer
        .write_all(&v2_header(client("127.0.0.9:1"), app.relay))
        .await
        .expect("write");
    let reply = c.reply().await;
    assert!(reply.starts_with("500 5.5.1"), "{reply}");
}

#[tokio::test]
async fn per_address_limits_count_the_proxied_client() {
    let app = app(&[("BATON_LIMITS__MAX_CONNECTIONS_PER_IP", "1")]).await;
    let first = through_lb(&app, &v2_header(client("198.51.100.1:1"), app.relay))
        .await
        .greeted()
        .await;
    // Same client through the same balancer: over its limit.
    let mut second = through_lb(&app, &v2_header(client("198.51.100.1:2"), app.relay)).await;
    let reply = second.reply().await;
    assert!(reply.starts_with("421 4.7.0"), "{reply}");
    // Another client through the same balancer (same peer address): its own count.
    through_lb(&app, &v2_header(client("198.51.100.2:1"), app.relay))
        .await
        .greeted()
        .await;
    drop(first);
}
