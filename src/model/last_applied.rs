//! The last-applied record: what runwarden granted on a service, kept on the service itself in
//! the annotation [`LAST_APPLIED_ANNOTATION`] (the way `kubectl apply` keeps
//! `kubectl.kubernetes.io/last-applied-configuration`), so a member a policy line granted is
//! still known as runwarden's after the line is deleted, with no state file.
//!
//! Format (compact JSON, keys sorted, one entry per granted member of an unconditional binding):
//!
//! ```json
//! {"v":1,"grants":{"roles/run.invoker":{"user:bob@partner.example":"3f2a9c1"}}}
//! ```
//!
//! The value of each member is the revision of the policies that first granted it. Members the
//! principal mapping produces are not recorded (runwarden owns them anyway), which keeps the
//! record small. Cloud Run v2 `annotations` follow Kubernetes' limits (run.v2.json,
//! `GoogleCloudRunV2Service.annotations`): 256 KiB for all annotations of a service together.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The annotation key. Cloud Run v2 rejects the `run.googleapis.com`, `cloud.googleapis.com`,
/// `serving.knative.dev` and `autoscaling.knative.dev` namespaces (run.v2.json), not this one.
pub const LAST_APPLIED_ANNOTATION: &str = "runwarden.dev/last-applied";

/// All annotations of one object together, keys and values (Kubernetes
/// `TotalAnnotationSizeLimitB`, which run.v2.json says Cloud Run's annotations follow).
pub const ANNOTATIONS_LIMIT_BYTES: usize = 256 * 1024;

/// The record: role → member → revision that granted it (`None` until apply stamps it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LastApplied {
    pub grants: BTreeMap<String, BTreeMap<String, Option<String>>>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    v: u32,
    grants: BTreeMap<String, BTreeMap<String, String>>,
}

impl LastApplied {
    /// Reads an annotation value. Anything but version 1 of the format is an error (the caller
    /// then ignores the record: members it would have named stay foreign, the safe side).
    pub fn decode(text: &str) -> Result<LastApplied, String> {
        let w: Wire = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if w.v != 1 {
            return Err(format!("format version {} is not 1", w.v));
        }
        let grants = w
            .grants
            .into_iter()
            .map(|(role, ms)| {
                let ms = ms
                    .into_iter()
                    .map(|(m, rev)| (m, Some(rev).filter(|r| !r.is_empty())))
                    .collect();
                (role, ms)
            })
            .collect();
        Ok(LastApplied { grants })
    }

    /// The annotation value, each unstamped entry stamped with `revision`.
    pub fn encode(&self, revision: &str) -> String {
        let grants = self
            .grants
            .iter()
            .filter(|(_, ms)| !ms.is_empty())
            .map(|(role, ms)| {
                let ms = ms
                    .iter()
                    .map(|(m, r)| (m.clone(), r.clone().unwrap_or_else(|| revision.to_string())))
                    .collect();
                (role.clone(), ms)
            })
            .collect();
        serde_json::to_string(&Wire { v: 1, grants }).expect("a map of strings serializes")
    }

    /// Whether runwarden recorded granting `member` `role`, and at which revision.
    pub fn granted(&self, role: &str, member: &str) -> Option<Option<&str>> {
        self.grants
            .get(role)?
            .get(member)
            .map(|r| r.as_deref())
    }

    /// Every (role, member) the record lists.
    pub fn members(&self) -> std::collections::BTreeSet<(&str, &str)> {
        self.grants.iter().flat_map(|(role, ms)| ms.keys().map(move |m| (role.as_str(), m.as_str()))).collect()
    }

    /// Records `member` as granted `role`; an existing entry keeps its revision.
    pub fn insert(&mut self, role: &str, member: &str, revision: Option<String>) {
        self.grants
            .entry(role.to_string())
            .or_default()
            .entry(member.to_string())
            .or_insert(revision);
    }
}

/// The annotations to write: `others` (every annotation as read, carried over untouched) with
/// the record replaced; `Err` with the size when they would pass [`ANNOTATIONS_LIMIT_BYTES`].
pub fn annotations_with(
    others: &BTreeMap<String, String>,
    record: &str,
) -> Result<BTreeMap<String, String>, usize> {
    let mut all = others.clone();
    all.insert(LAST_APPLIED_ANNOTATION.to_string(), record.to_string());
    let size: usize = all.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > ANNOTATIONS_LIMIT_BYTES {
        return Err(size);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_keeps_the_revision_that_first_granted_a_member() {
        let mut r = LastApplied::default();
        r.insert("roles/run.invoker", "user:bob@partner.example", Some("abc".into()));
        r.insert("roles/run.invoker", "user:bob@partner.example", None);
        r.insert("roles/run.invoker", "user:eve@partner.example", None);
        let text = r.encode("def");
        assert_eq!(
            text,
            r#"{"v":1,"grants":{"roles/run.invoker":{"user:bob@partner.example":"abc","user:eve@partner.example":"def"}}}"#
        );
        let back = LastApplied::decode(&text).unwrap();
        assert_eq!(back.granted("roles/run.invoker", "user:eve@partner.example"), Some(Some("def")));
        assert_eq!(back.granted("roles/run.invoker", "user:mallory@partner.example"), None);
    }

    #[test]
    fn an_edited_or_foreign_record_is_an_error_never_a_panic() {
        for text in ["", "{", "[]", r#"{"v":2,"grants":{}}"#, r#"{"v":1,"grants":{"r":["m"]}}"#, r#"{"v":1}"#] {
            assert!(LastApplied::decode(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn annotations_over_the_kubernetes_limit_are_refused() {
        let others: BTreeMap<String, String> =
            [("big".to_string(), "x".repeat(ANNOTATIONS_LIMIT_BYTES))].into();
        assert!(annotations_with(&others, "{}").is_err());
        assert!(annotations_with(&BTreeMap::new(), "{}").is_ok());
    }
}
