"""Our own FLUX variants (tests/fixtures/flux-variants/<name>/), computed by diffusers 0.32.1's
FluxTransformer2DModel (unmodified) on CPU in float64 from BF16-rounded random weights, in the folder
format of the reference fixture flux-tiny-a (tests/fixtures/README.md, "FLUX folders"):

  config.json                            the model's own config (save_config)
  diffusion_pytorch_model*.safetensors   BF16 weights, one file or shards + an index (weight_map)
  inputs.safetensors                     hidden_states [B,N,4C], encoder_hidden_states, pooled_projections,
                                         timestep (sigma), img_ids [N,3] = (0, r, q), txt_ids [S,3] = 0,
                                         guidance (dev only); all F32, and the reference ran on these values
  expected.safetensors                   sample, block.{i}, single.{j}, mass.{i}, single_mass.{j},
                                         qk_pre/qk_post.{i}, single_qk_pre/single_qk_post.{j}, sample.{name}
  interventions.json                     the conditions (the fixture schema) with their min_topk_margin

How each expected tensor is taken from diffusers' own forward pass:
  block.{i}, single.{j}: forward hooks on transformer_blocks[i] (its image-stream output) and
      single_transformer_blocks[j] (the whole text-first stream).
  mass, qk_*: F.scaled_dot_product_attention (the one attention call of FluxAttnProcessor2_0) is
      wrapped; it sees q, k, v after QK RMSNorm and RoPE, text first. mass = softmax(q k^T / sqrt(d))
      averaged over the image query rows S..S+N-1. qk_post = (1/N) sum_{image i} <q_i, k_j>; qk_pre the
      same with the q and k that diffusers' apply_rotary_emb receives (wrapped to record its inputs).
  sample.{name}: the same wrapper, at the condition's sites only, applies the condition as the fixture
      README's schema defines it (selection from this pass's un-intervened softmax over the `queries`
      rows restricted to the `keys` candidates; score path: + log(eta) on the chosen logits of the
      `queries` rows; value path: the chosen value vectors replaced for the `queries` rows), in float64.

Run from the repository root:
  PYTHONPATH=REFENV/src:REFENV /usr/bin/python3 tests/gen/gen_flux_variants.py
  (REFENV: a folder with diffusers 0.32.1's source under REFENV/src (github.com/huggingface/diffusers, v0.32.1) and a shim.py adapting it to Debian's PyTorch 1.13 (tests/fixtures/README-pipeline.md))
"""
import json
import math
import os
import shutil

import shim  # noqa: F401  (torch 1.13 names)
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import diffusers.models.embeddings as emb
from diffusers import FluxTransformer2DModel
from diffusers.models.model_loading_utils import load_state_dict

OUT = "tests/fixtures/flux-variants"
BAD = []

# ---- the attention wrapper: records and interventions at the current site ----

STATE = {"site": None, "cond": None, "S": 0, "rec": None, "rope_in": []}
_sdpa = F.scaled_dot_product_attention
_rope = emb.apply_rotary_emb


def rope_wrapper(x, freqs_cis, *args, **kw):
    if STATE["rec"] is not None:
        STATE["rope_in"].append(x.detach().clone())
    return _rope(x, freqs_cis, *args, **kw)


def qk_mean(q, k, S):
    return torch.einsum("bhd,bhjd->bhj", q[:, :, S:].mean(dim=2), k)


def rows_of(which, S, T):
    return {"text": range(0, S), "image": range(S, T), "all": range(0, T)}[which]


def select(cond, P, S, T):
    """Keys per (b, h) [B, H, k] and the smallest k-th vs (k+1)-th margin."""
    B, H = P.shape[0], P.shape[1]
    rows = list(rows_of(cond["queries"], S, T))
    m = P[:, :, rows, :].mean(dim=2)  # [B, H, T]
    cand = list(rows_of(cond["keys"], S, T))
    if cond["select"] == "fixed":
        idx = torch.tensor(cond["indices"]).view(1, 1, -1).expand(B, H, -1)
        return idx, 1.0
    k = cond["k"]
    mc = m[:, :, cand]
    if cond.get("rank_by", "head") == "union":
        mu = mc.mean(dim=1)  # [B, |cand|]
        vals, pos = mu.sort(dim=-1, descending=True)
        margin = float((vals[:, k - 1] - vals[:, k]).min())
        idx = torch.tensor(cand)[pos[:, :k]].unsqueeze(1).expand(B, H, k)
    else:
        vals, pos = mc.sort(dim=-1, descending=True)
        margin = float((vals[..., k - 1] - vals[..., k]).min())
        idx = torch.tensor(cand)[pos[..., :k]]
    return idx, margin


def sdpa_wrapper(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None):
    site, cond, S = STATE["site"], STATE["cond"], STATE["S"]
    assert attn_mask is None and q.dtype == torch.float64
    T = q.shape[2]
    rec = STATE["rec"]
    if rec is not None:  # baseline pass: mass and <q, k> over the image queries
        s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        P = torch.softmax(s, dim=-1)
        kind, blk = site
        pre = "" if kind == "double" else "single_"
        rec[("mass" if kind == "double" else "single_mass") + f".{blk}"] = P[:, :, S:, :].mean(dim=2)
        qr, kr = STATE["rope_in"][-2:]
        rec[f"{pre}qk_pre.{blk}"] = qk_mean(qr, kr, S)
        rec[f"{pre}qk_post.{blk}"] = qk_mean(q, k, S)
    if cond is None or not (
        (site[0] == "double" and site[1] in cond["layers"]) or (site[0] == "single" and site[1] in cond["single_layers"])
    ):
        return _sdpa(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal)
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    P = torch.softmax(s, dim=-1)
    idx, margin = select(cond, P, S, T)
    STATE["margin"] = min(STATE["margin"], margin)
    rows = torch.tensor(list(rows_of(cond["queries"], S, T)))
    B, H = q.shape[0], q.shape[1]
    if cond["path"] == "score":
        eta = cond["eta"]
        add = torch.zeros(B, H, T, dtype=s.dtype)
        add.scatter_(2, idx, -math.inf if eta == 0 else math.log(eta))
        s2 = s.clone()
        s2[:, :, rows, :] += add.unsqueeze(2)
        return torch.softmax(s2, dim=-1) @ v
    mean = v.mean(dim=2, keepdim=True)  # [B, H, 1, d], before replacement
    v2 = v.clone()
    for b in range(B):
        for h in range(H):
            for j in idx[b, h].tolist():
                if cond["value"] == "zero":
                    v2[b, h, j] = 0
                elif cond["value"] == "mean":
                    v2[b, h, j] = mean[b, h, 0]
                else:
                    a = cond["alpha"]
                    v2[b, h, j] = a * v[b, h, j] + (1 - a) * mean[b, h, 0]
    out = P @ v
    out[:, :, rows, :] = (P @ v2)[:, :, rows, :]
    return out


_temb = emb.get_timestep_embedding


def timestep_embedding_cr(timesteps, embedding_dim, flip_sin_to_cos=False, downscale_freq_shift=1, scale=1,
                          max_period=10000):
    """get_timestep_embedding with the fp32 exp, sin and cos correctly rounded (for the noise floor)."""
    half = embedding_dim // 2
    e = -math.log(max_period) * torch.arange(0, half, dtype=torch.float32) / (half - downscale_freq_shift)
    a = scale * (timesteps[:, None].float() * torch.exp(e.double()).float()[None])
    s, c = torch.sin(a.double()).float(), torch.cos(a.double()).float()
    return torch.cat([c, s], -1) if flip_sin_to_cos else torch.cat([s, c], -1)


F.scaled_dot_product_attention = sdpa_wrapper
emb.apply_rotary_emb = rope_wrapper


def attach_site_hooks(model):
    for i, blk in enumerate(model.transformer_blocks):
        blk.attn.register_forward_pre_hook(lambda mod, inp, i=i: STATE.__setitem__("site", ("double", i)))
    for j, blk in enumerate(model.single_transformer_blocks):
        blk.attn.register_forward_pre_hook(lambda mod, inp, j=j: STATE.__setitem__("site", ("single", j)))


# ---- the variants ----


def randomize(model, seed, gain):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.split(".")[-2].startswith("norm_"):  # the QK RMSNorm scales
                p.copy_(0.5 + 2.5 * torch.rand(p.shape, generator=g, dtype=torch.float64))
            elif p.ndim == 2:
                p.copy_(gain * torch.randn(p.shape, generator=g, dtype=torch.float64) / p.shape[1] ** 0.5)
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g, dtype=torch.float64))
            p.copy_(p.to(torch.bfloat16).to(torch.float64))  # BF16-stored weights


def save_weights(model, d, shards):
    sd = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    if shards == 1:
        save_file(sd, os.path.join(d, "diffusion_pytorch_model.safetensors"))
        return
    names = sorted(sd)
    wm = {}
    for s in range(shards):
        fn = f"diffusion_pytorch_model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: sd[n] for n in names[s::shards]}
        for n in part:
            wm[n] = fn
        save_file(part, os.path.join(d, fn))
    total = sum(t.numel() * 2 for t in sd.values())
    with open(os.path.join(d, "diffusion_pytorch_model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(wm.items()))}, f, indent=2)


def f32(t):
    return t.detach().to(torch.float32).contiguous()


def make(name, cfg, B, h, w, S, seed, gain, conds, shards, guidance=(3.5, 5.0)):
    torch.manual_seed(seed)
    model = FluxTransformer2DModel(**cfg).double().eval()
    randomize(model, seed, gain)
    attach_site_hooks(model)
    d = os.path.join(OUT, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    model.save_config(d)
    save_weights(model, d, shards)
    g = torch.Generator().manual_seed(seed + 1)
    N, C = h * w, cfg["in_channels"]
    inp = {
        "hidden_states": torch.randn(B, N, C, generator=g),
        "encoder_hidden_states": torch.randn(B, S, cfg["joint_attention_dim"], generator=g),
        "pooled_projections": torch.randn(B, cfg["pooled_projection_dim"], generator=g),
        "timestep": torch.rand(B, generator=g) * 0.9 + 0.05,
        "img_ids": torch.zeros(N, 3),
        "txt_ids": torch.zeros(S, 3),
    }
    ids = torch.zeros(h, w, 3)  # FluxPipeline._prepare_latent_image_ids
    ids[..., 1] += torch.arange(h)[:, None]
    ids[..., 2] += torch.arange(w)[None, :]
    inp["img_ids"] = ids.reshape(N, 3)
    if cfg["guidance_embeds"]:
        inp["guidance"] = torch.tensor(guidance[:B])
    inp = {k: f32(v) for k, v in inp.items()}  # the reference sees exactly the stored values
    save_file(inp, os.path.join(d, "inputs.safetensors"))
    args = {k: v.double() for k, v in inp.items()}
    args["guidance"] = args.get("guidance")
    exp = {}
    caps = []
    for i, blk in enumerate(model.transformer_blocks):
        caps.append(blk.register_forward_hook(lambda mod, inp_, out, i=i: exp.__setitem__(f"block.{i}", out[1])))
    for j, blk in enumerate(model.single_transformer_blocks):
        caps.append(blk.register_forward_hook(lambda mod, inp_, out, j=j: exp.__setitem__(f"single.{j}", out)))
    STATE.update(S=S, cond=None, rec=exp, rope_in=[])
    with torch.no_grad():
        exp["sample"] = model(**args, return_dict=False)[0]
    for c in caps:
        c.remove()
    STATE["rec"] = None
    for cond in conds:
        STATE.update(cond=cond, margin=math.inf)
        with torch.no_grad():
            out = model(**args, return_dict=False)[0]
        cond["min_topk_margin"] = STATE["margin"]
        change = float((out - exp["sample"]).norm() / exp["sample"].norm())
        print(f"  {name} {cond['name']}: changes the sample by {change:.2e}, min_topk_margin {STATE['margin']:.2e}")
        if not (change > 1.2e-3 and STATE["margin"] > 2e-5):
            BAD.append(f"{name} {cond['name']}: too weak or too close to a tie")
        exp[f"sample.{cond['name']}"] = out
    STATE["cond"] = None
    # The reference's own noise floor: torch's fp32 exp in get_timestep_embedding is within an ulp,
    # not correctly rounded; with correctly rounded freqs (as an fp32 engine may compute them) the
    # sample moves by this much. It must stay well below the tests' tolerances (1e-5 for masses).
    emb.get_timestep_embedding = timestep_embedding_cr
    with torch.no_grad():
        alt = model(**args, return_dict=False)[0]
    emb.get_timestep_embedding = _temb
    floor = float((alt - exp["sample"]).norm() / exp["sample"].norm())
    print(f"  {name}: noise floor (correctly rounded timestep freqs) {floor:.2e}")
    if floor > 2e-6:
        BAD.append(f"{name}: the reference's fp32 noise floor {floor:.2e} is too close to the tolerances")
    save_file({k: f32(v) for k, v in exp.items()}, os.path.join(d, "expected.safetensors"))
    with open(os.path.join(d, "interventions.json"), "w") as f:
        json.dump(conds, f, indent=2)
    # the folder loads back through diffusers itself and gives the same sample
    if shards == 1:
        back = FluxTransformer2DModel.from_pretrained(d, torch_dtype=torch.float64).eval()
    else:  # diffusers' sharded from_pretrained needs accelerate: its own loader, shard by shard
        with open(os.path.join(d, "diffusion_pytorch_model.safetensors.index.json")) as f:
            wm = json.load(f)["weight_map"]
        sd = {}
        for fn in sorted(set(wm.values())):
            sd.update(load_state_dict(os.path.join(d, fn)))
        back = FluxTransformer2DModel.from_config(FluxTransformer2DModel.load_config(d))
        back.load_state_dict(sd, strict=True)
        back = back.double().eval()
    attach_site_hooks(back)
    with torch.no_grad():
        again = back(**args, return_dict=False)[0]
    assert torch.equal(again, exp["sample"]), "the saved folder does not reproduce the sample"
    size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
    print(f"{name}: {len(exp)} expected tensors, {size / 1024:.0f} KiB")


def cond(name, layers, single_layers, **kw):
    c = {"name": name, "layers": layers, "single_layers": single_layers, "select": "topk", "k": 1, "rank_by": "head",
         "keys": "all", "queries": "image"}
    c.update(kw)
    if c["path"] == "score":
        c.setdefault("eta", 0.0)
    if c["select"] == "fixed":
        c.pop("rank_by")
        c["k"] = len(c["indices"])
    return c


def main():
    # schnell-style (no guidance embedding), 4 heads x 8, axes (2, 2, 4), non-square 4 x 6 grid,
    # 2 double + 2 single blocks, 9 text tokens, batch 2, one BF16 file
    make("schnell-h4-4x6", dict(patch_size=1, in_channels=12, out_channels=None, num_layers=2, num_single_layers=2,
                                attention_head_dim=8, num_attention_heads=4, joint_attention_dim=20,
                                pooled_projection_dim=12, guidance_embeds=False, axes_dims_rope=(2, 2, 4)),
         B=2, h=4, w=6, S=9, seed=11, gain=1.0, shards=1, conds=[
             cond("topk1_hard", [1], [], path="score"),
             cond("single_top1_hard", [], [1], path="score"),
             cond("union2_eta0.2_double_single", [0], [0], k=2, rank_by="union", path="score", eta=0.2),
             cond("text_keys_top1_all_queries", [0], [1], keys="text", queries="all", path="score"),
             cond("image_keys_top2", [1], [], k=2, keys="image", path="score", eta=0.25),
             cond("fixed_index0", [0, 1], [], select="fixed", indices=[0], path="score"),
             cond("value_mean_top1", [1], [1], path="value", value="mean"),
             cond("value_lerp0.3_top2_text_queries", [], [0], k=2, queries="text", path="value", value="lerp",
                  alpha=0.3),
         ])
    # dev-style (guidance), 3 heads x 12, axes (6, 2, 4), non-square 5 x 3 grid, 1 double + 3 single
    # blocks, 6 text tokens, batch 1, BF16 weights in 3 shards
    make("dev-h3-5x3-b1-sharded", dict(patch_size=1, in_channels=8, out_channels=None, num_layers=1,
                                        num_single_layers=3, attention_head_dim=12, num_attention_heads=3,
                                        joint_attention_dim=16, pooled_projection_dim=10, guidance_embeds=True,
                                        axes_dims_rope=(6, 2, 4)),
         B=1, h=5, w=3, S=6, seed=23, gain=0.6, shards=3, guidance=(4.0,), conds=[
             cond("topk1_hard", [0], [], path="score"),
             cond("single_top2_eta0.1", [], [2], k=2, path="score", eta=0.1),
             cond("union3_hard_every_block", [0], [0, 1, 2], k=3, rank_by="union", path="score"),
             cond("text_keys_top1", [], [1], keys="text", path="score"),
             cond("value_zero_top1", [0], [2], path="value", value="zero"),
             cond("text_queries_top3_hard", [0], [0, 1], k=3, queries="text", path="score"),
         ])
    # dev-style, 6 heads x 6, axes (2, 2, 2), 6 x 8 grid (N = 48), out_channels 8 != in_channels 16,
    # 2 double + 1 single blocks, 16 text tokens, batch 2, one BF16 file
    make("dev-h6-6x8-out8", dict(patch_size=1, in_channels=16, out_channels=8, num_layers=2, num_single_layers=1,
                                 attention_head_dim=6, num_attention_heads=6, joint_attention_dim=12,
                                 pooled_projection_dim=8, guidance_embeds=True, axes_dims_rope=(2, 2, 2)),
         B=2, h=6, w=8, S=16, seed=37, gain=0.5, shards=1, guidance=(3.5, 6.0), conds=[
             cond("topk1_hard", [0], [], path="score"),
             cond("single_top1_hard", [], [0], path="score"),
             cond("union4_eta0.05", [1], [], k=4, rank_by="union", path="score", eta=0.05),
             cond("fixed_text3_image0", [1], [0], select="fixed", indices=[3, 16], path="score"),
             cond("image_keys_top2_value_zero", [1], [], k=2, keys="image", path="value", value="zero"),
             cond("text_keys_top2_all_queries_lerp", [1], [0], k=2, keys="text", queries="all", path="value",
                  value="lerp", alpha=0.6),
         ])
    assert not BAD, BAD


if __name__ == "__main__":
    main()
