//! The merged sweep report: a self-contained report.html with, for every metric and every swept
//! axis, an SVG plot of the metric against the axis (one colour per sampler: each job as a dot,
//! the mean over the other axes as a line), the results table and the failed jobs.

use std::collections::BTreeMap;
use std::fmt::Write;

use plotters::prelude::*;
use serde_json::Value;

use super::merge::{METRICS, Merged, axis_label};
use crate::{Error, Result};

/// Sampler colours (the "tab10" palette: distinct, readable on white).
const COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

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
    let ys = points.values().flatten().map(|p| p.1);
    let (lo, hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), y| {
        (l.min(y), h.max(y))
    });
    let pad = if hi > lo {
        0.08 * (hi - lo)
    } else {
        0.1 * lo.abs().max(1e-3)
    };
    let (y0, y1) = (lo - pad, hi + pad);
    let labels: Vec<String> = values.iter().map(axis_label).collect();
    let k = values.len();
    let mut svg = String::new();
    let plot_err = |e: &dyn std::fmt::Display| {
        Error::input(format!("plotting {metric} against {axis} failed: {e}"))
    };
    {
        let root = SVGBackend::with_string(&mut svg, (460, 300)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("{metric} vs {axis}"), ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.5f64..(k as f64 - 0.5), y0..y1)
            .map_err(|e| plot_err(&e))?;
        // Categories sit at 0, 1, …; ticks fall on a finer grid that includes the integers,
        // and only those are labelled.
        let fmt_x = |x: &f64| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                labels.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .bold_line_style(RGBColor(225, 225, 225))
            .light_line_style(WHITE)
            .x_labels(4 * k + 4)
            .x_label_formatter(&fmt_x)
            .x_desc(axis)
            .y_desc(metric)
            .draw()
            .map_err(|e| plot_err(&e))?;
        let shown = points.len() as f64;
        for (si, (name, pts)) in points.iter().enumerate() {
            let color = COLOURS[si % COLOURS.len()];
            // Samplers side by side within a category, so equal values stay visible.
            let dx = (si as f64 - (shown - 1.0) / 2.0) * 0.06;
            let mut means = Vec::new();
            for x in 0..k {
                let at: Vec<f64> = pts.iter().filter(|p| p.0 == x).map(|p| p.1).collect();
                if !at.is_empty() {
                    means.push((x as f64 + dx, at.iter().sum::<f64>() / at.len() as f64));
                }
            }
            chart
                .draw_series(LineSeries::new(means, color.stroke_width(2)))
                .map_err(|e| plot_err(&e))?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
            chart
                .draw_series(
                    pts.iter()
                        .map(|&(x, y)| Circle::new((x as f64 + dx, y), 3, color.filled())),
                )
                .map_err(|e| plot_err(&e))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE)
            .border_style(RGBColor(160, 160, 160))
            .draw()
            .map_err(|e| plot_err(&e))?;
        root.present().map_err(|e| plot_err(&e))?;
    }
    Ok(Some(svg))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The whole report.html (no external files or scripts).
pub fn report_html(merged: &Merged) -> Result<String> {
    let mut h = String::new();
    h.push_str(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>fslens sweep</title>\n<style>\
         body{font-family:sans-serif;margin:1.5em} table{border-collapse:collapse;font-size:12px}\
         td,th{border:1px solid #ccc;padding:2px 6px;text-align:right} .plots{display:flex;flex-wrap:wrap;gap:8px}\
         pre{background:#f6f6f6;padding:6px}</style></head><body>\n",
    );
    let _ = writeln!(
        h,
        "<h1>fslens sweep</h1>\n<p>{} complete job(s), {} failed, samplers: {}; swept axes: {}.</p>",
        merged.rows.len(),
        merged.failures.len(),
        escape(&merged.samplers.join(", ")),
        escape(&merged.axes.join(", "))
    );
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
            // Drop the XML declaration so the SVG can sit inline in HTML.
            let body = svg.find("<svg").map_or(svg.as_str(), |i| &svg[i..]);
            let _ = writeln!(h, "<div>{body}</div>");
        }
        h.push_str("</div>\n");
    }
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
    if !merged.failures.is_empty() {
        h.push_str("<h2>Failed jobs</h2>\n");
        for f in &merged.failures {
            let _ = writeln!(h, "<pre>{}</pre>", escape(&f.error));
        }
    }
    h.push_str("</body></html>\n");
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::merge::Row;

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
