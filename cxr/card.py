"""Write a model card (``README.md`` beside the weights) from what ``config.json`` records."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import EvalResult, ModelCardData

from cxr.model import CONFIG_NAME, ENSEMBLE_NAME, ModelConfig, is_ensemble

CARD = """---
{metadata}
---

# {architecture}: pneumonia vs normal on pediatric chest X-rays

**Research model, not a diagnostic device.** Not validated for clinical use.

## Data
Kermany, Zhang & Goldbaum (2018), "Labeled Optical Coherence Tomography (OCT) and Chest X-Ray
Images for Classification", Mendeley Data v2, doi:10.17632/rscbjbr9sj.2, CC BY 4.0. Pediatric
(ages 1-5) anterior-posterior chest X-rays from Guangzhou Women and Children's Medical Center,
224 x 224 grayscale. These weights are trained on that data and carry its attribution.

## Split
The Kaggle `train/` folder (5,216 images, 74 % pneumonia) split by patient, stratified by class:
{train_images} training and {val_images} validation images; validation = {val_patients} patients
(`split_by_patient`, seed {seed}, fraction {fraction}; the patient IDs are listed in `config.json`).
No image of a validation patient, nor any duplicate of one, was used for training. The official
test split (624 images) was not available here; nothing was tuned on it.

## Recipe
{recipe}

## Validation metrics (patient-grouped split, at the shipped threshold)
| AUC (95 % CI) | accuracy | sensitivity | specificity | ECE (15 bins) | threshold | temperature | logit bias |
|---|---|---|---|---|---|---|---|
{row}

Reproduce: `python -m cxr.cli.evaluate --data ../shared/data/chest_xray --split val --stress --weights {folder}`.

## How the threshold and calibration were chosen
{rule}

{transfer}

## Field of view
{fov}

## Recipes compared over seeds
{recipes}

## Under acquisition changes (the shift-stress bank, at the shipped threshold)
Every validation X-ray changed the same way by each entry of `cxr.stress.BANK` (seeded;
torchvision ops): exposure, contrast, blur, sharpening, detector noise, JPEG, another resize path,
framing (borders cropped 8/15/22 % per side, padding), rotation, marker letters erased or added.

{stress}

Expected figures by family of change (the worst shift of each family, at the shipped threshold):

{families}

## Out-of-population check ("unusual")
{ood}

## Site adaptation (batches only)
`cxr-predict --adapt` and `cxr-evaluate --adapt` treat a folder as one site's batch: the BatchNorm
layers trained on X-rays re-estimate their statistics on its unlabelled images (AdaBN with the
training statistics as a prior of 64 images; layers that kept their ImageNet statistics stay), then
every image is scored. Never on a single image; below 32 images, or for a folder that looks like two
sources thrown together, it is skipped and one line says why. See `docs/results.md` for what it
does on the bank, where it helps and where it does not.

## Limits
- Validation carved from the training distribution is much easier than unseen data. X-rays from
  other hospitals or periods will score lower: the first shipped model read AUC 0.998 and
  specificity 0.995 here but 0.978 and 0.739 on the official test split (normal X-rays from another
  acquisition period). {expectation} A validation figure near 1.0 says little about deployment.
- One hospital, children aged 1-5: adults, other scanners, lateral views and CT are out of scope.
- Images were squashed to a square; in this dataset pneumonia images tend to be smaller and
  wider than normal ones, a shortcut the model may partly use.
- Grad-CAM shows where the evidence for the decision lies at 7 x 7 resolution; it is not a
  lesion segmentation.
"""


def training_command(args: dict) -> str:
    """The train.py call that reproduces a run, rebuilt from the arguments it recorded."""
    flags = []
    for key, value in args.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value not in (None, False, ""):
            flags.append(f"{flag} {value}")
    return "python train.py " + " ".join(flags)


AUGMENTATIONS = {
    "basic": "rotation, shift, scale, brightness, contrast, gamma",
    "shift": "acquisition shift (`cxr.augment`): random zoom-in crops to 35 % of the area, padding, "
    "rotation, brightness, contrast, gamma, blur, JPEG, detector noise, erased patches",
    "zoom": "acquisition shift (`cxr.augment`) over the whole framing range: zoom-in crops to 20 % of the area, "
    "zoom-out to 1.6x the side, rotation, brightness, contrast, gamma, blur, JPEG, detector noise, erased patches",
}


def describe_recipe(config: ModelConfig) -> str:
    """One paragraph and the train.py command for a model; for an ensemble, one per member."""
    if config.members:
        members = config.train.get("members", {})
        lines = [f"An ensemble of {len(config.members)} networks, each with its own calibration (subfolders):"]
        lines += [f"- `{name}`: `{training_command(members.get(name, {}))}`" for name in config.members]
        return "\n".join(lines) + f"\n\n{config.train.get('minutes', 0)} training minutes in all on 2 CPU cores."
    if config.train.get("soup_of"):
        soup = config.train["soup_of"]
        lines = [f"The element-wise mean of the weights of {len(soup)} fine-tunes of one ImageNet start (`cxr.soup`):"]
        lines += [f"- `{name}`: `{training_command(args)}`" for name, args in soup.items()]
        return "\n".join(lines) + f"\n\n{config.train.get('minutes', 0)} training minutes in all on 2 CPU cores."
    train, args = config.train, config.train.get("args", {})
    start = "ImageNet EfficientNet-Lite0 weights, fine-tuned" if args.get("pretrained") else "trained from scratch"
    frozen = f"; parameters before `{args['freeze_until']}` frozen" if args.get("freeze_until") else ""
    probe = f"; classifier alone for the first {args['probe_epochs']} epochs" if args.get("probe_epochs") else ""
    chosen = "last epoch kept" if args.get("select") == "last" else f"best by validation AUC: {train['best_epoch']}"
    augmentation = AUGMENTATIONS[args.get("augment", "basic")]
    return (
        f"timm `{config.architecture}`, {config.in_chans}-channel {config.input_size} px input, one logit; "
        f"{start}{frozen}{probe}. {train['epochs_run']} epochs run ({chosen}), "
        f"batch {args['batch_size']}, AdamW lr {args['lr']} one-cycle, weight decay {args['weight_decay']}, "
        f"EMA {args['ema']}; loss {train['loss']}, sampler {train['sampler']}; batch augmentation: "
        f"{augmentation}{', horizontal flip' if args.get('hflip') else ''}. "
        f"{train['minutes']} minutes on 2 CPU cores.\n\n    {training_command(args)}"
    )


def describe_rule(config: ModelConfig) -> str:
    """How temperature, bias and threshold were fitted, from what the config records."""
    target = config.train.get("args", {}).get("target_sensitivity", 0.97)
    rule = config.calibration.get("rule")
    pooled = f"the clean validation X-rays and their {len(config.calibration.get('fit_on', [])) - 1} shifted copies"
    thresholds = {
        "stress": f"the highest that keeps sensitivity >= {target:.2f} both on the clean split and on that pool",
        "families": f"the highest that keeps sensitivity >= {target:.2f} on the clean split and on each family "
        "of shifts (framing, intensity, texture, geometry, markers) pooled; each family weighs the same in the fit",
        "worst": f"the highest that keeps sensitivity >= {target:.2f} on the clean split and on every single shift",
    }
    if rule in thresholds:
        return (
            f"Rule `{rule}` (`cxr.calibrate`): Platt scaling, P = sigmoid(logit / temperature + bias), fitted by "
            f"log-loss on {pooled} pooled; the threshold is {thresholds[rule]} (screening: a missed pneumonia "
            "costs more than a false alarm). The rule was chosen by transfer: fitted without one family of "
            "shifts and scored on it (`python -m cxr.cli.calibrate --compare`). Fitted on the clean split alone, "
            "calibration was over-confident on X-rays from another period."
        )
    return (
        "Platt scaling fitted by log-loss on the clean validation split; the threshold is the highest that "
        f"keeps validation sensitivity >= {target:.2f}. (Not refitted with a stress rule.)"
    )


def transfer_table(config: ModelConfig) -> str:
    """Each rule's worst held-out-family figures (leave one family of shifts out), the chosen one marked."""
    comparison = config.calibration.get("transfer")
    if not comparison or "rules" not in comparison:
        return ""
    rows = [
        "Transfer (fitted without one family of shifts on half the patients, scored on that family on the "
        "other half; worst over the five families):",
        "",
        "| rule | worst sensitivity | worst specificity | worst ECE | mean specificity |",
        "|---|---|---|---|---|",
    ]
    for rule, result in comparison["rules"].items():
        s = result["summary"]
        name = f"**{rule}** (shipped)" if rule == config.calibration.get("rule") else rule
        rows.append(
            f"| {name} | {s['worst_sensitivity']:.3f} | {s['worst_specificity']:.3f} | {s['worst_ece']:.3f} "
            f"| {s['mean_specificity']:.3f} |"
        )
    return "\n".join(rows)


def describe_fov(folder: Path, config: ModelConfig) -> str:
    """What the field-of-view crop is and how well its segmenter does, from ``fov/config.json``."""
    if not config.fov:
        return "None: the network sees the whole image, squashed to a square."
    import json

    segmenter = json.loads((folder / config.fov["folder"] / CONFIG_NAME).read_text())
    dice = (segmenter.get("train") or {}).get("held_out_dice", {})
    held = (segmenter.get("train") or {}).get("held_out_masks", "?")
    found = (
        f"Held-out Dice {dice.get('mean', float('nan')):.3f} (median {dice.get('median', float('nan')):.3f}) "
        f"on {held} masks of the validation patients. The segmenter was trained on human-drawn lung masks "
        "from the V7 Labs COVID-19 X-ray dataset (CC BY 4.0; credit: V7 Labs) paired with Kermany images."
    )
    if segmenter.get("mode") == "dim":
        return (
            "Lung-masked input: every X-ray keeps its frame, and what lies outside its lungs (grown by "
            f"{segmenter['dilate']:.1%} of the side) is darkened to {segmenter['outside']:.0%} of its brightness "
            f"before the network sees it, in training and at inference alike. A lung segmenter (`fov/`, timm "
            f"`{segmenter['encoder']}` encoder with a light decoder, {segmenter['size']} px) finds the lungs. " + found
        )
    return (
        f"Every X-ray is cut to its lung fields before the network sees it, in training and at inference "
        f"alike: a lung segmenter (`fov/`, timm `{segmenter['encoder']}` encoder with a light decoder, "
        f"{segmenter['size']} px) finds the lungs; their box, widened by {segmenter['margin']:.0%} per side "
        f"and to at least {segmenter['min_side']:.0%} of the image each way, is resized to the input. "
        + found
        + " The Grad-CAM map is computed on the crop and drawn back in the whole image's frame."
    )


def family_table(config: ModelConfig) -> str:
    """The bank's worst sensitivity, specificity and ECE per family of shifts."""
    from cxr.stress import BANK, family_of

    bank = config.stress_metrics.get("stress")
    if not bank:
        return "Not measured."
    worst: dict[str, dict] = {}
    for shift in BANK:
        if shift.name in bank:
            entry, m = worst.setdefault(family_of(shift), {}), bank[shift.name]
            for key, pick in (("sensitivity", min), ("specificity", min), ("ece", max), ("auc", min)):
                entry[key] = pick(entry.get(key, m[key]), m[key])
    rows = ["| family | AUC | sensitivity | specificity | ECE |", "|---|---|---|---|---|"]
    for family, m in worst.items():
        rows.append(f"| {family} | {m['auc']:.3f} | {m['sensitivity']:.3f} | {m['specificity']:.3f} | {m['ece']:.3f} |")
    return "\n".join(rows)


RECIPE_COLUMNS = (
    ("clean_auc", "clean AUC"),
    ("worst_sensitivity", "worst sens"),
    ("worst_specificity", "worst spec"),
    ("worst_ece", "worst ECE"),
    ("crop_22_specificity", "crop_22 spec"),
    ("lungs_pneumonia", "map on lungs, PNEUMONIA"),
)


def recipes_table(config: ModelConfig) -> str:
    """Every recipe compared when this model was chosen: each figure's mean [min, max] over its seeds."""
    if not config.recipes:
        return "No comparison over seeds was recorded for this model."

    def cell(figures: dict, name: str) -> str:
        spread = figures.get(name)
        return f"{spread['mean']:.3f} [{spread['min']:.3f}, {spread['max']:.3f}]" if spread else "-"

    header = "| recipe | seeds | " + " | ".join(title for _, title in RECIPE_COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(RECIPE_COLUMNS) + 2)]
    for i, recipe in enumerate(config.recipes, 1):
        cells = " | ".join(cell(recipe["figures"], name) for name, _ in RECIPE_COLUMNS)
        lines.append(f"| R{i} | {', '.join(map(str, recipe['seeds']))} | {cells} |")
    lines.append("")
    lines += [f"- R{i}: `{recipe['recipe']}`" for i, recipe in enumerate(config.recipes, 1)]
    return (
        "Each figure's mean over the recipe's seeds [lowest, highest], on the validation split and the\n"
        "stress bank, each run at its own threshold (`python -m cxr.cli.recipes RUN... --lungs`). Seeds whose\n"
        "weights were not kept, and what the comparison found: `docs/results.md` in the project's repository.\n\n"
        + "\n".join(lines)
    )


def describe_ood(config: ModelConfig) -> str:
    """The out-of-population check's rule and measured false alarms."""
    ood = config.ood
    if not ood:
        return "Not fitted for these weights."
    alarms = ood.get("false_alarm")
    layer = f"`{ood['layer']}` (pooled)" if ood.get("layer") else "the classifier's input features"
    text = (
        f"Squared Mahalanobis distance of {layer} from the training X-rays (mean and Ledoit-Wolf covariance "
        f"of {ood.get('fit_on', 'the training images')}); above {ood['threshold']:.1f} an image is flagged "
        '"unusual": outside the pediatric chest X-ray population the model was trained on.'
    )
    if alarms:
        worst = max(alarms["by_shift"].items(), key=lambda item: item[1]) if alarms.get("by_shift") else None
        rule = f" (the lowest that {ood['rule']})" if ood.get("rule") else ""
        text += (
            f" The threshold is set by a stated false-alarm rate{rule}: {alarms['clean']:.1%} of the clean "
            f"validation children and {alarms['bank_pooled']:.1%} of their copies changed by the stress bank are "
            "flagged"
            + (f" (most under `{worst[0]}`: {worst[1]:.1%})." if worst else ".")
            + " How many adult films or other populations it flags is not measured here (none are available)."
        )
    return text


def stress_table(config: ModelConfig) -> str:
    """The bank's results as a Markdown table, worst last; a note when none were measured."""
    bank = config.stress_metrics.get("stress")
    if not bank:
        return "Not measured for these weights: run `python -m cxr.cli.calibrate` to record it."
    rows = ["| change | AUC | sensitivity | specificity | accuracy | ECE |", "|---|---|---|---|---|---|"]
    for name, m in [*bank.items(), ("**worst of each**", config.stress_metrics["stress_worst"])]:
        cells = (f"{m[k]:.3f}" for k in ("auc", "sensitivity", "specificity", "accuracy", "ece"))
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def expectation(config: ModelConfig) -> str:
    worst = config.stress_metrics.get("stress_worst")
    if not worst:
        return ""
    return (
        f"Under the stress bank these weights keep AUC >= {worst['auc']:.3f} and specificity >= "
        f"{worst['specificity']:.3f} at the shipped threshold (ECE <= {worst['ece']:.3f}); expect "
        "figures of that order, or lower, on X-rays from another source."
    )


def metrics_row(config: ModelConfig) -> str:
    """The validation metrics as one Markdown table row."""
    m = config.val_metrics
    ci = "–".join(f"{x:.4f}" for x in m["auc_ci95"]) if m.get("auc_ci95") else "n/a"
    ece = f"{m['ece']:.4f}" if "ece" in m else "n/a"
    cells = [
        f"{m['auc']:.4f} ({ci})",
        *(f"{m[k]:.4f}" for k in ("accuracy", "sensitivity", "specificity")),
        ece,
        f"{config.threshold:.3f}",
        f"{config.temperature:.3f}",
        f"{config.logit_bias:.3f}",
    ]
    return "| " + " | ".join(cells) + " |"


# The Hub's metric ids for what the validation records.
METRIC_TYPES = {"auc": "roc_auc", "accuracy": "accuracy", "sensitivity": "recall", "specificity": "specificity"}


def card_metadata(config: ModelConfig, name: str) -> ModelCardData:
    """The card's YAML header: Hub tags and the validation figures as model-index eval results."""
    dataset = {
        "task_type": "image-classification",
        "dataset_type": "kermany-2018-chest-xray",
        "dataset_name": "Kermany 2018 chest X-ray, patient-grouped validation carved from train",
        "dataset_split": "validation",
    }
    results = [
        EvalResult(**dataset, metric_type=METRIC_TYPES[key], metric_name=key, metric_value=round(value, 4))
        for key, value in config.val_metrics.items()
        if key in METRIC_TYPES
    ]
    worst = config.stress_metrics.get("stress_worst", {})
    results += [
        EvalResult(
            **dataset,
            dataset_config="shift-stress-bank-worst",  # the worst of cxr.stress.BANK, each metric on its own
            metric_type=METRIC_TYPES[key],
            metric_name=f"{key} (worst under the shift-stress bank)",
            metric_value=round(value, 4),
        )
        for key, value in worst.items()
        if key in METRIC_TYPES
    ]
    return ModelCardData(
        model_name=name,
        license="cc-by-4.0",
        library_name="timm",
        pipeline_tag="image-classification",
        tags=["medical-imaging", "chest-x-ray", "pneumonia", "grad-cam", "research-only"],
        datasets=["kermany-2018-chest-xray"],
        eval_results=results or None,
    )


def write_model_card(folder: str | Path, published_as: str | Path | None = None) -> Path:
    """Render ``folder/README.md`` from ``folder/config.json`` (an ensemble's: ``ensemble.json``).

    ``published_as`` is the folder's final place when it is written in a staging folder.
    """
    folder = Path(folder)
    shown = Path(published_as or folder)
    config = ModelConfig.from_json(folder / (ENSEMBLE_NAME if is_ensemble(folder) else CONFIG_NAME))
    split = config.train["split"]
    card = CARD.format(
        metadata=card_metadata(config, shown.name).to_yaml(),
        architecture=config.architecture,
        train_images=config.train["train_images"],
        val_images=config.train["val_images"],
        val_patients=len(split["val_patients"]),
        seed=split["seed"],
        fraction=split["val_fraction"],
        recipe=describe_recipe(config),
        target=config.train["args"]["target_sensitivity"],
        folder=shown.as_posix(),
        row=metrics_row(config),
        rule=describe_rule(config),
        stress=stress_table(config),
        expectation=expectation(config),
        transfer=transfer_table(config),
        fov=describe_fov(folder, config),
        families=family_table(config),
        ood=describe_ood(config),
        recipes=recipes_table(config),
    )
    path = folder / "README.md"
    path.write_text(card)
    return path
