//! `explain`: who can invoke what, and why. A pure function of the desired model and a live
//! snapshot ([`explain`]), and its two renderings ([`render_text`], [`Explanation::to_json`]).
//!
//! For every live grant on a service — `roles/run.invoker` on the service (path `invoker`) and
//! `roles/iap.httpsResourceAccessor` on its IAP resource (path `iap`) — it says which binding
//! holds it and why the member is there: the policy line that grants it (with the Auth0 role
//! and, for the `users` mapping, whether the user holds the role directly or through groups),
//! `public: true`, the IAP service agent, a `keep` pattern, or that no policy grants it
//! (`foreign`, or `unlisted` when runwarden owns it and a plan would remove it). Grants the
//! policies want but live lacks are listed as `pending`. The member resolution is the plan
//! engine's own ([`crate::plan::engine::desired_grants`]), so `explain` and `plan` never disagree.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use serde::Serialize;

use crate::iam::{Binding, Condition, IAP_ACCESSOR, Member, MemberKind, RUN_INVOKER};
use crate::model::{Directory, LiveService, LiveState, ServiceId};
use crate::plan::engine::{
    GovernedGrants, GrantBasis, desired_grants, iap_service_agent, is_managed_condition,
    managed_expiry, ownership,
};
use crate::plan::format_rfc3339;
use crate::plan::rules::{Ownership, domain_allowed, ungranted_reason};
use crate::policy::model::{Desired, Mode, Principal, PrincipalMapping};

/// What to explain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// One service: everyone who can invoke it.
    Service(ServiceId),
    /// One member: every service it can invoke.
    Member(Member),
}

/// Why a query cannot be answered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    #[error(
        "{0:?} is not a service; name it as PROJECT/REGION/NAME or projects/P/locations/R/services/NAME"
    )]
    BadService(String),
    #[error(
        "{text:?} is not a member: {reason}; use user:EMAIL, an e-mail, serviceAccount:..., principalSet://... or an Auth0 user id (auth0|...)"
    )]
    BadMember { text: String, reason: String },
    #[error(
        "Auth0 user {0:?} holds none of the roles the policies name (or its e-mail is unknown); query by e-mail instead"
    )]
    UnknownAuth0User(String),
    #[error(
        "service {service} was not found in the live state read (projects and regions of the Settings' scope and the policies); check the name, or that it is in scope"
    )]
    UnknownService { service: String },
}

/// Parses `PROJECT/REGION/NAME` or a Cloud Run resource name.
pub fn parse_service(text: &str) -> Result<ServiceId, QueryError> {
    if let Some(id) = ServiceId::parse(text) {
        return Ok(id);
    }
    match text.split('/').collect::<Vec<_>>().as_slice() {
        [p, r, n] if !p.is_empty() && !r.is_empty() && !n.is_empty() => Ok(ServiceId::new(p, r, n)),
        _ => Err(QueryError::BadService(text.to_string())),
    }
}

/// Parses a member query: an IAM member, a bare e-mail (`user:`), or an Auth0 user id, which is
/// mapped to its e-mail through the members of the roles read from the directory.
pub fn parse_member(text: &str, directory: &Directory) -> Result<Member, QueryError> {
    let text = text.trim();
    if text.contains('|') && !text.contains(':') {
        let email = directory
            .roles
            .values()
            .flat_map(|r| &r.members)
            .find(|u| u.user_id == text)
            .and_then(|u| u.email.clone())
            .ok_or_else(|| QueryError::UnknownAuth0User(text.to_string()))?;
        return user_member(&email, text);
    }
    if !text.contains(':') && text.contains('@') {
        return user_member(text, text);
    }
    Member::parse(text).map_err(|e| QueryError::BadMember {
        text: text.to_string(),
        reason: e.reason.to_string(),
    })
}

fn user_member(email: &str, text: &str) -> Result<Member, QueryError> {
    Member::parse(&format!("user:{}", email.to_ascii_lowercase())).map_err(|e| {
        QueryError::BadMember {
            text: text.to_string(),
            reason: e.reason.to_string(),
        }
    })
}

/// The answer: one entry per service concerned, sorted by service id.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    /// `{"service": "P/R/N"}` or `{"member": "user:..."}`.
    pub query: BTreeMap<String, String>,
    pub explained_at: String,
    /// For a member query with the `users` mapping: each Auth0 role the member's user holds,
    /// and whether that holding grants anything (and if not, why).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub auth0: Vec<Auth0Holding>,
    pub services: Vec<ServiceAccess>,
}

/// One Auth0 role held by the queried user, as the directory read says.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Auth0Holding {
    pub role: String,
    pub user_id: String,
    /// `direct`, `group NAME`.
    pub holds: Vec<String>,
    /// Whether the role's grants reach this user (`user:<e-mail>`).
    pub granted: bool,
    /// Why not, when not granted (blocked, e-mail not verified, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why_not: Option<String>,
}

/// One service: its exposure and the access to it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccess {
    /// `project/region/name`.
    pub service: String,
    pub resource: String,
    pub uri: Option<String>,
    pub exposure: ExposureView,
    /// The governing policies (empty: governed by none).
    pub governed_by: Vec<String>,
    /// The effective mode, when governed.
    pub mode: Option<String>,
    /// A read that failed: access is unknown.
    pub read_error: Option<String>,
    /// Exposure settings the policies want changed (what the next plan would patch).
    pub pending_settings: Vec<PendingSetting>,
    /// Sorted by path, then state (live first), member, role, condition.
    pub access: Vec<AccessEntry>,
}

/// One exposure setting a plan would change.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingSetting {
    /// The Cloud Run field (`ingress`, `invokerIamDisabled`, `customAudiences`, `iapEnabled`).
    pub field: String,
    pub live: serde_json::Value,
    pub wanted: serde_json::Value,
    /// `file:line` of the policy lines that want it.
    pub sources: Vec<String>,
}

/// What stands in front of a service.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExposureView {
    /// The policy spelling (`all`, `internal`, ...); `None` when no revision serves
    /// (`INGRESS_TRAFFIC_UNSPECIFIED`).
    pub ingress: Option<String>,
    pub invoker_iam_disabled: bool,
    /// `allUsers` or `allAuthenticatedUsers` may invoke, or the invoker check is disabled.
    pub public: bool,
    pub iap: bool,
    pub custom_audiences: Vec<String>,
}

/// One grant (live or pending) of one member on one binding.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessEntry {
    pub member: Member,
    /// For a member query: the queried member, when it reaches the service through another
    /// member (`allUsers`, a `domain:`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_member_of: Option<Member>,
    pub path: AccessPath,
    pub state: GrantState,
    pub role: String,
    pub condition: Option<Condition>,
    /// The end of a time-boxed grant runwarden generated (RFC 3339).
    pub expires: Option<String>,
    /// Whether the grant lets requests through today (not expired, on the path requests take).
    pub effective: bool,
    pub reasons: Vec<Reason>,
    pub note: Option<String>,
}

/// The two ways to be allowed to invoke a Cloud Run service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum AccessPath {
    /// `roles/run.invoker` on the service.
    Invoker,
    /// `roles/iap.httpsResourceAccessor` on the service's IAP resource.
    Iap,
}

impl AccessPath {
    fn as_str(self) -> &'static str {
        match self {
            AccessPath::Invoker => "invoker",
            AccessPath::Iap => "iap",
        }
    }
}

/// Whether live has the grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum GrantState {
    /// In the live policy.
    Live,
    /// The policies grant it but live lacks it: a plan would add it.
    Pending,
}

/// Why a member is on a binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Reason {
    /// An invoker line of a policy.
    #[serde(rename_all = "camelCase")]
    Policy {
        policy: String,
        /// `file:line:col` of the invoker line.
        source: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        auth0_role: Option<String>,
        /// For the `users` mapping: `direct` and/or `group NAME` for each way the user holds
        /// the role.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        holds: Vec<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        machine: Option<String>,
    },
    /// `public: true` in these exposure blocks.
    Public { sources: Vec<String> },
    /// The IAP service agent, needed with `iap: true`.
    #[serde(rename_all = "camelCase")]
    IapServiceAgent { sources: Vec<String> },
    /// Matches a `Settings.keep` pattern: never removed.
    Keep { pattern: String, source: String },
    /// Not granted by any policy and not owned by runwarden: kept (or removed with
    /// `foreignMembers: remove`).
    Foreign { removed_by_plan: bool },
    /// Owned by runwarden but granted by no policy: a plan would remove it.
    Unlisted,
    /// `allUsers`/`allAuthenticatedUsers` without `public: true`.
    PublicNotAllowed,
    /// A `deleted:` principal: grants nothing; a plan would remove it.
    Deleted,
    /// An owned member whose Auth0 user is blocked: a plan would remove it.
    Blocked,
    /// A runwarden time-boxed grant whose time ran out; a plan would remove it.
    Expired,
    /// A conditional binding runwarden did not generate: never touched.
    UnmanagedCondition,
    /// The service is governed by no policy: nothing manages this grant.
    Ungoverned,
}

/// Explains `query` over `live` as `desired` sees it. Pure.
pub fn explain(
    desired: &Desired,
    live: &LiveState,
    query: &Query,
    now: SystemTime,
) -> Result<Explanation, QueryError> {
    let wanted = desired_grants(desired, live, now);
    // Exposure the policies want changed comes straight from the plan, so the two agree.
    let settings: BTreeMap<String, Vec<PendingSetting>> =
        crate::plan::plan(desired, live, &crate::plan::PlanOptions::at(now))
            .services
            .into_iter()
            .map(|sp| {
                let pending = sp
                    .settings
                    .into_iter()
                    .map(|c| PendingSetting {
                        field: c.field,
                        live: c.before,
                        wanted: c.after,
                        sources: c.sources,
                    })
                    .collect();
                (sp.id, pending)
            })
            .collect();
    let ctx = Ctx::new(
        desired,
        live,
        &wanted,
        ownership(desired, live, now),
        settings,
    );
    let mut services = Vec::new();
    let mut q = BTreeMap::new();
    match query {
        Query::Service(id) => {
            q.insert("service".to_string(), id.to_string());
            let svc = live
                .services
                .get(id)
                .ok_or_else(|| QueryError::UnknownService {
                    service: id.to_string(),
                })?;
            services.push(ctx.service(svc, now, None));
        }
        Query::Member(m) => {
            q.insert("member".to_string(), m.to_string());
            for svc in live.services.values() {
                let access = ctx.service(svc, now, Some(m));
                if !access.access.is_empty()
                    || access.read_error.is_some() && ctx.wanted.contains_key(&svc.id)
                {
                    services.push(access);
                }
            }
        }
    }
    let auth0 = match query {
        Query::Member(m) => auth0_holdings(desired, &live.directory, m),
        Query::Service(_) => vec![],
    };
    Ok(Explanation {
        query: q,
        explained_at: format_rfc3339(now),
        auth0,
        services,
    })
}

/// The roles the directory says `m`'s Auth0 user holds, and whether each grants it anything.
fn auth0_holdings(desired: &Desired, dir: &Directory, m: &Member) -> Vec<Auth0Holding> {
    let (PrincipalMapping::Users { email_domains }, Some(email)) =
        (&desired.settings.principals, m.email())
    else {
        return vec![];
    };
    let mut out = Vec::new();
    for r in dir.roles.values() {
        for u in r.members.iter().filter(|u| {
            u.email.as_deref().is_some_and(|e| e.eq_ignore_ascii_case(email))
        }) {
            let mut holds: Vec<String> = u.via_groups.iter().map(|g| format!("group {g}")).collect();
            if u.direct {
                holds.insert(0, "direct".to_string());
            }
            let why_not = ungranted_reason(u, email_domains);
            out.push(Auth0Holding {
                role: r.name.clone(),
                user_id: u.user_id.clone(),
                holds,
                granted: why_not.is_none(),
                why_not,
            });
        }
    }
    out
}

/// Whether `m` is the `user:` member of an Auth0 user the directory says is blocked.
fn is_blocked_user(dir: &Directory, m: &Member) -> bool {
    let Some(email) = m.email() else { return false };
    dir.roles.values().flat_map(|r| &r.members).any(|u| {
        u.blocked && u.email.as_deref().is_some_and(|e| e.eq_ignore_ascii_case(email))
    })
}

struct Ctx<'a> {
    desired: &'a Desired,
    live: &'a LiveState,
    wanted: &'a BTreeMap<ServiceId, GovernedGrants>,
    /// Which members runwarden owns, exactly as the plan judges it.
    ownership: Ownership<'a>,
    /// Per service (`P/R/N`), the settings changes of the plan.
    settings: BTreeMap<String, Vec<PendingSetting>>,
}

impl<'a> Ctx<'a> {
    fn new(
        desired: &'a Desired,
        live: &'a LiveState,
        wanted: &'a BTreeMap<ServiceId, GovernedGrants>,
        ownership: Ownership<'a>,
        settings: BTreeMap<String, Vec<PendingSetting>>,
    ) -> Ctx<'a> {
        Ctx {
            desired,
            live,
            wanted,
            ownership,
            settings,
        }
    }

    /// How a user holds an Auth0 role (`direct`, `group NAME`), for the `users` mapping.
    fn holds(&self, role: &str, m: &Member) -> Vec<String> {
        let (Some(r), Some(email)) = (self.live.directory.roles.get(role), m.email()) else {
            return vec![];
        };
        let mut out = Vec::new();
        for u in r.members.iter().filter(|u| {
            u.email
                .as_deref()
                .is_some_and(|e| e.eq_ignore_ascii_case(email))
        }) {
            if u.direct {
                out.push("direct".to_string());
            }
            out.extend(u.via_groups.iter().map(|g| format!("group {g}")));
        }
        out.sort();
        out.dedup();
        out
    }

    fn basis_reason(&self, basis: &GrantBasis, m: &Member) -> Reason {
        match basis {
            GrantBasis::Invoker { policy, invoker } => {
                let (auth0_role, machine) = match &invoker.principal {
                    Principal::Auth0Role(r) => (Some(r.clone()), None),
                    Principal::Machine(n) => (None, Some(n.clone())),
                    Principal::Member(_) => (None, None),
                };
                let holds = match (&auth0_role, &self.desired.settings.principals) {
                    (Some(r), PrincipalMapping::Users { .. }) => self.holds(r, m),
                    _ => vec![],
                };
                Reason::Policy {
                    policy: policy.clone(),
                    source: invoker.source.to_string(),
                    auth0_role,
                    holds,
                    machine,
                }
            }
            GrantBasis::Public { sources } => Reason::Public {
                sources: sources.clone(),
            },
            GrantBasis::IapServiceAgent { sources } => Reason::IapServiceAgent {
                sources: sources.clone(),
            },
        }
    }

    fn service(
        &self,
        svc: &LiveService,
        now: SystemTime,
        member: Option<&Member>,
    ) -> ServiceAccess {
        let gov = self.wanted.get(&svc.id);
        let mut out = ServiceAccess {
            service: svc.id.to_string(),
            resource: svc.id.resource_name(),
            uri: svc.uri.clone(),
            exposure: exposure_view(svc),
            governed_by: gov.map(|g| g.policies.clone()).unwrap_or_default(),
            mode: gov.map(|g| mode_str(g.mode).to_string()),
            read_error: svc.read_error.clone(),
            pending_settings: self
                .settings
                .get(&svc.id.to_string())
                .cloned()
                .unwrap_or_default(),
            access: Vec::new(),
        };
        if svc.read_error.is_some() {
            return out;
        }
        let seen = self.live_entries(svc, gov, member, now, &mut out.access);
        if let Some(g) = gov {
            out.access
                .extend(self.pending_entries(svc, g, member, &seen));
        }
        out.access.sort_by(|a, b| {
            (a.path, a.state, &a.member, &a.role, &a.condition).cmp(&(
                b.path,
                b.state,
                &b.member,
                &b.role,
                &b.condition,
            ))
        });
        out
    }

    /// The live grants on both resources (of `member`, or of a member containing it, when
    /// given), appended to `access`; returns their keys.
    fn live_entries(
        &self,
        svc: &LiveService,
        gov: Option<&GovernedGrants>,
        member: Option<&Member>,
        now: SystemTime,
        access: &mut Vec<AccessEntry>,
    ) -> BTreeSet<(AccessPath, Option<Condition>, Member)> {
        let agent = self
            .live
            .project_numbers
            .get(&svc.id.project)
            .map(|n| iap_service_agent(*n));
        let mut seen = BTreeSet::new();
        for (path, role, policy) in [
            (AccessPath::Invoker, RUN_INVOKER, &svc.iam),
            (AccessPath::Iap, IAP_ACCESSOR, &svc.iap_iam),
        ] {
            for b in policy
                .iter()
                .flat_map(|p| &p.bindings)
                .filter(|b| b.role == role)
            {
                for m in &b.members {
                    let via = match member {
                        None => None,
                        Some(q) if q == m => None,
                        Some(q) if contains(m, q) => Some(q.clone()),
                        Some(_) => continue,
                    };
                    seen.insert((path, b.condition.clone(), m.clone()));
                    let mut entry = self.live_entry(svc, gov, path, b, m, agent.as_ref(), now);
                    entry.as_member_of = via;
                    access.push(entry);
                }
            }
        }
        seen
    }

    /// Grants the policies want that live lacks (on a policy that was read).
    fn pending_entries(
        &self,
        svc: &LiveService,
        g: &GovernedGrants,
        member: Option<&Member>,
        seen: &BTreeSet<(AccessPath, Option<Condition>, Member)>,
    ) -> Vec<AccessEntry> {
        let mut pending: BTreeMap<(AccessPath, Option<Condition>, Member), AccessEntry> =
            BTreeMap::new();
        for dg in &g.grants {
            if member.is_some_and(|q| q != &dg.member) {
                continue;
            }
            let path = if dg.role == IAP_ACCESSOR {
                AccessPath::Iap
            } else {
                AccessPath::Invoker
            };
            let read = match path {
                AccessPath::Invoker => svc.iam.is_some(),
                AccessPath::Iap => svc.iap_iam.is_some(),
            };
            let key = (path, dg.condition.clone(), dg.member.clone());
            if !read || seen.contains(&key) {
                continue;
            }
            let reason = self.basis_reason(&dg.basis, &dg.member);
            let e = pending.entry(key).or_insert_with(|| AccessEntry {
                member: dg.member.clone(),
                as_member_of: None,
                path,
                state: GrantState::Pending,
                role: dg.role.to_string(),
                condition: dg.condition.clone(),
                expires: dg
                    .condition
                    .as_ref()
                    .and_then(managed_expiry)
                    .map(format_rfc3339),
                effective: false,
                reasons: vec![],
                note: Some("not in the live policy: a plan would add it".into()),
            });
            if !e.reasons.contains(&reason) {
                e.reasons.push(reason);
            }
        }
        pending.into_values().collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn live_entry(
        &self,
        svc: &LiveService,
        gov: Option<&GovernedGrants>,
        path: AccessPath,
        b: &Binding,
        m: &Member,
        agent: Option<&Member>,
        now: SystemTime,
    ) -> AccessEntry {
        let managed = b.condition.as_ref().is_some_and(is_managed_condition);
        let expires = b.condition.as_ref().and_then(managed_expiry);
        let expired = expires.is_some_and(|t| t <= now);
        let mut reasons = Vec::new();
        let mut notes = Vec::new();
        if let Some(g) = gov {
            for dg in g
                .grants
                .iter()
                .filter(|d| &d.member == m && d.role == b.role && d.condition == b.condition)
            {
                let r = self.basis_reason(&dg.basis, m);
                if !reasons.contains(&r) {
                    reasons.push(r);
                }
            }
        }
        if reasons.is_empty() {
            let reason = self.unwanted_reason(gov, b, m, managed, expired);
            if let Some(note) = removal_note(&reason) {
                notes.push(note.to_string());
            }
            reasons.push(reason);
        }
        let is_agent = agent == Some(m);
        let effective = !expired
            && m.kind() != MemberKind::Deleted
            && !(path == AccessPath::Iap && !svc.settings.iap_enabled);
        if b.condition.is_some() && !managed {
            notes.push("conditional: access depends on the condition".to_string());
        }
        notes.extend(path_note(path, svc.settings.iap_enabled, is_agent).map(str::to_string));
        if is_agent {
            notes.push("the IAP service agent: forwards requests that passed IAP".to_string());
        }
        AccessEntry {
            member: m.clone(),
            as_member_of: None,
            path,
            state: GrantState::Live,
            role: b.role.clone(),
            condition: b.condition.clone(),
            expires: expires.map(format_rfc3339),
            effective,
            reasons,
            note: if notes.is_empty() {
                None
            } else {
                Some(notes.join("; "))
            },
        }
    }

    /// Why live member `m` of binding `b` is there when no policy grants it.
    fn unwanted_reason(
        &self,
        gov: Option<&GovernedGrants>,
        b: &Binding,
        m: &Member,
        managed: bool,
        expired: bool,
    ) -> Reason {
        let keep = self
            .desired
            .settings
            .keep
            .iter()
            .find(|p| p.matches(m.as_str()));
        if b.condition.is_some() && !managed {
            Reason::UnmanagedCondition
        } else if gov.is_none() {
            Reason::Ungoverned
        } else if m.kind() == MemberKind::Deleted {
            Reason::Deleted
        } else if expired {
            Reason::Expired
        } else if let Some(p) = keep {
            Reason::Keep {
                pattern: p.pattern.clone(),
                source: p.source.to_string(),
            }
        } else if m.is_public() && gov.is_some_and(|g| g.public != Some(true)) {
            Reason::PublicNotAllowed
        } else if (managed || self.ownership.is_owned(m))
            && matches!(self.desired.settings.principals, PrincipalMapping::Users { .. })
            && is_blocked_user(&self.live.directory, m)
        {
            Reason::Blocked
        } else if managed || self.ownership.is_owned(m) {
            Reason::Unlisted
        } else {
            Reason::Foreign {
                removed_by_plan: self.desired.settings.foreign_members
                    == crate::policy::model::ForeignMembers::Remove,
            }
        }
    }
}

/// What a plan does about a member that is there for `reason`, when it removes it.
fn removal_note(reason: &Reason) -> Option<&'static str> {
    match reason {
        Reason::Unlisted | Reason::PublicNotAllowed => Some("a plan would remove it"),
        Reason::Deleted => Some("a deleted principal: grants nothing; a plan would remove it"),
        Reason::Blocked => Some("a plan would remove it"),
        Reason::Expired => Some("the time-boxed grant has ended: a plan would remove it"),
        _ => None,
    }
}

/// What IAP means for a grant on `path`.
fn path_note(path: AccessPath, iap_on: bool, is_agent: bool) -> Option<&'static str> {
    match path {
        AccessPath::Iap if !iap_on => {
            Some("IAP is off: this accessor grant has no effect until IAP is turned on")
        }
        AccessPath::Invoker if iap_on && !is_agent => Some(
            "IAP is on: requests pass IAP first, so this grant alone does not let them through",
        ),
        _ => None,
    }
}

/// What live says about a service's exposure.
fn exposure_view(svc: &LiveService) -> ExposureView {
    let s = &svc.settings;
    let iam_public = svc.iam.iter().flat_map(|p| &p.bindings).any(|b| {
        b.role == RUN_INVOKER && b.condition.is_none() && b.members.iter().any(Member::is_public)
    });
    ExposureView {
        ingress: s.ingress.map(|i| i.policy_value().to_string()),
        invoker_iam_disabled: s.invoker_iam_disabled,
        public: s.invoker_iam_disabled || iam_public,
        iap: s.iap_enabled,
        custom_audiences: s.custom_audiences.clone(),
    }
}

/// Whether live member `m` (a different member than `q`) includes `q`.
fn contains(m: &Member, q: &Member) -> bool {
    match m.kind() {
        MemberKind::AllUsers => true,
        MemberKind::AllAuthenticatedUsers => !q.is_public(),
        MemberKind::Domain => {
            let domain = m.as_str().split_once(':').map(|(_, d)| d).unwrap_or("");
            matches!(q.kind(), MemberKind::User | MemberKind::Group)
                && q.email().is_some_and(|e| domain_allowed(e, &[domain]))
        }
        _ => false,
    }
}

fn mode_str(m: Mode) -> &'static str {
    match m {
        Mode::Enforce => "enforce",
        Mode::Warn => "warn",
        Mode::Observe => "observe",
    }
}

impl Explanation {
    /// Pretty JSON with a trailing newline (the `--format json` output).
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("an explanation is plain data");
        s.push('\n');
        s
    }
}

/// One line of "why" for people.
fn why(r: &Reason) -> String {
    match r {
        Reason::Policy { policy, source, auth0_role, holds, machine } => {
            let mut s = format!("policy {policy} ({source})");
            if let Some(role) = auth0_role {
                s.push_str(&format!(" via Auth0 role {role}"));
                if !holds.is_empty() {
                    s.push_str(&format!(" [{}]", holds.join(", ")));
                }
            }
            if let Some(m) = machine {
                s.push_str(&format!(" via machine {m}"));
            }
            s
        }
        Reason::Public { sources } => format!("public: true ({})", sources.join(", ")),
        Reason::IapServiceAgent { sources } => format!("IAP service agent, needed by iap: true ({})", sources.join(", ")),
        Reason::Keep { pattern, source } => format!("kept: matches keep pattern `{pattern}` ({source})"),
        Reason::Foreign { removed_by_plan: false } => "foreign: granted by no policy, kept (foreignMembers: keep)".into(),
        Reason::Foreign { removed_by_plan: true } => "foreign: granted by no policy; a plan would remove it (foreignMembers: remove)".into(),
        Reason::Unlisted => "unlisted: in runwarden's ownership (mapping, owned pattern or policy member) yet granted here by no policy".into(),
        Reason::PublicNotAllowed => "public member, but the policies say `public: false`".into(),
        Reason::Deleted => "deleted principal".into(),
        Reason::Blocked => "blocked: the Auth0 user is blocked, and a blocked user is never granted".into(),
        Reason::Expired => "expired time-boxed grant".into(),
        Reason::UnmanagedCondition => "conditional binding runwarden did not generate (never touched)".into(),
        Reason::Ungoverned => "the service is governed by no policy".into(),
    }
}

fn binding_text(e: &AccessEntry) -> String {
    match (&e.condition, &e.expires) {
        (None, _) => e.role.clone(),
        (Some(_), Some(t)) => format!("{} until {t}", e.role),
        (Some(c), None) => format!("{} if {} ({})", e.role, c.title, c.expression),
    }
}

fn exposure_text(x: &ExposureView) -> String {
    let ingress = x
        .ingress
        .as_deref()
        .unwrap_or("unspecified (no serving revision)");
    let invoker = if x.invoker_iam_disabled {
        "invoker check DISABLED (anyone who can reach it)".to_string()
    } else if x.public {
        "invoker IAM on, PUBLIC (allUsers/allAuthenticatedUsers)".to_string()
    } else {
        "invoker IAM on, not public".to_string()
    };
    let iap = if x.iap { "IAP on" } else { "IAP off" };
    let aud = if x.custom_audiences.is_empty() {
        "none".to_string()
    } else {
        x.custom_audiences.join(", ")
    };
    format!("ingress {ingress} · {invoker} · {iap} · customAudiences {aud}")
}

/// The text rendering: per service its exposure, then one aligned line per grant.
pub fn render_text(x: &Explanation) -> String {
    let mut out = String::new();
    if let Some(m) = x.query.get("member") {
        out.push_str(&member_summary(x, m));
    }
    for s in &x.services {
        out.push('\n');
        out.push_str(&service_text(s));
    }
    out
}

/// The first line of a member query: how many services it can invoke today, and how many more
/// the policies grant it.
fn member_summary(x: &Explanation, m: &str) -> String {
    let mut out = String::new();
    let n = x
        .services
        .iter()
        .filter(|s| {
            s.access
                .iter()
                .any(|a| a.state == GrantState::Live && a.effective)
        })
        .count();
    out.push_str(&format!("{m} can invoke {} today", crate::text::count(n, "service")));
    let pending = x
        .services
        .iter()
        .filter(|s| s.access.iter().any(|a| a.state == GrantState::Pending))
        .count();
    if pending > 0 {
        out.push_str(&format!("; the policies grant it {pending} more (pending)"));
    }
    out.push_str(".\n");
    for h in &x.auth0 {
        let how = if h.holds.is_empty() { String::new() } else { format!(" ({})", h.holds.join(", ")) };
        match &h.why_not {
            None => out.push_str(&format!("Auth0 user {} holds role {}{how}: granted.\n", h.user_id, h.role)),
            Some(why) => out.push_str(&format!(
                "Auth0 user {} holds role {}{how}, but gets nothing through it: {why}.\n",
                h.user_id, h.role
            )),
        }
    }
    if x.services.is_empty() {
        out.push_str("No grant names it, in live or in the policies.\n");
    }
    out
}

/// One service: its head lines and an aligned table of its grants.
fn service_text(s: &ServiceAccess) -> String {
    let mut out = String::new();
    let governed = if s.governed_by.is_empty() {
        "governed by no policy".to_string()
    } else {
        format!(
            "governed by {} (mode {})",
            s.governed_by.join(", "),
            s.mode.as_deref().unwrap_or("?")
        )
    };
    out.push_str(&format!("{}  {governed}\n", s.service));
    if let Some(u) = &s.uri {
        out.push_str(&format!("  uri       {u}\n"));
    }
    out.push_str(&format!("  exposure  {}\n", exposure_text(&s.exposure)));
    for p in &s.pending_settings {
        out.push_str(&format!(
            "  pending   {} {} -> {} ({}): a plan would change it\n",
            p.field,
            p.live,
            p.wanted,
            p.sources.join(", ")
        ));
    }
    if let Some(e) = &s.read_error {
        out.push_str(&format!("  access    unknown: the read failed ({e})\n"));
        return out;
    }
    if s.access.is_empty() {
        out.push_str("  access    nobody holds an invoker or IAP accessor grant\n");
        return out;
    }
    let rows: Vec<[String; 4]> = s.access.iter().map(access_row).collect();
    let w: Vec<usize> = (0..3)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for r in rows {
        out.push_str(&format!(
            "  {:w0$}  {:w1$}  {:w2$}  {}\n",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2]
        ));
    }
    out
}

/// One grant as (state and path, member, binding, why).
fn access_row(a: &AccessEntry) -> [String; 4] {
    let state = match (a.state, a.effective) {
        (GrantState::Pending, _) => "pending",
        (GrantState::Live, true) => "live",
        (GrantState::Live, false) => "inactive",
    };
    let member = match &a.as_member_of {
        Some(q) => format!("{} (includes {q})", a.member),
        None => a.member.to_string(),
    };
    let mut why_text = a.reasons.iter().map(why).collect::<Vec<_>>().join("; ");
    if let Some(n) = &a.note {
        why_text.push_str(&format!(" — {n}"));
    }
    [
        format!("{} {}", state, a.path.as_str()),
        member,
        binding_text(a),
        why_text,
    ]
}
