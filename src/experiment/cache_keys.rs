//! The keys of the atom cache (data::cache): texts naming everything an entry depends on,
//! hashed with SHA-256.
//!
//! - data set: the data config with defaults filled in and paths made absolute, plus a
//!   fingerprint (size, modification time) of every file it reads (folders walked);
//! - measured atoms: the data-set key, which atoms were kept (held-out count and seed, or all
//!   of them), the operator spec as written, and the absolute paths and fingerprints of files
//!   the operator spec names (matrix .npy, mask .png).
//!
//! A data file edited in place changes its fingerprint and so its key; one rewritten with the
//! same size within the file system's timestamp resolution would not (not a practical case).

use std::path::{Path, PathBuf};

use crate::config::RunConfig;
use crate::data::cache::key_of;
use crate::data::spec::DataConfig;

fn absolute(base_dir: &Path, p: &Path) -> PathBuf {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    };
    std::path::absolute(&joined).unwrap_or(joined)
}

/// `path size mtime_ns` lines for a file, or for every file under a folder (sorted).
fn fingerprint(path: &Path, out: &mut String) {
    let Ok(meta) = std::fs::metadata(path) else {
        out.push_str(&format!("{} missing\n", path.display()));
        return;
    };
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map(|r| r.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        entries.sort();
        for e in entries {
            fingerprint(&e, out);
        }
    } else {
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        out.push_str(&format!("{} {} {mtime}\n", path.display(), meta.len()));
    }
}

/// The key of the loaded, preprocessed data set.
pub fn dataset(data: &DataConfig, base_dir: &Path) -> String {
    let mut resolved = data.resolved();
    resolved.path = resolved.path.map(|p| absolute(base_dir, &p));
    resolved.labels = resolved.labels.map(|p| absolute(base_dir, &p));
    let mut text = format!(
        "dataset-v1\n{}\n",
        serde_json::to_string(&resolved).expect("data configs serialise")
    );
    for p in resolved.path.iter().chain(&resolved.labels) {
        fingerprint(p, &mut text);
    }
    key_of(&text)
}

/// The key of the measured atoms of a run.
pub fn measured(data_key: &str, cfg: &RunConfig, base_dir: &Path) -> String {
    let selection = if cfg.held_out() == 0 {
        "all atoms".to_string()
    } else {
        format!("held out {} with seed {}", cfg.truth.held_out, cfg.seed)
    };
    let spec = &cfg.measurement.operator;
    let mut text = format!("measured-v1\n{data_key}\n{selection}\n{spec}\n");
    // Any word of the spec that names an existing file (matrix:M.npy, mask:M.png, …), by its
    // absolute path and fingerprint: the config's folder matters only through such files.
    for p in crate::operators::files_named(spec, base_dir) {
        fingerprint(&std::path::absolute(&p).unwrap_or(p), &mut text);
    }
    key_of(&text)
}
