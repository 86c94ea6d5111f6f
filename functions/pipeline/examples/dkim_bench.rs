//! DKIM signatures per second with the keys and code path the sign stage uses.
//! Run: cargo run --release -p baton-pipeline --example dkim_bench [seconds-per-case]

use std::time::{Duration, Instant};

use baton_pipeline::dkim::{Algorithm, generate_key, sign};

fn message(size: usize) -> Vec<u8> {
    let mut m = b"From: News <news@acme.test>\r\nTo: bob@example.org\r\nSubject: benchmark\r\nDate: Sat, 28 Nov 2026 20:00:00 +0000\r\nMessage-ID: <bench@acme.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n".to_vec();
    let line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n";
    while m.len() < size {
        m.extend_from_slice(line);
    }
    m.truncate(size);
    m.extend_from_slice(b"\r\n");
    m
}

fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let budget = Duration::from_secs_f64(secs);
    for (algorithm, name) in [
        (Algorithm::RsaSha256, "rsa-2048"),
        (Algorithm::Ed25519Sha256, "ed25519"),
    ] {
        let key = generate_key("acme.test", "bench", algorithm, 0).expect("key");
        for size in [4 * 1024, 100 * 1024] {
            let msg = message(size);
            let start = Instant::now();
            let mut n = 0u64;
            while start.elapsed() < budget {
                let sig = sign(&[&msg], std::slice::from_ref(&key)).expect("sign");
                std::hint::black_box(sig);
                n += 1;
            }
            let rate = n as f64 / start.elapsed().as_secs_f64();
            println!("{name:<9} {:>4} KB  {rate:>10.1} signatures/s", size / 1024);
        }
    }
}
