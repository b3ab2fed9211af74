//! Single output files: written through a temporary sibling and a rename, so the final name
//! only ever holds a complete file, and never over one of the command's own inputs.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::live;
use crate::{Error, Result};

/// Writes `bytes` to `path` through the temporary file [`temporary_name`] in the same folder
/// and a rename. The temporary file is registered as live output, so a signal removes it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temporary_name(path);
    live::register(&tmp);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    live::forget(&tmp);
    result.map_err(|e| Error::io(path, e))
}

/// `dir/name` → `dir/.name.partial-<pid>`: hidden, and unique per process.
pub fn temporary_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

/// Refuses an output file `out` (given as `key`) that is one of `inputs` under another
/// spelling: the same path, a symbolic or hard link to it. Inputs that do not exist are
/// skipped (reading them fails on its own).
pub fn refuse_overwriting_inputs(out: &Path, key: &str, inputs: &[(&str, &Path)]) -> Result<()> {
    let Ok(out_meta) = std::fs::metadata(out) else {
        return Ok(()); // a new file is no input
    };
    if out_meta.is_dir() {
        return Err(Error::config(
            key,
            format!(
                "{} is a folder; name the file to write, e.g. {}",
                out.display(),
                out.join("score.npy").display()
            ),
        ));
    }
    for (flag, input) in inputs {
        if same_file(out, &out_meta, input) {
            return Err(Error::config(
                key,
                format!(
                    "{} is the {flag} input of this command; writing there would destroy it: \
                     choose another {key}",
                    out.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Whether `input` is the file `out` (whose metadata is `out_meta`).
fn same_file(out: &Path, out_meta: &std::fs::Metadata, input: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let _ = out;
        std::fs::metadata(input)
            .is_ok_and(|m| m.dev() == out_meta.dev() && m.ino() == out_meta.ino())
    }
    #[cfg(not(unix))]
    {
        let _ = out_meta;
        match (std::fs::canonicalize(out), std::fs::canonicalize(input)) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_leaves_no_temporary() {
        let d = std::env::temp_dir().join(format!("fslens-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("x.bin");
        write_atomic(&p, b"abc").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"abc");
        let names: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(!live::is_registered(&temporary_name(&p)));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn an_input_under_any_name_is_refused() {
        let d = std::env::temp_dir().join(format!("fslens-inputs-{}", std::process::id()));
        std::fs::create_dir_all(d.join("sub")).unwrap();
        let x = d.join("x.npy");
        std::fs::write(&x, b"input").unwrap();
        let other = d.join("other.npy");
        std::fs::write(&other, b"old output").unwrap();
        let inputs = [("--atoms", d.join("atoms.npy")), ("--x", x.clone())];
        let inputs: Vec<(&str, &Path)> = inputs.iter().map(|(k, p)| (*k, p.as_path())).collect();
        // A new file and an existing non-input file are fine.
        refuse_overwriting_inputs(&d.join("new.npy"), "--out", &inputs).unwrap();
        refuse_overwriting_inputs(&other, "--out", &inputs).unwrap();
        // The input itself, a roundabout spelling, a symbolic and a hard link to it.
        let hard = d.join("hard.npy");
        std::fs::hard_link(&x, &hard).unwrap();
        let soft = d.join("soft.npy");
        #[cfg(unix)]
        std::os::unix::fs::symlink(&x, &soft).unwrap();
        for out in [x.clone(), d.join("sub/../x.npy"), hard, soft] {
            if !out.exists() {
                continue;
            }
            let e = refuse_overwriting_inputs(&out, "--out", &inputs)
                .unwrap_err()
                .to_string();
            assert!(e.contains("--x input") && e.contains("--out"), "{e}");
        }
        let e = refuse_overwriting_inputs(&d, "--out", &inputs)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is a folder"), "{e}");
        assert_eq!(std::fs::read(&x).unwrap(), b"input");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
