"""fslens.DDPM (the discrete schedule of guided-diffusion / the DPS code) against an
independent float64 numpy implementation, and the ``level=`` passes of Prior and Posterior
against the float64 oracle at each level's own noise."""

import numpy as np
import pytest

import fslens
from conftest import Reference, f32, record, rel_err, vp_noise


def ddpm_reference():
    """β_k linear 1e-4 … 0.02 over 1000 levels; ᾱ_k = Π_{j ≤ k} (1 − β_j), by running product."""
    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
    return betas, np.cumprod(1.0 - betas)


LEVELS = [0, 1, 10, 100, 250, 500, 750, 999]


def test_schedule_matches_the_running_product():
    ddpm = fslens.DDPM()
    betas, abar = ddpm_reference()
    k = np.arange(1000)
    assert ddpm.LEVELS == 1000
    e_beta = rel_err(ddpm.beta(k), betas)
    e_abar = float(np.max(np.abs(ddpm.alpha_bar(k) / abar - 1)))
    s, v = ddpm.noise(k)
    e_s = float(np.max(np.abs(s / np.sqrt(abar) - 1)))
    e_v = float(np.max(np.abs(v / (1 - abar) - 1)))
    for name, e in [("ddpm beta", e_beta), ("ddpm alpha_bar", e_abar), ("ddpm s", e_s), ("ddpm v", e_v)]:
        record(name, e)
        assert e <= 1e-12, (name, e)
    assert np.allclose(ddpm.log_alpha_bar(k), np.log(abar), rtol=1e-12, atol=0)
    # Scalars in, floats out; arrays keep their shape.
    assert isinstance(ddpm.alpha_bar(5), float) and ddpm.noise(0) == (pytest.approx(np.sqrt(1 - 1e-4)), pytest.approx(1e-4))
    assert ddpm.alpha_bar(np.array([[1, 2], [3, 4]])).shape == (2, 2)
    assert abs(ddpm.alpha_bar(999) - 4.035e-5) < 1e-7


@pytest.mark.parametrize("schedule", [fslens.VP(), fslens.VP(0.1, 20.0)])
def test_time_has_the_level_noise(schedule):
    ddpm = fslens.DDPM()
    k = np.arange(1000)
    t = ddpm.time(k, schedule)
    assert np.all(np.diff(t) > 0)
    s_t, v_t = vp_noise(t, schedule.beta_min, schedule.beta_max)
    s, v = ddpm.noise(k)
    e = max(float(np.max(np.abs(s_t / s - 1))), float(np.max(np.abs(v_t / v - 1))))
    record("ddpm time: VP noise at time(k) vs level noise", e)
    assert e <= 1e-10
    # The top levels lie beyond t = 1 (ᾱ_999 < ᾱ(1)).
    if schedule.beta_min == 0.01:
        assert int(np.argmax(t > 1)) == 994 and ddpm.time(993) <= 1 < ddpm.time(994)


def particles_at_level(ref, k, rng, b=4):
    s, v = fslens.DDPM().noise(k)
    rows = ref.A[rng.integers(0, len(ref.A), b)]
    return f32(s * rows + np.sqrt(v) * rng.normal(size=rows.shape)), s, v


@pytest.mark.parametrize("k", LEVELS)
def test_prior_and_posterior_at_levels_match_the_oracle(small, k):
    prior = fslens.Prior(small["atoms"], backend="cpu")
    ref = Reference(small["atoms"], small["M"], small["y"], small["sigma"])
    post = prior.posterior(small["y"], operator=small["M"], sigma=small["sigma"])
    rng = np.random.default_rng(k)
    x, s, v = particles_at_level(ref, k, rng)
    checks = [
        ("level denoise", prior.denoise(x, level=k), ref.mean(x, s, v)),
        ("level eps", prior.eps(x, level=k), ref.eps(x, s, v)),
        ("level score", prior.score(x, level=k), ref.score(x, s, v)),
        ("level posterior denoise", post.denoise(x, level=k), ref.mean(x, s, v, posterior=True)),
        ("level posterior fsr score", post.score(x, level=k), ref.score(x, s, v, posterior=True)),
        ("level posterior sigma-dps", post.score(x, method="sigma-dps", level=k), ref.method_score(x, s, v, "sigma-dps")),
    ]
    g = f32(rng.normal(size=x.shape))
    checks.append(("level denoiser_vjp", prior.denoiser_vjp(x, None, g, level=k), (s / v) * ref.cov_apply(x, s, v, g)))
    for name, got, want in checks:
        floor = 1e-6 * (s / v) if "vjp" in name else 0.0
        e = rel_err(got, want, floor=floor)
        record(name, e)
        assert e <= 1e-4, (name, k, e)


def test_per_row_levels_and_times_agree(small):
    prior = fslens.Prior(small["atoms"], backend="cpu")
    ddpm = fslens.DDPM()
    rng = np.random.default_rng(3)
    ks = np.array([500, 10, 500, 900])
    x = f32(rng.normal(size=(4, prior.dim)))
    per_row = prior.eps(x, level=ks)
    for r, k in enumerate(ks):
        assert np.array_equal(per_row[r], prior.eps(x[r], level=int(k))[0])
    # Where time(k) ≤ 1 the time gives the same noise, so (nearly) the same ε.
    e = rel_err(prior.eps(x, ddpm.time(ks)), per_row)
    record("level eps vs eps at DDPM().time(level)", e)
    assert e <= 1e-5


def test_level_errors(small):
    prior = fslens.Prior(small["atoms"], backend="cpu")
    x = np.zeros((2, prior.dim), dtype=np.float32)
    with pytest.raises(ValueError, match="level = 1000 is outside 0..999"):
        prior.eps(x, level=1000)
    with pytest.raises(ValueError, match="level = -1 is outside"):
        prior.denoise(x, level=[-1, 3])
    with pytest.raises(ValueError, match="level has shape"):
        prior.eps(x, level=[1, 2, 3])
    with pytest.raises(ValueError, match="integers"):
        prior.eps(x, level=2.5)
    with pytest.raises(TypeError, match="exactly one of t"):
        prior.eps(x, 0.5, level=3)
    with pytest.raises(TypeError, match="exactly one of t"):
        prior.eps(x)
    with pytest.raises(ValueError, match="outside 0..999"):
        fslens.DDPM().noise(1000)
