//! `import`: policies that reproduce today's live access of one project and region, so that
//! the first plan after adoption is empty. A pure function of the Settings and a live snapshot
//! ([`import`]) and a hand-written YAML rendering ([`render_yaml`]) that the loader reads back.
//!
//! Per service, the governed bindings of the path requests take (`roles/run.invoker` on the
//! service, or `roles/iap.httpsResourceAccessor` on the IAP resource when IAP is on) become
//! invokers: an Auth0 role whose mapped members — exactly as the plan engine maps them — are a
//! non-empty subset of a binding's members becomes `auth0Role` (for `workforcePool`, the pool's
//! group principal of an existing role), a machine's service account becomes `machine`, the rest
//! explicit `member` entries; runwarden-generated expiry conditions become `expires`. Exposure is
//! written as it is, mode `observe`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use crate::iam::{Binding, IAP_ACCESSOR, Member, MemberKind, RUN_INVOKER};
use crate::model::{Directory, LiveService, LiveState, ServiceId};
use crate::plan::engine::{MANAGED_CONDITION_PREFIX, iap_service_agent, is_managed_condition};
use crate::plan::{format_rfc3339, parse_rfc3339};
use crate::policy::model::{PrincipalMapping, Settings};

/// One invoker line to write.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum ImportedInvoker {
    Auth0Role(String),
    Machine(String),
    Member(Member),
}

/// One generated policy (one per service).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedPolicy {
    pub name: String,
    pub service: ServiceId,
    pub uri: Option<String>,
    pub ingress: Option<&'static str>,
    pub public: bool,
    pub iap: bool,
    pub audiences: Vec<String>,
    /// Sorted: unconditional first, then by expiry.
    pub invokers: Vec<(ImportedInvoker, Option<String>)>,
    /// What was left out, and why (written as comments).
    pub notes: Vec<String>,
}

/// Everything imported from one (project, region).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub project: String,
    pub region: String,
    pub policies: Vec<ImportedPolicy>,
    /// Services not imported, with why.
    pub skipped: Vec<(ServiceId, String)>,
}

/// Imports every service of `live` in (`project`, `region`). Pure.
pub fn import(
    settings: &Settings,
    live: &LiveState,
    project: &str,
    region: &str,
    now: SystemTime,
) -> Imported {
    let roles = role_sets(settings, &live.directory);
    let mut out = Imported {
        project: project.into(),
        region: region.into(),
        policies: vec![],
        skipped: vec![],
    };
    for svc in live
        .services
        .values()
        .filter(|s| s.id.project == project && s.id.region == region)
    {
        match import_service(settings, live, &roles, svc, now) {
            Ok(p) => out.policies.push(p),
            Err(why) => out.skipped.push((svc.id.clone(), why)),
        }
    }
    out
}

/// Auth0 role → the IAM members it maps to (as the plan engine maps them; non-empty only).
fn role_sets(settings: &Settings, dir: &Directory) -> BTreeMap<String, BTreeSet<Member>> {
    let mut out = BTreeMap::new();
    for (name, role) in &dir.roles {
        let set: BTreeSet<Member> = match &settings.principals {
            PrincipalMapping::WorkforcePool { pool } => Member::parse(&format!(
                "{}group/{name}",
                PrincipalMapping::pool_prefix(pool)
            ))
            .into_iter()
            .collect(),
            PrincipalMapping::Users { .. } if !dir.members_resolved => BTreeSet::new(),
            PrincipalMapping::Users { email_domains } => role
                .members
                .iter()
                .filter(|u| u.email_verified)
                .filter_map(|u| u.email.as_deref())
                .filter(|e| {
                    e.rsplit_once('@').is_some_and(|(_, d)| {
                        email_domains.iter().any(|a| a.eq_ignore_ascii_case(d))
                    })
                })
                .filter_map(|e| Member::parse(&format!("user:{}", e.to_ascii_lowercase())).ok())
                .collect(),
        };
        if !set.is_empty() {
            out.insert(name.clone(), set);
        }
    }
    out
}

fn import_service(
    settings: &Settings,
    live: &LiveState,
    roles: &BTreeMap<String, BTreeSet<Member>>,
    svc: &LiveService,
    now: SystemTime,
) -> Result<ImportedPolicy, String> {
    if let Some(e) = &svc.read_error {
        return Err(format!("its state could not be read ({e})"));
    }
    let Some(iam) = &svc.iam else {
        return Err("its IAM policy was not read".into());
    };
    let iap = svc.settings.iap_enabled;
    let agent = live
        .project_numbers
        .get(&svc.id.project)
        .map(|n| iap_service_agent(*n));
    let mut notes = Vec::new();
    let run_bindings: Vec<&Binding> = iam
        .bindings
        .iter()
        .filter(|b| b.role == RUN_INVOKER)
        .collect();
    let public = svc.settings.invoker_iam_disabled
        || run_bindings
            .iter()
            .any(|b| b.condition.is_none() && b.members.iter().any(Member::is_public));
    let source: Vec<&Binding> = if iap {
        let Some(p) = &svc.iap_iam else {
            return Err("IAP is on but the IAP policy was not read".into());
        };
        let stray: Vec<String> = run_bindings
            .iter()
            .filter(|b| b.condition.is_none())
            .flat_map(|b| &b.members)
            .filter(|m| Some(*m) != agent.as_ref() && !m.is_public())
            .map(|m| m.to_string())
            .collect();
        if !stray.is_empty() {
            notes.push(format!("IAP is on, so invokers are IAP accessors; direct roles/run.invoker grants are not imported: {}", stray.join(", ")));
        }
        p.bindings
            .iter()
            .filter(|b| b.role == IAP_ACCESSOR)
            .collect()
    } else {
        let n = svc
            .iap_iam
            .iter()
            .flat_map(|p| &p.bindings)
            .filter(|b| b.role == IAP_ACCESSOR)
            .map(|b| b.members.len())
            .sum::<usize>();
        if n > 0 {
            notes.push(format!(
                "IAP is off: {n} IAP accessor grant(s) have no effect and are not imported"
            ));
        }
        run_bindings.clone()
    };
    let mut invokers: BTreeSet<(Option<String>, ImportedInvoker)> = BTreeSet::new();
    for b in source {
        let expires = match &b.condition {
            None => None,
            Some(c) if is_managed_condition(c) => {
                match parse_rfc3339(&c.title[MANAGED_CONDITION_PREFIX.len()..]) {
                    Some(t) if t > now => Some(format_rfc3339(t)),
                    Some(_) => {
                        notes.push(format!("the time-boxed grant `{}` has expired and is not imported (a plan removes it)", c.title));
                        continue;
                    }
                    None => {
                        notes.push(format!(
                            "conditional binding `{}` is not imported (unreadable expiry)",
                            c.title
                        ));
                        continue;
                    }
                }
            }
            Some(c) => {
                notes.push(format!("conditional binding `{}` of {} is not imported (runwarden never touches conditions it did not generate)", c.title, b.role));
                continue;
            }
        };
        let mut members: BTreeSet<&Member> = BTreeSet::new();
        for m in &b.members {
            if m.kind() == MemberKind::Deleted {
                notes.push(format!(
                    "deleted principal {m} is not imported (a plan removes it)"
                ));
            } else if Some(m) == agent.as_ref() {
                notes.push("the IAP service agent is not imported (`iap: true` grants it)".into());
            } else if m.kind() == MemberKind::AllUsers && b.condition.is_none() {
                // `public: true` grants it.
            } else {
                members.insert(m);
            }
        }
        let mut covered: BTreeSet<&Member> = BTreeSet::new();
        for (role, set) in roles {
            // A role a policy may not name (too long, control characters) is imported as
            // its members instead.
            if crate::policy::check_role_name(role).is_err() {
                continue;
            }
            if set.iter().all(|m| members.contains(m)) {
                invokers.insert((expires.clone(), ImportedInvoker::Auth0Role(role.clone())));
                covered.extend(set.iter());
            }
        }
        for m in members.into_iter().filter(|m| !covered.contains(m)) {
            let inv = match settings.machines.iter().find(|x| &x.service_account == m) {
                Some(machine) => ImportedInvoker::Machine(machine.name.clone()),
                None => match Member::parse_written(m.as_str()) {
                    Ok(_) => ImportedInvoker::Member(m.clone()),
                    // Google holds it, but a policy file may not name it: writing it would
                    // make the imported file fail to load.
                    Err(e) => {
                        notes.push(format!(
                            "member {:?} is not imported: {}",
                            m.as_str(),
                            e.reason
                        ));
                        continue;
                    }
                },
            };
            invokers.insert((expires.clone(), inv));
        }
    }
    let other_roles: BTreeSet<&str> = iam
        .bindings
        .iter()
        .map(|b| b.role.as_str())
        .filter(|r| *r != RUN_INVOKER)
        .collect();
    if !other_roles.is_empty() {
        notes.push(format!(
            "other roles are not governed and not imported: {}",
            other_roles.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    notes.sort();
    notes.dedup();
    if invokers.is_empty()
        && !public
        && svc.settings.ingress != Some(crate::policy::model::Ingress::None)
    {
        return Err("nobody may invoke it today, and a policy must name invokers (or say `public: true` or `ingress: none`)".into());
    }
    let audiences: Vec<String> = svc
        .settings
        .custom_audiences
        .iter()
        .filter(|a| match crate::policy::check_audience(a) {
            Ok(()) => true,
            Err(problem) => {
                notes.push(format!("custom audience {a:?} is not imported: it {problem}"));
                false
            }
        })
        .cloned()
        .collect();
    notes.sort();
    notes.dedup();
    let name = {
        let long = format!("{}-{}", svc.id.name, svc.id.region);
        if long.len() <= 63 {
            long
        } else {
            svc.id.name.clone()
        }
    };
    Ok(ImportedPolicy {
        name,
        service: svc.id.clone(),
        uri: svc.uri.clone(),
        ingress: svc.settings.ingress.map(|i| i.policy_value()),
        public,
        iap,
        audiences,
        invokers: invokers.into_iter().map(|(e, i)| (i, e)).collect(),
        notes,
    })
}

/// Text for a `#` comment line: a line break in a condition title or a service answer would end
/// the comment and put the rest into the policy document, so every control character (and the
/// YAML 1.1 breaks U+0085, U+2028, U+2029) is written as its escape.
fn comment(text: &str) -> std::borrow::Cow<'_, str> {
    crate::text::visible(text)
}

/// A YAML scalar: plain when that is unambiguous, else double-quoted (JSON escapes are valid
/// YAML escapes).
fn scalar(s: &str) -> String {
    let reserved = [
        "true", "false", "yes", "no", "on", "off", "null", "~", "y", "n",
    ];
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@/:+".contains(c))
        && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && !s.ends_with(':')
        && !s.contains(": ")
        && !reserved.contains(&s.to_ascii_lowercase().as_str());
    if plain {
        s.to_string()
    } else {
        serde_json::to_string(s).expect("a string serializes")
    }
}

/// The policy file for `imported`: a header comment (when and from what it was generated),
/// then one AccessPolicy document per service.
pub fn render_yaml(imported: &Imported, generated_at: SystemTime, from: &str) -> String {
    let mut out = String::new();
    out.push_str("# yaml-language-server: $schema=../schemas/accesspolicy.schema.json\n#\n");
    out.push_str(&format!(
        "# Generated by `runwarden import --project {} --region {}` at {} from {}.\n",
        imported.project,
        imported.region,
        format_rfc3339(generated_at),
        from
    ));
    out.push_str("# Each policy reproduces one service's live access in `observe` mode, so the first plan after\n");
    out.push_str("# adoption shows no change; review, then switch to `enforce`. Copy this file next to the\n");
    out.push_str("# Settings it was generated with.\n");
    out.push_str(
        "# Not imported: conditional bindings runwarden did not generate, roles other than\n",
    );
    out.push_str(
        "# roles/run.invoker and roles/iap.httpsResourceAccessor, `deleted:` members and the IAP\n",
    );
    out.push_str("# service agent (`iap: true` grants it).\n");
    if !imported.skipped.is_empty() {
        out.push_str("#\n# Services not imported:\n");
        for (id, why) in &imported.skipped {
            out.push_str(&format!("#   {}\n", comment(&format!("{id}: {why}"))));
        }
    }
    if imported.policies.is_empty() {
        out.push_str("#\n# No service was imported.\n");
    }
    for p in &imported.policies {
        out.push_str("---\n");
        let mut head = p.service.to_string();
        if let Some(u) = &p.uri {
            head.push_str(&format!(" ({u})"));
        }
        out.push_str(&format!("# {}\n", comment(&head)));
        for n in &p.notes {
            out.push_str(&format!("# Note: {}\n", comment(n)));
        }
        out.push_str("apiVersion: runwarden.dev/v1\nkind: AccessPolicy\nmetadata:\n");
        out.push_str(&format!("  name: {}\n", scalar(&p.name)));
        out.push_str("spec:\n  mode: observe\n  services:\n");
        out.push_str(&format!(
            "    - project: {}\n      region: {}\n      name: {}\n",
            scalar(&p.service.project),
            scalar(&p.service.region),
            scalar(&p.service.name)
        ));
        out.push_str("  exposure:\n");
        if let Some(i) = p.ingress {
            out.push_str(&format!("    ingress: {i}\n"));
        }
        out.push_str(&format!("    public: {}\n    iap: {}\n", p.public, p.iap));
        if !p.audiences.is_empty() {
            out.push_str("    audiences:\n");
            for a in &p.audiences {
                out.push_str(&format!("      - {}\n", scalar(a)));
            }
        }
        if p.invokers.is_empty() {
            out.push_str("  invokers: []\n");
        } else {
            out.push_str("  invokers:\n");
        }
        for (inv, expires) in &p.invokers {
            let line = match inv {
                ImportedInvoker::Auth0Role(r) => format!("auth0Role: {}", scalar(r)),
                ImportedInvoker::Machine(m) => format!("machine: {}", scalar(m)),
                ImportedInvoker::Member(m) => format!("member: {}", scalar(m.as_str())),
            };
            out.push_str(&format!("    - {line}\n"));
            if let Some(t) = expires {
                out.push_str(&format!("      expires: {}\n", scalar(t)));
            }
        }
    }
    out
}

/// The file name for (project, region).
pub fn file_name(project: &str, region: &str) -> String {
    format!("{project}-{region}.yaml")
}
