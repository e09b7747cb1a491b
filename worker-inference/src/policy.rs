//! The trained agent: an ONNX model run with ONNX Runtime (`ort`, loaded dynamically).
//!
//! One intra-op and one inter-op thread, spinning disabled: hundreds of idle workers must cost no
//! CPU, and a batch-1 forward of these networks takes microseconds anyway.

use hamlet_env::{N_ACTIONS, OBS_DIM};
use hamlet_onnx::catalog::{self, CatalogError};
use ipc_proto::browser::ErrorCode;
use ort::session::Session;
use ort::value::TensorRef;
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
}

fn tensor_dims(o: &ort::value::Outlet) -> Option<Vec<i64>> {
    o.dtype()
        .tensor_shape()
        .map(|s| s.iter().copied().collect())
}

impl Policy {
    /// Loads `name` from the models directory and checks it fits the world (72 in, 5 out).
    pub fn load(rt: &Runtime, models_dir: &Path, name: &str) -> Result<Self, PolicyError> {
        let path = catalog::resolve(models_dir, name)?;
        let invalid = |reason: String| PolicyError::Invalid {
            name: name.to_owned(),
            reason,
        };
        let session = Session::builder(&rt.env)
            .and_then(|b| b.with_intra_threads(1).map_err(Into::into))
            .and_then(|b| b.with_inter_threads(1).map_err(Into::into))
            .and_then(|b| b.with_intra_op_spinning(false).map_err(Into::into))
            .and_then(|b| b.with_inter_op_spinning(false).map_err(Into::into))
            .and_then(|mut b| b.commit_from_file(&path))
            .map_err(|e| invalid(e.to_string()))?;
        let (ins, outs) = (session.inputs(), session.outputs());
        if ins.len() != 1 || outs.len() != 1 {
            return Err(invalid(format!(
                "it has {} inputs and {} outputs, expected 1 and 1",
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
        let output = outs[0].name().to_owned();
        Ok(Policy {
            name: name.to_owned(),
            session,
            output,
        })
    }

    /// Q-values for one observation.
    pub fn q_values(&mut self, obs: &[f32; OBS_DIM]) -> Result<[f32; N_ACTIONS], PolicyError> {
        let run = |e: ort::Error| PolicyError::Run(e.to_string());
        let input = TensorRef::from_array_view(([1usize, OBS_DIM], &obs[..])).map_err(run)?;
        let outputs = self.session.run(ort::inputs![input]).map_err(run)?;
        let value = outputs
            .get(&self.output)
            .ok_or_else(|| PolicyError::Run("model produced no output".into()))?;
        let (_, data) = value.try_extract_tensor::<f32>().map_err(run)?;
        if data.len() < N_ACTIONS || data[..N_ACTIONS].iter().any(|v| !v.is_finite()) {
            return Err(PolicyError::Run(format!(
                "model `{}` produced unusable Q-values {:?}",
                self.name,
                &data[..data.len().min(N_ACTIONS)]
            )));
        }
        Ok(std::array::from_fn(|i| data[i]))
    }
}
