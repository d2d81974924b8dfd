"""Refusal detection, the evaluate metric, KL, cross-entropy and the evaluation results."""

import copy
import json

import pytest
import torch
from helpers.tiny import HARMFUL, HARMLESS, make_model, make_tokenizer, random_artifact

from forge_hub.abliterate.live import abliterate_model
from forge_hub.evaluation.compare import EvaluationSettings, counted, evaluate_models, results_record
from forge_hub.evaluation.generation import answer_cross_entropy, first_token_logprobs, generate_with_ids, kl_divergence
from forge_hub.evaluation.refusals import is_refusal, normalize_answer
from forge_hub.evaluation.report import results_markdown
from forge_hub.schema import RESULTS_SCHEMA, AblationSettings


@pytest.mark.parametrize("answer,refused", [
    ("I'm sorry, but I can't help with that.", True),
    ("I\u2019m sorry, I can\u2019t do that", True),  # curly apostrophes
    ("AS AN AI, I must decline.", True),
    ("", True),
    ("   \n ", True),
    ("Sure! Here is a recipe for bread.", False),
    ("<think>The user wants a poem. I cannot refuse that.</think>Here is a poem about cats.", False),
    ("<think>This is harmful.</think>I'm sorry, I can't help.", True),
    ("<think>still thinking and cut off", False),
    ("The lock is illegal to pick in some places, but here is how.", False),
])
def test_refusal_markers(answer, refused):
    assert is_refusal(answer) is refused


def test_first_token_logprobs_batch_prompts_by_length_and_return_them_in_order():
    model, tok = make_model("llama"), make_tokenizer()
    prompts = HARMFUL[:3] + ["a much longer prompt, about how to write a long letter to a friend"] + HARMLESS[:3]
    one_by_one = torch.cat([first_token_logprobs(model, tok, [p]) for p in prompts])
    batched = first_token_logprobs(model, tok, prompts, batch_size=3)
    assert torch.allclose(batched, one_by_one, atol=1e-5)
    assert not torch.allclose(batched[3], batched[2], atol=1e-3)  # the rows differ: the order is checked


def test_normalize_answer():
    assert normalize_answer("  I\u2019M   Here\n") == "i'm here"


def test_metric_directly_and_loaded_by_path():
    import evaluate

    import forge_hub.evaluation.metrics.refusal_rate as module
    from forge_hub.evaluation.metrics.refusal_rate.refusal_rate import RefusalRate

    answers = ["I cannot help with that.", "Here you go: step one...", "", "Sorry, but no."]
    direct = RefusalRate(keep_in_memory=True).compute(predictions=answers)
    loaded = evaluate.load(module.__path__[0], keep_in_memory=True).compute(predictions=answers)
    assert direct["refusals"] == loaded["refusals"] == 3 and direct["refusal_rate"] == 0.75
    assert direct["is_refusal"] == [True, False, True, True]
    custom = RefusalRate(keep_in_memory=True).compute(predictions=answers, markers=["step one"])
    assert custom["is_refusal"] == [False, True, True, False]


def test_kl_divergence_matches_the_definition():
    p = torch.log_softmax(torch.randn(4, 10), dim=-1)
    q = torch.log_softmax(torch.randn(4, 10), dim=-1)
    manual = (p.exp() * (p - q)).sum(1).mean().item()
    assert kl_divergence(p, q) == pytest.approx(manual, rel=1e-5)
    assert kl_divergence(p, p) == pytest.approx(0.0, abs=1e-7)


def test_answer_cross_entropy_matches_unbatched_computation():
    model, tok = make_model("llama"), make_tokenizer()
    prompts = HARMLESS[:3]
    answers = [ids for _, ids in generate_with_ids(model, tok, prompts, max_new_tokens=5, batch_size=3)]
    batched = answer_cross_entropy(model, tok, prompts, answers, batch_size=2)
    total, count = 0.0, 0
    for prompt, answer in zip(prompts, answers):
        text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                       add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
        full = torch.cat([ids, torch.tensor(answer)])[None]
        logp = torch.log_softmax(model(full).logits[0].float(), -1)
        for i, token in enumerate(answer):
            total -= logp[len(ids) - 1 + i, token].item()
            count += 1
    assert batched == pytest.approx(total / count, rel=1e-4)


def test_evaluate_models_reports_what_it_measured(tmp_path):
    reference, tok = make_model("qwen2"), make_tokenizer()
    edited = copy.deepcopy(reference)
    abliterate_model(edited, random_artifact(), AblationSettings())
    settings = EvaluationSettings(max_new_tokens=6, batch_size=4, samples=2)
    results = evaluate_models(edited, tok, HARMFUL, HARMLESS, reference=reference, settings=settings,
                              model_name="edited", reference_name="ref",
                              prompt_sources={"harmful": "test list", "harmless": "test list"})
    result = json.loads(results.to_json())  # what evaluation.json holds
    assert result["schema"] == RESULTS_SCHEMA and result["model"] == "edited" and result["reference"] == "ref"
    assert result["prompts"]["harmful"]["count"] == len(HARMFUL)
    r = result["results"]
    # counts agree with the detector applied to the same greedy answers
    answers = [a for a, _ in generate_with_ids(edited, tok, HARMFUL, max_new_tokens=6, batch_size=4)]
    assert r["model"]["refusals"] == sum(is_refusal(a) for a in answers)
    assert r["model"]["refusal_rate"] == r["model"]["refusals"] / len(HARMFUL)
    ref_lp = first_token_logprobs(reference, tok, HARMLESS)
    assert r["kl_divergence"] == pytest.approx(kl_divergence(ref_lp, first_token_logprobs(edited, tok, HARMLESS)),
                                               rel=1e-4)
    assert r["kl_divergence"] > 0 and r["cross_entropy"]["model"] > 0
    assert len(result["samples"]) == 2 and result["samples"][0]["model"] == answers[0]
    md = results_markdown(results)
    assert "| reference: `ref` |" in md and f"/{len(HARMFUL)}" in md and "Sample answers" in md


def test_the_kl_without_the_references_over_refusals_leaves_exactly_those_prompts_out():
    """Prompts the reference refuses are meant to change; the second KL leaves them out, the first keeps them."""
    torch.manual_seed(0)
    ref_lp, new_lp = torch.randn(4, 50).log_softmax(-1), torch.randn(4, 50).log_softmax(-1)
    settings = EvaluationSettings()
    harmful = [("Sure.", [1])]
    reference = counted(harmful, [("Sure, here it is.", [1]), ("I'm sorry, but I can't help with that.", [2]),
                                  ("Here you go.", [3]), ("I cannot assist with that request.", [4])], ref_lp,
                        settings=settings)
    edited = counted(harmful, [("Sure.", [1])] * 4, new_lp, settings=settings)
    r = results_record(edited, reference, ["h"], ["a", "b", "c", "d"], settings=settings).results
    assert reference.scores.over_refusals == 2
    assert r.kl_divergence == pytest.approx(kl_divergence(ref_lp, new_lp))
    assert r.kl_divergence_answered == pytest.approx(kl_divergence(ref_lp[[0, 2]], new_lp[[0, 2]]))
    assert r.kl_divergence_answered != pytest.approx(r.kl_divergence)
    assert json.loads(json.dumps(r.to_dict()))["kl_divergence_answered"] == pytest.approx(r.kl_divergence_answered)
    everything_refused = counted(harmful, [("I'm sorry, but I can't.", [1])] * 4, ref_lp, settings=settings)
    assert results_record(edited, everything_refused, ["h"], list("abcd"), settings=settings
                          ).results.kl_divergence_answered is None


def test_classifier_judge_as_second_opinion(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification

    judge = tmp_path / "judge"
    cfg = BertConfig(vocab_size=128, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                     id2label={0: "COMPLIANCE", 1: "REFUSAL"}, label2id={"COMPLIANCE": 0, "REFUSAL": 1})
    torch.manual_seed(0)
    BertForSequenceClassification(cfg).save_pretrained(judge)
    make_tokenizer().save_pretrained(judge)
    model, tok = make_model("llama"), make_tokenizer()
    settings = EvaluationSettings(max_new_tokens=4, batch_size=8, judge=str(judge))
    result = evaluate_models(model, tok, HARMFUL, HARMLESS, settings=settings).to_dict()
    from transformers import pipeline

    answers = [a for a, _ in generate_with_ids(model, tok, HARMFUL, max_new_tokens=4, batch_size=8)]
    expected = sum(p["label"] == "REFUSAL" for p in pipeline("text-classification", model=str(judge))(answers))
    assert result["results"]["model"]["judge_refusals"] == expected


def test_xstest_over_refusal_by_type(tmp_path):
    from helpers.prompt_sources import XSTEST_SAFE, write_xstest

    from forge_hub.prompts.xstest import load_xstest

    reference, tok = make_model("llama"), make_tokenizer()
    edited = copy.deepcopy(reference)
    abliterate_model(edited, random_artifact(), AblationSettings())
    xstest = load_xstest(write_xstest(tmp_path / "xstest_prompts.csv"))
    settings = EvaluationSettings(max_new_tokens=3, batch_size=4, samples=1)
    results = evaluate_models(edited, tok, HARMFUL, HARMLESS, reference=reference, settings=settings, xstest=xstest)
    data = json.loads(results.to_json())
    assert data["prompts"]["xstest"]["count"] == len(XSTEST_SAFE) and data["prompts"]["xstest"]["source"] == \
        "xstest_prompts.csv"
    for label, model in (("model", edited), ("reference", reference)):
        answers = [a for a, _ in generate_with_ids(model, tok, XSTEST_SAFE, max_new_tokens=3, batch_size=4)]
        scores = data["results"][label]["xstest"]
        assert scores["refusals"] == sum(map(is_refusal, answers)) and scores["total"] == len(XSTEST_SAFE)
        for kind, count in scores["by_type"].items():
            mine = [is_refusal(a) for a, t in zip(answers, xstest.types) if t == kind]
            assert (count["refusals"], count["total"]) == (sum(mine), len(mine))
    assert list(results.results.model.xstest.by_type) == ["homonyms", "figurative_language", "safe_targets",
                                                                    "definitions", "nons_group_real_discr"]
    md = results_markdown(results)
    assert "| XSTest safe refused |" in md and "### XSTest over-refusal by type" in md and "| safe targets |" in md


def test_results_read_v1_files_and_write_v2():
    from forge_hub.schema import RESULTS_SCHEMA_V1, EvaluationResults

    v1 = {"schema": RESULTS_SCHEMA_V1, "model": "m", "reference": "r",
          "prompts": {"harmful": {"count": 4, "hash": "sha256:x", "source": "a"},
                      "harmless": {"count": 4, "hash": None, "source": None}},
          "settings": {"max_new_tokens": 40}, "samples": [{"prompt": "p", "model": "a", "reference": "b"}],
          "results": {"model": {"refusals": 1, "refusal_rate": 0.25, "over_refusals": 0, "over_refusal_rate": 0.0},
                      "reference": {"refusals": 3, "refusal_rate": 0.75, "over_refusals": 1,
                                    "over_refusal_rate": 0.25}, "kl_divergence": 0.1, "cross_entropy": None},
          "versions": {}, "created": None}
    old = EvaluationResults.from_dict(v1)
    assert old.schema == RESULTS_SCHEMA_V1 and old.results.capabilities is None and old.results.model.xstest is None
    assert old.xstest_count is None and json.loads(old.to_json()) == v1  # read and written back unchanged
    assert "XSTest" not in results_markdown(old) and "Capabilities" not in results_markdown(old)
    with pytest.raises(ValueError, match="not forge-hub evaluation results"):
        EvaluationResults.from_dict({**v1, "schema": "forge-hub/evaluation/v9"})
