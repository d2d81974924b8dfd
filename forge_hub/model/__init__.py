"""Stage 2, the model: loading it (Hub id, folder or GGUF file), talking to it through its own chat
template, and reading its residual stream.

- :mod:`.loading`: model + tokenizer from a Hub id, a local folder or a ``.gguf`` file;
- :mod:`.chat`: prompts through the chat template, batched; streamed chat answers;
- :mod:`.activations`: per-layer residual statistics of a prompt list.
"""
