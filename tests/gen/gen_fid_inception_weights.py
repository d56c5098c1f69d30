"""The hash weights of tests/gen/gen_fid_inception.py (formula in its docstring), loaded into
pytorch-fid's own InceptionV3([3]) through fid_inception_v3(): import with pytorch-fid's src/ folder
on sys.path."""
import math
import numpy as np
import torch
from pytorch_fid import inception as I

def fnv1a(s):
    h = 0xCBF29CE484222325
    for b in s.encode():
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h

def hash_uniform(name, count):
    with np.errstate(over="ignore"):
        z = np.arange(count, dtype=np.uint64) + np.uint64(fnv1a(name))
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float64) / 16777216.0 * 2.0 - 1.0

def weight(name, shape):
    u = hash_uniform(name, int(np.prod(shape))).reshape(shape)
    if name.endswith("conv.weight"):
        v = u * math.sqrt(6.0 / (shape[1] * shape[2] * shape[3]))
    elif name.endswith("bn.weight"):
        v = 1.0 + 0.2 * u
    elif name.endswith("bn.running_var"):
        v = 1.0 + 0.2 * u
    elif name.endswith(("bn.bias", "bn.running_mean")):
        v = 0.02 * u
    elif name.startswith("fc."):
        v = 0.01 * u
    else:
        raise ValueError(name)
    return torch.from_numpy(v.astype(np.float32))

# the state dict's names and shapes, from fid_inception_v3() itself (its load skipped once)
real_load = torch.nn.Module.load_state_dict
I.load_state_dict_from_url = lambda *a, **k: {}
torch.nn.Module.load_state_dict = lambda self, sd, strict=True: None
skeleton = I.fid_inception_v3()
torch.nn.Module.load_state_dict = real_load
SD = {k: (weight(k, tuple(v.shape)) if v.is_floating_point() else v.clone())
      for k, v in skeleton.state_dict().items()}
I.load_state_dict_from_url = lambda *a, **k: SD


def model(**kw):
    return I.InceptionV3([3], **kw).eval()

