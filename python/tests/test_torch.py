"""fslens.torch: the empirical denoiser as a torch.autograd.Function whose backward is the
exact vector–Jacobian product (s/v) C g. Skipped with the reason when torch is not
installed, unless FSLENS_REQUIRE_TORCH=1."""

import os

import numpy as np
import pytest

import fslens
from conftest import Reference, f32, record, rel_err, vp_noise

try:
    import torch

    import fslens.torch as ft
except ImportError as e:  # pragma: no cover - depends on the machine
    if os.environ.get("FSLENS_REQUIRE_TORCH") == "1":
        raise
    pytest.skip(f"torch is not installed ({e}); pip install torch, or set FSLENS_REQUIRE_TORCH=1 to fail instead", allow_module_level=True)


@pytest.fixture(scope="module")
def setup(small):
    prior = fslens.Prior(small["atoms"], backend="cpu")
    return prior, ft.EmpiricalDenoiser(prior), Reference(small["atoms"])


def particles(ref, t, rng, b=5):
    s, v = vp_noise(t)
    return f32(s * ref.A[rng.integers(0, len(ref.A), b)] + np.sqrt(v) * rng.normal(size=(b, ref.A.shape[1])))


@pytest.mark.parametrize("t", [0.1, 0.4, 0.9])
def test_forward_and_backward_match_the_oracle(setup, t):
    prior, den, ref = setup
    rng = np.random.default_rng(int(t * 10))
    x_np = particles(ref, t, rng)
    g_np = f32(rng.normal(size=x_np.shape))
    s, v = vp_noise(t)
    for dtype in (torch.float32, torch.float64):
        x = torch.tensor(x_np, dtype=dtype, requires_grad=True)
        m = den(x, t)
        assert m.dtype == dtype and m.shape == x.shape
        e = rel_err(m.detach().numpy(), ref.mean(x_np, s, v))
        record("torch denoise", e)
        assert e <= 1e-4
        m.backward(torch.tensor(g_np, dtype=dtype))
        want = (s / v) * ref.cov_apply(x_np, s, v, g_np)
        e = rel_err(x.grad.numpy(), want, floor=1e-6 * (s / v) * np.abs(g_np).max())
        record("torch backward (s/v) C g", e)
        assert e <= 1e-4


def test_gradcheck_float64(small):
    """torch.autograd.gradcheck on a small problem. The engine computes in float32, so the
    finite differences use a step of 1e-3 and float32-sized tolerances."""
    rng = np.random.default_rng(0)
    atoms = f32(rng.uniform(-1, 1, (8, 3)))
    den = ft.EmpiricalDenoiser(fslens.Prior(atoms, backend="cpu"))
    for t in (0.3, 0.7):
        x = torch.tensor(rng.normal(size=(2, 3)) * 0.5, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda z: den(z, t), (x,), eps=1e-3, atol=2e-4, rtol=1e-2)


def test_eps_score_and_per_row_times(setup):
    prior, den, ref = setup
    rng = np.random.default_rng(1)
    ts = np.array([0.2, 0.6, 0.2, 0.9, 0.6])
    x_np = np.concatenate([particles(ref, t, rng, b=1) for t in ts])
    x = torch.tensor(x_np)
    for name, got, want in [
        ("torch eps", den.eps(x, torch.tensor(ts)), prior.eps(x_np, ts)),
        ("torch score", den.score(x, ts), prior.score(x_np, ts)),
        ("torch denoise per-row t", den(x, ts), prior.denoise(x_np, ts)),
    ]:
        e = rel_err(got.numpy(), want)
        record(name, e)
        assert e <= 1e-5, (name, e)
    # Image-shaped input (B, H, W, C) flattens in HWC order and keeps its shape.
    img = x.reshape(5, 1, 12, 1)
    assert torch.equal(den(img, 0.5).reshape(5, 12), den(x, 0.5))


def test_posterior_mean_module(setup, small):
    prior, _, ref = setup
    post = prior.posterior(small["y"], operator=small["M"], sigma=small["sigma"])
    den = ft.EmpiricalDenoiser(prior, post)
    x_np = particles(ref, 0.4, np.random.default_rng(2))
    assert np.array_equal(den(torch.tensor(x_np), 0.4).numpy(), post.denoise(x_np, 0.4))
    x = torch.tensor(x_np, requires_grad=True)
    with pytest.raises(RuntimeError, match="not implemented"):
        den(x, 0.4).sum().backward()


def test_torch_bad_input(setup):
    _, den, _ = setup
    with pytest.raises(TypeError, match="floating-point"):
        den(torch.zeros(2, 12, dtype=torch.int64), 0.5)
    with pytest.raises(ValueError, match="x has shape"):
        den(torch.zeros(2, 11), 0.5)
    with pytest.raises(ValueError, match="t = 0.0 is outside"):
        den(torch.zeros(2, 12), 0.0)
