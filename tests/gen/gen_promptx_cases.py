"""Comma-padding cases (tests/fixtures/promptx-cases/cases.json): prompts with N copies of a padding
string appended as the paper's public demo builds them (freemty/pe2sink src/demo/comma_padding.py
build_comma_prompt: prompt + separator (" ", none if the prompt already ends with it) + pad * N),
tokenized by transformers 4.39's slow CLIPTokenizer (no ftfy) and T5Tokenizer (legacy=True) on the
fixture tokenizers tests/fixtures/clip-tokenizer and tests/fixtures/t5-tokenizer, with
padding="max_length", truncation=True (CLIP 77, T5 at several max_sequence_length values).

Each case records the padded text, input_ids and attention_mask, and the role of every position
from transformers' own output: "bos" (CLIP's added bos_token_id at 0), "eos" (the eos_token_id
position the tokenizer added: the last unmasked one), "pad" (attention_mask 0), "comma" (a piece
that convert_ids_to_tokens spells with only commas, once "</w>" or the leading U+2581 is removed),
"other" for the rest.

Run from the repository root (see tests/gen/refenv.py for PYTHONPATH):
  PYTHONPATH=TRANSFORMERS/src:REFENV/src:REFENV:tests/gen /usr/bin/python3 tests/gen/gen_promptx_cases.py
  (REFENV: a folder with diffusers 0.32.1's source under REFENV/src (github.com/huggingface/diffusers, v0.32.1) and a shim.py adapting it to Debian's PyTorch 1.13 (tests/fixtures/README-pipeline.md); TRANSFORMERS: the transformers 4.39 tree, see tests/gen/refenv.py)"""
import json, os, sys

import refenv  # noqa: F401  (glue only)
from transformers.models.clip.tokenization_clip import CLIPTokenizer
from transformers.models.t5.tokenization_t5 import T5Tokenizer

FIX = "tests/fixtures"
OUT = os.path.join(FIX, "promptx-cases")

try:
    import ftfy  # noqa: F401
    sys.exit("ftfy is installed: the reference convention is CLIPTokenizer without ftfy")
except ImportError:
    pass


def pad_prompt(prompt, repeat=200, pad=",", sep=" "):
    if repeat == 0:
        return prompt
    if not sep or prompt.endswith(sep):
        return prompt + pad * repeat
    return prompt + sep + pad * repeat


def roles(tok, ids, mask, kind):
    toks = tok.convert_ids_to_tokens(ids)
    last = max(i for i, m in enumerate(mask) if m)
    out = []
    for i, (t, m) in enumerate(zip(toks, mask)):
        core = t.replace("</w>", "").lstrip("\u2581")
        if not m:
            out.append("pad")
        elif i == last and ids[i] == tok.eos_token_id:
            out.append("eos")
        elif kind == "clip" and i == 0 and ids[i] == tok.bos_token_id:
            out.append("bos")
        elif core and set(core) == {","}:
            out.append("comma")
        else:
            out.append("other")
    return out


def main():
    clip = CLIPTokenizer.from_pretrained(os.path.join(FIX, "clip-tokenizer"))
    t5 = T5Tokenizer.from_pretrained(os.path.join(FIX, "t5-tokenizer"))
    prompts = [("a red cube on a blue sphere", 200, ",", " "), ("a photo of a cat", 0, ",", " "),
               ("a dog, a cat", 5, ",", " "), ("two apples ", 12, ",", " "), ("a bird", 30, ",", ""),
               ("a house", 40, ";", " "), ("an astronaut riding a horse on the moon", 200, ",", " "), ("", 7, ",", " ")]
    cases = []
    for p, n, pad, sep in prompts:
        text = pad_prompt(p, n, pad, sep)
        c = {"prompt": p, "repeat": n, "pad": pad, "sep": sep, "text": text}
        e = clip(text, padding="max_length", max_length=77, truncation=True)
        c["clip"] = {"max_length": 77, "input_ids": e.input_ids, "attention_mask": e.attention_mask,
                     "roles": roles(clip, e.input_ids, e.attention_mask, "clip")}
        c["t5"] = []
        for L in (32, 256, 512):
            e = t5(text, padding="max_length", max_length=L, truncation=True)
            c["t5"].append({"max_length": L, "input_ids": e.input_ids, "attention_mask": e.attention_mask,
                            "roles": roles(t5, e.input_ids, e.attention_mask, "t5")})
        cnt = {r: c["clip"]["roles"].count(r) for r in ("comma", "eos", "pad")}
        cnt5 = {r: c["t5"][2]["roles"].count(r) for r in ("comma", "eos", "pad")}
        print("%-45r CLIP-77 %s  T5-512 %s" % (text[:45], cnt, cnt5))
        cases.append(c)
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(cases, f)
        f.write("\n")


if __name__ == "__main__":
    main()
