//! `--resume` of `connect`: a run stopped after k steps and resumed with the full step
//! count ends where the uninterrupted run ends (parameters bit for bit, the same logged rows,
//! the same gradient evaluations), and a resume that could not continue the same path is an
//! error naming why.

mod common;
use common::*;
use geopath::checkpoint::Checkpoint;
use geopath::data::Dataset;
use geopath::geodesic::connect::{self, ConnectConfig};
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
    // Another option, fewer steps than taken, a folder without a checkpoint and a corrupt one
    // are errors naming them, before anything runs.
    let error = |cfg: &ConnectConfig, dir: &Path| {
        connect::run(&net, &wa, &wb, &train, &test, cfg, &dev, dir, false).unwrap_err().to_string()
    };
    let e = error(&ConnectConfig { eps: 0.2, ..resume.clone() }, &resumed_dir);
    assert!(e.contains("option eps") && e.contains("recorded 0.5, given 0.2") && e.contains("path.ckpt"), "{e}");
    let e = error(&ConnectConfig { steps: 4, ..resume.clone() }, &resumed_dir);
    assert!(e.contains("--steps 4 is below the 6 steps"), "{e}");
    let empty = folder("connect-empty");
    let e = error(&resume, &empty);
    assert!(e.contains(&empty.join("path.ckpt").display().to_string()) && e.contains("no such file"), "{e}");
    let ckpt = resumed_dir.join("path.ckpt");
    let mut bytes = std::fs::read(&ckpt).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&ckpt, bytes).unwrap();
    let e = error(&resume, &resumed_dir);
    assert!(e.contains(&ckpt.display().to_string()) && e.contains("corrupted"), "{e}");
    for dir in [whole_dir, resumed_dir, empty] {
        let _ = std::fs::remove_dir_all(dir);
    }
}
