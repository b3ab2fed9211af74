//! Preprocessing: subset, centre crop, resize, grayscale. Each returns a new [`Dataset`].
//!
//! The 8-bit flag: crop and subset keep pixel values, so they keep `eight_bit`. Resize and
//! grayscale make weighted averages of pixels, which are in general not of the form
//! 2k/255 − 1; after them `eight_bit` is recomputed from the values (so it is false unless
//! every output value happens to be exactly 8-bit, e.g. an identity resize or a gray image).

use rand::SeedableRng;

use super::{Dataset, ImageShape, all_eight_bit};
use crate::{Error, Result};

/// The first `n` images (in order). Errors when `n` is 0 or exceeds N.
pub fn subset_first(ds: &Dataset, n: usize) -> Result<Dataset> {
    check_subset(ds, n)?;
    Ok(ds.select(&(0..n).collect::<Vec<_>>()))
}

/// `n` images drawn uniformly without replacement with a ChaCha8 generator seeded by `seed`,
/// kept in their original order. Errors when `n` is 0 or exceeds N.
pub fn subset_random(ds: &Dataset, n: usize, seed: u64) -> Result<Dataset> {
    check_subset(ds, n)?;
    Ok(ds.select(&random_indices(ds.len(), n, seed)))
}

/// `n` distinct indices of 0..len, uniform without replacement, sorted.
pub(crate) fn random_indices(len: usize, n: usize, seed: u64) -> Vec<usize> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut idx = rand::seq::index::sample(&mut rng, len, n).into_vec();
    idx.sort_unstable();
    idx
}

fn check_subset(ds: &Dataset, n: usize) -> Result<()> {
    if n == 0 || n > ds.len() {
        return Err(Error::input(format!(
            "a subset of {n} images is impossible from {} images; choose 1..={}",
            ds.len(),
            ds.len()
        )));
    }
    Ok(())
}

/// The centre `h`×`w` window of one HWC image: rows top..top+h with top = ⌊(H − h)/2⌋,
/// columns left..left+w with left = ⌊(W − w)/2⌋. Requires h ≤ H, w ≤ W.
pub fn crop_image(img: &[f32], shape: ImageShape, h: usize, w: usize) -> Vec<f32> {
    let (top, left, c) = (
        (shape.height - h) / 2,
        (shape.width - w) / 2,
        shape.channels,
    );
    let mut out = Vec::with_capacity(h * w * c);
    for r in top..top + h {
        let start = (r * shape.width + left) * c;
        out.extend_from_slice(&img[start..start + w * c]);
    }
    out
}

/// Centre crop of every image to `h`×`w` (see [`crop_image`]). Keeps `eight_bit`.
pub fn center_crop(ds: &Dataset, h: usize, w: usize) -> Result<Dataset> {
    if h == 0 || w == 0 || h > ds.shape.height || w > ds.shape.width {
        return Err(Error::input(format!(
            "cannot crop {h}x{w} from images of {}x{}; choose 1..={} rows and 1..={} columns",
            ds.shape.height, ds.shape.width, ds.shape.height, ds.shape.width
        )));
    }
    let mut images = Vec::with_capacity(ds.len() * h * w * ds.shape.channels);
    for i in 0..ds.len() {
        images.extend(crop_image(ds.image(i), ds.shape, h, w));
    }
    Ok(Dataset {
        shape: ImageShape::new(h, w, ds.shape.channels),
        images,
        ..ds.clone_meta()
    })
}

/// Resampling weights along one axis of `n_in` samples to `n_out`: for each output sample,
/// the (input index, weight) pairs, weights summing to 1.
/// - n_out < n_in: **area** (box) averaging. Output o covers the input interval
///   [o·n_in/n_out, (o+1)·n_in/n_out); input i weighs |[i, i+1) ∩ that interval| · n_out/n_in.
///   For an integer factor this is the plain block mean.
/// - n_out > n_in: **bilinear** with half-pixel centres (like PyTorch's
///   `align_corners=False`): x = (o + ½)·n_in/n_out − ½ clamped to [0, n_in − 1], then
///   (1 − f)·in[⌊x⌋] + f·in[⌊x⌋ + 1] with f = x − ⌊x⌋.
/// - n_out = n_in: identity.
pub fn axis_weights(n_in: usize, n_out: usize) -> Vec<Vec<(usize, f64)>> {
    let ratio = n_in as f64 / n_out as f64;
    (0..n_out)
        .map(|o| {
            if n_out == n_in {
                vec![(o, 1.0)]
            } else if n_out < n_in {
                let (lo, hi) = (o as f64 * ratio, (o + 1) as f64 * ratio);
                let first = lo.floor() as usize;
                let last = (hi.ceil() as usize).min(n_in);
                (first..last)
                    .filter_map(|i| {
                        let overlap = (hi.min(i as f64 + 1.0) - lo.max(i as f64)).max(0.0);
                        (overlap > 0.0).then_some((i, overlap / ratio))
                    })
                    .collect()
            } else {
                let x = ((o as f64 + 0.5) * ratio - 0.5).clamp(0.0, (n_in - 1) as f64);
                let i0 = x.floor() as usize;
                let f = x - i0 as f64;
                let i1 = (i0 + 1).min(n_in - 1);
                if f == 0.0 || i1 == i0 {
                    vec![(i0, 1.0)]
                } else {
                    vec![(i0, 1.0 - f), (i1, f)]
                }
            }
        })
        .collect()
}

/// One HWC image resized to `h`×`w`, separably with [`axis_weights`] along rows and columns,
/// accumulated in float64: out[r, c, k] = Σ_i Σ_j wr[r][i]·wc[c][j]·in[i, j, k].
pub fn resize_image(img: &[f32], shape: ImageShape, h: usize, w: usize) -> Vec<f32> {
    let wr = axis_weights(shape.height, h);
    let wc = axis_weights(shape.width, w);
    let ch = shape.channels;
    let mut out = vec![0f32; h * w * ch];
    let mut acc = vec![0f64; ch];
    for (r, row_w) in wr.iter().enumerate() {
        for (c, col_w) in wc.iter().enumerate() {
            acc.iter_mut().for_each(|a| *a = 0.0);
            for &(i, a) in row_w {
                for &(j, b) in col_w {
                    let src = &img[(i * shape.width + j) * ch..][..ch];
                    for k in 0..ch {
                        acc[k] += a * b * f64::from(src[k]);
                    }
                }
            }
            for k in 0..ch {
                out[(r * w + c) * ch + k] = acc[k] as f32;
            }
        }
    }
    out
}

/// Every image resized to `h`×`w` (area when shrinking, bilinear when enlarging, per axis;
/// see [`axis_weights`]). `eight_bit` is recomputed from the values.
pub fn resize(ds: &Dataset, h: usize, w: usize) -> Result<Dataset> {
    if h == 0 || w == 0 {
        return Err(Error::input(format!(
            "cannot resize to {h}x{w}; both sides must be at least 1"
        )));
    }
    if (h, w) == (ds.shape.height, ds.shape.width) {
        return Ok(ds.clone());
    }
    let mut images = Vec::with_capacity(ds.len() * h * w * ds.shape.channels);
    for i in 0..ds.len() {
        images.extend(resize_image(ds.image(i), ds.shape, h, w));
    }
    let eight_bit = ds.eight_bit && all_eight_bit(&images);
    Ok(Dataset {
        shape: ImageShape::new(h, w, ds.shape.channels),
        images,
        eight_bit,
        ..ds.clone_meta()
    })
}

/// ITU-R BT.601 luma weights for R, G, B.
pub const LUMA_601: [f64; 3] = [0.299, 0.587, 0.114];

/// Three-channel images to one channel: Y = 0.299·R + 0.587·G + 0.114·B (ITU-R BT.601),
/// applied to the [-1, 1] values directly (the weights sum to 1, so this equals mapping
/// the [0, 1] luma). One-channel sets come back unchanged; other channel counts are errors.
/// `eight_bit` is recomputed from the values.
pub fn grayscale(ds: &Dataset) -> Result<Dataset> {
    match ds.shape.channels {
        1 => Ok(ds.clone()),
        3 => {
            let images: Vec<f32> = ds
                .images
                .chunks_exact(3)
                .map(|p| {
                    (LUMA_601[0] * f64::from(p[0])
                        + LUMA_601[1] * f64::from(p[1])
                        + LUMA_601[2] * f64::from(p[2])) as f32
                })
                .collect();
            let eight_bit = ds.eight_bit && all_eight_bit(&images);
            Ok(Dataset {
                shape: ImageShape::new(ds.shape.height, ds.shape.width, 1),
                images,
                eight_bit,
                ..ds.clone_meta()
            })
        }
        c => Err(Error::input(format!(
            "grayscale needs 1 or 3 channels, the images have {c}"
        ))),
    }
}

impl Dataset {
    /// Everything but the pixels (for building a transformed copy).
    fn clone_meta(&self) -> Dataset {
        Dataset {
            source: self.source.clone(),
            shape: self.shape,
            images: Vec::new(),
            labels: self.labels.clone(),
            class_names: self.class_names.clone(),
            eight_bit: self.eight_bit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::pixel_from_u8;

    fn ds(shape: ImageShape, images: Vec<f32>, labels: Option<Vec<u32>>) -> Dataset {
        Dataset {
            source: "test".into(),
            shape,
            eight_bit: all_eight_bit(&images),
            images,
            labels,
            class_names: None,
        }
    }

    #[test]
    fn crop_by_hand() {
        // Two 4x5x1 images with values 100·i + 10·r + c (not in [-1,1]; crop does not care).
        let shape = ImageShape::new(4, 5, 1);
        let img: Vec<f32> = (0..2)
            .flat_map(|i| {
                (0..4).flat_map(move |r| (0..5).map(move |c| (100 * i + 10 * r + c) as f32))
            })
            .collect();
        let d = ds(shape, img, Some(vec![1, 0]));
        let c = center_crop(&d, 2, 3).unwrap();
        // top = (4-2)/2 = 1, left = (5-3)/2 = 1.
        assert_eq!(c.shape, ImageShape::new(2, 3, 1));
        assert_eq!(c.image(0), &[11., 12., 13., 21., 22., 23.]);
        assert_eq!(c.image(1), &[111., 112., 113., 121., 122., 123.]);
        assert_eq!(c.labels, Some(vec![1, 0]));
        // Odd margin rounds the top/left margin down: 3 of 4 rows → top 0.
        let c = center_crop(&d, 3, 5).unwrap();
        assert_eq!(&c.image(0)[..5], &[0., 1., 2., 3., 4.]);
        assert!(
            center_crop(&d, 5, 1)
                .unwrap_err()
                .to_string()
                .contains("4x5")
        );
        assert!(center_crop(&d, 0, 1).is_err());
    }

    #[test]
    fn crop_keeps_channels_and_eight_bit() {
        let shape = ImageShape::new(3, 3, 3);
        let img: Vec<f32> = (0..27).map(|k| pixel_from_u8(k as u8 * 9)).collect();
        let d = ds(shape, img.clone(), None);
        assert!(d.eight_bit);
        let c = center_crop(&d, 1, 1).unwrap();
        assert_eq!(c.images, img[12..15].to_vec());
        assert!(c.eight_bit);
    }

    #[test]
    fn area_downsample_by_hand() {
        // 4x4 → 2x2: block means.
        let shape = ImageShape::new(4, 4, 1);
        let v: Vec<f32> = (0..16).map(|k| k as f32 / 16.0).collect();
        let d = ds(shape, v, None);
        let r = resize(&d, 2, 2).unwrap();
        let m = |a: usize, b: usize, c: usize, e: usize| (a + b + c + e) as f32 / 64.0;
        assert_eq!(
            r.images,
            vec![
                m(0, 1, 4, 5),
                m(2, 3, 6, 7),
                m(8, 9, 12, 13),
                m(10, 11, 14, 15)
            ]
        );
        // 3 → 2 along one axis: out0 = in0 + ½in1 over 1.5, out1 = ½in1 + in2 over 1.5.
        let d = ds(ImageShape::new(1, 3, 1), vec![0.3, -0.6, 0.9], None);
        let r = resize(&d, 1, 2).unwrap();
        let want = [(0.3 - 0.3) / 1.5, (-0.3 + 0.9) / 1.5];
        for (a, b) in r.images.iter().zip(want) {
            assert!((f64::from(*a) - b).abs() < 1e-7, "{a} vs {b}");
        }
    }

    #[test]
    fn bilinear_upsample_by_hand() {
        // 1x2 → 1x4, half-pixel centres: x = -0.25, 0.25, 0.75, 1.25 → clamp.
        let d = ds(ImageShape::new(1, 2, 1), vec![-1.0, 1.0], None);
        let r = resize(&d, 1, 4).unwrap();
        assert_eq!(r.images, vec![-1.0, -0.5, 0.5, 1.0]);
        assert!(!r.eight_bit);
        // 2x2x3 → 4x4x3 separable: corner pixels keep their values; (1,1) = 9/16 a + 3/16 b + 3/16 c + 1/16 d.
        let px = [
            [0.1f32, 0.2, 0.3],
            [0.4, 0.5, 0.6],
            [-0.1, -0.2, -0.3],
            [0.7, -0.8, 0.9],
        ];
        let d = ds(ImageShape::new(2, 2, 3), px.concat(), None);
        let r = resize(&d, 4, 4).unwrap();
        assert_eq!(r.shape, ImageShape::new(4, 4, 3));
        #[allow(clippy::needless_range_loop)] // k indexes four arrays at once
        for k in 0..3 {
            assert_eq!(r.images[k], px[0][k]);
            assert_eq!(r.images[(15 * 3) + k], px[3][k]);
            let want = 9.0 / 16.0 * f64::from(px[0][k])
                + 3.0 / 16.0 * f64::from(px[1][k])
                + 3.0 / 16.0 * f64::from(px[2][k])
                + 1.0 / 16.0 * f64::from(px[3][k]);
            assert!((f64::from(r.images[(4 + 1) * 3 + k]) - want).abs() < 1e-7);
        }
        // Identity keeps everything.
        let e = ds(
            ImageShape::new(1, 2, 1),
            vec![pixel_from_u8(0), pixel_from_u8(255)],
            None,
        );
        assert!(resize(&e, 1, 2).unwrap().eight_bit);
    }

    #[test]
    fn grayscale_601() {
        let rgb = [
            pixel_from_u8(255),
            pixel_from_u8(0),
            pixel_from_u8(51),
            pixel_from_u8(10),
            pixel_from_u8(20),
            pixel_from_u8(30),
        ];
        let d = ds(ImageShape::new(1, 2, 3), rgb.to_vec(), Some(vec![4]));
        let g = grayscale(&d).unwrap();
        assert_eq!(g.shape, ImageShape::new(1, 2, 1));
        // In [0,255]: Y = 0.299·255 + 0.114·51 = 82.059; 0.299·10 + 0.587·20 + 0.114·30 = 18.15.
        for (y, y255) in g.images.iter().zip([82.059f64, 18.15]) {
            assert!(
                (f64::from(*y) - (2.0 * y255 / 255.0 - 1.0)).abs() < 1e-6,
                "{y}"
            );
        }
        assert!(!g.eight_bit);
        assert_eq!(g.labels, Some(vec![4]));
        // One channel is a no-op; two channels are an error.
        let one = ds(ImageShape::new(1, 1, 1), vec![0.5], None);
        assert_eq!(grayscale(&one).unwrap().images, vec![0.5]);
        let two = ds(ImageShape::new(1, 1, 2), vec![0.5, 0.5], None);
        assert!(grayscale(&two).is_err());
    }

    #[test]
    fn subsets() {
        let d = ds(
            ImageShape::new(1, 1, 1),
            (0..10).map(|k| k as f32 / 10.0).collect(),
            Some((0..10).collect()),
        );
        let f = subset_first(&d, 3).unwrap();
        assert_eq!(f.labels, Some(vec![0, 1, 2]));
        assert_eq!(f.images, vec![0.0, 0.1, 0.2]);
        let a = subset_random(&d, 6, 7).unwrap();
        let b = subset_random(&d, 6, 7).unwrap();
        let c = subset_random(&d, 6, 8).unwrap();
        assert_eq!(a.labels, b.labels);
        assert_ne!(a.labels, c.labels);
        let l = a.labels.unwrap();
        assert!(
            l.windows(2).all(|w| w[0] < w[1]),
            "sorted and distinct: {l:?}"
        );
        for (i, &li) in l.iter().enumerate() {
            assert_eq!(a.images[i], li as f32 / 10.0);
        }
        assert!(
            subset_first(&d, 11)
                .unwrap_err()
                .to_string()
                .contains("1..=10")
        );
        assert!(subset_random(&d, 0, 1).is_err());
        // Drawing all of them is the identity.
        assert_eq!(subset_random(&d, 10, 3).unwrap().labels, d.labels);
    }
}
