#!/usr/bin/python3
"""pytorch-fid InceptionV3 references from pytorch-fid itself (mseitzer/pytorch-fid at b9c1811,
extracted outside the repository; pass its src/ folder as argv[1]) on Debian's torch 1.13 +
torchvision 0.14, CPU.

Run from the repository root:
  /usr/bin/python3 tests/gen/gen_fid_inception.py /tmp/fidref/src

Random weights, not stored (a 24M-parameter state dict is ~95 MB): every float tensor of the
pt_inception-2015-12-05 state dict (its real names and shapes, as fid_inception_v3() builds them)
is re-created by the test from a counter-based hash, which this script and tests/test_fid.c both
implement:
  h    = FNV-1a 64 of the tensor name
  u[i] = ((splitmix64(h + i) >> 40) / 2^24) * 2 - 1        (i = flat row-major index)
  conv.weight      u * sqrt(6 / fan_in)        (He-uniform for the ReLUs)
  bn.weight        1 + 0.2 u
  bn.bias          0.02 u
  bn.running_mean  0.02 u
  bn.running_var   1 + 0.2 u
  fc.weight/.bias  0.01 u                      (unused by the pool3 features)
computed in float64, rounded once to float32. pytorch-fid loads them through its own
fid_inception_v3() (load_state_dict_from_url is pointed at this dict: nothing is downloaded) inside
InceptionV3([3]) (resize_input, normalize_input, use_fid_inception all True).

Writes tests/fixtures/fid/:
  a/*.png, b/*.png  8-bit RGB images of several sizes (none 299x299: the resize is exercised)
  inception.json    per image: size, the float32 pool3 features' L2 norm and checksum; the
                    features themselves in features.f32 (little-endian float32, images in the
                    order listed, 2048 each); and pytorch-fid's FID between a/ and b/
                    (calculate_fid_given_paths, batch 1, dims 2048).
"""
import json, os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np
import torch
from PIL import Image

sys.path.insert(0, sys.argv[1])
from pytorch_fid import fid_score  # noqa: E402

OUT = "tests/fixtures/fid"

import gen_fid_inception_weights as W  # noqa: E402

model = W.model()

rng = np.random.default_rng(2015)

def image(w, h):
    gy, gx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3))
    for c in range(3):
        fx, fy, ph = rng.uniform(0.5, 3, 3)
        img[:, :, c] = 127 + 90 * np.sin(2 * np.pi * (fx * gx / w + fy * gy / h) + ph)
    img += rng.normal(0, 12, img.shape)
    return Image.fromarray(np.clip(np.round(img), 0, 255).astype(np.uint8), "RGB")

IMAGES = [("a/a0.png", 64, 64), ("a/a1.png", 48, 32), ("a/a2.png", 40, 56), ("b/b0.png", 64, 64),
          ("b/b1.png", 50, 50)]
for rel, w, h in IMAGES:
    image(w, h).save(os.path.join(OUT, rel))

meta, feats = [], []
with torch.no_grad():
    for rel, w, h in IMAGES:
        # pytorch-fid's own loading: ImagePathDataset + ToTensor
        ds = fid_score.ImagePathDataset([os.path.join(OUT, rel)], transforms=fid_score.TF.ToTensor())
        x = ds[0][None]
        f = model(x)[0].squeeze(3).squeeze(2)[0].numpy().astype(np.float32)
        feats.append(f)
        meta.append({"file": rel, "w": w, "h": h, "norm": float(np.linalg.norm(f.astype(np.float64))),
                     "sum": float(f.astype(np.float64).sum())})
        print(rel, meta[-1])
np.concatenate(feats).astype("<f4").tofile(os.path.join(OUT, "features.f32"))
fid = fid_score.calculate_fid_given_paths([os.path.join(OUT, "a"), os.path.join(OUT, "b")], batch_size=1,
                                          device="cpu", dims=2048, num_workers=0)
print("fid", fid)
F = np.stack(feats).astype(np.float64)
print("spread across images / norm", np.linalg.norm(F - F.mean(0), axis=1) / np.linalg.norm(F, axis=1))
with open(os.path.join(OUT, "inception.json"), "w") as fh:
    json.dump({"images": meta, "fid_a_b": float(fid), "torch": torch.__version__}, fh, indent=1)
    fh.write("\n")
