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
/// `allow_removals` is `--allow-removals N`.
pub fn check_guards(
    plan: &Plan,
    settings: &Settings,
    allow_removals: Option<usize>,
) -> Vec<GuardTrip> {
    let applied = || plan.services.iter().filter(|s| s.is_applicable());
    let removals: usize = applied().map(|s| s.count(Action::Remove)).sum();
    let hint = Some(format!(
        "if these {removals} removals are intended, re-run with --allow-removals {removals}"
    ));
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
        trips.extend(removal_ratio_trip(plan, settings, &hint));
        for s in applied() {
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

/// `maxRemovalRatio`: owned members removed against the owned members as read.
fn removal_ratio_trip(
    plan: &Plan,
    settings: &Settings,
    hint: &Option<String>,
) -> Option<GuardTrip> {
    let applied = || plan.services.iter().filter(|s| s.is_applicable());
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
                    Reason::Unlisted | Reason::Expired | Reason::Deleted | Reason::Blocked
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
        let cond = e
            .condition
            .as_ref()
            .map(|c| format!(" (condition {})", c.title))
            .unwrap_or_default();
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
        let cond = e
            .condition
            .as_ref()
            .map(|c| format!(" (condition {})", c.title))
            .unwrap_or_default();
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
