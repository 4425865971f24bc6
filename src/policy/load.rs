//! Reading policy files: walking the directory, splitting multi-document files, and
//! deserializing each document into its wire type — with a positioned diagnostic for everything
//! that can go wrong on the way (I/O, encoding, YAML syntax, wrong types, unknown or missing
//! fields, duplicate keys).
//!
//! Each document is deserialized on its own so that one broken document does not hide the
//! errors of the others. serde stops at the first error inside a document, so a document gets at
//! most one shape error; the semantic rules in `check` then run on every document that parsed.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde_saphyr::Spanned;

use super::diag::Diagnostic;
use super::wire::{self, API_VERSION};

/// A document that has the right shape, with the file it came from.
pub(super) struct Parsed {
    pub file: PathBuf,
    /// How many lines of the file precede the document (add it to the parser's line numbers).
    pub line_offset: usize,
    pub doc: Document,
}

pub(super) enum Document {
    Settings(Box<wire::SettingsDocument>),
    AccessPolicy(Box<wire::AccessPolicyDocument>),
}

/// Every policy file under `dir` (or `dir` itself when it is a file), sorted by path: what the
/// loader reads and what the loop's revision hashes (one walk, so they cannot disagree).
///
/// Hidden entries (names starting with `.`, such as `.git` or `.github`) are skipped: they hold
/// other tools' YAML. Symbolic links are followed, each directory at most once, so a link loop
/// ends the walk instead of looping. Files must pass [`is_policy_file`].
pub(super) fn policy_files(dir: &Path, diagnostics: &mut Vec<Diagnostic>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    match fs::metadata(dir) {
        Ok(meta) if meta.is_file() => files.push(dir.to_path_buf()),
        Ok(_) => walk(dir, &mut files, diagnostics),
        Err(err) => diagnostics.push(
            Diagnostic::error(
                dir,
                0,
                0,
                format!("cannot read the policy directory: {err}"),
            )
            .with_hint("pass the directory of policy files with --policies DIR"),
        ),
    }
    files.sort();
    files
}

/// The policy files under `dir` as [`policy_files`] finds them, without the diagnostics: what
/// the loop hashes into its revision.
pub fn list_policy_files(dir: &Path) -> Vec<PathBuf> {
    policy_files(dir, &mut Vec::new())
}

/// `*.yaml` / `*.yml` (any case), not hidden and not an editor's temporary or backup file
/// (`.a.yaml.swp`, `.#a.yaml`, `#a.yaml#`, `a.yaml~`).
pub fn is_policy_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let hidden_or_temp = name.starts_with('.') || name.starts_with('#') || name.ends_with('~');
    let yaml = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
    !hidden_or_temp && yaml
}

fn is_hidden(entry: &walkdir::DirEntry) -> bool {
    entry.depth() > 0 && entry.file_name().to_string_lossy().starts_with('.')
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>, diagnostics: &mut Vec<Diagnostic>) {
    // Canonical paths identify a directory however it was reached: each is walked once, which
    // also ends link loops before walkdir reports them.
    let mut visited = HashSet::new();
    let walker = walkdir::WalkDir::new(dir)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|entry| {
            if is_hidden(entry) {
                return false;
            }
            if !entry.file_type().is_dir() {
                return true;
            }
            let canonical = fs::canonicalize(entry.path()).unwrap_or_else(|_| entry.path().into());
            visited.insert(canonical)
        });
    for entry in walker {
        match entry {
            Ok(entry) if entry.file_type().is_file() && is_policy_file(entry.path()) => {
                files.push(entry.into_path())
            }
            Ok(_) => {}
            Err(err) => walk_error(err, diagnostics),
        }
    }
}

/// A directory that cannot be listed is an error; a dangling link or an unreadable entry
/// matters only if it looks like a policy file; a link loop just ends (see [`walk`]).
fn walk_error(err: walkdir::Error, diagnostics: &mut Vec<Diagnostic>) {
    let Some(path) = err.path().map(Path::to_path_buf) else {
        return;
    };
    if err.loop_ancestor().is_some() {
        return;
    }
    let message = err
        .io_error()
        .map_or_else(|| err.to_string(), ToString::to_string);
    if fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
        let text = format!("cannot list the directory: {message}");
        diagnostics.push(Diagnostic::error(&path, 0, 0, text));
    } else if is_policy_file(&path) {
        let text = format!("cannot read the file: {message}");
        diagnostics.push(Diagnostic::error(&path, 0, 0, text));
    }
}

/// The largest policy file runwarden reads. `import` writes one file per (project, region) with
/// one document per service, and Cloud Run allows at most 1,000 services per region and project
/// (https://cloud.google.com/run/quotas); a few KiB per service gives a few MiB, so 16 MiB is
/// generous for a real file and still bounds the memory a hostile one can claim.
pub const MAX_POLICY_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// The most YAML documents one policy file may hold (empty ones included): ten times the
/// 1,000 services of the largest region `import` can write.
pub const MAX_DOCUMENTS_PER_FILE: usize = 10_000;

/// Reads one file and parses every document in it. `broken_settings` counts the documents
/// that declare `kind: Settings` but do not parse.
///
/// The work is linear in the size of the file: each document is handed to the parser on its
/// own (twice: header, then the typed document), never padded to its position in the file.
pub(super) fn parse_file(
    path: &Path,
    diagnostics: &mut Vec<Diagnostic>,
    broken_settings: &mut usize,
) -> Vec<Parsed> {
    let bytes = match crate::files::read_capped(path, MAX_POLICY_FILE_BYTES) {
        Ok(bytes) => bytes,
        // File-level errors point at 1:1, so editors and CI annotations open the file.
        Err(err) if err.kind() == std::io::ErrorKind::FileTooLarge => {
            diagnostics.push(
                Diagnostic::error(
                    path,
                    1,
                    1,
                    format!(
                        "the file is larger than {}, the limit for a policy file",
                        crate::files::size(MAX_POLICY_FILE_BYTES)
                    ),
                )
                .with_hint("split the policies into several files"),
            );
            return Vec::new();
        }
        Err(err) => {
            diagnostics.push(
                Diagnostic::error(path, 1, 1, format!("cannot read the file: {err}"))
                    .with_hint("check the file's permissions, or move it out of the policy directory"),
            );
            return Vec::new();
        }
    };
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(err) => {
            let valid = &err.as_bytes()[..err.utf8_error().valid_up_to()];
            let valid = std::str::from_utf8(valid).expect("prefix is valid UTF-8");
            let (line, column) = end_position(valid);
            diagnostics.push(
                Diagnostic::error(path, line, column, "the file is not valid UTF-8")
                    .with_hint("save policy files as UTF-8"),
            );
            return Vec::new();
        }
    };
    let documents = split_documents(&text);
    if let Some(over) = documents.get(MAX_DOCUMENTS_PER_FILE) {
        diagnostics.push(
            Diagnostic::error(
                path,
                over.line_offset + 1,
                1,
                format!(
                    "the file holds more than {MAX_DOCUMENTS_PER_FILE} YAML documents, the limit for a policy file"
                ),
            )
            .with_hint("split the policies into several files, and remove empty `---` documents"),
        );
        return Vec::new();
    }
    documents
        .into_iter()
        .filter_map(|doc| {
            parse_document(
                path,
                &text[doc.bytes],
                doc.line_offset,
                diagnostics,
                broken_settings,
            )
        })
        .collect()
}

/// The 1-based line and column just after `text`.
fn end_position(text: &str) -> (usize, usize) {
    let line = text.matches('\n').count() + 1;
    let column = text.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

/// A parser location inside a document that starts after `line_offset` lines of its file, as
/// the file's (line, column); (0, 0) when the parser did not know.
pub(super) fn file_position(location: &serde_saphyr::Location, line_offset: usize) -> (usize, usize) {
    match (location.line() as usize, location.column() as usize) {
        (0, _) => (0, 0),
        (line, column) => (line + line_offset, column),
    }
}

/// One document of a file: its bytes, and how many lines of the file come before it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DocumentText {
    line_offset: usize,
    bytes: std::ops::Range<usize>,
}

/// Splits a YAML stream into its documents, as byte ranges of the text with the number of
/// lines before each (documents start at a line, so a parser position inside a document maps
/// to the file by adding that number to the line; the column is unchanged).
///
/// A document starts at a `---` line (a marker at the start of a line always starts a document
/// in YAML, even inside a block scalar, so splitting on lines is exact) and ends after a `...`
/// line. Directives (`%YAML 1.2`) and comments before a document's `---` belong to it.
///
/// The ranges cover the text exactly once, in order: the parser reads each byte of the file
/// once per pass, however many documents there are.
fn split_documents(text: &str) -> Vec<DocumentText> {
    // (line index, byte offset) of every document start.
    let mut starts = vec![(0usize, 0usize)];
    // Whether the current document has anything but directives, comments and blank lines, or
    // already its own `---`: then a `---` starts the next one.
    let mut started = false;
    let mut offset = 0;
    let mut lines = 0;
    for (i, raw) in text.split_inclusive('\n').enumerate() {
        let line = raw.trim_end_matches(['\n', '\r']);
        let line = line.strip_prefix('\u{feff}').unwrap_or(line);
        let next = offset + raw.len();
        if line == "---" || line.starts_with("--- ") || line.starts_with("---\t") {
            if started && i > 0 {
                starts.push((i, offset));
            }
            started = true;
        } else if line == "..." || line.starts_with("... ") {
            if next < text.len() {
                starts.push((i + 1, next));
            }
            started = false;
        } else {
            let content = line.trim_start();
            if !(content.is_empty() || content.starts_with('#') || line.starts_with('%')) {
                started = true;
            }
        }
        offset = next;
        lines = i + 1;
    }
    debug_assert!(lines == 0 || offset == text.len());
    starts.dedup();
    let mut documents = Vec::with_capacity(starts.len());
    for (k, &(line_offset, start)) in starts.iter().enumerate() {
        let end = starts.get(k + 1).map_or(text.len(), |&(_, end)| end);
        documents.push(DocumentText {
            line_offset,
            bytes: start..end,
        });
    }
    documents
}

fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        with_snippet: false,
        // `public: no` must not silently mean false: only true/false are booleans.
        strict_booleans: true,
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
    }
}

/// Parses one document: first its header (to learn the kind), then the full typed document.
/// Returns `None` for an empty document and for one with errors (reported to `diagnostics`).
fn parse_document(
    path: &Path,
    text: &str,
    line_offset: usize,
    diagnostics: &mut Vec<Diagnostic>,
    broken_settings: &mut usize,
) -> Option<Parsed> {
    let header: Option<Spanned<wire::Header>> =
        match serde_saphyr::from_str_with_options(text, options()) {
            Ok(header) => header,
            Err(err) => {
                // A Settings document broken beyond reading its header (bad syntax, a
                // duplicate key) still counts as one, so no "no Settings found" follows.
                if text.lines().any(|l| l.trim_end() == "kind: Settings") {
                    *broken_settings += 1;
                }
                diagnostics.push(yaml_error(path, line_offset, &err));
                return None;
            }
        };
    // A document holding only comments (or nothing, after a trailing `---`) is not an error.
    let header = header?;
    let at = |loc: &serde_saphyr::Location| file_position(loc, line_offset);
    let (line, column) = at(&header.referenced);
    let Some(api_version) = &header.value.api_version else {
        diagnostics.push(
            Diagnostic::error(path, line, column, "missing field `apiVersion`").with_hint(format!(
                "every document starts with `apiVersion: {API_VERSION}`"
            )),
        );
        return None;
    };
    if api_version.value != API_VERSION {
        let (line, column) = at(&api_version.referenced);
        diagnostics.push(
            Diagnostic::error(
                path,
                line,
                column,
                format!("unsupported apiVersion `{}`", api_version.value),
            )
            .with_hint(format!(
                "this version of runwarden reads `apiVersion: {API_VERSION}`"
            )),
        );
        return None;
    }
    let kind_hint = "the kind is `Settings` or `AccessPolicy`";
    let Some(kind) = &header.value.kind else {
        diagnostics.push(
            Diagnostic::error(path, line, column, "missing field `kind`").with_hint(kind_hint),
        );
        return None;
    };
    let doc = match kind.value.as_str() {
        "Settings" => serde_saphyr::from_str_with_options(text, options())
            .map(|d| Document::Settings(Box::new(d))),
        "AccessPolicy" => serde_saphyr::from_str_with_options(text, options())
            .map(|d| Document::AccessPolicy(Box::new(d))),
        other => {
            let (line, column) = at(&kind.referenced);
            diagnostics.push(
                Diagnostic::error(path, line, column, format!("unknown kind `{other}`"))
                    .with_hint(kind_hint),
            );
            return None;
        }
    };
    match doc {
        Ok(doc) => Some(Parsed {
            file: path.to_path_buf(),
            line_offset,
            doc,
        }),
        Err(err) => {
            if kind.value == "Settings" {
                *broken_settings += 1;
            }
            diagnostics.push(yaml_error(path, line_offset, &err));
            None
        }
    }
}

/// Turns a serde-saphyr error into a diagnostic, rephrasing the common cases for people who
/// write policies rather than parsers.
fn yaml_error(path: &Path, line_offset: usize, err: &serde_saphyr::Error) -> Diagnostic {
    use serde_saphyr::Error as E;
    // The parser's own numbering (within the document) appears in its message text.
    let (raw_line, raw_column) = err
        .location()
        .map(|l| (l.line() as usize, l.column() as usize))
        .unwrap_or((0, 0));
    let (line, column) = err
        .location()
        .map(|l| file_position(&l, line_offset))
        .unwrap_or((0, 0));
    let error = |message: String| Diagnostic::error(path, line, column, message);
    match err.without_snippet() {
        E::SerdeUnknownField {
            field, expected, ..
        } => {
            let hint = if expected.is_empty() {
                "no fields are allowed here".to_string()
            } else {
                format!("allowed fields here: {}", expected.join(", "))
            };
            error(format!("unknown field `{field}`")).with_hint(hint)
        }
        E::SerdeMissingField { field, .. } => error(format!("missing field `{field}`"))
            .with_hint(format!("add `{field}:` to this mapping")),
        E::DuplicateMappingKey { key, .. } => {
            let key = key.as_deref().unwrap_or("?");
            error(format!("duplicate key `{key}`"))
                .with_hint("a key may appear only once in a mapping: keep one of them")
        }
        E::SerdeUnknownVariant {
            variant, expected, ..
        } => error(format!("unknown value `{variant}`"))
            .with_hint(format!("expected one of: {}", expected.join(", "))),
        E::InvalidBooleanStrict { .. } => error("expected a boolean".to_string())
            .with_hint("write true or false (yes/no/on/off are not booleans here)"),
        E::SerdeInvalidType {
            unexpected,
            expected,
            ..
        } => error(format!("expected {expected}, found {unexpected}")),
        other => {
            let text = other.to_string();
            let suffix = format!(" at line {raw_line}, column {raw_column}");
            let text = text.strip_suffix(&suffix).unwrap_or(&text);
            let message = match text {
                "expected mapping start" => {
                    "expected a mapping (`key: value` pairs) here".to_string()
                }
                "expected sequence start" => "expected a list here".to_string(),
                "expected string scalar" => "expected a string here".to_string(),
                "unexpected end of input" => "unexpected end of the document".to_string(),
                t if t.starts_with("invalid i64") || t.starts_with("invalid u64") => {
                    "expected an integer".to_string()
                }
                t if t.starts_with("invalid f64") => "expected a number".to_string(),
                t => format!("invalid YAML: {t}"),
            };
            error(message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documents as the text the parser sees, each prefixed with as many newlines as lines
    /// precede it (what the file's line numbers mean), for readable expectations.
    fn split(text: &str) -> Vec<String> {
        split_documents(text)
            .into_iter()
            .map(|d| format!("{}{}", "\n".repeat(d.line_offset), &text[d.bytes]))
            .collect()
    }

    #[test]
    fn documents_keep_their_file_line_numbers() {
        let docs = split("a: 1\n---\nb: 2\n--- # x\nc: 3\n");
        assert_eq!(docs, ["a: 1\n", "\n---\nb: 2\n", "\n\n\n--- # x\nc: 3\n"]);
    }

    #[test]
    fn a_leading_marker_does_not_make_an_empty_first_document() {
        assert_eq!(split("---\na: 1\n"), ["---\na: 1\n"]);
    }

    #[test]
    fn directives_and_comments_belong_to_the_document_after_them() {
        assert_eq!(
            split("%YAML 1.2\n# c\n---\na: 1\n"),
            ["%YAML 1.2\n# c\n---\na: 1\n"]
        );
        assert_eq!(split("---\n---\na: 1\n"), ["---\n", "\n---\na: 1\n"]);
    }

    #[test]
    fn an_end_marker_ends_the_document() {
        assert_eq!(split("a: 1\n...\nb: 2\n"), ["a: 1\n...\n", "\n\nb: 2\n"]);
        assert_eq!(
            split("a: 1\n...\n---\nb: 2\n"),
            ["a: 1\n...\n", "\n\n---\nb: 2\n"]
        );
        assert_eq!(split("a: 1\n...\n"), ["a: 1\n...\n"]);
    }

    #[test]
    fn markers_must_start_the_line_and_stand_alone() {
        assert_eq!(split("a: |\n  ---\nb: ---x\n----\n").len(), 1);
    }

    #[test]
    fn splitting_hands_each_byte_to_the_parser_once_however_many_documents() {
        // 100,000 separators: before, every document was padded with the newlines before it,
        // so the parser read ~5 * 10^9 bytes; now it reads the file's 400,000 once per pass.
        let text = "---\n".repeat(100_000) + "a: 1\n";
        let docs = split_documents(&text);
        assert_eq!(docs.len(), 100_000);
        let handed: usize = docs.iter().map(|d| d.bytes.len()).sum();
        assert_eq!(handed, text.len());
        assert_eq!(docs.last().unwrap().line_offset, 99_999);
        assert!(docs.windows(2).all(|w| w[0].bytes.end == w[1].bytes.start));
    }

    #[test]
    fn end_position_counts_characters_not_bytes() {
        assert_eq!(end_position("ab\ncé"), (2, 3));
        assert_eq!(end_position(""), (1, 1));
    }
}
