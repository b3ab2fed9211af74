//! A run plan: a run config checked once, with the command line's engine choices applied.
//!
//! The raw [`RunConfig`] is what serde read (names already typed: backend, storage, samplers,
//! integrator, heatmap direction). [`RunPlan::new`] checks every range and every combination
//! once, naming the config key of each problem, and derives what the layers below take: the
//! sampler [`Settings`] and [`SamplerOptions`], the schedule, the diagnostics options and the
//! engine choice. `run`, `compare`, `diagnose`, the sweep jobs and the Python package all
//! start from a plan; nothing below re-validates it. The plan also refuses a run whose arrays
//! cannot fit in this machine's memory ([`footprint`]), before anything is loaded.

pub mod footprint;

use std::path::{Path, PathBuf};

use crate::config::{DEFAULT_CHECKPOINTS, RunConfig};
use crate::diffusion::Schedule;
use crate::diffusion::integrate::{Integrator, TimeGrid};
use crate::engine::{BackendKind, Devices, PruneChoice, PruneOptions, StorageChoice};
use crate::samplers::solve::CgOptions;
use crate::samplers::{SamplerKind, SamplerOptions, Settings};
use crate::{Error, Result};

/// The engine a run asks for: the backend, the atom storage and the GPU devices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineChoice {
    pub backend: BackendKind,
    pub storage: StorageChoice,
    pub devices: Devices,
}

/// Command-line choices that replace the config's (`--backend`, `--storage`, `--devices`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    pub backend: Option<BackendKind>,
    pub storage: Option<StorageChoice>,
    pub devices: Option<Devices>,
    /// `--prune`.
    pub prune: Option<PruneChoice>,
}

/// Which samplers a run runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SamplerSelection {
    /// The config's `sampling.samplers`, in that order; one that cannot use the operator is
    /// an error before any work.
    Listed(Vec<SamplerKind>),
    /// Every sampler that applies to the operator (`fslens compare`); the others are skipped
    /// with the reason.
    EveryApplicable,
    /// Samplers chosen on the command line (`fslens compare --samplers`), in that order; one
    /// that cannot use the operator is an error naming `key` before any work.
    Chosen {
        kinds: Vec<SamplerKind>,
        key: String,
    },
}

impl SamplerSelection {
    /// The samplers named explicitly and the key that named them (`sampling.samplers` or a
    /// flag); `None` for [`SamplerSelection::EveryApplicable`].
    pub fn named(&self) -> Option<(&[SamplerKind], &str)> {
        match self {
            SamplerSelection::Listed(kinds) => Some((kinds, "sampling.samplers")),
            SamplerSelection::Chosen { kinds, key } => Some((kinds, key)),
            SamplerSelection::EveryApplicable => None,
        }
    }

    /// True for a selection made by `fslens compare` (every applicable sampler, or
    /// `--samplers`).
    pub fn is_compare(&self) -> bool {
        !matches!(self, SamplerSelection::Listed(_))
    }
}

/// A list of samplers must name at least one and none twice; errors name `key`.
fn check_sampler_list(kinds: &[SamplerKind], key: &str) -> Result<()> {
    use crate::choices::Choice;
    if kinds.is_empty() {
        return Err(Error::config(
            key,
            "list at least one sampler, e.g. [\"exact\", \"fsr\"]",
        ));
    }
    for (i, kind) in kinds.iter().enumerate() {
        if kinds[..i].contains(kind) {
            return Err(Error::config(
                key,
                format!(
                    "lists {:?} twice; name each sampler once (every sampler of a run uses the \
                     same y, seed and initial noise, so a second run would repeat the first)",
                    kind.name()
                ),
            ));
        }
    }
    Ok(())
}

/// A checked run: the config as it will be recorded (config.toml), the folder its relative
/// paths start from, and everything derived from it.
#[derive(Clone, Debug)]
pub struct RunPlan {
    /// The config with the overrides applied.
    pub config: RunConfig,
    /// The folder relative paths in the config start from.
    pub base_dir: PathBuf,
    /// The config file, when the plan was read from one.
    pub source: Option<PathBuf>,
    pub samplers: SamplerSelection,
    pub engine: EngineChoice,
    /// Certified pruning (config `prune`, `prune_epsilon`, `prune_clusters`), when on.
    pub prune: Option<PruneOptions>,
    pub settings: Settings,
    pub options: SamplerOptions,
    pub schedule: Schedule,
    pub diagnostics: crate::diagnostics::Options,
}

impl RunPlan {
    /// Checks `config` (ranges, combinations) with `overrides` applied; relative paths in it
    /// start from `base_dir`.
    pub fn new(mut config: RunConfig, base_dir: &Path, overrides: Overrides) -> Result<Self> {
        if let Some(backend) = overrides.backend {
            config.backend = backend;
        }
        if let Some(storage) = overrides.storage {
            config.storage = storage;
        }
        if let Some(devices) = overrides.devices {
            config.devices = devices;
        }
        config.devices.check_backend(config.backend)?;
        if let Some(prune) = overrides.prune {
            config.prune = prune;
        }
        let prune = prune_options(&config)?;
        if let crate::config::Sigma::Scalar(sigma) = config.measurement.sigma {
            crate::operators::check_sigma(sigma, "measurement.sigma")?;
        }
        let s = &config.sampling;
        check_sampler_list(&s.samplers, "sampling.samplers")?;
        let options = SamplerOptions {
            zeta: s.zeta,
            cg: CgOptions {
                tolerance: s.cg_tolerance,
                max_iterations: s.cg_max_iterations,
            },
            diffpir_lambda: s.diffpir_lambda,
            diffpir_zeta: s.diffpir_zeta,
            daps_langevin_steps: s.daps_langevin_steps,
            daps_step: s.daps_step,
        };
        options.validate(&|k| format!("sampling.{k}"))?;
        let schedule = Schedule::new(
            s.beta_min,
            s.beta_max,
            ["sampling.beta_min", "sampling.beta_max"],
        )?;
        let integrator = Integrator::new(s.integrator, s.eta)?;
        let checkpoints = s.checkpoints.clone().unwrap_or_else(|| {
            TimeGrid {
                t_max: 1.0,
                t_min: s.t_min,
                steps: s.steps.max(1),
            }
            .log_spaced_checkpoints(DEFAULT_CHECKPOINTS)
        });
        let settings = Settings {
            particles: s.particles,
            steps: s.steps,
            t_min: s.t_min,
            seed: config.seed,
            checkpoints,
            integrator,
            dps_update: s.dps_update,
        };
        settings.validate()?;
        let g = &config.diagnostics;
        if !(g.hallucination_threshold > 0.0 && g.hallucination_threshold < 1.0) {
            return Err(Error::config(
                "diagnostics.hallucination_threshold",
                format!("must lie in (0, 1), got {}", g.hallucination_threshold),
            ));
        }
        if g.clusters == 0 {
            return Err(Error::config(
                "diagnostics.clusters",
                "must be at least 1 (default 8)",
            ));
        }
        let t = &config.truth;
        if config.held_out() > 0 && t.index >= t.held_out {
            return Err(Error::config(
                "truth.index",
                format!(
                    "is {} but only {} image(s) are held out; raise truth.held_out",
                    t.index, t.held_out
                ),
            ));
        }
        let plan = RunPlan {
            samplers: SamplerSelection::Listed(s.samplers.clone()),
            engine: EngineChoice {
                backend: config.backend,
                storage: config.storage,
                devices: config.devices,
            },
            prune,
            settings,
            options,
            schedule,
            diagnostics: crate::diagnostics::Options {
                hallucination_threshold: g.hallucination_threshold,
                clusters: g.clusters,
                seed: config.seed,
            },
            base_dir: base_dir.to_path_buf(),
            source: None,
            config,
        };
        footprint::check_memory(&plan)?;
        Ok(plan)
    }

    /// The plan of a config file: relative paths start from its folder.
    pub fn load(path: &Path, overrides: Overrides) -> Result<Self> {
        let config = RunConfig::load(path)?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut plan = Self::new(config, &base, overrides)?;
        plan.source = Some(path.to_path_buf());
        Ok(plan)
    }

    /// The embedded demo (`fslens demo`).
    pub fn demo(overrides: Overrides) -> Result<Self> {
        Self::new(RunConfig::demo(), Path::new("."), overrides)
    }

    /// This plan with every sampler that applies to the operator (`fslens compare`).
    pub fn every_applicable_sampler(mut self) -> Self {
        self.samplers = SamplerSelection::EveryApplicable;
        self
    }

    /// This plan with the samplers `kinds` in place of the config's (`fslens compare
    /// --samplers`, `fslens plan --samplers`), checked as the config's list is: not empty, no
    /// sampler twice (errors name `key`). Each must apply to the operator.
    pub fn with_samplers(mut self, kinds: Vec<SamplerKind>, key: &str) -> Result<Self> {
        check_sampler_list(&kinds, key)?;
        self.config.sampling.samplers = kinds.clone();
        self.samplers = SamplerSelection::Chosen {
            kinds,
            key: key.to_string(),
        };
        Ok(self)
    }

    /// This plan running the exact sampler alone (`fslens diagnose` scores samples made
    /// elsewhere against it; the config's other samplers are neither run nor checked).
    pub fn exact_only(mut self) -> Self {
        self.samplers = SamplerSelection::Listed(vec![SamplerKind::Exact]);
        self.config.sampling.samplers = vec![SamplerKind::Exact];
        self
    }

    /// The measurement noise as configured: a number or a file of per-entry σ_j (the setup
    /// reads and checks the file once the operator's m is known).
    pub fn sigma(&self) -> &crate::config::Sigma {
        &self.config.measurement.sigma
    }

    /// The files the run reads (that exist): the config file, the data path and labels, the
    /// truth file, the measurement's y, σ and offset files, and the files its operator spec names. An output folder holding one of them
    /// is not replaced without `--force`.
    pub fn input_files(&self) -> Vec<PathBuf> {
        let c = &self.config;
        let at = |p: &Path| self.base_dir.join(p);
        let mut files: Vec<PathBuf> = self.source.iter().cloned().collect();
        files.extend(c.data.path.as_deref().map(at));
        files.extend(c.data.labels.as_deref().map(at));
        files.extend(c.truth.file.as_deref().map(at));
        files.extend(c.measurement.y.as_deref().map(at));
        if let crate::config::Sigma::File(p) = &c.measurement.sigma {
            files.push(at(p));
        }
        files.extend(c.measurement.offset.as_ref().and_then(|o| match o {
            crate::config::Offset::File(p) => Some(at(p)),
            crate::config::Offset::Scalar(_) => None,
        }));
        files.extend(crate::operators::files_named(
            &c.measurement.operator,
            &self.base_dir,
        ));
        files.retain(|p| p.exists());
        files
    }
}

/// The pruning options of `config` (None when `prune` is off), checked: `prune_epsilon` in
/// (0, 0.01], `prune_clusters` ≥ 1, and the backend not `gpu` (pruning is built for the CPU
/// backend only; with `auto` it selects the CPU).
fn prune_options(config: &RunConfig) -> Result<Option<PruneOptions>> {
    if config.prune == PruneChoice::Off {
        return Ok(None);
    }
    if config.backend == BackendKind::Gpu {
        return Err(Error::config(
            "prune",
            "certified pruning is built for the CPU backend only (not built for the GPU); \
             set backend = \"cpu\" (or \"auto\", which then picks the CPU), or prune = \"off\"",
        ));
    }
    let epsilon = config
        .prune_epsilon
        .unwrap_or(crate::engine::DEFAULT_PRUNE_EPSILON);
    if !(epsilon > 0.0 && epsilon <= 0.01) {
        return Err(Error::config(
            "prune_epsilon",
            format!("is {epsilon}; must lie in (0, 0.01] (default 1e-7)"),
        ));
    }
    if config.prune_clusters == Some(0) {
        return Err(Error::config(
            "prune_clusters",
            "is 0; must be at least 1 (default ⌈√N⌉)",
        ));
    }
    Ok(Some(PruneOptions {
        epsilon,
        clusters: config.prune_clusters,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Sigma;

    fn demo_with(edit: impl FnOnce(&mut RunConfig)) -> Result<RunPlan> {
        let mut cfg = RunConfig::demo();
        edit(&mut cfg);
        RunPlan::new(cfg, Path::new("."), Overrides::default())
    }

    #[test]
    fn each_range_error_names_its_key() {
        type Edit = Box<dyn FnOnce(&mut RunConfig)>;
        let cases: Vec<(&str, Edit)> = vec![
            (
                "measurement.sigma",
                Box::new(|c| c.measurement.sigma = Sigma::Scalar(0.0)),
            ),
            (
                "sampling.samplers",
                Box::new(|c| c.sampling.samplers.clear()),
            ),
            ("sampling.zeta", Box::new(|c| c.sampling.zeta = -1.0)),
            (
                "sampling.cg_tolerance",
                Box::new(|c| c.sampling.cg_tolerance = 2.0),
            ),
            (
                "sampling.cg_max_iterations",
                Box::new(|c| c.sampling.cg_max_iterations = 0),
            ),
            ("sampling.beta_min", Box::new(|c| c.sampling.beta_min = 0.0)),
            (
                "sampling.beta_max",
                Box::new(|c| c.sampling.beta_max = 0.001),
            ),
            ("sampling.eta", Box::new(|c| c.sampling.eta = 0.5)),
            ("sampling.particles", Box::new(|c| c.sampling.particles = 0)),
            (
                "sampling.steps",
                Box::new(|c| c.sampling.steps = crate::samplers::MAX_STEPS + 1),
            ),
            ("sampling.t_min", Box::new(|c| c.sampling.t_min = 1.5)),
            (
                "diagnostics.hallucination_threshold",
                Box::new(|c| c.diagnostics.hallucination_threshold = 1.0),
            ),
            (
                "diagnostics.clusters",
                Box::new(|c| c.diagnostics.clusters = 0),
            ),
            ("truth.index", Box::new(|c| c.truth.index = 5)),
            // A sampler twice; a σ whose square float32 cannot hold; more DDPM steps than levels.
            (
                "sampling.samplers",
                Box::new(|c| c.sampling.samplers.push(SamplerKind::Fsr)),
            ),
            (
                "measurement.sigma",
                Box::new(|c| c.measurement.sigma = Sigma::Scalar(1e-20)),
            ),
            (
                "sampling.steps",
                Box::new(|c| {
                    c.sampling.integrator = crate::diffusion::integrate::IntegratorKind::Ddpm;
                    c.sampling.steps = 1001;
                }),
            ),
        ];
        for (key, edit) in cases {
            let e = demo_with(edit).unwrap_err().to_string();
            assert!(e.starts_with(&format!("{key}: ")), "{key}: {e}");
        }
    }

    #[test]
    fn limits_are_where_float32_and_the_discrete_schedule_end() {
        // σ = 1.1e-19 still has a normal float32 square; 1e-19 does not.
        assert!(demo_with(|c| c.measurement.sigma = Sigma::Scalar(1.1e-19)).is_ok());
        let e = demo_with(|c| c.measurement.sigma = Sigma::Scalar(1e-19)).unwrap_err();
        assert!(e.to_string().contains("float32"), "{e}");
        assert!(demo_with(|c| c.measurement.sigma = Sigma::Scalar(1e20)).is_err());
        // 1000 steps (one per level) walk every level; 1001 are refused, and so is 1 (a single
        // evaluation at level 0 from pure noise).
        for (kind, steps, ok) in [
            (
                crate::diffusion::integrate::IntegratorKind::Ddpm,
                1000,
                true,
            ),
            (
                crate::diffusion::integrate::IntegratorKind::Ddim,
                1000,
                true,
            ),
            (
                crate::diffusion::integrate::IntegratorKind::Ddim,
                1001,
                false,
            ),
            (crate::diffusion::integrate::IntegratorKind::Ddpm, 1, false),
            (crate::diffusion::integrate::IntegratorKind::Ddpm, 2, true),
            (
                crate::diffusion::integrate::IntegratorKind::EulerMaruyama,
                5000,
                true,
            ),
        ] {
            let plan = demo_with(|c| {
                c.sampling.integrator = kind;
                c.sampling.steps = steps;
            });
            assert_eq!(plan.is_ok(), ok, "{kind:?} {steps}");
        }
    }

    #[test]
    fn chosen_samplers_replace_the_config_and_name_their_flag() {
        let plan = RunPlan::demo(Overrides::default()).unwrap();
        let chosen = plan
            .clone()
            .with_samplers(vec![SamplerKind::Exact, SamplerKind::Tmpd], "--samplers")
            .unwrap();
        assert_eq!(
            chosen.samplers.named(),
            Some((&[SamplerKind::Exact, SamplerKind::Tmpd][..], "--samplers"))
        );
        assert!(chosen.samplers.is_compare());
        assert_eq!(
            chosen.config.sampling.samplers,
            vec![SamplerKind::Exact, SamplerKind::Tmpd]
        );
        let twice = plan
            .clone()
            .with_samplers(vec![SamplerKind::Fsr, SamplerKind::Fsr], "--samplers")
            .unwrap_err()
            .to_string();
        assert!(
            twice.starts_with("--samplers: ") && twice.contains("\"fsr\" twice"),
            "{twice}"
        );
        assert!(plan.with_samplers(Vec::new(), "--samplers").is_err());
    }

    #[test]
    fn devices_are_recorded_and_need_the_gpu_backend() {
        let two: Devices = "0,0".parse().unwrap();
        let plan = RunPlan::demo(Overrides {
            backend: Some(BackendKind::Gpu),
            devices: Some(two),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(plan.engine.devices, two);
        assert!(plan.config.to_toml().contains("devices = \"0,0\""));
        // The default is not written: configs without the key stay as they were.
        let plain = RunPlan::demo(Overrides::default()).unwrap();
        assert!(!plain.config.to_toml().contains("devices"));
        let err = RunPlan::demo(Overrides {
            backend: Some(BackendKind::Cpu),
            devices: Some(two),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(err.key(), Some("devices"), "{err}");
    }

    #[test]
    fn overrides_replace_the_config_and_are_recorded() {
        let plan = RunPlan::demo(Overrides {
            backend: Some(BackendKind::Cpu),
            storage: Some(StorageChoice::Fixed(crate::engine::gpu::Storage::F16)),
            devices: None,
            prune: Some(PruneChoice::On),
        })
        .unwrap();
        assert_eq!(plan.prune, Some(PruneOptions::default()));
        assert!(plan.config.to_toml().contains("prune = \"on\""));
        let e = RunPlan::demo(Overrides {
            backend: Some(BackendKind::Gpu),
            prune: Some(PruneChoice::On),
            ..Default::default()
        })
        .err()
        .expect("prune with the GPU is refused")
        .to_string();
        assert!(e.contains("prune"), "{e}");
        assert_eq!(plan.engine.backend, BackendKind::Cpu);
        assert_eq!(plan.config.backend, BackendKind::Cpu);
        assert!(plan.config.to_toml().contains("storage = \"f16\""));
        let plain = RunPlan::demo(Overrides::default()).unwrap();
        assert_eq!(plain.engine.backend, RunConfig::demo().backend);
        assert_eq!(plain.settings.particles, plain.config.sampling.particles);
        assert_eq!(
            plain.samplers,
            SamplerSelection::Listed(plain.config.sampling.samplers.clone())
        );
    }
}
