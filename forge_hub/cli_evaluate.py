"""`forge-hub evaluate` and `forge-hub chat`: measure a model against its original, or talk to it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_evaluate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="refusals, over-refusals and KL of a model against its original",
                       description="Refusal rate on harmful prompts, over-refusal on harmless ones, first-token KL "
                       "divergence and answer cross-entropy against --reference; JSON + Markdown results.")
    p.add_argument("model", help="the model to evaluate (Hub id, folder or .gguf)")
    p.add_argument("--reference", help="the original model, for KL, cross-entropy and before/after columns")
    from .prompt_dataset import DEFAULT_DATASET, SPLIT_NAMES, default_dataset

    p.add_argument("--prompts-dataset", default=default_dataset(), metavar="ID_OR_DIR",
                   help=f"prompt dataset for the sides not given by --harmful/--harmless (default: {DEFAULT_DATASET})")
    p.add_argument("--split", default="test", choices=SPLIT_NAMES,
                   help="dataset split (default: test, which compute and run never read)")
    p.add_argument("--sources", help="comma-separated dataset sources to keep (default: all)")
    p.add_argument("--harmful", help="harmful prompts not used for the direction, instead of the dataset's "
                   "(file, folder, dataset name[:config][:split] or builtin:harmful)")
    p.add_argument("--harmless", help="harmless prompts (over-refusal, KL), instead of the dataset's")
    p.add_argument("--column", help="prompt column in csv/json/parquet/dataset sources")
    p.add_argument("--n-prompts", type=int, help="sample at most this many prompts per side (default: all of a "
                   "--harmful/--harmless source, 128 from the dataset)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-new-tokens", type=int, default=40, help="answer length (default 40)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--system-prompt")
    p.add_argument("--judge", help="a text-classification model (folder or Hub id) as a second opinion on refusals")
    p.add_argument("--judge-label", help="the judge's label meaning refusal (default: the one containing 'refus')")
    p.add_argument("--samples", type=int, default=5, help="sample answers kept in the report")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--device-map")
    p.add_argument("--revision")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--chat-template", help="a Jinja chat template file, for models that ship none")
    p.add_argument("--out", help="write results JSON here (and the Markdown table beside it, .md)")
    p.set_defaults(handler=_cmd_evaluate)


def add_chat_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="chat with a model in the terminal (streaming)")
    p.add_argument("model", help="Hub id, folder or .gguf")
    p.add_argument("--system-prompt")
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--device-map")
    p.add_argument("--revision")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--chat-template", help="a Jinja chat template file, for models that ship none")
    p.set_defaults(handler=_cmd_chat)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .cli import _load_prompt_lists
    from .evaluation import EvaluationSettings, evaluate_models
    from .modeling import load_model
    from .report import results_markdown

    harmful, harmless = _load_prompt_lists(args)
    model, tokenizer, src = load_model(args.model, args.revision, args.dtype, args.device_map, None,
                                       args.trust_remote_code, args.chat_template)
    reference = None
    reference_id = None
    if args.reference:
        reference, _, ref_src = load_model(args.reference, None, args.dtype, args.device_map, None,
                                           args.trust_remote_code, args.chat_template)
        reference_id = ref_src.id
    settings = EvaluationSettings(args.max_new_tokens, args.batch_size, args.system_prompt, args.samples, args.judge,
                                  args.judge_label)
    result = evaluate_models(model, tokenizer, harmful, harmless, reference, settings, src.id, reference_id,
                             {"harmful": args.harmful or f"{args.prompts_dataset} harmful/{args.split}",
                              "harmless": args.harmless or f"{args.prompts_dataset} harmless/{args.split}"})
    markdown = results_markdown(result)
    print("\n" + markdown)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        out.with_suffix(".md").write_text(markdown, encoding="utf-8")
        print(f"wrote {out} and {out.with_suffix('.md')}", file=sys.stderr)
    return 0


def _cmd_chat(args: argparse.Namespace) -> int:
    from .modeling import load_model
    from .terminal_chat import chat_loop

    model, tokenizer, _ = load_model(args.model, args.revision, args.dtype, args.device_map, None,
                                     args.trust_remote_code, args.chat_template)
    chat_loop(model, tokenizer, args.system_prompt, args.max_new_tokens)
    return 0
