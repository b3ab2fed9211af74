//! What a sweep's results depend on beyond its axes: the base run config (defaults filled in,
//! the engine overrides applied) and the contents of the data files its jobs read. A job's id
//! hashes its config *and* its data fingerprint ([`super::job_id`]), so a job computed from
//! other data never passes for this one; the sweep folder records the sweep's identity in
//! `OUT/sweep.json`, and a resume whose identity changed is refused, naming what changed,
//! instead of mixing old and new results in one merge.
//!
//! A data file's fingerprint is its size and the SHA-256 of its first and last MiB (the whole
//! file when it is at most 2 MiB): reading 2 MiB is cheap for any data set, it follows the
//! *contents* (a copy of the data on another machine, or under another absolute path, has the
//! same fingerprint, so moving a project keeps its sweep), and an edit, truncation, append or
//! replacement changes it. Not detected: a same-size rewrite confined to the middle of a file
//! larger than 2 MiB. A folder's fingerprint is its files' (walked, sorted by relative path).
//!
//! Files are named by the key that names them and the path as written (`data.path=train.npy`),
//! not by absolute path: the same config next to other data compares as a change.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::RunConfig;
use crate::output::write_atomic;
use crate::plan::Overrides;
use crate::{Error, Result};

/// The file under a sweep folder that records its identity.
pub const IDENTITY_FILE: &str = "sweep.json";

/// Bytes hashed at each end of a data file.
const END_BYTES: u64 = 1 << 20;

/// File fingerprints already computed in this process, by absolute path (a sweep's jobs mostly
/// share their data).
#[derive(Default)]
pub struct Fingerprints {
    memo: HashMap<PathBuf, Vec<(String, String)>>,
}

impl Fingerprints {
    /// `(relative file, "size sha256-of-ends")` of a file (relative file "") or of every file
    /// under a folder; `"missing"` when the path does not exist (the job then fails with the
    /// loader's own message; the fingerprint just has to differ from a present file's).
    fn of(&mut self, path: &Path) -> &[(String, String)] {
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        self.memo.entry(abs.clone()).or_insert_with(|| {
            let mut out = Vec::new();
            walk(&abs, &abs, &mut out);
            if out.is_empty() && !abs.exists() {
                out.push((String::new(), "missing".into()));
            }
            out
        })
    }
}

fn walk(root: &Path, path: &Path, out: &mut Vec<(String, String)>) {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map(|r| r.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        entries.sort();
        for e in entries {
            walk(root, &e, out);
        }
    } else if path.exists() {
        let rel = path
            .strip_prefix(root)
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let fp = file_fingerprint(path).unwrap_or_else(|e| format!("unreadable ({e})"));
        out.push((rel, fp));
    }
}

/// `"<size> <hex SHA-256 of (first MiB ‖ last MiB)>"`; the whole file when ≤ 2 MiB.
pub fn file_fingerprint(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    let mut h = Sha256::new();
    let mut buf = Vec::new();
    if size <= 2 * END_BYTES {
        file.read_to_end(&mut buf)?;
        h.update(&buf);
    } else {
        buf.resize(END_BYTES as usize, 0);
        file.read_exact(&mut buf)?;
        h.update(&buf);
        file.seek(SeekFrom::Start(size - END_BYTES))?;
        file.read_exact(&mut buf)?;
        h.update(&buf);
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{size} {hex}"))
}

/// The data files a run config reads, as (`key=path as written`, path): the data set
/// (`data.path`, with the kind's default filled in; `data.labels`), the truth image
/// (`truth.file`) and files named in `measurement.operator` (matrix .npy, mask .png).
pub fn data_files(cfg: &RunConfig, base_dir: &Path) -> Vec<(String, PathBuf)> {
    let resolve = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base_dir.join(p)
        }
    };
    let data = cfg.data.resolved();
    let mut files = Vec::new();
    for (key, p) in [
        ("data.path", &data.path),
        ("data.labels", &data.labels),
        ("truth.file", &cfg.truth.file),
    ] {
        if let Some(p) = p {
            files.push((format!("{key}={}", p.display()), resolve(p)));
        }
    }
    for p in crate::operators::files_named(&cfg.measurement.operator, base_dir) {
        let written = p.strip_prefix(base_dir).unwrap_or(&p).display().to_string();
        files.push((format!("measurement.operator={written}"), p));
    }
    files
}

/// Fingerprint lines of a config's data files: `key=path[/file] size sha` per file, sorted.
pub fn data_fingerprint(
    cfg: &RunConfig,
    base_dir: &Path,
    memo: &mut Fingerprints,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (name, path) in data_files(cfg, base_dir) {
        for (rel, fp) in memo.of(&path) {
            let key = if rel.is_empty() {
                name.clone()
            } else {
                format!("{name}/{rel}")
            };
            out.insert(key, fp.clone());
        }
    }
    out
}

/// A sweep's identity as recorded in `OUT/sweep.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    pub format: String,
    /// The base config as JSON (serde defaults filled in when it is a complete run config, the
    /// engine overrides applied), axis keys removed: the axes may change between runs of a
    /// sweep (new values add jobs; ids of the old ones stay).
    pub base: serde_json::Value,
    /// Axis keys of the sweep that wrote this (removed from `base`).
    pub axes: Vec<String>,
    /// Data file (`key=path as written[/file]`) → fingerprint, over every job.
    pub data: BTreeMap<String, String>,
}

const FORMAT: &str = "fslens-sweep-identity-v1";

impl Identity {
    /// The identity of `sweep` run with `overrides`; `data` is the union of its jobs'
    /// fingerprints.
    pub fn of(
        sweep: &super::Sweep,
        overrides: Overrides,
        data: BTreeMap<String, String>,
    ) -> Identity {
        use crate::choices::Choice;
        let mut table = sweep.base.clone();
        if let Some(b) = overrides.backend {
            table.insert("backend".into(), toml::Value::String(b.name().into()));
        }
        if let Some(st) = overrides.storage {
            table.insert("storage".into(), toml::Value::String(st.name().into()));
        }
        if let Some(dev) = overrides.devices {
            table.insert("devices".into(), toml::Value::String(dev.to_string()));
        }
        // A base that is a run config by itself is compared resolved (writing a default out
        // is no change); one that needs the axes to be complete, as written.
        let base = match toml::Value::Table(table.clone()).try_into::<RunConfig>() {
            Ok(cfg) => serde_json::to_value(&cfg).expect("a run config serialises"),
            Err(_) => serde_json::to_value(&table).expect("TOML converts to JSON"),
        };
        let axes: Vec<String> = sweep.axes.iter().map(|(k, _)| k.clone()).collect();
        let mut flat = BTreeMap::new();
        flatten("", &base, &mut flat);
        Identity {
            format: FORMAT.into(),
            base: unflatten_without(&flat, &axes),
            axes,
            data,
        }
    }

    /// What differs from `earlier` (the recorded identity), one line each; empty when the
    /// same. Keys that are an axis of either sweep are not compared (the axes set them), and
    /// a data file only one of them reads is new or unused, not changed.
    pub fn changes_since(&self, earlier: &Identity) -> Vec<String> {
        let axes: BTreeSet<&String> = self.axes.iter().chain(&earlier.axes).collect();
        let swept = |k: &str| {
            axes.iter()
                .any(|a| k == a.as_str() || k.starts_with(&format!("{a}.")))
        };
        let (mut now, mut then) = (BTreeMap::new(), BTreeMap::new());
        flatten("", &self.base, &mut now);
        flatten("", &earlier.base, &mut then);
        let keys: BTreeSet<&String> = now.keys().chain(then.keys()).collect();
        let mut out = Vec::new();
        for k in keys.into_iter().filter(|k| !swept(k)) {
            match (then.get(k), now.get(k)) {
                (Some(a), Some(b)) if a == b => {}
                (a, b) => out.push(format!(
                    "base config `{k}`: {} -> {}",
                    a.map_or("(unset)".into(), |v| v.to_string()),
                    b.map_or("(unset)".into(), |v| v.to_string())
                )),
            }
        }
        for (file, fp) in &self.data {
            if let Some(old) = earlier.data.get(file)
                && old != fp
            {
                out.push(format!(
                    "data file {file}: contents changed (size and SHA-256 of its ends {old} -> {fp})"
                ));
            }
        }
        out
    }

    /// Checks `dir`'s recorded identity against this one: Ok when it matches or none is
    /// recorded; an error naming every change and the fixes otherwise.
    pub fn check(&self, dir: &Path) -> Result<()> {
        let Some(earlier) = read(dir)? else {
            return Ok(());
        };
        let changes = self.changes_since(&earlier);
        if changes.is_empty() {
            return Ok(());
        }
        Err(Error::data(
            dir,
            format!(
                "holds a sweep run with a different base config or data, so its jobs would mix with this one's:\n  {}\nrun with --force to discard its jobs and start over, or give a new --out",
                changes.join("\n  ")
            ),
        ))
    }

    /// Records this identity in `dir` (atomically; the union of the data files of this
    /// identity and the recorded one, so shards with different jobs keep each other's).
    pub fn record(&self, dir: &Path) -> Result<()> {
        let mut merged = self.clone();
        if let Some(earlier) = read(dir)? {
            for (k, v) in earlier.data {
                merged.data.entry(k).or_insert(v);
            }
        }
        let text = serde_json::to_string_pretty(&merged).expect("identities serialise");
        write_atomic(&dir.join(IDENTITY_FILE), text.as_bytes())
    }
}

/// The identity recorded in `dir`, None when there is none (a sweep folder from before
/// identities were recorded, or a fresh one).
pub fn read(dir: &Path) -> Result<Option<Identity>> {
    let path = dir.join(IDENTITY_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path, e)),
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        Error::data(
            &path,
            format!("is not a sweep identity ({e}); delete it to record the current one"),
        )
    })
}

/// `a.b.c` → leaf value (arrays are leaves).
fn flatten(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, serde_json::Value>) {
    match v {
        serde_json::Value::Object(map) if !map.is_empty() => {
            for (k, x) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, x, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

/// The flat map back as nested objects, leaving out keys at or under any of `axes`.
fn unflatten_without(
    flat: &BTreeMap<String, serde_json::Value>,
    axes: &[String],
) -> serde_json::Value {
    let mut root = serde_json::Map::new();
    for (k, v) in flat {
        if axes
            .iter()
            .any(|a| k == a || k.starts_with(&format!("{a}.")))
        {
            continue;
        }
        let parts: Vec<&str> = k.split('.').collect();
        let mut here = &mut root;
        for p in &parts[..parts.len() - 1] {
            here = here
                .entry(p.to_string())
                .or_insert_with(|| serde_json::Value::Object(Default::default()))
                .as_object_mut()
                .expect("flattened keys nest");
        }
        here.insert(parts[parts.len() - 1].to_string(), v.clone());
    }
    serde_json::Value::Object(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("fslens-identity-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn fingerprints_hash_the_ends_of_large_files() {
        let dir = scratch("ends");
        // Small file: the whole file.
        std::fs::write(dir.join("small"), b"abc").unwrap();
        assert_eq!(
            file_fingerprint(&dir.join("small")).unwrap(),
            "3 ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // Large file: first MiB then last MiB, compared with an independent digest.
        let n = 3 * END_BYTES as usize + 17;
        let bytes: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(dir.join("big"), &bytes).unwrap();
        let mut h = Sha256::new();
        h.update(&bytes[..END_BYTES as usize]);
        h.update(&bytes[n - END_BYTES as usize..]);
        let want: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            file_fingerprint(&dir.join("big")).unwrap(),
            format!("{n} {want}")
        );
        // An edit in the last MiB changes it; truncation changes it.
        let mut edited = bytes.clone();
        edited[n - 10] ^= 1;
        std::fs::write(dir.join("big"), &edited).unwrap();
        assert_ne!(
            file_fingerprint(&dir.join("big")).unwrap(),
            format!("{n} {want}")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn changes_name_the_key_and_skip_the_axes() {
        let id = |base: serde_json::Value, axes: &[&str], data: &[(&str, &str)]| {
            let mut flat = BTreeMap::new();
            flatten("", &base, &mut flat);
            let axes: Vec<String> = axes.iter().map(|s| s.to_string()).collect();
            Identity {
                format: FORMAT.into(),
                base: unflatten_without(&flat, &axes),
                axes,
                data: data
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            }
        };
        let a = id(
            serde_json::json!({"seed": 0, "sampling": {"particles": 32, "steps": 10}}),
            &["seed"],
            &[("data.path=x.npy", "1 aa")],
        );
        assert!(a.base.get("seed").is_none());
        // The axis value in the base and a new data file are no change.
        let b = id(
            serde_json::json!({"seed": 5, "sampling": {"particles": 32, "steps": 10}}),
            &["seed"],
            &[("data.path=x.npy", "1 aa"), ("data.path=y.npy", "2 bb")],
        );
        assert!(b.changes_since(&a).is_empty());
        let c = id(
            serde_json::json!({"seed": 0, "sampling": {"particles": 64, "steps": 10}}),
            &["seed"],
            &[("data.path=x.npy", "1 ab")],
        );
        let changes = c.changes_since(&a);
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert_eq!(changes[0], "base config `sampling.particles`: 32 -> 64");
        assert!(changes[1].contains("data.path=x.npy") && changes[1].contains("1 aa -> 1 ab"));
    }
}
