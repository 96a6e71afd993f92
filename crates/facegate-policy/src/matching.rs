//! Thresholds as false-match-rate operating points, and the decision rules for verification
//! (1:1) and identification (1:N), named as in Art. 19.

use crate::PolicyError;
use crate::config::{MatchingPolicy, OperatingPoint};

/// Two false-match rates closer than this (relative) are the same operating point; it absorbs
/// the difference between `1e-4` and `0.0001` written in two files, nothing more.
const FMR_RELATIVE_TOLERANCE: f64 = 1e-9;

/// Refuses a calibration table that cannot have been measured on one model: a false-match rate
/// outside (0, 1) or NaN, a cosine threshold outside (0, 1) or NaN (at or below 0 a stranger who
/// merely points the same way matches; at or above 1 nobody does), or thresholds that do not
/// rise as the rate falls. Runs wherever a table is used ([`resolve_threshold`],
/// [`fpir_threshold`]), so `facegate validate` and start-up refuse such a manifest.
pub fn check_calibration(calibration: &[(f64, f32)]) -> Result<(), PolicyError> {
    for &(fmr, cosine) in calibration {
        if !(fmr.is_finite() && fmr > 0.0 && fmr < 1.0) {
            return Err(PolicyError::InvalidCalibration {
                reason: format!("false-match rate {fmr} is not in (0, 1)"),
            });
        }
        if !(cosine.is_finite() && cosine > 0.0 && cosine < 1.0) {
            return Err(PolicyError::InvalidCalibration {
                reason: format!("cosine threshold {cosine} for fmr {fmr:e} is not in (0, 1)"),
            });
        }
    }
    let mut by_rate: Vec<(f64, f32)> = calibration.to_vec();
    by_rate.sort_by(|a, b| b.0.total_cmp(&a.0));
    for pair in by_rate.windows(2) {
        let ((loose_fmr, loose), (strict_fmr, strict)) = (pair[0], pair[1]);
        if strict <= loose {
            return Err(PolicyError::InvalidCalibration {
                reason: format!(
                    "the threshold must rise as the false-match rate falls, but fmr {strict_fmr:e} \
                     has cosine {strict} and fmr {loose_fmr:e} has {loose}"
                ),
            });
        }
    }
    Ok(())
}

/// The 1:N threshold for a target false-positive identification rate per attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FpirThreshold {
    /// The cosine threshold applied to the best score.
    pub cosine: f32,
    /// The calibrated per-comparison false-match rate it belongs to.
    pub fmr: f64,
    /// The per-comparison rate the target needs at this gallery size.
    pub needed_fmr: f64,
    /// False when even the strictest calibrated point is looser than `needed_fmr` (the gallery
    /// outgrew the calibration): `cosine` is then that strictest point's.
    pub met: bool,
}

/// The per-comparison false-match rate that keeps a stranger compared with `gallery_size`
/// templates below `fpir` false identifications per attempt: `fpir / N`. This is the union
/// (Bonferroni) bound, `P(max of N scores > t) <= N * FMR(t)`, which holds whatever the
/// dependence between a stranger's N scores (a probe that looks like one enrolled person often
/// looks like several); `1 - (1 - fpir)^(1/N)` assumes independence and is slightly looser.
pub fn fmr_for_fpir(fpir: f64, gallery_size: usize) -> f64 {
    fpir / gallery_size.max(1) as f64
}

/// The identification threshold for `fpir` at `gallery_size` templates: the calibrated point
/// with the largest false-match rate that is at most [`fmr_for_fpir`] (the next stricter point
/// when the rate falls between two; no interpolation, so the promise holds at the measured
/// points). The table is checked first ([`check_calibration`]).
///
/// For 1:N the rate of each point should be the upper confidence bound of what was measured,
/// not the nominal rate (the manifest's `fpir_calibration`): the strict points rest on a few
/// dozen impostor pairs, and a nominal 1e-6 from 22 pairs can be 1.4e-6 at 95 % confidence.
pub fn fpir_threshold(
    calibration: &[(f64, f32)],
    fpir: f64,
    gallery_size: usize,
) -> Result<FpirThreshold, PolicyError> {
    check_calibration(calibration)?;
    if !(fpir.is_finite() && fpir > 0.0 && fpir < 1.0) {
        return Err(PolicyError::InvalidOperatingPoint {
            reason: format!("fpir = {fpir} is not a rate in (0, 1)"),
        });
    }
    let needed = fmr_for_fpir(fpir, gallery_size);
    let eligible = calibration
        .iter()
        .filter(|(fmr, _)| *fmr <= needed * (1.0 + FMR_RELATIVE_TOLERANCE))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let strictest = calibration.iter().min_by(|a, b| a.0.total_cmp(&b.0));
    match (eligible, strictest) {
        (Some(&(fmr, cosine)), _) => Ok(FpirThreshold {
            cosine,
            fmr,
            needed_fmr: needed,
            met: true,
        }),
        (None, Some(&(fmr, cosine))) => Ok(FpirThreshold {
            cosine,
            fmr,
            needed_fmr: needed,
            met: false,
        }),
        (None, None) => Err(PolicyError::InvalidCalibration {
            reason: "the model has no calibration table, so no fpir can be met".to_owned(),
        }),
    }
}

/// The cosine threshold for the configured operating point.
///
/// `calibration` is the model's `(fmr, cosine)` table from `models/manifest.toml`. The expert
/// `cosine_override` wins when set (with a warning, since it bypasses calibration); otherwise the
/// configured FMR must be an exact entry of the table. An FMR that is not calibrated is refused
/// with the list of the ones that are: interpolating between calibration points would claim an
/// error rate nobody measured.
pub fn resolve_threshold(
    calibration: &[(f64, f32)],
    matching: &MatchingPolicy,
) -> Result<f32, PolicyError> {
    check_calibration(calibration)?;
    match matching.operating_point() {
        OperatingPoint::CosineOverride(cosine) => {
            tracing::warn!(
                cosine_override = f64::from(cosine),
                configured_fmr = matching.fmr(),
                "[matching].cosine_override is set: the calibrated false-match rate no longer \
                 applies"
            );
            Ok(cosine)
        }
        OperatingPoint::Fmr(requested) => calibration
            .iter()
            .find(|(fmr, _)| {
                (fmr - requested).abs() <= FMR_RELATIVE_TOLERANCE * requested.abs().max(*fmr)
            })
            .map(|&(_, cosine)| cosine)
            .ok_or_else(|| {
                let mut rates: Vec<f64> = calibration.iter().map(|&(f, _)| f).collect();
                rates.sort_by(f64::total_cmp);
                rates.dedup();
                let available = if rates.is_empty() {
                    "none (the model has no calibration table)".to_owned()
                } else {
                    rates
                        .iter()
                        .map(|f| format!("{f:e}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                PolicyError::UncalibratedFmr {
                    requested,
                    available,
                }
            }),
    }
}

/// Why identification said "unknown".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnknownReason {
    /// The best score is under the threshold (or not a number).
    BelowThreshold,
    /// The best identity does not beat the second identity by the margin.
    AmbiguousMargin,
}

impl UnknownReason {
    pub fn as_str(self) -> &'static str {
        match self {
            UnknownReason::BelowThreshold => "below_threshold",
            UnknownReason::AmbiguousMargin => "ambiguous_margin",
        }
    }
}

/// The outcome of one identification (1:N) comparison round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdentifyOutcome {
    Match,
    Unknown(UnknownReason),
}

/// Identification: "match" only if the best score clears the threshold *and* beats the best score
/// of any *other identity* by at least `margin`. `second_identity` is the best score of a
/// different subject (not a second template of the same one); `None` when the gallery has no
/// other subject. Non-finite scores are never a match.
pub fn identification_outcome(
    best: f32,
    second_identity: Option<f32>,
    threshold: f32,
    margin: f32,
) -> IdentifyOutcome {
    if !(best.is_finite() && best >= threshold) {
        return IdentifyOutcome::Unknown(UnknownReason::BelowThreshold);
    }
    match second_identity {
        Some(second) if second.is_nan() || best - second < margin => {
            IdentifyOutcome::Unknown(UnknownReason::AmbiguousMargin)
        }
        _ => IdentifyOutcome::Match,
    }
}

/// The outcome of one verification (1:1) comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VerifyOutcome {
    Accept,
    Reject,
}

/// Verification: accept if the score clears the threshold; non-finite scores are rejected.
pub fn verification_outcome(score: f32, threshold: f32) -> VerifyOutcome {
    if score.is_finite() && score >= threshold {
        VerifyOutcome::Accept
    } else {
        VerifyOutcome::Reject
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::config::RawMatching;

    const TABLE: [(f64, f32); 3] = [(1e-3, 0.30), (1e-4, 0.36), (1e-5, 0.42)];

    fn policy(fmr: Option<f64>, cosine_override: Option<f32>) -> MatchingPolicy {
        MatchingPolicy::from_raw(RawMatching {
            fmr,
            cosine_override,
            margin: 0.05,
            frames_to_agree: 2,
            fpir: None,
        })
        .unwrap()
    }

    #[test]
    fn calibrated_fmr_resolves_to_its_threshold() {
        assert_eq!(
            resolve_threshold(&TABLE, &policy(Some(1e-4), None)).unwrap(),
            0.36
        );
        assert_eq!(
            resolve_threshold(&TABLE, &policy(Some(0.00001), None)).unwrap(),
            0.42
        );
    }

    #[test]
    fn uncalibrated_fmr_is_refused_listing_the_calibrated_ones() {
        let err = resolve_threshold(&TABLE, &policy(Some(2e-4), None)).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, PolicyError::UncalibratedFmr { .. }));
        assert!(msg.contains("2e-4"), "{msg}");
        assert!(msg.contains("1e-5, 1e-4, 1e-3"), "{msg}");
        let err = resolve_threshold(&[], &policy(Some(1e-4), None)).unwrap_err();
        assert!(err.to_string().contains("none"), "{err}");
    }

    #[test]
    fn override_wins() {
        assert_eq!(
            resolve_threshold(&TABLE, &policy(Some(1e-4), Some(0.5))).unwrap(),
            0.5
        );
        assert_eq!(
            resolve_threshold(&[], &policy(None, Some(0.5))).unwrap(),
            0.5
        );
    }

    #[test]
    fn a_table_whose_threshold_does_not_rise_as_the_rate_falls_is_refused() {
        for table in [[(1e-3, 0.40), (1e-4, 0.30)], [(1e-3, 0.35), (1e-4, 0.35)]] {
            let err = resolve_threshold(&table, &policy(Some(1e-4), None)).unwrap_err();
            assert!(err.to_string().contains("must rise"), "{err}");
        }
        // Listed in any order, a plausible table is fine.
        assert_eq!(
            resolve_threshold(
                &[(1e-4, 0.41), (1e-2, 0.24), (1e-3, 0.33)],
                &policy(Some(1e-4), None)
            )
            .unwrap(),
            0.41
        );
    }

    #[test]
    fn malformed_calibration_is_refused() {
        for table in [
            [(0.0, 0.3)],
            [(1e-4, f32::NAN)],
            [(f64::NAN, 0.3)],
            [(1e-4, 1.5)],
            [(1e-4, -0.9)],
            [(1e-4, 0.0)],
        ] {
            assert!(matches!(
                resolve_threshold(&table, &policy(Some(1e-4), None)).unwrap_err(),
                PolicyError::InvalidCalibration { .. }
            ));
        }
    }

    const DEEP: [(f64, f32); 6] = [
        (1e-2, 0.24),
        (1e-3, 0.33),
        (1e-4, 0.41),
        (1e-5, 0.47),
        (1e-6, 0.53),
        (1e-7, 0.58),
    ];

    #[test]
    fn fpir_follows_the_gallery_size() {
        // FMR = FPIR / N (the union bound), never looser than independence's
        // 1 - (1 - FPIR)^(1/N).
        assert!((fmr_for_fpir(1e-3, 1) - 1e-3).abs() < 1e-15);
        assert!((fmr_for_fpir(1e-3, 1000) / 1e-6 - 1.0).abs() < 1e-12);
        for n in [2, 10, 1000, 100_000] {
            let independent = -((-1e-2f64).ln_1p() / n as f64).exp_m1();
            assert!(fmr_for_fpir(1e-2, n) <= independent);
        }
        assert_eq!(fmr_for_fpir(1e-3, 0), fmr_for_fpir(1e-3, 1));
        let at = |n| fpir_threshold(&DEEP, 1e-3, n).unwrap();
        // One template: FMR 1e-3 exactly.
        assert_eq!((at(1).fmr, at(1).cosine), (1e-3, 0.33));
        // 100 templates need 1e-5; 200 need 5e-6, so the stricter 1e-6 is taken.
        assert_eq!(at(100).cosine, 0.47);
        assert_eq!(at(200).cosine, 0.53);
        assert_eq!(at(10_000).cosine, 0.58);
        assert!(at(10_000).met);
        // Beyond the calibration: the strictest point, flagged.
        let far = at(100_000);
        assert!(!far.met && far.cosine == 0.58 && far.needed_fmr < 1e-7);
        // The threshold never falls as the gallery grows.
        let mut last = 0.0;
        for n in [1, 2, 10, 99, 100, 101, 1000, 5000, 20_000, 1_000_000] {
            let c = at(n).cosine;
            assert!(c >= last, "{n}: {c} < {last}");
            last = c;
        }
        assert!(fpir_threshold(&DEEP, 0.0, 10).is_err());
        assert!(fpir_threshold(&DEEP, f64::NAN, 10).is_err());
        assert!(fpir_threshold(&[], 1e-3, 10).is_err());
        // An implausible table is refused here too.
        assert!(matches!(
            fpir_threshold(&[(1e-3, 0.5), (1e-4, 0.4)], 1e-3, 10).unwrap_err(),
            PolicyError::InvalidCalibration { .. }
        ));
    }

    #[test]
    fn identification_needs_threshold_and_margin() {
        use IdentifyOutcome::*;
        use UnknownReason::*;
        assert_eq!(identification_outcome(0.6, None, 0.4, 0.05), Match);
        assert_eq!(identification_outcome(0.6, Some(0.5), 0.4, 0.05), Match);
        assert_eq!(
            identification_outcome(0.6, Some(0.58), 0.4, 0.05),
            Unknown(AmbiguousMargin)
        );
        assert_eq!(
            identification_outcome(0.39, None, 0.4, 0.05),
            Unknown(BelowThreshold)
        );
        assert_eq!(identification_outcome(0.4, None, 0.4, 0.0), Match);
        assert_eq!(
            identification_outcome(f32::NAN, None, 0.4, 0.05),
            Unknown(BelowThreshold)
        );
        assert_eq!(
            identification_outcome(0.6, Some(f32::NAN), 0.4, 0.05),
            Unknown(AmbiguousMargin)
        );
    }

    #[test]
    fn verification_needs_threshold() {
        assert_eq!(verification_outcome(0.5, 0.4), VerifyOutcome::Accept);
        assert_eq!(verification_outcome(0.3, 0.4), VerifyOutcome::Reject);
        assert_eq!(
            verification_outcome(f32::INFINITY, 0.4),
            VerifyOutcome::Reject
        );
    }
}
