//! y as data: a measured y read from a `.npy` (no truth behind it) and the additive offset b
//! of y = A(x) + b + noise, which the likelihood removes once (it sees y − b everywhere).

use std::path::Path;

use crate::config::Offset;
use crate::operators::Operator;
use crate::{Error, Result};

/// The m values of a `.npy` (float32 or float64) under config key `key`, checked against
/// the operator's output length and for finiteness.
fn read_entries(path: &Path, operator: &dyn Operator, key: &str, what: &str) -> Result<Vec<f64>> {
    let a = crate::arrays::read_npy(path).map_err(|e| e.for_file_key(key))?;
    let m = operator.output_len();
    if a.len() != m {
        return Err(Error::config(
            key,
            format!(
                "{} holds {} values (shape {:?}) but operator `{}` measures m = {m} values; \
                 save one {what} per entry of y (numpy.save(path, v) with v.size == {m})",
                path.display(),
                a.len(),
                a.shape,
                operator.spec()
            ),
        ));
    }
    if let Some(j) = a.data.iter().position(|v| !v.is_finite()) {
        return Err(Error::config(
            key,
            format!(
                "entry {j} of {} is {}; every {what} must be finite",
                path.display(),
                a.data[j]
            ),
        ));
    }
    Ok(a.data)
}

/// The measured y of `measurement.y` (relative to `base_dir`), in float64.
pub fn read_y(file: &Path, base_dir: &Path, operator: &dyn Operator) -> Result<Vec<f64>> {
    read_entries(
        &base_dir.join(file),
        operator,
        "measurement.y",
        "measured value y_j",
    )
}

/// The offset b_j of `measurement.offset` for every entry of y.
pub fn read_offset(offset: &Offset, base_dir: &Path, operator: &dyn Operator) -> Result<Vec<f64>> {
    match offset {
        Offset::Scalar(b) if b.is_finite() => Ok(vec![*b; operator.output_len()]),
        Offset::Scalar(b) => Err(Error::config(
            "measurement.offset",
            format!("is {b}; give a finite number or a .npy of m finite values"),
        )),
        Offset::File(p) => read_entries(
            &base_dir.join(p),
            operator,
            "measurement.offset",
            "offset b_j",
        ),
    }
}

/// y − b in float32, each entry rounded once from float64 (without an offset, y itself):
/// a run with an offset is bit for bit the run on the float32 of y − b.
pub fn remove_offset(y: &[f64], offset: Option<&[f64]>) -> Vec<f32> {
    match offset {
        None => y.iter().map(|&v| v as f32).collect(),
        Some(b) => y.iter().zip(b).map(|(&v, &b)| (v - b) as f32).collect(),
    }
}
