"""Files a public Space meets, made here from a real X-ray: valid odd formats and hostile ones."""

from __future__ import annotations

import io
import os
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    window: tuple[float, float] | None = None,
    frames: int = 1,
) -> Path:
    """An uncompressed DICOM file (Secondary Capture) holding ``pixels`` (uint16)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits_stored, bits_stored - 1, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    stack = np.stack([pixels] * frames) if frames > 1 else pixels
    ds.PixelData = stack.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def xray_variants(source: Path, folder: Path) -> dict[str, Path]:
    """The same real X-ray in every format and mode the app must read, each named by its case."""
    gray = Image.open(source).convert("L")
    array = np.asarray(gray)
    twelve_bit = array.astype(np.uint16) * 16  # 0..4080
    files = {}

    def save(name: str, image: Image.Image, **kwargs) -> None:
        files[name] = folder / name
        image.save(files[name], **kwargs)

    save("sixteen_bit.png", Image.fromarray(array.astype(np.uint16) * 257))
    save("rgba.png", gray.convert("RGBA"))
    save("la.png", gray.convert("LA"))
    save("palette.png", gray.convert("P"))
    save("cmyk.jpg", gray.convert("CMYK"), quality=95)
    exif = Image.Exif()
    exif[0x0112] = 8  # displayed rotated 90° clockwise: stored rotated back
    save("exif_rotated.jpg", gray.rotate(-90, expand=True), exif=exif, quality=95)
    save("multi_frame.tif", gray, save_all=True, append_images=[Image.new("L", gray.size, 255)])
    save("animated.gif", gray, save_all=True, append_images=[Image.new("L", gray.size, 0)])
    save("webp.webp", gray, quality=95)
    files["dicom_12bit.dcm"] = write_dicom(folder / "dicom_12bit.dcm", twelve_bit)
    files["dicom_monochrome1.dcm"] = write_dicom(folder / "dicom_monochrome1.dcm", 4080 - twelve_bit, "MONOCHROME1")
    files["dicom_window_16bit.dcm"] = write_dicom(  # full 16-bit data displayed through its window
        folder / "dicom_window_16bit.dcm", array.astype(np.uint16) * 257, bits_stored=16, window=(32767.5, 65535)
    )
    files["dicom_two_frames.dcm"] = write_dicom(folder / "dicom_two_frames.dcm", twelve_bit, frames=2)
    return files


def bomb_png(path: Path, side: int = 30_000) -> Path:
    """A valid PNG header for a side x side grayscale image with a few KB of compressed data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = side.to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    compressor = zlib.compressobj(9)
    row = b"\0" * (side + 1)
    data = b"".join(compressor.compress(row) for _ in range(200)) + compressor.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def hostile_files(source: Path, folder: Path) -> dict[str, tuple[Path, str]]:
    """Files that must be refused, each with a fragment of the message the user should get."""
    jpeg = source.read_bytes()
    buffer = io.BytesIO()
    Image.new("L", (40, 40), 128).save(buffer, format="PNG")
    cases = {
        "zero_bytes.jpg": (b"", "empty"),
        "text_named.jpg": (b"just some text, not an X-ray\n" * 20, "not an image"),
        "pdf_named.jpg": (b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n", "not an image"),
        "random_bytes.png": (os.urandom(4096), "not an image"),
        "truncated.jpg": (jpeg[: len(jpeg) // 3], "damaged or truncated"),
        "tiny.png": (buffer.getvalue(), "at least 64"),
        "not_really.dcm": (b"\0" * 128 + b"DICM" + os.urandom(200), "DICOM"),
    }
    files = {}
    for name, (data, message) in cases.items():
        (folder / name).write_bytes(data)
        files[name] = (folder / name, message)
    files["bomb.png"] = (bomb_png(folder / "bomb.png"), "megapixels")
    return files


VALID_CASES = [
    "sixteen_bit.png",
    "rgba.png",
    "la.png",
    "palette.png",
    "cmyk.jpg",
    "exif_rotated.jpg",
    "multi_frame.tif",
    "animated.gif",
    "webp.webp",
    "dicom_12bit.dcm",
    "dicom_monochrome1.dcm",
    "dicom_window_16bit.dcm",
    "dicom_two_frames.dcm",
]
HOSTILE_CASES = [
    "zero_bytes.jpg",
    "text_named.jpg",
    "pdf_named.jpg",
    "random_bytes.png",
    "truncated.jpg",
    "tiny.png",
    "not_really.dcm",
    "bomb.png",
]


def make_not_xrays(folder: Path) -> dict[str, Path]:
    """Pictures that are not a child's chest X-ray, as a person might upload them: random colours, two
    real photographs (scikit-learn's bundled sample images, CC BY 2.0) and a scanned-looking document."""
    from PIL import ImageDraw, ImageFilter
    from sklearn.datasets import load_sample_images

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    pictures = {"random_colours.png": Image.fromarray(rng.integers(0, 256, (400, 500, 3), np.uint8))}
    for name, array in zip(("photo_temple.jpg", "photo_flower.jpg"), load_sample_images().images, strict=True):
        pictures[name] = Image.fromarray(array)
    page = Image.new("L", (850, 1100), 245)
    draw = ImageDraw.Draw(page)
    draw.text((70, 60), "DISCHARGE SUMMARY", fill=0)
    for row, y in enumerate(range(110, 1040, 22)):
        line = f"{row + 1:02d}  Patient seen in clinic; findings reviewed, plan discussed. Ref {row * 37}"
        draw.text((70, y), line, fill=30)
    pictures["document_scan.jpg"] = page.filter(ImageFilter.GaussianBlur(0.6))
    paths = {}
    for name, picture in pictures.items():
        picture.save(folder / name)
        paths["document" if name.startswith("document") else Path(name).stem] = folder / name
    return paths
