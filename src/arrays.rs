//! `.npy` arrays in and out, and atomic file writes.
//!
//! Every reader checks what users get wrong: a missing file, a bad header, a dtype we do not
//! take, a truncated payload, Fortran order, non-finite values. Writers go through
//! [`write_atomic`], so a crash never leaves a half-written file under the final name.

use std::io::Write;
use std::path::{Path, PathBuf};

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
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let npy = npyz::NpyFile::new(&bytes[..]).map_err(|e| {
        Error::data(
            path,
            format!("not a readable .npy file ({e}); save it with numpy.save"),
        )
    })?;
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
    write_atomic(path, &buf)
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so the
/// final name only ever holds a complete file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temporary_name(path);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// `dir/name` → `dir/.name.partial-<pid>`: hidden, and unique per process.
pub fn temporary_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

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

        // Non-finite value.
        let n = d.join("nan.npy");
        write_npy_f32(&n, &[2], &[1.0, f32::NAN]).unwrap();
        let e = read_npy(&n).unwrap_err().to_string();
        assert!(e.contains("not finite") && e.contains("index 1"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn atomic_write_leaves_no_temporary() {
        let d = tmpdir("atomic");
        let p = d.join("x.bin");
        write_atomic(&p, b"abc").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"abc");
        let names: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
