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
