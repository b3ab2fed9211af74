//! Runs the CPU fsr-step benchmark and prints one JSON line per case
//! (`cargo run --release --example bench_cpu -- [B ...]`). `fslens bench` calls the same code.
fn main() -> anyhow::Result<()> {
    let mut opts = fslens::bench::BenchOptions::default();
    let batches: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    if !batches.is_empty() {
        opts.batches = batches;
    }
    if let Ok(r) = std::env::var("FSLENS_BENCH_REPEATS") {
        opts.repeats = r.parse()?;
    }
    if let Ok(t) = std::env::var("FSLENS_BENCH_THREADS") {
        opts.threads = Some(t.parse()?);
    }
    if let Ok(c) = std::env::var("FSLENS_BENCH_CHUNK") {
        opts.blocking = Some((c.parse()?, 256));
    }
    if std::env::var("FSLENS_BENCH_NO_BASELINE").is_ok() {
        opts.baseline = false;
    }
    if let Ok(t) = std::env::var("FSLENS_BENCH_T") {
        opts.times = vec![t.parse()?];
    }
    fslens::bench::run(&opts, &mut |r| {
        println!("{}", serde_json::to_string(r).unwrap())
    })?;
    Ok(())
}
