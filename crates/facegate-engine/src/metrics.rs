//! Health metrics for node_exporter's textfile collector: the service writes them in the
//! Prometheus text format (0.0.4) to one file, atomically (a temporary file in the same
//! directory, then rename), every `[service] metrics_interval_ms` and once more at exit. No
//! socket is opened: a site's node_exporter (or anything that reads files) picks them up.
//!
//! [`Metrics::open`] gives two halves sharing one state: a [`MetricsSink`] (an
//! [`EventSink`]: decisions by outcome and method, stage latency histograms of face
//! decisions, liveness refusals, alerts, prompts) and a [`MetricsFile`] (an [`Observer`]:
//! frames, drops, errors and the last error's code from the run's counters; gallery size,
//! stored people, filing status and the audit chain from the store). Everything is a count, a
//! latency or a fixed code: never an id, a score or anything about a face.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use facegate_policy::FilingStatus;

use crate::decision::{AlertEvent, DecisionEvent, Method, Outcome, PromptEvent};
use crate::observe::{Observation, Observer};
use crate::sink::EventSink;
use crate::{EngineError, RunSummary};

/// Upper bounds of the latency histograms, in seconds (1 ms to 5 s).
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
];

/// Bounds of `service.metrics_interval_ms`.
pub const METRICS_INTERVAL_MS_RANGE: (u64, u64) = (1_000, 3_600_000);

const OUTCOMES: [Outcome; 5] = [
    Outcome::Granted,
    Outcome::Denied,
    Outcome::Unknown,
    Outcome::SpoofSuspected,
    Outcome::Retry,
];
const METHODS: [Method; 5] = [
    Method::Face,
    Method::Pin,
    Method::Card,
    Method::Qr,
    Method::Override,
];
const STAGES: [&str; 10] = [
    "detect",
    "track",
    "landmarks",
    "align",
    "quality",
    "liveness",
    "embed",
    "match",
    "decide",
    "total",
];
const ALERTS: [&str; 4] = [
    "audit_chain_broken",
    "clock_set_back",
    "filing_threshold_near",
    "filing_threshold_reached",
];

fn method_name(m: Method) -> &'static str {
    match m {
        Method::Face => "face",
        Method::Pin => "pin",
        Method::Card => "card",
        Method::Qr => "qr",
        Method::Override => "override",
    }
}

#[derive(Debug, Clone, Default)]
struct Histogram {
    /// Cumulative counts per bucket of [`LATENCY_BUCKETS`].
    buckets: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (b, le) in self.buckets.iter_mut().zip(LATENCY_BUCKETS) {
            if seconds <= le {
                *b += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }
}

/// What the sink saw.
#[derive(Debug, Default)]
struct EventCounts {
    outcomes: [u64; OUTCOMES.len()],
    methods: [u64; METHODS.len()],
    stages: [Histogram; STAGES.len()],
    alerts: [u64; ALERTS.len()],
    prompts: u64,
}

/// The two halves of the metrics: the sink for the engine's sinks, the file for its observers.
#[derive(Debug)]
pub struct Metrics;

impl Metrics {
    /// Metrics written to `path` every `interval`. The file's directory must exist (the
    /// service's config names node_exporter's textfile directory); the name must end in
    /// `.prom`, which is what the collector reads.
    pub fn open(
        path: &Path,
        interval: Duration,
    ) -> Result<(MetricsSink, MetricsFile), EngineError> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !dir.is_dir() {
            return Err(EngineError::Setting {
                key: "service.metrics_file",
                reason: format!(
                    "{}: the directory {} does not exist",
                    path.display(),
                    dir.display()
                ),
            });
        }
        let shared = Arc::new(Mutex::new(EventCounts::default()));
        let (tx, rx) = sync_channel::<(String, bool)>(1);
        let writer_path = path.to_path_buf();
        let writer = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || write_loop(&writer_path, &rx))
            .map_err(|e| EngineError::Setting {
                key: "service.metrics_file",
                reason: format!("could not start the metrics writer: {e}"),
            })?;
        Ok((
            MetricsSink(shared.clone()),
            MetricsFile {
                shared,
                interval,
                last: None,
                tx: Some(tx),
                writer: Some(writer),
                audit: None,
                last_error: None,
                seen: ErrorCounts::default(),
                started: std::time::SystemTime::now(),
            },
        ))
    }
}

/// Writes each rendered text it is sent; the flag says it is the last.
fn write_loop(path: &Path, rx: &Receiver<(String, bool)>) {
    while let Ok((text, last)) = rx.recv() {
        if let Err(e) = write_atomic(path, &text) {
            tracing::warn!(file = %path.display(), error = %e, "metrics file not written");
        }
        if last {
            break;
        }
    }
}

fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    // A dot name in the same directory: the collector reads only `*.prom`, and rename within
    // one file system is atomic, so a scrape never sees half a file.
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp: PathBuf = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, text)?;
    // Readable by the collector's user (the service's umask is 0077): counts and codes only.
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
    std::fs::rename(&tmp, path)
}

fn lock(m: &Mutex<EventCounts>) -> MutexGuard<'_, EventCounts> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The event half: counts what the engine emits.
#[derive(Debug)]
pub struct MetricsSink(Arc<Mutex<EventCounts>>);

impl EventSink for MetricsSink {
    fn emit(&mut self, event: &DecisionEvent) -> Result<(), EngineError> {
        let mut c = lock(&self.0);
        if let Some(i) = OUTCOMES.iter().position(|&o| o == event.outcome) {
            c.outcomes[i] += 1;
        }
        if let Some(i) = METHODS.iter().position(|&m| m == event.method) {
            c.methods[i] += 1;
        }
        // Stage latencies are those of a face attempt; a credential has only a total.
        let l = &event.latency_ms;
        let stages = [
            l.detect,
            l.track,
            l.landmarks,
            l.align,
            l.quality,
            l.liveness,
            l.embed,
            l.matching,
            l.decide,
            l.total,
        ];
        for (i, ms) in stages.into_iter().enumerate() {
            let is_total = i == STAGES.len() - 1;
            if (event.method == Method::Face || is_total) && ms.is_finite() && ms >= 0.0 {
                c.stages[i].observe(ms / 1000.0);
            }
        }
        Ok(())
    }

    fn alert(&mut self, alert: &AlertEvent) -> Result<(), EngineError> {
        if let Some(i) = ALERTS.iter().position(|&a| a == alert.alert) {
            lock(&self.0).alerts[i] += 1;
        }
        Ok(())
    }

    fn prompt(&mut self, _prompt: &PromptEvent) -> Result<(), EngineError> {
        lock(&self.0).prompts += 1;
        Ok(())
    }
}

/// The error counters the last-error code is derived from.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct ErrorCounts {
    vision: u64,
    bad_frames: u64,
    source_open: u64,
    sink: u64,
    audit: u64,
}

impl ErrorCounts {
    fn of(s: &RunSummary) -> Self {
        Self {
            vision: s.vision_errors,
            bad_frames: s.bad_frames,
            source_open: s.source_open_failures,
            sink: s.sink_errors,
            audit: s.audit_errors,
        }
    }

    /// The code of a counter that went up since `before` (the most serious first).
    fn newest(&self, before: &Self) -> Option<&'static str> {
        if self.audit > before.audit {
            Some("audit_write_failed")
        } else if self.source_open > before.source_open {
            Some("source_open_failed")
        } else if self.bad_frames > before.bad_frames {
            Some("bad_frame")
        } else if self.vision > before.vision {
            Some("vision_failed")
        } else if self.sink > before.sink {
            Some("event_sink_failed")
        } else {
            None
        }
    }
}

/// The observer half: renders the metrics and hands them to the writer thread.
#[derive(Debug)]
pub struct MetricsFile {
    shared: Arc<Mutex<EventCounts>>,
    interval: Duration,
    last: Option<Instant>,
    tx: Option<SyncSender<(String, bool)>>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// The audit chain as verified at the first write: (records, intact).
    audit: Option<Option<(u64, bool)>>,
    last_error: Option<(&'static str, std::time::SystemTime)>,
    seen: ErrorCounts,
    started: std::time::SystemTime,
}

fn unix_s(t: std::time::SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// One metric family's `# HELP` and `# TYPE` lines.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn value(out: &mut String, name: &str, labels: &str, v: f64) {
    if labels.is_empty() {
        let _ = writeln!(out, "{name} {v}");
    } else {
        let _ = writeln!(out, "{name}{{{labels}}} {v}");
    }
}

fn counter(out: &mut String, name: &str, help: &str, v: u64) {
    family(out, name, "counter", help);
    value(out, name, "", v as f64);
}

fn gauge(out: &mut String, name: &str, help: &str, v: f64) {
    family(out, name, "gauge", help);
    value(out, name, "", v);
}

impl MetricsFile {
    fn render(&mut self, view: &Observation<'_>) -> String {
        let s = view.summary;
        let now_errors = ErrorCounts::of(s);
        if let Some(code) = now_errors.newest(&self.seen) {
            self.last_error = Some((code, std::time::SystemTime::now()));
        }
        self.seen = now_errors;
        let audit = *self.audit.get_or_insert_with(|| match view.store.verify_audit() {
            Ok(v) => Some((v.records, v.first_break.is_none())),
            Err(e) => {
                tracing::warn!(error = %facegate_types::ErrorChain(&e), "metrics: audit chain not verified");
                None
            }
        });
        let counts = view.store.counts();
        let gallery = view.store.gallery().map_or(0, |g| g.len());
        let mut out = String::with_capacity(8192);
        let o = &mut out;
        gauge(
            o,
            "facegate_up",
            "1 while the service runs, 0 in the file written at exit.",
            if view.finished { 0.0 } else { 1.0 },
        );
        gauge(
            o,
            "facegate_start_time_seconds",
            "When the service started (Unix time).",
            unix_s(self.started),
        );
        gauge(
            o,
            "facegate_metrics_written_seconds",
            "When this file was written (Unix time).",
            unix_s(std::time::SystemTime::now()),
        );
        counter(
            o,
            "facegate_frames_captured_total",
            "Frames read from the source.",
            s.frames_captured,
        );
        counter(
            o,
            "facegate_frames_processed_total",
            "Frames the loop processed (detection on each).",
            s.frames_processed,
        );
        counter(
            o,
            "facegate_frames_dropped_total",
            "Frames replaced before the loop took them (back-pressure).",
            s.frames_dropped,
        );
        counter(
            o,
            "facegate_frames_bad_total",
            "Frames the source could not produce (corrupt, truncated).",
            s.bad_frames,
        );
        counter(
            o,
            "facegate_source_open_failures_total",
            "Failed attempts to open the frame source.",
            s.source_open_failures,
        );
        counter(
            o,
            "facegate_vision_errors_total",
            "Frames or faces a vision stage failed on (skipped).",
            s.vision_errors,
        );
        counter(
            o,
            "facegate_embeddings_total",
            "Faces embedded (passed quality and liveness).",
            s.embeddings,
        );
        counter(o, "facegate_tracks_total", "Face tracks started.", s.tracks);
        counter(
            o,
            "facegate_gate_pulses_total",
            "Gate pulses sent.",
            s.gate_pulses,
        );
        counter(
            o,
            "facegate_locked_out_total",
            "Credentials and claims refused by a lockout.",
            s.locked_out,
        );
        counter(
            o,
            "facegate_sink_errors_total",
            "Event deliveries that failed.",
            s.sink_errors,
        );
        counter(
            o,
            "facegate_audit_errors_total",
            "Audit records that could not be written.",
            s.audit_errors,
        );
        {
            let c = lock(&self.shared);
            family(
                o,
                "facegate_decisions_total",
                "counter",
                "Decisions by outcome.",
            );
            for (i, oc) in OUTCOMES.iter().enumerate() {
                value(
                    o,
                    "facegate_decisions_total",
                    &format!("outcome=\"{}\"", oc.as_str()),
                    c.outcomes[i] as f64,
                );
            }
            family(
                o,
                "facegate_decisions_by_method_total",
                "counter",
                "Decisions by how the person presented themselves.",
            );
            for (i, m) in METHODS.iter().enumerate() {
                value(
                    o,
                    "facegate_decisions_by_method_total",
                    &format!("method=\"{}\"", method_name(*m)),
                    c.methods[i] as f64,
                );
            }
            let spoof = OUTCOMES
                .iter()
                .position(|&x| x == Outcome::SpoofSuspected)
                .map_or(0, |i| c.outcomes[i]);
            counter(
                o,
                "facegate_liveness_refusals_total",
                "Faces refused by liveness (spoof_suspected decisions).",
                spoof,
            );
            counter(
                o,
                "facegate_prompts_total",
                "Liveness challenge prompts shown.",
                c.prompts,
            );
            family(
                o,
                "facegate_alerts_total",
                "counter",
                "Alerts raised, by kind.",
            );
            for (i, a) in ALERTS.iter().enumerate() {
                value(
                    o,
                    "facegate_alerts_total",
                    &format!("alert=\"{a}\""),
                    c.alerts[i] as f64,
                );
            }
            let name = "facegate_stage_latency_seconds";
            family(
                o,
                name,
                "histogram",
                "Latency of each stage of the deciding attempt of face decisions; total for every decision.",
            );
            for (i, stage) in STAGES.iter().enumerate() {
                let h = &c.stages[i];
                for (b, le) in h.buckets.iter().zip(LATENCY_BUCKETS) {
                    value(
                        o,
                        &format!("{name}_bucket"),
                        &format!("stage=\"{stage}\",le=\"{le}\""),
                        *b as f64,
                    );
                }
                value(
                    o,
                    &format!("{name}_bucket"),
                    &format!("stage=\"{stage}\",le=\"+Inf\""),
                    h.count as f64,
                );
                value(
                    o,
                    &format!("{name}_sum"),
                    &format!("stage=\"{stage}\""),
                    h.sum,
                );
                value(
                    o,
                    &format!("{name}_count"),
                    &format!("stage=\"{stage}\""),
                    h.count as f64,
                );
            }
        }
        gauge(
            o,
            "facegate_gallery_templates",
            "Templates in the in-memory gallery.",
            gallery as f64,
        );
        match &counts {
            Ok(c) => {
                gauge(
                    o,
                    "facegate_stored_subjects",
                    "People whose face information is stored (the Art. 15 count).",
                    c.subjects_with_templates as f64,
                );
                gauge(
                    o,
                    "facegate_live_consents",
                    "Consents neither withdrawn nor expired.",
                    c.live_consents as f64,
                );
                let status = FilingStatus::evaluate(
                    c.subjects_with_templates,
                    view.store.policy().filing().warn_fraction(),
                );
                family(
                    o,
                    "facegate_filing_status",
                    "gauge",
                    "Art. 15 filing status (1 for the current one).",
                );
                for (name, on) in [
                    ("ok", matches!(status, FilingStatus::Ok)),
                    (
                        "approaching",
                        matches!(status, FilingStatus::Approaching { .. }),
                    ),
                    ("reached", matches!(status, FilingStatus::Reached)),
                ] {
                    value(
                        o,
                        "facegate_filing_status",
                        &format!("status=\"{name}\""),
                        if on { 1.0 } else { 0.0 },
                    );
                }
            }
            Err(e) => {
                tracing::warn!(error = %facegate_types::ErrorChain(e), "metrics: store counts not read");
                self.last_error = Some(("store_read_failed", std::time::SystemTime::now()));
            }
        }
        if let Some((records, intact)) = audit {
            gauge(
                o,
                "facegate_audit_chain_intact",
                "1 when the audit chain verified at start, 0 when it is broken.",
                if intact { 1.0 } else { 0.0 },
            );
            gauge(
                o,
                "facegate_audit_records_at_start",
                "Audit records checked at start.",
                records as f64,
            );
        }
        family(
            o,
            "facegate_last_error",
            "gauge",
            "The last error's code (1), with its time in facegate_last_error_seconds; absent before any error.",
        );
        if let Some((code, at)) = self.last_error {
            value(o, "facegate_last_error", &format!("code=\"{code}\""), 1.0);
            gauge(
                o,
                "facegate_last_error_seconds",
                "When the last error happened (Unix time).",
                unix_s(at),
            );
        }
        out
    }
}

impl Observer for MetricsFile {
    fn observe(&mut self, view: &Observation<'_>) {
        let due = self.last.is_none_or(|t| t.elapsed() >= self.interval);
        if !due && !view.finished {
            return;
        }
        self.last = Some(Instant::now());
        let text = self.render(view);
        if view.finished {
            // The last file is written before the service exits: send and wait for it.
            if let Some(tx) = self.tx.take() {
                let _ = tx.send((text, true));
            }
            if let Some(w) = self.writer.take() {
                let _ = w.join();
            }
        } else if let Some(tx) = &self.tx {
            // The writer is still busy with the previous file: skip this one.
            if let Err(TrySendError::Disconnected(_)) = tx.try_send((text, false)) {
                self.tx = None;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_the_last_error_is_the_gravest_new_one() {
        let mut h = Histogram::default();
        for s in [0.0005, 0.003, 0.003, 7.0] {
            h.observe(s);
        }
        assert_eq!(h.buckets[0], 1); // le 0.001
        assert_eq!(h.buckets[2], 3); // le 0.005
        assert_eq!(h.buckets[LATENCY_BUCKETS.len() - 1], 3); // le 5: 7 s is only in +Inf
        assert_eq!(h.count, 4);
        let before = ErrorCounts::default();
        let after = ErrorCounts {
            vision: 2,
            audit: 1,
            ..before
        };
        assert_eq!(after.newest(&before), Some("audit_write_failed"));
        assert_eq!(after.newest(&after), None);
    }

    #[test]
    fn the_file_must_be_a_prom_file_in_an_existing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no/such/dir/facegate.prom");
        let e = Metrics::open(&missing, Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        let mut c = crate::ServiceConfig {
            metrics_file: Some(dir.path().join("facegate.txt")),
            ..Default::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("service.metrics_file") && e.contains(".prom"),
            "{e}"
        );
        c.metrics_file = Some(dir.path().join("facegate.prom"));
        c.metrics_interval_ms = 10;
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("service.metrics_interval_ms = 10 must lie in 1000..=3600000"),
            "{e}"
        );
        c.metrics_interval_ms = 1000;
        assert!(c.metrics().unwrap().is_some());
    }
}
