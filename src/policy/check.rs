//! The semantic rules of the policy language, applied while converting the wire documents by
//! hand into the validated `model`.
//!
//! Every rule reports into one list and carries on, so a single run shows every problem. A
//! `Desired` is built only when that list holds no error. Rules that need the `Settings` (scope,
//! allowed roles, machines, mapping) are skipped when there is no usable `Settings` document;
//! its absence is itself an error.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_saphyr::Spanned;

use super::diag::Diagnostic;
use super::load::{Document, Parsed};
use super::model::{
    AccessPolicy, Audits, Auth0Settings, Desired, Exposure, ForeignMembers, Guards, Ingress,
    Invoker, MachineIdentity, MemberPattern, Mode, Pacing, Principal, PrincipalMapping, RegionRef, Scope,
    ServiceRef, ServiceTarget, Settings, Source,
};
use super::time::{parse_duration, parse_rfc3339};
use super::wire;
use crate::iam::{IAP_ACCESSOR, Member, MemberKind, RUN_INVOKER};

/// Defaults of optional `Settings` fields, stated once so the schema docs can quote them.
const DEFAULT_MAX_REMOVALS: usize = 25;
const DEFAULT_MAX_REMOVAL_RATIO: f64 = 0.5;
const DEFAULT_MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_MAX_SIGNING_KEY_AGE: Duration = Duration::from_secs(365 * 86_400);
/// Above this, a removal guard never trips on any real estate: it is a typo or a way to disable
/// the guard, and `apply --allow-removals N` is the honest way to do the latter for one run.
const ABSURD_MAX_REMOVALS: i64 = 100_000;
/// Auth0 refuses access-token lifetimes above 30 days, so a larger threshold checks nothing.
const MAX_TOKEN_LIFETIME_LIMIT: Duration = Duration::from_secs(30 * 86_400);
const MAX_SIGNING_KEY_AGE_LIMIT: Duration = Duration::from_secs(10 * 365 * 86_400);

/// The outcome of checking every parsed document.
pub(super) struct Checked {
    /// `Some` only when no error was reported.
    pub desired: Option<Desired>,
}

/// Reports diagnostics against one document of one file.
struct Reporter<'a> {
    file: &'a Path,
    /// How many lines of the file precede the document: the parser numbers the document's own
    /// lines from 1 (see `load::split_documents`), so positions are shifted by this.
    line_offset: usize,
    out: &'a mut Vec<Diagnostic>,
    errors: &'a mut usize,
}

impl Reporter<'_> {
    /// The position of a spanned value in the file, as (line, column).
    fn pos<T>(&self, s: &Spanned<T>) -> (usize, usize) {
        super::load::file_position(&s.referenced, self.line_offset)
    }

    fn error(&mut self, at: (usize, usize), message: impl Into<String>, hint: impl Into<String>) {
        *self.errors += 1;
        self.out
            .push(Diagnostic::error(self.file, at.0, at.1, message).with_hint(hint));
    }

    fn warning(&mut self, at: (usize, usize), message: impl Into<String>, hint: impl Into<String>) {
        self.out
            .push(Diagnostic::warning(self.file, at.0, at.1, message).with_hint(hint));
    }

    fn source(&self, at: (usize, usize)) -> Source {
        Source {
            file: self.file.to_path_buf(),
            line: at.0,
            column: at.1,
        }
    }
}

/// Checks every document and builds the desired model. `errors_so_far` counts the errors the
/// loader already reported (a broken file must stop the load even if the rest is fine).
pub(super) fn check(
    dir: &Path,
    parsed: Vec<Parsed>,
    broken_settings: usize,
    clock: Clock,
    errors_so_far: usize,
    out: &mut Vec<Diagnostic>,
) -> Checked {
    let mut errors = errors_so_far;
    let mut settings_docs = Vec::new();
    let mut policy_docs = Vec::new();
    for p in parsed {
        match p.doc {
            Document::Settings(d) => settings_docs.push((p.file, p.line_offset, d)),
            Document::AccessPolicy(d) => policy_docs.push((p.file, p.line_offset, d)),
        }
    }

    let settings = convert_settings_docs(&settings_docs, out, &mut errors);
    // A Settings document that failed to parse is already reported; saying "none found" too
    // would send the reader looking for a file that exists.
    if settings_docs.is_empty() && broken_settings == 0 {
        errors += 1;
        // A single policy file passed as the directory is where the Settings should go.
        let at = if dir.is_file() { 1 } else { 0 };
        out.push(
            Diagnostic::error(dir, at, at, "no Settings document found").with_hint(
                "add a file with `kind: Settings` (auth0, principals, scope, ...) to the policy directory",
            ),
        );
    }

    let policies = convert_policy_docs(&policy_docs, settings.as_ref(), clock, out, &mut errors);

    check_exposure_conflicts(
        &policies,
        settings.as_ref().map(|(s, _)| s),
        out,
        &mut errors,
    );

    let desired = match settings {
        Some((settings, _)) if errors == 0 => {
            let mut policies: Vec<AccessPolicy> = policies.into_iter().map(|(p, _)| p).collect();
            policies.sort_by(|a, b| a.name.cmp(&b.name));
            Some(Desired { settings, policies })
        }
        _ => None,
    };
    Checked { desired }
}

/// The first Settings document converted; any further one is an error.
fn convert_settings_docs(
    docs: &[(PathBuf, usize, Box<wire::SettingsDocument>)],
    out: &mut Vec<Diagnostic>,
    errors: &mut usize,
) -> Option<(Settings, SettingsFacts)> {
    let mut settings: Option<(Settings, SettingsFacts)> = None;
    for (file, line_offset, doc) in docs {
        let mut r = Reporter {
            file,
            line_offset: *line_offset,
            out,
            errors,
        };
        match &settings {
            None => settings = Some(convert_settings(&mut r, doc)),
            Some((first, _)) => r.error(
                r.pos(&doc.metadata.name),
                format!(
                    "a second Settings document (`{}`); the first is `{}` at {}",
                    doc.metadata.name.value, first.name, first.source
                ),
                "a policy directory has exactly one Settings document: merge them",
            ),
        }
    }
    settings
}

/// Every AccessPolicy document converted, names unique.
fn convert_policy_docs(
    docs: &[(PathBuf, usize, Box<wire::AccessPolicyDocument>)],
    settings: Option<&(Settings, SettingsFacts)>,
    clock: Clock,
    out: &mut Vec<Diagnostic>,
    errors: &mut usize,
) -> Vec<(AccessPolicy, PolicyFacts)> {
    let mut policies: Vec<(AccessPolicy, PolicyFacts)> = Vec::new();
    let mut names: HashMap<String, Source> = HashMap::new();
    for (file, line_offset, doc) in docs {
        let mut r = Reporter {
            file,
            line_offset: *line_offset,
            out,
            errors,
        };
        let (policy, facts) = convert_policy(&mut r, doc, settings, clock);
        if let Some(first) = names.get(&policy.name) {
            r.error(
                (policy.source.line, policy.source.column),
                format!(
                    "duplicate AccessPolicy name `{}`; it is first used at {first}",
                    policy.name
                ),
                "metadata.name must be unique among AccessPolicy documents: rename one",
            );
        } else {
            names.insert(policy.name.clone(), policy.source.clone());
        }
        policies.push((policy, facts));
    }

    policies
}

/// The clock a load judges `expires` against, and whether a grant that ran out is an error
/// (`validate`, pull requests) or a warning (plan, apply and the loop, which remove it).
#[derive(Debug, Clone, Copy)]
pub(super) struct Clock {
    pub now: SystemTime,
    pub expired_is_error: bool,
}

/// What policy checks need to know about the Settings beyond the model.
struct SettingsFacts {
    /// Where `allowedRoles` was written (or the spec, when it was left to its default).
    allowed_roles_at: Source,
    scope_at: Source,
}

fn convert_settings(
    r: &mut Reporter<'_>,
    doc: &wire::SettingsDocument,
) -> (Settings, SettingsFacts) {
    let name = check_name(r, &doc.metadata.name, "Settings");
    let spec = &doc.spec;

    let a = &spec.auth0;
    let domain = check_auth0(r, a);
    let principals = convert_principals(r, &spec.principals.value);
    let machines = convert_machines(r, &spec.machines);
    let (scope, scope_at) = convert_scope(r, &spec.scope);
    let foreign_members = match spec.foreign_members {
        None | Some(wire::ForeignMembers::Keep) => ForeignMembers::Keep,
        Some(wire::ForeignMembers::Remove) => ForeignMembers::Remove,
    };
    let owned = member_patterns(r, &spec.owned);
    let keep = member_patterns(r, &spec.keep);

    let (allowed_roles, allowed_roles_at) = convert_allowed_roles(r, doc);
    let guards = convert_guards(r, &spec.guards);
    let audits = convert_audits(r, &spec.audits);
    let pacing = convert_pacing(r, &spec.pacing);
    let settings = Settings {
        source: r.source(r.pos(&doc.metadata.name)),
        name,
        auth0: Auth0Settings {
            domain,
            client_id: a.client_id.value.clone(),
            client_secret_env: a.client_secret_env.value.clone(),
            read_groups: a.groups.as_ref().is_none_or(|g| g.value == super::wire::GroupsMode::Read),
            issuers: check_issuers(r, a),
        },
        principals,
        machines,
        scope,
        foreign_members,
        owned,
        keep,
        allowed_roles,
        guards,
        audits,
        pacing,
    };
    (
        settings,
        SettingsFacts {
            allowed_roles_at,
            scope_at,
        },
    )
}

/// Checks the `auth0` block; returns the tenant domain.
fn check_auth0(r: &mut Reporter<'_>, a: &wire::Auth0) -> String {
    let domain = a.domain.value.clone();
    if domain.contains("://") || domain.contains('/') {
        r.error(
            r.pos(&a.domain),
            format!("auth0.domain `{domain}` is not a bare domain"),
            "write the tenant domain only, without scheme or path, e.g. acme.eu.auth0.com",
        );
    } else if !is_domain(&domain) {
        r.error(
            r.pos(&a.domain),
            format!("auth0.domain `{domain}` is not a DNS domain"),
            "write the tenant domain, e.g. acme.eu.auth0.com",
        );
    }
    if a.client_id.value.is_empty() || a.client_id.value.contains(char::is_whitespace) {
        r.error(
            r.pos(&a.client_id),
            "auth0.clientId is empty or contains spaces",
            "copy the client id of the Management API application from the Auth0 dashboard",
        );
    }
    // The value is never echoed: someone may have pasted the secret itself here, and error
    // output ends up in CI logs.
    if !is_env_name(&a.client_secret_env.value) {
        r.error(
            r.pos(&a.client_secret_env),
            "auth0.clientSecretEnv is not an environment variable name (its value is not shown, in case it is the secret itself)",
            "name the variable that holds the secret (letters, digits, `_`), e.g. AUTH0_CLIENT_SECRET; if you pasted the secret here, rotate it in Auth0",
        );
    } else if looks_like_a_secret(&a.client_secret_env.value) {
        r.error(
            r.pos(&a.client_secret_env),
            "auth0.clientSecretEnv looks like a secret, not the name of an environment variable (its value is not shown)",
            "write the variable's name, e.g. AUTH0_CLIENT_SECRET; if this was the secret, rotate it in Auth0",
        );
    }

    domain
}

/// Checks `auth0.issuers`: each a token issuer exactly as tokens carry it (`https://HOST/`, or
/// `http://` on loopback for a local simulator), since `check-token` compares `iss` by string
/// (OpenID Connect Discovery §4.3: the issuer is used verbatim) and fetches keys from it.
fn check_issuers(r: &mut Reporter<'_>, a: &wire::Auth0) -> Vec<String> {
    let Some(list) = &a.issuers else { return vec![] };
    if list.value.is_empty() {
        r.error(
            r.pos(list),
            "auth0.issuers is empty, so check-token would accept no token",
            format!("list the issuers tokens carry, e.g. [https://{}/], or remove the field", a.domain.value),
        );
    }
    let mut out = Vec::new();
    for issuer in &list.value {
        match issuer_problem(&issuer.value) {
            Some(problem) => r.error(
                r.pos(issuer),
                format!("auth0.issuers: `{}` {problem}", issuer.value),
                "write the issuer exactly as the `iss` claim of the tenant's tokens says it, e.g. https://login.acme.com/ (https, host, trailing slash)",
            ),
            None if out.contains(&issuer.value) => {}
            None => out.push(issuer.value.clone()),
        }
    }
    out
}

/// Why `text` is not an issuer runwarden can accept and fetch keys from, if it is not.
fn issuer_problem(text: &str) -> Option<String> {
    let url = match reqwest::Url::parse(text) {
        Ok(u) => u,
        Err(e) => return Some(format!("is not a URL ({e})")),
    };
    let host = url.host_str().unwrap_or("");
    let loopback = matches!(host, "localhost" | "[::1]") || host.starts_with("127.");
    if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
        return Some("is not an https:// URL (plain http:// only on loopback, for a local simulator)".into());
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Some("carries a query, fragment or credentials".into());
    }
    if url.path() != "/" || url.as_str() != text {
        return Some(format!("is not in the form tokens carry (`{}`: scheme, lower-case host, trailing slash, no path)", url.origin().ascii_serialization() + "/"));
    }
    None
}

/// Converts `principals` (the mapping of Auth0 roles to IAM members).
fn convert_principals(r: &mut Reporter<'_>, p: &wire::Principals) -> PrincipalMapping {
    match p.mapping.value {
        wire::Mapping::WorkforcePool => {
            if let Some(domains) = &p.email_domains {
                r.error(
                    r.pos(domains),
                    "`emailDomains` belongs to `mapping: users`, not `mapping: workforcePool`",
                    "remove emailDomains, or switch to `mapping: users`",
                );
            }
            match &p.workforce_pool {
                Some(pool) => {
                    if !is_pool_id(&pool.value) {
                        r.error(
                            r.pos(pool),
                            format!("`{}` is not a workforce pool id", pool.value),
                            "a pool id has 6 to 63 lowercase letters, digits and hyphens, starts with a letter and does not end with a hyphen",
                        );
                    }
                    PrincipalMapping::WorkforcePool {
                        pool: pool.value.clone(),
                    }
                }
                None => {
                    r.error(
                        r.pos(&p.mapping),
                        "`mapping: workforcePool` needs `workforcePool: POOL_ID`",
                        "add the id of the workforce pool whose provider maps Auth0 roles to google.groups",
                    );
                    PrincipalMapping::WorkforcePool {
                        pool: String::new(),
                    }
                }
            }
        }
        wire::Mapping::Users => {
            if let Some(pool) = &p.workforce_pool {
                r.error(
                    r.pos(pool),
                    "`workforcePool` belongs to `mapping: workforcePool`, not `mapping: users`",
                    "remove workforcePool, or switch to `mapping: workforcePool`",
                );
            }
            let mut email_domains = Vec::new();
            match &p.email_domains {
                Some(domains) if !domains.value.is_empty() => {
                    for d in &domains.value {
                        if let Err(problem) = crate::iam::check_written_domain(&d.value) {
                            r.error(
                                r.pos(d),
                                format!("`{}` is not an e-mail domain: {problem}", d.value),
                                "write the part after `@`, e.g. acme.com",
                            );
                        }
                        email_domains.push(d.value.clone());
                    }
                }
                Some(domains) => r.error(
                    r.pos(domains),
                    "`emailDomains` is empty",
                    "list the domains whose verified e-mails may be granted, e.g. [acme.com]",
                ),
                None => r.error(
                    r.pos(&p.mapping),
                    "`mapping: users` needs `emailDomains`",
                    "list the domains whose verified e-mails may be granted, e.g. emailDomains: [acme.com]",
                ),
            }
            PrincipalMapping::Users { email_domains }
        }
    }
}

/// Converts `machines` (Auth0 M2M applications and their service accounts).
fn convert_machines(r: &mut Reporter<'_>, list: &[Spanned<wire::Machine>]) -> Vec<MachineIdentity> {
    let mut machines: Vec<MachineIdentity> = Vec::new();
    for m in list {
        let name = &m.value.name;
        if !is_dns_label(&name.value, 63) {
            r.error(
                r.pos(name),
                format!("machine name `{}` is not valid", name.value),
                "use lowercase letters, digits and hyphens, e.g. ledger-sync",
            );
        }
        if let Some(first) = machines.iter().find(|x| x.name == name.value) {
            r.error(
                r.pos(name),
                format!(
                    "duplicate machine `{}`; it is first defined at {}",
                    name.value, first.source
                ),
                "machine names must be unique: rename or remove one",
            );
        }
        let id = &m.value.auth0_client_id;
        if id.value.is_empty() || id.value.contains(char::is_whitespace) {
            r.error(
                r.pos(id),
                "auth0ClientId is empty or contains spaces",
                "copy the client id of the Auth0 M2M application",
            );
        }
        let sa = &m.value.service_account;
        let service_account = match Member::parse_written(&sa.value) {
            Ok(member) if member.kind() == MemberKind::ServiceAccount => Some(member),
            Ok(_) => {
                r.error(
                    r.pos(sa),
                    format!("`{}` is not a service account", sa.value),
                    "write serviceAccount:NAME@PROJECT.iam.gserviceaccount.com",
                );
                None
            }
            Err(err) => {
                r.error(
                    r.pos(sa),
                    err.to_string(),
                    "write serviceAccount:NAME@PROJECT.iam.gserviceaccount.com",
                );
                None
            }
        };
        if let Some(service_account) = service_account {
            machines.push(MachineIdentity {
                name: name.value.clone(),
                auth0_client_id: id.value.clone(),
                service_account,
                source: r.source(r.pos(m)),
            });
        }
    }

    machines
}

/// Converts `scope`; returns it with where it was written.
fn convert_scope(r: &mut Reporter<'_>, scope: &Spanned<wire::Scope>) -> (Scope, Source) {
    let scope_at = r.source(r.pos(scope));
    let s = &scope.value;
    if s.projects.value.is_empty() {
        r.error(
            r.pos(&s.projects),
            "scope.projects is empty",
            "list the Google Cloud projects whose Cloud Run services runwarden governs",
        );
    }
    let projects = unique_list(r, &s.projects.value, "project", |r, p| {
        if !is_project_id(&p.value) {
            r.error(
                r.pos(p),
                format!("`{}` is not a Google Cloud project id", p.value),
                "a project id has 6 to 30 lowercase letters, digits and hyphens and starts with a letter",
            );
        }
    });
    let regions = unique_list(r, &s.regions, "region", |r, g| {
        if !is_region(&g.value) {
            r.error(
                r.pos(g),
                format!("`{}` is not a Cloud Run region", g.value),
                "write a region such as europe-west1",
            );
        }
    });

    (Scope { projects, regions }, scope_at)
}

/// Converts `allowedRoles` (default: the invoker and IAP accessor roles); returns them with
/// where they were written (the document's name when defaulted).
fn convert_allowed_roles(
    r: &mut Reporter<'_>,
    doc: &wire::SettingsDocument,
) -> (Vec<String>, Source) {
    match &doc.spec.allowed_roles {
        Some(list) => {
            let roles = unique_list(r, &list.value, "role", |r, role| {
                if !is_role(&role.value) {
                    r.error(
                        r.pos(role),
                        format!("`{}` is not an IAM role", role.value),
                        "write roles as roles/NAME, projects/P/roles/NAME or organizations/O/roles/NAME",
                    );
                }
            });
            (roles, r.source(r.pos(list)))
        }
        None => (
            vec![RUN_INVOKER.to_string(), IAP_ACCESSOR.to_string()],
            r.source(r.pos(&doc.metadata.name)),
        ),
    }
}

/// Converts `guards` (defaults where absent or invalid).
fn convert_guards(r: &mut Reporter<'_>, spec_guards: &Option<Spanned<wire::Guards>>) -> Guards {
    let mut guards = Guards {
        max_removals: DEFAULT_MAX_REMOVALS,
        max_removal_ratio: DEFAULT_MAX_REMOVAL_RATIO,
        allow_once: Vec::new(),
    };
    if let Some(g) = spec_guards {
        guards.allow_once = g.value.allow_once.clone();
        if let Some(n) = &g.value.max_removals {
            if n.value < 0 {
                r.error(
                    r.pos(n),
                    format!(
                        "guards.maxRemovals is {}, but it cannot be negative",
                        n.value
                    ),
                    "0 refuses every removal; 25 is a sensible start",
                );
            } else if n.value > ABSURD_MAX_REMOVALS {
                r.error(
                    r.pos(n),
                    format!("guards.maxRemovals {} is absurdly large (more than {ABSURD_MAX_REMOVALS}): the guard would never trip", n.value),
                    "keep the guard small; allow a large one-off cleanup with `runwarden apply --allow-removals N`",
                );
            } else {
                guards.max_removals = n.value as usize;
            }
        }
        if let Some(ratio) = &g.value.max_removal_ratio {
            let v = ratio.value;
            if v.is_finite() && v > 0.0 && v <= 1.0 {
                guards.max_removal_ratio = v;
            } else {
                let hint = if v > 1.0 && v <= 100.0 {
                    format!(
                        "it is a share, not a percentage: write {} for {v}%",
                        v / 100.0
                    )
                } else {
                    "write a share greater than 0 and at most 1, e.g. 0.5 for half".to_string()
                };
                r.error(
                    r.pos(ratio),
                    format!("guards.maxRemovalRatio {v} is outside (0, 1]"),
                    hint,
                );
            }
        }
    }

    guards
}

/// Converts `audits` (defaults where absent or invalid).
fn convert_audits(r: &mut Reporter<'_>, spec_audits: &Option<Spanned<wire::Audits>>) -> Audits {
    let mut audits = Audits {
        max_token_lifetime: DEFAULT_MAX_TOKEN_LIFETIME,
        max_signing_key_age: DEFAULT_MAX_SIGNING_KEY_AGE,
        require_coverage: false,
    };
    if let Some(a) = spec_audits {
        if let Some(d) = &a.value.max_token_lifetime {
            if let Some(d) = check_duration(
                r,
                d,
                "audits.maxTokenLifetime",
                MAX_TOKEN_LIFETIME_LIMIT,
                "Auth0 access tokens live at most 30d",
            ) {
                audits.max_token_lifetime = d;
            }
        }
        if let Some(d) = &a.value.max_signing_key_age {
            if let Some(d) = check_duration(
                r,
                d,
                "audits.maxSigningKeyAge",
                MAX_SIGNING_KEY_AGE_LIMIT,
                "rotate signing keys at least every few months, e.g. 90d",
            ) {
                audits.max_signing_key_age = d;
            }
        }
        audits.require_coverage = a
            .value
            .require_coverage
            .as_ref()
            .and_then(|b| boolean(r, b))
            .unwrap_or(false);
    }

    audits
}

/// Converts `pacing` (no pins where absent; an invalid rate is an error).
fn convert_pacing(r: &mut Reporter<'_>, spec: &Option<Spanned<wire::Pacing>>) -> Pacing {
    let Some(p) = spec else { return Pacing::default() };
    let mut pin = |field: &str, value: &Option<Spanned<String>>| {
        let v = value.as_ref()?;
        let pin: Option<crate::rate::Rate> = v.value.parse().ok();
        if pin.is_none() {
            r.error(
                r.pos(v),
                format!("pacing.{field} `{}` is not a rate", v.value),
                "write COUNT/UNIT with a positive COUNT and UNIT s, min or h, e.g. 600/min or 5/s",
            );
        }
        pin
    };
    Pacing {
        cloud_run_reads: pin("cloudRunReads", &p.value.cloud_run_reads),
        writes: pin("writes", &p.value.writes),
        iap: pin("iap", &p.value.iap),
        auth0: pin("auth0", &p.value.auth0),
        quota_project: p.value.quota_project.as_ref().map(|q| q.value.clone()),
    }
}

fn check_duration(
    r: &mut Reporter<'_>,
    d: &Spanned<String>,
    field: &str,
    limit: Duration,
    why: &str,
) -> Option<Duration> {
    match parse_duration(&d.value) {
        Ok(v) if v.is_zero() => {
            r.error(
                r.pos(d),
                format!("{field} is zero"),
                "write a positive duration such as 1h or 90d",
            );
            None
        }
        Ok(v) if v > limit => {
            r.error(
                r.pos(d),
                format!("{field} `{}` is absurdly long", d.value),
                why,
            );
            None
        }
        Ok(v) => Some(v),
        Err(err) => {
            r.error(
                r.pos(d),
                format!("{field}: {err}"),
                "durations are numbers with units s, m, h, d or w, e.g. 1h, 90d, 1h30m",
            );
            None
        }
    }
}

/// Checks each item of a string list with `check` and refuses duplicates; returns the values.
fn unique_list(
    r: &mut Reporter<'_>,
    items: &[Spanned<String>],
    what: &str,
    mut check: impl FnMut(&mut Reporter<'_>, &Spanned<String>),
) -> Vec<String> {
    let mut seen: HashMap<&str, (usize, usize)> = HashMap::new();
    let mut values = Vec::new();
    for item in items {
        check(r, item);
        if let Some(first) = seen.get(item.value.as_str()) {
            r.error(
                r.pos(item),
                format!(
                    "{what} `{}` is listed twice (first at line {})",
                    item.value, first.0
                ),
                "remove the duplicate",
            );
        } else {
            seen.insert(&item.value, r.pos(item));
            values.push(item.value.clone());
        }
    }
    values
}

fn member_patterns(r: &mut Reporter<'_>, items: &[Spanned<String>]) -> Vec<MemberPattern> {
    let mut patterns = Vec::new();
    for item in items {
        // A pattern is a member with `*` wildcards: with each `*` standing for one letter it
        // must be a valid member, which catches typos in the fixed parts.
        let sample = item.value.replace('*', "x");
        let checked = match Member::parse_written(&sample) {
            // A federated pattern may end anywhere in the path
            // (`principalSet://iam.googleapis.com/locations/global/workforcePools/acme-pool/*`):
            // only the structural check and plain ASCII apply to it.
            Err(_)
                if sample.starts_with("principal")
                    && sample.bytes().all(|b| b.is_ascii_graphic())
                    && Member::parse(&sample).is_ok() =>
            {
                Ok(())
            }
            other => other.map(|_| ()),
        };
        match checked {
            Ok(()) => patterns.push(MemberPattern { pattern: item.value.clone(), source: r.source(r.pos(item)) }),
            Err(err) => r.error(
                r.pos(item),
                format!("invalid member pattern `{}`: {}", item.value, err.reason),
                "a pattern is an IAM member with `*` wildcards, e.g. serviceAccount:*@acme-prod.iam.gserviceaccount.com",
            ),
        }
    }
    patterns
}

/// Facts about a policy that conflict checks need: positions of each exposure field.
struct PolicyFacts {
    ingress: Option<(Ingress, (usize, usize))>,
    public: Option<(bool, (usize, usize))>,
    iap: Option<(bool, (usize, usize))>,
    audiences: Option<(Vec<String>, (usize, usize))>,
}

fn convert_policy(
    r: &mut Reporter<'_>,
    doc: &wire::AccessPolicyDocument,
    settings: Option<&(Settings, SettingsFacts)>,
    clock: Clock,
) -> (AccessPolicy, PolicyFacts) {
    let name = check_name(r, &doc.metadata.name, "AccessPolicy");
    let source = r.source(r.pos(&doc.metadata.name));
    let spec = &doc.spec;
    let mode = match spec.mode {
        None | Some(wire::Mode::Enforce) => Mode::Enforce,
        Some(wire::Mode::Warn) => Mode::Warn,
        Some(wire::Mode::Observe) => Mode::Observe,
    };
    let scope = settings.map(|(s, f)| (&s.scope, &f.scope_at));

    let services = convert_services(r, &spec.services, &name, scope);
    let (exposure, facts) = convert_exposure(r, &spec.exposure);
    let public = exposure.public == Some(true);
    let iap = exposure.iap == Some(true);

    let invokers = convert_invokers(r, &spec.invokers, &name, settings.map(|(s, _)| s), clock);
    let listed_invokers = spec.invokers.as_ref().is_some_and(|l| !l.value.is_empty());
    if !listed_invokers && !public && exposure.ingress != Some(Ingress::None) {
        let at = spec
            .invokers
            .as_ref()
            .map(|s| r.pos(s))
            .unwrap_or(r.pos(&doc.metadata.name));
        r.error(
            at,
            format!("policy `{name}` names no invokers"),
            "list who may invoke the services under `invokers:`; a public service says `public: true`, and `ingress: none` closes a service to everyone",
        );
    }

    if let Some(settings) = settings {
        check_granted_roles(r, doc, &name, settings, listed_invokers, public, iap);
    }

    let policy = AccessPolicy {
        name,
        source,
        mode,
        services,
        exposure,
        invokers,
    };
    (policy, facts)
}

/// Converts `services`, each listed once.
fn convert_services(
    r: &mut Reporter<'_>,
    list: &Spanned<Vec<Spanned<wire::ServiceRef>>>,
    name: &str,
    scope: Option<(&Scope, &Source)>,
) -> Vec<ServiceRef> {
    let mut services: Vec<ServiceRef> = Vec::new();
    if list.value.is_empty() {
        r.error(
            r.pos(list),
            "`services` is empty",
            "list the services this policy governs: {project, region, name} or {project, region, selector}",
        );
    }
    for item in &list.value {
        if let Some(service) = convert_service(r, item, scope) {
            if let Some(first) = services.iter().find(|s| {
                s.project == service.project
                    && s.region == service.region
                    && s.target == service.target
            }) {
                r.error(
                    r.pos(item),
                    format!(
                        "this service is listed twice in policy `{name}` (first at {})",
                        first.source
                    ),
                    "remove the duplicate",
                );
            } else {
                services.push(service);
            }
        }
    }

    services
}

/// Converts `exposure`, with the facts exposure conflicts are judged on.
fn convert_exposure(
    r: &mut Reporter<'_>,
    spec_exposure: &Option<Spanned<wire::Exposure>>,
) -> (Exposure, PolicyFacts) {
    let mut exposure = Exposure::default();
    let mut facts = PolicyFacts {
        ingress: None,
        public: None,
        iap: None,
        audiences: None,
    };
    if let Some(e) = spec_exposure {
        exposure.source = Some(r.source(r.pos(e)));
        if let Some(i) = &e.value.ingress {
            let ingress = match i.value {
                wire::Ingress::All => Ingress::All,
                wire::Ingress::Internal => Ingress::Internal,
                wire::Ingress::InternalAndCloudLoadBalancing => {
                    Ingress::InternalAndCloudLoadBalancing
                }
                wire::Ingress::None => Ingress::None,
            };
            exposure.ingress = Some(ingress);
            exposure.field_sources.ingress = Some(r.source(r.pos(i)));
            facts.ingress = Some((ingress, r.pos(i)));
        }
        if let Some(p) = &e.value.public
            && let Some(value) = boolean(r, p)
        {
            exposure.public = Some(value);
            exposure.field_sources.public = Some(r.source(r.pos(p)));
            facts.public = Some((value, r.pos(p)));
        }
        if let Some(i) = &e.value.iap
            && let Some(value) = boolean(r, i)
        {
            exposure.iap = Some(value);
            exposure.field_sources.iap = Some(r.source(r.pos(i)));
            facts.iap = Some((value, r.pos(i)));
            if value && exposure.public == Some(true) {
                r.error(
                    r.pos(i),
                    "`public: true` and `iap: true` contradict each other",
                    "IAP makes every caller sign in; a public service lets anyone in: keep one of them",
                );
            }
        }
        if let Some(list) = &e.value.audiences {
            let audiences = unique_list(r, &list.value, "audience", |r, a| {
                if a.value.trim().is_empty() || a.value.trim() != a.value {
                    r.error(r.pos(a), "an audience is empty or has surrounding spaces", "write the audience exactly as callers put it in `aud`, e.g. https://billing.acme.com");
                } else if let Err(problem) = check_audience(&a.value) {
                    r.error(
                        r.pos(a),
                        format!("audience {:?} {problem}", a.value),
                        "Cloud Run custom audiences are full URLs, e.g. https://billing.acme.com",
                    );
                }
            });
            let mut sorted = audiences.clone();
            sorted.sort();
            facts.audiences = Some((sorted, r.pos(list)));
            exposure.field_sources.audiences = Some(r.source(r.pos(list)));
            exposure.audiences = Some(audiences);
        }
    }
    (exposure, facts)
}

/// Converts `invokers`, each principal listed once.
fn convert_invokers(
    r: &mut Reporter<'_>,
    spec_invokers: &Option<Spanned<Vec<Spanned<wire::Invoker>>>>,
    name: &str,
    settings: Option<&Settings>,
    clock: Clock,
) -> Vec<Invoker> {
    let mut invokers: Vec<Invoker> = Vec::new();
    if let Some(list) = spec_invokers {
        for item in &list.value {
            if let Some(invoker) = convert_invoker(r, item, settings, clock) {
                if let Some(first) = invokers.iter().find(|i| i.principal == invoker.principal) {
                    r.error(
                        r.pos(item),
                        format!(
                            "this invoker is listed twice in policy `{name}` (first at {})",
                            first.source
                        ),
                        "keep one entry per principal (with `expires` if the grant is time-boxed)",
                    );
                } else {
                    invokers.push(invoker);
                }
            }
        }
    }
    invokers
}

/// The roles this policy makes runwarden grant, each with why, must be in `allowedRoles`; and
/// Auth0 roles through the workforce pool need IAP.
fn check_granted_roles(
    r: &mut Reporter<'_>,
    doc: &wire::AccessPolicyDocument,
    name: &str,
    (settings, facts_s): &(Settings, SettingsFacts),
    listed_invokers: bool,
    public: bool,
    iap: bool,
) {
    let spec = &doc.spec;
    let mut needed: Vec<(&str, &str)> = Vec::new();
    if listed_invokers && !iap {
        needed.push((RUN_INVOKER, "its invokers"));
    }
    if public {
        needed.push((RUN_INVOKER, "`public: true` (allUsers)"));
    }
    if iap {
        needed.push((RUN_INVOKER, "`iap: true` (the IAP service agent)"));
        if listed_invokers {
            needed.push((IAP_ACCESSOR, "its invokers behind `iap: true`"));
        }
    }
    let mut reported = BTreeSet::new();
    for (role, why) in needed {
        if !settings.allowed_roles.iter().any(|a| a == role) && reported.insert(role) {
            let at = spec
                .invokers
                .as_ref()
                .map(|s| r.pos(s))
                .or(spec.exposure.as_ref().map(|s| r.pos(s)))
                .unwrap_or(r.pos(&doc.metadata.name));
            r.error(
                at,
                format!("policy `{name}` grants {role} for {why}, but Settings allowedRoles does not allow it"),
                format!("add {role} to allowedRoles at {}", facts_s.allowed_roles_at),
            );
        }
    }
    // DESIGN §2, "a trap to catch": workforce identities cannot mint the Google-signed ID
    // tokens Cloud Run's invoker check wants, so without IAP the grant is unusable.
    if matches!(settings.principals, PrincipalMapping::WorkforcePool { .. }) && !iap {
        if let Some(role) = spec
            .invokers
            .iter()
            .flat_map(|l| &l.value)
            .find_map(|i| i.value.auth0_role.as_ref())
        {
            r.warning(
                r.pos(role),
                format!("policy `{name}` grants Auth0 roles through the workforce pool without `iap: true`; workforce identities cannot mint the ID tokens Cloud Run's invoker check requires, so this grants nothing usable"),
                "set `exposure.iap: true` so people sign in through IAP",
            );
        }
    }
}

fn convert_service(
    r: &mut Reporter<'_>,
    item: &Spanned<wire::ServiceRef>,
    scope: Option<(&Scope, &Source)>,
) -> Option<ServiceRef> {
    let s = &item.value;
    let project = &s.project;
    let mut ok = check_service_project(r, project, scope);
    let region = service_region(r, &s.region, scope, &mut ok);
    let target = service_target(r, item, &region, scope, &mut ok)?;
    ok.then(|| ServiceRef {
        project: project.value.clone(),
        region,
        target,
        source: r.source(r.pos(item)),
    })
}

/// A service's `project`: a project id in the Settings scope.
fn check_service_project(
    r: &mut Reporter<'_>,
    project: &Spanned<String>,
    scope: Option<(&Scope, &Source)>,
) -> bool {
    let mut ok = true;
    if !is_project_id(&project.value) {
        ok = false;
        r.error(r.pos(project), format!("`{}` is not a Google Cloud project id", project.value), "a project id has 6 to 30 lowercase letters, digits and hyphens and starts with a letter");
    } else if let Some((scope, at)) = scope {
        if !scope.projects.contains(&project.value) {
            ok = false;
            r.error(
                r.pos(project),
                format!(
                    "project `{}` is not in the Settings scope ({})",
                    project.value,
                    scope.projects.join(", ")
                ),
                format!("add it to scope.projects at {at}, or fix the name"),
            );
        }
    }
    ok
}

/// `what` (a `region: "*"` or a selector) needs regions in the Settings scope.
fn needs_regions(
    r: &mut Reporter<'_>,
    scope: Option<(&Scope, &Source)>,
    at: (usize, usize),
    what: &str,
) -> bool {
    if let Some((scope, scope_at)) = scope {
        if scope.regions.is_empty() {
            r.error(
                at,
                format!("{what} needs regions in the Settings scope, which lists none"),
                format!("add `regions:` to the scope at {scope_at}, or name the region"),
            );
            return false;
        }
    }
    true
}

/// A service's `region`: a Cloud Run region in the Settings scope, or `"*"`.
fn service_region(
    r: &mut Reporter<'_>,
    region: &Spanned<String>,
    scope: Option<(&Scope, &Source)>,
    ok: &mut bool,
) -> RegionRef {
    if region.value == "*" {
        *ok &= needs_regions(r, scope, r.pos(region), "`region: \"*\"`");
        RegionRef::Any
    } else {
        if !is_region(&region.value) {
            *ok = false;
            r.error(
                r.pos(region),
                format!("`{}` is not a Cloud Run region", region.value),
                "write a region such as europe-west1, or \"*\" for every region in scope",
            );
        } else if let Some((scope, at)) = scope {
            if !scope.regions.is_empty() && !scope.regions.contains(&region.value) {
                *ok = false;
                r.error(
                    r.pos(region),
                    format!(
                        "region `{}` is not in the Settings scope ({})",
                        region.value,
                        scope.regions.join(", ")
                    ),
                    format!("add it to scope.regions at {at}, or fix the name"),
                );
            }
        }
        RegionRef::Named(region.value.clone())
    }
}

/// A service's `name` or `selector` (exactly one); `None` when neither or both are given.
fn service_target(
    r: &mut Reporter<'_>,
    item: &Spanned<wire::ServiceRef>,
    region: &RegionRef,
    scope: Option<(&Scope, &Source)>,
    ok: &mut bool,
) -> Option<ServiceTarget> {
    let s = &item.value;
    let target = match (&s.name, &s.selector) {
        (Some(_), Some(sel)) => {
            r.error(
                r.pos(sel),
                "a service has either `name` or `selector`, not both",
                "keep `name` for one service, or `selector` for every service with those labels",
            );
            return None;
        }
        (None, None) => {
            r.error(
                r.pos(item),
                "a service needs `name` or `selector`",
                "add `name: SERVICE` or `selector: {label: value}`",
            );
            return None;
        }
        (Some(n), None) => {
            if !is_service_name(&n.value) {
                *ok = false;
                r.error(r.pos(n), format!("`{}` is not a Cloud Run service name", n.value), "service names have up to 49 lowercase letters, digits and hyphens, start with a letter and do not end with a hyphen");
            }
            ServiceTarget::Named(n.value.clone())
        }
        (None, Some(sel)) => {
            if sel.value.is_empty() {
                *ok = false;
                r.error(
                    r.pos(sel),
                    "an empty selector would match every service",
                    "give at least one label, e.g. {team: billing}",
                );
            }
            for (k, v) in &sel.value {
                if !is_label_key(k) || !is_label_value(v) {
                    *ok = false;
                    r.error(r.pos(sel), format!("`{k}: {v}` is not a valid Cloud Run label"), "label keys start with a lowercase letter; keys and values have up to 63 lowercase letters, digits, `_` and `-`");
                }
            }
            // With `region: "*"` the missing regions are already reported, once per service.
            if *region != RegionRef::Any {
                *ok &= needs_regions(r, scope, r.pos(sel), "a selector");
            }
            ServiceTarget::Selector(sel.value.clone())
        }
    };
    Some(target)
}

fn convert_invoker(
    r: &mut Reporter<'_>,
    item: &Spanned<wire::Invoker>,
    settings: Option<&Settings>,
    clock: Clock,
) -> Option<Invoker> {
    let i = &item.value;
    let forms: Vec<(&str, &Spanned<String>)> = [
        ("auth0Role", &i.auth0_role),
        ("member", &i.member),
        ("machine", &i.machine),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
    .collect();
    let (form, value) = match forms.as_slice() {
        [one] => *one,
        [] => {
            r.error(
                r.pos(item),
                "an invoker needs one of `auth0Role`, `member` or `machine`",
                "e.g. `- auth0Role: billing-admin`",
            );
            return None;
        }
        [(first, _), (second, v), ..] => {
            r.error(r.pos(v), format!("an invoker names exactly one principal, but this one has `{first}` and `{second}`"), "split it into one list entry per principal");
            return None;
        }
    };
    let principal = match form {
        "auth0Role" => auth0_role_principal(r, value, settings)?,
        "member" => member_principal(r, value)?,
        _ => machine_principal(r, value, settings)?,
    };
    let expires = invoker_expiry(r, &i.expires, clock)?;
    Some(Invoker {
        principal,
        expires,
        source: r.source(r.pos(item)),
    })
}

/// `auth0Role: NAME`: a name a policy may write (and, with the workforce pool, one a pool
/// group can carry).
fn auth0_role_principal(
    r: &mut Reporter<'_>,
    value: &Spanned<String>,
    settings: Option<&Settings>,
) -> Option<Principal> {
    let role = value.value.as_str();
    let pool =
        settings.is_some_and(|s| matches!(s.principals, PrincipalMapping::WorkforcePool { .. }));
    if role.trim().is_empty() {
        r.error(
            r.pos(value),
            "the Auth0 role name is empty",
            "write the role's name as it appears in Auth0",
        );
        return None;
    }
    if let Err(problem) = check_role_name(role) {
        r.error(
            r.pos(value),
            format!("the Auth0 role name {problem}"),
            "write the role's name as it appears in Auth0",
        );
        return None;
    }
    if pool && (role.contains(char::is_whitespace) || role.contains('/')) {
        r.error(
            r.pos(value),
            format!("Auth0 role `{role}` cannot be a workforce pool group (spaces or `/`)"),
            "rename the role in Auth0, or use `mapping: users`",
        );
        return None;
    }
    Some(Principal::Auth0Role(role.to_string()))
}

/// `member: PRINCIPAL`: a principal that can be granted (not deleted, not public).
fn member_principal(r: &mut Reporter<'_>, value: &Spanned<String>) -> Option<Principal> {
    match Member::parse_written(&value.value) {
        Ok(m) if m.kind() == MemberKind::Deleted => {
            r.error(r.pos(value), format!("`{}` is a deleted principal and cannot be granted", value.value), "remove this invoker; runwarden removes deleted members from owned bindings by itself");
            None
        }
        Ok(m) if m.is_public() => {
            r.error(
                r.pos(value),
                format!("`{}` cannot be an invoker member", value.value),
                "to make a service public, set `exposure.public: true`",
            );
            None
        }
        Ok(m) => Some(Principal::Member(m)),
        Err(err) => {
            let hint = if value.value.is_ascii() {
                "write members as user:EMAIL, serviceAccount:EMAIL, group:EMAIL, domain:DOMAIN, principal://... or principalSet://..."
            } else {
                "retype the member: a look-alike or invisible character was likely pasted in (an internationalized domain is written in its xn-- form)"
            };
            r.error(r.pos(value), err.to_string(), hint);
            None
        }
    }
}

/// `machine: NAME`: a machine Settings defines.
fn machine_principal(
    r: &mut Reporter<'_>,
    value: &Spanned<String>,
    settings: Option<&Settings>,
) -> Option<Principal> {
    if let Some(s) = settings {
        if !s.machines.iter().any(|m| m.name == value.value) {
            let known: Vec<&str> = s.machines.iter().map(|m| m.name.as_str()).collect();
            let hint = if known.is_empty() {
                format!(
                    "Settings `{}` defines no machines: add one under `machines:` at {}",
                    s.name, s.source
                )
            } else {
                format!("known machines: {}", known.join(", "))
            };
            r.error(
                r.pos(value),
                format!("unknown machine `{}`", value.value),
                hint,
            );
            return None;
        }
    }
    Some(Principal::Machine(value.value.clone()))
}

/// `expires`: `Some(None)` without one, `None` when it is unreadable (or, in `validate`,
/// passed).
fn invoker_expiry(
    r: &mut Reporter<'_>,
    expires: &Option<Spanned<String>>,
    clock: Clock,
) -> Option<Option<SystemTime>> {
    match expires {
        None => Some(None),
        Some(e) => match parse_rfc3339(&e.value) {
            Ok(t) if t <= clock.now && clock.expired_is_error => {
                r.error(
                    r.pos(e),
                    format!("this grant expired at {}", e.value),
                    "remove the invoker, or move `expires` into the future",
                );
                None
            }
            Ok(t) if t <= clock.now => {
                // Outside `validate` a grant that ran out is not a broken repository: the
                // plan removes what it granted (reason `expired`) and says to delete the line.
                r.warning(
                    r.pos(e),
                    format!(
                        "this grant expired at {}; it grants nothing any more",
                        e.value
                    ),
                    "delete the invoker (the plan removes what it granted)",
                );
                Some(Some(t))
            }
            Ok(t) => Some(Some(t)),
            Err(err) => {
                r.error(
                    r.pos(e),
                    err,
                    "expires is an RFC 3339 time with a zone, e.g. 2027-01-31T00:00:00Z",
                );
                None
            }
        },
    }
}

/// The longest Auth0 role name a policy may name. The Management API's OpenAPI
/// (reference/auth0/management-api-v2.openapi.yaml, `roleCreate.name`) states no limit, so this
/// is runwarden's own bound: far above any real role name, and low enough that a role name
/// cannot flood a plan, a log line or a pull-request comment (a 20 MB name was accepted).
pub const MAX_ROLE_NAME: usize = 256;
/// The longest custom audience. Cloud Run states no limit (run.v2.json `customAudiences`); IAM
/// caps OIDC audiences at 256 characters (iam.v1.json, `OIDC.allowedAudiences`), the closest
/// limit Google documents for an audience.
pub const MAX_AUDIENCE: usize = 256;

/// Why `role` cannot be an Auth0 role name in a policy: too long, or holding a control or
/// invisible character (which would hide in reviews and reshape outputs).
pub fn check_role_name(role: &str) -> Result<(), String> {
    if role.chars().count() > MAX_ROLE_NAME {
        return Err(format!(
            "is {} characters long; the limit is {MAX_ROLE_NAME}",
            role.chars().count()
        ));
    }
    if let Some(c) = role.chars().find(|c| crate::text::is_hidden(*c)) {
        return Err(format!("contains {}", crate::iam::describe_char(c)));
    }
    Ok(())
}

/// Why `aud` cannot be a Cloud Run custom audience. The Admin API asks for "each custom audience
/// as the full URL in a string" (run.v2.json, `GoogleCloudRunV2Service.customAudiences`): an
/// absolute `https://` or `http://` URL with a host, in ASCII, without spaces or controls.
pub fn check_audience(aud: &str) -> Result<(), String> {
    if aud.len() > MAX_AUDIENCE {
        return Err(format!(
            "is {} characters long; the limit is {MAX_AUDIENCE}",
            aud.len()
        ));
    }
    if let Some(c) = aud
        .chars()
        .find(|c| !c.is_ascii() || c.is_ascii_control() || *c == ' ')
    {
        return Err(format!("contains {}", crate::iam::describe_char(c)));
    }
    let rest = aud
        .strip_prefix("https://")
        .or_else(|| aud.strip_prefix("http://"))
        .ok_or_else(|| "is not a full URL (https://HOST/...)".to_string())?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = host.split(':').next().unwrap_or("");
    if host.is_empty() {
        return Err("has no host".to_string());
    }
    Ok(())
}

/// The boolean, or an error at the value when it is text (a quoted `"false"`, or `yes`).
fn boolean(r: &mut Reporter<'_>, b: &Spanned<wire::Bool>) -> Option<bool> {
    match &b.value {
        wire::Bool::Value(v) => Some(*v),
        wire::Bool::Text(found) => {
            r.error(
                r.pos(b),
                format!("expected a boolean, found {found}"),
                "write true or false without quotes (a quoted \"false\" is a string; yes/no/on/off are not booleans here)",
            );
            None
        }
    }
}

fn check_name(r: &mut Reporter<'_>, name: &Spanned<String>, kind: &str) -> String {
    if !is_dns_label(&name.value, 63) {
        r.error(
            r.pos(name),
            format!("{kind} name `{}` is not valid", name.value),
            "names have up to 63 lowercase letters, digits and hyphens, and start and end with a letter or digit",
        );
    }
    name.value.clone()
}

/// Two policies that govern the same named service must agree on every exposure field both set
/// (DESIGN §3); `public: true` in one and `iap: true` in the other contradict each other too.
fn check_exposure_conflicts(
    policies: &[(AccessPolicy, PolicyFacts)],
    settings: Option<&Settings>,
    out: &mut Vec<Diagnostic>,
    errors: &mut usize,
) {
    let mut reported = BTreeSet::new();
    for ((project, region, name), indices) in &named_services(policies, settings) {
        for (n, &b) in indices.iter().enumerate() {
            for &a in &indices[..n] {
                let (pa, fa) = &policies[a];
                let (pb, fb) = &policies[b];
                for c in exposure_clashes(fa, fb) {
                    if !reported.insert((a, b, c.field)) {
                        continue;
                    }
                    *errors += 1;
                    let first = Source {
                        file: pa.source.file.clone(),
                        line: c.at_a.0,
                        column: c.at_a.1,
                    };
                    out.push(
                        Diagnostic::error(
                            &pb.source.file,
                            c.at_b.0,
                            c.at_b.1,
                            format!(
                                "conflicting exposure for service {project}/{region}/{name}: policy `{}` sets `{}` here, but policy `{}` sets `{}` at {first}",
                                pb.name, c.b, pa.name, c.a
                            ),
                        )
                        .with_hint(format!("policies that govern the same service must agree on its exposure: set `{}` in one of them only, or make them equal", c.field)),
                    );
                }
            }
        }
    }
}

/// (project, region, service) → the policies naming it, in file order (`region: "*"` = every
/// region in scope; selectors are judged against live, by the plan).
fn named_services(
    policies: &[(AccessPolicy, PolicyFacts)],
    settings: Option<&Settings>,
) -> BTreeMap<(String, String, String), Vec<usize>> {
    let mut by_service: BTreeMap<(String, String, String), Vec<usize>> = BTreeMap::new();
    for (index, (policy, _)) in policies.iter().enumerate() {
        for s in &policy.services {
            let ServiceTarget::Named(name) = &s.target else {
                continue;
            };
            let regions: Vec<String> = match &s.region {
                RegionRef::Named(region) => vec![region.clone()],
                RegionRef::Any => settings
                    .map(|s| s.scope.regions.clone())
                    .unwrap_or_default(),
            };
            for region in regions {
                let list = by_service
                    .entry((s.project.clone(), region, name.clone()))
                    .or_default();
                if !list.contains(&index) {
                    list.push(index);
                }
            }
        }
    }
    by_service
}

/// One exposure field two policies disagree on: what each says, and where.
struct Clash {
    field: &'static str,
    a: String,
    at_a: (usize, usize),
    b: String,
    at_b: (usize, usize),
}

/// Every exposure field policy `a` (first) and policy `b` both set differently, and
/// `public: true` against `iap: true` either way round.
fn exposure_clashes(fa: &PolicyFacts, fb: &PolicyFacts) -> Vec<Clash> {
    let mut out = Vec::new();
    let mut clash = |field, a, at_a, b, at_b| {
        out.push(Clash {
            field,
            a,
            at_a,
            b,
            at_b,
        })
    };
    if let (Some((x, at_a)), Some((y, at_b))) = (fa.ingress, fb.ingress)
        && x != y
    {
        let v = |i: Ingress| format!("ingress: {}", i.policy_value());
        clash("ingress", v(x), at_a, v(y), at_b);
    }
    if let (Some((x, at_a)), Some((y, at_b))) = (fa.public, fb.public)
        && x != y
    {
        clash(
            "public",
            format!("public: {x}"),
            at_a,
            format!("public: {y}"),
            at_b,
        );
    }
    if let (Some((x, at_a)), Some((y, at_b))) = (fa.iap, fb.iap)
        && x != y
    {
        clash("iap", format!("iap: {x}"), at_a, format!("iap: {y}"), at_b);
    }
    if let (Some((x, at_a)), Some((y, at_b))) = (&fa.audiences, &fb.audiences)
        && x != y
    {
        let v = |l: &[String]| format!("audiences: [{}]", l.join(", "));
        clash("audiences", v(x), *at_a, v(y), *at_b);
    }
    if let (Some((true, at_a)), Some((true, at_b))) = (fa.public, fb.iap) {
        clash(
            "public/iap",
            "public: true".into(),
            at_a,
            "iap: true".into(),
            at_b,
        );
    }
    if let (Some((true, at_a)), Some((true, at_b))) = (fa.iap, fb.public) {
        clash(
            "public/iap",
            "iap: true".into(),
            at_a,
            "public: true".into(),
            at_b,
        );
    }
    out
}

fn is_dns_label(s: &str, max: usize) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= max
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn is_project_id(s: &str) -> bool {
    (6..=30).contains(&s.len()) && is_dns_label(s, 30) && s.as_bytes()[0].is_ascii_lowercase()
}

fn is_pool_id(s: &str) -> bool {
    (6..=63).contains(&s.len()) && is_dns_label(s, 63) && s.as_bytes()[0].is_ascii_lowercase()
}

fn is_service_name(s: &str) -> bool {
    is_dns_label(s, 49) && s.as_bytes()[0].is_ascii_lowercase()
}

fn is_region(s: &str) -> bool {
    is_dns_label(s, 63)
        && s.as_bytes()[0].is_ascii_lowercase()
        && s.contains('-')
        && s.as_bytes()[s.len() - 1].is_ascii_digit()
}

fn is_label_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.as_bytes()[0].is_ascii_lowercase()
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
}

fn is_label_value(s: &str) -> bool {
    s.len() <= 63
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
}

fn is_domain(s: &str) -> bool {
    crate::iam::check_written_domain(s).is_ok()
}

fn is_env_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// Environment variable names are conventionally upper case words; a long mixed-case run of
/// letters and digits is far more likely a pasted client secret (Auth0's are 64 characters).
fn looks_like_a_secret(s: &str) -> bool {
    s.len() >= 32
        && s.chars().any(|c| c.is_ascii_lowercase())
        && s.chars().any(|c| c.is_ascii_uppercase())
}

fn is_role(s: &str) -> bool {
    let ok_name = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_')
    };
    let parts: Vec<&str> = s.split('/').collect();
    match parts.as_slice() {
        ["roles", name] => ok_name(name),
        ["projects" | "organizations", parent, "roles", name] => {
            !parent.is_empty() && ok_name(name)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifier_rules_follow_google_cloud() {
        for (ok, s) in [
            (true, "acme-prod"),
            (false, "acme"),
            (false, "Acme-prod"),
            (false, "1acme-prod"),
            (false, "acme-prod-"),
        ] {
            assert_eq!(is_project_id(s), ok, "project {s}");
        }
        for (ok, s) in [
            (true, "europe-west1"),
            (true, "northamerica-northeast2"),
            (false, "europe"),
            (false, "EU-west1"),
            (false, "*"),
        ] {
            assert_eq!(is_region(s), ok, "region {s}");
        }
        for (ok, s) in [
            (true, "roles/run.invoker"),
            (true, "projects/p/roles/custom_1"),
            (false, "run.invoker"),
            (false, "roles/"),
            (false, "roles/a/b"),
        ] {
            assert_eq!(is_role(s), ok, "role {s}");
        }
        for (ok, s) in [
            (true, "billing-api"),
            (false, "billing_api"),
            (false, "-x"),
            (false, "9lives"),
        ] {
            assert_eq!(is_service_name(s), ok, "service {s}");
        }
        for (ok, s) in [
            (true, "AUTH0_CLIENT_SECRET"),
            (true, "_x1"),
            (false, "1X"),
            (false, "A-B"),
            (false, ""),
        ] {
            assert_eq!(is_env_name(s), ok, "env {s}");
        }
    }

    #[test]
    fn a_long_mixed_case_value_looks_like_a_secret_and_a_variable_name_does_not() {
        assert!(looks_like_a_secret(
            "aB3dEf9hIjK2mNoP4rStU6wXyZ8bCdEfGh1JkLmN"
        ));
        assert!(!looks_like_a_secret("AUTH0_CLIENT_SECRET"));
        assert!(!looks_like_a_secret(
            "RUNWARDEN_AUTH0_MANAGEMENT_API_CLIENT_SECRET"
        ));
    }
}
