//! `fslens diagnose`: samples produced by another program (a neural DPS run in PyTorch, say)
//! scored against the exact posterior of a config's measurement, with the metrics of a run.
//!
//! The config fixes the atoms, the truth, the operator and y exactly as `fslens run` would
//! ([`super::setup`], same seed → same y). The samples are clean images, so they are scored at
//! t = 0 (s = 1, v = 0): their nearest atom argmin_i ‖x − a_i‖ gives their mode, the
//! exact cloud is K_ref exact draws i ~ Cat(ω) (x = a_i, whose own nearest-atom distance is 0,
//! so the off-support threshold is ½ρ), the spread ratio is tr Cov(samples)/Σ_i ω_i ‖a_i − ā‖²,
//! and PSNR/SSIM/data fit are those of the samples themselves (the "denoised" fields of a run
//! hold x here). An `exact` row of fresh exact draws sits beside them for comparison.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::SeedableRng;

use super::Observer;
use super::classes::class_weights_of_samples;
use super::outcome::{Diagnosis, ProblemOutcome, ScoredCloud, modes_summary};
use super::summary::{ExternalSource, Summary};
use crate::choices::Choice;
use crate::data::ImageShape;
use crate::engine::Noise;
use crate::output::{Destination, OutputDir};
use crate::plan::RunPlan;
use crate::samplers::SamplerKind;
use crate::samplers::exact::Exact;
use crate::{Error, Result};

/// How the numbers in a file map to fslens pixels in [-1, 1].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PixelConvention {
    /// Already in [-1, 1] (the default for float .npy).
    MinusOneToOne,
    /// In [0, 1]: x = 2p − 1.
    ZeroToOne,
    /// 8-bit intensities in [0, 255]: x = 2p/255 − 1 (the default for uint8 .npy and PNG).
    Byte,
}

impl PixelConvention {
    pub const NAMES: [&'static str; 3] = ["minus-one-to-one", "zero-to-one", "0-255"];

    pub fn name(self) -> &'static str {
        match self {
            PixelConvention::MinusOneToOne => "minus-one-to-one",
            PixelConvention::ZeroToOne => "zero-to-one",
            PixelConvention::Byte => "0-255",
        }
    }

    /// The range [lo, hi] the convention's values live in.
    pub fn bounds(self) -> (f64, f64) {
        match self {
            PixelConvention::MinusOneToOne => (-1.0, 1.0),
            PixelConvention::ZeroToOne => (0.0, 1.0),
            PixelConvention::Byte => (0.0, 255.0),
        }
    }

    /// The fslens pixel of value p: x = −1 + 2(p − lo)/(hi − lo).
    pub fn to_pixel(self, p: f64) -> f32 {
        let (lo, hi) = self.bounds();
        (-1.0 + 2.0 * (p - lo) / (hi - lo)) as f32
    }
}

impl std::str::FromStr for PixelConvention {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "minus-one-to-one" | "-1-1" | "[-1,1]" => Ok(PixelConvention::MinusOneToOne),
            "zero-to-one" | "0-1" | "[0,1]" => Ok(PixelConvention::ZeroToOne),
            "0-255" | "byte" | "uint8" => Ok(PixelConvention::Byte),
            _ => Err(Error::config(
                "--pixels",
                format!(
                    "unknown pixel convention {s:?}; expected one of {}",
                    PixelConvention::NAMES.join(", ")
                ),
            )),
        }
    }
}

/// Values may overshoot the declared range by this fraction of its width (an unclipped
/// sampler's output does) before the file is taken to be in another convention.
pub const RANGE_SLACK: f64 = 1.0;

/// Samples read from a file or folder, as fslens pixels.
#[derive(Clone, Debug)]
pub struct ExternalSamples {
    /// K × D, HWC order, [-1, 1] scale (not clipped).
    pub pixels: Vec<f32>,
    pub count: usize,
    pub convention: PixelConvention,
    /// e.g. `npy f32 (1024, 16, 16, 1)`.
    pub format: String,
}

/// Reads `.npy` samples (K × D, K × H × W × C, or K × H × W for one channel; f32, f64 or u8)
/// or a folder of PNG/JPEG images, checks them against `shape` and the pixel convention
/// (default: 0-255 for u8 and images, [-1, 1] for floats) and maps them to [-1, 1].
pub fn load_samples(
    path: &Path,
    shape: ImageShape,
    declared: Option<PixelConvention>,
) -> Result<ExternalSamples> {
    if path.is_dir() {
        return load_folder(path, shape, declared);
    }
    let a = crate::arrays::read_npy(path)?;
    let d = shape.dim();
    let (h, w, c) = (shape.height, shape.width, shape.channels);
    let expected = format!(
        "expected (K, {d}) or (K, {h}, {w}, {c}) for the config's {h}x{w}x{c} images (HWC order)"
    );
    let count = match a.shape.as_slice() {
        [k, dd] if *dd == d => *k,
        [k, hh, ww] if c == 1 && (*hh, *ww) == (h, w) => *k,
        [k, hh, ww, cc] if (*hh, *ww, *cc) == (h, w, c) => *k,
        [_, cc, hh, ww] if (*cc, *hh, *ww) == (c, h, w) => {
            return Err(Error::data(
                path,
                format!(
                    "has shape {:?}, channels first (NCHW); {expected}: save \
                     x.permute(0, 2, 3, 1) (PyTorch) or x.transpose(0, 2, 3, 1) (numpy)",
                    a.shape
                ),
            ));
        }
        s => {
            return Err(Error::data(
                path,
                format!("has shape {s:?}; {expected}. {}", size_advice(s, shape)),
            ));
        }
    };
    if count == 0 {
        return Err(Error::data(path, "holds no samples (K = 0)"));
    }
    let default = if a.dtype == "u8" {
        PixelConvention::Byte
    } else {
        PixelConvention::MinusOneToOne
    };
    let convention = declared.unwrap_or(default);
    check_range(path, &a.data, convention, declared.is_some())?;
    Ok(ExternalSamples {
        pixels: a.data.iter().map(|&p| convention.to_pixel(p)).collect(),
        count,
        convention,
        format: format!("npy {} {:?}", a.dtype, a.shape),
    })
}

/// What to change when samples of array shape `found` do not fit the config's images
/// `want`: resize the samples, or make the config's images their size with the key that does
/// it (data.resize; data.size for synthetic sets; data.grayscale or data.channels for the
/// channel count).
fn size_advice(found: &[usize], want: ImageShape) -> String {
    let (h, w, c) = (want.height, want.width, want.channels);
    let theirs = match *found {
        [_, hh, ww, cc] => Some((hh, ww, cc)),
        [_, hh, ww] => Some((hh, ww, 1)),
        _ => None,
    };
    let Some((hh, ww, cc)) = theirs else {
        return format!(
            "Save the samples as (K, {h}, {w}, {c}) images in HWC order, or flattened to \
             (K, {})",
            want.dim()
        );
    };
    let mut keys = Vec::new();
    if (hh, ww) != (h, w) {
        keys.push(format!(
            "data.resize = [{hh}, {ww}] (for a synthetic set: data.size = {hh})"
        ));
    }
    if cc != c {
        keys.push(match (cc, c) {
            (1, 3) => "data.grayscale = true".to_string(),
            (3, 1) => {
                "data.channels = 3 (synthetic) or RGB data without data.grayscale".to_string()
            }
            _ => format!("data with {cc} channel(s)"),
        });
    }
    format!(
        "The samples are {hh}x{ww}x{cc} images and the config's are {h}x{w}x{c}: resize the \
         samples to {h}x{w}x{c}, or score them against a config whose data are {hh}x{ww}x{cc} \
         ({})",
        keys.join(", ")
    )
}

fn load_folder(
    dir: &Path,
    shape: ImageShape,
    declared: Option<PixelConvention>,
) -> Result<ExternalSamples> {
    if let Some(p) = declared.filter(|&p| p != PixelConvention::Byte) {
        return Err(Error::config(
            "--pixels",
            format!(
                "is {} but {} is a folder of images, whose pixels are 8-bit (0-255); drop \
                 --pixels or pass --pixels 0-255",
                p.name(),
                dir.display()
            ),
        ));
    }
    let ds = crate::data::folder::load(dir, &Default::default())?;
    if ds.shape != shape {
        let s = ds.shape;
        return Err(Error::data(
            dir,
            format!(
                "holds {s} images (HxWxC) but the config's data set has {shape}. {} (gray \
                 PNGs for 1 channel, RGB for 3)",
                size_advice(&[ds.len(), s.height, s.width, s.channels], shape)
            ),
        ));
    }
    Ok(ExternalSamples {
        count: ds.len(),
        format: format!("png folder ({} images)", ds.len()),
        pixels: ds.images,
        convention: PixelConvention::Byte,
    })
}

/// Errors when values lie outside the convention's range by more than [`RANGE_SLACK`] of its
/// width, or (for 0-255) when every value lies in [-1, 1] and some are fractional: both mean
/// the file is in another convention.
fn check_range(
    path: &Path,
    data: &[f64],
    convention: PixelConvention,
    declared: bool,
) -> Result<()> {
    let (lo, hi) = convention.bounds();
    let slack = RANGE_SLACK * (hi - lo);
    let min = data.iter().copied().fold(f64::INFINITY, f64::min);
    let max = data.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let how = if declared {
        "declared"
    } else {
        "the default for this dtype"
    };
    let guess = if max > 2.0 {
        "0-255"
    } else if min >= 0.0 {
        "zero-to-one"
    } else {
        "minus-one-to-one"
    };
    if min < lo - slack || max > hi + slack {
        let fix = if guess == convention.name() {
            format!("more than {RANGE_SLACK} range width outside it; clip or rescale the samples")
        } else {
            format!("these look like {guess}: pass --pixels {guess}, or rescale the samples")
        };
        return Err(Error::data(
            path,
            format!(
                "values span [{min}, {max}] but the pixel convention is {} ({how}: [{lo}, {hi}]); \
                 {fix}",
                convention.name()
            ),
        ));
    }
    if convention == PixelConvention::Byte
        && min >= -1.0
        && max <= 1.0
        && data.iter().any(|v| v.fract() != 0.0)
    {
        return Err(Error::data(
            path,
            format!(
                "values span [{min}, {max}], fractional, but the pixel convention is 0-255 \
                 ({how}); these look like {guess}: pass --pixels {guess}"
            ),
        ));
    }
    Ok(())
}

/// What `fslens diagnose` is asked to do (the config's plan gives the problem and the engine).
#[derive(Clone, Debug)]
pub struct DiagnoseRequest {
    /// A .npy file or a folder of PNG/JPEG images.
    pub samples: PathBuf,
    /// The pixel convention; `None` takes the default of the file type.
    pub pixels: Option<PixelConvention>,
    /// The name the samples are listed under (file names `samples_<label>.npy`, ...).
    pub label: String,
    /// Output folder (staged, put in place when complete; see [`crate::output`]).
    pub out: Destination,
}

/// At least this many exact draws make the exact cloud (and the `exact` row).
pub const EXACT_DRAWS: usize = 2000;

/// Scores external samples against the exact posterior of `plan`'s measurement and writes the
/// output folder (see the module notes). Nothing is written when the samples are rejected.
pub fn diagnose(
    plan: &RunPlan,
    req: &DiagnoseRequest,
    observer: &mut dyn Observer,
) -> Result<(PathBuf, Summary)> {
    check_label(&req.label)?;
    let plan = plan.clone().exact_only();
    // Refuse the output folder before the work, not after it.
    let mut inputs = plan.input_files();
    inputs.push(req.samples.clone());
    let staging = OutputDir::create(&req.out.clone().inputs(inputs))?;
    let diagnosis = score_samples(&plan, req, observer)?;
    observer.stage("writing the output");
    let summary = super::outputs::write_diagnosis(staging.path(), &plan, &diagnosis)?;
    let path = staging.finish()?;
    Ok((path, summary))
}

/// The label names output files and picks the plot colour: letters, digits, '-', '_' or
/// '.', and no built-in sampler's name (whose files and colour it would take).
pub(crate) fn check_label(label: &str) -> Result<()> {
    if label.is_empty()
        || SamplerKind::parse(label).is_ok()
        || !label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(Error::config(
            "--label",
            format!(
                "{label:?} must be a non-empty name of letters, digits, '-', '_' or '.', and \
                 no built-in sampler's name ({}): it names output files and picks the plot \
                 colour",
                SamplerKind::spellings()
            ),
        ));
    }
    Ok(())
}

/// Loads the samples and scores them, and as many fresh exact draws, at t = 0 against the
/// exact posterior of `plan`'s measurement.
pub fn score_samples(
    plan: &RunPlan,
    req: &DiagnoseRequest,
    observer: &mut dyn Observer,
) -> Result<Diagnosis> {
    let started = Instant::now();
    let setup = super::setup::setup(plan, observer, None)?;
    let omega = crate::engine::logsumexp::softmax(&setup.log_likelihoods);
    let mut warnings = super::plan_report::posterior_warnings(plan, &omega);
    observer.stage("reading the samples");
    let samples = load_samples(&req.samples, setup.atoms.shape, req.pixels)
        .map_err(|e| e.for_file_key("--samples"))?;
    warnings.extend(convention_warning(&samples, req.pixels));
    for w in &warnings {
        observer.warning(w);
    }
    observer.stage("building the engine");
    let engine = crate::engine::create(
        plan.engine.backend,
        plan.engine.storage,
        plan.engine.devices,
        &setup.atoms,
    )?;
    let exact = setup.exact_posterior(plan, &omega);

    observer.stage("scoring the samples");
    // Nearest atoms argmin_i ‖x − a_i‖ (s = 1; v only shapes the unused prior means) with the
    // distances recomputed directly in float64 by `analyse`.
    let v = plan.schedule.noise(plan.settings.t_min).v;
    let mut analysis = exact.analyse(engine.as_ref(), &samples.pixels, Noise { s: 1.0, v })?;
    analysis.denoised = samples.pixels.clone();
    let k = samples.count;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(plan.config.seed ^ 0x6469_6167_6e6f_7365);
    let reference_picks = Exact::draw_atoms(&omega, k.max(EXACT_DRAWS), &mut rng);
    let (reference_cloud, reference_analysis) = exact.atoms_at_zero(&reference_picks);
    let exact_cloud = exact.exact_cloud_from(0.0, &reference_cloud, &reference_analysis, false);
    let external = exact.metrics(0.0, &samples.pixels, &analysis, &exact_cloud);
    let exact_picks = Exact::draw_atoms(&omega, k.max(EXACT_DRAWS), &mut rng);
    let (exact_pixels, exact_analysis) = exact.atoms_at_zero(&exact_picks);
    let exact_metrics = exact.metrics(0.0, &exact_pixels, &exact_analysis, &exact_cloud);
    let classes = |a: &crate::diagnostics::Analysis| {
        let nearest: Vec<usize> = a.nearest.iter().map(|n| n.index).collect();
        class_weights_of_samples(&setup.atoms, &nearest)
    };
    let clouds = vec![
        ScoredCloud {
            name: "exact".into(),
            classes: classes(&exact_analysis),
            pixels: exact_pixels,
            metrics: exact_metrics,
        },
        ScoredCloud {
            name: req.label.clone(),
            classes: classes(&analysis),
            pixels: samples.pixels,
            metrics: external,
        },
    ];
    let modes = modes_summary(&exact);
    let atom_scale = exact.atom_scale;
    let backend = engine.describe();
    let source = ExternalSource {
        path: req.samples.display().to_string(),
        format: samples.format.clone(),
        pixels: samples.convention.name().to_string(),
        label: req.label.clone(),
        note: "scored at t = 0 (s = 1, v = 0): nearest atom argmin_i ‖x − a_i‖, the \
               *_denoised fields (PSNR, SSIM, data fit) are those of the samples \
               themselves, spread_ratio = tr Cov / Σ_i ω_i ‖a_i − ā‖²; the exact row is \
               fresh draws i ~ Cat(ω); wall_seconds of the external samples is unknown \
               (null)"
            .to_string(),
        times_path: None,
        times: None,
    };
    Ok(Diagnosis {
        problem: ProblemOutcome::new(started, setup, backend, omega, modes, atom_scale),
        clouds,
        source,
        warnings,
    })
}

/// A warning when float samples read as [-1, 1] by default hold no negative value: most
/// likely [0, 1] data (a network's output after `(x + 1)/2`), which would all sit in the
/// upper half of the pixel range and be scored against the wrong images.
pub fn convention_warning(
    samples: &ExternalSamples,
    declared: Option<PixelConvention>,
) -> Option<String> {
    let default_minus_one =
        declared.is_none() && samples.convention == PixelConvention::MinusOneToOne;
    if !default_minus_one || samples.pixels.iter().any(|&p| p < 0.0) {
        return None;
    }
    Some(format!(
        "the samples have no negative value but are read as [-1, 1] (the default for float \
         .npy): if they are [0, 1] images, pass --pixels zero-to-one; if they really are \
         [-1, 1], pass --pixels minus-one-to-one to say so ({})",
        samples.format
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arrays::write_npy_f32;

    fn tmp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fslens-diag-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn labels_that_are_file_names_and_no_built_in_sampler_pass() {
        for ok in ["external", "my-dps", "ddpm_1000.v2"] {
            check_label(ok).unwrap();
        }
        for bad in ["", "exact", "fsr", "sigma-dps", "tmpd", "a b", "x/y"] {
            let e = check_label(bad).unwrap_err().to_string();
            assert!(e.starts_with("--label"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn conventions_map_their_ranges_onto_minus_one_to_one() {
        for c in [
            PixelConvention::MinusOneToOne,
            PixelConvention::ZeroToOne,
            PixelConvention::Byte,
        ] {
            let (lo, hi) = c.bounds();
            assert_eq!(c.to_pixel(lo), -1.0);
            assert_eq!(c.to_pixel(hi), 1.0);
            assert_eq!(c.name().parse::<PixelConvention>().unwrap(), c);
        }
        // 8-bit values land on the same pixels as the data loaders'.
        for k in [0u8, 1, 77, 128, 254, 255] {
            assert_eq!(
                PixelConvention::Byte.to_pixel(k as f64),
                crate::data::pixel_from_u8(k)
            );
        }
        assert!("percent".parse::<PixelConvention>().is_err());
    }

    #[test]
    fn npy_samples_load_in_every_layout_and_bad_ones_are_named() {
        let dir = tmp("load");
        let shape = ImageShape::new(2, 3, 1);
        let values: Vec<f32> = (0..12).map(|i| i as f32 / 11.0 * 2.0 - 1.0).collect();
        for dims in [vec![2, 6], vec![2, 2, 3], vec![2, 2, 3, 1]] {
            let p = dir.join("s.npy");
            write_npy_f32(&p, &dims, &values).unwrap();
            let s = load_samples(&p, shape, None).unwrap();
            assert_eq!(s.count, 2);
            assert_eq!(s.pixels, values);
            assert_eq!(s.convention, PixelConvention::MinusOneToOne);
        }
        // u8 defaults to 0-255.
        let p = dir.join("u.npy");
        let bytes: Vec<u8> = (0..12).map(|i| (i * 20) as u8).collect();
        crate::arrays::write_npy(&p, &[2, 6], &bytes).unwrap();
        let s = load_samples(&p, shape, None).unwrap();
        assert_eq!(s.convention, PixelConvention::Byte);
        assert_eq!(s.pixels[3], crate::data::pixel_from_u8(60));
        // [0, 1] declared as such.
        let p = dir.join("z.npy");
        let z: Vec<f32> = values.iter().map(|v| (v + 1.0) / 2.0).collect();
        write_npy_f32(&p, &[2, 6], &z).unwrap();
        let s = load_samples(&p, shape, Some(PixelConvention::ZeroToOne)).unwrap();
        for (a, b) in s.pixels.iter().zip(&values) {
            assert!((a - b).abs() < 1e-6);
        }
        // Wrong shape, NCHW, and 0-255 values declared [-1, 1]: errors naming the file.
        let p = dir.join("bad.npy");
        write_npy_f32(&p, &[3, 4], &values).unwrap();
        let e = load_samples(&p, shape, None).unwrap_err().to_string();
        assert!(e.contains("bad.npy") && e.contains("(K, 6)"), "{e}");
        let shape3 = ImageShape::new(2, 2, 3);
        let p = dir.join("nchw.npy");
        write_npy_f32(&p, &[1, 3, 2, 2], &values).unwrap();
        let e = load_samples(&p, shape3, None).unwrap_err().to_string();
        assert!(
            e.contains("nchw.npy") && e.contains("permute(0, 2, 3, 1)"),
            "{e}"
        );
        let p = dir.join("bytes.npy");
        let big: Vec<f32> = (0..12).map(|i| (i * 20) as f32).collect();
        write_npy_f32(&p, &[2, 6], &big).unwrap();
        let e = load_samples(&p, shape, Some(PixelConvention::MinusOneToOne))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bytes.npy") && e.contains("--pixels 0-255"),
            "{e}"
        );
        // [-1, 1] floats declared 0-255.
        let p = dir.join("s.npy");
        write_npy_f32(&p, &[2, 6], &values).unwrap();
        let e = load_samples(&p, shape, Some(PixelConvention::Byte))
            .unwrap_err()
            .to_string();
        assert!(e.contains("s.npy") && e.contains("minus-one-to-one"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
