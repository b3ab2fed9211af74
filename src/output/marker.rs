//! `.fslens-output`: the file that makes a folder an fslens folder (see the module notes of
//! [`super`]). A small JSON record, written first into every folder fslens writes:
//!
//! ```json
//! {"fslens_output": 1, "command": "run", "version": "0.1.0",
//!  "created": "2026-11-28T10:04:31Z", "host": "node3", "pid": 4242}
//! ```
//!
//! `host` and `pid` name the process that wrote the folder: recovery removes a staging folder
//! only when it was written on this machine by a process that is gone.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::Result;

/// The marker's file name.
pub const MARKER: &str = ".fslens-output";

/// The marker's record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// The format version, 1.
    pub fslens_output: u32,
    /// The command that wrote the folder: `run`, `compare`, `demo`, `diagnose`, `sweep`, `merge`.
    pub command: String,
    /// The fslens version that wrote it.
    pub version: String,
    /// When it was started, UTC, RFC 3339.
    pub created: String,
    /// The machine (host name) of the writing process.
    #[serde(default)]
    pub host: String,
    /// The writing process.
    #[serde(default)]
    pub pid: u32,
}

impl Marker {
    /// The marker of a folder this process starts writing for `command`.
    pub fn new(command: &str) -> Marker {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Marker {
            fslens_output: 1,
            command: command.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            created: utc_text(now),
            host: host_name(),
            pid: std::process::id(),
        }
    }

    /// Writes the marker into `dir` (atomically).
    pub fn write(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("a marker serialises");
        super::file::write_atomic(&dir.join(MARKER), format!("{text}\n").as_bytes())
    }

    /// The marker of `dir`, when it has a readable one.
    pub fn read(dir: &Path) -> Option<Marker> {
        let text = std::fs::read_to_string(dir.join(MARKER)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Whether this marker was written on this machine.
    pub fn from_this_host(&self) -> bool {
        self.host == host_name()
    }
}

/// This machine's name (Linux: /proc/sys/kernel/hostname; else $HOSTNAME), or "" when unknown.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// Seconds since 1970 as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian calendar, UTC).
fn utc_text(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rest = secs % 86400;
    // The civil date of a day count since 1970-01-01, by 400-year eras of 146097 days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates_match_known_ones() {
        assert_eq!(utc_text(0), "1970-01-01T00:00:00Z");
        // `date -u -d @951782400`: the leap day of 2000.
        assert_eq!(utc_text(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_text(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(utc_text(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn markers_round_trip_and_bad_ones_do_not_count() {
        let dir = std::env::temp_dir().join(format!("fslens-marker-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(Marker::read(&dir), None);
        let m = Marker::new("run");
        m.write(&dir).unwrap();
        let back = Marker::read(&dir).unwrap();
        assert_eq!(back, m);
        assert!(back.from_this_host() && back.pid == std::process::id());
        std::fs::write(dir.join(MARKER), "not json").unwrap();
        assert_eq!(Marker::read(&dir), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
