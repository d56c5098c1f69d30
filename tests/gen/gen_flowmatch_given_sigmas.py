#!/usr/bin/python3
"""FlowMatchEulerDiscreteScheduler.set_timesteps with given sigmas and no dynamic shift (a FluxPipeline
whose scheduler has use_dynamic_shifting false, e.g. FLUX.1-schnell, with any `shift`), by diffusers
0.32.1 itself, for tests/test_flowmatch.c. numpy keeps the given sigmas' float32 in
shift * s / (1 + (shift - 1) * s). Writes tests/fixtures/flowmatch_given_sigmas.json: per case
shift, steps, the sigmas given (FluxPipeline's np.linspace(1, 1/n, n)) and diffusers' sigmas and
timesteps (floats written with repr, exact for float32 values).

Run from the repository root:
  PYTHONPATH=REFENV/src:REFENV /usr/bin/python3 tests/gen/gen_flowmatch_given_sigmas.py
  (REFENV: a folder with diffusers 0.32.1's source under REFENV/src (github.com/huggingface/diffusers, v0.32.1) and a shim.py adapting it to Debian's PyTorch 1.13 (tests/fixtures/README-pipeline.md))
"""
import json

import shim  # noqa: F401
import numpy as np
from diffusers import FlowMatchEulerDiscreteScheduler

cases = []
for shift in (1.0, 3.0, 1.7, 0.6):
    for n in (1, 2, 4, 7, 28, 50):
        s = FlowMatchEulerDiscreteScheduler(shift=shift, use_dynamic_shifting=False)
        given = np.linspace(1.0, 1 / n, n)
        s.set_timesteps(sigmas=given)
        cases.append({"shift": shift, "steps": n, "given": [float(x) for x in given],
                      "sigmas": [float(x) for x in s.sigmas], "timesteps": [float(x) for x in s.timesteps]})
with open("tests/fixtures/flowmatch_given_sigmas.json", "w") as f:
    json.dump({"diffusers": "0.32.1", "class": "FlowMatchEulerDiscreteScheduler", "use_dynamic_shifting": False,
               "cases": cases}, f, indent=0)
print(len(cases), "cases")
