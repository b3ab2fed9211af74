//! The replacement protocol and the recovery after a kill (see [`super`]'s module notes for
//! why every state a kill can leave ends as the old result or the new one).

use std::path::{Path, PathBuf};

use super::live;
use super::marker::{MARKER, Marker};
use crate::{Error, Result};

/// The steps of [`place`], in order. A kill lands before one of them (or after the last).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Rename the old result `NAME` to the aside copy `.NAME.old-PID`.
    SetOldAside,
    /// Rename the staging folder `.NAME.partial-PID` to `NAME`.
    PlaceNew,
    /// Delete the aside copy.
    DeleteOld,
}

/// The last component of an output path, which names the output (`.` and `..` do not).
pub(crate) fn output_name(target: &Path) -> Result<&std::ffi::OsStr> {
    target.file_name().ok_or_else(|| {
        Error::config(
            "--out",
            format!(
                "{} does not end in a folder name; give one, e.g. {}",
                target.display(),
                target.join("out").display()
            ),
        )
    })
}

/// `.NAME.<kind>-PID` beside `target`, for this process.
pub(crate) fn sibling(target: &Path, kind: &str) -> Result<PathBuf> {
    let name = output_name(target)?;
    Ok(target.with_file_name(format!(
        ".{}.{kind}-{}",
        name.to_string_lossy(),
        std::process::id()
    )))
}

/// Moves the complete folder `staging` to `target`, replacing what is there (steps
/// [`Step::SetOldAside`], [`Step::PlaceNew`], [`Step::DeleteOld`]). `stop_before` is asked
/// before each step; when it answers true, `place` returns an error at once and leaves
/// everything as it is, as a kill there would (the crash-point tests; otherwise `|_| false`).
/// The two renames hold the live-output lock, so a signal's cleanup waits for them. The old
/// copy is deleted last and at best effort: the new result is in place by then, and a
/// leftover aside copy goes at the next recovery.
pub fn place(
    staging: &Path,
    target: &Path,
    stop_before: &mut dyn FnMut(Step) -> bool,
) -> Result<()> {
    let aside = sibling(target, "old")?;
    let mut stop = |step: Step| -> Result<()> {
        if stop_before(step) {
            return Err(Error::input(format!("stopped before {step:?}")));
        }
        Ok(())
    };
    let mut live = live::lock();
    let had_old = match std::fs::symlink_metadata(target) {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(Error::io(target, e)),
    };
    if had_old {
        stop(Step::SetOldAside)?;
        std::fs::rename(target, &aside).map_err(|e| Error::io(target, e))?;
        live.push(aside.clone());
    }
    stop(Step::PlaceNew)?;
    if let Err(e) = std::fs::rename(staging, target) {
        if had_old && std::fs::rename(&aside, target).is_ok() {
            live::forget_in(&mut live, &aside);
        }
        return Err(Error::io(target, e));
    }
    live::forget_in(&mut live, staging);
    drop(live);
    if had_old {
        stop(Step::DeleteOld)?;
        let _ = remove_any(&aside);
        live::forget(&aside);
    }
    Ok(())
}

/// Removes a folder with its contents, or a file or link.
fn remove_any(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// What [`recover`] did in one folder.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Old results renamed back to their name (the kill fell between the two renames).
    pub restored: Vec<PathBuf>,
    /// Leftover aside copies and staging folders deleted.
    pub removed: Vec<PathBuf>,
}

/// A leftover's name `.NAME.old-PID` or `.NAME.partial-PID`: (aside?, NAME, PID).
fn leftover(file_name: &str) -> Option<(bool, &str, u32)> {
    let rest = file_name.strip_prefix('.')?;
    for (aside, tag) in [(true, ".old-"), (false, ".partial-")] {
        if let Some((name, pid)) = rest.rsplit_once(tag)
            && !name.is_empty()
            && !pid.is_empty()
            && pid.bytes().all(|b| b.is_ascii_digit())
            && let Ok(pid) = pid.parse()
        {
            return Some((aside, name, pid));
        }
    }
    None
}

/// Finishes what killed processes left in the folder `parent` (the module notes' recovery):
/// restores or deletes their aside copies, then deletes their staging folders. Best effort:
/// what cannot be read or moved is left as it is.
pub fn recover(parent: &Path) -> Recovered {
    recover_with(parent, &live::in_use)
}

/// [`recover`] with the test of whether a leftover of process `pid` may still be in use.
pub fn recover_with(parent: &Path, in_use: &dyn Fn(&Path, u32) -> bool) -> Recovered {
    let mut done = Recovered::default();
    let Ok(entries) = std::fs::read_dir(parent) else {
        return done;
    };
    let mut found: Vec<(bool, String, u32, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let file_name = e.file_name().to_string_lossy().into_owned();
            let (aside, name, pid) = leftover(&file_name)?;
            Some((aside, name.to_string(), pid, e.path()))
        })
        .collect();
    // Aside copies first (true sorts after false: reverse), then staging folders.
    found.sort_by(|a, b| b.0.cmp(&a.0).then(a.3.cmp(&b.3)));
    for (aside, name, pid, path) in found {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if in_use(&path, pid) {
            continue;
        }
        if aside {
            recover_aside(parent, &name, pid, &path, &mut done);
        } else if meta.is_dir() {
            let gone = match Marker::read(&path) {
                Some(m) if m.from_this_host() && m.pid == pid => {
                    std::fs::remove_dir_all(&path).is_ok()
                }
                Some(_) => false,
                // Killed before its marker was in place: surely ours only when it holds
                // nothing but the marker's temporary file.
                None => {
                    only_a_marker_being_written(&path) && std::fs::remove_dir_all(&path).is_ok()
                }
            };
            if gone {
                done.removed.push(path);
            }
        }
    }
    done
}

/// Whether the folder `dir` is empty or holds only the marker's temporary file (a staging
/// folder killed while its marker was being written).
fn only_a_marker_being_written(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().all(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(&format!(".{MARKER}.partial-"))
        })
    })
}

/// The aside copy `path` = `parent/.NAME.old-PID` of a process that is gone, acted on only
/// when it is provably fslens's: the process's staging folder is still there (the kill fell
/// between the two renames: the old result is restored), or NAME holds that process's new
/// result (the kill fell in the deletion: the copy is deleted), or the copy is itself an
/// fslens folder and NAME is missing (restored). Anything else with such a name is left alone.
fn recover_aside(parent: &Path, name: &str, pid: u32, path: &Path, done: &mut Recovered) {
    let ours = |m: &Marker| m.from_this_host() && m.pid == pid;
    let target = parent.join(name);
    let target_missing = std::fs::symlink_metadata(&target).is_err();
    let staging = Marker::read(&parent.join(format!(".{name}.partial-{pid}")));
    if staging.as_ref().is_some_and(|m| !ours(m)) {
        return; // another machine's replacement, perhaps still running
    }
    if target_missing && (staging.is_some() || Marker::read(path).is_some()) {
        if std::fs::rename(path, &target).is_ok() {
            done.restored.push(target);
        }
    } else if !target_missing
        && Marker::read(&target).is_some_and(|m| ours(&m))
        && remove_any(path).is_ok()
    {
        done.removed.push(path.to_path_buf());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftover_names_parse() {
        assert_eq!(leftover(".run.old-42"), Some((true, "run", 42)));
        assert_eq!(leftover(".my.out.partial-7"), Some((false, "my.out", 7)));
        assert_eq!(leftover(".x.partial-7.tmp"), None);
        assert_eq!(leftover("run.old-42"), None);
        assert_eq!(leftover("..old-42"), None);
        assert_eq!(leftover(".run.old-"), None);
        assert_eq!(leftover(".fslens-output"), None);
    }
}
