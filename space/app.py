"""forge-hub as a Gradio app: compute a refusal direction, apply it, evaluate, chat, publish.

Thin on purpose: every step is a function of :mod:`forge_hub.webapp.steps` (which calls the same
pipeline as the CLI); this file only lays out widgets, formats results, turns forge-hub errors into
messages on the page (naming the page's own fields), and gives the steps its ``@spaces.GPU`` entry
points. Run it on your own machine with
``python space/app.py`` (CPU or CUDA; ZeroGPU's decorator then does nothing, and local model
folders are accepted too).

Each browser session works in its own folder (forge_hub.webapp.workspace), removed when the tab
closes. A visitor's Hugging Face token reaches only the push handler, as a ``gr.OAuthToken``
argument, and goes straight to the Hub: it is never stored, logged or shown.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os

import gradio as gr
import pandas as pd
import spaces  # ZeroGPU: imported before forge_hub (torch) initialises anything CUDA

from forge_hub.abliterate import layer_plot
from forge_hub.abliterate.search import DEFAULT_PICK_MAX_KL
from forge_hub.errors import ForgeHubError
from forge_hub.evaluation import report
from forge_hub.evaluation.capability import DEFAULT_TASKS
from forge_hub.evaluation.compare import FINAL_MAX_NEW_TOKENS
from forge_hub.webapp import checks, steps
from forge_hub.webapp.jobs import loaded_models
from forge_hub.webapp.workspace import SessionFolders

TITLE = "forge-hub: remove refusals from a chat model"
GPU_CONCURRENCY = int(os.environ.get("FORGE_HUB_SPACE_GPU_CONCURRENCY", "1"))
EXAMPLE_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
folders = SessionFolders()
folders.start_sweeper()  # sessions that vanish without closing their tab are removed on a timer too
# How the page names the inputs an error points at (the library names them by parameter).
FIELDS = {"model": "“Model”", "revision": "“Revision”", "dataset": "“Prompt dataset”",
          "prompts_dataset": "“Prompt dataset”", "sources": "“Sources”", "n_prompts": "“Prompts per side”",
          "layer": "“Layer”", "search_trials": "“Search trials”", "repo": "“Repository name”",
          "push_to": "“Repository name”", "exist_ok": "“Update the repo if it exists”", "gguf": "“GGUF variants”",
          "chat_template": "a model that has a chat template", "limit": "“Documents per task”",
          "tasks": "“Capability tasks”", "include_path": "“Capability tasks”"}


@spaces.GPU(duration=lambda job: job.seconds)
def on_gpu(job):
    """Holds a GPU for one job; the job says what to do and how long it needs."""
    return job.run()


@spaces.GPU(duration=lambda job: job.seconds)
def on_gpu_stream(job):
    """The same for a job whose results arrive piece by piece (chat answers, token by token)."""
    yield from job.stream()


def shows_errors(fn):
    """forge-hub's own errors become a message on the page: the problem, then the fix."""
    if inspect.isgeneratorfunction(fn):  # Gradio streams a generator's items: the wrapper must be one too
        @functools.wraps(fn)
        def streaming(*args, **kwargs):
            with _as_page_errors():
                yield from fn(*args, **kwargs)

        return streaming

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _as_page_errors():
            return fn(*args, **kwargs)

    return wrapper


@contextlib.contextmanager
def _as_page_errors():
    try:
        yield
    except ForgeHubError as exc:
        message, hint = exc.render(lambda name: FIELDS.get(name, f"the {name.replace('_', ' ')} setting"))
        fix = f"<br><b>Fix:</b> {hint}" if hint else ""
        raise gr.Error(f"{message}{fix}", title="Could not do that", print_exception=False) from exc


def _session(request: gr.Request):
    return folders.open(request.session_hash)


def _layer(text: str | float | None) -> float | None:
    """The layer field: empty means measure it; a number fixes it (a fraction < 1 of the depth)."""
    if text is None or not str(text).strip():
        return None
    try:
        value = float(text)
    except ValueError:
        raise gr.Error(f"Layer {text!r} is not a number. Leave it empty to measure the best layer, or give an "
                       "index such as 12 (or a fraction of the depth such as 0.6).", print_exception=False) from None
    if value < 0:
        raise gr.Error("The layer cannot be negative.", print_exception=False)
    return value


def _progress(progress):
    return lambda fraction, text: progress(fraction, desc=text)


@shows_errors
def compute_step(model_id: str, revision: str, dataset: str, sources: list[str], n_prompts: float, method: str,
                 layer: str | None, search_trials: float, request: gr.Request,
                 progress=gr.Progress(track_tqdm=True)):
    outcome = steps.compute_step(lambda: _session(request), model_id=model_id, revision=revision or None,
                                 dataset=dataset, sources=sources, n_prompts=int(n_prompts), method=method,
                                 layer=_layer(layer), search_trials=int(search_trials or 0), run=on_gpu,
                                 progress=_progress(progress))
    info, artifact = outcome.info, outcome.artifact
    meta = artifact.metadata
    rows = layer_plot.layer_rows(artifact)
    prompts = meta.prompts
    summary = (f"**{info.label}**: {meta.num_layers} layers, {info.size_label}. "
               f"Directions ({meta.method}) from {prompts.harmful.count} harmful and "
               f"{prompts.harmless.count} harmless prompts; {prompts.held_out_harmful.count} + "
               f"{prompts.held_out_harmless.count} held out to score layers. "
               f"**Chosen layer: {artifact.selected_layer:g}** ({meta.selection.how}).")
    if meta.search is not None:
        found, applied = meta.search, meta.apply_settings
        direction = ("each layer's own direction" if applied.per_layer or applied.direction_layer is None
                     else f"direction of layer {applied.direction_layer:.2f}")
        summary += (f"\n\n**Search**: {found.trials} trials scored on the held-out prompts; picked trial "
                    f"{found.trial}: {found.refusals:.0f}/{found.eval_prompts['harmful'].count} refused, "
                    f"first-token KL {found.kl:.3f} ({found.pick}): method {meta.method}, {direction}. "
                    "Apply uses these settings.")
    if any(r["chosen"] and r["separation"] == 0 for r in rows):
        gr.Warning(f"Layer {artifact.selected_layer:g} does not separate harmful from harmless prompts at all, so "
                   "its direction is zero and applying it changes nothing. Leave the layer empty to measure one.")
    table = pd.DataFrame(rows, columns=list(layer_plot.COLUMNS)).round(4)
    ws = _session(request)
    files = [str(ws.directions / "refusal.safetensors"), str(ws.directions / "refusal.json")]
    figure = layer_plot.layer_figure(artifact, title=f"{info.label}: harmful vs harmless, per layer")
    front = str(outcome.front_plot) if outcome.front_plot else None
    return summary, figure, table, files, gr.Image(value=front, visible=front is not None)


@shows_errors
def apply_step(request: gr.Request, progress=gr.Progress(track_tqdm=True)):
    artifact, result = steps.apply_step(_session(request), progress=_progress(progress))
    layers = result.edited_layers
    span = f"layers {layers[0]}–{layers[-1]}" if layers else "no layers"
    return (f"Edited **{result.edited_tensors} tensors** in {span} with the direction of layer "
            f"{artifact.selected_layer:g}; wrote {result.bytes_written / 1e6:,.1f} MB in "
            f"{result.shards} shard(s).")


@shows_errors
def evaluate_step(n_prompts: float, max_new_tokens: float, tasks: list[str] | None, task_limit: float | None,
                  request: gr.Request, progress=gr.Progress(track_tqdm=True)):
    ws = _session(request)
    result = steps.evaluate_step(ws, n_prompts=int(n_prompts), max_new_tokens=int(max_new_tokens), run=on_gpu,
                                 tasks=list(tasks or []), limit=int(task_limit or steps.DEFAULT_TASK_LIMIT),
                                 progress=_progress(progress))
    markdown = ws.path / "results.md"
    markdown.write_text(report.results_markdown(result), encoding="utf-8")
    headers, rows = report.comparison_rows(result)
    sample_headers, samples = report.sample_rows(result)
    r = result.results
    summary = (f"Harmful prompts refused: **{r.reference.refusals} → {r.model.refusals}** of "
               f"{result.harmful_count}; harmless refused: {r.reference.over_refusals} → {r.model.over_refusals} "
               f"of {result.harmless_count}; first-token KL {r.kl_divergence:.4f}."
               + (f" XSTest safe prompts refused: {r.reference.xstest.refusals} → {r.model.xstest.refusals} of "
                  f"{r.model.xstest.total}." if r.model.xstest and r.reference.xstest else ""))
    tasks = [f"{t.task} {t.metric} {t.reference.value:.3f} → {t.model.value:.3f}"
             for t in (r.capabilities or {}).values() if t.reference is not None]
    if tasks:
        summary += f" Capabilities ({result.settings['capability']['limit']} documents per task): " + "; ".join(tasks) \
            + "."
    return (summary, pd.DataFrame(rows, columns=headers), pd.DataFrame(samples, columns=sample_headers),
            [str(ws.results), str(markdown)])


def _as_messages(history: list[dict]) -> list[dict[str, str]]:
    """Gradio's chat history (content as a list of parts) as plain chat-template messages."""
    messages = []
    for message in history or []:
        content = message["content"]
        if isinstance(content, list):
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        messages.append({"role": message["role"], "content": content})
    return messages


@shows_errors
def chat_step(message: str, original: list[dict], abliterated: list[dict], max_new_tokens: float,
              request: gr.Request):
    turn = {"role": "user", "content": (message or "").strip()}
    before, after = _as_messages(original) + [turn], _as_messages(abliterated) + [turn]
    answers = steps.chat_step(_session(request), original=before, abliterated=after,
                              max_new_tokens=int(max_new_tokens), run_stream=on_gpu_stream)
    yield before, after, ""  # the question shows at once on both sides
    for answer_before, answer_after in answers:
        yield (before + [{"role": "assistant", "content": answer_before}],
               after + ([{"role": "assistant", "content": answer_after}] if answer_after is not None else []), "")


@shows_errors
def push_step(repo_name: str, private: bool, overwrite: bool, gguf_types: list[str], profile: gr.OAuthProfile | None,
              oauth_token: gr.OAuthToken | None, request: gr.Request, progress=gr.Progress(track_tqdm=True)):
    repo_id, result = steps.publish_step(_session(request), repo_name=repo_name, private=bool(private),
                                         update=bool(overwrite), gguf_types=gguf_types or [],
                                         token=_push_token(oauth_token),
                                         username=profile.username if profile else None, progress=_progress(progress))
    return _push_summary(result, repo_id)


def _push_token(oauth_token: gr.OAuthToken | None) -> str:
    """The visitor's own token from the login button. Run on your own machine and reachable from it
    alone, the machine's own login is the user's, so `hf auth login` / HF_TOKEN serve; an app that
    other machines can reach never pushes with it (Gradio's local login would hand it over)."""
    if checks.on_space():
        if oauth_token is None:
            raise gr.Error("Log in with Hugging Face first (the button above), then push again.",
                           title="Not logged in", print_exception=False)
        return oauth_token.token
    if not checks.local_files_allowed():
        raise gr.Error("This app can be reached from other machines, so it does not push with this machine's "
                       "Hugging Face login. Run it on 127.0.0.1 (the default), or set "
                       f"{checks.LOCAL_FILES_ENV}=1 if you are its only user.", title="Push is off",
                       print_exception=False)
    if oauth_token is not None:
        return oauth_token.token
    from huggingface_hub import get_token

    token = get_token()
    if token:
        return token
    raise gr.Error("No Hugging Face login on this machine. Run `hf auth login` (or set HF_TOKEN to a write "
                   "token) and restart the app.", title="Not logged in", print_exception=False)


def _push_summary(result, repo_id: str) -> str:
    """Links to what was created, the files sent, and anything the user should know."""
    lines = [f"Pushed to **[{repo_id}]({result.repo_url})** ([commit]({result.commit_url}))"]
    if result.gguf_repo_url:
        lines.append(f"GGUF files in **[{result.gguf_repo_id}]({result.gguf_repo_url})**")
    files = [*result.files, *result.gguf_files]
    lines.append(f"{len(files)} files: " + ", ".join(f"`{f.path}`" for f in files))
    lines += [f"Note: {note}" for note in result.notes]
    return "\n\n".join(lines)


def end_session(request: gr.Request) -> None:
    """The tab closed: drop the session's models and delete its folder."""
    loaded_models.drop(folders.path_for(request.session_hash))
    folders.remove(request.session_hash)


def _source_choices() -> list[str]:
    from datasets_builders.forge_prompts import SOURCES

    return sorted({s.family for s in SOURCES} | {s.name for s in SOURCES})


def _gguf_choices() -> list[str]:
    """forge-hub writes the numpy types itself; k-quants only where llama.cpp's quantizer is installed."""
    try:
        from forge_hub.outputs.gguf.llama_cpp import find_quantizer
        from forge_hub.outputs.gguf.quant import LLAMA_CPP_TYPES, NUMPY_TYPES
    except ImportError:
        return []
    return list(NUMPY_TYPES) + (list(LLAMA_CPP_TYPES) if find_quantizer() is not None else [])


def build_app() -> gr.Blocks:
    from forge_hub.prompts.dataset import default_dataset

    local = checks.local_files_allowed()
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown(f"# {TITLE}\n"
                    "Abliteration finds the direction in a model's residual stream that separates harmful from "
                    "harmless requests and removes it from the weights, so the model stops refusing. It adds no "
                    "knowledge and also removes refusals of genuinely harmful requests: publish results with a "
                    "clear card and follow the base model's licence.")
        gr.Markdown("## 1. Model and prompts")
        with gr.Row():
            model_id = gr.Textbox(label="Model" + (" (Hub id or local folder)" if local else " (Hub id)"),
                                  placeholder=EXAMPLE_MODEL, value=EXAMPLE_MODEL, elem_id="model-id", scale=3)
            revision = gr.Textbox(label="Revision (optional)", placeholder="main", scale=1)
        with gr.Row():
            dataset = gr.Textbox(label="Prompt dataset" + (" (Hub id or built folder)" if local else " (Hub id)"),
                                 value=default_dataset() or "", placeholder="empty: the lists forge-hub ships",
                                 elem_id="prompt-dataset", scale=3)
            sources = gr.Dropdown(_source_choices(), multiselect=True, label="Sources (empty: all)", scale=2)
        with gr.Row():
            n_prompts = gr.Slider(8, 512, value=64, step=4, label="Prompts per side", elem_id="n-prompts")
            method = gr.Radio(["projected", "mean_diff"], value="projected", label="Direction method")
            layer = gr.Textbox(label="Layer (empty: measured)", placeholder="measured", elem_id="layer")
        with gr.Accordion("Parameter search (optional)", open=False):
            gr.Markdown("Try this many settings (direction layer, method, per-layer strengths) after computing, and "
                        "keep the one with the fewest refusals at a first-token KL of at most "
                        f"{DEFAULT_PICK_MAX_KL:g}, as `forge-hub run --optimize` does. Each trial answers the "
                        "held-out harmful prompts, so it costs GPU time; 0 keeps the measured layer at full strength.")
            search_trials = gr.Slider(0, 60, value=0, step=5, label="Search trials", elem_id="search-trials")
        compute_btn = gr.Button("1. Compute directions", variant="primary", elem_id="compute")
        compute_md = gr.Markdown(elem_id="compute-summary")
        plot = gr.Plot(label="Per-layer separation and scores", elem_id="layer-plot")
        layer_table = gr.Dataframe(label="Layers", interactive=False, elem_id="layer-table")
        direction_files = gr.File(label="Direction artifact", file_count="multiple", interactive=False)
        front_plot = gr.Image(label="Search: every trial's refusals and KL, the pick circled", visible=False,
                              elem_id="search-front", type="filepath")

        gr.Markdown("## 2. Apply")
        apply_btn = gr.Button("2. Apply", variant="primary", elem_id="apply")
        apply_md = gr.Markdown(elem_id="apply-summary")

        gr.Markdown("## 3. Evaluate before / after (prompts from the test split)")
        with gr.Row():
            eval_prompts = gr.Slider(4, 256, value=32, step=4, label="Prompts per side", elem_id="eval-prompts")
            eval_tokens = gr.Slider(8, 256, value=FINAL_MAX_NEW_TOKENS, step=4, label="New tokens per answer",
                                    elem_id="eval-tokens")
        with gr.Row():
            eval_tasks = gr.CheckboxGroup(list(DEFAULT_TASKS), value=[], elem_id="eval-tasks",
                                          label="Capability tasks on both models (lm-evaluation-harness)")
            task_limit = gr.Slider(10, 500, value=steps.DEFAULT_TASK_LIMIT, step=10, elem_id="task-limit",
                                   label="Documents per task (a quick estimate within the GPU time)")
        evaluate_btn = gr.Button("3. Evaluate", variant="primary", elem_id="evaluate")
        evaluate_md = gr.Markdown(elem_id="evaluate-summary")
        metrics = gr.Dataframe(label="Before / after", interactive=False, elem_id="metrics")
        samples = gr.Dataframe(label="Sample answers to harmful prompts", interactive=False, wrap=True,
                               elem_id="samples")
        results_files = gr.File(label="Results", file_count="multiple", interactive=False)

        gr.Markdown("## 4. Chat with both")
        with gr.Row():
            chat_before = gr.Chatbot(label="Original", elem_id="chat-original")
            chat_after = gr.Chatbot(label="Abliterated", elem_id="chat-abliterated")
        with gr.Row():
            message = gr.Textbox(label="Message", scale=4, elem_id="chat-message")
            chat_tokens = gr.Slider(16, 512, value=128, step=16, label="Max new tokens", scale=1)
        send_btn = gr.Button("Send", elem_id="send")

        gr.Markdown("## 5. Publish to your namespace")
        if local:
            gr.Markdown("Running locally: pushes use this machine's Hugging Face login (`hf auth login` or "
                        "`HF_TOKEN`).")
        else:
            gr.LoginButton()
        with gr.Row():
            repo_name = gr.Textbox(label="Repository name (or org/name)", placeholder="model-abliterated")
            private = gr.Checkbox(label="Private", value=False)
            overwrite = gr.Checkbox(label="Update the repo if it exists", value=False)
            gguf_types = gr.CheckboxGroup(_gguf_choices(), label="GGUF variants (optional)")
        push_btn = gr.Button("5. Push to the Hub", variant="primary", elem_id="push")
        push_md = gr.Markdown(elem_id="push-summary")

        gpu = dict(concurrency_id="gpu", concurrency_limit=GPU_CONCURRENCY)
        compute_btn.click(compute_step, [model_id, revision, dataset, sources, n_prompts, method, layer, search_trials],
                          [compute_md, plot, layer_table, direction_files, front_plot], api_name="compute", **gpu)
        apply_btn.click(apply_step, None, apply_md, api_name="apply", concurrency_limit=2)
        evaluate_btn.click(evaluate_step, [eval_prompts, eval_tokens, eval_tasks, task_limit],
                           [evaluate_md, metrics, samples, results_files], api_name="evaluate", **gpu)
        chat_args = dict(fn=chat_step, inputs=[message, chat_before, chat_after, chat_tokens],
                         outputs=[chat_before, chat_after, message], **gpu)
        send_btn.click(api_name="chat", **chat_args)
        message.submit(api_visibility="private", **chat_args)
        push_btn.click(push_step, [repo_name, private, overwrite, gguf_types], push_md, api_name="push",
                       concurrency_limit=2)
        demo.unload(end_session)
    demo.queue(max_size=32, default_concurrency_limit=2)
    return demo


if __name__ == "__main__":
    build_app().launch(show_error=True)
