//! The active liveness challenge: a short sequence of actions (turn left, turn right, blink)
//! whose order and timing are drawn at random, and the check that a face's samples follow the
//! prompts within their windows. A recording can contain the same actions, but not in an
//! order and at times drawn after it was made.
//!
//! Directions are the person's own: "turn left" moves the nose toward the image's right on a
//! camera that does not mirror (set `mirrored` when it does). Every threshold is relative to the
//! same person's baseline just before the prompt, because eye opening and the nose's place vary
//! by person (0.19-0.35 eye aspect ratio on the evaluation clips).

use std::time::Duration;

use rand::RngExt;
use serde::{Deserialize, Serialize};

use crate::cues::{FaceSample, Landmarks68, homography_residual};

/// One thing the person is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    TurnLeft,
    TurnRight,
    Blink,
}

impl Action {
    pub const ALL: [Action; 3] = [Action::TurnLeft, Action::TurnRight, Action::Blink];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::TurnLeft => "turn_left",
            Self::TurnRight => "turn_right",
            Self::Blink => "blink",
        }
    }

    /// The words a terminal shows (English; the event carries [`Action::as_str`] for others).
    pub fn prompt(self) -> &'static str {
        match self {
            Self::TurnLeft => "Turn your head to your left",
            Self::TurnRight => "Turn your head to your right",
            Self::Blink => "Blink",
        }
    }
}

/// How a challenge is drawn and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ChallengeConfig {
    /// Actions per challenge (1-5).
    pub steps: usize,
    /// The actions drawn from (each step independently, so the same action may come twice).
    pub actions: Vec<Action>,
    /// Time the person has to respond to each prompt.
    pub window: Duration,
    /// Random pause before each prompt, once the face is steady: from...
    pub gap_min: Duration,
    /// ...to.
    pub gap_max: Duration,
    /// A movement starting sooner than this after its prompt is not a response to it...
    pub min_latency: Duration,
    /// ...and a response must have begun by this time after the prompt (people react within
    /// about a second; a recording's movements fall anywhere).
    pub max_onset: Duration,
    /// The turn (change of [`FaceSample::turn`] from the baseline) that counts as a turn...
    pub turn: f32,
    /// ...when it also shows depth: the landmarks of the turned face are this far (interocular
    /// distances) from any homography of the baseline's (a tilted photo's are not).
    pub turn_depth: f32,
    /// Eyes count as closed below this fraction of the baseline opening...
    pub closed: f32,
    /// ...and as open again above this fraction.
    pub reopened: f32,
    /// The camera mirrors the image (swaps left and right).
    pub mirrored: bool,
}

impl Default for ChallengeConfig {
    fn default() -> Self {
        Self {
            steps: 3,
            actions: Action::ALL.to_vec(),
            window: Duration::from_millis(2500),
            gap_min: Duration::from_millis(150),
            gap_max: Duration::from_millis(800),
            min_latency: Duration::from_millis(150),
            max_onset: Duration::from_millis(900),
            turn: 0.30,
            turn_depth: 0.06,
            closed: 0.72,
            reopened: 0.85,
            mirrored: false,
        }
    }
}

impl ChallengeConfig {
    /// Checks the numbers; the message names the setting.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=5).contains(&self.steps) {
            return Err(format!("steps = {} (allowed 1-5)", self.steps));
        }
        if self.actions.is_empty() {
            return Err("actions is empty".into());
        }
        if self.max_onset <= self.min_latency || self.max_onset > self.window {
            return Err("max_onset must lie between min_latency and the window".into());
        }
        if self.window < Duration::from_millis(800) || self.window > Duration::from_secs(10) {
            return Err(format!("window = {:?} (allowed 0.8-10 s)", self.window));
        }
        if self.gap_min > self.gap_max || self.gap_max > Duration::from_secs(5) {
            return Err("gap_min must not exceed gap_max (at most 5 s)".into());
        }
        if !(0.1..=1.0).contains(&self.turn) {
            return Err(format!("turn = {} (allowed 0.1-1.0)", self.turn));
        }
        if !(0.0..=0.5).contains(&self.turn_depth) {
            return Err(format!("turn_depth = {} (allowed 0-0.5)", self.turn_depth));
        }
        if !(0.3 < self.closed && self.closed < self.reopened && self.reopened < 1.0) {
            return Err("need 0.3 < closed < reopened < 1".into());
        }
        Ok(())
    }
}

/// A drawn challenge: the actions and the pause before each prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Challenge {
    pub steps: Vec<(Action, Duration)>,
}

impl Challenge {
    /// Draws a challenge: each action uniform over the configured ones (independently, so a
    /// recording that alternates cannot predict the next), each pause uniform in the gap range.
    /// When turns and blinks are both configured and there are two steps or more, every
    /// challenge holds at least one of each: a recording of someone blinking cannot turn on
    /// cue, a recording of someone turning (or a tilted photo) cannot blink.
    pub fn draw(rng: &mut impl rand::Rng, config: &ChallengeConfig) -> Self {
        let has = |steps: &[(Action, Duration)], blink: bool| {
            steps.iter().any(|(a, _)| (*a == Action::Blink) == blink)
        };
        let mixed = config.steps >= 2 && has_kinds(&config.actions);
        loop {
            let steps: Vec<(Action, Duration)> = (0..config.steps)
                .map(|_| {
                    let action = config.actions[rng.random_range(0..config.actions.len())];
                    let gap =
                        rng.random_range(config.gap_min.as_millis()..=config.gap_max.as_millis());
                    (action, Duration::from_millis(gap as u64))
                })
                .collect();
            if !mixed || (has(&steps, true) && has(&steps, false)) {
                return Self { steps };
            }
        }
    }
}

/// Whether `actions` holds a turn and a blink.
fn has_kinds(actions: &[Action]) -> bool {
    actions.contains(&Action::Blink)
        && actions
            .iter()
            .any(|a| matches!(a, Action::TurnLeft | Action::TurnRight))
}

/// Why a challenge failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChallengeFailure {
    /// No response within the window.
    Timeout,
    /// The other action (turned the other way, turned instead of blinking).
    WrongAction,
    /// The movement began before the prompt could have been seen.
    Early,
    /// The face never held still long enough to be prompted.
    NotSteady,
}

impl ChallengeFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "challenge_timeout",
            Self::WrongAction => "challenge_wrong_action",
            Self::Early => "challenge_early",
            Self::NotSteady => "challenge_not_steady",
        }
    }
}

/// What the challenge needs now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ChallengeStatus {
    /// Waiting for a steady face, or the random pause, before prompt `step`.
    Waiting {
        step: usize,
    },
    /// Prompt `step` (0-based) is out since `since`; respond before `deadline` (media time).
    Prompt {
        step: usize,
        action: Action,
        since: Duration,
        deadline: Duration,
    },
    Passed,
    Failed(ChallengeFailure),
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Baseline {
    turn: f32,
    eyes: f32,
}

/// The face's landmarks when a prompt went out (for the depth of a turn). In memory only.
#[derive(Clone, Copy)]
struct BasePoints(Landmarks68);

impl std::fmt::Debug for BasePoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BasePoints(redacted)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Waiting for the face to be steady (and back to its baseline after a turn).
    Settling {
        since: Option<Duration>,
    },
    /// Steady since `steady`; the prompt goes out at `at`.
    Pausing {
        at: Duration,
    },
    Prompted {
        since: Duration,
        base: Baseline,
        /// A blink: eyes seen closed.
        closed: bool,
        /// The response has begun.
        onset: bool,
    },
    Done,
    Failed(ChallengeFailure),
}

/// Steady means the turn stayed within this over the settle time.
const STEADY_TURN: f32 = 0.08;
/// How long the face must be steady before a prompt.
const SETTLE: Duration = Duration::from_millis(250);
/// A face that does not settle within this fails.
const SETTLE_LIMIT: Duration = Duration::from_secs(6);
/// Recent samples kept for baselines.
const HISTORY: usize = 64;

/// One challenge being answered by one face.
#[derive(Debug, Clone)]
pub struct ChallengeRun {
    challenge: Challenge,
    config: ChallengeConfig,
    step: usize,
    phase: Phase,
    started: Option<Duration>,
    /// (time, turn, eyes) of recent samples.
    history: Vec<(Duration, f32, f32)>,
    /// The turn of the face at the first prompt: later prompts wait until the face is back.
    home: Option<f32>,
    /// The landmarks at the latest prompt.
    base_points: Option<BasePoints>,
}

impl ChallengeRun {
    pub fn new(challenge: Challenge, config: ChallengeConfig) -> Self {
        Self {
            challenge,
            config,
            step: 0,
            phase: Phase::Settling { since: None },
            started: None,
            history: Vec::with_capacity(HISTORY),
            home: None,
            base_points: None,
        }
    }

    pub fn challenge(&self) -> &Challenge {
        &self.challenge
    }

    /// Media time of the first sample.
    pub fn started(&self) -> Option<Duration> {
        self.started
    }

    pub fn status(&self) -> ChallengeStatus {
        match self.phase {
            Phase::Settling { .. } | Phase::Pausing { .. } => ChallengeStatus::Waiting {
                step: self.step.min(self.challenge.steps.len().saturating_sub(1)),
            },
            Phase::Prompted { since, .. } => ChallengeStatus::Prompt {
                step: self.step,
                action: self.challenge.steps[self.step].0,
                since,
                deadline: since + self.config.window,
            },
            Phase::Done => ChallengeStatus::Passed,
            Phase::Failed(f) => ChallengeStatus::Failed(f),
        }
    }

    /// Feeds one sample (in media-time order) and returns the status after it.
    pub fn push(&mut self, s: &FaceSample) -> ChallengeStatus {
        let t = s.at;
        self.started.get_or_insert(t);
        if self.history.len() == HISTORY {
            self.history.remove(0);
        }
        self.history.push((t, s.turn, s.eyes));
        let turn = if self.config.mirrored {
            -s.turn
        } else {
            s.turn
        };
        self.phase = match self.phase {
            Phase::Settling { since } => {
                let since = since.unwrap_or(t);
                if t.saturating_sub(since) > SETTLE_LIMIT {
                    Phase::Failed(ChallengeFailure::NotSteady)
                } else if self.steady(t) && self.step == self.challenge.steps.len() {
                    // Every step answered and the face back, looking at the camera.
                    Phase::Done
                } else if self.steady(t) {
                    let gap = self.challenge.steps[self.step].1;
                    Phase::Pausing { at: t + gap }
                } else {
                    Phase::Settling { since: Some(since) }
                }
            }
            Phase::Pausing { at } => {
                if !self.steady(t) {
                    Phase::Settling { since: Some(t) }
                } else if t >= at {
                    let base = self.baseline(t);
                    self.home.get_or_insert(base.turn);
                    self.base_points = Some(BasePoints(s.points));
                    Phase::Prompted {
                        since: t,
                        base,
                        closed: false,
                        onset: false,
                    }
                } else {
                    Phase::Pausing { at }
                }
            }
            Phase::Prompted {
                since,
                base,
                closed,
                onset,
            } => {
                let depth = self.depth(s);
                self.respond(t, turn, s.eyes, depth, since, base, (closed, onset))
            }
            p @ (Phase::Done | Phase::Failed(_)) => p,
        };
        self.status()
    }

    /// How far the landmarks are from any homography of those at the prompt.
    fn depth(&self, s: &FaceSample) -> f32 {
        let Some(BasePoints(base)) = &self.base_points else {
            return 0.0;
        };
        let scale = base.interocular().max(1.0);
        homography_residual(&base.0, &s.points.0).map_or(0.0, |r| r / scale)
    }

    #[allow(clippy::too_many_arguments)]
    fn respond(
        &mut self,
        t: Duration,
        turn: f32,
        eyes: f32,
        depth: f32,
        since: Duration,
        base: Baseline,
        (closed, began): (bool, bool),
    ) -> Phase {
        let c = &self.config;
        let base_turn = if c.mirrored { -base.turn } else { base.turn };
        let moved = turn - base_turn;
        let early = t < since + c.min_latency;
        let action = self.challenge.steps[self.step].0;
        let onset = moved.abs() >= c.turn / 2.0
            || (base.eyes > 0.0 && eyes < base.eyes * c.closed && action == Action::Blink);
        // A turn well under way this soon began before the prompt could be seen.
        if early && moved.abs() >= c.turn * 0.75 {
            return Phase::Failed(ChallengeFailure::Early);
        }
        let began = began || onset;
        if t > since + c.window || (!began && t > since + c.max_onset) {
            return Phase::Failed(ChallengeFailure::Timeout);
        }
        let done = match action {
            Action::TurnLeft | Action::TurnRight => {
                let sign = if action == Action::TurnLeft {
                    1.0
                } else {
                    -1.0
                };
                if moved * sign >= c.turn {
                    // Far enough; done once the turn shows depth (a head, not a tilted plane).
                    depth >= c.turn_depth
                } else if moved * sign <= -c.turn {
                    return Phase::Failed(ChallengeFailure::WrongAction);
                } else {
                    false
                }
            }
            Action::Blink => {
                if moved.abs() >= c.turn {
                    return Phase::Failed(ChallengeFailure::WrongAction);
                }
                if base.eyes <= 0.0 {
                    false
                } else if !closed {
                    if eyes < base.eyes * c.closed {
                        return Phase::Prompted {
                            since,
                            base,
                            closed: true,
                            onset: true,
                        };
                    }
                    false
                } else {
                    eyes > base.eyes * c.reopened
                }
            }
        };
        if !done {
            return Phase::Prompted {
                since,
                base,
                closed,
                onset: began,
            };
        }
        self.step += 1;
        // After the last step too: the challenge passes once the face is back and still.
        Phase::Settling { since: Some(t) }
    }

    /// The face held still over the last [`SETTLE`], and (after a turn) is back near where it
    /// was at the first prompt (so a person holding a turn is not prompted from there).
    fn steady(&self, t: Duration) -> bool {
        let from = t.saturating_sub(SETTLE);
        let recent: Vec<f32> = self
            .history
            .iter()
            .filter(|(at, _, _)| *at >= from)
            .map(|&(_, turn, _)| turn)
            .collect();
        let span = self
            .history
            .first()
            .is_some_and(|(first, _, _)| t.saturating_sub(*first) >= SETTLE);
        if recent.len() < 2 || !span {
            return false;
        }
        let (lo, hi) = recent
            .iter()
            .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
        let home = self.home.is_none_or(|h| {
            (lo + hi) / 2.0 - h <= self.config.turn / 2.0
                && h - (lo + hi) / 2.0 <= self.config.turn / 2.0
        });
        hi - lo <= STEADY_TURN * 2.0 && home
    }

    /// Turn: median of the settle window. Eyes: the upper quartile of the last second (open).
    fn baseline(&self, t: Duration) -> Baseline {
        let pick = |from: Duration, f: fn(&(Duration, f32, f32)) -> f32| {
            let mut v: Vec<f32> = self.history.iter().filter(|s| s.0 >= from).map(f).collect();
            v.sort_by(f32::total_cmp);
            v
        };
        let turns = pick(t.saturating_sub(SETTLE), |s| s.1);
        let eyes = pick(t.saturating_sub(Duration::from_secs(1)), |s| s.2);
        Baseline {
            turn: turns.get(turns.len() / 2).copied().unwrap_or(0.0),
            eyes: eyes.get(eyes.len() * 3 / 4).copied().unwrap_or(0.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cues::Landmarks68;
    use facegate_types::{BBox, Frame, Point};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    /// A rough 3-D head (jaw back, nose forward) turned by `yaw` radians, eyes open `eyes`
    /// (lid gap over eye width).
    fn sample(ms: u64, yaw: f32, eyes: f32) -> FaceSample {
        let mut q = [[0.0f32; 3]; 68];
        for (i, p) in q.iter_mut().enumerate().take(17) {
            let a = std::f32::consts::PI * (i as f32 / 16.0);
            *p = [-50.0 * a.cos(), 10.0 + 45.0 * a.sin(), -30.0];
        }
        for (k, p) in q.iter_mut().enumerate().skip(17).take(10) {
            *p = [-40.0 + (k - 17) as f32 * 9.0, -25.0, 5.0];
        }
        for (k, p) in q.iter_mut().enumerate().skip(27).take(9) {
            *p = [
                (k as f32 - 31.0) * 3.0,
                -15.0 + (k - 27) as f32 * 4.0,
                15.0 + (k % 3) as f32 * 6.0,
            ];
        }
        let h = eyes * 20.0 / 2.0;
        for (first, x0) in [(36usize, -35.0f32), (42, 15.0)] {
            let e = [
                (0.0, 0.0),
                (6.0, -h),
                (14.0, -h),
                (20.0, 0.0),
                (14.0, h),
                (6.0, h),
            ];
            for (k, (dx, dy)) in e.into_iter().enumerate() {
                q[first + k] = [x0 + dx, -12.0 + dy, 0.0];
            }
        }
        for (k, p) in q.iter_mut().enumerate().skip(48) {
            let a = std::f32::consts::TAU * ((k - 48) as f32 / 20.0);
            *p = [20.0 * a.cos(), 30.0 + 8.0 * a.sin(), 5.0];
        }
        q[8] = [0.0, 55.0, -10.0];
        q[30] = [0.0, 5.0, 35.0];
        let (c, sn) = (yaw.cos(), yaw.sin());
        let mut p = [Point::new(0.0, 0.0); 68];
        for (i, &[x, y, z]) in q.iter().enumerate() {
            let (xr, zr) = (c * x + sn * z, -sn * x + c * z);
            let f = 500.0 / (500.0 + zr);
            p[i] = Point::new(200.0 + xr * f, 200.0 + y * f);
        }
        let frame = Frame::from_rgb8(4, 4, vec![0; 48])
            .unwrap()
            .with_time(Duration::from_millis(ms), 0);
        FaceSample::new(&frame, BBox::new(0.0, 0.0, 4.0, 4.0), Landmarks68(p))
    }

    /// A person who does what is asked `react` ms after each prompt, at 30 frames/s.
    fn respond(run: &mut ChallengeRun, react: u64) -> ChallengeStatus {
        let (mut turn, mut eyes) = (0.0f32, 0.3f32);
        let mut acting: Option<(Action, u64)> = None;
        for i in 0..600u64 {
            let ms = i * 33;
            if let Some((a, from)) = acting {
                let k = ms.saturating_sub(from);
                match a {
                    Action::TurnLeft => turn = (k as f32 / 300.0).min(1.0) * 0.6,
                    Action::TurnRight => turn = -(k as f32 / 300.0).min(1.0) * 0.6,
                    Action::Blink => eyes = if (100..250).contains(&k) { 0.1 } else { 0.3 },
                }
            }
            match run.push(&sample(ms, turn, eyes)) {
                ChallengeStatus::Prompt { action, since, .. } => {
                    let since = since.as_millis() as u64 + react;
                    if acting.is_none_or(|(a, f)| a != action || f < since - react) {
                        acting = Some((action, since));
                    }
                }
                ChallengeStatus::Waiting { .. } => {
                    // Back to the baseline between steps.
                    acting = None;
                    turn *= 0.5;
                    eyes = 0.3;
                }
                done => return done,
            }
        }
        run.status()
    }

    #[test]
    fn a_responding_person_passes_every_drawn_challenge() {
        let config = ChallengeConfig::default();
        for seed in 0..50 {
            let c = Challenge::draw(&mut StdRng::seed_from_u64(seed), &config);
            assert_eq!(c.steps.len(), 3);
            assert!(c.steps.iter().any(|s| s.0 == Action::Blink), "{c:?}");
            assert!(c.steps.iter().any(|s| s.0 != Action::Blink), "{c:?}");
            let mut run = ChallengeRun::new(c.clone(), config.clone());
            assert_eq!(respond(&mut run, 400), ChallengeStatus::Passed, "{c:?}");
        }
    }

    #[test]
    fn a_still_face_times_out_and_a_face_turning_anyway_fails() {
        let config = ChallengeConfig::default();
        let c = Challenge::draw(&mut StdRng::seed_from_u64(7), &config);
        let mut run = ChallengeRun::new(c, config.clone());
        let mut last = run.status();
        for i in 0..300u64 {
            last = run.push(&sample(i * 33, 0.0, 0.3));
        }
        assert_eq!(last, ChallengeStatus::Failed(ChallengeFailure::Timeout));

        // Turning to the left whatever is asked: fails at the first step that is not a left
        // turn (right turn: wrong action; blink: wrong action).
        let c = Challenge {
            steps: vec![(Action::TurnRight, Duration::from_millis(200))],
        };
        let mut run = ChallengeRun::new(c, config);
        let mut status = run.status();
        for i in 0..200u64 {
            let prompted = matches!(status, ChallengeStatus::Prompt { .. });
            let turn = if prompted { 0.6 } else { 0.0 };
            status = run.push(&sample(i * 33, turn, 0.3));
            if matches!(status, ChallengeStatus::Failed(_)) {
                break;
            }
        }
        assert!(
            matches!(
                status,
                ChallengeStatus::Failed(ChallengeFailure::WrongAction | ChallengeFailure::Early)
            ),
            "{status:?}"
        );
    }

    #[test]
    fn a_face_that_never_holds_still_is_not_prompted() {
        let config = ChallengeConfig::default();
        let c = Challenge::draw(&mut StdRng::seed_from_u64(1), &config);
        let mut run = ChallengeRun::new(c, config);
        let mut last = run.status();
        for i in 0..250u64 {
            let turn = if (i / 4) % 2 == 0 { 0.4 } else { -0.4 };
            last = run.push(&sample(i * 33, turn, 0.3));
        }
        assert_eq!(last, ChallengeStatus::Failed(ChallengeFailure::NotSteady));
    }

    #[test]
    fn config_limits_are_checked() {
        let mut c = ChallengeConfig::default();
        assert!(c.validate().is_ok());
        c.steps = 0;
        assert!(c.validate().unwrap_err().contains("steps"));
        c = ChallengeConfig {
            closed: 0.9,
            ..ChallengeConfig::default()
        };
        assert!(c.validate().is_err());
        c = ChallengeConfig {
            max_onset: Duration::from_millis(100),
            ..ChallengeConfig::default()
        };
        assert!(c.validate().unwrap_err().contains("max_onset"));
    }
}
