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


@pytest.mark.parametrize("t", [0.1, 0.4, 0.9])
def test_posterior_denoiser_forward_and_backward(setup, small, t):
    """EmpiricalDenoiser(prior, post): m̃(x_t) forward, (s/v) C̃ grad backward (C̃ under the
    posterior weights), against the float64 oracle's closed form and against central finite
    differences of its posterior mean."""
    prior, _, ref0 = setup
    post = prior.posterior(small["y"], operator=small["M"], sigma=small["sigma"])
    ref = Reference(small["atoms"], small["M"], small["y"], small["sigma"])
    den = ft.EmpiricalDenoiser(prior, post)
    rng = np.random.default_rng(int(t * 10) + 50)
    x_np = particles(ref0, t, rng)
    g_np = f32(rng.normal(size=x_np.shape))
    s, v = vp_noise(t)
    assert np.array_equal(den(torch.tensor(x_np), t).numpy(), post.denoise(x_np, t))
    want = (s / v) * ref.cov_apply(x_np, s, v, g_np, posterior=True)
    fd = ref.mean_vjp_fd(x_np, s, v, g_np, posterior=True, h=1e-6 * np.sqrt(v))
    floor = 1e-6 * (s / v) * np.abs(g_np).max()
    assert rel_err(fd, want, floor) <= 1e-6  # the oracle's two forms agree
    for dtype in (torch.float32, torch.float64):
        x = torch.tensor(x_np, dtype=dtype, requires_grad=True)
        m = den(x, t)
        e = rel_err(m.detach().numpy(), ref.mean(x_np, s, v, posterior=True))
        record("torch posterior denoise", e)
        assert m.dtype == dtype and e <= 1e-4
        m.backward(torch.tensor(g_np, dtype=dtype))
        e = rel_err(x.grad.numpy(), fd, floor)
        record("torch posterior backward vs finite differences", e)
        assert e <= 1e-4, (t, dtype, e)
        e = rel_err(x.grad.numpy(), want, floor)
        record("torch posterior backward (s/v) C~ g", e)
        assert e <= 1e-4, (t, dtype, e)
    # score() differentiates through m̃ as well: ∂/∂x of (s m̃ − x)/v.
    x = torch.tensor(x_np, dtype=torch.float64, requires_grad=True)
    den.score(x, t).backward(torch.tensor(g_np, dtype=torch.float64))
    e = rel_err(x.grad.numpy(), (s * fd - g_np) / v, floor / v)
    record("torch posterior score backward", e)
    assert e <= 1e-4


def test_posterior_denoiser_gradcheck_float64():
    """torch.autograd.gradcheck of the posterior denoiser on a small problem (float32
    engine: step 1e-3 and float32-sized tolerances, as for the prior's)."""
    rng = np.random.default_rng(3)
    atoms = f32(rng.uniform(-1, 1, (8, 3)))
    prior = fslens.Prior(atoms, backend="cpu")
    post = prior.posterior_from_log_likelihood(rng.normal(size=8) * 2.0)
    den = ft.EmpiricalDenoiser(prior, post)
    for t in (0.3, 0.7):
        x = torch.tensor(rng.normal(size=(2, 3)) * 0.5, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda z: den(z, t), (x,), eps=1e-3, atol=2e-4, rtol=1e-2)


def test_posterior_of_another_prior_is_refused(setup, small):
    prior, _, _ = setup
    other = fslens.Prior(small["atoms"], backend="cpu")
    post = other.posterior(small["y"], operator=small["M"], sigma=small["sigma"])
    with pytest.raises(ValueError, match="another prior"):
        ft.EmpiricalDenoiser(prior, post)


def test_torch_bad_input(setup):
    _, den, _ = setup
    with pytest.raises(TypeError, match="floating-point"):
        den(torch.zeros(2, 12, dtype=torch.int64), 0.5)
    with pytest.raises(ValueError, match="x has shape"):
        den(torch.zeros(2, 11), 0.5)
    with pytest.raises(ValueError, match="t = 0.0 is outside"):
        den(torch.zeros(2, 12), 0.0)


# ---------------------------------------------------------------------------------------
# EpsilonModel: the level-indexed ε of guided-diffusion's UNet call.


def ddpm_noise(k):
    betas = np.linspace(1e-4, 0.02, 1000)
    abar = np.cumprod(1.0 - betas)[np.asarray(k)]
    return np.sqrt(abar), 1.0 - abar


@pytest.fixture(scope="module")
def eps_setup(small):
    # D = 12 as (H, W, C) = (2, 2, 3): three channels, so the CHW ↔ HWC order matters.
    prior = fslens.Prior(small["atoms"], backend="cpu", shape=(2, 2, 3))
    return prior, ft.EpsilonModel(prior), Reference(small["atoms"])


@pytest.mark.parametrize("k", [0, 10, 250, 500, 999])
def test_epsilon_model_matches_the_oracle(eps_setup, k):
    prior, model, ref = eps_setup
    rng = np.random.default_rng(100 + k)
    s, v = ddpm_noise(k)
    b = 6
    x_np = f32(s * ref.A[rng.integers(0, len(ref.A), b)] + np.sqrt(v) * rng.normal(size=(b, 12)))
    g_np = f32(rng.normal(size=x_np.shape))
    want = ref.eps(x_np, s, v)
    want_grad = (g_np - s * (s / v) * ref.cov_apply(x_np, s, v, g_np)) / np.sqrt(v)
    for dtype in (torch.float32, torch.float64):
        x = torch.tensor(x_np, dtype=dtype, requires_grad=True)
        t_index = torch.full((b,), k, dtype=torch.long)
        e = model(x, t_index)
        assert e.dtype == dtype and e.shape == x.shape
        err = rel_err(e.detach().numpy(), want)
        record(f"EpsilonModel eps ({str(dtype)[6:]})", err)
        assert err <= 1e-4, (k, dtype, err)
        e.backward(torch.tensor(g_np, dtype=dtype))
        err = rel_err(x.grad.numpy(), want_grad)
        record(f"EpsilonModel backward ({str(dtype)[6:]})", err)
        assert err <= 1e-4, (k, dtype, err)


def test_epsilon_model_per_row_levels_and_image_shape(eps_setup):
    prior, model, ref = eps_setup
    rng = np.random.default_rng(7)
    ks = np.array([999, 0, 500, 999, 37])
    rows = f32(rng.normal(size=(5, 12)))  # HWC rows of (2, 2, 3) images
    flat = model(torch.tensor(rows), torch.tensor(ks))
    s, v = ddpm_noise(ks)
    want = np.concatenate([ref.eps(rows[r : r + 1], s[r], v[r]) for r in range(5)])
    e = rel_err(flat.numpy(), want)
    record("EpsilonModel eps per-row levels", e)
    assert e <= 1e-4
    # (B, C, H, W) in, (B, C, H, W) out: the same numbers as the HWC rows, channels first.
    chw = torch.tensor(rows).reshape(5, 2, 2, 3).permute(0, 3, 1, 2).contiguous()
    out = model(chw, torch.tensor(ks))
    assert out.shape == (5, 3, 2, 2)
    assert torch.equal(out.permute(0, 2, 3, 1).reshape(5, 12), flat)
    # One level for all rows, a float tensor of integral levels, and guided-diffusion's
    # learn_sigma output layout (ε, then C variance channels).
    assert torch.equal(model(chw, 500), model(chw, torch.full((5,), 500.0)))
    both = ft.EpsilonModel(prior, learn_sigma=True)(chw, torch.tensor(ks))
    assert both.shape == (5, 6, 2, 2)
    assert torch.equal(both[:, :3], out) and torch.all(both[:, 3:] == -1)


def test_epsilon_model_gradcheck_float64():
    rng = np.random.default_rng(5)
    prior = fslens.Prior(f32(rng.uniform(-1, 1, (8, 3))), backend="cpu", shape=(1, 1, 3))
    model = ft.EpsilonModel(prior)
    for k in (300, 700):
        s, v = ddpm_noise(k)
        x = torch.tensor(s * rng.uniform(-1, 1, (2, 3, 1, 1)) + np.sqrt(v) * 0.3 * rng.normal(size=(2, 3, 1, 1)),
                         dtype=torch.float64, requires_grad=True)
        t_index = torch.tensor([k, k], dtype=torch.long)
        assert torch.autograd.gradcheck(lambda z: model(z, t_index), (x,), eps=1e-3, atol=2e-4, rtol=1e-2)


def test_epsilon_model_bad_input(eps_setup):
    prior, model, _ = eps_setup
    x = torch.zeros(2, 3, 2, 2)
    with pytest.raises(ValueError, match=r"pass \(B, 3, 2, 2\)"):
        model(torch.zeros(2, 2, 2, 3), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="outside 0..999"):
        model(x, torch.tensor([1, 1000]))
    with pytest.raises(ValueError, match="level has shape"):
        model(x, torch.tensor([1, 2, 3]))
    with pytest.raises(TypeError, match="unconditional"):
        model(x, torch.tensor([1, 2]), y=torch.tensor([0, 1]))
    assert model(x, torch.tensor([1, 2]), y=None).shape == x.shape
    with pytest.raises(TypeError, match="fslens.DDPM"):
        ft.EpsilonModel(prior, schedule=fslens.VP())
