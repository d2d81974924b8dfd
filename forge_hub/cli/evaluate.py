"""``forge-hub evaluate`` and ``forge-hub chat``: measure a model against its original, or talk to it."""

from __future__ import annotations

import argparse
import sys

from forge_hub.cli.options import (
    add_capability_options,
    add_generation_options,
    add_model_options,
    add_prompt_options,
    capability_settings,
    load_model_from,
    prompt_choice,
    xstest_from,
)
from forge_hub.evaluation.compare import FINAL_MAX_NEW_TOKENS
from forge_hub.prompts.xstest import BUILTIN_XSTEST


def add_evaluate_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="refusals, over-refusals, KL and capability tasks against the original",
                       description="Refusal rate on harmful prompts, over-refusal on harmless ones and on XSTest's "
                       "250 safe prompts by type (the shipped copy; --no-xstest leaves it out), first-token KL "
                       "divergence and answer cross-entropy "
                       "against --reference, and lm-evaluation-harness tasks on both models (--tasks); JSON + "
                       "Markdown results.",
                       epilog="Example: forge-hub evaluate OUT --reference BASE --tasks mmlu,gsm8k,hellaswag,"
                       "arc_challenge,winogrande --limit 200 --out results.json")
    add_model_options(p)
    p.add_argument("--reference", help="the original model, for KL, cross-entropy and before/after columns")
    add_prompt_options(p, split="test", purpose="use ones the direction was not computed from; the test split is "
                       "one compute and run never read")
    add_generation_options(p)
    p.add_argument("--max-new-tokens", type=int, default=FINAL_MAX_NEW_TOKENS,
                   help=f"answer length (default {FINAL_MAX_NEW_TOKENS})")
    add_capability_options(p)
    p.add_argument("--judge", help="a text-classification model (folder or Hub id) as a second opinion on refusals")
    p.add_argument("--judge-label", help="the judge's label meaning refusal (default: the one containing 'refus')")
    p.add_argument("--samples", type=int, default=5, help="sample answers kept in the report")
    p.add_argument("--out", help="write results JSON here (and the Markdown table beside it, .md)")
    p.set_defaults(handler=_cmd_evaluate)

    chat = sub.add_parser("chat", help="chat with a model in the terminal (streaming)")
    add_model_options(chat)
    chat.add_argument("--system-prompt")
    chat.add_argument("--max-new-tokens", type=int, default=512)
    chat.set_defaults(handler=_cmd_chat)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from forge_hub.evaluation.compare import EvaluationSettings
    from forge_hub.evaluation.report import results_markdown
    from forge_hub.model.loading import local_paths, resolve_source
    from forge_hub.outputs.staging import check_output_file
    from forge_hub.pipeline import evaluate, write_results
    from forge_hub.prompts.choice import load_prompt_lists

    if args.out:  # before any work: a results file may not land on the models, nor in an unwritable folder
        check_output_file(args.out, sources=[*local_paths(resolve_source(args.model, args.revision)),
                                             *(local_paths(resolve_source(args.reference)) if args.reference else [])])
    capability = capability_settings(args)  # unknown task names and a missing XSTest file fail before the models load
    xstest = xstest_from(args, default=BUILTIN_XSTEST)
    prompts = load_prompt_lists(prompt_choice(args))
    model, tokenizer, src = load_model_from(args)
    reference = reference_id = None
    if args.reference:
        reference, _, ref_src = load_model_from(args, args.reference)
        reference_id = ref_src.id
    settings = EvaluationSettings(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                                  system_prompt=args.system_prompt, samples=args.samples, judge=args.judge,
                                  judge_label=args.judge_label, max_prompt_tokens=args.max_prompt_tokens)
    result = evaluate(model, tokenizer, prompts.harmful, prompts.harmless, reference=reference, settings=settings,
                      model_name=src.id, reference_name=reference_id,
                      prompt_sources={"harmful": prompts.harmful_source, "harmless": prompts.harmless_source},
                      xstest=xstest, capability=capability)
    print("\n" + results_markdown(result))
    if args.out:
        out, markdown = write_results(result, args.out)
        print(f"wrote {out} and {markdown}", file=sys.stderr)
    return 0


def _cmd_chat(args: argparse.Namespace) -> int:
    from forge_hub.cli.chat import chat_loop

    model, tokenizer, _ = load_model_from(args)
    chat_loop(model, tokenizer, system_prompt=args.system_prompt, max_new_tokens=args.max_new_tokens)
    return 0
