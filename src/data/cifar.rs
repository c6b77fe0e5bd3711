//! CIFAR binary files. CIFAR-10 records are 1 label byte + 3072 pixel bytes (R, G, B planes of
//! 32x32); CIFAR-100 records are a coarse label byte, a fine label byte, then the same 3072
//! pixel bytes.

use super::{byte_lut, read_bytes, Dataset, DatasetName};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Pixel bytes per CIFAR image: 3 planes of 32x32.
pub const CIFAR_PIXELS: usize = 3 * 32 * 32;
/// Bytes per CIFAR-10 record.
pub const CIFAR10_RECORD: usize = 1 + CIFAR_PIXELS;
/// Bytes per CIFAR-100 record.
pub const CIFAR100_RECORD: usize = 2 + CIFAR_PIXELS;

/// Decodes the records of one file into `out`, reading the label at byte `label_at` of each
/// record (which is `label_bytes + 3072` long) and checking it, and the other label bytes
/// against their range.
fn decode_records(
    bytes: &[u8],
    file: &Path,
    label_bytes: usize,
    label_at: usize,
    ranges: &[usize],
    luts: &[[f32; 256]; 3],
    out: &mut Dataset,
) -> Result<()> {
    let record = label_bytes + CIFAR_PIXELS;
    let bad = |what: String| Error::Io(format!("{}: {what}", file.display()));
    if bytes.is_empty() {
        return Err(bad("empty file: no CIFAR records".to_string()));
    }
    if !bytes.len().is_multiple_of(record) {
        return Err(bad(format!(
            "truncated or malformed CIFAR file: {} bytes is not a whole number of {record}-byte \
             records ({} full records and {} bytes left over)",
            bytes.len(),
            bytes.len() / record,
            bytes.len() % record
        )));
    }
    let n = bytes.len() / record;
    // Validate all labels before allocating for the pixels.
    for (i, rec) in bytes.chunks_exact(record).enumerate() {
        for (j, &limit) in ranges.iter().enumerate() {
            if rec[j] as usize >= limit {
                return Err(bad(format!("record {i}: label byte {j} is {}, out of range 0..{limit}", rec[j])));
            }
        }
    }
    out.images.reserve(n * CIFAR_PIXELS);
    out.labels.reserve(n);
    let plane = CIFAR_PIXELS / 3;
    for rec in bytes.chunks_exact(record) {
        out.labels.push(rec[label_at] as u32);
        let px = &rec[label_bytes..];
        for (c, lut) in luts.iter().enumerate() {
            out.images.extend(px[c * plane..(c + 1) * plane].iter().map(|&b| lut[b as usize]));
        }
    }
    Ok(())
}

fn empty(classes: usize, name: &str) -> Dataset {
    Dataset {
        images: Vec::new(),
        labels: Vec::new(),
        channels: 3,
        height: 32,
        width: 32,
        classes,
        name: name.to_string(),
    }
}

fn luts(name: DatasetName) -> [[f32; 256]; 3] {
    let (mean, std) = name.mean_std();
    [byte_lut(mean[0], std[0]), byte_lut(mean[1], std[1]), byte_lut(mean[2], std[2])]
}

/// Reads CIFAR-10 binary files (raw or gzip) and concatenates them in order, normalised with
/// the CIFAR-10 per-channel mean/std. `name` names the result.
pub fn read_cifar10(files: &[PathBuf], name: &str) -> Result<Dataset> {
    let luts = luts(DatasetName::Cifar10);
    let mut out = empty(10, name);
    for f in files {
        let bytes = read_bytes(f)?;
        decode_records(&bytes, f, 1, 0, &[10], &luts, &mut out)?;
    }
    Ok(out)
}

/// Reads a CIFAR-100 binary file (raw or gzip), normalised with the CIFAR-100 per-channel
/// mean/std, keeping the fine labels (100 classes) or, with `coarse`, the coarse ones (20).
pub fn read_cifar100(file: &Path, coarse: bool, name: &str) -> Result<Dataset> {
    let luts = luts(DatasetName::Cifar100);
    let mut out = empty(if coarse { 20 } else { 100 }, name);
    let bytes = read_bytes(file)?;
    decode_records(&bytes, file, 2, if coarse { 0 } else { 1 }, &[20, 100], &luts, &mut out)?;
    Ok(out)
}
