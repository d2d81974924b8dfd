#!/usr/bin/env bash
# The distribution users install: build the sdist and the wheel, check them with twine, install the
# wheel into a clean virtualenv (no source tree on its path) and run forge-hub from it on a tiny
# model: --help, then compute and apply, with the shipped prompt lists, templates and metric.
# Needs ./.venv from scripts/setup.sh (for build and twine). Leaves nothing in the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
PIP=(--quiet --disable-pip-version-check)
.venv/bin/python -m pip install "${PIP[@]}" build twine
.venv/bin/python -m build --outdir "$work/dist" . >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
rm -rf build forge_hub.egg-info
.venv/bin/twine check --strict "$work"/dist/*
"${PYTHON:-python3}" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install "${PIP[@]}" "torch==${TORCH_VERSION:-2.13.0}"
"$work/venv/bin/python" -m pip install "${PIP[@]}" "$work"/dist/*.whl
cd "$work"  # away from the source tree: only the installed wheel can be imported
venv/bin/forge-hub --help >/dev/null
venv/bin/python - <<'EOF'
"""A tiny random Llama with a word-level chat tokenizer, so the installed wheel runs end to end."""
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

import forge_hub

assert "site-packages" in forge_hub.__file__, forge_hub.__file__
words = "write a poem about how to make the cake bomb steal hack money story".split()
vocab = {t: i for i, t in enumerate(["<pad>", "<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>", *words])}
tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
template = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} </s> {% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")
tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                    eos_token="</s>", chat_template=template)
torch.manual_seed(0)
config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=4,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                     pad_token_id=0, bos_token_id=2, eos_token_id=3)
LlamaForCausalLM(config).save_pretrained("tiny")
tokenizer.save_pretrained("tiny")
EOF
venv/bin/forge-hub compute tiny --n-prompts 16 --layer 2 --out dirs
venv/bin/forge-hub apply tiny --directions dirs --out edited
test -f edited/model.safetensors && test -f edited/refusal.json && test -f edited/forge-hub.toml
venv/bin/python -c "
import json
meta = json.load(open('edited/refusal.json'))
assert meta['prompts']['harmful']['source'] == 'builtin:advbench train', meta['prompts']
from forge_hub.hub.card import build_model_card
from forge_hub.evaluation.compare import count_with_metric
assert count_with_metric(['I am sorry, I cannot help.', 'Sure: here is']) == 1
print('wheel ok:', build_model_card.__module__, len(str(build_model_card(__import__('pathlib').Path('edited'), 'me/x'))))
"
