//! Fashion-MNIST for the tests, read through the library's own IDX loader: the folder is
//! FSLENS_FASHION_MNIST or the default one; without it a test is skipped with a printed reason,
//! unless FSLENS_REQUIRE_DATA=1 makes that a failure.

use std::path::{Path, PathBuf};

/// The Fashion-MNIST folder, or None (with a printed reason) when its training images are
/// missing; panics instead when FSLENS_REQUIRE_DATA=1.
pub fn fashion_dir() -> Option<PathBuf> {
    let dir = fslens::data::spec::default_fashion_mnist_dir();
    if dir.join("train-images-idx3-ubyte.gz").exists() {
        return Some(dir);
    }
    if std::env::var("FSLENS_REQUIRE_DATA").as_deref() == Ok("1") {
        panic!(
            "Fashion-MNIST not found in {} and FSLENS_REQUIRE_DATA=1",
            dir.display()
        );
    }
    eprintln!("Fashion-MNIST not found in {}: skipped", dir.display());
    None
}

/// The images of an IDX file as pixel values 2k/255 − 1 (the library's loader and pixel
/// table): (values, N, D = rows·cols).
pub fn idx_images(path: &Path) -> (Vec<f32>, usize, usize) {
    let (h, w, bytes) = fslens::data::idx::read_images(path).unwrap();
    let table = fslens::data::u8_pixel_table();
    let d = h * w;
    (
        bytes.iter().map(|&k| table[k as usize]).collect(),
        bytes.len() / d,
        d,
    )
}

/// The training images (`train`) or the test images of the folder.
pub fn images(dir: &Path, train: bool) -> (Vec<f32>, usize, usize) {
    let name = if train {
        "train-images-idx3-ubyte.gz"
    } else {
        "t10k-images-idx3-ubyte.gz"
    };
    idx_images(&dir.join(name))
}

/// The first `n` training images and D, or None when the data set is missing.
pub fn first_train_images(n: usize) -> Option<(Vec<f32>, usize)> {
    let dir = fashion_dir()?;
    let (mut values, count, d) = images(&dir, true);
    values.truncate(n.min(count) * d);
    Some((values, d))
}

/// The whole data set: the 60000 training images, the 10000 test images and D = 784, or None
/// when it is missing.
pub fn train_and_test() -> Option<(Vec<f32>, Vec<f32>, usize)> {
    let dir = fashion_dir()?;
    let (train, n, d) = images(&dir, true);
    let (test, _, _) = images(&dir, false);
    assert_eq!((n, d), (60000, 784), "Fashion-MNIST in {}", dir.display());
    Some((train, test, d))
}
