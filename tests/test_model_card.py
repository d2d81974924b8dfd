"""The model card: YAML the Hub reads (checked with huggingface_hub's own parser), a body a person
reads, both built from what an abliterated folder records about itself. No network."""

import json
import shutil

import pytest
import yaml
from helpers.abliterated_models import BASE, BASE_CARD, make_abliterated, write_results
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results

from forge_hub.errors import GGUFTypeError, HubError
from forge_hub.hub.card import (
    TAGS,
    GGUFVariant,
    Licence,
    base_model_id,
    build_gguf_card,
    build_model_card,
    check_card,
    dataset_of,
    display_source,
    eval_results,
    load_results,
)
from forge_hub.hub.push import resolve_licence
from forge_hub.schema import DirectionMetadata, EvaluationResults


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("card")
    folder = make_abliterated(root)
    results = load_results(write_results(folder, root / "results.json", reference=root / "source"))
    return root, folder, results


def card_yaml(card) -> dict:
    text = str(card)
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_metadata_names_base_relation_licence_tags_datasets_and_results(made):
    _, folder, results = made
    card = build_model_card(folder, "me/tiny-abliterated", results=results,
                            licence=Licence("apache-2.0", origin="read from the base model's card on the Hub"))
    meta = card_yaml(card)
    assert meta["base_model"] == BASE and meta["base_model_relation"] == "finetune"
    assert meta["license"] == "apache-2.0" and meta["library_name"] == "transformers"
    assert meta["pipeline_tag"] == "text-generation"
    assert set(TAGS) <= set(meta["tags"]) and "not-for-all-audience" in meta["tags"] and "gguf" not in meta["tags"]
    assert meta["datasets"] == ["forge-hub/refusal-prompts"]  # the harmless side was a local file: not a dataset

    name, read_back = model_index_to_eval_results(meta["model-index"])
    assert name == "tiny-abliterated"
    values = {r.metric_type: r.metric_value for r in read_back}
    r = results.to_dict()["results"]
    assert values == {"refusal_rate": r["model"]["refusal_rate"], "over_refusal_rate": r["model"]["over_refusal_rate"],
                      "kl_divergence": r["kl_divergence"]}
    by_metric = {x.metric_type: x for x in read_back}
    assert (by_metric["refusal_rate"].dataset_type, by_metric["refusal_rate"].dataset_config,
            by_metric["refusal_rate"].dataset_split) == ("forge-hub/refusal-prompts", "harmful", "test")
    assert by_metric["kl_divergence"].dataset_config == "harmless"
    # the library's own round trip: text -> ModelCardData -> the same EvalResults
    data = ModelCard(str(card)).data
    assert [vars(x) for x in data.eval_results] == [vars(x) for x in eval_results(results)]
    assert data.base_model == BASE and data.license == "apache-2.0"
    check_card(card, results)


def test_body_reports_what_was_done_the_numbers_samples_and_reproduction(made):
    root, folder, results = made
    card = build_model_card(folder, "me/tiny-abliterated", results=results, licence=Licence("apache-2.0"),
                            files=[("model.safetensors", 160_752)])
    body = str(card).split("---\n", 2)[2]
    meta = json.loads((folder / "refusal.json").read_text())
    r, n = results.to_dict()["results"], results.to_dict()["prompts"]["harmful"]["count"]
    assert f"[{BASE}](https://huggingface.co/{BASE}) at revision `main`" in body
    assert f"| layer | {meta['selected_layer']:g} of 4 |" in body and "| method | projected" in body
    assert f"| `direction_layer` | `{meta['apply_settings']['direction_layer']:g}` |" in body
    assert f"| reference: `{BASE}` | {r['reference']['refusals']}/{n} |" in body  # the before/after table
    assert f"| model: `me/tiny-abliterated` | {r['model']['refusals']}/{n} |" in body
    assert results.to_dict()["samples"][0]["prompt"] in body  # sample answers
    assert f"forge-hub apply {BASE} --revision main --directions directions --out tiny-abliterated" in body
    assert "## Responsible use" in body and "Content warning" in body
    assert "| `model.safetensors` | 160.8 kB |" in body
    assert "`harmless.txt` (local)" in body
    assert str(root) not in str(card)  # local paths never reach the card
    assert "apache-2.0" in body.split("## Licence")[1]


def test_card_without_results_or_hub_base(made, tmp_path):
    _, folder, _ = made
    local = tmp_path / "local-copy"
    shutil.copytree(folder, local)
    meta = json.loads((local / "refusal.json").read_text())
    meta.update(model=str(tmp_path / "my-model"), source_kind="folder", revision=None)
    (local / "refusal.json").write_text(json.dumps(meta))
    card = build_model_card(local, "me/x")
    data = card_yaml(card)
    assert "base_model" not in data and "base_model_relation" not in data and "model-index" not in data
    assert data["license"] == "other" and set(TAGS) <= set(data["tags"])
    assert "This upload was not evaluated" in str(card) and "could not be read" in str(card)
    assert "`my-model` (a local folder, not traced to the Hub)" in str(card) and str(tmp_path) not in str(card)
    check_card(card)
    with_base = card_yaml(build_model_card(local, "me/x", base_model="org/named-base"))
    assert with_base["base_model"] == "org/named-base" and with_base["base_model_relation"] == "finetune"


def gguf_file(path, size=64):
    path.write_bytes(b"GGUF" + b"\0" * (size - 4))
    return path


def test_gguf_variants_in_the_same_repo_and_in_their_own(made, tmp_path):
    _, folder, results = made
    q8 = GGUFVariant.from_path(gguf_file(tmp_path / "tiny-abliterated-Q8_0.gguf", 2500))
    f16 = GGUFVariant.from_path(gguf_file(tmp_path / "tiny-abliterated-f16.gguf", 4000))
    assert (q8.type, q8.size, f16.type) == ("Q8_0", 2500, "F16")

    same = build_model_card(folder, "me/tiny-abliterated", results=results, gguf=[f16, q8])
    assert {"gguf", "llama-cpp"} <= set(card_yaml(same)["tags"])
    assert "| `tiny-abliterated-Q8_0.gguf` | Q8_0 | 2.5 kB |" in str(same)
    assert "| `tiny-abliterated-f16.gguf` | F16 | 4.0 kB |" in str(same)

    main = build_model_card(folder, "me/tiny-abliterated", results=results, gguf=[q8],
                            gguf_repo="me/tiny-abliterated-GGUF")
    assert "gguf" not in card_yaml(main)["tags"]
    assert "GGUF files of this model are in [me/tiny-abliterated-GGUF]" \
        "(https://huggingface.co/me/tiny-abliterated-GGUF)" in str(main)

    card = build_gguf_card("me/tiny-abliterated", "me/tiny-abliterated-GGUF", [f16, q8], licence=Licence("apache-2.0"),
                           base_model=BASE)
    meta = card_yaml(card)
    assert meta["base_model"] == "me/tiny-abliterated" and meta["base_model_relation"] == "quantized"
    assert meta["library_name"] == "gguf" and meta["license"] == "apache-2.0"
    assert set(TAGS) | {"gguf"} <= set(meta["tags"]) and "model-index" not in meta  # not measured on these files
    assert "| `tiny-abliterated-Q8_0.gguf` | Q8_0 | 2.5 kB |" in str(card)
    check_card(card)


def test_gguf_files_must_be_gguf_of_a_known_type(tmp_path):
    with pytest.raises(GGUFTypeError, match="cannot tell the GGUF type of model-Q9_9.gguf"):
        GGUFVariant.from_path(gguf_file(tmp_path / "model-Q9_9.gguf"))
    with pytest.raises(GGUFTypeError, match="cannot tell the GGUF type"):
        GGUFVariant.from_path(gguf_file(tmp_path / "model.gguf"))
    (tmp_path / "fake-Q8_0.gguf").write_bytes(b"not a gguf")
    with pytest.raises(HubError, match="GGUF magic"):
        GGUFVariant.from_path(tmp_path / "fake-Q8_0.gguf")
    with pytest.raises(HubError, match="is not a .gguf file"):
        GGUFVariant.from_path(tmp_path / "missing-Q8_0.gguf")


def test_check_card_catches_what_the_hub_would_misread(made):
    _, folder, results = made
    good = str(build_model_card(folder, "me/x", results=results))
    check_card(ModelCard(good), results)
    changed = EvaluationResults.from_dict(results.to_dict())
    changed.results.model.refusal_rate += 0.5
    with pytest.raises(HubError, match="does not read back"):
        check_card(ModelCard(good), changed)
    with pytest.raises(HubError, match="base_model_relation"):
        check_card(ModelCard(good.replace(f"base_model: {BASE}\n", "")))
    with pytest.raises(HubError, match="not-for-all-audience"):
        check_card(ModelCard(good.replace("- not-for-all-audience\n", "")))
    with pytest.raises(HubError, match="missing from the model-index"):
        check_card(build_model_card(folder, "me/x"), results)


@pytest.mark.parametrize("source, expected", [
    ("forge-hub/refusal-prompts harmful/train", ("forge-hub/refusal-prompts", "harmful", "train")),
    ("walledai/AdvBench", ("walledai/AdvBench", None, None)),
    ("org/prompts:harmful:test", ("org/prompts", "harmful", "test")),
    ("builtin:harmful", None),
    ("./prompts harmful/train", None),
    ("/home/someone/harmful.txt", None),
    ("data/harmful.csv", None),
    (None, None),
])
def test_which_prompt_sources_are_hub_datasets(source, expected):
    assert dataset_of(source) == expected


def test_sources_are_shown_without_local_paths():
    assert display_source("/home/someone/secret/harmless.txt") == "`harmless.txt` (local)"
    assert display_source("builtin:harmless") == "forge-hub's built-in harmless list"
    assert display_source("forge-hub/refusal-prompts harmful/train") == (
        "[forge-hub/refusal-prompts](https://huggingface.co/datasets/forge-hub/refusal-prompts) (harmful/train)")


def test_base_model_from_metadata(tmp_path):
    assert base_model_id(DirectionMetadata.from_dict({"model": "org/m", "revision": "v1", "source_kind": "hub"})) == (
        "org/m", "v1")
    snapshot = f"/cache/hub/models--Org--Model-1B/snapshots/{'a' * 40}"
    assert base_model_id(DirectionMetadata.from_dict({"model": snapshot, "source_kind": "folder"})) == (
        "Org/Model-1B", "a" * 40)
    assert base_model_id(DirectionMetadata.from_dict({"model": str(tmp_path), "source_kind": "folder"})) == (None, None)
    assert base_model_id(DirectionMetadata.from_dict({"model": str(tmp_path), "source_kind": "folder"}),
                         "org/named") == ("org/named", None)


def test_licence_comes_from_the_flag_or_the_base_card_carried_over(made, tmp_path):
    _, folder, _ = made
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    assert resolve_licence(copy, BASE, "main", None) == Licence("other")  # offline, nothing in the folder
    (copy / "README.md").write_bytes(BASE_CARD)  # apply copies a local source's card
    found = resolve_licence(copy, BASE, "main", None)
    assert found.id == "apache-2.0" and "source folder" in found.origin
    assert resolve_licence(copy, BASE, "main", "mit").id == "mit"
    card = build_model_card(copy, "me/x", licence=found)
    assert "`apache-2.0`" in str(card).split("## Licence")[1]


def rich_results(results: EvaluationResults) -> EvaluationResults:
    """``results`` with XSTest and two lm-eval tasks added, as `forge-hub evaluate --xstest --tasks` writes them."""
    from forge_hub.schema import MetricValue, PromptSet, RefusalCount, TaskResult, XSTestScores

    rich = EvaluationResults.from_dict(results.to_dict())
    r = rich.results
    r.model.xstest = XSTestScores(5, 250, 0.02, {"homonyms": RefusalCount.of(1, 25)})
    r.reference.xstest = XSTestScores(40, 250, 0.16, {"homonyms": RefusalCount.of(9, 25)})
    rich.prompts["xstest"] = PromptSet(250, "sha256:0", "xstest_prompts.csv")
    r.capabilities = {
        "hellaswag": TaskResult("hellaswag", "acc_norm", "none", MetricValue(0.41, 0.0049), MetricValue(0.42, 0.0049),
                                -0.01, num_fewshot=0, samples=10042, dataset="Rowan/hellaswag",
                                dataset_split="validation"),
        "gsm8k": TaskResult("gsm8k", "exact_match", "strict-match", MetricValue(0.3, 0.0126),
                            MetricValue(0.32, 0.0128), -0.02, num_fewshot=5, samples=1319, dataset="openai/gsm8k",
                            dataset_config="main", dataset_split="test"),
    }
    rich.settings["capability"] = {"tasks": ["hellaswag", "gsm8k"], "limit": None}
    return rich


def test_model_index_carries_xstest_and_lm_eval_tasks_and_the_body_the_base_values(made):
    _, folder, results = made
    rich = rich_results(results)
    card = build_model_card(folder, "me/tiny-abliterated", results=rich, licence=Licence("apache-2.0"))
    check_card(card, rich)  # read back with huggingface_hub's parser to exactly these values
    _, back = model_index_to_eval_results(card_yaml(card)["model-index"])
    by_task = {x.task_name: x for x in back}
    hellaswag, gsm8k = by_task["hellaswag"], by_task["gsm8k"]
    assert (hellaswag.metric_type, hellaswag.metric_value, hellaswag.dataset_type, hellaswag.dataset_split,
            hellaswag.dataset_args) == ("acc_norm", 0.41, "Rowan/hellaswag", "validation", {"num_few_shot": 0})
    assert (gsm8k.metric_type, gsm8k.metric_name, gsm8k.dataset_config) == (
        "exact_match", "exact_match (strict-match)", "main")
    xstest = next(x for x in back if x.dataset_type == "xstest")
    assert (xstest.metric_type, xstest.metric_value, xstest.dataset_name) == (
        "over_refusal_rate", 0.02, "XSTest (250 safe prompts)")
    assert {x.metric_type for x in back} >= {"refusal_rate", "over_refusal_rate", "kl_divergence"}
    body = str(card).split("---\n", 2)[2]
    assert "| XSTest safe prompts refused (over-refusal) | XSTest (Röttger et al. 2024) | 5/250 (2%) | 40/250 (16%) |" \
        in body
    assert "| `hellaswag` acc_norm, 0-shot | [Rowan/hellaswag](https://huggingface.co/datasets/Rowan/hellaswag), " \
           "10042 documents | 0.4100 ± 0.0049 | 0.4200 ± 0.0049 |" in body
    assert "| `gsm8k` exact_match (strict-match), 5-shot |" in body and "### XSTest over-refusal by type" in body
    assert "| `gsm8k` | exact_match (strict-match) | 5 | 0.3200 ± 0.0128 | 0.3000 ± 0.0126 | -0.0200 |" in body
    assert "on XSTest's 250 safe prompts that look unsafe 5/250 (the original: 40/250)" in body


def test_gguf_rows_show_each_files_check_and_mark_a_file_that_refuses_again(made, tmp_path):
    from forge_hub.schema import GGUFCheck, GGUFFileCheck, ModelScores, PromptSet

    _, folder, results = made
    q8 = GGUFVariant.from_path(gguf_file(tmp_path / "tiny-abliterated-Q8_0.gguf", 2500))
    q4 = GGUFVariant.from_path(gguf_file(tmp_path / "tiny-abliterated-Q4_K_M.gguf", 1500))
    check = GGUFCheck(
        reference=BASE, unquantized="tiny-abliterated",
        prompts={"harmful": PromptSet(10), "harmless": PromptSet(20)}, settings={"max_new_tokens": 100},
        files=[GGUFFileCheck(q8.name, "Q8_0", 2500, "llama.cpp", ModelScores(1, 0.1, 2, 0.1), 0.21),
               GGUFFileCheck(q4.name, "Q4_K_M", 1500, "llama.cpp", ModelScores(7, 0.7, 4, 0.2), 0.9,
                             warning="refuses 7/10, the unquantized model 1/10")],
        reference_scores=ModelScores(9, 0.9, 3, 0.15), unquantized_scores=ModelScores(1, 0.1, 2, 0.1),
        unquantized_kl=0.2)
    card = str(build_model_card(folder, "me/tiny-abliterated", results=results, gguf=[q8, q4], gguf_check=check))
    assert "| `tiny-abliterated-Q8_0.gguf` | Q8_0 | 2.5 kB | 1/10 (10%) | 2/20 (10%) | 0.2100 |  |" in card
    assert "| `tiny-abliterated-Q4_K_M.gguf` | Q4_K_M | 1.5 kB | 7/10 (70%) | 4/20 (20%) | 0.9000 | " \
           "⚠ refuses 7/10" in card
    assert "the unquantized model refused 1/10 and 2/20 and the base model refused 9/10 and 3/20" in card
    assert "gguf-evaluation.json" in card
    gguf_card = build_gguf_card("me/tiny-abliterated", "me/tiny-abliterated-GGUF", [q8, q4], gguf_check=check)
    check_card(gguf_card)
    assert "| `tiny-abliterated-Q4_K_M.gguf` | Q4_K_M | 1.5 kB | 7/10 (70%) |" in str(gguf_card)


def test_refined_directions_are_named_on_the_card(made, tmp_path):
    _, folder, _ = made
    local = tmp_path / "refined-copy"
    shutil.copytree(folder, local)
    meta = json.loads((local / "refusal.json").read_text())
    assert "refined" not in str(build_model_card(local, "me/x")).lower()
    meta["refined"] = {"layers": [2, 3, 4], "steps": 60, "learning_rate": 0.002, "kl_weight": 0.1, "batch_size": 16,
                       "answer_tokens": 16, "target_scale": 1.35, "targets": 40, "settings": {"per_layer": True},
                       "mean_cosine_to_start": 0.8123, "first_losses": [0.5, 0.3], "last_losses": [0.4, 0.05]}
    (local / "refusal.json").write_text(json.dumps(meta))
    text = str(build_model_card(local, "me/x"))
    assert ("| refined | layers 2-4 by 60 steps of gradient descent (answers to 40 harmful prompts + 0.1 x "
            "first-token KL on harmless ones; mean cosine to the plain direction 0.81) |") in text


def test_a_searched_models_nominal_layer_is_not_called_measured(made, tmp_path):
    """A search with its defaults scans no layer: the card says how its layer was named instead."""
    _, folder, _ = made
    local = tmp_path / "searched-copy"
    shutil.copytree(folder, local)
    meta = json.loads((local / "refusal.json").read_text())
    meta["selection"] = {"how": "separation"}
    (local / "refusal.json").write_text(json.dumps(meta))
    text = str(build_model_card(local, "me/x"))
    assert "| layer chosen by | the largest separation of the two sides' means, not measured" in text
    assert "refusal probability and KL on held-out prompts" not in text
