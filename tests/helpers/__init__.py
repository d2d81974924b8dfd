"""Test helpers: tiny random models (:mod:`.tiny`), GGUF files (:mod:`.gguf_models`), a fake Hub
(:mod:`.hub_server`), prompt source files (:mod:`.prompt_sources`), abliterated folders (:mod:`.abliterated_models`)."""
