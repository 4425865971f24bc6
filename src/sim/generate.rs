//! The `generate` section: a synthetic estate, reproducible from the seed.
//!
//! Naming contract (DESIGN §7; benchmarks and reliability tests rely on it):
//! * projects `gen-project-1` ... `gen-project-N`, numbers (12 digits) derived from the seed;
//! * services `svc-00001` ... numbered from 1 within each (project, region), in the listed regions;
//! * label `team: team-00`, `team-01` ... (two digits at least): `servicesPerTeam` consecutive
//!   services in generation order (project, then region, then number) share a team;
//! * a `publicFraction` share of services (chosen by the seed) starts with `allUsers` as
//!   `roles/run.invoker`; the others start with an empty policy;
//! * users `user-000001@gen.example` ..., e-mail verified, user ids `auth0|gen...` in index order;
//! * roles `role-001` ..., each with `usersPerRole` consecutive users (wrapping) from a
//!   seed-chosen start; the first quarter of them hold the role through the group `group-001`
//!   (same number as the role) assigned to it, the rest directly.
//! * Without an `auth0` section the tenant is `gen.auth0.example` with Management API client id
//!   `gen`; with one, the generated users and roles are added to that tenant.

use std::collections::BTreeSet;

use crate::iam::{Binding, Member, Policy, RUN_INVOKER};

use super::SimError;
use super::faults::SplitMix;
use super::state::{
    EMPTY_ETAG, GroupRec, IamResource, Project, RoleRec, Service, Store, UserRec, default_uri,
    uid_for,
};
use super::world::{GenerateSpec, IngressValue};

/// The largest generated estate: ten times the 10,000 services of the biggest benchmark. Each
/// service costs about 1 KiB of simulator memory, so this bounds a world file's estate to about
/// 100 MiB instead of whatever `4294967295` multiplied out to.
pub const MAX_GENERATED_SERVICES: u64 = 100_000;
/// The most generated projects (each also holds a unique 12-digit number).
pub const MAX_GENERATED_PROJECTS: u32 = 10_000;
/// The most generated Auth0 users (`user-000001` ... numbers have six digits).
pub const MAX_GENERATED_USERS: u32 = 999_999;
/// The most generated Auth0 roles.
pub const MAX_GENERATED_ROLES: u32 = 10_000;
/// The most generated role memberships (roles × usersPerRole).
pub const MAX_GENERATED_MEMBERSHIPS: u64 = 10_000_000;

/// Refuses a `generate` section whose estate would not fit in memory, before building any of it.
fn check_sizes(g: &GenerateSpec) -> Result<(), String> {
    // In u128, the product of three u32 values cannot overflow.
    let services = g.projects as u128 * g.regions.len() as u128 * g.services_per_region as u128;
    if services > MAX_GENERATED_SERVICES as u128 {
        return Err(format!(
            "projects × regions × servicesPerRegion is {services}, above the limit of {MAX_GENERATED_SERVICES} generated services"
        ));
    }
    if g.projects > MAX_GENERATED_PROJECTS {
        return Err(format!(
            "projects is {}, above the limit of {MAX_GENERATED_PROJECTS}",
            g.projects
        ));
    }
    if g.users > MAX_GENERATED_USERS {
        return Err(format!(
            "users is {}, above the limit of {MAX_GENERATED_USERS}",
            g.users
        ));
    }
    if g.roles > MAX_GENERATED_ROLES {
        return Err(format!(
            "roles is {}, above the limit of {MAX_GENERATED_ROLES}",
            g.roles
        ));
    }
    let memberships = g.roles as u64 * g.users_per_role as u64;
    if memberships > MAX_GENERATED_MEMBERSHIPS {
        return Err(format!(
            "roles × usersPerRole is {memberships}, above the limit of {MAX_GENERATED_MEMBERSHIPS} generated role memberships"
        ));
    }
    Ok(())
}

/// Adds the generated estate to `store`.
pub fn generate(store: &mut Store, g: &GenerateSpec, now: &str) -> Result<(), SimError> {
    check_spec(g).map_err(|m| SimError::World(format!("generate: {m}")))?;
    let mut rng = SplitMix(g.seed);
    generate_services(store, g, &mut rng, now)?;
    generate_tenant(store, g, &mut rng);
    Ok(())
}

/// Refuses a spec that cannot be generated (sizes, fractions, missing regions).
fn check_spec(g: &GenerateSpec) -> Result<(), String> {
    let bad = |m: &str| m.to_string();
    check_sizes(g)?;
    if !(0.0..=1.0).contains(&g.public_fraction) {
        return Err(bad("publicFraction must be between 0 and 1"));
    }
    if g.services_per_team == 0 {
        return Err(bad("servicesPerTeam must be at least 1"));
    }
    if g.projects > 0 && g.services_per_region > 0 && g.regions.is_empty() {
        return Err(bad(
            "regions must list at least one region when services are generated",
        ));
    }
    if g.roles > 0 && g.users_per_role > g.users {
        return Err(bad("usersPerRole cannot exceed users"));
    }
    Ok(())
}

/// Projects with random numbers, and in every region their services, some public.
fn generate_services(
    store: &mut Store,
    g: &GenerateSpec,
    rng: &mut SplitMix,
    now: &str,
) -> Result<(), SimError> {
    let mut used_numbers = BTreeSet::new();
    let public = Member::parse("allUsers").expect("allUsers is a member");
    let mut ordinal: u64 = 0;
    for p in 1..=g.projects {
        let id = format!("gen-project-{p}");
        let number = loop {
            let n = 100_000_000_000 + rng.next_u64() % 900_000_000_000;
            if used_numbers.insert(n) && !store.project_by_number.contains_key(&n) {
                break n;
            }
        };
        store.add_project(Project {
            id: id.clone(),
            number,
            display_name: id.clone(),
            iap_agent: false,
            iam: super::state::policy_from_spec(None).expect("an empty policy is valid"),
            parent: None,
        })?;
        for region in &g.regions {
            for s in 1..=g.services_per_region {
                let name = format!("svc-{s:05}");
                let team = format!("team-{:02}", ordinal / g.services_per_team as u64);
                ordinal += 1;
                let is_public = rng.next_f64() < g.public_fraction;
                let mut iam = Policy {
                    version: 0,
                    etag: EMPTY_ETAG.into(),
                    bindings: vec![],
                };
                if is_public {
                    iam.version = 1;
                    iam.etag = store.next_etag();
                    iam.bindings.push(Binding {
                        role: RUN_INVOKER.into(),
                        members: BTreeSet::from([public.clone()]),
                        condition: None,
                    });
                }
                let key = (id.clone(), region.clone(), name.clone());
                let etag = store.next_service_etag();
                let svc = generated_service(&key, team, number, iam, etag, now);
                store.services.insert(key, svc);
            }
        }
    }
    Ok(())
}

fn generated_service(
    key: &(String, String, String),
    team: String,
    number: u64,
    iam: Policy,
    etag: String,
    now: &str,
) -> Service {
    let (_, region, name) = key;
    Service {
        uid: uid_for(key),
        generation: 1,
        labels: [("team".to_string(), team)].into_iter().collect(),
        annotations: Default::default(),
        ingress: IngressValue::IngressTrafficAll,
        invoker_iam_disabled: false,
        custom_audiences: Vec::new(),
        iap_enabled: false,
        uri: default_uri(name, number, region),
        create_time: now.to_string(),
        update_time: now.to_string(),
        etag,
        reconciling: false,
        iam: IamResource {
            policy: iam,
            armed: false,
        },
        iap: IamResource {
            policy: Policy {
                version: 0,
                etag: EMPTY_ETAG.into(),
                bindings: vec![],
            },
            armed: false,
        },
    }
}

/// Users, and roles over consecutive users, a quarter of each role's users through a group.
fn generate_tenant(store: &mut Store, g: &GenerateSpec, rng: &mut SplitMix) {
    let first_user = store.tenant.users.len() as u32;
    for u in 1..=g.users {
        let tag = rng.next_u64();
        store.add_user(UserRec {
            user_id: format!("auth0|gen{u:09}{:012x}", tag & 0xffff_ffff_ffff),
            email: format!("user-{u:06}@gen.example"),
            email_verified: true,
            blocked: false,
            name: format!("User {u:06}"),
            searched: None,
        });
    }
    for r in 1..=g.roles {
        let name = format!("role-{r:03}");
        let start = (rng.next_u64() % g.users.max(1) as u64) as u32;
        let mut members: Vec<u32> = (0..g.users_per_role)
            .map(|k| first_user + (start + k) % g.users)
            .collect();
        // Generated user ids sort in index order, so sorting indices sorts by user id.
        members.sort_unstable();
        let via_group = (g.users_per_role / 4) as usize;
        let (group_part, direct) = members.split_at(via_group.min(members.len()));
        let mut groups = Vec::new();
        if !group_part.is_empty() {
            let group_name = format!("group-{r:03}");
            groups.push(store.tenant.groups.len() as u32);
            store.tenant.groups.push(GroupRec {
                id: super::state::group_id_for(&group_name),
                name: group_name,
                members: group_part.to_vec(),
                nested: Vec::new(),
            });
        }
        store.tenant.roles.push(RoleRec {
            id: super::state::role_id_for(&name),
            name,
            description: format!("Generated role {r:03}"),
            users: direct.to_vec(),
            groups,
        });
    }
}
