//! `--resume` of the path commands: a run stopped after k steps and resumed with the full step
//! count ends where the uninterrupted run ends (parameters bit for bit, the same logged rows,
//! the same gradient evaluations), and a resume that could not continue the same path is an
//! error naming why.

mod common;
use common::*;
use geopath::checkpoint::Checkpoint;
use geopath::data::{Dataset, Split};
use geopath::geodesic::connect::{self, ConnectConfig};
use geopath::geodesic::sparsify::{self, SparsifyConfig};
use geopath::geodesic::step::StepMethod;
use geopath::nn::network::Network;
use geopath::Device;
use std::path::{Path, PathBuf};

/// The toy network, its training and test sets.
fn toy(dev: &Device, data_seed: u64) -> (Network, Dataset, Dataset) {
    let net = toy_mlp(dev, 10);
    (net, toy_dataset(600, data_seed), toy_dataset(300, data_seed + 1))
}

/// A fresh output folder of this test process.
fn folder(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("geopath-resume-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The rows of DIR/path.csv without the seconds (the last column), which differ between runs.
fn untimed_rows(dir: &Path) -> Vec<String> {
    let csv = std::fs::read_to_string(dir.join("path.csv")).unwrap();
    csv.lines().map(|l| l.rsplit_once(',').unwrap().0.to_string()).collect()
}

/// The parameters of a checkpoint in DIR.
fn params(dir: &Path, file: &str) -> Vec<f32> {
    Checkpoint::load(&dir.join(file)).unwrap().params
}

#[test]
fn a_sparsify_run_stopped_after_some_steps_resumes_to_the_uninterrupted_path() {
    let Some(dev) = test_device() else { return };
    let (net, train, test) = toy(&dev, 1);
    let w = toy_network(&net, &train, 3, &dev);
    // Penalty steps (two gradient evaluations each, measured against the start network) with
    // a ramp: the resumed half must keep the step index (ramp, batches), the start network,
    // the functional length and the evaluation count.
    let cfg = SparsifyConfig {
        sparsity: 0.7,
        method: StepMethod::Penalty { lambda: 1.0 },
        eps: 0.1,
        steps: 8,
        batch: 50,
        log_every: 2,
        eval_examples: 300,
        baseline_lrs: vec![0.05],
        ramp: 6,
        finetune: 10,
        ..Default::default()
    };
    let (whole_dir, resumed_dir) = (folder("sparsify-whole"), folder("sparsify-resumed"));
    let whole = sparsify::run(&net, &w, &Split::of(&train).unwrap(), &test, &cfg, &dev, &whole_dir, false).unwrap();
    let first = sparsify::run(
        &net,
        &w,
        &Split::of(&train).unwrap(),
        &test,
        &SparsifyConfig { steps: 4, ..cfg.clone() },
        &dev,
        &resumed_dir,
        false,
    )
    .unwrap();
    assert_eq!((first.steps, first.path_evaluations), (4, 8), "{first:?}");
    let resumed = sparsify::run(
        &net,
        &w,
        &Split::of(&train).unwrap(),
        &test,
        &SparsifyConfig { resume: true, ..cfg.clone() },
        &dev,
        &resumed_dir,
        false,
    )
    .unwrap();
    assert_eq!((whole.steps, whole.path_evaluations), (8, 16), "{whole:?}");
    assert_eq!((resumed.steps, resumed.path_evaluations), (8, 16), "{resumed:?}");
    assert_eq!(resumed.gradient_evaluations, whole.gradient_evaluations);
    assert_eq!(params(&resumed_dir, "path.ckpt"), params(&whole_dir, "path.ckpt"), "the path's end");
    assert_eq!(params(&resumed_dir, "sparse.ckpt"), params(&whole_dir, "sparse.ckpt"), "after the last stretch");
    let rows = untimed_rows(&resumed_dir);
    assert_eq!(rows.len(), 1 + 5, "steps 0, 2, 4, 6, 8: {rows:?}");
    assert_eq!(rows, untimed_rows(&whole_dir));
    assert_eq!(
        (resumed.path_test_accuracy, resumed.test_accuracy, resumed.baseline_test_accuracy),
        (whole.path_test_accuracy, whole.test_accuracy, whole.baseline_test_accuracy)
    );
    let summary = std::fs::read_to_string(resumed_dir.join("summary.json")).unwrap();
    assert!(summary.contains("\"path_evaluations\": 16") && summary.contains("\"steps\": 8"), "{summary}");

    // Resuming with another option, another start network or fewer steps than taken is an
    // error naming it, before anything runs.
    let resume = SparsifyConfig { resume: true, ..cfg.clone() };
    let error = |w: &geopath::Tensor, cfg: &SparsifyConfig, dir: &Path| {
        sparsify::run(&net, w, &Split::of(&train).unwrap(), &test, cfg, &dev, dir, false).unwrap_err().to_string()
    };
    let e = error(&w, &SparsifyConfig { eps: 0.2, ..resume.clone() }, &resumed_dir);
    assert!(e.contains("option eps") && e.contains("recorded 0.1, given 0.2") && e.contains("path.ckpt"), "{e}");
    let e = error(&w, &SparsifyConfig { ramp: 5, ..resume.clone() }, &resumed_dir);
    assert!(e.contains("option ramp") && e.contains("recorded 6, given 5"), "{e}");
    let other = toy_network(&net, &train, 4, &dev);
    let e = error(&other, &resume, &resumed_dir);
    assert!(e.contains("option start-network"), "{e}");
    let e = error(&w, &SparsifyConfig { steps: 6, ..resume.clone() }, &resumed_dir);
    assert!(e.contains("--steps 6 is below the 8 steps"), "{e}");
    // A folder without a checkpoint, and a corrupt checkpoint, are errors naming the file.
    let empty = folder("sparsify-empty");
    let e = error(&w, &resume, &empty);
    assert!(e.contains(&empty.join("path.ckpt").display().to_string()) && e.contains("no such file"), "{e}");
    let ckpt = resumed_dir.join("path.ckpt");
    let mut bytes = std::fs::read(&ckpt).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&ckpt, bytes).unwrap();
    let e = error(&w, &resume, &resumed_dir);
    assert!(e.contains(&ckpt.display().to_string()) && e.contains("corrupted"), "{e}");
    for dir in [whole_dir, resumed_dir, empty] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn a_connect_run_stopped_after_some_steps_resumes_to_the_uninterrupted_path() {
    let Some(dev) = test_device() else { return };
    let (net, train, test) = toy(&dev, 4);
    let wa = toy_network(&net, &train, 11, &dev);
    let wb = toy_network(&net, &train, 12, &dev);
    // Trust-region steps with the restoring loss on each step's batch.
    let cfg = ConnectConfig {
        eps: 0.5,
        steps: 6,
        batch: 50,
        cg_iter: 5,
        log_every: 2,
        eval_examples: 300,
        line_points: 3,
        ..Default::default()
    };
    let (whole_dir, resumed_dir) = (folder("connect-whole"), folder("connect-resumed"));
    let whole = connect::run(&net, &wa, &wb, &train, &test, &cfg, &dev, &whole_dir, false).unwrap();
    assert_eq!(whole.ending, "steps", "the path is still on its way at the end: {whole:?}");
    let first = ConnectConfig { steps: 2, ..cfg.clone() };
    connect::run(&net, &wa, &wb, &train, &test, &first, &dev, &resumed_dir, false).unwrap();
    let resume = ConnectConfig { resume: true, ..cfg.clone() };
    let resumed = connect::run(&net, &wa, &wb, &train, &test, &resume, &dev, &resumed_dir, false).unwrap();
    assert_eq!(resumed.steps, 6);
    assert_eq!(params(&resumed_dir, "path.ckpt"), params(&whole_dir, "path.ckpt"), "the path's end");
    let rows = untimed_rows(&resumed_dir);
    assert_eq!(rows.len(), 1 + 4, "steps 0, 2, 4, 6: {rows:?}");
    assert_eq!(rows, untimed_rows(&whole_dir));
    assert_eq!((resumed.final_distance, resumed.min_path_accuracy), (whole.final_distance, whole.min_path_accuracy));

    // Another target network, and a checkpoint of another command, are errors naming them.
    let other = toy_network(&net, &train, 13, &dev);
    let e = connect::run(&net, &wa, &other, &train, &test, &resume, &dev, &resumed_dir, false).unwrap_err().to_string();
    assert!(e.contains("option network-b"), "{e}");
    let sparsify_dir = folder("connect-sparsify");
    let short =
        SparsifyConfig { steps: 1, batch: 50, eval_examples: 300, baseline_lrs: vec![0.05], ..Default::default() };
    sparsify::run(&net, &wa, &Split::of(&train).unwrap(), &test, &short, &dev, &sparsify_dir, false).unwrap();
    let e = connect::run(&net, &wa, &wb, &train, &test, &resume, &dev, &sparsify_dir, false).unwrap_err().to_string();
    assert!(e.contains("written by `geopath sparsify`") && e.contains("path.ckpt"), "{e}");
    for dir in [whole_dir, resumed_dir, sparsify_dir] {
        let _ = std::fs::remove_dir_all(dir);
    }
}
