//! Folder decoding throughput, serial vs parallel, on a generated folder of PNGs
//! (`cargo run --release --example folder_decode -- [COUNT] [SIDE] [REPEATS]`, defaults 5000
//! 64×64 colour images, 3 repeats). Prints one JSON line per mode with the best time of the
//! repeats and images/s; the two data sets are checked to be identical bit for bit.
use std::time::Instant;

use fslens::data::folder::{self, Decoding, FolderOptions};

fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let count = args.first().copied().unwrap_or(5000);
    let side = args.get(1).copied().unwrap_or(64) as u32;
    let repeats = args.get(2).copied().unwrap_or(3).max(1);
    let dir = std::env::temp_dir().join(format!("fslens-folder-decode-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // Smooth gradients plus a per-image pattern: PNG compresses them like photographs
    // compress, not like flat fills.
    for i in 0..count as u32 {
        image::RgbImage::from_fn(side, side, |x, y| {
            let h = (x.wrapping_mul(2654435761) ^ y.wrapping_mul(40503) ^ i.wrapping_mul(97))
                .wrapping_mul(2246822519)
                >> 29;
            image::Rgb([
                (x * 4).wrapping_add(i) as u8,
                (y * 3 + h) as u8,
                ((x + y) * 2).wrapping_add(i.wrapping_mul(7)) as u8,
            ])
        })
        .save(dir.join(format!("{i:06}.png")))?;
    }
    let threads = rayon::current_num_threads();
    let mut sets = Vec::new();
    for (mode, decoding) in [
        ("serial", Decoding::Serial),
        ("parallel", Decoding::Parallel),
    ] {
        let mut best = f64::INFINITY;
        let mut ds = None;
        for _ in 0..repeats {
            let t = Instant::now();
            ds = Some(folder::load_with(
                &dir,
                &FolderOptions::default(),
                decoding,
                &mut |_, _| {},
            )?);
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "{}",
            serde_json::json!({"mode": mode, "images": count, "side": side, "threads": threads,
                "seconds": best, "images_per_s": count as f64 / best})
        );
        sets.push(ds.expect("one repeat"));
    }
    let same = sets[0].images.len() == sets[1].images.len()
        && sets[0]
            .images
            .iter()
            .zip(&sets[1].images)
            .all(|(a, b)| a.to_bits() == b.to_bits());
    std::fs::remove_dir_all(&dir)?;
    anyhow::ensure!(same, "serial and parallel decoding differ");
    Ok(())
}
