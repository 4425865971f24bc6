//! The `Plan` value: what a pass would change, why, and what it was computed from.
//!
//! A plan is also the saved-plan format read by `apply PLAN.json` (`formatVersion: 2`), so every
//! type here is serde-serializable and described by a JSON Schema (`schemas/plan.schema.json`,
//! generated from these types by [`json_schema`]). Changes are member-level and self-contained:
//! apply re-reads each IAM resource and applies them onto the fresh policy (read-modify-write), so
//! a change never refers to "the binding as it was".
//!
//! Everything is kept in a deterministic order (services by id, changes by role, condition and
//! member, findings by service, code and message) so that plans can be diffed, tested and
//! reviewed.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::iam::Member;
use crate::model::ServiceId;
use crate::policy::model::Mode;

/// The saved-plan format version this build writes and reads. Version 2 records the policy
/// digest and writes member changes grouped (see [`ResourcePlan::changes`]); version 3 splits
/// a finding's text into `evidence` and `fix`.
pub const FORMAT_VERSION: u32 = 3;

/// The largest saved plan `apply PLAN.json` reads. The largest plan measured, a 10,000-service
/// estate not yet converged (2.5 million additions), was 646 MB in format 1 and is 118 MiB in
/// format 2 (`benches/plan.rs`); a bigger file is not a plan runwarden wrote, and reading it
/// whole would only exhaust memory.
pub const MAX_SAVED_PLAN_BYTES: u64 = 1024 * 1024 * 1024;

/// Errors reading a saved plan.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The file is not a plan (bad JSON, unknown fields, invalid members).
    #[error(
        "reading the saved plan failed: it is not a runwarden plan ({source}); create it with `runwarden plan --out PLAN.json`"
    )]
    Parse {
        #[source]
        source: serde_json::Error,
    },
    /// The plan was written by a runwarden with another format.
    #[error(
        "the saved plan has formatVersion {found}, this runwarden reads version {FORMAT_VERSION}; re-run `runwarden plan --out PLAN.json` with this version"
    )]
    UnsupportedVersion { found: u32 },
    /// Serializing a plan failed (should not happen: every field is plain data).
    #[error("writing the plan as JSON failed: {source}")]
    Serialize {
        #[source]
        source: serde_json::Error,
    },
}

/// A whole plan: per-service changes, findings and summary counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(
    title = "runwarden plan",
    description = "A runwarden plan (`runwarden plan --format json` / `--out PLAN.json`): the member-level IAM changes and settings changes per Cloud Run service, with the etags they were computed from."
)]
pub struct Plan {
    /// Always 3 for this format.
    pub format_version: u32,
    /// The clock the plan was computed with (RFC 3339, UTC); expiries are judged against it.
    pub planned_at: String,
    /// Whether base policies were given (`--base-policies`): then every add/remove/setting change
    /// carries an `origin`.
    pub compared_with_base: bool,
    /// SHA-256 (hex) of the policy files the plan was made from (paths and bytes, see
    /// `policy::digest`). `apply PLAN.json` refuses a plan whose policies have changed since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_digest: Option<String>,
    /// Governed services with at least one change or kept member, sorted by id.
    pub services: Vec<ServicePlan>,
    /// Problems that are not changes, sorted.
    pub findings: Vec<Finding>,
    pub summary: Summary,
}

/// The plan for one governed service.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePlan {
    /// `project/region/name`.
    pub id: String,
    pub project: String,
    pub region: String,
    pub name: String,
    /// The effective enforcement mode (the most cautious of the governing policies).
    pub mode: PlanMode,
    /// With `--base-policies`: the mode the base branch gives the service, when the pull
    /// request changes it (e.g. `observe` → `enforce`). Every change of the service is then
    /// `declared`: the pull request is what makes them happen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_mode: Option<PlanMode>,
    /// Names of the policies that govern the service, sorted.
    pub policies: Vec<String>,
    /// The service's etag as read; `services.patch` must carry it.
    pub etag: String,
    /// Changes to the service's own IAM policy (`roles/run.invoker`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iam: Option<ResourcePlan>,
    /// Changes to the IAP resource's IAM policy (`roles/iap.httpsResourceAccessor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iap: Option<ResourcePlan>,
    /// Changes to the service's settings (one `services.patch` with all update-mask paths).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub settings: Vec<SettingChange>,
    /// The last-applied record apply writes with this plan (what the policies grant now, each
    /// member with the revision that first granted it), and every other annotation as read.
    /// Not part of the saved plan: apply always works from a fresh plan.
    #[serde(skip)]
    pub record: Option<RecordWrite>,
    /// In `enforce` mode, when the last-applied record on the service is missing, unreadable
    /// or lists other members than the policies grant now: the number of members the record
    /// apply writes will list. Bookkeeping, not an access change: it does not count as a
    /// change (`plan` exits 0 for it alone), but it is shown and counted (`recordsToWrite`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_members: Option<usize>,
}

/// Equal when everything a saved plan holds is equal: the record is derived from the same
/// inputs and not saved, so a plan read back from its JSON equals the plan it was written from;
/// whether the record is to be written is bookkeeping, never a reason to refuse a saved plan.
impl PartialEq for ServicePlan {
    fn eq(&self, other: &ServicePlan) -> bool {
        let ServicePlan { id, project, region, name, mode, base_mode, policies, etag, iam, iap, settings, record: _, record_members: _ } = self;
        (id, project, region, name, mode, base_mode, policies, etag, iam, iap, settings)
            == (&other.id, &other.project, &other.region, &other.name, &other.mode, &other.base_mode, &other.policies, &other.etag, &other.iam, &other.iap, &other.settings)
    }
}

/// The service annotations apply writes along with a service's changes.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordWrite {
    pub record: crate::model::LastApplied,
    /// The service's annotations as read (all carried over; the record's key is replaced).
    pub others: BTreeMap<String, String>,
    /// The live record's value, to skip a write that changes nothing.
    pub current: Option<String>,
}

/// Enforcement mode, as recorded in a plan.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum PlanMode {
    /// Changes are applied.
    Enforce,
    /// Changes are planned and reported, never applied.
    Warn,
    /// Changes are reported as drift only, never applied.
    Observe,
}

impl From<Mode> for PlanMode {
    fn from(mode: Mode) -> PlanMode {
        match mode {
            Mode::Enforce => PlanMode::Enforce,
            Mode::Warn => PlanMode::Warn,
            Mode::Observe => PlanMode::Observe,
        }
    }
}

impl PlanMode {
    /// The spelling used in policy files and output.
    pub fn as_str(self) -> &'static str {
        match self {
            PlanMode::Enforce => "enforce",
            PlanMode::Warn => "warn",
            PlanMode::Observe => "observe",
        }
    }
}

/// Member-level changes to one IAM resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourcePlan {
    /// The IAM resource: `projects/P/locations/R/services/S` or
    /// `projects/NUMBER/iap_web/cloud_run-R/services/S`.
    pub resource: String,
    /// The etag of the IAM policy the changes were computed from.
    pub etag: String,
    /// The policy version to write (always 3, so no condition is ever lost).
    pub policy_version: u32,
    /// Governed bindings that lose every member of the principal mapping while an Auth0 role
    /// feeding them resolved to no members (the directory guard refuses these).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emptied_bindings: Vec<EmptiedBinding>,
    /// Governed bindings that lose members of the principal mapping while an Auth0 group
    /// assigned to a role feeding them came back empty (the directory guard refuses these too).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emptied_groups: Vec<EmptiedGroup>,
    /// Sorted by role, condition, member. In the file, changes that differ only in their
    /// member are one entry listing the `members` (a role's members added to a service share
    /// everything else), so a large plan does not repeat the same role, reason and sources for
    /// every member.
    #[serde(with = "grouped")]
    #[schemars(with = "Vec<ChangeGroup>")]
    pub changes: Vec<MemberChange>,
}

/// Changes that differ only in their member, as a saved plan writes them.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ChangeGroup {
    action: Action,
    role: String,
    /// The binding's condition; absent for the unconditional binding.
    #[serde(default)]
    condition: Option<PlanCondition>,
    /// The members the change applies to (at least one).
    #[schemars(with = "Vec<String>")]
    members: Vec<Member>,
    reason: Reason,
    #[serde(default)]
    origin: Option<Origin>,
    /// Where the grant (or the rule that removes it) was written, as `file:line`.
    #[serde(default)]
    sources: Vec<String>,
    /// A human explanation where the reason alone is not enough.
    #[serde(default)]
    note: Option<String>,
}

/// The role as a change holds it: the two governed roles are static strings (not one copy per
/// change).
pub(crate) fn governed_role(role: &str) -> Cow<'static, str> {
    match role {
        crate::iam::RUN_INVOKER => Cow::Borrowed(crate::iam::RUN_INVOKER),
        crate::iam::IAP_ACCESSOR => Cow::Borrowed(crate::iam::IAP_ACCESSOR),
        other => Cow::Owned(other.to_string()),
    }
}

/// `ResourcePlan::changes` on the wire: grouped by everything but the member (groups in the
/// order of their first change, members in order); read back into one change per member, in
/// the canonical order.
mod grouped {
    use std::collections::HashMap;

    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{Action, ChangeGroup, Member, MemberChange, Origin, PlanCondition, Reason, Sources, governed_role};

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct GroupOut<'a> {
        action: Action,
        role: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        condition: Option<&'a PlanCondition>,
        members: Vec<&'a Member>,
        reason: Reason,
        #[serde(skip_serializing_if = "Option::is_none")]
        origin: Option<Origin>,
        #[serde(skip_serializing_if = "<[String]>::is_empty")]
        sources: &'a [String],
        #[serde(skip_serializing_if = "Option::is_none")]
        note: Option<&'a str>,
    }

    type Key<'a> = (Action, &'a str, Option<&'a PlanCondition>, Reason, Option<Origin>, &'a [String], Option<&'a str>);

    pub fn serialize<S: Serializer>(changes: &[MemberChange], s: S) -> Result<S::Ok, S::Error> {
        let mut index: HashMap<Key<'_>, usize> = HashMap::new();
        let mut groups: Vec<GroupOut<'_>> = Vec::new();
        for c in changes {
            let key: Key<'_> = (c.action, &c.role, c.condition.as_deref(), c.reason, c.origin, &c.sources, c.note.as_deref());
            match index.get(&key) {
                Some(&i) => groups[i].members.push(&c.member),
                None => {
                    index.insert(key, groups.len());
                    groups.push(GroupOut {
                        action: c.action,
                        role: &c.role,
                        condition: c.condition.as_deref(),
                        members: vec![&c.member],
                        reason: c.reason,
                        origin: c.origin,
                        sources: &c.sources,
                        note: c.note.as_deref(),
                    });
                }
            }
        }
        groups.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<MemberChange>, D::Error> {
        let groups = Vec::<ChangeGroup>::deserialize(d)?;
        let mut out = Vec::with_capacity(groups.iter().map(|g| g.members.len()).sum());
        for g in groups {
            if g.members.is_empty() {
                return Err(D::Error::custom(format!("a {:?} change of {} lists no members", g.action, g.role)));
            }
            let role = governed_role(&g.role);
            let condition = g.condition.map(Box::new);
            let sources: Sources = g.sources.into();
            for member in g.members {
                out.push(MemberChange {
                    action: g.action,
                    role: role.clone(),
                    condition: condition.clone(),
                    member,
                    reason: g.reason,
                    origin: g.origin,
                    sources: sources.clone(),
                    note: g.note.clone(),
                    added_by: None,
                });
            }
        }
        out.sort_by(|a, b| (&a.role, &a.condition, &a.member).cmp(&(&b.role, &b.condition, &b.member)));
        Ok(out)
    }
}

/// A governed binding that would lose every member of the principal mapping while an Auth0 role
/// feeding it came back empty (foreign or protected members may stay).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EmptiedBinding {
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<PlanCondition>,
    /// Members of the principal mapping the binding had (all of which it would lose).
    pub members_before: usize,
    /// The Auth0 roles that came back empty.
    pub empty_roles: Vec<String>,
}

/// A governed binding that would lose members of the principal mapping (as `unlisted`) while an
/// Auth0 group of a role feeding it came back empty: judging by the live binding, people held
/// access that an emptied group may have been giving them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EmptiedGroup {
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<PlanCondition>,
    /// Members of the principal mapping the plan removes from the binding.
    pub members_removed: usize,
    /// The empty groups, each with the Auth0 role it is assigned to.
    pub groups: Vec<EmptyGroup>,
}

/// An Auth0 group that came back empty, and the role it is assigned to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EmptyGroup {
    pub auth0_role: String,
    pub group: String,
}

/// An IAM condition, as written to the policy.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlanCondition {
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub expression: String,
}

impl From<&crate::iam::Condition> for PlanCondition {
    fn from(c: &crate::iam::Condition) -> PlanCondition {
        PlanCondition {
            title: c.title.clone(),
            description: c.description.clone(),
            expression: c.expression.clone(),
        }
    }
}

impl From<&PlanCondition> for crate::iam::Condition {
    fn from(c: &PlanCondition) -> crate::iam::Condition {
        crate::iam::Condition {
            title: c.title.clone(),
            description: c.description.clone(),
            expression: c.expression.clone(),
        }
    }
}

/// What happens to one member of one binding.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    Add,
    Remove,
    /// Listed for review only (a foreign or protected member that stays).
    Keep,
}

/// Why a change is in the plan (DESIGN §4). Recorded to explain, never to steer apply.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum Reason {
    /// A policy grants it; live lacks it.
    Missing,
    /// An owned member that no policy grants.
    Unlisted,
    /// A member runwarden does not own (kept, or removed with `foreignMembers: remove`).
    Foreign,
    /// A member runwarden granted (its last-applied record on the service says so) that no
    /// policy grants any more: the line that granted it was deleted.
    Revoked,
    /// A time-boxed grant that ran out.
    Expired,
    /// Public access (`allUsers`, `allAuthenticatedUsers`) where the policy forbids it.
    Public,
    /// An exposure setting differs.
    Setting,
    /// A `deleted:` principal.
    Deleted,
    /// Would be removed, but matches a `Settings.keep` pattern or is held back by a fail-safe.
    Protected,
    /// An owned member whose Auth0 user is blocked (by an administrator or SCIM
    /// deprovisioning), even when it still holds a role.
    Blocked,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Missing => "missing",
            Reason::Unlisted => "unlisted",
            Reason::Foreign => "foreign",
            Reason::Revoked => "revoked",
            Reason::Expired => "expired",
            Reason::Public => "public",
            Reason::Setting => "setting",
            Reason::Deleted => "deleted",
            Reason::Protected => "protected",
            Reason::Blocked => "blocked",
        }
    }
}

/// With `--base-policies`: whether the base branch's policies would make the change too.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum Origin {
    /// The change comes from the pull request's policy edits.
    Declared,
    /// The base policies would make it too: the live state drifted.
    Drift,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Declared => "declared",
            Origin::Drift => "drift",
        }
    }
}

/// One member-level IAM change.
///
/// A large plan holds millions of these, so what is the same for many changes is shared rather
/// than copied: the governed role is a static string, the condition is boxed (most bindings
/// have none), and the source list is one reference-counted slice per distinct list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemberChange {
    pub action: Action,
    #[schemars(with = "String")]
    pub role: Cow<'static, str>,
    /// The binding's condition; absent for the unconditional binding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Box<PlanCondition>>,
    #[schemars(with = "String")]
    pub member: Member,
    pub reason: Reason,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// Where the grant (or the rule that removes it) was written, as `file:line`.
    #[serde(default, skip_serializing_if = "no_sources")]
    #[schemars(with = "Vec<String>")]
    pub sources: Sources,
    /// A human explanation where the reason alone is not enough.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Who added a drifted member, from the Admin Activity audit log (`added by X (console)
    /// 2026-11-29 14:02 UTC`, or `added by: unknown (why)`); set after planning by the command
    /// (I/O), shown in text and Markdown plans and audit events; not part of the JSON plan.
    #[serde(skip)]
    pub added_by: Option<String>,
}

/// Policy locations (`file:line`), shared between the changes that have the same ones.
pub type Sources = Arc<[String]>;

fn no_sources(s: &Sources) -> bool {
    s.is_empty()
}

/// One settings change, applied with `services.patch` and `updateMask`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SettingChange {
    /// The Cloud Run v2 `Service` field, e.g. `ingress`.
    pub field: String,
    /// The `updateMask` path for `services.patch`.
    pub update_mask_path: String,
    /// The live value (JSON as the API spells it).
    pub before: serde_json::Value,
    /// The desired value.
    pub after: serde_json::Value,
    pub reason: Reason,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
    /// Who last set the live value, from the Admin Activity audit log (`changed by X (console)
    /// 2026-11-29 14:02 UTC`, or `changed by: unknown (why)`); set after planning like
    /// `MemberChange::added_by`; not part of the JSON plan.
    #[serde(skip)]
    pub added_by: Option<String>,
}

/// How serious a finding is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum Severity {
    /// The policies do not hold as written, or the plan cannot be trusted or would fail (a
    /// role that grants nothing, a read that failed, policies in conflict): `plan` and `apply`
    /// exit 1.
    Error,
    /// Probably a mistake, or a risk worth a look; never changes an exit code.
    Warning,
    /// For the record.
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// A problem worth a reviewer's attention that is not a change.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Finding {
    /// The service concerned (`project/region/name`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// A stable kebab-case code, e.g. `unknown-role`.
    pub code: String,
    /// From the catalogue (`plan::catalogue`): `error` findings make `plan` and `apply` exit 1.
    pub severity: Severity,
    /// What was seen: names, numbers, the error read.
    pub evidence: String,
    /// What to do about it (never empty: every code has one in the catalogue).
    pub fix: String,
    /// Policy locations involved, as `file:line`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
}

/// Counts over the whole plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Summary {
    /// Services governed by at least one policy (and read successfully).
    pub governed_services: usize,
    /// Services with at least one add, remove or setting change.
    pub services_to_change: usize,
    pub members_to_add: usize,
    pub members_to_remove: usize,
    pub settings_to_change: usize,
    /// Foreign members listed as kept.
    pub foreign_kept: usize,
    pub findings: usize,
    /// Services to change whose mode is `warn` or `observe` (their changes are never applied).
    pub services_not_applied: usize,
    /// Owned member entries in the governed bindings of `enforce` services, as read (the base
    /// of the `maxRemovalRatio` guard).
    pub owned_members: usize,
    /// `enforce` services whose last-applied record apply writes (missing, unreadable or
    /// outdated); not counted in `servicesToChange`.
    #[serde(default)]
    pub records_to_write: usize,
}

impl Summary {
    /// The counts of `services`, with what only the engine knows: the governed services read,
    /// the owned members (the ratio guard's base) and the number of findings.
    pub fn tally(services: &[ServicePlan], governed_services: usize, owned_members: usize, findings: usize) -> Summary {
        let mut summary = Summary { governed_services, owned_members, findings, ..Summary::default() };
        for s in services {
            if s.has_changes() {
                summary.services_to_change += 1;
                if !s.is_applicable() {
                    summary.services_not_applied += 1;
                }
            }
            summary.members_to_add += s.count(Action::Add);
            summary.members_to_remove += s.count(Action::Remove);
            summary.settings_to_change += s.settings.len();
            summary.foreign_kept += s.foreign_kept();
            summary.records_to_write += usize::from(s.writes_record());
        }
        summary
    }
}

impl Plan {
    /// Whether live differs from desired anywhere (any add, remove or setting change, in any
    /// mode). `plan` exits 2 when this is true.
    pub fn has_changes(&self) -> bool {
        self.services.iter().any(ServicePlan::has_changes)
    }

    /// The number of `error` findings: `plan` and `apply` exit 1 when there are any (README,
    /// "Exit codes"); warnings and infos never change an exit code.
    pub fn error_count(&self) -> usize {
        self.findings.iter().filter(|f| f.severity == Severity::Error).count()
    }

    /// Findings about governed services that could not be read (`read-failed`, or
    /// `project-number-unknown`: the IAP resource cannot be named): nothing was planned for
    /// them, so a pass with any cannot claim the estate matches its policies.
    pub fn unread(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.service.is_some() && matches!(f.code.as_str(), "read-failed" | "project-number-unknown"))
    }

    /// The plan as pretty-printed JSON (with a trailing newline): the `--format json` output and
    /// the saved-plan file.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("a plan is plain data");
        s.push('\n');
        s
    }

    /// Writes the plan as [`Plan::to_json`] does, streaming: a plan of millions of changes is
    /// never held in memory a second time as text.
    pub fn write_json(&self, out: impl std::io::Write) -> std::io::Result<()> {
        let mut out = std::io::BufWriter::with_capacity(1 << 16, out);
        serde_json::to_writer_pretty(&mut out, self).map_err(std::io::Error::other)?;
        out.write_all(b"\n")?;
        out.flush()
    }

    /// Reads a saved plan, checking its format version.
    pub fn from_json(text: &str) -> Result<Plan, PlanError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct VersionOnly {
            format_version: u32,
        }
        let v: VersionOnly =
            serde_json::from_str(text).map_err(|source| PlanError::Parse { source })?;
        if v.format_version != FORMAT_VERSION {
            return Err(PlanError::UnsupportedVersion {
                found: v.format_version,
            });
        }
        serde_json::from_str(text).map_err(|source| PlanError::Parse { source })
    }
}

impl ServicePlan {
    /// The service id.
    pub fn service_id(&self) -> ServiceId {
        ServiceId::new(&self.project, &self.region, &self.name)
    }

    /// Any add, remove or setting change.
    pub fn has_changes(&self) -> bool {
        !self.settings.is_empty() || self.member_changes().any(|c| c.action != Action::Keep)
    }

    /// Whether apply writes the service's last-applied record (see [`ServicePlan::record_members`]).
    pub fn writes_record(&self) -> bool {
        self.record_members.is_some()
    }

    /// Whether apply writes anything for this service: changes, or the record alone.
    pub fn has_writes(&self) -> bool {
        self.has_changes() || self.writes_record()
    }

    /// Whether apply would carry out this service's changes (mode `enforce`).
    pub fn is_applicable(&self) -> bool {
        self.mode == PlanMode::Enforce
    }

    /// All member changes, service IAM first, then IAP.
    pub fn member_changes(&self) -> impl Iterator<Item = &MemberChange> {
        self.iam
            .iter()
            .chain(self.iap.iter())
            .flat_map(|r| r.changes.iter())
    }

    /// Count of member changes with this action.
    pub fn count(&self, action: Action) -> usize {
        self.member_changes().filter(|c| c.action == action).count()
    }

    /// Foreign members kept.
    pub fn foreign_kept(&self) -> usize {
        self.member_changes()
            .filter(|c| c.action == Action::Keep && c.reason == Reason::Foreign)
            .count()
    }
}

/// The JSON Schema (draft-07) of the plan format, pretty-printed with a trailing newline: the
/// content of `schemas/plan.schema.json`.
pub fn json_schema() -> String {
    let schema = schemars::generate::SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<Plan>();
    let mut s = serde_json::to_string_pretty(&schema).expect("a schema is plain data");
    s.push('\n');
    s
}
