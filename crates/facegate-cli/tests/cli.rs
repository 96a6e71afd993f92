//! The `facegate` binary as a user runs it: real process, real models, bundled samples.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn facegate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_facegate"))
        .args(args)
        .current_dir(workspace())
        .env_remove("FACEGATE_CONFIG")
        .output()
        .expect("running facegate")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn demo_accepts_the_altered_astronaut_and_rejects_other_people() {
    let out = facegate(&["demo", "--json"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["wrong"], 0);
    let decisions = v["decisions"].as_array().unwrap();
    assert!(decisions.len() >= 6);
    assert!(
        decisions
            .iter()
            .any(|d| d["expected"] == false && d["accepted"] == false)
    );
    assert!(
        decisions
            .iter()
            .filter(|d| d["expected"] == true)
            .all(|d| d["accepted"] == true)
    );
}

#[test]
fn validate_checks_config_and_models() {
    let out = facegate(&["validate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout(&out).contains("hashes and shapes verified"));
}

#[test]
fn compare_and_detect_on_the_bundled_portrait() {
    let a = "models/samples/astronaut.png";
    let out = facegate(&["compare", a, a, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["same_person"], true);
    let out = facegate(&["detect", a, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v[0]["faces"].as_array().unwrap().len(), 1);
    assert!(
        v[0]["faces"][0].get("landmarks").is_none(),
        "landmarks are printed only on request"
    );
}

#[test]
fn bad_input_gives_a_clear_error_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt.jpg");
    std::fs::write(&corrupt, b"\xff\xd8\xff\xe0 definitely not a jpeg").unwrap();
    let out = facegate(&["detect", corrupt.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("corrupt.jpg"));
    // Landmarks are face information: refused in production mode (the default config).
    let out = facegate(&["detect", "--landmarks", "models/samples/astronaut.png"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("production mode"));
    // A config naming a forbidden site kind is refused (Art. 13).
    let cfg = dir.path().join("hotel.toml");
    let text = std::fs::read_to_string(workspace().join("configs/facegate.toml")).unwrap();
    std::fs::write(
        &cfg,
        text.replace(
            "site_kind = \"office_entrance\"",
            "site_kind = \"hotel_room\"",
        ),
    )
    .unwrap();
    let out = facegate(&["validate", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Art. 13"));
}
