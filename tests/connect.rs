//! The connection comparison: points evenly spaced by arc length along a walked path, the
//! endpoints evaluated with their own BatchNorm statistics and the interior points with
//! refreshed ones, and a whole comparison on a small generated problem (every trained arm at
//! the same counted cost, the line at none, ≥ 21 points per curve, picks on validation).

mod common;
use common::*;
use geopath::data::Split;
use geopath::experiments::connect::{self, ArcSampler, ConnectExperiment, PairRun, ARMS};
use geopath::experiments::runner::{Existing, Output};
use geopath::nn::network::Network;
use geopath::ops::{elementwise as ew, flat};
use geopath::{Device, Tensor};

fn t(dev: &Device, v: &[f32]) -> Tensor {
    Tensor::from_vec(dev, &[v.len()], v.to_vec()).unwrap()
}

/// Runs `exp` on `pairs` into a fresh temporary folder named after `name`; returns the
/// comparison and the folder.
fn run_fresh(
    exp: &ConnectExperiment,
    pairs: &[PairRun],
    split: &Split,
    test: &geopath::data::Dataset,
    dev: &Device,
    name: &str,
) -> (geopath::experiments::compare::Compare, std::path::PathBuf) {
    let out = std::env::temp_dir().join(format!("geopath-connect-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let output = Output { dir: &out, existing: Existing::Refuse, progress: false };
    (connect::run(exp, pairs, split, test, dev, output).unwrap(), out)
}

#[test]
fn path_points_are_evenly_spaced_by_arc_length_and_the_path_is_closed_at_the_target() {
    let dev = Device::Reference;
    // An L-shaped walk: 3 steps of 1 along x, then 1 step of 1 along y; closed to (3, 3).
    let mut s = ArcSampler::new(&t(&dev, &[0.0, 0.0]), 0.5);
    for p in [[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [3.0, 1.0]] {
        s.push(&t(&dev, &p)).unwrap();
    }
    let s = s.finish(&t(&dev, &[3.0, 1.0]), &t(&dev, &[3.0, 3.0])).unwrap();
    assert!((s.length() - 6.0).abs() < 1e-9);
    let points = s.even_points(7).unwrap();
    let want = [[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [3.0, 1.0], [3.0, 2.0], [3.0, 3.0]];
    for (p, w) in points.iter().zip(want) {
        assert_close("point", &p.to_vec().unwrap(), &w, 1e-6, 1e-6);
    }
    // Between kept points the curve is interpolated linearly: arc length 1.5 is (1.5, 0).
    let points = s.even_points(5).unwrap();
    assert_close("quarter", &points[1].to_vec().unwrap(), &[1.5, 0.0], 1e-6, 1e-6);
}

/// A BatchNorm network, its data and two networks with different running statistics.
fn batchnorm_pair(dev: &Device) -> (Network, Network, Tensor, Tensor, Split) {
    let spec =
        geopath::nn::spec::parse("conv 4 3 pad=1\nbatchnorm\nrelu\nflatten\nlinear classes\n", "test", "bn").unwrap();
    let (na, nb) = (Network::new(&spec, [1, 4, 4], 4, dev).unwrap(), Network::new(&spec, [1, 4, 4], 4, dev).unwrap());
    let split = Split::of(&toy_dataset(400, 3)).unwrap();
    let (wa, wb) = (na.init_params(1).unwrap(), na.init_params(2).unwrap());
    geopath::experiments::curves::refresh_batchnorm(&na, &wa, &split.fit, 2, 50, dev).unwrap();
    geopath::experiments::curves::refresh_batchnorm(&nb, &wb, &split.validation, 1, 20, dev).unwrap();
    (na, nb, wa, wb, split)
}

#[test]
fn the_ends_keep_their_own_batchnorm_statistics_and_interior_points_get_fresh_ones() {
    let dev = Device::Reference;
    let (na, nb, wa, wb, split) = batchnorm_pair(&dev);
    let (own_a, own_b) = (na.buffers().unwrap(), nb.buffers().unwrap());
    assert_ne!(own_a, own_b, "the check below can fail");
    let pair = PairRun { seed: 0, net_a: &na, wa: &wa, net_b: &nb, wb: &wb, source: "toy".into() };
    let mid = ew::axpby(0.5, &wa, 0.5, &wb).unwrap();
    let data = &split.validation;
    let (acc, refresh_flops) =
        pair.accuracies(&[wa.clone(), mid.clone(), wb.clone()], &split.fit, data, 80, 50, &dev).unwrap();
    assert!(refresh_flops > 0, "the interior point's refresh is counted");
    assert_eq!(na.buffers().unwrap(), own_a, "A's statistics are restored");
    assert_eq!(nb.buffers().unwrap(), own_b, "B's statistics are untouched");
    let eval = |net: &Network, w: &Tensor| geopath::train::evaluate(net, w, data, 80, &dev).unwrap();
    assert_eq!(acc[0], eval(&na, &wa));
    assert_eq!(acc[2], eval(&nb, &wb));
    // The middle is evaluated with statistics of its own, recomputed on the fit images.
    let fresh = Network::new(&na.spec, [1, 4, 4], 4, &dev).unwrap();
    let images = connect::REFRESH_IMAGES.min(split.fit.len());
    geopath::experiments::curves::refresh_batchnorm(&fresh, &mid, &split.fit, images.div_ceil(50), 50, &dev).unwrap();
    assert_eq!(acc[1], eval(&fresh, &mid));
}

#[test]
fn every_trained_arm_spends_the_same_counted_cost_and_reports_its_curve() {
    let Some(dev) = test_device() else { return };
    let net = toy_mlp(&dev, 10);
    let split = Split::of(&toy_dataset(800, 1)).unwrap();
    let test = toy_dataset(300, 2);
    let ws: Vec<Tensor> = (0..4).map(|s| toy_network(&net, &split.fit, 20 + s, &dev)).collect();
    let pairs: Vec<PairRun> = (0..2)
        .map(|s| PairRun {
            seed: s as u64,
            net_a: &net,
            wa: &ws[2 * s],
            net_b: &net,
            wb: &ws[2 * s + 1],
            source: format!("toy {s}"),
        })
        .collect();
    let exp = ConnectExperiment { budget: 1000.0, batch: 50, points: 21, configurations: 2, ..Default::default() };
    let (c, out) = run_fresh(&exp, &pairs, &split, &test, &dev, "toy");
    let names: Vec<&str> = c.arms.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ARMS);
    for a in &c.arms {
        for cost in &a.cost.per_seed {
            if a.name == "linear" {
                assert_eq!(*cost, 0.0, "the line trains nothing");
            } else if a.name == "geodesic" {
                // The path stops at B, or when the budget is spent.
                assert!(*cost > 0.0 && *cost <= 1.02 * 1000.0, "geodesic: cost {cost}");
            } else {
                assert!((cost - 1000.0).abs() <= 0.02 * 1000.0, "{}: cost {cost}", a.name);
            }
        }
        let along: Vec<Vec<f64>> = serde_json::from_value(a.extra["test_accuracy_along"].clone()).unwrap();
        for (s, points) in along.iter().enumerate() {
            assert_eq!(points.len(), 21);
            let min = points.iter().copied().fold(f64::INFINITY, f64::min);
            assert_eq!(a.test_accuracy.per_seed[s], min, "{}: test_accuracy is the minimum", a.name);
            let mean = points.iter().sum::<f64>() / 21.0;
            assert!((a.extra["mean_test_accuracy"]["per_seed"][s].as_f64().unwrap() - mean).abs() < 1e-12);
        }
        assert!(a.extra["length"]["mean"].as_f64().unwrap() > 0.0);
        assert_eq!(a.selected_on, "validation");
    }
    // Every curve starts at A and ends at B: the same end accuracies for every arm.
    let ends = |a: &geopath::experiments::compare::ArmReport| {
        let along: Vec<Vec<f64>> = serde_json::from_value(a.extra["test_accuracy_along"].clone()).unwrap();
        along.iter().map(|p| (p[0], p[20])).collect::<Vec<_>>()
    };
    assert!(c.arms.iter().all(|a| ends(a) == ends(&c.arms[0])));
    // The line's length is the distance from A to B.
    let straight = flat::norm(&ew::sub(&ws[0], &ws[1]).unwrap()).unwrap() as f64;
    assert!((c.arms[1].extra["length"]["per_seed"][0].as_f64().unwrap() - straight).abs() < 1e-3 * straight);
    for file in [
        "compare.json",
        "compare.md",
        "compare.svg",
        "curves.csv",
        "bezier-seed0-bend.ckpt",
        "geodesic-seed1-middle.ckpt",
    ] {
        assert!(out.join(file).is_file(), "{file} written");
    }
    let csv = std::fs::read_to_string(out.join("curves.csv")).unwrap();
    assert!(csv.starts_with("seed,position,geodesic_test_accuracy,linear_test_accuracy"), "{csv}");
    assert_eq!(csv.lines().count(), 1 + 2 * 21);
    // A rerun without --force or --resume is refused.
    let again = connect::run(
        &exp,
        &pairs,
        &split,
        &test,
        &dev,
        Output { dir: &out, existing: Existing::Refuse, progress: false },
    );
    assert!(again.unwrap_err().to_string().contains("--resume"));
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn two_vgg16_optima_are_connected_end_to_end_by_every_arm() {
    let Some(dev) = test_device() else { return };
    let net = Network::new(&geopath::nn::spec::load("vgg16@0.0625").unwrap(), [3, 32, 32], 10, &dev).unwrap();
    let split = Split::of(&cifar_like(500, 1)).unwrap();
    let test = cifar_like(200, 2);
    let (wa, wb) = (trained(&net, &split.fit, 5, 40, 32, 0.05, &dev), trained(&net, &split.fit, 6, 40, 32, 0.05, &dev));
    let end_accuracy = |w: &Tensor| geopath::train::evaluate(&net, w, &test, test.len(), &dev).unwrap();
    let ends = (end_accuracy(&wa), end_accuracy(&wb));
    let pairs = [PairRun { seed: 0, net_a: &net, wa: &wa, net_b: &net, wb: &wb, source: "vgg16".into() }];
    let exp = ConnectExperiment { budget: 60.0, batch: 32, points: 21, configurations: 1, ..Default::default() };
    let (c, out) = run_fresh(&exp, &pairs, &split, &test, &dev, "vgg");
    assert_eq!(c.arms.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), ARMS);
    let along = |a: &geopath::experiments::compare::ArmReport| -> Vec<f64> {
        serde_json::from_value::<Vec<Vec<f64>>>(a.extra["test_accuracy_along"].clone()).unwrap().remove(0)
    };
    for a in &c.arms {
        let cost = a.cost.per_seed[0];
        match a.name.as_str() {
            "linear" => assert_eq!(cost, 0.0),
            // The path stops after the step that crosses the budget; one trust-region step costs
            // tens of units here.
            "geodesic" => assert!(cost > 0.0 && cost <= 2.0 * 60.0, "geodesic: cost {cost}"),
            _ => assert!((cost - 60.0).abs() <= 0.05 * 60.0, "{}: cost {cost}", a.name),
        }
        let points = along(a);
        assert_eq!(points.len(), 21);
        // Every curve runs from A to B.
        assert_eq!((points[0], points[20]), ends, "{}", a.name);
    }
    // The trained bends are written with the VGG16 spec.
    let bend = geopath::checkpoint::Checkpoint::load(&out.join("bezier-seed0-bend.ckpt")).unwrap();
    assert!(bend.spec.contains("vgg16@0.0625") && bend.params.len() == wa.numel(), "{}", bend.spec);
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn pairs_of_different_architectures_and_too_few_points_are_refused() {
    let dev = Device::Reference;
    let net = toy_mlp(&dev, 10);
    let other = toy_mlp(&dev, 4);
    let split = Split::of(&toy_dataset(200, 1)).unwrap();
    let (wa, wb) = (net.init_params(0).unwrap(), other.init_params(1).unwrap());
    let out = std::env::temp_dir().join(format!("geopath-connect-bad-{}", std::process::id()));
    let run = |exp: &ConnectExperiment, pair: PairRun| {
        connect::run(
            exp,
            &[pair],
            &split,
            &split.validation,
            &dev,
            Output { dir: &out, existing: Existing::Refuse, progress: false },
        )
        .unwrap_err()
        .to_string()
    };
    let pair = || PairRun { seed: 0, net_a: &net, wa: &wa, net_b: &other, wb: &wb, source: String::new() };
    assert!(run(&ConnectExperiment::default(), pair()).contains("different architectures"));
    let same = PairRun { seed: 0, net_a: &net, wa: &wa, net_b: &net, wb: &wa, source: String::new() };
    assert!(run(&ConnectExperiment { points: 2, ..Default::default() }, same).contains("--points"));
    let same = PairRun { seed: 0, net_a: &net, wa: &wa, net_b: &net, wb: &wa, source: String::new() };
    let twice = ConnectExperiment { arms: vec!["bezier".into(), "bezier".into()], ..Default::default() };
    assert!(run(&twice, same).contains("twice"));
    assert!(!out.exists(), "nothing written for a refused run");
}
