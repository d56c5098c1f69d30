"""AbsPE manipulation cases (tests/fixtures/abspe-cases/): diffusers 0.32.1's own
PixArtTransformer2DModel (unmodified) on tests/fixtures/pixart-tiny-a's weights, CPU, float64
(model.double()), with only its position table edited.

How the table is edited: a forward pre-hook on the model's PatchEmbed (`model.pos_embed`) takes
the table diffusers would add for the actual grid (its `pos_embed` buffer when the grid is the
base grid, else diffusers' own get_2d_sincos_pos_embed with the module's base_size and
interpolation_scale, .float() as PatchEmbed.forward does), applies the condition (first copy
pe_copy_from's row to every pe_copy_to position, then zero every pe_zero position), stores the
edited table as the module's `pos_embed` buffer and sets its height/width to the grid, so that
PatchEmbed.forward's own `latent + pos_embed` adds it; a post-hook restores the module.

Positions: [row, col] on the patch grid, negative from the end; patterns as docs/abspe.md defines
them (corners; the paper's 20-position smiley, Figure 9b, measured on its 32 x 32 grid: offsets
from the box origin placed at ((h-12)/2, (w-12)/2)). conditions.json records, per case and
condition, the resolved flat positions (row * w + col) the C side must reproduce.

SD3 (SD3Transformer2DModel on tests/fixtures/sd3-tiny-a's weights): its table is the centre crop
of the pos_embed buffer (pos_embed_max_size 7) for the actual grid; the edit is made to what
PatchEmbed.cropped_pos_embed returns (the instance's method wrapped), positions relative to the
crop; PatchEmbed.forward's own `latent + pos_embed` adds it.

Cases: "a": pixart-tiny-a's own inputs (4x4 grid, batch 2); "big": the same weights on a 28x26
latent (14x13 grid, recomputed table, batch 1), inputs generated here (seed 18); "sd3": sd3-tiny-a's
own inputs (4x4 crop of 7x7, batch 2); "sd3-6x5": its weights on a 12x10 latent (6x5 crop, batch 1),
inputs generated here.

Run from the repository root:
  PYTHONPATH=REFENV/src:REFENV /usr/bin/python3 tests/gen/gen_abspe_cases.py
  (REFENV: a folder with diffusers 0.32.1's source under REFENV/src (github.com/huggingface/diffusers, v0.32.1) and a shim.py adapting it to Debian's PyTorch 1.13 (tests/fixtures/README-pipeline.md))"""
import json, os

import shim  # noqa: F401  (torch 1.13 names)
import torch
from safetensors.torch import save_file, load_file
from diffusers.models.embeddings import get_2d_sincos_pos_embed
from diffusers.models.transformers.pixart_transformer_2d import PixArtTransformer2DModel
from diffusers.models.transformers.transformer_sd3 import SD3Transformer2DModel

FIX = "tests/fixtures"
OUT = os.path.join(FIX, "abspe-cases")

SMILEY = [(0, 1), (0, 2), (1, 1), (1, 2), (0, 9), (0, 10), (1, 9), (1, 10),
          (9, 0), (10, 1), (11, 2), (12, 3), (12, 4), (12, 5), (12, 6), (12, 7), (12, 8), (11, 9), (10, 10), (9, 11)]


def positions(spec, h, w):
    if spec == "corners":
        assert h >= 2 and w >= 2
        return [0, w - 1, (h - 1) * w, h * w - 1]
    if spec == "smiley":
        assert h >= 13 and w >= 12
        r0, c0 = (h - 12) // 2, (w - 12) // 2
        return [(r0 + r) * w + c0 + c for r, c in SMILEY]
    out = []
    for r, c in spec:
        r, c = r + h if r < 0 else r, c + w if c < 0 else c
        assert 0 <= r < h and 0 <= c < w
        out.append(r * w + c)
    return out


def resolve(cond, h, w):
    res = {}
    if "pe_copy_from" in cond:
        res["copy_from"] = positions([cond["pe_copy_from"]], h, w)[0]
        res["copy_to"] = positions(cond["pe_copy_to"], h, w)
    if "pe_zero" in cond:
        res["zero"] = positions(cond["pe_zero"], h, w)
    return res


def attach_edit(model, cond):
    pe = model.pos_embed
    saved = {}

    def pre(mod, inp):
        latent = inp[0]
        h, w = latent.shape[-2] // mod.patch_size, latent.shape[-1] // mod.patch_size
        if (mod.height, mod.width) == (h, w):
            tab = mod.pos_embed
        else:
            tab = get_2d_sincos_pos_embed(embed_dim=mod.pos_embed.shape[-1], grid_size=(h, w), base_size=mod.base_size,
                                          interpolation_scale=mod.interpolation_scale, device=latent.device,
                                          output_type="pt").float().unsqueeze(0)
        saved.update(tab=mod.pos_embed, hw=(mod.height, mod.width))
        tab = edit_table(tab, cond, h, w)
        mod.pos_embed = tab  # the registered buffer, replaced
        mod.height, mod.width = h, w

    def post(mod, inp, out):
        mod.pos_embed = saved["tab"]
        mod.height, mod.width = saved["hw"]

    return [pe.register_forward_pre_hook(pre), pe.register_forward_hook(post)]


def edit_table(tab, cond, h, w):
    tab = tab.clone()
    r = resolve(cond, h, w)
    for j in r.get("copy_to", []):
        tab[0, j] = tab[0, r["copy_from"]]
    for j in r.get("zero", []):
        tab[0, j] = 0
    return tab


def run_sd3(model, inputs, cond=None):
    pe = model.pos_embed
    if cond:
        orig = pe.cropped_pos_embed

        def cropped(height, width):
            return edit_table(orig(height, width), cond, height // pe.patch_size, width // pe.patch_size)

        pe.cropped_pos_embed = cropped
    with torch.no_grad():
        s = model(hidden_states=inputs["hidden_states"], encoder_hidden_states=inputs["encoder_hidden_states"],
                  pooled_projections=inputs["pooled_projections"], timestep=inputs["timestep"], return_dict=False)[0]
    if cond:
        del pe.cropped_pos_embed
    return s


def run(model, inputs, cond=None):
    if isinstance(model, SD3Transformer2DModel):
        return run_sd3(model, inputs, cond)
    hooks = attach_edit(model, cond) if cond else []
    kw = dict(hidden_states=inputs["hidden_states"], encoder_hidden_states=inputs["encoder_hidden_states"],
              timestep=inputs["timestep"], encoder_attention_mask=inputs["encoder_attention_mask"], return_dict=False)
    with torch.no_grad():
        s = model(**kw)[0]
    for hk in hooks:
        hk.remove()
    return s


CONDS = {
    "a": [
        {"name": "zero-corners", "layers": [], "pe_zero": "corners"},
        {"name": "copy-list", "layers": [], "pe_copy_from": [0, -1], "pe_copy_to": [[1, 1], [2, 3], [-1, 0]]},
        {"name": "corner-to-corners", "pe_copy_from": [3, 3], "pe_copy_to": "corners", "pe_zero": [[-1, -1], [0, 1]]},
        {"name": "zero-one", "pe_zero": [[2, 1]]},
    ],
    "big": [
        {"name": "smiley", "pe_copy_from": [0, -1], "pe_copy_to": "smiley", "pe_zero": [[0, -1]]},
        {"name": "zero-mixed", "pe_zero": [[13, 0], [5, 7], [-2, -1]]},
        {"name": "copy-self", "pe_copy_from": [6, 6], "pe_copy_to": [[6, 6], [0, 0], [13, 12]]},
    ],
    "sd3": [
        {"name": "corner-to-corners", "pe_copy_from": [0, -1], "pe_copy_to": "corners", "pe_zero": [[0, -1]]},
        {"name": "zero-list", "pe_zero": [[1, 2], [3, 0]]},
    ],
    "sd3-6x5": [
        {"name": "zero-corners", "pe_zero": "corners"},
        {"name": "copy-list", "pe_copy_from": [2, 2], "pe_copy_to": [[0, 4], [5, 0], [-1, -1], [3, 1]]},
    ],
}


def main():
    # the paper's Figure 9b on its 32 x 32 grid (PixArt-XL-2-512x512), read off the figure
    fig = [(10, 11), (10, 12), (11, 11), (11, 12), (10, 19), (10, 20), (11, 19), (11, 20), (19, 10), (20, 11), (21, 12)]
    fig += [(22, c) for c in range(13, 19)] + [(21, 19), (20, 20), (19, 21)]
    assert positions("smiley", 32, 32) == [r * 32 + c for r, c in fig]
    torch.manual_seed(18)
    d = os.path.join(FIX, "pixart-tiny-a")
    model = PixArtTransformer2DModel.from_pretrained(d).double().eval()
    cfg = model.config
    ins = {"a": {k: v for k, v in load_file(os.path.join(d, "inputs.safetensors")).items()}}
    big = {"hidden_states": torch.randn(1, cfg.in_channels, 28, 26),
           "encoder_hidden_states": torch.randn(1, 6, cfg.caption_channels),
           "encoder_attention_mask": torch.tensor([[1.0, 1, 1, 1, 1, 0]]),
           "timestep": torch.tensor([437.0])}
    ins["big"] = big
    d3 = os.path.join(FIX, "sd3-tiny-a")
    sd3 = SD3Transformer2DModel.from_pretrained(d3).double().eval()
    ins["sd3"] = load_file(os.path.join(d3, "inputs.safetensors"))
    s65 = {"hidden_states": torch.randn(1, sd3.config.in_channels, 12, 10),
           "encoder_hidden_states": ins["sd3"]["encoder_hidden_states"][1:].clone(),
           "pooled_projections": ins["sd3"]["pooled_projections"][1:].clone(),
           "timestep": torch.tensor([613.0])}
    ins["sd3-6x5"] = s65
    save_file({k: v.contiguous() for k, v in s65.items()}, os.path.join(OUT, "inputs-sd3-6x5.safetensors"))
    refs = {"a": load_file(os.path.join(d, "expected.safetensors"))["sample"].double(),
            "sd3": load_file(os.path.join(d3, "expected.safetensors"))["sample"].double()}
    os.makedirs(OUT, exist_ok=True)
    save_file({k: v.contiguous() for k, v in big.items()}, os.path.join(OUT, "inputs-big.safetensors"))
    expected, listing = {}, []
    for case, conds in CONDS.items():
        mdl = sd3 if case.startswith("sd3") else model
        x = {k: v.double() for k, v in ins[case].items()}
        base = run(mdl, x)
        if case in refs:
            e = float((base - refs[case]).norm() / refs[case].norm())
            print("%s: unedited sample vs the fixture's expected: rel L2 %.2e" % (case, e))
            assert e < 1e-6
        noop = run(mdl, x, {"name": "noop", "pe_zero": [], "pe_copy_from": [0, 0], "pe_copy_to": []})
        assert torch.equal(noop, base), "the empty edit changes the sample"
        expected["sample.%s" % case] = base.float().contiguous()
        h, w = x["hidden_states"].shape[-2] // mdl.config.patch_size, x["hidden_states"].shape[-1] // mdl.config.patch_size
        for c in conds:
            s = run(mdl, x, c)
            ch = float((s - base).norm() / base.norm())
            print("%s/%s: changes the sample by rel L2 %.3e" % (case, c["name"], ch))
            assert ch > 1e-4, c["name"]
            expected["sample.%s.%s" % (case, c["name"])] = s.float().contiguous()
            listing.append({"case": case, "grid": [h, w], "condition": c, "resolved": resolve(c, h, w)})
    save_file(expected, os.path.join(OUT, "expected.safetensors"))
    with open(os.path.join(OUT, "conditions.json"), "w") as f:
        json.dump(listing, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
