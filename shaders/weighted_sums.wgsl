// Weighted sums of atoms over one split, a register-blocked GEMM (design §3):
//
//   acc_{r,d} = Σ_{j ∈ split} W_{r,j} a_{j,d}        r = b·K + k (row b, weight set k)
//
// with W the weights (or covariance coefficients c) that split_weights.wgsl wrote for the
// split's own max M_p; the sums go to partial slot part_base + p, and merge_partials.wgsl
// combines the slots exactly. A workgroup of TX × TY threads covers RY·TY rows r × 4·TX
// dimensions; each thread owns an RY × 4 register block (RY = 4 or 8 vec4 accumulators: 8
// halves the workgroup-memory reads per multiply-add). TK atoms at a time are staged through
// workgroup memory: their weights transposed so that one vec4 read gives a thread 4 of its
// rows (sh_w), their values as vec4 over 4 dimensions (sh_b), decoded from vec4<u32> words
// (4 f32, 8 f16 or 16 u8 values). Each sum runs over the split's atoms in order whatever the
// tile sizes are.

override STORAGE: u32 = 0u;
override TX: u32 = 16u;  // threads along dimensions: the tile holds 4·TX dimensions
override TY: u32 = 16u;  // threads along rows: the tile holds RY·TY rows r
override RY: u32 = 4u;   // rows per thread: 4 or 8
override TK: u32 = 16u;  // atoms staged per step
override QW: u32 = RY * TY / 4u;  // row quads of the tile
override SH_W_LEN: u32 = TK * QW;
override SH_B_LEN: u32 = TK * TX;
override TABLE_LEN: u32 = select(1u, 256u, STORAGE == 1u);

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> atoms: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> table: array<f32>;
@group(0) @binding(4) var<storage, read> weights: array<f32>;
// per slot, row r: dpad sums (as vec4).
@group(0) @binding(5) var<storage, read_write> part_acc: array<vec4<f32>>;

var<workgroup> sh_w: array<vec4<f32>, SH_W_LEN>;  // [kk][row quad]
var<workgroup> sh_b: array<vec4<f32>, SH_B_LEN>;  // [kk][dimension quad]
var<workgroup> sh_table: array<f32, TABLE_LEN>;

fn per_word() -> u32 {
    return select(select(4u, 8u, STORAGE == 2u), 16u, STORAGE == 1u);
}

// Values 4q .. 4q+3 of a vec4<u32> word (q < per_word() / 4).
fn decode_quad(w: vec4<u32>, q: u32) -> vec4<f32> {
    if (STORAGE == 1u) {
        let v = w[q];
        return vec4<f32>(sh_table[v & 0xffu], sh_table[(v >> 8u) & 0xffu],
                         sh_table[(v >> 16u) & 0xffu], sh_table[v >> 24u]);
    }
    if (STORAGE == 2u) {
        return vec4<f32>(unpack2x16float(w[2u * q]), unpack2x16float(w[2u * q + 1u]));
    }
    return bitcast<vec4<f32>>(w);
}

@compute @workgroup_size(TX, TY)
fn sums_main(@builtin(local_invocation_id) li: vec3<u32>,
             @builtin(local_invocation_index) lid: u32,
             @builtin(workgroup_id) wg: vec3<u32>) {
    let tx = li.x;
    let ty = li.y;
    let dq0 = wg.x * TX;          // first dimension quad of the tile
    let r0 = wg.y * RY * TY;      // first row r of the tile
    let p = wg.z;
    let rk = params.rows * params.nsets;
    let j_begin = p * step.split_len;
    let j_end = min(j_begin + step.split_len, step.n);
    let slot = step.part_base + p;
    let pw = per_word();
    let quads_per_word = pw / 4u;
    let tile_words = 4u * TX / pw;  // vec4<u32> words of one atom in the tile
    if (STORAGE == 1u) {
        for (var e = lid; e < 256u; e += TX * TY) { sh_table[e] = table[e]; }
    }
    var c0 = vec4<f32>(0.0);
    var c1 = vec4<f32>(0.0);
    var c2 = vec4<f32>(0.0);
    var c3 = vec4<f32>(0.0);
    var c4 = vec4<f32>(0.0);
    var c5 = vec4<f32>(0.0);
    var c6 = vec4<f32>(0.0);
    var c7 = vec4<f32>(0.0);
    for (var j0 = j_begin; j0 < j_end; j0 += TK) {
        workgroupBarrier();
        // Weights: consecutive threads read consecutive atoms of one row.
        for (var e = lid; e < RY * TY * TK; e += TX * TY) {
            let kk = e % TK;
            let r = e / TK;
            var w = 0.0;
            if (r0 + r < rk && j0 + kk < j_end) { w = weights[(r0 + r) * step.w_ld + j0 + kk]; }
            sh_w[kk * QW + r / 4u][r % 4u] = w;
        }
        for (var e = lid; e < TK * tile_words; e += TX * TY) {
            let kk = e / tile_words;
            let q = e % tile_words;
            let wi = dq0 * 4u / pw + q;
            var w = vec4<u32>(0u);
            if (j0 + kk < j_end && wi < params.stride4) {
                w = atoms[(step.chunk_off + j0 + kk) * params.stride4 + wi];
            }
            for (var c = 0u; c < quads_per_word; c++) {
                sh_b[kk * TX + q * quads_per_word + c] = decode_quad(w, c);
            }
        }
        workgroupBarrier();
        let kn = min(TK, j_end - j0);
        for (var kk = 0u; kk < kn; kk++) {
            let aq = sh_b[kk * TX + tx];
            let wq = sh_w[kk * QW + ty * (RY / 4u)];
            c0 = fma(vec4<f32>(wq.x), aq, c0);
            c1 = fma(vec4<f32>(wq.y), aq, c1);
            c2 = fma(vec4<f32>(wq.z), aq, c2);
            c3 = fma(vec4<f32>(wq.w), aq, c3);
            if (RY == 8u) {
                let wq2 = sh_w[kk * QW + ty * 2u + 1u];
                c4 = fma(vec4<f32>(wq2.x), aq, c4);
                c5 = fma(vec4<f32>(wq2.y), aq, c5);
                c6 = fma(vec4<f32>(wq2.z), aq, c6);
                c7 = fma(vec4<f32>(wq2.w), aq, c7);
            }
        }
    }
    let ld = params.dpad / 4u;
    let dq = dq0 + tx;
    if (dq >= ld) { return; }
    let r = r0 + RY * ty;
    let o = slot * rk;
    if (r < rk) { part_acc[(o + r) * ld + dq] = c0; }
    if (r + 1u < rk) { part_acc[(o + r + 1u) * ld + dq] = c1; }
    if (r + 2u < rk) { part_acc[(o + r + 2u) * ld + dq] = c2; }
    if (r + 3u < rk) { part_acc[(o + r + 3u) * ld + dq] = c3; }
    if (RY == 8u) {
        if (r + 4u < rk) { part_acc[(o + r + 4u) * ld + dq] = c4; }
        if (r + 5u < rk) { part_acc[(o + r + 5u) * ld + dq] = c5; }
        if (r + 6u < rk) { part_acc[(o + r + 6u) * ld + dq] = c6; }
        if (r + 7u < rk) { part_acc[(o + r + 7u) * ld + dq] = c7; }
    }
}
