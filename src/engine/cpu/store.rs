//! The CPU atom store: the N × D atoms as float32, as u8 codes into a table of at most 256
//! values, or as IEEE binary16 — the same three encodings as the GPU (`engine::gpu::atoms`),
//! chosen by the same `storage` key.
//!
//! The GEMMs read float32. An f32 store is read in place; a u8 or f16 store is decoded one
//! chunk (c × D) at a time into a per-task scratch buffer right before the chunk's GEMMs,
//! so the decoded chunk stays in L2 for both products and the store itself is streamed from
//! memory at 1 or 2 bytes per value instead of 4. Decoding is exact: a u8 code is the index
//! of the value's bit pattern in the table (value = table[code], exact for any source with
//! ≤ 256 distinct values, such as 8-bit images under any affine map), and f16 → f32 is
//! exact. So a u8 store gives every downstream float bit for bit as the f32 store of the
//! same atoms, and an f16 store gives bit for bit the f32 store of the f16-rounded atoms
//! ([`crate::engine::gpu::f16_stored`]).
//!
//! A fourth store, `Mapped`, reads a memory-mapped data-cache entry (u8 intensities or
//! float32, [`crate::data::mapped`]) and decodes it chunk by chunk in the same place, so an
//! atom set larger than RAM streams from the page cache; its decoded chunks are the values
//! of the in-memory store of the same atoms, bit for bit.

use std::sync::Arc;

use crate::data::mapped::{Encoding, MappedAtoms};
use crate::engine::gpu::{Storage, f16_stored};
use crate::{Error, Result};

/// The atoms as the CPU backend keeps them.
pub(super) enum AtomStore {
    /// Float32, shared (not copied) with whoever built the backend.
    F32(Arc<Vec<f32>>),
    /// One code per value; value = table[code]. The table is the distinct values sorted by
    /// [`f32::total_cmp`], padded with zeros to 256 entries.
    U8 {
        codes: Vec<u8>,
        table: Box<[f32; 256]>,
    },
    /// Binary16, rounded to nearest even with subnormals flushed to ±0 (as on the GPU).
    F16(Vec<half::f16>),
    /// A data-cache entry memory-mapped read-only (u8 intensities or float32), decoded one
    /// chunk at a time like `U8`: the atoms stay on disk and in the page cache, not in the
    /// process's memory ([`crate::data::mapped`]).
    Mapped(Arc<MappedAtoms>),
}

impl AtomStore {
    /// Encodes `atoms` (finite, already checked) for `storage`. u8 is refused, naming the
    /// `storage` key, when the atoms have more than 256 distinct values.
    pub(super) fn encode(atoms: &[f32], storage: Storage) -> Result<AtomStore> {
        match storage {
            Storage::F32 => Ok(AtomStore::F32(Arc::new(atoms.to_vec()))),
            Storage::F16 => Ok(AtomStore::F16(
                atoms
                    .iter()
                    .map(|&v| half::f16::from_f32(f16_stored(v)))
                    .collect(),
            )),
            Storage::U8 => {
                // A set of bit patterns, not a sorted copy of the atoms: the encoding must not
                // need the f32 footprint a second time. It stops at the 257th value.
                let mut seen = std::collections::HashSet::with_capacity(257);
                for v in atoms {
                    if seen.insert(v.to_bits()) && seen.len() > 256 {
                        break;
                    }
                }
                let mut distinct: Vec<f32> = seen.into_iter().map(f32::from_bits).collect();
                distinct.sort_unstable_by(|a, b| a.total_cmp(b));
                if distinct.len() > 256 {
                    return Err(Error::config(
                        "storage",
                        "u8 atom storage holds at most 256 distinct atom values (an 8-bit \
                         source); these atoms have more than 256 — use storage = \"f32\" (exact) or \
                         \"f16\", or \"auto\", which picks u8 only for 8-bit data",
                    ));
                }
                let codes = atoms
                    .iter()
                    .map(|v| {
                        distinct
                            .binary_search_by(|p| p.total_cmp(v))
                            .expect("every value is in the table") as u8
                    })
                    .collect();
                let mut table = Box::new([0.0f32; 256]);
                table[..distinct.len()].copy_from_slice(&distinct);
                Ok(AtomStore::U8 { codes, table })
            }
        }
    }

    pub(super) fn storage(&self) -> Storage {
        match self {
            AtomStore::F32(_) => Storage::F32,
            AtomStore::U8 { .. } => Storage::U8,
            AtomStore::F16(_) => Storage::F16,
            AtomStore::Mapped(m) => match m.encoding() {
                Encoding::U8 => Storage::U8,
                Encoding::F32 => Storage::F32,
            },
        }
    }

    /// Values stored (N·D).
    pub(super) fn len(&self) -> usize {
        match self {
            AtomStore::F32(a) => a.len(),
            AtomStore::U8 { codes, .. } => codes.len(),
            AtomStore::F16(h) => h.len(),
            AtomStore::Mapped(m) => m.rows() * m.dim(),
        }
    }

    /// Bytes the store holds (N·D·{4, 1, 2}, plus the u8 table; a mapped store's file
    /// payload, which lives in the page cache).
    pub(super) fn bytes(&self) -> usize {
        match self {
            AtomStore::F32(a) => a.len() * 4,
            AtomStore::U8 { codes, .. } => codes.len() + 256 * 4,
            AtomStore::F16(h) => h.len() * 2,
            AtomStore::Mapped(m) => m.payload_bytes(),
        }
    }

    /// Decodes the values [v0, v0 + len) into `scratch` (resized as needed) for a u8, f16 or
    /// mapped store; nothing for an f32 store, which [`AtomStore::values`] reads in place.
    pub(super) fn load(&self, v0: usize, len: usize, scratch: &mut Vec<f32>) {
        match self {
            AtomStore::F32(_) => {}
            AtomStore::U8 { codes, table } => {
                scratch.resize(len, 0.0);
                for (o, &k) in scratch.iter_mut().zip(&codes[v0..v0 + len]) {
                    *o = table[k as usize];
                }
            }
            AtomStore::F16(h) => {
                use half::slice::HalfFloatSliceExt;
                scratch.resize(len, 0.0);
                h[v0..v0 + len].convert_to_f32_slice(&mut scratch[..len]);
            }
            AtomStore::Mapped(m) => {
                scratch.resize(len, 0.0);
                m.decode(v0, &mut scratch[..len]);
            }
        }
    }

    /// The float32 values [v0, v0 + len): in place for an f32 store, else the first `len`
    /// values of `scratch`, which [`AtomStore::load`] filled with the same range.
    pub(super) fn values<'a>(&'a self, scratch: &'a [f32], v0: usize, len: usize) -> &'a [f32] {
        match self {
            AtomStore::F32(a) => &a[v0..v0 + len],
            _ => &scratch[..len],
        }
    }

    /// The same store with its atoms (rows of `d` values) in `order`: row p of the result is
    /// row order[p] of this one (the pruned backend's cluster order).
    /// A mapped store is refused (pruning would rewrite the entry in cluster order: not built).
    pub(super) fn permuted(&self, order: &[usize], d: usize) -> Result<AtomStore> {
        fn rows<T: Copy>(v: &[T], order: &[usize], d: usize) -> Vec<T> {
            order
                .iter()
                .flat_map(|&i| v[i * d..(i + 1) * d].iter().copied())
                .collect()
        }
        Ok(match self {
            AtomStore::F32(a) => AtomStore::F32(Arc::new(rows(a, order, d))),
            AtomStore::U8 { codes, table } => AtomStore::U8 {
                codes: rows(codes, order, d),
                table: table.clone(),
            },
            AtomStore::F16(h) => AtomStore::F16(rows(h, order, d)),
            AtomStore::Mapped(_) => {
                return Err(Error::config(
                    "prune",
                    "certified pruning of a mapped atom store is not built; use prune = \"off\" \
                     or --atom-store memory",
                ));
            }
        })
    }

    /// The float32 atom store when the store is f32 (shared, not copied); None otherwise.
    pub(super) fn as_f32(&self) -> Option<&[f32]> {
        match self {
            AtomStore::F32(a) => Some(a),
            _ => None,
        }
    }
}
