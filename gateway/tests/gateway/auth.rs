//! AUTH throttling over real connections: the lock-out cannot be raced, and it locks an
//! address or a (user, address) pair, never a user everywhere.

use std::net::IpAddr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::{Client, spawn_app_with};

/// `AUTH PLAIN` with an initial response for `user` / `password`.
fn plain(user: &str, password: &str) -> String {
    format!(
        "AUTH PLAIN {}",
        STANDARD.encode(format!("\0{user}\0{password}"))
    )
}

fn code(reply: &str) -> String {
    reply.split(' ').take(2).collect::<Vec<_>>().join(" ")
}

#[tokio::test]
async fn concurrent_attempts_from_one_address_check_at_most_the_limit() {
    let app = spawn_app_with(
        &[
            ("BATON_LIMITS__MAX_AUTH_FAILURES_PER_IP", "3"),
            ("BATON_LIMITS__AUTH_FAILURE_DELAY", "100ms"),
        ],
        None,
    )
    .await;
    app.add_user("alice", "right").await;
    // Every client gets to the point of sending AUTH first, then all send at once.
    let mut clients = Vec::new();
    for _ in 0..30 {
        clients.push(Client::connect(app.submission).await.secured(&app).await);
    }
    let mut attempts = tokio::task::JoinSet::new();
    for mut c in clients {
        attempts.spawn(async move {
            c.send(&format!("{}\r\n", plain("alice", "wrong"))).await;
            code(&c.reply_within(std::time::Duration::from_secs(120)).await)
        });
    }
    let replies = attempts.join_all().await;
    let checked = replies.iter().filter(|r| *r == "535 5.7.8").count();
    let locked = replies.iter().filter(|r| *r == "421 4.7.0").count();
    assert!(checked <= 3, "{checked} passwords checked: {replies:?}");
    assert_eq!(checked + locked, replies.len(), "{replies:?}");
}

#[tokio::test]
async fn failures_from_one_address_do_not_lock_the_user_out_elsewhere() {
    let app = spawn_app_with(
        &[
            ("BATON_LIMITS__MAX_AUTH_FAILURES_PER_USER", "2"),
            ("BATON_LIMITS__MAX_AUTH_FAILURES_PER_IP", "100"),
            ("BATON_LIMITS__AUTH_FAILURE_DELAY", "10ms"),
        ],
        None,
    )
    .await;
    app.add_user("alice", "right").await;
    let attacker: IpAddr = "127.0.0.2".parse().expect("ip");
    let mut seen = Vec::new();
    for _ in 0..4 {
        let mut c = Client::connect_from(attacker, app.submission)
            .await
            .secured(&app)
            .await;
        seen.push(code(&c.command(&plain("alice", "wrong")).await));
    }
    assert_eq!(seen[..2], ["535 5.7.8", "535 5.7.8"], "{seen:?}");
    assert_eq!(seen[2..], ["421 4.7.0", "421 4.7.0"], "{seen:?}");
    // The pair is locked: not even the right password works from the attacker's address.
    let mut c = Client::connect_from(attacker, app.submission)
        .await
        .secured(&app)
        .await;
    assert_eq!(
        code(&c.command(&plain("alice", "right")).await),
        "421 4.7.0"
    );
    // Alice herself, from another address, is only slowed down.
    let mut c = Client::connect_from("127.0.0.3".parse().expect("ip"), app.submission)
        .await
        .secured(&app)
        .await;
    let reply = c.command(&plain("alice", "right")).await;
    assert!(reply.starts_with("235 2.7.0"), "{reply}");
}
