//! `runwarden check-token`: verify a JWT read from stdin against the tenant's discovery
//! document and keys, and explain why a service would refuse it.

use std::process::ExitCode;

use anyhow::{Context, bail};

use super::connect;
use crate::cli::{CheckTokenArgs, EXIT_ERROR, GlobalArgs};
use crate::pass::{load_policies, runtime};

/// `runwarden check-token [--service S] < TOKEN`: verify a JWT against the configured Auth0
/// tenant's discovery document and JWKS, explain every reason a service would refuse it, and
/// name the policies its roles match. Exit 0 when the token would be accepted, 1 otherwise.
pub(super) fn run(global: &GlobalArgs, args: &CheckTokenArgs) -> anyhow::Result<ExitCode> {
    use crate::audit::token::{Expectation, ServiceAudiences, check_token, render_text as render_report};
    use std::io::Read;
    let mut token = String::new();
    std::io::stdin().read_to_string(&mut token).context("reading the token from stdin")?;
    let token = token.trim().trim_start_matches("Bearer ").trim().to_string();
    if token.is_empty() {
        bail!("no token on stdin; pass it as `runwarden check-token < token.txt` (it is never printed)");
    }
    let Ok(desired) = load_policies(&args.policies.policies, crate::time::command_now()) else {
        return Ok(ExitCode::from(EXIT_ERROR));
    };
    let service = args.service.as_deref().map(crate::insight::explain::parse_service).transpose()?;
    let report = runtime()?.block_on(async {
        let conn = connect::open(global, &desired.settings).await?;
        let http = crate::endpoints::http_client(crate::endpoints::HttpTimeouts::default())?;
        let keys = tenant_keys(&http, &desired.settings.auth0, &token, &conn.auth0_base).await?;
        let audiences = match &service {
            Some(id) => {
                let live = crate::retry::retry(&crate::retry::RetryPolicy::default(), "services.get", || conn.clients.google.get_service(id))
                    .await
                    .with_context(|| format!("reading the service {id}"))?;
                let mut audiences: Vec<String> = live.uri.iter().cloned().collect();
                audiences.extend(live.settings.custom_audiences.iter().cloned());
                Some(ServiceAudiences { service: id.to_string(), audiences })
            }
            None => None,
        };
        let issuers = desired.settings.auth0.issuers();
        let expectation = Expectation { issuers, jwks: keys, service: audiences, now: crate::time::command_now() };
        Ok::<_, anyhow::Error>(check_token(&token, &expectation, Some(&desired)))
    })?;
    print!("{}", crate::text::visible_lines(&render_report(&report)));
    Ok(if report.accepted() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_ERROR) })
}

/// The tenant's keys, from the configured issuer the token claims, or from the first configured
/// issuer when it claims none of them (every domain of a tenant publishes the same keys): a URL
/// the token names is never fetched unless `spec.auth0.issuers` lists it.
async fn tenant_keys(
    http: &reqwest::Client,
    auth0: &crate::policy::model::Auth0Settings,
    token: &str,
    canonical_base: &reqwest::Url,
) -> anyhow::Result<jsonwebtoken::jwk::JwkSet> {
    use crate::identity::oidc::{fetch_configured, issuer_base};
    let configured = auth0.issuers();
    let claimed = crate::audit::token::claimed_issuer(token);
    let Some(issuer) = claimed.as_ref().filter(|i| configured.contains(i)).or(configured.first()) else {
        bail!("spec.auth0.issuers lists no issuer; list the issuers tokens carry, e.g. [{}]", auth0.canonical_issuer());
    };
    let base = issuer_base(issuer, &auth0.canonical_issuer(), canonical_base)
        .with_context(|| format!("the configured issuer {issuer:?} (Settings spec.auth0.issuers)"))?;
    let found = fetch_configured(http, issuer, &base, &crate::retry::RetryPolicy::default())
        .await
        .with_context(|| format!("reading the keys of the configured issuer {issuer:?}"))?;
    Ok(found.jwks)
}
