//! The merged sweep report: a self-contained report.html with, for every metric and every swept
//! axis, an SVG plot of the metric against the axis (one colour per sampler: each job as a dot,
//! the mean over the other axes as a line); the checkpoint metrics over t, a panel per value of
//! each swept axis and a line per job and sampler; the results table with a link to each job's
//! own report.html (relative, so the folder can be moved or copied whole); and the failed and
//! damaged jobs. The plots, the number format and the page skeleton come from
//! [`crate::report`], so a sampler has the colours of its run reports and text is escaped the
//! same way.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write;
use std::path::{Component, Path, PathBuf};

use serde_json::Value;

use super::results::{CURVE_METRICS, METRICS, Merged, Row, axis_label};
use crate::Result;
use crate::report::html::{document, escape, num, strip_xml_declaration};
use crate::report::plots::{
    CategorySeries, MetricPanel, Series, category_plot, early_stopping_plot,
};

/// Curves over t are drawn per value of an axis with at most this many values (one panel
/// each); a longer axis would give unreadably small panels.
pub const MAX_CURVE_PANELS: usize = 8;

/// The distinct values of an axis in plotting order: numerically when all are numbers, else in
/// sweep order.
fn axis_values(merged: &Merged, axis: &str) -> Vec<Value> {
    let mut values: Vec<Value> = Vec::new();
    for row in &merged.rows {
        if let Some(v) = row.axes.get(axis)
            && !values.contains(v)
        {
            values.push(v.clone());
        }
    }
    if values.iter().all(Value::is_number) {
        values.sort_by(|a, b| {
            a.as_f64()
                .unwrap_or(f64::NAN)
                .total_cmp(&b.as_f64().unwrap_or(f64::NAN))
        });
    }
    values
}

/// One metric against one axis as an SVG document; None when no job has the metric.
pub fn metric_plot(merged: &Merged, axis: &str, metric: &str) -> Result<Option<String>> {
    let values = axis_values(merged, axis);
    // sampler → (category, y) of every job that has the metric.
    let mut points: BTreeMap<&str, Vec<(usize, f64)>> = BTreeMap::new();
    for row in &merged.rows {
        let Some(x) = row
            .axes
            .get(axis)
            .and_then(|v| values.iter().position(|u| u == v))
        else {
            continue;
        };
        for (name, m) in &row.samplers {
            if let Some(&y) = m.get(metric)
                && y.is_finite()
            {
                points.entry(name).or_default().push((x, y));
            }
        }
    }
    if points.is_empty() {
        return Ok(None);
    }
    let series: Vec<CategorySeries> = points
        .into_iter()
        .map(|(name, points)| CategorySeries {
            name: name.to_string(),
            points,
        })
        .collect();
    let labels: Vec<String> = values.iter().map(axis_label).collect();
    let title = format!("{metric} vs {axis}");
    category_plot(&title, axis, metric, &labels, &series).map(Some)
}

/// The sweep page's own style sheet: dense tables and a flowing grid of small plots.
const STYLE: &str = "body{font-family:sans-serif;margin:1.5em} \
     table{border-collapse:collapse;font-size:12px} \
     td,th{border:1px solid #ccc;padding:2px 6px;text-align:right} \
     .plots{display:flex;flex-wrap:wrap;gap:8px} pre{background:#f6f6f6;padding:6px}";

/// The whole report.html (no external files or scripts), to be written into `out` (links to
/// the jobs' reports are relative to it).
pub fn report_html(merged: &Merged, out: &Path) -> Result<String> {
    let mut h = String::new();
    let _ = writeln!(
        h,
        "<h1>fslens sweep</h1>\n<p>{} complete job(s), {} failed, {} damaged, samplers: {}; swept axes: {}.</p>",
        merged.rows.len(),
        merged.failures.len(),
        merged.damaged.len(),
        escape(&merged.samplers.join(", ")),
        escape(&merged.axes.join(", "))
    );
    plots(&mut h, merged)?;
    curves(&mut h, merged)?;
    results_table(&mut h, merged, out);
    if !merged.failures.is_empty() {
        h.push_str("<h2>Failed jobs</h2>\n");
        for f in &merged.failures {
            let _ = writeln!(h, "<pre>{}</pre>", escape(&f.error));
        }
    }
    if !merged.damaged.is_empty() {
        h.push_str(
            "<h2>Damaged jobs</h2>\n<p>Left out of the results; the next <code>fslens sweep</code> reruns them.</p>\n",
        );
        for d in &merged.damaged {
            let _ = writeln!(
                h,
                "<pre>{} in {}: {}</pre>",
                escape(&d.id),
                escape(&d.source.display().to_string()),
                escape(&d.reason)
            );
        }
    }
    Ok(document("fslens sweep", STYLE, &h))
}

/// `target` as a path relative to the folder `base` (both made absolute, no symlinks
/// resolved), e.g. `jobs/<id>/report.html` or `../shard1/jobs/<id>/report.html`.
pub fn relative_to(target: &Path, base: &Path) -> PathBuf {
    // Absolute, `.` dropped and `a/..` folded, as a list of names (the root as "/").
    let parts = |p: &Path| -> Vec<OsString> {
        let p = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        let mut out: Vec<OsString> = Vec::new();
        for c in p.components() {
            match c {
                Component::CurDir => {}
                Component::ParentDir if out.len() > 1 => {
                    out.pop();
                }
                other => out.push(other.as_os_str().to_os_string()),
            }
        }
        out
    };
    let (t, b) = (parts(target), parts(base));
    let common = t.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut rel = PathBuf::new();
    for _ in common..b.len() {
        rel.push("..");
    }
    for c in &t[common..] {
        rel.push(c);
    }
    rel
}

/// For each curve metric, its value over t: a figure per swept axis (with at most
/// [`MAX_CURVE_PANELS`] values), a panel per value, a line per job and sampler in the
/// sampler's colour; with no varied axis, one panel of every job.
fn curves(h: &mut String, merged: &Merged) -> Result<()> {
    if merged
        .rows
        .iter()
        .all(|r| r.curves.values().all(Vec::is_empty))
    {
        return Ok(());
    }
    let varied: Vec<(&String, Vec<Value>)> = merged
        .axes
        .iter()
        .map(|a| (a, axis_values(merged, a)))
        .filter(|(_, v)| v.len() > 1 && v.len() <= MAX_CURVE_PANELS)
        .collect();
    h.push_str("<h2>Metrics over t</h2>\n<p>Each line is one job's sampler at its checkpoints, in the sampler's colour.</p>\n");
    for metric in CURVE_METRICS {
        let has = |r: &Row| {
            r.curves
                .values()
                .flatten()
                .any(|(_, m)| m.contains_key(metric))
        };
        if !merged.rows.iter().any(has) {
            continue;
        }
        let mut figures = Vec::new();
        if varied.is_empty() {
            let rows: Vec<&Row> = merged.rows.iter().collect();
            figures.push(early_stopping_plot(&[panel("all jobs", metric, &rows)])?);
        }
        for (axis, values) in &varied {
            let panels: Vec<MetricPanel> = values
                .iter()
                .map(|v| {
                    let rows: Vec<&Row> = merged
                        .rows
                        .iter()
                        .filter(|r| r.axes.get(*axis) == Some(v))
                        .collect();
                    panel(
                        &format!("{metric}, {axis} = {}", axis_label(v)),
                        metric,
                        &rows,
                    )
                })
                .collect();
            figures.push(early_stopping_plot(&panels)?);
        }
        let _ = writeln!(h, "<h3>{metric} over t</h3>\n<div class=\"plots\">");
        for svg in figures {
            let _ = writeln!(h, "<div>{}</div>", strip_xml_declaration(&svg));
        }
        h.push_str("</div>\n");
    }
    Ok(())
}

/// A panel of `metric` over t with a series per (job, sampler) of `rows`.
fn panel(title: &str, metric: &str, rows: &[&Row]) -> MetricPanel {
    let mut series = Vec::new();
    for row in rows {
        for (sampler, points) in &row.curves {
            let points: Vec<(f64, f64)> = points
                .iter()
                .filter_map(|(t, m)| m.get(metric).map(|&v| (*t, v)))
                .collect();
            if !points.is_empty() {
                series.push(Series {
                    name: sampler.clone(),
                    points,
                });
            }
        }
    }
    MetricPanel {
        title: title.to_string(),
        y_label: metric.to_string(),
        series,
    }
}

/// A section per metric with its plots against every axis that takes more than one value.
fn plots(h: &mut String, merged: &Merged) -> Result<()> {
    let varied: Vec<&String> = merged
        .axes
        .iter()
        .filter(|a| axis_values(merged, a).len() > 1)
        .collect();
    for metric in METRICS {
        let mut plots = Vec::new();
        for axis in &varied {
            if let Some(svg) = metric_plot(merged, axis, metric)? {
                plots.push(svg);
            }
        }
        if plots.is_empty() {
            continue;
        }
        let _ = writeln!(h, "<h2>{metric}</h2>\n<div class=\"plots\">");
        for svg in plots {
            let _ = writeln!(h, "<div>{}</div>", strip_xml_declaration(&svg));
        }
        h.push_str("</div>\n");
    }
    Ok(())
}

/// Every job's axis values and final metrics, a line per (job, sampler); the id links to the
/// job's report.
fn results_table(h: &mut String, merged: &Merged, out: &Path) {
    h.push_str("<h2>Results</h2>\n<table><tr><th>job (report)</th>");
    for a in &merged.axes {
        let _ = write!(h, "<th>{}</th>", escape(a));
    }
    h.push_str("<th>sampler</th>");
    for m in METRICS {
        let _ = write!(h, "<th>{m}</th>");
    }
    h.push_str("</tr>\n");
    for row in &merged.rows {
        let report = row.source.join("jobs").join(&row.id).join("report.html");
        let href: String = relative_to(&report, out)
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        for (name, m) in &row.samplers {
            let _ = write!(
                h,
                "<tr><td><a href=\"{}\">{}</a></td>",
                escape(&href),
                escape(&row.id)
            );
            for a in &merged.axes {
                let v = row.axes.get(a).map(axis_label).unwrap_or_default();
                let _ = write!(h, "<td>{}</td>", escape(&v));
            }
            let _ = write!(h, "<td>{}</td>", escape(name));
            for metric in METRICS {
                match m.get(metric) {
                    Some(&v) => {
                        let _ = write!(h, "<td>{}</td>", num(v));
                    }
                    None => h.push_str("<td></td>"),
                }
            }
            h.push_str("</tr>\n");
        }
    }
    h.push_str("</table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::results::Row;

    fn row(id: &str, index: usize, sigma: f64, sampler: &str, tv: f64) -> Row {
        Row {
            id: id.into(),
            index,
            axes: [("measurement.sigma".to_string(), serde_json::json!(sigma))]
                .into_iter()
                .collect(),
            samplers: [(
                sampler.to_string(),
                [("mode_tv".to_string(), tv)].into_iter().collect(),
            )]
            .into_iter()
            .collect(),
            wall_seconds: 1.0,
            source: ".".into(),
            // Two checkpoints and the final time.
            curves: [(
                sampler.to_string(),
                [(0.5, 0.6), (0.1, 0.4), (1e-3, tv)]
                    .iter()
                    .map(|&(t, v)| (t, [("mode_tv".to_string(), v)].into_iter().collect()))
                    .collect(),
            )]
            .into_iter()
            .collect(),
        }
    }

    #[test]
    fn relative_links_climb_out_of_the_report_folder() {
        assert_eq!(
            relative_to(
                Path::new("/x/s1/jobs/a/report.html"),
                Path::new("/x/merged")
            ),
            PathBuf::from("../s1/jobs/a/report.html")
        );
        assert_eq!(
            relative_to(
                Path::new("/x/out/./jobs/a/report.html"),
                Path::new("/x/out")
            ),
            PathBuf::from("jobs/a/report.html")
        );
        assert_eq!(
            relative_to(Path::new("/x/y/../out/r.html"), Path::new("/x/out/")),
            PathBuf::from("r.html")
        );
    }

    #[test]
    fn the_report_links_every_job_and_colours_samplers_as_run_reports_do() {
        let merged = Merged {
            rows: vec![
                row("a1", 0, 0.1, "fsr", 0.2),
                row("b2", 1, 0.05, "sigma-dps", 0.1),
            ],
            axes: vec!["measurement.sigma".into()],
            samplers: vec!["fsr".into(), "sigma-dps".into()],
            ..Default::default()
        };
        let html = report_html(&merged, Path::new(".")).unwrap();
        assert!(
            html.contains("<a href=\"jobs/a1/report.html\">a1</a>"),
            "{html}"
        );
        assert!(html.contains("<a href=\"jobs/b2/report.html\">b2</a>"));
        // The merged folder elsewhere: links climb out of it.
        let other = report_html(&merged, Path::new("merged")).unwrap();
        assert!(other.contains("<a href=\"../jobs/a1/report.html\">"));
        // A plot against σ and a curve over t (one panel per σ value).
        assert_eq!(html.matches("<svg").count(), 2);
        assert!(html.contains("mode_tv, measurement.sigma = 0.05"));
        for sampler in ["fsr", "sigma-dps"] {
            let c = crate::report::plots::sampler_color(sampler);
            let hex = format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2);
            for svg in html.split("<svg").skip(1) {
                assert!(
                    svg.contains(&hex),
                    "{sampler} lacks its run-report colour {hex}"
                );
            }
        }
    }

    #[test]
    fn plots_one_svg_per_metric_and_varied_axis() {
        let merged = Merged {
            rows: vec![
                row("a", 0, 0.1, "fsr", 0.2),
                row("b", 1, 0.05, "fsr", 0.1),
                row("c", 2, 0.05, "fsr", 0.3),
            ],
            axes: vec!["measurement.sigma".into()],
            samplers: vec!["fsr".into()],
            ..Default::default()
        };
        // Numeric axes plot in numeric order.
        assert_eq!(
            axis_values(&merged, "measurement.sigma"),
            vec![serde_json::json!(0.05), serde_json::json!(0.1)]
        );
        let svg = metric_plot(&merged, "measurement.sigma", "mode_tv")
            .unwrap()
            .unwrap();
        assert!(svg.contains("<svg") && svg.contains("mode_tv vs measurement.sigma"));
        // Three jobs → three dots.
        assert_eq!(svg.matches("<circle").count(), 3, "{svg}");
        // In fsr's colour, as in a run's report.
        let c = crate::report::plots::sampler_color("fsr");
        assert!(svg.contains(&format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)));
        assert!(
            metric_plot(&merged, "measurement.sigma", "psnr_denoised")
                .unwrap()
                .is_none()
        );
        let html = report_html(&merged, Path::new(".")).unwrap();
        // mode_tv against σ, and mode_tv over t.
        assert_eq!(html.matches("<svg").count(), 2);
        assert!(!html.contains("<?xml"));
    }
}
