//! `.npy` arrays in and out.
//!
//! Every reader checks what users get wrong: a missing file, a bad header, a dtype we do not
//! take, a truncated payload, Fortran order, non-finite values, an array larger than this
//! machine's memory. Writers go through [`crate::output::write_atomic`], so a crash never
//! leaves a half-written file under the final name.

use std::path::Path;

use crate::{Error, Result};

/// An n-dimensional array read from `.npy`, as float64 in C order.
#[derive(Clone, Debug)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
    /// The element type in the file (`u8`, `f32`, `f64`, …), for messages and for knowing
    /// whether the source was 8-bit.
    pub dtype: String,
}

impl Array {
    pub fn len(&self) -> usize {
        self.data.len()
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// Reads a `.npy` file of u8, i32, i64, f32 or f64 (little or big endian) into float64.
/// Rejects Fortran order and NaN or infinite values.
pub fn read_npy(path: &Path) -> Result<Array> {
    let a = read_npy_nonfinite(path)?;
    if let Some(i) = a.data.iter().position(|v| !v.is_finite()) {
        return Err(Error::data(
            path,
            format!(
                "value {} at flat index {i} is not finite; fslens needs finite numbers",
                a.data[i]
            ),
        ));
    }
    Ok(a)
}

/// [`read_npy`] that lets NaN and infinite values through, for callers that name them in
/// their own terms (which cloud, which time) rather than by flat index.
pub fn read_npy_nonfinite(path: &Path) -> Result<Array> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let npy =
        npyz::NpyFile::new(std::io::BufReader::with_capacity(1 << 20, file)).map_err(|e| {
            Error::data(
                path,
                format!("not a readable .npy file ({e}); save it with numpy.save"),
            )
        })?;
    check_fits(path, &npy)?;
    if npy.order() == npyz::Order::Fortran {
        return Err(Error::data(
            path,
            "array is in Fortran order; save it with numpy.save(path, numpy.ascontiguousarray(a))",
        ));
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&s| s as usize).collect();
    let dtype = npy.dtype();
    let descr = dtype.descr();
    let type_str = match &dtype {
        npyz::DType::Plain(ts) => ts.clone(),
        _ => {
            return Err(Error::data(
                path,
                format!("dtype {descr} is structured; expected a plain numeric array"),
            ));
        }
    };
    let expected: usize = shape.iter().product();
    let truncated = |e: std::io::Error| {
        Error::data(
            path,
            format!(
                "payload is truncated or unreadable ({e}); expected {expected} values of {descr} for shape {shape:?}"
            ),
        )
    };
    let (data, name): (Vec<f64>, &str) = match (type_str.type_char(), type_str.size_field()) {
        (npyz::TypeChar::Uint, 1) => (
            npy.into_vec::<u8>()
                .map_err(truncated)?
                .into_iter()
                .map(f64::from)
                .collect(),
            "u8",
        ),
        (npyz::TypeChar::Int, 4) => (
            npy.into_vec::<i32>()
                .map_err(truncated)?
                .into_iter()
                .map(f64::from)
                .collect(),
            "i32",
        ),
        (npyz::TypeChar::Int, 8) => (
            npy.into_vec::<i64>()
                .map_err(truncated)?
                .into_iter()
                .map(|v| v as f64)
                .collect(),
            "i64",
        ),
        (npyz::TypeChar::Float, 4) => (
            npy.into_vec::<f32>()
                .map_err(truncated)?
                .into_iter()
                .map(f64::from)
                .collect(),
            "f32",
        ),
        (npyz::TypeChar::Float, 8) => (npy.into_vec::<f64>().map_err(truncated)?, "f64"),
        _ => {
            return Err(Error::data(
                path,
                format!("dtype {descr} is not supported; use uint8, float32 or float64"),
            ));
        }
    };
    if data.len() != expected {
        return Err(Error::data(
            path,
            format!(
                "payload holds {} values but the header's shape {shape:?} needs {expected}; the file is truncated",
                data.len()
            ),
        ));
    }
    Ok(Array {
        shape,
        data,
        dtype: name.to_string(),
    })
}

/// The shape a `.npy` file's header declares (the header alone is read).
pub fn npy_shape(path: &Path) -> Result<Vec<usize>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let npy = npyz::NpyFile::new(std::io::BufReader::new(file)).map_err(|e| {
        Error::data(
            path,
            format!("not a readable .npy file ({e}); save it with numpy.save"),
        )
    })?;
    Ok(npy.shape().iter().map(|&s| s as usize).collect())
}

/// Refuses, from its header, an array that this machine could not hold while reading it:
/// its values as stored and their float64 copy, (size of one value + 8) bytes each.
fn check_fits<R: std::io::Read>(path: &Path, npy: &npyz::NpyFile<R>) -> Result<()> {
    let values: f64 = npy.shape().iter().map(|&s| s as f64).product();
    let size = match npy.dtype() {
        npyz::DType::Plain(ts) => ts.size_field() as f64,
        _ => return Ok(()), // refused as structured by the caller
    };
    let need = crate::resources::Need {
        key: path.display().to_string(),
        value: format!("an array of shape {:?}", npy.shape()),
        what: "reading it".into(),
        formula: format!("{values:.0} values × ({size:.0} bytes as stored + 8 bytes as float64)"),
        bytes: values * (size + 8.0),
        fix: "use a smaller array".into(),
    };
    match crate::resources::shortfall(&[need], crate::resources::memory().as_ref()) {
        Some((_, problem)) => Err(Error::data(path, problem)),
        None => Ok(()),
    }
}

/// Writes `data` with `shape` as a little-endian float32 `.npy`, atomically.
pub fn write_npy_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    write_npy(path, shape, data)
}

/// Writes `data` with `shape` as an `.npy` of T's natural dtype (`<f4`, `<f8`, `|u1`, …),
/// atomically.
pub fn write_npy<T: npyz::Serialize + npyz::AutoSerialize + Copy>(
    path: &Path,
    shape: &[usize],
    data: &[T],
) -> Result<()> {
    let expected: usize = shape.iter().product();
    if expected != data.len() {
        return Err(Error::input(format!(
            "{}: {} values do not fill shape {shape:?}",
            path.display(),
            data.len()
        )));
    }
    let mut buf: Vec<u8> = Vec::with_capacity(std::mem::size_of_val(data) + 128);
    {
        let shape64: Vec<u64> = shape.iter().map(|&s| s as u64).collect();
        use npyz::WriterBuilder;
        let mut w = npyz::WriteOptions::<T>::new()
            .default_dtype()
            .shape(&shape64)
            .writer(&mut buf)
            .begin_nd()
            .map_err(|e| Error::io(path, e))?;
        w.extend(data.iter().copied())
            .map_err(|e| Error::io(path, e))?;
        w.finish().map_err(|e| Error::io(path, e))?;
    }
    crate::output::write_atomic(path, &buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("fslens-arrays-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn f32_round_trip_and_bad_files() {
        let d = tmpdir("rt");
        let p = d.join("a.npy");
        let data: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 2.0).collect();
        write_npy_f32(&p, &[3, 4], &data).unwrap();
        let a = read_npy(&p).unwrap();
        assert_eq!(a.shape, vec![3, 4]);
        assert_eq!(a.dtype, "f32");
        assert_eq!(a.data, data.iter().map(|&v| v as f64).collect::<Vec<_>>());

        // Truncated payload.
        let bytes = std::fs::read(&p).unwrap();
        let t = d.join("trunc.npy");
        std::fs::write(&t, &bytes[..bytes.len() - 8]).unwrap();
        let e = read_npy(&t).unwrap_err().to_string();
        assert!(e.contains("trunc.npy") && e.contains("truncated"), "{e}");

        // Not an npy file at all.
        let g = d.join("garbage.npy");
        std::fs::write(&g, b"hello world").unwrap();
        let e = read_npy(&g).unwrap_err().to_string();
        assert!(e.contains("garbage.npy") && e.contains(".npy"), "{e}");

        // Missing file.
        let e = read_npy(&d.join("missing.npy")).unwrap_err().to_string();
        assert!(e.contains("missing.npy"), "{e}");

        // A header promising more than any machine holds is refused before reading.
        let big = d.join("big.npy");
        let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000, 784), }";
        let mut header = format!("{dict:<117}\n").into_bytes();
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend((header.len() as u16).to_le_bytes());
        bytes.append(&mut header);
        bytes.extend([0u8; 64]);
        std::fs::write(&big, &bytes).unwrap();
        let t0 = std::time::Instant::now();
        let e = read_npy(&big).unwrap_err().to_string();
        if crate::resources::memory().is_some() {
            assert!(
                e.contains("big.npy") && e.contains("needs 9.41 TB") && e.contains("of memory"),
                "{e}"
            );
        }
        assert!(t0.elapsed().as_secs_f64() < 1.0);

        // Non-finite value.
        let n = d.join("nan.npy");
        write_npy_f32(&n, &[2], &[1.0, f32::NAN]).unwrap();
        let e = read_npy(&n).unwrap_err().to_string();
        assert!(e.contains("not finite") && e.contains("index 1"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
