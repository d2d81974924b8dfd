"""``forge-hub gguf``: write GGUF files of a Hugging Face model folder, one per type, and
optionally measure each one against the base model.

    forge-hub gguf MODEL_DIR --types F16,Q8_0,Q4_K_M --out DIR [--name NAME] [--llama-cpp PATH]
                   [--evaluate-against BASE [--harmful FILE --harmless FILE] [--xstest FILE]]

A thin wrapper over :func:`forge_hub.outputs.gguf.export.export_gguf` and
:func:`forge_hub.pipeline.check_gguf`; registered by :func:`forge_hub.cli.build_parser`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from forge_hub.cli.options import add_gguf_check_options, gguf_check_options
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
        f"{', '.join(LLAMA_CPP_TYPES)}. With --evaluate-against BASE each file is run as users will run it "
        "(llama-cpp-python when installed, else transformers) and measured beside BASE and MODEL_DIR: a 4-bit file "
        "can bring refusals back, and this shows it before the file is shared.")
    p.add_argument("model_dir", metavar="MODEL_DIR",
                   help="Hugging Face model folder (config.json, *.safetensors, tokenizer)")
    p.add_argument("--types", required=True, help="comma-separated GGUF types, e.g. F16,Q8_0,Q4_K_M")
    p.add_argument("--out", required=True, help="folder for the GGUF files (created if missing)")
    p.add_argument("--name", help="file name stem (default: the model folder's name)")
    p.add_argument("--llama-cpp", metavar="PATH", help=f"llama.cpp checkout, for its quantizer and converter "
                   f"(default: ${LLAMA_CPP_ENV})")
    p.add_argument("--overwrite", action="store_true", help="replace GGUF files of the same names")
    add_gguf_check_options(p, push=False)
    p.set_defaults(handler=_cmd_gguf)


def _cmd_gguf(args: argparse.Namespace) -> int:
    from forge_hub.outputs.gguf.export import export_gguf
    from forge_hub.units import human_size

    start = time.time()
    options = gguf_check_options(args, args.evaluate_against) if args.evaluate_against else None  # before the export
    paths = export_gguf(Path(args.model_dir), Path(args.out), args.types.split(","), name=args.name,
                        llama_cpp=Path(args.llama_cpp) if args.llama_cpp else None, overwrite=args.overwrite)
    print(f"\n{'file':50s} {'size':>10s}")
    for path in paths:
        print(f"{path.name:50s} {human_size(path.stat().st_size):>10s}")
    print(f"\nwrote {len(paths)} GGUF file(s) to {Path(args.out).resolve()} in {time.time() - start:.0f}s")
    if options is not None:
        from forge_hub.pipeline import check_gguf
        from forge_hub.schema import GGUF_CHECK_FILE

        out = Path(args.out) / GGUF_CHECK_FILE
        print_gguf_check(check_gguf(paths, options=options, unquantized=args.model_dir, out=out))
        print(f"wrote {out.resolve()}")
    return 0


def print_gguf_check(check) -> None:
    """The GGUF check as a table (the base and the unquantized model first), warnings on stderr."""
    n, m = check.prompts["harmful"].count, check.prompts["harmless"].count
    xstest = check.prompts.get("xstest")
    print(f"\nGGUF check on {n} harmful and {m} harmless prompts ({check.settings['max_new_tokens']} new tokens, "
          f"greedy, {check.settings['backend']} for the files):")
    header = f"  {'':44s} {'harmful refused':>16s} {'harmless refused':>17s}"
    header += f" {'XSTest refused':>15s}" if xstest else ""
    print(header + f" {'KL from base':>13s}")
    rows = [("base: " + Path(str(check.reference)).name, check.reference_scores, 0.0)]
    if check.unquantized_scores is not None:
        rows.append(("unquantized: " + Path(str(check.unquantized)).name, check.unquantized_scores,
                     check.unquantized_kl))
    rows += [(f.file, f.scores, f.kl_divergence) for f in check.files]
    for name, scores, kl in rows:
        line = f"  {name[:44]:44s} {f'{scores.refusals}/{n}':>16s} {f'{scores.over_refusals}/{m}':>17s}"
        if xstest:
            line += f" {f'{scores.xstest.refusals}/{scores.xstest.total}' if scores.xstest else '-':>15s}"
        print(line + f" {'-' if kl is None else f'{kl:.4f}':>13s}")
    for f in check.files:
        if f.warning:
            print(f"warning: {f.file} {f.warning}", file=sys.stderr)


