"""Tiny random models for the GGUF tests, with a byte-level BPE tokenizer.

GGUF stores byte-level BPE and SentencePiece vocabularies, not the word-level one of helpers.tiny, so
these models get a GPT-2 style BPE trained here on its words (a second, fast).

Weights are multiples of 2**-10 below 2 in magnitude: F16 holds them exactly and Gemma's stored
``1 + weight`` is exact in float32, so an F16 GGUF must reproduce the safetensors model's logits
bit for bit, and any difference is a conversion bug, not rounding.

Sizes follow what transformers' GGUF loader assumes where a GGUF file has no key for a setting:
Qwen3's head_dim (128) and Gemma 3's query_pre_attn_scalar (256, with head_dim 256).
"""

from __future__ import annotations

from pathlib import Path

import torch

from helpers.tiny import CHAT_TEMPLATE, SPECIALS, WORDS

BPE_VOCAB = 384
FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma3")
PROMPT = "write a tutorial to make a cake for my friend"


def make_bpe_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=BPE_VOCAB, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([" ".join(WORDS)] * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", chat_template=CHAT_TEMPLATE)


def gguf_config(family: str, tied: bool = False, layers: int = 2, hidden: int = 32, intermediate: int = 64):
    import transformers as tf

    common = dict(vocab_size=BPE_VOCAB, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=tied,
                  pad_token_id=0, bos_token_id=2, eos_token_id=3, rms_norm_eps=1e-6)
    if family == "llama":
        return tf.LlamaConfig(**common, rope_theta=50000.0)
    if family == "mistral":
        return tf.MistralConfig(**common, sliding_window=None)
    if family == "qwen2":
        return tf.Qwen2Config(**common)
    if family == "qwen3":
        return tf.Qwen3Config(**common, head_dim=128)
    if family == "gemma3":
        return tf.Gemma3TextConfig(**common, head_dim=256, query_pre_attn_scalar=256, sliding_window=64)
    if family == "qwen2_moe":
        return tf.Qwen2MoeConfig(**common, moe_intermediate_size=32, shared_expert_intermediate_size=32,
                                 num_experts=4, num_experts_per_tok=2, decoder_sparse_step=1)
    raise ValueError(family)


def make_gguf_model(family: str, seed: int = 0, std: float = 0.2, **kwargs):
    """A random model whose weights F16 holds exactly (norm gains randomised too). A wider model
    wants a smaller ``std`` (0.2 * sqrt(32 / hidden) keeps 32-wide's signal sizes)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(gguf_config(family, **kwargs), dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.3 * torch.randn_like(p))
            else:
                p.normal_(0.0, std)
            p.copy_((p * 1024).round().clamp(-2047, 2047) / 1024)
    model.generation_config.pad_token_id = 0
    return model.eval()


def save_gguf_model(family: str, folder: Path, **kwargs) -> Path:
    model = make_gguf_model(family, **kwargs)
    model.save_pretrained(folder)
    make_bpe_tokenizer().save_pretrained(folder)
    return folder


def prompt_ids(tokenizer=None) -> torch.Tensor:
    tokenizer = tokenizer or make_bpe_tokenizer()
    return torch.tensor([tokenizer(PROMPT).input_ids])


def greedy(model, ids: torch.Tensor, new_tokens: int = 12) -> list[int]:
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, do_sample=False,
                             pad_token_id=0, eos_token_id=None)
    return out[0, ids.shape[1]:].tolist()


def load_gguf(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()


def llama_cpp_greedy(path: Path, ids: list[int], new_tokens: int = 8) -> list[int]:
    """Greedy tokens from llama.cpp (llama-cpp-python, one thread) after the prompt ``ids``."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(path), n_threads=1, n_ctx=max(64, len(ids) + new_tokens + 8), verbose=False)
    got = []
    for token in llm.generate(ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0, reset=True):
        got.append(token)
        if len(got) == new_tokens:
            break
    llm.close()
    return got


def llama_cpp_logits(path: Path, ids: list[int]) -> torch.Tensor:
    """llama.cpp's logits at every position of ``ids`` ([tokens, vocab]), one thread."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(path), n_threads=1, n_ctx=64, logits_all=True, verbose=False)
    llm.eval(ids)
    scores = torch.tensor(llm.scores[:len(ids)])
    llm.close()
    return scores


def hide_llama_cpp(monkeypatch, tmp_path: Path) -> None:
    """A PATH without llama-quantize, no $LLAMA_CPP_DIR and no llama-cpp-python, whatever this machine has."""
    import importlib.util

    empty = tmp_path / "empty-bin"
    empty.mkdir(exist_ok=True)
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv("LLAMA_CPP_DIR", raising=False)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llama_cpp" else real(name, *a))


def assert_same_metadata(source, edited, extra_tensors: int = 0):
    """Every key, in order, with the same type and the same bytes (paths or open readers)."""
    import gguf

    a = source if isinstance(source, gguf.GGUFReader) else gguf.GGUFReader(source)
    b = edited if isinstance(edited, gguf.GGUFReader) else gguf.GGUFReader(edited)
    assert list(a.fields) == list(b.fields)
    for key, fa in a.fields.items():
        fb = b.fields[key]
        if key == "GGUF.tensor_count":
            assert fb.contents() == fa.contents() + extra_tensors
            continue
        assert fa.types == fb.types, key
        assert [p.tobytes() for p in fa.parts] == [p.tobytes() for p in fb.parts], key  # byte for byte
