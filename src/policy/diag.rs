//! Diagnostics of the policy loader: one error or warning with its file, line, column and hint,
//! and the collection of every error of one load.
//!
//! They render like rustc's, so editors and CI logs make them clickable:
//!
//! ```text
//! policies/teams/billing.yaml:31:17: error: invalid IAM member "user:ada": expected an e-mail address after the type prefix
//!   = hint: write members as user:EMAIL, serviceAccount:EMAIL, group:EMAIL, domain:DOMAIN, ...
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The policies are not loaded; nothing else happens.
    Error,
    /// The policies load, but something is likely not what the author meant.
    Warning,
}

/// One finding about the policy files, with where it is and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// The file (or, for a missing `Settings` or an unreadable directory, the directory).
    pub file: PathBuf,
    /// 1-based line; 0 when the finding is about the whole file or directory.
    pub line: usize,
    /// 1-based column (in characters); 0 when `line` is 0.
    pub column: usize,
    /// What is wrong, in one sentence.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

/// A diagnostic of severity `Error`.
pub type PolicyError = Diagnostic;
/// A diagnostic of severity `Warning`.
pub type PolicyWarning = Diagnostic;

impl Diagnostic {
    /// An error at `file:line:column`.
    pub fn error(file: &Path, line: usize, column: usize, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            file: file.to_path_buf(),
            line,
            column,
            message: message.into(),
            hint: None,
        }
    }

    /// A warning at `file:line:column`.
    pub fn warning(file: &Path, line: usize, column: usize, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(file, line, column, message)
        }
    }

    /// The same diagnostic with a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// `file:line:col` (or just `file` when the diagnostic has no position).
    pub fn location(&self) -> String {
        if self.line == 0 {
            self.file.display().to_string()
        } else {
            format!("{}:{}:{}", self.file.display(), self.line, self.column)
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        // File names, values and hints may hold anything the files do: a control or
        // bidirectional character is shown as its escape, never obeyed by the terminal.
        let v = crate::text::visible;
        write!(f, "{}: {label}: {}", v(&self.location()), v(&self.message))?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  = hint: {}", v(hint))?;
        }
        Ok(())
    }
}

/// Every error of one load (never just the first), plus the warnings found on the way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyErrors {
    /// The errors, in file order, then line order.
    pub errors: Vec<PolicyError>,
    /// Warnings found alongside; `validate` prints them too.
    pub warnings: Vec<PolicyWarning>,
    /// How many policy files were read.
    pub files: usize,
}

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        let n = self.errors.len();
        write!(
            f,
            "\n{n} error{} in the policy files",
            if n == 1 { "" } else { "s" }
        )
    }
}

/// Sorts diagnostics by file, line and column, keeping the order of equal positions (so a rule
/// that reports twice at one place reads in the order it was checked).
pub(super) fn sort(diagnostics: &mut [Diagnostic]) {
    diagnostics.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
}
