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

/// An evaluation video (`video/<name>` under [`eval_dir`]) that can be converted: `Some(path)`
/// when the file and ffmpeg are there, else [`skip`] naming what is missing and `None`.
#[track_caller]
pub fn eval_video(manifest_dir: &str, name: &str) -> Option<PathBuf> {
    let path = eval_dir(manifest_dir).join("video").join(name);
    if !path.is_file() {
        skip(&format!("evaluation video missing at {}", path.display()));
        return None;
    }
    if !have_ffmpeg() {
        skip(&format!("ffmpeg is needed to convert {}", path.display()));
        return None;
    }
    Some(path)
}

/// The first `frames` frames of `video` as a 4:2:0 Y4M stream at `out` (ffmpeg), the one way
/// every test turns an evaluation clip into a replayable source. Panics naming the clip when
/// ffmpeg cannot run or fails: by then the caller has checked that both are there.
#[track_caller]
pub fn y4m_clip(video: &Path, frames: u32, out: &Path) -> PathBuf {
    let output = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i"])
        .arg(video)
        .args(["-frames:v", &frames.to_string(), "-pix_fmt", "yuv420p"])
        .arg(out)
        .output()
        .unwrap_or_else(|e| panic!("ffmpeg is needed to convert {}: {e}", video.display()));
    assert!(
        output.status.success(),
        "ffmpeg failed on {}: {}",
        video.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    out.to_path_buf()
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

    #[test]
    fn a_clip_that_ffmpeg_cannot_read_is_a_failure_naming_it() {
        if !have_ffmpeg() {
            return skip("ffmpeg missing");
        }
        let dir = std::env::temp_dir().join(format!("facegate-testkit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("not-a-video.mp4");
        std::fs::write(&bad, b"not a video").unwrap();
        let out = dir.join("out.y4m");
        let r = std::panic::catch_unwind(|| y4m_clip(&bad, 1, &out));
        std::fs::remove_dir_all(&dir).unwrap();
        let msg = r.unwrap_err();
        let msg = msg.downcast_ref::<String>().unwrap();
        assert!(
            msg.starts_with("ffmpeg failed on ") && msg.contains("not-a-video.mp4"),
            "{msg}"
        );
    }
}
