//! Flat weight-vector ops: magnitude threshold (radix select) against a CPU sort, the other ops
//! on the GPU against the CPU reference.

mod common;
use common::*;
use geopath::ops::flat::{axpy, count_zeros, dot_value, magnitude_threshold, mask, norm, prune, prune_mask};
use geopath::reference::flat::prune_count;
use geopath::{Device, Tensor};

/// Sorted magnitudes, the oracle of `magnitude_threshold`.
fn sorted_magnitudes(x: &[f32]) -> Vec<f32> {
    let mut s: Vec<f32> = x.iter().map(|v| v.abs()).collect();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    s
}

/// Checks `t` against the documented rule: 0 for k = 0, s[k] for k < n, just above s[n-1] for
/// k = n; and what pruning at `t` removes.
fn check_threshold(what: &str, x: &[f32], fraction: f32, t: f32) {
    let n = x.len();
    let s = sorted_magnitudes(x);
    let k = prune_count(fraction, n);
    assert!(k <= n && (k as f64 - fraction as f64 * n as f64).abs() <= 1.0, "{what}: k {k}");
    let below = x.iter().filter(|v| v.abs() < t).count();
    if k == 0 {
        assert_eq!(t, 0.0, "{what}: fraction {fraction}");
    } else if k < n {
        assert_eq!(t, s[k], "{what}: fraction {fraction}, k {k}");
        assert!(below <= k, "{what}: {below} below t, k {k}");
        if s[k - 1] < s[k] {
            assert_eq!(below, k, "{what}: no tie at the boundary");
        }
    } else {
        assert!(t > s[n - 1] && t == f32::from_bits(s[n - 1].to_bits() + 1), "{what}: t {t} vs max {}", s[n - 1]);
        assert_eq!(below, n, "{what}: fraction 1 prunes everything");
    }
}

/// Data with many ties (steps of 0.1), exact zeros of both signs, and distinct values.
fn tied_data(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| match i % 5 {
            0 => (rng.uniform() * 20.0).round() / 10.0,
            1 => rng.uniform(),
            2 if i % 3 == 0 => -0.0,
            _ => rng.uniform() * 1e-3,
        })
        .collect()
}

const FRACTIONS: [f32; 9] = [0.0, 1e-6, 0.1, 0.2, 0.5, 0.7, 0.9, 0.999, 1.0];

#[test]
fn cpu_reference_matches_sorting_and_formulas() {
    let cpu = Device::Reference;
    let mut rng = Rng::new(30);
    for &n in &[1usize, 2, 7, 10, 1000] {
        let x = tied_data(&mut rng, n);
        let xt = Tensor::from_vec(&cpu, &[n], x.clone()).unwrap();
        for &f in &FRACTIONS {
            check_threshold(&format!("cpu n={n}"), &x, f, magnitude_threshold(&xt, f).unwrap());
        }
    }
    assert_eq!(prune_count(0.7, 10), 7);
    assert_eq!(prune_count(0.3, 10), 3);
    assert_eq!(prune_count(0.35, 10), 3);
    assert_eq!(prune_count(1.0, 10), 10);
    let x = Tensor::from_vec(&cpu, &[5], vec![-2.0, 0.5, 0.0, -0.0, 3.0]).unwrap();
    let y = Tensor::from_vec(&cpu, &[5], vec![1.0, 1.0, 1.0, 1.0, 1.0]).unwrap();
    let m = Tensor::from_vec(&cpu, &[5], vec![1.0, 0.0, 1.0, 0.0, 1.0]).unwrap();
    assert_eq!(axpy(2.0, &x, &y).unwrap().to_vec().unwrap(), vec![-3.0, 2.0, 1.0, 1.0, 7.0]);
    assert_eq!(mask(&x, &m).unwrap().to_vec().unwrap(), vec![-2.0, 0.0, 0.0, -0.0, 3.0]);
    assert_eq!(prune_mask(&x, 2.0).unwrap().to_vec().unwrap(), vec![1.0, 0.0, 0.0, 0.0, 1.0]);
    assert_eq!(prune(&x, 0.5).unwrap().to_vec().unwrap(), vec![-2.0, 0.5, 0.0, 0.0, 3.0]);
    assert_eq!(count_zeros(&x).unwrap(), 2);
    assert!((norm(&x).unwrap() - (4.0f32 + 0.25 + 9.0).sqrt()).abs() < 1e-6);
    assert_eq!(dot_value(&x, &y).unwrap(), 1.5);
}

#[test]
fn gpu_magnitude_threshold_is_exact_on_tied_data() {
    let Some(dev) = test_device() else { return };
    let mut rng = Rng::new(31);
    for &n in &[1usize, 7, 1000, 100_003] {
        let x = tied_data(&mut rng, n);
        let xg = Tensor::from_vec(&dev, &[n], x.clone()).unwrap();
        let xc = Tensor::from_vec(&Device::Reference, &[n], x.clone()).unwrap();
        for &f in &FRACTIONS {
            let t = magnitude_threshold(&xg, f).unwrap();
            check_threshold(&format!("gpu n={n}"), &x, f, t);
            assert_eq!(t, magnitude_threshold(&xc, f).unwrap(), "gpu vs cpu n={n} fraction {f}");
        }
    }
}

#[test]
fn gpu_magnitude_threshold_on_three_million_weights_and_extreme_values() {
    let Some(dev) = test_device() else { return };
    let mut rng = Rng::new(32);
    let n = 3_000_017;
    let x: Vec<f32> = (0..n).map(|_| rng.uniform() * 0.05).collect();
    let xg = Tensor::from_vec(&dev, &[n], x.clone()).unwrap();
    for &f in &[0.5f32, 0.9] {
        check_threshold("gpu n=3M", &x, f, magnitude_threshold(&xg, f).unwrap());
    }
    // Subnormals, huge values and infinities order by their bit patterns too.
    let x = vec![
        f32::from_bits(1),
        -f32::from_bits(3),
        1e-40,
        f32::MAX,
        -f32::INFINITY,
        0.0,
        1e30,
        -5.0,
        f32::MIN_POSITIVE,
    ];
    let xg = Tensor::from_vec(&dev, &[x.len()], x.clone()).unwrap();
    for k in 1..x.len() {
        let f = k as f32 / x.len() as f32;
        check_threshold("gpu extremes", &x, f, magnitude_threshold(&xg, f).unwrap());
    }
    // k = n with +inf present: the threshold saturates at +inf.
    assert_eq!(magnitude_threshold(&xg, 1.0).unwrap(), f32::INFINITY);
}

#[test]
fn gpu_flat_ops_match_cpu_reference() {
    let Some(dev) = test_device() else { return };
    let mut rng = Rng::new(33);
    for &n in &[1usize, 3, 255, 257, 1000, 65_537] {
        let x = tied_data(&mut rng, n);
        let y = rng.vec(n);
        let m: Vec<f32> = (0..n).map(|_| (rng.below(2)) as f32).collect();
        let g = |v: &Vec<f32>| Tensor::from_vec(&dev, &[n], v.clone()).unwrap();
        let c = |v: &Vec<f32>| Tensor::from_vec(&Device::Reference, &[n], v.clone()).unwrap();
        let v = |t: Tensor| t.to_vec().unwrap();
        let what = |op: &str| format!("{op} n={n}");
        assert_close(
            &what("axpy"),
            &v(axpy(-0.3, &g(&x), &g(&y)).unwrap()),
            &v(axpy(-0.3, &c(&x), &c(&y)).unwrap()),
            1e-6,
            1e-7,
        );
        assert_eq!(v(mask(&g(&x), &g(&m)).unwrap()), v(mask(&c(&x), &c(&m)).unwrap()), "{}", what("mask"));
        for t in [0.0f32, 1e-3, 0.1, 0.5, 2.0] {
            assert_eq!(v(prune(&g(&x), t).unwrap()), v(prune(&c(&x), t).unwrap()), "{} t={t}", what("prune"));
            assert_eq!(
                v(prune_mask(&g(&x), t).unwrap()),
                v(prune_mask(&c(&x), t).unwrap()),
                "{} t={t}",
                what("prune_mask")
            );
        }
        assert_eq!(count_zeros(&g(&x)).unwrap(), count_zeros(&c(&x)).unwrap(), "{}", what("count_zeros"));
        let nz = norm(&c(&x)).unwrap();
        assert!((norm(&g(&x)).unwrap() - nz).abs() <= 1e-5 * nz + 1e-7, "{}", what("norm"));
        let d = dot_value(&c(&x), &c(&y)).unwrap();
        let tol = 4e-6 * (n as f32).sqrt() + 1e-6;
        assert!((dot_value(&g(&x), &g(&y)).unwrap() - d).abs() <= tol, "{}", what("dot_value"));
    }
    // Pruning at the threshold of a fraction prunes that fraction (distinct magnitudes).
    let n = 10_007;
    let x: Vec<f32> = (0..n).map(|i| (i as f32 + 1.0) * if i % 2 == 0 { 1.0 } else { -1.0 }).collect();
    let xg = Tensor::from_vec(&dev, &[n], x).unwrap();
    let t = magnitude_threshold(&xg, 0.3).unwrap();
    assert_eq!(count_zeros(&prune(&xg, t).unwrap()).unwrap(), prune_count(0.3, n));
    assert_eq!(count_zeros(&prune_mask(&xg, t).unwrap()).unwrap(), prune_count(0.3, n));
}

#[test]
fn bad_arguments_are_errors() {
    for dev in [Some(Device::Reference), test_device()].into_iter().flatten() {
        let x = Tensor::zeros(&dev, &[4]).unwrap();
        for f in [-0.1f32, 1.01, f32::NAN, f32::INFINITY] {
            assert!(magnitude_threshold(&x, f).is_err(), "fraction {f}");
        }
        assert_eq!(magnitude_threshold(&Tensor::zeros(&dev, &[0]).unwrap(), 0.5).unwrap(), 0.0);
        assert!(prune(&x, f32::NAN).is_err());
        assert!(prune_mask(&x, f32::NAN).is_err());
        let y = Tensor::zeros(&dev, &[2, 2]).unwrap();
        for e in [axpy(1.0, &x, &y).unwrap_err(), mask(&x, &y).unwrap_err(), dot_value(&x, &y).unwrap_err()] {
            let e = e.to_string();
            assert!(e.contains("[4]") && e.contains("[2, 2]"), "{e}");
        }
    }
}
