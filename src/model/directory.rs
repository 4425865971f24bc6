//! The Auth0 directory as far as policies need it: roles and their members, resolved once per
//! pass.

use std::collections::BTreeMap;

/// Auth0 roles and their members, resolved once per pass.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Directory {
    /// Role name → role. Only roles that exist in Auth0 appear; a policy naming a role that is
    /// absent here names an unknown role.
    pub roles: BTreeMap<String, Role>,
    /// Whether members were resolved (the `users` mapping needs them; `workforcePool` only
    /// needs the role list).
    pub members_resolved: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Role {
    pub id: String,
    pub name: String,
    /// Members: direct assignments and members of groups assigned to the role, deduplicated by
    /// user id, sorted by user id.
    pub members: Vec<User>,
    /// Groups assigned to the role whose member listing came back empty, by name, sorted. The
    /// plan records the bindings that lose members while such a group feeds them, and the
    /// directory guard refuses those removals (an emptied group looks exactly like leavers).
    pub empty_groups: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct User {
    pub user_id: String,
    /// As the user's own record (`GET /api/v2/users/{id}`) says; listings are not trusted for
    /// it (group member listings carry no e-mail at all).
    pub email: Option<String>,
    /// From the user's own record: true only when Auth0 positively says so.
    pub email_verified: bool,
    /// Blocked by an administrator or SCIM deprovisioning: never granted, and removed where
    /// runwarden owns the member (reason `blocked`).
    pub blocked: bool,
    /// How the user holds the role: directly, or through these groups (by name).
    pub via_groups: Vec<String>,
    pub direct: bool,
}
