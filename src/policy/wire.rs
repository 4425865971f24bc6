//! The YAML wire format of policy files: serde types that mirror the files exactly, with source
//! positions (`Spanned`) on every item an error may need to point at.
//!
//! These types are private to the policy module. They check only the shape (fields, types,
//! enums); every rule about values lives in `check`, which converts them by hand into the
//! validated `model`. The JSON Schemas in `schemas/` are generated from these types, so the doc
//! comments below are what editors show while a policy is being written.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

/// A YAML boolean as written: `Value` for an unquoted `true`/`false`, `Text` for anything
/// else that is a scalar. serde-saphyr hands the text of a quoted `"false"` to a `bool` target
/// as if it were the boolean; read through `deserialize_any`, where a quoted scalar is always a
/// string, the two are told apart, and `check` reports the text at its own position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bool {
    Value(bool),
    Text(String),
}

// Serialize only so that the schema generator can handle the field's `default` like every
// other optional field's (`schema::render` drops the `null` it would state).
impl serde::Serialize for Bool {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Bool::Value(v) => s.serialize_bool(*v),
            Bool::Text(t) => s.serialize_str(t),
        }
    }
}

impl<'de> Deserialize<'de> for Bool {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Bool;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a boolean")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Bool, E> {
                Ok(Bool::Value(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Bool, E> {
                Ok(Bool::Text(format!("string {v:?}")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Bool, E> {
                Ok(Bool::Text(format!("number {v}")))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Bool, E> {
                Ok(Bool::Text(format!("number {v}")))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Bool, E> {
                Ok(Bool::Text(format!("number {v}")))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// The only `apiVersion` this version of runwarden reads.
pub const API_VERSION: &str = "runwarden.dev/v1";

/// The fields every document has, read first to learn its kind.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Header {
    #[serde(default)]
    pub api_version: Option<Spanned<String>>,
    #[serde(default)]
    pub kind: Option<Spanned<String>>,
    // Read only to accept these fields here; their contents are checked by the typed pass.
    #[serde(default)]
    #[allow(dead_code)] // checked by the header pass in `load`, kept so the schema has it
    pub metadata: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)] // checked by the header pass in `load`, kept so the schema has it
    pub spec: Option<serde::de::IgnoredAny>,
}

/// runwarden Settings: how Auth0 roles map to IAM members, where services are looked for, what
/// runwarden owns, and the guards of every apply. Exactly one per policy directory.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "runwarden Settings")]
pub struct SettingsDocument {
    /// Always `runwarden.dev/v1`.
    #[schemars(with = "String", extend("const" = "runwarden.dev/v1"))]
    #[allow(dead_code)] // checked by the header pass in `load`, kept so the schema has it
    pub api_version: Spanned<String>,
    /// Always `Settings`.
    #[schemars(with = "String", extend("const" = "Settings"))]
    #[allow(dead_code)] // checked by the header pass in `load`, kept so the schema has it
    pub kind: Spanned<String>,
    pub metadata: Metadata,
    pub spec: SettingsSpec,
}

/// runwarden AccessPolicy: which Cloud Run services it governs, their exposure, and who may
/// invoke them.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "runwarden AccessPolicy")]
pub struct AccessPolicyDocument {
    /// Always `runwarden.dev/v1`.
    #[schemars(with = "String", extend("const" = "runwarden.dev/v1"))]
    #[allow(dead_code)] // checked by the header pass in `load`, kept so the schema has it
    pub api_version: Spanned<String>,
    /// Always `AccessPolicy`.
    #[schemars(with = "String", extend("const" = "AccessPolicy"))]
    #[allow(dead_code)] // checked by the header pass in `load`, kept so the schema has it
    pub kind: Spanned<String>,
    pub metadata: Metadata,
    pub spec: AccessPolicySpec,
}

/// Identifies the document.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    /// Unique among documents of the same kind: lowercase letters, digits and hyphens, at most
    /// 63 characters (like a Kubernetes object name).
    #[schemars(with = "String", extend("examples" = ["billing"], "pattern" = "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"))]
    pub name: Spanned<String>,
}

/// The settings of the whole estate.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SettingsSpec {
    pub auth0: Auth0,
    #[schemars(with = "Principals")]
    pub principals: Spanned<Principals>,
    /// Auth0 machine-to-machine applications that act as Google service accounts; policies
    /// name them with `machine: NAME`.
    #[serde(default)]
    #[schemars(with = "Vec<Machine>")]
    pub machines: Vec<Spanned<Machine>>,
    #[schemars(with = "Scope")]
    pub scope: Spanned<Scope>,
    /// What to do with members no policy produces and runwarden does not own: `keep` lists them
    /// in the plan as `foreign (kept)`, `remove` removes them. Default: `keep`.
    #[serde(default)]
    #[schemars(extend("examples" = ["remove"], "default" = "keep"))]
    pub foreign_members: Option<ForeignMembers>,
    /// Member patterns (`*` matches any run of characters) that runwarden owns besides the
    /// mapping's own principals, e.g. `serviceAccount:*@acme-prod.iam.gserviceaccount.com`.
    #[serde(default)]
    #[schemars(with = "Vec<String>", extend("examples" = [["serviceAccount:*@acme-prod.iam.gserviceaccount.com"]]))]
    pub owned: Vec<Spanned<String>>,
    /// Member patterns that are never removed, whatever the mode (Google service agents,
    /// break-glass accounts).
    #[serde(default)]
    #[schemars(with = "Vec<String>", extend("examples" = [["user:break-glass@acme.com"]]))]
    pub keep: Vec<Spanned<String>>,
    /// Roles policies may grant. Invokers need `roles/run.invoker`; with `iap: true` they need
    /// `roles/iap.httpsResourceAccessor` (and the IAP service agent `roles/run.invoker`).
    /// Default: both.
    #[serde(default)]
    #[schemars(with = "Option<Vec<String>>", extend("default" = ["roles/run.invoker", "roles/iap.httpsResourceAccessor"]))]
    pub allowed_roles: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    #[schemars(with = "Option<Guards>")]
    pub guards: Option<Spanned<Guards>>,
    #[serde(default)]
    #[schemars(with = "Option<Audits>")]
    pub audits: Option<Spanned<Audits>>,
    /// Request rates pinned per API (README › Performance). A pin is the ceiling for its API
    /// and turns off learning it: without one, runwarden reads the quota project's limits
    /// (Service Usage) and follows Auth0's `x-ratelimit-*` headers.
    #[serde(default)]
    #[schemars(with = "Option<Pacing>")]
    pub pacing: Option<Spanned<Pacing>>,
}

/// Pinned request rates, each written COUNT/UNIT with UNIT `s`, `min` or `h` (e.g. `600/min`).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Pacing {
    /// Cloud Run Admin API reads, per region (Google's "Read requests per minute per region").
    #[serde(default)]
    #[schemars(with = "Option<String>", extend("examples" = ["600/min"], "pattern" = RATE_PATTERN))]
    pub cloud_run_reads: Option<Spanned<String>>,
    /// Cloud Run and IAP writes, all together.
    #[serde(default)]
    #[schemars(with = "Option<String>", extend("examples" = ["60/min"], "pattern" = RATE_PATTERN))]
    pub writes: Option<Spanned<String>>,
    /// IAP API reads.
    #[serde(default)]
    #[schemars(with = "Option<String>", extend("examples" = ["600/min"], "pattern" = RATE_PATTERN))]
    pub iap: Option<Spanned<String>>,
    /// Auth0 Management API requests.
    #[serde(default)]
    #[schemars(with = "Option<String>", extend("examples" = ["5/s"], "pattern" = RATE_PATTERN))]
    pub auth0: Option<Spanned<String>>,
    /// The project whose quotas are read to learn the Google limits (the project that
    /// runwarden's credential is billed and counted against). Default: the first project of
    /// `scope.projects`.
    #[serde(default)]
    #[schemars(with = "Option<String>", extend("examples" = ["acme-ops"]))]
    pub quota_project: Option<Spanned<String>>,
}

/// `COUNT/UNIT`, e.g. `900/min`.
const RATE_PATTERN: &str = "^ *[1-9][0-9]* */ *(s|sec|second|m|min|minute|h|hour) *$";

/// The Auth0 tenant and the Management API client runwarden reads roles with.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Auth0 {
    /// Tenant domain without scheme, e.g. `acme.eu.auth0.com`.
    #[schemars(with = "String", extend("examples" = ["acme.eu.auth0.com"]))]
    pub domain: Spanned<String>,
    /// Client id of the Management API (machine-to-machine) application.
    #[schemars(with = "String", extend("examples" = ["rw-demo-client"]))]
    pub client_id: Spanned<String>,
    /// Name of the environment variable that holds the client secret. The secret itself never
    /// appears in a file or a log.
    #[schemars(with = "String", extend("examples" = ["AUTH0_CLIENT_SECRET"], "pattern" = "^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub client_secret_env: Spanned<String>,
    /// Whether role holdings through Auth0 groups are read (`read`, the default: needs the
    /// group scopes, and a pass fails when they cannot be read) or the tenant declares it uses
    /// no groups (`none`: groups are never read, and nobody holds a role through one).
    #[serde(default)]
    #[schemars(with = "Option<GroupsMode>")]
    pub groups: Option<Spanned<GroupsMode>>,
    /// The token issuers `check-token` accepts, each exactly as tokens carry it in `iss`
    /// (`https://HOST/`, with the trailing slash): the canonical `https://DOMAIN/` and/or the
    /// tenant's custom domains (e.g. `https://login.acme.com/`). Discovery and keys are fetched
    /// only from these. Default: `["https://DOMAIN/"]`. `domain` stays the canonical tenant
    /// domain: the Management API is always called there (audience `https://DOMAIN/api/v2/`).
    #[serde(default)]
    #[schemars(with = "Option<Vec<String>>", extend("examples" = [["https://acme.eu.auth0.com/", "https://login.acme.com/"]]))]
    pub issuers: Option<Spanned<Vec<Spanned<String>>>>,
}

/// Whether runwarden reads Auth0 groups.
#[derive(Deserialize, JsonSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum GroupsMode {
    Read,
    None,
}

/// How an Auth0 role becomes IAM members.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Principals {
    #[schemars(with = "Mapping", extend("examples" = ["users"]))]
    pub mapping: Spanned<Mapping>,
    /// With `mapping: workforcePool`: the workforce pool id; role `R` becomes
    /// `principalSet://iam.googleapis.com/locations/global/workforcePools/POOL/group/R`.
    #[serde(default)]
    #[schemars(with = "Option<String>", extend("examples" = ["acme-staff"]))]
    pub workforce_pool: Option<Spanned<String>>,
    /// With `mapping: users`: role `R` becomes `user:EMAIL` for each member of the role with a
    /// verified e-mail in one of these domains.
    #[serde(default)]
    #[schemars(with = "Option<Vec<String>>", extend("examples" = [["acme.com"]]))]
    pub email_domains: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `workforcePool`: roles become workforce pool groups (people sign in through IAP).
/// `users`: roles become the `user:` members of their verified members.
#[derive(Deserialize, JsonSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Mapping {
    WorkforcePool,
    Users,
}

/// An Auth0 M2M application mapped to the Google service account it acts as.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Machine {
    /// The name policies use: `invokers: [{machine: NAME}]`.
    #[schemars(with = "String", extend("examples" = ["ledger-sync"]))]
    pub name: Spanned<String>,
    /// The Auth0 application's client id.
    #[schemars(with = "String", extend("examples" = ["LedgerSyncM2mClient01"]))]
    pub auth0_client_id: Spanned<String>,
    /// The Google service account, as an IAM member: `serviceAccount:NAME@PROJECT.iam.gserviceaccount.com`.
    #[schemars(with = "String", extend("examples" = ["serviceAccount:ledger-sync@acme-prod.iam.gserviceaccount.com"], "pattern" = "^serviceAccount:"))]
    pub service_account: Spanned<String>,
}

/// Where coverage is checked and where selectors look.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Scope {
    /// Google Cloud project ids.
    #[schemars(with = "Vec<String>", extend("examples" = [["acme-prod", "acme-staging"]], "minItems" = 1))]
    pub projects: Spanned<Vec<Spanned<String>>>,
    /// Cloud Run regions. Selectors and `region: "*"` need at least one.
    #[serde(default)]
    #[schemars(with = "Vec<String>", extend("examples" = [["europe-west1", "us-central1"]]))]
    pub regions: Vec<Spanned<String>>,
}

/// What happens to members that are neither produced by a policy nor owned.
#[derive(Deserialize, JsonSchema, Clone, Copy)]
#[serde(rename_all = "camelCase")]
pub enum ForeignMembers {
    Keep,
    Remove,
}

/// Limits every apply checks before writing anything.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Guards {
    /// At most this many member removals per apply. Default: 25.
    #[serde(default)]
    #[schemars(with = "Option<u64>", extend("examples" = [10], "default" = 25))]
    pub max_removals: Option<Spanned<i64>>,
    /// At most this share (greater than 0, at most 1) of owned members removed per apply.
    /// Default: 0.5.
    #[serde(default)]
    #[schemars(with = "Option<f64>", extend("examples" = [0.2], "exclusiveMinimum" = 0, "maximum" = 1, "default" = 0.5))]
    pub max_removal_ratio: Option<Spanned<f64>>,
    /// Held removals let through once, after review: each entry is the allowance a guard trip
    /// names (`POLICIES@DIGEST`, the digest of exactly the removals held). Once those removals
    /// are applied the entry matches nothing any more; delete it at leisure.
    #[serde(default)]
    pub allow_once: Vec<String>,
}

/// Thresholds of `runwarden audit`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Audits {
    /// Longest acceptable access-token lifetime of an Auth0 API, e.g. `1h`. Default: `24h`.
    #[serde(default)]
    #[schemars(with = "Option<String>", extend("examples" = ["1h"], "pattern" = "^([0-9]+[smhdw])+$", "default" = "24h"))]
    pub max_token_lifetime: Option<Spanned<String>>,
    /// Oldest acceptable Auth0 signing key, e.g. `90d`. Default: `365d`.
    #[serde(default)]
    #[schemars(with = "Option<String>", extend("examples" = ["90d"], "pattern" = "^([0-9]+[smhdw])+$", "default" = "365d"))]
    pub max_signing_key_age: Option<Spanned<String>>,
    /// Every service in scope must be governed by some policy. Default: false.
    #[serde(default)]
    #[schemars(with = "Option<bool>", extend("examples" = [true], "default" = false))]
    pub require_coverage: Option<Spanned<Bool>>,
}

/// Which services this policy governs, how they are exposed, and who may invoke them.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AccessPolicySpec {
    /// `enforce` applies, `warn` plans and reports but never applies, `observe` only reports
    /// drift. Default: `enforce`.
    #[serde(default)]
    #[schemars(extend("examples" = ["observe"], "default" = "enforce"))]
    pub mode: Option<Mode>,
    /// The services: each by name, or by label selector within a region (`"*"`: every region
    /// in scope).
    #[schemars(with = "Vec<ServiceRef>", extend("minItems" = 1))]
    pub services: Spanned<Vec<Spanned<ServiceRef>>>,
    #[serde(default)]
    #[schemars(with = "Option<Exposure>")]
    pub exposure: Option<Spanned<Exposure>>,
    /// Who may invoke the services. May be empty only for a public service or one with
    /// `ingress: none`.
    #[serde(default)]
    #[schemars(with = "Option<Vec<Invoker>>")]
    pub invokers: Option<Spanned<Vec<Spanned<Invoker>>>>,
}

/// Enforcement mode of a policy.
#[derive(Deserialize, JsonSchema, Clone, Copy)]
#[serde(rename_all = "camelCase")]
pub enum Mode {
    Enforce,
    Warn,
    Observe,
}

/// A service by name, or the services matching a label selector.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(extend("oneOf" = [{"required": ["name"]}, {"required": ["selector"]}]))]
pub struct ServiceRef {
    /// A project id listed in `Settings.spec.scope.projects`.
    #[schemars(with = "String", extend("examples" = ["acme-prod"]))]
    pub project: Spanned<String>,
    /// A region listed in `Settings.spec.scope.regions`, or `"*"` for every one of them.
    #[schemars(with = "String", extend("examples" = ["europe-west1"]))]
    pub region: Spanned<String>,
    /// The Cloud Run service name.
    #[serde(default)]
    #[schemars(with = "Option<String>", extend("examples" = ["billing-api"]))]
    pub name: Option<Spanned<String>>,
    /// Every service whose labels contain all of these pairs.
    #[serde(default)]
    #[schemars(with = "Option<BTreeMap<String, String>>", extend("examples" = [{"team": "billing"}], "minProperties" = 1))]
    pub selector: Option<Spanned<BTreeMap<String, String>>>,
}

/// The service settings this policy manages; a field left out is not managed.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Exposure {
    #[serde(default)]
    #[schemars(with = "Option<Ingress>", extend("examples" = ["internal-and-cloud-load-balancing"]))]
    pub ingress: Option<Spanned<Ingress>>,
    /// Whether `allUsers` may invoke the service. `false` removes `allUsers` and
    /// `allAuthenticatedUsers`.
    #[serde(default)]
    #[schemars(with = "Option<bool>", extend("examples" = [false]))]
    pub public: Option<Spanned<Bool>>,
    /// Whether Identity-Aware Proxy fronts the service; invokers then become IAP accessors.
    #[serde(default)]
    #[schemars(with = "Option<bool>", extend("examples" = [true]))]
    pub iap: Option<Spanned<Bool>>,
    /// Cloud Run custom audiences accepted in ID tokens.
    #[serde(default)]
    #[schemars(with = "Option<Vec<String>>", extend("examples" = [["https://billing.acme.com"]]))]
    pub audiences: Option<Spanned<Vec<Spanned<String>>>>,
}

/// Where requests may come from.
#[derive(Deserialize, JsonSchema, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "kebab-case")]
pub enum Ingress {
    All,
    Internal,
    InternalAndCloudLoadBalancing,
    None,
}

/// One invoker: exactly one of `auth0Role`, `member` or `machine`, optionally time-boxed.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(extend("oneOf" = [{"required": ["auth0Role"]}, {"required": ["member"]}, {"required": ["machine"]}]))]
pub struct Invoker {
    /// An Auth0 role name, mapped to members through `Settings.spec.principals`.
    #[serde(default)]
    #[schemars(with = "Option<String>", extend("examples" = ["billing-admin"]))]
    pub auth0_role: Option<Spanned<String>>,
    /// A literal IAM member, e.g. `serviceAccount:NAME@PROJECT.iam.gserviceaccount.com`.
    #[serde(default)]
    #[schemars(with = "Option<String>", extend("examples" = ["serviceAccount:invoicer@acme-prod.iam.gserviceaccount.com"]))]
    pub member: Option<Spanned<String>>,
    /// The name of a machine in `Settings.spec.machines`.
    #[serde(default)]
    #[schemars(with = "Option<String>", extend("examples" = ["ledger-sync"]))]
    pub machine: Option<Spanned<String>>,
    /// RFC 3339 time at which the grant ends, e.g. `2027-01-31T00:00:00Z`; rendered as an IAM
    /// condition on `request.time`.
    #[serde(default)]
    #[schemars(with = "Option<String>", extend("examples" = ["2027-01-31T00:00:00Z"], "format" = "date-time"))]
    pub expires: Option<Spanned<String>>,
}
