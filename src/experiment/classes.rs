//! Class weights: where a data set has labels, the exact posterior's mass per class and the
//! share of a sampler's particles whose nearest atom is in each class.

use super::summary::{ClassWeight, TopAtom};
use crate::data::Dataset;

/// The label's name (the data set's class name, else the number).
pub fn label_name(ds: &Dataset, label: u32) -> String {
    match &ds.class_names {
        Some(names) if (label as usize) < names.len() => names[label as usize].clone(),
        _ => label.to_string(),
    }
}

fn class_count(ds: &Dataset) -> Option<usize> {
    let labels = ds.labels.as_ref()?;
    let max = labels.iter().copied().max()? as usize + 1;
    Some(ds.class_names.as_ref().map_or(max, |n| n.len().max(max)))
}

/// Exact class weights: Σ_{i in class c} ω_i.
pub fn class_weights_exact(ds: &Dataset, omega: &[f64]) -> Option<Vec<f64>> {
    let labels = ds.labels.as_ref()?;
    let mut w = vec![0.0; class_count(ds)?];
    for (&l, &o) in labels.iter().zip(omega) {
        w[l as usize] += o;
    }
    Some(w)
}

/// Class frequencies of samples assigned to their nearest atoms.
pub fn class_weights_of_samples(ds: &Dataset, nearest: &[usize]) -> Option<Vec<f64>> {
    let labels = ds.labels.as_ref()?;
    let mut w = vec![0.0; class_count(ds)?];
    for &i in nearest {
        w[labels[i] as usize] += 1.0 / nearest.len() as f64;
    }
    Some(w)
}

/// Class weights with their names, for summary.json.
pub fn named_weights(ds: &Dataset, w: &[f64]) -> Vec<ClassWeight> {
    w.iter()
        .enumerate()
        .map(|(c, &weight)| ClassWeight {
            class: label_name(ds, c as u32),
            weight,
        })
        .collect()
}

/// The `k` heaviest atoms of ω, heaviest first.
pub fn top_atoms(omega: &[f64], k: usize) -> Vec<(usize, f64)> {
    let mut idx: Vec<usize> = (0..omega.len()).collect();
    idx.sort_by(|&a, &b| omega[b].total_cmp(&omega[a]));
    idx.into_iter().take(k).map(|i| (i, omega[i])).collect()
}

/// The heaviest exact atoms (index, ω_i) with their labels.
pub fn top_atom_summary(atoms: &Dataset, top: &[(usize, f64)]) -> Vec<TopAtom> {
    top.iter()
        .map(|&(i, w)| TopAtom {
            index: i,
            weight: w,
            label: atoms.labels.as_ref().map(|l| label_name(atoms, l[i])),
        })
        .collect()
}
