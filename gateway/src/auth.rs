//! Credential checks for SMTP AUTH: argon2 hashes from the ledger, the same answer for an
//! unknown user and a wrong password, a delay after every failure, and a lock-out per
//! client address and per user name.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use baton_domain::Identity;
use baton_smtp::{AuthOutcome, Credentials};
use baton_store::{Ledger, domains_of_tenant, get_user};

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
    pub failure_delay: Duration,
    pub max_failures_per_ip: u32,
    pub max_failures_per_user: u32,
    pub window: Duration,
}

pub struct Authenticator {
    ledger: Arc<dyn Ledger>,
    policy: AuthPolicy,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl Authenticator {
    pub fn new(ledger: Arc<dyn Ledger>, policy: AuthPolicy) -> Self {
        // Computed now rather than during the first failed login.
        let _ = dummy_hash();
        Authenticator {
            ledger,
            policy,
            failures: Mutex::new(HashMap::new()),
        }
    }

    pub async fn verify(&self, ip: IpAddr, credentials: Credentials) -> AuthOutcome {
        let ip_key = format!("ip:{ip}");
        let user_key = format!("user:{}", credentials.username.to_lowercase());
        if self.failures(&ip_key) >= self.policy.max_failures_per_ip
            || self.failures(&user_key) >= self.policy.max_failures_per_user
        {
            tracing::warn!(%ip, user = %credentials.username, "authentication locked out");
            return AuthOutcome::Locked;
        }
        match self.check(&credentials).await {
            Ok(Some(identity)) => {
                tracing::info!(user = %identity.user, tenant = %identity.tenant.0, "authenticated");
                AuthOutcome::Success(identity)
            }
            Ok(None) => {
                self.record_failure(&ip_key);
                self.record_failure(&user_key);
                tracing::warn!(%ip, user = %credentials.username, "authentication failed");
                tokio::time::sleep(self.policy.failure_delay).await;
                AuthOutcome::Failure
            }
            Err(e) => {
                // The ledger is unreachable: a wrong answer either way would be worse than
                // a retry later. The session ends with 421.
                tracing::error!(error = %e, "credential lookup failed");
                AuthOutcome::Locked
            }
        }
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

    fn failures(&self, key: &str) -> u32 {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let Some(q) = map.get_mut(key) else {
            return 0;
        };
        let cutoff = Instant::now().checked_sub(self.policy.window);
        while q.front().is_some_and(|t| cutoff.is_some_and(|c| *t < c)) {
            q.pop_front();
        }
        let n = q.len() as u32;
        if n == 0 {
            map.remove(key);
        }
        n
    }

    fn record_failure(&self, key: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key.to_string())
            .or_default()
            .push_back(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_domain::{Domain, TenantId};
    use baton_store::memory::MemoryLedger;
    use baton_store::{DomainRecord, UserRecord, put_domain, put_user};

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
