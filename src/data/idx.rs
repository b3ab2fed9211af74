//! IDX files (the MNIST format): unsigned-byte images (magic 0x00000803, N×H×W) and labels
//! (magic 0x00000801, N), plain or gzip-compressed. Gzip is recognised by its magic bytes
//! (1f 8b), not by the file name. Pixel k ∈ 0..=255 becomes 2k/255 − 1.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{Dataset, ImageShape, u8_pixel_table};
use crate::{Error, Result};

/// Magic number of an IDX file of unsigned bytes with three dimensions (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned bytes with one dimension (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// Where Debian's `dataset-fashion-mnist` package installs the files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Fashion-MNIST's ten class names, in label order.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// The whole file, gunzipped when it starts with the gzip magic 1f 8b.
pub fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if raw.len() >= 2 && raw[0] == 0x1f && raw[1] == 0x8b {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| {
                Error::data(
                    path,
                    format!("gzip stream is truncated or corrupt ({e}); download the file again"),
                )
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses an IDX byte array with the given magic: returns the dimensions and the payload.
/// The payload must hold exactly Π dims bytes.
fn parse(path: &Path, bytes: &[u8], magic: u32, what: &str) -> Result<(Vec<usize>, Vec<u8>)> {
    if bytes.len() < 4 {
        return Err(Error::data(
            path,
            format!(
                "file holds only {} bytes; an IDX {what} file starts with the magic number {magic:#010x}",
                bytes.len()
            ),
        ));
    }
    let found = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if found != magic {
        let hint = match found {
            IMAGES_MAGIC => " (this is an IDX image file; pass it as the images, not the labels)",
            LABELS_MAGIC => " (this is an IDX label file; pass it as the labels, not the images)",
            _ => "",
        };
        return Err(Error::data(
            path,
            format!(
                "wrong magic number {found:#010x}; an IDX {what} file of unsigned bytes starts with {magic:#010x}{hint}"
            ),
        ));
    }
    let ndim = (magic & 0xff) as usize;
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(Error::data(
            path,
            format!(
                "header is truncated: {} bytes, need {header} for {ndim} dimensions",
                bytes.len()
            ),
        ));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|k| {
            let o = 4 + 4 * k;
            u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize
        })
        .collect();
    let expected: usize = dims.iter().product();
    let payload = &bytes[header..];
    if payload.len() < expected {
        return Err(Error::data(
            path,
            format!(
                "payload is truncated: the header declares {dims:?} = {expected} bytes but only {} follow; the file is incomplete",
                payload.len()
            ),
        ));
    }
    if payload.len() > expected {
        return Err(Error::data(
            path,
            format!(
                "{} bytes follow the {expected} bytes that the header's dimensions {dims:?} declare; the file is not a single IDX array",
                payload.len() - expected
            ),
        ));
    }
    Ok((dims, payload.to_vec()))
}

/// The (N, height, width) an IDX image file's header declares, reading the header alone; None
/// when it is not a readable IDX image file (loading it then says why).
pub fn image_header(path: &Path) -> Option<(usize, usize, usize)> {
    let mut raw = [0u8; 16];
    let mut file = std::fs::File::open(path).ok()?;
    file.read_exact(&mut raw[..2]).ok()?;
    let mut rest: Box<dyn Read> = if raw[..2] == [0x1f, 0x8b] {
        let file = std::fs::File::open(path).ok()?;
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(std::io::Cursor::new(raw[..2].to_vec()).chain(file))
    };
    rest.read_exact(&mut raw).ok()?;
    let word =
        |k: usize| u32::from_be_bytes([raw[4 * k], raw[4 * k + 1], raw[4 * k + 2], raw[4 * k + 3]]);
    (word(0) == IMAGES_MAGIC).then(|| (word(1) as usize, word(2) as usize, word(3) as usize))
}

/// Reads an IDX image file: (height, width, N·H·W bytes).
pub fn read_images(path: &Path) -> Result<(usize, usize, Vec<u8>)> {
    let bytes = read_maybe_gzip(path)?;
    let (dims, payload) = parse(path, &bytes, IMAGES_MAGIC, "image")?;
    Ok((dims[1], dims[2], payload))
}

/// Reads an IDX label file: N bytes.
pub fn read_labels(path: &Path) -> Result<Vec<u8>> {
    let bytes = read_maybe_gzip(path)?;
    Ok(parse(path, &bytes, LABELS_MAGIC, "label")?.1)
}

/// Loads IDX images (and labels, when given) as a one-channel [`Dataset`]. The class names
/// are the label numbers as text ("0", "1", …, up to the largest label).
pub fn load(images: &Path, labels: Option<&Path>) -> Result<Dataset> {
    let (h, w, bytes) = read_images(images)?;
    let shape = ImageShape::new(h, w, 1);
    let n = if shape.dim() == 0 {
        0
    } else {
        bytes.len() / shape.dim()
    };
    if n == 0 {
        return Err(Error::data(
            images,
            format!("holds no images (header dimensions {n}×{h}×{w}); fslens needs at least one"),
        ));
    }
    let table = u8_pixel_table();
    let pixels: Vec<f32> = bytes.iter().map(|&k| table[k as usize]).collect();
    let (labels, class_names) = match labels {
        Some(lp) => {
            let l = read_labels(lp)?;
            if l.len() != n {
                return Err(Error::data(
                    lp,
                    format!(
                        "holds {} labels but the images file {} holds {n} images; pass the label file that belongs to it",
                        l.len(),
                        images.display()
                    ),
                ));
            }
            let k = l.iter().copied().max().map_or(0, |m| m as usize + 1);
            (
                Some(l.into_iter().map(u32::from).collect()),
                Some((0..k).map(|c| c.to_string()).collect()),
            )
        }
        None => (None, None),
    };
    Ok(Dataset {
        source: images.display().to_string(),
        shape,
        images: pixels,
        labels,
        class_names,
        eight_bit: true,
    })
}

/// `dir/stem` with `.gz` when that exists, else the plain file (whose absence the loader
/// then reports).
fn find(dir: &Path, stem: &str) -> PathBuf {
    let gz = dir.join(format!("{stem}.gz"));
    if gz.exists() { gz } else { dir.join(stem) }
}

/// Fashion-MNIST from `dir` (the four `*-idx?-ubyte[.gz]` files): `test = false` gives the
/// 60000 training images, `test = true` the 10000 test images, with labels and class names.
pub fn fashion_mnist(dir: &Path, test: bool) -> Result<Dataset> {
    let prefix = if test { "t10k" } else { "train" };
    let images = find(dir, &format!("{prefix}-images-idx3-ubyte"));
    let labels = find(dir, &format!("{prefix}-labels-idx1-ubyte"));
    if !images.exists() {
        return Err(Error::data(
            &images,
            format!(
                "Fashion-MNIST file not found in {}; install Debian's dataset-fashion-mnist package or set data.path to the folder holding {prefix}-images-idx3-ubyte.gz",
                dir.display()
            ),
        ));
    }
    let mut ds = load(&images, Some(&labels))?;
    if ds.class_names.as_ref().is_some_and(|c| c.len() > 10) {
        return Err(Error::data(
            &labels,
            "holds labels above 9; Fashion-MNIST has 10 classes",
        ));
    }
    ds.class_names = Some(
        FASHION_MNIST_CLASSES
            .iter()
            .map(|s| s.to_string())
            .collect(),
    );
    ds.source = format!(
        "fashion-mnist:{}:{}",
        if test { "test" } else { "train" },
        dir.display()
    );
    Ok(ds)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::data::pixel_from_u8;
    use crate::data::testutil::tmpdir;
    use std::io::Write;

    /// IDX bytes: magic, big-endian dimensions, payload.
    pub fn idx_bytes(magic: u32, dims: &[u32], payload: &[u8]) -> Vec<u8> {
        let mut v = magic.to_be_bytes().to_vec();
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend_from_slice(payload);
        v
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn loads_plain_and_gzip_every_pixel() {
        let d = tmpdir("idx-ok");
        let (n, h, w) = (5usize, 3usize, 4usize);
        let pix: Vec<u8> = (0..n * h * w)
            .map(|i| ((i * 37 + 11) % 256) as u8)
            .collect();
        let lab: Vec<u8> = vec![2, 0, 1, 2, 2];
        let img = idx_bytes(IMAGES_MAGIC, &[n as u32, h as u32, w as u32], &pix);
        let lbl = idx_bytes(LABELS_MAGIC, &[n as u32], &lab);
        // Deliberately misleading names: gzip is found by magic bytes.
        std::fs::write(d.join("plain.gz"), &img).unwrap();
        std::fs::write(d.join("zipped.idx"), gzip(&img)).unwrap();
        std::fs::write(d.join("labels"), gzip(&lbl)).unwrap();
        for name in ["plain.gz", "zipped.idx"] {
            let ds = load(&d.join(name), Some(&d.join("labels"))).unwrap();
            assert_eq!(ds.shape, ImageShape::new(h, w, 1));
            assert_eq!(ds.len(), n);
            assert!(ds.eight_bit);
            for (i, &k) in pix.iter().enumerate() {
                let want = (2.0 * k as f64 / 255.0 - 1.0) as f32;
                assert_eq!(ds.images[i], want, "pixel {i}");
                assert_eq!(ds.images[i], pixel_from_u8(k));
            }
            assert_eq!(ds.labels.as_deref(), Some(&[2u32, 0, 1, 2, 2][..]));
            assert_eq!(ds.class_names.as_ref().unwrap(), &["0", "1", "2"]);
            assert_eq!(ds.label_counts().unwrap(), vec![1, 1, 3]);
        }
        // Without labels.
        let ds = load(&d.join("plain.gz"), None).unwrap();
        assert!(ds.labels.is_none() && ds.class_names.is_none());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn bad_files_name_the_file() {
        let d = tmpdir("idx-bad");
        let pix = vec![7u8; 2 * 2 * 2];
        let img = idx_bytes(IMAGES_MAGIC, &[2, 2, 2], &pix);
        let lbl3 = idx_bytes(LABELS_MAGIC, &[3], &[0, 1, 2]);

        // Wrong magic (a label file passed as images, and junk).
        std::fs::write(d.join("labels-as-images"), &lbl3).unwrap();
        let e = load(&d.join("labels-as-images"), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("labels-as-images") && e.contains("magic") && e.contains("label file"),
            "{e}"
        );
        std::fs::write(d.join("junk.bin"), b"\x89PNG....").unwrap();
        let e = load(&d.join("junk.bin"), None).unwrap_err().to_string();
        assert!(e.contains("junk.bin") && e.contains("0x00000803"), "{e}");

        // Truncated payload, plain and gzipped; and a truncated gzip stream.
        std::fs::write(d.join("trunc-images"), &img[..img.len() - 3]).unwrap();
        let e = load(&d.join("trunc-images"), None).unwrap_err().to_string();
        assert!(e.contains("trunc-images") && e.contains("truncated"), "{e}");
        std::fs::write(d.join("trunc-gz"), gzip(&img[..img.len() - 1])).unwrap();
        let e = load(&d.join("trunc-gz"), None).unwrap_err().to_string();
        assert!(e.contains("trunc-gz") && e.contains("truncated"), "{e}");
        let z = gzip(&img);
        std::fs::write(d.join("cut-stream.gz"), &z[..z.len() / 2]).unwrap();
        let e = load(&d.join("cut-stream.gz"), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cut-stream.gz") && e.contains("gzip"), "{e}");
        // Truncated header.
        std::fs::write(d.join("short-header"), &img[..9]).unwrap();
        let e = load(&d.join("short-header"), None).unwrap_err().to_string();
        assert!(e.contains("short-header") && e.contains("truncated"), "{e}");

        // Count mismatch between images and labels.
        std::fs::write(d.join("images"), &img).unwrap();
        std::fs::write(d.join("labels3"), &lbl3).unwrap();
        let e = load(&d.join("images"), Some(&d.join("labels3")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("labels3") && e.contains("3 labels") && e.contains("2 images"),
            "{e}"
        );

        // Missing file; zero images.
        let e = load(&d.join("nope"), None).unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
        std::fs::write(d.join("empty"), idx_bytes(IMAGES_MAGIC, &[0, 28, 28], &[])).unwrap();
        let e = load(&d.join("empty"), None).unwrap_err().to_string();
        assert!(e.contains("empty") && e.contains("no images"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// The Fashion-MNIST folder, or `None` (with a printed reason) when it is absent and
    /// FSLENS_REQUIRE_DATA is not 1.
    pub fn fashion_dir() -> Option<PathBuf> {
        let dir = std::env::var_os("FSLENS_FASHION_MNIST")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(FASHION_MNIST_DIR));
        if dir.join("train-images-idx3-ubyte.gz").exists()
            || dir.join("train-images-idx3-ubyte").exists()
        {
            return Some(dir);
        }
        if std::env::var("FSLENS_REQUIRE_DATA").as_deref() == Ok("1") {
            panic!(
                "Fashion-MNIST not found in {} and FSLENS_REQUIRE_DATA=1",
                dir.display()
            );
        }
        eprintln!("skipping: Fashion-MNIST not found in {}", dir.display());
        None
    }

    #[test]
    fn fashion_mnist_real() {
        let Some(dir) = fashion_dir() else { return };
        let t0 = std::time::Instant::now();
        let train = fashion_mnist(&dir, false).unwrap();
        eprintln!("fashion-mnist train load: {:?}", t0.elapsed());
        assert_eq!(train.len(), 60000);
        assert_eq!(train.shape, ImageShape::new(28, 28, 1));
        assert!(train.eight_bit);
        assert_eq!(train.label_counts().unwrap(), vec![6000; 10]);
        let names = train.class_names.as_ref().unwrap();
        let first = train.labels.as_ref().unwrap()[0];
        assert_eq!(first, 9);
        assert_eq!(names[first as usize], "Ankle boot");
        let (lo, hi) = train
            .images
            .iter()
            .fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        assert_eq!((lo, hi), (-1.0, 1.0));
        assert!(crate::data::all_eight_bit(&train.images[..784 * 100]));

        let test = fashion_mnist(&dir, true).unwrap();
        assert_eq!(test.len(), 10000);
        assert_eq!(test.label_counts().unwrap(), vec![1000; 10]);
    }
}
