//! `runwarden audit`, and the hygiene read every plan includes.

use std::process::ExitCode;

use super::connect;
use crate::cli::{AuditArgs, EXIT_CHANGES, EXIT_ERROR, GlobalArgs, PlanFormat};
use crate::pass::{Connection, load_policies, runtime};
use crate::plan::Plan;

/// Reads what the hygiene audit needs from the tenant: the roles the policies name (with
/// members), the APIs and the signing keys; then audits.
pub(super) async fn hygiene_findings(
    desired: &crate::policy::model::Desired,
    conn: &Connection,
    directory: Option<&crate::model::Directory>,
) -> anyhow::Result<Vec<crate::audit::hygiene::HygieneFinding>> {
    use crate::audit::hygiene::{Tenant, audit};
    use crate::retry::{RetryPolicy, retry};
    let policy = RetryPolicy::default();
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
/// (code, severity, evidence and fix in the message, policy locations).
fn as_findings(findings: Vec<crate::audit::hygiene::HygieneFinding>) -> Vec<crate::plan::Finding> {
    use crate::audit::hygiene::Severity as H;
    use crate::plan::{Finding, Severity};
    findings
        .into_iter()
        .map(|f| Finding {
            service: None,
            code: f.code.to_string(),
            severity: match f.severity {
                H::Error => Severity::Error,
                H::Warning => Severity::Warning,
                H::Info => Severity::Info,
            },
            message: format!("{}; fix: {}", f.message, f.fix),
            sources: f.sources,
        })
        .collect()
}

/// Hygiene findings added to a plan: every command that plans (`plan`, `apply`, `demo`) calls
/// this once per pass, so they all show the same findings. A role the policies name that is
/// unknown or empty is the plan's own finding (`unknown-role`, `empty-role`), not repeated.
pub(super) fn add_hygiene_to_plan(plan: &mut Plan, findings: Result<Vec<crate::audit::hygiene::HygieneFinding>, anyhow::Error>) {
    use crate::plan::{Finding, Severity};
    let extra: Vec<Finding> = match findings {
        Ok(findings) => as_findings(findings)
            .into_iter()
            .filter(|f| f.code != "unknown-role" && f.code != "empty-role")
            .collect(),
        Err(e) => vec![Finding {
            service: None,
            code: "auth0-audit-skipped".into(),
            severity: Severity::Warning,
            message: format!(
                "the Auth0 hygiene audit could not read the tenant ({e:#}); grant the Management API client the scopes runwarden needs: {}",
                crate::identity::auth0::MANAGEMENT_SCOPES
            ),
            sources: vec![],
        }],
    };
    plan.findings.extend(extra);
    plan.findings.sort();
    plan.findings.dedup();
    plan.summary.findings = plan.findings.len();
}

/// Every finding a pass shows besides the plan engine's own, computed once per pass and added
/// the same way by `plan`, `apply` and `demo` (one catalogue): Auth0 hygiene (two more
/// Management API reads; with the workforce-pool mapping members were not read, so the audit
/// reads them itself) and effective access (paths around the policies: one project policy read
/// per project, one read per distinct role).
pub(super) async fn add_pass_findings(
    plan: &mut Plan,
    desired: &crate::policy::model::Desired,
    conn: &Connection,
    live: &crate::model::LiveState,
    now: std::time::SystemTime,
) {
    let directory = live.directory.members_resolved.then_some(&live.directory);
    add_hygiene_to_plan(plan, hygiene_findings(desired, conn, directory).await);
    let facts = crate::live::read_access(&conn.clients.google, live).await;
    add_access_to_plan(plan, crate::insight::access::bypass_findings(desired, live, &facts, now));
}

/// Adds effective-access findings (`invoke-bypass`, `access-unchecked`) to a plan.
pub(super) fn add_access_to_plan(plan: &mut Plan, findings: Vec<crate::plan::Finding>) {
    plan.findings.extend(findings);
    plan.findings.sort();
    plan.findings.dedup();
    plan.summary.findings = plan.findings.len();
}

/// `runwarden audit`: Auth0 hygiene findings alone, printed exactly as plans print them. Exit 0
/// when there are none, 2 when there are.
pub(super) fn run(global: &GlobalArgs, args: &AuditArgs) -> anyhow::Result<ExitCode> {
    let Ok(desired) = load_policies(&args.policies.policies, crate::time::command_now()) else {
        return Ok(ExitCode::from(EXIT_ERROR));
    };
    let findings = runtime()?.block_on(async {
        let conn = connect::open(global, &desired.settings).await?;
        hygiene_findings(&desired, &conn, None).await
    })?;
    let findings = as_findings(findings);
    match args.format {
        PlanFormat::Json => println!("{}", serde_json::to_string_pretty(&findings)?),
        _ => {
            for f in &findings {
                println!("  {}", crate::plan::render::finding_line(f));
            }
            println!("Audit: {}.", crate::text::count(findings.len(), "finding"));
        }
    }
    Ok(if findings.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_CHANGES) })
}
