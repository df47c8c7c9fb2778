//! The Python interpreter of `target/venv` (made by `scripts/python-env.sh`, which
//! `scripts/test.sh` runs): for tests that drive real client libraries (`gradio_client`,
//! `tritonclient`) or stand-in servers written here (FastAPI, Gradio). Missing is a failure
//! that says what to run, never a skip.

use std::path::PathBuf;
use std::process::Command;

/// The venv's interpreter (`COSYGATE_PYTHON` overrides it).
pub fn python() -> PathBuf {
    let path = std::env::var_os("COSYGATE_PYTHON").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/venv/bin/python"),
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "no Python test environment at {}: run scripts/python-env.sh (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Fails the test unless `module` imports in the venv (names the package to install).
pub fn require_module(module: &str) {
    let ok = Command::new(python())
        .args(["-c", &format!("import {module}")])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "the Python module {module} is missing from the test environment: add its package to \
         tests/python/requirements.txt and run scripts/python-env.sh"
    );
}

/// The directory of the Python files the tests run (`tests/python/`).
pub fn scripts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python")
}
