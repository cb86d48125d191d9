"""Hub resolution, tested for real without internet: a pre-seeded cache and an unreachable endpoint.

huggingface_hub reads its settings at import, so each case runs in a fresh interpreter.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cxr.hub import DEFAULT_MODEL, WEIGHTS_DIR
from cxr.model import CONFIG_NAME, WEIGHTS_NAME, ModelConfig, build_model, save_model
from tests.conftest import ROOT, free_port

# The timm architecture of the bundled default (its folder is named after the recipe, not the backbone).
DEFAULT_ARCHITECTURE = ModelConfig.from_json(WEIGHTS_DIR / DEFAULT_MODEL / "config.json").architecture

REPO = "cxr-test/tiny-model"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
RESOLVE = (
    "import logging; logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(name)s %(message)s')\n"
    "from cxr import resolve_weights, load_model\n"
    "folder = resolve_weights(); print(folder); print(load_model(folder)[1].architecture)\n"
)


def seed_hub_cache(
    cache: Path, repo_id: str, commit: str, source: Path, ref: str = "main", names=(CONFIG_NAME, WEIGHTS_NAME)
) -> Path:
    """Lay out a Hub cache entry exactly as huggingface_hub writes one (blobs, refs, snapshots)."""
    repo_dir = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo_dir / "blobs").mkdir()
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / ref).write_text(commit)
    for name in names:
        data = (source / name).read_bytes()
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    return snapshot


def resolve(env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "CXR_MODEL"))}
    return subprocess.run(
        [sys.executable, "-c", RESOLVE], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def hub_cache(tmp_path):
    model_dir = tmp_path / "model"
    save_model(
        build_model(ModelConfig("test_resnet", input_size=64)), ModelConfig("test_resnet", input_size=64), model_dir
    )
    cache = tmp_path / "hub"
    snapshot = seed_hub_cache(cache, REPO, COMMIT, model_dir)
    return cache, snapshot


@pytest.mark.slow
@pytest.mark.parametrize("revision", [COMMIT, "main"])
def test_configured_repo_loads_from_offline_cache(hub_cache, revision):
    cache, snapshot = hub_cache
    result = resolve(
        {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "CXR_MODEL_REPO": REPO, "CXR_MODEL_REVISION": revision}
    )
    assert result.returncode == 0, result.stderr
    folder, architecture = result.stdout.split()
    assert Path(folder).resolve() == snapshot.resolve()
    assert architecture == "test_resnet"
    assert "WARNING" not in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("case", ["missing-repo-offline", "unreachable-endpoint"])
def test_hub_failure_falls_back_to_bundled_with_one_warning(tmp_path, case):
    env = {"HF_HUB_CACHE": str(tmp_path / "empty"), "CXR_MODEL_REPO": REPO, "CXR_MODEL_REVISION": COMMIT}
    if case == "missing-repo-offline":
        env["HF_HUB_OFFLINE"] = "1"
    else:  # nothing listens on this port: connection refused, as on a machine without network
        env["HF_ENDPOINT"] = f"http://127.0.0.1:{free_port()}"
    result = resolve(env)
    assert result.returncode == 0, result.stderr
    folder, architecture = result.stdout.split()
    assert Path(folder) == WEIGHTS_DIR / DEFAULT_MODEL
    assert architecture == DEFAULT_ARCHITECTURE
    ours = [line for line in result.stderr.splitlines() if line.startswith("WARNING cxr.hub")]
    assert len(ours) == 1 and REPO in ours[0], result.stderr


def test_no_repo_configured_means_bundled(monkeypatch):
    from cxr.hub import resolve_weights

    monkeypatch.delenv("CXR_MODEL_REPO", raising=False)
    assert resolve_weights() == WEIGHTS_DIR / DEFAULT_MODEL


@pytest.mark.slow
def test_a_trained_model_from_the_hub_cache_keeps_its_ood_check_and_evaluates(tmp_path, originals_dir):
    """A real trained folder as a Hub repo: the predictor gets its out-of-distribution file too,
    and `cxr-evaluate --weights org/name` measures exactly those weights."""
    from cxr.ood import OOD_NAME

    cache = tmp_path / "hub"
    names = (CONFIG_NAME, WEIGHTS_NAME, OOD_NAME, "README.md")
    seed_hub_cache(cache, REPO, COMMIT, WEIGHTS_DIR / DEFAULT_MODEL, names=names)
    env = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    script = (
        "from cxr import Predictor, resolve_weights\n"
        "predictor = Predictor.from_folder(resolve_weights())\n"
        "print(predictor.members[0].ood is not None, predictor.config.architecture)\n"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "CXR_MODEL"))}
    loaded = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**clean, **env, "CXR_MODEL_REPO": REPO},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert loaded.returncode == 0 and loaded.stdout.split() == ["True", DEFAULT_ARCHITECTURE], loaded.stderr[-2000:]

    def evaluate(weights: str) -> dict:
        data = ["--data", str(originals_dir)]
        command = [sys.executable, "-m", "cxr.cli.evaluate", *data, "--weights", weights, "--json"]
        result = subprocess.run(command, cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        return json.loads(result.stdout.strip().splitlines()[-1])

    assert evaluate(f"{REPO}@{COMMIT}") == evaluate(str(WEIGHTS_DIR / DEFAULT_MODEL))
    missing = subprocess.run(
        [sys.executable, "-m", "cxr.cli.evaluate", "--data", str(originals_dir), "--weights", "cxr-test/absent"],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 2 and "neither a folder nor a Hub repo" in missing.stderr
    assert "Traceback" not in missing.stderr


PUSH_AND_LOAD = """
import json, sys
import timm, torch
from PIL import Image
from cxr.hub import push_weights, resolve_weights
from cxr.model import load_model, preprocessing_for
folder, repo, image = sys.argv[1:]
commit = push_weights(folder, repo)
theirs = timm.create_model("hf-hub:" + repo, pretrained=True).eval()  # timm's own loader, from the Hub
transform = timm.data.create_transform(**timm.data.resolve_data_config(model=theirs))
resolved = resolve_weights(repo)  # the app's path: CXR_MODEL_REPO=repo
ours, config = load_model(resolved)
xray = Image.open(image).convert("L")
with torch.no_grad():
    timm_logit = theirs(transform(xray).unsqueeze(0)).item()
    cxr_logit = ours(preprocessing_for(ours)(xray)).item()
print(json.dumps({"commit": commit, "timm": timm_logit, "cxr": cxr_logit, "sha256": config.weights_sha256,
                  "files": sorted(p.name for p in resolved.iterdir())}))
"""


@pytest.mark.slow
def test_pushed_weights_load_in_timm_and_in_the_app_with_the_same_logits(local_hub, tmp_path):
    """`push_weights` (train.py --push-to-hub) → a local Hub endpoint → timm's ``hf-hub:`` loader and
    the app's ``resolve_weights`` both get these weights, with the logits of the bundled folder."""
    from cxr.model import load_model, preprocessing_for
    from cxr.ood import OOD_NAME
    from tests.conftest import EXAMPLES

    folder = WEIGHTS_DIR / DEFAULT_MODEL
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("HF_", "CXR_MODEL"))}}
    env.update(local_hub.env(tmp_path / "cache"))
    command = [sys.executable, "-c", PUSH_AND_LOAD, str(folder), REPO, str(EXAMPLES[0])]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    model, config = load_model(folder)
    from PIL import Image

    expected = model(preprocessing_for(model)(Image.open(EXAMPLES[0]).convert("L"))).item()
    assert answer["timm"] == pytest.approx(expected, abs=1e-4) and answer["cxr"] == pytest.approx(expected, abs=1e-4)
    assert answer["sha256"] == config.weights_sha256 and answer["commit"] == local_hub.resolve(REPO, "main")
    assert answer["files"] == sorted([CONFIG_NAME, WEIGHTS_NAME, OOD_NAME, "README.md"])
    pushed = local_hub.files(REPO)
    assert {"metrics.json", "training_curve.png"} <= pushed.keys()  # the records travel with the weights
    assert all(pushed[name] == (folder / name).read_bytes() for name in pushed)
