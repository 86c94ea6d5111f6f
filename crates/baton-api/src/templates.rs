//! Email templates (Create/Get/Update/Delete/ListEmailTemplates, TestRenderEmailTemplate):
//! a tenant's own, in the `api_templates` table. The template is the record under
//! `<tenant>/<name>`; a small listing record under `<tenant>/.list/<name>.` holds its creation
//! time, so listing reads neither the templates' bodies nor another tenant's partition. No
//! template name has a dot, so no template's key (whatever its tenant's name) is a listing
//! record's. Another tenant's template reads as absent (404).

use baton_domain::TenantId;
use baton_store::Ledger;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::render::{self, Compiled, TemplateContent};
use crate::send::TemplateRef;

pub const TABLE: &str = "api_templates";
/// SES: 20,000 templates per account and region.
pub const MAX_TEMPLATES: usize = 20_000;
/// ListEmailTemplates' PageSize: SES's default and largest.
const DEFAULT_PAGE: usize = 10;
const MAX_PAGE: usize = 100;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct CreateRequest {
    pub template_name: String,
    pub template_content: TemplateContent,
    /// Accepted; Baton keeps no tags on templates.
    #[serde(default)]
    pub tags: Vec<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct UpdateRequest {
    pub template_content: TemplateContent,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct RenderRequest {
    pub template_data: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Listed {
    created_ms: i64,
}

/// SES's rule: letters, digits, `_` and `-`, at most 64. It also keeps `/` out of the keys.
pub fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "TemplateName: 1 to 64 ASCII letters, digits, '_' or '-'",
        ))
    }
}

fn key(tenant: &TenantId, name: &str) -> String {
    format!("{}/{name}", tenant.0)
}

fn list_prefix(tenant: &TenantId) -> String {
    format!("{}/.list/", tenant.0)
}

fn list_key(tenant: &TenantId, name: &str) -> String {
    format!("{}{name}.", list_prefix(tenant))
}

fn not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("Template {name} does not exist"))
}

fn encode(content: &TemplateContent) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(content).map_err(|e| ApiError::unavailable(format!("template: {e}")))
}

/// The tenant's template `name` as stored, or NotFound (also for another tenant's).
async fn load_stored(
    ledger: &dyn Ledger,
    tenant: &TenantId,
    name: &str,
) -> Result<(Vec<u8>, TemplateContent), ApiError> {
    check_name(name)?;
    let bytes = ledger
        .get(TABLE, &key(tenant, name))
        .await?
        .ok_or_else(|| not_found(name))?;
    let content = serde_json::from_slice(&bytes).map_err(|e| {
        tracing::error!(error = %e, template = name, "template record unreadable");
        ApiError::unavailable("the template cannot be read")
    })?;
    Ok((bytes, content))
}

/// The tenant's template `name`, or NotFound (also for another tenant's).
pub async fn load(
    ledger: &dyn Ledger,
    tenant: &TenantId,
    name: &str,
) -> Result<TemplateContent, ApiError> {
    Ok(load_stored(ledger, tenant, name).await?.1)
}

pub async fn create(
    ledger: &dyn Ledger,
    tenant: &TenantId,
    request: &CreateRequest,
    now_ms: i64,
) -> Result<Value, ApiError> {
    let name = &request.template_name;
    check_name(name)?;
    compile_off_runtime(request.template_content.clone(), render::MAX_STORED).await?;
    if ledger.scan(TABLE, &list_prefix(tenant)).await?.len() >= MAX_TEMPLATES {
        return Err(ApiError {
            status: axum::http::StatusCode::BAD_REQUEST,
            kind: "LimitExceededException",
            message: format!("at most {MAX_TEMPLATES} templates"),
        });
    }
    let body = encode(&request.template_content)?;
    if !ledger
        .put_if_absent(TABLE, &key(tenant, name), &body)
        .await?
    {
        return Err(ApiError {
            status: axum::http::StatusCode::BAD_REQUEST,
            kind: "AlreadyExistsException",
            message: format!("Template {name} already exists"),
        });
    }
    // Written second: a template without its listing record still works and can be
    // deleted; a listing record never names a template that was not made.
    let listed = serde_json::to_vec(&Listed { created_ms: now_ms })
        .map_err(|e| ApiError::unavailable(format!("template: {e}")))?;
    ledger.put(TABLE, &list_key(tenant, name), &listed).await?;
    Ok(json!({}))
}

pub async fn get(ledger: &dyn Ledger, tenant: &TenantId, name: &str) -> Result<Value, ApiError> {
    let content = load(ledger, tenant, name).await?;
    Ok(json!({ "TemplateName": name, "TemplateContent": content, "Tags": [] }))
}

pub async fn update(
    ledger: &dyn Ledger,
    tenant: &TenantId,
    name: &str,
    request: &UpdateRequest,
) -> Result<Value, ApiError> {
    let (old, _) = load_stored(ledger, tenant, name).await?;
    compile_off_runtime(request.template_content.clone(), render::MAX_STORED).await?;
    // Compare-and-swap on the stored bytes: a template deleted meanwhile is not brought back.
    if !ledger
        .replace_if(
            TABLE,
            &key(tenant, name),
            &old,
            &encode(&request.template_content)?,
        )
        .await?
    {
        return Err(ApiError::throttled(format!(
            "Template {name} changed during the update; retry"
        )));
    }
    Ok(json!({}))
}

pub async fn delete(ledger: &dyn Ledger, tenant: &TenantId, name: &str) -> Result<Value, ApiError> {
    load(ledger, tenant, name).await?;
    ledger.delete(TABLE, &list_key(tenant, name)).await?;
    ledger.delete(TABLE, &key(tenant, name)).await?;
    Ok(json!({}))
}

/// One page in name order; NextToken is the name the next page starts at.
pub async fn list(
    ledger: &dyn Ledger,
    tenant: &TenantId,
    page_size: Option<&str>,
    next_token: Option<&str>,
) -> Result<Value, ApiError> {
    let size = match page_size {
        None => DEFAULT_PAGE,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "PageSize must be 1 to {MAX_PAGE}"
                )));
            }
        },
    };
    if let Some(token) = next_token {
        check_name(token).map_err(|_| ApiError::bad_request("NextToken is not valid"))?;
    }
    let prefix = list_prefix(tenant);
    let mut entries = Vec::new();
    for (k, bytes) in ledger.scan(TABLE, &prefix).await? {
        // Only `<name>.`: a tenant whose name extends this one's (`acme/.list`) has records
        // under this prefix too, and they are not this tenant's.
        let Some(name) = k
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix('.'))
            .filter(|name| check_name(name).is_ok())
        else {
            continue;
        };
        if next_token.is_some_and(|t| name < t) {
            continue;
        }
        let name = name.to_string();
        let created = serde_json::from_slice::<Listed>(&bytes).map_or(0, |l| l.created_ms);
        entries.push((name, created));
    }
    entries.sort();
    let next = entries.get(size).map(|(name, _)| name.clone());
    let page: Vec<Value> = entries
        .into_iter()
        .take(size)
        .map(|(name, created)| {
            json!({ "TemplateName": name, "CreatedTimestamp": created as f64 / 1000.0 })
        })
        .collect();
    let mut out = json!({ "TemplatesMetadata": page });
    if let Some(next) = next {
        out["NextToken"] = json!(next);
    }
    Ok(out)
}

/// TestRenderEmailTemplate: the whole MIME message, as SES answers it. A rendering failure
/// is a BadRequestException here (the operation has no MessageRejected).
pub async fn test_render(
    ledger: &dyn Ledger,
    tenant: &TenantId,
    name: &str,
    request: &RenderRequest,
    hostname: &str,
) -> Result<Value, ApiError> {
    let content = load(ledger, tenant, name).await?;
    let compiled = compile_off_runtime(content, render::MAX_STORED).await?;
    let data = render::parse_data(Some(&request.template_data))?;
    let hostname = hostname.to_string();
    let message = render::off_runtime(move || {
        let work = render::Work::new(render::MAX_WORK);
        let rendered = render::render(&compiled, &data, &work).map_err(|e| ApiError {
            kind: "BadRequestException",
            ..e
        })?;
        crate::send::preview(&rendered, &hostname)
    })
    .await?;
    Ok(json!({ "RenderedTemplate": message }))
}

/// Parsing a large template takes a while (see `render::MAX_TAG_OFFSETS`): never on the
/// runtime that serves SMTP.
async fn compile_off_runtime(content: TemplateContent, max: usize) -> Result<Compiled, ApiError> {
    render::off_runtime(move || render::compile(&content, max)).await
}

/// The name in a template ARN (`arn:aws:ses:REGION:ACCOUNT:template/NAME`). The account is
/// not looked at: a key reaches only its own tenant's templates whatever the ARN says.
fn name_in_arn(arn: &str) -> Result<&str, ApiError> {
    let bad = || ApiError::bad_request("TemplateArn is not an SES template ARN");
    let mut fields = arn.splitn(6, ':');
    let (Some("arn"), Some(_), Some("ses"), Some(_), Some(_), Some(resource)) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(bad());
    };
    resource.strip_prefix("template/").ok_or_else(bad)
}

/// Content.Template's template, compiled: the tenant's own stored one (by TemplateName or
/// TemplateArn), or TemplateContent given inline (at most 1 MB, as SES).
pub async fn resolve(
    ledger: &dyn Ledger,
    tenant: &TenantId,
    t: &TemplateRef,
) -> Result<Compiled, ApiError> {
    let by_arn = t.template_arn.as_deref().map(name_in_arn).transpose()?;
    let name = match (t.template_name.as_deref(), by_arn) {
        (Some(a), Some(b)) if a != b => {
            return Err(ApiError::bad_request(
                "TemplateName and TemplateArn name different templates",
            ));
        }
        (a, b) => a.or(b),
    };
    match (name, &t.template_content) {
        (Some(name), None) => {
            compile_off_runtime(load(ledger, tenant, name).await?, render::MAX_STORED).await
        }
        (None, Some(content)) => compile_off_runtime(content.clone(), render::MAX_INLINE).await,
        _ => Err(ApiError::bad_request(
            "Template needs exactly one of TemplateName (or TemplateArn) and TemplateContent",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_ses_rules_and_never_make_keys_of_other_shapes() {
        for good in ["welcome", "Order_2-b", &"a".repeat(64)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "a/b", ".list", "a b", "é", "x\r\n", &"a".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    fn content(subject: &str) -> TemplateContent {
        TemplateContent {
            subject: Some(subject.into()),
            ..TemplateContent::default()
        }
    }

    fn made(name: &str) -> CreateRequest {
        CreateRequest {
            template_name: name.into(),
            template_content: content(name),
            tags: vec![],
        }
    }

    #[tokio::test]
    async fn templates_page_in_name_order_and_stay_with_their_tenant() {
        let ledger = baton_store::memory::MemoryLedger::default();
        let acme = TenantId("acme".into());
        // A tenant whose name extends acme's partition sees none of acme's, nor acme its.
        let other = TenantId("acme/.list".into());
        for name in ["c", "a", "b"] {
            create(&ledger, &acme, &made(name), 1_000)
                .await
                .expect("create");
        }
        create(&ledger, &other, &made("z"), 1)
            .await
            .expect("create");
        let first = list(&ledger, &acme, Some("2"), None).await.expect("list");
        let names = |page: &Value| -> Vec<String> {
            page["TemplatesMetadata"]
                .as_array()
                .expect("a list")
                .iter()
                .map(|t| t["TemplateName"].as_str().unwrap_or("").to_string())
                .collect()
        };
        assert_eq!(names(&first), ["a", "b"]);
        assert_eq!(
            first["TemplatesMetadata"][0]["CreatedTimestamp"],
            json!(1.0)
        );
        let token = first["NextToken"].as_str().expect("a next page");
        let second = list(&ledger, &acme, Some("2"), Some(token))
            .await
            .expect("list");
        assert_eq!(names(&second), ["c"]);
        assert!(second.get("NextToken").is_none());
        assert_eq!(
            names(&list(&ledger, &other, None, None).await.expect("list")),
            ["z"]
        );
        for bad in [Some("0"), Some("101"), Some("x")] {
            assert!(list(&ledger, &acme, bad, None).await.is_err(), "{bad:?}");
        }
        let e = get(&ledger, &other, "a").await.expect_err("not other's");
        assert_eq!(e.kind, "NotFoundException");
        update(
            &ledger,
            &acme,
            "a",
            &UpdateRequest {
                template_content: content("new"),
            },
        )
        .await
        .expect("update");
        assert_eq!(
            load(&ledger, &acme, "a").await.expect("load"),
            content("new")
        );
        delete(&ledger, &acme, "a").await.expect("delete");
        assert_eq!(
            names(&list(&ledger, &acme, None, None).await.expect("list")),
            ["b", "c"]
        );
        let e = create(&ledger, &acme, &made("b"), 2)
            .await
            .expect_err("exists");
        assert_eq!(e.kind, "AlreadyExistsException");
    }

    #[test]
    fn arns_give_the_template_name_and_nothing_else() {
        let arn = "arn:aws:ses:eu-west-1:123456789012:template/welcome";
        assert_eq!(name_in_arn(arn).expect("an ARN"), "welcome");
        for bad in [
            "welcome",
            "arn:aws:s3:eu-west-1:1:template/welcome",
            "arn:aws:ses:eu-west-1:1:identity/acme.test",
        ] {
            assert!(name_in_arn(bad).is_err(), "{bad}");
        }
    }
}
