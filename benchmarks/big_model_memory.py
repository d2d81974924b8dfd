"""Peak memory of each step on a model larger than the memory it is allowed (``--max-memory``).

    python benchmarks/big_model_memory.py [--layers 24] [--hidden 1024] [--cap 200MB]

Builds a random Llama-shaped float32 checkpoint (about 1.1 GB with the defaults; nothing is
downloaded), then runs each step as a user would, through the forge-hub command, once capped
with ``--max-memory cpu=CAP`` (accelerate reads the layers that do not fit from the checkpoint's
files as the model runs) and once without a cap:

- compute: ``forge-hub compute`` (activations, directions, layer scores)
- search: ``forge-hub run --optimize --worker --trials 3`` (directions again, then 3 trials that
  edit the weights in place, wherever they live)
- apply: ``forge-hub apply`` (streams the shards; never loads the model)
- evaluate: ``forge-hub evaluate`` (the original and the edited model, answers and KL)

Each step runs in a fresh process that has already imported torch, transformers and forge-hub;
the figures are above that interpreter. "peak RSS" is the kernel's high-water mark (it counts
checkpoint pages mapped while they are read); "peak private" is the largest anonymous memory
seen (sampled every 10 ms): what the process itself holds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, threading, time
import torch, transformers, forge_hub.cli, forge_hub.pipeline  # the interpreter, not the work measured

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

peak_private = [0]
def sample():
    while True:
        peak_private[0] = max(peak_private[0], status("RssAnon:"))
        time.sleep(0.01)

open("/proc/self/clear_refs", "w").write("5")  # restart the peak-RSS counter here
base, base_private = status("VmRSS:"), status("RssAnon:")
threading.Thread(target=sample, daemon=True).start()
start = time.perf_counter()
code = forge_hub.cli.main(sys.argv[1:])
print(json.dumps({"code": code, "seconds": time.perf_counter() - start, "base": base,
                  "peak": status("VmHWM:") - base, "private": max(peak_private[0], status("RssAnon:")) - base_private}))
"""


def build(folder: Path, hidden: int, layers: int) -> int:
    """A random float32 Llama with the test tokenizer's vocabulary; returns its size in bytes."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    sys.path.insert(0, str(ROOT / "tests"))
    from helpers.tiny import VOCAB, make_tokenizer

    config = LlamaConfig(hidden_size=hidden, intermediate_size=hidden * 11 // 4, num_hidden_layers=layers,
                         num_attention_heads=hidden // 64, num_key_value_heads=hidden // 256, vocab_size=VOCAB,
                         max_position_embeddings=256, pad_token_id=0, bos_token_id=2, eos_token_id=3)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02) if p.ndim > 1 else p.fill_(1.0)
    model.save_pretrained(folder, max_shard_size="200MB")
    make_tokenizer().save_pretrained(folder)
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def prompts(folder: Path) -> tuple[Path, Path]:
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers.tiny import HARMFUL, HARMLESS

    harmful, harmless = folder / "harmful.txt", folder / "harmless.txt"
    harmful.write_text("\n".join(f"{p} now {i}" for p in HARMFUL for i in ("please", "today", "fast", "here")))
    harmless.write_text("\n".join(f"{p} now {i}" for p in HARMLESS for i in ("please", "today", "fast", "here")))
    return harmful, harmless


def step(argv: list[str]) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, *argv], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"forge-hub {' '.join(argv)} failed:\n{done.stderr[-3000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    if figures["code"] != 0:
        raise SystemExit(f"forge-hub {' '.join(argv)} exited with {figures['code']}:\n{done.stderr[-3000:]}")
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--cap", default="200MB", help="the memory the capped runs allow (--max-memory cpu=CAP)")
    parser.add_argument("--work", help="folder for the checkpoint and outputs (default: a temporary one)")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="forge-hub-memory-bench-"))
    try:
        model = work / "model"
        size = build(model, args.hidden, args.layers) if not model.exists() else \
            sum(p.stat().st_size for p in model.glob("*.safetensors"))
        harmful, harmless = prompts(work)
        common = ["--harmful", str(harmful), "--harmless", str(harmless), "--batch-size", "8"]
        print(f"checkpoint: {size / 1e9:.2f} GB float32 ({args.layers} layers, hidden {args.hidden}); "
              f"capped runs: --max-memory cpu={args.cap}")
        rows = []
        for label, cap in (("capped", ["--max-memory", f"cpu={args.cap}", "--offload-folder", str(work / "off")]),
                           ("uncapped", [])):
            out = work / label
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            steps = {
                "compute": ["compute", str(model), *common, *cap, "--out", str(out / "dirs")],
                "search (3 trials)": ["run", str(model), *common, *cap, "--optimize", "--worker", "--trials", "3",
                                      "--search-tokens", "8", "--study", str(out / "study.db")],
                "apply": ["apply", str(model), "--directions", str(out / "dirs"), "--out", str(out / "edited")],
                "evaluate": ["evaluate", str(out / "edited"), "--reference", str(model), *cap, "--harmful",
                             str(harmful), "--harmless", str(harmless), "--max-new-tokens", "8", "--batch-size", "8",
                             "--out", str(out / "results.json")],
            }
            for name, argv in steps.items():
                figures = step(argv)
                rows.append((label, name, figures))
                print(f"  {label:9s} {name:18s} {figures['seconds']:7.1f} s   peak RSS {figures['peak'] / 1e6:7.0f} MB"
                      f"   peak private {figures['private'] / 1e6:7.0f} MB", flush=True)
        base = rows[0][2]["base"]
        print(f"\n(interpreter with torch, transformers and forge-hub imported: {base / 1e6:.0f} MB, not counted)")
        print("\n| step | cap | seconds | peak RSS | peak private | private / model size |")
        print("|---|---|---|---|---|---|")
        for label, name, f in rows:
            print(f"| {name} | {args.cap if label == 'capped' else 'none'} | {f['seconds']:.0f} | "
                  f"{f['peak'] / 1e6:.0f} MB | {f['private'] / 1e6:.0f} MB | {f['private'] / size:.2f} |")
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
