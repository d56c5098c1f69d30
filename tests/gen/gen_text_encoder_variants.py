"""Our own text-encoder variants (tests/fixtures/text-encoder-variants/), computed by transformers
4.39's CLIPTextModel / CLIPTextModelWithProjection / T5EncoderModel (unmodified, commit 11ef35e8)
on CPU in float64 from BF16-rounded random weights, stored as in the reference folders:
config.json (save_pretrained), model.safetensors (BF16), inputs.safetensors, expected.safetensors
(F32; ids I64). Run from the repository root with the PYTHONPATH of tests/gen/refenv.py plus the
reference environment (shim.py, safetensors/):  /usr/bin/python3 tests/gen/gen_text_encoder_variants.py"""
import os, shutil

import refenv  # noqa: F401
import shim  # noqa: F401  (torch 1.13 names)
import torch
import safetensors.torch as _st
from safetensors.torch import save_file

# Glue: transformers' pytorch_utils imports two helpers of the real safetensors package (used only
# to detect shared storage when saving weights, which this script does itself).
if not hasattr(_st, "storage_ptr"):
    _st.storage_ptr = lambda t: t.storage().data_ptr()
    _st.storage_size = lambda t: t.storage().size() * t.element_size()
from transformers import CLIPTextConfig, T5Config
from transformers.models.clip.modeling_clip import CLIPTextModel, CLIPTextModelWithProjection
from transformers.models.t5.modeling_t5 import T5EncoderModel

OUT = "tests/fixtures/text-encoder-variants"


def randomize(model, seed, gain):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name or "norm" in name.split(".")[-2]:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g, dtype=torch.float64))
            else:
                p.copy_(gain * torch.randn(p.shape, generator=g, dtype=torch.float64) / max(1, p.shape[-1]) ** 0.5)
            p.copy_(p.to(torch.bfloat16).to(torch.float64))  # BF16-stored weights


def save_model(model, d):
    os.makedirs(d, exist_ok=True)
    model.config.save_pretrained(d)
    sd = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    save_file(sd, os.path.join(d, "model.safetensors"))


def f32(t):
    return t.detach().to(torch.float32).contiguous()


def clip_variant(name, cfg, proj, seed, ids, mask):
    torch.set_default_dtype(torch.float64)  # transformers' CLIP causal mask helper overflows otherwise
    cls = CLIPTextModelWithProjection if proj else CLIPTextModel
    m = cls(cfg).double().eval()
    randomize(m, seed, 2.0)
    d = os.path.join(OUT, name)
    save_model(m, d)
    inputs = {"input_ids": ids}
    if mask is not None:
        inputs["attention_mask"] = mask
    save_file(inputs, os.path.join(d, "inputs.safetensors"))
    with torch.no_grad():
        o = m(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    ex = {"hidden_states.%d" % i: f32(h) for i, h in enumerate(o.hidden_states)}
    ex["last_hidden_state"] = f32(o.last_hidden_state)
    if proj:
        ex["text_embeds"] = f32(o.text_embeds)
        base = m.text_model
    else:
        ex["pooler_output"] = f32(o.pooler_output)
        base = m.text_model
    if base.eos_token_id == 2:
        idx = ids.to(torch.int).argmax(dim=-1)
    else:
        idx = (ids.to(torch.int) == base.eos_token_id).int().argmax(dim=-1)
    ex["pool_index"] = idx.to(torch.int64)
    save_file(ex, os.path.join(d, "expected.safetensors"))
    torch.set_default_dtype(torch.float32)
    print(name, sorted(ex))


def t5_variant(name, cfg, seed, ids, mask):
    m = T5EncoderModel(cfg).double().eval()
    randomize(m, seed, 2.5)
    d = os.path.join(OUT, name)
    save_model(m, d)
    save_file({"input_ids": ids, "attention_mask": mask}, os.path.join(d, "inputs.safetensors"))
    ex = {}
    for sfx, mk in (("", None), ("_masked", mask)):
        blocks = []
        hooks = [blk.register_forward_hook(lambda mod, i, out: blocks.append(out[0])) for blk in m.encoder.block]
        with torch.no_grad():
            o = m(input_ids=ids, attention_mask=mk, output_hidden_states=True)
        for h in hooks:
            h.remove()
        for i, h in enumerate(o.hidden_states):
            ex["hidden_states%s.%d" % (sfx, i)] = f32(h)
        for i, b in enumerate(blocks):
            ex["block%s.%d" % (sfx, i)] = f32(b)
        ex["last_hidden_state" + sfx] = f32(o.last_hidden_state)
    save_file(ex, os.path.join(d, "expected.safetensors"))
    print(name, len(ex), "tensors")


if os.path.isdir(OUT):
    shutil.rmtree(OUT)
g = torch.Generator().manual_seed(5)

# CLIP: batch 3, other widths/depths, 4 heads of 10, BF16 weights, pooling on eos_token_id (not 2),
# an attention mask in two rows, no projection (CLIPTextModel).
V, L = 1000, 20
ids = torch.randint(0, V - 2, (3, L), generator=g)
ids[:, 0] = V - 2
ids[0, 9] = V - 1; ids[0, 10:] = V - 1
ids[1, 4] = V - 1; ids[1, 5:] = 0
ids[2, 19] = 5  # row without eos: pooled position 0 under the eos_token_id rule
mask = torch.ones(3, L, dtype=torch.int64)
mask[0, 10:] = 0
mask[1, 5:] = 0
cfg = CLIPTextConfig(vocab_size=V, hidden_size=40, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                     max_position_embeddings=24, hidden_act="gelu", layer_norm_eps=1e-5, bos_token_id=V - 2,
                     eos_token_id=V - 1, pad_token_id=0, projection_dim=16)
clip_variant("clip-w40-l3-mask", cfg, False, 21, ids, mask)
# CLIP-L style (quick_gelu, legacy eos_token_id 2 -> argmax), projection, 1 layer, 3 heads of 8.
cfg2 = CLIPTextConfig(vocab_size=V, hidden_size=24, intermediate_size=30, num_hidden_layers=1, num_attention_heads=3,
                      max_position_embeddings=20, hidden_act="quick_gelu", layer_norm_eps=1e-5, bos_token_id=0,
                      eos_token_id=2, pad_token_id=1, projection_dim=12)
clip_variant("clip-quick-proj", cfg2, True, 22, ids, None)

# T5: heads x d_kv (3 x 10 = 30) != d_model 24, 3 blocks, 16 buckets / max_distance 20 (the log
# range is reached at L = 40), batch 3 with masks in several rows (one row fully unmasked).
TV, TL = 300, 40
tids = torch.randint(3, TV, (3, TL), generator=g)
tmask = torch.ones(3, TL, dtype=torch.int64)
tmask[0, 25:] = 0; tids[0, 24] = 1; tids[0, 25:] = 0
tmask[2, 7:] = 0; tids[2, 6] = 1; tids[2, 7:] = 0
tcfg = T5Config(vocab_size=TV, d_model=24, d_kv=10, d_ff=40, num_layers=3, num_heads=3,
                relative_attention_num_buckets=16, relative_attention_max_distance=20, feed_forward_proj="gated-gelu",
                layer_norm_epsilon=1e-6, is_encoder_decoder=False, use_cache=False, tie_word_embeddings=False)
t5_variant("t5-d24-h3x10-l3", tcfg, 23, tids, tmask)
