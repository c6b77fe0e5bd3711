//! The sparsification comparison end to end on a small generated data set: every arm reaches
//! the target sparsity at the same counted cost, picks on validation, and the run folder is
//! protected (refusal without --force/--resume, a crash leaves the earlier outputs intact,
//! --resume reuses finished configuration runs).

mod common;
use common::*;
use geopath::data::{Dataset, Split};
use geopath::experiments::compare::Compare;
use geopath::experiments::runner::{Existing, Output};
use geopath::experiments::sparsify::{self, SeedRun, SparsifyExperiment, ARMS};
use geopath::nn::network::Network;
use geopath::{Device, Tensor};
use std::path::{Path, PathBuf};

/// The toy network, its data split and two seeds' start networks.
struct Toy {
    dev: Device,
    net: Network,
    split: Split,
    test: Dataset,
    starts: Vec<(u64, Tensor)>,
}

fn toy() -> Option<Toy> {
    let dev = test_device()?;
    let net = toy_mlp(&dev, 10);
    let split = Split::of(&toy_dataset(800, 1)).unwrap();
    let starts = [0u64, 1].iter().map(|&s| (s, toy_network(&net, &split.fit, 3 + s, &dev))).collect();
    Some(Toy { dev, net, split, test: toy_dataset(300, 2), starts })
}

fn experiment() -> SparsifyExperiment {
    SparsifyExperiment { sparsity: 0.7, budget: 300.0, batch: 50, configurations: 2, ..Default::default() }
}

fn run(t: &Toy, exp: &SparsifyExperiment, out: &Path, existing: Existing) -> geopath::Result<Compare> {
    run_seeds(t, exp, out, existing, &[0, 1])
}

fn run_seeds(
    t: &Toy,
    exp: &SparsifyExperiment,
    out: &Path,
    existing: Existing,
    only: &[u64],
) -> geopath::Result<Compare> {
    let seeds: Vec<SeedRun> = t
        .starts
        .iter()
        .filter(|(s, _)| only.contains(s))
        .map(|(s, w)| SeedRun { seed: *s, net: &t.net, w0: w, source: format!("toy {s}") })
        .collect();
    sparsify::run(exp, &seeds, &t.split, &t.test, &t.dev, Output { dir: out, existing, progress: false })
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("geopath-sparsify-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn every_arm_reaches_the_target_at_the_same_counted_cost_and_picks_on_validation() {
    let Some(t) = toy() else { return };
    let out = temp("arms");
    let c = run(&t, &experiment(), &out, Existing::Refuse).unwrap();
    assert_eq!(c.seeds, vec![0, 1]);
    assert_eq!(c.arms.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), ARMS);
    let costs: Vec<f64> = c.arms.iter().flat_map(|a| a.cost.per_seed.clone()).collect();
    let (lo, hi) = costs.iter().fold((f64::MAX, 0f64), |(l, h), &v| (l.min(v), h.max(v)));
    assert!(lo >= 300.0 && hi <= 300.0 * 1.02, "every run spends the budget, within 2%: {costs:?}");
    for a in &c.arms {
        assert_eq!((a.selected_on.as_str(), a.configurations_tried), ("validation", 2));
        assert_eq!(a.test_accuracy.per_seed.len(), 2);
        assert!(a.test_accuracy.mean > 0.5, "{}: {:?}", a.name, a.test_accuracy);
        let zeros = a.extra["sparsity"]["mean"].as_f64().unwrap();
        assert!((0.7 - 1e-3..0.72).contains(&zeros), "{}: sparsity {zeros}", a.name);
        // The picked network of each seed is written, and is as sparse as reported.
        let ckpt = geopath::checkpoint::Checkpoint::load(&out.join(format!("{}-seed1.ckpt", a.name))).unwrap();
        let z = ckpt.params.iter().filter(|v| **v == 0.0).count() as f64 / ckpt.params.len() as f64;
        assert!((z - a.extra["sparsity"]["per_seed"][1].as_f64().unwrap()).abs() < 1e-9);
    }
    let paired = c.paired_difference.as_ref().unwrap();
    assert_ne!(paired.against, "geodesic");
    let md = std::fs::read_to_string(out.join("compare.md")).unwrap();
    assert!(md.contains("| gradual-magnitude |") && md.contains("winner:"), "{md}");
    assert_eq!(std::fs::read_to_string(out.join("compare.svg")).unwrap().matches("<polyline").count(), 3);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("compare.json")).unwrap()).unwrap();
    for key in ["experiment", "setting", "seeds", "cost_unit", "arms", "paired_difference"] {
        assert!(json.get(key).is_some(), "compare.json lacks {key}");
    }
    assert!(!out.join(".partial").exists(), "the staging folder is removed at the end");
    // `geopath report` gathers finished runs: one row per arm, read back from compare.json.
    let table = geopath::experiments::compare::gather(&[Compare::load(&out.join("compare.json")).unwrap()]);
    assert_eq!(table.lines().count(), 2 + 3, "{table}");
    assert!(table.contains("| sparsify |") && table.contains("| one-shot-magnitude |"), "{table}");
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn vgg11_bn_sparsifies_end_to_end_and_each_network_keeps_its_own_batchnorm_statistics() {
    let Some(dev) = test_device() else { return };
    let net = Network::new(&geopath::nn::spec::load("vgg11-bn@0.0625").unwrap(), [3, 32, 32], 10, &dev).unwrap();
    let split = Split::of(&cifar_like(500, 1)).unwrap();
    let test = cifar_like(200, 2);
    let w0 = trained(&net, &split.fit, 3, 40, 32, 0.05, &dev);
    let start_stats = net.buffers().unwrap();
    geopath::experiments::runner::forward_flops(&net, 8, &dev).unwrap();
    assert_eq!(net.buffers().unwrap(), start_stats, "counting a pass's FLOPs leaves the statistics as they are");
    // The learning rates of every arm's grid a decade lower, as on CIFAR.
    let exp = SparsifyExperiment {
        sparsity: 0.9,
        budget: 60.0,
        batch: 32,
        configurations: 2,
        lr_scale: 0.1,
        ..Default::default()
    };
    let out = temp("vgg");
    let seeds = [SeedRun { seed: 0, net: &net, w0: &w0, source: "vgg".into() }];
    let c = sparsify::run(
        &exp,
        &seeds,
        &split,
        &test,
        &dev,
        Output { dir: &out, existing: Existing::Refuse, progress: false },
    )
    .unwrap();
    assert_eq!(c.arms.len(), ARMS.len());
    assert_eq!(c.setting["lr_scale"], 0.1);
    for a in &c.arms {
        let lr = a.picked["lr"].as_f64().unwrap();
        let scaled_grid = if a.name == "geodesic" { [0.001, 0.003] } else { [0.0003, 0.001] };
        assert!(scaled_grid.contains(&lr), "{}: picked lr {lr}", a.name);
        let cost = a.cost.per_seed[0];
        assert!((60.0..=60.0 * 1.05).contains(&cost), "{}: cost {cost}", a.name);
        let zeros = a.extra["sparsity"]["mean"].as_f64().unwrap();
        assert!((0.9 - 1e-3..0.92).contains(&zeros), "{}: sparsity {zeros}", a.name);
        // The written network carries the running statistics its training left: rebuilt from
        // the file alone, it scores the reported test accuracy.
        let (net2, w2, _) = geopath::train::load_checkpoint(&out.join(format!("{}-seed0.ckpt", a.name)), &dev).unwrap();
        assert_ne!(net2.buffers().unwrap(), start_stats, "{}: the statistics follow the training", a.name);
        let acc = geopath::train::evaluate(&net2, &w2, &test, test.len(), &dev).unwrap();
        assert_eq!(acc, a.test_accuracy.per_seed[0], "{}", a.name);
    }
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn a_folder_with_an_earlier_run_is_protected() {
    let Some(t) = toy() else { return };
    let out = temp("protect");
    let exp = SparsifyExperiment { arms: vec!["one-shot-magnitude".into()], ..experiment() };
    run(&t, &exp, &out, Existing::Refuse).unwrap();
    let before = std::fs::read(out.join("compare.json")).unwrap();
    // A second run refuses to start without --force or --resume, and writes nothing.
    let e = run(&t, &exp, &out, Existing::Refuse).unwrap_err().to_string();
    assert!(e.contains("--resume") && e.contains("--force") && e.contains("compare.json"), "{e}");
    assert!(!out.join(".partial").exists());
    // A forced run that crashes mid-way leaves the earlier outputs as they were.
    let crashing = SparsifyExperiment { abort_after_runs: Some(1), budget: 320.0, ..exp.clone() };
    assert!(run(&t, &crashing, &out, Existing::Force).unwrap_err().to_string().contains("aborted"));
    assert_eq!(std::fs::read(out.join("compare.json")).unwrap(), before);
    // Its finished configuration run is kept: --resume reuses it and completes the set, which
    // then replaces the earlier outputs.
    let unfinished = run(&t, &SparsifyExperiment { budget: 320.0, ..exp.clone() }, &out, Existing::Refuse);
    assert!(unfinished.unwrap_err().to_string().contains("--resume"));
    // Resuming with another budget would mix runs of two settings: refused, naming it.
    let e = run(&t, &SparsifyExperiment { budget: 300.0, ..exp.clone() }, &out, Existing::Resume).unwrap_err();
    assert!(e.to_string().contains("budget: recorded 320.0, given 300.0"), "{e}");
    let resumed = SparsifyExperiment { abort_after_runs: Some(3), budget: 320.0, ..exp.clone() };
    let c = run(&t, &resumed, &out, Existing::Resume).unwrap();
    assert!(c.arms[0].cost.mean >= 320.0, "{:?}", c.arms[0].cost);
    assert_ne!(std::fs::read(out.join("compare.json")).unwrap(), before);
    // A forced run with fewer seeds leaves one run's set: the other seed's network is removed.
    assert!(out.join("one-shot-magnitude-seed1.ckpt").is_file());
    run_seeds(&t, &exp, &out, Existing::Force, &[0]).unwrap();
    assert!(out.join("one-shot-magnitude-seed0.ckpt").is_file());
    assert!(!out.join("one-shot-magnitude-seed1.ckpt").exists(), "a stale network of the earlier run");
    let listed: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(out.join("outputs.json")).unwrap()).unwrap();
    assert!(listed.contains(&"compare.json".to_string()) && listed.len() == 4, "{listed:?}");
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn bad_options_are_refused_before_anything_is_written() {
    let Some(t) = toy() else { return };
    let out = temp("bad");
    for (exp, why) in [
        (SparsifyExperiment { sparsity: 1.0, ..experiment() }, "--sparsity"),
        (SparsifyExperiment { budget: 0.0, ..experiment() }, "--budget"),
        (SparsifyExperiment { configurations: 0, ..experiment() }, "--configurations"),
        (SparsifyExperiment { arms: vec!["magic".into()], ..experiment() }, "unknown arm"),
        (SparsifyExperiment { lr_scale: 0.0, ..experiment() }, "--lr-scale"),
        (SparsifyExperiment { lr_scale: f64::NAN, ..experiment() }, "--lr-scale"),
    ] {
        let e = run(&t, &exp, &out, Existing::Refuse).unwrap_err().to_string();
        assert!(e.contains(why), "{e}");
        assert!(!out.exists(), "nothing written for {why}");
    }
}
