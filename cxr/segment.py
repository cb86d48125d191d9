"""Train and score the lung segmenter behind the field-of-view crop (:mod:`cxr.fov`).

Masks: the human-drawn lung masks that :mod:`cxr.lungs` reads (its docstring describes them). They are
held out by patient: those of the classifier's patient-grouped validation
split (and of the official val folder) are never trained on, so the Dice reported is on children
the segmenter never saw, and the classifier's validation images are cropped by a segmenter that
never saw their masks.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from cxr.augment import RandomGamma
from cxr.data import LABELS, Sample, decode_samples, list_samples, split_by_patient
from cxr.fov import LungSegmenter, SegmenterConfig
from cxr.inference import Predictor
from cxr.lungs import mask_rows, read_mask

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MaskedImages:
    """Images with their lung masks: uint8 (N, 1, S, S) each (masks 0/1), and who they belong to."""

    images: torch.Tensor
    masks: torch.Tensor
    samples: list[Sample]

    def subset(self, keep: np.ndarray) -> MaskedImages:
        index = torch.from_numpy(np.flatnonzero(keep))
        return MaskedImages(self.images[index], self.masks[index], [self.samples[i] for i in index.tolist()])


def load_masked(data_dir: str | Path, masks_dir: str | Path, size: int = 224) -> MaskedImages:
    """Every image listed in ``masks_dir/masks.csv`` with its mask, decoded as the app decodes."""
    data_dir, masks_dir = Path(data_dir), Path(masks_dir)
    rows = mask_rows(masks_dir)
    samples = [Sample(data_dir / r["split"] / r["label"] / r["image"], LABELS.index(r["label"])) for r in rows]
    masks = [read_mask(masks_dir / r["split"] / r["label"] / r["mask"], size) for r in rows]
    masks = torch.from_numpy(np.stack(masks))[:, None].to(torch.uint8)
    return MaskedImages(decode_samples(samples, size), masks, samples)


def held_out(masked: MaskedImages, data_dir: str | Path, val_fraction: float = 0.15, seed: int = 0) -> np.ndarray:
    """True for masks of the classifier's validation patients (its patient-grouped split) or the official val."""
    _, val = split_by_patient(list_samples(Path(data_dir) / "train"), val_fraction, seed)
    val_patients = {s.patient for s in val}
    return np.array([s.patient in val_patients or s.path.parent.parent.name == "val" for s in masked.samples])


def joint_augment(size: int) -> v2.Compose:
    """Framing, geometry and exposure changes applied to an image and its mask together."""
    return v2.Compose(
        [
            v2.RandomApply([v2.RandomZoomOut(fill=0, side_range=(1.0, 1.6))], p=0.3),
            v2.RandomApply([v2.RandomResizedCrop(size, scale=(0.3, 1.0), ratio=(0.75, 1.33))], p=0.5),
            v2.Resize((size, size)),
            v2.RandomAffine(degrees=12, translate=(0.06, 0.06)),
            v2.RandomApply([v2.ColorJitter(brightness=0.3, contrast=0.4)], p=0.8),
            v2.RandomApply([RandomGamma(0.6, 1.6)], p=0.5),
            v2.RandomApply([v2.GaussianBlur(kernel_size=9, sigma=(0.3, 2.0))], p=0.2),
        ]
    )


def dice_per_image(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Hard Dice of ``logits > 0`` against 0/1 masks, one value per image."""
    predicted, truth = (logits > 0).flatten(1).float(), masks.flatten(1).float()
    overlap = (predicted * truth).sum(1)
    return 2 * overlap / (predicted.sum(1) + truth.sum(1)).clamp(min=1)


def _loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """BCE plus soft Dice: BCE for every pixel, Dice for the lungs' outline as a whole."""
    probability = torch.sigmoid(logits).flatten(1)
    truth = masks.flatten(1)
    soft_dice = 1 - (2 * (probability * truth).sum(1) + 1) / (probability.sum(1) + truth.sum(1) + 1)
    return F.binary_cross_entropy_with_logits(logits, masks) + soft_dice.mean()


@torch.no_grad()
def segmenter_dice(segmenter: LungSegmenter, masked: MaskedImages) -> np.ndarray:
    """Held-out Dice per image, at the segmenter's own resolution."""
    segmenter.eval()
    scores = []
    for start in range(0, len(masked.images), 64):
        images = masked.images[start : start + 64]
        masks = F.interpolate(masked.masks[start : start + 64].float(), size=(segmenter.config.size,) * 2)
        scores.append(dice_per_image(segmenter(segmenter.inputs(images)), masks > 0.5))
    return torch.cat(scores).numpy()


def train_segmenter(
    masked: MaskedImages,
    config: SegmenterConfig,
    epochs: int = 30,
    batch_size: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
    pretrained: bool = True,
) -> tuple[LungSegmenter, list[dict]]:
    """Fit a segmenter on ``masked`` with joint augmentation; returns it and the loss per epoch."""
    from cxr.pretrained import load_imagenet_encoder

    torch.manual_seed(seed)
    segmenter = LungSegmenter(config)
    if pretrained:
        load_imagenet_encoder(segmenter.encoder)
    optimizer = torch.optim.AdamW(segmenter.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * -(-len(masked.images) // batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    augment = joint_augment(masked.images.shape[-1])
    history = []
    for epoch in range(1, epochs + 1):
        segmenter.train()
        order, losses, started = torch.randperm(len(masked.images)), [], time.time()
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            pairs = [augment(tv_tensors.Image(masked.images[i]), tv_tensors.Mask(masked.masks[i])) for i in index]
            images = torch.stack([image for image, _ in pairs])
            masks = torch.stack([mask for _, mask in pairs]).float()
            masks = F.interpolate(masks, size=(config.size,) * 2, mode="nearest")
            loss = _loss(segmenter(segmenter.inputs(images)), masks)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), "seconds": time.time() - started})
        log.info("segmenter epoch %d loss %.4f (%.0f s)", epoch, history[-1]["loss"], history[-1]["seconds"])
    return segmenter.eval(), history


def cam_lung_share(predictor: Predictor, masked: MaskedImages) -> dict:
    """How much of each Grad-CAM map's mass lies on the lungs, by the decision it explains.

    The map is the one the app draws (in the whole image's frame, also for a model that looks at a
    lung crop); its mass on the mask over its total mass. ``uniform`` is what a map spread evenly
    would give: the lungs' share of the image.
    """
    shares: dict[str, list[float]] = {}
    for image_u8, mask in zip(masked.images, masked.masks, strict=True):
        prediction = predictor.predict(Image.fromarray(image_u8[0].numpy()))
        cam = prediction.cam.astype(np.float64)
        lungs = mask[0].numpy().astype(bool)
        shares.setdefault(prediction.label, []).append(float(cam[lungs].sum() / max(cam.sum(), 1e-12)))
    report = {
        label: {"n": len(v), "median": float(np.median(v)), "mean": float(np.mean(v))} for label, v in shares.items()
    }
    report["uniform"] = float(masked.masks.float().mean())
    return report


def held_out_lung_share(predictor: Predictor, data_dir: str | Path, masks_dir: str | Path) -> dict:
    """:func:`cam_lung_share` on the masked X-rays of the predictor's own validation patients (never
    trained on, neither by the classifier's lung penalty nor by the segmenter)."""
    split = predictor.config.train["split"]
    masked = load_masked(data_dir, masks_dir, predictor.preprocess.input_size)
    return cam_lung_share(predictor, masked.subset(held_out(masked, data_dir, split["val_fraction"], split["seed"])))
