"""Bad input raises ValueError or TypeError naming the argument (and, where there is one,
the fix) — never a pyo3 PanicException or a process abort. Checked through the package and,
for the arguments the Rust layer sees, through the extension module directly."""

import numpy as np
import pytest

import fslens
from fslens import _fslens


@pytest.fixture(scope="module")
def prior(small):
    return fslens.Prior(small["atoms"], backend="cpu")


@pytest.fixture(scope="module")
def post(prior, small):
    return prior.posterior(small["y"], operator=small["M"], sigma=small["sigma"])


X = np.zeros((2, 12), dtype=np.float32)


def no_panic(excinfo):
    assert type(excinfo.value).__name__ != "PanicException"


@pytest.mark.parametrize(
    "make, exc, match",
    [
        (lambda: fslens.Prior(np.zeros((3, 4), dtype=np.int64)), TypeError, "atoms must be float32"),
        (lambda: fslens.Prior(np.zeros(4)), ValueError, r"atoms has shape \(4,\)"),
        (lambda: fslens.Prior(np.zeros((0, 4))), ValueError, "atoms has shape"),
        (lambda: fslens.Prior(np.array([[0.0, np.nan]])), ValueError, r"atoms\[0, 1\] is NaN"),
        (lambda: fslens.Prior(np.array([[0.0, 1e300]])), ValueError, "atoms.*too large for float32"),
        (lambda: fslens.Prior(np.zeros((3, 4)), backend="tpu"), ValueError, 'backend: unknown backend "tpu"; expected one of auto, cpu, gpu'),
        (lambda: fslens.Prior(np.zeros((3, 4)), storage="f8"), ValueError, "storage: unknown atom storage"),
        (lambda: fslens.Prior(np.zeros((3, 4)), backend=1), TypeError, "backend must be a string"),
        (lambda: fslens.Prior(np.zeros((3, 4)), shape=(2, 3, 1)), ValueError, "shape: 2x3x1 has 6 values but the atoms have D = 4"),
        (lambda: fslens.Prior(np.zeros((3, 4)), schedule=fslens.VP(0.1, 0.01)), ValueError, "beta_max"),
        (lambda: fslens.VP(beta_min=0), ValueError, "beta_min: must be > 0"),
        (lambda: fslens.Prior.from_config("no/such/config.toml"), ValueError, "no/such/config.toml"),
    ],
)
def test_bad_prior(make, exc, match):
    with pytest.raises(exc, match=match) as e:
        make()
    no_panic(e)


def cases(prior, post):
    x = X
    return [
        (lambda: prior.denoise(np.zeros((2, 5)), 0.5), ValueError, r"x has shape \(2, 5\) but must have shape \(B, 12\)"),
        (lambda: prior.denoise(np.zeros((2, 12), dtype=np.int32), 0.5), TypeError, "x must be a float32 or float64 array"),
        (lambda: prior.denoise(np.zeros((2, 3, 4)), 0.5), ValueError, "x has shape"),
        (lambda: prior.score(np.full((2, 12), np.nan), 0.5), ValueError, r"x\[0, 0\] is NaN"),
        (lambda: prior.score(x, 0.0), ValueError, r"t = 0.0 is outside \(0, 1\]"),
        (lambda: prior.score(x, 1.5), ValueError, r"t = 1.5 is outside \(0, 1\]"),
        (lambda: prior.score(x, -0.1), ValueError, "t = -0.1"),
        (lambda: prior.eps(x, float("nan")), ValueError, "t = nan"),
        (lambda: prior.eps(x, np.array([0.1, 0.2, 0.3])), ValueError, r"t has shape \(3,\); pass a float or one time per row, shape \(2,\)"),
        (lambda: prior.eps(x, "0.5"), TypeError, "t must be a float"),
        (lambda: prior.cov_apply(x, 0.5, np.zeros((3, 12))), ValueError, "g has 3 rows but x has 2"),
        (lambda: prior.cov_apply(x, 0.5, np.zeros((2, 11))), ValueError, r"g has shape \(2, 11\)"),
        (lambda: prior.posterior(np.zeros(4), operator=np.eye(5, 12), sigma=0.1), ValueError, r"y: has 4 values but operator matrix:<5x12 array> measures m = 5; pass y of shape \(5,\)"),
        (lambda: prior.posterior(np.zeros((5, 1)), operator=np.eye(5, 12), sigma=0.1), ValueError, "y has shape"),
        (lambda: prior.posterior(np.zeros(5), operator=np.eye(5, 12), sigma=0.0), ValueError, "sigma: must be a positive number"),
        (lambda: prior.posterior(np.zeros(5), operator=np.eye(5, 12), sigma="0.1"), TypeError, "sigma must be a positive float"),
        (lambda: prior.posterior(np.zeros(5), operator=np.eye(5, 12)), ValueError, "sigma is missing"),
        (lambda: prior.posterior(np.zeros(5), sigma=0.1), ValueError, "operator is missing"),
        (lambda: prior.posterior(np.zeros(5), operator=np.eye(5, 11), sigma=0.1), ValueError, r"operator has shape \(5, 11\) but a matrix operator must have shape \(m, 12\)"),
        (lambda: prior.posterior(np.zeros(5), operator=np.full((5, 12), np.nan), sigma=0.1), ValueError, "operator.* is NaN"),
        (lambda: prior.posterior(np.zeros(5), operator="blurr:sigma=1", sigma=0.1), ValueError, "operator: .*unknown operator `blurr`"),
        (lambda: prior.posterior(np.zeros(5), operator="downsample:5", sigma=0.1), ValueError, "downsample"),
        (lambda: prior.posterior_from_log_likelihood(np.zeros(3)), ValueError, r"log_likelihood has shape \(3,\) but must have shape \(40,\)"),
        (lambda: prior.posterior_from_log_likelihood(np.r_[np.zeros(39), -np.inf]), ValueError, r"log_likelihood\[39\] is -inf"),
        (lambda: post.score(x, 0.5, method="dps"), ValueError, 'method: unknown method "dps"; expected one of fsr, prior, sigma-dps'),
        (lambda: post.score(x, 0.5, method="zeta-dps", zeta=-1.0), ValueError, "zeta"),
        (lambda: post.score(x, 0.5, method="tmpd", cg_tolerance=2.0), ValueError, "cg_tolerance"),
        (lambda: post.score(x, 0.5, method="tmpd", cg_max_iterations=0), ValueError, "cg_max_iterations"),
        (lambda: prior.posterior_from_log_likelihood(np.zeros(40)).score(x, 0.5, method="tmpd"), ValueError, "method: tmpd needs the operator, y and σ"),
        (lambda: post.sample(1.5, 10), ValueError, r"t = 1.5 is outside \[0, 1\]"),
        (lambda: post.sample(0.5, -1), ValueError, "k must be >= 0"),
        (lambda: post.sample(0.5, 2.5), TypeError, "k must be an int"),
        (lambda: post.sample(0.5, 3, seed=-1), ValueError, "seed must be an int"),
    ]


def test_bad_calls(prior, post):
    for make, exc, match in cases(prior, post):
        with pytest.raises(exc, match=match) as e:
            make()
        no_panic(e)


def test_nonlinear_operator_refused_by_pigdm_and_tmpd(small):
    prior = fslens.Prior(small["atoms"], backend="cpu")
    post = prior.posterior(np.zeros(12), operator="saturation:gain=2", sigma=0.5)
    post.score(X, 0.5, method="sigma-dps")  # fine: any differentiable operator
    for method in ["pigdm", "tmpd"]:
        with pytest.raises(ValueError, match=f"method: sampler {method} needs a linear operator"):
            post.score(X, 0.5, method=method)


def test_extension_module_checks_too(prior):
    """The Rust layer refuses what the Python layer would have caught, without panicking."""
    core = prior._core
    t = np.array([0.5])
    bad = [
        (lambda: core.denoise(np.zeros((2, 12)), t), TypeError),  # float64 where float32 goes
        (lambda: core.denoise(np.zeros((2, 5), np.float32), t), ValueError),
        (lambda: core.denoise(np.zeros((2, 24), np.float32)[:, ::2], t), ValueError),  # not contiguous
        (lambda: core.denoise(np.full((1, 12), np.nan, np.float32), t), ValueError),
        (lambda: core.denoise(X, np.array([0.0])), ValueError),
        (lambda: core.denoise(X, np.array([0.1, 0.2, 0.3])), ValueError),
        (lambda: core.cov_apply(X, t, np.zeros((3, 12), np.float32)), ValueError),
        (lambda: core.posterior_spec(np.zeros(3, np.float32), "identity", -1.0), ValueError),
        (lambda: core.posterior_matrix(np.zeros(3, np.float32), np.zeros((3, 4), np.float32), 0.1), ValueError),
        (lambda: core.posterior_from_log_likelihood(np.full(40, np.nan)), ValueError),
        (lambda: core.posterior_config(), ValueError),
        (lambda: _fslens.Prior(np.zeros((0, 3), np.float32)), ValueError),
        (lambda: _fslens.Prior(np.zeros((3, 0), np.float32)), ValueError),
        (lambda: _fslens.vp_noise(-1.0, 20.0, np.zeros(1)), ValueError),
    ]
    for make, exc in bad:
        with pytest.raises(exc) as e:
            make()
        no_panic(e)
    # An empty batch is fine: (0, D) out.
    assert core.denoise(np.zeros((0, 12), np.float32), t).shape == (0, 12)
