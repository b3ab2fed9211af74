//! The rows of merged sweep outputs: the complete jobs of one or more sweep folders (shards)
//! gathered into one table, and that table as CSV and JSON lines.
//!
//! One row per job, ordered by the job's position in the sweep (then id): the axis values, then
//! for every sampler the final metrics of metrics.json and the timings of summary.json. Merging
//! the shards of a sweep gives the same rows as one unsharded run of it (the timings aside).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use super::JobRecord;
use crate::{Error, Result};

/// The per-sampler numbers of a merged row (final time, metrics.json / summary.json).
pub const METRICS: [&str; 9] = [
    "mode_tv",
    "hallucination_rate",
    "off_support_rate",
    "likelihood_hallucination_rate",
    "spread_ratio",
    "psnr_denoised",
    "ssim_denoised",
    "class_tv_to_exact",
    "seconds_per_step",
];

/// Fields that measure time, not results: they differ between otherwise identical runs.
pub const TIMING_FIELDS: [&str; 2] = ["seconds_per_step", "wall_seconds"];

/// One finished job.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub id: String,
    pub index: usize,
    pub axes: BTreeMap<String, Value>,
    /// Sampler → metric name → value (absent when the run has no such number, e.g.
    /// class_tv_to_exact without labels or seconds_per_step of `exact`).
    pub samplers: BTreeMap<String, BTreeMap<String, f64>>,
    /// Seconds the whole job took (summary.json total_seconds).
    pub wall_seconds: f64,
    /// Which sweep output folder it came from.
    pub source: PathBuf,
    /// Sampler → the checkpoint metrics over t ([`CURVE_METRICS`]), the final time last, in
    /// the order metrics.json lists them.
    #[serde(skip)]
    pub curves: BTreeMap<String, Curve>,
}

/// A sampler's checkpoint metrics of one job: (t, metric name → value) per checkpoint.
pub type Curve = Vec<(f64, BTreeMap<String, f64>)>;

/// The per-checkpoint numbers of metrics.json plotted over t in the sweep report.
pub const CURVE_METRICS: [&str; 4] = [
    "mode_tv",
    "hallucination_rate",
    "off_support_rate",
    "spread_ratio",
];

/// A checkpoint record's [`CURVE_METRICS`] and its t.
fn curve_point(record: &Value) -> Option<(f64, BTreeMap<String, f64>)> {
    let t = record["t"].as_f64()?;
    let values = CURVE_METRICS
        .iter()
        .filter_map(|k| record[*k].as_f64().map(|v| (k.to_string(), v)))
        .collect();
    Some((t, values))
}

/// A job that failed and has no complete folder in any merged directory.
#[derive(Clone, Debug, Serialize)]
pub struct Failure {
    pub id: String,
    pub index: Option<usize>,
    pub error: String,
}

/// A job folder found under its final name that is not intact ([`super::check::job_folder`]):
/// left out of the rows.
#[derive(Clone, Debug, Serialize)]
pub struct Damaged {
    pub id: String,
    /// What is wrong, naming the file.
    pub reason: String,
    /// The sweep output folder it is in.
    pub source: PathBuf,
}

/// All rows of the merged directories.
#[derive(Clone, Debug, Default)]
pub struct Merged {
    pub rows: Vec<Row>,
    /// Axis keys in sweep order.
    pub axes: Vec<String>,
    /// Every sampler name that appears, sorted.
    pub samplers: Vec<String>,
    pub failures: Vec<Failure>,
    /// Damaged job folders with no intact copy in another merged directory.
    pub damaged: Vec<Damaged>,
    /// Jobs found complete in more than one directory (the first is kept).
    pub duplicates: usize,
}

/// Reads the complete jobs (`DIR/jobs/<id>/`) and failures (`DIR/failed/<id>/`) of `dirs`.
pub fn gather(dirs: &[PathBuf]) -> Result<Merged> {
    let mut merged = Merged::default();
    let mut seen = BTreeSet::new();
    let mut failures = BTreeMap::new();
    let mut damaged = BTreeMap::new();
    for dir in dirs {
        let jobs = dir.join("jobs");
        if !jobs.is_dir() {
            return Err(Error::data(
                dir,
                "is not a sweep output folder (it has no jobs/ folder); pass the --out of `fslens sweep`",
            ));
        }
        for (id, path) in sorted_entries(&jobs)? {
            if seen.contains(&id) {
                merged.duplicates += 1;
                continue;
            }
            let row = super::check::job_folder(&path, &id)
                .and_then(|()| read_job(&path, dir).map_err(|e| e.to_string()));
            match row {
                Ok(row) => {
                    seen.insert(id.clone());
                    merged.rows.push(row);
                }
                Err(reason) => {
                    damaged.entry(id.clone()).or_insert(Damaged {
                        id,
                        reason,
                        source: dir.clone(),
                    });
                }
            }
        }
        let failed = dir.join("failed");
        if failed.is_dir() {
            for (id, path) in sorted_entries(&failed)? {
                let error = std::fs::read_to_string(path.join("error.txt"))
                    .unwrap_or_else(|e| format!("(error.txt unreadable: {e})"));
                let index = read_json(&path.join("job.json"))
                    .ok()
                    .and_then(|v| v["index"].as_u64())
                    .map(|i| i as usize);
                failures
                    .entry(id.clone())
                    .or_insert(Failure { id, index, error });
            }
        }
    }
    merged.failures = failures
        .into_values()
        .filter(|f| !seen.contains(&f.id))
        .collect();
    merged.damaged = damaged
        .into_values()
        .filter(|d| !seen.contains(&d.id))
        .collect();
    merged
        .rows
        .sort_by(|a, b| (a.index, &a.id).cmp(&(b.index, &b.id)));
    let mut axes: Vec<String> = Vec::new();
    let mut samplers = BTreeSet::new();
    for row in &merged.rows {
        for key in row.axes.keys() {
            if !axes.contains(key) {
                axes.push(key.clone());
            }
        }
        samplers.extend(row.samplers.keys().cloned());
    }
    merged.axes = axes;
    merged.samplers = samplers.into_iter().collect();
    Ok(merged)
}

/// Non-hidden sub-folders of `dir` (hidden ones are stagings of running or killed jobs) as
/// (name, path), sorted.
fn sorted_entries(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !entry.path().is_dir() {
            continue;
        }
        out.push((name, entry.path()));
    }
    out.sort();
    Ok(out)
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::data(path, format!("invalid JSON: {e}")))
}

fn read_job(dir: &Path, source: &Path) -> Result<Row> {
    let record: JobRecord = serde_json::from_value(read_json(&dir.join("job.json"))?)
        .map_err(|e| Error::data(dir.join("job.json"), format!("not a job record: {e}")))?;
    let metrics = read_json(&dir.join("metrics.json"))?;
    let summary = read_json(&dir.join("summary.json"))?;
    let mut samplers = BTreeMap::new();
    let mut curves = BTreeMap::new();
    let by_name = metrics["samplers"]
        .as_object()
        .ok_or_else(|| Error::data(dir.join("metrics.json"), "has no `samplers` object"))?;
    for (name, m) in by_name {
        let fin = &m["metrics"];
        let points: Vec<_> = m["checkpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(std::iter::once(fin))
            .filter_map(curve_point)
            .collect();
        curves.insert(name.clone(), points);
        let mut row = BTreeMap::new();
        for key in [
            "mode_tv",
            "hallucination_rate",
            "off_support_rate",
            "likelihood_hallucination_rate",
            "spread_ratio",
        ] {
            if let Some(v) = fin[key].as_f64() {
                row.insert(key.to_string(), v);
            }
        }
        for key in ["psnr_denoised", "ssim_denoised"] {
            if let Some(v) = fin[key]["mean"].as_f64() {
                row.insert(key.to_string(), v);
            }
        }
        samplers.insert(name.clone(), row);
    }
    for s in summary["samplers"].as_array().into_iter().flatten() {
        let Some(row) = s["name"].as_str().and_then(|n| samplers.get_mut(n)) else {
            continue;
        };
        for key in ["class_tv_to_exact", "seconds_per_step", "wall_seconds"] {
            if let Some(v) = s[key].as_f64() {
                row.insert(key.to_string(), v);
            }
        }
    }
    let mut axes = BTreeMap::new();
    for key in &record.axis_order {
        if let Some(v) = record.axes.get(key) {
            axes.insert(key.clone(), v.clone());
        }
    }
    Ok(Row {
        id: record.id,
        index: record.index,
        axes,
        samplers,
        wall_seconds: summary["total_seconds"].as_f64().unwrap_or(f64::NAN),
        source: source.to_path_buf(),
        curves,
    })
}

/// An axis value as a short label: numbers and strings plainly, lists as `a+b`.
pub fn axis_label(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(axis_label).collect::<Vec<_>>().join("+"),
        other => other.to_string(),
    }
}

/// The CSV text: `id,index,<axes…>,<sampler>.<metric>…,wall_seconds`.
pub fn csv(merged: &Merged) -> String {
    let mut columns: Vec<(String, String)> = Vec::new();
    for s in &merged.samplers {
        for m in METRICS.iter().chain(["wall_seconds"].iter()) {
            if merged
                .rows
                .iter()
                .any(|r| r.samplers.get(s).is_some_and(|x| x.contains_key(*m)))
            {
                columns.push((s.clone(), m.to_string()));
            }
        }
    }
    let mut out = String::new();
    let mut header = vec!["id".to_string(), "index".to_string()];
    header.extend(merged.axes.iter().cloned());
    header.extend(columns.iter().map(|(s, m)| format!("{s}.{m}")));
    header.push("job_wall_seconds".into());
    out.push_str(&csv_line(&header));
    for row in &merged.rows {
        let mut cells = vec![row.id.clone(), row.index.to_string()];
        for a in &merged.axes {
            cells.push(row.axes.get(a).map(axis_label).unwrap_or_default());
        }
        for (s, m) in &columns {
            cells.push(
                row.samplers
                    .get(s)
                    .and_then(|x| x.get(m))
                    .map(|&v| csv_number(v))
                    .unwrap_or_default(),
            );
        }
        cells.push(csv_number(row.wall_seconds));
        out.push_str(&csv_line(&cells));
    }
    out
}

/// A number for results.csv, exact (shortest text that reads back to the same f64): plain
/// decimals between 1e-4 and 1e7, exponent notation outside (`1.2e-7`, never `0.00000012`
/// or a rounded `0.000000`), `0` for zero, `NaN`/`inf`/`-inf` as pandas reads them.
pub fn csv_number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "inf".into() } else { "-inf".into() }
    } else if v != 0.0 && (v.abs() < 1e-4 || v.abs() >= 1e7) {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

fn csv_line(cells: &[String]) -> String {
    let quoted: Vec<String> = cells
        .iter()
        .map(|c| {
            if c.contains([',', '"', '\n']) {
                format!("\"{}\"", c.replace('"', "\"\""))
            } else {
                c.clone()
            }
        })
        .collect();
    format!("{}\n", quoted.join(","))
}

/// One JSON object per row.
pub fn jsonl(merged: &Merged) -> String {
    let mut out = String::new();
    for row in &merged.rows {
        let v = serde_json::json!({
            "id": row.id,
            "index": row.index,
            "axes": row.axes,
            "samplers": row.samplers,
            "wall_seconds": row.wall_seconds,
        });
        out.push_str(&serde_json::to_string(&v).expect("rows serialise"));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_quoting() {
        let line = csv_line(&["a".into(), "b,c".into(), "say \"hi\"".into()]);
        assert_eq!(line, "a,\"b,c\",\"say \"\"hi\"\"\"\n");
    }

    #[test]
    fn csv_numbers_use_exponents_for_tiny_and_huge_values() {
        assert_eq!(csv_number(1.2e-7), "1.2e-7");
        assert_eq!(csv_number(-3.5e-12), "-3.5e-12");
        assert_eq!(csv_number(2.5e9), "2.5e9");
        assert_eq!(csv_number(0.25), "0.25");
        assert_eq!(csv_number(0.0), "0");
        assert_eq!(csv_number(f64::NAN), "NaN");
        // Every value reads back exactly.
        for v in [
            1.2e-7,
            0.1 + 0.2,
            1e-4,
            9.99e-5,
            123456.789,
            1.0 / 3.0,
            7e300,
        ] {
            assert_eq!(csv_number(v).parse::<f64>().unwrap(), v, "{v}");
        }
    }

    #[test]
    fn axis_labels_are_short() {
        assert_eq!(axis_label(&serde_json::json!(0.05)), "0.05");
        assert_eq!(axis_label(&serde_json::json!("ddim")), "ddim");
        assert_eq!(
            axis_label(&serde_json::json!(["exact", "fsr"])),
            "exact+fsr"
        );
    }
}
