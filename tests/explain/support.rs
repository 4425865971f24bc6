//! Shared set-up of the explain/import tests: the demo world on an embedded simulator, reads,
//! and a look-up of access entries.

use std::path::Path;
use std::time::SystemTime;

use runwarden::insight::explain::{AccessEntry, Explanation, Query, explain};
use runwarden::live::{LiveState, ServiceId};
use runwarden::pass::Connection;
use runwarden::policy::model::Desired;

pub use crate::common::root;

pub use crate::common::demo_world_path as demo_world;
pub use crate::common::example_policies as demo_policies;

/// The demo world on an embedded simulator.
pub async fn demo() -> (Desired, Connection) {
    let desired = demo_policies();
    let conn = Connection::embedded(&demo_world(), &desired.settings)
        .await
        .unwrap();
    (desired, conn)
}

pub async fn read_explain(desired: &Desired, conn: &Connection) -> LiveState {
    runwarden::pass::read_for_explain(desired, conn, &[], &hidden())
        .await
        .unwrap()
}

pub fn svc(text: &str) -> ServiceId {
    runwarden::insight::explain::parse_service(text).unwrap()
}

pub fn explain_service(desired: &Desired, live: &LiveState, id: &str) -> Explanation {
    explain(desired, live, &Query::Service(svc(id)), SystemTime::now()).unwrap()
}

/// The entries of `member` in the first (only) service of `x`.
pub fn entries<'a>(x: &'a Explanation, member: &str) -> Vec<&'a AccessEntry> {
    x.services[0]
        .access
        .iter()
        .filter(|a| a.member.as_str() == member)
        .collect()
}

/// Copies `from` (a file) into `dir` under the same name.
pub fn copy_into(from: &Path, dir: &Path) {
    std::fs::copy(from, dir.join(from.file_name().unwrap())).unwrap();
}

/// No progress line in tests.
pub fn hidden() -> std::sync::Arc<runwarden::progress::Progress> {
    std::sync::Arc::new(runwarden::progress::Progress::hidden())
}
