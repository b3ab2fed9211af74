"""examples/python/dps_torch.py: its likelihood gradient, taken by torch.autograd through
fslens.torch.EpsilonModel, equals the library's σ-DPS likelihood score (the sigma-dps score
minus the prior score); and the whole script runs, prints its table over time and writes a
report. Skipped with the reason when torch is missing, unless FSLENS_REQUIRE_TORCH=1."""

import importlib.util
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import fslens
from conftest import DEMO, REPO, record, rel_err

try:
    import torch

    import fslens.torch as ft
except ImportError as e:  # pragma: no cover - depends on the machine
    if os.environ.get("FSLENS_REQUIRE_TORCH") == "1":
        raise
    pytest.skip(f"torch is not installed ({e}); pip install torch, or set FSLENS_REQUIRE_TORCH=1 to fail instead", allow_module_level=True)

SCRIPT = REPO / "examples" / "python" / "dps_torch.py"


def example():
    spec = importlib.util.spec_from_file_location("dps_torch", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("level", [150, 400, 800])
def test_likelihood_gradient_is_sigma_dps_minus_prior(level):
    dps = example()
    prior = fslens.Prior.from_config(DEMO, backend="cpu")
    post = prior.posterior()
    ddpm = fslens.DDPM()
    s, v = ddpm.noise(level)
    rng = np.random.default_rng(level)
    # Particles near the posterior (noised truth) and far from it (noised prior atoms).
    picks = np.concatenate([np.zeros(3, int), rng.integers(0, prior.n_atoms, 3)])
    base = np.concatenate([prior.truth[None].repeat(3, 0), prior.atoms[picks[3:]]])
    x = (s * base + np.sqrt(v) * rng.normal(size=base.shape)).astype(np.float32)
    model = ft.EpsilonModel(prior)
    y = torch.from_numpy(post.y.astype(np.float64))
    got = dps.log_likelihood_grad(model, torch.from_numpy(x.astype(np.float64)), level, y, post.sigma, prior.shape, ddpm)
    dps_score = post.score(x, level=level, method="sigma-dps").astype(np.float64)
    want = dps_score - prior.score(x, level=level)
    # Norm-wise relative to the gradient itself (both library scores are float32: their
    # difference carries rounding of the score's size, ~1e-7 of it).
    err = rel_err(got.numpy(), want)
    assert np.abs(want).max() > 1e-3 * np.abs(dps_score).max()  # a gradient worth comparing
    record(f"dps example likelihood gradient vs sigma-dps − prior (level {level})", err)
    assert err <= 1e-4, err
    # The operator of the example is the config's downsample:4.
    assert np.allclose(
        dps.forward_operator(torch.from_numpy(prior.truth[None].astype(np.float64)), prior.shape).numpy()[0],
        post.y,
        atol=5 * post.sigma,
    )


def test_script_runs_and_writes_its_report(tmp_path):
    out = tmp_path / "dps-report"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--particles", "32", "--out", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert proc.returncode == 0, proc.stderr
    rows = re.findall(r"^\s*(\d+|final)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", proc.stdout, re.M)
    assert len(rows) == 9, proc.stdout
    assert rows[-1][0] == "final" and float(rows[-1][1]) == 0.0
    assert (out / "report.html").is_file()
    summary = json.loads((out / "summary.json").read_text())
    names = [r["name"] for r in summary["samplers"]]
    assert "dps-torch" in names and "exact" in names, names
