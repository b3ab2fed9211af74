//! Random-pixel inpainting: a seeded random subset of pixel locations is observed.

use rand::SeedableRng;

use super::{PixelSelection, spec_error};
use crate::data::ImageShape;

/// Inpainting that keeps round(keep·H·W) pixel locations (all channels of each), drawn
/// uniformly without replacement by a ChaCha8 generator seeded with `seed`, so the same spec
/// gives the same mask on every machine. A Aᵀ = I. Spec `random-pixels:keep=0.3,seed=0`.
pub fn random_pixels(shape: ImageShape, keep: f64, seed: u64) -> crate::Result<PixelSelection> {
    let spec = format!("random-pixels:keep={keep},seed={seed}");
    if !(keep.is_finite() && keep > 0.0 && keep <= 1.0) {
        return Err(spec_error(
            &spec,
            format!("parameter `keep` = {keep} must be a fraction in (0, 1]"),
        ));
    }
    let pixels = shape.height * shape.width;
    let count = (keep * pixels as f64).round() as usize;
    if count == 0 {
        return Err(spec_error(
            &spec,
            format!(
                "parameter `keep` = {keep} keeps no pixel of a {}×{} image; raise it to at least {}",
                shape.height,
                shape.width,
                0.5 / pixels as f64
            ),
        ));
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut observed = vec![false; pixels];
    for p in rand::seq::index::sample(&mut rng, pixels, count) {
        observed[p] = true;
    }
    PixelSelection::new(shape, &observed, spec)
}
