//! `facegate bench pipeline PATH`: per-stage p50/p95, faces per second, and the raw model
//! inference time beside the pipeline time (the difference is the pipeline's own overhead).
//! `facegate bench gallery`: the 1:N search modes side by side in one run over a synthetic
//! face population, with their agreement with the exact scan.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use facegate_capture::{CaptureOptions, SourceSpec};
use facegate_store::quantile;
use facegate_types::ErrorChain;
use facegate_vision::{AnalyseOptions, StageTimings};
use serde_json::json;

use crate::cli::{BenchCommand, Cli, GalleryBenchArgs, PipelineBenchArgs, SearchModeArg};
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

/// Decision thresholds `bench gallery` checks agreement at: the shipped embedder's calibrated
/// cosines at FMR 1e-3 and 1e-5 (`models/manifest.toml`), with the policy's default margin.
const BENCH_THRESHOLDS: [f32; 2] = [0.3504, 0.5121];
const BENCH_MARGIN: f32 = 0.05;
/// Probes whose full score profile (every row, exact) is summarised.
const PROFILE_PROBES: usize = 20;

fn gallery(args: &GalleryBenchArgs) -> Result<ExitCode> {
    use facegate_store::{FaceModel, MatchRule, SearchMode, compare_modes, score_profile};
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
    // f32 rows, their int8 copy, the sign codes (at most 2 bits a dimension after padding).
    let bytes = args.size.saturating_mul(args.dim).saturating_mul(6);
    anyhow::ensure!(
        bytes <= MAX_BENCH_BYTES,
        "--size {} x --dim {} needs {} MiB of gallery memory; the limit is {} MiB",
        args.size,
        args.dim,
        bytes >> 20,
        MAX_BENCH_BYTES >> 20
    );
    let modes: Vec<SearchMode> = match args.mode {
        None => vec![
            SearchMode::Exact,
            SearchMode::Quantised,
            SearchMode::Prefiltered,
        ],
        Some(SearchModeArg::Exact) => vec![SearchMode::Exact],
        Some(m) => vec![SearchMode::Exact, SearchMode::from(m)],
    };
    let build = Instant::now();
    let model = FaceModel::new(args.dim, 0x5eed);
    let gallery = model.gallery(args.size);
    let build_s = build.elapsed().as_secs_f64();
    let probes = model.probes(args.size, args.queries);
    let own: Vec<Option<usize>> = (0..probes.len())
        .map(|i| (i % 2 == 0).then_some((i * 7919) % args.size))
        .take(PROFILE_PROBES)
        .collect();
    let profile = score_profile(&gallery, &probes[..own.len()], &own);
    let (rule, thresholds) = match args.threshold {
        Some(t) => {
            anyhow::ensure!(
                t.is_finite() && (-1.0..=1.0).contains(&t),
                "--threshold must be a cosine in [-1, 1], not {t}"
            );
            (
                MatchRule {
                    threshold: Some(t),
                    margin: BENCH_MARGIN,
                },
                vec![t],
            )
        }
        None => (
            MatchRule {
                threshold: None,
                margin: BENCH_MARGIN,
            },
            BENCH_THRESHOLDS.to_vec(),
        ),
    };
    let reports = compare_modes(&gallery, &probes, &modes, rule, &thresholds);
    let exact_median = reports
        .iter()
        .find(|r| r.mode == SearchMode::Exact)
        .map_or(f64::NAN, |r| r.all.median_ms);
    let name = |m: SearchMode| match m {
        SearchMode::Auto => "auto",
        SearchMode::Exact => "exact",
        SearchMode::Quantised => "quantised",
        SearchMode::Prefiltered => "prefiltered",
    };
    let headline = reports.last().map(|r| r.all);
    if args.json {
        let modes_json: Vec<_> = reports
            .iter()
            .map(|r| {
                json!({
                    "mode": name(r.mode),
                    "median_ms": r.all.median_ms, "p95_ms": r.all.p95_ms,
                    "mated_median_ms": r.mated.median_ms, "mated_p95_ms": r.mated.p95_ms,
                    "stranger_median_ms": r.strangers.median_ms, "stranger_p95_ms": r.strangers.p95_ms,
                    "exact_over_this": exact_median / r.all.median_ms,
                    "top1_agree": r.top1_agree,
                    "decision_agree": r.decision_agree,
                    "second_agree": r.second_agree,
                    "prefilter_answered": r.prefilter_answered,
                    "rescored_median": r.rescored_median,
                    "survivors_median": r.survivors_median,
                })
            })
            .collect();
        println!(
            "{}",
            json!({
                "size": args.size, "dim": args.dim, "queries": probes.len(),
                "median_ms": headline.map(|t| t.median_ms), "p95_ms": headline.map(|t| t.p95_ms),
                "build_s": build_s, "bytes_per_template": gallery.bytes_per_template(),
                "thresholds": thresholds, "threshold_told": args.threshold, "margin": BENCH_MARGIN,
                "profile": {
                    "mated_p5": profile.mated_p5, "mated_median": profile.mated_median,
                    "mated_p95": profile.mated_p95, "impostor_median": profile.impostor_median,
                    "impostor_p99": profile.impostor_p99, "impostor_p999": profile.impostor_p999,
                    "best_impostor_median": profile.best_impostor_median,
                    "impostor_tail_rates": facegate_store::IMPOSTOR_TAIL,
                    "impostor_tail": profile.impostor_tail,
                },
                "modes": modes_json,
            })
        );
    } else {
        println!(
            "1:N over {} synthetic face templates of {} dimensions ({} bytes each in the scans), {} probes \
             (half mated, half strangers), modes interleaved in one run (gallery built in {build_s:.1} s)",
            args.size,
            args.dim,
            gallery.bytes_per_template(),
            probes.len()
        );
        println!(
            "scores over {} probes: mated p5/median/p95 {:.2}/{:.2}/{:.2}; impostors median {:.2}, p99 {:.2}, p99.9 {:.2}; best impostor in the gallery (median) {:.2}",
            own.len(),
            profile.mated_p5,
            profile.mated_median,
            profile.mated_p95,
            profile.impostor_median,
            profile.impostor_p99,
            profile.impostor_p999,
            profile.best_impostor_median
        );
        let [a, b, c, d] = profile.impostor_tail;
        println!(
            "impostor tail over {} pairs: FMR 1e-2 at {a:.4}, 1e-3 at {b:.4}, 1e-4 at {c:.4}, 1e-5 at {d:.4} (the shipped embedder on LFW: 0.2563, 0.3504, 0.4332, 0.5121)",
            own.len() * args.size.saturating_sub(1)
        );
        println!(
            "agreement with the exact scan, probes of {}: top-1 (template and score), decision (subject and outcome) at thresholds {thresholds:?} with margin {BENCH_MARGIN} (the searches were told {}), second identity score; answered: probes the prefilter answered itself; rescored: median rows scored in f32; left in: median rows per probe past the first code's Hamming check / its asymmetric check / all four codes (prefiltered only; the last are bounded in int8)",
            probes.len(),
            args.threshold
                .map_or_else(|| "no threshold".to_owned(), |t| format!("threshold {t}"))
        );
        println!(
            "{:<15} {:>9} {:>9} {:>11} {:>13} {:>9} {:>6} {:>18} {:>8} {:>9} {:>9} {:>18}",
            "mode",
            "median ms",
            "p95 ms",
            "mated med",
            "stranger med",
            "exact/x",
            "top-1",
            "decisions",
            "second",
            "answered",
            "rescored",
            "left in"
        );
        for r in &reports {
            let d: Vec<String> = r.decision_agree.iter().map(ToString::to_string).collect();
            println!(
                "{:<15} {:>9.3} {:>9.3} {:>11.3} {:>13.3} {:>9.2} {:>6} {:>18} {:>8} {:>9} {:>9.0} {:>18}",
                name(r.mode),
                r.all.median_ms,
                r.all.p95_ms,
                r.mated.median_ms,
                r.strangers.median_ms,
                exact_median / r.all.median_ms,
                r.top1_agree,
                d.join("/"),
                r.second_agree,
                r.prefilter_answered,
                r.rescored_median,
                if r.mode == SearchMode::Prefiltered {
                    let [a, b, c] = r.survivors_median;
                    format!("{a:.0}/{b:.0}/{c:.0}")
                } else {
                    "-".to_owned()
                }
            );
        }
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
