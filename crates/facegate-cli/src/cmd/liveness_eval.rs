//! `facegate eval liveness`: presentation-attack detection measured ISO/IEC 30107-3 style on
//! `../shared/eval` — APCER per attack species (still photo, moved photo, screen replay, and a
//! recording of the live person played as it is) and BPCER for live people, with the active
//! challenge off and on, over many random seeds.
//!
//! Every clip is decoded once (ffmpeg to Y4M), and every frame goes once through the real
//! pipeline (detection, 68 landmarks, passive model); the presentations then replay those
//! samples through [`LivenessSession`], the same code the engine runs per track. With the
//! challenge on, a live person is a source that responds: the stream is composed from the
//! clip's own footage in the order the challenge asks (a segment where the person turns or
//! blinks, after a human reaction delay), while attacks play as they are, looped, from a random
//! start. Photos are rendered from real frames: the same picture frame after frame, with and
//! without sensor noise, and moved by a hand-held motion (random perspective, rotation, zoom).

use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use facegate_capture::{FrameSource, Y4mSource};
use facegate_types::Frame;
use facegate_vision::footage::{LIVE_CLIPS, REPLAYS};
use facegate_vision::{
    Action, ChallengeMode, ChallengeStatus, FaceSample, LiveStatus, LivenessConfig,
    LivenessSession, Pipeline, StageTimings,
};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use serde_json::json;

use crate::cli::{Cli, LivenessEvalArgs};
use crate::output::progress;

/// The longest a presentation lasts (a person gives up, a gate times out).
const PRESENTATION: Duration = Duration::from_secs(15);
/// Frames decoded per clip at most.
const MAX_FRAMES: usize = 420;
/// The passive model runs every this many samples, as the engine's attempt interval.
const PASSIVE_EVERY: usize = 2;

/// What a presentation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Species {
    Live,
    StillPhoto,
    MovedPhoto,
    ScreenReplay,
    /// Footage of the live person played as recorded (a perfect screen or an injected stream).
    RecordedLive,
}

impl Species {
    const ALL: [Species; 5] = [
        Species::Live,
        Species::StillPhoto,
        Species::MovedPhoto,
        Species::ScreenReplay,
        Species::RecordedLive,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::StillPhoto => "still_photo",
            Self::MovedPhoto => "moved_photo",
            Self::ScreenReplay => "screen_replay",
            Self::RecordedLive => "recorded_live",
        }
    }
}

/// One frame's observation: the face sample and the passive score (`None`: no face found).
type Observed = Option<(FaceSample, f32)>;

/// Decoded and observed footage.
struct Footage {
    name: String,
    fps: f64,
    frames: Vec<Observed>,
    /// Where the person holds still (frame ranges), for composing responses.
    neutral: Vec<Range<usize>>,
    /// Where the person does each action (from a neutral start back to neutral).
    segments: Vec<(Action, Range<usize>)>,
}

impl Footage {
    fn actions(&self) -> Vec<Action> {
        let mut a: Vec<Action> = self.segments.iter().map(|s| s.0).collect();
        a.sort_by_key(|x| x.as_str());
        a.dedup();
        a
    }
}

/// The result of one presentation.
#[derive(Debug, Clone, Copy)]
struct Presented {
    live: bool,
    /// Media time from the first sample to the verdict.
    took: Option<Duration>,
    reason: Option<&'static str>,
}

#[derive(Debug, Default, Serialize)]
struct Tally {
    presentations: u32,
    accepted: u32,
    /// Median seconds to a `live` verdict.
    median_s_to_live: Option<f64>,
    reasons: std::collections::BTreeMap<&'static str, u32>,
    /// Accepted and presented per clip or photo.
    by_source: std::collections::BTreeMap<String, (u32, u32)>,
    #[serde(skip)]
    times: Vec<f64>,
}

impl Tally {
    fn add(&mut self, source: &str, p: Presented) {
        let e = self.by_source.entry(source.to_string()).or_default();
        e.0 += u32::from(p.live);
        e.1 += 1;
        self.presentations += 1;
        if p.live {
            self.accepted += 1;
            if let Some(t) = p.took {
                self.times.push(t.as_secs_f64());
            }
        }
        if let Some(r) = p.reason {
            *self.reasons.entry(r).or_default() += 1;
        }
    }

    fn finish(&mut self) {
        self.times.sort_by(f64::total_cmp);
        self.median_s_to_live = self.times.get(self.times.len() / 2).copied();
    }

    fn rate(&self) -> f64 {
        f64::from(self.accepted) / f64::from(self.presentations.max(1))
    }
}

pub fn run(cli: &Cli, args: &LivenessEvalArgs) -> Result<ExitCode> {
    let dir = &args.dir;
    let started = Instant::now();
    if !dir.join("liveness").is_dir() {
        bail!(
            "the liveness evaluation data was not found in {} (it lives in ../shared/eval)",
            dir.display()
        );
    }
    let mut loaded = super::load(cli, |v| v.liveness = true)?;
    let base = loaded.config.liveness.clone();
    let p = &mut loaded.pipeline;
    let max_pixels = loaded.config.max_pixels;

    let total = LIVE_CLIPS.len() + REPLAYS.len();
    let bar = progress(total as u64, "observing clips");
    let mut live = Vec::new();
    for c in LIVE_CLIPS {
        let frames = decode(&dir.join(c.path), max_pixels)?;
        live.push(Footage {
            name: c.path.into(),
            fps: fps_of(&frames),
            frames: observe(p, &frames)?,
            neutral: c.neutral.to_vec(),
            segments: c.segments.to_vec(),
        });
        bar.inc(1);
    }
    let mut replays = Vec::new();
    for r in REPLAYS {
        let frames = decode(&dir.join(r), max_pixels)?;
        replays.push(Footage {
            name: (*r).into(),
            fps: fps_of(&frames),
            frames: observe(p, &frames)?,
            neutral: Vec::new(),
            segments: Vec::new(),
        });
        bar.inc(1);
    }
    bar.finish_and_clear();

    // Photos: the first frame with a face of each live clip and of each of `photos` LFW people.
    let mut pictures: Vec<(String, Frame)> = Vec::new();
    for c in LIVE_CLIPS {
        let frames = decode_some(&dir.join(c.path), max_pixels, 1)?;
        if let Some(f) = frames.into_iter().next() {
            pictures.push((c.path.into(), f));
        }
    }
    pictures.extend(lfw_pictures(
        &dir.join("lfw/images"),
        args.photos,
        max_pixels,
    )?);
    let bar = progress(pictures.len() as u64, "rendering photos");
    let mut stills = Vec::new();
    let mut noisy = Vec::new();
    let mut moved = Vec::new();
    for (k, (name, picture)) in pictures.iter().enumerate() {
        let mut rng = StdRng::seed_from_u64(0x5EED + k as u64);
        let still = observe(p, std::slice::from_ref(picture))?;
        stills.push(Footage {
            name: format!("still:{name}"),
            fps: 30.0,
            frames: still,
            neutral: Vec::new(),
            segments: Vec::new(),
        });
        let frames: Vec<Frame> = (0..60)
            .map(|i| with_noise(picture, 3, &mut rng).with_time(frame_time(i, 30.0), i as u64))
            .collect();
        noisy.push(Footage {
            name: format!("still+noise:{name}"),
            fps: 30.0,
            frames: observe(p, &frames)?,
            neutral: Vec::new(),
            segments: Vec::new(),
        });
        let motion = HandMotion::draw(&mut rng);
        let frames: Vec<Frame> = (0..150)
            .map(|i| {
                let f = motion.render(picture, i as f32 / 30.0);
                with_noise(&f, 2, &mut rng).with_time(frame_time(i, 30.0), i as u64)
            })
            .collect();
        moved.push(Footage {
            name: format!("moved:{name}"),
            fps: 30.0,
            frames: observe(p, &frames)?,
            neutral: Vec::new(),
            segments: Vec::new(),
        });
        bar.inc(1);
    }
    bar.finish_and_clear();

    let mut report = serde_json::Map::new();
    for mode in [ChallengeMode::Off, ChallengeMode::Always] {
        let config = LivenessConfig {
            mode,
            ..base.clone()
        };
        let mut tallies: Vec<(Species, Tally)> = Species::ALL
            .iter()
            .map(|s| (*s, Tally::default()))
            .collect();
        for seed in 0..u64::from(args.seeds) {
            let mut rng = StdRng::seed_from_u64(seed);
            for f in &live {
                let presented = if mode == ChallengeMode::Off {
                    play(&config, f, &mut rng, true)
                } else if f.segments.is_empty() {
                    continue;
                } else {
                    respond(&config, f, &mut rng)
                };
                tallies[0].1.add(&f.name, presented);
                if mode != ChallengeMode::Off && !f.segments.is_empty() {
                    // The same person's recording played back as it is.
                    tallies[4].1.add(&f.name, play(&config, f, &mut rng, true));
                }
                if mode == ChallengeMode::Off {
                    tallies[4].1.add(&f.name, presented);
                }
            }
            for f in &stills {
                tallies[1].1.add(&f.name, play(&config, f, &mut rng, true));
            }
            for f in &noisy {
                tallies[1].1.add(&f.name, play(&config, f, &mut rng, true));
            }
            for f in &moved {
                tallies[2].1.add(&f.name, play(&config, f, &mut rng, true));
            }
            for f in &replays {
                tallies[3].1.add(&f.name, play(&config, f, &mut rng, true));
            }
        }
        let mut m = serde_json::Map::new();
        for (species, mut t) in tallies {
            t.finish();
            if !args.json {
                let (name, what) = if species == Species::Live {
                    ("BPCER", 1.0 - t.rate())
                } else {
                    ("APCER", t.rate())
                };
                println!(
                    "challenge {:<6} {:<14} {name} {:>6.2} % ({} of {} presentations{}){}",
                    mode.as_str(),
                    species.as_str(),
                    what * 100.0,
                    if species == Species::Live {
                        t.presentations - t.accepted
                    } else {
                        t.accepted
                    },
                    t.presentations,
                    if species == Species::Live {
                        " refused"
                    } else {
                        " accepted"
                    },
                    t.median_s_to_live
                        .filter(|_| species == Species::Live)
                        .map(|s| format!(", median {s:.2} s to live"))
                        .unwrap_or_default(),
                );
            }
            m.insert(species.as_str().into(), serde_json::to_value(&t)?);
        }
        report.insert(mode.as_str().into(), serde_json::Value::Object(m));
    }
    let clips: Vec<serde_json::Value> = live
        .iter()
        .chain(replays.iter())
        .map(|f| {
            let faces = f.frames.iter().filter(|o| o.is_some()).count();
            json!({ "clip": f.name, "frames": f.frames.len(), "faces": faces, "fps": f.fps,
                    "actions": f.actions().iter().map(|a| a.as_str()).collect::<Vec<_>>() })
        })
        .collect();
    report.insert("clips".into(), json!(clips));
    report.insert("photos".into(), json!(pictures.len()));
    report.insert("seeds".into(), json!(args.seeds));
    report.insert("seconds".into(), json!(started.elapsed().as_secs_f64()));
    if args.json {
        println!("{}", serde_json::Value::Object(report));
    } else {
        println!(
            "{} live clips, {} replays, {} photos, {} seeds, {:.0} s",
            live.len(),
            replays.len(),
            pictures.len(),
            args.seeds,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn frame_time(i: usize, fps: f64) -> Duration {
    Duration::from_secs_f64(i as f64 / fps)
}

fn fps_of(frames: &[Frame]) -> f64 {
    match (frames.first(), frames.get(1)) {
        (Some(a), Some(b)) if b.timestamp > a.timestamp => {
            1.0 / (b.timestamp - a.timestamp).as_secs_f64()
        }
        _ => 30.0,
    }
}

/// Every frame of a clip (up to [`MAX_FRAMES`]) through ffmpeg as a Y4M stream.
pub(super) fn decode(path: &Path, max_pixels: u64) -> Result<Vec<Frame>> {
    decode_some(path, max_pixels, MAX_FRAMES)
}

fn decode_some(path: &Path, max_pixels: u64, limit: usize) -> Result<Vec<Frame>> {
    if !path.is_file() {
        bail!(
            "evaluation clip {} not found (the data lives in ../shared/eval)",
            path.display()
        );
    }
    let mut child = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-i"])
        .arg(path)
        .args(["-frames:v", &limit.to_string()])
        .args(["-pix_fmt", "yuv420p", "-f", "yuv4mpegpipe", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running ffmpeg (Debian package ffmpeg) to decode the evaluation clips")?;
    let stdout = child.stdout.take().context("ffmpeg's output")?;
    let mut src = Y4mSource::from_reader(stdout, path.to_path_buf(), max_pixels)
        .with_context(|| format!("decoding {}", path.display()))?;
    let mut frames = Vec::new();
    while frames.len() < limit {
        match src.next_frame() {
            Ok(Some(f)) => frames.push(f),
            Ok(None) => break,
            Err(e) => return Err(e).with_context(|| format!("decoding {}", path.display())),
        }
    }
    drop(src);
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let status = child.wait()?;
    if frames.is_empty() {
        bail!(
            "ffmpeg gave no frames for {} ({status}): {}",
            path.display(),
            err.trim()
        );
    }
    Ok(frames)
}

/// One photo each of the first `n` LFW people (alphabetical) with at least one image.
fn lfw_pictures(dir: &Path, n: usize, max_pixels: u64) -> Result<Vec<(String, Frame)>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut people: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    people.sort();
    let mut out = Vec::new();
    // Every 97th person, so the photos are spread over the alphabet.
    for person in people.iter().step_by(97).take(n) {
        let name = person.file_name().map(|s| s.to_string_lossy().into_owned());
        let img = person.join(format!("{}_0001.jpg", name.clone().unwrap_or_default()));
        if let Ok(f) = super::read_image(&img, max_pixels) {
            // A 250 px picture held up to a 640x480 camera.
            out.push((
                format!("lfw:{}", name.unwrap_or_default()),
                on_canvas(&f, 640, 480),
            ));
        }
    }
    Ok(out)
}

/// `f` scaled 1.6x in the middle of a mid-grey canvas.
fn on_canvas(f: &Frame, w: u32, h: u32) -> Frame {
    let motion = HandMotion::still();
    let mut out = vec![110u8; (w * h * 3) as usize];
    motion.warp(f, 1.6, w, h, 0.0, &mut out);
    Frame::from_rgb8(w, h, out).unwrap_or_else(|_| f.clone())
}

/// The same picture with uniform noise of +-`amp` grey levels per pixel (a camera's sensor).
fn with_noise(f: &Frame, amp: i16, rng: &mut StdRng) -> Frame {
    let mut out = f.clone();
    let (w, h) = (out.width() as usize, out.height() as usize);
    let stride = out.stride();
    let data = out.data_mut();
    for y in 0..h {
        for x in 0..w {
            let n: i16 = rng.random_range(-amp..=amp);
            for c in 0..3 {
                let i = y * stride + x * 3 + c;
                data[i] = (i16::from(data[i]) + n).clamp(0, 255) as u8;
            }
        }
    }
    out
}

/// A photo held in a hand: slow rotation, zoom, sway and a perspective tilt, each a sine of
/// random phase and rate.
#[derive(Debug, Clone, Copy)]
struct HandMotion {
    amp: [f32; 6],
    rate: [f32; 6],
    phase: [f32; 6],
}

impl HandMotion {
    fn draw(rng: &mut StdRng) -> Self {
        let mut m = Self::still();
        // rotation (rad), zoom, x and y sway (fraction of the frame), tilt about both axes.
        let amp = [0.10, 0.10, 0.06, 0.04, 0.0009, 0.0007];
        for (k, a) in amp.iter().enumerate() {
            m.amp[k] = a * rng.random_range(0.6..1.0);
            m.rate[k] = rng.random_range(0.3..1.1);
            m.phase[k] = rng.random_range(0.0..std::f32::consts::TAU);
        }
        m
    }

    fn still() -> Self {
        Self {
            amp: [0.0; 6],
            rate: [0.0; 6],
            phase: [0.0; 6],
        }
    }

    fn at(&self, k: usize, t: f32) -> f32 {
        self.amp[k] * (std::f32::consts::TAU * self.rate[k] * t + self.phase[k]).sin()
    }

    fn render(&self, f: &Frame, t: f32) -> Frame {
        let (w, h) = (f.width(), f.height());
        let mut out = vec![110u8; (w * h * 3) as usize];
        self.warp(f, 1.0, w, h, t, &mut out);
        Frame::from_rgb8(w, h, out).unwrap_or_else(|_| f.clone())
    }

    /// Renders `src` (scaled by `scale` about its centre, then moved as at time `t`) into an
    /// RGB canvas `w` x `h`, by inverse mapping with bilinear sampling.
    fn warp(&self, src: &Frame, scale: f32, w: u32, h: u32, t: f32, out: &mut [u8]) {
        let (sw, sh) = (src.width() as f32, src.height() as f32);
        let (cx, cy) = (w as f32 / 2.0, h as f32 / 2.0);
        let rot = self.at(0, t);
        let zoom = scale * (1.0 + self.at(1, t));
        let (tx, ty) = (self.at(2, t) * w as f32, self.at(3, t) * h as f32);
        let (px, py) = (self.at(4, t), self.at(5, t));
        let (c, s) = (rot.cos(), rot.sin());
        let data = src.data();
        let stride = src.stride();
        for y in 0..h {
            for x in 0..w {
                // Output -> plane: undo the perspective, the sway, the rotation and the zoom.
                let (u, v) = (x as f32 - cx, y as f32 - cy);
                let d = 1.0 - px * u - py * v;
                if d.abs() < 1e-3 {
                    continue;
                }
                let (u, v) = (u / d - tx, v / d - ty);
                let (u, v) = ((c * u + s * v) / zoom, (-s * u + c * v) / zoom);
                let (sx, sy) = (u + sw / 2.0, v + sh / 2.0);
                if sx < 0.0 || sy < 0.0 || sx >= sw - 1.0 || sy >= sh - 1.0 {
                    continue;
                }
                let (x0, y0) = (sx as usize, sy as usize);
                let (fx, fy) = (sx - x0 as f32, sy - y0 as f32);
                for ch in 0..3 {
                    let p = |xx: usize, yy: usize| f32::from(data[yy * stride + xx * 3 + ch]);
                    let top = p(x0, y0) * (1.0 - fx) + p(x0 + 1, y0) * fx;
                    let bot = p(x0, y0 + 1) * (1.0 - fx) + p(x0 + 1, y0 + 1) * fx;
                    out[(y * w + x) as usize * 3 + ch] = (top * (1.0 - fy) + bot * fy) as u8;
                }
            }
        }
    }
}

/// The largest face of every frame through the pipeline's stages (landmarks, cue sample,
/// passive model). Nothing is kept but the in-memory samples.
fn observe(p: &mut Pipeline, frames: &[Frame]) -> Result<Vec<Observed>> {
    let mut out = Vec::with_capacity(frames.len());
    for f in frames {
        let best = p
            .detect(f)?
            .iter()
            .copied()
            .max_by(|a, b| a.bbox.area().total_cmp(&b.bbox.area()));
        let Some(det) = best else {
            out.push(None);
            continue;
        };
        let mut t = StageTimings::default();
        let prepared = p.prepare(f, det, &mut t)?;
        let live = p.passive_liveness(f, &prepared, &mut t)?.unwrap_or(0.0);
        out.push(Some((prepared.sample, live)));
    }
    Ok(out)
}

/// Feeds one observation at media time `at` to the session.
fn feed(
    s: &mut LivenessSession,
    o: &Observed,
    at: Duration,
    n: &mut usize,
    rng: &mut StdRng,
) -> Option<LiveStatus> {
    let (sample, live) = o.as_ref()?;
    let mut sample = sample.clone();
    sample.at = at;
    if (*n).is_multiple_of(PASSIVE_EVERY) {
        s.passive_score(at, *live);
    }
    *n += 1;
    Some(s.push(sample, rng))
}

fn verdict(status: Option<LiveStatus>, at: Duration) -> Option<Presented> {
    match status? {
        LiveStatus::Live => Some(Presented {
            live: true,
            took: Some(at),
            reason: None,
        }),
        LiveStatus::Spoof(r) => Some(Presented {
            live: false,
            took: Some(at),
            reason: Some(r.as_str()),
        }),
        _ => None,
    }
}

/// With `FACEGATE_EVAL_TRACE` set, the status transitions of one presentation (never a
/// landmark or a value derived from one), printed when a presentation ends unexpectedly.
struct Trace {
    on: bool,
    last: Option<String>,
    lines: Vec<String>,
}

impl Trace {
    fn new() -> Self {
        Self {
            on: std::env::var_os("FACEGATE_EVAL_TRACE").is_some(),
            last: None,
            lines: Vec::new(),
        }
    }

    fn record(&mut self, at: Duration, frame: usize, status: Option<LiveStatus>) {
        if !self.on {
            return;
        }
        let now = format!("{status:?}");
        if self.last.as_deref() != Some(now.as_str()) {
            self.lines.push(format!(
                "{:>6.2} s  frame {frame:>4}  {now}",
                at.as_secs_f64()
            ));
            self.last = Some(now);
        }
    }

    fn print(&self, what: &str, name: &str) {
        if self.on {
            eprintln!("{what}: {name}");
            for l in &self.lines {
                eprintln!("{l}");
            }
        }
    }
}

/// Footage played as it is from a random start, looped, until a verdict or the time limit.
fn play(config: &LivenessConfig, f: &Footage, rng: &mut StdRng, looped: bool) -> Presented {
    let mut s = LivenessSession::new(config.clone());
    let n = f.frames.len();
    let start = rng.random_range(0..n);
    let step = Duration::from_secs_f64(1.0 / f.fps);
    let mut at = Duration::ZERO;
    let mut fed = 0;
    let mut i = 0;
    let mut trace = Trace::new();
    while at < PRESENTATION {
        if i >= n && !looped {
            break;
        }
        let o = &f.frames[(start + i) % n];
        let status = feed(&mut s, o, at, &mut fed, rng);
        trace.record(at, (start + i) % n, status);
        if let Some(p) = verdict(status, at) {
            if p.live {
                trace.print("accepted", &f.name);
            }
            return p;
        }
        i += 1;
        at += step;
    }
    Presented {
        live: false,
        took: None,
        reason: Some("undecided"),
    }
}

/// A live person answering the challenge: neutral footage until a prompt, then, after a
/// reaction delay of 0.25-0.6 s, a segment of the clip where the person does what was asked.
fn respond(config: &LivenessConfig, f: &Footage, rng: &mut StdRng) -> Presented {
    let mut config = config.clone();
    let actions = f.actions();
    config.challenge.actions = actions.clone();
    let mut s = LivenessSession::new(config);
    let step = Duration::from_secs_f64(1.0 / f.fps);
    let mut at = Duration::ZERO;
    let mut fed = 0;
    let neutral = |rng: &mut StdRng| f.neutral[rng.random_range(0..f.neutral.len())].clone();
    let mut range = neutral(rng);
    let mut i = range.start;
    let mut forward = true;
    // (prompt step answered, when the response starts, the segment)
    let mut answered: Option<usize> = None;
    let mut pending: Option<(Duration, Range<usize>)> = None;
    let mut acting = false;
    let mut trace = Trace::new();
    while at < PRESENTATION {
        let status = feed(&mut s, &f.frames[i], at, &mut fed, rng);
        trace.record(at, i, status);
        if let Some(p) = verdict(status, at) {
            if !p.live {
                trace.print("refused live", &f.name);
            }
            return p;
        }
        if let Some(LiveStatus::Prompt(ChallengeStatus::Prompt {
            step: k, action, ..
        })) = status
            && answered != Some(k)
        {
            answered = Some(k);
            let options: Vec<&Range<usize>> = f
                .segments
                .iter()
                .filter(|(a, _)| *a == action)
                .map(|(_, r)| r)
                .collect();
            if !options.is_empty() {
                let seg = options[rng.random_range(0..options.len())].clone();
                let delay = Duration::from_millis(rng.random_range(250..=600));
                pending = Some((at + delay, seg));
            }
        }
        // Advance the footage.
        if let Some((when, seg)) = &pending
            && at >= *when
            && !acting
        {
            range = seg.clone();
            i = range.start;
            forward = true;
            acting = true;
            pending = None;
        } else if acting {
            i += 1;
            if i >= range.end {
                acting = false;
                range = neutral(rng);
                i = range.start;
            }
        } else {
            // Ping-pong through the neutral footage.
            if forward && i + 1 >= range.end {
                forward = false;
            } else if !forward && i <= range.start {
                forward = true;
            }
            i = if forward { i + 1 } else { i.saturating_sub(1) };
            i = i.clamp(range.start, range.end - 1);
        }
        at += step;
    }
    Presented {
        live: false,
        took: None,
        reason: Some("undecided"),
    }
}
