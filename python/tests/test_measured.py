"""Per-entry noise σ_j and y as data: the posterior against a float64 numpy naive sum of
b_i = −Σ_j (y_j − (M a_i)_j)² / (2σ_j²), and a config whose y is a measured file."""

import numpy as np
import pytest

import fslens
from conftest import Reference, f32, record, rel_err, vp_noise

TOL = 1e-4


def naive_b(atoms, M, y, sigma):
    A = np.asarray(atoms, dtype=np.float64)
    r = np.asarray(y, dtype=np.float64)[None, :] - A @ np.asarray(M, dtype=np.float64).T
    return -(r * r / (2.0 * np.asarray(sigma, dtype=np.float64) ** 2)[None, :]).sum(1)


def test_per_entry_sigma_weights_and_score(small):
    atoms, M, y = small["atoms"], small["M"], small["y"]
    sigma = np.linspace(0.15, 0.6, len(y))
    prior = fslens.Prior(atoms, backend="cpu")
    post = prior.posterior(y, operator=M, sigma=sigma)
    ref = Reference(atoms, log_likelihood=naive_b(atoms, M, y, sigma))
    err = rel_err(post.weights, ref.omega())
    record("per-entry sigma weights", err)
    assert err <= TOL
    # b_i up to a constant: compare differences to the first atom.
    b = post.log_likelihood
    assert rel_err(b - b[0], ref.b - ref.b[0], floor=1.0) <= TOL
    rng = np.random.default_rng(7)
    for t in [0.05, 0.3]:
        s, v = vp_noise(t)
        idx = rng.integers(0, len(atoms), 4)
        x = f32(s * ref.A[idx] + np.sqrt(v) * rng.normal(size=(4, atoms.shape[1])))
        err = rel_err(post.score(x, t), ref.score(x, s, v, posterior=True))
        record(f"per-entry sigma score t={t}", err)
        assert err <= TOL, (t, err)
    # A spec-string operator takes σ_j too; equal σ_j are the scalar σ.
    y0 = np.zeros(atoms.shape[1], np.float32)
    flat = prior.posterior(y0, operator="identity", sigma=np.full(atoms.shape[1], 0.3))
    same = prior.posterior(y0, operator="identity", sigma=0.3)
    assert rel_err(flat.weights, same.weights) <= 1e-6


def test_per_entry_sigma_is_checked_by_the_library(small):
    prior = fslens.Prior(small["atoms"], backend="cpu")
    y, M = small["y"], small["M"]
    with pytest.raises(ValueError, match="m = 5"):
        prior.posterior(y, operator=M, sigma=np.full(4, 0.2))
    with pytest.raises(ValueError, match="entry 2"):
        prior.posterior(y, operator=M, sigma=np.array([0.2, 0.2, -1.0, 0.2, 0.2]))


def test_config_with_measured_y_has_no_truth(tmp_path):
    m = 16
    y = (0.3 * np.sin(0.7 * np.arange(m)) - 0.2).astype(np.float32)
    np.save(tmp_path / "y.npy", y)
    (tmp_path / "run.toml").write_text(
        'seed = 5\nbackend = "cpu"\n[data]\nkind = "synthetic"\ncount = 60\nsize = 16\n'
        '[measurement]\noperator = "downsample:4"\nsigma = 0.2\ny = "y.npy"\n'
    )
    prior = fslens.Prior.from_config(str(tmp_path / "run.toml"))
    assert prior.truth is None
    assert prior.atoms.shape[0] == 60  # nothing held out
    np.testing.assert_array_equal(prior.y, y)
    post = prior.posterior()
    # Block averages of 4×4 pixels: the dense matrix of downsample:4 on 16×16.
    M = np.zeros((m, 256))
    for j in range(m):
        r, c = divmod(j, 4)
        for p in range(4 * r, 4 * r + 4):
            M[j, 16 * p + 4 * c : 16 * p + 4 * c + 4] = 1 / 16
    ref = Reference(prior.atoms, log_likelihood=naive_b(prior.atoms, M, y, np.full(m, 0.2)))
    err = rel_err(post.weights, ref.omega())
    record("measured y weights", err)
    assert err <= TOL
