//! The task sequences of `geopath continual`: split MNIST and split CIFAR-10 (five tasks of
//! two classes), split CIFAR-100 (five tasks of twenty classes), permuted MNIST and MNIST →
//! Fashion-MNIST, each task's training images split into the part
//! the arms train on and the validation part every pick is made on, and the two ways a task's
//! accuracy is measured.

use crate::data::{self, Dataset, DatasetName, Split};
use crate::error::{Error, Result};
use std::path::Path;
use std::str::FromStr;

/// The task sequences of `geopath continual`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskSequence {
    /// Five tasks of two MNIST digits each: {0,1}, {2,3}, …, {8,9}, one 10-way head.
    SplitMnist,
    /// MNIST, then MNIST under fixed random pixel permutations, one 10-way head.
    PermutedMnist,
    /// MNIST (labels 0–9), then Fashion-MNIST (labels 10–19), one 20-way head.
    MnistFashion,
    /// Five tasks of two CIFAR-10 classes each: {0,1}, {2,3}, …, {8,9}, one 10-way head.
    SplitCifar10,
    /// Five tasks of twenty CIFAR-100 (fine) classes each: 0–19, 20–39, …, one 100-way head.
    SplitCifar100,
}

impl FromStr for TaskSequence {
    type Err = Error;
    fn from_str(s: &str) -> Result<TaskSequence> {
        match s {
            "split-mnist" => Ok(TaskSequence::SplitMnist),
            "permuted-mnist" => Ok(TaskSequence::PermutedMnist),
            "mnist-fashion" => Ok(TaskSequence::MnistFashion),
            "split-cifar10" => Ok(TaskSequence::SplitCifar10),
            "split-cifar100" => Ok(TaskSequence::SplitCifar100),
            other => Err(Error::Invalid(format!(
                "unknown task sequence `{other}` (split-mnist, permuted-mnist, mnist-fashion, split-cifar10, split-cifar100)"
            ))),
        }
    }
}

impl TaskSequence {
    /// The name [`FromStr`] accepts.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskSequence::SplitMnist => "split-mnist",
            TaskSequence::PermutedMnist => "permuted-mnist",
            TaskSequence::MnistFashion => "mnist-fashion",
            TaskSequence::SplitCifar10 => "split-cifar10",
            TaskSequence::SplitCifar100 => "split-cifar100",
        }
    }
}

/// How a task's accuracy is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Task-incremental: the task is known at test time; the prediction is the most likely of
    /// that task's classes.
    Task,
    /// Class-incremental: the prediction is the most likely of all classes of the head.
    Class,
}

impl FromStr for Scenario {
    type Err = Error;
    fn from_str(s: &str) -> Result<Scenario> {
        match s {
            "task" => Ok(Scenario::Task),
            "class" => Ok(Scenario::Class),
            other => Err(Error::Invalid(format!("unknown scenario `{other}` (task, class)"))),
        }
    }
}

impl Scenario {
    /// The name [`FromStr`] accepts.
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::Task => "task",
            Scenario::Class => "class",
        }
    }
}

/// One task of a sequence: its data (labels already in the shared head's label space) and the
/// classes it uses.
pub struct Task {
    /// Short name, e.g. `digits 2-3`.
    pub name: String,
    /// Training images.
    pub train: Dataset,
    /// Test images.
    pub test: Dataset,
    /// The head's classes this task uses.
    pub classes: Vec<u32>,
}

/// Builds the tasks of `sequence` (`count` tasks for permuted MNIST: the plain images, then
/// `count - 1` permutations) and returns them with the width of the shared head. MNIST is read
/// from data/mnist (or `data_dir` for the MNIST-only sequences); Fashion-MNIST and CIFAR from
/// `data_dir` or the system data folders.
pub fn build_tasks(sequence: TaskSequence, count: usize, data_dir: Option<&Path>) -> Result<(Vec<Task>, usize)> {
    let load = |name: DatasetName, dir: Option<&Path>| -> Result<(Dataset, Dataset)> {
        Ok((data::load(name, true, dir)?, data::load(name, false, dir)?))
    };
    let mnist = || load(DatasetName::Mnist, if sequence == TaskSequence::MnistFashion { None } else { data_dir });
    match sequence {
        TaskSequence::SplitMnist => Ok((split_classes(&mnist()?, 2, "digits"), 10)),
        TaskSequence::SplitCifar10 => Ok((split_classes(&load(DatasetName::Cifar10, data_dir)?, 2, "classes"), 10)),
        TaskSequence::SplitCifar100 => Ok((split_classes(&load(DatasetName::Cifar100, data_dir)?, 20, "classes"), 100)),
        TaskSequence::PermutedMnist => {
            let mnist = mnist()?;
            if count < 2 {
                return Err(Error::Invalid(format!("permuted MNIST needs at least 2 tasks, got {count}")));
            }
            let tasks = (0..count)
                .map(|k| {
                    let (train, test, name) = if k == 0 {
                        (mnist.0.clone(), mnist.1.clone(), "MNIST".to_string())
                    } else {
                        (mnist.0.permute_pixels(k as u64), mnist.1.permute_pixels(k as u64), format!("permutation {k}"))
                    };
                    Task { name, train, test, classes: (0..10).collect() }
                })
                .collect();
            Ok((tasks, 10))
        }
        TaskSequence::MnistFashion => {
            let (mnist, fashion) = (mnist()?, load(DatasetName::FashionMnist, data_dir)?);
            let tasks = vec![
                Task {
                    name: "MNIST".into(),
                    train: mnist.0.relabel(|l| l, 20),
                    test: mnist.1.relabel(|l| l, 20),
                    classes: (0..10).collect(),
                },
                Task {
                    name: "Fashion-MNIST".into(),
                    train: fashion.0.relabel(|l| l + 10, 20),
                    test: fashion.1.relabel(|l| l + 10, 20),
                    classes: (10..20).collect(),
                },
            ];
            Ok((tasks, 20))
        }
    }
}

/// Five tasks of `per_task` consecutive classes of `(train, test)` each (`{0..per_task}`, …),
/// named `WHAT a-b`; the labels stay those of the whole data set (one shared head).
fn split_classes((train, test): &(Dataset, Dataset), per_task: usize, what: &str) -> Vec<Task> {
    (0..5)
        .map(|k| {
            let classes: Vec<u32> = (k * per_task..(k + 1) * per_task).map(|c| c as u32).collect();
            Task {
                name: format!("{what} {}-{}", classes[0], classes[per_task - 1]),
                train: train.filter_classes(&classes),
                test: test.filter_classes(&classes),
                classes,
            }
        })
        .collect()
}

/// A task with its training images split: the arms train on `fit`; picks are made on
/// `validation` (held out by [`Split::of`]); `task.test` is read for the report only.
pub struct TaskSplit<'a> {
    /// The task.
    pub task: &'a Task,
    /// Its training and validation images.
    pub split: Split,
}

impl TaskSplit<'_> {
    /// Splits every task's training images.
    pub fn all(tasks: &[Task]) -> Result<Vec<TaskSplit<'_>>> {
        tasks.iter().map(|task| Ok(TaskSplit { task, split: Split::of(&task.train)? })).collect()
    }
}
