"""Resolve which weights folder to load: a pinned Hub revision when configured, else the bundled one."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import httpx2
from huggingface_hub import snapshot_download
from huggingface_hub.errors import EntryNotFoundError, HFValidationError, RevisionResolutionError

from cxr.folder import is_staging
from cxr.model import CONFIG_NAME, ENSEMBLE_NAME, WEIGHTS_NAME, is_ensemble
from cxr.ood import OOD_NAME

log = logging.getLogger(__name__)

# Every subfolder with a config.json is a model the app offers; CXR_WEIGHTS_DIR points elsewhere.
WEIGHTS_DIR = Path(os.environ.get("CXR_WEIGHTS_DIR") or Path(__file__).resolve().parent.parent / "weights")
DEFAULT_MODEL = "efficientnet_lite0_shift"
# Everything snapshot_download raises when the Hub or its cache cannot provide the files.
HUB_ERRORS = (OSError, EntryNotFoundError, HFValidationError, RevisionResolutionError, httpx2.HTTPError)


def bundled_models(weights_dir: Path = WEIGHTS_DIR) -> list[str]:
    """Names of the weights folders shipped in the repo (each with a config.json or an ensemble.json)."""
    found = {p.parent.name for name in (CONFIG_NAME, ENSEMBLE_NAME) for p in weights_dir.glob(f"*/{name}")}
    return sorted(name for name in found if not is_staging(name))  # a folder being written is not a model


def resolve_weights(
    repo_id: str | None = None,
    revision: str | None = None,
    bundled: str | Path | None = None,
) -> Path:
    """The folder to load from.

    ``repo_id`` and ``revision`` default to ``CXR_MODEL_REPO`` and ``CXR_MODEL_REVISION``; a
    ``repo_id`` that is a local folder is used as it is. Without a repo, or when the Hub (or its
    cache, offline) cannot provide it, the bundled weights are used and one warning says why.
    """
    repo_id = repo_id or os.environ.get("CXR_MODEL_REPO") or None
    revision = revision or os.environ.get("CXR_MODEL_REVISION") or None
    fallback = Path(bundled) if bundled else WEIGHTS_DIR / DEFAULT_MODEL
    if not repo_id:
        return fallback
    if Path(repo_id).is_dir():
        return Path(repo_id)
    try:
        folder = fetch_weights(repo_id, revision)
    except HUB_ERRORS as error:
        reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        log.warning(
            "Hub weights %s@%s unavailable (%s); using bundled weights %s",
            repo_id,
            revision or "main",
            reason,
            fallback,
        )
        return fallback
    needed = (ENSEMBLE_NAME,) if is_ensemble(folder) else (CONFIG_NAME, WEIGHTS_NAME)
    missing = [name for name in needed if not (Path(folder) / name).is_file()]
    if missing:
        log.warning(
            "Hub repo %s@%s has no %s; using bundled weights %s",
            repo_id,
            revision or "main",
            " or ".join(missing),
            fallback,
        )
        return fallback
    log.info("Using Hub weights %s@%s from %s", repo_id, revision or "main", folder)
    return Path(folder)


# What the app loads from a weights folder; an ensemble keeps its members' in subfolders.
# ``fetch_weights`` downloads exactly these and ``push_weights`` uploads them (and the records beside them).
LOADED_FILES = (CONFIG_NAME, WEIGHTS_NAME, OOD_NAME, "README.md")
LOADED_PATTERNS = [ENSEMBLE_NAME, *LOADED_FILES, *(f"*/{name}" for name in LOADED_FILES)]
RECORD_PATTERNS = ["metrics.json", "training_curve.png", "*/metrics.json", "*/training_curve.png"]


def fetch_weights(repo_id: str, revision: str | None = None) -> Path:
    """A Hub repo's weights folder (config, weights, out-of-distribution check, card), via the Hub cache.

    Raises what ``snapshot_download`` raises; ``resolve_weights`` turns that into a fallback.
    """
    return Path(snapshot_download(repo_id, revision=revision, allow_patterns=LOADED_PATTERNS))


def push_weights(folder: str | Path, repo_id: str) -> str:
    """Upload a finished weights folder to a Hub model repo (created if needed); returns the commit id.

    The layout is the one ``fetch_weights`` reads, so ``CXR_MODEL_REPO=repo_id`` serves these weights.
    """
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, exist_ok=True)
    commit = api.upload_folder(
        folder_path=str(folder),
        repo_id=repo_id,
        allow_patterns=LOADED_PATTERNS + RECORD_PATTERNS,
        commit_message=f"cxr weights from {Path(folder).name}",
    )
    return commit.oid


def model_choices() -> dict[str, Path]:
    """Display name → folder: the model the app starts with (Hub or default), then every bundled one."""
    first = resolve_weights()
    repo = os.environ.get("CXR_MODEL_REPO")
    name = first.name if first.parent == WEIGHTS_DIR or not repo else repo
    choices = {name: first}
    for bundled in bundled_models():
        choices.setdefault(bundled, WEIGHTS_DIR / bundled)
    return choices
