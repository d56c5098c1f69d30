#!/usr/bin/env python3
"""Writes a few small safetensors files into fuzz/seeds/ as starting points for the fuzzer."""
import json, os, struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")
SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def build(tensors, metadata=None, pad=True):
    """tensors: list of (name, dtype, shape); data bytes are a simple counting pattern."""
    hdr, off = {}, 0
    if metadata is not None:
        hdr["__metadata__"] = metadata
    for name, dt, shape in tensors:
        n = SIZES[dt]
        for d in shape:
            n *= d
        hdr[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + n]}
        off += n
    h = json.dumps(hdr, separators=(",", ":")).encode()
    if pad:
        h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + bytes(i % 251 for i in range(off))


SEEDS = {
    "f32_two": build([("a.weight", "F32", [2, 3]), ("a.bias", "F32", [3])]),
    "mixed": build([("h", "F16", [4]), ("b", "BF16", [2, 2]), ("d", "F64", [2]), ("i", "I64", [1]),
                    ("s", "F32", []), ("z", "F32", [0, 4]), ("m", "BOOL", [3]), ("q", "I8", [2, 1, 1])],
                   metadata={"format": "pt"}),
    "empty": build([]),
    "meta_only": build([], metadata={"a": "b", "c": ""}, pad=False),
    "many_dims": build([("x", "U8", [1, 2, 1, 2, 1, 2, 1, 2])]),
    "bad_overlap": (lambda h: struct.pack("<Q", len(h)) + h + bytes(8))(
        b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}'),
}

if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    for name, blob in SEEDS.items():
        with open(os.path.join(OUT, name + ".safetensors"), "wb") as fp:
            fp.write(blob)
