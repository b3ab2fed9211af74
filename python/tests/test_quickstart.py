"""examples/python/quickstart.py runs with the installed package (as a subprocess, from
outside the source tree) and prints what it should."""

import os
import re
import subprocess
import sys

from conftest import DEMO, REPO

SCRIPT = REPO / "examples" / "python" / "quickstart.py"


def test_quickstart_runs_and_prints_the_numbers(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(DEMO)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    m = re.search(r"prior: N = (\d+) atoms of D = (\d+); nearest atom to the truth at ([\d.]+)", out)
    assert m, out
    n, d, nearest = int(m[1]), int(m[2]), float(m[3])
    assert (n, d) == (2999, 256)  # 3000 shapes, one held out; 16 × 16
    assert re.search(r"denoise at t = 0.3: \|m - truth\| = [\d.]+", out), out
    e = float(re.search(r"eps at DDPM level 500: \|eps_hat - eps\| / \|eps\| = ([\d.]+)", out)[1])
    assert 0 < e < 1, out
    eff = float(re.search(r"posterior: downsample:4, sigma = 0.1, effective atoms = ([\d.]+)", out)[1])
    assert 1 <= eff <= n, out
    assert re.search(r"posterior mean at t = 0.3: \|m - truth\| = [\d.]+", out), out
    draws = re.search(r"256 exact draws at t = 0: mean \|x - truth\| = ([\d.]+), min = ([\d.]+)", out)
    assert draws, out
    # Exact draws at t = 0 are atoms: none nearer the truth than its nearest atom.
    assert float(draws[2]) >= nearest - 1e-4 and float(draws[1]) >= float(draws[2]), out
