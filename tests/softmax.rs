//! Softmax and cross-entropy: the CPU reference against f64 formulas and finite differences,
//! the GPU kernels against the CPU reference.

mod common;
use common::*;
use geopath::ops::softmax::{
    cross_entropy, cross_entropy_backward, cross_entropy_backward_jvp, log_softmax, softmax, softmax_jvp,
};
use geopath::{Device, Tensor};

fn cpu_t(shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::from_vec(&Device::Reference, shape, v.to_vec()).unwrap()
}

fn labels_for(rng: &mut Rng, rows: usize, cols: usize) -> Vec<u32> {
    (0..rows).map(|_| rng.below(cols) as u32).collect()
}

/// Logits with a spread large enough that an unshifted exp would overflow f32.
fn logits(rng: &mut Rng, n: usize, spread: f32) -> Vec<f32> {
    (0..n).map(|_| rng.uniform() * spread).collect()
}

fn ce_value(z: &[f32], shape: [usize; 2], labels: &Tensor) -> f64 {
    cross_entropy(&cpu_t(&shape, z), labels).unwrap().to_vec().unwrap()[0] as f64
}

#[test]
fn cpu_reference_matches_f64_formulas() {
    let mut rng = Rng::new(20);
    let (b, c) = (5, 7);
    let z = logits(&mut rng, b * c, 4.0);
    let l = labels_for(&mut rng, b, c);
    let zt = cpu_t(&[b, c], &z);
    let lt = Tensor::from_u32(&Device::Reference, &[b], &l).unwrap();
    let p = softmax(&zt).unwrap().to_vec().unwrap();
    let lp = log_softmax(&zt).unwrap().to_vec().unwrap();
    let mut loss = 0.0f64;
    for r in 0..b {
        let row = &z[r * c..(r + 1) * c];
        let denom: f64 = row.iter().map(|&v| (v as f64).exp()).sum();
        for j in 0..c {
            let pj = (row[j] as f64).exp() / denom;
            assert!((p[r * c + j] as f64 - pj).abs() < 1e-6);
            assert!((lp[r * c + j] as f64 - pj.ln()).abs() < 1e-5);
        }
        loss -= ((row[l[r] as usize] as f64).exp() / denom).ln();
    }
    loss /= b as f64;
    let got = cross_entropy(&zt, &lt).unwrap();
    assert_eq!(got.shape(), [1]);
    assert!((got.to_vec().unwrap()[0] as f64 - loss).abs() < 1e-5);
    // Rows of a softmax sum to one, even for logits whose exp overflows f32.
    let big = cpu_t(&[1, 3], &[1000.0, 999.0, -1000.0]);
    let pb = softmax(&big).unwrap().to_vec().unwrap();
    assert!(pb.iter().all(|v| v.is_finite()) && (pb.iter().sum::<f32>() - 1.0).abs() < 1e-6, "{pb:?}");
}

#[test]
fn cross_entropy_backward_matches_finite_differences() {
    let mut rng = Rng::new(21);
    let (b, c) = (4, 6);
    let z = logits(&mut rng, b * c, 3.0);
    let l = labels_for(&mut rng, b, c);
    let lt = Tensor::from_u32(&Device::Reference, &[b], &l).unwrap();
    let g = cross_entropy_backward(&cpu_t(&[b, c], &z), &lt, 1.0 / b as f32).unwrap().to_vec().unwrap();
    let h = 1e-2f32;
    for i in 0..b * c {
        let mut zp = z.clone();
        let mut zm = z.clone();
        zp[i] += h;
        zm[i] -= h;
        let fd = (ce_value(&zp, [b, c], &lt) - ce_value(&zm, [b, c], &lt)) / (2.0 * h as f64);
        assert!((g[i] as f64 - fd).abs() < 2e-4, "element {i}: grad {} vs fd {fd}", g[i]);
    }
}

#[test]
fn cross_entropy_backward_jvp_matches_finite_differences_along_dz() {
    let mut rng = Rng::new(22);
    let (b, c) = (3, 5);
    let z = logits(&mut rng, b * c, 3.0);
    let dz = rng.vec(b * c);
    let l = labels_for(&mut rng, b, c);
    let lt = Tensor::from_u32(&Device::Reference, &[b], &l).unwrap();
    let scale = 0.7;
    let (g, dg) = cross_entropy_backward_jvp(&cpu_t(&[b, c], &z), &cpu_t(&[b, c], &dz), &lt, scale).unwrap();
    let g0 = cross_entropy_backward(&cpu_t(&[b, c], &z), &lt, scale).unwrap().to_vec().unwrap();
    assert_close("jvp primal", &g.to_vec().unwrap(), &g0, 1e-6, 1e-7);
    let h = 1e-2f32;
    let shifted = |s: f32| {
        let zs: Vec<f32> = z.iter().zip(&dz).map(|(&a, &d)| a + s * d).collect();
        cross_entropy_backward(&cpu_t(&[b, c], &zs), &lt, scale).unwrap().to_vec().unwrap()
    };
    let (gp, gm) = (shifted(h), shifted(-h));
    let fd: Vec<f32> = gp.iter().zip(&gm).map(|(p, m)| (p - m) / (2.0 * h)).collect();
    assert_close("jvp tangent vs finite differences", &dg.to_vec().unwrap(), &fd, 1e-3, 2e-4);
    // softmax_jvp's tangent is the same product without the scale.
    let (p, dp) = softmax_jvp(&cpu_t(&[b, c], &z), &cpu_t(&[b, c], &dz)).unwrap();
    assert_close(
        "softmax_jvp primal",
        &p.to_vec().unwrap(),
        &softmax(&cpu_t(&[b, c], &z)).unwrap().to_vec().unwrap(),
        1e-6,
        1e-7,
    );
    let dp_scaled: Vec<f32> = dp.to_vec().unwrap().iter().map(|v| v * scale).collect();
    assert_close("softmax_jvp tangent", &dp_scaled, &dg.to_vec().unwrap(), 1e-5, 1e-7);
}

#[test]
fn gpu_kernels_match_cpu_reference() {
    let Some(dev) = test_device() else { return };
    let mut rng = Rng::new(23);
    for &(b, c) in &[(1, 1), (1, 3), (3, 10), (255, 10), (257, 7), (1000, 10), (64, 1000), (65_537, 3)] {
        let z = logits(&mut rng, b * c, 30.0);
        let dz = rng.vec(b * c);
        let l = labels_for(&mut rng, b, c);
        let (zg, dzg) =
            (Tensor::from_vec(&dev, &[b, c], z.clone()).unwrap(), Tensor::from_vec(&dev, &[b, c], dz.clone()).unwrap());
        let (zc, dzc) = (cpu_t(&[b, c], &z), cpu_t(&[b, c], &dz));
        let lg = Tensor::from_u32(&dev, &[b], &l).unwrap();
        let lc = Tensor::from_u32(&Device::Reference, &[b], &l).unwrap();
        let what = |op: &str| format!("{op} [{b}, {c}]");
        let v = |t: Tensor| t.to_vec().unwrap();
        assert_close(&what("softmax"), &v(softmax(&zg).unwrap()), &v(softmax(&zc).unwrap()), 1e-4, 1e-6);
        assert_close(&what("log_softmax"), &v(log_softmax(&zg).unwrap()), &v(log_softmax(&zc).unwrap()), 1e-5, 1e-4);
        assert_close(
            &what("cross_entropy"),
            &v(cross_entropy(&zg, &lg).unwrap()),
            &v(cross_entropy(&zc, &lc).unwrap()),
            1e-5,
            1e-5,
        );
        let s = 1.0 / b as f32;
        let abs = 1e-6 * s;
        assert_close(
            &what("ce_backward"),
            &v(cross_entropy_backward(&zg, &lg, s).unwrap()),
            &v(cross_entropy_backward(&zc, &lc, s).unwrap()),
            1e-4,
            abs,
        );
        let (g, dg) = cross_entropy_backward_jvp(&zg, &dzg, &lg, s).unwrap();
        let (gc, dgc) = cross_entropy_backward_jvp(&zc, &dzc, &lc, s).unwrap();
        assert_close(&what("ce_backward_jvp g"), &v(g), &v(gc), 1e-4, abs);
        assert_close(&what("ce_backward_jvp dg"), &v(dg), &v(dgc), 1e-4, 2.0 * abs);
        let (p, dp) = softmax_jvp(&zg, &dzg).unwrap();
        let (pc, dpc) = softmax_jvp(&zc, &dzc).unwrap();
        assert_close(&what("softmax_jvp p"), &v(p), &v(pc), 1e-4, 1e-6);
        assert_close(&what("softmax_jvp dp"), &v(dp), &v(dpc), 1e-4, 2e-6);
    }
}

#[test]
fn bad_labels_and_shapes_are_errors() {
    let cpu = Device::Reference;
    let z = Tensor::zeros(&cpu, &[2, 3]).unwrap();
    let bad = Tensor::from_u32(&cpu, &[2], &[1, 3]).unwrap();
    for e in [
        cross_entropy(&z, &bad).unwrap_err(),
        cross_entropy_backward(&z, &bad, 1.0).unwrap_err(),
        cross_entropy_backward_jvp(&z, &z, &bad, 1.0).unwrap_err(),
    ] {
        assert!(e.to_string().contains("label 3"), "{e}");
    }
    let huge = Tensor::from_u32(&cpu, &[2], &[0, u32::MAX]).unwrap();
    assert!(cross_entropy(&z, &huge).is_err());
    for dev in [Some(cpu.clone()), test_device()].into_iter().flatten() {
        let z = Tensor::zeros(&dev, &[2, 3]).unwrap();
        let l3 = Tensor::from_u32(&dev, &[3], &[0, 1, 2]).unwrap();
        let e = cross_entropy(&z, &l3).unwrap_err().to_string();
        assert!(e.contains("[2, 3]") && e.contains("[3]"), "{e}");
        let dz = Tensor::zeros(&dev, &[3, 2]).unwrap();
        let e = softmax_jvp(&z, &dz).unwrap_err().to_string();
        assert!(e.contains("[2, 3]") && e.contains("[3, 2]"), "{e}");
        assert!(softmax(&Tensor::zeros(&dev, &[6]).unwrap()).is_err());
        let l2 = Tensor::from_u32(&dev, &[2], &[0, 0]).unwrap();
        assert!(cross_entropy(&Tensor::zeros(&dev, &[2, 0]).unwrap(), &l2).is_err());
        let l0 = Tensor::from_u32(&dev, &[0], &[]).unwrap();
        assert!(cross_entropy(&Tensor::zeros(&dev, &[0, 3]).unwrap(), &l0).is_err());
        assert_eq!(softmax(&Tensor::zeros(&dev, &[0, 3]).unwrap()).unwrap().shape(), [0, 3]);
    }
}

#[test]
fn gpu_labels_out_of_range_are_clamped_not_read_out_of_bounds() {
    // Documented behaviour: GPU labels are not read back; a label >= cols acts as cols - 1.
    let Some(dev) = wgpu_device() else { return };
    let z = [0.5f32, -1.0, 2.0, 0.0, 3.0, 1.0];
    let zg = Tensor::from_vec(&dev, &[2, 3], z.to_vec()).unwrap();
    let bad = Tensor::from_u32(&dev, &[2], &[7, u32::MAX]).unwrap();
    let clamped = Tensor::from_u32(&Device::Reference, &[2], &[2, 2]).unwrap();
    let got = cross_entropy(&zg, &bad).unwrap().to_vec().unwrap();
    let want = cross_entropy(&cpu_t(&[2, 3], &z), &clamped).unwrap().to_vec().unwrap();
    assert_close("clamped loss", &got, &want, 1e-5, 1e-6);
    let got = cross_entropy_backward(&zg, &bad, 0.5).unwrap().to_vec().unwrap();
    let want = cross_entropy_backward(&cpu_t(&[2, 3], &z), &clamped, 0.5).unwrap().to_vec().unwrap();
    assert_close("clamped gradient", &got, &want, 1e-5, 1e-6);
}
