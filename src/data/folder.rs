//! A folder of PNG/JPEG images (`.png`, `.jpg`, `.jpeg`, any case; other files are ignored).
//!
//! Either all images lie directly in the folder (no labels), or they lie in sub-folders, one
//! per class: the labels are the indices of the sorted sub-folder names, which become the
//! class names. Files are read in sorted name order. Gray images give C = 1, colour images
//! C = 3 (alpha is dropped; 16-bit images are reduced to 8 bits); when a folder mixes gray
//! and colour images, the gray ones are repeated into three equal channels.
//!
//! Crop and resize (the `data.crop` / `data.resize` keys) are applied to each image as it is
//! read, so a folder of differently sized images can be brought to one size; all images must
//! have the same size after that.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::preprocess::{crop_image, resize_image};
use super::{Dataset, ImageShape, all_eight_bit, u8_pixel_table};
use crate::{Error, Result};

/// Per-image geometry applied while reading (see the module notes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FolderOptions {
    /// Centre crop to [height, width] (must fit every image).
    pub crop: Option<[usize; 2]>,
    /// Resize to [height, width] after the crop (area when shrinking, bilinear when
    /// enlarging; see [`super::preprocess::axis_weights`]).
    pub resize: Option<[usize; 2]>,
}

fn is_image(p: &Path) -> bool {
    p.is_file()
        && p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

/// Sorted entries of `dir` (files and folders).
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .map(|e| e.map(|e| e.path()).map_err(|e| Error::io(dir, e)))
        .collect::<Result<_>>()?;
    v.sort();
    Ok(v)
}

/// One decoded image: 8-bit samples, HWC, `channels` 1 or 3.
struct Decoded {
    height: usize,
    width: usize,
    channels: usize,
    bytes: Vec<u8>,
}

fn decode(path: &Path) -> Result<Decoded> {
    let img = image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?
        .decode()
        .map_err(|e| {
            Error::data(
                path,
                format!("cannot decode as PNG or JPEG ({e}); remove the file or fix it"),
            )
        })?;
    let (width, height) = (img.width() as usize, img.height() as usize);
    if img.color().has_color() {
        Ok(Decoded {
            height,
            width,
            channels: 3,
            bytes: img.to_rgb8().into_raw(),
        })
    } else {
        Ok(Decoded {
            height,
            width,
            channels: 1,
            bytes: img.to_luma8().into_raw(),
        })
    }
}

/// How the files are decoded: on rayon's threads (the default) or on one thread. Both give
/// the same data set bit for bit (files are decoded independently and kept in sorted order);
/// serial decoding is there to check that and to measure the speed-up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Decoding {
    #[default]
    Parallel,
    Serial,
}

/// Files decoded between two progress reports: large enough that a report's pause for the
/// slowest thread costs little, small enough that a bar moves on a 10⁵-file folder.
const CHUNK: usize = 256;

/// Loads every image of `dir` (see the module notes) into one [`Dataset`].
pub fn load(dir: &Path, opts: &FolderOptions) -> Result<Dataset> {
    load_with(dir, opts, Decoding::Parallel, &mut |_, _| {})
}

/// [`load`] that reports `progress(done, total)` files decoded, on this thread.
pub fn load_with_progress(
    dir: &Path,
    opts: &FolderOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Dataset> {
    load_with(dir, opts, Decoding::Parallel, progress)
}

/// The images of `dir` and their labels: sorted files directly in it (unlabelled), or in its
/// class sub-folders (labelled by the sorted sub-folder's index); the class names.
type Listing = (Vec<(PathBuf, Option<u32>)>, Vec<String>);

fn list_files(dir: &Path) -> Result<Listing> {
    if !dir.is_dir() {
        return Err(Error::data(
            dir,
            "is not a folder; data.path for kind = \"folder\" must name a folder of PNG/JPEG images",
        ));
    }
    let entries = sorted_entries(dir)?;
    let top: Vec<PathBuf> = entries.iter().filter(|p| is_image(p)).cloned().collect();
    let mut classes: Vec<(String, Vec<PathBuf>)> = Vec::new();
    for sub in entries.iter().filter(|p| p.is_dir()) {
        let files: Vec<PathBuf> = sorted_entries(sub)?
            .into_iter()
            .filter(|p| is_image(p))
            .collect();
        if !files.is_empty() {
            let name = sub
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            classes.push((name, files));
        }
    }
    if !classes.is_empty() && !top.is_empty() {
        return Err(Error::data(
            &top[0],
            format!(
                "lies beside class sub-folders ({} …) of {}; move every image into its class's sub-folder, or all out of sub-folders for an unlabelled set",
                classes[0].0,
                dir.display()
            ),
        ));
    }
    let files: Vec<(PathBuf, Option<u32>)> = if classes.is_empty() {
        top.into_iter().map(|p| (p, None)).collect()
    } else {
        classes
            .iter()
            .enumerate()
            .flat_map(|(c, (_, fs))| fs.iter().map(move |p| (p.clone(), Some(c as u32))))
            .collect()
    };
    if files.is_empty() {
        return Err(Error::data(
            dir,
            "holds no PNG or JPEG images (.png, .jpg, .jpeg), neither directly nor in sub-folders; the data set is empty",
        ));
    }
    Ok((files, classes.into_iter().map(|(n, _)| n).collect()))
}

/// Decodes `files` in chunks of [`CHUNK`] (each on rayon's threads when parallel),
/// reporting after each; the first error in file order stops it.
fn decode_files(
    files: &[(PathBuf, Option<u32>)],
    decoding: Decoding,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<Decoded>> {
    let mut decoded = Vec::with_capacity(files.len());
    progress(0, files.len());
    for chunk in files.chunks(CHUNK) {
        let part: Vec<Result<Decoded>> = match decoding {
            Decoding::Parallel => chunk.par_iter().map(|(p, _)| decode(p)).collect(),
            Decoding::Serial => chunk.iter().map(|(p, _)| decode(p)).collect(),
        };
        for d in part {
            decoded.push(d?);
        }
        progress(decoded.len(), files.len());
    }
    Ok(decoded)
}

/// The shape of one decoded image after `opts`' crop and resize, and whether it is
/// resampled; an error naming the file (or the key) when the crop does not fit.
fn out_shape(
    path: &Path,
    d: &Decoded,
    channels: usize,
    opts: &FolderOptions,
) -> Result<(ImageShape, bool)> {
    let mut s = ImageShape::new(d.height, d.width, channels);
    if let Some([h, w]) = opts.crop {
        if h == 0 || w == 0 || h > s.height || w > s.width {
            return Err(Error::data(
                path,
                format!(
                    "image of {}x{} is smaller than data.crop = [{h}, {w}]; choose a crop that fits every image",
                    s.height, s.width
                ),
            ));
        }
        s = ImageShape::new(h, w, channels);
    }
    if let Some([h, w]) = opts.resize {
        if h == 0 || w == 0 {
            return Err(Error::config(
                "data.resize",
                format!("[{h}, {w}] is empty; both sides must be at least 1"),
            ));
        }
        if (h, w) != (s.height, s.width) {
            return Ok((ImageShape::new(h, w, channels), true));
        }
    }
    Ok((s, false))
}

/// One decoded image as pixels of `channels` channels, cropped and resized as `opts` say
/// (already checked by [`out_shape`]).
fn pixels(d: &Decoded, channels: usize, opts: &FolderOptions) -> Vec<f32> {
    let table = u8_pixel_table();
    let mut s = ImageShape::new(d.height, d.width, channels);
    let mut px: Vec<f32> = if d.channels == channels {
        d.bytes.iter().map(|&k| table[k as usize]).collect()
    } else {
        d.bytes
            .iter()
            .flat_map(|&k| [table[k as usize]; 3])
            .collect()
    };
    if let Some([h, w]) = opts.crop {
        px = crop_image(&px, s, h, w);
        s = ImageShape::new(h, w, channels);
    }
    if let Some([h, w]) = opts.resize
        && (h, w) != (s.height, s.width)
    {
        px = resize_image(&px, s, h, w);
    }
    px
}

/// [`load`] with the decoding mode and a progress callback (`progress(done, total)` files,
/// called on this thread between chunks).
pub fn load_with(
    dir: &Path,
    opts: &FolderOptions,
    decoding: Decoding,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Dataset> {
    let (files, class_names) = list_files(dir)?;
    assemble(dir, &files, class_names, opts, decoding, progress)
}

/// Decodes `files` and assembles the data set: shapes checked in file order (the first odd
/// one is named), then pixels converted into their rows.
fn assemble(
    dir: &Path,
    files: &[(PathBuf, Option<u32>)],
    class_names: Vec<String>,
    opts: &FolderOptions,
    decoding: Decoding,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Dataset> {
    let decoded = decode_files(files, decoding, progress)?;
    let channels = if decoded.iter().any(|d| d.channels == 3) {
        3
    } else {
        1
    };
    let mut shape: Option<(ImageShape, &Path)> = None;
    let mut resized = false;
    for ((path, _), d) in files.iter().zip(&decoded) {
        let (s, r) = out_shape(path, d, channels, opts)?;
        resized |= r;
        match &shape {
            None => shape = Some((s, path)),
            Some((first, first_path)) if *first != s => {
                return Err(Error::data(
                    path,
                    format!(
                        "is {}x{} but {} is {}x{}; all images of a folder must have one size: set data.resize = [{}, {}] (or data.crop) to bring them to one size",
                        s.height,
                        s.width,
                        first_path.display(),
                        first.height,
                        first.width,
                        first.height,
                        first.width
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    let shape = shape.expect("at least one image").0;
    let mut images = vec![0f32; files.len() * shape.dim()];
    let fill = |(row, d): (&mut [f32], &Decoded)| row.copy_from_slice(&pixels(d, channels, opts));
    match decoding {
        Decoding::Parallel => images
            .par_chunks_mut(shape.dim())
            .zip(&decoded)
            .for_each(fill),
        Decoding::Serial => images.chunks_mut(shape.dim()).zip(&decoded).for_each(fill),
    }
    let labelled = !class_names.is_empty();
    let eight_bit = !resized || all_eight_bit(&images);
    Ok(Dataset {
        source: dir.display().to_string(),
        shape,
        images,
        labels: labelled.then(|| files.iter().map(|(_, l)| l.unwrap_or(0)).collect()),
        class_names: labelled.then_some(class_names),
        eight_bit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::pixel_from_u8;
    use crate::data::testutil::tmpdir;

    fn gray(w: u32, h: u32, seed: u32) -> image::GrayImage {
        image::GrayImage::from_fn(w, h, |x, y| {
            image::Luma([((x * 31 + y * 7 + seed) % 256) as u8])
        })
    }

    #[test]
    fn unlabelled_gray_every_pixel() {
        let d = tmpdir("folder-gray");
        gray(5, 3, 0).save(d.join("b.png")).unwrap();
        gray(5, 3, 100).save(d.join("a.PNG")).unwrap();
        std::fs::write(d.join("notes.txt"), "not an image").unwrap();
        let ds = load(&d, &FolderOptions::default()).unwrap();
        assert_eq!(ds.shape, ImageShape::new(3, 5, 1));
        assert_eq!(ds.len(), 2);
        assert!(ds.labels.is_none() && ds.eight_bit);
        // Sorted names: a.PNG (seed 100) first.
        for (i, seed) in [(0usize, 100u32), (1, 0)] {
            for y in 0..3u32 {
                for x in 0..5u32 {
                    let k = ((x * 31 + y * 7 + seed) % 256) as u8;
                    let want = (2.0 * k as f64 / 255.0 - 1.0) as f32;
                    assert_eq!(ds.image(i)[(y * 5 + x) as usize], want);
                }
            }
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn labelled_colour_rgba_and_mixed() {
        let d = tmpdir("folder-rgb");
        std::fs::create_dir_all(d.join("zebra")).unwrap();
        std::fs::create_dir_all(d.join("apple")).unwrap();
        std::fs::create_dir_all(d.join("empty-class")).unwrap();
        let rgba =
            image::RgbaImage::from_fn(2, 2, |x, y| image::Rgba([x as u8 * 50, y as u8 * 60, 7, 3]));
        rgba.save(d.join("zebra/z1.png")).unwrap();
        gray(2, 2, 9).save(d.join("apple/a1.png")).unwrap();
        let rgb = image::RgbImage::from_fn(2, 2, |x, y| image::Rgb([200, x as u8, y as u8]));
        rgb.save(d.join("apple/a2.png")).unwrap();
        let ds = load(&d, &FolderOptions::default()).unwrap();
        assert_eq!(ds.shape, ImageShape::new(2, 2, 3));
        assert_eq!(ds.class_names.as_ref().unwrap(), &["apple", "zebra"]);
        assert_eq!(ds.labels.as_deref(), Some(&[0u32, 0, 1][..]));
        // Gray repeated into 3 channels.
        let k = 31 + 9; // pixel (x=1, y=0): 31·1 + 7·0 + seed 9
        assert_eq!(&ds.image(0)[3..6], &[pixel_from_u8(k); 3]);
        // RGB as is.
        assert_eq!(
            &ds.image(1)[9..12],
            &[pixel_from_u8(200), pixel_from_u8(1), pixel_from_u8(1)]
        );
        // RGBA: alpha dropped, colour kept (x=1, y=1).
        assert_eq!(
            &ds.image(2)[9..12],
            &[pixel_from_u8(50), pixel_from_u8(60), pixel_from_u8(7)]
        );
        assert!(ds.eight_bit);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn jpeg_loads() {
        let d = tmpdir("folder-jpeg");
        let img = image::RgbImage::from_fn(8, 6, |_, _| image::Rgb([120, 120, 120]));
        img.save(d.join("x.jpg")).unwrap();
        let ds = load(&d, &FolderOptions::default()).unwrap();
        assert_eq!(ds.len(), 1);
        // JPEG is lossy but a flat gray image survives within a couple of levels; a gray
        // JPEG written from RGB may decode as colour or gray depending on the encoder.
        assert_eq!((ds.shape.height, ds.shape.width), (6, 8));
        for &v in &ds.images {
            assert!((v - pixel_from_u8(120)).abs() <= 3.0 * 2.0 / 255.0, "{v}");
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn size_mismatch_crop_resize_and_empty() {
        let d = tmpdir("folder-mismatch");
        gray(6, 4, 0).save(d.join("a.png")).unwrap();
        gray(8, 4, 0).save(d.join("b.png")).unwrap();
        let e = load(&d, &FolderOptions::default()).unwrap_err().to_string();
        assert!(
            e.contains("b.png")
                && e.contains("4x8")
                && e.contains("4x6")
                && e.contains("data.resize"),
            "{e}"
        );
        // A crop that fits both brings them to one size (and keeps 8-bit values).
        let opts = FolderOptions {
            crop: Some([4, 6]),
            resize: None,
        };
        let ds = load(&d, &opts).unwrap();
        assert_eq!(ds.shape, ImageShape::new(4, 6, 1));
        assert!(ds.eight_bit);
        // b cropped: columns 1..7 of b.
        assert_eq!(ds.image(1)[0], pixel_from_u8(31));
        // Resize brings them to one size too.
        let opts = FolderOptions {
            crop: None,
            resize: Some([2, 3]),
        };
        let ds = load(&d, &opts).unwrap();
        assert_eq!(ds.shape, ImageShape::new(2, 3, 1));
        // A crop larger than an image names the image and the key.
        let opts = FolderOptions {
            crop: Some([5, 5]),
            resize: None,
        };
        let e = load(&d, &opts).unwrap_err().to_string();
        assert!(e.contains("a.png") && e.contains("data.crop"), "{e}");

        // Empty folder (a non-image file only) and a missing folder.
        let empty = tmpdir("folder-empty");
        std::fs::write(empty.join("readme.txt"), "x").unwrap();
        let e = load(&empty, &FolderOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("folder-empty") && e.contains("empty"), "{e}");
        let e = load(&empty.join("missing"), &FolderOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing") && e.contains("not a folder"), "{e}");

        // Corrupt PNG names the file.
        std::fs::write(d.join("c.png"), b"\x89PNG\r\n\x1a\nbroken").unwrap();
        let e = load(
            &d,
            &FolderOptions {
                crop: Some([4, 6]),
                resize: None,
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("c.png") && e.contains("decode"), "{e}");
        // Images beside class folders.
        std::fs::remove_file(d.join("c.png")).unwrap();
        std::fs::create_dir_all(d.join("cls")).unwrap();
        gray(6, 4, 0).save(d.join("cls/x.png")).unwrap();
        let e = load(&d, &FolderOptions::default()).unwrap_err().to_string();
        assert!(e.contains("a.png") && e.contains("sub-folder"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
        std::fs::remove_dir_all(&empty).unwrap();
    }
}
