//! The `gemm` crate calls of the CPU pass: the distance products X·A_cᵀ (two layouts, by row
//! count) and the weighted sums W·A_c. Single-threaded: the pass runs its tasks in parallel.

use super::CpuBackend;
use super::pass::ChunkBuffers;

/// GEMM left operands with at most this many rows take the column-major-output path.
const SMALL_GEMM_ROWS: usize = 64;

/// A matrix operand of the `gemm` crate: its pointer and (row stride, column stride).
#[derive(Clone, Copy)]
struct Strided<P> {
    ptr: P,
    rs: usize,
    cs: usize,
}

impl<P> Strided<P> {
    fn new(ptr: P, rs: usize, cs: usize) -> Self {
        Strided { ptr, rs, cs }
    }
}

/// dst (m × n) = [dst +] lhs (m × k) · rhs (k × n) in float32, single-threaded (the pass runs
/// its tasks in parallel): the one call of the `gemm` crate.
///
/// # Safety
/// Each operand must address its whole matrix through its strides.
unsafe fn gemm_strided(
    (m, n, k): (usize, usize, usize),
    dst: Strided<*mut f32>,
    accumulate: bool,
    lhs: Strided<*const f32>,
    rhs: Strided<*const f32>,
) {
    let stride = |v: usize| v as isize;
    unsafe {
        ::gemm::gemm(
            m,
            n,
            k,
            dst.ptr,
            stride(dst.cs),
            stride(dst.rs),
            accumulate,
            lhs.ptr,
            stride(lhs.cs),
            stride(lhs.rs),
            rhs.ptr,
            stride(rhs.cs),
            stride(rhs.rs),
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            ::gemm::Parallelism::None,
        );
    }
}

/// Row-major dst (m × n, row stride `dst_rs`) = [dst +] lhs (m × k) · rhs (k × n), where lhs
/// and rhs are given by (row stride, column stride).
///
/// # Safety
/// As [`gemm_strided`].
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemm_rm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: *const f32,
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: *const f32,
    rhs_rs: usize,
    rhs_cs: usize,
) {
    let (dst, lhs, rhs) = (
        Strided::new(dst, dst_rs, 1),
        Strided::new(lhs, lhs_rs, lhs_cs),
        Strided::new(rhs, rhs_rs, rhs_cs),
    );
    // SAFETY: the caller's.
    unsafe { gemm_strided((m, n, k), dst, accumulate, lhs, rhs) }
}

impl ChunkBuffers {
    /// dots[r·c + i] = ⟨lhs_r, a_{i0+i}⟩ for the m rows of `lhs` (row-major m × D) and the c
    /// atoms of the chunk.
    ///
    /// # Safety
    /// `lhs` must point at m·D readable values.
    pub(super) unsafe fn products(
        &mut self,
        be: &CpuBackend,
        lhs: *const f32,
        m: usize,
        i0: usize,
        c: usize,
    ) {
        let d = be.d;
        let atoms = be.chunk_atoms(&self.decoded, i0, c).as_ptr();
        if m <= SMALL_GEMM_ROWS {
            // Few rows: a column-major destination keeps the GEMM in its m = rows orientation,
            // where the atoms (rhs, unit row stride) are read in place instead of being packed
            // for every chunk; packing them cost more than the 16-row product itself.
            self.dots_cm.resize(m * c, 0.0);
            let dst = Strided {
                ptr: self.dots_cm.as_mut_ptr(),
                rs: 1,
                cs: m,
            };
            let lhs = Strided {
                ptr: lhs,
                rs: d,
                cs: 1,
            };
            let rhs = Strided {
                ptr: atoms,
                rs: 1,
                cs: d,
            };
            // SAFETY: dots_cm holds m×c, lhs m×d, atoms from row i0 at least c×d values.
            unsafe { gemm_strided((m, c, d), dst, false, lhs, rhs) };
            for r in 0..m {
                for (i, o) in self.dots[r * c..(r + 1) * c].iter_mut().enumerate() {
                    *o = self.dots_cm[i * m + r];
                }
            }
        } else {
            // SAFETY: dots holds m×c, lhs m×d, atoms from row i0 at least c×d values.
            unsafe {
                gemm_rm(
                    m,
                    c,
                    d,
                    self.dots.as_mut_ptr(),
                    c,
                    false,
                    lhs,
                    d,
                    1,
                    atoms,
                    1,
                    d,
                );
            }
        }
    }
}
