"""Site adaptation: nothing changes for a batch too small to estimate from, the model is restored,
a shifted site's batch moves toward the clean answers, and a batch from two sources is refused."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from cxr.adapt import MIN_IMAGES, adapted, adapted_logits, trained_norms
from cxr.adapt_study import mixed_batches
from cxr.evaluation import ShiftedImages, cached_images, validation_samples
from cxr.forward import batched_logits
from cxr.hub import DEFAULT_MODEL, WEIGHTS_DIR
from cxr.metrics import probabilities
from cxr.model import load_model
from cxr.ood import OodScorer
from tests.conftest import EXAMPLES, ROOT

DEFAULT = WEIGHTS_DIR / DEFAULT_MODEL


@pytest.fixture(scope="module")
def default_model():
    model, config = load_model(DEFAULT)
    return model, config, OodScorer.from_folder(DEFAULT, config)


@pytest.fixture(scope="module")
def site(data_dir, default_model, tmp_path_factory):
    """160 validation X-rays of the default's own split (seeded pick) and their labels, as a ShiftedImages."""
    _, config, _ = default_model
    samples = validation_samples(data_dir, config)
    pick = np.sort(np.random.default_rng(0).choice(len(samples), 160, replace=False))
    images = cached_images(samples, config, "val", tmp_path_factory.mktemp("cache"))[torch.from_numpy(pick)]
    return ShiftedImages(images), np.array([samples[i].label for i in pick])


def _example_batch(model) -> torch.Tensor:
    from cxr.io import read_xray
    from cxr.model import preprocessing_for

    return torch.stack([preprocessing_for(model).tensor(read_xray(path)) for path in EXAMPLES])


def test_a_batch_below_the_minimum_changes_nothing(default_model):
    model, config, ood = default_model
    one = _example_batch(model)[:1]
    before = batched_logits(model, one)
    with adapted(model, config, one, ood) as adaptation:
        inside = batched_logits(model, one)
    assert not adaptation.adapted and f"at least {MIN_IMAGES}" in adaptation.message()
    np.testing.assert_array_equal(inside, before)


def test_only_the_layers_trained_on_xrays_adapt_and_all_are_restored(default_model, site):
    model, config, ood = default_model
    norms = trained_norms(model, config)
    names = {id(m): n for n, m in model.named_modules()}
    assert norms and all(not names[id(m)].startswith(("blocks.0", "blocks.1", "blocks.2", "blocks.3")) for m in norms)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    images, _ = site
    with adapted(model, config, images["clean"], check_mixture=False) as adaptation:
        moved = [k for k, v in model.state_dict().items() if not torch.equal(v, state[k])]
    assert adaptation.adapted and moved and all("running" in k for k in moved)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_a_shifted_site_moves_toward_the_clean_answers(default_model, site):
    """Cropped borders (the bank's worst change): after adaptation each image's probability is nearer
    its clean-image probability than before, on average."""
    model, config, ood = default_model
    images, _ = site
    clean = probabilities(batched_logits(model, images["clean"]), config.temperature, config.logit_bias)
    shifted = probabilities(batched_logits(model, images["crop_22"]), config.temperature, config.logit_bias)
    logits, reports = adapted_logits(model, config, images["crop_22"], check_mixture=False)
    adapted_probs = probabilities(logits, config.temperature, config.logit_bias)
    assert reports[0].adapted
    assert np.abs(adapted_probs - clean).mean() < np.abs(shifted - clean).mean()


def test_a_batch_from_two_sources_is_not_adapted(default_model, site):
    model, config, ood = default_model
    images, labels = site
    for name, batch in mixed_batches(images, labels).items():
        with adapted(model, config, batch, ood) as adaptation:
            assert not adaptation.adapted and "two sources" in adaptation.reason, name
    with adapted(model, config, images["clean"], ood) as adaptation:  # one site: adapted
        assert adaptation.adapted, adaptation.reason


@pytest.mark.slow
def test_predict_command_says_when_it_cannot_adapt_and_answers_as_without(tmp_path):
    plain = subprocess.run(
        [sys.executable, "-m", "cxr.cli.predict", str(ROOT / "examples")], capture_output=True, text=True, cwd=ROOT
    )
    adapted_run = subprocess.run(
        [sys.executable, "-m", "cxr.cli.predict", str(ROOT / "examples"), "--adapt"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert plain.returncode == adapted_run.returncode == 0, adapted_run.stderr[-2000:]
    assert f"site adaptation skipped: {len(EXAMPLES)} image(s)" in adapted_run.stderr
    assert list(csv.DictReader(io.StringIO(plain.stdout))) == list(csv.DictReader(io.StringIO(adapted_run.stdout)))


@pytest.mark.slow
def test_evaluate_adapt_on_a_folder_of_one_site(data_dir, tmp_path):
    """A Kaggle-layout folder of 40 validation X-rays: adapted on as one batch, metrics printed."""
    folder = tmp_path / "site"
    for label in ("NORMAL", "PNEUMONIA"):
        (folder / label).mkdir(parents=True)
        for path in sorted((data_dir / "train" / label).glob("*.jpeg"))[:20]:
            shutil.copy(path, folder / label / path.name)
    command = [sys.executable, "-m", "cxr.cli.evaluate", "--data", str(folder), "--json"]
    plain = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    with_adapt = subprocess.run([*command, "--adapt"], capture_output=True, text=True, cwd=ROOT)
    assert plain.returncode == with_adapt.returncode == 0, with_adapt.stderr[-2000:]
    report, adapted_report = json.loads(plain.stdout.splitlines()[-1]), json.loads(with_adapt.stdout.splitlines()[-1])
    assert adapted_report["n"] == report["n"] == 40
    assert adapted_report["adaptation"].startswith("site adaptation: BatchNorm statistics re-estimated on 40")
    assert adapted_report["ece"] != report["ece"]  # the statistics did change the answers
