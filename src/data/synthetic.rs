//! Built-in synthetic image sets: seeded, multimodal, no files needed.
//!
//! - `shapes`: six classes — disk, square, triangle, ring, cross, bars (three horizontal
//!   bars) — each with a random centre (±12% of the side), size (radius 22–34% of the side),
//!   rotation (±15°), foreground level and background level.
//! - `glyphs`: ten digit-like stroke glyphs "0"…"9" drawn as polylines with a random
//!   affine jitter (scale, ±10° rotation, shear, shift), per-vertex wobble and stroke width.
//!
//! Rendering: each pixel's shape coverage is the fraction of a 4×4 grid of sub-samples that
//! falls inside, v = b + coverage·(f − b) + noise with background b ∈ [0, 0.2], foreground
//! f ∈ [0.65, 1], Gaussian noise of std 0.03, clamped to [0, 1] and quantised to 8 bits
//! (k = round(255·v)), so pixels are exactly 2k/255 − 1 and `eight_bit` is true. With three
//! channels the foreground takes a per-class colour (times f) and the background stays gray.
//!
//! Image i has label i mod K (exact class balance) and its own random stream
//! (ChaCha8 seeded by `seed`, stream i), so image i does not depend on the count.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use super::{Dataset, ImageShape, u8_pixel_table};
use crate::{Error, Result};

/// Which built-in set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Shapes,
    Glyphs,
}

impl Family {
    /// Parses "shapes" or "glyphs" (a config error on `data.synthetic` otherwise).
    pub fn parse(s: &str) -> Result<Family> {
        match s.trim() {
            "shapes" => Ok(Family::Shapes),
            "glyphs" => Ok(Family::Glyphs),
            other => Err(Error::config(
                "data.synthetic",
                format!("\"{other}\" is not a built-in set; use \"shapes\" or \"glyphs\""),
            )),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Family::Shapes => "shapes",
            Family::Glyphs => "glyphs",
        }
    }
    /// The class names, in label order.
    pub fn class_names(self) -> Vec<String> {
        match self {
            Family::Shapes => SHAPE_CLASSES.iter().map(|s| s.to_string()).collect(),
            Family::Glyphs => (0..10).map(|d| d.to_string()).collect(),
        }
    }
}

/// The `shapes` classes.
pub const SHAPE_CLASSES: [&str; 6] = ["disk", "square", "triangle", "ring", "cross", "bars"];

/// Smallest and largest image side.
pub const MIN_SIZE: usize = 16;
pub const MAX_SIZE: usize = 64;

/// Foreground colours (RGB in [0, 1]) per class for three-channel sets.
const COLOURS: [[f64; 3]; 10] = [
    [1.0, 0.25, 0.2],
    [0.2, 0.8, 0.25],
    [0.25, 0.4, 1.0],
    [1.0, 0.85, 0.15],
    [0.85, 0.25, 1.0],
    [0.15, 0.9, 0.95],
    [1.0, 0.55, 0.1],
    [0.6, 1.0, 0.5],
    [0.95, 0.5, 0.7],
    [0.7, 0.7, 1.0],
];

/// Sub-samples per pixel side.
const SUPERSAMPLE: usize = 4;
/// Background noise standard deviation, in [0, 1] units.
const NOISE_STD: f64 = 0.03;

/// Generates `count` images of side `size` (16..=64) with `channels` 1 or 3.
pub fn generate(
    family: Family,
    count: usize,
    size: usize,
    channels: usize,
    seed: u64,
) -> Result<Dataset> {
    if count == 0 {
        return Err(Error::config(
            "data.count",
            "0 images is an empty data set; choose at least 1 (default 2000)",
        ));
    }
    if !(MIN_SIZE..=MAX_SIZE).contains(&size) {
        return Err(Error::config(
            "data.size",
            format!(
                "{size} is outside {MIN_SIZE}..={MAX_SIZE}; choose a side in that range (default 16)"
            ),
        ));
    }
    if !matches!(channels, 1 | 3) {
        return Err(Error::config(
            "data.channels",
            format!("{channels} channels; choose 1 (gray, default) or 3 (per-class colours)"),
        ));
    }
    let names = family.class_names();
    let k = names.len();
    let table = u8_pixel_table();
    let shape = ImageShape::new(size, size, channels);
    let mut images = Vec::with_capacity(count * shape.dim());
    let mut labels = Vec::with_capacity(count);
    for i in 0..count {
        let class = i % k;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(i as u64);
        let coverage = match family {
            Family::Shapes => render_shape(class, size, &mut rng),
            Family::Glyphs => render_glyph(class, size, &mut rng),
        };
        let b: f64 = rng.random_range(0.0..0.2);
        let f: f64 = rng.random_range(0.65..1.0);
        let noise = Normal::new(0.0, NOISE_STD).expect("positive std");
        let colour = if channels == 3 {
            COLOURS[class]
        } else {
            [1.0; 3]
        };
        for &cov in &coverage {
            for &col in &colour[..channels] {
                let v = b + cov * (f * col - b) + noise.sample(&mut rng);
                let q = (255.0 * v.clamp(0.0, 1.0)).round() as usize;
                images.push(table[q]);
            }
        }
        labels.push(class as u32);
    }
    Ok(Dataset {
        source: format!(
            "synthetic:{}:{size}x{size}x{channels}:seed={seed}",
            family.name()
        ),
        shape,
        images,
        labels: Some(labels),
        class_names: Some(names),
        eight_bit: true,
    })
}

/// Coverage in [0, 1] of each of size² pixels by the set {p : inside(p)}, with pixel (r, c)
/// spanning [c, c+1)×[r, r+1) / size in unit coordinates (x right, y down).
fn coverage(size: usize, inside: impl Fn(f64, f64) -> bool) -> Vec<f64> {
    let n = SUPERSAMPLE;
    let mut out = Vec::with_capacity(size * size);
    for r in 0..size {
        for c in 0..size {
            let mut hits = 0usize;
            for a in 0..n {
                for b in 0..n {
                    let x = (c as f64 + (b as f64 + 0.5) / n as f64) / size as f64;
                    let y = (r as f64 + (a as f64 + 0.5) / n as f64) / size as f64;
                    hits += inside(x, y) as usize;
                }
            }
            out.push(hits as f64 / (n * n) as f64);
        }
    }
    out
}

/// Is (u, v) (shape frame: unit radius, v up) inside shape `class`?
fn inside_shape(class: usize, u: f64, v: f64) -> bool {
    match class {
        0 => u * u + v * v <= 1.0,
        1 => u.abs() <= 0.8 && v.abs() <= 0.8,
        2 => {
            // Triangle (0, 1), (−0.95, −0.7), (0.95, −0.7): above the base, inside both sides.
            let side =
                |ax: f64, ay: f64, bx: f64, by: f64| (bx - ax) * (v - ay) - (by - ay) * (u - ax);
            side(-0.95, -0.7, 0.95, -0.7) >= 0.0
                && side(0.95, -0.7, 0.0, 1.0) >= 0.0
                && side(0.0, 1.0, -0.95, -0.7) >= 0.0
        }
        3 => {
            let r2 = u * u + v * v;
            (0.55 * 0.55..=1.0).contains(&r2)
        }
        4 => (u.abs() <= 0.3 && v.abs() <= 1.0) || (v.abs() <= 0.3 && u.abs() <= 1.0),
        _ => u.abs() <= 1.0 && [-0.7, 0.0, 0.7].iter().any(|&c| (v - c).abs() <= 0.18),
    }
}

fn render_shape(class: usize, size: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let cx = 0.5 + rng.random_range(-0.12..0.12);
    let cy = 0.5 + rng.random_range(-0.12..0.12);
    let radius = rng.random_range(0.22..0.34);
    let theta: f64 = rng.random_range(-15f64..15.0).to_radians();
    let (s, c) = theta.sin_cos();
    coverage(size, |x, y| {
        // Image → shape frame: translate, rotate by −θ, scale, flip y so v points up.
        let (dx, dy) = ((x - cx) / radius, (cy - y) / radius);
        inside_shape(class, c * dx + s * dy, -s * dx + c * dy)
    })
}

/// Digit-like glyph strokes: polylines in a frame with x ∈ [−0.6, 0.6], y ∈ [−1, 1] (y up).
fn glyph_strokes(digit: usize) -> Vec<Vec<(f64, f64)>> {
    let ellipse = |cx: f64, cy: f64, rx: f64, ry: f64| -> Vec<(f64, f64)> {
        (0..=20)
            .map(|k| {
                let t = k as f64 / 20.0 * std::f64::consts::TAU;
                (cx + rx * t.cos(), cy + ry * t.sin())
            })
            .collect()
    };
    match digit {
        0 => vec![ellipse(0.0, 0.0, 0.5, 0.85)],
        1 => vec![
            vec![(-0.3, 0.55), (0.05, 0.9), (0.05, -0.9)],
            vec![(-0.3, -0.9), (0.4, -0.9)],
        ],
        2 => vec![vec![
            (-0.5, 0.5),
            (-0.3, 0.8),
            (0.1, 0.9),
            (0.45, 0.7),
            (0.5, 0.35),
            (0.3, 0.0),
            (-0.55, -0.9),
            (0.55, -0.9),
        ]],
        3 => vec![vec![
            (-0.5, 0.85),
            (0.5, 0.85),
            (0.0, 0.1),
            (0.4, -0.1),
            (0.5, -0.5),
            (0.2, -0.85),
            (-0.5, -0.8),
        ]],
        4 => vec![vec![(0.25, -0.9), (0.25, 0.9), (-0.55, -0.3), (0.55, -0.3)]],
        5 => vec![vec![
            (0.5, 0.85),
            (-0.4, 0.85),
            (-0.45, 0.1),
            (0.2, 0.15),
            (0.5, -0.2),
            (0.45, -0.65),
            (0.0, -0.9),
            (-0.5, -0.75),
        ]],
        6 => vec![vec![
            (0.4, 0.85),
            (-0.2, 0.5),
            (-0.5, -0.2),
            (-0.4, -0.75),
            (0.0, -0.9),
            (0.4, -0.7),
            (0.45, -0.3),
            (0.1, -0.05),
            (-0.45, -0.25),
        ]],
        7 => vec![vec![(-0.5, 0.85), (0.5, 0.85), (-0.1, -0.9)]],
        8 => vec![
            ellipse(0.0, 0.45, 0.38, 0.42),
            ellipse(0.0, -0.45, 0.45, 0.45),
        ],
        _ => vec![
            ellipse(0.0, 0.4, 0.42, 0.42),
            vec![(0.42, 0.4), (0.3, -0.9)],
        ],
    }
}

/// Distance from p to the segment a–b.
fn segment_distance(p: (f64, f64), a: (f64, f64), b: (f64, f64)) -> f64 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = dx * dx + dy * dy;
    let t = if len2 == 0.0 {
        0.0
    } else {
        (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / len2).clamp(0.0, 1.0)
    };
    let (qx, qy) = (a.0 + t * dx - p.0, a.1 + t * dy - p.1);
    (qx * qx + qy * qy).sqrt()
}

fn render_glyph(digit: usize, size: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let scale = rng.random_range(0.30..0.40);
    let theta: f64 = rng.random_range(-10f64..10.0).to_radians();
    let shear = rng.random_range(-0.15..0.15);
    let cx = 0.5 + rng.random_range(-0.08..0.08);
    let cy = 0.5 + rng.random_range(-0.06..0.06);
    let width = rng.random_range(0.045..0.075);
    let (s, c) = theta.sin_cos();
    // Glyph frame → image (x right, y down): wobble, shear, rotate, scale, translate.
    let strokes: Vec<Vec<(f64, f64)>> = glyph_strokes(digit)
        .into_iter()
        .map(|line| {
            line.into_iter()
                .map(|(u, v)| {
                    let u = u + rng.random_range(-0.06..0.06);
                    let v = v + rng.random_range(-0.06..0.06);
                    let u = u + shear * v;
                    let (ru, rv) = (c * u - s * v, s * u + c * v);
                    (cx + scale * ru, cy - scale * rv)
                })
                .collect()
        })
        .collect();
    coverage(size, |x, y| {
        strokes.iter().any(|line| {
            line.windows(2)
                .any(|w| segment_distance((x, y), w[0], w[1]) <= width)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::all_eight_bit;

    #[test]
    fn deterministic_balanced_eight_bit() {
        for family in [Family::Shapes, Family::Glyphs] {
            let a = generate(family, 60, 16, 1, 42).unwrap();
            let b = generate(family, 60, 16, 1, 42).unwrap();
            let c = generate(family, 60, 16, 1, 43).unwrap();
            assert_eq!(a.images, b.images, "{family:?}: same seed, same images");
            assert_ne!(a.images, c.images, "{family:?}: another seed, other images");
            assert!(a.eight_bit && all_eight_bit(&a.images));
            let k = family.class_names().len();
            assert_eq!(a.label_counts().unwrap(), vec![60 / k; k]);
            // Image i is the same whatever the count.
            let short = generate(family, 7, 16, 1, 42).unwrap();
            assert_eq!(short.images[..], a.images[..7 * 256]);
            // Distinct images within a set.
            assert_ne!(a.image(0), a.image(k));
        }
    }

    /// Classes are visibly distinct: a nearest-class-mean classifier built on one seed
    /// labels a set from another seed far above chance.
    #[test]
    fn classes_are_separable() {
        for family in [Family::Shapes, Family::Glyphs] {
            let train = generate(family, 600, 16, 1, 1).unwrap();
            let test = generate(family, 200, 16, 1, 2).unwrap();
            let k = family.class_names().len();
            let d = train.dim();
            let mut means = vec![vec![0f64; d]; k];
            for i in 0..train.len() {
                let l = train.labels.as_ref().unwrap()[i] as usize;
                for (m, &x) in means[l].iter_mut().zip(train.image(i)) {
                    *m += f64::from(x) / (train.len() / k) as f64;
                }
            }
            let correct = (0..test.len())
                .filter(|&i| {
                    let x = test.image(i);
                    let best = (0..k)
                        .min_by(|&a, &b| {
                            let da: f64 = means[a]
                                .iter()
                                .zip(x)
                                .map(|(m, &v)| (m - f64::from(v)).powi(2))
                                .sum();
                            let db: f64 = means[b]
                                .iter()
                                .zip(x)
                                .map(|(m, &v)| (m - f64::from(v)).powi(2))
                                .sum();
                            da.total_cmp(&db)
                        })
                        .unwrap();
                    best == test.labels.as_ref().unwrap()[i] as usize
                })
                .count();
            let acc = correct as f64 / test.len() as f64;
            eprintln!(
                "{family:?}: nearest-mean accuracy {acc:.3} (chance {:.3})",
                1.0 / k as f64
            );
            assert!(acc > 3.0 / k as f64, "{family:?}: accuracy {acc}");
        }
    }

    #[test]
    fn colour_and_sizes() {
        let ds = generate(Family::Shapes, 12, 32, 3, 5).unwrap();
        assert_eq!(ds.shape, ImageShape::new(32, 32, 3));
        assert_eq!(ds.len(), 12);
        // Class 0 (disk) is red-dominant: mean R − mean B over the image is positive.
        let img = ds.image(0);
        let (r, b): (f64, f64) = img.chunks(3).fold((0.0, 0.0), |(r, b), p| {
            (r + f64::from(p[0]), b + f64::from(p[2]))
        });
        assert!(r > b, "red {r} blue {b}");
        let ds = generate(Family::Glyphs, 3, 64, 1, 5).unwrap();
        assert_eq!(ds.dim(), 64 * 64);
        // Foreground is present: some pixel well above the background ceiling.
        assert!(ds.image(0).iter().any(|&x| x > 0.0));
        assert!(
            generate(Family::Shapes, 10, 15, 1, 0)
                .unwrap_err()
                .to_string()
                .contains("data.size")
        );
        assert!(generate(Family::Shapes, 10, 65, 1, 0).is_err());
        assert!(
            generate(Family::Shapes, 10, 16, 2, 0)
                .unwrap_err()
                .to_string()
                .contains("data.channels")
        );
        assert!(
            generate(Family::Shapes, 0, 16, 1, 0)
                .unwrap_err()
                .to_string()
                .contains("data.count")
        );
        assert!(
            Family::parse("blobs")
                .unwrap_err()
                .to_string()
                .contains("data.synthetic")
        );
    }
}
