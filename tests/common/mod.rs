//! Helpers shared by every feature module of the integration-test binary: the repository root,
//! the real binary, golden files, directory copies, and the loopback proxies that inject faults.

pub mod hostile;
pub mod proxy;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root (where `policies/`, `deploy/` and `tests/golden/` live).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The real `runwarden` binary, to be run from the repository root.
pub fn bin() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_runwarden"));
    command.current_dir(root());
    command
}

/// Runs the binary with `args` from the repository root (`RUST_LOG=warn`); returns
/// (exit code, stdout, stderr).
pub fn runwarden(args: &[&str]) -> (i32, String, String) {
    let out = bin().args(args).env("RUST_LOG", "warn").output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// The demo world's file (`deploy/local/world.yaml`).
pub fn demo_world_path() -> PathBuf {
    root().join("deploy/local/world.yaml")
}

/// The demo world, parsed.
pub fn demo_world() -> runwarden::sim::World {
    runwarden::sim::World::from_file(&demo_world_path()).expect("the demo world loads")
}

/// The example policies (`policies/`), loaded at the current time.
pub fn example_policies() -> runwarden::policy::model::Desired {
    let dir = root().join("policies");
    runwarden::policy::load_at(&dir, std::time::SystemTime::now())
        .unwrap_or_else(|e| panic!("the policies under {} load: {e}", dir.display()))
}

/// Output of one run of the binary.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl From<std::process::Output> for Run {
    fn from(out: std::process::Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Compares `actual` with the golden file `path`; `RUNWARDEN_BLESS=1` rewrites it first.
/// `stale` is what the failure says after the path (how to refresh the file).
pub fn assert_golden(path: &Path, actual: &str, stale: &str) {
    if std::env::var_os("RUNWARDEN_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with RUNWARDEN_BLESS=1 to create it",
            path.display()
        )
    });
    assert!(
        actual == expected,
        "{} is stale; {stale}\n--- actual ---\n{actual}",
        path.display()
    );
}

/// Copies the directory `from` into `to`, recursively (e.g. the example policies into a temp
/// dir a test may edit).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
