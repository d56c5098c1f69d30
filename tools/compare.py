#!/usr/bin/python3
"""Compare tensors of two safetensors files: relative L2 error ||a-b||/||b|| per common name.
Usage: compare.py OUT.safetensors EXPECTED.safetensors [name-prefix ...]  (needs numpy)"""
import json, struct, sys
import numpy as np

DT = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I64": np.int64, "I32": np.int32}

def load(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    hdr = json.loads(raw[8:8 + n])
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        b, e = v["data_offsets"]
        buf = raw[8 + n + b:8 + n + e]
        if v["dtype"] == "BF16":
            a = (np.frombuffer(buf, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            a = np.frombuffer(buf, DT[v["dtype"]])
        out[k] = a.reshape(v["shape"]).astype(np.float64)
    return out

if __name__ == "__main__":
    a, b = load(sys.argv[1]), load(sys.argv[2])
    pre = sys.argv[3:]
    worst = 0.0
    for k in sorted(b):
        if k not in a or (pre and not any(k.startswith(p) for p in pre)):
            continue
        if a[k].shape != b[k].shape:
            print(f"{k}: shape {a[k].shape} vs {b[k].shape}")
            worst = float("inf")
            continue
        err = np.linalg.norm(a[k] - b[k]) / max(np.linalg.norm(b[k]), 1e-300)
        worst = max(worst, err)
        print(f"{k:24s} rel L2 {err:.3e}")
    print(f"worst {worst:.3e}")
