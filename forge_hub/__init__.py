"""forge-hub: remove refusal behaviour from open-weight chat models by abliteration, measure what it
cost, and publish the result on the Hugging Face Hub.

The pipeline, one stage per subpackage::

    prompts -> model (activations) -> abliterate (directions, edit) -> outputs -> evaluation -> hub

The public API, for scripts and notebooks (the CLI and the Space call the same functions)::

    import forge_hub as fh

    model, tokenizer, source = fh.load_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    prompts = fh.load_prompt_lists(fh.PromptChoice(harmful="harmful.txt", harmless="harmless.txt"))
    directions = fh.compute(model, tokenizer, source, prompts)
    fh.apply(source.id, directions, "smollm2-abliterated")
    edited, _, _ = fh.load_model("smollm2-abliterated")
    results = fh.evaluate(edited, tokenizer, held_out_harmful, held_out_harmless, reference=model)
    fh.push("smollm2-abliterated", "me/smollm2-abliterated", dry_run=True)

Names are imported on first use, so ``import forge_hub`` stays light (no torch until needed).
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("forge-hub")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"

# public name -> the module that defines it
_API = {
    "load_model": "forge_hub.model.loading",
    "PromptChoice": "forge_hub.prompts.choice",
    "PromptLists": "forge_hub.prompts.choice",
    "load_prompt_lists": "forge_hub.prompts.choice",
    "load_prompts": "forge_hub.prompts.sources",
    "ComputeOptions": "forge_hub.pipeline",
    "compute": "forge_hub.pipeline",
    "optimize": "forge_hub.pipeline",
    "apply": "forge_hub.pipeline",
    "evaluate": "forge_hub.pipeline",
    "push": "forge_hub.pipeline",
    "RefusalDirections": "forge_hub.abliterate.directions",
    "SearchOptions": "forge_hub.abliterate.search",
    "EvaluationSettings": "forge_hub.evaluation.compare",
    "AblationSettings": "forge_hub.schema",
    "DirectionMetadata": "forge_hub.schema",
    "EvaluationResults": "forge_hub.schema",
    "ForgeHubError": "forge_hub.errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'forge_hub' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
