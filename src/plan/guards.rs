//! Guards: whole-plan checks run before any write (DESIGN §2). Pure functions of the plan, the
//! settings and the operator's one-run override.
//!
//! Only changes apply would carry out count: services in `warn` or `observe` mode are never
//! applied, so they cannot trip a guard.
//!
//! The removal guards (`maxRemovals`, `maxRemovalRatio`, and the empty-directory guard) are all
//! about losing access by accident, so `--allow-removals N` replaces all three for one run: the
//! plan passes when it removes at most N members. The other two guards (a `keep` member removed,
//! a role outside `allowedRoles` granted) describe plans that are wrong rather than large, and
//! have no override: fix the policies or the settings.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use crate::policy::model::Settings;

use super::model::{Action, Plan, Reason, ResourcePlan, ServicePlan};

/// Which guard tripped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GuardKind {
    /// More removals than `guards.maxRemovals`.
    MaxRemovals,
    /// More removals than `guards.maxRemovalRatio` × owned members.
    MaxRemovalRatio,
    /// A governed binding would lose every member of the principal mapping because an Auth0 role
    /// came back empty, or would lose members of it while an Auth0 group of a feeding role came
    /// back empty.
    EmptyDirectory,
    /// A member matching `Settings.keep` would be removed.
    KeepMemberRemoved,
    /// A role outside `allowedRoles` would be granted.
    RoleNotAllowed,
}

impl GuardKind {
    /// The name used in messages and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            GuardKind::MaxRemovals => "maxRemovals",
            GuardKind::MaxRemovalRatio => "maxRemovalRatio",
            GuardKind::EmptyDirectory => "emptyDirectory",
            GuardKind::KeepMemberRemoved => "keep",
            GuardKind::RoleNotAllowed => "allowedRoles",
        }
    }
}

/// One tripped guard, with the numbers that tripped it and how to override (if possible).
#[derive(Debug, Clone, PartialEq)]
pub struct GuardTrip {
    pub guard: GuardKind,
    /// What happened, with the numbers.
    pub message: String,
    /// The flag that overrides this guard for one run, when there is one.
    pub override_hint: Option<String>,
}

impl fmt::Display for GuardTrip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "guard {} tripped: {}", self.guard.as_str(), self.message)?;
        if let Some(h) = &self.override_hint {
            write!(f, "; {h}")?;
        }
        Ok(())
    }
}

/// Checks the plan against every guard; an empty result means it may be applied.
/// `allow_removals` is `--allow-removals N`. The removals of a guard unit whose allowance is
/// in `guards.allowOnce` are not counted by the removal guards (see [`hold_tripped_units`]).
pub fn check_guards(
    plan: &Plan,
    settings: &Settings,
    allow_removals: Option<usize>,
) -> Vec<GuardTrip> {
    let allowed = allowed_services(plan, settings);
    let applied = || plan.services.iter().filter(|s| s.is_applicable());
    let counted = || applied().filter(|s| !allowed.contains(s.id.as_str()));
    let removals: usize = counted().map(|s| s.count(Action::Remove)).sum();
    let mut hint = format!(
        "if these {removals} removals are intended, re-run with --allow-removals {removals}"
    );
    let units = allowances(plan, &allowed);
    if !units.is_empty() {
        hint.push_str(&format!(
            ", or let exactly these removals through once after review (also in `runwarden run` and scheduled jobs) by adding to the Settings `guards.allowOnce`: {}",
            units.iter().map(|u| format!("\"{u}\"")).collect::<Vec<_>>().join(", ")
        ));
    }
    let hint = Some(hint);
    let mut trips = Vec::new();
    let (limit, what) = match allow_removals {
        Some(n) => (n, format!("--allow-removals {n}")),
        None => (
            settings.guards.max_removals,
            format!("maxRemovals {}", settings.guards.max_removals),
        ),
    };
    if removals > limit {
        trips.push(GuardTrip {
            guard: GuardKind::MaxRemovals,
            message: format!("the plan removes {removals} members, more than {what}"),
            override_hint: hint.clone(),
        });
    }
    // `--allow-removals` overrides the ratio and directory guards too.
    if allow_removals.is_none() {
        trips.extend(removal_ratio_trip(plan, settings, &allowed, &hint));
        for s in counted() {
            for r in s.iam.iter().chain(s.iap.iter()) {
                directory_trips(s, r, &hint, &mut trips);
            }
        }
    }
    for s in applied() {
        change_trips(s, settings, &mut trips);
    }
    trips.sort_by(|a, b| (a.guard, &a.message).cmp(&(b.guard, &b.message)));
    trips
}

/// A guard unit the loop holds back: the services governed by one set of policies (the
/// service's `policies`, joined with `+`). A trip holds the changes of its unit; the other
/// units keep converging.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldUnit {
    /// The unit's policies, joined with `+` (e.g. `billing` or `billing+platform`).
    pub unit: String,
    /// The unit's services with changes to apply, `project/region/name`.
    pub services: Vec<String>,
    /// Why it is held.
    pub trips: Vec<GuardTrip>,
}

/// The units of a plan whose changes the guards refuse, for the loop: each unit is checked
/// alone; then the units that pass are checked together, and if together they still trip
/// (say, `maxRemovals` over many small units), every unit is held, as a whole plan would be.
/// The changes applied in a pass therefore always pass the guards as a whole.
pub fn hold_tripped_units(
    plan: &Plan,
    settings: &Settings,
    allow_removals: Option<usize>,
) -> Vec<HeldUnit> {
    if check_guards(plan, settings, allow_removals).is_empty() {
        return Vec::new();
    }
    let mut held = Vec::new();
    let mut passing: Vec<&ServicePlan> = Vec::new();
    for (unit, services) in units(plan) {
        let sub = Plan {
            services: services.iter().map(|s| (*s).clone()).collect(),
            findings: Vec::new(),
            ..plan_header(plan)
        };
        let trips = check_guards(&sub, settings, allow_removals);
        if trips.is_empty() {
            passing.extend(services);
        } else {
            held.push(HeldUnit { unit, services: services.iter().map(|s| s.id.clone()).collect(), trips });
        }
    }
    let rest = Plan {
        services: passing.iter().map(|s| (*s).clone()).collect(),
        findings: Vec::new(),
        ..plan_header(plan)
    };
    let together = check_guards(&rest, settings, allow_removals);
    if !together.is_empty() {
        for (unit, services) in units(&rest) {
            held.push(HeldUnit { unit, services: services.iter().map(|s| s.id.clone()).collect(), trips: together.clone() });
        }
    }
    held.sort_by(|a, b| a.unit.cmp(&b.unit));
    held
}

/// The plan without its services and findings (they are what the caller fills in).
fn plan_header(plan: &Plan) -> Plan {
    Plan {
        format_version: plan.format_version,
        planned_at: plan.planned_at.clone(),
        compared_with_base: plan.compared_with_base,
        policy_digest: plan.policy_digest.clone(),
        services: Vec::new(),
        findings: Vec::new(),
        summary: plan.summary.clone(),
    }
}

/// The applicable services with changes, by guard unit.
fn units(plan: &Plan) -> BTreeMap<String, Vec<&ServicePlan>> {
    let mut units: BTreeMap<String, Vec<&ServicePlan>> = BTreeMap::new();
    for s in plan.services.iter().filter(|s| s.is_applicable() && s.has_changes()) {
        units.entry(s.policies.join("+")).or_default().push(s);
    }
    units
}

/// `UNIT@DIGEST`: the first 16 hex digits of the SHA-256 of exactly the unit's removals
/// (service, role, condition, member, one per line, sorted), so an allowance lets through
/// the removals a reviewer saw and nothing else.
fn allowance(unit: &str, services: &[&ServicePlan]) -> Option<String> {
    use aws_lc_rs::digest::{Context, SHA256};
    let mut lines: Vec<String> = Vec::new();
    for s in services {
        for c in s.member_changes().filter(|c| c.action == Action::Remove) {
            let cond = c.condition.as_ref().map(|c| c.title.as_str()).unwrap_or("");
            lines.push(format!("{}\t{}\t{cond}\t{}\n", s.id, c.role, c.member));
        }
    }
    if lines.is_empty() {
        return None;
    }
    lines.sort();
    let mut ctx = Context::new(&SHA256);
    for l in &lines {
        ctx.update(l.as_bytes());
    }
    let hex: String = ctx.finish().as_ref().iter().take(8).map(|b| format!("{b:02x}")).collect();
    Some(format!("{unit}@{hex}"))
}

/// The services of the units whose allowance is in `guards.allowOnce`.
fn allowed_services<'p>(plan: &'p Plan, settings: &Settings) -> HashSet<&'p str> {
    let mut out = HashSet::new();
    if settings.guards.allow_once.is_empty() {
        return out;
    }
    for (unit, services) in units(plan) {
        if allowance(&unit, &services).is_some_and(|a| settings.guards.allow_once.contains(&a)) {
            out.extend(services.iter().map(|s| s.id.as_str()));
        }
    }
    out
}

/// The allowances of the units with removals that are not allowed yet.
fn allowances(plan: &Plan, allowed: &HashSet<&str>) -> Vec<String> {
    units(plan)
        .into_iter()
        .filter(|(_, services)| !services.iter().any(|s| allowed.contains(s.id.as_str())))
        .filter_map(|(unit, services)| allowance(&unit, &services))
        .collect()
}

/// `maxRemovalRatio`: owned members removed against the owned members as read.
fn removal_ratio_trip(
    plan: &Plan,
    settings: &Settings,
    allowed: &HashSet<&str>,
    hint: &Option<String>,
) -> Option<GuardTrip> {
    let applied = || {
        plan.services
            .iter()
            .filter(|s| s.is_applicable() && !allowed.contains(s.id.as_str()))
    };
    let owned = plan.summary.owned_members;
    let g = &settings.guards;
    // The ratio is about losing owned access by accident (a directory read gone
    // wrong, a policy deleted): it counts removals of owned members against the owned
    // members as read. Removing `allUsers` where a policy says `public: false`, or
    // foreign members with `foreignMembers: remove`, are declared decisions that
    // `maxRemovals` still bounds.
    let owned_removals: usize = applied()
        .flat_map(|s| s.member_changes())
        .filter(|c| {
            c.action == Action::Remove
                && matches!(
                    c.reason,
                    Reason::Unlisted | Reason::Revoked | Reason::Expired | Reason::Deleted | Reason::Blocked
                )
        })
        .count();
    let limit = g.max_removal_ratio * owned as f64;
    if owned_removals > 0 && owned_removals as f64 > limit {
        return Some(GuardTrip {
            guard: GuardKind::MaxRemovalRatio,
            message: format!(
                "the plan removes {owned_removals} of {owned} owned members ({:.1}%), more than maxRemovalRatio {} ({limit:.1} members)",
                100.0 * owned_removals as f64 / owned.max(1) as f64,
                g.max_removal_ratio
            ),
            override_hint: hint.clone(),
        });
    }
    None
}

/// The directory guard: bindings that lose the principal mapping's members while a feeding
/// Auth0 role or group came back empty.
fn directory_trips(
    s: &ServicePlan,
    r: &ResourcePlan,
    hint: &Option<String>,
    trips: &mut Vec<GuardTrip>,
) {
    for e in &r.emptied_bindings {
        let cond = condition_note(e.condition.as_ref());
        trips.push(GuardTrip {
            guard: GuardKind::EmptyDirectory,
            message: format!(
                "{} on {}{cond} would lose all {} member{} of the principal mapping because Auth0 role {} came back empty",
                e.role,
                s.id,
                e.members_before,
                if e.members_before == 1 { "" } else { "s" },
                e.empty_roles.iter().map(|r| format!("`{r}`")).collect::<Vec<_>>().join(", ")
            ),
            override_hint: hint.clone(),
        });
    }
    for e in &r.emptied_groups {
        let cond = condition_note(e.condition.as_ref());
        trips.push(GuardTrip {
            guard: GuardKind::EmptyDirectory,
            message: format!(
                "{} on {}{cond} would lose {} member{} of the principal mapping while Auth0 group {} came back empty; check the group in Auth0",
                e.role,
                s.id,
                e.members_removed,
                if e.members_removed == 1 { "" } else { "s" },
                e.groups
                    .iter()
                    .map(|g| format!("`{}` (of role `{}`)", g.group, g.auth0_role))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            override_hint: hint.clone(),
        });
    }
}

/// Per member change: removals of `keep` members, grants of roles outside `allowedRoles`.
fn change_trips(s: &ServicePlan, settings: &Settings, trips: &mut Vec<GuardTrip>) {
    for c in s.member_changes() {
        if c.action == Action::Remove {
            if let Some(p) = settings.keep.iter().find(|p| p.matches(c.member.as_str())) {
                trips.push(GuardTrip {
                    guard: GuardKind::KeepMemberRemoved,
                    message: format!(
                        "the plan removes {} from {} on {}, but it matches keep pattern `{}`",
                        c.member, c.role, s.id, p.pattern
                    ),
                    override_hint: None,
                });
            }
        }
        if c.action == Action::Add && !settings.allowed_roles.iter().any(|r| r == &c.role) {
            trips.push(GuardTrip {
                guard: GuardKind::RoleNotAllowed,
                message: format!(
                    "the plan grants {} to {} on {}, a role outside allowedRoles ({})",
                    c.role,
                    c.member,
                    s.id,
                    settings.allowed_roles.join(", ")
                ),
                override_hint: None,
            });
        }
    }
}

/// ` (condition TITLE)` for a conditional binding, nothing for the unconditional one.
fn condition_note(condition: Option<&super::model::PlanCondition>) -> String {
    condition.map(|c| format!(" (condition {})", c.title)).unwrap_or_default()
}
