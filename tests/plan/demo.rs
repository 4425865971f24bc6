//! The demo estate of the common brief (`policies/` + `deploy/local/world.yaml`), built directly
//! as `Desired` + `LiveState` values, with the deliberate drift the demo plan should show:
//! a leaver still bound on billing-api, `allUsers` on billing-worker, a hand-added foreign
//! contractor on billing-api, payments-api ingress `all`, admin-console IAP off and its IAP
//! service-agent binding missing, and an ungoverned sandbox in staging.

use runwarden::iam::{IAP_ACCESSOR, RUN_INVOKER};
use runwarden::live::LiveState;
use runwarden::policy::model::{Desired, Ingress, Mode};

use super::builders::desired as builders_desired;
use super::builders::*;

pub const BILLING_API: &str = "acme-prod/europe-west1/billing-api";
pub const BILLING_WORKER: &str = "acme-prod/europe-west1/billing-worker";
pub const BILLING_REPORTS: &str = "acme-prod/us-central1/billing-reports";
pub const PAYMENTS_API: &str = "acme-prod/europe-west1/payments-api";
pub const ADMIN_CONSOLE: &str = "acme-prod/europe-west1/admin-console";
pub const STATUS_PAGE: &str = "acme-prod/us-central1/status-page";
pub const STAGING_BILLING: &str = "acme-staging/europe-west1/billing-api";
pub const SANDBOX: &str = "acme-staging/europe-west1/sandbox";

const ONCALL_UNTIL: &str = "2027-01-31T00:00:00Z";
const ONCALL_TITLE: &str = "runwarden-expires-2027-01-31T00:00:00Z";
const ONCALL_EXPR: &str = "request.time < timestamp(\"2027-01-31T00:00:00Z\")";
const INVOICER: &str = "serviceAccount:invoicer@acme-prod.iam.gserviceaccount.com";
const LEDGER: &str = "serviceAccount:ledger-sync@acme-prod.iam.gserviceaccount.com";

pub fn desired() -> Desired {
    let mut s = settings();
    s.audits.require_coverage = true;
    builders_desired(
        s,
        vec![
            policy("billing")
                .service(BILLING_API)
                .selector("acme-prod", "*", &[("team", "billing")])
                .ingress(Ingress::InternalAndCloudLoadBalancing)
                .public(false)
                .audiences(&["https://billing.acme.com"])
                .role("billing-admin")
                .role_until("billing-oncall", ONCALL_UNTIL)
                .member(INVOICER),
            policy("payments")
                .service(PAYMENTS_API)
                .ingress(Ingress::Internal)
                .public(false)
                .role("payments-engineer")
                .machine("ledger-sync"),
            policy("platform-console")
                .file("policies/teams/platform.yaml")
                .service(ADMIN_CONSOLE)
                .iap(true)
                .ingress(Ingress::All)
                .public(false)
                .role("platform-admin"),
            policy("platform-status")
                .file("policies/teams/platform.yaml")
                .service(STATUS_PAGE)
                .public(true)
                .ingress(Ingress::All),
            policy("staging")
                .mode(Mode::Observe)
                .selector("acme-staging", "europe-west1", &[("team", "billing")])
                .public(false)
                .role("billing-admin"),
        ],
    )
}

pub fn live() -> LiveState {
    let billing_audience = |s: &mut runwarden::live::LiveService| {
        s.settings.ingress = Some(Ingress::InternalAndCloudLoadBalancing);
        s.settings.custom_audiences = vec!["https://billing.acme.com".into()];
    };
    world()
        // Auth0: margaret holds billing-admin through the billing-team group; ken's e-mail is
        // unverified; bob is outside the allowed domain.
        .role(
            "billing-admin",
            &[
                ("auth0|ada", "ada@acme.com", true),
                ("auth0|margaret", "margaret@acme.com", true),
            ],
        )
        .role(
            "billing-oncall",
            &[
                ("auth0|grace", "grace@acme.com", true),
                ("auth0|ken", "ken@acme.com", false),
            ],
        )
        .role(
            "payments-engineer",
            &[
                ("auth0|linus", "linus@acme.com", true),
                ("auth0|bob", "bob@partner.example", true),
            ],
        )
        .role(
            "platform-admin",
            &[
                ("auth0|ada", "ada@acme.com", true),
                ("auth0|linus", "linus@acme.com", true),
            ],
        )
        .role("contractors", &[("auth0|bob", "bob@partner.example", true)])
        // billing-api: a leaver and a hand-added contractor.
        .svc(BILLING_API, &[("team", "billing")])
        .with(BILLING_API, billing_audience)
        .bind(
            BILLING_API,
            RUN_INVOKER,
            &[
                "user:ada@acme.com",
                "user:margaret@acme.com",
                "user:leaver@acme.com",
                "user:contractor@partner.example",
                INVOICER,
            ],
        )
        .bind_if(
            BILLING_API,
            RUN_INVOKER,
            ONCALL_TITLE,
            ONCALL_EXPR,
            &["user:grace@acme.com"],
        )
        // billing-worker: allUsers.
        .svc(BILLING_WORKER, &[("team", "billing")])
        .with(BILLING_WORKER, billing_audience)
        .bind(
            BILLING_WORKER,
            RUN_INVOKER,
            &[
                "allUsers",
                "user:ada@acme.com",
                "user:margaret@acme.com",
                INVOICER,
            ],
        )
        .bind_if(
            BILLING_WORKER,
            RUN_INVOKER,
            ONCALL_TITLE,
            ONCALL_EXPR,
            &["user:grace@acme.com"],
        )
        // billing-reports: in sync.
        .svc(BILLING_REPORTS, &[("team", "billing")])
        .with(BILLING_REPORTS, billing_audience)
        .bind(
            BILLING_REPORTS,
            RUN_INVOKER,
            &["user:ada@acme.com", "user:margaret@acme.com", INVOICER],
        )
        .bind_if(
            BILLING_REPORTS,
            RUN_INVOKER,
            ONCALL_TITLE,
            ONCALL_EXPR,
            &["user:grace@acme.com"],
        )
        // payments-api: ingress all although the policy says internal.
        .svc(PAYMENTS_API, &[("team", "payments")])
        .bind(PAYMENTS_API, RUN_INVOKER, &["user:linus@acme.com", LEDGER])
        // admin-console: IAP off, service agent binding missing, a break-glass invoker.
        .svc(ADMIN_CONSOLE, &[("team", "platform")])
        .bind(ADMIN_CONSOLE, RUN_INVOKER, &["user:break-glass@acme.com"])
        .iap_bind(
            ADMIN_CONSOLE,
            IAP_ACCESSOR,
            &["user:ada@acme.com", "user:linus@acme.com"],
        )
        // status-page: public, in sync.
        .svc(STATUS_PAGE, &[("team", "platform")])
        .bind(STATUS_PAGE, RUN_INVOKER, &["allUsers"])
        // staging: observed; margaret is missing there.
        .svc(STAGING_BILLING, &[("team", "billing")])
        .bind(STAGING_BILLING, RUN_INVOKER, &["user:ada@acme.com"])
        // sandbox: governed by no policy.
        .svc(SANDBOX, &[("team", "research")])
        .with(SANDBOX, |s| s.iam = None)
        .build()
}
