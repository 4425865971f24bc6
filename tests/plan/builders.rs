//! Small builders for desired and live states, and the compact plan rendering the rule cases
//! compare against. Kept terse so each case reads like the rule it specifies.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use runwarden::iam::{Binding, Condition, Member, Policy};
use runwarden::live::{LiveService, LiveState, Role, ServiceId, ServiceSettings, User};
use runwarden::plan::{Action, Plan, PlanMode, parse_rfc3339};
use runwarden::policy::model::*;

/// The fixed clock of every case: 2026-11-29T00:00:00Z.
pub fn now() -> SystemTime {
    parse_rfc3339("2026-11-29T00:00:00Z").unwrap()
}

pub fn at(ts: &str) -> SystemTime {
    parse_rfc3339(ts).unwrap_or_else(|| panic!("bad timestamp {ts}"))
}

pub fn src(file: &str, line: usize) -> Source {
    Source {
        file: PathBuf::from(file),
        line,
        column: 3,
    }
}

pub fn m(text: &str) -> Member {
    Member::parse(text).unwrap()
}

pub fn pattern(p: &str, line: usize) -> MemberPattern {
    MemberPattern {
        pattern: p.into(),
        source: src("policies/settings.yaml", line),
    }
}

/// Settings like the demo's: `users` mapping for acme.com, scope acme-prod (+ staging),
/// keep service agents and break-glass, own acme-prod service accounts.
pub fn settings() -> Settings {
    Settings {
        name: "acme".into(),
        source: src("policies/settings.yaml", 4),
        auth0: Auth0Settings {
            domain: "acme.eu.auth0.com".into(),
            client_id: "rw-demo-client".into(),
            client_secret_env: "AUTH0_CLIENT_SECRET".into(),
            read_groups: true,
            issuers: vec![],
        },
        principals: PrincipalMapping::Users {
            email_domains: vec!["acme.com".into()],
        },
        machines: vec![MachineIdentity {
            name: "ledger-sync".into(),
            auth0_client_id: "LedgerSyncM2mClient01".into(),
            service_account: m("serviceAccount:ledger-sync@acme-prod.iam.gserviceaccount.com"),
            source: src("policies/settings.yaml", 40),
        }],
        scope: Scope {
            projects: vec!["acme-prod".into(), "acme-staging".into()],
            regions: vec!["europe-west1".into(), "us-central1".into()],
        },
        foreign_members: ForeignMembers::Keep,
        owned: vec![pattern(
            "serviceAccount:*@acme-prod.iam.gserviceaccount.com",
            20,
        )],
        keep: vec![
            pattern(
                "serviceAccount:service-*@gcp-sa-*.iam.gserviceaccount.com",
                23,
            ),
            pattern("user:break-glass@acme.com", 24),
        ],
        allowed_roles: vec![
            "roles/run.invoker".into(),
            "roles/iap.httpsResourceAccessor".into(),
        ],
        guards: Guards {
            max_removals: 25,
            max_removal_ratio: 0.5,
            allow_once: Vec::new(),
        },
        audits: Audits {
            max_token_lifetime: Duration::from_secs(3600),
            max_signing_key_age: Duration::from_secs(90 * 86400),
            require_coverage: false,
        },
        pacing: Default::default(),
    }
}

/// An access-policy builder. Lines are assigned in order so `file:line` stays predictable:
/// the document at line 1, services from line 6, exposure at 20, invokers from line 30.
pub struct P {
    pub policy: AccessPolicy,
    file: String,
}

pub fn policy(name: &str) -> P {
    let file = format!("policies/teams/{name}.yaml");
    P {
        policy: AccessPolicy {
            name: name.into(),
            source: src(&file, 1),
            mode: Mode::Enforce,
            services: vec![],
            exposure: Exposure::default(),
            invokers: vec![],
        },
        file,
    }
}

impl P {
    pub fn file(mut self, file: &str) -> P {
        self.file = file.into();
        self.policy.source = src(file, 1);
        self
    }
    pub fn mode(mut self, mode: Mode) -> P {
        self.policy.mode = mode;
        self
    }
    fn sref(mut self, project: &str, region: &str, target: ServiceTarget) -> P {
        let line = 6 + 3 * self.policy.services.len();
        self.policy.services.push(ServiceRef {
            project: project.into(),
            region: if region == "*" {
                RegionRef::Any
            } else {
                RegionRef::Named(region.into())
            },
            target,
            source: src(&self.file, line),
        });
        self
    }
    /// `"project/region/name"`.
    pub fn service(self, id: &str) -> P {
        let parts: Vec<&str> = id.split('/').collect();
        self.sref(parts[0], parts[1], ServiceTarget::Named(parts[2].into()))
    }
    /// Region may be `"*"`.
    pub fn selector(self, project: &str, region: &str, labels: &[(&str, &str)]) -> P {
        let sel = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.sref(project, region, ServiceTarget::Selector(sel))
    }
    fn exposure(mut self, f: impl FnOnce(&mut Exposure)) -> P {
        f(&mut self.policy.exposure);
        self.policy.exposure.source = Some(src(&self.file, 20));
        self
    }
    pub fn ingress(self, i: Ingress) -> P {
        self.exposure(|e| e.ingress = Some(i))
    }
    pub fn public(self, v: bool) -> P {
        self.exposure(|e| e.public = Some(v))
    }
    pub fn iap(self, v: bool) -> P {
        self.exposure(|e| e.iap = Some(v))
    }
    pub fn audiences(self, a: &[&str]) -> P {
        self.exposure(|e| e.audiences = Some(a.iter().map(|s| s.to_string()).collect()))
    }
    fn invoker(mut self, principal: Principal, expires: Option<&str>) -> P {
        let line = 30 + 2 * self.policy.invokers.len();
        self.policy.invokers.push(Invoker {
            principal,
            expires: expires.map(at),
            source: src(&self.file, line),
        });
        self
    }
    pub fn role(self, r: &str) -> P {
        self.invoker(Principal::Auth0Role(r.into()), None)
    }
    pub fn role_until(self, r: &str, ts: &str) -> P {
        self.invoker(Principal::Auth0Role(r.into()), Some(ts))
    }
    pub fn member(self, text: &str) -> P {
        self.invoker(Principal::Member(m(text)), None)
    }
    pub fn member_until(self, text: &str, ts: &str) -> P {
        self.invoker(Principal::Member(m(text)), Some(ts))
    }
    pub fn machine(self, name: &str) -> P {
        self.invoker(Principal::Machine(name.into()), None)
    }
    pub fn build(self) -> AccessPolicy {
        self.policy
    }
}

pub fn desired(settings: Settings, policies: Vec<P>) -> Desired {
    let mut policies: Vec<AccessPolicy> = policies.into_iter().map(P::build).collect();
    policies.sort_by(|a, b| a.name.cmp(&b.name));
    Desired { settings, policies }
}

/// A live-world builder.
pub struct W(pub LiveState);

pub fn world() -> W {
    let mut live = LiveState::default();
    live.project_numbers
        .insert("acme-prod".into(), 123456789012);
    live.project_numbers
        .insert("acme-staging".into(), 210987654321);
    live.directory.members_resolved = true;
    W(live)
}

pub fn sid(id: &str) -> ServiceId {
    let parts: Vec<&str> = id.split('/').collect();
    ServiceId::new(parts[0], parts[1], parts[2])
}

impl W {
    /// A service with the given labels, ingress `all`, an empty (read) IAM policy.
    pub fn svc(mut self, id: &str, labels: &[(&str, &str)]) -> W {
        let sid = sid(id);
        self.0.services.insert(
            sid.clone(),
            LiveService {
                id: sid.clone(),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                annotations: Default::default(),
                settings: ServiceSettings {
                    ingress: Some(Ingress::All),
                    invoker_iam_disabled: false,
                    custom_audiences: vec![],
                    iap_enabled: false,
                },
                etag: format!("svc-etag-{}", sid.name),
                uri: Some(format!("https://{}-xyz.a.run.app", sid.name)),
                iam: Some(Policy {
                    version: 1,
                    etag: format!("iam-etag-{}", sid.name),
                    bindings: vec![],
                }),
                iap_iam: None,
                read_error: None,
            },
        );
        self
    }
    pub fn service_mut(&mut self, id: &str) -> &mut LiveService {
        self.0
            .services
            .get_mut(&sid(id))
            .unwrap_or_else(|| panic!("no service {id}"))
    }
    pub fn with(mut self, id: &str, f: impl FnOnce(&mut LiveService)) -> W {
        f(self.service_mut(id));
        self
    }
    fn add_binding(
        policy: &mut Policy,
        role: &str,
        condition: Option<Condition>,
        members: &[&str],
    ) {
        if condition.is_some() {
            policy.version = 3;
        }
        policy.bindings.push(Binding {
            role: role.into(),
            members: members.iter().map(|s| m(s)).collect::<BTreeSet<_>>(),
            condition,
        });
    }
    pub fn bind(self, id: &str, role: &str, members: &[&str]) -> W {
        self.with(id, |s| {
            W::add_binding(s.iam.as_mut().unwrap(), role, None, members)
        })
    }
    pub fn bind_if(
        self,
        id: &str,
        role: &str,
        title: &str,
        expression: &str,
        members: &[&str],
    ) -> W {
        let c = Condition {
            title: title.into(),
            description: None,
            expression: expression.into(),
        };
        self.with(id, |s| {
            W::add_binding(s.iam.as_mut().unwrap(), role, Some(c), members)
        })
    }
    /// Marks the IAP policy as read (empty unless members are given).
    pub fn iap_bind(self, id: &str, role: &str, members: &[&str]) -> W {
        self.with(id, |s| {
            let name = s.id.name.clone();
            let p = s.iap_iam.get_or_insert_with(|| Policy {
                version: 1,
                etag: format!("iap-etag-{name}"),
                bindings: vec![],
            });
            if !members.is_empty() {
                W::add_binding(p, role, None, members);
            }
        })
    }
    pub fn ingress(self, id: &str, i: Option<Ingress>) -> W {
        self.with(id, |s| s.settings.ingress = i)
    }
    /// A directory role; members are `(user_id, email, verified)`.
    pub fn role(mut self, name: &str, members: &[(&str, &str, bool)]) -> W {
        let mut users: Vec<User> = members
            .iter()
            .map(|(id, email, verified)| User {
                user_id: id.to_string(),
                email: if email.is_empty() {
                    None
                } else {
                    Some(email.to_string())
                },
                email_verified: *verified,
                blocked: false,
                via_groups: vec![],
                direct: true,
            })
            .collect();
        users.sort();
        self.0.directory.roles.insert(
            name.into(),
            Role {
                id: format!("rol_{name}"),
                name: name.into(),
                members: users,
                empty_groups: vec![],
            },
        );
        self
    }
    /// Records that `group`, assigned to the (already added) role `role`, came back empty.
    pub fn empty_group(mut self, role: &str, group: &str) -> W {
        let r = self.0.directory.roles.get_mut(role).expect("add the role first");
        r.empty_groups.push(group.into());
        r.empty_groups.sort();
        self
    }
    pub fn build(self) -> LiveState {
        self.0
    }
}

/// The compact rendering the rule cases compare against: one line per service header, member
/// change, setting change, emptied binding and finding. Keep lines show `=`.
pub fn compact(plan: &Plan) -> String {
    let mut out = String::new();
    for s in &plan.services {
        let mode = match s.mode {
            PlanMode::Enforce => "",
            PlanMode::Warn => " [warn]",
            PlanMode::Observe => " [observe]",
        };
        out.push_str(&format!("{}{mode}\n", s.id));
        for (kind, r) in [("iam", &s.iam), ("iap", &s.iap)] {
            let Some(r) = r else { continue };
            for c in &r.changes {
                let sym = match c.action {
                    Action::Add => "+",
                    Action::Remove => "-",
                    Action::Keep => "=",
                };
                let role = c.role.trim_start_matches("roles/");
                let cond = c
                    .condition
                    .as_ref()
                    .map(|c| format!("?{}", c.title))
                    .unwrap_or_default();
                let origin = c
                    .origin
                    .map(|o| format!(" [{}]", o.as_str()))
                    .unwrap_or_default();
                out.push_str(&format!(
                    "  {kind} {sym} {role}{cond} {} {}{origin}\n",
                    c.member,
                    c.reason.as_str()
                ));
            }
            for e in &r.emptied_bindings {
                out.push_str(&format!(
                    "  {kind} ! emptied {} by {}\n",
                    e.role.trim_start_matches("roles/"),
                    e.empty_roles.join(",")
                ));
            }
            for e in &r.emptied_groups {
                let groups: Vec<String> = e.groups.iter().map(|g| format!("{}/{}", g.auth0_role, g.group)).collect();
                out.push_str(&format!(
                    "  {kind} ! loses {} by empty group {}\n",
                    e.role.trim_start_matches("roles/"),
                    groups.join(",")
                ));
            }
        }
        for c in &s.settings {
            let origin = c
                .origin
                .map(|o| format!(" [{}]", o.as_str()))
                .unwrap_or_default();
            out.push_str(&format!(
                "  set {} {} -> {}{origin}\n",
                c.update_mask_path, c.before, c.after
            ));
        }
        // A record-only entry (in sync, the last-applied record to write); with changes the
        // record is bookkeeping these cases do not spell out.
        if let Some(n) = s.record_members.filter(|_| !s.has_changes()) {
            out.push_str(&format!("  record {n}\n"));
        }
    }
    for f in &plan.findings {
        let svc = f
            .service
            .as_deref()
            .map(|s| format!(" {s}"))
            .unwrap_or_default();
        out.push_str(&format!("! {} {}{svc}\n", f.severity.as_str(), f.code));
    }
    out
}

/// Normalises an expected block: trims each line's common indentation and surrounding blank lines.
pub fn dedent(text: &str) -> String {
    let lines: Vec<&str> = text.lines().skip_while(|l| l.trim().is_empty()).collect();
    let indent = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let mut out: Vec<String> = lines
        .iter()
        .map(|l| {
            if l.len() >= indent {
                l[indent..].trim_end().to_string()
            } else {
                String::new()
            }
        })
        .collect();
    while out.last().is_some_and(|l| l.is_empty()) {
        out.pop();
    }
    let mut s = out.join("\n");
    if !s.is_empty() {
        s.push('\n');
    }
    s
}
