"""Shared pieces of the fslens Python tests: an independent float64 numpy implementation of
design §3–§4 (the oracle), the error measure, and where to find the `fslens` binary."""

from __future__ import annotations

import os
import pathlib
import sys

import numpy as np
import pytest

import fslens

REPO = pathlib.Path(__file__).resolve().parents[2]
DEMO = REPO / "assets" / "configs" / "demo.toml"

#: Every test records its largest relative error here; the session prints them at the end.
ERRORS: dict = {}


def rel_err(got, want, floor: float = 0.0) -> float:
    """max |got − want| / max(max |want|, floor): the norm-wise relative error of one array.
    `floor` keeps a result that is exactly ~0 (C g when one atom holds all the weight) from
    dividing rounding noise by ~0."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = max(float(np.max(np.abs(want))), floor)
    return float(np.max(np.abs(got - want)) / (scale if scale > 0 else 1.0))


def record(name: str, err: float) -> None:
    ERRORS[name] = max(err, ERRORS.get(name, 0.0))


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(f"fslens {fslens.__version__} from {fslens.__file__}")
    if ERRORS:
        terminalreporter.write_sep("-", "max relative errors")
        for name in sorted(ERRORS):
            terminalreporter.write_line(f"{name:60s} {ERRORS[name]:.3e}")


# ---------------------------------------------------------------------------------------
# The float64 oracle (design §2–§4), written from the formulas, not from the Rust code.


def vp_noise(t, beta_min=0.01, beta_max=20.0):
    la = -beta_min * t - 0.5 * (beta_max - beta_min) * t * t
    return np.exp(0.5 * la), -np.expm1(la)


class Reference:
    """The empirical prior over `atoms` in float64, with an optional linear measurement
    y = M x + N(0, σ² I) (M dense) or given log-likelihoods."""

    def __init__(self, atoms, M=None, y=None, sigma=None, log_likelihood=None):
        self.A = np.asarray(atoms, dtype=np.float64)
        self.M = None if M is None else np.asarray(M, dtype=np.float64)
        self.y = None if y is None else np.asarray(y, dtype=np.float64)
        self.sigma = sigma
        if log_likelihood is not None:
            self.b = np.asarray(log_likelihood, dtype=np.float64)
        elif M is not None:
            r = self.y[None, :] - self.A @ self.M.T
            self.b = -(r * r).sum(1) / (2 * sigma * sigma)
        else:
            self.b = np.zeros(len(self.A))

    def omega(self):
        b = self.b - self.b.max()
        w = np.exp(b)
        return w / w.sum()

    def weights(self, x, s, v, posterior=False):
        x = np.asarray(x, dtype=np.float64)
        d2 = ((x[:, None, :] - s * self.A[None, :, :]) ** 2).sum(-1)
        logits = -d2 / (2 * v) + (self.b[None, :] if posterior else 0.0)
        logits -= logits.max(1, keepdims=True)
        w = np.exp(logits)
        return w / w.sum(1, keepdims=True)

    def mean(self, x, s, v, posterior=False):
        return self.weights(x, s, v, posterior) @ self.A

    def score(self, x, s, v, posterior=False):
        return (s * self.mean(x, s, v, posterior) - x) / v

    def eps(self, x, s, v):
        return (x - s * self.mean(x, s, v)) / np.sqrt(v)

    def cov(self, x, s, v, posterior=False):
        """Dense C(x) per row, (B, D, D): the covariance of the atoms under the prior's (or
        the posterior's) weights at x."""
        w = self.weights(x, s, v, posterior)
        m = w @ self.A
        out = np.empty((len(m), self.A.shape[1], self.A.shape[1]))
        for b in range(len(m)):
            dev = self.A - m[b]
            out[b] = (dev.T * w[b]) @ dev
        return out

    def cov_apply(self, x, s, v, g, posterior=False):
        return np.einsum("bij,bj->bi", self.cov(x, s, v, posterior), np.asarray(g, dtype=np.float64))

    def mean_vjp_fd(self, x, s, v, g, posterior=False, h=1e-5):
        """gᵀ ∂m/∂x per row by central finite differences of the float64 mean (independent of
        the closed form (s/v) C g)."""
        x = np.asarray(x, dtype=np.float64)
        g = np.asarray(g, dtype=np.float64)
        out = np.empty_like(x)
        for j in range(x.shape[1]):
            e = np.zeros_like(x)
            e[:, j] = h
            col = (self.mean(x + e, s, v, posterior) - self.mean(x - e, s, v, posterior)) / (2 * h)
            out[:, j] = (col * g).sum(1)  # (Jᵀ g)_j = Σ_i g_i ∂m_i/∂x_j
        return out

    def method_score(self, x, s, v, method, zeta=1.0):
        x = np.asarray(x, dtype=np.float64)
        if method == "prior":
            return self.score(x, s, v)
        if method == "fsr":
            return self.score(x, s, v, posterior=True)
        M, y, sig = self.M, self.y, self.sigma
        m = self.mean(x, s, v)
        C = self.cov(x, s, v)
        r = y[None, :] - m @ M.T
        out = np.empty_like(x)
        for b in range(len(x)):
            if method == "sigma-dps":
                g = M.T @ r[b] / sig**2
            elif method == "zeta-dps":
                n = np.linalg.norm(r[b])
                g = (2 * zeta / n) * M.T @ r[b] / sig**2 if n > 0 else 0 * M.T @ r[b]
            elif method == "pigdm":
                Sy = sig**2 * np.eye(len(y)) + (v / s**2) * M @ M.T
                g = M.T @ np.linalg.solve(Sy, r[b])
            elif method == "tmpd":
                Sf = sig**2 * np.eye(len(y)) + M @ C[b] @ M.T
                g = M.T @ np.linalg.solve(Sf, r[b])
            else:
                raise ValueError(method)
            out[b] = (s / v) * C[b] @ g
        return (s * m - x) / v + out

    def spread(self, s, v):
        w = self.omega()
        abar = w @ self.A
        return s * s * float(w @ ((self.A - abar) ** 2).sum(1)) + self.A.shape[1] * v


def f32(a):
    """The float32 rounding the package applies to its inputs, back in float64."""
    return np.asarray(a, dtype=np.float32).astype(np.float64)


# ---------------------------------------------------------------------------------------
# The CLI binary.


def fslens_bin():
    env = os.environ.get("FSLENS_BIN")
    if env:
        return pathlib.Path(env)
    roots = [pathlib.Path(os.environ["CARGO_TARGET_DIR"])] if os.environ.get("CARGO_TARGET_DIR") else []
    roots.append(REPO / "target")
    for root in roots:
        for profile in ("release", "debug"):
            p = root / profile / ("fslens.exe" if sys.platform == "win32" else "fslens")
            if p.is_file():
                return p
    return None


@pytest.fixture(scope="session")
def cli():
    path = fslens_bin()
    if path is None or not path.is_file():
        why = (
            f"the fslens binary was not found (FSLENS_BIN={os.environ.get('FSLENS_BIN')!r}, "
            "else target/release/fslens or target/debug/fslens); build it with "
            "`cargo build --release` or set FSLENS_BIN"
        )
        if os.environ.get("FSLENS_REQUIRE_BIN") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return path


@pytest.fixture(scope="session")
def small():
    """A small random problem: N = 40 atoms of D = 12 (3 × 4 images), a dense 5 × 12 operator."""
    rng = np.random.default_rng(20261128)
    n, d, m = 40, 12, 5
    # Clustered atoms, so that the weights are neither uniform nor one-hot.
    centres = rng.uniform(-0.8, 0.8, (4, d))
    atoms = np.clip(centres[rng.integers(0, 4, n)] + 0.25 * rng.normal(size=(n, d)), -1, 1)
    atoms = f32(atoms)
    M = f32(rng.normal(size=(m, d)) / np.sqrt(m))
    truth = f32(np.clip(centres[1] + 0.2 * rng.normal(size=d), -1, 1))
    sigma = 0.3
    y = f32(M @ truth + sigma * rng.normal(size=m))
    return dict(atoms=atoms, M=M, y=y, sigma=sigma, truth=truth, rng=rng)
