"""Model cards: the Hub parses their metadata, and what they state is what config.json records."""

from __future__ import annotations

import shutil

import pytest
from huggingface_hub import ModelCard

from cxr.card import METRIC_TYPES, write_model_card
from cxr.hub import WEIGHTS_DIR, bundled_models
from cxr.model import CONFIG_NAME, ModelConfig


@pytest.mark.parametrize("name", bundled_models())
def test_bundled_card_parses_and_its_eval_results_are_the_recorded_metrics(name):
    folder = WEIGHTS_DIR / name
    card = ModelCard.load(folder / "README.md")
    config = ModelConfig.from_json(folder / CONFIG_NAME)
    assert card.data.library_name == "timm" and card.data.license == "cc-by-4.0"
    assert card.data.model_name == name
    clean = {r.metric_type: r.metric_value for r in card.data.eval_results if r.dataset_config is None}
    expected = {METRIC_TYPES[k]: round(v, 4) for k, v in config.val_metrics.items() if k in METRIC_TYPES}
    assert clean == expected and len(expected) == 4
    worst = {r.metric_type: r.metric_value for r in card.data.eval_results if r.dataset_config}
    recorded = config.stress_metrics.get("stress_worst", {})
    assert worst == {METRIC_TYPES[k]: round(v, 4) for k, v in recorded.items() if k in METRIC_TYPES}
    assert "not a diagnostic device" in card.text


def test_bundled_cards_are_what_the_writer_renders(tmp_path):
    """A card edited by hand, or left behind by a config change, fails here."""
    for name in bundled_models():
        copy = tmp_path / name
        shutil.copytree(WEIGHTS_DIR / name, copy)
        write_model_card(copy, published_as=f"weights/{name}")
        assert (copy / "README.md").read_text() == (WEIGHTS_DIR / name / "README.md").read_text(), name


def test_a_staged_card_names_its_final_folder(tmp_path):
    staging = tmp_path / "run.partial"
    shutil.copytree(WEIGHTS_DIR / bundled_models()[0], staging)
    write_model_card(staging, published_as="weights/run")
    card = ModelCard.load(staging / "README.md")
    assert card.data.model_name == "run" and "--weights weights/run`" in card.text and ".partial" not in card.text
