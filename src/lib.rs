//! runwarden: declarative, reviewable access to Google Cloud Run services for people who sign in
//! with Auth0.
//!
//! A pass loads the policy files into a validated [`policy::model::Desired`], reads the live world
//! into a [`live::LiveState`], computes a [`plan`] (a pure function of the two), guards it, and
//! applies it. See `README.md` (Architecture) for the code map and the invariants.
//!
//! Layout:
//! * [`cli`]: command-line definitions and dispatch only.
//! * [`commands`]: `plan`, `apply`, `run` and `demo`, wired from the parts below.
//! * [`pass`]: where calls go (real APIs, `--endpoint`, embedded `--sim`), policy load, live read.
//! * [`published`]: policies published at a commit (`CURRENT`, `REVISION`): which files, which commit.
//! * [`iam`]: members, roles, conditions, bindings and policies as plain values.
//! * [`policy`]: policy files → validated desired model, with file:line:col errors; JSON Schemas.
//! * [`google`]: Cloud Run Admin v2, IAP and Resource Manager clients (wire types stay inside).
//! * [`identity`]: the Auth0 Management API client and the per-pass directory read.
//! * [`live`]: the `LiveState` snapshot and the concurrent, quota-aware reader.
//! * [`plan`]: `plan(&Desired, &LiveState) -> Plan`, guards, and the text/Markdown/JSON renderers.
//! * [`apply`]: executes a plan with etag read-modify-write and conflict re-planning.
//! * [`reconcile`]: the long-running loop, its HTTP status endpoint and metrics.
//! * [`audit`]: Auth0 hygiene findings and token checks.
//! * [`insight`]: `explain` (who can invoke what, and why) and `import` (policies from live).
//! * [`sim`]: the simulated Google and Auth0 APIs used by tests, benchmarks, `sim` and `demo`.
//! * [`progress`]: the progress line of long passes on a terminal.
//! * [`logging`]: tracing setup (text or Cloud Logging JSON).
//! * [`metrics`]: counters and gauges in the Prometheus text format.
//! * [`endpoints`]: base URLs of every API (production, or one override; http only on loopback).
//! * [`files`]: reading outside files (policies, worlds, saved plans) with a size limit.
//! * [`text`]: untrusted strings made visible (`\u{202e}`) and escaped for Markdown and HTML.
//! * [`time`]: RFC 3339 and calendar conversions (the one place dates are handled).
//! * [`retry`]: the one place calls are retried (backoff, jitter, server waits) and paced.

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
pub mod progress;
pub mod reconcile;
pub mod retry;
pub mod text;
pub mod time;
#[cfg(feature = "sim")]
pub mod sim;
