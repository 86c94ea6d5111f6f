//! MX resolution with hickory-resolver, and the TXT lookups that prove a domain's owner
//! published its DKIM records.

use std::net::{IpAddr, SocketAddr};

use async_trait::async_trait;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::RData;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxHost {
    pub name: String,
    pub preference: u16,
    pub addrs: Vec<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// RFC 7505: the domain says it accepts no mail.
    #[error("domain publishes a null MX: it accepts no mail")]
    NullMx,
    #[error("domain does not exist")]
    NoSuchDomain,
    #[error("no MX and no address for the domain")]
    NoAddress,
    #[error("DNS lookup failed: {0}")]
    Temporary(String),
}

#[async_trait]
pub trait MxResolver: Send + Sync {
    /// Hosts in the order to try them, each with its addresses.
    async fn resolve(&self, domain: &str) -> Result<Vec<MxHost>, ResolveError>;
    /// Addresses of one host (for smarthost routes).
    async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, ResolveError>;
}

/// TXT lookups, for checking that a domain publishes the DKIM records we made for it.
#[async_trait]
pub trait TxtResolver: Send + Sync {
    /// The TXT records at `name`, each one's character-strings joined (RFC 6376 3.6.2.2);
    /// strings that are not UTF-8 are left out (a DKIM record is ASCII).
    async fn txt(&self, name: &str) -> Result<Vec<String>, ResolveError>;
}

/// A resolver without DNS: host names that are IP addresses resolve to themselves, and
/// nothing else resolves (MX lookups fail temporarily). For deployments whose routes all name
/// their next hop by address, and for tests.
pub struct LiteralResolver;

#[async_trait]
impl MxResolver for LiteralResolver {
    async fn resolve(&self, _: &str) -> Result<Vec<MxHost>, ResolveError> {
        Err(ResolveError::Temporary("no DNS: routes only".into()))
    }

    async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, ResolveError> {
        host.parse()
            .map(|ip| vec![ip])
            .map_err(|_| ResolveError::NoAddress)
    }
}

#[async_trait]
impl TxtResolver for LiteralResolver {
    async fn txt(&self, _: &str) -> Result<Vec<String>, ResolveError> {
        Err(ResolveError::Temporary("no DNS".into()))
    }
}

pub struct HickoryMxResolver {
    resolver: TokioResolver,
}

impl HickoryMxResolver {
    /// The system's resolvers (/etc/resolv.conf).
    pub fn system() -> Result<Self, ResolveError> {
        let resolver = TokioResolver::builder_tokio()
            .and_then(|b| b.build())
            .map_err(|e| ResolveError::Temporary(e.to_string()))?;
        Ok(HickoryMxResolver { resolver })
    }

    /// `delivery.nameservers` when set, else the system's resolvers.
    pub fn configured(servers: &[SocketAddr]) -> Result<Self, ResolveError> {
        if servers.is_empty() {
            Self::system()
        } else {
            Self::with_nameservers(servers)
        }
    }

    /// Specific DNS servers (tests use an in-process server on a high port).
    pub fn with_nameservers(servers: &[SocketAddr]) -> Result<Self, ResolveError> {
        let name_servers = servers
            .iter()
            .map(|s| {
                let mut ns = NameServerConfig::udp_and_tcp(s.ip());
                for c in &mut ns.connections {
                    c.port = s.port();
                }
                ns
            })
            .collect();
        let config = ResolverConfig::from_name_servers(name_servers);
        let resolver = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .build()
            .map_err(|e| ResolveError::Temporary(e.to_string()))?;
        Ok(HickoryMxResolver { resolver })
    }
}

fn classify(e: &NetError) -> ResolveError {
    match e {
        NetError::Dns(DnsError::NoRecordsFound(no))
            if no.response_code == ResponseCode::NXDomain =>
        {
            ResolveError::NoSuchDomain
        }
        NetError::Dns(DnsError::NoRecordsFound(_)) => ResolveError::NoAddress,
        other => ResolveError::Temporary(other.to_string()),
    }
}

fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

#[async_trait]
impl MxResolver for HickoryMxResolver {
    async fn resolve(&self, domain: &str) -> Result<Vec<MxHost>, ResolveError> {
        let mut mxs: Vec<(u16, String)> = match self.resolver.mx_lookup(fqdn(domain)).await {
            Ok(lookup) => lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::MX(mx) => Some((mx.preference, mx.exchange.to_utf8())),
                    _ => None,
                })
                .collect(),
            Err(e) => match classify(&e) {
                // No MX records: the domain itself is the implicit MX (RFC 5321 §5.1).
                ResolveError::NoAddress => Vec::new(),
                other => return Err(other),
            },
        };
        if mxs.iter().any(|(_, name)| name == "." || name.is_empty()) {
            return Err(ResolveError::NullMx);
        }
        if mxs.is_empty() {
            let addrs = self.addresses(domain).await?;
            return Ok(vec![MxHost {
                name: domain.to_string(),
                preference: 0,
                addrs,
            }]);
        }
        mxs.sort_by_key(|(pref, _)| *pref);
        let mut hosts = Vec::new();
        for (preference, name) in mxs {
            let name = name.trim_end_matches('.').to_string();
            // A host that does not resolve is skipped, not fatal: the next MX may work.
            let addrs = self.addresses(&name).await.unwrap_or_default();
            hosts.push(MxHost {
                name,
                preference,
                addrs,
            });
        }
        Ok(hosts)
    }

    async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, ResolveError> {
        if let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            return Ok(vec![ip]);
        }
        let lookup = self
            .resolver
            .lookup_ip(fqdn(host))
            .await
            .map_err(|e| classify(&e))?;
        let addrs: Vec<IpAddr> = lookup.iter().collect();
        if addrs.is_empty() {
            return Err(ResolveError::NoAddress);
        }
        Ok(addrs)
    }
}

#[async_trait]
impl TxtResolver for HickoryMxResolver {
    async fn txt(&self, name: &str) -> Result<Vec<String>, ResolveError> {
        let lookup = self
            .resolver
            .txt_lookup(fqdn(name))
            .await
            .map_err(|e| classify(&e))?;
        Ok(lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(txt) => {
                    let joined: Vec<u8> = txt
                        .txt_data
                        .iter()
                        .flat_map(|s| s.iter().copied())
                        .collect();
                    String::from_utf8(joined).ok()
                }
                _ => None,
            })
            .collect())
    }
}
