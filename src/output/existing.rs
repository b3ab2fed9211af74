//! What lies at an output path already, and whether a command may replace it (the rules of
//! [`super`]'s module notes).

use std::path::{Path, PathBuf};

use super::Destination;
use super::marker::{MARKER, Marker};
use crate::{Error, Result};

/// What an output path holds before a command writes there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Existing {
    /// Nothing.
    Absent,
    /// A folder fslens wrote: it has a readable marker.
    Fslens(Marker),
    /// An empty folder: nothing to lose.
    Empty,
    /// A folder fslens did not write: how many entries it holds, and the first by name.
    Foreign { entries: usize, first: String },
    /// A symbolic link (to a folder or not).
    Link,
    /// A file, or anything else that is not a folder.
    File,
}

/// What `path` holds (a symbolic link is not followed).
pub fn classify(path: &Path) -> Result<Existing> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Existing::Absent),
        Err(e) => return Err(Error::io(path, e)),
    };
    if meta.file_type().is_symlink() {
        return Ok(Existing::Link);
    }
    if !meta.is_dir() {
        return Ok(Existing::File);
    }
    if let Some(marker) = Marker::read(path) {
        return Ok(Existing::Fslens(marker));
    }
    let mut names: Vec<String> = std::fs::read_dir(path)
        .map_err(|e| Error::io(path, e))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(match names.first() {
        None => Existing::Empty,
        Some(first) => Existing::Foreign {
            entries: names.len(),
            first: first.clone(),
        },
    })
}

/// Refuses `dest` when what lies there may not be replaced: a file always; a folder fslens did
/// not write, a symbolic link, or a folder holding one of `dest.inputs` unless `dest.force`.
/// Returns what lies there.
pub fn check_replaceable(dest: &Destination) -> Result<Existing> {
    let path = &dest.path;
    let existing = classify(path)?;
    let refusal = match &existing {
        Existing::Absent | Existing::Empty => None,
        Existing::File => {
            return Err(Error::config(
                "--out",
                format!(
                    "{} is a file, not a folder; choose another --out",
                    path.display()
                ),
            ));
        }
        Existing::Link => Some((
            format!(
                "{} is a symbolic link, and fslens replaces only the folders it wrote",
                path.display()
            ),
            "the link is removed, not what it points to",
        )),
        Existing::Foreign { entries, first } => Some((
            format!(
                "{} exists and fslens did not write it (it holds {entries} entr{} such as \
                 {first:?} and no {MARKER} file)",
                path.display(),
                if *entries == 1 { "y" } else { "ies" }
            ),
            "everything in it is deleted",
        )),
        Existing::Fslens(_) => input_inside(path, &dest.inputs).map(|input| {
            (
                format!(
                    "{} holds {}, an input of this command, and replacing the folder would \
                     delete it",
                    path.display(),
                    input.display()
                ),
                "everything in it is deleted",
            )
        }),
    };
    match refusal {
        Some((why, consequence)) if !dest.force => Err(Error::config(
            "--out",
            format!("{why}; choose another --out, or pass --force to replace it ({consequence})"),
        )),
        _ => Ok(existing),
    }
}

/// The first of `inputs` that lies inside the folder `dir` (compared as canonical paths).
fn input_inside(dir: &Path, inputs: &[PathBuf]) -> Option<PathBuf> {
    let dir = std::fs::canonicalize(dir).ok()?;
    inputs
        .iter()
        .find(|input| std::fs::canonicalize(input).is_ok_and(|p| p.starts_with(&dir)))
        .cloned()
}
