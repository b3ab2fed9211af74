"""fslens from Python in ~30 lines: the demo's empirical prior (3000 synthetic 16×16 shapes,
one held out as the truth), its Tweedie denoiser, the exact posterior of the demo's ×4
super-resolution measurement, and exact posterior draws.

    python examples/python/quickstart.py [config.toml]
"""

import pathlib
import sys

import numpy as np

import fslens

config = sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).parents[2] / "assets/configs/demo.toml"
prior = fslens.Prior.from_config(config, backend="cpu")  # atoms, schedule and measurement
truth = prior.truth
nearest = np.linalg.norm(prior.atoms - truth, axis=1).min()
print(f"prior: N = {prior.n_atoms} atoms of D = {prior.dim}; nearest atom to the truth at {nearest:.4f}")

# Denoise: the truth noised to t = 0.3, and its Tweedie mean E[x_0 | x_t] (a near atom).
s, v = prior.schedule.noise(0.3)
x_t = s * truth + np.sqrt(v) * np.random.default_rng(0).normal(size=prior.dim)
m = prior.denoise(x_t, 0.3)[0]
print(f"denoise at t = 0.3: |m - truth| = {np.linalg.norm(m - truth):.4f}")

# The same at level 500 of the DDPM schedule (guided-diffusion's), as noise predictions.
s, v = fslens.DDPM().noise(500)
eps = np.random.default_rng(1).normal(size=prior.dim)
e = prior.eps(s * truth + np.sqrt(v) * eps, level=500)[0]
print(f"eps at DDPM level 500: |eps_hat - eps| / |eps| = {np.linalg.norm(e - eps) / np.linalg.norm(eps):.4f}")

# The exact posterior of the config's measurement y = downsample:4(truth) + N(0, 0.1² I).
post = prior.posterior()
print(f"posterior: {post.operator}, sigma = {post.sigma}, effective atoms = {post.effective_atoms:.2f}")
m_post = post.denoise(x_t, 0.3)[0]
print(f"posterior mean at t = 0.3: |m - truth| = {np.linalg.norm(m_post - truth):.4f}")

# Exact draws of p(x_0 | y): atoms drawn with the posterior weights.
draws = post.sample(0.0, 256, seed=0)
dist = np.linalg.norm(draws - truth, axis=1)
print(f"256 exact draws at t = 0: mean |x - truth| = {dist.mean():.4f}, min = {dist.min():.4f}")
