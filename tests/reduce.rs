//! Reductions on the GPU against f64 sums and the CPU reference.

mod common;
use common::*;
use geopath::ops::reduce::{argmax_rows, dot, max, sqnorm, sum, sum_rows};
use geopath::{Device, Tensor};

fn scalar(t: Tensor) -> f32 {
    assert_eq!(t.shape(), [1]);
    t.to_vec().unwrap()[0]
}

fn f64_sum(x: &[f32]) -> f64 {
    x.iter().map(|&v| v as f64).sum()
}

#[test]
fn cpu_reference_matches_f64_formulas() {
    let cpu = Device::Reference;
    let mut rng = Rng::new(10);
    let (x, xv) = rand_tensor(&cpu, &mut rng, &[7, 13]);
    let (y, yv) = rand_tensor(&cpu, &mut rng, &[7, 13]);
    assert!((scalar(sum(&x).unwrap()) as f64 - f64_sum(&xv)).abs() < 1e-6);
    let want_dot: f64 = xv.iter().zip(&yv).map(|(&a, &b)| a as f64 * b as f64).sum();
    assert!((scalar(dot(&x, &y).unwrap()) as f64 - want_dot).abs() < 1e-6);
    let want_sq: f64 = xv.iter().map(|&a| a as f64 * a as f64).sum();
    assert!((scalar(sqnorm(&x).unwrap()) as f64 - want_sq).abs() < 1e-5);
    let want_max = xv.iter().cloned().fold(f32::MIN, f32::max);
    assert_eq!(scalar(max(&x).unwrap()), want_max);
    let cols = sum_rows(&x).unwrap().to_vec().unwrap();
    for c in 0..13 {
        let want: f64 = (0..7).map(|r| xv[r * 13 + c] as f64).sum();
        assert!((cols[c] as f64 - want).abs() < 1e-6, "column {c}");
    }
    let idx = argmax_rows(&x).unwrap().to_u32().unwrap();
    for r in 0..7 {
        let row = &xv[r * 13..(r + 1) * 13];
        let m = row.iter().cloned().fold(f32::MIN, f32::max);
        assert_eq!(idx[r] as usize, row.iter().position(|&v| v == m).unwrap(), "row {r}");
    }
    // Ties go to the first index.
    let t = Tensor::from_vec(&cpu, &[2, 4], vec![1.0, 3.0, 3.0, 0.0, -2.0, -2.0, -5.0, -2.0]).unwrap();
    assert_eq!(argmax_rows(&t).unwrap().to_u32().unwrap(), vec![1, 0]);
}

#[test]
fn whole_tensor_reductions_match_f64_on_odd_sizes_up_to_three_million() {
    let Some(dev) = test_device() else { return };
    let mut rng = Rng::new(11);
    for &n in &[1usize, 3, 255, 257, 1000, 4097, 65_537, 3_000_017] {
        let (x, xv) = rand_tensor(&dev, &mut rng, &[n]);
        let (y, yv) = rand_tensor(&dev, &mut rng, &[n]);
        let tol = 4e-6 * (n as f64).sqrt() + 1e-6;
        let got = scalar(sum(&x).unwrap()) as f64;
        let want = f64_sum(&xv);
        assert!((got - want).abs() <= tol, "sum n={n}: got {got}, want {want}, tol {tol}");
        let got = scalar(dot(&x, &y).unwrap()) as f64;
        let want: f64 = xv.iter().zip(&yv).map(|(&a, &b)| a as f64 * b as f64).sum();
        assert!((got - want).abs() <= tol, "dot n={n}: got {got}, want {want}, tol {tol}");
        let got = scalar(sqnorm(&x).unwrap()) as f64;
        let want: f64 = xv.iter().map(|&a| a as f64 * a as f64).sum();
        assert!((got - want).abs() <= 1e-5 * want + 1e-6, "sqnorm n={n}: got {got}, want {want}");
        // Max of all-negative data checks the -inf identity of partially filled workgroups.
        let neg: Vec<f32> = xv.iter().map(|v| -1.5 - v.abs()).collect();
        let want = neg.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let negt = Tensor::from_vec(&dev, &[n], neg).unwrap();
        assert_eq!(scalar(max(&negt).unwrap()), want, "max n={n}");
        // The maximum at the very last element.
        let mut v = xv.clone();
        v[n - 1] = 7.0;
        assert_eq!(scalar(max(&Tensor::from_vec(&dev, &[n], v).unwrap()).unwrap()), 7.0, "max at end n={n}");
    }
}

#[test]
fn sum_of_a_large_constant_vector_is_accurate() {
    // A serial f32 sum of 3 M copies of 0.1 drifts by ~1e-2 relative; the tree order must not.
    let Some(dev) = test_device() else { return };
    let n = 3_000_001;
    let x = Tensor::full(&dev, &[n], 0.1).unwrap();
    let got = scalar(sum(&x).unwrap()) as f64;
    let want = n as f64 * 0.1f32 as f64;
    assert!((got - want).abs() <= 1e-5 * want, "got {got}, want {want}");
}

#[test]
fn sum_rows_and_argmax_rows_match_cpu_reference() {
    let Some(dev) = test_device() else { return };
    let mut rng = Rng::new(12);
    for &(r, c) in &[(1, 1), (3, 5), (255, 10), (257, 3), (1000, 17), (65, 300), (4097, 7), (1, 1000)] {
        let v: Vec<f32> = (0..r * c).map(|_| (rng.uniform() * 4.0).round()).collect(); // ties
        let x = Tensor::from_vec(&dev, &[r, c], v.clone()).unwrap();
        let xc = Tensor::from_vec(&Device::Reference, &[r, c], v).unwrap();
        let got = sum_rows(&x).unwrap();
        assert_eq!(got.shape(), [c]);
        let want = sum_rows(&xc).unwrap().to_vec().unwrap();
        assert_close(&format!("sum_rows {r}x{c}"), &got.to_vec().unwrap(), &want, 1e-6, 1e-5);
        let got = argmax_rows(&x).unwrap();
        assert_eq!(got.shape(), [r]);
        assert_eq!(got.to_u32().unwrap(), argmax_rows(&xc).unwrap().to_u32().unwrap(), "argmax_rows {r}x{c}");
    }
}

#[test]
fn empty_inputs_and_shape_errors() {
    for dev in [Some(Device::Reference), test_device()].into_iter().flatten() {
        let e = Tensor::zeros(&dev, &[0]).unwrap();
        assert_eq!(scalar(sum(&e).unwrap()), 0.0);
        assert_eq!(scalar(sqnorm(&e).unwrap()), 0.0);
        assert!(max(&e).is_err());
        let a = Tensor::zeros(&dev, &[3, 4]).unwrap();
        let b = Tensor::zeros(&dev, &[4, 3]).unwrap();
        let msg = dot(&a, &b).unwrap_err().to_string();
        assert!(msg.contains("[3, 4]") && msg.contains("[4, 3]"), "{msg}");
        let flat = Tensor::zeros(&dev, &[12]).unwrap();
        assert!(sum_rows(&flat).unwrap_err().to_string().contains("[12]"));
        assert!(argmax_rows(&flat).is_err());
        assert!(argmax_rows(&Tensor::zeros(&dev, &[2, 0]).unwrap()).is_err());
        let no_rows = Tensor::zeros(&dev, &[0, 5]).unwrap();
        assert_eq!(sum_rows(&no_rows).unwrap().to_vec().unwrap(), vec![0.0; 5]);
        assert_eq!(argmax_rows(&no_rows).unwrap().shape(), [0]);
    }
}
