//! Effective access: every path by which a member can invoke a service, beyond the
//! `roles/run.invoker` grants that [`super::explain`] already explains. A path is a binding of
//! any role that carries `run.routes.invoke` (read from the IAM roles API, see
//! [`crate::model::AccessFacts`]), on the service itself, on its project, or on the folders and
//! organization above the project (inherited by every service below them). A folder or
//! organization whose policy could not be read is said per level. Google groups are named as
//! such: their membership is not expanded (the Cloud Identity Groups API is not read).

use serde::Serialize;

use crate::iam::{MemberKind, Policy, RUN_INVOKER};
use crate::model::{AccessFacts, INVOKE_PERMISSION, LiveState, ServiceId};

/// Where a path's binding is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind", content = "name")]
pub enum BoundOn {
    /// The service's own policy.
    Service(String),
    /// The project's policy, inherited by the service.
    Project(String),
    /// A folder's policy (`folders/N`), inherited by every project below it.
    Folder(String),
    /// The organization's policy (`organizations/N`), inherited by every project in it.
    Organization(String),
}

impl BoundOn {
    /// `on project P (inherited)`, `on folder N (inherited)`, ...
    fn describe(&self) -> String {
        match self {
            BoundOn::Service(_) => "on the service".to_string(),
            BoundOn::Project(name) => format!("on project {name} (inherited)"),
            BoundOn::Folder(name) | BoundOn::Organization(name) => {
                format!("on {} (inherited)", crate::model::ancestor_label(name))
            }
        }
    }
}

/// One path to invoke a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessPath {
    pub service: String,
    pub member: String,
    pub role: String,
    pub bound_on: BoundOn,
    /// The binding's condition title, when it has one (the path holds only when it is true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// A Google group: who is in it is not expanded.
    pub group: bool,
    /// `None` when the role carries `run.routes.invoke`; otherwise why that is unknown (the
    /// role could not be read): the path is listed so that it is not missed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unverified: Option<String>,
}

/// Every path to invoke `id` other than `roles/run.invoker` on the service itself.
pub fn paths_to(id: &ServiceId, live: &LiveState, facts: &AccessFacts) -> Vec<AccessPath> {
    let mut out = Vec::new();
    if let Some(policy) = live.services.get(id).and_then(|s| s.iam.as_ref()) {
        let on = BoundOn::Service(id.to_string());
        collect(&mut out, id, policy, &on, facts, |role| role == RUN_INVOKER);
    }
    if let Some(Ok(policy)) = facts.projects.get(&id.project) {
        let on = BoundOn::Project(id.project.clone());
        collect(&mut out, id, policy, &on, facts, |_| false);
    }
    for name in facts.ancestry.get(&id.project).map(|a| a.chain.as_slice()).unwrap_or(&[]) {
        if let Some(Ok(policy)) = facts.ancestors.get(name) {
            let on = if name.starts_with("folders/") {
                BoundOn::Folder(name.clone())
            } else {
                BoundOn::Organization(name.clone())
            };
            collect(&mut out, id, policy, &on, facts, |_| false);
        }
    }
    out
}

/// Every path of `member` (exact IAM member) to any service read.
pub fn paths_of(member: &str, live: &LiveState, facts: &AccessFacts) -> Vec<AccessPath> {
    live.services
        .keys()
        .flat_map(|id| paths_to(id, live, facts))
        .filter(|p| p.member == member)
        .collect()
}

fn collect(
    out: &mut Vec<AccessPath>,
    id: &ServiceId,
    policy: &Policy,
    on: &BoundOn,
    facts: &AccessFacts,
    skip: impl Fn(&str) -> bool,
) {
    for b in policy.bindings.iter().filter(|b| !skip(&b.role)) {
        let unverified = match facts.invoking.get(&b.role) {
            Some(Ok(true)) => None,
            Some(Ok(false)) => continue,
            Some(Err(why)) => Some(why.clone()),
            None => Some("the role was not read".to_string()),
        };
        for m in &b.members {
            out.push(AccessPath {
                service: id.to_string(),
                member: m.as_str().to_string(),
                role: b.role.clone(),
                bound_on: on.clone(),
                condition: b.condition.as_ref().map(|c| c.title.clone()),
                group: m.kind() == MemberKind::Group,
                unverified: unverified.clone(),
            });
        }
    }
}

/// Projects whose policy could not be read, with why.
pub fn unread_projects(facts: &AccessFacts) -> Vec<(String, String)> {
    facts
        .projects
        .iter()
        .filter_map(|(p, r)| r.as_ref().err().map(|e| (p.clone(), e.clone())))
        .collect()
}

/// Each level above the projects whose inherited paths are unknown, once, as a line:
/// `folder 123: not readable: …` (its policy could not be read) or `project P: parent not
/// readable: …` (the walk up the hierarchy stopped there).
pub fn unread_levels(facts: &AccessFacts) -> Vec<String> {
    let mut out: Vec<String> = facts
        .ancestors
        .iter()
        .filter_map(|(name, r)| {
            r.as_ref().err().map(|e| format!("{}: not readable: {e}", crate::model::ancestor_label(name)))
        })
        .collect();
    let stops: std::collections::BTreeSet<&String> =
        facts.ancestry.values().filter_map(|a| a.unknown.as_ref()).collect();
    out.extend(stops.into_iter().cloned());
    out
}

/// The text section appended to `explain`.
pub fn render_text(paths: &[AccessPath], facts: &AccessFacts) -> String {
    let mut s = format!(
        "\nOther paths to invoke (any role carrying {INVOKE_PERMISSION}, on the service or inherited from its project, folders or organization):\n"
    );
    if paths.is_empty() {
        s.push_str("  (none)\n");
    }
    for p in paths {
        let on = p.bound_on.describe();
        s.push_str(&format!("  {}  {}  {}  {on}", p.service, p.member, p.role));
        if let Some(c) = &p.condition {
            s.push_str(&format!("  when {c:?}"));
        }
        if p.group {
            s.push_str("  (Google group: members not expanded)");
        }
        if let Some(why) = &p.unverified {
            s.push_str(&format!("  (role not read, may not invoke: {why})"));
        }
        s.push('\n');
    }
    for (project, why) in unread_projects(facts) {
        s.push_str(&format!(
            "  project {project}: policy not read, its inherited paths are unknown: {why}\n"
        ));
    }
    for level in unread_levels(facts) {
        s.push_str(&format!("  {level} (paths inherited from it are unknown)\n"));
    }
    if paths.iter().any(|p| p.group) {
        s.push_str(&format!("  {GROUPS_NOT_EXPANDED}\n"));
    }
    s
}

/// Why a Google group's members are not listed. The Cloud Identity Groups API
/// (cloudidentity.v1 discovery document, as bundled with google-api-python-client:
/// `groups.memberships.list`, `GET v1/{+parent}/memberships`, and
/// `groups.memberships.searchTransitiveMemberships`, scope
/// `https://www.googleapis.com/auth/cloud-identity.groups.readonly`) is not read.
pub const GROUPS_NOT_EXPANDED: &str = "Google groups are named, not expanded: runwarden does not read the Cloud Identity Groups API (groups.memberships.list / searchTransitiveMemberships, OAuth scope cloud-identity.groups.readonly, with a Workspace or Cloud Identity role allowed to read group members), so who is in a group is not shown";

/// Every Google group holding a path to invoke a service read (any role carrying
/// `run.routes.invoke`, `roles/run.invoker` on the service included), with the services.
pub fn groups_with_access(
    live: &LiveState,
    facts: &AccessFacts,
) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let mut out: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = Default::default();
    for (id, svc) in &live.services {
        let mut paths = paths_to(id, live, facts);
        if let Some(policy) = &svc.iam {
            let on = BoundOn::Service(id.to_string());
            collect(&mut paths, id, policy, &on, facts, |role| role != RUN_INVOKER);
        }
        for p in paths.into_iter().filter(|p| p.group) {
            out.entry(p.member).or_default().insert(p.service);
        }
    }
    out
}

/// For `explain --member` of a single principal (a user or service account): the groups it may
/// be in that hold access, since group membership is not expanded.
pub fn render_groups_note(member: &crate::iam::Member, live: &LiveState, facts: &AccessFacts) -> String {
    if !matches!(member.kind(), MemberKind::User | MemberKind::ServiceAccount) {
        return String::new();
    }
    let groups = groups_with_access(live, facts);
    let mut s = format!("\nThrough Google groups (not expanded): {} may also invoke services through a group it is in.\n", member.as_str());
    if groups.is_empty() {
        s.push_str("  (no group holds access on the services in scope)\n");
    }
    for (group, services) in &groups {
        let list: Vec<&str> = services.iter().map(String::as_str).collect();
        s.push_str(&format!("  {group}  {}: {}\n", crate::text::count(list.len(), "service"), list.join(", ")));
    }
    s.push_str(&format!("  {GROUPS_NOT_EXPANDED}\n"));
    s
}

/// A plan finding (`invoke-bypass`) per path that lets a member invoke a governed service
/// although no policy grants it that service, with the fix: remove the binding, or bind a role
/// without `run.routes.invoke`. Paths whose role could not be read are reported as possible
/// bypasses; projects whose policy could not be read get one `access-unchecked` note each.
pub fn bypass_findings(
    desired: &crate::policy::model::Desired,
    live: &LiveState,
    facts: &AccessFacts,
    now: std::time::SystemTime,
) -> Vec<crate::plan::Finding> {
    use crate::plan::Finding;
    let mut out = Vec::new();
    // An inherited binding (project, folder, organization) is one finding naming every
    // governed service it reaches.
    let mut inherited: std::collections::BTreeMap<(String, String, String), (AccessPath, Vec<String>)> =
        Default::default();
    for (id, wanted) in crate::plan::engine::desired_grants(desired, live, now) {
        for p in paths_to(&id, live, facts) {
            if wanted.grants.iter().any(|g| g.member.as_str() == p.member) {
                continue;
            }
            if !matches!(p.bound_on, BoundOn::Service(_)) {
                let key = (p.bound_on.describe(), p.member.clone(), p.role.clone());
                let entry = inherited.entry(key).or_insert_with(|| (p.clone(), Vec::new()));
                entry.1.push(id.to_string());
                continue;
            }
            let (evidence, fix) = bypass_message(&p, &[]);
            out.push(Finding::new(Some(id.to_string()), "invoke-bypass", evidence, vec![]).with_fix(fix));
        }
    }
    for (_, (p, services)) in inherited {
        let (evidence, fix) = bypass_message(&p, &services);
        out.push(Finding::new(None, "invoke-bypass", evidence, vec![]).with_fix(fix));
    }
    for (project, why) in unread_projects(facts) {
        out.push(Finding::new(
            None,
            "access-unchecked",
            format!("the IAM policy of project {project} could not be read, so paths inherited from it are unknown ({why})"),
            vec![],
        ));
    }
    for level in unread_levels(facts) {
        out.push(
            Finding::new(None, "access-unchecked", format!("{level}; paths inherited from it are unknown"), vec![]).with_fix(
                "grant resourcemanager.projects.get, resourcemanager.folders.get, resourcemanager.folders.getIamPolicy and resourcemanager.organizations.getIamPolicy where they may be read (deploy/iam/runwarden-hierarchy-reader.yaml)".into(),
            ),
        );
    }
    out
}

/// The evidence and the fix (the exact command that removes the binding) of a bypass.
fn bypass_message(p: &AccessPath, services: &[String]) -> (String, String) {
    let who = if p.group { format!("{} (a Google group)", p.member) } else { p.member.clone() };
    let maybe = match &p.unverified {
        Some(why) => format!(" may (its role could not be read: {why})"),
        None => String::new(),
    };
    let (on, fix) = match &p.bound_on {
        BoundOn::Folder(name) | BoundOn::Organization(name) => {
            let (kind, id) = name.split_once('/').unwrap_or(("", name));
            let command = if kind == "folders" { "resource-manager folders" } else { "organizations" };
            (
                format!("on {}", crate::model::ancestor_label(name)),
                format!("gcloud {command} remove-iam-policy-binding {id} --member={} --role={}", p.member, p.role),
            )
        }
        BoundOn::Project(project) => (
            format!("on project {project}"),
            format!(
                "gcloud projects remove-iam-policy-binding {project} --member={} --role={}",
                p.member, p.role
            ),
        ),
        BoundOn::Service(service) => {
            let (project, region, name) = match service.split('/').collect::<Vec<_>>().as_slice() {
                [p, r, n] => (p.to_string(), r.to_string(), n.to_string()),
                _ => (String::new(), String::new(), service.clone()),
            };
            (
                "on the service".to_string(),
                format!(
                    "gcloud run services remove-iam-policy-binding {name} --region={region} --project={project} --member={} --role={}",
                    p.member, p.role
                ),
            )
        }
    };
    let what = match services {
        [] => "this service".to_string(),
        list => format!("{} ({})", crate::text::count(list.len(), "governed service"), list.join(", ")),
    };
    (
        format!("{who}{maybe} can invoke {what} through {} {on}, which carries {INVOKE_PERMISSION}, yet no policy grants it", p.role),
        format!("remove the binding ({fix}) or bind a role without {INVOKE_PERMISSION} (e.g. roles/run.viewer), and grant invocation through a policy"),
    )
}

/// Per governed service, the live invoker/IAP-accessor members no policy grants (drift): the
/// ones attribution is read for.
pub fn drifted_members(
    desired: &crate::policy::model::Desired,
    live: &LiveState,
    now: std::time::SystemTime,
) -> std::collections::BTreeMap<ServiceId, Vec<(String, String)>> {
    let mut out = std::collections::BTreeMap::new();
    for (id, wanted) in crate::plan::engine::desired_grants(desired, live, now) {
        let Some(svc) = live.services.get(&id) else { continue };
        let mut drifted = Vec::new();
        for (policy, role) in [(&svc.iam, RUN_INVOKER), (&svc.iap_iam, crate::iam::IAP_ACCESSOR)] {
            for b in policy.iter().flat_map(|p| &p.bindings).filter(|b| b.role == role) {
                for m in &b.members {
                    let granted = wanted.grants.iter().any(|g| g.member == *m && g.role == role);
                    if !granted {
                        drifted.push((role.to_string(), m.as_str().to_string()));
                    }
                }
            }
        }
        if !drifted.is_empty() {
            out.insert(id, drifted);
        }
    }
    out
}

/// `— added by X (via) YYYY-MM-DD HH:MM UTC`, or `— added by: unknown (why)`.
pub fn attribution_suffix(found: &Result<crate::model::Attribution, String>) -> String {
    suffix(found, "added by")
}

/// `— changed by X (via) YYYY-MM-DD HH:MM UTC`, or `— changed by: unknown (why)` (a setting).
pub fn setting_suffix(found: &Result<crate::model::Attribution, String>) -> String {
    suffix(found, "changed by")
}

fn suffix(found: &Result<crate::model::Attribution, String>, verb: &str) -> String {
    match found {
        Ok(a) => {
            let at = a.at.get(..16).unwrap_or(&a.at).replace('T', " ");
            format!("— {verb} {} ({}) {at} UTC", a.by, a.via)
        }
        Err(why) => format!("— {verb}: unknown ({why})"),
    }
}

/// The text section of `explain` on who added the drifted members `keep` selects.
pub fn render_attribution(
    found: &crate::model::Attributions,
    keep: impl Fn(&ServiceId, &str) -> bool,
) -> String {
    let mut s = String::from("\nWho added the members no policy grants (Admin Activity audit log):\n");
    let mut any = false;
    for ((id, role, member), f) in found.iter().filter(|((id, _, m), _)| keep(id, m)) {
        any = true;
        s.push_str(&format!("  {id}  {member}  {role}  {}\n", attribution_suffix(f)));
    }
    if !any {
        s.push_str("  (none)\n");
    }
    s
}
