#!/usr/bin/python3
"""StableDiffusion3Pipeline variants run end to end by diffusers 0.32.1 itself (CPU, float64), for
tests/test_pipeline_sd3.c.

Run from the repository root:
  PYTHONPATH=TRANSFORMERS/src:REFENV/src:REFENV:tests/gen /usr/bin/python3 tests/gen/gen_sd3_pipeline_variants.py
  (REFENV: a folder with diffusers 0.32.1's source under REFENV/src (github.com/huggingface/diffusers, v0.32.1) and a shim.py adapting it to Debian's PyTorch 1.13 (tests/fixtures/README-pipeline.md); TRANSFORMERS: the transformers 4.39 tree, see tests/gen/refenv.py)

Each variant is a pipeline folder under tests/fixtures/sd3-pipeline-variants/NAME/ built from the
components of tests/fixtures/sd3-pipeline-tiny (copied byte for byte) plus, where named, a new
random component saved by diffusers' save_pretrained; model_index.json is the one diffusers'
save_config writes for the pipeline. The pipeline is loaded back with
StableDiffusion3Pipeline.from_pretrained(folder) and called from the prompts (real tokenizers,
transformers' text encoders), in float64 (torch.set_default_dtype(float64): transformers' CLIP
causal mask needs it; the scheduler step casts to float32 as diffusers does). Stored (F32):
  inputs.safetensors   latents (the given initial noise)
  expected.safetensors prompt_embeds, pooled_prompt_embeds (and negative_* with guidance) from
                       pipe.encode_prompt with the same arguments; timesteps, sigmas; per step i
                       model_output.{i} (the transformer output; with guidance on [uncond; cond]),
                       noise_pred.{i} (the value given to scheduler.step), latents.{i}; image_raw
                       (vae.decode of latents / scaling_factor + shift_factor) and image
                       (output_type="np", NHWC)
  meta.json            the call
Variants:
  no-t5-vae3-neg  text_encoder_3 / tokenizer_3 = None (zeros [B, 77, joint_attention_dim]); a new
                  3-block VAE (factor 4, latent 16, shift factor); negative prompt "blurry, dark";
                  guidance 5.5; 3 steps; 32x16 pixels (latent 8x4); batch 1
  cfg1-b3-t16     guidance 1.0 (no CFG: batch B, no negative pass); T5 with max_sequence_length 16;
                  three prompts; 2 steps; 24x16 pixels (latent 12x8); the tiny VAE (factor 2)
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


from diffusers import AutoencoderKL, StableDiffusion3Pipeline  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

SRC = "tests/fixtures/sd3-pipeline-tiny"
OUT = "tests/fixtures/sd3-pipeline-variants"


def copy_component(dst, name, src_name=None):
    shutil.copytree(os.path.join(SRC, src_name or name), os.path.join(dst, name))


def build(name, with_t5, new_vae):
    d = os.path.join(OUT, name)
    if os.path.exists(d):
        shutil.rmtree(d)
    os.makedirs(d)
    for c in ["transformer", "scheduler", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"]:
        copy_component(d, c)
    if with_t5:
        copy_component(d, "text_encoder_3")
        copy_component(d, "tokenizer_3")
    if new_vae:
        torch.manual_seed(77)
        vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
                            up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(8, 8, 16), layers_per_block=1,
                            norm_num_groups=4, latent_channels=16, use_quant_conv=False, use_post_quant_conv=False,
                            scaling_factor=1.25, shift_factor=-0.05, sample_size=32)
        with torch.no_grad():
            for m in vae.modules():
                if isinstance(m, torch.nn.GroupNorm):
                    m.weight.copy_(1 + 0.3 * torch.randn_like(m.weight))
                    m.bias.copy_(0.2 * torch.randn_like(m.bias))
        vae.float().save_pretrained(os.path.join(d, "vae"), safe_serialization=True)
    else:
        copy_component(d, "vae")
    # model_index.json as diffusers writes it: register the components and save_config
    with open(os.path.join(SRC, "model_index.json")) as f:
        idx = json.load(f)
    if not with_t5:
        idx["text_encoder_3"] = [None, None]
        idx["tokenizer_3"] = [None, None]
    with open(os.path.join(d, "model_index.json"), "w") as f:
        json.dump(idx, f, indent=2, sort_keys=True)
    return d


def run(d, call, seed):
    torch.set_default_dtype(torch.float64)
    kw = {}
    if "text_encoder_3" not in os.listdir(d):
        kw = dict(text_encoder_3=None, tokenizer_3=None)
    pipe = StableDiffusion3Pipeline.from_pretrained(d, torch_dtype=torch.float64, **kw)
    pipe.set_progress_bar_config(disable=True)
    B = len(call["prompt"])
    f = pipe.vae_scale_factor
    g = torch.Generator().manual_seed(seed)
    lat = torch.randn(B, pipe.transformer.config.in_channels, call["height"] // f, call["width"] // f, generator=g,
                      dtype=torch.float64).float()
    rec = {"model_output": [], "noise_pred": [], "latents": []}
    fwd = pipe.transformer.forward

    def tr_forward(*a, **k):
        out = fwd(*a, **k)
        rec["model_output"].append(out[0].detach().clone())
        return out
    pipe.transformer.forward = tr_forward
    step = pipe.scheduler.step

    def sched_step(model_output, timestep, sample, *a, **k):
        rec["noise_pred"].append(model_output.detach().clone())
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
    guided = call["guidance_scale"] > 1
    with torch.no_grad():
        pe, npe, ppe, nppe = pipe.encode_prompt(prompt=call["prompt"], prompt_2=None, prompt_3=None,
                                                negative_prompt=call.get("negative_prompt"),
                                                do_classifier_free_guidance=guided,
                                                max_sequence_length=call["max_sequence_length"])
        img = pipe(prompt=call["prompt"], negative_prompt=call.get("negative_prompt"),
                   num_inference_steps=call["num_inference_steps"], guidance_scale=call["guidance_scale"],
                   height=call["height"], width=call["width"], latents=lat.double(), output_type="np",
                   max_sequence_length=call["max_sequence_length"]).images
    exp = {"prompt_embeds": pe, "pooled_prompt_embeds": ppe, "timesteps": pipe.scheduler.timesteps,
           "sigmas": pipe.scheduler.sigmas, "image_raw": rec["image_raw"], "image": torch.from_numpy(img)}
    if guided:
        exp["negative_prompt_embeds"] = npe
        exp["negative_pooled_prompt_embeds"] = nppe
    for i in range(call["num_inference_steps"]):
        exp["model_output.%d" % i] = rec["model_output"][i]
        exp["noise_pred.%d" % i] = rec["noise_pred"][i]
        exp["latents.%d" % i] = rec["latents"][i]
    save_file({"latents": lat.contiguous()}, os.path.join(d, "inputs.safetensors"))
    save_file({k: v.float().contiguous() for k, v in exp.items()}, os.path.join(d, "expected.safetensors"))
    meta = dict(call)
    meta["prompts"] = meta.pop("prompt")
    meta.update({"pipeline": "StableDiffusion3Pipeline", "diffusers": "0.32.1", "transformers": "4.39.0.dev0",
                 "seed": seed, "dtype": "float64 (stored F32)", "vae_scale_factor": f})
    with open(os.path.join(d, "meta.json"), "w") as fo:
        json.dump(meta, fo, indent=1)
    print(d, {k: tuple(v.shape) for k, v in exp.items()})
    torch.set_default_dtype(torch.float32)


def main():
    d = build("no-t5-vae3-neg", with_t5=False, new_vae=True)
    run(d, {"prompt": ["a red cube on a wooden table"], "negative_prompt": "blurry, dark", "num_inference_steps": 3,
            "guidance_scale": 5.5, "height": 32, "width": 16, "max_sequence_length": 256}, seed=41)
    d = build("cfg1-b3-t16", with_t5=True, new_vae=False)
    run(d, {"prompt": ["two dogs", "a photo of a red cat", "a green bench, a blue sky, three birds"],
            "num_inference_steps": 2, "guidance_scale": 1.0, "height": 24, "width": 16, "max_sequence_length": 16},
        seed=43)


if __name__ == "__main__":
    main()
