//! A small neural-network core: dense layers on `matrixmultiply`'s sgemm, ReLU, the `qnetwork` and
//! `dueling` architectures of world.md, backward passes, gradient-norm clipping and Adam.
//!
//! All layers of a network live in one flat `Vec<Linear>`; an architecture is a list of
//! [`Segment`]s over it, so Adam, clipping, target copies and export just walk the vector.

use ipc_proto::training::Network;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// `C[m,n] = A[m,k]·B[k,n] + beta·C`, each matrix given as a slice with (row, column) strides.
///
/// Every slice is checked to hold every element its shape and strides address before sgemm runs, so
/// a wrong size (a bug, or a corrupt checkpoint that slipped past validation) panics instead of
/// reading or writing out of bounds. The checks cost nothing next to the multiplication.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    (m, k, n): (usize, usize, usize),
    a: &[f32],
    a_strides: (usize, usize),
    b: &[f32],
    b_strides: (usize, usize),
    beta: f32,
    c: &mut [f32],
    c_strides: (usize, usize),
) {
    assert!(fits(a.len(), m, k, a_strides), "gemm: A is too short");
    assert!(fits(b.len(), k, n, b_strides), "gemm: B is too short");
    assert!(fits(c.len(), m, n, c_strides), "gemm: C is too short");
    let st = |s: usize| isize::try_from(s).expect("stride fits isize");
    // SAFETY: the three asserts above guarantee that every element sgemm reads (A: m×k, B: k×n) or
    // writes (C: m×n) at the given strides lies inside its slice; `c` is borrowed mutably, so it
    // cannot alias `a` or `b`.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            st(a_strides.0),
            st(a_strides.1),
            b.as_ptr(),
            st(b_strides.0),
            st(b_strides.1),
            beta,
            c.as_mut_ptr(),
            st(c_strides.0),
            st(c_strides.1),
        );
    }
}

/// Does a slice of `len` elements hold a `rows`×`cols` matrix at strides `(rs, cs)`?
fn fits(len: usize, rows: usize, cols: usize, (rs, cs): (usize, usize)) -> bool {
    if rows == 0 || cols == 0 {
        return true;
    }
    let last = (rows - 1)
        .checked_mul(rs)
        .and_then(|r| (cols - 1).checked_mul(cs).and_then(|c| r.checked_add(c)));
    last.is_some_and(|i| i < len)
}

/// A dense layer. Fields are private so that its weights always have the shape it says it has:
/// values may be changed through slices, sizes never.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Linear {
    inputs: usize,
    outputs: usize,
    /// Row-major `[outputs, inputs]` (PyTorch's and ONNX Gemm(transB=1)'s layout).
    w: Vec<f32>,
    b: Vec<f32>,
}

impl Linear {
    /// PyTorch's default init: U(−1/√in, 1/√in) for weights and biases.
    pub fn new(inputs: usize, outputs: usize, rng: &mut impl Rng) -> Self {
        let k = 1.0 / (inputs as f32).sqrt();
        Linear {
            inputs,
            outputs,
            w: (0..inputs * outputs)
                .map(|_| rng.random_range(-k..k))
                .collect(),
            b: (0..outputs).map(|_| rng.random_range(-k..k)).collect(),
        }
    }

    pub fn inputs(&self) -> usize {
        self.inputs
    }
    pub fn outputs(&self) -> usize {
        self.outputs
    }
    /// Weights, row-major `[outputs, inputs]`.
    pub fn w(&self) -> &[f32] {
        &self.w
    }
    pub fn w_mut(&mut self) -> &mut [f32] {
        &mut self.w
    }
    pub fn b(&self) -> &[f32] {
        &self.b
    }
    pub fn b_mut(&mut self) -> &mut [f32] {
        &mut self.b
    }

    /// True when the weight and bias vectors have the sizes the layer's shape says.
    fn is_consistent(&self) -> bool {
        self.w.len() == self.inputs * self.outputs && self.b.len() == self.outputs
    }

    /// `y[batch, out] = x[batch, in] · Wᵀ + b`, through a ReLU when `relu`.
    fn forward(&self, x: &[f32], batch: usize, y: &mut Vec<f32>, relu: bool) {
        assert_eq!(x.len(), batch * self.inputs, "layer input size");
        // Every element is overwritten (beta 0): only the length needs setting.
        y.resize(batch * self.outputs, 0.0);
        let (i, o) = (self.inputs, self.outputs);
        gemm((batch, i, o), x, (i, 1), &self.w, (1, i), 0.0, y, (o, 1));
        // The bias in the same pass as the activation (one pass over the output instead of two).
        for row in y.chunks_exact_mut(o) {
            for (v, b) in row.iter_mut().zip(&self.b) {
                let z = *v + b;
                *v = if relu { z.max(0.0) } else { z };
            }
        }
    }
}

/// A chain of layers with ReLU between them (and after the last one if `relu_last`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub start: usize,
    pub end: usize,
    pub relu_last: bool,
}

impl Segment {
    fn range(&self) -> Range<usize> {
        self.start..self.end
    }
    fn relu(&self, i: usize) -> bool {
        i + 1 < self.end || self.relu_last
    }
}

pub const OBS: usize = hamlet_env::OBS_DIM;
pub const ACTIONS: usize = hamlet_env::N_ACTIONS;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QNet {
    arch: Network,
    layers: Vec<Linear>,
}

/// A network read from outside (a checkpoint) whose layers do not have its architecture's shapes.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("network does not have the {arch} shapes: {reason}")]
pub struct ShapeError {
    pub arch: &'static str,
    pub reason: String,
}

/// Saved activations of a forward pass, reused between calls to avoid allocation.
#[derive(Debug, Default, Clone)]
pub struct Cache {
    /// Post-activation output of each layer.
    outs: Vec<Vec<f32>>,
    /// Q-values `[batch, ACTIONS]`.
    pub q: Vec<f32>,
    batch: usize,
    /// Buffers of the backward pass, kept between calls so that it allocates nothing.
    scratch: Vec<f32>,
    grad_out: Vec<f32>,
    grad_value: Vec<f32>,
}

/// Gradients, shaped like the layers: `(weights, bias)` per layer.
#[derive(Debug, Clone)]
pub struct Grads {
    layers: Vec<(Vec<f32>, Vec<f32>)>,
    /// Σ of the squared gradients of each layer, written by `backward` as it goes.
    squares: Vec<f32>,
}

/// `(inputs, outputs)` of each layer of an architecture (world.md).
fn layer_dims(arch: Network) -> &'static [(usize, usize)] {
    match arch {
        Network::Qnetwork => &[(OBS, 128), (128, 128), (128, ACTIONS)],
        Network::Dueling => &[
            (OBS, 256),
            (256, 256),
            (256, 128),
            (128, 128),
            (128, 1),
            (128, 128),
            (128, ACTIONS),
        ],
    }
}

impl QNet {
    pub fn new(arch: Network, rng: &mut impl Rng) -> Self {
        QNet {
            arch,
            layers: layer_dims(arch)
                .iter()
                .map(|&(i, o)| Linear::new(i, o, rng))
                .collect(),
        }
    }

    pub fn arch(&self) -> Network {
        self.arch
    }

    pub fn layers(&self) -> &[Linear] {
        &self.layers
    }

    /// One layer, for changing its values (never its shape).
    pub fn layer_mut(&mut self, i: usize) -> &mut Linear {
        &mut self.layers[i]
    }

    /// Checks that every layer has the shape its architecture prescribes (for networks that come
    /// from outside, such as a checkpoint file).
    pub fn validate(&self) -> Result<(), ShapeError> {
        let err = |reason: String| ShapeError {
            arch: self.arch.as_str(),
            reason,
        };
        let dims = layer_dims(self.arch);
        if self.layers.len() != dims.len() {
            return Err(err(format!(
                "{} layers, expected {}",
                self.layers.len(),
                dims.len()
            )));
        }
        for (i, (l, &(inp, out))) in self.layers.iter().zip(dims).enumerate() {
            if (l.inputs, l.outputs) != (inp, out) || !l.is_consistent() {
                return Err(err(format!(
                    "layer {i} is {}→{} with {} weights and {} biases, expected {inp}→{out}",
                    l.inputs,
                    l.outputs,
                    l.w.len(),
                    l.b.len()
                )));
            }
        }
        Ok(())
    }

    /// The architecture's segments (constants: no allocation per pass).
    pub fn segments(&self) -> &'static [Segment] {
        const fn seg(start: usize, end: usize, relu_last: bool) -> Segment {
            Segment {
                start,
                end,
                relu_last,
            }
        }
        const QNETWORK: [Segment; 1] = [seg(0, 3, false)];
        // The shared trunk (ReLU after its last layer), the value stream, the advantage stream.
        const DUELING: [Segment; 3] = [seg(0, 3, true), seg(3, 5, false), seg(5, 7, false)];
        match self.arch {
            Network::Qnetwork => &QNETWORK,
            Network::Dueling => &DUELING,
        }
    }

    pub fn zero_grads(&self) -> Grads {
        Grads {
            layers: self
                .layers
                .iter()
                .map(|l| (vec![0.0; l.w.len()], vec![0.0; l.b.len()]))
                .collect(),
            squares: vec![0.0; self.layers.len()],
        }
    }

    pub fn param_count(&self) -> usize {
        self.layers.iter().map(|l| l.w.len() + l.b.len()).sum()
    }

    /// Runs one segment on its input `x`, leaving each layer's output in `cache.outs`.
    fn run_segment(&self, seg: Segment, x: &[f32], cache: &mut Cache) {
        for i in seg.range() {
            let mut out = std::mem::take(&mut cache.outs[i]);
            let input = if i == seg.start {
                x
            } else {
                &cache.outs[i - 1]
            };
            self.layers[i].forward(input, cache.batch, &mut out, seg.relu(i));
            cache.outs[i] = out;
        }
    }

    /// Forward pass for `batch` observations (`x.len() == batch * OBS`); Q-values in `cache.q`.
    /// The cache keeps every layer's output, not `x`: [`QNet::backward`] is given `x` again.
    pub fn forward<'c>(&self, x: &[f32], batch: usize, cache: &'c mut Cache) -> &'c [f32] {
        cache.batch = batch;
        cache.outs.resize(self.layers.len(), Vec::new());
        let segs = self.segments();
        self.run_segment(segs[0], x, cache);
        cache.q.clear();
        match self.arch {
            Network::Qnetwork => cache.q.extend_from_slice(&cache.outs[2]),
            Network::Dueling => {
                // The value and advantage streams both read the trunk's features.
                let feats = std::mem::take(&mut cache.outs[2]);
                self.run_segment(segs[1], &feats, cache);
                self.run_segment(segs[2], &feats, cache);
                cache.outs[2] = feats;
                for b in 0..batch {
                    let v = cache.outs[4][b];
                    let a = &cache.outs[6][b * ACTIONS..(b + 1) * ACTIONS];
                    let mean = a.iter().sum::<f32>() / ACTIONS as f32;
                    cache.q.extend(a.iter().map(|ai| v + ai - mean));
                }
            }
        }
        &cache.q
    }

    /// Backward through one segment. `d` is the gradient w.r.t. the segment's output; returns the
    /// gradient w.r.t. its input when `want_dx` (otherwise the gradient w.r.t. the first layer's output).
    fn back_segment(
        &self,
        seg: Segment,
        seg_input: &[f32],
        cache: &mut Cache,
        mut d: Vec<f32>,
        grads: &mut Grads,
        want_dx: bool,
    ) -> Vec<f32> {
        let batch = cache.batch;
        for i in seg.range().rev() {
            let l = &self.layers[i];
            if seg.relu(i) {
                // A select, not a conditional store: the compiler turns it into vector code.
                for (g, y) in d.iter_mut().zip(&cache.outs[i]) {
                    *g = if *y > 0.0 { *g } else { 0.0 };
                }
            }
            let x: &[f32] = if i == seg.start {
                seg_input
            } else {
                &cache.outs[i - 1]
            };
            let (gw, gb) = &mut grads.layers[i];
            let (inp, out) = (l.inputs, l.outputs);
            // dW[out,in] = dYᵀ[out,batch] · X[batch,in] (overwritten: each layer is visited once)
            gemm(
                (out, batch, inp),
                &d,
                (1, out),
                x,
                (inp, 1),
                0.0,
                gw,
                (inp, 1),
            );
            gb.copy_from_slice(&d[..out]);
            for row in d[out..batch * out].chunks_exact(out) {
                for (g, dv) in gb.iter_mut().zip(row) {
                    *g += dv;
                }
            }
            // Summed now, while the gradients are in cache, for the norm `backward` returns.
            grads.squares[i] = sum_of_squares(gw) + sum_of_squares(gb);
            if i > seg.start || want_dx {
                // Every element is overwritten (beta 0): only the length needs setting.
                let mut dx = std::mem::take(&mut cache.scratch);
                dx.resize(batch * inp, 0.0);
                // dX[batch,in] = dY[batch,out] · W[out,in]
                gemm(
                    (batch, out, inp),
                    &d,
                    (out, 1),
                    &l.w,
                    (inp, 1),
                    0.0,
                    &mut dx,
                    (inp, 1),
                );
                cache.scratch = d;
                d = dx;
            }
        }
        d
    }

    /// Writes into `grads` (overwriting them) the gradient of a loss whose gradient w.r.t. the
    /// Q-values of the last forward pass is `dq` (`[batch, ACTIONS]`); `x` is that pass's input
    /// (only its first `batch` rows are read, see [`Cache::keep_rows`]). Returns their global L2
    /// norm — the same number as [`Grads::norm`], added while each layer's gradients were in cache.
    pub fn backward(&self, x: &[f32], cache: &mut Cache, dq: &[f32], grads: &mut Grads) -> f32 {
        let batch = cache.batch;
        assert!(
            x.len() >= batch * OBS,
            "backward: x holds fewer rows than the forward pass"
        );
        let x = &x[..batch * OBS];
        let segs = self.segments();
        // `back_segment` works on its gradient in place and hands buffers on, so `d` is one of
        // the cache's buffers rather than `dq` itself.
        let mut d = std::mem::take(&mut cache.grad_out);
        d.clear();
        match self.arch {
            Network::Qnetwork => {
                d.extend_from_slice(dq);
                d = self.back_segment(segs[0], x, cache, d, grads, false);
            }
            Network::Dueling => {
                // Q = V + A − mean(A): dA = dQ − mean(dQ) (into `d`), dV = Σ dQ (into `dv`).
                let mut dv = std::mem::take(&mut cache.grad_value);
                dv.clear();
                for b in 0..batch {
                    let row = &dq[b * ACTIONS..(b + 1) * ACTIONS];
                    let s: f32 = row.iter().sum();
                    let m = s / ACTIONS as f32;
                    d.extend(row.iter().map(|g| g - m));
                    dv.push(s);
                }
                let feats = std::mem::take(&mut cache.outs[2]);
                let d_from_v = self.back_segment(segs[1], &feats, cache, dv, grads, true);
                d = self.back_segment(segs[2], &feats, cache, d, grads, true);
                for (a, b) in d.iter_mut().zip(&d_from_v) {
                    *a += b;
                }
                cache.grad_value = d_from_v;
                cache.outs[2] = feats;
                d = self.back_segment(segs[0], x, cache, d, grads, false);
            }
        }
        // Every buffer goes back to the cache for the next call.
        cache.grad_out = d;
        // Layer by layer in the order `Grads::norm` adds them: the same bits.
        grads.squares.iter().sum::<f32>().sqrt()
    }
}

impl Cache {
    /// Makes the next [`QNet::backward`] use only the first `rows` rows of the last forward pass
    /// (activations are stored row by row, so those rows are a prefix of every array). A trainer
    /// evaluates the states and the next states in one pass but learns only from the states.
    pub fn keep_rows(&mut self, rows: usize) {
        assert!(
            rows <= self.batch,
            "keep_rows: more rows than the forward pass had"
        );
        self.batch = rows;
    }

    /// Which units of the last forward pass were active (> 0), layer by layer. Gradient checks use
    /// it to recognise perturbations that cross a ReLU kink.
    pub fn activation_pattern(&self) -> Vec<bool> {
        self.outs.iter().flatten().map(|v| *v > 0.0).collect()
    }
}

impl Grads {
    /// `(weights, bias)` gradients of layer `i`.
    pub fn layer(&self, i: usize) -> (&[f32], &[f32]) {
        let (w, b) = &self.layers[i];
        (w, b)
    }

    pub fn layer_mut(&mut self, i: usize) -> (&mut [f32], &mut [f32]) {
        let (w, b) = &mut self.layers[i];
        (w, b)
    }

    pub fn norm(&self) -> f32 {
        self.layers
            .iter()
            .map(|(w, b)| sum_of_squares(w) + sum_of_squares(b))
            .sum::<f32>()
            .sqrt()
    }

    /// The factor that brings a global L2 norm `norm` to at most `max` (PyTorch's
    /// `clip_grad_norm_`): `max / (norm + 1e-6)` when that is below 1, else 1. [`Adam::step`]
    /// applies it while it reads the gradients, which saves a pass over them.
    pub fn clip_coef(norm: f32, max: f32) -> f32 {
        (max / (norm + 1e-6)).min(1.0)
    }

    /// Scales gradients so their global L2 norm is at most `max`. Returns the norm before clipping.
    pub fn clip(&mut self, max: f32) -> f32 {
        let n = self.norm();
        let coef = Self::clip_coef(n, max);
        if coef < 1.0 {
            for (w, b) in &mut self.layers {
                w.iter_mut().chain(b.iter_mut()).for_each(|v| *v *= coef);
            }
        }
        n
    }
}

/// Σ x² in 16 independent lanes added at the end: a fixed order (so the same result on every
/// machine) that the compiler can vectorise — a plain `fold` must add one element at a time.
fn sum_of_squares(x: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut acc = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v * v;
        }
    }
    acc.iter().sum::<f32>() + tail.iter().map(|v| v * v).sum::<f32>()
}

/// Adam (β₁ 0.9, β₂ 0.999, ε 1e-8), with bias correction, as `torch.optim.Adam`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Adam {
    pub lr: f32,
    pub t: u64,
    m: Vec<(Vec<f32>, Vec<f32>)>,
    v: Vec<(Vec<f32>, Vec<f32>)>,
}

/// Moments decay geometrically towards zero for parameters whose gradient stays zero (weights of
/// inputs that are 0). Below `f32::MIN_POSITIVE` they would become subnormal numbers, on which
/// x86 arithmetic takes a slow microcode path (~100 cycles instead of ~4): Adam's time grew several
/// fold within a run. Such a moment is zero for every practical purpose, so it is set to zero.
#[inline(always)]
fn flush_tiny(x: f32) -> f32 {
    if x.abs() < f32::MIN_POSITIVE {
        0.0
    } else {
        x
    }
}

impl Adam {
    pub fn new(net: &QNet, lr: f32) -> Self {
        let z = net.zero_grads().layers;
        Adam {
            lr,
            t: 0,
            m: z.clone(),
            v: z,
        }
    }

    /// Checks that the moment estimates have the network's shapes (for state read from a file).
    pub fn validate(&self, net: &QNet) -> Result<(), ShapeError> {
        let shapes_match = |moments: &Vec<(Vec<f32>, Vec<f32>)>| {
            moments.len() == net.layers.len()
                && moments
                    .iter()
                    .zip(&net.layers)
                    .all(|((w, b), l)| w.len() == l.w.len() && b.len() == l.b.len())
        };
        if shapes_match(&self.m) && shapes_match(&self.v) {
            Ok(())
        } else {
            Err(ShapeError {
                arch: net.arch.as_str(),
                reason: "optimiser state does not match the network".into(),
            })
        }
    }

    /// One Adam step with the gradients `g` scaled by `grad_scale` (the clipping factor of
    /// [`Grads::clip_coef`]; 1 for none).
    pub fn step(&mut self, net: &mut QNet, g: &Grads, grad_scale: f32) {
        const B1: f32 = 0.9;
        const B2: f32 = 0.999;
        self.t += 1;
        let bc1 = 1.0 - B1.powi(self.t.min(i32::MAX as u64) as i32);
        let bc2 = 1.0 - B2.powi(self.t.min(i32::MAX as u64) as i32);
        let k = AdamStep {
            step: self.lr / bc1,
            inv_bc2_sqrt: 1.0 / bc2.sqrt(),
            grad_scale,
        };
        for (i, layer) in net.layers.iter_mut().enumerate() {
            let (gw, gb) = &g.layers[i];
            let (mw, mb) = &mut self.m[i];
            let (vw, vb) = &mut self.v[i];
            adam_update(&mut layer.w, gw, mw, vw, k);
            adam_update(&mut layer.b, gb, mb, vb, k);
        }
    }
}

/// The per-step constants of one Adam update.
#[derive(Debug, Clone, Copy)]
struct AdamStep {
    /// lr / (1 − β₁ᵗ)
    step: f32,
    /// 1 / √(1 − β₂ᵗ)
    inv_bc2_sqrt: f32,
    grad_scale: f32,
}

/// Updates parameters `p` with gradients `g` and moments `m`, `v` (equal lengths), using the
/// widest vector instructions this CPU has. Every lane computes the same IEEE operations (Rust
/// never fuses a multiply and an add by itself), so the result is bit-identical on every machine.
fn adam_update(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], k: AdamStep) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: `adam_update_avx512` only needs AVX-512F, which the CPU reported just above.
            return unsafe { adam_update_avx512(p, g, m, v, k) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: `adam_update_avx2` only needs AVX2, which the CPU reported just above.
            return unsafe { adam_update_avx2(p, g, m, v, k) };
        }
    }
    adam_update_portable(p, g, m, v, k)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn adam_update_avx512(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], k: AdamStep) {
    adam_update_portable(p, g, m, v, k)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn adam_update_avx2(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], k: AdamStep) {
    adam_update_portable(p, g, m, v, k)
}

/// The formula, written once (inlined into each instruction-set variant above), as
/// `torch.optim.Adam`'s: p −= step·m / (√v / √bc2 + ε), with the division by √bc2 done as a
/// multiplication by its inverse (one division per parameter instead of two; the last bit may
/// differ from PyTorch's). Zipped iterators have no bounds checks, so the loop vectorises.
#[inline(always)]
fn adam_update_portable(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], k: AdamStep) {
    const B1: f32 = 0.9;
    const B2: f32 = 0.999;
    const EPS: f32 = 1e-8;
    for (((p, g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        let g = g * k.grad_scale;
        *m = flush_tiny(B1 * *m + (1.0 - B1) * g);
        *v = flush_tiny(B2 * *v + (1.0 - B2) * g * g);
        *p -= k.step * *m / (v.sqrt() * k.inv_bc2_sqrt + EPS);
    }
}

impl QNet {
    /// The network as an ONNX description.
    pub fn to_onnx_desc(&self) -> hamlet_onnx::NetworkDesc {
        let dense = |seg: Segment| -> Vec<hamlet_onnx::Dense> {
            seg.range()
                .map(|i| {
                    let l = &self.layers[i];
                    hamlet_onnx::Dense {
                        inputs: l.inputs,
                        outputs: l.outputs,
                        weight: l.w.clone(),
                        bias: l.b.clone(),
                        relu: seg.relu(i),
                    }
                })
                .collect()
        };
        let s = self.segments();
        match self.arch {
            Network::Qnetwork => hamlet_onnx::NetworkDesc::Mlp(dense(s[0])),
            Network::Dueling => hamlet_onnx::NetworkDesc::Dueling {
                trunk: dense(s[0]),
                value: dense(s[1]),
                advantage: dense(s[2]),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn fits_checks_every_addressed_element() {
        // 2×3 row-major needs 6 elements; transposed strides address the same last element.
        assert!(fits(6, 2, 3, (3, 1)));
        assert!(!fits(5, 2, 3, (3, 1)));
        assert!(fits(6, 3, 2, (1, 3)));
        assert!(!fits(5, 3, 2, (1, 3)));
        assert!(fits(0, 0, 3, (3, 1)), "an empty matrix needs nothing");
        assert!(
            !fits(usize::MAX, 2, 2, (usize::MAX, 1)),
            "overflow is not a fit"
        );
    }

    #[test]
    #[should_panic(expected = "gemm: C is too short")]
    fn a_short_output_slice_panics_instead_of_writing_out_of_bounds() {
        let (a, b, mut c) = (vec![1.0; 6], vec![1.0; 6], vec![0.0; 3]);
        gemm((2, 3, 2), &a, (3, 1), &b, (2, 1), 0.0, &mut c, (2, 1));
    }

    #[test]
    #[should_panic(expected = "layer input size")]
    fn a_short_input_panics_instead_of_reading_out_of_bounds() {
        let mut rng = rand_pcg::Pcg64::seed_from_u64(1);
        let net = QNet::new(Network::Qnetwork, &mut rng);
        net.forward(&[0.0; OBS - 1], 1, &mut Cache::default());
    }
}
