//! Gate outputs: what opens the turnstile or door on a `granted` decision. They run on their
//! own worker thread ([`GateWorker`]) so a pulse length or a slow command never holds up the
//! loop; a pulse that cannot be queued is dropped and logged, never waited for.

use std::path::PathBuf;
use std::process::{Command as Process, Stdio};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use facegate_types::SubjectId;

use crate::EngineError;
use crate::decision::Method;

/// One request to open the gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulse {
    /// Who was granted (`None` for an operator override).
    pub subject: Option<SubjectId>,
    pub method: Method,
    /// The face track, if any.
    pub track: Option<u64>,
    /// The subject's live card number from the credential register
    /// ([`facegate_store::Store::card_number`]), for outputs that report the grant to a panel
    /// as a card read (Wiegand, OSDP; [`GateOutput::wants_card`]); `None` for the others, an
    /// override or a subject without a card.
    pub card: Option<CardNumber>,
}

/// A card number on its way to a panel: a credential, so its `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct CardNumber(String);

impl CardNumber {
    pub fn new(number: impl Into<String>) -> Self {
        Self(number.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for CardNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CardNumber(<redacted>)")
    }
}

/// Opens the gate.
pub trait GateOutput: Send + std::fmt::Debug {
    /// A short name for logs (`dry-run`, `command`, `gpio:/dev/gpiochip0:17`).
    fn name(&self) -> String;
    /// Opens the gate for one passage and returns when the pulse is over.
    fn pulse(&mut self, pulse: &Pulse) -> Result<(), EngineError>;

    /// Reports a grant as the grantee's card read, so the engine looks the card number up
    /// ([`Pulse::card`]); the others never see one.
    fn wants_card(&self) -> bool {
        false
    }
}

/// Records pulses instead of opening anything (tests, commissioning). Clones share the record.
#[derive(Debug, Clone, Default)]
pub struct DryRun(Arc<Mutex<Vec<Pulse>>>);

impl DryRun {
    pub fn new() -> Self {
        Self::default()
    }

    /// The pulses so far.
    pub fn pulses(&self) -> Vec<Pulse> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl GateOutput for DryRun {
    fn name(&self) -> String {
        "dry-run".into()
    }

    fn pulse(&mut self, pulse: &Pulse) -> Result<(), EngineError> {
        tracing::info!(
            subject = pulse.subject.as_ref().map(SubjectId::as_str),
            method = pulse.method.as_str(),
            "dry-run gate pulse"
        );
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(pulse.clone());
        Ok(())
    }
}

/// Runs a configured program for each passage, with `FACEGATE_SUBJECT` (empty for an override),
/// `FACEGATE_METHOD` and `FACEGATE_TRACK` in its environment; killed after `timeout`. The
/// program is run directly (no shell), with no standard input.
#[derive(Debug, Clone)]
pub struct CommandGate {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub timeout: Duration,
}

impl CommandGate {
    pub fn new(program: impl Into<PathBuf>, args: Vec<String>, timeout: Duration) -> Self {
        Self {
            program: program.into(),
            args,
            timeout,
        }
    }
}

impl GateOutput for CommandGate {
    fn name(&self) -> String {
        format!("command:{}", self.program.display())
    }

    fn pulse(&mut self, pulse: &Pulse) -> Result<(), EngineError> {
        let err = |reason: String| EngineError::Gate {
            output: self.name(),
            reason,
        };
        let mut child = Process::new(&self.program)
            .args(&self.args)
            .env(
                "FACEGATE_SUBJECT",
                pulse.subject.as_ref().map_or("", SubjectId::as_str),
            )
            .env("FACEGATE_METHOD", pulse.method.as_str())
            .env(
                "FACEGATE_TRACK",
                pulse.track.map(|t| t.to_string()).unwrap_or_default(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| err(format!("cannot start: {e}")))?;
        let deadline = Instant::now() + self.timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => return Err(err(format!("exited with {status}"))),
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(err(format!(
                        "timed out after {} ms and was killed",
                        self.timeout.as_millis()
                    )));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => return Err(err(format!("wait failed: {e}"))),
            }
        }
    }
}

/// A relay on a Linux GPIO character-device line: driven active for `pulse` then inactive.
#[derive(Debug)]
pub struct GpioGate {
    chip: PathBuf,
    line: u32,
    pulse: Duration,
    request: gpiocdev::Request,
}

impl GpioGate {
    /// Requests `line` of `chip` (e.g. `/dev/gpiochip0`, 17) as an output, initially inactive.
    /// `active_low` inverts the electrical level. Fails with a clear error when the chip is
    /// absent or the line is busy.
    pub fn open(
        chip: impl Into<PathBuf>,
        line: u32,
        active_low: bool,
        pulse: Duration,
    ) -> Result<Self, EngineError> {
        let chip = chip.into();
        let name = format!("gpio:{}:{line}", chip.display());
        if !chip.exists() {
            return Err(EngineError::Gate {
                output: name,
                reason: "no such GPIO chip (is this the terminal's board? see `gpiodetect`)".into(),
            });
        }
        let mut builder = gpiocdev::Request::builder();
        builder
            .on_chip(&chip)
            .with_consumer("facegate")
            .with_line(line)
            .as_output(gpiocdev::line::Value::Inactive);
        if active_low {
            builder.as_active_low();
        }
        let request = builder.request().map_err(|e| EngineError::Gate {
            output: name,
            reason: format!("cannot request the line: {e}"),
        })?;
        Ok(Self {
            chip,
            line,
            pulse,
            request,
        })
    }
}

impl GateOutput for GpioGate {
    fn name(&self) -> String {
        format!("gpio:{}:{}", self.chip.display(), self.line)
    }

    fn pulse(&mut self, _pulse: &Pulse) -> Result<(), EngineError> {
        let err = |e: gpiocdev::Error| EngineError::Gate {
            output: self.name(),
            reason: e.to_string(),
        };
        self.request
            .set_value(self.line, gpiocdev::line::Value::Active)
            .map_err(err)?;
        std::thread::sleep(self.pulse);
        self.request
            .set_value(self.line, gpiocdev::line::Value::Inactive)
            .map_err(err)?;
        Ok(())
    }
}

/// Runs a [`GateOutput`] on its own thread, fed by a short queue.
#[derive(Debug)]
pub struct GateWorker {
    tx: Option<SyncSender<Pulse>>,
    handle: Option<JoinHandle<()>>,
    name: String,
    wants_card: bool,
}

/// Pulses waiting for the gate at most; more are dropped (the gate is busy or stuck).
const GATE_QUEUE: usize = 4;

impl GateWorker {
    pub fn spawn(mut output: Box<dyn GateOutput>) -> Result<Self, EngineError> {
        let name = output.name();
        let wants_card = output.wants_card();
        let (tx, rx): (SyncSender<Pulse>, Receiver<Pulse>) = sync_channel(GATE_QUEUE);
        let handle = std::thread::Builder::new()
            .name("facegate-gate".into())
            .spawn(move || {
                for p in rx {
                    let started = Instant::now();
                    match output.pulse(&p) {
                        Ok(()) => tracing::info!(
                            output = %output.name(),
                            method = p.method.as_str(),
                            ms = started.elapsed().as_millis() as u64,
                            "gate opened"
                        ),
                        Err(e) => tracing::error!(error = %e, "gate output failed"),
                    }
                }
            })
            .map_err(|e| EngineError::Gate {
                output: name.clone(),
                reason: format!("cannot start the gate thread: {e}"),
            })?;
        Ok(Self {
            tx: Some(tx),
            handle: Some(handle),
            name,
            wants_card,
        })
    }

    /// The output reports grants as card reads ([`GateOutput::wants_card`]).
    pub fn wants_card(&self) -> bool {
        self.wants_card
    }

    /// Queues a pulse; `false` if the queue is full (the pulse is dropped and logged).
    pub fn open(&self, pulse: Pulse) -> bool {
        let Some(tx) = &self.tx else { return false };
        match tx.try_send(pulse) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                tracing::error!(output = %self.name, "gate busy: pulse dropped");
                false
            }
            Err(TrySendError::Disconnected(_)) => {
                tracing::error!(output = %self.name, "gate thread gone: pulse dropped");
                false
            }
        }
    }

    /// Finishes queued pulses and stops the thread.
    pub fn finish(&mut self) {
        self.tx.take();
        if let Some(h) = self.handle.take()
            && h.join().is_err()
        {
            tracing::error!(output = %self.name, "gate thread panicked");
        }
    }
}

impl Drop for GateWorker {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn pulse() -> Pulse {
        Pulse {
            subject: Some(SubjectId::new("emp-7").unwrap()),
            method: Method::Face,
            track: Some(4),
            card: None,
        }
    }

    #[test]
    fn dry_run_records_pulses_through_the_worker() {
        let gate = DryRun::new();
        let mut w = GateWorker::spawn(Box::new(gate.clone())).unwrap();
        assert!(w.open(pulse()));
        w.finish();
        assert_eq!(gate.pulses(), vec![pulse()]);
    }

    #[test]
    fn command_gets_the_subject_in_its_environment() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.txt");
        let mut g = CommandGate::new(
            "/bin/sh",
            vec![
                "-c".into(),
                format!(
                    "printf '%s %s %s' \"$FACEGATE_SUBJECT\" \"$FACEGATE_METHOD\" \"$FACEGATE_TRACK\" > {}",
                    out.display()
                ),
            ],
            Duration::from_secs(5),
        );
        g.pulse(&pulse()).unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "emp-7 face 4");
    }

    #[test]
    fn command_is_killed_after_its_timeout_and_failures_are_errors() {
        let mut g = CommandGate::new("/bin/sleep", vec!["5".into()], Duration::from_millis(100));
        let started = Instant::now();
        let e = g.pulse(&pulse()).unwrap_err().to_string();
        assert!(e.contains("timed out"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(2));
        let mut g = CommandGate::new("/bin/false", vec![], Duration::from_secs(2));
        assert!(
            g.pulse(&pulse())
                .unwrap_err()
                .to_string()
                .contains("exited")
        );
        let mut g = CommandGate::new("/nonexistent/relay", vec![], Duration::from_secs(2));
        assert!(
            g.pulse(&pulse())
                .unwrap_err()
                .to_string()
                .contains("cannot start")
        );
    }

    #[test]
    fn only_panel_outputs_get_a_card_number_and_it_is_never_printed() {
        let w = GateWorker::spawn(Box::new(DryRun::new())).unwrap();
        assert!(!w.wants_card());
        let p = Pulse {
            card: Some(CardNumber::new("12345")),
            ..pulse()
        };
        let shown = format!("{p:?}");
        assert!(
            !shown.contains("12345") && shown.contains("CardNumber(<redacted>)"),
            "{shown}"
        );
    }

    #[test]
    fn gpio_without_a_chip_is_a_clear_error() {
        let e = GpioGate::open("/dev/gpiochip-absent", 17, true, Duration::from_millis(300))
            .unwrap_err()
            .to_string();
        assert!(e.contains("gpio:/dev/gpiochip-absent:17"), "{e}");
        assert!(e.contains("no such GPIO chip"), "{e}");
    }

    #[test]
    fn a_stuck_gate_drops_pulses_instead_of_blocking() {
        #[derive(Debug)]
        struct Stuck;
        impl GateOutput for Stuck {
            fn name(&self) -> String {
                "stuck".into()
            }
            fn pulse(&mut self, _: &Pulse) -> Result<(), EngineError> {
                std::thread::sleep(Duration::from_millis(300));
                Ok(())
            }
        }
        let w = GateWorker::spawn(Box::new(Stuck)).unwrap();
        let started = Instant::now();
        let accepted = (0..20).filter(|_| w.open(pulse())).count();
        assert!(started.elapsed() < Duration::from_millis(100));
        assert!(accepted <= GATE_QUEUE + 1, "{accepted}");
    }
}
