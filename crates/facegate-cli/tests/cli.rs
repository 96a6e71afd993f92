//! The `facegate` binary as a user runs it: real process, real models, bundled samples.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn workspace() -> PathBuf {
    facegate_testkit::workspace(env!("CARGO_MANIFEST_DIR"))
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
    // Landmarks are biometric data: no option prints them.
    let out = facegate(&["detect", "--landmarks", "models/samples/astronaut.png"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--landmarks"));
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

#[test]
fn operator_flow_keygen_enroll_identify_withdraw_audit() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("master.key");
    let state = dir.path().join("state");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_facegate"))
            .args(args)
            .current_dir(workspace())
            .env("FACEGATE_KEY_FILE", &key)
            .env("FACEGATE_STATE_DIR", &state)
            .env_remove("FACEGATE_CONFIG")
            .output()
            .unwrap()
    };
    let astronaut = "models/samples/astronaut.png";
    let camera = "models/samples/camera.png";
    assert!(run(&["keygen", key.to_str().unwrap()]).status.success());
    // keygen never overwrites a key.
    assert!(!run(&["keygen", key.to_str().unwrap()]).status.success());
    // A child needs a guardian (Art. 7): refused, nothing enrolled.
    let out = run(&[
        "enroll",
        "kid-1",
        astronaut,
        "--age",
        "9",
        "--operator",
        "op",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("guardian"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&[
        "enroll",
        "emp-1",
        astronaut,
        "--age",
        "40",
        "--operator",
        "op",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["identify", astronaut, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["subject"], "emp-1");
    let out = run(&["identify", camera, "--json"]);
    assert_eq!(out.status.code(), Some(1), "another person is unknown");
    let out = run(&["verify", "emp-1", astronaut]);
    assert!(out.status.success());
    let out = run(&["consent", "withdraw", "emp-1", "--operator", "op"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout(&out).contains("1 template(s) deleted"));
    let out = run(&["identify", astronaut, "--json"]);
    assert_eq!(out.status.code(), Some(1), "withdrawal deletes at once");
    let out = run(&["audit", "verify", "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["intact"], true);
    let out = run(&["audit", "export"]);
    let kinds: Vec<String> = stdout(&out)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for k in ["consent", "enroll", "identify", "verify", "withdrawal"] {
        assert!(kinds.iter().any(|x| x == k), "no {k} record in {kinds:?}");
    }
    // `identify` and `verify` decide through the engine's decider: their records carry the
    // gate's decision, method and reason, and agree with the command's answer.
    let decided: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["kind"] == "identify" || r["kind"] == "verify")
        .map(|r| match &r["details"] {
            serde_json::Value::String(s) => serde_json::from_str(s).unwrap(),
            d => d.clone(),
        })
        .collect();
    let decisions: Vec<&str> = decided
        .iter()
        .map(|d| d["decision"].as_str().unwrap_or("missing"))
        .collect();
    assert_eq!(
        decisions,
        ["granted", "unknown", "granted", "unknown"],
        "{decided:?}"
    );
    assert!(
        decided
            .iter()
            .all(|d| d["method"] == "face" && d["frames"] == 1 && d.get("reason").is_some()),
        "{decided:?}"
    );
    // No template value ever reaches the audit export.
    assert!(!stdout(&out).contains("embedding"));
    // The export carries the chain links: it can be checked later, away from the database.
    let export = dir.path().join("audit.jsonl");
    std::fs::write(&export, stdout(&out)).unwrap();
    let out = run(&["audit", "verify", "--export", export.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("every mac checked"),
        "{}",
        stdout(&out)
    );
    let edited = std::fs::read_to_string(&export).unwrap().replacen(
        "\"outcome\":\"ok\"",
        "\"outcome\":\"refused\"",
        1,
    );
    std::fs::write(&export, edited).unwrap();
    let out = run(&["audit", "verify", "--export", export.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("edited"), "{}", stdout(&out));
    // Pruning records younger than three years is refused (Art. 9).
    let out = run(&[
        "audit",
        "prune",
        "--older-than-days",
        "0",
        "--operator",
        "op",
    ]);
    assert!(!out.status.success());
    // Rotation: afterwards only the new key opens the store.
    let new_key = dir.path().join("new.key");
    assert!(run(&["keygen", new_key.to_str().unwrap()]).status.success());
    let out = run(&[
        "rotate-key",
        "--new-key-file",
        new_key.to_str().unwrap(),
        "--operator",
        "op",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["subjects", "list"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "the old key no longer opens the store"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("wrong master key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&new_key, &key).unwrap();
    let out = run(&["report", "pia"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout(&out).contains("access_control"));
}

#[test]
fn gallery_bench_reports_median_and_p95() {
    let out = facegate(&[
        "bench",
        "gallery",
        "--size",
        "2000",
        "--queries",
        "20",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(v["median_ms"].as_f64().unwrap() > 0.0);
    assert!(v["p95_ms"].as_f64().unwrap() >= v["median_ms"].as_f64().unwrap());
    // Every mode in the one run, each agreeing with the exact scan on every probe.
    let modes = v["modes"].as_array().unwrap();
    let names: Vec<&str> = modes.iter().map(|m| m["mode"].as_str().unwrap()).collect();
    assert_eq!(names, ["exact", "quantised", "prefiltered"]);
    for m in modes {
        assert_eq!(m["top1_agree"], 20, "{m}");
        assert_eq!(m["decision_agree"], serde_json::json!([20, 20]), "{m}");
        assert!(m["p95_ms"].as_f64().unwrap() >= m["median_ms"].as_f64().unwrap());
    }
    assert_eq!(v["bytes_per_template"], 512 * 5 + 4 * 64 + 17);
    // The prefilter's checks narrow down: Hamming, then asymmetric, then all four codes.
    let left = modes[2]["survivors_median"].as_array().unwrap();
    let left: Vec<f64> = left.iter().map(|x| x.as_f64().unwrap()).collect();
    assert!(left[0] >= left[1] && left[1] >= left[2], "{left:?}");
    // The population's impostor tail rises with the rate falling, as a calibration's does.
    let tail: Vec<f64> = v["profile"]["impostor_tail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert!(tail.windows(2).all(|w| w[0] <= w[1]), "{tail:?}");
}

#[test]
fn credentials_are_issued_listed_and_revoked_without_any_face_consent() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("master.key");
    let state = dir.path().join("state");
    let run = |args: &[&str], stdin: Option<&str>| {
        use std::io::Write;
        let mut child = Command::new(env!("CARGO_BIN_EXE_facegate"))
            .args(args)
            .current_dir(workspace())
            .env("FACEGATE_KEY_FILE", &key)
            .env("FACEGATE_STATE_DIR", &state)
            .env_remove("FACEGATE_CONFIG")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            // A command refused before it reads (QR off, say) may be gone already: EPIPE.
            let _ = input.write_all(text.as_bytes());
        }
        drop(input);
        child.wait_with_output().unwrap()
    };
    assert!(
        run(&["keygen", key.to_str().unwrap()], None)
            .status
            .success()
    );
    // A person who refused face recognition gets a generated PIN, shown once.
    let out = run(
        &[
            "credential",
            "issue",
            "visitor-7",
            "--kind",
            "pin",
            "--generate",
            "--operator",
            "op",
            "--json",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let pin = v["pin"].as_str().unwrap().to_owned();
    assert_eq!(pin.len(), 6);
    // A card number from standard input; never from the command line.
    let out = run(
        &[
            "credential",
            "issue",
            "visitor-7",
            "--kind",
            "card",
            "--label",
            "blue card",
            "--operator",
            "op",
        ],
        Some("04a1b2c3\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // QR is off in the default config: refused with the key to change.
    let out = run(
        &[
            "credential",
            "issue",
            "visitor-7",
            "--kind",
            "qr",
            "--operator",
            "op",
        ],
        Some("payload\n"),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("[alternatives] qr = true"));
    // A malformed PIN is refused with the rule.
    let out = run(
        &[
            "credential",
            "issue",
            "visitor-8",
            "--kind",
            "pin",
            "--operator",
            "op",
        ],
        Some("12ab\n"),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("digits only"));
    let out = run(&["credential", "list", "--json"], None);
    let list: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert!(!stdout(&out).contains(&pin) && !stdout(&out).to_uppercase().contains("04A1B2C3"));
    // No subject exists: the register stands on its own.
    let out = run(&["subjects", "list"], None);
    assert!(!stdout(&out).contains("visitor-7"), "{}", stdout(&out));
    let out = run(
        &[
            "credential",
            "revoke",
            "visitor-7",
            "--kind",
            "card",
            "--operator",
            "op",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout(&out).contains("revoked 1"));
    let out = run(&["audit", "export"], None);
    let text = stdout(&out);
    assert!(text.contains("\"kind\":\"credential_issue\""));
    assert!(text.contains("\"kind\":\"credential_revoke\""));
    assert!(!text.contains(&pin));
}

#[test]
fn validate_for_the_service_checks_source_gate_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("master.key");
    assert!(
        facegate(&["keygen", key.to_str().unwrap()])
            .status
            .success()
    );
    let base = std::fs::read_to_string(workspace().join("configs/facegate.toml")).unwrap();
    let y4m = dir.path().join("replay.y4m");
    std::fs::write(&y4m, b"YUV4MPEG2 W8 H8 F30:1 C420jpeg\n").unwrap();
    let check = |edits: &[(&str, &str)]| {
        let mut text = base.replace(
            "key_credential = \"facegate-master-key\"",
            &format!("key_file = {:?}", key.to_str().unwrap()),
        );
        for (from, to) in edits {
            assert!(text.contains(from), "{from}");
            text = text.replacen(from, to, 1);
        }
        let cfg = dir.path().join("facegate.toml");
        std::fs::write(&cfg, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_facegate"))
            .args(["validate", "--service", "--config", cfg.to_str().unwrap()])
            .current_dir(workspace())
            .env_remove("FACEGATE_KEY_FILE")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let replay = format!("source = {:?}", y4m.to_str().unwrap());
    let (code, err) = check(&[("source = \"camera:0\"", &replay)]);
    assert_eq!(code, Some(0), "{err}");
    // A camera that is not there.
    let (code, err) = check(&[("source = \"camera:0\"", "source = \"camera:9\"")]);
    assert_eq!(code, Some(2));
    assert!(err.contains("service.source /dev/video9"), "{err}");
    // A gate program that does not exist.
    let (code, err) = check(&[
        ("source = \"camera:0\"", &replay),
        (
            "output = \"dry_run\"",
            "output = \"command\"\ncommand = [\"/nonexistent/relay\"]",
        ),
    ]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("gate.command \"/nonexistent/relay\" is not an executable file"),
        "{err}"
    );
    // A GPIO chip that is not there.
    let (code, err) = check(&[
        ("source = \"camera:0\"", &replay),
        ("output = \"dry_run\"", "output = \"gpio\""),
        (
            "gpio_chip = \"/dev/gpiochip0\"",
            "gpio_chip = \"/dev/gpiochip99\"",
        ),
    ]);
    assert_eq!(code, Some(2));
    assert!(err.contains("gate.gpio_chip /dev/gpiochip99"), "{err}");
    // An OSDP reader: its serial device must be there, its SCBK private.
    let scbk = dir.path().join("osdp.scbk");
    std::fs::write(&scbk, "00112233445566778899aabbccddeeff\n").unwrap();
    let osdp = |device: &str| {
        format!(
            "output = \"osdp\"\nosdp_device = {device:?}\nosdp_scbk_file = {:?}",
            scbk.to_str().unwrap()
        )
    };
    let (code, err) = check(&[
        ("source = \"camera:0\"", &replay),
        ("output = \"dry_run\"", &osdp("/dev/ttyUSB97")),
    ]);
    assert_eq!(code, Some(2));
    assert!(err.contains("gate.osdp_device /dev/ttyUSB97"), "{err}");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&scbk, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, err) = check(&[
        ("source = \"camera:0\"", &replay),
        ("output = \"dry_run\"", &osdp("/dev/null")),
    ]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("mode 0644 lets others read it; chmod 600 it"),
        "{err}"
    );
    std::fs::set_permissions(&scbk, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, err) = check(&[
        ("source = \"camera:0\"", &replay),
        ("output = \"dry_run\"", &osdp("/dev/null")),
    ]);
    assert_eq!(code, Some(0), "{err}");
    // A missing master key file.
    std::fs::remove_file(&key).unwrap();
    let (code, err) = check(&[("source = \"camera:0\"", &replay)]);
    assert_eq!(code, Some(2));
    assert!(err.contains("master key file"), "{err}");
}

#[test]
fn the_unit_dropin_allows_exactly_the_configured_serial_device() {
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::read_to_string(workspace().join("configs/facegate.toml")).unwrap();
    let cfg = dir.path().join("facegate.toml");
    std::fs::write(
        &cfg,
        base.replacen("output = \"dry_run\"", "output = \"osdp\"", 1)
            .replacen(
                "# osdp_device = \"/dev/ttyUSB0\"",
                "osdp_device = \"/dev/ttyS4\"",
                1,
            )
            .replacen(
                "# osdp_scbk_credential = \"facegate-osdp-scbk\"",
                "osdp_scbk_credential = \"facegate-osdp-scbk\"",
                1,
            ),
    )
    .unwrap();
    let out = facegate(&["gate", "unit-dropin", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    let settings: Vec<_> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        settings,
        [
            "[Service]",
            "DeviceAllow=/dev/ttyS4 rw",
            "LoadCredentialEncrypted=facegate-osdp-scbk:/etc/credstore.encrypted/facegate-osdp-scbk",
            "SupplementaryGroups=dialout",
        ]
    );
    // Any other output needs none, and says so.
    let out = facegate(&[
        "gate",
        "unit-dropin",
        "--config",
        workspace().join("configs/facegate.toml").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("gate.output = \"dry_run\" needs no serial device"),
        "{out:?}"
    );
}

#[test]
fn gallery_bench_refuses_an_impossible_size_before_allocating() {
    for (flag, value) in [("--size", "1000000000000"), ("--dim", "100000000")] {
        let out = facegate(&["bench", "gallery", flag, value]);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag) && err.contains("must lie in"), "{err}");
        assert_eq!(err.lines().count(), 1, "one clear line: {err}");
    }
}

/// ONNX Runtime writes nothing under the home directory (it wrote a device id and an event
/// database under ~/.cache with telemetry "off"): the binary switches it off at the source.
#[test]
fn onnx_runtime_leaves_the_home_directory_untouched() {
    let home = tempfile::tempdir().unwrap();
    for args in [
        &["validate"][..],
        &["detect", "models/samples/astronaut.png"][..],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_facegate"))
            .args(args)
            .current_dir(workspace())
            .env_remove("FACEGATE_CONFIG")
            .env_remove("ORT_DISABLE_TELEMETRY")
            .env_remove("XDG_CACHE_HOME")
            .env("HOME", home.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let written: Vec<_> = walk(home.path());
    assert!(written.is_empty(), "written under HOME: {written:?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

/// A models folder beside a copy of the manifest changed by `edit`, and a config that uses it.
fn site_with_manifest(edit: impl Fn(&str) -> String, runtime_line: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    std::fs::create_dir(&models).unwrap();
    for sub in ["weights", "runtime", "samples"] {
        std::os::unix::fs::symlink(workspace().join("models").join(sub), models.join(sub)).unwrap();
    }
    let manifest = std::fs::read_to_string(workspace().join("models/manifest.toml")).unwrap();
    std::fs::write(models.join("manifest.toml"), edit(&manifest)).unwrap();
    let config = std::fs::read_to_string(workspace().join("configs/facegate.toml")).unwrap();
    let config = config.replacen(
        "[models]",
        "[models]\nmanifest = \"models/manifest.toml\"",
        1,
    );
    let config = config.replacen("[runtime]", &format!("[runtime]\n{runtime_line}"), 1);
    std::fs::write(dir.path().join("facegate.toml"), config).unwrap();
    dir
}

fn validate_in(dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_facegate"))
        .args(["validate", "--config"])
        .arg(dir.join("facegate.toml"))
        .current_dir(workspace())
        .env_remove("FACEGATE_CONFIG")
        .env_remove("ORT_DYLIB_PATH")
        .output()
        .unwrap()
}

#[test]
fn implausible_calibration_and_unverified_runtime_libraries_are_refused() {
    // The control: an unchanged copy validates, so the failures below are the edits' doing.
    let same = site_with_manifest(str::to_string, "");
    let out = validate_in(same.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A manifest cosine of -0.9 would identify strangers.
    let negative = site_with_manifest(|m| m.replace("cosine = 0.4332", "cosine = -0.9"), "");
    let err = String::from_utf8_lossy(&validate_in(negative.path()).stderr).into_owned();
    assert!(err.contains("-0.9") && err.contains("(0, 1)"), "{err}");
    // A threshold that falls as the false-match rate falls is not a calibration.
    let inverted = site_with_manifest(|m| m.replace("cosine = 0.4332", "cosine = 0.30"), "");
    let err = String::from_utf8_lossy(&validate_in(inverted.path()).stderr).into_owned();
    assert!(err.contains("must rise"), "{err}");

    // An explicit library path that does not exist: an error, no fallback.
    let missing = site_with_manifest(
        str::to_string,
        "onnxruntime = \"/nonexistent/libonnxruntime.so\"",
    );
    let out = validate_in(missing.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("/nonexistent/libonnxruntime.so") && err.contains("not a file"),
        "{err}"
    );
    // A library whose hash is not the manifest's.
    let wrong = site_with_manifest(
        |m| {
            m.replacen(
                "sha256 = \"fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3\"",
                "sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"",
                1,
            )
        },
        "",
    );
    let out = validate_in(wrong.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("ONNX Runtime library") && err.contains("sha256 mismatch"),
        "{err}"
    );
}

/// A 1x1 paletted PNG whose PLTE chunk is 4 bytes (not a multiple of 3): png 0.18.1 panics
/// on it ("range end index 3 out of range", transform/palette.rs). Built with Python's zlib:
/// IHDR(1, 1, depth 8, colour type 3), PLTE 01 02 03 04, IDAT zlib(00 00), IEND.
const PNG_PALETTE_OF_4_BYTES: [u8; 83] = [
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x03, 0x00, 0x00, 0x00, 0x28, 0xcb, 0x34,
    0xbb, 0x00, 0x00, 0x00, 0x04, 0x50, 0x4c, 0x54, 0x45, 0x01, 0x02, 0x03, 0x04, 0x23, 0xdb, 0x8a,
    0xab, 0x00, 0x00, 0x00, 0x0a, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x60, 0x00, 0x00, 0x00,
    0x02, 0x00, 0x01, 0x48, 0xaf, 0xa4, 0x71, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae,
    0x42, 0x60, 0x82,
];

/// A decoder panic (png 0.18.1 on a 4-byte palette) is one line on stderr, no backtrace.
#[test]
fn a_decoder_panic_is_reported_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("palette.png");
    std::fs::write(&bad, PNG_PALETTE_OF_4_BYTES).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_facegate"))
        .args(["detect", bad.to_str().unwrap()])
        .current_dir(workspace())
        .env_remove("FACEGATE_CONFIG")
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // 1: no usable image; never 101 (panic) or 134 (abort).
    assert_eq!(out.status.code(), Some(1), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains("decoder panicked"), "{err}");
    assert!(!err.contains("stack backtrace"), "{err}");
}

/// The evaluation data, for tests that must fail (not skip) without it.
fn eval_dir() -> PathBuf {
    let dir = std::env::var_os("FACEGATE_EVAL_DIR")
        .map_or_else(|| workspace().join("../shared/eval"), PathBuf::from);
    assert!(
        dir.join("lfw/images").is_dir(),
        "evaluation data missing at {}/lfw/images (set FACEGATE_EVAL_DIR)",
        dir.display()
    );
    dir
}

/// Writes `side` x `side` pixels of `frame` from (`x0`, `y0`), scaled to `out` x `out`, as a
/// binary PPM (nothing of the evaluation data is kept beyond the test's temporary folder).
fn write_crop(frame: &facegate_types::Frame, x0: u32, y0: u32, side: u32, out: u32, to: &Path) {
    let mut bytes = format!("P6\n{out} {out}\n255\n").into_bytes();
    for y in 0..out {
        for x in 0..out {
            let sx = ((x0 + x * side / out).min(frame.width() - 1) * 3) as usize;
            let sy = (y0 + y * side / out).min(frame.height() - 1);
            bytes.extend_from_slice(&frame.row(sy)[sx..sx + 3]);
        }
    }
    std::fs::write(to, bytes).unwrap();
}

/// Two frames side by side on a grey canvas, as one PPM (a photo with two people).
fn write_side_by_side(a: &facegate_types::Frame, b: &facegate_types::Frame, to: &Path) {
    let (w, h) = (a.width() + b.width(), a.height().max(b.height()));
    let mut bytes = format!("P6\n{w} {h}\n255\n").into_bytes();
    for y in 0..h {
        for f in [a, b] {
            if y < f.height() {
                bytes.extend_from_slice(&f.row(y)[..f.width() as usize * 3]);
            } else {
                bytes.extend(std::iter::repeat_n(128u8, f.width() as usize * 3));
            }
        }
    }
    std::fs::write(to, bytes).unwrap();
}

/// Issue 7, enrollment that cannot be poisoned, as an operator meets it on real LFW photos:
/// two people in one enrollment, the same face under a second id (and the audited override),
/// re-enrollment, a photo with two people, a JPEG cut in half, and fragments of a face.
#[test]
fn enrollment_cannot_be_poisoned() {
    let eval = eval_dir();
    let lfw = |name: &str, n: u32| {
        eval.join(format!("lfw/images/{name}/{name}_{n:04}.jpg"))
            .to_str()
            .unwrap()
            .to_owned()
    };
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("master.key");
    let state = dir.path().join("state");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_facegate"))
            .args(args)
            .current_dir(workspace())
            .env("FACEGATE_KEY_FILE", &key)
            .env("FACEGATE_STATE_DIR", &state)
            .env_remove("FACEGATE_CONFIG")
            .output()
            .unwrap()
    };
    let stderr = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();
    let enroll = |subject: &str, extra: &[&str]| {
        let mut args = vec!["enroll", subject, "--age", "40", "--operator", "op"];
        args.extend_from_slice(extra);
        run(&args)
    };
    let enrolled = || {
        let out = run(&["subjects", "list", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .filter(|s| s["templates"].as_u64() > Some(0))
            .map(|s| s["subject"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert!(run(&["keygen", key.to_str().unwrap()]).status.success());

    // Two people in one enrollment: refused, naming the sample and its file; nothing stored.
    let (bush, powell) = ("George_W_Bush", "Colin_Powell");
    let out = enroll("emp-1", &[&lfw(bush, 1), &lfw(bush, 2), &lfw(powell, 1)]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("sample 3") && err.contains("Colin_Powell_0001.jpg"),
        "{err}"
    );
    assert!(enrolled().is_empty());
    let out = enroll("emp-1", &[&lfw(bush, 1), &lfw(bush, 2)]);
    assert!(out.status.success(), "{}", stderr(&out));

    // The same photo, and another photo of him, under a second id: refused, naming emp-1.
    for photo in [lfw(bush, 1), lfw(bush, 5)] {
        let out = enroll("emp-2", &[&photo]);
        assert_eq!(out.status.code(), Some(2));
        let err = stderr(&out);
        assert!(
            err.contains("emp-1") && err.contains("--allow-duplicate-of emp-1"),
            "{err}"
        );
    }
    assert_eq!(enrolled(), ["emp-1"]);
    // Re-enrolling emp-1 is fine.
    let out = enroll("emp-1", &[&lfw(bush, 6)]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The override needs a reason, must name the subject matched, and is audited.
    let out = enroll("emp-2", &[&lfw(bush, 5), "--allow-duplicate-of", "emp-1"]);
    assert_eq!(out.status.code(), Some(2), "--reason is required");
    let out = enroll(
        "emp-2",
        &[
            &lfw(bush, 5),
            "--allow-duplicate-of",
            "emp-9",
            "--reason",
            "x",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = enroll(
        "emp-2",
        &[
            &lfw(bush, 5),
            "--allow-duplicate-of",
            "emp-1",
            "--reason",
            "visitor badge of the same man",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let audit = stdout(&run(&["audit", "export"]));
    let record = audit
        .lines()
        .find(|l| l.contains("ok_duplicate_allowed"))
        .expect("an audit record of the override");
    assert!(record.contains("emp-1") && record.contains("visitor badge of the same man"));
    assert!(audit.contains("\"refused\""), "the refusals are audited");

    // A photo with two people: refused with the count, unless one is picked.
    let a = facegate_capture::decode_image_file(lfw(powell, 2), 1 << 24).unwrap();
    let b = facegate_capture::decode_image_file(lfw("Tony_Blair", 2), 1 << 24).unwrap();
    let pair = dir.path().join("two_people.ppm");
    write_side_by_side(&a, &b, &pair);
    let pair = pair.to_str().unwrap();
    let out = enroll("emp-3", &[pair]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("2 faces found") && err.contains("--face") && err.contains("--largest"),
        "{err}"
    );
    let out = enroll("emp-3", &[pair, "--face", "3"]);
    assert!(stderr(&out).contains("--face 3, but 2 face(s) found"));
    let out = enroll("emp-3", &[pair, "--largest"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // A JPEG cut to half its bytes: refused, not enrolled as a grey-padded half face.
    let full = std::fs::read(lfw("Tony_Blair", 3)).unwrap();
    let half = dir.path().join("half.jpg");
    std::fs::write(&half, &full[..full.len() / 2]).unwrap();
    let out = enroll("emp-4", &[half.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("truncated JPEG") && stderr(&out).contains("half.jpg"),
        "{}",
        stderr(&out)
    );

    // Fragments (one eye; the nose and mouth) of deep-funneled LFW faces, scaled up so the
    // detector fires on some: every one refused, some of them as not a whole face.
    let mut not_whole = 0;
    for name in [
        "Tony_Blair",
        "Gerhard_Schroeder",
        "Donald_Rumsfeld",
        "Ariel_Sharon",
        "Hugo_Chavez",
        "Jacques_Chirac",
    ] {
        let f = facegate_capture::decode_image_file(lfw(name, 1), 1 << 24).unwrap();
        for (what, x0, y0, side) in [("eye", 82, 88, 44), ("lower", 70, 120, 110)] {
            let crop = dir.path().join(format!("{name}_{what}.ppm"));
            write_crop(&f, x0, y0, side, 220, &crop);
            let out = enroll("emp-5", &[crop.to_str().unwrap()]);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{name} {what} enrolled");
            assert!(
                err.contains("not a whole face")
                    || err.contains("no face found")
                    || err.contains("fails quality"),
                "{err}"
            );
            not_whole += usize::from(err.contains("not a whole face"));
        }
    }
    assert!(not_whole >= 1, "no fragment reached the whole-face check");
    assert_eq!(enrolled(), ["emp-1", "emp-2", "emp-3"]);
}

/// Issue 7: live enrollment (`--from`, here a replayed Y4M clip) takes frames that pass
/// quality, liveness and the whole-face check, and goes through the same store checks as
/// photos: the same person enrolled from the clip again under another id is refused.
#[test]
fn live_enrollment_goes_through_the_same_checks() {
    let video = eval_dir().join("video/portrait_d9.mp4");
    assert!(
        video.is_file(),
        "evaluation video missing: {}",
        video.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let y4m = facegate_testkit::y4m_clip(&video, 60, &dir.path().join("d9.y4m"));
    let key = dir.path().join("master.key");
    let state = dir.path().join("state");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_facegate"))
            .args(args)
            .current_dir(workspace())
            .env("FACEGATE_KEY_FILE", &key)
            .env("FACEGATE_STATE_DIR", &state)
            .env_remove("FACEGATE_CONFIG")
            .output()
            .unwrap()
    };
    assert!(run(&["keygen", key.to_str().unwrap()]).status.success());
    let from = y4m.to_str().unwrap();
    // With the shipped config (challenge always), a recording cannot answer the prompts: the
    // enrollment is refused and nothing is stored.
    let out = run(&[
        "enroll",
        "emp-recorded",
        "--from",
        from,
        "--age",
        "30",
        "--operator",
        "op",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    // The challenge is drawn at random: it fails within the clip, or the clip ends before any
    // live sample was taken. Either way nobody is enrolled.
    assert!(
        err.contains("not accepted as a live face (liveness:challenge_")
            || err.contains("only 0 of 3 good, live samples"),
        "{err}"
    );
    let listed = run(&["subjects", "list"]);
    assert!(
        !String::from_utf8_lossy(&listed.stdout).contains("emp-recorded"),
        "{}",
        String::from_utf8_lossy(&listed.stdout)
    );
    // The rest is about the enrollment checks: the challenge off (motion cues and the passive
    // model still decide liveness).
    let config = dir.path().join("facegate.toml");
    let text = std::fs::read_to_string(workspace().join("configs/facegate.toml")).unwrap();
    assert!(text.contains("challenge = \"always\""));
    std::fs::write(
        &config,
        text.replace("challenge = \"always\"", "challenge = \"off\""),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let live = |subject: &str| {
        run(&[
            "--config",
            config,
            "enroll",
            subject,
            "--from",
            from,
            "--age",
            "30",
            "--operator",
            "op",
        ])
    };
    let out = live("emp-live");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout(&out).contains("from 3 sample(s)"));
    let out = live("emp-again");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already matches enrolled subject emp-live"),
        "{err}"
    );
}

/// `facegate eval liveness` on `../shared/eval`: the figures in the README, pinned with a
/// tolerance so that a regression of any signal fails here.
#[test]
fn liveness_evaluation_pins_the_readme_figures() {
    let dir = eval_dir();
    assert!(
        dir.join("liveness").is_dir(),
        "evaluation data missing: {}",
        dir.display()
    );
    let out = Command::new(env!("CARGO_BIN_EXE_facegate"))
        .args([
            "eval", "liveness", "--seeds", "20", "--photos", "2", "--json",
        ])
        .arg("--dir")
        .arg(&dir)
        .current_dir(workspace())
        .env_remove("FACEGATE_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rate = |mode: &str, species: &str| {
        let t = &r[mode][species];
        let n = t["presentations"].as_f64().unwrap();
        assert!(n >= 20.0, "{mode} {species}: {t}");
        t["accepted"].as_f64().unwrap() / n
    };
    println!("LIVENESS {r}");
    // The challenge on (the shipped mode): no attack of any species passes, live people do.
    for species in [
        "still_photo",
        "moved_photo",
        "screen_replay",
        "recorded_live",
    ] {
        assert_eq!(
            rate("always", species),
            0.0,
            "{species} under the challenge"
        );
    }
    assert!(rate("always", "live") >= 0.95, "live pass rate");
    let took = r["always"]["live"]["median_s_to_live"].as_f64().unwrap();
    assert!(
        took <= 8.0,
        "median time to live with the challenge: {took} s"
    );
    // The challenge off: the motion cues and the passive model alone. Stills are mostly found
    // frozen, replays mostly by the passive model; a recording of the live person passes (the
    // reason the challenge is on by default).
    assert!(rate("off", "live") >= 0.95);
    assert!(rate("off", "still_photo") <= 0.25);
    assert!(rate("off", "screen_replay") <= 0.40);
    assert!(rate("off", "recorded_live") >= 0.90);
    let off_took = r["off"]["live"]["median_s_to_live"].as_f64().unwrap();
    assert!(off_took <= 1.0, "{off_took}");
}

/// The whole of what an operator reads for the errors met most (`facegate: error: ` and the
/// `{:#}` chain): each cause appears once, and nothing else is added or lost.
mod operator_errors {
    use super::*;

    fn stderr(o: &Output) -> String {
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    fn with_store(state: &Path, key: &Path, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_facegate"))
            .args(["--state-dir", state.to_str().unwrap()])
            .args(["--key-file", key.to_str().unwrap()])
            .args(args)
            .current_dir(workspace())
            .env_remove("FACEGATE_CONFIG")
            .output()
            .unwrap()
    }

    /// `facegate keygen` at `path`, returning the key id it reports.
    fn keygen(path: &Path) -> String {
        let out = facegate(&["keygen", path.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        text.strip_prefix("new master key ")
            .and_then(|t| t.split_whitespace().next())
            .unwrap_or_else(|| panic!("no key id in {text:?}"))
            .to_string()
    }

    #[test]
    fn a_missing_config_file() {
        let out = facegate(&["validate", "--config", "/nonexistent/facegate.toml"]);
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(
            stderr(&out),
            "facegate: error: reading config /nonexistent/facegate.toml: No such file or \
             directory (os error 2)\n"
        );
    }

    #[test]
    fn an_unknown_config_key() {
        let dir = tempfile::tempdir().unwrap();
        let text = std::fs::read_to_string(workspace().join("configs/facegate.toml")).unwrap();
        let line = text.lines().position(|l| l == "[vision]").unwrap() + 2;
        let cfg = dir.path().join("facegate.toml");
        std::fs::write(&cfg, text.replacen("[vision]", "[vision]\nsurprise = 1", 1)).unwrap();
        let out = facegate(&["validate", "--config", cfg.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2));
        let pad = " ".repeat(line.to_string().len());
        assert_eq!(
            stderr(&out),
            format!(
                "facegate: error: config {}: TOML parse error at line {line}, column 1\n\
                 {pad} |\n\
                 {line} | surprise = 1\n\
                 {pad} | ^^^^^^^^\n\
                 unknown field `surprise`, expected one of `flip_tta`, `liveness`, \
                 `detector_threshold`, `precision`, `quality`\n\n",
                cfg.display()
            )
        );
    }

    #[test]
    fn a_wrong_master_key_and_a_missing_database() {
        let dir = tempfile::tempdir().unwrap();
        let (k1, k2) = (dir.path().join("k1"), dir.path().join("k2"));
        let (id1, id2) = (keygen(&k1), keygen(&k2));
        let state = dir.path().join("state");
        let out = with_store(&state, &k1, &["subjects", "list"]);
        assert!(out.status.success(), "{}", stderr(&out));

        let out = with_store(&state, &k2, &["subjects", "list"]);
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(
            stderr(&out),
            format!(
                "facegate: error: opening the store in {}: wrong master key (expected key id \
                 {id1}, got {id2}); use the key this database was created or last rotated with\n",
                state.display()
            )
        );

        let marker = std::fs::read_to_string(state.join("store.id")).unwrap();
        let created: i64 = marker
            .lines()
            .find_map(|l| l.strip_prefix("created_at="))
            .unwrap()
            .parse()
            .unwrap();
        for f in ["facegate.db", "facegate.db-wal", "facegate.db-shm"] {
            let _ = std::fs::remove_file(state.join(f));
        }
        let out = with_store(&state, &k1, &["subjects", "list"]);
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(
            stderr(&out),
            format!(
                "facegate: error: opening the store in {s}: database {s}/facegate.db is missing \
                 or empty, but this state directory holds a store created at {at} (master key \
                 {id1}): refusing to start a new, empty store in its place. Restore the database \
                 from the latest sealed backup; to really start afresh, move the whole state \
                 directory away first\n",
                s = state.display(),
                at = facegate_types::UnixMillis(created).rfc3339(),
            )
        );
    }

    /// An OS error reaches the operator once, after the path it is about.
    #[test]
    fn a_state_directory_that_cannot_be_made() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k");
        keygen(&key);
        let file = dir.path().join("plain-file");
        std::fs::write(&file, b"").unwrap();
        let state = file.join("state");
        let out = with_store(&state, &key, &["subjects", "list"]);
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(
            stderr(&out),
            format!(
                "facegate: error: opening the store in {s}: {s}: Not a directory (os error 20)\n",
                s = state.display()
            )
        );
    }

    #[test]
    fn a_model_with_the_wrong_hash() {
        const DETECTOR: &str = "6c0256ccd3164f844736a401faf936ec2930764a87ae39442180887d0c5c8854";
        let zeros = "0".repeat(64);
        let site = site_with_manifest(|m| m.replacen(DETECTOR, &zeros, 1), "");
        let out = validate_in(site.path());
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(
            stderr(&out),
            format!(
                "facegate: error: loading the vision pipeline: model detector ({}): sha256 mismatch, expected {zeros}, found \
                 {DETECTOR}\n",
                site.path().join("models/weights/fr_detect.onnx").display()
            )
        );
    }
}

/// One terminal of a site for the transfer test: its own key file and state directory.
struct Gate {
    key: PathBuf,
    state: PathBuf,
}

impl Gate {
    fn new(dir: &Path, name: &str) -> Self {
        Self {
            key: dir.join(format!("{name}.key")),
            state: dir.join(name),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_facegate"))
            .args(args)
            .current_dir(workspace())
            .env("FACEGATE_KEY_FILE", &self.key)
            .env("FACEGATE_STATE_DIR", &self.state)
            .env_remove("FACEGATE_CONFIG")
            .output()
            .unwrap()
    }

    /// Runs and requires success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}\n{}",
            stdout(&out),
            String::from_utf8_lossy(&out.stderr)
        );
        stdout(&out)
    }

    /// Runs and requires the error exit; returns stderr.
    fn refused(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?} should be refused: {}",
            stdout(&out)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

#[test]
fn an_enrollment_moves_between_terminals_only_with_a_transfer_consent_and_a_withdrawal_follows() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let (a, b, c) = (
        Gate::new(dir.path(), "gate-a"),
        Gate::new(dir.path(), "gate-b"),
        Gate::new(dir.path(), "gate-c"),
    );
    // Each terminal: master key and transfer keys in one keygen; the public line is printed.
    for (g, name) in [(&a, "gate-a"), (&b, "gate-b"), (&c, "gate-c")] {
        let key = g.key.to_str().unwrap().to_owned();
        let line = g.ok(&[
            "keygen",
            &key,
            "--terminal",
            "--name",
            name,
            "--public-out",
            &p(&format!("{name}.pub")),
        ]);
        assert!(line.contains("facegate-terminal v1 "), "{line}");
        // Asked again, the keys are kept, not replaced.
        let again = g.ok(&["keygen", "--terminal"]);
        assert_eq!(again.lines().last(), line.lines().last());
    }
    let astronaut = "models/samples/astronaut.png";
    a.ok(&[
        "enroll",
        "emp-1",
        astronaut,
        "--age",
        "40",
        "--operator",
        "op",
    ]);

    // No transfer consent: no export (Art. 6, 8), and no file.
    let err = a.refused(&[
        "enrollment",
        "export",
        "emp-1",
        "--to",
        &p("gate-b.pub"),
        "--out",
        &p("t1.json"),
        "--operator",
        "op",
    ]);
    assert!(
        err.contains("no live transfer consent naming terminal"),
        "{err}"
    );
    assert!(!dir.path().join("t1.json").exists());
    let out = a.ok(&[
        "consent",
        "grant",
        "emp-1",
        "--age",
        "40",
        "--operator",
        "op",
        "--transfer-to",
        &p("gate-b.pub"),
    ]);
    assert!(out.contains("separate from the face consent"), "{out}");
    for t in ["t1.json", "t2.json"] {
        let out = a.ok(&[
            "enrollment",
            "export",
            "emp-1",
            "--to",
            &p("gate-b.pub"),
            "--out",
            &p(t),
            "--operator",
            "op",
        ]);
        assert!(out.contains("1 template(s)"), "{out}");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }

    // Refusals on the way in: another terminal, another sender, one changed byte.
    let err = c.refused(&[
        "enrollment",
        "import",
        &p("t2.json"),
        "--from",
        &p("gate-a.pub"),
        "--operator",
        "op",
    ]);
    assert!(err.contains("is addressed to terminal"), "{err}");
    let err = b.refused(&[
        "enrollment",
        "import",
        &p("t2.json"),
        "--from",
        &p("gate-c.pub"),
        "--operator",
        "op",
    ]);
    assert!(err.contains("named with --from"), "{err}");
    let mut bytes = std::fs::read(dir.path().join("t2.json")).unwrap();
    let at = String::from_utf8_lossy(&bytes)
        .find("\"sealed\": \"")
        .unwrap()
        + 20;
    bytes[at] = if bytes[at] == b'a' { b'b' } else { b'a' };
    std::fs::write(dir.path().join("tampered.json"), &bytes).unwrap();
    let err = b.refused(&[
        "enrollment",
        "import",
        &p("tampered.json"),
        "--from",
        &p("gate-a.pub"),
        "--operator",
        "op",
    ]);
    assert!(err.contains("does not verify"), "{err}");
    let out = b.run(&["identify", astronaut, "--json"]);
    assert_eq!(out.status.code(), Some(1), "nothing was stored on b");

    // The genuine bundle: emp-1 is identified on b, with a's consent.
    let out = b.ok(&[
        "enrollment",
        "import",
        &p("t2.json"),
        "--from",
        &p("gate-a.pub"),
        "--operator",
        "op",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["subject"], "emp-1");
    let v: serde_json::Value =
        serde_json::from_str(&b.ok(&["identify", astronaut, "--json"])).unwrap();
    assert_eq!(v["subject"], "emp-1");
    let out = b.run(&["identify", "models/samples/camera.png", "--json"]);
    assert_eq!(out.status.code(), Some(1), "another person stays unknown");
    // The same bundle twice, and the older one after the newer: replays.
    let err = b.refused(&[
        "enrollment",
        "import",
        &p("t2.json"),
        "--from",
        &p("gate-a.pub"),
        "--operator",
        "op",
    ]);
    assert!(err.contains("imported already"), "{err}");
    let err = b.refused(&[
        "enrollment",
        "import",
        &p("t1.json"),
        "--from",
        &p("gate-a.pub"),
        "--operator",
        "op",
    ]);
    assert!(err.contains("an older transfer is refused"), "{err}");

    // Where emp-1 went, from a's records.
    let v: serde_json::Value =
        serde_json::from_str(&a.ok(&["subjects", "where", "emp-1", "--json"])).unwrap();
    let list = v.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert!(
        list.iter()
            .all(|t| t["direction"] == "sent_to" && t["name"] == "gate-b")
    );

    // Withdrawal at a: a signed notice, applied on b: the template is gone at once.
    let out = a.ok(&[
        "consent",
        "withdraw",
        "emp-1",
        "--operator",
        "op",
        "--notice-out",
        &p("notice.json"),
    ]);
    assert!(out.contains("gate-b"), "{out}");
    let out = b.ok(&[
        "consent",
        "apply-withdrawal",
        &p("notice.json"),
        "--operator",
        "op",
    ]);
    assert!(out.contains("1 template(s) deleted"), "{out}");
    let out = b.run(&["identify", astronaut, "--json"]);
    assert_eq!(out.status.code(), Some(1), "the notice deletes at once");
    let out = b.ok(&[
        "consent",
        "apply-withdrawal",
        &p("notice.json"),
        "--operator",
        "op",
    ]);
    assert!(out.contains("applied before"), "{out}");
    // c never exchanged emp-1 with a: the notice is not c's to apply.
    let err = c.refused(&[
        "consent",
        "apply-withdrawal",
        &p("notice.json"),
        "--operator",
        "op",
    ]);
    assert!(err.contains("no transfer of that subject"), "{err}");
    // And a has nothing left to send.
    let err = a.refused(&[
        "enrollment",
        "export",
        "emp-1",
        "--to",
        &p("gate-b.pub"),
        "--out",
        &p("t3.json"),
        "--operator",
        "op",
    ]);
    assert!(err.contains("no live face consent"), "{err}");

    // A deletion on request reaches the other terminal the same way.
    a.ok(&[
        "enroll",
        "emp-2",
        astronaut,
        "--age",
        "50",
        "--operator",
        "op",
    ]);
    a.ok(&[
        "consent",
        "grant",
        "emp-2",
        "--age",
        "50",
        "--operator",
        "op",
        "--transfer-to",
        &p("gate-c.pub"),
    ]);
    a.ok(&[
        "enrollment",
        "export",
        "emp-2",
        "--to",
        &p("gate-c.pub"),
        "--out",
        &p("t4.json"),
        "--operator",
        "op",
    ]);
    c.ok(&[
        "enrollment",
        "import",
        &p("t4.json"),
        "--from",
        &p("gate-a.pub"),
        "--operator",
        "op",
    ]);
    a.ok(&[
        "subjects",
        "delete",
        "emp-2",
        "--operator",
        "op",
        "--notice-out",
        &p("deleted.json"),
    ]);
    let out = c.ok(&[
        "consent",
        "apply-withdrawal",
        &p("deleted.json"),
        "--operator",
        "op",
    ]);
    assert!(out.contains("1 template(s) deleted"), "{out}");
    let out = c.run(&["identify", astronaut, "--json"]);
    assert_eq!(out.status.code(), Some(1), "deleted on c too");

    // Both processing records are intact and hold the transfer.
    for (g, kinds) in [
        (&a, ["export", "withdrawal"]),
        (&b, ["import", "withdrawal"]),
    ] {
        let v: serde_json::Value =
            serde_json::from_str(&g.ok(&["audit", "verify", "--json"])).unwrap();
        assert_eq!(v["intact"], true);
        let export = g.ok(&["audit", "export"]);
        for k in kinds {
            assert!(
                export.contains(&format!("\"kind\":\"{k}\"")),
                "no {k} in the audit"
            );
        }
        assert!(!export.contains("embedding"));
    }
}

#[test]
fn report_filing_merge_counts_distinct_people_over_terminals_by_subject_id() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    let run = |state: &str, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_facegate"))
            .args(args)
            .current_dir(workspace())
            .env("FACEGATE_KEY_FILE", &key)
            .env("FACEGATE_STATE_DIR", dir.path().join(state))
            .env_remove("FACEGATE_CONFIG")
            .output()
            .unwrap()
    };
    let ok = |o: Output| {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        o
    };
    assert!(
        run("a", &["keygen", key.to_str().unwrap()])
            .status
            .success()
    );
    // The one bundled photo that passes quality; a store refuses one face under two ids, so
    // each terminal holds it under one id: a and b as emp-1, c as emp-2 (after emp-3 was
    // withdrawn there: a subject without templates is not counted).
    let astronaut = "models/samples/astronaut.png";
    let enroll = |state: &str, subject: &str| {
        ok(run(
            state,
            &[
                "enroll",
                subject,
                astronaut,
                "--age",
                "40",
                "--operator",
                "op",
            ],
        ));
    };
    enroll("a", "emp-1");
    enroll("b", "emp-1");
    enroll("c", "emp-3");
    ok(run(
        "c",
        &["consent", "withdraw", "emp-3", "--operator", "op"],
    ));
    enroll("c", "emp-2");
    let export = |state: &str, terminal: &str| {
        let path = dir.path().join(format!("{terminal}.json"));
        let p = path.to_str().unwrap().to_owned();
        ok(run(
            state,
            &["report", "filing", "--export", &p, "--terminal", terminal],
        ));
        p
    };
    let (a, b, c) = (
        export("a", "gate-a"),
        export("b", "gate-b"),
        export("c", "gate-c"),
    );
    let text = std::fs::read_to_string(&c).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["subjects"], serde_json::json!(["emp-2"]), "{text}");
    assert!(!text.contains("embedding") && !text.contains("template"));

    let out = ok(run("a", &["report", "filing", "--merge", &a, &b, &c]));
    let md = stdout(&out);
    assert!(
        md.contains("Distinct people (by subject id): **2**"),
        "{md}"
    );
    assert!(md.contains("1 stored at more than one terminal"), "{md}");
    assert!(md.contains("add up to 3"), "{md}");
    assert!(
        md.contains("| gate-a |") && md.contains("| gate-c |"),
        "{md}"
    );
    assert!(
        md.contains("2 people stored; Art. 15 filing is due at 100000"),
        "{md}"
    );

    // The export is audited on its terminal.
    let out = ok(run("a", &["audit", "export"]));
    assert!(stdout(&out).contains("filing_export"));

    // Clear refusals, each naming the file.
    let fail = |args: &[&str]| {
        let mut full = vec!["report", "filing", "--merge"];
        full.extend_from_slice(args);
        let out = run("a", &full);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let missing = dir.path().join("nope.json");
    let err = fail(&[&a, missing.to_str().unwrap()]);
    assert!(
        err.contains("reading filing export") && err.contains("nope.json"),
        "{err}"
    );
    let err = fail(&[&a, &a]);
    assert!(
        err.contains("terminal \"gate-a\" is already given by"),
        "{err}"
    );
    let other = dir.path().join("other.json");
    std::fs::write(
        &other,
        text.replace(
            &format!("{:?}", v["processor"].as_str().unwrap()),
            "\"Other Ltd\"",
        ),
    )
    .unwrap();
    let err = fail(&[&a, other.to_str().unwrap()]);
    assert!(err.contains("processor \"Other Ltd\" differs"), "{err}");
    let config = workspace().join("configs/facegate.toml");
    let err = fail(&[config.to_str().unwrap()]);
    assert!(err.contains("not a filing export"), "{err}");
}

/// `facegate eval fpir` on a fixed 1,500 people of LFW (a shorter run than the README's 5,749;
/// the thresholds come from the same manifest): every gallery size and target the derivation
/// promises must be met, and one it cannot promise must say so. A target counts as missed when
/// the measurement shows it with 95 % confidence, the tolerance the searches allow: the lower
/// bound of the false positives per stranger search (Poisson), and of the first photos'
/// per-pair rate times N (the expected FPIR over every random gallery of these people, an
/// upper bound of it since the margin rule only removes matches), must stay at or below the
/// target. FNIR is pinned too, so that a threshold made stricter than the rule needs fails.
#[test]
fn fpir_evaluation_meets_every_promised_target() {
    use facegate_vision::eval::lower95;
    let dir = eval_dir();
    let out = Command::new(env!("CARGO_BIN_EXE_facegate"))
        .args([
            "eval",
            "fpir",
            "--people",
            "1500",
            "--sizes",
            "100,1000",
            "--fpir",
            "1e-2,1e-3,1e-4",
            "--seeds",
            "20",
            "--json",
        ])
        .arg("--lfw")
        .arg(dir.join("lfw"))
        .current_dir(workspace())
        .env_remove("FACEGATE_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    println!("FPIR {r}");
    assert_eq!(r["people"], 1500);
    let pairs = r["population_pairs"].as_u64().unwrap();
    let rows = r["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 6);
    let row = |n: u64, target: f64| {
        rows.iter()
            .find(|x| {
                x["gallery"] == n
                    && (x["fpir_target"].as_f64().unwrap() / target - 1.0).abs() < 1e-9
            })
            .unwrap_or_else(|| panic!("no row for {n} at {target}"))
    };
    for x in rows {
        let n = x["gallery"].as_u64().unwrap();
        let target = x["fpir_target"].as_f64().unwrap();
        if !x["met"].as_bool().unwrap() {
            continue;
        }
        let fp = x["false_positives"].as_u64().unwrap();
        let searches = x["stranger_searches"].as_u64().unwrap();
        assert!(searches >= 20 * 400, "{x}");
        assert!(
            lower95(fp, searches) <= target,
            "N {n}, target {target:e}: {fp} false positives in {searches} searches: {x}"
        );
        let above = x["population_pairs_above"].as_u64().unwrap();
        assert!(
            n as f64 * lower95(above, pairs) <= target,
            "N {n}, target {target:e}: {above} of {pairs} first-photo pairs above the threshold: {x}"
        );
    }
    // 1e-4 at 1,000 people needs a per-pair rate of 1e-7 at 95 % confidence, which 22.7 M
    // calibration pairs cannot show: the derivation says so instead of promising it.
    assert_eq!(row(1000, 1e-4)["met"], false);
    assert!(row(100, 1e-4)["met"].as_bool().unwrap());
    // The rule picks each point by its 95 % bound (1e-3 at 1,000 people: the point 5e-7, whose
    // bound 8.0e-7 is below the 1e-6 needed; the nominal 1e-6 point's bound is 1.38e-6).
    assert_eq!(
        row(1000, 1e-3)["threshold"].as_f64().unwrap() as f32,
        0.7550
    );
    assert_eq!(row(100, 1e-2)["threshold"].as_f64().unwrap() as f32, 0.4567);
    // FNIR where the thresholds are usable (measured: see the README), with room for noise.
    for (n, target, most) in [(100, 1e-2, FNIR_100_1E2), (1000, 1e-2, FNIR_1000_1E2)] {
        let fnir = row(n, target)["fnir"].as_f64().unwrap();
        assert!(fnir <= most, "FNIR at N {n}, {target:e}: {fnir}");
    }
}

/// FNIR pinned by `fpir_evaluation_meets_every_promised_target`: measured 4.2 % (601 mated
/// searches) and 10.5 % (6,154), with room for noise.
const FNIR_100_1E2: f64 = 0.06;
const FNIR_1000_1E2: f64 = 0.12;

/// `eval lfw --tight-crop --landmarks-from-uncropped` (the README's measurement of where the
/// tight crops lose accuracy) on the first 40 same and 40 different DevTest pairs: every crop
/// gets its uncropped image's face, and with those landmarks the crops score at least as well
/// as the product's own look at them (98.8 % against 98.1 % on all of DevTest, flip on).
#[test]
fn tight_crops_aligned_with_the_uncropped_landmarks_score_at_least_the_product() {
    let dir = eval_dir();
    let run = |extra: &[&str]| -> serde_json::Value {
        let out = Command::new(env!("CARGO_BIN_EXE_facegate"))
            .args(["eval", "lfw", "--limit", "40", "--tight-crop", "--json"])
            .args(extra)
            .arg("--pairs")
            .arg(dir.join("lfw/pairsDevTest.txt"))
            .current_dir(workspace())
            .env_remove("FACEGATE_CONFIG")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let oracle = run(&["--landmarks-from-uncropped"]);
    let product = run(&[]);
    println!("TIGHT oracle {oracle}\nTIGHT product {product}");
    assert_eq!(oracle["pairs"], 80);
    assert_eq!(oracle["landmarks_from_uncropped"], true);
    assert_eq!(oracle["tight_crop"], "both");
    assert_eq!(oracle["images_without_face"], 0);
    assert_eq!(product["landmarks_from_uncropped"], false);
    let acc = |v: &serde_json::Value| v["accuracy"].as_f64().unwrap();
    assert!(
        acc(&oracle) >= acc(&product),
        "{} < {}",
        acc(&oracle),
        acc(&product)
    );
}

#[test]
fn facegate_relay_hands_over_to_the_relay_binary() {
    // `cargo test --workspace` builds facegate-relay beside this binary; alone, `cargo build
    // --release -p facegate-relay` first (the error says so).
    let out = facegate(&[
        "relay",
        "validate",
        "--config",
        "configs/facegate-relay.toml",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout(&out).contains(
            "ok: events from /run/facegate/events.sock to mqtt://127.0.0.1:1883 as facegate-relay-gate-1"
        ),
        "{}",
        stdout(&out)
    );
    // The relay's own errors come through, with its exit status.
    let out = facegate(&["relay", "validate", "--config", "/nonexistent/relay.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "facegate-relay: error: relay config /nonexistent/relay.toml: cannot be read"
        )
    );
}

/// `[vision] precision`: the int8 embedder built at set-up, its own model id and thresholds,
/// and the errors an operator sees when it is asked for but absent.
mod precision {
    use super::*;

    fn with_precision(dir: &Path, line: &str) {
        let path = dir.join("facegate.toml");
        let config = std::fs::read_to_string(&path).unwrap();
        let config = config.replacen("precision = \"fp32\"", line, 1);
        assert!(
            config.contains(line),
            "the default config names the precision"
        );
        std::fs::write(&path, config).unwrap();
    }

    #[test]
    fn int8_is_chosen_in_the_config_with_its_own_model_id_and_threshold() {
        let fp32 = site_with_manifest(str::to_string, "");
        let out = validate_in(fp32.path());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let fp32_out = stdout(&out);
        let int8 = site_with_manifest(str::to_string, "");
        with_precision(int8.path(), "precision = \"int8\"");
        let out = validate_in(int8.path());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let int8_out = stdout(&out);
        assert!(
            fp32_out.contains("embedder arcface-r100-faceplugin:")
                && int8_out.contains("embedder arcface-r100-faceplugin-int8:"),
            "{fp32_out}\n{int8_out}"
        );
        // Its own calibration: the thresholds differ.
        let threshold = |s: &str| s.split("match threshold ").nth(1).map(str::to_string);
        assert_ne!(threshold(&fp32_out), threshold(&int8_out));
    }

    #[test]
    fn int8_asked_for_but_not_built_or_misspelt_is_a_clear_error() {
        let absent = site_with_manifest(
            |m| {
                m.replace(
                    "weights/fr_feature_int8.onnx",
                    "weights/never_built_int8.onnx",
                )
            },
            "",
        );
        with_precision(absent.path(), "precision = \"int8\"");
        let err = String::from_utf8_lossy(&validate_in(absent.path()).stderr).into_owned();
        assert!(
            err.contains("embedder (int8)")
                && err.contains("never_built_int8.onnx")
                && err.contains("deploy/dev.sh setup"),
            "{err}"
        );
        let none = site_with_manifest(|m| m.replace("precision = \"int8\"", ""), "");
        let err = String::from_utf8_lossy(&validate_in(none.path()).stderr).into_owned();
        assert!(
            err.contains("arcface-r100-faceplugin-int8") && err.contains("int8"),
            "an int8 build without its precision is refused: {err}"
        );
        let typo = site_with_manifest(str::to_string, "");
        with_precision(typo.path(), "precision = \"int4\"");
        let err = String::from_utf8_lossy(&validate_in(typo.path()).stderr).into_owned();
        assert!(err.contains("int4") && err.contains("fp32"), "{err}");
    }

    /// `eval lfw --no-flip --json` on LFW View 1 DevTest (never used for the int8 calibration,
    /// which is DevTrain) with the default config's precision replaced by `precision`.
    fn dev_test(precision: &str) -> serde_json::Value {
        let dir = eval_dir();
        let site = site_with_manifest(str::to_string, "");
        with_precision(site.path(), &format!("precision = \"{precision}\""));
        let out = Command::new(env!("CARGO_BIN_EXE_facegate"))
            .args(["eval", "lfw", "--no-flip", "--json", "--config"])
            .arg(site.path().join("facegate.toml"))
            .arg("--pairs")
            .arg(dir.join("lfw/pairsDevTest.txt"))
            .current_dir(workspace())
            .env_remove("FACEGATE_CONFIG")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        println!("{precision} DevTest {v}");
        assert_eq!(v["pairs"], 1000);
        assert_eq!(v["images_without_face"], 0, "{v}");
        v
    }

    /// The int8 embedder's accuracy on DevTest, flip off, against its pinned figure and
    /// against the fp32 embedder measured in the same test: fails if the quantisation (its
    /// settings, ranges or equalisation) loses accuracy.
    #[test]
    fn int8_keeps_its_accuracy_on_lfw_dev_test() {
        let int8 = dev_test("int8");
        let fp32 = dev_test("fp32");
        assert!(int8["model"].as_str().unwrap().contains("-int8:"), "{int8}");
        assert!(
            !fp32["model"].as_str().unwrap().contains("-int8:"),
            "{fp32}"
        );
        let acc = |v: &serde_json::Value| v["accuracy"].as_f64().unwrap();
        let (a8, a32) = (acc(&int8), acc(&fp32));
        assert!(
            a8 >= INT8_DEVTEST_ACCURACY - DEVTEST_TOLERANCE,
            "int8 DevTest accuracy {a8} < {INT8_DEVTEST_ACCURACY} - {DEVTEST_TOLERANCE}"
        );
        assert!(
            a8 >= a32 - DEVTEST_TOLERANCE,
            "int8 DevTest accuracy {a8} more than {DEVTEST_TOLERANCE} below fp32's {a32}"
        );
    }

    /// The int8 DevTest accuracy (flip off) measured on 2026-12-02 with the equalised build
    /// (README, "int8 embedder"): 99.60 %, as fp32's (the previous build: 99.50 %).
    const INT8_DEVTEST_ACCURACY: f64 = 0.996;
    /// Two pairs in 1,000: room for another CPU's int8 kernels, not for a worse build.
    const DEVTEST_TOLERANCE: f64 = 0.002;
}
