//! Credential checks for SMTP AUTH: argon2 hashes from the ledger, the same answer for an
//! unknown user and a wrong password, a delay after every failure, and a lock-out per
//! client address and per (user, address) pair that parallel attempts cannot race
//! (`throttle`).

mod throttle;

use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use baton_domain::Identity;
use baton_smtp::{AuthOutcome, Credentials};
use baton_store::{Ledger, domains_of_tenant, get_user};
use throttle::{Admission, Attempt, Throttle, ThrottleLimits, Verdict};

/// Keys (addresses, pairs, user names) the failure table tracks at most.
pub(crate) const MAX_TRACKED_KEYS: usize = 100_000;

/// Hashes a password for storage (argon2id, default parameters, random salt).
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Verified against when the user does not exist, so both failures take the same time.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password("baton-dummy-password").unwrap_or_default())
}

#[derive(Debug, Clone)]
pub struct AuthPolicy {
    /// Added to every failed attempt; also the first wait for a much-attacked user.
    pub failure_delay: Duration,
    pub max_failures_per_ip: u32,
    /// Per (user, client address) pair; from any address this many only slow down.
    pub max_failures_per_user: u32,
    pub window: Duration,
    pub max_tracked: usize,
}

pub struct Authenticator {
    ledger: Arc<dyn Ledger>,
    policy: AuthPolicy,
    throttle: Mutex<Throttle>,
}

/// An admitted attempt not settled yet: dropped unsettled (the session was aborted) it
/// counts as a failure, since the password may have been checked.
struct Pending<'a> {
    auth: &'a Authenticator,
    attempt: Option<Attempt>,
}

impl Pending<'_> {
    fn settle(&mut self, verdict: Verdict) {
        if let Some(attempt) = self.attempt.take() {
            self.auth
                .throttle()
                .finish(&attempt, verdict, Instant::now());
        }
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.settle(Verdict::Failure);
    }
}

impl Authenticator {
    /// The sending domains of `tenant` (for a network bound to it).
    pub async fn tenant_domains(
        &self,
        tenant: &baton_domain::TenantId,
    ) -> Result<Vec<baton_domain::Domain>, baton_store::StoreError> {
        domains_of_tenant(self.ledger.as_ref(), tenant).await
    }

    pub fn new(ledger: Arc<dyn Ledger>, policy: AuthPolicy) -> Self {
        // Computed now rather than during the first failed login.
        let _ = dummy_hash();
        let throttle = Throttle::new(ThrottleLimits {
            max_per_ip: policy.max_failures_per_ip,
            max_per_pair: policy.max_failures_per_user,
            window: policy.window,
            base_delay: policy.failure_delay,
            max_keys: policy.max_tracked,
        });
        Authenticator {
            ledger,
            policy,
            throttle: Mutex::new(throttle),
        }
    }

    pub async fn verify(&self, ip: IpAddr, credentials: Credentials) -> AuthOutcome {
        // The attempt is counted before the password is checked, in one step with the
        // limit check: parallel attempts cannot all pass the limit.
        let admission = self
            .throttle()
            .begin(ip, &credentials.username, Instant::now());
        let (attempt, delay) = match admission {
            Admission::Locked => {
                tracing::warn!(%ip, user = %credentials.username, "authentication locked out");
                return AuthOutcome::Locked;
            }
            Admission::Busy => {
                tracing::warn!(%ip, user = %credentials.username, "too many checks queued for this user");
                return AuthOutcome::TryLater;
            }
            Admission::Admitted { attempt, delay } => (attempt, delay),
        };
        let mut pending = Pending {
            auth: self,
            attempt: Some(attempt),
        };
        if !delay.is_zero() {
            tracing::info!(user = %credentials.username, ?delay, "many failures for this user: slowing down");
            tokio::time::sleep(delay).await;
        }
        match self.check(&credentials).await {
            Ok(Some(identity)) => {
                pending.settle(Verdict::Success);
                tracing::info!(user = %identity.user, tenant = %identity.tenant.0, "authenticated");
                AuthOutcome::Success(identity)
            }
            Ok(None) => {
                pending.settle(Verdict::Failure);
                tracing::warn!(%ip, user = %credentials.username, "authentication failed");
                tokio::time::sleep(self.policy.failure_delay).await;
                AuthOutcome::Failure
            }
            Err(e) => {
                pending.settle(Verdict::Unknown);
                // The ledger is unreachable: a wrong answer either way would be worse than
                // a retry later. The session ends with 421.
                tracing::error!(error = %e, "credential lookup failed");
                AuthOutcome::Locked
            }
        }
    }

    fn throttle(&self) -> MutexGuard<'_, Throttle> {
        self.throttle.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn check(&self, c: &Credentials) -> Result<Option<Identity>, baton_store::StoreError> {
        let record = get_user(self.ledger.as_ref(), &c.username).await?;
        let hash = record
            .as_ref()
            .map(|r| r.password_hash.clone())
            .unwrap_or_else(|| dummy_hash().to_string());
        let password = c.password.clone();
        let ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash)
                .map(|parsed| {
                    Argon2::default()
                        .verify_password(password.as_bytes(), &parsed)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        let Some(record) = record.filter(|_| ok) else {
            return Ok(None);
        };
        let domains = domains_of_tenant(self.ledger.as_ref(), &record.tenant).await?;
        Ok(Some(Identity {
            user: c.username.clone(),
            tenant: record.tenant,
            domains,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_domain::{Domain, TenantId};
    use baton_store::memory::MemoryLedger;
    use baton_store::{DomainRecord, UserRecord, put_domain, put_user};

    #[tokio::test]
    async fn parallel_attempts_from_one_address_check_at_most_the_limit() {
        let auth = Arc::new(authenticator(3).await);
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let mut attempts = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let auth = auth.clone();
            attempts.spawn(async move { auth.verify(ip, creds("alice", "wrong")).await });
        }
        let outcomes = attempts.join_all().await;
        let checked = outcomes
            .iter()
            .filter(|o| matches!(o, AuthOutcome::Failure))
            .count();
        let locked = outcomes
            .iter()
            .filter(|o| matches!(o, AuthOutcome::Locked))
            .count();
        assert_eq!((checked, locked), (3, 17), "{outcomes:?}");
    }

    async fn authenticator(max: u32) -> Authenticator {
        let ledger = Arc::new(MemoryLedger::default());
        let record = UserRecord {
            tenant: TenantId("acme".into()),
            password_hash: hash_password("right").expect("hash"),
        };
        put_user(ledger.as_ref(), "alice", &record)
            .await
            .expect("put user");
        let domain = Domain::parse("acme.test").expect("domain");
        put_domain(
            ledger.as_ref(),
            &domain,
            &DomainRecord {
                tenant: TenantId("acme".into()),
                return_path: false,
            },
        )
        .await
        .expect("put domain");
        Authenticator::new(
            ledger,
            AuthPolicy {
                failure_delay: Duration::ZERO,
                max_failures_per_ip: max,
                max_failures_per_user: 100,
                window: Duration::from_secs(60),
                max_tracked: MAX_TRACKED_KEYS,
            },
        )
    }

    fn creds(user: &str, password: &str) -> Credentials {
        Credentials {
            username: user.into(),
            password: password.into(),
        }
    }

    #[tokio::test]
    async fn right_password_yields_tenant_and_domains() {
        let auth = authenticator(3).await;
        let ip = "192.0.2.1".parse().expect("ip");
        match auth.verify(ip, creds("alice", "right")).await {
            AuthOutcome::Success(id) => {
                assert_eq!(id.tenant.0, "acme");
                assert_eq!(
                    id.domains,
                    vec![Domain::parse("acme.test").expect("domain")]
                );
            }
            other => panic!("expected success, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn failures_lock_out_the_address_even_with_the_right_password() {
        let auth = authenticator(2).await;
        let ip = "192.0.2.1".parse().expect("ip");
        assert!(matches!(
            auth.verify(ip, creds("alice", "wrong")).await,
            AuthOutcome::Failure
        ));
        assert!(matches!(
            auth.verify(ip, creds("nobody", "x")).await,
            AuthOutcome::Failure
        ));
        assert!(matches!(
            auth.verify(ip, creds("alice", "right")).await,
            AuthOutcome::Locked
        ));
        let other = "192.0.2.2".parse().expect("ip");
        assert!(matches!(
            auth.verify(other, creds("alice", "right")).await,
            AuthOutcome::Success(_)
        ));
    }
}
