"""Measuring a model: answers, refusals, KL divergence, the results file and its report.

- :mod:`.generation`: greedy answers, first-token log-probabilities, KL, answer cross-entropy;
- :mod:`.refusals`: the documented refusal markers (also the ``evaluate`` metric in :mod:`.metrics`);
- :mod:`.compare`: a model measured against its original, as a results record;
- :mod:`.report`: those results as Markdown and as table rows.
"""
