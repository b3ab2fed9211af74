//! An on-disk cache of loaded (preprocessed) atom sets and of measured atoms, so that a sweep
//! loads and measures each set once however many jobs share it.
//!
//! Entries are keyed by a SHA-256 of what determines them (the caller builds the key text: the
//! data config with absolute paths and file fingerprints for a data set; the data key, the atom
//! selection and the operator for measured atoms). One entry is one file
//! `<kind>-<key>.bin`, written atomically:
//!
//! ```text
//! "FSLCACH1" | SHA-256 of everything after these 40 bytes | u64 LE header length H |
//! header (JSON, H bytes) | payload (f32 LE values, then u32 LE labels if any)
//! ```
//!
//! A read verifies the magic, the lengths, the checksum and that the header names the same
//! key; anything else is a corrupt entry: it is reported, rebuilt and rewritten, never used.
//! Values round-trip bit for bit, so a run from the cache equals a run without it: an 8-bit
//! data set is stored as its intensities k (pixels 2k/255 − 1, [`super::pixel_from_u8`]), 4×
//! smaller, only after checking that every pixel decodes back to the same bits; anything else
//! as float32.
//!
//! The last data set and the last matrix looked up are also kept in memory, so the jobs of
//! one sweep process that share them skip even the disk (a 60000-image Fashion-MNIST entry is
//! 47 MB as u8, and reading plus checksumming it costs a few tenths of a second).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Dataset, ImageShape, pixel_from_u8, pixel_to_u8};
use crate::{Error, Result};

pub(super) const MAGIC: &[u8; 8] = b"FSLCACH1";
pub(super) const PREFIX: usize = 8 + 32 + 8;

/// What a lookup found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// A valid entry was used.
    Hit,
    /// No entry: built and stored.
    Miss,
    /// An entry was there but unusable (the reason); rebuilt and replaced.
    Rebuilt(String),
    /// Built, but the entry could not be written (the reason: a full disk, a read-only or
    /// vanished folder). The values are used as built and this handle neither reads nor
    /// stores any more: the run goes on as without a cache, and says so once.
    NotStored(String),
}

/// The cache folder, and the last entries used.
#[derive(Debug)]
pub struct AtomCache {
    dir: PathBuf,
    last_dataset: Mutex<Option<(String, Dataset)>>,
    last_matrix: Mutex<Option<(String, Vec<f32>)>>,
    /// Set by the first failed write: from then on the cache is not used (nor warned about
    /// again).
    writes_failed: std::sync::atomic::AtomicBool,
}

#[derive(Serialize, Deserialize)]
pub(super) struct Header {
    pub(super) kind: String,
    pub(super) key: String,
    /// Rows and values per row of the f32 payload.
    pub(super) rows: usize,
    pub(super) cols: usize,
    #[serde(default)]
    pub(super) shape: Option<ImageShape>,
    #[serde(default)]
    pub(super) source: String,
    #[serde(default)]
    pub(super) labels: bool,
    #[serde(default)]
    pub(super) class_names: Option<Vec<String>>,
    #[serde(default)]
    pub(super) eight_bit: bool,
    /// Pixels stored as u8 intensities rather than f32.
    #[serde(default)]
    pub(super) as_u8: bool,
}

/// hex(SHA-256(text)).
pub fn key_of(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl AtomCache {
    /// Opens (creating) the cache folder `dir`.
    pub fn open(dir: &Path) -> Result<AtomCache> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        Ok(AtomCache {
            dir: dir.to_path_buf(),
            last_dataset: Mutex::new(None),
            last_matrix: Mutex::new(None),
            writes_failed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of entry (`kind`, `key`).
    pub fn entry_path(&self, kind: &str, key: &str) -> PathBuf {
        self.dir.join(format!("{kind}-{key}.bin"))
    }

    /// The data set stored under `key`, or `build()` stored there.
    pub fn dataset(
        &self,
        key: &str,
        build: impl FnOnce() -> Result<Dataset>,
    ) -> Result<(Dataset, Lookup)> {
        let path = self.entry_path("dataset", key);
        if let Some((k, ds)) = &*self.last_dataset.lock().expect("cache memo")
            && k == key
        {
            return Ok((ds.clone(), Lookup::Hit));
        }
        if self.off() {
            return Ok((build()?, Lookup::Miss));
        }
        let found = match read_entry(&path, "dataset", key) {
            Ok(Some((header, payload))) => match decode_dataset(header, &payload) {
                Ok(ds) => {
                    *self.last_dataset.lock().expect("cache memo") = Some((key.into(), ds.clone()));
                    return Ok((ds, Lookup::Hit));
                }
                Err(why) => Some(why),
            },
            Ok(None) => None,
            Err(why) => Some(why),
        };
        let ds = build()?;
        let d = ds.dim();
        let as_u8 = ds.eight_bit
            && ds
                .images
                .iter()
                .all(|&x| pixel_from_u8(pixel_to_u8(x)).to_bits() == x.to_bits());
        let mut payload = Vec::with_capacity(if as_u8 { 1 } else { 4 } * ds.images.len());
        if as_u8 {
            payload.extend(ds.images.iter().map(|&x| pixel_to_u8(x)));
        } else {
            payload.extend(ds.images.iter().flat_map(|v| v.to_le_bytes()));
        }
        if let Some(labels) = &ds.labels {
            payload.extend(labels.iter().flat_map(|v| v.to_le_bytes()));
        }
        let header = Header {
            kind: "dataset".into(),
            key: key.into(),
            rows: ds.len(),
            cols: d,
            shape: Some(ds.shape),
            source: ds.source.clone(),
            labels: ds.labels.is_some(),
            class_names: ds.class_names.clone(),
            eight_bit: ds.eight_bit,
            as_u8,
        };
        let stored = self.store(&path, &header, &payload);
        *self.last_dataset.lock().expect("cache memo") = Some((key.into(), ds.clone()));
        Ok((
            ds,
            stored.unwrap_or(found.map_or(Lookup::Miss, Lookup::Rebuilt)),
        ))
    }

    /// The rows × cols float32 matrix stored under (`kind`, `key`), or `build()` stored there.
    pub fn matrix(
        &self,
        kind: &str,
        key: &str,
        rows: usize,
        cols: usize,
        build: impl FnOnce() -> Result<Vec<f32>>,
    ) -> Result<(Vec<f32>, Lookup)> {
        let path = self.entry_path(kind, key);
        let memo_key = format!("{kind}-{key}-{rows}x{cols}");
        if let Some((k, values)) = &*self.last_matrix.lock().expect("cache memo")
            && *k == memo_key
        {
            return Ok((values.clone(), Lookup::Hit));
        }
        if self.off() {
            return Ok((build()?, Lookup::Miss));
        }
        let found = match read_entry(&path, kind, key) {
            Ok(Some((h, payload))) if h.rows == rows && h.cols == cols => {
                if payload.len() == 4 * rows * cols {
                    let values = f32s(&payload);
                    *self.last_matrix.lock().expect("cache memo") =
                        Some((memo_key, values.clone()));
                    return Ok((values, Lookup::Hit));
                }
                Some(format!(
                    "payload of {} bytes, expected {}",
                    payload.len(),
                    4 * rows * cols
                ))
            }
            Ok(Some((h, _))) => Some(format!(
                "holds {} x {}, expected {rows} x {cols}",
                h.rows, h.cols
            )),
            Ok(None) => None,
            Err(why) => Some(why),
        };
        let values = build()?;
        assert_eq!(
            values.len(),
            rows * cols,
            "cache build returned the wrong size"
        );
        let payload: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let header = Header {
            kind: kind.into(),
            key: key.into(),
            rows,
            cols,
            shape: None,
            source: String::new(),
            labels: false,
            class_names: None,
            eight_bit: false,
            as_u8: false,
        };
        let stored = self.store(&path, &header, &payload);
        *self.last_matrix.lock().expect("cache memo") = Some((memo_key, values.clone()));
        Ok((
            values,
            stored.unwrap_or(found.map_or(Lookup::Miss, Lookup::Rebuilt)),
        ))
    }

    /// Whether a write failed: the cache is then out of use for this handle (neither read nor
    /// written; the folder may be gone or unwritable, and each job would warn again).
    fn off(&self) -> bool {
        self.writes_failed
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Writes an entry unless an earlier write failed; `Some(NotStored)` on the first failure
    /// (a cache is an optimisation: failing to fill it must not fail the run).
    fn store(&self, path: &Path, header: &Header, payload: &[u8]) -> Option<Lookup> {
        use std::sync::atomic::Ordering;
        if self.writes_failed.load(Ordering::Relaxed) {
            return None;
        }
        match write_entry(path, header, payload) {
            Ok(()) => None,
            Err(e) => {
                self.writes_failed.store(true, Ordering::Relaxed);
                Some(Lookup::NotStored(e.to_string()))
            }
        }
    }
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn decode_dataset(h: Header, payload: &[u8]) -> std::result::Result<Dataset, String> {
    let shape = h.shape.ok_or("a dataset entry without a shape")?;
    if shape.dim() != h.cols {
        return Err(format!("shape {shape:?} does not have {} values", h.cols));
    }
    let values = h.rows * h.cols;
    let pixel_bytes = if h.as_u8 { values } else { 4 * values };
    let expected = pixel_bytes + if h.labels { 4 * h.rows } else { 0 };
    if payload.len() != expected {
        return Err(format!(
            "payload of {} bytes, expected {expected}",
            payload.len()
        ));
    }
    let images = if h.as_u8 {
        let table = super::u8_pixel_table();
        payload[..values]
            .iter()
            .map(|&k| table[k as usize])
            .collect()
    } else {
        f32s(&payload[..values * 4])
    };
    let labels = h.labels.then(|| {
        payload[pixel_bytes..]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    });
    Ok(Dataset {
        source: h.source,
        shape,
        images,
        labels,
        class_names: h.class_names,
        eight_bit: h.eight_bit,
    })
}

/// Ok(None) when there is no entry; Err(why) when there is one that must not be used.
fn read_entry(
    path: &Path,
    kind: &str,
    key: &str,
) -> std::result::Result<Option<(Header, Vec<u8>)>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("unreadable: {e}")),
    };
    if bytes.len() < PREFIX || &bytes[..8] != MAGIC {
        return Err("not a cache entry (bad magic or truncated)".into());
    }
    if Sha256::digest(&bytes[40..])[..] != bytes[8..40] {
        return Err("checksum mismatch (the file is damaged or truncated)".into());
    }
    let h_len = u64::from_le_bytes(bytes[40..48].try_into().expect("8 bytes")) as usize;
    if PREFIX + h_len > bytes.len() {
        return Err("header length beyond the end of the file".into());
    }
    let header: Header = serde_json::from_slice(&bytes[PREFIX..PREFIX + h_len])
        .map_err(|e| format!("bad header: {e}"))?;
    if header.kind != kind || header.key != key {
        return Err(format!(
            "header names {}-{}, not this entry",
            header.kind, header.key
        ));
    }
    Ok(Some((header, bytes[PREFIX + h_len..].to_vec())))
}

fn write_entry(path: &Path, header: &Header, payload: &[u8]) -> Result<()> {
    let h = serde_json::to_vec(header).expect("cache headers serialise");
    let mut body = Vec::with_capacity(8 + h.len() + payload.len());
    body.extend((h.len() as u64).to_le_bytes());
    body.extend(&h);
    body.extend(payload);
    let mut file = Vec::with_capacity(40 + body.len());
    file.extend(MAGIC);
    file.extend(Sha256::digest(&body));
    file.extend(body);
    crate::output::write_atomic(path, &file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic::{Family, generate};

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fslens-cache-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn datasets_round_trip_and_corruption_is_rebuilt() {
        let dir = scratch("ds");
        // A fresh handle reads the disk; one handle answers repeats from memory.
        let fresh = || AtomCache::open(&dir).unwrap();
        let ds = generate(Family::Glyphs, 40, 16, 1, 5).unwrap();
        let key = key_of("glyphs 40");
        let (first, how) = fresh().dataset(&key, || Ok(ds.clone())).unwrap();
        assert_eq!(how, Lookup::Miss);
        assert_eq!(first.images, ds.images);
        let (again, how) = fresh()
            .dataset(&key, || panic!("a valid entry is not rebuilt"))
            .unwrap();
        assert_eq!(how, Lookup::Hit);
        // Bit for bit, labels and names included.
        assert_eq!(bits(&again.images), bits(&ds.images));
        assert_eq!(again.labels, ds.labels);
        assert_eq!(again.class_names, ds.class_names);
        assert_eq!(again.shape, ds.shape);
        assert_eq!(again.source, ds.source);
        assert_eq!(again.eight_bit, ds.eight_bit);

        // Flip one payload bit: the checksum catches it, the entry is rebuilt and replaced.
        let path = fresh().entry_path("dataset", &key);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 7;
        bytes[last] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        let mut built = false;
        let (fixed, how) = fresh()
            .dataset(&key, || {
                built = true;
                Ok(ds.clone())
            })
            .unwrap();
        assert!(built);
        assert!(
            matches!(&how, Lookup::Rebuilt(why) if why.contains("checksum")),
            "{how:?}"
        );
        assert_eq!(bits(&fixed.images), bits(&ds.images));
        assert_eq!(
            fresh().dataset(&key, || unreachable!()).unwrap().1,
            Lookup::Hit
        );

        // A truncated file and a file of another key are not used either.
        std::fs::write(&path, &std::fs::read(&path).unwrap()[..30]).unwrap();
        let (_, how) = fresh().dataset(&key, || Ok(ds.clone())).unwrap();
        assert!(matches!(how, Lookup::Rebuilt(_)), "{how:?}");
        let other = key_of("other");
        std::fs::copy(&path, fresh().entry_path("dataset", &other)).unwrap();
        let (_, how) = fresh().dataset(&other, || Ok(ds.clone())).unwrap();
        assert!(
            matches!(&how, Lookup::Rebuilt(why) if why.contains("not this entry")),
            "{how:?}"
        );

        // One handle remembers the last set: a repeat needs no disk.
        let cache = fresh();
        cache.dataset(&key, || Ok(ds.clone())).unwrap();
        std::fs::remove_file(&path).unwrap();
        let (mem, how) = cache.dataset(&key, || unreachable!()).unwrap();
        assert_eq!(how, Lookup::Hit);
        assert_eq!(bits(&mem.images), bits(&ds.images));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_write_falls_back_to_no_cache() {
        let dir = scratch("nowrite");
        let cache = AtomCache::open(&dir).unwrap();
        // The folder replaced by a file: every write fails, for root too.
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::write(&dir, b"not a folder").unwrap();
        let ds = generate(Family::Shapes, 10, 16, 1, 2).unwrap();
        let (got, how) = cache.dataset("k", || Ok(ds.clone())).unwrap();
        assert!(
            matches!(&how, Lookup::NotStored(why) if !why.is_empty()),
            "{how:?}"
        );
        assert_eq!(bits(&got.images), bits(&ds.images));
        // Said once: later builds go on quietly, the values as built.
        let values = vec![1.5f32, -2.0];
        let (m, how) = cache
            .matrix("measured", "m", 1, 2, || Ok(values.clone()))
            .unwrap();
        assert_eq!(how, Lookup::Miss);
        assert_eq!(m, values);
        std::fs::remove_file(&dir).unwrap();
    }

    #[test]
    fn eight_bit_sets_are_stored_as_u8_only_when_exact() {
        let dir = scratch("u8");
        let fresh = || AtomCache::open(&dir).unwrap();
        let table = crate::data::u8_pixel_table();
        let (n, d) = (30, 16 * 16);
        let images: Vec<f32> = (0..n * d).map(|i| table[(i * 37 + i / 7) % 256]).collect();
        let mut ds = Dataset {
            source: "test".into(),
            shape: ImageShape::new(16, 16, 1),
            images,
            labels: Some((0..n as u32).map(|i| i % 3).collect()),
            class_names: None,
            eight_bit: true,
        };
        let (_, how) = fresh().dataset("a", || Ok(ds.clone())).unwrap();
        assert_eq!(how, Lookup::Miss);
        let size = std::fs::metadata(fresh().entry_path("dataset", "a"))
            .unwrap()
            .len() as usize;
        // u8 pixels + u32 labels + a header of a few hundred bytes.
        assert!(size < n * d + 4 * n + 1024, "{size}");
        let (back, _) = fresh().dataset("a", || unreachable!()).unwrap();
        assert_eq!(bits(&back.images), bits(&ds.images));
        assert_eq!(back.labels, ds.labels);

        // One pixel that is not 2k/255 − 1 (a flag set wrongly): stored as f32, still exact.
        ds.images[5] += 1e-4;
        let (_, how) = fresh().dataset("b", || Ok(ds.clone())).unwrap();
        assert_eq!(how, Lookup::Miss);
        let size = std::fs::metadata(fresh().entry_path("dataset", "b"))
            .unwrap()
            .len() as usize;
        assert!(size > 4 * n * d, "{size}");
        let (back, _) = fresh().dataset("b", || unreachable!()).unwrap();
        assert_eq!(bits(&back.images), bits(&ds.images));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn matrices_round_trip_and_check_their_size() {
        let dir = scratch("m");
        let cache = AtomCache::open(&dir).unwrap();
        let values: Vec<f32> = (0..12).map(|i| (i as f32 * 0.37).sin()).collect();
        let (_, how) = cache
            .matrix("measured", "k", 3, 4, || Ok(values.clone()))
            .unwrap();
        assert_eq!(how, Lookup::Miss);
        let (back, how) = AtomCache::open(&dir)
            .unwrap()
            .matrix("measured", "k", 3, 4, || unreachable!())
            .unwrap();
        assert_eq!(how, Lookup::Hit);
        assert_eq!(bits(&back), bits(&values));
        // From memory, without the file.
        std::fs::remove_file(cache.entry_path("measured", "k")).unwrap();
        let (back, how) = cache
            .matrix("measured", "k", 3, 4, || unreachable!())
            .unwrap();
        assert_eq!(how, Lookup::Hit);
        assert_eq!(bits(&back), bits(&values));
        cache
            .matrix("measured", "k", 3, 4, || unreachable!())
            .unwrap();
        let cache = AtomCache::open(&dir).unwrap();
        cache
            .matrix("measured", "k", 3, 4, || Ok(values.clone()))
            .unwrap();
        let (_, how) = cache
            .matrix("measured", "k", 4, 3, || Ok(values.clone()))
            .unwrap();
        assert!(
            matches!(&how, Lookup::Rebuilt(why) if why.contains("3 x 4")),
            "{how:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
