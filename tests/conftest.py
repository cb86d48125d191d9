"""Shared fixtures: the dataset (skip or fail when absent), a running app, tiny models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cxr.examples import bundled_examples
from cxr.launch import free_port, running_app, start_app  # noqa: F401  (shared with the tests)
from tests.hub_server import local_hub  # noqa: F401  (a local Hub endpoint, shared with the tests)

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("CXR_DATA", ROOT.parent / "shared" / "data" / "chest_xray"))
ORIGINALS = DATA.parent / "val_originals"
EXAMPLES = bundled_examples()


# A real normal X-ray (P(pneumonia) about 0.05): every odd format of it must still read as normal.
VARIANT_SOURCE = ROOT / "examples" / "normal_NORMAL2-IM-1440-0001.jpeg"


@pytest.fixture(scope="session")
def variant_files(tmp_path_factory) -> dict[str, Path]:
    from tests.inputs import xray_variants

    return xray_variants(VARIANT_SOURCE, tmp_path_factory.mktemp("variants"))


@pytest.fixture(scope="session")
def hostile_uploads(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    from tests.inputs import hostile_files

    return hostile_files(VARIANT_SOURCE, tmp_path_factory.mktemp("hostile"))


@pytest.fixture(scope="session")
def not_xrays(tmp_path_factory) -> dict[str, Path]:
    """random_colours, photo_temple, photo_flower, document: pictures that are no child's chest X-ray."""
    from tests.inputs import make_not_xrays

    return make_not_xrays(tmp_path_factory.mktemp("not_xrays"))


def true_class(example: Path) -> str:
    """Bundled examples are named after their class: normal_*.jpeg, pneumonia_*.jpeg."""
    return example.name.split("_")[0].upper()


def _require(path: Path) -> Path:
    if path.is_dir():
        return path
    reason = f"dataset not found at {path} (set CXR_DATA)"
    if os.environ.get("CXR_REQUIRE_DATA") == "1":
        pytest.fail(reason + "; CXR_REQUIRE_DATA=1 forbids skipping")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return _require(DATA)


@pytest.fixture(scope="session")
def originals_dir() -> Path:
    return _require(ORIGINALS)


@pytest.fixture(scope="session")
def app_url():
    with running_app() as url:
        yield url
