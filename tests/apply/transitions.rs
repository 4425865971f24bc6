//! Make-before-break (issue 14): every transition of a service — IAP on, IAP off, public to
//! private, an ingress change together with invoker changes — applied by the real apply against
//! the simulator, with and without the settings patch failing. From the simulator's IAM history
//! and request log the test rebuilds every state the service passed through and checks that a
//! caller allowed before and after the change was allowed in each of them.

use std::collections::BTreeSet;

use runwarden::apply::ServiceOutcome;
use runwarden::iam::Policy;
use runwarden::sim::{Writer, World};

use super::support::*;

const AGENT: &str = "serviceAccount:service-111111111111@gcp-sa-iap.iam.gserviceaccount.com";
const CONSOLE: &str = "proj-one/europe-west1/console";

/// One world: `console` in a project that never used IAP unless `iap_on`.
fn world(service: &str, faults: &str) -> World {
    let text = format!(
        r#"
projects:
  - {{id: proj-one, number: 111111111111}}
services:
  - {service}
auth0:
  domain: small.auth0.example
  managementClient: {{clientId: small-client}}
  users:
    - {{email: ann@small.example}}
    - {{email: ben@small.example}}
  roles:
    - {{name: ops, users: [ann@small.example, ben@small.example]}}
{faults}"#
    );
    World::from_yaml(&text, std::path::Path::new("transition.yaml")).unwrap()
}

fn policies(exposure: &str) -> tempfile::TempDir {
    let text = format!(
        r#"apiVersion: runwarden.dev/v1
kind: Settings
metadata: {{name: small}}
spec:
  auth0: {{domain: small.auth0.example, clientId: small-client, clientSecretEnv: RW_TEST_UNUSED}}
  principals: {{mapping: users, emailDomains: [small.example]}}
  scope: {{projects: [proj-one], regions: [europe-west1]}}
  foreignMembers: keep
  allowedRoles: [roles/run.invoker, roles/iap.httpsResourceAccessor]
  guards: {{maxRemovals: 5, maxRemovalRatio: 1.0}}
---
apiVersion: runwarden.dev/v1
kind: AccessPolicy
metadata: {{name: console}}
spec:
  mode: enforce
  services:
    - {{project: proj-one, region: europe-west1, name: console}}
  exposure: {exposure}
  invokers:
    - auth0Role: ops
"#
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policies.yaml"), text).unwrap();
    dir
}

/// The state of the service as far as access goes.
#[derive(Clone, Debug)]
struct State {
    iam: Policy,
    iap: Policy,
    iap_on: bool,
}

fn members(p: &Policy, role: &str) -> BTreeSet<String> {
    p.bindings
        .iter()
        .filter(|b| b.role == role && b.condition.is_none())
        .flat_map(|b| b.members.iter().map(|m| m.as_str().to_string()))
        .collect()
}

/// Whether `caller` gets through: behind IAP an accessor (and IAP's agent may invoke), else a
/// direct invoker or the public.
fn allowed(s: &State, caller: &str) -> bool {
    let invokers = members(&s.iam, "roles/run.invoker");
    if s.iap_on {
        members(&s.iap, "roles/iap.httpsResourceAccessor").contains(caller) && invokers.contains(AGENT)
    } else {
        invokers.contains(caller) || invokers.contains("allUsers")
    }
}

/// Runs one pass and returns the states the service passed through, in order, and the outcome.
async fn transition(service: &str, faults: &str, exposure: &str) -> (Vec<State>, ServiceOutcome) {
    let dir = policies(exposure);
    let env = Env::start(world(service, faults), load(dir.path())).await;
    let sid = id(CONSOLE);
    let h = env.handle();
    let initial_on = h.service(&sid).unwrap().iap_enabled;
    let mut state = State {
        iam: h.iam_policy(&sid).unwrap(),
        iap: h.iap_policy(&sid).unwrap(),
        iap_on: initial_on,
    };
    let (_, report) = env.pass(&config()).await;
    let outcome = report.outcomes.iter().find(|o| o.service() == CONSOLE).expect("console was applied").clone();
    // Where the settings patch landed among the IAM writes: the successful setIamPolicy calls
    // logged before the PATCH (apply waits for its operation before the next write).
    let log = h.request_log();
    let patch_at = log.iter().position(|r| r.method == "PATCH");
    let writes_before_patch = patch_at.map(|p| {
        log[..p].iter().filter(|r| r.path.ends_with(":setIamPolicy") && r.status == 200).count()
    });
    let final_on = h.service(&sid).unwrap().iap_enabled;
    let mut states = vec![state.clone()];
    let history: Vec<_> = h.history().into_iter().filter(|w| w.writer == Writer::Client).collect();
    for (i, w) in history.iter().enumerate() {
        if writes_before_patch == Some(i) {
            state.iap_on = final_on;
            states.push(state.clone());
        }
        if w.resource.contains("/iap_web/") {
            state.iap = w.after.clone();
        } else {
            state.iam = w.after.clone();
        }
        states.push(state.clone());
    }
    if state.iap_on != final_on {
        state.iap_on = final_on;
        states.push(state.clone());
    }
    (states, outcome)
}

/// No caller allowed in the first and the last state is refused in any state in between.
fn assert_nobody_locked_out(states: &[State]) {
    let (first, last) = (&states[0], &states[states.len() - 1]);
    for caller in ["user:ann@small.example", "user:ben@small.example", "user:carl@small.example"] {
        if allowed(first, caller) && allowed(last, caller) {
            for (i, s) in states.iter().enumerate() {
                assert!(allowed(s, caller), "{caller} locked out at step {i} of {}: {s:#?}", states.len());
            }
        }
    }
}

const DIRECT: &str = "{project: proj-one, region: europe-west1, name: console, iam: {bindings: [{role: roles/run.invoker, members: [user:ann@small.example, user:ben@small.example]}]}}";
const BEHIND_IAP: &str = "{project: proj-one, region: europe-west1, name: console, iapEnabled: true, iam: {bindings: [{role: roles/run.invoker, members: ['serviceAccount:service-111111111111@gcp-sa-iap.iam.gserviceaccount.com']}]}, iapIam: {bindings: [{role: roles/iap.httpsResourceAccessor, members: [user:ann@small.example, user:ben@small.example]}]}}";
const FAIL_PATCH: &str = "faults:\n  operationFailureRate: 1.0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_iap_on_creates_the_agent_grants_first_and_revokes_direct_invokers_only_after_the_patch() {
    let (states, outcome) = transition(DIRECT, "", "{ingress: all, public: false, iap: true}").await;
    assert!(matches!(outcome, ServiceOutcome::Applied { .. }), "{outcome:?}");
    let last = states.last().unwrap();
    assert!(last.iap_on && allowed(last, "user:ann@small.example"));
    assert!(!members(&last.iam, "roles/run.invoker").contains("user:ann@small.example"), "direct invokers revoked in the end");
    assert_nobody_locked_out(&states);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_switching_iap_on_fails_nobody_loses_access_and_the_report_says_what_was_left() {
    let (states, outcome) = transition(DIRECT, FAIL_PATCH, "{ingress: all, public: false, iap: true}").await;
    let ServiceOutcome::Failed { message, .. } = &outcome else { panic!("{outcome:?}") };
    assert!(message.contains("new grants written but its settings and every revoke unchanged"), "{message}");
    let last = states.last().unwrap();
    assert!(!last.iap_on);
    assert!(members(&last.iam, "roles/run.invoker").contains("user:ann@small.example"), "no revoke after a failed patch");
    assert_nobody_locked_out(&states);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_iap_off_grants_direct_invokers_first_and_removes_accessors_and_agent_after() {
    for faults in ["", FAIL_PATCH] {
        let (states, outcome) = transition(BEHIND_IAP, faults, "{ingress: all, public: false, iap: false}").await;
        assert_eq!(matches!(outcome, ServiceOutcome::Applied { .. }), faults.is_empty(), "{outcome:?}");
        let last = states.last().unwrap();
        assert_eq!(last.iap_on, !faults.is_empty());
        assert!(allowed(last, "user:ann@small.example"), "{faults}");
        assert!(members(&last.iam, "roles/run.invoker").contains("user:ann@small.example"), "direct invoker granted");
        if !faults.is_empty() {
            assert!(members(&last.iam, "roles/run.invoker").contains(AGENT), "the agent stays while IAP is on");
        }
        assert_nobody_locked_out(&states);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_to_private_and_an_ingress_change_with_invoker_changes_lock_nobody_out() {
    let public = "{project: proj-one, region: europe-west1, name: console, iam: {bindings: [{role: roles/run.invoker, members: [allUsers, user:ann@small.example]}]}}";
    let mixed = "{project: proj-one, region: europe-west1, name: console, iam: {bindings: [{role: roles/run.invoker, members: [user:ann@small.example, user:carl@small.example]}]}}";
    for (service, exposure) in [
        (public, "{ingress: all, public: false, iap: false}"),
        (mixed, "{ingress: internal-and-cloud-load-balancing, public: false, iap: false}"),
    ] {
        for faults in ["", FAIL_PATCH] {
            let (states, outcome) = transition(service, faults, exposure).await;
            let last = states.last().unwrap();
            assert!(allowed(last, "user:ben@small.example"), "{service} {faults}: ben granted ({outcome:?})");
            assert_nobody_locked_out(&states);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_to_an_iap_agent_google_has_not_created_is_refused_in_googles_shape() {
    let env = Env::start(world(DIRECT, ""), load(policies("{ingress: all, public: false, iap: true}").path())).await;
    let sid = id(CONSOLE);
    let mut policy = env.handle().iam_policy(&sid).unwrap();
    policy.bindings[0].members.insert(runwarden::iam::Member::parse(AGENT).unwrap());
    let err = env.clients.google.set_iam_policy(&sid, &policy).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("HTTP 400 INVALID_ARGUMENT") && text.contains("does not exist"), "{text}");
    // After Service Usage generateServiceIdentity the same grant is accepted.
    let op = env.clients.google.generate_iap_identity(111111111111).await.unwrap();
    assert!(op.done && op.error.is_none(), "{op:?}");
    env.clients.google.set_iam_policy(&sid, &policy).await.unwrap();
}

/// The failure message of a pass over a world whose credential lacks `permission`.
async fn failure_without(permission: &str, service: &str, exposure: &str) -> (Vec<State>, String) {
    let lacking = format!("simulator: {{missingPermissions: [{permission}]}}");
    let (states, outcome) = transition(service, &lacking, exposure).await;
    let ServiceOutcome::Failed { message, .. } = outcome else { panic!("{permission}: {outcome:?}") };
    (states, message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_write_refused_for_a_missing_permission_names_that_permission_and_locks_nobody_out() {
    let iap_on = "{ingress: all, public: false, iap: true}";
    for (permission, service, exposure) in [
        ("run.services.setIamPolicy", DIRECT, iap_on),
        ("iap.webServices.setIamPolicy", DIRECT, iap_on),
        ("serviceusage.services.use", DIRECT, iap_on),
        ("run.services.update", DIRECT, iap_on),
        (
            "run.services.create",
            "{project: proj-one, region: europe-west1, name: console, invokerIamDisabled: true}",
            "{ingress: all, public: false, iap: false}",
        ),
    ] {
        let (states, message) = failure_without(permission, service, exposure).await;
        assert!(message.contains(&format!("needs {permission}")) || message.contains(&format!("needs run.services.update on the service and iam.serviceAccounts.actAs on its runtime service account, plus {permission}")),
            "{permission}: the hint names it: {message}");
        assert!(message.contains(&format!("Permission '{permission}' denied")), "{permission}: Google's words: {message}");
        assert!(message.contains("the service was left"), "{permission}: the state is reported: {message}");
        assert!(!states.last().unwrap().iap_on, "{permission}: IAP stays off");
        assert_nobody_locked_out(&states);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_that_would_take_a_policy_over_250_groups_is_never_sent() {
    let groups: Vec<String> = (0..250).map(|i| format!("group:g{i:03}@partner.example")).collect();
    let service = format!(
        "{{project: proj-one, region: europe-west1, name: console, iam: {{bindings: [{{role: roles/run.invoker, members: [{}]}}]}}}}",
        groups.join(", ")
    );
    let dir = policies("{ingress: all, public: false, iap: false}");
    let file = dir.path().join("policies.yaml");
    let text = std::fs::read_to_string(&file).unwrap() + "    - member: group:ops@small.example\n";
    std::fs::write(&file, text).unwrap();
    let env = Env::start(world(&service, ""), load(dir.path())).await;
    let plan = env.plan(&env.read().await);
    assert!(plan.findings.iter().any(|f| f.code == "policy-too-many-groups"), "{:?}", plan.findings);
    let (_, report) = env.pass(&config()).await;
    let failed = report.outcomes.iter().find(|o| o.service() == CONSOLE).expect("console");
    let ServiceOutcome::Failed { message, .. } = failed else { panic!("{failed:?}") };
    assert!(message.contains("251 groups and domains"), "{message}");
    assert!(env.handle().history().iter().all(|w| w.writer != Writer::Client), "nothing was written");
}
