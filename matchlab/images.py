"""Image reading and resizing: the only module that touches image files.

`read_image` returns a float32 tensor [C, H, W] in [0, 1] (C = 1 or 3, RGB order) with the
EXIF orientation applied, for JPEG / PNG / TIFF / BMP / WebP files of 8 or 16 bits, gray,
RGB or RGBA (alpha is dropped). Any file that cannot be fully decoded raises `ImageError`,
which names the file.

Size limit: an image of more than `max_pixels` pixels (default `MAX_PIXELS` = 160 million,
or the environment variable MATCHLAB_MAX_PIXELS) is refused with an `ImageError` before it
is decoded, from the size its header states. Reading costs about 20 bytes per pixel (8-bit
BGR, float32 RGB, grayscale, resizing), extracting more (SIFT took 8.2 GB on 900 MP), and
OpenCV's own limit (2^30 = 1074 MP) fails only after the file is read. 160 MP admits the
largest single-shot camera sensors (151 MP) and refuses stitched panoramas, gigapixel scans
and forged headers. A limit above OpenCV's also needs OPENCV_IO_MAX_IMAGE_PIXELS raised.

Pixel convention: (0, 0) is the centre of the top-left pixel. When an image of size (W, H)
is resized to (w, h), a point x' in the resized image maps back to
x = (x' + 0.5) * (W / w) - 0.5 in the original (`rescale_points`).
"""
from __future__ import annotations

import io
import os
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import BinaryIO, Sequence, Union

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import ConfigError, ImageError

MAX_PIXELS = 160_000_000  # see the module docstring
MAX_PIXELS_VARIABLE = "MATCHLAB_MAX_PIXELS"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".pgm", ".ppm")
ImageLike = Union[str, os.PathLike, np.ndarray, Tensor]


def _check_jpeg_complete(path: Path | BinaryIO, name: str | os.PathLike | None = None) -> None:
    """OpenCV decodes a truncated JPEG silently (grey bottom rows); Pillow notices.

    The draft mode decodes at 1/8 scale, so the check costs a fraction of a full decode.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.draft("L", (max(1, im.width // 8), max(1, im.height // 8)))
            im.load()
    except Image.DecompressionBombError:
        return  # over Pillow's own limit (179 MP) but allowed by ours: not checked
    except Exception as e:  # Pillow raises OSError / SyntaxError / ValueError variants
        raise ImageError(name or path, f"corrupt or truncated JPEG ({e})") from None


def _png_size(f) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk (the first chunk, at byte 8)."""
    head = f.read(24)
    if head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


_JPEG_FRAMES = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(f) -> tuple[int, int] | None:
    """(width, height) from a JPEG's start-of-frame segment, skipping the segments before it."""
    f.seek(2)
    while True:
        marker = f.read(2)
        if len(marker) < 2 or marker[0] != 0xFF:
            return None
        if marker[1] == 0xFF:  # fill byte
            f.seek(-1, 1)
            continue
        if marker[1] in (0x01, *range(0xD0, 0xD8)):  # no length field
            continue
        length = int.from_bytes(f.read(2), "big")  # of the segment, these 2 bytes included
        if marker[1] in _JPEG_FRAMES:  # precision (1 byte), height, width (2 bytes each)
            frame = f.read(5)
            return None if len(frame) < 5 else (int.from_bytes(frame[3:5], "big"),
                                                int.from_bytes(frame[1:3], "big"))
        if length < 2:
            return None
        f.seek(length - 2, 1)


def image_size(path: str | os.PathLike | BinaryIO) -> tuple[int, int] | None:
    """(width, height) an image file's (or open binary stream's) header states, without
    decoding it; None when the header cannot be read (the decoder then reports the file)."""
    with open(path, "rb") if isinstance(path, (str, os.PathLike)) else nullcontext(path) as f:
        head = f.read(8)
        f.seek(0)
        if head == b"\x89PNG\r\n\x1a\n":
            return _png_size(f)
        if head[:2] == b"\xff\xd8":
            return _jpeg_size(f)
    from PIL import Image

    try:  # other formats: Pillow reads the header only
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                return im.size
    except Image.DecompressionBombError as e:  # states the size in pixels
        raise ImageError(path, f"too large ({e})") from None
    except Exception:
        return None


def pixel_limit() -> int:
    """The pixel limit: MATCHLAB_MAX_PIXELS when set, else `MAX_PIXELS`."""
    value = os.environ.get(MAX_PIXELS_VARIABLE)
    if value is None:
        return MAX_PIXELS
    try:
        limit = int(value.replace("_", ""))
    except ValueError:
        limit = 0
    if limit <= 0:
        raise ConfigError(f"{MAX_PIXELS_VARIABLE} must be a positive number of pixels, "
                          f"got {value!r}")
    return limit


def check_pixel_count(path: str | os.PathLike | BinaryIO, limit: int | None = None,
                      name: str | os.PathLike | None = None) -> None:
    """ImageError naming the file (`name`, default `path`) and its size when its header
    states more than `limit` pixels (default `pixel_limit()`)."""
    limit = pixel_limit() if limit is None else limit
    size = image_size(path)
    if size is not None and size[0] * size[1] > limit:
        w, h = size
        raise ImageError(name or path, f"{w} x {h} = {w * h / 1e6:.0f} million pixels, over the limit of "
                               f"{limit / 1e6:g} million (raise it with {MAX_PIXELS_VARIABLE} "
                               f"if there is memory for it: about 20 bytes per pixel)")


def read_image(path: str | os.PathLike, grayscale: bool = False,
               max_pixels: int | None = None) -> Tensor:
    """Read an image file as float32 [C, H, W] in [0, 1] (C = 1 if grayscale else 3, RGB).

    max_pixels: refuse larger images before decoding (default: see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(path, "no such file")
    size = path.stat().st_size
    if size == 0:
        raise ImageError(path, "the file is empty (0 bytes)")
    check_pixel_count(path, max_pixels)
    with open(path, "rb") as f:
        head = f.read(3)
    if head[:2] == b"\xff\xd8":
        _check_jpeg_complete(path)
    # ANYDEPTH keeps 16 bits; COLOR applies the EXIF orientation (UNCHANGED would not).
    flags = cv2.IMREAD_ANYDEPTH | (cv2.IMREAD_GRAYSCALE if grayscale else cv2.IMREAD_COLOR)
    data = np.fromfile(path, dtype=np.uint8)  # works for non-ASCII paths too
    array = cv2.imdecode(data, flags)
    if array is None or array.size == 0:
        raise ImageError(path, "not a decodable image (corrupt, truncated or unsupported format)")
    return array_to_tensor(array, bgr=not grayscale, name=str(path))


def decode_image(data: bytes, name: str | os.PathLike, grayscale: bool = False,
                 max_pixels: int | None = None) -> Tensor:
    """`read_image` of an image file's bytes (e.g. sent from another machine): the same
    checks and tensor; `name` names the image in an ImageError."""
    if not data:
        raise ImageError(name, "the file is empty (0 bytes)")
    check_pixel_count(io.BytesIO(data), max_pixels, name=name)
    if data[:2] == b"\xff\xd8":
        _check_jpeg_complete(io.BytesIO(data), name)
    flags = cv2.IMREAD_ANYDEPTH | (cv2.IMREAD_GRAYSCALE if grayscale else cv2.IMREAD_COLOR)
    array = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if array is None or array.size == 0:
        raise ImageError(name, "not a decodable image (corrupt, truncated or unsupported format)")
    return array_to_tensor(array, bgr=not grayscale, name=str(name))


def array_to_tensor(array: np.ndarray, bgr: bool = False, name: str = "array") -> Tensor:
    """uint8 / uint16 / float [H, W] or [H, W, C] array -> float32 [C, H, W] in [0, 1]."""
    if array.dtype == np.uint8:
        scaled = array.astype(np.float32) / 255.0
    elif array.dtype == np.uint16:
        scaled = array.astype(np.float32) / 65535.0
    elif np.issubdtype(array.dtype, np.floating):
        scaled = array.astype(np.float32)
    else:
        raise ImageError(name, f"unsupported pixel type {array.dtype}")
    if scaled.ndim == 2:
        scaled = scaled[..., None]
    if scaled.ndim != 3 or scaled.shape[2] not in (1, 3, 4):
        raise ImageError(name, f"expected an [H, W], [H, W, 3] or [H, W, 4] array, got {array.shape}")
    scaled = scaled[..., :3]
    if bgr and scaled.shape[2] == 3:
        scaled = scaled[..., ::-1]
    return torch.from_numpy(np.ascontiguousarray(scaled.transpose(2, 0, 1)))


def to_tensor(image: ImageLike, grayscale: bool) -> Tensor:
    """Any supported image input -> float32 [C, H, W] in [0, 1] with the wanted channels.

    Accepts a file path, a numpy array (uint8/uint16/float, [H, W] or [H, W, C], RGB order)
    or a tensor [C, H, W] / [H, W] already in [0, 1].
    """
    if isinstance(image, (str, os.PathLike)):
        tensor = read_image(image, grayscale=grayscale)
    elif isinstance(image, np.ndarray):
        tensor = array_to_tensor(image)
    elif isinstance(image, Tensor):
        tensor = image[None] if image.ndim == 2 else image
        if tensor.ndim != 3 or tensor.shape[0] not in (1, 3, 4):
            raise ImageError("tensor", f"expected [C, H, W] with C in 1, 3, 4, got {tuple(image.shape)}")
        tensor = tensor[:3].float()
    else:
        raise TypeError(f"unsupported image input of type {type(image).__name__}")
    if min(tensor.shape[1:]) < 1:
        raise ImageError("input", f"image has zero size {tuple(tensor.shape)}")
    return convert_channels(tensor, grayscale)


def convert_channels(image: Tensor, grayscale: bool) -> Tensor:
    """[C, H, W] -> [1, H, W] (ITU-R 601 luma, as OpenCV) or [3, H, W]."""
    if grayscale and image.shape[0] == 3:
        weights = image.new_tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
        return (image * weights).sum(0, keepdim=True)
    if not grayscale and image.shape[0] == 1:
        return image.expand(3, -1, -1)
    return image


def target_size(size: tuple[int, int], resize: int | Sequence[int] | None,
                upscale: bool = False) -> tuple[int, int]:
    """(w, h) after resizing an image of size (W, H).

    resize: None (keep), an int (long side; only downscales unless `upscale`), or (w, h).
    """
    width, height = size
    if resize is None:
        return width, height
    if isinstance(resize, int):
        if resize <= 0:
            raise ValueError(f"resize must be positive, got {resize}")
        scale = resize / max(width, height)
        if scale >= 1 and not upscale:
            return width, height
        return max(1, round(width * scale)), max(1, round(height * scale))
    w, h = resize
    return int(w), int(h)


def resize_image(image: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize [C, H, W] (or [B, C, H, W]) to (w, h) with antialiasing when shrinking."""
    w, h = size
    if image.shape[-1] == w and image.shape[-2] == h:
        return image
    batched = image if image.ndim == 4 else image[None]
    shrinking = w < batched.shape[-1] or h < batched.shape[-2]
    out = F.interpolate(batched, size=(h, w), mode="bilinear", align_corners=False,
                        antialias=shrinking)
    return out if image.ndim == 4 else out[0]


def rescale_points(points: Tensor, scale: tuple[float, float]) -> Tensor:
    """Map [..., 2] (x, y) from a resized image to the original, pixel-centre convention.

    scale = (W_original / w_resized, H_original / h_resized).
    """
    s = points.new_tensor(scale)
    return (points + 0.5) * s - 0.5


def list_images(root: str | os.PathLike) -> list[str]:
    """Image files below `root` as sorted '/'-separated paths relative to it."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist")
    names = [p.relative_to(root).as_posix() for p in root.rglob("*")
             if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(names)
