//! Resuming a path command (`sparsify`, `connect`) from its DIR/path.ckpt (`--resume`).
//!
//! At every logged point a path command saves the parameters in DIR/path.ckpt together with
//! everything a resumed run needs, in the checkpoint's metadata (DIR/path.csv is written only
//! at the end of a run, so it is not read back):
//!
//! - `command`: the command that wrote the file;
//! - `option.NAME`: every option that determines the path ([`PathRecord::options`]: step rule,
//!   metric, batch, seed, the identities of the networks and data sets, …), as text;
//! - `rows`: every row logged so far, one line each: the [`PathRow`] fields (step, objective,
//!   step norm, functional length, seconds), then the command's own columns (accuracies), as
//!   shortest round-trip decimals, so that the values read back are the values written;
//! - the command's own state at the last row (sparsify: `evaluations`, the gradient
//!   evaluations the path has spent), see [`PathRecord::save`].
//!
//! A resumed run checks the command, the model and every recorded option against its own, then
//! continues from the last row: [`integrate`](super::path::integrate) carries on its step index,
//! functional length, last step norm and seconds, and the step rules draw their batches from
//! the step index alone ([`step_batch_seed`](super::step::step_batch_seed)), so the resumed
//! path is the one the uninterrupted run would have taken. The step count is not recorded: it
//! only says where the path stops (the ramp of `sparsify` is counted in steps, the baseline's
//! budget in evaluations), so a finished path can be extended by resuming it with more
//! `--steps`; its rows then keep the row of the earlier end, which the uninterrupted run logs
//! only when that end is a multiple of `--log-every`. `--log-every` itself is not recorded
//! either: it sets where rows and checkpoints fall, not the path.

use super::path::PathRow;
use super::step::{StepMethod, StepSettings};
use crate::autodiff::Model;
use crate::checkpoint::{crc32, Checkpoint};
use crate::data::Dataset;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::nn::network::Network;
use crate::tensor::Tensor;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Metadata key of the command that wrote the checkpoint.
const COMMAND_KEY: &str = "command";
/// Metadata key of the logged rows.
const ROWS_KEY: &str = "rows";
/// Prefix of the metadata keys of the recorded options.
const OPTION_PREFIX: &str = "option.";

/// A logged row of a path command: the integrator's row and the command's own `N` columns.
pub type LoggedRow<const N: usize> = (PathRow, [f64; N]);

/// What identifies a path run: its command and the options that determine its path. Saved with
/// every checkpoint of the path ([`PathRecord::save`]) and checked when it is resumed
/// ([`PathRecord::resume`]).
#[derive(Debug, Clone)]
pub struct PathRecord {
    /// The command (`sparsify`, `connect`).
    pub command: &'static str,
    /// The options that determine the path, as (name, value); names as on the command line
    /// where there is a flag (`eps`, `cg-iter`), else descriptive (`start-network`).
    pub options: Vec<(&'static str, String)>,
}

/// A path run read back from its checkpoint, to be continued.
pub struct Resumed<const N: usize> {
    /// The parameters at the last logged point.
    pub params: Tensor,
    /// Every row logged so far; the last one is the point of `params`.
    pub rows: Vec<LoggedRow<N>>,
    /// The file read.
    path: PathBuf,
    /// Its contents but the parameters (for the command's own state).
    checkpoint: Checkpoint,
}

impl<const N: usize> Resumed<N> {
    /// The row of the point the path continues from (the last logged one).
    pub fn last_row(&self) -> &PathRow {
        &self.rows.last().expect("a resumable checkpoint records at least one row").0
    }

    /// The command's own state value `key`, recorded by [`PathRecord::save`]; an error naming
    /// the file when it is missing or does not parse.
    pub fn state<T: FromStr>(&self, key: &str) -> Result<T> {
        let value = self
            .checkpoint
            .meta(key)
            .ok_or_else(|| Error::Invalid(format!("--resume: {}: no `{key}` recorded", self.path.display())))?;
        value.parse().map_err(|_| {
            Error::Invalid(format!("--resume: {}: malformed `{key}` value {value:?}", self.path.display()))
        })
    }
}

/// The identity of a network for [`PathRecord::options`]: the CRC-32 of its parameters and of
/// its buffers (names and values, e.g. BatchNorm running statistics), and the parameter count.
pub fn network_identity(params: &Tensor, buffers: &[(String, Vec<f32>)]) -> Result<String> {
    let mut bytes: Vec<u8> = params.to_vec()?.iter().flat_map(|v| v.to_le_bytes()).collect();
    for (name, values) in buffers {
        bytes.extend_from_slice(name.as_bytes());
        bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    }
    Ok(format!("crc32 {:08x} of {} parameters", crc32(&bytes), params.numel()))
}

/// The identity of a data set for [`PathRecord::options`]: its name and size.
pub fn data_identity(data: &Dataset) -> String {
    format!("{} ({} examples)", data.name, data.len())
}

impl PathRecord {
    /// The record of `command`, whose steps follow `settings`: the options method, λ (for the
    /// penalty step only), metric, ε, β and CG iterations; add the command's own with
    /// [`PathRecord::with`].
    pub fn new(command: &'static str, settings: &StepSettings) -> PathRecord {
        let mut options = vec![("method", settings.method.name().to_string())];
        if let StepMethod::Penalty { lambda } = settings.method {
            options.push(("lambda", lambda.to_string()));
        }
        options.extend([
            ("metric", settings.metric.to_string()),
            ("eps", settings.eps.to_string()),
            ("beta", settings.beta.to_string()),
            ("cg-iter", settings.cg_iter.to_string()),
        ]);
        PathRecord { command, options }
    }

    /// The record with one more option that determines the path.
    pub fn with(mut self, name: &'static str, value: impl ToString) -> PathRecord {
        self.options.push((name, value.to_string()));
        self
    }

    /// Saves DIR/path.ckpt at `path` (atomically, see [`Checkpoint::save`]): the parameters `w`
    /// of `net` with its buffers, this record, the rows logged so far (the last one at `w`) and
    /// the command's own `state` at `w`, as (key, value) with keys other than `command`,
    /// `rows` and `option.…`.
    pub fn save<const N: usize>(
        &self,
        path: &Path,
        net: &Network,
        w: &Tensor,
        rows: &[LoggedRow<N>],
        state: &[(&str, String)],
    ) -> Result<()> {
        let mut metadata = vec![(COMMAND_KEY.to_string(), self.command.to_string())];
        metadata.extend(self.options.iter().map(|(name, value)| (format!("{OPTION_PREFIX}{name}"), value.clone())));
        metadata.push((ROWS_KEY.to_string(), encode_rows(rows)));
        metadata.extend(state.iter().map(|(key, value)| (key.to_string(), value.clone())));
        Checkpoint { spec: net.spec.text.clone(), params: w.to_vec()?, buffers: net.buffers()?, metadata }.save(path)
    }

    /// Reads back the checkpoint at `path` to continue its path with this record's options for
    /// up to `steps` steps in total, the parameters uploaded to `device`. Errors name the file:
    /// a missing or corrupt file, one written by another command or for another model than
    /// `net`, one without rows; an option that differs from the recorded one is an error
    /// naming the option and both values, and so is a `steps` below the steps already taken.
    pub fn resume<const N: usize>(
        &self,
        path: &Path,
        net: &Network,
        steps: usize,
        device: &Device,
    ) -> Result<Resumed<N>> {
        let mut checkpoint = Checkpoint::load(path).map_err(|e| Error::Io(format!("--resume: {e}")))?;
        let bad = |what: String| Error::Invalid(format!("--resume: {}: {what}", path.display()));
        match checkpoint.meta(COMMAND_KEY) {
            Some(command) if command == self.command => {}
            Some(other) => return Err(bad(format!("written by `geopath {other}`, not by `geopath {}`", self.command))),
            None => return Err(bad("records no resumable path (no command in its metadata)".into())),
        }
        checkpoint.check_spec(&net.spec.text, net.num_params()).map_err(|e| bad(e.to_string()))?;
        for (name, value) in &self.options {
            match checkpoint.meta(&format!("{OPTION_PREFIX}{name}")) {
                Some(recorded) if recorded == value => {}
                Some(recorded) => {
                    let file = path.display();
                    return Err(Error::Invalid(format!(
                        "--resume: option {name} differs from the run recorded in {file}: recorded {recorded}, given {value}"
                    )));
                }
                None => return Err(bad(format!("records no value of option {name}"))),
            }
        }
        for (key, recorded) in &checkpoint.metadata {
            if let Some(name) = key.strip_prefix(OPTION_PREFIX) {
                if !self.options.iter().any(|(n, _)| *n == name) {
                    return Err(bad(format!("records option {name} = {recorded}, which this run does not have")));
                }
            }
        }
        let text = checkpoint.meta(ROWS_KEY).ok_or_else(|| bad("records no logged rows".into()))?;
        let rows = decode_rows::<N>(text).map_err(|e| bad(format!("malformed rows: {e}")))?;
        let taken = rows.last().ok_or_else(|| bad("records no logged rows".into()))?.0.step;
        if taken > steps {
            return Err(Error::Invalid(format!(
                "--resume: --steps {steps} is below the {taken} steps the path in {} has taken",
                path.display()
            )));
        }
        let params = std::mem::take(&mut checkpoint.params);
        let params = Tensor::from_vec(device, &[params.len()], params)?;
        Ok(Resumed { params, rows, path: path.to_path_buf(), checkpoint })
    }
}

/// One line per row: step, objective, step norm, functional length, seconds, then the
/// command's columns, separated by spaces (Rust's shortest round-trip decimals).
fn encode_rows<const N: usize>(rows: &[LoggedRow<N>]) -> String {
    let line = |(row, own): &LoggedRow<N>| {
        let mut fields = vec![row.step.to_string()];
        fields.extend(
            [row.objective, row.step_norm, row.functional_length, row.seconds].iter().chain(own).map(f64::to_string),
        );
        fields.join(" ")
    };
    rows.iter().map(line).collect::<Vec<_>>().join("\n")
}

/// The rows of [`encode_rows`]; the message names the line at fault.
fn decode_rows<const N: usize>(text: &str) -> std::result::Result<Vec<LoggedRow<N>>, String> {
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() != 5 + N {
                return Err(format!("line {} has {} fields, expected {}", i + 1, fields.len(), 5 + N));
            }
            let number = |k: usize| fields[k].parse::<f64>().map_err(|_| format!("line {}: {:?}", i + 1, fields[k]));
            let step = fields[0].parse::<usize>().map_err(|_| format!("line {}: step {:?}", i + 1, fields[0]))?;
            let mut own = [0.0; N];
            for (k, v) in own.iter_mut().enumerate() {
                *v = number(5 + k)?;
            }
            let row = PathRow {
                step,
                objective: number(1)?,
                step_norm: number(2)?,
                functional_length: number(3)?,
                seconds: number(4)?,
            };
            Ok((row, own))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_read_back_bit_for_bit() {
        let row = |step: usize, x: f64| PathRow {
            step,
            objective: x / 3.0,
            step_norm: 0.1 + 0.2,
            functional_length: x.sqrt() * 1e-7,
            seconds: 1e300 * x,
        };
        let rows: Vec<LoggedRow<2>> = vec![(row(0, 1.0), [0.0, -2.5e-12]), (row(20, 7.0), [1.0 / 7.0, f64::MAX])];
        let back = decode_rows::<2>(&encode_rows(&rows)).unwrap();
        assert_eq!(back, rows);
        assert!(decode_rows::<3>(&encode_rows(&rows)).unwrap_err().contains("line 1 has 7 fields, expected 8"));
    }
}
