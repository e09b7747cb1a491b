//! The trained agent: an ONNX model run with ONNX Runtime (`ort`, loaded dynamically).
//!
//! One intra-op and one inter-op thread, spinning disabled: hundreds of idle workers must cost no
//! CPU, and a batch-1 forward of these networks takes microseconds anyway.

use hamlet_env::{N_ACTIONS, OBS_DIM};
use hamlet_onnx::catalog::{self, CatalogError};
use ipc_proto::browser::ErrorCode;
use ipc_proto::wire::Activations;
use ort::memory::Allocator;
use ort::session::{HasSelectedOutputs, OutputSelector, RunOptions, Session};
use ort::value::Tensor;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("ONNX Runtime could not be loaded from {path}: {reason}")]
    Runtime { path: String, reason: String },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("model `{name}` cannot be used: {reason}")]
    Invalid { name: String, reason: String },
    #[error("inference failed: {0}")]
    Run(String),
}

impl PolicyError {
    pub fn code(&self) -> ErrorCode {
        match self {
            PolicyError::Catalog(CatalogError::NotPlain(_)) => ErrorCode::InvalidModelName,
            PolicyError::Catalog(CatalogError::NotFound(_)) => ErrorCode::ModelNotFound,
            PolicyError::Catalog(CatalogError::Unusable { .. }) => ErrorCode::InvalidModel,
            PolicyError::Invalid { .. } => ErrorCode::InvalidModel,
            PolicyError::Runtime { .. } | PolicyError::Run(_) => ErrorCode::WorkerFailed,
        }
    }
}

/// The ONNX Runtime environment (one per process).
pub struct Runtime {
    env: ort::environment::Environment,
}

impl Runtime {
    /// Loads the shared library at `lib`; a missing or broken library is an error, not a panic.
    pub fn init(lib: &Path) -> Result<Self, PolicyError> {
        let err = |reason: String| PolicyError::Runtime {
            path: lib.display().to_string(),
            reason,
        };
        if !lib.is_file() {
            return Err(err("no such file (run scripts/setup)".into()));
        }
        let env = ort::init_from(lib)
            .map_err(|e| err(e.to_string()))?
            .with_name("hamlet-worker")
            .with_telemetry(false)
            .build()
            .map_err(|e| err(e.to_string()))?;
        Ok(Runtime { env })
    }
}

pub struct Policy {
    pub name: String,
    session: Session,
    output: String,
    /// Names of the hidden-layer outputs, when the model has them.
    inner: Option<InnerOutputs>,
    /// `[n_actions, hidden]` weights from `h2` to the actions, for the strongest connections.
    action_weights: Option<(usize, usize, Vec<f32>)>,
    /// The `[1, 72]` input, overwritten by every evaluation.
    input: Tensor<f32>,
    /// Run options whose outputs are preallocated (those of known shape): ONNX Runtime writes
    /// each step's results into the same buffers, no allocation per step. Measured with
    /// `scripts/bench decision`: a batch-1 run p50 4.7–5.0 → 3.5 µs hot, 11.5 → 9.8 µs with the
    /// model's data cold (256 models in turn).
    run: RunOptions<HasSelectedOutputs>,
}

/// `text` with the server's path of the model replaced by its bare file name.
fn without_path(text: &str, path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let dir = path
        .parent()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    let t = text.replace(&path.display().to_string(), &name);
    if dir.is_empty() {
        t
    } else {
        t.replace(&dir, "models")
    }
}

/// The extra outputs our exporter writes (protocol.md `activations`).
struct InnerOutputs {
    dueling: bool,
}

fn tensor_dims(o: &ort::value::Outlet) -> Option<Vec<i64>> {
    o.dtype()
        .tensor_shape()
        .map(|s| s.iter().copied().collect())
}

/// The input tensor and run options with every output of known shape preallocated for batch 1
/// (an output of unknown shape is still fetched, into a buffer ONNX Runtime allocates).
fn preallocated(
    session: &Session,
) -> Result<(Tensor<f32>, RunOptions<HasSelectedOutputs>), ort::Error> {
    let alloc = Allocator::default();
    let mut outputs = OutputSelector::default();
    for o in session.outputs() {
        let width = match tensor_dims(o).as_deref() {
            Some([batch, w]) if (*batch == -1 || *batch == 1) && *w > 0 => *w as usize,
            _ => continue,
        };
        if o.dtype().tensor_type() == Some(ort::value::TensorElementType::Float32) {
            outputs = outputs.preallocate(o.name(), Tensor::<f32>::new(&alloc, [1usize, width])?);
        }
    }
    let input = Tensor::<f32>::new(&alloc, [1usize, OBS_DIM])?;
    Ok((input, RunOptions::new()?.with_outputs(outputs)))
}

impl Policy {
    /// Loads `name` from the models directory and checks it fits the world: one input
    /// `[batch, 72]`, a first output `[batch, 5]` (the Q-values). Outputs named `h1` and `h2`
    /// (and `value`, `advantage`) are the hidden layers, if the model has them.
    pub fn load(rt: &Runtime, models_dir: &Path, name: &str) -> Result<Self, PolicyError> {
        let path = catalog::resolve(models_dir, name)?;
        let invalid = |reason: String| PolicyError::Invalid {
            name: name.to_owned(),
            reason,
        };
        // Checked and loaded from memory: a file that is not a usable model gets a reason naming
        // the model, and ONNX Runtime's own errors (which quote the file's path) never reach a
        // browser.
        let too_big = std::fs::metadata(&path).is_ok_and(|m| m.len() > catalog::MAX_MODEL_BYTES);
        let bytes = if too_big {
            Err("the file is too large to be a model".to_owned())
        } else {
            std::fs::read(&path).map_err(|_| "the file cannot be read".to_owned())
        }
        .and_then(|b| catalog::check_model(&b).map(|_| b))
        .map_err(|reason| CatalogError::Unusable {
            name: name.to_owned(),
            reason,
        })?;
        let session = Session::builder(&rt.env)
            .and_then(|b| b.with_intra_threads(1).map_err(Into::into))
            .and_then(|b| b.with_inter_threads(1).map_err(Into::into))
            .and_then(|b| b.with_intra_op_spinning(false).map_err(Into::into))
            .and_then(|b| b.with_inter_op_spinning(false).map_err(Into::into))
            .and_then(|mut b| b.commit_from_memory(&bytes))
            .map_err(|e| invalid(without_path(&e.to_string(), &path)))?;
        let (ins, outs) = (session.inputs(), session.outputs());
        if ins.len() != 1 || outs.is_empty() {
            return Err(invalid(format!(
                "it has {} inputs and {} outputs, expected 1 input and the Q-values as first output",
                ins.len(),
                outs.len()
            )));
        }
        let float = Some(ort::value::TensorElementType::Float32);
        for (o, want, what) in [(&ins[0], OBS_DIM, "input"), (&outs[0], N_ACTIONS, "output")] {
            let dims = tensor_dims(o).unwrap_or_default();
            let ok = o.dtype().tensor_type() == float
                && dims.len() == 2
                && (dims[0] == -1 || dims[0] == 1)
                && dims[1] == want as i64;
            if !ok {
                return Err(invalid(format!(
                    "{what} `{}` is {:?} {dims:?}, expected float32 [batch, {want}]",
                    o.name(),
                    o.dtype().tensor_type()
                )));
            }
        }
        let named = |n: &str| outs.iter().any(|o| o.name() == n);
        let inner = (named("h1") && named("h2")).then(|| InnerOutputs {
            dueling: named("value") && named("advantage"),
        });
        let output = outs[0].name().to_owned();
        let action_weights = hamlet_onnx::action_weights(&bytes);
        let (input, run) = preallocated(&session).map_err(|e| invalid(e.to_string()))?;
        Ok(Policy {
            name: name.to_owned(),
            session,
            output,
            inner,
            action_weights,
            input,
            run,
        })
    }

    /// Whether the model exposes its hidden layers.
    pub fn has_activations(&self) -> bool {
        self.inner.is_some()
    }

    /// Q-values for one observation.
    pub fn q_values(&mut self, obs: &[f32; OBS_DIM]) -> Result<[f32; N_ACTIONS], PolicyError> {
        self.evaluate(obs, false).map(|(q, _)| q)
    }

    /// Q-values, and with `detail` the hidden layers (when the model has them).
    pub fn evaluate(
        &mut self,
        obs: &[f32; OBS_DIM],
        detail: bool,
    ) -> Result<([f32; N_ACTIONS], Option<Activations>), PolicyError> {
        let run = |e: ort::Error| PolicyError::Run(e.to_string());
        self.input.extract_tensor_mut().1.copy_from_slice(obs);
        let outputs = self
            .session
            .run_with_options(ort::inputs![&self.input], &self.run)
            .map_err(run)?;
        let read = |n: &str| -> Result<Vec<f32>, PolicyError> {
            let v = outputs
                .get(n)
                .ok_or_else(|| PolicyError::Run(format!("model produced no `{n}`")))?;
            let (_, data) = v.try_extract_tensor::<f32>().map_err(run)?;
            Ok(data.to_vec())
        };
        let data = read(&self.output)?;
        if data.len() < N_ACTIONS || data[..N_ACTIONS].iter().any(|v| !v.is_finite()) {
            return Err(PolicyError::Run(format!(
                "model `{}` produced unusable Q-values {:?}",
                self.name,
                &data[..data.len().min(N_ACTIONS)]
            )));
        }
        let q = std::array::from_fn(|i| data[i]);
        let acts = match (&self.inner, detail) {
            (Some(inner), true) => Some(Activations {
                h1: read("h1")?,
                h2: read("h2")?,
                value: if inner.dueling {
                    read("value")?.first().copied()
                } else {
                    None
                },
                advantage: if inner.dueling {
                    Some(read("advantage")?)
                } else {
                    None
                },
                top: Vec::new(),
            }),
            _ => None,
        };
        Ok((q, acts))
    }

    /// The strongest connections from `h2` to `action`: `[unit, h2[unit] · weight]`, largest
    /// magnitude first, at most `n`.
    pub fn strongest(&self, h2: &[f32], action: usize, n: usize) -> Vec<(u32, f32)> {
        let Some((rows, cols, w)) = &self.action_weights else {
            return Vec::new();
        };
        if action >= *rows || h2.len() != *cols {
            return Vec::new();
        }
        let row = &w[action * cols..(action + 1) * cols];
        let mut c: Vec<(u32, f32)> = h2
            .iter()
            .zip(row)
            .enumerate()
            .map(|(i, (h, w))| (i as u32, h * w))
            .collect();
        c.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
        c.truncate(n);
        c
    }
}
