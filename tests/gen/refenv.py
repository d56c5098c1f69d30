"""Glue (no math) to run the unmodified transformers 4.39 tree (commit 11ef35e8) on Debian's
Python without the Rust `tokenizers` package or pip metadata, as in tests/fixtures/README-pipeline.md:
skip transformers' dependency-version check and make its fallback AddedToken hashable.
Usage: PYTHONPATH=TRANSFORMERS/src:HUB/src:REFENV /usr/bin/python3 tests/gen/<generator>.py
(REFENV: the reference environment's shim.py + safetensors/ stand-in)."""
import sys, types

mod = types.ModuleType("transformers.dependency_versions_check")
mod.dep_version_check = lambda *a, **k: None
sys.modules["transformers.dependency_versions_check"] = mod

import transformers.tokenization_utils_base as tub  # noqa: E402

if tub.AddedToken.__hash__ is None:
    tub.AddedToken.__hash__ = lambda self: hash(self.content)
if not hasattr(tub.AddedToken, "__setstate__"):  # the Rust class's pickling hook, which tokenization_utils calls
    tub.AddedToken.__setstate__ = lambda self, state: self.__dict__.update(state)

# convert_slow_tokenizer (imported by tokenization_t5) imports names from `tokenizers` at module
# level; the slow tokenizers never call them. The stub is installed after transformers decided
# that `tokenizers` is unavailable, so nothing takes the fast path.
_stub = types.ModuleType("tokenizers")
for _n in ("AddedToken", "Regex", "Tokenizer", "decoders", "normalizers", "pre_tokenizers", "processors",
           "models", "trainers", "Encoding"):
    setattr(_stub, _n, None)
_stub.__path__ = []
sys.modules.setdefault("tokenizers", _stub)
_models = types.ModuleType("tokenizers.models")
for _n in ("BPE", "Unigram", "WordPiece"):
    setattr(_models, _n, None)
sys.modules.setdefault("tokenizers.models", _models)
