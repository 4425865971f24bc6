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
                diagnostics.push(yaml_error(path, line_offset, text, &err));
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
    let (doc, errors) = match kind.value.as_str() {
        "Settings" => {
            let (doc, errors) = parse_all(path, text, line_offset);
            (doc.map(|d| Document::Settings(Box::new(d))), errors)
        }
        "AccessPolicy" => {
            let (doc, errors) = parse_all(path, text, line_offset);
            (doc.map(|d| Document::AccessPolicy(Box::new(d))), errors)
        }
        other => {
            let (line, column) = at(&kind.referenced);
            diagnostics.push(
                Diagnostic::error(path, line, column, format!("unknown kind `{other}`"))
                    .with_hint(kind_hint),
            );
            return None;
        }
    };
    if !errors.is_empty() && kind.value == "Settings" {
        *broken_settings += 1;
    }
    diagnostics.extend(errors);
    // A document that parsed once its broken entries were skipped still goes through the
    // rules, so their errors come in the same run (the load fails on the shape errors anyway).
    doc.map(|doc| Parsed {
        file: path.to_path_buf(),
        line_offset,
        doc,
    })
}

/// How many shape errors one document may report before the rest are left for the next run.
const MAX_ERRORS_PER_DOCUMENT: usize = 50;

/// Parses a typed document, reporting every shape error the parser can be led to, not just
/// the first: serde stops at the first error, so after each one the offending entry (the key
/// and everything under it) is blanked out of a copy of the text — or a misspelt key is
/// corrected — and the document is parsed again, until it parses or an error cannot be
/// skipped (a syntax error, a missing field). Blanking keeps every line in its place, so each
/// later error keeps its own position. Returns the document as it finally parsed (with the
/// broken entries left out), if it did, and the errors.
fn parse_all<T: serde::de::DeserializeOwned>(
    path: &Path,
    text: &str,
    line_offset: usize,
) -> (Option<T>, Vec<Diagnostic>) {
    let mut text = text.to_string();
    let mut errors: Vec<Diagnostic> = Vec::new();
    // Keys blanked so far: a "missing field" for one of them is our doing, not the author's.
    let mut blanked: Vec<String> = Vec::new();
    while errors.len() < MAX_ERRORS_PER_DOCUMENT {
        let err = match serde_saphyr::from_str_with_options::<T>(&text, options()) {
            Ok(doc) => return (Some(doc), errors),
            Err(err) => err,
        };
        if let serde_saphyr::Error::SerdeMissingField { field, .. } = err.without_snippet() {
            if blanked.iter().any(|k| k == field) {
                break;
            }
        }
        let diagnostic = yaml_error(path, line_offset, &text, &err);
        let Some(location) = err.location().filter(|_| skippable(&err)) else {
            errors.push(diagnostic);
            break;
        };
        if let Some((next, meant)) = correct_typo(&text, &err) {
            let allowed = diagnostic.hint.clone().unwrap_or_default();
            errors.push(diagnostic.with_hint(format!("did you mean `{meant}`? ({allowed})")));
            text = next;
            continue;
        }
        if let Some(next) = replace_variant(&text, &err).or_else(|| listify(&text, &err)) {
            errors.push(diagnostic);
            text = next;
            continue;
        }
        errors.push(diagnostic);
        match blank_entry(&text, location.line() as usize, location.column() as usize, owner_is_parent(&err)) {
            Some((next, keys)) if next != text => {
                text = next;
                blanked.extend(keys);
            }
            _ => break,
        }
    }
    (None, errors)
}

/// For an unknown field that is a near miss of an allowed one (`clientID`, `ingres`): the
/// text with the key corrected, so the value is still checked and no "missing field" follows,
/// and the allowed name.
fn correct_typo(text: &str, err: &serde_saphyr::Error) -> Option<(String, String)> {
    let serde_saphyr::Error::SerdeUnknownField { field, expected, .. } = err.without_snippet() else {
        return None;
    };
    let meant = expected.iter().find(|e| near_miss(field, e))?;
    let location = err.location()?;
    let index = (location.line() as usize).checked_sub(1)?;
    let mut lines: Vec<&str> = text.split('\n').collect();
    let line = *lines.get(index)?;
    let start = entry_column(line);
    let rest = line.get(start..)?.strip_prefix(field.as_str())?;
    let fixed = format!("{}{meant}{rest}", &line[..start]);
    lines[index] = &fixed;
    Some((lines.join("\n"), meant.to_string()))
}

/// For an unknown value of an enumeration that is a near miss (`mapping: user`): the text with
/// the allowed value in its place (so a required field is not then "missing" and the rest is
/// still read).
fn replace_variant(text: &str, err: &serde_saphyr::Error) -> Option<String> {
    let serde_saphyr::Error::SerdeUnknownVariant { variant, expected, .. } = err.without_snippet() else {
        return None;
    };
    // Only a near miss: another value would bring errors of its own that the author never wrote.
    let allowed = expected.iter().find(|e| near_miss(variant, e))?;
    let location = err.location()?;
    let index = (location.line() as usize).checked_sub(1)?;
    let mut lines: Vec<&str> = text.split('\n').collect();
    let line = *lines.get(index)?;
    let start = line.char_indices().nth((location.column() as usize).saturating_sub(1))?.0;
    let at = start + line.get(start..)?.find(variant.as_str())?;
    let fixed = format!("{}{allowed}{}", &line[..at], &line[at + variant.len()..]);
    lines[index] = &fixed;
    Some(lines.join("\n"))
}

/// For a mapping written where a list belongs (`services:` followed by `project: ...` lines,
/// the `- ` forgotten): the text with the mapping made the list's one item, by writing `- `
/// over the two spaces before its first key, so no column moves.
fn listify(text: &str, err: &serde_saphyr::Error) -> Option<String> {
    if !err.without_snippet().to_string().starts_with("expected sequence start") {
        return None;
    }
    let location = err.location()?;
    let index = (location.line() as usize).checked_sub(1)?;
    let mut lines: Vec<&str> = text.split('\n').collect();
    let line = *lines.get(index)?;
    let start = indent(line);
    let column = (location.column() as usize).checked_sub(1)?;
    let is_key = !line[start..].starts_with('-') && line[start..].contains(':') && column == start;
    if start < 2 || !is_key || &line[start - 2..start] != "  " {
        return None;
    }
    let fixed = format!("{}- {}", &line[..start - 2], &line[start..]);
    lines[index] = &fixed;
    Some(lines.join("\n"))
}

/// Whether `written` is likely a misspelling of `allowed`: the same ignoring case, or at most
/// two edits apart (for names of four letters or more).
fn near_miss(written: &str, allowed: &str) -> bool {
    if written.eq_ignore_ascii_case(allowed) {
        return true;
    }
    let (a, b): (Vec<char>, Vec<char>) = (written.chars().collect(), allowed.chars().collect());
    if a.len().min(b.len()) < 4 {
        return false;
    }
    // Levenshtein distance, one row at a time.
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()] <= 2
}

/// Whether the parser can go on once the entry at the error is removed: errors about one
/// key or one value, not about the syntax of the file or a field that is not there.
fn skippable(err: &serde_saphyr::Error) -> bool {
    use serde_saphyr::Error as E;
    match err.without_snippet() {
        E::SerdeUnknownField { .. }
        | E::DuplicateMappingKey { .. }
        | E::SerdeUnknownVariant { .. }
        | E::InvalidBooleanStrict { .. }
        | E::SerdeInvalidType { .. }
        | E::SerdeInvalidValue { .. } => true,
        E::SerdeMissingField { .. } => false,
        other => {
            let text = other.to_string();
            ["invalid i64", "invalid u64", "invalid f64", "invalid floating", "expected mapping start", "expected sequence start", "expected string scalar"]
                .iter()
                .any(|p| text.starts_with(p))
        }
    }
}

/// Whether the error is about a whole block value (a list where a mapping belongs), which
/// starts on the line after its key: then the key that owns it is removed.
fn owner_is_parent(err: &serde_saphyr::Error) -> bool {
    use serde_saphyr::Error as E;
    match err.without_snippet() {
        E::SerdeInvalidType { .. } => true,
        other => {
            let text = other.to_string();
            text.starts_with("expected mapping start") || text.starts_with("expected sequence start")
        }
    }
}

/// Indentation of a line: leading spaces (tabs count as one column, as the parser counts).
fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches([' ', '\t']).len()
}

/// Whether a line holds nothing but whitespace or a comment.
fn is_blank(line: &str) -> bool {
    let t = line.trim_start();
    t.is_empty() || t.starts_with('#')
}

/// The column (0-based, in bytes) where the entry of a line starts: after the indentation and
/// any `- ` of a list item.
fn entry_column(line: &str) -> usize {
    let mut at = indent(line);
    while line[at..].starts_with("- ") || line[at..] == *"-" {
        at += 1;
        at += indent(&line[at..]);
    }
    at
}

/// `text` with the entry at the 1-based (`line`, `column`) blanked out: the key's line from
/// where the entry starts, and every line indented deeper below it. With `parent`, a block
/// value (the position is at its first line) is removed with the key that owns it. A key left
/// with nothing under it goes too (it would read as null, an error the author never wrote).
/// Returns the new text and the removed keys, or `None` when there is nothing to remove.
fn blank_entry(text: &str, line: usize, column: usize, parent: bool) -> Option<(String, Vec<String>)> {
    let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
    let mut at = line.checked_sub(1)?;
    let current = lines.get(at)?;
    // A value on its key's line (`key: value`): the position is after the colon.
    let inline = current.get(..column.saturating_sub(1)).is_some_and(|before| before.contains(": "));
    if parent && !inline {
        at = parent_of(&lines, at)?;
    }
    let mut keys = Vec::new();
    loop {
        keys.push(blank_one(&mut lines, at));
        // The parent, when nothing is left under it.
        let Some(up) = parent_of(&lines, at) else { break };
        let own = entry_column(&lines[up]);
        let empty = (up + 1..lines.len())
            .take_while(|&i| is_blank(&lines[i]) || indent(&lines[i]) > own || lines[i].trim_start().starts_with('-') && indent(&lines[i]) == own)
            .all(|i| is_blank(&lines[i]));
        if !empty || !lines[up].trim_end().ends_with(':') {
            break;
        }
        at = up;
    }
    Some((lines.join("\n"), keys))
}

/// The key that owns line index `at`: the nearest line above whose entry starts left of the
/// line's indentation (or at it, for a list item written flush with its key).
fn parent_of(lines: &[String], at: usize) -> Option<usize> {
    let line = lines.get(at)?;
    let own = indent(line);
    let item = line.trim_start().starts_with('-');
    (0..at).rev().find(|&i| {
        let column = entry_column(&lines[i]);
        !is_blank(&lines[i]) && (column < own || item && column == own && !lines[i].trim_start().starts_with('-'))
    })
}

/// Blanks the entry at line index `at` and the lines under it; returns its key.
fn blank_one(lines: &mut [String], at: usize) -> String {
    let start = entry_column(&lines[at]);
    let key = lines[at][start..].split(':').next().unwrap_or("").trim().to_string();
    let children_end = (at + 1..lines.len())
        .find(|&i| !is_blank(&lines[i]) && indent(&lines[i]) <= start)
        .unwrap_or(lines.len());
    // A list item loses its `- ` too, unless other entries of the item follow (a lone `- `
    // would be a null item).
    let item = lines[at][..start].trim_end().ends_with('-');
    let sibling = children_end < lines.len() && indent(&lines[children_end]) == start;
    let keep = if item && sibling { start } else { indent(&lines[at]) };
    let prefix = lines[at][..keep.min(start)].to_string();
    lines[at] = if item && sibling { prefix } else { " ".repeat(keep) };
    for l in lines.iter_mut().take(children_end).skip(at + 1) {
        l.clear();
    }
    key
}

/// The 1-based (line, column) of a tab in the indentation of line `line` or the line after it
/// (where a syntax error reported at `line` comes from a tab), if there is one.
fn tab_in_indentation(source: &str, line: usize) -> Option<(usize, usize)> {
    let first = line.checked_sub(1)?;
    source.split('\n').enumerate().skip(first).take(2).find_map(|(i, text)| {
        let indentation = &text[..text.len() - text.trim_start_matches([' ', '\t']).len()];
        let column = indentation.find('\t')?;
        Some((i + 1, column + 1))
    })
}

/// The scalar written at the 1-based (`line`, `column`) of `text`, up to a comment.
fn value_at(text: &str, line: usize, column: usize) -> &str {
    let Some(line) = line.checked_sub(1).and_then(|l| text.split('\n').nth(l)) else {
        return "";
    };
    let start = line.char_indices().nth(column.saturating_sub(1)).map_or(line.len(), |(i, _)| i);
    let value = &line[start..];
    value.split(" #").next().unwrap_or(value).trim()
}

/// What to write instead of a value that is not the number it should be: a percentage, a
/// duration, a number in words.
fn number_hint(message: &str, value: &str) -> Option<String> {
    if !message.starts_with("expected a number") && !message.starts_with("expected an integer") {
        return None;
    }
    let unquoted = value.trim_matches(['"', '\'']);
    if let Some(percent) = unquoted.strip_suffix('%').and_then(|p| p.trim().parse::<f64>().ok()) {
        let share = percent / 100.0;
        return Some(format!("a share is written as a number between 0 and 1, not a percentage: `{share}` for `{unquoted}`"));
    }
    if unquoted.parse::<f64>().is_ok() {
        return Some("remove the quotes: a quoted number is a string".to_string());
    }
    let duration = unquoted.trim_end_matches(|c: char| c.is_ascii_alphabetic() || c == ' ');
    if !duration.is_empty() && duration.len() < unquoted.len() && duration.trim().parse::<u64>().is_ok() {
        return Some("this is a count, not a duration: write a plain number".to_string());
    }
    Some("write the number in digits, e.g. `25` or `0.5`".to_string())
}

/// Turns a serde-saphyr error into a diagnostic, rephrasing the common cases for people who
/// write policies rather than parsers.
fn yaml_error(path: &Path, line_offset: usize, source: &str, err: &serde_saphyr::Error) -> Diagnostic {
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
        } => {
            let hint = match expected.iter().find(|e| near_miss(variant, e)) {
                Some(meant) => format!("did you mean `{meant}`? (expected one of: {})", expected.join(", ")),
                None => format!("expected one of: {}", expected.join(", ")),
            };
            error(format!("unknown value `{variant}`")).with_hint(hint)
        }
        E::InvalidBooleanStrict { .. } => error("expected a boolean".to_string())
            .with_hint("write true or false (yes/no/on/off are not booleans here)"),
        E::SerdeInvalidType {
            unexpected,
            expected,
            ..
        } => error(format!("expected {expected}, found {unexpected}")),
        other => {
            if let Some((tab_line, tab_column)) = tab_in_indentation(source, raw_line) {
                // The scanner reports a tab where it gave up on the token before it, often
                // the line above: point at the tab itself.
                let (line, column) = (tab_line + line_offset, tab_column);
                return Diagnostic::error(path, line, column, "a tab in the indentation")
                    .with_hint("YAML indents with spaces only: replace the tab with spaces");
            }
            let text = other.to_string();
            let suffix = format!(" at line {raw_line}, column {raw_column}");
            let text = text.strip_suffix(&suffix).unwrap_or(&text);
            let message = match text {
                "expected mapping start" => {
                    "expected a mapping (`key: value` pairs) here".to_string()
                }
                "expected sequence start" => {
                    return error("expected a list here".to_string())
                        .with_hint("write each entry as a list item, starting with `- `");
                }
                "expected string scalar" => "expected a string here".to_string(),
                "unexpected end of input" => "unexpected end of the document".to_string(),
                t if t.starts_with("invalid i64") || t.starts_with("invalid u64") => {
                    "expected an integer".to_string()
                }
                t if t.starts_with("invalid f64") || t.starts_with("invalid floating") => {
                    "expected a number".to_string()
                }
                t => format!("invalid YAML: {t}"),
            };
            let value = value_at(source, raw_line, raw_column);
            match number_hint(&message, value) {
                Some(hint) => error(format!("{message}, found `{value}`")).with_hint(hint),
                None => error(message),
            }
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
