"""GGUF files: export a safetensors model (:mod:`.export`, tokenizer in :mod:`.vocab`), edit a GGUF
source in place (:mod:`.edit`), quantize (:mod:`.quant`) and call llama.cpp when it is installed
(:mod:`.llama_cpp`)."""
