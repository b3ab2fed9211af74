"""Every score method of the package against the command line `fslens score` on the same
inputs (relative error ≤ 1e-6; both run the library's CPU backend). The binary is
$FSLENS_BIN, else target/{release,debug}/fslens (under $CARGO_TARGET_DIR first); the tests
skip with the reason when it is absent, and fail instead when FSLENS_REQUIRE_BIN=1."""

import subprocess

import numpy as np
import pytest

import fslens
from conftest import DEMO, f32, record, rel_err, vp_noise

TOL = 1e-6
METHODS = ["fsr", "prior", "sigma-dps", "zeta-dps", "pigdm", "tmpd"]


def cli_score(cli, tmp, sigma, x, t, method, operator, shape=None, extra=()):
    np.save(tmp / "x.npy", np.asarray(x, dtype=np.float32))
    out = tmp / "out.npy"
    cmd = [
        str(cli), "score", "--atoms", "atoms.npy", "--x", "x.npy", "--t", repr(float(t)),
        "--method", method, "--y", "y.npy", "--operator", operator, "--sigma", repr(float(sigma)),
        "--out", str(out), "--backend", "cpu", *extra,
    ]
    if shape:
        cmd += ["--shape", shape]
    r = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stderr}"
    return np.load(out)


def problem_dir(tmp_path, atoms, y, M=None):
    d = tmp_path
    np.save(d / "atoms.npy", np.asarray(atoms, dtype=np.float32))
    np.save(d / "y.npy", np.asarray(y, dtype=np.float32))
    if M is not None:
        np.save(d / "M.npy", np.asarray(M, dtype=np.float32))
    return d


@pytest.mark.parametrize("t", [0.05, 0.5, 1.0])
def test_matrix_operator_matches_cli(cli, small, tmp_path, t):
    d = problem_dir(tmp_path, small["atoms"], small["y"], small["M"])
    sig = small["sigma"]
    prior = fslens.Prior(small["atoms"], backend="cpu")
    post = prior.posterior(small["y"], operator=small["M"], sigma=small["sigma"])
    rng = np.random.default_rng(int(t * 100))
    s, v = vp_noise(t)
    x = f32(s * small["atoms"][rng.integers(0, 40, 5)] + np.sqrt(v) * rng.normal(size=(5, 12)))
    for method in METHODS:
        extra = ("--zeta", "0.7") if method == "zeta-dps" else ()
        kw = {"zeta": 0.7} if method == "zeta-dps" else {}
        want = cli_score(cli, d, sig, x, t, method, "matrix:M.npy", extra=extra)
        got = post.score(x, t, method=method, **kw)
        e = rel_err(got, want)
        record(f"cli matrix score[{method}]", e)
        assert e <= TOL, f"{method} at t={t}: {e:.3e}"
    # The prior's own score is the CLI's `prior` method too.
    e = rel_err(prior.score(x, t), cli_score(cli, d, sig, x, t, "prior", "matrix:M.npy"))
    assert e <= TOL


def test_demo_config_matches_cli(cli, tmp_path):
    prior = fslens.Prior.from_config(DEMO, backend="cpu")
    post = prior.posterior()
    d = problem_dir(tmp_path, prior.atoms, prior.y)
    rng = np.random.default_rng(1)
    for t in [0.1, 0.6]:
        s, v = vp_noise(t)
        x = f32(s * prior.truth[None, :] + np.sqrt(v) * rng.normal(size=(3, 256)))
        for method in METHODS:
            want = cli_score(cli, d, prior.sigma, x, t, method, prior.operator, shape="16x16x1")
            e = rel_err(post.score(x, t, method=method), want)
            record(f"cli demo score[{method}]", e)
            assert e <= TOL, f"{method} at t={t}: {e:.3e}"
