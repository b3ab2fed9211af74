//! `fslens merge DIR...`: gathers the complete jobs of one or more sweep outputs (shards) into
//! `results.csv`, `results.jsonl` and a self-contained `report.html` with every metric plotted
//! against every swept axis.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::results::{csv, gather, jsonl};
use crate::{Error, Result};

/// What `merge` wrote.
#[derive(Clone, Debug, Serialize)]
pub struct MergeOutcome {
    pub out: PathBuf,
    pub jobs: usize,
    pub failed: usize,
    pub duplicates: usize,
}

/// Gathers `dirs` and writes results.csv, results.jsonl and report.html into `out`.
pub fn merge(dirs: &[PathBuf], out: &Path) -> Result<MergeOutcome> {
    if dirs.is_empty() {
        return Err(Error::input("merge needs at least one sweep output folder"));
    }
    let merged = gather(dirs)?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    crate::arrays::write_atomic(&out.join("results.csv"), csv(&merged).as_bytes())?;
    crate::arrays::write_atomic(&out.join("results.jsonl"), jsonl(&merged).as_bytes())?;
    let html = super::page::report_html(&merged)?;
    crate::arrays::write_atomic(&out.join("report.html"), html.as_bytes())?;
    Ok(MergeOutcome {
        out: out.to_path_buf(),
        jobs: merged.rows.len(),
        failed: merged.failures.len(),
        duplicates: merged.duplicates,
    })
}
