"""Publishing on the Hugging Face Hub: models with their card and GGUF files, the prompt dataset.

- :mod:`.push`: check, stage and upload an abliterated model;
- :mod:`.card`: its model card (templates in ``templates/``);
- :mod:`.datasets`: build and publish the prompt dataset;
- :mod:`.common`: repo-id checks, the token, and the Hub's errors as forge-hub errors.
"""
