//! `baton key create|list|revoke`: access keys for the SES v2 API, one tenant each.

use anyhow::bail;
use baton_config::Settings;
use baton_domain::TenantId;

use crate::admin::{open, open_existing};
use crate::output::{now_ms, or_dash, print, rfc3339_ms};

pub fn create(settings: &Settings, tenant: &str) -> anyhow::Result<()> {
    crate::admin::check_name("tenant", tenant)?;
    let store = open(settings)?;
    let key = store.rt.block_on(baton_api::keys::create(
        store.ledger(),
        &TenantId(tenant.to_string()),
        now_ms(),
    ))?;
    println!("access key for tenant {tenant} (the secret is shown once: keep it):");
    println!("aws_access_key_id = {}", key.id);
    println!("aws_secret_access_key = {}", key.secret);
    Ok(())
}

pub fn list(settings: &Settings, tenant: Option<&str>, json: bool) -> anyhow::Result<()> {
    let store = open_existing(settings)?;
    let keys = store
        .rt
        .block_on(baton_api::keys::list(store.ledger(), tenant))?;
    let records: Vec<serde_json::Value> = keys
        .iter()
        .map(|(id, r)| serde_json::json!({ "id": id, "tenant": r.tenant, "created_at": r.created_at, "revoked_at": r.revoked_at }))
        .collect();
    print(
        json,
        &records,
        &["ID", "TENANT", "CREATED", "REVOKED"],
        || {
            keys.iter()
                .map(|(id, r)| {
                    vec![
                        id.clone(),
                        r.tenant.clone(),
                        rfc3339_ms(r.created_at),
                        or_dash(&r.revoked_at.map(rfc3339_ms).unwrap_or_default()),
                    ]
                })
                .collect()
        },
    )
}

pub fn revoke(settings: &Settings, id: &str) -> anyhow::Result<()> {
    let store = open_existing(settings)?;
    if !store
        .rt
        .block_on(baton_api::keys::revoke(store.ledger(), id, now_ms()))?
    {
        bail!("no access key {id}");
    }
    println!("access key {id} revoked: requests signed with it are refused from now on");
    Ok(())
}
