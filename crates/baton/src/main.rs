//! `baton`: run the relay (`baton serve`) and administer its data directory.

mod admin;
mod api_keys;
mod bounce_parse;
mod destinations;
mod docs;
mod inspect;
mod output;
mod serve;

use std::path::PathBuf;

use anyhow::Context;
use baton_config::{Config, Settings};
use baton_pipeline::event_destinations::Target;
use baton_pipeline::messages::{Filter, MessageState};
use baton_pipeline::records;
use clap::{Args, CommandFactory, Parser, Subcommand};

/// Where `--help` lists the options every command takes.
const GLOBAL: &str = "Global options";

#[derive(Parser)]
#[command(
    name = "baton",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("BATON_GIT_REV"), ")"),
    about = "Baton SMTP relay"
)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, global = true, env = "BATON_CONFIG", help_heading = GLOBAL)]
    config: Option<PathBuf>,
    /// Data directory (overrides `data_dir` in the config).
    #[arg(long, global = true, env = "BATON_DATA_DIR", help_heading = GLOBAL)]
    data_dir: Option<PathBuf>,
    /// Storage backend (overrides `storage.backend`): embedded or aws.
    #[arg(long, global = true, value_parser = ["embedded", "aws"], help_heading = GLOBAL)]
    backend: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay: SMTP listeners and the pipeline stages (on AWS: a local runner
    /// feeding SQS events to the same handlers the Lambda functions wrap).
    Serve,
    /// The AWS backend's resources.
    #[command(subcommand)]
    Aws(AwsCommand),
    /// Manage tenant users (SMTP AUTH credentials).
    #[command(subcommand)]
    User(UserCommand),
    /// Manage sending domains.
    #[command(subcommand)]
    Domain(DomainCommand),
    /// Tenant settings.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Access keys for the SES v2 API (`listen.api`), one tenant each.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Messages still queued: list them (on AWS: the queues' counts), or print one as received.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Messages, finished or not: list them, or show one.
    #[command(subcommand)]
    Message(MessageCommand),
    /// What happened to tenants' mail, as Amazon SES event records (Send, Delivery, Bounce,
    /// Complaint, DeliveryDelay, Reject), oldest first; `events destination` says where
    /// they are sent.
    #[command(args_conflicts_with_subcommands = true)]
    Events {
        #[command(subcommand)]
        command: Option<EventsCommand>,
        /// Only this tenant's events.
        #[arg(long)]
        tenant: Option<String>,
        /// At most this many (the most recent).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// The SES records themselves, one JSON array, instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Mail kept by routes with `target = "capture"` instead of being sent.
    #[command(subcommand)]
    Capture(CaptureCommand),
    /// Bounce records (recipients that failed permanently or expired), and the bounce parser.
    #[command(subcommand)]
    Bounce(BounceCommand),
    /// The suppression list: recipients that hard-bounced, complained or kept soft-bouncing.
    #[command(subcommand)]
    Suppression(SuppressionCommand),
    /// Print a shell completion script, e.g. `baton completions bash > ~/.local/share/bash-completion/completions/baton`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages: `baton.1` to standard output, or one page per command into a directory.
    Man {
        /// Write baton.1, baton-serve.1, baton-message-list.1, ... here.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum AwsCommand {
    /// Create the bucket, the stage queues with their dead-letter queues and the DynamoDB
    /// tables (idempotent; on AWS proper `infra/template.yaml` does this).
    Provision,
    /// Delete stored bodies that were never queued (see `aws.orphan_after`).
    Sweep,
    /// Print, as JSON, the names this configuration makes the code use: the bucket, every
    /// queue and dead-letter queue, every DynamoDB table and the hostname (a deployment
    /// check: each must be a resource of the stack).
    Names,
}

#[derive(Subcommand)]
enum ListCommand {
    /// All records, newest last.
    List {
        /// JSON for scripts instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Tenants are made by naming them in these commands: the name is checked here, once.
fn tenant_name(name: &str) -> Result<String, String> {
    baton_domain::TenantId::parse(name).map(|t| t.0)
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Make a key for a tenant: prints its id and secret, once.
    Create {
        #[arg(long, value_parser = tenant_name)]
        tenant: String,
    },
    /// Keys (of one tenant), without their secrets.
    List {
        #[arg(long)]
        tenant: Option<String>,
        /// JSON for scripts instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Stop a key working, at once.
    Revoke { id: String },
}

#[derive(Subcommand)]
enum SuppressionCommand {
    /// All entries, newest last.
    List {
        /// JSON for scripts instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Let mail go to an address again.
    Remove {
        address: String,
        /// The tenant whose list holds it (without: the relay-wide list).
        #[arg(long)]
        tenant: Option<String>,
    },
}

#[derive(Subcommand)]
enum EventsCommand {
    /// Where a tenant's events are sent: SQS queues, EventBridge buses, HTTPS webhooks.
    #[command(subcommand)]
    Destination(DestinationCommand),
}

#[derive(Subcommand)]
enum DestinationCommand {
    /// Send a tenant's events to one more place. A webhook gets a signing secret, printed
    /// once. Calls are retried with backoff and dead-lettered (queue `events-dlq`).
    Add {
        #[arg(value_parser = tenant_name)]
        tenant: String,
        /// A name for it, to remove it by.
        name: String,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Every destination, by tenant.
    List {
        #[arg(long)]
        tenant: Option<String>,
        /// JSON for scripts instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Stop sending to a destination (events already queued for it are dropped).
    Remove { tenant: String, name: String },
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct TargetArgs {
    /// An SQS queue URL: each event is one message, with attributes eventId and eventType.
    #[arg(long)]
    sqs: Option<String>,
    /// An EventBridge bus name or ARN: entries with source "baton" and SES's detail-types
    /// ("Email Bounced", ...).
    #[arg(long)]
    eventbridge: Option<String>,
    /// An https:// URL: each event is POSTed with Baton-Event-Id and Baton-Signature.
    #[arg(long)]
    webhook: Option<String>,
}

impl TargetArgs {
    fn target(self) -> Target {
        match (self.sqs, self.eventbridge, self.webhook) {
            (Some(queue_url), _, _) => Target::Sqs { queue_url },
            (_, Some(bus), _) => Target::Eventbridge { bus },
            (_, _, Some(url)) => Target::Webhook { url },
            _ => unreachable!("clap requires one"),
        }
    }
}

#[derive(Subcommand)]
enum BounceCommand {
    /// All records, newest last.
    List {
        /// JSON for scripts instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Parse bounce messages (DSNs, ARF complaints, auto-replies, older formats): one JSON
    /// object per file, {"file","is_bounce","kind","recipients":[...]}, each recipient with
    /// its status, class (hard or soft) and reason.
    Parse {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Classification rules (TOML) that extend and override the built-in ones.
        #[arg(long)]
        rules: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum MessageCommand {
    /// Recent messages, finished or not, newest last, with their state: queued, deferred,
    /// delivered, partial (some recipients failed) or failed.
    List {
        /// Only messages received within this long, e.g. 10m, 2h, 7d.
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<std::time::Duration>,
        /// Only messages in this state.
        #[arg(long)]
        state: Option<MessageState>,
        /// Only senders containing this text (case-insensitive), e.g. an address or @domain.
        #[arg(long)]
        from: Option<String>,
        /// Only messages with a recipient containing this text (case-insensitive).
        #[arg(long)]
        to: Option<String>,
        /// At most this many (the most recent).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// JSON for scripts instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Per-recipient state and the timeline: accepted, policy, signed, each delivery attempt.
    Show {
        id: String,
        /// JSON for scripts instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum CaptureCommand {
    /// Captured messages, oldest first.
    List {
        /// JSON for scripts instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Write a captured message to standard output as it would have been sent (added
    /// headers and DKIM signatures included).
    Show { id: String },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user, or replace its password and tenant.
    Add {
        name: String,
        #[arg(long, value_parser = tenant_name)]
        tenant: String,
        /// Read the password from the first line of standard input (the only way: a
        /// password on the command line would end up in shell history and `ps`).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
}

#[derive(Subcommand)]
enum DomainCommand {
    /// Register a sending domain for a tenant; generates its DKIM keys (RSA-2048 and
    /// Ed25519) and prints the DNS records to publish.
    Add {
        domain: String,
        #[arg(long, value_parser = tenant_name)]
        tenant: String,
    },
    /// Check that the bounce domain's MX (`<bounces.subdomain>.<domain>`) names this relay,
    /// then send the domain's mail from per-recipient return paths there.
    Verify { domain: String },
    /// Add a new DKIM selector pair; the old selectors keep signing until retired.
    RotateDkim { domain: String },
    /// Stop signing with a selector.
    RetireDkim { domain: String, selector: String },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Set sending quotas; over-quota mail is deferred, not dropped. 0 removes a limit.
    Quota {
        #[arg(value_parser = tenant_name)]
        tenant: String,
        #[arg(long)]
        per_second: Option<u64>,
        #[arg(long)]
        per_day: Option<u64>,
    },
}

#[derive(Subcommand)]
enum QueueCommand {
    /// Messages still in the queues (unfinished), with id, state, sender and recipients;
    /// on AWS, where SQS cannot list messages, the queues' approximate counts.
    List {
        /// JSON for scripts instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Write a stored message, as received, to standard output.
    Cat { id: String },
}

fn load_settings(cli: &Cli) -> anyhow::Result<Settings> {
    let mut settings =
        Config::load(cli.config.as_deref(), std::env::vars()).context("loading configuration")?;
    if let Some(dir) = &cli.data_dir {
        settings.raw.data_dir = dir.clone();
    }
    if let Some(backend) = &cli.backend {
        settings.raw.storage.backend = backend.clone();
    }
    Ok(settings)
}

/// glibc raises its mmap threshold up to 32 MiB after the first large block is freed, and
/// from then on serves multi-MiB buffers (S3 upload parts) from per-thread arenas that keep
/// the memory: measured, a 50 MB message through the AWS backend grew peak RSS by ~27 MB
/// instead of ~1 MB. A fixed threshold keeps large buffers in their own mappings, returned to
/// the system when freed.
#[allow(unsafe_code)]
fn fix_malloc_mmap_threshold() {
    // SAFETY: mallopt only sets an allocator parameter; called first thing in main, before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

/// Everything baton creates (data directory, spool, database, TLS key, DKIM master key) is
/// for its owner only, whatever umask the shell or service manager handed over. The embedded
/// backend also sets these modes itself; the umask covers every other file.
fn restrict_umask() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

fn main() -> std::process::ExitCode {
    fix_malloc_mmap_threshold();
    restrict_umask();
    let cli = Cli::parse();
    // Generated from the definitions above; they need no configuration.
    let result = match &cli.command {
        Command::Completions { shell } => docs::completions(*shell, &mut Cli::command()),
        Command::Man { out_dir } => docs::man(Cli::command(), out_dir.as_deref()),
        Command::Bounce(BounceCommand::Parse { files, rules }) => {
            bounce_parse::run(files, rules.as_deref())
        }
        _ => run(cli),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("baton: {}", one_line(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    load_settings(&cli).and_then(|settings| match cli.command {
        Command::Serve => serve::run(settings),
        Command::Aws(AwsCommand::Provision) => admin::aws_provision(&settings),
        Command::Aws(AwsCommand::Sweep) => admin::aws_sweep(&settings),
        Command::Aws(AwsCommand::Names) => admin::aws_names(&settings),
        Command::User(UserCommand::Add {
            name,
            tenant,
            password_stdin: _,
        }) => admin::user_add(&settings, &name, &tenant),
        Command::Domain(DomainCommand::Add { domain, tenant }) => {
            admin::domain_add(&settings, &domain, &tenant)
        }
        Command::Domain(DomainCommand::Verify { domain }) => {
            admin::domain_verify(&settings, &domain)
        }
        Command::Domain(DomainCommand::RotateDkim { domain }) => {
            admin::domain_rotate_dkim(&settings, &domain)
        }
        Command::Domain(DomainCommand::RetireDkim { domain, selector }) => {
            admin::domain_retire_dkim(&settings, &domain, &selector)
        }
        Command::Tenant(TenantCommand::Quota {
            tenant,
            per_second,
            per_day,
        }) => admin::tenant_quota(&settings, &tenant, per_second, per_day),
        Command::Key(KeyCommand::Create { tenant }) => api_keys::create(&settings, &tenant),
        Command::Key(KeyCommand::List { tenant, json }) => {
            api_keys::list(&settings, tenant.as_deref(), json)
        }
        Command::Key(KeyCommand::Revoke { id }) => api_keys::revoke(&settings, &id),
        Command::Queue(QueueCommand::List { json }) => inspect::queue_list(&settings, json),
        Command::Queue(QueueCommand::Cat { id }) => inspect::queue_cat(&settings, &id),
        Command::Message(MessageCommand::List {
            since,
            state,
            from,
            to,
            limit,
            json,
        }) => {
            let filter = Filter {
                since_ms: since.map(|d| {
                    output::now_ms()
                        .saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                }),
                state,
                from,
                to,
                limit,
            };
            inspect::message_list(&settings, &filter, json)
        }
        Command::Message(MessageCommand::Show { id, json }) => {
            inspect::message_show(&settings, &id, json)
        }
        Command::Capture(CaptureCommand::List { json }) => inspect::capture_list(&settings, json),
        Command::Events {
            command: None,
            tenant,
            limit,
            json,
        } => inspect::events(&settings, tenant.as_deref(), limit, json),
        Command::Events {
            command: Some(EventsCommand::Destination(d)),
            ..
        } => match d {
            DestinationCommand::Add {
                tenant,
                name,
                target,
            } => destinations::add(&settings, &tenant, &name, target.target()),
            DestinationCommand::List { tenant, json } => {
                destinations::list(&settings, tenant.as_deref(), json)
            }
            DestinationCommand::Remove { tenant, name } => {
                destinations::remove(&settings, &tenant, &name)
            }
        },
        Command::Capture(CaptureCommand::Show { id }) => inspect::capture_show(&settings, &id),
        Command::Bounce(BounceCommand::List { json }) => {
            inspect::table_list(&settings, records::tables::BOUNCES, json)
        }
        Command::Suppression(SuppressionCommand::List { json }) => {
            inspect::table_list(&settings, records::tables::SUPPRESSION, json)
        }
        Command::Suppression(SuppressionCommand::Remove { address, tenant }) => {
            admin::suppression_remove(&settings, &address, tenant.as_deref())
        }
        Command::Completions { .. }
        | Command::Man { .. }
        | Command::Bounce(BounceCommand::Parse { .. }) => unreachable!("handled in main"),
    })
}

/// What failed, on one line: each cause once (an error that repeats its source's text
/// must not print it twice), and what to do where we know it.
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    let lower = out.to_ascii_lowercase();
    if lower.contains("cannot reach aws") || lower.contains("dispatch failure") {
        out.push_str(
            " (check aws.endpoint_url / AWS_ENDPOINT_URL; locally, is LocalStack running? \
             localstack/start.sh)",
        );
    } else if lower.contains("address already in use") {
        out.push_str(" (another process listens there: stop it or change [listen])");
    }
    out
}
