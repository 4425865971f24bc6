//! The diff engine: `plan(&Desired, &LiveState, &PlanOptions) -> Plan`, pure and deterministic.
//!
//! # Expected flow
//! 1. Every policy's invokers are resolved once into IAM members (principal mapping) together
//!    with the Auth0 roles that fed them ("feeds"), so that an unknown or empty role can be told
//!    apart from "nobody should have access".
//! 2. Policies are matched to live services (by name or label selector; `region: "*"` = every
//!    region in scope). Several policies on one service are merged: invokers united, exposure
//!    merged field by field, the most cautious mode wins (`observe` > `warn` > `enforce`).
//! 3. Per governed (IAM resource, role, condition) the desired members are compared with the
//!    live ones; every difference becomes a member-level change with its reason.
//! 4. Exposure becomes settings changes, each naming its `updateMask` path.
//!
//! # Guarantees
//! * No I/O, no clock reads (the clock is `PlanOptions::now`), no panics on live data: anything
//!   odd about live data becomes a [`Finding`] and the service part it concerns is not planned.
//! * Roles runwarden does not govern, and conditional bindings it did not generate, are never
//!   touched. `Settings.keep` members are never removed.
//! * With IAP, every invoker (person or machine) gets `roles/iap.httpsResourceAccessor` on the IAP
//!   resource and nobody but the IAP service agent needs `roles/run.invoker`: with Cloud Run's
//!   built-in IAP every request passes IAP first, so a direct invoker grant would be dead weight
//!   that silently turns into a bypass the day IAP is switched off outside runwarden. Owned
//!   invoker grants left over from before IAP are therefore removed as `unlisted`.
//!
//! # Rules worth knowing
//! * **Modes.** The most cautious mode of the governing policies wins (`observe` > `warn` >
//!   `enforce`): a service shared by an enforcing and an observing policy is only observed, so
//!   adopting a service in observe mode can never be overridden by a broader selector.
//! * **Ownership.** Owned = every member any policy produces (for any service), members the
//!   mapping would produce (the pool prefix, or `user:` in an allowed e-mail domain),
//!   `Settings.owned` patterns, and every member of a conditional binding whose title starts with
//!   [`MANAGED_CONDITION_PREFIX`]. In a governed binding, owned members nobody grants are removed
//!   (`unlisted`); others are `foreign`, kept and listed (or removed with
//!   `foreignMembers: remove`). `allUsers`/`allAuthenticatedUsers` are removed where
//!   `public: false` (`public`), `deleted:` principals always (`deleted`), members of managed
//!   bindings whose expiry has passed always (`expired`).
//! * **Protected.** A removal of a `Settings.keep` member becomes a `keep` with reason
//!   `protected`, naming the pattern. So does the removal of a mapping member from a binding fed
//!   by an Auth0 role that does not exist (or whose members were not read): an unknown role must
//!   never revoke access (fail safe). An *empty* role does revoke, but the plan records the
//!   binding it empties and the directory guard refuses it.
//! * **Settings.** `ingress` (live `INGRESS_TRAFFIC_UNSPECIFIED` = no active revision = not
//!   drift), `invokerIamDisabled` (must be false unless `public: true`), `customAudiences`
//!   (compared as sets, written sorted), `iapEnabled`; each change carries its `updateMask` path.
//! * **Time-boxed grants** become a binding with condition title `runwarden-expires-<RFC 3339>`
//!   and expression `request.time < timestamp("<RFC 3339>")`; policies are always written at
//!   version 3.
//!
//! # Caveats
//! * A conflict between policies that match one service through selectors can only be seen
//!   against live: it becomes an `exposure-conflict` finding, the conflicting fields are left
//!   unmanaged for that service and its settings are not changed; a conflict on `iap` decides
//!   where every grant goes, so then nothing at all is planned for the service.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use crate::iam::{
    Condition, IAP_ACCESSOR, MAX_POLICY_GROUPS_AND_DOMAINS, MAX_POLICY_MEMBERS, Member, MemberKind, Policy, RUN_INVOKER,
};
use crate::model::{LAST_APPLIED_ANNOTATION, LastApplied, LiveService, LiveState, ServiceId};
use crate::policy::model::{
    AccessPolicy, Desired, ForeignMembers, Ingress, Mode, Principal, PrincipalMapping, RegionRef,
    ServiceRef, ServiceTarget, Settings, Source,
};

use super::model::*;
use super::rules::{
    FeedStatus, Ownership, RoleMapping, is_mapping_member, managed_expiry_text, map_role,
    outside_domains_note,
};
pub use super::rules::{
    MANAGED_CONDITION_PREFIX, expiry_condition, is_managed_condition, managed_expiry,
};
use super::time::format_rfc3339;

/// What a plan is computed with besides desired and live state.
#[derive(Debug, Clone, Copy)]
pub struct PlanOptions<'a> {
    /// The clock: expiries are judged against it (passed in, never read inside the plan).
    pub now: SystemTime,
    /// The base branch's desired state (`--base-policies`): changes it would make too are marked
    /// `drift`, the others `declared`.
    pub base: Option<&'a Desired>,
}

impl PlanOptions<'_> {
    /// Options with this clock and no base.
    pub fn at(now: SystemTime) -> PlanOptions<'static> {
        PlanOptions { now, base: None }
    }
}

/// The IAP service agent of a project.
pub fn iap_service_agent(project_number: u64) -> Member {
    Member::parse(&format!(
        "serviceAccount:service-{project_number}@gcp-sa-iap.iam.gserviceaccount.com"
    ))
    .expect("the IAP service agent is a valid member")
}

/// Computes the plan. Pure and deterministic; see the module documentation.
pub fn plan(desired: &Desired, live: &LiveState, opts: &PlanOptions<'_>) -> Plan {
    let mut plan = plan_core(desired, live, opts.now);
    if let Some(base) = opts.base {
        let base_plan = plan_core(base, live, opts.now);
        mark_origins(&mut plan, &base_plan);
        plan.compared_with_base = true;
    }
    plan
}

/// `file:line` of a source.
pub(crate) fn loc(s: &Source) -> String {
    format!("{}:{}", s.file.display(), s.line)
}

/// A binding of a governed role: (role, condition), borrowed.
type BindingKey<'k> = (&'k str, Option<&'k Condition>);
/// Desired members per binding, each with the `file:line` of the lines that grant it.
type DesiredMap<'k> = BTreeMap<BindingKey<'k>, BTreeMap<&'k Member, BTreeSet<&'k str>>>;
/// The Auth0 roles feeding each binding.
type FeedMap<'k> = BTreeMap<BindingKey<'k>, Vec<&'k Feed>>;

/// One member a policy grants.
struct Grant {
    member: Member,
    condition: Option<Condition>,
    /// `file:line` of the invoker line.
    loc: String,
    /// Index of the invoker line in its policy's `invokers` (for [`desired_grants`]).
    invoker: usize,
}

/// An Auth0 role named by an invoker, and how it resolved.
struct Feed {
    role: String,
    condition: Option<Condition>,
    status: FeedStatus,
    /// Groups assigned to the role that came back empty.
    empty_groups: Vec<String>,
}

struct ResolvedPolicy<'a> {
    policy: &'a AccessPolicy,
    grants: Vec<Grant>,
    feeds: Vec<Feed>,
}

struct Planner<'a> {
    settings: &'a Settings,
    live: &'a LiveState,
    now: SystemTime,
    findings: BTreeSet<Finding>,
    /// Which members runwarden owns (set once every policy is resolved).
    ownership: Ownership<'a>,
    /// Owned member entries counted by `diff_resource` for the service being planned.
    owned_scratch: usize,
    /// Owned member entries in the governed bindings of `enforce` services (the base of
    /// `maxRemovalRatio`).
    owned_applicable: usize,
    /// The `user:` members of blocked Auth0 users (the `users` mapping): removed where owned,
    /// with reason `blocked`.
    blocked: HashSet<Member>,
}

/// Whether the record on the service (`current`, as read; `old`, decoded when it reads) lists
/// other members than `next`: none and `next` lists someone, one that does not read, or another
/// set of members (revisions aside: a member keeps the one that first granted it).
fn record_differs(current: Option<&str>, old: Option<&LastApplied>, next: &LastApplied) -> bool {
    match (current, old) {
        (None, _) => !next.members().is_empty(),
        (Some(_), None) => true,
        (Some(_), Some(old)) => old.members() != next.members(),
    }
}

/// A catalogue finding (severity and fix from `plan::catalogue`); `evidence` says what was seen.
fn finding(service: Option<&ServiceId>, code: &str, evidence: String, sources: Vec<String>) -> Finding {
    Finding::new(service.map(|s| s.to_string()), code, evidence, sources)
}

/// The `user:` members of the Auth0 users the directory says are blocked (with the `users`
/// mapping; a `workforcePool` mapping does not read users).
fn blocked_members(settings: &Settings, live: &LiveState) -> HashSet<Member> {
    if !matches!(settings.principals, PrincipalMapping::Users { .. }) {
        return HashSet::new();
    }
    live.directory
        .roles
        .values()
        .flat_map(|r| &r.members)
        .filter(|u| u.blocked)
        .filter_map(|u| u.email.as_deref())
        .filter_map(|e| Member::parse(&format!("user:{}", e.to_ascii_lowercase())).ok())
        .collect()
}

/// A planner over `desired` and `live`, with every policy resolved to the members it grants.
fn prepare<'a>(
    desired: &'a Desired,
    live: &'a LiveState,
    now: SystemTime,
) -> (Planner<'a>, Vec<ResolvedPolicy<'a>>) {
    let mut p = Planner {
        settings: &desired.settings,
        live,
        now,
        findings: BTreeSet::new(),
        ownership: Ownership::new(&desired.settings, HashSet::new()),
        owned_scratch: 0,
        owned_applicable: 0,
        blocked: blocked_members(&desired.settings, live),
    };
    let resolved = p.resolve_policies(&desired.policies);
    let policy_members = resolved
        .iter()
        .flat_map(|rp| &rp.grants)
        .map(|g| g.member.clone())
        .collect();
    p.ownership = Ownership::new(&desired.settings, policy_members);
    (p, resolved)
}

fn plan_core(desired: &Desired, live: &LiveState, now: SystemTime) -> Plan {
    let (mut p, resolved) = prepare(desired, live, now);
    let governed = p.match_services(&desired.policies);

    let mut services = Vec::new();
    let mut governed_ok = 0;
    for (id, govs) in &governed {
        let svc = &live.services[id];
        match p.plan_service(svc, govs, &resolved) {
            Planned::Skipped => {}
            Planned::InSync => governed_ok += 1,
            Planned::Entries(sp) => {
                governed_ok += 1;
                services.push(sp);
            }
        }
    }

    if desired.settings.audits.require_coverage {
        let scope = &desired.settings.scope;
        for (id, _) in live.services.iter() {
            let in_scope = scope.projects.contains(&id.project)
                && (scope.regions.is_empty() || scope.regions.contains(&id.region));
            if in_scope && !governed.contains_key(id) {
                p.findings.insert(finding(
                    Some(id),
                    "ungoverned-service",
                    "in scope but governed by no policy (requireCoverage is on)".to_string(),
                    vec![loc(&desired.settings.source)],
                ));
            }
        }
    }

    let owned_members = p.owned_applicable;
    let findings: Vec<Finding> = p.findings.into_iter().collect();
    let summary = Summary::tally(&services, governed_ok, owned_members, findings.len());
    Plan {
        format_version: FORMAT_VERSION,
        planned_at: format_rfc3339(now),
        compared_with_base: false,
        policy_digest: None,
        services,
        findings,
        summary,
    }
}

impl<'a> Planner<'a> {
    /// How `role` resolves under the principal mapping (cached per pass; an invalid role name
    /// is reported once).
    fn resolve_role(&mut self, role: &str, cache: &mut HashMap<String, RoleMapping>) -> FeedStatus {
        if let Some(r) = cache.get(role) {
            return r.status;
        }
        let res = map_role(&self.settings.principals, &self.live.directory, role);
        if let Some(e) = &res.invalid_name {
            self.findings.insert(finding(None, "invalid-role-name", format!("Auth0 role `{role}` cannot be named as a workforce pool group ({e}); it grants nothing"), vec![]));
        }
        let status = res.status;
        cache.insert(role.to_string(), res);
        status
    }

    /// Every policy resolved to the members it grants and the Auth0 roles feeding it.
    fn resolve_policies<'p>(&mut self, policies: &'p [AccessPolicy]) -> Vec<ResolvedPolicy<'p>> {
        let mut cache: HashMap<String, RoleMapping> = HashMap::new();
        if matches!(self.settings.principals, PrincipalMapping::Users { .. })
            && !self.live.directory.members_resolved
            && policies.iter().any(|p| {
                p.invokers
                    .iter()
                    .any(|i| matches!(i.principal, Principal::Auth0Role(_)))
            })
        {
            self.findings.insert(finding(None, "directory-unresolved", "Auth0 role members were not read, so no Auth0 role grants anything in this plan and no member is removed on account of a role".into(), vec![]));
        }
        let mut out = Vec::new();
        for policy in policies {
            let mut rp = ResolvedPolicy {
                policy,
                grants: Vec::new(),
                feeds: Vec::new(),
            };
            for (invoker, inv) in policy.invokers.iter().enumerate() {
                self.resolve_invoker(&mut rp, invoker, inv, &mut cache);
            }
            out.push(rp);
        }
        self.report_role_members(policies, &cache);
        out
    }

    /// Resolves one invoker line into grants (and, for an Auth0 role, a feed).
    fn resolve_invoker(
        &mut self,
        rp: &mut ResolvedPolicy<'_>,
        invoker: usize,
        inv: &crate::policy::model::Invoker,
        cache: &mut HashMap<String, RoleMapping>,
    ) {
        let policy = rp.policy;
        let condition = match inv.expires {
            Some(t) if t <= self.now => {
                self.findings.insert(finding(None, "expired-grant", format!("policy {}: the grant at {} expired at {}; it grants nothing any more", policy.name, loc(&inv.source), format_rfc3339(t)),
                    vec![loc(&inv.source)]));
                return;
            }
            Some(t) => Some(expiry_condition(t)),
            None => None,
        };
        let grant = |member: &Member, condition: Option<Condition>| Grant {
            member: member.clone(),
            condition,
            loc: loc(&inv.source),
            invoker,
        };
        match &inv.principal {
            Principal::Member(m) => rp.grants.push(grant(m, condition)),
            Principal::Machine(name) => {
                match self.settings.machines.iter().find(|m| &m.name == name) {
                    Some(machine) => rp.grants.push(grant(&machine.service_account, condition)),
                    None => {
                        self.findings.insert(finding(None, "unknown-machine", format!("policy {} names machine `{name}`, which Settings.machines does not define; it grants nothing", policy.name),
                        vec![loc(&inv.source)]));
                    }
                }
            }
            Principal::Auth0Role(role) => {
                let status = self.resolve_role(role, cache);
                match status {
                    FeedStatus::Unknown if self.live.directory.roles.contains_key(role) => {}
                    FeedStatus::Unknown => {
                        self.findings.insert(finding(None, "unknown-role", format!("policy {} names Auth0 role `{role}`, which does not exist in the tenant; it grants nothing, and no member is removed on its account", policy.name),
                            vec![loc(&inv.source)]));
                    }
                    FeedStatus::Empty => {
                        self.findings.insert(finding(None, "empty-role", format!("policy {} names Auth0 role `{role}`, which has no usable members; it grants nothing", policy.name),
                            vec![loc(&inv.source)]));
                    }
                    FeedStatus::Resolved => {}
                }
                for m in &cache[role].members {
                    rp.grants.push(grant(m, condition.clone()));
                }
                rp.feeds.push(Feed {
                    role: role.clone(),
                    condition,
                    status,
                    empty_groups: cache[role].empty_groups.clone(),
                });
            }
        }
    }

    /// Skipped members and empty groups, reported once per role, pointing at every line that
    /// names it.
    fn report_role_members(
        &mut self,
        policies: &[AccessPolicy],
        cache: &HashMap<String, RoleMapping>,
    ) {
        let mut role_lines: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        for policy in policies {
            for inv in &policy.invokers {
                if let Principal::Auth0Role(role) = &inv.principal {
                    role_lines
                        .entry(role.as_str())
                        .or_default()
                        .insert(loc(&inv.source));
                }
            }
        }
        for (role, res) in cache {
            let sources: Vec<String> = role_lines
                .get(role.as_str())
                .into_iter()
                .flatten()
                .cloned()
                .collect();
            for message in &res.skipped {
                self.findings.insert(finding(
                    None,
                    "skipped-member",
                    message.clone(),
                    sources.clone(),
                ));
            }
            for group in &res.empty_groups {
                self.findings.insert(finding(
                    None,
                    "empty-group",
                    format!("Auth0 group `{group}`, assigned to role `{role}`, has no members; it grants nothing, and removals its members may have held are refused by the directory guard"),
                    sources.clone(),
                ));
            }
        }
    }

    /// Governed services → (policy index, the reference that matched), sorted by service id.
    fn match_services<'p>(
        &mut self,
        policies: &'p [AccessPolicy],
    ) -> BTreeMap<ServiceId, Vec<(usize, &'p ServiceRef)>> {
        // Indexes so that matching is proportional to the services matched, not to
        // policies × services: by project, and by (project, label key, label value).
        let live = self.live;
        let mut by_project: HashMap<&str, Vec<&LiveService>> = HashMap::new();
        let mut by_label: HashMap<(&str, &str, &str), Vec<&LiveService>> = HashMap::new();
        for svc in live.services.values() {
            by_project
                .entry(svc.id.project.as_str())
                .or_default()
                .push(svc);
            for (k, v) in &svc.labels {
                by_label
                    .entry((svc.id.project.as_str(), k.as_str(), v.as_str()))
                    .or_default()
                    .push(svc);
            }
        }
        let scope_regions = &self.settings.scope.regions;
        let mut governed: BTreeMap<ServiceId, Vec<(usize, &ServiceRef)>> = BTreeMap::new();
        for (pi, policy) in policies.iter().enumerate() {
            for sref in &policy.services {
                let regions: Vec<&str> = match &sref.region {
                    RegionRef::Named(n) => vec![n.as_str()],
                    RegionRef::Any => scope_regions.iter().map(String::as_str).collect(),
                };
                let candidates: Vec<&LiveService> = match &sref.target {
                    ServiceTarget::Named(n) => regions
                        .iter()
                        .filter_map(|r| live.services.get(&ServiceId::new(&sref.project, r, n)))
                        .collect(),
                    ServiceTarget::Selector(sel) => {
                        let project = sref.project.as_str();
                        let smallest = sel
                            .iter()
                            .map(|(k, v)| {
                                by_label
                                    .get(&(project, k.as_str(), v.as_str()))
                                    .map(Vec::as_slice)
                                    .unwrap_or(&[])
                            })
                            .min_by_key(|l| l.len());
                        let pool = match smallest {
                            Some(list) => list,
                            None => by_project.get(project).map(Vec::as_slice).unwrap_or(&[]),
                        };
                        pool.iter()
                            .copied()
                            .filter(|svc| regions.contains(&svc.id.region.as_str()))
                            .filter(|svc| sel.iter().all(|(k, v)| svc.labels.get(k) == Some(v)))
                            .collect()
                    }
                };
                let mut matched = 0;
                for svc in candidates {
                    {
                        matched += 1;
                        let list = governed.entry(svc.id.clone()).or_default();
                        if !list.iter().any(|(i, _)| *i == pi) {
                            list.push((pi, sref));
                        }
                    }
                }
                // In a shard, a reference to another shard's services is that shard's business.
                if matched == 0 && !matches_other_shard(live, sref, &regions) {
                    self.findings.insert(unmatched(policy, sref));
                }
            }
        }
        governed
    }

    /// The policies governing one service and how they merge: where [`Self::plan_service`]
    /// and [`desired_grants`] both start.
    fn governing<'r, 'p>(
        govs: &[(usize, &ServiceRef)],
        resolved: &'r [ResolvedPolicy<'p>],
    ) -> Governing<'r, 'p> {
        let mut policy_idx: Vec<usize> = govs.iter().map(|(i, _)| *i).collect();
        policy_idx.sort_unstable();
        policy_idx.dedup();
        let pols: Vec<&ResolvedPolicy> = policy_idx.iter().map(|i| &resolved[*i]).collect();
        let mut ref_sources: Vec<String> = govs.iter().map(|(_, r)| loc(&r.source)).collect();
        ref_sources.sort();
        ref_sources.dedup();
        let mode = pols
            .iter()
            .map(|p| p.policy.mode)
            .max()
            .unwrap_or(Mode::Enforce);
        let mut policies: Vec<String> = pols.iter().map(|p| p.policy.name.clone()).collect();
        policies.sort();
        policies.dedup();
        Governing {
            pols,
            ref_sources,
            mode,
            policies,
        }
    }

    /// The merged exposure of the governing policies (conflicts become findings).
    fn exposure(&mut self, id: &ServiceId, g: &Governing<'_, '_>) -> Exposed {
        let exp = self.merge_exposure(id, &g.pols);
        let sources = |f: &Option<(bool, Vec<String>)>| -> Vec<String> {
            f.as_ref()
                .map(|(_, s)| s.clone())
                .unwrap_or_else(|| g.ref_sources.clone())
        };
        Exposed {
            iap: exp.iap.as_ref().is_some_and(|(v, _)| *v),
            public: exp.public.as_ref().map(|(v, _)| *v),
            public_sources: sources(&exp.public),
            iap_sources: sources(&exp.iap),
            merged: exp,
        }
    }

    /// Plans one governed service.
    fn plan_service(
        &mut self,
        svc: &LiveService,
        govs: &[(usize, &ServiceRef)],
        resolved: &[ResolvedPolicy<'_>],
    ) -> Planned {
        let id = &svc.id;
        let g = Self::governing(govs, resolved);
        let Some(iam) = self.readable_iam(svc, &g.ref_sources) else {
            return Planned::Skipped;
        };
        let x = self.exposure(id, &g);
        if x.merged.iap_conflict {
            return Planned::Skipped;
        }
        let all_users = Member::parse("allUsers").expect("allUsers is a member");
        let mut iap_agent = None;
        let mut d = self.desired_maps(id, &g, &x);
        if x.public == Some(true) {
            d.grant_invoker(&all_users, &x.public_sources);
        }
        // With IAP, grants move from the service to the IAP resource. Planning the service half
        // without the IAP half would revoke invoker access without granting the accessor role,
        // so without the project number or the IAP policy nothing is planned for the service.
        let mut iap_target = None;
        if x.iap {
            let Some((resource, policy, agent)) = self.iap_target(svc, &g.ref_sources) else {
                return Planned::Skipped;
            };
            iap_target = Some((resource, policy));
            iap_agent = Some(agent);
        }
        if let Some(agent) = &iap_agent {
            d.grant_invoker(agent, &x.iap_sources);
        }

        self.owned_scratch = 0;
        let record = self.live_record(svc, &g.ref_sources);
        let ctx = ServiceCtx {
            id,
            public: x.public,
            ref_sources: Sources::from(g.ref_sources.as_slice()),
            public_sources: Sources::from(x.public_sources.as_slice()),
            record: record.as_ref(),
        };
        let iam_plan = self.diff_resource(
            &ctx,
            id.resource_name(),
            iam,
            RUN_INVOKER,
            &d.run,
            &d.run_feeds,
        );
        let iap_plan = iap_target.and_then(|(resource, policy)| {
            self.diff_resource(&ctx, resource, policy, IAP_ACCESSOR, &d.iap, &d.iap_feeds)
        });
        if g.mode == Mode::Enforce {
            self.owned_applicable += self.owned_scratch;
        }
        let settings = if x.merged.conflict {
            Vec::new()
        } else {
            self.settings_changes(svc, &x.merged, &g.ref_sources)
        };
        let (next, record_members) = self.record_to_write(svc, record.as_ref(), &d, iap_agent.as_ref(), g.mode);
        if iam_plan.is_none() && iap_plan.is_none() && settings.is_empty() && record_members.is_none() {
            return Planned::InSync;
        }
        Planned::Entries(ServicePlan {
            id: id.to_string(),
            project: id.project.clone(),
            region: id.region.clone(),
            name: id.name.clone(),
            mode: g.mode.into(),
            base_mode: None,
            policies: g.policies,
            etag: svc.etag.clone(),
            iam: iam_plan,
            iap: iap_plan,
            settings,
            record: Some(next),
            record_members,
        })
    }

    /// The service's last-applied record, or `None` when it has none or it does not read (then
    /// a `last-applied-unreadable` finding, and every member it named is judged without it:
    /// foreign unless owned otherwise, the safe side).
    fn live_record(&mut self, svc: &LiveService, ref_sources: &[String]) -> Option<LastApplied> {
        let text = svc.annotations.get(LAST_APPLIED_ANNOTATION)?;
        match LastApplied::decode(text) {
            Ok(r) => Some(r),
            Err(e) => {
                self.findings.insert(finding(Some(&svc.id), "last-applied-unreadable", format!("the annotation {LAST_APPLIED_ANNOTATION} of {} does not read ({e}); members it names are judged as if runwarden had not granted them (kept as foreign)", svc.id),
                    ref_sources.to_vec()));
                None
            }
        }
    }

    /// The record apply writes, and, in `enforce` mode when it differs from the one on the
    /// service, the number of members it lists: the record is written whenever it differs,
    /// changes or not, so a service adopted in sync gets one too and deleting a line revokes.
    fn record_to_write(
        &self,
        svc: &LiveService,
        old: Option<&LastApplied>,
        d: &DesiredMaps<'_>,
        iap_agent: Option<&Member>,
        mode: Mode,
    ) -> (RecordWrite, Option<usize>) {
        let next = self.next_record(svc, old, d, iap_agent);
        let differs = record_differs(next.current.as_deref(), old, &next.record);
        let members = (mode == Mode::Enforce && differs).then(|| next.record.members().len());
        (next, members)
    }

    /// The record apply writes with this service's changes: every member the policies grant
    /// now in an unconditional binding, except members of the principal mapping (owned anyway)
    /// and the IAP service agent; a member already recorded keeps the revision that granted it.
    fn next_record(
        &self,
        svc: &LiveService,
        old: Option<&LastApplied>,
        d: &DesiredMaps<'_>,
        iap_agent: Option<&Member>,
    ) -> RecordWrite {
        let mut record = LastApplied::default();
        for (role, map) in [(RUN_INVOKER, &d.run), (IAP_ACCESSOR, &d.iap)] {
            let Some(members) = map.get(&(role, None)) else { continue };
            for m in members.keys() {
                if Some(*m) == iap_agent || is_mapping_member(&self.settings.principals, m) {
                    continue;
                }
                let rev = old
                    .and_then(|r| r.granted(role, m.as_str()))
                    .flatten()
                    .map(str::to_string);
                record.insert(role, m.as_str(), rev);
            }
        }
        let mut others = svc.annotations.clone();
        let current = others.remove(LAST_APPLIED_ANNOTATION);
        RecordWrite { record, others, current }
    }

    /// The service's IAM policy, or `None` (with a `read-failed` finding) when it was not read.
    fn readable_iam<'s>(
        &mut self,
        svc: &'s LiveService,
        ref_sources: &[String],
    ) -> Option<&'s Policy> {
        let id = &svc.id;
        let message = match (&svc.read_error, &svc.iam) {
            (None, Some(iam)) => return Some(iam),
            (Some(err), _) => {
                format!("reading {id} failed ({err}); nothing is planned for it in this pass")
            }
            (None, None) => format!(
                "the IAM policy of {id} was not read; nothing is planned for it in this pass"
            ),
        };
        self.findings.insert(finding(
            Some(id),
            "read-failed",
            message,
            ref_sources.to_vec(),
        ));
        None
    }

    /// The IAP resource of an IAP-fronted service, its policy and the project's IAP service
    /// agent, or `None` (with a finding)
    /// when the project number or the IAP policy is missing.
    fn iap_target<'s>(
        &mut self,
        svc: &'s LiveService,
        ref_sources: &[String],
    ) -> Option<(String, &'s Policy, Member)> {
        let id = &svc.id;
        let Some(n) = self.live.project_numbers.get(&id.project).copied() else {
            self.findings.insert(finding(Some(id), "project-number-unknown", format!("the project number of {} is unknown, so the IAP resource and service agent of {id} cannot be named; nothing is planned for it", id.project),
                ref_sources.to_vec()));
            return None;
        };
        let Some(policy) = &svc.iap_iam else {
            self.findings.insert(finding(
                Some(id),
                "read-failed",
                format!(
                    "the IAP policy of {id} was not read; nothing is planned for it in this pass"
                ),
                ref_sources.to_vec(),
            ));
            return None;
        };
        Some((id.iap_resource_name(n), policy, iap_service_agent(n)))
    }

    /// The members the policies grant on the service, per resource and binding, and the Auth0
    /// roles feeding each binding. Borrowed from the resolved policies: a large estate plans
    /// without copying member strings per service.
    fn desired_maps<'r>(
        &mut self,
        id: &ServiceId,
        g: &Governing<'r, '_>,
        x: &Exposed,
    ) -> DesiredMaps<'r> {
        let mut d = DesiredMaps::default();
        let role = if x.iap { IAP_ACCESSOR } else { RUN_INVOKER };
        let mut has_role_feed = false;
        for rp in &g.pols {
            for gr in &rp.grants {
                if !grant_allowed(&gr.member, x.public) {
                    self.findings.insert(finding(Some(id), "public-member-not-allowed", format!("policy {} grants {} but the service is not `public: true`; the grant is ignored", rp.policy.name, gr.member),
                        vec![gr.loc.clone()]));
                    continue;
                }
                let target = if x.iap { &mut d.iap } else { &mut d.run };
                target
                    .entry((role, gr.condition.as_ref()))
                    .or_default()
                    .entry(&gr.member)
                    .or_default()
                    .insert(gr.loc.as_str());
            }
            for f in &rp.feeds {
                has_role_feed = true;
                let target = if x.iap {
                    &mut d.iap_feeds
                } else {
                    &mut d.run_feeds
                };
                target
                    .entry((role, f.condition.as_ref()))
                    .or_default()
                    .push(f);
            }
        }
        let workforce = matches!(
            self.settings.principals,
            PrincipalMapping::WorkforcePool { .. }
        );
        if has_role_feed && !x.iap && workforce {
            self.findings.insert(finding(Some(id), "workforce-without-iap", format!("{id} grants Auth0 roles through the workforce pool without IAP: workforce identities cannot mint the ID tokens Cloud Run's invoker check needs, so these grants are unusable"),
                g.ref_sources.clone()));
        }
        d
    }

    fn merge_exposure(&mut self, id: &ServiceId, pols: &[&ResolvedPolicy<'_>]) -> MergedExposure {
        let mut out = MergedExposure::default();
        let mut conflicts: Vec<String> = Vec::new();
        fn merge<T: Clone + PartialEq>(
            slot: &mut Option<(T, Vec<String>)>,
            value: &T,
            src: String,
            conflict: &mut bool,
        ) {
            match slot {
                None => *slot = Some((value.clone(), vec![src])),
                Some((v, s)) if v == value => s.push(src),
                Some(_) => *conflict = true,
            }
        }
        let (mut c_ing, mut c_pub, mut c_iap, mut c_aud) = (false, false, false, false);
        for rp in pols {
            let e = &rp.policy.exposure;
            let src = e
                .source
                .as_ref()
                .map(loc)
                .unwrap_or_else(|| loc(&rp.policy.source));
            // Each field's own line, so a plan change points at what causes it.
            let at = |field: &Option<crate::policy::model::Source>| field.as_ref().map_or_else(|| src.clone(), loc);
            let fields = &e.field_sources;
            if let Some(v) = e.ingress {
                merge(&mut out.ingress, &v, at(&fields.ingress), &mut c_ing);
            }
            if let Some(v) = e.public {
                merge(&mut out.public, &v, at(&fields.public), &mut c_pub);
            }
            if let Some(v) = e.iap {
                merge(&mut out.iap, &v, at(&fields.iap), &mut c_iap);
            }
            if let Some(v) = &e.audiences {
                let set: BTreeSet<String> = v.iter().cloned().collect();
                merge(&mut out.audiences, &set, at(&fields.audiences), &mut c_aud);
            }
        }
        for (flag, name) in [
            (c_ing, "ingress"),
            (c_pub, "public"),
            (c_iap, "iap"),
            (c_aud, "audiences"),
        ] {
            if flag {
                conflicts.push(name.to_string());
            }
        }
        if !conflicts.is_empty() {
            let names: Vec<&str> = pols.iter().map(|p| p.policy.name.as_str()).collect();
            let mut sources: Vec<String> = pols
                .iter()
                .map(|p| {
                    p.policy
                        .exposure
                        .source
                        .as_ref()
                        .map(loc)
                        .unwrap_or_else(|| loc(&p.policy.source))
                })
                .collect();
            sources.sort();
            sources.dedup();
            let consequence = if c_iap {
                "nothing is planned for the service"
            } else {
                "its settings are not changed and the conflicting fields are left unmanaged"
            };
            self.findings.insert(finding(Some(id), "exposure-conflict", format!("policies {} govern {id} with conflicting exposure ({}); {consequence} until the policies agree", names.join(", "), conflicts.join(", ")),
                sources));
            out.conflict = true;
            out.iap_conflict = c_iap;
            if c_ing {
                out.ingress = None;
            }
            if c_pub {
                out.public = None;
            }
            if c_aud {
                out.audiences = None;
            }
        }
        out
    }

    fn settings_changes(
        &self,
        svc: &LiveService,
        exp: &MergedExposure,
        ref_sources: &[String],
    ) -> Vec<SettingChange> {
        let live = &svc.settings;
        let mut out = Vec::new();
        let mut push = |field: &str,
                        before: serde_json::Value,
                        after: serde_json::Value,
                        sources: Vec<String>| {
            out.push(SettingChange {
                field: field.into(),
                update_mask_path: field.into(),
                before,
                after,
                reason: Reason::Setting,
                origin: None,
                sources,
                added_by: None,
            });
        };
        if let (Some((want, src)), Some(have)) = (&exp.ingress, live.ingress) {
            // Live `None` is INGRESS_TRAFFIC_UNSPECIFIED (no active revision): not drift.
            if *want != have {
                push(
                    "ingress",
                    have.api_value().into(),
                    want.api_value().into(),
                    src.clone(),
                );
            }
        }
        let public = exp.public.as_ref().map(|(v, _)| *v);
        if public != Some(true) && live.invoker_iam_disabled {
            let src = exp
                .public
                .as_ref()
                .map(|(_, s)| s.clone())
                .unwrap_or_else(|| ref_sources.to_vec());
            push("invokerIamDisabled", true.into(), false.into(), src);
        }
        if let Some((want, src)) = &exp.audiences {
            let have: BTreeSet<String> = live.custom_audiences.iter().cloned().collect();
            if &have != want {
                let to_json = |s: &BTreeSet<String>| {
                    serde_json::Value::from(s.iter().cloned().collect::<Vec<_>>())
                };
                push(
                    "customAudiences",
                    to_json(&have),
                    to_json(want),
                    src.clone(),
                );
            }
        }
        if let Some((want, src)) = &exp.iap {
            if *want != live.iap_enabled {
                push(
                    "iapEnabled",
                    live.iap_enabled.into(),
                    (*want).into(),
                    src.clone(),
                );
            }
        }
        out
    }

    /// Diffs the governed bindings of `role` on one resource (the service, or its IAP
    /// resource) against what the policies want.
    #[allow(clippy::too_many_arguments)]
    fn diff_resource<'x>(
        &mut self,
        ctx: &ServiceCtx<'_>,
        resource: String,
        live: &'x Policy,
        role: &str,
        desired: &DesiredMap<'x>,
        feeds: &FeedMap<'x>,
    ) -> Option<ResourcePlan> {
        let live_map = live_governed(live, role);
        let mut keys: BTreeSet<BindingKey<'x>> = desired.keys().copied().collect();
        keys.extend(live_map.keys().copied());
        let empty_d = BTreeMap::new();
        let empty_l = BTreeSet::new();
        let mut out = ResourceDiff::default();
        for key in keys {
            let view = BindingView {
                key,
                condition: key.1.map(PlanCondition::from),
                desired: desired.get(&key).unwrap_or(&empty_d),
                live: live_map.get(&key).unwrap_or(&empty_l),
                feeds: feeds.get(&key).map(Vec::as_slice).unwrap_or(&[]),
            };
            self.diff_binding(ctx, &view, &mut out);
        }
        let after = (live.member_count() + out.adds).saturating_sub(out.removes);
        if after > MAX_POLICY_MEMBERS {
            self.findings.insert(finding(Some(ctx.id), "policy-too-large", format!("the IAM policy of {resource} would hold {after} members after this plan, more than Google's limit of {MAX_POLICY_MEMBERS}; setIamPolicy will fail"),
                ctx.ref_sources.to_vec()));
        }
        let groups = |action| out.changes.iter().filter(|c| c.action == action && c.member.is_group_or_domain()).count();
        let groups_after = (live.group_and_domain_count() + groups(Action::Add)).saturating_sub(groups(Action::Remove));
        if groups(Action::Add) > 0 && groups_after > MAX_POLICY_GROUPS_AND_DOMAINS {
            self.findings.insert(finding(Some(ctx.id), "policy-too-many-groups", format!("the IAM policy of {resource} would hold {groups_after} groups and domains after this plan, more than Google's limit of {MAX_POLICY_GROUPS_AND_DOMAINS}; setIamPolicy will fail"),
                ctx.ref_sources.to_vec()));
        }
        if out.changes.is_empty() && out.emptied.is_empty() {
            return None;
        }
        out.changes.sort_by(|a, b| {
            (&a.role, &a.condition, &a.member).cmp(&(&b.role, &b.condition, &b.member))
        });
        Some(ResourcePlan {
            resource,
            etag: live.etag.clone(),
            policy_version: 3,
            emptied_bindings: out.emptied,
            emptied_groups: out.emptied_groups,
            changes: out.changes,
        })
    }

    /// Diffs one binding: adds what is missing, decides for every live member nobody grants
    /// ([`Self::live_member_outcome`]), and records what the directory guard must ask about.
    fn diff_binding(
        &mut self,
        ctx: &ServiceCtx<'_>,
        b: &BindingView<'_, '_>,
        out: &mut ResourceDiff,
    ) {
        let role = super::model::governed_role(b.key.0);
        let change = |action, member: &Member, reason, sources: Sources, note: Option<String>| {
            MemberChange {
                action,
                role: role.clone(),
                condition: b.condition.clone().map(Box::new),
                member: member.clone(),
                reason,
                origin: None,
                sources,
                note,
                added_by: None,
            }
        };
        // Members granted by the same lines (all members of one Auth0 role) share one list.
        let mut shared: HashMap<&BTreeSet<&str>, Sources> = HashMap::new();
        for (m, srcs) in b.desired {
            if !b.live.contains(m) {
                let sources = shared
                    .entry(srcs)
                    .or_insert_with(|| srcs.iter().map(|s| s.to_string()).collect())
                    .clone();
                let note = outside_domains_note(&self.settings.principals, m);
                out.changes
                    .push(change(Action::Add, m, Reason::Missing, sources, note));
                out.adds += 1;
            }
        }
        let unknown = b.roles_with(FeedStatus::Unknown);
        let mut removed_here: HashSet<&Member> = HashSet::new();
        let mut unlisted_mapping = 0usize;
        for m in b.live {
            // Only unconditional grants are recorded (generated conditions are owned anyway).
            let recorded = match (b.key.1, ctx.record) {
                (None, Some(r)) => r.granted(b.key.0, m.as_str()),
                _ => None,
            };
            let owned = b.key.1.is_some() || recorded.is_some() || self.ownership.is_owned(m);
            if owned {
                self.owned_scratch += 1;
            }
            if b.desired.contains_key(*m) {
                continue;
            }
            let (action, reason, sources, note) =
                self.live_member_outcome(ctx, b.key.1, m, (owned, recorded), &unknown);
            if action == Action::Remove {
                removed_here.insert(*m);
                out.removes += 1;
                if reason == Reason::Unlisted && is_mapping_member(&self.settings.principals, m) {
                    unlisted_mapping += 1;
                }
            }
            out.changes.push(change(action, m, reason, sources, note));
        }
        if let Some(e) = self.emptied_binding(b, &removed_here) {
            out.emptied.push(e);
        } else if unlisted_mapping > 0 {
            out.emptied_groups
                .extend(emptied_group(b, unlisted_mapping));
        }
    }

    /// What happens to live member `m` of a governed binding (under `cond`) that no policy
    /// grants: removed (deleted, expired, public, unlisted, or foreign with `foreignMembers:
    /// remove`) or kept (foreign), and a removal turned into a `protected` keep by a `keep`
    /// pattern or an unresolved Auth0 role feeding the binding (fail safe).
    fn live_member_outcome(
        &self,
        ctx: &ServiceCtx<'_>,
        cond: Option<&Condition>,
        m: &Member,
        (owned, recorded): (bool, Option<Option<&str>>),
        unknown: &BTreeSet<&str>,
    ) -> (Action, Reason, Sources, Option<String>) {
        let expired = cond.and_then(managed_expiry).is_some_and(|t| t <= self.now);
        let (reason, remove, sources, note) = if m.kind() == MemberKind::Deleted {
            (Reason::Deleted, true, ctx.ref_sources.clone(), Some("the principal was deleted; the binding grants nothing and would silently apply to nobody".to_string()))
        } else if expired {
            (
                Reason::Expired,
                true,
                ctx.ref_sources.clone(),
                Some(format!(
                    "the time-boxed grant ended at {}",
                    cond.and_then(managed_expiry_text).unwrap_or("")
                )),
            )
        } else if m.is_public() && ctx.public == Some(false) {
            (Reason::Public, true, ctx.public_sources.clone(), None)
        } else if owned && self.blocked.contains(m) {
            let note = "the Auth0 user is blocked: a blocked user is never granted".to_string();
            (Reason::Blocked, true, ctx.ref_sources.clone(), Some(note))
        } else if let Some(rev) = recorded {
            let note = match rev {
                Some(rev) => format!("runwarden granted it at revision {rev}; no policy grants it now"),
                None => "runwarden granted it; no policy grants it now".to_string(),
            };
            (Reason::Revoked, true, ctx.ref_sources.clone(), Some(note))
        } else if owned {
            (Reason::Unlisted, true, ctx.ref_sources.clone(), None)
        } else {
            let remove = self.settings.foreign_members == ForeignMembers::Remove;
            let sources: Sources = if remove {
                Arc::from([loc(&self.settings.source)])
            } else {
                Sources::default()
            };
            (Reason::Foreign, remove, sources, None)
        };
        if !remove {
            return (Action::Keep, reason, sources, note);
        }
        if let Some(p) = self.settings.keep.iter().find(|p| p.matches(m.as_str())) {
            let note = format!(
                "would be removed ({}), but matches keep pattern `{}`",
                reason.as_str(),
                p.pattern
            );
            return (
                Action::Keep,
                Reason::Protected,
                Arc::from([loc(&p.source)]),
                Some(note),
            );
        }
        if reason == Reason::Unlisted
            && !unknown.is_empty()
            && is_mapping_member(&self.settings.principals, m)
        {
            let note = format!(
                "not removed: Auth0 role {} could not be resolved (fail safe)",
                unknown
                    .iter()
                    .map(|r| format!("`{r}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            return (Action::Keep, Reason::Protected, sources, Some(note));
        }
        (Action::Remove, reason, sources, note)
    }

    /// The directory guard's question: does this binding lose every member of the principal
    /// mapping (the people an Auth0 role stands for) while a role feeding it came back empty?
    /// Foreign or protected members that stay do not make that loss smaller.
    fn emptied_binding(
        &self,
        b: &BindingView<'_, '_>,
        removed_here: &HashSet<&Member>,
    ) -> Option<EmptiedBinding> {
        let mapping = |m: &Member| is_mapping_member(&self.settings.principals, m);
        let mapping_before = b.live.iter().filter(|m| mapping(m)).count();
        let mapping_kept = b
            .live
            .iter()
            .filter(|m| mapping(m) && !removed_here.contains(**m))
            .count();
        let mapping_added = b
            .desired
            .keys()
            .filter(|m| !b.live.contains(**m) && mapping(m))
            .count();
        let empty_roles = b.roles_with(FeedStatus::Empty);
        (mapping_before > 0 && mapping_kept + mapping_added == 0 && !empty_roles.is_empty()).then(
            || EmptiedBinding {
                role: b.key.0.to_string(),
                condition: b.condition.clone(),
                members_before: mapping_before,
                empty_roles: empty_roles.iter().map(|s| s.to_string()).collect(),
            },
        )
    }
}

/// Whether `sref` matches a service of another shard (listed, not kept; see `LiveState`).
fn matches_other_shard(live: &LiveState, sref: &ServiceRef, regions: &[&str]) -> bool {
    live.other_shards.iter().any(|(id, labels)| {
        id.project == sref.project
            && regions.contains(&id.region.as_str())
            && match &sref.target {
                ServiceTarget::Named(n) => &id.name == n,
                ServiceTarget::Selector(sel) => sel.iter().all(|(k, v)| labels.get(k) == Some(v)),
            }
    })
}

/// The finding for a service reference of `policy` that matches no live service.
fn unmatched(policy: &AccessPolicy, sref: &ServiceRef) -> Finding {
    let what = match &sref.target {
        ServiceTarget::Named(n) => format!("service `{n}`"),
        ServiceTarget::Selector(sel) => format!(
            "selector {{{}}}",
            sel.iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let region = match &sref.region {
        RegionRef::Named(r) => r.clone(),
        RegionRef::Any => "*".into(),
    };
    finding(
        None,
        "unmatched-service",
        format!(
            "policy {}: {what} in {}/{region} matches no live service",
            policy.name, sref.project
        ),
        vec![loc(&sref.source)],
    )
}

/// The live governed bindings of `role`: the unconditional one and those runwarden generated.
fn live_governed<'x>(
    live: &'x Policy,
    role: &str,
) -> BTreeMap<BindingKey<'x>, BTreeSet<&'x Member>> {
    let mut out: BTreeMap<BindingKey<'x>, BTreeSet<&'x Member>> = BTreeMap::new();
    for b in &live.bindings {
        if b.role != role
            || b.condition
                .as_ref()
                .is_some_and(|c| !is_managed_condition(c))
        {
            continue;
        }
        out.entry((b.role.as_str(), b.condition.as_ref()))
            .or_default()
            .extend(b.members.iter());
    }
    out
}

/// The same question as [`Planner::emptied_binding`] for a group: a group assigned to a feeding
/// role came back empty while the binding, as read, still holds mapping members the plan would
/// now remove. Those could be the group's members (a directory read gone wrong looks exactly
/// like leavers), so the directory guard asks first.
fn emptied_group(b: &BindingView<'_, '_>, unlisted_mapping: usize) -> Option<EmptiedGroup> {
    let mut groups: Vec<EmptyGroup> = b
        .feeds
        .iter()
        .flat_map(|f| {
            f.empty_groups.iter().map(|g| EmptyGroup {
                auth0_role: f.role.clone(),
                group: g.clone(),
            })
        })
        .collect();
    groups.sort();
    groups.dedup();
    (!groups.is_empty()).then(|| EmptiedGroup {
        role: b.key.0.to_string(),
        condition: b.condition.clone(),
        members_removed: unlisted_mapping,
        groups,
    })
}

/// One governed binding of a resource: what the policies want and what live holds.
struct BindingView<'b, 'x> {
    key: BindingKey<'x>,
    condition: Option<PlanCondition>,
    desired: &'b BTreeMap<&'x Member, BTreeSet<&'x str>>,
    live: &'b BTreeSet<&'x Member>,
    /// The Auth0 roles feeding the binding.
    feeds: &'b [&'x Feed],
}

impl BindingView<'_, '_> {
    /// The feeding Auth0 roles that resolved with `status`.
    fn roles_with(&self, status: FeedStatus) -> BTreeSet<&str> {
        self.feeds
            .iter()
            .filter(|f| f.status == status)
            .map(|f| f.role.as_str())
            .collect()
    }
}

/// What diffing the bindings of one resource produced.
#[derive(Default)]
struct ResourceDiff {
    changes: Vec<MemberChange>,
    emptied: Vec<EmptiedBinding>,
    emptied_groups: Vec<EmptiedGroup>,
    adds: usize,
    removes: usize,
}

/// The outcome of planning one governed service. (Returned once per service and moved
/// straight into the plan, so the large variant is not worth a box.)
#[allow(clippy::large_enum_variant)]
enum Planned {
    /// It could not be planned (a finding says why).
    Skipped,
    /// Planned; nothing to change or list.
    InSync,
    /// Planned, with changes or kept members to list.
    Entries(ServicePlan),
}

struct ServiceCtx<'a> {
    id: &'a ServiceId,
    public: Option<bool>,
    ref_sources: Sources,
    public_sources: Sources,
    /// The service's last-applied record, when it has one that reads.
    record: Option<&'a LastApplied>,
}

/// The policies governing one service.
struct Governing<'r, 'p> {
    pols: Vec<&'r ResolvedPolicy<'p>>,
    /// `file:line` of the service references that matched, sorted.
    ref_sources: Vec<String>,
    /// The most cautious mode of the governing policies.
    mode: Mode,
    /// Names of the governing policies, sorted.
    policies: Vec<String>,
}

/// The merged exposure of one service, with the lines that decide `public` and `iap`.
struct Exposed {
    merged: MergedExposure,
    iap: bool,
    public: Option<bool>,
    public_sources: Vec<String>,
    iap_sources: Vec<String>,
}

/// What the policies grant on one service, per resource.
#[derive(Default)]
struct DesiredMaps<'k> {
    run: DesiredMap<'k>,
    iap: DesiredMap<'k>,
    run_feeds: FeedMap<'k>,
    iap_feeds: FeedMap<'k>,
}

impl<'k> DesiredMaps<'k> {
    /// Adds `member` as an unconditional `roles/run.invoker` of the service, for `sources`.
    fn grant_invoker(&mut self, member: &'k Member, sources: &'k [String]) {
        self.run
            .entry((RUN_INVOKER, None))
            .or_default()
            .entry(member)
            .or_default()
            .extend(sources.iter().map(String::as_str));
    }
}

/// Whether a policy's grant of `member` may stand: `allUsers`/`allAuthenticatedUsers` only
/// where the service is `public: true`.
fn grant_allowed(member: &Member, public: Option<bool>) -> bool {
    !member.is_public() || public == Some(true)
}

#[derive(Default)]
struct MergedExposure {
    ingress: Option<(Ingress, Vec<String>)>,
    public: Option<(bool, Vec<String>)>,
    iap: Option<(bool, Vec<String>)>,
    audiences: Option<(BTreeSet<String>, Vec<String>)>,
    conflict: bool,
    iap_conflict: bool,
}

/// Marks each add/remove/setting change `drift` when the base plan has the same change, else
/// `declared`.
fn mark_origins(plan: &mut Plan, base: &Plan) {
    let mut member_keys = HashSet::new();
    let mut setting_keys = HashSet::new();
    let (no_members, no_settings) = (HashSet::new(), HashSet::new());
    let base_modes: HashMap<&str, PlanMode> =
        base.services.iter().map(|s| (s.id.as_str(), s.mode)).collect();
    for s in &base.services {
        for (kind, r) in [("iam", &s.iam), ("iap", &s.iap)] {
            for c in r
                .iter()
                .flat_map(|r| &r.changes)
                .filter(|c| c.action != Action::Keep)
            {
                member_keys.insert((
                    s.id.clone(),
                    kind,
                    c.action,
                    c.role.clone(),
                    c.condition.clone(),
                    c.member.clone(),
                ));
            }
        }
        for c in &s.settings {
            setting_keys.insert((s.id.clone(), c.field.clone(), c.after.to_string()));
        }
    }
    for s in &mut plan.services {
        let id = s.id.clone();
        // A mode the pull request changes (observe → enforce) is its decision: what it unlocks
        // is declared, even where the base branch lists the same changes as drift.
        s.base_mode = base_modes.get(id.as_str()).copied().filter(|m| *m != s.mode);
        let changed_mode = s.base_mode.is_some();
        let member_keys = if changed_mode { &no_members } else { &member_keys };
        let setting_keys = if changed_mode { &no_settings } else { &setting_keys };
        for (kind, r) in [("iam", &mut s.iam), ("iap", &mut s.iap)] {
            for c in r.iter_mut().flat_map(|r| r.changes.iter_mut()) {
                if c.action == Action::Keep {
                    continue;
                }
                let key = (
                    id.clone(),
                    kind,
                    c.action,
                    c.role.clone(),
                    c.condition.clone(),
                    c.member.clone(),
                );
                c.origin = Some(if member_keys.contains(&key) {
                    Origin::Drift
                } else {
                    Origin::Declared
                });
            }
        }
        for c in &mut s.settings {
            let key = (id.clone(), c.field.clone(), c.after.to_string());
            c.origin = Some(if setting_keys.contains(&key) {
                Origin::Drift
            } else {
                Origin::Declared
            });
        }
    }
}

/// Re-plans one service from a fresh read of it. Apply calls this after a `409 ABORTED`, so the
/// retry writes what the rules say about the state as it is now, not as it was when the pass
/// began. The rules are those of [`plan`]; the rest of `live` supplies the directory, the
/// project numbers and the other services (for selectors). `None` when the service is no longer
/// governed, could not be planned, or has nothing to plan. For many re-plans in one pass, use a
/// [`Replanner`].
pub fn replan_service(
    desired: &Desired,
    live: &LiveState,
    fresh: &LiveService,
    now: SystemTime,
) -> Option<ServicePlan> {
    Replanner::new(desired, live, now).replan(fresh)
}

/// [`replan_service`] prepared once per pass: every policy's members are resolved and every
/// service matched when it is built, so each re-plan costs one service's diff rather than a new
/// resolution of the whole directory.
pub struct Replanner<'a> {
    planner: std::sync::Mutex<Planner<'a>>,
    resolved: Vec<ResolvedPolicy<'a>>,
    governed: BTreeMap<ServiceId, Vec<(usize, &'a ServiceRef)>>,
}

impl<'a> Replanner<'a> {
    pub fn new(desired: &'a Desired, live: &'a LiveState, now: SystemTime) -> Replanner<'a> {
        let (mut planner, resolved) = prepare(desired, live, now);
        let governed = planner.match_services(&desired.policies);
        Replanner {
            planner: std::sync::Mutex::new(planner),
            resolved,
            governed,
        }
    }

    /// The plan of `fresh` (a newer read of a service in the snapshot), as [`replan_service`].
    pub fn replan(&self, fresh: &LiveService) -> Option<ServicePlan> {
        let govs = self.governed.get(&fresh.id)?;
        let mut planner = self.planner.lock().unwrap_or_else(|e| e.into_inner());
        match planner.plan_service(fresh, govs, &self.resolved) {
            Planned::Entries(sp) => Some(sp),
            Planned::Skipped | Planned::InSync => None,
        }
    }
}

/// Why the policies want a member on a governed binding (see [`desired_grants`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantBasis {
    /// An `invokers` entry of a policy (for an Auth0 role: one of the members it maps to).
    Invoker {
        /// The policy's name.
        policy: String,
        /// The invoker line, with its source.
        invoker: crate::policy::model::Invoker,
    },
    /// `public: true`: `allUsers` may invoke (`file:line` of the exposure blocks that say so).
    Public { sources: Vec<String> },
    /// With `iap: true` the IAP service agent needs `roles/run.invoker` to forward requests.
    IapServiceAgent { sources: Vec<String> },
}

/// One member the policies want on one governed binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredGrant {
    /// [`RUN_INVOKER`] (on the service) or [`IAP_ACCESSOR`] (on the IAP resource).
    pub role: &'static str,
    /// The generated expiry condition of a time-boxed grant.
    pub condition: Option<Condition>,
    pub member: Member,
    pub basis: GrantBasis,
}

/// What the policies want for one governed service, exactly as [`plan`] computes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GovernedGrants {
    /// Names of the governing policies, sorted.
    pub policies: Vec<String>,
    /// The most cautious mode of the governing policies.
    pub mode: Mode,
    /// Whether the merged exposure puts IAP in front (grants then go to the IAP resource).
    pub iap: bool,
    /// The merged `public` setting, when managed.
    pub public: Option<bool>,
    /// The policies disagree about `iap`: the plan plans nothing, and `grants` is empty.
    pub iap_conflict: bool,
    pub grants: Vec<DesiredGrant>,
}

/// Which members runwarden owns under `desired`, exactly as [`plan`] judges it (every member
/// any policy produces, mapping members, `Settings.owned`). Pure.
pub fn ownership<'a>(desired: &'a Desired, live: &'a LiveState, now: SystemTime) -> Ownership<'a> {
    prepare(desired, live, now).0.ownership
}

/// Per governed live service, the members the policies want and why — the member resolution
/// of [`plan`] (principal mapping, machines, `public`, IAP routing), without the diff. Pure;
/// services whose state could not be read are listed too (what *would* be wanted).
pub fn desired_grants(
    desired: &Desired,
    live: &LiveState,
    now: SystemTime,
) -> BTreeMap<ServiceId, GovernedGrants> {
    let (mut p, resolved) = prepare(desired, live, now);
    let governed = p.match_services(&desired.policies);
    let mut out = BTreeMap::new();
    for (id, govs) in &governed {
        let g = Planner::governing(govs, &resolved);
        let x = p.exposure(id, &g);
        let mut grants = Vec::new();
        if !x.merged.iap_conflict {
            let role = if x.iap { IAP_ACCESSOR } else { RUN_INVOKER };
            for rp in &g.pols {
                for gr in rp
                    .grants
                    .iter()
                    .filter(|gr| grant_allowed(&gr.member, x.public))
                {
                    grants.push(DesiredGrant {
                        role,
                        condition: gr.condition.clone(),
                        member: gr.member.clone(),
                        basis: GrantBasis::Invoker {
                            policy: rp.policy.name.clone(),
                            invoker: rp.policy.invokers[gr.invoker].clone(),
                        },
                    });
                }
            }
            if x.public == Some(true) {
                grants.push(DesiredGrant {
                    role: RUN_INVOKER,
                    condition: None,
                    member: Member::parse("allUsers").expect("allUsers is a member"),
                    basis: GrantBasis::Public {
                        sources: x.public_sources.clone(),
                    },
                });
            }
            if let (true, Some(n)) = (x.iap, live.project_numbers.get(&id.project)) {
                grants.push(DesiredGrant {
                    role: RUN_INVOKER,
                    condition: None,
                    member: iap_service_agent(*n),
                    basis: GrantBasis::IapServiceAgent {
                        sources: x.iap_sources.clone(),
                    },
                });
            }
        }
        out.insert(
            id.clone(),
            GovernedGrants {
                policies: g.policies,
                mode: g.mode,
                iap: x.iap,
                public: x.public,
                iap_conflict: x.merged.iap_conflict,
                grants,
            },
        );
    }
    out
}
