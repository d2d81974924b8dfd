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
import signal
import sys
import threading
from collections.abc import Sequence

from forge_hub import __version__
from forge_hub.cli.options import flag_name
from forge_hub.errors import ForgeHubError

EPILOG = "Models: a Hub id (owner/name), a local Hugging Face folder, or a .gguf file."


class Terminated(BaseException):
    """SIGTERM, raised where the process is, so every staged output is cleaned up as on Ctrl-C."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        _settings_from_config_and_environment(parser, argv)
    except ForgeHubError as exc:
        return _report(exc)
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    main_thread = threading.current_thread() is threading.main_thread()  # signals go to the main thread only
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        return args.handler(args) or 0
    except ForgeHubError as exc:
        return _report(exc)
    except KeyboardInterrupt:
        print("interrupted; no output was left behind", file=sys.stderr)
        return 130
    except Terminated:
        print("terminated; no output was left behind", file=sys.stderr)
        return 143
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _report(exc: ForgeHubError) -> int:
    message, hint = exc.render(flag_name)
    print(f"error: {message}", file=sys.stderr)
    if hint:
        print(f"  fix: {hint}", file=sys.stderr)
    return exc.exit_code


def _settings_from_config_and_environment(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """``--config FILE`` and ``FORGE_HUB_*`` variables become the defaults of the command in ``argv``."""
    from forge_hub.cli.config import argv_config, read_config, settings_from_file_and_environment, use_as_defaults

    commands = command_parsers(parser)
    name = next((item for item in argv if not item.startswith("-")), None)
    if name not in commands or not any(a.dest == "config" for a in commands[name]._actions):  # noqa: SLF001
        return
    path = argv_config(argv)
    config = read_config(path) if path else None
    use_as_defaults(commands[name], settings_from_file_and_environment(commands[name], config, path or "environment"))


def command_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser of each command (``run``, ``apply``, ...)."""
    for action in parser._actions:  # noqa: SLF001 - argparse exposes its subcommands no other way
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            return dict(action.choices)
    return {}


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
    for name in ("compute", "apply", "run", "evaluate", "chat", "push", "gguf", "space"):
        sub.choices[name].add_argument(
            "--config", metavar="FILE.toml", help="read any of these settings from a TOML file (`n_prompts = 256`); "
            "FORGE_HUB_<SETTING> environment variables override it, flags override both")
    return parser
