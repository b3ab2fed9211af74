// Fused pass over one chunk of atoms (design §3, §7): for a tile of TR particle rows against
// the atoms of this workgroup's range, streamed TA at a time and DK dimensions at a time
// through workgroup memory:
//
//   dist_bj = Σ_d (x_bd − s a_jd)²                    (direct differences, never the expansion)
//   ℓ_bkj   = −dist_bj / (2v) + β_kj                   (β stored shifted by its max)
//   online log-sum-exp per (row b, set k) with running max M:
//     S0 = Σ e^{ℓ−M},  S2 = Σ e^{2(ℓ−M)},  SL = Σ e^{ℓ−M}(ℓ − M),  acc_d = Σ e^{ℓ−M} a_jd
//   terms with ℓ − M < −60 are exactly 0 (no subnormals, at most N·e⁻⁶⁰ of mass lost);
//   nearest atom per row (smallest dist, lowest index on ties).
//
// With COVARIANCE = true the same pass computes, for one set and the caller's mean m_b,
//   c_j = e^{ℓ−M} ⟨a_j − m_b, g_b⟩,  SC = Σ c_j,  acc_d = Σ c_j (a_jd − m_bd)
// so that C·g = acc / S0 after the merge (differences taken directly: no cancellation).
//
// Kept distances (the σ-DPS family makes a prior pass, then a C·g pass over the same x):
// with KEEP = true a pass also writes dist_bj to `kept` (row-major, global row and atom
// indices); with KEPT = true (and COVARIANCE) the C·g pass reads them instead of recomputing
// them and forms the projections by expansion, as the CPU backend does,
//   c_j = e^{ℓ−M} (⟨a_j, g_b⟩ − ⟨m_b, g_b⟩),  SC = Σ c_j,  acc_d = Σ c_j a_jd,
// so C·g = (acc − m_b·SC) / S0 (the host subtracts m_b·SC/S0). Per pair and dimension that is
// 2 flops instead of 6.
//
// Each workgroup writes partial (M, S0, S2, SL, SC, acc) for its atom range; merge_partials.wgsl
// combines them exactly (rescaling by e^{M_p − M}). A range may be covered by several
// dispatches (`step_begin`, `step_len`): all but the first resume from the stored partials.
// The host does this on Mesa's llvmpipe, which stops every shader invocation after 65535 loop
// iterations in total (gallivm's loop limiter) and would otherwise silently skip atoms.

// 0 = f32 bits, 1 = u8 codes (four per word) decoded by a 256-entry table,
// 2 = f16 pairs (two per word, even column low) decoded exactly by unpack2x16float.
override STORAGE: u32 = 0u;
override COVARIANCE: bool = false;
override KEEP: bool = false;
override KEPT: bool = false;

const WG: u32 = 64u;        // threads per workgroup
const TR: u32 = 8u;         // particle rows per workgroup
const TA: u32 = 32u;        // atoms per tile
// Dimensions staged per step, a pipeline-overridable tile size (the host passes its value;
// more means fewer barriers, more workgroup memory: TA·(DK+1) + 3·TR·DK floats).
override DK: u32 = 32u;
// Row stride of sh_a is DK + 1, so that lanes reading different atoms at one dd hit
// different banks. The workgroup array lengths follow from DK:
override SH_A_LEN: u32 = 32u * (DK + 1u);  // TA × (DK + 1)
override SH_X_LEN: u32 = 8u * DK;          // TR × DK
const KMAX: u32 = 4u;       // bias sets per pass
const CUT: f32 = -60.0;     // e^{ℓ−M} for ℓ − M below this is 0
const NONE: f32 = -3.0e38;  // running max before any term

struct Params {
    rows: u32,        // particle rows in this block
    dim: u32,         // D
    nsets: u32,       // bias sets in this pass (1 with COVARIANCE)
    nparts: u32,      // partial slots over all chunks
    s: f32,
    inv2v: f32,       // 1 / (2v)
    stride: u32,      // u32 words per atom row
    row_base: u32,    // global index of this block's first row (kept distances)
    bias_off: vec4<u32>,  // offset of each set's bias in `bias`; 0xffffffff = prior
}

struct Chunk {
    n: u32,          // atoms in this chunk
    base: u32,       // global index of its first atom
    part_base: u32,  // partial slot of its first split
    per_split: u32,  // atoms per workgroup along x (a multiple of TA)
    step_begin: u32, // this dispatch covers atoms [step_begin, step_begin + step_len) of each
    step_len: u32,   //   split (multiples of TA)
    first: u32,      // 1: start fresh; 0: resume from the partials
    total: u32,      // N, the row length of `kept`
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<uniform> chunk: Chunk;
@group(0) @binding(2) var<storage, read> atoms: array<u32>;
@group(0) @binding(3) var<storage, read> xs: array<f32>;
// rows × D of g, then rows × D of m (covariance pass only); with KEPT then rows of ⟨m_b, g_b⟩.
@group(0) @binding(4) var<storage, read> gm: array<f32>;
@group(0) @binding(5) var<storage, read> bias: array<f32>;
@group(0) @binding(6) var<storage, read> table: array<f32>;
@group(0) @binding(7) var<storage, read_write> part_acc: array<f32>;
// per slot, row, set: M, S0, S2, SL, SC, unused
@group(0) @binding(8) var<storage, read_write> part_stats: array<f32>;
// per slot, row: nearest dist (f32 bits), global index
@group(0) @binding(9) var<storage, read_write> part_near: array<u32>;
// (row_base + b) · N + global atom index: dist_bj of the last KEEP pass.
@group(0) @binding(10) var<storage, read_write> kept: array<f32>;

var<workgroup> sh_a: array<f32, SH_A_LEN>;
var<workgroup> sh_x: array<f32, SH_X_LEN>;
var<workgroup> sh_g: array<f32, SH_X_LEN>;
var<workgroup> sh_m: array<f32, SH_X_LEN>;
var<workgroup> sh_dist: array<f32, 256>;    // TR × TA
var<workgroup> sh_proj: array<f32, 256>;    // TR × TA
var<workgroup> sh_w: array<f32, 1024>;      // KMAX × TR × TA coefficients
var<workgroup> sh_alpha: array<f32, 32>;    // KMAX × TR rescale factors
var<workgroup> sh_table: array<f32, 256>;

fn load_atom(j: u32, d: u32) -> f32 {
    if (STORAGE == 0u) {
        return bitcast<f32>(atoms[j * params.stride + d]);
    }
    if (STORAGE == 2u) {
        let h = unpack2x16float(atoms[j * params.stride + d / 2u]);
        return select(h.x, h.y, (d & 1u) == 1u);
    }
    let w = atoms[j * params.stride + d / 4u];
    return sh_table[(w >> ((d % 4u) * 8u)) & 0xffu];
}

@compute @workgroup_size(64)
fn pass_main(@builtin(local_invocation_index) lid: u32,
             @builtin(workgroup_id) wg: vec3<u32>) {
    let D = params.dim;
    let K = params.nsets;
    let row0 = wg.y * TR;
    let slot = chunk.part_base + wg.x;
    let split0 = wg.x * chunk.per_split;
    let a_begin = split0 + chunk.step_begin;
    let a_end = min(split0 + min(chunk.step_begin + chunk.step_len, chunk.per_split), chunk.n);
    let fresh = chunk.first == 1u;

    if (STORAGE == 1u) {
        for (var e = lid; e < 256u; e += WG) { sh_table[e] = table[e]; }
    }
    workgroupBarrier();
    // Zero this workgroup's accumulators; each d belongs to one thread for the whole pass.
    for (var r = 0u; r < TR; r++) {
        let b = row0 + r;
        if (b >= params.rows || !fresh) { break; }
        for (var k = 0u; k < K; k++) {
            let o = ((slot * params.rows + b) * K + k) * D;
            for (var d = lid; d < D; d += WG) { part_acc[o + d] = 0.0; }
        }
    }

    // Running state of the (row, set) this thread owns (lid < TR·K) and of its row's nearest.
    let own_r = lid % TR;
    let own_k = lid / TR;
    var m_run = NONE;
    var s0 = 0.0;
    var s2 = 0.0;
    var sl = 0.0;
    var sc = 0.0;
    var near_d = 3.4e38;
    var near_i = 0xffffffffu;
    if (!fresh) {
        let b_own = row0 + own_r;
        if (lid < TR * K && b_own < params.rows) {
            let o = ((slot * params.rows + b_own) * K + own_k) * 6u;
            m_run = part_stats[o];
            s0 = part_stats[o + 1u];
            s2 = part_stats[o + 2u];
            sl = part_stats[o + 3u];
            sc = part_stats[o + 4u];
        }
        if (lid < TR && row0 + lid < params.rows) {
            let o = (slot * params.rows + row0 + lid) * 2u;
            near_d = bitcast<f32>(part_near[o]);
            near_i = part_near[o + 1u];
        }
    }

    for (var a0 = a_begin; a0 < a_end; a0 += TA) {
        // Phase 1: distances (and projections) for TR × TA pairs, DK dimensions at a time.
        // Each thread owns a 2 × 2 register block, rows r0, r0 + 1 against atoms ja, ja + 16:
        // per dimension 2 atom and 2 particle loads feed 4 pairs (a warp's lanes read 16
        // consecutive atoms and 2 broadcast rows). Per pair the sum is the same ordered fma
        // chain over d as one pair per thread would run, so results do not depend on blocking.
        let r0 = (lid / 16u) * 2u;
        let ja = lid % 16u;
        let jb = ja + 16u;
        var d00 = 0.0;
        var d01 = 0.0;
        var d10 = 0.0;
        var d11 = 0.0;
        var p00 = 0.0;
        var p01 = 0.0;
        var p10 = 0.0;
        var p11 = 0.0;
        for (var d0 = 0u; d0 < D; d0 += DK) {
            for (var e = lid; e < TA * DK; e += WG) {
                let j = a0 + e / DK;
                let d = d0 + e % DK;
                var v = 0.0;
                if (j < a_end && d < D) { v = load_atom(j, d); }
                sh_a[(e / DK) * (DK + 1u) + e % DK] = v;
            }
            for (var e = lid; e < TR * DK; e += WG) {
                let b = row0 + e / DK;
                let d = d0 + e % DK;
                var xv = 0.0;
                var gv = 0.0;
                var mv = 0.0;
                if (b < params.rows && d < D) {
                    if (!KEPT) { xv = xs[b * D + d]; }
                    if (COVARIANCE) {
                        gv = gm[b * D + d];
                        if (!KEPT) { mv = gm[(params.rows + b) * D + d]; }
                    }
                }
                sh_x[e] = xv;
                sh_g[e] = gv;
                sh_m[e] = mv;
            }
            workgroupBarrier();
            let dn = min(DK, D - d0);
            let s = params.s;
            for (var dd = 0u; dd < dn; dd++) {
                let aa = sh_a[ja * (DK + 1u) + dd];
                let ab = sh_a[jb * (DK + 1u) + dd];
                if (!KEPT) {
                    let x0 = sh_x[r0 * DK + dd];
                    let x1 = sh_x[(r0 + 1u) * DK + dd];
                    let e00 = x0 - s * aa;
                    let e01 = x0 - s * ab;
                    let e10 = x1 - s * aa;
                    let e11 = x1 - s * ab;
                    d00 = fma(e00, e00, d00);
                    d01 = fma(e01, e01, d01);
                    d10 = fma(e10, e10, d10);
                    d11 = fma(e11, e11, d11);
                }
                if (KEPT) {
                    let g0 = sh_g[r0 * DK + dd];
                    let g1 = sh_g[(r0 + 1u) * DK + dd];
                    p00 = fma(aa, g0, p00);
                    p01 = fma(ab, g0, p01);
                    p10 = fma(aa, g1, p10);
                    p11 = fma(ab, g1, p11);
                } else if (COVARIANCE) {
                    let g0 = sh_g[r0 * DK + dd];
                    let g1 = sh_g[(r0 + 1u) * DK + dd];
                    let m0 = sh_m[r0 * DK + dd];
                    let m1 = sh_m[(r0 + 1u) * DK + dd];
                    p00 = fma(aa - m0, g0, p00);
                    p01 = fma(ab - m0, g0, p01);
                    p10 = fma(aa - m1, g1, p10);
                    p11 = fma(ab - m1, g1, p11);
                }
            }
            workgroupBarrier();
        }
        if (KEEP || KEPT) {
            // The pairs this thread owns, by global row and atom; pairs outside the block or
            // the range are never used (phase 2 reads j < tile_n, rows < params.rows).
            let ga = chunk.base + a0 + ja;
            let gb = chunk.base + a0 + jb;
            let b0 = row0 + r0;
            let o0 = (params.row_base + b0) * chunk.total;
            let o1 = o0 + chunk.total;
            let in_a = a0 + ja < a_end;
            let in_b = a0 + jb < a_end;
            let in_0 = b0 < params.rows;
            let in_1 = b0 + 1u < params.rows;
            if (KEEP) {
                if (in_0 && in_a) { kept[o0 + ga] = d00; }
                if (in_0 && in_b) { kept[o0 + gb] = d01; }
                if (in_1 && in_a) { kept[o1 + ga] = d10; }
                if (in_1 && in_b) { kept[o1 + gb] = d11; }
            } else {
                if (in_0 && in_a) { d00 = kept[o0 + ga]; }
                if (in_0 && in_b) { d01 = kept[o0 + gb]; }
                if (in_1 && in_a) { d10 = kept[o1 + ga]; }
                if (in_1 && in_b) { d11 = kept[o1 + gb]; }
            }
        }
        sh_dist[r0 * TA + ja] = d00;
        sh_dist[r0 * TA + jb] = d01;
        sh_dist[(r0 + 1u) * TA + ja] = d10;
        sh_dist[(r0 + 1u) * TA + jb] = d11;
        sh_proj[r0 * TA + ja] = p00;
        sh_proj[r0 * TA + jb] = p01;
        sh_proj[(r0 + 1u) * TA + ja] = p10;
        sh_proj[(r0 + 1u) * TA + jb] = p11;
        workgroupBarrier();

        // Phase 2: online log-sum-exp per (row, set); nearest per row.
        let tile_n = min(TA, a_end - a0);
        if (lid < TR * K) {
            let r = own_r;
            let k = own_k;
            let boff = params.bias_off[k];
            var tmax = NONE;
            for (var j = 0u; j < tile_n; j++) {
                var l = -sh_dist[r * TA + j] * params.inv2v;
                if (boff != 0xffffffffu) { l += bias[boff + chunk.base + a0 + j]; }
                tmax = max(tmax, l);
            }
            let m_new = max(m_run, tmax);
            var alpha = 0.0;
            if (s0 > 0.0 && m_run - m_new >= CUT) { alpha = exp(m_run - m_new); }
            sl = alpha * (sl + (m_run - m_new) * s0);
            s0 = alpha * s0;
            s2 = alpha * alpha * s2;
            sc = alpha * sc;
            for (var j = 0u; j < TA; j++) {
                var p = 0.0;
                if (j < tile_n) {
                    var l = -sh_dist[r * TA + j] * params.inv2v;
                    if (boff != 0xffffffffu) { l += bias[boff + chunk.base + a0 + j]; }
                    let z = l - m_new;
                    if (z >= CUT) {
                        p = exp(z);
                        s0 += p;
                        s2 += p * p;
                        sl += p * z;
                    }
                }
                if (KEPT) {
                    let mg = gm[2u * params.rows * D + min(row0 + r, params.rows - 1u)];
                    p = p * (sh_proj[r * TA + j] - mg);
                    sc += p;
                } else if (COVARIANCE) {
                    p = p * sh_proj[r * TA + j];
                    sc += p;
                }
                sh_w[(k * TR + r) * TA + j] = p;
            }
            m_run = m_new;
            sh_alpha[k * TR + r] = alpha;
        }
        if (lid < TR) {
            for (var j = 0u; j < tile_n; j++) {
                let dj = sh_dist[lid * TA + j];
                if (dj < near_d) {
                    near_d = dj;
                    near_i = chunk.base + a0 + j;
                }
            }
        }
        workgroupBarrier();

        // Phase 3: acc ← α·acc + Σ_j w_j a_j  (or Σ_j c_j (a_j − m)), each thread its own d.
        for (var d = lid; d < D; d += WG) {
            var accv: array<f32, 32>;  // TR × KMAX
            for (var r = 0u; r < TR; r++) {
                let b = row0 + r;
                for (var k = 0u; k < K; k++) {
                    var v = 0.0;
                    if (b < params.rows) {
                        v = part_acc[((slot * params.rows + b) * K + k) * D + d] * sh_alpha[k * TR + r];
                    }
                    accv[r * KMAX + k] = v;
                }
            }
            for (var j = 0u; j < tile_n; j++) {
                let a = load_atom(a0 + j, d);
                for (var r = 0u; r < TR; r++) {
                    var av = a;
                    if (COVARIANCE && !KEPT) {
                        av = a - gm[(params.rows + min(row0 + r, params.rows - 1u)) * D + d];
                    }
                    for (var k = 0u; k < K; k++) {
                        accv[r * KMAX + k] = fma(sh_w[(k * TR + r) * TA + j], av, accv[r * KMAX + k]);
                    }
                }
            }
            for (var r = 0u; r < TR; r++) {
                let b = row0 + r;
                if (b >= params.rows) { break; }
                for (var k = 0u; k < K; k++) {
                    part_acc[((slot * params.rows + b) * K + k) * D + d] = accv[r * KMAX + k];
                }
            }
        }
        workgroupBarrier();
    }

    let b_own = row0 + own_r;
    if (lid < TR * K && b_own < params.rows) {
        let o = ((slot * params.rows + b_own) * K + own_k) * 6u;
        part_stats[o] = m_run;
        part_stats[o + 1u] = s0;
        part_stats[o + 2u] = s2;
        part_stats[o + 3u] = sl;
        part_stats[o + 4u] = sc;
        part_stats[o + 5u] = 0.0;
    }
    if (lid < TR && row0 + lid < params.rows) {
        let o = (slot * params.rows + row0 + lid) * 2u;
        part_near[o] = bitcast<u32>(near_d);
        part_near[o + 1u] = near_i;
    }
}
