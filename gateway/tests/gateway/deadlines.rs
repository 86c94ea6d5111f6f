//! Deadlines on a whole command line and on a whole session, whatever the client sends.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::{Client, read_reply, spawn_app_with};

#[tokio::test]
async fn trickling_a_command_line_is_cut_off() {
    let app = spawn_app_with(&[("BATON_LIMITS__COMMAND_TIMEOUT", "1s")], None).await;
    let Client {
        mut reader,
        mut writer,
    } = Client::connect(app.relay).await;
    // One byte every 200 ms: each read comes well within command_timeout, the line never does.
    let trickle = tokio::spawn(async move {
        for b in b"NOOP ".iter().cycle().take(200) {
            if writer.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let reply = read_reply(&mut reader, Duration::from_secs(8)).await;
    assert!(reply.starts_with("421 4.4.2"), "{reply}");
    let after = read_reply(&mut reader, Duration::from_secs(8)).await;
    assert_eq!(after, "", "connection must be closed");
    trickle.abort();
}

#[tokio::test]
async fn an_active_session_ends_at_max_session_time() {
    let app = spawn_app_with(&[("BATON_LIMITS__MAX_SESSION_TIME", "1s")], None).await;
    let mut c = Client::connect(app.relay).await;
    assert!(c.command("EHLO test").await.starts_with("250"));
    let mut last = String::new();
    for _ in 0..100 {
        last = c.command("NOOP").await;
        if !last.starts_with("250") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(last.starts_with("421 4.4.2"), "{last}");
    assert_eq!(c.reply().await, "", "connection must be closed");
}
