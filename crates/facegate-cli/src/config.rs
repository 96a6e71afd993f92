//! The configuration file: raw TOML sections (unknown keys refused) converted into validated
//! values. Policy sections are validated by `facegate-policy`; this module adds the runtime,
//! model, vision and capture sections and resolves paths.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use facegate_engine::{EngineConfig, FpirRule, GateConfig, ServiceConfig};
use facegate_policy::{
    OperatingPoint, PolicyConfig, RawAlternatives, RawDeployment, RawFiling, RawMatching,
    RawNotice, RawPolicyConfig, RawRetention,
};
use facegate_vision::{
    Action, ChallengeMode, LivenessConfig, Manifest, Precision, QualityConfig, RuntimeConfig,
    VisionConfig,
};
use serde::Deserialize;

/// The default configuration, compiled in: used when no `--config` is given and
/// `/etc/facegate/facegate.toml` does not exist.
pub const DEFAULT_TOML: &str = include_str!("../../../configs/facegate.toml");

/// Where an installed terminal keeps its configuration.
pub const SYSTEM_CONFIG: &str = "/etc/facegate/facegate.toml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    deployment: RawDeployment,
    notice: RawNotice,
    retention: RawRetention,
    alternatives: RawAlternatives,
    #[serde(default)]
    filing: RawFiling,
    matching: RawMatching,
    #[serde(default)]
    lockout: facegate_policy::RawLockout,
    #[serde(default)]
    runtime: RawRuntime,
    #[serde(default)]
    models: RawModels,
    #[serde(default)]
    vision: RawVision,
    #[serde(default)]
    capture: RawCapture,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    service: ServiceConfig,
    #[serde(default)]
    gate: GateConfig,
    #[serde(default)]
    liveness: RawLiveness,
}

/// `[liveness]`: how a face is found live (see `facegate_vision::LivenessConfig`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLiveness {
    challenge: ChallengeMode,
    steps: usize,
    actions: Vec<Action>,
    window_ms: u64,
    gap_ms: [u64; 2],
    passive_threshold: f32,
    doubt_threshold: f32,
    observe_ms: u64,
    mirrored: bool,
}

impl Default for RawLiveness {
    fn default() -> Self {
        let d = LivenessConfig::default();
        Self {
            challenge: d.mode,
            steps: d.challenge.steps,
            actions: d.challenge.actions.clone(),
            window_ms: d.challenge.window.as_millis() as u64,
            gap_ms: [
                d.challenge.gap_min.as_millis() as u64,
                d.challenge.gap_max.as_millis() as u64,
            ],
            passive_threshold: d.passive_threshold,
            doubt_threshold: d.doubt_threshold,
            observe_ms: d.observe.as_millis() as u64,
            mirrored: d.challenge.mirrored,
        }
    }
}

impl RawLiveness {
    fn into_config(self) -> std::result::Result<LivenessConfig, String> {
        let mut c = LivenessConfig {
            mode: self.challenge,
            passive_threshold: self.passive_threshold,
            doubt_threshold: self.doubt_threshold,
            observe: Duration::from_millis(self.observe_ms),
            ..LivenessConfig::default()
        };
        let mut actions = self.actions;
        let n = actions.len();
        actions.sort_by_key(|a| a.as_str());
        actions.dedup();
        if actions.len() != n {
            return Err("actions lists an action twice".into());
        }
        c.challenge.steps = self.steps;
        c.challenge.actions = actions;
        c.challenge.window = Duration::from_millis(self.window_ms);
        c.challenge.gap_min = Duration::from_millis(self.gap_ms[0]);
        c.challenge.gap_max = Duration::from_millis(self.gap_ms[1]);
        c.challenge.mirrored = self.mirrored;
        c.validate()?;
        Ok(c)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    state_dir: Option<PathBuf>,
    key_credential: Option<String>,
    key_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRuntime {
    onnxruntime: Option<PathBuf>,
    #[serde(default)]
    intra_threads: usize,
    #[serde(default)]
    spinning: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModels {
    manifest: Option<PathBuf>,
}

/// `[vision] flip_tta`: embed the mirrored crop too (`true`), never (`false`), or `"auto"`
/// (the default): on only at strict operating points, where `facegate eval flip` measured that
/// the second embedding changes decisions.
///
/// Measured on LFW View 2 and 14 live clips, each variant at its own calibrated threshold
/// (README, "Flip test-time augmentation"): at FMR 1e-3 and 1e-4 flip changed 8 and 10 of 6,000
/// pair decisions (McNemar p 0.73 and 0.34) and 12 and 7 of 18,186 clip decisions; at 1e-5 it
/// changed 34 pair decisions, 25 of them genuine pairs it accepted (p 0.009: TAR +0.53 points).
/// So `auto` turns flip on when the 1:1 rate is below [`FlipTta::AUTO_BELOW_FMR`], when 1:N
/// follows `fpir` (whose per-comparison rate is `fpir / N`) or under a raw cosine override.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlipTta {
    Auto,
    On,
    Off,
}

impl FlipTta {
    /// `auto` embeds twice at 1:1 false-match rates below this (1e-4, the default, embeds once).
    pub const AUTO_BELOW_FMR: f64 = 5e-5;

    /// Whether the embedder runs on the mirrored crop too, at this operating point.
    pub fn resolve(self, point: OperatingPoint, fpir: Option<f64>) -> bool {
        match self {
            FlipTta::On => true,
            FlipTta::Off => false,
            FlipTta::Auto => match point {
                OperatingPoint::Fmr(fmr) => fmr < Self::AUTO_BELOW_FMR || fpir.is_some(),
                OperatingPoint::CosineOverride(_) => true,
            },
        }
    }
}

impl<'de> Deserialize<'de> for FlipTta {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = FlipTta;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("true, false or \"auto\"")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<FlipTta, E> {
                Ok(if v { FlipTta::On } else { FlipTta::Off })
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<FlipTta, E> {
                match v {
                    "auto" => Ok(FlipTta::Auto),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawVision {
    flip_tta: FlipTta,
    liveness: bool,
    detector_threshold: Option<f32>,
    precision: Precision,
    quality: QualityConfig,
}

impl Default for RawVision {
    fn default() -> Self {
        Self {
            flip_tta: FlipTta::Auto,
            liveness: true,
            detector_threshold: None,
            precision: Precision::Fp32,
            quality: QualityConfig::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawCapture {
    max_pixels: u64,
}

impl Default for RawCapture {
    fn default() -> Self {
        Self {
            max_pixels: facegate_capture::DEFAULT_MAX_PIXELS,
        }
    }
}

/// The validated configuration every command works from.
#[derive(Debug)]
pub struct Config {
    /// Where it was read from (`<built-in>` for the default).
    pub source: String,
    pub policy: PolicyConfig,
    pub vision: VisionConfig,
    /// `[vision] flip_tta` as written; `vision.flip_tta` is what it resolved to.
    pub flip_setting: FlipTta,
    pub manifest_path: PathBuf,
    pub max_pixels: u64,
    /// The state directory named by the config, if any (see [`Config::state_dir`]).
    pub state_dir: Option<PathBuf>,
    /// The systemd credential holding the master key.
    pub key_credential: Option<String>,
    /// A key file (0600, owned by the service user) holding the master key.
    pub key_file: Option<PathBuf>,
    pub service: ServiceConfig,
    pub gate: GateConfig,
    pub liveness: LivenessConfig,
}

impl Config {
    /// Loads `path`, else the system config if present, else the built-in default.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading config {}", p.display()))?;
                Self::parse(&text, &p.display().to_string(), p.parent())
            }
            None if Path::new(SYSTEM_CONFIG).is_file() => {
                Self::load(Some(Path::new(SYSTEM_CONFIG)))
            }
            None => Self::parse(DEFAULT_TOML, "<built-in>", None),
        }
    }

    /// Parses and validates config text; relative paths resolve against `base`.
    pub fn parse(text: &str, source: &str, base: Option<&Path>) -> Result<Self> {
        let raw: RawConfig = toml::from_str(text).with_context(|| format!("config {source}"))?;
        let policy = PolicyConfig::from_raw(RawPolicyConfig {
            deployment: raw.deployment,
            notice: raw.notice,
            retention: raw.retention,
            alternatives: raw.alternatives,
            filing: raw.filing,
            matching: raw.matching,
            lockout: raw.lockout,
        })
        .with_context(|| format!("config {source}"))?;
        let resolve = |p: PathBuf| match base {
            Some(b) if p.is_relative() => b.join(p),
            _ => p,
        };
        let manifest_path = match raw.models.manifest {
            Some(p) => resolve(p),
            None => find_manifest()?,
        };
        if !(64 * 64..=facegate_capture::MAX_MAX_PIXELS).contains(&raw.capture.max_pixels) {
            bail!(
                "config {source}: capture.max_pixels = {} must lie in 4096..={} (the decoder's allocation limit follows it)",
                raw.capture.max_pixels,
                facegate_capture::MAX_MAX_PIXELS
            );
        }
        if let Some(t) = raw.vision.detector_threshold
            && !(0.05..1.0).contains(&t)
        {
            bail!("config {source}: vision.detector_threshold must lie in [0.05, 1)");
        }
        let vision = VisionConfig {
            runtime: RuntimeConfig {
                library: raw.runtime.onnxruntime.map(resolve),
                intra_threads: raw.runtime.intra_threads,
                spinning: raw.runtime.spinning,
            },
            flip_tta: raw.vision.flip_tta.resolve(
                policy.matching().operating_point(),
                policy.matching().fpir(),
            ),
            liveness: raw.vision.liveness,
            quality: raw.vision.quality,
            detector_threshold: raw.vision.detector_threshold,
            precision: raw.vision.precision,
        };
        vision
            .runtime
            .validate()
            .with_context(|| format!("config {source}"))?;
        vision
            .quality
            .validate()
            .with_context(|| format!("config {source}"))?;
        if raw
            .store
            .key_credential
            .as_deref()
            .is_some_and(|c| c.is_empty() || c.contains('/'))
        {
            bail!("config {source}: store.key_credential must be a credential name (no slashes)");
        }
        // [service] and [gate] belong to the engine, which validates them.
        raw.service
            .validate()
            .with_context(|| format!("config {source}"))?;
        raw.gate
            .validate()
            .with_context(|| format!("config {source}"))?;
        let liveness = raw
            .liveness
            .into_config()
            .map_err(|e| anyhow::anyhow!("config {source}: liveness.{e}"))?;
        let mut service = raw.service;
        service.events_socket = service.events_socket.map(resolve);
        service.admin_socket = service.admin_socket.map(resolve);
        let mut gate = raw.gate;
        gate.osdp_scbk_file = gate.osdp_scbk_file.map(resolve);
        service.metrics_file = service.metrics_file.map(resolve);
        Ok(Self {
            source: source.to_string(),
            policy,
            vision,
            flip_setting: raw.vision.flip_tta,
            manifest_path,
            max_pixels: raw.capture.max_pixels,
            state_dir: raw.store.state_dir.map(resolve),
            key_credential: raw.store.key_credential,
            key_file: raw.store.key_file.map(resolve),
            service,
            gate,
            liveness,
        })
    }

    /// The state directory: `override_dir`, the config's, systemd's `$STATE_DIRECTORY`, else
    /// `/var/lib/facegate`.
    pub fn state_dir(&self, override_dir: Option<&Path>) -> PathBuf {
        override_dir
            .map(Path::to_path_buf)
            .or_else(|| self.state_dir.clone())
            .or_else(|| std::env::var_os("STATE_DIRECTORY").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/var/lib/facegate"))
    }

    /// Where the master key comes from: `key_file` (a command-line override), the config's key
    /// file, else its systemd credential when the service manager provides credentials.
    pub fn key_source(&self, key_file: Option<&Path>) -> Result<facegate_store::KeySource> {
        if let Some(p) = key_file
            .map(Path::to_path_buf)
            .or_else(|| self.key_file.clone())
        {
            return Ok(facegate_store::KeySource::File(p));
        }
        match (
            &self.key_credential,
            std::env::var_os("CREDENTIALS_DIRECTORY"),
        ) {
            (Some(name), Some(_)) => {
                Ok(facegate_store::KeySource::SystemdCredential { name: name.clone() })
            }
            (Some(name), None) => bail!(
                "no master key: the config names the systemd credential {name:?} but $CREDENTIALS_DIRECTORY is not set (outside the service use --key-file, or set [store] key_file; make one with `facegate keygen PATH`)"
            ),
            (None, _) => bail!(
                "no master key: set [store] key_credential or key_file, or pass --key-file (make one with `facegate keygen PATH`)"
            ),
        }
    }

    /// The model manifest, with the embedder of the configured precision selected
    /// (so the models, their ids and the calibration tables all follow `[vision] precision`).
    pub fn manifest(&self) -> Result<Manifest> {
        let mut m = Manifest::load(&self.manifest_path)
            .with_context(|| format!("loading model manifest {}", self.manifest_path.display()))?;
        m.select(
            facegate_vision::Role::Embedder,
            self.vision.precision,
            "vision.precision",
        )
        .with_context(|| format!("config {}", self.source))?;
        Ok(m)
    }

    /// The embedder's calibration table, `(fmr, cosine)`, for the flip setting in use.
    pub fn calibration(&self, manifest: &Manifest) -> Result<Vec<(f64, f32)>> {
        let m = self.embedder(manifest)?;
        Ok(m.calibration_for(self.vision.flip_tta)
            .iter()
            .map(|c| (c.fmr, c.cosine))
            .collect())
    }

    /// The embedder's calibration for 1:N, each rate its 95 % upper bound
    /// (`ModelSpec::fpir_calibration`), for the flip setting in use.
    pub fn fpir_calibration(&self, manifest: &Manifest) -> Result<Vec<(f64, f32)>> {
        Ok(self
            .embedder(manifest)?
            .fpir_calibration(self.vision.flip_tta))
    }

    /// The manifest's embedder, refused when it has no calibration for the flip setting in use
    /// (a threshold measured with flip on is not the one for flip off, and the other way).
    fn embedder<'m>(&self, manifest: &'m Manifest) -> Result<&'m facegate_vision::ModelSpec> {
        let m = manifest
            .model(facegate_vision::Role::Embedder)
            .with_context(|| format!("{}: no embedder model", manifest.path().display()))?;
        // Both tables are checked, the one not in use too: switching flip_tta later must not
        // reach a broken table.
        for (key, table) in [
            ("calibration", &m.calibration),
            ("calibration_no_flip", &m.calibration_no_flip),
        ] {
            if !table.is_empty() {
                let points: Vec<(f64, f32)> = table.iter().map(|c| (c.fmr, c.cosine)).collect();
                facegate_policy::check_calibration(&points).with_context(|| {
                    format!("{}: model {} `{key}`", manifest.path().display(), m.name)
                })?;
            }
        }
        let flip = self.vision.flip_tta;
        if m.calibration_for(flip).is_empty() {
            bail!(
                "{}: model {} has no calibration with flip TTA {} (`{}`; measure it with `facegate eval calibrate --split{}`), and [vision] flip_tta = {:?} in {} uses it",
                manifest.path().display(),
                m.name,
                if flip { "on" } else { "off" },
                if flip {
                    "calibration"
                } else {
                    "calibration_no_flip"
                },
                if flip { "" } else { " --no-flip" },
                self.flip_setting,
                self.source
            );
        }
        Ok(m)
    }

    /// The engine's settings from this config: the operating point (threshold, `fpir` rule,
    /// margin) resolved against the manifest's calibration, liveness, `[service]`, and the
    /// embedder's width. `run` starts the engine on it; `verify`, `identify` and `demo` decide
    /// through a [`facegate_engine::Decider`] made from it, so they decide as the gate does.
    pub fn engine_config(&self, manifest: &Manifest, embedding_dim: usize) -> Result<EngineConfig> {
        let mut ec = EngineConfig::new(&self.policy, self.threshold(manifest)?);
        ec.fpir = match self.policy.matching().fpir() {
            Some(fpir) => Some(FpirRule {
                fpir,
                calibration: self.fpir_calibration(manifest)?,
            }),
            None => None,
        };
        ec.liveness = self.liveness.clone();
        self.service.apply(&mut ec);
        ec.embedding_dim = embedding_dim;
        ec.validate()
            .with_context(|| format!("the engine settings from {}", manifest.path().display()))?;
        Ok(ec)
    }

    /// The cosine threshold of the configured operating point.
    pub fn threshold(&self, manifest: &Manifest) -> Result<f32> {
        let calibration = self.calibration(manifest)?;
        facegate_policy::resolve_threshold(&calibration, self.policy.matching()).with_context(
            || {
                format!(
                    "resolving the match threshold from {}",
                    manifest.path().display()
                )
            },
        )
    }
}

/// The manifest when the config names none: `$FACEGATE_MODELS_DIR`, `models/` in the working
/// directory or a parent of it, beside the executable's workspace, then the Debian location.
pub fn find_manifest() -> Result<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os("FACEGATE_MODELS_DIR") {
        candidates.push(PathBuf::from(dir).join("manifest.toml"));
    }
    if let Ok(cwd) = std::env::current_dir() {
        candidates.extend(cwd.ancestors().map(|a| a.join("models/manifest.toml")));
    }
    if let Ok(exe) = std::env::current_exe() {
        candidates.extend(
            exe.ancestors()
                .skip(1)
                .map(|a| a.join("models/manifest.toml")),
        );
    }
    candidates.push(PathBuf::from("/usr/share/facegate/models/manifest.toml"));
    candidates
        .iter()
        .find(|c| c.is_file())
        .cloned()
        .with_context(|| "no model manifest found: set [models] manifest in the config or FACEGATE_MODELS_DIR, or run deploy/dev.sh setup".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_default_config_validates() {
        let c = Config::parse(DEFAULT_TOML, "<built-in>", None).unwrap();
        assert!(c.vision.liveness);
        assert!(c.policy.matching().fmr().is_some());
    }

    /// Every numeric value that decides security is bounded, and the error names its key.
    #[test]
    fn numeric_values_out_of_bounds_are_refused_naming_the_key() {
        let cases: [(&str, &str, &str); 14] = [
            (
                "[runtime]",
                "intra_threads = 100000",
                "runtime.intra_threads",
            ),
            (
                "[capture]",
                "max_pixels = 18446744073709551615",
                "capture.max_pixels",
            ),
            ("[capture]", "max_pixels = 100", "capture.max_pixels"),
            (
                "[vision.quality]",
                "min_sharpness = nan",
                "vision.quality.min_sharpness",
            ),
            (
                "[vision.quality]",
                "min_face_px = -1.0",
                "vision.quality.min_face_px",
            ),
            (
                "[vision.quality]",
                "max_clipped = inf",
                "vision.quality.max_clipped",
            ),
            (
                "[vision.quality]",
                "max_yaw_deg = 0.0",
                "vision.quality.max_yaw_deg",
            ),
            (
                "[vision.quality]",
                "min_brightness = 230.0\nmax_brightness = 40.0",
                "vision.quality.min_brightness",
            ),
            (
                "[vision]",
                "detector_threshold = nan",
                "vision.detector_threshold",
            ),
            (
                "[service]",
                "liveness_threshold = nan",
                "service.liveness_threshold",
            ),
            (
                "[service]",
                "liveness_threshold = -0.5",
                "service.liveness_threshold",
            ),
            ("[gate]", "pulse_ms = 0", "gate.pulse_ms"),
            ("[gate]", "gpio_line = 4000000000", "gate.gpio_line"),
            ("[matching]", "margin = nan", "margin"),
        ];
        for (section, line, key) in cases {
            let text = with_setting(section, line);
            let err = format!("{:#}", Config::parse(&text, "t", None).unwrap_err());
            assert!(err.contains(key), "{section} {line}: {err}");
        }
    }

    /// `flip_tta = "auto"` (the default) embeds once at the default FMR 1e-4 and twice at the
    /// strict points where `facegate eval flip` measured a difference; true and false win.
    #[test]
    fn flip_tta_auto_follows_the_operating_point() {
        let flip = |vision: &str, matching: &str| {
            let text = with_setting("[vision]", vision);
            let text = if matching.is_empty() {
                text
            } else {
                let mut t = String::new();
                let mut skip = false;
                for l in text.lines() {
                    if l.trim().starts_with('[') {
                        skip = l.trim() == "[matching]";
                    }
                    if !skip {
                        t.push_str(l);
                        t.push('\n');
                    }
                }
                format!("{t}[matching]\n{matching}\n")
            };
            let c = Config::parse(&text, "t", None).unwrap();
            (c.vision.flip_tta, c.flip_setting)
        };
        let c = Config::parse(DEFAULT_TOML, "<built-in>", None).unwrap();
        assert_eq!(c.flip_setting, FlipTta::Auto);
        assert!(
            !c.vision.flip_tta,
            "the default operating point embeds once"
        );
        assert_eq!(
            flip("flip_tta = \"auto\"", "fmr = 1e-4"),
            (false, FlipTta::Auto)
        );
        assert_eq!(
            flip("flip_tta = \"auto\"", "fmr = 1e-5"),
            (true, FlipTta::Auto)
        );
        assert_eq!(
            flip("flip_tta = \"auto\"", "fmr = 1e-4\nfpir = 1e-3"),
            (true, FlipTta::Auto)
        );
        assert_eq!(
            flip("flip_tta = \"auto\"", "cosine_override = 0.45"),
            (true, FlipTta::Auto)
        );
        assert_eq!(flip("flip_tta = true", "fmr = 1e-4"), (true, FlipTta::On));
        assert_eq!(
            flip("flip_tta = false", "fmr = 1e-6"),
            (false, FlipTta::Off)
        );
        for bad in ["flip_tta = \"sometimes\"", "flip_tta = 1"] {
            let err = format!(
                "{:#}",
                Config::parse(&with_setting("[vision]", bad), "t", None).unwrap_err()
            );
            assert!(err.contains("true, false or \"auto\""), "{bad}: {err}");
        }
    }

    /// A manifest that measured only one flip setting refuses the other, naming the table and
    /// the command that measures it, instead of applying the wrong threshold.
    #[test]
    fn a_flip_setting_without_its_calibration_is_refused() {
        let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/manifest.toml");
        let text = std::fs::read_to_string(shipped).unwrap();
        let start = text.find("calibration_no_flip = [").unwrap();
        let end = start + text[start..].find("\n]\n").unwrap() + 3;
        let without = format!("{}{}", &text[..start], &text[end..]);
        let m = Manifest::parse(&without, Path::new("m.toml"), PathBuf::from(".")).unwrap();
        let off = Config::parse(DEFAULT_TOML, "<built-in>", None).unwrap();
        assert!(!off.vision.flip_tta);
        let err = format!("{:#}", off.threshold(&m).unwrap_err());
        assert!(
            err.contains("calibration_no_flip") && err.contains("--no-flip"),
            "{err}"
        );
        let on = Config::parse(&with_setting("[vision]", "flip_tta = true"), "t", None).unwrap();
        assert!((on.threshold(&m).unwrap() - 0.4332).abs() < 1e-6);
        let shipped = Manifest::load(Path::new(shipped)).unwrap();
        assert!((off.threshold(&shipped).unwrap() - 0.4327).abs() < 1e-6);
    }

    /// The default config with `line` added under `section` (replacing keys it sets).
    fn with_setting(section: &str, line: &str) -> String {
        let keys: Vec<&str> = line
            .lines()
            .filter_map(|l| l.split('=').next())
            .map(str::trim)
            .collect();
        let mut out = String::new();
        let mut current = String::new();
        let mut added = false;
        for l in DEFAULT_TOML.lines() {
            let t = l.trim();
            if t.starts_with('[') {
                current = t.to_string();
            }
            let key = t.split('=').next().unwrap_or("").trim();
            if current == section && !t.starts_with('#') && keys.contains(&key) {
                continue;
            }
            out.push_str(l);
            out.push('\n');
            if t == section {
                out.push_str(line);
                out.push('\n');
                added = true;
            }
        }
        if !added {
            out.push_str(&format!("{section}\n{line}\n"));
        }
        out
    }

    #[test]
    fn the_unknown_retry_interval_is_bounded() {
        let c = Config::parse(DEFAULT_TOML, "<built-in>", None).unwrap();
        assert_eq!(c.service.unknown_retry_ms, 3000);
        for bad in ["0", "100", "600001"] {
            let text = DEFAULT_TOML.replacen(
                "unknown_retry_ms = 3000",
                &format!("unknown_retry_ms = {bad}"),
                1,
            );
            let err = format!("{:#}", Config::parse(&text, "t", None).unwrap_err());
            assert!(
                err.contains("service.unknown_retry_ms") && err.contains("250..=600000"),
                "{err}"
            );
        }
        let ok = DEFAULT_TOML.replacen("unknown_retry_ms = 3000", "unknown_retry_ms = 250", 1);
        assert_eq!(
            Config::parse(&ok, "t", None)
                .unwrap()
                .service
                .unknown_retry_ms,
            250
        );
    }

    #[test]
    fn unknown_keys_and_forbidden_sites_are_refused() {
        let extra = DEFAULT_TOML.replacen("[vision]", "[vision]\nsurprise = 1", 1);
        let err = format!("{:#}", Config::parse(&extra, "t", None).unwrap_err());
        assert!(err.contains("surprise"), "{err}");
        let hotel = DEFAULT_TOML.replacen(
            "site_kind = \"office_entrance\"",
            "site_kind = \"hotel_room\"",
            1,
        );
        let err = format!("{:#}", Config::parse(&hotel, "t", None).unwrap_err());
        assert!(err.contains("Art. 13"), "{err}");
    }
}
