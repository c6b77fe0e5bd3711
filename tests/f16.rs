//! f16 storage on the GPU: the cast against `half`'s rounding, the f16 matrix products (every
//! layout and epilogue) against a host reference computed in f64 from the f16-rounded inputs,
//! the f16 convolution against the f32 reference on f16-rounded inputs, mixed-precision
//! inference of whole networks against f32 inference, and the refusals. The GPU checks run on
//! the native adapter and on the device taking the hardware variants ([`test_devices`]); the
//! f16 kernels are the same for both.

mod common;
use common::*;
use geopath::autodiff;
use geopath::nn::network::Network;
use geopath::nn::spec;
use geopath::ops::conv::{conv2d, conv2d_backward_weight, Conv2dGeometry};
use geopath::ops::elementwise::scale;
use geopath::ops::matmul::{linear_param_grads, matmul, matmul_ex, MatmulOpts};
use geopath::{DType, Device, Tensor};
use half::f16;

/// The test devices that hold f16 storage (adapters with `SHADER_F16`), with a note for each
/// one that does not.
fn f16_devices() -> Vec<Device> {
    let (with, without): (Vec<Device>, Vec<Device>) = test_devices()
        .into_iter()
        .partition(|d| d.gpu().is_some_and(|c| c.features.contains(wgpu::Features::SHADER_F16)));
    for d in &without {
        eprintln!("note: {} has no SHADER_F16; its f16 checks skipped", d.name());
    }
    // Where the run demands a GPU, the f16 kernels must run on one (lavapipe has SHADER_F16).
    let gpu_required = std::env::var("GEOPATH_REQUIRE_GPU").as_deref() == Ok("1");
    assert!(
        !(gpu_required && with.is_empty() && without.iter().any(|d| d.gpu().is_some())),
        "GEOPATH_REQUIRE_GPU=1 but no test device has SHADER_F16: the f16 kernels would go unchecked"
    );
    with
}

/// `x` rounded to f16 (round to nearest, ties to even) and back.
fn round(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| f16::from_f32(v).to_f32()).collect()
}

#[test]
fn to_f16_rounds_as_half_does_and_to_vec_reads_it_back_exactly() {
    let mut specials = vec![0.0, -0.0, 1.0, -2.5, 65504.0, 65519.99, 65520.0, -1e6, f32::INFINITY, f32::NEG_INFINITY];
    // Ties between neighbouring halves (to even), the subnormal range and its edges.
    specials.extend([1.0 + 1.0 / 2048.0, 1.0 + 3.0 / 2048.0, 6.1e-5, 6.0e-8, 5.960_464_5e-8, 2.98e-8, 2.980_232_2e-8]);
    specials.extend([2.0f32.powi(-24) * 1.5, 2.0f32.powi(-24) * 2.5, 2.0f32.powi(-15) * 1.999, 1e-30, -3e-6]);
    specials.extend([f32::NAN, f32::from_bits(0x7f80_0001), f32::from_bits(0xffc1_2345)]);
    let mut rng = Rng::new(3);
    // An odd count: the last word's upper half is padding.
    let count = 1001 + specials.len() % 2;
    let values: Vec<f32> = specials.into_iter().chain((0..count).map(|_| rng.uniform() * 70_000.0)).collect();
    assert!(values.len() % 2 == 1);
    for dev in f16_devices() {
        let x = Tensor::from_vec(&dev, &[values.len()], values.clone()).unwrap();
        let h = x.to_f16().unwrap();
        assert_eq!((h.dtype(), h.shape()), (DType::F16, x.shape()));
        let got = h.to_vec().unwrap();
        for (i, (&v, &g)) in values.iter().zip(&got).enumerate() {
            let want = f16::from_f32(v).to_f32();
            assert_eq!(g.to_bits(), want.to_bits(), "{}: element {i}: {v:e} -> {g:e}, half gives {want:e}", dev.name());
        }
        assert_eq!(h.to_f16().unwrap().to_vec().unwrap().len(), values.len(), "to_f16 of f16 is itself");
    }
}

/// `act(alpha op(A) op(B) + bias)` in f64 from f32 inputs, with the bound of its f32
/// accumulation: `1e-5 (|alpha| sum_k |a_ik b_kj| + |bias_j|)` per element.
#[allow(clippy::too_many_arguments)]
fn reference(
    a: &[f32],
    b: &[f32],
    bias: Option<&[f32]>,
    (m, n, k): (usize, usize, usize),
    ta: bool,
    tb: bool,
    alpha: f32,
    relu: bool,
) -> (Vec<f32>, Vec<f32>) {
    let (mut c, mut tol) = (vec![0.0f32; m * n], vec![0.0f32; m * n]);
    for i in 0..m {
        for j in 0..n {
            let (mut s, mut mag) = (0.0f64, 0.0f64);
            for p in 0..k {
                let av = a[if ta { p * m + i } else { i * k + p }] as f64;
                let bv = b[if tb { j * k + p } else { p * n + j }] as f64;
                s += av * bv;
                mag += (av * bv).abs();
            }
            let bj = bias.map_or(0.0, |b| b[j] as f64);
            let v = alpha as f64 * s + bj;
            c[i * n + j] = if relu { v.max(0.0) } else { v } as f32;
            tol[i * n + j] = (1e-5 * (alpha.abs() as f64 * mag + bj.abs())) as f32 + 1e-30;
        }
    }
    (c, tol)
}

#[test]
fn f16_products_match_the_reference_from_rounded_inputs_in_every_layout_and_epilogue() {
    let shapes = [(1, 1, 1), (3, 5, 7), (17, 13, 9), (64, 64, 64), (129, 68, 40), (200, 130, 300), (130, 129, 33)];
    for dev in f16_devices() {
        let mut rng = Rng::new(5);
        for (m, n, k) in shapes {
            for (ta, tb) in [(false, false), (true, false), (false, true)] {
                for (bias, relu) in [(false, false), (true, false), (false, true), (true, true)] {
                    let ashape = if ta { [k, m] } else { [m, k] };
                    let bshape = if tb { [n, k] } else { [k, n] };
                    let (a, av) = rand_tensor(&dev, &mut rng, &ashape);
                    let (b, bv) = rand_tensor(&dev, &mut rng, &bshape);
                    let (bias_t, bias_v) = rand_tensor(&dev, &mut rng, &[n]);
                    let (a16, b16) = (a.to_f16().unwrap(), b.to_f16().unwrap());
                    let opts = MatmulOpts {
                        trans_a: ta,
                        trans_b: tb,
                        alpha: 0.75,
                        bias: bias.then_some(&bias_t),
                        relu,
                        ..Default::default()
                    };
                    let got = matmul_ex(&a16, &b16, opts).unwrap();
                    assert_eq!(got.dtype(), DType::F32);
                    let got = got.to_vec().unwrap();
                    let dims = (m, n, k);
                    let bias_ref = bias.then_some(bias_v.as_slice());
                    let (want, tol) = reference(&round(&av), &round(&bv), bias_ref, dims, ta, tb, 0.75, relu);
                    for (i, ((g, w), t)) in got.iter().zip(&want).zip(&tol).enumerate() {
                        assert!(
                            (g - w).abs() <= *t,
                            "{}: {m}x{n}x{k} ta={ta} tb={tb} bias={bias} relu={relu}: [{i}] {g} vs {w} (tol {t})",
                            dev.name()
                        );
                    }
                }
            }
        }
    }
}

/// The message of the error `r` carries, which must name `op` and f16 (or SHADER_F16).
fn refused<T: std::fmt::Debug>(r: geopath::Result<T>, what: &str, op: &str) {
    let message = r.expect_err(what).to_string();
    assert!(message.contains(op) && message.contains("f16"), "{what}: {message}");
}

#[test]
fn f16_tensors_are_refused_where_an_op_does_not_take_them() {
    for dev in f16_devices() {
        let mut rng = Rng::new(9);
        let (a, _) = rand_tensor(&dev, &mut rng, &[8, 8]);
        let (bias, _) = rand_tensor(&dev, &mut rng, &[8]);
        let h = a.to_f16().unwrap();
        refused(scale(2.0, &h), "scale of f16", "scale");
        refused(matmul(&h, &a), "f16 times f32", "matmul");
        refused(matmul(&a, &h), "f32 times f16", "matmul");
        let acc = MatmulOpts { accumulate: Some((1.0, &a)), ..Default::default() };
        refused(matmul_ex(&h, &h, acc), "f16 product accumulating", "matmul");
        let bias16 = bias.to_f16().unwrap();
        let f16_bias = MatmulOpts { bias: Some(&bias16), ..Default::default() };
        refused(matmul_ex(&a, &a, f16_bias), "f32 product with an f16 bias", "matmul");
        refused(matmul_ex(&h, &h, f16_bias), "f16 product with an f16 bias", "matmul");
        refused(linear_param_grads(&h, &h), "linear_param_grads of f16", "linear_param_grads");
        // A copy to another device, or a reshape, keeps the values.
        let host = h.to_device(&Device::Cpu).unwrap();
        assert_eq!(host.dtype(), DType::F32);
        assert_eq!(host.to_vec().unwrap(), h.reshape(&[64]).unwrap().to_vec().unwrap());
    }
}

#[test]
fn to_f16_is_refused_on_host_devices() {
    for dev in [Device::Cpu, Device::Reference] {
        let x = Tensor::from_vec(&dev, &[2], vec![1.0, 2.0]).unwrap();
        refused(x.to_f16(), "to_f16 on a host device", "SHADER_F16");
    }
}

/// `[n, c, h, w]`, `[o, c, k, k]`, stride, pad of the f16 convolution checks.
const CONV_CASES: &[([usize; 4], [usize; 4], usize, usize)] = &[
    ([2, 3, 7, 7], [5, 3, 3, 3], 1, 1),
    ([2, 3, 9, 8], [4, 3, 5, 5], 2, 2),
    ([3, 16, 8, 8], [24, 16, 3, 3], 1, 1),
    ([1, 5, 6, 6], [7, 5, 1, 1], 1, 0),
    ([4, 64, 4, 4], [70, 64, 3, 3], 1, 1),
];

#[test]
fn f16_convolution_matches_the_f32_reference_on_rounded_inputs() {
    let mut rng = Rng::new(11);
    for &(xs, ws, stride, pad) in CONV_CASES {
        let g = Conv2dGeometry { stride, pad };
        let x = round(&rng.vec(xs.iter().product()));
        let w = round(&rng.vec(ws.iter().product()));
        let b = rng.vec(ws[0]);
        let t = |dev: &Device, s: &[usize], v: &[f32]| Tensor::from_vec(dev, s, v.to_vec()).unwrap();
        let r = Device::Reference;
        for dev in f16_devices() {
            for (bias, relu) in [(true, true), (false, false)] {
                let want =
                    conv2d(&t(&r, &xs, &x), &t(&r, &ws, &w), bias.then(|| t(&r, &[ws[0]], &b)).as_ref(), g, relu);
                let (x16, w16) = (t(&dev, &xs, &x).to_f16().unwrap(), t(&dev, &ws, &w).to_f16().unwrap());
                let bd = t(&dev, &[ws[0]], &b);
                let got = conv2d(&x16, &w16, bias.then_some(&bd), g, relu).unwrap();
                assert_eq!(got.dtype(), DType::F32);
                // Only the order of the f32 accumulation differs from the reference.
                let len = (ws[1] * ws[2] * ws[3]) as f32;
                let what = format!("{} conv f16 {xs:?} {ws:?} s{stride} p{pad} bias={bias} relu={relu}", dev.name());
                assert_close(&what, &got.to_vec().unwrap(), &want.unwrap().to_vec().unwrap(), 1e-4, 1e-4 * len.sqrt());
            }
        }
    }
}

#[test]
fn f16_convolutions_refuse_mixed_operands_and_the_other_conv_ops() {
    for dev in f16_devices() {
        let x = Tensor::from_vec(&dev, &[1, 2, 5, 5], vec![0.5; 50]).unwrap();
        let w = Tensor::from_vec(&dev, &[3, 2, 3, 3], vec![0.25; 54]).unwrap();
        let g = Conv2dGeometry { stride: 1, pad: 1 };
        let e = conv2d(&x.to_f16().unwrap(), &w, None, g, false).unwrap_err().to_string();
        assert!(e.contains("both in f16"), "{e}");
        let gy = Tensor::from_vec(&dev, &[1, 3, 5, 5], vec![1.0; 75]).unwrap();
        let e = conv2d_backward_weight(&x.to_f16().unwrap(), &gy, w.shape(), g).unwrap_err().to_string();
        assert!(e.contains("f16"), "{e}");
    }
}

/// A small conv net with BatchNorm, pooling and a dense classifier, for 3 x 12 x 12 inputs.
const SMALL_CNN: &str = "name small-cnn\nconv 8 3 pad=1\nbatchnorm\nrelu\nmaxpool 2\nconv 16 3 pad=1\nrelu\nmaxpool 2\nflatten\nlinear 32\nrelu\nlinear classes\n";

/// Largest `|logit - reference logit|` over `max(1, max |reference logit|)` for `spec` on a
/// random batch, with random BatchNorm running statistics: `(f16 inference on dev, f32
/// inference on dev)`.
fn logit_errors(dev: &Device, spec_text: &str, input: [usize; 3], seed: u64) -> (f32, f32) {
    let spec = spec::parse(spec_text, "test", "net").unwrap();
    let mut rng = Rng::new(seed);
    let x: Vec<f32> = rng.vec(8 * input.iter().product::<usize>());
    let logits = |d: &Device, half: bool| {
        let net = Network::new(&spec, input, 10, d).unwrap();
        let buffers: Vec<(String, Vec<f32>)> = net
            .buffers()
            .unwrap()
            .into_iter()
            .map(|(name, v)| {
                let mut r = Rng::new(seed + 1);
                let v = if name.ends_with("var") {
                    v.iter().map(|_| 0.5 + r.uniform().abs()).collect()
                } else {
                    r.vec(v.len())
                };
                (name, v)
            })
            .collect();
        net.set_buffers(&buffers).unwrap();
        net.set_train(false);
        let params = net.init_params(seed).unwrap();
        let xt = Tensor::from_vec(d, &[8, input[0], input[1], input[2]], x.clone()).unwrap();
        let z = if half {
            net.logits_f16(&net.half_params(&params).unwrap(), &xt).unwrap()
        } else {
            autodiff::forward(&net, &params, &xt).unwrap()
        };
        z.to_vec().unwrap()
    };
    let want = logits(&Device::Reference, false);
    let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let error = |got: Vec<f32>| {
        assert_eq!(want.len(), got.len());
        got.iter().zip(&want).map(|(g, w)| (g - w).abs()).fold(0.0, f32::max) / scale
    };
    (error(logits(dev, true)), error(logits(dev, false)))
}

/// Mixed-precision inference against f32 inference of the same network: stated tolerance
/// 5e-3 of the logits' scale (f16 keeps 11 significant bits, a relative rounding of up to
/// 2^-11 ≈ 4.9e-4 per stored value; lavapipe measured 3.6e-4 for LeNet-300-100 and 5.5e-4 for
/// the small CNN).
#[test]
fn f16_inference_matches_f32_inference_within_its_tolerance() {
    for dev in f16_devices() {
        for (name, (half, full)) in [
            ("lenet-300-100", logit_errors(&dev, include_str!("../models/lenet-300-100.txt"), [1, 28, 28], 5)),
            ("small cnn", logit_errors(&dev, SMALL_CNN, [3, 12, 12], 6)),
        ] {
            eprintln!("{}: {name}: logit error f16 {half:.2e}, f32 {full:.2e}", dev.name());
            assert!(half <= 5e-3, "{}: {name}: f16 logit error {half:e}", dev.name());
            // f16 storage must show: its rounding lies far above the f32 kernels' own error.
            assert!(half > 10.0 * full, "{}: {name}: f16 error {half:e} vs f32 {full:e}: was f16 used?", dev.name());
        }
    }
}

#[test]
fn f16_inference_is_refused_off_a_gpu_with_shader_f16() {
    let spec = spec::parse(SMALL_CNN, "test", "net").unwrap();
    let net = Network::new(&spec, [3, 12, 12], 10, &Device::Cpu).unwrap();
    let params = net.init_params(0).unwrap();
    let e = net.half_params(&params).err().expect("f16 on the CPU device").to_string();
    assert!(e.contains("SHADER_F16"), "{e}");
}
