#!/usr/bin/python3
"""PixArtAlphaPipeline run end to end by diffusers 0.32.1 itself (CPU, float64), and scheduler swaps
(EulerDiscreteScheduler / DPMSolverMultistepScheduler .from_config) on PixArt and on the SD3 pipeline,
for tests/test_pipeline_pixart.c.

Run from the repository root (torch's AVX2 kernels, as sinkscope's schedulers assume by default):
  ATEN_CPU_CAPABILITY=avx2 PYTHONPATH=TRANSFORMERS/src:REFENV/src:REFENV:tests/gen /usr/bin/python3 tests/gen/gen_pixart_pipeline.py
  (REFENV: a folder with diffusers 0.32.1's source under REFENV/src (github.com/huggingface/diffusers, v0.32.1) and a shim.py adapting it to Debian's PyTorch 1.13 (tests/fixtures/README-pipeline.md); TRANSFORMERS:
  the transformers 4.39 tree, see tests/gen/refenv.py)

Each PixArt variant is a diffusers PixArtAlphaPipeline folder under tests/fixtures/pixart-pipeline/NAME/:
  transformer/     a random PixArtTransformer2DModel made and saved here by diffusers (F32)
  text_encoder/    T5EncoderModel: tests/fixtures/t5-encoder-tiny (d_model 32)
  tokenizer/       T5Tokenizer: tests/fixtures/t5-tokenizer
  vae/             AutoencoderKL: the 16-channel 3-block VAE of tests/fixtures/sd3-pipeline-variants/no-t5-vae3-neg
                   (factor 4) or tests/fixtures/vae-tiny-4ch (4 channels, factor 2)
  scheduler/       DPMSolverMultistepScheduler() (PixArt-alpha's: DPM-Solver++ 2M, linear betas, epsilon)
Big files identical to a standalone fixture are relative symbolic links (as gen_flux_pipeline.py does);
model_index.json is diffusers' save_config. The pipeline is loaded back with from_pretrained(torch_dtype=float64)
and called from the prompts with the given initial latents; diffusers' own defaults otherwise: clean_caption
(True, which without bs4 / ftfy, as here, falls back to False: lower().strip()) and use_resolution_binning True
unless the run says otherwise. meta.json lists the runs; each run's initial latents [B, C, h, w] (seeded torch.randn, passed
to the pipeline) go to inputs-RUN.safetensors as 'latents', its stored tensors (F32; ids I64) to
expected-RUN.safetensors:
  input_ids [B, L], attention_mask [B, L]
  (the tokenizer on the lower-cased, stripped prompts), prompt_embeds [B, L, 32], prompt_attention_mask,
  negative_prompt_embeds, negative_prompt_attention_mask (under guidance), timesteps, sigmas, latents.init
  (after init_noise_sigma), per step i model_output.{i} (the transformer's output, [BB, Cout, h, w]),
  noise_pred.{i} (after guidance and the learned-sigma split) and latents.{i} (what the pipeline keeps after
  step i: prev_sample, or with one step pred_original_sample), resolution / aspect_ratio (when the transformer
  gets them), image_raw (vae.decode at the binned size), image (output_type="np": resized back and cropped
  when binned, NHWC).
The SD3 swaps (folder tests/fixtures/sd3-pipeline-tiny, its prompts and latents, 4 steps, CFG 4) store
latents.{i}, model_output.{i}, noise_pred.{i}, timesteps, sigmas, image_raw and image in
tests/fixtures/pixart-pipeline/sd3-swaps/expected-{dpm,euler}.safetensors.
"""
import json, os, shutil, sys, types, tempfile

import shim  # noqa: F401
import torch

if not hasattr(torch, "compiler"):
    torch.compiler = types.SimpleNamespace(disable=lambda f=None, *a, **k: f if f is not None else (lambda g: g))
elif not hasattr(torch.compiler, "disable"):
    torch.compiler.disable = lambda f=None, *a, **k: f if f is not None else (lambda g: g)
_dist = tempfile.mkdtemp()
for _pkg, _ver in (("transformers", "4.39.0.dev0"), ("safetensors", "0.4.2")):
    os.makedirs(os.path.join(_dist, "%s-%s.dist-info" % (_pkg, _ver)))
    with open(os.path.join(_dist, "%s-%s.dist-info" % (_pkg, _ver), "METADATA"), "w") as f:
        f.write("Metadata-Version: 2.1\nName: %s\nVersion: %s\n" % (_pkg, _ver))
sys.path.append(_dist)

import safetensors, safetensors.torch as _stt  # noqa: E402
_stt.storage_ptr = lambda t: t.storage().data_ptr()
_stt.storage_size = lambda t: t.storage().nbytes()


class _SafeOpen:
    def __init__(self, path, framework="pt", device="cpu"):
        import struct
        with open(path, "rb") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            self._header = json.loads(fh.read(n))
        self._path = path

    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False

    def metadata(self):
        return self._header.get("__metadata__")

    def keys(self):
        return [k for k in self._header if k != "__metadata__"]

    def get_tensor(self, name):
        return _stt.load_file(self._path)[name]


safetensors.safe_open = _SafeOpen
import refenv  # noqa: F401,E402
import transformers  # noqa: E402
if not hasattr(transformers, "BaseImageProcessor"):
    from transformers.image_processing_utils import BaseImageProcessor
    transformers.BaseImageProcessor = BaseImageProcessor

from diffusers import (PixArtAlphaPipeline, PixArtTransformer2DModel, DPMSolverMultistepScheduler,  # noqa: E402
                       EulerDiscreteScheduler, StableDiffusion3Pipeline)
from safetensors.torch import save_file, load_file  # noqa: E402

FIX = "tests/fixtures"
OUT = os.path.join(FIX, "pixart-pipeline")
LINK_MIN = 64 * 1024


def copy_dir(src, dst):
    os.makedirs(dst)
    for fn in sorted(os.listdir(src)):
        s = os.path.join(src, fn)
        if not os.path.isfile(s) or fn in ("inputs.safetensors", "expected.safetensors", "meta.json", "cases.json"):
            continue
        real = os.path.realpath(s)
        d = os.path.join(dst, fn)
        if os.path.getsize(real) >= LINK_MIN:
            os.symlink(os.path.relpath(real, os.path.dirname(os.path.abspath(d))), d)
        else:
            shutil.copyfile(real, d)


def randomize(model, seed):
    """Random weights as gen_pixart_variants.py makes them, with smaller gains (1.0 for the matrices, 0.2 for
    the scale-shift tables): with that script's 1.5 / 0.5 the pipeline's tokens reach norms of ~8000 and the
    cross-attention turns one-hot with near ties, where a query row's argmax flips between fp32 and fp64 (a
    reference noise floor of 1.6e-4 relative L2 on a whole step)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("scale_shift_table"):
                v = 0.2 * torch.randn(p.shape, generator=g, dtype=torch.float64)
            elif "norm" in name and name.endswith("weight"):
                v = 1.0 + 0.2 * torch.randn(p.shape, generator=g, dtype=torch.float64)
            else:
                fan = p[0].numel() if p.dim() > 1 else p.shape[0]
                gain = 0.25 if ".emb." in name else 1.0  # small timestep embedders (gen_pixart_variants.py)
                v = gain * torch.randn(p.shape, generator=g, dtype=torch.float64) / max(1, fan) ** 0.5
            p.copy_(v.float().double())


def make_vae(d, seed):
    """A random 4-block AutoencoderKL (factor 8, 4 latent channels: PixArt-alpha's VAE shape), saved to d."""
    from diffusers import AutoencoderKL
    torch.manual_seed(seed)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
                        latent_channels=4, norm_num_groups=4, sample_size=32, scaling_factor=0.18215).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if "norm" in name and name.endswith("weight"):
                v = 1.0 + 0.2 * torch.randn(p.shape, generator=g, dtype=torch.float64)
            else:
                fan = p[0].numel() if p.dim() > 1 else p.shape[0]
                v = 1.2 * torch.randn(p.shape, generator=g, dtype=torch.float64) / max(1, fan) ** 0.5
            p.copy_(v.float().double())
    vae.float().save_pretrained(d, safe_serialization=True)


def build(name, tcfg, vae_src, seed):
    d = os.path.join(OUT, name)
    if os.path.exists(d):
        shutil.rmtree(d)
    os.makedirs(d)
    torch.manual_seed(seed)
    tr = PixArtTransformer2DModel(**tcfg).double()
    randomize(tr, seed)
    tr.float().save_pretrained(os.path.join(d, "transformer"), safe_serialization=True)
    DPMSolverMultistepScheduler().save_pretrained(os.path.join(d, "scheduler"))
    copy_dir(os.path.join(FIX, "t5-encoder-tiny"), os.path.join(d, "text_encoder"))
    copy_dir(os.path.join(FIX, "sd3-pipeline-tiny", "tokenizer_3"), os.path.join(d, "tokenizer"))
    if vae_src is None:
        make_vae(os.path.join(d, "vae"), seed + 1000)
    else:
        copy_dir(vae_src, os.path.join(d, "vae"))
    from transformers import T5EncoderModel, T5Tokenizer
    from diffusers import AutoencoderKL
    pipe = PixArtAlphaPipeline(scheduler=DPMSolverMultistepScheduler.from_pretrained(os.path.join(d, "scheduler")),
                               vae=AutoencoderKL.from_pretrained(os.path.join(d, "vae")),
                               text_encoder=T5EncoderModel.from_pretrained(os.path.join(d, "text_encoder")),
                               tokenizer=T5Tokenizer.from_pretrained(os.path.join(d, "tokenizer")),
                               transformer=PixArtTransformer2DModel.from_pretrained(os.path.join(d, "transformer")))
    pipe.save_config(d)
    return d


class Recorder:
    """Wraps a pipeline's transformer forward, scheduler step and VAE decode."""

    def __init__(self, pipe, guidance, learned):
        self.rec = {"model_output": [], "noise_pred": [], "latents": [], "kw": []}
        fwd, step, dec = pipe.transformer.forward, pipe.scheduler.step, pipe.vae.decode
        rec = self.rec

        def tr_forward(*a, **k):
            out = fwd(*a, **k)
            rec["model_output"].append(out[0].detach().clone())
            rec["kw"].append(k)
            return out

        def sched_step(model_output, timestep, sample, *a, **k):
            rec["noise_pred"].append(model_output.detach().clone())
            out = step(model_output, timestep, sample, *a, **k)
            rec["step_out"] = out
            return out

        def vae_decode(z, *a, **k):
            out = dec(z, *a, **k)
            rec["image_raw"] = out[0].detach().clone()
            return out
        pipe.transformer.forward, pipe.scheduler.step, pipe.vae.decode = tr_forward, sched_step, vae_decode


def run_pixart(d, name, call, seed, scheduler=None):
    torch.set_default_dtype(torch.float64)
    pipe = PixArtAlphaPipeline.from_pretrained(d, torch_dtype=torch.float64)
    if scheduler == "euler":
        pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    B = len(call["prompt"])
    f = pipe.vae_scale_factor
    C = pipe.transformer.config.in_channels
    ss = pipe.transformer.config.sample_size
    H = call.get("height") or ss * f
    W = call.get("width") or ss * f
    binning = call.get("use_resolution_binning", True)
    if binning:
        bins = {128: "ASPECT_RATIO_1024_BIN", 64: "ASPECT_RATIO_512_BIN", 32: "ASPECT_RATIO_256_BIN"}[ss]
        import diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha as ppa
        H, W = pipe.image_processor.classify_height_width_bin(H, W, ratios=getattr(ppa, bins))
    g = torch.Generator().manual_seed(seed)
    lat = torch.randn(B, C, H // f, W // f, generator=g, dtype=torch.float64).float()
    rec = Recorder(pipe, call["guidance_scale"], True).rec
    kw = dict(num_inference_steps=call["num_inference_steps"], guidance_scale=call["guidance_scale"],
              height=call.get("height"), width=call.get("width"), max_sequence_length=call["max_sequence_length"],
              negative_prompt=call.get("negative_prompt", ""), output_type="np")
    if not binning:
        kw["use_resolution_binning"] = False
    steps_out = []
    real_step = pipe.scheduler.step

    def keep_step(*a, **k):
        out = real_step(*a, **k)
        steps_out.append(out)
        return out
    pipe.scheduler.step = keep_step
    with torch.no_grad():
        img = pipe(prompt=call["prompt"], latents=lat.double(), **kw).images
        guided = call["guidance_scale"] > 1.0
        pe, pm, ne, nm = pipe.encode_prompt(call["prompt"], guided, negative_prompt=kw["negative_prompt"],
                                            clean_caption=True, max_sequence_length=call["max_sequence_length"])
    pre = pipe._text_preprocessing(call["prompt"], clean_caption=True)
    toks = pipe.tokenizer(pre, padding="max_length", max_length=call["max_sequence_length"], truncation=True,
                          add_special_tokens=True, return_tensors="pt")
    n = call["num_inference_steps"]
    exp = {"input_ids": toks.input_ids, "attention_mask": toks.attention_mask,
           "prompt_embeds": pe, "prompt_attention_mask": pm, "timesteps": pipe.scheduler.timesteps,
           "sigmas": pipe.scheduler.sigmas, "latents.init": lat.double() * pipe.scheduler.init_noise_sigma,
           "image_raw": rec["image_raw"], "image": torch.from_numpy(img)}
    if guided:
        exp["negative_prompt_embeds"], exp["negative_prompt_attention_mask"] = ne, nm
    kw0 = rec["kw"][0]
    ac = kw0["added_cond_kwargs"]
    if ac["resolution"] is not None:
        exp["resolution"], exp["aspect_ratio"] = ac["resolution"], ac["aspect_ratio"]
    for i in range(n):
        exp["model_output.%d" % i] = rec["model_output"][i]
        exp["noise_pred.%d" % i] = rec["noise_pred"][i]
        so = steps_out[i]
        exp["latents.%d" % i] = so.pred_original_sample if n == 1 else so[0]
    for k in call.pop("drop", ()):  # big tensors left out to keep the fixture small
        for nm in [x for x in exp if x == k or x.startswith(k + ".")]:
            del exp[nm]
    save_file({"latents": lat.contiguous()}, os.path.join(d, "inputs-%s.safetensors" % name))
    save_file({k: (v.long() if k in ("input_ids", "attention_mask") else v.float()).contiguous() for k, v in exp.items()},
              os.path.join(d, "expected-%s.safetensors" % name))
    meta = dict(call)
    meta["prompts"] = meta.pop("prompt")
    meta.update({"name": name, "seed": seed, "scheduler": scheduler or "default", "binned_height": H, "binned_width": W,
                 "vae_scale_factor": f, "use_resolution_binning": binning})
    print(d, name, {k: tuple(v.shape) for k, v in exp.items()})
    print("  timesteps", [float(x) for x in pipe.scheduler.timesteps], "preprocessed", pre)
    torch.set_default_dtype(torch.float32)
    return meta


def run_sd3_swap(kind):
    d = os.path.join(FIX, "sd3-pipeline-tiny")
    with open(os.path.join(d, "meta.json")) as fm:
        m = json.load(fm)
    torch.set_default_dtype(torch.float64)
    pipe = StableDiffusion3Pipeline.from_pretrained(d, torch_dtype=torch.float64)
    cls = {"dpm": DPMSolverMultistepScheduler, "euler": EulerDiscreteScheduler}[kind]
    pipe.scheduler = cls.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    rec = Recorder(pipe, 4.0, False).rec
    lat = load_file(os.path.join(d, "inputs.safetensors"))["latents"]
    steps_out = []
    real_step = pipe.scheduler.step

    def keep_step(*a, **k):
        out = real_step(*a, **k)
        steps_out.append(out)
        return out
    pipe.scheduler.step = keep_step
    call = {"prompt": m["prompts"], "num_inference_steps": m["num_inference_steps"], "guidance_scale": m["guidance_scale"],
            "height": m["height"], "width": m["width"], "max_sequence_length": m["max_sequence_length"]}
    with torch.no_grad():
        img = pipe(latents=lat.double(), output_type="np", **call).images
    exp = {"timesteps": pipe.scheduler.timesteps, "sigmas": pipe.scheduler.sigmas, "image_raw": rec["image_raw"],
           "image": torch.from_numpy(img)}
    for i in range(call["num_inference_steps"]):
        exp["model_output.%d" % i] = rec["model_output"][i]
        exp["noise_pred.%d" % i] = rec["noise_pred"][i]
        exp["latents.%d" % i] = steps_out[i][0]
    od = os.path.join(OUT, "sd3-swaps")
    os.makedirs(od, exist_ok=True)
    save_file({k: v.float().contiguous() for k, v in exp.items()}, os.path.join(od, "expected-%s.safetensors" % kind))
    print("sd3", kind, [float(x) for x in pipe.scheduler.timesteps])
    torch.set_default_dtype(torch.float32)
    call["prompts"] = call.pop("prompt")
    call.update({"name": kind, "scheduler": {"dpm": "dpm++", "euler": "euler"}[kind], "pipeline": "../../sd3-pipeline-tiny"})
    return call


def write_meta(d, runs):
    with open(os.path.join(d, "meta.json"), "w") as fo:
        json.dump({"pipeline": "PixArtAlphaPipeline", "diffusers": "0.32.1", "transformers": "4.39.0.dev0",
                   "dtype": "float64 (stored F32)", "torch_cpu": os.environ.get("ATEN_CPU_CAPABILITY", "?"),
                   "runs": runs}, fo, indent=1)


def main():
    assert os.environ.get("ATEN_CPU_CAPABILITY") == "avx2", "run with ATEN_CPU_CAPABILITY=avx2"
    # sample_size 32 (the 256 bins; no additional conditions), patch 2, learned sigma (out = 2 x in),
    # a factor-8 4-channel VAE made here; 48x40 binned to 272x224 and resized back
    d = build("bin256-sigma", dict(num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=8,
                                   num_layers=2, cross_attention_dim=32, sample_size=32, patch_size=2,
                                   caption_channels=32, attention_bias=True), None, seed=61)
    runs = [run_pixart(d, "b2-t3", {"prompt": ["  A Photo of a RED Cat ", "TWO dogs playing in the snow, a tree, "
                                               "a house, blue sky, sunny day, high quality"],
                                    "num_inference_steps": 3, "guidance_scale": 4.5, "height": 48, "width": 40,
                                    "max_sequence_length": 16,
                                    "drop": ["model_output.1", "model_output.2", "image_raw"]}, seed=62),
            run_pixart(d, "default-size-t2", {"prompt": ["a green bench"], "num_inference_steps": 2,
                                              "guidance_scale": 4.5, "max_sequence_length": 8,
                                              "drop": ["model_output", "image_raw", "image", "noise_pred"]}, seed=63)]
    write_meta(d, runs)
    # sample_size 128 (additional conditions: resolution, aspect ratio), no binning (32x48), patch 2,
    # out_channels = in (no learned sigma), the 4-channel factor-2 VAE; a negative prompt; and the same
    # folder with EulerDiscreteScheduler.from_config, 1 step (pred_original_sample), no guidance
    d = build("addcond-nobin", dict(num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
                                    num_layers=2, cross_attention_dim=24, sample_size=128, patch_size=2,
                                    caption_channels=32, attention_bias=True), os.path.join(FIX, "vae-tiny-4ch"),
              seed=64)
    runs = [run_pixart(d, "neg-t4", {"prompt": ["a Small cactus with a happy face", "a red car"],
                                     "negative_prompt": "Blurry, low quality", "num_inference_steps": 4,
                                     "guidance_scale": 3.0, "height": 32, "width": 48, "max_sequence_length": 12,
                                     "use_resolution_binning": False, "drop": ["model_output.2", "model_output.3"]}, seed=65),
            run_pixart(d, "euler-1step-nocfg", {"prompt": ["a blue bird"], "num_inference_steps": 1,
                                                "guidance_scale": 1.0, "height": 24, "width": 16,
                                                "max_sequence_length": 10, "use_resolution_binning": False},
                       seed=66, scheduler="euler")]
    write_meta(d, runs)
    runs = [run_sd3_swap("dpm"), run_sd3_swap("euler")]
    write_meta(os.path.join(OUT, "sd3-swaps"), runs)


if __name__ == "__main__":
    main()
