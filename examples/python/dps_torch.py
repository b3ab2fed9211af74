"""DPS (Chung et al., ICLR 2023, Algorithm 1) written in plain PyTorch, with fslens's exact
empirical denoiser in place of the UNet, diagnosed against the exact posterior over time.

The model is ``fslens.torch.EpsilonModel``: called like guided-diffusion's UNet,
``model(x, t_index)`` → ε, differentiable (its backward is one exact engine pass). Everything
else is the DPS loop as its authors' code runs it: 1000 DDPM levels, ancestral steps, and the
guidance step −ζ ∇_x ‖y − A(x̂₀(x))‖ through torch.autograd. The prior is the demo's (3000
synthetic 16×16 shapes, ×4 super-resolution), so the exact posterior is known at every t and
the run's spread, mode weights and hallucination can be measured at each recorded level.

    python examples/python/dps_torch.py [--out dps-report] [--particles 128]
"""

import argparse
import pathlib

import numpy as np
import torch
import torch.nn.functional as F

import fslens
import fslens.torch

DEMO = pathlib.Path(__file__).resolve().parents[2] / "assets/configs/demo.toml"


def forward_operator(x, shape):
    """A(x): the demo's downsample:4, the mean of each 4 × 4 block (rows of HWC images)."""
    h, w, c = shape
    img = x.reshape(-1, h, w, c).permute(0, 3, 1, 2)
    return F.avg_pool2d(img, 4).permute(0, 2, 3, 1).reshape(x.shape[0], -1)


def x0_hat(model, x, level, ddpm):
    """Tweedie's x̂₀ = (x − √(1 − ᾱ_k) ε(x, k)) / √ᾱ_k, differentiable in x."""
    s, v = ddpm.noise(level)
    eps = model(x, torch.full((x.shape[0],), level))
    return (x - v**0.5 * eps) / s


def log_likelihood_grad(model, x, level, y, sigma, shape, ddpm):
    """∇_x of −‖y − A(x̂₀(x))‖² / (2σ²): σ-DPS's likelihood score, by autograd."""
    x = x.detach().requires_grad_(True)
    r = y - forward_operator(x0_hat(model, x, level, ddpm), shape)
    return torch.autograd.grad(-(r * r).sum() / (2 * sigma**2), x)[0]


def dps(model, y, shape, particles, zeta, record, seed=0):
    """DPS ancestral sampling over all 1000 levels; returns {level: x at that level} for the
    levels in `record` and the final x₀ under key -1."""
    ddpm = fslens.DDPM()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(particles, int(np.prod(shape)), generator=g, dtype=torch.float64)
    kept = {}
    for k in reversed(range(ddpm.LEVELS)):
        if k in record:
            kept[k] = x.detach().clone()
        x = x.detach().requires_grad_(True)
        x0 = x0_hat(model, x, k, ddpm)
        residual = torch.linalg.vector_norm(y - forward_operator(x0, shape))
        grad = torch.autograd.grad(residual, x)[0]
        beta, abar = ddpm.beta(k), ddpm.alpha_bar(k)
        abar_prev = ddpm.alpha_bar(k - 1) if k > 0 else 1.0
        # The DDPM posterior q(x_{k−1} | x_k, x̂₀), then the guidance step.
        mean = (abar_prev**0.5 * beta / (1 - abar)) * x0 + (
            (1 - beta) ** 0.5 * (1 - abar_prev) / (1 - abar)
        ) * x
        noise = (beta * (1 - abar_prev) / (1 - abar)) ** 0.5 * torch.randn(x.shape, generator=g, dtype=x.dtype)
        x = (mean + (noise if k > 0 else 0.0) - zeta * grad).detach()
    kept[-1] = x
    return kept


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(DEMO))
    ap.add_argument("--out", default="dps-report", help="folder of report.html (replaced if it is fslens's)")
    ap.add_argument("--particles", type=int, default=128)
    ap.add_argument("--zeta", type=float, default=1.0, help="DPS step size ζ' (the DPS code's `scale`)")
    args = ap.parse_args()

    prior = fslens.Prior.from_config(args.config)
    post = prior.posterior()  # the config's y = A(truth) + N(0, σ² I)
    model = fslens.torch.EpsilonModel(prior)  # the only change to a DPS script
    y = torch.from_numpy(post.y.astype(np.float64))
    ddpm, levels = fslens.DDPM(), [900, 700, 500, 300, 200, 100, 50, 20]
    kept = dps(model, y, prior.shape, args.particles, args.zeta, set(levels))

    times = [float(ddpm.time(k, prior.schedule)) for k in levels] + [0.0]
    clouds = [kept[k].numpy() for k in levels] + [kept[-1].numpy()]
    # Mode TV against the exact draws at the same t (nearest-atom modes of noisy particles
    # compared like with like), hallucination: particles in modes the exact ω rules out.
    print(f"{'level':>6} {'t':>7} {'spread ratio':>13} {'mode TV':>8} {'halluc.':>8} {'off-support':>12}")
    for k, t, cloud in zip(levels + [-1], times, clouds):
        m = post.metrics(cloud, t)
        print(
            f"{k if k >= 0 else 'final':>6} {t:7.4f} {m['spread_ratio']:13.3f} {m['mode_tv_to_exact_cloud']:8.3f} "
            f"{m['hallucination_rate']:8.3f} {m['off_support_rate']:12.3f}"
        )
    out = fslens.diagnose_trajectory(
        args.config, np.stack(clouds), np.array(times), out=args.out, label="dps-torch"
    )
    print(f"report: {out}/report.html")


if __name__ == "__main__":
    main()
