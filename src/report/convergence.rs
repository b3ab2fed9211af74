//! The pictures of `fslens converge`: an error against the atom count N on log–log axes, a
//! line per diffusion time for the finite-sample posterior, and each sampler's error at the
//! N it ran on as a marker beside it.

use plotters::prelude::*;

use super::plots::{Series, draw_legend, legend_rows, palette, plot_error, sampler_color};
use crate::Result;

/// One log–log panel: `finite` holds a curve per time (x = N), `samplers` a point (or a few)
/// per sampler. Points that are not positive and finite are left out.
pub fn error_vs_atoms_plot(
    title: &str,
    y_label: &str,
    finite: &[Series],
    samplers: &[Series],
) -> Result<String> {
    let ok = |p: &&(f64, f64)| p.0 > 0.0 && p.1 > 0.0 && p.0.is_finite() && p.1.is_finite();
    let all: Vec<(f64, f64)> = finite
        .iter()
        .chain(samplers)
        .flat_map(|s| s.points.iter().filter(ok).copied())
        .collect();
    let (mut x_lo, mut x_hi, mut y_lo, mut y_hi) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in &all {
        (x_lo, x_hi, y_lo, y_hi) = (x_lo.min(x), x_hi.max(x), y_lo.min(y), y_hi.max(y));
    }
    if all.is_empty() {
        (x_lo, x_hi, y_lo, y_hi) = (1.0, 10.0, 0.1, 1.0);
    }
    let (x_lo, x_hi, y_lo, y_hi) = (x_lo / 1.5, x_hi * 1.5, y_lo / 1.5, y_hi * 1.5);
    let mut entries: Vec<(String, RGBColor)> = finite
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.clone(), palette(i)))
        .collect();
    entries.extend(
        samplers
            .iter()
            .map(|s| (s.name.clone(), sampler_color(&s.name))),
    );
    let (w, h) = (620u32, 400u32);
    let legend_h = 22 * legend_rows(&entries, w) + 14;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h + legend_h)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let (top, bottom) = root.split_vertically(h);
        let mut chart = ChartBuilder::on(&top)
            .caption(title, ("sans-serif", 17))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d((x_lo..x_hi).log_scale(), (y_lo..y_hi).log_scale())
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc("atoms N (log scale)")
            .y_desc(y_label)
            .x_label_formatter(&|x| format!("{x:.0e}"))
            .y_label_formatter(&|y| format!("{y:.1e}"))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(plot_error)?;
        for (i, s) in finite.iter().enumerate() {
            let pts: Vec<(f64, f64)> = s.points.iter().filter(ok).copied().collect();
            let color = palette(i);
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(plot_error)?;
            chart
                .draw_series(PointSeries::of_element(pts, 3, color, &|c, s, st| {
                    EmptyElement::at(c) + Circle::new((0, 0), s, st.filled())
                }))
                .map_err(plot_error)?;
        }
        for s in samplers {
            let color = sampler_color(&s.name);
            let pts: Vec<(f64, f64)> = s.points.iter().filter(ok).copied().collect();
            chart
                .draw_series(PointSeries::of_element(pts, 6, color, &|c, s, st| {
                    EmptyElement::at(c) + TriangleMarker::new((0, 0), s, st.filled())
                }))
                .map_err(plot_error)?;
        }
        draw_legend(&bottom, &entries, false)?;
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_lines_and_markers() {
        let finite = vec![Series {
            name: "t = 0.1".into(),
            points: vec![(1e2, 0.3), (1e3, 0.1), (1e4, 0.03)],
        }];
        let samplers = vec![Series {
            name: "fsr".into(),
            points: vec![(1e3, 0.2)],
        }];
        let svg = error_vs_atoms_plot("mean error", "error", &finite, &samplers).unwrap();
        assert!(svg.starts_with("<svg") || svg.contains("<svg"));
        assert!(svg.contains("t = 0.1") && svg.contains("fsr") && svg.contains("polyline"));
    }
}
