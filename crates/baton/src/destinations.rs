//! `baton events destination add|list|remove`: where a tenant's events go.

use anyhow::bail;
use baton_config::Settings;
use baton_pipeline::event_destinations::{self, Destination, Target};

use crate::admin::{open, open_existing};
use crate::output::{now_ms, print, rfc3339_ms};

pub fn add(settings: &Settings, tenant: &str, name: &str, target: Target) -> anyhow::Result<()> {
    let store = open(settings)?;
    let destination = Destination {
        tenant: tenant.to_string(),
        name: name.to_string(),
        target,
        created_at: now_ms(),
        secret_id: String::new(),
    };
    let secret = store
        .rt
        .block_on(event_destinations::add(
            store.ledger(),
            &destination,
            &settings.raw.aws.prefix,
        ))
        .map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_start_matches("permanent: ")))?;
    println!(
        "tenant {tenant}: events now also go to {name} ({})",
        destination.target.describe()
    );
    if let Some(secret) = secret {
        println!("signing secret: {secret}");
        println!(
            "(shown once: the receiver checks Baton-Signature: t=<unix time>,v1=<hex \
             HMAC-SHA256 of \"<t>.<event id>.<body>\" keyed with this secret>)"
        );
    }
    Ok(())
}

pub fn list(settings: &Settings, tenant: Option<&str>, json: bool) -> anyhow::Result<()> {
    let store = open_existing(settings)?;
    let all = store
        .rt
        .block_on(event_destinations::list(store.ledger(), tenant))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    print(json, &all, &["TENANT", "NAME", "TARGET", "ADDED"], || {
        all.iter()
            .map(|d| {
                vec![
                    d.tenant.clone(),
                    d.name.clone(),
                    d.target.describe(),
                    rfc3339_ms(d.created_at),
                ]
            })
            .collect()
    })
}

pub fn remove(settings: &Settings, tenant: &str, name: &str) -> anyhow::Result<()> {
    let store = open_existing(settings)?;
    let removed = store
        .rt
        .block_on(event_destinations::remove(store.ledger(), tenant, name))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if !removed {
        bail!("tenant {tenant} has no event destination {name}");
    }
    println!("tenant {tenant}: events no longer go to {name}");
    Ok(())
}
