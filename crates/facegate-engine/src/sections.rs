//! The config file's `[service]` and `[gate]` sections: the engine owns them, so it parses
//! (unknown keys and values refused by serde, naming the allowed ones) and validates them here,
//! and turns them into its own settings ([`ServiceConfig::apply`]) and a [`GateOutput`]
//! ([`GateConfig::open`]). The binary only finds the file and resolves relative paths.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::EngineError;
use crate::config::{CredentialMode, DEFAULT_UNKNOWN_RETRY, EngineConfig, UNKNOWN_RETRY_RANGE};
use crate::gate::{CommandGate, DryRun, GateOutput, GpioGate};

/// The highest GPIO line offset accepted (chips have at most a few hundred lines).
pub const MAX_GPIO_LINE: u32 = 1023;

/// How long a two-factor claim ([`CredentialModeKind::WithFace`]) waits for its face.
pub const WITH_FACE_WINDOW: Duration = Duration::from_secs(10);

/// Bounds of `gate.pulse_ms`.
pub const PULSE_MS_RANGE: (u64, u64) = (1, 30_000);

/// A command gate is given at least this long to finish.
const MIN_COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// `service.credential_mode`: how a PIN, card or QR credential is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", try_from = "String")]
pub enum CredentialModeKind {
    /// [`CredentialMode::Alone`].
    #[default]
    Alone,
    /// [`CredentialMode::WithFace`], waiting [`WITH_FACE_WINDOW`] for the face.
    WithFace,
}

impl CredentialModeKind {
    /// Every value, in the order the error lists them.
    pub const ALL: [Self; 2] = [Self::Alone, Self::WithFace];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alone => "alone",
            Self::WithFace => "with_face",
        }
    }

    /// The engine's mode for this setting.
    pub fn mode(self) -> CredentialMode {
        match self {
            Self::Alone => CredentialMode::Alone,
            Self::WithFace => CredentialMode::WithFace {
                window: WITH_FACE_WINDOW,
            },
        }
    }
}

impl fmt::Display for CredentialModeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `gate.output`: what opens the door.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", try_from = "String")]
pub enum GateOutputKind {
    /// A GPIO line ([`GpioGate`]).
    Gpio,
    /// A program ([`CommandGate`]).
    Command,
    /// Logs the pulse only ([`DryRun`]).
    #[default]
    DryRun,
}

impl GateOutputKind {
    /// Every value, in the order the error lists them.
    pub const ALL: [Self; 3] = [Self::Gpio, Self::Command, Self::DryRun];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gpio => "gpio",
            Self::Command => "command",
            Self::DryRun => "dry_run",
        }
    }
}

impl fmt::Display for GateOutputKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[service]`: what `facegate run` watches and where it talks.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// The frame source: `camera:0`, `/dev/video0`, a Y4M file, a folder or an image.
    pub source: String,
    /// Decision events as JSON lines to every subscriber of this Unix socket (unset: none).
    pub events_socket: Option<PathBuf>,
    /// The admin API (JSON lines, SO_PEERCRED roles); unset: none.
    pub admin_socket: Option<PathBuf>,
    /// Retired: PINs, cards and QR codes live in the store's register now
    /// (`facegate credential issue`); a config that still sets it is refused with that advice.
    pub credentials: Option<PathBuf>,
    /// Retired: liveness is the `[liveness]` section now (its `passive_threshold`); a config
    /// that still sets it is refused with that advice.
    pub liveness_threshold: Option<f32>,
    /// A face decided `unknown` is tried again after this many milliseconds (and at once when
    /// the gallery changes).
    pub unknown_retry_ms: u64,
    /// A credential alone decides (`alone`), or claims an identity the face verifies 1:1
    /// (`with_face`).
    pub credential_mode: CredentialModeKind,
    /// Health metrics in the Prometheus text format for node_exporter's textfile collector
    /// (a `*.prom` file in its directory); unset: none.
    pub metrics_file: Option<PathBuf>,
    /// How often the metrics file is rewritten (and once more at exit).
    pub metrics_interval_ms: u64,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            source: "camera:0".into(),
            events_socket: None,
            admin_socket: None,
            credentials: None,
            liveness_threshold: None,
            unknown_retry_ms: DEFAULT_UNKNOWN_RETRY.as_millis() as u64,
            credential_mode: CredentialModeKind::Alone,
            metrics_file: None,
            metrics_interval_ms: 15_000,
        }
    }
}

/// The value of `all` spelled `value`, else an error naming `key` and the allowed values.
fn one_of<T: Copy>(
    key: &str,
    value: &str,
    all: &[T],
    name: impl Fn(T) -> &'static str,
) -> Result<T, String> {
    all.iter()
        .copied()
        .find(|&v| name(v) == value)
        .ok_or_else(|| {
            let names: Vec<_> = all.iter().map(|&v| name(v)).collect();
            format!("{key} must be one of {}, not {value:?}", names.join(", "))
        })
}

impl TryFrom<String> for CredentialModeKind {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        one_of("service.credential_mode", &value, &Self::ALL, Self::as_str)
    }
}

impl TryFrom<String> for GateOutputKind {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        one_of("gate.output", &value, &Self::ALL, Self::as_str)
    }
}

fn setting(key: &'static str, reason: String) -> EngineError {
    EngineError::Setting { key, reason }
}

impl ServiceConfig {
    /// Checks every value against its bounds; the error names the key.
    pub fn validate(&self) -> Result<(), EngineError> {
        if self.liveness_threshold.is_some() {
            return Err(setting(
                "service.liveness_threshold",
                "is no longer read: liveness is the [liveness] section now (challenge = off | \
                 when_in_doubt | always, passive_threshold = ...); remove the key"
                    .into(),
            ));
        }
        let (lo, hi) = UNKNOWN_RETRY_RANGE;
        let (lo, hi) = (lo.as_millis() as u64, hi.as_millis() as u64);
        if !(lo..=hi).contains(&self.unknown_retry_ms) {
            return Err(setting(
                "service.unknown_retry_ms",
                format!("= {} must lie in {lo}..={hi}", self.unknown_retry_ms),
            ));
        }
        let (lo, hi) = crate::metrics::METRICS_INTERVAL_MS_RANGE;
        if !(lo..=hi).contains(&self.metrics_interval_ms) {
            return Err(setting(
                "service.metrics_interval_ms",
                format!("= {} must lie in {lo}..={hi}", self.metrics_interval_ms),
            ));
        }
        if let Some(path) = &self.metrics_file
            && path.extension().and_then(|e| e.to_str()) != Some("prom")
        {
            return Err(setting(
                "service.metrics_file",
                format!(
                    "= {:?} must end in .prom (node_exporter's textfile collector reads only \
                     *.prom files)",
                    path.display().to_string()
                ),
            ));
        }
        if self.credentials.is_some() {
            return Err(setting(
                "service.credentials",
                "(a hashed directory file) is no longer read: credentials live in the store's \
                 register; issue them with `facegate credential issue` and remove the key"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The health metrics this section asks for: the file's two halves (add the sink with
    /// [`crate::Engine::with_sink`], the file with [`crate::Engine::with_observer`]), or `None`.
    pub fn metrics(&self) -> Result<Option<(crate::MetricsSink, crate::MetricsFile)>, EngineError> {
        self.validate()?;
        match &self.metrics_file {
            None => Ok(None),
            Some(path) => {
                crate::Metrics::open(path, Duration::from_millis(self.metrics_interval_ms))
                    .map(Some)
            }
        }
    }

    /// Sets the engine values this section decides: liveness threshold, unknown retry and
    /// credential mode.
    pub fn apply(&self, config: &mut EngineConfig) {
        config.unknown_retry = Duration::from_millis(self.unknown_retry_ms);
        config.credential_mode = self.credential_mode.mode();
    }
}

/// `[gate]`: what opens the door.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GateConfig {
    pub output: GateOutputKind,
    pub gpio_chip: PathBuf,
    pub gpio_line: u32,
    pub active_low: bool,
    /// How long the relay stays open.
    pub pulse_ms: u64,
    /// For `command`: program and arguments; the subject id is in `$FACEGATE_SUBJECT`.
    pub command: Vec<String>,
}

impl Default for GateConfig {
    fn default() -> Self {
        Self {
            output: GateOutputKind::DryRun,
            gpio_chip: PathBuf::from("/dev/gpiochip0"),
            gpio_line: 17,
            active_low: false,
            pulse_ms: 800,
            command: Vec::new(),
        }
    }
}

impl GateConfig {
    /// Checks every value against its bounds; the error names the key.
    pub fn validate(&self) -> Result<(), EngineError> {
        if self.output == GateOutputKind::Command && self.command.is_empty() {
            return Err(setting(
                "gate.command",
                "is empty: gate.output = \"command\" needs gate.command = \
                 [\"/path/to/program\", ...]"
                    .into(),
            ));
        }
        let (lo, hi) = PULSE_MS_RANGE;
        if !(lo..=hi).contains(&self.pulse_ms) {
            return Err(setting(
                "gate.pulse_ms",
                format!("= {} must lie in {lo}..={hi}", self.pulse_ms),
            ));
        }
        if self.gpio_line > MAX_GPIO_LINE {
            return Err(setting(
                "gate.gpio_line",
                format!("= {} must lie in 0..={MAX_GPIO_LINE}", self.gpio_line),
            ));
        }
        Ok(())
    }

    /// The output this section names, opened (a GPIO line is requested now).
    pub fn open(&self) -> Result<Box<dyn GateOutput>, EngineError> {
        self.validate()?;
        let pulse = Duration::from_millis(self.pulse_ms);
        Ok(match self.output {
            GateOutputKind::Gpio => Box::new(GpioGate::open(
                &self.gpio_chip,
                self.gpio_line,
                self.active_low,
                pulse,
            )?),
            GateOutputKind::Command => {
                let Some((program, args)) = self.command.split_first() else {
                    return Err(setting("gate.command", "is empty".into()));
                };
                Box::new(CommandGate::new(
                    program,
                    args.to_vec(),
                    pulse.max(MIN_COMMAND_TIMEOUT),
                ))
            }
            GateOutputKind::DryRun => Box::new(DryRun::new()),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use facegate_policy::{PolicyConfig, RawPolicyConfig};

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        service: ServiceConfig,
        #[serde(default)]
        gate: GateConfig,
    }

    fn parse(text: &str) -> Result<File, String> {
        toml::from_str(text).map_err(|e| e.message().to_string())
    }

    #[test]
    fn unknown_values_are_refused_naming_the_allowed_ones() {
        assert_eq!(
            parse("[gate]\noutput = \"relay\"").unwrap_err(),
            "gate.output must be one of gpio, command, dry_run, not \"relay\""
        );
        assert_eq!(
            parse("[service]\ncredential_mode = \"both\"").unwrap_err(),
            "service.credential_mode must be one of alone, with_face, not \"both\""
        );
        let f =
            parse("[gate]\noutput = \"gpio\"\n[service]\ncredential_mode = \"with_face\"").unwrap();
        assert_eq!(f.gate.output, GateOutputKind::Gpio);
        assert_eq!(f.service.credential_mode, CredentialModeKind::WithFace);
        let f = parse("").unwrap();
        assert_eq!(f.gate, GateConfig::default());
        assert_eq!(f.service, ServiceConfig::default());
    }

    #[test]
    fn the_names_are_the_ones_serde_reads() {
        for k in GateOutputKind::ALL {
            let f = parse(&format!(
                "[gate]\noutput = \"{k}\"\ncommand = [\"/bin/true\"]"
            ))
            .unwrap();
            assert_eq!(f.gate.output, k);
            let json = serde_json::to_value(k).unwrap();
            assert_eq!(json, serde_json::Value::String(k.as_str().into()));
        }
        for k in CredentialModeKind::ALL {
            let f = parse(&format!("[service]\ncredential_mode = \"{k}\"")).unwrap();
            assert_eq!(f.service.credential_mode, k);
            let json = serde_json::to_value(k).unwrap();
            assert_eq!(json, serde_json::Value::String(k.as_str().into()));
        }
    }

    #[test]
    fn bounds_are_checked_naming_the_key() {
        let cases: [(&str, &str); 6] = [
            (
                "[gate]\npulse_ms = 0",
                "gate.pulse_ms = 0 must lie in 1..=30000",
            ),
            (
                "[gate]\ngpio_line = 1024",
                "gate.gpio_line = 1024 must lie in 0..=1023",
            ),
            (
                "[gate]\noutput = \"command\"",
                "gate.command is empty: gate.output = \"command\" needs gate.command = \
                 [\"/path/to/program\", ...]",
            ),
            (
                "[service]\nliveness_threshold = 0.5",
                "service.liveness_threshold is no longer read: liveness is the [liveness] section \
                 now (challenge = off | when_in_doubt | always, passive_threshold = ...); remove \
                 the key",
            ),
            (
                "[service]\nunknown_retry_ms = 100",
                "service.unknown_retry_ms = 100 must lie in 250..=600000",
            ),
            (
                "[service]\ncredentials = \"/etc/facegate/credentials\"",
                "service.credentials (a hashed directory file) is no longer read: credentials \
                 live in the store's register; issue them with `facegate credential issue` and \
                 remove the key",
            ),
        ];
        for (text, want) in cases {
            let f = parse(text).unwrap();
            let err = f
                .service
                .validate()
                .and_then(|()| f.gate.validate())
                .unwrap_err();
            assert_eq!(err.to_string(), want, "{text}");
        }
        let f = parse("").unwrap();
        f.service.validate().unwrap();
        f.gate.validate().unwrap();
    }

    #[test]
    fn the_service_section_sets_the_engine() {
        let policy = PolicyConfig::from_raw(RawPolicyConfig::example()).unwrap();
        let mut ec = EngineConfig::new(&policy, 0.4);
        let f =
            parse("[service]\nunknown_retry_ms = 1000\ncredential_mode = \"with_face\"").unwrap();
        f.service.apply(&mut ec);
        assert_eq!(ec.unknown_retry, Duration::from_secs(1));
        assert_eq!(
            ec.credential_mode,
            CredentialMode::WithFace {
                window: WITH_FACE_WINDOW
            }
        );
        ec.validate().unwrap();
    }

    #[test]
    fn a_dry_run_gate_opens_and_a_missing_chip_is_named() {
        assert_eq!(GateConfig::default().open().unwrap().name(), "dry-run");
        let gpio = GateConfig {
            output: GateOutputKind::Gpio,
            gpio_chip: "/nonexistent/gpiochip9".into(),
            ..GateConfig::default()
        };
        assert_eq!(
            gpio.open().unwrap_err().to_string(),
            "gate output gpio:/nonexistent/gpiochip9:17: no such GPIO chip (is this the \
             terminal's board? see `gpiodetect`)"
        );
    }
}
