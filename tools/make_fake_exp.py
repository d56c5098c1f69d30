#!/usr/bin/env python3
"""Write a synthetic experiment folder in the format of docs/experiment-format.md, for looking at
`sinkscope report` without running a model. Standard library only.

    tools/make_fake_exp.py OUT_DIR [--prompts 24] [--seeds 2] [--size 64] [--seed 1]

Designed effects: top-k sink removal shifts images (1-SSIM ~0.2-0.3) about 5x more than the
equal-budget random control, GenEval accuracy barely moves, an eta sweep whose shift grows as eta
goes to 0, probe curves whose MaxMass peaks early in a middle block, top-1 sinks on a few text keys.
The numbers are made up; only the format is real.
"""
import argparse
import json
import math
import os
import random
import struct
import zlib

TAGS = ["single_object", "two_object", "counting", "colors", "position", "color_attr"]
COLORS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (230, 200, 30),
          "purple": (140, 60, 170)}
SHAPES = ["circle", "square", "triangle"]
N_IMG = 1024  # image tokens in the fake joint sequence; text keys follow
HEADS = 8


def png_bytes(w, h, rgb):
    raw = b"".join(b"\x00" + bytes(rgb[y * w * 3:(y + 1) * w * 3]) for y in range(h))

    def chunk(t, d):
        c = struct.pack(">I", len(d)) + t + d
        return c + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def render(size, shapes, bg, jitter, rng):
    """shapes: list of (shape, color, cx, cy, r) in [0,1] units; jitter moves them (the 'shift')."""
    img = bytearray()
    moved = [(s, c, cx + rng.uniform(-jitter, jitter), cy + rng.uniform(-jitter, jitter), r * (1 + rng.uniform(-jitter, jitter)))
             for s, c, cx, cy, r in shapes]
    for y in range(size):
        for x in range(size):
            u, v = (x + 0.5) / size, (y + 0.5) / size
            px = bg
            for s, c, cx, cy, r in moved:
                dx, dy = u - cx, v - cy
                inside = (dx * dx + dy * dy <= r * r if s == "circle" else
                          max(abs(dx), abs(dy)) <= r * 0.85 if s == "square" else
                          dy <= r * 0.8 and dy >= -r * 0.8 and abs(dx) <= (dy + r * 0.8) * 0.6)
                if inside:
                    px = COLORS[c]
            img += bytes(px)
    return img


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    steps, blocks = 20, [0, 1, 2, 3]
    conds = [
        {"name": "baseline", "layers": []},
        {"name": "A1", "layers": [2], "select": "topk", "k": 1, "path": "score", "eta": 0.0},
        {"name": "R1", "layers": [2], "select": "random", "k": 1, "path": "score", "eta": 0.0, "seed": 7},
        {"name": "A5", "layers": [2], "select": "topk", "k": 5, "path": "score", "eta": 0.0},
        {"name": "R5", "layers": [2], "select": "random", "k": 5, "path": "score", "eta": 0.0, "seed": 7},
        {"name": "A1-eta0.1", "layers": [2], "select": "topk", "k": 1, "path": "score", "eta": 0.1},
        {"name": "A1-eta0.5", "layers": [2], "select": "topk", "k": 1, "path": "score", "eta": 0.5},
        {"name": "A2-multi", "layers": [1, 2, 3], "select": "topk", "k": 1, "path": "score", "eta": 0.0},
        {"name": "V-mean", "layers": [2], "select": "topk", "k": 1, "path": "value", "value": "mean"},
    ]
    # per condition: mean 1-SSIM and the chance a correct baseline image becomes wrong / vice versa
    effect = {"A1": (0.22, 0.06, 0.06), "R1": (0.045, 0.03, 0.03), "A5": (0.30, 0.10, 0.07), "R5": (0.07, 0.04, 0.04),
              "A1-eta0.1": (0.14, 0.05, 0.05), "A1-eta0.5": (0.05, 0.02, 0.02), "A2-multi": (0.27, 0.07, 0.06),
              "V-mean": (0.10, 0.04, 0.04)}
    os.makedirs(a.out, exist_ok=True)
    exp = {"sinkscope_version": "0.1.0", "model": "models/shapeworld", "model_digest": "fake0000",
           "prompts": "data/shapeworld_eval.jsonl", "prompts_digest": "fake1111", "n_prompts": a.prompts,
           "seeds_per_prompt": a.seeds, "base_seed": 0, "steps": steps, "cfg": 4.0,
           "probe": {"blocks": blocks, "queries": "image", "topk": 5}, "conditions": conds}
    with open(os.path.join(a.out, "experiment.json"), "w") as f:
        json.dump(exp, f, indent=2)
    recs = []
    for p in range(a.prompts):
        tag = TAGS[p % len(TAGS)]
        c1, c2 = rng.sample(sorted(COLORS), 2)
        s1, s2 = rng.sample(SHAPES, 2)
        if tag in ("two_object", "position", "color_attr"):
            shapes = [(s1, c1, 0.3, 0.5, 0.16), (s2, c2, 0.7, 0.5, 0.16)]
            prompt = f"a photo of a {c1} {s1} and a {c2} {s2}"
        elif tag == "counting":
            shapes = [(s1, c1, 0.25 + 0.25 * i, 0.5, 0.1) for i in range(3)]
            prompt = f"a photo of three {c1} {s1}s"
        else:
            shapes = [(s1, c1, 0.5, 0.5, 0.22)]
            prompt = f"a photo of a {c1} {s1}"
        for r in range(a.seeds):
            seed = p * a.seeds + r
            base_ok = rng.random() < 0.7
            srng = random.Random(seed)
            bg = tuple(235 + srng.randrange(15) for _ in range(3))
            for ci, c in enumerate(conds):
                name = c["name"]
                crng = random.Random(seed * 131 + ci)
                if ci == 0:
                    ok, shift, jit = base_ok, 0.0, 0.0
                else:
                    m, p_loss, p_gain = effect[name]
                    ok = (crng.random() >= p_loss) if base_ok else (crng.random() < p_gain)
                    shift = min(0.95, max(0.0, crng.gauss(m, m * 0.35)))
                    jit = shift * 0.25
                img = render(a.size, shapes, bg, jit, random.Random(seed * 7 + ci))
                rel = f"images/{name}/{p:05d}_{seed}.png"
                os.makedirs(os.path.join(a.out, "images", name), exist_ok=True)
                with open(os.path.join(a.out, rel), "wb") as f:
                    f.write(png_bytes(a.size, a.size, img))
                mse = 0.0 if ci == 0 else shift * 0.05
                rec = {"key": f"{name}/{p:05d}/{seed}", "condition": name, "condition_index": ci, "prompt_index": p,
                       "prompt": prompt, "tag": tag, "seed": seed, "image": rel,
                       "metrics": {"geneval": int(ok), "mse": round(mse, 6),
                                   "psnr": None if mse == 0 else round(-10 * math.log10(mse), 4),
                                   "ssim": round(1 - shift, 6)}}
                if ci == 0:
                    probe = []
                    for b in blocks:
                        peak = [0.02, 0.05, 0.095, 0.06][b]
                        for st in range(steps):
                            t = st / (steps - 1)
                            mm = peak * (1.15 - 0.6 * t) * (1 + 0.1 * crng.gauss(0, 1))
                            keys = [N_IMG + crng.choice([3, 3, 3, 5, 5, 9, 12]) if crng.random() > 0.02 else crng.randrange(N_IMG)
                                    for _ in range(HEADS)]
                            probe.append({"block": b, "step": st, "t_frac": t, "max_mass": round(mm, 6),
                                          "entropy": round(6.8 - 25 * mm + 0.3 * t, 4),
                                          "top5": round(min(1, 2.8 * mm + 0.05 + 0.1 * t), 4),
                                          "top1_is_index0": 0.0 if crng.random() > 0.01 else 0.125,
                                          "top1_is_text": sum(k >= N_IMG for k in keys) / HEADS,
                                          "act_max": round(8 + 120 * mm, 3), "act_p95": round(6 + 80 * mm, 3),
                                          "top1_keys": keys})
                    rec["probe"] = probe
                elif c["layers"]:
                    ver = []
                    for b in c["layers"]:
                        for st in range(steps):
                            before = [0.02, 0.05, 0.095, 0.06][b] * (1.1 - 0.5 * st / (steps - 1))
                            if c.get("select") == "random":
                                before *= 0.002
                            after = 0.0 if c.get("eta", 0) == 0 and c.get("path", "score") == "score" else \
                                before * c.get("eta", 1.0) / (1 - before + before * c.get("eta", 1.0))
                            k = c.get("k", 1)
                            ver.append({"block": b, "step": st, "mass_before": round(before, 7), "mass_after": after,
                                        "keys": [[N_IMG + 3 + j for j in range(k)] for _ in range(HEADS)]})
                    rec["verification"] = ver
                rec["seconds"] = 1.0
                recs.append(rec)
    with open(os.path.join(a.out, "records.jsonl"), "w") as f:
        for r in recs:
            f.write(json.dumps(r, separators=(",", ":")) + "\n")
    print(f"wrote {len(recs)} records to {a.out}")


if __name__ == "__main__":
    main()
