"""Read an uploaded file into an upright 8-bit grayscale image, with every limit in one place.

Images (JPEG, PNG, TIFF, WebP, BMP, GIF: first frame, EXIF-upright) go through Pillow; DICOM
files (found by their ``DICM`` marker, whatever their name) through pydicom, with the modality
and VOI LUT or window applied and MONOCHROME1 inverted.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cxr.errors import ImageReadError

MAX_FILE_BYTES = 50 * 1024 * 1024
MAX_PIXELS = 60_000_000  # a 7,000 x 8,500 detector image fits; a decompression bomb does not
MIN_SIDE = 64
# The formats read_xray reads, by file suffix: what a folder is searched for (training data, evaluation,
# batch prediction), and the one list the UI, the error message and README name.
FORMATS = {
    ".jpeg": "JPEG",
    ".jpg": "JPEG",
    ".png": "PNG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WebP",
    ".bmp": "BMP",
    ".gif": "GIF",
    ".dcm": "DICOM",
    ".dicom": "DICOM",
}
IMAGE_SUFFIXES = set(FORMATS)


def formats_text() -> str:
    """The readable formats in words: "JPEG, PNG, TIFF, WebP, BMP, GIF or DICOM"."""
    names = list(dict.fromkeys(FORMATS.values()))
    return f"{', '.join(names[:-1])} or {names[-1]}"


def read_xray(path: str | Path) -> Image.Image:
    """Decode ``path`` as 8-bit grayscale (first frame, EXIF-upright), or raise ImageReadError."""
    path = Path(path)
    size = path.stat().st_size if path.is_file() else -1
    if size < 0:
        raise ImageReadError("No file was received (uploads are deleted a few minutes after arrival: upload it again).")
    if size == 0:
        raise ImageReadError("The file is empty (0 bytes).")
    if size > MAX_FILE_BYTES:
        raise ImageReadError(f"The file is {size / 2**20:.0f} MB; the limit is {MAX_FILE_BYTES // 2**20} MB.")
    gray = _read_dicom(path) if _is_dicom(path) else _read_image(path)
    if min(gray.size) < MIN_SIDE:
        width, height = gray.size
        raise ImageReadError(f"The image is {width} x {height} pixels; at least {MIN_SIDE} px per side is needed.")
    return gray


def to_grayscale(image: Image.Image) -> Image.Image:
    """Any PIL image (RGB, RGBA, palette, 16-bit, ...) as upright 8-bit grayscale ``L``."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # Scale the real value range to 0..255 instead of clipping 16-bit data at 255.
        array = np.asarray(image, dtype=np.float32)
        low, high = float(array.min()), float(array.max())
        scale = 255.0 / (high - low) if high > low else 0.0
        return Image.fromarray(((array - low) * scale).round().astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels become black, the colour of an X-ray's background.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("L")


def _check_pixels(width: int, height: int) -> None:
    """Refuse a huge image from its header, before any pixel is decoded (decompression bombs)."""
    if width * height > MAX_PIXELS:
        raise ImageReadError(
            f"The image is {width} x {height} pixels; the limit is {MAX_PIXELS // 1_000_000} megapixels."
        )


def _read_image(path: Path) -> Image.Image:
    """Pillow formats: the first frame, upright, as 8-bit grayscale."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                _check_pixels(*image.size)
                image.seek(0)
                image.load()
                return to_grayscale(image)
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:  # refused from the header
        raise ImageReadError(
            f"The image is too large to decode safely; the limit is {MAX_PIXELS // 1_000_000} megapixels."
        ) from error
    except UnidentifiedImageError as error:
        raise ImageReadError(
            f"This file is not an image that can be read. Upload a chest X-ray as {formats_text()}."
        ) from error
    except (OSError, SyntaxError, ValueError) as error:  # truncated or corrupt data
        raise ImageReadError(f"The image data is damaged or truncated ({error}).") from error


def _is_dicom(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(132)[128:132] == b"DICM"


def _read_dicom(path: Path) -> Image.Image:
    """The first frame of a DICOM file as display-ready 8-bit grayscale."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        dataset = pydicom.dcmread(path)
        rows, columns = int(dataset.Rows), int(dataset.Columns)
        if rows * columns > MAX_PIXELS:
            raise ImageReadError(
                f"The DICOM image is {columns} x {rows} pixels; the limit is {MAX_PIXELS // 1_000_000} megapixels."
            )
        pixels = dataset.pixel_array
    except ImageReadError:
        raise
    except (
        InvalidDicomError,
        AttributeError,
        ValueError,
        KeyError,
        EOFError,
        OSError,
        NotImplementedError,
        RuntimeError,
    ) as error:
        raise ImageReadError(f"This DICOM file cannot be read ({type(error).__name__}: {error}).") from error
    if int(getattr(dataset, "NumberOfFrames", 1) or 1) > 1:
        pixels = pixels[0]
    if pixels.ndim != 2:
        raise ImageReadError("Only single-channel (grayscale) DICOM images are supported.")
    values = apply_voi_lut(apply_modality_lut(pixels, dataset), dataset).astype(np.float64)
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    if dataset.get("PhotometricInterpretation") == "MONOCHROME1":  # 0 = white: invert to X-ray convention
        scaled = 255.0 - scaled
    return Image.fromarray(scaled.round().astype(np.uint8), mode="L")
