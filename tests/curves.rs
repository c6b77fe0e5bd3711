//! Trained curves between two optima: endpoints and affine coefficients, the bend's gradient
//! against finite differences, and training that lowers the loss in the curve's middle.

mod common;
use common::*;
use geopath::data::Split;
use geopath::experiments::curves::{train_bend, BendTraining, Curve, CurveKind};
use geopath::experiments::runner::forward_flops;
use geopath::experiments::runner::Budget;
use geopath::ops::{elementwise as ew, flat};
use geopath::{autodiff, Device, Tensor};

const KINDS: [CurveKind; 2] = [CurveKind::Bezier, CurveKind::Polychain];

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    a.to_vec().unwrap().iter().zip(b.to_vec().unwrap()).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn curves_run_from_a_to_b_through_affine_points() {
    let dev = Device::Reference;
    let mut rng = Rng::new(1);
    let a = Tensor::from_vec(&dev, &[50], rng.vec(50)).unwrap();
    let b = Tensor::from_vec(&dev, &[50], rng.vec(50)).unwrap();
    for kind in KINDS {
        let mut c = Curve::new(kind, &a, &b).unwrap();
        // Untrained: the straight line, of length |A - B|.
        let mid = ew::axpby(0.5, &a, 0.5, &b).unwrap();
        assert!(max_diff(&c.point(0.5).unwrap(), &mid) < 1e-6);
        let straight = flat::norm(&ew::sub(&a, &b).unwrap()).unwrap() as f64;
        assert!((c.length(64).unwrap() - straight).abs() < 1e-4 * straight, "{kind:?}");
        c.bend = Tensor::from_vec(&dev, &[50], rng.vec(50)).unwrap();
        assert!(max_diff(&c.point(0.0).unwrap(), &a) < 1e-6 && max_diff(&c.point(1.0).unwrap(), &b) < 1e-6);
        for t in [0.0, 0.1, 0.25, 0.5, 0.7, 1.0] {
            let w = c.coefficients(t);
            assert!((w.iter().sum::<f32>() - 1.0).abs() < 1e-6, "{kind:?} at {t}: {w:?}");
        }
        // The polygonal chain passes through its bend at t = 1/2.
        if kind == CurveKind::Polychain {
            assert!(max_diff(&c.point(0.5).unwrap(), &c.bend) < 1e-6);
        }
    }
}

#[test]
fn the_bend_gradient_matches_finite_differences() {
    let dev = Device::Reference;
    let net = toy_mlp(&dev, 10);
    let data = toy_dataset(64, 3);
    let (x, y) = geopath::geodesic::step::batch_at(&data, &(0..64).collect::<Vec<_>>(), &dev).unwrap();
    let (a, b) = (toy_network(&net, &data, 1, &dev), toy_network(&net, &data, 2, &dev));
    let mut rng = Rng::new(5);
    let n = a.numel();
    let v = Tensor::from_vec(&dev, &[n], rng.vec(n)).unwrap();
    for kind in KINDS {
        let c = Curve::new(kind, &a, &b).unwrap();
        for t in [0.3f32, 0.6] {
            let (_, g) = autodiff::loss_grad(&net, &c.point(t).unwrap(), &x, &y).unwrap();
            let want = c.coefficients(t)[1] as f64 * flat::dot_value(&g, &v).unwrap() as f64;
            let loss_at = |eps: f32| {
                let mut moved = c.clone();
                moved.bend = ew::axpby(1.0, &c.bend, eps, &v).unwrap();
                autodiff::loss_grad(&net, &moved.point(t).unwrap(), &x, &y).unwrap().0.to_vec().unwrap()[0] as f64
            };
            let h = 1e-2;
            let got = (loss_at(h) - loss_at(-h)) / (2.0 * h as f64);
            assert!((got - want).abs() < 0.02 * want.abs().max(1e-3), "{kind:?} t {t}: {got} vs {want}");
        }
    }
}

#[test]
fn training_the_bend_lowers_the_loss_in_the_middle_of_the_curve() {
    let Some(dev) = test_device() else { return };
    let net = toy_mlp(&dev, 10);
    let split = Split::of(&toy_dataset(800, 1)).unwrap();
    let (a, b) = (toy_network(&net, &split.fit, 11, &dev), toy_network(&net, &split.fit, 12, &dev));
    let (x, y) = geopath::geodesic::step::batch_at(&split.validation, &(0..160).collect::<Vec<_>>(), &dev).unwrap();
    let loss = |w: &Tensor| autodiff::loss_grad(&net, w, &x, &y).unwrap().0.to_vec().unwrap()[0];
    let unit = forward_flops(&net, 50, &dev).unwrap();
    for kind in KINDS {
        let mut c = Curve::new(kind, &a, &b).unwrap();
        let before = loss(&c.point(0.5).unwrap());
        let o = BendTraining { net: &net, fit: &split.fit, batch: 50, lr: 0.05, cosine: false, seed: 7, device: &dev };
        let budget = Budget::start(600 * unit);
        let mut steps = 0;
        train_bend(&mut c, &o, &budget, &mut |_| {
            steps += 1;
            Ok(())
        })
        .unwrap();
        let after = loss(&c.point(0.5).unwrap());
        assert!(steps > 50 && after < 0.8 * before, "{kind:?}: {steps} steps, loss {before} -> {after}");
        assert!(max_diff(&c.point(0.0).unwrap(), &a) < 1e-6 && max_diff(&c.point(1.0).unwrap(), &b) < 1e-6);
    }
}

#[test]
fn refreshed_batchnorm_statistics_are_the_cumulative_average_of_the_batches() {
    use geopath::experiments::curves::refresh_batchnorm;
    let dev = Device::Reference;
    let spec =
        geopath::nn::spec::parse("conv 4 3 pad=1\nbatchnorm\nrelu\nflatten\nlinear classes\n", "test", "bn").unwrap();
    let net = geopath::nn::network::Network::new(&spec, [1, 4, 4], 10, &dev).unwrap();
    let w = net.init_params(3).unwrap();
    let data = toy_dataset(200, 4);
    // Fresh statistics (mean 0, variance 1) are far from the data's: eval and train differ.
    let (x0, _) = geopath::geodesic::step::batch_at(&data, &(0..100).collect::<Vec<_>>(), &dev).unwrap();
    let stale = autodiff::forward(&net, &w, &x0).unwrap().to_vec().unwrap();
    net.set_train(true);
    let batch_stats = autodiff::forward(&net, &w, &x0).unwrap().to_vec().unwrap();
    net.set_train(false);
    assert!(stale.iter().zip(&batch_stats).any(|(a, b)| (a - b).abs() > 0.05), "the check below can fail");
    let mean_after = |d: &geopath::data::Dataset, batches: usize| {
        refresh_batchnorm(&net, &w, d, batches, 100, &dev).unwrap();
        let b = net.buffers().unwrap();
        b.iter().find(|(n, _)| n.ends_with("running_mean")).unwrap().1.clone()
    };
    let first = data.subset(&(0..100).collect::<Vec<_>>());
    let second = data.subset(&(100..200).collect::<Vec<_>>());
    let (m1, m2, both) = (mean_after(&first, 1), mean_after(&second, 1), mean_after(&data, 2));
    for c in 0..4 {
        assert!((both[c] - 0.5 * (m1[c] + m2[c])).abs() < 1e-5, "channel {c}: {both:?} vs {m1:?}, {m2:?}");
    }
    // With the statistics of one batch, eval mode on that batch is training mode on it (up to
    // the unbiased variance of 1600 elements per channel).
    refresh_batchnorm(&net, &w, &first, 1, 100, &dev).unwrap();
    let (x, _) = geopath::geodesic::step::batch_at(&first, &(0..100).collect::<Vec<_>>(), &dev).unwrap();
    let eval = autodiff::forward(&net, &w, &x).unwrap().to_vec().unwrap();
    net.set_train(true);
    let train = autodiff::forward(&net, &w, &x).unwrap().to_vec().unwrap();
    net.set_train(false);
    assert_close("eval after refresh vs train", &eval, &train, 2e-3, 2e-3);
}
