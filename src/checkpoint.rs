//! Checkpoints: a model's architecture spec, its flat parameter vector, named buffers (e.g.
//! BatchNorm running statistics, optimiser state) and free-form metadata, in one binary file
//! with a checksum, saved atomically.
//!
//! # Format (version 1)
//!
//! All integers are little-endian; `f32` values are IEEE-754 binary32, little-endian. Strings
//! are UTF-8 without terminator. Fields follow each other without padding:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic, the bytes `b"GEOPATH\x01"` (`47 45 4F 50 41 54 48 01`) |
//! | 8 | 4 | format version, `u32` = 1 |
//! | 12 | 4 | spec length `S` in bytes, `u32` |
//! | 16 | `S` | architecture spec, UTF-8 |
//! | 16+S | 8 | parameter count `P`, `u64` |
//! | 24+S | 4·`P` | parameters, `P` × `f32` |
//! | … | 4 | buffer count `B`, `u32`; then `B` times: |
//! | | 4 | &nbsp;&nbsp;name length `L`, `u32` |
//! | | `L` | &nbsp;&nbsp;name, UTF-8 |
//! | | 8 | &nbsp;&nbsp;value count `N`, `u64` |
//! | | 4·`N` | &nbsp;&nbsp;values, `N` × `f32` |
//! | … | 4 | metadata count `M`, `u32`; then `M` times: |
//! | | 4 | &nbsp;&nbsp;key length `K`, `u32` |
//! | | `K` | &nbsp;&nbsp;key, UTF-8 |
//! | | 4 | &nbsp;&nbsp;value length `V`, `u32` |
//! | | `V` | &nbsp;&nbsp;value, UTF-8 |
//! | end − 4 | 4 | checksum, `u32`: CRC-32 (IEEE 802.3 / zlib: reflected polynomial `0xEDB88320`, initial value and final xor `0xFFFFFFFF`) of every byte before it |
//!
//! The file ends right after the checksum. Buffer names and metadata keys are kept in file
//! order; duplicates are neither rejected nor merged.
//!
//! # Loading
//!
//! [`Checkpoint::load`] reads the whole file, checks the magic ("not a geopath checkpoint") and
//! the version ("unsupported format version"), then walks the fields, checking every declared
//! length against the bytes left in the file before anything is allocated (a file that ends
//! early, or declares more than it holds, is reported as "truncated or corrupted", naming the
//! field and the offset), then verifies the checksum ("corrupted: checksum mismatch"), and only
//! then decodes strings and floats. A byte flipped anywhere after the version field therefore
//! gives an error containing "corrupted": a checksum mismatch when the flip leaves the lengths
//! intact, a structural error naming the field when it does not.
//!
//! # Saving
//!
//! [`Checkpoint::save`] writes `<name>.tmp-<pid>-<n>` in the directory of the target (`n` a
//! per-process counter, so that threads saving concurrently do not collide), fsyncs it, renames
//! it over the target and fsyncs the directory (best effort). Readers see the old file or the
//! new one, never a partial one; a failure before the rename removes the temporary file and
//! leaves any existing target untouched.

use crate::error::{Error, Result};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The 8 bytes every checkpoint starts with.
pub const MAGIC: [u8; 8] = *b"GEOPATH\x01";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;

/// A model checkpoint, in memory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Checkpoint {
    /// The architecture spec (free-form text identifying the model, e.g. layer sizes).
    pub spec: String,
    /// The flat parameter vector.
    pub params: Vec<f32>,
    /// Named non-parameter buffers (running statistics, optimiser state, ...), in order.
    pub buffers: Vec<(String, Vec<f32>)>,
    /// Free-form key/value metadata (epoch, seed, ...), in order.
    pub metadata: Vec<(String, String)>,
}

// ---------------------------------------------------------------------------------------------
// CRC-32 (IEEE), table-driven.

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

static CRC_TABLE: [u32; 256] = crc_table();

/// Running CRC-32 state (pre-inverted); start from `!0`, finish with `!state`.
fn crc_update(mut state: u32, bytes: &[u8]) -> u32 {
    for &b in bytes {
        state = CRC_TABLE[((state ^ b as u32) & 0xFF) as usize] ^ (state >> 8);
    }
    state
}

/// The CRC-32 (IEEE 802.3, as zlib's `crc32`) of `bytes`.
pub fn crc32(bytes: &[u8]) -> u32 {
    !crc_update(!0, bytes)
}

/// A writer that checksums what passes through it.
struct CrcWriter<W: Write> {
    inner: W,
    state: u32,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.state = crc_update(self.state, &buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

// ---------------------------------------------------------------------------------------------
// Writing.

fn len_u32(what: &str, n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| {
        Error::Invalid(format!("checkpoint: {what} has {n} entries/bytes, more than the format's u32 limit"))
    })
}

fn write_f32s(w: &mut impl Write, values: &[f32]) -> io::Result<()> {
    let mut chunk = Vec::with_capacity(4 * 16384.min(values.len()));
    for part in values.chunks(16384) {
        chunk.clear();
        for v in part {
            chunk.extend_from_slice(&v.to_le_bytes());
        }
        w.write_all(&chunk)?;
    }
    Ok(())
}

fn write_str(w: &mut impl Write, s: &str) -> io::Result<()> {
    w.write_all(&(s.len() as u32).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

/// Counts of the file's entries that must fit the format.
fn check_limits(c: &Checkpoint) -> Result<()> {
    len_u32("spec", c.spec.len())?;
    len_u32("buffer list", c.buffers.len())?;
    len_u32("metadata list", c.metadata.len())?;
    for (name, _) in &c.buffers {
        len_u32("a buffer name", name.len())?;
    }
    for (k, v) in &c.metadata {
        len_u32("a metadata key", k.len())?;
        len_u32("a metadata value", v.len())?;
    }
    Ok(())
}

static TMP_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Writes `path` atomically: `write` fills a temporary file in the same directory, which is
/// fsynced and renamed over `path` only when `write` succeeded. On any failure the temporary
/// file is removed and `path` is untouched.
fn write_atomic(path: &Path, write: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> Result<()> {
    let fail = |what: &str, e: io::Error| Error::Io(format!("checkpoint {}: cannot {what}: {e}", path.display()));
    let name = path
        .file_name()
        .ok_or_else(|| Error::Io(format!("checkpoint {}: not a file path (no file name)", path.display())))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp_name = name.to_os_string();
    tmp_name.push(format!(".tmp-{}-{}", std::process::id(), TMP_COUNTER.fetch_add(1, Ordering::Relaxed)));
    let tmp = dir.join(tmp_name);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| fail(&format!("create temporary file {}", tmp.display()), e))?;
    let result = (|| {
        let mut w = BufWriter::with_capacity(1 << 20, file);
        write(&mut w).map_err(|e| fail("write", e))?;
        let file = w.into_inner().map_err(|e| fail("write", e.into_error()))?;
        file.sync_all().map_err(|e| fail("fsync", e))?;
        drop(file);
        fs::rename(&tmp, path).map_err(|e| fail(&format!("rename {} over the target", tmp.display()), e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
        return result;
    }
    // Make the rename itself durable; not every platform/filesystem can fsync a directory.
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Reading.

/// A cursor over the file's bytes that names the field it is reading when they run out.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, field: &str) -> std::result::Result<&'a [u8], String> {
        if self.remaining() < n {
            return Err(format!(
                "truncated or corrupted: file ends inside {field} (it needs {n} bytes at offset \
                 {}, {} remain; file size {})",
                self.pos,
                self.remaining(),
                self.bytes.len()
            ));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u32(&mut self, field: &str) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4, field)?.try_into().unwrap()))
    }

    fn u64(&mut self, field: &str) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8, field)?.try_into().unwrap()))
    }

    /// `count` items of `size` bytes of `field`, checked against the bytes left before use.
    fn array(&mut self, count: u64, size: u64, field: &str) -> std::result::Result<&'a [u8], String> {
        let bytes = count.checked_mul(size).filter(|&b| b <= self.remaining() as u64);
        match bytes {
            Some(b) => self.take(b as usize, field),
            None => Err(format!(
                "truncated or corrupted: {field} declares {count} × {size} bytes at offset {}, \
                 but only {} bytes remain (file size {})",
                self.pos,
                self.remaining(),
                self.bytes.len()
            )),
        }
    }

    /// A `u32` length, then that many bytes.
    fn string(&mut self, field: &str) -> std::result::Result<&'a [u8], String> {
        let n = self.u32(&format!("the length of {field}"))?;
        self.array(n as u64, 1, field)
    }

    /// A `u64` count, then that many f32 values.
    fn floats(&mut self, field: &str) -> std::result::Result<&'a [u8], String> {
        let n = self.u64(&format!("the element count of {field}"))?;
        self.array(n, 4, field)
    }
}

/// The fields of a checkpoint as byte ranges of the file, before the checksum is verified.
struct Raw<'a> {
    spec: &'a [u8],
    params: &'a [u8],
    buffers: Vec<(&'a [u8], &'a [u8])>,
    metadata: Vec<(&'a [u8], &'a [u8])>,
}

fn utf8(bytes: &[u8], field: &str) -> std::result::Result<String, String> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| format!("malformed: {field} is not valid UTF-8 (although the checksum matches)"))
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

/// Parses a whole file; the message names the field at fault (the caller adds the path).
fn parse(bytes: &[u8]) -> std::result::Result<Checkpoint, String> {
    if bytes.len() < MAGIC.len() {
        return Err(if MAGIC.starts_with(bytes) {
            format!("truncated or corrupted: file ends inside the magic ({} of 8 bytes)", bytes.len())
        } else {
            "not a geopath checkpoint (wrong magic)".to_string()
        });
    }
    if bytes[..8] != MAGIC {
        return Err(format!(
            "not a geopath checkpoint (wrong magic: starts with {:02x?}, expected {:02x?})",
            &bytes[..8],
            MAGIC
        ));
    }
    let mut r = Reader { bytes, pos: 8 };
    let version = r.u32("the format version")?;
    if version != VERSION {
        return Err(format!("unsupported format version {version} (this build reads version {VERSION})"));
    }
    let spec = r.string("the spec")?;
    let params = r.floats("the parameters")?;
    let nb = r.u32("the buffer count")?;
    let mut buffers = Vec::new();
    for i in 0..nb {
        let name = r.string(&format!("the name of buffer {i}"))?;
        let values = r.floats(&format!("the values of buffer {i}"))?;
        buffers.push((name, values));
    }
    let nm = r.u32("the metadata count")?;
    let mut metadata = Vec::new();
    for i in 0..nm {
        let key = r.string(&format!("the key of metadata entry {i}"))?;
        let value = r.string(&format!("the value of metadata entry {i}"))?;
        metadata.push((key, value));
    }
    let body_end = r.pos;
    let stored = r.u32("the checksum")?;
    if r.remaining() != 0 {
        return Err(format!("corrupted: {} unexpected bytes after the checksum at offset {body_end}", r.remaining()));
    }
    let computed = crc32(&bytes[..body_end]);
    if stored != computed {
        return Err(format!("corrupted: checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"));
    }
    let raw = Raw { spec, params, buffers, metadata };
    Ok(Checkpoint {
        spec: utf8(raw.spec, "the spec")?,
        params: floats(raw.params),
        buffers: raw
            .buffers
            .iter()
            .enumerate()
            .map(|(i, (n, v))| Ok((utf8(n, &format!("the name of buffer {i}"))?, floats(v))))
            .collect::<std::result::Result<_, String>>()?,
        metadata: raw
            .metadata
            .iter()
            .enumerate()
            .map(|(i, (k, v))| {
                Ok((
                    utf8(k, &format!("the key of metadata entry {i}"))?,
                    utf8(v, &format!("the value of metadata entry {i}"))?,
                ))
            })
            .collect::<std::result::Result<_, String>>()?,
    })
}

/// Shortens long specs in messages.
fn clip(s: &str) -> String {
    const MAX: usize = 160;
    if s.chars().count() <= MAX {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head:?}… ({} bytes)", s.len())
    }
}

impl Checkpoint {
    /// Writes the checkpoint in the format above to `w` (not atomic; see [`Self::save`]).
    pub fn write_to(&self, w: &mut dyn Write) -> Result<()> {
        check_limits(self)?;
        self.write_unchecked(w).map_err(|e| Error::Io(format!("checkpoint: cannot write: {e}")))
    }

    fn write_unchecked(&self, w: &mut dyn Write) -> io::Result<()> {
        let mut cw = CrcWriter { inner: w, state: !0 };
        cw.write_all(&MAGIC)?;
        cw.write_all(&VERSION.to_le_bytes())?;
        write_str(&mut cw, &self.spec)?;
        cw.write_all(&(self.params.len() as u64).to_le_bytes())?;
        write_f32s(&mut cw, &self.params)?;
        cw.write_all(&(self.buffers.len() as u32).to_le_bytes())?;
        for (name, values) in &self.buffers {
            write_str(&mut cw, name)?;
            cw.write_all(&(values.len() as u64).to_le_bytes())?;
            write_f32s(&mut cw, values)?;
        }
        cw.write_all(&(self.metadata.len() as u32).to_le_bytes())?;
        for (k, v) in &self.metadata {
            write_str(&mut cw, k)?;
            write_str(&mut cw, v)?;
        }
        let crc = !cw.state;
        cw.inner.write_all(&crc.to_le_bytes())
    }

    /// The file's bytes, in memory.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        self.write_to(&mut v)?;
        Ok(v)
    }

    /// Parses a checkpoint from the bytes of a file (the checks of [`Self::load`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Checkpoint> {
        parse(bytes).map_err(|m| Error::Io(format!("checkpoint: {m}")))
    }

    /// Saves atomically to `path` (see the module docs): the old file, if any, is replaced
    /// only after the new one is completely written and fsynced, and a failure leaves it
    /// untouched. Errors name the path.
    pub fn save(&self, path: &Path) -> Result<()> {
        check_limits(self)?;
        write_atomic(path, |w| self.write_unchecked(w))
    }

    /// Loads and verifies a checkpoint. Errors name the path and say what is wrong: missing
    /// or unreadable file, wrong magic ("not a geopath checkpoint"), unsupported version,
    /// truncation or an impossible declared length (naming the field and offset), checksum
    /// mismatch ("corrupted").
    pub fn load(path: &Path) -> Result<Checkpoint> {
        let bytes = fs::read(path).map_err(|e| {
            Error::Io(if e.kind() == io::ErrorKind::NotFound {
                format!("checkpoint {}: no such file", path.display())
            } else {
                format!("checkpoint {}: cannot read: {e}", path.display())
            })
        })?;
        parse(&bytes).map_err(|m| Error::Io(format!("checkpoint {}: {m}", path.display())))
    }

    /// Checks that this checkpoint belongs to the model `expected_spec` with
    /// `expected_params` parameters; the error names both models.
    pub fn check_spec(&self, expected_spec: &str, expected_params: usize) -> Result<()> {
        if self.spec != expected_spec || self.params.len() != expected_params {
            return Err(Error::Invalid(format!(
                "checkpoint is for model {} with {} parameters, but the model is {} with {} \
                 parameters",
                clip(&self.spec),
                self.params.len(),
                clip(expected_spec),
                expected_params
            )));
        }
        Ok(())
    }

    /// The values of the first buffer named `name`.
    pub fn buffer(&self, name: &str) -> Option<&[f32]> {
        self.buffers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice())
    }

    /// The value of the first metadata entry with key `key`.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn a_write_failing_midway_leaves_the_old_file_and_no_temporary() {
        let dir = std::env::temp_dir().join(format!("geopath-ckpt-unit-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("model.ckpt");
        fs::write(&path, b"old contents").unwrap();
        let err = write_atomic(&path, |w| {
            w.write_all(&[7u8; 3 << 20])?;
            Err(io::Error::other("disk full (simulated)"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("simulated"), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"old contents");
        let left: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("model.ckpt")]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
