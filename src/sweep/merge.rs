//! `fslens merge DIR...`: gathers the complete jobs of one or more sweep outputs (shards) into
//! `results.csv`, `results.jsonl` and a self-contained `report.html` with every metric plotted
//! against every swept axis, and `merge.json` (counts, failed and damaged jobs). A damaged job
//! folder (see [`super::check`]) is left out and named; the rest is still written. Shards
//! whose recorded identities differ (another base config or data) are refused: their rows
//! would not be comparable.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::results::{Damaged, csv, gather, jsonl};
use crate::output::{Destination, OutputDir, write_atomic};
use crate::{Error, Result};

/// What `merge` wrote.
#[derive(Clone, Debug, Serialize)]
pub struct MergeOutcome {
    pub out: PathBuf,
    pub jobs: usize,
    pub failed: usize,
    pub duplicates: usize,
    /// Damaged job folders left out, with what is wrong.
    pub damaged: Vec<Damaged>,
}

/// Gathers `dirs` and writes results.csv, results.jsonl and report.html into `out`: into the
/// sweep folder itself when `out` is one (each file replaced atomically), else as a folder of
/// its own, written like a run's (staged, an older merge replaced, a folder fslens did not
/// write refused unless `force`; see [`crate::output`]).
pub fn merge(dirs: &[PathBuf], out: &Path, force: bool) -> Result<MergeOutcome> {
    if dirs.is_empty() {
        return Err(Error::input("merge needs at least one sweep output folder"));
    }
    same_identity(dirs)?;
    let merged = gather(dirs)?;
    let outcome = MergeOutcome {
        out: out.to_path_buf(),
        jobs: merged.rows.len(),
        failed: merged.failures.len(),
        duplicates: merged.duplicates,
        damaged: merged.damaged.clone(),
    };
    let summary = serde_json::to_string_pretty(&serde_json::json!({
        "jobs": outcome.jobs,
        "failed": merged.failures,
        "damaged": outcome.damaged,
        "duplicates": outcome.duplicates,
        "inputs": dirs,
    }))
    .expect("merge summaries serialise");
    // Links to each job's report are relative to `out`, where report.html ends up.
    let html = super::page::report_html(&merged, out)?;
    let write = |dir: &Path| -> Result<()> {
        write_atomic(&dir.join("results.csv"), csv(&merged).as_bytes())?;
        write_atomic(&dir.join("results.jsonl"), jsonl(&merged).as_bytes())?;
        write_atomic(&dir.join("merge.json"), summary.as_bytes())?;
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
    Ok(outcome)
}

/// Refuses to merge sweep folders whose recorded identities differ (see
/// [`super::identity`]); folders without one are taken as they are.
fn same_identity(dirs: &[PathBuf]) -> Result<()> {
    let mut first: Option<(&PathBuf, super::identity::Identity)> = None;
    for dir in dirs {
        let Some(id) = super::identity::read(dir)? else {
            continue;
        };
        match &first {
            None => first = Some((dir, id)),
            Some((d0, id0)) => {
                let changes = id.changes_since(id0);
                if !changes.is_empty() {
                    return Err(Error::data(
                        dir,
                        format!(
                            "was swept with another base config or data than {}:\n  {}\nmerge the folders of one sweep (or each one on its own)",
                            d0.display(),
                            changes.join("\n  ")
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}
