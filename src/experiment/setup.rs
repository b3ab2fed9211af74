//! The measurement problem before any sampler runs: the atoms, the truth, the operator, y and
//! the log-likelihood of every atom.

use std::path::Path;

use rand::{Rng, SeedableRng};

use super::{Observer, cache_keys};
use crate::data::Dataset;
use crate::data::cache::{AtomCache, Lookup};
use crate::diagnostics::{ExactPosterior, Measured};
use crate::engine::{Backend, BiasId};
use crate::operators::{self, Operator};
use crate::plan::RunPlan;
use crate::samplers::Problem;
use crate::{Error, Result};

/// The measurement problem before any sampler runs.
pub struct Setup {
    pub atoms: Dataset,
    pub truth: Vec<f32>,
    pub truth_label: Option<u32>,
    /// Where the truth came from, for the summary (`held-out image 3 of …` or a path).
    pub truth_source: String,
    pub operator: Box<dyn Operator>,
    pub y: Vec<f32>,
    /// b_i = log p(y | a_i) for every atom, float64.
    pub log_likelihoods: Vec<f64>,
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
            sigma: plan.sigma(),
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
                sigma: plan.sigma(),
            }),
            Some(&self.truth),
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
    let load = || crate::data::spec::load(&cfg.data, base_dir);
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
    let y = measure(plan, operator.as_ref(), &truth);
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
    let log_likelihoods = operators::log_likelihoods(&measured, &y, plan.sigma())?;
    Ok(Setup {
        atoms,
        truth,
        truth_label,
        truth_source,
        operator,
        y,
        log_likelihoods,
    })
}

/// The atoms and the truth taken from (or beside) them.
struct TruthPick {
    atoms: Dataset,
    truth: Vec<f32>,
    label: Option<u32>,
    source: String,
}

/// The truth of `[truth]`: a file, an atom kept among the atoms, or a held-out image.
fn pick_truth(plan: &RunPlan, dataset: Dataset, base_dir: &Path) -> Result<TruthPick> {
    let cfg = &plan.config;
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
            truth,
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
            truth: dataset.image(i).to_vec(),
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
        truth: held.image(i).to_vec(),
        label: held.labels.as_ref().map(|l| l[i]),
        source: format!("held-out image {i} of {}", held.len()),
    })
}

/// y = A(truth) + σ ε, with ε from the run's seed.
fn measure(plan: &RunPlan, operator: &dyn Operator, truth: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0f32; operator.output_len()];
    operator.forward(truth, &mut y);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(plan.config.seed ^ 0x6d65_6173_7572_6521);
    for yi in y.iter_mut() {
        let e: f64 = rng.sample(rand_distr::StandardNormal);
        *yi = (*yi as f64 + plan.sigma() * e) as f32;
    }
    y
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
