#!/usr/bin/python3
"""clean-fid ("clean" mode) references from clean-fid itself (GaParmar/clean-fid at e88c4d6, extracted
outside the repository; argv[1]) with pytorch-fid's network (argv[2], as for gen_fid_inception.py),
on Debian's PIL 9.4, numpy, torch 1.13.

Run from the repository root, after gen_fid_inception.py (it reads the PNGs that one writes):
  /usr/bin/python3 tests/gen/gen_fid_cleanfid.py /tmp/cfref /tmp/fidref/src

clean-fid's own pieces: make_resizer("PIL", False, "bicubic", (299, 299)) (per-channel float32
PIL BICUBIC, clip to [0, 255]), the (x - 128) / 128 of its InceptionV3W.forward, and its
frechet_distance on np.mean / np.cov of the float32 features as its fid.py computes them. The
network is pytorch-fid's InceptionV3([3], resize_input=False, normalize_input=False) with the
hash weights of gen_fid_inception.py (clean-fid's torchscript of the same TF graph cannot be
downloaded here).

Writes tests/fixtures/fid/:
  cleanfid-resize.json  PIL float BICUBIC of the first channel of a/a0.png (64x64) and b/b1.png
                        (50x50) to 299x299 and 97x150 (checksums) and to 37x23, 64x20 (all values),
                        and of a 300x200 float ramp to 299x299 (checksums); each value exactly
  cleanfid.f32          the five images' features (order of inception.json), float32
  cleanfid.json         clean-fid's FID a/ vs b/ from them
"""
import json, os, sys
import numpy as np
import torch
from PIL import Image

sys.path.insert(0, sys.argv[1])
sys.path.insert(0, sys.argv[2])
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.argv = sys.argv[:1] + [sys.argv[2]]
from cleanfid.resize import make_resizer  # noqa: E402
from cleanfid.fid import frechet_distance  # noqa: E402
import gen_fid_inception_weights as W  # noqa: E402  (the hash weights, shared with gen_fid_inception.py)

OUT = "tests/fixtures/fid"
meta = json.load(open(os.path.join(OUT, "inception.json")))

def pil_f(ch, ow, oh):
    return np.asarray(Image.fromarray(ch.astype(np.float32), mode="F").resize((ow, oh), resample=Image.BICUBIC))

res = {"cases": []}
for rel in ("a/a0.png", "b/b1.png"):
    ch = np.array(Image.open(os.path.join(OUT, rel)).convert("RGB"))[:, :, 0]
    for ow, oh in ((299, 299), (37, 23), (97, 150), (64, 20)):
        y = pil_f(ch, ow, oh).astype(np.float64)
        c = {"file": rel, "ow": ow, "oh": oh, "sum": float(y.sum()), "sumsq": float((y * y).sum()),
             "min": float(y.min()), "max": float(y.max())}
        if ow * oh < 2000:
            c["values"] = [float(v) for v in y.ravel()]
        res["cases"].append(c)
ramp = (np.add.outer(np.arange(200) * 1.3, np.arange(300) * 0.7) % 255).astype(np.float32)
y = pil_f(ramp, 299, 299).astype(np.float64)
res["ramp"] = {"w": 300, "h": 200, "formula": "(1.3 i + 0.7 j) mod 255 in float64, then float32",
               "sum": float(y.sum()), "sumsq": float((y * y).sum())}
with open(os.path.join(OUT, "cleanfid-resize.json"), "w") as f:
    json.dump(res, f)
    f.write("\n")

model = W.model(resize_input=False, normalize_input=False)
fn_resize = make_resizer("PIL", False, "bicubic", (299, 299))
feats = []
with torch.no_grad():
    for m in meta["images"]:
        img_np = np.array(Image.open(os.path.join(OUT, m["file"])).convert("RGB"))  # clean-fid's loading
        img_t = torch.from_numpy(fn_resize(img_np).transpose(2, 0, 1).copy())[None]  # ToTensor of float32
        x = (img_t - 128) / 128
        feats.append(model(x)[0].squeeze(3).squeeze(2)[0].numpy().astype(np.float32))
F = np.stack(feats)
F.astype("<f4").tofile(os.path.join(OUT, "cleanfid.f32"))
fa, fb = F[:3], F[3:]
fid = float(frechet_distance(np.mean(fa, axis=0), np.cov(fa, rowvar=False), np.mean(fb, axis=0),
                             np.cov(fb, rowvar=False)))
print("clean-fid fid", fid)
with open(os.path.join(OUT, "cleanfid.json"), "w") as f:
    json.dump({"fid_a_b": fid, "mode": "clean"}, f, indent=1)
    f.write("\n")
