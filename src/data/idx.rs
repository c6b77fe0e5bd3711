//! IDX files (the MNIST / Fashion-MNIST format): a big-endian header with a magic number
//! (`0x00000803` for u8 images `[n, rows, cols]`, `0x00000801` for u8 labels `[n]`) followed
//! by the raw bytes.

use super::{byte_lut, read_bytes, Dataset};
use crate::error::{Error, Result};
use byteorder::{BigEndian, ByteOrder};
use std::path::Path;

/// Magic number of an IDX file of unsigned bytes with 3 dimensions (images).
pub const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned bytes with 1 dimension (labels).
pub const IDX_LABELS_MAGIC: u32 = 0x0000_0801;

/// Raw images of an IDX file.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxImages {
    /// Number of images.
    pub count: usize,
    /// Rows per image.
    pub rows: usize,
    /// Columns per image.
    pub cols: usize,
    /// `count * rows * cols` bytes, row-major.
    pub pixels: Vec<u8>,
}

fn bad(file: &Path, what: impl std::fmt::Display) -> Error {
    Error::Io(format!("{}: {what}", file.display()))
}

fn check_magic(bytes: &[u8], file: &Path, want: u32, kind: &str) -> Result<()> {
    if bytes.len() < 4 {
        return Err(bad(file, format!("truncated IDX header: {} bytes, no magic number", bytes.len())));
    }
    let magic = BigEndian::read_u32(&bytes[0..4]);
    if magic != want {
        return Err(bad(
            file,
            format!(
                "wrong magic number {magic:#010x}: expected {want:#010x} (IDX {kind}); \
                 not an IDX {kind} file"
            ),
        ));
    }
    Ok(())
}

/// Parses an IDX image file already in memory; `file` names it in errors. Checks the magic,
/// non-zero dimensions, and that the payload is exactly `count * rows * cols` bytes.
pub fn parse_idx_images(bytes: &[u8], file: &Path) -> Result<IdxImages> {
    check_magic(bytes, file, IDX_IMAGES_MAGIC, "images")?;
    if bytes.len() < 16 {
        return Err(bad(file, format!("truncated IDX images header: {} bytes, need 16", bytes.len())));
    }
    let count = BigEndian::read_u32(&bytes[4..8]) as usize;
    let rows = BigEndian::read_u32(&bytes[8..12]) as usize;
    let cols = BigEndian::read_u32(&bytes[12..16]) as usize;
    if count == 0 || rows == 0 || cols == 0 {
        return Err(bad(file, format!("wrong dimensions {count}x{rows}x{cols}: every dimension must be non-zero")));
    }
    let payload = bytes.len() - 16;
    let want = count
        .checked_mul(rows)
        .and_then(|v| v.checked_mul(cols))
        .ok_or_else(|| bad(file, format!("dimensions {count}x{rows}x{cols} overflow")))?;
    if payload != want {
        return Err(bad(
            file,
            format!(
                "{} IDX images: header declares {count} images of {rows}x{cols} = {want} \
                 bytes, file holds {payload} bytes after the header",
                if payload < want { "truncated" } else { "oversized" }
            ),
        ));
    }
    Ok(IdxImages { count, rows, cols, pixels: bytes[16..].to_vec() })
}

/// Parses an IDX label file already in memory; every label must be below `classes`.
pub fn parse_idx_labels(bytes: &[u8], file: &Path, classes: usize) -> Result<Vec<u32>> {
    check_magic(bytes, file, IDX_LABELS_MAGIC, "labels")?;
    if bytes.len() < 8 {
        return Err(bad(file, format!("truncated IDX labels header: {} bytes, need 8", bytes.len())));
    }
    let count = BigEndian::read_u32(&bytes[4..8]) as usize;
    let payload = bytes.len() - 8;
    if count == 0 {
        return Err(bad(file, "IDX labels declare 0 labels"));
    }
    if payload != count {
        return Err(bad(
            file,
            format!(
                "{} IDX labels: header declares {count} labels, file holds {payload} bytes \
                 after the header",
                if payload < count { "truncated" } else { "oversized" }
            ),
        ));
    }
    let labels = &bytes[8..];
    if let Some((i, &l)) = labels.iter().enumerate().find(|(_, &l)| l as usize >= classes) {
        return Err(bad(file, format!("label {l} at index {i} is out of range 0..{classes}")));
    }
    Ok(labels.iter().map(|&l| l as u32).collect())
}

/// Reads (raw or gzip) and parses an IDX image file.
pub fn read_idx_images(path: &Path) -> Result<IdxImages> {
    parse_idx_images(&read_bytes(path)?, path)
}

/// Reads (raw or gzip) and parses an IDX label file; labels must be below `classes`.
pub fn read_idx_labels(path: &Path, classes: usize) -> Result<Vec<u32>> {
    parse_idx_labels(&read_bytes(path)?, path, classes)
}

/// Loads an image/label IDX pair into a single-channel [`Dataset`]: checks the image size
/// against `expect_dims` (`(rows, cols)`, when given), that both files hold the same number
/// of items, and normalises each byte `b` to `(b / 255 - mean) / std`.
pub fn load_idx(
    images: &Path,
    labels: &Path,
    expect_dims: Option<(usize, usize)>,
    classes: usize,
    mean: f32,
    std: f32,
    name: &str,
) -> Result<Dataset> {
    let img = read_idx_images(images)?;
    if let Some((r, c)) = expect_dims {
        if (img.rows, img.cols) != (r, c) {
            return Err(bad(
                images,
                format!("wrong dimensions: images are {}x{}, expected {r}x{c}", img.rows, img.cols),
            ));
        }
    }
    let lab = read_idx_labels(labels, classes)?;
    if lab.len() != img.count {
        return Err(Error::Io(format!(
            "count mismatch: {} holds {} images but {} holds {} labels",
            images.display(),
            img.count,
            labels.display(),
            lab.len()
        )));
    }
    let lut = byte_lut(mean, std);
    let data: Vec<f32> = img.pixels.iter().map(|&b| lut[b as usize]).collect();
    Ok(Dataset {
        images: data,
        labels: lab,
        channels: 1,
        height: img.rows,
        width: img.cols,
        classes,
        name: name.to_string(),
    })
}
