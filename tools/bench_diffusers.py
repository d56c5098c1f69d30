#!/usr/bin/env python3
"""diffusers' SD3Transformer2DModel beside sinkscope's forward benchmark, in one invocation.

Runs build/opt/bench/bench_forward (sinkscope: SD3-medium width, 2 blocks, 1024 image + 333 text
tokens, batch 1; F32 and bf16 compute), then the same configuration in diffusers with PyTorch in
fp32 and in bf16 (random weights, torch.no_grad, best of --reps after a warm-up), and prints the
times side by side with the ratios. Every figure is measured in this run.

    make bench-diffusers DIFFUSERS_SRC=path/to/diffusers/src [DIFFUSERS_SHIM=dir]

--diffusers-src goes first on sys.path; --shim names a folder whose shim.py is imported before
torch's users (compatibility patches for an older PyTorch). Without an importable torch and
diffusers the script says so and exits 0 (skipped).
"""
import argparse
import os
import re
import subprocess
import sys
import time

CONFIG = dict(sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=2,
              attention_head_dim=64, num_attention_heads=24, joint_attention_dim=4096,
              caption_projection_dim=1536, pooled_projection_dim=2048, pos_embed_max_size=192)
HL = WL = 64   # latent: 1024 image tokens at patch 2
S = 333        # text tokens


def ours(bench):
    """sinkscope's forward times (s) by compute precision, from bench_forward's own lines."""
    out = subprocess.run([bench], check=True, capture_output=True, text=True).stdout
    sys.stdout.write(out)
    times = {}
    for line in out.splitlines():
        m = re.match(r"forward (F32|BF16)\s+weights, (f32|bf16)\s+compute: .* forward ([0-9.]+) s", line)
        if m and (m.group(1), m.group(2)) in (("F32", "f32"), ("BF16", "bf16")):
            times[m.group(2)] = float(m.group(3))
    cpu = re.search(r"CPU: (.*?); threads", out)
    return times, cpu.group(1) if cpu else "unknown CPU"


def theirs(torch, model_cls, dtype, reps, threads):
    torch.manual_seed(0)
    model = model_cls(**CONFIG).eval().to(dtype)
    x = torch.randn(1, 16, HL, WL, dtype=dtype)
    ctx = torch.randn(1, S, CONFIG["joint_attention_dim"], dtype=dtype)
    pooled = torch.randn(1, CONFIG["pooled_projection_dim"], dtype=dtype)
    t = torch.tensor([500.0], dtype=dtype)
    best = float("inf")
    with torch.no_grad():
        for r in range(reps + 1):
            t0 = time.perf_counter()
            model(hidden_states=x, encoder_hidden_states=ctx, pooled_projections=pooled, timestep=t)
            dt = time.perf_counter() - t0
            if r > 0:  # the first run warms up
                best = min(best, dt)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", default="build/opt/bench/bench_forward", help="sinkscope's bench_forward program")
    ap.add_argument("--diffusers-src", default=os.environ.get("DIFFUSERS_SRC"), help="diffusers/src folder")
    ap.add_argument("--shim", default=os.environ.get("DIFFUSERS_SHIM"), help="folder with a shim.py to import first")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    a = ap.parse_args()
    for p in (a.shim, a.diffusers_src):
        if p:
            sys.path.insert(0, os.path.abspath(p))
    try:
        if a.shim:
            import shim  # noqa: F401  (patches torch before diffusers is imported)
        import torch
        from diffusers import SD3Transformer2DModel
    except Exception as e:  # ImportError, or an incompatible torch
        print(f"bench-diffusers: skipped: cannot import torch and diffusers ({type(e).__name__}: {e}).")
        print("  Needs Debian's python3-torch and a diffusers 0.32.1 source checkout: "
              "make bench-diffusers DIFFUSERS_SRC=path/to/diffusers/src [DIFFUSERS_SHIM=dir with shim.py]")
        return 0
    import diffusers
    torch.set_num_threads(a.threads)
    mine, cpu = ours(a.bench)
    print(f"\ndiffusers {diffusers.__version__} with PyTorch {torch.__version__} on {cpu}, {a.threads} threads, "
          f"same configuration (D=1536, 2 blocks, {HL * WL // 4} image + {S} text tokens, batch 1):")
    for name, dtype in (("f32", torch.float32), ("bf16", torch.bfloat16)):
        tt = theirs(torch, SD3Transformer2DModel, dtype, a.reps, a.threads)
        m = mine.get(name)
        if m:
            print(f"  {name:4}: diffusers {tt:.3f} s, sinkscope {m:.3f} s: sinkscope {tt / m:.2f}x faster")
        else:
            print(f"  {name:4}: diffusers {tt:.3f} s (no sinkscope figure parsed from {a.bench})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
