"""``forge-hub gguf``: write GGUF files of a Hugging Face model folder, one per type.

    forge-hub gguf MODEL_DIR --types F16,Q8_0,Q4_K_M --out DIR [--name NAME] [--llama-cpp PATH]

A thin wrapper over :func:`forge_hub.gguf_export.export_gguf`; registered by
:func:`forge_hub.cli.build_parser`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from forge_hub.outputs.gguf.llama_cpp import LLAMA_CPP_ENV
from forge_hub.outputs.gguf.quant import LLAMA_CPP_TYPES, NUMPY_TYPES


def add_gguf_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``gguf`` to the forge-hub command."""
    p = subparsers.add_parser(
        "gguf", help="write GGUF files (F16, Q8_0, Q4_K_M, ...) of a model folder",
        description="Convert a Hugging Face model folder (for example the output of `forge-hub apply`) to GGUF, "
        "one file per type, named NAME-TYPE.gguf. forge-hub converts Llama, Mistral, Qwen2, Qwen3 and Gemma 3 "
        "models itself; other architectures go through llama.cpp's convert_hf_to_gguf.py when --llama-cpp is given.",
        epilog=f"Types written by forge-hub: {', '.join(NUMPY_TYPES)}. Through llama.cpp's quantizer "
        f"(`pip install llama-cpp-python`, llama-quantize on PATH, or a built --llama-cpp checkout): "
        f"{', '.join(LLAMA_CPP_TYPES)}.")
    p.add_argument("model_dir", metavar="MODEL_DIR",
                   help="Hugging Face model folder (config.json, *.safetensors, tokenizer)")
    p.add_argument("--types", required=True, help="comma-separated GGUF types, e.g. F16,Q8_0,Q4_K_M")
    p.add_argument("--out", required=True, help="folder for the GGUF files (created if missing)")
    p.add_argument("--name", help="file name stem (default: the model folder's name)")
    p.add_argument("--llama-cpp", metavar="PATH", help=f"llama.cpp checkout, for its quantizer and converter "
                   f"(default: ${LLAMA_CPP_ENV})")
    p.add_argument("--overwrite", action="store_true", help="replace GGUF files of the same names")
    p.set_defaults(handler=_cmd_gguf)


def _cmd_gguf(args: argparse.Namespace) -> int:
    from forge_hub.outputs.gguf.export import export_gguf
    from forge_hub.units import human_size

    start = time.time()
    paths = export_gguf(Path(args.model_dir), Path(args.out), args.types.split(","), name=args.name,
                        llama_cpp=Path(args.llama_cpp) if args.llama_cpp else None, overwrite=args.overwrite)
    print(f"\n{'file':50s} {'size':>10s}")
    for path in paths:
        print(f"{path.name:50s} {human_size(path.stat().st_size):>10s}")
    print(f"\nwrote {len(paths)} GGUF file(s) to {Path(args.out).resolve()} in {time.time() - start:.0f}s")
    return 0


