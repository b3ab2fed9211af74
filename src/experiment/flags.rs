//! Failure flags: where a sampler's numbers against the exact posterior say that it failed
//! (README: "The report"). A sampler is flagged when
//!
//! - its spread ratio tr Cov(cloud) / (s² Σ_i ω_i‖a_i − ā‖² + D v) leaves the band
//!   [`SPREAD_BAND`] at any checkpoint or at the final time,
//! - more than [`RATE_FLAG`] of its final particles sit in modes whose exact mass is below the
//!   hallucination threshold (prior-mode hallucination), or
//! - more than [`RATE_FLAG`] of its final particles are off the data's support, or
//! - more than [`LIKELIHOOD_HALLUCINATION_FLAG`] of its particles at any checkpoint or at the
//!   final time are likelihood-mode hallucinations: off the support and fitting y as well as
//!   the exact posterior's draws do.
//!
//! summary.json lists each sampler's flags, the report shows them as notes (and the values as
//! red cells), and the table that `run`, `compare` and `demo` print names them. The exact
//! sampler is never flagged: its draws are exact by construction, and where they leave the
//! band that is the Monte Carlo noise of K particles ([`exact_noise_note`]).

use serde::Serialize;

use crate::diagnostics::CheckpointMetrics;
pub use crate::report::html::{RATE_FLAG, SPREAD_BAND};

/// A sampler whose final likelihood-mode hallucination rate exceeds this is flagged: the same
/// 5 % as the other rates, named apart because it is the flag the likelihood approximations
/// are built to avoid (an image that explains y but is no image of the data set).
pub const LIKELIHOOD_HALLUCINATION_FLAG: f64 = RATE_FLAG;

/// One failure a sampler's numbers show.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Flag {
    /// The metric that fired: `spread_ratio`, `hallucination_rate`, `off_support_rate` or
    /// `likelihood_hallucination_rate`.
    pub metric: &'static str,
    /// What it says, with the numbers.
    pub message: String,
}

/// The flags of sampler `name` from its metric `records` (checkpoints in decreasing t, then
/// the final time; the rates are read at the final record); none for `exact`.
pub fn sampler_flags(name: &str, records: &[CheckpointMetrics]) -> Vec<Flag> {
    if name == "exact" {
        return Vec::new();
    }
    flags(records)
}

/// When the exact sampler's own spread ratio leaves the band, a note that the band is within
/// the Monte Carlo noise of its K draws there (tr Cov of K draws scatters around the closed
/// form, most where a few atoms far apart hold the mass), with the fix.
pub fn exact_noise_note(records: &[CheckpointMetrics]) -> Option<String> {
    let spread = flags(records)
        .into_iter()
        .find(|f| f.metric == "spread_ratio")?;
    Some(format!(
        "exact: {} although its draws are exact: that is the Monte Carlo noise of its particles \
         on this posterior, so read the other samplers' spread ratios with that much slack, or \
         raise sampling.particles",
        spread.message
    ))
}

/// The flags of a cloud's metric `records`, whoever made it (see [`sampler_flags`]).
pub fn flags(records: &[CheckpointMetrics]) -> Vec<Flag> {
    let mut flags = Vec::new();
    let worst = records
        .iter()
        .filter(|r| r.spread_ratio.is_finite())
        .max_by(|a, b| {
            a.spread_ratio
                .ln()
                .abs()
                .total_cmp(&b.spread_ratio.ln().abs())
        });
    if let Some(w) = worst
        && !(SPREAD_BAND.0..=SPREAD_BAND.1).contains(&w.spread_ratio)
    {
        flags.push(Flag {
            metric: "spread_ratio",
            message: format!(
                "spread ratio outside [{}, {}] (worst {:.3} at t = {:.3e})",
                SPREAD_BAND.0, SPREAD_BAND.1, w.spread_ratio, w.t
            ),
        });
    }
    let Some(last) = records.last() else {
        return flags;
    };
    if last.hallucination_rate > RATE_FLAG {
        flags.push(Flag {
            metric: "hallucination_rate",
            message: format!(
                "{:.1} % of the final particles sit in modes the exact posterior rules out",
                100.0 * last.hallucination_rate
            ),
        });
    }
    if last.off_support_rate > RATE_FLAG {
        flags.push(Flag {
            metric: "off_support_rate",
            message: format!(
                "{:.1} % of the final particles are off the data's support",
                100.0 * last.off_support_rate
            ),
        });
    }
    // Read at the worst record, like the spread: a cloud that explains y away from every atom
    // at some t is what a smooth learned prior would keep to t = 0, while the empirical prior's
    // score pulls it onto an atom near t_min (design §6). NaN (no measurement) never fires.
    let worst = records
        .iter()
        .filter(|r| r.likelihood_hallucination_rate.is_finite())
        .max_by(|a, b| {
            a.likelihood_hallucination_rate
                .total_cmp(&b.likelihood_hallucination_rate)
        });
    if let Some(w) = worst
        && w.likelihood_hallucination_rate > LIKELIHOOD_HALLUCINATION_FLAG
    {
        flags.push(Flag {
            metric: "likelihood_hallucination_rate",
            message: format!(
                "{:.1} % of the particles at t = {:.3e} are off the data's support yet fit y as \
                 well as exact draws (likelihood-mode hallucination)",
                100.0 * w.likelihood_hallucination_rate,
                w.t
            ),
        });
    }
    flags
}

/// A short name of a flag's metric, for a table column (`spread`, `halluc.`, `off-sup.`,
/// `halluc.-lik`).
pub fn short_name(metric: &str) -> &str {
    match metric {
        "spread_ratio" => "spread",
        "hallucination_rate" => "halluc.",
        "off_support_rate" => "off-sup.",
        "likelihood_hallucination_rate" => "halluc.-lik",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(t: f64, spread_ratio: f64, hallucination: f64, off: f64) -> CheckpointMetrics {
        record_lik(t, spread_ratio, hallucination, off, 0.0)
    }

    fn record_lik(
        t: f64,
        spread_ratio: f64,
        hallucination: f64,
        off: f64,
        lik: f64,
    ) -> CheckpointMetrics {
        let ms = crate::diagnostics::MeanStd {
            mean: 0.0,
            std: 0.0,
        };
        CheckpointMetrics {
            t,
            mode_weights: vec![1.0],
            mode_tv: 0.0,
            mode_tv_to_exact_cloud: 0.0,
            hallucination_rate: hallucination,
            off_support_rate: off,
            off_support_distance: 1.0,
            likelihood_hallucination_rate: lik,
            data_fit_q99: 1.0,
            exact_distance_q99: 0.5,
            spread: spread_ratio,
            exact_spread: 1.0,
            spread_ratio,
            data_fit_denoised: ms,
            data_fit_scaled: ms,
            psnr_denoised: ms,
            ssim_denoised: ms,
            psnr_denoised_mean: 0.0,
            ssim_denoised_mean: 0.0,
        }
    }

    #[test]
    fn each_rule_fires_at_its_threshold_only() {
        let good = [record(0.5, 1.0, 0.0, 0.0), record(1e-3, 1.2, 0.05, 0.05)];
        assert!(flags(&good).is_empty());
        // The worst spread ratio in log terms is reported, with its time.
        let spread = [record(0.5, 0.7, 0.0, 0.0), record(1e-3, 1.3, 0.0, 0.0)];
        let f = flags(&spread);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].metric, "spread_ratio");
        assert!(
            f[0].message.contains("worst 0.700 at t = 5.000e-1"),
            "{f:?}"
        );
        // Rates are read at the final record.
        let rates = [record(0.5, 1.0, 0.9, 0.9), record(1e-3, 1.0, 0.2, 0.06)];
        let f = flags(&rates);
        let metrics: Vec<_> = f.iter().map(|f| f.metric).collect();
        assert_eq!(metrics, ["hallucination_rate", "off_support_rate"]);
        assert!(f[0].message.starts_with("20.0 %"), "{f:?}");
        assert_eq!(short_name(f[1].metric), "off-sup.");
        // The exact sampler is not flagged; its spread leaving the band becomes a note.
        assert!(sampler_flags("exact", &rates).is_empty());
        assert_eq!(sampler_flags("pigdm", &rates).len(), 2);
        assert!(exact_noise_note(&good).is_none());
        assert!(
            exact_noise_note(&spread)
                .unwrap()
                .contains("sampling.particles")
        );
    }

    #[test]
    fn likelihood_hallucination_fires_at_its_worst_record_above_the_threshold() {
        let at = |early, last| {
            [
                record_lik(0.5, 1.0, 0.0, 0.5, early),
                record_lik(1e-3, 1.0, 0.0, 0.06, last),
            ]
        };
        let metrics =
            |r: &[CheckpointMetrics]| flags(r).iter().map(|f| f.metric).collect::<Vec<_>>();
        let limit = LIKELIHOOD_HALLUCINATION_FLAG;
        assert_eq!(metrics(&at(limit, 0.0)), ["off_support_rate"]);
        let f = flags(&at(0.3, 0.06));
        assert_eq!(f[1].metric, "likelihood_hallucination_rate");
        assert!(
            f[1].message
                .starts_with("30.0 % of the particles at t = 5.000e-1"),
            "{f:?}"
        );
        assert_eq!(short_name(f[1].metric), "halluc.-lik");
        assert!(flags(&at(0.0, 0.07))[1].message.contains("t = 1.000e-3"));
        // Without a measurement the rate is NaN: no flag.
        assert_eq!(metrics(&at(f64::NAN, f64::NAN)), ["off_support_rate"]);
        assert!(sampler_flags("exact", &at(0.9, 0.9)).is_empty());
    }
}
