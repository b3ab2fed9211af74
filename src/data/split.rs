//! The held-out split: ground-truth images are drawn from images that are not atoms, so the
//! exact posterior is never handed the answer as one of its atoms.

use super::Dataset;
use super::preprocess::random_indices;
use crate::{Error, Result};

/// The indices of a split: `held_out` (count of them, drawn uniformly without replacement
/// with ChaCha8 seeded by `seed`, sorted) and `train` (the rest, in order). Disjoint; their
/// union is 0..n.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitIndices {
    pub train: Vec<usize>,
    pub held_out: Vec<usize>,
}

/// Draws the split indices for a set of `n` images. Errors unless 1 ≤ count < n (both parts
/// must be non-empty).
pub fn hold_out_indices(n: usize, count: usize, seed: u64) -> Result<SplitIndices> {
    if count == 0 || count >= n {
        return Err(Error::input(format!(
            "cannot hold out {count} of {n} images; hold out between 1 and {} so that atoms remain",
            n.saturating_sub(1)
        )));
    }
    let held_out = random_indices(n, count, seed);
    let mut mark = vec![false; n];
    for &i in &held_out {
        mark[i] = true;
    }
    let train = (0..n).filter(|&i| !mark[i]).collect();
    Ok(SplitIndices { train, held_out })
}

/// Splits `ds` into (train, held_out) with [`hold_out_indices`]; labels and class names are
/// kept on both sides.
pub fn hold_out(ds: &Dataset, count: usize, seed: u64) -> Result<(Dataset, Dataset)> {
    let s = hold_out_indices(ds.len(), count, seed)?;
    Ok((ds.select(&s.train), ds.select(&s.held_out)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic::{Family, generate};

    #[test]
    fn disjoint_complete_seeded() {
        let ds = generate(Family::Shapes, 50, 16, 1, 3).unwrap();
        let s = hold_out_indices(50, 7, 11).unwrap();
        assert_eq!(s.held_out.len(), 7);
        assert_eq!(s.train.len(), 43);
        let mut all: Vec<usize> = s.train.iter().chain(&s.held_out).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..50).collect::<Vec<_>>(), "disjoint and complete");
        assert_eq!(s, hold_out_indices(50, 7, 11).unwrap());
        assert_ne!(s.held_out, hold_out_indices(50, 7, 12).unwrap().held_out);

        let (train, held) = hold_out(&ds, 7, 11).unwrap();
        assert_eq!((train.len(), held.len()), (43, 7));
        for (j, &i) in s.held_out.iter().enumerate() {
            assert_eq!(held.image(j), ds.image(i));
            assert_eq!(
                held.labels.as_ref().unwrap()[j],
                ds.labels.as_ref().unwrap()[i]
            );
            // No held-out image is an atom (images are distinct in this set).
            assert!((0..train.len()).all(|t| train.image(t) != held.image(j)));
        }
        assert_eq!(train.class_names, ds.class_names);
        assert!(
            hold_out(&ds, 50, 0)
                .unwrap_err()
                .to_string()
                .contains("between 1 and 49")
        );
        assert!(hold_out(&ds, 0, 0).is_err());
    }
}
