//! Points along a curve between two optima: a path's points evenly spaced by arc length, and
//! the accuracy at each point with BatchNorm statistics of its own (A's and B's at the ends,
//! recomputed on training data in between).

use crate::cost::{self, Meter};
use crate::data::Dataset;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::experiments::curves::refresh_batchnorm;
use crate::nn::network::Network;
use crate::ops::{elementwise as ew, flat};
use crate::tensor::Tensor;
use crate::train::evaluate;

/// One seed's pair of optima.
pub struct PairRun<'a> {
    /// Seed of batches (and of the pair's training).
    pub seed: u64,
    /// Network A (its BatchNorm statistics are A's).
    pub net_a: &'a Network,
    /// A's parameters.
    pub wa: &'a Tensor,
    /// Network B, of A's architecture (its BatchNorm statistics are B's).
    pub net_b: &'a Network,
    /// B's parameters.
    pub wb: &'a Tensor,
    /// Where A and B came from (for the report).
    pub source: String,
}

/// Training images whose statistics each interior point's BatchNorm layers get.
pub const REFRESH_IMAGES: usize = 2560;

impl PairRun<'_> {
    /// Accuracy on the first `limit` examples of `data` at each of `points` (the first A, the
    /// last B): the ends with A's and B's own BatchNorm statistics, every point in between with
    /// statistics recomputed on [`REFRESH_IMAGES`] images of `fit` (batches of `batch`).
    /// Returns the accuracies and the FLOPs of the recomputation (counted on the counter);
    /// the evaluation itself is not counted.
    pub fn accuracies(
        &self,
        points: &[Tensor],
        fit: &Dataset,
        data: &Dataset,
        limit: usize,
        batch: usize,
        device: &Device,
    ) -> Result<(Vec<f64>, u64)> {
        if points.len() < 2 {
            return Err(Error::Invalid("a curve needs at least its two ends".into()));
        }
        let last = points.len() - 1;
        let eval = |net: &Network, w: &Tensor| cost::uncounted(|| evaluate(net, w, data, limit, device));
        // The ends first, each with the statistics its network holds.
        let (first, end) = (eval(self.net_a, &points[0])?, eval(self.net_b, &points[last])?);
        let own = self.net_a.buffers()?;
        let meter = Meter::start();
        let interior = points[1..last]
            .iter()
            .map(|w| {
                refresh_batchnorm(self.net_a, w, fit, REFRESH_IMAGES.div_ceil(batch.max(1)), batch, device)?;
                eval(self.net_a, w)
            })
            .collect::<Result<Vec<f64>>>();
        self.net_a.set_buffers(&own)?;
        let mut accuracies = vec![first];
        accuracies.extend(interior?);
        accuracies.push(end);
        Ok((accuracies, meter.flops()))
    }
}

/// Points of a path kept as it is walked, at least `spacing` apart in arc length, for
/// [`ArcSampler::even_points`].
pub struct ArcSampler {
    spacing: f64,
    length: f64,
    last: Tensor,
    kept: Vec<(f64, Tensor)>,
}

impl ArcSampler {
    /// A sampler of the path starting at `start`, keeping points `spacing` apart.
    pub fn new(start: &Tensor, spacing: f64) -> ArcSampler {
        ArcSampler { spacing, length: 0.0, last: start.clone(), kept: vec![(0.0, start.clone())] }
    }

    /// The path's next point.
    pub fn push(&mut self, w: &Tensor) -> Result<()> {
        self.length += flat::norm(&ew::sub(w, &self.last)?)? as f64;
        self.last = w.clone();
        if self.length - self.kept.last().map_or(0.0, |k| k.0) >= self.spacing {
            self.kept.push((self.length, w.clone()));
        }
        Ok(())
    }

    /// Ends the path at `end` (its last point, kept) and closes it by the straight segment to
    /// `target` when it stopped short of it.
    pub fn finish(mut self, end: &Tensor, target: &Tensor) -> Result<ArcSampler> {
        if self.kept.last().map(|k| k.0) != Some(self.length) {
            self.kept.push((self.length, end.clone()));
        }
        let gap = flat::norm(&ew::sub(target, end)?)? as f64;
        if gap > 0.0 {
            self.length += gap;
            self.kept.push((self.length, target.clone()));
        }
        Ok(self)
    }

    /// `n` points evenly spaced by arc length from the start to the end, each interpolated
    /// linearly between the two kept points around it (exact for the first and last).
    pub fn even_points(&self, n: usize) -> Result<Vec<Tensor>> {
        let mut out = Vec::with_capacity(n);
        let mut j = 0;
        for i in 0..n {
            let s = self.length * i as f64 / (n - 1).max(1) as f64;
            while j + 2 < self.kept.len() && self.kept[j + 1].0 < s {
                j += 1;
            }
            let ((s0, w0), (s1, w1)) = match (self.kept.get(j), self.kept.get(j + 1)) {
                (Some(a), Some(b)) => (a, b),
                (Some(a), None) => (a, a),
                _ => return Err(Error::Invalid("an empty path".into())),
            };
            let f = if s1 > s0 { ((s - s0) / (s1 - s0)).clamp(0.0, 1.0) } else { 1.0 };
            out.push(if f <= 0.0 {
                w0.clone()
            } else if f >= 1.0 {
                w1.clone()
            } else {
                ew::axpby(1.0 - f as f32, w0, f as f32, w1)?
            });
        }
        Ok(out)
    }

    /// Arc length of the path so far.
    pub fn length(&self) -> f64 {
        self.length
    }
}
