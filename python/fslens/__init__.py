"""fslens: the finite-sample lens on diffusion posterior samplers, from Python.

Replace the prior of a diffusion model by the empirical measure of a training set
{a_1 … a_N}; then the denoiser, the scores and the exact posterior at every diffusion time
are finite sums over the atoms (docs/design.md §2–§4). This package holds the atoms resident
in the fslens engine (multithreaded CPU, or GPU through wgpu) and answers, for a batch of
noisy images x_t (B, D) at times t:

>>> import numpy as np, fslens
>>> prior = fslens.Prior(np.random.default_rng(0).uniform(-1, 1, (100, 16)))
>>> x = np.random.default_rng(1).normal(size=(4, 16))
>>> m = prior.denoise(x, 0.5)                         # Tweedie mean E[x_0 | x_t]
>>> post = prior.posterior(np.zeros(3), operator=np.eye(3, 16), sigma=0.1)
>>> s = post.score(x, 0.5, method="fsr")             # exact posterior score

Arrays go in as numpy arrays (float32 or float64; atoms also uint8, mapped to 2k/255 − 1)
and come out as float32 numpy arrays (weights and log-likelihoods as float64). Errors in the
arguments raise ValueError or TypeError naming the argument and the fix.
"""

from __future__ import annotations

import json
import numbers
import os
import tempfile
import warnings
from typing import Optional, Sequence, Tuple, Union

import numpy as np


def _quiet_vulkan_loader() -> None:
    """Mesa's Vulkan drivers print "XDG_RUNTIME_DIR is invalid or not set" on every adapter
    query of a headless server; give them a private runtime folder when there is none (as the
    `fslens` command does). Nothing changes where the variable is set."""
    if os.environ.get("XDG_RUNTIME_DIR"):
        return
    path = os.path.join(tempfile.gettempdir(), f"fslens-runtime-{os.getuid()}")
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError:
        return
    if os.path.isdir(path) and os.stat(path).st_uid == os.getuid():
        os.environ["XDG_RUNTIME_DIR"] = path


_quiet_vulkan_loader()

from . import _fslens  # noqa: E402  (after the runtime folder: adapters are listed lazily)

__all__ = ["Prior", "Posterior", "VP", "DDPM", "METHODS", "diagnose_trajectory", "__version__"]

__version__ = _fslens.__version__

#: The methods of :meth:`Posterior.score`.
METHODS = ("fsr", "prior", "sigma-dps", "zeta-dps", "pigdm", "tmpd")

ArrayLike = Union[np.ndarray, Sequence]
Times = Union[float, ArrayLike]


# --------------------------------------------------------------------------------------
# Argument conversion: dtype and shape checks with errors that name the argument.


def _float_array(value, name: str) -> np.ndarray:
    """`value` as a numpy array of a real floating dtype (TypeError otherwise)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        value = value.detach().cpu().numpy()
    a = np.asarray(value)
    if a.dtype.kind != "f":
        raise TypeError(
            f"{name} must be a float32 or float64 array, got dtype {a.dtype}; "
            f"convert it with {name}.astype(np.float32)"
        )
    return a


def _rows(value, name: str, dim: int) -> np.ndarray:
    """A (B, D) float32 C-contiguous array; a (D,) vector is one row."""
    a = _float_array(value, name)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[1] != dim:
        raise ValueError(
            f"{name} has shape {a.shape} but must have shape (B, {dim}) "
            f"(D = {dim}, the atoms' dimension; flatten images in HWC order)"
        )
    return _f32(a, name)


def _f32(a: np.ndarray, name: str) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.ascontiguousarray(a, dtype=np.float32)
    if not np.all(np.isfinite(out)):
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(out))[0])
        value = a[bad].item()
        what = "NaN or infinite" if not np.isfinite(value) else "too large for float32"
        raise ValueError(f"{name}{list(bad)} is {what} (got {value!r}); every value must be finite")
    return out


def _times(t, rows: int) -> np.ndarray:
    """t as a float64 vector: one value for all rows, or one per row, each in (0, 1]."""
    if hasattr(t, "detach") and hasattr(t, "cpu"):
        t = t.detach().cpu().numpy()
    if isinstance(t, numbers.Real) and not isinstance(t, bool):
        arr = np.array([float(t)], dtype=np.float64)
    else:
        a = np.asarray(t)
        if a.dtype.kind not in "fiu":
            raise TypeError(f"t must be a float or a ({rows},) array of floats, got dtype {a.dtype}")
        arr = np.ascontiguousarray(a, dtype=np.float64).reshape(-1)
        if a.ndim > 1 or (a.ndim == 1 and arr.size not in (1, rows)):
            raise ValueError(
                f"t has shape {a.shape}; pass a float or one time per row, shape ({rows},)"
            )
    bad = ~(np.isfinite(arr) & (arr > 0) & (arr <= 1))
    if bad.any():
        raise ValueError(
            f"t = {float(arr[bad][0])!r} is outside (0, 1]: diffusion times lie in (0, 1] "
            "(t = 0 is the clean data, where scores are not defined)"
        )
    return arr


def _levels(level, rows: int) -> np.ndarray:
    """level as a uint64 vector: one level for all rows, or one per row, each an integer in
    0..999 (DDPM levels; integral floats are accepted, e.g. a float tensor of levels)."""
    if hasattr(level, "detach") and hasattr(level, "cpu"):
        level = level.detach().cpu().numpy()
    top = DDPM.LEVELS - 1
    a = np.asarray(level)
    if a.dtype.kind not in "iuf" or a.dtype == np.bool_:
        raise TypeError(f"level must be an int or a ({rows},) array of ints in 0..{top}, got dtype {a.dtype}")
    flat = a.reshape(-1)
    if a.ndim > 1 or (a.ndim == 1 and flat.size not in (1, rows)):
        raise ValueError(f"level has shape {a.shape}; pass an int or one level per row, shape ({rows},)")
    if a.dtype.kind == "f" and not np.all(np.isfinite(flat) & (flat == np.round(flat))):
        raise ValueError("level must hold integers (levels of the DDPM schedule), got non-integral values")
    bad = (flat < 0) | (flat > top)
    if bad.any():
        raise ValueError(f"level = {flat[bad][0].item()!r} is outside 0..{top} (the levels of the DDPM schedule)")
    return np.ascontiguousarray(flat, dtype=np.uint64)


def _time_scalar(t, name: str = "t", allow_zero: bool = False) -> float:
    if hasattr(t, "item") and np.ndim(t) == 0:
        t = t.item()
    if not isinstance(t, numbers.Real) or isinstance(t, bool):
        raise TypeError(f"{name} must be a float in (0, 1], got {type(t).__name__}")
    t = float(t)
    lo_ok = t >= 0 if allow_zero else t > 0
    if not (np.isfinite(t) and lo_ok and t <= 1):
        rng = "[0, 1]" if allow_zero else "(0, 1]"
        raise ValueError(f"{name} = {t!r} is outside {rng}")
    return t


def _atoms_array(atoms) -> np.ndarray:
    if hasattr(atoms, "detach") and hasattr(atoms, "cpu"):
        atoms = atoms.detach().cpu().numpy()
    a = np.asarray(atoms)
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(
            f"atoms has shape {a.shape} but must be a non-empty (N, D) array "
            "(flatten each image in HWC order: atoms.reshape(N, -1))"
        )
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype.kind != "f":
        raise TypeError(
            f"atoms must be float32, float64 (values in [-1, 1]) or uint8 (mapped to 2k/255 - 1), "
            f"got dtype {a.dtype}; convert with atoms.astype(np.float32)"
        )
    return _f32(a, "atoms")


def _labels_array(labels, n: int) -> np.ndarray:
    if hasattr(labels, "detach") and hasattr(labels, "cpu"):
        labels = labels.detach().cpu().numpy()
    a = np.asarray(labels)
    if a.dtype.kind not in "iu" or a.dtype == np.bool_:
        raise TypeError(f"labels must be an int array of shape ({n},), got dtype {a.dtype}")
    if a.shape != (n,):
        raise ValueError(f"labels has shape {a.shape} but must have shape ({n},), one class per atom")
    if a.size and (a.min() < 0 or a.max() >= 2**31):
        raise ValueError(f"labels must be classes 0, 1, 2, … (got values from {a.min()} to {a.max()})")
    return np.ascontiguousarray(a, dtype=np.uint32)


def _name(value, name: str, choices: Sequence[str]) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {', '.join(choices)}; got {value!r}")
    return value


# --------------------------------------------------------------------------------------


class VP:
    """The linear-β VP schedule of fslens (design §2):
    ᾱ(t) = exp(−β_min t − ½(β_max − β_min) t²), s = √ᾱ, v = 1 − ᾱ."""

    def __init__(self, beta_min: float = 0.01, beta_max: float = 20.0):
        self.beta_min = float(beta_min)
        self.beta_max = float(beta_max)
        # Checked by the library (β_min > 0, β_max ≥ β_min).
        _fslens.vp_noise(self.beta_min, self.beta_max, np.zeros(1))

    def _vec(self, t):
        a = np.asarray(t, dtype=np.float64)
        return a, np.ascontiguousarray(a.reshape(-1))

    def log_alpha_bar(self, t):
        a, flat = self._vec(t)
        out = _fslens.vp_log_alpha_bar(self.beta_min, self.beta_max, flat).reshape(a.shape)
        return float(out) if a.ndim == 0 else out

    def alpha_bar(self, t):
        """ᾱ(t); a float for a float, an array for an array."""
        out = np.exp(self.log_alpha_bar(t))
        return float(out) if np.ndim(out) == 0 else out

    def noise(self, t) -> Tuple:
        """(s, v) at t: s = √ᾱ(t), v = 1 − ᾱ(t) (computed by expm1, exact near t = 0)."""
        a, flat = self._vec(t)
        s, v = _fslens.vp_noise(self.beta_min, self.beta_max, flat)
        if a.ndim == 0:
            return float(s[0]), float(v[0])
        return s.reshape(a.shape), v.reshape(a.shape)

    def __repr__(self) -> str:
        return f"VP(beta_min={self.beta_min}, beta_max={self.beta_max})"


class DDPM:
    """The discrete schedule of DDPM/DDIM as guided-diffusion and the DPS code use it (and
    the library's ``diffusion::discrete``, the numbers here are the library's): T = 1000
    levels k = 0 … 999, β_k linear from 1e-4 to 0.02, ᾱ_k = Π_{j ≤ k} (1 − β_j),
    x_k | x_0 ~ N(√ᾱ_k x_0, (1 − ᾱ_k) I).

    Every method takes a level (an int) or an array of levels and returns a float (an array).
    Prior and Posterior methods take ``level=`` in place of ``t`` and then use the level's own
    noise; :meth:`time` gives the continuous time with the same noise under a VP schedule.
    """

    LEVELS: int = int(_fslens.DDPM_LEVELS)

    def _table(self, level):
        a = np.asarray(level.detach().cpu().numpy() if hasattr(level, "detach") else level)
        ks = _levels(a.reshape(-1) if a.ndim else a, a.size if a.ndim else 1)
        beta, la, s, v = _fslens.ddpm_levels(ks)
        shape = a.shape

        def out(x):
            return float(x[0]) if a.ndim == 0 else x.reshape(shape)

        return out, beta, la, s, v

    def beta(self, level):
        """β_k."""
        out, beta, _, _, _ = self._table(level)
        return out(beta)

    def log_alpha_bar(self, level):
        """log ᾱ_k = Σ_{j ≤ k} log(1 − β_j)."""
        out, _, la, _, _ = self._table(level)
        return out(la)

    def alpha_bar(self, level):
        """ᾱ_k."""
        out, _, la, _, _ = self._table(level)
        return out(np.exp(la))

    def noise(self, level) -> Tuple:
        """(s, v) of level k: s = √ᾱ_k, v = 1 − ᾱ_k (by expm1)."""
        out, _, _, s, v = self._table(level)
        return out(s), out(v)

    def time(self, level, schedule: Optional["VP"] = None):
        """The time t of the VP `schedule` (default VP()) whose ᾱ(t) is ᾱ_k. Above 1 for the
        top levels, whose ᾱ_k lies below ᾱ(1) (under VP(0.01, 20): levels ≥ 994); pass
        ``level=`` to Prior methods to use a level's noise directly."""
        if schedule is None:
            schedule = VP()
        if not isinstance(schedule, VP):
            raise TypeError(f"schedule must be a fslens.VP, got {type(schedule).__name__}")
        out, _, la, _, _ = self._table(level)
        return out(_fslens.vp_time_of_log_alpha_bar(schedule.beta_min, schedule.beta_max, la))

    def __repr__(self) -> str:
        return "DDPM(levels=1000, beta 1e-4 … 0.02)"


class Prior:
    """The empirical prior (1/N) Σ_i δ(a_i) over N atoms, resident in the fslens engine.

    Parameters
    ----------
    atoms : (N, D) array, float32/float64 (values in [-1, 1] by convention) or uint8
        (k mapped to 2k/255 − 1, exactly). Images flattened in HWC order.
    backend : "auto" (GPU when a hardware adapter exists, else CPU), "cpu" or "gpu".
    storage : GPU atom storage: "auto", "f32", "u8" (8-bit data only) or "f16".
    shape : (H, W, C) of one image, for operator specs that need it (default: square when D
        is a perfect square, else (1, D, 1)).
    schedule : a :class:`VP` (default VP(0.01, 20)).
    labels : (N,) non-negative ints, the class of every atom: the modes that
        :meth:`Posterior.metrics` counts (default: k-means clusters of the atoms).
    """

    def __init__(
        self,
        atoms,
        backend: str = "auto",
        storage: str = "auto",
        shape: Optional[Tuple[int, int, int]] = None,
        schedule: Optional[VP] = None,
        labels=None,
    ):
        a = _atoms_array(atoms)
        backend = _name(backend, "backend", ("auto", "cpu", "gpu"))
        storage = _name(storage, "storage", ("auto", "f32", "u8", "f16"))
        if schedule is None:
            schedule = VP()
        if not isinstance(schedule, VP):
            raise TypeError(f"schedule must be a fslens.VP, got {type(schedule).__name__}")
        if shape is not None:
            shape = tuple(int(v) for v in shape)
            if len(shape) != 3:
                raise ValueError(f"shape must be (H, W, C), got {shape}")
        if labels is not None:
            labels = _labels_array(labels, a.shape[0])
        make = _fslens.Prior.from_u8 if a.dtype == np.uint8 else _fslens.Prior
        self._core = make(a, backend, storage, shape, schedule.beta_min, schedule.beta_max, labels)
        self.schedule = schedule

    @classmethod
    def from_config(cls, path, backend: Optional[str] = None, storage: Optional[str] = None) -> "Prior":
        """The prior of a run config (its atoms with the hold-out applied, its schedule and
        engine; `backend`/`storage` replace the config's). The config's measurement is kept:
        ``.truth``, ``.y``, ``.operator`` (spec string), ``.sigma``; ``posterior()`` with no
        arguments is the posterior of that measurement."""
        import os

        self = cls.__new__(cls)
        if backend is not None:
            _name(backend, "backend", ("auto", "cpu", "gpu"))
        if storage is not None:
            _name(storage, "storage", ("auto", "f32", "u8", "f16"))
        self._core = _fslens.Prior.from_config(os.fspath(path), backend, storage)
        self.schedule = VP(self._core.beta_min, self._core.beta_max)
        return self

    # -- facts ---------------------------------------------------------------------------
    @property
    def n_atoms(self) -> int:
        return self._core.n_atoms

    @property
    def dim(self) -> int:
        return self._core.dim

    @property
    def shape(self) -> Tuple[int, int, int]:
        """(H, W, C) of one image."""
        return self._core.shape

    @property
    def backend(self) -> str:
        """The engine, e.g. ``cpu (2 threads)``."""
        return self._core.backend

    @property
    def atoms(self) -> np.ndarray:
        """A copy of the atoms, (N, D) float32."""
        return self._core.atoms

    # The config's measurement (None for a prior made from an array).
    @property
    def truth(self) -> Optional[np.ndarray]:
        return self._core.truth

    @property
    def labels(self) -> Optional[np.ndarray]:
        """(N,) uint32 class of every atom, when known (the config's data set, or given)."""
        return self._core.labels

    @property
    def truth_label(self) -> Optional[int]:
        return self._core.truth_label

    @property
    def y(self) -> Optional[np.ndarray]:
        return self._core.y

    @property
    def operator(self) -> Optional[str]:
        return self._core.operator

    @property
    def sigma(self) -> Optional[float]:
        return self._core.sigma

    # -- the denoiser ----------------------------------------------------------------------
    def _xt(self, x, t):
        xs = _rows(x, "x", self.dim)
        return xs, _times(t, xs.shape[0])

    def _at(self, x, t, level):
        """(x rows, when): exactly one of t (float64 times) and level (uint64 levels); the
        dtype of `when` tells the engine which."""
        xs = _rows(x, "x", self.dim)
        if (t is None) == (level is None):
            raise TypeError(
                "pass exactly one of t (times in (0, 1] of the VP schedule) and level= "
                "(levels 0..999 of fslens.DDPM())"
            )
        if level is not None:
            return xs, _levels(level, xs.shape[0])
        return xs, _times(t, xs.shape[0])

    # With ``level=`` (an int, or one per row, levels of :class:`DDPM`) in place of t, the
    # methods below use that level's noise (s, v) = (√ᾱ_k, 1 − ᾱ_k).
    def denoise(self, x, t: Optional[Times] = None, *, level=None) -> np.ndarray:
        """The Tweedie mean m(x_t) = E[x_0 | x_t] = Σ_i w_i a_i, (B, D) float32."""
        xs, when = self._at(x, t, level)
        return self._core.denoise(xs, when)

    def score(self, x, t: Optional[Times] = None, *, level=None) -> np.ndarray:
        """∇ log p(x_t) = (s m − x)/v."""
        xs, when = self._at(x, t, level)
        return self._core.score(xs, when)

    def eps(self, x, t: Optional[Times] = None, *, level=None) -> np.ndarray:
        """The noise prediction (x − s m)/√v = −√v · score."""
        xs, when = self._at(x, t, level)
        return self._core.eps(xs, when)

    def cov_apply(self, x, t: Times, g) -> np.ndarray:
        """C g = Σ_i w_i (a_i − m)⟨a_i − m, g⟩ per row: Cov[x_0 | x_t] times g. The
        denoiser's Jacobian-vector product is (s/v) C g (C is symmetric)."""
        xs, ts = self._xt(x, t)
        gs = _rows(g, "g", self.dim)
        if gs.shape[0] != xs.shape[0]:
            raise ValueError(f"g has {gs.shape[0]} rows but x has {xs.shape[0]}; pass g of shape {xs.shape}")
        return self._core.cov_apply(xs, ts, gs)

    def denoiser_vjp(self, x, t: Optional[Times], g, means=None, *, level=None) -> np.ndarray:
        """gᵀ ∂m/∂x = (s/v) C g per row (the exact vector-Jacobian product of the denoiser).
        `means`: this prior's ``denoise(x, t)`` of the same x and t, when already computed,
        saves the engine pass that recomputes it. With ``level=``, pass t = None."""
        xs, ts = self._at(x, t, level)
        gs = _rows(g, "g", self.dim)
        if gs.shape[0] != xs.shape[0]:
            raise ValueError(f"g has {gs.shape[0]} rows but x has {xs.shape[0]}; pass g of shape {xs.shape}")
        if means is not None:
            means = _rows(means, "means", self.dim)
            if means.shape[0] != xs.shape[0]:
                raise ValueError(f"means has {means.shape[0]} rows but x has {xs.shape[0]}")
        return self._core.denoiser_vjp(xs, ts, gs, means)

    # -- posteriors ------------------------------------------------------------------------
    def posterior(self, y=None, operator=None, sigma=None) -> "Posterior":
        """The exact posterior of y = A(x_0) + N(0, σ² I) under this prior.

        sigma : one σ > 0, or an array of m per-entry σ_j > 0 (noise N(0, diag(σ_j²))).

        operator : an (m, D) matrix, or an operator spec string of the configs
            (``identity``, ``box:x=8,y=8,w=12,h=12``, ``downsample:4``, ``blur:sigma=1.5``,
            ``projection:m=64,seed=0``, ``matrix:M.npy``, ``phase-retrieval``,
            ``saturation:gain=2``, …). For a prior from a config, omitted arguments are the
            config's.
        """
        if sigma is not None:
            if isinstance(sigma, (bool, str, bytes)):
                raise TypeError(
                    "sigma must be a positive float or an array of m values, "
                    f"got {type(sigma).__name__}"
                )
            if isinstance(sigma, numbers.Real):
                sigma = float(sigma)
            else:
                # m per-entry σ_j (diagonal noise): the library whitens y and A (design §2).
                sigma = np.ascontiguousarray(_float_array(sigma, "sigma"), dtype=np.float64).reshape(-1)
        if operator is None:
            if self._core.operator is None:
                raise ValueError(
                    "operator is missing: pass operator= (an (m, D) array or an operator spec "
                    "string such as 'downsample:4') and sigma="
                )
            if isinstance(sigma, np.ndarray):
                raise TypeError(
                    "sigma: per-entry σ_j replace the config's σ only with operator= given; "
                    "for the config's operator set measurement.sigma = \"sigma.npy\" in the config"
                )
            ys = None if y is None else _f32(_vector(y, "y"), "y")
            # The config's truth made the config's y: metrics default to it with that y.
            truth = self.truth if y is None else None
            return Posterior(self, self._core.posterior_config(ys, sigma), truth=truth)
        if y is None:
            raise ValueError("y is missing: pass the measurement y, shape (m,)")
        if sigma is None:
            raise ValueError("sigma is missing: pass the measurement noise standard deviation sigma > 0")
        ys = _f32(_vector(y, "y"), "y")
        if isinstance(operator, str):
            return Posterior(self, self._core.posterior_spec(ys, operator, sigma))
        m = _float_array(operator, "operator")
        if m.ndim != 2 or m.shape[1] != self.dim or m.shape[0] == 0:
            raise ValueError(
                f"operator has shape {m.shape} but a matrix operator must have shape (m, {self.dim}); "
                "or pass an operator spec string such as 'downsample:4'"
            )
        return Posterior(self, self._core.posterior_matrix(ys, _f32(m, "operator"), sigma))

    def posterior_from_log_likelihood(self, log_likelihood) -> "Posterior":
        """The posterior whose log p(y | a_i) are given, (N,) (constants do not matter)."""
        b = np.asarray(log_likelihood)
        if b.dtype.kind not in "fiu":
            raise TypeError(f"log_likelihood must be a float array of shape ({self.n_atoms},), got dtype {b.dtype}")
        if b.shape != (self.n_atoms,):
            raise ValueError(
                f"log_likelihood has shape {b.shape} but must have shape ({self.n_atoms},), one value per atom"
            )
        b = np.ascontiguousarray(b, dtype=np.float64)
        if not np.all(np.isfinite(b)):
            i = int(np.argwhere(~np.isfinite(b))[0][0])
            raise ValueError(
                f"log_likelihood[{i}] is {float(b[i])!r}; every value must be finite "
                "(drop atoms the measurement rules out)"
            )
        return Posterior(self, self._core.posterior_from_log_likelihood(b))

    def __repr__(self) -> str:
        return repr(self._core)


def _vector(value, name: str) -> np.ndarray:
    a = _float_array(value, name)
    if a.ndim != 1:
        raise ValueError(f"{name} has shape {a.shape} but must be a vector, shape (m,)")
    return a


class Posterior:
    """The exact finite-sample posterior p(x_t | y) = Σ_i ω_i N(s a_i, v I), ω = softmax(b),
    b_i = log p(y | a_i), and the scores of the approximate samplers on the same prior.

    Its bias b (N values) is registered with the prior's engine while the posterior lives;
    when the last reference goes, the engine frees it (a loop making posteriors holds one
    bias per live posterior)."""

    def __init__(self, prior: Prior, core, truth: Optional[np.ndarray] = None):
        self.prior = prior
        self._core = core
        self._truth = truth

    @property
    def weights(self) -> np.ndarray:
        """ω, (N,) float64: the exact posterior at t = 0."""
        return self._core.weights

    @property
    def log_likelihood(self) -> np.ndarray:
        """b_i = log p(y | a_i) (up to a constant), (N,) float64."""
        return self._core.log_likelihood

    @property
    def effective_atoms(self) -> float:
        """1 / Σ ω_i²."""
        return self._core.effective_atoms

    @property
    def operator(self) -> Optional[str]:
        return self._core.operator

    @property
    def y(self) -> Optional[np.ndarray]:
        return self._core.y

    @property
    def sigma(self) -> Optional[float]:
        return self._core.sigma

    def denoise(self, x, t: Optional[Times] = None, *, level=None) -> np.ndarray:
        """The posterior Tweedie mean m̃(x_t) = E[x_0 | x_t, y] = Σ_i w̃_i a_i (``level=``: at
        a level of :class:`DDPM`, in place of t)."""
        xs, when = self.prior._at(x, t, level)
        return self._core.denoise(xs, when)

    def score(
        self,
        x,
        t: Optional[Times] = None,
        method: str = "fsr",
        zeta: float = 1.0,
        cg_tolerance: float = 1e-6,
        cg_max_iterations: int = 100,
        *,
        level=None,
    ) -> np.ndarray:
        """The posterior score of `method` at (x_t, t), (B, D) float32:

        - ``fsr``: the exact ∇ log p(x_t | y) = (s m̃ − x)/v;
        - ``prior``: (s m − x)/v;
        - ``sigma-dps``, ``zeta-dps`` (ζ = `zeta`), ``pigdm``, ``tmpd``: the prior score plus
          that sampler's likelihood score (design §4); they need the operator and y (a
          posterior made from log-likelihoods has neither); pigdm and tmpd need a linear
          operator. `cg_tolerance`/`cg_max_iterations` govern pigdm's and tmpd's solves; a
          solve that stops at the cap before reaching the tolerance is reported with
          ``warnings.warn(..., RuntimeWarning)`` (the score is still returned).

        ``level=`` (levels of :class:`DDPM`) in place of t: at that level's noise.
        """
        method = _name(method, "method", METHODS)
        if isinstance(cg_max_iterations, bool) or not isinstance(cg_max_iterations, numbers.Integral):
            raise TypeError("cg_max_iterations must be a positive int")
        if cg_max_iterations < 1:
            raise ValueError(f"cg_max_iterations must be at least 1, got {cg_max_iterations}")
        xs, when = self.prior._at(x, t, level)
        out, notes = self._core.score(xs, when, method, float(zeta), float(cg_tolerance), int(cg_max_iterations))
        for note in notes:
            warnings.warn(note, RuntimeWarning, stacklevel=2)
        return out

    def denoiser_vjp(self, x, t: Optional[Times], g, means=None, *, level=None) -> np.ndarray:
        """gᵀ ∂m̃/∂x = (s/v) C̃ g per row: the exact vector-Jacobian product of the posterior
        denoiser, C̃ = Cov[x_0 | x_t = x, y] the covariance of the atoms under the posterior
        weights w̃_i ∝ ω_i N(x; s a_i, v I) (symmetric, so also the Jacobian-vector product).
        `means`: this posterior's ``denoise(x, t)`` of the same x and t, when already computed,
        saves the engine pass that recomputes it. With ``level=``, pass t = None."""
        xs, when = self.prior._at(x, t, level)
        gs = _rows(g, "g", self.prior.dim)
        if gs.shape[0] != xs.shape[0]:
            raise ValueError(f"g has {gs.shape[0]} rows but x has {xs.shape[0]}; pass g of shape {xs.shape}")
        if means is not None:
            means = _rows(means, "means", self.prior.dim)
            if means.shape[0] != xs.shape[0]:
                raise ValueError(f"means has {means.shape[0]} rows but x has {xs.shape[0]}")
        return self._core.denoiser_vjp(xs, when, gs, means)

    def sample(self, t: float, k: int, seed: int = 0) -> np.ndarray:
        """k exact draws of p(x_t | y): i ~ Cat(ω), x = s a_i + √v ε; (k, D) float32.
        t ∈ [0, 1] (t = 0 draws atoms)."""
        t = _time_scalar(t, allow_zero=True)
        if isinstance(k, bool) or not isinstance(k, numbers.Integral):
            raise TypeError(f"k must be an int (the number of draws), got {k!r}")
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not (0 <= seed < 2**64):
            raise ValueError(f"seed must be an int in [0, 2**64), got {seed!r}")
        return self._core.sample(t, int(k), int(seed))

    def metrics(self, cloud, t: float, truth=None) -> dict:
        """The metrics of a particle cloud at time t, as ``fslens run`` records them at a
        checkpoint (the fields of a metrics.json record, design §6): ``mode_weights``,
        ``mode_tv``, ``mode_tv_to_exact_cloud``, ``hallucination_rate``,
        ``off_support_rate``, ``spread``, ``exact_spread``, ``spread_ratio``, the data fits
        and PSNR/SSIM of the Tweedie means against `truth`.

        cloud : (K, D) or (K, H, W, C) particles x_t (HWC order, the atoms' scale; not
            clipped). t ∈ [0, 1]: t = 0 scores clean samples as ``fslens diagnose`` does.
        truth : (D,) the true image; default the config's truth for the config's own y,
            else none (PSNR/SSIM are then None).

        The exact cloud at t is max(K, 2000) fresh exact draws (seeded); the modes are the
        data set's classes, else k-means clusters (see :attr:`modes`).
        """
        t = _time_scalar(t, allow_zero=True)
        c = _float_array(cloud, "cloud")
        if c.ndim > 2 and int(np.prod(c.shape[1:])) == self.prior.dim:
            c = c.reshape(c.shape[0], -1)
        if c.ndim != 2:
            raise ValueError(
                f"cloud has shape {c.shape} but must have shape (K, {self.prior.dim}) or "
                "(K, H, W, C) in HWC order"
            )
        xs = _rows(c, "cloud", self.prior.dim)
        if truth is None:
            truth = self._truth
        ts = None if truth is None else _f32(_float_array(truth, "truth").reshape(-1), "truth")
        return json.loads(self._core.metrics(xs, t, ts))

    @property
    def modes(self) -> Tuple[list, np.ndarray]:
        """(names, exact masses Σ_{i ∈ mode} ω_i) of the modes the metrics count."""
        names, weights = self._core.modes()
        return names, np.asarray(weights)

    def exact_spread(self, t: float) -> float:
        """E‖x_t − E x_t‖² = s² Σ_i ω_i ‖a_i − ā‖² + D v (design §3), t ∈ [0, 1]."""
        return self._core.exact_spread(_time_scalar(t, allow_zero=True))

    def __repr__(self) -> str:
        return repr(self._core)


def diagnose_trajectory(
    config,
    clouds,
    times,
    out,
    label: str = "python",
    backend: Optional[str] = None,
    storage: Optional[str] = None,
    force: bool = False,
):
    """Scores a sampler's clouds recorded at several times against the exact posterior of
    `config`'s measurement and writes the folder of a run into `out` (report.html with the
    curves over t, metrics.json, summary.json, …), as ``fslens diagnose --trajectory`` does;
    returns the folder's path.

    clouds : (T, K, D) or (T, K, H, W, C) float array of x_t (HWC order, fslens pixels,
        not clipped), or the path of such a .npy file.
    times : (T,) float times of the config's VP schedule in [0, 1], one per cloud, distinct
        (t = 0: clean samples), or the path of such a .npy file. DDPM levels k map to times
        with ``fslens.DDPM().time(k, prior.schedule)``.
    label : the name the clouds are listed under (not a built-in sampler's name).
    force : replace `out` even when fslens did not write it (else such a folder is refused,
        as by ``--force`` of the command).
    """
    import pathlib

    with tempfile.TemporaryDirectory(prefix="fslens-trajectory-") as tmp:
        paths = []
        for name, value in (("clouds", clouds), ("times", times)):
            if isinstance(value, (str, os.PathLike)):
                paths.append(os.fspath(value))
                continue
            a = _float_array(value, name)
            if name == "times" and a.ndim != 1:
                raise ValueError(f"times has shape {a.shape} but must have shape (T,), one time per cloud")
            if name == "clouds" and a.ndim not in (3, 4, 5):
                raise ValueError(
                    f"clouds has shape {a.shape} but must have shape (T, K, D) or (T, K, H, W, C)"
                )
            path = os.path.join(tmp, f"{name}.npy")
            np.save(path, a)
            paths.append(path)
        done = _fslens.diagnose_trajectory(
            os.fspath(config), paths[0], paths[1], os.fspath(out), str(label), backend, storage, bool(force)
        )
    return pathlib.Path(done)
