#!/usr/bin/python3
"""Write .pth state dicts with torch itself (Debian python3-torch 1.13) for tests/test_pth.c.

Run from the repository root: /usr/bin/python3 tests/gen/gen_pth_cases.py
Writes tests/fixtures/pth-cases/{zip,legacy}.pth (the same state dict in the zip container and
with _use_new_zipfile_serialization=False) and expected.json (every tensor's dtype, shape and
values, as torch reads them back).
"""
import collections, json, os
import torch

OUT = "tests/fixtures/pth-cases"
os.makedirs(OUT, exist_ok=True)
torch.manual_seed(16)  # the module initialisation below
g = torch.Generator().manual_seed(16)

def rnd(*shape):
    return torch.randn(*shape, generator=g)

sd = collections.OrderedDict()
sd["f32"] = rnd(2, 3)
sd["f16"] = rnd(4).half()
sd["bf16"] = rnd(3, 2).bfloat16()
sd["i64"] = torch.arange(-3, 4, dtype=torch.int64) * 1000000007
sd["scalar"] = torch.tensor(2.5)
sd["empty"] = torch.zeros(0, 3)
base = rnd(5, 4)
sd["transposed"] = base.t()                  # non-contiguous: strides (1, 4)
sd["offset"] = rnd(12)[5:9]                  # storage offset 5 in a 12-element storage
shared = rnd(6, 3)
sd["shared_a"] = shared[1:3]                 # two views of one storage
sd["shared_b"] = shared[:, 1]                # strided view of the same storage
sd["f16_view"] = rnd(4, 4).half()[1:, ::2]   # half-precision strided view
sd["f64"] = rnd(3).double()
sd["i32"] = torch.tensor([-2147483648, -1, 0, 2147483647], dtype=torch.int32)
sd["u8"] = torch.tensor([0, 1, 255], dtype=torch.uint8)
sd["bool"] = torch.tensor([True, False, True])
# a real module's state dict: conv + batch norm (num_batches_tracked is I64, _metadata BUILD)
m = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3))
for k, v in m.state_dict().items():
    sd["net." + k] = v

torch.save(sd, os.path.join(OUT, "zip.pth"))
torch.save(sd, os.path.join(OUT, "legacy.pth"), _use_new_zipfile_serialization=False)
# the module's own state_dict object (OrderedDict with _metadata) as saved by users
torch.save(m.state_dict(), os.path.join(OUT, "module_legacy.pth"), _use_new_zipfile_serialization=False)
torch.save(m.state_dict(), os.path.join(OUT, "module_zip.pth"))

DT = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
      torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8", torch.bool: "BOOL"}
exp = collections.OrderedDict()
for name in ["zip.pth", "legacy.pth", "module_legacy.pth", "module_zip.pth"]:
    back = torch.load(os.path.join(OUT, name))
    exp[name] = [{"name": k, "dtype": DT[v.dtype], "shape": list(v.shape),
                  "values": [float(x) if v.is_floating_point() else int(x)
                             for x in v.double().flatten().tolist()] if v.is_floating_point()
                  else [int(x) for x in v.flatten().tolist()]} for k, v in back.items()]
with open(os.path.join(OUT, "expected.json"), "w") as f:
    json.dump(exp, f, indent=0)
    f.write("\n")
print("wrote", OUT)
