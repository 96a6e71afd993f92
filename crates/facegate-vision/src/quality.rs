//! Face quality: size, sharpness, exposure and a rough head pose from the five landmarks.
//! The gate refuses to enroll or decide on faces that fail it.

use facegate_types::{BBox, Landmarks5};
use serde::{Deserialize, Serialize};

use crate::align::{ALIGNED_SIZE, AlignedFace};
use crate::preprocess::Normalise;

/// Limits a face must meet.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QualityConfig {
    /// Smaller side of the detector box, in pixels.
    pub min_face_px: f32,
    /// Variance of the Laplacian of the aligned grey crop.
    pub min_sharpness: f32,
    /// Mean grey level of the aligned crop's centre, 0-255.
    pub min_brightness: f32,
    pub max_brightness: f32,
    /// Fraction of centre pixels at or near 0 or 255.
    pub max_clipped: f32,
    pub max_yaw_deg: f32,
    pub max_pitch_deg: f32,
    pub max_roll_deg: f32,
}

impl Default for QualityConfig {
    fn default() -> Self {
        Self {
            min_face_px: 40.0,
            min_sharpness: 15.0,
            min_brightness: 40.0,
            max_brightness: 220.0,
            max_clipped: 0.2,
            max_yaw_deg: 40.0,
            max_pitch_deg: 35.0,
            max_roll_deg: 35.0,
        }
    }
}

impl QualityConfig {
    /// Checks every limit against its plausible range, naming the config key
    /// (`vision.quality.*`) of the first one that is not: a NaN, a negative or an inverted limit
    /// would silently disable the gate's quality check.
    pub fn validate(&self) -> Result<(), crate::VisionError> {
        let check = |key: &'static str, v: f32, lo: f32, hi: f32| {
            if v.is_finite() && (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(crate::VisionError::Setting {
                    key,
                    reason: format!("{v} must lie in [{lo}, {hi}]"),
                })
            }
        };
        check("vision.quality.min_face_px", self.min_face_px, 8.0, 4096.0)?;
        check(
            "vision.quality.min_sharpness",
            self.min_sharpness,
            0.0,
            10_000.0,
        )?;
        check(
            "vision.quality.min_brightness",
            self.min_brightness,
            0.0,
            255.0,
        )?;
        check(
            "vision.quality.max_brightness",
            self.max_brightness,
            0.0,
            255.0,
        )?;
        check("vision.quality.max_clipped", self.max_clipped, 0.0, 1.0)?;
        check("vision.quality.max_yaw_deg", self.max_yaw_deg, 1.0, 90.0)?;
        check(
            "vision.quality.max_pitch_deg",
            self.max_pitch_deg,
            1.0,
            90.0,
        )?;
        check("vision.quality.max_roll_deg", self.max_roll_deg, 1.0, 90.0)?;
        if self.min_brightness >= self.max_brightness {
            return Err(crate::VisionError::Setting {
                key: "vision.quality.min_brightness",
                reason: format!(
                    "{} must be below vision.quality.max_brightness ({})",
                    self.min_brightness, self.max_brightness
                ),
            });
        }
        Ok(())
    }
}

/// Why a face failed quality.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QualityIssue {
    TooSmall,
    Blurred,
    TooDark,
    TooBright,
    Clipped,
    Turned,
    Tilted,
    Rolled,
}

/// Measured quality of one face. Tied to a person it is face information: never logged with a
/// subject id.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QualityReport {
    pub face_px: f32,
    pub sharpness: f32,
    pub brightness: f32,
    pub clipped: f32,
    pub yaw_deg: f32,
    pub pitch_deg: f32,
    pub roll_deg: f32,
    pub issues: Vec<QualityIssue>,
}

impl QualityReport {
    pub fn passes(&self) -> bool {
        self.issues.is_empty()
    }
}

/// Roll, yaw and pitch estimates in degrees from five landmarks (rough: a 2-D model, good for
/// gating frontal faces, not for measurement).
pub fn rough_pose(lm: &Landmarks5) -> (f32, f32, f32) {
    let (le, re) = (lm.left_eye(), lm.right_eye());
    let (dx, dy) = (re.x - le.x, re.y - le.y);
    let io = (dx * dx + dy * dy).sqrt().max(1e-3);
    let roll = dy.atan2(dx);
    let (c, s) = (roll.cos(), roll.sin());
    // Express the nose and mouth in the eye-aligned frame centred between the eyes.
    let mid = ((le.x + re.x) / 2.0, (le.y + re.y) / 2.0);
    let local = |p: facegate_types::Point| {
        let (x, y) = (p.x - mid.0, p.y - mid.1);
        (x * c + y * s, -x * s + y * c)
    };
    let nose = local(lm.nose());
    let mouth_l = local(lm.mouth_left());
    let mouth_r = local(lm.mouth_right());
    let yaw = (nose.0 / (io / 2.0)).clamp(-1.0, 1.0).asin();
    let mouth_y = (mouth_l.1 + mouth_r.1) / 2.0;
    // Frontal faces put the nose tip a little over half way from the eye line to the mouth.
    let ratio = if mouth_y > 1e-3 {
        nose.1 / mouth_y
    } else {
        0.55
    };
    let pitch = ((ratio - 0.55) / 0.45).clamp(-1.0, 1.0).asin();
    (roll.to_degrees(), yaw.to_degrees(), pitch.to_degrees())
}

/// Sharpness (variance of the 4-neighbour Laplacian) and exposure of the central 64x64 of an
/// aligned crop, from its first plane de-normalised back to 0-255.
pub fn crop_statistics(face: &AlignedFace, norm: Normalise) -> (f32, f32, f32) {
    let size = ALIGNED_SIZE as usize;
    let (lo, hi) = (24usize, 88usize);
    // Grey from the three planes (order does not matter much for these statistics).
    let plane = size * size;
    let inv = if norm.scale.abs() > 1e-12 {
        1.0 / norm.scale
    } else {
        1.0
    };
    let grey = |y: usize, x: usize| -> f32 {
        let i = y * size + x;
        let t = &face.tensor;
        ((t[i] + t[plane + i] + t[2 * plane + i]) / 3.0) * inv + norm.mean
    };
    let (mut sum, mut clipped, mut lap_sum, mut lap_sq) = (0.0f32, 0u32, 0.0f64, 0.0f64);
    for y in lo..hi {
        for x in lo..hi {
            let g = grey(y, x);
            sum += g;
            if !(8.0..=247.0).contains(&g) {
                clipped += 1;
            }
            let lap = f64::from(
                grey(y - 1, x) + grey(y + 1, x) + grey(y, x - 1) + grey(y, x + 1) - 4.0 * g,
            );
            lap_sum += lap;
            lap_sq += lap * lap;
        }
    }
    let n = ((hi - lo) * (hi - lo)) as f32;
    let mean_lap = lap_sum / f64::from(n);
    let sharpness = (lap_sq / f64::from(n) - mean_lap * mean_lap) as f32;
    (sharpness, sum / n, clipped as f32 / n)
}

/// Assesses one face.
pub fn assess(
    bbox: &BBox,
    lm: &Landmarks5,
    face: &AlignedFace,
    norm: Normalise,
    cfg: &QualityConfig,
) -> QualityReport {
    let face_px = bbox.width().min(bbox.height());
    let (sharpness, brightness, clipped) = crop_statistics(face, norm);
    let (roll_deg, yaw_deg, pitch_deg) = rough_pose(lm);
    let mut issues = Vec::new();
    let mut flag = |bad: bool, issue| {
        if bad {
            issues.push(issue);
        }
    };
    flag(face_px < cfg.min_face_px, QualityIssue::TooSmall);
    flag(sharpness < cfg.min_sharpness, QualityIssue::Blurred);
    flag(brightness < cfg.min_brightness, QualityIssue::TooDark);
    flag(brightness > cfg.max_brightness, QualityIssue::TooBright);
    flag(clipped > cfg.max_clipped, QualityIssue::Clipped);
    flag(yaw_deg.abs() > cfg.max_yaw_deg, QualityIssue::Turned);
    flag(pitch_deg.abs() > cfg.max_pitch_deg, QualityIssue::Tilted);
    flag(roll_deg.abs() > cfg.max_roll_deg, QualityIssue::Rolled);
    QualityReport {
        face_px,
        sharpness,
        brightness,
        clipped,
        yaw_deg,
        pitch_deg,
        roll_deg,
        issues,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::align::ARCFACE_TEMPLATE;
    use crate::manifest::Colour;

    const RAW: Normalise = Normalise {
        colour: Colour::Bgr,
        mean: 0.0,
        scale: 1.0,
    };

    #[test]
    fn template_landmarks_are_frontal() {
        let (roll, yaw, pitch) = rough_pose(&Landmarks5(ARCFACE_TEMPLATE));
        assert!(
            roll.abs() < 1.0 && yaw.abs() < 5.0 && pitch.abs() < 10.0,
            "{roll} {yaw} {pitch}"
        );
    }

    #[test]
    fn turned_face_is_flagged() {
        let mut pts = ARCFACE_TEMPLATE;
        pts[2].x += 15.0; // nose far towards the right eye
        let (_, yaw, _) = rough_pose(&Landmarks5(pts));
        assert!(yaw > 40.0, "{yaw}");
    }

    #[test]
    fn flat_crop_is_blurred_and_checkerboard_is_sharp() {
        let mut face = AlignedFace::new();
        face.tensor.fill(128.0);
        let (sharp, bright, clipped) = crop_statistics(&face, RAW);
        assert!(sharp < 1e-3 && (bright - 128.0).abs() < 1e-3 && clipped == 0.0);
        let size = ALIGNED_SIZE as usize;
        for (i, v) in face.tensor.iter_mut().enumerate() {
            let (y, x) = ((i % (size * size)) / size, i % size);
            *v = if (x + y) % 2 == 0 { 60.0 } else { 180.0 };
        }
        let (sharp, _, _) = crop_statistics(&face, RAW);
        assert!(sharp > 1000.0, "{sharp}");
        let report = assess(
            &BBox::new(0.0, 0.0, 20.0, 200.0),
            &Landmarks5(ARCFACE_TEMPLATE),
            &face,
            RAW,
            &QualityConfig::default(),
        );
        assert_eq!(report.issues, vec![QualityIssue::TooSmall]);
    }
}
