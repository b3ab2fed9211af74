// Pair distances (and projections) for a tile of particle rows against a tile of atoms, shaped
// like a register-blocked GEMM (design §3, §7):
//
//   dist_bj = Σ_d (x_bd − s a_jd)²             direct differences, never the expansion
//   proj_bj = Σ_d (a_jd − m_bd) g_bd           (PROJ: the covariance pass, m = the mean)
//
// A workgroup of TX × TY threads covers 4·TY rows × 4·TX atoms; each thread owns a 4 × 4
// register block (rows 4ty.., atoms 4tx..), held as four vec4 accumulators. DK dimensions at a
// time are staged through workgroup memory, transposed so that one vec4 read gives a thread
// its 4 atoms (sh_a) or its 4 rows (sh_x, sh_g, sh_m) at one dimension. Atoms are read as
// vec4<u32> words (4 f32, 8 f16 or 16 u8 values). Every pair's sum runs over d = 0, 1, … in
// order whatever DK, TX and TY are, so tile sizes never change a result.
//
// The outputs go to `dist` at ((dist_row0 + b) · dist_ld + dist_col + j), which is either a
// scratch tile of this wave or the B × N kept distances of the prior pass, and to `proj` at
// (b · w_ld + j).

// 0 = f32 bits, 1 = u8 codes decoded by a 256-entry table, 2 = f16 pairs (unpack2x16float).
override STORAGE: u32 = 0u;
override WRITE_DIST: bool = true;
override PROJ: bool = false;
override TX: u32 = 16u;  // threads along atoms: the tile holds 4·TX atoms
override TY: u32 = 16u;  // threads along rows: the tile holds 4·TY rows
override DK: u32 = 16u;  // dimensions staged per step, a multiple of 16
// Workgroup arrays a variant does not use shrink to one element.
override SH_A_LEN: u32 = DK * TX;
override SH_X_LEN: u32 = select(1u, DK * TY, WRITE_DIST);
override SH_G_LEN: u32 = select(1u, DK * TY, PROJ);
override TABLE_LEN: u32 = select(1u, 256u, STORAGE == 1u);

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> atoms: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> xs: array<vec4<f32>>;
// rows × dpad of g, then rows × dpad of m (PROJ only).
@group(0) @binding(4) var<storage, read> gm: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> table: array<f32>;
@group(0) @binding(6) var<storage, read_write> dist: array<f32>;
@group(0) @binding(7) var<storage, read_write> proj: array<f32>;

var<workgroup> sh_a: array<vec4<f32>, SH_A_LEN>;  // [dd][atom quad]
var<workgroup> sh_x: array<vec4<f32>, SH_X_LEN>;  // [dd][row quad]
var<workgroup> sh_g: array<vec4<f32>, SH_G_LEN>;
var<workgroup> sh_m: array<vec4<f32>, SH_G_LEN>;
var<workgroup> sh_table: array<f32, TABLE_LEN>;

// Values per vec4<u32> word of an atom row.
fn per_word() -> u32 {
    return select(select(4u, 8u, STORAGE == 2u), 16u, STORAGE == 1u);
}

// Value c (0 ≤ c < per_word()) of a vec4<u32> word.
fn decode(w: vec4<u32>, c: u32) -> f32 {
    if (STORAGE == 1u) {
        return sh_table[(w[c / 4u] >> ((c % 4u) * 8u)) & 0xffu];
    }
    if (STORAGE == 2u) {
        let h = unpack2x16float(w[c / 2u]);
        return select(h.x, h.y, (c & 1u) == 1u);
    }
    return bitcast<f32>(w[c]);
}

// Atom j (of this wave), dimensions [d0, d0 + DK), into column j of sh_a.
fn stage_atoms(lid: u32, a0: u32, d0: u32) {
    let pw = per_word();
    let words = DK / pw;
    let tile_atoms = 4u * TX;
    for (var e = lid; e < tile_atoms * words; e += TX * TY) {
        let j = e / words;
        let q = e % words;
        let wi = d0 / pw + q;
        var w = vec4<u32>(0u);
        if (a0 + j < step.n && wi < params.stride4) {
            w = atoms[(step.chunk_off + a0 + j) * params.stride4 + wi];
        }
        for (var c = 0u; c < pw; c++) {
            sh_a[(q * pw + c) * TX + j / 4u][j % 4u] = decode(w, c);
        }
    }
}

// Rows [row0, row0 + 4·TY), dimensions [d0, d0 + DK), of x (and g, m) into sh_x (sh_g, sh_m).
fn stage_rows(lid: u32, row0: u32, d0: u32) {
    let quads = DK / 4u;
    let tile_rows = 4u * TY;
    let ld = params.dpad / 4u;
    for (var e = lid; e < tile_rows * quads; e += TX * TY) {
        let r = e / quads;
        let q = e % quads;
        let b = row0 + r;
        let wi = d0 / 4u + q;
        var xv = vec4<f32>(0.0);
        var gv = vec4<f32>(0.0);
        var mv = vec4<f32>(0.0);
        if (b < params.rows && wi < ld) {
            if (WRITE_DIST) { xv = xs[b * ld + wi]; }
            if (PROJ) {
                gv = gm[b * ld + wi];
                mv = gm[(params.rows + b) * ld + wi];
            }
        }
        let o = (4u * q) * TY + r / 4u;
        let c = r % 4u;
        if (WRITE_DIST) {
            sh_x[o][c] = xv.x;
            sh_x[o + TY][c] = xv.y;
            sh_x[o + 2u * TY][c] = xv.z;
            sh_x[o + 3u * TY][c] = xv.w;
        }
        if (PROJ) {
            sh_g[o][c] = gv.x;
            sh_g[o + TY][c] = gv.y;
            sh_g[o + 2u * TY][c] = gv.z;
            sh_g[o + 3u * TY][c] = gv.w;
            sh_m[o][c] = mv.x;
            sh_m[o + TY][c] = mv.y;
            sh_m[o + 2u * TY][c] = mv.z;
            sh_m[o + 3u * TY][c] = mv.w;
        }
    }
}

// One row of a thread's block: atoms j0..j0+3 of block row b.
fn store_row(b: u32, j0: u32, dv: vec4<f32>, pv: vec4<f32>) {
    if (b >= params.rows) { return; }
    for (var c = 0u; c < 4u; c++) {
        let j = j0 + c;
        if (j < step.n) {
            if (WRITE_DIST) {
                dist[(step.dist_row0 + b) * step.dist_ld + step.dist_col + j] = dv[c];
            }
            if (PROJ) { proj[b * step.w_ld + j] = pv[c]; }
        }
    }
}

@compute @workgroup_size(TX, TY)
fn distances_main(@builtin(local_invocation_id) li: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32,
                  @builtin(workgroup_id) wg: vec3<u32>) {
    let tx = li.x;
    let ty = li.y;
    let a0 = wg.x * 4u * TX;
    let row0 = wg.y * 4u * TY;
    if (STORAGE == 1u) {
        for (var e = lid; e < 256u; e += TX * TY) { sh_table[e] = table[e]; }
    }
    let s = params.s;
    var d0 = vec4<f32>(0.0);
    var d1 = vec4<f32>(0.0);
    var d2 = vec4<f32>(0.0);
    var d3 = vec4<f32>(0.0);
    var p0 = vec4<f32>(0.0);
    var p1 = vec4<f32>(0.0);
    var p2 = vec4<f32>(0.0);
    var p3 = vec4<f32>(0.0);
    // Only the D real dimensions enter the sums (the padding of a u8 row decodes to table[0]).
    for (var k0 = 0u; k0 < params.dim; k0 += DK) {
        workgroupBarrier();
        stage_atoms(lid, a0, k0);
        stage_rows(lid, row0, k0);
        workgroupBarrier();
        let dn = min(DK, params.dim - k0);
        for (var dd = 0u; dd < dn; dd++) {
            let a = sh_a[dd * TX + tx];
            if (WRITE_DIST) {
                let sa = s * a;
                let xq = sh_x[dd * TY + ty];
                let e0 = xq.x - sa;
                let e1 = xq.y - sa;
                let e2 = xq.z - sa;
                let e3 = xq.w - sa;
                d0 = fma(e0, e0, d0);
                d1 = fma(e1, e1, d1);
                d2 = fma(e2, e2, d2);
                d3 = fma(e3, e3, d3);
            }
            if (PROJ) {
                let gq = sh_g[dd * TY + ty];
                let mq = sh_m[dd * TY + ty];
                p0 = fma(a - mq.x, vec4<f32>(gq.x), p0);
                p1 = fma(a - mq.y, vec4<f32>(gq.y), p1);
                p2 = fma(a - mq.z, vec4<f32>(gq.z), p2);
                p3 = fma(a - mq.w, vec4<f32>(gq.w), p3);
            }
        }
    }
    let j0 = a0 + 4u * tx;
    let b0 = row0 + 4u * ty;
    store_row(b0, j0, d0, p0);
    store_row(b0 + 1u, j0, d1, p1);
    store_row(b0 + 2u, j0, d2, p2);
    store_row(b0 + 3u, j0, d3, p3);
}
