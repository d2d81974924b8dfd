"""The Gradio Space's server side (the widgets are in ``space/app.py``).

- :mod:`.checks`: what a hosted app decides before it runs anything (model, size, GPU time, target repo);
- :mod:`.jobs`: the GPU-bound steps as picklable ZeroGPU jobs;
- :mod:`.workspace`: one private folder per browser session;
- :mod:`.bundle`: the Space folder as the Hub receives it, and its push.
"""
