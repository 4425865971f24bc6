//! Contract tests: the simulator held against the official SDKs (issues 13 and 14).
//!
//! The Python suite in `tests/contract/` starts `runwarden sim` (this build's binary) and drives
//! it with `auth0-python` and `google-api-python-client` (built from the discovery documents in
//! `shared/reference/google/`), checking every response against the SDK's typed models and the
//! discovery schemas, unknown fields included. This test makes sure the pinned SDKs are installed
//! in a virtualenv under the cargo target directory (keyed by a hash of
//! `tests/contract/requirements.txt`, so a changed pin gets a fresh one), runs the suite, and
//! fails with its output if any check fails.
//!
//! Needs `python3` with `venv` and pip's registry on the first run (about 15 s to install, even
//! with no pip cache); later runs reuse the virtualenv and the suite takes under 10 s.
//! `RUNWARDEN_CONTRACT_PYTHON=/path/to/python` uses an interpreter that already has the SDKs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const REQUIREMENTS: &str = include_str!("contract/requirements.txt");

use crate::common::root as manifest_dir;

/// The cargo target directory: the binary is `TARGET/PROFILE/runwarden`.
fn target_dir() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_runwarden"));
    bin.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir)
}

/// FNV-1a of the pinned requirements: the virtualenv's name.
fn requirements_key() -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in REQUIREMENTS.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn describe(what: &str, out: &Output) -> String {
    format!(
        "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run(what: &str, cmd: &mut Command) -> Result<Output, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{what}: could not start {:?}: {e}", cmd.get_program()))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(describe(what, &out))
    }
}

/// The Python interpreter of a virtualenv with the pinned SDKs, creating it when missing.
/// It is built in a temporary directory and renamed into place once complete, so an
/// interrupted install is never reused and concurrent runs do not see a half-built one.
fn contract_python() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("RUNWARDEN_CONTRACT_PYTHON") {
        return Ok(PathBuf::from(p));
    }
    let venv = target_dir().join(format!("contract-venv-{}", requirements_key()));
    let python = venv.join("bin").join("python");
    if python.exists() {
        return Ok(python);
    }
    // A virtualenv whose interpreter is gone (python3 was upgraded or removed) is rebuilt.
    let _ = std::fs::remove_dir_all(&venv);
    let building = target_dir().join(format!(
        "contract-venv-{}.building-{}",
        requirements_key(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&building);
    run(
        "creating the contract tests' virtualenv (python3 -m venv; install python3 and its venv module)",
        Command::new("python3").arg("-m").arg("venv").arg(&building),
    )?;
    run(
        "installing the contract tests' SDKs (pip install -r tests/contract/requirements.txt; needs the package registry)",
        Command::new(building.join("bin").join("python"))
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--quiet",
                "-r",
            ])
            .arg(manifest_dir().join("tests/contract/requirements.txt")),
    )?;
    match std::fs::rename(&building, &venv) {
        Ok(()) => {}
        // Another run finished first: use its virtualenv.
        Err(_) if python.exists() => {
            let _ = std::fs::remove_dir_all(&building);
        }
        Err(e) => {
            return Err(format!(
                "could not move {} into place: {e}",
                building.display()
            ));
        }
    }
    Ok(python)
}

#[test]
fn simulator_matches_the_official_auth0_and_google_sdks() {
    let python = contract_python().unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(&python)
        .arg(manifest_dir().join("tests/contract/run.py"))
        .env("RUNWARDEN_BIN", env!("CARGO_BIN_EXE_runwarden"))
        .env(
            "RUNWARDEN_WORLD",
            manifest_dir().join("deploy/local/world.yaml"),
        )
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap_or_else(|e| panic!("could not start {}: {e}", python.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the contract suite failed ({}); fix the simulator, or (only where fixing it would change \
         runwarden's behaviour) list the check in tests/contract/known_gaps.py:\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains(" passed, 0 failed"),
        "the contract suite ran no checks:\n{stdout}\n{stderr}"
    );
}
