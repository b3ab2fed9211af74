//! The atoms split across the ranks of an MPI job (several machines), one shard per rank.
//!
//! SPMD: every rank runs the same command on the same config and data (a run is deterministic
//! given its seed); only the engine is distributed. Rank r's [`RankBackend`] holds a local
//! backend (CPU or GPU, as configured) over its contiguous shard [o_r, o_{r+1}) of
//! [`even_split`]`(N, size)`. A pass runs the local backend, all-gathers every rank's per-row
//! results (per weight set and row: log Z, ESS, max weight, entropy and the D mean values; per
//! row: the nearest atom and its distance — B × (S·(D + 4) + 2) numbers a rank) and merges them
//! with [`merge_passes`]; C·g gathers the shards' own products C_r g (B × D a rank) and merges
//! them with [`merge_covariance`] (law of total covariance, [`super::shards`]). Every rank merges
//! the same parts in the same order, so every rank gets bit-identical results and the samplers'
//! states stay identical on all ranks without further messages.
//!
//! The transport is a trait ([`Transport`]): MPI in the binary built with the `mpi` feature
//! ([`mpi_world`]), and [`LocalGroup`] (threads of one process) for the tests of the gather and
//! merge without `mpirun`. [`install`] makes a transport the process's world: from then on
//! [`super::create`] builds a [`RankBackend`] over this rank's shard whenever the world has more
//! than one rank.

#[cfg(feature = "mpi")]
pub mod mpi_world;

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier, Mutex, OnceLock};

use sha2::{Digest, Sha256};

use super::shards::{KeptParts, even_split, merge_passes, merge_shard_products};
use super::{Backend, BiasId, Neighbor, Noise, PassOutput, RowStats, WeightSet, WeightedMean};
use crate::{Error, Result};

/// How the ranks of a job exchange numbers. Every call is collective: all ranks make the same
/// calls in the same order (they run the same deterministic program), or the job hangs.
pub trait Transport: Send + Sync {
    /// This process's rank, 0 ≤ rank < size.
    fn rank(&self) -> usize;
    /// The number of ranks.
    fn size(&self) -> usize;
    /// Every rank's `values` (lengths may differ), in rank order, on every rank.
    fn all_gather(&self, values: &[f64]) -> Result<Vec<Vec<f64>>>;
    /// e.g. `MPI (Open MPI v4.1.4)`.
    fn describe(&self) -> String;
}

static WORLD: OnceLock<Arc<dyn Transport>> = OnceLock::new();

/// Makes `world` this process's world (once; the binary does it before any work when it was
/// launched as one of several ranks).
pub fn install(world: Arc<dyn Transport>) -> Result<()> {
    WORLD
        .set(world)
        .map_err(|_| Error::input("the MPI world is already installed"))
}

/// The installed world, when there is one with more than one rank.
pub fn world() -> Option<&'static Arc<dyn Transport>> {
    WORLD.get().filter(|w| w.size() > 1)
}

/// This process's rank (0 without a world).
pub fn rank() -> usize {
    world().map_or(0, |w| w.rank())
}

/// The ranks a launcher started, from its environment, and the variable that says so: Open MPI's
/// `mpirun` (OMPI_COMM_WORLD_SIZE), Slurm's `srun` (SLURM_STEP_NUM_TASKS, not SLURM_NTASKS:
/// a batch script's own shell has that too), or a PMI/PMIx launcher (PMI_SIZE, PMIX_SIZE).
/// None for a plain start (or a launcher of one rank).
pub fn launcher_size() -> Option<(usize, &'static str)> {
    [
        "OMPI_COMM_WORLD_SIZE",
        "SLURM_STEP_NUM_TASKS",
        "PMI_SIZE",
        "PMIX_SIZE",
    ]
    .into_iter()
    .find_map(|var| {
        let n: usize = std::env::var(var).ok()?.trim().parse().ok()?;
        (n > 1).then_some((n, var))
    })
}

/// How the atoms are split over the world's ranks, for summary.json: None without a world.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RankLayout {
    /// The number of ranks.
    pub ranks: usize,
    /// o_0 = 0 < … < o_size = N: rank r holds atoms [o_r, o_{r+1}).
    pub offsets: Vec<usize>,
    /// e.g. `MPI (Open MPI v4.1.4)`.
    pub transport: String,
}

/// The split of `atoms` over the installed world's ranks (None without a world).
pub fn layout(atoms: usize) -> Option<RankLayout> {
    let w = world()?;
    Some(RankLayout {
        ranks: w.size(),
        offsets: even_split(atoms, w.size()).ok()?,
        transport: w.describe(),
    })
}

/// Stops the job unless every rank passes the same bytes (hashed): `what` names them in the
/// error, which every rank returns (the ranks that differ from rank 0 are listed).
pub fn check_same(world: &dyn Transport, what: &str, bytes: &[u8]) -> Result<()> {
    let digest = Sha256::digest(bytes);
    let words: Vec<f64> = digest
        .chunks_exact(4)
        .map(|c| f64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
        .collect();
    let all = world.all_gather(&words)?;
    let differ: Vec<String> = (1..all.len())
        .filter(|&r| all[r] != all[0])
        .map(|r| r.to_string())
        .collect();
    if differ.is_empty() {
        return Ok(());
    }
    Err(Error::input(format!(
        "MPI: rank(s) {} of {} differ from rank 0 in {what}: every rank must run the same \
         command on the same config and data files (copy them to every node, or put them on a \
         shared file system)",
        differ.join(", "),
        all.len()
    )))
}

/// The atoms' fingerprint bytes: N, D and every value's bits.
fn atoms_fingerprint(images: &[f32], d: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(16 + images.len() * 4);
    bytes.extend_from_slice(&(images.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&(d as u64).to_le_bytes());
    for v in images {
        bytes.extend_from_slice(&v.to_bits().to_le_bytes());
    }
    bytes
}

/// Builds this rank's backend over the whole set `images` (N × d; every rank holds it):
/// checks that every rank holds the same atoms, builds the local backend over rank r's shard
/// with `local`, and joins the ranks.
pub fn build(
    world: Arc<dyn Transport>,
    images: &[f32],
    d: usize,
    local: impl FnOnce(&[f32]) -> Result<Box<dyn Backend>>,
) -> Result<RankBackend> {
    check_same(world.as_ref(), "the atoms", &atoms_fingerprint(images, d))?;
    let n = images.len() / d.max(1);
    let offsets = even_split(n, world.size())?;
    let r = world.rank();
    let shard = local(&images[offsets[r] * d..offsets[r + 1] * d])?;
    RankBackend::new(world, shard, offsets)
}

/// One rank's part of a pass, flattened for the transport: per set and row the four
/// statistics then the D mean values, then per row the nearest atom's index and distance.
fn encode(pass: &PassOutput) -> Vec<f64> {
    let mut out = Vec::new();
    for set in &pass.sets {
        let d = set.means.len() / set.stats.len().max(1);
        for (b, st) in set.stats.iter().enumerate() {
            out.extend([st.log_norm, st.ess, st.max_weight, st.entropy]);
            out.extend(set.means[b * d..(b + 1) * d].iter().map(|&m| f64::from(m)));
        }
    }
    for nb in &pass.nearest {
        // Indices below 2^53 are exact in float64.
        out.extend([nb.index as f64, nb.dist2]);
    }
    out
}

/// The inverse of [`encode`] for `sets` weight sets of `rows` rows of `d` values.
fn decode(values: &[f64], sets: usize, rows: usize, d: usize) -> Result<PassOutput> {
    let want = sets * rows * (d + 4) + 2 * rows;
    if values.len() != want {
        return Err(Error::input(format!(
            "MPI: a rank sent {} numbers for a pass where {want} were expected (ranks out of step)",
            values.len()
        )));
    }
    let mut it = values.chunks_exact(d + 4);
    let mut out = Vec::with_capacity(sets);
    for _ in 0..sets {
        let mut means = Vec::with_capacity(rows * d);
        let mut stats = Vec::with_capacity(rows);
        for row in it.by_ref().take(rows) {
            stats.push(RowStats {
                log_norm: row[0],
                ess: row[1],
                max_weight: row[2],
                entropy: row[3],
            });
            // Values that were float32 before the widening: the cast back is exact.
            means.extend(row[4..].iter().map(|&m| m as f32));
        }
        out.push(WeightedMean { means, stats });
    }
    let nearest = values[sets * rows * (d + 4)..]
        .chunks_exact(2)
        .map(|p| Neighbor {
            index: p[0] as usize,
            dist2: p[1],
        })
        .collect();
    Ok(PassOutput { sets: out, nearest })
}

/// This rank's view of a backend whose atoms are split over the ranks (module docs).
pub struct RankBackend {
    world: Arc<dyn Transport>,
    local: Box<dyn Backend>,
    /// offsets[r] = first atom of rank r; offsets[size] = N.
    offsets: Vec<usize>,
    d: usize,
    /// The local backend's id of each bias registered here, by this backend's id.
    biases: BTreeMap<usize, BiasId>,
    next_bias: usize,
    /// Every rank's part of the last pass (gathered), kept for C·g on the same particles.
    kept: KeptParts,
}

impl RankBackend {
    /// Joins this rank's `local` backend (atoms [offsets[r], offsets[r + 1])) to the others'.
    pub fn new(
        world: Arc<dyn Transport>,
        local: Box<dyn Backend>,
        offsets: Vec<usize>,
    ) -> Result<RankBackend> {
        let r = world.rank();
        if offsets.len() != world.size() + 1 || local.atoms() != offsets[r + 1] - offsets[r] {
            return Err(Error::input(format!(
                "MPI: rank {r} holds {} atoms, but the split {offsets:?} gives it {}",
                local.atoms(),
                offsets
                    .get(r + 1)
                    .zip(offsets.get(r))
                    .map_or(0, |(b, a)| b - a)
            )));
        }
        let d = local.dim();
        Ok(RankBackend {
            world,
            local,
            offsets,
            d,
            biases: BTreeMap::new(),
            next_bias: 0,
            kept: KeptParts::default(),
        })
    }

    /// o_0 = 0 < … < o_size = N: rank r holds atoms [o_r, o_{r+1}).
    pub fn offsets(&self) -> &[usize] {
        &self.offsets
    }

    fn local_set(&self, set: WeightSet) -> Result<WeightSet> {
        match set {
            WeightSet::Prior => Ok(WeightSet::Prior),
            WeightSet::Biased(BiasId(id)) => match self.biases.get(&id) {
                Some(&local) => Ok(WeightSet::Biased(local)),
                None => Err(Error::input(format!(
                    "rank backend: bias id {id} is not registered (never, or removed)"
                ))),
            },
        }
    }

    /// Every rank's pass on `x`, gathered (in rank order, identical on every rank).
    fn gathered_passes(
        &self,
        x: &[f32],
        noise: Noise,
        sets: &[WeightSet],
    ) -> Result<Vec<PassOutput>> {
        let local_sets: Vec<WeightSet> = sets
            .iter()
            .map(|&s| self.local_set(s))
            .collect::<Result<_>>()?;
        let mine = self.local.weighted_means(x, noise, &local_sets)?;
        let rows = x.len() / self.d.max(1);
        self.world
            .all_gather(&encode(&mine))?
            .iter()
            .map(|v| decode(v, sets.len(), rows, self.d))
            .collect()
    }
}

impl Backend for RankBackend {
    fn describe(&self) -> String {
        format!(
            "{} ranks over {} ({} atoms a rank): rank {} {}",
            self.world.size(),
            self.world.describe(),
            self.offsets[1] - self.offsets[0],
            self.world.rank(),
            self.local.describe()
        )
    }

    fn atoms(&self) -> usize {
        self.offsets[self.world.size()]
    }

    fn dim(&self) -> usize {
        self.d
    }

    fn add_bias(&mut self, bias: &[f64]) -> Result<BiasId> {
        super::check_bias("rank", bias, self.atoms())?;
        let r = self.world.rank();
        let local = self
            .local
            .add_bias(&bias[self.offsets[r]..self.offsets[r + 1]])?;
        let id = self.next_bias;
        self.next_bias += 1;
        self.biases.insert(id, local);
        Ok(BiasId(id))
    }

    fn remove_bias(&mut self, id: BiasId) -> Result<()> {
        let Some(local) = self.biases.remove(&id.0) else {
            return Err(Error::input(format!(
                "rank backend: bias id {} is not registered (never, or removed)",
                id.0
            )));
        };
        self.local.remove_bias(local)?;
        self.kept.clear();
        Ok(())
    }

    fn live_biases(&self) -> usize {
        self.biases.len()
    }

    fn weighted_means(&self, x: &[f32], noise: Noise, sets: &[WeightSet]) -> Result<PassOutput> {
        let parts = self.gathered_passes(x, noise, sets)?;
        let out = merge_passes(&parts, &self.offsets, self.d);
        self.kept.keep(x, noise, sets, parts);
        Ok(out)
    }

    fn covariance_products(
        &self,
        x: &[f32],
        noise: Noise,
        set: WeightSet,
        means: &[f32],
        g: &[f32],
    ) -> Result<Vec<f32>> {
        // The same decision on every rank: the kept parts are identical everywhere.
        let local_set = self.local_set(set)?;
        let fresh = || self.gathered_passes(x, noise, &[set]);
        self.kept.with_set(x, noise, set, fresh, |of_set| {
            let r = self.world.rank();
            let mine = self
                .local
                .covariance_products(x, noise, local_set, &of_set[r].means, g)?;
            let wide: Vec<f64> = mine.iter().map(|&v| f64::from(v)).collect();
            let gathered = self.world.all_gather(&wide)?;
            if let Some(bad) = gathered.iter().position(|v| v.len() != x.len()) {
                return Err(Error::input(format!(
                    "MPI: rank {bad} sent {} numbers for C·g where {} were expected",
                    gathered[bad].len(),
                    x.len()
                )));
            }
            let cgs: Vec<Vec<f32>> = gathered
                .iter()
                .map(|v| v.iter().map(|&c| c as f32).collect())
                .collect();
            Ok(merge_shard_products(of_set, &cgs, means, g, self.d))
        })
    }

    fn device_seconds(&self) -> Option<f64> {
        self.local.device_seconds()
    }

    fn device_seconds_by_kernel(&self) -> Vec<(&'static str, f64)> {
        self.local.device_seconds_by_kernel()
    }
}

/// The ranks of a job as threads of one process: the transport of the tests (and of anyone
/// who wants the rank layer without MPI). [`LocalGroup::ranks`] returns one transport per rank;
/// each rank's calls must come from its own thread.
pub struct LocalGroup {
    rank: usize,
    shared: Arc<Exchange>,
}

struct Exchange {
    slots: Mutex<Vec<Vec<f64>>>,
    barrier: Barrier,
}

impl LocalGroup {
    /// `size` transports, rank 0 first.
    pub fn ranks(size: usize) -> Vec<Arc<dyn Transport>> {
        let shared = Arc::new(Exchange {
            slots: Mutex::new(vec![Vec::new(); size]),
            barrier: Barrier::new(size),
        });
        (0..size)
            .map(|rank| {
                Arc::new(LocalGroup {
                    rank,
                    shared: shared.clone(),
                }) as Arc<dyn Transport>
            })
            .collect()
    }
}

impl Transport for LocalGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.shared
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    fn all_gather(&self, values: &[f64]) -> Result<Vec<Vec<f64>>> {
        self.shared.slots.lock().unwrap_or_else(|e| e.into_inner())[self.rank] = values.to_vec();
        // Everyone has written before anyone reads, and everyone has read before the next
        // round writes.
        self.shared.barrier.wait();
        let all = self
            .shared
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        self.shared.barrier.wait();
        Ok(all)
    }

    fn describe(&self) -> String {
        "threads of one process".into()
    }
}
