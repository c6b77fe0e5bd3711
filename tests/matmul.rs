//! Matrix products on the GPU against the CPU reference.

mod common;
use common::*;
use geopath::ops::matmul::{linear_param_grads, matmul_ex, matmul_jvp, MatmulOpts};
use geopath::{Device, Tensor};

#[allow(clippy::too_many_arguments)]
fn check(
    dev: &Device,
    rng: &mut Rng,
    m: usize,
    n: usize,
    k: usize,
    ta: bool,
    tb: bool,
    bias: bool,
    acc: bool,
    relu: bool,
) {
    let ashape = if ta { [k, m] } else { [m, k] };
    let bshape = if tb { [n, k] } else { [k, n] };
    let (ag, a) = rand_tensor(dev, rng, &ashape);
    let (bg, b) = rand_tensor(dev, rng, &bshape);
    let (biasg, biasv) = rand_tensor(dev, rng, &[n]);
    let (cing, cinv) = rand_tensor(dev, rng, &[m, n]);
    let ac = Tensor::from_vec(&Device::Reference, &ashape, a).unwrap();
    let bc = Tensor::from_vec(&Device::Reference, &bshape, b).unwrap();
    let biasc = Tensor::from_vec(&Device::Reference, &[n], biasv).unwrap();
    let cinc = Tensor::from_vec(&Device::Reference, &[m, n], cinv).unwrap();
    let go = MatmulOpts {
        trans_a: ta,
        trans_b: tb,
        alpha: 0.75,
        bias: bias.then_some(&biasg),
        accumulate: acc.then_some((0.5, &cing)),
        relu,
        mask: None,
    };
    let co = MatmulOpts {
        trans_a: ta,
        trans_b: tb,
        alpha: 0.75,
        bias: bias.then_some(&biasc),
        accumulate: acc.then_some((0.5, &cinc)),
        relu,
        mask: None,
    };
    let got = matmul_ex(&ag, &bg, go).unwrap().to_vec().unwrap();
    let want = matmul_ex(&ac, &bc, co).unwrap().to_vec().unwrap();
    assert_close(
        &format!("matmul {m}x{n}x{k} ta={ta} tb={tb} bias={bias} acc={acc} relu={relu}"),
        &got,
        &want,
        1e-4,
        1e-4 * (k as f32).sqrt(),
    );
}

#[test]
fn matmul_matches_cpu_reference_on_odd_and_aligned_shapes() {
    for dev in devices() {
        matmul_matches_cpu_reference_on(&dev);
    }
}

fn matmul_matches_cpu_reference_on(dev: &Device) {
    let mut rng = Rng::new(1);
    let shapes = [
        (1, 1, 1),
        (3, 5, 7),
        (17, 13, 9),
        (64, 64, 64),
        (33, 20, 12),
        (129, 68, 40),
        (200, 100, 300),
        (8, 4, 4),
        (65, 130, 67),
        // Shapes whose invocations are laid along row tiles (see `rows_on_lanes`).
        (300, 20, 16),
        (200, 10, 100),
        (100, 10, 200),
        // Several workgroups along both axes, partial tiles, both invocation layouts.
        (264, 300, 36),
        (36, 264, 20),
    ];
    for &(m, n, k) in &shapes {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            check(dev, &mut rng, m, n, k, ta, tb, false, false, false);
        }
    }
    // (130, 70, 20) and (20, 150, 9): epilogues on products split over threads by rows, by columns.
    for &(m, n, k) in &[(37, 24, 20), (16, 12, 8), (31, 33, 35), (130, 70, 20), (20, 150, 9)] {
        for (ta, tb) in [(false, false), (true, false), (false, true)] {
            check(dev, &mut rng, m, n, k, ta, tb, true, true, true);
            check(dev, &mut rng, m, n, k, ta, tb, true, false, false);
            check(dev, &mut rng, m, n, k, ta, tb, false, true, true);
        }
    }
}

#[test]
fn fused_matmul_jvp_matches_cpu_reference() {
    for dev in devices() {
        fused_matmul_jvp_matches_cpu_reference_on(&dev);
    }
}

fn fused_matmul_jvp_matches_cpu_reference_on(dev: &Device) {
    let mut rng = Rng::new(2);
    for &(m, n, k) in &[(20, 12, 8), (37, 44, 28), (5, 10, 7), (64, 300, 784 / 4), (200, 132, 20)] {
        for (has_da, has_bias, relu) in
            [(true, true, true), (false, true, false), (true, false, false), (false, false, true)]
        {
            let mk = |rng: &mut Rng, s: &[usize]| {
                let v = rng.vec(s.iter().product());
                (Tensor::from_vec(dev, s, v.clone()).unwrap(), Tensor::from_vec(&Device::Reference, s, v).unwrap())
            };
            let (a, ac) = mk(&mut rng, &[m, k]);
            let (da, dac) = mk(&mut rng, &[m, k]);
            let (b, bc) = mk(&mut rng, &[k, n]);
            let (db, dbc) = mk(&mut rng, &[k, n]);
            let (bi, bic) = mk(&mut rng, &[n]);
            let (dbi, dbic) = mk(&mut rng, &[n]);
            let (c, dc) =
                matmul_jvp(&a, has_da.then_some(&da), &b, &db, has_bias.then_some((&bi, &dbi)), relu).unwrap();
            let (cc, dcc) =
                matmul_jvp(&ac, has_da.then_some(&dac), &bc, &dbc, has_bias.then_some((&bic, &dbic)), relu).unwrap();
            let what = format!("matmul_jvp {m}x{n}x{k} da={has_da} bias={has_bias} relu={relu}");
            assert_close(&what, &c.to_vec().unwrap(), &cc.to_vec().unwrap(), 1e-4, 1e-4);
            assert_close(&what, &dc.to_vec().unwrap(), &dcc.to_vec().unwrap(), 1e-4, 1e-4);
        }
    }
}

#[test]
fn masked_matmul_matches_cpu_reference() {
    for dev in devices() {
        masked_matmul_matches_cpu_reference_on(&dev);
    }
}

fn masked_matmul_matches_cpu_reference_on(dev: &Device) {
    let mut rng = Rng::new(3);
    for &(m, n, k) in &[(3, 5, 7), (17, 13, 9), (200, 100, 300), (200, 300, 100), (200, 100, 10), (33, 20, 12)] {
        for tb in [false, true] {
            let bshape = if tb { [n, k] } else { [k, n] };
            let (ag, a) = rand_tensor(dev, &mut rng, &[m, k]);
            let (bg, b) = rand_tensor(dev, &mut rng, &bshape);
            let (maskg, mask) = rand_tensor(dev, &mut rng, &[m, n]);
            let ac = Tensor::from_vec(&Device::Reference, &[m, k], a).unwrap();
            let bc = Tensor::from_vec(&Device::Reference, &bshape, b).unwrap();
            let maskc = Tensor::from_vec(&Device::Reference, &[m, n], mask.clone()).unwrap();
            let go = MatmulOpts { trans_b: tb, mask: Some(&maskg), ..Default::default() };
            let co = MatmulOpts { trans_b: tb, mask: Some(&maskc), ..Default::default() };
            let got = matmul_ex(&ag, &bg, go).unwrap().to_vec().unwrap();
            let want = matmul_ex(&ac, &bc, co).unwrap().to_vec().unwrap();
            let what = format!("masked matmul {m}x{n}x{k} tb={tb}");
            assert_close(&what, &got, &want, 1e-4, 1e-4 * (k as f32).sqrt());
            assert!(got.iter().zip(&mask).all(|(g, m)| *m > 0.0 || *g == 0.0), "{what}: unmasked entries");
        }
    }
}

#[test]
fn linear_param_grads_match_cpu_reference() {
    for dev in devices() {
        linear_param_grads_match_cpu_reference_on(&dev);
    }
}

fn linear_param_grads_match_cpu_reference_on(dev: &Device) {
    let mut rng = Rng::new(4);
    // (inputs, outputs, batch): aligned (vec4 kernel, both invocation layouts), batches not a
    // multiple of 4, and unaligned.
    for &(i, o, b) in
        &[(36, 20, 12), (13, 10, 9), (100, 10, 200), (300, 100, 200), (784, 300, 40), (264, 300, 22), (8, 4, 3)]
    {
        let (xg, x) = rand_tensor(dev, &mut rng, &[b, i]);
        let (gg, g) = rand_tensor(dev, &mut rng, &[b, o]);
        let xc = Tensor::from_vec(&Device::Reference, &[b, i], x).unwrap();
        let gc = Tensor::from_vec(&Device::Reference, &[b, o], g).unwrap();
        let (dw, db) = linear_param_grads(&xg, &gg).unwrap();
        let (dwc, dbc) = linear_param_grads(&xc, &gc).unwrap();
        let what = format!("linear_param_grads in={i} out={o} batch={b}");
        assert_eq!(dw.shape(), [i, o]);
        assert_eq!(db.shape(), [o]);
        let tol = 1e-4 * (b as f32).sqrt();
        assert_close(&what, &dw.to_vec().unwrap(), &dwc.to_vec().unwrap(), 1e-4, tol);
        assert_close(&what, &db.to_vec().unwrap(), &dbc.to_vec().unwrap(), 1e-4, tol);
    }
}

#[test]
fn matmul_shape_mismatch_is_an_error_naming_both_shapes() {
    let dev = test_device().unwrap_or(Device::Reference);
    let a = Tensor::zeros(&dev, &[3, 4]).unwrap();
    let b = Tensor::zeros(&dev, &[5, 6]).unwrap();
    let e = geopath::ops::matmul::matmul(&a, &b).unwrap_err().to_string();
    assert!(e.contains("[3, 4]") && e.contains("[5, 6]"), "{e}");
}

#[test]
fn each_adapter_class_takes_its_matmul_variants() {
    use geopath::ops::matmul::MatmulVariant;
    if let Some(Device::Gpu(hw)) = gpu_hardware_variants() {
        // The workgroup-memory blocks for every shape and layout; 8 × 8 per invocation once
        // both sides reach 128; vec4 loads where both operands' contiguous sides are
        // multiples of 4 (the shapes the tests above check include each case).
        let staged = |tm, vec4| MatmulVariant::WorkgroupTiled { tm, vec4 };
        assert_eq!(MatmulVariant::select(&hw, 200, 300, 100, false, false), staged(8, true));
        assert_eq!(MatmulVariant::select(&hw, 130, 70, 20, true, false), staged(4, false));
        assert_eq!(MatmulVariant::select(&hw, 132, 68, 20, true, false), staged(4, true));
        assert_eq!(MatmulVariant::select(&hw, 31, 33, 35, true, true), staged(4, false));
        assert_eq!(MatmulVariant::select(&hw, 31, 33, 36, false, true), staged(4, true));
        assert_eq!(MatmulVariant::select(&hw, 31, 33, 36, false, false), staged(4, false));
    }
    if let Some(Device::Gpu(sw)) = wgpu_device() {
        if sw.class == geopath::gpu::AdapterClass::Software {
            assert!(matches!(MatmulVariant::select(&sw, 31, 33, 35, false, false), MatmulVariant::General { .. }));
            let aligned = MatmulVariant::select(&sw, 64, 64, 64, false, false);
            if sw.lane_sharing {
                assert!(matches!(aligned, MatmulVariant::LaneShared { .. }), "{aligned:?}");
            } else {
                assert!(matches!(aligned, MatmulVariant::RegisterTiled { .. }), "{aligned:?}");
            }
        }
    }
}
