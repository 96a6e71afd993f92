//! ONNX Runtime: finding the shared library, one process-wide environment with one global
//! intra-op thread pool shared by every session (but those whose manifest entry runs them on
//! the caller's thread, which start no threads), and loading checked sessions.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ort::environment::{Environment, GlobalThreadPoolOptions};
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::TensorRef;
use sha2::{Digest, Sha256};

use crate::VisionError;
use crate::manifest::{
    Manifest, ModelSpec, Precision, SessionThreads, check_hash, open_error, verify_file,
};

/// How ONNX Runtime runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// The `libonnxruntime.so` to load; `None` searches (see [`find_library`]).
    pub library: Option<PathBuf>,
    /// Threads of the one global intra-op pool shared by all sessions (0 = one per core).
    pub intra_threads: usize,
    /// Whether idle pool threads spin. Off by default: a gate terminal idles between people,
    /// and spinning threads steal the cores the capture and preprocessing need.
    pub spinning: bool,
}

/// The most intra-op threads `runtime.intra_threads` may ask for. A gate terminal has a few
/// cores; thousands of threads only stall start-up (100,000 hung `validate`).
pub const MAX_INTRA_THREADS: usize = 64;

impl RuntimeConfig {
    /// Checks the bounds, naming the config key.
    pub fn validate(&self) -> Result<(), VisionError> {
        if self.intra_threads > MAX_INTRA_THREADS {
            return Err(VisionError::Setting {
                key: "runtime.intra_threads",
                reason: format!(
                    "{} must lie in 0..={MAX_INTRA_THREADS} (0: one per core)",
                    self.intra_threads
                ),
            });
        }
        Ok(())
    }
}

static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();

/// The library to load, verified: `config`, else `$ORT_DYLIB_PATH`, else the manifest's fetched
/// copy for this architecture, else the Debian package's location.
///
/// A path given explicitly (the config's `runtime.onnxruntime`, or `$ORT_DYLIB_PATH`) that does
/// not exist is an error, never a reason to fall back to another library. Whichever file is
/// chosen must hash to the SHA-256 the manifest records for this architecture, as the models
/// must: the library runs inside the process with the key and every face.
pub fn find_library(
    config: Option<&Path>,
    manifest: Option<&Manifest>,
) -> Result<PathBuf, VisionError> {
    let explicit = config
        .map(|p| (p.to_path_buf(), "runtime.onnxruntime"))
        .or_else(|| {
            std::env::var_os("ORT_DYLIB_PATH").map(|p| (PathBuf::from(p), "$ORT_DYLIB_PATH"))
        });
    let path = match explicit {
        Some((p, _)) if p.is_file() => p,
        Some((p, from)) => {
            return Err(VisionError::Runtime {
                path: p,
                reason: format!("named by {from} but not a file (no other library is tried)"),
            });
        }
        None => {
            let mut candidates: Vec<PathBuf> = Vec::new();
            if let Some(m) = manifest
                && let Some(rt) = m.runtime_for_host()
            {
                candidates.push(m.resolve(&rt.dest));
            }
            candidates.push(PathBuf::from("/usr/lib/facegate/libonnxruntime.so.1.31.1"));
            match candidates.iter().find(|c| c.is_file()) {
                Some(c) => c.clone(),
                None => {
                    let looked: Vec<String> =
                        candidates.iter().map(|c| c.display().to_string()).collect();
                    return Err(VisionError::RuntimeMissing {
                        looked: looked.join(", "),
                    });
                }
            }
        }
    };
    let Some(spec) = manifest.and_then(Manifest::runtime_for_host) else {
        return Err(VisionError::Runtime {
            path,
            reason: format!(
                "the model manifest has no [[runtime]] entry for {} to check it against",
                std::env::consts::ARCH
            ),
        });
    };
    verify_file("ONNX Runtime library", &path, &spec.sha256)?;
    Ok(path)
}

/// The variable ONNX Runtime reads to switch its telemetry off entirely. `with_telemetry(false)`
/// alone still leaves it writing a device id and an event database under
/// `~/.cache/Microsoft/DeveloperTools/.onnxruntime/` (seen with 1.31.1); with this set it writes
/// nothing.
pub const DISABLE_TELEMETRY_VAR: &str = "ORT_DISABLE_TELEMETRY";

/// Sets [`DISABLE_TELEMETRY_VAR`] before the library is loaded, unless it is already `1`.
///
/// Programs should set it themselves while they are still single-threaded (the `facegate`
/// binary does, first thing in `main`), so this branch does not run there.
fn disable_telemetry_at_the_source() {
    if std::env::var_os(DISABLE_TELEMETRY_VAR).is_some_and(|v| v == "1") {
        return;
    }
    // SAFETY: setenv races only with a concurrent getenv/setenv in another thread. This runs
    // once, before ONNX Runtime is loaded; programs that start threads earlier set the variable
    // themselves before doing so (see above), and then this line is never reached.
    unsafe { std::env::set_var(DISABLE_TELEMETRY_VAR, "1") };
}

/// Loads ONNX Runtime from `library` and creates the process-wide environment with its global
/// thread pool. Idempotent: later calls reuse the first environment.
pub fn init(library: &Path, config: &RuntimeConfig) -> Result<(), VisionError> {
    if ENVIRONMENT.get().is_some() {
        return Ok(());
    }
    config.validate()?;
    disable_telemetry_at_the_source();
    let rt_err = |reason: String| VisionError::Runtime {
        path: library.to_path_buf(),
        reason,
    };
    // Loading the library must come first: every other ort call goes through it.
    let builder = ort::init_from(library).map_err(|e| rt_err(e.to_string()))?;
    let pool = GlobalThreadPoolOptions::default()
        .with_intra_threads(config.intra_threads)
        .and_then(|p| p.with_inter_threads(1))
        .and_then(|p| p.with_spin_control(config.spinning))
        .map_err(|e| rt_err(e.to_string()))?;
    let env = builder
        .with_name("facegate")
        // ONNX Runtime ships with telemetry on; face data must not leave the device (Art. 8),
        // and nothing else needs to either. The egress guard would block it anyway.
        .with_telemetry(false)
        .with_global_thread_pool(pool)
        .build()
        .map_err(|e| rt_err(e.to_string()))?;
    let _ = ENVIRONMENT.set(env);
    tracing::info!(
        library = %library.display(),
        intra_threads = config.intra_threads,
        spinning = config.spinning,
        "onnx runtime ready"
    );
    Ok(())
}

/// The bytes of the model file at `path` once their SHA-256 is `expected` (the manifest's).
fn read_verified(role: &str, path: &Path, expected: &str) -> Result<Vec<u8>, VisionError> {
    let bytes = std::fs::read(path).map_err(|source| open_error(role, path, source))?;
    check_hash(role, path, expected, hex::encode(Sha256::digest(&bytes)))?;
    Ok(bytes)
}

/// A model file's bytes whose SHA-256 matched the manifest, kept until its session is created
/// ([`ModelSession::from_verified`]): the hash is checked at start-up like every other model's,
/// while a session only some paths need (the photo fallback detector) is created at its first
/// use, from these bytes and never from the file again.
pub struct VerifiedModel {
    bytes: Vec<u8>,
    spec: ModelSpec,
    path: PathBuf,
}

impl std::fmt::Debug for VerifiedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedModel")
            .field("role", &self.spec.role)
            .field("path", &self.path)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

impl VerifiedModel {
    /// Reads the file `spec` names in `manifest`'s folder and checks its SHA-256.
    pub fn read(manifest: &Manifest, spec: &ModelSpec) -> Result<Self, VisionError> {
        let path = manifest.resolve(&spec.dest);
        let label = match spec.precision {
            Precision::Fp32 => spec.role.as_str().to_owned(),
            // Built at set-up (deploy/fetch-assets.py) rather than fetched: say so when absent.
            p => format!("{} ({})", spec.role.as_str(), p.as_str()),
        };
        let bytes = read_verified(&label, &path, &spec.sha256)?;
        Ok(Self {
            bytes,
            spec: spec.clone(),
            path,
        })
    }
}

/// A session whose file hash and tensor shapes were checked against the manifest once, at load.
/// Inference on it never re-checks anything.
pub struct ModelSession {
    session: Session,
    spec: ModelSpec,
    path: PathBuf,
    last_inference: Duration,
}

impl std::fmt::Debug for ModelSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelSession")
            .field("role", &self.spec.role)
            .field("name", &self.spec.name)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl ModelSession {
    /// Verifies the file named by `spec` in `manifest`'s folder, loads it on the threads its
    /// entry names (the global pool by default) and checks its input and output names and
    /// shapes. [`init`] must have run.
    ///
    /// The file is read once: its bytes are hashed and the same bytes become the session, so a
    /// file swapped after the check is never what runs.
    pub fn load(manifest: &Manifest, spec: &ModelSpec) -> Result<Self, VisionError> {
        Self::from_verified(&VerifiedModel::read(manifest, spec)?)
    }

    /// The session of a model file checked earlier (see [`VerifiedModel`]), with its input and
    /// output names and shapes checked now. [`init`] must have run. A failure leaves `model`
    /// as it was, so a later call fails the same way.
    pub fn from_verified(model: &VerifiedModel) -> Result<Self, VisionError> {
        Self::from_verified_on(model, model.spec.threads)
    }

    /// [`ModelSession::from_verified`] on `threads` rather than the manifest's choice (the
    /// precision bench measures both).
    pub fn from_verified_on(
        model: &VerifiedModel,
        threads: SessionThreads,
    ) -> Result<Self, VisionError> {
        let VerifiedModel { bytes, spec, path } = model;
        let (spec, path) = (spec, path.clone());
        let role = spec.role.as_str();
        let Some(env) = ENVIRONMENT.get() else {
            return Err(VisionError::Runtime {
                path: path.clone(),
                reason: "ONNX Runtime is not initialised (call runtime::init first)".into(),
            });
        };
        let fail = |e: &dyn std::fmt::Display| VisionError::Runtime {
            path: path.clone(),
            reason: e.to_string(),
        };
        let mut builder = Session::builder(env)
            .map_err(|e| fail(&e))?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| fail(&e))?
            .with_intra_op_spinning(false)
            .map_err(|e| fail(&e))?
            .with_memory_pattern(true)
            .map_err(|e| fail(&e))?;
        if threads == SessionThreads::Caller {
            // One intra-op thread is the caller itself: ONNX Runtime starts no pool for it.
            builder = builder
                .with_independent_thread_pool()
                .map_err(|e| fail(&e))?
                .with_intra_threads(1)
                .map_err(|e| fail(&e))?
                .with_inter_threads(1)
                .map_err(|e| fail(&e))?;
        }
        let session = builder.commit_from_memory(bytes).map_err(|e| fail(&e))?;
        let shape_err = |what: String, expected: String, found: String| VisionError::ModelShape {
            role: role.to_string(),
            path: path.clone(),
            what,
            expected,
            found,
        };
        let check =
            |kind: &str, want: &[crate::manifest::TensorSpec], have: &[ort::value::Outlet]| {
                let names: Vec<&str> = have.iter().map(|o| o.name()).collect();
                if names.len() != want.len() {
                    return Err(shape_err(
                        format!("the number of {kind}s"),
                        want.len().to_string(),
                        names.len().to_string(),
                    ));
                }
                for t in want {
                    let Some(o) = have.iter().find(|o| o.name() == t.name) else {
                        return Err(shape_err(
                            format!("{kind} {}", t.name),
                            "present".into(),
                            format!("absent (has {names:?})"),
                        ));
                    };
                    let shape: Vec<i64> = o
                        .dtype()
                        .tensor_shape()
                        .map(|s| s.to_vec())
                        .unwrap_or_default();
                    if shape != t.shape {
                        return Err(shape_err(
                            format!("{kind} {} shape", t.name),
                            format!("{:?}", t.shape),
                            format!("{shape:?}"),
                        ));
                    }
                }
                Ok(())
            };
        check("input", &spec.inputs, session.inputs())?;
        check("output", &spec.outputs, session.outputs())?;
        tracing::info!(role, model = %spec.name, "model loaded");
        Ok(Self {
            session,
            spec: spec.clone(),
            path,
            last_inference: Duration::ZERO,
        })
    }

    /// [`ModelSession::load`] for several models at once, each on its own thread: creating a
    /// session (parsing, graph optimisation) is most of the service's start-up and runs on one
    /// core, so on a two-core terminal two at a time take about half as long. `None` entries
    /// stay `None`; the first error in `specs` order is returned.
    pub fn load_parallel<const N: usize>(
        manifest: &Manifest,
        specs: [Option<&ModelSpec>; N],
    ) -> Result<[Option<Self>; N], VisionError> {
        let results: [Result<Option<Self>, VisionError>; N] = std::thread::scope(|scope| {
            let handles =
                specs.map(|spec| spec.map(|spec| scope.spawn(move || Self::load(manifest, spec))));
            handles.map(|handle| match handle {
                None => Ok(None),
                Some(h) => match h.join() {
                    Ok(loaded) => loaded.map(Some),
                    Err(panic) => std::panic::resume_unwind(panic),
                },
            })
        });
        let mut out = [const { None }; N];
        for (slot, result) in out.iter_mut().zip(results) {
            *slot = result?;
        }
        Ok(out)
    }

    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// Wall time of the last `session.run` call alone (no pre- or post-processing).
    pub fn last_inference(&self) -> Duration {
        self.last_inference
    }

    /// Runs the model on its single input and copies each output, in manifest order, into
    /// `outputs` (which must have the manifest's sizes).
    pub fn run(
        &mut self,
        stage: &'static str,
        input: &[f32],
        outputs: &mut [&mut [f32]],
    ) -> Result<(), VisionError> {
        let spec_in = &self.spec.inputs[0];
        if input.len() != spec_in.len() {
            return Err(VisionError::Input {
                stage,
                reason: format!(
                    "input has {} values, model wants {}",
                    input.len(),
                    spec_in.len()
                ),
            });
        }
        let tensor = TensorRef::from_array_view((spec_in.shape.clone(), input))
            .map_err(VisionError::ort(stage))?;
        let start = Instant::now();
        let result = self
            .session
            .run(ort::inputs![spec_in.name.as_str() => tensor])
            .map_err(VisionError::ort(stage))?;
        self.last_inference = start.elapsed();
        for (spec_out, dst) in self.spec.outputs.iter().zip(outputs.iter_mut()) {
            let value = result
                .get(&spec_out.name)
                .ok_or_else(|| VisionError::Output {
                    stage,
                    output: spec_out.name.clone(),
                    expected: spec_out.len(),
                    found: 0,
                })?;
            let (_, data) = value
                .try_extract_tensor::<f32>()
                .map_err(VisionError::ort(stage))?;
            if data.len() != dst.len() {
                return Err(VisionError::Output {
                    stage,
                    output: spec_out.name.clone(),
                    expected: dst.len(),
                    found: data.len(),
                });
            }
            dst.copy_from_slice(data);
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn manifest(dir: &Path) -> Manifest {
        let text = include_str!("../../../models/manifest.toml");
        Manifest::parse(text, Path::new("manifest.toml"), dir.to_path_buf()).unwrap()
    }

    #[test]
    fn a_configured_library_that_is_missing_is_an_error_not_a_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let m = manifest(dir.path());
        let missing = dir.path().join("libonnxruntime.so.missing");
        let err = find_library(Some(&missing), Some(&m)).unwrap_err();
        assert!(
            matches!(&err, VisionError::Runtime { path, .. } if *path == missing),
            "{err}"
        );
        assert!(err.to_string().contains("runtime.onnxruntime"), "{err}");
    }

    #[test]
    fn a_library_that_does_not_match_the_manifest_hash_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let m = manifest(dir.path());
        let fake = dir.path().join("libonnxruntime.so");
        std::fs::write(&fake, b"not the library the manifest names").unwrap();
        let err = find_library(Some(&fake), Some(&m)).unwrap_err();
        assert!(matches!(err, VisionError::ModelHash { .. }), "{err}");
        assert!(err.to_string().contains("sha256 mismatch"), "{err}");
        // No manifest entry to check against: refused too.
        let err = find_library(Some(&fake), None).unwrap_err();
        assert!(err.to_string().contains("[[runtime]]"), "{err}");
    }
}
