"""Every flag of a command from a TOML file (``--config FILE``) or a ``FORGE_HUB_*`` environment
variable, and the effective settings of a run written back as TOML.

Precedence, lowest first: forge-hub's defaults, the ``--config`` file, ``FORGE_HUB_<FLAG>``
environment variables, flags on the command line. Keys are the flags' names without the dashes
(``n_prompts`` or ``n-prompts``), the model included (``model = "org/name"``). A run writes the
settings it actually used to ``forge-hub.toml`` in its output, and ``forge-hub run --config
forge-hub.toml`` runs it again with exactly those settings::

    # forge-hub.toml
    model = "HuggingFaceTB/SmolLM2-135M-Instruct"
    out = "smollm2-abliterated"
    n_prompts = 256
    optimize = true
    trials = 60
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from forge_hub.errors import SettingsError
from forge_hub.schema import CONFIG_FILE, load_toml, to_toml

ENV_PREFIX = "FORGE_HUB_"
# Not settings of a run: where its own config comes from, and the command-line-only switches.
NOT_SETTINGS = {"config", "handler", "help"}
# Settings about where and how to publish or write, not about the model: read from a config file,
# but not written into the effective settings an output documents.
NOT_RECORDED = {"overwrite", "push_to", "private", "exist_ok", "token_env", "gguf", "gguf_repo"}


def read_config(path: str | Path) -> dict[str, Any]:
    """The TOML file as a flat table; a missing or malformed file is a :class:`SettingsError`."""
    path = Path(path).expanduser()
    try:
        data = load_toml(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SettingsError(f"config file {path} does not exist", "check the path given to {config}",
                            input="config") from exc
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # TOMLDecodeError is a ValueError
        raise SettingsError(f"config file {path} is not valid TOML: {exc}", "fix the file (https://toml.io)",
                            input="config") from exc
    nested = [key for key, value in data.items() if isinstance(value, dict)]
    if nested:
        raise SettingsError(f"config file {path}: tables ({', '.join(nested)}) are not settings",
                            "write every setting as a top-level `name = value` line", input="config")
    return data


def settings_from_file_and_environment(command: argparse.ArgumentParser, config: Mapping[str, Any] | None,
                                       origin: str, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Defaults for ``command``'s flags from the config file, then the environment (which wins)."""
    actions = _actions(command)
    values: dict[str, Any] = {}
    for key, value in (config or {}).items():
        dest = key.replace("-", "_")
        if dest not in actions:
            raise SettingsError(f"{origin}: {key!r} is not a setting of this command",
                                f"use one of {', '.join(sorted(actions))}", input="config")
        values[dest] = _checked(actions[dest], value, f"{origin}: {key}")
    env = os.environ if environ is None else environ
    for dest, action in actions.items():
        raw = env.get(ENV_PREFIX + dest.upper())
        if raw is not None and raw != "":
            values[dest] = _checked(action, _from_text(action, raw), f"${ENV_PREFIX}{dest.upper()}")
    return values


def use_as_defaults(command: argparse.ArgumentParser, values: Mapping[str, Any]) -> None:
    """Make ``values`` the command's defaults; a required flag or a positional given this way is no
    longer required on the command line."""
    actions = _actions(command)
    for dest in values:
        action = actions[dest]
        action.required = False
        if not action.option_strings and action.nargs is None:
            action.nargs = "?"
    command.set_defaults(**values)


def effective_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The values a run used for every flag of its command (given or defaulted), ``None`` left out;
    a study URL's password is masked (the file is shared with the model)."""
    settings = {dest: value for dest, value in vars(args).items()
                if value is not None and dest not in NOT_SETTINGS | NOT_RECORDED and not callable(value)}
    if "://" in str(settings.get("study", "")):
        from forge_hub.abliterate.study import StudyLocation

        settings["study"] = StudyLocation.parse(settings["study"]).describe()
    return settings


def config_file_text(command: str, args: argparse.Namespace) -> str:
    """``forge-hub.toml`` for an output: the settings that made it, ready for ``--config``."""
    from forge_hub import __version__

    return to_toml(effective_settings(args), header=(
        f"The settings `forge-hub {command}` (forge-hub {__version__}) wrote this folder with.\n"
        f"Run them again with: forge-hub {command} --config {CONFIG_FILE} --out ANOTHER_FOLDER"))


def _actions(command: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in command._actions  # noqa: SLF001 - argparse exposes no public list
            if a.dest not in NOT_SETTINGS and not isinstance(a, argparse._HelpAction)}  # noqa: SLF001


def _from_text(action: argparse.Action, raw: str) -> Any:
    """An environment variable's text as the flag would take it."""
    if action.nargs == 0:  # a switch
        return raw.strip().lower() in ("1", "true", "yes", "on")
    return raw


def _checked(action: argparse.Action, value: Any, where: str) -> Any:
    """``value`` converted and checked as the command line would check it."""
    if action.nargs == 0:
        if not isinstance(value, bool):
            raise SettingsError(f"{where} must be true or false, not {value!r}", "write true or false",
                                input="config")
        return value
    if isinstance(value, str) and action.type is not None:
        try:
            value = action.type(value)
        except (TypeError, ValueError) as exc:
            raise SettingsError(f"{where}: {value!r} is not a valid value ({exc})", "fix the value",
                                input="config") from exc
    elif action.type in (int, float):
        whole = action.type is float or not isinstance(value, float) or value.is_integer()
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not whole:
            raise SettingsError(f"{where} must be {'an integer' if action.type is int else 'a number'}, "
                                f"not {value!r}", "write a number", input="config")
        value = action.type(value)
    elif isinstance(value, list):  # e.g. positions = [-1, -2], which the flag takes as "-1,-2"
        value = ",".join(map(str, value))
    if action.choices is not None and value not in action.choices:
        raise SettingsError(f"{where}: {value!r} is not one of {', '.join(map(str, action.choices))}",
                            "pick one of those", input="config")
    return value


def argv_config(argv: Sequence[str]) -> str | None:
    """The ``--config`` value in ``argv``, if any (read before the command is parsed)."""
    for i, item in enumerate(argv):
        if item == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if item.startswith("--config="):
            return item.split("=", 1)[1]
    return None
