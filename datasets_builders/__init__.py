"""Builders for the datasets forge-hub publishes: :mod:`.forge_prompts` (the refusal prompts) and its card."""
