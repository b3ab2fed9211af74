// Softmax weights of one split of atoms for one particle row, from the pair distances of
// distances.wgsl (design §3, §7). One workgroup per (split p, row b); for each weight set k:
//
//   ℓ_kj = −dist_bj / (2v) + β_kj             (β stored shifted by its max; none for the prior)
//   M    = max_j ℓ_kj over the split
//   w_kj = e^{ℓ_kj − M}, or exactly 0 when ℓ_kj − M < −60 (no subnormals; at most N·e⁻⁶⁰ of
//          the mass is lost)
//   S0 = Σ w,  S2 = Σ w²,  SL = Σ w (ℓ − M),  and with PROJ  c_kj = w_kj proj_bj,  SC = Σ c
//
// The weights (or c) go to `weights` at ((b·K + k) · w_ld + j) for weighted_sums.wgsl, the
// partial (M, S0, S2, SL, SC) to slot part_base + p, and the split's nearest atom (smallest
// dist, lowest index on ties) to `part_near`. merge_partials.wgsl and the host merge the slots
// exactly (rescaling by e^{M_p − M}).

override PROJ: bool = false;

const WG: u32 = 64u;
const CUT: f32 = -60.0;
const NONE: f32 = -3.0e38;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> dist: array<f32>;
@group(0) @binding(3) var<storage, read> proj: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> weights: array<f32>;
// per slot, row, set: M, S0, S2, SL, SC, unused
@group(0) @binding(6) var<storage, read_write> part_stats: array<f32>;
// per slot, row: nearest dist (f32 bits), global index
@group(0) @binding(7) var<storage, read_write> part_near: array<u32>;

var<workgroup> red_max: array<f32, WG>;
var<workgroup> red_sum: array<vec4<f32>, WG>;
var<workgroup> red_idx: array<u32, WG>;

fn logit(b: u32, j: u32, boff: u32) -> f32 {
    var l = -dist[(step.dist_row0 + b) * step.dist_ld + step.dist_col + j] * params.inv2v;
    if (boff != 0xffffffffu) { l += bias[boff + step.base + j]; }
    return l;
}

@compute @workgroup_size(64)
fn weights_main(@builtin(local_invocation_index) lid: u32,
                @builtin(workgroup_id) wg: vec3<u32>) {
    let p = wg.x;
    let b = wg.y;
    let K = params.nsets;
    let j_begin = p * step.split_len;
    let j_end = min(j_begin + step.split_len, step.n);
    let slot = step.part_base + p;

    // Nearest atom of the split: (dist, global index), smallest first, then lowest index.
    var near_d = 3.4e38;
    var near_i = 0xffffffffu;
    for (var j = j_begin + lid; j < j_end; j += WG) {
        let dj = dist[(step.dist_row0 + b) * step.dist_ld + step.dist_col + j];
        if (dj < near_d) {
            near_d = dj;
            near_i = step.base + j;
        }
    }
    red_max[lid] = near_d;
    red_idx[lid] = near_i;
    workgroupBarrier();
    for (var h = WG / 2u; h > 0u; h /= 2u) {
        if (lid < h) {
            let od = red_max[lid + h];
            let oi = red_idx[lid + h];
            if (od < red_max[lid] || (od == red_max[lid] && oi < red_idx[lid])) {
                red_max[lid] = od;
                red_idx[lid] = oi;
            }
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        let o = (slot * params.rows + b) * 2u;
        part_near[o] = bitcast<u32>(red_max[0]);
        part_near[o + 1u] = red_idx[0];
    }

    for (var k = 0u; k < K; k++) {
        let boff = params.bias_off[k];
        workgroupBarrier();
        var m = NONE;
        for (var j = j_begin + lid; j < j_end; j += WG) {
            m = max(m, logit(b, j, boff));
        }
        red_max[lid] = m;
        workgroupBarrier();
        for (var h = WG / 2u; h > 0u; h /= 2u) {
            if (lid < h) { red_max[lid] = max(red_max[lid], red_max[lid + h]); }
            workgroupBarrier();
        }
        let mk = red_max[0];
        var sums = vec4<f32>(0.0);  // S0, S2, SL, SC
        let row = (b * K + k) * step.w_ld;
        for (var j = j_begin + lid; j < j_end; j += WG) {
            let z = logit(b, j, boff) - mk;
            var w = 0.0;
            if (z >= CUT) {
                w = exp(z);
                sums += vec4<f32>(w, w * w, w * z, 0.0);
            }
            if (PROJ) {
                w = w * proj[b * step.w_ld + j];
                sums.w += w;
            }
            weights[row + j] = w;
        }
        red_sum[lid] = sums;
        workgroupBarrier();
        for (var h = WG / 2u; h > 0u; h /= 2u) {
            if (lid < h) { red_sum[lid] += red_sum[lid + h]; }
            workgroupBarrier();
        }
        if (lid == 0u) {
            let o = ((slot * params.rows + b) * K + k) * 6u;
            let t = red_sum[0];
            part_stats[o] = mk;
            part_stats[o + 1u] = t.x;
            part_stats[o + 2u] = t.y;
            part_stats[o + 3u] = t.z;
            part_stats[o + 4u] = t.w;
            part_stats[o + 5u] = 0.0;
        }
    }
}
