//! The output paths this process is writing right now (staging folders, aside copies,
//! temporary files), so that a signal can remove them, and whether another process that left
//! such a path behind is still running.
//!
//! The registry is one lock over a list. Whoever changes what lies under an output's final name
//! (the two renames of a replacement, `super::replace::place`) holds the lock throughout, and so
//! does [`remove_live_outputs`]: a signal handled during a replacement waits for it to finish.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// The registry, locked. A panic elsewhere never makes it unusable.
pub(crate) fn lock() -> MutexGuard<'static, Vec<PathBuf>> {
    LIVE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Adds `path` to the registry.
pub(crate) fn register(path: &Path) {
    lock().push(path.to_path_buf());
}

/// Removes `path` from the registry (it was renamed into place or deleted).
pub(crate) fn forget(path: &Path) {
    forget_in(&mut lock(), path);
}

/// [`forget`] under a lock already held.
pub(crate) fn forget_in(live: &mut Vec<PathBuf>, path: &Path) {
    live.retain(|p| p != path);
}

/// Whether this process registered `path`.
pub(crate) fn is_registered(path: &Path) -> bool {
    lock().iter().any(|p| p == path)
}

/// Removes every registered path (folders with their contents, files) and empties the
/// registry: what the command does on SIGINT, SIGTERM or SIGHUP before it ends. Holds the
/// registry's lock until the process ends, so that no replacement starts after it.
pub fn remove_live_outputs() -> MutexGuard<'static, Vec<PathBuf>> {
    let mut live = lock();
    for path in live.drain(..) {
        // A writer may add a file while the folder is being removed: try again.
        for _ in 0..3 {
            let gone = match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&path).is_ok(),
                Ok(_) => std::fs::remove_file(&path).is_ok(),
                Err(_) => true,
            };
            if gone {
                break;
            }
        }
    }
    live
}

/// Whether the process `pid` is running on this machine: `Some(false)` when /proc has no entry
/// for it, None where there is no /proc to ask (not Linux). This process counts as running.
pub fn process_alive(pid: u32) -> Option<bool> {
    if pid == std::process::id() {
        return Some(true);
    }
    if !Path::new("/proc/self").exists() {
        return None;
    }
    Some(Path::new("/proc").join(pid.to_string()).exists())
}

/// Whether a leftover `path` of process `pid` may still be in use: registered by this process,
/// or left by another process that is running (or whose state cannot be known).
pub(crate) fn in_use(path: &Path, pid: u32) -> bool {
    if pid == std::process::id() {
        return is_registered(path);
    }
    process_alive(pid) != Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_that_are_gone_are_known_as_gone() {
        if !Path::new("/proc/self").exists() {
            assert_eq!(process_alive(1), None);
            return;
        }
        assert_eq!(process_alive(std::process::id()), Some(true));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        // Reaped: its PID is free (and reused only after the kernel's PID counter wraps).
        assert_eq!(process_alive(pid), Some(false));
        // This process's own leftovers are in use only while registered.
        let p = std::env::temp_dir().join(format!("fslens-live-{}", std::process::id()));
        assert!(!in_use(&p, std::process::id()));
        register(&p);
        assert!(in_use(&p, std::process::id()));
        forget(&p);
        assert!(!in_use(&p, std::process::id()));
        assert!(!in_use(&p, pid));
    }
}
