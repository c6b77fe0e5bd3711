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
