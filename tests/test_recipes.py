"""Recipes over seeds: runs grouped by what they were trained with, figures as mean and spread."""

from __future__ import annotations

import json
import shutil

import pytest

from cxr.cli.recipes import main as recipes_main
from cxr.model import ModelConfig
from cxr.recipes import group_runs, recipe_flags
from tests.conftest import ROOT

RECIPE = {"model": "efficientnet_lite0", "epochs": 10, "augment": "shift", "lung_penalty": 0.0, "lung_dilate": 16}


def write_run(folder, seed: int, worst_specificity: float, **recipe) -> str:
    """A trained folder's config.json as train.py records it, with the figures a test needs."""
    args = RECIPE | recipe | {"seed": seed, "out": str(folder), "lung_masks": f"/data{seed}/lung_masks"}
    config = ModelConfig(
        "efficientnet_lite0",
        train={"args": args},
        val_metrics={"auc": 0.99 + seed / 1000, "sensitivity": 0.97, "specificity": 0.95, "ece": 0.02},
        stress_metrics={
            "stress": {"crop_22": {"specificity": worst_specificity}, "pad_8": {"specificity": 0.97}},
            "stress_worst": {"specificity": worst_specificity, "sensitivity": 0.95, "ece": 0.05 + seed / 100},
        },
    )
    folder.mkdir()
    config.to_json(folder / "config.json")
    return str(folder)


def test_runs_of_one_recipe_are_summarised_over_their_seeds(tmp_path):
    runs = [write_run(tmp_path / f"base{s}", s, spec) for s, spec in ((0, 0.8), (1, 0.6), (2, 0.7))]
    runs.append(write_run(tmp_path / "lungs0", 0, 0.9, lung_penalty=1.0))
    base, lungs = group_runs(runs)
    summary = base.summary()
    assert summary["seeds"] == [0, 1, 2] and summary["runs"] == runs[:3]
    worst = summary["figures"]["worst_specificity"]
    assert worst["mean"] == pytest.approx(0.7) and (worst["min"], worst["max"]) == (0.6, 0.8)
    assert summary["figures"]["crop_22_specificity"]["values"] == [0.8, 0.6, 0.7]
    assert summary["figures"]["worst_ece"]["values"] == pytest.approx([0.05, 0.06, 0.07])
    assert lungs.seeds == [0] and "--lung-penalty 1.0" in recipe_flags(lungs.args)


def test_a_recipe_is_its_training_flags_without_seed_paths_or_idle_options():
    flags = recipe_flags(RECIPE | {"seed": 3, "out": "runs/x", "lung_masks": "/m", "max_minutes": 45})
    assert flags == "--augment shift --epochs 10 --model efficientnet_lite0"  # no dilation without the penalty
    assert "--lung-dilate 16" in recipe_flags(RECIPE | {"lung_penalty": 1.0})
    assert "--fov-mode" not in recipe_flags(RECIPE | {"fov_mode": "crop"})  # the mode of no field of view
    assert "--fov seg --fov-mode dim" in recipe_flags(RECIPE | {"fov": "seg", "fov_mode": "dim"})


def test_extra_figures_join_their_run(tmp_path):
    runs = [write_run(tmp_path / f"r{s}", s, 0.8) for s in (0, 1)]
    (recipe,) = group_runs(runs, {runs[1]: {"lungs_pneumonia": 0.5}, runs[0]: {"lungs_pneumonia": 0.3}})
    assert recipe.summary()["figures"]["lungs_pneumonia"]["mean"] == pytest.approx(0.4)


def test_command_reads_the_shipped_default(capsys):
    folder = str(ROOT / "weights" / "efficientnet_lite0_shift")
    assert recipes_main([folder, "--json"]) == 0
    (recipe,) = json.loads(capsys.readouterr().out)["recipes"]
    recorded = ModelConfig.from_json(ROOT / "weights" / "efficientnet_lite0_shift" / "config.json")
    assert recipe["figures"]["worst_specificity"]["mean"] == recorded.stress_metrics["stress_worst"]["specificity"]
    assert recipe["seeds"] == [recorded.train["args"]["seed"]]


def test_a_recorded_comparison_lands_in_the_config_and_the_model_card(tmp_path, capsys):
    shipped = ROOT / "weights" / "efficientnet_lite0_shift"
    target = tmp_path / "default"
    shutil.copytree(shipped, target)
    other = write_run(tmp_path / "lungs0", 0, 0.9, lung_penalty=1.0)
    assert recipes_main([str(shipped), other, "--record", str(target)]) == 0
    config = ModelConfig.from_json(target / "config.json")
    assert [r["seeds"] for r in config.recipes] == [[0], [0]]
    assert config.weights_sha256 == ModelConfig.from_json(shipped / "config.json").weights_sha256
    assert (target / "model.safetensors").read_bytes() == (shipped / "model.safetensors").read_bytes()
    card = (target / "README.md").read_text()
    assert "## Recipes compared over seeds" in card and "| R2 | 0 | 0.990 [0.990, 0.990]" in card
    assert "--lung-penalty 1.0" in card


def test_a_recorded_lung_share_is_read_when_the_weights_are_gone(tmp_path, capsys):
    run = write_run(tmp_path / "kept", 0, 0.8)
    share = {"PNEUMONIA": {"n": 80, "median": 0.61, "mean": 0.6}, "NORMAL": {"n": 70, "median": 0.7, "mean": 0.7}}
    (tmp_path / "kept" / "lung_share.json").write_text(json.dumps(share | {"uniform": 0.32}))
    assert recipes_main([run, "--json"]) == 0
    (recipe,) = json.loads(capsys.readouterr().out)["recipes"]
    assert recipe["figures"]["lungs_pneumonia"]["values"] == [0.61]
    assert recipe["figures"]["lungs_normal"]["values"] == [0.7]
