"""Small lm-evaluation-harness tasks of our own, as YAML over local JSON lines (no download), for the
capability tests: one multiple-choice task (acc, acc_norm) and one short generation (exact_match
through a filter)."""

from __future__ import annotations

import json
from pathlib import Path

WORDS = ["cat", "dog", "tree", "house", "car", "cake", "bread", "poem", "story", "water", "fire", "school"]


def write_tasks(folder: Path) -> Path:
    """``tiny_choice`` and ``tiny_words`` in ``folder`` (an lm-eval ``include_path``); returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    docs = [{"question": f"what is the {WORDS[i % 12]}", "choices": [WORDS[(i + k) % 12] for k in range(3)],
             "answer": i % 3, "target": WORDS[(i + 1) % 12]} for i in range(12)]
    data = folder / "docs.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    common = f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
    (folder / "tiny_choice.yaml").write_text(
        f"task: tiny_choice\n{common}output_type: multiple_choice\ndoc_to_text: \"{{{{question}}}}\"\n"
        "doc_to_target: answer\ndoc_to_choice: \"{{choices}}\"\nmetric_list:\n"
        "  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
        "  - metric: acc_norm\n    aggregation: mean\n    higher_is_better: true\n", encoding="utf-8")
    (folder / "tiny_words.yaml").write_text(
        f"task: tiny_words\n{common}output_type: generate_until\ndoc_to_text: \"{{{{question}}}}\"\n"
        "doc_to_target: \"{{target}}\"\ngeneration_kwargs:\n  until: [\"</s>\"]\n  max_gen_toks: 3\n"
        "  do_sample: false\nfilter_list:\n  - name: first-word\n    filter:\n      - function: regex\n"
        "        regex_pattern: \"(\\\\w+)\"\n      - function: take_first\n"
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n",
        encoding="utf-8")
    return folder
