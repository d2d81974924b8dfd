"""The ``forge-hub`` command line: one module per command group, thin wrappers over
:mod:`forge_hub.pipeline`; options shared by several commands live in :mod:`.options`.

    forge-hub compute | apply | run      abliterate (:mod:`.abliterate`)
    forge-hub evaluate | chat            measure, talk (:mod:`.evaluate`)
    forge-hub push | gguf                publish (:mod:`.push`, :mod:`.gguf`)
    forge-hub datasets build | push      the prompt dataset (:mod:`.datasets`)
    forge-hub space                      the Gradio Space (:mod:`.space`)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from forge_hub import __version__
from forge_hub.errors import ForgeHubError

EPILOG = "Models: a Hub id (owner/name), a local Hugging Face folder, or a .gguf file."


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return args.handler(args) or 0
    except ForgeHubError as exc:
        message, hint = exc.render(flag_name)
        print(f"error: {message}", file=sys.stderr)
        if hint:
            print(f"  fix: {hint}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted; no output was left behind", file=sys.stderr)
        return 130


# Library parameters whose flag is not simply their name with dashes.
FLAGS = {"winsorize_quantile": "--winsorize", "held_out_fraction": "--held-out", "gguf_types": "--gguf",
         "gguf_files": "--gguf-file", "folder": "DIR"}


def flag_name(parameter: str) -> str:
    """How the command line spells a library parameter that an error names: ``exist_ok`` -> ``--exist-ok``."""
    return FLAGS.get(parameter) or "--" + parameter.replace("_", "-")


def build_parser() -> argparse.ArgumentParser:
    from forge_hub.cli.abliterate import add_abliterate_parsers
    from forge_hub.cli.datasets import add_datasets_parser
    from forge_hub.cli.evaluate import add_evaluate_parsers
    from forge_hub.cli.gguf import add_gguf_parser
    from forge_hub.cli.push import add_push_parser
    from forge_hub.cli.space import add_space_parser

    parser = argparse.ArgumentParser(prog="forge-hub", description="Remove refusal behaviour from chat models by "
                                     "abliteration, measure it and publish it.", epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"forge-hub {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    add_abliterate_parsers(sub)
    add_evaluate_parsers(sub)
    add_datasets_parser(sub)
    add_push_parser(sub)
    add_gguf_parser(sub)
    add_space_parser(sub)
    return parser
