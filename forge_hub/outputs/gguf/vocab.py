"""A Hugging Face tokenizer as GGUF metadata: the vocabulary, its kind, its pre-tokenizer, merges,
special tokens and chat template.

GGUF has no ``tokenizer.json``; llama.cpp rebuilds the tokenizer from ``tokenizer.ggml.*`` keys:

- ``tokenizer.ggml.model``: ``gpt2`` (byte-level BPE: Llama 3, Qwen, SmolLM, Mistral Nemo) or
  ``llama`` (SentencePiece, or its BPE-with-byte-fallback form in ``tokenizer.json``: Llama 2,
  Mistral 7B v0.1, Gemma);
- ``tokenizer.ggml.pre`` (``gpt2`` only): the name of the regex that splits text before BPE.
  llama.cpp hard-codes one regex per name, so a wrong name silently tokenizes differently.
  forge-hub reads the regex from ``tokenizer.json`` and names it only when it is one of the
  regexes below; anything else is an error, with llama.cpp's own converter as the way out;
- token types: CONTROL for special added tokens (so ``<|im_start|>`` stays one token),
  USER_DEFINED for other added tokens, UNUSED for ids the tokenizer does not fill;
- merges, special token ids, ``add_bos``/``add_eos`` and the chat template, from
  :class:`gguf.SpecialVocab`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forge_hub.errors import MissingDependencyError, ModelLoadError

# Split regexes of the byte-level BPE tokenizers forge-hub names, by llama.cpp pre-tokenizer name.
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_TEKKEN_SPLIT = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
                 r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
                 r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
SPLIT_REGEXES = {"llama-bpe": _LLAMA3_SPLIT, "qwen2": _QWEN2_SPLIT, "tekken": _TEKKEN_SPLIT}
GPT2_PRE = "gpt-2"  # ByteLevel's own GPT-2 regex
DIGITS_PRE = "smollm"  # every digit on its own, then GPT-2's regex (SmolLM, StarCoder)


@dataclass
class GGUFVocab:
    """Everything :func:`write_vocab` puts into a GGUF file."""

    model: str  # tokenizer.ggml.model
    tokens: list[str | bytes]
    token_types: list[int]
    scores: list[float] | None = None
    pre: str | None = None  # tokenizer.ggml.pre (gpt2 only)
    add_space_prefix: bool | None = None
    special: Any = None  # gguf.SpecialVocab
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        kind = f"{self.model} ({self.pre})" if self.pre else self.model
        return f"{kind}, {len(self.tokens)} tokens"


def read_vocab(model_dir: Path, vocab_size: int, no_space_prefix: bool = False) -> GGUFVocab:
    """Read the tokenizer in ``model_dir`` as GGUF wants it, padded to ``vocab_size`` ids.

    ``no_space_prefix``: the family never prepends a space (Gemma), whatever the tokenizer says.
    """
    import gguf

    tokenizer_json = _load_json(model_dir / "tokenizer.json")
    sentencepiece = (model_dir / "tokenizer.model").is_file()
    byte_fallback = bool(tokenizer_json) and _is_byte_fallback_bpe(tokenizer_json)
    if not (sentencepiece or byte_fallback or (tokenizer_json or {}).get("model", {}).get("type") == "BPE"):
        kind = (tokenizer_json or {}).get("model", {}).get("type", "no tokenizer.json / tokenizer.model")
        raise ModelLoadError(f"{model_dir}: tokenizer kind {kind!r} has no GGUF vocabulary type forge-hub writes",
                             "GGUF holds byte-level BPE and SentencePiece tokenizers; for another kind, "
                             "use llama.cpp's converter (give a llama.cpp checkout as {llama_cpp})")
    tok = _hf_tokenizer(model_dir)
    if sentencepiece or byte_fallback:
        vocab = _sentencepiece_vocab(model_dir, vocab_size, tok, from_model_file=sentencepiece)
    else:
        vocab = _byte_level_vocab(vocab_size, tok, pre_tokenizer_name(tokenizer_json))
    if no_space_prefix:
        vocab.add_space_prefix = False
    vocab.special = gguf.SpecialVocab(model_dir, load_merges=vocab.model == "gpt2", n_vocab=len(vocab.tokens))
    for kind, adds in _added_around_text(tok).items():
        # tokenizer files often leave this implicit, and llama.cpp's default differs between
        # vocabulary kinds: say what the Hugging Face tokenizer really does
        vocab.special.add_special_token.setdefault(kind, adds)
    return vocab


def write_vocab(writer, vocab: GGUFVocab) -> None:
    """Add the tokenizer keys to a ``gguf.GGUFWriter``."""
    writer.add_tokenizer_model(vocab.model)
    if vocab.pre is not None:
        writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    if vocab.scores is not None:
        writer.add_token_scores(vocab.scores)
    writer.add_token_types(vocab.token_types)
    if vocab.add_space_prefix is not None:
        writer.add_add_space_prefix(vocab.add_space_prefix)
    vocab.special.add_to_gguf(writer, quiet=True)


def pre_tokenizer_name(tokenizer_json: dict) -> str:
    """llama.cpp's name for the pre-tokenizer of a byte-level BPE ``tokenizer.json``."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return GPT2_PRE
    if (kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits")
            and steps[1].get("use_regex", True)):
        return DIGITS_PRE
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        pattern = (steps[0].get("pattern") or {}).get("Regex")
        for name, regex in SPLIT_REGEXES.items():
            if pattern == regex:
                return name
    raise ModelLoadError(
        f"unrecognised pre-tokenizer {json.dumps(pre)[:300]}",
        "forge-hub names the GPT-2, Llama 3, Qwen 2, SmolLM and Tekken pre-tokenizers; for another one use "
        "llama.cpp's converter, which knows many more (give a llama.cpp checkout as {llama_cpp})")


def _hf_tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model_dir)
    except Exception as exc:  # transformers raises many kinds here; all mean the same to the user
        raise ModelLoadError(f"could not load the tokenizer in {model_dir}: {type(exc).__name__}: {exc}",
                             "check the tokenizer files (tokenizer.json or tokenizer.model, tokenizer_config.json)"
                             ) from exc


def _added_around_text(tok) -> dict[str, bool]:
    """Whether the tokenizer puts BOS before / EOS after plain text, found by encoding a word."""
    ids = tok("hello").input_ids
    found = {}
    if tok.bos_token_id is not None:
        found["bos"] = bool(ids) and ids[0] == tok.bos_token_id
    if tok.eos_token_id is not None:
        found["eos"] = bool(ids) and ids[-1] == tok.eos_token_id
    return found


def _load_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _is_byte_fallback_bpe(tokenizer_json: dict) -> bool:
    model = tokenizer_json.get("model", {})
    return model.get("type") == "BPE" and bool(model.get("byte_fallback"))


def _pad(tokens: list, types: list[int], scores: list[float] | None, vocab_size: int) -> None:
    """Fill ids the tokenizer leaves empty (embedding rows padded for speed) as llama.cpp does."""
    import gguf

    as_bytes = bool(tokens) and isinstance(tokens[0], bytes)
    for i in range(len(tokens), vocab_size):
        tokens.append(f"[PAD{i}]".encode() if as_bytes else f"[PAD{i}]")
        types.append(gguf.TokenType.UNUSED)
        if scores is not None:
            scores.append(-1000.0)


def _byte_level_vocab(vocab_size: int, tok, pre: str) -> GGUFVocab:
    """GPT-2 style BPE: tokens as spelled in the vocabulary (byte-level alphabet), typed by the
    tokenizer's added-token table."""
    import gguf

    by_id = {i: t for t, i in tok.get_vocab().items()}
    _check_size(max(by_id) + 1, vocab_size, tok.name_or_path)
    tokens: list[str | bytes] = []
    types: list[int] = []
    for i in range(vocab_size):
        token = by_id.get(i)
        tokens.append(f"[PAD{i}]" if token is None else token)
        types.append(gguf.TokenType.UNUSED if token is None else gguf.TokenType.NORMAL)
    _type_added_tokens(tok, tokens, types, None)
    return GGUFVocab("gpt2", tokens, types, pre=pre)


def _sentencepiece_vocab(model_dir: Path, vocab_size: int, tok, from_model_file: bool) -> GGUFVocab:
    """SentencePiece pieces with their scores (from ``tokenizer.model``, or from ``tokenizer.json``
    when only that is shipped), then the added tokens of the Hugging Face tokenizer on top."""
    import gguf

    try:
        base = gguf.SentencePieceVocab(model_dir) if from_model_file else gguf.LlamaHfVocab(model_dir)
    except RuntimeError as exc:  # the gguf package raises this when sentencepiece is missing
        raise MissingDependencyError(f"reading {model_dir}/tokenizer.model needs sentencepiece ({exc})",
                                     "pip install sentencepiece") from exc
    tokens, scores, types = [], [], []
    for text, score, kind in base.all_tokens():
        tokens.append(text)
        scores.append(score)
        types.append(kind)
    _check_size(max([len(tokens) - 1, *tok.added_tokens_decoder]) + 1, vocab_size, model_dir)
    _pad(tokens, types, scores, vocab_size)
    _type_added_tokens(tok, tokens, types, scores)
    return GGUFVocab("llama", tokens, types, scores=scores)


def _type_added_tokens(tok, tokens: list, types: list[int], scores: list[float] | None) -> None:
    """Added tokens as llama.cpp expects them: CONTROL when special (matched whole, never split,
    like ``<|im_start|>``), USER_DEFINED otherwise (matched whole, printed as text)."""
    import gguf

    for i, added in tok.added_tokens_decoder.items():
        if i >= len(tokens):
            continue
        tokens[i] = added.content if isinstance(tokens[i], str) else added.content.encode("utf-8")
        types[i] = gguf.TokenType.CONTROL if added.special else gguf.TokenType.USER_DEFINED
        if scores is not None:
            scores[i] = -1000.0


def _check_size(n_tokens: int, vocab_size: int, model_dir: Path | str) -> None:
    if n_tokens > vocab_size:
        raise ModelLoadError(f"{model_dir}: the tokenizer has {n_tokens} tokens, the model only {vocab_size} "
                             "embedding rows", "check that tokenizer and weights belong to the same model")
