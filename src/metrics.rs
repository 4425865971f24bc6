//! Process-wide counters and gauges, exposed in the Prometheus text format on `/metrics`.
//!
//! A deliberately small registry: a few named families of counters and gauges keyed by sorted
//! label sets. Writers are the clients (API calls by API and status), apply (changes by kind),
//! and the loop (passes, durations, drift, guard trips). It is global so that the clients need
//! no extra plumbing; tests read it through [`Metrics::render`] or [`Metrics::get`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};

/// Labels of one series, sorted by name.
pub type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

#[derive(Debug)]
struct Family {
    kind: Kind,
    help: &'static str,
    series: BTreeMap<Labels, f64>,
}

/// A registry of metric families.
#[derive(Debug, Default)]
pub struct Metrics {
    families: Mutex<BTreeMap<&'static str, Family>>,
}

/// The process-wide registry.
pub fn global() -> &'static Metrics {
    static GLOBAL: OnceLock<Metrics> = OnceLock::new();
    GLOBAL.get_or_init(Metrics::default)
}

impl Metrics {
    /// Adds `by` to a counter.
    pub fn inc(&self, name: &'static str, help: &'static str, labels: Labels, by: f64) {
        self.update(name, help, Kind::Counter, labels, |v| *v += by);
    }

    /// Sets a gauge.
    pub fn set(&self, name: &'static str, help: &'static str, labels: Labels, value: f64) {
        self.update(name, help, Kind::Gauge, labels, |v| *v = value);
    }

    /// The current value of one series, if it exists.
    pub fn get(&self, name: &str, labels: &[(&'static str, &str)]) -> Option<f64> {
        let families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        let mut key: Labels = labels.iter().map(|(k, v)| (*k, v.to_string())).collect();
        key.sort();
        families.get(name)?.series.get(&key).copied()
    }

    fn update(
        &self,
        name: &'static str,
        help: &'static str,
        kind: Kind,
        mut labels: Labels,
        f: impl FnOnce(&mut f64),
    ) {
        labels.sort();
        let mut families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        let family = families
            .entry(name)
            .or_insert_with(|| Family { kind, help, series: BTreeMap::new() });
        f(family.series.entry(labels).or_insert(0.0));
    }

    /// The Prometheus text exposition (version 0.0.4) of every family.
    pub fn render(&self) -> String {
        let families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        for (name, family) in families.iter() {
            let kind = match family.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
            };
            let _ = writeln!(out, "# HELP {name} {}", family.help);
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in &family.series {
                let _ = write!(out, "{name}");
                if !labels.is_empty() {
                    let parts: Vec<String> = labels
                        .iter()
                        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                        .collect();
                    let _ = write!(out, "{{{}}}", parts.join(","));
                }
                let _ = writeln!(out, " {value}");
            }
        }
        out
    }
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Records one API call: `runwarden_api_calls_total{api, status}`.
pub fn record_api_call(api: &'static str, status: u16) {
    global().inc(
        "runwarden_api_calls_total",
        "API calls by API and HTTP status (0 = no response).",
        vec![("api", api.to_string()), ("status", status.to_string())],
        1.0,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_gauges_in_prometheus_text_format() {
        let m = Metrics::default();
        m.inc("runwarden_passes_total", "Passes.", vec![("result", "ok".into())], 1.0);
        m.inc("runwarden_passes_total", "Passes.", vec![("result", "ok".into())], 1.0);
        m.set("runwarden_drift", "Drift.", vec![], 3.0);
        m.inc("x_total", "Quoted.", vec![("msg", "a \"b\"".into())], 1.0);
        let text = m.render();
        assert!(text.contains("# TYPE runwarden_passes_total counter\n"), "{text}");
        assert!(text.contains("runwarden_passes_total{result=\"ok\"} 2\n"), "{text}");
        assert!(text.contains("# TYPE runwarden_drift gauge\nrunwarden_drift 3\n"), "{text}");
        assert!(text.contains("x_total{msg=\"a \\\"b\\\"\"} 1\n"), "{text}");
        assert_eq!(m.get("runwarden_passes_total", &[("result", "ok")]), Some(2.0));
    }
}
