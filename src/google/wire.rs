//! Google's JSON, exactly as the discovery documents describe it, and the hand-written
//! conversions to runwarden's domain types. Nothing outside `google` sees these structs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Deserialize;

use crate::iam::{Binding, Condition, Member, Policy};
use crate::model::{LiveService, ServiceId, ServiceSettings};
use crate::policy::model::Ingress;

/// `GoogleCloudRunV2Service`, the fields runwarden reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Service {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// A string map (run.v2.json `GoogleCloudRunV2Service.annotations`).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub ingress: Option<String>,
    #[serde(default)]
    pub invoker_iam_disabled: bool,
    #[serde(default)]
    pub custom_audiences: Vec<String>,
    #[serde(default)]
    pub iap_enabled: bool,
    #[serde(default)]
    pub etag: String,
    #[serde(default)]
    pub uri: Option<String>,
}

/// `GoogleCloudRunV2ListServicesResponse`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ListServicesResponse {
    #[serde(default)]
    pub services: Vec<Service>,
    #[serde(default)]
    pub next_page_token: Option<String>,
    #[serde(default)]
    pub unreachable: Vec<String>,
}

/// `GoogleIamV1Policy` (Cloud Run) and `Policy` (IAP): the same shape. An empty policy is just
/// `{"etag": "ACAB"}`: Google always returns an etag (the discovery documents describe `etag`
/// as what `setIamPolicy` must send back for read-modify-write), so an answer without one is
/// not a policy runwarden can change safely (see [`read_policy`]).
#[derive(Debug, Deserialize)]
pub(super) struct IamPolicy {
    #[serde(default)]
    pub version: u32,
    #[serde(default)]
    pub etag: Option<String>,
    #[serde(default)]
    pub bindings: Vec<IamBinding>,
}

/// Why a `getIamPolicy` answer is not a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum PolicyAnswer {
    /// The answer has no `etag` (or an empty one): `{}`, `[]`, a policy with bindings only.
    NoEtag,
    /// Anything else odd (not a JSON object, an unparseable member).
    Invalid(String),
}

#[derive(Debug, Deserialize)]
pub(super) struct IamBinding {
    pub role: String,
    #[serde(default)]
    pub members: Vec<String>,
    #[serde(default)]
    pub condition: Option<Expr>,
}

/// `GoogleTypeExpr`.
#[derive(Debug, Deserialize)]
pub(super) struct Expr {
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub expression: String,
}

/// Resource Manager v3 `Project`; `name` is `projects/NUMBER`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Project {
    pub name: String,
    /// `folders/N` or `organizations/N`; absent for a project outside any organization.
    #[serde(default)]
    pub parent: Option<String>,
}

/// The `parent` of a Resource Manager v3 `Project` or `Folder` (`folders/N` or
/// `organizations/N`; absent for a project outside any organization).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Parented {
    #[serde(default)]
    pub parent: Option<String>,
}

/// `{"error": {"code", "message", "status", "details"}}`.
#[derive(Debug, Deserialize)]
pub(super) struct ErrorBody {
    pub error: ErrorStatus,
}

#[derive(Debug, Deserialize)]
pub(super) struct ErrorStatus {
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub details: Vec<serde_json::Value>,
}

impl ErrorStatus {
    /// `google.rpc.RetryInfo.retryDelay` ("30s", "1.5s"), when present.
    pub fn retry_delay(&self) -> Option<Duration> {
        self.details.iter().find_map(|d| {
            let ty = d.get("@type")?.as_str()?;
            if !ty.ends_with("google.rpc.RetryInfo") {
                return None;
            }
            // A `google.protobuf.Duration` in JSON: decimal seconds with an `s` suffix. Any
            // number parses ("1e20s"); the wait is clamped, never trusted to fit.
            let text = d.get("retryDelay")?.as_str()?;
            let secs: f64 = text.strip_suffix('s')?.parse().ok()?;
            crate::retry::wait_from_secs_f64(secs)
        })
    }

    /// `google.rpc.ErrorInfo.reason` values, e.g. `RATE_LIMIT_EXCEEDED`.
    pub fn reasons(&self) -> impl Iterator<Item = &str> {
        self.details
            .iter()
            .filter_map(|d| d.get("reason")?.as_str())
    }
}

/// Converts one listed or fetched service; `project` and `region` are the ones asked for (the
/// API may name the project by number in `name`).
pub(super) fn service(project: &str, region: &str, s: Service) -> Result<LiveService, String> {
    let name = s
        .name
        .rsplit_once("/services/")
        .map(|(_, n)| n.to_string())
        .filter(|n| !n.is_empty() && !n.contains('/'))
        .ok_or_else(|| {
            format!(
                "service name {:?} is not projects/P/locations/R/services/S",
                s.name
            )
        })?;
    Ok(LiveService {
        id: ServiceId::new(project, region, &name),
        labels: s.labels,
        annotations: s.annotations,
        settings: ServiceSettings {
            ingress: s.ingress.as_deref().and_then(Ingress::from_api_value),
            invoker_iam_disabled: s.invoker_iam_disabled,
            custom_audiences: s.custom_audiences,
            iap_enabled: s.iap_enabled,
        },
        etag: s.etag,
        uri: s.uri.filter(|u| !u.is_empty()),
        iam: None,
        iap_iam: None,
        read_error: None,
    })
}

/// Converts a `getIamPolicy` answer. Only a JSON object with a non-empty `etag` is a policy:
/// serde would otherwise read `[]` or `{}` as an empty policy, and a `setIamPolicy` without
/// the etag is an unconditional overwrite of every binding. reference/google/run.v2.json and
/// iap.v1.json, `etag`: "An `etag` is returned in the response to `getIamPolicy`, and systems
/// are expected to put that etag in the request to `setIamPolicy`".
pub(super) fn read_policy(answer: serde_json::Value) -> Result<Policy, PolicyAnswer> {
    if !answer.is_object() {
        return Err(PolicyAnswer::Invalid(format!(
            "an IAM policy is a JSON object, the answer is {}",
            json_kind(&answer)
        )));
    }
    let p: IamPolicy = serde_json::from_value(answer)
        .map_err(|e| PolicyAnswer::Invalid(format!("invalid IAM policy: {e}")))?;
    if p.etag.as_deref().is_none_or(str::is_empty) {
        return Err(PolicyAnswer::NoEtag);
    }
    policy(p).map_err(PolicyAnswer::Invalid)
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Converts an IAM policy. A member that runwarden cannot parse makes the whole policy
/// unreadable: writing back a policy with that member dropped would silently revoke it. The
/// etag may be missing only in a `setIamPolicy` answer (the write has landed by then; the etag
/// only names the new revision in audit events).
pub(super) fn policy(p: IamPolicy) -> Result<Policy, String> {
    let mut bindings = Vec::with_capacity(p.bindings.len());
    for b in p.bindings {
        // A member in a form runwarden does not know is kept opaque (a foreign member), never a
        // reason to leave the whole policy unread; an empty one is not a member at all.
        if b.members.iter().any(|m| m.is_empty()) {
            return Err(format!("binding {}: an empty member", b.role));
        }
        let members: BTreeSet<Member> = b.members.iter().map(|m| Member::read(m)).collect();
        let condition = b.condition.map(|c| Condition {
            title: c.title,
            description: c.description.filter(|d| !d.is_empty()),
            expression: c.expression,
        });
        bindings.push(Binding {
            role: b.role,
            members,
            condition,
        });
    }
    Ok(Policy {
        version: p.version,
        etag: p.etag.unwrap_or_default(),
        bindings,
    })
}

/// The number in `projects/NUMBER`.
pub(super) fn project_number(p: &Project) -> Result<u64, String> {
    p.name
        .strip_prefix("projects/")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("project name {:?} is not projects/NUMBER", p.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<T: serde::de::DeserializeOwned>(json: &str) -> T {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn converts_a_listed_service_with_every_field_runwarden_reads() {
        let s: Service = parse(
            r#"{"name":"projects/acme-prod/locations/europe-west1/services/billing-api",
                "uid":"u","generation":"7","labels":{"team":"billing"},
                "ingress":"INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER","invokerIamDisabled":false,
                "customAudiences":["https://billing.acme.com"],"iapEnabled":true,
                "etag":"\"abc\"","uri":"https://billing-api-xyz-ew.a.run.app",
                "template":{"containers":[{"image":"x"}]}}"#,
        );
        let live = service("acme-prod", "europe-west1", s).unwrap();
        assert_eq!(
            live.id,
            ServiceId::new("acme-prod", "europe-west1", "billing-api")
        );
        assert_eq!(live.labels.get("team").map(String::as_str), Some("billing"));
        assert_eq!(
            live.settings.ingress,
            Some(Ingress::InternalAndCloudLoadBalancing)
        );
        assert!(live.settings.iap_enabled && !live.settings.invoker_iam_disabled);
        assert_eq!(
            live.settings.custom_audiences,
            vec!["https://billing.acme.com".to_string()]
        );
        assert_eq!(live.etag, "\"abc\"");
        assert_eq!(
            live.uri.as_deref(),
            Some("https://billing-api-xyz-ew.a.run.app")
        );
        assert!(live.iam.is_none() && live.iap_iam.is_none() && live.read_error.is_none());
    }

    #[test]
    fn unspecified_ingress_and_missing_fields_read_as_defaults() {
        let s: Service = parse(
            r#"{"name":"projects/123/locations/us-central1/services/s","ingress":"INGRESS_TRAFFIC_UNSPECIFIED"}"#,
        );
        let live = service("acme-prod", "us-central1", s).unwrap();
        assert_eq!(
            live.id.project, "acme-prod",
            "the project asked for wins over the number"
        );
        assert_eq!(live.settings, ServiceSettings::default());
        assert!(live.labels.is_empty() && live.uri.is_none());
        let bad: Service = parse(r#"{"name":"services/"}"#);
        assert!(service("p", "r", bad).is_err());
    }

    #[test]
    fn the_last_page_has_no_next_page_token() {
        let last: ListServicesResponse = parse(r#"{"services":[]}"#);
        assert!(last.next_page_token.is_none());
        let empty: ListServicesResponse = parse("{}");
        assert!(empty.services.is_empty());
        let more: ListServicesResponse = parse(r#"{"services":[],"nextPageToken":"t2"}"#);
        assert_eq!(more.next_page_token.as_deref(), Some("t2"));
    }

    #[test]
    fn an_empty_policy_reads_as_version_0_with_only_an_etag() {
        let p = read_policy(parse(r#"{"etag":"ACAB"}"#)).unwrap();
        assert_eq!(
            p,
            Policy {
                version: 0,
                etag: "ACAB".into(),
                bindings: vec![]
            }
        );
    }

    #[test]
    fn converts_conditional_bindings_at_version_3() {
        let p = policy(parse(
            r#"{"version":3,"etag":"BwX=","bindings":[
                {"role":"roles/run.invoker","members":["user:ada@acme.com","allUsers"]},
                {"role":"roles/run.invoker","members":["user:ken@acme.com"],
                 "condition":{"title":"runwarden-expires-2027-01-31","expression":"request.time < timestamp('2027-01-31T00:00:00Z')"}}]}"#,
        ))
        .unwrap();
        assert_eq!(p.version, 3);
        assert_eq!(p.etag, "BwX=");
        let plain = p.binding("roles/run.invoker", None).unwrap();
        let names: Vec<&str> = plain.members.iter().map(Member::as_str).collect();
        assert_eq!(names, ["allUsers", "user:ada@acme.com"]);
        let cond = p.bindings[1].condition.as_ref().unwrap();
        assert_eq!(cond.title, "runwarden-expires-2027-01-31");
        assert_eq!(cond.description, None);
        assert_eq!(p.member_count(), 3);
    }

    #[test]
    fn a_policy_answer_without_an_etag_is_not_a_policy() {
        for answer in [
            "{}",
            r#"{"etag":""}"#,
            r#"{"etag":null,"version":3}"#,
            r#"{"version":3,"bindings":[{"role":"roles/run.invoker","members":["user:ada@acme.com"]}]}"#,
        ] {
            assert_eq!(read_policy(parse(answer)), Err(PolicyAnswer::NoEtag), "{answer}");
        }
        for (answer, says) in [("[]", "an array"), ("null", "null"), (r#""x""#, "a string")] {
            match read_policy(parse(answer)) {
                Err(PolicyAnswer::Invalid(reason)) => assert!(reason.contains(says), "{reason}"),
                other => panic!("{answer}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_member_in_an_unknown_form_is_kept_opaque_and_the_policy_stays_readable() {
        // Issue 14: one member runwarden does not know must never make the policy unreadable
        // (the service would be skipped on every pass); it is kept, opaque, and written back.
        let read = policy(parse(
            r#"{"etag":"x","bindings":[{"role":"roles/run.invoker","members":["projectOwner:acme","serviceAccount:p.svc.id.goog[ns/ksa]","deleted:principal://iam.googleapis.com/locations/global/workforcePools/p/subject/s"]}]}"#,
        ))
        .unwrap();
        let kinds: Vec<_> = read.bindings[0].members.iter().map(|m| (m.as_str().to_string(), m.kind())).collect();
        assert!(kinds.contains(&("projectOwner:acme".into(), crate::iam::MemberKind::Opaque)), "{kinds:?}");
        assert!(kinds.contains(&("serviceAccount:p.svc.id.goog[ns/ksa]".into(), crate::iam::MemberKind::ServiceAccount)), "{kinds:?}");
        let err = policy(parse(r#"{"etag":"x","bindings":[{"role":"roles/run.invoker","members":[""]}]}"#)).unwrap_err();
        assert!(err.contains("empty member"), "{err}");
    }

    #[test]
    fn reads_the_project_number_from_the_resource_name() {
        let p: Project = parse(r#"{"name":"projects/123456789012","projectId":"acme-prod"}"#);
        assert_eq!(project_number(&p), Ok(123456789012));
        let bad: Project = parse(r#"{"name":"projects/acme-prod"}"#);
        assert!(project_number(&bad).is_err());
    }

    #[test]
    fn reads_retry_info_and_reasons_from_error_details() {
        let e: ErrorBody = parse(
            r#"{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED","details":[
                {"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"RATE_LIMIT_EXCEEDED","domain":"googleapis.com"},
                {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"1.5s"}]}}"#,
        );
        assert_eq!(e.error.retry_delay(), Some(Duration::from_millis(1500)));
        assert_eq!(
            e.error.reasons().collect::<Vec<_>>(),
            ["RATE_LIMIT_EXCEEDED"]
        );
        assert_eq!(e.error.status, "RESOURCE_EXHAUSTED");
    }

    #[test]
    fn an_absurd_retry_delay_is_clamped_not_a_panic() {
        let body = |delay: &str| -> ErrorBody {
            parse(&format!(
                r#"{{"error":{{"status":"RESOURCE_EXHAUSTED","details":[
                    {{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"{delay}"}}]}}}}"#
            ))
        };
        let ceiling = Some(crate::retry::WAIT_CEILING);
        assert_eq!(body("1e20s").error.retry_delay(), ceiling);
        assert_eq!(body("18446744073709551616s").error.retry_delay(), ceiling);
        assert_eq!(body("infs").error.retry_delay(), ceiling);
        assert_eq!(body("NaNs").error.retry_delay(), None);
        assert_eq!(body("-3s").error.retry_delay(), None);
    }
}
