//! The training pipeline end to end on a tiny generated MNIST-format data set: train, write a
//! checkpoint and summary, reload, evaluate; and bad checkpoints are clear errors.

mod common;
use common::*;
use geopath::data::split::SPLIT_KEY;
use geopath::data::DatasetName;
use geopath::data::{Split, SplitRecord};
use geopath::optim::{OptimizerKind, Schedule};
use geopath::train::{self, Recipe, TrainArgs};
use std::io::Write;
use std::path::Path;

/// Writes IDX files whose images encode their label as a bright 7x7 block at one of ten places.
fn write_split(dir: &Path, prefix: &str, n: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut images = vec![0u8; n * 784];
    let mut labels = vec![0u8; n];
    for i in 0..n {
        let label = rng.below(10);
        labels[i] = label as u8;
        let (by, bx) = (3 + 7 * (label / 5), 1 + 5 * (label % 5));
        for y in 0..28 {
            for x in 0..28 {
                let block = (by..by + 7).contains(&y) && (bx..bx + 7).contains(&x);
                let noise = (rng.below(60)) as u8;
                images[i * 784 + y * 28 + x] = if block { 190 + noise } else { noise };
            }
        }
    }
    let mut img = Vec::new();
    img.extend_from_slice(&0x0803u32.to_be_bytes());
    img.extend_from_slice(&(n as u32).to_be_bytes());
    img.extend_from_slice(&28u32.to_be_bytes());
    img.extend_from_slice(&28u32.to_be_bytes());
    img.extend_from_slice(&images);
    let mut lab = Vec::new();
    lab.extend_from_slice(&0x0801u32.to_be_bytes());
    lab.extend_from_slice(&(n as u32).to_be_bytes());
    lab.extend_from_slice(&labels);
    std::fs::File::create(dir.join(format!("{prefix}-images-idx3-ubyte"))).unwrap().write_all(&img).unwrap();
    std::fs::File::create(dir.join(format!("{prefix}-labels-idx1-ubyte"))).unwrap().write_all(&lab).unwrap();
}

#[test]
fn train_writes_a_checkpoint_and_summary_that_evaluate_consistently() {
    let Some(dev) = test_device() else { return };
    let root = std::env::temp_dir().join(format!("geopath-train-{}", std::process::id()));
    let data = root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_split(&data, "train", 512, 1);
    write_split(&data, "t10k", 200, 2);
    let recipe = Recipe {
        epochs: 3,
        batch: 32,
        lr: 0.05,
        optimizer: OptimizerKind::Sgd { momentum: 0.9, nesterov: true, weight_decay: 0.0 },
        schedule: Schedule::Cosine { total: 0, min_factor: 0.0 },
        warmup: 0,
        augment: false,
    };
    let out = root.join("run");
    let args = TrainArgs {
        model: "lenet-300-100".into(),
        dataset: DatasetName::Mnist,
        data_dir: Some(data.clone()),
        recipe,
        seed: 3,
        out: out.clone(),
        progress: false,
    };
    let summary = train::train(&args, &dev).unwrap();
    assert!(summary.test_accuracy > 0.9, "the block position is easy to learn: {}", summary.test_accuracy);
    assert_eq!(summary.epochs, 3);
    let json = std::fs::read_to_string(out.join("summary.json")).unwrap();
    for key in ["\"test_accuracy\"", "\"epochs\": 3", "\"train_seconds\"", "\"model\": \"lenet-300-100\""] {
        assert!(json.contains(key), "summary.json lacks {key}: {json}");
    }
    // Trained on the first 4/5 of the 512 training images; the checkpoint says so, and a
    // command holding out the same split accepts it.
    assert_eq!((summary.train_images, summary.validation_images), (410, 102));
    let (net, params, ckpt) = train::load_checkpoint(&out.join("model.ckpt"), &geopath::Device::Reference).unwrap();
    assert_eq!(ckpt.meta(SPLIT_KEY), Some("first 410 of 512"));
    let split = Split::of(&geopath::data::load(DatasetName::Mnist, true, Some(&data)).unwrap()).unwrap();
    SplitRecord::check("model.ckpt", ckpt.meta(SPLIT_KEY), &split).unwrap();
    // Reload on the CPU reference and evaluate: the same accuracy.
    let test = geopath::data::load(DatasetName::Mnist, false, Some(&data)).unwrap();
    let acc = train::evaluate(&net, &params, &test, test.len(), &geopath::Device::Reference).unwrap();
    assert!((acc - summary.test_accuracy).abs() < 1e-9, "{acc} vs {}", summary.test_accuracy);

    // A truncated checkpoint and one of another model are clear errors.
    let bytes = std::fs::read(out.join("model.ckpt")).unwrap();
    std::fs::write(root.join("cut.ckpt"), &bytes[..bytes.len() / 2]).unwrap();
    let e = train::load_checkpoint(&root.join("cut.ckpt"), &dev).err().unwrap().to_string();
    assert!(e.contains("cut.ckpt") && e.contains("truncated"), "{e}");
    let mut other = geopath::checkpoint::Checkpoint::load(&out.join("model.ckpt")).unwrap();
    other.params.truncate(1000);
    other.save(&root.join("other.ckpt")).unwrap();
    let e = train::load_checkpoint(&root.join("other.ckpt"), &dev).err().unwrap().to_string();
    assert!(e.contains("1000"), "{e}");
    // The command line refuses a start network that records no split (trained before splits
    // existed, or on the whole training set), before writing anything.
    let mut whole = geopath::checkpoint::Checkpoint::load(&out.join("model.ckpt")).unwrap();
    whole.metadata.retain(|(k, _)| k != SPLIT_KEY);
    whole.save(&root.join("whole.ckpt")).unwrap();
    // Runs a command with the data folder and an output folder; returns its stderr, after
    // checking that it failed and wrote nothing.
    let refused = |command: &str, args: &[&std::ffi::OsStr]| {
        let run_dir = root.join(command);
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_geopath"))
            .args(["--device", "reference", command])
            .args(args)
            .arg("--data-dir")
            .arg(&data)
            .arg("--out")
            .arg(&run_dir)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        assert!(!output.status.success(), "{stderr}");
        assert!(!run_dir.exists(), "nothing written");
        stderr
    };
    let whole_ckpt = root.join("whole.ckpt");
    let stderr = refused("sparsify", &["--checkpoint".as_ref(), whole_ckpt.as_os_str()]);
    assert!(
        stderr.contains("whole.ckpt") && stderr.contains("validation") && stderr.contains("geopath train"),
        "{stderr}"
    );
    // connect refuses it too, as either end of the pair.
    let good = out.join("model.ckpt");
    let stderr = refused("connect", &["--a".as_ref(), good.as_os_str(), "--b".as_ref(), whole_ckpt.as_os_str()]);
    assert!(stderr.contains("whole.ckpt") && stderr.contains("validation"), "{stderr}");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn cifar_style_network_with_batchnorm_trains_and_round_trips_its_running_statistics() {
    let Some(dev) = test_device() else { return };
    let spec = geopath::nn::spec::parse(
        "conv 4 3 pad=1\nbatchnorm\nrelu\nmaxpool 2\nflatten\nlinear classes\n",
        "test",
        "tiny-bn",
    )
    .unwrap();
    let net = geopath::nn::network::Network::new(&spec, [3, 8, 8], 5, &dev).unwrap();
    let mut params = net.init_params(1).unwrap();
    let mut rng = Rng::new(4);
    let x = geopath::Tensor::from_vec(&dev, &[16, 3, 8, 8], rng.vec(16 * 192).iter().map(|v| v * 2.0 + 1.0).collect())
        .unwrap();
    let y = geopath::Tensor::from_u32(&dev, &[16], &(0..16).map(|i| i % 5).collect::<Vec<_>>()).unwrap();
    let mut opt = geopath::optim::Optimizer::new(OptimizerKind::sgd(0.9), geopath::optim::LrSchedule::constant(0.05));
    net.set_train(true);
    let first = geopath::autodiff::loss_grad(&net, &params, &x, &y).unwrap().0.to_vec().unwrap()[0];
    for _ in 0..30 {
        let (_, g) = geopath::autodiff::loss_grad(&net, &params, &x, &y).unwrap();
        net.update_running_stats().unwrap();
        params = opt.step(&params, &g).unwrap();
    }
    let last = geopath::autodiff::loss_grad(&net, &params, &x, &y).unwrap().0.to_vec().unwrap()[0];
    assert!(last < 0.5 * first, "loss {first} -> {last}");
    // Running statistics moved away from (0, 1) towards the inputs' statistics (mean ~1).
    let buffers = net.buffers().unwrap();
    let mean = &buffers.iter().find(|(n, _)| n == "bn0.running_mean").unwrap().1;
    assert!(mean.iter().any(|m| m.abs() > 0.05), "{mean:?}");
    let copy = geopath::nn::network::Network::new(&spec, [3, 8, 8], 5, &dev).unwrap();
    copy.set_buffers(&buffers).unwrap();
    net.set_train(false);
    copy.set_train(false);
    let a = geopath::autodiff::forward(&net, &params, &x).unwrap().to_vec().unwrap();
    let b = geopath::autodiff::forward(&copy, &params, &x).unwrap().to_vec().unwrap();
    assert_close("eval logits after restoring buffers", &b, &a, 0.0, 0.0);
    let e = copy.set_buffers(&buffers[..1]).unwrap_err().to_string();
    assert!(e.contains("bn0.running_var"), "{e}");
}

#[test]
fn default_recipes_follow_the_model_and_data_set() {
    // Conv nets with BatchNorm on CIFAR: 60 epochs at lr 0.1 with augmentation.
    let bn = Recipe::default_for("vgg11-bn@0.25", DatasetName::Cifar10);
    assert_eq!((bn.epochs, bn.lr, bn.augment), (60, 0.1, true));
    // Without BatchNorm (Garipov's VGG16): 20 epochs at lr 0.05, the rest as above.
    let plain = Recipe::default_for("vgg16@0.25", DatasetName::Cifar10);
    assert_eq!((plain.epochs, plain.lr, plain.augment, plain.warmup), (20, 0.05, true, bn.warmup));
    // Dense nets on CIFAR keep the BatchNorm nets' recipe.
    assert_eq!(Recipe::default_for("mlp-2x400", DatasetName::Cifar10).epochs, 60);
    let lenet = Recipe::default_for("lenet-300-100", DatasetName::Mnist);
    assert_eq!((lenet.epochs, lenet.augment), (30, false));
}
