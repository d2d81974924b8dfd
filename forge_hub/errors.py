"""Named exceptions, so callers (the CLI, the Space, scripts) can catch one family.

Every error carries a ``hint``: the fix, in one sentence. The CLI prints the message and the
hint and exits with a non-zero code; it never shows a traceback for these.
"""

from __future__ import annotations


class ForgeHubError(Exception):
    """Base class for every error forge-hub raises on purpose."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  fix: {self.hint}" if self.hint else self.message


class PromptError(ForgeHubError):
    """A prompt list is missing, unreadable, malformed or empty."""


class ModelLoadError(ForgeHubError):
    """A model or tokenizer could not be loaded, or lacks something forge-hub needs."""


class UnsupportedArchitectureError(ForgeHubError):
    """forge-hub does not know where this architecture writes into the residual stream."""


class DirectionMismatchError(ForgeHubError):
    """A saved direction artifact does not fit the model it is applied to."""


class OutputError(ForgeHubError):
    """The output folder cannot be written (exists, no space, not writable)."""


class HubError(ForgeHubError):
    """The Hugging Face Hub refused or could not take an upload (no token, no access, offline)."""


class MissingDependencyError(ForgeHubError):
    """An optional package is needed for the requested feature."""
