"""The GPU backend (wgpu; in CI the Mesa software adapter) through the package, against the
float64 oracle. Skipped with the reason when no adapter exists, unless FSLENS_REQUIRE_GPU=1."""

import os

import numpy as np
import pytest

import fslens
from conftest import Reference, f32, record, rel_err, vp_noise

TOL = 1e-4


@pytest.fixture(scope="module")
def gpu(small):
    try:
        prior = fslens.Prior(small["atoms"], backend="gpu")
    except ValueError as e:
        if os.environ.get("FSLENS_REQUIRE_GPU") == "1":
            raise
        pytest.skip(f"no GPU adapter for the gpu backend ({e}); set FSLENS_REQUIRE_GPU=1 to fail instead")
    post = prior.posterior(small["y"], operator=small["M"], sigma=small["sigma"])
    return prior, post, Reference(small["atoms"], small["M"], small["y"], small["sigma"])


@pytest.mark.parametrize("t", [0.05, 0.3, 1.0])
def test_gpu_backend_matches_the_oracle(gpu, t):
    prior, post, ref = gpu
    assert "gpu" in prior.backend
    rng = np.random.default_rng(int(t * 100))
    s, v = vp_noise(t)
    x = f32(s * ref.A[rng.integers(0, len(ref.A), 6)] + np.sqrt(v) * rng.normal(size=(6, ref.A.shape[1])))
    g = f32(rng.normal(size=x.shape))
    floor = 1e-6 * np.abs(g).max()
    checks = [
        ("gpu prior.denoise", prior.denoise(x, t), ref.mean(x, s, v), 0.0),
        ("gpu prior.cov_apply", prior.cov_apply(x, t, g), ref.cov_apply(x, s, v, g), floor),
    ]
    checks.append(
        ("gpu post.denoiser_vjp", post.denoiser_vjp(x, t, g), (s / v) * ref.cov_apply(x, s, v, g, posterior=True), (s / v) * floor)
    )
    for method in ["fsr", "prior", "sigma-dps", "zeta-dps", "pigdm", "tmpd"]:
        checks.append((f"gpu post.score[{method}]", post.score(x, t, method=method), ref.method_score(x, s, v, method), 0.0))
    for name, got, want, fl in checks:
        e = rel_err(got, want, fl)
        record(name, e)
        assert e <= TOL, f"{name} at t={t}: {e:.3e}"


def test_gpu_uint8_atoms_are_stored_exactly_as_u8(gpu):
    rng = np.random.default_rng(4)
    k = rng.integers(0, 256, (30, 16)).astype(np.uint8)
    prior = fslens.Prior(k, backend="gpu")
    assert "u8" in prior.backend
    ref = Reference(2 * k.astype(np.float64) / 255 - 1)
    s, v = vp_noise(0.3)
    x = f32(s * ref.A[:5] + np.sqrt(v) * rng.normal(size=(5, 16)))
    e = rel_err(prior.denoise(x, 0.3), ref.mean(x, s, v))
    record("gpu uint8 prior.denoise", e)
    assert e <= TOL


def test_gpu_dropped_posteriors_leave_the_device(gpu, small):
    """A posterior's bias is freed on the device when the posterior goes; the biases after it
    move down the device buffer, and a kept posterior gives the same scores bit for bit."""
    import gc

    prior, post, ref = gpu
    rng = np.random.default_rng(9)
    s, v = vp_noise(0.3)
    x = f32(s * ref.A[:4] + np.sqrt(v) * rng.normal(size=(4, ref.A.shape[1])))
    live = prior._core.live_biases
    first = prior.posterior(small["y"], operator=small["M"], sigma=0.2)
    last = prior.posterior(small["y"], operator=small["M"], sigma=0.5)
    before = last.score(x, 0.3)
    assert prior._core.live_biases == live + 2
    del first
    gc.collect()
    assert prior._core.live_biases == live + 1
    assert np.array_equal(last.score(x, 0.3), before)
    want = Reference(small["atoms"], small["M"], small["y"], 0.5).score(x, s, v, posterior=True)
    assert rel_err(before, want) <= TOL
