"""Every method of the package against the independent float64 numpy oracle (conftest):
relative error ≤ 1e-4 on a fresh random problem and on the demo config."""

import numpy as np
import pytest

import fslens
from conftest import DEMO, Reference, f32, record, rel_err, vp_noise

TOL = 1e-4
TIMES = [0.02, 0.1, 0.3, 0.7, 1.0]
APPROX = ["sigma-dps", "zeta-dps", "pigdm", "tmpd"]


@pytest.fixture(scope="module")
def lens(small):
    prior = fslens.Prior(small["atoms"], backend="cpu")
    post = prior.posterior(small["y"], operator=small["M"], sigma=small["sigma"])
    ref = Reference(small["atoms"], small["M"], small["y"], small["sigma"])
    return prior, post, ref


def particles(ref, t, rng, b=6):
    """x_t = s a + √v ε around random atoms (where the weights are interesting)."""
    s, v = vp_noise(t)
    idx = rng.integers(0, len(ref.A), b)
    return f32(s * ref.A[idx] + np.sqrt(v) * rng.normal(size=(b, ref.A.shape[1])))


@pytest.mark.parametrize("t", TIMES)
def test_prior_methods(lens, small, t):
    prior, _, ref = lens
    rng = np.random.default_rng(int(t * 1000))
    x = particles(ref, t, rng)
    g = f32(rng.normal(size=x.shape))
    s, v = vp_noise(t)
    for name, got, want in [
        ("prior.denoise", prior.denoise(x, t), ref.mean(x, s, v)),
        ("prior.score", prior.score(x, t), ref.score(x, s, v)),
        ("prior.eps", prior.eps(x, t), ref.eps(x, s, v)),
        ("prior.cov_apply", prior.cov_apply(x, t, g), ref.cov_apply(x, s, v, g)),
        ("prior.denoiser_vjp", prior.denoiser_vjp(x, t, g), (s / v) * ref.cov_apply(x, s, v, g)),
    ]:
        assert got.dtype == np.float32 and got.shape == x.shape
        # C g is ~0 when one atom holds all the weight (t = 0.02 here): relative to 1e-6·|g|.
        floor = 1e-6 * np.abs(g).max() * ((s / v) if name.endswith("vjp") else 1.0)
        e = rel_err(got, want, floor if "cov" in name or "vjp" in name else 0.0)
        record(f"random {name}", e)
        assert e <= TOL, f"{name} at t={t}: relative error {e:.3e}"


@pytest.mark.parametrize("t", TIMES)
@pytest.mark.parametrize("method", ["fsr", "prior"] + APPROX)
def test_posterior_scores(lens, t, method):
    _, post, ref = lens
    rng = np.random.default_rng(int(t * 1000) + 7)
    x = particles(ref, t, rng)
    s, v = vp_noise(t)
    kw = {"zeta": 0.7} if method == "zeta-dps" else {}
    got = post.score(x, t, method=method, **kw)
    e = rel_err(got, ref.method_score(x, s, v, method, zeta=kw.get("zeta", 1.0)))
    record(f"random post.score[{method}]", e)
    assert e <= TOL, f"{method} at t={t}: relative error {e:.3e}"


def test_vjp_with_the_forward_means(lens):
    prior, _, ref = lens
    rng = np.random.default_rng(8)
    ts = np.array([0.2, 0.2, 0.6, 0.6, 0.9, 0.2])
    x = np.concatenate([particles(ref, t, rng, b=1) for t in ts])
    g = f32(rng.normal(size=x.shape))
    m = prior.denoise(x, ts)
    # Equal up to float32 rounding (the CPU engine may reuse the weights of its last pass).
    e = rel_err(prior.denoiser_vjp(x, ts, g, means=m), prior.denoiser_vjp(x, ts, g))
    record("random prior.denoiser_vjp(means=) vs without", e)
    assert e <= 1e-5


def test_posterior_weights_and_mean(lens):
    prior, post, ref = lens
    w = post.weights
    assert w.dtype == np.float64 and w.shape == (prior.n_atoms,)
    e = rel_err(w, ref.omega())
    record("random post.weights", e)
    assert e <= 1e-6
    eff = 1.0 / np.sum(ref.omega() ** 2)
    assert abs(post.effective_atoms - eff) <= 1e-6 * eff
    assert np.allclose(post.log_likelihood - post.log_likelihood.max(), ref.b - ref.b.max(), rtol=1e-6, atol=1e-6)
    rng = np.random.default_rng(3)
    for t in TIMES:
        x = particles(ref, t, rng)
        s, v = vp_noise(t)
        e = rel_err(post.denoise(x, t), ref.mean(x, s, v, posterior=True))
        record("random post.denoise", e)
        assert e <= TOL


@pytest.mark.parametrize("t", TIMES)
def test_posterior_denoiser_vjp(lens, t):
    """(s/v) C̃ g under the posterior weights, against the closed form and against central
    finite differences of the float64 posterior mean (both from the numpy oracle)."""
    _, post, ref = lens
    rng = np.random.default_rng(int(t * 1000) + 31)
    x = particles(ref, t, rng)
    g = f32(rng.normal(size=x.shape))
    s, v = vp_noise(t)
    want = (s / v) * ref.cov_apply(x, s, v, g, posterior=True)
    # Rows where one atom holds all the weight have C̃ g ≈ 0: an absolute floor (as above).
    floor = 1e-6 * np.abs(g).max() * (s / v)
    got = post.denoiser_vjp(x, t, g)
    assert got.dtype == np.float32 and got.shape == x.shape
    e = rel_err(got, want, floor)
    record("random post.denoiser_vjp", e)
    assert e <= TOL, f"t={t}: relative error {e:.3e}"
    e = rel_err(post.denoiser_vjp(x, t, g, means=post.denoise(x, t)), want, floor)
    record("random post.denoiser_vjp(means=)", e)
    assert e <= TOL
    fd = ref.mean_vjp_fd(x, s, v, g, posterior=True, h=1e-6 * np.sqrt(v))
    e = rel_err(got, fd, floor)
    record("random post.denoiser_vjp vs finite differences", e)
    assert e <= TOL, f"t={t}: relative error to finite differences {e:.3e}"


def test_cg_cap_is_a_runtime_warning(lens):
    """pigdm and tmpd solves that stop at the iteration cap warn (RuntimeWarning naming the
    sampler and the fix) and still return the score; converged solves do not warn. tmpd
    falls back to dense solves for m ≤ 64, so its case measures m = 70 values."""
    import warnings

    _, post, ref = lens
    rng = np.random.default_rng(12)
    d, m = 80, 70
    atoms = f32(rng.uniform(-1, 1, (30, d)))
    M = f32(rng.normal(size=(m, d)) / np.sqrt(m))
    wide = fslens.Prior(atoms, backend="cpu").posterior(f32(M @ atoms[3]), operator=M, sigma=0.1)
    s, v = vp_noise(0.5)
    cases = [
        ("pigdm", post, particles(ref, 0.5, rng)),
        ("tmpd", wide, f32(s * atoms[:4] + np.sqrt(v) * rng.normal(size=(4, d)))),
    ]
    for method, p, x in cases:
        with pytest.warns(RuntimeWarning, match=rf"{method}: \d+ of \d+ conjugate-gradient solves stopped at 1 iterations") as caught:
            got = p.score(x, 0.5, method=method, cg_tolerance=1e-12, cg_max_iterations=1)
        assert got.shape == x.shape and np.all(np.isfinite(got))
        assert all("cg_max_iterations" in str(w.message) for w in caught)
        # The warning points at the caller's line, not inside the package.
        assert all(w.filename == __file__ for w in caught)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            p.score(x, 0.5, method=method, cg_max_iterations=500)


def test_dropped_posteriors_leave_the_engine(small):
    """Each posterior's bias lives in the engine while the posterior does: a loop making
    posteriors holds one at a time, and the ones kept give the same results bit for bit."""
    import gc

    prior = fslens.Prior(small["atoms"], backend="cpu")
    keep = prior.posterior(small["y"], operator=small["M"], sigma=small["sigma"])
    x = particles(Reference(small["atoms"]), 0.3, np.random.default_rng(4))
    before = keep.score(x, 0.3)
    assert prior._core.live_biases == 1
    for k in range(50):
        p = prior.posterior(small["y"], operator=small["M"], sigma=0.1 + 0.01 * k)
        p.score(x, 0.3)
    del p
    gc.collect()
    assert prior._core.live_biases == 1
    assert np.array_equal(keep.score(x, 0.3), before)
    del keep
    gc.collect()
    assert prior._core.live_biases == 0


def test_per_row_times(lens):
    prior, post, ref = lens
    rng = np.random.default_rng(11)
    ts = np.array([0.1, 0.5, 0.1, 0.9, 0.5, 0.5])
    x = np.concatenate([particles(ref, t, rng, b=1) for t in ts])
    want_prior = np.concatenate([ref.score(x[i : i + 1], *vp_noise(t)) for i, t in enumerate(ts)])
    e = rel_err(prior.score(x, ts), want_prior)
    record("random prior.score per-row t", e)
    assert e <= TOL
    for method in ["fsr", "tmpd"]:
        want = np.concatenate([ref.method_score(x[i : i + 1], *vp_noise(t), method) for i, t in enumerate(ts)])
        e = rel_err(post.score(x, ts, method=method), want)
        record(f"random post.score[{method}] per-row t", e)
        assert e <= TOL
    # Per-row results equal the one-time calls exactly (the same engine passes).
    one = np.concatenate([prior.denoise(x[i : i + 1], t) for i, t in enumerate(ts)])
    assert np.array_equal(prior.denoise(x, ts), one)


def test_float64_inputs_and_vectors(lens):
    prior, _, ref = lens
    rng = np.random.default_rng(5)
    x64 = particles(ref, 0.4, rng) + 1e-9  # not float32-representable: rounded on the way in
    assert np.array_equal(prior.denoise(x64, 0.4), prior.denoise(x64.astype(np.float32), 0.4))
    row = prior.denoise(x64[0], np.float64(0.4))  # a (D,) vector is one row
    assert row.shape == (1, prior.dim)


def test_log_likelihood_posterior(lens, small):
    prior, _, ref = lens
    rng = np.random.default_rng(9)
    b = rng.normal(size=prior.n_atoms) * 3
    post = prior.posterior_from_log_likelihood(b)
    r2 = Reference(small["atoms"], log_likelihood=b)
    assert rel_err(post.weights, r2.omega()) <= 1e-9
    for t in [0.05, 0.5]:
        x = particles(ref, t, rng)
        s, v = vp_noise(t)
        e = rel_err(post.score(x, t), r2.score(x, s, v, posterior=True))
        record("random loglik post.score[fsr]", e)
        assert e <= TOL


def test_spec_operator_posterior(small):
    """A spec-string operator on images of a given shape: a box inpainting mask of 3 × 4."""
    prior = fslens.Prior(small["atoms"], backend="cpu", shape=(3, 4, 1))
    # box:x=1,y=0,w=2,h=2 hides columns 1–2 of rows 0–1: the kept pixels are the rest.
    hidden = {r * 4 + c for r in (0, 1) for c in (1, 2)}
    kept = [i for i in range(12) if i not in hidden]
    M = np.eye(12)[kept]
    y = f32(M @ small["truth"])
    post = prior.posterior(y, operator="box:x=1,y=0,w=2,h=2", sigma=0.2)
    assert post.operator.startswith("box")
    ref = Reference(small["atoms"], M, y, 0.2)
    assert rel_err(post.weights, ref.omega()) <= 1e-6
    rng = np.random.default_rng(2)
    for t in [0.05, 0.5]:
        x = particles(ref, t, rng)
        s, v = vp_noise(t)
        for method in ["fsr"] + APPROX:
            e = rel_err(post.score(x, t, method=method), ref.method_score(x, s, v, method))
            record(f"box post.score[{method}]", e)
            assert e <= TOL, (method, t, e)


def test_uint8_atoms(small):
    rng = np.random.default_rng(4)
    k = rng.integers(0, 256, (30, 16)).astype(np.uint8)
    prior = fslens.Prior(k, backend="cpu")
    mapped = 2 * k.astype(np.float64) / 255 - 1
    assert np.array_equal(prior.atoms, mapped.astype(np.float32))
    ref = Reference(f32(mapped))
    x = particles(ref, 0.3, rng)
    e = rel_err(prior.denoise(x, 0.3), ref.mean(x, *vp_noise(0.3)))
    record("uint8 prior.denoise", e)
    assert e <= TOL


def test_vp_schedule():
    vp = fslens.VP(beta_min=0.01, beta_max=20)
    for t in [1e-3, 0.1, 0.5, 1.0]:
        s, v = vp.noise(t)
        s0, v0 = vp_noise(t)
        assert abs(s - s0) <= 1e-15 and abs(v - v0) <= 1e-15 * max(1, v0)
        assert abs(vp.alpha_bar(t) - s0 * s0) <= 1e-15
    ts = np.array([0.1, 0.2])
    s, v = vp.noise(ts)
    assert s.shape == (2,) and np.allclose(s * s + v, 1)
    assert fslens.VP(0.1, 5).alpha_bar(1.0) == pytest.approx(np.exp(-0.1 - 0.5 * 4.9))
    prior = fslens.Prior(np.zeros((2, 4)) + [[0.5], [-0.5]], backend="cpu", schedule=fslens.VP(0.1, 5))
    # Two atoms ±0.5: the mean at x = 0 is 0 under any schedule; at x = s·a it leans to a.
    x = np.full((1, 4), np.sqrt(fslens.VP(0.1, 5).alpha_bar(0.5)) * 0.5)
    s, v = fslens.VP(0.1, 5).noise(0.5)
    d2p, d2m = ((x - s * 0.5) ** 2).sum(), ((x + s * 0.5) ** 2).sum()
    wp = 1 / (1 + np.exp(-(d2m - d2p) / (2 * v)))
    assert prior.denoise(x, 0.5)[0, 0] == pytest.approx(0.5 * wp - 0.5 * (1 - wp), rel=1e-5)


# ---------------------------------------------------------------------------------------
# The demo config (assets/configs/demo.toml): 2999 atoms of 16 × 16 shapes, downsample:4.


def block_average_matrix(h, w, k):
    M = np.zeros(((h // k) * (w // k), h * w))
    for bi in range(h // k):
        for bj in range(w // k):
            for i in range(k):
                for j in range(k):
                    M[bi * (w // k) + bj, (bi * k + i) * w + bj * k + j] = 1.0 / (k * k)
    return M


@pytest.fixture(scope="module")
def demo():
    prior = fslens.Prior.from_config(DEMO, backend="cpu")
    post = prior.posterior()
    M = block_average_matrix(16, 16, 4)
    ref = Reference(prior.atoms, M, prior.y, prior.sigma)
    return prior, post, ref


def test_demo_config_facts(demo):
    prior, post, ref = demo
    assert prior.n_atoms == 2999 and prior.dim == 256 and prior.shape == (16, 16, 1)
    assert prior.operator == "downsample:4" and prior.sigma == 0.1
    assert prior.truth.shape == (256,) and prior.y.shape == (16,)
    # y = A(truth) + σ ε: the residual is noise-sized.
    assert np.linalg.norm(ref.M @ prior.truth - prior.y) < 5 * 0.1 * 4
    e = rel_err(post.weights, ref.omega())
    record("demo post.weights", e)
    assert e <= 1e-5
    assert 1 <= post.effective_atoms <= prior.n_atoms
    # The config's posterior is the one of its measurement through the spec string.
    again = prior.posterior(prior.y, operator=prior.operator, sigma=prior.sigma)
    assert np.array_equal(again.weights, post.weights)


@pytest.mark.parametrize("t", [0.05, 0.3, 0.8])
def test_demo_methods(demo, t):
    prior, post, ref = demo
    rng = np.random.default_rng(int(t * 100))
    s, v = vp_noise(t)
    x = f32(s * prior.truth[None, :] + np.sqrt(v) * rng.normal(size=(4, 256)))
    g = f32(rng.normal(size=x.shape))
    checks = [
        ("demo prior.denoise", prior.denoise(x, t), ref.mean(x, s, v)),
        ("demo prior.score", prior.score(x, t), ref.score(x, s, v)),
        ("demo prior.eps", prior.eps(x, t), ref.eps(x, s, v)),
        ("demo prior.cov_apply", prior.cov_apply(x, t, g), ref.cov_apply(x, s, v, g)),
        ("demo prior.denoiser_vjp", prior.denoiser_vjp(x, t, g), (s / v) * ref.cov_apply(x, s, v, g)),
        ("demo post.denoise", post.denoise(x, t), ref.mean(x, s, v, posterior=True)),
    ]
    for method in ["fsr", "prior"] + APPROX:
        checks.append((f"demo post.score[{method}]", post.score(x, t, method=method), ref.method_score(x, s, v, method)))
    for name, got, want in checks:
        floor = 1e-6 * np.abs(g).max() * ((s / v) if name.endswith("vjp") else 1.0)
        e = rel_err(got, want, floor if "cov" in name or "vjp" in name else 0.0)
        record(name, e)
        assert e <= TOL, f"{name} at t={t}: relative error {e:.3e}"
