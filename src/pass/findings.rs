//! The finding catalogue of one pass, computed the same way by every command that plans
//! (`plan`, `apply`, `demo`) and by the loop (`run`): the plan engine's findings, Auth0
//! hygiene (`audit`'s findings) and effective access (paths around the policies).

use super::Connection;
use crate::plan::{Finding, Plan};

/// Reads what the hygiene audit needs from the tenant: the roles the policies name (with
/// members, unless `directory` already has them), the APIs and the signing keys; then audits.
pub async fn hygiene_findings(
    desired: &crate::policy::model::Desired,
    conn: &Connection,
    directory: Option<&crate::model::Directory>,
) -> anyhow::Result<Vec<crate::audit::hygiene::HygieneFinding>> {
    use crate::audit::hygiene::{Tenant, audit};
    use crate::retry::{RetryPolicy, retry};
    let policy = RetryPolicy::default().until(&conn.shutdown);
    let auth0 = &conn.clients.auth0;
    let read;
    let directory = match directory {
        Some(d) => d,
        None => {
            let mut request = crate::live::directory_request(desired);
            // Hygiene reports empty roles, so it needs members whatever the mapping.
            request.resolve_members = true;
            read = crate::identity::read_directory(auth0, &request, &policy).await?.0;
            &read
        }
    };
    let apis = retry(&policy, "resource-servers", || auth0.resource_servers()).await?;
    let keys = retry(&policy, "keys/signing", || auth0.signing_keys()).await?;
    let organizations = organizations(auth0, desired, &policy).await;
    let tenant = Tenant { resource_servers: &apis, signing_keys: &keys, directory, organizations: &organizations };
    Ok(audit(desired, &tenant, crate::time::command_now()))
}

/// Whether the tenant has Organizations (one small page), read only when the policies name
/// Auth0 roles. Never fails the audit: a refusal (the optional scope read:organizations missing)
/// or any other failure makes the answer unknown, which the audit reports.
async fn organizations(
    auth0: &crate::identity::Auth0Client,
    desired: &crate::policy::model::Desired,
    policy: &crate::retry::RetryPolicy,
) -> crate::model::Organizations {
    use crate::model::Organizations;
    use crate::retry::{Classified, ErrorClass};
    let names_roles = desired.policies.iter().flat_map(|p| &p.invokers).any(|i| matches!(i.principal, crate::policy::model::Principal::Auth0Role(_)));
    if !names_roles {
        return Organizations::None;
    }
    match crate::retry::retry(policy, "organizations", || auth0.organizations_page(5)).await {
        Ok(page) if page.items.is_empty() => Organizations::None,
        Ok(page) => Organizations::Present {
            names: page.items.into_iter().map(|o| if o.name.is_empty() { o.id } else { o.name }).collect(),
            more: page.next.is_some(),
        },
        Err(e) if e.class() == ErrorClass::PermissionDenied => Organizations::Unknown {
            reason: "the Management API client may not list organizations (HTTP 403; scope read:organizations)".into(),
        },
        Err(e) => Organizations::Unknown { reason: format!("listing them failed: {e}") },
    }
}

/// Hygiene findings as catalogue entries: the one `Finding` shape every command prints
/// (code, severity, evidence, fix, policy locations), with the audit's own severity and fix.
pub fn as_findings(findings: Vec<crate::audit::hygiene::HygieneFinding>) -> Vec<Finding> {
    use crate::audit::hygiene::Severity as H;
    use crate::plan::Severity;
    findings
        .into_iter()
        .map(|f| Finding {
            severity: match f.severity {
                H::Error => Severity::Error,
                H::Warning => Severity::Warning,
                H::Info => Severity::Info,
            },
            sources: f.sources,
            ..Finding::new(None, f.code, f.message, vec![]).with_fix(f.fix)
        })
        .collect()
}

/// Hygiene findings added to a plan. A role the policies name that is unknown or empty is the
/// plan's own finding (`unknown-role`, `empty-role`), not repeated; a tenant that cannot be
/// read is one `auth0-audit-skipped` warning.
pub fn add_hygiene_to_plan(plan: &mut Plan, findings: Result<Vec<crate::audit::hygiene::HygieneFinding>, anyhow::Error>) {
    let extra: Vec<Finding> = match findings {
        Ok(findings) => as_findings(findings)
            .into_iter()
            .filter(|f| f.code != "unknown-role" && f.code != "empty-role")
            .collect(),
        Err(e) => vec![
            Finding::new(None, "auth0-audit-skipped", format!("the Auth0 hygiene audit could not read the tenant ({e:#})"), vec![])
                .with_fix(format!("grant the Management API client the scopes runwarden needs: {}", crate::identity::auth0::MANAGEMENT_SCOPES)),
        ],
    };
    add_to_plan(plan, extra);
}

/// Adds findings to a plan: sorted, without duplicates, and counted in the summary.
pub fn add_to_plan(plan: &mut Plan, findings: Vec<Finding>) {
    plan.findings.extend(findings);
    plan.findings.sort();
    plan.findings.dedup();
    plan.summary.findings = plan.findings.len();
}

/// Every finding a pass shows besides the plan engine's own, computed once per pass and added
/// the same way by `plan`, `apply`, `demo` and the loop (one catalogue): Auth0 hygiene (two
/// more Management API reads; with the workforce-pool mapping members were not read, so the
/// audit reads them itself) and effective access (paths around the policies: one project
/// policy read per project, one read per distinct role).
pub async fn add_pass_findings(
    plan: &mut Plan,
    desired: &crate::policy::model::Desired,
    conn: &Connection,
    live: &crate::model::LiveState,
    now: std::time::SystemTime,
) {
    let directory = live.directory.members_resolved.then_some(&live.directory);
    add_hygiene_to_plan(plan, hygiene_findings(desired, conn, directory).await);
    let facts = crate::live::read_access(&conn.clients.google, live).await;
    add_to_plan(plan, crate::insight::access::bypass_findings(desired, live, &facts, now));
}
