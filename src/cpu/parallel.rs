//! Splitting memory-bound loops over the CPU backend's threads. Small arrays stay on the
//! calling thread: below [`PAR_MIN`] elements a fork costs more than it saves.

use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Elements below which a loop runs on one thread.
pub const PAR_MIN: usize = 1 << 17;

/// Elements per parallel piece for an array of `len`: a few pieces per thread.
fn piece(len: usize) -> usize {
    len.div_ceil(4 * super::threads()).max(PAR_MIN / 4)
}

/// Calls `f(i, row)` for each row `i` of `data` (rows of `row_len` elements), over threads
/// when the array is large.
pub fn rows_mut(data: &mut [f32], row_len: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    if data.len() < PAR_MIN {
        data.chunks_mut(row_len).enumerate().for_each(|(i, r)| f(i, r));
    } else {
        let rows_per = piece(data.len()).div_ceil(row_len).max(1);
        data.par_chunks_mut(rows_per * row_len).enumerate().for_each(|(c, block)| {
            for (j, r) in block.chunks_mut(row_len).enumerate() {
                f(c * rows_per + j, r);
            }
        });
    }
}

/// `data[i] = f(data[i])`.
pub fn map_inplace(data: &mut [f32], f: impl Fn(f32) -> f32 + Sync) {
    if data.len() < PAR_MIN {
        data.iter_mut().for_each(|v| *v = f(*v));
    } else {
        data.par_chunks_mut(piece(data.len())).for_each(|c| c.iter_mut().for_each(|v| *v = f(*v)));
    }
}

/// `data[i] = f(data[i], other[i])`.
pub fn zip_inplace(data: &mut [f32], other: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) {
    assert_eq!(data.len(), other.len());
    if data.len() < PAR_MIN {
        data.iter_mut().zip(other).for_each(|(v, &o)| *v = f(*v, o));
    } else {
        let p = piece(data.len());
        data.par_chunks_mut(p)
            .zip(other.par_chunks(p))
            .for_each(|(c, o)| c.iter_mut().zip(o).for_each(|(v, &x)| *v = f(*v, x)));
    }
}

/// `f(&mut a[i], &mut b[i])` for every `i`.
pub fn zip2_inplace(a: &mut [f32], b: &mut [f32], f: impl Fn(&mut f32, &mut f32) + Sync) {
    assert_eq!(a.len(), b.len());
    if a.len() < PAR_MIN {
        a.iter_mut().zip(b.iter_mut()).for_each(|(x, y)| f(x, y));
    } else {
        let p = piece(a.len());
        a.par_chunks_mut(p)
            .zip(b.par_chunks_mut(p))
            .for_each(|(ca, cb)| ca.iter_mut().zip(cb.iter_mut()).for_each(|(x, y)| f(x, y)));
    }
}

/// A new array of `len` elements, each parallel piece `[start, start + piece.len())` written
/// by `fill(start, piece)`, which must write every element of its piece; pieces start at
/// multiples of `align`. Writing fresh memory this way skips the zeroing of `vec![0.0; len]`.
fn new_filled(len: usize, align: usize, fill: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync) -> Vec<f32> {
    let mut out = Vec::with_capacity(len);
    let spare = &mut out.spare_capacity_mut()[..len];
    if len < PAR_MIN {
        fill(0, spare);
    } else {
        let p = piece(len).next_multiple_of(align.max(1));
        spare.par_chunks_mut(p).enumerate().for_each(|(i, c)| fill(i * p, c));
    }
    // SAFETY: every piece of the first `len` elements was written by `fill`, whose contract is
    // to write each element of its piece (the callers below do, element by element).
    unsafe { out.set_len(len) };
    out
}

/// A new array of `len` zeros, zeroed over threads when large.
pub fn zeros(len: usize) -> Vec<f32> {
    new_filled(len, 1, |_, piece| piece.fill(MaybeUninit::new(0.0)))
}

/// A new array of `len` elements in rows of `row_len`, row `i` written by `fill(i, row)`, which
/// must write every element of its row; rows over threads when the array is large.
pub fn new_rows(len: usize, row_len: usize, fill: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync) -> Vec<f32> {
    let row_len = row_len.max(1);
    new_filled(len, row_len, |start, piece| {
        for (j, row) in piece.chunks_mut(row_len).enumerate() {
            fill(start / row_len + j, row);
        }
    })
}

/// A new array `f(a[i])`.
pub fn map_slice(a: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    new_filled(a.len(), 1, |start, piece| {
        let src = &a[start..start + piece.len()];
        piece.iter_mut().zip(src).for_each(|(o, &x)| {
            o.write(f(x));
        });
    })
}

/// A new array `f(a[i], b[i])`.
pub fn map2(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    assert_eq!(a.len(), b.len());
    new_filled(a.len(), 1, |start, piece| {
        let (x, y) = (&a[start..start + piece.len()], &b[start..start + piece.len()]);
        piece.iter_mut().zip(x).zip(y).for_each(|((o, &x), &y)| {
            o.write(f(x, y));
        });
    })
}
