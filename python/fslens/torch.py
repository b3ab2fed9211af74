"""fslens inside a PyTorch sampler: the exact empirical denoiser as a differentiable function.

>>> import fslens, fslens.torch
>>> den = fslens.torch.EmpiricalDenoiser(fslens.Prior(atoms))
>>> x = x_t.requires_grad_()
>>> m = den(x, t)                 # E[x_0 | x_t], (B, D), same dtype and device as x
>>> m.backward(grad)              # x.grad = (s/v) C grad: the exact vector-Jacobian product

The forward pass is one engine pass over the atoms (the Tweedie mean); the backward pass is
the exact vector–Jacobian product of the denoiser, gᵀ ∂m/∂x = (s/v) C(x) g with
C = Cov[x_0 | x_t = x] (design §3): one more pass, for the covariance product with the
forward's means (kept from the forward pass), no autodiff
through the sum and no D × D matrix. The engine computes in float32; a float64 tensor is
rounded on the way in and the result cast back, so gradcheck passes at float32 accuracy.
Tensors on a GPU are copied to the host and back. t (a float, or one time per row) gets no
gradient.

``EmpiricalDenoiser(prior, posterior)`` is the posterior's denoiser m̃(x_t) = E[x_0 | x_t, y]
= Σ_i w̃_i a_i with w̃_i ∝ ω_i N(x; s a_i, v I), differentiable the same way: its Jacobian is
(s/v) C̃ with C̃ = Cov[x_0 | x_t, y], the covariance of the atoms under w̃ (the engine's
covariance product with the posterior's weights).

For existing DDPM/DDIM code (guided-diffusion, the DPS code), :class:`EpsilonModel` is a
drop-in for the UNet: ``model(x, t_index)`` with x of shape (B, C, H, W) and t_index the
levels 0…999 of :class:`fslens.DDPM`, returning the exact empirical ε at the level's own
noise (differentiable through the exact vector–Jacobian product):

>>> model = fslens.torch.EpsilonModel(prior)      # in place of the UNet
>>> eps = model(x, t)                             # (B, C, H, W), like unet(x, t)
"""

from __future__ import annotations

import numpy as np
import torch

from . import DDPM, Posterior, Prior, _levels, _times

__all__ = ["EmpiricalDenoiser", "EpsilonModel", "denoise"]


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().to("cpu").contiguous().numpy()


def _times_of(t, rows: int) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        t = _np(t).astype(np.float64)
    return _times(t, rows)


class _Denoise(torch.autograd.Function):
    """m(x_t) = Σ_i w_i a_i forward; (s/v) C g backward, C the covariance of the atoms under
    the same weights w — the prior's, or a posterior's w̃_i ∝ ω_i N(x; s a_i, v I) (`weights`
    is the fslens.Prior or fslens.Posterior whose denoise/denoiser_vjp are used)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, times: np.ndarray, weights):
        m = weights.denoise(_np(x), times)
        ctx.weights = weights
        ctx.times = times
        ctx.save_for_backward(x)  # (torch then refuses a backward after x changed in place)
        # The means, kept for the backward pass: it then costs one engine pass.
        ctx.means = m.copy()
        return torch.from_numpy(m).to(device=x.device, dtype=x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        if not ctx.needs_input_grad[0]:
            return None, None, None
        (x,) = ctx.saved_tensors
        vjp = ctx.weights.denoiser_vjp(_np(x), ctx.times, _np(grad), means=ctx.means)
        return torch.from_numpy(vjp).to(device=grad.device, dtype=grad.dtype), None, None


class EmpiricalDenoiser(torch.nn.Module):
    """The empirical prior's Tweedie denoiser m(x_t) = E[x_0 | x_t] as a torch module.

    Parameters
    ----------
    prior : fslens.Prior
    posterior : optional fslens.Posterior of the same prior. Then ``forward`` returns the
        posterior mean m̃(x_t) = E[x_0 | x_t, y] = Σ_i w̃_i a_i, w̃_i ∝ ω_i N(x; s a_i, v I),
        and its backward is the exact (s/v) C̃ grad, C̃ = Cov[x_0 | x_t, y] the covariance of
        the atoms under w̃ (one engine pass, with the forward's means).

    ``forward(x, t)``: x of shape (B, D) (or (B, H, W, C) / any shape whose trailing
    dimensions flatten to D, in HWC order), t a float or (B,) times in (0, 1].
    """

    def __init__(self, prior: Prior, posterior: Posterior | None = None):
        super().__init__()
        if not isinstance(prior, Prior):
            raise TypeError(f"prior must be a fslens.Prior, got {type(prior).__name__}")
        if posterior is not None and not isinstance(posterior, Posterior):
            raise TypeError(f"posterior must be a fslens.Posterior, got {type(posterior).__name__}")
        if posterior is not None and posterior.prior is not prior:
            raise ValueError(
                "posterior belongs to another prior; pass the prior it was made from "
                "(EmpiricalDenoiser(posterior.prior, posterior))"
            )
        self.prior = prior
        self.posterior = posterior
        self.schedule = prior.schedule

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor, got {x.dtype}; use x.float()")
        d = self.prior.dim
        if x.ndim == 0 or x.numel() % d != 0 or (x.ndim >= 2 and int(np.prod(x.shape[1:])) != d):
            raise ValueError(f"x has shape {tuple(x.shape)}; pass (B, {d}) or (B, ...) with {d} values per row")
        return x.reshape(-1, d)

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        flat = self._flat(x)
        times = _times_of(t, flat.shape[0])
        weights = self.prior if self.posterior is None else self.posterior
        return _Denoise.apply(flat, times, weights).reshape(x.shape)

    def noise(self, t, like: torch.Tensor):
        """(s, v) at t as tensors broadcastable against rows of `like`."""
        s, v = self.schedule.noise(np.asarray(_times_of(t, like.shape[0]), dtype=np.float64))
        shape = (-1,) + (1,) * (like.ndim - 1)
        s = torch.as_tensor(np.asarray(s), dtype=like.dtype, device=like.device).reshape(shape)
        v = torch.as_tensor(np.asarray(v), dtype=like.dtype, device=like.device).reshape(shape)
        return s, v

    def eps(self, x: torch.Tensor, t) -> torch.Tensor:
        """The noise prediction (x − s m)/√v (differentiable through m)."""
        s, v = self.noise(t, x)
        return (x - s * self.forward(x, t)) / torch.sqrt(v)

    def score(self, x: torch.Tensor, t) -> torch.Tensor:
        """(s m − x)/v (differentiable through m)."""
        s, v = self.noise(t, x)
        return (s * self.forward(x, t) - x) / v


class _Eps(torch.autograd.Function):
    """ε(x) = (x − s m(x))/√v at levels of the DDPM schedule; backward
    gᵀ ∂ε/∂x = (g − s (s/v) C g)/√v, combined in float64."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, levels: np.ndarray, prior: Prior):
        x64 = _np(x).astype(np.float64)
        m = prior.denoise(x64, level=levels)
        s, v = DDPM().noise(levels)
        s, sd = np.asarray(s)[:, None], np.sqrt(np.asarray(v))[:, None]
        eps = (x64 - s * m.astype(np.float64)) / sd
        ctx.prior, ctx.levels, ctx.means, ctx.s, ctx.sd = prior, levels, m, s, sd
        ctx.save_for_backward(x)
        return torch.from_numpy(eps).to(device=x.device, dtype=x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        if not ctx.needs_input_grad[0]:
            return None, None, None
        (x,) = ctx.saved_tensors
        g = _np(grad).astype(np.float64)
        vjp = ctx.prior.denoiser_vjp(_np(x), None, g, means=ctx.means, level=ctx.levels)
        out = (g - ctx.s * vjp.astype(np.float64)) / ctx.sd
        return torch.from_numpy(out).to(device=grad.device, dtype=grad.dtype), None, None


class EpsilonModel(torch.nn.Module):
    """The empirical prior's noise prediction at DDPM levels, called like guided-diffusion's
    UNet: ``model(x, t_index)`` → ε, so that DDPM/DDIM/DPS code runs with only its model
    swapped.

    Parameters
    ----------
    prior : fslens.Prior (its atoms (H, W, C) images flattened in HWC order)
    schedule : the discrete schedule of the levels; only :class:`fslens.DDPM` (the default:
        1000 levels, β linear 1e-4 … 0.02) is supported.
    learn_sigma : also return the UNet's variance channels, as guided-diffusion's models
        with ``learn_sigma=True`` do: the output is (B, 2C, H, W), ε then C channels of −1
        (under ``learned_range``, −1 selects the posterior variance β̃, DDPM's fixed-small
        choice). (B, C, H, W) inputs only.

    ``forward(x, t_index)``: x of shape (B, C, H, W) with (H, W, C) = prior.shape, or
    (B, D); t_index a (B,) integer tensor (or integral floats, or one int) of levels
    0…999. Returns ε = (x − s m(x))/√v with the level's s = √ᾱ_k, v = 1 − ᾱ_k, same
    shape, dtype and device as x. Differentiable in x: the backward is the exact
    (g − s (s/v) C g)/√v (one engine pass, with the forward's means). Extra keyword
    arguments of the UNet (``y=``, class labels) must be None: the empirical prior is
    unconditional.
    """

    def __init__(self, prior: Prior, schedule: DDPM | None = None, learn_sigma: bool = False):
        super().__init__()
        if not isinstance(prior, Prior):
            raise TypeError(f"prior must be a fslens.Prior, got {type(prior).__name__}")
        if schedule is None:
            schedule = DDPM()
        if not isinstance(schedule, DDPM):
            raise TypeError(f"schedule must be a fslens.DDPM, got {type(schedule).__name__}")
        self.prior = prior
        self.schedule = schedule
        self.learn_sigma = bool(learn_sigma)

    def forward(self, x: torch.Tensor, t_index, **model_kwargs) -> torch.Tensor:
        extra = [k for k, v in model_kwargs.items() if v is not None]
        if extra:
            raise TypeError(
                f"EpsilonModel got {', '.join(extra)}: the empirical prior is unconditional "
                "(make the prior of one class's atoms instead)"
            )
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor, got {x.dtype}; use x.float()")
        h, w, c = self.prior.shape
        d = self.prior.dim
        if x.ndim == 4 and tuple(x.shape[1:]) == (c, h, w):
            flat = x.permute(0, 2, 3, 1).reshape(x.shape[0], d)  # CHW → HWC rows
        elif x.ndim == 2 and x.shape[1] == d:
            flat = x
        else:
            raise ValueError(
                f"x has shape {tuple(x.shape)}; pass (B, {c}, {h}, {w}) (the prior's images, "
                f"channels first) or (B, {d})"
            )
        if self.learn_sigma and x.ndim != 4:
            raise ValueError("learn_sigma=True needs x of shape (B, C, H, W)")
        levels = _levels(t_index, flat.shape[0])
        if levels.size == 1 and flat.shape[0] != 1:
            levels = np.repeat(levels, flat.shape[0])
        eps = _Eps.apply(flat, levels, self.prior)
        if x.ndim == 4:
            eps = eps.reshape(x.shape[0], h, w, c).permute(0, 3, 1, 2)
            if self.learn_sigma:
                eps = torch.cat([eps, torch.full_like(eps, -1.0)], dim=1)
        return eps

    def extra_repr(self) -> str:
        return f"prior={self.prior!r}, schedule={self.schedule!r}, learn_sigma={self.learn_sigma}"


def denoise(prior: Prior, x: torch.Tensor, t) -> torch.Tensor:
    """Functional form of :class:`EmpiricalDenoiser`."""
    return EmpiricalDenoiser(prior)(x, t)
