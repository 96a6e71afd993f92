//! The Art. 15 filing alert: at 100,000 people whose face information is stored, the processor
//! files with the provincial cyberspace office within 30 working days.

/// Stored people at which Art. 15 requires filing.
pub const ART15_FILING_THRESHOLD: u64 = 100_000;

/// Where the stored-subject count stands against the Art. 15 threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FilingStatus {
    /// Below the warning fraction.
    Ok,
    /// At or above `warn_fraction` of the threshold; `fraction` is `stored / 100,000`.
    Approaching { fraction: f64 },
    /// At or above 100,000: filing is due within 30 working days.
    Reached,
}

impl FilingStatus {
    /// Pure: compares `stored_subjects` with the threshold and `warn_fraction` of it. A
    /// `warn_fraction` outside `(0, 1)` (which the validated config never holds) is treated as
    /// `1`, i.e. only the threshold itself alerts.
    pub fn evaluate(stored_subjects: u64, warn_fraction: f64) -> FilingStatus {
        if stored_subjects >= ART15_FILING_THRESHOLD {
            return FilingStatus::Reached;
        }
        let warn_fraction = if warn_fraction.is_finite() && warn_fraction > 0.0 {
            warn_fraction.min(1.0)
        } else {
            1.0
        };
        // Both are far below 2^53, so the conversions are exact.
        let fraction = stored_subjects as f64 / ART15_FILING_THRESHOLD as f64;
        if fraction >= warn_fraction {
            FilingStatus::Approaching { fraction }
        } else {
            FilingStatus::Ok
        }
    }

    /// Whether an operator must be alerted (log event, non-zero `facegate doctor`).
    pub fn is_alert(&self) -> bool {
        !matches!(self, FilingStatus::Ok)
    }

    /// One line for reports and the doctor command.
    pub fn describe(&self, stored_subjects: u64) -> String {
        match self {
            FilingStatus::Ok => format!(
                "{stored_subjects} people stored; Art. 15 filing is due at {ART15_FILING_THRESHOLD}"
            ),
            FilingStatus::Approaching { fraction } => format!(
                "{stored_subjects} people stored, {:.1}% of the {ART15_FILING_THRESHOLD} at which \
                 Art. 15 requires filing with the provincial cyberspace office; prepare the \
                 filing material (`facegate report filing`)",
                fraction * 100.0
            ),
            FilingStatus::Reached => format!(
                "{stored_subjects} people stored, at or above the {ART15_FILING_THRESHOLD} of \
                 Art. 15: file with the provincial cyberspace office within 30 working days \
                 (`facegate report filing`)"
            ),
        }
    }

    /// Emits the alert as a `tracing` event (counts only). Does nothing when `Ok`.
    pub fn emit(&self, stored_subjects: u64) {
        match self {
            FilingStatus::Ok => {}
            FilingStatus::Approaching { fraction } => tracing::warn!(
                stored_subjects,
                threshold = ART15_FILING_THRESHOLD,
                fraction = *fraction,
                "approaching the Art. 15 filing threshold"
            ),
            FilingStatus::Reached => tracing::error!(
                stored_subjects,
                threshold = ART15_FILING_THRESHOLD,
                "Art. 15 filing threshold reached: file within 30 working days"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds() {
        assert_eq!(FilingStatus::evaluate(0, 0.8), FilingStatus::Ok);
        assert_eq!(FilingStatus::evaluate(79_999, 0.8), FilingStatus::Ok);
        assert_eq!(
            FilingStatus::evaluate(80_000, 0.8),
            FilingStatus::Approaching { fraction: 0.8 }
        );
        assert_eq!(
            FilingStatus::evaluate(99_999, 0.8),
            FilingStatus::Approaching { fraction: 0.99999 }
        );
        assert_eq!(FilingStatus::evaluate(100_000, 0.8), FilingStatus::Reached);
        assert_eq!(FilingStatus::evaluate(u64::MAX, 0.8), FilingStatus::Reached);
        assert_eq!(FilingStatus::evaluate(99_999, f64::NAN), FilingStatus::Ok);
        assert!(FilingStatus::evaluate(100_000, 0.8).is_alert());
        assert!(!FilingStatus::evaluate(1, 0.8).is_alert());
        assert!(
            FilingStatus::Reached
                .describe(100_000)
                .contains("30 working days")
        );
    }
}
