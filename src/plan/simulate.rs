//! A plan applied in memory: `apply_to(&Plan, &LiveState) -> LiveState`.
//!
//! This is the model of what apply does to the world (member-level read-modify-write, settings
//! patched field by field), used by property tests ("applying a plan converges") and by the demo.
//! It ignores enforcement modes on purpose: it shows the state the plan describes. It writes
//! policies at version 3, like apply, and gives every written resource a new etag.

use crate::iam::{Binding, Condition, Policy};
use crate::model::LiveState;
use crate::policy::model::Ingress;

use super::model::{Action, MemberChange, Plan, ResourcePlan, SettingChange};

/// Returns `live` with every add, remove and setting change of `plan` applied.
pub fn apply_to(plan: &Plan, live: &LiveState) -> LiveState {
    let mut out = live.clone();
    for sp in &plan.services {
        let Some(svc) = out.services.get_mut(&sp.service_id()) else {
            continue;
        };
        if let (Some(r), Some(p)) = (&sp.iam, svc.iam.as_mut()) {
            apply_resource(r, p);
        }
        if let (Some(r), Some(p)) = (&sp.iap, svc.iap_iam.as_mut()) {
            apply_resource(r, p);
        }
        if !sp.settings.is_empty() {
            for c in &sp.settings {
                apply_setting(c, &mut svc.settings);
            }
            svc.etag = format!("{}+", svc.etag);
        }
    }
    out
}

fn apply_resource(r: &ResourcePlan, policy: &mut Policy) {
    if apply_changes(&r.changes, policy) {
        // Stands in for the new etag the server would give the written policy.
        policy.etag = format!("{}+", policy.etag);
    }
}

/// Applies member-level changes to a policy in place: the one implementation of a plan's IAM
/// edit, used by [`apply_to`] and by the real apply on each freshly read policy. Bindings left
/// empty are dropped; a touched policy is set to version 3 (so no condition is ever lost). The
/// etag is left as it was: a write must carry the etag that was read. Returns whether any add or
/// remove was applied.
pub fn apply_changes(changes: &[MemberChange], policy: &mut Policy) -> bool {
    let mut touched = false;
    for c in changes {
        let cond: Option<Condition> = c.condition.as_deref().map(Condition::from);
        match c.action {
            Action::Keep => {}
            Action::Add => {
                touched = true;
                match policy
                    .bindings
                    .iter_mut()
                    .find(|b| b.role == c.role && b.condition == cond)
                {
                    Some(b) => {
                        b.members.insert(c.member.clone());
                    }
                    None => policy.bindings.push(Binding {
                        role: c.role.to_string(),
                        members: [c.member.clone()].into_iter().collect(),
                        condition: cond,
                    }),
                }
            }
            Action::Remove => {
                touched = true;
                for b in policy
                    .bindings
                    .iter_mut()
                    .filter(|b| b.role == c.role && b.condition == cond)
                {
                    b.members.remove(&c.member);
                }
            }
        }
    }
    if touched {
        policy.bindings.retain(|b| !b.members.is_empty());
        policy.version = 3;
    }
    touched
}

fn apply_setting(c: &SettingChange, s: &mut crate::model::ServiceSettings) {
    match c.field.as_str() {
        "ingress" => {
            if let Some(v) = c.after.as_str() {
                s.ingress = Ingress::from_api_value(v);
            }
        }
        "invokerIamDisabled" => s.invoker_iam_disabled = c.after.as_bool().unwrap_or(false),
        "iapEnabled" => s.iap_enabled = c.after.as_bool().unwrap_or(false),
        "customAudiences" => {
            s.custom_audiences = c
                .after
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
        }
        _ => {}
    }
}
