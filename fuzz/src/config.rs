//! Target 3: `baton_config::Config::load` on arbitrary text, through a real file (there is
//! no public entry point that takes a string, and the file path is the one `baton` uses).
//!
//! Input: TOML text, then optionally a NUL and `BATON_*=value` lines as environment
//! overrides. Checked, besides "no panic":
//! - a route password (one that does not appear elsewhere in the input) never shows in an
//!   error message or in `{:?}` of the settings;
//! - a config that validates gives working sessions: its limits, host name and accepted
//!   domains drive a short SMTP conversation whose replies are well formed;
//! - accepted domains print and parse back to themselves.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use baton_config::Config;
use baton_domain::Domain;
use baton_smtp::{Event, ListenerKind, PeerInfo, Session, SessionConfig};

use crate::smtp_session::check_output;

/// One file per fuzzing process, rewritten for every input. `BATON_FUZZ_TMPDIR` puts it
/// beside the fuzzer's output (scripts/fuzz.sh), otherwise the system temp dir.
fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::var_os("BATON_FUZZ_TMPDIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        dir.join(format!("baton-fuzz-config-{}.toml", std::process::id()))
    })
}

/// The route passwords in the document, if it parses as TOML at all.
fn passwords(text: &str) -> Vec<String> {
    let Ok(doc) = text.parse::<toml::Table>() else {
        return Vec::new();
    };
    let Some(routes) = doc
        .get("delivery")
        .and_then(|d| d.get("routes"))
        .and_then(|r| r.as_array())
    else {
        return Vec::new();
    };
    routes
        .iter()
        .filter_map(|r| r.get("password")?.as_str().map(str::to_string))
        .collect()
}

fn session_works(settings: &baton_config::Settings) {
    let accept = settings
        .accept_domains
        .first()
        .map(ToString::to_string)
        .unwrap_or_else(|| "example.test".into());
    for d in &settings.accept_domains {
        assert_eq!(
            Domain::parse(&d.to_string()).as_ref(),
            Ok(d),
            "accept domain {d}"
        );
    }
    let _ = settings.helo_name();
    let _ = settings.check_delivery_hostname(false);
    let _ = settings.check_delivery_hostname(true);
    let config = Arc::new(SessionConfig {
        hostname: settings.raw.hostname.clone(),
        listener: ListenerKind::Relay,
        limits: settings.raw.limits.session(),
        accept_domains: settings.accept_domains.clone(),
        received: Default::default(),
        normalize_bare_lf: false,
        return_paths: None,
    });
    let peer = PeerInfo {
        ip: "192.0.2.1".parse().expect("ip"),
        trusted_network: false,
    };
    let mut session = Session::new(config, peer, None);
    session.greet();
    let greeting = session.take_output();
    check_output(&greeting);
    assert!(greeting.starts_with(b"220 "), "{greeting:?}");
    let script = format!(
        "EHLO client.test\r\nMAIL FROM:<a@client.test>\r\nRCPT TO:<b@{accept}>\r\nDATA\r\n\
         From: a@client.test\r\n\r\nhi\r\n.\r\nQUIT\r\n"
    );
    let input = script.as_bytes();
    let mut pos = 0;
    let mut body = Vec::new();
    for _ in 0..64 {
        let (n, event) = session.advance(&input[pos..], &mut body);
        pos += n;
        body.clear();
        check_output(&session.take_output());
        match event {
            Event::NeedInput if pos >= input.len() => break,
            Event::MessageStart => {
                let _ = session.begin_message(baton_domain::QueueId::generate(), "now", 0);
            }
            Event::MessageComplete(env) => session.message_outcome(Ok(env.queue_id)),
            Event::Close => break,
            _ => {}
        }
        check_output(&session.take_output());
    }
}

pub fn run(data: &[u8]) {
    let (toml_part, env_part) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let text = String::from_utf8_lossy(toml_part);
    let env_text = String::from_utf8_lossy(env_part);
    let env: Vec<(String, String)> = env_text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let path = scratch();
    std::fs::write(path, toml_part).expect("write scratch config");
    let result = Config::load(Some(path), env.iter().cloned());
    let shown = match &result {
        Ok(s) => format!("{s:?}"),
        Err(e) => format!("{e} {e:?}"),
    };
    let everything = format!("{text}\n{env_text}");
    for p in passwords(&text) {
        if p.len() >= 8 && everything.matches(p.as_str()).count() <= 1 {
            assert!(!shown.contains(&p), "route password shown: {shown}");
        }
    }
    if let Ok(settings) = &result {
        session_works(settings);
    }
}
