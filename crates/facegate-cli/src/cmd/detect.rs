//! `facegate detect IMAGE...`: boxes, scores, quality and liveness. Landmarks are never printed
//! (they are biometric data of the person, invariant 3).

use std::process::ExitCode;

use anyhow::Result;
use facegate_vision::AnalyseOptions;
use serde_json::json;

use crate::cli::{Cli, DetectArgs};

pub fn run(cli: &Cli, args: &DetectArgs) -> Result<ExitCode> {
    let mut loaded = super::load(cli, |_| {})?;
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
                let v = json!({
                    "box": f.detection.bbox,
                    "score": f.detection.score,
                    "quality": f.quality,
                    "quality_ok": f.quality.passes(),
                    "live_probability": f.liveness,
                });
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
