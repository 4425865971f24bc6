//! The live world as one pass saw it: a `LiveState` snapshot, and the concurrent, quota-aware
//! reader that builds it (`reader`, re-exported here: [`read_live`], [`Clients`], ...).
//!
//! `LiveState` is a plain value: the plan reads it and never does I/O, so everything the plan
//! needs from Google and Auth0 must be in here, already converted from wire types.

mod access;
mod reader;

pub use access::{MAX_QUERIES, read_access, read_attribution, read_setting_attribution};

pub use reader::{
    ClientConfig, Clients, ClientsError, Governance, ProgressFn, ReadConfig, ReadError,
    ReadProgress, ReadStats, Shard, directory_request, list_targets, read_live,
    read_live_with_stats,
};

// The snapshot's types live in `crate::model` (shared by the layers above and below); they are
// re-exported here so that `live::LiveState` and friends keep working for tests and benches.
pub use crate::model::{Directory, LiveService, LiveState, Role, ServiceId, ServiceSettings, User};
