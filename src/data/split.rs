//! The validation split: a fixed set of training images held out of every training run, on
//! which every arm of a comparison picks its settings. The test set is read only for the final
//! report.
//!
//! The split is the last [`VALIDATION_IMAGES`] images of a full training set (MNIST,
//! Fashion-MNIST: 55,000 + 5,000; CIFAR-10/100: 45,000 + 5,000); a smaller set (the generated
//! data of tests, a user's subset) holds out its last fifth. `geopath train` fits on the rest
//! only and records the split in the checkpoint ([`SplitRecord`]); commands that start from a
//! checkpoint refuse one whose record is missing or does not match ([`SplitRecord::check`]).

use super::Dataset;
use crate::error::{Error, Result};

/// Images held out of a full training set for validation.
pub const VALIDATION_IMAGES: usize = 5000;

/// Training sets below this size hold out their last fifth instead of [`VALIDATION_IMAGES`].
const FULL_SET: usize = 25_000;

/// Checkpoint metadata key of the split a network was trained on.
pub const SPLIT_KEY: &str = "trained-on";

/// A training set cut into the images to fit on and the held-out validation images.
#[derive(Debug, Clone)]
pub struct Split {
    /// The images training fits on: all but the last `validation.len()`.
    pub fit: Dataset,
    /// The held-out validation images: the last ones of the training set.
    pub validation: Dataset,
}

/// Validation images held out of a training set of `len` images.
pub fn validation_len(len: usize) -> usize {
    if len >= FULL_SET {
        VALIDATION_IMAGES
    } else {
        len / 5
    }
}

impl Split {
    /// Splits `train` (a whole training set) into fitting and validation images.
    pub fn of(train: &Dataset) -> Result<Split> {
        let held = validation_len(train.len());
        if held == 0 {
            return Err(Error::Invalid(format!(
                "{}: {} training images are too few to hold out a validation split",
                train.name,
                train.len()
            )));
        }
        let cut = train.len() - held;
        let mut fit = train.subset(&(0..cut).collect::<Vec<_>>());
        let mut validation = train.subset(&(cut..train.len()).collect::<Vec<_>>());
        fit.name = format!("{} [0, {cut})", train.name);
        validation.name = format!("{} [{cut}, {}) validation", train.name, train.len());
        Ok(Split { fit, validation })
    }

    /// The record of this split that a checkpoint trained on `fit` carries.
    pub fn record(&self) -> SplitRecord {
        SplitRecord { fit: self.fit.len(), total: self.fit.len() + self.validation.len() }
    }
}

/// What a checkpoint says about the images it was trained on: the first `fit` of a training
/// set of `total` images (the rest held out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitRecord {
    /// Training images fitted on (the first ones).
    pub fit: usize,
    /// Images of the whole training set.
    pub total: usize,
}

impl SplitRecord {
    /// The metadata value, e.g. `first 55000 of 60000`.
    pub fn to_metadata(self) -> String {
        format!("first {} of {}", self.fit, self.total)
    }

    /// Parses [`SplitRecord::to_metadata`]'s form.
    pub fn parse(value: &str) -> Option<SplitRecord> {
        let rest = value.strip_prefix("first ")?;
        let (fit, total) = rest.split_once(" of ")?;
        Some(SplitRecord { fit: fit.trim().parse().ok()?, total: total.trim().parse().ok()? })
    }

    /// Checks that a checkpoint (`what`, with its split metadata `value`, `None` when absent)
    /// was trained without the validation images of `split`: an error naming the fix otherwise.
    pub fn check(what: &str, value: Option<&str>, split: &Split) -> Result<()> {
        let want = split.record();
        let retrain = "train it again with `geopath train`, which holds the validation images out";
        let Some(value) = value else {
            return Err(Error::Invalid(format!(
                "{what} records no training split: it may have been trained on the validation images \
                 (the last {} of the training set), on which every arm is tuned; {retrain}",
                split.validation.len()
            )));
        };
        let got = SplitRecord::parse(value)
            .ok_or_else(|| Error::Invalid(format!("{what}: unreadable training split {value:?}")))?;
        if got.total != want.total || got.fit > want.fit {
            return Err(Error::Invalid(format!(
                "{what} was trained on the {} of the training set, which overlaps the validation \
                 images held out here (the last {} of {}); {retrain}",
                got.to_metadata(),
                split.validation.len(),
                want.total
            )));
        }
        Ok(())
    }
}
