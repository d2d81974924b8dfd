"""Hugging Face folder -> GGUF: files that transformers (and llama.cpp, where installed) run like the original."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.gguf_models import (
    FAMILIES,
    greedy,
    hide_llama_cpp,
    llama_cpp_greedy,
    llama_cpp_logits,
    load_gguf,
    make_bpe_tokenizer,
    make_gguf_model,
    prompt_ids,
    save_gguf_model,
)
from helpers.tiny import CHAT_TEMPLATE, make_model, make_tokenizer

from forge_hub.cli import flag_name, main
from forge_hub.errors import (
    GGUFTypeError,
    LlamaCppError,
    MissingDependencyError,
    ModelLoadError,
    OutputError,
    UnsupportedArchitectureError,
)
from forge_hub.outputs.gguf.export import export_gguf, rope_pairs
from forge_hub.outputs.gguf.llama_cpp import find_quantizer

gguf = pytest.importorskip("gguf")

GGUF_ARCH = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gemma3": "gemma3"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Every family written as F16 and Q8_0 once for the module: {family: (folder, {type: path})}."""
    root = tmp_path_factory.mktemp("gguf")
    result = {}
    for family in FAMILIES:
        folder = save_gguf_model(family, root / f"tiny-{family}", tied=family == "qwen3")
        paths = export_gguf(folder, root / "out", ["F16", "Q8_0"], progress=False)
        result[family] = (folder, dict(zip(["F16", "Q8_0"], paths, strict=True)))
    return result


def field(reader, key):
    f = reader.get_field(key)
    return None if f is None else f.contents()


@pytest.mark.parametrize("family", FAMILIES)
def test_f16_runs_exactly_like_the_safetensors_model(exported, family):
    folder, paths = exported[family]
    assert paths["F16"].name == f"tiny-{family}-F16.gguf"
    original = make_gguf_model(family, tied=family == "qwen3")
    ids = prompt_ids()
    converted = load_gguf(paths["F16"])
    with torch.no_grad():
        expected, got = original(ids).logits, converted(ids).logits
    # the weights are exact in F16; only the float32 rounding of rms_norm_eps (1e-6) differs
    assert torch.allclose(got, expected, atol=1e-4, rtol=0), (got - expected).abs().max()
    assert greedy(converted, ids) == greedy(original, ids)


@pytest.mark.parametrize("family", FAMILIES)
def test_q8_0_runs_nearly_like_the_safetensors_model(exported, family):
    _, paths = exported[family]
    original = make_gguf_model(family, tied=family == "qwen3")
    ids = prompt_ids()
    converted = load_gguf(paths["Q8_0"])
    with torch.no_grad():
        expected, got = original(ids).logits[0], converted(ids).logits[0]
    # Q8_0 rounds each weight by up to 1/254 of its block's range; random tiny models amplify that to a
    # few percent of the logits (measured 1-3% on these five), so 5% and 80% of greedy tokens leave margin
    assert (got - expected).norm() < 0.05 * expected.norm()
    assert (got.argmax(-1) == expected.argmax(-1)).float().mean() >= 0.8
    reader = gguf.GGUFReader(paths["Q8_0"])
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_output.weight"] == types["blk.1.ffn_down.weight"] == "Q8_0"
    assert types["blk.0.attn_norm.weight"] == "F32"  # norms stay F32
    assert field(reader, "general.file_type") == gguf.LlamaFileType.MOSTLY_Q8_0


@pytest.mark.parametrize("family", FAMILIES)
def test_metadata_tokenizer_and_chat_template(exported, family):
    folder, paths = exported[family]
    config = make_gguf_model(family, tied=family == "qwen3").config
    reader = gguf.GGUFReader(paths["F16"])
    arch = GGUF_ARCH[family]
    assert field(reader, "general.architecture") == arch
    assert field(reader, "general.name") == f"tiny-{family}"
    assert field(reader, f"{arch}.block_count") == 2
    assert field(reader, f"{arch}.embedding_length") == 32
    assert field(reader, f"{arch}.feed_forward_length") == 64
    assert field(reader, f"{arch}.attention.head_count") == 4
    assert field(reader, f"{arch}.attention.head_count_kv") == 2
    assert field(reader, f"{arch}.attention.key_length") == (getattr(config, "head_dim", None) or 8)
    assert field(reader, f"{arch}.attention.layer_norm_rms_epsilon") == pytest.approx(1e-6, rel=1e-6)
    rope = config.rope_parameters.get("full_attention", config.rope_parameters)["rope_theta"]
    assert field(reader, f"{arch}.rope.freq_base") == pytest.approx(rope)
    if family == "gemma3":
        assert field(reader, "gemma3.attention.sliding_window") == 64
        assert field(reader, "gemma3.rope.freq_base_swa") == pytest.approx(10000.0)
    if arch == "llama":
        assert field(reader, "llama.rope.dimension_count") == 8
        assert field(reader, "llama.vocab_size") == 384
    tok = make_bpe_tokenizer()
    assert field(reader, "tokenizer.ggml.model") == "gpt2"
    assert field(reader, "tokenizer.ggml.pre") == "gpt-2"
    tokens = field(reader, "tokenizer.ggml.tokens")
    assert tokens == [t for t, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1])]
    types = field(reader, "tokenizer.ggml.token_type")
    assert types[5] == gguf.TokenType.CONTROL and types[100] == gguf.TokenType.NORMAL  # <|user|>, a plain token
    assert len(field(reader, "tokenizer.ggml.merges")) > 0
    special = ("bos_token_id", "eos_token_id", "padding_token_id", "unknown_token_id")
    assert [field(reader, f"tokenizer.ggml.{key}") for key in special] == [2, 3, 0, 1]
    assert field(reader, "tokenizer.ggml.add_bos_token") is False  # this tokenizer adds no BOS to text
    assert field(reader, "tokenizer.chat_template") == CHAT_TEMPLATE
    names = {t.name for t in reader.tensors}
    assert ("output.weight" in names) == (family != "qwen3")  # tied embeddings: no separate head


def test_tokenizer_round_trips_through_transformers(exported):
    from transformers import AutoTokenizer

    _, paths = exported["llama"]
    original = make_bpe_tokenizer()
    loaded = AutoTokenizer.from_pretrained(paths["F16"].parent, gguf_file=paths["F16"].name)
    text = "write a story about my dog, 12345 times!"
    assert loaded(text).input_ids == original(text).input_ids
    messages = [{"role": "user", "content": "write a poem"}]
    assert (loaded.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            == original.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))


def test_sentencepiece_tokenizer_round_trips(tmp_path):
    """Gemma-style SentencePiece (tokenizer.model, byte fallback, a user-defined turn marker)."""
    spm = pytest.importorskip("sentencepiece")
    from helpers.tiny import WORDS
    from transformers import AutoTokenizer, GemmaTokenizer

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join([" ".join(WORDS)] * 20 + list(WORDS)))
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "sp"), vocab_size=320,
                                   model_type="bpe", byte_fallback=True, pad_id=0, unk_id=1, bos_id=2, eos_id=3,
                                   user_defined_symbols=["<start_of_turn>", "<end_of_turn>"], minloglevel=2)
    staging = tmp_path / "sp-tokenizer"
    staging.mkdir()
    (staging / "tokenizer.model").write_bytes((tmp_path / "sp.model").read_bytes())
    tok = GemmaTokenizer.from_pretrained(staging)
    tok.chat_template = CHAT_TEMPLATE
    folder = tmp_path / "gemma-sp"
    model = make_gguf_model("gemma3")
    model.resize_token_embeddings(len(tok))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    (folder / "tokenizer.model").write_bytes((tmp_path / "sp.model").read_bytes())
    (path,) = export_gguf(folder, tmp_path / "out", ["F16"], progress=False)
    reader = gguf.GGUFReader(path)
    assert field(reader, "tokenizer.ggml.model") == "llama" and field(reader, "tokenizer.ggml.pre") is None
    assert field(reader, "tokenizer.ggml.add_space_prefix") is False  # Gemma never prepends a space
    types = field(reader, "tokenizer.ggml.token_type")
    tokens = field(reader, "tokenizer.ggml.tokens")
    assert len(tokens) == len(field(reader, "tokenizer.ggml.scores")) == model.config.vocab_size
    assert types[tokens.index("<0x41>")] == gguf.TokenType.BYTE
    assert types[tokens.index("<start_of_turn>")] == gguf.TokenType.USER_DEFINED
    loaded = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    for text in ("write a cake", "hello world 123", "<start_of_turn>user write a poem"):
        assert loaded(text).input_ids == tok(text).input_ids, text
    ids = torch.tensor([tok("write a tutorial to make a cake").input_ids])
    with torch.no_grad():
        assert torch.allclose(load_gguf(path)(ids).logits, model(ids).logits, atol=1e-4, rtol=0)


def test_llama_q_and_k_rows_are_permuted_for_pairwise_rope(exported):
    folder, paths = exported["llama"]
    model = make_gguf_model("llama")
    reader = gguf.GGUFReader(paths["F16"])
    stored = {t.name: t for t in reader.tensors}
    q = np.array(stored["blk.0.attn_q.weight"].data, dtype=np.float32)
    k = np.array(stored["blk.0.attn_k.weight"].data, dtype=np.float32)
    q_hf = model.model.layers[0].self_attn.q_proj.weight.detach()
    assert np.array_equal(q, rope_pairs(q_hf, 4).numpy())
    assert np.array_equal(k, rope_pairs(model.model.layers[0].self_attn.k_proj.weight.detach(), 2).numpy())
    # head 0: HF rows (0, 4) rotate together, llama.cpp rows (0, 1)
    assert np.array_equal(q[1], q_hf[4].numpy()) and np.array_equal(q[2], q_hf[1].numpy())
    v = np.array(stored["blk.0.attn_v.weight"].data, dtype=np.float32)
    assert np.array_equal(v, model.model.layers[0].self_attn.v_proj.weight.detach().numpy())  # V untouched


def test_gemma_norms_are_stored_plus_one(exported):
    _, paths = exported["gemma3"]
    model = make_gguf_model("gemma3")
    stored = {t.name: np.array(t.data) for t in gguf.GGUFReader(paths["F16"]).tensors}
    layer = model.model.layers[1]
    for gguf_name, norm in (("blk.1.attn_norm.weight", layer.input_layernorm),
                            ("blk.1.post_attention_norm.weight", layer.post_attention_layernorm),
                            ("blk.1.post_ffw_norm.weight", layer.post_feedforward_layernorm),
                            ("blk.1.attn_q_norm.weight", layer.self_attn.q_norm),
                            ("output_norm.weight", model.model.norm)):
        assert np.array_equal(stored[gguf_name], norm.weight.detach().numpy() + 1), gguf_name


def test_qwen2_attention_biases_stay_f32(exported):
    _, paths = exported["qwen2"]
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(paths["Q8_0"]).tensors}
    assert types["blk.0.attn_q.bias"] == types["blk.0.attn_k.bias"] == "F32"


@pytest.mark.parametrize("type_name", ["BF16", "Q5_1", "Q5_0", "Q4_1", "Q4_0", "F32"])
def test_every_numpy_type_loads(tmp_path, type_name):
    folder = save_gguf_model("llama", tmp_path / "m")
    (path,) = export_gguf(folder, tmp_path / "out", [type_name], progress=False)
    reader = gguf.GGUFReader(path)
    assert {t.tensor_type.name for t in reader.tensors if t.name.endswith("attn_output.weight")} == {type_name}
    original, converted = make_gguf_model("llama"), load_gguf(path)
    # stored exactly as the gguf package quantizes the original weight
    stored = next(t for t in reader.tensors if t.name == "blk.1.attn_output.weight")
    weight = original.model.layers[1].self_attn.o_proj.weight.detach().numpy()
    qtype = gguf.GGMLQuantizationType[type_name]
    assert np.array_equal(gguf.quants.dequantize(stored.data, qtype),
                          gguf.quants.dequantize(gguf.quants.quantize(weight, qtype), qtype))
    ids = prompt_ids()
    with torch.no_grad():
        expected, got = original(ids).logits, converted(ids).logits
    # relative logit error measured on these random models: BF16 ~1%, Q5 ~15-20%, Q4 ~25-40%
    tolerance = {"F32": 1e-5, "BF16": 0.03, "Q5_1": 0.3, "Q5_0": 0.3, "Q4_1": 0.55, "Q4_0": 0.55}[type_name]
    assert (got - expected).norm() < tolerance * expected.norm()


def test_rows_that_are_not_whole_blocks_fall_back_to_f16(tmp_path, capsys):
    folder = save_gguf_model("llama", tmp_path / "m", intermediate=48)  # ffn_down rows: 48 values, not 32k
    (path,) = export_gguf(folder, tmp_path / "out", ["Q8_0"], progress=False)
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(path).tensors}
    assert types["blk.0.ffn_down.weight"] == "F16" and types["blk.0.ffn_up.weight"] == "Q8_0"
    assert "stored as F16: blk.0.ffn_down.weight" in capsys.readouterr().err
    original, converted = make_gguf_model("llama", intermediate=48), load_gguf(path)
    ids = prompt_ids()
    with torch.no_grad():
        assert (converted(ids).logits.argmax(-1) == original(ids).logits.argmax(-1)).float().mean() >= 0.8


def test_bf16_checkpoint_and_sharded_folder(tmp_path):
    model = make_gguf_model("qwen2").to(torch.bfloat16)
    folder = tmp_path / "bf16"
    model.save_pretrained(folder, max_shard_size="20KB")
    make_bpe_tokenizer().save_pretrained(folder)
    assert len(list(folder.glob("*.safetensors"))) > 1
    (path,) = export_gguf(folder, tmp_path / "out", ["BF16"], name="custom", progress=False)
    assert path == tmp_path / "out" / "custom-BF16.gguf"
    from transformers import AutoModelForCausalLM

    ids = prompt_ids()
    with torch.no_grad():  # both in float32 (a bf16 model would also round its RoPE frequencies)
        expected = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)(ids).logits
        got = load_gguf(path)(ids).logits
    assert torch.allclose(got, expected, atol=1e-4, rtol=0)  # bf16 -> BF16 is lossless


# --- errors: before any work, and nothing left behind ------------------------------------------

def test_unknown_type_fails_before_any_work(tmp_path):
    folder = save_gguf_model("llama", tmp_path / "m")
    with pytest.raises(GGUFTypeError, match="unknown GGUF type 'Q9_9'") as info:
        export_gguf(folder, tmp_path / "out", ["F16", "Q9_9"], progress=False)
    assert "Q8_0" in info.value.hint and "Q4_K_M" in info.value.hint
    assert not (tmp_path / "out").exists()


def test_unsupported_architecture_names_the_supported_ones(tmp_path):
    folder = tmp_path / "moe"
    make_model("qwen2_moe").save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    with pytest.raises(UnsupportedArchitectureError, match="qwen2_moe") as info:
        export_gguf(folder, tmp_path / "out", ["F16"], progress=False)
    assert "Llama, Mistral, Qwen2, Qwen3, Gemma 3" in info.value.message
    assert "--llama-cpp" in info.value.render(flag_name)[1] and "LLAMA_CPP_DIR" in info.value.hint
    assert not (tmp_path / "out").exists()


def test_word_level_tokenizer_is_refused_clearly(tmp_path):
    folder = tmp_path / "wl"
    make_model("llama").save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    with pytest.raises(ModelLoadError, match="tokenizer kind 'WordLevel'"):
        export_gguf(folder, tmp_path / "out", ["F16"], progress=False)
    assert not (tmp_path / "out").exists()


def test_existing_file_is_kept_unless_overwrite(tmp_path):
    folder = save_gguf_model("llama", tmp_path / "m")
    (path,) = export_gguf(folder, tmp_path / "out", ["F16"], progress=False)
    path.write_bytes(b"old")
    with pytest.raises(OutputError, match="already holds m-F16.gguf"):
        export_gguf(folder, tmp_path / "out", ["F16"], progress=False)
    assert path.read_bytes() == b"old"
    export_gguf(folder, tmp_path / "out", ["F16"], progress=False, overwrite=True)
    assert path.read_bytes()[:4] == b"GGUF"


# --- k-quants and other architectures through llama.cpp ----------------------------------------

def fake_program(path: Path, log: Path, exit_code: int = 0, output_arg: int = 2) -> Path:
    """An executable that records its argv as JSON and copies its first argument to its output argument."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"""#!{sys.executable}
import json, shutil, sys
with open({str(log)!r}, "a") as f:
    f.write(json.dumps(sys.argv) + "\\n")
if {exit_code}:
    print("ggml: something went wrong in the fake tool", file=sys.stderr)
    sys.exit({exit_code})
shutil.copyfile(sys.argv[1], sys.argv[{output_arg}])
""")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


@pytest.fixture
def no_quantizer(monkeypatch, tmp_path):
    """A PATH without llama-quantize and no llama-cpp-python, whatever this machine has."""
    hide_llama_cpp(monkeypatch, tmp_path)


def test_k_quant_without_llama_cpp_names_what_to_install(tmp_path, no_quantizer):
    folder = save_gguf_model("llama", tmp_path / "m")
    assert find_quantizer() is None
    with pytest.raises(MissingDependencyError, match="Q4_K_M needs llama.cpp's quantizer") as info:
        export_gguf(folder, tmp_path / "out", ["F16", "Q4_K_M"], progress=False)
    assert "pip install llama-cpp-python" in info.value.hint and "--llama-cpp" in info.value.render(flag_name)[1]
    assert not (tmp_path / "out").exists()


def test_k_quant_runs_llama_quantize_on_an_f16_file(tmp_path, no_quantizer, monkeypatch):
    folder = save_gguf_model("llama", tmp_path / "m")
    log = tmp_path / "argv.jsonl"
    program = fake_program(tmp_path / "bin" / "llama-quantize", log)
    monkeypatch.setenv("PATH", f"{program.parent}{os.pathsep}{os.environ['PATH']}")
    paths = export_gguf(folder, tmp_path / "out", ["Q4_K_M", "Q6_K"], progress=False)
    assert [p.name for p in paths] == ["m-Q4_K_M.gguf", "m-Q6_K.gguf"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["m-Q4_K_M.gguf", "m-Q6_K.gguf"]  # no F16, no temp
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [c[3] for c in calls] == ["Q4_K_M", "Q6_K"]
    for argv in calls:
        assert argv[0] == str(program) and argv[1].endswith("m-F16.gguf") and argv[2].endswith(f"m-{argv[3]}.gguf")
        assert Path(argv[1]).parent.parent == tmp_path / "out"  # staged beside the output, then renamed
        assert int(argv[4]) >= 1
    # the quantizer got a real F16 GGUF (the fake copies it through)
    reader = gguf.GGUFReader(paths[0])
    assert field(reader, "general.file_type") == gguf.LlamaFileType.MOSTLY_F16


def test_llama_cpp_checkout_build_is_preferred(tmp_path, no_quantizer):
    folder = save_gguf_model("llama", tmp_path / "m")
    log = tmp_path / "argv.jsonl"
    checkout = tmp_path / "llama.cpp"
    program = fake_program(checkout / "build" / "bin" / "llama-quantize", log)
    paths = export_gguf(folder, tmp_path / "out", ["F16", "Q5_K_M"], llama_cpp=checkout, progress=False)
    assert [p.name for p in paths] == ["m-F16.gguf", "m-Q5_K_M.gguf"]
    (argv,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert argv[0] == str(program) and argv[3] == "Q5_K_M"
    assert paths[1].read_bytes() == paths[0].read_bytes()  # the F16 file was the quantizer's input


def test_failing_quantizer_leaves_nothing(tmp_path, no_quantizer, monkeypatch):
    folder = save_gguf_model("llama", tmp_path / "m")
    program = fake_program(tmp_path / "bin" / "llama-quantize", tmp_path / "argv.jsonl", exit_code=3)
    monkeypatch.setenv("PATH", str(program.parent))
    with pytest.raises(LlamaCppError, match="exit code 3") as info:
        export_gguf(folder, tmp_path / "out", ["F16", "Q4_K_M"], progress=False)
    assert "something went wrong in the fake tool" in info.value.message
    assert not (tmp_path / "out").exists()  # not even the F16 file that was complete
    existing = tmp_path / "kept"
    existing.mkdir()
    (existing / "other.txt").write_text("x")
    with pytest.raises(LlamaCppError):
        export_gguf(folder, existing, ["Q4_K_M"], progress=False)
    assert [p.name for p in existing.iterdir()] == ["other.txt"]


def test_other_architectures_go_through_llama_cpps_converter(tmp_path, no_quantizer):
    folder = tmp_path / "moe"
    make_model("qwen2_moe").save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    checkout = tmp_path / "llama.cpp"
    log = tmp_path / "argv.jsonl"
    # a stand-in for convert_hf_to_gguf.py: records argv, writes --outfile
    script = checkout / "convert_hf_to_gguf.py"
    checkout.mkdir()
    script.write_text(f"""import json, sys
with open({str(log)!r}, "a") as f:
    f.write(json.dumps(sys.argv) + "\\n")
out = sys.argv[sys.argv.index("--outfile") + 1]
open(out, "wb").write(b"GGUF" + sys.argv[sys.argv.index("--outtype") + 1].encode())
""")
    paths = export_gguf(folder, tmp_path / "out", ["F16", "Q8_0"], llama_cpp=checkout, progress=False)
    assert [p.read_bytes() for p in paths] == [b"GGUFf16", b"GGUFq8_0"]
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [c[0] for c in calls] == [str(script)] * 2
    assert calls[0][1:] == [str(folder.resolve()), "--outfile", calls[0][3], "--outtype", "f16"]
    with pytest.raises(MissingDependencyError, match="Q4_0"):  # needs llama-quantize after the converter
        export_gguf(folder, tmp_path / "out2", ["Q4_0"], llama_cpp=checkout, progress=False)
    with pytest.raises(LlamaCppError, match="not a llama.cpp checkout"):
        export_gguf(folder, tmp_path / "out3", ["F16"], llama_cpp=tmp_path, progress=False)
    assert not (tmp_path / "out2").exists() and not (tmp_path / "out3").exists()


# --- the command -----------------------------------------------------------------------------------

def test_cli_writes_files_and_prints_sizes(tmp_path, capsys):
    folder = save_gguf_model("qwen2", tmp_path / "m")
    assert main(["gguf", str(folder), "--types", "f16,Q8_0", "--out", str(tmp_path / "out"), "--name", "q"]) == 0
    out = capsys.readouterr().out
    assert "q-F16.gguf" in out and "q-Q8_0.gguf" in out and "kB" in out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["q-F16.gguf", "q-Q8_0.gguf"]


def test_cli_errors_are_message_and_fix(tmp_path, capsys):
    folder = save_gguf_model("qwen2", tmp_path / "m")
    assert main(["gguf", str(folder), "--types", "Q3", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "error: unknown GGUF type 'Q3'" in err and "fix: use any of" in err
    with pytest.raises(SystemExit) as info:
        main(["gguf", "--help"])
    assert info.value.code == 0
    assert "--llama-cpp" in capsys.readouterr().out


# --- llama.cpp itself, where llama-cpp-python is installed -----------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_llama_cpp_gives_the_same_greedy_tokens(exported, family):
    pytest.importorskip("llama_cpp")
    _, paths = exported[family]
    ids = prompt_ids()
    expected = greedy(make_gguf_model(family, tied=family == "qwen3"), ids, new_tokens=8)
    assert llama_cpp_greedy(paths["F16"], ids[0].tolist(), new_tokens=8) == expected


# k-quant files made by llama.cpp's quantizer itself. The models are 256 wide, so their rows are whole
# 256-value k-quant blocks (at 32 wide llama.cpp would fall back to Q5_0/Q5_1/Q8_0 for every tensor), with
# weights scaled to the width (std 0.2 * sqrt(32/256)) so their signals are as large as the 32-wide models'.
K_QUANTS = {"Q4_K_M": "Q4_K", "Q5_K_M": "Q5_K", "Q6_K": "Q6_K"}  # file type -> its base tensor type
K_FAMILIES = ("llama", "qwen2", "gemma3")
WIDE = dict(hidden=256, intermediate=512, std=0.0707)


@pytest.fixture(scope="module")
def k_quant_exports(tmp_path_factory):
    """{family: {file type: path}}, written by export_gguf through llama-cpp-python."""
    pytest.importorskip("llama_cpp")
    root = tmp_path_factory.mktemp("k-quants")
    result = {}
    for family in K_FAMILIES:
        folder = save_gguf_model(family, root / f"wide-{family}", **WIDE)
        paths = export_gguf(folder, root / "out", list(K_QUANTS), progress=False)
        result[family] = dict(zip(K_QUANTS, paths, strict=True))
    return result


@pytest.mark.parametrize("family", K_FAMILIES)
@pytest.mark.parametrize("type_name", K_QUANTS)
def test_llama_cpp_runs_k_quant_exports_like_transformers(k_quant_exports, family, type_name):
    path = k_quant_exports[family][type_name]
    reader = gguf.GGUFReader(path)
    assert field(reader, "general.file_type") == gguf.LlamaFileType[f"MOSTLY_{type_name}"]
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_output.weight"] == types["blk.1.attn_q.weight"] == K_QUANTS[type_name]
    assert types["blk.0.attn_norm.weight"] == "F32"
    if type_name == "Q4_K_M":  # llama.cpp's mix: more bits where they matter most
        assert types["blk.1.ffn_down.weight"] == types["blk.1.attn_v.weight"] == "Q6_K"
    ids = prompt_ids()
    original, converted = make_gguf_model(family, **WIDE), load_gguf(path)  # transformers dequantizes k-quants

    # greedy tokens: llama.cpp generates 12, transformers reads the same file and scores each step
    tokens = llama_cpp_greedy(path, ids[0].tolist(), new_tokens=12)
    with torch.no_grad():
        steps = converted(torch.tensor([ids[0].tolist() + tokens])).logits[0, ids.shape[1] - 1:-1]
    gap = (steps.max(-1).values - steps[torch.arange(len(tokens)), tokens]) / steps.std(-1)
    # every token is transformers' greedy choice too, but for near ties that llama.cpp's 8-bit activations in
    # k-quant dot products can flip (random models have many): measured at most one step in 12, 0.004-0.05 std
    assert (gap < 0.1).all() and (gap > 0).sum() <= 2, gap

    # the logits at every prompt position: as transformers' of the same file, up to those 8-bit activations
    # (measured 2-4%; F16 files agree to 0.1%), and as the original model's as far as each type's rounding allows
    # (measured Q4_K_M 20-32%, Q5_K_M 10-17%, Q6_K 5-9%, next tokens agreeing at 55-70%, 80-85%, 85-95%)
    with torch.no_grad():
        expected, same_file = original(ids).logits[0], converted(ids).logits[0]
    got = llama_cpp_logits(path, ids[0].tolist())
    assert (got - same_file).norm() < 0.06 * same_file.norm()
    tolerance, agree = {"Q4_K_M": (0.45, 0.45), "Q5_K_M": (0.25, 0.7), "Q6_K": (0.13, 0.75)}[type_name]
    assert (got - expected).norm() < tolerance * expected.norm()
    assert (got.argmax(-1) == expected.argmax(-1)).float().mean() >= agree
