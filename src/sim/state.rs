//! The simulator's mutable world: projects, services with their IAM policies, long-running
//! operations, and the Auth0 tenant, built from a [`World`] (plus its `generate` section).
//!
//! Everything here is plain data behind one mutex in `SimState`; handlers lock it, do their
//! synchronous work, and unlock before any await. Users are stored once and referred to by index,
//! which keeps a generated estate of 50,000 users and 10,000 services small.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::iam::{Binding, Condition, Member, Policy};

use super::SimError;
use super::faults::SplitMix;
use super::world::{IngressValue, KeyStatus, PolicySpec, World};

/// The etag of a policy that was never written.
pub const EMPTY_ETAG: &str = "ACAB";

/// `(project, region, name)`; ordered so a range scan lists one region's services by name.
pub type SvcKey = (String, String, String);

/// A Google Cloud project.
#[derive(Debug, Clone)]
pub struct Project {
    pub id: String,
    pub number: u64,
    pub display_name: String,
    /// Whether the IAP service agent (`service-NUMBER@gcp-sa-iap.iam.gserviceaccount.com`)
    /// exists. Google creates it lazily: when IAP is first used in the project or on Service
    /// Usage `services.generateServiceIdentity` for `iap.googleapis.com`
    /// (reference/google/serviceusage.v1beta1.json). A world starts with it where a service
    /// already has IAP on.
    pub iap_agent: bool,
    /// The project's IAM policy (inherited by its services).
    pub iam: Policy,
    /// `folders/N` or `organizations/N`, if any.
    pub parent: Option<String>,
}

/// A folder or organization above the projects.
#[derive(Debug, Clone)]
pub struct Ancestor {
    pub display_name: String,
    /// A folder's parent (`folders/N` or `organizations/N`); `None` for an organization.
    pub parent: Option<String>,
    pub iam: Policy,
}

/// One IAM resource (a service's policy or its IAP resource's policy).
#[derive(Debug, Clone, Default)]
pub struct IamResource {
    /// Stored bindings and etag (`version` is derived on read).
    pub policy: Policy,
    /// Set by a read when the concurrent writer should strike before the next write.
    pub armed: bool,
}

impl IamResource {
    fn new(policy: Policy) -> IamResource {
        IamResource {
            policy,
            armed: false,
        }
    }
}

/// A Cloud Run service.
#[derive(Debug, Clone)]
pub struct Service {
    pub uid: String,
    pub generation: u64,
    pub labels: BTreeMap<String, String>,
    /// `annotations` (run.v2.json `GoogleCloudRunV2Service.annotations`: a string map).
    pub annotations: BTreeMap<String, String>,
    pub ingress: IngressValue,
    pub invoker_iam_disabled: bool,
    pub custom_audiences: Vec<String>,
    pub iap_enabled: bool,
    pub uri: String,
    pub create_time: String,
    pub update_time: String,
    pub etag: String,
    /// True while a patch operation runs.
    pub reconciling: bool,
    pub iam: IamResource,
    pub iap: IamResource,
}

/// The managed fields a `services.patch` may change.
#[derive(Debug, Clone, Default)]
pub struct ServicePatch {
    pub ingress: Option<IngressValue>,
    pub invoker_iam_disabled: Option<bool>,
    pub custom_audiences: Option<Vec<String>>,
    pub iap_enabled: Option<bool>,
    pub labels: Option<BTreeMap<String, String>>,
    pub annotations: Option<BTreeMap<String, String>>,
}

/// A `services.patch` long-running operation.
#[derive(Debug, Clone)]
pub struct Operation {
    pub name: String,
    pub service: SvcKey,
    pub done_at: Instant,
    pub patch: ServicePatch,
    /// Decided when the operation starts (so a test can rely on the fault rate at that time).
    pub fails: bool,
    pub done: bool,
}

/// An Auth0 user.
#[derive(Debug, Clone)]
pub struct UserRec {
    pub user_id: String,
    pub email: String,
    pub email_verified: bool,
    pub blocked: bool,
    pub name: String,
    /// What user search still sees of a recent change, until the index catches up.
    pub searched: Option<SearchView>,
}

/// A user as the (lagging) search index still has it: (`email_verified`, `blocked`) until
/// `until`.
#[derive(Debug, Clone)]
pub struct SearchView {
    pub email_verified: bool,
    pub blocked: bool,
    pub until: Instant,
}

impl UserRec {
    /// The user as user search returns it at `now`: the state before a change the index has
    /// not caught up with yet.
    pub fn as_searched(&self, now: Instant) -> UserRec {
        let mut u = self.clone();
        if let Some(v) = self.searched.as_ref().filter(|v| now < v.until) {
            u.email_verified = v.email_verified;
            u.blocked = v.blocked;
        }
        u.searched = None;
        u
    }
}

/// An Auth0 role; `users` and `groups` are indices, users sorted by user id.
#[derive(Debug, Clone)]
pub struct RoleRec {
    pub id: String,
    pub name: String,
    pub description: String,
    pub users: Vec<u32>,
    pub groups: Vec<u32>,
}

/// An Auth0 group; members sorted by user id.
#[derive(Debug, Clone)]
pub struct GroupRec {
    pub id: String,
    pub name: String,
    pub members: Vec<u32>,
    /// Groups nested in this one (indexes).
    pub nested: Vec<u32>,
}

/// An Auth0 resource server (API).
#[derive(Debug, Clone)]
pub struct ResourceServer {
    pub id: String,
    pub identifier: String,
    pub name: String,
    pub token_lifetime: u64,
    pub enforce_policies: bool,
    pub signing_alg: String,
    /// `subject_type_authorization.user.policy` and `.client.policy`, when set.
    pub user_access_policy: Option<String>,
    pub client_access_policy: Option<String>,
}

/// A tenant signing key; `key` indexes the embedded key pairs.
#[derive(Debug, Clone)]
pub struct SigningKey {
    pub kid: String,
    pub status: KeyStatus,
    pub created_at: String,
    pub key: usize,
    /// Served without `current_since`.
    pub omit_since: bool,
}

/// The Auth0 tenant.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub domain: String,
    pub client_id: String,
    pub client_secret: String,
    /// Scopes granted to the Management API client, space-separated.
    pub client_scopes: String,
    pub users: Vec<UserRec>,
    pub user_by_id: HashMap<String, u32>,
    pub roles: Vec<RoleRec>,
    pub groups: Vec<GroupRec>,
    pub resource_servers: Vec<ResourceServer>,
    pub signing_keys: Vec<SigningKey>,
    /// Host names serving the tenant as custom domains (world `auth0.customDomains`).
    pub custom_domains: Vec<String>,
    /// The tenant's Organizations: (id, name, display name), sorted by id.
    pub organizations: Vec<(String, String, String)>,
}

impl Tenant {
    /// The Management API audience.
    pub fn audience(&self) -> String {
        format!("https://{}/api/v2/", self.domain)
    }

    /// The token issuer.
    pub fn issuer(&self) -> String {
        format!("https://{}/", self.domain)
    }

    /// The issuer as a request reached the tenant: `http://HOST/` (HOST as the `Host` header
    /// says it, port included) when its host name is one of the custom domains, else the
    /// canonical [`Tenant::issuer`].
    pub fn issuer_for_host(&self, host: Option<&str>) -> String {
        let name = |h: &str| h.rsplit_once(':').map_or(h, |(n, _)| n).to_ascii_lowercase();
        match host {
            Some(h) if self.custom_domains.iter().any(|d| d.eq_ignore_ascii_case(&name(h))) => format!("http://{h}/"),
            _ => self.issuer(),
        }
    }

    /// The current signing key.
    pub fn current_key(&self) -> Option<&SigningKey> {
        self.signing_keys
            .iter()
            .find(|k| k.status == KeyStatus::Current)
    }
}

/// Simulator settings that tests may change at run time.
#[derive(Debug, Clone)]
pub struct Config {
    pub operation_delay: Duration,
    pub access_token_lifetime: Duration,
    pub management_token_lifetime: Duration,
    pub service_account: String,
    /// Permissions the credential lacks (`simulator.missingPermissions`).
    pub missing_permissions: std::collections::BTreeSet<String>,
    /// How long a user change takes to reach user search (`simulator.searchIndexLag`).
    pub search_index_lag: Duration,
}

/// Everything the APIs read and write.
#[derive(Debug)]
pub struct Store {
    pub projects: BTreeMap<String, Project>,
    /// Folders and organizations by name (`folders/N`, `organizations/N`).
    pub hierarchy: BTreeMap<String, Ancestor>,
    pub project_by_number: HashMap<u64, String>,
    pub services: BTreeMap<SvcKey, Service>,
    pub operations: HashMap<String, Operation>,
    /// Names of operations not yet done (so settling is cheap when there are none).
    pub pending: Vec<String>,
    pub tenant: Tenant,
    pub config: Config,
    /// The world file's `history` (Admin Activity entries from before the start).
    pub audit_seed: Vec<super::world::HistorySpec>,
    /// The world file's `settingsHistory` (`UpdateService` entries from before the start).
    pub settings_seed: Vec<super::world::SettingHistorySpec>,
    etag_counter: u64,
}

impl Store {
    /// A fresh IAM-style etag: 8 bytes, base64, starting `BwY` like Google's.
    pub fn next_etag(&mut self) -> String {
        use base64::Engine;
        self.etag_counter += 1;
        let mut bytes = [0u8; 8];
        bytes[0] = 0x07;
        bytes[1] = 0x06;
        bytes[2..].copy_from_slice(&self.etag_counter.to_be_bytes()[2..]);
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    /// A fresh service etag (Cloud Run v2 etags are opaque quoted-looking strings).
    pub fn next_service_etag(&mut self) -> String {
        use base64::Engine;
        self.etag_counter += 1;
        let raw = format!("sim-gen-{}", self.etag_counter);
        format!(
            "\"{}\"",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(raw)
        )
    }

    /// Finishes every operation whose delay has passed, applying its patch.
    pub fn settle(&mut self, now: Instant) {
        if self.pending.is_empty() {
            return;
        }
        let mut still = Vec::new();
        for name in std::mem::take(&mut self.pending) {
            let Some(op) = self.operations.get(&name) else {
                continue;
            };
            if op.done_at > now {
                still.push(name);
                continue;
            }
            let (key, patch, fails) = (op.service.clone(), op.patch.clone(), op.fails);
            let etag = self.next_service_etag();
            let time = rfc3339(SystemTime::now());
            if let Some(svc) = self.services.get_mut(&key) {
                svc.reconciling = false;
                if !fails {
                    apply_patch(svc, &patch);
                    svc.generation += 1;
                    svc.etag = etag;
                    svc.update_time = time;
                }
            }
            if let Some(op) = self.operations.get_mut(&name) {
                op.done = true;
            }
        }
        self.pending = still;
    }

    /// Builds the store from a world file (and its `generate` section).
    pub fn from_world(world: &World, secret_seed: u64) -> Result<Store, SimError> {
        let config = config_of(world)?;
        let now = rfc3339(SystemTime::now());
        let mut store = Store {
            projects: BTreeMap::new(),
            hierarchy: hierarchy_of(world)?,
            project_by_number: HashMap::new(),
            services: BTreeMap::new(),
            operations: HashMap::new(),
            pending: Vec::new(),
            tenant: empty_tenant(world, secret_seed),
            config,
            audit_seed: world.history.clone(),
            settings_seed: world.settings_history.clone(),
            etag_counter: 0,
        };
        for p in &world.projects {
            store.add_project(Project {
                id: p.id.clone(),
                number: p.number,
                display_name: p.display_name.clone().unwrap_or_else(|| p.id.clone()),
                iap_agent: false,
                iam: policy_from_spec(p.iam.as_ref())
                    .map_err(|e| SimError::World(format!("project {}: iam: {e}", p.id)))?,
                parent: match &p.parent {
                    Some(parent) => Some(ancestor_name(parent).map_err(|e| SimError::World(format!("project {}: parent: {e}", p.id)))?),
                    None => None,
                },
            })?;
        }
        for s in &world.services {
            store.add_service(s, &now)?;
        }
        for h in &world.settings_history {
            if !matches!(h.field.as_str(), "ingress" | "invokerIamDisabled" | "iapEnabled" | "customAudiences") {
                return Err(SimError::World(format!(
                    "settingsHistory {}: field {:?} is not one of ingress, invokerIamDisabled, iapEnabled, customAudiences",
                    h.service, h.field
                )));
            }
            if !matches!(h.api.as_str(), "v1" | "v2") {
                return Err(SimError::World(format!("settingsHistory {}: api {:?} is not v1 or v2", h.service, h.api)));
            }
        }
        let used_iap: Vec<String> =
            store.services.iter().filter(|(_, s)| s.iap_enabled).map(|(k, _)| k.0.clone()).collect();
        for project in used_iap {
            if let Some(p) = store.projects.get_mut(&project) {
                p.iap_agent = true;
            }
        }
        if let Some(a) = &world.auth0 {
            fill_tenant(&mut store.tenant, a)?;
        }
        if let Some(g) = &world.generate {
            super::generate::generate(&mut store, g, &now)?;
        }
        Ok(store)
    }

    /// Adds a service of the world file, its policies seeded.
    fn add_service(&mut self, s: &super::world::ServiceSpec, now: &str) -> Result<(), SimError> {
        let where_ = format!("service {}/{}/{}", s.project, s.region, s.name);
        let Some(project) = self.projects.get(&s.project) else {
            return Err(SimError::World(format!(
                "{where_}: project {:?} is not listed under projects",
                s.project
            )));
        };
        let number = project.number;
        let mut iam = policy_from_spec(s.iam.as_ref())
            .map_err(|e| SimError::World(format!("{where_}: iam: {e}")))?;
        let mut iap = policy_from_spec(s.iap_iam.as_ref())
            .map_err(|e| SimError::World(format!("{where_}: iapIam: {e}")))?;
        // Only a never-written, empty policy reads as `ACAB`; a seeded one has a real etag.
        for p in [&mut iam, &mut iap] {
            if !p.bindings.is_empty() {
                p.etag = self.next_etag();
            }
        }
        let key = (s.project.clone(), s.region.clone(), s.name.clone());
        if self.services.contains_key(&key) {
            return Err(SimError::World(format!("{where_} is listed twice")));
        }
        let etag = self.next_service_etag();
        let svc = Service {
            uid: uid_for(&key),
            generation: 1,
            labels: s.labels.clone(),
            annotations: s.annotations.clone(),
            ingress: s.ingress,
            invoker_iam_disabled: s.invoker_iam_disabled,
            custom_audiences: s.custom_audiences.clone(),
            iap_enabled: s.iap_enabled,
            uri: s
                .uri
                .clone()
                .unwrap_or_else(|| default_uri(&s.name, number, &s.region)),
            create_time: now.to_string(),
            update_time: now.to_string(),
            etag,
            reconciling: false,
            iam: IamResource::new(iam),
            iap: IamResource::new(iap),
        };
        self.services.insert(key, svc);
        Ok(())
    }

    pub fn add_project(&mut self, p: Project) -> Result<(), SimError> {
        if self.projects.contains_key(&p.id) || self.project_by_number.contains_key(&p.number) {
            return Err(SimError::World(format!(
                "project {} (number {}) is listed twice",
                p.id, p.number
            )));
        }
        self.project_by_number.insert(p.number, p.id.clone());
        self.projects.insert(p.id.clone(), p);
        Ok(())
    }

    /// Adds a user and returns its index.
    pub fn add_user(&mut self, user: UserRec) -> u32 {
        let t = &mut self.tenant;
        let index = t.users.len() as u32;
        t.user_by_id.insert(user.user_id.clone(), index);
        t.users.push(user);
        index
    }
}

/// Applies the managed fields of a patch.
pub fn apply_patch(svc: &mut Service, p: &ServicePatch) {
    if let Some(v) = p.ingress {
        svc.ingress = v;
    }
    if let Some(v) = p.invoker_iam_disabled {
        svc.invoker_iam_disabled = v;
    }
    if let Some(v) = &p.custom_audiences {
        svc.custom_audiences = v.clone();
    }
    if let Some(v) = p.iap_enabled {
        svc.iap_enabled = v;
    }
    if let Some(v) = &p.labels {
        svc.labels = v.clone();
    }
    if let Some(v) = &p.annotations {
        svc.annotations = v.clone();
    }
}

/// The `uri` Cloud Run derives: `https://NAME-PROJECTNUMBER.REGION.run.app`.
pub fn default_uri(name: &str, number: u64, region: &str) -> String {
    format!("https://{name}-{number}.{region}.run.app")
}

/// A stable UUID-shaped uid derived from the service's name.
pub fn uid_for(key: &SvcKey) -> String {
    let h = fnv(&format!("{}/{}/{}", key.0, key.1, key.2));
    let h2 = fnv(&format!("uid:{h}"));
    uuid_from(h, h2)
}

/// Formats 128 bits as a version-4-looking UUID.
pub fn uuid_from(a: u64, b: u64) -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        (b >> 48) & 0xfff,
        b & 0xffff_ffff_ffff
    )
}

/// FNV-1a, for stable ids derived from names (not for anything secret).
pub fn fnv(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The world's folders and organizations, by name. A parent that is not listed is allowed: it
/// answers like a resource the credential may not read (403).
fn hierarchy_of(world: &World) -> Result<BTreeMap<String, Ancestor>, SimError> {
    let mut out = BTreeMap::new();
    let listed = world
        .organizations
        .iter()
        .map(|o| (format!("organizations/{}", o.id), &o.display_name, None, &o.iam))
        .chain(world.folders.iter().map(|f| (format!("folders/{}", f.id), &f.display_name, Some(&f.parent), &f.iam)));
    for (name, display, parent, iam) in listed {
        let bad = |e: String| SimError::World(format!("{name}: {e}"));
        ancestor_name(&name).map_err(bad)?;
        let parent = match parent {
            Some(p) => Some(ancestor_name(p).map_err(|e| bad(format!("parent: {e}")))?),
            None => None,
        };
        let node = Ancestor {
            display_name: display.clone().unwrap_or_else(|| name.clone()),
            parent,
            iam: policy_from_spec(iam.as_ref()).map_err(|e| bad(format!("iam: {e}")))?,
        };
        if out.insert(name.clone(), node).is_some() {
            return Err(bad("listed twice".into()));
        }
    }
    Ok(out)
}

/// Checks `folders/N` / `organizations/N` (N digits).
fn ancestor_name(name: &str) -> Result<String, String> {
    match name.split_once('/') {
        Some(("folders" | "organizations", id)) if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(name.to_string())
        }
        _ => Err(format!("{name:?} is neither folders/NUMBER nor organizations/NUMBER")),
    }
}

/// Converts a world-file policy, validating members (deleted members allowed here).
pub fn policy_from_spec(spec: Option<&PolicySpec>) -> Result<Policy, String> {
    let Some(spec) = spec else {
        return Ok(Policy {
            version: 0,
            etag: EMPTY_ETAG.into(),
            bindings: vec![],
        });
    };
    let mut bindings: Vec<Binding> = Vec::new();
    for b in &spec.bindings {
        let mut members = BTreeSet::new();
        for m in &b.members {
            members.insert(Member::parse(m).map_err(|e| e.to_string())?);
        }
        let condition = b.condition.as_ref().map(|c| Condition {
            title: c.title.clone(),
            description: c.description.clone(),
            expression: c.expression.clone(),
        });
        merge_binding(&mut bindings, b.role.clone(), members, condition);
    }
    let conditional = bindings.iter().any(|b| b.condition.is_some());
    match spec.version {
        Some(v) if v != 1 && v != 3 => return Err(format!("version {v} is not 1 or 3")),
        Some(1) if conditional => return Err("conditional bindings need version 3".into()),
        _ => {}
    }
    Ok(Policy {
        version: if conditional { 3 } else { 1 },
        etag: EMPTY_ETAG.into(),
        bindings,
    })
}

/// Adds members to the binding with this (role, condition), creating it when needed.
pub fn merge_binding(
    bindings: &mut Vec<Binding>,
    role: String,
    members: BTreeSet<Member>,
    condition: Option<Condition>,
) {
    if members.is_empty() {
        return;
    }
    if let Some(b) = bindings
        .iter_mut()
        .find(|b| b.role == role && b.condition == condition)
    {
        b.members.extend(members);
    } else {
        bindings.push(Binding {
            role,
            members,
            condition,
        });
    }
}

fn empty_tenant(world: &World, secret_seed: u64) -> Tenant {
    let (domain, client_id, secret) = match &world.auth0 {
        Some(a) => (
            a.domain.clone(),
            a.management_client.client_id.clone(),
            a.management_client.client_secret.clone(),
        ),
        None => ("gen.auth0.example".to_string(), "gen".to_string(), None),
    };
    let client_scopes = match world.auth0.as_ref().and_then(|a| a.management_client.scopes.as_ref()) {
        Some(scopes) => scopes.join(" "),
        None => super::auth0::MANAGEMENT_SCOPES.to_string(),
    };
    let client_secret = secret.unwrap_or_else(|| generate_secret(secret_seed));
    Tenant {
        domain,
        client_id,
        client_secret,
        client_scopes,
        users: Vec::new(),
        user_by_id: HashMap::new(),
        roles: Vec::new(),
        groups: Vec::new(),
        resource_servers: Vec::new(),
        signing_keys: default_keys(),
        custom_domains: world.auth0.as_ref().map(|a| a.custom_domains.clone()).unwrap_or_default(),
        organizations: organizations_of(world),
    }
}

/// The world's organizations as (id, name, display name), sorted by id (checkpoint order).
fn organizations_of(world: &World) -> Vec<(String, String, String)> {
    let mut out: Vec<(String, String, String)> = world
        .auth0
        .iter()
        .flat_map(|a| &a.organizations)
        .map(|o| {
            let id = o.id.clone().unwrap_or_else(|| format!("org_{}", short_id(fnv(&format!("org:{}", o.name)))));
            (id, o.name.clone(), o.display_name.clone().unwrap_or_else(|| o.name.clone()))
        })
        .collect();
    out.sort();
    out
}

fn default_keys() -> Vec<SigningKey> {
    vec![
        SigningKey {
            kid: "sim-key-1".into(),
            status: KeyStatus::Current,
            created_at: "2026-01-01T00:00:00.000Z".into(),
            key: 0,
            omit_since: false,
        },
        SigningKey {
            kid: "sim-key-2".into(),
            status: KeyStatus::Next,
            created_at: "2026-01-01T00:00:00.000Z".into(),
            key: 1,
            omit_since: false,
        },
    ]
}

/// A client secret that differs per simulator start (64 URL-safe characters).
fn generate_secret(seed: u64) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = SplitMix(seed);
    (0..64)
        .map(|_| ALPHABET[(rng.next_u64() % 64) as usize] as char)
        .collect()
}

/// An Auth0-looking user id derived from the e-mail.
pub fn user_id_for(email: &str) -> String {
    let a = fnv(email);
    format!("auth0|{:016x}{:08x}", a, fnv(&format!("u:{a}")) as u32)
}

/// An Auth0-looking role id (`rol_` + 16 characters) derived from the name.
pub fn role_id_for(name: &str) -> String {
    format!("rol_{}", short_id(fnv(&format!("role:{name}"))))
}

/// An Auth0-looking group id (`grp_` + 16 characters) derived from the name.
pub fn group_id_for(name: &str) -> String {
    format!("grp_{}", short_id(fnv(&format!("group:{name}"))))
}

fn short_id(mut h: u64) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(16);
    for _ in 0..16 {
        out.push(ALPHABET[(h % 62) as usize] as char);
        h = (h / 62) ^ h.rotate_left(17);
    }
    out
}

/// The simulator's timings and identity, from the world file's `simulator` section.
fn config_of(world: &World) -> Result<Config, SimError> {
    let bad = |m: String| SimError::World(m);
    let sim = world.simulator.clone().unwrap_or_default();
    let dur = |v: &Option<String>, default: Duration, what: &str| match v {
        Some(t) => {
            super::faults::parse_duration(t).map_err(|e| bad(format!("simulator.{what}: {e}")))
        }
        None => Ok(default),
    };
    Ok(Config {
        operation_delay: dur(
            &sim.operation_delay,
            Duration::from_millis(200),
            "operationDelay",
        )?,
        access_token_lifetime: dur(
            &sim.access_token_lifetime,
            Duration::from_secs(3600),
            "accessTokenLifetime",
        )?,
        management_token_lifetime: dur(
            &sim.management_token_lifetime,
            Duration::from_secs(86400),
            "managementTokenLifetime",
        )?,
        service_account: sim
            .service_account
            .unwrap_or_else(|| "runwarden@sim-project.iam.gserviceaccount.com".into()),
        missing_permissions: sim.missing_permissions.into_iter().collect(),
        search_index_lag: dur(&sim.search_index_lag, Duration::ZERO, "searchIndexLag")?,
    })
}

fn fill_tenant(t: &mut Tenant, a: &super::world::Auth0Spec) -> Result<(), SimError> {
    let by_email = fill_users(t, a)?;
    let group_index = fill_groups(t, a, &by_email)?;
    fill_roles(t, a, &by_email, &group_index)?;
    for rs in &a.resource_servers {
        t.resource_servers.push(ResourceServer {
            id: rs
                .id
                .clone()
                .unwrap_or_else(|| format!("{:024x}", fnv(&rs.identifier) as u128 * 7)),
            identifier: rs.identifier.clone(),
            name: rs.name.clone(),
            token_lifetime: rs.token_lifetime,
            enforce_policies: rs.enforce_policies,
            signing_alg: rs.signing_alg.clone(),
            user_access_policy: rs.user_access_policy.clone(),
            client_access_policy: rs.client_access_policy.clone(),
        });
    }
    fill_signing_keys(t, a)
}

/// The tenant's users; returns their indexes by lower-case e-mail.
fn fill_users(
    t: &mut Tenant,
    a: &super::world::Auth0Spec,
) -> Result<HashMap<String, u32>, SimError> {
    let mut by_email: HashMap<String, u32> = HashMap::new();
    for u in &a.users {
        let user_id = u.user_id.clone().unwrap_or_else(|| user_id_for(&u.email));
        if t.user_by_id.contains_key(&user_id) || by_email.contains_key(&u.email.to_lowercase()) {
            return Err(SimError::World(format!(
                "auth0.users: {} is listed twice",
                u.email
            )));
        }
        let index = t.users.len() as u32;
        t.user_by_id.insert(user_id.clone(), index);
        by_email.insert(u.email.to_lowercase(), index);
        t.users.push(UserRec {
            user_id,
            email: u.email.clone(),
            email_verified: u.email_verified,
            blocked: u.blocked,
            name: u.name.clone().unwrap_or_else(|| u.email.clone()),
            searched: None,
        });
    }
    Ok(by_email)
}

/// The indexes of the users `emails` name, sorted by user id, each once.
fn user_indexes(
    t: &Tenant,
    by_email: &HashMap<String, u32>,
    emails: &[String],
    what: &str,
) -> Result<Vec<u32>, SimError> {
    let mut users = Vec::new();
    for email in emails {
        users.push(
            by_email
                .get(&email.to_lowercase())
                .copied()
                .ok_or_else(|| {
                    SimError::World(format!(
                        "{what}: user {email:?} is not listed under auth0.users"
                    ))
                })?,
        );
    }
    users.sort_by(|x, y| {
        t.users[*x as usize]
            .user_id
            .cmp(&t.users[*y as usize].user_id)
    });
    users.dedup();
    Ok(users)
}

/// The tenant's groups; returns their indexes by name.
fn fill_groups(
    t: &mut Tenant,
    a: &super::world::Auth0Spec,
    by_email: &HashMap<String, u32>,
) -> Result<HashMap<String, u32>, SimError> {
    let mut group_index: HashMap<String, u32> = HashMap::new();
    for g in &a.groups {
        let members = user_indexes(t, by_email, &g.members, &format!("auth0.groups.{}", g.name))?;
        group_index.insert(g.name.clone(), t.groups.len() as u32);
        t.groups.push(GroupRec {
            id: g.id.clone().unwrap_or_else(|| group_id_for(&g.name)),
            name: g.name.clone(),
            members,
            nested: Vec::new(),
        });
    }
    for (i, g) in a.groups.iter().enumerate() {
        for n in &g.groups {
            let nested = *group_index.get(n).ok_or_else(|| {
                SimError::World(format!(
                    "auth0.groups.{}: nested group {n:?} is not listed under auth0.groups",
                    g.name
                ))
            })?;
            t.groups[i].nested.push(nested);
        }
    }
    Ok(group_index)
}

fn fill_roles(
    t: &mut Tenant,
    a: &super::world::Auth0Spec,
    by_email: &HashMap<String, u32>,
    group_index: &HashMap<String, u32>,
) -> Result<(), SimError> {
    for r in &a.roles {
        let users = user_indexes(t, by_email, &r.users, &format!("auth0.roles.{}", r.name))?;
        let mut groups = Vec::new();
        for g in &r.groups {
            groups.push(*group_index.get(g).ok_or_else(|| {
                SimError::World(format!(
                    "auth0.roles.{}: group {g:?} is not listed under auth0.groups",
                    r.name
                ))
            })?);
        }
        t.roles.push(RoleRec {
            id: r.id.clone().unwrap_or_else(|| role_id_for(&r.name)),
            name: r.name.clone(),
            description: r.description.clone().unwrap_or_default(),
            users,
            groups,
        });
    }
    Ok(())
}

fn fill_signing_keys(t: &mut Tenant, a: &super::world::Auth0Spec) -> Result<(), SimError> {
    if a.signing_keys.is_empty() {
        return Ok(());
    }
    if a.signing_keys.len() > super::keys::AUTH0_KEY_COUNT {
        return Err(SimError::World(format!(
            "auth0.signingKeys: at most {} keys (the simulator embeds that many test keys)",
            super::keys::AUTH0_KEY_COUNT
        )));
    }
    if a.signing_keys
        .iter()
        .filter(|k| k.status == KeyStatus::Current)
        .count()
        != 1
    {
        return Err(SimError::World(
            "auth0.signingKeys: exactly one key must be `current`".into(),
        ));
    }
    t.signing_keys = a
        .signing_keys
        .iter()
        .enumerate()
        .map(|(i, k)| SigningKey {
            kid: k.kid.clone(),
            status: k.status,
            created_at: k.created_at.clone(),
            key: i,
            omit_since: k.omit_current_since,
        })
        .collect();
    Ok(())
}

/// Seconds since the Unix epoch.
pub fn epoch_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// RFC 3339 in UTC with microseconds, like Google's timestamps.
pub fn rfc3339(t: SystemTime) -> String {
    crate::time::format_rfc3339(t, crate::time::Fraction::Micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_timestamps_as_rfc3339_utc() {
        let t = UNIX_EPOCH + Duration::from_secs(1_798_761_600); // 2027-01-01
        assert_eq!(rfc3339(t), "2027-01-01T00:00:00.000000Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3661); // 2000-02-29 01:01:01
        assert_eq!(rfc3339(t), "2000-02-29T01:01:01.000000Z");
    }

    #[test]
    fn etags_are_fresh_and_look_like_googles() {
        let mut store = Store::from_world(&World::default(), 1).unwrap();
        let (a, b) = (store.next_etag(), store.next_etag());
        assert_ne!(a, b);
        assert!(a.starts_with("BwY"), "{a}");
    }
}
