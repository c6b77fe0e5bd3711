//! `continual`: task sequences built from the shipped MNIST, option parsing, the baselines'
//! regularisers (DER++'s logit matching, EWC's penalty) against host sums and finite
//! differences, forgetting on a hand matrix, and a whole comparison on a small generated
//! two-task problem (equal cost per task, matrix shapes, the buffer keeping the first task).

mod common;
use common::*;
use geopath::data::Dataset;
use geopath::experiments::compare::Compare;
use geopath::experiments::continual::{
    self, logit_matching, ContinualExperiment, EwcMemory, Scenario, Task, TaskSequence, ARMS,
};
use geopath::experiments::runner::{Existing, Output};
use geopath::geodesic::step::batch_at;
use geopath::nn::{network::Network, spec};
use geopath::ops::elementwise as ew;
use geopath::{Device, Tensor};
use std::path::{Path, PathBuf};

/// Four classes of 4x4 single-channel images: a bright pixel at the class's position plus noise.
fn dataset(n: usize, classes: &[u32], seed: u64) -> Dataset {
    let mut rng = Rng::new(seed);
    let mut images = Vec::with_capacity(n * 16);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let label = classes[rng.below(classes.len())];
        for p in 0..16 {
            images.push(if p == 3 * label as usize { 2.0 } else { 0.5 } + 0.3 * rng.uniform());
        }
        labels.push(label);
    }
    Dataset { images, labels, channels: 1, height: 4, width: 4, classes: 4, name: "toy".into() }
}

fn toy_tasks() -> Vec<Task> {
    [[0u32, 1], [2, 3]]
        .iter()
        .enumerate()
        .map(|(t, c)| Task {
            name: format!("toy {t}"),
            train: dataset(600, c, 10 + t as u64),
            test: dataset(200, c, 20 + t as u64),
            classes: c.to_vec(),
        })
        .collect()
}

fn experiment(scenario: Scenario) -> ContinualExperiment {
    ContinualExperiment {
        scenarios: vec![scenario],
        buffer_per_class: vec![10],
        budget: 400.0,
        batch: 50,
        first_epochs: 3,
        fisher_examples: 20,
        ..Default::default()
    }
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("geopath-continual-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Seeds 0 and 1 into `out` (replacing what is there): one report per scenario.
fn run(
    net: &Network,
    tasks: &[Task],
    exp: &ContinualExperiment,
    dev: &Device,
    out: &Path,
) -> geopath::Result<Vec<Compare>> {
    continual::run(exp, net, tasks, &[0, 1], dev, Output { dir: out, existing: Existing::Force, progress: false })
}

#[test]
fn options_parse_and_unknown_values_are_named() {
    // Both split CIFARs take their own two-point grids, the MNIST sequences the wider ones.
    for arm in ARMS {
        let space = |sequence| continual::search_space(arm, sequence);
        assert_eq!(space(TaskSequence::SplitCifar10).len(), 2, "{arm}");
        assert_eq!(space(TaskSequence::SplitCifar100), space(TaskSequence::SplitCifar10), "{arm}");
        assert!(space(TaskSequence::SplitMnist).len() >= 5, "{arm}");
        assert_eq!(space(TaskSequence::PermutedMnist), space(TaskSequence::SplitMnist), "{arm}");
    }
    assert_eq!("split-mnist".parse::<TaskSequence>().unwrap(), TaskSequence::SplitMnist);
    assert_eq!("mnist-fashion".parse::<TaskSequence>().unwrap().as_str(), "mnist-fashion");
    assert_eq!("task".parse::<Scenario>().unwrap(), Scenario::Task);
    for (err, value) in [
        ("split-cifar".parse::<TaskSequence>().unwrap_err().to_string(), "`split-cifar`"),
        ("domain".parse::<Scenario>().unwrap_err().to_string(), "`domain`"),
    ] {
        assert!(err.contains(value), "{err} should name {value}");
    }
}

#[test]
fn the_logit_matching_term_and_its_gradient_match_a_host_sum_and_finite_differences() {
    let dev = Device::Reference;
    let net = toy_mlp(&dev, 4);
    let w = net.init_params(2).unwrap();
    let data = dataset(8, &[0, 1, 2, 3], 3);
    let (x, _) = batch_at(&data, &(0..8).collect::<Vec<_>>(), &dev).unwrap();
    let mut rng = Rng::new(4);
    let z = Tensor::from_vec(&dev, &[8, 4], rng.vec(32)).unwrap();
    let (value, grad) = logit_matching(&net, &w, &x, &z).unwrap();
    let f = geopath::autodiff::forward(&net, &w, &x).unwrap().to_vec().unwrap();
    let host: f64 = f.iter().zip(z.to_vec().unwrap()).map(|(a, b)| (*a as f64 - b as f64).powi(2)).sum::<f64>() / 32.0;
    assert!((value - host).abs() < 1e-9 * host.max(1.0), "{value} vs {host}");
    // The gradient is the VJP of the outputs with 2 (f − z) / (B k).
    let u: Vec<f32> = f.iter().zip(z.to_vec().unwrap()).map(|(a, b)| 2.0 * (a - b) / 32.0).collect();
    let u = Tensor::from_vec(&dev, &[8, 4], u).unwrap();
    let vjp = geopath::autodiff::vjp(&net, &w, &x, &u).unwrap().to_vec().unwrap();
    assert_close("gradient vs VJP", &grad.to_vec().unwrap(), &vjp, 1e-5, 1e-7);
    // And the finite differences agree (up to the ReLU kinks a step crosses).
    let n = w.numel();
    let v = Tensor::from_vec(&dev, &[n], rng.vec(n)).unwrap();
    let at = |h: f32| logit_matching(&net, &ew::axpby(1.0, &w, h, &v).unwrap(), &x, &z).unwrap().0;
    let h = 1e-3;
    let fd = (at(h) - at(-h)) / (2.0 * h as f64);
    let want = geopath::ops::flat::dot_value(&grad, &v).unwrap() as f64;
    assert!((fd - want).abs() < 0.05 * want.abs().max(1e-2), "directional derivative {fd} vs {want}");
    let wrong = Tensor::from_vec(&dev, &[8, 3], vec![0.0; 24]).unwrap();
    assert!(logit_matching(&net, &w, &x, &wrong).unwrap_err().to_string().contains("stored logits"));
}

#[test]
fn forgetting_is_the_mean_drop_from_the_best_earlier_accuracy() {
    let m = vec![vec![0.9, 0.0, 0.0], vec![0.5, 0.8, 0.0], vec![0.6, 0.7, 0.9]];
    // Task 1: best 0.9, last 0.6; task 2: best 0.8, last 0.7.
    assert!((continual::forgetting(&m) - (0.3 + 0.1) / 2.0).abs() < 1e-12);
    assert_eq!(continual::forgetting(&m[..1]), 0.0);
}

#[test]
fn the_ewc_penalty_gradient_is_the_fisher_weighted_pull_to_the_anchor() {
    let dev = Device::Reference;
    let net = toy_mlp(&dev, 4);
    let anchor = net.init_params(5).unwrap();
    let data = dataset(6, &[0, 1], 6);
    let mut memory = EwcMemory::new(&anchor).unwrap();
    memory.add_task(&net, &anchor, &data, &dev).unwrap();
    // At the anchor the penalty is flat; elsewhere its gradient is λ F ⊙ (w − anchor), with F
    // the mean squared per-example gradient.
    let zero = memory.penalty_grad(&anchor, 3.0).unwrap().to_vec().unwrap();
    assert!(zero.iter().all(|v| v.abs() < 1e-6));
    let mut fisher = vec![0.0f64; anchor.numel()];
    for i in 0..data.len() {
        let (x, y) = batch_at(&data, &[i], &dev).unwrap();
        let g = geopath::autodiff::loss_grad(&net, &anchor, &x, &y).unwrap().1.to_vec().unwrap();
        fisher.iter_mut().zip(&g).for_each(|(f, g)| *f += (*g as f64).powi(2) / data.len() as f64);
    }
    let w = net.init_params(6).unwrap();
    let got = memory.penalty_grad(&w, 3.0).unwrap().to_vec().unwrap();
    let (wv, av) = (w.to_vec().unwrap(), anchor.to_vec().unwrap());
    let want: Vec<f32> = (0..wv.len()).map(|i| (3.0 * fisher[i] * (wv[i] - av[i]) as f64) as f32).collect();
    assert_close("EWC gradient", &got, &want, 1e-3, 1e-6);
}

/// Writes generated CIFAR files into `dir`: `per_class` records of every class of `classes`
/// per file, each with `label_bytes` label bytes (CIFAR-100: coarse = fine / 5, then fine) and
/// pixels that name the record.
fn write_cifar(dir: &Path, files: &[&str], classes: u32, per_class: usize, label_bytes: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for (f, file) in files.iter().enumerate() {
        let mut bytes = Vec::new();
        for i in 0..per_class {
            for c in 0..classes {
                if label_bytes == 2 {
                    bytes.push((c / 5) as u8);
                }
                bytes.push(c as u8);
                bytes.extend((0..3072).map(|p| ((p + 7 * i + 13 * c as usize + 31 * f) % 256) as u8));
            }
        }
        std::fs::write(dir.join(file), bytes).unwrap();
    }
}

#[test]
fn split_cifar_tasks_are_five_tasks_of_consecutive_classes_from_generated_files() {
    let dir = temp("cifar-files");
    let batches = ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"];
    write_cifar(&dir.join("c10"), &batches, 10, 3, 1);
    write_cifar(&dir.join("c10"), &["test_batch.bin"], 10, 2, 1);
    write_cifar(&dir.join("c100"), &["train.bin"], 100, 4, 2);
    write_cifar(&dir.join("c100"), &["test.bin"], 100, 1, 2);
    for (sequence, folder, per_task, head, train_per_class, test_per_class) in
        [(TaskSequence::SplitCifar10, "c10", 2u32, 10, 15, 2), (TaskSequence::SplitCifar100, "c100", 20, 100, 4, 1)]
    {
        let (tasks, classes) = continual::build_tasks(sequence, 5, Some(&dir.join(folder))).unwrap();
        assert_eq!((tasks.len(), classes), (5, head), "{sequence:?}");
        for (k, t) in tasks.iter().enumerate() {
            let want: Vec<u32> = (k as u32 * per_task..(k as u32 + 1) * per_task).collect();
            assert_eq!(t.classes, want, "{}", t.name);
            assert_eq!(t.name, format!("classes {}-{}", want[0], want[want.len() - 1]));
            assert_eq!((t.train.classes, t.test.classes), (head, head), "one shared head");
            assert_eq!(t.train.len(), per_task as usize * train_per_class, "{}", t.name);
            assert_eq!(t.test.len(), per_task as usize * test_per_class, "{}", t.name);
            for c in &want {
                assert_eq!(t.train.labels.iter().filter(|l| *l == c).count(), train_per_class, "{} class {c}", t.name);
            }
            assert!(t.train.labels.iter().chain(&t.test.labels).all(|l| want.contains(l)), "{}", t.name);
        }
        assert_eq!(sequence.as_str().parse::<TaskSequence>().unwrap(), sequence);
    }
    // Without the files, the error says where it looked.
    let e = continual::build_tasks(TaskSequence::SplitCifar100, 5, Some(&dir.join("c10"))).err().unwrap().to_string();
    assert!(e.contains("train.bin"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn split_and_permuted_mnist_tasks_come_from_the_shipped_data() {
    let (tasks, head) = continual::build_tasks(TaskSequence::SplitMnist, 5, None).unwrap();
    assert_eq!((tasks.len(), head), (5, 10));
    assert_eq!(tasks.iter().map(|t| t.train.len()).sum::<usize>(), 60_000);
    assert_eq!(tasks.iter().map(|t| t.test.len()).sum::<usize>(), 10_000);
    for (k, t) in tasks.iter().enumerate() {
        assert_eq!(t.classes, vec![2 * k as u32, 2 * k as u32 + 1]);
        assert!(t.train.labels.iter().chain(&t.test.labels).all(|l| t.classes.contains(l)), "{}", t.name);
    }
    let (tasks, head) = continual::build_tasks(TaskSequence::PermutedMnist, 3, None).unwrap();
    assert_eq!((tasks.len(), head), (3, 10));
    // A permutation moves pixels but keeps each image's values and its label.
    let (plain, permuted) = (tasks[0].train.image(7).to_vec(), tasks[2].train.image(7).to_vec());
    assert_ne!(plain, permuted);
    let sorted = |mut v: Vec<f32>| {
        v.sort_by(f32::total_cmp);
        v
    };
    assert_eq!(sorted(plain), sorted(permuted));
    assert_eq!(tasks[0].train.labels, tasks[2].train.labels);
    assert!(continual::build_tasks(TaskSequence::PermutedMnist, 1, None).is_err());
}

#[test]
fn every_arm_learns_at_the_same_cost_per_task_and_the_buffer_keeps_the_first_task() {
    let Some(dev) = test_device() else { return };
    let net = toy_mlp(&dev, 4);
    let tasks = toy_tasks();
    let out = temp("arms");
    // Both scenarios from the same configuration runs: class-incremental first.
    let exp = ContinualExperiment { scenarios: vec![Scenario::Class, Scenario::Task], ..experiment(Scenario::Class) };
    let both = run(&net, &tasks, &exp, &dev, &out).unwrap();
    assert_eq!(both.iter().map(|c| c.setting["scenario"].as_str().unwrap()).collect::<Vec<_>>(), ["class", "task"]);
    let c = &both[0];
    let names: Vec<&str> = c.arms.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ARMS);
    let get = |k: &str| c.arms.iter().find(|a| a.name == k).unwrap();
    for a in &c.arms {
        // Every task of every arm stops when the task's budget is spent: within one step.
        for per_task in a.extra["cost_per_task"].as_array().unwrap() {
            for cost in per_task.as_array().unwrap() {
                let cost = cost.as_f64().unwrap();
                assert!((cost - 400.0).abs() <= 0.02 * 400.0, "{}: cost {cost} per task", a.name);
            }
        }
        let matrices = a.extra["accuracy_matrix"].as_array().unwrap();
        assert_eq!(matrices.len(), 2, "one matrix per seed");
        for m in matrices {
            let m: Vec<Vec<f64>> = serde_json::from_value(m.clone()).unwrap();
            assert_eq!((m.len(), m[1].len()), (2, 2));
            assert!(m[0][0] > 0.95, "{}: the first task is learned: {m:?}", a.name);
            assert!(m[1][1] > 0.9, "{}: the second task is learned: {m:?}", a.name);
        }
        let mean_last: f64 = matrices
            .iter()
            .map(|m| {
                let m: Vec<Vec<f64>> = serde_json::from_value(m.clone()).unwrap();
                (m[1][0] + m[1][1]) / 2.0
            })
            .sum::<f64>()
            / 2.0;
        assert!(
            (a.test_accuracy.mean - mean_last).abs() < 1e-12,
            "{}: the average accuracy after the last task",
            a.name
        );
    }
    // The reported forgetting is that of each seed's matrix; the buffer keeps the first task.
    for a in &c.arms {
        for (s, m) in a.extra["accuracy_matrix"].as_array().unwrap().iter().enumerate() {
            let m: Vec<Vec<f64>> = serde_json::from_value(m.clone()).unwrap();
            assert_eq!(a.extra["forgetting"]["per_seed"][s].as_f64().unwrap(), continual::forgetting(&m));
        }
    }
    let forgetting = |arm: &str| get(arm).extra["forgetting"]["mean"].as_f64().unwrap();
    for arm in ["geodesic", "replay", "der++", "joint"] {
        assert!(forgetting(arm) < 0.2, "{arm}: forgetting {}", forgetting(arm));
    }
    assert!(get("geodesic").extra["objective"].as_str().unwrap().contains("buffer batch"));
    assert_eq!(c.paired_difference.as_ref().map(|p| p.against != "joint"), Some(true));
    let md = std::fs::read_to_string(out.join("compare-class.md")).unwrap();
    assert!(md.contains("der++:") && md.contains("| after | task 1 | task 2 |"), "{md}");
    let reports = geopath::experiments::compare::reports_in(&out).unwrap();
    assert_eq!(reports, [out.join("compare-class.json"), out.join("compare-task.json")]);

    // Task-incremental: the prediction is restricted to the task's own two classes. A run of
    // that scenario alone picks and scores exactly as the two-scenario run's task report, and
    // replaces the earlier run's files.
    let exp = ContinualExperiment { arms: vec!["fine-tune".into()], ..experiment(Scenario::Task) };
    let task_only = &run(&net, &tasks, &exp, &dev, &out).unwrap()[0];
    assert!(task_only.arms[0].test_accuracy.mean > 0.9, "{:?}", task_only.arms[0].test_accuracy);
    let shared = both[1].arms.iter().find(|a| a.name == "fine-tune").unwrap();
    assert_eq!(task_only.arms[0].test_accuracy.per_seed, shared.test_accuracy.per_seed);
    assert_eq!(task_only.arms[0].picked_per_seed, shared.picked_per_seed);
    assert_eq!(geopath::experiments::compare::reports_in(&out).unwrap(), [out.join("compare.json")]);
    assert!(!out.join("compare-class.json").exists(), "the earlier run's reports are removed");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn bad_options_and_mismatched_heads_are_errors() {
    let Some(dev) = test_device() else { return };
    let spec = spec::parse("flatten\nlinear classes\n", "test", "toy-linear").unwrap();
    let out = temp("bad");
    let wide = Network::new(&spec, [1, 4, 4], 10, &dev).unwrap();
    let err = run(&wide, &toy_tasks(), &experiment(Scenario::Class), &dev, &out).unwrap_err();
    assert!(err.to_string().contains("4 classes") && err.to_string().contains("10"), "{err}");
    let net = Network::new(&spec, [1, 4, 4], 4, &dev).unwrap();
    let refused = |exp: ContinualExperiment| run(&net, &toy_tasks(), &exp, &dev, &out).unwrap_err().to_string();
    for sizes in [vec![0], vec![], vec![10, 10]] {
        let exp = ContinualExperiment { buffer_per_class: sizes, ..experiment(Scenario::Class) };
        assert!(refused(exp).contains("--buffer-per-class"));
    }
    assert!(refused(ContinualExperiment { arms: vec!["si".into()], ..experiment(Scenario::Class) }).contains("`si`"));
    for scenarios in [vec![], vec![Scenario::Task, Scenario::Task]] {
        assert!(refused(ContinualExperiment { scenarios, ..experiment(Scenario::Class) }).contains("--scenario"));
    }
    assert!(run(&net, &toy_tasks()[..1], &experiment(Scenario::Class), &dev, &out).is_err());
    assert!(!out.join("compare.json").exists(), "nothing is written for a refused run");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn mnist_then_fashion_share_a_20_way_head_if_fashion_is_installed() {
    if !std::path::Path::new("/usr/share/datasets/fashion-mnist").exists() {
        eprintln!("note: Fashion-MNIST absent (apt-get install dataset-fashion-mnist); skipped");
        return;
    }
    let (tasks, head) = continual::build_tasks(TaskSequence::MnistFashion, 2, None).unwrap();
    assert_eq!((tasks.len(), head), (2, 20));
    assert_eq!(tasks[1].classes, (10..20).collect::<Vec<u32>>());
    for t in &tasks {
        assert_eq!((t.train.len(), t.test.len(), t.train.classes), (60_000, 10_000, 20));
        assert!(t.train.labels.iter().chain(&t.test.labels).all(|l| t.classes.contains(l)), "{}", t.name);
    }
}

#[test]
fn restricted_evaluation_takes_the_best_of_the_given_classes() {
    let Some(dev) = test_device() else { return };
    let net = toy_mlp(&dev, 4);
    let w = net.init_params(3).unwrap();
    // More than one 500-example chunk, labels of all four classes.
    let data = dataset(1200, &[0, 1, 2, 3], 5);
    let x = geopath::Tensor::from_vec(&dev, &[data.len(), 1, 4, 4], data.images.clone()).unwrap();
    let logits = geopath::autodiff::forward(&net, &w, &x).unwrap().to_vec().unwrap();
    let expected = |classes: &[u32]| {
        let hits = (0..data.len())
            .filter(|&i| {
                let row = &logits[4 * i..4 * i + 4];
                let best = classes.iter().copied().max_by(|&a, &b| row[a as usize].total_cmp(&row[b as usize]));
                best == Some(data.labels[i])
            })
            .count();
        hits as f64 / data.len() as f64
    };
    for classes in [&[2u32, 3][..], &[0, 3], &[0, 1, 2, 3]] {
        let got = geopath::train::evaluate_among(&net, &w, &data, usize::MAX, Some(classes), &dev).unwrap();
        assert!((got - expected(classes)).abs() < 1e-12, "classes {classes:?}: {got} vs {}", expected(classes));
    }
    let all = geopath::train::evaluate(&net, &w, &data, usize::MAX, &dev).unwrap();
    assert!((all - expected(&[0, 1, 2, 3])).abs() < 1e-12);
    let err = geopath::train::evaluate_among(&net, &w, &data, 10, Some(&[1, 7]), &dev).unwrap_err().to_string();
    assert!(err.contains("class 7") && err.contains("4 outputs"), "{err}");
}

#[test]
fn an_interrupted_run_resumes_to_the_uninterrupted_result() {
    let Some(dev) = test_device() else { return };
    let net = toy_mlp(&dev, 4);
    let tasks = toy_tasks();
    let exp = ContinualExperiment {
        arms: vec!["replay".into(), "der++".into()],
        configurations: 2,
        ..experiment(Scenario::Class)
    };
    let (whole, resumed) = (temp("whole"), temp("resumed"));
    let whole_run = run(&net, &tasks, &exp, &dev, &whole).unwrap().remove(0);
    fn out(dir: &Path, existing: Existing) -> Output<'_> {
        Output { dir, existing, progress: false }
    }
    let crash = ContinualExperiment { abort_after_runs: Some(3), ..exp.clone() };
    let e = continual::run(&crash, &net, &tasks, &[0, 1], &dev, out(&resumed, Existing::Refuse)).unwrap_err();
    assert!(e.to_string().contains("aborted"), "{e}");
    assert!(!resumed.join("compare.json").exists());
    // A resume with other settings is refused; with the same ones it completes.
    let other = ContinualExperiment { budget: 300.0, ..exp.clone() };
    let e = continual::run(&other, &net, &tasks, &[0, 1], &dev, out(&resumed, Existing::Resume)).unwrap_err();
    assert!(e.to_string().contains("budget"), "{e}");
    let done = continual::run(&exp, &net, &tasks, &[0, 1], &dev, out(&resumed, Existing::Resume)).unwrap();
    for (a, b) in whole_run.arms.iter().zip(&done[0].arms) {
        assert_eq!(a.test_accuracy.per_seed, b.test_accuracy.per_seed, "{}", a.name);
        assert_eq!(a.picked_per_seed, b.picked_per_seed, "{}", a.name);
    }
    let _ = (std::fs::remove_dir_all(&whole), std::fs::remove_dir_all(&resumed));
}

#[test]
fn several_buffer_sizes_share_the_runs_of_the_arms_that_do_not_read_the_buffer() {
    let Some(dev) = test_device() else { return };
    let net = toy_mlp(&dev, 4);
    let tasks = toy_tasks();
    let out = temp("buffers");
    let exp = |sizes: Vec<usize>| ContinualExperiment {
        arms: vec!["fine-tune".into(), "replay".into()],
        configurations: 1,
        buffer_per_class: sizes,
        ..experiment(Scenario::Class)
    };
    // Two seeds: one fine-tune run and one replay run per size each, six runs in all; a seventh
    // would fail the run.
    let two = ContinualExperiment { abort_after_runs: Some(6), ..exp(vec![5, 10]) };
    let reports = run(&net, &tasks, &two, &dev, &out).unwrap();
    assert_eq!(
        geopath::experiments::compare::reports_in(&out).unwrap(),
        [out.join("compare-buffer10.json"), out.join("compare-buffer5.json")],
        "in name order"
    );
    let sizes: Vec<u64> = reports.iter().map(|c| c.setting["buffer_per_class"].as_u64().unwrap()).collect();
    assert_eq!(sizes, [5, 10]);
    assert_eq!(reports[0].arms[0].test_accuracy.per_seed, reports[1].arms[0].test_accuracy.per_seed);
    // Each size's report is that of a run with that size alone.
    let alone = run(&net, &tasks, &exp(vec![10]), &dev, &out).unwrap().remove(0);
    for (a, b) in reports[1].arms.iter().zip(&alone.arms) {
        assert_eq!(a.test_accuracy.per_seed, b.test_accuracy.per_seed, "{}", a.name);
        assert_eq!(a.picked_per_seed, b.picked_per_seed, "{}", a.name);
    }
    let _ = std::fs::remove_dir_all(&out);
}
