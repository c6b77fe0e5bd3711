//! The FLOP counter of `geopath::cost`: the products each autodiff mode of an MLP executes,
//! against hand counts from the layer sizes, the same on every device; the small share of the
//! other ops; single ops with their epilogues; and `uncounted` scopes.

mod common;
use common::*;
use geopath::autodiff;
use geopath::cost::{self, Meter};
use geopath::nn::mlp::Mlp;
use geopath::ops::conv::{conv2d, conv2d_jvp, Conv2dGeometry};
use geopath::ops::matmul::{linear_param_grads, matmul_ex, matmul_jvp, MatmulOpts};
use geopath::{Device, Tensor};

/// The five autodiff modes, in the order of [`run_modes`].
const MODES: [&str; 5] = ["forward", "loss_grad", "jvp", "loss_hvp", "gauss_newton"];

/// Random parameters, tangent, inputs and labels for `mlp` on `dev` with batch `batch`.
fn problem(dev: &Device, sizes: &[usize], batch: usize, seed: u64) -> (Tensor, Tensor, Tensor, Tensor) {
    let mlp = Mlp::new(sizes);
    let mut rng = Rng::new(seed);
    let n = autodiff::Model::num_params(&mlp);
    let w = Tensor::from_vec(dev, &[n], rng.vec(n)).unwrap();
    let v = Tensor::from_vec(dev, &[n], rng.vec(n)).unwrap();
    let x = Tensor::from_vec(dev, &[batch, sizes[0]], rng.vec(batch * sizes[0])).unwrap();
    let classes = sizes[sizes.len() - 1];
    let labels: Vec<u32> = (0..batch).map(|_| rng.below(classes) as u32).collect();
    (w, v, x, Tensor::from_u32(dev, &[batch], &labels).unwrap())
}

/// `(product FLOPs, all FLOPs)` of each mode of [`MODES`] for the MLP of `sizes` on `dev`.
fn run_modes(dev: &Device, sizes: &[usize], batch: usize) -> Vec<(u64, u64)> {
    let mlp = Mlp::new(sizes);
    let (w, v, x, labels) = problem(dev, sizes, batch, 7);
    let measure = |f: &dyn Fn()| {
        let meter = Meter::start();
        f();
        (meter.product_flops(), meter.flops())
    };
    vec![
        measure(&|| drop(autodiff::forward(&mlp, &w, &x).unwrap())),
        measure(&|| drop(autodiff::loss_grad(&mlp, &w, &x, &labels).unwrap())),
        measure(&|| drop(autodiff::jvp(&mlp, &w, &v, &x).unwrap())),
        measure(&|| drop(autodiff::loss_hvp(&mlp, &w, &v, &x, &labels).unwrap())),
        measure(&|| drop(autodiff::gauss_newton(&mlp, &w, &v, &x).unwrap())),
    ]
}

/// `Σ_l products(l) · 2 B in_l out_l`: FLOPs of `products(l)` products of the size of layer `l`
/// (0-based) of the MLP of `sizes` on a batch of `batch`.
fn layer_products(sizes: &[usize], batch: usize, products: impl Fn(usize) -> u64) -> u64 {
    sizes.windows(2).enumerate().map(|(l, w)| products(l) * 2 * (batch * w[0] * w[1]) as u64).sum()
}

#[test]
fn mlp_products_match_hand_counts_on_every_device() {
    let sizes = [7, 5, 4, 3];
    let batch = 6;
    // Per layer, in units of one product of the layer's size (2 B in out FLOPs); the first
    // layer's input is data: it needs no gradient and carries no tangent.
    let first = |l: usize| l == 0;
    let want = [
        // forward: x W per layer (bias and ReLU fused into its epilogue).
        layer_products(&sizes, batch, |_| 1),
        // loss_grad: the forward, then per layer the weight gradient xᵀ gy (with the bias sums
        // in the same op, linear_param_grads) and, except for the first layer, the input
        // gradient gy Wᵀ (masked by the previous layer's ReLU in its epilogue).
        layer_products(&sizes, batch, |l| if first(l) { 2 } else { 3 }),
        // jvp: per layer the fused matmul_jvp: x W and x dW, plus dx W where x has a tangent.
        layer_products(&sizes, batch, |l| if first(l) { 2 } else { 3 }),
        // loss_hvp (forward-over-reverse): the forward as jvp (2 or 3), then the backward pass on
        // duals, each product rule a bilinear dual::matmul of primal and tangent (no fused
        // masks or linear_param_grads in second order): weight gradient xᵀ gy, dxᵀ gy, xᵀ dgy
        // (dx is zero for the first layer: 2), input gradient gy Wᵀ, dgy Wᵀ, gy dWᵀ (3, none
        // for the first layer).
        layer_products(&sizes, batch, |l| if first(l) { 2 + 2 } else { 3 + 3 + 3 }),
        // gauss_newton: the jvp (2 or 3), then a first-order VJP of the scaled J v as loss_grad's
        // backward (1, or 2 with the input gradient).
        layer_products(&sizes, batch, |l| if first(l) { 2 + 1 } else { 3 + 2 }),
    ];
    // Layers of 2 B in out = 420, 240 and 144 FLOPs.
    assert_eq!(want, [804, 1992, 1992, 5136, 3180]);
    let reference = run_modes(&Device::Reference, &sizes, batch);
    for (mode, ((got, _), want)) in MODES.iter().zip(reference.iter().zip(want)) {
        assert_eq!(*got, want, "{mode}: product FLOPs on the reference device");
    }
    for dev in devices() {
        let got = run_modes(&dev, &sizes, batch);
        for (mode, (g, r)) in MODES.iter().zip(got.iter().zip(&reference)) {
            assert_eq!(g, r, "{mode}: (product, all) FLOPs on {dev:?} vs the reference device");
        }
    }
}

#[test]
fn other_ops_are_a_small_share_of_lenet() {
    for (mode, (products, all)) in MODES.iter().zip(run_modes(&Device::Cpu, &[784, 300, 100, 10], 64)) {
        let others = all - products;
        assert!(products > 0 && others > 0, "{mode}: {products} product and {others} other FLOPs");
        assert!((others as f64) < 0.05 * products as f64, "{mode}: other ops {others} FLOPs vs products {products}");
    }
}

/// `(product FLOPs, other FLOPs)` of `f`.
fn count(f: impl FnOnce()) -> (u64, u64) {
    let meter = Meter::start();
    f();
    (meter.product_flops(), meter.flops() - meter.product_flops())
}

#[test]
fn products_count_their_epilogues_and_tangents() {
    let (m, n, k) = (5, 6, 7);
    for dev in std::iter::once(Device::Reference).chain(devices()) {
        let mut rng = Rng::new(3);
        let (a, _) = rand_tensor(&dev, &mut rng, &[m, k]);
        let (da, _) = rand_tensor(&dev, &mut rng, &[m, k]);
        let (b, _) = rand_tensor(&dev, &mut rng, &[k, n]);
        let (db, _) = rand_tensor(&dev, &mut rng, &[k, n]);
        let (bias, _) = rand_tensor(&dev, &mut rng, &[n]);
        let (c, _) = rand_tensor(&dev, &mut rng, &[m, n]);
        let product = (2 * m * n * k) as u64;
        let mn = (m * n) as u64;

        let o = MatmulOpts { bias: Some(&bias), relu: true, ..Default::default() };
        assert_eq!(count(|| drop(matmul_ex(&a, &b, o).unwrap())), (product, 2 * mn), "bias + ReLU on {dev:?}");
        let o = MatmulOpts { accumulate: Some((0.5, &c)), ..Default::default() };
        assert_eq!(count(|| drop(matmul_ex(&a, &b, o).unwrap())), (product, mn), "accumulate on {dev:?}");
        let o = MatmulOpts { mask: Some(&c), ..Default::default() };
        assert_eq!(count(|| drop(matmul_ex(&a, &b, o).unwrap())), (product, mn), "mask on {dev:?}");
        // x [m, k] as a batch of m rows: the weight gradient xᵀ gy is k x n over m, plus the
        // column sums of gy [m, n].
        assert_eq!(count(|| drop(linear_param_grads(&a, &c).unwrap())), (product, mn), "linear grads on {dev:?}");
        let jvp =
            |da: Option<&Tensor>| count(|| drop(matmul_jvp(&a, da, &b, &db, Some((&bias, &bias)), true).unwrap()));
        assert_eq!(jvp(None), (2 * product, 4 * mn), "matmul_jvp without dA on {dev:?}");
        assert_eq!(jvp(Some(&da)), (3 * product, 4 * mn), "matmul_jvp with dA on {dev:?}");

        // conv: x [2, 3, 5, 5], w [4, 3, 3, 3], stride 2, pad 1 -> y [2, 4, 3, 3].
        let (x, _) = rand_tensor(&dev, &mut rng, &[2, 3, 5, 5]);
        let (dx, _) = rand_tensor(&dev, &mut rng, &[2, 3, 5, 5]);
        let (w, _) = rand_tensor(&dev, &mut rng, &[4, 3, 3, 3]);
        let (dw, _) = rand_tensor(&dev, &mut rng, &[4, 3, 3, 3]);
        let (cb, _) = rand_tensor(&dev, &mut rng, &[4]);
        let g = Conv2dGeometry { stride: 2, pad: 1 };
        let (y, conv) = (2 * 4 * 3 * 3, 2 * 4 * (2 * 3 * 3) * (3 * 3 * 3));
        assert_eq!(count(|| drop(conv2d(&x, &w, Some(&cb), g, true).unwrap())), (conv, 2 * y), "conv2d on {dev:?}");
        let cjvp = |dx: Option<&Tensor>| count(|| drop(conv2d_jvp(&x, dx, &w, &dw, None, g, true).unwrap()));
        assert_eq!(cjvp(None), (2 * conv, 2 * y), "conv2d_jvp without dx on {dev:?}");
        assert_eq!(cjvp(Some(&dx)), (3 * conv, 2 * y), "conv2d_jvp with dx on {dev:?}");
    }
}

#[test]
fn uncounted_scopes_count_nothing() {
    let sizes = [7, 5, 4, 3];
    let mlp = Mlp::new(&sizes);
    let (w, _, x, labels) = problem(&Device::Cpu, &sizes, 6, 11);
    let meter = Meter::start();
    let inner = cost::uncounted(|| {
        autodiff::loss_grad(&mlp, &w, &x, &labels).unwrap();
        // Nested scopes resume counting only when the outermost one ends.
        cost::uncounted(|| autodiff::forward(&mlp, &w, &x).unwrap());
        autodiff::forward(&mlp, &w, &x).unwrap();
        meter.flops()
    });
    assert_eq!(inner, 0);
    assert_eq!(meter.flops(), 0);
    autodiff::forward(&mlp, &w, &x).unwrap();
    assert_eq!(meter.product_flops(), layer_products(&sizes, 6, |_| 1), "counting resumes after the scope");
}
