"""A classifier as refusal judge: its label found by name, loaded once, and counting the refusals of
search trials instead of the markers."""

from pathlib import Path

import pytest
import torch
from helpers.tiny import HARMFUL, HARMLESS, make_model, make_tokenizer, random_artifact

from forge_hub.abliterate.search import SearchOptions, TrialEvaluator, search_setup
from forge_hub.errors import SettingsError
from forge_hub.evaluation.compare import judge_refusals
from forge_hub.evaluation.judge import refusal_judge
from forge_hub.schema import AblationSettings


def make_judge(folder: Path, labels=("NORMAL", "REJECTION"), always: int | None = None) -> str:
    """A tiny BERT classifier with ``labels``; ``always``: the index it answers whatever the text."""
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(vocab_size=128, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                     id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    torch.manual_seed(0)
    model = BertForSequenceClassification(cfg)
    if always is not None:
        with torch.no_grad():
            model.classifier.weight.zero_()
            model.classifier.bias.copy_(torch.tensor([10.0 if i == always else 0.0 for i in range(len(labels))]))
    model.save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    return str(folder)


def test_the_refusal_label_is_found_by_name_and_the_judge_loaded_once(tmp_path):
    from transformers import pipeline

    path = make_judge(tmp_path / "j")
    judge = refusal_judge(path)
    assert judge.label == "REJECTION" and refusal_judge(path) is judge
    answers = ["hello there", "", "sure, here it is", "   "]
    direct = [p["label"] == "REJECTION" for p in pipeline("text-classification", model=path)(["hello there",
                                                                                           "sure, here it is"])]
    assert judge.flags(answers) == [direct[0], True, direct[1], True]  # empty answers count, as with the markers
    assert judge_refusals(path, answers) == sum(judge.flags(answers))


def test_a_judge_without_a_refusal_label_says_which_labels_it_has(tmp_path):
    path = make_judge(tmp_path / "j", labels=("POSITIVE", "NEGATIVE"))
    with pytest.raises(SettingsError, match="POSITIVE") as info:
        refusal_judge(path)
    assert info.value.input == "judge_label"
    assert refusal_judge(path, "NEGATIVE").label == "NEGATIVE"
    with pytest.raises(SettingsError, match="no label 'REFUSAL'"):
        refusal_judge(path, "REFUSAL")
    with pytest.raises(SettingsError, match="cannot load the judge"):
        refusal_judge(str(tmp_path / "missing"))


@pytest.mark.parametrize("always", [0, 1])
def test_search_trials_are_counted_by_the_judge(tmp_path, always):
    judge = make_judge(tmp_path / "j", always=always)  # 0: never a refusal, 1: always
    model, tok = make_model("llama"), make_tokenizer()
    everything = SearchOptions(storage=tmp_path / "s.db", max_new_tokens=3, batch_size=4, markers=("",))
    artifact, settings = random_artifact(), AblationSettings()
    first = TrialEvaluator(model, tok, HARMFUL, HARMLESS, everything)
    by_markers = first(artifact, settings)
    first.restore()
    assert by_markers[0] == len(HARMFUL)  # the empty marker matches every answer
    judged = SearchOptions(storage=tmp_path / "s.db", max_new_tokens=3, batch_size=4, markers=("",), judge=judge)
    evaluator = TrialEvaluator(model, tok, HARMFUL, HARMLESS, judged)
    refusals, kl, complete = evaluator(artifact, settings)
    assert (refusals, complete) == (len(HARMFUL) * always, True) and kl == pytest.approx(by_markers[1])
    assert evaluator.times_refused == [always] * len(HARMFUL)  # what orders the next trial's answers
    setup = search_setup("m", HARMFUL, HARMLESS, judged)
    assert setup["refusal judge"] == [judge, None]  # workers of a study must count the same way
    assert setup["search space"] == "focused"  # and search the same space
    assert "refusal judge" not in search_setup("m", HARMFUL, HARMLESS, everything)


def test_run_optimize_with_a_judge_records_it(tmp_path, prompt_files, capsys):
    from helpers.tiny import save_model

    from forge_hub.abliterate.directions import RefusalDirections
    from forge_hub.cli import main

    judge = make_judge(tmp_path / "j", always=1)
    src = save_model(make_model("llama"), tmp_path / "tiny")
    h, s = prompt_files
    assert main([str(a) for a in ["run", src, "--harmful", h, "--harmless", s, "--optimize", "--study",
                                  tmp_path / "study.db", "--search-tokens", "3", "--batch-size", "4", "--trials", "2",
                                  "--judge", judge, "--no-evaluate", "--out", tmp_path / "a"]]) == 0
    search = RefusalDirections.load(tmp_path / "a").metadata.search
    assert search.judge == judge and search.refusals == search.eval_prompts["harmful"].count  # it calls all refusals
    capsys.readouterr()
    assert main([str(a) for a in ["run", src, "--harmful", h, "--harmless", s, "--optimize", "--study",
                                  tmp_path / "other.db", "--judge", tmp_path / "missing", "--out",
                                  tmp_path / "b"]]) != 0
    err = capsys.readouterr().err
    assert "cannot load the judge" in err and "score layers" not in err  # before any compute
