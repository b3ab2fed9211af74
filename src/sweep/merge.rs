//! `fslens merge DIR...`: gathers the complete jobs of one or more sweep outputs (shards) into
//! `results.csv`, `results.jsonl` and a self-contained `report.html` with every metric plotted
//! against every swept axis.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::results::{csv, gather, jsonl};
use crate::output::{Destination, OutputDir, write_atomic};
use crate::{Error, Result};

/// What `merge` wrote.
#[derive(Clone, Debug, Serialize)]
pub struct MergeOutcome {
    pub out: PathBuf,
    pub jobs: usize,
    pub failed: usize,
    pub duplicates: usize,
}

/// Gathers `dirs` and writes results.csv, results.jsonl and report.html into `out`: into the
/// sweep folder itself when `out` is one (each file replaced atomically), else as a folder of
/// its own, written like a run's (staged, an older merge replaced, a folder fslens did not
/// write refused unless `force`; see [`crate::output`]).
pub fn merge(dirs: &[PathBuf], out: &Path, force: bool) -> Result<MergeOutcome> {
    if dirs.is_empty() {
        return Err(Error::input("merge needs at least one sweep output folder"));
    }
    let merged = gather(dirs)?;
    let html = super::page::report_html(&merged)?;
    let write = |dir: &Path| -> Result<()> {
        write_atomic(&dir.join("results.csv"), csv(&merged).as_bytes())?;
        write_atomic(&dir.join("results.jsonl"), jsonl(&merged).as_bytes())?;
        write_atomic(&dir.join("report.html"), html.as_bytes())
    };
    if super::is_sweep_folder(out) {
        write(out)?;
    } else {
        let dest = Destination::new(out, "merge")
            .force(force)
            .inputs(dirs.iter().cloned());
        let staging = OutputDir::create(&dest)?;
        write(staging.path())?;
        staging.finish()?;
    }
    Ok(MergeOutcome {
        out: out.to_path_buf(),
        jobs: merged.rows.len(),
        failed: merged.failures.len(),
        duplicates: merged.duplicates,
    })
}
