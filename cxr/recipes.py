"""Recipes over seeds: trained folders grouped by how they were trained, each figure as mean and spread.

One seed's figure on the stress bank's hardest shift is partly luck (the same recipe has read crop_22
specificity 0.81 and 0.65 on two seeds), so recipes are compared by the mean over their seeds and
judged by their worst seed too. The figures are those each training run recorded (``config.json``:
clean validation and the bank at the run's own threshold), the ones ``cxr.cli.evaluate --stress``
reports.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cxr.model import CONFIG_NAME, ModelConfig

# Arguments that say where or how fast a run went, or which draw it was: not part of its recipe.
NOT_RECIPE = {"seed", "out", "resume", "max_minutes", "threads", "push_to_hub", "cache_dir", "data", "lung_masks"}
NOT_RECIPE |= {"ood_draws"}  # the out-of-population check's fit: the classifier is the same
# Arguments that shape a recipe only beside another (a run without the penalty ignores its dilation).
ONLY_WITH = {"lung_dilate": "lung_penalty", "fov_mode": "fov"}


@dataclass
class Recipe:
    """The runs of one recipe and their figures, one value per run in ``runs`` order."""

    args: dict
    runs: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    figures: dict[str, list[float]] = field(default_factory=dict)

    def summary(self) -> dict:
        """Per figure: mean, min, max and the values; plus the runs and their seeds."""
        spread = {
            name: {"mean": float(np.mean(v)), "min": float(np.min(v)), "max": float(np.max(v)), "values": v}
            for name, v in self.figures.items()
        }
        return {"recipe": recipe_flags(self.args), "runs": self.runs, "seeds": self.seeds, "figures": spread}


def recipe_flags(args: dict) -> str:
    """The recipe as train.py flags, without what is not part of it (seed, paths, budgets)."""
    flags = []
    for key, value in sorted(args.items()):
        if key in NOT_RECIPE or value in (None, False, "", 0) or not args.get(ONLY_WITH.get(key, key)):
            continue
        flags.append(f"--{key.replace('_', '-')}" + ("" if value is True else f" {value}"))
    return " ".join(flags)


def run_figures(config: ModelConfig) -> dict[str, float]:
    """A trained folder's recorded figures: clean validation, and the bank's worst at its threshold."""
    clean, bank = config.val_metrics, config.stress_metrics
    worst = bank.get("stress_worst", {})
    figures = {
        "clean_auc": clean.get("auc"),
        "clean_sensitivity": clean.get("sensitivity"),
        "clean_specificity": clean.get("specificity"),
        "clean_ece": clean.get("ece"),
        "worst_sensitivity": worst.get("sensitivity"),
        "worst_specificity": worst.get("specificity"),
        "worst_ece": worst.get("ece"),
        "crop_22_specificity": bank.get("stress", {}).get("crop_22", {}).get("specificity"),
    }
    return {name: float(value) for name, value in figures.items() if value is not None}


def group_runs(folders: Iterable[str | Path], extra: dict[str, dict[str, float]] | None = None) -> list[Recipe]:
    """Folders grouped by recipe, in first-seen order; ``extra`` adds figures per folder (by its path)."""
    recipes: dict[str, Recipe] = {}
    for folder in folders:
        config = ModelConfig.from_json(Path(folder) / CONFIG_NAME)
        args = config.train.get("args", {})
        recipe = recipes.setdefault(recipe_flags(args), Recipe(args))
        recipe.runs.append(str(folder))
        recipe.seeds.append(int(args.get("seed", 0)))
        figures = run_figures(config) | (extra or {}).get(str(folder), {})
        for name, value in figures.items():
            recipe.figures.setdefault(name, []).append(value)
    return list(recipes.values())
