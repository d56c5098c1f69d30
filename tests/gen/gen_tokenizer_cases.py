"""Our own tokenizer cases (tests/fixtures/tokenizer-cases/), produced by transformers 4.39's slow
CLIPTokenizer (no ftfy) and T5Tokenizer (legacy=True, sentencepiece 0.1.97) themselves, on the
fixture tokenizers tests/fixtures/clip-tokenizer (+ its tokenizer_2 configs: SD3's CLIG-G, pad "!")
and tests/fixtures/t5-tokenizer. Same fields as those folders' cases.json.

Run from the repository root (see tests/gen/refenv.py for PYTHONPATH):
  /usr/bin/python3 tests/gen/gen_tokenizer_cases.py
It first checks that it reproduces every case of the two reference cases.json files."""
import json, os, shutil, sys, tempfile

import refenv  # noqa: F401  (glue only)
from transformers.models.clip.tokenization_clip import CLIPTokenizer
from transformers.models.t5.tokenization_t5 import T5Tokenizer
import transformers
import sentencepiece

FIX = "tests/fixtures"
OUT = os.path.join(FIX, "tokenizer-cases")

try:
    import ftfy  # noqa: F401
    sys.exit("ftfy is installed: the reference convention is CLIPTokenizer without ftfy")
except ImportError:
    pass

clip_l = CLIPTokenizer.from_pretrained(os.path.join(FIX, "clip-tokenizer"))
gdir = tempfile.mkdtemp()
for f in ("vocab.json", "merges.txt"):
    shutil.copy(os.path.join(FIX, "clip-tokenizer", f), gdir)
for f in ("tokenizer_config.json", "special_tokens_map.json"):
    shutil.copy(os.path.join(FIX, "clip-tokenizer", "tokenizer_2", f), gdir)
clip_g = CLIPTokenizer.from_pretrained(gdir)
t5 = T5Tokenizer.from_pretrained(os.path.join(FIX, "t5-tokenizer"))


def clip_case(text):
    c = {"text": text}
    c["ids"] = clip_l(text).input_ids
    c["input_ids"] = clip_l(text, padding="max_length", max_length=77, truncation=True).input_ids
    c["ids_pad_bang"] = clip_g(text).input_ids
    c["input_ids_pad_bang"] = clip_g(text, padding="max_length", max_length=77, truncation=True).input_ids
    c["tokens"] = clip_l.convert_ids_to_tokens(c["ids"])
    return c


def t5_case(text):
    c = {"text": text, "ids": t5(text).input_ids}
    c["pieces"] = t5.convert_ids_to_tokens(c["ids"])
    for L in (32, 16):
        e = t5(text, padding="max_length", max_length=L, truncation=True, add_special_tokens=True)
        c["input_ids_%d" % L], c["attention_mask_%d" % L] = e.input_ids, e.attention_mask
    return c


# The generator must reproduce the reference cases first.
for name, fn, keys in (("clip-tokenizer", clip_case, ("ids", "input_ids", "input_ids_pad_bang")),
                       ("t5-tokenizer", t5_case, ("ids", "input_ids_32", "input_ids_16", "attention_mask_32"))):
    ref = json.load(open(os.path.join(FIX, name, "cases.json")))["cases"]
    for r in ref:
        g = fn(r["text"])
        for k in keys:
            assert g[k] == r[k], (name, r["text"], k)
        if "ids_pad_bang" in r:
            assert g["ids_pad_bang"] == r["ids_pad_bang"], (name, r["text"])
    print("reproduces %d cases of %s/cases.json" % (len(ref), name))

COMMON = [
    # other unicode
    "İstanbul İZMİR", "ΟΔΟΣ ΣΑΣ σοφός ΌΡΟΣ.", "straße STRASSE ǅemal", "مرحبا بالعالم", "नमस्ते दुनिया",
    "안녕하세요 세계", "こんにちは、カタカナ", "e\u0301te\u0301 cafe\u0301 n\u0303", "line\u2028sep\u2029para",
    "no\u00a0break\u3000ideographic\u2003em", "👩‍👩‍👧 family 🇫🇷 flag 👍🏽", "∑∫√∞ ≤≥ ±×÷", "\u0378unassigned\U000E0001tag",
    "\ue000private\U000F0000use", "soft\u00adhyphen \ufeffbom", "bell\x07 unit\x1f nel\x85 del\x7f",
    "rtl\u200fmark\u200eltr", "ＦＵＬＬ ｗｉｄｔｈ １２３", "ﬁne ﬂow ½ ① ™ ㎏", "Ǆ ǆ ǅ Ⅻ ⅻ",
    "中文字符和English混合", "𠀀𠀁 extension B", "tab\tand\nnewline\r\nend", "   leading and trailing   ",
    "I'M DON'T we'll they'D O'Neil's", "rock'n'roll ’curly’ ‘quotes’", "12345 3.14159 1,000,000 2nd",
    "a—b–c-d", "$100 €50 ¥20 £5", "hello@example.com http://x.y/z?q=1&r=2", "C++ C# F#", "#hashtag @user",
    "UPPER lower MiXeD", "\u0130i\u0131I", "x" * 300, "supercalifragilisticexpialidocious " * 3,
    # very long prompts
    " ".join(["a red cube next to a blue sphere"] * 20),
    "a photo of " + ", ".join("object%d" % i for i in range(60)),
    "two cats" + " ," * 150,
    # only specials, and specials glued to text
    "<|startoftext|><|endoftext|>", "<|endoftext|> <|endoftext|>", "<|ENDOFTEXT|> upper", "!!!!", "! ! !",
    "wow! <|endoftext|>!", "</s></s>", "<pad><unk>", "<extra_id_0> <extra_id_99>", "<extra_id_1><extra_id_10>",
    "hello <extra_id_0>.", "a </s> b", "<unk>", "▁", "▁▁ ▁x", "   ", "\u200b", ",", ", , ,", "...",
]

os.makedirs(OUT, exist_ok=True)
hdr = {"transformers": transformers.__version__, "sentencepiece": sentencepiece.__version__,
       "generator": "tests/gen/gen_tokenizer_cases.py"}
cl = dict(hdr, tokenizer="CLIPTokenizer (slow, no ftfy), tests/fixtures/clip-tokenizer (+tokenizer_2 configs)",
          call="padding='max_length', max_length=77, truncation=True", cases=[clip_case(t) for t in COMMON])
tc = dict(hdr, tokenizer="T5Tokenizer (slow, legacy=True), tests/fixtures/t5-tokenizer",
          call="padding='max_length', max_length=L, truncation=True, add_special_tokens=True",
          cases=[t5_case(t) for t in COMMON])
for name, obj in (("clip_cases.json", cl), ("t5_cases.json", tc)):
    with open(os.path.join(OUT, name), "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=True, indent=None)
        f.write("\n")
    print("wrote", os.path.join(OUT, name), len(obj["cases"]), "cases")
shutil.rmtree(gdir)
