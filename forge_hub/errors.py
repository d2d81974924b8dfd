"""Every error forge-hub raises on purpose, as named classes a caller can catch.

An error carries three fields:

- ``message``: what is wrong, naming the file or value at fault;
- ``hint``: the fix, in one sentence;
- ``input``: the input at fault (a parameter name such as ``"out"`` or ``"layer"``), when there is one.

The library speaks in parameter names, never in command-line flags or page fields: a hint that
needs to name an input writes it as ``{out}``, and each face spells it its own way when it shows
the error (``--out`` on the command line, “Output folder” on the Space, ```out``` for a library
caller). :meth:`ForgeHubError.render` does that substitution.

The CLI prints the message and the fix and exits with :attr:`ForgeHubError.exit_code`; it never
shows a traceback for these.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

# Parameter names a hint may name as ``{name}``; a face that spells one of them differently says so.
_PLACEHOLDER = re.compile(r"\{([a-z][a-z0-9_]*)\}")

Names = Mapping[str, str] | Callable[[str], str]


def library_name(name: str) -> str:
    """How an input is named to a library caller: the parameter itself."""
    return f"`{name}`"


def spell(text: str, names: Names | None = None) -> str:
    """``text`` with every ``{name}`` spelled by ``names`` (a mapping or a function); names it does
    not know are spelled as parameters. Errors, notes and advice name inputs this way."""
    def one(match: re.Match[str]) -> str:
        key = match.group(1)
        if callable(names):
            return names(key)
        return (names or {}).get(key) or library_name(key)

    return _PLACEHOLDER.sub(one, text)


class ForgeHubError(Exception):
    """Base class for every error forge-hub raises on purpose."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None, *, input: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.input = input

    def render(self, names: Names | None = None) -> tuple[str, str | None]:
        """(message, hint) with every ``{name}`` spelled by ``names`` (see :func:`spell`)."""
        return spell(self.message, names), spell(self.hint, names) if self.hint else None

    def __str__(self) -> str:
        message, hint = self.render()
        return f"{message}\n  fix: {hint}" if hint else message


class PromptError(ForgeHubError):
    """A prompt list is missing, unreadable, malformed or empty."""


class ModelLoadError(ForgeHubError):
    """A model or tokenizer could not be loaded, or lacks something forge-hub needs."""


class UnsupportedArchitectureError(ForgeHubError):
    """forge-hub does not know where this architecture writes into the residual stream."""


class DirectionMismatchError(ForgeHubError):
    """A saved direction artifact does not fit the model it is applied to."""


class SettingsError(ForgeHubError, ValueError):
    """A setting is out of range or contradicts another (a layer past the last, a strength of NaN, ...)."""


class OutputError(ForgeHubError):
    """The output folder cannot be written (exists, no space, not writable)."""


class HubError(ForgeHubError):
    """The Hugging Face Hub refused or could not take an upload (no token, no access, offline)."""


class MissingDependencyError(ForgeHubError):
    """An optional package is needed for the requested feature."""


class GGUFTypeError(ForgeHubError):
    """A GGUF tensor or file type forge-hub cannot read or write."""


class LlamaCppError(ForgeHubError):
    """llama.cpp (its quantizer or its converter) is missing or failed."""
