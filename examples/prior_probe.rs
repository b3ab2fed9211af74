use fslens::engine::{Backend, Weights, cpu::CpuBackend};
fn main() {
    let n = 60000; let d = 784;
    let mut s = 12345u64;
    let mut r = || { s ^= s << 13; s ^= s >> 7; s ^= s << 17; (s % 256) as f32 / 127.5 - 1.0 };
    let atoms: Vec<f32> = (0..n*d).map(|_| r()).collect();
    let be = CpuBackend::from_vec(atoms, d).unwrap().with_blocking(256, 256).unwrap();
    for &t in &[0.05, 0.3, 0.9] {
        let noise = fslens::diffusion::Schedule::default().noise(t);
        let x: Vec<f32> = (0..256*d).map(|i| (noise.s * be.atom_store()[(i/d)*7*d + i%d] as f64 + noise.v.sqrt()*(r() as f64)*1.7) as f32).collect();
        let t0 = std::time::Instant::now();
        let o = be.weighted_means(&x, noise, &[Weights::Prior]).unwrap();
        println!("t={t} {:.3}s ess0={:.1}", t0.elapsed().as_secs_f64(), o.sets[0].stats[0].ess);
    }
}
