"""Scheduler cases (tests/fixtures/scheduler_cases.json), computed by diffusers 0.32.1's own
DPMSolverMultistepScheduler, EulerDiscreteScheduler and FlowMatchEulerDiscreteScheduler
(unmodified; torch 1.13 Debian, numpy 1.24, CPU).

Each case holds:
  config_text   the scheduler_config.json the C test reads: for "native" cases the scheduler's own
                to_json_string() (what save_config writes, -Infinity included); for "as" cases
                (the paper's E2 swap) SD3's FlowMatch config, and the scheduler was built with
                Cls.from_config(that config) exactly as experiments/e2_paper_impl_multi_gpu.py does
  class, load   the class built, and "native" (by _class_name) or "as"
  runs          per step count: timesteps, sigmas (the values diffusers holds, fp32 / int64),
                init_noise_sigma and, for some, a trajectory:
                  x = x0 * init_noise_sigma;  per step i with t = timesteps[i]:
                  xi = scale_model_input(x, t);  out = 0.9 * xi - 0.25 * u  (fp32, u fixed);
                  x = step(out, t, x).prev_sample;  every x is stored.
                x0 and u are torch.randn (seeds 5 and 6), shape [2, 1, 4, 4], stored in the file.
Also "linspace": torch.linspace(start, end, n, float32) under ATEN_CPU_CAPABILITY default, avx2
and avx512 (subprocesses), which the DDPM betas are built from.

Run from the repository root:
  PYTHONPATH=REFENV/src:REFENV /usr/bin/python3 tests/gen/gen_scheduler_cases.py
  (REFENV: a folder with diffusers 0.32.1's source under REFENV/src (github.com/huggingface/diffusers, v0.32.1) and a shim.py adapting it to Debian's PyTorch 1.13 (tests/fixtures/README-pipeline.md))
"""
import shim  # noqa: F401  (reference-environment shims; must come first)

import json
import os
import subprocess
import sys

import torch
from diffusers import DPMSolverMultistepScheduler, EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler

OUT = "tests/fixtures/scheduler_cases.json"
SD3_CONFIG = "tests/fixtures/sd3-pipeline-tiny/scheduler/scheduler_config.json"
CLASSES = {c.__name__: c for c in (DPMSolverMultistepScheduler, EulerDiscreteScheduler,
                                    FlowMatchEulerDiscreteScheduler)}
LIN = [(0.0001, 0.02, 1000), (0.00085 ** 0.5, 0.012 ** 0.5, 1000), (0.0001, 0.02, 37),
       (0.00085 ** 0.5, 0.012 ** 0.5, 1001), (0.1, 0.9, 77), (0.5, -0.25, 2), (0.3, 0.7, 1)]

def f32(v):
    """A float32 value written with 9 significant digits (enough to round-trip a float32)."""
    return float("%.9g" % float(v))


CAP = os.environ.get("ATEN_CPU_CAPABILITY", "avx2")

if len(sys.argv) > 1 and sys.argv[1] == "--linspace":
    print(json.dumps([[f32(v) for v in torch.linspace(a, b, n, dtype=torch.float32)] for a, b, n in LIN]))
    sys.exit(0)


def linspace_sets():
    out = {}
    for cap in ("default", "avx2", "avx512"):
        env = dict(os.environ, ATEN_CPU_CAPABILITY=cap)
        r = subprocess.run([sys.executable, __file__, "--linspace"], env=env, check=True, capture_output=True,
                           text=True)
        out[cap] = json.loads(r.stdout)
    return [{"start": a, "end": b, "n": n, **{cap: out[cap][i] for cap in out}} for i, (a, b, n) in enumerate(LIN)]


g = torch.Generator().manual_seed(5)
X0 = torch.randn(2, 1, 4, 4, generator=g, dtype=torch.float32)
U = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(6), dtype=torch.float32)


def trajectory(s, n):
    s.set_timesteps(n)
    x = X0 * s.init_noise_sigma if hasattr(s, "init_noise_sigma") else X0.clone()  # FlowMatch has neither
    xs = []
    for t in s.timesteps:
        xi = s.scale_model_input(x, t) if hasattr(s, "scale_model_input") else x
        out = 0.9 * xi - 0.25 * U
        x = s.step(out, t, x).prev_sample
        assert x.dtype == torch.float32
        xs.append([f32(v) for v in x.flatten()])
    return xs


def run(cls, config_text, load, steps, traj_steps, name):
    cfg = json.loads(config_text)
    s = CLASSES[cls].from_config(cfg)
    runs = []
    for n in steps:
        s.set_timesteps(n)
        ts = s.timesteps
        r = {"steps": n,
             "timesteps": [int(v) for v in ts] if ts.dtype == torch.int64 else [float(v) for v in ts],
             "sigmas": [f32(v) for v in s.sigmas],
             "init_noise_sigma": float(getattr(s, "init_noise_sigma", 1.0))}
        assert s.sigmas.dtype == torch.float32
        if n in traj_steps:
            s2 = CLASSES[cls].from_config(cfg)
            r["trajectory"] = trajectory(s2, n)
        runs.append(r)
    print(f"{name:28s} {cls:32s} steps {steps} traj {traj_steps}")
    return {"name": name, "class": cls, "load": load, "torch_cpu": CAP, "config_text": config_text, "runs": runs}


def native(name, cls, kwargs, steps, traj=()):
    s = CLASSES[cls](**kwargs)
    return run(cls, s.to_json_string(), "native", steps, traj, name)


def minimal(name, cls, text, steps, traj=()):
    """A hand-written config (defaults for every missing field)."""
    return run(cls, text, "native", steps, traj, name)


def swap(name, cls, steps, traj=()):
    with open(SD3_CONFIG) as f:
        text = f.read()
    return run(cls, text, "as", steps, traj, name)


D, E, F = "DPMSolverMultistepScheduler", "EulerDiscreteScheduler", "FlowMatchEulerDiscreteScheduler"
if len(sys.argv) > 1 and sys.argv[1] == "--other-kernel":
    # a few schedules under another torch CPU kernel (betas differ there in the last bit)
    other = [native(f"pixart-default-{CAP}", D, {}, [7, 20], (20,)),
             native(f"scaled-linear-{CAP}", D, {"beta_schedule": "scaled_linear", "beta_start": 0.00085,
                                               "beta_end": 0.012}, [25], ()),
             native(f"euler-default-{CAP}", E, {}, [20], (20,))]
    print("JSON" + json.dumps(other))
    sys.exit(0)
ALL = [1, 2, 3, 4, 7, 20, 25]
cases = [
    # PixArt-alpha's scheduler: scripts/convert_pixart_alpha_to_diffusers.py uses DPMSolverMultistepScheduler()
    native("pixart-default", D, {}, ALL + [50], (1, 2, 3, 7, 20)),
    native("order1", D, {"solver_order": 1}, [4, 20], (4, 20)),
    native("order3", D, {"solver_order": 3}, [3, 4, 10, 20, 25], (4, 10, 25)),
    native("order2-heun", D, {"solver_type": "heun"}, [5, 20], (5, 20)),
    native("vpred", D, {"prediction_type": "v_prediction"}, [12], (12,)),
    native("sample-pred-order3", D, {"prediction_type": "sample", "solver_order": 3}, [9], (9,)),
    native("leading-offset1", D, {"timestep_spacing": "leading", "steps_offset": 1}, [1, 4, 7, 20, 25], (7,)),
    native("trailing", D, {"timestep_spacing": "trailing"}, [1, 3, 7, 20, 25, 30], (7, 20)),
    native("karras", D, {"use_karras_sigmas": True}, [2, 7, 20, 25], (20,)),
    native("karras-scaled-order3", D, {"use_karras_sigmas": True, "beta_schedule": "scaled_linear",
                                       "beta_start": 0.00085, "beta_end": 0.012, "solver_order": 3}, [11, 25], (25,)),
    native("sigma-min-final", D, {"final_sigmas_type": "sigma_min"}, [4, 20], (4, 20)),
    native("no-lower-order-final", D, {"lower_order_final": False, "final_sigmas_type": "sigma_min"}, [6], (6,)),
    native("euler-at-final", D, {"euler_at_final": True, "final_sigmas_type": "sigma_min"}, [16], (16,)),
    native("scaled-linear", D, {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
           [20, 25], (25,)),
    native("cosine-clipped", D, {"beta_schedule": "squaredcos_cap_v2", "lambda_min_clipped": -5.1}, [10, 20], (10,)),
    native("flow-sigmas", D, {"use_flow_sigmas": True, "flow_shift": 3.0, "prediction_type": "flow_prediction"},
           [4, 20], (20,)),
    native("t500", D, {"num_train_timesteps": 500, "beta_end": 0.03}, [13], (13,)),
    native("trained-betas", D, {"num_train_timesteps": 60, "trained_betas": [0.0005 + 0.0004 * i + 0.00001 * i * i
                                                                             for i in range(60)]}, [3, 10], (10,)),
    native("zero-snr-trailing-vpred", D, {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing",
                                          "prediction_type": "v_prediction", "beta_schedule": "scaled_linear",
                                          "beta_start": 0.00085, "beta_end": 0.012}, [4, 20], (20,)),
    minimal("minimal-dpm", D, '{"_class_name": "DPMSolverMultistepScheduler", "solver_order": 3}', [8], (8,)),
    swap("e2-dpm-from-sd3", D, [8, 20, 50], (20,)),
    native("euler-default", E, {}, ALL, (1, 2, 7, 20)),
    native("euler-sdxl", E, {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
                             "timestep_spacing": "leading", "steps_offset": 1}, [1, 7, 20, 30], (7, 30)),
    native("euler-trailing", E, {"timestep_spacing": "trailing"}, [3, 7, 20], (7,)),
    native("euler-vpred", E, {"prediction_type": "v_prediction"}, [9], (9,)),
    native("euler-sample", E, {"prediction_type": "sample"}, [5], (5,)),
    native("euler-karras", E, {"use_karras_sigmas": True}, [7, 20], (20,)),
    native("euler-karras-range", E, {"use_karras_sigmas": True, "sigma_min": 0.05, "sigma_max": 10.0}, [9], (9,)),
    native("euler-trained-betas", E, {"num_train_timesteps": 40, "trained_betas": [0.001 * (i + 1) for i in range(40)]},
           [6], (6,)),
    native("euler-zero-snr-vpred", E, {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing",
                                       "prediction_type": "v_prediction"}, [5, 20], (20,)),
    native("euler-sigma-min", E, {"final_sigmas_type": "sigma_min"}, [6], (6,)),
    swap("e2-euler-from-sd3", E, [8, 20, 50], (20,)),
    swap("sd3-flowmatch", F, [1, 4, 20, 28], (4, 20)),  # load "as" its own class: same as native
]

for cap in ("default", "avx512"):
    r = subprocess.run([sys.executable, __file__, "--other-kernel"], env=dict(os.environ, ATEN_CPU_CAPABILITY=cap),
                       check=True, capture_output=True, text=True)
    cases += json.loads(r.stdout[r.stdout.index("JSON") + 4:])

doc = {"generator": "tests/gen/gen_scheduler_cases.py", "diffusers": "0.32.1", "torch": torch.__version__,
       "x0": [f32(v) for v in X0.flatten()], "u": [f32(v) for v in U.flatten()],
       "fake_model": "out = 0.9 * scale_model_input(x) - 0.25 * u (fp32)",
       "linspace": linspace_sets(), "cases": cases}
with open(OUT, "w") as f:
    json.dump(doc, f, separators=(",", ":"))
    f.write("\n")
print("wrote", OUT, os.path.getsize(OUT), "bytes")
