#!/usr/bin/env python3
"""fslens from Python against `fslens bench`: the exact posterior score on Fashion-MNIST.

Times ``post.score(x, t, method="fsr")`` of the Python package — argument checks, the
conversion to float32 rows, the engine pass (the posterior-weighted mean over all N atoms),
the float64 score (s m̃ − x)/v and the conversion back to numpy — on the whole Fashion-MNIST
training set (N = 60000, D = 784, CPU backend, f32 atoms), and runs ``fslens bench`` (the
engine's fused fsr step alone, timed inside the binary) on the same atoms, times, batch sizes
and threads in the same run, alternating the two so both see the same machine load. It
prints, per (t, B), the median and best seconds of each and their ratio Python ÷ CLI, then
the peak resident memory of this process (VmHWM) beside the atom store (N · D · 4 bytes).
The last column, "package s/call", is the same call on a one-atom prior: what the package
adds to a call besides the pass over the atoms (checks, conversions, the float64 score),
measured apart so that machine load cannot hide it in the ratio.

The measurement is the one `fslens bench` uses: the middle half of the last training image
hidden (box 14 × 14 at (7, 7)), σ = 0.05 (y = that image + noise); the particles are
x = s a_j + √v ε around random atoms. The Python side builds its prior from the uint8 IDX
file (numpy reads it; ``fslens.Prior`` maps k to 2k/255 − 1 exactly as the binary does)
and its posterior with ``prior.posterior(y, operator="box:...", sigma=0.05)``.

Usage (from the repository root, after `pip install .` and `cargo build --release`):

    python benches/python_score.py [--fslens target/release/fslens] [--batch 256,16]
        [--t 0.3] [--repeats 9] [--rounds 2] [--data /usr/share/datasets/fashion-mnist]

Targets: Python within 5 % of the CLI at B = 256 and 10 % at B = 16 (medians); peak RSS at
most the atom store + 150 MB.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import fslens

ROOT = Path(__file__).resolve().parent.parent


def status_mb(field: str) -> float:
    """A memory line of /proc/self/status (VmRSS, VmHWM), in MB (10^6 bytes)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024 / 1e6
    return float("nan")


def read_idx_images(path: Path) -> np.ndarray:
    """An IDX3 image file (gzip) as an (N, H·W) uint8 array."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic, n, h, w = (int.from_bytes(raw[4 * k : 4 * k + 4], "big") for k in range(4))
    if magic != 2051:
        raise SystemExit(f"{path}: not an IDX3 image file (magic {magic})")
    return np.frombuffer(raw, dtype=np.uint8, count=n * h * w, offset=16).reshape(n, h * w)


def time_python(post, x: np.ndarray, t: float, repeats: int) -> list:
    for _ in range(2):  # warm-up: first-touch of buffers, thread pool start
        post.score(x, t, method="fsr")
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        post.score(x, t, method="fsr")
        times.append(time.perf_counter() - t0)
    return times


def run_cli(binary: str, batches, ts, repeats: int, data: Path) -> dict:
    """`fslens bench` on the same cases: {(t, B): (median s, best s, its peak RSS MB)}."""
    cmd = [
        binary, "bench", "--backend", "cpu", "--no-baseline", "--json", "--quiet",
        "--batch", ",".join(map(str, batches)), "--t", ",".join(map(str, ts)),
        "--repeats", str(repeats), "--data", str(data),
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    found = {}
    for line in out.splitlines():
        r = json.loads(line)
        if r["kernel"] == "fsr-step":
            found[(r["t"], r["B"])] = (r["median_seconds_per_step"], r["seconds_per_step"], r["peak_rss_mb"])
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fslens", default=os.environ.get("FSLENS_BIN", str(ROOT / "target/release/fslens")))
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("FSLENS_FASHION_MNIST", "/usr/share/datasets/fashion-mnist")))
    ap.add_argument("--batch", default="256,16")
    ap.add_argument("--t", default="0.3")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--rounds", type=int, default=2, help="Python/CLI alternations")
    args = ap.parse_args()
    batches = [int(b) for b in args.batch.split(",")]
    ts = [float(t) for t in args.t.split(",")]
    if not Path(args.fslens).exists():
        raise SystemExit(f"{args.fslens} not found: cargo build --release, or pass --fslens PATH")

    rss_start = status_mb("VmRSS")
    atoms_u8 = read_idx_images(args.data / "train-images-idx3-ubyte.gz")
    n, d = atoms_u8.shape
    prior = fslens.Prior(atoms_u8, backend="cpu")
    # The measurement of `fslens bench`: the last image with its middle half hidden.
    rng = np.random.default_rng(1)
    side = int(round(d**0.5))
    truth = atoms_u8[-1].astype(np.float64) * (2 / 255) - 1
    keep = np.ones((side, side), bool)
    keep[side // 4 : 3 * side // 4, side // 4 : 3 * side // 4] = False
    sigma = 0.05
    y = (truth + sigma * rng.standard_normal(d))[keep.reshape(-1)]
    box = f"box:x={side // 4},y={side // 4},w={side // 2},h={side // 2}"
    post = prior.posterior(y, operator=box, sigma=sigma)
    # Clean rows around which the particles are drawn, decoded as the engine decodes them.
    centres = {b: atoms_u8[rng.integers(0, n, b)].astype(np.float64) * (2 / 255) - 1 for b in batches}
    del atoms_u8  # the engine holds the atoms now

    py = {(t, b): [] for t in ts for b in batches}
    cli = {(t, b): [] for t in ts for b in batches}
    cli_rss = 0.0
    for _ in range(args.rounds):
        for t in ts:
            s, v = prior.schedule.noise(t)
            for b in batches:
                c = centres[b]
                x = (s * c + np.sqrt(v) * rng.standard_normal(c.shape)).astype(np.float32)
                py[(t, b)] += time_python(post, x, t, args.repeats)
        for key, (med, best, rss) in run_cli(args.fslens, batches, ts, args.repeats, args.data).items():
            cli[key].append((med, best))
            cli_rss = max(cli_rss, rss)

    hwm = status_mb("VmHWM")
    # The package's own cost per call, measured apart from the pass over 60000 atoms: the same
    # call on a one-atom prior (argument checks, conversions, a trivial pass, the float64
    # score, the result array). An upper bound on what Python adds to each call above.
    tiny = fslens.Prior(np.zeros((1, d), np.float32), backend="cpu").posterior_from_log_likelihood(np.zeros(1))
    fixed = {}
    for b in batches:
        x = rng.standard_normal((b, d)).astype(np.float32)
        fixed[b] = statistics.median(time_python(tiny, x, ts[0], 50))
    store = n * d * 4 / 1e6
    load = os.getloadavg()
    print(f"fslens {fslens.__version__}, {prior.backend}, N = {n}, D = {d}, "
          f"{args.rounds} rounds × {args.repeats} calls; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"{'t':>6} {'B':>5} {'python med s':>13} {'python best s':>14} {'cli med s':>10} {'cli best s':>11} "
          f"{'med ratio':>10} {'best ratio':>11} {'package s/call':>15}")
    for t in ts:
        for b in batches:
            pm, pb = statistics.median(py[(t, b)]), min(py[(t, b)])
            cm = statistics.median(m for m, _ in cli[(t, b)])
            cb = min(bb for _, bb in cli[(t, b)])
            print(f"{t:>6} {b:>5} {pm:>13.4f} {pb:>14.4f} {cm:>10.4f} {cb:>11.4f} {pm / cm:>10.3f} {pb / cb:>11.3f} "
                  f"{fixed[b]:>15.2e}")
    print(f"peak RSS (VmHWM) of this process: {hwm:.0f} MB = atom store {store:.0f} MB "
          f"(N × D × 4 bytes, f32) + {hwm - store:.0f} MB; at start (interpreter, numpy, fslens) "
          f"{rss_start:.0f} MB; `fslens bench` peak RSS {cli_rss:.0f} MB")


if __name__ == "__main__":
    sys.exit(main())
