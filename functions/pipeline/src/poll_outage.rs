//! What the pollers of a queue do about an outage, as bookkeeping over the instants the
//! caller passes in: how long one poller pauses after a failed poll ([`PollBackoff`]), and
//! which failures, and which recovery, are worth a log line ([`OutageLog`]). Used by the
//! in-process workers of `baton serve` ([`crate::worker`]) and by the AWS backend's local
//! runner alike.

use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Pause after the first failed poll; it doubles with each further failure up to
/// [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const MAX_PAUSE: Duration = Duration::from_secs(5);
/// How often an outage that lasts is mentioned again.
const REMIND_EVERY: Duration = Duration::from_secs(60);

/// One poller's pause between failed polls: exponential, capped, reset by a poll that
/// works. Each pause is drawn from the upper half of its step so that pollers that failed
/// together do not retry together.
#[derive(Debug)]
pub struct PollBackoff {
    step: Duration,
    rng: u64,
}

impl PollBackoff {
    /// `seed` picks the jitter (any value will do).
    pub fn new(seed: u64) -> Self {
        PollBackoff {
            step: FIRST_PAUSE,
            // xorshift must not start at zero.
            rng: seed | 1,
        }
    }

    /// The pause before the next poll, after one that failed.
    pub fn failed(&mut self) -> Duration {
        let step = self.step;
        self.step = (step * 2).min(MAX_PAUSE);
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let fraction = (self.rng >> 11) as f64 / (1u64 << 53) as f64; // [0, 1)
        step / 2 + (step / 2).mul_f64(fraction)
    }

    pub fn succeeded(&mut self) {
        self.step = FIRST_PAUSE;
    }
}

/// What is worth saying about the polls of one queue, shared by all its pollers: the first
/// failure of an outage, a reminder at most every [`REMIND_EVERY`] while it lasts, and the
/// recovery. Every other failure is only counted.
///
/// Each poll is reported with the instant it was `sent` and the instant it answered (`now`).
/// With several pollers, a poll sent before the other side of a change was seen says nothing
/// about the queue now and is ignored: a failure sent before the last recovery, a success
/// sent before the first failure of the outage.
#[derive(Debug)]
pub struct OutageLog {
    queue: String,
    outage: Option<Outage>,
    recovered: Option<Instant>,
}

#[derive(Debug)]
struct Outage {
    since: Instant,
    failed: u64,
    noticed: Instant,
    /// The last error logged.
    error: String,
}

impl OutageLog {
    pub fn new(queue: &str) -> Self {
        OutageLog {
            queue: queue.to_string(),
            outage: None,
            recovered: None,
        }
    }

    pub fn failed(&mut self, sent: Instant, now: Instant, error: &str) -> Option<Notice> {
        if self.recovered.is_some_and(|at| sent < at) {
            return None;
        }
        let Some(outage) = &mut self.outage else {
            self.outage = Some(Outage {
                since: now,
                failed: 1,
                noticed: now,
                error: error.to_string(),
            });
            return Some(Notice::Unreachable {
                queue: self.queue.clone(),
                error: error.to_string(),
            });
        };
        outage.failed += 1;
        if now.saturating_duration_since(outage.noticed) < REMIND_EVERY {
            return None;
        }
        outage.noticed = now;
        let error = (outage.error != error).then(|| error.to_string());
        if let Some(e) = &error {
            outage.error.clone_from(e);
        }
        Some(Notice::StillUnreachable {
            queue: self.queue.clone(),
            lasted: now.saturating_duration_since(outage.since),
            failed: outage.failed,
            error,
        })
    }

    pub fn succeeded(&mut self, sent: Instant, now: Instant) -> Option<Notice> {
        let outage = self.outage.take_if(|o| sent >= o.since)?;
        self.recovered = Some(now);
        Some(Notice::Reachable {
            queue: self.queue.clone(),
            lasted: now.saturating_duration_since(outage.since),
            failed: outage.failed,
        })
    }
}

/// One log line about a queue's outage; `Display` is the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The first failure of an outage.
    Unreachable { queue: String, error: String },
    /// A reminder; `error` only if it differs from the one logged last.
    StillUnreachable {
        queue: String,
        lasted: Duration,
        failed: u64,
        error: Option<String>,
    },
    Reachable {
        queue: String,
        lasted: Duration,
        failed: u64,
    },
}

impl Notice {
    /// Whether the line is a warning (or else information).
    pub fn is_warning(&self) -> bool {
        !matches!(self, Notice::Reachable { .. })
    }
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notice::Unreachable { queue, error } => {
                write!(
                    f,
                    "cannot poll queue {queue}; retrying with backoff: {error}"
                )
            }
            Notice::StillUnreachable {
                queue,
                lasted,
                failed,
                error,
            } => {
                write!(
                    f,
                    "queue {queue} still unreachable after {}, {}",
                    Lasted(*lasted),
                    Polls(*failed)
                )?;
                match error {
                    Some(e) => write!(f, "; now: {e}"),
                    None => Ok(()),
                }
            }
            Notice::Reachable {
                queue,
                lasted,
                failed,
            } => write!(
                f,
                "queue {queue} reachable again after {}, {}",
                Lasted(*lasted),
                Polls(*failed)
            ),
        }
    }
}

/// "12.3 s" under two minutes, then "4 min 5 s", then "2 h 3 min".
struct Lasted(Duration);

impl fmt::Display for Lasted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        match secs {
            0..120 => write!(f, "{:.1} s", self.0.as_secs_f64()),
            120..7200 => write!(f, "{} min {} s", secs / 60, secs % 60),
            _ => write!(f, "{} h {} min", secs / 3600, secs / 60 % 60),
        }
    }
}

struct Polls(u64);

impl fmt::Display for Polls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            1 => write!(f, "1 poll failed"),
            n => write!(f, "{n} polls failed"),
        }
    }
}

/// Tells the queue's shared log about one poll, and logs what it makes of it, if anything.
pub fn note(outages: &Mutex<OutageLog>, poll: impl FnOnce(&mut OutageLog) -> Option<Notice>) {
    let notice = poll(&mut outages.lock().unwrap_or_else(PoisonError::into_inner));
    match notice {
        Some(n) if n.is_warning() => tracing::warn!("{n}"),
        Some(n) => tracing::info!("{n}"),
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REFUSED: &str = "storage backend failed: SQS ReceiveMessage: dispatch failure: io error: Connection refused (os error 111)";

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A poll sent at `t` that answered 10 ms later.
    fn fail(log: &mut OutageLog, t: Instant) -> Option<String> {
        log.failed(t, t + ms(10), REFUSED).map(|n| n.to_string())
    }

    fn succeed(log: &mut OutageLog, t: Instant) -> Option<String> {
        log.succeeded(t, t + ms(10)).map(|n| n.to_string())
    }

    #[test]
    fn pauses_double_from_100_ms_to_5_s_with_jitter_and_reset_on_success() {
        let mut backoff = PollBackoff::new(42);
        let steps = [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000];
        for step in steps {
            let pause = backoff.failed();
            assert!(
                ms(step / 2) <= pause && pause <= ms(step),
                "{pause:?} outside the upper half of {step} ms"
            );
        }
        backoff.succeeded();
        assert!(backoff.failed() <= ms(100));
    }

    #[test]
    fn pauses_are_jittered() {
        let mut a = PollBackoff::new(1);
        let mut b = PollBackoff::new(2);
        let a: Vec<_> = (0..10).map(|_| a.failed()).collect();
        let b: Vec<_> = (0..10).map(|_| b.failed()).collect();
        assert_ne!(a, b);
        assert!(PollBackoff::new(0).failed() > Duration::ZERO);
    }

    #[test]
    fn an_outage_is_told_once_then_summed_up_when_it_ends() {
        let t0 = Instant::now();
        let mut log = OutageLog::new("intake");
        assert_eq!(succeed(&mut log, t0), None, "no outage, nothing to say");
        assert_eq!(
            fail(&mut log, t0).as_deref(),
            Some(format!("cannot poll queue intake; retrying with backoff: {REFUSED}").as_str())
        );
        for i in 1..17 {
            assert_eq!(fail(&mut log, t0 + ms(700 * i)), None);
        }
        assert_eq!(
            succeed(&mut log, t0 + ms(12_300)).as_deref(),
            Some("queue intake reachable again after 12.3 s, 17 polls failed")
        );
        assert_eq!(succeed(&mut log, t0 + ms(13_000)), None);
    }

    #[test]
    fn a_lasting_outage_is_recalled_once_a_minute() {
        let t0 = Instant::now();
        let mut log = OutageLog::new("deliver");
        assert!(fail(&mut log, t0).is_some());
        let mut lines = Vec::new();
        // Five polls a second for three and a half minutes.
        for i in 1..=1050 {
            lines.extend(fail(&mut log, t0 + ms(200 * i)));
        }
        assert_eq!(
            lines,
            [
                "queue deliver still unreachable after 60.0 s, 301 polls failed",
                "queue deliver still unreachable after 2 min 0 s, 601 polls failed",
                "queue deliver still unreachable after 3 min 0 s, 901 polls failed",
            ]
        );
        assert_eq!(
            succeed(&mut log, t0 + ms(211_000)).as_deref(),
            Some("queue deliver reachable again after 3 min 31 s, 1051 polls failed")
        );
    }

    #[test]
    fn a_reminder_names_the_error_only_when_it_changed() {
        let t0 = Instant::now();
        let mut log = OutageLog::new("sign");
        let missing = "storage backend failed: SQS GetQueueUrl: AWS.SimpleQueueService.NonExistentQueue: no queue";
        assert!(log.failed(t0, t0, REFUSED).is_some());
        let reminder = log.failed(t0 + ms(61_000), t0 + ms(61_000), missing);
        assert_eq!(
            reminder.map(|n| n.to_string()).as_deref(),
            Some(
                format!(
                    "queue sign still unreachable after 61.0 s, 2 polls failed; now: {missing}"
                )
                .as_str()
            )
        );
        let reminder = log.failed(t0 + ms(122_000), t0 + ms(122_000), missing);
        assert_eq!(
            reminder.map(|n| n.to_string()).as_deref(),
            Some("queue sign still unreachable after 2 min 2 s, 3 polls failed")
        );
    }

    #[test]
    fn one_failed_poll_is_still_an_outage_in_the_singular() {
        let t0 = Instant::now();
        let mut log = OutageLog::new("bounce");
        let warning = log.failed(t0, t0, REFUSED).expect("first failure");
        assert!(warning.is_warning());
        let info = log.succeeded(t0 + ms(100), t0 + ms(140)).expect("recovery");
        assert!(!info.is_warning());
        assert_eq!(
            info.to_string(),
            "queue bounce reachable again after 0.1 s, 1 poll failed"
        );
    }

    #[test]
    fn polls_sent_before_the_change_was_seen_are_ignored() {
        let t0 = Instant::now();
        let mut log = OutageLog::new("policy");
        assert!(log.failed(t0 + ms(100), t0 + ms(110), REFUSED).is_some());
        // Another poller's long poll, sent before the failure, answers late.
        assert_eq!(log.succeeded(t0, t0 + ms(500)), None);
        assert!(log.succeeded(t0 + ms(600), t0 + ms(610)).is_some());
        // A third poller's request, sent before the recovery, fails after it.
        assert_eq!(log.failed(t0 + ms(300), t0 + ms(700), REFUSED), None);
        assert_eq!(
            log.succeeded(t0 + ms(800), t0 + ms(810)),
            None,
            "no new outage"
        );
        // A failure sent after the recovery starts a new outage.
        assert!(log.failed(t0 + ms(900), t0 + ms(910), REFUSED).is_some());
    }

    #[test]
    fn long_outages_read_in_minutes_then_hours() {
        assert_eq!(Lasted(ms(119_949)).to_string(), "119.9 s");
        assert_eq!(Lasted(ms(245_000)).to_string(), "4 min 5 s");
        assert_eq!(Lasted(Duration::from_secs(7380)).to_string(), "2 h 3 min");
    }
}
