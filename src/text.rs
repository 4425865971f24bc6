//! Showing strings runwarden does not control (role names, members, service names, condition
//! titles, file names, server messages) in its outputs without letting them change the output.
//!
//! * [`visible`], for terminals and logs: control characters (a newline included) and the
//!   invisible or bidirectional formatting characters become `\u{...}` escapes, so a
//!   right-to-left override (U+202E) in a member cannot reorder a plan line, and an invisible
//!   U+200B cannot make two different members look the same.
//! * [`md_text`], [`md_code`] and [`html_text`], for the pull-request comment: the same, plus
//!   GitHub-flavoured Markdown and HTML escapes, so that a role name with backticks, `<!--`,
//!   `|` or `<details>` shows as the text it is and cannot hide or reshape what follows.

use std::borrow::Cow;

/// `n` with the noun in the right number: `count(1, "service")` is `1 service`,
/// `count(3, "service")` is `3 services` (English plurals runwarden uses end in `s`, except the
/// ones given with [`count_irregular`]).
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
}

/// `n` with `one` or `many`: `count_irregular(2, "policy", "policies")` is `2 policies`.
pub fn count_irregular(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Whether `c` is invisible, a control, or changes the direction or joining of the text around
/// it: the C0 and C1 controls, the line and paragraph separators, and the Unicode format
/// characters (general category Cf) that render as nothing — bidirectional embeddings,
/// overrides, isolates and marks (U+061C, U+200E, U+200F, U+202A–U+202E, U+2066–U+2069),
/// zero-width spaces and joiners (U+200B–U+200D, U+2060–U+2064, U+FEFF), the soft hyphen,
/// invisible Hangul fillers, interlinear annotations and tag characters.
pub fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}'
            | '\u{17B5}' | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FEFF}'
            | '\u{FFA0}' | '\u{FFF9}'..='\u{FFFB}' | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E007F}')
}

/// `text` with every [`is_hidden`] character written as its escape (`\u{202e}`), and every
/// backslash doubled when anything was escaped, so an escape cannot be forged by the text.
/// Borrowed (no copy) when there is nothing to escape, which is nearly always.
pub fn visible(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_hidden) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_hidden(c) {
            out.extend(c.escape_unicode());
        } else if c == '\\' {
            out.push_str("\\\\");
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Like [`visible`] but keeps line breaks: for a whole rendered report whose lines are the
/// renderer's own.
pub fn visible_lines(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c != '\n' && is_hidden(c)) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.split('\n')
            .map(|line| visible(line).into_owned())
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// Plain text inside one Markdown line, shown literally: [`visible`], then a backslash before
/// every character Markdown or HTML would interpret there (CommonMark lets any ASCII
/// punctuation be escaped this way, and GitHub's table cells honour `\|`).
pub fn md_text(text: &str) -> String {
    let text = visible(text);
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        // Mid-line, only these can start markup: emphasis, code, links and images (`!` and
        // `(` matter only after `[`/`]`), raw HTML and comments, entities, table cells,
        // strikethrough, and `@` mentions. Block markers (`#`, `-`, `>` at a line start) cannot
        // occur: `visible` has escaped every line break.
        if matches!(
            c,
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '~' | '&' | '@'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A message whose `backticked` parts are code (as runwarden's findings write role names and
/// files): each part is escaped on its own, as [`md_code`] or [`md_text`], so the formatting
/// survives and a backtick inside a value can at most move a code span's boundary, never let
/// markup through. With an odd number of backticks, the whole message is plain text.
pub fn md_message(text: &str) -> String {
    let parts: Vec<&str> = text.split('`').collect();
    if parts.len() % 2 == 0 {
        return md_text(text);
    }
    parts
        .iter()
        .enumerate()
        .map(|(i, part)| {
            if i % 2 == 1 {
                md_code(part, false)
            } else {
                md_text(part)
            }
        })
        .collect()
}

/// An inline code span showing `text` literally, also inside a table cell (`in_table`).
///
/// A code span is closed only by a backtick run of its opening length, so the fence is one
/// backtick longer than the longest run inside; a space pads content that starts or ends with a
/// backtick (CommonMark strips one such space on each side). In a GitHub table a `|` ends the
/// cell even inside a code span unless written `\|`, which the table then shows as `|`.
pub fn md_code(text: &str, in_table: bool) -> String {
    let text = visible(text);
    let mut longest = 0;
    let mut run = 0;
    for c in text.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let fence = "`".repeat(longest + 1);
    let pad = if text.starts_with('`') || text.ends_with('`') || text.is_empty() {
        " "
    } else {
        ""
    };
    let body = if in_table {
        text.replace('|', "\\|")
    } else {
        text.into_owned()
    };
    format!("{fence}{pad}{body}{pad}{fence}")
}

/// Text inside an HTML element (such as `<summary>`): [`visible`] and the HTML escapes.
pub fn html_text(text: &str) -> String {
    let text = visible(text);
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // A backtick can still start a code span in the Markdown around the element.
            '`' => out.push_str("&#96;"),
            '|' => out.push_str("&#124;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_bidi_characters_become_visible_escapes() {
        assert_eq!(visible("user:ada@acme.com"), "user:ada@acme.com");
        assert_eq!(visible("a\u{202e}b"), "a\\u{202e}b");
        assert_eq!(visible("a\u{200b}b\nc\u{1b}[31m"), "a\\u{200b}b\\u{a}c\\u{1b}[31m");
        // A backslash cannot forge an escape once anything is escaped.
        assert_eq!(visible("\\u{202e}\u{202e}"), "\\\\u{202e}\\u{202e}");
        // Letters of other scripts are left alone: they are visible.
        assert_eq!(visible("аcme"), "аcme");
    }

    #[test]
    fn code_spans_hold_any_backticks_and_pipes() {
        assert_eq!(md_code("a", false), "`a`");
        assert_eq!(md_code("a`b", false), "``a`b``");
        assert_eq!(md_code("`a", false), "`` `a ``");
        assert_eq!(md_code("a|b", true), "`a\\|b`");
        assert_eq!(md_code("a|b", false), "`a|b`");
    }

    #[test]
    fn messages_keep_their_code_spans_and_escape_everything_else() {
        assert_eq!(md_message("role `billing` is empty"), "role `billing` is empty");
        assert_eq!(md_message("role `a<!--` x"), "role `a<!--` x");
        assert_eq!(md_message("role `a`b<!--` x"), "role \\`a\\`b\\<!--\\` x");
        assert_eq!(md_message("role `a`<!--`b` x"), "role `a`\\<!--`b` x");
    }

    #[test]
    fn markdown_and_html_text_are_escaped() {
        assert_eq!(md_text("<!-- *x* `y` | z @acme"), "\\<!-- \\*x\\* \\`y\\` \\| z \\@acme");
        assert_eq!(html_text("<b>`&`</b>"), "&lt;b&gt;&#96;&amp;&#96;&lt;/b&gt;");
    }
}
