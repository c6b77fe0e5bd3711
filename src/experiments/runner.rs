//! The run folder of a comparing experiment: refusal to overwrite an earlier run, staging of
//! every output in `DIR/.partial` until the run ends (a crash leaves the earlier outputs as
//! they were), one record per finished configuration run (what `--resume` reuses), and the
//! cost budget in units of forward passes.

use crate::checkpoint::Checkpoint;
use crate::cost::Meter;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::nn::network::Network;
use crate::tensor::Tensor;
use crate::train::write_atomic;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// What to do with a run folder that holds an earlier run's outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Existing {
    /// Refuse to start (the default).
    #[default]
    Refuse,
    /// Continue the earlier, unfinished run: reuse its finished configuration runs (a finished
    /// run keeps none, so resuming it runs everything again and replaces its outputs).
    Resume,
    /// Start afresh; the earlier outputs are replaced when the new run ends.
    Force,
}

/// Where and how a comparison writes: its folder, what to do with an earlier run there, and
/// whether to show progress.
#[derive(Debug, Clone, Copy)]
pub struct Output<'a> {
    /// The run folder.
    pub dir: &'a Path,
    /// What to do with an earlier run in it.
    pub existing: Existing,
    /// Show a progress bar (arm, configuration, seed, ETA).
    pub progress: bool,
}

/// The run folder of one experiment.
pub struct RunDir {
    dir: PathBuf,
    partial: PathBuf,
    resume: bool,
}

/// Subfolder of `DIR/.partial` holding the records of finished configuration runs.
const RECORDS: &str = "runs";

impl RunDir {
    /// Opens `dir` for a run that writes `outputs` (file names) and is identified by
    /// `identity` (its settings, start networks and data: what its configuration runs depend
    /// on). Refuses a folder holding any of the outputs, or an unfinished run's staging folder,
    /// unless `existing` says otherwise; with [`Existing::Force`] the staging folder of an
    /// earlier run is discarded; with [`Existing::Resume`] the earlier run must have the same
    /// identity. Writes nothing but the staging folder and its identity.
    pub fn open(dir: &Path, outputs: &[&str], existing: Existing, identity: &serde_json::Value) -> Result<RunDir> {
        let partial = dir.join(".partial");
        // An earlier run's outputs: this run's names, and whatever the earlier run listed.
        let mut listed = read_manifest(dir);
        listed.extend(outputs.iter().map(|f| f.to_string()));
        listed.sort();
        listed.dedup();
        let earlier: Vec<&str> = listed.iter().map(String::as_str).filter(|f| dir.join(f).exists()).collect();
        let unfinished = partial.join(RECORDS).is_dir();
        if existing == Existing::Refuse && (!earlier.is_empty() || unfinished) {
            let what = if earlier.is_empty() {
                "an unfinished run (.partial)".to_string()
            } else {
                format!("an earlier run's outputs ({})", earlier.join(", "))
            };
            return Err(Error::Invalid(format!(
                "{} holds {what}; pass --resume to continue it, --force to replace it, or choose another --out",
                dir.display()
            )));
        }
        let identity_path = partial.join("identity.json");
        if existing == Existing::Resume && unfinished {
            let recorded = std::fs::read_to_string(&identity_path)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
            if recorded.as_ref() != Some(identity) {
                return Err(Error::Invalid(format!(
                    "--resume: the unfinished run in {} was started with other settings, start networks or \
                     data ({}); rerun it with the same ones, or pass --force to start afresh",
                    dir.display(),
                    recorded.map_or("none recorded".to_string(), |r| differences(&r, identity))
                )));
            }
        }
        if existing == Existing::Force && partial.exists() {
            std::fs::remove_dir_all(&partial).map_err(|e| Error::Io(format!("{}: {e}", partial.display())))?;
        }
        std::fs::create_dir_all(partial.join(RECORDS)).map_err(|e| Error::Io(format!("{}: {e}", partial.display())))?;
        write_json(&identity_path, identity)?;
        Ok(RunDir { dir: dir.to_path_buf(), partial, resume: existing == Existing::Resume })
    }

    /// The run folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the staged file `name` (moved into the run folder by [`RunDir::finish`]).
    pub fn staged(&self, name: &str) -> PathBuf {
        self.partial.join(name)
    }

    /// Path of the record (or of a companion file, by extension) of configuration run `key`.
    pub fn record_path(&self, key: &str, extension: &str) -> PathBuf {
        self.partial.join(RECORDS).join(format!("{key}.{extension}"))
    }

    /// The record of configuration run `key` saved by an earlier, resumed run, if any.
    pub fn load_record<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let path = self.record_path(key, "json");
        if !self.resume || !path.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::Invalid(format!("{}: unreadable record ({e}); rerun with --force", path.display())))
    }

    /// Saves the record of configuration run `key` (after its companion files).
    pub fn save_record<T: Serialize>(&self, key: &str, record: &T) -> Result<()> {
        write_json(&self.record_path(key, "json"), record)
    }

    /// Moves the staged `outputs` into the run folder (each by an atomic rename, `first_last`
    /// last, so that its presence marks a complete set) and removes the staging folder.
    ///
    /// The folder's manifest (`MANIFEST`) lists the outputs; files an earlier run listed that
    /// this one does not write (e.g. the networks of seeds it did not run) are removed, so the
    /// folder holds one run's set.
    pub fn finish(self, outputs: &[&str], first_last: &str) -> Result<()> {
        let stale: Vec<String> =
            read_manifest(&self.dir).into_iter().filter(|f| !outputs.contains(&f.as_str())).collect();
        let order = outputs.iter().filter(|f| **f != first_last).chain(std::iter::once(&first_last));
        for name in order {
            let (from, to) = (self.partial.join(name), self.dir.join(name));
            std::fs::rename(&from, &to)
                .map_err(|e| Error::Io(format!("{} -> {}: {e}", from.display(), to.display())))?;
        }
        write_json(&self.dir.join(MANIFEST), &outputs)?;
        for name in stale {
            let path = self.dir.join(&name);
            if path.is_file() {
                std::fs::remove_file(&path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
            }
        }
        std::fs::remove_dir_all(&self.partial).map_err(|e| Error::Io(format!("{}: {e}", self.partial.display())))
    }
}

/// File of a run folder listing the outputs of the run that wrote it.
const MANIFEST: &str = "outputs.json";

/// The outputs the manifest of `dir` lists (none without one). Only plain file names are
/// taken, so a tampered manifest cannot point outside the folder.
fn read_manifest(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join(MANIFEST))
        .ok()
        .and_then(|t| serde_json::from_str::<Vec<String>>(&t).ok())
        .unwrap_or_default()
        .into_iter()
        .filter(|f| !f.is_empty() && !f.contains(['/', '\\']) && f != ".." && f != ".")
        .collect()
}

/// The top-level keys whose values differ between two identities, e.g. `budget: 100 → 200`.
fn differences(recorded: &serde_json::Value, given: &serde_json::Value) -> String {
    let keys: std::collections::BTreeSet<&String> =
        recorded.as_object().into_iter().chain(given.as_object()).flat_map(|m| m.keys()).collect();
    let changed: Vec<String> = keys
        .into_iter()
        .filter(|k| recorded.get(k.as_str()) != given.get(k.as_str()))
        .map(|k| {
            let show = |v: Option<&serde_json::Value>| v.map_or("absent".to_string(), |v| v.to_string());
            format!("{k}: recorded {}, given {}", show(recorded.get(k.as_str())), show(given.get(k.as_str())))
        })
        .collect();
    changed.join("; ")
}

/// Writes `value` as pretty JSON to `path`, atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    write_atomic(path, (text + "\n").as_bytes())
}

/// A spending limit on the engine's cost counter, in FLOPs, read through a [`Meter`] started
/// with the budget.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    meter: Meter,
    flops: u64,
}

impl Budget {
    /// A budget of `flops` from now.
    pub fn start(flops: u64) -> Budget {
        Budget { meter: Meter::start(), flops }
    }

    /// FLOPs the budget allows.
    pub fn total(&self) -> u64 {
        self.flops
    }

    /// FLOPs spent since the start.
    pub fn spent(&self) -> u64 {
        self.meter.flops()
    }

    /// Whether the budget is spent.
    pub fn exhausted(&self) -> bool {
        self.spent() >= self.flops
    }

    /// The fraction spent, in [0, 1] (more once exhausted).
    pub fn fraction(&self) -> f64 {
        self.spent() as f64 / self.flops.max(1) as f64
    }
}

/// Mean and sample standard deviation (0 for one value).
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var =
        if values.len() > 1 { values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (mean, var.sqrt())
}

/// The identity of a network in a run's identity: the CRC-32 of its parameters and of its
/// buffers (names and values, e.g. BatchNorm running statistics), and the parameter count.
pub fn network_identity(params: &Tensor, buffers: &[(String, Vec<f32>)]) -> Result<String> {
    let mut bytes: Vec<u8> = params.to_vec()?.iter().flat_map(|v| v.to_le_bytes()).collect();
    for (name, values) in buffers {
        bytes.extend_from_slice(name.as_bytes());
        bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    }
    Ok(format!("crc32 {:08x} of {} parameters", crate::checkpoint::crc32(&bytes), params.numel()))
}

/// The identity of a data set in a run's identity: its name and size.
pub fn data_identity(data: &crate::data::Dataset) -> String {
    format!("{} ({} examples)", data.name, data.len())
}

/// FLOPs of one forward pass of `batch` examples of `net`, as the engine counts them.
pub fn forward_flops(net: &Network, batch: usize, device: &Device) -> Result<u64> {
    let [c, h, w] = net.input;
    let x = Tensor::from_vec(device, &[batch, c, h, w], vec![0.0; batch * c * h * w])?;
    // Zero parameters: the count depends on the shapes only, and the network is left as it is.
    let params = Tensor::zeros(device, &[crate::autodiff::Model::num_params(net)])?;
    let meter = Meter::start();
    crate::autodiff::forward(net, &params, &x)?;
    Ok(meter.flops())
}

/// Saves flat parameters (with the network's spec and buffers) as a checkpoint.
pub fn save_params(path: &std::path::Path, net: &Network, w: &Tensor) -> Result<()> {
    Checkpoint {
        spec: net.spec.text.clone(),
        params: w.to_vec()?,
        buffers: net.buffers()?,
        metadata: vec![
            ("classes".into(), net.classes.to_string()),
            ("input".into(), format!("{} {} {}", net.input[0], net.input[1], net.input[2])),
        ],
    }
    .save(path)
}

/// Loads the flat parameters of a checkpoint written by [`save_params`] and restores its
/// BatchNorm running statistics into `net`.
pub fn load_params(path: &std::path::Path, net: &Network, device: &Device) -> Result<Tensor> {
    let c = Checkpoint::load(path)?;
    net.set_buffers(&c.buffers)?;
    Tensor::from_vec(device, &[c.params.len()], c.params)
}

/// A network's state: its flat parameters and its BatchNorm running statistics (none without
/// BatchNorm), as [`Network::buffers`] gives them.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Flat parameters.
    pub params: Tensor,
    /// Running statistics.
    pub buffers: Vec<(String, Vec<f32>)>,
}

impl Snapshot {
    /// `w` with the running statistics `net` holds now.
    pub fn of(net: &Network, w: &Tensor) -> Result<Snapshot> {
        Ok(Snapshot { params: w.clone(), buffers: net.buffers()? })
    }

    /// Parameters alone, for states whose statistics are recomputed where they are used (the
    /// points of a connecting curve).
    pub fn bare(w: &Tensor) -> Snapshot {
        Snapshot { params: w.clone(), buffers: Vec::new() }
    }

    /// Puts the running statistics back into `net` and returns the parameters.
    pub fn restore(&self, net: &Network) -> Result<&Tensor> {
        net.set_buffers(&self.buffers)?;
        Ok(&self.params)
    }
}

/// Saves several network states of one size (the networks after every task, a curve's
/// points) as one file; the running statistics of state `k` are stored as `k:NAME`.
pub fn save_stack(path: &Path, stack: &[Snapshot]) -> Result<()> {
    let mut params = Vec::with_capacity(stack.iter().map(|s| s.params.numel()).sum());
    let mut buffers = Vec::new();
    for (k, s) in stack.iter().enumerate() {
        params.extend(s.params.to_vec()?);
        buffers.extend(s.buffers.iter().map(|(name, v)| (format!("{k}:{name}"), v.clone())));
    }
    let metadata = vec![("stacked".to_string(), stack.len().to_string())];
    Checkpoint { spec: "stacked parameter vectors".into(), params, buffers, metadata }.save(path)
}

/// Loads the states [`save_stack`] wrote.
pub fn load_stack(path: &Path, device: &Device) -> Result<Vec<Snapshot>> {
    let c = Checkpoint::load(path)?;
    let n: usize = c.meta("stacked").and_then(|v| v.parse().ok()).filter(|n| *n > 0).ok_or_else(|| {
        Error::Invalid(format!("{}: not a file of stacked parameters; rerun with --force", path.display()))
    })?;
    if c.params.len() % n != 0 {
        return Err(Error::Invalid(format!("{}: {} values are not {n} vectors", path.display(), c.params.len())));
    }
    c.params
        .chunks(c.params.len() / n)
        .enumerate()
        .map(|(k, p)| {
            let prefix = format!("{k}:");
            let buffers = c
                .buffers
                .iter()
                .filter_map(|(name, v)| name.strip_prefix(&prefix).map(|n| (n.to_string(), v.clone())))
                .collect();
            Ok(Snapshot { params: Tensor::from_vec(device, &[p.len()], p.to_vec())?, buffers })
        })
        .collect()
}

/// Today's UTC date, `YYYY-MM-DD`.
pub fn today() -> String {
    let days = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() / 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}
