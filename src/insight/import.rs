//! `import`: policies that reproduce today's live access of one project and region, so that
//! the first plan after adoption is empty. A pure function of the Settings and a live snapshot
//! ([`import`]) and its YAML rendering ([`render_yaml`]: comments by hand, each document
//! serialized by serde-saphyr) that the loader reads back.
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

use serde::Serialize;

use crate::iam::{Binding, IAP_ACCESSOR, Member, MemberKind, RUN_INVOKER};
use crate::model::{Directory, LiveService, LiveState, ServiceId};
use crate::plan::engine::{iap_service_agent, is_managed_condition, managed_expiry};
use crate::plan::format_rfc3339;
use crate::plan::rules::map_role;
use crate::policy::model::Settings;

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
    for name in dir.roles.keys() {
        let set: BTreeSet<Member> = map_role(&settings.principals, dir, name)
            .members
            .into_iter()
            .collect();
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
    let agent = live
        .project_numbers
        .get(&svc.id.project)
        .map(|n| iap_service_agent(*n));
    let mut notes = Vec::new();
    let public = svc.settings.invoker_iam_disabled
        || iam.bindings.iter().any(|b| {
            b.role == RUN_INVOKER
                && b.condition.is_none()
                && b.members.iter().any(Member::is_public)
        });
    let source = source_bindings(svc, iam, agent.as_ref(), &mut notes)?;
    let mut invokers: BTreeSet<(Option<String>, ImportedInvoker)> = BTreeSet::new();
    for b in source {
        let Some(expires) = binding_expiry(b, now, &mut notes) else {
            continue;
        };
        let members = importable_members(b, agent.as_ref(), &mut notes);
        for inv in invokers_for(settings, roles, members, &mut notes) {
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
    if invokers.is_empty()
        && !public
        && svc.settings.ingress != Some(crate::policy::model::Ingress::None)
    {
        return Err("nobody may invoke it today, and a policy must name invokers (or say `public: true` or `ingress: none`)".into());
    }
    let audiences = importable_audiences(svc, &mut notes);
    notes.sort();
    notes.dedup();
    Ok(ImportedPolicy {
        name: policy_name(&svc.id),
        service: svc.id.clone(),
        uri: svc.uri.clone(),
        ingress: svc.settings.ingress.map(|i| i.policy_value()),
        public,
        iap: svc.settings.iap_enabled,
        audiences,
        invokers: invokers.into_iter().map(|(e, i)| (i, e)).collect(),
        notes,
    })
}

/// The bindings requests take: the IAP accessor bindings when IAP is on, else the
/// `roles/run.invoker` ones (what the other path holds becomes a note).
fn source_bindings<'s>(
    svc: &'s LiveService,
    iam: &'s crate::iam::Policy,
    agent: Option<&Member>,
    notes: &mut Vec<String>,
) -> Result<Vec<&'s Binding>, String> {
    let run_bindings = iam.bindings.iter().filter(|b| b.role == RUN_INVOKER);
    if !svc.settings.iap_enabled {
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
        return Ok(run_bindings.collect());
    }
    let Some(p) = &svc.iap_iam else {
        return Err("IAP is on but the IAP policy was not read".into());
    };
    let stray: Vec<String> = run_bindings
        .filter(|b| b.condition.is_none())
        .flat_map(|b| &b.members)
        .filter(|m| Some(*m) != agent && !m.is_public())
        .map(|m| m.to_string())
        .collect();
    if !stray.is_empty() {
        notes.push(format!("IAP is on, so invokers are IAP accessors; direct roles/run.invoker grants are not imported: {}", stray.join(", ")));
    }
    Ok(p.bindings
        .iter()
        .filter(|b| b.role == IAP_ACCESSOR)
        .collect())
}

/// The `expires` of a binding's invokers (`Some(None)`: unconditional), or `None` when the
/// binding is not imported (expired, unreadable, or a condition runwarden did not generate).
fn binding_expiry(b: &Binding, now: SystemTime, notes: &mut Vec<String>) -> Option<Option<String>> {
    let Some(c) = &b.condition else {
        return Some(None);
    };
    if !is_managed_condition(c) {
        notes.push(format!("conditional binding `{}` of {} is not imported (runwarden never touches conditions it did not generate)", c.title, b.role));
        return None;
    }
    match managed_expiry(c) {
        Some(t) if t > now => Some(Some(format_rfc3339(t))),
        Some(_) => {
            notes.push(format!(
                "the time-boxed grant `{}` has expired and is not imported (a plan removes it)",
                c.title
            ));
            None
        }
        None => {
            notes.push(format!(
                "conditional binding `{}` is not imported (unreadable expiry)",
                c.title
            ));
            None
        }
    }
}

/// The members of a binding a policy would grant: not deleted principals, not the IAP service
/// agent (`iap: true` grants it), not an unconditional `allUsers` (`public: true` grants it).
fn importable_members<'b>(
    b: &'b Binding,
    agent: Option<&Member>,
    notes: &mut Vec<String>,
) -> BTreeSet<&'b Member> {
    let mut members = BTreeSet::new();
    for m in &b.members {
        if m.kind() == MemberKind::Deleted {
            notes.push(format!(
                "deleted principal {m} is not imported (a plan removes it)"
            ));
        } else if Some(m) == agent {
            notes.push("the IAP service agent is not imported (`iap: true` grants it)".into());
        } else if m.kind() == MemberKind::AllUsers && b.condition.is_none() {
            // `public: true` grants it.
        } else {
            members.insert(m);
        }
    }
    members
}

/// The invoker lines granting `members`: every Auth0 role whose mapped members are all among
/// them, then machines and explicit members for the rest.
fn invokers_for(
    settings: &Settings,
    roles: &BTreeMap<String, BTreeSet<Member>>,
    members: BTreeSet<&Member>,
    notes: &mut Vec<String>,
) -> Vec<ImportedInvoker> {
    let mut out = Vec::new();
    let mut covered: BTreeSet<&Member> = BTreeSet::new();
    for (role, set) in roles {
        // A role a policy may not name (too long, control characters) is imported as its
        // members instead.
        if crate::policy::check_role_name(role).is_err() {
            continue;
        }
        if set.iter().all(|m| members.contains(m)) {
            out.push(ImportedInvoker::Auth0Role(role.clone()));
            covered.extend(set.iter());
        }
    }
    for m in members.into_iter().filter(|m| !covered.contains(m)) {
        if let Some(machine) = settings.machines.iter().find(|x| &x.service_account == m) {
            out.push(ImportedInvoker::Machine(machine.name.clone()));
            continue;
        }
        match Member::parse_written(m.as_str()) {
            Ok(_) => out.push(ImportedInvoker::Member(m.clone())),
            // Google holds it, but a policy file may not name it: writing it would make the
            // imported file fail to load.
            Err(e) => notes.push(format!(
                "member {:?} is not imported: {}",
                m.as_str(),
                e.reason
            )),
        }
    }
    out
}

/// The custom audiences a policy may name (the others become notes).
fn importable_audiences(svc: &LiveService, notes: &mut Vec<String>) -> Vec<String> {
    svc.settings
        .custom_audiences
        .iter()
        .filter(|a| match crate::policy::check_audience(a) {
            Ok(()) => true,
            Err(problem) => {
                notes.push(format!(
                    "custom audience {a:?} is not imported: it {problem}"
                ));
                false
            }
        })
        .cloned()
        .collect()
}

/// `NAME-REGION` when that fits a policy name (63 characters), else `NAME`.
fn policy_name(id: &ServiceId) -> String {
    let long = format!("{}-{}", id.name, id.region);
    if long.len() <= 63 {
        long
    } else {
        id.name.clone()
    }
}

/// Text for a `#` comment line: a line break in a condition title or a service answer would end
/// the comment and put the rest into the policy document, so every control character (and the
/// YAML 1.1 breaks U+0085, U+2028, U+2029) is written as its escape.
fn comment(text: &str) -> std::borrow::Cow<'_, str> {
    crate::text::visible(text)
}

/// The policy file for `imported`: a header comment (when and from what it was generated),
/// then one AccessPolicy document per service.
pub fn render_yaml(imported: &Imported, generated_at: SystemTime, from: &str) -> String {
    render_yaml_with_schema(imported, generated_at, from, "../schemas/accesspolicy.schema.json")
}

/// [`render_yaml`] with the editor's `$schema` reference `schema` (a path relative to the
/// file, or a URL).
pub fn render_yaml_with_schema(imported: &Imported, generated_at: SystemTime, from: &str, schema: &str) -> String {
    let mut out = String::new();
    out.push_str(&format!("# yaml-language-server: $schema={}\n#\n", comment(schema)));
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
        match serde_saphyr::to_string_with_options(&PolicyDoc::of(p), yaml_options()) {
            Ok(yaml) => out.push_str(&yaml),
            // Not expected (the document holds only strings and booleans); said, not hidden.
            Err(e) => out.push_str(&format!(
                "# This policy could not be written as YAML ({}); it is left out.\n",
                comment(&e.to_string())
            )),
        }
    }
    out
}

/// List items indented under their key, and no folded block scalars (a long principal stays on
/// one line, where a reviewer can read and grep it).
fn yaml_options() -> serde_saphyr::SerializerOptions {
    let mut o = serde_saphyr::SerializerOptions::default();
    o.compact_list_indent = false;
    o.prefer_block_scalars = false;
    o
}

/// An AccessPolicy document as `import` writes it (serialized by serde-saphyr, which quotes
/// whatever YAML would otherwise read differently).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PolicyDoc<'a> {
    api_version: &'static str,
    kind: &'static str,
    metadata: MetadataDoc<'a>,
    spec: SpecDoc<'a>,
}

#[derive(Serialize)]
struct MetadataDoc<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct SpecDoc<'a> {
    mode: &'static str,
    services: [ServiceDoc<'a>; 1],
    exposure: ExposureDoc<'a>,
    invokers: Vec<InvokerDoc<'a>>,
}

#[derive(Serialize)]
struct ServiceDoc<'a> {
    project: &'a str,
    region: &'a str,
    name: &'a str,
}

#[derive(Serialize)]
struct ExposureDoc<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    ingress: Option<&'a str>,
    public: bool,
    iap: bool,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    audiences: &'a [String],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InvokerDoc<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    auth0_role: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    machine: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    member: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires: Option<&'a str>,
}

impl<'a> PolicyDoc<'a> {
    fn of(p: &'a ImportedPolicy) -> PolicyDoc<'a> {
        let invokers = p
            .invokers
            .iter()
            .map(|(inv, expires)| {
                let mut doc = InvokerDoc {
                    auth0_role: None,
                    machine: None,
                    member: None,
                    expires: expires.as_deref(),
                };
                match inv {
                    ImportedInvoker::Auth0Role(r) => doc.auth0_role = Some(r),
                    ImportedInvoker::Machine(m) => doc.machine = Some(m),
                    ImportedInvoker::Member(m) => doc.member = Some(m.as_str()),
                }
                doc
            })
            .collect();
        PolicyDoc {
            api_version: "runwarden.dev/v1",
            kind: "AccessPolicy",
            metadata: MetadataDoc { name: &p.name },
            spec: SpecDoc {
                mode: "observe",
                services: [ServiceDoc {
                    project: &p.service.project,
                    region: &p.service.region,
                    name: &p.service.name,
                }],
                exposure: ExposureDoc {
                    ingress: p.ingress,
                    public: p.public,
                    iap: p.iap,
                    audiences: &p.audiences,
                },
                invokers,
            },
        }
    }
}

/// The file name for (project, region).
pub fn file_name(project: &str, region: &str) -> String {
    format!("{project}-{region}.yaml")
}
