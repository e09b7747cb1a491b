//! Finite-difference gradient checks for every layer of both architectures, and Adam against
//! hand-computed values.

use hamlet_dqn::nn::{Adam, Cache, QNet, ACTIONS, OBS};
use ipc_proto::training::Network;
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64;

/// Loss L = Σ c·Q for fixed random coefficients c, so dL/dQ = c.
fn loss(net: &QNet, x: &[f32], batch: usize, c: &[f32]) -> (f64, Vec<bool>) {
    let mut cache = Cache::default();
    let q = net.forward(x, batch, &mut cache);
    let l = q
        .iter()
        .zip(c)
        .map(|(a, b)| f64::from(*a) * f64::from(*b))
        .sum();
    (l, cache.activation_pattern())
}

fn check(arch: Network, seed: u64) {
    let mut rng = Pcg64::seed_from_u64(seed);
    let net = QNet::new(arch, &mut rng);
    let batch = 3;
    let x: Vec<f32> = (0..batch * OBS)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let c: Vec<f32> = (0..batch * ACTIONS)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let mut cache = Cache::default();
    net.forward(&x, batch, &mut cache);
    let mut grads = net.zero_grads();
    net.backward(&x, &mut cache, &c, &mut grads);

    let eps = 2e-3f32;
    let base_pattern = loss(&net, &x, batch, &c).1;
    let (mut total, mut skipped) = (0, 0);
    for (li, layer) in net.layers().iter().enumerate() {
        // Probe a handful of weights and biases of every layer (all would take minutes).
        let probes_w: Vec<usize> = (0..10)
            .map(|_| rng.random_range(0..layer.w().len()))
            .collect();
        let probes_b: Vec<usize> = (0..4)
            .map(|_| rng.random_range(0..layer.b().len()))
            .collect();
        for (is_bias, idx) in probes_w
            .iter()
            .map(|i| (false, *i))
            .chain(probes_b.iter().map(|i| (true, *i)))
        {
            let mut plus = net.clone();
            let mut minus = net.clone();
            if is_bias {
                plus.layer_mut(li).b_mut()[idx] += eps;
                minus.layer_mut(li).b_mut()[idx] -= eps;
            } else {
                plus.layer_mut(li).w_mut()[idx] += eps;
                minus.layer_mut(li).w_mut()[idx] -= eps;
            }
            let (lp, pp) = loss(&plus, &x, batch, &c);
            let (lm, pm) = loss(&minus, &x, batch, &c);
            total += 1;
            if pp != base_pattern || pm != base_pattern {
                // The perturbation crosses a ReLU kink: finite differences say nothing here.
                skipped += 1;
                continue;
            }
            let numeric = (lp - lm) / (2.0 * f64::from(eps));
            let analytic = f64::from(if is_bias {
                grads.layer(li).1[idx]
            } else {
                grads.layer(li).0[idx]
            });
            assert!(
                (numeric - analytic).abs() <= 1e-3 + 1e-2 * numeric.abs().max(analytic.abs()),
                "{arch:?} layer {li} {} {idx}: numeric {numeric} analytic {analytic}",
                if is_bias { "bias" } else { "weight" }
            );
        }
    }
    assert!(
        skipped * 3 < total,
        "{skipped} of {total} probes sat on kinks"
    );
}

#[test]
fn qnetwork_gradients_match_finite_differences() {
    for seed in [7, 71, 1234] {
        check(Network::Qnetwork, seed);
    }
}

#[test]
fn dueling_gradients_match_finite_differences() {
    for seed in [7, 71, 1234] {
        check(Network::Dueling, seed);
    }
}

#[test]
fn dueling_q_is_value_plus_centered_advantage() {
    let mut rng = Pcg64::seed_from_u64(3);
    let net = QNet::new(Network::Dueling, &mut rng);
    let x: Vec<f32> = (0..OBS).map(|_| rng.random_range(-1.0..1.0)).collect();
    let mut cache = Cache::default();
    let q = net.forward(&x, 1, &mut cache).to_vec();
    // Perturbing the value head's output bias shifts every Q by the same amount.
    let mut n2 = net.clone();
    n2.layer_mut(4).b_mut()[0] += 1.0;
    let q2 = n2.forward(&x, 1, &mut Cache::default()).to_vec();
    for (a, b) in q.iter().zip(&q2) {
        assert!((b - a - 1.0).abs() < 1e-5);
    }
    // Perturbing one advantage bias moves that action by 1 − 1/5 and the others by −1/5.
    let mut n3 = net.clone();
    n3.layer_mut(6).b_mut()[2] += 1.0;
    let q3 = n3.forward(&x, 1, &mut Cache::default()).to_vec();
    for (i, (a, b)) in q.iter().zip(&q3).enumerate() {
        let want = if i == 2 { 0.8 } else { -0.2 };
        assert!((b - a - want).abs() < 1e-5, "action {i}");
    }
}

#[test]
fn adam_first_step_moves_each_weight_by_lr() {
    // With bias correction, Adam's first step is lr · sign(g) (for |g| ≫ ε).
    let mut rng = Pcg64::seed_from_u64(1);
    let mut net = QNet::new(Network::Qnetwork, &mut rng);
    let before = net.clone();
    let mut g = net.zero_grads();
    g.layer_mut(0).0[5] = 0.3;
    g.layer_mut(2).1[1] = -2.0;
    let mut adam = Adam::new(&net, 0.01);
    adam.step(&mut net, &g, 1.0);
    assert!((before.layers()[0].w()[5] - net.layers()[0].w()[5] - 0.01).abs() < 1e-6);
    assert!((net.layers()[2].b()[1] - before.layers()[2].b()[1] - 0.01).abs() < 1e-6);
    assert_eq!(
        before.layers()[1].w(),
        net.layers()[1].w(),
        "zero gradient, no movement"
    );
}

#[test]
fn clipping_bounds_the_global_norm() {
    let mut rng = Pcg64::seed_from_u64(2);
    let net = QNet::new(Network::Qnetwork, &mut rng);
    let mut g = net.zero_grads();
    g.layer_mut(0).0[0] = 30.0;
    g.layer_mut(1).1[0] = 40.0;
    let before = g.clip(10.0);
    assert!((before - 50.0).abs() < 1e-3);
    assert!((g.norm() - 10.0).abs() < 1e-3);
    assert!((g.layer(0).0[0] - 6.0).abs() < 1e-3);
}

/// The trainer evaluates states and next states in one forward pass and learns from the first
/// half (`Cache::keep_rows`); `backward` returns the gradient norm it summed on the way. Both must
/// be exactly what the plain path computes: a forward pass of the states alone, `Grads::norm`.
#[test]
fn a_double_height_pass_cut_to_its_first_rows_gives_the_same_gradients_and_norm() {
    for arch in [Network::Qnetwork, Network::Dueling] {
        let mut rng = Pcg64::seed_from_u64(7);
        let net = QNet::new(arch, &mut rng);
        let n = 5;
        let x: Vec<f32> = (0..2 * n * OBS)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let dq: Vec<f32> = (0..n * ACTIONS)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();

        let mut plain = Cache::default();
        let q_plain = net.forward(&x[..n * OBS], n, &mut plain).to_vec();
        let mut plain_grads = net.zero_grads();
        let plain_norm = net.backward(&x[..n * OBS], &mut plain, &dq, &mut plain_grads);

        let mut both = Cache::default();
        let q_both = net.forward(&x, 2 * n, &mut both).to_vec();
        assert_eq!(
            q_both[..n * ACTIONS],
            q_plain[..],
            "{arch:?}: rows are independent"
        );
        both.keep_rows(n);
        let mut grads = net.zero_grads();
        let norm = net.backward(&x, &mut both, &dq, &mut grads);

        for i in 0..net.layers().len() {
            assert_eq!(grads.layer(i), plain_grads.layer(i), "{arch:?} layer {i}");
        }
        assert_eq!(norm.to_bits(), plain_norm.to_bits(), "{arch:?}");
        assert_eq!(norm.to_bits(), grads.norm().to_bits(), "{arch:?}");
        assert!(norm > 0.0);
    }
}
