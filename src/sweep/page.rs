//! The merged sweep report: a self-contained report.html with, for every metric and every swept
//! axis, an SVG plot of the metric against the axis (one colour per sampler: each job as a dot,
//! the mean over the other axes as a line), the results table and the failed jobs. The plots
//! and the page skeleton come from [`crate::report`], so a sampler has the colours of its run
//! reports and text is escaped the same way.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::Value;

use super::results::{METRICS, Merged, axis_label};
use crate::Result;
use crate::report::html::{document, escape, strip_xml_declaration};
use crate::report::plots::{CategorySeries, category_plot};

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

/// The whole report.html (no external files or scripts).
pub fn report_html(merged: &Merged) -> Result<String> {
    let mut h = String::new();
    let _ = writeln!(
        h,
        "<h1>fslens sweep</h1>\n<p>{} complete job(s), {} failed, samplers: {}; swept axes: {}.</p>",
        merged.rows.len(),
        merged.failures.len(),
        escape(&merged.samplers.join(", ")),
        escape(&merged.axes.join(", "))
    );
    plots(&mut h, merged)?;
    results_table(&mut h, merged);
    if !merged.failures.is_empty() {
        h.push_str("<h2>Failed jobs</h2>\n");
        for f in &merged.failures {
            let _ = writeln!(h, "<pre>{}</pre>", escape(&f.error));
        }
    }
    Ok(document("fslens sweep", STYLE, &h))
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

/// Every job's axis values and final metrics, a line per (job, sampler).
fn results_table(h: &mut String, merged: &Merged) {
    h.push_str("<h2>Results</h2>\n<table><tr><th>id</th>");
    for a in &merged.axes {
        let _ = write!(h, "<th>{}</th>", escape(a));
    }
    h.push_str("<th>sampler</th>");
    for m in METRICS {
        let _ = write!(h, "<th>{m}</th>");
    }
    h.push_str("</tr>\n");
    for row in &merged.rows {
        for (name, m) in &row.samplers {
            let _ = write!(h, "<tr><td>{}</td>", escape(&row.id));
            for a in &merged.axes {
                let v = row.axes.get(a).map(axis_label).unwrap_or_default();
                let _ = write!(h, "<td>{}</td>", escape(&v));
            }
            let _ = write!(h, "<td>{}</td>", escape(name));
            for metric in METRICS {
                match m.get(metric) {
                    Some(v) => {
                        let _ = write!(h, "<td>{v:.4}</td>");
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
        let html = report_html(&merged).unwrap();
        assert_eq!(html.matches("<svg").count(), 1);
        assert!(!html.contains("<?xml"));
    }
}
