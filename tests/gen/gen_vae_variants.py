#!/usr/bin/python3
"""AutoencoderKL variants computed by diffusers 0.32.1 itself (CPU, float64), for tests/test_vae.c.

Run from the repository root:
  PYTHONPATH=REFENV/src:REFENV /usr/bin/python3 tests/gen/gen_vae_variants.py
  (REFENV: a folder with diffusers 0.32.1's source under REFENV/src (github.com/huggingface/diffusers, v0.32.1) and a shim.py adapting it to Debian's PyTorch 1.13 (tests/fixtures/README-pipeline.md))

Writes tests/fixtures/vae-variants/NAME/ for each variant below: config.json and
diffusion_pytorch_model.safetensors (diffusers' own save_pretrained; weights stored as the
variant's dtype, the reference computed from exactly those rounded weights), inputs.safetensors
(`latents`, `image`, F32) and expected.safetensors (F32), named as in the reference set's
vae-tiny-* folders:
  decoded      = vae.decode(latents / scaling_factor + shift_factor).sample (no shift when null)
  decoded_raw  = vae.decode(latents).sample
  encoded_moments = vae._encode(image) (encoder + quant_conv); encoded_mean, encoded_logvar from
               DiagonalGaussianDistribution (logvar clamped to [-30, 20]); encoded_mean_scaled =
               (mean - shift_factor) * scaling_factor
  stage.dec.{conv_in,mid_block,up_blocks.i} (forward hooks, the decoded_raw pass) and
  stage.enc.{conv_in,down_blocks.i,mid_block}.
Random init (torch.manual_seed), then the GroupNorm affine parameters are randomized too
(default init is 1 / 0, which would not test them).
"""
import json, os
import shim  # noqa: F401
import torch
from diffusers import AutoencoderKL
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from safetensors.torch import save_file

OUT = "tests/fixtures/vae-variants"

VARIANTS = [
    # name, config overrides, dtype, batch, latent (h, w), image (H, W)
    ("b3-l2-g2-shift", dict(block_out_channels=(8, 8, 16), layers_per_block=2, norm_num_groups=2, latent_channels=16,
                            use_quant_conv=False, use_post_quant_conv=False, scaling_factor=1.5305,
                            shift_factor=0.0609), "F32", 3, (3, 5), (12, 20)),
    ("b2-g8-quant-f16", dict(block_out_channels=(16, 16), layers_per_block=1, norm_num_groups=8, latent_channels=4,
                             scaling_factor=0.13025), "F16", 2, (4, 6), (9, 14)),
    ("b3-g4-noattn-bf16", dict(block_out_channels=(8, 16, 24), layers_per_block=1, norm_num_groups=4,
                               latent_channels=8, use_quant_conv=True, use_post_quant_conv=False,
                               mid_block_add_attention=False, scaling_factor=0.5, shift_factor=-0.25),
     "BF16", 1, (5, 3), (16, 12)),
    ("b1-l3-g1", dict(block_out_channels=(12,), layers_per_block=3, norm_num_groups=1, latent_channels=3,
                      scaling_factor=2.0, shift_factor=0.125), "F32", 2, (3, 4), (5, 7)),
]

TORCH_DT = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def main():
    for vi, (name, over, dtype, B, (h, w), (H, W)) in enumerate(VARIANTS):
        n = len(over["block_out_channels"])
        cfg = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                   up_block_types=("UpDecoderBlock2D",) * n, act_fn="silu", sample_size=32)
        cfg.update(over)
        torch.manual_seed(100 + vi)
        vae = AutoencoderKL(**cfg)
        with torch.no_grad():
            for mname, mod in vae.named_modules():
                if isinstance(mod, torch.nn.GroupNorm):
                    mod.weight.copy_(1 + 0.3 * torch.randn_like(mod.weight))
                    mod.bias.copy_(0.2 * torch.randn_like(mod.bias))
            for p in vae.parameters():  # the stored (rounded) weights are the reference's
                p.copy_(p.to(TORCH_DT[dtype]).to(torch.float32))
        d = os.path.join(OUT, name)
        os.makedirs(d, exist_ok=True)
        vae.to(TORCH_DT[dtype]).save_pretrained(d, safe_serialization=True)
        vae = AutoencoderKL.from_pretrained(d).double().eval()
        assert not os.path.exists(os.path.join(d, "diffusion_pytorch_model.bin"))

        g = torch.Generator().manual_seed(7 + vi)
        lat = torch.randn(B, cfg["latent_channels"], h, w, generator=g, dtype=torch.float64).float()
        img = (torch.rand(B, 3, H, W, generator=g, dtype=torch.float64) * 2 - 1).float()
        sf, sh = vae.config.scaling_factor, vae.config.shift_factor
        stages = {}

        def hook(tag):
            def f(mod, inp, out):
                stages["stage." + tag] = out.detach()
            return f

        hooks = [vae.decoder.conv_in.register_forward_hook(hook("dec.conv_in")),
                 vae.decoder.mid_block.register_forward_hook(hook("dec.mid_block")),
                 vae.encoder.conv_in.register_forward_hook(hook("enc.conv_in")),
                 vae.encoder.mid_block.register_forward_hook(hook("enc.mid_block"))]
        for i, blk in enumerate(vae.decoder.up_blocks):
            hooks.append(blk.register_forward_hook(hook("dec.up_blocks.%d" % i)))
        for i, blk in enumerate(vae.encoder.down_blocks):
            hooks.append(blk.register_forward_hook(hook("enc.down_blocks.%d" % i)))
        with torch.no_grad():
            l64 = lat.double()
            raw = vae.decode(l64).sample
            dec_stages = {k: v for k, v in stages.items() if k.startswith("stage.dec")}
            zin = l64 / sf + sh if sh is not None else l64 / sf
            dec = vae.decode(zin).sample
            mom = vae._encode(img.double())
            post = DiagonalGaussianDistribution(mom)
            scaled = (post.mean - sh) * sf if sh is not None else post.mean * sf
        for hk in hooks:
            hk.remove()
        exp = {"decoded": dec, "decoded_raw": raw, "encoded_moments": mom, "encoded_mean": post.mean,
               "encoded_logvar": post.logvar, "encoded_mean_scaled": scaled}
        exp.update(dec_stages)
        exp.update({k: v for k, v in stages.items() if k.startswith("stage.enc")})
        save_file({"latents": lat.contiguous(), "image": img.contiguous()}, os.path.join(d, "inputs.safetensors"))
        save_file({k: v.float().contiguous() for k, v in exp.items()}, os.path.join(d, "expected.safetensors"))
        with open(os.path.join(d, "meta.json"), "w") as f:
            json.dump({"diffusers": "0.32.1", "dtype": dtype, "batch": B, "latent": [h, w], "image": [H, W],
                       "reference": "float64 from the stored weights"}, f, indent=1)
        print(name, {k: tuple(v.shape) for k, v in exp.items()})


if __name__ == "__main__":
    main()
