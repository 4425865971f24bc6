//! Progress of long passes on a terminal: one line on stderr, redrawn at most ten times a
//! second, such as `reading  1234/2000 services  (61%)`.
//!
//! Shown only where a person watches: stderr is a terminal, the log format is text, and `CI` is
//! not set. Everywhere else (CI logs, JSON logs, pipes) it is silent, and the structured log
//! events of the pass carry the same information. Cheap to call from many tasks at once.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::logging::LogFormat;

/// A progress line for one stage of work (`reading`, `applying`).
#[derive(Debug)]
pub struct Progress {
    enabled: bool,
    stage: Mutex<&'static str>,
    done: AtomicU64,
    total: AtomicU64,
    last_draw: Mutex<Option<Instant>>,
}

impl Progress {
    /// A progress line that draws only when a person is watching (see the module docs).
    pub fn for_terminal(format: LogFormat) -> Progress {
        let watching = std::io::stderr().is_terminal()
            && format == LogFormat::Text
            && std::env::var_os("CI").is_none();
        Progress::new(watching)
    }

    /// A progress line that draws (`true`) or stays silent (`false`).
    pub fn new(enabled: bool) -> Progress {
        Progress {
            enabled,
            stage: Mutex::new(""),
            done: AtomicU64::new(0),
            total: AtomicU64::new(0),
            last_draw: Mutex::new(None),
        }
    }

    /// A silent progress line.
    pub fn hidden() -> Progress {
        Progress::new(false)
    }

    /// Starts a stage with `total` items.
    pub fn start(&self, stage: &'static str, total: u64) {
        *self.stage.lock().unwrap_or_else(|e| e.into_inner()) = stage;
        self.done.store(0, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
        self.draw(true);
    }

    /// Adds to the stage's total (when the amount of work is discovered on the way).
    pub fn add_total(&self, n: u64) {
        self.total.fetch_add(n, Ordering::Relaxed);
        self.draw(false);
    }

    /// Sets the position of the current stage outright (for producers that count themselves).
    pub fn set(&self, stage: &'static str, done: u64, total: u64) {
        *self.stage.lock().unwrap_or_else(|e| e.into_inner()) = stage;
        self.done.store(done, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
        self.draw(false);
    }

    /// One more item done.
    pub fn inc(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
        self.draw(false);
    }

    /// `(done, total)` of the current stage.
    pub fn position(&self) -> (u64, u64) {
        (self.done.load(Ordering::Relaxed), self.total.load(Ordering::Relaxed))
    }

    /// Clears the line (call before printing the result).
    pub fn finish(&self) {
        if self.enabled {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            crate::logging::set_status_line(false);
        }
    }

    fn draw(&self, force: bool) {
        if !self.enabled {
            return;
        }
        {
            let mut last = self.last_draw.lock().unwrap_or_else(|e| e.into_inner());
            let due = last.is_none_or(|t| t.elapsed() >= Duration::from_millis(100));
            if !force && !due {
                return;
            }
            *last = Some(Instant::now());
        }
        let line = self.line();
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
        crate::logging::set_status_line(true);
    }

    /// The text of the line, e.g. `reading  12/40  (30%)`.
    pub fn line(&self) -> String {
        let stage = *self.stage.lock().unwrap_or_else(|e| e.into_inner());
        let (done, total) = self.position();
        let percent = if total == 0 { 0 } else { done.min(total) * 100 / total };
        format!("{stage}  {done}/{total}  ({percent}%)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_items_across_a_stage_and_formats_the_line() {
        let p = Progress::hidden();
        p.start("reading", 40);
        for _ in 0..12 {
            p.inc();
        }
        assert_eq!(p.line(), "reading  12/40  (30%)");
        p.add_total(10);
        assert_eq!(p.position(), (12, 50));
        p.start("applying", 0);
        assert_eq!(p.line(), "applying  0/0  (0%)");
    }
}
