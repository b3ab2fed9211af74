// The uniforms every kernel reads, prepended to each shader by src/engine/gpu/shaders.rs
// (WGSL has no includes). Their Rust twins are `Params` and `Step` in kernels.rs.

struct Params {
    rows: u32,        // particle rows in this block
    dim: u32,         // D
    dpad: u32,        // D rounded up to 16: row length of x, g, m, the partial sums and outputs
    nsets: u32,       // K, weight sets in this pass
    s: f32,
    inv2v: f32,       // 1 / (2v)
    stride4: u32,     // vec4<u32> words per atom row
    nparts: u32,      // partial slots of the block
    bias_off: vec4<u32>,  // offset of each set's bias in `bias`; 0xffffffff = prior
}

// One wave of atoms: a run of whole splits of one storage binding.
struct Step {
    n: u32,          // atoms in this wave
    chunk_off: u32,  // index of the wave's first atom in its binding
    base: u32,       // global index of the wave's first atom
    part_base: u32,  // partial slot of the wave's first split
    split_len: u32,  // atoms per split
    dist_ld: u32,    // row stride of `dist`
    dist_col: u32,   // column of the wave's first atom in `dist`
    dist_row0: u32,  // row of the block's first row in `dist`
    w_ld: u32,       // row stride of the projections and of the weights
    pad0: u32,
    pad1: u32,
    pad2: u32,
}
