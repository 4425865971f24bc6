//! runwarden: declarative, reviewable access to Google Cloud Run services for people who sign in
//! with Auth0.
//!
//! A pass loads the policy files into a validated [`policy::model::Desired`], reads the live world
//! into a [`model::LiveState`], computes a [`plan`] (a pure function of the two), guards it, and
//! applies it. See `README.md` (Architecture) for the code map and the invariants.
//!
//! Layout, by layer (README "Architecture": a module imports only its own layer or below, and
//! `cmd::layering` enforces it):
//! 1. [`cli`]: command-line definitions and parsing; [`cmd`]: one file per command.
//! 2. [`pass`]: where calls go, policy load, the live read, the loop's pass; [`reconcile`]: the
//!    long-running loop, its HTTP status endpoint; [`apply`]: executes a plan with etag
//!    read-modify-write and conflict re-planning.
//! 3. [`plan`]: `plan(&Desired, &LiveState) -> Plan`, guards, renderers; [`insight`]: `explain`
//!    and `import`; [`audit`]: Auth0 hygiene findings and token checks.
//! 4. [`live`]: the concurrent, quota-aware reader; [`google`]: Cloud Run Admin v2, IAP and
//!    Resource Manager clients; [`identity`]: the Auth0 Management API client, the directory
//!    read, OIDC discovery and JWKS; [`retry`]: the one place calls are retried and paced;
//!    [`endpoints`]: base URLs of every API.
//! 5. [`model`]: plain values shared by the layers (`ServiceId`, `LiveState`, `Directory`, ...);
//!    [`iam`]: members, roles, conditions, bindings, policies; [`policy`]: policy files → the
//!    validated desired model; [`published`]: policies published at a commit; [`time`],
//!    [`text`], [`files`], [`metrics`], [`logging`], [`progress`]: small utilities.
//!
//! `sim` (Cargo feature `sim`, on by default): the simulated Google and Auth0 APIs used by tests,
//! benchmarks, `sim`, `demo` and `--sim`; only the command layer imports it.

pub mod apply;
pub mod audit;
pub mod cli;
pub mod cmd;
pub mod endpoints;
pub mod files;
pub mod google;
pub mod iam;
pub mod identity;
pub mod insight;
pub mod live;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod plan;
pub mod policy;
pub mod pass;
pub mod published;
pub mod rate;
pub mod progress;
pub mod reconcile;
pub mod retry;
pub mod text;
pub mod time;
#[cfg(feature = "sim")]
pub mod sim;
