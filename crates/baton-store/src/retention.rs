//! How long records and message bodies are kept: the one list both backends follow. On AWS
//! it becomes DynamoDB TTLs (`expires_at`) and the bucket's lifecycle; the embedded backend
//! sweeps its SQLite ledger and spool by it.

use std::time::Duration;

/// A ledger table and how long its records live after their last write (`None`: until
/// deleted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableSpec {
    pub name: &'static str,
    pub retention: Option<Duration>,
}

const DAY: u64 = 86_400;

/// Every table the gateway, the pipeline and the admin commands use.
pub const LEDGER_TABLES: &[TableSpec] = &[
    keep("users"),
    keep("domains"),
    keep("dkim_keys"),
    keep("secrets"),
    keep("tenants"),
    keep("suppression"),
    keep("event_destinations"),
    keep("api_keys"),
    // SES templates of the API (`<tenant>/<name>`): kept until deleted, like SES.
    keep("api_templates"),
    expire("quota_counters", 2),
    expire("events", 30),
    expire("recipients", 30),
    expire("messages", 30),
    expire("tenant_events", 30),
    expire("event_sent", 30),
    expire("soft_bounces", 30),
    // No longer than the copies of the bodies live (`BODY_RETENTION`, the bucket's default
    // RetentionDays).
    expire("captured", 14),
    expire("dsn_sent", 30),
    expire("bounces", 90),
];

/// How long stored bodies (and captured copies) are kept by default: `aws.retention_days`'
/// default, which the bucket's lifecycle applies on AWS.
pub const BODY_RETENTION: Duration = Duration::from_secs(14 * DAY);

const fn keep(name: &'static str) -> TableSpec {
    TableSpec {
        name,
        retention: None,
    }
}

const fn expire(name: &'static str, days: u64) -> TableSpec {
    TableSpec {
        name,
        retention: Some(Duration::from_secs(days * DAY)),
    }
}

/// How long records of `table` live; `None` for tables kept until deleted and for tables
/// not in [`LEDGER_TABLES`].
pub fn table_retention(table: &str) -> Option<Duration> {
    LEDGER_TABLES
        .iter()
        .find(|t| t.name == table)
        .and_then(|t| t.retention)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_listed_once_and_looked_up_by_name() {
        for (i, t) in LEDGER_TABLES.iter().enumerate() {
            assert!(
                LEDGER_TABLES[i + 1..].iter().all(|o| o.name != t.name),
                "{} listed twice",
                t.name
            );
        }
        assert_eq!(
            table_retention("bounces"),
            Some(Duration::from_secs(90 * DAY))
        );
        assert_eq!(
            table_retention("captured"),
            Some(Duration::from_secs(14 * DAY))
        );
        assert_eq!(table_retention("users"), None);
        assert_eq!(table_retention("no_such_table"), None);
    }
}
