//! Auth0 Management API JSON (see `reference/auth0/management-api-v2.openapi.yaml`) and the
//! conversions out of it. Nothing outside `identity` sees these structs.
//!
//! Listing endpoints answer in one of three shapes depending on the query: a bare array, an
//! offset page with totals (`include_totals=true`), or a checkpoint page (`from`/`take`) with
//! `next`. runwarden always asks for totals or checkpoints but accepts all three.

use serde::Deserialize;

/// `POST /oauth/token` answer.
#[derive(Debug, Deserialize)]
pub(super) struct TokenResponse {
    pub access_token: String,
    #[serde(default)]
    pub expires_in: Option<u64>,
}

/// Auth0's error body: `{statusCode, error, message, errorCode}`; the token endpoint uses
/// `{error, error_description}`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ErrorBody {
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default, rename = "error_description")]
    pub error_description: Option<String>,
    #[serde(default)]
    pub error_code: Option<String>,
}

/// A role (`get_organization_member_roles_200_response_oneOf_inner`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RoleRef {
    pub id: String,
    pub name: String,
}

/// A group assigned to a role.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GroupRef {
    pub id: String,
    #[serde(default)]
    pub name: String,
}

/// A user as role and group member listings carry it (`get_role_user_200_response_oneOf_inner`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MemberRef {
    #[serde(alias = "id")]
    pub user_id: String,
    #[serde(default)]
    pub email: Option<String>,
}

/// A group member (auth0-python `types/group_member.py`, `GroupMember {id, member_type, type,
/// connection_id, created_at}`): an id and no e-mail. `member_type` is `user` or `group` (a
/// nested group); an absent type is read as `user`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GroupMemberRef {
    pub id: String,
    #[serde(default)]
    pub member_type: Option<String>,
}

impl GroupMemberRef {
    /// Whether the member is a nested group rather than a user.
    pub fn is_group(&self) -> bool {
        self.member_type.as_deref() == Some("group")
    }
}

/// An organization (`GET /organizations`; auth0-python `Organization {id, name, display_name,
/// ...}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct OrganizationRef {
    pub id: String,
    #[serde(default)]
    pub name: String,
}

/// A user from `GET /users` or `GET /users/{id}` with the fields runwarden asks for. A missing
/// `email_verified` is not verified; a missing `blocked` is not blocked (Auth0 only carries it
/// on users that were blocked at some time; auth0-python `GetUserResponseContent.blocked`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct UserRef {
    pub user_id: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub email_verified: bool,
    #[serde(default)]
    pub blocked: bool,
}

/// `GET /roles` answer.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RolesAnswer {
    Page {
        roles: Vec<RoleRef>,
        #[serde(default)]
        total: Option<u64>,
    },
    Array(Vec<RoleRef>),
}

/// A checkpoint-paged answer: `{"<items>": [...], "next": "..."}`, or a bare array (no paging).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum CheckpointAnswer<T> {
    Page {
        #[serde(alias = "users", alias = "groups", alias = "members", alias = "organizations")]
        items: Vec<T>,
        #[serde(default)]
        next: Option<String>,
    },
    Array(Vec<T>),
}

impl<T> CheckpointAnswer<T> {
    /// Items and the checkpoint to continue from (`None` at the end).
    pub fn into_parts(self) -> (Vec<T>, Option<String>) {
        match self {
            CheckpointAnswer::Page { items, next } => (items, next.filter(|n| !n.is_empty())),
            CheckpointAnswer::Array(items) => (items, None),
        }
    }
}

/// `GET /users` answer.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum UsersAnswer {
    Page {
        users: Vec<UserRef>,
        #[serde(default)]
        total: Option<u64>,
    },
    Array(Vec<UserRef>),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<T: serde::de::DeserializeOwned>(json: &str) -> T {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn reads_role_pages_with_and_without_totals() {
        match parse::<RolesAnswer>(
            r#"{"start":0,"limit":100,"total":2,"roles":[{"id":"rol_1","name":"billing-admin","description":"d"}]}"#,
        ) {
            RolesAnswer::Page { roles, total } => {
                assert_eq!(
                    roles,
                    vec![RoleRef {
                        id: "rol_1".into(),
                        name: "billing-admin".into()
                    }]
                );
                assert_eq!(total, Some(2));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(parse::<RolesAnswer>(r#"[{"id":"a","name":"b"}]"#), RolesAnswer::Array(v) if v.len() == 1)
        );
    }

    #[test]
    fn checkpoint_pages_end_when_next_is_absent_or_empty() {
        let page: CheckpointAnswer<MemberRef> = parse(
            r#"{"next":"MjAyMQ","users":[{"user_id":"auth0|1","email":"ada@acme.com","name":"Ada","picture":"p"}]}"#,
        );
        let (items, next) = page.into_parts();
        assert_eq!(items[0].email.as_deref(), Some("ada@acme.com"));
        assert_eq!(next.as_deref(), Some("MjAyMQ"));
        let last: CheckpointAnswer<MemberRef> = parse(r#"{"users":[]}"#);
        assert_eq!(last.into_parts().1, None);
        let empty_next: CheckpointAnswer<MemberRef> = parse(r#"{"users":[],"next":""}"#);
        assert_eq!(empty_next.into_parts().1, None);
    }

    #[test]
    fn group_listings_accept_groups_and_members_keys() {
        let groups: CheckpointAnswer<GroupRef> =
            parse(r#"{"groups":[{"id":"grp_1","name":"billing-team"}],"next":"x"}"#);
        assert_eq!(groups.into_parts().0[0].name, "billing-team");
        let members: CheckpointAnswer<GroupMemberRef> = parse(
            r#"{"members":[{"id":"auth0|9","member_type":"user","type":"connection","connection_id":"con_1","created_at":"2025-01-01T00:00:00.000Z"},{"id":"grp_2","member_type":"group"}]}"#,
        );
        let items = members.into_parts().0;
        assert_eq!(items[0].id, "auth0|9");
        assert!(!items[0].is_group());
        assert!(items[1].is_group());
    }

    #[test]
    fn reads_user_search_pages_and_auth0_error_bodies() {
        match parse::<UsersAnswer>(
            r#"{"start":0,"limit":100,"length":1,"total":1,"users":[{"user_id":"auth0|k","email":"ken@acme.com","email_verified":false}]}"#,
        ) {
            UsersAnswer::Page { users, total } => {
                assert!(!users[0].email_verified);
                assert_eq!(total, Some(1));
            }
            other => panic!("{other:?}"),
        }
        let e: ErrorBody = parse(
            r#"{"statusCode":429,"error":"Too Many Requests","message":"Global limit has been reached","errorCode":"too_many_requests"}"#,
        );
        assert_eq!(e.error_code.as_deref(), Some("too_many_requests"));
        let t: ErrorBody = parse(r#"{"error":"access_denied","error_description":"Unauthorized"}"#);
        assert_eq!(t.error_description.as_deref(), Some("Unauthorized"));
    }
}
