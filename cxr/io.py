"""Read an uploaded file into an upright 8-bit grayscale image, with every limit in one place."""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from cxr.data import to_grayscale

MAX_FILE_BYTES = 50 * 1024 * 1024
MAX_PIXELS = 60_000_000  # a 7,000 x 8,500 detector image fits; a decompression bomb does not
MIN_SIDE = 64


class ImageReadError(ValueError):
    """An upload that cannot be analyzed; the message is meant for the user."""


def read_xray(path: str | Path) -> Image.Image:
    """Decode ``path`` as 8-bit grayscale (first frame, EXIF-upright), or raise ImageReadError."""
    path = Path(path)
    size = path.stat().st_size if path.is_file() else -1
    if size < 0:
        raise ImageReadError("No file was received (uploads are deleted after 10 minutes: upload it again).")
    if size == 0:
        raise ImageReadError("The file is empty (0 bytes).")
    if size > MAX_FILE_BYTES:
        raise ImageReadError(f"The file is {size / 2**20:.0f} MB; the limit is {MAX_FILE_BYTES // 2**20} MB.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise ImageReadError(
                        f"The image is {width} x {height} pixels; the limit is {MAX_PIXELS // 1_000_000} megapixels."
                    )
                image.seek(0)
                image.load()
                gray = to_grayscale(image)
    except ImageReadError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageReadError(
            "This file is not an image that can be read. Upload a chest X-ray as JPEG, PNG, TIFF, WebP or BMP."
        ) from error
    except (OSError, SyntaxError, ValueError) as error:  # truncated or corrupt data
        raise ImageReadError(f"The image data is damaged or truncated ({error}).") from error
    if min(gray.size) < MIN_SIDE:
        width, height = gray.size
        raise ImageReadError(f"The image is {width} x {height} pixels; at least {MIN_SIDE} px per side is needed.")
    return gray
