//! The binary as one of several MPI ranks (README "Several machines (MPI)").
//!
//! MPI is on when the binary was built with the `mpi` feature AND a launcher started several
//! ranks ([`fslens::engine::ranks::launcher_size`]: mpirun's OMPI_COMM_WORLD_SIZE, srun's
//! SLURM_STEP_NUM_TASKS, PMI_SIZE, PMIX_SIZE above 1). A default build under such a launcher
//! refuses to run: N copies would each run the whole job and write the same folder. With MPI
//! on, every rank checks that it runs the same command on the same files as rank 0, rank 0
//! alone prints and writes, and an error on any rank ends the whole job (MPI_Abort, status 1)
//! instead of leaving the others waiting in a collective.

use fslens::Result;

/// MPI for this process, when on; dropping it finalises MPI.
pub struct Ranks {
    #[cfg(feature = "mpi")]
    mpi: Option<(
        fslens::engine::ranks::mpi_world::Launch,
        std::sync::Arc<fslens::engine::ranks::mpi_world::MpiWorld>,
    )>,
}

impl Ranks {
    /// Starts MPI when a launcher started several ranks (module docs).
    pub fn start() -> Result<Ranks> {
        let Some((n, var)) = fslens::engine::ranks::launcher_size() else {
            return Ok(Ranks::off());
        };
        Ranks::start_mpi(n, var)
    }

    fn off() -> Ranks {
        Ranks {
            #[cfg(feature = "mpi")]
            mpi: None,
        }
    }

    #[cfg(not(feature = "mpi"))]
    fn start_mpi(n: usize, var: &str) -> Result<Ranks> {
        Err(fslens::Error::input(format!(
            "started as one of {n} ranks ({var}={n}), but this fslens was built without MPI: \
             every rank would run the whole job and write the same output folder. Rebuild with \
             `cargo build --release --features mpi` (needs an MPI library such as Open MPI, and \
             libclang), or start a single process without mpirun/srun"
        )))
    }

    #[cfg(feature = "mpi")]
    fn start_mpi(_n: usize, _var: &str) -> Result<Ranks> {
        use fslens::engine::ranks::mpi_world;
        let (launch, world) = mpi_world::start()?;
        let world = std::sync::Arc::new(world);
        fslens::engine::ranks::install(world.clone())?;
        if fslens::engine::ranks::world().is_some() {
            // A panic on one rank must end the job too, not leave the others in a collective.
            let on_panic = world.clone();
            let default = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                default(info);
                on_panic.abort(1);
            }));
        }
        Ok(Ranks {
            mpi: Some((launch, world)),
        })
    }

    /// (rank, size) when several ranks run.
    pub fn world(&self) -> Option<(usize, usize)> {
        fslens::engine::ranks::world().map(|w| (w.rank(), w.size()))
    }

    /// Stops the job unless every rank runs the same command line on the same input files
    /// (every argument that names a readable file is read).
    pub fn check_command(&self) -> Result<()> {
        let Some(world) = fslens::engine::ranks::world() else {
            return Ok(());
        };
        let mut bytes = Vec::new();
        for arg in std::env::args_os().skip(1) {
            bytes.extend_from_slice(arg.as_encoded_bytes());
            bytes.push(0);
            let path = std::path::Path::new(&arg);
            if path.is_file()
                && let Ok(content) = std::fs::read(path)
            {
                bytes.extend_from_slice(&content);
                bytes.push(0);
            }
        }
        fslens::engine::ranks::check_same(
            world.as_ref(),
            "the command line or the files it names",
            &bytes,
        )
    }

    /// After an error: under MPI, ends every rank with status 1 (the error was printed); else
    /// returns.
    pub fn abort_on_error(&self) {
        #[cfg(feature = "mpi")]
        if let Some((_, world)) = &self.mpi
            && fslens::engine::ranks::world().is_some()
        {
            use std::io::Write;
            let _ = std::io::stderr().flush();
            let _ = std::io::stdout().flush();
            world.abort(1);
        }
    }
}
