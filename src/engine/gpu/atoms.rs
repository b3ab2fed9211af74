//! How atoms are laid out on the device: encoding (f32 bits or u8 codes) and the split of the
//! atom store into bindings no larger than the adapter allows.

use crate::{Error, Result};

/// How atom values are stored on the device. Arithmetic is f32 either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Storage {
    /// 4 bytes per value, any data.
    #[default]
    F32,
    /// 1 byte per value: a code into a table of at most 256 distinct f32 values. Exact (the
    /// decoded atoms equal the input bit for bit) for any source with ≤ 256 distinct values,
    /// such as 8-bit images under any affine map; refused otherwise.
    U8,
    /// 2 bytes per value: IEEE binary16, rounded to nearest even, with f16 subnormals
    /// (|a| < 2⁻¹⁴) flushed to ±0 on the host so that every device decodes the same values.
    /// Decoded with WGSL's core `unpack2x16float` (exact f16 → f32), so no `enable f16` and
    /// no SHADER_F16 feature is needed: all arithmetic stays f32. This changes the prior
    /// itself: see the engine's module docs for how much.
    F16,
}

impl std::str::FromStr for Storage {
    type Err = Error;
    fn from_str(s: &str) -> Result<Storage> {
        match s {
            "f32" => Ok(Storage::F32),
            "u8" => Ok(Storage::U8),
            "f16" => Ok(Storage::F16),
            _ => Err(Error::config(
                "storage",
                format!("unknown atom storage {s:?}; expected f32, u8 or f16"),
            )),
        }
    }
}

/// The f16 value a stored atom value decodes to: round to nearest even, subnormals → ±0.
pub fn f16_stored(v: f32) -> f32 {
    let h = half::f16::from_f32(v);
    if h.classify() == std::num::FpCategory::Subnormal {
        if v.is_sign_negative() { -0.0 } else { 0.0 }
    } else {
        h.to_f32()
    }
}

/// The atoms as `storage` keeps them (what the kernels compute with): the input itself for
/// f32 and u8 (u8 is exact or refused), each value through [`f16_stored`] for f16.
pub fn stored_values(atoms: &[f32], storage: Storage) -> Vec<f32> {
    match storage {
        Storage::F32 | Storage::U8 => atoms.to_vec(),
        Storage::F16 => atoms.iter().map(|&v| f16_stored(v)).collect(),
    }
}

impl Storage {
    /// The value of the `STORAGE` override constant of the kernels.
    pub(crate) fn shader_code(self) -> u32 {
        match self {
            Storage::F32 => 0,
            Storage::U8 => 1,
            Storage::F16 => 2,
        }
    }
    /// Bytes one atom value takes on the device.
    pub fn bytes_per_value(self) -> f64 {
        match self {
            Storage::F32 => 4.0,
            Storage::U8 => 1.0,
            Storage::F16 => 2.0,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Storage::F32 => "f32",
            Storage::U8 => "u8",
            Storage::F16 => "f16",
        }
    }
}

/// Atoms encoded as u32 words, `stride` words per atom row (a multiple of 4), plus the u8
/// decode table.
pub(crate) struct EncodedAtoms {
    pub words: Vec<u32>,
    pub stride: usize,
    /// 256 entries; only meaningful for [`Storage::U8`].
    pub table: Vec<f32>,
}

/// Dimensions per atom row on the device: D rounded up to 16, so that every row is a whole
/// number of vec4<u32> words for each storage type (the kernels read atoms as vec4 words).
/// The kernels never add the padded columns into a distance; their sums are dropped.
pub(crate) fn padded_dim(d: usize) -> usize {
    d.next_multiple_of(16)
}

/// Encodes N × D row-major atoms for `storage`, each row padded with zeros to
/// [`padded_dim`] values.
///
/// f32: word = the value's bits, stride D'. f16: two [`f16_stored`] values per word (even
/// column in the low half, as `unpack2x16float` reads it), stride D'/2. u8: the distinct
/// values sorted ascending form the table, code = index into it, four codes per word (little
/// end first), stride D'/4.
pub(crate) fn encode(atoms: &[f32], d: usize, storage: Storage) -> Result<EncodedAtoms> {
    match storage {
        Storage::F32 => {
            let stride = padded_dim(d);
            let mut words = vec![0u32; atoms.len() / d * stride];
            for (row, out) in atoms.chunks(d).zip(words.chunks_mut(stride)) {
                for (w, v) in out.iter_mut().zip(row) {
                    *w = v.to_bits();
                }
            }
            Ok(EncodedAtoms {
                words,
                stride,
                table: vec![0.0; 256],
            })
        }
        Storage::F16 => {
            let stride = padded_dim(d) / 2;
            let n = atoms.len() / d;
            let mut words = vec![0u32; n * stride];
            for (i, row) in atoms.chunks(d).enumerate() {
                for (j, &v) in row.iter().enumerate() {
                    let bits = half::f16::from_f32(f16_stored(v)).to_bits() as u32;
                    words[i * stride + j / 2] |= bits << (16 * (j % 2));
                }
            }
            Ok(EncodedAtoms {
                words,
                stride,
                table: vec![0.0; 256],
            })
        }
        Storage::U8 => {
            let mut distinct: Vec<f32> = atoms.to_vec();
            distinct.sort_by(|a, b| a.total_cmp(b));
            distinct.dedup_by(|a, b| a.to_bits() == b.to_bits());
            if distinct.len() > 256 {
                return Err(Error::input(format!(
                    "u8 atom storage needs at most 256 distinct atom values (an 8-bit source); \
                     these atoms have {} — use f32 storage",
                    distinct.len()
                )));
            }
            let stride = padded_dim(d) / 4;
            let n = atoms.len() / d;
            let mut words = vec![0u32; n * stride];
            for (i, row) in atoms.chunks(d).enumerate() {
                for (j, v) in row.iter().enumerate() {
                    let code = distinct
                        .binary_search_by(|p| p.total_cmp(v))
                        .expect("every value is in the table")
                        as u32;
                    words[i * stride + j / 4] |= code << (8 * (j % 4));
                }
            }
            let mut table = distinct;
            table.resize(256, 0.0);
            Ok(EncodedAtoms {
                words,
                stride,
                table,
            })
        }
    }
}

/// The atoms [start, start + len) that one storage binding holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ChunkRange {
    pub start: usize,
    pub len: usize,
}

/// Splits N atom rows of `row_bytes` each into as few chunks as a binding of at most
/// `max_binding_bytes` allows, of near-equal size.
pub(crate) fn split(n: usize, row_bytes: u64, max_binding_bytes: u64) -> Result<Vec<ChunkRange>> {
    let per = (max_binding_bytes / row_bytes) as usize;
    if per == 0 {
        return Err(Error::input(format!(
            "one atom row takes {row_bytes} bytes but a storage binding may hold only \
             {max_binding_bytes} bytes on this adapter; use u8 storage or smaller images"
        )));
    }
    let count = n.div_ceil(per);
    let len = n.div_ceil(count);
    Ok((0..count)
        .map(|c| ChunkRange {
            start: c * len,
            len: len.min(n - c * len),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn u8_encoding_decodes_bit_for_bit() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let d = 13;
        let atoms: Vec<f32> = (0..5 * d)
            .map(|_| rng.random_range(0..256u32) as f32 / 127.5 - 1.0)
            .collect();
        let enc = encode(&atoms, d, Storage::U8).unwrap();
        assert_eq!(enc.stride, 4);
        for (i, row) in atoms.chunks(d).enumerate() {
            for (j, &v) in row.iter().enumerate() {
                let code = (enc.words[i * enc.stride + j / 4] >> (8 * (j % 4))) & 0xff;
                assert_eq!(enc.table[code as usize].to_bits(), v.to_bits());
            }
        }
        let many: Vec<f32> = (0..300).map(|k| k as f32).collect();
        assert!(encode(&many, 3, Storage::U8).is_err());
    }

    #[test]
    fn f16_encoding_packs_rounded_values() {
        let atoms = [
            1.0f32,
            -0.3,
            1e-6,
            -1e-6,
            0.5 + 1e-4,
            65504.0,
            2.0f32.powi(-14),
        ];
        let d = atoms.len();
        let enc = encode(&atoms, d, Storage::F16).unwrap();
        assert_eq!(enc.stride, 8);
        let stored = stored_values(&atoms, Storage::F16);
        for (j, &v) in stored.iter().enumerate() {
            let bits = (enc.words[j / 2] >> (16 * (j % 2))) & 0xffff;
            assert_eq!(
                half::f16::from_bits(bits as u16).to_f32().to_bits(),
                v.to_bits()
            );
            // Nearest f16: within half an f16 ulp (2⁻¹¹ relative), or a flushed subnormal.
            let a = atoms[j];
            assert!((v - a).abs() <= a.abs() * 2f32.powi(-11) || a.abs() < 2f32.powi(-14));
        }
        assert_eq!(stored[2], 0.0);
        assert_eq!(stored[3].to_bits(), (-0.0f32).to_bits());
        assert_eq!(stored[6], 2.0f32.powi(-14));
        assert_eq!(stored[4], 0.5);
    }

    #[test]
    fn split_covers_all_atoms_within_the_limit() {
        for (n, row, max) in [
            (10, 8, 80),
            (10, 8, 79),
            (60000, 3136, 128 << 20),
            (1, 4, 4),
        ] {
            let chunks = split(n, row, max).unwrap();
            assert_eq!(chunks.iter().map(|c| c.len).sum::<usize>(), n);
            for w in chunks.windows(2) {
                assert_eq!(w[0].start + w[0].len, w[1].start);
            }
            assert!(
                chunks
                    .iter()
                    .all(|c| c.len as u64 * row <= max && c.len > 0)
            );
        }
        assert_eq!(split(60000, 3136, 128 << 20).unwrap().len(), 2);
        assert!(split(3, 8, 7).is_err());
    }
}
