//! The plan engine, guards and renderers, specified rule by rule.
//!
//! Every rule is a case through one helper, `check(desired, live, expected)`, where `expected` is
//! the compact rendering of `tests/plan/builders.rs::compact` (one line per change, `=` for a
//! kept member, `!` for findings). Golden files for the three formats on the demo estate live in
//! `tests/golden/` (`RUNWARDEN_BLESS=1 cargo test --test integration plan::` rewrites them).

mod builders;
mod demo;
mod props;

use builders::*;
use crate::common::{assert_golden, root};
use runwarden::iam::{IAP_ACCESSOR, RUN_INVOKER};
use runwarden::live::LiveState;
use runwarden::plan::{
    self, Action, GuardKind, Origin, Plan, PlanMode, PlanOptions, Reason, check_guards, render_markdown, render_text,
};
use runwarden::policy::model::{Desired, ForeignMembers, Ingress, Mode, PrincipalMapping};

fn check(desired: &Desired, live: &LiveState, expected: &str) {
    check_with(desired, live, &PlanOptions::at(now()), expected);
}

fn check_with(desired: &Desired, live: &LiveState, opts: &PlanOptions<'_>, expected: &str) {
    let plan = plan::plan(desired, live, opts);
    let got = compact(&plan);
    let want = dedent(expected);
    assert_eq!(got, want, "\n--- got ---\n{got}--- want ---\n{want}");
    // Every plan is deterministic and survives the saved-plan round trip.
    assert_eq!(plan::plan(desired, live, opts), plan);
    assert_eq!(Plan::from_json(&plan.to_json()).unwrap(), plan);
}

const API: &str = "acme-prod/europe-west1/api";

fn billing() -> P {
    policy("billing").service(API)
}

// ---------------------------------------------------------------------------------------------
// Principal mapping

#[test]
fn a_role_grants_its_verified_members_in_allowed_domains_and_reports_the_others() {
    let d = desired(settings(), vec![billing().role("billing-admin")]);
    let live = world()
        .svc(API, &[])
        .role(
            "billing-admin",
            &[
                ("auth0|ada", "Ada@acme.com", true),
                ("auth0|ken", "ken@acme.com", false),
                ("auth0|bob", "bob@partner.example", true),
                ("auth0|nomail", "", true),
            ],
        )
        .build();
    check(
        &d,
        &live,
        "
        acme-prod/europe-west1/api
          iam + run.invoker user:ada@acme.com missing
        ! warning skipped-member
        ! warning skipped-member
        ! warning skipped-member
        ",
    );
    let plan = plan::plan(&d, &live, &PlanOptions::at(now()));
    let messages: Vec<&str> = plan.findings.iter().map(|f| f.evidence.as_str()).collect();
    for (user, why) in [
        ("auth0|ken", "not verified"),
        ("auth0|bob", "outside the allowed domains"),
        ("auth0|nomail", "no e-mail"),
    ] {
        assert!(
            messages
                .iter()
                .any(|msg| msg.contains(user) && msg.contains(why)),
            "no finding names {user} ({why}): {messages:#?}"
        );
    }
}

#[test]
fn a_workforce_pool_maps_a_role_to_one_principal_set_and_warns_without_iap() {
    let mut s = settings();
    s.principals = PrincipalMapping::WorkforcePool {
        pool: "auth0-acme".into(),
    };
    let d = desired(s, vec![billing().role("billing-admin")]);
    // Members are not needed for the pool mapping, only the role's existence.
    let mut live = world().svc(API, &[]).role("billing-admin", &[]).build();
    live.directory.members_resolved = false;
    check(
        &d,
        &live,
        "
        acme-prod/europe-west1/api
          iam + run.invoker principalSet://iam.googleapis.com/locations/global/workforcePools/auth0-acme/group/billing-admin missing
        ! warning workforce-without-iap acme-prod/europe-west1/api
        ",
    );
}

#[test]
fn with_a_workforce_pool_its_principals_are_owned_and_other_pools_are_foreign() {
    let mut s = settings();
    s.principals = PrincipalMapping::WorkforcePool {
        pool: "auth0-acme".into(),
    };
    let d = desired(
        s,
        vec![
            policy("console")
                .service(CONSOLE)
                .iap(true)
                .role("platform-admin"),
        ],
    );
    let pool = "principalSet://iam.googleapis.com/locations/global/workforcePools";
    let live = world()
        .svc(CONSOLE, &[])
        .with(CONSOLE, |s| s.settings.iap_enabled = true)
        .bind(CONSOLE, RUN_INVOKER, &[IAP_AGENT])
        .iap_bind(
            CONSOLE,
            IAP_ACCESSOR,
            &[
                &format!("{pool}/auth0-acme/group/platform-admin"),
                &format!("{pool}/auth0-acme/group/old-role"),
                &format!("{pool}/other-pool/group/platform-admin"),
                // With the pool mapping, users of the e-mail domain are not owned.
                "user:ada@acme.com",
            ],
        )
        .role("platform-admin", &[])
        .build();
    check(
        &d,
        &live,
        &format!(
            "
            acme-prod/europe-west1/admin-console
              iap - iap.httpsResourceAccessor {pool}/auth0-acme/group/old-role unlisted
              iap = iap.httpsResourceAccessor {pool}/other-pool/group/platform-admin foreign
              iap = iap.httpsResourceAccessor user:ada@acme.com foreign
            "
        ),
    );
}

#[test]
fn a_policy_granting_public_members_without_public_true_grants_nothing() {
    let d = desired(settings(), vec![billing().member("allUsers")]);
    let live = world().svc(API, &[]).build();
    check(
        &d,
        &live,
        "! error public-member-not-allowed acme-prod/europe-west1/api\n",
    );
}

#[test]
fn a_machine_becomes_its_service_account_and_literal_members_are_granted_as_written() {
    let d = desired(
        settings(),
        vec![
            billing()
                .machine("ledger-sync")
                .member("group:billing@acme.com")
                .machine("nobody"),
        ],
    );
    let live = world().svc(API, &[]).build();
    check(
        &d,
        &live,
        "
        acme-prod/europe-west1/api
          iam + run.invoker group:billing@acme.com missing
          iam + run.invoker serviceAccount:ledger-sync@acme-prod.iam.gserviceaccount.com missing
        ! error unknown-machine
        ",
    );
}

#[test]
fn an_unknown_role_is_a_finding_and_removes_nothing_it_might_have_granted() {
    let d = desired(
        settings(),
        vec![
            billing()
                .role("billing-admn")
                .member("serviceAccount:invoicer@acme-prod.iam.gserviceaccount.com"),
        ],
    );
    let live = world()
        .svc(API, &[])
        .bind(
            API,
            RUN_INVOKER,
            &[
                "user:ada@acme.com",
                "serviceAccount:old@acme-prod.iam.gserviceaccount.com",
            ],
        )
        .build();
    check(
        &d,
        &live,
        "
        acme-prod/europe-west1/api
          iam + run.invoker serviceAccount:invoicer@acme-prod.iam.gserviceaccount.com missing
          iam - run.invoker serviceAccount:old@acme-prod.iam.gserviceaccount.com unlisted
          iam = run.invoker user:ada@acme.com protected
        ! error unknown-role
        ",
    );
}

#[test]
fn unresolved_directory_members_are_an_error_and_fail_safe() {
    let d = desired(settings(), vec![billing().role("billing-admin")]);
    let mut live = world()
        .svc(API, &[])
        .bind(API, RUN_INVOKER, &["user:ada@acme.com"])
        .role("billing-admin", &[("auth0|ada", "ada@acme.com", true)])
        .build();
    live.directory.members_resolved = false;
    check(
        &d,
        &live,
        "
        acme-prod/europe-west1/api
          iam = run.invoker user:ada@acme.com protected
        ! error directory-unresolved
        ",
    );
}

#[test]
fn an_empty_role_is_a_finding_and_the_plan_records_the_mapped_members_it_would_wipe_out() {
    let d = desired(settings(), vec![billing().role("billing-admin")]);
    let live = world()
        .svc(API, &[])
        .bind(
            API,
            RUN_INVOKER,
            &[
                "user:ada@acme.com",
                "user:grace@acme.com",
                "user:contractor@partner.example",
            ],
        )
        .role("billing-admin", &[])
        .build();
    check(
        &d,
        &live,
        "
        acme-prod/europe-west1/api
          iam - run.invoker user:ada@acme.com unlisted
          iam = run.invoker user:contractor@partner.example foreign
          iam - run.invoker user:grace@acme.com unlisted
          iam ! emptied run.invoker by billing-admin
        ! warning empty-role
        ",
    );
}

#[test]
fn a_group_that_came_back_empty_is_recorded_on_every_binding_that_loses_mapped_members() {
    // billing-admin: ada directly, and group billing-team (grace, margaret) read empty. Judging
    // by the binding, grace and margaret held access: the plan records the loss (the guard
    // refuses it); the contractor is foreign and a binding that loses nothing is not recorded.
    let d = desired(settings(), vec![billing().role("billing-admin")]);
    let live = world()
        .svc(API, &[])
        .bind(
            API,
            RUN_INVOKER,
            &[
                "user:ada@acme.com",
                "user:grace@acme.com",
                "user:margaret@acme.com",
                "user:contractor@partner.example",
            ],
        )
        .role("billing-admin", &[("auth0|ada", "ada@acme.com", true)])
        .empty_group("billing-admin", "billing-team")
        .build();
    check(
        &d,
        &live,
        "
        acme-prod/europe-west1/api
          iam = run.invoker user:contractor@partner.example foreign
          iam - run.invoker user:grace@acme.com unlisted
          iam - run.invoker user:margaret@acme.com unlisted
          iam ! loses run.invoker by empty group billing-admin/billing-team
        ! warning empty-group
        ",
    );
    let in_sync = world()
        .svc(API, &[])
        .bind(API, RUN_INVOKER, &["user:ada@acme.com", "user:contractor@partner.example"])
        .role("billing-admin", &[("auth0|ada", "ada@acme.com", true)])
        .empty_group("billing-admin", "billing-team")
        .build();
    check(
        &d,
        &in_sync,
        "
        acme-prod/europe-west1/api
          iam = run.invoker user:contractor@partner.example foreign
        ! warning empty-group
        ",
    );
}

// ---------------------------------------------------------------------------------------------
// Ownership

#[test]
fn owned_members_no_policy_grants_are_removed_as_unlisted() {
    let d = desired(settings(), vec![billing().role("billing-admin")]);
    let live = world()
        .svc(API, &[])
        .bind(
            API,
            RUN_INVOKER,
            &[
                "user:ada@acme.com",
                "user:leaver@acme.com",
                "serviceAccount:old-job@acme-prod.iam.gserviceaccount.com",
            ],
        )
        .role("billing-admin", &[("auth0|ada", "ada@acme.com", true)])
        .build();
    check(
        &d,
        &live,
        "
        acme-prod/europe-west1/api
          iam - run.invoker serviceAccount:old-job@acme-prod.iam.gserviceaccount.com unlisted
          iam - run.invoker user:leaver@acme.com unlisted
        ",
    );
}

#[test]
fn a_member_some_policy_grants_elsewhere_is_owned_everywhere() {
    let d = desired(
        settings(),
        vec![
            billing().role("billing-admin"),
            policy("other")
                .service("acme-prod/europe-west1/other")
                .member("user:partner@partner.example"),
        ],
    );
    let live = world()
        .svc(API, &[])
        .svc("acme-prod/europe-west1/other", &[])
        .bind(API, RUN_INVOKER, &["user:partner@partner.example"])
        .bind(
            "acme-prod/europe-west1/other",
            RUN_INVOKER,
            &["user:partner@partner.example"],
        )
        .role("billing-admin", &[("auth0|ada", "ada@acme.com", true)])
        .build();
    check(
        &d,
        &live,
        "
        acme-prod/europe-west1/api
          iam + run.invoker user:ada@acme.com missing
          iam - run.invoker user:partner@partner.example unlisted
        acme-prod/europe-west1/other
          record 1
        ",
    );
}

#[test]
fn foreign_members_are_kept_and_listed_by_default() {
    let d = desired(settings(), vec![billing().member("user:ada@acme.com")]);
    let live = world()
        .svc(API, &[])
        .bind(
            API,
            RUN_INVOKER,
            &[
                "user:ada@acme.com",
                "user:contractor@partner.example",
                "group:ops@partner.example",
            ],
        )
        .build();
    check(
        &d,
        &live,
        "
        acme-prod/europe-west1/api
          iam = run.invoker group:ops@partner.example foreign
          iam = run.invoker user:contractor@partner.example foreign
        ",
    );
    let plan = plan::plan(&d, &live, &PlanOptions::at(now()));
    assert!(!plan.has_changes(), "kept foreign members are not changes");
    assert_eq!(plan.summary.foreign_kept, 2);
}

#[test]
fn foreign_members_are_removed_when_settings_say_remove() {
    let mut s = settings();
    s.foreign_members = ForeignMembers::Remove;
    let d = desired(s, vec![billing().member("user:ada@acme.com")]);
    let live = world()
        .svc(API, &[])
        .bind(
            API,
            RUN_INVOKER,
            &["user:ada@acme.com", "user:contractor@partner.example"],
        )
        .build();
    check(
        &d,
        &live,
        "
        acme-prod/europe-west1/api
          iam - run.invoker user:contractor@partner.example foreign
        ",
    );
}

#[test]
fn keep_members_are_never_removed_whatever_the_mode() {
    let mut s = settings();
    s.foreign_members = ForeignMembers::Remove;
    let d = desired(s, vec![billing().member("user:ada@acme.com")]);
    let live = world()
        .svc(API, &[])
        .bind(
            API,
            RUN_INVOKER,
            &[
                "user:ada@acme.com",
                "user:break-glass@acme.com",
                "serviceAccount:service-123456789012@gcp-sa-iap.iam.gserviceaccount.com",
            ],
        )
        .build();
    check(
        &d,
        &live,
        "
        acme-prod/europe-west1/api
          iam = run.invoker serviceAccount:service-123456789012@gcp-sa-iap.iam.gserviceaccount.com protected
          iam = run.invoker user:break-glass@acme.com protected
        ",
    );
}

#[test]
fn public_members_are_removed_where_public_is_false_and_added_where_true() {
    let d = desired(
        settings(),
        vec![
            billing().public(false),
            policy("status")
                .service("acme-prod/europe-west1/status")
                .public(true),
        ],
    );
    let live = world()
        .svc(API, &[])
        .svc("acme-prod/europe-west1/status", &[])
        .bind(API, RUN_INVOKER, &["allUsers", "allAuthenticatedUsers"])
        .build();
    check(
        &d,
        &live,
        "
        acme-prod/europe-west1/api
          iam - run.invoker allAuthenticatedUsers public
          iam - run.invoker allUsers public
        acme-prod/europe-west1/status
          iam + run.invoker allUsers missing
        ",
    );
}

#[test]
fn public_members_are_foreign_where_the_policy_does_not_manage_public() {
    let d = desired(settings(), vec![billing()]);
    let live = world()
        .svc(API, &[])
        .bind(API, RUN_INVOKER, &["allUsers"])
        .build();
    check(
        &d,
        &live,
        "
        acme-prod/europe-west1/api
          iam = run.invoker allUsers foreign
        ",
    );
}

#[test]
fn deleted_members_in_governed_bindings_are_removed_with_an_explanation() {
    let d = desired(settings(), vec![billing()]);
    let live = world()
        .svc(API, &[])
        .bind(
            API,
            RUN_INVOKER,
            &["deleted:user:bob@partner.example?uid=123456789012345678"],
        )
        .build();
    check(
        &d,
        &live,
        "
        acme-prod/europe-west1/api
          iam - run.invoker deleted:user:bob@partner.example?uid=123456789012345678 deleted
        ",
    );
    let plan = plan::plan(&d, &live, &PlanOptions::at(now()));
    let c = plan.services[0].member_changes().next().unwrap();
    assert!(c.note.as_deref().unwrap_or("").contains("deleted"), "{c:?}");
}

#[test]
fn roles_runwarden_does_not_govern_are_never_touched() {
    let d = desired(settings(), vec![billing().public(false)]);
    let live = world()
        .svc(API, &[])
        .bind(
            API,
            "roles/run.developer",
            &["user:leaver@acme.com", "allUsers"],
        )
        .bind(API, IAP_ACCESSOR, &["user:leaver@acme.com"])
        .build();
    check(&d, &live, "");
}

// ---------------------------------------------------------------------------------------------
// Conditions

const UNTIL: &str = "runwarden-expires-2027-01-31T00:00:00Z";
const UNTIL_EXPR: &str = "request.time < timestamp(\"2027-01-31T00:00:00Z\")";

#[test]
fn an_expiring_grant_becomes_a_conditional_binding_with_a_stable_title_and_expression() {
    let d = desired(
        settings(),
        vec![billing().role_until("billing-oncall", "2027-01-31T00:00:00Z")],
    );
    let live = world()
        .svc(API, &[])
        .bind(API, RUN_INVOKER, &["user:grace@acme.com"])
        .role("billing-oncall", &[("auth0|grace", "grace@acme.com", true)])
        .build();
    check(
        &d,
        &live,
        "
        acme-prod/europe-west1/api
          iam - run.invoker user:grace@acme.com unlisted
          iam + run.invoker?runwarden-expires-2027-01-31T00:00:00Z user:grace@acme.com missing
        ",
    );
    let plan = plan::plan(&d, &live, &PlanOptions::at(now()));
    let add = plan.services[0]
        .member_changes()
        .find(|c| c.action == Action::Add)
        .unwrap();
    let cond = add.condition.as_ref().unwrap();
    assert_eq!(
        (cond.title.as_str(), cond.expression.as_str()),
        (UNTIL, UNTIL_EXPR)
    );
    assert_eq!(plan.services[0].iam.as_ref().unwrap().policy_version, 3);

    // Re-planning the world the plan produced is a no-op.
    let after = plan::apply_to(&plan, &live);
    check(&d, &after, "");
}

#[test]
fn expired_managed_bindings_are_removed_and_expired_lines_are_reported() {
    let d = desired(
        settings(),
        vec![billing().member_until("user:ada@acme.com", "2026-01-01T00:00:00Z")],
    );
    let live = world()
        .svc(API, &[])
        .bind_if(
            API,
            RUN_INVOKER,
            "runwarden-expires-2026-01-01T00:00:00Z",
            "request.time < timestamp(\"2026-01-01T00:00:00Z\")",
            &["user:ada@acme.com", "user:contractor@partner.example"],
        )
        .build();
    check(
        &d,
        &live,
        "
        acme-prod/europe-west1/api
          iam - run.invoker?runwarden-expires-2026-01-01T00:00:00Z user:ada@acme.com expired
          iam - run.invoker?runwarden-expires-2026-01-01T00:00:00Z user:contractor@partner.example expired
        ! info expired-grant
        ",
    );
}

#[test]
fn a_managed_binding_no_policy_wants_any_more_is_owned_and_removed() {
    let d = desired(settings(), vec![billing()]);
    let live = world()
        .svc(API, &[])
        .bind_if(
            API,
            RUN_INVOKER,
            UNTIL,
            UNTIL_EXPR,
            &["user:contractor@partner.example"],
        )
        .build();
    check(
        &d,
        &live,
        "
        acme-prod/europe-west1/api
          iam - run.invoker?runwarden-expires-2027-01-31T00:00:00Z user:contractor@partner.example unlisted
        ",
    );
}

#[test]
fn unmanaged_conditional_bindings_are_never_touched() {
    let d = desired(settings(), vec![billing().public(false)]);
    let live = world()
        .svc(API, &[])
        .bind_if(
            API,
            RUN_INVOKER,
            "office-hours",
            "request.time.getHours(\"Europe/Berlin\") < 18",
            &["user:leaver@acme.com", "allUsers"],
        )
        .build();
    check(&d, &live, "");
}

// ---------------------------------------------------------------------------------------------
// IAP

const CONSOLE: &str = "acme-prod/europe-west1/admin-console";
const IAP_AGENT: &str = "serviceAccount:service-123456789012@gcp-sa-iap.iam.gserviceaccount.com";

#[test]
fn with_iap_every_invoker_becomes_an_accessor_and_only_the_iap_agent_keeps_invoker() {
    let d = desired(
        settings(),
        vec![
            policy("console")
                .service(CONSOLE)
                .iap(true)
                .role("platform-admin")
                .machine("ledger-sync"),
        ],
    );
    let live = world()
        .svc(CONSOLE, &[])
        .bind(CONSOLE, RUN_INVOKER, &["user:ada@acme.com"])
        .iap_bind(CONSOLE, IAP_ACCESSOR, &[])
        .role("platform-admin", &[("auth0|ada", "ada@acme.com", true)])
        .build();
    check(
        &d,
        &live,
        "
        acme-prod/europe-west1/admin-console
          iam + run.invoker serviceAccount:service-123456789012@gcp-sa-iap.iam.gserviceaccount.com missing
          iam - run.invoker user:ada@acme.com unlisted
          iap + iap.httpsResourceAccessor serviceAccount:ledger-sync@acme-prod.iam.gserviceaccount.com missing
          iap + iap.httpsResourceAccessor user:ada@acme.com missing
          set iapEnabled false -> true
        ",
    );
    let plan = plan::plan(&d, &live, &PlanOptions::at(now()));
    assert_eq!(
        plan.services[0].iap.as_ref().unwrap().resource,
        "projects/123456789012/iap_web/cloud_run-europe-west1/services/admin-console"
    );
}

#[test]
fn the_iap_agent_binding_is_ensured_and_never_removed() {
    let d = desired(
        settings(),
        vec![policy("console").service(CONSOLE).iap(true)],
    );
    let live = world()
        .svc(CONSOLE, &[])
        .with(CONSOLE, |s| s.settings.iap_enabled = true)
        .bind(CONSOLE, RUN_INVOKER, &[IAP_AGENT])
        .iap_bind(CONSOLE, IAP_ACCESSOR, &[])
        .build();
    check(&d, &live, "");
    // Without IAP it is a kept service agent, not a removal.
    let d = desired(
        settings(),
        vec![policy("console").service(CONSOLE).iap(false)],
    );
    let live = world()
        .svc(CONSOLE, &[])
        .bind(CONSOLE, RUN_INVOKER, &[IAP_AGENT])
        .build();
    check(
        &d,
        &live,
        "
        acme-prod/europe-west1/admin-console
          iam = run.invoker serviceAccount:service-123456789012@gcp-sa-iap.iam.gserviceaccount.com foreign
        ",
    );
}

#[test]
fn an_unread_iap_policy_or_unknown_project_number_is_a_finding_not_an_empty_policy() {
    let d = desired(
        settings(),
        vec![
            policy("console")
                .service(CONSOLE)
                .iap(true)
                .role("platform-admin"),
        ],
    );
    let live = world()
        .svc(CONSOLE, &[])
        .with(CONSOLE, |s| s.settings.iap_enabled = true)
        .bind(CONSOLE, RUN_INVOKER, &[IAP_AGENT])
        .role("platform-admin", &[("auth0|ada", "ada@acme.com", true)])
        .build();
    check(
        &d,
        &live,
        "! error read-failed acme-prod/europe-west1/admin-console\n",
    );
    let mut live = live;
    live.project_numbers.clear();
    check(
        &d,
        &live,
        "! error project-number-unknown acme-prod/europe-west1/admin-console\n",
    );
}

// ---------------------------------------------------------------------------------------------
// Matching and merging

#[test]
fn selectors_with_any_region_match_labelled_services_in_scope_regions_only() {
    let d = desired(
        settings(),
        vec![
            policy("billing")
                .selector("acme-prod", "*", &[("team", "billing")])
                .member("user:ada@acme.com"),
        ],
    );
    let live = world()
        .svc("acme-prod/europe-west1/a", &[("team", "billing")])
        .svc(
            "acme-prod/us-central1/b",
            &[("team", "billing"), ("tier", "web")],
        )
        .svc("acme-prod/asia-east1/c", &[("team", "billing")])
        .svc("acme-prod/europe-west1/d", &[("team", "payments")])
        .svc("acme-staging/europe-west1/e", &[("team", "billing")])
        .build();
    check(
        &d,
        &live,
        "
        acme-prod/europe-west1/a
          iam + run.invoker user:ada@acme.com missing
        acme-prod/us-central1/b
          iam + run.invoker user:ada@acme.com missing
        ",
    );
}

#[test]
fn several_policies_on_one_service_unite_their_invokers() {
    let d = desired(
        settings(),
        vec![
            policy("a").service(API).member("user:ada@acme.com"),
            policy("b")
                .selector("acme-prod", "europe-west1", &[("team", "billing")])
                .member("user:grace@acme.com"),
        ],
    );
    let live = world()
        .svc(API, &[("team", "billing")])
        .bind(API, RUN_INVOKER, &["user:ada@acme.com"])
        .build();
    check(
        &d,
        &live,
        "
        acme-prod/europe-west1/api
          iam + run.invoker user:grace@acme.com missing
        ",
    );
}

#[test]
fn selector_conflicts_are_findings_and_leave_the_conflicting_settings_alone() {
    let d = desired(
        settings(),
        vec![
            policy("a")
                .service(API)
                .ingress(Ingress::Internal)
                .audiences(&["https://a"])
                .member("user:ada@acme.com"),
            policy("b")
                .selector("acme-prod", "europe-west1", &[("team", "billing")])
                .ingress(Ingress::All)
                .audiences(&["https://a"]),
        ],
    );
    let live = world().svc(API, &[("team", "billing")]).build();
    check(
        &d,
        &live,
        "
        acme-prod/europe-west1/api
          iam + run.invoker user:ada@acme.com missing
        ! error exposure-conflict acme-prod/europe-west1/api
        ",
    );
}

#[test]
fn an_iap_conflict_plans_nothing_for_the_service() {
    let d = desired(
        settings(),
        vec![
            policy("a")
                .service(API)
                .iap(true)
                .member("user:ada@acme.com"),
            policy("b")
                .selector("acme-prod", "europe-west1", &[("team", "billing")])
                .iap(false),
        ],
    );
    let live = world().svc(API, &[("team", "billing")]).build();
    check(
        &d,
        &live,
        "! error exposure-conflict acme-prod/europe-west1/api\n",
    );
}

#[test]
fn the_most_cautious_mode_of_the_governing_policies_wins() {
    for (modes, expect) in [
        ((Mode::Enforce, Mode::Enforce), ""),
        ((Mode::Enforce, Mode::Warn), " [warn]"),
        ((Mode::Warn, Mode::Observe), " [observe]"),
        ((Mode::Observe, Mode::Enforce), " [observe]"),
    ] {
        let d = desired(
            settings(),
            vec![
                policy("a")
                    .mode(modes.0)
                    .service(API)
                    .member("user:ada@acme.com"),
                policy("b").mode(modes.1).service(API),
            ],
        );
        let live = world().svc(API, &[]).build();
        check(
            &d,
            &live,
            &format!("{API}{expect}\n  iam + run.invoker user:ada@acme.com missing\n"),
        );
    }
}

#[test]
fn a_policy_matching_no_live_service_is_a_finding() {
    let d = desired(
        settings(),
        vec![
            policy("ghost")
                .service("acme-prod/europe-west1/gone")
                .selector("acme-prod", "*", &[("team", "nobody")]),
        ],
    );
    let live = world().svc(API, &[]).build();
    check(
        &d,
        &live,
        "! warning unmatched-service\n! warning unmatched-service\n",
    );
}

#[test]
fn ungoverned_services_in_scope_are_reported_when_coverage_is_required() {
    let mut s = settings();
    s.audits.require_coverage = true;
    let d = desired(s, vec![billing()]);
    let live = world()
        .svc(API, &[])
        .svc("acme-staging/europe-west1/sandbox", &[])
        .svc("acme-prod/asia-east1/out-of-scope", &[])
        .build();
    check(
        &d,
        &live,
        "! warning ungoverned-service acme-staging/europe-west1/sandbox\n",
    );
    let d = desired(settings(), vec![billing()]);
    check(&d, &live, "");
}

#[test]
fn a_service_whose_read_failed_is_reported_and_never_treated_as_empty() {
    let d = desired(
        settings(),
        vec![billing().public(false).member("user:ada@acme.com")],
    );
    let live = world()
        .svc(API, &[])
        .with(API, |s| {
            s.iam = None;
            s.read_error = Some("403 PERMISSION_DENIED".into());
        })
        .build();
    check(
        &d,
        &live,
        "! error read-failed acme-prod/europe-west1/api\n",
    );
    let live = world().svc(API, &[]).with(API, |s| s.iam = None).build();
    check(
        &d,
        &live,
        "! error read-failed acme-prod/europe-west1/api\n",
    );
}

#[test]
fn a_plan_that_would_exceed_250_groups_and_domains_in_a_policy_is_a_finding_not_a_400_at_write_time() {
    // Google: of the 1,500 principals of an allow policy, at most 250 may be groups or domains.
    let groups: Vec<String> = (0..249).map(|i| format!("group:team-{i:03}@partner.example")).collect();
    let mut live_members: Vec<&str> = groups.iter().map(String::as_str).collect();
    live_members.push("domain:partner.example");
    let live = world().svc(API, &[]).bind(API, "roles/run.invoker", &live_members).build();
    let at_limit = desired(settings(), vec![billing().role("ops")]);
    let codes = |d| plan::plan(d, &live, &PlanOptions::at(now())).findings.iter().map(|f| f.code.clone()).collect::<Vec<_>>();
    assert!(!codes(&at_limit).contains(&"policy-too-many-groups".to_string()), "250 is allowed");
    let over = desired(settings(), vec![billing().member("group:one-more@acme.com")]);
    let plan = plan::plan(&over, &live, &PlanOptions::at(now()));
    let finding = plan.findings.iter().find(|f| f.code == "policy-too-many-groups").expect("a finding");
    assert!(finding.evidence.contains("251 groups and domains"), "{}", finding.evidence);
    assert!(finding.evidence.contains("limit of 250"), "{}", finding.evidence);
}

#[test]
fn a_policy_that_would_exceed_1500_members_is_a_finding() {
    let roster: Vec<(String, String, bool)> = (0..1501)
        .map(|i| (format!("auth0|u{i:04}"), format!("u{i:04}@acme.com"), true))
        .collect();
    let roster: Vec<(&str, &str, bool)> = roster
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), *c))
        .collect();
    let d = desired(settings(), vec![billing().role("everyone")]);
    let live = world().svc(API, &[]).role("everyone", &roster).build();
    let plan = plan::plan(&d, &live, &PlanOptions::at(now()));
    let codes: Vec<&str> = plan.findings.iter().map(|f| f.code.as_str()).collect();
    assert_eq!(codes, ["policy-too-large"]);
    assert!(
        plan.findings[0].evidence.contains("1501 members"),
        "{}",
        plan.findings[0].evidence
    );
}

// ---------------------------------------------------------------------------------------------
// Exposure settings

#[test]
fn ingress_drift_is_a_setting_change_but_an_unspecified_ingress_is_not() {
    let d = desired(settings(), vec![billing().ingress(Ingress::Internal)]);
    let live = world().svc(API, &[]).build();
    check(
        &d,
        &live,
        r#"
        acme-prod/europe-west1/api
          set ingress "INGRESS_TRAFFIC_ALL" -> "INGRESS_TRAFFIC_INTERNAL_ONLY"
        "#,
    );
    let live = world().svc(API, &[]).ingress(API, None).build();
    check(&d, &live, "");
}

#[test]
fn invoker_iam_check_must_stay_enabled_unless_the_service_is_public() {
    let live = world()
        .svc(API, &[])
        .with(API, |s| s.settings.invoker_iam_disabled = true)
        .build();
    let d = desired(settings(), vec![billing().public(false)]);
    check(
        &d,
        &live,
        "acme-prod/europe-west1/api\n  set invokerIamDisabled true -> false\n",
    );
    let d = desired(settings(), vec![billing()]);
    check(
        &d,
        &live,
        "acme-prod/europe-west1/api\n  set invokerIamDisabled true -> false\n",
    );
    let live = world()
        .svc(API, &[])
        .with(API, |s| s.settings.invoker_iam_disabled = true)
        .bind(API, RUN_INVOKER, &["allUsers"])
        .build();
    let d = desired(settings(), vec![billing().public(true)]);
    // In sync: only the last-applied record (allUsers, granted by `public: true`) is written.
    check(&d, &live, "acme-prod/europe-west1/api\n  record 1\n");
}

#[test]
fn custom_audiences_compare_as_sets_and_render_sorted() {
    let d = desired(
        settings(),
        vec![billing().audiences(&["https://b", "https://a"])],
    );
    let live = world()
        .svc(API, &[])
        .with(API, |s| {
            s.settings.custom_audiences =
                vec!["https://a".into(), "https://b".into(), "https://a".into()]
        })
        .build();
    check(&d, &live, "");
    let live = world()
        .svc(API, &[])
        .with(API, |s| {
            s.settings.custom_audiences = vec!["https://c".into()]
        })
        .build();
    check(
        &d,
        &live,
        r#"
        acme-prod/europe-west1/api
          set customAudiences ["https://c"] -> ["https://a","https://b"]
        "#,
    );
}

// ---------------------------------------------------------------------------------------------
// Base policies

#[test]
fn with_base_policies_changes_the_base_would_make_too_are_drift_and_the_rest_declared() {
    let base = desired(
        settings(),
        vec![
            billing()
                .public(false)
                .ingress(Ingress::Internal)
                .member("user:ada@acme.com"),
        ],
    );
    let head = desired(
        settings(),
        vec![
            billing()
                .public(false)
                .ingress(Ingress::Internal)
                .member("user:ada@acme.com")
                .member("user:grace@acme.com"),
        ],
    );
    let live = world()
        .svc(API, &[])
        .bind(
            API,
            RUN_INVOKER,
            &["allUsers", "user:contractor@partner.example"],
        )
        .build();
    check_with(
        &head,
        &live,
        &PlanOptions {
            now: now(),
            base: Some(&base),
        },
        r#"
        acme-prod/europe-west1/api
          iam - run.invoker allUsers public [drift]
          iam + run.invoker user:ada@acme.com missing [drift]
          iam = run.invoker user:contractor@partner.example foreign
          iam + run.invoker user:grace@acme.com missing [declared]
          set ingress "INGRESS_TRAFFIC_ALL" -> "INGRESS_TRAFFIC_INTERNAL_ONLY" [drift]
        "#,
    );
}

#[test]
fn switching_observe_to_enforce_declares_every_removal_it_unlocks_and_shows_the_mode_change() {
    let base = desired(settings(), vec![billing().mode(Mode::Observe).member("user:ada@acme.com")]);
    let head = desired(settings(), vec![billing().member("user:ada@acme.com")]);
    let live = world()
        .svc(API, &[])
        .bind(API, RUN_INVOKER, &["user:ada@acme.com", "user:leaver@acme.com"])
        .build();
    let opts = PlanOptions { now: now(), base: Some(&base) };
    let p = plan::plan(&head, &live, &opts);
    let svc = &p.services[0];
    assert_eq!((svc.base_mode, svc.mode), (Some(PlanMode::Observe), PlanMode::Enforce));
    let leaver = svc.member_changes().find(|c| c.member.as_str() == "user:leaver@acme.com").unwrap();
    assert_eq!((leaver.action, leaver.origin), (Action::Remove, Some(Origin::Declared)));
    let text = plan::render_text(&p, false);
    assert!(text.contains("[mode observe → enforce (declared)"), "{text}");
    assert!(plan::render_markdown(&p).contains("| observe → enforce |"), "the table shows it too");
    // Without a mode change, the same removal is drift (the base branch would make it too).
    let same = plan::plan(&head, &live, &PlanOptions { now: now(), base: Some(&head) });
    let leaver = same.services[0].member_changes().find(|c| c.member.as_str() == "user:leaver@acme.com").unwrap();
    assert_eq!((same.services[0].base_mode, leaver.origin), (None, Some(Origin::Drift)));
}

#[test]
fn the_comment_names_its_commit_and_puts_the_guard_refusal_then_widening_exposure_first() {
    let mut st = settings();
    st.guards.max_removals = 0;
    let d = desired(
        st,
        vec![
            billing().public(true).ingress(Ingress::All).member("user:bob@partner.example").member("user:ada@acme.com"),
            policy("console").service(CONSOLE),
        ],
    );
    let live = world()
        .svc(API, &[])
        .ingress(API, Some(Ingress::Internal))
        .bind(API, RUN_INVOKER, &["user:leaver@acme.com"])
        .svc(CONSOLE, &[])
        .bind(CONSOLE, RUN_INVOKER, &["user:contractor@partner.example"])
        .build();
    let p = plan::plan(&d, &live, &PlanOptions::at(now()));
    let trips = check_guards(&p, &d.settings, None);
    assert!(!trips.is_empty(), "removing leaver trips maxRemovals 0");
    let md = plan::render_comment(&p, Some("3f2a9c1d"), &trips);
    assert!(md.starts_with("**runwarden plan** at `3f2a9c1d` — "), "{md}");
    let pos = |needle: &str| md.find(needle).unwrap_or_else(|| panic!("{needle:?} missing from:\n{md}"));
    let (refused, widens, removes, table) =
        (pos("would refuse this plan"), pos("This plan widens exposure"), pos("This plan removes access"), pos("| Service |"));
    assert!(refused < widens && widens < removes && removes < table, "{md}");
    for line in ["`allUsers` granted", "`user:bob@partner.example` granted", "ingress opened to all traffic"] {
        assert!(md[widens..removes].contains(line), "{line:?} in the widening block:\n{md}");
    }
    assert!(!md[widens..removes].contains("ada@acme.com"), "a member in the mapping's domains is not a widening");
    // The summary counts one service to change; the table has one row, the kept-only console
    // service is named as such below it.
    assert!(md.contains("Plan: 1 service to change"), "{md}");
    let rows = md.lines().filter(|l| l.starts_with("| `")).count();
    assert_eq!(rows, 1, "{md}");
    assert!(md.contains("1 more service with nothing to change"), "{md}");
    // Without a revision the header names none.
    assert!(plan::render_markdown(&p).starts_with("**runwarden plan** — "));
}

#[test]
fn a_guard_holds_the_unit_that_trips_and_every_unit_when_only_together_they_trip() {
    let mut st = settings();
    st.guards.max_removals = 1;
    st.guards.max_removal_ratio = 1.0;
    let d = desired(st, vec![billing().member("user:ada@acme.com"), policy("console").service(CONSOLE).member("user:ada@acme.com")]);
    let held = |live: &LiveState| -> Vec<(String, Vec<String>)> {
        let p = plan::plan(&d, live, &PlanOptions::at(now()));
        plan::hold_tripped_units(&p, &d.settings, None).into_iter().map(|u| (u.unit, u.services)).collect()
    };
    // billing removes two, console one: billing alone is held, console converges.
    let live = world()
        .svc(API, &[])
        .bind(API, RUN_INVOKER, &["user:ada@acme.com", "user:x@acme.com", "user:y@acme.com"])
        .svc(CONSOLE, &[])
        .bind(CONSOLE, RUN_INVOKER, &["user:ada@acme.com", "user:z@acme.com"])
        .build();
    assert_eq!(held(&live), [("billing".to_string(), vec![API.to_string()])]);
    // One removal each: each unit passes alone, together they trip maxRemovals 1, so both wait.
    let live = world()
        .svc(API, &[])
        .bind(API, RUN_INVOKER, &["user:ada@acme.com", "user:x@acme.com"])
        .svc(CONSOLE, &[])
        .bind(CONSOLE, RUN_INVOKER, &["user:ada@acme.com", "user:z@acme.com"])
        .build();
    let units: Vec<String> = held(&live).into_iter().map(|(u, _)| u).collect();
    assert_eq!(units, ["billing", "console"]);
    // The allowance a trip names lets exactly those removals through.
    let p = plan::plan(&d, &live, &PlanOptions::at(now()));
    let trip = check_guards(&p, &d.settings, None).remove(0).to_string();
    let tokens: Vec<String> = trip.split('"').filter(|t| t.contains('@') && !t.contains(' ')).map(str::to_string).collect();
    assert_eq!(tokens.len(), 2, "{trip}");
    let mut allowed = d.clone();
    allowed.settings.guards.allow_once = tokens;
    assert!(check_guards(&p, &allowed.settings, None).is_empty());
    assert!(plan::hold_tripped_units(&p, &allowed.settings, None).is_empty());
}

#[test]
fn every_change_names_the_policy_lines_behind_it() {
    let d = desired(
        settings(),
        vec![billing().public(false).member("user:ada@acme.com")],
    );
    let live = world()
        .svc(API, &[])
        .bind(API, RUN_INVOKER, &["allUsers", "user:leaver@acme.com"])
        .build();
    let plan = plan::plan(&d, &live, &PlanOptions::at(now()));
    let sources: Vec<(String, Reason, Vec<String>)> = plan.services[0]
        .member_changes()
        .map(|c| (c.member.to_string(), c.reason, c.sources.to_vec()))
        .collect();
    let f = "policies/teams/billing.yaml";
    assert_eq!(
        sources,
        [
            (
                "allUsers".to_string(),
                Reason::Public,
                vec![format!("{f}:20")]
            ),
            (
                "user:ada@acme.com".to_string(),
                Reason::Missing,
                vec![format!("{f}:30")]
            ),
            (
                "user:leaver@acme.com".to_string(),
                Reason::Unlisted,
                vec![format!("{f}:6")]
            ),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Guards

fn removals_world(remove: usize, stay: usize) -> (Desired, LiveState) {
    let staying: Vec<String> = (0..stay)
        .map(|i| format!("user:stay{i}@acme.com"))
        .collect();
    let mut p = billing();
    for s in &staying {
        p = p.member(s);
    }
    let members: Vec<String> = (0..remove)
        .map(|i| format!("user:gone{i}@acme.com"))
        .chain(staying.iter().cloned())
        .collect();
    let members: Vec<&str> = members.iter().map(String::as_str).collect();
    (
        desired(settings(), vec![p]),
        world()
            .svc(API, &[])
            .bind(API, RUN_INVOKER, &members)
            .build(),
    )
}

fn trips(
    plan: &Plan,
    settings: &runwarden::policy::model::Settings,
    allow: Option<usize>,
) -> Vec<(GuardKind, String)> {
    check_guards(plan, settings, allow)
        .into_iter()
        .map(|t| (t.guard, t.to_string()))
        .collect()
}

#[test]
fn removing_public_access_counts_against_max_removals_but_not_the_owned_ratio() {
    // One owned member stays; `allUsers` and `allAuthenticatedUsers` go (public: false). Two
    // removals of one owned member would be 200% if public removals counted in the ratio.
    let d = desired(settings(), vec![billing().public(false).member("user:stay0@acme.com")]);
    let live = world()
        .svc(API, &[])
        .bind(API, RUN_INVOKER, &["user:stay0@acme.com", "allUsers", "allAuthenticatedUsers"])
        .build();
    let plan = plan::plan(&d, &live, &PlanOptions::at(now()));
    let mut s = settings(); // maxRemovalRatio 0.5
    assert!(trips(&plan, &s, None).is_empty(), "{:?}", trips(&plan, &s, None));
    s.guards.max_removals = 1;
    let t = trips(&plan, &s, None);
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!(t[0].0, GuardKind::MaxRemovals);
    assert!(t[0].1.contains("removes 2 members, more than maxRemovals 1"), "{}", t[0].1);
}

#[test]
fn the_removal_count_guard_names_its_numbers_and_the_override() {
    let mut s = settings();
    s.guards.max_removal_ratio = 1.0;
    s.guards.max_removals = 3;
    let (d, live) = removals_world(4, 1);
    let plan = plan::plan(&d, &live, &PlanOptions::at(now()));
    let t = trips(&plan, &s, None);
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!(t[0].0, GuardKind::MaxRemovals);
    assert!(
        t[0].1
            .contains("removes 4 members, more than maxRemovals 3"),
        "{}",
        t[0].1
    );
    assert!(t[0].1.contains("--allow-removals 4"), "{}", t[0].1);
    assert!(trips(&plan, &s, Some(4)).is_empty());
    assert_eq!(trips(&plan, &s, Some(3))[0].0, GuardKind::MaxRemovals);
    let (d, live) = removals_world(3, 1);
    assert!(trips(&plan::plan(&d, &live, &PlanOptions::at(now())), &s, None).is_empty());
}

#[test]
fn the_removal_ratio_guard_compares_with_owned_members() {
    let s = settings(); // maxRemovalRatio 0.5
    let (d, live) = removals_world(2, 3);
    assert!(
        trips(&plan::plan(&d, &live, &PlanOptions::at(now())), &s, None).is_empty(),
        "2 of 5 is 40%"
    );
    let (d, live) = removals_world(3, 1);
    let plan = plan::plan(&d, &live, &PlanOptions::at(now()));
    let t = trips(&plan, &s, None);
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!(t[0].0, GuardKind::MaxRemovalRatio);
    assert!(
        t[0].1.contains(
            "removes 3 of 4 owned members (75.0%), more than maxRemovalRatio 0.5 (2.0 members)"
        ),
        "{}",
        t[0].1
    );
    assert!(trips(&plan, &s, Some(3)).is_empty());

    // Owned members of services without changes count too: 3 of 4 + 6 in sync = 3 of 10.
    let other = "acme-prod/europe-west1/other";
    let (mut d, live) = removals_world(3, 1);
    let insync: Vec<String> = (0..6).map(|i| format!("user:other{i}@acme.com")).collect();
    let mut p = policy("other").service(other);
    for u in &insync {
        p = p.member(u);
    }
    d.policies.push(p.build());
    let refs: Vec<&str> = insync.iter().map(String::as_str).collect();
    let live = W(live)
        .svc(other, &[])
        .bind(other, RUN_INVOKER, &refs)
        .build();
    let plan = plan::plan(&d, &live, &PlanOptions::at(now()));
    assert_eq!(plan.summary.owned_members, 10);
    assert!(trips(&plan, &s, None).is_empty());
    // ... but not those of services that are never applied.
    d.policies.last_mut().unwrap().mode = Mode::Warn;
    let plan = plan::plan(&d, &live, &PlanOptions::at(now()));
    assert_eq!(plan.summary.owned_members, 4);
}

#[test]
fn the_directory_guard_refuses_to_empty_a_binding_because_a_role_came_back_empty() {
    let mut s = settings();
    s.guards.max_removal_ratio = 1.0;
    let d = desired(s.clone(), vec![billing().role("billing-admin")]);
    let live = world()
        .svc(API, &[])
        .bind(API, RUN_INVOKER, &["user:ada@acme.com"])
        .role("billing-admin", &[])
        .build();
    let plan = plan::plan(&d, &live, &PlanOptions::at(now()));
    let t = trips(&plan, &s, None);
    assert_eq!(
        t.iter().map(|t| t.0).collect::<Vec<_>>(),
        [GuardKind::EmptyDirectory],
        "{t:?}"
    );
    assert!(
        t[0].1.contains(
            "lose all 1 member of the principal mapping because Auth0 role `billing-admin` came back empty"
        ),
        "{}",
        t[0].1
    );
    assert!(trips(&plan, &s, Some(1)).is_empty());
}

#[test]
fn the_directory_guard_refuses_removals_from_a_binding_while_a_group_of_its_role_came_back_empty() {
    let mut s = settings();
    s.guards.max_removal_ratio = 1.0;
    let d = desired(s.clone(), vec![billing().role("billing-admin")]);
    let live = world()
        .svc(API, &[])
        .bind(API, RUN_INVOKER, &["user:ada@acme.com", "user:grace@acme.com"])
        .role("billing-admin", &[("auth0|ada", "ada@acme.com", true)])
        .empty_group("billing-admin", "billing-team")
        .build();
    let plan = plan::plan(&d, &live, &PlanOptions::at(now()));
    let t = trips(&plan, &s, None);
    assert_eq!(t.iter().map(|t| t.0).collect::<Vec<_>>(), [GuardKind::EmptyDirectory], "{t:?}");
    assert!(
        t[0].1.contains(&format!(
            "roles/run.invoker on {API} would lose 1 member of the principal mapping while Auth0 group `billing-team` (of role `billing-admin`) came back empty"
        )),
        "{}",
        t[0].1
    );
    assert!(trips(&plan, &s, Some(1)).is_empty(), "--allow-removals overrides it, like the role guard");
    // The same leaver without an empty group is an ordinary removal.
    let mut no_group = live.clone();
    no_group.directory.roles.get_mut("billing-admin").unwrap().empty_groups.clear();
    assert!(trips(&plan::plan(&d, &no_group, &PlanOptions::at(now())), &s, None).is_empty());
}

#[test]
fn the_guard_note_escapes_a_hostile_role_name_in_markdown_and_text() {
    const EVIL: &str = "ops`<!--\u{202e}|x";
    let mut s = settings();
    s.guards.max_removal_ratio = 1.0;
    let d = desired(s.clone(), vec![billing().role(EVIL)]);
    let live = world()
        .svc(API, &[])
        .bind(API, RUN_INVOKER, &["user:ada@acme.com"])
        .role(EVIL, &[])
        .build();
    let plan = plan::plan(&d, &live, &PlanOptions::at(now()));
    let trips = check_guards(&plan, &s, None);
    assert_eq!(trips.len(), 1, "{trips:?}");
    let md = plan::render_guard_note(&trips, true);
    assert!(md.starts_with("\n> [!CAUTION]\n"), "{md}");
    assert_eq!(md.lines().filter(|l| l.starts_with("> * ")).count(), 1, "{md}");
    assert!(!md.contains('\u{202e}') && !md.contains(" <!--"), "{md}");
    assert!(md.contains("\\<!--"), "the comment opener is escaped: {md}");
    let text = plan::render_guard_note(&trips, false);
    assert!(text.contains("ops`<!--\\u{202e}|x"), "{text}");
    assert!(!text.contains('\u{202e}'), "{text}");
}

#[test]
fn the_keep_and_allowed_roles_guards_double_check_the_plan_and_cannot_be_overridden() {
    let s = settings();
    let d = desired(settings(), vec![billing().member("user:ada@acme.com")]);
    let live = world().svc(API, &[]).build();
    let mut plan = plan::plan(&d, &live, &PlanOptions::at(now()));
    let changes = &mut plan.services[0].iam.as_mut().unwrap().changes;
    changes[0].role = "roles/owner".into();
    let mut removal = changes[0].clone();
    removal.action = Action::Remove;
    removal.role = RUN_INVOKER.into();
    removal.member = m("user:break-glass@acme.com");
    changes.push(removal);
    let t = trips(&plan, &s, Some(100));
    let kinds: Vec<GuardKind> = t.iter().map(|t| t.0).collect();
    assert_eq!(
        kinds,
        [GuardKind::KeepMemberRemoved, GuardKind::RoleNotAllowed],
        "{t:?}"
    );
    assert!(
        t[0].1.contains("keep pattern `user:break-glass@acme.com`"),
        "{}",
        t[0].1
    );
    assert!(t[1].1.contains("grants roles/owner"), "{}", t[1].1);
}

#[test]
fn guards_ignore_services_that_are_never_applied() {
    let mut s = settings();
    s.guards.max_removals = 0;
    let d = desired(settings(), vec![billing().mode(Mode::Observe)]);
    let live = world()
        .svc(API, &[])
        .bind(API, RUN_INVOKER, &["user:leaver@acme.com"])
        .build();
    let plan = plan::plan(&d, &live, &PlanOptions::at(now()));
    assert_eq!(plan.summary.members_to_remove, 1);
    assert!(trips(&plan, &s, None).is_empty());
}

// ---------------------------------------------------------------------------------------------
// The plan value and its renderings

#[test]
fn a_plan_with_only_kept_members_has_no_changes_and_says_so() {
    let d = desired(settings(), vec![billing()]);
    let live = world()
        .svc(API, &[])
        .bind(API, RUN_INVOKER, &["user:contractor@partner.example"])
        .build();
    let plan = plan::plan(&d, &live, &PlanOptions::at(now()));
    assert!(!plan.has_changes());
    let text = render_text(&plan, false);
    assert!(
        text.ends_with("No changes. Live access matches the policies on 1 governed service; 1 foreign kept, 0 findings.\n"),
        "{text}"
    );
}

#[test]
fn a_saved_plan_of_another_format_version_is_refused() {
    let plan = plan::plan(&demo::desired(), &demo::live(), &PlanOptions::at(now()));
    let json = plan
        .to_json()
        .replacen("\"formatVersion\": 3", "\"formatVersion\": 4", 1);
    let err = Plan::from_json(&json).unwrap_err().to_string();
    assert!(err.contains("formatVersion 4"), "{err}");
    assert!(Plan::from_json("{\"formatVersion\": 3}").is_err());
    // Version 1 (ungrouped changes, no policy digest) and version 2 (a finding's evidence and
    // fix in one `message`) are refused the same way.
    for old in [1, 2] {
        let older = plan.to_json().replacen("\"formatVersion\": 3", &format!("\"formatVersion\": {old}"), 1);
        let err = Plan::from_json(&older).unwrap_err().to_string();
        assert!(err.contains(&format!("formatVersion {old}, this runwarden reads version 3")), "{err}");
    }
}

#[test]
fn text_is_coloured_only_when_asked() {
    let plan = plan::plan(&demo::desired(), &demo::live(), &PlanOptions::at(now()));
    assert!(!render_text(&plan, false).contains('\x1b'));
    assert!(render_text(&plan, true).contains("\x1b[31m"));
}

#[test]
fn markdown_stays_under_the_comment_limit_and_says_what_it_left_out() {
    let n_services = 400;
    let roster: Vec<(String, String, bool)> = (0..60)
        .map(|i| {
            (
                format!("auth0|u{i:03}"),
                format!("user{i:03}@acme.com"),
                true,
            )
        })
        .collect();
    let roster: Vec<(&str, &str, bool)> = roster
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), *c))
        .collect();
    let d = desired(
        settings(),
        vec![
            policy("all")
                .selector("acme-prod", "*", &[("team", "big")])
                .role("everyone"),
        ],
    );
    let mut w = world().role("everyone", &roster);
    for i in 0..n_services {
        let id = format!("acme-prod/europe-west1/svc-{i:04}");
        w = w
            .svc(&id, &[("team", "big")])
            .bind(&id, RUN_INVOKER, &["user:leaver@acme.com"]);
    }
    let plan = plan::plan(&d, &w.build(), &PlanOptions::at(now()));
    assert_eq!(plan.summary.members_to_add, 60 * n_services);
    let md = render_markdown(&plan);
    assert!(md.len() < plan::MARKDOWN_LIMIT, "{} bytes", md.len());
    assert!(
        md.starts_with(
            "**runwarden plan** — Plan: 400 services to change, 24000 members to add, 400 to remove"
        ),
        "{}",
        &md[..200]
    );
    assert!(md.contains("> [!WARNING]"));
    let marker = md
        .lines()
        .find(|l| l.contains("Plan truncated"))
        .expect("a visible truncation marker");
    let shown = md.matches("<details>").count();
    assert!(shown > 0 && shown < n_services, "{shown} details shown");
    assert!(
        marker.contains(&format!("{} service details", n_services - shown)),
        "{marker}"
    );
    // Every details block that was started was also closed.
    assert_eq!(md.matches("</details>").count(), shown);
}

/// A plan whose every user-controlled string is hostile: an Auth0 role name that opens a code
/// span and an HTML comment and carries a newline, members with `<!--`, backticks and a
/// right-to-left override, a condition title closing `</details>`, a `|` for table cells.
fn hostile_plan() -> Plan {
    const EVIL_ROLE: &str = "ops`<!--|<details>\n### pwned";
    const SVC: &str = "acme-prod/europe-west1/api|x";
    let d = desired(
        settings(),
        vec![
            policy("hostile").service(API).role(EVIL_ROLE).role("billing-oncall"),
            policy("later").service(SVC).role("billing-oncall"),
            policy("zz-last").service(SVC).role("nobody-left"),
        ],
    );
    let live = world()
        .svc(API, &[])
        .svc(SVC, &[])
        .bind(API, RUN_INVOKER, &["user:x`<!--@acme.com", "user:ada\u{202e}moc.live@acme.com", "user:````@acme.com"])
        .bind_if(API, "roles/viewer", "</details><!--", "true", &["user:y|z@acme.com"])
        .role(EVIL_ROLE, &[])
        .role("billing-oncall", &[("auth0|ken", "ken@acme.com", true)])
        .role("nobody-left", &[])
        .build();
    plan::plan(&d, &live, &PlanOptions::at(now()))
}

/// The Markdown with fenced code blocks (where everything is literal) left out, read as
/// CommonMark does: a block opened by N backticks ends at a line of at least N backticks only.
fn outside_code_blocks(md: &str) -> String {
    let mut fence: Option<usize> = None;
    let mut out = String::new();
    for line in md.lines() {
        let ticks = line.len() - line.trim_start_matches('`').len();
        match fence {
            None if ticks >= 3 => fence = Some(ticks),
            None => {
                out.push_str(line);
                out.push('\n');
            }
            Some(n) if ticks >= n && line.trim_start_matches('`').trim().is_empty() => fence = None,
            Some(_) => {}
        }
    }
    assert!(fence.is_none(), "every fenced block is closed");
    out
}

#[test]
fn hostile_names_cannot_hide_or_reshape_the_markdown_comment() {
    let plan = hostile_plan();
    assert!(plan.findings.len() >= 2, "{:#?}", plan.findings);
    let md = render_markdown(&plan);
    let outside = outside_code_blocks(&md);
    // Structure: one details block per service, opened and closed; no raw comment or heading.
    assert_eq!(md.matches("<details>").count(), plan.services.len(), "{md}");
    assert_eq!(md.matches("</details>").count(), plan.services.len(), "{md}");
    // `<` outside code is always escaped (`\<`), so it opens neither a comment nor a tag.
    assert!(
        outside.match_indices('<').all(|(i, _)| outside[..i].ends_with('\\')
            || ["<details>", "<summary>", "<code>", "</"].iter().any(|t| outside[i..].starts_with(t))),
        "{outside}"
    );
    assert!(outside.match_indices("<!--").all(|(i, _)| outside[..i].ends_with('\\')), "{outside}");
    assert!(!outside.lines().any(|l| l.starts_with("### pwned")), "{outside}");
    assert!(!md.contains('\u{202e}'), "{md}");
    // A member holding four backticks gets a five-backtick fence, so it cannot close the block.
    assert!(md.contains("`````diff\n") && md.contains("user:````@acme.com"), "{md}");
    // Every table row still has its six cells (unescaped pipes only delimit cells).
    for row in outside.lines().filter(|l| l.starts_with("| `")) {
        let delimiters = row.match_indices('|').filter(|(i, _)| !row[..*i].ends_with('\\')).count();
        assert_eq!(delimiters, 7, "{row}");
    }
    // Every finding is its own list item, in order, the last one included.
    let items: Vec<&str> = outside.lines().filter(|l| l.starts_with("- ")).collect();
    assert_eq!(items.len(), plan.findings.len(), "{outside}");
    for (item, finding) in items.iter().zip(&plan.findings) {
        assert!(item.contains(&format!("`{}`", finding.code)), "{item}");
    }
    assert!(
        items.iter().any(|i| i.contains("policy zz-last names Auth0 role `nobody-left`")),
        "the finding after the hostile one is intact: {items:#?}"
    );
}

#[test]
fn hostile_names_cannot_reorder_or_split_the_text_plan() {
    let plan = hostile_plan();
    let text = render_text(&plan, false);
    for hidden in ['\u{202e}', '\u{1b}'] {
        assert!(!text.contains(hidden), "{text}");
    }
    assert!(text.contains("user:ada\\u{202e}moc.live@acme.com"), "{text}");
    // The newline in the role name is shown as `\u{a}`: one line per finding.
    let findings = text.lines().filter(|l| l.starts_with("  warning [") || l.starts_with("  error [") || l.starts_with("  info [")).count();
    assert_eq!(findings, plan.findings.len(), "{text}");
    assert!(!text.lines().any(|l| l.starts_with("### pwned")), "{text}");
}

#[test]
fn markdown_of_a_small_plan_is_complete() {
    let plan = plan::plan(&demo::desired(), &demo::live(), &PlanOptions::at(now()));
    let md = render_markdown(&plan);
    assert!(!md.contains("Plan truncated"));
    assert_eq!(md.matches("<details>").count(), plan.services.len());
}

// ---------------------------------------------------------------------------------------------
// Golden outputs on the demo estate, and the schema

fn golden(name: &str, actual: &str) {
    let path = root().join("tests/golden").join(name);
    assert_golden(&path, actual, "review the difference and re-run with RUNWARDEN_BLESS=1");
}

#[test]
fn demo_estate_golden_text() {
    let plan = plan::plan(&demo::desired(), &demo::live(), &PlanOptions::at(now()));
    golden("demo.plan.txt", &render_text(&plan, false));
}

#[test]
fn demo_estate_golden_markdown() {
    let plan = plan::plan(&demo::desired(), &demo::live(), &PlanOptions::at(now()));
    golden("demo.plan.md", &render_markdown(&plan));
}

#[test]
fn every_finding_shows_its_evidence_and_its_fix_the_same_way_in_text_markdown_and_json() {
    let plan = plan::plan(&demo::desired(), &demo::live(), &PlanOptions::at(now()));
    assert!(!plan.findings.is_empty());
    let (text, md) = (render_text(&plan, false), render_markdown(&plan));
    let json: serde_json::Value = serde_json::from_str(&plan::render_json(&plan)).unwrap();
    for (i, f) in plan.findings.iter().enumerate() {
        assert!(!f.fix.trim().is_empty() && !f.evidence.trim().is_empty(), "{f:?}");
        assert!(text.contains(&format!("[{}]", f.code)) && text.contains(&format!("; fix: {}", f.fix)), "{text}");
        assert_eq!(json["findings"][i]["evidence"], f.evidence.as_str());
        assert_eq!(json["findings"][i]["fix"], f.fix.as_str());
    }
    assert_eq!(md.matches("; **fix:** ").count(), plan.findings.len(), "{md}");
    assert!(!text.contains("fix: fix:") && !text.contains("; fix: ;"), "{text}");
}

#[test]
fn demo_estate_golden_json() {
    let plan = plan::plan(&demo::desired(), &demo::live(), &PlanOptions::at(now()));
    golden("demo.plan.json", &plan::render_json(&plan));
}

#[test]
fn demo_estate_converges_after_one_apply() {
    let (d, live) = (demo::desired(), demo::live());
    let plan = plan::plan(&d, &live, &PlanOptions::at(now()));
    assert!(plan.has_changes());
    let after = plan::apply_to(&plan, &live);
    let again = plan::plan(&d, &after, &PlanOptions::at(now()));
    assert!(!again.has_changes(), "{}", render_text(&again, false));
}

#[test]
fn the_plan_schema_file_is_fresh() {
    golden_at("schemas/plan.schema.json", &plan::json_schema());
}

fn golden_at(rel: &str, actual: &str) {
    assert_golden(&root().join(rel), actual, "re-run with RUNWARDEN_BLESS=1 (or `runwarden schema`)");
}

#[test]
fn the_demo_plan_validates_against_its_schema_shape() {
    // Structural check without a validator crate: every top-level and service key the plan
    // writes is declared in the schema.
    let plan = plan::plan(&demo::desired(), &demo::live(), &PlanOptions::at(now()));
    let schema: serde_json::Value = serde_json::from_str(&plan::json_schema()).unwrap();
    let json: serde_json::Value = serde_json::from_str(&plan.to_json()).unwrap();
    let top = schema["properties"].as_object().unwrap();
    for key in json.as_object().unwrap().keys() {
        assert!(top.contains_key(key), "{key} not in schema");
    }
    let svc = schema["definitions"]["ServicePlan"]["properties"]
        .as_object()
        .unwrap();
    for s in json["services"].as_array().unwrap() {
        for key in s.as_object().unwrap().keys() {
            assert!(svc.contains_key(key), "{key} not in schema");
        }
    }
}

/// A small estate that exercises what the demo does not: base policies (declared/drift), a
/// time-boxed grant, an expired binding, a binding an empty role would empty, IAP, and findings.
fn features() -> (Desired, Desired, LiveState) {
    let head = desired(
        settings(),
        vec![
            billing()
                .public(false)
                .ingress(Ingress::Internal)
                .member("user:ada@acme.com")
                .member("user:grace@acme.com")
                .role_until("billing-oncall", "2027-01-31T00:00:00Z"),
            policy("console")
                .service(CONSOLE)
                .iap(true)
                .role("platform-admin"),
            policy("empty")
                .service("acme-prod/europe-west1/reports")
                .role("nobody-left"),
        ],
    );
    let base = desired(
        settings(),
        vec![
            billing()
                .public(false)
                .ingress(Ingress::Internal)
                .member("user:ada@acme.com"),
            policy("console")
                .service(CONSOLE)
                .iap(true)
                .role("platform-admin"),
            policy("empty")
                .service("acme-prod/europe-west1/reports")
                .role("nobody-left"),
        ],
    );
    let live = world()
        .svc(API, &[])
        .bind(
            API,
            RUN_INVOKER,
            &["allUsers", "user:contractor@partner.example"],
        )
        .bind_if(
            API,
            RUN_INVOKER,
            "runwarden-expires-2026-01-01T00:00:00Z",
            "request.time < timestamp(\"2026-01-01T00:00:00Z\")",
            &["user:linus@acme.com"],
        )
        .svc(CONSOLE, &[])
        .with(CONSOLE, |s| s.settings.iap_enabled = true)
        .bind(CONSOLE, RUN_INVOKER, &[IAP_AGENT, "user:linus@acme.com"])
        .iap_bind(CONSOLE, IAP_ACCESSOR, &["user:margaret@acme.com"])
        .svc("acme-prod/europe-west1/reports", &[])
        .bind(
            "acme-prod/europe-west1/reports",
            RUN_INVOKER,
            &["user:margaret@acme.com"],
        )
        .role("billing-oncall", &[("auth0|ken", "ken@acme.com", true)])
        .role("platform-admin", &[("auth0|linus", "linus@acme.com", true)])
        .role("nobody-left", &[])
        .build();
    (head, base, live)
}

#[test]
fn features_golden_text_and_markdown() {
    let (head, base, live) = features();
    let plan = plan::plan(
        &head,
        &live,
        &PlanOptions {
            now: now(),
            base: Some(&base),
        },
    );
    golden("features.plan.txt", &render_text(&plan, false));
    golden("features.plan.md", &render_markdown(&plan));
}

// ---------------------------------------------------------------------------------------------
// Saved plans: what of a saved plan may be applied (pure; the apply tests inject the edits
// through the binary)

#[test]
fn an_unchanged_saved_plan_verifies_to_the_fresh_plan_of_its_services() {
    let (d, live) = (demo::desired(), demo::live());
    let fresh = plan::plan(&d, &live, &PlanOptions::at(now()));
    let mut saved = Plan::from_json(&fresh.to_json()).unwrap();
    saved.services.retain(|s| s.id.ends_with("/billing-api"));
    assert!(!saved.services.is_empty());
    let verified = plan::verify_saved(&saved, &fresh, &live).unwrap();
    assert!(verified.stale.is_empty(), "{:?}", verified.stale);
    let ids: Vec<&str> = verified.plan.services.iter().map(|s| s.id.as_str()).collect();
    let saved_ids: Vec<&str> = saved.services.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, saved_ids, "only the saved plan's services, from the fresh plan");
}

#[test]
fn a_saved_service_whose_written_resource_moved_is_stale_and_an_edit_without_a_move_is_refused() {
    let (d, mut live) = (demo::desired(), demo::live());
    let fresh = plan::plan(&d, &live, &PlanOptions::at(now()));
    let saved = Plan::from_json(&fresh.to_json()).unwrap();
    let target = saved
        .services
        .iter()
        .find(|s| s.is_applicable() && s.iam.as_ref().is_some_and(|r| r.changes.iter().any(|c| c.action != Action::Keep)))
        .unwrap()
        .clone();

    // Someone writes the service's IAM policy after the plan: stale, nothing else refused.
    let svc = live.services.get_mut(&target.service_id()).unwrap();
    svc.iam.as_mut().unwrap().etag = "moved".into();
    let moved = plan::plan(&d, &live, &PlanOptions::at(now()));
    let verified = plan::verify_saved(&saved, &moved, &live).unwrap();
    assert_eq!(verified.stale.len(), 1, "{:?}", verified.stale);
    assert_eq!(verified.stale[0].0, target.id);
    assert!(verified.stale[0].1.contains("→ moved"), "{}", verified.stale[0].1);
    assert!(verified.plan.services.iter().all(|s| s.id != target.id));

    // The file edited (a reason changed) while nothing moved: the whole apply is refused.
    let live = demo::live();
    let mut edited = saved.clone();
    let sp = edited.services.iter_mut().find(|s| s.id == target.id).unwrap();
    let change = sp.iam.as_mut().unwrap().changes.iter_mut().find(|c| c.action != Action::Keep).unwrap();
    change.reason = Reason::Foreign;
    let err = plan::verify_saved(&edited, &fresh, &live).unwrap_err();
    assert!(err.differences.iter().any(|d| d.starts_with(&target.id) && d.contains("(foreign)")), "{err}");
    assert!(err.to_string().contains("nothing was applied"), "{err}");

    // A service listed twice, or an ungoverned update-mask path, is refused too.
    let mut twice = saved.clone();
    twice.services.push(twice.services[0].clone());
    assert!(plan::verify_saved(&twice, &fresh, &live).unwrap_err().to_string().contains("listed twice"));
    let mut masked = saved.clone();
    let sp = masked.services.iter_mut().find(|s| !s.settings.is_empty()).unwrap();
    sp.settings[0].update_mask_path = "template.containers".into();
    let err = plan::verify_saved(&masked, &fresh, &live).unwrap_err().to_string();
    assert!(err.contains("(updateMask `template.containers`), which is not a setting runwarden governs"), "{err}");
}
