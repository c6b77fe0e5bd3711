//! `sparsify` end to end on a small generated data set: the path reaches the target sparsity,
//! the baseline runs with the same budget, and every output file is written.

mod common;
use common::*;
use geopath::data::Split;
use geopath::geodesic::sparsify::{self, SparsifyConfig};
use geopath::geodesic::step::StepMethod;
use geopath::geodesic::MetricKind;
use geopath::nn::{network::Network, spec};
use geopath::Tensor;

#[test]
fn sparsify_reaches_the_target_and_writes_every_output() {
    let Some(dev) = test_device() else { return };
    let net = toy_mlp(&dev, 10);
    let train = toy_dataset(600, 1);
    let test = toy_dataset(300, 2);
    let w = toy_network(&net, &train, 3, &dev);
    let out = std::env::temp_dir().join(format!("geopath-sparsify-{}", std::process::id()));
    for method in [StepMethod::TrustRegion, StepMethod::Penalty { lambda: 1.0 }] {
        let cfg = SparsifyConfig {
            sparsity: 0.7,
            method,
            metric: MetricKind::Fisher,
            eps: 0.1,
            steps: 60,
            batch: 50,
            cg_iter: 5,
            log_every: 20,
            eval_examples: 300,
            baseline_lrs: vec![0.01, 0.05],
            ..Default::default()
        };
        let r = sparsify::run(&net, &w, &Split::of(&train).unwrap(), &test, &cfg, &dev, &out, false).unwrap();
        // The hard-pruned result has (at least) the target fraction of zeros.
        assert!(r.sparsity >= 0.7 - 1e-3 && r.sparsity < 0.72, "{method:?}: sparsity {}", r.sparsity);
        assert!(r.baseline_sparsity >= 0.7 - 1e-3, "{}", r.baseline_sparsity);
        assert!(r.start_test_accuracy > 0.9, "the starting network learned the toy task: {}", r.start_test_accuracy);
        assert!(r.test_accuracy > 0.5 && r.baseline_test_accuracy > 0.5, "{r:?}");
        assert!(r.gradient_evaluations >= r.steps, "{r:?}");
        let summary = std::fs::read_to_string(out.join("summary.json")).unwrap();
        for key in ["\"sparsity\"", "\"test_accuracy\"", "\"baseline_test_accuracy\"", "\"gradient_evaluations\""] {
            assert!(summary.contains(key), "{key} missing: {summary}");
        }
        let csv = std::fs::read_to_string(out.join("path.csv")).unwrap();
        assert!(csv.starts_with("step,objective,"), "{csv}");
        assert_eq!(csv.lines().count(), 1 + 4, "rows at steps 0, 20, 40, 60: {csv}");
        let svg = std::fs::read_to_string(out.join("path.svg")).unwrap();
        assert_eq!(svg.matches("<polyline").count(), 3);
        let sparse = geopath::checkpoint::Checkpoint::load(&out.join("sparse.ckpt")).unwrap();
        let zeros = sparse.params.iter().filter(|v| **v == 0.0).count() as f64 / sparse.params.len() as f64;
        assert!((zeros - r.sparsity).abs() < 1e-9);
    }
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn a_ramped_path_with_a_last_stretch_counts_the_stretch_in_the_baselines_budget() {
    let Some(dev) = test_device() else { return };
    let net = toy_mlp(&dev, 10);
    let train = toy_dataset(600, 1);
    let test = toy_dataset(300, 2);
    let w = toy_network(&net, &train, 3, &dev);
    let out = std::env::temp_dir().join(format!("geopath-sparsify-ramp-{}", std::process::id()));
    let cfg = SparsifyConfig {
        sparsity: 0.8,
        method: StepMethod::Penalty { lambda: 1.0 },
        eps: 0.1,
        steps: 30,
        batch: 50,
        log_every: 10,
        eval_examples: 300,
        baseline_lrs: vec![0.01, 0.05],
        ramp: 20,
        finetune: 40,
        ..Default::default()
    };
    let r = sparsify::run(&net, &w, &Split::of(&train).unwrap(), &test, &cfg, &dev, &out, false).unwrap();
    // Two products per penalty step (its gradient, and the metric product measuring its
    // length; the zero step at the start included), plus the stretch.
    assert_eq!(r.path_evaluations, 60, "{r:?}");
    assert_eq!(r.gradient_evaluations, 60 + 40, "{r:?}");
    assert!(cfg.baseline_lrs.contains(&r.finetune_lr), "{r:?}");
    assert!(r.sparsity >= 0.8 - 1e-3 && r.sparsity < 0.82, "{r:?}");
    let summary = std::fs::read_to_string(out.join("summary.json")).unwrap();
    assert!(summary.contains("\"gradient_evaluations\": 100"), "{summary}");
    assert!(summary.contains("\"finetune_evaluations\": 40"), "{summary}");
    // The stretch keeps the path end's mask: the saved network's zeros are where the
    // hard-pruned path end has its zeros (at least), so its sparsity is not below the target.
    let sparse = geopath::checkpoint::Checkpoint::load(&out.join("sparse.ckpt")).unwrap();
    let zeros = sparse.params.iter().filter(|v| **v == 0.0).count() as f64 / sparse.params.len() as f64;
    assert!((zeros - r.sparsity).abs() < 1e-9);
    // The path's objective at step 0 is 0 with the ramp: the first logged row says so.
    let csv = std::fs::read_to_string(out.join("path.csv")).unwrap();
    let first: Vec<f64> = csv.lines().nth(1).unwrap().split(',').map(|v| v.parse().unwrap()).collect();
    assert_eq!(first[1], 0.0, "{csv}");
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn masked_finetuning_keeps_the_pruned_weights_at_zero_and_lowers_the_loss() {
    let Some(dev) = test_device() else { return };
    let net = toy_mlp(&dev, 10);
    let train = toy_dataset(600, 6);
    let w = net.init_params(5).unwrap();
    let wv = w.to_vec().unwrap();
    // Keep every other weight.
    let keep: Vec<f32> = (0..wv.len()).map(|i| (i % 2) as f32).collect();
    let mask = Tensor::from_vec(&dev, &[wv.len()], keep.clone()).unwrap();
    let start = geopath::ops::flat::mask(&w, &mask).unwrap();
    let (tuned, lr, scores) =
        sparsify::masked_finetune(&net, &start, &mask, &train, &train, 60, &[0.0, 0.05], 50, 0, &dev).unwrap();
    assert_eq!(scores.len(), 2);
    assert_eq!(lr, 0.05, "a rate of 0 leaves the untrained network: {scores:?}");
    assert!(scores[1] > scores[0] + 0.2, "{scores:?}");
    let tv = tuned.to_vec().unwrap();
    assert!(keep.iter().zip(&tv).all(|(k, v)| *k == 1.0 || *v == 0.0), "pruned weights moved");
    assert!(keep.iter().zip(tv.iter().zip(&wv)).any(|(k, (a, b))| *k == 1.0 && a != b), "kept weights moved");
}

#[test]
fn bad_sparsify_options_are_errors() {
    let dev = geopath::Device::Reference;
    let spec = spec::parse("flatten\nlinear classes\n", "test", "tiny").unwrap();
    let net = Network::new(&spec, [1, 4, 4], 10, &dev).unwrap();
    let w = net.init_params(1).unwrap();
    let data = toy_dataset(60, 3);
    let out = std::env::temp_dir().join(format!("geopath-sparsify-bad-{}", std::process::id()));
    for (sparsity, eps) in [(1.0, 0.1), (0.0, 0.1), (0.5, 0.0), (0.5, f32::NAN)] {
        let cfg = SparsifyConfig { sparsity, eps, ..Default::default() };
        assert!(
            sparsify::run(&net, &w, &Split::of(&data).unwrap(), &data, &cfg, &dev, &out, false).is_err(),
            "{sparsity} {eps}"
        );
    }
    assert!("newton".parse::<StepMethod>().is_err());
}

#[test]
fn connect_walks_from_a_to_b_and_reports_the_line_beside_the_path() {
    use geopath::geodesic::connect::{self, ConnectConfig};
    let Some(dev) = test_device() else { return };
    let net = toy_mlp(&dev, 10);
    let train = toy_dataset(600, 4);
    let test = toy_dataset(300, 5);
    let wa = toy_network(&net, &train, 11, &dev);
    let wb = toy_network(&net, &train, 12, &dev);
    let out = std::env::temp_dir().join(format!("geopath-connect-{}", std::process::id()));
    let cfg = ConnectConfig {
        eps: 0.5,
        steps: 200,
        batch: 50,
        cg_iter: 5,
        log_every: 5,
        eval_examples: 300,
        ..Default::default()
    };
    let r = connect::run(&net, &wa, &wb, &train, &test, &cfg, &dev, &out, false).unwrap();
    assert_eq!(r.ending, "reached B", "{r:?}");
    assert!(r.final_distance < 0.5 + 1e-4, "{r:?}");
    assert!(r.endpoint_accuracy > 0.9 && r.min_path_accuracy <= r.endpoint_accuracy, "{r:?}");
    assert!(r.linear_min_accuracy <= r.endpoint_accuracy, "{r:?}");
    let summary = std::fs::read_to_string(out.join("summary.json")).unwrap();
    for key in ["\"endpoint_accuracy\"", "\"min_path_accuracy\"", "\"linear_min_accuracy\""] {
        assert!(summary.contains(key), "{key} missing: {summary}");
    }
    assert_eq!(std::fs::read_to_string(out.join("linear.csv")).unwrap().lines().count(), 1 + 11);
    assert_eq!(std::fs::read_to_string(out.join("path.svg")).unwrap().matches("<polyline").count(), 2);
    // A path cut short is closed by the straight segment to B: the reported minimum covers it.
    let short = ConnectConfig { steps: 2, ..cfg.clone() };
    let r2 = connect::run(&net, &wa, &wb, &train, &test, &short, &dev, &out, false).unwrap();
    assert_eq!(r2.ending, "steps");
    assert!(r2.final_distance > 0.5, "{r2:?}");
    let tail_line =
        connect::run(&net, &wa, &wb, &train, &test, &ConnectConfig { steps: 2, ..cfg.clone() }, &dev, &out, false)
            .unwrap();
    assert_eq!(tail_line.min_path_accuracy, r2.min_path_accuracy, "deterministic");
    assert!(r2.min_path_accuracy <= r2.accuracy_b.min(r2.accuracy_a));
    // Different architectures are an error, not a panic.
    let other = Tensor::zeros(&dev, &[7]).unwrap();
    assert!(connect::run(&net, &wa, &other, &train, &test, &cfg, &dev, &out, false).is_err());
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn connect_step_gradient_matches_a_finite_difference() {
    // ⟨∇F, v⟩ for F(w) = ½‖w − w_B‖² + γ R(w) against a central difference of F along v, for
    // both restoring terms R. v is orthogonal to w − w_B, so the ensemble's mixing fraction t
    // (a function of ‖w − w_B‖, held fixed in the gradient) changes only to second order.
    use geopath::geodesic::bhattacharyya;
    use geopath::geodesic::connect::{mixture_logits, step_gradient, Restore};
    use geopath::ops::{elementwise as ew, flat};
    let Some(dev) = test_device() else { return };
    let net = toy_mlp(&dev, 10);
    let train = toy_dataset(600, 4);
    let wa = toy_network(&net, &train, 11, &dev);
    let wb = toy_network(&net, &train, 12, &dev);
    let w = ew::axpby(0.6, &wa, 0.4, &net.init_params(13).unwrap()).unwrap();
    let idx: Vec<usize> = (0..40).collect();
    let (x, y) = geopath::geodesic::step::batch_at(&train, &idx, &dev).unwrap();
    let mut rng = Rng::new(3);
    let r = Tensor::from_vec(&dev, w.shape(), (0..w.numel()).map(|_| rng.uniform() - 0.5).collect()).unwrap();
    let d = ew::sub(&w, &wb).unwrap();
    let k = flat::dot_value(&r, &d).unwrap() / flat::dot_value(&d, &d).unwrap();
    let v = flat::axpy(-k, &d, &r).unwrap();
    let t = 1.0 - flat::norm(&d).unwrap() as f64 / flat::norm(&ew::sub(&wa, &wb).unwrap()).unwrap() as f64;
    let reference = mixture_logits(
        &geopath::autodiff::forward(&net, &wa, &x).unwrap(),
        &geopath::autodiff::forward(&net, &wb, &x).unwrap(),
        t,
    )
    .unwrap();
    let gamma = 3.0;
    for restore in [Restore::Loss, Restore::Ensemble] {
        let f = |w: &Tensor| -> f64 {
            let d = flat::norm(&ew::sub(w, &wb).unwrap()).unwrap() as f64;
            let term = match restore {
                Restore::Loss => geopath::autodiff::loss_grad(&net, w, &x, &y).unwrap().0.to_vec().unwrap()[0] as f64,
                Restore::Ensemble => {
                    bhattacharyya(&geopath::autodiff::forward(&net, w, &x).unwrap(), &reference).unwrap().0 / 40.0
                }
            };
            0.5 * d * d + gamma as f64 * term
        };
        let g = step_gradient(&net, &w, &wa, &wb, &x, &y, restore, gamma).unwrap();
        let analytic = flat::dot_value(&g, &v).unwrap() as f64;
        let h = 1e-2;
        let numeric = (f(&flat::axpy(h, &v, &w).unwrap()) - f(&flat::axpy(-h, &v, &w).unwrap())) / (2.0 * h as f64);
        let what = format!("{restore:?}: {analytic} vs {numeric}");
        assert!((analytic - numeric).abs() <= 2e-2 * numeric.abs().max(0.1), "{what}");
        // The restoring term matters: along v the pull w − w_B alone has no slope.
        assert!(numeric.abs() > 0.05, "{what}");
    }
    // With γ = 0 the gradient is w − w_B; at A the ensemble term vanishes (t = 0, reference A).
    let plain = step_gradient(&net, &w, &wa, &wb, &x, &y, Restore::Loss, 0.0).unwrap();
    assert_eq!(plain.to_vec().unwrap(), d.to_vec().unwrap());
    let at_a = step_gradient(&net, &wa, &wa, &wb, &x, &y, Restore::Ensemble, gamma).unwrap();
    assert_close(
        "ensemble term at A",
        &at_a.to_vec().unwrap(),
        &ew::sub(&wa, &wb).unwrap().to_vec().unwrap(),
        1e-4,
        1e-4,
    );
    assert!("mixture".parse::<Restore>().is_err());
}
