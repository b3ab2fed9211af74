//! What this machine can hold, and refusing work that cannot fit before anything is allocated.
//!
//! A size that cannot fit (a config asking for 10⁹ particles, a resize to 10⁵ × 10⁵ pixels, a
//! .npy whose header promises terabytes) used to end in an allocation failure: an abort
//! (SIGABRT) after seconds or minutes of work, or the kernel's OOM killer. Instead, the layers
//! that know the sizes list what the work will hold at once ([`Need`]: the config key or file
//! responsible, the bytes and the formula behind them) and [`check`] compares the total with
//! the machine's memory before the first large allocation, with an error that names the key,
//! the bytes and the fix.
//!
//! **Which memory.** [`memory`] is the machine's physical memory, `MemTotal` in
//! `/proc/meminfo`, lowered to the memory limit of the process's control group when one is set
//! (cgroup v2 `memory.max` or v1 `memory.limit_in_bytes`, as Slurm and containers set them).
//! Not `MemAvailable`: that changes with whatever else runs, and refusing on it would refuse
//! runs that fit once other jobs end. The needs are lower bounds (the largest arrays the work
//! cannot do without, not every buffer), so a refused request could never have run here; one
//! that passes may still need more than what is free at the moment. Where `/proc/meminfo` is
//! absent (not Linux) nothing is checked.

use std::path::Path;

use crate::{Error, Result};

/// The memory a process on this machine can use at most.
#[derive(Clone, Debug, PartialEq)]
pub struct Memory {
    pub bytes: f64,
    /// Where the figure comes from, for messages.
    pub source: String,
}

/// Physical memory (`MemTotal`), lowered to the control group's limit when there is one;
/// None where `/proc/meminfo` cannot be read.
pub fn memory() -> Option<Memory> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let total = mem_total(&meminfo)?;
    let mut memory = Memory {
        bytes: total,
        source: "MemTotal in /proc/meminfo".into(),
    };
    if let Some((limit, file)) = cgroup_limit()
        && limit < memory.bytes
    {
        memory = Memory {
            bytes: limit,
            source: format!("the memory limit of this process's control group, {file}"),
        };
    }
    Some(memory)
}

/// `MemTotal` of a /proc/meminfo text, in bytes.
fn mem_total(meminfo: &str) -> Option<f64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

/// The smallest memory limit on the way from this process's control group up to the root
/// (cgroup v2 `memory.max`, v1 `memory.limit_in_bytes`), with the file that sets it.
fn cgroup_limit() -> Option<(f64, String)> {
    let groups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut best: Option<(f64, String)> = None;
    for line in groups.lines() {
        // "0::/path" (v2) or "4:memory:/path" (v1).
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let (root, file) = match controllers {
            "" => ("/sys/fs/cgroup", "memory.max"),
            c if c.split(',').any(|c| c == "memory") => {
                ("/sys/fs/cgroup/memory", "memory.limit_in_bytes")
            }
            _ => continue,
        };
        // A container may mount its own group as the root: walk up to whatever is there.
        let mut dir = Path::new(root).join(path.trim_start_matches('/'));
        while dir.starts_with(root) {
            let limit_file = dir.join(file);
            if let Ok(text) = std::fs::read_to_string(&limit_file)
                && let Ok(limit) = text.trim().parse::<f64>()
                && best.as_ref().is_none_or(|(b, _)| limit < *b)
            {
                best = Some((limit, limit_file.display().to_string()));
            }
            if !dir.pop() {
                break;
            }
        }
    }
    best
}

/// Bytes in decimal units with three significant digits at most: `512 B`, `23.4 GB`, `3.1 TB`.
pub fn human_bytes(bytes: f64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut value = bytes.max(0.0);
    let mut unit = 0;
    while value >= 999.5 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} B")
    } else if value < 9.95 {
        format!("{value:.2} {}", UNITS[unit])
    } else if value < 99.5 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

/// One allocation (or group of allocations) that work cannot do without.
#[derive(Clone, Debug, PartialEq)]
pub struct Need {
    /// The config key, flag or file that sets the size (`sampling.particles`, `--batch`, …).
    pub key: String,
    /// Its value as the user wrote it.
    pub value: String,
    /// What is held: "the particle clouds the run keeps".
    pub what: String,
    /// How the bytes follow from the sizes: "2 samplers × 52 clouds × K × D × 4 bytes, D = 256".
    pub formula: String,
    pub bytes: f64,
    /// The advice: "lower sampling.particles".
    pub fix: String,
}

/// Refuses `needs` (held at the same time) when together they exceed this machine's
/// [`memory`]; the error names the largest need's key. Nothing is checked without
/// /proc/meminfo.
pub fn check(needs: &[Need]) -> Result<()> {
    match shortfall(needs, memory().as_ref()) {
        Some((key, problem)) => Err(Error::config(key, problem)),
        None => Ok(()),
    }
}

/// When `needs` exceed `memory`: the key of the largest need and the problem text (for
/// callers that name a file rather than a key).
pub fn shortfall(needs: &[Need], memory: Option<&Memory>) -> Option<(String, String)> {
    let memory = memory?;
    let total: f64 = needs.iter().map(|n| n.bytes).sum();
    if total.is_nan() || total <= memory.bytes {
        return None;
    }
    let largest = needs.iter().max_by(|a, b| a.bytes.total_cmp(&b.bytes))?;
    let others = if needs.len() > 1 && largest.bytes < memory.bytes {
        format!(
            ", {} in all with {}",
            human_bytes(total),
            needs
                .iter()
                .filter(|n| !std::ptr::eq(*n, largest))
                .map(|n| format!("{} for {}", human_bytes(n.bytes), n.what))
                .collect::<Vec<_>>()
                .join(" and ")
        )
    } else {
        String::new()
    };
    Some((
        largest.key.clone(),
        format!(
            "{} needs {} for {} ({}){others}, but this machine has {} of memory ({}); {}",
            largest.value,
            human_bytes(largest.bytes),
            largest.what,
            largest.formula,
            human_bytes(memory.bytes),
            memory.source,
            largest.fix
        ),
    ))
}

/// Where an atom set is held (flag `--atom-store`): in memory (float32 or the engine's
/// encoding, counted against RAM), or `mapped`, a data-cache file memory-mapped read-only
/// ([`crate::data::mapped`]), which costs disk and page cache: the kernel keeps what fits and
/// drops the rest, so it is not counted against RAM. `auto` maps when the float32 images
/// would take more than [`AUTO_MAP_FRACTION`] of the machine's memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AtomPlacement {
    #[default]
    Auto,
    Memory,
    Mapped,
}

impl crate::choices::Choice for AtomPlacement {
    const KEY: &'static str = "--atom-store";
    const WHAT: &'static str = "atom store";
    const NAMES: &'static [(&'static str, Self)] = &[
        ("auto", AtomPlacement::Auto),
        ("memory", AtomPlacement::Memory),
        ("mapped", AtomPlacement::Mapped),
    ];
}
crate::choice_by_name!(AtomPlacement);

/// `auto` maps an atom set whose float32 images exceed this fraction of [`memory`]: the rest
/// is left for the copies a run makes of them and for everything else on the machine.
pub const AUTO_MAP_FRACTION: f64 = 0.5;

impl AtomPlacement {
    /// Whether the atoms are mapped, for float32 images of `f32_bytes` on a machine of
    /// `memory` (unknown memory: `auto` keeps them in memory, as before).
    pub fn maps(self, f32_bytes: f64, memory: Option<&Memory>) -> bool {
        match self {
            AtomPlacement::Memory => false,
            AtomPlacement::Mapped => true,
            AtomPlacement::Auto => memory.is_some_and(|m| f32_bytes > AUTO_MAP_FRACTION * m.bytes),
        }
    }
}

/// Free bytes for an unprivileged writer on the file system of `dir` (the nearest existing
/// folder above it); None where it cannot be asked.
pub fn disk_free(dir: &Path) -> Option<f64> {
    let mut dir = dir.to_path_buf();
    while !dir.exists() {
        if !dir.pop() {
            return None;
        }
    }
    if dir.as_os_str().is_empty() {
        dir = ".".into();
    }
    disk_free_at(&dir)
}

#[cfg(unix)]
fn disk_free_at(dir: &Path) -> Option<f64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a zeroed struct the call fills.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as f64 * st.f_frsize as f64)
}

#[cfg(not(unix))]
fn disk_free_at(_dir: &Path) -> Option<f64> {
    None
}

/// Refuses writing `bytes` into `dir` (config key or flag `key`) when its file system has
/// less free space, with `fix` as the advice; nothing is checked where the space is unknown.
pub fn check_disk(key: &str, dir: &Path, bytes: f64, fix: &str) -> Result<()> {
    match disk_free(dir) {
        Some(free) if bytes > free => Err(Error::config(
            key,
            format!(
                "the mapped atom entry needs {} on disk in {}, which has {} free; {fix}",
                human_bytes(bytes),
                dir.display(),
                human_bytes(free)
            ),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn need(key: &str, bytes: f64) -> Need {
        Need {
            key: key.into(),
            value: "7".into(),
            what: format!("the {key} buffer"),
            formula: "K × 4 bytes".into(),
            bytes,
            fix: format!("lower {key}"),
        }
    }

    #[test]
    fn bytes_read_in_decimal_units() {
        assert_eq!(human_bytes(0.0), "0 B");
        assert_eq!(human_bytes(999.0), "999 B");
        assert_eq!(human_bytes(1000.0), "1.00 kB");
        assert_eq!(human_bytes(23.4e9), "23.4 GB");
        assert_eq!(human_bytes(3.136e12), "3.14 TB");
        assert_eq!(human_bytes(512e15), "512 PB");
        assert_eq!(human_bytes(999.6e6), "1.00 GB");
    }

    #[test]
    fn the_largest_need_is_named_with_the_total() {
        let memory = Memory {
            bytes: 10e9,
            source: "test".into(),
        };
        assert_eq!(
            shortfall(&[need("a", 4e9), need("b", 5e9)], Some(&memory)),
            None
        );
        assert_eq!(shortfall(&[need("a", 4e12)], None), None);
        let (key, text) = shortfall(&[need("a", 4e12), need("b", 5e9)], Some(&memory)).unwrap();
        assert_eq!(key, "a");
        assert_eq!(
            text,
            "7 needs 4.00 TB for the a buffer (K × 4 bytes), but this machine has 10.0 GB of \
             memory (test); lower a"
        );
        // Neither alone is too big: the total is, and the message says what adds up.
        let (key, text) = shortfall(&[need("a", 4e9), need("b", 7e9)], Some(&memory)).unwrap();
        assert_eq!(key, "b");
        assert!(
            text.contains("7.00 GB for the b buffer")
                && text.contains("11.0 GB in all with 4.00 GB for the a buffer"),
            "{text}"
        );
        let e = Error::config(key, text).to_string();
        assert!(e.starts_with("b: 7 needs"), "{e}");
    }

    #[test]
    fn meminfo_and_the_machine() {
        let text = "MemTotal:       24684092 kB\nMemFree:  406716 kB\n";
        assert_eq!(mem_total(text), Some(24684092.0 * 1024.0));
        assert_eq!(mem_total("MemFree: 3 kB\n"), None);
        if let Ok(meminfo) = std::fs::read_to_string("/proc/meminfo") {
            let m = memory().unwrap();
            assert!(m.bytes > 1e8 && m.bytes <= mem_total(&meminfo).unwrap());
        }
    }
}
