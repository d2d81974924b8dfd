"""The dataset card: YAML ``configs:`` block, row counts, sources, licences and citations.

The ``configs:`` block is what makes ``load_dataset(REPO_OR_FOLDER, "harmful", split="train")``
find the parquet files without a loading script, so it is generated from the files actually
written, never typed by hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from string import Template

import yaml

from .forge_prompts import BUILDER_VERSION, SOURCES, SPLITS

CITATIONS = {
    "advbench": """@misc{zou2023universal,
  title={Universal and Transferable Adversarial Attacks on Aligned Language Models},
  author={Andy Zou and Zifan Wang and Nicholas Carlini and Milad Nasr and J. Zico Kolter and Matt Fredrikson},
  year={2023}, eprint={2307.15043}, archivePrefix={arXiv}, primaryClass={cs.CL}
}""",
    "harmbench": """@article{mazeika2024harmbench,
  title={HarmBench: A Standardized Evaluation Framework for Automated Red Teaming and Robust Refusal},
  author={Mantas Mazeika and Long Phan and Xuwang Yin and Andy Zou and Zifan Wang and Norman Mu and Elham Sakhaee
          and Nathaniel Li and Steven Basart and Bo Li and David Forsyth and Dan Hendrycks},
  journal={arXiv preprint arXiv:2402.04249}, year={2024}
}""",
    "jailbreakbench": """@inproceedings{chao2024jailbreakbench,
  title={JailbreakBench: An Open Robustness Benchmark for Jailbreaking Large Language Models},
  author={Patrick Chao and Edoardo Debenedetti and Alexander Robey and Maksym Andriushchenko and Francesco Croce
          and Vikash Sehwag and Edgar Dobriban and Nicolas Flammarion and George J. Pappas and Florian Tram{\\`e}r
          and Hamed Hassani and Eric Wong},
  booktitle={NeurIPS Datasets and Benchmarks Track}, year={2024}
}""",
    "maliciousinstruct": """@misc{huang2023catastrophic,
  title={Catastrophic Jailbreak of Open-source LLMs via Exploiting Generation},
  author={Yangsibo Huang and Samyak Gupta and Mengzhou Xia and Kai Li and Danqi Chen},
  year={2023}, eprint={2310.06987}, archivePrefix={arXiv}, primaryClass={cs.CL}
}""",
    "tdc2023": """@inproceedings{tdc2023,
  title={TDC 2023 (LLM Edition): The Trojan Detection Challenge},
  author={Mantas Mazeika and Andy Zou and Norman Mu and Long Phan and Zifan Wang and Chunru Yu and Adam Khoja
          and Fengqing Jiang and Aidan O'Gara and Ellie Sakhaee and Zhen Xiang and Arezoo Rajabi and Dan Hendrycks
          and Radha Poovendran and Bo Li and David Forsyth},
  booktitle={NeurIPS Competition Track}, year={2023}
}""",
    "arditi": """@article{arditi2024refusal,
  title={Refusal in Language Models Is Mediated by a Single Direction},
  author={Andy Arditi and Oscar Obeso and Aaquib Syed and Daniel Paleka and Nina Panickssery and Wes Gurnee
          and Neel Nanda},
  journal={arXiv preprint arXiv:2406.11717}, year={2024}
}""",
    "xstest": """@inproceedings{rottger2024xstest,
  title={XSTest: A Test Suite for Identifying Exaggerated Safety Behaviours in Large Language Models},
  author={Paul R{\"o}ttger and Hannah Rose Kirk and Bertie Vidgen and Giuseppe Attanasio and Federico Bianchi
          and Dirk Hovy},
  booktitle={Proceedings of NAACL 2024}, year={2024}
}""",
    "alpaca": """@misc{alpaca,
  title={Stanford Alpaca: An Instruction-following LLaMA model},
  author={Rohan Taori and Ishaan Gulrajani and Tianyi Zhang and Yann Dubois and Xuechen Li and Carlos Guestrin
          and Percy Liang and Tatsunori B. Hashimoto},
  year={2023}, howpublished={\\url{https://github.com/tatsu-lab/stanford_alpaca}}
}""",
}
# Which citations a source's rows call for (Sumandora's and Arditi's lists re-package earlier work).
CITES = {"advbench": ("advbench",), "harmbench": ("harmbench",), "jailbreakbench": ("jailbreakbench",),
         "maliciousinstruct": ("maliciousinstruct",), "tdc2023": ("tdc2023",),
         "arditi": ("arditi", "advbench", "maliciousinstruct", "tdc2023", "harmbench", "alpaca"),
         "sumandora": ("advbench", "alpaca"), "xstest": ("xstest",)}


def data_path(config: str, split: str) -> str:
    """Where a config's split lives in the repo: ``data/`` so forge-hub's loaders see a dataset folder."""
    return f"data/{config}/{split}-00000-of-00001.parquet"


def render_card(counts: Mapping[str, Mapping[str, int]], repo_id: str) -> str:
    """The README.md for a built folder; ``counts`` is {config: {split: rows}} as written."""
    total = sum(counts.get(side, {}).get(split, 0) for side in ("harmful", "harmless") for split, _ in SPLITS)
    present = [s for s in SOURCES if s.name in counts]
    families = list(dict.fromkeys(key for s in present for key in CITES.get(s.family, ())))
    template = Template(resources.files(__package__).joinpath("card_template.md").read_text(encoding="utf-8"))
    return template.substitute(
        yaml=_yaml(counts, total).rstrip("\n"), repo=repo_id, total=f"{total:,}", version=BUILDER_VERSION,
        counts_table=_counts_table(counts), sources_table=_sources_table(present, counts),
        citations="\n\n".join(CITATIONS[f] for f in families) or "% no external sources in this build")


def _yaml(counts: Mapping[str, Mapping[str, int]], total: int) -> str:
    configs = [{"config_name": config,
                "data_files": [{"split": split, "path": data_path(config, split)} for split in splits]}
               for config, splits in counts.items()]
    meta = {"pretty_name": "forge-hub refusal prompts", "language": ["en"], "license": "other",
            "license_name": "per-source", "task_categories": ["text-generation"],
            "tags": ["refusal", "abliteration", "red-teaming", "safety", "harmful-prompts"],
            "size_categories": [_size_category(total)], "configs": configs}
    return yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)


def _size_category(total: int) -> str:
    for bound, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if total < bound:
            return label
    return "1M<n<10M"


def _counts_table(counts: Mapping[str, Mapping[str, int]]) -> str:
    lines = ["| config | " + " | ".join(name for name, _ in SPLITS) + " | total |",
             "|---|" + "---:|" * (len(SPLITS) + 1)]
    for config, splits in counts.items():
        cells = [splits.get(name, 0) for name, _ in SPLITS]
        lines.append(f"| `{config}` | " + " | ".join(f"{c:,}" for c in cells) + f" | {sum(cells):,} |")
    return "\n".join(lines)


def _sources_table(present, counts: Mapping[str, Mapping[str, int]]) -> str:
    lines = ["| config | side | rows | licence | source | notes |", "|---|---|---:|---|---|---|"]
    for s in present:
        rows = sum(counts[s.name].values())
        lines.append(f"| `{s.name}` | {s.side} | {rows:,} | {s.license} | [{s.title}]({s.homepage}) | {s.note} |")
    return "\n".join(lines)
