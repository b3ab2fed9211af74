// Exact merge of the partial sums of weighted_sums.wgsl (statistics from split_weights.wgsl),
// one workgroup per (row b, set k). With M = max_p M_p and α_p = e^{M_p − M} (0 below e⁻⁶⁰ or
// for empty slots):
//
//   out_d = Σ_p α_p acc_pd / Σ_p α_p S0_p
//
// which is the weighted mean, or for the covariance pass (acc = Σ c_j a_jd) the part of C·g
// from which the host subtracts m_d·SC/S0.
//
// The row statistics are merged on the host in float64 from the same partials.

const WG: u32 = 64u;
const CUT: f32 = -60.0;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> part_acc: array<f32>;
@group(0) @binding(2) var<storage, read> part_stats: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

var<workgroup> sh_alpha: array<f32, 2048>;  // α_p for at most 2048 partials (8 KB)
var<workgroup> sh_m: f32;

@compute @workgroup_size(64)
fn merge_main(@builtin(local_invocation_index) lid: u32,
              @builtin(workgroup_id) wg: vec3<u32>) {
    let b = wg.x;
    let k = wg.y;
    let K = params.nsets;
    let P = params.nparts;
    let D = params.dpad;
    if (lid == 0u) {
        var m = -3.0e38;
        for (var p = 0u; p < P; p++) {
            let o = ((p * params.rows + b) * K + k) * 6u;
            if (part_stats[o + 1u] > 0.0) { m = max(m, part_stats[o]); }
        }
        sh_m = m;
    }
    workgroupBarrier();
    let m = sh_m;
    for (var p = lid; p < P; p += WG) {
        let o = ((p * params.rows + b) * K + k) * 6u;
        var a = 0.0;
        let z = part_stats[o] - m;
        if (part_stats[o + 1u] > 0.0 && z >= CUT) { a = exp(z); }
        sh_alpha[p] = a;
    }
    workgroupBarrier();
    if (lid == 0u) {
        var s0 = 0.0;
        for (var p = 0u; p < P; p++) {
            s0 += sh_alpha[p] * part_stats[((p * params.rows + b) * K + k) * 6u + 1u];
        }
        sh_m = 1.0 / s0;
    }
    workgroupBarrier();
    let inv_s0 = sh_m;
    for (var d = lid; d < D; d += WG) {
        var acc = 0.0;
        for (var p = 0u; p < P; p++) {
            let a = sh_alpha[p];
            if (a > 0.0) { acc = fma(a, part_acc[((p * params.rows + b) * K + k) * D + d], acc); }
        }
        out[(b * K + k) * D + d] = acc * inv_s0;
    }
}
