//! The measurement problem before any sampler runs: the atoms, the truth, the operator, y and
//! the log-likelihood of every atom.

use std::path::Path;

use rand::{Rng, SeedableRng};

use super::{Observer, cache_keys, measured_y};
use crate::config::Sigma;
use crate::data::Dataset;
use crate::data::cache::{AtomCache, Lookup};
use crate::diagnostics::{ExactPosterior, Measured};
use crate::engine::{Backend, BiasId};
use crate::operators::{self, Operator};
use crate::plan::RunPlan;
use crate::samplers::Problem;
use crate::{Error, Result};

/// What the summary and the report say where the truth would be when y was given as data.
pub const NO_TRUTH: &str = "no ground truth: y was given as data";

/// The measurement problem before any sampler runs.
pub struct Setup {
    pub atoms: Dataset,
    /// The ground truth; none when y was given as data (`measurement.y`).
    pub truth: Option<Vec<f32>>,
    pub truth_label: Option<u32>,
    /// Where the truth came from, for the summary (`held-out image 3 of …` or a path).
    pub truth_source: String,
    /// Where y came from, for the summary: simulated from the truth, or the measured file.
    pub y_source: String,
    /// The offset b the likelihood removed from y (y − b), for the summary; none without one.
    pub offset: Option<String>,
    pub operator: Box<dyn Operator>,
    /// y − b (y itself without an offset), whitened to y_j/σ_j for per-entry σ_j.
    pub y: Vec<f32>,
    /// b_i = log p(y | a_i) for every atom, float64.
    pub log_likelihoods: Vec<f64>,
    /// The σ of the problem the samplers see: the configured σ, or 1 when per-entry σ_j were
    /// whitened away (`operator` and `y` then are A(x)_j/σ_j and y_j/σ_j, design §2).
    pub sigma: f64,
    /// How the noise was used, for summary.json.
    pub noise: String,
}

impl Setup {
    /// The sampling problem of this setup on `backend`, whose posterior bias (the
    /// log-likelihoods registered with it) is `posterior`.
    pub fn problem<'a>(
        &'a self,
        plan: &RunPlan,
        backend: &'a dyn Backend,
        posterior: BiasId,
    ) -> Problem<'a> {
        Problem {
            backend,
            atoms: &self.atoms.images,
            dim: self.atoms.dim(),
            log_likelihoods: &self.log_likelihoods,
            posterior,
            operator: self.operator.as_ref(),
            y: &self.y,
            sigma: self.sigma,
            schedule: plan.schedule,
        }
    }

    /// The exact posterior of this problem as the metrics see it (modes, ρ, closed forms),
    /// with ω = softmax(b) given.
    pub fn exact_posterior<'a>(&'a self, plan: &RunPlan, omega: &'a [f64]) -> ExactPosterior<'a> {
        ExactPosterior::new(
            &self.atoms,
            omega,
            Some(Measured {
                operator: self.operator.as_ref(),
                y: &self.y,
                sigma: self.sigma,
            }),
            self.truth.as_deref(),
            plan.schedule,
            plan.diagnostics,
        )
    }
}

/// Loads the data, picks the truth, builds the operator and draws y = A(x) + σ ε; with a
/// `cache`, the loaded data set and the measured atoms come from it when it holds them (and
/// are stored there when not): the results are bit for bit those without.
pub fn setup(
    plan: &RunPlan,
    observer: &mut dyn Observer,
    cache: Option<&AtomCache>,
) -> Result<Setup> {
    let cfg = &plan.config;
    let base_dir = plan.base_dir.as_path();
    observer.stage("loading data");
    let mut load = || {
        crate::data::spec::load_with_progress(&cfg.data, base_dir, &mut |done, total| {
            observer.loading(done, total)
        })
    };
    let (dataset, data_key) = match cache {
        None => (load()?, String::new()),
        Some(c) => {
            let key = cache_keys::dataset(&cfg.data, base_dir);
            let (ds, how) = c.dataset(&key, load)?;
            report_lookup(observer, c, "dataset", &key, &how);
            (ds, key)
        }
    };
    let truth = pick_truth(plan, dataset, base_dir)?;
    let TruthPick {
        atoms,
        truth,
        label: truth_label,
        source: truth_source,
    } = truth;
    if atoms.is_empty() {
        return Err(Error::config("data", "the atom set is empty"));
    }
    let operator = operators::parse_for(
        &cfg.measurement.operator,
        atoms.shape,
        base_dir,
        "measurement.operator",
    )?;
    // ΠGDM/TMPD with a nonlinear operator: refuse before measuring atoms or building engines.
    if let Some((kinds, key)) = plan.samplers.named() {
        for kind in kinds {
            kind.check_operator(operator.as_ref())
                .map_err(|e| match e {
                    Error::Config { problem, .. } => Error::config(key, problem),
                    other => other,
                })?;
        }
    }
    let per_entry = match plan.sigma() {
        Sigma::Scalar(_) => None,
        Sigma::File(file) => Some(operators::read_sigma(
            &base_dir.join(file),
            operator.as_ref(),
            "measurement.sigma",
        )?),
    };
    let sigma = |j: usize| match (plan.sigma(), &per_entry) {
        (_, Some(v)) => v[j],
        (Sigma::Scalar(s), None) => *s,
        (Sigma::File(_), None) => unreachable!("a sigma file was read above"),
    };
    let offset = cfg
        .measurement
        .offset
        .as_ref()
        .map(|b| measured_y::read_offset(b, base_dir, operator.as_ref()))
        .transpose()?;
    let (raw_y, y_source) = match (&cfg.measurement.y, &truth) {
        (Some(file), _) => (
            measured_y::read_y(file, base_dir, operator.as_ref())?,
            format!("measured: {}", base_dir.join(file).display()),
        ),
        (None, Some(x)) => (
            measure(plan, operator.as_ref(), x, &sigma, offset.as_deref()),
            "simulated: y = A(truth) + b + σ ε with the run's seed".to_string(),
        ),
        (None, None) => unreachable!("pick_truth gives a truth unless y is given"),
    };
    let mut y = measured_y::remove_offset(&raw_y, offset.as_deref());
    let offset = cfg
        .measurement
        .offset
        .as_ref()
        .map(|b| format!("{b}, removed: the likelihood sees y − b"));
    observer.stage(&format!("measuring {} atoms", atoms.len()));
    let m = operator.output_len();
    let measure_atoms = || Ok(operators::measure_atoms(operator.as_ref(), &atoms.images));
    let measured = match cache {
        None => measure_atoms()?,
        Some(c) => {
            let key = cache_keys::measured(&data_key, cfg, base_dir);
            let (measured, how) = c.matrix("measured", &key, atoms.len(), m, measure_atoms)?;
            report_lookup(observer, c, "measured", &key, &how);
            measured
        }
    };
    let (operator, noise_sigma, noise) = match per_entry {
        None => (
            operator,
            sigma(0),
            format!("σ = {} on every entry of y", sigma(0)),
        ),
        Some(v) => {
            let (lo, hi) = v
                .iter()
                .fold((f64::INFINITY, 0.0f64), |(l, h), &s| (l.min(s), h.max(s)));
            let noise = format!(
                "per-entry σ_j from {} (m = {}, {lo:e} … {hi:e}), whitened: y_j/σ_j and \
                 A(x)_j/σ_j with σ = 1 in every score, the exact posterior and the data fit",
                plan.sigma(),
                v.len()
            );
            operators::whiten_rows(&mut y, &v);
            let mut measured = measured;
            operators::whiten_rows(&mut measured, &v);
            let log_likelihoods = operators::log_likelihoods(&measured, &y, 1.0)?;
            let op: Box<dyn Operator> = Box::new(operators::Whitened::new(operator.into(), v)?);
            return Ok(Setup {
                atoms,
                truth,
                truth_label,
                truth_source,
                y_source,
                offset,
                operator: op,
                y,
                log_likelihoods,
                sigma: 1.0,
                noise,
            });
        }
    };
    let log_likelihoods = operators::log_likelihoods(&measured, &y, noise_sigma)?;
    Ok(Setup {
        atoms,
        truth,
        truth_label,
        truth_source,
        y_source,
        offset,
        operator,
        y,
        log_likelihoods,
        sigma: noise_sigma,
        noise,
    })
}

/// The atoms and the truth taken from (or beside) them.
struct TruthPick {
    atoms: Dataset,
    truth: Option<Vec<f32>>,
    label: Option<u32>,
    source: String,
}

/// The truth of `[truth]`: a file, an atom kept among the atoms, or a held-out image; none
/// (and every image an atom) when y was given as data.
fn pick_truth(plan: &RunPlan, dataset: Dataset, base_dir: &Path) -> Result<TruthPick> {
    let cfg = &plan.config;
    if cfg.measurement.y.is_some() {
        return Ok(TruthPick {
            atoms: dataset,
            truth: None,
            label: None,
            source: NO_TRUTH.to_string(),
        });
    }
    if let Some(file) = &cfg.truth.file {
        let path = if file.is_absolute() {
            file.clone()
        } else {
            base_dir.join(file)
        };
        let truth = crate::data::image_file::load(&path, dataset.shape)
            .map_err(|e| e.for_file_key("truth.file"))?;
        return Ok(TruthPick {
            atoms: dataset,
            truth: Some(truth),
            label: None,
            source: path.display().to_string(),
        });
    }
    let i = cfg.truth.index;
    if cfg.truth.in_atoms {
        if i >= dataset.len() {
            return Err(Error::config(
                "truth.index",
                format!("is {i} but the data set has {} images", dataset.len()),
            ));
        }
        return Ok(TruthPick {
            label: dataset.labels.as_ref().map(|l| l[i]),
            truth: Some(dataset.image(i).to_vec()),
            atoms: dataset,
            source: format!("atom {i} (kept among the atoms)"),
        });
    }
    if cfg.truth.held_out >= dataset.len() {
        return Err(Error::config(
            "truth.held_out",
            format!(
                "holds out {} of only {} images; hold out fewer",
                cfg.truth.held_out,
                dataset.len()
            ),
        ));
    }
    let (train, held) = crate::data::split::hold_out(&dataset, cfg.truth.held_out, cfg.seed)?;
    Ok(TruthPick {
        atoms: train,
        truth: Some(held.image(i).to_vec()),
        label: held.labels.as_ref().map(|l| l[i]),
        source: format!("held-out image {i} of {}", held.len()),
    })
}

/// y = A(truth) + b_j + σ_j ε_j in float64, with ε from the run's seed (σ_j = σ for a
/// scalar noise; b = 0 without an offset).
fn measure(
    plan: &RunPlan,
    operator: &dyn Operator,
    truth: &[f32],
    sigma: &dyn Fn(usize) -> f64,
    offset: Option<&[f64]>,
) -> Vec<f64> {
    let mut ax = vec![0.0f32; operator.output_len()];
    operator.forward(truth, &mut ax);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(plan.config.seed ^ 0x6d65_6173_7572_6521);
    ax.iter()
        .enumerate()
        .map(|(j, &a)| {
            let e: f64 = rng.sample(rand_distr::StandardNormal);
            let b = offset.map_or(0.0, |b| b[j]);
            a as f64 + b + sigma(j) * e
        })
        .collect()
}

fn report_lookup(
    observer: &mut dyn Observer,
    cache: &AtomCache,
    kind: &str,
    key: &str,
    how: &Lookup,
) {
    match how {
        Lookup::Hit => observer.stage(&format!("{kind} atoms from the cache")),
        Lookup::Miss => {}
        Lookup::Rebuilt(why) => observer.warning(&format!(
            "cache entry {} was not used ({why}); rebuilt it",
            cache.entry_path(kind, key).display()
        )),
        Lookup::NotStored(why) => observer.warning(&format!(
            "could not write cache entry {} ({why}); going on without storing to the cache (same results; later jobs load and measure again)",
            cache.entry_path(kind, key).display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RunConfig;
    use crate::plan::Overrides;

    /// A small synthetic run (200 shapes 16×16, 2×2 block average, m = 64) measured with
    /// `sigma` written into a scratch folder holding `files`.
    fn setup_with(sigma: &str, files: &[(&str, Vec<f64>)]) -> Result<Setup> {
        let dir = std::env::temp_dir().join(format!(
            "fslens-setup-{}-{}",
            std::process::id(),
            files.first().map_or("none", |f| f.0)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, v) in files {
            crate::arrays::write_npy(&dir.join(name), &[v.len()], v).unwrap();
        }
        let text = format!(
            "seed = 3\n[data]\nkind = \"synthetic\"\nsynthetic = \"shapes\"\ncount = 200\n\
             size = 16\n[measurement]\noperator = \"downsample:2\"\nsigma = {sigma}\n"
        );
        let cfg = RunConfig::from_toml(&text, Path::new("test.toml")).unwrap();
        let plan = RunPlan::new(cfg, &dir, Overrides::default())?;
        let out = setup(&plan, &mut crate::experiment::Silent, None);
        std::fs::remove_dir_all(&dir).unwrap();
        out
    }

    #[test]
    fn per_entry_sigma_gives_the_float64_diagonal_likelihood_and_gradient() {
        let sigma: Vec<f64> = (0..64).map(|j| 0.05 + 0.02 * j as f64).collect();
        let s = setup_with("\"sigma.npy\"", &[("sigma.npy", sigma.clone())]).unwrap();
        assert_eq!(s.sigma, 1.0);
        assert!(s.noise.contains("whitened"), "{}", s.noise);
        let raw_op = crate::operators::Downsample::new(s.atoms.shape, 2).unwrap();
        // y on its own scale (the setup keeps y_j/σ_j).
        let y: Vec<f64> = s.y.iter().zip(&sigma).map(|(&v, s)| v as f64 * s).collect();
        let naive = |x: &[f32]| -> Vec<f64> {
            let mut ax = vec![0.0f32; 64];
            raw_op.forward(x, &mut ax);
            ax.iter().map(|&v| v as f64).collect()
        };
        // b_i = −Σ_j (y_j − A(a_i)_j)²/(2σ_j²), and ω = softmax(b), in float64.
        let b: Vec<f64> = (0..s.atoms.len())
            .map(|i| {
                let ax = naive(s.atoms.image(i));
                -(0..64)
                    .map(|j| (y[j] - ax[j]).powi(2) / (2.0 * sigma[j] * sigma[j]))
                    .sum::<f64>()
            })
            .collect();
        for (got, want) in s.log_likelihoods.iter().zip(&b) {
            assert!(
                (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                "{got} vs {want}"
            );
        }
        let got_w = crate::engine::logsumexp::softmax(&s.log_likelihoods);
        let want_w = crate::engine::logsumexp::softmax(&b);
        for (g, w) in got_w.iter().zip(&want_w) {
            assert!((g - w).abs() < 1e-6, "{g} vs {w}");
        }
        // The likelihood gradient every approximate sampler forms at a point x with σ = 1:
        // J(x)ᵀ (y − A(x)) of the whitened problem is Aᵀ Σ⁻¹ (y − A x).
        let x = s.atoms.image(7);
        let mut ax = vec![0.0f32; 64];
        s.operator.forward(x, &mut ax);
        let r: Vec<f32> = s.y.iter().zip(&ax).map(|(a, b)| a - b).collect();
        let mut got = vec![0.0f32; x.len()];
        s.operator.adjoint(x, &r, &mut got);
        let raw_ax = naive(x);
        let weighted: Vec<f32> = (0..64)
            .map(|j| ((y[j] - raw_ax[j]) / (sigma[j] * sigma[j])) as f32)
            .collect();
        let mut want = vec![0.0f32; x.len()];
        raw_op.adjoint(x, &weighted, &mut want);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-4 * w.abs().max(1.0), "{g} vs {w}");
        }
    }

    #[test]
    fn a_scalar_sigma_is_unchanged_and_bad_sigma_files_name_the_key() {
        let s = setup_with("0.1", &[]).unwrap();
        assert_eq!(s.sigma, 0.1);
        assert!(!s.noise.contains("whitened"));
        for (name, v, says) in [
            ("short.npy", vec![0.1; 63], "m = 64"),
            (
                "negative.npy",
                (0..64).map(|j| 0.1 - 0.01 * j as f64).collect(),
                "entry 10",
            ),
        ] {
            let e = setup_with(&format!("\"{name}\""), &[(name, v)])
                .err()
                .expect("refused");
            assert_eq!(e.key(), Some("measurement.sigma"), "{e}");
            assert!(e.to_string().contains(says), "{e}");
        }
    }
}
