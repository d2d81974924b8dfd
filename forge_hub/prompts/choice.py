"""From what a user asked for to the two prompt lists, with a record of what was read.

The CLI, the Space and library callers describe their prompts the same way (a
:class:`PromptChoice`), and get the same :class:`PromptLists` back: the harmful and harmless
instructions, and for each side the source that was actually read, which the direction artifact
and the model card then name.

Example::

    lists = load_prompt_lists(PromptChoice(harmful="my_harmful.txt", n_prompts=128))
    print(lists.harmful_source, len(lists.harmful))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from forge_hub.errors import PromptError
from forge_hub.prompts.dataset import SIDES, default_dataset, load_side
from forge_hub.prompts.sources import load_prompts

# What compute and run read when no prompts are named: lists shipped inside the package, so the
# default works offline and says exactly what it read (see datasets_builders/data/SOURCES.md).
DEFAULT_SOURCES = {"harmful": "builtin:advbench", "harmless": "builtin:alpaca"}
# Prompts per side drawn from a prompt dataset or the default lists when no sample size is given.
DEFAULT_SAMPLE = 512


@dataclass
class PromptChoice:
    """Which prompts to use: a source per side (file, folder, dataset spec, ``builtin:...``), and for
    the sides not given, the prompt dataset's ``split`` (optionally only some ``sources``)."""

    harmful: str | None = None
    harmless: str | None = None
    dataset: str | None = None  # Hub id or built folder for the sides not given; None: the shipped lists
    split: str = "train"
    sources: Sequence[str] | None = None
    column: str | None = None
    n_prompts: int | None = None  # sample at most this many per side
    seed: int = 0


@dataclass
class PromptLists:
    """The two lists and, for each, the source that was read."""

    harmful: list[str]
    harmless: list[str]
    harmful_source: str | None = None
    harmless_source: str | None = None

    def source(self, side: str) -> str | None:
        return self.harmful_source if side == "harmful" else self.harmless_source

    def summary(self) -> str:
        """``128 harmful (advbench.txt), 128 harmless (...)``: one line for a log."""
        return (f"{len(self.harmful)} harmful ({self.harmful_source or 'given list'}), "
                f"{len(self.harmless)} harmless ({self.harmless_source or 'given list'})")


def load_prompt_lists(choice: PromptChoice) -> PromptLists:
    """Read both sides. A side given as a source is read whole (sampled to ``n_prompts``); the others
    come from the named prompt dataset, else from the lists forge-hub ships (:data:`DEFAULT_SOURCES`),
    ``DEFAULT_SAMPLE`` prompts each unless ``n_prompts`` says otherwise."""
    lists: dict[str, list[str]] = {}
    origins: dict[str, str] = {}
    dataset = choice.dataset or default_dataset()
    if choice.sources and not dataset:
        raise PromptError("prompt sources select rows of a prompt dataset, and none is named",
                          "name one with {prompts_dataset}, or leave out {sources}", input="sources")
    n = choice.n_prompts if choice.n_prompts is not None else DEFAULT_SAMPLE
    for side in SIDES:
        given = getattr(choice, side)
        if given:
            lists[side] = load_prompts(given, column=choice.column, limit=choice.n_prompts, seed=choice.seed)
            origins[side] = given
        elif dataset:
            lists[side] = load_side(side, dataset=dataset, split=choice.split, n=n, seed=choice.seed,
                                    sources=choice.sources)
            origins[side] = f"{dataset} {side}/{choice.split}"
        else:  # the shipped lists, split by a hash of each prompt as the prompt dataset is: the test part
            # is never read for directions
            from datasets_builders.forge_prompts import split_of

            part = [p for p in load_prompts(DEFAULT_SOURCES[side]) if split_of(p) == choice.split]
            lists[side] = load_prompts(part, limit=n, seed=choice.seed)
            origins[side] = f"{DEFAULT_SOURCES[side]} {choice.split}"
    return PromptLists(lists["harmful"], lists["harmless"], origins["harmful"], origins["harmless"])
