//! The Art. 15 filing alert: at 100,000 people whose face information is stored, the processor
//! files with the provincial cyberspace office within 30 working days.
//!
//! The count is the processor's, not one terminal's: [`FilingExport`] is what one terminal
//! says (`facegate report filing --export`), and [`merge_filing_exports`] counts the distinct
//! people over several terminals' exports by subject id (never by face: a person enrolled at
//! two terminals under two ids is counted twice, which errs on the side of filing).

use std::collections::{BTreeMap, BTreeSet};

use facegate_types::SubjectId;
use serde::{Deserialize, Serialize};

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

/// What a filing export says it is (`format`), so another JSON file is refused by name.
pub const FILING_EXPORT_FORMAT: &str = "facegate-filing-export";
/// The export's layout version; a merge refuses any other.
pub const FILING_EXPORT_VERSION: u32 = 1;

/// One terminal's Art. 15 material for a merge: who processes, which terminal, when, and the
/// ids of the people whose face information it stores. Ids only: no template, no image, no
/// name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilingExport {
    /// [`FILING_EXPORT_FORMAT`].
    pub format: String,
    /// [`FILING_EXPORT_VERSION`].
    pub version: u32,
    /// The processor (`[deployment] processor_name`): a merge counts one processor's people.
    pub processor: String,
    /// The site (`[deployment] site_name`), for the report.
    pub site: String,
    /// This terminal's name (unique within a merge).
    pub terminal: String,
    /// Milliseconds since the Unix epoch.
    pub generated_at: i64,
    /// Subject ids with stored face templates, sorted, each once.
    pub subjects: Vec<String>,
}

impl FilingExport {
    /// An export of `subjects` (sorted and deduplicated here).
    pub fn new(
        processor: &str,
        site: &str,
        terminal: &str,
        generated_at: i64,
        subjects: impl IntoIterator<Item = SubjectId>,
    ) -> Self {
        let subjects: BTreeSet<String> = subjects
            .into_iter()
            .map(|s| s.as_str().to_owned())
            .collect();
        Self {
            format: FILING_EXPORT_FORMAT.to_owned(),
            version: FILING_EXPORT_VERSION,
            processor: processor.to_owned(),
            site: site.to_owned(),
            terminal: terminal.to_owned(),
            generated_at,
            subjects: subjects.into_iter().collect(),
        }
    }

    /// The export as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// Why a set of filing exports cannot be merged; each names the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FilingMergeError {
    /// Nothing to merge.
    #[error("no filing export given (name one file per terminal)")]
    NoFiles,
    /// Not JSON, or not the export's fields.
    #[error(
        "{file}: not a filing export ({reason}); make it with `facegate report filing --export FILE`"
    )]
    Unreadable { file: String, reason: String },
    /// Another `format` or `version`.
    #[error(
        "{file}: format {format:?} version {version} is not a {FILING_EXPORT_FORMAT} version \
         {FILING_EXPORT_VERSION}; export it again with this facegate"
    )]
    WrongFormat {
        file: String,
        format: String,
        version: u32,
    },
    /// A subject id that is not one.
    #[error("{file}: subject id {id:?} is not a valid id ({reason})")]
    BadSubject {
        file: String,
        id: String,
        reason: String,
    },
    /// The same id twice in one export (it was edited, or written by something else).
    #[error("{file}: subject id {id:?} is listed twice; export the terminal again")]
    DuplicateSubject { file: String, id: String },
    /// Exports of different processors: their counts are filed separately.
    #[error(
        "{file}: processor {found:?} differs from {expected:?} in {first}; Art. 15 counts one \
         processor's people, merge each processor's terminals separately"
    )]
    ProcessorMismatch {
        file: String,
        found: String,
        first: String,
        expected: String,
    },
    /// Two exports of one terminal (the same file twice, or two exports of different days).
    #[error(
        "{file}: terminal {terminal:?} is already given by {first}; name each terminal's latest \
         export once"
    )]
    DuplicateTerminal {
        file: String,
        terminal: String,
        first: String,
    },
}

/// Distinct people over several terminals' exports.
#[derive(Debug, Clone, PartialEq)]
pub struct MergedFiling {
    pub processor: String,
    /// Per terminal (by name): its site, generation time and stored people.
    pub terminals: BTreeMap<String, (String, i64, u64)>,
    /// Distinct subject ids over all terminals: the Art. 15 count.
    pub distinct: u64,
    /// The terminals' counts added up (people stored at several terminals counted each time).
    pub sum: u64,
    /// Distinct ids stored at more than one terminal.
    pub at_several: u64,
}

impl MergedFiling {
    /// The filing status of the distinct count.
    pub fn status(&self, warn_fraction: f64) -> FilingStatus {
        FilingStatus::evaluate(self.distinct, warn_fraction)
    }
}

/// Parses each `(file name, text)` as a [`FilingExport`] and counts distinct subject ids. The
/// exports must be of one processor and one each per terminal.
pub fn merge_filing_exports(files: &[(String, String)]) -> Result<MergedFiling, FilingMergeError> {
    if files.is_empty() {
        return Err(FilingMergeError::NoFiles);
    }
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    let mut terminals = BTreeMap::new();
    let mut terminal_file: BTreeMap<String, String> = BTreeMap::new();
    let mut processor: Option<(String, String)> = None;
    let mut sum = 0u64;
    for (file, text) in files {
        let e: FilingExport =
            serde_json::from_str(text).map_err(|err| FilingMergeError::Unreadable {
                file: file.clone(),
                reason: err.to_string(),
            })?;
        if e.format != FILING_EXPORT_FORMAT || e.version != FILING_EXPORT_VERSION {
            return Err(FilingMergeError::WrongFormat {
                file: file.clone(),
                format: e.format,
                version: e.version,
            });
        }
        match &processor {
            None => processor = Some((e.processor.clone(), file.clone())),
            Some((p, first)) if *p != e.processor => {
                return Err(FilingMergeError::ProcessorMismatch {
                    file: file.clone(),
                    found: e.processor,
                    first: first.clone(),
                    expected: p.clone(),
                });
            }
            Some(_) => {}
        }
        if let Some(first) = terminal_file.get(&e.terminal) {
            return Err(FilingMergeError::DuplicateTerminal {
                file: file.clone(),
                terminal: e.terminal,
                first: first.clone(),
            });
        }
        terminal_file.insert(e.terminal.clone(), file.clone());
        let mut own = BTreeSet::new();
        for id in &e.subjects {
            SubjectId::new(id.as_str()).map_err(|err| FilingMergeError::BadSubject {
                file: file.clone(),
                id: id.clone(),
                reason: err.to_string(),
            })?;
            if !own.insert(id.as_str()) {
                return Err(FilingMergeError::DuplicateSubject {
                    file: file.clone(),
                    id: id.clone(),
                });
            }
            *seen.entry(id.clone()).or_default() += 1;
        }
        let n = own.len() as u64;
        sum += n;
        terminals.insert(e.terminal, (e.site, e.generated_at, n));
    }
    Ok(MergedFiling {
        processor: processor.map(|(p, _)| p).unwrap_or_default(),
        terminals,
        distinct: seen.len() as u64,
        sum,
        at_several: seen.values().filter(|&&n| n > 1).count() as u64,
    })
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

    fn export(processor: &str, terminal: &str, ids: &[&str]) -> (String, String) {
        let ids = ids.iter().map(|i| SubjectId::new(*i).unwrap());
        let e = FilingExport::new(processor, "HQ", terminal, 1_700_000_000_000, ids);
        (format!("{terminal}.json"), e.to_json())
    }

    #[test]
    fn merge_counts_distinct_subject_ids_over_terminals() {
        let m = merge_filing_exports(&[
            export("ACME", "gate-1", &["emp-1", "emp-2", "emp-3"]),
            export("ACME", "gate-2", &["emp-3", "emp-4"]),
            export("ACME", "gate-3", &["emp-1", "emp-3"]),
        ])
        .unwrap();
        assert_eq!((m.distinct, m.sum, m.at_several), (4, 7, 2));
        assert_eq!(m.terminals["gate-2"].2, 2);
        assert_eq!(m.status(0.8), FilingStatus::Ok);
        // The export sorts and deduplicates what it is given.
        let (_, text) = export("ACME", "g", &["b", "a", "b"]);
        let e: FilingExport = serde_json::from_str(&text).unwrap();
        assert_eq!(e.subjects, ["a", "b"]);
    }

    #[test]
    fn merge_refuses_what_cannot_be_counted_and_names_the_file() {
        let good = export("ACME", "gate-1", &["emp-1"]);
        let err = |files: &[(String, String)]| merge_filing_exports(files).unwrap_err();
        assert_eq!(err(&[]), FilingMergeError::NoFiles);
        let e = err(&[good.clone(), ("x.json".into(), "{not json".into())]);
        assert!(
            matches!(&e, FilingMergeError::Unreadable { file, .. } if file == "x.json"),
            "{e}"
        );
        let e = err(&[good.clone(), ("y.json".into(), "{\"format\":1}".into())]);
        assert!(matches!(e, FilingMergeError::Unreadable { .. }), "{e}");
        let other = export("Other Ltd", "gate-2", &["emp-1"]);
        let e = err(&[good.clone(), other]);
        assert!(
            e.to_string()
                .contains("gate-2.json: processor \"Other Ltd\""),
            "{e}"
        );
        let e = err(&[good.clone(), good.clone()]);
        assert!(
            matches!(e, FilingMergeError::DuplicateTerminal { .. }),
            "{e}"
        );
        let mut v2: FilingExport = serde_json::from_str(&good.1).unwrap();
        v2.version = 2;
        let e = err(&[("v2.json".into(), v2.to_json())]);
        assert!(
            matches!(e, FilingMergeError::WrongFormat { version: 2, .. }),
            "{e}"
        );
        let mut bad = v2.clone();
        bad.version = 1;
        bad.subjects = vec!["emp 1".into()];
        let e = err(&[("bad.json".into(), bad.to_json())]);
        assert!(matches!(e, FilingMergeError::BadSubject { .. }), "{e}");
        bad.subjects = vec!["a".into(), "a".into()];
        let e = err(&[("dup.json".into(), bad.to_json())]);
        assert!(
            matches!(e, FilingMergeError::DuplicateSubject { .. }),
            "{e}"
        );
    }
}
