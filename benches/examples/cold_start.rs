//! Cold start of the gate service, measured on the real binary: from spawning `facegate run` to
//! the first decision line on its standard output, over several runs.
//!
//! A throwaway site (the shipped config with the liveness challenge off, as the service tests
//! replay recorded clips whose people cannot answer prompts; a new master key; a state
//! directory) gets the person of an evaluation clip (`../shared/eval/video/portrait_d9.mp4`, or
//! `--clip`) enrolled from its first frame with a recorded consent; each run replays the clip's
//! first 90 frames as a Y4M stream (converted once with ffmpeg) as fast as it decodes, which is
//! how `facegate run` takes a camera, and stops at the first decision. Stage marks are the arrival times of the binary's own `info` log
//! lines on stderr (ONNX Runtime ready, the last model loaded, store opened, gallery loaded,
//! running), so the breakdown needs no instrumentation beyond what the service logs anyway.
//!
//! ```text
//! cargo build --release -p facegate && \
//!   cargo run --release -p facegate-benches --example cold_start -- \
//!     [--runs 10] [--binary PATH] [--against OTHER_BINARY] [--clip VIDEO]
//! ```
//!
//! With `--against`, runs of the two binaries alternate (A, B, A, B, ...) on the same site, so a
//! change is measured against its base in one run on a busy machine; each gets its own table.
//!
//! It prints the median, minimum and maximum per mark in milliseconds since the spawn, and the
//! outcomes of the first decisions. A still photo cannot be used: it does not move like a face,
//! so liveness never lets it through to an attempt.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use facegate_benches::workspace_root;
use facegate_store::quantile;

/// The log lines whose arrival marks a stage, and how the report names them.
const MARKS: [(&str, &str); 6] = [
    ("egress guard installed", "main started (guard)"),
    ("onnx runtime ready", "onnx runtime ready"),
    ("model loaded", "models loaded (last)"),
    ("store opened", "store opened"),
    ("gallery loaded", "gallery loaded"),
    ("facegate running", "running (engine built)"),
];

struct Site {
    dir: PathBuf,
    /// The binary that sets the site up (keygen, enroll).
    binary: PathBuf,
}

impl Site {
    fn new(binary: PathBuf, clip: &Path) -> Self {
        let dir = std::env::temp_dir().join(format!("facegate-cold-start-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let root = workspace_root();
        let text = std::fs::read_to_string(root.join("configs/facegate.toml")).unwrap();
        assert!(
            text.contains("challenge = \"always\""),
            "configs/facegate.toml changed"
        );
        let text = text
            .replace("challenge = \"always\"", "challenge = \"off\"")
            .replace(
                "admin_socket = \"/run/facegate/admin.sock\"",
                &format!("admin_socket = {:?}", dir.join("admin.sock")),
            )
            .replace(
                "events_socket = \"/run/facegate/events.sock\"",
                &format!("events_socket = {:?}", dir.join("events.sock")),
            );
        std::fs::write(dir.join("facegate.toml"), text).unwrap();
        let ffmpeg = |args: &[&str]| {
            let out = Command::new("ffmpeg")
                .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i"])
                .arg(clip)
                .args(args)
                .output()
                .expect("ffmpeg (deploy/dev.sh setup installs it)");
            assert!(
                out.status.success(),
                "ffmpeg: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let (frame0, y4m) = (dir.join("frame0.png"), dir.join("clip.y4m"));
        ffmpeg(&["-frames:v", "1", frame0.to_str().unwrap()]);
        ffmpeg(&[
            "-frames:v",
            "90",
            "-pix_fmt",
            "yuv420p",
            y4m.to_str().unwrap(),
        ]);
        let site = Self { dir, binary };
        site.ok(&["keygen", site.path("master.key").to_str().unwrap()]);
        site.ok(&[
            "enroll",
            "emp-1",
            frame0.to_str().unwrap(),
            "--age",
            "30",
            "--operator",
            "bench",
        ]);
        site
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        self.cmd_with(&self.binary, args)
    }

    fn cmd_with(&self, binary: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(binary);
        c.args(args)
            .arg("--config")
            .arg(self.path("facegate.toml"))
            .current_dir(workspace_root())
            .env("FACEGATE_KEY_FILE", self.path("master.key"))
            .env("FACEGATE_STATE_DIR", self.path("state"))
            .env("FACEGATE_LOG", "info,ort=warn");
        c
    }

    fn ok(&self, args: &[&str]) {
        let out = self.cmd(args).output().unwrap();
        assert!(
            out.status.success(),
            "facegate {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// One cold start: milliseconds since the spawn for each mark and for the first decision,
    /// and the first decision's outcome.
    fn run_once(&self, binary: &Path) -> (Vec<Option<f64>>, String) {
        let frames = self.path("clip.y4m");
        let start = Instant::now();
        let mut child = self
            .cmd_with(binary, &["run", "--source", frames.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let marks = std::thread::spawn(move || {
            let mut at = [None; MARKS.len()];
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let ms = start.elapsed().as_secs_f64() * 1e3;
                for (slot, (needle, _)) in at.iter_mut().zip(MARKS) {
                    // The last "model loaded" line wins: all models are loaded then.
                    if line.contains(needle) {
                        *slot = Some(ms);
                    }
                }
            }
            at
        });
        let mut decision = None;
        let mut outcome = String::from("none");
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split_once("\"outcome\":\"").map(|(_, r)| r) {
                decision = Some(start.elapsed().as_secs_f64() * 1e3);
                outcome = rest.split('"').next().unwrap_or("?").to_string();
                // Measured: stop the service (SIGTERM, as systemd does) instead of replaying on.
                let _ = Command::new("kill").arg(child.id().to_string()).status();
                break;
            }
        }
        let _ = child.wait();
        let mut out: Vec<Option<f64>> = marks.join().unwrap().to_vec();
        out.push(decision);
        (out, outcome)
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let runs: usize = arg("--runs").map_or(10, |r| r.parse().expect("--runs N"));
    let binary = arg("--binary").map_or_else(
        || workspace_root().join("target/release/facegate"),
        PathBuf::from,
    );
    let mut binaries = vec![binary];
    binaries.extend(arg("--against").map(PathBuf::from));
    for b in &binaries {
        assert!(
            b.is_file(),
            "{} is missing: cargo build --release -p facegate",
            b.display()
        );
    }
    let clip = arg("--clip").map_or_else(
        || facegate_benches::eval_dir().join("video/portrait_d9.mp4"),
        PathBuf::from,
    );
    assert!(
        clip.is_file(),
        "{} is missing (--clip VIDEO)",
        clip.display()
    );
    let site = Site::new(binaries[0].clone(), &clip);
    // One run of each first so that every measured run finds the files in the page cache, as
    // a restarted service does.
    for b in &binaries {
        site.run_once(b);
    }
    let mut samples: Vec<Vec<Vec<Option<f64>>>> = vec![Vec::new(); binaries.len()];
    let mut outcomes: Vec<Vec<String>> = vec![Vec::new(); binaries.len()];
    for _ in 0..runs {
        for (i, b) in binaries.iter().enumerate() {
            let (marks, outcome) = site.run_once(b);
            samples[i].push(marks);
            outcomes[i].push(outcome);
        }
    }
    let mut decisions = Vec::new();
    for (i, b) in binaries.iter().enumerate() {
        println!(
            "cold start of `{} run` over {runs} runs, ms since spawn (median, min, max):",
            b.display()
        );
        let names = MARKS.iter().map(|(_, n)| *n).chain(["first decision"]);
        for (m, name) in names.enumerate() {
            let v: Vec<f64> = samples[i].iter().filter_map(|s| s[m]).collect();
            if v.len() < runs {
                println!("  {name:<24} missing in {} runs", runs - v.len());
                continue;
            }
            let max = v.iter().copied().fold(f64::MIN, f64::max);
            let median = quantile(&v, 0.5);
            println!(
                "  {name:<24} {median:>7.1} {:>7.1} {max:>7.1}",
                quantile(&v, 0.0)
            );
            if m == MARKS.len() - 1 {
                decisions.push(median);
            }
        }
        println!("  first outcomes: {:?}", outcomes[i]);
    }
    if let [a, b] = decisions[..] {
        println!(
            "running (engine built), median: first / second = {:.2}",
            a / b
        );
    }
}
