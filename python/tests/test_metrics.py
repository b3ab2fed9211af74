"""post.metrics(cloud, t) against an independent float64 numpy computation of every field that
does not depend on the exact cloud's random draws (design §6): the spread and its closed form,
nearest atoms and mode weights, hallucination, data fits, PSNR of the Tweedie means; the
off-support rate against the record's own threshold; and the exact cloud's own behaviour
(spread ratio ≈ 1, no hallucination) within Monte-Carlo error."""

import math

import numpy as np
import pytest

import fslens
from conftest import DEMO, Reference, f32, record, rel_err, vp_noise


def nearest(ref, x, s):
    """argmin_i ‖x − s a_i‖ and ‖x/s − a_nearest‖, float64 direct differences (in chunks of
    rows, to bound the K × N × D temporary)."""
    x = np.asarray(x, np.float64)
    idx, dist = [], []
    for c in range(0, len(x), 16):
        d2 = ((x[c : c + 16, None, :] - s * ref.A[None]) ** 2).sum(-1)
        i = d2.argmin(1)
        idx.append(i)
        dist.append(np.sqrt(d2[np.arange(len(i)), i]) / s)
    return np.concatenate(idx), np.concatenate(dist)


def psnr(x, truth):
    mse = ((x - truth) ** 2).mean(-1)
    return 10 * np.log10(4.0 / mse)


def spread(cloud):
    c = np.asarray(cloud, np.float64)
    return float(((c - c.mean(0)) ** 2).sum() / (len(c) - 1))


@pytest.fixture(scope="module")
def small_post(small):
    prior = fslens.Prior(small["atoms"], backend="cpu")
    post = prior.posterior(small["y"], operator=small["M"], sigma=small["sigma"])
    return post, Reference(small["atoms"], small["M"], small["y"], small["sigma"])


@pytest.mark.parametrize("t", [0.02, 0.3, 0.9])
def test_fields_against_float64(small_post, small, t):
    post, ref = small_post
    s, v = vp_noise(t)
    rng = np.random.default_rng(int(t * 1000))
    # Exact draws, a few of them pushed far off the atoms.
    cloud = post.sample(t, 300, seed=7).astype(np.float64)
    cloud[:20] += 3.0 * rng.normal(size=(20, cloud.shape[1]))
    cloud = f32(cloud)
    m = post.metrics(cloud, t, truth=small["truth"])
    assert m["t"] == t
    record("metrics spread", rel_err(m["spread"], spread(cloud)))
    assert m["spread"] == pytest.approx(spread(cloud), rel=1e-9)
    assert m["exact_spread"] == pytest.approx(ref.spread(s, v), rel=1e-6)
    assert m["spread_ratio"] == pytest.approx(spread(cloud) / ref.spread(s, v), rel=1e-6)
    # Off support: the fraction beyond the record's own threshold, from float64 distances.
    _, dist = nearest(ref, cloud, s)
    assert m["off_support_rate"] == pytest.approx((dist > m["off_support_distance"]).mean(), abs=1e-12)
    assert m["off_support_rate"] >= 20 / 300 - 1e-12
    # Data fits: ‖y − M x‖² / (m σ²) of x/s and of the prior Tweedie means.
    k = len(small["y"])
    fit = lambda xs: ((small["y"][None] - xs @ small["M"].T) ** 2).sum(1) / (k * small["sigma"] ** 2)
    means = ref.mean(cloud, s, v)
    for key, xs in [("data_fit_scaled", cloud / s), ("data_fit_denoised", means)]:
        want = fit(xs)
        assert m[key]["mean"] == pytest.approx(want.mean(), rel=1e-4), key
        assert m[key]["std"] == pytest.approx(want.std(ddof=1), rel=1e-3), key
    p = psnr(means, small["truth"])
    assert m["psnr_denoised"]["mean"] == pytest.approx(p.mean(), rel=1e-4)
    assert m["psnr_denoised_mean"] == pytest.approx(psnr(means.mean(0), small["truth"]), rel=1e-4)
    # Mode weights: the fraction of particles per mode, over the modes' own exact masses.
    names, exact = post.modes
    assert len(m["mode_weights"]) == len(names) == len(exact)
    assert sum(m["mode_weights"]) == pytest.approx(1.0, abs=1e-12)
    assert m["mode_tv"] == pytest.approx(0.5 * np.abs(np.array(m["mode_weights"]) - exact).sum(), abs=1e-12)


def test_without_truth_psnr_is_none_and_shapes_are_accepted(small_post):
    post, _ = small_post
    cloud = post.sample(0.5, 50, seed=1)
    m = post.metrics(cloud, 0.5)
    assert m["psnr_denoised"]["mean"] is None and m["ssim_denoised_mean"] is None
    assert m["data_fit_scaled"]["mean"] is not None
    # (K, H, W, C) in HWC order gives the same record.
    m4 = post.metrics(cloud.reshape(50, 12, 1, 1), 0.5)
    assert m4 == m


def test_demo_classes_hallucination_and_exact_draws():
    """On the demo's config (labelled shapes, downsample:4): mode weights and hallucination
    from float64 nearest atoms; exact draws have spread ratio ≈ 1 and no hallucination; the
    config's truth is the default for the config's own posterior."""
    prior = fslens.Prior.from_config(DEMO, backend="cpu")
    post = prior.posterior()
    names, exact = post.modes
    assert len(names) >= 3 and abs(exact.sum() - 1) < 1e-12
    ref = Reference(prior.atoms, log_likelihood=post.log_likelihood)
    labels = np.asarray(prior.labels)
    for t in [0.05, 0.5]:
        s, v = vp_noise(t)
        cloud = post.sample(t, 4000, seed=3)
        m = post.metrics(cloud, t)
        assert m["psnr_denoised"]["mean"] is not None  # the config's truth
        # Closed form vs Monte Carlo: tr Cov of k exact draws has relative s.e. ~ sqrt(2/k·…).
        record(f"demo exact spread ratio − 1 (t={t})", abs(m["spread_ratio"] - 1))
        assert abs(m["spread_ratio"] - 1) < 0.06, m["spread_ratio"]
        if t < 0.1:
            # Near t = 0 an exact draw's nearest atom is its own; at large t it is often
            # another class's (the nearest-atom rule's known limit, which
            # mode_tv_to_exact_cloud compares like with like).
            assert m["hallucination_rate"] == 0.0, t
        idx, _ = nearest(ref, cloud[:400], s)
        m1 = post.metrics(cloud[:400], t)
        want = np.bincount(labels[idx], minlength=len(names)) / 400
        assert np.allclose(m1["mode_weights"], want, atol=1e-12)
        ruled_out = exact < 1e-3
        assert m1["hallucination_rate"] == pytest.approx(ruled_out[labels[idx]].mean(), abs=1e-12)
    # Prior draws land in ruled-out classes: hallucination = their prior mass.
    prior_draws = prior.atoms[np.random.default_rng(0).integers(0, prior.n_atoms, 400)]
    m0 = post.metrics(prior_draws, 0.0)
    idx, _ = nearest(ref, prior_draws, 1.0)
    assert m0["hallucination_rate"] == pytest.approx((exact < 1e-3)[labels[idx]].mean(), abs=1e-12)
    # At t = 0 the "denoised" fields are the samples themselves.
    truth = prior.truth.astype(np.float64)
    assert m0["psnr_denoised"]["mean"] == pytest.approx(psnr(prior_draws.astype(np.float64), truth).mean(), rel=1e-6)


def test_bad_input(small_post):
    post, _ = small_post
    cloud = post.sample(0.5, 10, seed=1)
    with pytest.raises(ValueError, match=r"cloud has shape \(10, 5\)"):
        post.metrics(cloud[:, :5], 0.5)
    with pytest.raises(ValueError, match=r"t = 1.5 is outside \[0, 1\]"):
        post.metrics(cloud, 1.5)
    with pytest.raises(ValueError, match=r"truth has 3 values"):
        post.metrics(cloud, 0.5, truth=np.zeros(3))
    bad = cloud.copy()
    bad[2, 3] = np.nan
    with pytest.raises(ValueError, match=r"cloud\[2, 3\] is NaN"):
        post.metrics(bad, 0.5)
    with pytest.raises(TypeError, match="cloud must be a float32 or float64 array"):
        post.metrics(cloud.astype(np.int32), 0.5)
    assert math.isfinite(post.metrics(cloud, 0.5)["spread"])
