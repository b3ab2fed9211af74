//! The elementwise kernels of the CPU pass, compiled for AVX-512/AVX2 when the CPU has them
//! (dispatched at run time) and written lane-wise so that they vectorise.

use super::CLAMP;

macro_rules! dispatch {
    ($name:ident, $body:ident, ($($arg:ident : $ty:ty),*) -> $ret:ty) => {
        pub(super) fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn v4($($arg: $ty),*) -> $ret { $body($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($arg: $ty),*) -> $ret { $body($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    return unsafe { v4($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    return unsafe { v3($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

/// In place: dots_i → ‖x‖² + s²‖a_i‖² − 2s·dots_i; returns the minimum.
#[inline(always)]
fn distances_body(row: &mut [f32], an: &[f32], xn: f32, s: f32, s2: f32) -> f32 {
    let two_s = 2.0 * s;
    let mut lanes = [f32::INFINITY; 16];
    for (k, (o, &a)) in row.iter_mut().zip(an).enumerate() {
        let v = (xn + s2 * a) - two_s * *o;
        *o = v;
        let l = &mut lanes[k % 16];
        *l = if v < *l { v } else { *l };
    }
    lanes
        .iter()
        .fold(f32::INFINITY, |m, &v| if v < m { v } else { m })
}
dispatch!(distances_row, distances_body, (row: &mut [f32], an: &[f32], xn: f32, s: f32, s2: f32) -> f32);

/// out_i = −d_i/(2v); returns the maximum.
#[inline(always)]
fn logits_prior_body(dist: &[f32], inv2v: f32, out: &mut [f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 16];
    for (k, (o, &d)) in out.iter_mut().zip(dist).enumerate() {
        let v = -d * inv2v;
        *o = v;
        let l = &mut lanes[k % 16];
        *l = if v > *l { v } else { *l };
    }
    lanes
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m })
}
dispatch!(logits_prior, logits_prior_body, (dist: &[f32], inv2v: f32, out: &mut [f32]) -> f32);

/// out_i = β_i − d_i/(2v); returns the maximum.
#[inline(always)]
fn logits_biased_body(dist: &[f32], inv2v: f32, beta: &[f32], out: &mut [f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 16];
    for (k, ((o, &d), &bb)) in out.iter_mut().zip(dist).zip(beta).enumerate() {
        let v = bb - d * inv2v;
        *o = v;
        let l = &mut lanes[k % 16];
        *l = if v > *l { v } else { *l };
    }
    lanes
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m })
}
dispatch!(logits_biased, logits_biased_body, (dist: &[f32], inv2v: f32, beta: &[f32], out: &mut [f32]) -> f32);

/// e^r for r ≤ 0 (relative error ≈ 2e-7), branch-free so that it vectorises: 2^k·p(f) with
/// k = round(r/ln 2), f = r − k ln 2 ∈ [−ln2/2, ln2/2] and p a degree-6 Taylor polynomial.
#[inline(always)]
fn exp_neg(r: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5·2^23: adding it rounds to an integer
    let r = r.max(-87.0);
    let k = (r * LOG2E + ROUND) - ROUND;
    let f = (r - k * LN2_HI) - k * LN2_LO;
    let p = 1.0
        + f * (1.0
            + f * (0.5
                + f * (1.0 / 6.0 + f * (1.0 / 24.0 + f * (1.0 / 120.0 + f * (1.0 / 720.0))))));
    let scale = f32::from_bits(((k as i32 + 127) as u32) << 23);
    p * scale
}

/// In place r_i → w_i = e^{r_i} (0 when r_i < −60); returns (Σw, Σw², Σw·r), accumulated in
/// float32 per lane over one chunk row.
#[inline(always)]
fn weights_body(rel: &mut [f32]) -> (f64, f64, f64) {
    let mut s0 = [0.0f32; 16];
    let mut s2 = [0.0f32; 16];
    let mut sl = [0.0f32; 16];
    let mut rc = rel.chunks_exact_mut(16);
    for r16 in &mut rc {
        for j in 0..16 {
            let r = r16[j];
            let e = if r < CLAMP { 0.0 } else { exp_neg(r) };
            r16[j] = e;
            s0[j] += e;
            s2[j] += e * e;
            sl[j] += e * r;
        }
    }
    let (mut t0, mut t2, mut tl) = (0.0f64, 0.0f64, 0.0f64);
    for wo in rc.into_remainder() {
        let r = *wo;
        let e = if r < CLAMP { 0.0 } else { exp_neg(r) };
        *wo = e;
        t0 += e as f64;
        t2 += (e * e) as f64;
        tl += (e * r) as f64;
    }
    for j in 0..16 {
        t0 += s0[j] as f64;
        t2 += s2[j] as f64;
        tl += sl[j] as f64;
    }
    (t0, t2, tl)
}
dispatch!(weights_row, weights_body, (rel: &mut [f32]) -> (f64, f64, f64));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_matches_std() {
        let mut worst = 0.0f64;
        let mut r = -60.0f32;
        while r <= 0.0 {
            let got = exp_neg(r) as f64;
            let want = (r as f64).exp();
            worst = worst.max((got / want - 1.0).abs());
            r += 0.001_37;
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
        assert_eq!(exp_neg(0.0), 1.0);
    }
}
