//! Several GPU devices (`devices`, `--devices`): the atoms split across devices opened on one
//! adapter (two devices on the software adapter, `0,0`), joined by the sharded backend, meet the
//! float64 reference by the shared test bodies and equal one GPU device within float rounding,
//! in f32 and u8 storage; the command line runs the same posterior on two devices as on one;
//! bad device choices are errors that name `devices` and the fix.

mod common;

use common::engine::{atoms8, bias, check_bias_removal, noise, particles, random_case};
use common::gpu::have_gpu;
use common::{fslens, fslens_fails, s, scratch_dir};
use fslens::engine::devices::{DeviceShard, open_gpus};
use fslens::engine::gpu::{GpuBackend, GpuOptions, Storage, list_adapters};
use fslens::engine::{Backend, Devices, WeightSet};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The index of the adapter a plain GPU backend opens (the software one on a test machine).
fn preferred_adapter() -> usize {
    list_adapters()
        .iter()
        .find(|a| a.preferred)
        .map(|a| a.index)
        .expect("an adapter is preferred when any exists")
}

/// `k` devices on the preferred adapter ("i,i,…").
fn same_adapter(k: usize) -> Devices {
    let i = preferred_adapter().to_string();
    vec![i.as_str(); k].join(",").parse().unwrap()
}

fn on_devices(
    atoms: &[f32],
    d: usize,
    storage: Storage,
    devices: Devices,
) -> (Box<dyn Backend>, Vec<DeviceShard>) {
    let opts = GpuOptions {
        storage,
        ..Default::default()
    };
    open_gpus(atoms, d, &opts, &devices).unwrap()
}

/// Two devices on one adapter, f32 and u8 storage, against the float64 reference: every
/// statistic, mean, nearest atom and C·g of the prior and two posteriors at four times within
/// the one-backend tolerance (the shared `random_case`).
#[test]
fn two_devices_meet_the_reference() {
    if !have_gpu("two_devices_meet_the_reference") {
        return;
    }
    for (storage, seed) in [(Storage::F32, 31), (Storage::U8, 32)] {
        let label = format!("2 devices {}", storage.name());
        random_case(&label, 151, seed, &|atoms, d| {
            let (backend, shards) = on_devices(atoms, d, storage, same_adapter(2));
            // 151 atoms: 76 + 75, each device its own contiguous shard.
            assert_eq!(shards.len(), 2);
            assert_eq!((shards[0].atoms, shards[1].atoms), ((0, 76), (76, 151)));
            (backend, atoms.to_vec())
        });
    }
}

#[test]
fn two_devices_follow_the_bias_contract() {
    if !have_gpu("two_devices_follow_the_bias_contract") {
        return;
    }
    check_bias_removal("2 devices", &|atoms, d| {
        (
            on_devices(atoms, d, Storage::U8, same_adapter(2)).0,
            atoms.to_vec(),
        )
    });
}

/// Three devices vs one GPU backend over the same atoms: means within float32 rounding,
/// statistics within 1e-5 relative, the same nearest atoms, C·g within float32 rounding of its
/// scale; the description names every device with its atoms.
#[test]
fn split_devices_equal_one_device() {
    if !have_gpu("split_devices_equal_one_device") {
        return;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(41);
    let (n, d, b) = (300, 24, 6);
    let atoms = atoms8(&mut rng, n, d);
    let mut one = GpuBackend::new(&atoms, d, GpuOptions::default()).unwrap();
    let (mut split, shards) = on_devices(&atoms, d, Storage::F32, same_adapter(3));
    let text = split.describe();
    assert!(
        text.starts_with("3 shards: atoms 0..100 on gpu: "),
        "{text}"
    );
    assert!(text.contains("atoms 200..300 on gpu: "), "{text}");
    assert!(shards.iter().all(|s| s.adapter == preferred_adapter()));
    let bvec = bias(&mut rng, &atoms, d, 0.3);
    let (i1, i2) = (one.add_bias(&bvec).unwrap(), split.add_bias(&bvec).unwrap());
    for t in [1e-3, 0.05, 0.5] {
        let nz = noise(t);
        let x = particles(&mut rng, &atoms, d, b, nz);
        let a = one
            .weighted_means(&x, nz, &[WeightSet::Prior, WeightSet::Biased(i1)])
            .unwrap();
        let c = split
            .weighted_means(&x, nz, &[WeightSet::Prior, WeightSet::Biased(i2)])
            .unwrap();
        for k in 0..2 {
            for (u, v) in a.sets[k].means.iter().zip(&c.sets[k].means) {
                assert!((u - v).abs() <= 2e-6, "t={t} set {k}: mean {u} vs {v}");
            }
            for (u, v) in a.sets[k].stats.iter().zip(&c.sets[k].stats) {
                for (p, q) in [
                    (u.log_norm, v.log_norm),
                    (u.ess, v.ess),
                    (u.max_weight, v.max_weight),
                    (u.entropy, v.entropy),
                ] {
                    assert!(
                        (p - q).abs() <= 1e-5 * (1.0 + p.abs()),
                        "t={t}: {u:?} vs {v:?}"
                    );
                }
            }
        }
        for (u, v) in a.nearest.iter().zip(&c.nearest) {
            assert_eq!(u.index, v.index, "t={t}: nearest");
        }
        let g: Vec<f32> = (0..b * d).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let m = &a.sets[1].means;
        let ca = one
            .covariance_products(&x, nz, WeightSet::Biased(i1), m, &g)
            .unwrap();
        let cs = split
            .covariance_products(&x, nz, WeightSet::Biased(i2), m, &g)
            .unwrap();
        let scale = ca.iter().fold(0.0f32, |a, &v| a.max(v.abs()));
        for (u, v) in ca.iter().zip(&cs) {
            assert!(
                (u - v).abs() <= 1e-5 * (1.0 + scale),
                "t={t}: C·g {u} vs {v}"
            );
        }
    }
}

/// A device list that cannot be opened is an error before any upload: an index past the
/// adapters names `devices`, the adapters and the fix; more devices than atoms says so.
#[test]
fn impossible_device_lists_are_errors() {
    if !have_gpu("impossible_device_lists_are_errors") {
        return;
    }
    let count = list_adapters().len();
    let bad: Devices = format!("0,{count}").parse().unwrap();
    let err = open_gpus(&[0.0; 8], 4, &GpuOptions::default(), &bad)
        .err()
        .unwrap();
    assert_eq!(err.key(), Some("devices"), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("adapter {count}")) && text.contains("fslens info"),
        "{text}"
    );
    let err = open_gpus(&[0.0; 8], 4, &GpuOptions::default(), &same_adapter(3))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("at least one atom"), "{err}");
}

const CONFIG: &str = r#"
seed = 5
[data]
kind = "synthetic"
count = 200
size = 16
[measurement]
operator = "downsample:4"
sigma = 0.1
[sampling]
samplers = ["exact", "fsr"]
particles = 8
steps = 8
checkpoints = [0.5, 0.1]
"#;

/// The float32 payload of a float32 .npy file (header skipped).
fn npy(path: &std::path::Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let header = u16::from_le_bytes([bytes[8], bytes[9]]) as usize + 10;
    bytes[header..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// `fslens run --devices i,i` equals the one-device run: the exact sampler's draws identical
/// (its weights are the float64 log-likelihoods, not the engine's), fsr within 1e-5 relative;
/// summary.json names both devices. Then the command-line refusals.
#[test]
fn run_on_two_devices_equals_one_device() {
    if !have_gpu("run_on_two_devices_equals_one_device") {
        return;
    }
    let dir = scratch_dir("devices-run");
    let config = dir.join("devices.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let run = |name: &str, extra: &[&str]| {
        let out = dir.join(name);
        let mut args = vec!["run", s(&config), "--out", s(&out), "--quiet"];
        args.extend_from_slice(&["--backend", "gpu", "--storage", "f32"]);
        args.extend_from_slice(extra);
        fslens(&args);
        out
    };
    let one = run("one", &[]);
    let pair = same_adapter(2).to_string();
    let two = run("two", &["--devices", &pair]);
    let (e1, e2) = (
        npy(&one.join("samples_exact.npy")),
        npy(&two.join("samples_exact.npy")),
    );
    assert_eq!(e1, e2, "exact draws differ between one and two devices");
    let (f1, f2) = (
        npy(&one.join("samples_fsr.npy")),
        npy(&two.join("samples_fsr.npy")),
    );
    let scale = f1.iter().fold(0.0f32, |a, &v| a.max(v.abs()));
    let diff = f1
        .iter()
        .zip(&f2)
        .fold(0.0f32, |a, (u, v)| a.max((u - v).abs()));
    eprintln!("fsr on two devices vs one: max |Δ| = {diff:e}, max |x| = {scale}");
    assert!(
        diff <= 1e-5 * scale,
        "fsr moved by {diff} (scale {scale}) between one and two devices"
    );
    let summary = common::read_json(&two.join("summary.json"));
    let backend = summary["backend"].as_str().unwrap_or_default().to_string();
    assert!(
        backend.starts_with("2 shards: atoms 0..") && backend.matches("on gpu: ").count() == 2,
        "{backend}"
    );
    let recorded = std::fs::read_to_string(two.join("config.toml")).unwrap();
    assert!(
        recorded.contains(&format!("devices = \"{pair}\"")),
        "{recorded}"
    );

    // Refusals: devices on the CPU backend, an adapter that does not exist, a bad spelling.
    let out = dir.join("bad");
    let base = ["run", s(&config), "--out", s(&out), "--quiet"];
    let with = |extra: &[&'static str]| {
        let mut a: Vec<String> = base.iter().map(|v| v.to_string()).collect();
        a.extend(extra.iter().map(|v| v.to_string()));
        a
    };
    fslens_fails(
        &with(&["--backend", "cpu", "--devices", "0,0"]),
        &["devices", "cpu", "--backend gpu"],
    );
    fslens_fails(
        &with(&["--backend", "gpu", "--devices", "0,200"]),
        &["devices", "adapter 200", "fslens info"],
    );
    fslens_fails(&with(&["--devices", "first"]), &["--devices", "\"all\""]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `fslens info` numbers the adapters, which is what `--devices` takes.
#[test]
fn info_numbers_the_adapters() {
    if !have_gpu("info_numbers_the_adapters") {
        return;
    }
    let out = fslens(&["info"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("gpu adapter 0"), "{text}");
    assert!(text.contains("--devices"), "{text}");
    let json = fslens(&["info", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["adapters"][0]["index"], 0, "{v}");
}
