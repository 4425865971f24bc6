//! The world file: what the simulator is seeded with.
//!
//! These are the YAML (and JSON Schema) types of a world file. They are deliberately close to the
//! file format and are converted by hand into the simulator's state (`state.rs`), so the file
//! format can stay friendly (e-mails instead of user ids, API enum values for settings) while the
//! state stays fast. The `generate` and `faults` sections follow DESIGN §7 to the letter: the
//! benchmarks and reliability tests are written against them.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A parsed world file. Every section is optional; an empty file is an empty world.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "runwarden simulator world")]
pub struct World {
    /// Google Cloud projects (id and number). Services may only live in listed projects.
    #[serde(default)]
    pub projects: Vec<ProjectSpec>,
    /// Folders above the projects (Resource Manager v3 `folders.get`, `folders.getIamPolicy`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub folders: Vec<FolderSpec>,
    /// Organizations at the top of the hierarchy (`organizations.getIamPolicy`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub organizations: Vec<GoogleOrganizationSpec>,
    /// Cloud Run services with their settings and IAM policies.
    #[serde(default)]
    pub services: Vec<ServiceSpec>,
    /// The Auth0 tenant. Absent: a tenant is still served (empty, or the generated one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth0: Option<Auth0Spec>,
    /// Simulator behaviour that is not a fault: operation delay, token lifetimes, identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulator: Option<SimulatorSpec>,
    /// A synthetic estate added to the world, reproducible from the seed (DESIGN §7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate: Option<GenerateSpec>,
    /// Admin Activity history from before the simulator started: who added which member to which
    /// service's IAM policy, and when (served by the Logging API's `entries.list`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistorySpec>,
    /// Admin Activity history of service updates from before the start: who set which setting
    /// of which service, and when (served as `UpdateService` entries by `entries.list`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub settings_history: Vec<SettingHistorySpec>,
    /// Faults injected from the start (DESIGN §7); changeable at run time via `POST /sim/faults`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub faults: Option<FaultsSpec>,
}

/// A Google Cloud project.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProjectSpec {
    /// Project id, e.g. `acme-prod`.
    pub id: String,
    /// Project number, e.g. `123456789012` (used in IAP resource names and service agents).
    pub number: u64,
    /// Display name (defaults to the id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// The project's own IAM policy (Resource Manager `projects.getIamPolicy`): bindings here
    /// are inherited by every service of the project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iam: Option<PolicySpec>,
    /// `folders/N` or `organizations/N` (`projects.get` answers it as `parent`). Absent: a
    /// project outside any organization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

/// A folder (Resource Manager v3 `Folder`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FolderSpec {
    /// The folder's number, e.g. `200000000001` (its name is `folders/200000000001`).
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// `folders/N` or `organizations/N`.
    pub parent: String,
    /// The folder's IAM policy, inherited by every project below it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iam: Option<PolicySpec>,
}

/// A Google Cloud organization (Resource Manager v3 `Organization`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GoogleOrganizationSpec {
    /// The organization's number (its name is `organizations/N`).
    pub id: String,
    /// The organization's domain, e.g. `acme.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// The organization's IAM policy, inherited by every folder and project in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iam: Option<PolicySpec>,
}

/// A Cloud Run service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    pub project: String,
    pub region: String,
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Service annotations (Cloud Run v2 `annotations`), e.g. runwarden's
    /// `runwarden.dev/last-applied` record.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Cloud Run Admin API v2 value, e.g. `INGRESS_TRAFFIC_ALL` (the default).
    #[serde(default = "default_ingress")]
    pub ingress: IngressValue,
    #[serde(default)]
    pub invoker_iam_disabled: bool,
    #[serde(default)]
    pub custom_audiences: Vec<String>,
    #[serde(default)]
    pub iap_enabled: bool,
    /// The service URL; derived from name, project number and region when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// The service's IAM policy (Cloud Run `getIamPolicy`). Absent: empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iam: Option<PolicySpec>,
    /// The IAP resource's IAM policy (`projects/NUMBER/iap_web/cloud_run-REGION/services/S`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iap_iam: Option<PolicySpec>,
}

fn default_ingress() -> IngressValue {
    IngressValue::IngressTrafficAll
}

/// Cloud Run ingress, as the Admin API v2 spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IngressValue {
    /// What the API reports when no revision is active.
    IngressTrafficUnspecified,
    IngressTrafficAll,
    IngressTrafficInternalOnly,
    IngressTrafficInternalLoadBalancer,
    IngressTrafficNone,
}

impl IngressValue {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            IngressValue::IngressTrafficUnspecified => "INGRESS_TRAFFIC_UNSPECIFIED",
            IngressValue::IngressTrafficAll => "INGRESS_TRAFFIC_ALL",
            IngressValue::IngressTrafficInternalOnly => "INGRESS_TRAFFIC_INTERNAL_ONLY",
            IngressValue::IngressTrafficInternalLoadBalancer => {
                "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"
            }
            IngressValue::IngressTrafficNone => "INGRESS_TRAFFIC_NONE",
        }
    }

    /// Parses the wire value.
    pub fn parse(value: &str) -> Option<IngressValue> {
        Some(match value {
            "INGRESS_TRAFFIC_UNSPECIFIED" => IngressValue::IngressTrafficUnspecified,
            "INGRESS_TRAFFIC_ALL" => IngressValue::IngressTrafficAll,
            "INGRESS_TRAFFIC_INTERNAL_ONLY" => IngressValue::IngressTrafficInternalOnly,
            "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER" => {
                IngressValue::IngressTrafficInternalLoadBalancer
            }
            "INGRESS_TRAFFIC_NONE" => IngressValue::IngressTrafficNone,
            _ => return None,
        })
    }
}

/// One past `SetIamPolicy` on a service that added a member (an Admin Activity audit entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HistorySpec {
    /// `PROJECT/REGION/NAME` of the service.
    pub service: String,
    pub role: String,
    pub member: String,
    /// The principal that made the change (`authenticationInfo.principalEmail`).
    pub by: String,
    /// RFC 3339, e.g. `2026-11-29T14:02:00Z`.
    pub at: String,
    /// `console`, `gcloud` or `api` (becomes `requestMetadata.callerSuppliedUserAgent`).
    #[serde(default = "default_via")]
    pub via: String,
}

/// One past change of a setting of a service (an Admin Activity audit entry): a v2
/// `UpdateService`, or with `api: v1` a v1 `ReplaceService` as `gcloud run services update` makes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SettingHistorySpec {
    /// `PROJECT/REGION/NAME` of the service.
    pub service: String,
    /// The Cloud Run v2 `Service` field: `ingress`, `invokerIamDisabled`, `iapEnabled` or
    /// `customAudiences`.
    pub field: String,
    /// The value it was set to, as the API spells it (e.g. `INGRESS_TRAFFIC_ALL`, `true`).
    pub value: serde_json::Value,
    /// The principal that made the change (`authenticationInfo.principalEmail`).
    pub by: String,
    /// RFC 3339, e.g. `2026-11-29T14:02:00Z`.
    pub at: String,
    /// `console`, `gcloud` or `api`.
    #[serde(default = "default_via")]
    pub via: String,
    /// `v2` (default: an `UpdateService` setting this field) or `v1` (a `ReplaceService`
    /// carrying the whole service: this value and the other settings as they were then).
    #[serde(default = "default_api")]
    pub api: String,
}

fn default_via() -> String {
    "api".into()
}

fn default_api() -> String {
    "v2".into()
}

/// An IAM policy as written in a world file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicySpec {
    /// 1 or 3; derived from the bindings when absent (3 when any binding has a condition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    #[serde(default)]
    pub bindings: Vec<BindingSpec>,
}

/// One IAM binding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BindingSpec {
    /// e.g. `roles/run.invoker`.
    pub role: String,
    /// IAM members, e.g. `user:ada@acme.com`; `deleted:` members are allowed here.
    pub members: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<ConditionSpec>,
}

/// An IAM condition (`google.type.Expr`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConditionSpec {
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub expression: String,
}

/// The Auth0 tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Auth0Spec {
    /// Tenant domain, e.g. `acme.eu.auth0.com`. The Management API audience is
    /// `https://DOMAIN/api/v2/`.
    pub domain: String,
    /// The Management API client (machine-to-machine application) runwarden uses.
    pub management_client: ClientSpec,
    #[serde(default)]
    pub users: Vec<UserSpec>,
    #[serde(default)]
    pub roles: Vec<RoleSpec>,
    #[serde(default)]
    pub groups: Vec<GroupSpec>,
    #[serde(default)]
    pub resource_servers: Vec<ResourceServerSpec>,
    /// Tenant signing keys (at most 4: the simulator embeds four test key pairs). Absent: one
    /// current and one next key.
    #[serde(default)]
    pub signing_keys: Vec<SigningKeySpec>,
    /// Host names that serve the tenant as custom domains (e.g. `localhost`: the simulator
    /// speaks plain http, so a loopback name reaches it). Reached under such a name, the
    /// tenant's discovery document names the issuer `http://HOST:PORT/` as the request
    /// addressed it, as Auth0 names a custom domain's issuer; under any other name, the
    /// canonical `https://DOMAIN/`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom_domains: Vec<String>,
    /// The tenant's Organizations (`GET /api/v2/organizations`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub organizations: Vec<OrganizationSpec>,
}

/// An Auth0 Organization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrganizationSpec {
    /// The organization's name (lower case, e.g. `partner-co`).
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// e.g. `org_...`; derived from the name when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// A Management API client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientSpec {
    pub client_id: String,
    /// Generated at start-up (and printed by `runwarden sim`) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// The Management API scopes granted to the client (absent: every scope the simulator
    /// knows). A call whose endpoint needs a scope not granted answers 403 `insufficient_scope`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
}

/// An Auth0 user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserSpec {
    /// e.g. `auth0|64f0c0ffee...`; derived from the e-mail when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    pub email: String,
    #[serde(default = "yes")]
    pub email_verified: bool,
    /// Blocked by an administrator or by SCIM deprovisioning (`blocked: true` on the user).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub blocked: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

fn yes() -> bool {
    true
}

/// An Auth0 role with its direct users and assigned groups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoleSpec {
    pub name: String,
    /// e.g. `rol_...`; derived from the name when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// E-mails of users assigned the role directly.
    #[serde(default)]
    pub users: Vec<String>,
    /// Names of groups assigned the role.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// An Auth0 group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// E-mails of the group's members.
    #[serde(default)]
    pub members: Vec<String>,
    /// Names of groups nested in this one (served as members with `member_type: group`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// An Auth0 API (resource server).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceServerSpec {
    /// The audience, e.g. `https://billing.acme.com`.
    pub identifier: String,
    pub name: String,
    /// Access token lifetime in seconds (Auth0's `token_lifetime`).
    #[serde(default = "default_token_lifetime")]
    pub token_lifetime: u64,
    #[serde(default)]
    pub enforce_policies: bool,
    /// `RS256` (default) or `HS256`.
    #[serde(default = "default_alg")]
    pub signing_alg: String,
    /// The API's application access policy for user flows (`allow_all`, `require_client_grant`
    /// or `deny_all`), served as `subject_type_authorization.user.policy`; absent: not served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_access_policy: Option<String>,
    /// The same for client credentials (`require_client_grant` or `deny_all`):
    /// `subject_type_authorization.client.policy`; absent: not served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_access_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

fn default_token_lifetime() -> u64 {
    86400
}

fn default_alg() -> String {
    "RS256".into()
}

/// A tenant signing key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SigningKeySpec {
    pub kid: String,
    pub status: KeyStatus,
    /// RFC 3339, e.g. `2026-01-01T00:00:00Z` (reported as `current_since`).
    pub created_at: String,
    /// Serve the key without `current_since`, as real tenants often do.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub omit_current_since: bool,
}

/// Where a signing key is in its rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    Current,
    Next,
    Previous,
    Revoked,
}

/// Simulator behaviour that is not a fault.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SimulatorSpec {
    /// How long a `services.patch` operation runs before it is done, e.g. `200ms` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_delay: Option<String>,
    /// Google access token lifetime, e.g. `1h` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token_lifetime: Option<String>,
    /// Auth0 Management API token lifetime, e.g. `24h` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub management_token_lifetime: Option<String>,
    /// The `client_email` of the service-account key file the simulator writes
    /// (default `runwarden@sim-project.iam.gserviceaccount.com`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// Permissions the credential lacks, e.g. `[run.services.update]`: every Google call that
    /// needs one answers `403 PERMISSION_DENIED` naming it, as Google does
    /// (`ErrorInfo.metadata.permission`). Default: the credential has them all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_permissions: Vec<String>,
    /// How long a change to a user (`SimHandle::update_user`) takes to reach user search
    /// (`GET /api/v2/users?q=...`), e.g. `30s`: Auth0's user search is eventually consistent,
    /// while `GET /api/v2/users/{id}` is always current. Default `0s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_index_lag: Option<String>,
}

/// A synthetic estate (DESIGN §7), reproducible from the seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GenerateSpec {
    pub seed: u64,
    /// Projects `gen-project-1` ... (numbers derived from the seed).
    #[serde(default)]
    pub projects: u32,
    #[serde(default)]
    pub regions: Vec<String>,
    /// `svc-00001` ... numbered from 1 within each (project, region).
    #[serde(default)]
    pub services_per_region: u32,
    /// Label `team: team-00`, `team-01` ...: consecutive services in generation order
    /// (project, then region, then number).
    #[serde(default = "default_per_team")]
    pub services_per_team: u32,
    /// `user-000001@gen.example` ..., e-mail verified.
    #[serde(default)]
    pub users: u32,
    /// `role-001` ..., each with `usersPerRole` members, some through groups.
    #[serde(default)]
    pub roles: u32,
    #[serde(default)]
    pub users_per_role: u32,
    /// Share of services that start with `allUsers` as invoker.
    #[serde(default)]
    pub public_fraction: f64,
}

fn default_per_team() -> u32 {
    20
}

/// Injected faults (DESIGN §7). Every field is optional; an empty section injects nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultsSpec {
    /// Added to every API response, e.g. `20ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<String>,
    /// Chance per API call of answering with this status instead, e.g. `{"503": 0.1}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub error_rates: BTreeMap<String, f64>,
    /// Quotas per API, e.g. `{cloudRunRead: 6000/min, cloudRunWrite: 600/min, auth0: 50/s}`.
    /// APIs: cloudRunRead, cloudRunWrite, iapRead, iapWrite, resourceManager, auth0.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rate_limits: BTreeMap<String, String>,
    /// The Auth0 plan the tenant is on, which sets its Management API rate limit unless
    /// `rateLimits.auth0` does: `free` (2/s), `selfService` (bursts of 10, 150/min) or
    /// `enterprise` (50/s). Default: no plan limit (1,000/s), headers still sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth0_tier: Option<String>,
    /// Chance that an IAM policy gains a foreign binding between a read and the next write.
    #[serde(default)]
    pub concurrent_writer: f64,
    /// Chance that a `services.patch` operation finishes with an error.
    #[serde(default)]
    pub operation_failure_rate: f64,
    /// `operations.wait` answers at once, done or not, instead of waiting up to its timeout
    /// (run.v2.json, `operations.wait`: "on a best-effort basis. It may return the latest state
    /// before the specified timeout (including immediately)").
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub early_wait: bool,
    /// 429 bursts: after every `every` API calls, the next `length` calls get 429.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bursts: Option<BurstSpec>,
}

/// A recurring burst of 429 answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BurstSpec {
    pub every: u64,
    pub length: u64,
}

/// The JSON Schema of world files: (file name, pretty JSON with a trailing newline).
pub fn world_schema() -> (String, String) {
    let generator = schemars::generate::SchemaSettings::draft07().into_generator();
    let schema = generator.into_root_schema_for::<World>();
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema always serializes");
    text.push('\n');
    ("world.schema.json".to_string(), text)
}
