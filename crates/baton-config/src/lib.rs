//! Baton's configuration. Loaded once at start-up from an optional TOML file, then
//! `BATON_<SECTION>__<KEY>` environment overrides, then validated; nothing else reads the
//! environment. Unknown keys are errors, so a typo never silently keeps a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use baton_domain::Domain;
use baton_smtp::SessionLimits;
use ipnet::IpNet;
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config: {0}")]
    Parse(String),
    #[error("invalid environment override {var}: {reason}")]
    Env { var: String, reason: String },
    #[error("invalid config value {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

/// The largest header section the session accepts and the pipeline reads (policy and the
/// DSN's text/rfc822-headers part).
pub const HEADER_SECTION_MAX: usize = 256 * 1024;

impl Limits {
    /// The limits the SMTP session enforces itself.
    pub fn session(&self) -> SessionLimits {
        SessionLimits {
            max_message_size: self.max_message_size,
            max_recipients: self.max_recipients,
            max_command_line: self.max_command_line,
            max_text_line: self.max_text_line,
            max_header_size: self.max_header_size,
            max_bad_commands: self.max_bad_commands,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub hostname: String,
    pub data_dir: PathBuf,
    pub listen: Listen,
    pub tls: Tls,
    pub relay: Relay,
    pub submission: Submission,
    pub limits: Limits,
    pub storage: Storage,
    pub log: Log,
    pub delivery: Delivery,
    pub pipeline: Pipeline,
    pub aws: Aws,
    pub bounces: Bounces,
    pub events: Events,
    pub api: Api,
}

/// The SES v2-compatible HTTP API on `listen.api`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Api {
    /// HTTPS (HTTP/1.1 and HTTP/2 by ALPN) with the `[tls]` certificate, as the SMTP
    /// listeners use. Plain HTTP (HTTP/1.1, and HTTP/2 with prior knowledge) only on a
    /// loopback address, for a TLS proxy in front.
    pub tls: bool,
    /// Bytes of request bodies held at once; a request that would go over gets 429
    /// TooManyRequestsException (the SDKs retry it). At least one largest body (about 54 MB).
    pub max_body_memory: u64,
}

impl Default for Api {
    fn default() -> Self {
        Api {
            tls: true,
            max_body_memory: 256 * 1024 * 1024,
        }
    }
}

/// Bounces that come back as mail: tenant mail is sent with a return path this relay made
/// (`<token>@<subdomain>.<sending domain>`, one per recipient), and the relay listener takes
/// mail to such addresses from anyone, parses it and suppresses the recipient it names.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Bounces {
    /// Send tenant mail with per-recipient return paths. Needs the MX record `domain add`
    /// prints for `<subdomain>.<domain>`, pointing at this relay's port 25.
    pub return_path: bool,
    /// The first label of the bounce domains.
    pub subdomain: String,
    /// Soft bounces of one recipient within `soft_window` that suppress it (0: never).
    pub soft_threshold: u32,
    #[serde(with = "humantime_serde")]
    pub soft_window: Duration,
    /// How long a suppression for repeated soft bounces holds (hard bounces and complaints
    /// hold until removed).
    #[serde(with = "humantime_serde")]
    pub soft_suppression: Duration,
    /// Classification rules (TOML, the format of `baton bounce parse --rules`) that extend
    /// and override the built-in ones for bounces that come back by mail.
    pub rules_file: Option<PathBuf>,
}

/// Event destinations (`baton events destination add`): how webhooks are called.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Events {
    /// Deadline of one webhook call (connect, request and response head).
    #[serde(with = "humantime_serde")]
    pub webhook_timeout: Duration,
    /// PEM certificates trusted for webhooks besides the platform's roots.
    pub webhook_ca_file: Option<PathBuf>,
    /// Let webhooks reach loopback, private and link-local addresses (off: a webhook URL
    /// must never become a way into the relay's own network).
    pub webhook_allow_private: bool,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            webhook_timeout: Duration::from_secs(10),
            webhook_ca_file: None,
            webhook_allow_private: false,
        }
    }
}

impl Default for Bounces {
    fn default() -> Self {
        Bounces {
            return_path: false,
            subdomain: "bounce".into(),
            soft_threshold: 3,
            soft_window: Duration::from_secs(7 * 24 * 3600),
            soft_suppression: Duration::from_secs(30 * 24 * 3600),
            rules_file: None,
        }
    }
}

/// Where bodies, queues and the ledger live when `storage.backend = "aws"`. Credentials
/// and (when `region` is empty) the region come from the standard AWS chain; endpoints
/// from here or from `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>` (LocalStack).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Aws {
    pub region: String,
    /// One endpoint for S3, SQS, DynamoDB and EventBridge; empty: each service's regional one.
    pub endpoint_url: String,
    /// DynamoDB's endpoint when it differs (DynamoDB Local beside LocalStack).
    pub dynamodb_endpoint_url: String,
    /// Path-style S3 addressing (LocalStack, MinIO).
    pub force_path_style: bool,
    /// Bucket for message bodies (`messages/<queue id>`).
    pub bucket: String,
    /// Names queues `<prefix>-<stage>` (and `-dlq`) and tables `<prefix>-<table>`.
    pub prefix: String,
    /// Bodies larger than this go up as a multipart upload in parts of this size, so a
    /// session holds at most one part in memory. S3 needs at least 5 MiB.
    pub part_size: usize,
    /// Deadline of one AWS call attempt.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Message bodies expire (S3 lifecycle) after this many days: longer than
    /// `delivery.max_age`, the backstop for anything the sweeper missed.
    pub retention_days: u32,
    /// A body this old that no stage has seen, while the intake queue and its dead-letter
    /// queue are empty, was never queued: the sweeper deletes it.
    #[serde(with = "humantime_serde")]
    pub orphan_after: Duration,
}

impl Default for Aws {
    fn default() -> Self {
        Aws {
            region: String::new(),
            endpoint_url: String::new(),
            dynamodb_endpoint_url: String::new(),
            force_path_style: false,
            bucket: "baton-messages".into(),
            prefix: "baton".into(),
            part_size: 8 * 1024 * 1024,
            request_timeout: Duration::from_secs(10),
            retention_days: 14,
            orphan_after: Duration::from_secs(3600),
        }
    }
}

/// The in-process pipeline workers of `baton serve`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pipeline {
    /// Run policy, signing, delivery and bounces in this process. Off: accept and queue only
    /// (another process, or Lambda functions, consume the queues).
    pub run_stages: bool,
    /// Policy, signing and the first delivery attempt run as one job per message, taken
    /// from intake (as many at once as `deliver_workers`); retries and bounces still go
    /// through their queues. Off: each stage takes its own queue. On AWS this is the
    /// policy function's setting: on, it also signs and delivers.
    pub fused: bool,
    /// Messages a worker takes from its queue at once.
    pub batch: usize,
    /// Concurrent policy workers.
    pub policy_workers: usize,
    /// Concurrent signing workers.
    pub sign_workers: usize,
    /// Concurrent delivery workers (each one SMTP transaction at a time).
    pub deliver_workers: usize,
}

impl Default for Pipeline {
    fn default() -> Self {
        Pipeline {
            run_stages: true,
            fused: true,
            batch: 4,
            policy_workers: 8,
            sign_workers: 8,
            deliver_workers: 32,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    /// STARTTLS submission (RFC 6409). Empty disables.
    pub submission: String,
    /// Implicit-TLS submission (RFC 8314). Empty disables.
    pub submissions: String,
    /// Port-25 style relay/inbound listener. Empty disables.
    pub relay: String,
    /// The SES v2-compatible HTTP API (see `[api]`). Empty (the default) disables.
    pub api: String,
    /// Peers in these networks (a load balancer's) must open every connection with a PROXY
    /// protocol v2 header, whose client address then stands for the peer's everywhere. From
    /// any other address no header is read. Empty (the default) disables.
    pub proxy_protocol_from: Vec<IpNet>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Names of environment variables holding the PEM chain and key instead of files (a
    /// container given them from a secret store). The names, never the PEM, are config.
    pub cert_pem_env: Option<String>,
    pub key_pem_env: Option<String>,
}

/// Where the listeners' certificate and key come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsPair<'a> {
    Files {
        cert: &'a Path,
        key: &'a Path,
    },
    Env {
        cert_var: &'a str,
        key_var: &'a str,
    },
    /// None configured: a self-signed pair in the data dir.
    SelfSigned,
}

impl Tls {
    /// The configured pair; `validate` has ruled out half pairs and mixed sources.
    pub fn pair(&self) -> TlsPair<'_> {
        match (&self.cert, &self.key, &self.cert_pem_env, &self.key_pem_env) {
            (Some(cert), Some(key), _, _) => TlsPair::Files { cert, key },
            (_, _, Some(cert_var), Some(key_var)) => TlsPair::Env { cert_var, key_var },
            _ => TlsPair::SelfSigned,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |reason: &str| ConfigError::Invalid {
            key: "tls",
            reason: reason.into(),
        };
        if self.cert.is_some() != self.key.is_some() {
            return Err(invalid("set both cert and key, or neither"));
        }
        if self.cert_pem_env.is_some() != self.key_pem_env.is_some() {
            return Err(invalid("set both cert_pem_env and key_pem_env, or neither"));
        }
        if self.cert.is_some() && self.cert_pem_env.is_some() {
            return Err(invalid(
                "set cert/key files or cert_pem_env/key_pem_env, not both",
            ));
        }
        for var in [&self.cert_pem_env, &self.key_pem_env]
            .into_iter()
            .flatten()
        {
            if std::env::var_os(var).is_none_or(|v| v.is_empty()) {
                return Err(invalid(&format!("environment variable {var} is not set")));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Relay {
    pub accept_domains: Vec<String>,
    /// May relay without AUTH, but are nobody's: their mail is never signed or counted.
    pub allow_networks: Vec<IpNet>,
    /// May relay without AUTH as a tenant: signed with that tenant's keys, counted against
    /// its quotas, exactly like its authenticated submissions.
    pub tenant_networks: Vec<TenantNetwork>,
    /// As `submission.normalize_bare_lf`, for the port-25 listener. Off: anonymous mail
    /// with bare LF is refused (550 5.5.2).
    pub normalize_bare_lf: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantNetwork {
    pub network: IpNet,
    pub tenant: String,
}

/// Authenticated submission (587/465): what `Received:` reveals, and line endings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Submission {
    /// Add "(Authenticated sender: USER)": a valid login name for anyone who reads it.
    pub received_auth_user: bool,
    /// Add the submitting client's IP address.
    pub received_client_ip: bool,
    /// Store bare LF line endings in message data as CRLF instead of refusing the message
    /// (Postfix's `smtpd_forbid_bare_newline = normalize`); CRLF.CRLF stays the only end.
    pub normalize_bare_lf: bool,
}

impl Default for Submission {
    fn default() -> Self {
        Submission {
            received_auth_user: false,
            received_client_ip: false,
            normalize_bare_lf: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub max_command_line: usize,
    pub max_text_line: usize,
    pub max_header_size: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_bad_commands: u32,
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub data_timeout: Duration,
    /// Bytes per second, averaged over `data_rate_window`, while a body is being received.
    pub min_data_rate: u64,
    #[serde(with = "humantime_serde")]
    pub data_rate_window: Duration,
    #[serde(with = "humantime_serde")]
    pub tls_handshake_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub auth_failure_delay: Duration,
    /// Failed AUTH attempts from one address within `auth_failure_window`; then 421.
    pub max_auth_failures_per_ip: u32,
    /// Failed AUTH attempts for one user from one address; then that pair gets 421. From
    /// any address, failures past this count only slow that user's logins down.
    pub max_auth_failures_per_user: u32,
    #[serde(with = "humantime_serde")]
    pub auth_failure_window: Duration,
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Longest time a commit to storage may take before the client gets 451.
    #[serde(with = "humantime_serde")]
    pub storage_timeout: Duration,
    /// Longest a connection may stay open, however active; then 421 4.4.2.
    #[serde(with = "humantime_serde")]
    pub max_session_time: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Storage {
    /// `embedded` (spool + SQLite in `data_dir`) or `aws` (S3, SQS, DynamoDB: see `[aws]`).
    pub backend: String,
    pub group_commit_max_batch: usize,
    #[serde(with = "humantime_serde")]
    pub group_commit_max_delay: Duration,
    /// Bodies up to this size are buffered in memory and group-committed into a segment;
    /// larger ones stream to a file of their own.
    pub inline_body_max: usize,
    /// Embedded backend: bodies (and captured copies) of messages no queue refers to any
    /// more are deleted after this many days, as the bucket's lifecycle does on AWS;
    /// ledger records after their table's retention (see `baton_store::LEDGER_TABLES`).
    pub retention_days: u32,
}

/// Outbound delivery: how MXs are found and reached, and how long to keep trying.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Delivery {
    /// Name in our EHLO; empty means `hostname`.
    pub helo_name: String,
    /// Port of receiving MXs (25; tests point it elsewhere).
    pub port: u16,
    /// DNS servers for MX lookups, e.g. ["127.0.0.1:5353"]; empty uses the system's.
    pub nameservers: Vec<SocketAddr>,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub data_timeout: Duration,
    /// First retry delay; doubled per attempt up to `retry_max`, with ±20 % jitter.
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// Give up (bounce) after this long in the queue.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Send one "delayed" DSN once a message has waited this long.
    #[serde(with = "humantime_serde")]
    pub delay_notice_after: Duration,
    /// Like Postfix transport maps: per domain ("example.com"), subdomains ("*.example.com")
    /// or everything ("*"); the most specific wins.
    pub routes: Vec<RouteConfig>,
}

/// The route target that keeps mail instead of sending it.
pub const CAPTURE_TARGET: &str = "capture";

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub pattern: String,
    /// "host:port" of a smarthost; "capture" keeps the mail in the data dir instead of
    /// sending it (`baton capture list`); absent means MX lookup.
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub require_tls: bool,
    /// AUTH (PLAIN or LOGIN) to the target, only ever over TLS; with `password` or
    /// `password_env` (the name of an environment variable holding it).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub password_env: Option<String>,
    /// PEM file of the CA certificates the target's certificate must chain to. Routes with
    /// credentials always verify the target (against this, or the system's roots); without
    /// credentials, setting it turns verification on.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
}

impl RouteConfig {
    /// `target = "capture"`: a built-in catch-all mailbox for trials and development.
    pub fn is_capture(&self) -> bool {
        self.target.as_deref() == Some(CAPTURE_TARGET)
    }

    /// The password: inline, or read from the variable `password_env` names.
    pub fn resolve_password(&self) -> Result<Option<String>, ConfigError> {
        match (&self.password, &self.password_env) {
            (Some(p), None) => Ok(Some(p.clone())),
            (None, Some(var)) => std::env::var(var)
                .map(Some)
                .map_err(|_| ConfigError::Invalid {
                    key: "delivery.routes",
                    reason: format!("{}: password_env {var} is not set", self.pattern),
                }),
            (None, None) => Ok(None),
            (Some(_), Some(_)) => Err(ConfigError::Invalid {
                key: "delivery.routes",
                reason: format!("{}: password and password_env both set", self.pattern),
            }),
        }
    }
}

/// Never shows the password (validation errors print routes with `{:?}`).
impl std::fmt::Debug for RouteConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteConfig")
            .field("pattern", &self.pattern)
            .field("target", &self.target)
            .field("require_tls", &self.require_tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("password_env", &self.password_env)
            .finish()
    }
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            helo_name: String::new(),
            port: 25,
            nameservers: Vec::new(),
            connect_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
            retry_initial: Duration::from_secs(60),
            retry_max: Duration::from_secs(3600),
            max_age: Duration::from_secs(5 * 24 * 3600),
            delay_notice_after: Duration::from_secs(4 * 3600),
            routes: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// `text` or `json`.
    pub format: String,
    /// A tracing filter, e.g. `info,baton_gateway=debug`. `RUST_LOG` wins when set.
    pub filter: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            hostname: "baton.localhost".into(),
            data_dir: PathBuf::from("./baton-data"),
            listen: Listen::default(),
            tls: Tls::default(),
            relay: Relay::default(),
            submission: Submission::default(),
            limits: Limits::default(),
            storage: Storage::default(),
            log: Log::default(),
            delivery: Delivery::default(),
            pipeline: Pipeline::default(),
            aws: Aws::default(),
            bounces: Bounces::default(),
            events: Events::default(),
            api: Api::default(),
        }
    }
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            submission: "127.0.0.1:2587".into(),
            submissions: "127.0.0.1:2465".into(),
            relay: "127.0.0.1:2525".into(),
            api: String::new(),
            proxy_protocol_from: Vec::new(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        // The session's own defaults are the single source for the protocol limits.
        let session = SessionLimits::default();
        Limits {
            max_message_size: session.max_message_size,
            max_recipients: session.max_recipients,
            max_command_line: session.max_command_line,
            max_text_line: session.max_text_line,
            max_header_size: session.max_header_size,
            max_connections: 10_000,
            max_connections_per_ip: 200,
            max_bad_commands: session.max_bad_commands,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
            min_data_rate: 1024,
            data_rate_window: Duration::from_secs(30),
            tls_handshake_timeout: Duration::from_secs(10),
            auth_failure_delay: Duration::from_secs(1),
            max_auth_failures_per_ip: 10,
            max_auth_failures_per_user: 10,
            auth_failure_window: Duration::from_secs(15 * 60),
            shutdown_grace: Duration::from_secs(30),
            storage_timeout: Duration::from_secs(30),
            max_session_time: Duration::from_secs(60 * 60),
        }
    }
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            backend: "embedded".into(),
            group_commit_max_batch: 512,
            group_commit_max_delay: Duration::ZERO,
            inline_body_max: 128 * 1024,
            retention_days: 14,
        }
    }
}

impl Default for Log {
    fn default() -> Self {
        Log {
            format: "text".into(),
            filter: "info".into(),
        }
    }
}

/// The validated form the rest of the program uses.
#[derive(Debug, Clone)]
pub struct Settings {
    pub raw: Config,
    pub submission: Option<SocketAddr>,
    pub submissions: Option<SocketAddr>,
    pub relay: Option<SocketAddr>,
    pub api: Option<SocketAddr>,
    pub accept_domains: Vec<Domain>,
}

impl Settings {
    /// The name we give next hops in EHLO (and DSNs in Reporting-MTA): `delivery.helo_name`,
    /// else `hostname`.
    pub fn helo_name(&self) -> &str {
        if self.raw.delivery.helo_name.is_empty() {
            &self.raw.hostname
        } else {
            &self.raw.delivery.helo_name
        }
    }

    /// Delivery with a placeholder name (`baton.localhost`, anything under `localhost`, a
    /// name without a dot) gets our mail refused or scored as spam and makes DSNs point
    /// nowhere. It is allowed only for a local trial: `local_trial` and every listener on
    /// loopback.
    pub fn check_delivery_hostname(&self, local_trial: bool) -> Result<(), ConfigError> {
        let placeholder = |name: &str| {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost") || !name.contains('.')
        };
        let names = [&self.raw.hostname, self.helo_name()];
        if !names.iter().any(|n| placeholder(n)) {
            return Ok(());
        }
        let loopback_only = [self.submission, self.submissions, self.relay]
            .iter()
            .flatten()
            .all(|a| a.ip().is_loopback());
        if local_trial && loopback_only {
            return Ok(());
        }
        Err(ConfigError::Invalid {
            key: "hostname",
            reason: format!(
                "{:?} is a placeholder: set hostname (or delivery.helo_name) to this relay's \
                 public DNS name before delivering mail",
                self.helo_name()
            ),
        })
    }
}

impl Config {
    /// Loads `file` (if any), applies `env` overrides (`BATON_*` pairs), and validates.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let mut doc: toml::Table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                text.parse().map_err(|e: toml::de::Error| {
                    ConfigError::Parse(format!("{}: {e}", path.display()))
                })?
            }
            None => toml::Table::new(),
        };
        let env: Vec<(String, String)> = env.into_iter().collect();
        for (var, value) in &env {
            apply_override(&mut doc, var, value)?;
        }
        let data_dir_given = doc.contains_key("data_dir");
        let mut config: Config = toml::Value::Table(doc)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        if !data_dir_given {
            config.data_dir = default_data_dir(&env);
        }
        config.validate()
    }

    fn validate(self) -> Result<Settings, ConfigError> {
        let label = &self.bounces.subdomain;
        if label.is_empty()
            || label.len() > 63
            || label.starts_with('-')
            || label.ends_with('-')
            || !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(ConfigError::Invalid {
                key: "bounces.subdomain",
                reason: format!("{label:?} is not a DNS label"),
            });
        }
        fn addr(key: &'static str, s: &str) -> Result<Option<SocketAddr>, ConfigError> {
            if s.is_empty() {
                return Ok(None);
            }
            s.parse().map(Some).map_err(|e| ConfigError::Invalid {
                key,
                reason: format!("{s:?}: {e}"),
            })
        }
        if self.hostname.is_empty() || Domain::parse(&self.hostname).is_err() {
            return Err(ConfigError::Invalid {
                key: "hostname",
                reason: format!("{:?} is not a host name", self.hostname),
            });
        }
        let accept_domains = self
            .relay
            .accept_domains
            .iter()
            .map(|d| {
                Domain::parse(d).map_err(|e| ConfigError::Invalid {
                    key: "relay.accept_domains",
                    reason: format!("{d:?}: {e}"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        for n in &self.relay.tenant_networks {
            baton_domain::TenantId::parse(&n.tenant).map_err(|e| ConfigError::Invalid {
                key: "relay.tenant_networks",
                reason: format!("{}: {e}", n.network),
            })?;
        }
        self.tls.validate()?;
        let l = &self.limits;
        let positive = [
            ("limits.max_message_size", l.max_message_size),
            ("limits.max_recipients", l.max_recipients as u64),
            ("limits.max_connections", l.max_connections as u64),
            (
                "limits.max_connections_per_ip",
                l.max_connections_per_ip as u64,
            ),
            ("limits.max_bad_commands", u64::from(l.max_bad_commands)),
            (
                "limits.max_auth_failures_per_ip",
                u64::from(l.max_auth_failures_per_ip),
            ),
            (
                "limits.max_auth_failures_per_user",
                u64::from(l.max_auth_failures_per_user),
            ),
            (
                "storage.group_commit_max_batch",
                self.storage.group_commit_max_batch as u64,
            ),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(ConfigError::Invalid {
                    key,
                    reason: "must be greater than 0".into(),
                });
            }
        }
        if l.max_header_size > HEADER_SECTION_MAX {
            // Policy reads this much to find From: the session and policy must see the same
            // header section.
            return Err(ConfigError::Invalid {
                key: "limits.max_header_size",
                reason: format!("at most {HEADER_SECTION_MAX}"),
            });
        }
        if l.max_command_line < 512 {
            return Err(ConfigError::Invalid {
                key: "limits.max_command_line",
                reason: "RFC 5321 requires at least 512".into(),
            });
        }
        if l.max_text_line < 998 {
            return Err(ConfigError::Invalid {
                key: "limits.max_text_line",
                reason: "RFC 5321 requires at least 998".into(),
            });
        }
        for (key, d) in [
            ("limits.command_timeout", l.command_timeout),
            ("limits.data_timeout", l.data_timeout),
            ("limits.data_rate_window", l.data_rate_window),
            ("limits.tls_handshake_timeout", l.tls_handshake_timeout),
            ("limits.storage_timeout", l.storage_timeout),
            ("limits.max_session_time", l.max_session_time),
        ] {
            if d.is_zero() {
                return Err(ConfigError::Invalid {
                    key,
                    reason: "must be longer than 0s".into(),
                });
            }
        }
        for route in &self.delivery.routes {
            let pattern_ok = route.pattern == "*"
                || Domain::parse(route.pattern.strip_prefix("*.").unwrap_or(&route.pattern))
                    .is_ok();
            let target_ok = route.is_capture()
                || route.target.as_deref().is_none_or(|t| {
                    t.rsplit_once(':')
                        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
                });
            // Credentials go to a smarthost: a username needs a target and one password.
            let auth_ok = match &route.username {
                Some(_) => {
                    route.target.is_some()
                        && !route.is_capture()
                        && route.resolve_password()?.is_some()
                }
                None => route.password.is_none() && route.password_env.is_none(),
            };
            if !auth_ok {
                return Err(ConfigError::Invalid {
                    key: "delivery.routes",
                    reason: format!(
                        "{route:?}: username needs a target and password or password_env"
                    ),
                });
            }
            if !pattern_ok || !target_ok {
                return Err(ConfigError::Invalid {
                    key: "delivery.routes",
                    reason: format!(
                        "{route:?}: pattern must be a domain, *.domain or *; target host:port or \"capture\""
                    ),
                });
            }
        }
        if self.delivery.retry_initial.is_zero() || self.delivery.max_age.is_zero() {
            return Err(ConfigError::Invalid {
                key: "delivery",
                reason: "retry_initial and max_age must be longer than 0s".into(),
            });
        }
        if !matches!(self.storage.backend.as_str(), "embedded" | "aws") {
            return Err(ConfigError::Invalid {
                key: "storage.backend",
                reason: format!("{:?}: use \"embedded\" or \"aws\"", self.storage.backend),
            });
        }
        let aws = &self.aws;
        if aws.part_size < 5 * 1024 * 1024 {
            return Err(ConfigError::Invalid {
                key: "aws.part_size",
                reason: "S3 multipart parts must be at least 5 MiB".into(),
            });
        }
        // A webhook call must fit in the events function's 30 s with room to record it.
        if self.events.webhook_timeout.is_zero()
            || self.events.webhook_timeout > Duration::from_secs(15)
        {
            return Err(ConfigError::Invalid {
                key: "events.webhook_timeout",
                reason: "must be more than 0 and at most 15s".into(),
            });
        }
        let max_age_days = self.delivery.max_age.as_secs().div_ceil(86_400);
        for (key, days) in [
            ("aws.retention_days", aws.retention_days),
            ("storage.retention_days", self.storage.retention_days),
        ] {
            if u64::from(days) <= max_age_days {
                return Err(ConfigError::Invalid {
                    key,
                    reason: format!(
                        "must exceed delivery.max_age ({max_age_days} days): bodies of queued mail would expire"
                    ),
                });
            }
        }
        if aws.bucket.is_empty() || aws.prefix.is_empty() || aws.request_timeout.is_zero() {
            return Err(ConfigError::Invalid {
                key: "aws",
                reason: "bucket, prefix and request_timeout must be set".into(),
            });
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(ConfigError::Invalid {
                key: "log.format",
                reason: format!("{:?}: use \"text\" or \"json\"", self.log.format),
            });
        }
        let submission = addr("listen.submission", &self.listen.submission)?;
        let submissions = addr("listen.submissions", &self.listen.submissions)?;
        let relay = addr("listen.relay", &self.listen.relay)?;
        let api = addr("listen.api", &self.listen.api)?;
        if !self.api.tls && api.is_some_and(|a| !a.ip().is_loopback()) {
            return Err(ConfigError::Invalid {
                key: "api.tls",
                reason: "plain HTTP only on a loopback address (a TLS proxy in front): signed requests can be replayed by anyone who sees them".into(),
            });
        }
        if submission.is_none() && submissions.is_none() && relay.is_none() {
            return Err(ConfigError::Invalid {
                key: "listen",
                reason: "at least one listener is needed".into(),
            });
        }
        Ok(Settings {
            raw: self,
            submission,
            submissions,
            relay,
            api,
            accept_domains,
        })
    }
}

/// `BATON_LIMITS__MAX_RECIPIENTS=5` sets `limits.max_recipients`. Values parse as TOML
/// (numbers, booleans, arrays, quoted strings) and fall back to a plain string.
/// Where state lives when the config names no `data_dir`: the user's state directory (XDG),
/// the same whatever the current directory, so `baton queue list` run anywhere sees what
/// `baton serve` stored.
pub fn default_data_dir(env: &[(String, String)]) -> PathBuf {
    let var = |name: &str| {
        env.iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| PathBuf::from(v))
            .filter(|p| p.is_absolute())
    };
    if let Some(state) = var("XDG_STATE_HOME") {
        return state.join("baton");
    }
    if let Some(home) = var("HOME") {
        return home.join(".local").join("state").join("baton");
    }
    PathBuf::from("./baton-data")
}

fn apply_override(doc: &mut toml::Table, var: &str, value: &str) -> Result<(), ConfigError> {
    let Some(path) = var.strip_prefix("BATON_") else {
        return Ok(());
    };
    // Variables the CLI reads itself.
    if matches!(path, "CONFIG" | "DATA_DIR" | "LOG") {
        return Ok(());
    }
    let keys: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
    if keys.iter().any(String::is_empty) || keys.len() > 2 {
        return Err(ConfigError::Env {
            var: var.into(),
            reason: "expected BATON_KEY or BATON_SECTION__KEY".into(),
        });
    }
    let parsed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    let mut table = doc;
    for section in &keys[..keys.len() - 1] {
        let entry = table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry.as_table_mut().ok_or_else(|| ConfigError::Env {
            var: var.into(),
            reason: format!("{section} is not a section"),
        })?;
    }
    table.insert(keys[keys.len() - 1].clone(), parsed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_comes_from_files_or_named_variables_never_half_or_both() {
        let pair = |toml: &str| load_str(toml, &[]).map(|s| s.raw.tls.clone());
        let files = pair("[tls]\ncert = \"/c.pem\"\nkey = \"/k.pem\"").expect("files");
        assert!(matches!(files.pair(), TlsPair::Files { .. }));
        assert_eq!(pair("").expect("none").pair(), TlsPair::SelfSigned);
        // PATH is set wherever tests run; the value read is the gateway's business.
        let env = pair("[tls]\ncert_pem_env = \"PATH\"\nkey_pem_env = \"PATH\"").expect("env");
        assert_eq!(
            env.pair(),
            TlsPair::Env {
                cert_var: "PATH",
                key_var: "PATH"
            }
        );
        for (toml, why) in [
            ("[tls]\ncert_pem_env = \"PATH\"", "half an env pair"),
            ("[tls]\ncert = \"/c.pem\"", "half a file pair"),
            (
                "[tls]\ncert = \"/c\"\nkey = \"/k\"\ncert_pem_env = \"PATH\"\nkey_pem_env = \"PATH\"",
                "both sources",
            ),
            (
                "[tls]\ncert_pem_env = \"BATON_TEST_NEVER_SET_CERT\"\nkey_pem_env = \"PATH\"",
                "an unset variable",
            ),
        ] {
            let err = pair(toml).expect_err(why);
            assert!(err.to_string().contains("tls"), "{why}: {err}");
        }
    }

    fn load_str(toml: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("baton.toml");
        std::fs::write(&path, toml).expect("write");
        Config::load(
            Some(&path),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn defaults_are_valid_and_loopback_only() {
        let s = Config::load(None, []).expect("defaults");
        assert_eq!(
            s.relay.map(|a| a.to_string()).as_deref(),
            Some("127.0.0.1:2525")
        );
        assert!(s.raw.relay.allow_networks.is_empty() && s.accept_domains.is_empty());
    }

    #[test]
    fn sample_config_in_repo_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../baton.example.toml");
        Config::load(Some(&path), []).expect("baton.example.toml must stay valid");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let e = load_str("[limits]\nmax_recipents = 5\n", &[]).expect_err("typo");
        assert!(e.to_string().contains("max_recipents"), "{e}");
        assert!(load_str("[limits]\nmax_recipients = 0\n", &[]).is_err());
        assert!(load_str("[relay]\nallow_networks = [\"10.0.0.0/33\"]\n", &[]).is_err());
        assert!(load_str("[tls]\ncert = \"/x.pem\"\n", &[]).is_err());
        assert!(load_str("[listen]\nrelay = \"nonsense\"\n", &[]).is_err());
        assert!(load_str("[storage]\nbackend = \"s3\"\n", &[]).is_err());
        assert!(load_str("[aws]\npart_size = 1024\n", &[]).is_err());
        assert!(load_str("[aws]\nretention_days = 3\n", &[]).is_err());
        assert!(load_str("[storage]\nretention_days = 3\n", &[]).is_err());
    }

    #[test]
    fn the_api_speaks_plain_http_only_on_loopback() {
        let plain = "[api]\ntls = false\n[listen]\napi = ";
        let e = load_str(&format!("{plain}\"0.0.0.0:8587\"\n"), &[]).expect_err("plain, public");
        assert!(e.to_string().contains("api.tls"), "{e}");
        assert!(load_str(&format!("{plain}\"127.0.0.1:8587\"\n"), &[]).is_ok());
        let tls = load_str("[listen]\napi = \"0.0.0.0:8587\"\n", &[]).expect("TLS, public");
        assert!(tls.raw.api.tls, "TLS is the default");
    }

    #[test]
    fn environment_overrides_file() {
        let s = load_str(
            "[limits]\nmax_recipients = 5\n",
            &[
                ("BATON_LIMITS__MAX_RECIPIENTS", "7"),
                ("BATON_LIMITS__COMMAND_TIMEOUT", "2s"),
                ("BATON_RELAY__ALLOW_NETWORKS", "[\"127.0.0.0/8\"]"),
                ("BATON_HOSTNAME", "mx.example.org"),
                ("OTHER", "ignored"),
            ],
        )
        .expect("load");
        assert_eq!(s.raw.limits.max_recipients, 7);
        assert_eq!(s.raw.limits.command_timeout, Duration::from_secs(2));
        assert_eq!(s.raw.relay.allow_networks.len(), 1);
        assert_eq!(s.raw.hostname, "mx.example.org");
        assert!(load_str("", &[("BATON_LIMITS__NOPE", "1")]).is_err());
    }

    #[test]
    fn delivery_refuses_a_placeholder_hostname_outside_a_local_trial() {
        let local = load_str("", &[]).expect("defaults");
        assert!(
            local.check_delivery_hostname(true).is_ok(),
            "quick start on loopback"
        );
        assert!(
            local.check_delivery_hostname(false).is_err(),
            "a Lambda function"
        );
        let public = load_str("[listen]\nrelay = \"0.0.0.0:25\"\n", &[]).expect("public");
        let e = public
            .check_delivery_hostname(true)
            .expect_err("placeholder on 0.0.0.0");
        assert!(e.to_string().contains("baton.localhost"), "{e}");
        let named = load_str("hostname = \"mx1.example.net\"\n", &[]).expect("named");
        assert!(named.check_delivery_hostname(false).is_ok());
        let helo = load_str(
            "hostname = \"mx1.example.net\"\n[delivery]\nhelo_name = \"box\"\n",
            &[],
        )
        .expect("helo");
        assert!(helo.check_delivery_hostname(false).is_err());
    }

    #[test]
    fn a_header_limit_beyond_what_policy_reads_is_refused() {
        let e = load_str("[limits]\nmax_header_size = 300000\n", &[]).expect_err("too big");
        assert!(e.to_string().contains("limits.max_header_size"), "{e}");
    }

    #[test]
    fn the_default_data_dir_is_the_users_state_dir_whatever_the_cwd() {
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let s = Config::load(None, env(&[("HOME", "/home/ann")])).expect("load");
        assert_eq!(
            s.raw.data_dir,
            PathBuf::from("/home/ann/.local/state/baton")
        );
        let s = Config::load(
            None,
            env(&[("HOME", "/home/ann"), ("XDG_STATE_HOME", "/st")]),
        )
        .expect("load");
        assert_eq!(s.raw.data_dir, PathBuf::from("/st/baton"));
        let s = load_str("data_dir = \"/srv/baton\"\n", &[("HOME", "/home/ann")]).expect("load");
        assert_eq!(s.raw.data_dir, PathBuf::from("/srv/baton"));
        assert_eq!(default_data_dir(&[]), PathBuf::from("./baton-data"));
    }
}
