//! The size of a data set before it is loaded: from the `[data]` table alone for the built-in
//! and well-known sets, from file headers for the others. The run plan checks it against the
//! machine's memory ([`crate::resources`]) so that a set that cannot fit is refused before
//! any image is read.

use std::path::Path;

use super::spec::{DEFAULT_COUNT, DEFAULT_SIZE, DataConfig, DataKind};
use super::synthetic::{MAX_SIZE, MIN_SIZE};
use super::{ImageShape, idx, imagenet_npz, npy};

/// How many images a data set will hold, and of which shape, at each stage of loading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpectedSize {
    /// Images read from the source.
    pub read: usize,
    /// Their shape as read (a folder: after its per-file crop and resize).
    pub read_shape: ImageShape,
    /// Images kept by `subset`.
    pub images: usize,
    /// The shape before `resize` (after `crop`).
    pub before_resize: ImageShape,
    /// The final shape (after `crop`, `resize`, `grayscale`).
    pub shape: ImageShape,
}

impl DataConfig {
    /// The expected size of this data set, relative paths taken from `base_dir`; None when it
    /// cannot be known without reading the data (a missing or unreadable file, a folder of
    /// images: loading reports what is wrong). Channels that only the images tell count as 1,
    /// so the sizes are lower bounds.
    pub fn expected_size(&self, base_dir: &Path) -> Option<ExpectedSize> {
        let path = self.path.as_deref().map(|p| base_dir.join(p));
        let test = self.split.as_deref().map(str::trim) == Some("test");
        let (read, read_shape) = match self.kind {
            DataKind::Synthetic => {
                let side = self.size.unwrap_or(DEFAULT_SIZE);
                if !(MIN_SIZE..=MAX_SIZE).contains(&side) {
                    return None; // refused by the generator, naming data.size
                }
                (
                    self.count.unwrap_or(DEFAULT_COUNT),
                    ImageShape::new(side, side, self.channels.unwrap_or(1)),
                )
            }
            DataKind::FashionMnist => (
                if test { 10_000 } else { 60_000 },
                ImageShape::new(28, 28, 1),
            ),
            DataKind::Cifar10 => {
                let per_batch = 10_000;
                let batches = match &path {
                    Some(p) if p.is_dir() && !test => 5,
                    _ => 1,
                };
                (batches * per_batch, ImageShape::new(32, 32, 3))
            }
            DataKind::Idx => {
                let (n, h, w) = idx::image_header(path.as_deref()?)?;
                (n, ImageShape::new(h, w, 1))
            }
            DataKind::Npy => {
                let p = path.as_deref()?;
                let dims = crate::arrays::npy_shape(p).ok()?;
                let shape = npy::image_shape(p, &dims, self.shape).ok()?;
                (*dims.first()?, shape)
            }
            DataKind::Folder => return None,
            // The loader reads only the rows `subset` keeps: `read` counts those.
            DataKind::ImagenetNpz => {
                let p = path.as_deref()?;
                let split = imagenet_npz::Split::parse(self.split.as_deref()).ok()?;
                let files = imagenet_npz::batch_files(p, split).ok()?;
                let mut total = 0;
                let mut side = 0;
                for f in &files {
                    let h = imagenet_npz::batch_header(f).ok()?;
                    total += h.rows;
                    side = h.side;
                }
                (
                    self.subset.map_or(total, |n| n.min(total)),
                    ImageShape::new(side, side, 3),
                )
            }
            DataKind::Gaussian | DataKind::Gmm | DataKind::Discrete => {
                let prior = self.prior.clone().unwrap_or_default();
                let dim = prior.expected_dim();
                (self.count.unwrap_or(DEFAULT_COUNT), prior.shape(dim).ok()?)
            }
        };
        let images = self.subset.map_or(read, |n| n.min(read));
        let [h, w] = self.crop.unwrap_or([read_shape.height, read_shape.width]);
        let before_resize = ImageShape::new(h, w, read_shape.channels);
        let [h, w] = self.resize.unwrap_or([h, w]);
        let channels = if self.grayscale == Some(true) {
            1
        } else {
            read_shape.channels
        };
        Some(ExpectedSize {
            read,
            read_shape,
            images,
            before_resize,
            shape: ImageShape::new(h, w, channels),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> DataConfig {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn sizes_follow_the_config_and_the_headers() {
        let here = Path::new(".");
        let e = parse("count = 300\nsize = 20\nchannels = 3\nsubset = 100\ncrop = [18, 16]\nresize = [90, 80]\ngrayscale = true")
            .expected_size(here)
            .unwrap();
        assert_eq!((e.read, e.images), (300, 100));
        assert_eq!(e.read_shape, ImageShape::new(20, 20, 3));
        assert_eq!(e.before_resize, ImageShape::new(18, 16, 3));
        assert_eq!(e.shape, ImageShape::new(90, 80, 1));
        // The loaded set has exactly the expected shape and count.
        let ds = crate::data::load(
            &parse("count = 300\nsize = 20\nchannels = 3\nsubset = 100\ncrop = [18, 16]\nresize = [9, 8]\ngrayscale = true"),
            here,
        )
        .unwrap();
        assert_eq!((ds.len(), ds.shape), (100, ImageShape::new(9, 8, 1)));
        let e = parse("kind = \"fashion-mnist\"\nsplit = \"test\"")
            .expected_size(here)
            .unwrap();
        assert_eq!((e.read, e.shape), (10_000, ImageShape::new(28, 28, 1)));
        // Headers: an IDX file (gzipped) and an .npy array.
        let d = crate::data::testutil::tmpdir("expected");
        let idx_bytes = crate::data::idx::tests::idx_bytes(idx::IMAGES_MAGIC, &[3, 4, 5], &[7; 60]);
        let gz = d.join("x.idx.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut enc, &idx_bytes).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        std::fs::write(d.join("x.idx"), &idx_bytes).unwrap();
        for name in ["x.idx.gz", "x.idx"] {
            let e = parse(&format!("kind = \"idx\"\npath = \"{name}\""))
                .expected_size(&d)
                .unwrap();
            assert_eq!((e.read, e.shape), (3, ImageShape::new(4, 5, 1)), "{name}");
        }
        crate::arrays::write_npy_f32(&d.join("a.npy"), &[6, 2, 3, 3], &[0.0; 108]).unwrap();
        let e = parse("kind = \"npy\"\npath = \"a.npy\"")
            .expected_size(&d)
            .unwrap();
        assert_eq!((e.read, e.shape), (6, ImageShape::new(2, 3, 3)));
        assert!(
            parse("kind = \"npy\"\npath = \"missing.npy\"")
                .expected_size(&d)
                .is_none()
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
