"""Lung masks for training: matched to their images, moved with them, and a penalty that moves the evidence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxr.augment import ShiftAugment
from cxr.cam import FinalActivations, has_linear_pooled_head
from cxr.data import list_samples
from cxr.lungs import dilate, mask_rows, masks_for, off_lung_share
from cxr.model import ModelConfig, build_model


@pytest.fixture(scope="module")
def masks_dir(data_dir):
    return data_dir.parent / "lung_masks"


def test_masks_are_matched_to_their_images(data_dir, masks_dir):
    samples = list_samples(data_dir / "train")
    masks, found = masks_for(samples, masks_dir, 64)
    listed = {r["image"] for r in mask_rows(masks_dir) if r["split"] == "train"}
    assert int(found.sum()) == len(listed) > 900
    assert {samples[i].path.name for i in np.flatnonzero(found.numpy())} == listed
    drawn = {r["image"]: float(r["lung_fraction"]) for r in mask_rows(masks_dir)}
    share = masks.float().mean(dim=(1, 2, 3))
    for i in np.flatnonzero(found.numpy()):  # each image got its own mask: the lung fraction masks.csv records
        assert float(share[i]) == pytest.approx(drawn[samples[i].path.name], abs=0.03), samples[i].path.name
    assert masks[~found].sum() == 0


def test_dilation_grows_and_keeps_the_mask():
    mask = torch.zeros(1, 1, 32, 32, dtype=torch.uint8)
    mask[0, 0, 10:20, 12:18] = 1
    grown = dilate(mask, 3)
    assert grown.dtype == torch.uint8 and bool((grown >= mask).all())
    assert int(grown.sum()) == (10 + 6) * (6 + 6)
    assert torch.equal(dilate(mask, 0), mask)


def test_off_lung_share_counts_evidence_of_either_sign_off_the_mask():
    mask = torch.zeros(2, 1, 28, 28)
    mask[:, :, :, :14] = 1  # the left half is lung
    evidence = torch.zeros(2, 7, 7)
    evidence[0, :, :2] = 3.0  # all on the lungs
    evidence[1, :, 5:] = -2.0  # all off them, arguing for health
    assert off_lung_share(evidence, mask).tolist() == pytest.approx([0.0, 1.0])


def test_penalty_moves_the_evidence_onto_the_lungs():
    """A few steps on the penalty alone lower the share off the lungs: the gradient points the right way."""
    torch.manual_seed(0)
    model = build_model(ModelConfig("test_efficientnet", input_size=96))  # a 3 x 3 map
    images = torch.rand(8, 1, 96, 96)
    mask = torch.zeros(8, 1, 96, 96)
    mask[:, :, :, :40] = 1  # the left column of cells and a quarter of the middle one
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    shares = []
    for _ in range(15):
        with FinalActivations(model) as final:
            model(images)
            off = off_lung_share(final.maps(), mask).mean()
        optimizer.zero_grad()
        off.backward()
        optimizer.step()
        shares.append(off.item())
    assert shares[-1] < shares[0] - 0.05, shares


@pytest.mark.parametrize("architecture", ["test_efficientnet", "test_resnet"])
def test_class_activation_map_sums_to_the_logit(architecture):
    torch.manual_seed(0)
    model = build_model(ModelConfig(architecture, input_size=96)).eval()
    with torch.no_grad(), FinalActivations(model) as final:
        logits = model(torch.rand(3, 1, 96, 96))[:, 0]
        maps = final.maps()
    bias = model.get_classifier().bias
    assert maps.shape == (3, 3, 3)
    assert torch.allclose(maps.mean(dim=(1, 2)) + bias, logits, atol=1e-5)
    assert not model.global_pool._forward_pre_hooks  # the hook is gone after the block


def test_a_model_without_a_pooled_linear_head_has_no_class_activation_map():
    model = build_model(ModelConfig("test_vit", input_size=96))
    assert not has_linear_pooled_head(model)
    with pytest.raises(ValueError, match="no class activation map"):
        FinalActivations(model)


def test_masks_follow_the_framing_and_geometry_of_their_image():
    """An image that is its own mask stays aligned with it through the shift augmentation."""
    torch.manual_seed(0)
    masks = torch.zeros(16, 1, 96, 96, dtype=torch.uint8)
    masks[:, :, 20:80, 15:40] = 1
    masks[:, :, 20:80, 56:82] = 1
    images = (masks * 180 + 40).to(torch.uint8)
    has_mask = torch.tensor([True] * 12 + [False] * 4)
    augmented, moved = ShiftAugment(96).with_masks(images, masks, has_mask)
    assert augmented.shape == (16, 1, 96, 96) and moved.dtype == torch.uint8
    assert moved[~has_mask].sum() == 0
    for image, mask in zip(augmented[has_mask], moved[has_mask], strict=True):
        bright = image > (image.max() + image.min()) / 2  # midway: padding added by a zoom-out is dark too
        union = (bright | mask.bool()).sum()
        assert (bright & mask.bool()).sum() / union > 0.8  # exposure, blur and noise change, the outline stays
