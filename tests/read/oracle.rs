//! What the reader should have returned, computed another way: services and policies from the
//! simulator's own state (no HTTP), the Auth0 directory through offset paging and per-user
//! look-ups (the reader uses checkpoint paging and a bulk search).

use std::collections::{BTreeMap, BTreeSet};

use runwarden::live::{Directory, LiveService, Role, ServiceId, ServiceSettings, User};
use runwarden::policy::model::Ingress;
use runwarden::sim::SimHandle;
use serde_json::Value;

/// Every service the simulator holds, as the reader should see it: IAM for `governed`, IAP IAM
/// for `iap`.
pub fn services(
    h: &SimHandle,
    governed: &BTreeSet<ServiceId>,
    iap: &BTreeSet<ServiceId>,
) -> BTreeMap<ServiceId, LiveService> {
    h.service_ids()
        .into_iter()
        .map(|id| {
            let s = h.service(&id).unwrap();
            let live = LiveService {
                id: id.clone(),
                labels: s.labels.clone(),
                annotations: s.annotations.clone(),
                settings: ServiceSettings {
                    ingress: Ingress::from_api_value(s.ingress.as_str()),
                    invoker_iam_disabled: s.invoker_iam_disabled,
                    custom_audiences: s.custom_audiences.clone(),
                    iap_enabled: s.iap_enabled,
                },
                etag: s.etag.clone(),
                uri: Some(s.uri.clone()),
                iam: governed.contains(&id).then(|| h.iam_policy(&id).unwrap()),
                iap_iam: iap.contains(&id).then(|| h.iap_policy(&id).unwrap()),
                read_error: None,
            };
            (id, live)
        })
        .collect()
}

pub fn project_numbers(h: &SimHandle, projects: &[&str]) -> BTreeMap<String, u64> {
    projects
        .iter()
        .map(|p| (p.to_string(), h.project_number(p).unwrap()))
        .collect()
}

async fn token(base: &str, client: &(String, String), domain: &str) -> String {
    let body = serde_json::json!({
        "grant_type": "client_credentials",
        "client_id": client.0,
        "client_secret": client.1,
        "audience": format!("https://{domain}/api/v2/"),
    });
    let answer: Value = reqwest::Client::new()
        .post(format!("{base}/oauth/token"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["access_token"].as_str().unwrap().to_string()
}

/// Every item of an offset listing with totals.
async fn offset_all(base: &str, token: &str, path: &str, key: &str) -> Vec<Value> {
    let mut items = Vec::new();
    for page in 0.. {
        let answer: Value = reqwest::Client::new()
            .get(format!(
                "{base}{path}?per_page=100&page={page}&include_totals=true"
            ))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let batch = answer[key].as_array().unwrap().clone();
        let total = answer["total"].as_u64().unwrap() as usize;
        let done = batch.is_empty();
        items.extend(batch);
        if done || items.len() >= total {
            break;
        }
    }
    items
}

/// Role name → id.
pub async fn role_ids(
    base: &str,
    client: &(String, String),
    domain: &str,
) -> BTreeMap<String, String> {
    let token = token(base, client, domain).await;
    offset_all(base, &token, "/api/v2/roles", "roles")
        .await
        .into_iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["id"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn enc(s: &str) -> String {
    s.replace('|', "%7C")
}

/// The directory for `roles` (those that exist), members resolved when asked.
pub async fn directory(
    base: &str,
    client: &(String, String),
    domain: &str,
    roles: &[&str],
    resolve: bool,
) -> Directory {
    let token = token(base, client, domain).await;
    let ids = role_ids(base, client, domain).await;
    let mut out = BTreeMap::new();
    for name in roles {
        let Some(id) = ids.get(*name) else { continue };
        let mut members: BTreeMap<String, User> = BTreeMap::new();
        let mut empty_groups = Vec::new();
        if resolve {
            for u in offset_all(base, &token, &format!("/api/v2/roles/{id}/users"), "users").await {
                let user = entry(&mut members, &u);
                user.direct = true;
            }
            for g in offset_all(
                base,
                &token,
                &format!("/api/v2/roles/{id}/groups"),
                "groups",
            )
            .await
            {
                let gid = g["id"].as_str().unwrap();
                let gname = g["name"].as_str().unwrap().to_string();
                let group_members = offset_all(
                    base,
                    &token,
                    &format!("/api/v2/groups/{gid}/members"),
                    "members",
                )
                .await;
                if group_members.is_empty() {
                    empty_groups.push(gname.clone());
                }
                for u in group_members {
                    let user = entry(&mut members, &u);
                    user.via_groups.push(gname.clone());
                    user.via_groups.sort();
                }
            }
            for user in members.values_mut() {
                let answer: Value = reqwest::Client::new()
                    .get(format!("{base}/api/v2/users/{}", enc(&user.user_id)))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                user.email = answer["email"].as_str().map(String::from);
                user.email_verified = answer["email_verified"].as_bool().unwrap();
                user.blocked = answer["blocked"].as_bool().unwrap_or(false);
            }
        }
        out.insert(
            name.to_string(),
            Role {
                id: id.clone(),
                name: name.to_string(),
                members: members.into_values().collect(),
                empty_groups: {
                    empty_groups.sort();
                    empty_groups.dedup();
                    empty_groups
                },
            },
        );
    }
    Directory {
        roles: out,
        members_resolved: resolve,
    }
}

fn entry<'a>(members: &'a mut BTreeMap<String, User>, u: &Value) -> &'a mut User {
    // Role users carry `user_id`; group members (GroupMember) only `id`.
    let id = u["user_id"].as_str().or(u["id"].as_str()).unwrap().to_string();
    members.entry(id.clone()).or_insert_with(|| User {
        user_id: id,
        email: None,
        email_verified: false,
        blocked: false,
        via_groups: vec![],
        direct: false,
    })
}
