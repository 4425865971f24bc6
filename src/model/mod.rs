//! Shared vocabulary: plain values that several layers exchange (a service's id and live
//! settings, the snapshot of a pass, the Auth0 directory and tenant settings). No I/O and no
//! import of the I/O layers: `live/`, `google/` and `identity/` build these values, `plan/`,
//! `insight/` and `audit/` read them.

mod access;
mod directory;
mod last_applied;
mod service;
mod tenant;

pub use access::{AccessFacts, AddedBinding, Ancestry, ancestor_label, Attribution, Attributions, INVOKE_PERMISSION, SetSetting, SettingAttributions};
pub use directory::{Directory, Role, User};
pub use last_applied::{
    ANNOTATIONS_LIMIT_BYTES, LAST_APPLIED_ANNOTATION, LastApplied, annotations_with,
};
pub use service::{LiveService, LiveState, ServiceId, ServiceSettings};
pub use tenant::{AccessPolicy, Organizations, ResourceServer, SigningKey};
