//! The output folder of a run, written under a temporary name and renamed into place when
//! complete: a run that fails or is killed never leaves a folder that looks finished.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

pub struct OutputDir {
    staging: PathBuf,
    target: PathBuf,
    finished: bool,
}

impl OutputDir {
    /// Starts `target` as a hidden staging folder `.NAME.partial-PID` beside it.
    pub fn create(target: &Path) -> Result<Self> {
        let name = target
            .file_name()
            .ok_or_else(|| {
                Error::config(
                    "--out",
                    format!("{} is not a folder name", target.display()),
                )
            })?
            .to_string_lossy()
            .into_owned();
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
        if target.exists() && !target.is_dir() {
            return Err(Error::config(
                "--out",
                format!(
                    "{} exists and is not a folder; choose another --out",
                    target.display()
                ),
            ));
        }
        let staging = parent.join(format!(".{name}.partial-{}", std::process::id()));
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
        }
        std::fs::create_dir(&staging).map_err(|e| Error::io(&staging, e))?;
        Ok(OutputDir {
            staging,
            target: target.to_path_buf(),
            finished: false,
        })
    }

    /// Where files go while the run is in progress.
    pub fn path(&self) -> &Path {
        &self.staging
    }

    /// The final location.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Moves the staging folder to its final name, replacing an older result there.
    pub fn finish(mut self) -> Result<PathBuf> {
        let old = self.staging.with_file_name(format!(
            ".{}.old-{}",
            self.target
                .file_name()
                .unwrap_or_default()
                .to_string_lossy(),
            std::process::id()
        ));
        if self.target.exists() {
            std::fs::rename(&self.target, &old).map_err(|e| Error::io(&self.target, e))?;
        }
        std::fs::rename(&self.staging, &self.target).map_err(|e| Error::io(&self.target, e))?;
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
        }
        self.finished = true;
        Ok(self.target.clone())
    }
}

impl Drop for OutputDir {
    /// A run that ends in an error removes its staging folder.
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_dir_all(&self.staging);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_folder_appears_only_when_finished() {
        let root = std::env::temp_dir().join(format!("fslens-out-{}", std::process::id()));
        let target = root.join("run");
        {
            let out = OutputDir::create(&target).unwrap();
            std::fs::write(out.path().join("a.txt"), "x").unwrap();
            assert!(!target.exists());
            // Dropped without finish: nothing is left behind.
        }
        assert!(!target.exists());
        assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
        let out = OutputDir::create(&target).unwrap();
        std::fs::write(out.path().join("b.txt"), "y").unwrap();
        out.finish().unwrap();
        assert!(target.join("b.txt").exists());
        // A second run replaces the first.
        let out = OutputDir::create(&target).unwrap();
        std::fs::write(out.path().join("c.txt"), "z").unwrap();
        out.finish().unwrap();
        assert!(target.join("c.txt").exists() && !target.join("b.txt").exists());
        assert_eq!(std::fs::read_dir(&root).unwrap().count(), 1);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
