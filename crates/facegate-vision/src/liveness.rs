//! Liveness: the passive model (a crop 2.7 times the detector box, the probability that the
//! face is a live person rather than a replayed screen or print) and the session that decides
//! for one tracked face from every signal: the motion cues of [`crate::cues`] (frozen, planar),
//! the passive score (which only adds doubt: it rejects many live people on dim webcams), and
//! the active challenge of [`crate::challenge`] when the configured mode asks for it.

use std::collections::VecDeque;
use std::time::Duration;

use facegate_types::{BBox, Frame};
use serde::{Deserialize, Serialize};

use crate::challenge::{
    Challenge, ChallengeConfig, ChallengeFailure, ChallengeRun, ChallengeStatus,
};
use crate::cues::{FaceSample, MotionLimits, MotionReport, analyse_motion};

use crate::VisionError;
use crate::crop::CropModel;
use crate::runtime::ModelSession;

/// Scores how likely a detected face is a live person.
pub trait LivenessDetector: Send {
    /// Probability in [0, 1] that the face is live.
    fn live_probability(&mut self, frame: &Frame, face: &BBox) -> Result<f32, VisionError>;
}

/// Numerically stable softmax of `logits`, returning the probability of class `index`.
pub fn softmax_at(logits: &[f32], index: usize) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|v| (v - max).exp()).sum();
    logits.get(index).map_or(0.0, |v| (v - max).exp() / sum)
}

/// The passive liveness model on ONNX Runtime.
#[derive(Debug)]
pub struct PassiveLiveness {
    model: CropModel,
    crop_scale: f32,
}

impl PassiveLiveness {
    pub fn new(session: ModelSession) -> Self {
        let crop_scale = session.spec().param("crop_scale", 2.7) as f32;
        Self {
            model: CropModel::new(session),
            crop_scale,
        }
    }

    pub fn session(&self) -> &ModelSession {
        self.model.session()
    }
}

impl LivenessDetector for PassiveLiveness {
    fn live_probability(&mut self, frame: &Frame, face: &BBox) -> Result<f32, VisionError> {
        let (_, out) = self.model.run("liveness", frame, face, self.crop_scale)?;
        Ok(softmax_at(out, 0))
    }
}

/// When the active challenge runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChallengeMode {
    /// Never: the motion cues and the passive threshold decide (a replayed video of the person
    /// can pass).
    Off,
    /// When the passive score is low or the face has not shown depth in its motion.
    WhenInDoubt,
    /// For every face (the only mode that stops replays of recorded turns and blinks).
    #[default]
    Always,
}

impl ChallengeMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::WhenInDoubt => "when_in_doubt",
            Self::Always => "always",
        }
    }
}

/// How a tracked face's liveness is decided.
#[derive(Debug, Clone, PartialEq)]
pub struct LivenessConfig {
    pub mode: ChallengeMode,
    /// With the challenge off: the median passive score over the window must reach this.
    pub passive_threshold: f32,
    /// Below this median passive score the face is in doubt (the challenge runs in
    /// `when_in_doubt`).
    pub doubt_threshold: f32,
    /// The face is watched at least this long before it can be found live (and frozen).
    pub observe: Duration,
    /// Samples older than this are dropped from the motion window.
    pub window: Duration,
    pub motion: MotionLimits,
    pub challenge: ChallengeConfig,
}

impl Default for LivenessConfig {
    fn default() -> Self {
        Self {
            mode: ChallengeMode::Always,
            passive_threshold: DEFAULT_PASSIVE_THRESHOLD,
            doubt_threshold: 0.5,
            observe: Duration::from_millis(700),
            window: Duration::from_secs(3),
            motion: MotionLimits::default(),
            challenge: ChallengeConfig::default(),
        }
    }
}

/// The passive threshold used when the challenge is off, calibrated on the evaluation clips'
/// frames (`facegate eval liveness`): the live webcam clip's median is 0.05, the replays'
/// 0.0001 and below, the phone-photo replay's 0.08.
pub const DEFAULT_PASSIVE_THRESHOLD: f32 = 0.02;

impl LivenessConfig {
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("passive_threshold", self.passive_threshold),
            ("doubt_threshold", self.doubt_threshold),
        ] {
            if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
                return Err(format!("{name} = {v} is not a probability"));
            }
        }
        if self.observe < Duration::from_millis(300) || self.observe > self.window {
            return Err(format!(
                "observe = {:?} must be at least 0.3 s and at most the window ({:?})",
                self.observe, self.window
            ));
        }
        if self.window > Duration::from_secs(10) {
            return Err(format!("window = {:?} (at most 10 s)", self.window));
        }
        self.challenge.validate()
    }
}

/// Why a face was found not live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SpoofReason {
    /// The same picture frame after frame.
    Frozen,
    /// Landmark motion explained by one plane moved by hand.
    Planar,
    /// The passive model's score stayed low (challenge off).
    Passive,
    Challenge(ChallengeFailure),
}

impl SpoofReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Frozen => "liveness:frozen",
            Self::Planar => "liveness:planar",
            Self::Passive => "liveness:passive",
            Self::Challenge(ChallengeFailure::Timeout) => "liveness:challenge_timeout",
            Self::Challenge(ChallengeFailure::WrongAction) => "liveness:challenge_wrong_action",
            Self::Challenge(ChallengeFailure::Early) => "liveness:challenge_early",
            Self::Challenge(ChallengeFailure::NotSteady) => "liveness:challenge_not_steady",
        }
    }
}

/// Where one face's liveness stands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LiveStatus {
    /// Still watching (not long enough yet, or waiting before a prompt).
    Observing,
    /// A prompt is out for the person.
    Prompt(ChallengeStatus),
    Live,
    Spoof(SpoofReason),
}

/// The liveness of one tracked face over time. Feed it every sample of the face; passive
/// scores as they are computed.
#[derive(Debug, Clone)]
pub struct LivenessSession {
    config: LivenessConfig,
    samples: VecDeque<FaceSample>,
    passive: VecDeque<(Duration, f32)>,
    run: Option<ChallengeRun>,
    first: Option<Duration>,
    verdict: Option<LiveStatus>,
    motion: MotionReport,
}

impl LivenessSession {
    pub fn new(config: LivenessConfig) -> Self {
        Self {
            config,
            samples: VecDeque::new(),
            passive: VecDeque::new(),
            run: None,
            first: None,
            verdict: None,
            motion: MotionReport::default(),
        }
    }

    /// The challenge drawn for this face, if one runs.
    pub fn challenge(&self) -> Option<&Challenge> {
        self.run.as_ref().map(ChallengeRun::challenge)
    }

    /// The latest motion analysis.
    pub fn motion(&self) -> &MotionReport {
        &self.motion
    }

    /// Median of the passive scores in the window.
    pub fn passive_median(&self) -> Option<f32> {
        let mut v: Vec<f32> = self.passive.iter().map(|p| p.1).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f32::total_cmp);
        Some(v[v.len() / 2])
    }

    /// Records a passive score taken at media time `at`.
    pub fn passive_score(&mut self, at: Duration, live: f32) {
        self.passive
            .push_back((at, if live.is_nan() { 0.0 } else { live }));
        while self
            .passive
            .front()
            .is_some_and(|p| at.saturating_sub(p.0) > self.config.window)
        {
            self.passive.pop_front();
        }
    }

    /// Feeds one sample; `rng` draws the challenge when one starts. A spoof verdict is final
    /// for the session; a live one holds while the motion cues stay clean.
    pub fn push(&mut self, sample: FaceSample, rng: &mut impl rand::Rng) -> LiveStatus {
        if let Some(v @ LiveStatus::Spoof(_)) = self.verdict {
            return v;
        }
        let at = sample.at;
        let first = *self.first.get_or_insert(at);
        self.samples.push_back(sample);
        while self
            .samples
            .front()
            .is_some_and(|s| at.saturating_sub(s.at) > self.config.window)
        {
            self.samples.pop_front();
        }
        self.motion = analyse_motion(&self.samples, &self.config.motion);
        let watched = at.saturating_sub(first) >= self.config.observe;
        let span = self
            .samples
            .front()
            .is_some_and(|s| at.saturating_sub(s.at) >= self.config.observe);
        if span && self.motion.frozen {
            return self.conclude(LiveStatus::Spoof(SpoofReason::Frozen));
        }
        if self.motion.planar(&self.config.motion) {
            return self.conclude(LiveStatus::Spoof(SpoofReason::Planar));
        }
        if let Some(LiveStatus::Live) = self.verdict {
            return LiveStatus::Live;
        }
        let doubt = self
            .passive_median()
            .is_none_or(|p| p < self.config.doubt_threshold)
            || self.motion.depth_pairs == 0;
        let challenge = match self.config.mode {
            ChallengeMode::Always => true,
            // Doubt is judged once the face has been watched long enough to show depth.
            ChallengeMode::WhenInDoubt => self.run.is_some() || (watched && doubt),
            ChallengeMode::Off => false,
        };
        if challenge {
            let config = &self.config.challenge;
            let run = self.run.get_or_insert_with(|| {
                ChallengeRun::new(Challenge::draw(rng, config), config.clone())
            });
            let Some(last) = self.samples.back() else {
                return LiveStatus::Observing;
            };
            return match run.push(last) {
                ChallengeStatus::Passed if watched => self.conclude(LiveStatus::Live),
                ChallengeStatus::Passed | ChallengeStatus::Waiting { .. } => LiveStatus::Observing,
                ChallengeStatus::Failed(f) => {
                    self.conclude(LiveStatus::Spoof(SpoofReason::Challenge(f)))
                }
                p @ ChallengeStatus::Prompt { .. } => LiveStatus::Prompt(p),
            };
        }
        if !watched {
            return LiveStatus::Observing;
        }
        match self.passive_median() {
            None => LiveStatus::Observing,
            Some(p) if p >= self.config.passive_threshold => self.conclude(LiveStatus::Live),
            Some(_) => self.conclude(LiveStatus::Spoof(SpoofReason::Passive)),
        }
    }

    fn conclude(&mut self, status: LiveStatus) -> LiveStatus {
        self.verdict = Some(status);
        status
    }

    /// The verdict so far (`None` while undecided).
    pub fn verdict(&self) -> Option<LiveStatus> {
        self.verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_is_stable_and_normalised() {
        assert!((softmax_at(&[0.0, 0.0], 0) - 0.5).abs() < 1e-6);
        let p = softmax_at(&[1000.0, 0.0, 0.0], 0);
        assert!((p - 1.0).abs() < 1e-6);
        let total: f32 = (0..3).map(|i| softmax_at(&[1.0, 2.0, 3.0], i)).sum();
        assert!((total - 1.0).abs() < 1e-6);
    }

    use crate::cues::Landmarks68;
    use facegate_types::Point;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    /// A rough 3-D head turned by `yaw` radians in a 64x64 frame whose grey level is `grey`.
    fn head(ms: u64, yaw: f32, grey: u8) -> FaceSample {
        let mut p = [Point::new(0.0, 0.0); 68];
        for (i, q) in p.iter_mut().enumerate() {
            let a = i as f32 * 0.37;
            let (x, y) = (a.cos() * (20.0 + (i % 7) as f32 * 2.0), a.sin() * 25.0);
            let z = match i {
                27..=35 => 18.0,
                0..=16 => -15.0,
                _ => (i % 5) as f32 * 2.0,
            };
            let (c, sn) = (yaw.cos(), yaw.sin());
            let (xr, zr) = (c * x + sn * z, -sn * x + c * z);
            let f = 300.0 / (300.0 + zr);
            *q = Point::new(32.0 + xr * f, 32.0 + y * f);
        }
        let frame = Frame::from_rgb8(64, 64, vec![grey; 64 * 64 * 3])
            .unwrap()
            .with_time(Duration::from_millis(ms), ms / 33);
        FaceSample::new(&frame, BBox::new(4.0, 4.0, 60.0, 60.0), Landmarks68(p))
    }

    /// Feeds `n` frames at 30 fps: `yaw(i)` and `grey(i)` per frame, `passive` at every other.
    fn feed(
        mode: ChallengeMode,
        n: u64,
        passive: f32,
        yaw: impl Fn(u64) -> f32,
        grey: impl Fn(u64) -> u8,
    ) -> (LiveStatus, LivenessSession) {
        let config = LivenessConfig {
            mode,
            ..LivenessConfig::default()
        };
        let mut s = LivenessSession::new(config);
        let mut rng = StdRng::seed_from_u64(3);
        let mut last = LiveStatus::Observing;
        for i in 0..n {
            let sample = head(i * 33, yaw(i), grey(i));
            if i % 2 == 0 {
                s.passive_score(sample.at, passive);
            }
            last = s.push(sample, &mut rng);
            if matches!(last, LiveStatus::Live | LiveStatus::Spoof(_)) {
                break;
            }
        }
        (last, s)
    }

    fn turning(i: u64) -> f32 {
        0.4 * (i as f32 * 0.15).sin()
    }

    fn flicker(i: u64) -> u8 {
        100 + (i % 7) as u8 * 9
    }

    #[test]
    fn the_same_picture_frame_after_frame_is_frozen_whatever_the_passive_model_says() {
        for mode in [
            ChallengeMode::Off,
            ChallengeMode::WhenInDoubt,
            ChallengeMode::Always,
        ] {
            let (status, _) = feed(mode, 60, 0.99, |_| 0.0, |_| 120);
            assert_eq!(status, LiveStatus::Spoof(SpoofReason::Frozen), "{mode:?}");
        }
    }

    #[test]
    fn with_the_challenge_off_the_passive_median_decides_a_moving_head() {
        let (status, s) = feed(ChallengeMode::Off, 90, 0.9, turning, flicker);
        assert_eq!(status, LiveStatus::Live);
        assert!(s.challenge().is_none());
        assert!(s.motion().depth_pairs > 0, "{:?}", s.motion());
        let (status, _) = feed(ChallengeMode::Off, 90, 0.001, turning, flicker);
        assert_eq!(status, LiveStatus::Spoof(SpoofReason::Passive));
    }

    #[test]
    fn when_in_doubt_the_challenge_runs_only_for_doubtful_faces() {
        // A high passive score and motion with depth: no challenge.
        let (status, s) = feed(ChallengeMode::WhenInDoubt, 90, 0.9, turning, flicker);
        assert_eq!(status, LiveStatus::Live);
        assert!(s.challenge().is_none());
        // A low passive score: the challenge is drawn, and a head that ignores it is not live.
        let (status, s) = feed(ChallengeMode::WhenInDoubt, 300, 0.01, turning, flicker);
        assert!(s.challenge().is_some());
        assert_ne!(status, LiveStatus::Live);
    }

    #[test]
    fn always_means_no_face_is_live_without_answering_the_challenge() {
        let (status, s) = feed(ChallengeMode::Always, 450, 0.99, turning, flicker);
        assert!(s.challenge().is_some());
        assert!(
            matches!(status, LiveStatus::Spoof(SpoofReason::Challenge(_))),
            "{status:?}"
        );
    }
}
