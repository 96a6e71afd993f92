//! `facegate demo`: the default job, no camera needed. The astronaut portrait shipped in
//! scikit-image's wheel is enrolled, with a recorded consent, in a temporary encrypted store;
//! altered copies of it (crop, scale, exposure, mirror) must be identified as her, and other
//! faces (scikit-image's cameraman, and LFW faces when `../shared/eval` is beside the repository)
//! must be unknown. Then her consent is withdrawn and the same photo must be unknown. Exit
//! status 1 if any decision is wrong.

use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Arc;

use anyhow::{Context, Result};
use facegate_engine::{Against, Decider, Outcome};
use facegate_policy::{ConsentMethod, ConsentRecord};
use facegate_store::{MasterKey, Store};
use facegate_types::{Clock, Frame, SubjectId, SystemClock};
use serde_json::json;

use crate::cli::{Cli, DemoArgs};

/// `frame` cropped to `(x, y, w, h)` (clipped to the frame).
fn crop(frame: &Frame, x: u32, y: u32, w: u32, h: u32) -> Result<Frame> {
    let (x, y) = (x.min(frame.width() - 1), y.min(frame.height() - 1));
    let (w, h) = (w.min(frame.width() - x), h.min(frame.height() - y));
    let mut data = Vec::with_capacity((w * h * 3) as usize);
    for row in y..y + h {
        data.extend_from_slice(&frame.row(row)[(x * 3) as usize..((x + w) * 3) as usize]);
    }
    Ok(Frame::from_rgb8(w, h, data)?)
}

/// Half size by 2x2 averaging.
fn half(frame: &Frame) -> Result<Frame> {
    let (w, h) = (frame.width() / 2, frame.height() / 2);
    let mut data = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        let (r0, r1) = (frame.row(2 * y), frame.row(2 * y + 1));
        for x in 0..w as usize {
            for c in 0..3 {
                let i = 6 * x + c;
                let s = u16::from(r0[i])
                    + u16::from(r0[i + 3])
                    + u16::from(r1[i])
                    + u16::from(r1[i + 3]);
                data.push(((s + 2) / 4) as u8);
            }
        }
    }
    Ok(Frame::from_rgb8(w, h, data)?)
}

/// Every channel `v * gain + offset`, clamped.
fn exposure(frame: &Frame, gain: f32, offset: f32) -> Result<Frame> {
    let mut data = Vec::with_capacity((frame.width() * frame.height() * 3) as usize);
    for y in 0..frame.height() {
        data.extend(
            frame
                .row(y)
                .iter()
                .map(|v| (f32::from(*v) * gain + offset).clamp(0.0, 255.0) as u8),
        );
    }
    Ok(Frame::from_rgb8(frame.width(), frame.height(), data)?)
}

/// Mirrored left to right.
fn mirror(frame: &Frame) -> Result<Frame> {
    let mut data = Vec::with_capacity((frame.width() * frame.height() * 3) as usize);
    for y in 0..frame.height() {
        for px in frame.row(y).chunks_exact(3).rev() {
            data.extend_from_slice(px);
        }
    }
    Ok(Frame::from_rgb8(frame.width(), frame.height(), data)?)
}

/// Up to `n` LFW images of different people, when the evaluation data is present.
fn lfw_strangers(n: usize) -> Vec<PathBuf> {
    let root = std::env::var_os("FACEGATE_EVAL_DIR")
        .map_or_else(|| PathBuf::from("../shared/eval"), PathBuf::from)
        .join("lfw/images");
    let Ok(dirs) = std::fs::read_dir(&root) else {
        return Vec::new();
    };
    let mut names: Vec<PathBuf> = dirs.filter_map(|d| d.ok().map(|d| d.path())).collect();
    names.sort();
    names
        .iter()
        .filter_map(|d| {
            let name = d.file_name()?.to_string_lossy().into_owned();
            let img = d.join(format!("{name}_0001.jpg"));
            img.is_file().then_some(img)
        })
        .step_by(97)
        .take(n)
        .collect()
}

/// A throwaway store in a temporary folder, with a master key that lives only in memory.
fn demo_store(config: &crate::config::Config, dir: &std::path::Path) -> Result<Store> {
    let key = MasterKey::generate().context("generating a demo master key")?;
    Ok(Store::open(
        dir,
        &key,
        Arc::new(SystemClock),
        &config.policy,
    )?)
}

pub fn run(cli: &Cli, args: &DemoArgs) -> Result<ExitCode> {
    let mut loaded = super::load(cli, |_| {})?;
    let ec = loaded
        .config
        .engine_config(&loaded.manifest, loaded.pipeline.embedding_dim())?;
    let decider = Decider::new(&ec).with_operator("demo");
    let (threshold, margin) = (decider.threshold(), decider.margin());
    let fmr = loaded.config.policy.matching().fmr();
    let max = loaded.config.max_pixels;
    let astronaut_path = loaded
        .manifest
        .sample("astronaut")
        .context("the bundled astronaut portrait (run deploy/dev.sh setup)")?;
    let astronaut = super::read_image(&astronaut_path, max)?;
    let reference_face = loaded
        .pipeline
        .embed_largest(&astronaut)
        .context("astronaut: no usable face")?;
    let reference = reference_face
        .embedding
        .clone()
        .context("astronaut: no embedding")?;

    // Enroll her, with a recorded consent, in a temporary encrypted store.
    let state = tempfile::tempdir().context("creating a temporary state directory")?;
    let mut store = demo_store(&loaded.config, state.path())?;
    let subject = SubjectId::new("astronaut")?;
    let now = SystemClock.now();
    let record = ConsentRecord {
        subject: subject.clone(),
        age_years: 40,
        purpose: loaded.config.policy.purpose(),
        notice_version: loaded.config.policy.notice().version(),
        method: ConsentMethod::Terminal,
        operator: "demo".into(),
        guardian: None,
        granted_at: now,
    };
    let consent = loaded.config.policy.grant(record, now)?;
    store.record_consent(&consent)?;
    store.enroll(
        &consent,
        std::slice::from_ref(&reference),
        loaded.pipeline.model_id(),
    )?;
    store.load_gallery(loaded.pipeline.model_id(), loaded.pipeline.embedding_dim())?;

    let b = reference_face.detection.bbox;
    let (bw, bh) = (b.width(), b.height());
    let mut probes: Vec<(String, Frame, bool)> = vec![
        (
            "astronaut, cropped to twice the face box".into(),
            crop(
                &astronaut,
                (b.x1 - bw / 2.0).max(0.0) as u32,
                (b.y1 - bh / 2.0).max(0.0) as u32,
                (2.0 * bw) as u32,
                (2.0 * bh) as u32,
            )?,
            true,
        ),
        ("astronaut, half size".into(), half(&astronaut)?, true),
        (
            "astronaut, 40% darker".into(),
            exposure(&astronaut, 0.6, 0.0)?,
            true,
        ),
        (
            "astronaut, brighter (+40)".into(),
            exposure(&astronaut, 1.0, 40.0)?,
            true,
        ),
        ("astronaut, mirrored".into(), mirror(&astronaut)?, true),
    ];
    let camera = loaded
        .manifest
        .sample("cameraman")
        .context("the bundled cameraman image (run deploy/dev.sh setup)")?;
    probes.push((
        "cameraman (another person)".into(),
        super::read_image(&camera, max)?,
        false,
    ));
    let strangers = lfw_strangers(4);
    if strangers.is_empty() {
        eprintln!("note: ../shared/eval/lfw not found; only the bundled images are used");
    }
    for p in strangers {
        let name = p
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        probes.push((
            format!("LFW {name} (another person)"),
            super::read_image(&p, max)?,
            false,
        ));
    }
    if !args.json {
        println!(
            "enrolled: astronaut portrait ({}) with a recorded consent, in an encrypted store in {}",
            astronaut_path.display(),
            state.path().display()
        );
        println!(
            "identifying (1:N) at threshold {threshold:.4}{}, margin {margin}",
            fmr.map_or(String::new(), |f| format!(" (FMR {f:e})"))
        );
    }
    let mut wrong = 0;
    let mut rows = Vec::new();
    let mut identify = |store: &mut Store, frame: &Frame| -> Result<(Option<f32>, bool)> {
        let Ok(face) = loaded.pipeline.embed_largest(frame) else {
            return Ok((None, false));
        };
        let e = face.embedding.context("no embedding")?;
        let (d, matched) = decider.decide_once(store, &e, Against::Gallery)?;
        let best = matched
            .as_ref()
            .and_then(|m| m.identification.as_ref())
            .and_then(|i| i.best());
        let matched = d.outcome == Outcome::Granted && d.subject.as_ref() == Some(&subject);
        Ok((best.map(|h| h.score), matched))
    };
    for (what, frame, expect_same) in &probes {
        let (similarity, decision) = identify(&mut store, frame)?;
        let ok = decision == *expect_same;
        wrong += usize::from(!ok);
        if args.json {
            rows.push(json!({ "probe": what, "similarity": similarity, "accepted": decision, "expected": expect_same, "correct": ok }));
        } else {
            println!(
                "{:<46} best {:>7}  {:<10}  {}",
                what,
                similarity.map_or("no face".to_string(), |s| format!("{s:.3}")),
                if decision { "astronaut" } else { "unknown" },
                if ok { "as expected" } else { "WRONG" }
            );
        }
    }
    // Withdrawal deletes her template at once: the same photo is then unknown.
    let live = store
        .live_consent(&subject)?
        .context("the demo consent is not live")?;
    let removed = store.withdraw(&live.withdraw(
        SystemClock.now(),
        "demo".into(),
        ConsentMethod::Terminal,
    ))?;
    let (_, after) = identify(&mut store, &probes[0].1)?;
    wrong += usize::from(after);
    let audit = store.verify_audit()?;
    wrong += usize::from(audit.first_break.is_some());
    if args.json {
        println!(
            "{}",
            json!({
                "threshold": threshold, "fmr": fmr, "decisions": rows, "withdrawn_templates_deleted": removed.templates_deleted,
                "identified_after_withdrawal": after, "audit_records": audit.records, "audit_intact": audit.first_break.is_none(), "wrong": wrong,
            })
        );
    } else {
        println!(
            "consent withdrawn: {} template deleted, data key {}; the cropped photo is now {}",
            removed.templates_deleted,
            if removed.key_destroyed {
                "destroyed"
            } else {
                "absent"
            },
            if after {
                "STILL IDENTIFIED (WRONG)"
            } else {
                "unknown, as expected"
            }
        );
        println!(
            "audit chain: {} records, {}",
            audit.records,
            if audit.first_break.is_none() {
                "intact"
            } else {
                "BROKEN"
            }
        );
        println!("{} decisions, {wrong} wrong", probes.len() + 1);
    }
    Ok(if wrong == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
