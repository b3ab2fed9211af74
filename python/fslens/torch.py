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
"""

from __future__ import annotations

import numpy as np
import torch

from . import Posterior, Prior, _times

__all__ = ["EmpiricalDenoiser", "denoise"]


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().to("cpu").contiguous().numpy()


def _times_of(t, rows: int) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        t = _np(t).astype(np.float64)
    return _times(t, rows)


class _Denoise(torch.autograd.Function):
    """m(x_t) forward; (s/v) C g backward, with the weights of the prior (or of a
    posterior's biased weights for the mean only: see EmpiricalDenoiser)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, times: np.ndarray, prior: Prior, posterior):
        xs = _np(x)
        if posterior is None:
            m = prior.denoise(xs, times)
        else:
            m = posterior.denoise(xs, times)
        ctx.prior = prior
        ctx.times = times
        ctx.save_for_backward(x)  # (torch then refuses a backward after x changed in place)
        # The prior's means, kept for the backward pass: it then costs one engine pass.
        ctx.means = m.copy() if posterior is None else None
        return torch.from_numpy(m).to(device=x.device, dtype=x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        (x,) = ctx.saved_tensors
        vjp = ctx.prior.denoiser_vjp(_np(x), ctx.times, _np(grad), means=ctx.means)
        return torch.from_numpy(vjp).to(device=grad.device, dtype=grad.dtype), None, None, None


class EmpiricalDenoiser(torch.nn.Module):
    """The empirical prior's Tweedie denoiser m(x_t) = E[x_0 | x_t] as a torch module.

    Parameters
    ----------
    prior : fslens.Prior
    posterior : optional fslens.Posterior of the same prior. Then ``forward`` returns the
        posterior mean m̃(x_t) = E[x_0 | x_t, y] instead; its backward is not provided (the
        posterior score needs no gradient: use ``posterior.score``), and asking for one
        raises.

    ``forward(x, t)``: x of shape (B, D) (or (B, H, W, C) / any shape whose trailing
    dimensions flatten to D, in HWC order), t a float or (B,) times in (0, 1].
    """

    def __init__(self, prior: Prior, posterior: Posterior | None = None):
        super().__init__()
        if not isinstance(prior, Prior):
            raise TypeError(f"prior must be a fslens.Prior, got {type(prior).__name__}")
        if posterior is not None and not isinstance(posterior, Posterior):
            raise TypeError(f"posterior must be a fslens.Posterior, got {type(posterior).__name__}")
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
        if self.posterior is not None and flat.requires_grad:
            m = _DenoisePosterior.apply(flat, times, self.prior, self.posterior)
        else:
            m = _Denoise.apply(flat, times, self.prior, self.posterior)
        return m.reshape(x.shape)

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


class _DenoisePosterior(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, times, prior, posterior):
        m = posterior.denoise(_np(x), times)
        return torch.from_numpy(m).to(device=x.device, dtype=x.dtype)

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError(
            "the posterior mean's Jacobian is not implemented; differentiate the prior "
            "denoiser (EmpiricalDenoiser(prior)) or use posterior.score for the exact score"
        )


def denoise(prior: Prior, x: torch.Tensor, t) -> torch.Tensor:
    """Functional form of :class:`EmpiricalDenoiser`."""
    return EmpiricalDenoiser(prior)(x, t)
