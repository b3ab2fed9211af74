#!/usr/bin/env python3
"""PyTorch float32 baseline of one fsr step on CUDA, for scripts/gpu-bench.sh.

The same step `fslens bench` times (4·B·N·D flops): for particles x (B × D), atoms a (N × D),
bias β (N) and noise (s, v),

  ℓ_bi = β_i − ‖x_b − s a_i‖² / (2v),   w_bi = softmax_i(ℓ_bi),   m_b = Σ_i w_bi a_i,

written as a competent PyTorch user would: chunked over the atoms (so memory stays O(B·chunk)),
an online log-sum-exp with running max per row, squared distances by ‖x‖² − 2s x·aᵀ + s²‖a‖²
through addmm (cuBLAS), weights below e^-60 of the running max set to zero. TF32 is off
(torch.backends.cuda.matmul.allow_tf32 = False): plain fp32 like the WGSL kernels. Timed with
CUDA events after a warm-up; prints one JSON object (best of --repeats).

Atoms: the first N Fashion-MNIST training images when --idx names the IDX(.gz) file, else
seeded random 8-bit pixels 2k/255 − 1 (timing does not depend on the values). Particles are
noisy atoms at time t of the linear VP schedule β ∈ [0.01, 20] (fslens's default).

Usage: fsr_step_torch.py --B 256 --N 60000 --D 784 [--t 0.3] [--repeats 10] [--chunk 16384]
                         [--idx train-images-idx3-ubyte.gz] [--seed 1]
"""
import argparse
import gzip
import json
import math
import sys

import torch

CLAMP = -60.0


def fsr_step(atoms, norms2, x, bias, s, v, chunk):
    n, d = atoms.shape
    b = x.shape[0]
    inv2v = 1.0 / (2.0 * v)
    xn = (x.double() * x.double()).sum(1).float()
    m = torch.full((b,), -math.inf, device=x.device)
    s0 = torch.zeros(b, device=x.device)
    acc = torch.zeros(b, d, device=x.device)
    for i0 in range(0, n, chunk):
        a = atoms[i0:i0 + chunk]
        # ℓ = (β − s²‖a‖²/(2v)) + (2s/(2v)) x·aᵀ − ‖x‖²/(2v)
        c = bias[i0:i0 + chunk] - (s * s * inv2v) * norms2[i0:i0 + chunk]
        g = torch.addmm(c.unsqueeze(0).expand(b, -1), x, a.t(), beta=1.0, alpha=2.0 * s * inv2v)
        g.sub_((xn * inv2v).unsqueeze(1))
        m_new = torch.maximum(m, g.amax(1))
        scale = m - m_new
        r = torch.where(scale < CLAMP, torch.zeros_like(scale), torch.exp(scale))
        acc.mul_(r.unsqueeze(1))
        s0.mul_(r)
        g.sub_(m_new.unsqueeze(1))
        p = torch.where(g < CLAMP, torch.zeros_like(g), torch.exp(g))
        s0.add_(p.sum(1))
        acc.addmm_(p, a)
        m = m_new
    return acc / s0.unsqueeze(1)


def load_idx(path, n):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    magic, count, h, w = (int.from_bytes(data[o:o + 4], "big") for o in (0, 4, 8, 12))
    if magic != 0x803:
        sys.exit(f"{path}: IDX magic {magic:#x}, expected 0x803")
    n = min(n, count)
    px = torch.frombuffer(bytearray(data[16:16 + n * h * w]), dtype=torch.uint8)
    return px.reshape(n, h * w)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--B", type=int, required=True)
    ap.add_argument("--N", type=int, required=True)
    ap.add_argument("--D", type=int, required=True)
    ap.add_argument("--t", type=float, default=0.3)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--chunk", type=int, default=16384)
    ap.add_argument("--idx", default=None)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("torch has no CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device("cuda")
    gen = torch.Generator().manual_seed(args.seed)
    if args.idx:
        codes = load_idx(args.idx, args.N)
        if codes.shape[1] != args.D:
            sys.exit(f"{args.idx} has D = {codes.shape[1]}, not {args.D}")
    else:
        codes = torch.randint(0, 256, (args.N, args.D), generator=gen, dtype=torch.uint8)
    n, d = codes.shape
    atoms = (codes.double() * (2.0 / 255.0) - 1.0).float().to(dev)
    log_ab = -(0.01 * args.t + 0.5 * (20.0 - 0.01) * args.t ** 2)
    s, v = math.exp(0.5 * log_ab), -math.expm1(log_ab)
    pick = torch.randint(0, n, (args.B,), generator=gen).to(dev)
    x = (s * atoms[pick] + math.sqrt(v) * torch.randn(args.B, d, generator=gen).to(dev)).contiguous()
    # A box-inpainting-like bias: −‖M(y − a_i)‖²/(2σ²) over the first half of the pixels.
    sigma, half = 0.05, d // 2
    y = atoms[n - 1, :half] + sigma * torch.randn(half, generator=gen).to(dev)
    bias = -((atoms[:, :half] - y) ** 2).sum(1) / (2 * sigma * sigma)
    bias = bias - bias.max()
    norms2 = (atoms.double() ** 2).sum(1).float()
    chunk = max(1, min(args.chunk, n))
    fsr_step(atoms, norms2, x, bias, s, v, chunk)  # warm-up
    torch.cuda.synchronize()
    best = math.inf
    for _ in range(max(1, args.repeats)):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fsr_step(atoms, norms2, x, bias, s, v, chunk)
        end.record()
        torch.cuda.synchronize()
        best = min(best, start.elapsed_time(end) / 1e3)
    flops = 4.0 * args.B * n * d
    print(json.dumps({
        "kernel": "fsr-step-torch", "B": args.B, "N": n, "D": d, "t": args.t,
        "seconds_per_step": best, "gflops": flops / best / 1e9, "chunk": chunk,
        "torch": torch.__version__, "device": torch.cuda.get_device_name(0),
        "tf32": torch.backends.cuda.matmul.allow_tf32,
        "data": args.idx or f"random 8-bit, seed {args.seed}",
    }))


if __name__ == "__main__":
    main()
