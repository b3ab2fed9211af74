//! The WGSL sources of the GPU engine, compiled into the binary.

/// Each kernel's source: shaders/uniforms.wgsl (the structs every kernel reads; WGSL has no
/// includes), then the kernel's own file.
macro_rules! kernel {
    ($file:literal) => {
        concat!(
            include_str!("../../../shaders/uniforms.wgsl"),
            include_str!(concat!("../../../shaders/", $file))
        )
    };
}

/// Pair distances and projections, a register-blocked GEMM-shaped tile kernel.
pub const DISTANCES: &str = kernel!("distances.wgsl");
/// Per-split softmax weights, partial statistics and nearest atoms.
pub const SPLIT_WEIGHTS: &str = kernel!("split_weights.wgsl");
/// Weighted sums of atoms per split, a register-blocked GEMM.
pub const WEIGHTED_SUMS: &str = kernel!("weighted_sums.wgsl");
/// The exact merge of per-split partial sums.
pub const MERGE_PARTIALS: &str = kernel!("merge_partials.wgsl");

/// Every shader with its file name, for validation and error messages.
#[cfg_attr(not(test), allow(dead_code))]
pub const ALL: &[(&str, &str)] = &[
    ("distances.wgsl", DISTANCES),
    ("split_weights.wgsl", SPLIT_WEIGHTS),
    ("weighted_sums.wgsl", WEIGHTED_SUMS),
    ("merge_partials.wgsl", MERGE_PARTIALS),
];
#[cfg(test)]
mod tests {
    use wgpu::naga;

    /// Parses and validates every shader with naga, as wgpu would, without a device; then
    /// checks that the shaders directory holds no .wgsl file that the engine does not embed.
    #[test]
    fn every_wgsl_parses_and_validates() {
        for (name, src) in super::ALL {
            let module = naga::front::wgsl::parse_str(src)
                .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(src)));
            let mut validator = naga::valid::Validator::new(
                naga::valid::ValidationFlags::all(),
                naga::valid::Capabilities::all(),
            );
            validator
                .validate(&module)
                .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(src)));
        }
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/shaders");
        for entry in std::fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name.ends_with(".wgsl") {
                assert!(
                    name == "uniforms.wgsl" || super::ALL.iter().any(|(n, _)| *n == name),
                    "{name} is in shaders/ but not embedded in src/engine/gpu/shaders.rs"
                );
            }
        }
    }
}
