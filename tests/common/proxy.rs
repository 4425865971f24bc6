//! A proxy in front of the simulator that denies one path with Google's 403, for the tests of a
//! permission error on one service or on every IAM read (the simulator has no per-resource
//! denial). A thin use of the fault proxy in `hostile.rs`: one rule, everything else forwarded.

use super::hostile::{Hostile, Rule};

/// A running proxy: its base URL and how often the denied path was asked for.
pub struct Denying {
    pub base_url: String,
    proxy: Hostile,
}

impl Denying {
    pub fn denied_hits(&self) -> usize {
        self.proxy.requests().iter().filter(|s| s.faulted).count()
    }
}

/// Starts a proxy to `upstream` that answers `denied_path` with 403 PERMISSION_DENIED
/// (`*:getIamPolicy`: every path ending with `:getIamPolicy`).
pub async fn deny(upstream: &str, denied_path: &str) -> Denying {
    let proxy = Hostile::start(upstream).await;
    let rule = match denied_path.strip_prefix('*') {
        // The suffixes used (`:getIamPolicy`) stand nowhere else in a path.
        Some(suffix) => Rule::path_contains(suffix),
        None => Rule::path_exact(denied_path),
    };
    let body = serde_json::json!({"error": {
        "code": 403,
        "message": format!("Permission 'run.services.getIamPolicy' denied on resource '{denied_path}'"),
        "status": "PERMISSION_DENIED",
    }});
    proxy.add(rule.json(403, body));
    Denying { base_url: proxy.base_url.clone(), proxy }
}
