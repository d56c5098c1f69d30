#!/usr/bin/python3
"""LPIPS references from the lpips package itself (richzhang/PerceptualSimilarity at 082bb24f84c0,
extracted outside the repository; pass its folder as argv[1]) on Debian's torch 1.13 + torchvision 0.14.

Run from the repository root:
  /usr/bin/python3 tests/gen/gen_lpips_random.py /tmp/lpref

Writes tests/fixtures/lpips-random/:
  alexnet.pth  torchvision.models.alexnet() random init (seed 7), its state dict in torch's zip
               format, features.* entries only (real names and shapes; the 57M-parameter
               classifier, which LPIPS never uses, is dropped to keep the fixture small). The
               weights are rounded to multiples of 1/8 of each tensor's init bound so that git
               compresses them; they are still random.
  alex.pth     lpips.LPIPS(net='alex', pretrained=False) linear heads (lin0..lin4.model.1.weight,
               made non-negative like the published ones and scaled by 100 so that distances
               are O(0.1-1) as with the real weights), saved legacy-style
               (_use_new_zipfile_serialization=False) as lpips' own weights/v0.1/alex.pth is.
  *.png        8-bit RGB image pairs; pairs.txt lists them.
  expected.json per pair: lpips in float64 (model.double(), the reference) and in float32 (what
               users get), and the five per-layer terms in float64.
"""
import collections, json, os, shutil, sys
import numpy as np
import torch, torchvision
from PIL import Image

sys.path.insert(0, sys.argv[1])
import lpips  # noqa: E402

OUT = "tests/fixtures/lpips-random"
os.makedirs(OUT, exist_ok=True)
torch.manual_seed(7)

alex = torchvision.models.alexnet()
feat = collections.OrderedDict()
for k, v in alex.state_dict().items():
    if k.startswith("features."):
        bound = float(v.abs().max())
        feat[k] = (torch.round(v / bound * 8) * (bound / 8)).contiguous()
torch.save(feat, os.path.join(OUT, "alexnet.pth"))

model = lpips.LPIPS(net="alex", pretrained=False, pnet_rand=True, verbose=False)
lins = collections.OrderedDict()
for k, v in model.state_dict().items():
    if k.startswith("lin"):
        lins[k] = (v.abs() * 100).contiguous()
torch.save(lins, os.path.join(OUT, "alex.pth"), _use_new_zipfile_serialization=False)

# load both files back into the lpips model: trunk slices hold torchvision's features modules
sd = model.state_dict()
slice_of = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}
for k, v in torch.load(os.path.join(OUT, "alexnet.pth")).items():
    _, idx, what = k.split(".")
    sd["net.slice%d.%s.%s" % (slice_of[int(idx)], idx, what)] = v
sd.update(torch.load(os.path.join(OUT, "alex.pth")))
model.load_state_dict(sd)
model.eval()
m64 = lpips.LPIPS(net="alex", pretrained=False, pnet_rand=True, verbose=False)
m64.load_state_dict(sd)
m64 = m64.double().eval()

rng = np.random.default_rng(16)

def smooth_image(w, h):
    # low-frequency colour field plus a little noise (compresses well as PNG)
    gy, gx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3))
    for c in range(3):
        fx, fy, ph = rng.uniform(0.5, 4, 3)
        img[:, :, c] = 127 + 100 * np.sin(2 * np.pi * (fx * gx / w + fy * gy / h) + ph)
    return img

def perturb(img, amp):
    return img + rng.normal(0, amp, img.shape)

def save(name, img):
    Image.fromarray(np.clip(np.round(img), 0, 255).astype(np.uint8), "RGB").save(os.path.join(OUT, name))

cases = []
def add(tag, w, h, amp):
    a = smooth_image(w, h)
    save(tag + "_a.png", perturb(a, 3))
    if amp == 0:
        shutil.copyfile(os.path.join(OUT, tag + "_a.png"), os.path.join(OUT, tag + "_b.png"))
    else:
        save(tag + "_b.png", perturb(a, amp))
    cases.append(tag)

add("s64x48", 64, 48, 12)        # non-square, different
add("s64x48same", 64, 48, 0)     # identical pair
add("s31x40", 31, 40, 30)        # smallest width AlexNet takes, non-square
add("s97x61", 97, 61, 6)         # odd sizes
add("s256", 256, 256, 8)         # >= 256^2

exp = collections.OrderedDict()
with open(os.path.join(OUT, "pairs.txt"), "w") as f:
    for tag in cases:
        pa, pb = tag + "_a.png", tag + "_b.png"
        f.write("%s %s\n" % (pa, pb))
        ia = lpips.im2tensor(np.asarray(Image.open(os.path.join(OUT, pa)).convert("RGB")))
        ib = lpips.im2tensor(np.asarray(Image.open(os.path.join(OUT, pb)).convert("RGB")))
        with torch.no_grad():
            d32 = float(model(ia, ib).flatten()[0])
            d64, layers = m64(ia.double(), ib.double(), retPerLayer=True)
        exp[tag] = {"a": pa, "b": pb, "w": ia.shape[3], "h": ia.shape[2], "lpips": float(d64.flatten()[0]),
                    "lpips_f32": d32, "layers": [float(x.flatten()[0]) for x in layers]}
        print(tag, exp[tag]["lpips"], d32 - exp[tag]["lpips"])
with open(os.path.join(OUT, "expected.json"), "w") as f:
    json.dump(exp, f, indent=1)
    f.write("\n")
