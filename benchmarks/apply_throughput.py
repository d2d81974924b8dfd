"""Streaming apply speed and memory on a multi-shard checkpoint.

Targets: apply runs at >= 0.8x the speed of a plain copy of the same files, and its peak memory
stays <= 1.1x the largest shard plus the interpreter (Python + torch + forge-hub imported).

    python benchmarks/apply_throughput.py [--hidden 2048] [--layers 16] [--shard-size 500MB]

Builds a random Llama-shaped bf16 checkpoint in a temporary folder (nothing is downloaded).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, os, shutil, sys, time
from pathlib import Path
import torch
from transformers import AutoConfig  # part of the interpreter's start-up, not of the work measured
from forge_hub.outputs.checkpoint import apply_to_checkpoint
from forge_hub.abliterate.directions import RefusalDirections
from forge_hub.schema import AblationSettings

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

def evict(folder):  # drop the files from the page cache, as after a fresh download or a reboot
    for p in folder.iterdir():
        with open(p, "rb") as f:
            os.fsync(f.fileno())
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)

def sync(folder):
    for p in folder.iterdir():
        with open(p, "rb") as f:
            os.fsync(f.fileno())

mode, cold, src, out = sys.argv[1], sys.argv[2] == "cold", Path(sys.argv[3]), Path(sys.argv[4])
artifact = RefusalDirections.load(src.parent / "dirs")
AutoConfig.from_pretrained(src)
if cold:
    evict(src)
open("/proc/self/clear_refs", "w").write("5")  # restart the peak-RSS counter here
base = status("VmRSS:")
t = time.perf_counter()
if mode == "apply":
    apply_to_checkpoint(src, out, artifact, AblationSettings(), progress=False)
else:
    shutil.copytree(src, out)
if cold:
    sync(out)
seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "peak": status("VmHWM:"), "base": base}))
"""


def build_checkpoint(folder: Path, hidden: int, layers: int, shard_size: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(hidden_size=hidden, intermediate_size=hidden * 4, num_hidden_layers=layers,
                         num_attention_heads=max(1, hidden // 128), num_key_value_heads=max(1, hidden // 512),
                         vocab_size=32000, tie_word_embeddings=False)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    model.save_pretrained(folder, max_shard_size=shard_size)
    from forge_hub.abliterate.directions import RefusalDirections
    from forge_hub.schema import DirectionMetadata

    means = torch.randn(2, layers + 1, hidden)
    diff = means[0] - means[1]
    RefusalDirections(means[0], means[1], diff / diff.norm(dim=1, keepdim=True),
                      metadata=DirectionMetadata(selected_layer=layers // 2)).save(folder.parent / "dirs")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--shard-size", default="500MB")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="forge-hub-apply-bench-"))
    try:
        src = work / "model"
        build_checkpoint(src, args.hidden, args.layers, args.shard_size)
        shards = sorted(src.glob("*.safetensors"))
        total = sum(p.stat().st_size for p in shards)
        largest = max(p.stat().st_size for p in shards)
        print(f"checkpoint: {len(shards)} shards, {total / 1e9:.2f} GB, largest shard {largest / 1e6:.0f} MB")
        for cache in ("warm", "cold"):
            times: dict[str, list[float]] = {"copy": [], "apply": []}
            extra: list[int] = []
            base = 0
            for i in range(args.repeats):
                for mode in ("copy", "apply"):
                    target = work / f"{mode}{i}"
                    done = subprocess.run([sys.executable, "-c", CHILD, mode, cache, str(src), str(target)],
                                          check=True, capture_output=True, text=True)
                    figures = json.loads(done.stdout.strip().splitlines()[-1])
                    times[mode].append(figures["seconds"])
                    if mode == "apply":
                        extra.append(figures["peak"] - figures["base"])
                        base = figures["base"]
                    shutil.rmtree(target)
            copy_s, apply_s = min(times["copy"]), min(times["apply"])
            label = "page cache warm" if cache == "warm" else "source evicted from page cache, output fsynced"
            print(f"\n[{label}]")
            print(f"plain copy: {copy_s:.2f} s ({total / copy_s / 1e9:.2f} GB/s)")
            print(f"apply:      {apply_s:.2f} s ({total / apply_s / 1e9:.2f} GB/s)")
            print(f"speed ratio apply/copy: {copy_s / apply_s:.2f}x  (target >= 0.8x)")
            print(f"peak memory above the interpreter ({base / 1e6:.0f} MB): {max(extra) / 1e6:.0f} MB = "
                  f"{max(extra) / largest:.2f}x the largest shard (target <= 1.1x)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
