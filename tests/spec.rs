//! Architecture specs: every shipped spec parses; errors name the file and line.

use geopath::nn::spec::{self, LayerSpec, BUILTIN};

#[test]
fn every_shipped_spec_parses_and_matches_its_file() {
    for (name, text) in BUILTIN {
        let s = spec::load(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(&s.name, name);
        let on_disk = std::fs::read_to_string(format!("{}/models/{name}.txt", env!("CARGO_MANIFEST_DIR"))).unwrap();
        assert_eq!(&on_disk, text, "{name}: built-in copy differs from models/{name}.txt");
    }
    let lenet = spec::load("lenet-300-100").unwrap();
    assert_eq!(
        lenet.layers,
        vec![
            LayerSpec::Flatten,
            LayerSpec::Linear { out: Some(300) },
            LayerSpec::Relu,
            LayerSpec::Linear { out: Some(100) },
            LayerSpec::Relu,
            LayerSpec::Linear { out: None },
        ]
    );
    let vgg16 = spec::load("vgg16").unwrap();
    let convs = vgg16.layers.iter().filter(|l| matches!(l, LayerSpec::Conv { .. })).count();
    assert_eq!(convs, 13);
    assert!(!vgg16.layers.iter().any(|l| matches!(l, LayerSpec::BatchNorm { .. })));
    let vgg11bn = spec::load("vgg11-bn").unwrap();
    assert_eq!(vgg11bn.layers.iter().filter(|l| matches!(l, LayerSpec::BatchNorm { .. })).count(), 8);
}

#[test]
fn spec_files_load_from_a_path_with_options() {
    let dir = std::env::temp_dir().join(format!("geopath-spec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tiny.txt");
    std::fs::write(&path, "# tiny\ninput 3 8 8\nconv 4 3 stride=2 pad=1\nbatchnorm eps=1e-3 momentum=0.2\nrelu\nmaxpool 2 stride=1\ndropout 0.25\nflatten\nlinear classes\n").unwrap();
    let s = spec::load(path.to_str().unwrap()).unwrap();
    assert_eq!(s.name, "tiny");
    assert_eq!(s.input, Some([3, 8, 8]));
    assert_eq!(s.layers[0], LayerSpec::Conv { out: 4, kernel: 3, stride: 2, pad: 1 });
    assert_eq!(s.layers[1], LayerSpec::BatchNorm { eps: 1e-3, momentum: 0.2 });
    assert_eq!(s.layers[3], LayerSpec::MaxPool { kernel: 2, stride: 1 });
    assert_eq!(s.layers[4], LayerSpec::Dropout { p: 0.25 });
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn parse_errors_name_file_and_line() {
    let cases = [
        ("flatten\nconx 3 3\n", ":2: unknown layer `conx`"),
        ("conv 8\n", ":1: `conv` takes 2..=2 values"),
        ("conv 8 3 strid=2\n", ":1: unknown option `strid`"),
        ("relu\nlinear -4\n", ":2: output features must be a non-negative integer"),
        ("dropout 1.5\n", ":1: dropout probability must be in [0, 1)"),
        ("maxpool 0\n", ":1: maxpool window and stride must be at least 1"),
        ("# nothing\n\n", "the spec has no layers"),
        ("input 3 32\n", ":1: `input` takes 3..=3 values"),
    ];
    for (text, want) in cases {
        let e = spec::parse(text, "models/x.txt", "x").unwrap_err().to_string();
        assert!(e.contains("models/x.txt") && e.contains(want), "{text:?}: {e}");
    }
    let e = spec::load("no-such-model").unwrap_err().to_string();
    assert!(e.contains("no-such-model") && e.contains("lenet-300-100"), "{e}");
}

/// Output widths of the conv and linear layers (`None`: the class layer).
fn widths(s: &spec::Spec) -> Vec<Option<usize>> {
    s.layers
        .iter()
        .filter_map(|l| match l {
            LayerSpec::Conv { out, .. } => Some(Some(*out)),
            LayerSpec::Linear { out } => Some(*out),
            _ => None,
        })
        .collect()
}

#[test]
fn every_spec_scales_to_a_width_multiplier_and_round_trips_through_its_text() {
    for (name, _) in BUILTIN {
        let full = spec::load(name).unwrap();
        for (label, m) in [("0.25", 0.25), (".125", 0.125), ("2", 2.0), ("0.001", 0.001)] {
            let scaled = spec::load(&format!("{name}@{label}")).unwrap_or_else(|e| panic!("{name}@{label}: {e}"));
            assert_eq!(scaled.name, format!("{name}@{m}"), "the name shows the multiplier as a number");
            let want: Vec<Option<usize>> =
                widths(&full).iter().map(|w| w.map(|w| ((w as f64 * m).round() as usize).max(1))).collect();
            assert_eq!(widths(&scaled), want, "{name}@{label}");
            // Everything but the widths is kept, in order.
            assert_eq!(scaled.layers.len(), full.layers.len());
            for (a, b) in scaled.layers.iter().zip(&full.layers) {
                assert_eq!(std::mem::discriminant(a), std::mem::discriminant(b));
                if let (
                    LayerSpec::Conv { kernel, stride, pad, .. },
                    LayerSpec::Conv { kernel: k, stride: s, pad: p, .. },
                ) = (a, b)
                {
                    assert_eq!((kernel, stride, pad), (k, s, p));
                }
                if !matches!(a, LayerSpec::Conv { .. } | LayerSpec::Linear { .. }) {
                    assert_eq!(a, b);
                }
            }
            // The stored text is the scaled spec in full: it parses back to the same spec.
            let back = spec::parse(&scaled.text, "stored", "x").unwrap();
            assert_eq!((back.name, back.layers), (scaled.name.clone(), scaled.layers.clone()));
        }
        // Width 1 changes no layer.
        assert_eq!(spec::load(&format!("{name}@1")).unwrap().layers, full.layers);
    }
    // VGG11-BN at a quarter: 16..128 channels and a 128-wide input to the class layer, about
    // 1/16 of the weights.
    let q = spec::load("vgg11-bn@0.25").unwrap();
    assert_eq!(
        widths(&q),
        vec![Some(16), Some(32), Some(64), Some(64), Some(128), Some(128), Some(128), Some(128), None]
    );
    let vgg16 = spec::load("vgg16@0.25").unwrap();
    assert_eq!(widths(&vgg16)[13..], [Some(128), Some(128), None]);
    let dev = geopath::Device::Reference;
    let params = |s: &spec::Spec| {
        geopath::autodiff::Model::num_params(&geopath::nn::network::Network::new(s, [3, 32, 32], 10, &dev).unwrap())
    };
    let (full, quarter) = (params(&spec::load("vgg11-bn").unwrap()), params(&q));
    assert!((15.0..17.0).contains(&(full as f64 / quarter as f64)), "{full} / {quarter}");
}

#[test]
fn bad_width_multipliers_are_refused_by_name() {
    for bad in ["vgg11-bn@0", "vgg11-bn@-1", "vgg11-bn@x", "vgg11-bn@", "vgg11-bn@inf", "vgg11-bn@1e18", "vgg11-bn@NaN"]
    {
        let e = spec::load(bad).unwrap_err().to_string();
        assert!(e.contains("is not a file, and the width after `@` must be a positive number up to 64"), "{bad}: {e}");
    }
    let e = spec::load("vgg12@0.5").unwrap_err().to_string();
    assert!(e.contains("unknown model `vgg12`"), "{e}");
}

#[test]
fn a_spec_file_takes_a_width_too() {
    let dir = std::env::temp_dir().join(format!("geopath-spec-width-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("small.txt");
    std::fs::write(&path, "conv 10 3 pad=1\nrelu\nflatten\nlinear 7\nlinear classes\n").unwrap();
    let s = spec::load(&format!("{}@0.5", path.display())).unwrap();
    assert_eq!(s.name, "small@0.5");
    assert_eq!(widths(&s), vec![Some(5), Some(4), None]);
    // A file name with spaces still gives stored text that parses back.
    let spaced = dir.join("my model.txt");
    std::fs::copy(&path, &spaced).unwrap();
    let s = spec::load(&format!("{}@2", spaced.display())).unwrap();
    assert_eq!(spec::parse(&s.text, "stored", "x").unwrap().layers, s.layers);
    std::fs::remove_dir_all(&dir).unwrap();
}
