//! Process-wide counters and gauges, exposed in the OpenMetrics text format on `/metrics`.
//!
//! The registry and the exposition are `prometheus-client`'s; this module keeps the small
//! by-name API its callers use: the clients (API calls by API and status), apply (changes by
//! kind) and the loop (passes, durations, drift, guard trips). Families are registered on first
//! use. A counter named `x_total` is registered as `x` (OpenMetrics names the family without the
//! suffix in `# HELP`/`# TYPE`; the samples keep `x_total`).
//!
//! There is no process-wide registry: a command that exposes metrics (`run`) makes one
//! [`Metrics`] and passes it, as an `Arc`, to the clients (`GoogleConfig::metrics`, shared with
//! the Auth0 client) and to the loop (`LoopConfig::metrics`); tests build their own and read it.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of one series, sorted by name.
pub type Labels = Vec<(&'static str, String)>;

type Counters = Family<Labels, Counter<f64, AtomicU64>>;
type Gauges = Family<Labels, Gauge<f64, AtomicU64>>;

/// The content type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A registry of metric families.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    registry: Registry,
    counters: BTreeMap<&'static str, Counters>,
    gauges: BTreeMap<&'static str, Gauges>,
}

impl Metrics {
    /// Adds `by` to a counter (its name ends in `_total`).
    pub fn inc(&self, name: &'static str, help: &'static str, labels: Labels, by: f64) {
        let family = {
            let mut inner = self.lock();
            let Inner {
                registry, counters, ..
            } = &mut *inner;
            counters
                .entry(name)
                .or_insert_with(|| {
                    let family = Counters::default();
                    let base = name.strip_suffix("_total").unwrap_or(name);
                    registry.register(base, help, family.clone());
                    family
                })
                .clone()
        };
        family.get_or_create(&sorted(labels)).inc_by(by);
    }

    /// Sets a gauge.
    pub fn set(&self, name: &'static str, help: &'static str, labels: Labels, value: f64) {
        let family = {
            let mut inner = self.lock();
            let Inner {
                registry, gauges, ..
            } = &mut *inner;
            gauges
                .entry(name)
                .or_insert_with(|| {
                    let family = Gauges::default();
                    registry.register(name, help, family.clone());
                    family
                })
                .clone()
        };
        family.get_or_create(&sorted(labels)).set(value);
    }

    /// The current value of one series, if it exists.
    pub fn get(&self, name: &str, labels: &[(&'static str, &str)]) -> Option<f64> {
        let key = sorted(labels.iter().map(|(k, v)| (*k, v.to_string())).collect());
        let inner = self.lock();
        if let Some(family) = inner.counters.get(name) {
            return family.get(&key).map(|c| c.get());
        }
        inner.gauges.get(name)?.get(&key).map(|g| g.get())
    }

    /// The OpenMetrics text exposition of every family (see [`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.lock().registry);
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn sorted(mut labels: Labels) -> Labels {
    labels.sort();
    labels
}

impl Metrics {
    /// Records one API call: `runwarden_api_calls_total{api, status}`.
    pub fn record_api_call(&self, api: &'static str, status: u16) {
        self.inc(
            "runwarden_api_calls_total",
            "API calls by API and HTTP status (0 = no response).",
            vec![("api", api.to_string()), ("status", status.to_string())],
            1.0,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_gauges_in_prometheus_text_format() {
        let m = Metrics::default();
        m.inc(
            "runwarden_passes_total",
            "Passes.",
            vec![("result", "ok".into())],
            1.0,
        );
        m.inc(
            "runwarden_passes_total",
            "Passes.",
            vec![("result", "ok".into())],
            1.0,
        );
        m.set("runwarden_drift", "Drift.", vec![], 3.0);
        m.inc("x_total", "Quoted.", vec![("msg", "a \"b\"".into())], 1.0);
        let text = m.render();
        // OpenMetrics: the counter family is named without `_total`, its samples with it.
        assert!(text.contains("# TYPE runwarden_passes counter\n"), "{text}");
        assert!(
            text.contains("runwarden_passes_total{result=\"ok\"} 2.0\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE runwarden_drift gauge\nrunwarden_drift 3.0\n"),
            "{text}"
        );
        assert!(
            text.contains("x_total{msg=\"a \\\"b\\\"\"} 1.0\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(
            m.get("runwarden_passes_total", &[("result", "ok")]),
            Some(2.0)
        );
        assert_eq!(m.get("runwarden_drift", &[]), Some(3.0));
        assert_eq!(m.get("runwarden_drift", &[("no", "such")]), None);
    }

    #[test]
    fn labels_are_sorted_by_name_whatever_order_the_caller_gives() {
        let m = Metrics::default();
        let labels = vec![
            ("status", "200".to_string()),
            ("api", "cloudrun".to_string()),
        ];
        m.inc("runwarden_api_calls_total", "Calls.", labels, 1.0);
        let text = m.render();
        assert!(
            text.contains("runwarden_api_calls_total{api=\"cloudrun\",status=\"200\"} 1.0\n"),
            "{text}"
        );
        assert_eq!(
            m.get(
                "runwarden_api_calls_total",
                &[("status", "200"), ("api", "cloudrun")]
            ),
            Some(1.0)
        );
    }
}
