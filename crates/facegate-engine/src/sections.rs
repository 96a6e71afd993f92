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
use crate::osdp::{
    MAX_OSDP_ADDRESS, OSDP_BAUD_RATES, OsdpReader, OsdpSecurity, OsdpSettings, Scbk,
};
use crate::sink::EventSink;
use crate::wiegand::{
    WIEGAND_INTERVAL_US, WIEGAND_PULSE_US, WiegandCard, WiegandFormat, WiegandGate, WiegandTiming,
};

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
    /// The site's panel decides: facegate is an OSDP reader on a serial line ([`OsdpReader`]).
    Osdp,
    /// The site's controller decides: a Wiegand card read on two GPIO lines ([`WiegandGate`]).
    Wiegand,
    /// Logs the pulse only ([`DryRun`]).
    #[default]
    DryRun,
}

impl GateOutputKind {
    /// Every value, in the order the error lists them.
    pub const ALL: [Self; 5] = [
        Self::Gpio,
        Self::Command,
        Self::Osdp,
        Self::Wiegand,
        Self::DryRun,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gpio => "gpio",
            Self::Command => "command",
            Self::Osdp => "osdp",
            Self::Wiegand => "wiegand",
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

impl TryFrom<String> for WiegandFormat {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        one_of("gate.card_format", &value, &Self::ALL, Self::as_str)
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
    /// For `osdp` and `wiegand`: the format of the card read a grant becomes.
    pub card_format: WiegandFormat,
    /// For `osdp` and `wiegand`: the site's facility code (0..=255 in 26-bit, 0..=65535 in
    /// 34-bit); the card number is the grantee's card in the credential register.
    pub facility_code: u32,
    /// For `wiegand`: the D0 and D1 lines on `gpio_chip`.
    pub wiegand_d0_line: u32,
    pub wiegand_d1_line: u32,
    pub wiegand_pulse_us: u64,
    pub wiegand_interval_us: u64,
    /// For `osdp`: the serial device (RS-485 adapter); the unit must allow it (`facegate gate
    /// unit-dropin`).
    pub osdp_device: Option<PathBuf>,
    pub osdp_baud: u32,
    /// This reader's address on the bus, 0..=126.
    pub osdp_address: u8,
    /// The secure channel (default on); off only for a panel that cannot do it.
    pub osdp_secure_channel: bool,
    /// The terminal's SCBK as a systemd credential name (`$CREDENTIALS_DIRECTORY/NAME`) ...
    pub osdp_scbk_credential: Option<String>,
    /// ... or as a file (32 hex digits, mode 0600, owned by the service user).
    pub osdp_scbk_file: Option<PathBuf>,
    /// Accept the default key for one session so the panel can set this terminal's key
    /// (written to `osdp_scbk_file`). Only while commissioning.
    pub osdp_install_mode: bool,
    /// The IEEE OUI of the refusal reports (`osdp_MFGREP`), 6 hex digits.
    pub osdp_vendor_code: String,
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
            card_format: WiegandFormat::W26,
            facility_code: 0,
            wiegand_d0_line: 5,
            wiegand_d1_line: 6,
            wiegand_pulse_us: crate::wiegand::WIEGAND_TIMING.pulse.as_micros() as u64,
            wiegand_interval_us: crate::wiegand::WIEGAND_TIMING.interval.as_micros() as u64,
            osdp_device: None,
            osdp_baud: 9600,
            osdp_address: 0,
            osdp_secure_channel: true,
            osdp_scbk_credential: None,
            osdp_scbk_file: None,
            osdp_install_mode: false,
            osdp_vendor_code: "000000".into(),
        }
    }
}

/// A gate output and, for a panel that also hears refusals and tamper, its event sink.
pub type GateOutputs = (Box<dyn GateOutput>, Option<Box<dyn EventSink>>);

/// Where the terminal's SCBK comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScbkSource {
    Credential(String),
    File(PathBuf),
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
        for (key, line) in [
            ("gate.gpio_line", self.gpio_line),
            ("gate.wiegand_d0_line", self.wiegand_d0_line),
            ("gate.wiegand_d1_line", self.wiegand_d1_line),
        ] {
            if line > MAX_GPIO_LINE {
                return Err(setting(
                    key,
                    format!("= {line} must lie in 0..={MAX_GPIO_LINE}"),
                ));
            }
        }
        if let Err(e) = WiegandCard::new(self.card_format, self.facility_code, 0) {
            return Err(setting(
                "gate.facility_code",
                format!("= {}: {e}", self.facility_code),
            ));
        }
        match self.output {
            GateOutputKind::Wiegand => self.validate_wiegand(),
            GateOutputKind::Osdp => self.scbk_source().map(|_| ()),
            GateOutputKind::Gpio | GateOutputKind::Command | GateOutputKind::DryRun => Ok(()),
        }
    }

    fn validate_wiegand(&self) -> Result<(), EngineError> {
        if self.wiegand_d0_line == self.wiegand_d1_line {
            return Err(setting(
                "gate.wiegand_d1_line",
                format!(
                    "= {} is also gate.wiegand_d0_line: D0 and D1 are two lines",
                    self.wiegand_d1_line
                ),
            ));
        }
        for (key, v, (lo, hi)) in [
            (
                "gate.wiegand_pulse_us",
                self.wiegand_pulse_us,
                WIEGAND_PULSE_US,
            ),
            (
                "gate.wiegand_interval_us",
                self.wiegand_interval_us,
                WIEGAND_INTERVAL_US,
            ),
        ] {
            if !(lo..=hi).contains(&v) {
                return Err(setting(key, format!("= {v} must lie in {lo}..={hi}")));
            }
        }
        Ok(())
    }

    /// The serial device of `output = "osdp"` (what the unit's drop-in allows).
    pub fn osdp_device(&self) -> Result<&std::path::Path, EngineError> {
        self.osdp_device.as_deref().ok_or_else(|| {
            setting(
                "gate.osdp_device",
                "is unset: gate.output = \"osdp\" needs the serial device, e.g. \
                 osdp_device = \"/dev/ttyUSB0\""
                    .into(),
            )
        })
    }

    /// Checks the `osdp_*` keys; the SCBK's source, `None` for install mode without a key yet
    /// or for a plain channel.
    pub fn scbk_source(&self) -> Result<Option<ScbkSource>, EngineError> {
        self.osdp_device()?;
        if !OSDP_BAUD_RATES.contains(&self.osdp_baud) {
            let rates: Vec<_> = OSDP_BAUD_RATES.iter().map(u32::to_string).collect();
            return Err(setting(
                "gate.osdp_baud",
                format!("= {} must be one of {}", self.osdp_baud, rates.join(", ")),
            ));
        }
        if self.osdp_address > MAX_OSDP_ADDRESS {
            return Err(setting(
                "gate.osdp_address",
                format!("= {} must lie in 0..={MAX_OSDP_ADDRESS}", self.osdp_address),
            ));
        }
        self.vendor_code()?;
        let source = match (&self.osdp_scbk_credential, &self.osdp_scbk_file) {
            (Some(_), Some(_)) => {
                return Err(setting(
                    "gate.osdp_scbk_file",
                    "and gate.osdp_scbk_credential are both set: name the key one way".into(),
                ));
            }
            (Some(name), None) => Some(ScbkSource::Credential(name.clone())),
            (None, Some(path)) => Some(ScbkSource::File(path.clone())),
            (None, None) => None,
        };
        if !self.osdp_secure_channel {
            if self.osdp_install_mode || source.is_some() {
                return Err(setting(
                    "gate.osdp_secure_channel",
                    "= false leaves no use for an SCBK or install mode; remove them or turn the \
                     secure channel on"
                        .into(),
                ));
            }
            return Ok(None);
        }
        if self.osdp_install_mode {
            if !matches!(source, None | Some(ScbkSource::File(_))) || self.osdp_scbk_file.is_none()
            {
                return Err(setting(
                    "gate.osdp_install_mode",
                    "= true needs gate.osdp_scbk_file (where the key the panel sets is written), \
                     not a systemd credential"
                        .into(),
                ));
            }
            // The key file need not exist yet in install mode.
            return Ok(source.filter(|s| matches!(s, ScbkSource::File(p) if p.exists())));
        }
        if source.is_none() {
            return Err(setting(
                "gate.osdp_scbk_file",
                "is unset: the secure channel needs this terminal's SCBK (gate.osdp_scbk_file \
                 = \"/etc/facegate/osdp.scbk\", 32 hex digits, mode 0600, or \
                 gate.osdp_scbk_credential = NAME); install mode (osdp_install_mode = true) \
                 only while commissioning"
                    .into(),
            ));
        }
        Ok(source)
    }

    fn vendor_code(&self) -> Result<[u8; 3], EngineError> {
        let v = self.osdp_vendor_code.as_bytes();
        let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        let parsed = (v.len() == 6)
            .then(|| {
                let mut out = [0u8; 3];
                for (i, p) in v.chunks_exact(2).enumerate() {
                    out[i] = digit(p[0])? * 16 + digit(p[1])?;
                }
                Some(out)
            })
            .flatten();
        parsed.ok_or_else(|| {
            setting(
                "gate.osdp_vendor_code",
                format!(
                    "= {:?} must be 6 hex digits (an IEEE OUI)",
                    self.osdp_vendor_code
                ),
            )
        })
    }

    fn read_scbk(source: &ScbkSource) -> Result<Scbk, EngineError> {
        let read = match source {
            ScbkSource::File(p) => Scbk::read(p),
            ScbkSource::Credential(name) => {
                let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") else {
                    return Err(setting(
                        "gate.osdp_scbk_credential",
                        format!(
                            "= {name:?}: no systemd credentials here ($CREDENTIALS_DIRECTORY is \
                             unset; the unit needs LoadCredential={name}:/path/to/key)"
                        ),
                    ));
                };
                Scbk::read_credential(std::path::Path::new(&dir), name)
            }
        };
        read.map_err(|reason| setting("gate.osdp_scbk", reason))
    }

    /// The reader's settings for `output = "osdp"`, with its SCBK read.
    pub fn osdp_settings(&self) -> Result<OsdpSettings, EngineError> {
        let source = self.scbk_source()?;
        let security = if self.osdp_secure_channel {
            OsdpSecurity::Secure {
                scbk: source.as_ref().map(Self::read_scbk).transpose()?,
                install_mode: self.osdp_install_mode,
                key_file: self.osdp_scbk_file.clone(),
            }
        } else {
            OsdpSecurity::Plain
        };
        Ok(OsdpSettings {
            device: self.osdp_device()?.to_path_buf(),
            baud: self.osdp_baud,
            address: self.osdp_address,
            security,
            format: self.card_format,
            facility: self.facility_code,
            vendor_code: self.vendor_code()?,
        })
    }

    /// The output this section names, opened (a GPIO line is requested now).
    pub fn open(&self) -> Result<Box<dyn GateOutput>, EngineError> {
        self.open_outputs().map(|(gate, _)| gate)
    }

    /// The output and, for `osdp`, the event sink that reports refusals and tamper to the
    /// panel (add it to the engine with `with_sink`).
    pub fn open_outputs(&self) -> Result<GateOutputs, EngineError> {
        self.validate()?;
        let pulse = Duration::from_millis(self.pulse_ms);
        Ok(match self.output {
            GateOutputKind::Gpio => (
                Box::new(GpioGate::open(
                    &self.gpio_chip,
                    self.gpio_line,
                    self.active_low,
                    pulse,
                )?),
                None,
            ),
            GateOutputKind::Command => {
                let Some((program, args)) = self.command.split_first() else {
                    return Err(setting("gate.command", "is empty".into()));
                };
                (
                    Box::new(CommandGate::new(
                        program,
                        args.to_vec(),
                        pulse.max(MIN_COMMAND_TIMEOUT),
                    )),
                    None,
                )
            }
            GateOutputKind::Wiegand => (
                Box::new(WiegandGate::open(
                    &self.gpio_chip,
                    self.wiegand_d0_line,
                    self.wiegand_d1_line,
                    self.card_format,
                    self.facility_code,
                    WiegandTiming {
                        pulse: Duration::from_micros(self.wiegand_pulse_us),
                        interval: Duration::from_micros(self.wiegand_interval_us),
                    },
                )?),
                None,
            ),
            GateOutputKind::Osdp => {
                let (gate, sink) = OsdpReader::start(&self.osdp_settings()?)?.split();
                (Box::new(gate), Some(Box::new(sink)))
            }
            GateOutputKind::DryRun => (Box::new(DryRun::new()), None),
        })
    }

    /// A systemd drop-in for `facegate.service` that lets the service reach exactly the
    /// configured serial device (`output = "osdp"`); `None` for the other outputs.
    pub fn unit_dropin(&self) -> Result<Option<String>, EngineError> {
        if self.output != GateOutputKind::Osdp {
            return Ok(None);
        }
        let device = self.osdp_device()?;
        let shown = device.display().to_string();
        if !device.is_absolute() || shown.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(setting(
                "gate.osdp_device",
                format!("= {shown:?} must be an absolute path without spaces"),
            ));
        }
        let mut text = format!(
            "# /etc/systemd/system/facegate.service.d/osdp.conf, made by `facegate gate \
             unit-dropin`\n# from gate.osdp_device: the OSDP reader's serial line, and only it.\n\
             [Service]\nDeviceAllow={shown} rw\n"
        );
        if let Some(ScbkSource::Credential(name)) = self.scbk_source()? {
            text.push_str(&format!(
                "# The SCBK, sealed like the master key: systemd-creds encrypt --name={name} \
                 KEYFILE\n#   /etc/credstore.encrypted/{name}\n\
                 LoadCredentialEncrypted={name}:/etc/credstore.encrypted/{name}\n"
            ));
        }
        text.push_str(
            "# Serial devices belong to group dialout (Debian's base-passwd always has it).\n\
             SupplementaryGroups=dialout\n",
        );
        Ok(Some(text))
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
            "gate.output must be one of gpio, command, osdp, wiegand, dry_run, not \"relay\""
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
    fn panel_outputs_are_validated_naming_the_key() {
        let cases: [(&str, &str); 11] = [
            (
                "output = \"wiegand\"\nwiegand_d0_line = 4\nwiegand_d1_line = 4",
                "gate.wiegand_d1_line = 4 is also gate.wiegand_d0_line: D0 and D1 are two lines",
            ),
            (
                "output = \"wiegand\"\nwiegand_pulse_us = 500",
                "gate.wiegand_pulse_us = 500 must lie in 20..=100",
            ),
            (
                "output = \"wiegand\"\nwiegand_interval_us = 100",
                "gate.wiegand_interval_us = 100 must lie in 200..=20000",
            ),
            (
                "output = \"wiegand\"\nfacility_code = 300",
                "gate.facility_code = 300: facility code 300 does not fit wiegand26 (0..=255)",
            ),
            (
                "output = \"osdp\"",
                "gate.osdp_device is unset: gate.output = \"osdp\" needs the serial device, e.g. \
                 osdp_device = \"/dev/ttyUSB0\"",
            ),
            (
                "output = \"osdp\"\nosdp_device = \"/dev/ttyUSB0\"",
                "gate.osdp_scbk_file is unset: the secure channel needs this terminal's SCBK \
                 (gate.osdp_scbk_file = \"/etc/facegate/osdp.scbk\", 32 hex digits, mode 0600, \
                 or gate.osdp_scbk_credential = NAME); install mode (osdp_install_mode = true) \
                 only while commissioning",
            ),
            (
                "output = \"osdp\"\nosdp_device = \"/dev/ttyUSB0\"\nosdp_baud = 4800",
                "gate.osdp_baud = 4800 must be one of 9600, 19200, 38400, 57600, 115200, 230400",
            ),
            (
                "output = \"osdp\"\nosdp_device = \"/dev/ttyUSB0\"\nosdp_address = 127",
                "gate.osdp_address = 127 must lie in 0..=126",
            ),
            (
                "output = \"osdp\"\nosdp_device = \"/dev/ttyUSB0\"\nosdp_vendor_code = \"xyz\"",
                "gate.osdp_vendor_code = \"xyz\" must be 6 hex digits (an IEEE OUI)",
            ),
            (
                "output = \"osdp\"\nosdp_device = \"/dev/ttyUSB0\"\nosdp_install_mode = true\n\
                 osdp_scbk_credential = \"k\"",
                "gate.osdp_install_mode = true needs gate.osdp_scbk_file (where the key the panel \
                 sets is written), not a systemd credential",
            ),
            (
                "output = \"osdp\"\nosdp_device = \"/dev/ttyUSB0\"\nosdp_secure_channel = false\n\
                 osdp_scbk_file = \"/k\"",
                "gate.osdp_secure_channel = false leaves no use for an SCBK or install mode; \
                 remove them or turn the secure channel on",
            ),
        ];
        for (text, want) in cases {
            let f = parse(&format!("[gate]\n{text}")).unwrap();
            assert_eq!(f.gate.validate().unwrap_err().to_string(), want, "{text}");
        }
        assert_eq!(
            parse("[gate]\ncard_format = \"wiegand37\"").unwrap_err(),
            "gate.card_format must be one of wiegand26, wiegand34, not \"wiegand37\""
        );
        let ok = parse(
            "[gate]\noutput = \"osdp\"\nosdp_device = \"/dev/ttyUSB0\"\n\
             osdp_scbk_file = \"/etc/facegate/osdp.scbk\"\ncard_format = \"wiegand34\"\n\
             facility_code = 4000",
        )
        .unwrap();
        ok.gate.validate().unwrap();
        assert_eq!(
            ok.gate.unit_dropin().unwrap().unwrap(),
            "# /etc/systemd/system/facegate.service.d/osdp.conf, made by `facegate gate \
             unit-dropin`\n# from gate.osdp_device: the OSDP reader's serial line, and only it.\n\
             [Service]\nDeviceAllow=/dev/ttyUSB0 rw\n# Serial devices belong to group dialout \
             (Debian's base-passwd always has it).\nSupplementaryGroups=dialout\n"
        );
        // Install mode without a key yet: the default key for one session, then KEYSET.
        let install = parse(
            "[gate]\noutput = \"osdp\"\nosdp_device = \"/dev/ttyUSB0\"\n\
             osdp_scbk_file = \"/nonexistent/osdp.scbk\"\nosdp_install_mode = true",
        )
        .unwrap();
        assert_eq!(install.gate.scbk_source().unwrap(), None);
        assert_eq!(GateConfig::default().unit_dropin().unwrap(), None);
        // The key file is read at open: a missing one is named.
        let e = ok.gate.osdp_settings().unwrap_err().to_string();
        assert!(
            e.starts_with("gate.osdp_scbk /etc/facegate/osdp.scbk: "),
            "{e}"
        );
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
