//! The plan: a pure diff of the desired model against a live snapshot, the guards that decide
//! whether a plan may be applied, and its three renderings.
//!
//! * [`engine`]: `plan(&Desired, &LiveState, &PlanOptions) -> Plan`: no I/O, no clock reads,
//!   cannot fail on live data (problems become findings).
//! * [`model`]: the `Plan` value, which is also the saved-plan format (`formatVersion: 3`).
//! * [`guards`]: `check_guards(&Plan, &Settings, allow_removals) -> Vec<GuardTrip>`.
//! * [`catalogue`]: every finding code with its severity and fix.
//! * [`render`]: text (Terraform-like), Markdown (PR comment, capped), JSON.
//! * [`simulate`]: `apply_to(&Plan, &LiveState) -> LiveState`, the plan applied in memory.
//! * [`verify`]: `verify_saved(&saved, &fresh, &LiveState)`: what of a saved plan may be applied.

pub mod catalogue;
pub mod engine;
pub mod guards;
pub mod model;
pub mod render;
pub mod rules;
pub mod simulate;
pub mod verify;
mod time;

pub use engine::{
    MANAGED_CONDITION_PREFIX, PlanOptions, expiry_condition, iap_service_agent,
    is_managed_condition, plan, replan_service, Replanner,
};
pub use guards::{GuardKind, GuardTrip, HeldUnit, check_guards, hold_tripped_units};
pub use model::*;
pub use render::{write_text, MARKDOWN_LIMIT, render_comment, render_guard_note, render_json, render_markdown, render_text};
pub use simulate::{apply_changes, apply_to};
pub use verify::{GOVERNED_SETTINGS, PlanMismatch, VerifiedPlan, is_governed_setting, verify_saved};
pub use time::{format_rfc3339, parse_rfc3339};
