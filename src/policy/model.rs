//! The validated desired model: what the policy files say, after every check has passed.
//!
//! Everything here is a plain value with no I/O and no serde: the YAML wire types are private to
//! the loader, which converts them by hand. Each item remembers where it was written (`Source`)
//! so plans, errors and audit events can point at `file:line`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::iam::Member;

/// Where something was written: a policy file and the 1-based line and column of the item.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Source {
    /// Path as given on the command line joined with the file's path below it.
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// The whole desired state: exactly one `Settings` and any number of access policies, sorted by
/// name.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub settings: Settings,
    pub policies: Vec<AccessPolicy>,
}

/// The `Settings` document: how roles map to principals, where to look, what is owned, guards.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub name: String,
    pub source: Source,
    pub auth0: Auth0Settings,
    pub principals: PrincipalMapping,
    /// Auth0 machine-to-machine applications that stand for Google service accounts.
    pub machines: Vec<MachineIdentity>,
    pub scope: Scope,
    pub foreign_members: ForeignMembers,
    /// Patterns (`*` wildcards) of members runwarden owns besides the mapping's own principals.
    pub owned: Vec<MemberPattern>,
    /// Patterns of members that are never removed, whatever the mode.
    pub keep: Vec<MemberPattern>,
    /// Roles that policies may grant. Always contains the roles runwarden itself manages.
    pub allowed_roles: Vec<String>,
    pub guards: Guards,
    pub audits: Audits,
    /// Request rates pinned per API (`spec.pacing`).
    pub pacing: Pacing,
}

/// Request-rate pins (`spec.pacing`): each is the ceiling for its API and turns off learning
/// that API's limit. `None`: learned (Google quotas, Auth0 headers) or probed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pacing {
    pub cloud_run_reads: Option<crate::rate::Rate>,
    pub writes: Option<crate::rate::Rate>,
    pub iap: Option<crate::rate::Rate>,
    pub auth0: Option<crate::rate::Rate>,
    /// Where Google quotas are read (default: the first project in scope).
    pub quota_project: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth0Settings {
    /// Tenant domain, e.g. `acme.eu.auth0.com` (no scheme).
    pub domain: String,
    pub client_id: String,
    /// Name of the environment variable that holds the client secret. The secret itself is
    /// never part of the model.
    pub client_secret_env: String,
    /// Whether roles held through Auth0 groups are read (`spec.auth0.groups`, default `read`).
    pub read_groups: bool,
    /// Token issuers `check-token` accepts (`spec.auth0.issuers`), each exactly as a token's
    /// `iss` says it; empty means the canonical `https://DOMAIN/` alone (see [`Self::issuers`]).
    pub issuers: Vec<String>,
}

impl Auth0Settings {
    /// The canonical tenant's issuer, `https://DOMAIN/` (Auth0 issuers end with `/`).
    pub fn canonical_issuer(&self) -> String {
        format!("https://{}/", self.domain)
    }

    /// The accepted token issuers: `spec.auth0.issuers`, or the canonical issuer alone.
    pub fn issuers(&self) -> Vec<String> {
        if self.issuers.is_empty() { vec![self.canonical_issuer()] } else { self.issuers.clone() }
    }
}

/// How an Auth0 role becomes IAM members (DESIGN §2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalMapping {
    /// Role `R` → `principalSet://iam.googleapis.com/locations/global/workforcePools/POOL/group/R`.
    WorkforcePool { pool: String },
    /// Role `R` → `user:EMAIL` for each verified member whose e-mail is in one of the domains.
    Users { email_domains: Vec<String> },
}

impl PrincipalMapping {
    /// The member prefix every principal of a workforce pool starts with.
    pub fn pool_prefix(pool: &str) -> String {
        format!("principalSet://iam.googleapis.com/locations/global/workforcePools/{pool}/")
    }
}

/// An Auth0 M2M application mapped to the Google service account it acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineIdentity {
    /// The name policies use (`invokers: - machine: NAME`).
    pub name: String,
    pub auth0_client_id: String,
    /// A `serviceAccount:` member.
    pub service_account: Member,
    pub source: Source,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub projects: Vec<String>,
    /// May be empty; then selectors and `region: "*"` are not allowed.
    pub regions: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForeignMembers {
    #[default]
    Keep,
    Remove,
}

/// A member pattern: the literal text of a member in which `*` matches any run of characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberPattern {
    pub pattern: String,
    pub source: Source,
}

impl MemberPattern {
    /// Whether `member` matches this pattern (`*` matches any, possibly empty, substring).
    pub fn matches(&self, member: &str) -> bool {
        glob_match(&self.pattern, member)
    }
}

/// `*`-only glob matching, linear in practice (no backtracking blow-up for the patterns used).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] != b'*' && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

#[derive(Debug, Clone, PartialEq)]
pub struct Guards {
    /// At most this many member removals per apply.
    pub max_removals: usize,
    /// At most this share (0..=1) of owned members removed per apply.
    pub max_removal_ratio: f64,
    /// `guards.allowOnce`: allowances (`POLICIES@DIGEST`) for held removals, reviewed in the
    /// policy repository; see `plan::guards`.
    pub allow_once: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audits {
    pub max_token_lifetime: Duration,
    pub max_signing_key_age: Duration,
    /// Every service in scope must be governed by some policy.
    pub require_coverage: bool,
}

/// Enforcement mode of an access policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Mode {
    /// Plan and apply.
    #[default]
    Enforce,
    /// Plan and report, never apply.
    Warn,
    /// Only report drift.
    Observe,
}

/// One `AccessPolicy` document.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessPolicy {
    pub name: String,
    pub source: Source,
    pub mode: Mode,
    pub services: Vec<ServiceRef>,
    pub exposure: Exposure,
    pub invokers: Vec<Invoker>,
}

/// Which services a policy governs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRef {
    pub project: String,
    pub region: RegionRef,
    pub target: ServiceTarget,
    pub source: Source,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegionRef {
    Named(String),
    /// `"*"`: every region in `Settings.scope.regions`.
    Any,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceTarget {
    Named(String),
    /// Every service whose labels contain all of these pairs.
    Selector(BTreeMap<String, String>),
}

/// Cloud Run ingress settings, as policies name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Ingress {
    All,
    Internal,
    InternalAndCloudLoadBalancing,
    None,
}

impl Ingress {
    /// The Cloud Run Admin API v2 enum value.
    pub fn api_value(self) -> &'static str {
        match self {
            Ingress::All => "INGRESS_TRAFFIC_ALL",
            Ingress::Internal => "INGRESS_TRAFFIC_INTERNAL_ONLY",
            Ingress::InternalAndCloudLoadBalancing => "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER",
            Ingress::None => "INGRESS_TRAFFIC_NONE",
        }
    }

    /// Parses the API value; `INGRESS_TRAFFIC_UNSPECIFIED` and unknown values are `None`.
    pub fn from_api_value(value: &str) -> Option<Ingress> {
        Some(match value {
            "INGRESS_TRAFFIC_ALL" => Ingress::All,
            "INGRESS_TRAFFIC_INTERNAL_ONLY" => Ingress::Internal,
            "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER" => Ingress::InternalAndCloudLoadBalancing,
            "INGRESS_TRAFFIC_NONE" => Ingress::None,
            _ => return Option::None,
        })
    }

    /// The spelling used in policy files.
    pub fn policy_value(self) -> &'static str {
        match self {
            Ingress::All => "all",
            Ingress::Internal => "internal",
            Ingress::InternalAndCloudLoadBalancing => "internal-and-cloud-load-balancing",
            Ingress::None => "none",
        }
    }
}

/// Exposure settings; `None` means "the policy does not manage this field".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Exposure {
    pub ingress: Option<Ingress>,
    pub public: Option<bool>,
    pub iap: Option<bool>,
    pub audiences: Option<Vec<String>>,
    /// Where the `exposure` block was written (for conflict errors, and plan lines of a field
    /// whose own position is not known).
    pub source: Option<Source>,
    /// Where each field was written: a plan line points at the field that causes the change.
    pub field_sources: ExposureSources,
}

/// Where each exposure field was written; `None` for a field not set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExposureSources {
    pub ingress: Option<Source>,
    pub public: Option<Source>,
    pub iap: Option<Source>,
    pub audiences: Option<Source>,
}

/// One entry of `invokers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoker {
    pub principal: Principal,
    /// A time-boxed grant: rendered as an IAM condition on `request.time`.
    pub expires: Option<SystemTime>,
    pub source: Source,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Principal {
    /// An Auth0 role, mapped through `Settings.principals`.
    Auth0Role(String),
    /// A literal IAM member (machine identities, groups).
    Member(Member),
    /// An Auth0 M2M application, by its name in `Settings.machines`; resolved to its service
    /// account.
    Machine(String),
}
