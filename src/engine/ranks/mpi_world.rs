//! MPI as the ranks' [`Transport`] (the `mpi` cargo feature): the system's MPI through the `mpi`
//! crate, MPI_COMM_WORLD, all-gathers of float64.

use std::sync::Mutex;

use mpi::Threading;
use mpi::datatype::PartitionMut;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use super::Transport;
use crate::{Error, Result};

/// MPI_COMM_WORLD of this process. The communicator is used under a lock: MPI is initialised
/// at MPI_THREAD_SERIALIZED (any thread may call, one at a time), and every collective runs
/// whole under the lock.
pub struct MpiWorld {
    comm: Mutex<SimpleCommunicator>,
    rank: usize,
    size: usize,
    library: String,
}

// SAFETY: the communicator handle is only touched under `comm`'s lock, and MPI was initialised
// at MPI_THREAD_SERIALIZED (checked in `start`), which allows calls from any thread as long as
// no two overlap.
unsafe impl Send for MpiWorld {}
unsafe impl Sync for MpiWorld {}

/// MPI initialised for this process: dropping it calls MPI_Finalize, which every rank must
/// reach (the binary drops it at the end of `main`).
pub struct Launch {
    _universe: Universe,
}

/// Initialises MPI (MPI_THREAD_SERIALIZED) and returns the world.
pub fn start() -> Result<(Launch, MpiWorld)> {
    let Some((universe, threading)) = mpi::initialize_with_threading(Threading::Serialized) else {
        return Err(Error::input(
            "MPI: MPI_Init failed or MPI was already initialised",
        ));
    };
    if matches!(threading, Threading::Single | Threading::Funneled) {
        return Err(Error::input(format!(
            "MPI: the library grants thread level {threading:?}; fslens calls MPI from its \
             worker threads and needs MPI_THREAD_SERIALIZED (use an MPI built with thread \
             support, e.g. Debian's Open MPI)"
        )));
    }
    let comm = universe.world();
    let library = mpi::environment::library_version()
        .ok()
        .and_then(|v| v.split([',', '\n']).next().map(|s| s.trim().to_string()))
        .unwrap_or_else(|| "unknown library".into());
    let world = MpiWorld {
        rank: comm.rank() as usize,
        size: comm.size() as usize,
        comm: Mutex::new(comm),
        library,
    };
    Ok((
        Launch {
            _universe: universe,
        },
        world,
    ))
}

impl MpiWorld {
    /// Ends every rank of the job with exit status `code` (MPI_Abort): one rank's error must
    /// not leave the others waiting in a collective.
    pub fn abort(&self, code: i32) -> ! {
        self.comm
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .abort(code)
    }
}

impl Transport for MpiWorld {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn all_gather(&self, values: &[f64]) -> Result<Vec<Vec<f64>>> {
        let comm = self.comm.lock().unwrap_or_else(|e| e.into_inner());
        let len = mpi::Count::try_from(values.len()).map_err(|_| {
            Error::input(format!(
                "MPI: {} numbers in one message exceed MPI's count (use fewer rows a pass)",
                values.len()
            ))
        })?;
        let mut counts: Vec<mpi::Count> = vec![0; self.size];
        comm.all_gather_into(&len, &mut counts[..]);
        let mut displs = Vec::with_capacity(self.size);
        let mut total: mpi::Count = 0;
        for &c in &counts {
            displs.push(total);
            total = total.checked_add(c).ok_or_else(|| {
                Error::input("MPI: a gathered pass exceeds MPI's count (use fewer rows a pass)")
            })?;
        }
        let mut all = vec![0.0f64; total as usize];
        {
            let mut part = PartitionMut::new(&mut all[..], &counts[..], &displs[..]);
            comm.all_gather_varcount_into(values, &mut part);
        }
        Ok(counts
            .iter()
            .zip(&displs)
            .map(|(&c, &o)| all[o as usize..(o + c) as usize].to_vec())
            .collect())
    }

    fn describe(&self) -> String {
        format!("MPI ({})", self.library)
    }
}
