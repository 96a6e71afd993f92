//! The engine's validated settings.

use std::time::Duration;

use facegate_policy::{MAX_FRAMES_TO_AGREE, PolicyConfig};

use facegate_vision::LivenessConfig;

use crate::EngineError;
use crate::feed::CaptureConfig;

/// How long a track decided `unknown` waits before it is tried again (it is also tried again at
/// once when the gallery changes). Short enough that a person enrolled or standing better gets
/// in without stepping out of view, long enough that a stranger is not re-identified (and
/// audited) several times a second.
pub const DEFAULT_UNKNOWN_RETRY: Duration = Duration::from_secs(3);

/// Bounds of [`EngineConfig::unknown_retry`].
pub const UNKNOWN_RETRY_RANGE: (Duration, Duration) =
    (Duration::from_millis(250), Duration::from_secs(600));

/// How a PIN, card or QR credential is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CredentialMode {
    /// The credential alone decides (the Art. 10 alternative to the face): the subject it maps
    /// to is granted when the store holds a live consent for them, denied otherwise.
    #[default]
    Alone,
    /// Two factors: the credential claims a subject and the face nearest the terminal (the
    /// largest box) seen within `window` must verify 1:1 against that subject's templates
    /// (frames_to_agree attempts); otherwise `denied` (face does not match) or `retry` (no face
    /// in time). An operator override is never face-checked.
    WithFace { window: Duration },
}

/// Identification at a false-positive identification rate: the 1:N threshold follows the
/// gallery size (`facegate_policy::fpir_threshold`) instead of being [`EngineConfig::threshold`].
#[derive(Debug, Clone, PartialEq)]
pub struct FpirRule {
    /// Target false-positive identifications per attempt (`MatchingPolicy::fpir`).
    pub fpir: f64,
    /// The embedder's calibration table for 1:N, `(fmr, cosine)`, from the model manifest, each
    /// rate the 95 % upper bound of its measurement (`ModelSpec::fpir_calibration`).
    pub calibration: Vec<(f64, f32)>,
}

/// Everything the engine needs to decide, already resolved by the caller.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EngineConfig {
    /// Cosine threshold, resolved from the policy's FMR operating point against the model's
    /// calibration (`facegate_policy::resolve_threshold`).
    pub threshold: f32,
    /// 1:N at a false-positive identification rate, when the policy sets `fpir`; `None`: 1:N
    /// uses `threshold` as 1:1 does.
    pub fpir: Option<FpirRule>,
    /// Identification margin over the second identity (`MatchingPolicy::margin`).
    pub margin: f32,
    /// Consecutive agreeing attempts a decision needs (`MatchingPolicy::frames_to_agree`).
    pub frames_to_agree: u32,
    /// How a face is found live (challenge mode, passive threshold, motion limits).
    pub liveness: LivenessConfig,
    /// At most one attempt (quality, liveness, embed) per track every this many processed
    /// frames. 1 = every frame.
    pub attempt_interval_frames: u32,
    /// A track decided `unknown` is tried again after this long, and at once when the gallery
    /// changes (an enrollment, a reload). Default [`DEFAULT_UNKNOWN_RETRY`], within
    /// [`UNKNOWN_RETRY_RANGE`].
    pub unknown_retry: Duration,
    /// Faces analysed per frame, largest detector scores first.
    pub max_faces: usize,
    /// Identities returned by each 1:N search (the decision uses the best and the second).
    pub top_k: usize,
    /// Tracker: minimum box overlap to continue a track, frames a track survives unseen.
    pub tracker_min_iou: f32,
    pub tracker_max_missed: u32,
    /// Retention sweep period (`RetentionPolicy::sweep_interval`); the sweep also runs at start.
    pub sweep_interval: Duration,
    pub credential_mode: CredentialMode,
    /// Credentials waiting for the loop at most; more are refused at submission.
    pub credential_queue: usize,
    /// Recorded as the operator of the engine's audit records.
    pub operator: String,
    /// Width of the embedder's output (the gallery is loaded with it when not loaded yet).
    pub embedding_dim: usize,
    /// Capture back-pressure, reopen back-off and replay pacing.
    pub capture: CaptureConfig,
}

impl EngineConfig {
    /// Settings from the policy (margin, frames to agree, sweep interval) and the cosine
    /// threshold the caller resolved from the policy's operating point; defaults elsewhere.
    pub fn new(policy: &PolicyConfig, threshold: f32) -> Self {
        let m = policy.matching();
        Self {
            threshold,
            fpir: None,
            margin: m.margin(),
            frames_to_agree: m.frames_to_agree(),
            liveness: LivenessConfig::default(),
            attempt_interval_frames: 2,
            unknown_retry: DEFAULT_UNKNOWN_RETRY,
            max_faces: 4,
            top_k: 3,
            tracker_min_iou: 0.3,
            tracker_max_missed: 10,
            sweep_interval: policy.retention().sweep_interval(),
            credential_mode: CredentialMode::Alone,
            credential_queue: 16,
            operator: "facegate-engine".into(),
            embedding_dim: 512,
            capture: CaptureConfig::default(),
        }
    }

    /// Checks every value; the engine refuses to start on an error.
    pub fn validate(&self) -> Result<(), EngineError> {
        let bad = |field: &'static str, reason: String| Err(EngineError::Config { field, reason });
        if !(self.threshold.is_finite() && (-1.0..=1.0).contains(&self.threshold)) {
            return bad(
                "threshold",
                format!("{} is not a cosine in [-1, 1]", self.threshold),
            );
        }
        if let Some(rule) = &self.fpir {
            // The table and the rate, checked as every identification will use them.
            if let Err(e) = facegate_policy::fpir_threshold(&rule.calibration, rule.fpir, 1) {
                return bad("fpir", e.to_string());
            }
        }
        if !(self.margin.is_finite() && (0.0..1.0).contains(&self.margin)) {
            return bad("margin", format!("{} is not in [0, 1)", self.margin));
        }
        if self.frames_to_agree == 0 || self.frames_to_agree > MAX_FRAMES_TO_AGREE {
            return bad(
                "frames_to_agree",
                format!(
                    "{} is not in 1..={MAX_FRAMES_TO_AGREE}",
                    self.frames_to_agree
                ),
            );
        }
        if let Err(reason) = self.liveness.validate() {
            return bad("liveness", reason);
        }
        if self.attempt_interval_frames == 0 {
            return bad("attempt_interval_frames", "must be at least 1".into());
        }
        let (lo, hi) = UNKNOWN_RETRY_RANGE;
        if !(lo..=hi).contains(&self.unknown_retry) {
            return bad(
                "unknown_retry",
                format!(
                    "{} ms is not in {}..={} ms",
                    self.unknown_retry.as_millis(),
                    lo.as_millis(),
                    hi.as_millis()
                ),
            );
        }
        if self.max_faces == 0 || self.top_k == 0 || self.credential_queue == 0 {
            return bad(
                "max_faces/top_k/credential_queue",
                "must be at least 1".into(),
            );
        }
        if self.embedding_dim == 0 {
            return bad("embedding_dim", "must be at least 1".into());
        }
        if self.sweep_interval.is_zero() {
            return bad("sweep_interval", "must be positive".into());
        }
        if let CredentialMode::WithFace { window } = self.credential_mode
            && window.is_zero()
        {
            return bad("credential_mode.window", "must be positive".into());
        }
        if self.capture.backoff_initial.is_zero()
            || self.capture.backoff_max < self.capture.backoff_initial
        {
            return bad(
                "capture.backoff",
                "initial must be positive and not above the maximum".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use facegate_policy::RawPolicyConfig;

    use super::*;

    #[test]
    fn from_policy_and_validation() {
        let policy = PolicyConfig::from_raw(RawPolicyConfig::example()).unwrap();
        let c = EngineConfig::new(&policy, 0.4108);
        assert_eq!(c.frames_to_agree, 2);
        assert!((c.margin - 0.05).abs() < 1e-6);
        assert_eq!(c.sweep_interval, Duration::from_secs(3600));
        assert_eq!(c.liveness.mode, facegate_vision::ChallengeMode::Always);
        c.validate().unwrap();
        let mut bad = c.clone();
        bad.threshold = f32::NAN;
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("threshold")
        );
        let mut bad = c.clone();
        bad.frames_to_agree = 0;
        assert!(bad.validate().is_err());
        let mut bad = c.clone();
        bad.liveness.passive_threshold = 1.5;
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("passive_threshold")
        );
        let mut bad = c;
        bad.credential_mode = CredentialMode::WithFace {
            window: Duration::ZERO,
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn identification_follows_the_gallery_with_an_fpir_rule() {
        let policy = PolicyConfig::from_raw(RawPolicyConfig::example()).unwrap();
        let mut c = EngineConfig::new(&policy, 0.4108);
        assert_eq!(
            crate::Decider::new(&c).identification_threshold(100_000),
            0.4108
        );
        c.fpir = Some(FpirRule {
            fpir: 1e-3,
            calibration: vec![(1e-3, 0.33), (1e-4, 0.41), (1e-5, 0.47), (1e-6, 0.53)],
        });
        c.validate().unwrap();
        assert_eq!(crate::Decider::new(&c).identification_threshold(1), 0.33);
        assert_eq!(crate::Decider::new(&c).identification_threshold(100), 0.47);
        assert_eq!(crate::Decider::new(&c).identification_threshold(1000), 0.53);
        assert_eq!(
            crate::Decider::new(&c).identification_threshold(1_000_000),
            0.53
        );
        c.fpir = Some(FpirRule {
            fpir: 1e-3,
            calibration: vec![(1e-3, 0.45), (1e-4, 0.41)],
        });
        assert!(c.validate().unwrap_err().to_string().contains("fpir"));
    }

    #[test]
    fn the_unknown_retry_interval_is_bounded() {
        let policy = PolicyConfig::from_raw(RawPolicyConfig::example()).unwrap();
        let mut c = EngineConfig::new(&policy, 0.4108);
        assert_eq!(c.unknown_retry, DEFAULT_UNKNOWN_RETRY);
        assert!(c.validate().is_ok());
        for bad in [
            Duration::ZERO,
            Duration::from_millis(249),
            Duration::from_secs(601),
        ] {
            c.unknown_retry = bad;
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains("unknown_retry"), "{err}");
        }
        c.unknown_retry = UNKNOWN_RETRY_RANGE.0;
        assert!(c.validate().is_ok());
    }
}
