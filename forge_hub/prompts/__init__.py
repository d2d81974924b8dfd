"""Stage 1, prompts: the harmful and harmless instruction lists every measurement starts from.

- :mod:`.sources`: one prompt source (a file, a folder, a dataset, a shipped list) as a clean list;
- :mod:`.dataset`: one side of the prompt dataset (a Hub id or a folder built by ``forge-hub datasets``).
"""
