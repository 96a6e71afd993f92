//! ONNX Runtime: finding the shared library, one process-wide environment with one global
//! intra-op thread pool shared by every session, and loading checked sessions.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ort::environment::{Environment, GlobalThreadPoolOptions};
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::TensorRef;

use crate::VisionError;
use crate::manifest::{Manifest, ModelSpec, verify_file};

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

static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();

/// The library to load: `config`, then `$ORT_DYLIB_PATH`, then the manifest's fetched copy for
/// this architecture, then the Debian package's location.
pub fn find_library(
    config: Option<&Path>,
    manifest: Option<&Manifest>,
) -> Result<PathBuf, VisionError> {
    let mut looked = Vec::new();
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = config {
        candidates.push(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        candidates.push(PathBuf::from(p));
    }
    if let Some(m) = manifest
        && let Some(rt) = m.runtime_for_host()
    {
        candidates.push(m.resolve(&rt.dest));
    }
    candidates.push(PathBuf::from("/usr/lib/facegate/libonnxruntime.so.1.31.1"));
    for c in candidates {
        if c.is_file() {
            return Ok(c);
        }
        looked.push(c.display().to_string());
    }
    Err(VisionError::RuntimeMissing {
        looked: looked.join(", "),
    })
}

/// Loads ONNX Runtime from `library` and creates the process-wide environment with its global
/// thread pool. Idempotent: later calls reuse the first environment.
pub fn init(library: &Path, config: &RuntimeConfig) -> Result<(), VisionError> {
    if ENVIRONMENT.get().is_some() {
        return Ok(());
    }
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
    /// Verifies the file named by `spec` in `manifest`'s folder, loads it on the global pool and
    /// checks its input and output names and shapes. [`init`] must have run.
    pub fn load(manifest: &Manifest, spec: &ModelSpec) -> Result<Self, VisionError> {
        let role = spec.role.as_str();
        let path = manifest.resolve(&spec.dest);
        verify_file(role, &path, &spec.sha256)?;
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
        let session = builder.commit_from_file(&path).map_err(|e| fail(&e))?;
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
