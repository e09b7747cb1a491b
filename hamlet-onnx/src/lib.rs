//! ONNX without `protoc`: the messages Hamlet writes and reads, declared with `prost` derive.
//! `oneof`s are plain optional fields, which is identical on the wire.
//!
//! - [`export`] writes a Q-network ([`NetworkDesc`]) as an opset-17 model: input `obs` [batch, 72],
//!   output `q_values` [batch, 5], weights as little-endian f32 `raw_data`.
//! - [`inspect`] reads a model's metadata and its input/output shapes (for listings and checks).

pub mod catalog;
mod proto;
pub use proto::*;

use std::collections::BTreeMap;
use std::path::Path;

pub const OPSET: i64 = 17;
pub const IR_VERSION: i64 = 8;
pub const INPUT_NAME: &str = "obs";
pub const OUTPUT_NAME: &str = "q_values";

/// One fully connected layer: `y = x · Wᵀ + b`, optionally followed by ReLU.
#[derive(Debug, Clone)]
pub struct Dense {
    pub inputs: usize,
    pub outputs: usize,
    /// Row-major `[outputs, inputs]`.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub relu: bool,
}

/// The architectures Hamlet trains.
#[derive(Debug, Clone)]
pub enum NetworkDesc {
    /// A chain of dense layers.
    Mlp(Vec<Dense>),
    /// Q = V + A − mean(A), with a shared trunk.
    Dueling {
        trunk: Vec<Dense>,
        value: Vec<Dense>,
        advantage: Vec<Dense>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("not an ONNX model: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("malformed network description: {0}")]
    Shape(String),
}

struct GraphBuilder {
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
}

impl GraphBuilder {
    /// Appends a chain of dense layers; returns each layer's output (after its ReLU, if any).
    fn dense_chain(
        &mut self,
        prefix: &str,
        layers: &[Dense],
        mut x: String,
    ) -> Result<Vec<String>, OnnxError> {
        let mut outs = Vec::with_capacity(layers.len());
        for (i, l) in layers.iter().enumerate() {
            if l.weight.len() != l.inputs * l.outputs || l.bias.len() != l.outputs {
                return Err(OnnxError::Shape(format!(
                    "{prefix}{i}: weight/bias sizes do not match"
                )));
            }
            let w = format!("{prefix}{i}.weight");
            let b = format!("{prefix}{i}.bias");
            self.inits.push(f32_tensor(
                &w,
                &[l.outputs as i64, l.inputs as i64],
                &l.weight,
            ));
            self.inits
                .push(f32_tensor(&b, &[l.outputs as i64], &l.bias));
            let y = format!("{prefix}{i}.gemm");
            self.nodes.push(NodeProto {
                input: vec![x, w, b],
                output: vec![y.clone()],
                name: format!("{prefix}{i}.Gemm"),
                op_type: "Gemm".into(),
                attribute: vec![int_attr("transB", 1)],
                ..Default::default()
            });
            x = y;
            if l.relu {
                let r = format!("{prefix}{i}.relu");
                self.nodes
                    .push(node("Relu", &format!("{prefix}{i}.Relu"), &[&x], &r));
                x = r;
            }
            outs.push(x.clone());
        }
        Ok(outs)
    }

    /// Exposes an inner tensor as a named graph output.
    fn expose(&mut self, inner: &str, name: &str, width: usize, outputs: &mut Vec<ValueInfoProto>) {
        self.nodes
            .push(node("Identity", &format!("{name}.out"), &[inner], name));
        outputs.push(io(name, width as i64));
    }
}

fn node(op: &str, name: &str, inputs: &[&str], output: &str) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.to_string()],
        name: name.into(),
        op_type: op.into(),
        ..Default::default()
    }
}

fn int_attr(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INT,
        i: v,
        ..Default::default()
    }
}

fn f32_tensor(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    let mut raw = Vec::with_capacity(data.len() * 4);
    for v in data {
        raw.extend_from_slice(&v.to_le_bytes());
    }
    TensorProto {
        dims: dims.to_vec(),
        data_type: data_type::FLOAT,
        name: name.into(),
        raw_data: raw,
        ..Default::default()
    }
}

fn io(name: &str, width: i64) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(type_proto::Tensor {
                elem_type: data_type::FLOAT,
                shape: Some(TensorShapeProto {
                    dim: vec![
                        tensor_shape_proto::Dimension {
                            dim_value: None,
                            dim_param: Some("batch".into()),
                        },
                        tensor_shape_proto::Dimension {
                            dim_value: Some(width),
                            dim_param: None,
                        },
                    ],
                }),
            }),
        }),
        ..Default::default()
    }
}

/// Serialises a network as an ONNX model with the given `metadata_props`.
pub fn export(
    net: &NetworkDesc,
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>, OnnxError> {
    let mut g = GraphBuilder {
        nodes: Vec::new(),
        inits: Vec::new(),
    };
    // `q_values` stays the first output, so other tools keep working; the hidden layers follow
    // for the UI's "inside the agent" view (h1, h2; for dueling also value and advantage).
    let mut extra = Vec::new();
    let (obs_dim, n_actions) = match net {
        NetworkDesc::Mlp(layers) => {
            let outs = g.dense_chain("fc", layers, INPUT_NAME.into())?;
            let out = outs.last().cloned().unwrap_or_default();
            g.nodes
                .push(node("Identity", "output", &[&out], OUTPUT_NAME));
            if layers.len() >= 3 {
                let last_hidden = layers.len() - 2;
                g.expose(&outs[0], "h1", layers[0].outputs, &mut extra);
                g.expose(
                    &outs[last_hidden],
                    "h2",
                    layers[last_hidden].outputs,
                    &mut extra,
                );
            }
            (first_in(layers)?, last_out(layers)?)
        }
        NetworkDesc::Dueling {
            trunk,
            value,
            advantage,
        } => {
            let f = g.dense_chain("features", trunk, INPUT_NAME.into())?;
            let f = f.last().cloned().unwrap_or_default();
            let v = g.dense_chain("value", value, f.clone())?;
            let a = g.dense_chain("advantage", advantage, f.clone())?;
            let (v_out, a_out) = (
                v.last().cloned().unwrap_or_default(),
                a.last().cloned().unwrap_or_default(),
            );
            let mut mean = node("ReduceMean", "advantage.mean", &[&a_out], "advantage.mean");
            mean.attribute = vec![
                AttributeProto {
                    name: "axes".into(),
                    r#type: attribute_type::INTS,
                    ints: vec![1],
                    ..Default::default()
                },
                int_attr("keepdims", 1),
            ];
            g.nodes.push(mean);
            g.nodes.push(node(
                "Sub",
                "advantage.centered",
                &[&a_out, "advantage.mean"],
                "advantage.centered",
            ));
            g.nodes.push(node(
                "Add",
                "q",
                &[&v_out, "advantage.centered"],
                OUTPUT_NAME,
            ));
            if last_out(value)? != 1 {
                return Err(OnnxError::Shape("value head must end in one output".into()));
            }
            if advantage.len() >= 2 {
                g.expose(&f, "h1", last_out(trunk)?, &mut extra);
                g.expose(&a[0], "h2", advantage[0].outputs, &mut extra);
            }
            g.expose(&v_out, "value", 1, &mut extra);
            g.expose(&a_out, "advantage", last_out(advantage)?, &mut extra);
            (first_in(trunk)?, last_out(advantage)?)
        }
    };
    let model = ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        producer_name: "hamlet".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(GraphProto {
            node: g.nodes,
            name: "hamlet_q_network".into(),
            initializer: g.inits,
            input: vec![io(INPUT_NAME, obs_dim as i64)],
            output: std::iter::once(io(OUTPUT_NAME, n_actions as i64))
                .chain(extra)
                .collect(),
            ..Default::default()
        }),
        metadata_props: metadata
            .iter()
            .map(|(k, v)| StringStringEntryProto {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
        ..Default::default()
    };
    Ok(prost::Message::encode_to_vec(&model))
}

fn first_in(l: &[Dense]) -> Result<usize, OnnxError> {
    l.first()
        .map(|d| d.inputs)
        .ok_or_else(|| OnnxError::Shape("no layers".into()))
}
fn last_out(l: &[Dense]) -> Result<usize, OnnxError> {
    l.last()
        .map(|d| d.outputs)
        .ok_or_else(|| OnnxError::Shape("no layers".into()))
}

/// Writes bytes to `path` atomically: a temp file in the same directory, fsync, rename. A reader
/// (or a crash) never sees a half-written file under the final name.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".tmp-{}-{}-{name}", std::process::id(), unique()));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// What a model file says about itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelInfo {
    pub metadata: BTreeMap<String, String>,
    /// Input name and dims (`-1` for symbolic ones).
    pub inputs: Vec<(String, Vec<i64>)>,
    pub outputs: Vec<(String, Vec<i64>)>,
}

impl ModelInfo {
    /// Checks the model fits the world: one input `[batch, obs_dim]`, a first output `[batch, n_actions]`.
    pub fn check_shapes(&self, obs_dim: i64, n_actions: i64) -> Result<(), String> {
        let fits = |v: &[(String, Vec<i64>)], w: i64, what: &str| -> Result<(), String> {
            match v {
                [(name, dims)] if dims.len() == 2 && dims[1] == w => {
                    let _ = name;
                    Ok(())
                }
                [(name, dims)] => Err(format!(
                    "{what} `{name}` has shape {dims:?}, expected [batch, {w}]"
                )),
                _ => Err(format!("model has {} {what}s, expected 1", v.len())),
            }
        };
        fits(&self.inputs, obs_dim, "input")?;
        // The first output is the Q-values; further ones (hidden layers) are optional extras.
        fits(
            &self.outputs[..self.outputs.len().min(1)],
            n_actions,
            "output",
        )
    }
}

/// Reads metadata and I/O shapes from serialised model bytes.
pub fn inspect(bytes: &[u8]) -> Result<ModelInfo, OnnxError> {
    let m: ModelProto = prost::Message::decode(bytes)?;
    let dims = |v: &[ValueInfoProto], inits: &[TensorProto]| {
        v.iter()
            // Old exporters list initializers as graph inputs too; they are not real inputs.
            .filter(|vi| !inits.iter().any(|t| t.name == vi.name))
            .map(|vi| {
                let d = vi
                    .r#type
                    .as_ref()
                    .and_then(|t| t.tensor_type.as_ref())
                    .and_then(|t| t.shape.as_ref())
                    .map(|s| s.dim.iter().map(|d| d.dim_value.unwrap_or(-1)).collect())
                    .unwrap_or_default();
                (vi.name.clone(), d)
            })
            .collect()
    };
    let g = m.graph.unwrap_or_default();
    Ok(ModelInfo {
        metadata: m
            .metadata_props
            .into_iter()
            .map(|e| (e.key, e.value))
            .collect(),
        inputs: dims(&g.input, &g.initializer),
        outputs: dims(&g.output, &[]),
    })
}

pub fn inspect_file(path: &Path) -> Result<ModelInfo, OnnxError> {
    inspect(&std::fs::read(path)?)
}

/// The weights from the last hidden layer (`h2`) to the actions, `[n_actions, hidden]` row-major,
/// as our exporter writes them (`fcN.weight` of an MLP, `advantage1.weight` of a dueling head).
/// `None` for models that do not have them.
pub fn action_weights(bytes: &[u8]) -> Option<(usize, usize, Vec<f32>)> {
    let m: ModelProto = prost::Message::decode(bytes).ok()?;
    let g = m.graph?;
    // The Gemm whose output becomes the Q-values (MLP) or the advantages (dueling).
    let last = g.node.iter().rev().find(|n| {
        n.op_type == "Gemm" && (n.name.starts_with("fc") || n.name.starts_with("advantage"))
    })?;
    let w = g
        .initializer
        .iter()
        .find(|t| Some(&t.name) == last.input.get(1))?;
    let [rows, cols] = w.dims[..] else {
        return None;
    };
    let data: Vec<f32> = w
        .raw_data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (data.len() == (rows * cols) as usize).then_some((rows as usize, cols as usize, data))
}

/// Reads back a network this crate exported (initializers `fcN.*`, or `featuresN.*`, `valueN.*`,
/// `advantageN.*`) with its metadata, so it can be written again by the current [`export`] —
/// used to give models exported before the hidden-layer outputs existed their `h1`/`h2` outputs
/// without retraining (`worker-training reexport`). The Q-values are the same function.
pub fn read_network(bytes: &[u8]) -> Result<(NetworkDesc, BTreeMap<String, String>), OnnxError> {
    let m: ModelProto = prost::Message::decode(bytes)?;
    let metadata = m
        .metadata_props
        .iter()
        .map(|e| (e.key.clone(), e.value.clone()))
        .collect();
    let g = m.graph.unwrap_or_default();
    let tensor = |name: &str| -> Option<(Vec<i64>, Vec<f32>)> {
        let t = g.initializer.iter().find(|t| t.name == name)?;
        let data = t
            .raw_data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Some((t.dims.clone(), data))
    };
    // Layers `prefix0`, `prefix1`, … ; all but the last of a chain are followed by a ReLU,
    // unless `relu_last` (the dueling trunk).
    let chain = |prefix: &str, relu_last: bool| -> Result<Vec<Dense>, OnnxError> {
        let mut layers = Vec::new();
        while let Some((dims, weight)) = tensor(&format!("{prefix}{}.weight", layers.len())) {
            let (_, bias) = tensor(&format!("{prefix}{}.bias", layers.len()))
                .ok_or_else(|| OnnxError::Shape(format!("{prefix}: a weight without a bias")))?;
            let [outputs, inputs] = dims[..] else {
                return Err(OnnxError::Shape(format!(
                    "{prefix}: weights are not a matrix"
                )));
            };
            layers.push(Dense {
                inputs: inputs as usize,
                outputs: outputs as usize,
                weight,
                bias,
                relu: true,
            });
        }
        if let Some(last) = layers.last_mut() {
            last.relu = relu_last;
        }
        Ok(layers)
    };
    let mlp = chain("fc", false)?;
    if !mlp.is_empty() {
        return Ok((NetworkDesc::Mlp(mlp), metadata));
    }
    let (trunk, value, advantage) = (
        chain("features", true)?,
        chain("value", false)?,
        chain("advantage", false)?,
    );
    if trunk.is_empty() || value.is_empty() || advantage.is_empty() {
        return Err(OnnxError::Shape("not a network exported by Hamlet".into()));
    }
    Ok((
        NetworkDesc::Dueling {
            trunk,
            value,
            advantage,
        },
        metadata,
    ))
}
