//! Downsampled ImageNet (Chrabaszcz, Loshchilov & Hutter 2017, "A downsampled variant of
//! ImageNet as an alternative to the CIFAR datasets"): the `.npz` batches
//! `train_data_batch_1.npz` … `train_data_batch_10.npz` and `val_data.npz`.
//!
//! Each `.npz` is a zip archive (members stored or deflated) of `.npy` arrays:
//! - `data.npy`: uint8, shape (N, 3·S²), S = 32 for ImageNet32x32, 64 for ImageNet64x64 (any
//!   S is taken). Each row is channel-planar: all S×S red values, then green, then blue, each
//!   plane row-major. fslens stores HWC, so pixel (r, c) channel k of a row is its byte
//!   k·S² + r·S + c, and its value is 2·byte/255 − 1 ([`super::pixel_from_u8`]).
//! - `labels.npy`: N integers, the 1-based class ids 1..=1000. fslens labels are 0-based
//!   (label = id − 1) and the class name of label l is the file's id, l + 1 as text (the line
//!   number of the set's `map_clsloc.txt`, which the batches do not carry).
//! - `mean.npy` (training batches only): not read.
//!
//! Only the members needed are read, and only the rows kept: `data.subset` is applied while
//! reading (the rows drawn are those [`super::preprocess`] would draw from the whole set, so
//! the result is the same), a batch with no kept row is never inflated past its header, and a
//! batch is read no further than its last kept row. Every header is read and checked (dtype,
//! shape, member size, one S for all batches) before the images are allocated, and the
//! images' size is checked against the machine's memory. Batches are read in parallel
//! (rayon), each into its own rows of the output, so the result does not depend on the
//! thread count.

use std::io::Read;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::preprocess::random_indices;
use super::{Dataset, ImageShape, u8_pixel_table};
use crate::{Error, Result};

/// The number of ImageNet classes: labels run 1..=CLASSES in the files.
pub const CLASSES: usize = 1000;

/// Which batches of a folder (`data.split`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Split {
    /// `train_data_batch_<k>.npz`, k = 1, 2, … (as many as lie there, without gaps).
    #[default]
    Train,
    /// `val_data.npz`.
    Val,
}

impl Split {
    /// Parses "train" or "val"; anything else is a config error on `data.split`.
    pub fn parse(s: Option<&str>) -> Result<Split> {
        match s.map(str::trim) {
            None | Some("train") => Ok(Split::Train),
            Some("val") => Ok(Split::Val),
            Some(other) => Err(Error::config(
                "data.split",
                format!(
                    "\"{other}\" is not a split of downsampled ImageNet; use \"train\" (train_data_batch_*.npz) or \"val\" (val_data.npz)"
                ),
            )),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
        }
    }
}

/// Which rows of the whole set (all batches in order) to keep: `data.subset` applied while
/// reading.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Rows {
    #[default]
    All,
    /// The first n (`subset` without `subset_seed`).
    First(usize),
    /// n drawn without replacement with this seed, in file order (`subset` with
    /// `subset_seed`); the same rows as [`super::preprocess::subset_random`].
    Random { n: usize, seed: u64 },
}

impl Rows {
    /// The rows that `data.subset` and `data.subset_seed` keep.
    pub fn of(subset: Option<usize>, seed: Option<u64>) -> Rows {
        match (subset, seed) {
            (None, _) => Rows::All,
            (Some(n), None) => Rows::First(n),
            (Some(n), Some(seed)) => Rows::Random { n, seed },
        }
    }
}

/// The batch files of `path`: the file itself, or the `split` batches of a folder (train:
/// `train_data_batch_1.npz`, `…_2.npz`, … in numeric order, which must run without a gap).
pub fn batch_files(path: &Path, split: Split) -> Result<Vec<PathBuf>> {
    if !path.is_dir() {
        if !path.exists() {
            return Err(Error::data(
                path,
                "does not exist; point data.path at the folder where the downsampled ImageNet batches (train_data_batch_1.npz … val_data.npz) are unpacked, or at one .npz batch",
            ));
        }
        return Ok(vec![path.to_path_buf()]);
    }
    if split == Split::Val {
        let f = path.join("val_data.npz");
        if !f.exists() {
            return Err(Error::data(
                &f,
                "not found; data.split = \"val\" reads val_data.npz from the data.path folder: unpack the validation archive there",
            ));
        }
        return Ok(vec![f]);
    }
    let mut numbered: Vec<(usize, PathBuf)> = std::fs::read_dir(path)
        .map_err(|e| Error::io(path, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?;
            let k = name
                .strip_prefix("train_data_batch_")?
                .strip_suffix(".npz")?
                .parse::<usize>()
                .ok()?;
            Some((k, p))
        })
        .collect();
    numbered.sort();
    if numbered.is_empty() {
        return Err(Error::data(
            path,
            "holds no train_data_batch_<k>.npz; unpack the downsampled ImageNet training batches there (or set data.split = \"val\" for val_data.npz)",
        ));
    }
    for (i, (k, _)) in numbered.iter().enumerate() {
        if *k != i + 1 {
            return Err(Error::data(
                path.join(format!("train_data_batch_{}.npz", i + 1)),
                format!(
                    "is missing but train_data_batch_{k}.npz is there; the training batches must run 1, 2, … without a gap: unpack the missing batch, or point data.path at one batch file"
                ),
            ));
        }
    }
    Ok(numbered.into_iter().map(|(_, p)| p).collect())
}

/// A reader that counts the bytes it has given (the length of an `.npy` header).
struct Counting<R> {
    inner: R,
    read: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// One batch as its `data.npy` header describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    /// N, the images of the batch.
    pub rows: usize,
    /// S, the image side (a row holds 3·S² bytes).
    pub side: usize,
}

type Archive = zip::ZipArchive<std::io::BufReader<std::fs::File>>;

fn open_archive(file: &Path) -> Result<Archive> {
    let f = std::fs::File::open(file).map_err(|e| Error::io(file, e))?;
    zip::ZipArchive::new(std::io::BufReader::with_capacity(1 << 20, f)).map_err(|e| {
        Error::data(
            file,
            format!(
                "is not a readable .npz (zip) archive ({e}); downsampled ImageNet batches are .npz files as distributed (numpy.savez / savez_compressed): re-download or re-unpack it"
            ),
        )
    })
}

/// The member `name` of `archive`, or an error listing the members there.
fn member<'a>(
    archive: &'a mut Archive,
    file: &Path,
    name: &str,
) -> Result<zip::read::ZipFile<'a, std::io::BufReader<std::fs::File>>> {
    let names: Vec<String> = archive.file_names().map(String::from).collect();
    archive.by_name(name).map_err(|e| {
        Error::data(
            file,
            format!(
                "has no readable member {name} ({e}; members: {}); a downsampled ImageNet batch holds data.npy and labels.npy: re-download or re-unpack it",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ),
        )
    })
}

/// Parses the `.npy` header at the start of `reader`; the header and its length in bytes.
fn npy_header<R: Read>(reader: &mut R, file: &Path, name: &str) -> Result<(npyz::NpyHeader, u64)> {
    let mut counting = Counting {
        inner: reader,
        read: 0,
    };
    let header = npyz::NpyHeader::from_reader(&mut counting).map_err(|e| {
        Error::data(
            file,
            format!("member {name} is not a readable .npy array ({e}); re-download or re-unpack the batch"),
        )
    })?;
    Ok((header, counting.read))
}

/// Reads and checks the header of `data.npy` of `file`; the batch's size and the member's
/// reader positioned at the first row.
fn data_header<'a>(
    archive: &'a mut Archive,
    file: &Path,
) -> Result<(
    BatchHeader,
    zip::read::ZipFile<'a, std::io::BufReader<std::fs::File>>,
)> {
    let mut m = member(archive, file, "data.npy")?;
    let stored = m.size();
    let (header, header_len) = npy_header(&mut m, file, "data.npy")?;
    let npy = npyz::NpyFile::with_header(header, std::io::empty());
    let descr = npy.dtype().descr();
    let is_u8 = matches!(npy.dtype(), npyz::DType::Plain(ts)
        if ts.type_char() == npyz::TypeChar::Uint && ts.size_field() == 1);
    if !is_u8 {
        return Err(Error::data(
            file,
            format!(
                "member data.npy has dtype {descr}; downsampled ImageNet images are uint8 (|u1): re-download the batch"
            ),
        ));
    }
    if npy.order() == npyz::Order::Fortran {
        return Err(Error::data(
            file,
            "member data.npy is in Fortran order; rows must be C order as distributed: save it with numpy.ascontiguousarray",
        ));
    }
    let shape = npy.shape().to_vec();
    let [rows, width] = shape[..] else {
        return Err(Error::data(
            file,
            format!(
                "member data.npy has shape {shape:?}; downsampled ImageNet data is (N, 3·S²): (N, 3072) for 32×32, (N, 12288) for 64×64"
            ),
        ));
    };
    let side = ((width / 3) as f64).sqrt().round() as u64;
    if width == 0 || 3 * side * side != width {
        return Err(Error::data(
            file,
            format!(
                "member data.npy has rows of {width} bytes, which is not 3·S² for an image side S (3072 for 32×32, 12288 for 64×64); this is not a downsampled ImageNet batch"
            ),
        ));
    }
    let need = rows
        .checked_mul(width)
        .and_then(|b| b.checked_add(header_len));
    if need != Some(stored) {
        return Err(Error::data(
            file,
            format!(
                "member data.npy holds {stored} bytes but its header ({rows} rows of {width} bytes after a {header_len}-byte header) needs {}; the batch is truncated or damaged: re-download it",
                need.map_or("more than 2^64".to_string(), |n| n.to_string())
            ),
        ));
    }
    Ok((
        BatchHeader {
            rows: rows as usize,
            side: side as usize,
        },
        m,
    ))
}

/// The header of `file`'s `data.npy` (only the header is inflated).
pub fn batch_header(file: &Path) -> Result<BatchHeader> {
    let mut archive = open_archive(file)?;
    Ok(data_header(&mut archive, file)?.0)
}

/// `labels.npy` of `file` as 0-based labels, checked: `rows` integers in 1..=1000.
fn read_labels(archive: &mut Archive, file: &Path, rows: usize) -> Result<Vec<u32>> {
    let mut m = member(archive, file, "labels.npy")?;
    let (header, _) = npy_header(&mut m, file, "labels.npy")?;
    let shape = header.shape().to_vec();
    let n = shape.iter().product::<u64>();
    if n != rows as u64 || shape.iter().filter(|&&s| s != 1).count() > 1 {
        return Err(Error::data(
            file,
            format!(
                "member labels.npy has shape {shape:?} but data.npy holds {rows} images; a batch needs one label per image: re-download it"
            ),
        ));
    }
    let npy = npyz::NpyFile::with_header(header, m);
    let descr = npy.dtype().descr();
    let bad = |e: std::io::Error| {
        Error::data(
            file,
            format!("member labels.npy is truncated or unreadable ({e}); re-download the batch"),
        )
    };
    let plain = match npy.dtype() {
        npyz::DType::Plain(ts) => Some((ts.type_char(), ts.size_field())),
        _ => None,
    };
    let ids: Vec<i128> = match plain {
        Some((npyz::TypeChar::Int, 8)) => ints::<i64, _>(npy).map_err(bad)?,
        Some((npyz::TypeChar::Int, 4)) => ints::<i32, _>(npy).map_err(bad)?,
        Some((npyz::TypeChar::Int, 2)) => ints::<i16, _>(npy).map_err(bad)?,
        Some((npyz::TypeChar::Uint, 8)) => ints::<u64, _>(npy).map_err(bad)?,
        Some((npyz::TypeChar::Uint, 4)) => ints::<u32, _>(npy).map_err(bad)?,
        Some((npyz::TypeChar::Uint, 2)) => ints::<u16, _>(npy).map_err(bad)?,
        _ => {
            return Err(Error::data(
                file,
                format!(
                    "member labels.npy has dtype {descr}; labels must be integers (the class ids 1..=1000)"
                ),
            ));
        }
    };
    ids.iter()
        .enumerate()
        .map(|(i, &id)| {
            if (1..=CLASSES as i128).contains(&id) {
                Ok((id - 1) as u32)
            } else {
                Err(Error::data(
                    file,
                    format!("member labels.npy: label {id} at index {i} is not a class id 1..={CLASSES} (downsampled ImageNet labels are 1-based)"),
                ))
            }
        })
        .collect()
}

/// The integers of a plain array of T, widened (labels.npy may be any integer type).
fn ints<T: npyz::Deserialize + Into<i128>, R: Read>(
    npy: npyz::NpyFile<R>,
) -> std::io::Result<Vec<i128>> {
    Ok(npy.into_vec::<T>()?.into_iter().map(Into::into).collect())
}

/// One batch's part of the output: its file, the rows kept (indices within the batch,
/// increasing) and where their pixels go.
struct Part<'a> {
    file: &'a Path,
    keep: Vec<usize>,
    out: &'a mut [f32],
}

/// Reads the kept rows of one batch into `part.out` (HWC, [-1, 1]); their labels.
fn read_part(part: Part<'_>, header: BatchHeader) -> Result<Vec<u32>> {
    let Part { file, keep, out } = part;
    let mut archive = open_archive(file)?;
    let all = read_labels(&mut archive, file, header.rows)?;
    let (_, mut data) = data_header(&mut archive, file)?;
    let plane = header.side * header.side;
    let width = 3 * plane;
    let table = u8_pixel_table();
    let mut row = vec![0u8; width];
    let mut at = 0usize; // the next row of the member
    for (j, &r) in keep.iter().enumerate() {
        // Rows between kept ones are inflated and dropped (a zip member is a stream).
        let skip = ((r - at) * width) as u64;
        let mut next_row = || -> std::io::Result<()> {
            let skipped = std::io::copy(&mut (&mut data).take(skip), &mut std::io::sink())?;
            if skipped < skip {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            data.read_exact(&mut row)
        };
        next_row().map_err(|e| {
            Error::data(
                file,
                format!("member data.npy is truncated or damaged at row {r} ({e}); re-download the batch"),
            )
        })?;
        at = r + 1;
        let dst = &mut out[j * width..(j + 1) * width];
        for p in 0..plane {
            for k in 0..3 {
                dst[3 * p + k] = table[row[k * plane + p] as usize];
            }
        }
    }
    Ok(keep.iter().map(|&r| all[r]).collect())
}

/// The indices (into the whole set of `total` rows) that `rows` keeps, sorted; a config
/// error on `data.subset` when it asks for more than there are.
fn kept(rows: Rows, total: usize, source: &str) -> Result<Vec<usize>> {
    let n = match rows {
        Rows::All => return Ok((0..total).collect()),
        Rows::First(n) | Rows::Random { n, .. } => n,
    };
    if n == 0 || n > total {
        return Err(Error::config(
            "data.subset",
            format!("{n} images requested but {source} holds {total}; choose 1..={total}"),
        ));
    }
    Ok(match rows {
        Rows::Random { n, seed } => random_indices(total, n, seed),
        _ => (0..n).collect(),
    })
}

/// Loads the batches of `path` (a folder: those of `split`; a file: that batch) keeping the
/// rows `rows` says, as an 8-bit labelled [`Dataset`] of S×S×3 images.
pub fn load(path: &Path, split: Split, rows: Rows) -> Result<Dataset> {
    let files = batch_files(path, split)?;
    let headers: Vec<BatchHeader> = files
        .iter()
        .map(|f| batch_header(f))
        .collect::<Result<_>>()?;
    let side = headers[0].side;
    if let Some((f, h)) = files.iter().zip(&headers).find(|(_, h)| h.side != side) {
        return Err(Error::data(
            f,
            format!(
                "holds {}×{} images but {} holds {side}×{side}; all batches of a set must have one size: keep only one resolution's batches in data.path",
                h.side,
                h.side,
                files[0].display()
            ),
        ));
    }
    let total: usize = headers.iter().map(|h| h.rows).sum();
    let source = if path.is_dir() {
        format!("imagenet-npz:{}:{}", split.name(), path.display())
    } else {
        path.display().to_string()
    };
    let keep = kept(rows, total, &source)?;
    let shape = ImageShape::new(side, side, 3);
    check_memory(path, keep.len(), shape, rows)?;
    let mut images = vec![0f32; keep.len() * shape.dim()];
    // Split the kept rows and the output by batch.
    let mut parts = Vec::with_capacity(files.len());
    let (mut rest, mut next, mut start) = (&mut images[..], 0usize, 0usize);
    for (file, h) in files.iter().zip(&headers) {
        let end = start + h.rows;
        let mut local = Vec::new();
        while next < keep.len() && keep[next] < end {
            local.push(keep[next] - start);
            next += 1;
        }
        let (out, tail) = std::mem::take(&mut rest).split_at_mut(local.len() * shape.dim());
        rest = tail;
        parts.push((
            Part {
                file,
                keep: local,
                out,
            },
            *h,
        ));
        start = end;
    }
    let labels: Vec<Result<Vec<u32>>> = parts
        .into_par_iter()
        .map(|(part, h)| {
            if part.keep.is_empty() {
                Ok(Vec::new())
            } else {
                read_part(part, h)
            }
        })
        .collect();
    let mut all = Vec::with_capacity(keep.len());
    for l in labels {
        all.extend(l?);
    }
    Ok(Dataset {
        source,
        shape,
        images,
        labels: Some(all),
        class_names: Some((1..=CLASSES).map(|id| id.to_string()).collect()),
        eight_bit: true,
    })
}

/// Refuses, before allocating, images that this machine cannot hold as float32.
fn check_memory(path: &Path, n: usize, shape: ImageShape, rows: Rows) -> Result<()> {
    let (key, value, fix) = match rows {
        Rows::All => (
            "data.path",
            path.display().to_string(),
            "set data.subset = N to load N of the images",
        ),
        Rows::First(n) | Rows::Random { n, .. } => {
            ("data.subset", n.to_string(), "lower data.subset")
        }
    };
    let need = crate::resources::Need {
        key: key.into(),
        value,
        what: "reading the downsampled ImageNet images".into(),
        formula: format!("N × D × 4 bytes, N = {n}, D = {} ({shape})", shape.dim()),
        bytes: n as f64 * shape.dim() as f64 * 4.0,
        fix: fix.into(),
    };
    match crate::resources::shortfall(&[need], crate::resources::memory().as_ref()) {
        Some((key, problem)) => Err(Error::config(key, problem)),
        None => Ok(()),
    }
}
