//! Fixtures shared by the integration tests of facegate's crates, and the one rule for test
//! data that may be absent: where the evaluation data lives (`../shared/eval` beside the
//! repository, or `$FACEGATE_EVAL_DIR`), and what a test does when it, ffmpeg or a privilege it
//! needs is missing. It prints a loud `SKIPPED:` line and returns, except when
//! `FACEGATE_REQUIRE_EVAL` is set (the project's test command and CI set it): then it fails, so
//! a test that asserted nothing can never pass there. A dev-dependency only; it never holds or
//! writes face data.

use std::path::{Path, PathBuf};

/// The variable that turns every skip into a failure.
pub const REQUIRE_VAR: &str = "FACEGATE_REQUIRE_EVAL";

/// The repository root, from a crate's `CARGO_MANIFEST_DIR` (`crates/<name>`).
pub fn workspace(manifest_dir: &str) -> PathBuf {
    Path::new(manifest_dir).join("../..")
}

/// The evaluation data: `$FACEGATE_EVAL_DIR`, else `../shared/eval` beside the repository.
pub fn eval_dir(manifest_dir: &str) -> PathBuf {
    std::env::var_os("FACEGATE_EVAL_DIR").map_or_else(
        || workspace(manifest_dir).join("../shared/eval"),
        PathBuf::from,
    )
}

/// Whether skips are failures here.
pub fn skips_fail() -> bool {
    std::env::var_os(REQUIRE_VAR).is_some_and(|v| !v.is_empty() && v != "0")
}

/// A test cannot run (`why` names what is missing). Prints `SKIPPED: why` and returns, or
/// panics when [`REQUIRE_VAR`] is set.
#[track_caller]
pub fn skip(why: &str) {
    if skips_fail() {
        panic!("{why}: required here ({REQUIRE_VAR} is set), so this is a failure, not a skip");
    }
    eprintln!("SKIPPED: {why}");
    println!("SKIPPED: {why}");
}

/// `Some(path)` when it exists, else [`skip`] naming it and `None`.
#[track_caller]
pub fn require_path(path: PathBuf, what: &str) -> Option<PathBuf> {
    if path.exists() {
        Some(path)
    } else {
        skip(&format!("{what} missing at {}", path.display()));
        None
    }
}

/// Whether `ffmpeg` runs.
pub fn have_ffmpeg() -> bool {
    std::process::Command::new("ffmpeg")
        .arg("-version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_path_is_none_or_a_failure() {
        let missing = PathBuf::from("/nonexistent/facegate-testkit");
        if skips_fail() {
            let r = std::panic::catch_unwind(|| require_path(missing.clone(), "x"));
            assert!(r.is_err(), "with {REQUIRE_VAR} set a skip must fail");
        } else {
            assert_eq!(require_path(missing, "x"), None);
        }
        assert!(require_path(PathBuf::from("/"), "root").is_some());
    }
}
