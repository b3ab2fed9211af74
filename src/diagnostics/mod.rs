//! How a sampler's particle cloud differs from the exact posterior, in numbers (design §6).
//!
//! [`ExactPosterior`] holds what every comparison needs (the atoms, ω, the modes, the
//! measurement and the truth); [`ExactPosterior::score`] turns one cloud at one time t into a
//! [`CheckpointMetrics`], given one engine pass over that cloud ([`ExactPosterior::analyse`]: its Tweedie
//! means m(x_t) under the prior and each particle's nearest atom) and the exact posterior's
//! [`ExactCloudAt`] the same t. The list of per-checkpoint records of a run is its
//! early-stopping curve: mode weights, hallucination and off-support use the x_t assignment,
//! PSNR/SSIM/data fit use m(x_t) (and data fit also x_t/s). This module computes numbers
//! only; the experiment writes them.

pub mod convergence;
pub mod image_quality;
pub mod modes;
pub mod projection;

use rand::SeedableRng;
use serde::Serialize;

use crate::Result;
use crate::data::ImageShape;
use crate::diffusion::Schedule;
use crate::engine::direct_dist2;
use crate::engine::{Backend, Neighbor, Noise, WeightSet};
use crate::operators::Operator;
use crate::samplers::exact::Exact;
pub use modes::{ModeSource, Modes};

/// Knobs of the diagnostics (config `[diagnostics]`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Options {
    /// Modes whose exact mass is below this are "ruled out" (prior-mode hallucination).
    pub hallucination_threshold: f64,
    /// k of the k-means modes when the data set has no labels.
    pub clusters: usize,
    /// Seed of k-means and of exact draws made for a time the exact run did not record.
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            hallucination_threshold: 1e-3,
            clusters: 8,
            seed: 0,
        }
    }
}

/// Quantile of the exact cloud's nearest-atom distances that bounds "on support".
pub const OFF_SUPPORT_QUANTILE: f64 = 0.99;
/// The margin beyond that quantile, in units of the atom scale ρ (see [`atom_scale`]).
pub const OFF_SUPPORT_MARGIN: f64 = 0.5;
/// The time whose noise variance the nearest-atom pass of clean samples (t = 0) uses; any
/// v > 0 gives the same nearest atoms.
pub const CLEAN_ANALYSIS_TIME: f64 = 1e-3;
/// At most this many atoms are queried for the atom scale ρ.
pub const ATOM_SCALE_SAMPLE: usize = 1000;

/// Quantile of the exact cloud's data fits ‖y − A(x/s)‖²/(mσ²) below which a particle "fits
/// y" (likelihood-mode hallucination).
pub const DATA_FIT_QUANTILE: f64 = 0.99;

/// The likelihood-mode hallucination rule in words, for metrics.json and the README.
pub const LIKELIHOOD_HALLUCINATION_RULE: &str = "a particle x at time t is a likelihood-mode \
    hallucination when it is off support (off_support_rule) and fits y: its data fit \
    ‖y − A(x/s(t))‖²/(m σ²) is at most the 99th percentile (nearest rank) of the same data fit \
    over exact posterior particles at t";

/// The off-support rule in words, for metrics.json and the README.
pub const OFF_SUPPORT_RULE: &str = "a particle x at time t is off support when \
    ‖x/s(t) − a_nearest‖ > q99(t) + 0.5·ρ, where a_nearest = argmin_i ‖x − s a_i‖, q99(t) is the \
    99th percentile (nearest rank) of the same distance over exact posterior particles at t, \
    and ρ (atom_scale) is the median distance from an atom to its nearest other atom \
    (a seeded sample of at most 1000 atoms against all atoms, float64)";

/// The exact posterior of one measurement, with what the metrics compare against.
pub struct ExactPosterior<'a> {
    /// N × D.
    pub atoms: &'a [f32],
    pub shape: ImageShape,
    /// ω = softmax(b), the exact posterior at t = 0.
    pub omega: &'a [f64],
    pub modes: Modes,
    /// Σ_{i ∈ m} ω_i per mode.
    pub exact_mode_weights: Vec<f64>,
    /// Σ_i ω_i ‖a_i − ā‖², ā = Σ_i ω_i a_i (float64).
    pub atom_spread: f64,
    /// ρ: the median distance from an atom to its nearest other atom ([`atom_scale`]); the
    /// off-support margin is [`OFF_SUPPORT_MARGIN`]·ρ.
    pub atom_scale: f64,
    /// The measurement, when known: data fits need it (NaN without).
    pub measurement: Option<Measured<'a>>,
    /// The truth, when known: PSNR and SSIM need it (NaN, null in JSON, without).
    pub truth: Option<&'a [f32]>,
    pub schedule: Schedule,
    pub options: Options,
}

/// A measurement y = A(x) + N(0, σ² I), for the data fit ‖y − A(x)‖²/(m σ²).
#[derive(Clone, Copy)]
pub struct Measured<'a> {
    pub operator: &'a dyn Operator,
    pub y: &'a [f32],
    pub sigma: f64,
}

/// One engine pass over a cloud: Tweedie means under the prior and nearest atoms.
#[derive(Clone, Debug)]
pub struct Analysis {
    /// K × D, m(x_k) = Σ_i w_i(x_k) a_i with the prior weights.
    pub denoised: Vec<f32>,
    /// argmin_i ‖x_k − s a_i‖² per particle.
    pub nearest: Vec<Neighbor>,
}

/// What the exact posterior's own particles look like at one time t.
#[derive(Clone, Debug)]
pub struct ExactCloudAt {
    pub t: f64,
    /// q99(t): the 99th percentile (nearest rank) of the exact particles' ‖x/s − a_nearest‖.
    pub exact_distance_q99: f64,
    /// The off-support threshold q99(t) + [`OFF_SUPPORT_MARGIN`]·ρ on ‖x/s − a_nearest‖.
    pub off_support_distance: f64,
    /// The 99th percentile (nearest rank) of the exact particles' data fits
    /// ‖y − A(x/s)‖²/(mσ²): a particle within it "fits y" (NaN without a measurement).
    pub data_fit_q99: f64,
    /// Mode weights of the exact particles assigned by nearest atom at this t.
    pub cloud_mode_weights: Vec<f64>,
    /// Whether the exact particles came from the exact run (else drawn here).
    pub from_exact_run: bool,
}

/// Mean and standard deviation (N − 1; 0 for one value) over particles.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct MeanStd {
    pub mean: f64,
    pub std: f64,
}

impl MeanStd {
    pub fn of(values: &[f64]) -> MeanStd {
        let n = values.len();
        if n == 0 {
            return MeanStd {
                mean: f64::NAN,
                std: f64::NAN,
            };
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let var = if n > 1 {
            values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64
        } else {
            0.0
        };
        MeanStd {
            mean,
            std: var.sqrt(),
        }
    }
}

/// The metrics of one cloud at one time t, as if the run had stopped there.
/// In JSON an infinite PSNR (a sample equal to the truth) is written as null.
#[derive(Clone, Debug, Serialize)]
pub struct CheckpointMetrics {
    pub t: f64,
    /// Fraction of particles per mode (nearest atom at this t → its mode).
    pub mode_weights: Vec<f64>,
    /// ½ Σ_m |mode_weights − exact mode weights (Σ_{i∈m} ω_i)|.
    pub mode_tv: f64,
    /// ½ Σ_m |mode_weights − the exact particles' mode weights at this t|: at large t the
    /// nearest atom of even an exact draw is often not its own, and this compares like with
    /// like.
    pub mode_tv_to_exact_cloud: f64,
    /// Fraction of particles in modes whose exact mass < the hallucination threshold.
    pub hallucination_rate: f64,
    /// Fraction of particles with ‖x/s − a_nearest‖ > `off_support_distance`
    /// ([`OFF_SUPPORT_RULE`]).
    pub off_support_rate: f64,
    /// The threshold q99(t) + ½ρ on ‖x/s − a_nearest‖ (data units).
    pub off_support_distance: f64,
    /// Fraction of particles that are off support and fit y: data fit ‖y − A(x/s)‖²/(mσ²) at
    /// most `data_fit_q99` ([`LIKELIHOOD_HALLUCINATION_RULE`]); NaN (null) without a
    /// measurement.
    pub likelihood_hallucination_rate: f64,
    /// The exact particles' 99th percentile of ‖y − A(x/s)‖²/(mσ²) at this t.
    pub data_fit_q99: f64,
    /// q99(t): 99th percentile of the exact particles' ‖x/s − a_nearest‖ at this t.
    pub exact_distance_q99: f64,
    /// tr Cov(cloud) with the (K − 1) normalisation.
    pub spread: f64,
    /// s² Σ_i ω_i ‖a_i − ā‖² + D v (design §3).
    pub exact_spread: f64,
    /// spread / exact_spread: < 1 under-dispersed, > 1 over-dispersed.
    pub spread_ratio: f64,
    /// ‖y − A(m(x))‖² / (m σ²) over particles.
    pub data_fit_denoised: MeanStd,
    /// ‖y − A(x/s)‖² / (m σ²) over particles.
    pub data_fit_scaled: MeanStd,
    /// PSNR (dB, range 2) of m(x) against the truth, over particles.
    pub psnr_denoised: MeanStd,
    /// SSIM (7×7 uniform window) of m(x) against the truth, over particles.
    pub ssim_denoised: MeanStd,
    /// PSNR and SSIM of the mean of the m(x) over particles.
    pub psnr_denoised_mean: f64,
    pub ssim_denoised_mean: f64,
}

impl<'a> ExactPosterior<'a> {
    /// Builds the modes (classes from `labels` when given, else k-means) and the constants.
    pub fn new(
        atoms: &'a crate::data::Dataset,
        omega: &'a [f64],
        measurement: Option<Measured<'a>>,
        truth: Option<&'a [f32]>,
        schedule: Schedule,
        options: Options,
    ) -> ExactPosterior<'a> {
        let modes = Modes::for_dataset(atoms, omega, options.clusters, options.seed);
        let exact_mode_weights = modes.exact_weights(omega);
        let atom_spread = atom_spread(&atoms.images, atoms.dim(), omega);
        let atom_scale = atom_scale(&atoms.images, atoms.dim(), options.seed);
        ExactPosterior {
            atoms: &atoms.images,
            shape: atoms.shape,
            omega,
            modes,
            exact_mode_weights,
            atom_spread,
            atom_scale,
            measurement,
            truth,
            schedule,
            options,
        }
    }

    pub fn dim(&self) -> usize {
        self.shape.dim()
    }

    /// Runs the one pass an [`Analysis`] needs, then recomputes each particle's nearest-atom
    /// distance ‖x − s a_i‖² directly in float64 (K·D work): backends may return it from an
    /// expanded float32 form, whose cancellation at small t would move the off-support
    /// percentile.
    pub fn analyse(&self, backend: &dyn Backend, cloud: &[f32], noise: Noise) -> Result<Analysis> {
        let d = self.dim();
        let mut pass = backend.weighted_means(cloud, noise, &[WeightSet::Prior])?;
        for (n, x) in pass.nearest.iter_mut().zip(cloud.chunks(d)) {
            n.dist2 = direct_dist2(x, &self.atoms[n.index * d..(n.index + 1) * d], noise.s);
        }
        Ok(Analysis {
            denoised: std::mem::take(&mut pass.sets[0].means),
            nearest: pass.nearest,
        })
    }

    /// E‖x_t − E x_t‖² under the exact posterior at t: s² Σ_i ω_i ‖a_i − ā‖² + D v.
    pub fn exact_spread(&self, noise: Noise) -> f64 {
        noise.s * noise.s * self.atom_spread + self.dim() as f64 * noise.v
    }

    /// K exact draws at noise (s, v): i ~ Cat(ω), x = s a_i + √v ε, from `seed`.
    pub fn draw(&self, noise: Noise, count: usize, seed: u64) -> Vec<f32> {
        use rand::Rng;
        let d = self.dim();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let picks = Exact::draw_atoms(self.omega, count, &mut rng);
        let sd = noise.v.sqrt();
        let mut x = Vec::with_capacity(count * d);
        for i in picks {
            for &a in &self.atoms[i * d..(i + 1) * d] {
                let e: f64 = rng.sample(rand_distr::StandardNormal);
                x.push((noise.s * a as f64 + sd * e) as f32);
            }
        }
        x
    }

    /// The exact cloud at t (K × D particles `cloud`) from its analysis at that t: q99(t) of
    /// the scaled nearest-atom distances ‖x/s − a_nearest‖ = ‖x − s a_nearest‖/s, the threshold
    /// q99(t) + ½ρ, and the 99th percentile of the data fits ‖y − A(x/s)‖²/(mσ²).
    pub fn exact_cloud_from(
        &self,
        t: f64,
        cloud: &[f32],
        exact: &Analysis,
        from_exact_run: bool,
    ) -> ExactCloudAt {
        let s = self.schedule.noise(t).s;
        let dist: Vec<f64> = exact
            .nearest
            .iter()
            .map(|n| n.dist2.max(0.0).sqrt() / s)
            .collect();
        let nearest: Vec<usize> = exact.nearest.iter().map(|n| n.index).collect();
        let q99 = quantile_nearest_rank(dist, OFF_SUPPORT_QUANTILE);
        let fits = self.data_fit(&scaled_cloud(cloud, s));
        ExactCloudAt {
            t,
            exact_distance_q99: q99,
            off_support_distance: q99 + OFF_SUPPORT_MARGIN * self.atom_scale,
            data_fit_q99: quantile_nearest_rank(fits, DATA_FIT_QUANTILE),
            cloud_mode_weights: self.modes.weights_of(&nearest),
            from_exact_run,
        }
    }

    /// The exact cloud at t from `count` fresh exact draws (for a time the exact run did not
    /// record), seeded from the options' seed and t.
    pub fn exact_cloud_drawn(
        &self,
        backend: &dyn Backend,
        t: f64,
        count: usize,
    ) -> Result<ExactCloudAt> {
        if t == 0.0 {
            let mut rng =
                rand_chacha::ChaCha8Rng::seed_from_u64(self.options.seed ^ 0x636c_6561_6e30);
            let picks = Exact::draw_atoms(self.omega, count.max(100), &mut rng);
            let (cloud, analysis) = self.atoms_at_zero(&picks);
            return Ok(self.exact_cloud_from(0.0, &cloud, &analysis, false));
        }
        let noise = self.schedule.noise(t);
        let seed = self.options.seed ^ t.to_bits() ^ 0x7265_6665_7265_6e63;
        let cloud = self.draw(noise, count.max(100), seed);
        let analysis = self.analyse(backend, &cloud, noise)?;
        Ok(self.exact_cloud_from(t, &cloud, &analysis, false))
    }

    /// The metrics of `cloud` (K × D) at time t as a run records them at a checkpoint: one
    /// [`ExactPosterior::analyse`] pass at t and the exact cloud at t from `exact_draws` (at
    /// least 100) fresh draws. t = 0 scores clean samples as `fslens diagnose` does: nearest
    /// atoms argmin_i ‖x − a_i‖, the samples themselves in place of their Tweedie means, and
    /// the exact cloud atoms a_i, i ~ Cat(ω).
    pub fn score_cloud(
        &self,
        backend: &dyn Backend,
        t: f64,
        cloud: &[f32],
        exact_draws: usize,
    ) -> Result<CheckpointMetrics> {
        Ok(self.score_cloud_analysed(backend, t, cloud, exact_draws)?.0)
    }

    /// [`ExactPosterior::score_cloud`], also returning the cloud's [`Analysis`] (its Tweedie
    /// means, at t = 0 the cloud itself, and its nearest atoms) for callers that keep the
    /// denoised cloud or the class weights of the nearest atoms.
    pub fn score_cloud_analysed(
        &self,
        backend: &dyn Backend,
        t: f64,
        cloud: &[f32],
        exact_draws: usize,
    ) -> Result<(CheckpointMetrics, Analysis)> {
        let exact = self.exact_cloud_drawn(backend, t, exact_draws)?;
        let analysis = self.analyse_at(backend, cloud, t)?;
        Ok((self.metrics(t, cloud, &analysis, &exact), analysis))
    }

    /// [`ExactPosterior::analyse`] at time t; t = 0 (clean samples, or the x̂_0 that DDPM/DDIM
    /// end with) takes the nearest atoms argmin_i ‖x − a_i‖ and the samples themselves as
    /// their Tweedie means.
    pub fn analyse_at(&self, backend: &dyn Backend, cloud: &[f32], t: f64) -> Result<Analysis> {
        if t != 0.0 {
            return self.analyse(backend, cloud, self.schedule.noise(t));
        }
        // v only shapes the prior means, which clean samples replace by themselves.
        let noise = Noise {
            s: 1.0,
            v: self.schedule.noise(CLEAN_ANALYSIS_TIME).v,
        };
        let mut analysis = self.analyse(backend, cloud, noise)?;
        analysis.denoised = cloud.to_vec();
        Ok(analysis)
    }

    /// Exact draws at t = 0 from atom indices i ~ Cat(ω): the cloud x = a_i (K × D) and its
    /// analysis, known without a pass (each particle's nearest atom is its own, at distance
    /// 0; its Tweedie mean at t = 0 is itself).
    pub fn atoms_at_zero(&self, picks: &[usize]) -> (Vec<f32>, Analysis) {
        let d = self.dim();
        let cloud: Vec<f32> = picks
            .iter()
            .flat_map(|&i| self.atoms[i * d..(i + 1) * d].iter().copied())
            .collect();
        let nearest = picks
            .iter()
            .map(|&index| Neighbor { index, dist2: 0.0 })
            .collect();
        (
            cloud.clone(),
            Analysis {
                denoised: cloud,
                nearest,
            },
        )
    }

    /// The metrics of `cloud` (K × D) at time t, from its [`ExactPosterior::analyse`] pass and
    /// the exact posterior's own cloud at the same t.
    pub fn metrics(
        &self,
        t: f64,
        cloud: &[f32],
        analysis: &Analysis,
        exact: &ExactCloudAt,
    ) -> CheckpointMetrics {
        let d = self.dim();
        let k = cloud.len() / d;
        let noise = self.schedule.noise(t);
        let nearest: Vec<usize> = analysis.nearest.iter().map(|n| n.index).collect();
        let mode_weights = self.modes.weights_of(&nearest);
        let threshold = self.options.hallucination_threshold;
        let ruled_out = nearest
            .iter()
            .filter(|&&i| self.exact_mode_weights[self.modes.of_atom[i]] < threshold)
            .count();
        let off: Vec<bool> = analysis
            .nearest
            .iter()
            .map(|n| n.dist2.max(0.0).sqrt() / noise.s > exact.off_support_distance)
            .collect();
        let spread = cloud_spread(cloud, d);
        let exact_spread = self.exact_spread(noise);
        let scaled_fit = self.data_fit(&scaled_cloud(cloud, noise.s));
        let likelihood_hallucinations = off
            .iter()
            .zip(&scaled_fit)
            .filter(|&(&off, &fit)| off && fit <= exact.data_fit_q99)
            .count();
        let likelihood_hallucination_rate = if self.measurement.is_some() {
            likelihood_hallucinations as f64 / k.max(1) as f64
        } else {
            f64::NAN
        };
        let psnr: Vec<f64> = analysis.denoised.chunks(d).map(|x| self.psnr(x)).collect();
        let ssim: Vec<f64> = analysis.denoised.chunks(d).map(|x| self.ssim(x)).collect();
        let mut mean = vec![0.0f64; d];
        for x in analysis.denoised.chunks(d) {
            for (m, &v) in mean.iter_mut().zip(x) {
                *m += v as f64 / k as f64;
            }
        }
        let mean: Vec<f32> = mean.into_iter().map(|v| v as f32).collect();
        CheckpointMetrics {
            t,
            mode_tv: total_variation(&mode_weights, &self.exact_mode_weights),
            mode_tv_to_exact_cloud: total_variation(&mode_weights, &exact.cloud_mode_weights),
            mode_weights,
            hallucination_rate: ruled_out as f64 / k.max(1) as f64,
            off_support_rate: off.iter().filter(|&&o| o).count() as f64 / k.max(1) as f64,
            off_support_distance: exact.off_support_distance,
            likelihood_hallucination_rate,
            data_fit_q99: exact.data_fit_q99,
            exact_distance_q99: exact.exact_distance_q99,
            spread,
            exact_spread,
            spread_ratio: spread / exact_spread,
            data_fit_denoised: MeanStd::of(&self.data_fit(&analysis.denoised)),
            data_fit_scaled: MeanStd::of(&scaled_fit),
            psnr_denoised: MeanStd::of(&psnr),
            ssim_denoised: MeanStd::of(&ssim),
            psnr_denoised_mean: self.psnr(&mean),
            ssim_denoised_mean: self.ssim(&mean),
        }
    }

    /// PSNR of x against the truth (NaN without a truth).
    fn psnr(&self, x: &[f32]) -> f64 {
        self.truth.map_or(f64::NAN, |t| image_quality::psnr(x, t))
    }

    /// SSIM of x against the truth (NaN without a truth).
    fn ssim(&self, x: &[f32]) -> f64 {
        self.truth
            .map_or(f64::NAN, |t| image_quality::ssim(x, t, self.shape))
    }

    /// ‖y − A(x_k)‖² / (m σ²) for every row x_k (float64 sums); NaN without a measurement.
    pub fn data_fit(&self, xs: &[f32]) -> Vec<f64> {
        let k = xs.len() / self.dim();
        let Some(Measured { operator, y, sigma }) = self.measurement else {
            return vec![f64::NAN; k];
        };
        let m = y.len();
        let mut ax = vec![0.0f32; k * m];
        operator.forward_batch(xs, &mut ax);
        ax.chunks(m)
            .map(|a| {
                a.iter()
                    .zip(y)
                    .map(|(&p, &q)| (q as f64 - p as f64).powi(2))
                    .sum::<f64>()
                    / (m as f64 * sigma * sigma)
            })
            .collect()
    }
}

/// The cloud divided by s, x/s (float64 division rounded to float32): the clean-image scale
/// on which the off-support distance and the data fit of a noisy particle are measured.
fn scaled_cloud(cloud: &[f32], s: f64) -> Vec<f32> {
    cloud.iter().map(|&x| (x as f64 / s) as f32).collect()
}

/// The q-quantile by nearest rank (the ⌈qK⌉-th smallest of K values; NaN values sort last;
/// NaN for no values).
pub fn quantile_nearest_rank(mut values: Vec<f64>, q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).max(1);
    values.get(rank - 1).copied().unwrap_or(f64::NAN)
}

/// Σ_i ω_i ‖a_i − ā‖² with ā = Σ_i ω_i a_i, in float64.
pub fn atom_spread(atoms: &[f32], dim: usize, omega: &[f64]) -> f64 {
    let mut mean = vec![0.0f64; dim];
    for (a, &w) in atoms.chunks(dim).zip(omega) {
        for (m, &v) in mean.iter_mut().zip(a) {
            *m += w * v as f64;
        }
    }
    atoms
        .chunks(dim)
        .zip(omega)
        .map(|(a, &w)| {
            w * a
                .iter()
                .zip(&mean)
                .map(|(&v, m)| (v as f64 - m).powi(2))
                .sum::<f64>()
        })
        .sum()
}

/// ρ = median over a seeded sample of at most [`ATOM_SCALE_SAMPLE`] atoms a_j of
/// min_{i ≠ j} ‖a_j − a_i‖ (float64 direct differences, every atom a candidate). It is the
/// data set's own distance scale: a particle closer to an atom than ½ρ is nearer to it than
/// half the typical gap between neighbouring atoms. 0 for fewer than two atoms.
pub fn atom_scale(atoms: &[f32], dim: usize, seed: u64) -> f64 {
    use rand::Rng;
    use rayon::prelude::*;
    let n = atoms.len() / dim.max(1);
    if n < 2 {
        return 0.0;
    }
    let mut order: Vec<usize> = (0..n).collect();
    let take = n.min(ATOM_SCALE_SAMPLE);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x7268_6f5f_7363_616c);
    // Partial Fisher–Yates: a seeded uniform sample of `take` atoms.
    for j in 0..take {
        let r = rng.random_range(j..n);
        order.swap(j, r);
    }
    let row = |i: usize| &atoms[i * dim..(i + 1) * dim];
    let mut nearest: Vec<f64> = order[..take]
        .par_iter()
        .map(|&j| {
            let a = row(j);
            let mut best = f64::INFINITY;
            for i in (0..n).filter(|&i| i != j) {
                best = best.min(partial_dist2(a, row(i), best));
            }
            best.sqrt()
        })
        .collect();
    nearest.sort_by(f64::total_cmp);
    let m = nearest.len();
    if m % 2 == 1 {
        nearest[m / 2]
    } else {
        0.5 * (nearest[m / 2 - 1] + nearest[m / 2])
    }
}

/// ‖a − b‖² in float64, or any value ≥ `bound` as soon as the partial sum exceeds it (the
/// caller only needs distances below its current best).
fn partial_dist2(a: &[f32], b: &[f32], bound: f64) -> f64 {
    let mut acc = 0.0f64;
    for (ca, cb) in a.chunks(64).zip(b.chunks(64)) {
        let mut part = [0.0f64; 8];
        for (k, (&x, &y)) in ca.iter().zip(cb).enumerate() {
            let e = x as f64 - y as f64;
            part[k % 8] += e * e;
        }
        acc += part.iter().sum::<f64>();
        if acc >= bound {
            return acc;
        }
    }
    acc
}

/// tr Cov of a cloud (K × D): Σ_k ‖x_k − x̄‖² / (K − 1) (0 for one particle).
pub fn cloud_spread(cloud: &[f32], dim: usize) -> f64 {
    let k = cloud.len() / dim;
    if k < 2 {
        return 0.0;
    }
    let mut mean = vec![0.0f64; dim];
    for x in cloud.chunks(dim) {
        for (m, &v) in mean.iter_mut().zip(x) {
            *m += v as f64 / k as f64;
        }
    }
    cloud
        .chunks(dim)
        .map(|x| {
            x.iter()
                .zip(&mean)
                .map(|(&v, m)| (v as f64 - m).powi(2))
                .sum::<f64>()
        })
        .sum::<f64>()
        / (k - 1) as f64
}

/// ½ Σ |p − q|.
pub fn total_variation(p: &[f64], q: &[f64]) -> f64 {
    0.5 * p.iter().zip(q).map(|(a, b)| (a - b).abs()).sum::<f64>()
}

#[cfg(test)]
mod tests;
