"""Exact draws of p(x_t | y) = Σ_i ω_i N(s a_i, v I) against the closed form (design §3):
E x_t = s ā and E‖x_t − E x_t‖² = s² Σ_i ω_i ‖a_i − ā‖² + D v, within Monte-Carlo error."""

import numpy as np
import pytest

import fslens
from conftest import Reference, record, vp_noise


@pytest.fixture(scope="module")
def post(small):
    prior = fslens.Prior(small["atoms"], backend="cpu")
    # A broad measurement (σ = 1.5) so that many atoms carry weight.
    return prior.posterior(small["y"], operator=small["M"], sigma=1.5), Reference(
        small["atoms"], small["M"], small["y"], 1.5
    )


@pytest.mark.parametrize("t", [0.05, 0.3, 1.0])
def test_mean_and_spread(post, t):
    p, ref = post
    k = 40000
    x = p.sample(t, k, seed=int(t * 100)).astype(np.float64)
    assert x.shape == (k, 12)
    s, v = vp_noise(t)
    w = ref.omega()
    assert p.effective_atoms > 5
    abar = w @ ref.A
    spread = ref.spread(s, v)
    # Closed form through the package too.
    assert p.exact_spread(t) == pytest.approx(spread, rel=1e-6)  # ω from float32 A(a_i)
    # The sample mean: E‖x̄ − s ā‖² = spread / k.
    dev = np.sum((x.mean(0) - s * abar) ** 2)
    assert dev <= 6 * spread / k, (dev, spread / k)
    # The sample spread, against its own Monte-Carlo standard error.
    sq = np.sum((x - x.mean(0)) ** 2, axis=1)
    got = sq.sum() / (k - 1)
    se = sq.std() / np.sqrt(k)
    record(f"sample spread rel. deviation t={t} (k={k})", abs(got - spread) / spread)
    assert abs(got - spread) <= 5 * se, (got, spread, se)


def test_t0_draws_atoms_with_the_posterior_weights(post):
    p, ref = post
    k = 50000
    x = p.sample(0.0, k, seed=3)
    # Every draw is an atom exactly.
    d2 = ((x[:, None, :].astype(np.float64) - ref.A[None]) ** 2).sum(-1)
    idx = d2.argmin(1)
    assert np.all(d2[np.arange(k), idx] == 0)
    freq = np.bincount(idx, minlength=len(ref.A)) / k
    w = ref.omega()
    # Each frequency within 5 binomial standard errors of ω_i.
    se = np.sqrt(w * (1 - w) / k) + 1e-12
    assert np.all(np.abs(freq - w) <= 5 * se + 1.0 / k)


def test_seeded(post):
    p, _ = post
    a, b, c = p.sample(0.5, 10, seed=1), p.sample(0.5, 10, seed=1), p.sample(0.5, 10, seed=2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.dtype == np.float32
    assert p.sample(0.5, 0).shape == (0, 12)
