//! The `[data]` table of a run config, and [`load`], which turns it into a [`Dataset`].
//!
//! Processing order: load → subset → crop → resize → grayscale. (For `kind = "folder"` the
//! crop and resize are applied to each file as it is read, which gives the same result and
//! lets a folder of differently sized images be brought to one size.)
//!
//! Example:
//! ```toml
//! [data]
//! kind = "fashion-mnist"
//! split = "train"
//! subset = 10000
//! subset_seed = 1
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::analytic::{self, PriorConfig};
use super::folder::FolderOptions;
use super::npy::{NpyOptions, Range};
use super::synthetic::Family;
use super::{Dataset, cifar, folder, idx, imagenet_npz, npy, preprocess, synthetic};
use crate::{Error, Result};

/// Where the data come from (`data.kind`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataKind {
    /// `"synthetic"`: a built-in seeded set (`synthetic`, `count`, `size`, `channels`, `seed`).
    #[default]
    #[serde(rename = "synthetic")]
    Synthetic,
    /// `"fashion-mnist"`: the four IDX files of Fashion-MNIST in the folder `path`
    /// (default: $FSLENS_FASHION_MNIST, else /usr/share/datasets/fashion-mnist); `split`.
    #[serde(rename = "fashion-mnist")]
    FashionMnist,
    /// `"idx"`: an IDX (MNIST-format) image file `path`, plain or gzipped, with an optional
    /// IDX label file `labels`.
    #[serde(rename = "idx")]
    Idx,
    /// `"cifar10"`: CIFAR-10 binary batches: `path` is the `cifar-10-batches-bin` folder
    /// (then `split` picks data_batch_1..5 or test_batch) or a single `.bin` batch.
    #[serde(rename = "cifar10")]
    Cifar10,
    /// `"folder"`: PNG/JPEG images in the folder `path`, labelled by sub-folder names when
    /// they lie in sub-folders.
    #[serde(rename = "folder")]
    Folder,
    /// `"npy"`: a `.npy` array `path` of uint8/float32/float64 images, shape (N,H,W),
    /// (N,H,W,C) or (N,D); optional `labels` `.npy`; `range`, `shape`.
    #[serde(rename = "npy")]
    Npy,
    /// `"imagenet-npz"`: downsampled ImageNet (32×32, 64×64) `.npz` batches: `path` is the
    /// folder they are unpacked in (then `split` = "train" reads train_data_batch_1..k.npz,
    /// "val" val_data.npz) or one `.npz` batch (module `data::imagenet_npz`).
    #[serde(rename = "imagenet-npz")]
    ImagenetNpz,
    /// `"gaussian"`, `"gmm"`, `"discrete"`: `count` seeded draws (`seed`) from the analytic
    /// prior of the `[data.prior]` table (module `data::analytic`).
    #[serde(rename = "gaussian")]
    Gaussian,
    #[serde(rename = "gmm")]
    Gmm,
    #[serde(rename = "discrete")]
    Discrete,
}

impl DataKind {
    pub fn name(self) -> &'static str {
        match self {
            DataKind::Synthetic => "synthetic",
            DataKind::FashionMnist => "fashion-mnist",
            DataKind::Idx => "idx",
            DataKind::Cifar10 => "cifar10",
            DataKind::Folder => "folder",
            DataKind::Npy => "npy",
            DataKind::ImagenetNpz => "imagenet-npz",
            DataKind::Gaussian => "gaussian",
            DataKind::Gmm => "gmm",
            DataKind::Discrete => "discrete",
        }
    }

    /// Whether `data.count` sets the number of images (synthetic and analytic kinds).
    pub fn uses_count(self) -> bool {
        self == DataKind::Synthetic || self.analytic().is_some()
    }

    /// The analytic family of an analytic kind (`gaussian`, `gmm`, `discrete`).
    pub fn analytic(self) -> Option<analytic::Family> {
        match self {
            DataKind::Gaussian => Some(analytic::Family::Gaussian),
            DataKind::Gmm => Some(analytic::Family::Gmm),
            DataKind::Discrete => Some(analytic::Family::Discrete),
            _ => None,
        }
    }
    /// Parses a kind name (for command-line use); a config error on `data.kind` otherwise.
    pub fn parse(s: &str) -> Result<DataKind> {
        const ALL: [DataKind; 10] = [
            DataKind::Synthetic,
            DataKind::FashionMnist,
            DataKind::Idx,
            DataKind::Cifar10,
            DataKind::Folder,
            DataKind::Npy,
            DataKind::ImagenetNpz,
            DataKind::Gaussian,
            DataKind::Gmm,
            DataKind::Discrete,
        ];
        ALL.into_iter().find(|k| k.name() == s.trim()).ok_or_else(|| {
            Error::config(
                "data.kind",
                format!(
                    "\"{s}\" is not a data kind; use one of \"synthetic\", \"fashion-mnist\", \"idx\", \"cifar10\", \"folder\", \"npy\", \"imagenet-npz\""
                ),
            )
        })
    }
}

/// Default number of synthetic images.
pub const DEFAULT_COUNT: usize = 2000;
/// Default synthetic image side.
pub const DEFAULT_SIZE: usize = 16;

/// The `[data]` table. Every key but `kind` is optional; a key that does not apply to the
/// chosen kind is an error (so a typo in intent is caught, not ignored). Unknown keys are
/// errors too.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// `prior`: gaussian, gmm, discrete: the `[data.prior]` table (see `data::analytic`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior: Option<PriorConfig>,
    /// `kind`: "synthetic" (default when the table is absent) | "fashion-mnist" | "idx" |
    /// "cifar10" | "folder" | "npy" | "imagenet-npz".
    #[serde(default)]
    pub kind: DataKind,
    /// `path`: the data file or folder (idx: the image file; cifar10: the batches folder
    /// or one .bin; folder: the folder; npy: the array; imagenet-npz: the folder of .npz
    /// batches or one batch; fashion-mnist: the folder, default
    /// $FSLENS_FASHION_MNIST or /usr/share/datasets/fashion-mnist). Relative paths are
    /// taken from the config file's folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// `labels`: idx: an IDX label file; npy: a .npy of N non-negative integers. Optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<PathBuf>,
    /// `split`: fashion-mnist and cifar10 folders: "train" (default) or "test";
    /// imagenet-npz folders: "train" (default) or "val".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
    /// `synthetic`: the built-in set, "shapes" (default; disk, square, triangle, ring,
    /// cross, bars) or "glyphs" (digit-like strokes "0"…"9").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synthetic: Option<String>,
    /// `count`: synthetic: number of images (default 2000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
    /// `size`: synthetic: image side in pixels, 16..=64 (default 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<usize>,
    /// `channels`: synthetic: 1 (gray, default) or 3 (per-class colours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<usize>,
    /// `seed`: synthetic: the generator seed (default 0); same seed, same images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// `range`: npy float data: the range the values use, "-1..1" (default), "0..1" or
    /// "0..255"; mapped affinely onto [-1, 1]. Not used for uint8 arrays (always 0..255).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<String>,
    /// `shape`: npy (N, D) arrays: [h, w, c] with h·w·c = D (default: a square, one channel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<[usize; 3]>,
    /// `crop`: centre crop to [height, width] (after `subset`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crop: Option<[usize; 2]>,
    /// `resize`: resize to [height, width] after the crop: area averaging along an axis that
    /// shrinks, bilinear (half-pixel centres) along an axis that grows. Clears the 8-bit flag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize: Option<[usize; 2]>,
    /// `grayscale`: true → RGB to one channel, Y = 0.299 R + 0.587 G + 0.114 B (ITU-R
    /// BT.601), last. Clears the 8-bit flag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grayscale: Option<bool>,
    /// `subset`: keep N images: the first N, or with `subset_seed` N drawn at random
    /// without replacement (kept in file order). Applied right after loading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<usize>,
    /// `subset_seed`: with `subset`, draw the images at random with this seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset_seed: Option<u64>,
}

/// The Fashion-MNIST folder: $FSLENS_FASHION_MNIST when set, else Debian's location.
pub fn default_fashion_mnist_dir() -> PathBuf {
    std::env::var_os("FSLENS_FASHION_MNIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(idx::FASHION_MNIST_DIR))
}

impl DataConfig {
    /// The embedded default: 2000 synthetic `shapes` images of 16×16, seed 0.
    pub fn synthetic_default() -> DataConfig {
        DataConfig::default().resolved()
    }

    /// A copy with every default of the kind written out (for the resolved config.toml):
    /// fashion-mnist path and split, the synthetic set, count,
    /// size, channels and seed.
    pub fn resolved(&self) -> DataConfig {
        let mut c = self.clone();
        match c.kind {
            DataKind::Synthetic => {
                c.synthetic.get_or_insert_with(|| "shapes".into());
                c.count.get_or_insert(DEFAULT_COUNT);
                c.size.get_or_insert(DEFAULT_SIZE);
                c.channels.get_or_insert(1);
                c.seed.get_or_insert(0);
            }
            DataKind::Gaussian | DataKind::Gmm | DataKind::Discrete => {
                c.count.get_or_insert(DEFAULT_COUNT);
                c.seed.get_or_insert(0);
            }
            DataKind::FashionMnist => {
                c.path.get_or_insert_with(default_fashion_mnist_dir);
                c.split.get_or_insert_with(|| "train".into());
            }
            _ => {}
        }
        c
    }

    /// Errors on a key set for a kind that does not use it.
    fn check_keys(&self) -> Result<()> {
        let k = self.kind;
        use DataKind::*;
        let set: [(&str, bool, &[DataKind]); 11] = [
            (
                "path",
                self.path.is_some(),
                &[FashionMnist, Idx, Cifar10, Folder, Npy, ImagenetNpz],
            ),
            ("labels", self.labels.is_some(), &[Idx, Npy]),
            (
                "split",
                self.split.is_some(),
                &[FashionMnist, Cifar10, ImagenetNpz],
            ),
            ("synthetic", self.synthetic.is_some(), &[Synthetic]),
            (
                "count",
                self.count.is_some(),
                &[Synthetic, Gaussian, Gmm, Discrete],
            ),
            ("size", self.size.is_some(), &[Synthetic]),
            ("channels", self.channels.is_some(), &[Synthetic]),
            (
                "seed",
                self.seed.is_some(),
                &[Synthetic, Gaussian, Gmm, Discrete],
            ),
            ("prior", self.prior.is_some(), &[Gaussian, Gmm, Discrete]),
            ("range", self.range.is_some(), &[Npy]),
            ("shape", self.shape.is_some(), &[Npy]),
        ];
        for (key, present, kinds) in set {
            if present && !kinds.contains(&k) {
                let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
                return Err(Error::config(
                    format!("data.{key}"),
                    format!(
                        "does not apply to kind = \"{}\" (only to {}); remove it or change data.kind",
                        k.name(),
                        names.join(", ")
                    ),
                ));
            }
        }
        if self.subset_seed.is_some() && self.subset.is_none() {
            return Err(Error::config(
                "data.subset_seed",
                "is set without data.subset; set data.subset = N to draw N images, or remove the seed",
            ));
        }
        Ok(())
    }

    fn path_or_error(&self, base_dir: &Path, what: &str) -> Result<PathBuf> {
        match &self.path {
            Some(p) => Ok(resolve(base_dir, p)),
            None => Err(Error::config(
                "data.path",
                format!(
                    "is required for kind = \"{}\"; set it to {what}",
                    self.kind.name()
                ),
            )),
        }
    }

    /// "train" → false, "test" → true.
    fn test_split(&self) -> Result<bool> {
        match self.split.as_deref().map(str::trim) {
            None | Some("train") => Ok(false),
            Some("test") => Ok(true),
            Some(other) => Err(Error::config(
                "data.split",
                format!("\"{other}\" is not a split; use \"train\" or \"test\""),
            )),
        }
    }
}

/// `p` when absolute, else `base_dir/p`.
fn resolve(base_dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    }
}

/// Loads and preprocesses the data set that `cfg` describes; relative paths are taken from
/// `base_dir` (the folder of the config file). See the module notes for the order.
pub fn load(cfg: &DataConfig, base_dir: &Path) -> Result<Dataset> {
    load_with_progress(cfg, base_dir, &mut |_, _| {})
}

/// [`load`] that reports the decoding of a folder of images as `progress(done, total)` files
/// (called on this thread; other kinds report nothing). The loader prints nothing: the
/// caller (the command line) draws the bar.
pub fn load_with_progress(
    cfg: &DataConfig,
    base_dir: &Path,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Dataset> {
    cfg.check_keys()?;
    // A file error names the key that named the file: data.labels or data.path.
    let labels = cfg.labels.as_deref().map(|l| resolve(base_dir, l));
    let mut ds = load_kind(cfg, base_dir, progress).map_err(|e| {
        let key = match (e.path(), &labels) {
            (Some(p), Some(l)) if p == l => "data.labels",
            _ => "data.path",
        };
        e.for_file_key(key)
    })?;
    if ds.is_empty() {
        return Err(Error::config(
            "data",
            format!("{} holds no images; the data set is empty", ds.source),
        ));
    }
    // The imagenet-npz loader applies the subset while reading (it reads only those rows).
    if let Some(n) = cfg.subset.filter(|_| cfg.kind != DataKind::ImagenetNpz) {
        if n == 0 || n > ds.len() {
            return Err(Error::config(
                "data.subset",
                format!(
                    "{n} images requested but the set holds {}; choose 1..={}",
                    ds.len(),
                    ds.len()
                ),
            ));
        }
        ds = match cfg.subset_seed {
            Some(seed) => preprocess::subset_random(&ds, n, seed)?,
            None => preprocess::subset_first(&ds, n)?,
        };
    }
    if cfg.kind != DataKind::Folder {
        if let Some([h, w]) = cfg.crop {
            check_pair("data.crop", cfg.crop)?;
            if h > ds.shape.height || w > ds.shape.width {
                return Err(Error::config(
                    "data.crop",
                    format!(
                        "[{h}, {w}] does not fit in images of {}x{}; choose at most [{}, {}]",
                        ds.shape.height, ds.shape.width, ds.shape.height, ds.shape.width
                    ),
                ));
            }
            ds = preprocess::center_crop(&ds, h, w)?;
        }
        if let Some([h, w]) = cfg.resize {
            check_pair("data.resize", cfg.resize)?;
            ds = preprocess::resize(&ds, h, w)?;
        }
    }
    if cfg.grayscale == Some(true) {
        if !matches!(ds.shape.channels, 1 | 3) {
            return Err(Error::config(
                "data.grayscale",
                format!(
                    "needs 1 or 3 channels, the images have {}; remove data.grayscale",
                    ds.shape.channels
                ),
            ));
        }
        ds = preprocess::grayscale(&ds)?;
    }
    Ok(ds)
}

/// The data set of `cfg.kind` as its loader reads it, before any preprocessing.
fn load_kind(
    cfg: &DataConfig,
    base_dir: &Path,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Dataset> {
    let ds = match cfg.kind {
        DataKind::Gaussian | DataKind::Gmm | DataKind::Discrete => {
            let family = cfg.kind.analytic().expect("an analytic kind");
            let prior = cfg.prior.clone().unwrap_or_default();
            let seed = cfg.seed.unwrap_or(0);
            let mixture = prior.mixture(family, seed)?;
            analytic::draw_atoms(
                &mixture,
                family,
                cfg.count.unwrap_or(DEFAULT_COUNT),
                seed,
                prior.shape(mixture.dim)?,
            )?
        }
        DataKind::Synthetic => {
            let family = Family::parse(cfg.synthetic.as_deref().unwrap_or("shapes"))?;
            synthetic::generate(
                family,
                cfg.count.unwrap_or(DEFAULT_COUNT),
                cfg.size.unwrap_or(DEFAULT_SIZE),
                cfg.channels.unwrap_or(1),
                cfg.seed.unwrap_or(0),
            )?
        }
        DataKind::FashionMnist => {
            let dir = cfg
                .path
                .as_deref()
                .map(|p| resolve(base_dir, p))
                .unwrap_or_else(default_fashion_mnist_dir);
            idx::fashion_mnist(&dir, cfg.test_split()?)?
        }
        DataKind::Idx => {
            let p = cfg.path_or_error(
                base_dir,
                "the IDX image file (e.g. train-images-idx3-ubyte.gz)",
            )?;
            let l = cfg.labels.as_deref().map(|l| resolve(base_dir, l));
            idx::load(&p, l.as_deref())?
        }
        DataKind::Cifar10 => {
            let p = cfg.path_or_error(
                base_dir,
                "the cifar-10-batches-bin folder or one .bin batch",
            )?;
            if !p.is_dir() && cfg.split.is_some() {
                return Err(Error::config(
                    "data.split",
                    format!(
                        "applies to a CIFAR-10 folder, but data.path {} is one batch file; remove data.split or point data.path at the folder",
                        p.display()
                    ),
                ));
            }
            cifar::load(&p, cfg.test_split()?)?
        }
        DataKind::Folder => {
            let p = cfg.path_or_error(base_dir, "a folder of PNG/JPEG images")?;
            check_pair("data.crop", cfg.crop)?;
            check_pair("data.resize", cfg.resize)?;
            folder::load_with_progress(
                &p,
                &FolderOptions {
                    crop: cfg.crop,
                    resize: cfg.resize,
                },
                progress,
            )?
        }
        DataKind::ImagenetNpz => {
            let p = cfg.path_or_error(
                base_dir,
                "the folder of downsampled ImageNet .npz batches (train_data_batch_1.npz … val_data.npz) or one batch",
            )?;
            let split = imagenet_npz::Split::parse(cfg.split.as_deref())?;
            if !p.is_dir() && cfg.split.is_some() {
                return Err(Error::config(
                    "data.split",
                    format!(
                        "applies to a folder of batches, but data.path {} is one batch file; remove data.split or point data.path at the folder",
                        p.display()
                    ),
                ));
            }
            imagenet_npz::load(
                &p,
                split,
                imagenet_npz::Rows::of(cfg.subset, cfg.subset_seed),
            )?
        }
        DataKind::Npy => {
            let p = cfg.path_or_error(base_dir, "a .npy array of images")?;
            let l = cfg.labels.as_deref().map(|l| resolve(base_dir, l));
            let range = match &cfg.range {
                Some(r) => Range::parse(r)?,
                None => Range::default(),
            };
            npy::load(
                &p,
                l.as_deref(),
                &NpyOptions {
                    range,
                    shape: cfg.shape,
                },
            )?
        }
    };
    Ok(ds)
}

/// Both sides of a crop/resize size must be positive.
fn check_pair(key: &str, v: Option<[usize; 2]>) -> Result<()> {
    if let Some([h, w]) = v
        && (h == 0 || w == 0)
    {
        return Err(Error::config(
            key,
            format!("[{h}, {w}] is empty; give [height, width] with both at least 1"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arrays::write_npy_f32;
    use crate::data::testutil::tmpdir;
    use crate::data::{ImageShape, preprocess};

    fn parse(s: &str) -> std::result::Result<DataConfig, String> {
        toml::from_str::<DataConfig>(s).map_err(|e| e.to_string())
    }

    #[test]
    fn toml_keys_round_trip_and_errors() {
        let c = parse(
            "kind = \"npy\"\npath = \"x.npy\"\nrange = \"0..1\"\nshape = [4, 4, 1]\ncrop = [2, 2]\nsubset = 3\nsubset_seed = 9\ngrayscale = true\n",
        )
        .unwrap();
        assert_eq!(c.kind, DataKind::Npy);
        assert_eq!(c.shape, Some([4, 4, 1]));
        let back: DataConfig = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        // Absent kind → synthetic; all kinds parse.
        assert_eq!(parse("").unwrap().kind, DataKind::Synthetic);
        for k in [
            "synthetic",
            "fashion-mnist",
            "idx",
            "cifar10",
            "folder",
            "npy",
        ] {
            assert_eq!(parse(&format!("kind = \"{k}\"")).unwrap().kind.name(), k);
            assert_eq!(DataKind::parse(k).unwrap().name(), k);
        }
        let e = parse("kind = \"mnist\"").unwrap_err();
        assert!(e.contains("kind") && e.contains("fashion-mnist"), "{e}");
        assert!(
            DataKind::parse("mnist")
                .unwrap_err()
                .to_string()
                .contains("data.kind")
        );
        let e = parse("kind = \"idx\"\npaht = \"x\"").unwrap_err();
        assert!(e.contains("paht"), "{e}");
        // Resolved defaults.
        let r = DataConfig::synthetic_default();
        assert_eq!(
            (r.count, r.size, r.channels, r.seed),
            (Some(2000), Some(16), Some(1), Some(0))
        );
        assert_eq!(r.synthetic.as_deref(), Some("shapes"));
    }

    #[test]
    fn config_errors_name_the_key() {
        let base = Path::new("/nonexistent-base");
        let cfg = |s: &str| parse(s).unwrap();
        let err = |s: &str| load(&cfg(s), base).unwrap_err().to_string();
        let e = err("kind = \"idx\"");
        assert!(e.contains("data.path") && e.contains("required"), "{e}");
        let e = err("kind = \"synthetic\"\npath = \"x\"");
        assert!(
            e.contains("data.path") && e.contains("does not apply"),
            "{e}"
        );
        let e = err("kind = \"fashion-mnist\"\ncount = 5");
        assert!(e.contains("data.count"), "{e}");
        let e = err("count = 10\ncrop = [17, 4]");
        assert!(e.contains("data.crop") && e.contains("16x16"), "{e}");
        let e = err("count = 10\nresize = [0, 4]");
        assert!(e.contains("data.resize"), "{e}");
        let e = err("count = 10\nsubset = 11");
        assert!(e.contains("data.subset") && e.contains("1..=10"), "{e}");
        let e = err("count = 10\nsubset_seed = 1");
        assert!(e.contains("data.subset_seed"), "{e}");
        let e = err("synthetic = \"blobs\"");
        assert!(e.contains("data.synthetic"), "{e}");
        let e = err("kind = \"fashion-mnist\"\nsplit = \"val\"\npath = \".\"");
        assert!(e.contains("data.split") && e.contains("\"test\""), "{e}");
        let e = err("kind = \"npy\"\npath = \"a.npy\"\nrange = \"0..9\"");
        assert!(e.contains("data.range"), "{e}");
        // A missing file names the resolved path.
        let e = err("kind = \"npy\"\npath = \"a.npy\"");
        assert!(e.contains("/nonexistent-base/a.npy"), "{e}");
    }

    #[test]
    fn pipeline_order_matches_manual_steps() {
        let c = parse(
            "kind = \"synthetic\"\nchannels = 3\nsize = 20\ncount = 30\nseed = 4\nsubset = 12\nsubset_seed = 5\ncrop = [18, 16]\nresize = [9, 8]\ngrayscale = true",
        )
        .unwrap();
        let got = load(&c, Path::new(".")).unwrap();
        let raw = synthetic::generate(Family::Shapes, 30, 20, 3, 4).unwrap();
        let s = preprocess::subset_random(&raw, 12, 5).unwrap();
        let s = preprocess::center_crop(&s, 18, 16).unwrap();
        let s = preprocess::resize(&s, 9, 8).unwrap();
        let s = preprocess::grayscale(&s).unwrap();
        assert_eq!(got.shape, ImageShape::new(9, 8, 1));
        assert_eq!(got.images, s.images);
        assert_eq!(got.labels, s.labels);
        assert!(!got.eight_bit);
        // The default: synthetic shapes, 2000 images 16x16, 8-bit.
        let d = load(&DataConfig::default(), Path::new(".")).unwrap();
        assert_eq!(
            (d.len(), d.shape, d.eight_bit),
            (2000, ImageShape::new(16, 16, 1), true)
        );
    }

    #[test]
    fn relative_paths_from_base_dir() {
        let d = tmpdir("spec-rel");
        std::fs::create_dir_all(d.join("sub")).unwrap();
        let v: Vec<f32> = (0..2 * 16).map(|i| i as f32 / 31.0).collect();
        write_npy_f32(&d.join("sub/x.npy"), &[2, 16], &v).unwrap();
        let c =
            parse("kind = \"npy\"\npath = \"sub/x.npy\"\nrange = \"0..1\"\ncrop = [2, 2]").unwrap();
        let ds = load(&c, &d).unwrap();
        assert_eq!(ds.shape, ImageShape::new(2, 2, 1));
        // Centre 2x2 of the 4x4 image 0: flat indices 5, 6, 9, 10.
        let want: Vec<f32> = [5, 6, 9, 10]
            .iter()
            .map(|&i| (2.0 * f64::from(v[i]) - 1.0) as f32)
            .collect();
        assert_eq!(ds.image(0), &want[..]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn fashion_mnist_through_the_spec() {
        let Some(dir) = crate::data::idx::tests::fashion_dir() else {
            return;
        };
        let c = DataConfig {
            kind: DataKind::FashionMnist,
            path: Some(dir),
            split: Some("test".into()),
            subset: Some(500),
            subset_seed: Some(3),
            crop: Some([24, 24]),
            resize: Some([12, 12]),
            ..DataConfig::default()
        };
        let ds = load(&c, Path::new(".")).unwrap();
        assert_eq!((ds.len(), ds.shape), (500, ImageShape::new(12, 12, 1)));
        assert_eq!(ds.class_names.as_ref().unwrap()[9], "Ankle boot");
        assert!(ds.images.iter().all(|&x| (-1.0..=1.0).contains(&x)));
        assert!(!ds.eight_bit);
    }
}
