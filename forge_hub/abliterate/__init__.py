"""Stage 3, abliteration: refusal directions, where a model writes into its residual stream, and the
edit that stops it writing them.

- :mod:`.directions`: directions from residual statistics, and the artifact that carries them;
- :mod:`.architecture`: which tensors write into the residual stream, per family;
- :mod:`.ablation`: the projection math on bare tensors (no files, no models);
- :mod:`.plan`: settings -> which tensor gets which direction at which strength;
- :mod:`.live`: the plan baked into a loaded model, or as forward hooks;
- :mod:`.selection`: the measured layer choice; :mod:`.search`: the parameter search;
- :mod:`.layer_plot`: the per-layer picture of an artifact.
"""
