//! `facegate bench pipeline PATH`: per-stage p50/p95, faces per second, and the raw model
//! inference time beside the pipeline time (the difference is the pipeline's own overhead).

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use facegate_capture::{CaptureOptions, SourceSpec};
use facegate_store::quantile;
use facegate_types::ErrorChain;
use facegate_vision::{AnalyseOptions, StageTimings};
use serde_json::json;

use crate::cli::{BenchCommand, Cli, GalleryBenchArgs, PipelineBenchArgs};
use crate::output::{ms, progress};

pub fn run(cli: &Cli, cmd: &BenchCommand) -> Result<ExitCode> {
    match cmd {
        BenchCommand::Pipeline(a) => pipeline(cli, a),
        BenchCommand::Gallery(a) => gallery(a),
    }
}

/// Largest synthetic gallery `bench gallery` builds (ten times the design's 100,000).
const MAX_BENCH_SIZE: usize = 1_000_000;
const MAX_BENCH_DIM: usize = 4096;
const MAX_BENCH_QUERIES: usize = 100_000;
/// Gallery memory `bench gallery` may ask for (the 1,000,000 x 512 gallery needs 2.4 GiB).
const MAX_BENCH_BYTES: usize = 4 << 30;

fn gallery(args: &GalleryBenchArgs) -> Result<ExitCode> {
    use facegate_store::{Gallery, SearchMode, bench_queries};
    anyhow::ensure!(
        (1..=MAX_BENCH_SIZE).contains(&args.size),
        "--size must lie in 1..={MAX_BENCH_SIZE}, not {}",
        args.size
    );
    anyhow::ensure!(
        (1..=MAX_BENCH_DIM).contains(&args.dim),
        "--dim must lie in 1..={MAX_BENCH_DIM}, not {}",
        args.dim
    );
    anyhow::ensure!(
        (1..=MAX_BENCH_QUERIES).contains(&args.queries),
        "--queries must lie in 1..={MAX_BENCH_QUERIES}, not {}",
        args.queries
    );
    // f32 rows plus their int8 copy.
    let bytes = args.size.saturating_mul(args.dim).saturating_mul(5);
    anyhow::ensure!(
        bytes <= MAX_BENCH_BYTES,
        "--size {} x --dim {} needs {} MiB of gallery memory; the limit is {} MiB",
        args.size,
        args.dim,
        bytes >> 20,
        MAX_BENCH_BYTES >> 20
    );
    let mode = SearchMode::from(args.mode);
    let build = Instant::now();
    let gallery = Gallery::synthetic(args.size, args.dim, 0x5eed);
    let build_s = build.elapsed().as_secs_f64();
    let probes: Vec<_> = (0..args.queries)
        .filter_map(|i| gallery.synthetic_probe((i * 7919) % args.size, 0.3, i as u64 + 1))
        .collect();
    let t = bench_queries(&gallery, &probes, mode);
    if args.json {
        println!(
            "{}",
            json!({ "size": args.size, "dim": args.dim, "queries": t.queries, "mode": args.mode.as_str(), "median_ms": t.median_ms, "p95_ms": t.p95_ms, "build_s": build_s })
        );
    } else {
        println!(
            "1:N over {} templates of {} dimensions ({} mode), {} queries: median {:.3} ms, p95 {:.3} ms (gallery built in {build_s:.1} s)",
            args.size,
            args.dim,
            args.mode.as_str(),
            t.queries,
            t.median_ms,
            t.p95_ms
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn pipeline(cli: &Cli, args: &PipelineBenchArgs) -> Result<ExitCode> {
    let liveness = args.liveness;
    let mut loaded = super::load(cli, |v| v.liveness = liveness)?;
    let spec = SourceSpec::parse(&args.path.to_string_lossy())
        .with_context(|| format!("source {}", args.path.display()))?;
    let opts = CaptureOptions::default()
        .with_max_pixels(loaded.config.max_pixels)
        .with_loop_stills(true);
    let mut source = facegate_capture::open(&spec, &opts)?;
    let analyse = AnalyseOptions {
        embed: true,
        liveness,
        max_faces: 16,
    };
    let mut faces = Vec::new();
    let mut rows: Vec<(f64, StageTimings)> = Vec::new();
    let mut frame_errors = 0usize;
    let total = args.warmup + args.frames;
    let bar = progress(total as u64, "frames");
    let wall = Instant::now();
    let mut measured_start = None;
    let mut n = 0usize;
    while n < total {
        let t0 = Instant::now();
        let frame = match source.next_frame() {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) if e.is_frame_error() => {
                frame_errors += 1;
                tracing::warn!(error = %ErrorChain(&e), "frame dropped");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let decode = t0.elapsed().as_secs_f64() * 1e3;
        let t = loaded.pipeline.analyse(&frame, analyse, &mut faces)?;
        source.recycle(frame);
        n += 1;
        bar.inc(1);
        if n == args.warmup {
            measured_start = Some(Instant::now());
        }
        if n > args.warmup {
            rows.push((decode, t));
        }
    }
    bar.finish_and_clear();
    let elapsed = measured_start
        .map_or(wall.elapsed(), |s| s.elapsed())
        .as_secs_f64();
    let faces_total: usize = rows.iter().map(|r| r.1.faces).sum();
    let stage = |f: &dyn Fn(&(f64, StageTimings)) -> f64| {
        let v: Vec<f64> = rows.iter().map(f).collect();
        (quantile(&v, 0.5), quantile(&v, 0.95))
    };
    // Per-face stages are divided by the faces of their frame.
    let per_face = |f: &dyn Fn(&StageTimings) -> f64| {
        let v: Vec<f64> = rows
            .iter()
            .filter(|r| r.1.faces > 0)
            .map(|r| f(&r.1) / r.1.faces as f64)
            .collect();
        (quantile(&v, 0.5), quantile(&v, 0.95))
    };
    let stages = [
        ("decode", stage(&|r| r.0)),
        ("detect", stage(&|r| ms(r.1.detect))),
        ("landmarks_per_face", per_face(&|t| ms(t.landmarks))),
        ("align_per_face", per_face(&|t| ms(t.align))),
        ("quality_per_face", per_face(&|t| ms(t.quality))),
        ("liveness_per_face", per_face(&|t| ms(t.liveness))),
        ("embed_per_face", per_face(&|t| ms(t.embed))),
        ("pipeline_per_frame", stage(&|r| ms(r.1.total()))),
        ("inference_per_frame", stage(&|r| ms(r.1.inference))),
    ];
    let pipeline_sum: f64 = rows.iter().map(|r| ms(r.1.total())).sum();
    let inference_sum: f64 = rows.iter().map(|r| ms(r.1.inference)).sum();
    let overhead_pct = if inference_sum > 0.0 {
        100.0 * (pipeline_sum - inference_sum) / inference_sum
    } else {
        0.0
    };
    let faces_per_s = faces_total as f64 / elapsed.max(1e-9);
    let fps = rows.len() as f64 / elapsed.max(1e-9);
    if args.json {
        let mut s = serde_json::Map::new();
        for (name, (p50, p95)) in stages {
            s.insert(name.into(), json!({ "p50_ms": p50, "p95_ms": p95 }));
        }
        println!(
            "{}",
            json!({
                "source": args.path, "frames": rows.len(), "faces": faces_total, "frame_errors": frame_errors,
                "fps": fps, "faces_per_s": faces_per_s, "stages": s,
                "pipeline_ms_total": pipeline_sum, "inference_ms_total": inference_sum, "overhead_pct": overhead_pct,
                "flip_tta": loaded.config.vision.flip_tta, "liveness": liveness,
            })
        );
    } else {
        println!(
            "{}: {} frames, {} faces, {frame_errors} frame errors; {fps:.1} frames/s, {faces_per_s:.1} faces/s",
            args.path.display(),
            rows.len(),
            faces_total
        );
        println!("{:<22} {:>9} {:>9}", "stage", "p50 ms", "p95 ms");
        for (name, (p50, p95)) in stages {
            println!("{name:<22} {p50:>9.3} {p95:>9.3}");
        }
        println!(
            "model inference {inference_sum:.0} ms of {pipeline_sum:.0} ms pipeline time: overhead {overhead_pct:.1}% of inference"
        );
    }
    Ok(ExitCode::SUCCESS)
}
