//! report.html: one self-contained page per run folder. Plots are inline SVG, PNGs are
//! embedded as `data:` URIs, the style sheet is inline and there is no script, so the page
//! opens from disk (or as an e-mail attachment) with nothing else.
//!
//! [`render`] takes a plain [`ReportPage`]: whoever has the numbers (a run, a comparison, a
//! diagnosis of outside samples) fills it in; [`standard_figures`] draws the usual plots from
//! per-sampler metric records and projections. Pages of another shape (the merged sweep's)
//! are built from the same pieces: [`document`], [`escape`] and [`strip_xml_declaration`].

use std::fmt::Write as _;

use super::plots::{self, MetricPanel, ModePanel, ProjectionSeries, Series};
use crate::Result;
use crate::diagnostics::CheckpointMetrics;

/// Everything the page shows.
#[derive(Clone, Debug, Default)]
pub struct ReportPage {
    pub title: String,
    /// One line under the title (version, backend, total time …).
    pub subtitle: String,
    /// Key–value facts about the problem (data set, operator, σ, truth, modes …).
    pub facts: Vec<(String, String)>,
    /// Notes the reader must see (skipped samplers and why, failures flagged …).
    pub notes: Vec<String>,
    /// The modes the metrics use and their exact posterior mass.
    pub modes: Option<ModeTable>,
    /// One row per sampler in the summary table.
    pub samplers: Vec<SamplerRow>,
    /// Pictures, in order.
    pub figures: Vec<Figure>,
    /// The resolved config, shown verbatim at the end.
    pub config_toml: Option<String>,
}

#[derive(Clone, Debug)]
pub struct ModeTable {
    pub names: Vec<String>,
    pub exact_weights: Vec<f64>,
    pub hallucination_threshold: f64,
}

/// A sampler's line in the summary table: its final metrics and cost.
#[derive(Clone, Debug)]
pub struct SamplerRow {
    pub name: String,
    pub particles: usize,
    /// Integrator steps walked (0 for the exact sampler, which draws directly).
    pub steps: usize,
    pub wall_seconds: f64,
    pub seconds_per_step: Option<f64>,
    pub passes_per_step: f64,
    /// The metrics at the final time.
    pub metrics: CheckpointMetrics,
    /// Spread ratio extremes over the checkpoints and the final time (min, max).
    pub spread_ratio_range: Option<(f64, f64)>,
    pub warnings: Vec<String>,
}

/// A picture: inline SVG or an embedded PNG.
#[derive(Clone, Debug)]
pub enum FigureContent {
    Svg(String),
    Png(Vec<u8>),
}

#[derive(Clone, Debug)]
pub struct Figure {
    pub title: String,
    /// What the picture shows and how to read it.
    pub caption: String,
    pub content: FigureContent,
}

/// What the standard plots need for one sampler.
#[derive(Clone, Debug)]
pub struct SamplerCurves {
    pub name: String,
    /// Metric records in decreasing t, the final one last.
    pub records: Vec<CheckpointMetrics>,
    pub projection: Option<ProjectionSeries>,
}

/// The spread-ratio band inside which a sampler counts as well dispersed.
pub const SPREAD_BAND: (f64, f64) = (0.8, 1.25);

/// A hallucination or off-support rate above this (of the final particles) is a failure.
pub const RATE_FLAG: f64 = 0.05;

/// The standard plots: the (t, ⟨x_t, u⟩) heatmaps (the exact posterior's `exact_projection`
/// first, when given, then each sampler's), spread ratio vs t, mode weights vs t and the
/// early-stopping curves (mode TV, prior-mode hallucination, off-support, PSNR of m(x_t)).
pub fn standard_figures(
    curves: &[SamplerCurves],
    exact_projection: Option<(&str, &ProjectionSeries)>,
    direction: &str,
    mode_names: &[String],
    exact_mode_weights: &[f64],
) -> Result<Vec<Figure>> {
    let mut figures = Vec::new();
    let mut panels: Vec<(&str, &ProjectionSeries)> = Vec::new();
    if let Some(p) = exact_projection {
        panels.push(p);
    }
    for c in curves {
        if let Some(p) = &c.projection {
            if exact_projection.is_some() && c.name == "exact" {
                continue;
            }
            panels.push((c.name.as_str(), p));
        }
    }
    if !panels.is_empty() {
        figures.push(Figure {
            title: "Where the particles go: density of ⟨x_t, u⟩ over time".into(),
            caption: format!(
                "Each column is the histogram, at one recorded time t, of the particles' \
                 projections on the unit direction u = {direction} (normalised by its largest \
                 bin). The exact posterior's panel shows where the mass should be; a sampler \
                 whose bands split, merge or drift differently is choosing modes differently. \
                 The range is the first panel's widened by a quarter on each side; particles \
                 beyond it are drawn in the top and bottom bins."
            ),
            content: FigureContent::Svg(plots::density_heatmap(&panels, direction)?),
        });
    }
    let series = |f: &dyn Fn(&CheckpointMetrics) -> f64| -> Vec<Series> {
        curves
            .iter()
            .map(|c| Series {
                name: c.name.clone(),
                points: c.records.iter().map(|r| (r.t, f(r))).collect(),
            })
            .collect()
    };
    figures.push(Figure {
        title: "Spread ratio vs t".into(),
        caption: format!(
            "tr Cov of each sampler's cloud divided by the exact posterior's closed form \
             s² Σ ω_i ‖a_i − ā‖² + D v at the same t. Below {} the sampler is \
             under-dispersed, above {} over-dispersed (shaded band).",
            SPREAD_BAND.0, SPREAD_BAND.1
        ),
        content: FigureContent::Svg(plots::spread_ratio_plot(&series(&|r| r.spread_ratio))?),
    });
    let mode_panels: Vec<ModePanel> = curves
        .iter()
        .map(|c| ModePanel {
            name: c.name.clone(),
            times: c.records.iter().map(|r| r.t).collect(),
            weights: c.records.iter().map(|r| r.mode_weights.clone()).collect(),
        })
        .collect();
    figures.push(Figure {
        title: "Mode weights vs t".into(),
        caption: "The fraction of each cloud whose nearest atom at t lies in each mode, stacked; \
                  the first panel is the exact posterior's Σ_{i∈mode} ω_i and the dashed lines \
                  repeat its boundaries. At large t even exact draws land on other modes' \
                  atoms; compare the samplers with the exact sampler's panel there."
            .into(),
        content: FigureContent::Svg(plots::mode_weights_plot(
            &mode_panels,
            mode_names,
            exact_mode_weights,
        )?),
    });
    let metric_panels = vec![
        MetricPanel {
            title: "mode TV to the exact posterior".into(),
            y_label: "total variation".into(),
            series: series(&|r| r.mode_tv),
        },
        MetricPanel {
            title: "prior-mode hallucination".into(),
            y_label: "fraction in ruled-out modes".into(),
            series: series(&|r| r.hallucination_rate),
        },
        MetricPanel {
            title: "off-support rate".into(),
            y_label: "fraction beyond exact 99th pct".into(),
            series: series(&|r| r.off_support_rate),
        },
        MetricPanel {
            title: "likelihood-mode hallucination".into(),
            y_label: "fraction off support fitting y".into(),
            series: series(&|r| r.likelihood_hallucination_rate),
        },
        MetricPanel {
            title: "PSNR of m(x_t) vs the truth".into(),
            y_label: "PSNR (dB), mean over particles".into(),
            series: series(&|r| r.psnr_denoised.mean),
        },
    ];
    figures.push(Figure {
        title: "Early-stopping curves".into(),
        caption: "Each metric of the cloud x_t (mode TV, hallucination, off-support, \
                  likelihood-mode hallucination: off support while ‖y − A(x_t/s)‖ is within the \
                  exact cloud's 99th percentile) or of its Tweedie means m(x_t) (PSNR) as if the \
                  run had stopped at t."
            .into(),
        content: FigureContent::Svg(plots::early_stopping_plot(&metric_panels)?),
    });
    Ok(figures)
}

/// `&`, `<`, `>`, `"` and `'` as entities.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Standard base64 (RFC 4648, with padding).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A number for a table cell: `–` for NaN, `∞` for infinities, 3 significant decimals.
pub fn num(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "∞".into()
        } else {
            "−∞".into()
        }
    } else if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e5) {
        format!("{v:.2e}")
    } else {
        format!("{v:.3}")
    }
}

pub const STYLE: &str = "
body { font-family: sans-serif; margin: 24px auto; max-width: 1340px; color: #222; }
h1 { font-size: 24px; margin-bottom: 4px; }
h2 { font-size: 19px; margin-top: 32px; border-bottom: 1px solid #ccc; padding-bottom: 4px; }
.subtitle { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 8px 0; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th { background: #f2f2f2; }
td.name, th.name { text-align: left; }
td.bad { background: #fde2e1; }
.notes { background: #fff8e1; border: 1px solid #f0d58a; padding: 8px 16px; }
figure { margin: 16px 0; }
figure svg, figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figure img { image-rendering: pixelated; }
figure.png { display: inline-block; vertical-align: top; margin: 8px 24px 16px 0; max-width: 560px; }
.ftitle { font-weight: bold; margin-bottom: 6px; }
figcaption { color: #555; font-size: 14px; margin-top: 4px; max-width: 1000px; }
pre { background: #f7f7f7; padding: 12px; overflow-x: auto; font-size: 13px; }
.warn { color: #a33; font-size: 13px; text-align: left; }
";

/// A whole HTML document: the doctype, `title`, the inline style sheet `style` and `body`.
/// Every page fslens writes (a run, a comparison, a diagnosis, a sweep) goes through here.
pub fn document(title: &str, style: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{}</title>\n<style>{style}</style>\n</head>\n<body>\n{body}</body>\n</html>\n",
        escape(title)
    )
}

/// The whole page as one HTML document.
pub fn render(page: &ReportPage) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<h1>{}</h1>\n<p class=\"subtitle\">{}</p>\n",
        escape(&page.title),
        escape(&page.subtitle)
    );
    notes(&mut h, &page.notes);
    facts(&mut h, &page.facts);
    sampler_table(&mut h, &page.samplers);
    if let Some(modes) = &page.modes {
        mode_table(&mut h, modes);
    }
    figures(&mut h, &page.figures);
    if let Some(cfg) = &page.config_toml {
        let _ = write!(h, "<h2>Resolved config</h2>\n<pre>{}</pre>\n", escape(cfg));
    }
    document(&page.title, STYLE, &h)
}

/// The notes the reader must see, in a box under the title.
fn notes(h: &mut String, notes: &[String]) {
    if notes.is_empty() {
        return;
    }
    h.push_str("<div class=\"notes\"><ul>\n");
    for n in notes {
        let _ = writeln!(h, "<li>{}</li>", escape(n));
    }
    h.push_str("</ul></div>\n");
}

/// The problem's key–value facts.
fn facts(h: &mut String, facts: &[(String, String)]) {
    if facts.is_empty() {
        return;
    }
    h.push_str("<h2>Problem</h2>\n<table>\n");
    for (k, v) in facts {
        let _ = writeln!(
            h,
            "<tr><th class=\"name\">{}</th><td class=\"name\">{}</td></tr>",
            escape(k),
            escape(v)
        );
    }
    h.push_str("</table>\n");
}

/// The summary table: a row per sampler with its final metrics and cost, bad values flagged.
fn sampler_table(h: &mut String, samplers: &[SamplerRow]) {
    if samplers.is_empty() {
        return;
    }
    h.push_str(
        "<h2>Samplers at the final time</h2>\n<table>\n<tr><th class=\"name\">sampler</th>\
         <th>particles</th><th>steps</th><th>seconds</th><th>s/step</th><th>passes/step</th>\
         <th>mode TV</th><th>halluc.</th><th>off-support</th><th>halluc. (likelihood)</th>\
         <th>spread ratio</th>\
         <th>spread ratio range over t</th><th>data fit m(x)</th><th>PSNR m(x)</th>\
         <th>SSIM m(x)</th><th>PSNR of mean</th><th class=\"name\">warnings</th></tr>\n",
    );
    for s in samplers {
        let m = &s.metrics;
        let flag = |bad: bool| if bad { " class=\"bad\"" } else { "" };
        let outside = |r: f64| !(SPREAD_BAND.0..=SPREAD_BAND.1).contains(&r);
        let range = match s.spread_ratio_range {
            Some((lo, hi)) => format!(
                "<td{}>{} – {}</td>",
                flag(outside(lo) || outside(hi)),
                num(lo),
                num(hi)
            ),
            None => "<td>–</td>".into(),
        };
        let _ = writeln!(
            h,
            "<tr><td class=\"name\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td{}>{}</td><td{}>{}</td><td{}>{}</td><td{}>{}</td>{range}\
             <td>{} ± {}</td><td>{} ± {}</td><td>{} ± {}</td><td>{}</td>\
             <td class=\"warn\">{}</td></tr>",
            escape(&s.name),
            s.particles,
            s.steps,
            num(s.wall_seconds),
            s.seconds_per_step.map_or("–".into(), num),
            num(s.passes_per_step),
            num(m.mode_tv),
            flag(m.hallucination_rate > RATE_FLAG),
            num(m.hallucination_rate),
            flag(m.off_support_rate > RATE_FLAG),
            num(m.off_support_rate),
            flag(m.likelihood_hallucination_rate > RATE_FLAG),
            num(m.likelihood_hallucination_rate),
            flag(outside(m.spread_ratio)),
            num(m.spread_ratio),
            num(m.data_fit_denoised.mean),
            num(m.data_fit_denoised.std),
            num(m.psnr_denoised.mean),
            num(m.psnr_denoised.std),
            num(m.ssim_denoised.mean),
            num(m.ssim_denoised.std),
            num(m.psnr_denoised_mean),
            s.warnings
                .iter()
                .map(|w| escape(w))
                .collect::<Vec<_>>()
                .join("<br>")
        );
    }
    h.push_str(
        "</table>\n<p class=\"subtitle\">Red cells: hallucination (prior-mode or likelihood-mode) \
         or off-support above 5 %, \
         spread ratio outside [0.8, 1.25]. Data fit is ‖y − A(m(x))‖²/(mσ²), ≈ 1 when the \
         Tweedie means fit y to the noise level.</p>\n",
    );
}

/// The modes with their exact posterior mass and whether the metrics rule them out.
fn mode_table(h: &mut String, modes: &ModeTable) {
    let _ = writeln!(
        h,
        "<h2>Modes</h2>\n<table>\n<tr><th class=\"name\">mode</th><th>exact mass \
         Σω</th><th class=\"name\">ruled out (&lt; {})</th></tr>",
        num(modes.hallucination_threshold)
    );
    for (name, w) in modes.names.iter().zip(&modes.exact_weights) {
        let _ = writeln!(
            h,
            "<tr><td class=\"name\">{}</td><td>{}</td><td class=\"name\">{}</td></tr>",
            escape(name),
            num(*w),
            if *w < modes.hallucination_threshold {
                "yes"
            } else {
                ""
            }
        );
    }
    h.push_str("</table>\n");
}

/// The figures in order: each SVG under its own heading, runs of PNGs side by side under one.
fn figures(h: &mut String, figures: &[Figure]) {
    let mut in_images = false;
    for f in figures {
        match &f.content {
            FigureContent::Svg(svg) => {
                in_images = false;
                let _ = write!(h, "<h2>{}</h2>\n<figure>\n", escape(&f.title));
                h.push_str(strip_xml_declaration(svg));
                h.push('\n');
            }
            FigureContent::Png(bytes) => {
                // Consecutive images flow side by side under one heading.
                if !in_images {
                    h.push_str("<h2>Images</h2>\n");
                    in_images = true;
                }
                let width = png_display_width(bytes)
                    .map(|w| format!(" width=\"{w}\""))
                    .unwrap_or_default();
                let _ = writeln!(
                    h,
                    "<figure class=\"png\">\n<div class=\"ftitle\">{}</div>\n\
                     <img alt=\"{}\"{width} src=\"data:image/png;base64,{}\">",
                    escape(&f.title),
                    escape(&f.title),
                    base64(bytes)
                );
            }
        }
        let _ = write!(
            h,
            "<figcaption>{}</figcaption>\n</figure>\n",
            escape(&f.caption)
        );
    }
}

/// Small PNGs (a 4×4 measurement, a 16×16 truth) are shown enlarged by a whole factor to about
/// 200 pixels wide; the width comes from the IHDR chunk (bytes 16..20, big-endian). `None`
/// for bytes that are not a PNG or for images already 200 pixels or wider.
fn png_display_width(bytes: &[u8]) -> Option<u32> {
    if bytes.len() < 24 || &bytes[..8] != b"\x89PNG\r\n\x1a\n" {
        return None;
    }
    let w = u32::from_be_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
    if w == 0 || w >= 200 {
        return None;
    }
    Some(w * 200u32.div_ceil(w))
}

/// Inline SVG in HTML must not carry an `<?xml …?>` declaration.
pub fn strip_xml_declaration(svg: &str) -> &str {
    let s = svg.trim_start();
    if s.starts_with("<?xml")
        && let Some(end) = s.find("?>")
    {
        return s[end + 2..].trim_start();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostics::MeanStd;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected, "{input:?}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn small_pngs_are_enlarged_by_a_whole_factor() {
        let png = |w: u32, h: u32| {
            let mut bytes = Vec::new();
            image::ImageEncoder::write_image(
                image::codecs::png::PngEncoder::new(&mut bytes),
                &vec![128u8; (w * h * 3) as usize],
                w,
                h,
                image::ExtendedColorType::Rgb8,
            )
            .unwrap();
            bytes
        };
        assert_eq!(png_display_width(&png(4, 4)), Some(200));
        assert_eq!(png_display_width(&png(68, 68)), Some(204));
        assert_eq!(png_display_width(&png(530, 530)), None);
        assert_eq!(png_display_width(b"not a png at all, no header"), None);
    }

    #[test]
    fn escape_covers_markup_characters() {
        assert_eq!(
            escape("<a href=\"x\">&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
    }

    fn record(t: f64, tv: f64, ratio: f64) -> CheckpointMetrics {
        let ms = |m: f64| MeanStd { mean: m, std: 0.1 };
        CheckpointMetrics {
            t,
            mode_weights: vec![0.7, 0.3],
            mode_tv: tv,
            mode_tv_to_exact_cloud: tv,
            hallucination_rate: 0.0,
            off_support_rate: 0.2,
            off_support_distance: 1.0,
            likelihood_hallucination_rate: 0.1,
            data_fit_q99: 2.0,
            exact_distance_q99: 0.5,
            spread: ratio,
            exact_spread: 1.0,
            spread_ratio: ratio,
            data_fit_denoised: ms(1.0),
            data_fit_scaled: ms(2.0),
            psnr_denoised: ms(f64::INFINITY),
            ssim_denoised: ms(0.8),
            psnr_denoised_mean: 21.0,
            ssim_denoised_mean: 0.9,
        }
    }

    #[test]
    fn page_is_self_contained_escaped_and_has_every_part() {
        let records = vec![
            record(0.5, 0.2, 1.0),
            record(0.01, 0.1, 0.5),
            record(1e-3, 0.05, 0.6),
        ];
        let curves = vec![SamplerCurves {
            name: "fsr<script>".into(),
            records: records.clone(),
            projection: Some(ProjectionSeries {
                times: vec![0.5, 0.01, 1e-3],
                values: vec![
                    vec![0.1, -0.3, 0.5],
                    vec![0.2, 0.2, -0.4],
                    vec![1.0, 1.0, -1.0],
                ],
            }),
        }];
        let modes = vec!["A & B".to_string(), "C".to_string()];
        let mut figures = standard_figures(&curves, None, "A − C", &modes, &[0.9, 0.1]).unwrap();
        assert_eq!(figures.len(), 4);
        figures.push(Figure {
            title: "grid".into(),
            caption: "samples".into(),
            content: FigureContent::Png(vec![0x89, b'P', b'N', b'G']),
        });
        let page = ReportPage {
            title: "run <1>".into(),
            subtitle: "fslens".into(),
            facts: vec![("operator".into(), "box:x=1 & y".into())],
            notes: vec!["pigdm skipped: operator is not linear".into()],
            modes: Some(ModeTable {
                names: modes.clone(),
                exact_weights: vec![0.9, 0.1],
                hallucination_threshold: 1e-3,
            }),
            samplers: vec![SamplerRow {
                name: "fsr<script>".into(),
                particles: 3,
                steps: 10,
                wall_seconds: 1.5,
                seconds_per_step: Some(0.15),
                passes_per_step: 1.0,
                metrics: records[2].clone(),
                spread_ratio_range: Some((0.5, 1.0)),
                warnings: vec!["cg <slow>".into()],
            }],
            figures,
            config_toml: Some("seed = 0\n[data]\nkind = \"a<b\"\n".into()),
        };
        let html = render(&page);
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.trim_end().ends_with("</html>"));
        assert!(!html.contains("<script"), "user text is escaped");
        assert!(html.contains("fsr&lt;script&gt;"));
        assert!(html.contains("box:x=1 &amp; y"));
        assert!(html.contains("kind = &quot;a&lt;b&quot;"));
        assert!(html.contains("pigdm skipped"));
        assert_eq!(html.matches("<svg").count(), 4);
        assert!(!html.contains("<?xml"));
        assert!(html.contains("src=\"data:image/png;base64,iVBORw==\""));
        // Spread ratio 0.6 at the end and range down to 0.5: flagged; off-support 0.2 flagged.
        assert!(html.matches("class=\"bad\"").count() >= 3);
        // No external resources: the only URL is the SVG namespace.
        for (i, _) in html.match_indices("http") {
            assert!(
                html[i..].starts_with("http://www.w3.org/2000/svg"),
                "external reference at {}",
                &html[i..i + 40]
            );
        }
    }
}
