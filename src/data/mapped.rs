//! Atom sets larger than RAM: a data-cache entry ([`super::cache`], same file format) written
//! streaming, row block by row block, and memory-mapped read-only, so that neither writing
//! nor using it ever holds the N × D float32 images.
//!
//! The payload is the entry's: u8 intensities k (pixel 2k/255 − 1, [`super::pixel_from_u8`])
//! for an 8-bit set, 1 byte a value; else float32 little-endian, 4 bytes a value (read with
//! `from_le_bytes`, since the JSON header leaves the payload unaligned). The engine decodes
//! one chunk at a time from the map (`engine::cpu` store `Mapped`), exactly as it decodes its
//! in-memory u8 store, so results are bit for bit those of the in-memory store of the same
//! values.
//!
//! **Checks before use.** [`MappedAtoms::open`] reads the prefix and the header with ordinary
//! reads, compares the file's length with the length the header promises *before* mapping
//! (a map of a truncated file would end in SIGBUS at the first page past the end), then
//! streams the SHA-256 over the mapped body in blocks. So opening costs one sequential read
//! of the file (≈ 10 s for 16 GB from the page cache); a damaged entry is an error naming the
//! file and the fix (delete it; it is written again from its source). The map is advised
//! `MADV_SEQUENTIAL`: the passes read it front to back, each task its own range.
//!
//! A file truncated by another process *while* mapped would still fault; entries are only
//! ever replaced by rename, which leaves the mapped file intact.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::ImageShape;
use super::cache::{Header, MAGIC, PREFIX};
use crate::{Error, Result};

/// How the payload stores a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// One byte, the 8-bit intensity k; value = 2k/255 − 1.
    U8,
    /// Four bytes, float32 little-endian.
    F32,
}

impl Encoding {
    pub fn bytes_per_value(self) -> usize {
        match self {
            Encoding::U8 => 1,
            Encoding::F32 => 4,
        }
    }
}

/// Bytes hashed per step when verifying (the page cache streams them; nothing is copied).
const HASH_BLOCK: usize = 64 << 20;

/// A verified data-cache entry, mapped read-only: N rows of D values.
pub struct MappedAtoms {
    path: PathBuf,
    map: memmap2::Mmap,
    /// Offset of the first payload byte.
    offset: usize,
    rows: usize,
    shape: ImageShape,
    encoding: Encoding,
    eight_bit: bool,
    source: String,
    table: Box<[f32; 256]>,
}

impl std::fmt::Debug for MappedAtoms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedAtoms")
            .field("path", &self.path)
            .field("rows", &self.rows)
            .field("shape", &self.shape)
            .field("encoding", &self.encoding)
            .finish()
    }
}

/// The error for a damaged entry: names the file and the fix.
fn damaged(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::data(
        path,
        format!(
            "this atom cache entry cannot be used: {why}; delete the file and run again (it is \
             written again from its source)"
        ),
    )
}

impl MappedAtoms {
    /// Verifies and maps the dataset entry `path`; with `key`, the header must name it.
    pub fn open(path: &Path, key: Option<&str>) -> Result<MappedAtoms> {
        let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len() as usize;
        if len < PREFIX {
            return Err(damaged(
                path,
                format!("{len} bytes, shorter than the {PREFIX}-byte prefix (truncated)"),
            ));
        }
        let mut prefix = [0u8; PREFIX];
        file.read_exact(&mut prefix)
            .map_err(|e| Error::io(path, e))?;
        if &prefix[..8] != MAGIC {
            return Err(damaged(path, "not an fslens cache entry (bad magic)"));
        }
        let h_len = u64::from_le_bytes(prefix[40..48].try_into().expect("8 bytes")) as usize;
        if h_len > len - PREFIX {
            return Err(damaged(
                path,
                format!("a {h_len}-byte header in a {len}-byte file (truncated)"),
            ));
        }
        let mut text = vec![0u8; h_len];
        file.read_exact(&mut text).map_err(|e| Error::io(path, e))?;
        let h: Header =
            serde_json::from_slice(&text).map_err(|e| damaged(path, format!("bad header: {e}")))?;
        if h.kind != "dataset" || key.is_some_and(|k| k != h.key) {
            return Err(damaged(
                path,
                format!("its header names {}-{}, not this entry", h.kind, h.key),
            ));
        }
        let shape = h
            .shape
            .filter(|s| s.dim() == h.cols && h.cols > 0 && h.rows > 0)
            .ok_or_else(|| damaged(path, "no image shape of its row length, or no rows"))?;
        let encoding = if h.as_u8 { Encoding::U8 } else { Encoding::F32 };
        let payload = h.rows as u128 * h.cols as u128 * encoding.bytes_per_value() as u128
            + if h.labels { 4 * h.rows as u128 } else { 0 };
        let expected = (PREFIX + h_len) as u128 + payload;
        if expected != len as u128 {
            return Err(damaged(
                path,
                format!(
                    "{len} bytes, but its header promises {expected} ({} × {} values{}): \
                     truncated or overwritten",
                    h.rows,
                    h.cols,
                    if h.labels { " and labels" } else { "" }
                ),
            ));
        }
        // SAFETY: the length was checked above; entries are replaced by rename, never
        // truncated in place, so the mapped file keeps this length.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        #[cfg(unix)]
        let _ = map.advise(memmap2::Advice::Sequential);
        let mut sha = Sha256::new();
        for block in map[40..].chunks(HASH_BLOCK) {
            sha.update(block);
        }
        if sha.finalize()[..] != map[8..40] {
            return Err(damaged(path, "checksum mismatch (the file is damaged)"));
        }
        Ok(MappedAtoms {
            path: path.to_path_buf(),
            map,
            offset: PREFIX + h_len,
            rows: h.rows,
            shape,
            encoding,
            eight_bit: h.eight_bit,
            source: h.source,
            table: Box::new(super::u8_pixel_table()),
        })
    }

    /// N.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// D.
    pub fn dim(&self) -> usize {
        self.shape.dim()
    }
    pub fn shape(&self) -> ImageShape {
        self.shape
    }
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }
    /// Whether every value is an 8-bit pixel 2k/255 − 1.
    pub fn eight_bit(&self) -> bool {
        self.eight_bit
    }
    pub fn source(&self) -> &str {
        &self.source
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Bytes of the mapped values (N·D·{1, 4}).
    pub fn payload_bytes(&self) -> usize {
        self.rows * self.dim() * self.encoding.bytes_per_value()
    }

    /// Decodes the values [v0, v0 + out.len()) (row-major) into `out`. Panics past N·D.
    pub fn decode(&self, v0: usize, out: &mut [f32]) {
        let len = out.len();
        assert!(v0 + len <= self.rows * self.dim(), "values past the atoms");
        match self.encoding {
            Encoding::U8 => {
                let codes = &self.map[self.offset + v0..self.offset + v0 + len];
                for (o, &k) in out.iter_mut().zip(codes) {
                    *o = self.table[k as usize];
                }
            }
            Encoding::F32 => {
                let bytes = &self.map[self.offset + 4 * v0..self.offset + 4 * (v0 + len)];
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
        }
    }

    /// Rows [r0, r1) as float32 (a block for callers that need pixel values: biases, draws).
    pub fn rows_f32(&self, r0: usize, r1: usize) -> Vec<f32> {
        let d = self.dim();
        let mut out = vec![0.0; (r1 - r0) * d];
        self.decode(r0 * d, &mut out);
        out
    }

    /// Row i as float32.
    pub fn row(&self, i: usize) -> Vec<f32> {
        self.rows_f32(i, i + 1)
    }
}

/// Writes a dataset entry row block by row block (the file format of [`super::cache`], no
/// labels), through a temporary sibling and a rename: the checksum, which leads the file, is
/// hashed as the rows stream and written last. Dropped unfinished, the temporary file goes.
pub struct EntryWriter {
    path: PathBuf,
    tmp: PathBuf,
    file: Option<std::io::BufWriter<std::fs::File>>,
    sha: Sha256,
    encoding: Encoding,
    /// Values still to come.
    left: usize,
}

impl EntryWriter {
    /// Starts the entry `path` of `rows` rows of `shape`, keyed `key`, in `encoding` (U8: the
    /// values are 8-bit intensities).
    pub fn create(
        path: &Path,
        key: &str,
        shape: ImageShape,
        rows: usize,
        source: &str,
        encoding: Encoding,
    ) -> Result<EntryWriter> {
        let header = Header {
            kind: "dataset".into(),
            key: key.into(),
            rows,
            cols: shape.dim(),
            shape: Some(shape),
            source: source.into(),
            labels: false,
            class_names: None,
            eight_bit: encoding == Encoding::U8,
            as_u8: encoding == Encoding::U8,
        };
        let h = serde_json::to_vec(&header).expect("cache headers serialise");
        let tmp = crate::output::file::temporary_name(path);
        crate::output::live::register(&tmp);
        let mut w = EntryWriter {
            path: path.to_path_buf(),
            tmp: tmp.clone(),
            file: None,
            sha: Sha256::new(),
            encoding,
            left: rows * shape.dim(),
        };
        let file = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        w.file = Some(std::io::BufWriter::with_capacity(1 << 20, file));
        let mut head = Vec::with_capacity(PREFIX + h.len());
        head.extend(MAGIC);
        head.extend([0u8; 32]);
        head.extend((h.len() as u64).to_le_bytes());
        head.extend(&h);
        w.sha.update(&head[40..]);
        w.write(&head)?;
        Ok(w)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let file = self.file.as_mut().expect("open until finished");
        file.write_all(bytes).map_err(|e| Error::io(&self.tmp, e))
    }

    fn take(&mut self, values: usize, encoding: Encoding) -> Result<()> {
        if encoding != self.encoding || values > self.left {
            return Err(Error::input(format!(
                "cache entry {}: {values} {encoding:?} values pushed, {} {:?} values left",
                self.path.display(),
                self.left,
                self.encoding
            )));
        }
        self.left -= values;
        Ok(())
    }

    /// Appends 8-bit intensities (a U8 entry).
    pub fn push_u8(&mut self, codes: &[u8]) -> Result<()> {
        self.take(codes.len(), Encoding::U8)?;
        self.sha.update(codes);
        self.write(codes)
    }

    /// Appends float32 values (an F32 entry).
    pub fn push_f32(&mut self, values: &[f32]) -> Result<()> {
        self.take(values.len(), Encoding::F32)?;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.sha.update(&bytes);
        self.write(&bytes)
    }

    /// Writes the checksum, syncs and renames the entry into place.
    pub fn finish(mut self) -> Result<()> {
        if self.left != 0 {
            return Err(Error::input(format!(
                "cache entry {}: {} values were never pushed",
                self.path.display(),
                self.left
            )));
        }
        let digest = std::mem::take(&mut self.sha).finalize();
        let tmp = self.tmp.clone();
        let io = |e| Error::io(&tmp, e);
        let file = self.file.take().expect("open until finished");
        let mut file = file.into_inner().map_err(|e| io(e.into_error()))?;
        file.seek(SeekFrom::Start(8)).map_err(io)?;
        file.write_all(&digest).map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&self.tmp, &self.path).map_err(|e| Error::io(&self.path, e))?;
        crate::output::live::forget(&self.tmp);
        self.tmp = PathBuf::new();
        Ok(())
    }
}

impl Drop for EntryWriter {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            self.file = None;
            let _ = std::fs::remove_file(&self.tmp);
            crate::output::live::forget(&self.tmp);
        }
    }
}

/// The cache folder used when none is given: `$XDG_CACHE_HOME/fslens`, else
/// `~/.cache/fslens` (a disk, not the temporary folder, which may be memory), else
/// `./fslens-cache`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("fslens");
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(h) => PathBuf::from(h).join(".cache").join("fslens"),
        None => PathBuf::from("fslens-cache"),
    }
}

/// The entry `dir/dataset-<key>.bin`, mapped: opened when it is there and valid, else written
/// by `fill` (given the writer) and then opened. A damaged entry is not silently rewritten:
/// its error names the file (the caller may delete it and retry).
pub fn open_or_write(
    dir: &Path,
    key: &str,
    fill: impl FnOnce(&Path) -> Result<()>,
) -> Result<MappedAtoms> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let path = dir.join(format!("dataset-{key}.bin"));
    if !path.exists() {
        fill(&path)?;
    }
    MappedAtoms::open(&path, Some(key))
}

/// The cache key of a source file: its canonical path, size and modification time (a
/// changed file gets a new entry) and `what` (how it is read).
pub fn file_key(path: &Path, what: &str) -> Result<String> {
    let canonical = std::fs::canonicalize(path).map_err(|e| Error::io(path, e))?;
    let meta = std::fs::metadata(&canonical).map_err(|e| Error::io(path, e))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |t| t.as_nanos());
    Ok(super::cache::key_of(&format!(
        "{what}: {} ({} bytes, modified {mtime})",
        canonical.display(),
        meta.len()
    )))
}

/// Writes the (N, D) array of the .npy file `npy` as the entry `path` (key `key`), streaming
/// (one row block in memory): uint8 as u8 intensities, float32 and float64 as float32 (the
/// values `fslens score` reads in memory). `flag` names the input in errors.
pub fn write_npy_entry(npy: &Path, path: &Path, key: &str, flag: &str) -> Result<()> {
    let file = std::fs::File::open(npy).map_err(|e| Error::io(npy, e))?;
    let reader = npyz::NpyFile::new(std::io::BufReader::with_capacity(1 << 20, file))
        .map_err(|e| Error::data(npy, format!("{flag}: not a readable .npy file ({e})")))?;
    let shape: Vec<usize> = reader.shape().iter().map(|&s| s as usize).collect();
    let (n, d) = match shape.as_slice() {
        [r, d] if *r > 0 && *d > 0 => (*r, *d),
        s => {
            return Err(Error::data(
                npy,
                format!("{flag} must be a non-empty array of shape (rows, D); got {s:?}"),
            ));
        }
    };
    if reader.order() == npyz::Order::Fortran {
        return Err(Error::data(
            npy,
            format!(
                "{flag} is in Fortran order; save it with numpy.save(path, \
                 numpy.ascontiguousarray(a))"
            ),
        ));
    }
    let descr = reader.dtype().descr().trim_matches('\'').to_string();
    let encoding = if descr.ends_with("u1") {
        Encoding::U8
    } else {
        Encoding::F32
    };
    let source = npy.display().to_string();
    let mut w = EntryWriter::create(path, key, ImageShape::new(1, d, 1), n, &source, encoding)?;
    let bad = |e: std::io::Error| Error::data(npy, format!("{flag}: unreadable data ({e})"));
    let block = 4096 * d;
    match descr.as_str() {
        "|u1" => {
            let mut buf = Vec::with_capacity(block);
            for v in reader
                .data::<u8>()
                .map_err(|e| Error::data(npy, e.to_string()))?
            {
                buf.push(v.map_err(bad)?);
                if buf.len() == block {
                    w.push_u8(&buf)?;
                    buf.clear();
                }
            }
            w.push_u8(&buf)?;
        }
        "<f4" | "<f8" | ">f4" | ">f8" => {
            let mut buf = Vec::with_capacity(block);
            let mut push = |v: f32, w: &mut EntryWriter| -> Result<()> {
                buf.push(v);
                if buf.len() == block {
                    w.push_f32(&buf)?;
                    buf.clear();
                }
                Ok(())
            };
            if descr.ends_with("f4") {
                for v in reader
                    .data::<f32>()
                    .map_err(|e| Error::data(npy, e.to_string()))?
                {
                    push(v.map_err(bad)?, &mut w)?;
                }
            } else {
                for v in reader
                    .data::<f64>()
                    .map_err(|e| Error::data(npy, e.to_string()))?
                {
                    push(v.map_err(bad)? as f32, &mut w)?;
                }
            }
            w.push_f32(&buf)?;
        }
        other => {
            return Err(Error::data(
                npy,
                format!(
                    "{flag}: a mapped atom store reads uint8, float32 or float64 arrays, not \
                     {other:?}; convert it with numpy (a.astype(numpy.float32))"
                ),
            ));
        }
    }
    // A payload shorter than the header promised ends the iterator early: `finish` says so.
    w.finish()
        .map_err(|e| Error::data(npy, format!("{flag}: {e} (the file is truncated?)")))
}
