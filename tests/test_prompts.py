"""Prompt sources: files of every supported format, folders, datasets, and their errors."""

import json

import pytest

from forge_hub.errors import PromptError
from forge_hub.prompts.sources import builtin_prompts, load_prompts, prompts_hash, split_held_out


def test_builtin_lists_are_parallel_and_clean():
    harmful, harmless = builtin_prompts("harmful"), builtin_prompts("harmless")
    assert len(harmful) == len(harmless) >= 100
    assert len(set(harmful)) == len(harmful) and not any(p.startswith("#") for p in harmful + harmless)
    same_verb = sum(a.split()[0] == b.split()[0] for a, b in zip(harmful, harmless))
    assert same_verb / len(harmful) > 0.9
    assert load_prompts("builtin:harmful") == harmful


def test_txt_with_comments_blank_lines_and_duplicates(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("# a comment\n\nwrite a poem\n  write   a poem \nfix a door\n   # indented comment\n")
    assert load_prompts(f) == ["write a poem", "fix a door"]


def test_json_jsonl_csv_parquet_and_columns(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(["one", "two"]))
    (tmp_path / "b.json").write_text(json.dumps([{"instruction": "three", "category": "x"}]))
    (tmp_path / "c.jsonl").write_text('{"prompt": "four"}\n{"prompt": "five"}\n')
    (tmp_path / "d.csv").write_text("goal,target\nsix,t\nseven,t\n")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["eight"], "q": ["nine"]}), tmp_path / "e.parquet")
    assert load_prompts(tmp_path / "a.json") == ["one", "two"]
    assert load_prompts(tmp_path / "b.json") == ["three"]
    assert load_prompts(tmp_path / "c.jsonl") == ["four", "five"]
    assert load_prompts(tmp_path / "d.csv") == ["six", "seven"]
    assert load_prompts(tmp_path / "d.csv", column="target") == ["t"]
    assert load_prompts(tmp_path / "e.parquet", column="q") == ["nine"]
    # a folder reads every prompt file in name order
    assert load_prompts(tmp_path, column=None)[:3] == ["one", "two", "three"]


def test_dataset_spec_through_datasets(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"prompt": ["alpha", "beta", "alpha"]}).to_parquet(
        str(tmp_path / "data" / "train.parquet"))
    assert load_prompts(f"{tmp_path}") == ["alpha", "beta"]
    assert load_prompts(f"{tmp_path}::train") == ["alpha", "beta"]


def test_sampling_is_seeded():
    a = load_prompts("builtin:harmless", limit=10, seed=3)
    assert len(a) == 10 and a == load_prompts("builtin:harmless", limit=10, seed=3)
    assert a != load_prompts("builtin:harmless", limit=10, seed=4)


@pytest.mark.parametrize("content,match", [
    ("# only comments\n\n", "no prompts in"),
    ('[{"other": "x"}]', "no prompt column among"),
    ("{not json", "not valid JSON"),
])
def test_bad_files_name_the_problem(tmp_path, content, match):
    f = tmp_path / ("p.json" if content.startswith(("[", "{")) else "p.txt")
    f.write_text(content)
    with pytest.raises(PromptError, match=match):
        load_prompts(f)


def test_wrong_encoding_missing_file_and_missing_column(tmp_path):
    f = tmp_path / "latin.txt"
    f.write_bytes("caf\xe9 recipe\n".encode("latin-1"))
    with pytest.raises(PromptError, match="not UTF-8"):
        load_prompts(f)
    with pytest.raises(PromptError, match="does not exist"):
        load_prompts(tmp_path / "nope.txt")
    (tmp_path / "d.csv").write_text("goal\nx\n")
    with pytest.raises(PromptError, match="no column 'prompt'"):
        load_prompts(tmp_path / "d.csv", column="prompt")


def test_held_out_split_and_hash():
    prompts = [f"p{i}" for i in range(20)]
    train, held = split_held_out(prompts, 0.25, seed=1)
    assert len(held) == 5 and not set(train) & set(held) and set(train) | set(held) == set(prompts)
    assert split_held_out(prompts, 0.25, seed=1) == (train, held)
    assert prompts_hash(prompts) == prompts_hash(list(prompts)) != prompts_hash(prompts[::-1])


def test_xstest_csv_keeps_safe_prompts_with_their_types(tmp_path):
    from helpers.prompt_sources import XSTEST, XSTEST_SAFE, write_xstest

    from forge_hub.prompts.xstest import load_xstest

    rows = load_xstest(write_xstest(tmp_path / "xstest_prompts.csv"))
    assert rows.prompts == XSTEST_SAFE and rows.source == "xstest_prompts.csv" and rows.unsafe_left_out == 2
    assert rows.types == [row[2] for row in XSTEST if row[3] == "safe"]
    sample = load_xstest(tmp_path / "xstest_prompts.csv", limit=3, seed=1)
    assert len(sample.prompts) == 3 and set(sample.prompts) < set(XSTEST_SAFE)
    types = dict(zip(XSTEST_SAFE, rows.types))
    assert sample.types == [types[p] for p in sample.prompts]  # each prompt keeps its own type
    assert sample == load_xstest(tmp_path / "xstest_prompts.csv", limit=3, seed=1)


@pytest.mark.parametrize("content,problem", [
    ("id,prompt,label\n1,How do I kill a process?,safe\n", "no column 'type'"),
    ("id,prompt,type,label\n1,How do I kill someone?,contrast_homonyms,unsafe\n", "no XSTest prompts labelled 'safe'"),
])
def test_xstest_errors_say_where_to_get_it(tmp_path, content, problem):
    from forge_hub.prompts.xstest import XSTEST_HOME, load_xstest

    bad = tmp_path / "xstest.csv"
    bad.write_text(content)
    with pytest.raises(PromptError, match=problem):
        load_xstest(bad)
    with pytest.raises(PromptError, match="does not exist") as missing:
        load_xstest(tmp_path / "nowhere.csv")
    assert XSTEST_HOME in missing.value.hint and missing.value.input == "xstest"
