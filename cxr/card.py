"""Write a model card (``README.md`` beside the weights) from what ``config.json`` records."""

from __future__ import annotations

from pathlib import Path

from cxr.model import CONFIG_NAME, ModelConfig

CARD = """---
license: cc-by-4.0
library_name: timm
pipeline_tag: image-classification
tags: [medical-imaging, chest-x-ray, pneumonia, grad-cam]
datasets: [kermany-2018-chest-xray]
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

Reproduce: `python -m cxr.evaluate --data ../shared/data/chest_xray --split val --weights {folder}`.
The threshold is the highest one that keeps validation sensitivity >= {target:.2f} (screening:
missing pneumonia costs more than a false alarm). Probabilities are Platt-scaled,
P = sigmoid(logit / temperature + bias), fitted by log-loss on the same validation split and on
the fp16 weights as shipped (`python -m cxr.calibrate` repeats that step on saved weights).

## Limits
- Validation carved from the training distribution is much easier than unseen data: expect
  lower AUC and, above all, lower specificity on new patients or another hospital. A validation
  figure near 1.0 says little about deployment.
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


def describe_recipe(config: ModelConfig) -> str:
    train, args = config.train, config.train.get("args", {})
    start = "ImageNet EfficientNet-Lite0 weights, fine-tuned" if args.get("pretrained") else "trained from scratch"
    frozen = f"; parameters before `{args['freeze_until']}` frozen" if args.get("freeze_until") else ""
    return (
        f"timm `{config.architecture}`, {config.in_chans}-channel {config.input_size} px input, one logit; "
        f"{start}{frozen}. {train['epochs_run']} epochs run (best by validation AUC: {train['best_epoch']}), "
        f"batch {args['batch_size']}, AdamW lr {args['lr']} one-cycle, weight decay {args['weight_decay']}, "
        f"EMA {args['ema']}; loss {train['loss']}, sampler {train['sampler']}; batch augmentation: rotation, "
        f"shift, scale, brightness, contrast, gamma{', horizontal flip' if args.get('hflip') else ''}. "
        f"{train['minutes']} minutes on 2 CPU cores.\n\n    {training_command(args)}"
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


def write_model_card(folder: str | Path) -> Path:
    """Render ``folder/README.md`` from ``folder/config.json``."""
    folder = Path(folder)
    config = ModelConfig.from_json(folder / CONFIG_NAME)
    split = config.train["split"]
    card = CARD.format(
        architecture=config.architecture,
        train_images=config.train["train_images"],
        val_images=config.train["val_images"],
        val_patients=len(split["val_patients"]),
        seed=split["seed"],
        fraction=split["val_fraction"],
        recipe=describe_recipe(config),
        target=config.train["args"]["target_sensitivity"],
        folder=folder.as_posix(),
        row=metrics_row(config),
    )
    path = folder / "README.md"
    path.write_text(card)
    return path
