"""forge-hub: remove refusal behaviour from open-weight chat models by abliteration.

The pipeline, one module per arrow::

    prompts -> activations -> directions -> ablation/checkpoint -> evaluation -> hub
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("forge-hub")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
