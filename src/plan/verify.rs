//! A saved plan is a claim, not an instruction: `apply PLAN.json` re-derives what it may do.
//!
//! The file could have been edited between `plan --out` and `apply` (by hand, by a compromised
//! CI step, by anyone with write access to an artifact store). So apply loads the current
//! policies (whose digest must equal the one the plan recorded), reads the live state, plans
//! afresh with the same pure engine, and compares the two, service by service:
//!
//! * the saved plan names a setting runwarden does not govern, or is malformed (a service listed
//!   twice, an id that disagrees with its project/region/name): the whole apply is refused;
//! * a resource the saved plan writes has moved since (its etag differs): that service is
//!   **stale** and nothing is written for it (a fresh plan is needed), as before;
//! * the saved changes equal the fresh ones: the **fresh** service plan is what is applied (so
//!   reasons, modes, update-mask paths and the guards' inputs all come from the engine, never
//!   from the file);
//! * they differ although nothing the plan recorded has moved: the plan was edited (or the clock
//!   or directory moved it): the whole apply is refused, naming each difference.
//!
//! Pure: no I/O. [`verify_saved`] is called by `runwarden apply` (`cmd/apply.rs`) with the plan it just computed.

use std::collections::BTreeMap;

use crate::model::{LiveService, LiveState};

use super::model::{Action, MemberChange, Plan, ResourcePlan, ServicePlan, SettingChange, Summary};

/// The settings runwarden governs, each written with the update-mask path of the same name
/// (Cloud Run Admin API v2 `Service` fields `ingress`, `invokerIamDisabled`, `customAudiences`,
/// `iapEnabled`; /work/shared/reference/run-v2 discovery document, `services.patch`). Nothing
/// else is ever sent in a `services.patch`.
pub const GOVERNED_SETTINGS: [&str; 4] = ["ingress", "invokerIamDisabled", "customAudiences", "iapEnabled"];

/// Whether a settings change names a governed field with its own update-mask path.
pub fn is_governed_setting(change: &SettingChange) -> bool {
    GOVERNED_SETTINGS.contains(&change.field.as_str()) && change.update_mask_path == change.field
}

/// What may be applied of a saved plan.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedPlan {
    /// The fresh plan's part for every saved service that still matches: what apply writes.
    pub plan: Plan,
    /// Services whose live state moved since the plan was made: `(service, message)`. Nothing
    /// is written for them.
    pub stale: Vec<(String, String)>,
}

/// The saved plan is not what the current policies produce: nothing may be applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "the saved plan is not what the current policies produce for the live state, so nothing was applied:\n{}\nmake a fresh plan with `runwarden plan --out PLAN.json`, review it, and apply that",
    .differences.iter().map(|d| format!("  - {d}")).collect::<Vec<_>>().join("\n")
)]
pub struct PlanMismatch {
    /// One line per difference, naming the service and the change.
    pub differences: Vec<String>,
}

/// At most this many differences are named (the rest are counted).
const MAX_NAMED: usize = 20;

/// Compares `saved` with `fresh` (the plan the current policies give for `live`); see the
/// module documentation.
pub fn verify_saved(saved: &Plan, fresh: &Plan, live: &LiveState) -> Result<VerifiedPlan, PlanMismatch> {
    let fresh_by_id: BTreeMap<&str, &ServicePlan> = fresh.services.iter().map(|s| (s.id.as_str(), s)).collect();
    let mut differences = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut services = Vec::new();
    let mut stale = Vec::new();
    for sp in &saved.services {
        if !seen.insert(sp.id.as_str()) {
            differences.push(format!("{}: listed twice in the saved plan", sp.id));
            continue;
        }
        let named = sp.service_id().to_string();
        if named != sp.id {
            differences.push(format!("{}: the entry's project/region/name say {named}", sp.id));
            continue;
        }
        for c in sp.settings.iter().filter(|c| !is_governed_setting(c)) {
            differences.push(format!(
                "{}: the saved plan changes `{}` (updateMask `{}`), which is not a setting runwarden governs ({})",
                sp.id,
                c.field,
                c.update_mask_path,
                GOVERNED_SETTINGS.join(", ")
            ));
        }
        let Some(svc) = live.services.get(&sp.service_id()) else {
            stale.push((sp.id.clone(), format!("{} is no longer listed; nothing was written for it; run `runwarden plan --out PLAN.json` again", sp.id)));
            continue;
        };
        if let Some(err) = &svc.read_error {
            stale.push((sp.id.clone(), format!("reading {} failed ({err}); nothing was written for it", sp.id)));
            continue;
        }
        let ours = fresh_by_id.get(sp.id.as_str()).copied();
        if let Some(message) = moved(sp, svc, true) {
            stale.push((sp.id.clone(), message));
            continue;
        }
        let diffs = differ(sp, ours);
        if diffs.is_empty() {
            if let Some(ours) = ours {
                services.push(ours.clone());
            }
            continue;
        }
        // Something the plan recorded moved, or the policies now plan a resource the saved
        // plan has no part for: the live state changed since; a fresh plan is needed.
        let unrecorded = ours.is_some_and(|o| (o.iam.is_some() && sp.iam.is_none()) || (o.iap.is_some() && sp.iap.is_none()));
        if let Some(message) = moved(sp, svc, false) {
            stale.push((sp.id.clone(), message));
        } else if unrecorded {
            stale.push((sp.id.clone(), format!(
                "the live state of {} changed since the plan was made ({}); nothing was written for this service; run `runwarden plan --out PLAN.json` again",
                sp.id, diffs[0]
            )));
        } else {
            differences.extend(diffs.into_iter().map(|d| format!("{}: {d}", sp.id)));
        }
    }
    if !differences.is_empty() {
        let total = differences.len();
        if total > MAX_NAMED {
            differences.truncate(MAX_NAMED);
            differences.push(format!("… and {} more", total - MAX_NAMED));
        }
        return Err(PlanMismatch { differences });
    }
    let plan = Plan {
        summary: Summary::tally(&services, fresh.summary.governed_services, fresh.summary.owned_members, fresh.findings.len()),
        services,
        policy_digest: saved.policy_digest.clone(),
        ..fresh.clone_without_services()
    };
    Ok(VerifiedPlan { plan, stale })
}


impl Plan {
    /// The plan's header and findings, without services (cheap to build a restricted plan).
    fn clone_without_services(&self) -> Plan {
        Plan {
            format_version: self.format_version,
            planned_at: self.planned_at.clone(),
            compared_with_base: false,
            policy_digest: self.policy_digest.clone(),
            services: Vec::new(),
            findings: self.findings.clone(),
            summary: self.summary.clone(),
        }
    }
}

/// Why `sp` is stale against `svc`: the first recorded etag that moved. With `written_only`,
/// only resources the saved plan writes count (the service's own etag when it changes settings).
fn moved(sp: &ServicePlan, svc: &LiveService, written_only: bool) -> Option<String> {
    let again = "nothing was written for this service; run `runwarden plan --out PLAN.json` again";
    let writes = |r: &ResourcePlan| r.changes.iter().any(|c| c.action != Action::Keep);
    for (planned, live) in [(&sp.iap, svc.iap_iam.as_ref()), (&sp.iam, svc.iam.as_ref())] {
        let Some(r) = planned else { continue };
        if written_only && !writes(r) {
            continue;
        }
        let now = live.map(|p| p.etag.as_str()).unwrap_or("(not read)");
        if now != r.etag {
            return Some(format!("the IAM policy of {} changed since the plan was made (etag {} → {now}); {again}", r.resource, r.etag));
        }
    }
    if (!written_only || !sp.settings.is_empty()) && sp.etag != svc.etag {
        return Some(format!("the service {} changed since the plan was made (etag {} → {}); {again}", sp.id, sp.etag, svc.etag));
    }
    None
}

/// Every difference between a saved service plan and the fresh one (`None`: the policies plan
/// nothing for the service), each as a sentence.
fn differ(saved: &ServicePlan, fresh: Option<&ServicePlan>) -> Vec<String> {
    let mut out = Vec::new();
    let Some(fresh) = fresh else {
        if saved.has_changes() {
            out.push("the current policies plan no change for this service, the saved plan does".to_string());
        }
        return out;
    };
    if saved.mode != fresh.mode {
        out.push(format!("the saved plan says mode {}, the policies say {}", saved.mode.as_str(), fresh.mode.as_str()));
    }
    if saved.policies != fresh.policies {
        out.push(format!("the saved plan names policies [{}], the policies governing it are [{}]", saved.policies.join(", "), fresh.policies.join(", ")));
    }
    for (what, s, f) in [("IAP policy", &saved.iap, &fresh.iap), ("IAM policy", &saved.iam, &fresh.iam)] {
        let empty = Vec::new();
        let (s_changes, f_changes) = (s.as_ref().map_or(&empty, |r| &r.changes), f.as_ref().map_or(&empty, |r| &r.changes));
        if let (Some(s), Some(f)) = (s, f) {
            if s.resource != f.resource {
                out.push(format!("the saved plan writes the {what} of {}, the service's is {}", s.resource, f.resource));
            }
            if s.policy_version != f.policy_version {
                out.push(format!("the saved plan writes the {what} at version {}, runwarden writes version {}", s.policy_version, f.policy_version));
            }
            if s.emptied_bindings != f.emptied_bindings || s.emptied_groups != f.emptied_groups {
                out.push(format!("the saved plan's emptied bindings of the {what} differ from the policies'"));
            }
        }
        // Both sides are in the canonical order (the engine sorts, and so does reading a saved
        // plan), so equal lists compare pairwise; only a difference pays for the full diff.
        if s_changes.len() == f_changes.len() && s_changes.iter().zip(f_changes).all(|(a, b)| same_change(a, b)) {
            continue;
        }
        let (only_saved, only_fresh) = multiset_diff(s_changes, f_changes, |c| MemberChange { origin: None, ..c.clone() });
        for c in only_saved {
            out.push(format!("the saved plan has `{}` on the {what}, which the current policies do not produce", describe(c)));
        }
        for c in only_fresh {
            out.push(format!("the current policies plan `{}` on the {what}, which the saved plan lacks", describe(c)));
        }
    }
    let (only_saved, only_fresh) = multiset_diff(&saved.settings, &fresh.settings, |c| SettingChange { origin: None, ..c.clone() });
    for c in only_saved {
        out.push(format!("the saved plan sets `{}` (updateMask `{}`) to {}, which the current policies do not", c.field, c.update_mask_path, c.after));
    }
    for c in only_fresh {
        out.push(format!("the current policies set `{}` to {}, which the saved plan does not", c.field, c.after));
    }
    out
}

/// Whether two changes are the same but for `origin` (which only `--base-policies` sets).
fn same_change(a: &MemberChange, b: &MemberChange) -> bool {
    a.action == b.action
        && a.role == b.role
        && a.condition == b.condition
        && a.member == b.member
        && a.reason == b.reason
        && a.sources == b.sources
        && a.note == b.note
}

/// The items of `a` not in `b` and of `b` not in `a`, counting repeats, after `normal`.
fn multiset_diff<'x, T: serde::Serialize>(a: &'x [T], b: &'x [T], normal: impl Fn(&T) -> T) -> (Vec<&'x T>, Vec<&'x T>) {
    let key = |t: &T| serde_json::to_string(&normal(t)).unwrap_or_default();
    let mut counts: BTreeMap<String, isize> = BTreeMap::new();
    for t in a {
        *counts.entry(key(t)).or_default() += 1;
    }
    for t in b {
        *counts.entry(key(t)).or_default() -= 1;
    }
    let mut only_a = Vec::new();
    let mut only_b = Vec::new();
    let mut left = counts;
    for t in a {
        let k = key(t);
        if let Some(n) = left.get_mut(&k) {
            if *n > 0 {
                *n -= 1;
                only_a.push(t);
            }
        }
    }
    for t in b {
        let k = key(t);
        if let Some(n) = left.get_mut(&k) {
            if *n < 0 {
                *n += 1;
                only_b.push(t);
            }
        }
    }
    (only_a, only_b)
}

/// `remove user:x@acme.com roles/run.invoker (foreign)`, with the condition's title if any.
fn describe(c: &MemberChange) -> String {
    let action = match c.action {
        Action::Add => "add",
        Action::Remove => "remove",
        Action::Keep => "keep",
    };
    let cond = c.condition.as_ref().map(|c| format!(" if {}", c.title)).unwrap_or_default();
    format!("{action} {} {}{cond} ({})", c.member, c.role, c.reason.as_str())
}
