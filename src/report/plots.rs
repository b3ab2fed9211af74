//! The report's plots as SVG strings (plotters' SVG backend: text is written as `<text>`
//! elements for the browser to set, so no font files are read).
//!
//! One function per picture; each takes plain numbers (times, metrics, projections) that a
//! run's summary.json, metrics.json and projections_<sampler>.npy hold, and returns a complete
//! `<svg …>…</svg>` document with axes, labels and a legend. Time axes are logarithmic: the
//! interesting part of a reverse diffusion happens in the last decades before t_min.

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::{Error, Result};

/// One curve: a name for the legend and (x, y) points. Points whose y is not finite (an
/// infinite PSNR, a ratio of an empty cloud) are left out when drawn.
#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// The projections ⟨x_t, u⟩ of one cloud per time: `values[i]` holds the K projections at
/// `times[i]`.
#[derive(Clone, Debug)]
pub struct ProjectionSeries {
    pub times: Vec<f64>,
    pub values: Vec<Vec<f32>>,
}

/// One panel of the mode-weights picture: the fraction of a cloud in each mode over time
/// (`weights[i][m]` at `times[i]`).
#[derive(Clone, Debug)]
pub struct ModePanel {
    pub name: String,
    pub times: Vec<f64>,
    pub weights: Vec<Vec<f64>>,
}

/// One panel of the early-stopping picture: a metric against t, a curve per sampler.
#[derive(Clone, Debug)]
pub struct MetricPanel {
    pub title: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

/// Bins of the (t, ⟨x_t, u⟩) heatmap per time.
pub const HEATMAP_BINS: usize = 60;

/// Counts of `values` in `bins` equal bins of [lo, hi]: value v falls in bin
/// ⌊(v − lo)/(hi − lo) · bins⌋, v = hi in the last bin; values outside [lo, hi] and NaN are
/// not counted. Empty when bins = 0 or hi ≤ lo.
pub fn bin_counts(values: &[f32], lo: f64, hi: f64, bins: usize) -> Vec<u32> {
    let mut counts = vec![0u32; bins];
    if bins == 0 || hi.is_nan() || lo.is_nan() || hi <= lo {
        return counts;
    }
    let width = hi - lo;
    for &v in values {
        let v = v as f64;
        if !(v >= lo && v <= hi) {
            continue;
        }
        let b = (((v - lo) / width) * bins as f64).floor() as usize;
        counts[b.min(bins - 1)] += 1;
    }
    counts
}

/// Palette colours taken by the built-in samplers other than exact.
const BUILT_IN_COLOURS: usize = 7;

/// Colours of the samplers, keyed by name alone so that a sampler has the same colour in every
/// plot of every page (a run, a comparison, a diagnosis, a sweep) whatever else the page shows:
/// exact black, the built-in samplers the first [`palette`] colours in their [`SamplerKind`]
/// order, and any other name a colour of the rest of the palette (indices 7 to 19) picked by the
/// FNV-1a hash of the name.
pub fn sampler_color(name: &str) -> RGBColor {
    use crate::choices::Choice;
    use crate::samplers::SamplerKind;
    match SamplerKind::parse(name) {
        Ok(SamplerKind::Exact) => RGBColor(0, 0, 0),
        Ok(kind) => palette(SamplerKind::all().position(|k| k == kind).unwrap_or(0) - 1),
        Err(_) => {
            // FNV-1a (64 bit): stable across runs and platforms, unlike std's hasher.
            let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
            });
            palette(BUILT_IN_COLOURS + (hash % (20 - BUILT_IN_COLOURS) as u64) as usize)
        }
    }
}

/// A categorical palette (Tableau 10, then a darker variant of each), cycled.
pub fn palette(i: usize) -> RGBColor {
    const BASE: [(u8, u8, u8); 10] = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ];
    let (r, g, b) = BASE[i % 10];
    if (i / 10) % 2 == 1 {
        RGBColor(r / 2, g / 2, b / 2)
    } else {
        RGBColor(r, g, b)
    }
}

/// Viridis, linearly interpolated between nine anchors, for f in [0, 1].
pub fn viridis(f: f64) -> RGBColor {
    const ANCHORS: [(f64, f64, f64); 9] = [
        (68.0, 1.0, 84.0),
        (71.0, 44.0, 122.0),
        (59.0, 81.0, 139.0),
        (44.0, 113.0, 142.0),
        (33.0, 144.0, 141.0),
        (39.0, 173.0, 129.0),
        (92.0, 200.0, 99.0),
        (170.0, 220.0, 50.0),
        (253.0, 231.0, 37.0),
    ];
    let f = if f.is_finite() {
        f.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let x = f * (ANCHORS.len() - 1) as f64;
    let i = (x.floor() as usize).min(ANCHORS.len() - 2);
    let r = x - i as f64;
    let (a, b) = (ANCHORS[i], ANCHORS[i + 1]);
    let mix = |p: f64, q: f64| (p + r * (q - p)).round().clamp(0.0, 255.0) as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

pub(crate) fn plot_error<E: std::fmt::Debug>(e: E) -> Error {
    Error::input(format!("drawing a plot failed: {e:?}"))
}

/// `1e-3`, `0.01`, `0.5`: short labels for a log time axis.
fn format_time(t: f64) -> String {
    if t <= 0.0 || !t.is_finite() {
        return format!("{t}");
    }
    let e = t.log10().round();
    if (t / 10f64.powf(e) - 1.0).abs() < 1e-6 {
        if e >= -2.0 {
            format!("{}", 10f64.powf(e))
        } else {
            format!("1e{}", e as i32)
        }
    } else {
        format!("{t:.2e}")
    }
}

/// `12`, `1.5`, `0.25`: ratio labels with no trailing zeros.
fn format_ratio(r: f64) -> String {
    let text = if r.abs() >= 10.0 {
        format!("{r:.0}")
    } else if r.abs() >= 1.0 {
        format!("{r:.2}")
    } else {
        format!("{r:.3}")
    };
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// The smallest and largest positive finite time among `times`, widened to whole decades
/// when they are equal.
fn time_range(times: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, 0.0f64);
    for t in times.filter(|t| t.is_finite() && *t > 0.0) {
        lo = lo.min(t);
        hi = hi.max(t);
    }
    if !lo.is_finite() {
        return (1e-3, 1.0);
    }
    if hi <= lo * (1.0 + 1e-9) {
        (lo / 10.0, hi * 10.0)
    } else {
        (lo, hi)
    }
}

/// Draws a legend of coloured swatches in one or more rows across `area` (pixel coordinates).
pub(crate) fn draw_legend(
    area: &DrawingArea<SVGBackend, Shift>,
    entries: &[(String, RGBColor)],
    filled: bool,
) -> Result<()> {
    let (width, _) = area.dim_in_pixel();
    let style = ("sans-serif", 14).into_font().color(&BLACK);
    let (mut x, mut y) = (10i32, 8i32);
    for (name, color) in entries {
        let w = 30 + (name.chars().count() as i32) * 8 + 16;
        if x + w > width as i32 && x > 10 {
            x = 10;
            y += 22;
        }
        if filled {
            area.draw(&Rectangle::new(
                [(x, y + 2), (x + 20, y + 14)],
                color.filled(),
            ))
            .map_err(plot_error)?;
        } else {
            area.draw(&PathElement::new(
                vec![(x, y + 8), (x + 20, y + 8)],
                color.stroke_width(3),
            ))
            .map_err(plot_error)?;
        }
        area.draw(&Text::new(name.clone(), (x + 26, y), style.clone()))
            .map_err(plot_error)?;
        x += w;
    }
    Ok(())
}

/// Rows the legend needs for `entries` across `width` pixels (the same layout as
/// [`draw_legend`]).
pub(crate) fn legend_rows(entries: &[(String, RGBColor)], width: u32) -> u32 {
    let (mut x, mut rows) = (10i32, 1u32);
    for (name, _) in entries {
        let w = 30 + (name.chars().count() as i32) * 8 + 16;
        if x + w > width as i32 && x > 10 {
            x = 10;
            rows += 1;
        }
        x += w;
    }
    rows
}

/// The paper-style density picture: per panel (the exact posterior first, then each sampler)
/// a heatmap over (t, ⟨x_t, u⟩) with log t across and the projection up; each time's column
/// is the histogram of that time's projections ([`bin_counts`], [`HEATMAP_BINS`] bins over the
/// value range shared by all panels) divided by its largest bin, so every time shows where its
/// cloud sits whatever its spread. Empty bins are white. `direction` names u for the y label.
///
/// The shared range is the first (reference) panel's, widened by a quarter of its span on each
/// side: a sampler whose particles blow up (σ-DPS at small σ reaches ⟨x, u⟩ ~ 10⁴) would
/// otherwise squash every other panel into one line. Values beyond it are drawn in the edge
/// bins, where a pile-up shows the escape.
pub fn density_heatmap(panels: &[(&str, &ProjectionSeries)], direction: &str) -> Result<String> {
    if panels.is_empty() {
        return Err(Error::input("a density heatmap needs at least one panel"));
    }
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in panels[0].1.values.iter().flatten() {
        let v = *v as f64;
        if v.is_finite() {
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    if !(lo.is_finite() && hi.is_finite()) {
        (lo, hi) = (-1.0, 1.0);
    }
    if hi - lo < 1e-9 {
        (lo, hi) = (lo - 1.0, hi + 1.0);
    }
    let pad = 0.25 * (hi - lo);
    let (lo, hi) = (lo - pad, hi + pad);
    let cols = panels.len().min(3);
    let rows = panels.len().div_ceil(cols);
    let (pw, ph) = (440u32, 330u32);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (pw * cols as u32, ph * rows as u32 + 40))
            .into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let (top, bottom) = root.split_vertically(ph * rows as u32);
        for ((name, series), area) in panels.iter().zip(top.split_evenly((rows, cols))) {
            heatmap_panel(&area, name, series, direction, lo, hi)?;
        }
        // A colour bar: the fraction of a time's largest bin.
        let style = ("sans-serif", 13).into_font().color(&BLACK);
        bottom
            .draw(&Text::new(
                "count / largest count at that t:".to_string(),
                (10, 12),
                style.clone(),
            ))
            .map_err(plot_error)?;
        let x0 = 240;
        for i in 0..100 {
            bottom
                .draw(&Rectangle::new(
                    [(x0 + 2 * i, 10), (x0 + 2 * i + 2, 26)],
                    viridis(i as f64 / 99.0).filled(),
                ))
                .map_err(plot_error)?;
        }
        bottom
            .draw(&Text::new("0".to_string(), (x0 - 12, 12), style.clone()))
            .map_err(plot_error)?;
        bottom
            .draw(&Text::new("1".to_string(), (x0 + 206, 12), style))
            .map_err(plot_error)?;
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

fn heatmap_panel(
    area: &DrawingArea<SVGBackend, Shift>,
    name: &str,
    series: &ProjectionSeries,
    direction: &str,
    lo: f64,
    hi: f64,
) -> Result<()> {
    // Times in decreasing order with cell edges at geometric midpoints between neighbours.
    let mut order: Vec<usize> = (0..series.times.len())
        .filter(|&i| series.times[i] > 0.0 && series.times[i].is_finite())
        .collect();
    order.sort_by(|&a, &b| series.times[b].total_cmp(&series.times[a]));
    let times: Vec<f64> = order.iter().map(|&i| series.times[i]).collect();
    let edges: Vec<(f64, f64)> = (0..times.len())
        .map(|j| {
            let upper = if j == 0 {
                if times.len() > 1 {
                    times[0] * (times[0] / times[1]).sqrt()
                } else {
                    times[0] * 1.5
                }
            } else {
                (times[j - 1] * times[j]).sqrt()
            };
            let lower = if j + 1 < times.len() {
                (times[j] * times[j + 1]).sqrt()
            } else if j > 0 {
                times[j] / (times[j - 1] / times[j]).sqrt()
            } else {
                times[0] / 1.5
            };
            (lower, upper)
        })
        .collect();
    let (t_lo, t_hi) = time_range(edges.iter().flat_map(|&(a, b)| [a, b]));
    let mut chart = ChartBuilder::on(area)
        .caption(name, ("sans-serif", 18))
        .margin(8)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d((t_lo..t_hi).log_scale(), lo..hi)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("t (log scale)")
        .y_desc(format!("⟨x_t, u⟩, u = {direction}"))
        .x_label_formatter(&|t| format_time(*t))
        .axis_desc_style(("sans-serif", 13))
        .draw()
        .map_err(plot_error)?;
    let step = (hi - lo) / HEATMAP_BINS as f64;
    let mut cells = Vec::new();
    for (j, &i) in order.iter().enumerate() {
        // Beyond the shared range: into the edge bins (density_heatmap docs).
        let clamped: Vec<f32> = series.values[i]
            .iter()
            .map(|&v| {
                if v.is_finite() {
                    (v as f64).clamp(lo, hi) as f32
                } else {
                    v
                }
            })
            .collect();
        let counts = bin_counts(&clamped, lo, hi, HEATMAP_BINS);
        let max = counts.iter().copied().max().unwrap_or(0);
        if max == 0 {
            continue;
        }
        let (t0, t1) = edges[j];
        for (b, &c) in counts.iter().enumerate() {
            if c == 0 {
                continue;
            }
            let v0 = lo + b as f64 * step;
            cells.push(Rectangle::new(
                [(t0, v0), (t1, v0 + step)],
                viridis(c as f64 / max as f64).filled(),
            ));
        }
    }
    chart.draw_series(cells).map_err(plot_error)?;
    Ok(())
}

/// Spread ratio tr Cov(cloud) / exact value against t, a line per sampler, with the band
/// [0.8, 1.25] (where a sampler counts as well dispersed) shaded and 1 dashed; log–log axes.
pub fn spread_ratio_plot(series: &[Series]) -> Result<String> {
    let points = || {
        series
            .iter()
            .flat_map(|s| s.points.iter())
            .filter(|(t, r)| *t > 0.0 && t.is_finite() && *r > 0.0 && r.is_finite())
    };
    let (t_lo, t_hi) = time_range(points().map(|p| p.0));
    let (mut r_lo, mut r_hi) = (0.5f64, 2.0f64);
    for &(_, r) in points() {
        r_lo = r_lo.min(r);
        r_hi = r_hi.max(r);
    }
    let (r_lo, r_hi) = (r_lo / 1.2, r_hi * 1.2);
    let entries: Vec<(String, RGBColor)> = series
        .iter()
        .map(|s| (s.name.clone(), sampler_color(&s.name)))
        .collect();
    let (w, h) = (820u32, 440u32);
    let legend_h = 22 * legend_rows(&entries, w) + 14;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h + legend_h)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let (top, bottom) = root.split_vertically(h);
        let mut chart = ChartBuilder::on(&top)
            .caption(
                "Spread ratio tr Cov(x_t) / exact (band: 0.8 to 1.25)",
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((t_lo..t_hi).log_scale(), (r_lo..r_hi).log_scale())
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc("t (log scale)")
            .y_desc("spread ratio (log scale)")
            .x_label_formatter(&|t| format_time(*t))
            .y_label_formatter(&|r| format_ratio(*r))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(plot_error)?;
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(t_lo, 0.8), (t_hi, 1.25)],
                RGBColor(44, 160, 44).mix(0.15).filled(),
            )))
            .map_err(plot_error)?;
        chart
            .draw_series(DashedLineSeries::new(
                [(t_lo, 1.0), (t_hi, 1.0)],
                6,
                4,
                RGBColor(100, 100, 100).stroke_width(1),
            ))
            .map_err(plot_error)?;
        for (s, (_, color)) in series.iter().zip(&entries) {
            let pts: Vec<(f64, f64)> = s
                .points
                .iter()
                .copied()
                .filter(|(t, r)| *t > 0.0 && t.is_finite() && *r > 0.0 && r.is_finite())
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(plot_error)?;
            chart
                .draw_series(PointSeries::of_element(pts, 3, *color, &|c, s, st| {
                    EmptyElement::at(c) + Circle::new((0, 0), s, st.filled())
                }))
                .map_err(plot_error)?;
        }
        draw_legend(&bottom, &entries, false)?;
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

/// Mode weights against t as stacked areas, one panel per cloud (the exact posterior's
/// constant Σ_{i∈m} ω_i first, as the reference, then each sampler's), modes in a fixed colour;
/// in the sampler panels dashed lines mark the exact posterior's cumulative weights.
pub fn mode_weights_plot(
    panels: &[ModePanel],
    mode_names: &[String],
    exact: &[f64],
) -> Result<String> {
    let m = mode_names.len();
    let all_times = panels.iter().flat_map(|p| p.times.iter().copied());
    let (t_lo, t_hi) = time_range(all_times);
    let reference = ModePanel {
        name: "exact posterior Σω (reference)".into(),
        times: vec![t_lo, t_hi],
        weights: vec![exact.to_vec(), exact.to_vec()],
    };
    let mut all: Vec<&ModePanel> = vec![&reference];
    all.extend(panels.iter());
    let cols = all.len().min(3);
    let rows = all.len().div_ceil(cols);
    let (pw, ph) = (400u32, 300u32);
    let entries: Vec<(String, RGBColor)> = mode_names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), palette(i)))
        .collect();
    let width = pw * cols as u32;
    let legend_h = 22 * legend_rows(&entries, width) + 14;
    // Cumulative exact weights: where the reference's band boundaries lie.
    let mut cumulative = Vec::with_capacity(m);
    let mut acc = 0.0;
    for &w in exact.iter().take(m) {
        acc += w;
        cumulative.push(acc);
    }
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, ph * rows as u32 + legend_h))
            .into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let (top, bottom) = root.split_vertically(ph * rows as u32);
        for (idx, (panel, area)) in all.iter().zip(top.split_evenly((rows, cols))).enumerate() {
            let mut chart = ChartBuilder::on(&area)
                .caption(&panel.name, ("sans-serif", 16))
                .margin(8)
                .x_label_area_size(34)
                .y_label_area_size(48)
                .build_cartesian_2d((t_lo..t_hi).log_scale(), 0.0..1.0)
                .map_err(plot_error)?;
            chart
                .configure_mesh()
                .disable_mesh()
                .x_desc("t (log scale)")
                .y_desc("fraction of particles")
                .x_label_formatter(&|t| format_time(*t))
                .draw()
                .map_err(plot_error)?;
            let mut order: Vec<usize> = (0..panel.times.len())
                .filter(|&i| panel.times[i] > 0.0 && panel.times[i].is_finite())
                .collect();
            order.sort_by(|&a, &b| panel.times[a].total_cmp(&panel.times[b]));
            let mut below = vec![0.0f64; order.len()];
            for mode in 0..m {
                let above: Vec<f64> = order
                    .iter()
                    .zip(&below)
                    .map(|(&i, b)| b + panel.weights[i].get(mode).copied().unwrap_or(0.0))
                    .collect();
                if above.iter().zip(&below).any(|(a, b)| a > b) {
                    let mut outline: Vec<(f64, f64)> = order
                        .iter()
                        .zip(&above)
                        .map(|(&i, &a)| (panel.times[i], a))
                        .collect();
                    outline.extend(
                        order
                            .iter()
                            .zip(&below)
                            .rev()
                            .map(|(&i, &b)| (panel.times[i], b)),
                    );
                    chart
                        .draw_series(std::iter::once(Polygon::new(
                            outline,
                            palette(mode).mix(0.85).filled(),
                        )))
                        .map_err(plot_error)?;
                }
                below = above;
            }
            if idx > 0 {
                for &c in cumulative.iter().filter(|&&c| c > 1e-3 && c < 1.0 - 1e-3) {
                    chart
                        .draw_series(DashedLineSeries::new(
                            [(t_lo, c), (t_hi, c)],
                            5,
                            4,
                            BLACK.stroke_width(1),
                        ))
                        .map_err(plot_error)?;
                }
            }
        }
        draw_legend(&bottom, &entries, true)?;
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

/// Early-stopping curves: each metric panel against log t (the metric of the cloud as if the
/// run had stopped at that t), a line per sampler, one shared legend.
pub fn early_stopping_plot(panels: &[MetricPanel]) -> Result<String> {
    if panels.is_empty() {
        return Err(Error::input(
            "an early-stopping plot needs at least one panel",
        ));
    }
    let finite = |p: &&(f64, f64)| p.0 > 0.0 && p.0.is_finite() && p.1.is_finite();
    let (t_lo, t_hi) = time_range(
        panels
            .iter()
            .flat_map(|p| p.series.iter().flat_map(|s| s.points.iter()))
            .filter(finite)
            .map(|p| p.0),
    );
    let mut names: Vec<String> = Vec::new();
    for s in panels.iter().flat_map(|p| p.series.iter()) {
        if !names.contains(&s.name) {
            names.push(s.name.clone());
        }
    }
    let entries: Vec<(String, RGBColor)> = names
        .iter()
        .map(|n| (n.clone(), sampler_color(n)))
        .collect();
    let cols = panels.len().min(2);
    let rows = panels.len().div_ceil(cols);
    let (pw, ph) = (460u32, 320u32);
    let width = pw * cols as u32;
    let legend_h = 22 * legend_rows(&entries, width) + 14;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, ph * rows as u32 + legend_h))
            .into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let (top, bottom) = root.split_vertically(ph * rows as u32);
        for (panel, area) in panels.iter().zip(top.split_evenly((rows, cols))) {
            let (mut y_lo, mut y_hi) = (f64::INFINITY, f64::NEG_INFINITY);
            for p in panel
                .series
                .iter()
                .flat_map(|s| s.points.iter())
                .filter(finite)
            {
                y_lo = y_lo.min(p.1);
                y_hi = y_hi.max(p.1);
            }
            if !(y_lo.is_finite() && y_hi.is_finite()) {
                (y_lo, y_hi) = (0.0, 1.0);
            }
            if y_hi - y_lo < 1e-9 {
                (y_lo, y_hi) = (y_lo - 0.5, y_hi + 0.5);
            }
            let pad = 0.06 * (y_hi - y_lo);
            let mut chart = ChartBuilder::on(&area)
                .caption(&panel.title, ("sans-serif", 16))
                .margin(8)
                .x_label_area_size(34)
                .y_label_area_size(56)
                .build_cartesian_2d((t_lo..t_hi).log_scale(), (y_lo - pad)..(y_hi + pad))
                .map_err(plot_error)?;
            chart
                .configure_mesh()
                .light_line_style(WHITE.mix(0.0))
                .x_desc("t (log scale)")
                .y_desc(panel.y_label.as_str())
                .x_label_formatter(&|t| format_time(*t))
                .draw()
                .map_err(plot_error)?;
            for s in &panel.series {
                let color = sampler_color(&s.name);
                let pts: Vec<(f64, f64)> = s.points.iter().filter(finite).copied().collect();
                chart
                    .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                    .map_err(plot_error)?;
                chart
                    .draw_series(PointSeries::of_element(pts, 2, color, &|c, s, st| {
                        EmptyElement::at(c) + Circle::new((0, 0), s, st.filled())
                    }))
                    .map_err(plot_error)?;
            }
        }
        draw_legend(&bottom, &entries, false)?;
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

/// One sampler's values in a [`category_plot`]: `(category index, value)` per point, values
/// finite.
#[derive(Clone, Debug)]
pub struct CategorySeries {
    pub name: String,
    pub points: Vec<(usize, f64)>,
}

/// Values against a categorical axis (the sweep report's metric against a swept axis): every
/// point a dot, the mean of each category's points joined by a line, one colour per series
/// ([`sampler_color`]). Categories sit at x = 0, 1, … and are labelled with `categories`; the
/// series are shifted side by side within a category so that equal values stay visible. The y
/// range is the points' range padded by 8 % of it (by 10 % of |y| when all are equal).
pub fn category_plot(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    categories: &[String],
    series: &[CategorySeries],
) -> Result<String> {
    let ys = series.iter().flat_map(|s| s.points.iter()).map(|p| p.1);
    let (lo, hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), y| {
        (l.min(y), h.max(y))
    });
    let pad = if hi > lo {
        0.08 * (hi - lo)
    } else {
        0.1 * lo.abs().max(1e-3)
    };
    let (y0, y1) = (lo - pad, hi + pad);
    let k = categories.len();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (460, 300)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.5f64..(k as f64 - 0.5), y0..y1)
            .map_err(plot_error)?;
        // Ticks fall on a finer grid that includes the integers, and only those are labelled.
        let fmt_x = |x: &f64| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                categories.get(i as usize).cloned().unwrap_or_default()
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
            .x_desc(x_desc)
            .y_desc(y_desc)
            .draw()
            .map_err(plot_error)?;
        let shown = series.len() as f64;
        for (si, s) in series.iter().enumerate() {
            let color = sampler_color(&s.name);
            let dx = (si as f64 - (shown - 1.0) / 2.0) * 0.06;
            let mut means = Vec::new();
            for x in 0..k {
                let at: Vec<f64> = s.points.iter().filter(|p| p.0 == x).map(|p| p.1).collect();
                if !at.is_empty() {
                    means.push((x as f64 + dx, at.iter().sum::<f64>() / at.len() as f64));
                }
            }
            chart
                .draw_series(LineSeries::new(means, color.stroke_width(2)))
                .map_err(plot_error)?
                .label(s.name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
            chart
                .draw_series(
                    s.points
                        .iter()
                        .map(|&(x, y)| Circle::new((x as f64 + dx, y), 3, color.filled())),
                )
                .map_err(plot_error)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE)
            .border_style(RGBColor(160, 160, 160))
            .draw()
            .map_err(plot_error)?;
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    /// The naive count: for each bin, the values v with lo + b·w ≤ v < lo + (b+1)·w (the last
    /// bin closed at hi), by comparisons instead of a floor.
    fn naive_counts(values: &[f32], lo: f64, hi: f64, bins: usize) -> Vec<u32> {
        let w = (hi - lo) / bins as f64;
        (0..bins)
            .map(|b| {
                let (a, c) = (lo + b as f64 * w, lo + (b + 1) as f64 * w);
                values
                    .iter()
                    .filter(|&&v| {
                        let v = v as f64;
                        v >= a && (v < c || (b == bins - 1 && v <= hi))
                    })
                    .count() as u32
            })
            .collect()
    }

    #[test]
    fn sampler_colours_depend_on_the_name_alone() {
        let builtin = ["exact", "fsr", "sigma-dps", "zeta-dps", "pigdm", "tmpd"].map(sampler_color);
        assert_eq!(builtin[0], RGBColor(0, 0, 0));
        // The built-in samplers keep the Tableau colours every report has used.
        assert_eq!(builtin[1], RGBColor(31, 119, 180));
        assert_eq!(builtin[2], RGBColor(255, 127, 14));
        assert_eq!(builtin[5], RGBColor(148, 103, 189));
        for (i, a) in builtin.iter().enumerate() {
            assert!(builtin[i + 1..].iter().all(|b| b != a), "{builtin:?}");
        }
        // Other names (diagnosed samples' labels): never a built-in's colour.
        for name in ["mine", "external", "prior", "ddpm-2000", ""] {
            assert!(!builtin.contains(&sampler_color(name)), "{name}");
        }
        assert_ne!(sampler_color("mine"), sampler_color("external"));
    }

    #[test]
    fn bin_counts_equal_a_naive_count() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for bins in [1usize, 7, 60] {
            let values: Vec<f32> = (0..2000)
                .map(|_| rng.random_range(-3.0f32..3.0))
                .chain([f32::NAN, 2.0, -2.0, 10.0])
                .collect();
            // Bins on a grid that makes many values fall on edges: lo = −2, hi = 2.
            let got = bin_counts(&values, -2.0, 2.0, bins);
            assert_eq!(got, naive_counts(&values, -2.0, 2.0, bins), "bins {bins}");
            let inside = values
                .iter()
                .filter(|v| (-2.0..=2.0).contains(&(**v as f64)))
                .count() as u32;
            assert_eq!(got.iter().sum::<u32>(), inside);
        }
        // Values exactly on interior edges of 4 bins of [0, 4].
        let edges = [0.0f32, 1.0, 2.0, 3.0, 4.0];
        assert_eq!(bin_counts(&edges, 0.0, 4.0, 4), vec![1, 1, 1, 2]);
        assert!(bin_counts(&edges, 1.0, 1.0, 4).iter().all(|&c| c == 0));
    }

    fn projections(seed: u64, times: &[f64], k: usize, centre: f32) -> ProjectionSeries {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        ProjectionSeries {
            times: times.to_vec(),
            values: times
                .iter()
                .map(|&t| {
                    (0..k)
                        .map(|_| {
                            let side = if rng.random::<bool>() { 1.0 } else { -1.0 };
                            centre * side + t as f32 * rng.random_range(-2.0f32..2.0)
                        })
                        .collect()
                })
                .collect(),
        }
    }

    fn assert_svg(svg: &str, must_contain: &[&str]) {
        assert!(
            svg.trim_start().starts_with("<svg"),
            "{}",
            &svg[..80.min(svg.len())]
        );
        assert!(svg.trim_end().ends_with("</svg>"));
        for needle in must_contain {
            assert!(svg.contains(needle), "missing {needle:?}");
        }
        // Balanced elements: every opened <text> is closed.
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
    }

    #[test]
    fn heatmap_has_a_panel_per_cloud_and_cells_per_count() {
        let times = [1.0, 0.3, 0.1, 0.03, 0.01, 0.001];
        let exact = projections(1, &times, 200, 1.5);
        let fsr = projections(2, &times, 200, 1.5);
        let svg = density_heatmap(&[("exact", &exact), ("fsr", &fsr)], "Shirt − Coat").unwrap();
        assert_svg(
            &svg,
            &[
                "exact",
                "fsr",
                "t (log scale)",
                "⟨x_t, u⟩, u = Shirt − Coat",
            ],
        );
        // One filled rectangle per non-empty (time, bin) cell, over the first panel's range
        // widened by a quarter of its span each side, values beyond it in the edge bins.
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in exact.values.iter().flatten() {
            lo = lo.min(*v as f64);
            hi = hi.max(*v as f64);
        }
        let pad = 0.25 * (hi - lo);
        let (lo, hi) = (lo - pad, hi + pad);
        let cells: usize = exact
            .values
            .iter()
            .chain(&fsr.values)
            .map(|v| {
                let clamped: Vec<f32> =
                    v.iter().map(|&x| (x as f64).clamp(lo, hi) as f32).collect();
                bin_counts(&clamped, lo, hi, HEATMAP_BINS)
                    .iter()
                    .filter(|&&c| c > 0)
                    .count()
            })
            .sum();
        // Rectangles: the background, the colour bar's 100, one per cell.
        let rects = svg.matches("<rect").count();
        assert!(rects >= cells + 100, "{rects} rectangles for {cells} cells");
        assert!(
            rects <= cells + 100 + 4,
            "{rects} rectangles for {cells} cells"
        );
    }

    #[test]
    fn spread_ratio_plot_draws_lines_band_and_legend() {
        let series = vec![
            Series {
                name: "exact".into(),
                points: vec![(1.0, 1.01), (0.1, 0.97), (1e-3, 1.02)],
            },
            Series {
                name: "sigma-dps".into(),
                points: vec![(1.0, 1.0), (0.1, 0.4), (1e-3, f64::NAN), (0.01, 0.2)],
            },
        ];
        let svg = spread_ratio_plot(&series).unwrap();
        assert_svg(
            &svg,
            &[
                "exact",
                "sigma-dps",
                "spread ratio (log scale)",
                "t (log scale)",
            ],
        );
        // One polyline per sampler (the dashed 1-line is drawn as separate segments).
        assert!(svg.matches("<polyline").count() >= 2);
        assert!(!svg.contains("NaN"));
    }

    #[test]
    fn mode_weights_plot_stacks_modes_with_a_reference_panel() {
        let names = vec!["Shirt".to_string(), "Coat".to_string(), "Bag".to_string()];
        let panels = vec![ModePanel {
            name: "fsr".into(),
            times: vec![1.0, 0.1, 0.01, 0.001],
            weights: vec![
                vec![0.3, 0.3, 0.4],
                vec![0.5, 0.3, 0.2],
                vec![0.8, 0.2, 0.0],
                vec![0.9, 0.1, 0.0],
            ],
        }];
        let svg = mode_weights_plot(&panels, &names, &[0.93, 0.07, 0.0]).unwrap();
        assert_svg(
            &svg,
            &[
                "Shirt",
                "Coat",
                "Bag",
                "fsr",
                "exact posterior Σω (reference)",
                "fraction of particles",
            ],
        );
        // Polygons: reference panel 2 modes (Bag has no mass), fsr panel 3.
        assert_eq!(svg.matches("<polygon").count(), 5);
    }

    #[test]
    fn early_stopping_plot_has_every_panel_and_sampler() {
        let curve = |name: &str, f: fn(f64) -> f64| Series {
            name: name.into(),
            points: [1.0, 0.1, 0.01, 0.001].iter().map(|&t| (t, f(t))).collect(),
        };
        let panels = vec![
            MetricPanel {
                title: "mode TV".into(),
                y_label: "total variation".into(),
                series: vec![curve("exact", |t| 0.5 * t), curve("fsr", |t| 0.6 * t)],
            },
            MetricPanel {
                title: "PSNR of m(x_t)".into(),
                y_label: "dB".into(),
                series: vec![
                    curve("exact", |t| 20.0 - t),
                    curve("fsr", |t| if t < 0.01 { f64::INFINITY } else { 19.0 }),
                ],
            },
        ];
        let svg = early_stopping_plot(&panels).unwrap();
        assert_svg(
            &svg,
            &[
                "mode TV",
                "PSNR of m(x_t)",
                "total variation",
                "dB",
                "exact",
                "fsr",
            ],
        );
        assert!(!svg.contains("inf") && !svg.contains("NaN"));
    }
}
