//! The request quotas the quota project really has, read once per process from Service Usage
//! (`services.consumerQuotaMetrics.list`, v1beta1), so that reads and writes are paced by the
//! real limit instead of a guess.
//!
//! Reference: `serviceusage.v1beta1.json` (ListConsumerQuotaMetricsResponse → ConsumerQuotaMetric
//! → `consumerQuotaLimits[]` (ConsumerQuotaLimit: `unit`, `quotaBuckets[]`) → QuotaBucket
//! (`effectiveLimit`, int64 as a string; `dimensions`: empty for the default bucket, `region`
//! for a bucket that applies only in that region). A rate limit's `unit` reads like
//! `1/min/{project}/{region}` (per minute, per consumer project, per region).
//!
//! Which metrics: Cloud Run's quotas page (cloud.google.com/run/quotas) names the Admin API
//! quotas "Read requests per minute per region" and "Write requests per minute per region"; their
//! metric names are `run.googleapis.com/read_regional` (limit `ReadPerMinutePerProjectRegion`)
//! and `run.googleapis.com/write_regional` (`WritePerMinutePerProjectRegion`), as Google's own
//! RESOURCE_EXHAUSTED answers name them (quoted in googleapis/repo-automation-bots#4469: "Quota
//! exceeded for quota metric 'Read requests' and limit 'Read requests per minute per region' of
//! service 'run.googleapis.com' … metric=run.googleapis.com/read_regional&limit=
//! ReadPerMinutePerProjectRegion"; the write metric likewise in public deploy scripts, which
//! also note that a service's SetIamPolicy counts as a regional write). IAP's metric names could
//! not be confirmed from an outside source here, so for any service a metric whose last name
//! segment is `read_regional` or ends in `read_requests` counts reads (`write_…` writes). A
//! service without such a metric, or a credential that may not read quotas (403: it needs
//! `serviceusage.quotas.get`), leaves the limit unknown: the pacer then probes for it
//! (`retry::Pace::Probe`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::retry::Rate;

/// The limits learned for one API: the default bucket and per-region overrides.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    pub default: Option<Rate>,
    pub regions: BTreeMap<String, Rate>,
}

impl Limits {
    /// The limit in `region` ("" for none): its own bucket, else the default.
    pub fn get(&self, region: &str) -> Option<Rate> {
        self.regions.get(region).copied().or(self.default)
    }
}

/// What one read of the quotas learned (empty limits where nothing could be read).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Learned {
    pub run_reads: Limits,
    pub run_writes: Limits,
    pub iap_reads: Limits,
}

/// `ListConsumerQuotaMetricsResponse`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ListConsumerQuotaMetrics {
    #[serde(default)]
    pub metrics: Vec<Metric>,
    #[serde(default)]
    pub next_page_token: Option<String>,
}

/// `ConsumerQuotaMetric`, the fields runwarden reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Metric {
    #[serde(default)]
    pub metric: String,
    #[serde(default)]
    pub consumer_quota_limits: Vec<Limit>,
}

/// `ConsumerQuotaLimit`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Limit {
    #[serde(default)]
    pub unit: String,
    #[serde(default)]
    pub quota_buckets: Vec<Bucket>,
}

/// `QuotaBucket`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Bucket {
    #[serde(default)]
    pub effective_limit: Option<String>,
    #[serde(default)]
    pub dimensions: BTreeMap<String, String>,
}

/// Which kind of request a metric counts, by the end of its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Reads,
    Writes,
}

pub(super) fn kind(metric: &str) -> Option<Kind> {
    let name = metric.rsplit('/').next().unwrap_or(metric);
    if name == "read_regional" || name.ends_with("read_requests") {
        Some(Kind::Reads)
    } else if name == "write_regional" || name.ends_with("write_requests") {
        Some(Kind::Writes)
    } else {
        None
    }
}

/// The period of a rate-limit unit (`1/min/{project}/{region}` → 60 s); `None` for anything
/// else (allocation quotas, daily limits: not a pacing rate).
fn unit_period(unit: &str) -> Option<Duration> {
    let mut parts = unit.split('/');
    if parts.next()? != "1" {
        return None;
    }
    match parts.next()? {
        "s" => Some(Duration::from_secs(1)),
        "min" => Some(Duration::from_secs(60)),
        "100s" => Some(Duration::from_secs(100)),
        _ => None,
    }
}

/// An `effectiveLimit` in `period` as a rate; `None` for `-1` (unlimited), zero, or text that
/// is not a number. A limit not representable per `period` is expressed per minute or second.
fn limit_rate(text: &str, period: Duration) -> Option<Rate> {
    let value: i64 = text.trim().parse().ok()?;
    if value <= 0 {
        return None;
    }
    let count = u32::try_from(value).unwrap_or(u32::MAX);
    match period.as_secs() {
        100 => Some(Rate::per_minute(((value as f64) * 0.6).floor().clamp(1.0, u32::MAX as f64) as u32)),
        _ => Some(Rate { count, per: period }),
    }
}

/// The stricter of two rates.
fn stricter(a: Option<Rate>, b: Rate) -> Rate {
    match a {
        Some(a) if a.per_sec_f64() <= b.per_sec_f64() => a,
        _ => b,
    }
}

/// Folds one page of metrics into the limits per kind: for each matching metric, each rate
/// limit's default bucket and `region` buckets (the stricter where several limits apply).
pub(super) fn fold(metrics: &[Metric], reads: &mut Limits, writes: &mut Limits) {
    for metric in metrics {
        let Some(kind) = kind(&metric.metric) else { continue };
        let into = match kind {
            Kind::Reads => &mut *reads,
            Kind::Writes => &mut *writes,
        };
        for limit in &metric.consumer_quota_limits {
            let Some(period) = unit_period(&limit.unit) else { continue };
            for bucket in &limit.quota_buckets {
                let Some(rate) = bucket.effective_limit.as_deref().and_then(|t| limit_rate(t, period)) else {
                    continue;
                };
                if bucket.dimensions.is_empty() {
                    into.default = Some(stricter(into.default, rate));
                } else if let (Some(region), 1) = (bucket.dimensions.get("region"), bucket.dimensions.len()) {
                    let old = into.regions.get(region).copied();
                    into.regions.insert(region.clone(), stricter(old, rate));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: serde_json::Value) -> (Limits, Limits) {
        let page: ListConsumerQuotaMetrics = serde_json::from_value(json).unwrap();
        let (mut r, mut w) = (Limits::default(), Limits::default());
        fold(&page.metrics, &mut r, &mut w);
        (r, w)
    }

    #[test]
    fn reads_the_default_and_regional_effective_limits_of_read_and_write_metrics() {
        let (reads, writes) = parse(serde_json::json!({"metrics": [
            {"metric": "run.googleapis.com/read_regional", "consumerQuotaLimits": [
                {"unit": "1/min/{project}/{region}", "quotaBuckets": [
                    {"effectiveLimit": "1000", "defaultLimit": "1000"},
                    {"effectiveLimit": "3000", "dimensions": {"region": "us-central1"}}]}]},
            {"metric": "run.googleapis.com/write_regional", "consumerQuotaLimits": [
                {"unit": "1/min/{project}/{region}", "quotaBuckets": [{"effectiveLimit": "180"}]},
                {"unit": "1/d/{project}", "quotaBuckets": [{"effectiveLimit": "5"}]}]},
            {"metric": "run.googleapis.com/services", "consumerQuotaLimits": [
                {"unit": "1/{project}/{region}", "quotaBuckets": [{"effectiveLimit": "1"}]}]}
        ]}));
        assert_eq!(reads.get("europe-west1"), Some(Rate::per_minute(1000)));
        assert_eq!(reads.get("us-central1"), Some(Rate::per_minute(3000)));
        assert_eq!(writes.get("europe-west1"), Some(Rate::per_minute(180)), "daily limits are not a pace");
    }

    #[test]
    fn unlimited_zero_and_unreadable_limits_teach_nothing() {
        let (reads, _) = parse(serde_json::json!({"metrics": [
            {"metric": "iap.googleapis.com/read_requests", "consumerQuotaLimits": [
                {"unit": "1/min/{project}", "quotaBuckets": [
                    {"effectiveLimit": "-1"}, {"effectiveLimit": "0"}, {"effectiveLimit": "lots"}, {}]}]}
        ]}));
        assert_eq!(reads, Limits::default());
    }
}
