#!/usr/bin/python3
"""FluxPipeline (FLUX.1-dev and FLUX.1-schnell style) run end to end by diffusers 0.32.1 itself (CPU,
float64), for tests/test_pipeline_flux.c.

Run from the repository root:
  PYTHONPATH=TRANSFORMERS/src:REFENV/src:REFENV:tests/gen /usr/bin/python3 tests/gen/gen_flux_pipeline.py
  (REFENV: a folder with diffusers 0.32.1's source under REFENV/src (github.com/huggingface/diffusers, v0.32.1) and a shim.py adapting it to Debian's PyTorch 1.13 (tests/fixtures/README-pipeline.md); TRANSFORMERS: the transformers 4.39 tree, see tests/gen/refenv.py)

Each variant is a diffusers FluxPipeline folder under tests/fixtures/flux-pipeline/NAME/:
  transformer/     a random FluxTransformer2DModel made and saved here by diffusers (F32)
  text_encoder/    CLIPTextModel: tests/fixtures/clip-text-tiny (pooler_output, 32 wide)
  tokenizer/       CLIPTokenizer: tests/fixtures/clip-tokenizer (77 tokens, pad <|endoftext|>)
  text_encoder_2/  T5EncoderModel: tests/fixtures/t5-encoder-tiny (d_model 32)
  tokenizer_2/     T5Tokenizer: tests/fixtures/t5-tokenizer
  vae/             AutoencoderKL, 16 latent channels: tests/fixtures/vae-tiny-16ch (factor 2) or the
                   3-block VAE of tests/fixtures/sd3-pipeline-variants/no-t5-vae3-neg (factor 4)
  scheduler/       FlowMatchEulerDiscreteScheduler (dev: use_dynamic_shifting; schnell: shift 1)
Files byte-identical to a standalone fixture are copies here; the ones of 64 KiB or more are then
replaced by relative symbolic links (tests/fixtures/SOURCES.md). model_index.json is written by
diffusers' save_config (pipe.save_config). The pipeline is loaded back with
FluxPipeline.from_pretrained(folder, torch_dtype=float64) and called from the prompts (real slow
tokenizers, transformers' text encoders), torch default dtype float64. The given initial latents
[B, 16, h, w] are packed with FluxPipeline._pack_latents (the pipeline takes packed latents).
Stored (F32; ids I64):
  inputs.safetensors   latents [B, 16, h, w] (seeded), input_ids.clip [B, 77], input_ids.t5 [B, L]
                       (the tokenizers' output as the pipeline calls them)
  expected.safetensors prompt_embeds [B, L, 32], pooled_prompt_embeds [B, 32] and text_ids [L, 3]
                       (pipe.encode_prompt), latent_image_ids [N, 3], guidance [B] (dev only; as the
                       transformer receives it), latents.init (packed [B, N, 64]), timesteps,
                       sigmas, per step i model_output.{i} (the transformer output, packed) and
                       latents.{i} (after scheduler.step, packed), image_raw (vae.decode of the
                       unpacked latents / scaling_factor + shift_factor), image (output_type="np")
  meta.json            the call
"""
import json, os, shutil, sys, types, importlib.machinery, tempfile

import shim  # noqa: F401
import torch

# glue (no math), as the reference set's README-pipeline.md lists it
if not hasattr(torch, "compiler"):
    torch.compiler = types.SimpleNamespace(disable=lambda f=None, *a, **k: f if f is not None else (lambda g: g))
elif not hasattr(torch.compiler, "disable"):
    torch.compiler.disable = lambda f=None, *a, **k: f if f is not None else (lambda g: g)
_dist = tempfile.mkdtemp()
os.makedirs(os.path.join(_dist, "transformers-4.39.0.dev0.dist-info"))
with open(os.path.join(_dist, "transformers-4.39.0.dev0.dist-info", "METADATA"), "w") as f:
    f.write("Metadata-Version: 2.1\nName: transformers\nVersion: 4.39.0.dev0\n")
os.makedirs(os.path.join(_dist, "safetensors-0.4.2.dist-info"))  # transformers asks for the package's metadata
with open(os.path.join(_dist, "safetensors-0.4.2.dist-info", "METADATA"), "w") as f:
    f.write("Metadata-Version: 2.1\nName: safetensors\nVersion: 0.4.2\n")
sys.path.append(_dist)

# the safetensors stand-in lacks what transformers' modeling code imports: storage helpers and
# safe_open (metadata and tensors through the same pure-Python reader)
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
import refenv  # noqa: F401,E402  (transformers glue: version check, AddedToken, tokenizers stub)
import transformers  # noqa: E402
if not hasattr(transformers, "BaseImageProcessor"):
    from transformers.image_processing_utils import BaseImageProcessor
    transformers.BaseImageProcessor = BaseImageProcessor



from diffusers import FluxPipeline, FluxTransformer2DModel, FlowMatchEulerDiscreteScheduler  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

FIX = "tests/fixtures"
OUT = os.path.join(FIX, "flux-pipeline")
LINK_MIN = 64 * 1024


def copy_dir(src, dst):
    """Copies a component folder (its regular files only); big identical files become links."""
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


def randomize(model, seed, gain):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.split(".")[-2].startswith("norm_"):  # the QK RMSNorm scales
                p.copy_(0.5 + 1.5 * torch.rand(p.shape, generator=g, dtype=torch.float64))
            elif p.ndim == 2:
                p.copy_(gain * torch.randn(p.shape, generator=g, dtype=torch.float64) / p.shape[1] ** 0.5)
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g, dtype=torch.float64))
            p.copy_(p.float().double())  # the stored F32 values


def build(name, tcfg, scfg, vae_src, seed):
    d = os.path.join(OUT, name)
    if os.path.exists(d):
        shutil.rmtree(d)
    os.makedirs(d)
    torch.manual_seed(seed)
    tr = FluxTransformer2DModel(**tcfg).double()
    randomize(tr, seed, 0.8)
    tr.float().save_pretrained(os.path.join(d, "transformer"), safe_serialization=True)
    FlowMatchEulerDiscreteScheduler(**scfg).save_pretrained(os.path.join(d, "scheduler"))
    copy_dir(os.path.join(FIX, "clip-text-tiny"), os.path.join(d, "text_encoder"))
    copy_dir(os.path.join(FIX, "t5-encoder-tiny"), os.path.join(d, "text_encoder_2"))
    copy_dir(os.path.join(FIX, "sd3-pipeline-tiny", "tokenizer"), os.path.join(d, "tokenizer"))
    copy_dir(os.path.join(FIX, "sd3-pipeline-tiny", "tokenizer_3"), os.path.join(d, "tokenizer_2"))
    copy_dir(vae_src, os.path.join(d, "vae"))
    # model_index.json as diffusers writes it: load the components, register them, save_config
    from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5Tokenizer
    from diffusers import AutoencoderKL
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(os.path.join(d, "scheduler")),
                        vae=AutoencoderKL.from_pretrained(os.path.join(d, "vae")),
                        text_encoder=CLIPTextModel.from_pretrained(os.path.join(d, "text_encoder")),
                        tokenizer=CLIPTokenizer.from_pretrained(os.path.join(d, "tokenizer")),
                        text_encoder_2=T5EncoderModel.from_pretrained(os.path.join(d, "text_encoder_2")),
                        tokenizer_2=T5Tokenizer.from_pretrained(os.path.join(d, "tokenizer_2")),
                        transformer=FluxTransformer2DModel.from_pretrained(os.path.join(d, "transformer")))
    pipe.save_config(d)
    return d


def run(d, call, seed):
    torch.set_default_dtype(torch.float64)
    pipe = FluxPipeline.from_pretrained(d, torch_dtype=torch.float64)
    pipe.set_progress_bar_config(disable=True)
    B = len(call["prompt"])
    f = pipe.vae_scale_factor
    C = pipe.transformer.config.in_channels // 4
    h, w = 2 * (call["height"] // (f * 2)), 2 * (call["width"] // (f * 2))
    g = torch.Generator().manual_seed(seed)
    lat = torch.randn(B, C, h, w, generator=g, dtype=torch.float64).float()
    packed = FluxPipeline._pack_latents(lat.double(), B, C, h, w)
    rec = {"model_output": [], "latents": [], "kw": []}
    fwd = pipe.transformer.forward

    def tr_forward(*a, **k):
        out = fwd(*a, **k)
        rec["model_output"].append(out[0].detach().clone())
        rec["kw"].append(k)
        return out
    pipe.transformer.forward = tr_forward
    step = pipe.scheduler.step

    def sched_step(model_output, timestep, sample, *a, **k):
        out = step(model_output, timestep, sample, *a, **k)
        rec["latents"].append(out[0].detach().clone())
        return out
    pipe.scheduler.step = sched_step
    dec = pipe.vae.decode

    def vae_decode(z, *a, **k):
        out = dec(z, *a, **k)
        rec["image_raw"] = out[0].detach().clone()
        return out
    pipe.vae.decode = vae_decode
    msl = call["max_sequence_length"]
    with torch.no_grad():
        pe, ppe, tids = pipe.encode_prompt(prompt=call["prompt"], prompt_2=None, max_sequence_length=msl)
        img = pipe(prompt=call["prompt"], num_inference_steps=call["num_inference_steps"],
                   guidance_scale=call["guidance_scale"], height=call["height"], width=call["width"],
                   latents=packed, output_type="np", max_sequence_length=msl).images
    ids_clip = pipe.tokenizer(call["prompt"], padding="max_length", max_length=pipe.tokenizer_max_length,
                              truncation=True, return_tensors="pt").input_ids
    ids_t5 = pipe.tokenizer_2(call["prompt"], padding="max_length", max_length=msl, truncation=True,
                              return_tensors="pt").input_ids
    kw0 = rec["kw"][0]
    exp = {"prompt_embeds": pe, "pooled_prompt_embeds": ppe, "text_ids": tids, "latent_image_ids": kw0["img_ids"],
           "latents.init": packed, "timesteps": pipe.scheduler.timesteps, "sigmas": pipe.scheduler.sigmas,
           "image_raw": rec["image_raw"], "image": torch.from_numpy(img)}
    assert torch.equal(kw0["txt_ids"], tids)
    if kw0["guidance"] is not None:
        exp["guidance"] = kw0["guidance"]
    for i in range(call["num_inference_steps"]):
        exp["model_output.%d" % i] = rec["model_output"][i]
        exp["latents.%d" % i] = rec["latents"][i]
    save_file({"latents": lat.contiguous(), "input_ids.clip": ids_clip.long().contiguous(),
               "input_ids.t5": ids_t5.long().contiguous()}, os.path.join(d, "inputs.safetensors"))
    save_file({k: v.float().contiguous() for k, v in exp.items()}, os.path.join(d, "expected.safetensors"))
    meta = dict(call)
    meta["prompts"] = meta.pop("prompt")
    meta.update({"pipeline": "FluxPipeline", "diffusers": "0.32.1", "transformers": "4.39.0.dev0", "seed": seed,
                 "dtype": "float64 (stored F32)", "vae_scale_factor": f, "image_seq_len": int(packed.shape[1]),
                 "guidance_embeds": bool(pipe.transformer.config.guidance_embeds)})
    with open(os.path.join(d, "meta.json"), "w") as fo:
        json.dump(meta, fo, indent=1)
    print(d, {k: tuple(v.shape) for k, v in exp.items()})
    print("  sigmas", [float(x) for x in pipe.scheduler.sigmas])
    torch.set_default_dtype(torch.float32)


DEV_SCHED = dict(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
                 max_image_seq_len=4096)


def main():
    # FLUX.1-dev style: guidance embedding, 2 double + 2 single blocks, 2 heads x 16, axes (4, 6, 6)
    d = build("dev-b2-16x24-t16", dict(patch_size=1, in_channels=64, out_channels=None, num_layers=2,
                                       num_single_layers=2, attention_head_dim=16, num_attention_heads=2,
                                       joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=True,
                                       axes_dims_rope=(4, 6, 6)),
              DEV_SCHED, os.path.join(FIX, "vae-tiny-16ch"), seed=51)
    run(d, {"prompt": ["a photo of a red cat", "two dogs"], "num_inference_steps": 3, "guidance_scale": 3.5,
            "height": 16, "width": 24, "max_sequence_length": 16}, seed=52)
    # FLUX.1-schnell style: no guidance embedding, no dynamic shift; 1 double + 2 single blocks,
    # 4 heads x 8, axes (2, 2, 4); tall 24x8 image; one prompt
    d = build("schnell-b1-24x8-t12", dict(patch_size=1, in_channels=64, out_channels=None, num_layers=1,
                                          num_single_layers=2, attention_head_dim=8, num_attention_heads=4,
                                          joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=False,
                                          axes_dims_rope=(2, 2, 4)),
              dict(shift=1.0, use_dynamic_shifting=False), os.path.join(FIX, "vae-tiny-16ch"), seed=53)
    run(d, {"prompt": ["a green bench, a blue sky, three birds"], "num_inference_steps": 2, "guidance_scale": 0.0,
            "height": 24, "width": 8, "max_sequence_length": 12}, seed=54)
    # dev style with another dynamic-shift config and the 3-block VAE (factor 4): 3 prompts,
    # 4 steps, guidance 5, 32x16, T5 8 tokens (truncation)
    d = build("dev-vae4-b3-t8", dict(patch_size=1, in_channels=64, out_channels=None, num_layers=1,
                                     num_single_layers=1, attention_head_dim=12, num_attention_heads=2,
                                     joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=True,
                                     axes_dims_rope=(4, 4, 4)),
              dict(shift=3.0, use_dynamic_shifting=True, base_shift=0.3, max_shift=1.4, base_image_seq_len=4,
                   max_image_seq_len=64), os.path.join(FIX, "sd3-pipeline-variants", "no-t5-vae3-neg", "vae"), seed=55)
    run(d, {"prompt": ["two dogs", "a photo of a red cat on a wooden table next to a window", "a blue car"],
            "num_inference_steps": 4, "guidance_scale": 5.0, "height": 32, "width": 16, "max_sequence_length": 8},
        seed=56)


if __name__ == "__main__":
    main()
