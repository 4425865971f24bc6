//! Effective access (issue 18): project policies and role reads, their cost, and the paths
//! `explain` shows, on the demo world (which holds `group:billing-devs@acme.com` as
//! `roles/run.developer` on the project acme-prod and on billing-api).

use super::support::*;
use crate::common::{demo_world, example_policies};
use runwarden::insight::access::{BoundOn, paths_of, paths_to};
use runwarden::live::{read_access, read_live};
use runwarden::model::ServiceId;

#[tokio::test]
async fn effective_access_reads_one_project_policy_per_project_and_one_role_per_distinct_role() {
    let desired = example_policies();
    let setup = start(demo_world(), &desired.settings, &test_client_config()).await;
    let live = read_live(&desired, &setup.clients, &quick_retries()).await.unwrap();
    let before = count(&setup.sim, |_, p| p.starts_with("/v1/roles/") || p.starts_with("/v1/projects/") && p.contains("/roles/"));
    assert_eq!(before, 0, "the ordinary read reads no IAM role");
    let facts = read_access(&setup.clients.google, &live).await;

    let projects: std::collections::BTreeSet<&str> =
        live.services.keys().map(|id| id.project.as_str()).collect();
    for p in &projects {
        let path = format!("/v3/projects/{p}:getIamPolicy");
        assert_eq!(count(&setup.sim, |m, q| m == "POST" && q == path), 1, "{path}");
        assert!(facts.projects[*p].is_ok(), "{p}: {:?}", facts.projects[*p]);
    }
    let mut roles = std::collections::BTreeSet::new();
    for p in facts.projects.values().flatten().chain(facts.ancestors.values().flatten()) {
        roles.extend(p.bindings.iter().map(|b| b.role.clone()));
    }
    for s in live.services.values() {
        roles.extend(s.iam.iter().flat_map(|p| &p.bindings).map(|b| b.role.clone()));
    }
    for role in &roles {
        let path = format!("/v1/{role}");
        assert_eq!(count(&setup.sim, |m, q| m == "GET" && q == path), 1, "{path}");
    }
    assert_eq!(count(&setup.sim, |_, p| p.starts_with("/v1/roles/")), roles.len());
    assert_eq!(facts.invoking["roles/run.developer"], Ok(true));
    assert_eq!(facts.invoking["roles/run.invoker"], Ok(true));
    assert_eq!(facts.invoking["roles/viewer"], Ok(false));
}

#[tokio::test]
async fn explain_paths_show_a_project_level_developer_group_on_every_service_of_the_project() {
    let desired = example_policies();
    let setup = start(demo_world(), &desired.settings, &test_client_config()).await;
    let live = read_live(&desired, &setup.clients, &quick_retries()).await.unwrap();
    let facts = read_access(&setup.clients.google, &live).await;
    let billing = ServiceId::new("acme-prod", "europe-west1", "billing-api");
    let paths = paths_to(&billing, &live, &facts);
    let devs: Vec<_> = paths.iter().filter(|p| p.member == "group:billing-devs@acme.com").collect();
    assert!(devs.iter().all(|p| p.role == "roles/run.developer" && p.group && p.unverified.is_none()));
    let on: Vec<&BoundOn> = devs.iter().map(|p| &p.bound_on).collect();
    assert!(on.contains(&&BoundOn::Project("acme-prod".into())), "{paths:?}");
    assert!(on.contains(&&BoundOn::Service(billing.to_string())), "{paths:?}");
    // roles/run.invoker on the service itself is explained above the paths, not among them (the
    // one here is inherited from the demo world's folder).
    let on_service = |p: &&runwarden::insight::access::AccessPath| matches!(p.bound_on, BoundOn::Service(_));
    assert!(!paths.iter().any(|p| p.role == "roles/viewer" || p.role == "roles/run.invoker" && on_service(&p)), "{paths:?}");
    // A member query finds the inherited path on every acme-prod service read, none elsewhere.
    let of = paths_of("group:billing-devs@acme.com", &live, &facts);
    for id in live.services.keys() {
        let inherited = of.iter().any(|p| p.service == id.to_string() && matches!(p.bound_on, BoundOn::Project(_)));
        assert_eq!(inherited, id.project == "acme-prod", "{id}");
    }
}

#[tokio::test]
async fn an_unreadable_project_policy_or_role_is_reported_and_never_fails_the_pass() {
    let desired = example_policies();
    let yaml = std::fs::read_to_string(crate::common::demo_world_path()).unwrap().replace(
        "        - role: roles/viewer\n          members: [group:auditors@acme.com]\n",
        "        - role: projects/acme-prod/roles/invokerLike\n          members: [group:auditors@acme.com]\n",
    );
    assert!(yaml.contains("invokerLike"), "the demo world's project binding moved");
    let setup = start(world(&yaml), &desired.settings, &test_client_config()).await;
    let mut live = read_live(&desired, &setup.clients, &quick_retries()).await.unwrap();
    // A service of a project the credential may not read (the simulator answers 403).
    let ghost = ServiceId::new("acme-ghost", "europe-west1", "x");
    let mut s = live.services.values().next().unwrap().clone();
    s.id = ghost.clone();
    live.services.insert(ghost.clone(), s);
    let facts = read_access(&setup.clients.google, &live).await;
    let denied = facts.projects["acme-ghost"].as_ref().unwrap_err();
    assert!(denied.contains("403") || denied.contains("PERMISSION_DENIED"), "{denied}");
    let custom = facts.invoking["projects/acme-prod/roles/invokerLike"].as_ref().unwrap_err();
    assert!(custom.contains("404") || custom.contains("NOT_FOUND"), "{custom}");
    // The custom role's path is listed, flagged as not verified, rather than dropped.
    let billing = ServiceId::new("acme-prod", "europe-west1", "billing-api");
    let paths = paths_to(&billing, &live, &facts);
    let auditors = paths.iter().find(|p| p.member == "group:auditors@acme.com").expect("listed");
    assert!(auditors.unverified.is_some());
    let text = runwarden::insight::access::render_text(&paths_to(&ghost, &live, &facts), &facts);
    assert!(text.contains("project acme-ghost: policy not read"), "{text}");
}

#[tokio::test]
async fn drift_attribution_reads_one_audit_query_per_drifted_service_and_names_who_added_it() {
    let desired = example_policies();
    let setup = start(demo_world(), &desired.settings, &test_client_config()).await;
    let live = read_live(&desired, &setup.clients, &quick_retries()).await.unwrap();
    let drifted = runwarden::insight::access::drifted_members(&desired, &live, std::time::SystemTime::now());
    let billing = ServiceId::new("acme-prod", "europe-west1", "billing-api");
    assert!(drifted[&billing].contains(&("roles/run.invoker".into(), "user:contractor@partner.example".into())));
    let found = runwarden::live::read_attribution(&setup.clients.google, &drifted).await;
    assert_eq!(count(&setup.sim, |m, p| m == "POST" && p == "/v2/entries:list"), drifted.len());
    let key = |m: &str| (billing.clone(), "roles/run.invoker".to_string(), m.to_string());
    let contractor = found[&key("user:contractor@partner.example")].as_ref().unwrap();
    assert_eq!((contractor.by.as_str(), contractor.via.as_str()), ("ops-oncall@acme.com", "console"));
    assert_eq!(
        runwarden::insight::access::attribution_suffix(&found[&key("user:contractor@partner.example")]),
        "— added by ops-oncall@acme.com (console) 2026-11-29 14:02 UTC"
    );
    // From the world's history, made with gcloud.
    let worker = ServiceId::new("acme-prod", "europe-west1", "billing-worker");
    let public = found[&(worker, "roles/run.invoker".into(), "allUsers".into())].as_ref().unwrap();
    assert_eq!((public.by.as_str(), public.via.as_str()), ("dev-intern@acme.com", "gcloud"));
    // break-glass has no entry: unknown, with why.
    let glass = found[&key("user:break-glass@acme.com")].as_ref().unwrap_err();
    assert!(glass.contains("no SetIamPolicy audit entry"), "{glass}");
}

#[tokio::test]
async fn a_member_added_in_the_console_after_the_start_is_attributed_to_that_change() {
    let desired = example_policies();
    let setup = start(demo_world(), &desired.settings, &test_client_config()).await;
    let billing = ServiceId::new("acme-prod", "europe-west1", "billing-api");
    let mut policy = setup.sim.handle.iam_policy(&billing).unwrap();
    let added = runwarden::iam::Member::parse("user:late@acme.com").unwrap();
    policy.bindings.iter_mut().find(|b| b.role == "roles/run.invoker").unwrap().members.insert(added);
    setup.sim.handle.set_iam_policy_direct(&billing, policy).unwrap();
    let live = read_live(&desired, &setup.clients, &quick_retries()).await.unwrap();
    let drifted = runwarden::insight::access::drifted_members(&desired, &live, std::time::SystemTime::now());
    let found = runwarden::live::read_attribution(&setup.clients.google, &drifted).await;
    let late = found[&(billing, "roles/run.invoker".into(), "user:late@acme.com".into())].as_ref().unwrap();
    assert_eq!((late.by.as_str(), late.via.as_str()), ("console-user@sim.example", "console"));
    assert!(late.at.starts_with("20"), "{}", late.at);
}

#[tokio::test]
async fn attribution_makes_at_most_fifty_audit_queries_and_says_why_for_the_rest() {
    let desired = example_policies();
    let setup = start(demo_world(), &desired.settings, &test_client_config()).await;
    let drifted: std::collections::BTreeMap<ServiceId, Vec<(String, String)>> = (0..51)
        .map(|i| {
            let id = ServiceId::new("acme-prod", "europe-west1", &format!("svc-{i:03}"));
            (id, vec![("roles/run.invoker".to_string(), "user:x@acme.com".to_string())])
        })
        .collect();
    let found = runwarden::live::read_attribution(&setup.clients.google, &drifted).await;
    assert_eq!(count(&setup.sim, |m, p| m == "POST" && p == "/v2/entries:list"), runwarden::live::MAX_QUERIES);
    let last = ServiceId::new("acme-prod", "europe-west1", "svc-050");
    let why = found[&(last, "roles/run.invoker".into(), "user:x@acme.com".into())].as_ref().unwrap_err();
    assert!(why.contains("more than 50 drifted services"), "{why}");
}

/// The demo world's hierarchy: acme-prod in folder 200000000001 ("production", which grants
/// `group:oncall@acme.com` Cloud Run Invoker), under organization 100000000001, which also
/// holds acme-staging directly.
const FOLDER: &str = "folders/200000000001";
const ORG: &str = "organizations/100000000001";

#[tokio::test]
async fn each_folder_and_organization_is_read_once_however_many_projects_share_it() {
    let desired = example_policies();
    let setup = start(demo_world(), &desired.settings, &test_client_config()).await;
    let live = read_live(&desired, &setup.clients, &quick_retries()).await.unwrap();
    let projects: std::collections::BTreeSet<&str> = live.services.keys().map(|id| id.project.as_str()).collect();
    assert!(projects.contains("acme-prod") && projects.contains("acme-staging"), "{projects:?}");
    let gets = |p: &str| count(&setup.sim, |m, q| m == "GET" && q == format!("/v3/projects/{p}"));
    // The reader read the projects' numbers (IAP, the IAP agent); their parents came with them.
    assert_eq!(gets("acme-prod"), 1, "the reader read acme-prod's number");
    let facts = read_access(&setup.clients.google, &live).await;
    for p in &projects {
        assert_eq!(gets(p), 1, "one projects.get per project over the whole pass: {p}");
    }
    assert_eq!(count(&setup.sim, |m, q| m == "GET" && q == "/v3/folders/200000000001"), 1);
    assert_eq!(count(&setup.sim, |m, q| m == "POST" && q == "/v3/folders/200000000001:getIamPolicy"), 1);
    assert_eq!(count(&setup.sim, |m, q| m == "POST" && q == "/v3/organizations/100000000001:getIamPolicy"), 1);
    assert_eq!(count(&setup.sim, |_, q| q.starts_with("/v3/organizations/") && !q.ends_with(":getIamPolicy")), 0);
    assert_eq!(facts.ancestry["acme-prod"].chain, vec![FOLDER.to_string(), ORG.to_string()]);
    assert_eq!(facts.ancestry["acme-staging"].chain, vec![ORG.to_string()]);
    assert!(facts.ancestors[FOLDER].is_ok() && facts.ancestors[ORG].is_ok(), "{:?}", facts.ancestors);
    // The roles bound up there are read like the others: once each.
    assert_eq!(facts.invoking["roles/run.viewer"], Ok(false));
    assert_eq!(count(&setup.sim, |m, q| m == "GET" && q == "/v1/roles/run.viewer"), 1);
}

#[tokio::test]
async fn explain_paths_show_a_folder_level_invoker_group_on_every_service_below_the_folder() {
    let desired = example_policies();
    let setup = start(demo_world(), &desired.settings, &test_client_config()).await;
    let live = read_live(&desired, &setup.clients, &quick_retries()).await.unwrap();
    let facts = read_access(&setup.clients.google, &live).await;
    let of = paths_of("group:oncall@acme.com", &live, &facts);
    for id in live.services.keys() {
        let here: Vec<_> = of.iter().filter(|p| p.service == id.to_string()).collect();
        if id.project == "acme-prod" {
            assert_eq!(here.len(), 1, "{id}: {of:?}");
            assert_eq!(here[0].bound_on, BoundOn::Folder(FOLDER.into()));
            assert!(here[0].group && here[0].role == "roles/run.invoker");
        } else {
            assert!(here.is_empty(), "{id} is not below the folder: {of:?}");
        }
    }
    let billing = ServiceId::new("acme-prod", "europe-west1", "billing-api");
    let text = runwarden::insight::access::render_text(&paths_to(&billing, &live, &facts), &facts);
    assert!(text.contains("group:oncall@acme.com  roles/run.invoker  on folder 200000000001 (inherited)  (Google group"), "{text}");
    // The organization's binding (Cloud Run Viewer) carries no run.routes.invoke: no path.
    assert!(!text.contains("security@acme.com"), "{text}");
}

#[tokio::test]
async fn an_unreadable_organization_policy_is_said_for_that_level_and_the_folder_still_counts() {
    let desired = example_policies();
    let yaml = std::fs::read_to_string(crate::common::demo_world_path()).unwrap().replacen(
        "\nsimulator:\n",
        "\nsimulator:\n  missingPermissions: [resourcemanager.organizations.getIamPolicy]\n",
        1,
    );
    assert!(yaml.contains("missingPermissions"), "the demo world has no simulator section");
    let setup = start(world(&yaml), &desired.settings, &test_client_config()).await;
    let live = read_live(&desired, &setup.clients, &quick_retries()).await.unwrap();
    let facts = read_access(&setup.clients.google, &live).await;
    let denied = facts.ancestors[ORG].as_ref().unwrap_err();
    assert!(denied.contains("resourcemanager.organizations.getIamPolicy"), "{denied}");
    assert!(facts.ancestors[FOLDER].is_ok());
    let billing = ServiceId::new("acme-prod", "europe-west1", "billing-api");
    let paths = paths_to(&billing, &live, &facts);
    assert!(paths.iter().any(|p| p.bound_on == BoundOn::Folder(FOLDER.into())), "{paths:?}");
    let text = runwarden::insight::access::render_text(&paths, &facts);
    assert_eq!(text.matches("organization 100000000001: not readable: ").count(), 1, "{text}");
    let findings = runwarden::insight::access::bypass_findings(&desired, &live, &facts, std::time::SystemTime::now());
    let unchecked: Vec<_> = findings.iter().filter(|f| f.code == "access-unchecked").collect();
    assert_eq!(unchecked.len(), 1, "{findings:?}");
    assert!(unchecked[0].evidence.starts_with("organization 100000000001: not readable: "), "{}", unchecked[0].evidence);
}

#[tokio::test]
async fn a_folder_whose_parent_cannot_be_read_stops_the_walk_there_and_says_so() {
    let desired = example_policies();
    let yaml = std::fs::read_to_string(crate::common::demo_world_path())
        .unwrap()
        .replace("    parent: organizations/100000000001\n    iam:\n      bindings:\n        - role: roles/run.invoker", "    parent: folders/999\n    iam:\n      bindings:\n        - role: roles/run.invoker");
    assert!(yaml.contains("parent: folders/999"), "the demo world's folder moved");
    let setup = start(world(&yaml), &desired.settings, &test_client_config()).await;
    let live = read_live(&desired, &setup.clients, &quick_retries()).await.unwrap();
    let facts = read_access(&setup.clients.google, &live).await;
    let prod = &facts.ancestry["acme-prod"];
    assert_eq!(prod.chain, vec![FOLDER.to_string(), "folders/999".to_string()]);
    let denied = facts.ancestors["folders/999"].as_ref().unwrap_err();
    assert!(denied.contains("resourcemanager.folders.getIamPolicy"), "{denied}");
    let stop = prod.unknown.as_deref().expect("the walk stopped");
    assert!(stop.starts_with("folder 999: parent not readable: ") && stop.contains("resourcemanager.folders.get"), "{stop}");
    let levels = runwarden::insight::access::unread_levels(&facts);
    assert!(levels.iter().any(|l| l.starts_with("folder 999: not readable: ")), "{levels:?}");
    // The readable folder below still gives its path.
    let billing = ServiceId::new("acme-prod", "europe-west1", "billing-api");
    assert!(paths_to(&billing, &live, &facts).iter().any(|p| p.member == "group:oncall@acme.com"));
}

/// Issue 18: a setting changed in the console after the start (a direct edit of the simulated
/// service, logged as a Cloud Run v2 UpdateService entry) is attributed to that change; the
/// world's settingsHistory attributes payments-api's open ingress; a setting nobody logged is
/// unknown, with why. One entries.list per service.
#[tokio::test]
async fn a_drifted_setting_is_attributed_to_the_update_that_set_its_live_value() {
    let desired = example_policies();
    let setup = start(demo_world(), &desired.settings, &test_client_config()).await;
    let billing = ServiceId::new("acme-prod", "europe-west1", "billing-api");
    let patch = runwarden::sim::ServicePatch { invoker_iam_disabled: Some(true), ..Default::default() };
    assert!(setup.sim.handle.update_service(&billing, &patch));
    let payments = ServiceId::new("acme-prod", "europe-west1", "payments-api");
    let mut drifted = std::collections::BTreeMap::new();
    drifted.insert(billing.clone(), vec![("invokerIamDisabled".to_string(), serde_json::json!(true))]);
    drifted.insert(
        payments.clone(),
        vec![
            ("ingress".to_string(), serde_json::json!("INGRESS_TRAFFIC_ALL")),
            ("customAudiences".to_string(), serde_json::json!([])),
        ],
    );
    setup.sim.handle.clear_log();
    let found = runwarden::live::read_setting_attribution(&setup.clients.google, &drifted, 50).await;
    assert_eq!(count(&setup.sim, |m, p| m == "POST" && p == "/v2/entries:list"), 2);
    let check = found[&(billing.clone(), "invokerIamDisabled".into())].as_ref().unwrap();
    assert_eq!((check.by.as_str(), check.via.as_str()), ("console-user@sim.example", "console"));
    let ingress = &found[&(payments.clone(), "ingress".into())];
    assert_eq!(
        runwarden::insight::access::setting_suffix(ingress),
        "— changed by dev-lead@acme.com (console) 2026-11-28 16:45 UTC"
    );
    let audiences = found[&(payments.clone(), "customAudiences".into())].as_ref().unwrap_err();
    assert!(audiences.contains("no Cloud Run v2 UpdateService audit entry sets the live value"), "{audiences}");
    // A value the newest entry did not set is not pinned on it: the ingress entry set ALL, so a
    // live INTERNAL_ONLY is unknown.
    drifted.insert(payments.clone(), vec![("ingress".to_string(), serde_json::json!("INGRESS_TRAFFIC_INTERNAL_ONLY"))]);
    let found = runwarden::live::read_setting_attribution(&setup.clients.google, &drifted, 50).await;
    assert!(found[&(payments.clone(), "ingress".into())].is_err());
    // Past the budget, no query is made and why is said.
    setup.sim.handle.clear_log();
    let found = runwarden::live::read_setting_attribution(&setup.clients.google, &drifted, 0).await;
    assert_eq!(count(&setup.sim, |m, p| m == "POST" && p == "/v2/entries:list"), 0);
    let why = found[&(billing, "invokerIamDisabled".into())].as_ref().unwrap_err();
    assert!(why.contains("within the Logging read quota"), "{why}");
}

/// Issue 18: runwarden's own services.patch is logged too, as its service account through the API.
#[tokio::test]
async fn a_services_patch_is_logged_as_an_update_service_entry_of_the_caller() {
    let desired = example_policies();
    let setup = start(demo_world(), &desired.settings, &test_client_config()).await;
    let status = ServiceId::new("acme-prod", "us-central1", "status-page");
    let svc = setup.clients.google.get_service(&status).await.unwrap();
    let update = runwarden::google::ServiceUpdate {
        fields: vec![("ingress".into(), serde_json::json!("INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"))],
        etag: svc.etag.clone(),
    };
    setup.clients.google.patch_service(&status, &update).await.expect("patched");
    let set = setup.clients.google.list_setting_changes(&status, 20).await.unwrap();
    let newest = set.iter().find(|s| s.field == "ingress").expect("logged");
    assert_eq!(newest.value, "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER");
    assert_eq!((newest.attribution.by.as_str(), newest.attribution.via.as_str()), (setup.sim.handle.service_account().as_str(), "api"));
}

/// A hierarchy answered in a loop (a folder its own parent) stops the walk with why, instead
/// of reading forever; each folder is still read once.
#[tokio::test]
async fn a_folder_hierarchy_that_loops_stops_the_walk_and_says_so() {
    let desired = example_policies();
    let yaml = std::fs::read_to_string(crate::common::demo_world_path())
        .unwrap()
        .replace("    parent: organizations/100000000001\n    iam:\n      bindings:\n        - role: roles/run.invoker", "    parent: folders/200000000001\n    iam:\n      bindings:\n        - role: roles/run.invoker");
    assert!(yaml.contains("parent: folders/200000000001\n    iam:"), "the demo world's folder moved");
    let setup = start(world(&yaml), &desired.settings, &test_client_config()).await;
    let live = read_live(&desired, &setup.clients, &quick_retries()).await.unwrap();
    let facts = read_access(&setup.clients.google, &live).await;
    let prod = &facts.ancestry["acme-prod"];
    assert_eq!(prod.chain, vec![FOLDER.to_string()]);
    assert!(prod.unknown.as_deref().unwrap_or("").contains("loops"), "{prod:?}");
    assert_eq!(count(&setup.sim, |m, q| m == "GET" && q == "/v3/folders/200000000001"), 1);
}

/// The drifted IAP setting of `acme-prod/europe-west1/admin-console` (live `false`), attributed
/// from `yaml`'s world; the number of `entries.list` calls made.
async fn admin_console_iap_attribution(yaml: &str) -> (Result<runwarden::model::Attribution, String>, usize) {
    let desired = example_policies();
    let setup = start(world(yaml), &desired.settings, &test_client_config()).await;
    let console = ServiceId::new("acme-prod", "europe-west1", "admin-console");
    let drifted = std::collections::BTreeMap::from([(console.clone(), vec![("iapEnabled".to_string(), serde_json::json!(false))])]);
    setup.sim.handle.clear_log();
    let found = runwarden::live::read_setting_attribution(&setup.clients.google, &drifted, 50).await;
    let calls = count(&setup.sim, |m, p| m == "POST" && p == "/v2/entries:list");
    (found[&(console, "iapEnabled".into())].clone(), calls)
}

/// Issue 18: `gcloud run services update --no-iap` is a Cloud Run v1 ReplaceService, logged on
/// `namespaces/P/services/S`; the demo world's admin-console had IAP turned off that way by
/// ops-oncall, then CI redeployed carrying the same value: the human is named, in one query.
#[tokio::test]
async fn a_v1_replace_service_change_is_attributed_and_a_later_redeploy_carrying_it_does_not_steal_the_blame() {
    let yaml = std::fs::read_to_string(crate::common::demo_world_path()).unwrap();
    let (found, calls) = admin_console_iap_attribution(&yaml).await;
    let who = found.expect("attributed");
    assert_eq!((who.by.as_str(), who.via.as_str(), who.at.as_str()), ("ops-oncall@acme.com", "gcloud", "2026-11-20T09:12:00Z"));
    assert_eq!(calls, 1);
}

/// A same-named service in another region has its own v1 entries (the resource name
/// `namespaces/P/services/S` has no region): a newer one turning IAP on there is not read as
/// this service's history.
#[tokio::test]
async fn a_v1_change_of_a_same_named_service_in_another_region_is_not_confused() {
    let demo = std::fs::read_to_string(crate::common::demo_world_path()).unwrap();
    let twin = "  - project: acme-prod\n    region: us-central1\n    name: admin-console\n    ingress: INGRESS_TRAFFIC_ALL\n    iapEnabled: true\n";
    let entry = "  - {service: acme-prod/us-central1/admin-console, field: iapEnabled, value: true,\n     by: elsewhere@acme.com, at: \"2026-11-25T07:00:00Z\", via: gcloud, api: v1}\n";
    let yaml = demo
        .replacen("  # Drift: IAP is off", &format!("{twin}  # Drift: IAP is off"), 1)
        .replacen("settingsHistory:\n", &format!("settingsHistory:\n{entry}"), 1);
    assert!(yaml.contains(twin) && yaml.contains(entry), "the demo world moved");
    let (found, _) = admin_console_iap_attribution(&yaml).await;
    assert_eq!(found.expect("attributed").by, "ops-oncall@acme.com");
}

/// When every v1 entry read carries the live value, the change is older than the log: unknown,
/// with the oldest time seen, rather than the latest deployer.
#[tokio::test]
async fn v1_entries_that_all_carry_the_live_value_leave_the_setter_unknown_and_say_why() {
    let demo = std::fs::read_to_string(crate::common::demo_world_path()).unwrap();
    let first = "  - {service: acme-prod/europe-west1/admin-console, field: iapEnabled, value: true,\n     by: ci-deployer@acme-prod.iam.gserviceaccount.com, at: \"2026-10-01T07:00:00Z\", via: gcloud, api: v1}\n";
    assert!(demo.contains(first), "the demo world moved");
    let (found, _) = admin_console_iap_attribution(&demo.replacen(first, "", 1)).await;
    let why = found.expect_err("unknown");
    assert!(why.contains("unchanged since at least 2026-11-20T09:12:00Z") && why.contains("older than the log"), "{why}");
}
