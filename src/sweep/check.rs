//! Whether a finished job's folder is intact: the files a resume skips and a merge reads parse
//! and have the shapes its summary.json promises. A folder under its final name was complete
//! when it was renamed there, but a disk that filled up, a copy cut short (rsync of a shard
//! from a cluster) or a hand edit can damage it later; a damaged job is rerun by the next
//! sweep and left out (and named) by merge, never read as if it were whole.
//!
//! Checked: job.json is a job record of this id; config.toml is TOML; metrics.json and
//! summary.json are JSON with a `samplers` entry for every sampler; for each sampler of
//! summary.json (K particles, images of D = height·width·channels values) samples_ and
//! denoised_ are K × D, projections_ is (projection times) × K, checkpoints_ (when written) is
//! (full checkpoint times) × K × D, projection_direction.npy is D; and every .npy's payload has
//! exactly the bytes its header declares (a truncated file fails here even when its header
//! survived). Values are not read: a resume of a large sweep stays quick.

use std::io::Read;
use std::path::Path;

use serde_json::Value;

use super::JobRecord;

/// Ok when `dir` holds an intact job `id`; else what is wrong, naming the file.
pub fn job_folder(dir: &Path, id: &str) -> std::result::Result<(), String> {
    let record: JobRecord = serde_json::from_value(json(dir, "job.json")?)
        .map_err(|e| format!("job.json is not a job record ({e})"))?;
    if record.id != id {
        return Err(format!(
            "job.json names job {}, not the folder's {id}",
            record.id
        ));
    }
    let config = read_text(dir, "config.toml")?;
    toml::from_str::<toml::Table>(&config)
        .map_err(|e| format!("config.toml is not TOML ({})", e.to_string().trim_end()))?;
    let metrics = json(dir, "metrics.json")?;
    let summary = json(dir, "summary.json")?;
    let ds = &summary["dataset"];
    let d = ["height", "width", "channels"]
        .iter()
        .map(|k| ds[k].as_u64().map(|v| v as usize))
        .product::<Option<usize>>()
        .ok_or("summary.json has no dataset height, width and channels")?;
    let samplers = summary["samplers"]
        .as_array()
        .ok_or("summary.json has no `samplers` list")?;
    if samplers.is_empty() {
        return Err("summary.json lists no sampler".into());
    }
    npy(dir, "projection_direction.npy", &[d])?;
    for s in samplers {
        let name = s["name"]
            .as_str()
            .ok_or("summary.json: a sampler without a name")?;
        let k = s["particles"]
            .as_u64()
            .ok_or_else(|| format!("summary.json: sampler {name} has no particle count"))?
            as usize;
        if metrics["samplers"][name].is_null() {
            return Err(format!("metrics.json has no entry for sampler {name}"));
        }
        let times = |key: &str| s[key].as_array().map_or(0, Vec::len);
        npy(dir, &format!("samples_{name}.npy"), &[k, d])?;
        npy(dir, &format!("denoised_{name}.npy"), &[k, d])?;
        npy(
            dir,
            &format!("projections_{name}.npy"),
            &[times("projection_times"), k],
        )?;
        let full = times("full_checkpoint_times");
        if full > 0 {
            npy(dir, &format!("checkpoints_{name}.npy"), &[full, k, d])?;
        }
    }
    // Any other array (an external sampler's, a future file) must at least be whole.
    let entries = std::fs::read_dir(dir).map_err(|e| format!("unreadable folder ({e})"))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".npy") {
            npy_layout(&dir.join(&name)).map_err(|e| format!("{name}: {e}"))?;
        }
    }
    Ok(())
}

fn read_text(dir: &Path, name: &str) -> std::result::Result<String, String> {
    std::fs::read_to_string(dir.join(name)).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("{name} is missing"),
        _ => format!("{name} is unreadable ({e})"),
    })
}

fn json(dir: &Path, name: &str) -> std::result::Result<Value, String> {
    let text = read_text(dir, name)?;
    serde_json::from_str(&text).map_err(|e| format!("{name} is not valid JSON ({e})"))
}

/// `dir/name` is a whole .npy of shape `want`.
fn npy(dir: &Path, name: &str, want: &[usize]) -> std::result::Result<(), String> {
    let shape = npy_layout(&dir.join(name)).map_err(|e| format!("{name}: {e}"))?;
    if shape != want {
        return Err(format!("{name} has shape {shape:?}, expected {want:?}"));
    }
    Ok(())
}

/// The shape of a .npy file whose size is exactly its header plus the payload the header
/// declares (format versions 1 to 3: magic, version, header length u16 or u32, header).
pub fn npy_layout(path: &Path) -> std::result::Result<Vec<usize>, String> {
    let mut file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "missing".to_string(),
        _ => format!("unreadable ({e})"),
    })?;
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    let mut head = [0u8; 12];
    file.read_exact(&mut head)
        .map_err(|_| format!("truncated ({size} bytes, not even a header)"))?;
    if &head[..6] != b"\x93NUMPY" {
        return Err("not a .npy file (bad magic)".into());
    }
    let data_start = match head[6] {
        1 => 10 + u16::from_le_bytes([head[8], head[9]]) as u64,
        2 | 3 => 12 + u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as u64,
        v => return Err(format!("unknown .npy format version {v}")),
    };
    let reader = std::io::BufReader::new(std::fs::File::open(path).map_err(|e| e.to_string())?);
    let npy = npyz::NpyFile::new(reader).map_err(|e| format!("bad header ({e})"))?;
    let item = match npy.dtype() {
        npyz::DType::Plain(ts) => ts.size_field(),
        other => return Err(format!("unexpected dtype {}", other.descr())),
    };
    let shape: Vec<usize> = npy.shape().iter().map(|&s| s as usize).collect();
    let want = data_start + item * shape.iter().map(|&s| s as u64).product::<u64>();
    if size != want {
        return Err(format!(
            "{size} bytes, but its header declares shape {shape:?} ({want} bytes): truncated or damaged"
        ));
    }
    Ok(shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_layout_catches_truncation() {
        let dir = std::env::temp_dir().join(format!("fslens-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.npy");
        crate::arrays::write_npy_f32(&p, &[3, 5], &[0.5; 15]).unwrap();
        assert_eq!(npy_layout(&p).unwrap(), vec![3, 5]);
        // Independently: the file is the header plus 15 × 4 bytes.
        let bytes = std::fs::read(&p).unwrap();
        let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!(bytes.len(), 10 + hlen + 60);
        std::fs::write(&p, &bytes[..bytes.len() - 4]).unwrap();
        let e = npy_layout(&p).unwrap_err();
        assert!(e.contains("truncated") && e.contains("[3, 5]"), "{e}");
        std::fs::write(&p, &bytes[..5]).unwrap();
        assert!(npy_layout(&p).unwrap_err().contains("truncated"));
        std::fs::write(&p, b"not an array at all").unwrap();
        assert!(npy_layout(&p).unwrap_err().contains("magic"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
