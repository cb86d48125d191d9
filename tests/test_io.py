"""Decoding uploads: every valid format reads as the same picture; everything else, one clear error."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cxr.io import ImageReadError, read_xray
from tests.conftest import VARIANT_SOURCE
from tests.inputs import HOSTILE_CASES, VALID_CASES


def reference() -> np.ndarray:
    return np.asarray(Image.open(VARIANT_SOURCE).convert("L"), dtype=np.float64)


@pytest.mark.parametrize("case", VALID_CASES)
def test_valid_formats_read_as_the_same_xray(variant_files, case):
    gray = read_xray(variant_files[case])
    assert gray.mode == "L"
    expected = reference()
    assert gray.size == (expected.shape[1], expected.shape[0])  # upright, full size
    difference = np.abs(np.asarray(gray, dtype=np.float64) - expected)
    # lossy formats (JPEG, WebP) and intensity rescaling move a few grey levels, never the picture
    assert difference.mean() < 4, case
    assert np.corrcoef(np.asarray(gray, dtype=np.float64).ravel(), expected.ravel())[0, 1] > 0.99, case


def test_sixteen_bit_uses_the_full_range(variant_files):
    gray = np.asarray(read_xray(variant_files["sixteen_bit.png"]))
    assert gray.max() - gray.min() > 200  # scaled, not clipped to white


@pytest.mark.parametrize("case", HOSTILE_CASES)
def test_hostile_files_get_one_clear_error(hostile_uploads, case):
    path, message = hostile_uploads[case]
    with pytest.raises(ImageReadError, match=message):
        read_xray(path)


def test_missing_file():
    with pytest.raises(ImageReadError, match="No file"):
        read_xray("/nonexistent/upload.png")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=0, max_size=3000))
def test_random_bytes_never_escape_as_anything_but_our_error(tmp_path, data):
    path = tmp_path / "upload.bin"
    path.write_bytes(data)
    with contextlib.suppress(ImageReadError):  # anything else escaping fails the test
        read_xray(path)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    width=st.integers(1, 300),
    height=st.integers(1, 300),
    mode=st.sampled_from(["L", "RGB", "RGBA", "P", "I;16", "CMYK", "1"]),
    fmt=st.sampled_from(["PNG", "JPEG", "TIFF", "BMP", "GIF", "WEBP"]),
    cut=st.integers(0, 100),
)
def test_random_valid_or_cut_images_read_or_fail_cleanly(tmp_path, width, height, mode, fmt, cut):
    image = Image.new(mode, (width, height))
    path = tmp_path / f"upload.{fmt.lower()}"
    try:
        image.save(path, format=fmt)
    except (OSError, ValueError, KeyError):
        return  # Pillow cannot write this mode in this format: nothing to read
    data = path.read_bytes()
    path.write_bytes(data[: max(1, len(data) * cut // 100)] if cut < 100 else data)
    try:
        gray = read_xray(path)
    except ImageReadError:
        return
    assert gray.mode == "L" and min(gray.size) >= 64
