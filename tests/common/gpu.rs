//! GPU availability for the tests: without an adapter a GPU test is skipped with a printed
//! reason, unless FSLENS_REQUIRE_GPU=1 makes that a failure (CI machines with a GPU, or the
//! Mesa software adapter, set it so that the tests cannot pass by skipping).

/// Whether a GPU adapter exists; without one, prints why `test` is skipped and returns false,
/// or panics when FSLENS_REQUIRE_GPU=1.
pub fn have_gpu(test: &str) -> bool {
    if !fslens::engine::gpu::list_adapters().is_empty() {
        return true;
    }
    if std::env::var("FSLENS_REQUIRE_GPU").as_deref() == Ok("1") {
        panic!("{test}: no GPU adapter found and FSLENS_REQUIRE_GPU=1");
    }
    eprintln!("{test}: skipped, no GPU adapter (install mesa-vulkan-drivers for llvmpipe)");
    false
}

/// A GPU adapter ([`have_gpu`]) and the whole Fashion-MNIST set
/// ([`super::fashion::train_and_test`]): (training images, test images, D), or None when
/// either is missing.
pub fn gpu_and_fashion(test: &str) -> Option<(Vec<f32>, Vec<f32>, usize)> {
    if !have_gpu(test) {
        return None;
    }
    super::fashion::train_and_test()
}
