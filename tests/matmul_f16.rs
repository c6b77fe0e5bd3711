//! f16 storage on the GPU: the cast against `half`'s rounding, the f16 matrix products (every
//! layout and epilogue) against a host reference computed in f64 from the f16-rounded inputs,
//! and the refusals. The GPU checks run on the native adapter and on the device taking the
//! hardware variants ([`test_devices`]); the f16 kernel is the same for both.

mod common;
use common::*;
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
