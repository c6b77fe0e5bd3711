//! 2-D max pooling: the CPU reference against finite differences, every GPU kernel against the
//! CPU reference (overlapping windows included), and shape errors.

mod common;
use common::*;
use geopath::ops::pool::{maxpool2d, maxpool2d_backward, maxpool2d_jvp};
use geopath::{Device, Tensor};

/// (x shape, window, stride): odd sizes, overlapping (k > stride) and gapped (k < stride) windows.
const CASES: &[([usize; 4], usize, usize)] = &[
    ([2, 3, 7, 7], 2, 2),
    ([2, 3, 7, 7], 3, 2),
    ([2, 3, 8, 9], 3, 1),
    ([1, 5, 9, 6], 2, 3),
    ([3, 2, 5, 11], 3, 3),
    ([2, 4, 4, 4], 4, 1),
    ([1, 1, 1, 1], 1, 1),
];

/// Random values with gaps of at least 1e-2 between any two (so a 1e-3 step keeps every argmax).
fn distinct(rng: &mut Rng, n: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..n).map(|i| (i as f32 - n as f32 / 2.0) * 1e-2).collect();
    for i in (1..n).rev() {
        v.swap(i, rng.below(i + 1));
    }
    v
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

fn out_shape(x: &[usize; 4], k: usize, s: usize) -> [usize; 4] {
    [x[0], x[1], (x[2] - k) / s + 1, (x[3] - k) / s + 1]
}

#[test]
fn cpu_maxpool_backward_and_jvp_match_finite_differences() {
    let mut rng = Rng::new(31);
    let eps = 1e-3f32;
    for &(shape, k, s) in CASES {
        let n: usize = shape.iter().product();
        let xv = distinct(&mut rng, n);
        let v = rng.vec(n);
        let gy = rng.vec(out_shape(&shape, k, s).iter().product());
        let cpu = |d: Vec<f32>| Tensor::from_vec(&Device::Reference, &shape, d).unwrap();
        let pool = |sign: f32| {
            let shifted: Vec<f32> = xv.iter().zip(&v).map(|(x, d)| x + sign * eps * d).collect();
            maxpool2d(&cpu(shifted), k, s).unwrap().0.to_vec().unwrap()
        };
        let (plus, minus) = (pool(1.0), pool(-1.0));
        let fd: Vec<f32> = plus.iter().zip(&minus).map(|(p, m)| (p - m) / (2.0 * eps)).collect();
        let (y, dy, idx) = maxpool2d_jvp(&cpu(xv.clone()), &cpu(v.clone()), k, s).unwrap();
        let what = format!("{shape:?} k={k} s={s}");
        assert_close(&format!("jvp {what}"), &dy.to_vec().unwrap(), &fd, 1e-3, 1e-3);
        let (y2, idx2) = maxpool2d(&cpu(xv.clone()), k, s).unwrap();
        assert_eq!(y.to_vec().unwrap(), y2.to_vec().unwrap());
        assert_eq!(idx.to_u32().unwrap(), idx2.to_u32().unwrap());
        let gyt = Tensor::from_vec(&Device::Reference, idx.shape(), gy.clone()).unwrap();
        let gx = maxpool2d_backward(&gyt, &idx, &shape).unwrap().to_vec().unwrap();
        let (lhs, rhs) = (dot(&gx, &v), dot(&gy, &fd));
        assert!((lhs - rhs).abs() <= 1e-3 * (1.0 + rhs.abs()), "backward {what}: {lhs} vs {rhs}");
    }
}

#[test]
fn maxpool2d_indices_are_flat_input_offsets_of_the_first_maximum() {
    let x = [
        1.0, 5.0, 2.0, 2.0, /* row 1 */ 5.0, 0.0, 2.0, -1.0, /* plane 2 */ 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 3.0,
        0.0,
    ];
    let mut devices = vec![Device::Reference];
    devices.extend(test_device());
    for dev in &devices {
        let xt = Tensor::from_vec(dev, &[1, 2, 2, 4], x.to_vec()).unwrap();
        let (y, idx) = maxpool2d(&xt, 2, 2).unwrap();
        assert_eq!(y.shape(), [1, 2, 1, 2]);
        assert_eq!(y.to_vec().unwrap(), [5.0, 2.0, 0.0, 3.0], "{dev:?}");
        assert_eq!(idx.to_u32().unwrap(), [1, 2, 8, 14], "{dev:?}");
        let gy = Tensor::from_vec(dev, &[1, 2, 1, 2], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let gx = maxpool2d_backward(&gy, &idx, &[1, 2, 2, 4]).unwrap().to_vec().unwrap();
        let mut want = [0.0; 16];
        want[1] = 1.0;
        want[2] = 2.0;
        want[8] = 3.0;
        want[14] = 4.0;
        assert_eq!(gx, want, "{dev:?}");
    }
}

/// Compares all three GPU kernels with the CPU reference on `x` values `xv`.
fn check_gpu(dev: &Device, rng: &mut Rng, shape: &[usize; 4], k: usize, s: usize, xv: Vec<f32>) {
    let what = format!("{shape:?} k={k} s={s}");
    let n = xv.len();
    let dxv = rng.vec(n);
    let x = Tensor::from_vec(dev, shape, xv.clone()).unwrap();
    let dx = Tensor::from_vec(dev, shape, dxv.clone()).unwrap();
    let xc = Tensor::from_vec(&Device::Reference, shape, xv).unwrap();
    let dxc = Tensor::from_vec(&Device::Reference, shape, dxv).unwrap();
    let (y, idx) = maxpool2d(&x, k, s).unwrap();
    let (yc, idxc) = maxpool2d(&xc, k, s).unwrap();
    assert_eq!(y.shape(), out_shape(shape, k, s));
    assert_eq!(y.to_vec().unwrap(), yc.to_vec().unwrap(), "maxpool2d {what}");
    assert_eq!(idx.to_u32().unwrap(), idxc.to_u32().unwrap(), "maxpool2d indices {what}");
    let (y2, dy, idx2) = maxpool2d_jvp(&x, &dx, k, s).unwrap();
    let (_, dyc, _) = maxpool2d_jvp(&xc, &dxc, k, s).unwrap();
    assert_eq!(y2.to_vec().unwrap(), yc.to_vec().unwrap(), "maxpool2d_jvp {what}");
    assert_eq!(idx2.to_u32().unwrap(), idxc.to_u32().unwrap(), "maxpool2d_jvp indices {what}");
    assert_eq!(dy.to_vec().unwrap(), dyc.to_vec().unwrap(), "maxpool2d_jvp tangent {what}");
    let gyv = rng.vec(y.numel());
    let gy = Tensor::from_vec(dev, y.shape(), gyv.clone()).unwrap();
    let gyc = Tensor::from_vec(&Device::Reference, y.shape(), gyv).unwrap();
    let gx = maxpool2d_backward(&gy, &idx, shape).unwrap();
    let gxc = maxpool2d_backward(&gyc, &idxc, shape).unwrap();
    assert_eq!(gx.shape(), shape);
    // At most ceil(k / s)^2 terms per element: tiny tolerance.
    assert_close(&format!("maxpool2d_backward {what}"), &gx.to_vec().unwrap(), &gxc.to_vec().unwrap(), 1e-6, 1e-6);
}

#[test]
fn maxpool2d_kernels_match_cpu_reference_with_overlapping_windows() {
    let Some(dev) = test_device() else { return };
    let mut rng = Rng::new(32);
    for &(shape, k, s) in CASES {
        let n = shape.iter().product();
        let xv = rng.vec(n);
        check_gpu(&dev, &mut rng, &shape, k, s, xv);
        // Heavy ties (values in {-1, -0.5, 0, 0.5}) exercise the first-maximum rule, and an
        // overlapping argmax shared by neighbouring windows exercises the summing backward.
        let ties: Vec<f32> = (0..n).map(|_| (rng.below(4) as f32 - 2.0) * 0.5).collect();
        check_gpu(&dev, &mut rng, &shape, k, s, ties);
    }
}

#[test]
fn maxpool2d_on_large_activations_matches_cpu_reference() {
    // N = 200, C = 64, 32 x 32: 13 M input elements, over 65535 workgroups per dimension for
    // per-element dispatches.
    let Some(dev) = test_device() else { return };
    let mut rng = Rng::new(33);
    let shape = [200, 64, 32, 32];
    let xv = rng.vec(shape.iter().product());
    check_gpu(&dev, &mut rng, &shape, 2, 2, xv);
}

#[test]
fn maxpool2d_shape_errors_name_the_shapes() {
    let dev = test_device().unwrap_or(Device::Reference);
    let z = |s: &[usize]| Tensor::zeros(&dev, s).unwrap();
    let e = maxpool2d(&z(&[2, 3, 7]), 2, 2).unwrap_err().to_string();
    assert!(e.contains("[2, 3, 7]"), "{e}");
    let e = maxpool2d(&z(&[1, 1, 2, 5]), 3, 1).unwrap_err().to_string();
    assert!(e.contains("[1, 1, 2, 5]"), "{e}");
    assert!(maxpool2d(&z(&[1, 1, 4, 4]), 2, 0).is_err());
    assert!(maxpool2d(&z(&[1, 1, 4, 4]), 0, 1).is_err());
    let e = maxpool2d_jvp(&z(&[1, 2, 4, 4]), &z(&[1, 2, 4, 5]), 2, 2).unwrap_err().to_string();
    assert!(e.contains("[1, 2, 4, 4]") && e.contains("[1, 2, 4, 5]"), "{e}");
    let (_, idx) = maxpool2d(&z(&[1, 2, 4, 4]), 2, 2).unwrap();
    let e = maxpool2d_backward(&z(&[1, 2, 2, 3]), &idx, &[1, 2, 4, 4]).unwrap_err().to_string();
    assert!(e.contains("[1, 2, 2, 3]") && e.contains("[1, 2, 2, 2]"), "{e}");
    let e = maxpool2d_backward(&z(&[1, 2, 2, 2]), &idx, &[1, 3, 4, 4]).unwrap_err().to_string();
    assert!(e.contains("[1, 2, 2, 2]") && e.contains("[1, 3, 4, 4]"), "{e}");
    let e = maxpool2d_backward(&z(&[1, 2, 2, 2]), &idx, &[2, 4, 4]).unwrap_err().to_string();
    assert!(e.contains("[2, 4, 4]"), "{e}");
}

#[test]
fn maxpool2d_with_an_empty_batch_gives_empty_outputs() {
    let mut devices = vec![Device::Reference];
    devices.extend(test_device());
    for dev in &devices {
        let x = Tensor::zeros(dev, &[0, 3, 6, 6]).unwrap();
        let (y, idx) = maxpool2d(&x, 2, 2).unwrap();
        assert_eq!((y.shape(), idx.shape()), ([0, 3, 3, 3].as_slice(), [0, 3, 3, 3].as_slice()));
        let (_, dy, _) = maxpool2d_jvp(&x, &x, 2, 2).unwrap();
        assert_eq!(dy.numel(), 0);
        assert_eq!(maxpool2d_backward(&y, &idx, &[0, 3, 6, 6]).unwrap().numel(), 0);
    }
}
