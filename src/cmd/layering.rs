//! The import rule of README "Architecture", enforced: every `crate::MODULE` reference under
//! `src/` is checked against the layer table below, and the modules must not import each other
//! in a circle. A new top-level module fails this test until it is given a layer here (and in
//! the README).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level modules by layer, from the top (1) to the bottom (5). A module may import modules
/// of its own layer or below.
const LAYERS: &[(&str, u8)] = &[
    // 1. Commands: argument definitions and one file per command.
    ("cli", 1),
    ("cmd", 1),
    // 2. Wiring: where calls go and the live read; the loop; the apply.
    ("pass", 2),
    ("reconcile", 2),
    ("apply", 2),
    // 3. Domain engines over plain values.
    ("plan", 3),
    ("insight", 3),
    ("audit", 3),
    // 4. I/O clients.
    ("live", 4),
    ("google", 4),
    ("identity", 4),
    ("retry", 4),
    ("endpoints", 4),
    // 5. Foundation.
    ("model", 5),
    ("iam", 5),
    ("policy", 5),
    ("published", 5),
    ("time", 5),
    ("rate", 5),
    ("text", 5),
    ("files", 5),
    ("metrics", 5),
    ("logging", 5),
    ("progress", 5),
];

/// The simulator stands beside the layers: only the command layer may import it, and it
/// imports nothing of the product's logic but this shared vocabulary.
const SIM: &str = "sim";
const SIM_MAY_IMPORT: &[&str] = &["iam", "time", "model", "files"];

/// Nothing imports the command layer (only `main.rs` calls it).
const COMMANDS: &str = "cmd";

/// The top-level modules `text` refers to as `crate::m` or `crate::{m, ...}`, outside comment
/// lines.
fn imports(text: &str) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        // `runwarden_crate::x` or `my_crate::x` are not references to this crate.
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            found.extend(group_heads(group));
        } else {
            found.insert(identifier(rest));
        }
    }
    found.remove("");
    found
}

/// The first identifier of each top-level item of a `{a::b, c, d::{e, f}}` group (`group`
/// starts after the opening brace).
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = vec![identifier(group.trim_start())];
    let mut depth = 0;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => heads.push(identifier(group[i + 1..].trim_start())),
            _ => {}
        }
    }
    heads
}

fn identifier(text: &str) -> String {
    text.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect()
}

/// Every violation of the rule among `modules` (top-level module → the modules it imports).
fn violations(modules: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let layer: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    let mut out = Vec::new();
    for (from, targets) in modules {
        for to in targets.iter().filter(|t| *t != from) {
            let problem = if to == COMMANDS {
                Some("nothing imports the command layer".to_string())
            } else if to == SIM && from != COMMANDS {
                Some("only the command layer may use the simulator (feature `sim`)".to_string())
            } else if from == SIM {
                (!SIM_MAY_IMPORT.contains(&to.as_str()))
                    .then(|| format!("the simulator imports only {SIM_MAY_IMPORT:?}"))
            } else if to == SIM {
                None
            } else {
                match (layer.get(from.as_str()), layer.get(to.as_str())) {
                    (Some(a), Some(b)) if a > b => Some(format!("layer {a} imports layer {b}, above it")),
                    (Some(_), Some(_)) => None,
                    (None, _) => Some(format!("{from} has no layer: add it to LAYERS and README \"Architecture\"")),
                    (_, None) => Some(format!("{to} has no layer: add it to LAYERS and README \"Architecture\"")),
                }
            };
            if let Some(problem) = problem {
                out.push(format!("{from} imports {to}: {problem}"));
            }
        }
    }
    out.extend(cycles(modules));
    out
}

/// A circle of imports through each module that is on one (same-layer imports are allowed,
/// circles are not).
fn cycles(modules: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut out = Vec::new();
    for start in modules.keys() {
        // Depth-first search for a path from `start` back to itself.
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((at, path)) = stack.pop() {
            for next in modules.get(&at).into_iter().flatten().filter(|n| *n != &at) {
                if next == start {
                    out.push(format!("import cycle: {} -> {start}", path.join(" -> ")));
                    stack.clear();
                    break;
                }
                if seen.insert(next.clone()) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    out
}

/// Top-level module → the modules its files import, for every `*.rs` under `src`.
fn scan(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    fn walk(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, files);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(src, &mut files);
    let mut modules: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(src).unwrap();
        let first = relative.components().next().unwrap().as_os_str().to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        modules.entry(module).or_default().extend(imports(&text));
    }
    modules
}

fn graph(edges: &[(&str, &str)]) -> BTreeMap<String, BTreeSet<String>> {
    let mut modules: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, to) in edges {
        modules.entry(from.to_string()).or_default().insert(to.to_string());
    }
    modules
}

#[test]
fn no_module_imports_a_layer_above_it_nor_the_simulator_and_there_is_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = scan(&src);
    assert!(modules.contains_key("plan") && modules["cmd"].contains("pass"), "the scan found the modules: {modules:?}");
    let found = violations(&modules);
    assert!(found.is_empty(), "the layering rule (README \"Architecture\") is broken:\n{}", found.join("\n"));
}

#[test]
fn references_are_found_in_paths_groups_and_nested_groups_but_not_in_comments() {
    let text = "use crate::plan::Plan;\nuse crate::{apply::{self, ApplyConfig}, iam,\n  model::ServiceId};\n\
                /// See [`crate::cmd`].\nlet x = crate::time::now(); my_crate::sim::x();";
    let found: Vec<String> = imports(text).into_iter().collect();
    assert_eq!(found, ["apply", "iam", "model", "plan", "time"]);
}

#[test]
fn an_upward_import_a_simulator_import_and_a_cycle_are_each_reported() {
    let upward = violations(&graph(&[("policy", "cli")]));
    assert_eq!(upward, ["policy imports cli: layer 5 imports layer 1, above it"]);
    let sim = violations(&graph(&[("live", "sim")]));
    assert_eq!(sim, ["live imports sim: only the command layer may use the simulator (feature `sim`)"]);
    let sim_uses_product = violations(&graph(&[("sim", "live")]));
    assert_eq!(sim_uses_product.len(), 1, "{sim_uses_product:?}");
    let commands = violations(&graph(&[("pass", "cmd")]));
    assert_eq!(commands, ["pass imports cmd: nothing imports the command layer"]);
    let cycle = violations(&graph(&[("live", "google"), ("google", "identity"), ("identity", "live")]));
    assert_eq!(cycle.len(), 3, "one report per module on the circle: {cycle:?}");
    assert!(cycle.contains(&"import cycle: live -> google -> identity -> live".to_string()), "{cycle:?}");
    let unknown = violations(&graph(&[("newthing", "plan")]));
    assert_eq!(unknown.len(), 1, "{unknown:?}");
    assert!(violations(&graph(&[("cmd", "sim"), ("pass", "plan"), ("plan", "model")])).is_empty());
}
