//! A trajectory made by another program, read and checked before any scoring: the particle
//! clouds a sampler recorded at several diffusion times (`fslens diagnose --trajectory X.npy
//! --times T.npy`).
//!
//! X.npy holds the sampler's own state x_t = s(t) x_0 + √v(t) ε at T times, on the fslens
//! scale (clean images in [-1, 1]): shape (T, K, D), (T, K, H, W, C), or (T, K, H, W) for one
//! channel, HWC order, float32 or float64. T.npy holds the T times as floats: continuous VP
//! times of the config's schedule in [0, 1] (t = 0: clean final samples), one per cloud in the
//! order of X's first axis, in any order and without repeats. The clouds are returned in
//! decreasing t, like a run's checkpoints.
//!
//! **No pixel conventions.** A noisy state cannot be rescaled pixel by pixel: the affine map
//! x = a p + b that takes a convention's range onto [-1, 1] turns p_t = s p_0 + √v ε into
//! s x_0 + (1 − s) b + a √v ε, which is the fslens state s x_0 + √v ε only for a = 1, b = 0.
//! So a trajectory must be on the [-1, 1] scale the diffusion ran in; `--pixels` other than
//! minus-one-to-one is refused, and so are integer arrays (8-bit values cannot hold noise).
//!
//! **Range.** Only the cloud at the smallest t is range-checked, with the rule of `--samples`
//! widened by the noise it carries: |x| ≤ (1 + 2·[`RANGE_SLACK`]) s(t) + [`NOISE_SIGMAS`] √v(t)
//! (3 at t = 0, as for clean samples). That catches files on another scale (0-255) and times
//! paired with the wrong clouds; intermediate clouds are not range-checked, because a sampler
//! that overshoots on the way (σ-DPS at small σ reaches ⟨x, u⟩ ~ 10⁴) is what the diagnosis is
//! for. NaN or infinite values are refused everywhere, naming the cloud and its time.

use std::path::Path;

use super::diagnose::{PixelConvention, RANGE_SLACK};
use crate::data::ImageShape;
use crate::diffusion::Schedule;
use crate::{Error, Result};

/// The noise bound of the range check, in standard deviations: |ε| > 8 has probability
/// 1.2·10⁻¹⁵ per entry, so no honest cloud of up to 10¹³ values trips it.
pub const NOISE_SIGMAS: f64 = 8.0;

/// The clouds of a trajectory, in decreasing t.
#[derive(Clone, Debug)]
pub struct Trajectory {
    /// The T times, decreasing.
    pub times: Vec<f64>,
    /// One K × D cloud (HWC order, fslens pixels) per time, in the order of `times`.
    pub clouds: Vec<Vec<f32>>,
    /// K, the particles of every cloud.
    pub count: usize,
    /// e.g. `npy f32 (5, 512, 16, 16, 1)`.
    pub format: String,
}

/// Refuses every pixel convention but minus-one-to-one for a trajectory (module notes).
pub fn check_pixels(declared: Option<PixelConvention>) -> Result<()> {
    match declared {
        None | Some(PixelConvention::MinusOneToOne) => Ok(()),
        Some(p) => Err(Error::config(
            "--pixels",
            format!(
                "is {} but a trajectory must be the sampler's state x_t on the [-1, 1] scale \
                 the diffusion ran in: a noisy x_t cannot be rescaled pixel by pixel (it would \
                 change the noise against the signal). Save x_t in the convention of clean \
                 images in [-1, 1] and drop --pixels",
                p.name()
            ),
        )),
    }
}

/// Reads and checks T.npy: a 1-D float array of distinct finite times in [0, 1], each t > 0
/// with a noise variance v(t) > 0 under `schedule`. The times in the file's order.
pub fn read_times(path: &Path, schedule: &Schedule) -> Result<Vec<f64>> {
    let a = crate::arrays::read_npy_nonfinite(path)?;
    if a.shape.len() != 1 || a.shape[0] == 0 {
        return Err(Error::data(
            path,
            format!(
                "has shape {:?}; expected a 1-D array of T > 0 times, one per cloud of the \
                 trajectory: numpy.save(path, numpy.asarray(times, dtype=numpy.float64))",
                a.shape
            ),
        ));
    }
    if !a.dtype.starts_with('f') {
        return Err(Error::data(
            path,
            format!(
                "holds integers ({}); expected float times t in [0, 1] of the config's VP \
                 schedule (t = 1 pure noise, t = 0 clean samples). Discrete DDPM levels \
                 0 … 999 convert to the time with the same ᾱ with fslens.DDPM().time(k) in \
                 Python",
                a.dtype
            ),
        ));
    }
    for (i, &t) in a.data.iter().enumerate() {
        if !t.is_finite() {
            return Err(Error::data(
                path,
                format!("times[{i}] = {t} is not finite; every cloud needs a time in [0, 1]"),
            ));
        }
        if !(0.0..=1.0).contains(&t) {
            return Err(Error::data(
                path,
                format!(
                    "times[{i}] = {t} lies outside [0, 1]; times are the config's continuous \
                     VP times (t = 1 pure noise, t = 0 clean samples): rescale step indices \
                     or levels to them"
                ),
            ));
        }
        if t > 0.0 && schedule.noise(t).v <= 0.0 {
            return Err(Error::data(
                path,
                format!(
                    "times[{i}] = {t:e} is so close to 0 that its noise variance v(t) rounds \
                     to 0; write 0 for clean samples"
                ),
            ));
        }
    }
    let mut order: Vec<usize> = (0..a.data.len()).collect();
    order.sort_by(|&i, &j| a.data[i].total_cmp(&a.data[j]));
    if let Some(w) = order.windows(2).find(|w| a.data[w[0]] == a.data[w[1]]) {
        let (i, j) = (w[0].min(w[1]), w[0].max(w[1]));
        return Err(Error::data(
            path,
            format!(
                "times[{i}] and times[{j}] are both {}; each cloud needs its own time: drop \
                 the repeated cloud from both files",
                a.data[i]
            ),
        ));
    }
    Ok(a.data)
}

/// Reads X.npy (`clouds`) with the times `times` read from `times_path` by [`read_times`],
/// checks it against the config's image `shape` (module notes) and returns the clouds in
/// decreasing t.
pub fn load_trajectory(
    clouds: &Path,
    times_path: &Path,
    times: &[f64],
    shape: ImageShape,
    schedule: &Schedule,
) -> Result<Trajectory> {
    let a = crate::arrays::read_npy_nonfinite(clouds)?;
    if !a.dtype.starts_with('f') {
        return Err(Error::data(
            clouds,
            format!(
                "holds integers ({}); a trajectory is the sampler's noisy state x_t, which \
                 needs floats: save it as float32 on the [-1, 1] scale",
                a.dtype
            ),
        ));
    }
    let (t_count, count) = trajectory_shape(clouds, &a.shape, shape)?;
    if t_count != times.len() {
        return Err(Error::data(
            times_path,
            format!(
                "holds {} times but {} holds {t_count} clouds (its first axis); give one time \
                 per cloud, in the order of that axis",
                times.len(),
                clouds.display()
            ),
        ));
    }
    let size = count * shape.dim();
    if let Some(i) = a.data.iter().position(|v| !v.is_finite()) {
        let (c, rest) = (i / size, i % size);
        return Err(Error::data(
            clouds,
            format!(
                "value {} in cloud {c} (t = {} in {}), particle {}, entry {} is not finite; \
                 fslens needs finite numbers: if the sampler diverged there, drop that cloud \
                 from both files to score the others",
                a.data[i],
                times[c],
                times_path.display(),
                rest / shape.dim(),
                rest % shape.dim()
            ),
        ));
    }
    let mut order: Vec<usize> = (0..t_count).collect();
    order.sort_by(|&i, &j| times[j].total_cmp(&times[i]));
    // The only convention is minus-one-to-one, whose pixels are the values themselves: cast
    // without arithmetic so that float32 clouds keep their bits.
    let picked: Vec<Vec<f32>> = order
        .iter()
        .map(|&i| {
            a.data[i * size..(i + 1) * size]
                .iter()
                .map(|&v| v as f32)
                .collect()
        })
        .collect();
    let last = *order.last().expect("at least one time");
    check_final_range(
        clouds,
        times_path,
        last,
        times[last],
        &picked[t_count - 1],
        schedule,
    )?;
    Ok(Trajectory {
        times: order.iter().map(|&i| times[i]).collect(),
        clouds: picked,
        count,
        format: format!("npy {} {:?}", a.dtype, a.shape),
    })
}

/// (T, K) of a trajectory array of shape `dims`, or an error naming the layouts it takes.
fn trajectory_shape(path: &Path, dims: &[usize], shape: ImageShape) -> Result<(usize, usize)> {
    let d = shape.dim();
    let (h, w, c) = (shape.height, shape.width, shape.channels);
    let expected = format!(
        "expected (T, K, {d}), (T, K, {h}, {w}, {c}){} for T clouds of K particles of the \
         config's {h}x{w}x{c} images (HWC order)",
        if c == 1 {
            format!(" or (T, K, {h}, {w})")
        } else {
            String::new()
        }
    );
    let (t, k) = match dims {
        [t, k, dd] if *dd == d => (*t, *k),
        [t, k, hh, ww] if c == 1 && (*hh, *ww) == (h, w) => (*t, *k),
        [t, k, hh, ww, cc] if (*hh, *ww, *cc) == (h, w, c) => (*t, *k),
        [_, _, cc, hh, ww] if (*cc, *hh, *ww) == (c, h, w) => {
            return Err(Error::data(
                path,
                format!(
                    "has shape {dims:?}, channels first; {expected}: save \
                     x.permute(0, 1, 3, 4, 2) (PyTorch) or x.transpose(0, 1, 3, 4, 2) (numpy)"
                ),
            ));
        }
        [_, dd] if *dd == d => return Err(one_cloud(path, dims, &expected)),
        [_, hh, ww] if c == 1 && (*hh, *ww) == (h, w) => {
            return Err(one_cloud(path, dims, &expected));
        }
        [_, hh, ww, cc] if (*hh, *ww, *cc) == (h, w, c) => {
            return Err(one_cloud(path, dims, &expected));
        }
        _ => {
            return Err(Error::data(
                path,
                format!(
                    "has shape {dims:?}; {expected}. Clouds of another image size need a \
                     config whose [data] gives that size (data.size, data.resize)"
                ),
            ));
        }
    };
    if t == 0 || k == 0 {
        return Err(Error::data(
            path,
            format!("has shape {dims:?}: no clouds (T = 0) or no particles (K = 0)"),
        ));
    }
    Ok((t, k))
}

/// The error for an array that holds one cloud without a time axis.
fn one_cloud(path: &Path, dims: &[usize], expected: &str) -> Error {
    Error::data(
        path,
        format!(
            "has shape {dims:?}, which looks like one cloud without a time axis; {expected}. \
             Stack the clouds with numpy.stack(clouds) (one per time), or score final samples \
             with --samples instead"
        ),
    )
}

/// The range rule of the module notes on the cloud at the smallest time t (index `index` of
/// the file's first axis).
fn check_final_range(
    path: &Path,
    times_path: &Path,
    index: usize,
    t: f64,
    cloud: &[f32],
    schedule: &Schedule,
) -> Result<()> {
    // t = 0 gives s = 1, v = 0 (the clean rule of --samples).
    let noise = schedule.noise(t);
    let bound = (1.0 + 2.0 * RANGE_SLACK) * noise.s + NOISE_SIGMAS * noise.v.max(0.0).sqrt();
    let min = cloud.iter().copied().fold(f32::INFINITY, f32::min) as f64;
    let max = cloud.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    if min >= -bound && max <= bound {
        return Ok(());
    }
    let hint = if max > 20.0 && min >= -bound {
        "these look like 0-255 pixels: save the sampler's state on the [-1, 1] scale it \
         diffuses in"
            .to_string()
    } else {
        format!(
            "check that {} gives each cloud its own time in the order of this file's first \
             axis, that the clouds are on the [-1, 1] scale, and that the sampler's VP \
             schedule is the config's (sampling.beta_min, sampling.beta_max)",
            times_path.display()
        )
    };
    Err(Error::data(
        path,
        format!(
            "the cloud at the smallest time t = {t} (index {index} of the first axis) spans \
             [{min:.4}, {max:.4}], beyond ±{bound:.4} = ±(3 s(t) + {NOISE_SIGMAS} √v(t)), which \
             x_t = s(t) x_0 + √v(t) ε stays within for clean images in [-1, 1] overshooting \
             by at most the range's width; {hint}"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arrays::{write_npy, write_npy_f32};

    fn tmp(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("fslens-traj-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn times_file(dir: &Path, name: &str, times: &[f64]) -> std::path::PathBuf {
        let p = dir.join(name);
        write_npy(&p, &[times.len()], times).unwrap();
        p
    }

    /// The error of `r`, as text.
    fn err<T: std::fmt::Debug>(r: Result<T>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn times_are_checked_and_kept_in_file_order() {
        let dir = tmp("times");
        let sched = Schedule::default();
        let p = times_file(&dir, "t.npy", &[0.1, 1.0, 0.0, 0.5]);
        assert_eq!(read_times(&p, &sched).unwrap(), vec![0.1, 1.0, 0.0, 0.5]);
        let cases: [(&str, &[f64], &str); 5] = [
            ("nan.npy", &[0.5, f64::NAN], "times[1] = NaN is not finite"),
            ("inf.npy", &[f64::INFINITY], "times[0] = inf is not finite"),
            ("big.npy", &[0.5, 1.5], "times[1] = 1.5 lies outside [0, 1]"),
            ("neg.npy", &[-0.1], "times[0] = -0.1 lies outside [0, 1]"),
            (
                "dup.npy",
                &[0.3, 0.1, 0.3],
                "times[0] and times[2] are both 0.3",
            ),
        ];
        for (name, times, needle) in cases {
            let e = err(read_times(&times_file(&dir, name, times), &sched));
            assert!(e.contains(name) && e.contains(needle), "{e}");
        }
        // A subnormal time has no noise left; 2-D and integer arrays name the fix.
        let e = err(read_times(
            &times_file(&dir, "tiny.npy", &[f64::from_bits(1)]),
            &sched,
        ));
        assert!(e.contains("write 0 for clean samples"), "{e}");
        let p = dir.join("two.npy");
        write_npy(&p, &[2, 1], &[0.5f64, 0.1]).unwrap();
        assert!(err(read_times(&p, &sched)).contains("1-D array"));
        let p = dir.join("levels.npy");
        write_npy(&p, &[2], &[999i64, 0]).unwrap();
        assert!(err(read_times(&p, &sched)).contains("fslens.DDPM().time(k)"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn clouds_load_in_every_layout_sorted_by_decreasing_time() {
        let dir = tmp("clouds");
        let sched = Schedule::default();
        let shape = ImageShape::new(2, 3, 1);
        // Three clouds of two particles, cloud c holding values c/10 + entry/100, at times
        // listed out of order: 0.2, 0 (clean), 0.9.
        let times = [0.2, 0.0, 0.9];
        let tp = times_file(&dir, "t.npy", &times);
        let values: Vec<f32> = (0..3 * 2 * 6)
            .map(|i| (i / 12) as f32 / 10.0 + (i % 12) as f32 / 100.0)
            .collect();
        for dims in [vec![3, 2, 6], vec![3, 2, 2, 3], vec![3, 2, 2, 3, 1]] {
            let p = dir.join("x.npy");
            write_npy_f32(&p, &dims, &values).unwrap();
            let tr = load_trajectory(&p, &tp, &times, shape, &sched).unwrap();
            assert_eq!(tr.times, vec![0.9, 0.2, 0.0]);
            assert_eq!(tr.count, 2);
            // Decreasing t: the file's clouds 2, 0, 1, bit for bit.
            for (got, c) in tr.clouds.iter().zip([2, 0, 1]) {
                assert_eq!(got[..], values[c * 12..(c + 1) * 12]);
            }
            assert!(tr.format.starts_with("npy f32"), "{}", tr.format);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_clouds_name_the_file_and_the_fix() {
        let dir = tmp("bad");
        let sched = Schedule::default();
        let shape = ImageShape::new(2, 3, 1);
        let times = [0.5, 0.0];
        let tp = times_file(&dir, "t.npy", &times);
        let good = vec![0.25f32; 2 * 4 * 6];
        let load = |name: &str, dims: &[usize], data: &[f32]| {
            let p = dir.join(name);
            write_npy_f32(&p, dims, data).unwrap();
            err(load_trajectory(&p, &tp, &times, shape, &sched))
        };
        let e = load("d.npy", &[2, 4, 7], &vec![0.0; 56]);
        assert!(e.contains("d.npy") && e.contains("(T, K, 6)"), "{e}");
        let e = load("one.npy", &[4, 6], &good[..24]);
        assert!(e.contains("one.npy") && e.contains("--samples"), "{e}");
        let shape3 = ImageShape::new(2, 2, 3);
        let p = dir.join("nchw.npy");
        write_npy_f32(&p, &[2, 1, 3, 2, 2], &good[..24]).unwrap();
        let e = err(load_trajectory(&p, &tp, &times, shape3, &sched));
        assert!(e.contains("permute(0, 1, 3, 4, 2)"), "{e}");
        // Three clouds for two times: the times file is named.
        let e = load("three.npy", &[3, 2, 6], &good[..36]);
        assert!(
            e.starts_with(&format!("{}:", tp.display())) && e.contains("holds 2 times"),
            "{e}"
        );
        let mut nan = good.clone();
        nan[4 * 6 + 13] = f32::NAN;
        let e = load("nan.npy", &[2, 4, 6], &nan);
        assert!(
            e.contains("nan.npy") && e.contains("cloud 1 (t = 0 in") && e.contains("particle 2"),
            "{e}"
        );
        // 0-255 values at t = 0 are refused; the same spread of noise at t = 0.5 is not.
        let mut bytes = good.clone();
        bytes[4 * 6..].iter_mut().for_each(|v| *v = 200.0);
        let e = load("bytes.npy", &[2, 4, 6], &bytes);
        assert!(e.contains("bytes.npy") && e.contains("0-255"), "{e}");
        let mut wild = good.clone();
        wild[..4 * 6].iter_mut().for_each(|v| *v = 1e4);
        load_trajectory(
            &{
                let p = dir.join("wild.npy");
                write_npy_f32(&p, &[2, 4, 6], &wild).unwrap();
                p
            },
            &tp,
            &times,
            shape,
            &sched,
        )
        .unwrap();
        // Integer clouds, and pixel conventions other than [-1, 1].
        let p = dir.join("u8.npy");
        write_npy(&p, &[2, 4, 6], &[3u8; 48]).unwrap();
        let e = err(load_trajectory(&p, &tp, &times, shape, &sched));
        assert!(e.contains("u8.npy") && e.contains("floats"), "{e}");
        assert!(check_pixels(None).is_ok());
        assert!(check_pixels(Some(PixelConvention::MinusOneToOne)).is_ok());
        let e = err(check_pixels(Some(PixelConvention::Byte)));
        assert!(e.starts_with("--pixels") && e.contains("[-1, 1]"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_range_bound_widens_with_the_noise_of_the_smallest_time() {
        let sched = Schedule::default();
        let dir = tmp("range");
        let shape = ImageShape::new(1, 2, 1);
        for (t, inside, outside) in [(0.0, 2.99f32, 3.01f32), (1e-3, 3.0, 3.2)] {
            let tp = times_file(&dir, "t.npy", &[t]);
            let n = sched.noise(t);
            let bound = 3.0 * n.s + 8.0 * n.v.max(0.0).sqrt();
            assert!(
                (inside as f64) < bound && (outside as f64) > bound,
                "{bound}"
            );
            for (v, ok) in [(inside, true), (outside, false), (-outside, false)] {
                let p = dir.join("x.npy");
                write_npy_f32(&p, &[1, 1, 2], &[0.0, v]).unwrap();
                let r = load_trajectory(&p, &tp, &[t], shape, &sched);
                assert_eq!(r.is_ok(), ok, "t = {t}, value {v}: {r:?}");
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
