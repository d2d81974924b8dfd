"""Stage 4, outputs: writing the edited model, whole or not at all.

- :mod:`.staging`: atomic output folders;
- :mod:`.checkpoint`: a safetensors checkpoint edited shard by shard;
- :mod:`.gguf`: GGUF export, in-place editing of a GGUF source, quantization, llama.cpp.
"""
