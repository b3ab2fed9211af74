//! Output folders and files: fslens never deletes what it did not write, and a kill at any
//! moment leaves the old result or the new one under the output's name, never neither.
//!
//! **The marker.** Every folder fslens writes holds `.fslens-output` ([`marker`]), a small
//! JSON record (format version, command, fslens version, start time, host, PID), written
//! first. An existing `--out` is replaced only when it is a folder with a readable marker, or
//! an empty folder. Anything else — a folder of the user's files, the folder holding the very
//! config being run, a symbolic link — is refused with an error that names it, unless the
//! command was given `--force` ([`Destination::force`]); a folder fslens wrote is refused the
//! same way when it holds one of the command's input files (a config edited in place, samples
//! being diagnosed). A file where a folder should be is always refused. A sweep folder is
//! resumed, never replaced ([`open_resumable`]).
//!
//! **The replacement protocol** for `DIR/NAME`, written by process PID ([`OutputDir`]):
//!
//! 0. recovery in DIR (below), then the checks above;
//! 1. the work goes into the staging folder `DIR/.NAME.partial-PID`, marker first;
//! 2. when it is complete, `DIR/NAME` (if any) is renamed to the aside copy `DIR/.NAME.old-PID`;
//! 3. `DIR/.NAME.partial-PID` is renamed to `DIR/NAME`;
//! 4. `DIR/.NAME.old-PID` is deleted.
//!
//! Both renames stay inside DIR, so each is atomic. A kill before 2 leaves the old result under
//! NAME (plus a staging folder); after 3, the new one (plus perhaps a partly deleted aside
//! copy). A kill between 2 and 3 leaves nothing under NAME, the old result aside and the new one
//! staged: that state is repaired by the next command that writes into DIR.
//!
//! **Recovery** ([`recover`]): for every aside copy `.NAME.old-PID` whose process is gone,
//! when NAME is missing the copy is renamed back to NAME (the old result returns), and when NAME
//! holds that process's new result the copy is deleted; then every staging folder
//! `.NAME.partial-PID` whose process is gone is deleted. After any kill, then, NAME holds the old
//! result or the new one, complete, and nothing else is left once a command has written into
//! DIR again (crash-point tests: `tests/outputs.rs`). Aside copies are handled before staging
//! folders because the staging folder is how recovery knows the kill fell between the renames.
//!
//! **Whose leftovers.** Recovery runs in folders that also hold the user's files, so it acts
//! only on what it can prove fslens left there. A staging folder is deleted only when its marker
//! names this host and its PID. An aside copy is acted on only when the staging folder of the
//! same PID is there with such a marker (restored), when NAME holds a marker of that PID and
//! host (deleted), or when the copy is itself an fslens folder and NAME is missing (restored,
//! which deletes nothing); a `.notes.old-2023` of the user's is left alone. A process is gone
//! when /proc has no entry for its PID (Linux; where there is no /proc nothing is recovered or
//! removed and leftovers stay); leftovers named with this process's own PID are gone unless
//! this process registered them ([`live`]). On a file system shared by several machines (Slurm
//! shards writing one sweep folder) a PID says nothing about another machine's processes: the
//! host in the markers keeps one node from deleting another's work in progress. A staging
//! folder without a marker (killed between creating it and putting the marker in place) is
//! removed only when it holds nothing but the marker's temporary file.
//!
//! **Signals.** On SIGINT, SIGTERM or SIGHUP the command removes the staging folders and
//! temporary files it registered ([`remove_live_outputs`], called from the binary's signal
//! thread) and then ends by the same signal (a shell shows exit status 130, 143 or 129). Steps
//! 2–3 hold the lock that cleanup takes, so a signal never lands between the two renames; only
//! SIGKILL (or a power cut) can, and recovery covers that.
//!
//! **Single files** ([`file`]): written to a temporary sibling `.NAME.partial-PID` and renamed,
//! and `fslens score --out` refuses a file that is one of its inputs.

pub mod existing;
pub mod file;
pub mod live;
pub mod marker;
pub mod replace;

use std::path::{Path, PathBuf};

pub use existing::Existing;
pub use file::write_atomic;
pub use live::remove_live_outputs;
pub use marker::{MARKER, Marker};
pub use replace::{Recovered, recover};

use crate::{Error, Result};

/// Where a command writes a folder, and what it may replace there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// The folder.
    pub path: PathBuf,
    /// The command, as recorded in the marker: `run`, `compare`, `demo`, `diagnose`, `sweep`,
    /// `merge`.
    pub command: String,
    /// Replace a folder fslens did not write, a symbolic link, or a folder holding an input
    /// (`--force`).
    pub force: bool,
    /// The files the command reads: a folder holding one is not replaced without `force`.
    pub inputs: Vec<PathBuf>,
}

impl Destination {
    pub fn new(path: impl Into<PathBuf>, command: &str) -> Destination {
        Destination {
            path: path.into(),
            command: command.to_string(),
            force: false,
            inputs: Vec::new(),
        }
    }

    /// With `--force` (or without).
    pub fn force(mut self, force: bool) -> Destination {
        self.force = force;
        self
    }

    /// With the command's input files.
    pub fn inputs(mut self, inputs: impl IntoIterator<Item = PathBuf>) -> Destination {
        self.inputs.extend(inputs);
        self
    }

    /// The folder the output lives in (created when missing).
    fn parent(&self) -> Result<PathBuf> {
        replace::output_name(&self.path)?;
        let parent = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
        Ok(parent)
    }
}

/// An output folder being written: a staging folder that [`OutputDir::finish`] puts under
/// the final name (the module notes' protocol). Dropped unfinished (an error), it is removed.
pub struct OutputDir {
    staging: PathBuf,
    dest: Destination,
    finished: bool,
}

impl OutputDir {
    /// Recovers leftovers beside `dest.path`, refuses what may not be replaced there, and
    /// starts the staging folder `.NAME.partial-PID` with its marker.
    pub fn create(dest: &Destination) -> Result<Self> {
        let parent = dest.parent()?;
        recover(&parent);
        existing::check_replaceable(dest)?;
        let staging = replace::sibling(&dest.path, "partial")?;
        start_staging(&staging, &dest.command)?;
        Ok(OutputDir {
            staging,
            dest: dest.clone(),
            finished: false,
        })
    }

    /// Where files go while the work is in progress.
    pub fn path(&self) -> &Path {
        &self.staging
    }

    /// The final location.
    pub fn target(&self) -> &Path {
        &self.dest.path
    }

    /// Puts the complete staging folder under the final name, replacing an older result there
    /// (checked again: something may have appeared there meanwhile).
    pub fn finish(mut self) -> Result<PathBuf> {
        existing::check_replaceable(&self.dest)?;
        replace::place(&self.staging, &self.dest.path, &mut |_| false)?;
        self.finished = true;
        Ok(self.dest.path.clone())
    }
}

impl Drop for OutputDir {
    /// Work that ends in an error removes its staging folder.
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_dir_all(&self.staging);
            live::forget(&self.staging);
        }
    }
}

/// Creates the staging folder `staging` (registered as live output) with the marker of
/// `command`. A folder of that name left by an earlier process with this PID is removed first.
fn start_staging(staging: &Path, command: &str) -> Result<()> {
    {
        let mut live = live::lock();
        if live.iter().any(|p| p == staging) {
            return Err(Error::input(format!(
                "{} is already being written by this process",
                staging.display()
            )));
        }
        if std::fs::symlink_metadata(staging).is_ok() {
            std::fs::remove_dir_all(staging).map_err(|e| Error::io(staging, e))?;
        }
        std::fs::create_dir(staging).map_err(|e| Error::io(staging, e))?;
        live.push(staging.to_path_buf());
    }
    if let Err(e) = Marker::new(command).write(staging) {
        let _ = std::fs::remove_dir_all(staging);
        live::forget(staging);
        return Err(e);
    }
    Ok(())
}

/// Opens `dest.path` as a folder that `dest.command` fills over several runs (a sweep,
/// resumed by running it again) and returns it. Used as it is — never replaced — when it holds
/// the marker of the same command, is empty, or is recognised by `written_before_markers` (a
/// folder of this kind from before markers existed); those two get the marker. Created with
/// the marker when absent. Any other folder goes through [`OutputDir`]'s rules: one fslens
/// wrote for another command is replaced by an empty one, anything else is refused unless
/// `dest.force`.
pub fn open_resumable(
    dest: &Destination,
    written_before_markers: &dyn Fn(&Path) -> bool,
) -> Result<PathBuf> {
    let parent = dest.parent()?;
    recover(&parent);
    match existing::classify(&dest.path)? {
        Existing::Fslens(m) if m.command == dest.command => return Ok(dest.path.clone()),
        Existing::Empty => {
            Marker::new(&dest.command).write(&dest.path)?;
            return Ok(dest.path.clone());
        }
        Existing::Foreign { .. } if written_before_markers(&dest.path) => {
            Marker::new(&dest.command).write(&dest.path)?;
            return Ok(dest.path.clone());
        }
        _ => {}
    }
    OutputDir::create(dest)?.finish()
}

#[cfg(test)]
mod tests;
