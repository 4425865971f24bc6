//! Auth0: the Management API client ([`auth0`]) and the directory read of one pass
//! ([`read_directory`]): the roles policies name, and — for the `users` mapping — who holds them.
//!
//! Cost model (Auth0 allows a few requests per second, so calls are counted, not assumed):
//! * all roles: `ceil(roles / 100)` calls (offset paging with totals);
//! * per named role: its direct members (`ceil(members / 100)` checkpoint pages, each member
//!   with its e-mail) and its assigned groups (checkpoint pages);
//! * per distinct group assigned to any named role: its members (checkpoint pages), once per
//!   pass even when several roles share the group;
//! * per distinct member: one `GET /api/v2/users/{id}` (e-mail, `email_verified`, `blocked`).
//!   Group member listings carry only ids, and user search is eventually consistent and capped
//!   at 1,000 results, so each user's own record is the one authoritative source; anything
//!   not positively verified is not granted, and a blocked user is never granted.
//!
//! The mapping of roles to IAM members (DESIGN §2) is the plan's job; this module only reports
//! what Auth0 says, as `crate::model::Directory`.

pub mod auth0;
pub mod oidc;
mod wire;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;

pub use auth0::{
    Auth0Client, Auth0Config, Auth0Error, Checkpoint, OffsetPage, Secret, SecretSource,
};
pub use wire::{GroupMemberRef, GroupRef, MemberRef, OrganizationRef, RoleRef, UserRef};

use crate::model::{Directory, Role, User};
use crate::retry::{Classified, RetryPolicy, retry};

/// Auth0 stops any offset listing or search at this many results.
pub const OFFSET_LIMIT: u64 = 1000;

/// A directory read failed; says which step.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("listing the Auth0 roles failed: {0}")]
    ListRoles(#[source] Auth0Error),
    #[error("reading the users of Auth0 role {role:?} failed: {source}")]
    RoleUsers {
        role: String,
        #[source]
        source: Auth0Error,
    },
    #[error("reading the groups assigned to Auth0 role {role:?} failed: {source}")]
    RoleGroups {
        role: String,
        #[source]
        source: Auth0Error,
    },
    #[error("reading the members of Auth0 group {group:?} failed: {source}")]
    GroupMembers {
        group: String,
        #[source]
        source: Auth0Error,
    },
    #[error("reading Auth0 user {user:?} (e-mail, verification, blocked) failed: {source}")]
    User {
        user: String,
        #[source]
        source: Auth0Error,
    },
    #[error(
        "Auth0 listing {what} does not end: checkpoint {from:?} was returned before (or the \
         listing passed 10,000 pages), so it cannot be read to its end; the directory read \
         fails (the next pass reads again)"
    )]
    Stuck { what: String, from: String },
    #[error("an Auth0 directory task failed: {0}")]
    Task(String),
}

/// What one pass needs from Auth0.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DirectoryRequest {
    /// Role names the policies reference.
    pub roles: BTreeSet<String>,
    /// Whether to resolve members (the `users` mapping); `workforcePool` only needs to know
    /// that the roles exist.
    pub resolve_members: bool,
    /// Whether to read the groups assigned to each role (`spec.auth0.groups: read`); `false`
    /// when the Settings declare the tenant uses none.
    pub read_groups: bool,
}

/// Calls made by a directory read, by kind (for progress and benchmarks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DirectoryStats {
    pub role_pages: usize,
    pub role_user_pages: usize,
    pub role_group_pages: usize,
    pub group_member_pages: usize,
    pub user_lookups: usize,
}

/// Reads the roles `request` names and, when asked, their members, each role once.
///
/// # Errors
/// Any Auth0 failure that survives the retry policy. A role that does not exist is not an
/// error here: it is absent from `Directory.roles`, and the plan reports it.
pub async fn read_directory(
    client: &Auth0Client,
    request: &DirectoryRequest,
    policy: &RetryPolicy,
) -> Result<(Directory, DirectoryStats), IdentityError> {
    let mut stats = DirectoryStats::default();
    if request.roles.is_empty() {
        return Ok((
            Directory {
                roles: BTreeMap::new(),
                members_resolved: request.resolve_members,
            },
            stats,
        ));
    }
    let found = find_roles(client, &request.roles, policy, &mut stats).await?;
    tracing::info!(
        wanted = request.roles.len(),
        found = found.len(),
        "read the Auth0 roles"
    );
    if !request.resolve_members {
        let roles = found
            .into_iter()
            .map(|(name, r)| {
                (
                    name,
                    Role {
                        id: r.id,
                        name: r.name,
                        members: vec![],
                        empty_groups: vec![],
                    },
                )
            })
            .collect();
        return Ok((
            Directory {
                roles,
                members_resolved: false,
            },
            stats,
        ));
    }

    let per_role = role_assignments(client, &found, request.read_groups, policy, &mut stats).await?;
    let group_members = members_of_groups(client, &per_role, policy, &mut stats).await?;
    // Assemble each role's members (direct assignments and group members) by user id, then
    // read every member's own record after the listings, so a user added meanwhile is covered.
    let mut roles: BTreeMap<String, Role> = per_role
        .into_iter()
        .map(|(role, direct, assigned)| {
            let role = assemble_role(role, direct, &assigned, &group_members);
            (role.name.clone(), role)
        })
        .collect();
    let ids: BTreeSet<String> = roles
        .values()
        .flat_map(|r| r.members.iter().map(|u| u.user_id.clone()))
        .collect();
    let records = lookup_users(client, &ids, policy, &mut stats).await?;
    let (unverified, blocked) = apply_records(&mut roles, &records);
    tracing::info!(
        roles = roles.len(),
        users = ids.len(),
        unverified,
        blocked,
        deleted = records.values().filter(|r| r.is_none()).count(),
        "resolved Auth0 role members"
    );
    Ok((
        Directory {
            roles,
            members_resolved: true,
        },
        stats,
    ))
}

/// Fills each member in from its own record (e-mail, verification, blocked) and drops the
/// members deleted since the listing; returns how many holdings are unverified and blocked.
fn apply_records(
    roles: &mut BTreeMap<String, Role>,
    records: &HashMap<String, Option<UserRef>>,
) -> (usize, usize) {
    let (mut unverified, mut blocked) = (0usize, 0usize);
    for role in roles.values_mut() {
        // A user deleted between the listing and the look-up holds nothing.
        role.members.retain(|u| records.get(&u.user_id).is_some_and(Option::is_some));
        for u in &mut role.members {
            let Some(Some(record)) = records.get(&u.user_id) else { continue };
            u.email = record.email.clone();
            u.email_verified = record.email.is_some() && record.email_verified;
            u.blocked = record.blocked;
            unverified += usize::from(!u.email_verified);
            blocked += usize::from(u.blocked);
        }
    }
    (unverified, blocked)
}

/// A role with its direct members and its assigned groups.
type RoleAssignments = (RoleRef, Vec<MemberRef>, Vec<GroupRef>);

/// Direct members and assigned groups of every named role, concurrently (the client bounds the
/// calls in flight and paces them).
async fn role_assignments(
    client: &Auth0Client,
    found: &BTreeMap<String, RoleRef>,
    read_groups: bool,
    policy: &RetryPolicy,
    stats: &mut DirectoryStats,
) -> Result<Vec<RoleAssignments>, IdentityError> {
    let mut tasks = tokio::task::JoinSet::new();
    for role in found.values().cloned() {
        let client = client.clone();
        let policy = policy.clone();
        tasks.spawn(async move {
            let users = drain(&policy, "role users", &role.name, |from| {
                let (client, id) = (client.clone(), role.id.clone());
                async move { client.role_users_page(&id, from.as_deref()).await }
            })
            .await
            .map_err(|e| {
                e.into_identity(|source| IdentityError::RoleUsers {
                    role: role.name.clone(),
                    source,
                })
            })?;
            if !read_groups {
                return Ok::<_, IdentityError>((role, users, (vec![], 0)));
            }
            let groups = drain(&policy, "role groups", &role.name, |from| {
                let (client, id) = (client.clone(), role.id.clone());
                async move { client.role_groups_page(&id, from.as_deref()).await }
            })
            .await
            .map_err(|e| {
                e.into_identity(|source| IdentityError::RoleGroups {
                    role: role.name.clone(),
                    source,
                })
            })?;
            Ok::<_, IdentityError>((role, users, groups))
        });
    }
    let mut per_role = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (role, users, groups) = joined.map_err(|e| IdentityError::Task(e.to_string()))??;
        stats.role_user_pages += users.1;
        stats.role_group_pages += groups.1;
        per_role.push((role, users.0, groups.0));
    }
    Ok(per_role)
}

/// Members of each distinct group assigned to any role, each group listed once.
async fn members_of_groups(
    client: &Auth0Client,
    per_role: &[RoleAssignments],
    policy: &RetryPolicy,
    stats: &mut DirectoryStats,
) -> Result<HashMap<String, Vec<GroupMemberRef>>, IdentityError> {
    let mut groups: BTreeMap<String, GroupRef> = BTreeMap::new();
    for (_, _, gs) in per_role {
        for g in gs {
            groups.entry(g.id.clone()).or_insert_with(|| g.clone());
        }
    }
    let mut tasks = tokio::task::JoinSet::new();
    for group in groups.values().cloned() {
        let client = client.clone();
        let policy = policy.clone();
        tasks.spawn(async move {
            let members = drain(&policy, "group members", &group.name, |from| {
                let (client, id) = (client.clone(), group.id.clone());
                async move { client.group_members_page(&id, from.as_deref()).await }
            })
            .await
            .map_err(|e| {
                e.into_identity(|source| IdentityError::GroupMembers {
                    group: group.name.clone(),
                    source,
                })
            })?;
            Ok::<_, IdentityError>((group.id, members))
        });
    }
    let mut group_members: HashMap<String, Vec<GroupMemberRef>> = HashMap::new();
    while let Some(joined) = tasks.join_next().await {
        let (id, (members, pages)) = joined.map_err(|e| IdentityError::Task(e.to_string()))??;
        stats.group_member_pages += pages;
        group_members.insert(id, members);
    }
    Ok(group_members)
}

/// One role's members: direct assignments and group members, by user id (e-mail, verification
/// and blocking are filled in from each user's own record later); groups without members are
/// listed as empty.
///
/// A nested group (`member_type: group`) is not expanded: its members hold nothing through the
/// outer group (fail closed; grant them through a group assigned to the role directly). It is
/// logged, and does not make the outer group count as empty.
fn assemble_role(
    role: RoleRef,
    direct: Vec<MemberRef>,
    assigned: &[GroupRef],
    group_members: &HashMap<String, Vec<GroupMemberRef>>,
) -> Role {
    let mut members: BTreeMap<String, User> = BTreeMap::new();
    for m in direct {
        members.entry(m.user_id.clone()).or_insert_with(|| blank_user(&m.user_id)).direct = true;
    }
    for g in assigned {
        for m in group_members.get(&g.id).map(Vec::as_slice).unwrap_or(&[]) {
            if m.is_group() {
                tracing::warn!(role = %role.name, group = %g.name, nested = %m.id,
                    "Auth0 group holds a nested group; runwarden does not expand nested groups, so its members get nothing through it");
                continue;
            }
            let user = members.entry(m.id.clone()).or_insert_with(|| blank_user(&m.id));
            if !user.via_groups.contains(&g.name) {
                user.via_groups.push(g.name.clone());
            }
        }
    }
    let mut empty_groups: Vec<String> = assigned
        .iter()
        .filter(|g| group_members.get(&g.id).is_none_or(Vec::is_empty))
        .map(|g| g.name.clone())
        .collect();
    empty_groups.sort();
    empty_groups.dedup();
    let mut members: Vec<User> = members.into_values().collect();
    for u in &mut members {
        u.via_groups.sort();
    }
    Role {
        id: role.id,
        name: role.name,
        members,
        empty_groups,
    }
}

fn blank_user(user_id: &str) -> User {
    User {
        user_id: user_id.to_string(),
        email: None,
        email_verified: false,
        blocked: false,
        via_groups: vec![],
        direct: false,
    }
}

/// All roles (offset pages), keeping the ones named in `wanted`. When the tenant has more
/// roles than one listing can return, missing names are looked up with `name_filter`.
async fn find_roles(
    client: &Auth0Client,
    wanted: &BTreeSet<String>,
    policy: &RetryPolicy,
    stats: &mut DirectoryStats,
) -> Result<BTreeMap<String, RoleRef>, IdentityError> {
    let size = client.config().page_size.max(1) as u64;
    let mut found = BTreeMap::new();
    let mut seen = 0u64;
    let mut truncated = false;
    for page in 0u32.. {
        let answer = retry(policy, "list roles", || client.roles_page(page))
            .await
            .map_err(IdentityError::ListRoles)?;
        stats.role_pages += 1;
        let n = answer.items.len() as u64;
        seen += n;
        for r in answer.items {
            if wanted.contains(&r.name) {
                found.insert(r.name.clone(), r);
            }
        }
        let total = answer.total;
        let more = match total {
            Some(total) => seen < total && n > 0,
            None => n == size,
        };
        if !more {
            break;
        }
        if !next_page_in_window(page, size) {
            truncated = true;
            break;
        }
    }
    if truncated {
        let missing: Vec<&String> = wanted.iter().filter(|n| !found.contains_key(*n)).collect();
        for name in missing {
            let matches = retry(policy, "find role by name", || client.roles_named(name))
                .await
                .map_err(IdentityError::ListRoles)?;
            stats.role_pages += 1;
            if let Some(r) = matches.into_iter().find(|r| &r.name == name) {
                found.insert(name.clone(), r);
            }
        }
    }
    Ok(found)
}

/// Each user's own record (`GET /api/v2/users/{id}`), the source runwarden trusts for e-mail,
/// verification and blocking: user search is eventually consistent (a user changed seconds ago
/// is not found) and stops at 1,000 results, so "not found unverified" is not "verified".
/// As many workers as the client has calls in flight take ids from one queue, so no more calls
/// pass the pacer than can be sent, and a rate-limit budget seen on an answer holds the rest
/// back. `None`: the user was deleted after the listing (404), and holds nothing.
async fn lookup_users(
    client: &Auth0Client,
    ids: &BTreeSet<String>,
    policy: &RetryPolicy,
    stats: &mut DirectoryStats,
) -> Result<HashMap<String, Option<UserRef>>, IdentityError> {
    let queue = std::sync::Arc::new(std::sync::Mutex::new(ids.iter().cloned().collect::<Vec<_>>()));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..client.config().concurrency.clamp(1, ids.len().max(1)) {
        let (client, policy, queue) = (client.clone(), policy.clone(), queue.clone());
        tasks.spawn(async move {
            let mut found = Vec::new();
            loop {
                let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop();
                let Some(id) = next else { return Ok(found) };
                found.push(lookup_user(&client, &policy, id).await?);
            }
        });
    }
    let mut out = HashMap::new();
    while let Some(joined) = tasks.join_next().await {
        let found = joined.map_err(|e| IdentityError::Task(e.to_string()))??;
        stats.user_lookups += found.len();
        out.extend(found);
    }
    Ok(out)
}

/// One user's record; `None` when Auth0 says the user does not exist (deleted meanwhile).
async fn lookup_user(
    client: &Auth0Client,
    policy: &RetryPolicy,
    id: String,
) -> Result<(String, Option<UserRef>), IdentityError> {
    match retry(policy, "get user", || client.get_user(&id)).await {
        Ok(user) if user.user_id != id => Err(IdentityError::User {
            source: Auth0Error::Decode {
                method: reqwest::Method::GET,
                path: format!("/api/v2/users/{id}"),
                reason: format!("the answer is about another user ({:?})", user.user_id),
            },
            user: id,
        }),
        Ok(user) => Ok((id, Some(user))),
        Err(e) if e.class() == crate::retry::ErrorClass::NotFound => {
            tracing::info!(user = %id, "Auth0 user deleted after the role listing: holds nothing");
            Ok((id, None))
        }
        Err(source) => Err(IdentityError::User { user: id, source }),
    }
}

/// Whether page `page + 1` (pages of `size`) still lies within the first [`OFFSET_LIMIT`]
/// results, beyond which Auth0 refuses offset paging and searches.
fn next_page_in_window(page: u32, size: u64) -> bool {
    (page as u64 + 2) * size <= OFFSET_LIMIT
}

/// A listing failure: the API's error, or a checkpoint that did not advance.
enum DrainError {
    Api(Auth0Error),
    Stuck { what: String, from: String },
}

impl DrainError {
    fn into_identity(self, api: impl FnOnce(Auth0Error) -> IdentityError) -> IdentityError {
        match self {
            DrainError::Api(e) => api(e),
            DrainError::Stuck { what, from } => IdentityError::Stuck { what, from },
        }
    }
}

/// The most checkpoint pages one listing may take: a million members at 100 a page. A listing
/// that goes on with fresh checkpoints is not followed forever.
const MAX_CHECKPOINT_PAGES: usize = 10_000;

/// Follows a checkpoint listing to its end (`next` absent); returns the items and the number
/// of pages read. Each page is retried on its own.
async fn drain<T, F, Fut>(
    policy: &RetryPolicy,
    what: &str,
    of: &str,
    fetch: F,
) -> Result<(Vec<T>, usize), DrainError>
where
    F: Fn(Option<String>) -> Fut,
    Fut: Future<Output = Result<Checkpoint<T>, Auth0Error>>,
{
    let mut items = Vec::new();
    let mut from: Option<String> = None;
    let mut pages = 0;
    // Every checkpoint seen: a server that answers a checkpoint already followed (at once or
    // after a cycle of any length) would otherwise be followed forever.
    let mut seen = std::collections::HashSet::new();
    let label = format!("{what} of {of}");
    loop {
        let page = retry(policy, &label, || fetch(from.clone()))
            .await
            .map_err(DrainError::Api)?;
        pages += 1;
        items.extend(page.items);
        match page.next {
            None => return Ok((items, pages)),
            Some(next) if !seen.insert(next.clone()) || seen.len() > MAX_CHECKPOINT_PAGES => {
                return Err(DrainError::Stuck {
                    what: label,
                    from: next,
                });
            }
            Some(next) => from = Some(next),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_paging_stays_within_the_first_thousand_results() {
        // (page just read, page size) -> may the next page be asked for?
        for (page, size, ok) in [
            (0, 100, true),
            (8, 100, true),
            (9, 100, false),
            (32, 30, false),
            (31, 30, true),
            (0, 1000, false),
        ] {
            assert_eq!(
                next_page_in_window(page, size),
                ok,
                "page {page} size {size}"
            );
        }
    }
}
