//! Annotations of the evaluation footage in `../shared/eval` (never the footage itself): which
//! clips show a live person and a screen replay, and where in the live clips the person holds
//! still and where they turn or blink. `facegate eval liveness` and the engine's tests compose
//! "a person who answers the challenge" from these segments.

use std::ops::Range;

use crate::challenge::Action;

/// The live clips, and where in them the person holds still and acts (0-based frames).
/// real.webm's turns were located with the npm package's head-pose model `fr_pose` (which the
/// runtime does not use) frame by frame and agree with the landmark turn; winks_d7's closures
/// are the times in ../shared/eval/README.md (both eyes 2.3-2.9 s and 3.2-4.1 s, the left eye
/// 1.4-1.8 s).
#[derive(Debug, Clone)]
pub struct LiveClip {
    /// Path under the evaluation directory.
    pub path: &'static str,
    /// Frame ranges where the person holds still, looking at the camera.
    pub neutral: &'static [Range<usize>],
    /// Frame ranges where the person does an action, from a still start.
    pub segments: &'static [(Action, Range<usize>)],
}

pub const LIVE_CLIPS: &[LiveClip] = &[
    LiveClip {
        path: "liveness/videos/real.webm",
        neutral: &[0..20, 141..170, 237..249, 333..350],
        segments: &[
            (Action::TurnLeft, 24..49),
            (Action::TurnLeft, 75..97),
            (Action::TurnRight, 48..76),
            (Action::TurnRight, 192..238),
            (Action::TurnRight, 270..316),
        ],
    },
    LiveClip {
        path: "blink/winks_d7.mp4",
        neutral: &[8..21, 130..177],
        segments: &[
            (Action::Blink, 60..93),
            (Action::Blink, 92..128),
            (Action::Blink, 36..58),
        ],
    },
    LiveClip {
        path: "attacks/person_l_live.mp4",
        neutral: &[],
        segments: &[],
    },
    LiveClip {
        path: "blink/talking_head_aoc.mp4",
        neutral: &[],
        segments: &[],
    },
    LiveClip {
        path: "blink/talking_head_kh.mp4",
        neutral: &[],
        segments: &[],
    },
    LiveClip {
        path: "blink/selfie_blinks.mp4",
        neutral: &[],
        segments: &[],
    },
    LiveClip {
        path: "blink/vlog_blinks.mp4",
        neutral: &[],
        segments: &[],
    },
    LiveClip {
        path: "headturn/no_turn_d8.mp4",
        neutral: &[],
        segments: &[],
    },
    LiveClip {
        path: "headturn/no_turn_expressions_d6.mp4",
        neutral: &[],
        segments: &[],
    },
    LiveClip {
        path: "headturn/interview_turns_320x240.avi",
        neutral: &[],
        segments: &[],
    },
];

/// Screen replays (a phone held up to the camera).
pub const REPLAYS: &[&str] = &[
    "liveness/videos/fake.webm",
    "attacks/person_l_phone_replay.mp4",
    "attacks/phone_photos_replay.mp4",
];
