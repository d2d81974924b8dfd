"""Options that several commands share, declared once, and their conversion to library values.

Each ``add_*`` function adds one group of flags; the function beside it turns the parsed flags
into what the library takes (a loaded model, a :class:`~forge_hub.prompts.choice.PromptChoice`,
:class:`~forge_hub.pipeline.ComputeOptions`, ...). A flag is named after the library parameter
it sets, so an error that names a parameter (``{out}``) reads as the flag (``--out``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os

from forge_hub.errors import HubError, SettingsError
from forge_hub.evaluation.compare import FINAL_MAX_NEW_TOKENS
from forge_hub.model.chat import DEFAULT_MAX_PROMPT_TOKENS
from forge_hub.schema import EMBEDDING_MODES, KERNELS, AblationSettings

# Library parameters whose flag is not simply their name with dashes.
FLAGS = {"winsorize_quantile": "--winsorize", "held_out_fraction": "--held-out", "gguf_types": "--gguf",
         "gguf_files": "--gguf-file", "folder": "DIR", "gguf_check": "--no-gguf-check"}


def flag_name(parameter: str) -> str:
    """How the command line spells a library parameter that an error names: ``exist_ok`` -> ``--exist-ok``."""
    return FLAGS.get(parameter) or "--" + parameter.replace("_", "-")


MODEL_HELP = "Hub id (owner/name), local Hugging Face folder or .gguf file"
GGUF_REPO_AUTO = "<OWNER/NAME>-GGUF"


# --- the model ------------------------------------------------------------------------------------

def add_model_options(p: argparse.ArgumentParser, *, quantization: bool = False) -> None:
    """The positional model and how to load it (``quantization``: the compute step's --load-in)."""
    p.add_argument("model", help=MODEL_HELP)
    g = p.add_argument_group("loading the model")
    g.add_argument("--revision", help="Hub revision (branch, tag or commit)")
    g.add_argument("--dtype", default="auto", help="auto (checkpoint dtype on a GPU, float32 on a CPU), bf16, fp16 "
                   "or fp32 (default: auto)")
    g.add_argument("--device-map", help="accelerate device map, e.g. auto (spreads a large model over GPUs/CPU/disk)")
    g.add_argument("--max-memory", metavar="DEVICE=SIZE,...",
                   help="memory each device may hold, e.g. 0=70GiB,1=70GiB,cpu=100GiB; the rest of the model is read "
                        "from disk as it runs (implies --device-map auto)")
    g.add_argument("--offload-folder", help="where offloaded and edited weights go on disk (default: a temporary "
                   "folder; a safetensors model's own files are read in place, never changed)")
    if quantization:
        g.add_argument("--load-in", choices=["4bit", "8bit"], help="bitsandbytes quantization for the compute step")
    g.add_argument("--trust-remote-code", action="store_true", help="allow the model repo's own code (off by default)")
    g.add_argument("--chat-template", help="a Jinja chat template file, for models that ship none")


def load_model_from(args: argparse.Namespace, model: str | None = None, *, revision: str | None = None):
    """``(model, tokenizer, source)`` as the model flags say; ``model`` loads another one (a
    reference) the same way."""
    from forge_hub.model.loading import load_model

    return load_model(model or args.model, revision=revision if model else args.revision, dtype=args.dtype,
                      device_map=args.device_map, max_memory=args.max_memory, offload_folder=args.offload_folder,
                      quantization=getattr(args, "load_in", None),
                      trust_remote_code=args.trust_remote_code, chat_template=args.chat_template)


# --- prompts --------------------------------------------------------------------------------------

def add_prompt_options(p: argparse.ArgumentParser, *, split: str, purpose: str) -> None:
    """Where the harmful and harmless prompts come from (``split``: the dataset split read by default)."""
    from forge_hub.prompts.choice import DEFAULT_SAMPLE, DEFAULT_SOURCES
    from forge_hub.prompts.dataset import DATASET_ENV, SPLIT_NAMES, default_dataset

    g = p.add_argument_group(f"prompts ({purpose})")
    g.add_argument("--prompts-dataset", metavar="ID_OR_DIR", default=default_dataset(),
                   help=f"prompt dataset for the sides not given by --harmful/--harmless: a Hub id or a folder from "
                   f"`forge-hub datasets build` (default: ${DATASET_ENV}, else the lists shipped with forge-hub, "
                   f"{DEFAULT_SOURCES['harmful']} and {DEFAULT_SOURCES['harmless']}: no network needed)")
    g.add_argument("--split", default=split, choices=SPLIT_NAMES, help=f"dataset split to read (default: {split})")
    g.add_argument("--sources", help="comma-separated sources to keep from --prompts-dataset, e.g. "
                   "advbench,jailbreakbench (default: all)")
    g.add_argument("--harmful", help="harmful prompts: a file, a folder, a dataset name[:config][:split], or a "
                   "shipped list (builtin:advbench, builtin:harmful)")
    g.add_argument("--harmless", help="harmless prompts: the same forms (builtin:alpaca, builtin:harmless)")
    g.add_argument("--column", help="column holding the prompts in csv/json/parquet/dataset sources")
    g.add_argument("--n-prompts", type=int, help=f"sample at most this many prompts per side (default: all of a "
                   f"--harmful/--harmless source, {DEFAULT_SAMPLE} from a prompt dataset or the shipped lists)")
    g.add_argument("--seed", type=int, default=0, help="seed for sampling and the held-out split")


def prompt_choice(args: argparse.Namespace):
    from forge_hub.cli.datasets import parse_names
    from forge_hub.prompts.choice import PromptChoice

    return PromptChoice(harmful=args.harmful, harmless=args.harmless, dataset=args.prompts_dataset,
                        split=args.split, sources=parse_names(args.sources), column=args.column,
                        n_prompts=args.n_prompts, seed=args.seed)


def add_generation_options(p: argparse.ArgumentParser) -> None:
    """How prompts are put to the model: a system prompt, batch size."""
    p.add_argument("--system-prompt", help="system prompt put before each instruction")
    p.add_argument("--batch-size", type=int, default=16, help="prompts per forward pass (default 16)")
    p.add_argument("--max-prompt-tokens", type=int, default=DEFAULT_MAX_PROMPT_TOKENS,
                   help=f"refuse prompts longer than this through the chat template (default "
                        f"{DEFAULT_MAX_PROMPT_TOKENS}, or the model's context if shorter)")


# --- what the final evaluation measures besides refusals ---------------------------------------------

XSTEST_HELP = ("XSTest (Röttger et al., NAACL 2024; CC-BY-4.0) for over-refusal by type on its 250 safe prompts that "
               "look unsafe: builtin:xstest (the copy forge-hub ships), another xstest_prompts.csv "
               "(https://github.com/paul-rottger/xstest), or a prompt dataset built with its xstest config "
               "(forge-hub datasets build)")


def add_capability_options(p: argparse.ArgumentParser, *, run: bool = False) -> None:
    """lm-eval tasks and the XSTest file; ``run``: the run's check spells the task flag --evaluate-tasks."""
    from forge_hub.evaluation.capability import DEFAULT_TASKS

    g = p.add_argument_group("capabilities and over-refusal (lm-evaluation-harness, XSTest)")
    names = ("--evaluate-tasks", "--tasks") if run else ("--tasks",)
    g.add_argument(*names, dest="tasks", metavar="TASKS",
                   help=f"lm-eval tasks to run on both models, comma-separated, e.g. {','.join(DEFAULT_TASKS)} "
                   "(needs `pip install 'forge-hub[eval]'`; the standard tasks download their data from the Hub)")
    g.add_argument("--limit", type=_limit, metavar="N",
                   help="at most N documents per task (a fraction when below 1): a quick estimate (default: all)")
    g.add_argument("--num-fewshot", type=int, metavar="K", help="examples in each task's prompt (default: the task's)")
    g.add_argument("--include-path", metavar="DIR", help="a folder of lm-eval task YAML files, for your own tasks")
    if run:  # the run's check stays quick; XSTest's 250 answers per model are asked for by name
        g.add_argument("--xstest", metavar="FILE_OR_DATASET",
                       help=XSTEST_HELP + " (the shipped copy: builtin:xstest; adds 250 answers per model to the "
                       "check; `forge-hub evaluate` measures it by default)")
        return
    g.add_argument("--xstest", metavar="FILE_OR_DATASET",
                   help=XSTEST_HELP + " (default: builtin:xstest, measured on both models; adds 250 answers per model)")
    g.add_argument("--no-xstest", dest="no_xstest", action="store_true",
                   help="leave XSTest out (measured by default)")


def capability_settings(args: argparse.Namespace):
    """The lm-eval settings the flags ask for, checked (task names, folder); None without --tasks."""
    from forge_hub.cli.datasets import parse_names
    from forge_hub.evaluation.capability import CapabilitySettings, check_tasks

    tasks = parse_names(args.tasks)
    if not tasks:
        if args.limit is not None or args.num_fewshot is not None or args.include_path:
            raise SettingsError("--limit, --num-fewshot and --include-path apply to lm-eval tasks, and none is named",
                                "name the tasks with {tasks}, e.g. --tasks hellaswag,arc_challenge")
        return None
    settings = CapabilitySettings(tasks=tuple(tasks), limit=args.limit, num_fewshot=args.num_fewshot,
                                  batch_size=args.batch_size, include_path=args.include_path)
    check_tasks(settings)
    return settings


def add_gguf_check_options(p: argparse.ArgumentParser, *, push: bool) -> None:
    """How GGUF files are measured before they are published (``push``: on by default, off with
    --no-gguf-check; ``gguf``: with --evaluate-against)."""
    from forge_hub.evaluation.gguf_check import BACKENDS

    title = "checking the GGUF files" + (" (with --gguf or --gguf-file; off with --no-gguf-check)" if push
                                         else " (--evaluate-against)")
    g = p.add_argument_group(title)
    g.add_argument("--evaluate-against", metavar="BASE",
                   help="the base model (Hub id, folder or .gguf) that each GGUF file is compared with: refusals on "
                   "held-out harmful prompts, over-refusal and first-token KL from BASE, beside the unquantized "
                   "model's; a file that refuses clearly more than the unquantized model gets a warning"
                   + (" (default: the base model refusal.json names)" if push
                      else "; writes OUT/gguf-evaluation.json"))
    if push:
        g.add_argument("--no-gguf-check", dest="gguf_check", action="store_false",
                       help="publish GGUF files without measuring them")
    g.add_argument("--check-tokens", type=int, default=FINAL_MAX_NEW_TOKENS,
                   help=f"answer length of the check (default {FINAL_MAX_NEW_TOKENS})")
    g.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="run the files through llama-cpp-python (llama.cpp's kernels) or transformers (dequantized "
                   "to float32); auto: llama.cpp when installed")
    g.add_argument("--threads", type=int, help="llama.cpp threads (default: its own choice)")
    g.add_argument("--xstest", metavar="FILE_OR_DATASET", help=XSTEST_HELP)
    add_prompt_options(p, split="test", purpose="for the GGUF check; held out from directions by default")
    add_generation_options(p)


def gguf_check_options(args: argparse.Namespace, base: str | None, revision: str | None = None):
    """The check the flags ask for, against ``base``; prompts and XSTest read now, before any export."""
    from forge_hub.evaluation.compare import EvaluationSettings
    from forge_hub.evaluation.gguf_check import GGUFCheckOptions
    from forge_hub.prompts.choice import load_prompt_lists

    if not base:
        raise SettingsError("the GGUF check needs the base model, and refusal.json names none",
                            "name it with {evaluate_against}, or skip the check with {gguf_check}")
    prompts = load_prompt_lists(prompt_choice(args))
    settings = EvaluationSettings(max_new_tokens=args.check_tokens, batch_size=args.batch_size,
                                  system_prompt=args.system_prompt, max_prompt_tokens=args.max_prompt_tokens)
    return GGUFCheckOptions(reference=base, harmful=prompts.harmful, harmless=prompts.harmless,
                            prompt_sources={"harmful": prompts.harmful_source, "harmless": prompts.harmless_source},
                            xstest=xstest_from(args), settings=settings, backend=args.backend,
                            threads=args.threads, reference_revision=revision,
                            dtype=getattr(args, "dtype", "auto")).check()


def xstest_from(args: argparse.Namespace, *, default: str | None = None):
    """XSTest's safe prompts: those --xstest names, else ``default`` (``evaluate`` and ``run`` pass the
    shipped copy, ``builtin:xstest``); None with --no-xstest or when there is neither."""
    from forge_hub.prompts.xstest import load_xstest

    if getattr(args, "no_xstest", False):
        if args.xstest:
            raise SettingsError("--no-xstest leaves XSTest out, and --xstest names a file for it",
                                "keep one of {xstest} and {no_xstest}", input="xstest")
        return None
    source = args.xstest or default
    return load_xstest(source) if source else None


def _limit(text: str) -> int | float:
    value = float(text)
    return int(value) if value >= 1 and value.is_integer() else value


# --- directions -------------------------------------------------------------------------------------

def add_compute_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("directions and layer choice")
    g.add_argument("--method", default="projected", choices=["mean_diff", "projected", "svd"],
                   help="direction method (default: projected)")
    g.add_argument("--num-directions", type=int, default=1, help="directions kept by --method svd")
    g.add_argument("--positions", default="-1",
                   help="prompt positions to read, from the end, e.g. --positions=-1,-2 (default -1)")
    g.add_argument("--winsorize", type=float, metavar="Q", help="clip activations at quantile Q (e.g. 0.995)")
    g.add_argument("--layer", type=float,
                   help="use this layer (index, or fraction of depth if < 1) instead of measuring")
    g.add_argument("--held-out", type=float, default=0.25, help="fraction of prompts kept aside to score layers")
    g.add_argument("--max-kl", type=float, default=1.0, help="hard KL bound for a candidate layer (default 1.0)")
    g.add_argument("--kl-weight", type=float, default=1.0,
                   help="layer score = refusal probability + KL-WEIGHT * KL (default 1.0)")
    defaults = _compute_defaults()
    g.add_argument("--choice-tokens", type=int, default=defaults.choice_tokens,
                   help="the final choice counts refusals among greedy answers of this many tokens to the choice's "
                   "harmful prompts (--choice-harmful), for each shortlisted setting "
                   f"(default {defaults.choice_tokens}; 0 keeps the first-token scan's pick; --optimize always "
                   "keeps it: its search measures settings itself)")
    g.add_argument("--shortlist", type=int, default=defaults.shortlist,
                   help=f"layers of the first-token scan the final choice measures (default {defaults.shortlist})")
    g.add_argument("--refusal-target", type=float, default=defaults.refusal_target,
                   help="the final choice: the least damaging setting that leaves at most this fraction of the "
                   f"choice's harmful prompts refused (default {defaults.refusal_target:g})")
    g.add_argument("--choice-harmful", default=defaults.choice_harmful, metavar="SOURCE",
                   help="harmful prompts the final choice counts refusals on, from a source the direction prompts do "
                   f"not come from (default {defaults.choice_harmful}: XSTest's unsafe prompts bar the privacy ones, "
                   "175, shipped; "
                   "'held-out' for the part of --harmful held out from the directions)")


def _compute_defaults():
    from forge_hub.pipeline import ComputeOptions

    return ComputeOptions()


def compute_options(args: argparse.Namespace):
    from forge_hub.pipeline import ComputeOptions

    return ComputeOptions(
        method=args.method, num_directions=args.num_directions,
        positions=tuple(int(x) for x in args.positions.split(",")), batch_size=args.batch_size,
        system_prompt=args.system_prompt, winsorize_quantile=args.winsorize, held_out_fraction=args.held_out,
        layer=args.layer, max_kl=args.max_kl, kl_weight=args.kl_weight, seed=args.seed,
        max_prompt_tokens=args.max_prompt_tokens, choice_tokens=args.choice_tokens, shortlist=args.shortlist,
        refusal_target=args.refusal_target, settings=settings_from(args, ComputeOptions().settings),
        choice_harmful=None if args.choice_harmful == "held-out" else args.choice_harmful,
    )


def add_settings_options(p: argparse.ArgumentParser) -> None:
    """Ablation settings; only flags given on the command line override the artifact's."""
    g = p.add_argument_group("ablation settings")
    s = argparse.SUPPRESS
    g.add_argument("--direction-layer", type=float, default=s, help="direction's layer (fractional interpolates)")
    g.add_argument("--per-layer", action="store_true", default=s, help="each layer removes its own direction")
    g.add_argument("--layers", default=s, metavar="START:END", help="edit only layers START..END-1")
    g.add_argument("--skip-first", type=int, default=s, help="leave the first N layers unedited")
    g.add_argument("--skip-last", type=int, default=s, help="leave the last N layers unedited")
    g.add_argument("--strength", type=float, default=s, help="projection strength (1 removes the component)")
    g.add_argument("--attn-strength", type=float, default=s, help="extra factor for attention writers")
    g.add_argument("--mlp-strength", type=float, default=s, help="extra factor for MLP writers")
    g.add_argument("--kernel", choices=KERNELS, default=s, help="per-layer weight shape")
    g.add_argument("--kernel-center", type=float, default=s)
    g.add_argument("--kernel-width", type=float, default=s)
    g.add_argument("--kernel-floor", type=float, default=s)
    g.add_argument("--norm-preserving", action="store_true", default=s,
                   help="keep every residual vector's norm exactly (instead of --row-normalized)")
    g.add_argument("--row-normalized", action=argparse.BooleanOptionalAction, default=s,
                   help="edit row-normalized writer weights and give each row its norm back (magnitude-preserving "
                   "ablation; what `run` and `compute` choose by default)")
    g.add_argument("--biprojected", action="store_true", default=s,
                   help="orthogonalize the direction against each target layer's harmless mean")
    g.add_argument("--subspace", action="store_true", default=s, help="remove the SVD subspace (--method svd)")
    g.add_argument("--embeddings", choices=EMBEDDING_MODES, default=s,
                   help="auto: edit untied embeddings, keep tied ones; untie: copy the head, then edit")


def settings_from(args: argparse.Namespace, base: AblationSettings) -> AblationSettings:
    """``base`` with the settings given on the command line."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(AblationSettings) if hasattr(args, f.name)}
    if hasattr(args, "layers"):
        start, _, end = args.layers.partition(":")
        given["layer_start"] = int(start) if start else None
        given["layer_end"] = int(end) if end else None
    if given.get("norm_preserving") and "row_normalized" not in given:
        given["row_normalized"] = False  # the two ways of keeping magnitudes exclude each other
    return dataclasses.replace(base, **given).check()


# --- outputs ----------------------------------------------------------------------------------------

def add_output_options(p: argparse.ArgumentParser, what: str, *, required: bool = True) -> None:
    p.add_argument("--out", required=required, help=f"{what} (written whole, or not at all)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")


def add_gguf_output_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--to-safetensors", action="store_true",
                   help="write a GGUF source as a safetensors folder instead of an edited .gguf")


# --- publishing -------------------------------------------------------------------------------------

def add_publish_options(p: argparse.ArgumentParser, *, after_run: bool) -> None:
    """The Hub repo's options; ``after_run`` for ``run --push-to`` (they then need --push-to)."""
    g = p.add_argument_group("publishing (see `forge-hub push --help`)") if after_run else p
    suffix = " (with --push-to)" if after_run else ""
    g.add_argument("--private", action="store_true", help=f"create the Hub repo as private{suffix}")
    g.add_argument("--exist-ok", action="store_true",
                   help="upload into an existing repo (same-named files replaced, stale weight shards "
                   f"removed){suffix}")
    g.add_argument("--gguf", metavar="TYPES", help="also write GGUF files of these types (F16,Q8_0,Q4_K_M, ...), "
                   f"named NAME-TYPE.gguf, and upload them{suffix}")
    g.add_argument("--gguf-repo", nargs="?", const=GGUF_REPO_AUTO, metavar="OWNER/NAME",
                   help=f"put the GGUF files in a separate repo with its own card (alone: {GGUF_REPO_AUTO})")
    g.add_argument("--token-env", metavar="VAR", help="read the Hub token from this environment variable instead "
                   "of HF_TOKEN / the cached login (never pass a token on the command line)")
    if after_run:
        g.add_argument("--no-gguf-check", dest="gguf_check", action="store_false",
                       help="publish the --gguf files without measuring each one first (by default each is run on "
                       "the run's held-out prompts and compared with the source model)")


def gguf_repo(args: argparse.Namespace, repo_id: str) -> str | None:
    """``--gguf-repo`` given alone means ``<repo>-GGUF``."""
    return f"{repo_id}-GGUF" if args.gguf_repo == GGUF_REPO_AUTO else args.gguf_repo


def token_from(args: argparse.Namespace) -> str | None:
    """``--token-env VAR``: the token from that variable (None: HF_TOKEN, then the cached login)."""
    variable = args.token_env
    if variable is None:
        return None
    token = os.environ.get(variable, "").strip()
    if not token:
        raise HubError(f"--token-env {variable}: that environment variable is not set or empty",
                       f"export {variable}=<a write token> first, or leave out --token-env to use HF_TOKEN / "
                       "`hf auth login`")
    return token
