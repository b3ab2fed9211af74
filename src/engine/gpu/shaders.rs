//! The WGSL sources of the GPU engine, compiled into the binary.

/// The fused distance / log-sum-exp / weighted-sum pass (and its covariance variant).
pub const WEIGHTED_MEANS: &str = include_str!("../../../shaders/weighted_means.wgsl");
/// The exact merge of per-workgroup partial sums.
pub const MERGE_PARTIALS: &str = include_str!("../../../shaders/merge_partials.wgsl");

/// Every shader with its file name, for validation and error messages.
#[cfg_attr(not(test), allow(dead_code))]
pub const ALL: &[(&str, &str)] = &[
    ("weighted_means.wgsl", WEIGHTED_MEANS),
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
                    super::ALL.iter().any(|(n, _)| *n == name),
                    "{name} is in shaders/ but not embedded in src/engine/gpu/shaders.rs"
                );
            }
        }
    }
}
