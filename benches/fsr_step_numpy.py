#!/usr/bin/env python3
"""numpy float32 baseline of one fsr step (the posterior weighted mean), for `fslens bench`.

Same algorithm as the CPU backend, written as a competent numpy user would: chunked over the
atoms, online log-sum-exp, squared distances by ‖x‖² − 2s x·aᵀ + s²‖a‖² through matmul (BLAS),
weights below e^-60 of the running max set to zero so BLAS never sees subnormals.

  w_bi ∝ exp(−‖x_b − s a_i‖²/(2v) + β_i),   m_b = Σ_i w_bi a_i.

Usage: fsr_step_numpy.py ATOMS.npy X.npy BIAS.npy S V REPEATS OUT_MEANS.npy [CHUNK]
Prints one JSON object: seconds_per_step (best of REPEATS), numpy version, BLAS name.
"""
import json
import sys
import time

import numpy as np

CLAMP = np.float32(-60.0)


def fsr_step(atoms, norms2, x, bias, s, v, chunk):
    n, d = atoms.shape
    b = x.shape[0]
    s = np.float32(s)
    inv2v = np.float32(1.0 / (2.0 * v))
    xn = np.einsum("bd,bd->b", x.astype(np.float64), x.astype(np.float64)).astype(np.float32)
    m = np.full(b, -np.inf, dtype=np.float32)
    s0 = np.zeros(b, dtype=np.float64)
    acc = np.zeros((b, d), dtype=np.float32)
    g = np.empty((b, chunk), dtype=np.float32)
    for i0 in range(0, n, chunk):
        a = atoms[i0:i0 + chunk]
        c = a.shape[0]
        gc = g[:, :c]
        np.matmul(x, a.T, out=gc)
        # logits = β − (‖x‖² + s²‖a‖² − 2s x·a)/(2v), built in place
        gc *= 2.0 * s * inv2v
        gc -= (xn * inv2v)[:, None]
        gc += bias[i0:i0 + c] - (s * s * inv2v) * norms2[i0:i0 + c]
        m_new = np.maximum(m, gc.max(axis=1))
        scale = m - m_new
        r = np.where(scale < CLAMP, np.float32(0.0), np.exp(scale)).astype(np.float32)
        acc *= r[:, None]
        s0 *= r
        gc -= m_new[:, None]
        small = gc < CLAMP
        np.exp(gc, out=gc)
        gc[small] = 0.0
        s0 += gc.sum(axis=1, dtype=np.float64)
        acc += gc @ a
        m = m_new
    return acc / s0[:, None].astype(np.float32)


def main():
    atoms_path, x_path, bias_path, s, v, repeats, out_path = sys.argv[1:8]
    chunk = int(sys.argv[8]) if len(sys.argv) > 8 else 4096
    atoms = np.ascontiguousarray(np.load(atoms_path, mmap_mode=None), dtype=np.float32)
    x = np.ascontiguousarray(np.load(x_path), dtype=np.float32)
    bias = np.load(bias_path).astype(np.float64)
    bias = (bias - bias.max()).astype(np.float32)
    norms2 = np.einsum("nd,nd->n", atoms.astype(np.float64), atoms.astype(np.float64)).astype(np.float32)
    s, v, repeats = float(s), float(v), int(repeats)
    fsr_step(atoms, norms2, x, bias, s, v, chunk)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        means = fsr_step(atoms, norms2, x, bias, s, v, chunk)
        best = min(best, time.perf_counter() - t0)
    np.save(out_path, means)
    blas = "unknown"
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]["name"]
    except Exception:
        pass
    print(json.dumps({"seconds_per_step": best, "numpy": np.__version__, "blas": blas, "chunk": chunk}))


if __name__ == "__main__":
    main()
