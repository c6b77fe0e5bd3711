//! Host-side datasets: MNIST, Fashion-MNIST (IDX files), CIFAR-10 and CIFAR-100 (binary
//! records), raw or gzip-compressed, decoded into normalised `f32` images; plus the helpers a
//! training loop needs (subsets, class filters, relabelling, permuted pixels, seeded shuffles,
//! crop-and-flip augmentation).
//!
//! Every reader validates what it reads (magic numbers, dimensions, exact payload length, label
//! range) against the bytes actually present before allocating, and reports problems as
//! [`Error::Io`] naming the file.

pub mod augment;
pub mod cifar;
pub mod idx;
pub mod split;

pub use augment::{augment_crop_flip, augment_shift, crop_flip_params, shuffled_indices, EpochBatches};
pub use split::{Split, SplitRecord};

use crate::error::{Error, Result};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Largest file (after decompression) a reader accepts: 1 GiB. Guards against gzip bombs and
/// against reading an unrelated huge file by mistake.
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// An in-memory labelled image set; images are normalised f32, row-major
/// `[len, channels, height, width]`.
#[derive(Clone, PartialEq)]
pub struct Dataset {
    /// All images back to back, `len * channels * height * width` values.
    pub images: Vec<f32>,
    /// One label per image, each below `classes`.
    pub labels: Vec<u32>,
    /// Channels per image (1 for MNIST, 3 for CIFAR).
    pub channels: usize,
    /// Image height in pixels.
    pub height: usize,
    /// Image width in pixels.
    pub width: usize,
    /// Number of classes of the label space (labels are `0..classes`).
    pub classes: usize,
    /// A human-readable name, e.g. `mnist-train`.
    pub name: String,
}

impl fmt::Debug for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Dataset {{ name: {:?}, len: {}, shape: [{}, {}, {}], classes: {} }}",
            self.name,
            self.len(),
            self.channels,
            self.height,
            self.width,
            self.classes
        )
    }
}

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the set holds no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Values per image: `channels * height * width`.
    pub fn sample_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// One image's values.
    ///
    /// # Panics
    /// When `index >= len()`.
    pub fn image(&self, index: usize) -> &[f32] {
        let s = self.sample_len();
        &self.images[index * s..(index + 1) * s]
    }

    fn with_data(&self, images: Vec<f32>, labels: Vec<u32>, name: String) -> Dataset {
        Dataset {
            images,
            labels,
            channels: self.channels,
            height: self.height,
            width: self.width,
            classes: self.classes,
            name,
        }
    }

    /// Appends the images and labels of `other` (e.g. a replay buffer growing task by task).
    /// Both sets must have the same image shape and label space.
    pub fn append(&mut self, other: &Dataset) -> Result<()> {
        let shape = |d: &Dataset| (d.channels, d.height, d.width, d.classes);
        if shape(self) != shape(other) {
            return Err(Error::Invalid(format!(
                "cannot append {} (images {}x{}x{}, {} classes) to {} (images {}x{}x{}, {} classes)",
                other.name,
                other.channels,
                other.height,
                other.width,
                other.classes,
                self.name,
                self.channels,
                self.height,
                self.width,
                self.classes
            )));
        }
        self.images.extend_from_slice(&other.images);
        self.labels.extend_from_slice(&other.labels);
        Ok(())
    }

    /// The images at `indices`, in that order (repeats allowed).
    ///
    /// # Panics
    /// When an index is `>= len()`.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let mut images = Vec::new();
        let mut labels = Vec::new();
        self.gather(indices, &mut images, &mut labels);
        self.with_data(images, labels, self.name.clone())
    }

    /// Keeps only the images whose label is in `classes` (labels unchanged; e.g. one task of
    /// split MNIST). The name gets the kept classes appended.
    pub fn filter_classes(&self, classes: &[u32]) -> Dataset {
        let keep: Vec<usize> = (0..self.len()).filter(|&i| classes.contains(&self.labels[i])).collect();
        let mut d = self.subset(&keep);
        d.name = format!("{}{:?}", self.name, classes);
        d
    }

    /// Maps every label through `map` and sets the label space to `classes` (e.g. `|l| l + 10`
    /// with 20 classes puts Fashion-MNIST after MNIST on a shared 20-way head).
    ///
    /// # Panics
    /// When a mapped label is `>= classes`.
    pub fn relabel(&self, map: impl Fn(u32) -> u32, classes: usize) -> Dataset {
        let labels: Vec<u32> = self
            .labels
            .iter()
            .map(|&l| {
                let m = map(l);
                assert!((m as usize) < classes, "relabel {}: label {l} maps to {m}, outside 0..{classes}", self.name);
                m
            })
            .collect();
        let mut d = self.with_data(self.images.clone(), labels, self.name.clone());
        d.classes = classes;
        d
    }

    /// Applies one fixed permutation (drawn from `seed`) of the pixel positions to every image
    /// (permuted MNIST). Positions are the `height * width` spatial locations; all channels of
    /// a pixel move together. Same seed, same permutation.
    pub fn permute_pixels(&self, seed: u64) -> Dataset {
        let hw = self.height * self.width;
        let perm = shuffled_indices(hw, seed);
        let mut images = vec![0.0f32; self.images.len()];
        for (src, dst) in self.images.chunks_exact(hw.max(1)).zip(images.chunks_exact_mut(hw.max(1))) {
            for (d, &p) in dst.iter_mut().zip(&perm) {
                *d = src[p];
            }
        }
        self.with_data(images, self.labels.clone(), format!("{}-permuted{seed}", self.name))
    }

    /// Copies the images and labels at `indices` into `out_images` / `out_labels` (both are
    /// cleared first, so buffers can be reused across batches).
    ///
    /// # Panics
    /// When an index is `>= len()`.
    pub fn gather(&self, indices: &[usize], out_images: &mut Vec<f32>, out_labels: &mut Vec<u32>) {
        let s = self.sample_len();
        out_images.clear();
        out_labels.clear();
        out_images.reserve(indices.len() * s);
        out_labels.reserve(indices.len());
        for &i in indices {
            assert!(i < self.len(), "{}: index {i} out of range for {} images", self.name, self.len());
            out_images.extend_from_slice(&self.images[i * s..(i + 1) * s]);
            out_labels.push(self.labels[i]);
        }
    }
}

/// The datasets [`load`] knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatasetName {
    /// MNIST handwritten digits, 1x28x28, 10 classes.
    Mnist,
    /// Fashion-MNIST clothing images, 1x28x28, 10 classes.
    FashionMnist,
    /// CIFAR-10, 3x32x32, 10 classes.
    Cifar10,
    /// CIFAR-100 (fine labels), 3x32x32, 100 classes.
    Cifar100,
}

impl DatasetName {
    /// All names, in a fixed order.
    pub const ALL: [DatasetName; 4] =
        [DatasetName::Mnist, DatasetName::FashionMnist, DatasetName::Cifar10, DatasetName::Cifar100];

    /// The canonical lower-case name (also what [`FromStr`] accepts).
    pub fn as_str(self) -> &'static str {
        match self {
            DatasetName::Mnist => "mnist",
            DatasetName::FashionMnist => "fashion-mnist",
            DatasetName::Cifar10 => "cifar10",
            DatasetName::Cifar100 => "cifar100",
        }
    }

    /// `(channels, height, width)` of one image.
    pub fn shape(self) -> (usize, usize, usize) {
        match self {
            DatasetName::Mnist | DatasetName::FashionMnist => (1, 28, 28),
            DatasetName::Cifar10 | DatasetName::Cifar100 => (3, 32, 32),
        }
    }

    /// Number of classes (fine labels for CIFAR-100).
    pub fn classes(self) -> usize {
        match self {
            DatasetName::Cifar100 => 100,
            _ => 10,
        }
    }

    /// Per-channel mean and standard deviation used by [`load`]: after scaling bytes to
    /// `[0, 1]`, each value becomes `(x - mean[c]) / std[c]`.
    pub fn mean_std(self) -> (&'static [f32], &'static [f32]) {
        match self {
            DatasetName::Mnist => (&[0.1307], &[0.3081]),
            DatasetName::FashionMnist => (&[0.2860], &[0.3530]),
            DatasetName::Cifar10 => (&[0.4914, 0.4822, 0.4465], &[0.2470, 0.2435, 0.2616]),
            DatasetName::Cifar100 => (&[0.5071, 0.4865, 0.4409], &[0.2673, 0.2564, 0.2762]),
        }
    }

    /// Default subdirectory names under a data root (`<dir>/<sub>` is searched too).
    fn subdirs(self) -> &'static [&'static str] {
        match self {
            DatasetName::Mnist => &["mnist", "MNIST/raw"],
            DatasetName::FashionMnist => &["fashion-mnist", "FashionMNIST/raw"],
            DatasetName::Cifar10 => &["cifar10", "cifar-10-batches-bin", "cifar10-jpeg75"],
            DatasetName::Cifar100 => &["cifar100", "cifar-100-binary"],
        }
    }

    /// How to obtain the data, for error messages.
    fn how_to_get(self) -> &'static str {
        match self {
            DatasetName::Mnist => {
                "download the four MNIST IDX files (train-images-idx3-ubyte.gz, \
                 train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, \
                 t10k-labels-idx1-ubyte.gz) into data/mnist"
            }
            DatasetName::FashionMnist => {
                "`apt-get install dataset-fashion-mnist` (installs to \
                 /usr/share/datasets/fashion-mnist), or put the four Fashion-MNIST IDX files \
                 in data/fashion-mnist"
            }
            DatasetName::Cifar10 => {
                "put the CIFAR-10 binary version (data_batch_1..5.bin, test_batch.bin, raw or \
                 .gz) in data/cifar10"
            }
            DatasetName::Cifar100 => {
                "put the CIFAR-100 binary version (train.bin, test.bin, raw or .gz) in \
                 data/cifar100"
            }
        }
    }

    /// The files a split needs, each as a list of accepted alternative names (without `.gz`).
    fn files(self, train: bool) -> Vec<Vec<String>> {
        let idx = |prefix: &str| {
            vec![
                vec![format!("{prefix}-images-idx3-ubyte"), format!("{prefix}-images.idx3-ubyte")],
                vec![format!("{prefix}-labels-idx1-ubyte"), format!("{prefix}-labels.idx1-ubyte")],
            ]
        };
        match (self, train) {
            (DatasetName::Mnist | DatasetName::FashionMnist, true) => idx("train"),
            (DatasetName::Mnist | DatasetName::FashionMnist, false) => idx("t10k"),
            (DatasetName::Cifar10, true) => (1..=5).map(|i| vec![format!("data_batch_{i}.bin")]).collect(),
            (DatasetName::Cifar10, false) => vec![vec!["test_batch.bin".to_string()]],
            (DatasetName::Cifar100, true) => vec![vec!["train.bin".to_string()]],
            (DatasetName::Cifar100, false) => vec![vec!["test.bin".to_string()]],
        }
    }

    /// Directories searched when no `data_dir` is given, in order.
    fn default_dirs(self) -> Vec<PathBuf> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut dirs = Vec::new();
        match self {
            DatasetName::Mnist => {
                dirs.push(PathBuf::from("data/mnist"));
                dirs.push(root.join("data/mnist"));
            }
            DatasetName::FashionMnist => {
                dirs.push(PathBuf::from("/usr/share/datasets/fashion-mnist"));
                dirs.push(PathBuf::from("data/fashion-mnist"));
                dirs.push(root.join("data/fashion-mnist"));
            }
            DatasetName::Cifar10 => {
                dirs.push(root.join("../shared/data/cifar10-jpeg75"));
                dirs.push(PathBuf::from("data/cifar10"));
                dirs.push(root.join("data/cifar10"));
            }
            DatasetName::Cifar100 => {
                dirs.push(PathBuf::from("data/cifar100"));
                dirs.push(root.join("data/cifar100"));
            }
        }
        dirs
    }
}

impl fmt::Display for DatasetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DatasetName {
    type Err = Error;

    /// Accepts `mnist`, `fashion-mnist` (also `fashion_mnist`, `fashion`, `fmnist`), `cifar10`
    /// (also `cifar-10`), `cifar100` (also `cifar-100`), case-insensitively.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "mnist" => Ok(DatasetName::Mnist),
            "fashion-mnist" | "fashion_mnist" | "fashionmnist" | "fashion" | "fmnist" => Ok(DatasetName::FashionMnist),
            "cifar10" | "cifar-10" | "cifar_10" => Ok(DatasetName::Cifar10),
            "cifar100" | "cifar-100" | "cifar_100" => Ok(DatasetName::Cifar100),
            _ => Err(Error::Invalid(format!(
                "unknown dataset {s:?}: expected one of mnist, fashion-mnist, cifar10, cifar100"
            ))),
        }
    }
}

/// `dir/name` if it exists, else `dir/name.gz` if that exists.
fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    let raw = dir.join(name);
    if raw.is_file() {
        return Some(raw);
    }
    let gz = dir.join(format!("{name}.gz"));
    gz.is_file().then_some(gz)
}

/// Finds every file of a split in one directory, or says which are missing.
fn find_split(dir: &Path, files: &[Vec<String>]) -> std::result::Result<Vec<PathBuf>, String> {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for alts in files {
        match alts.iter().find_map(|n| find_file(dir, n)) {
            Some(p) => found.push(p),
            None => missing.push(format!("{}[.gz]", alts[0])),
        }
    }
    if missing.is_empty() {
        Ok(found)
    } else if !dir.is_dir() {
        Err("no such directory".to_string())
    } else {
        Err(format!("missing {}", missing.join(", ")))
    }
}

/// Locates the files of one split: in `data_dir` (and its conventional subdirectories) when
/// given, else in the defaults. The error lists every place looked in.
fn locate(name: DatasetName, train: bool, data_dir: Option<&Path>) -> Result<Vec<PathBuf>> {
    let dirs: Vec<PathBuf> = match data_dir {
        Some(d) => std::iter::once(d.to_path_buf()).chain(name.subdirs().iter().map(|s| d.join(s))).collect(),
        None => name.default_dirs(),
    };
    let files = name.files(train);
    let mut tried = Vec::new();
    for dir in &dirs {
        match find_split(dir, &files) {
            Ok(paths) => return Ok(paths),
            Err(why) => tried.push(format!("  {} ({why})", dir.display())),
        }
    }
    let cwd = std::env::current_dir().map(|p| p.display().to_string()).unwrap_or_else(|_| "?".to_string());
    Err(Error::Io(format!(
        "{name} {} data not found; looked in (relative paths are from {cwd}):\n{}\n\
         to get it: {}; or pass --data-dir DIR pointing at a directory that holds the files",
        if train { "train" } else { "test" },
        tried.join("\n"),
        name.how_to_get()
    )))
}

/// Loads the train or test split of `name`, normalised as [`DatasetName::mean_std`] says.
///
/// `data_dir`: the directory holding the files (also searched: its conventional
/// subdirectories such as `mnist/` or `cifar-10-batches-bin/`). `None` searches the defaults:
/// `data/mnist` (relative to the current directory, then to the crate root) for MNIST,
/// `/usr/share/datasets/fashion-mnist` then `data/fashion-mnist` for Fashion-MNIST,
/// `../shared/data/cifar10-jpeg75` (from the crate root) then `data/cifar10` for CIFAR-10,
/// `data/cifar100` for CIFAR-100. Each file may be raw or gzip-compressed (`name` or
/// `name.gz`).
pub fn load(name: DatasetName, train: bool, data_dir: Option<&Path>) -> Result<Dataset> {
    let paths = locate(name, train, data_dir)?;
    let split = if train { "train" } else { "test" };
    let label = format!("{name}-{split}");
    let (mean, std) = name.mean_std();
    match name {
        DatasetName::Mnist | DatasetName::FashionMnist => {
            idx::load_idx(&paths[0], &paths[1], Some((28, 28)), 10, mean[0], std[0], &label)
        }
        DatasetName::Cifar10 => cifar::read_cifar10(&paths, &label),
        DatasetName::Cifar100 => cifar::read_cifar100(&paths[0], false, &label),
    }
}

/// Like [`load`] for CIFAR-100 but with the 20 coarse (superclass) labels.
pub fn load_cifar100_coarse(train: bool, data_dir: Option<&Path>) -> Result<Dataset> {
    let paths = locate(DatasetName::Cifar100, train, data_dir)?;
    let split = if train { "train" } else { "test" };
    cifar::read_cifar100(&paths[0], true, &format!("cifar100-coarse-{split}"))
}

/// Reads a whole file, decompressing it when it starts with the gzip magic `1f 8b` (whatever
/// its name). Errors name the file; output larger than [`MAX_FILE_BYTES`] is refused.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    let err = |what: String| Error::Io(format!("{}: {what}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| err(format!("cannot open: {e}")))?;
    let size = file.metadata().map_err(|e| err(format!("cannot stat: {e}")))?.len();
    if size > MAX_FILE_BYTES {
        return Err(err(format!("file is {size} bytes, more than the {MAX_FILE_BYTES}-byte limit")));
    }
    let mut raw = Vec::with_capacity(size as usize);
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut raw).map_err(|e| err(format!("read failed: {e}")))?;
    if raw.len() < 2 || raw[0] != 0x1f || raw[1] != 0x8b {
        return Ok(raw);
    }
    // The gzip trailer's ISIZE (output length mod 2^32) is a capacity hint, trusted only up
    // to what deflate can expand the input to (about 1032x) and the file limit.
    let hint = if raw.len() >= 18 {
        let t = &raw[raw.len() - 4..];
        u32::from_le_bytes([t[0], t[1], t[2], t[3]]) as u64
    } else {
        0
    };
    let hint = hint.min(raw.len() as u64 * 1032).min(MAX_FILE_BYTES) as usize;
    let mut out = Vec::with_capacity(hint);
    flate2::read::MultiGzDecoder::new(&raw[..])
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| err(format!("gzip decompression failed (corrupt or truncated?): {e}")))?;
    if out.len() as u64 > MAX_FILE_BYTES {
        return Err(err(format!("decompresses to more than the {MAX_FILE_BYTES}-byte limit")));
    }
    Ok(out)
}

/// A 256-entry table mapping a byte to `(b / 255 - mean) / std`.
pub(crate) fn byte_lut(mean: f32, std: f32) -> [f32; 256] {
    let mut lut = [0.0f32; 256];
    for (b, v) in lut.iter_mut().enumerate() {
        *v = (b as f32 / 255.0 - mean) / std;
    }
    lut
}
