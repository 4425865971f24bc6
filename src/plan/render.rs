//! The three renderings of a plan: `text` (Terraform-like, for terminals and CI logs),
//! `markdown` (a pull-request comment, capped below GitHub's 65,536-character limit) and `json`
//! (the plan itself, the saved-plan format).
//!
//! Renderers are pure functions of the plan, so their output is as deterministic as the plan.

use std::fmt::Write as _;

use crate::text::{html_text, md_code, md_message, visible};

use super::guards::GuardTrip;
use super::rules::OUTSIDE_DOMAINS_NOTE;
use super::model::{
    Action, Finding, MemberChange, Plan, PlanMode, Reason, ResourcePlan, ServicePlan,
    SettingChange, Severity,
};

/// GitHub's limit on a comment's length; Markdown plans stay strictly below it.
pub const MARKDOWN_LIMIT: usize = 65_536;

/// Room kept for the truncation marker and closing lines.
const MARKDOWN_RESERVE: usize = 1_024;

/// The plan as pretty-printed JSON (the saved-plan format).
pub fn render_json(plan: &Plan) -> String {
    plan.to_json()
}

/// The final one-line summary (`Plan: ...` or `No changes. ...`).
pub fn summary_line(plan: &Plan) -> String {
    let s = &plan.summary;
    let errors = match plan.error_count() {
        0 => String::new(),
        n => format!(" ({})", crate::text::count(n, "error")),
    };
    let records = match s.records_to_write {
        0 => String::new(),
        n => format!("{} to write, ", crate::text::count(n, "last-applied record")),
    };
    let tail = format!(
        "{records}{} foreign kept, {} finding{}{errors}.",
        s.foreign_kept,
        s.findings,
        if s.findings == 1 { "" } else { "s" }
    );
    let unread = plan.unread().count();
    if unread > 0 {
        // Unreadable is never "no changes": what could not be read was not compared at all.
        let planned = if plan.has_changes() {
            format!(
                "{} service{} to change",
                s.services_to_change,
                plural(s.services_to_change)
            )
        } else {
            "no changes".to_string()
        };
        return format!(
            "Incomplete plan: {unread} governed service{} could not be read, so nothing is planned for {}; {planned} on the {} that could; {tail}",
            plural(unread),
            if unread == 1 { "it" } else { "them" },
            s.governed_services,
        );
    }
    if plan.has_changes() {
        format!(
            "Plan: {} service{} to change, {} member{} to add, {} to remove, {} setting{} to change; {tail}",
            s.services_to_change,
            plural(s.services_to_change),
            s.members_to_add,
            plural(s.members_to_add),
            s.members_to_remove,
            s.settings_to_change,
            plural(s.settings_to_change),
        )
    } else {
        format!(
            "No changes. Live access matches the policies on {} governed service{}; {tail}",
            s.governed_services,
            plural(s.governed_services)
        )
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

struct Paint {
    on: bool,
}

impl Paint {
    fn wrap(&self, code: &str, text: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

/// The mode column: `enforce`, or `observe → enforce` when the pull request changes it.
fn md_mode(s: &ServicePlan) -> String {
    match s.base_mode {
        Some(before) => format!("{} → {}", before.as_str(), s.mode.as_str()),
        None => s.mode.as_str().to_string(),
    }
}

fn mode_note(mode: PlanMode) -> &'static str {
    match mode {
        PlanMode::Enforce => "enforce",
        PlanMode::Warn => "warn: planned, never applied",
        PlanMode::Observe => "observe: drift reported, never applied",
    }
}

fn reason_label(c: &MemberChange) -> String {
    let base = match (c.reason, c.action) {
        (Reason::Foreign, Action::Keep) => "foreign (kept)".to_string(),
        (Reason::Foreign, _) => "foreign (removed)".to_string(),
        (Reason::Protected, _) => "protected (kept)".to_string(),
        (r, _) => r.as_str().to_string(),
    };
    match c.origin {
        Some(o) => format!("{base} [{}]", o.as_str()),
        None => base,
    }
}

fn symbol(a: Action) -> &'static str {
    match a {
        Action::Add => "+",
        Action::Remove => "-",
        Action::Keep => " ",
    }
}

/// The lines of one service's body (without colour, hidden characters made visible), shared by
/// text and Markdown. Each line is (symbol, text) so the caller can colour by symbol.
fn service_lines(s: &ServicePlan) -> Vec<(&'static str, String)> {
    // Members and settings are aligned separately, so one long value does not push the other
    // column far to the right.
    let width = s
        .member_changes()
        .map(|c| c.member.as_str().len())
        .max()
        .unwrap_or(0)
        .min(64);
    let setting_width = s
        .settings
        .iter()
        .map(|c| setting_text(c).len())
        .max()
        .unwrap_or(0)
        .min(64);
    let mut out = Vec::new();
    for (label, r) in [("service IAM", &s.iam), ("IAP IAM", &s.iap)] {
        let Some(r) = r else { continue };
        out.push(("", format!("{label} {} (etag {})", r.resource, r.etag)));
        resource_lines(r, width, &mut out);
    }
    if !s.settings.is_empty() {
        out.push(("", format!("settings (etag {})", s.etag)));
        for c in &s.settings {
            let reason = match c.origin {
                Some(o) => format!("{} [{}]", c.reason.as_str(), o.as_str()),
                None => c.reason.as_str().to_string(),
            };
            out.push((
                "~",
                format!(
                    "  ~ {:<setting_width$}  {reason:<18} {}{}",
                    setting_text(c),
                    c.sources.join(", "),
                    c.added_by.as_ref().map(|a| format!(" — {a}")).unwrap_or_default()
                )
                .trim_end()
                .to_string(),
            ));
        }
    }
    if let Some(n) = s.record_members {
        out.push((
            "~",
            format!(
                "~ record {}: {} granted by the policies (so deleting a line later revokes; no access change)",
                crate::model::LAST_APPLIED_ANNOTATION,
                crate::text::count(n, "member")
            ),
        ));
    }
    // Every value on these lines (members, roles, condition titles, sources, notes) may come
    // from a policy file, Auth0 or a live policy: one line stays one line, read in order.
    out.into_iter()
        .map(|(sym, line)| (sym, visible(&line).into_owned()))
        .collect()
}

fn longest_backtick_run(text: &str) -> usize {
    let (mut longest, mut run) = (0, 0);
    for c in text.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    longest
}

fn setting_text(c: &SettingChange) -> String {
    format!("{}: {} -> {}", c.field, c.before, c.after)
}

fn resource_lines(r: &ResourcePlan, width: usize, out: &mut Vec<(&'static str, String)>) {
    let mut current: Option<(&str, Option<&str>)> = None;
    for c in &r.changes {
        let key = (&*c.role, c.condition.as_ref().map(|c| c.title.as_str()));
        if current != Some(key) {
            current = Some(key);
            let head = match &c.condition {
                Some(cond) => format!("  {} if {} ({})", c.role, cond.title, cond.expression),
                None => format!("  {}", c.role),
            };
            out.push(("", head));
        }
        let mut line = format!(
            "    {} {:<width$}  {:<18} {}",
            symbol(c.action),
            c.member.as_str(),
            reason_label(c),
            c.sources.join(", ")
        );
        if let Some(n) = &c.note {
            line.push_str(" — ");
            line.push_str(n);
        }
        if let Some(a) = &c.added_by {
            line.push_str(" — ");
            line.push_str(a);
        }
        out.push((symbol(c.action), line.trim_end().to_string()));
    }
    for e in &r.emptied_groups {
        out.push((
            "!",
            format!(
                "  ! {} would lose {} member{} of the principal mapping while Auth0 group {} came back empty (the directory guard refuses this)",
                e.role,
                e.members_removed,
                plural(e.members_removed),
                e.groups.iter().map(|g| format!("{} (role {})", g.group, g.auth0_role)).collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    for e in &r.emptied_bindings {
        out.push((
            "!",
            format!(
                "  ! {} would lose all {} member{} of the principal mapping: Auth0 role {} came back empty (the directory guard refuses this)",
                e.role,
                e.members_before,
                plural(e.members_before),
                e.empty_roles.join(", ")
            ),
        ));
    }
}

fn service_header(s: &ServicePlan) -> String {
    let sym = if s.has_changes() { "~" } else { " " };
    let mode = match s.base_mode {
        Some(before) => format!("mode {} → {} (declared): {}", before.as_str(), s.mode.as_str(), mode_note(s.mode)),
        None => mode_note(s.mode).to_string(),
    };
    let line = format!("{sym} {}  [{mode}; policies: {}]", s.id, s.policies.join(", "));
    visible(&line).into_owned()
}

/// A finding on one line as every command prints it (`plan`, `apply`, `demo`, `audit`, the
/// loop's log): `severity [code] service: evidence; fix: fix (sources)`.
pub fn finding_line(f: &Finding) -> String {
    visible(&finding_text(f)).into_owned()
}

fn finding_text(f: &Finding) -> String {
    let mut line = format!("{} [{}]", f.severity.as_str(), f.code);
    if let Some(s) = &f.service {
        let _ = write!(line, " {s}:");
    }
    let _ = write!(line, " {}; fix: {}", f.evidence, f.fix);
    if !f.sources.is_empty() {
        let _ = write!(line, " ({})", f.sources.join(", "));
    }
    line
}

/// Terraform-like text. `color` adds ANSI colours (only when writing to a terminal).
pub fn render_text(plan: &Plan, color: bool) -> String {
    let mut out = String::new();
    let _ = write_text(plan, color, &mut out);
    out
}

/// [`render_text`], written as it is rendered (a plan of millions of changes is never held as
/// text as a whole).
pub fn write_text<W: std::fmt::Write>(plan: &Plan, color: bool, out: &mut W) -> std::fmt::Result {
    let p = Paint { on: color };
    writeln!(out, "runwarden plan at {}", plan.planned_at)?;
    if plan.compared_with_base {
        out.write_str("Compared with the base policies: [declared] = this change's own edits, [drift] = the base would make it too.\n")?;
    }
    out.write_char('\n')?;
    for s in &plan.services {
        let head = service_header(s);
        out.write_str(&if s.has_changes() {
            p.wrap("1;33", &head)
        } else {
            p.wrap("1", &head)
        })?;
        out.write_char('\n')?;
        for (sym, line) in service_lines(s) {
            let painted = match sym {
                "+" => p.wrap("32", &line),
                "-" => p.wrap("31", &line),
                "~" => p.wrap("33", &line),
                "!" => p.wrap("1;31", &line),
                _ => line,
            };
            writeln!(out, "    {painted}")?;
        }
        out.write_char('\n')?;
    }
    if !plan.findings.is_empty() {
        writeln!(out, "Findings ({}):", plan.findings.len())?;
        for f in &plan.findings {
            let line = finding_line(f);
            let painted = match f.severity {
                Severity::Error => p.wrap("31", &line),
                Severity::Warning => p.wrap("33", &line),
                Severity::Info => line,
            };
            writeln!(out, "  {painted}")?;
        }
        out.write_char('\n')?;
    }
    if plan.summary.services_not_applied > 0 {
        let n = plan.summary.services_not_applied;
        let of = match plan.summary.services_to_change {
            1 => "The 1 service to change is".to_string(),
            m if m == n => format!("All {m} services to change are"),
            m => format!("{n} of the {m} services to change {}", if n == 1 { "is" } else { "are" }),
        };
        let their = if n == 1 { "its" } else { "their" };
        writeln!(out, "{of} in warn or observe mode: {their} changes are shown, never applied.")?;
    }
    let line = summary_line(plan);
    out.write_str(&p.wrap("1", &line))?;
    out.write_char('\n')?;
    Ok(())
}

/// Markdown for a pull-request comment: a one-line summary, a warning when access is removed, a
/// table per service, collapsible details and the findings; strictly shorter than
/// [`MARKDOWN_LIMIT`] characters, cut with a visible marker that counts what was left out.
pub fn render_markdown(plan: &Plan) -> String {
    render_comment(plan, None, &[])
}

/// The pull-request comment: [`render_markdown`] naming the commit it was planned at, with what
/// a reviewer must see first on top: that the guards would refuse the plan, then what widens
/// exposure, then what removes access.
pub fn render_comment(plan: &Plan, revision: Option<&str>, trips: &[GuardTrip]) -> String {
    let mut out = markdown_header(plan, revision, trips);
    let mut budget = Budget {
        limit: MARKDOWN_LIMIT - MARKDOWN_RESERVE,
        full: false,
    };
    let (mut rows_left, mut details_left, mut findings_left) = (0usize, 0usize, 0usize);
    if !plan.services.is_empty() {
        budget.push(
            &mut out,
            "| Service | Mode | Add | Remove | Settings | Foreign kept |\n| --- | --- | ---: | ---: | ---: | ---: |\n",
        );
        // The table lists the services the summary counts (those with changes); services with
        // only kept members are in the details.
        for s in plan.services.iter().filter(|s| s.has_changes()) {
            if !budget.push(&mut out, &md_table_row(s)) {
                rows_left += 1;
            }
        }
        let kept_only = plan.services.iter().filter(|s| !s.has_changes()).count();
        if kept_only > 0 {
            budget.push(&mut out, &format!(
                "\n{kept_only} more service{} with nothing to change (only foreign members kept, or a last-applied record to write) {} in the details below.\n",
                plural(kept_only),
                if kept_only == 1 { "is" } else { "are" }
            ));
        }
        budget.push(&mut out, "\n");
        for s in &plan.services {
            if !budget.push(&mut out, &md_details(s)) {
                details_left += 1;
            }
        }
    }
    if !plan.findings.is_empty() {
        budget.push(
            &mut out,
            &format!("### Findings ({})\n\n", plan.findings.len()),
        );
        for f in &plan.findings {
            if !budget.push(&mut out, &md_finding(f)) {
                findings_left += 1;
            }
        }
    }
    if budget.full {
        let _ = write!(
            out,
            "\n---\n\n**✂️ Plan truncated** to stay under GitHub's {MARKDOWN_LIMIT}-character comment limit: left out {rows_left} table row{}, {details_left} service detail{} and {findings_left} finding{}. The full plan is in `runwarden plan --format json`.\n",
            plural(rows_left),
            plural(details_left),
            plural(findings_left)
        );
    }
    out
}

/// What is left of the Markdown length budget. Once a piece does not fit, nothing more is
/// added (so the comment never shows a later piece without an earlier one).
struct Budget {
    limit: usize,
    full: bool,
}

impl Budget {
    /// Appends `piece` if it fits; whether it was appended.
    fn push(&mut self, out: &mut String, piece: &str) -> bool {
        if !self.full && out.len() + piece.len() <= self.limit {
            out.push_str(piece);
            true
        } else {
            self.full = true;
            false
        }
    }
}

/// The summary line, the removal warning and the notes on origins and modes.
fn markdown_header(plan: &Plan, revision: Option<&str>, trips: &[GuardTrip]) -> String {
    let mut out = String::new();
    let at = revision.map(|r| format!(" at {}", md_code(r, false))).unwrap_or_default();
    let _ = writeln!(out, "**runwarden plan**{at} — {}", summary_line(plan));
    out.push('\n');
    if !trips.is_empty() {
        out.push_str(render_guard_note(trips, true).trim_start());
        out.push('\n');
    }
    let widening = widening(plan);
    if !widening.is_empty() {
        out.push_str("> [!WARNING]\n> This plan widens exposure:\n");
        for w in widening.iter().take(WIDENING_SHOWN) {
            let _ = writeln!(out, "> * {w}");
        }
        if widening.len() > WIDENING_SHOWN {
            let _ = writeln!(out, "> * and {} more (see the details)", widening.len() - WIDENING_SHOWN);
        }
        out.push('\n');
    }
    if plan.summary.members_to_remove > 0 {
        let services = plan
            .services
            .iter()
            .filter(|s| s.count(Action::Remove) > 0)
            .count();
        let _ = writeln!(
            out,
            "> [!WARNING]\n> This plan removes access: {} member{} on {} service{}. Check every `-` line below.\n",
            plan.summary.members_to_remove,
            plural(plan.summary.members_to_remove),
            services,
            plural(services)
        );
    }
    if plan.compared_with_base {
        out.push_str("Changes are marked **[declared]** (made by this pull request) or **[drift]** (the base branch would make them too).\n\n");
    }
    if plan.summary.services_not_applied > 0 {
        let _ = writeln!(
            out,
            "{} service{} to change {} in `warn` or `observe` mode: shown, never applied.\n",
            plan.summary.services_not_applied,
            plural(plan.summary.services_not_applied),
            if plan.summary.services_not_applied == 1 {
                "is"
            } else {
                "are"
            }
        );
    }

    out
}

/// How many exposure-widening changes the comment lists by name.
const WIDENING_SHOWN: usize = 20;


/// Changes that widen who can reach a service, one Markdown line each: public members and
/// members outside the mapping's domains granted, ingress opened to all traffic, the invoker
/// check disabled, IAP switched off.
fn widening(plan: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    for s in &plan.services {
        let svc = md_code(&s.id, false);
        for c in s.member_changes().filter(|c| c.action == Action::Add) {
            if c.member.is_public() {
                out.push(format!("{} granted {} on {svc}: anyone can call it", md_code(c.member.as_str(), false), md_code(&c.role, false)));
            } else if c.note.as_deref().is_some_and(|n| n.starts_with(OUTSIDE_DOMAINS_NOTE)) {
                out.push(format!("{} granted {} on {svc}: {OUTSIDE_DOMAINS_NOTE}", md_code(c.member.as_str(), false), md_code(&c.role, false)));
            }
        }
        for c in &s.settings {
            let what = match (c.field.as_str(), &c.after) {
                ("ingress", v) if v == "INGRESS_TRAFFIC_ALL" => "ingress opened to all traffic (the internet)",
                ("invokerIamDisabled", v) if v == true => "the invoker IAM check disabled: no identity is checked",
                ("iapEnabled", v) if v == false => "IAP switched off",
                _ => continue,
            };
            out.push(format!("{what} on {svc}"));
        }
    }
    out
}

/// A service's row in the summary table.
fn md_table_row(s: &ServicePlan) -> String {
    format!(
        "| {} | {} | {} | {} | {} | {} |\n",
        md_code(&s.id.to_string(), true),
        md_mode(s),
        s.count(Action::Add),
        s.count(Action::Remove),
        s.settings.len(),
        s.foreign_kept()
    )
}

/// A service's collapsible details: its plan lines as a diff block.
fn md_details(s: &ServicePlan) -> String {
    let mut body = String::new();
    for (sym, line) in service_lines(s) {
        // In a diff block the first column decides the colour.
        // The symbol moves to the first column so GitHub colours the line.
        let line = match sym {
            "+" | "-" => format!("{sym}{}", line.replacen(&format!("{sym} "), "  ", 1)),
            "!" => format!("-{line}"),
            _ => format!(" {line}"),
        };
        let _ = writeln!(body, "{line}");
    }
    // Only a line of at least as many backticks as the opening fence ends the block, and
    // `service_lines` keeps one line per line: a fence longer than any backtick run in
    // the body cannot be closed by a name inside it.
    let fence = "`".repeat(longest_backtick_run(&body).max(2) + 1);
    format!(
        "<details><summary><code>{}</code> ({}): +{} −{} ~{}</summary>\n\n{fence}diff\n{body}{fence}\n\n</details>\n\n",
        html_text(&s.id.to_string()),
        md_mode(s),
        s.count(Action::Add),
        s.count(Action::Remove),
        s.settings.len()
    )
}

/// One finding as a list item.
fn md_finding(f: &Finding) -> String {
    let icon = match f.severity {
        Severity::Error => "🛑",
        Severity::Warning => "⚠️",
        Severity::Info => "ℹ️",
    };
    let mut line = format!(
        "- {icon} **{}** {}",
        f.severity.as_str(),
        md_code(&f.code, false)
    );
    if let Some(s) = &f.service {
        let _ = write!(line, " {}", md_code(s, false));
    }
    let _ = write!(line, ": {}; **fix:** {}", md_message(&f.evidence), md_message(&f.fix));
    if !f.sources.is_empty() {
        let _ = write!(
            line,
            " ({})",
            f.sources
                .iter()
                .map(|s| md_code(s, false))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    line.push('\n');
    line
}

/// What the guards would say at apply time, appended to a text or Markdown plan for its
/// reviewers. Trip messages quote role names and members, so they are escaped like the plan.
pub fn render_guard_note(trips: &[GuardTrip], markdown: bool) -> String {
    let mut out = String::new();
    if markdown {
        out.push_str("\n> [!CAUTION]\n> `runwarden apply` would refuse this plan:\n");
        for t in trips {
            let _ = writeln!(out, "> * {}", md_message(&t.to_string()));
        }
    } else {
        out.push_str("\nApply would refuse this plan:\n");
        for t in trips {
            let _ = writeln!(out, "  - {}", visible(&t.to_string()));
        }
    }
    out
}
