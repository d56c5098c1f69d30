"""CLIP-T references (tests/fixtures/clip-t-random/), all computed by the packages themselves:
  preprocess/  PIL 9.4 (Debian) Image.resize BICUBIC outputs (8-bit, several sizes both ways) and
               open_clip 2.24.0's own validation transform (`image_transform(224, is_train=False)`,
               torchvision 0.14) on the same PNGs;
  vision-*/    transformers 4.39 (commit 11ef35e8) CLIPVisionModelWithProjection, random small configs,
               CPU float64 from F32 / BF16-rounded random weights, image_embeds stored F32;
  model/       transformers CLIPModel (vision + text towers, projection), BF16-stored random weights;
               pairs.jsonl + expected.jsonl: raw cosine of the normalised projected embeddings of
               open_clip-preprocessed images and prompts through the slow CLIPTokenizer
               (padding="max_length", max_length=77, truncation=True) of tests/fixtures/clip-tokenizer.
  openclip-b32-small/ open_clip's own VisionTransformer (ViT-B-32 layout: conv1 without bias, class
               embedding, ln_pre, resblocks with in_proj, ln_post, proj), made small (width 64,
               2 layers, patch 32, image 224), random BF16-rounded weights, converted here to transformers names (stored BF16).
  openclip-model/ open_clip's own CLIP (ViT-B-32 layout made small: vision 64 wide, text 16 wide,
               both 2 layers, quick_gelu, embed 24), BF16-rounded random weights converted to a
               transformers CLIPModel folder; expected.jsonl: open_clip's own score,
               cos(encode_image(transform(img), normalize=True), encode_text(tokenizer(prompt),
               normalize=True)) in float64 with open_clip's SimpleTokenizer (77, truncating).
Run from the repository root:
  PYTHONPATH=TRANSFORMERS/src:HUB/src:REFENV:OPEN_CLIP/src:tests/gen /usr/bin/python3 tests/gen/gen_clip_t.py
(OPEN_CLIP: the v2.24.0 tag of mlfoundations/open_clip; later releases need torch >= 2. open_clip imports
ftfy, which Debian lacks: it is given an identity fix_text, which is what ftfy's fix_text returns for
these prompts (well-formed UTF-8, no mojibake). Only openclip-model/ runs open_clip's tokenizer.)"""
import json, os, shutil, sys, types

import refenv  # noqa: F401
import shim  # noqa: F401
import numpy as np
import torch
from PIL import Image
import safetensors.torch as _st
from safetensors.torch import save_file

if not hasattr(_st, "storage_ptr"):
    _st.storage_ptr = lambda t: t.storage().data_ptr()
    _st.storage_size = lambda t: t.storage().size() * t.element_size()
_ftfy = types.ModuleType("ftfy")
_ftfy.fix_text = lambda s: s
sys.modules.setdefault("ftfy", _ftfy)
import open_clip  # noqa: E402
from open_clip.transform import image_transform  # noqa: E402
from transformers import CLIPConfig, CLIPVisionConfig, CLIPTextConfig, CLIPTokenizer  # noqa: E402
from transformers.models.clip.modeling_clip import CLIPModel, CLIPVisionModelWithProjection  # noqa: E402

OUT = "tests/fixtures/clip-t-random"
if os.path.isdir(OUT):
    shutil.rmtree(OUT)
os.makedirs(OUT)
rng = np.random.default_rng(16)


def make_image(w, h):
    """Smooth gradients, hard-edged 8x8 blocks and sparse salt: overshoot, clamping, compressible PNG."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([255 * x / max(w - 1, 1), 255 * y / max(h - 1, 1), 127 + 100 * np.sin((x + 2 * y) / 9)], -1)
    blocks = rng.integers(0, 2, ((h + 7) // 8, (w + 7) // 8, 3)).repeat(8, 0).repeat(8, 1)[:h, :w]
    img = np.where(blocks > 0, img, 255 - img)
    salt = rng.random((h, w)) < 0.01
    img[salt] = rng.choice([0, 255], (int(salt.sum()), 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


# ---- preprocessing ----
pre_dir = os.path.join(OUT, "preprocess")
os.makedirs(pre_dir)
sizes = [(224, 224), (300, 200), (200, 301), (97, 61), (513, 257), (225, 224), (640, 720), (31, 300)]
resizes = [((300, 200), (150, 317)), ((97, 61), (224, 224)), ((513, 257), (64, 500)), ((640, 720), (223, 225)),
           ((31, 300), (5, 7)), ((225, 224), (224, 224))]
pre = image_transform(224, is_train=False)
print(pre)
resize_crop = pre.transforms[0], pre.transforms[1]  # open_clip's Resize(224, BICUBIC), CenterCrop(224)
ex = {}
cases = []
for w, h in sizes:
    name = "img_%dx%d" % (w, h)
    im = make_image(w, h)
    im.save(os.path.join(pre_dir, name + ".png"))
    im = Image.open(os.path.join(pre_dir, name + ".png"))
    # the 8-bit image after open_clip's resize and crop, stored losslessly
    resize_crop[1](resize_crop[0](im)).save(os.path.join(pre_dir, "crop_%s.png" % name))
    if name in ("img_300x200", "img_31x300"):
        ex["pixel_values." + name] = pre(im).contiguous()  # the whole transform: [3, 224, 224] float32
    cases.append(name)
for (w, h), (ow, oh) in resizes:
    im = Image.open(os.path.join(pre_dir, "img_%dx%d.png" % (w, h)))
    im.resize((ow, oh), Image.BICUBIC).save(os.path.join(pre_dir, "pil_%dx%d_%dx%d.png" % (w, h, ow, oh)))
save_file(ex, os.path.join(pre_dir, "expected.safetensors"))
print("preprocess", len(ex))


def randomize(model, seed, gain, bf16):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 0:  # logit_scale: unused by the cosine
                continue
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g, dtype=torch.float64) if name.endswith("weight")
                        else 0.1 * torch.randn(p.shape, generator=g, dtype=torch.float64))
            elif p.dim() == 1 and "bias" not in name:  # class_embedding
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
            else:
                fan = p[0].numel() if p.dim() > 1 else p.shape[-1]
                p.copy_(gain * torch.randn(p.shape, generator=g, dtype=torch.float64) / max(1, fan) ** 0.5)
            if bf16:
                p.copy_(p.to(torch.bfloat16).to(torch.float64))


def save_model(model, d, bf16):
    os.makedirs(d, exist_ok=True)
    model.config.save_pretrained(d)
    dt = torch.bfloat16 if bf16 else torch.float32
    sd = {k: v.detach().to(dt).contiguous() for k, v in model.state_dict().items() if "position_ids" not in k}
    save_file(sd, os.path.join(d, "model.safetensors"))


def f32(t):
    return t.detach().to(torch.float32).contiguous()


# ---- vision-only variants ----
def vision_variant(name, seed, bf16, B, **kw):
    cfg = CLIPVisionConfig(**kw)
    m = CLIPVisionModelWithProjection(cfg).double().eval()
    randomize(m, seed, 1.5, bf16)
    d = os.path.join(OUT, name)
    save_model(m, d, bf16)
    g = torch.Generator().manual_seed(seed + 100)
    pv = torch.randn(B, 3, cfg.image_size, cfg.image_size, generator=g).float()
    save_file({"pixel_values": pv}, os.path.join(d, "inputs.safetensors"))
    with torch.no_grad():
        o = m(pixel_values=pv.double(), output_hidden_states=True)
    save_file({"image_embeds": f32(o.image_embeds), "last_hidden_state": f32(o.last_hidden_state),
               "hidden_states.0": f32(o.hidden_states[0])}, os.path.join(d, "expected.safetensors"))
    print(name, tuple(o.image_embeds.shape))


vision_variant("vision-p16-s64-f32", 31, False, 2, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
               num_attention_heads=2, image_size=64, patch_size=16, projection_dim=24, hidden_act="quick_gelu")
vision_variant("vision-p32-s96-gelu-bf16", 32, True, 3, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
               num_attention_heads=4, image_size=96, patch_size=32, projection_dim=16, hidden_act="gelu",
               layer_norm_eps=1e-6)
vision_variant("vision-p16-s224-bf16", 33, True, 1, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
               num_attention_heads=4, image_size=224, patch_size=16, projection_dim=32, hidden_act="quick_gelu")

def convert_blocks(sd, src, dst, W, L, t):
    """open_clip ResidualAttentionBlocks -> transformers CLIPEncoderLayers (split in_proj)."""
    for i in range(L):
        p, q = src + "%d." % i, dst + "%d." % i
        iw, ib = sd[p + "attn.in_proj_weight"], sd[p + "attn.in_proj_bias"]
        for j, n in enumerate("qkv"):
            t[q + "self_attn.%s_proj.weight" % n] = iw[j * W:(j + 1) * W]
            t[q + "self_attn.%s_proj.bias" % n] = ib[j * W:(j + 1) * W]
        t[q + "self_attn.out_proj.weight"] = sd[p + "attn.out_proj.weight"]
        t[q + "self_attn.out_proj.bias"] = sd[p + "attn.out_proj.bias"]
        for a, b in (("ln_1", "layer_norm1"), ("ln_2", "layer_norm2")):
            t[q + b + ".weight"], t[q + b + ".bias"] = sd[p + a + ".weight"], sd[p + a + ".bias"]
        t[q + "mlp.fc1.weight"], t[q + "mlp.fc1.bias"] = sd[p + "mlp.c_fc.weight"], sd[p + "mlp.c_fc.bias"]
        t[q + "mlp.fc2.weight"], t[q + "mlp.fc2.bias"] = sd[p + "mlp.c_proj.weight"], sd[p + "mlp.c_proj.bias"]


# ---- open_clip's own ViT (ViT-B-32 layout, small), converted to transformers names ----
def openclip_variant(name, seed):
    torch.manual_seed(seed)
    vis = open_clip.model._build_vision_tower(32, open_clip.model.CLIPVisionCfg(
        layers=2, width=64, head_width=16, patch_size=32, image_size=224), quick_gelu=True).double().eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pn, p in vis.named_parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=torch.float64) / max(1, p[0].numel() if p.dim() > 1 else 8) ** 0.5
                    + (1.0 if pn.endswith("ln_1.weight") or pn.endswith("ln_2.weight") or "ln_p" in pn and pn.endswith("weight") else 0.0))
            p.copy_(p.to(torch.bfloat16).to(torch.float64))  # stored BF16
    sd = vis.state_dict()
    W, L = 64, 2
    t = {"vision_model.embeddings.class_embedding": sd["class_embedding"],
         "vision_model.embeddings.patch_embedding.weight": sd["conv1.weight"],
         "vision_model.embeddings.position_embedding.weight": sd["positional_embedding"],
         "vision_model.pre_layrnorm.weight": sd["ln_pre.weight"], "vision_model.pre_layrnorm.bias": sd["ln_pre.bias"],
         "vision_model.post_layernorm.weight": sd["ln_post.weight"], "vision_model.post_layernorm.bias": sd["ln_post.bias"],
         "visual_projection.weight": sd["proj"].t()}
    convert_blocks(sd, "transformer.resblocks.", "vision_model.encoder.layers.", W, L, t)
    d = os.path.join(OUT, name)
    os.makedirs(d)
    CLIPVisionConfig(hidden_size=W, intermediate_size=4 * W, num_hidden_layers=L, num_attention_heads=W // 16,
                     image_size=224, patch_size=32, projection_dim=32, hidden_act="quick_gelu",
                     layer_norm_eps=1e-5).save_pretrained(d)
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in t.items()}, os.path.join(d, "model.safetensors"))
    ims = [Image.open(os.path.join(pre_dir, c + ".png")) for c in ("img_300x200",)]
    pv = torch.stack([pre(im) for im in ims])
    save_file({"pixel_values": pv}, os.path.join(d, "inputs.safetensors"))
    with torch.no_grad():
        emb = vis(pv.double())
    save_file({"image_embeds": f32(emb)}, os.path.join(d, "expected.safetensors"))
    print(name, tuple(emb.shape))


openclip_variant("openclip-b32-small", 34)

# ---- the whole score ----
torch.set_default_dtype(torch.float64)  # transformers' CLIP causal mask helper
tcfg = dict(vocab_size=49408, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
            max_position_embeddings=77, hidden_act="quick_gelu", eos_token_id=2, bos_token_id=0, pad_token_id=1)
vcfg = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2, image_size=224,
            patch_size=32, hidden_act="quick_gelu")
cfg = CLIPConfig(text_config=tcfg, vision_config=vcfg, projection_dim=24)
m = CLIPModel(cfg).double().eval()
randomize(m, 35, 1.5, True)
md = os.path.join(OUT, "model")
save_model(m, md, True)
tok = CLIPTokenizer.from_pretrained("tests/fixtures/clip-tokenizer")
prompts = ["a photo of a cat", "A red cube on the left of a blue sphere, studio lighting.",
           "two dogs", " ".join(["a very long prompt that goes on"] * 20), "café au lait, ünïcödé!", ""]
pairs = []
for i, c in enumerate(cases):
    pairs.append((c, prompts[i % len(prompts)]))
pairs.append((cases[1], prompts[3]))
pairs.append((cases[4], prompts[0]))
with open(os.path.join(md, "pairs.jsonl"), "w") as fp_in, open(os.path.join(md, "expected.jsonl"), "w") as fp_out:
    for c, p in pairs:
        img = "tests/fixtures/clip-t-random/preprocess/%s.png" % c
        pv = pre(Image.open(img)).unsqueeze(0).double()
        ids = tok([p], padding="max_length", max_length=77, truncation=True, return_tensors="pt")
        with torch.no_grad():
            o = m(input_ids=ids.input_ids, attention_mask=ids.attention_mask, pixel_values=pv)
        cos = float((o.image_embeds * o.text_embeds).sum())
        fp_in.write(json.dumps({"image": img, "prompt": p}, ensure_ascii=False) + "\n")
        fp_out.write(json.dumps({"image": img, "prompt": p, "clip_t": cos}, ensure_ascii=False) + "\n")
        print(c, repr(p[:30]), cos)


# ---- the whole score by open_clip itself ----
torch.set_default_dtype(torch.float32)
torch.manual_seed(36)
oc = open_clip.model.CLIP(embed_dim=24, quick_gelu=True,
                          vision_cfg=open_clip.model.CLIPVisionCfg(layers=2, width=64, head_width=32, patch_size=32,
                                                                   image_size=224),
                          text_cfg=open_clip.model.CLIPTextCfg(context_length=77, vocab_size=49408, width=16, heads=2,
                                                               layers=2)).double().eval()
g = torch.Generator().manual_seed(36)
with torch.no_grad():
    for pn, p in oc.named_parameters():
        if p.dim() == 0:
            continue
        is_ln = any(x in pn for x in ("ln_1", "ln_2", "ln_pre", "ln_post", "ln_final"))
        if is_ln:
            p.copy_((1.0 if pn.endswith("weight") else 0.0) + 0.2 * torch.randn(p.shape, generator=g, dtype=torch.float64))
        else:
            fan = p[0].numel() if p.dim() > 1 else 8
            p.copy_(1.5 * torch.randn(p.shape, generator=g, dtype=torch.float64) / fan ** 0.5)
        p.copy_(p.to(torch.bfloat16).to(torch.float64))
sd = oc.state_dict()
t = {"vision_model.embeddings.class_embedding": sd["visual.class_embedding"],
     "vision_model.embeddings.patch_embedding.weight": sd["visual.conv1.weight"],
     "vision_model.embeddings.position_embedding.weight": sd["visual.positional_embedding"],
     "vision_model.pre_layrnorm.weight": sd["visual.ln_pre.weight"], "vision_model.pre_layrnorm.bias": sd["visual.ln_pre.bias"],
     "vision_model.post_layernorm.weight": sd["visual.ln_post.weight"],
     "vision_model.post_layernorm.bias": sd["visual.ln_post.bias"],
     "visual_projection.weight": sd["visual.proj"].t(),
     "text_model.embeddings.token_embedding.weight": sd["token_embedding.weight"],
     "text_model.embeddings.position_embedding.weight": sd["positional_embedding"],
     "text_model.final_layer_norm.weight": sd["ln_final.weight"], "text_model.final_layer_norm.bias": sd["ln_final.bias"],
     "text_projection.weight": sd["text_projection"].t()}
convert_blocks(sd, "visual.transformer.resblocks.", "vision_model.encoder.layers.", 64, 2, t)
convert_blocks(sd, "transformer.resblocks.", "text_model.encoder.layers.", 16, 2, t)
od = os.path.join(OUT, "openclip-model")
os.makedirs(od)
CLIPConfig(text_config=dict(hidden_size=16, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                            eos_token_id=2),  # eos_token_id 2: transformers' argmax pooling, open_clip's rule
           vision_config=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                              image_size=224, patch_size=32),
           projection_dim=24).save_pretrained(od)
save_file({k: v.to(torch.bfloat16).contiguous() for k, v in t.items()}, os.path.join(od, "model.safetensors"))
octok = open_clip.get_tokenizer("ViT-B-32")
with open(os.path.join(od, "pairs.jsonl"), "w") as fp_in, open(os.path.join(od, "expected.jsonl"), "w") as fp_out:
    for c, p in pairs:
        img = "tests/fixtures/clip-t-random/preprocess/%s.png" % c
        with torch.no_grad():
            ie = oc.encode_image(pre(Image.open(img)).unsqueeze(0).double(), normalize=True)
            te = oc.encode_text(octok([p]), normalize=True)
        cos = float((ie * te).sum())
        fp_in.write(json.dumps({"image": img, "prompt": p}, ensure_ascii=False) + "\n")
        fp_out.write(json.dumps({"image": img, "prompt": p, "clip_t": cos}, ensure_ascii=False) + "\n")
        print("open_clip", c, repr(p[:30]), cos)
