//! Who may have a password checked now. An attempt is counted when it starts, under the
//! caller's lock, so parallel attempts cannot all pass a limit before any of them failed.
//!
//! - Per client address: at most `max_per_ip` attempts (failed or in flight) within the
//!   window; then the address is locked.
//! - Per (user, address) pair: at most `max_per_pair`; then that pair is locked.
//! - Per user from any address: never locked, or anyone could lock any known user out.
//!   Past `max_per_pair` attempts the checks for that user run one after another, each
//!   waiting twice as long as the last, up to [`MAX_USER_DELAY`]; an attempt that would
//!   queue longer than that is told to try later (454), so however many addresses guess,
//!   one user's password is checked at most about once per `MAX_USER_DELAY`.
//! - IPv6 clients are counted per /64: one host usually has a whole /64 to rotate through.
//!
//! The table is bounded: a new key beyond `max_keys` first drops the expired keys, then the
//! least recently used ones. Keys of attempts in flight are never dropped, so the table may
//! exceed `max_keys` by those (bounded by the connection limit).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The longest a check for a much-attacked user waits.
pub(crate) const MAX_USER_DELAY: Duration = Duration::from_secs(30);
/// The shortest first wait for a much-attacked user, even with no failure delay configured.
const MIN_USER_DELAY: Duration = Duration::from_millis(100);
/// User names are kept to this many bytes: real ones are shorter, and a client must not
/// make every key kilobytes long.
const MAX_USER_NAME: usize = 256;
/// Failures kept per user key past `max_per_pair`: enough to reach `MAX_USER_DELAY`.
const EXTRA_USER_FAILURES: usize = 16;

#[derive(Debug, Clone)]
pub(crate) struct ThrottleLimits {
    pub(crate) max_per_ip: u32,
    pub(crate) max_per_pair: u32,
    pub(crate) window: Duration,
    /// The first wait for a much-attacked user (at least `MIN_USER_DELAY`).
    pub(crate) base_delay: Duration,
    pub(crate) max_keys: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Ip(IpAddr),
    Pair(IpAddr, String),
    User(String),
}

#[derive(Debug)]
struct Entry {
    failures: VecDeque<Instant>,
    in_flight: u32,
    last_used: Instant,
    /// User keys: when the next delayed check may run (checks are serialised).
    next_check: Option<Instant>,
}

impl Entry {
    fn expire(&mut self, cutoff: Option<Instant>) {
        while self
            .failures
            .front()
            .is_some_and(|t| cutoff.is_some_and(|c| *t < c))
        {
            self.failures.pop_front();
        }
    }

    fn attempts(&self) -> u32 {
        u32::try_from(self.failures.len())
            .unwrap_or(u32::MAX)
            .saturating_add(self.in_flight)
    }

    /// Nothing to remember at `now`: no attempt in flight, no failure, no check queued.
    fn is_idle(&self, now: Instant) -> bool {
        self.in_flight == 0 && self.failures.is_empty() && self.next_check.is_none_or(|t| t <= now)
    }
}

/// An attempt admitted by [`Throttle::begin`], to be settled with [`Throttle::finish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Attempt {
    ip: IpAddr,
    user: String,
}

impl Attempt {
    fn keys(&self) -> [Key; 3] {
        [
            Key::Ip(self.ip),
            Key::Pair(self.ip, self.user.clone()),
            Key::User(self.user.clone()),
        ]
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    Locked,
    /// Too many checks for this user are already waiting: try again later (not counted).
    Busy,
    /// The password may be checked after `delay`.
    Admitted {
        attempt: Attempt,
        delay: Duration,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Success,
    Failure,
    /// No answer (the ledger failed): the attempt neither counts nor forgives.
    Unknown,
}

#[derive(Debug)]
pub(crate) struct Throttle {
    limits: ThrottleLimits,
    entries: HashMap<Key, Entry>,
}

impl Throttle {
    pub(crate) fn new(limits: ThrottleLimits) -> Self {
        Throttle {
            limits,
            entries: HashMap::new(),
        }
    }

    /// Reserves an attempt for `user` from `ip`, or says the pair or address is locked.
    pub(crate) fn begin(&mut self, ip: IpAddr, user: &str, now: Instant) -> Admission {
        let attempt = Attempt {
            ip: client_key(ip),
            user: normalise(user),
        };
        let [ip_key, pair_key, user_key] = attempt.keys();
        if self.attempts(&ip_key, now) >= self.limits.max_per_ip
            || self.attempts(&pair_key, now) >= self.limits.max_per_pair
        {
            return Admission::Locked;
        }
        let user_attempts = self.attempts(&user_key, now);
        let mut delay = self.user_delay(user_attempts);
        if !delay.is_zero() {
            // One delayed check after another: the queue, not the attacker's parallelism,
            // sets the pace.
            let entry = self.entry(user_key.clone(), now);
            let start = entry.next_check.filter(|t| *t > now).unwrap_or(now) + delay;
            if start.duration_since(now) > MAX_USER_DELAY {
                return Admission::Busy;
            }
            entry.next_check = Some(start);
            delay = start.duration_since(now);
        }
        for key in attempt.keys() {
            self.entry(key, now).in_flight += 1;
        }
        Admission::Admitted { attempt, delay }
    }

    /// Settles an attempt: a failure stays counted for the window, a success forgives the
    /// pair's failures (not the address's: one known password must not reset guessing).
    pub(crate) fn finish(&mut self, attempt: &Attempt, verdict: Verdict, now: Instant) {
        for key in attempt.keys() {
            let keep = match key {
                Key::Ip(_) => self.limits.max_per_ip as usize,
                Key::Pair(..) => self.limits.max_per_pair as usize,
                Key::User(_) => self.limits.max_per_pair as usize + EXTRA_USER_FAILURES,
            };
            let Some(entry) = self.entries.get_mut(&key) else {
                continue;
            };
            entry.in_flight = entry.in_flight.saturating_sub(1);
            entry.last_used = now;
            match (verdict, &key) {
                (Verdict::Failure, _) => {
                    entry.failures.push_back(now);
                    while entry.failures.len() > keep {
                        entry.failures.pop_front();
                    }
                }
                (Verdict::Success, Key::Pair(..)) => entry.failures.clear(),
                _ => {}
            }
            if entry.is_idle(now) {
                self.entries.remove(&key);
            }
        }
    }

    fn attempts(&mut self, key: &Key, now: Instant) -> u32 {
        let Some(entry) = self.entries.get_mut(key) else {
            return 0;
        };
        entry.expire(now.checked_sub(self.limits.window));
        let n = entry.attempts();
        if entry.is_idle(now) {
            self.entries.remove(key);
        }
        n
    }

    fn user_delay(&self, attempts: u32) -> Duration {
        let Some(excess) = attempts.checked_sub(self.limits.max_per_pair) else {
            return Duration::ZERO;
        };
        self.limits
            .base_delay
            .max(MIN_USER_DELAY)
            .saturating_mul(2u32.saturating_pow(excess.min(24)))
            .min(MAX_USER_DELAY)
    }

    fn entry(&mut self, key: Key, now: Instant) -> &mut Entry {
        if !self.entries.contains_key(&key) && self.entries.len() >= self.limits.max_keys {
            self.make_room(now);
        }
        let entry = self.entries.entry(key).or_insert_with(|| Entry {
            failures: VecDeque::new(),
            in_flight: 0,
            last_used: now,
            next_check: None,
        });
        entry.last_used = now;
        entry
    }

    /// Drops expired keys, then the least recently used idle ones, until one more fits.
    fn make_room(&mut self, now: Instant) {
        let cutoff = now.checked_sub(self.limits.window);
        self.entries.retain(|_, e| {
            e.expire(cutoff);
            !e.is_idle(now)
        });
        while self.entries.len() >= self.limits.max_keys {
            let oldest = self
                .entries
                .iter()
                .filter(|(_, e)| e.in_flight == 0)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone());
            let Some(key) = oldest else {
                return;
            };
            self.entries.remove(&key);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The address an attempt is counted under: IPv4 (also when mapped into IPv6) as it is,
/// IPv6 by its /64.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(
            u128::from(v6) & !(u64::MAX as u128),
        )),
        v4 => v4,
    }
}

/// Case-insensitive, and cut to `MAX_USER_NAME` bytes.
fn normalise(user: &str) -> String {
    let mut user = user.to_lowercase();
    if user.len() > MAX_USER_NAME {
        let mut end = MAX_USER_NAME;
        while !user.is_char_boundary(end) {
            end -= 1;
        }
        user.truncate(end);
    }
    user
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(max_keys: usize) -> Throttle {
        Throttle::new(ThrottleLimits {
            max_per_ip: 3,
            max_per_pair: 2,
            window: Duration::from_secs(60),
            base_delay: Duration::from_secs(1),
            max_keys,
        })
    }

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, n])
    }

    fn admit(t: &mut Throttle, ip: IpAddr, user: &str, now: Instant) -> (Attempt, Duration) {
        match t.begin(ip, user, now) {
            Admission::Admitted { attempt, delay } => (attempt, delay),
            Admission::Locked => panic!("{user} from {ip} locked"),
            Admission::Busy => panic!("{user} from {ip} busy"),
        }
    }

    fn fail(t: &mut Throttle, ip: IpAddr, user: &str, now: Instant) -> Duration {
        let (attempt, delay) = admit(t, ip, user, now);
        t.finish(&attempt, Verdict::Failure, now);
        delay
    }

    #[test]
    fn attempts_in_flight_count_against_the_limit() {
        let mut t = throttle(100);
        let now = Instant::now();
        let admitted: Vec<_> = (0..3)
            .map(|i| admit(&mut t, ip(1), &format!("u{i}"), now).0)
            .collect();
        assert_eq!(t.begin(ip(1), "u9", now), Admission::Locked);
        // A success gives its slot back; a failure keeps it.
        t.finish(&admitted[0], Verdict::Success, now);
        t.finish(&admitted[1], Verdict::Failure, now);
        t.finish(&admitted[2], Verdict::Unknown, now);
        for user in ["a", "b"] {
            let (attempt, _) = admit(&mut t, ip(1), user, now);
            t.finish(&attempt, Verdict::Failure, now);
        }
        assert_eq!(t.begin(ip(1), "c", now), Admission::Locked);
        // The window passes.
        let later = now + Duration::from_secs(61);
        admit(&mut t, ip(1), "c", later);
    }

    #[test]
    fn a_pair_locks_and_the_user_is_only_slowed_down_elsewhere() {
        let mut t = throttle(100);
        t.limits.window = Duration::from_secs(3600);
        let now = Instant::now();
        fail(&mut t, ip(1), "Alice", now);
        fail(&mut t, ip(1), "alice", now);
        assert_eq!(t.begin(ip(1), "ALICE", now), Admission::Locked);
        // Alice from elsewhere, one attempt after another: never locked, each attempt waits
        // longer, up to the cap.
        let mut delays = Vec::new();
        let mut at = now;
        for n in 2..40 {
            let delay = fail(&mut t, ip(n), "alice", at);
            at += delay;
            delays.push(delay);
        }
        assert_eq!(delays[..4], [1, 2, 4, 8].map(Duration::from_secs));
        assert!(delays.windows(2).all(|w| w[0] <= w[1]), "{delays:?}");
        assert_eq!(delays.last(), Some(&MAX_USER_DELAY));
        // Another user from the locked pair's address is not affected.
        assert_eq!(admit(&mut t, ip(1), "bob", now).1, Duration::ZERO);
    }

    #[test]
    fn a_success_forgives_the_pair_but_not_the_address() {
        let mut t = throttle(100);
        let now = Instant::now();
        fail(&mut t, ip(1), "alice", now);
        let (attempt, _) = admit(&mut t, ip(1), "alice", now);
        t.finish(&attempt, Verdict::Success, now);
        fail(&mut t, ip(1), "alice", now);
        fail(&mut t, ip(1), "bob", now);
        assert_eq!(t.begin(ip(1), "carol", now), Admission::Locked);
    }

    #[test]
    fn the_table_is_bounded_and_forgets_expired_keys_first() {
        let mut t = throttle(8);
        let now = Instant::now();
        // An address about to be locked, then a flood of new user names from elsewhere.
        fail(&mut t, ip(1), "x", now);
        fail(&mut t, ip(1), "y", now);
        for n in 0..1000u32 {
            let then = now + Duration::from_millis(u64::from(n));
            let source = ip(2 + (n % 200) as u8);
            // Within the per-address limit: each name is a fresh pair and user key.
            let user = format!("user{n}");
            if let Admission::Admitted { attempt, .. } = t.begin(source, &user, then) {
                t.finish(&attempt, Verdict::Failure, then);
            }
            assert!(t.len() <= 8, "{} keys after {n}", t.len());
        }
        // Everything expires after the window, and the table empties as keys are touched.
        let later = now + Duration::from_secs(120);
        fail(&mut t, ip(250), "fresh", later);
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn keys_of_attempts_in_flight_are_never_evicted() {
        let mut t = throttle(3);
        let now = Instant::now();
        let (held, _) = admit(&mut t, ip(1), "alice", now);
        fail(&mut t, ip(2), "bob", now);
        assert_eq!(t.len(), 6, "in-flight keys stay, over the bound");
        t.finish(&held, Verdict::Failure, now);
        fail(&mut t, ip(3), "carol", now);
        assert!(t.len() <= 3);
    }

    #[test]
    fn long_user_names_are_cut() {
        let name = "é".repeat(MAX_USER_NAME);
        assert!(normalise(&name).len() <= MAX_USER_NAME);
        assert_eq!(normalise("Alice"), "alice");
    }

    #[test]
    fn checks_for_one_user_are_serialised_and_the_queue_is_bounded() {
        let mut t = throttle(100);
        let now = Instant::now();
        // Past max_per_pair failures for "alice" (from different addresses): delayed.
        for n in 1..=2 {
            fail(&mut t, ip(n), "alice", now);
        }
        // Parallel attempts from fresh addresses queue one after another...
        let mut waits = Vec::new();
        let mut busy = 0;
        for n in 10..60 {
            match t.begin(ip(n), "alice", now) {
                Admission::Admitted { delay, .. } => waits.push(delay),
                Admission::Busy => busy += 1,
                Admission::Locked => panic!("a user is never locked"),
            }
        }
        assert!(waits.windows(2).all(|w| w[0] < w[1]), "{waits:?}");
        assert!(waits.iter().all(|w| *w <= MAX_USER_DELAY), "{waits:?}");
        // ...and the rest are told to come back, so the check rate stays bounded.
        assert!(
            busy > 0 && waits.len() < 10,
            "{} admitted, {busy} busy",
            waits.len()
        );
        // Another user is unaffected.
        assert_eq!(admit(&mut t, ip(70), "bob", now).1, Duration::ZERO);
    }

    #[test]
    fn ipv6_clients_are_counted_per_64() {
        let mut t = throttle(100);
        let now = Instant::now();
        let v6 = |last: u16| IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, last]);
        for n in 1..=3 {
            fail(&mut t, v6(n), &format!("u{n}"), now);
        }
        assert_eq!(t.begin(v6(999), "other", now), Admission::Locked);
        let elsewhere = IpAddr::from([0x2001, 0xdb8, 0, 2, 0, 0, 0, 1]);
        assert!(matches!(
            t.begin(elsewhere, "other", now),
            Admission::Admitted { .. }
        ));
    }
}
