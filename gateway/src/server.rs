//! Listeners, connection limits and graceful shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_config::Settings;
use baton_smtp::{ListenerKind, SessionConfig, canned};
use baton_store::{BlobStore, Ledger, Queue};
use ipnet_shim::Networks;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::auth::{AuthPolicy, Authenticator};
use crate::connection::{Deadlines, Shutdown, serve_connection};
use crate::intake::Intake;
use crate::proxy::{self, Proxied, ProxyPeers};
use crate::{GatewayError, tls};

/// The ports the gateway needs from a backend.
pub struct GatewayDeps {
    pub blobs: Arc<dyn BlobStore>,
    pub queue: Arc<dyn Queue>,
    pub ledger: Arc<dyn Ledger>,
}

/// What every connection shares.
pub(crate) struct Shared {
    pub(crate) intake: Intake,
    pub(crate) auth: Authenticator,
    pub(crate) tls: TlsAcceptor,
    pub(crate) deadlines: Deadlines,
    pub(crate) networks: Networks,
    proxy_peers: ProxyPeers,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    max_per_ip: usize,
    slots: Arc<Semaphore>,
}

pub struct Gateway {
    listeners: Vec<(Arc<SessionConfig>, TcpListener)>,
    shared: Arc<Shared>,
    grace: Duration,
}

impl Gateway {
    /// Binds every configured listener and prepares TLS. Nothing is accepted until `run`.
    pub async fn bind(settings: &Settings, deps: GatewayDeps) -> Result<Self, GatewayError> {
        let raw = &settings.raw;
        let l = &raw.limits;
        let limits = l.session();
        let return_paths = return_paths(settings, &deps).await;
        let mut listeners = Vec::new();
        for (kind, addr) in [
            (ListenerKind::Submission, settings.submission),
            (ListenerKind::Submissions, settings.submissions),
            (ListenerKind::Relay, settings.relay),
        ] {
            let Some(addr) = addr else { continue };
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| GatewayError::Bind { addr, source })?;
            let config = Arc::new(SessionConfig {
                hostname: raw.hostname.clone(),
                listener: kind,
                limits: limits.clone(),
                accept_domains: settings.accept_domains.clone(),
                received: baton_smtp::ReceivedFields {
                    auth_user: raw.submission.received_auth_user,
                    submission_client_ip: raw.submission.received_client_ip,
                },
                normalize_bare_lf: match kind {
                    ListenerKind::Relay => raw.relay.normalize_bare_lf,
                    _ => raw.submission.normalize_bare_lf,
                },
                return_paths: return_paths.clone(),
            });
            listeners.push((config, listener));
        }
        // Only once every port is ours: a taken port must not leave a certificate behind.
        let (tls_config, source) =
            tls::server_config(raw.tls.pair(), &raw.data_dir, &raw.hostname)?;
        match &source {
            tls::CertSource::Configured(p) => {
                tracing::info!(cert = %p.display(), "TLS certificate loaded")
            }
            tls::CertSource::Environment(var) => {
                tracing::info!(cert = %var, "TLS certificate loaded from the environment")
            }
            tls::CertSource::SelfSignedExisting(p) => {
                tracing::warn!(cert = %p.display(), "using the self-signed TLS certificate generated earlier; configure [tls] for production")
            }
            tls::CertSource::SelfSignedGenerated(p) => {
                tracing::warn!(cert = %p.display(), "no TLS certificate configured: generated a self-signed one")
            }
        }
        let auth = Authenticator::new(
            deps.ledger,
            AuthPolicy {
                failure_delay: l.auth_failure_delay,
                max_failures_per_ip: l.max_auth_failures_per_ip,
                max_failures_per_user: l.max_auth_failures_per_user,
                window: l.auth_failure_window,
                max_tracked: crate::auth::MAX_TRACKED_KEYS,
            },
        );
        let shared = Arc::new(Shared {
            intake: Intake::new(deps.blobs, deps.queue, l.storage_timeout),
            auth,
            tls: TlsAcceptor::from(tls_config),
            deadlines: Deadlines {
                command: l.command_timeout,
                data: l.data_timeout,
                min_data_rate: l.min_data_rate,
                data_rate_window: l.data_rate_window,
                tls_handshake: l.tls_handshake_timeout,
                session: l.max_session_time,
            },
            networks: Networks {
                allow: raw.relay.allow_networks.clone(),
                tenants: raw
                    .relay
                    .tenant_networks
                    .iter()
                    .map(|n| (n.network, baton_domain::TenantId(n.tenant.clone())))
                    .collect(),
            },
            proxy_peers: ProxyPeers(raw.listen.proxy_protocol_from.clone()),
            per_ip: Mutex::new(HashMap::new()),
            max_per_ip: l.max_connections_per_ip,
            slots: Arc::new(Semaphore::new(l.max_connections)),
        });
        Ok(Gateway {
            listeners,
            shared,
            grace: l.shutdown_grace,
        })
    }

    pub fn local_addrs(&self) -> Vec<(ListenerKind, SocketAddr)> {
        self.listeners
            .iter()
            .filter_map(|(c, l)| l.local_addr().ok().map(|a| (c.listener, a)))
            .collect()
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets sessions finish within
    /// the grace period, and ends the rest with 421.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), GatewayError> {
        let (soft_tx, soft_rx) = watch::channel(false);
        let (hard_tx, hard_rx) = watch::channel(false);
        let signals = Shutdown {
            soft: soft_rx,
            hard: hard_rx,
        };
        let mut acceptors = JoinSet::new();
        let sessions = Arc::new(Mutex::new(JoinSet::new()));
        for (config, listener) in self.listeners {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(kind = config.listener.as_str(), %addr, "listening");
            }
            let shared = self.shared.clone();
            let signals = signals.clone();
            let sessions = sessions.clone();
            acceptors.spawn(accept_loop(listener, config, shared, signals, sessions));
        }
        shutdown.await;
        tracing::info!(grace = ?self.grace, "shutting down: no new connections");
        let _ = soft_tx.send(true);
        acceptors.abort_all();
        while acceptors.join_next().await.is_some() {}

        let mut sessions = std::mem::take(&mut *sessions.lock().unwrap_or_else(|p| p.into_inner()));
        let drained = tokio::time::timeout(self.grace, async {
            while sessions.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                open = sessions.len(),
                "grace period over: closing remaining sessions"
            );
            let _ = hard_tx.send(true);
            // Sessions in the middle of a commit finish it (bounded by the storage timeout).
            let _ = tokio::time::timeout(Duration::from_secs(60), async {
                while sessions.join_next().await.is_some() {}
            })
            .await;
            sessions.abort_all();
        }
        tracing::info!("gateway stopped");
        Ok(())
    }
}

async fn accept_loop(
    listener: TcpListener,
    config: Arc<SessionConfig>,
    shared: Arc<Shared>,
    signals: Shutdown,
    sessions: Arc<Mutex<JoinSet<()>>>,
) {
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                // Usually EMFILE: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let shared2 = shared.clone();
        let config = config.clone();
        let signals = signals.clone();
        let mut set = sessions.lock().unwrap_or_else(|p| p.into_inner());
        // Reap finished sessions so the set does not grow with every connection served.
        while set.try_join_next().is_some() {}
        set.spawn(async move {
            let Some(admitted) = admit(&shared2, socket, peer).await else {
                return;
            };
            let Admitted {
                socket,
                client,
                slot,
                ip_guard,
            } = admitted;
            serve_connection(shared2, config, client, socket, signals).await;
            drop((slot, ip_guard));
        });
    }
}

/// A connection slot; gives back the per-IP count when dropped.
struct Admitted {
    socket: TcpStream,
    /// The peer, or the client a trusted load balancer's PROXY header names.
    client: SocketAddr,
    slot: tokio::sync::OwnedSemaphorePermit,
    ip_guard: IpGuard,
}

struct IpGuard {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Drop for IpGuard {
    fn drop(&mut self) {
        let mut map = self.shared.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

async fn admit(shared: &Arc<Shared>, mut socket: TcpStream, peer: SocketAddr) -> Option<Admitted> {
    let Ok(slot) = shared.slots.clone().try_acquire_owned() else {
        tracing::warn!(%peer, "connection refused: server full");
        refuse(&mut socket, canned::too_many_connections()).await;
        return None;
    };
    let client = match proxied_client(shared, &mut socket, peer).await {
        Ok(client) => client,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "connection refused: no valid PROXY header from a load balancer address");
            refuse(&mut socket, canned::proxy_header_required()).await;
            return None;
        }
    };
    let ip = client.ip();
    let admitted = {
        let mut map = shared.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_insert(0);
        let ok = *n < shared.max_per_ip;
        if ok {
            *n += 1;
        }
        ok
    };
    if !admitted {
        tracing::warn!(%client, "connection refused: too many from this address");
        refuse(&mut socket, canned::too_many_connections_from_ip()).await;
        return None;
    }
    Some(Admitted {
        socket,
        client,
        slot,
        ip_guard: IpGuard {
            shared: shared.clone(),
            ip,
        },
    })
}

/// Who is on the other end: the peer itself, or (from `listen.proxy_protocol_from`) the
/// client its PROXY header names. The header must arrive within the command timeout, as a
/// client's first command would.
async fn proxied_client(
    shared: &Shared,
    socket: &mut TcpStream,
    peer: SocketAddr,
) -> Result<SocketAddr, proxy::ProxyError> {
    if !shared.proxy_peers.expects_header(peer.ip()) {
        return Ok(peer);
    }
    let header = tokio::time::timeout(shared.deadlines.command, proxy::read_header(socket));
    match header.await {
        Ok(Ok(Proxied::Client(client))) => {
            tracing::debug!(%peer, %client, "proxied connection");
            Ok(client)
        }
        Ok(Ok(Proxied::Local)) => Ok(peer),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(proxy::ProxyError::Io("timed out".into())),
    }
}

async fn refuse(socket: &mut TcpStream, reply: baton_smtp::Reply) {
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = socket.write_all(reply.to_wire().as_bytes()).await;
        let _ = socket.shutdown().await;
    })
    .await;
}

mod ipnet_shim {
    use std::net::IpAddr;

    use baton_domain::TenantId;

    /// Networks that may relay without AUTH: anonymous ones, and ones bound to a tenant.
    pub(crate) struct Networks {
        pub(crate) allow: Vec<ipnet::IpNet>,
        pub(crate) tenants: Vec<(ipnet::IpNet, TenantId)>,
    }

    impl Networks {
        /// Whether `ip` may relay, and as which tenant. The most specific network across
        /// both lists decides; on a tie the anonymous allow-list wins (less privilege), so
        /// a host carved out of a tenant's range by `allow_networks` is nobody's.
        pub(crate) fn classify(&self, ip: IpAddr) -> (bool, Option<TenantId>) {
            // An IPv4 client on a dual-stack socket shows up as ::ffff:a.b.c.d.
            let ip = ip.to_canonical();
            let tenant = self
                .tenants
                .iter()
                .filter(|(n, _)| n.contains(&ip))
                .max_by_key(|(n, _)| n.prefix_len());
            let anonymous = self
                .allow
                .iter()
                .filter(|n| n.contains(&ip))
                .map(|n| n.prefix_len())
                .max();
            match tenant.filter(|(n, _)| anonymous.is_none_or(|a| n.prefix_len() > a)) {
                Some((_, t)) => (true, Some(t.clone())),
                None => (anonymous.is_some(), None),
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_most_specific_network_decides_and_a_tie_is_nobodys() {
            let net = |s: &str| s.parse::<ipnet::IpNet>().expect("net");
            let n = Networks {
                allow: vec![net("10.1.2.0/24"), net("10.9.0.0/16")],
                tenants: vec![
                    (net("10.0.0.0/8"), TenantId("acme".into())),
                    (net("10.9.0.0/16"), TenantId("tie".into())),
                ],
            };
            let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
            assert_eq!(
                n.classify(ip("10.5.5.5")),
                (true, Some(TenantId("acme".into())))
            );
            assert_eq!(n.classify(ip("10.1.2.3")), (true, None), "carved out");
            assert_eq!(n.classify(ip("10.9.1.1")), (true, None), "tie");
            assert_eq!(n.classify(ip("192.0.2.1")), (false, None));
            assert_eq!(
                n.classify(ip("::ffff:10.5.5.5")),
                (true, Some(TenantId("acme".into())))
            );
        }
    }
}

/// Where bounces come back, with the relay's return-path key. Without the key (a store that
/// does not answer, or a role without access to the `secrets` table) bounces to return
/// paths are refused like any other relaying: said once, and no reason not to start.
async fn return_paths(settings: &Settings, deps: &GatewayDeps) -> Option<baton_smtp::ReturnPaths> {
    match baton_store::verp_key(deps.ledger.as_ref()).await {
        Ok(key) => Some(baton_smtp::ReturnPaths {
            key,
            label: settings.raw.bounces.subdomain.clone(),
        }),
        Err(e) => {
            tracing::warn!("no return-path key ({e}): bounces coming back by mail are refused");
            None
        }
    }
}
