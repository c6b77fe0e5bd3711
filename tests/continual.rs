//! `continual`: task sequences built from the shipped MNIST, option parsing, and a whole run
//! on a small generated two-task problem (matrix shape, forgetting of plain fine-tuning, the
//! buffer keeping the first task for the geodesic method and replay, every output written).

mod common;
use common::*;
use geopath::data::Dataset;
use geopath::geodesic::continual::{self, ContinualConfig, Method, Scenario, Task, TaskSequence};
use geopath::geodesic::step::{StepMethod, StepSettings};
use geopath::geodesic::MetricKind;
use geopath::nn::{network::Network, spec};

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

fn config(scenario: Scenario) -> ContinualConfig {
    ContinualConfig {
        scenario,
        buffer_per_class: 10,
        first_epochs: 3,
        first_lr: 0.05,
        epochs: 6,
        batch: 50,
        lrs: vec![0.1],
        ewc_lambdas: vec![10.0],
        baselines: vec![Method::FineTune, Method::Ewc { lambda: 0.0 }, Method::Replay],
        fisher_examples: 20,
        step: StepSettings {
            method: StepMethod::Penalty { lambda: 10.0 },
            metric: MetricKind::Fisher,
            eps: 0.1,
            beta: 1.0,
            cg_iter: 5,
        },
        metric_batch: 20,
        replay_objective: true,
        augment_buffer: false,
        log_every: 10,
        eval_examples: 200,
        seed: 0,
    }
}

#[test]
fn options_parse_and_unknown_values_are_named() {
    assert_eq!("split-mnist".parse::<TaskSequence>().unwrap(), TaskSequence::SplitMnist);
    assert_eq!("mnist-fashion".parse::<TaskSequence>().unwrap().as_str(), "mnist-fashion");
    assert_eq!("task".parse::<Scenario>().unwrap(), Scenario::Task);
    assert_eq!("replay".parse::<Method>().unwrap(), Method::Replay);
    for (err, value) in [
        ("split-cifar".parse::<TaskSequence>().unwrap_err().to_string(), "`split-cifar`"),
        ("domain".parse::<Scenario>().unwrap_err().to_string(), "`domain`"),
        ("si".parse::<Method>().unwrap_err().to_string(), "`si`"),
    ] {
        assert!(err.contains(value), "{err} should name {value}");
    }
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
fn a_run_forgets_without_memory_and_keeps_the_first_task_with_the_buffer() {
    let Some(dev) = test_device() else { return };
    let net = toy_mlp(&dev, 4);
    let tasks = toy_tasks();
    let out = std::env::temp_dir().join(format!("geopath-continual-{}", std::process::id()));
    let r = continual::run(&net, &tasks, &config(Scenario::Class), &dev, &out, false).unwrap();
    let keys: Vec<&str> = r.methods.iter().map(|m| m.method.key()).collect();
    assert_eq!(keys, ["geodesic", "finetune", "ewc", "replay"]);
    let get = |k: &str| r.methods.iter().find(|m| m.method.key() == k).unwrap();
    for m in &r.methods {
        assert_eq!(m.matrix.len(), 2);
        assert!(m.matrix.iter().all(|row| row.len() == 2));
        assert!(m.matrix[0][0] > 0.95, "{}: first task learned: {:?}", m.method.key(), m.matrix);
        assert!(m.matrix[1][1] > 0.9, "{}: second task learned: {:?}", m.method.key(), m.matrix);
        let mean = (m.matrix[1][0] + m.matrix[1][1]) / 2.0;
        assert!((m.average_accuracy - mean).abs() < 1e-12);
    }
    // Class-incremental fine-tuning never predicts the first task's classes again.
    assert!(get("finetune").matrix[1][0] < 0.2, "{:?}", get("finetune").matrix);
    // The buffer keeps the first task for the geodesic method and for replay.
    assert!(get("geodesic").matrix[1][0] > 0.6, "{:?}", get("geodesic").matrix);
    assert!(get("replay").matrix[1][0] > 0.6, "{:?}", get("replay").matrix);
    let summary = std::fs::read_to_string(out.join("summary.json")).unwrap();
    for key in ["\"average_accuracy\"", "\"baselines\"", "\"finetune\"", "\"ewc\"", "\"replay\"", "\"accuracy_matrix\""]
    {
        assert!(summary.contains(key), "summary.json lacks {key}:\n{summary}");
    }
    let csv = std::fs::read_to_string(out.join("path.csv")).unwrap();
    assert!(csv.starts_with("step,task,accuracy_task1,accuracy_task2,seconds"), "{csv}");
    assert!(std::fs::read_to_string(out.join("path.svg")).unwrap().contains("finetune"));

    // Task-incremental: the prediction is restricted to the task's own two classes.
    let r = continual::run(&net, &tasks, &config(Scenario::Task), &dev, &out, false).unwrap();
    assert!(r.methods.iter().all(|m| m.matrix[1][1] > 0.9), "{:?}", r.methods);
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn bad_options_and_mismatched_heads_are_errors() {
    let Some(dev) = test_device() else { return };
    let spec = spec::parse("flatten\nlinear classes\n", "test", "toy-linear").unwrap();
    let out = std::env::temp_dir().join(format!("geopath-continual-bad-{}", std::process::id()));
    let wide = Network::new(&spec, [1, 4, 4], 10, &dev).unwrap();
    let err = continual::run(&wide, &toy_tasks(), &config(Scenario::Class), &dev, &out, false).unwrap_err();
    assert!(err.to_string().contains("4 classes") && err.to_string().contains("10"), "{err}");
    let net = Network::new(&spec, [1, 4, 4], 4, &dev).unwrap();
    let mut cfg = config(Scenario::Class);
    cfg.buffer_per_class = 0;
    assert!(continual::run(&net, &toy_tasks(), &cfg, &dev, &out, false).is_err());
    let mut cfg = config(Scenario::Class);
    cfg.baselines.push(Method::Geodesic);
    assert!(continual::run(&net, &toy_tasks(), &cfg, &dev, &out, false).is_err());
    assert!(continual::run(&net, &toy_tasks()[..1], &config(Scenario::Class), &dev, &out, false).is_err());
    assert!(!out.join("summary.json").exists(), "nothing is written for a refused run");
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
