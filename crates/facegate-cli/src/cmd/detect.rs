//! `facegate detect IMAGE...`: boxes, scores, quality (and landmarks on request, never in
//! production mode).

use std::process::ExitCode;

use anyhow::{Result, bail};
use facegate_policy::Mode;
use facegate_vision::AnalyseOptions;
use serde_json::json;

use crate::cli::{Cli, DetectArgs};

pub fn run(cli: &Cli, args: &DetectArgs) -> Result<ExitCode> {
    let mut loaded = super::load(cli, |_| {})?;
    if args.landmarks && loaded.config.policy.deployment().mode() == Mode::Production {
        bail!(
            "--landmarks prints face information and is refused in production mode (set [deployment] mode = \"development\")"
        );
    }
    let opts = AnalyseOptions {
        embed: false,
        liveness: loaded.pipeline.has_liveness(),
        max_faces: 64,
    };
    let mut faces = Vec::new();
    let mut failed = false;
    let mut report = Vec::new();
    for path in &args.images {
        let frame = match super::read_image(path, loaded.config.max_pixels) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("facegate: {e:#}");
                failed = true;
                continue;
            }
        };
        let t = loaded.pipeline.analyse(&frame, opts, &mut faces)?;
        let list: Vec<_> = faces
            .iter()
            .map(|f| {
                let mut v = json!({
                    "box": f.detection.bbox,
                    "score": f.detection.score,
                    "quality": f.quality,
                    "quality_ok": f.quality.passes(),
                    "live_probability": f.liveness,
                });
                if args.landmarks {
                    v["landmarks"] = f
                        .landmarks
                        .points()
                        .iter()
                        .map(|p| json!([p.x, p.y]))
                        .collect();
                }
                v
            })
            .collect();
        if !args.json {
            println!(
                "{}: {}x{}, {} face(s), {:.1} ms",
                path.display(),
                frame.width(),
                frame.height(),
                faces.len(),
                crate::output::ms(t.total())
            );
            for (i, f) in faces.iter().enumerate() {
                let b = f.detection.bbox;
                let issues: Vec<String> =
                    f.quality.issues.iter().map(|i| format!("{i:?}")).collect();
                println!(
                    "  #{i} box ({:.0},{:.0})-({:.0},{:.0}) score {:.3} size {:.0}px sharpness {:.0} brightness {:.0} yaw {:.0} pitch {:.0} roll {:.0} live {} quality {}",
                    b.x1,
                    b.y1,
                    b.x2,
                    b.y2,
                    f.detection.score,
                    f.quality.face_px,
                    f.quality.sharpness,
                    f.quality.brightness,
                    f.quality.yaw_deg,
                    f.quality.pitch_deg,
                    f.quality.roll_deg,
                    f.liveness.map_or("-".to_string(), |p| format!("{p:.2}")),
                    if issues.is_empty() {
                        "ok".to_string()
                    } else {
                        issues.join(",")
                    },
                );
                if args.landmarks {
                    let pts: Vec<String> = f
                        .landmarks
                        .points()
                        .iter()
                        .map(|p| format!("({:.1},{:.1})", p.x, p.y))
                        .collect();
                    println!("     landmarks {}", pts.join(" "));
                }
            }
        }
        report.push(json!({ "image": path, "width": frame.width(), "height": frame.height(), "faces": list }));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
