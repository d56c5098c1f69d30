"""Our own PixArt-alpha variants (tests/fixtures/pixart-variants/), computed by diffusers 0.32.1's
PixArtTransformer2DModel (unmodified) on CPU in float64 from random weights, stored as the
reference folders pixart-tiny-a/b are (tests/fixtures/README.md, section PixArt folders):
config.json (the model's own save_config), diffusion_pytorch_model.safetensors (F32, BF16 or F16;
expected values from the stored, rounded weights), inputs.safetensors, expected.safetensors (F32:
sample, block.{i}, self_mass.{i}, cross_mass.{i}, sample.{name}) and interventions.json.

The probe and the interventions are an attention processor with diffusers' AttnProcessor body
(attn.prepare_attention_mask, to_q/to_k/to_v, head_to_batch_dim, get_attention_scores with the
(1-m)*-10000 bias, bmm, to_out) and two insertion points: the probabilities are recorded (mass per
key averaged over the image queries) and, for an intervened block, re-weighted (score path: p_j *
eta, renormalized, = adding log eta to the logit) or the selected value rows replaced (value path:
zero, the mean of the head's unmasked values, or alpha*v + (1-alpha)*mean). Selection is dynamic,
from that block's un-intervened probabilities, over the unmasked keys. Before writing anything the
script checks this processor against the reference folders tests/fixtures/pixart-tiny-a/b (sample,
blocks, masses, every intervention). diffusers forms the timestep sinusoid's argument in fp32 with
torch's exp even in float64; each variant's reference noise floor (the same model with a float64
argument) is checked below 2e-6 for the sample and every mass, which is why the timestep embedders'
random weights are smaller than the others'.

Run from the repository root:
  PYTHONPATH=REFENV/src:REFENV /usr/bin/python3 tests/gen/gen_pixart_variants.py
  (REFENV: a folder with diffusers 0.32.1's source under REFENV/src (github.com/huggingface/diffusers, v0.32.1) and a shim.py adapting it to Debian's PyTorch 1.13 (tests/fixtures/README-pipeline.md))"""
import json, math, os, shutil

import shim  # noqa: F401  (torch 1.13 names)
import torch
from safetensors.torch import save_file, load_file
import diffusers.models.embeddings as E
from diffusers.models.transformers.pixart_transformer_2d import PixArtTransformer2DModel

OUT = os.environ.get("PIXART_VARIANTS_OUT", "tests/fixtures/pixart-variants")
FLOOR = float(os.environ.get("PIXART_FLOOR", "2e-6"))
EMB_GAIN = float(os.environ.get("PIXART_EMB_GAIN", "0.25"))  # the timestep embedders: a small reference noise floor
FIX = "tests/fixtures"


class Probe:
    """Per forward pass: masses by (kind, block), and the condition to apply."""

    def __init__(self, cond=None):
        self.cond = cond
        self.mass = {}
        self.margin = float("inf")


class ProbeProcessor:
    def __init__(self, probe, kind, block):
        self.probe, self.kind, self.block = probe, kind, block

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        )
        attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        query = attn.head_to_batch_dim(query)
        key = attn.head_to_batch_dim(key)
        value = attn.head_to_batch_dim(value)
        probs = attn.get_attention_scores(query, key, attention_mask)  # [B*H, N, Tk]
        H = attn.heads
        Tk = probs.shape[-1]
        mass = probs.mean(dim=1).reshape(batch_size, H, Tk)
        self.probe.mass[(self.kind, self.block)] = mass.detach().clone()
        c = self.probe.cond
        if c is not None and c["attn"] == self.kind and self.block in c["layers"]:
            if attention_mask is not None:
                valid = (attention_mask.reshape(batch_size, H, -1)[:, 0, :] == 0)  # [B, Tk]
            else:
                valid = torch.ones(batch_size, Tk, dtype=torch.bool)
            sel = select(c, mass, valid, self.probe)  # [B, H, k]
            probs = probs.reshape(batch_size, H, -1, Tk).clone()
            value = value.reshape(batch_size, H, Tk, -1).clone()
            for b in range(batch_size):
                for h in range(H):
                    idx = sel[b][h]
                    if c["path"] == "score":
                        probs[b, h][:, idx] *= c["eta"]
                        probs[b, h] = probs[b, h] / probs[b, h].sum(dim=-1, keepdim=True)
                    else:
                        mean = value[b, h][valid[b]].mean(dim=0)
                        for j in idx:
                            if c["value"] == "zero":
                                value[b, h, j] = 0
                            elif c["value"] == "mean":
                                value[b, h, j] = mean
                            else:
                                value[b, h, j] = c["alpha"] * value[b, h, j] + (1 - c["alpha"]) * mean
            probs = probs.reshape(batch_size * H, -1, Tk)
            value = value.reshape(batch_size * H, Tk, -1)
        hidden_states = torch.bmm(probs, value)
        hidden_states = attn.batch_to_head_dim(hidden_states)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        return hidden_states / attn.rescale_output_factor


def select(c, mass, valid, probe):
    """[B][H] lists of key indices; records the smallest top-k margin."""
    B, H, Tk = mass.shape
    k = c["k"]
    out = []
    for b in range(B):
        cand = [j for j in range(Tk) if valid[b, j]]
        rows = []
        if c["select"] == "fixed":
            rows = [list(c["indices"]) for _ in range(H)]
        elif c.get("rank_by", "head") == "union":
            u = mass[b].mean(dim=0)
            order = sorted(cand, key=lambda j: (-float(u[j]), j))
            if len(order) > k:
                probe.margin = min(probe.margin, float(u[order[k - 1]] - u[order[k]]))
            rows = [order[:k] for _ in range(H)]
        else:
            for h in range(H):
                order = sorted(cand, key=lambda j: (-float(mass[b, h, j]), j))
                if len(order) > k:
                    probe.margin = min(probe.margin, float(mass[b, h, order[k - 1]] - mass[b, h, order[k]]))
                rows.append(order[:k])
        out.append(rows)
    return out


def attach(model, probe):
    for i, blk in enumerate(model.transformer_blocks):
        blk.attn1.set_processor(ProbeProcessor(probe, "self", i))
        if blk.attn2 is not None:
            blk.attn2.set_processor(ProbeProcessor(probe, "cross", i))


def run(model, inputs, cond=None):
    probe = Probe(cond)
    attach(model, probe)
    blocks = []
    hooks = [blk.register_forward_hook(lambda mod, inp, out: blocks.append(out.detach().clone()))
             for blk in model.transformer_blocks]
    kw = dict(hidden_states=inputs["hidden_states"], encoder_hidden_states=inputs["encoder_hidden_states"],
              timestep=inputs["timestep"], return_dict=False)
    if "encoder_attention_mask" in inputs:
        kw["encoder_attention_mask"] = inputs["encoder_attention_mask"]
    if "resolution" in inputs:
        kw["added_cond_kwargs"] = {"resolution": inputs["resolution"], "aspect_ratio": inputs["aspect_ratio"]}
    with torch.no_grad():
        sample = model(**kw)[0]
    for hk in hooks:
        hk.remove()
    return sample, blocks, probe


def cond_full(c):
    d = {"attn": "self", "rank_by": "head", "keys": "all", "queries": "image"}
    d.update(c)
    return d


def rel(a, b):
    return float((a - b).norm() / b.norm()) if float(b.norm()) > 0 else float((a - b).norm())


def check_reference(name):
    """Our processor on a reference folder reproduces its expected tensors."""
    d = os.path.join(FIX, name)
    model = PixArtTransformer2DModel.from_pretrained(d).double().eval()
    inputs = {k: v.double() for k, v in load_file(os.path.join(d, "inputs.safetensors")).items()}
    exp = {k: v.double() for k, v in load_file(os.path.join(d, "expected.safetensors")).items()}
    sample, blocks, probe = run(model, inputs)
    worst = rel(sample, exp["sample"])
    for i, bl in enumerate(blocks):
        worst = max(worst, rel(bl, exp["block.%d" % i]))
    for (kind, i), m in probe.mass.items():
        worst = max(worst, rel(m, exp["%s_mass.%d" % (kind, i)]))
    for c in json.load(open(os.path.join(d, "interventions.json"))):
        s, _, _ = run(model, inputs, cond_full(c))
        worst = max(worst, rel(s, exp["sample." + c["name"]]))
    print("%s: processor vs reference, worst rel L2 %.2e" % (name, worst))
    assert worst < 1e-6, name


def ts_fp64(timesteps, embedding_dim, flip_sin_to_cos=False, downscale_freq_shift=1, scale=1, max_period=10000):
    """get_timestep_embedding with the argument in float64 (diffusers forms it in fp32 with torch's
    exp, whose frequencies differ from correctly rounded ones in the last bit for ~40% of them)."""
    half = embedding_dim // 2
    ex = -math.log(max_period) * torch.arange(half, dtype=torch.float64) / (half - downscale_freq_shift)
    emb = scale * timesteps[:, None].double() * torch.exp(ex)[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
    return emb


def noise_floor(model, inputs, sample, probe):
    """How far the reference itself is from the same model with a float64 sinusoid: the floor no
    fp32 engine can get under (sample, worst mass)."""
    orig = E.get_timestep_embedding
    E.get_timestep_embedding = ts_fp64
    try:
        s64, _, p64 = run(model, inputs)
    finally:
        E.get_timestep_embedding = orig
    return rel(s64, sample), max(rel(p64.mass[k], probe.mass[k]) for k in probe.mass)


def randomize(model, seed, dtype):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("scale_shift_table"):
                v = 0.5 * torch.randn(p.shape, generator=g, dtype=torch.float64)
            elif "norm" in name and name.endswith("weight"):
                v = 1.0 + 0.2 * torch.randn(p.shape, generator=g, dtype=torch.float64)
            else:
                fan = p[0].numel() if p.dim() > 1 else p.shape[0]
                gain = EMB_GAIN if ".emb." in name else 1.5
                v = gain * torch.randn(p.shape, generator=g, dtype=torch.float64) / max(1, fan) ** 0.5
            p.copy_(v.to(dtype).to(torch.float64))  # the stored, rounded weights


VARIANTS = [
    # BF16 weights, 4 heads x 8, 3 blocks, a 3x5 grid on base 3 (inexact 5/3), interpolation scale 1.5,
    # gelu (exact), padding in every batch element (7, 4 and 1 kept of 7)
    dict(name="bf16-h4-grid3x5-interp1.5", dtype=torch.bfloat16, seed=11,
         config=dict(num_attention_heads=4, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=3,
                     cross_attention_dim=32, sample_size=6, patch_size=2, caption_channels=20,
                     interpolation_scale=1.5, activation_fn="gelu"),
         B=3, Hl=6, Wl=10, S=7, keep=[7, 4, 1], t=[999.0, 500.0, 1.0]),
    # F32, additional conditions on a non-128 sample size (explicit true), 3 heads x 8, affine norms,
    # no q/k/v bias, a 5x2 grid, padding in both batch elements
    dict(name="f32-h3-addcond-affine-nobias", dtype=torch.float32, seed=12,
         config=dict(num_attention_heads=3, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=2,
                     cross_attention_dim=24, sample_size=16, patch_size=2, caption_channels=16,
                     use_additional_conditions=True, norm_elementwise_affine=True, attention_bias=False),
         B=2, Hl=10, Wl=4, S=6, keep=[3, 5], t=[250.0, 751.0], res=True),
    # F16 weights, no caption projection (context = cross_attention_dim wide), out_channels null, no
    # mask given, batch 1, patch 1, 1 block
    dict(name="f16-nocaption-patch1", dtype=torch.float16, seed=13,
         config=dict(num_attention_heads=2, attention_head_dim=12, in_channels=3, out_channels=None, num_layers=1,
                     cross_attention_dim=24, sample_size=4, patch_size=1, caption_channels=None),
         B=1, Hl=4, Wl=3, S=5, keep=None, t=[42.0]),
]

CONDS = [
    dict(name="self_topk1_hard", attn="self", layers=[0], select="topk", k=1, path="score", eta=0.0),
    dict(name="self_union2_eta0.3", attn="self", layers=[0], select="topk", k=2, rank_by="union", path="score", eta=0.3),
    dict(name="self_value_mean_top1", attn="self", layers=[0], select="topk", k=1, path="value", value="mean"),
    dict(name="cross_topk1_hard_all", attn="cross", layers="all", select="topk", k=1, path="score", eta=0.0),
    dict(name="cross_value_mean_top1", attn="cross", layers=[0], select="topk", k=1, path="value", value="mean"),
    dict(name="cross_value_lerp0.25_top1", attn="cross", layers=[0], select="topk", k=1, path="value", value="lerp",
         alpha=0.25),
    dict(name="cross_fixed_index0_eta0.5", attn="cross", layers=[0], select="fixed", indices=[0], k=1, path="score",
         eta=0.5),
]


def make_variant(v):
    torch.manual_seed(v["seed"])
    model = PixArtTransformer2DModel(**v["config"]).double().eval()
    randomize(model, v["seed"], v["dtype"])
    d = os.path.join(OUT, v["name"])
    os.makedirs(d, exist_ok=True)
    model.save_config(d)
    sd = {k: t.detach().to(v["dtype"]).contiguous() for k, t in model.state_dict().items()}
    save_file(sd, os.path.join(d, "diffusion_pytorch_model.safetensors"))
    g = torch.Generator().manual_seed(100 + v["seed"])
    B, S, cfg = v["B"], v["S"], model.config
    J = cfg.caption_channels or cfg.cross_attention_dim
    inputs = {
        "hidden_states": torch.randn(B, cfg.in_channels, v["Hl"], v["Wl"], generator=g, dtype=torch.float64),
        "encoder_hidden_states": torch.randn(B, S, J, generator=g, dtype=torch.float64),
        "timestep": torch.tensor(v["t"], dtype=torch.float64),
    }
    if v["keep"] is not None:
        m = torch.zeros(B, S, dtype=torch.float64)
        for b, n in enumerate(v["keep"]):
            m[b, :n] = 1
        inputs["encoder_attention_mask"] = m
    if v.get("res"):
        inputs["resolution"] = torch.tensor([[8.0 * v["Hl"], 8.0 * v["Wl"]]] * B, dtype=torch.float64)
        inputs["aspect_ratio"] = torch.tensor([[v["Hl"] / v["Wl"]]] * B, dtype=torch.float64)
    inputs = {k: t.float().double() for k, t in inputs.items()}  # exactly what the F32 file holds
    save_file({k: t.float().contiguous() for k, t in inputs.items()}, os.path.join(d, "inputs.safetensors"))
    sample, blocks, probe = run(model, inputs)
    fs, fm = noise_floor(model, inputs, sample, probe)
    print("  %-28s reference noise floor (fp32 vs fp64 sinusoid argument): sample %.1e, masses %.1e" % (v["name"], fs, fm))
    assert fs < FLOOR and fm < FLOOR, v["name"]
    exp = {"sample": sample}
    for i, bl in enumerate(blocks):
        exp["block.%d" % i] = bl
    for (kind, i), mm in probe.mass.items():
        exp["%s_mass.%d" % (kind, i)] = mm
    conds = []
    L = cfg.num_layers
    for c in CONDS:
        c = dict(c)
        if c["layers"] == "all":
            c["layers"] = list(range(L))
        c = cond_full(c)
        if c["attn"] == "cross" and c["path"] == "score" and c["eta"] == 0 and v["keep"] and c["k"] >= min(v["keep"]):
            continue  # it would remove every key of a batch element (sinkscope refuses it)
        s, _, pr = run(model, inputs, c)
        c["min_topk_margin"] = pr.margin if pr.margin != float("inf") else 1.0
        assert c["min_topk_margin"] > 1e-4, (v["name"], c["name"], c["min_topk_margin"])
        exp["sample." + c["name"]] = s
        conds.append(c)
        print("  %-28s %-28s changes the sample by %.2e, margin %.2e" % (v["name"], c["name"], rel(s, sample),
                                                                       c["min_topk_margin"]))
    save_file({k: t.float().contiguous() for k, t in exp.items()}, os.path.join(d, "expected.safetensors"))
    json.dump(conds, open(os.path.join(d, "interventions.json"), "w"), indent=1)


def main():
    torch.set_default_dtype(torch.float64)
    for name in ["pixart-tiny-a", "pixart-tiny-b"]:
        check_reference(name)
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    for v in VARIANTS:
        make_variant(v)


if __name__ == "__main__":
    main()
